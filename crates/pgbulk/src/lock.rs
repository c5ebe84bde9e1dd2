//! The lock policy: every statement that takes a strong lock runs under a
//! short `lock_timeout` and is retried with backoff, so readers never queue
//! behind it for long. After the total wait it fails naming the backends in
//! the way, or, when asked, terminates them after a grace period. It also
//! owns pgbulk's advisory locks, which serialise ingests into one table.

use std::time::{Duration, Instant};

use tokio_postgres::types::Oid;
use tokio_postgres::{Client, GenericClient};
use tracing::{info, warn};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableName;

/// How long to wait for locks, and what to do about blockers.
#[derive(Debug, Clone)]
pub struct LockPolicy {
    /// `lock_timeout` of each attempt (default 200 ms): while an attempt
    /// waits, new readers of the table queue behind it, so this bounds
    /// how long pgbulk can make a reader wait.
    pub lock_timeout: Duration,
    /// Give up after waiting this long in all (default 5 minutes).
    pub total_wait: Duration,
    /// Terminate the blocking backends once this much of the wait has
    /// passed (default: never).
    pub terminate_blockers_after: Option<Duration>,
}

impl Default for LockPolicy {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_millis(200),
            total_wait: Duration::from_secs(300),
            terminate_blockers_after: None,
        }
    }
}

/// A backend holding a lock pgbulk waits for.
#[derive(Debug, Clone)]
pub struct Blocker {
    /// Its process id.
    pub pid: i32,
    /// Its `application_name`.
    pub application_name: String,
    /// When its current query (or transaction) started.
    pub query_start: Option<String>,
    /// Its current query, shortened.
    pub query: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}) since {}: {}",
            self.pid,
            if self.application_name.is_empty() {
                "no application_name"
            } else {
                &self.application_name
            },
            self.query_start.as_deref().unwrap_or("?"),
            self.query
        )
    }
}

/// Backends other than this one holding locks on `table`.
pub async fn blockers(client: &impl GenericClient, table: Oid) -> Result<Vec<Blocker>> {
    let rows = client
        .query(
            "SELECT DISTINCT a.pid, a.application_name, a.query_start::text, left(a.query, 200) \
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.relation = $1 AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()",
            &[&table],
        )
        .await
        .map_err(|e| Error::server("looking for blocking backends", e))?;
    Ok(rows
        .into_iter()
        .map(|r| Blocker {
            pid: r.get(0),
            application_name: r.get(1),
            query_start: r.get(2),
            query: r.get::<_, Option<String>>(3).unwrap_or_default(),
        })
        .collect())
}

/// Runs a locking statement inside the caller's transaction under the
/// policy: each attempt under `lock_timeout` in a savepoint, rolled back and
/// retried with backoff while the lock is not available (`what` names it in
/// messages).
pub(crate) async fn run_in_savepoint(
    tx: &tokio_postgres::Transaction<'_>,
    policy: &LockPolicy,
    table: Oid,
    what: &str,
    statement: &str,
) -> Result<()> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        tx.batch_execute(&format!(
            "SAVEPOINT pgbulk_lock; SET LOCAL lock_timeout = '{}ms'",
            policy.lock_timeout.as_millis()
        ))
        .await
        .map_err(|e| Error::server("SAVEPOINT", e))?;
        match tx.batch_execute(statement).await {
            Ok(()) => {
                tx.batch_execute("RELEASE SAVEPOINT pgbulk_lock; SET LOCAL lock_timeout = 0")
                    .await
                    .map_err(|e| Error::server("RELEASE SAVEPOINT", e))?;
                return Ok(());
            }
            Err(e) if is_lock_timeout(&e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT pgbulk_lock")
                    .await
                    .map_err(|e| Error::server("ROLLBACK TO SAVEPOINT", e))?;
                attempt += 1;
                wait_or_give_up(tx.client(), policy, Some(table), what, started, attempt).await?;
            }
            Err(e) => return Err(Error::server(what, e)),
        }
    }
}

fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "55P03")
}

