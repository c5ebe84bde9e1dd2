//! `--jobs N`: the source read in ranges on N connections from one
//! exported snapshot, each range loaded and committed on its own, recorded
//! in a ledger so a rerun redoes only the ranges not finished.
//!
//! Ranges: equal-count ranges of a single integer primary key (boundaries
//! from a sample of the table), else block ranges of `ctid` (PostgreSQL 14
//! and later: a TID range scan reads only its blocks; of each partition or
//! child table alike, the bounds sharing out all their blocks), else none (one
//! stream). The first range is open below and the last above, so every row
//! is in exactly one.
//!
//! Ledger: rows of the destination's `pgbulk_watermark` table, keyed
//! `<dest>#sync:<source>#plan` (the ranges, the run's fingerprint and the
//! watermark it will store) and `...#range:<i>` (committed in the
//! transaction of range i's last batch). A run finding a plan with its own
//! fingerprint reads only the ranges without a row; once every range is
//! in, the incremental watermark is stored and the ledger rows removed in
//! one transaction.

use std::sync::Arc;

use tokio_postgres::{GenericClient, Transaction};

use super::{Mark, Reading};
use crate::catalog::TableFacts;
use crate::conninfo::ConnParams;
use crate::error::{Error, ErrorKind, Result};
use crate::ingest;
use crate::load::{FinalHook, LoadOptions, LoadReport, Progress};
use crate::lock::LockPolicy;
use crate::schema::{TableName, quote_ident, quote_literal};
use crate::watermark;

/// Rows a sample for key boundaries reads, about.
const SAMPLE_ROWS: f64 = 200_000.0;

/// Fewer blocks than this per job: not split (the table is small).
const MIN_BLOCKS_PER_JOB: i64 = 64;

/// How the source splits into at most `jobs` ranges: SQL conditions on its
/// rows, each selecting one range (empty or one: no split).
pub(super) async fn split(
    client: &impl GenericClient,
    facts: &TableFacts,
    unique: bool,
    reading: &Reading,
    server_version: i32,
    jobs: usize,
) -> Result<Vec<String>> {
    if jobs < 2 || facts.oid == 0 {
        return Ok(Vec::new());
    }
    let key = facts
        .primary_key
        .as_ref()
        .map(|(_, k)| k.as_slice())
        .unwrap_or_default();
    let integer_key = match key {
        [k] if unique => facts
            .column(k)
            .filter(|c| matches!(c.type_name.as_str(), "smallint" | "integer" | "bigint")),
        _ => None,
    };
    if let Some(column) = integer_key {
        let col = quote_ident(&column.name);
        let row = client
            .query_one(
                "SELECT c.reltuples::float8 FROM pg_catalog.pg_class c WHERE c.oid = $1",
                &[&facts.oid],
            )
            .await
            .map_err(|e| Error::server("reading the source's size", e))?;
        let tuples: f64 = row.get(0);
        let percent = if tuples > SAMPLE_ROWS {
            (100.0 * SAMPLE_ROWS / tuples).max(0.001)
        } else {
            100.0
        };
        let fractions: Vec<f64> = (1..jobs).map(|i| i as f64 / jobs as f64).collect();
        let sample = if percent < 100.0 {
            format!(" TABLESAMPLE SYSTEM ({percent})")
        } else {
            String::new()
        };
        let bounds: Option<Vec<Option<i64>>> = client
            .query_one(
                &format!(
                    "SELECT (percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY {col}))::int8[] \
                     FROM {}{sample}{}",
                    reading.relation,
                    reading.filter()
                ),
                &[&fractions],
            )
            .await
            .map_err(|e| Error::server("sampling the source's key for ranges", e))?
            .get(0);
        let mut bounds: Vec<i64> = bounds.unwrap_or_default().into_iter().flatten().collect();
        bounds.dedup();
        return Ok(conditions(&col, &bounds, |b| b.to_string()));
    }
    if server_version < 140_000 {
        return Ok(Vec::new());
    }
    // The relations a read of the table scans: it and, as partitions or by
    // inheritance, its descendants. Each is read by the same block ranges
    // (a TID range scan on each), so the bounds share out their blocks.
    let relations = client
        .query(
            "WITH RECURSIVE tree(oid) AS (SELECT $1::oid \
               UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid) \
             SELECT c.relkind::text, pg_catalog.pg_relation_size(c.oid) \
               / current_setting('block_size')::int8 \
             FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid",
            &[&facts.oid],
        )
        .await
        .map_err(|e| Error::server("reading the source's size", e))?;
    let mut blocks = Vec::with_capacity(relations.len());
    for row in &relations {
        let kind: String = row.get(0);
        match kind.as_str() {
            "r" => blocks.push(row.get::<_, i64>(1)),
            // A partitioned table has no rows of its own.
            "p" => {}
            // A foreign table (or a view) has no blocks to range over.
            _ => return Ok(Vec::new()),
        }
    }
    let bounds = block_bounds(&blocks, jobs);
    Ok(conditions("ctid", &bounds, |b| format!("'({b},0)'::tid")))
}

