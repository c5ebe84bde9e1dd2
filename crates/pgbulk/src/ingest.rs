//! The ingest engine: batches of rows into declared tables.
//!
//! [`ingest`] creates what is missing (schema, tables, the watermark table)
//! at once, migrates existing tables to their declaration when the first
//! batch arrives (a changed declaration with zero batches migrates
//! nothing), and commits each batch in one transaction together with its
//! high watermark:
//!
//! 1. rows are encoded to binary COPY and copied into TEMP staging tables
//!    (no strong lock is held while the client streams);
//! 2. a transaction-scoped advisory lock per target table, taken in oid
//!    order, serialises concurrent ingests into the same table (so they
//!    neither corrupt nor deadlock each other);
//! 3. tables with a primary key are upserted: the last row per key in the
//!    batch wins, `INSERT ... ON CONFLICT DO UPDATE` of the non-key columns
//!    guarded by `IS DISTINCT FROM`, so unchanged rows are not rewritten
//!    (no dead tuples, no WAL); `DO NOTHING` when every column is in the
//!    key. Tables without a key are appended to, straight from COPY when no
//!    column needs a server-side cast;
//! 4. the watermark row is written, the hook runs, and the transaction
//!    commits: other sessions see all of the batch or none of it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, Transaction};
use tracing::info;

use crate::catalog::{self, Column};
use crate::codec::{ColumnType, CopyWriter, TypeKind, Value, shorten};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{self, LockPolicy};
use crate::plan::{self, Phase, Plan, Step};
use crate::rebuild::{self, NewTable};
use crate::schema::TableFacts;
use crate::schema::{Declaration, TableName, quote_ident, quote_literal};
use crate::watermark;

/// How batches change the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Upsert each batch (append without a key), committing each batch.
    #[default]
    Upsert,
    /// Delete all rows in the first batch's transaction, then upsert,
    /// committing each batch. Zero batches delete nothing.
    DeleteThenUpsert,
    /// Load every batch into a new table and swap it in after the final
    /// batch, keeping grants, views and the rest as a rebuild does: readers
    /// see all the old rows, then all the new ones. The watermark commits
    /// with the swap. Zero batches change nothing.
    ReplaceAtomic,
}

/// Which statement merges a batch into a table with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upsert {
    /// `MERGE` on PostgreSQL 15 and later (one hash join; unchanged rows
    /// are not locked), else `INSERT ... ON CONFLICT`.
    #[default]
    Auto,
    /// `INSERT ... ON CONFLICT DO UPDATE` always: slower on large batches,
    /// but a row inserted concurrently by another writer is updated instead
    /// of failing the batch with a unique violation.
    OnConflict,
    /// No upsert: rows are appended straight from COPY even when the table
    /// has a key (a key that exists fails the batch).
    Append,
}

/// Which high watermark the source is started from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum HighWatermark {
    /// The stored one (none the first time).
    #[default]
    Latest,
    /// None.
    Earliest,
    /// This value.
    Value(serde_json::Value),
}

/// The high watermark a batch commits with.
pub enum BatchWatermark {
    /// Known up front (`None` stores SQL NULL).
    Value(Option<serde_json::Value>),
    /// Computed just before commit.
    Computed(Box<dyn FnOnce() -> Option<serde_json::Value> + Send + Sync>),
}

impl std::fmt::Debug for BatchWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Self::Computed(_) => f.write_str("Computed"),
        }
    }
}

/// One row, tagged with its table (`schema.table`, or `table` when the name
/// is unambiguous), its values in the order of the table's columns
/// (generated columns left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The table. Clone one `Arc` for all rows of a table: rows naming the
    /// same `Arc` as the row before skip the table lookup.
    pub table: Arc<str>,
    /// The values.
    pub values: Vec<Value>,
}

impl Row {
    /// A row for `table`.
    pub fn new(table: impl Into<Arc<str>>, values: Vec<Value>) -> Self {
        Self {
            table: table.into(),
            values,
        }
    }
}

/// A batch's rows, streamed, so a batch of any size is loaded in bounded
/// memory. An error from the source rolls the batch back and ends the
/// ingest.
pub enum Rows {
    /// Typed rows for any of the declared tables, each naming its table and
    /// giving a value for every column.
    Values(Box<dyn Iterator<Item = Result<Row>> + Send>),
    /// Text fields for one table (files): converted with the syntax of the
    /// server's input functions, without an allocation per field.
    Text(Box<dyn TextRows>),
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Values(_) => f.write_str("Rows::Values"),
            Self::Text(t) => write!(f, "Rows::Text({})", t.table()),
        }
    }
}

impl Rows {
    /// Typed rows from an iterator.
    pub fn values(rows: impl Iterator<Item = Result<Row>> + Send + 'static) -> Self {
        Self::Values(Box::new(rows))
    }
}

/// Rows of text fields for one table, read by the engine one at a time into
/// a reused buffer.
pub trait TextRows: Send {
    /// The table (`schema.table`, or `table` when unambiguous).
    fn table(&self) -> &str;
    /// The columns the fields fill, in field order; columns left out take
    /// their defaults (and keep their values on update).
    fn columns(&self) -> &[String];
    /// Reads the next row into `row`; `false` at the end of the batch.
    fn next_row(&mut self, row: &mut TextRow) -> Result<bool>;
    /// A field of the row just read does not convert. `Ok(())` rejects the
    /// row (it is left out and the batch goes on); an error fails the batch.
    fn reject(&mut self, failure: &RowFailure<'_>) -> Result<()>;
    /// Where the source stands once the batch's rows are read, stored with
    /// the watermark (resumable sources).
    fn resume(&self) -> Option<serde_json::Value> {
        None
    }
}

/// One row of text fields; `None` is NULL.
#[derive(Debug, Default)]
pub struct TextRow {
    data: String,
    fields: Vec<Option<(usize, usize)>>,
}

impl TextRow {
    /// Empties the row for the next one.
    pub fn clear(&mut self) {
        self.data.clear();
        self.fields.clear();
    }