/// Runs `statements` in one short transaction of their own under the
/// policy, retrying the whole transaction while a lock times out. `table`
/// is the table whose blockers are named (or terminated).
pub async fn run_in_own_transaction(
    client: &mut Client,
    policy: &LockPolicy,
    table: Option<Oid>,
    what: &str,
    statements: &[String],
) -> Result<()> {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::server("BEGIN", e))?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            policy.lock_timeout.as_millis()
        ))
        .await
        .map_err(|e| Error::server("SET lock_timeout", e))?;
        let mut failed = None;
        for sql in statements {
            if let Err(e) = tx.batch_execute(sql).await {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => {
                tx.commit().await.map_err(|e| Error::server(what, e))?;
                return Ok(());
            }
            Some(e) if is_lock_timeout(&e) => {
                drop(tx);
                attempt += 1;
                wait_or_give_up(client, policy, table, what, started, attempt).await?;
            }
            Some(e) => return Err(Error::server(what, e)),
        }
    }
}

/// Runs one statement outside any transaction (`CREATE INDEX
/// CONCURRENTLY`), retrying under the policy. `cleanup` runs after a failed
/// attempt (to drop an invalid index left behind).
pub async fn run_outside_transaction(
    client: &mut Client,
    policy: &LockPolicy,
    table: Option<Oid>,
    what: &str,
    sql: &str,
    cleanup: Option<&str>,
) -> Result<()> {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    client
        .batch_execute(&format!(
            "SET lock_timeout = '{}ms'",
            policy.lock_timeout.as_millis()
        ))
        .await
        .map_err(|e| Error::server("SET lock_timeout", e))?;
    let result = loop {
        match client.batch_execute(sql).await {
            Ok(()) => break Ok(()),
            Err(e) => {
                if let Some(cleanup) = cleanup {
                    client
                        .batch_execute(cleanup)
                        .await
                        .map_err(|e| Error::server("cleaning up after a failed attempt", e))?;
                }
                if !is_lock_timeout(&e) {
                    break Err(Error::server(what, e));
                }
                attempt += 1;
                if let Err(e) = wait_or_give_up(client, policy, table, what, started, attempt).await
                {
                    break Err(e);
                }
            }
        }
    };
    client
        .batch_execute("RESET lock_timeout")
        .await
        .map_err(|e| Error::server("RESET lock_timeout", e))?;
    result
}

