//! An upsert that writes most of a table's rows, done as a new copy of the
//! table: its rows with the staged ones laid over them, indexed once they
//! are in, analyzed and swapped in for it. A `MERGE` updating every row of
//! a 2 M-row table took 10.0 s by hand; the copy, its key and its
//! statistics 4.2 s.

use tokio_postgres::Transaction;
use tracing::{debug, info};

use super::batch::{Shares, written_share};
use super::indexes;
use super::merge::rewrite_statement;
use super::stage::Layout;
use super::target::Target;
use super::{Counts, Mode, Options, Prepared, Upsert};
use crate::error::{Error, Result};
use crate::lock::LockPolicy;
use crate::rebuild;
use crate::savepoint::Savepoint;
use crate::schema::TableName;
use crate::schema::quote_literal;

/// Staged rows below this are merged: a rewrite reads the whole table.
const REWRITE_MIN_ROWS: u64 = 100_000;

/// A rewrite is chosen when the rows a merge would update, plus a fifth
/// of those it would insert, are at least this share of the table's rows.
/// Per row, here: a merge's update about 5 µs (a new version and an index
/// entry), its insert about 2.5 µs; the copy about 2 µs per row of the
/// table and per new row. So updates pay from about 40% of the table and
/// inserts alone past about twice its rows; the rule asks a little more
/// (half the table in updates, or 2.5 times its rows in inserts).
const REWRITE_MIN_SHARE: f64 = 0.5;

/// How a rewrite of `table` is reported among a run's migrations (its oid
/// changed).
pub(super) fn migration(table: &impl std::fmt::Display) -> String {
    format!("{table}: most of its rows changed: rewritten as a new copy and swapped in")
}

/// Upserts the `rows` staged rows of the stages `sources` (tables of the
/// same columns, holding every column of the table but generated ones)
/// into the table of `target` (a unique index on exactly its key, whose
/// columns are `NOT NULL`) by rewriting it, when that pays (see
/// [`REWRITE_MIN_SHARE`]) and the table may be swapped
/// ([`rebuild::swappable`], without identity columns or foreign keys of
/// its own). Writers wait for the transaction's end from the start of the
/// copy (`SHARE`), readers from the swap; each lock is tried for under the
/// options' lock policy for at most [`rebuild::EMPTY_SWAP_WAIT`] in all,
/// terminating no one (a merge needs no lock that writers do not share).
/// The rows are counted as the copy fills. Declined,
/// with nothing done, when it does not pay, the table does not qualify,
/// or anything on the way fails (a lock not had, a key staged twice
/// failing the copy's unique index): the caller merges.
pub(super) async fn upsert(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    sources: &[String],
    rows: u64,
    options: &Options,
) -> Result<Rewrite> {
    let target = layout.target;
    if rows < REWRITE_MIN_ROWS {
        return Ok(Rewrite::Declined(None));
    }
    let table = &target.name;
    let Some((oid, table_rows)) = qualifies(tx, target).await? else {
        return Ok(Rewrite::Declined(None));
    };
    let share = written_share(tx, layout, sources, rows)
        .await
        .map_err(|e| Error::server("sampling the staged rows", e))?;
    #[allow(clippy::cast_precision_loss)]
    let rows_f = rows as f64;
    let updated_share = share.written - share.new;
    if !pays(rows_f, updated_share, share.new, table_rows) {
        return Ok(Rewrite::Declined(Some(share)));
    }
    let policy = LockPolicy {
        lock_timeout: options.lock_policy.lock_timeout,
        total_wait: options.lock_policy.total_wait.min(rebuild::EMPTY_SWAP_WAIT),
        terminate_blockers_after: None,
    };
    let savepoint = Savepoint::set(tx, "pgbulk_rewrite").await?;
    if let Some(work_mem) = &options.merge_work_mem {
        tx.batch_execute(&format!("SET LOCAL work_mem = {}", quote_literal(work_mem)))
            .await
            .map_err(|e| Error::server("SET work_mem", e))?;
    }
    let outcome = rewrite(tx, layout, sources, oid, &policy).await;
    match savepoint.end(outcome).await? {
        Ok((inserted, updated)) => {
            info!(
                "{table}: about {:.0}% of its rows changed: rewritten as a new copy of it, swapped in",
                (updated_share * rows_f * 100.0 / table_rows).min(100.0)
            );
            Ok(Rewrite::Done(Counts {
                inserted,
                updated,
                unchanged: rows.saturating_sub(inserted + updated),
                ..Counts::default()
            }))
        }
        Err(e) if e.is_canceled_or_lost() => Err(e),
        Err(e) => {
            debug!("{table}: rewriting it failed ({e}): merging into it");
            Ok(Rewrite::Declined(Some(share)))
        }
    }
}

/// What [`upsert`] did.
pub(super) enum Rewrite {
    /// Rewrote the table: what it counted.
    Done(Counts),
    /// Left it for the caller to merge into; the shares of the staged
    /// rows it sampled, if it did (the merge need not sample them again).
    Declined(Option<Shares>),
}

