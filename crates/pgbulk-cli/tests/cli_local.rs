//! `pgbulk local` and the fall-back to the local cluster when nothing is
//! configured.

use crate::harness::{Scratch, pgbulk, run};

#[test]
fn nothing_configured_uses_and_starts_the_local_cluster() {
    let home = Scratch::new("local");
    let out = run(pgbulk(&home).arg("ping"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("no connection configured")
            && out.stderr.contains("created and started it"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("(from local cluster)"),
        "{}",
        out.stdout
    );

    let out = run(pgbulk(&home).arg("ping"));
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("(running)"), "{}", out.stderr);

    let status = run(pgbulk(&home).args(["local", "status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.starts_with("running (pid "),
        "{}",
        status.stdout
    );

    let url = run(pgbulk(&home).args(["local", "url"]));
    assert_eq!(url.code, 0);
    let url = url.stdout.trim().to_owned();
    assert!(
        url.starts_with("postgresql://postgres@/postgres?host="),
        "{url}"
    );
    let out = run(pgbulk(&home).args(["ping", "--db", &url]));
    assert_eq!(out.code, 0, "the printed URL works: {}", out.stderr);

    let psql = run(pgbulk(&home).args(["local", "psql", "-tAc", "SELECT 40 + 2"]));
    assert_eq!(psql.code, 0, "{}", psql.stderr);
    assert_eq!(psql.stdout.trim(), "42");

    let stop = run(pgbulk(&home).args(["local", "stop"]));
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert!(stop.stdout.starts_with("stopped"), "{}", stop.stdout);
    let status = run(pgbulk(&home).args(["local", "status"]));
    assert_eq!(status.code, 8);
    assert!(status.stdout.starts_with("stopped"), "{}", status.stdout);

    let start = run(pgbulk(&home).args(["local", "start"]));
    assert_eq!(start.code, 0, "{}", start.stderr);
    assert!(
        start.stdout.starts_with("started local cluster"),
        "{}",
        start.stdout
    );
    let again = run(pgbulk(&home).args(["local", "start"]));
    assert!(
        again.stdout.starts_with("already running"),
        "{}",
        again.stdout
    );
    // Removed: stopped, and its directory (outside HOME for root) gone.
    let status = run(pgbulk(&home).args(["local", "status"]));
    let dir = status
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("directory: "))
        .expect("its directory")
        .to_owned();
    let removed = run(pgbulk(&home).args(["local", "remove"]));
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(
        removed.stdout.starts_with("removed local cluster"),
        "{}",
        removed.stdout
    );
    assert!(!std::path::Path::new(&dir).exists(), "{dir}");
    let again = run(pgbulk(&home).args(["local", "remove"]));
    assert!(
        again.stdout.starts_with("no local cluster"),
        "{}",
        again.stdout
    );
}

#[test]
fn status_of_a_cluster_never_created() {
    let home = Scratch::new("local-none");
    let out = run(pgbulk(&home).args(["local", "status"]));
    assert_eq!(out.code, 8);
    assert!(out.stdout.starts_with("not created"), "{}", out.stdout);
}

#[test]
fn missing_server_programs_say_what_to_install() {
    let home = Scratch::new("local-nobin");
    let out = run(pgbulk(&home)
        .args(["local", "start"])
        .env("PGBULK_PG_BINDIR", home.path()));
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert!(out.stderr.contains("PGBULK_PG_BINDIR"), "{}", out.stderr);
    let out = run(pgbulk(&home)
        .args(["local", "start"])
        .env("PATH", "/nonexistent"));
    // Without PATH the programs are still found where distributions put
    // them, when they are there: then the cluster starts; else exit 7.
    let elsewhere = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").is_file())
        || std::path::Path::new("/usr/local/pgsql/bin/initdb").is_file();
    let expected = if elsewhere { 0 } else { 7 };
    assert_eq!(out.code, expected, "{}", out.stderr);
    let _ = run(pgbulk(&home).args(["local", "stop"]));
}

/// `PGBULK_PG_VERSION` picks the major version of the local cluster: the
/// one this suite runs on (`PGBULK_TEST_PG`, else the machine's own).
#[test]
fn the_local_cluster_runs_the_version_asked_for() {
    let major = std::env::var("PGBULK_TEST_PG")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            let out = std::process::Command::new("pg_config")
                .arg("--version")
                .output()
                .expect("pg_config runs");
            // "PostgreSQL 15.14 (Debian ...)"
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.split('.').next())
                .expect("a version")
                .to_owned()
        });
    let home = Scratch::new("local-version");
    let cache = std::env::var("PGBULK_PG_CACHE").ok();
    let out = run(pgbulk(&home)
        .env("PGBULK_PG_VERSION", &major)
        .envs(cache.map(|c| ("PGBULK_PG_CACHE", c)))
        .arg("ping"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("PostgreSQL {major}.")),
        "{}",
        out.stdout
    );
    let stop = run(pgbulk(&home)
        .env("PGBULK_PG_VERSION", &major)
        .args(["local", "remove"]));
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let missing = run(pgbulk(&home).env("PGBULK_PG_VERSION", "9").arg("ping"));
    assert_eq!(missing.code, 7, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("PGBULK_PG_VERSION=9"),
        "{}",
        missing.stderr
    );
}