/// After a lock timeout: sleep with backoff, terminate blockers when the
/// policy says so, or fail naming them once the total wait is spent.
pub(crate) async fn wait_or_give_up(
    client: &Client,
    policy: &LockPolicy,
    table: Option<Oid>,
    what: &str,
    started: Instant,
    attempt: u32,
) -> Result<()> {
    let found = match table {
        Some(oid) => blockers(client, oid).await?,
        None => Vec::new(),
    };
    let waited = started.elapsed();
    if let Some(grace) = policy.terminate_blockers_after {
        if waited >= grace && !found.is_empty() {
            for b in &found {
                warn!("terminating backend blocking {what}: {b}");
                client
                    .execute("SELECT pg_catalog.pg_terminate_backend($1)", &[&b.pid])
                    .await
                    .map_err(|e| Error::server("pg_terminate_backend", e))?;
            }
        }
    }
    if waited >= policy.total_wait {
        let names = if found.is_empty() {
            "no blocking backend could be identified".to_owned()
        } else {
            format!(
                "blocked by {}",
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        return Err(Error::new(
            ErrorKind::Server,
            format!(
                "{what}: gave up after waiting {:.0} s for locks ({attempt} attempts of {} ms); {names}",
                waited.as_secs_f64(),
                policy.lock_timeout.as_millis()
            ),
        ));
    }
    let backoff = jittered(
        Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)))
            .min(Duration::from_secs(5)),
    );
    let backoff = backoff.min(policy.total_wait.saturating_sub(waited));
    info!(
        "{what}: lock not available (attempt {attempt}), retrying in {} ms{}",
        backoff.as_millis(),
        if found.is_empty() {
            String::new()
        } else {
            format!(
                "; held by {}",
                found
                    .iter()
                    .map(|b| b.pid.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    tokio::time::sleep(backoff).await;
    Ok(())
}

/// Between half and all of `backoff`, at random: processes retrying the
/// same lock do not retry in step.
fn jittered(backoff: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let unit = (h.finish() % 1000) as u32;
    backoff / 2 + backoff / 2 * unit / 1000
}

/// The first key of pgbulk's advisory locks (the second is the hash of a
/// table's name: stable across rebuilds, which change its oid).
const ADVISORY_NAMESPACE: i32 = 1_885_827_693;

/// The names of `tables`, sorted and without repeats: advisory locks are
/// always taken in this order, so two ingests never deadlock on them.
fn advisory_keys(tables: &[&TableName]) -> Vec<String> {
    let mut keys: Vec<String> = tables.iter().map(ToString::to_string).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Serialises ingests into `tables` until the transaction ends (a
/// transaction-scoped advisory lock per table, in name order). Waiting for
/// one is said, naming who holds it (see [`advisory_lock`]).
pub(crate) async fn serialise_ingests(
    tx: &impl GenericClient,
    policy: &LockPolicy,
    tables: &[&TableName],
) -> Result<()> {
    for key in advisory_keys(tables) {
        advisory_lock(tx, policy, &key, false).await?;
    }
    Ok(())
}

/// Takes (`hold`) or releases the same locks for the session: a
/// replace-atomic run owns its tables from the first batch to the swap.
pub(crate) async fn hold_tables(
    client: &Client,
    policy: &LockPolicy,
    tables: &[TableName],
    hold: bool,
) -> Result<()> {
    let tables: Vec<&TableName> = tables.iter().collect();
    for key in advisory_keys(&tables) {
        if hold {
            advisory_lock(client, policy, &key, true).await?;
        } else {
            release_key(client, &key).await?;
        }
    }
    Ok(())
}

/// Takes pgbulk's advisory lock on `key` for the session (waiting, and
/// saying for whom, as for the ingest lock): released by [`release_key`]
/// or when the session ends, also when its process is killed.
#[cfg(feature = "arrow")]
pub(crate) async fn hold_key(client: &Client, policy: &LockPolicy, key: &str) -> Result<()> {
    advisory_lock(client, policy, key, true).await
}

/// Takes pgbulk's advisory lock on `key` for the session if no other
/// session holds it; whether it did.
#[cfg(feature = "arrow")]
pub(crate) async fn try_hold_key(client: &Client, key: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2))",
            &[&ADVISORY_NAMESPACE, &key],
        )
        .await
        .map_err(|e| Error::server("taking an advisory lock", e))?
        .get(0))
}

/// Releases the session's advisory lock on `key`.
pub(crate) async fn release_key(client: &Client, key: &str) -> Result<()> {
    client
        .execute(
            "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
            &[&ADVISORY_NAMESPACE, &key],
        )
        .await
        .map_err(|e| Error::server("releasing an advisory lock", e))?;
    Ok(())
}

/// Takes pgbulk's advisory lock on `key`, for the session or until the
/// transaction ends. When another backend holds it,
/// says who before waiting: another pgbulk run, or the orphan of a killed
/// one (its `application_name` names a process of this host that is gone),
/// which the server ends once its statement notices the client is gone,
/// or which is terminated at once when the policy terminates blockers.
async fn advisory_lock(
    client: &impl GenericClient,
    policy: &LockPolicy,
    key: &str,
    session: bool,
) -> Result<()> {
    let err = |e| Error::server("taking the ingest lock", e);
    let (try_lock, lock) = if session {
        ("pg_try_advisory_lock", "pg_advisory_lock")
    } else {
        ("pg_try_advisory_xact_lock", "pg_advisory_xact_lock")
    };
    let taken: bool = client
        .query_one(
            &format!("SELECT pg_catalog.{try_lock}($1, pg_catalog.hashtext($2))"),
            &[&ADVISORY_NAMESPACE, &key],
        )
        .await
        .map_err(err)?
        .get(0);
    if taken {
        return Ok(());
    }
    let holders = client
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), \
                    coalesce(pg_catalog.to_char(a.xact_start, 'YYYY-MM-DD HH24:MI:SS'), '') \
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
               AND l.classid = $1::int8::oid \
               AND l.objid = ((pg_catalog.hashtext($2)::int8 + 4294967296) % 4294967296)::oid \
               AND l.pid <> pg_catalog.pg_backend_pid()",
            &[&i64::from(ADVISORY_NAMESPACE), &key],
        )
        .await
        .map_err(err)?;
    for h in &holders {
        let pid: i32 = h.get(0);
        let app: String = h.get(1);
        let state: String = h.get(2);
        let since: String = h.get(3);
        if is_orphan(&app) {
            if policy.terminate_blockers_after.is_some() {
                warn!(
                    "{key}: ending backend {pid} ({app}), left running by an earlier pgbulk run that was killed"
                );
                client
                    .execute("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])
                    .await
                    .map_err(|e| Error::server("pg_terminate_backend", e))?;
            } else {
                warn!(
                    "{key}: waiting for backend {pid} ({app}, {state} since {since}), left running by an earlier pgbulk run that was killed; it ends when its statement notices (or pass --terminate-blockers to end it now)"
                );
            }
        } else if !is_this_process(&app) {
            warn!(
                "{key}: waiting for backend {pid} ({app}, {state} since {since}), which is loading the same table"
            );
        }
    }
    client
        .execute(
            &format!("SELECT pg_catalog.{lock}($1, pg_catalog.hashtext($2))"),
            &[&ADVISORY_NAMESPACE, &key],
        )
        .await
        .map_err(err)?;
    Ok(())
}

