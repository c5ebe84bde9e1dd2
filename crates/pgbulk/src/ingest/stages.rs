//! Rows staged by other processes (the tasks of a distributed write, each
//! into a table of its own), merged into their table in one transaction.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio_postgres::{Client, Transaction};
use tracing::debug;

use super::batch::merge_staged;
use super::indexes;
use super::merge::key_list;
use super::rewrite::{self, Rewrite};
use super::stage::Layout;
use super::target::{keyed, read_targets};
use super::{
    BatchContext, BatchReport, Counts, Mode, OnDuplicate, Options, Prepared, Report, Upsert,
};
use crate::conninfo::ConnParams;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::LockPolicy;
use crate::rebuild::{self, NewTable};
use crate::schema::{TableName, quote_ident, quote_literal};

/// Merges the staging tables `stages` into `table` in one transaction and
/// drops them in it: other sessions see all of their rows or none.
///
/// Each stage has `table`'s columns under the same names (as `CREATE TABLE
/// ... (LIKE table)` makes it); only `columns` are written, the others keep
/// their values (or get their defaults). Rows are taken in `stages` order,
/// each stage in its physical order: where a key repeats, the last such row
/// wins (or the first, or the merge fails naming the key, as
/// `options.on_duplicate` says). Tables with a key are upserted with the
/// engine's guarded `MERGE` / `ON CONFLICT` (unchanged rows are not
/// rewritten); tables without one are appended to. [`Mode::DeleteThenUpsert`]
/// deletes every row first; [`Mode::ReplaceAtomic`] fills a new table built
/// from the declaration and swaps it in (grants, views and comments kept).
/// Into an empty table (see [`rebuild::empty_for_swap`]) the other modes
/// do the same with a copy of the table as it is: its indexes are built
/// once the rows are in, one sort each instead of an insertion per row;
/// the table is written in place when the swap cannot have its lock
/// within a few seconds or anything else on that way fails (a repeated
/// key then fails the merge naming the table's own constraint).
/// Stages whose rows change most of a table holding rows rewrite it
/// instead, with [`Options::rewrite`]: a new copy with the staged rows laid
/// over the table's, indexed and swapped in.
/// No watermark is written and no hook runs. With `reader` (where the
/// stages can be read on a second connection), rows appended to a new
/// table are read there and copied in, frozen, by binary COPY, instead of
/// an `INSERT ... SELECT` (two server processes instead of one).
pub async fn merge_stages(
    client: &mut Client,
    prepared: &Prepared,
    table: &TableName,
    columns: &[String],
    stages: &[TableName],
    options: &Options,
    reader: Option<&ConnParams>,
) -> Result<Report> {
    let started = Instant::now();
    let job = Job {
        prepared,
        table,
        columns,
        stages,
        options,
        reader,
    };
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::server("BEGIN", e))?;
    // Before anything is read of the table: a write that committed while
    // this one waited may have swapped a new table in under its name.
    crate::lock::serialise_ingests(&tx, &options.lock_policy, &[table]).await?;
    let mut counts = None;
    if options.mode != Mode::ReplaceAtomic && !stages.is_empty() {
        if let Some((live, savepoint)) = rebuild::empty_for_swap(&tx, table).await? {
            // The rows go into a new copy of the empty table, indexed once
            // they are in, which is swapped in; if anything fails on the
            // way (a lock the swap cannot get, a repeated key), the rows go
            // into the table itself instead, as if it held rows.
            // The swap tries for its lock for a few seconds, and terminates
            // no one, whatever the policy: an append never needed more
            // than a lock that readers and writers share.
            let swap = LockPolicy {
                lock_timeout: options.lock_policy.lock_timeout,
                total_wait: options.lock_policy.total_wait.min(rebuild::EMPTY_SWAP_WAIT),
                terminate_blockers_after: None,
            };
            let rebuilt = async {
                let new = rebuild::create_new(&tx, table, &live, false).await?;
                merge_into(&tx, &job, Some((&new, &swap))).await
            }
            .await;
            match savepoint.end(rebuilt).await? {
                Ok(merged) => counts = Some(merged),
                Err(e) => debug!(
                    "{table}: filling a new copy of the empty table failed ({e}); writing into the table"
                ),
            }
        }
    }
    let (counts, rewritten) = match counts {
        Some(c) => c,
        None => {
            let new = if options.mode == Mode::ReplaceAtomic {
                let declared = prepared
                    .facts(table)
                    .ok_or_else(|| Error::config(format!("table {table} is not declared")))?;
                Some(rebuild::create_new(&tx, table, declared, true).await?)
            } else {
                None
            };
            let new = new.as_ref().map(|n| (n, &options.lock_policy));
            merge_into(&tx, &job, new).await?
        }
    };
    tx.commit()
        .await
        .map_err(|e| Error::server(&format!("{table}: COMMIT"), e))?;
    let tables = BTreeMap::from([(table.to_string(), counts)]);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        batches: vec![BatchReport {
            number: 1,
            tables: tables.clone(),
            skipped: 0,
            seconds,
        }],
        tables,
        migrations: if options.mode == Mode::ReplaceAtomic {
            vec![format!("{table}: replaced atomically")]
        } else if rewritten {
            vec![rewrite::migration(&table)]
        } else {
            Vec::new()
        },
        seconds,
        ..Report::default()
    })
}