/// Block numbers cutting relations of `blocks` blocks each, all read by the
/// same block ranges, into `jobs` ranges of about as many blocks in all;
/// none when there are too few blocks to split.
fn block_bounds(blocks: &[i64], jobs: usize) -> Vec<i64> {
    let total: i64 = blocks.iter().sum();
    if jobs < 2 || total < MIN_BLOCKS_PER_JOB * jobs as i64 {
        return Vec::new();
    }
    // The blocks below block `x`, over every relation: increasing in `x`.
    let below = |x: i64| -> i64 { blocks.iter().map(|&b| b.min(x)).sum() };
    let largest = blocks.iter().copied().max().unwrap_or(0);
    let mut bounds: Vec<i64> = (1..jobs as i64)
        .map(|i| {
            let share = (i128::from(total) * i128::from(i) / jobs as i128) as i64;
            // The least `x` with at least `share` blocks below it.
            let (mut low, mut high) = (0, largest);
            while low < high {
                let mid = low + (high - low) / 2;
                if below(mid) < share {
                    low = mid + 1;
                } else {
                    high = mid;
                }
            }
            low
        })
        .filter(|&x| x > 0)
        .collect();
    bounds.dedup();
    bounds
}

/// Why [`split`] gave one range for `--jobs`.
pub(super) fn one_range(facts: &TableFacts) -> String {
    if facts.oid == 0 {
        "read in one range, not split for --jobs: a query or a view has no table to split"
            .to_owned()
    } else {
        "read in one range, not split for --jobs: the source has no single integer key and is not a table (plain, partitioned or inherited, without foreign partitions) on PostgreSQL 14 or later, or is small".to_owned()
    }
}

/// `col < b1`, `col >= b1 AND col < b2`, ..., `col >= bn`.
fn conditions(col: &str, bounds: &[i64], literal: impl Fn(i64) -> String) -> Vec<String> {
    if bounds.is_empty() {
        return Vec::new();
    }
    let mut out = vec![format!("{col} < {}", literal(bounds[0]))];
    for pair in bounds.windows(2) {
        out.push(format!(
            "{col} >= {} AND {col} < {}",
            literal(pair[0]),
            literal(pair[1])
        ));
    }
    out.push(format!("{col} >= {}", literal(bounds[bounds.len() - 1])));
    out
}

/// The ledger of a ranged sync in the destination.
pub(super) struct Ledger {
    dest: TableName,
    prefix: String,
    fingerprint: String,
}

/// A plan a killed run left: its ranges, those done, its watermark.
pub(super) struct Pending {
    pub(super) ranges: Vec<String>,
    pub(super) done: Vec<usize>,
    pub(super) next: Option<Mark>,
    /// The indexes to build once every range is in.
    pub(super) indexes: Vec<String>,
    /// The primary key to add then (`ALTER TABLE ... ADD PRIMARY KEY`).
    pub(super) add_key: Option<String>,
}