/// The `application_name` pgbulk gives its sessions: `base` (the user's
/// own, or `pgbulk`) followed by ` [pgbulk <host>:<pid>]`, so that a later
/// run can tell a session whose process is gone. At most 63 bytes (the
/// server's limit), cut on a character boundary, the tag kept whole.
pub(crate) fn session_tag(base: &str) -> String {
    let tag = format!(" [pgbulk {}:{}]", hostname(), std::process::id());
    let mut keep = 63usize.saturating_sub(tag.len()).min(base.len());
    while !base.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{tag}", &base[..keep])
}

/// The host and process a pgbulk session tag (see [`session_tag`]) names.
fn tagged_process(application_name: &str) -> Option<(&str, libc::pid_t)> {
    let rest = application_name.rsplit_once(" [pgbulk ")?.1;
    let (host, pid) = rest.strip_suffix(']')?.rsplit_once(':')?;
    Some((host, pid.parse().ok()?))
}

/// Whether `application_name` is a pgbulk session tag of a process of this
/// host that no longer exists.
fn is_orphan(application_name: &str) -> bool {
    let Some((host, pid)) = tagged_process(application_name) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let gone = unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    host == hostname() && gone
}

/// Whether `application_name` is a session of this very process (another
/// stream of the same run: waiting for it is no news to the user).
fn is_this_process(application_name: &str) -> bool {
    tagged_process(application_name).is_some_and(|(host, pid)| {
        u32::try_from(pid) == Ok(std::process::id()) && host == hostname()
    })
}

/// This machine's host name (empty when it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; the name is NUL-ended
    // when it fits.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    if !ok {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The advisory-lock key serialising the creation of schema `name`.
pub(crate) fn schema_key(name: &str) -> String {
    format!("schema {name}")
}

/// Statements taking the advisory locks of `keys` (tables by name, schemas
/// by [`schema_key`]) until the transaction ends, in name order: what
/// concurrent creators of the same objects serialise on.
pub(crate) fn creation_locks(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys.dedup();
    keys.iter()
        .map(|k| {
            format!(
                "SELECT pg_catalog.pg_advisory_xact_lock({ADVISORY_NAMESPACE}, pg_catalog.hashtext({}))",
                crate::schema::dollar_quote(k)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tags_fit_the_server_and_name_this_process() {
        let tag = session_tag("pgbulk");
        assert!(
            tag.starts_with("pgbulk [pgbulk ")
                && tag.ends_with(&format!(":{}]", std::process::id()))
        );
        assert!(!is_orphan(&tag), "this process is alive");
        assert!(is_this_process(&tag));
        assert!(!is_this_process("pgbulk [pgbulk elsewhere.example:1]"));
        assert!(!is_this_process(&format!(
            "pgbulk [pgbulk {}:1]",
            hostname()
        )));
        let long = session_tag(&"é".repeat(60));
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with(&format!(":{}]", std::process::id())));
        assert!(!is_orphan("psql") && !is_orphan("x [pgbulk nohost]"));
        // A process of another host is never taken for an orphan.
        assert!(!is_orphan("pgbulk [pgbulk elsewhere.example:1]"));
    }
}