    /// Appends a field.
    pub fn push(&mut self, field: Option<&str>) {
        self.fields.push(field.map(|f| {
            let start = self.data.len();
            self.data.push_str(f);
            (start, self.data.len())
        }));
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Field `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.fields
            .get(i)
            .copied()
            .flatten()
            .map(|(a, b)| &self.data[a..b])
    }
}

/// Why a row of text fields was not loaded.
#[derive(Debug)]
pub struct RowFailure<'a> {
    /// The field's position in the row (0-based).
    pub field: usize,
    /// The column it was for.
    pub column: &'a str,
    /// The field's text (`None`: NULL).
    pub value: Option<&'a str>,
    /// Why it does not convert.
    pub reason: String,
}

/// A batch: committed atomically with its high watermark.
pub struct Batch {
    /// The high watermark stored with the batch.
    pub high_watermark: BatchWatermark,
    /// Free-form metadata, passed to the hook and stored with the watermark.
    pub metadata: serde_json::Value,
    /// Rows for any of the declared tables.
    pub rows: Rows,
    /// Where a resumable source stands after this batch (stored with the
    /// watermark).
    pub resume: Option<serde_json::Value>,
}

impl Batch {
    /// A batch of `rows` with a known watermark and no metadata.
    pub fn new(high_watermark: Option<serde_json::Value>, rows: Vec<Row>) -> Self {
        Self {
            high_watermark: BatchWatermark::Value(high_watermark),
            metadata: serde_json::Value::Null,
            rows: Rows::values(rows.into_iter().map(Ok)),
            resume: None,
        }
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("high_watermark", &self.high_watermark)
            .field("metadata", &self.metadata)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

/// What the hook sees of a batch.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    /// 1 for the first batch.
    pub number: usize,
    /// The batch's metadata.
    pub metadata: serde_json::Value,
    /// The watermark being committed.
    pub high_watermark: Option<serde_json::Value>,
    /// Row counts per table.
    pub tables: BTreeMap<String, Counts>,
}

/// Called inside each batch's transaction before it commits: it sees the
/// batch's rows; an error rolls the batch back.
pub trait BeforeVisible: Send + Sync {
    /// Runs the hook.
    fn call<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        batch: &'a BatchInfo,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
}

/// A callback after each committed batch.
pub type OnCommit = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// Options of an ingest.
#[derive(Clone)]
pub struct Options {
    /// Where the source starts.
    pub high_watermark: HighWatermark,
    /// How batches change the tables.
    pub mode: Mode,
    /// Lock timeouts and retries for migrations.
    pub lock_policy: LockPolicy,
    /// The hook before each batch becomes visible.
    pub before_visible: Option<Arc<dyn BeforeVisible>>,
    /// `work_mem` for the statement merging a batch (its hash join holds
    /// the batch's keys); `None` keeps the session's. Default 256MB.
    pub merge_work_mem: Option<String>,
    /// The upsert statement.
    pub upsert: Upsert,
    /// Upsert keys other than the primary key, by table (`schema.table`):
    /// the columns rows are matched on.
    pub keys: BTreeMap<String, Vec<String>>,
    /// Called after each batch commits (progress, interrupt summaries).
    pub on_commit: Option<OnCommit>,
    /// For one of several parallel streams into the same tables: the
    /// stream's name, so each keeps its own watermark row
    /// (`<first table>#<stream>`).
    pub stream: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            high_watermark: HighWatermark::default(),
            mode: Mode::default(),
            lock_policy: LockPolicy::default(),
            before_visible: None,
            merge_work_mem: Some("256MB".to_owned()),
            upsert: Upsert::Auto,
            keys: BTreeMap::new(),
            on_commit: None,
            stream: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("high_watermark", &self.high_watermark)
            .field("mode", &self.mode)
            .field("lock_policy", &self.lock_policy)
            .field("before_visible", &self.before_visible.is_some())
            .field("merge_work_mem", &self.merge_work_mem)
            .field("upsert", &self.upsert)
            .field("keys", &self.keys)
            .field("on_commit", &self.on_commit.is_some())
            .field("stream", &self.stream)
            .finish()
    }
}

/// Rows counted for one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// New rows.
    pub inserted: u64,
    /// Existing rows whose values changed.
    pub updated: u64,
    /// Rows whose key existed with the same values (not rewritten), and
    /// earlier rows for a key repeated in the same batch.
    pub unchanged: u64,
    /// Rows deleted (delete-then-upsert, first batch).
    pub deleted: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
    }
}

/// One committed batch.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// 1 for the first batch.
    pub number: usize,
    /// Counts per table.
    pub tables: BTreeMap<String, Counts>,
    /// Rows for undeclared tables, skipped.
    pub skipped: u64,
    /// Seconds from receiving the batch to its commit.
    pub seconds: f64,
}

/// What an ingest did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Each committed batch.
    pub batches: Vec<BatchReport>,
    /// Totals per table.
    pub tables: BTreeMap<String, Counts>,
    /// Rows skipped per undeclared table name.
    pub skipped: BTreeMap<String, u64>,
    /// Migration steps applied, in words.
    pub migrations: Vec<String>,
    /// Seconds in all.
    pub seconds: f64,
}

/// A declared table as the engine writes it.
#[derive(Debug, Clone)]
struct Target {
    /// The declared table.
    name: TableName,
    /// Where rows go: the table itself, or the new table replacing it.
    write: TableName,
    /// The oid of `write`.
    oid: u32,
    /// Written columns (generated ones left out), types adjusted to the
    /// session's time zone.
    columns: Vec<Column>,
    /// Positions in `columns` of the primary key.
    key: Vec<usize>,
}

impl Target {
    fn needs_cast(&self) -> bool {
        self.columns.iter().any(|c| c.ty.needs_cast())
    }