/// Whether rewriting a table of `table_rows` rows pays for `rows` staged
/// rows of which the shares `updated` change a row and `new` add one (see
/// [`REWRITE_MIN_SHARE`]).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn pays(rows: f64, updated: f64, new: f64, table_rows: f64) -> bool {
    rows >= REWRITE_MIN_ROWS as f64
        && table_rows > 0.0
        && rows * (updated + new / 5.0) >= REWRITE_MIN_SHARE * table_rows
}

/// The oid and estimated rows (`reltuples`) of the table of `target` when
/// it may be rewritten: it holds rows and is [`rebuild::swappable`], has
/// no identity column and no foreign key of its own, `target` writes
/// every column but generated ones, and a unique index is on exactly its
/// key, whose columns are `NOT NULL`.
async fn qualifies(
    client: &impl tokio_postgres::GenericClient,
    target: &Target,
) -> Result<Option<(u32, f64)>> {
    if target.key.is_empty() || target.partitioned {
        return Ok(None);
    }
    let table = &target.name;
    let Some(oid) = rebuild::swappable(client, table, None).await? else {
        return Ok(None);
    };
    let key: Vec<&str> = target
        .key
        .iter()
        .map(|&k| target.columns[k].name.as_str())
        .collect();
    let facts = client
        .query_one(
            "SELECT c.reltuples::float8, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a \
                            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                              AND a.attidentity <> ''), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
                            WHERE f.conrelid = c.oid AND f.contype = 'f'), \
                    (SELECT count(*) FROM pg_catalog.pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                       AND a.attgenerated = '')::int8, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                            WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid \
                              AND i.indpred IS NULL AND i.indexprs IS NULL \
                              AND i.indnatts = cardinality($2::text[]) \
                              AND ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                                        WHERE a.attrelid = c.oid AND a.attnotnull \
                                          AND a.attnum = ANY (i.indkey::int2[]) ORDER BY 1) \
                                  = ARRAY(SELECT unnest($2::text[]) ORDER BY 1)) \
             FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[&oid, &key],
        )
        .await
        .map_err(|e| Error::server(&format!("reading {table}"), e))?;
    let (table_rows, identity, references, columns, unique): (f64, bool, bool, i64, bool) = (
        facts.get(0),
        facts.get(1),
        facts.get(2),
        facts.get(3),
        facts.get(4),
    );
    let every_column = usize::try_from(columns).is_ok_and(|n| n == target.columns.len());
    Ok(
        (table_rows > 0.0 && !identity && !references && every_column && unique)
            .then_some((oid, table_rows)),
    )
}

/// The estimated rows of `table` when an upsert of the file columns
/// `columns` into it may rewrite it (see [`Options::rewrite_batches`]),
/// `None` when it may not.
pub(crate) async fn rewritable(
    client: &tokio_postgres::Client,
    prepared: &Prepared,
    table: &TableName,
    columns: &[String],
    options: &Options,
) -> Result<Option<f64>> {
    if !options.rewrite
        || options.mode != Mode::Upsert
        || options.upsert != Upsert::Auto
        || prepared.server_version() < 150_000
    {
        return Ok(None);
    }
    let target = super::parallel::target(client, prepared, table, options)
        .await?
        .project(columns, false)?;
    Ok(qualifies(client, &target).await?.map(|(_, rows)| rows))
}

/// The rewrite itself: the table locked against writers, its copy filled,
/// indexed, analyzed and swapped in. Returns the staged rows inserted and
/// updated.
async fn rewrite(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    sources: &[String],
    oid: u32,
    policy: &LockPolicy,
) -> Result<(u64, u64)> {
    let target = layout.target;
    let table = &target.name;
    rebuild::lock_for_copy(tx, policy, table, oid).await?;
    let live = crate::catalog::facts::read(tx.client(), oid).await?;
    let new = rebuild::create_new(tx, table, &live, false).await?;
    let new_oid: u32 = tx
        .query_one("SELECT $1::text::regclass::oid", &[&new.name.quoted()])
        .await
        .map_err(|e| Error::server("looking up the new table", e))?
        .get(0);
    let copy = Target {
        write: new.name.clone(),
        oid: new_oid,
        ..target.clone()
    };
    let deferred = indexes::defer(tx, std::slice::from_ref(&copy), &[new_oid]).await?;
    let row = tx
        .query_one(&rewrite_statement(layout, sources, &new.name.quoted()), &[])
        .await
        .map_err(|e| {
            Error::in_context(Error::server("rewrite", e), &format!("rewriting {table}"))
                .in_table(table)
        })?;
    let (written, inserted): (i64, i64) = (row.get(0), row.get(2));
    let (inserted, updated) = (
        u64::try_from(inserted).unwrap_or(0),
        u64::try_from(written - inserted).unwrap_or(0),
    );
    deferred.build(tx, 1).await?;
    rebuild::analyze(tx, &new).await?;
    rebuild::swap(tx, policy, &new).await?;
    Ok((inserted, updated))
}