impl Ledger {
    /// The ledger of syncing `reading` into `dest` (in ranges: their
    /// number is not part of it, so a run with other `--jobs` goes on with
    /// an interrupted run's plan).
    pub(super) fn new(dest: &TableName, reading: &Reading) -> Self {
        Self {
            dest: dest.clone(),
            prefix: watermark::key(dest, Some(&format!("sync:{}#", reading.label))),
            fingerprint: format!(
                "SELECT {} FROM {}{}",
                reading.select,
                reading.relation,
                reading.filter()
            ),
        }
    }

    /// Whether a stored plan's fingerprint is this sync's (plans stored
    /// before began with `jobs N: `).
    fn same_sync(&self, stored: &str) -> bool {
        let stored = match stored.split_once(": ") {
            Some((jobs, rest)) if jobs.starts_with("jobs ") => rest,
            _ => stored,
        };
        stored == self.fingerprint
    }

    fn plan_key(&self) -> String {
        format!("{}plan", self.prefix)
    }

    fn range_key(&self, i: usize) -> String {
        format!("{}range:{i}", self.prefix)
    }

    /// The plan of an earlier run of the same sync that did not finish;
    /// the plans of other syncs into the table under this name are
    /// removed.
    pub(super) async fn pending(&self, client: &impl GenericClient) -> Result<Option<Pending>> {
        let schema = self.dest.schema_or_public();
        let keys = watermark::keys_with_prefix(client, schema, &self.prefix).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let plan = watermark::read(client, &self.dest, &self.plan_key()).await?;
        let same = plan
            .as_ref()
            .and_then(|p| p.get("fingerprint"))
            .and_then(|f| f.as_str())
            .is_some_and(|f| self.same_sync(f));
        let Some(plan) = plan.filter(|_| same) else {
            watermark::remove_prefix(client, schema, &self.prefix).await?;
            return Ok(None);
        };
        let ranges: Vec<String> = plan
            .get("ranges")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let done = (0..ranges.len())
            .filter(|i| keys.contains(&self.range_key(*i)))
            .collect();
        Ok(Some(Pending {
            ranges,
            done,
            next: plan.get("next").and_then(Mark::from_json),
            indexes: plan
                .get("indexes")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default(),
            add_key: plan
                .get("add_key")
                .and_then(|k| k.as_str())
                .map(str::to_owned),
        }))
    }

    /// Removes the plan and the ranges done of an earlier run.
    pub(super) async fn forget(&self, client: &impl GenericClient) -> Result<()> {
        watermark::remove_prefix(client, self.dest.schema_or_public(), &self.prefix).await
    }

    /// Records the plan of this run (ranges, the watermark stored at its
    /// end, the indexes built and the primary key added then).
    pub(super) async fn start(
        &self,
        client: &impl GenericClient,
        ranges: &[String],
        next: Option<&Mark>,
        (indexes, add_key): (&[String], Option<&str>),
    ) -> Result<()> {
        let plan = serde_json::json!({
            "fingerprint": self.fingerprint,
            "ranges": ranges,
            "next": next.map(Mark::to_json),
            "indexes": indexes,
            "add_key": add_key,
        });
        watermark::write(
            client,
            &self.dest,
            &self.plan_key(),
            Some(&plan),
            &serde_json::json!({}),
            None,
        )
        .await
    }

