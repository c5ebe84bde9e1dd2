//! One batch's transaction: staging, the ingest lock, delete or merge, the
//! rebuild swap, the watermark, the hook and the commit.

use std::collections::BTreeMap;

use tokio_postgres::Transaction;

use super::indexes;
use super::merge::{
    CHANGES, Rejected, column_list, insert_statement, is_row_error, is_value_error, key_list,
    merge_statement, on_conflict_statement, order_statement, rejected_values, repeats,
    sample_statement, sieve_statement, update_then_insert_statement, xact_stats,
};
use super::range;
use super::rewrite::{self, Rewrite};
use super::stage::{Layout, RAW_COLUMN, WHERE_COLUMN, stage_rows};
use super::target::{Target, Targets, declared_index, read_targets};
use super::{
    Batch, BatchContext, BatchInfo, BatchWatermark, Committed, Counts, Mode, OnDuplicate, Report,
    StagedRejection,
};
use crate::error::{Error, ErrorKind, Result};
use crate::rebuild;
use crate::savepoint::Savepoint;
use crate::schema::{TableName, quote_ident, quote_literal};
use crate::watermark;

/// Stages, merges and commits one batch with its watermark.
pub(super) async fn load_batch(
    tx: Transaction<'_>,
    targets: &Targets,
    batch: Batch,
    ctx: &BatchContext<'_>,
    report: &mut Report,
) -> Result<(BTreeMap<String, Counts>, u64, Committed, Vec<TableName>)> {
    let (number, first, options) = (ctx.number, ctx.first, ctx.options);
    // 0. Tables being rebuilt: their new tables receive the rows.
    let mut news = Vec::new();
    let mut local;
    let targets = if ctx.rebuild.is_empty() {
        targets
    } else {
        local = targets.clone();
        for (name, _, declared) in &ctx.rebuild {
            let new = rebuild::create_new(&tx, name, declared, false).await?;
            let fresh =
                read_targets(tx.client(), &[(name.clone(), new.name.clone())], ctx.input).await?;
            if let (Some(&i), Some(t)) = (
                local.lookup.get(&name.to_string()),
                fresh.into_iter().next(),
            ) {
                local.list[i] = t;
            }
            news.push(new);
        }
        &local
    };
    let context = |table: &TableName, what: &str| format!("batch {number}, table {table}: {what}");
    // 1. Stage: the client streams; no strong lock is held.
    let mut skipped_by_table = BTreeMap::new();
    let lookup = &targets.lookup;
    let targets = targets.list.as_slice();
    // Text and binary rows fill only the columns the source names.
    let projected;
    let targets = match batch.rows.one_table() {
        Some((table, columns)) => {
            let t = declared_index(lookup, table)?;
            let mut list = targets.to_vec();
            let replacing = matches!(options.mode, Mode::DeleteThenUpsert | Mode::ReplaceAtomic);
            list[t] = list[t].project(columns, replacing)?;
            projected = list;
            projected.as_slice()
        }
        None => targets,
    };
    let mut resume = batch.resume;
    // The first batch of delete-then-upsert deletes after staging: its rows
    // must not be in the table yet.
    let deletes_first = ctx.opening && options.mode == Mode::DeleteThenUpsert;
    // Tables this transaction created get their indexes once the rows are in.
    let deferred = indexes::defer(&tx, targets, &ctx.fresh).await?;
    let (staged, mut source) = stage_rows(
        &tx,
        targets,
        lookup,
        batch.rows,
        number,
        &mut skipped_by_table,
        &mut resume,
        !deletes_first,
        options.reject_rows,
        &ctx.fresh,
        options.on_duplicate == OnDuplicate::Last,
        deferred.keys_free(),
    )
    .await
    .map_err(|e| match e.kind() {
        ErrorKind::Data => e.in_batch(number as u64),
        _ => e
            .context(format_args!("batch {number}"))
            .in_batch(number as u64),
    })?;
    // Tables whose rows went straight in by their key: a key that repeats
    // fails its build, and is removed before the next.
    let keyed: Vec<usize> = (0..targets.len())
        .filter(|&t| {
            staged[t]
                .as_ref()
                .is_some_and(|p| p.keyed_direct(&targets[t]))
        })
        .collect();
    let mut repeated_direct = vec![0; targets.len()];
    let built = if keyed.is_empty() || deferred.is_empty() {
        deferred.build(&tx, number).await
    } else {
        let savepoint = Savepoint::set(&tx, "pgbulk_build").await?;
        match savepoint.end(deferred.build(&tx, number).await).await? {
            Err(e) if e.server_kind() == Some(crate::ServerErrorKind::UniqueViolation) => {
                tracing::debug!("batch {number}: a key copied straight in repeats ({e})");
                for &t in &keyed {
                    repeated_direct[t] = indexes::remove_repeats(&tx, &targets[t]).await?;
                }
                deferred.build(&tx, number).await
            }
            built => built,
        }
    };
    built.map_err(|e| e.in_batch(number as u64))?;
    if let Some(merging) = &options.merging {
        merging.store(number as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let skipped: u64 = skipped_by_table.values().sum();
    for (table, n) in skipped_by_table {
        *report.skipped.entry(table).or_default() += n;
    }
    // The live rows of rebuilt tables, copied by column name while writers
    // wait and readers go on (unless the first batch deletes them anyway).
    for ((name, live, declared), new) in ctx.rebuild.iter().zip(&news) {
        let live_oid: u32 = tx
            .query_one("SELECT $1::text::regclass::oid", &[&name.quoted()])
            .await
            .map_err(|e| Error::server("looking up a table", e))?
            .get(0);
        rebuild::lock_for_copy(&tx, &options.lock_policy, name, live_oid).await?;
        if !(ctx.opening && options.mode == Mode::DeleteThenUpsert) {
            rebuild::copy_rows(&tx, new, live, declared).await?;
        }
    }
    let mut work: Vec<Staged<'_>> = targets
        .iter()
        .zip(staged)
        .zip(repeated_direct)
        .filter_map(|((target, p), repeated_direct)| {
            let p = p?;
            Some(Staged {
                target,
                stage: p.into?,
                unlogged: p.unlogged,
                direct: p.direct,
                copied: p.copied,
                copied_direct: p.copied_direct,
                repeated_direct,
                duplicates: p.duplicates,
                shadows: p.shadows,
                locate_all: p.locate_all,
            })
        })
        .collect();
    // 2. Serialise with other ingests of the same tables, in name order.
    let mut names: Vec<&TableName> = work.iter().map(|w| &w.target.name).collect();
    if ctx.opening && options.mode == Mode::DeleteThenUpsert || !ctx.rebuild.is_empty() {
        names = targets.iter().map(|t| &t.name).collect();
    }
    if ctx.ingest_lock {
        crate::lock::serialise_ingests(&tx, &options.lock_policy, &names).await?;
    }
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    // 3. Delete (first batch of delete-then-upsert), then merge.
    if ctx.opening && options.mode == Mode::DeleteThenUpsert {
        for target in targets {
            let deleted = target.delete_all(&tx).await.map_err(|e| {
                if e.kind() == ErrorKind::Config {
                    return e;
                }
                Error::in_context(e, &context(&target.name, "deleting")).in_table(&target.name)
            })?;
            counts.entry(target.name.to_string()).or_default().deleted = deleted;
        }
    }
    let mut rewritten = Vec::new();
    for w in &mut work {
        let target = w.target;
        let c = counts.entry(target.name.to_string()).or_default();
        c.inserted += w.copied_direct;
        if w.direct {
            c.inserted += w.copied;
        }
        c.inserted = c.inserted.saturating_sub(w.repeated_direct);
        c.repeated += w.repeated_direct;
        if w.direct {
            continue;
        }
        let layout = Layout {
            target,
            shadows: &w.shadows,
            locate_all: w.locate_all,
            sorted: false,
        };
        // Staged rows changing most of the table rewrite it, when it
        // qualifies: rows with no repeated key (the client's key hashes
        // say so) and no value for the server to convert, into the table
        // itself (not a copy this batch fills).
        let rewrites = ctx.rewrite
            && !w.duplicates
            && w.copied_direct == 0
            && !layout.any()
            && target.write == target.name;
        let rewrite = if rewrites {
            rewrite::upsert(
                &tx,
                layout,
                std::slice::from_ref(&w.stage),
                w.copied,
                options,
            )
            .await?
        } else {
            Rewrite::Declined(None)
        };
        let sampled = match rewrite {
            Rewrite::Done(_) => None,
            Rewrite::Declined(shares) => shares,
        };
        let merged = if let Rewrite::Done(counts) = rewrite {
            rewritten.push(target.name.clone());
            counts
        } else if layout.any() {
            // Values the server casts, and with `reject_rows` every row, are
            // checked here: a row the server refuses is found, rejected (or
            // the batch fails naming it), and the merge runs again without
            // it.
            loop {
                tx.batch_execute("SAVEPOINT pgbulk_cast")
                    .await
                    .map_err(|e| Error::server("SAVEPOINT", e))?;
                let e = match merge_staged(
                    &tx,
                    layout,
                    (&w.stage, sampled),
                    w.copied,
                    w.duplicates,
                    ctx,
                )
                .await
                {
                    Ok(merged) => {
                        tx.batch_execute("RELEASE SAVEPOINT pgbulk_cast")
                            .await
                            .map_err(|e| Error::server("RELEASE SAVEPOINT", e))?;
                        break merged;
                    }
                    Err(e) if is_value_error(&e) || (w.locate_all && is_row_error(&e)) => e,
                    Err(e) => return Err(e),
                };
                tx.batch_execute("ROLLBACK TO SAVEPOINT pgbulk_cast")
                    .await
                    .map_err(|e| Error::server("ROLLBACK TO SAVEPOINT", e))?;
                let mut rejected = if is_value_error(&e) {
                    rejected_values(&tx, layout, &w.stage).await?
                } else {
                    Vec::new()
                };
                if rejected.is_empty() && w.locate_all {
                    rejected
                        .extend(refused_row(&tx, layout, &w.stage, w.duplicates, ctx, &e).await?);
                }
                if rejected.is_empty() {
                    return Err(e);
                }
                for r in &rejected {
                    // Said of the table, not of the copy filled in its stead.
                    let reason = ctx
                        .fill
                        .iter()
                        .fold(r.reason.clone(), |t, new| new.text_as_target(&t));
                    let rejection = StagedRejection {
                        location: &r.location,
                        raw: r.raw.as_deref(),
                        column: &r.column,
                        value: &r.value,
                        reason: &reason,
                        server: r.server.as_ref(),
                    };
                    match source.as_mut() {
                        Some(source) => source.reject_staged(&rejection)?,
                        None => {
                            let error = Error::new(
                                ErrorKind::Data,
                                format!(
                                    "batch {number}, table {}, {}: column {}: {reason}",
                                    target.name, r.location, r.column
                                ),
                            )
                            .in_table(&target.name)
                            .for_column(&r.column)
                            .with_value(Some(&r.value));
                            // Rows given as values are located as `row N`.
                            return Err(match r.location.strip_prefix("row ").map(str::parse) {
                                Some(Ok(row)) => error.in_row(row),
                                _ => error,
                            });
                        }
                    }
                }
                let ctids: Vec<&str> = rejected.iter().map(|r| r.ctid.as_str()).collect();
                tx.execute(
                    &format!(
                        "DELETE FROM {} WHERE ctid = ANY($1::text[]::tid[])",
                        w.stage
                    ),
                    &[&ctids],
                )
                .await
                .map_err(|e| Error::server("leaving out rejected rows", e))?;
                w.copied = w.copied.saturating_sub(rejected.len() as u64);
            }
        } else {
            merge_staged(
                &tx,
                layout,
                (&w.stage, sampled),
                w.copied,
                w.duplicates,
                ctx,
            )
            .await?
        };
        let mut merged = merged;
        if w.copied_direct > 0 && !target.key.is_empty() {
            // The table held only this batch's rows copied in: a staged row
            // matching one repeats its key.
            merged.repeated += merged.updated + merged.unchanged;
            merged.updated = 0;
            merged.unchanged = 0;
        }
        c.add(&merged);
    }
    let unlogged: Vec<&str> = work
        .iter()
        .filter(|w| w.unlogged)
        .map(|w| w.stage.as_str())
        .collect();
    if !unlogged.is_empty() {
        tx.batch_execute(&format!("DROP TABLE {}", unlogged.join(", ")))
            .await
            .map_err(|e| Error::server("dropping the staging tables", e))?;
    }
    // Rows the server rejected while merging changed where the source
    // stands (its reject file grew): store that.
    if let Some(position) = source.as_ref().and_then(|s| s.resume()) {
        resume = Some(position);
    }
    // 4. Rebuilt tables take their place; watermark, hook, commit.
    for new in &ctx.fill {
        let merged = swap_or_merge(&tx, targets, new, ctx).await?;
        if let Some(merged) = merged {
            let c = counts.entry(new.target.to_string()).or_default();
            let repeated = c.repeated;
            *c = merged;
            c.repeated += repeated;
        }
    }
    for new in &news {
        rebuild::analyze(&tx, new).await?;
    }
    for new in &news {
        rebuild::swap(&tx, &options.lock_policy, new).await?;
    }
    let high_watermark = match batch.high_watermark {
        BatchWatermark::Value(v) => v,
        BatchWatermark::Computed(f) => f()?,
    };
    if ctx.write_watermark {
        watermark::write(
            &tx,
            first,
            &watermark::key(first, options.stream.as_deref()),
            high_watermark.as_ref(),
            &batch.metadata,
            resume.as_ref(),
        )
        .await?;
    }
    if let Some(hook) = &options.before_visible {
        let info = BatchInfo {
            number,
            metadata: batch.metadata.clone(),
            high_watermark: high_watermark.clone(),
            tables: counts.clone(),
        };
        hook.call(&tx, &info).await?;
    }
    tx.commit()
        .await
        .map_err(|e| Error::server(&format!("batch {number}: COMMIT"), e))?;
    if let Some(merging) = &options.merging {
        merging.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    let committed = Committed {
        high_watermark,
        metadata: batch.metadata,
        resume,
    };
    Ok((counts, skipped, committed, rewritten))
}

/// The new copy `new` of a table that was empty when the batch began (see
/// [`super::Options::fill_empty`]), filled with the batch's rows: swapped
/// in when the table is still empty, under `SHARE` (writers wait, readers
/// do not) and the swap's lock, each had within a few seconds and
/// terminating no one whatever the policy (an append never needed more
/// than a lock that writers share). Else (rows came in meanwhile, a lock
/// was not had) its rows are merged into the table as a stage's would be
/// and it is dropped: returns what that merge counted.
async fn swap_or_merge(
    tx: &Transaction<'_>,
    targets: &[Target],
    new: &rebuild::NewTable,
    ctx: &BatchContext<'_>,
) -> Result<Option<Counts>> {
    let live_oid: u32 = tx
        .query_one("SELECT $1::text::regclass::oid", &[&new.target.quoted()])
        .await
        .map_err(|e| Error::server("looking up a table", e))?
        .get(0);
    let policy = crate::lock::LockPolicy {
        lock_timeout: ctx.options.lock_policy.lock_timeout,
        total_wait: ctx
            .options
            .lock_policy
            .total_wait
            .min(rebuild::EMPTY_SWAP_WAIT),
        terminate_blockers_after: None,
    };
    // Its statistics before the lock that keeps writers out, when the
    // empty table had some (rows it held once, analyzed): one that never
    // had any leaves them to autovacuum, as a COPY into it would, which
    // counts the new table's rows as inserted (its index build already
    // set its size). 1 M wide rows: 0.12 s of 1.1 s.
    if rebuild::has_statistics(tx, &new.target).await? {
        rebuild::analyze(tx, new).await?;
    }
    let savepoint = Savepoint::set(tx, "pgbulk_fill").await?;
    let swapped = async {
        rebuild::lock_for_copy(tx, &policy, &new.target, live_oid).await?;
        if !rebuild::is_empty(tx, &new.target).await? {
            return Ok(false);
        }
        rebuild::swap(tx, &policy, new).await?;
        Ok::<_, Error>(true)
    }
    .await;
    match swapped {
        Ok(true) => {
            savepoint.release().await?;
            return Ok(None);
        }
        Err(e) if e.is_canceled_or_lost() => {
            return Err(e);
        }
        Ok(false) | Err(_) => savepoint.roll_back().await?,
    }
    tracing::debug!(
        "{}: not swapped in (it holds rows now, or a lock was not had): the batch is merged into it",
        new.target
    );
    let Some(filled) = targets.iter().find(|t| t.write == new.name) else {
        return Ok(None);
    };
    // The lock the merge takes anyway, first: taking it brings the name's
    // table up to date (another load may have swapped a copy in since the
    // lookup above), so its oid is the one whose rows are counted.
    let q = new.target.quoted();
    tx.batch_execute(&format!("LOCK TABLE {q} IN ROW EXCLUSIVE MODE"))
        .await
        .map_err(|e| Error::server(&format!("locking {}", new.target), e))?;
    let live_oid: u32 = tx
        .query_one("SELECT $1::text::regclass::oid", &[&q])
        .await
        .map_err(|e| Error::server("looking up a table", e))?
        .get(0);
    let live = Target {
        write: new.target.clone(),
        oid: live_oid,
        ..filled.clone()
    };
    let stage = new.name.quoted();
    let rows: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {stage}"), &[])
        .await
        .map_err(|e| Error::server("counting the batch's rows", e))?
        .get(0);
    let layout = Layout {
        target: &live,
        shadows: &[],
        locate_all: false,
        sorted: false,
    };
    let merged = merge_staged(
        tx,
        layout,
        (&stage, None),
        u64::try_from(rows).unwrap_or(0),
        false,
        ctx,
    )
    .await?;
    tx.batch_execute(&format!("DROP TABLE {stage}"))
        .await
        .map_err(|e| Error::server("dropping the unused copy", e))?;
    Ok(Some(merged))
}

/// A table's staged rows, once the batch's rows are read.
struct Staged<'a> {
    target: &'a Target,
    /// The staging table (or the target, when copied straight in).
    stage: String,
    /// The stage is an UNLOGGED table, to be dropped before the commit.
    unlogged: bool,
    direct: bool,
    copied: u64,
    /// Rows copied straight into the target before staging began.
    copied_direct: u64,
    /// Rows copied straight in and removed, a later one repeating their
    /// key.
    repeated_direct: u64,
    duplicates: bool,
    shadows: Vec<bool>,
    locate_all: bool,
}

/// The first staged row that the merge refuses by itself (a constraint,
/// a value), found by merging halves of the stage in savepoints that are
/// rolled back: `None` when no single row fails alone (rows that fail only
/// together, such as two new rows with the same unique value).
async fn refused_row(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
    duplicates: bool,
    ctx: &BatchContext<'_>,
    error: &Error,
) -> Result<Option<Rejected>> {
    let ctids: Vec<String> = tx
        .query(
            &format!("SELECT ctid::text FROM {stage} ORDER BY ctid"),
            &[],
        )
        .await
        .map_err(|e| Error::server("reading the staged rows", e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let (mut lo, mut hi) = (0, ctids.len());
    let mut reason = Refusal::of(error);
    // Invariant: merging rows lo..hi fails.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let mut narrowed = false;
        for (a, b) in [(lo, mid), (mid, hi)] {
            if let Some(why) = merge_fails(tx, layout, stage, &ctids[a..b], duplicates, ctx).await?
            {
                (lo, hi, reason, narrowed) = (a, b, why, true);
                break;
            }
        }
        if narrowed {
            continue;
        }
        // Each half merges alone: rows of one conflict with rows of the
        // other (a unique value twice). The shortest failing run lo..k
        // ends with the row that conflicts with one before it: that row
        // is refused, as an insert row by row would refuse it.
        let (mut merges, mut fails) = (mid, hi);
        while fails - merges > 1 {
            let k = merges + (fails - merges) / 2;
            match merge_fails(tx, layout, stage, &ctids[lo..k], duplicates, ctx).await? {
                Some(why) => (fails, reason) = (k, why),
                None => merges = k,
            }
        }
        (lo, hi) = (fails - 1, fails);
    }
    let Some(ctid) = ctids.get(lo) else {
        return Ok(None);
    };
    let row = tx
        .query_one(
            &format!(
                "SELECT {w}, {r} FROM {stage} WHERE ctid = $1::text::tid",
                w = quote_ident(WHERE_COLUMN),
                r = quote_ident(RAW_COLUMN)
            ),
            &[ctid],
        )
        .await
        .map_err(|e| Error::server("reading a refused row", e))?;
    let column = reason
        .server
        .as_ref()
        .and_then(|db| db.column().map(str::to_owned))
        .unwrap_or_default();
    let read = |e| Error::server("reading a refused row", e);
    Ok(Some(Rejected {
        ctid: ctid.clone(),
        location: row
            .try_get::<_, Option<String>>(0)
            .map_err(read)?
            .unwrap_or_default(),
        raw: row.try_get(1).map_err(read)?,
        column,
        value: String::new(),
        reason: reason.words,
        server: reason.server,
    }))
}

/// Why the server refused a row.
struct Refusal {
    /// The server's message and detail (`Key (shop)=(Z) is not present in
    /// table "shop".`), or the error's own message.
    words: String,
    /// The server's error.
    server: Option<tokio_postgres::error::DbError>,
}

impl Refusal {
    fn of(error: &Error) -> Self {
        let db = error.db_error();
        let words = match db {
            Some(db) => match db.detail() {
                Some(detail) => format!("{}: {detail}", db.message()),
                None => db.message().to_owned(),
            },
            None => error.message().to_owned(),
        };
        Self {
            words,
            server: db.cloned(),
        }
    }
}

/// Whether merging only the staged rows `ctids` fails, and why; rolled
/// back either way.
async fn merge_fails(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
    ctids: &[String],
    duplicates: bool,
    ctx: &BatchContext<'_>,
) -> Result<Option<Refusal>> {
    let probe = Savepoint::set(tx, "pgbulk_probe").await?;
    // A copy of those rows, in their order, stands in for the stage.
    tx.execute(
        &format!(
            "CREATE TEMP TABLE pgbulk_subset AS SELECT * FROM {stage} \
             WHERE ctid = ANY($1::text[]::tid[]) ORDER BY ctid"
        ),
        &[&ctids],
    )
    .await
    .map_err(|e| Error::server("copying staged rows", e))?;
    let outcome = merge_staged(
        tx,
        layout,
        ("pgbulk_subset", None),
        ctids.len() as u64,
        duplicates,
        ctx,
    )
    .await;
    probe.roll_back().await?;
    Ok(match outcome {
        Ok(_) => None,
        Err(e) if is_value_error(&e) || is_row_error(&e) => Some(Refusal::of(&e)),
        Err(e) => return Err(e),
    })
}

/// The bytes of the stage's and the table's pages, as on disk now
/// (statistics of a table just loaded may not exist yet); a partitioned
/// table's are its partitions'.
async fn sizes(tx: &Transaction<'_>, table: &TableName, stage: &str) -> Result<(i64, i64)> {
    let row = tx
        .query_one(
            &format!(
                "SELECT pg_catalog.pg_relation_size($1::text::regclass), \
                        coalesce((SELECT sum(pg_catalog.pg_relation_size(l.relid))::int8 FROM ({}) l), \
                                 pg_catalog.pg_relation_size($2::text::regclass))",
                crate::catalog::leaf_partitions("$2::text::regclass")
            ),
            &[&stage, &table.quoted()],
        )
        .await
        .map_err(|e| Error::server("reading the sizes of the stage and the table", e))?;
    Ok((row.get(0), row.get(1)))
}

/// The percentage of a stage of `rows` rows to sample (`TABLESAMPLE
/// SYSTEM`, pages) for about `sample` rows.
fn sample_percent(sample: u64, rows: u64) -> f32 {
    (sample as f64 * 100.0 / rows.max(1) as f64).min(100.0) as f32
}

/// Staged rows from which on [`merge_in_key_order`] samples the stage.
const ORDER_MIN_ROWS: u64 = 10_000;
/// Rows that [`merge_in_key_order`] samples of the stage and of the
/// table, about.
const ORDER_SAMPLE_ROWS: u64 = 10_000;

/// Whether to merge the staged rows (about `rows` of them, `stage_bytes`
/// bytes, into a table of `table_bytes`) in key order rather than as they
/// were staged: when the stage is out of key order and the table is
/// stored in key order ([`out_of_key_order`] of each).
///
/// A merge writes the rows in the stage's order. Staged out of the order
/// the table is stored in, the changed pages, and so the pages written
/// again in full after each checkpoint, are all over the table. Measured
/// upserting 5 M changed rows into a 5 M-row table stored in key order
/// (PostgreSQL 15, the default 1 M rows per batch): staged in key order
/// 30.2 s and 1.7 GB of WAL; shuffled 52.4 s and 4.65 GB, and 31.8 s and
/// 2.2 GB with each batch merged in key order. 50,000 changed rows spread
/// over that table: 0.49-0.59 s as staged, 0.39-0.52 s in key order (the
/// sample takes about 7 ms). A table not stored in key order is merged as
/// staged: rows staged in its storage order then update its pages in
/// order, and key order would visit them at random. 3 M rows keyed by
/// random values, staged in storage order, updated in place (HOT, the
/// table's `fillfactor` 50): 7.2-7.6 s as staged, 11.6-12.4 s in key
/// order (though with `fillfactor` 100, where each update also inserts
/// into the key's index, key order took 21-25 s against 26-32 s).
async fn merge_in_key_order(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
    rows: u64,
    (stage_bytes, table_bytes): (i64, i64),
) -> Result<bool> {
    let target = layout.target;
    if rows < ORDER_MIN_ROWS || !target.key_is_primary || target.partitioned {
        return Ok(false);
    }
    let staged = sample_percent(ORDER_SAMPLE_ROWS, rows);
    if !out_of_key_order(tx, layout, &layout.key_values(""), stage, staged).await? {
        return Ok(false);
    }
    // The table's rows, estimated from the stage's bytes per row.
    let table_rows = (table_bytes as f64 * rows as f64 / stage_bytes.max(1) as f64) as u64;
    if table_rows < ORDER_MIN_ROWS {
        return Ok(false);
    }
    let stored = sample_percent(ORDER_SAMPLE_ROWS, table_rows);
    let relation = target.write.quoted();
    Ok(!out_of_key_order(tx, layout, &key_list(target), &relation, stored).await?)
}

/// Whether the rows of `relation` are out of the order of `key` (its key
/// columns' values): in `percent` of its pages read in storage order, more
/// than 5% of the rows have a lower key than the row before. A key type
/// without a default ordering cannot be compared: the answer is then
/// `false`.
async fn out_of_key_order(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    key: &str,
    relation: &str,
    percent: f32,
) -> Result<bool> {
    let look = Savepoint::set(tx, "pgbulk_order").await?;
    let sampled = tx
        .query_one(&order_statement(key, relation), &[&percent])
        .await
        .map_err(|e| Error::server("sampling the rows' key order", e));
    Ok(match look.end(sampled).await? {
        Ok(row) => {
            let (descents, pairs): (i64, i64) = (row.get(0), row.get(1));
            descents.saturating_mul(20) > pairs
        }
        Err(e) => {
            tracing::debug!("{}: {e}", layout.target.name);
            false
        }
    })
}

/// Staged rows from which on [`sieve_pays`] samples the stage.
pub(super) const SIEVE_MIN_ROWS: u64 = 100_000;
/// Staged rows that [`sieve_pays`] samples, about.
const SIEVE_SAMPLE_ROWS: u64 = 10_000;
/// The largest share of staged rows a merge writes for which sieving pays.
/// On a 5 M-row table of four columns and a 5 M-row stage: the `MERGE`
/// takes 10.6 s with every row unchanged and 14.6 s with 1% changed; the
/// sieve 5.4 s and 5.9 s, and then merging the 1% 1.8 s. With every row
/// changed the sieve costs its join and a copy of every row on top of
/// the merge, so past about a third it costs more than it saves.
const SIEVE_MAX_WRITTEN: f64 = 0.25;

/// The sampled shares of a large stage (from [`SIEVE_MIN_ROWS`] rows)
/// keyed by the table's primary key, which decide whether to sieve it
/// before merging it (at most [`SIEVE_MAX_WRITTEN`] of its rows to write)
/// or to insert it ([`insert_new`]: every sampled key new).
async fn sampled_shares(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
    copied: u64,
) -> std::result::Result<Option<Shares>, tokio_postgres::Error> {
    if !layout.target.key_is_primary || copied < SIEVE_MIN_ROWS {
        return Ok(None);
    }
    Ok(Some(written_share(tx, layout, &[stage], copied).await?))
}

/// Inserts the staged rows of `stage` (no key repeated among them) with a
/// plain `INSERT`, no join with the table, in a savepoint: a key the table
/// holds already fails it with a unique violation, and `None` (rolled
/// back) says the rows are to be merged. 1 M new keys into a 5 M-row
/// table: 3.1 s, against 3.8-4.4 s for the `MERGE` (`psql \copy` of the
/// file: 3.3 s).
async fn insert_new(tx: &Transaction<'_>, layout: Layout<'_>, stage: &str) -> Result<Option<u64>> {
    let savepoint = Savepoint::set(tx, "pgbulk_new_keys").await?;
    let inserted = tx.execute(&insert_statement(layout, stage), &[]).await;
    match inserted {
        Ok(n) => {
            savepoint.release().await?;
            Ok(Some(n))
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            savepoint.roll_back().await?;
            tracing::debug!(
                "table {}: a staged key is in the table already ({e}): merging",
                layout.target.name
            );
            Ok(None)
        }
        Err(e) => Err(Error::server("INSERT", e)),
    }
}

/// Shares of a stage's rows, sampled: see [`written_share`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Shares {
    /// Rows a merge writes: a new key, or a changed value.
    pub(super) written: f64,
    /// Rows whose key is new.
    pub(super) new: f64,
}

/// The shares of the `rows` staged rows of the stages `sources` (tables of
/// the same columns) that a merge writes and that are new, in a sample of
/// about [`SIEVE_SAMPLE_ROWS`] of them.
pub(super) async fn written_share(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    sources: &[impl AsRef<str> + Sync],
    rows: u64,
) -> std::result::Result<Shares, tokio_postgres::Error> {
    let percent = sample_percent(SIEVE_SAMPLE_ROWS, rows);
    let row = tx
        .query_one(&sample_statement(layout, sources), &[&percent])
        .await?;
    let (written, sampled, new): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let share = |n: i64| {
        if sampled == 0 {
            0.0
        } else {
            n as f64 / sampled as f64
        }
    };
    Ok(Shares {
        written: share(written),
        new: share(new),
    })
}

/// Copies the staged rows a merge writes into [`CHANGES`]; how many.
///
/// A stage that is not a TEMP table may be joined by parallel workers too
/// (a 5 M-row stage of unchanged rows in a 5 M-row table: 4.4 s on one
/// core, 2.6 s with a worker joining). The planner, which cannot estimate
/// the sieve's filter and expects every row out of the join, weighs
/// handing rows over from the workers by `share`, the sampled share of
/// rows kept; and `work_mem` is divided among the workers the server may
/// start, so that the join's hash takes no more memory in all than on one
/// core.
async fn sieve(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
    duplicates: Option<OnDuplicate>,
    bounds: &[range::Bounds],
    share: f64,
) -> std::result::Result<u64, tokio_postgres::Error> {
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {CHANGES}"))
        .await?;
    let before = tx
        .query_one(
            "SELECT pg_catalog.current_setting('parallel_tuple_cost'), \
                    pg_catalog.current_setting('work_mem'), \
                    pg_catalog.set_config('parallel_tuple_cost', \
                        (pg_catalog.current_setting('parallel_tuple_cost')::float8 * $1)::text, true), \
                    pg_catalog.set_config('work_mem', \
                        CASE WHEN c.relpersistence = 't' THEN pg_catalog.current_setting('work_mem') \
                        ELSE greatest(64, pg_catalog.pg_size_bytes(pg_catalog.current_setting('work_mem')) / 1024 \
                             / (1 + pg_catalog.current_setting('max_parallel_workers_per_gather')::int))::text || 'kB' \
                        END, true) \
             FROM pg_catalog.pg_class c WHERE c.oid = $2::text::regclass",
            &[&share, &stage],
        )
        .await?;
    let (cost, work_mem): (String, String) = (before.get(0), before.get(1));
    let kept = tx
        .execute(
            &sieve_statement(layout, stage, duplicates, bounds),
            &range::parameters(bounds),
        )
        .await?;
    tx.batch_execute(&format!(
        "SET LOCAL parallel_tuple_cost = {}; SET LOCAL work_mem = {}",
        quote_literal(&cost),
        quote_literal(&work_mem)
    ))
    .await?;
    Ok(kept)
}

/// Merges (or appends) one table's staged rows; counts what it did. A
/// large stage whose sample shows few rows to write is sieved first
/// ([`sieve_statement`]): the merge then reads only the rows it writes,
/// and none runs when every row is unchanged.
pub(super) async fn merge_staged(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    (stage, sampled): (&str, Option<Shares>),
    copied: u64,
    duplicates: bool,
    ctx: &BatchContext<'_>,
) -> Result<Counts> {
    let (number, options) = (ctx.number, ctx.options);
    let target = layout.target;
    let context = |what: &str| format!("batch {number}, table {}: {what}", target.name);
    let mut c = Counts::default();
    if target.key.is_empty() {
        c.inserted = tx
            .execute(
                &format!(
                    "INSERT INTO {} ({}){} SELECT {} FROM {stage}",
                    target.write.quoted(),
                    column_list(target),
                    target.overriding(),
                    layout.values("")
                ),
                &[],
            )
            .await
            .map_err(|e| {
                Error::in_context(Error::server("INSERT", e), &context("appending"))
                    .in_table(&target.name)
            })?;
        return Ok(c);
    }
    let upsert = |e| {
        Error::in_context(Error::server("upsert", e), &context("upserting")).in_table(&target.name)
    };
    // Repeated keys (the client's key hashes said so): counted, and one
    // row per key kept or the batch refused.
    let mut repeated = 0;
    if duplicates {
        let (n, example) = repeats(tx, layout, stage).await?;
        if n > 0 && options.on_duplicate == OnDuplicate::Error {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "batch {number}, table {}: {n} rows repeat the key of another row in the same batch, e.g. ({}) = {}; --on-duplicate last or first keeps one row per key",
                    target.name,
                    key_list(target),
                    example.unwrap_or_default()
                ),
            ));
        }
        repeated = n;
    }
    let duplicates = (repeated > 0).then_some(options.on_duplicate);
    if let Some(work_mem) = options.merge_work_mem.as_ref().filter(|_| ctx.merge) {
        tx.batch_execute(&format!("SET LOCAL work_mem = {}", quote_literal(work_mem)))
            .await
            .map_err(|e| Error::server("SET work_mem", e))?;
    }
    // A stage of at most 5% of the table is merged by probing the
    // primary key's index. Measured on a cached 1,000,000-row table:
    // 10,000 unchanged rows 33 ms against 219-403 ms for the hash join
    // the planner prefers (it reads and hashes the whole table);
    // 50,000 rows joined in 147 ms against 385 ms.
    let (stage_bytes, table_bytes) = sizes(tx, &target.write, stage).await?;
    let mut probe = target.key_is_primary && stage_bytes.saturating_mul(20) <= table_bytes;
    let shares = match sampled.filter(|_| target.key_is_primary && copied >= SIEVE_MIN_ROWS) {
        Some(shares) => Some(shares),
        None => sampled_shares(tx, layout, stage, copied)
            .await
            .map_err(upsert)?,
    };
    // Every sampled key new: the rows are inserted (see [`insert_new`]),
    // also where the merge would probe the key's index for each (200,000
    // new keys into a 6 M-row table: 0.8 s against 1.3 s).
    let all_new = duplicates.is_none() && shares.is_some_and(|s| s.new >= 1.0);
    // The index probe reads only the rows it matches already. Bounds of a
    // stage of half the table or more keep at most half the table out of
    // the join, for a scan of the stage comparing every key value (a 5 M-row
    // stage's bounds took 0.7-1.4 s to read, in a 5 M-row table that its
    // free space made larger than the stage: bounds spanning all of it).
    let bounds = if all_new || !ctx.merge || probe || stage_bytes.saturating_mul(2) >= table_bytes {
        Vec::new()
    } else {
        let bounds = range::key_bounds(tx, layout, stage).await?;
        if !bounds.is_empty() {
            tracing::debug!(
                "{}: the table is read within the staged keys' bounds",
                context("upserting")
            );
        }
        bounds
    };
    let mut source = stage;
    let mut duplicates = duplicates;
    let (mut rows, mut source_bytes) = (copied, stage_bytes);
    // Not where the merge probes the key's index: it reads only the rows
    // it matches already.
    let sieved = shares
        .filter(|_| !probe)
        .map(|s| s.written)
        .filter(|&share| {
            let pays = share <= SIEVE_MAX_WRITTEN;
            if !pays {
                tracing::debug!(
                    "{}: {:.0}% of the sampled staged rows to write: merging without a sieve",
                    context("upserting"),
                    share * 100.0
                );
            }
            pays
        });
    if let Some(share) = sieved {
        let kept = sieve(tx, layout, stage, duplicates, &bounds, share)
            .await
            .map_err(upsert)?;
        tracing::debug!(
            "{}: sieved {copied} staged rows: {kept} to write",
            context("upserting")
        );
        if kept == 0 {
            tx.batch_execute(&format!("DROP TABLE {CHANGES}"))
                .await
                .map_err(|e| Error::server("DROP TABLE", e))?;
            c.repeated = repeated;
            c.unchanged = copied.saturating_sub(repeated);
            return Ok(c);
        }
        (source, duplicates) = (CHANGES, None);
        (rows, source_bytes) = (kept, sizes(tx, &target.write, CHANGES).await?.0);
        probe = target.key_is_primary && source_bytes.saturating_mul(20) <= table_bytes;
    }
    // Rows are merged in the order they come from the stage (the planner
    // hashes the table, narrower than the stage, or probes its index): out
    // of key order, into a table stored in key order, they are put in key
    // order first.
    let layout = if duplicates.is_none()
        && !layout.sorted
        && merge_in_key_order(tx, layout, source, rows, (source_bytes, table_bytes)).await?
    {
        tracing::debug!(
            "{}: the staged rows are out of the table's key order: merged in key order",
            context("upserting")
        );
        Layout {
            sorted: true,
            ..layout
        }
    } else {
        layout
    };
    // Inserted, unless a key is there after all.
    if all_new && source == stage {
        if let Some(inserted) = insert_new(tx, layout, source)
            .await
            .map_err(|e| Error::in_context(e, &context("inserting")).in_table(&target.name))?
        {
            c.inserted = inserted;
            c.unchanged = copied.saturating_sub(inserted);
            return Ok(c);
        }
    }
    let (inserted, updated) = if ctx.merge {
        // Probing the key for a few rows: no hash or merge join reading the
        // whole table, and no JIT compiling (loading the JIT library and
        // compiling cost a fresh session 0-100 ms against a 0.3 s merge of
        // 50,000 rows; it cannot pay off on so few).
        if probe {
            tx.batch_execute(
                "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off",
            )
                .await
                .map_err(|e| Error::server("SET enable_hashjoin", e))?;
        }
        let before = xact_stats(tx, target).await?;
        tx.execute(
            &merge_statement(layout, source, duplicates, &bounds),
            &range::parameters(&bounds),
        )
        .await
        .map_err(upsert)?;
        let after = xact_stats(tx, target).await?;
        if probe {
            tx.batch_execute("RESET enable_hashjoin; RESET enable_mergejoin; RESET jit")
                .await
                .map_err(|e| Error::server("RESET enable_hashjoin", e))?;
        }
        (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        )
    } else {
        let statement = if target.key_is_primary {
            on_conflict_statement(layout, source, duplicates)
        } else {
            update_then_insert_statement(layout, source, duplicates)
        };
        let row = tx.query_one(&statement, &[]).await.map_err(upsert)?;
        (
            u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
        )
    };
    if source == CHANGES {
        tx.batch_execute(&format!("DROP TABLE {CHANGES}"))
            .await
            .map_err(|e| Error::server("DROP TABLE", e))?;
    }
    c.inserted = inserted;
    c.updated = updated;
    c.repeated = repeated;
    c.unchanged = copied.saturating_sub(inserted + updated + repeated);
    Ok(c)
}