/// What [`merge_stages`] was asked to do.
struct Job<'a> {
    prepared: &'a Prepared,
    table: &'a TableName,
    columns: &'a [String],
    stages: &'a [TableName],
    options: &'a Options,
    reader: Option<&'a ConnParams>,
}

/// Merges the job's stages into its table, or into `new` (then swapped in
/// for it under the lock policy given with it), and drops the stages: the
/// body of [`merge_stages`], inside its transaction. Returns the counts,
/// and whether the table was rewritten ([`rewrite::upsert`]).
async fn merge_into(
    tx: &Transaction<'_>,
    job: &Job<'_>,
    new: Option<(&NewTable, &LockPolicy)>,
) -> Result<(Counts, bool)> {
    let (prepared, table, options) = (job.prepared, job.table, job.options);
    let input = prepared.session.input_style();
    let write = new.map_or_else(|| table.clone(), |(n, _)| n.name.clone());
    let live = read_targets(tx.client(), &[(table.clone(), write)], input).await?;
    // The primary key's columns: rows appended in its order fill its index
    // from left to right instead of splitting pages all over it (2 M rows
    // into a table with a three-column key: 5.5 s instead of 8.0 s).
    let primary: Vec<String> = live
        .first()
        .map(|t| {
            t.key
                .iter()
                .map(|&k| quote_ident(&t.columns[k].name))
                .collect()
        })
        .unwrap_or_default();
    let target = keyed(live, options)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::config(format!("table {table} is not declared")))?
        .project(
            job.columns,
            matches!(options.mode, Mode::DeleteThenUpsert | Mode::ReplaceAtomic),
        )?;
    let merge = prepared.session.server_version >= 150_000 && options.upsert == Upsert::Auto;
    // The new table of a replace-atomic gets its indexes once the rows are
    // in (`MERGE` needs none; `ON CONFLICT`, before 15, does).
    let deferred = match &new {
        Some(_) if merge || target.key.is_empty() => {
            indexes::defer(tx, std::slice::from_ref(&target), &[target.oid]).await?
        }
        _ => indexes::Deferred::default(),
    };
    let mut counts = Counts::default();
    let mut was_rewritten = false;
    if options.mode == Mode::DeleteThenUpsert {
        counts.deleted = target.delete_all(tx).await?;
    }
    let layout = Layout {
        target: &target,
        shadows: &[],
        locate_all: false,
        // Partitions arrive in no particular order.
        sorted: true,
    };
    let ctx = BatchContext {
        number: 1,
        opening: true,
        first: table,
        options,
        fresh: Vec::new(),
        rebuild: Vec::new(),
        fill: Vec::new(),
        write_watermark: false,
        ingest_lock: true,
        input,
        merge,
        // Stages are rewritten below, not batch by batch.
        rewrite: false,
    };
    let names: Vec<String> = target
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let names = names.join(", ");
    let staged: Vec<String> = job.stages.iter().map(TableName::quoted).collect();
    let union = staged
        .iter()
        .map(|s| format!("SELECT {names} FROM {s}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let writing = |e| Error::in_context(e, &format!("writing into {table}")).in_table(table);
    // A new table (created in this transaction, so written frozen) takes
    // every staged row by binary COPY from a second connection reading the
    // stages (2 M rows of four columns by hand: 1.2-1.3 s, against 1.7-2.0
    // s for an `INSERT ... SELECT`): rows appended under a primary key, or
    // upserted on it into an empty table's copy (a key repeated across
    // stages makes the key's build fail, and the commit then goes the
    // slower way, which keeps one row per key; replace-atomic has no such
    // way back, so its upserts merge).
    let inserts_all = target.key.is_empty() && !primary.is_empty()
        || !target.key.is_empty()
            && target.key_is_primary
            && !deferred.is_empty()
            && options.mode != Mode::ReplaceAtomic;
    let relayed = match (new, job.reader) {
        (Some(_), Some(params)) if inserts_all && !staged.is_empty() => {
            // Each value as the column's exact type: binary COPY reads a
            // field by the column's type, not the data's.
            let typed: Vec<String> = target
                .columns
                .iter()
                .map(|c| format!("{}::{}", quote_ident(&c.name), c.ty.cast_name))
                .collect();
            let select = format!("SELECT {} FROM ({union}) s", typed.join(", "));
            copy_through(tx, params, &target.write, &names, &select)
                .await
                .map_err(writing)?
        }
        _ => None,
    };
    if let Some(rows) = relayed {
        counts.inserted += rows;
    } else if target.key.is_empty() && !primary.is_empty() && !staged.is_empty() {
        // Appended to a table with a primary key: every stage at once, in
        // the key's order while the key is indexed.
        if let Some(work_mem) = &options.merge_work_mem {
            tx.batch_execute(&format!("SET LOCAL work_mem = {}", quote_literal(work_mem)))
                .await
                .map_err(|e| Error::server("SET work_mem", e))?;
        }
        let order = if deferred.is_empty() {
            format!(" ORDER BY {}", primary.join(", "))
        } else {
            String::new()
        };
        counts.inserted += tx
            .execute(
                &format!(
                    "INSERT INTO {} ({names}){} SELECT {} FROM ({union}) s{order}",
                    target.write.quoted(),
                    target.overriding(),
                    layout.values(""),
                ),
                &[],
            )
            .await
            .map_err(|e| writing(Error::server("INSERT", e)))?;
    } else if target.key.is_empty() {
        for stage in &staged {
            let c = merge_staged(tx, layout, (stage, None), 0, false, &ctx).await?;
            counts.add(&c);
        }
    } else if !staged.is_empty() {
        let all = staged_rows(tx, &staged).await?;
        // Staged rows that change most of the table rewrite it, when it
        // qualifies (a key staged twice fails the rewrite, and the rows
        // are then gathered first).
        let rewrites = options.rewrite && new.is_none() && options.mode == Mode::Upsert && merge;
        let rewritten = if rewrites {
            rewrite::upsert(tx, layout, &staged, all, options).await?
        } else {
            Rewrite::Declined(None)
        };
        let c = match rewritten {
            Rewrite::Done(c) => {
                was_rewritten = true;
                c
            }
            Rewrite::Declined(sampled) => {
                // One stage is merged as it is; several are gathered first
                // into one row per key, so that one merge sees every row
                // (and a key repeated across stages keeps the row that
                // came last).
                let (stage, copied, repeated) = if let [only] = staged.as_slice() {
                    (only.clone(), all, None)
                } else {
                    let (kept, repeated) =
                        gather(tx, layout, &staged, &names, all, options).await?;
                    (GATHERED.to_owned(), kept, Some(repeated))
                };
                // The sample of one stage stands for it; gathered, the
                // rows are sampled again.
                let again = match repeated {
                    Some(n) if n > 0 && rewrites => {
                        rewrite::upsert(tx, layout, std::slice::from_ref(&stage), copied, options)
                            .await?
                    }
                    _ if repeated.is_none() => Rewrite::Declined(sampled),
                    _ => Rewrite::Declined(None),
                };
                let mut c = match again {
                    Rewrite::Done(c) => {
                        was_rewritten = true;
                        c
                    }
                    Rewrite::Declined(sampled) => {
                        merge_staged(
                            tx,
                            layout,
                            (&stage, sampled),
                            copied,
                            repeated.is_none(),
                            &ctx,
                        )
                        .await?
                    }
                };
                c.repeated += repeated.unwrap_or(0);
                c
            }
        };
        counts.add(&c);
    }
    if !staged.is_empty() {
        tx.batch_execute(&format!("DROP TABLE {}", staged.join(", ")))
            .await
            .map_err(|e| Error::server("dropping the merged stages", e))?;
    }
    deferred.build(tx, 1).await?;
    if let Some((new, policy)) = new {
        // The copy of an empty table that never had statistics leaves
        // them to autovacuum, as a COPY into it would (see
        // `batch::swap_or_merge`); a replaced table's are renewed.
        if options.mode == Mode::ReplaceAtomic || rebuild::has_statistics(tx, table).await? {
            rebuild::analyze(tx, new).await?;
        }
        rebuild::swap(tx, policy, new).await?;
    }
    Ok((counts, was_rewritten))
}

/// The temporary table [`gather`] fills (dropped at commit).
const GATHERED: &str = "pgbulk_stages";

/// Gathers the rows of `staged` (each with the columns `names`) into
/// [`GATHERED`], one row per key: the last in `staged` order and each
/// stage's physical order (a stage is only appended to, so `ctid` order is
/// arrival order), or the first, as `options.on_duplicate` says; with
/// [`OnDuplicate::Error`] a repeated key fails, naming one. One sort of
/// every row (2 stages of 1 M rows: 1.35 s, against 1.8 s for copying
/// them and grouping by key to count the repeats). Returns the rows kept
/// and the rows left out of the `all` staged.
async fn gather(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    staged: &[String],
    names: &str,
    all: u64,
    options: &Options,
) -> Result<(u64, u64)> {
    if let Some(work_mem) = &options.merge_work_mem {
        tx.batch_execute(&format!("SET LOCAL work_mem = {}", quote_literal(work_mem)))
            .await
            .map_err(|e| Error::server("SET work_mem", e))?;
    }
    let key = layout.key_values("");
    let union = staged
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!("SELECT {names}, {i} AS \"pgbulk:stage\", ctid AS \"pgbulk:row\" FROM {s}")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let order = if options.on_duplicate == OnDuplicate::First {
        "ASC"
    } else {
        "DESC"
    };
    let kept = tx
        .execute(
            &format!(
                "CREATE TEMP TABLE {GATHERED} ON COMMIT DROP AS SELECT DISTINCT ON ({key}) {names} \
                 FROM ({union}) u ORDER BY {key}, \"pgbulk:stage\" {order}, \"pgbulk:row\" {order}"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::server("gathering the staged rows", e))?;
    let repeated = all.saturating_sub(kept);
    if repeated > 0 && options.on_duplicate == OnDuplicate::Error {
        let target = layout.target;
        let example: Option<String> = tx
            .query_opt(
                &format!(
                    "SELECT ROW({key})::text FROM ({union}) u GROUP BY {key} HAVING count(*) > 1 LIMIT 1"
                ),
                &[],
            )
            .await
            .map_err(|e| Error::server("finding a repeated key", e))?
            .map(|r| r.get(0));
        return Err(Error::new(
            ErrorKind::Data,
            format!(
                "table {}: {repeated} staged rows repeat the key of another staged row, e.g. ({}) = {}; on_duplicate \"last\" or \"first\" keeps one row per key",
                target.name,
                key_list(target),
                example.unwrap_or_default()
            ),
        ));
    }
    Ok((kept, repeated))
}

/// The rows of the stages `staged`, counted.
async fn staged_rows(tx: &Transaction<'_>, staged: &[String]) -> Result<u64> {
    let counts = staged
        .iter()
        .map(|s| format!("(SELECT count(*) FROM {s})"))
        .collect::<Vec<_>>()
        .join(" + ");
    let all: i64 = tx
        .query_one(&format!("SELECT ({counts})::int8"), &[])
        .await
        .map_err(|e| Error::server("counting the staged rows", e))?
        .get(0);
    Ok(u64::try_from(all).unwrap_or(0))
}

/// Fills `into` (a table created in this transaction) with the rows of
/// `select` (values of its `columns`, each of the column's type) by binary
/// COPY with `FREEZE`: read on a second connection to `params` (the stages
/// are committed tables), the bytes passed on undecoded. `None` when no
/// second connection could be had (nothing was written).
async fn copy_through(
    tx: &Transaction<'_>,
    params: &ConnParams,
    into: &TableName,
    columns: &str,
    select: &str,
) -> Result<Option<u64>> {
    let reader = match crate::connect::connect(params).await {
        Ok(session) => session.client,
        Err(e) => {
            debug!("no second connection to read the stages ({e}): INSERT ... SELECT instead");
            return Ok(None);
        }
    };
    let rows = crate::copy::relay(
        &reader,
        &format!("COPY ({select}) TO STDOUT (FORMAT binary)"),
        tx.client(),
        &format!(
            "COPY {} ({columns}) FROM STDIN (FORMAT binary, FREEZE)",
            into.quoted()
        ),
    )
    .await?;
    Ok(Some(rows))
}