    /// The target restricted to `names`, in that order (the columns a text
    /// source fills). Keyed targets need every key column.
    fn project(&self, names: &[String]) -> Result<Target> {
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let column = self
                .columns
                .iter()
                .find(|c| c.name == *name)
                .ok_or_else(|| {
                    Error::config(format!("table {} has no column \"{name}\"", self.name))
                })?;
            columns.push(column.clone());
        }
        let mut key = Vec::with_capacity(self.key.len());
        for &k in &self.key {
            let name = &self.columns[k].name;
            let at = columns.iter().position(|c| c.name == *name).ok_or_else(|| {
                Error::config(format!(
                    "the input has no value for key column \"{name}\" of {} (upserts need the whole key)",
                    self.name
                ))
            })?;
            key.push(at);
        }
        Ok(Target {
            columns,
            key,
            ..self.clone()
        })
    }
}

/// Runs an ingest: see the module documentation. `source` is called once
/// with the high watermark chosen by `options` and yields batches; when it
/// yields an error, the batches before stay committed and the error is
/// returned.
pub async fn ingest<I>(
    client: &mut Client,
    declaration: &Declaration,
    source: impl FnOnce(Option<serde_json::Value>) -> I,
    options: &Options,
) -> Result<Report>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let started = Instant::now();
    let mut report = Report::default();
    let plan = plan::plan(client, declaration).await?;
    let first = plan
        .live
        .first()
        .map(|(n, _)| n.clone())
        .ok_or_else(|| Error::config("nothing declared"))?;
    let (create, migrate): (Vec<Step>, Vec<Step>) = plan.steps.iter().cloned().partition(|s| {
        plan.live
            .iter()
            .any(|(n, oid)| *n == s.table && oid.is_none())
    });
    create_missing(client, &options.lock_policy, &create, &first, &mut report).await?;

    let start_hw = match &options.high_watermark {
        HighWatermark::Latest => {
            let key = watermark::key(&first, options.stream.as_deref());
            watermark::read(&*client, &first, &key).await?
        }
        HighWatermark::Earliest => None,
        HighWatermark::Value(v) => Some(v.clone()),
    };
    let zone_offset = session_utc_offset(client).await?;
    let names: Vec<TableName> = plan.live.iter().map(|(n, _)| n.clone()).collect();
    let replace = options.mode == Mode::ReplaceAtomic;
    if replace {
        lock_tables_for_session(client, &names, true).await?;
    }
    let result = run_batches(
        client,
        &plan,
        &migrate,
        &names,
        source(start_hw),
        zone_offset,
        &first,
        options,
        &mut report,
    )
    .await;
    if replace {
        lock_tables_for_session(client, &names, false).await?;
    }
    result?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A key for advisory locks on a declared table: stable across rebuilds.
const LOCK_NAMESPACE: i32 = 1_885_827_693;

/// Takes (or releases) session-level advisory locks on `names`, in name
/// order: a replace-atomic run owns its tables from the first batch to the
/// swap.
async fn lock_tables_for_session(client: &Client, names: &[TableName], lock: bool) -> Result<()> {
    let mut keys: Vec<String> = names.iter().map(ToString::to_string).collect();
    keys.sort();
    let function = if lock {
        "pg_advisory_lock"
    } else {
        "pg_advisory_unlock"
    };
    for key in keys {
        client
            .execute(
                &format!("SELECT pg_catalog.{function}($1, pg_catalog.hashtext($2))"),
                &[&LOCK_NAMESPACE, &key],
            )
            .await
            .map_err(|e| Error::server("taking the ingest lock", e))?;
    }
    Ok(())
}

/// The loop over batches (see [`ingest`]).
#[allow(clippy::too_many_arguments)]
async fn run_batches<I>(
    client: &mut Client,
    plan: &Plan,
    migrate: &[Step],
    names: &[TableName],
    batches: I,
    zone_offset: Option<i32>,
    first: &TableName,
    options: &Options,
    report: &mut Report,
) -> Result<()>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let replace = options.mode == Mode::ReplaceAtomic;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| Error::server("reading server_version_num", e))?
        .get(0);
    let merge = version >= 150_000 && options.upsert == Upsert::Auto;
    let mut targets: Option<Targets> = None;
    let mut news: Vec<NewTable> = Vec::new();
    let mut last: Option<Committed> = None;
    for (number, batch) in batches.into_iter().enumerate() {
        let number = number + 1;
        let batch = batch?;
        let batch_started = Instant::now();
        if targets.is_none() {
            let pairs: Vec<(TableName, TableName)> = if replace {
                news = create_new_tables(client, plan).await?;
                news.iter()
                    .map(|n| (n.target.clone(), n.name.clone()))
                    .collect()
            } else {
                migrate_existing(client, &options.lock_policy, plan, migrate, report).await?;
                names.iter().map(|n| (n.clone(), n.clone())).collect()
            };
            let list = keyed(read_targets(client, &pairs, zone_offset).await?, options)?;
            let lookup = name_lookup(&list);
            targets = Some(Targets { list, lookup });
        }
        let Some(current) = targets.as_ref() else {
            continue;
        };
        let context = BatchContext {
            number,
            first,
            options,
            rebuild: if number == 1 && !replace {
                rebuild_list(plan)
            } else {
                Vec::new()
            },
            write_watermark: !replace,
            zone_offset,
            merge,
        };
        let rebuilt = !context.rebuild.is_empty();
        let (counts, skipped, committed) =
            load_batch(client, current, batch, &context, report).await?;
        info!(batch = number, "committed");
        if rebuilt {
            report.migrations.extend(
                context
                    .rebuild
                    .iter()
                    .map(|(n, _, _)| format!("{n}: rebuilt and swapped in")),
            );
            // The rebuilt tables have new oids.
            let pairs: Vec<(TableName, TableName)> =
                names.iter().map(|n| (n.clone(), n.clone())).collect();
            let list = keyed(read_targets(client, &pairs, zone_offset).await?, options)?;
            let lookup = name_lookup(&list);
            targets = Some(Targets { list, lookup });
        }
        for (table, c) in &counts {
            report.tables.entry(table.clone()).or_default().add(c);
        }
        let batch_report = BatchReport {
            number,
            tables: counts,
            skipped,
            seconds: batch_started.elapsed().as_secs_f64(),
        };
        if let Some(on_commit) = &options.on_commit {
            on_commit(&batch_report);
        }
        report.batches.push(batch_report);
        last = Some(committed);
    }
    if let (true, Some(last)) = (replace, last) {
        swap_in(client, &news, first, &last, options).await?;
        report.migrations.extend(
            news.iter()
                .map(|n| format!("{}: replaced atomically", n.target)),
        );
    }
    Ok(())
}

