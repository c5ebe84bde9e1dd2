//! Opening a session: tries each endpoint in turn as libpq does, with the
//! password from the settings or the password file, TLS per `sslmode`, and
//! `target_session_attrs` checked on the open session.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::config::SslMode as PgSslMode;
use tracing::{debug, warn};

use crate::conninfo::{
    ConnParams, Endpoint, Host, Origin, PassfileSkipped, Password, SslMode, TargetSessionAttrs,
    passfile_lookup,
};
use crate::error::{Error, ErrorKind, Result};
use crate::tls;

/// An open session and where it landed.
#[derive(Debug)]
pub struct Session {
    /// The client; its connection runs on a spawned task.
    pub client: tokio_postgres::Client,
    /// The endpoint that accepted the session.
    pub endpoint: Endpoint,
    /// Where the password used came from, if one was used.
    pub password_origin: Option<Origin>,
    /// Time from the first attempt to the usable session.
    pub connect_time: Duration,
}

/// Connects to the first acceptable endpoint of `params`.
///
/// Errors are [`ErrorKind::Auth`] when a server rejected the credentials (or
/// wanted a password and had none), [`ErrorKind::Tls`] when TLS could not be
/// set up as demanded, else [`ErrorKind::Connect`]; the message names every
/// endpoint tried and never contains the password.
pub async fn connect(params: &ConnParams) -> Result<Session> {
    let started = Instant::now();
    let mut order: Vec<&Endpoint> = params.endpoints.iter().collect();
    if params.load_balance_hosts {
        shuffle(&mut order);
    }
    let passes: &[TargetSessionAttrs] = match params.target_session_attrs {
        TargetSessionAttrs::PreferStandby => {
            &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
        }
        other => &[other][..],
    };
    let mut failures: Vec<Error> = Vec::new();
    for want in passes {
        for endpoint in &order {
            match connect_endpoint(params, endpoint, *want).await {
                Ok((client, password_origin)) => {
                    return Ok(Session {
                        client,
                        endpoint: (*endpoint).clone(),
                        password_origin,
                        connect_time: started.elapsed(),
                    });
                }
                Err(e) => {
                    debug!(endpoint = %endpoint, error = %e, "connection attempt failed");
                    failures.push(e);
                }
            }
        }
    }
    Err(combined(failures))
}

/// The failures of every endpoint tried as one error: [`ErrorKind::Auth`]
/// or [`ErrorKind::Tls`] when any was, else [`ErrorKind::Connect`].
pub(crate) fn combined(failures: Vec<Error>) -> Error {
    let kind = [ErrorKind::Auth, ErrorKind::Tls]
        .into_iter()
        .find(|k| failures.iter().any(|e| e.kind() == *k))
        .unwrap_or(ErrorKind::Connect);
    let message = failures
        .iter()
        .map(Error::message)
        .collect::<Vec<_>>()
        .join("; ");
    let mut error = Error::new(kind, message);
    if let Some(first) = failures.into_iter().next() {
        error = error.with_source(first);
    }
    error
}

/// Asks the server to cancel the statement running on the session that
/// `token` belongs to (TLS as `params` demand).
pub async fn cancel(token: &tokio_postgres::CancelToken, params: &ConnParams) -> Result<()> {
    let result = match params.sslmode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => {
            token.cancel_query(tokio_postgres::NoTls).await
        }
        _ => {
            token
                .cancel_query(tls::connector(params.sslmode, &params.tls)?)
                .await
        }
    };
    result.map_err(|e| {
        Error::new(
            ErrorKind::Connect,
            format!("cancelling the running statement: {e}"),
        )
    })
}

