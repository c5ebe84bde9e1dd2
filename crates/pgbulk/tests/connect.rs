//! The library's connect path: sockets, several hosts, session attributes.

use pgbulk::ErrorKind;
use pgbulk::connect::connect;
use pgbulk::conninfo::{self, Environment, Request};

use crate::harness::{TestDb, server};

fn params(conninfo: &str) -> pgbulk::conninfo::ConnParams {
    let request = Request {
        db: Some(conninfo.to_owned()),
        profile: None,
    };
    conninfo::resolve(&request, &Environment::empty().with_os_user("nobody")).expect("resolves")
}

#[tokio::test]
async fn first_reachable_host_wins() {
    let db = TestDb::new("multi_host").await;
    let s = server();
    let (host, port) = s.host_port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let p = params(&format!(
        "host=127.0.0.1,{host} port={closed},{port} user={} password={} dbname={}",
        s.user(),
        s.password(),
        db.name
    ));
    let session = connect(&p).await.expect("second host answers");
    assert_eq!(session.endpoint.port, port);
    let row = session
        .client
        .query_one("SELECT current_database()::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), db.name);
}

#[tokio::test]
async fn target_session_attrs_are_checked() {
    let db = TestDb::new("tsa").await;
    let s = server();
    let (host, port) = s.host_port();
    let base = format!(
        "host={host} port={port} user={} password={} dbname={}",
        s.user(),
        s.password(),
        db.name
    );
    for ok in ["any", "read-write", "primary", "prefer-standby"] {
        connect(&params(&format!("{base} target_session_attrs={ok}")))
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let err = connect(&params(&format!("{base} target_session_attrs=standby")))
        .await
        .expect_err("a primary is not a standby");
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.message().contains("not in hot standby mode"), "{err}");
}

#[tokio::test]
async fn unix_socket_of_the_throwaway_cluster() {
    if server().tls.is_none() {
        return;
    }
    // The throwaway cluster trusts its private socket; reach it through
    // the library's own description of it.
    let db = TestDb::new("socket").await;
    let client = db.connect().await;
    let row = client
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories'",
            &[],
        )
        .await
        .expect("query");
    let dir: String = row.get(0);
    let (_, port) = server().host_port();
    let p = params(&format!(
        "host={dir} port={port} user=postgres dbname={}",
        db.name
    ));
    let session = connect(&p).await.expect("socket connection");
    assert!(matches!(
        session.endpoint.host,
        pgbulk::conninfo::Host::Socket(_)
    ));
}