/// Tables the plan rebuilds, with their live and declared facts.
fn rebuild_list(plan: &Plan) -> Vec<(TableName, TableFacts, TableFacts)> {
    let mut names: Vec<&TableName> = plan.rebuilds.iter().map(|(n, _)| n).collect();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| {
            let live = plan.live_facts.iter().find(|(l, _)| l == n)?.1.clone();
            let declared = plan.declared.iter().find(|(d, _)| d == n)?.1.clone();
            Some((n.clone(), live, declared))
        })
        .collect()
}

/// Replace-atomic: the new tables, built in the declared shape and
/// committed empty before the first batch loads into them.
async fn create_new_tables(client: &mut Client, plan: &Plan) -> Result<Vec<NewTable>> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::server("BEGIN", e))?;
    let mut news = Vec::new();
    for (name, declared) in &plan.declared {
        news.push(rebuild::create_new(&tx, name, declared).await?);
    }
    tx.commit()
        .await
        .map_err(|e| Error::server("creating the new tables", e))?;
    Ok(news)
}

/// Replace-atomic, after the final batch: swaps every new table in and
/// commits the watermark with it.
async fn swap_in(
    client: &mut Client,
    news: &[NewTable],
    first: &TableName,
    last: &Committed,
    options: &Options,
) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::server("BEGIN", e))?;
    for new in news {
        rebuild::swap(&tx, &options.lock_policy, new).await?;
    }
    watermark::write(
        &tx,
        first,
        &watermark::key(first, options.stream.as_deref()),
        None,
        last.high_watermark.as_ref(),
        &last.metadata,
        last.resume.as_ref(),
    )
    .await?;
    tx.commit()
        .await
        .map_err(|e| Error::server("committing the swap", e))
}

/// What a batch committed with.
#[derive(Debug)]
struct Committed {
    high_watermark: Option<serde_json::Value>,
    metadata: serde_json::Value,
    resume: Option<serde_json::Value>,
}

/// What one batch's transaction must do besides loading rows.
struct BatchContext<'a> {
    number: usize,
    first: &'a TableName,
    options: &'a Options,
    /// Tables rebuilt in this batch's transaction (first batch only).
    rebuild: Vec<(TableName, TableFacts, TableFacts)>,
    write_watermark: bool,
    zone_offset: Option<i32>,
    /// Whether the server has `MERGE` (PostgreSQL 15 and later).
    merge: bool,
}

/// Creates the schema, tables and watermark table that do not exist, in one
/// transaction, whether or not any batch arrives.
async fn create_missing(
    client: &mut Client,
    policy: &LockPolicy,
    create: &[Step],
    first: &TableName,
    report: &mut Report,
) -> Result<()> {
    let mut sql: Vec<String> = create.iter().flat_map(|s| s.sql.clone()).collect();
    let schema = first.schema_or_public();
    let needs_watermark = !watermark::exists(&*client, schema).await?;
    if needs_watermark {
        sql.push(watermark::create_sql(schema));
    }
    if sql.is_empty() {
        return Ok(());
    }
    lock::run_in_own_transaction(client, policy, None, "creating tables", &sql).await?;
    report
        .migrations
        .extend(create.iter().map(|s| format!("{}: {}", s.table, s.summary)));
    if needs_watermark {
        report.migrations.push(format!(
            "{}: create the watermark table",
            watermark::table(schema)
        ));
    }
    Ok(())
}

/// Applies the in-place migration steps of existing tables (first batch).
async fn migrate_existing(
    client: &mut Client,
    policy: &LockPolicy,
    plan: &Plan,
    steps: &[Step],
    report: &mut Report,
) -> Result<()> {
    for step in steps {
        let oid = plan
            .live
            .iter()
            .find(|(n, _)| *n == step.table)
            .and_then(|(_, oid)| *oid);
        let what = format!("{}: {}", step.table, step.summary);
        info!("migrating {what}");
        match step.phase {
            Phase::Transaction => {
                lock::run_in_own_transaction(client, policy, oid, &what, &step.sql).await?;
            }
            Phase::Concurrently => {
                for sql in &step.sql {
                    lock::run_outside_transaction(
                        client,
                        policy,
                        oid,
                        &what,
                        sql,
                        step.cleanup.as_deref(),
                    )
                    .await?;
                }
            }
        }
        report.migrations.push(what);
    }
    Ok(())
}

/// The session's `TimeZone` as a fixed offset east of UTC, when it is one.
async fn session_utc_offset(client: &Client) -> Result<Option<i32>> {
    let zone: String = client
        .query_one("SELECT current_setting('TimeZone')", &[])
        .await
        .map_err(|e| Error::server("reading TimeZone", e))?
        .get(0);
    let utc = [
        "UTC",
        "Etc/UTC",
        "GMT",
        "Etc/GMT",
        "UCT",
        "Etc/UCT",
        "Universal",
        "Zulu",
        "Etc/Zulu",
        "Etc/Universal",
        "Etc/GMT0",
        "GMT0",
    ];
    Ok(utc
        .iter()
        .any(|z| z.eq_ignore_ascii_case(&zone))
        .then_some(0))
}

/// Adjusts zone-dependent kinds: a fixed session offset is applied by the
/// encoder; any other zone sends the text for the server to interpret.
fn with_zone(ty: &ColumnType, offset: Option<i32>) -> ColumnType {
    let kind = match (&ty.kind, offset) {
        (TypeKind::TimestampTz(_), Some(o)) => TypeKind::TimestampTz(o),
        (TypeKind::TimeTz(_), Some(o)) => TypeKind::TimeTz(o),
        (TypeKind::TimestampTz(_) | TypeKind::TimeTz(_), None) => TypeKind::Other,
        (TypeKind::Array(elem), _) => TypeKind::Array(Box::new(with_zone(elem, offset))),
        (other, _) => other.clone(),
    };
    ColumnType { kind, ..ty.clone() }
}