/// Fisher-Yates with the system's random source.
fn shuffle<T>(items: &mut [T]) {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    for i in (1..items.len()).rev() {
        let mut bytes = [0u8; 8];
        if rng.fill(&mut bytes).is_err() {
            return;
        }
        let j = usize::try_from(u64::from_le_bytes(bytes) % (i as u64 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// The password for `endpoint` and where it came from.
pub(crate) fn password_for(params: &ConnParams, endpoint: &Endpoint) -> Option<(Password, Origin)> {
    if let (Some(p), Some(origin)) = (params.password(), params.password_origin()) {
        return Some((p.clone(), origin.clone()));
    }
    let path = params.passfile.as_ref()?;
    let found = passfile_lookup(
        path,
        &endpoint.passfile_host(),
        &endpoint.port.to_string(),
        &params.dbname,
        &params.user,
    );
    match found {
        Ok(Some(pw)) => Some((Password::new(pw), Origin::PasswordFile(path.clone()))),
        Ok(None) | Err(PassfileSkipped::Missing) => None,
        Err(PassfileSkipped::Insecure(why)) => {
            warn!("{why}; ignoring it");
            None
        }
    }
}

async fn connect_endpoint(
    params: &ConnParams,
    endpoint: &Endpoint,
    want: TargetSessionAttrs,
) -> Result<(tokio_postgres::Client, Option<Origin>)> {
    let password = password_for(params, endpoint);
    let is_socket = matches!(endpoint.host, Host::Socket(_));
    let modes: &[PgSslMode] = match (params.sslmode, is_socket) {
        (_, true) | (SslMode::Disable, _) => &[PgSslMode::Disable],
        (SslMode::Allow, _) => &[PgSslMode::Disable, PgSslMode::Require],
        (SslMode::Prefer, _) => &[PgSslMode::Prefer],
        _ => &[PgSslMode::Require],
    };
    let connector = if modes == [PgSslMode::Disable] {
        None
    } else {
        Some(tls::connector(params.sslmode, &params.tls)?)
    };
    let mut last = None;
    for mode in modes {
        let config = pg_config(params, endpoint, password.as_ref().map(|(p, _)| p), *mode);
        let attempt = match (&connector, mode) {
            (Some(tls), PgSslMode::Prefer | PgSslMode::Require) => {
                config.connect(tls.clone()).await.map(|(client, conn)| {
                    spawn_connection(conn);
                    client
                })
            }
            _ => config
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(client, conn)| {
                    spawn_connection(conn);
                    client
                }),
        };
        match attempt {
            Ok(client) => {
                check_session(&client, endpoint, want).await?;
                return Ok((client, password.map(|(_, origin)| origin)));
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(error) = last else {
        return Err(Error::new(
            ErrorKind::Connect,
            format!("{endpoint}: no attempt made"),
        ));
    };
    Err(classify(
        endpoint,
        params,
        password.as_ref().map(|(_, o)| o),
        error,
    ))
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    spawn_session_task(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "connection closed with an error");
        }
    });
}

/// Session tasks (connections, relays) still running.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Woken each time a session task ends.
static ENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Counts a session task while it runs.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        ENDED.notify_waiters();
    }
}

/// Spawns a task that carries a session (a connection, or a relay to
/// the server), counted for [`close_sessions`].
pub(crate) fn spawn_session_task(task: impl Future<Output = ()> + Send + 'static) {
    RUNNING.fetch_add(1, Ordering::AcqRel);
    let running = Running;
    tokio::spawn(async move {
        let _running = running;
        task.await;
    });
}

/// Waits, at most `limit`, for the sessions of dropped clients to end:
/// a connection reads the server's answers to all it sent, then says
/// goodbye (`Terminate`) and closes. A process that exits without this
/// wait cuts its sessions: the server logs `connection to client lost`
/// and counts them in `pg_stat_database.sessions_abandoned`. Call it
/// after the clients are dropped, before the runtime is; returns whether
/// every session ended.
pub async fn close_sessions(limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ended = ENDED.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if RUNNING.load(Ordering::Acquire) == 0 {
            return true;
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            return RUNNING.load(Ordering::Acquire) == 0;
        }
    }
}

pub(crate) fn pg_config(
    params: &ConnParams,
    endpoint: &Endpoint,
    password: Option<&Password>,
    sslmode: PgSslMode,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    match &endpoint.host {
        Host::Tcp(name) => {
            config.host(name);
        }
        Host::Socket(dir) => {
            config.host_path(dir);
        }
        Host::AddrOnly => {}
    }
    if let Some(addr) = endpoint.hostaddr {
        config.hostaddr(addr);
        if endpoint.host == Host::AddrOnly {
            config.host(addr.to_string());
        }
    }
    config
        .port(endpoint.port)
        .user(&params.user)
        .dbname(&params.dbname)
        .application_name(&params.application_name)
        .ssl_mode(sslmode)
        .channel_binding(params.channel_binding)
        .keepalives(params.keepalives.enabled);
    if let Some(password) = password {
        config.password(password.expose());
    }
    if let Some(options) = &params.options {
        config.options(options);
    }
    if let Some(timeout) = params.connect_timeout {
        config.connect_timeout(timeout);
    }
    if let Some(idle) = params.keepalives.idle {
        config.keepalives_idle(idle);
    }
    if let Some(interval) = params.keepalives.interval {
        config.keepalives_interval(interval);
    }
    if let Some(count) = params.keepalives.count {
        config.keepalives_retries(count);
    }
    if let Some(timeout) = params.keepalives.tcp_user_timeout {
        config.tcp_user_timeout(timeout);
    }
    config
}

