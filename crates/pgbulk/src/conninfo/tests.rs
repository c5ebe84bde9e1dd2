//! Resolution rules: precedence, environment, service files, profiles,
//! hosts, TLS settings and redaction.

use std::path::PathBuf;
use std::time::Duration;

use pgbulk_testkit::Scratch;

use super::*;
use crate::ErrorKind;

fn env() -> Environment {
    Environment::empty()
        .with_os_user("alice")
        .with_home("/nonexistent-home")
}

fn db(s: &str) -> Request {
    Request {
        db: Some(s.to_owned()),
        profile: None,
    }
}

fn resolve_ok(request: &Request, env: &Environment) -> ConnParams {
    resolve(request, env).expect("resolves")
}

fn tcp(host: &str, port: u16) -> Endpoint {
    Endpoint {
        host: Host::Tcp(host.to_owned()),
        hostaddr: None,
        port,
    }
}

#[test]
fn defaults_follow_libpq() {
    let p = resolve_ok(&Request::default(), &env());
    assert_eq!(p.endpoints.len(), 1);
    assert!(matches!(p.endpoints[0].host, Host::Socket(_)));
    assert_eq!(p.endpoints[0].port, 5432);
    assert_eq!(p.user, "alice");
    assert_eq!(p.dbname, "alice");
    assert_eq!(p.sslmode, SslMode::Prefer);
    assert_eq!(p.application_name, "pgbulk");
    assert_eq!(p.passfile, Some(PathBuf::from("/nonexistent-home/.pgpass")));
    assert!(p.password_origin().is_none());
}

#[test]
fn environment_variables_apply() {
    let e = env()
        .with_var("PGHOST", "db.example.com")
        .with_var("PGPORT", "6543")
        .with_var("PGDATABASE", "sales")
        .with_var("PGUSER", "loader")
        .with_var("PGPASSWORD", "pw")
        .with_var("PGSSLMODE", "require")
        .with_var("PGAPPNAME", "nightly")
        .with_var("PGCONNECT_TIMEOUT", "1")
        .with_var("PGOPTIONS", "-c work_mem=64MB")
        .with_var("PGPASSFILE", "/etc/pgpass");
    let p = resolve_ok(&Request::default(), &e);
    assert_eq!(p.endpoints, vec![tcp("db.example.com", 6543)]);
    assert_eq!((p.dbname.as_str(), p.user.as_str()), ("sales", "loader"));
    assert_eq!(p.password().map(Password::expose), Some("pw"));
    assert_eq!(
        p.password_origin(),
        Some(&Origin::Environment("PGPASSWORD"))
    );
    assert_eq!(p.sslmode, SslMode::Require);
    assert_eq!(p.application_name, "nightly");
    assert_eq!(
        p.connect_timeout,
        Some(Duration::from_secs(2)),
        "libpq raises 1 s to 2 s"
    );
    assert_eq!(p.options.as_deref(), Some("-c work_mem=64MB"));
    assert_eq!(p.passfile, Some(PathBuf::from("/etc/pgpass")));
    assert_eq!(p.target_origin, Some(Origin::Environment("PGHOST")));
}

#[test]
fn a_setting_of_pgbulk_follows_the_given_options() {
    let given = resolve_ok(&db("postgres://h/d?options=-c%20work_mem%3D64MB"), &env());
    assert_eq!(
        given.with_setting("array_nulls", "on").options.as_deref(),
        Some("-c work_mem=64MB -c array_nulls=on")
    );
    let none = resolve_ok(&db("postgres://h/d"), &env());
    assert_eq!(
        none.with_setting("array_nulls", "on").options.as_deref(),
        Some("-c array_nulls=on")
    );
}

#[test]
fn connection_string_beats_environment_and_empty_means_unset() {
    let e = env()
        .with_var("PGHOST", "envhost")
        .with_var("PGUSER", "envuser")
        .with_var("PGDATABASE", "envdb");
    let p = resolve_ok(&db("postgresql://uri-user@urihost/uridb"), &e);
    assert_eq!(p.endpoints, vec![tcp("urihost", 5432)]);
    assert_eq!((p.dbname.as_str(), p.user.as_str()), ("uridb", "uri-user"));
    let p = resolve_ok(&db("user='' dbname=x"), &e);
    assert_eq!(
        p.user, "alice",
        "an empty value falls back to the default, as in libpq"
    );
    let p = resolve_ok(&db("justadb"), &e);
    assert_eq!((p.dbname.as_str(), p.user.as_str()), ("justadb", "envuser"));
}

#[test]
fn service_file_sits_between_connection_string_and_environment() {
    let dir = Scratch::new("service");
    let file = dir.file(
        "services.conf",
        "[dev]\nhost=svchost\nport=7000\ndbname=svcdb\n",
        0o644,
    );
    let e = env()
        .with_var("PGSERVICEFILE", file.to_str().expect("utf8"))
        .with_var("PGPORT", "9999")
        .with_var("PGUSER", "envuser");
    let p = resolve_ok(&db("service=dev dbname=override"), &e);
    assert_eq!(p.endpoints, vec![tcp("svchost", 7000)]);
    assert_eq!(p.dbname, "override");
    assert_eq!(p.user, "envuser");
    assert_eq!(p.target_origin, Some(Origin::Service("dev".to_owned())));
    let p = resolve_ok(&Request::default(), &e.clone().with_var("PGSERVICE", "dev"));
    assert_eq!(p.dbname, "svcdb");
    let err = resolve(&db("service=prod"), &e).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.message(), "definition of service \"prod\" not found");
}