/// Reads the targets: `(declared name, table written)` pairs.
async fn read_targets(
    client: &Client,
    names: &[(TableName, TableName)],
    offset: Option<i32>,
) -> Result<Vec<Target>> {
    let mut targets = Vec::with_capacity(names.len());
    for (name, write) in names {
        let table = catalog::table(client, write.schema_or_public(), &write.name)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Server, format!("table {write} disappeared")))?;
        let columns: Vec<Column> = table
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| Column {
                ty: with_zone(&c.ty, offset),
                ..c.clone()
            })
            .collect();
        let key = table
            .primary_key
            .iter()
            .filter_map(|k| columns.iter().position(|c| c.name == *k))
            .collect();
        targets.push(Target {
            name: name.clone(),
            write: write.clone(),
            oid: table.oid,
            columns,
            key,
        });
    }
    Ok(targets)
}

/// Applies the options' keys: `Upsert::Append` drops every key, and a key
/// given for a table replaces its primary key.
fn keyed(mut targets: Vec<Target>, options: &Options) -> Result<Vec<Target>> {
    for t in &mut targets {
        if options.upsert == Upsert::Append {
            t.key.clear();
        } else if let Some(names) = options.keys.get(&t.name.to_string()) {
            t.key = names
                .iter()
                .map(|n| {
                    t.columns.iter().position(|c| c.name == *n).ok_or_else(|| {
                        Error::config(format!("key column \"{n}\" is not a column of {}", t.name))
                    })
                })
                .collect::<Result<_>>()?;
        }
    }
    Ok(targets)
}

/// The declared tables as written, and how row table names find them.
#[derive(Debug, Clone)]
struct Targets {
    list: Vec<Target>,
    lookup: HashMap<String, usize>,
}

/// Row table names to targets: `schema.table` always, `table` when only
/// one declared table has that name.
fn name_lookup(targets: &[Target]) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut bare: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        map.insert(t.name.to_string(), i);
        bare.entry(t.name.name.as_str()).or_default().push(i);
    }
    for (name, ids) in bare {
        if let [only] = ids.as_slice() {
            map.entry(name.to_owned()).or_insert(*only);
        }
    }
    map
}

fn data_error(number: usize, table: &TableName, row: usize, detail: String) -> Error {
    Error::new(
        ErrorKind::Data,
        format!("batch {number}, table {table}, row {row}: {detail}"),
    )
}

/// Bytes of encoded rows sent to the server at a time.
const CHUNK: usize = 1 << 20;

/// A table's rows in the batch being staged.
struct Pending {
    /// Encoded tuples not sent yet.
    writer: CopyWriter,
    /// Where its COPY goes (the target, or a TEMP staging table), once
    /// decided.
    into: Option<String>,
    /// Whether it is copied straight into the target.
    direct: bool,
    rows: u64,
    copied: u64,
    /// Hashes of the keys seen, checked for repeats when the COPY ends;
    /// `None` past [`MAX_TRACKED_KEYS`] (repeats are then removed by the
    /// server).
    keys: Option<Vec<u64>>,
    duplicates: bool,
}

/// Key hashes tracked per table and batch (8 bytes each): beyond this the
/// batch is deduplicated on the server instead.
const MAX_TRACKED_KEYS: usize = 8 << 20;

/// The COPY in progress on the batch's connection.
struct OpenCopy {
    table: usize,
    sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
}

