//! `pgbulk ping`: every way of naming a server, and the errors users meet.

use crate::harness::{Scratch, TestDb, pgbulk, run, server};

/// Asserts a successful ping that reached database `db`.
fn assert_pinged(out: &crate::harness::Run, db: &str) {
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("server:   PostgreSQL "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("dbname={db} ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("latency:"), "{}", out.stdout);
}

/// Asserts one clear error line and the exit code.
fn assert_error(out: &crate::harness::Run, code: i32, needle: &str) {
    assert_eq!(
        out.code, code,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {}", out.stderr);
    assert!(lines[0].starts_with("pgbulk: error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains(needle),
        "{needle:?} not in {}",
        out.stderr
    );
}

fn url_without_password(db: &TestDb) -> String {
    let s = server();
    let (host, port) = s.host_port();
    format!("postgresql://{}@{host}:{port}/{}", s.user(), db.name)
}

#[tokio::test]
async fn by_url_and_password_never_printed() {
    let db = TestDb::new("ping_url").await;
    let home = Scratch::new("ping-url");
    let out = run(pgbulk(&home).args(["-vv", "ping", "--db", &db.url]));
    assert_pinged(&out, &db.name);
    assert!(
        out.stdout.contains("password: from connection string"),
        "{}",
        out.stdout
    );
    let password = server().password();
    assert!(!password.is_empty());
    assert!(!out.stdout.contains(&password) && !out.stderr.contains(&password));
    assert!(
        out.stderr.contains("connecting to"),
        "-v logs the target: {}",
        out.stderr
    );

    let help = run(pgbulk(&home).args(["ping", "--help"]));
    assert!(!help.stdout.contains(&password));
    // psql's spellings.
    for flag in ["-d", "--dbname"] {
        assert_pinged(&run(pgbulk(&home).args(["ping", flag, &db.url])), &db.name);
    }
}

#[tokio::test]
async fn by_pg_environment_variables() {
    let db = TestDb::new("ping_env").await;
    let home = Scratch::new("ping-env");
    let s = server();
    let (host, port) = s.host_port();
    let out = run(pgbulk(&home)
        .arg("ping")
        .env("PGHOST", &host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", s.user())
        .env("PGPASSWORD", s.password())
        .env("PGDATABASE", &db.name)
        .env("PGAPPNAME", "pgbulk-test")
        .env("PGCONNECT_TIMEOUT", "5"));
    assert_pinged(&out, &db.name);
    assert!(out.stdout.contains("(from PGHOST)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("password: from PGPASSWORD"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn by_pgpass_file() {
    let db = TestDb::new("ping_pgpass").await;
    let home = Scratch::new("ping-pgpass");
    let s = server();
    let (host, port) = s.host_port();
    let escaped = s.password().replace('\\', "\\\\").replace(':', "\\:");
    let line = format!(
        "# test\nother:1:*:*:wrong\n{host}:{port}:*:{}:{escaped}\n",
        s.user()
    );
    let pgpass = home.file(".pgpass", &line, 0o600);
    let url = url_without_password(&db);
    let out = run(pgbulk(&home).args(["ping", "--db", &url]));
    assert_pinged(&out, &db.name);
    assert!(
        out.stdout.contains(&format!(
            "password: from password file \"{}\"",
            pgpass.display()
        )),
        "{}",
        out.stdout
    );

    // PGPASSFILE points elsewhere.
    let moved = home.file("secrets/pgpass", &line, 0o600);
    std::fs::remove_file(&pgpass).expect("rm");
    let out = run(pgbulk(&home)
        .args(["ping", "--db", &url])
        .env("PGPASSFILE", &moved));
    assert_pinged(&out, &db.name);

    // A group-readable file is ignored with a warning, as libpq does.
    home.file("secrets/pgpass", &line, 0o644);
    let out = run(pgbulk(&home)
        .args(["ping", "--db", &url])
        .env("PGPASSFILE", &moved));
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("has group or world access"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn by_service_file() {
    let db = TestDb::new("ping_service").await;
    let home = Scratch::new("ping-service");
    let s = server();
    let (host, port) = s.host_port();
    home.file(
        ".pg_service.conf",
        &format!(
            "[other]\nhost=nowhere\n[warehouse]\nhost={host}\nport={port}\nuser={}\npassword={}\ndbname={}\n",
            s.user(),
            s.password(),
            db.name
        ),
        0o600,
    );
    let out = run(pgbulk(&home).args(["ping", "--db", "service=warehouse"]));
    assert_pinged(&out, &db.name);
    let out = run(pgbulk(&home).arg("ping").env("PGSERVICE", "warehouse"));
    assert_pinged(&out, &db.name);
    assert!(
        out.stdout.contains("(from service \"warehouse\")"),
        "{}",
        out.stdout
    );

    let out = run(pgbulk(&home).args(["ping", "--db", "service=missing"]));
    assert_error(&out, 3, "definition of service \"missing\" not found");
}

#[tokio::test]
async fn by_profile() {
    let db = TestDb::new("ping_profile").await;
    let home = Scratch::new("ping-profile");
    let s = server();
    let (host, port) = s.host_port();
    home.file(
        "pgbulk.toml",
        &format!(
            "[profiles.dev]\nurl = \"{}\"\n\n[profiles.qa]\nhost = \"{host}\"\nport = {port}\nuser = \"{}\"\ndbname = \"{}\"\n",
            db.url,
            s.user(),
            db.name
        ),
        0o600,
    );
    let out = run(pgbulk(&home).args(["ping", "--profile", "dev"]));
    assert_pinged(&out, &db.name);
    assert!(
        out.stdout.contains("(from profile \"dev\")"),
        "{}",
        out.stdout
    );

    // Profile qa has no password: it comes from the environment.
    let out = run(pgbulk(&home)
        .arg("ping")
        .env("PGBULK_PROFILE", "qa")
        .env("PGPASSWORD", s.password()));
    assert_pinged(&out, &db.name);

    let out = run(pgbulk(&home).args(["ping", "--profile", "prod"]));
    assert_error(&out, 3, "profile \"prod\" not found");
}

#[tokio::test]
async fn wrong_password_is_one_line_and_exit_5() {
    let db = TestDb::new("ping_wrong_pw").await;
    let home = Scratch::new("ping-wrong-pw");
    let s = server();
    let (host, port) = s.host_port();
    let url = format!(
        "postgresql://{}:Not-The-Password-42@{host}:{port}/{}",
        s.user(),
        db.name
    );
    let out = run(pgbulk(&home).args(["ping", "--db", &url]));
    assert_error(&out, 5, "password authentication failed");
    assert!(!out.stderr.contains("Not-The-Password-42"));

    let out = run(pgbulk(&home).args(["-v", "ping", "--db", &url]));
    assert_eq!(out.code, 5);
    assert!(
        !out.stderr.contains("Not-The-Password-42"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("Not-The-Password-42"));

    let out = run(pgbulk(&home).args(["ping", "--db", &url_without_password(&db)]));
    assert_error(&out, 5, "requires a password and none was given");
}

#[tokio::test]
async fn closed_port_is_one_line_and_exit_4() {
    let home = Scratch::new("ping-closed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("postgresql://u:Secret-Pw-99@127.0.0.1:{port}/db");
    let out = run(pgbulk(&home).args(["ping", "--db", &url]));
    assert_error(&out, 4, &format!("host=127.0.0.1 port={port}"));
    assert!(
        out.stderr.to_lowercase().contains("refused"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Secret-Pw-99"));
}

#[tokio::test]
async fn bad_connection_strings_exit_3() {
    let home = Scratch::new("ping-bad");
    for (db, needle) in [
        ("host=x hots=y", "invalid connection option \"hots\""),
        (
            "postgresql://u:Pw-777@h/d?bogus=1",
            "invalid URI query parameter",
        ),
        ("sslmode=sometimes", "invalid sslmode value"),
        // libpq would echo these whole: as a keyword, as a database name.
        (
            "jdbc:postgresql://u:Pw-777@h/d?sslmode=require",
            "a JDBC URL",
        ),
        (
            "postgresq://u:Pw-777@h/d",
            "\"postgresq://\" is not a connection URI",
        ),
    ] {
        let out = run(pgbulk(&home).args(["ping", "--db", db]));
        assert_error(&out, 3, needle);
        assert!(!out.stderr.contains("Pw-777"));
    }
}

#[tokio::test]
async fn tls_modes() {
    let Some(ca) = &server().tls else {
        eprintln!(
            "PGBULK_TEST_DATABASE_URL is set: TLS modes are tested only on the throwaway cluster"
        );
        return;
    };
    let db = TestDb::new("ping_tls").await;
    let home = Scratch::new("ping-tls");
    let s = server();
    let (_, port) = s.host_port();
    let base = |host: &str, extra: &str| {
        format!(
            "host={host} port={port} user={} password={} dbname={} {extra}",
            s.user(),
            s.password(),
            db.name
        )
    };
    let ping = |conninfo: String| run(pgbulk(&home).args(["ping", "--db", &conninfo]));

    let out = ping(base("127.0.0.1", "sslmode=disable"));
    assert_pinged(&out, &db.name);
    assert!(out.stdout.contains("tls:      off"), "{}", out.stdout);

    for mode in ["prefer", "require"] {
        let out = ping(base("127.0.0.1", &format!("sslmode={mode}")));
        assert_pinged(&out, &db.name);
        assert!(
            out.stdout.contains("tls:      TLSv1."),
            "{mode}: {}",
            out.stdout
        );
    }

    let ca_path = ca.ca.display().to_string();
    let other = ca.other_ca.display().to_string();
    let out = ping(base(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={ca_path}"),
    ));
    assert_pinged(&out, &db.name);
    // The certificate names localhost only: the chain is good, the name is not.
    let out = ping(base(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={ca_path}"),
    ));
    assert_pinged(&out, &db.name);
    let out = ping(base(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca_path}"),
    ));
    assert_error(&out, 6, "TLS");
    let out = ping(base(
        "localhost",
        &format!("sslmode=verify-ca sslrootcert={other}"),
    ));
    assert_error(&out, 6, "TLS");
    let out = ping(base("localhost", "sslmode=verify-full"));
    assert_error(&out, 6, "root certificate file");

    // libpq: with ~/.postgresql/root.crt present, require verifies the chain.
    std::fs::create_dir_all(home.path().join(".postgresql")).expect("mkdir");
    std::fs::copy(&ca.other_ca, home.path().join(".postgresql/root.crt")).expect("copy");
    let out = ping(base("localhost", "sslmode=require"));
    assert_error(&out, 6, "TLS");
    std::fs::copy(&ca.ca, home.path().join(".postgresql/root.crt")).expect("copy");
    let out = ping(base("localhost", "sslmode=require"));
    assert_pinged(&out, &db.name);
}