#[test]
fn system_service_file_from_pgsysconfdir() {
    let dir = Scratch::new("sysconf");
    dir.file("pg_service.conf", "[qa]\nhost=qa-db\n", 0o644);
    let e = env().with_var("PGSYSCONFDIR", dir.path().to_str().expect("utf8"));
    let p = resolve_ok(&db("service=qa"), &e);
    assert_eq!(p.endpoints, vec![tcp("qa-db", 5432)]);
}

#[test]
fn profiles_from_the_working_directory_then_pgbulk_home() {
    let cwd = Scratch::new("profile-cwd");
    let home = Scratch::new("profile-home");
    cwd.file(
        "pgbulk.toml",
        "[profiles.dev]\nurl = \"postgresql://dev@devhost:5433/devdb\"\nsslmode = \"disable\"\n",
        0o644,
    );
    home.file(
        "pgbulk.toml",
        "[profiles.dev]\nhost = \"shadowed\"\n[profiles.qa]\nhost = \"qahost\"\nport = 6000\npassword = \"qa-pw\"\n",
        0o600,
    );
    let e = env()
        .with_cwd(cwd.path())
        .with_var("PGBULK_HOME", home.path().to_str().expect("utf8"))
        .with_var("PGHOST", "envhost");
    let dev = Request {
        db: None,
        profile: Some("dev".to_owned()),
    };
    let p = resolve_ok(&dev, &e);
    assert_eq!(p.endpoints, vec![tcp("devhost", 5433)]);
    assert_eq!((p.dbname.as_str(), p.user.as_str()), ("devdb", "dev"));
    assert_eq!(p.sslmode, SslMode::Disable);
    assert_eq!(p.target_origin, Some(Origin::Profile("dev".to_owned())));

    let with_db = Request {
        db: Some("dbname=other".to_owned()),
        profile: Some("dev".to_owned()),
    };
    assert_eq!(
        resolve_ok(&with_db, &e).dbname,
        "other",
        "--db refines the profile"
    );

    let qa = resolve_ok(
        &Request::default(),
        &e.clone().with_var("PGBULK_PROFILE", "qa"),
    );
    assert_eq!(qa.endpoints, vec![tcp("qahost", 6000)]);
    assert_eq!(
        qa.password_origin(),
        Some(&Origin::Profile("qa".to_owned()))
    );

    let missing = Request {
        db: None,
        profile: Some("prod".to_owned()),
    };
    let err = resolve(&missing, &e).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.message().contains("profile \"prod\" not found"),
        "{err}"
    );
    assert!(err.message().contains("defined profiles: dev, qa"), "{err}");
}

#[test]
fn profile_password_needs_a_private_file() {
    let cwd = Scratch::new("profile-perm");
    cwd.file("pgbulk.toml", "[profiles.p]\npassword = \"pw\"\n", 0o644);
    let e = env().with_cwd(cwd.path());
    let req = Request {
        db: None,
        profile: Some("p".to_owned()),
    };
    let err = resolve(&req, &e).unwrap_err();
    assert!(err.message().contains("group or world access"), "{err}");
    cwd.file("pgbulk.toml", "[profiles.p]\nhots = \"x\"\n", 0o600);
    let err = resolve(&req, &e).unwrap_err();
    assert!(
        err.message().contains("unknown connection option \"hots\""),
        "{err}"
    );
}