    /// Every range is in: stores the incremental watermark (`next` under
    /// `watermark_key`), removes the ledger rows, builds the `indexes` of
    /// a table the run created and adds its primary key (`add_key`; one
    /// sort each, not an insertion per row while the ranges loaded), in
    /// one transaction: a run stopped before it commits builds them again.
    /// The indexes and the key wait for their locks under `policy`; the
    /// key's `ACCESS EXCLUSIVE` lock is taken last, so readers wait for
    /// its build only, and the commit follows at once.
    pub(super) async fn finish(
        &self,
        client: &mut tokio_postgres::Client,
        watermark_key: Option<(&str, serde_json::Value, serde_json::Value)>,
        (indexes, add_key): (&[String], Option<&str>),
        policy: &LockPolicy,
    ) -> Result<()> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::server("finishing the ranges", e))?;
        if let Some((key, next, metadata)) = watermark_key {
            watermark::write(&tx, &self.dest, key, Some(&next), &metadata, None).await?;
        }
        watermark::remove_prefix(&tx, self.dest.schema_or_public(), &self.prefix).await?;
        let statements: Vec<&str> = indexes.iter().map(String::as_str).collect();
        for (statements, what) in [
            (statements.join("\n"), "building the indexes of"),
            (
                add_key.unwrap_or_default().to_owned(),
                "adding the primary key of",
            ),
        ] {
            if statements.is_empty() {
                continue;
            }
            let what = format!("{what} {}", self.dest);
            let oid = crate::catalog::table_oid(&tx, self.dest.schema_or_public(), &self.dest.name)
                .await?
                .ok_or_else(|| Error::new(ErrorKind::Data, format!("{what}: the table is gone")))?;
            crate::lock::run_in_savepoint(&tx, policy, oid, &what, &statements).await?;
        }
        tx.commit()
            .await
            .map_err(|e| Error::server("finishing the ranges", e))
    }
}

/// Whether a stopped ranged sync of `label` into `dest` left it without
/// the primary key its plan adds once every range is in (whatever the
/// plan's reading).
pub(super) async fn key_pending(
    client: &impl GenericClient,
    dest: &TableName,
    label: &str,
) -> Result<bool> {
    let prefix = watermark::key(dest, Some(&format!("sync:{label}#")));
    let plan = format!("{prefix}plan");
    if !watermark::keys_with_prefix(client, dest.schema_or_public(), &plan)
        .await?
        .contains(&plan)
    {
        return Ok(false);
    }
    Ok(watermark::read(client, dest, &plan)
        .await?
        .is_some_and(|p| p.get("add_key").is_some_and(|k| k.is_string())))
}

/// Records range `i` done, in the transaction of its last batch.
struct RangeDone {
    dest: TableName,
    key: String,
    ran: std::sync::atomic::AtomicBool,
}

impl ingest::BeforeVisible for RangeDone {
    fn call<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        _batch: &'a ingest::BatchInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.record(tx))
    }
}

