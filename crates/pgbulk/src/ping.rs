//! `ping`: connect, identify the server, measure the round trip.

use std::time::{Duration, Instant};

use crate::connect::{Session, connect};
use crate::conninfo::{ConnParams, Endpoint, Origin};
use crate::error::{Error, Result};

/// What a ping found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PingReport {
    /// The endpoint that answered.
    pub endpoint: Endpoint,
    /// The database and role of the session.
    pub dbname: String,
    /// The role.
    pub user: String,
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// Whether the session is encrypted, and with which TLS version.
    pub tls: Option<String>,
    /// Where the password came from, if one was sent.
    pub password_origin: Option<Origin>,
    /// Time to open the session (TCP, TLS, authentication).
    pub connect_time: Duration,
    /// The fastest of three `SELECT 1` round trips.
    pub latency: Duration,
}

/// Connects with `params`, asks the server who it is and times three round
/// trips.
pub async fn ping(params: &ConnParams) -> Result<PingReport> {
    let Session {
        client,
        endpoint,
        password_origin,
        connect_time,
    } = connect(params).await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_database()::text, current_user::text, \
             (SELECT version FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid() AND ssl)",
            &[],
        )
        .await
        .map_err(|e| Error::server("asking the server for its version", e))?;
    let mut latency = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| Error::server("SELECT 1", e))?;
        latency = latency.min(started.elapsed());
    }
    Ok(PingReport {
        endpoint,
        server_version: row.get(0),
        dbname: row.get(1),
        user: row.get(2),
        tls: row.get(3),
        password_origin,
        connect_time,
        latency,
    })
}