/// Streams the batch's rows into staging: each table's rows are encoded
/// into its own buffer and sent in chunks of [`CHUNK`] bytes, keeping one
/// COPY open while rows of the same table follow, so the server loads while
/// the client encodes and memory stays bounded whatever the batch's size.
/// Rows for undeclared tables are counted as skipped.
#[allow(clippy::too_many_arguments)]
async fn stage_rows(
    tx: &Transaction<'_>,
    targets: &[Target],
    lookup: &HashMap<String, usize>,
    rows: Rows,
    number: usize,
    skipped: &mut BTreeMap<String, u64>,
    resume: &mut Option<serde_json::Value>,
) -> Result<Vec<Option<Pending>>> {
    let mut pending: Vec<Option<Pending>> = targets.iter().map(|_| None).collect();
    let mut open: Option<OpenCopy> = None;
    let hasher = std::collections::hash_map::RandomState::new();
    let new_pending = |target: &Target| Pending {
        writer: CopyWriter::tuples_only(),
        into: None,
        direct: target.key.is_empty() && !target.needs_cast(),
        rows: 0,
        copied: 0,
        keys: Some(Vec::new()),
        duplicates: false,
    };
    match rows {
        Rows::Values(rows) => {
            let mut last: Option<(Arc<str>, Option<usize>)> = None;
            for (i, row) in rows.enumerate() {
                let row = row?;
                let found = match &last {
                    Some((name, t)) if Arc::ptr_eq(name, &row.table) => *t,
                    _ => {
                        let t = lookup.get(&*row.table).copied();
                        last = Some((row.table.clone(), t));
                        t
                    }
                };
                let Some(t) = found else {
                    *skipped.entry(row.table.to_string()).or_default() += 1;
                    continue;
                };
                let target = &targets[t];
                if row.values.len() != target.columns.len() {
                    return Err(data_error(
                        number,
                        &target.name,
                        i + 1,
                        format!(
                            "{} values for {} columns ({})",
                            row.values.len(),
                            target.columns.len(),
                            column_names(target)
                        ),
                    ));
                }
                let p = pending[t].get_or_insert_with(|| new_pending(target));
                encode_row(p, target, &row, i + 1, number, &hasher)?;
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
        }
        Rows::Text(mut source) => {
            let Some(&t) = lookup.get(source.table()) else {
                return Err(Error::config(format!(
                    "table {} is not declared",
                    source.table()
                )));
            };
            let target = &targets[t];
            let mut row = TextRow::default();
            while source.next_row(&mut row)? {
                let p = pending[t].get_or_insert_with(|| new_pending(target));
                if let Some(failure) = encode_text_row(p, target, &row, &hasher) {
                    source.reject(&failure)?;
                    continue;
                }
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
            *resume = source.resume();
        }
    }
    for t in 0..targets.len() {
        if let Some(p) = pending[t].as_mut() {
            if let Some(keys) = p.keys.as_mut() {
                keys.sort_unstable();
                p.duplicates |= keys.windows(2).any(|w| w[0] == w[1]);
                p.keys = None;
            }
            flush(tx, targets, &mut pending, &mut open, t, true).await?;
        }
    }
    if let Some(copy) = open.take() {
        let copied = finish_copy(copy.sink, &targets[copy.table]).await?;
        if let Some(p) = pending[copy.table].as_mut() {
            p.copied += copied;
        }
    }
    Ok(pending)
}

fn column_names(target: &Target) -> String {
    target
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encodes one row of text fields (already projected to `target`'s
/// columns) into its table's buffer; on failure the buffer is left as it
/// was and the failure returned.
fn encode_text_row<'a>(
    p: &mut Pending,
    target: &'a Target,
    row: &'a TextRow,
    hasher: &std::collections::hash_map::RandomState,
) -> Option<RowFailure<'a>> {
    let mark = p.writer.len();
    p.writer
        .start_tuple(u16::try_from(target.columns.len()).unwrap_or(u16::MAX));
    let mut key_hash = (!target.key.is_empty()).then(|| hasher.build_hasher());
    for (c, column) in target.columns.iter().enumerate() {
        let value = row.get(c);
        let before = p.writer.len();
        let failure = if value.is_none() && column.not_null {
            Some("NULL in a NOT NULL column".to_owned())
        } else {
            p.writer
                .text(value, &column.ty)
                .err()
                .map(|e| e.to_string())
        };
        if let Some(reason) = failure {
            p.writer.truncate(mark);
            return Some(RowFailure {
                field: c,
                column: &column.name,
                value,
                reason,
            });
        }
        if let Some(h) = key_hash.as_mut() {
            if target.key.contains(&c) {
                h.write(p.writer.bytes_since(before));
            }
        }
    }
    track_key(p, key_hash.map(|h| h.finish()));
    None
}

/// Notes a row's key hash (for the repeated-key check) and counts the row.
fn track_key(p: &mut Pending, key_hash: Option<u64>) {
    if let Some(h) = key_hash {
        match p.keys.as_mut() {
            Some(keys) if keys.len() < MAX_TRACKED_KEYS => keys.push(h),
            _ => {
                p.keys = None;
                p.duplicates = true;
            }
        }
    }
    p.rows += 1;
}

/// Encodes one row into its table's buffer, noting repeated keys.
fn encode_row(
    p: &mut Pending,
    target: &Target,
    row: &Row,
    row_number: usize,
    number: usize,
    hasher: &std::collections::hash_map::RandomState,
) -> Result<()> {
    let mark = p.writer.len();
    p.writer
        .start_tuple(u16::try_from(target.columns.len()).unwrap_or(u16::MAX));
    let mut key_hash = (!target.key.is_empty()).then(|| hasher.build_hasher());
    for (c, (value, column)) in row.values.iter().zip(&target.columns).enumerate() {
        let before = p.writer.len();
        let failure = if matches!(value, Value::Null) && column.not_null {
            Some("NULL in a NOT NULL column".to_owned())
        } else {
            p.writer
                .value(value, &column.ty)
                .err()
                .map(|e| match value {
                    Value::Text(t) => format!("value \"{}\": {e}", shorten(t)),
                    _ => e.to_string(),
                })
        };
        if let Some(why) = failure {
            p.writer.truncate(mark);
            return Err(data_error(
                number,
                &target.name,
                row_number,
                format!("column {}: {why}", column.name),
            ));
        }
        if let Some(h) = key_hash.as_mut() {
            if target.key.contains(&c) {
                h.write(p.writer.bytes_since(before));
            }
        }
    }
    track_key(p, key_hash.map(|h| h.finish()));
    Ok(())
}

/// Sends table `t`'s buffered rows, opening its COPY (and creating its
/// staging table) first if needed; with `last`, ends its COPY.
async fn flush(
    tx: &Transaction<'_>,
    targets: &[Target],
    pending: &mut [Option<Pending>],
    open: &mut Option<OpenCopy>,
    t: usize,
    last: bool,
) -> Result<()> {
    if open.as_ref().is_some_and(|o| o.table != t) {
        if let Some(copy) = open.take() {
            let copied = finish_copy(copy.sink, &targets[copy.table]).await?;
            if let Some(p) = pending[copy.table].as_mut() {
                p.copied += copied;
            }
        }
    }
    let target = &targets[t];
    let Some(p) = pending[t].as_mut() else {
        return Ok(());
    };
    if open.is_none() {
        let into = match &p.into {
            Some(into) => into.clone(),
            None => {
                let into = if p.direct {
                    target.write.quoted()
                } else {
                    let stage = quote_ident(&format!("pgbulk_stage_{t}"));
                    create_stage(tx, target, &stage).await?;
                    stage
                };
                p.into = Some(into.clone());
                into
            }
        };
        let statement = format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary)",
            column_list(target)
        );
        let sink = tx
            .copy_in::<_, Bytes>(&statement)
            .await
            .map_err(|e| with_table(Error::server("starting COPY", e), &target.name.to_string()))?;
        let mut sink = Box::pin(sink);
        sink.send(Bytes::from_static(crate::codec::COPY_HEADER))
            .await
            .map_err(|e| Error::server("COPY", e))?;
        *open = Some(OpenCopy { table: t, sink });
    }
    if let Some(copy) = open.as_mut() {
        if !p.writer.is_empty_buffer() {
            // Copy the chunk out and keep the writer's buffer: a fixed-size
            // allocation per chunk instead of a growing buffer each time
            // keeps the process's memory flat however long the load runs.
            let chunk = Bytes::copy_from_slice(p.writer.bytes_since(0));
            p.writer.truncate(0);
            copy.sink
                .send(chunk)
                .await
                .map_err(|e| with_table(Error::server("COPY", e), &target.name.to_string()))?;
        }
    }
    if last {
        if let Some(copy) = open.take() {
            p.copied += finish_copy(copy.sink, target).await?;
        }
    }
    Ok(())
}