impl RangeDone {
    /// Writes the range's ledger row (in `client`'s transaction, if any).
    async fn record(&self, client: &impl GenericClient) -> Result<()> {
        watermark::write(
            client,
            &self.dest,
            &self.key,
            Some(&serde_json::Value::Bool(true)),
            &serde_json::json!({}),
            None,
        )
        .await?;
        self.ran.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// What the ranges did.
pub(super) struct Outcome {
    /// The ranges' loads, added up.
    pub(super) load: LoadReport,
    /// Ranges in all, and those an earlier run finished.
    pub(super) ranges: usize,
    pub(super) done_before: usize,
    /// The watermark to store (the plan's).
    pub(super) next: Option<Mark>,
    /// The indexes to build at the end (the plan's).
    pub(super) indexes: Vec<String>,
    /// The primary key to add then (the plan's).
    pub(super) add_key: Option<String>,
}

/// Where the ranges run: the source, the destination and the load's
/// options (its `sources` and hook are set per range).
pub(super) struct Run<'a> {
    pub(super) source: &'a ConnParams,
    pub(super) dest: &'a ConnParams,
    pub(super) load: LoadOptions,
    /// Where spooled ranges go (`None` when they are passed through).
    pub(super) spool: Option<&'a std::path::Path>,
    pub(super) progress: Arc<Progress>,
    /// Passed through ([`super::passthrough`]), each range in one
    /// transaction: the destination columns the `SELECT` list fills.
    /// `None`: spooled and loaded in batches.
    pub(super) binary: Option<Vec<String>>,
    /// The rows are unique by the destination's key (its source's primary
    /// key).
    pub(super) keys_unique: bool,
    /// The indexes of a table this run created, built once every range is
    /// in (a resumed run takes its plan's).
    pub(super) indexes: Vec<String>,
    /// Its primary key, added then (created without it: the ranges'
    /// rows, unique by the source's key, are appended).
    pub(super) add_key: Option<String>,
}

/// Reads and loads the ranges not done (`split`, or the pending plan's),
/// each on its own source connection importing `tx`'s snapshot and its
/// own destination connection; `tx` ends once every range imported it.
pub(super) async fn run(
    tx: Transaction<'_>,
    run: Run<'_>,
    reading: &Reading,
    ledger: &Ledger,
    split: Vec<String>,
    next: Option<Mark>,
) -> Result<Outcome> {
    let dest = crate::connect::connect(run.dest).await?.client;
    watermark::ensure(&dest, ledger.dest.schema_or_public()).await?;
    let pending = ledger.pending(&dest).await?;
    let (ranges, done, next, indexes, add_key) = match pending {
        Some(p) => (p.ranges, p.done, p.next, p.indexes, p.add_key),
        None => {
            ledger
                .start(
                    &dest,
                    &split,
                    next.as_ref(),
                    (&run.indexes, run.add_key.as_deref()),
                )
                .await?;
            (split, Vec::new(), next, run.indexes.clone(), run.add_key)
        }
    };
    drop(dest);
    let snapshot: String = tx
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
        .map_err(|e| Error::server("exporting the source snapshot", e))?
        .get(0);
    let (imported, mut imports) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for (i, condition) in ranges.iter().enumerate() {
        if done.contains(&i) {
            continue;
        }
        let source = run.source.clone();
        let dest = run.dest.clone();
        let progress = run.progress.clone();
        let imported = imported.clone();
        let snapshot = snapshot.clone();
        let query = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT csv, HEADER)",
            reading.select,
            reading.relation,
            reading.filter_and(condition)
        );
        let binary = run.binary.clone();
        let keys_unique = run.keys_unique;
        let reading = reading.clone();
        let condition = condition.clone();
        let path = run.spool.map(|dir| dir.join(format!("range-{i}.csv")));
        let hook = Arc::new(RangeDone {
            dest: ledger.dest.clone(),
            key: ledger.range_key(i),
            ran: std::sync::atomic::AtomicBool::new(false),
        });
        let load = LoadOptions {
            sources: path
                .iter()
                .cloned()
                .map(crate::input::Source::File)
                .collect(),
            before_final_commit: Some(FinalHook(hook.clone())),
            // A table whose key is added at the end holds each range's
            // rows once: each range in one transaction, whatever a
            // rerun's --batch-rows.
            batch_rows: if add_key.is_some() {
                u64::MAX
            } else {
                run.load.batch_rows
            },
            ..run.load.clone()
        };
        let label = format!(
            "{} range {} of {} ({condition})",
            reading.label,
            i + 1,
            ranges.len()
        );
        tasks.push(tokio::spawn(async move {
            let mut client = crate::connect::connect(&source).await?.client;
            let tx = super::snapshot(&mut client).await?;
            tx.batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT {}; {}",
                quote_literal(&snapshot),
                super::EXACT_TEXT
            ))
            .await
            .map_err(|e| Error::server("importing the source snapshot", e))?;
            let _ = imported.send(());
            drop(imported);
            if let Some(columns) = binary {
                let passage = super::passthrough::Passage {
                    reading: &reading,
                    range: Some(&condition),
                    label: label.clone(),
                    columns,
                    before_visible: Some(hook.clone() as Arc<dyn ingest::BeforeVisible>),
                    batch_rows: u64::MAX,
                    keys_unique,
                    fill_empty: false,
                    probe: false,
                };
                let mut dest_client = crate::connect::connect(&dest).await?.client;
                let report =
                    super::passthrough::run(&tx, passage, &mut dest_client, &load, progress)
                        .await
                        .map_err(|e| e.context(&label))?;
                tx.commit()
                    .await
                    .map_err(|e| Error::server("ending a range's snapshot", e))?;
                if !hook.ran.load(std::sync::atomic::Ordering::SeqCst) {
                    // No batch (an empty range): recorded on its own.
                    let dest_client = crate::connect::connect(&dest).await?.client;
                    hook.record(&dest_client).await?;
                }
                return Ok::<LoadReport, Error>(report);
            }
            let Some(path) = path else {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("{label}: no spool directory"),
                ));
            };
            super::spool_rows(&tx, &query, &path, &label).await?;
            tx.commit()
                .await
                .map_err(|e| Error::server("ending a range's snapshot", e))?;
            drop(client);
            let dest_client = crate::connect::connect(&dest).await?.client;
            let report = crate::load::load(dest_client, &dest, &load, progress)
                .await
                .map_err(|e| e.context(&label))?;
            let _ = std::fs::remove_file(&path);
            if !hook.ran.load(std::sync::atomic::Ordering::SeqCst) {
                // No batch (an empty range): recorded on its own.
                let dest_client = crate::connect::connect(&dest).await?.client;
                hook.record(&dest_client).await?;
            }
            Ok::<LoadReport, Error>(report)
        }));
    }
    drop(imported);
    // The snapshot is kept exported until every range imported it (or
    // failed before).
    while imports.recv().await.is_some() {}
    tx.commit()
        .await
        .map_err(|e| Error::server("ending the source snapshot", e))?;
    let mut load = LoadReport::default();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(r)) => {
                let seconds = load.seconds.max(r.seconds);
                load.absorb(r);
                load.seconds = seconds;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error
                    .get_or_insert(Error::new(ErrorKind::Io, format!("a range failed: {e}")));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // Each range's load counts the rows of all (one progress).
    load.rows_read = run
        .progress
        .rows_read
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(Outcome {
        load,
        ranges: ranges.len(),
        done_before: done.len(),
        next,
        indexes,
        add_key,
    })
}