/// Rejects a session on the wrong kind of server (`target_session_attrs`).
async fn check_session(
    client: &tokio_postgres::Client,
    endpoint: &Endpoint,
    want: TargetSessionAttrs,
) -> Result<()> {
    let query = match want {
        TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => return Ok(()),
        TargetSessionAttrs::ReadWrite | TargetSessionAttrs::ReadOnly => {
            "SELECT current_setting('transaction_read_only') = 'on'"
        }
        TargetSessionAttrs::Primary | TargetSessionAttrs::Standby => {
            "SELECT pg_catalog.pg_is_in_recovery()"
        }
    };
    let row = client
        .query_one(query, &[])
        .await
        .map_err(|e| Error::server(&format!("{endpoint}: checking target_session_attrs"), e))?;
    let flag: bool = row.get(0);
    let problem = match (want, flag) {
        (TargetSessionAttrs::ReadWrite, true) => Some("session is read-only"),
        (TargetSessionAttrs::ReadOnly, false) => Some("session is not read-only"),
        (TargetSessionAttrs::Primary, true) => Some("server is in hot standby mode"),
        (TargetSessionAttrs::Standby, false) => Some("server is not in hot standby mode"),
        _ => None,
    };
    match problem {
        Some(p) => Err(Error::new(ErrorKind::Connect, format!("{endpoint}: {p}"))),
        None => Ok(()),
    }
}

/// Turns a tokio-postgres connect error into one line naming the endpoint.
pub(crate) fn classify(
    endpoint: &Endpoint,
    params: &ConnParams,
    password_origin: Option<&Origin>,
    error: tokio_postgres::Error,
) -> Error {
    let target = format!("{endpoint} user={} dbname={}", params.user, params.dbname);
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        let kind = if code.starts_with("28") {
            ErrorKind::Auth
        } else {
            ErrorKind::Connect
        };
        let mut message = format!("{target}: {}", db.message());
        if kind == ErrorKind::Auth {
            if let Some(Origin::PasswordFile(path)) = password_origin {
                message.push_str(&format!(
                    " (password retrieved from file \"{}\")",
                    path.display()
                ));
            }
        }
        return Error::new(kind, message).with_source(error);
    }
    let text = error.to_string();
    let mut cause = String::new();
    let mut source = std::error::Error::source(&error);
    let mut tls = false;
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                tls = true;
            }
        }
        cause = s.to_string();
        source = s.source();
    }
    let (kind, reason) = if text.contains("password missing") || cause.contains("password missing")
    {
        (
            ErrorKind::Auth,
            "the server requires a password and none was given (use PGPASSWORD, ~/.pgpass, a service or a profile)".to_owned(),
        )
    } else if text.contains("server does not support TLS") {
        (
            ErrorKind::Tls,
            format!(
                "the server does not support TLS, but sslmode={} requires it",
                params.sslmode.as_str()
            ),
        )
    } else if tls || text.contains("tls") || text.contains("TLS") {
        (
            ErrorKind::Tls,
            format!(
                "TLS failed: {}",
                if cause.is_empty() { &text } else { &cause }
            ),
        )
    } else if cause.is_empty() || cause == text {
        (ErrorKind::Connect, text.clone())
    } else {
        (ErrorKind::Connect, format!("{text}: {cause}"))
    };
    let hint = match (&endpoint.host, reason.contains("refused")) {
        (Host::Socket(_), _) if reason.contains("No such file") => {
            " (is the server running locally and accepting connections on that socket?)"
        }
        (_, true) => " (is the server running on that host and accepting TCP/IP connections?)",
        _ => "",
    };
    Error::new(kind, format!("{target}: {reason}{hint}")).with_source(error)
}