#[test]
fn several_hosts_ports_and_hostaddr() {
    let p = resolve_ok(&db("host=a,b,/tmp/sock port=1,2,3"), &env());
    assert_eq!(p.endpoints[0], tcp("a", 1));
    assert_eq!(p.endpoints[1], tcp("b", 2));
    assert_eq!(
        p.endpoints[2].host,
        Host::Socket(PathBuf::from("/tmp/sock"))
    );
    let p = resolve_ok(&db("host=a,b port=7"), &env());
    assert_eq!(p.endpoints, vec![tcp("a", 7), tcp("b", 7)]);
    let p = resolve_ok(&db("hostaddr=127.0.0.1"), &env());
    assert_eq!(p.endpoints[0].host, Host::AddrOnly);
    assert_eq!(p.endpoints[0].passfile_host(), "127.0.0.1");
    let p = resolve_ok(&db("host=db hostaddr=10.0.0.1"), &env());
    assert_eq!(p.endpoints[0].passfile_host(), "db");
    for (bad, msg) in [
        (
            "host=a,b port=1,2,3",
            "could not match 3 port numbers to 2 hosts",
        ),
        (
            "host=a,b hostaddr=10.0.0.1",
            "could not match 2 host names to 1 hostaddr values",
        ),
        (
            "port=abc",
            "invalid integer value \"abc\" for connection option \"port\"",
        ),
        ("hostaddr=nope", "could not parse network address \"nope\""),
        (
            "connect_timeout=soon",
            "invalid integer value \"soon\" for connection option \"connect_timeout\"",
        ),
    ] {
        let err = resolve(&db(bad), &env()).unwrap_err();
        assert_eq!(err.message(), msg, "{bad}");
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}

#[test]
fn sslmode_rules() {
    let err = resolve(&db("sslmode=verify"), &env()).unwrap_err();
    assert_eq!(err.message(), "invalid sslmode value: \"verify\"");
    let p = resolve_ok(&db("sslrootcert=system"), &env());
    assert_eq!(p.sslmode, SslMode::VerifyFull);
    let err = resolve(&db("sslrootcert=system sslmode=require"), &env()).unwrap_err();
    assert!(
        err.message().starts_with("weak sslmode \"require\""),
        "{err}"
    );
    let p = resolve_ok(&Request::default(), &env());
    assert_eq!(
        p.tls.rootcert.as_deref(),
        Some("/nonexistent-home/.postgresql/root.crt")
    );
    assert!(!p.tls.rootcert_explicit);
    let err = resolve(&db("target_session_attrs=fastest"), &env()).unwrap_err();
    assert_eq!(
        err.message(),
        "invalid target_session_attrs value: \"fastest\""
    );
}

#[test]
fn unimplemented_options_are_refused_unless_inert() {
    assert!(resolve(&db("gssencmode=disable client_encoding=UTF8"), &env()).is_ok());
    let err = resolve(&db("sslcrl=/etc/crl.pem"), &env()).unwrap_err();
    assert!(
        err.message().contains("\"sslcrl\" is not supported"),
        "{err}"
    );
    let err = resolve(&db("sslpassword=hunter2"), &env()).unwrap_err();
    assert!(!err.message().contains("hunter2"), "{err}");
}

#[test]
fn passwords_never_show() {
    let e = env().with_var("PGPASSWORD", "env-secret");
    let request = db("postgresql://u:uri-secret@h/d");
    let p = resolve_ok(&request, &e);
    for text in [
        format!("{p}"),
        format!("{p:?}"),
        format!("{request:?}"),
        format!("{e:?}"),
    ] {
        assert!(!text.contains("secret"), "{text}");
    }
    assert_eq!(p.password().map(Password::expose), Some("uri-secret"));
}

#[test]
fn what_counts_as_configured() {
    assert!(!Request::default().is_configured(&env()));
    assert!(!Request::default().is_configured(&env().with_var("PGPASSWORD", "x")));
    assert!(Request::default().is_configured(&env().with_var("PGHOST", "h")));
    assert!(Request::default().is_configured(&env().with_var("PGSERVICE", "s")));
    assert!(Request::default().is_configured(&env().with_var("PGBULK_PROFILE", "dev")));
    assert!(db("x").is_configured(&env()));
}

#[test]
fn percent_encoding_round_trips() {
    let raw = "p@ss:w/rd %ü";
    let encoded = percent_encode(raw);
    assert_eq!(parse::decode(&encoded, "x").expect("decodes"), raw);
}

/// Connection strings, URIs, pgpass lines, service files and profile files
/// from arbitrary Unicode: a result or an error, never a panic.
#[test]
fn parsers_never_panic() {
    use crate::arbitrary::{Strings, case_count, each_case};
    let mut strings = Strings::new(23);
    let conn_seeds = [
        "postgresql://us%20er:p%40ss@[::1]:5433,host2/db?sslmode=require&application_name=é",
        "host=a port=5432 dbname='my db' password='it\\'s'",
        "postgres://h/d?options=-c%20x%3Dy",
        "mydb",
    ];
    each_case(&strings.cases(&conn_seeds, case_count()), |text| {
        let _ = parse::parse(text);
        let _ = parse::decode(text, "test");
        let request = Request {
            db: Some(text.to_owned()),
            profile: None,
        };
        let _ = resolve(&request, &Environment::empty().with_os_user("u"));
    });
    let pgpass_seeds = [
        "h:5432:db:u:secret\n*:*:*:*:x\\:y",
        "# comment\nhost\\:1:*:d:u:p\\\\w",
    ];
    each_case(&strings.cases(&pgpass_seeds, case_count()), |text| {
        let _ = pgpass::find(text, "h", "5432", "db", "u");
        let _ = pgpass::find(text, "hé", "", "", "");
    });
    let service_seeds = ["[svc]\nhost=a\nport = 5\n# c\n[other]\nx=y", "[svc\nhost"];
    let file = std::path::Path::new("pg_service.conf");
    each_case(&strings.cases(&service_seeds, case_count()), |text| {
        let _ = service::find(text, file, "svc");
    });
    let profile_seeds = [
        "[profiles.dev]\nurl = \"postgresql://h/d\"\nport = 5432\n",
        "[profiles.é]\nsslmode = \"verify-full\"\nkeepalives = true",
    ];
    each_case(&strings.cases(&profile_seeds, case_count()), |text| {
        let _ = profile::parse(text, std::path::Path::new("pgbulk.toml"), "dev");
    });
}