#[cfg(test)]
mod tests {
    use super::{Ledger, block_bounds};
    use crate::schema::TableName;
    use crate::sync::Reading;

    #[test]
    fn a_plan_is_this_syncs_whatever_the_jobs_it_was_stored_with() {
        let reading = Reading {
            label: "public.big".to_owned(),
            relation: "\"public\".\"big\"".to_owned(),
            select: "\"id\" AS \"id\"".to_owned(),
            filters: vec!["\"id\" > 5".to_owned()],
        };
        let ledger = Ledger::new(&TableName::new("public", "big"), &reading);
        let now = ledger.fingerprint.clone();
        assert!(ledger.same_sync(&now));
        // Stored before the count of jobs left the fingerprint.
        assert!(ledger.same_sync(&format!("jobs 2: {now}")));
        assert!(ledger.same_sync(&format!("jobs 16: {now}")));
        assert!(!ledger.same_sync(&now.replace("> 5", "> 6")));
        assert!(!ledger.same_sync(&format!("jobs 2: {}", now.replace("> 5", "> 6"))));
    }

    #[test]
    fn block_ranges_share_out_the_blocks_of_every_relation() {
        // One table: equal parts of its blocks.
        assert_eq!(block_bounds(&[1000], 2), vec![500]);
        assert_eq!(block_bounds(&[900], 3), vec![300, 600]);
        // Too small to split.
        assert_eq!(block_bounds(&[127], 2), Vec::<i64>::new());
        assert_eq!(block_bounds(&[], 2), Vec::<i64>::new());
        // Partitions of 1,000 and 200 blocks: half of the 1,200 lie below
        // block 400 (400 + 200).
        assert_eq!(block_bounds(&[1000, 200], 2), vec![400]);
        // Many equal partitions: the same cut as one of them.
        assert_eq!(block_bounds(&[100; 10], 4), vec![25, 50, 75]);
        // Empty partitions count for nothing.
        assert_eq!(block_bounds(&[0, 1000, 0], 2), vec![500]);
    }
}