/// Creates the TEMP staging table of `target` (dropped at commit); columns
/// the server must cast arrive as `text`.
async fn create_stage(tx: &Transaction<'_>, target: &Target, stage: &str) -> Result<()> {
    let cols: Vec<String> = target
        .columns
        .iter()
        .map(|c| {
            let ty = if c.ty.needs_cast() {
                "text"
            } else {
                c.ty.name.as_str()
            };
            format!("{} {ty}", quote_ident(&c.name))
        })
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {stage} ({}) ON COMMIT DROP",
        cols.join(", ")
    ))
    .await
    .map_err(|e| {
        with_table(
            Error::server("creating the staging table", e),
            &target.name.to_string(),
        )
    })
}

/// Ends a COPY (trailer, then `CopyDone`) and returns the rows copied.
async fn finish_copy(
    mut sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    target: &Target,
) -> Result<u64> {
    sink.send(Bytes::from_static(crate::codec::COPY_TRAILER))
        .await
        .map_err(|e| with_table(Error::server("COPY", e), &target.name.to_string()))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| with_table(Error::server("COPY", e), &target.name.to_string()))
}

/// Stages, merges and commits one batch with its watermark.
async fn load_batch(
    client: &mut Client,
    targets: &Targets,
    batch: Batch,
    ctx: &BatchContext<'_>,
    report: &mut Report,
) -> Result<(BTreeMap<String, Counts>, u64, Committed)> {
    let (number, first, options) = (ctx.number, ctx.first, ctx.options);
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::server("BEGIN", e))?;
    // 0. Tables being rebuilt: their new tables receive the rows.
    let mut news = Vec::new();
    let mut local;
    let targets = if ctx.rebuild.is_empty() {
        targets
    } else {
        local = targets.clone();
        for (name, _, declared) in &ctx.rebuild {
            let new = rebuild::create_new(&tx, name, declared).await?;
            let fresh = read_targets(
                tx.client(),
                &[(name.clone(), new.name.clone())],
                ctx.zone_offset,
            )
            .await?;
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
    // Text rows fill only the columns the source names.
    let projected;
    let targets = match &batch.rows {
        Rows::Text(source) => {
            let t = *lookup.get(source.table()).ok_or_else(|| {
                Error::config(format!("table {} is not declared", source.table()))
            })?;
            let mut list = targets.to_vec();
            list[t] = list[t].project(source.columns())?;
            projected = list;
            projected.as_slice()
        }
        Rows::Values(_) => targets,
    };
    let mut resume = batch.resume;
    let staged = stage_rows(
        &tx,
        targets,
        lookup,
        batch.rows,
        number,
        &mut skipped_by_table,
        &mut resume,
    )
    .await
    .map_err(|e| match e.kind() {
        ErrorKind::Data => e,
        _ => Error::new(e.kind(), format!("batch {number}: {}", e.message())).with_source(e),
    })?;
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
        if !(number == 1 && options.mode == Mode::DeleteThenUpsert) {
            rebuild::copy_rows(&tx, new, live, declared).await?;
        }
    }
    let work: Vec<(&Target, String, bool, u64, bool)> = targets
        .iter()
        .zip(staged)
        .filter_map(|(target, p)| {
            let p = p?;
            Some((target, p.into?, p.direct, p.copied, p.duplicates))
        })
        .collect();
    // 2. Serialise with other ingests of the same tables, in oid order.
    let mut keys: Vec<String> = work.iter().map(|w| w.0.name.to_string()).collect();
    if number == 1 && options.mode == Mode::DeleteThenUpsert || !ctx.rebuild.is_empty() {
        keys = targets.iter().map(|t| t.name.to_string()).collect();
    }
    keys.sort();
    keys.dedup();
    for key in &keys {
        tx.execute(
            "SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))",
            &[&LOCK_NAMESPACE, key],
        )
        .await
        .map_err(|e| Error::server("taking the ingest lock", e))?;
    }
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    // 3. Delete (first batch of delete-then-upsert), then merge.
    if number == 1 && options.mode == Mode::DeleteThenUpsert {
        for target in targets {
            let deleted = tx
                .execute(&format!("DELETE FROM {}", target.write.quoted()), &[])
                .await
                .map_err(|e| {
                    with_table(
                        Error::server("DELETE", e),
                        &context(&target.name, "deleting"),
                    )
                })?;
            counts.entry(target.name.to_string()).or_default().deleted = deleted;
        }
    }
    for (target, stage, direct, copied, duplicates) in work {
        let c = counts.entry(target.name.to_string()).or_default();
        if direct {
            c.inserted += copied;
            continue;
        }
        if target.key.is_empty() {
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO {} ({}) SELECT {} FROM {stage}",
                        target.write.quoted(),
                        column_list(target),
                        cast_list(target, "")
                    ),
                    &[],
                )
                .await
                .map_err(|e| {
                    with_table(
                        Error::server("INSERT", e),
                        &context(&target.name, "appending"),
                    )
                })?;
            c.inserted += inserted;
            continue;
        }
        let upsert = |e| {
            with_table(
                Error::server("upsert", e),
                &context(&target.name, "upserting"),
            )
        };
        let (inserted, updated) = if ctx.merge {
            if let Some(work_mem) = &options.merge_work_mem {
                tx.batch_execute(&format!("SET LOCAL work_mem = {}", quote_literal(work_mem)))
                    .await
                    .map_err(|e| Error::server("SET work_mem", e))?;
            }
            let before = xact_stats(&tx, target.oid).await?;
            tx.execute(&merge_statement(target, &stage, duplicates), &[])
                .await
                .map_err(upsert)?;
            let after = xact_stats(&tx, target.oid).await?;
            (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            )
        } else {
            let row = tx
                .query_one(&on_conflict_statement(target, &stage, duplicates), &[])
                .await
                .map_err(upsert)?;
            (
                u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            )
        };
        c.inserted += inserted;
        c.updated += updated;
        c.unchanged += copied.saturating_sub(inserted + updated);
    }
    // 4. Rebuilt tables take their place; watermark, hook, commit.
    for new in &news {
        rebuild::swap(&tx, &options.lock_policy, new).await?;
    }
    let high_watermark = match batch.high_watermark {
        BatchWatermark::Value(v) => v,
        BatchWatermark::Computed(f) => f(),
    };
    if ctx.write_watermark {
        let first_oid = targets.iter().find(|t| t.name == *first).map(|t| t.oid);
        watermark::write(
            &tx,
            first,
            &watermark::key(first, options.stream.as_deref()),
            first_oid,
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
    let committed = Committed {
        high_watermark,
        metadata: batch.metadata,
        resume,
    };
    Ok((counts, skipped, committed))
}

/// Prefixes an error's message with where it happened, keeping its kind
/// and source (the server's detail, hint and constraint stay reachable).
fn with_table(error: Error, context: &str) -> Error {
    let constraint = error
        .db_error()
        .and_then(|db| db.constraint().map(|c| format!(" (constraint {c})")))
        .unwrap_or_default();
    let message = format!("{context}: {}{constraint}", error.message());
    let kind = error.kind();
    Error::new(kind, message).with_source(error)
}

fn column_list(target: &Target) -> String {
    target
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The staged columns, cast to their real types where they travel as text.
fn cast_list(target: &Target, prefix: &str) -> String {
    target
        .columns
        .iter()
        .map(|c| {
            let col = format!("{prefix}{}", quote_ident(&c.name));
            if c.ty.needs_cast() {
                format!("{col}::{}", c.ty.name)
            } else {
                col
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether values of this type compare with `IS DISTINCT FROM` directly
/// (`json` and types sent as text have no guaranteed equality operator, so
/// they compare as text).
fn compares_natively(ty: &ColumnType) -> bool {
    match &ty.kind {
        TypeKind::Json | TypeKind::Other => false,
        TypeKind::Array(elem) => compares_natively(elem),
        _ => true,
    }
}

/// Rows inserted and updated in `oid` by this transaction so far.
async fn xact_stats(tx: &Transaction<'_>, oid: u32) -> Result<(u64, u64)> {
    let row = tx
        .query_one(
            "SELECT pg_catalog.pg_stat_get_xact_tuples_inserted($1), pg_catalog.pg_stat_get_xact_tuples_updated($1)",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading row counts", e))?;
    Ok((
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
    ))
}

/// The columns outside the primary key.
fn non_key_columns(target: &Target) -> Vec<&Column> {
    target
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !target.key.contains(i))
        .map(|(_, c)| c)
        .collect()
}

/// `expr` of each column, as text where its type has no equality operator,
/// joined for a row comparison.
fn comparable_list(columns: &[&Column], expr: impl Fn(&Column) -> String) -> String {
    columns
        .iter()
        .map(|c| {
            let v = expr(c);
            if compares_natively(&c.ty) {
                v
            } else {
                format!("({v})::text")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The staged rows, one per key: the last in arrival order when the batch
/// repeats a key (sorted only then).
fn merge_source(target: &Target, stage: &str, duplicates: bool) -> String {
    if duplicates {
        let key = key_list(target);
        format!("(SELECT DISTINCT ON ({key}) * FROM {stage} ORDER BY {key}, ctid DESC) s")
    } else {
        format!("{stage} s")
    }
}

fn key_list(target: &Target) -> String {
    target
        .key
        .iter()
        .map(|&k| quote_ident(&target.columns[k].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A staged column, cast to its real type when it travels as text.
fn staged(column: &Column) -> String {
    let col = format!("s.{}", quote_ident(&column.name));
    if column.ty.needs_cast() {
        format!("{col}::{}", column.ty.name)
    } else {
        col
    }
}

/// The upsert as `MERGE` (PostgreSQL 15+): one hash join of the batch with
/// the table; a matched row is updated only when a non-key column differs,
/// so unchanged rows are neither rewritten nor locked (no WAL).
fn merge_statement(target: &Target, stage: &str, duplicates: bool) -> String {
    let t = target.write.quoted();
    let on: Vec<String> = target
        .key
        .iter()
        .map(|&k| {
            let c = &target.columns[k];
            format!("t.{} = {}", quote_ident(&c.name), staged(c))
        })
        .collect();
    let others = non_key_columns(target);
    let matched = if others.is_empty() {
        String::new()
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|c| format!("{} = {}", quote_ident(&c.name), staged(c)))
            .collect();
        format!(
            " WHEN MATCHED AND ({}) IS DISTINCT FROM ({}) THEN UPDATE SET {}",
            comparable_list(&others, |c| format!("t.{}", quote_ident(&c.name))),
            comparable_list(&others, staged),
            set.join(", ")
        )
    };
    let values: Vec<String> = target.columns.iter().map(staged).collect();
    format!(
        "MERGE INTO {t} AS t USING {} ON {}{matched} WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        merge_source(target, stage, duplicates),
        on.join(" AND "),
        column_list(target),
        values.join(", ")
    )
}

/// The upsert before PostgreSQL 15: `INSERT ... ON CONFLICT DO UPDATE`,
/// guarded so unchanged rows are not rewritten, counting inserts and
/// updates from `RETURNING`.
fn on_conflict_statement(target: &Target, stage: &str, duplicates: bool) -> String {
    let t = target.write.quoted();
    let key = key_list(target);
    let source = merge_source(target, stage, duplicates);
    let others = non_key_columns(target);
    let on_conflict = if others.is_empty() {
        format!("ON CONFLICT ({key}) DO NOTHING")
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
            .collect();
        format!(
            "ON CONFLICT ({key}) DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            set.join(", "),
            comparable_list(&others, |c| format!("t.{}", quote_ident(&c.name))),
            comparable_list(&others, |c| format!("EXCLUDED.{}", quote_ident(&c.name)))
        )
    };
    format!(
        "WITH ins AS (INSERT INTO {t} AS t ({cols}) SELECT {casts} FROM {source} {on_conflict} \
         RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM ins",
        cols = column_list(target),
        casts = cast_list(target, "s.")
    )
}
