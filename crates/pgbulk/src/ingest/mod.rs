//! The ingest engine: batches of rows into declared tables.
//!
//! [`ingest`] creates what is missing (schema, tables, the watermark table)
//! at once, migrates existing tables to their declaration when the first
//! batch arrives (a changed declaration with zero batches migrates
//! nothing), and commits each batch in one transaction together with its
//! high watermark:
//!
//! 1. rows are encoded to binary COPY and copied into staging tables
//!    (TEMP ones; a large stage of a table with a primary key moves to an
//!    UNLOGGED table created and dropped in the batch's transaction, which
//!    parallel workers can read); no strong lock is held while the client
//!    streams;
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

mod batch;
mod indexes;
mod key_hashes;
mod merge;
mod parallel;
mod range;
mod rewrite;
mod stage;
mod stages;
mod target;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::{Client, Transaction};
use tracing::info;

use crate::codec::Value;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{self, LockPolicy};
use crate::plan::{self, Phase, Plan, Step};
use crate::rebuild::{self, NewTable};
use crate::savepoint::Savepoint;
use crate::schema::TableFacts;
use crate::schema::{Declaration, TableName, dollar_quote};
use crate::session::{InputStyle, Session};
use crate::watermark;
use batch::load_batch;
pub use parallel::{ingest_parallel, unsuited as parallel_unsuited};
pub(crate) use rewrite::{pays as rewrite_pays, rewritable};
pub use stages::merge_stages;
use target::{Targets, keyed, name_lookup, read_targets};

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

/// Which row wins when rows of one batch repeat a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// The last row in arrival order (as repeated upserts would).
    #[default]
    Last,
    /// The first row.
    First,
    /// None: the batch fails, naming a repeated key.
    Error,
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
    /// Computed just before commit; an error rolls the batch back and ends
    /// the ingest.
    Computed(Box<dyn FnOnce() -> Result<Option<serde_json::Value>> + Send + Sync>),
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
    /// A binary COPY stream for one table, passed through undecoded.
    Binary(Box<dyn BinaryRows>),
}

/// The rows of one table as a `COPY ... TO STDOUT (FORMAT binary)` stream
/// (header, tuples, trailer) in chunks of any size, passed through without
/// decoding a value: the fields of each tuple are [`BinaryRows::columns`]
/// in that order, each of exactly the column's type (a built-in type the
/// engine encodes itself: not one it leaves to the server to cast). Rows
/// are staged and merged as others are, but repeated keys are found by the
/// server, and a rejected row cannot be located.
pub trait BinaryRows: Send {
    /// The declared table the rows are for.
    fn table(&self) -> &str;
    /// The columns the tuples' fields fill, in order.
    fn columns(&self) -> &[String];
    /// The next chunks of the stream (those that arrived together), or
    /// `None` after its last one.
    fn next_chunks(&mut self) -> NextChunks<'_>;
    /// Whether the source guarantees that no two rows share the table's
    /// key (they come from a table with that primary key): the server's
    /// search for repeated keys is then skipped (a repeat would still fail
    /// the batch on the key's unique index).
    fn keys_unique(&self) -> bool {
        false
    }
}

/// What [`BinaryRows::next_chunks`] returns.
pub type NextChunks<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Vec<bytes::Bytes>>>> + Send + 'a>>;

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Values(_) => f.write_str("Rows::Values"),
            Self::Text(t) => write!(f, "Rows::Text({})", t.table()),
            Self::Binary(b) => write!(f, "Rows::Binary({})", b.table()),
        }
    }
}

impl Rows {
    /// For rows of one table that fill only some of its columns (text and
    /// binary sources): the table and those columns, in order.
    fn one_table(&self) -> Option<(&str, &[String])> {
        match self {
            Self::Values(_) => None,
            Self::Text(t) => Some((t.table(), t.columns())),
            Self::Binary(b) => Some((b.table(), b.columns())),
        }
    }

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
    /// The types of [`TextRows::columns`], told once before the first row
    /// is read, so the source may give fields already encoded for them
    /// ([`TextRow::push_encoded`]).
    fn bind(&mut self, _types: &[crate::codec::ColumnType]) {}
    /// Reads the next row into `row`; `false` at the end of the batch.
    fn next_row(&mut self, row: &mut TextRow) -> Result<bool>;
    /// Encodes the batch's next rows straight into `out` as binary COPY
    /// tuples of `columns` (the table's columns, in the order of
    /// [`TextRows::columns`]) while `out` is shorter than `until`: exactly
    /// the tuples the engine writes for the rows [`TextRows::next_row`]
    /// would read. Returns how many; a row it cannot encode so (the
    /// default: any) is left for `next_row`. Called only for tables with
    /// no key and no value the server converts.
    fn encode_rows(
        &mut self,
        _columns: &[crate::catalog::Column],
        _out: &mut Vec<u8>,
        _until: usize,
    ) -> Result<u64> {
        Ok(0)
    }
    /// A field of the row just read does not convert. `Ok(())` rejects the
    /// row (it is left out and the batch goes on); an error fails the batch.
    fn reject(&mut self, failure: &RowFailure<'_>) -> Result<()>;
    /// Where the source stands once the batch's rows are read, stored with
    /// the watermark (resumable sources).
    fn resume(&self) -> Option<serde_json::Value> {
        None
    }
    /// Where the row just read came from (`file:line`), kept with a row
    /// whose value the server must convert.
    fn location(&self) -> String {
        String::new()
    }
    /// The row just read as it was in the input, when the source keeps it
    /// (for reject files).
    fn raw(&self) -> Option<Vec<u8>> {
        None
    }
    /// The server rejected a value of a staged row: `location` and `raw`
    /// are what [`TextRows::location`] and [`TextRows::raw`] said of it.
    /// `Ok(())` leaves the row out (the batch goes on); an error fails the
    /// batch.
    fn reject_staged(&mut self, rejected: &StagedRejection<'_>) -> Result<()> {
        let at = if rejected.location.is_empty() {
            String::new()
        } else {
            format!("{}: ", rejected.location)
        };
        Err(Error::new(
            ErrorKind::Data,
            format!("{at}column \"{}\": {}", rejected.column, rejected.reason),
        )
        .in_table(self.table())
        .for_column(rejected.column)
        .with_value(Some(rejected.value)))
    }
}

/// A staged row the server rejected a value of.
#[derive(Debug)]
pub struct StagedRejection<'a> {
    /// Where it came from (`file:line`).
    pub location: &'a str,
    /// The row as it was in the input, when kept.
    pub raw: Option<&'a [u8]>,
    /// The column.
    pub column: &'a str,
    /// The value.
    pub value: &'a str,
    /// The server's message.
    pub reason: &'a str,
    /// The server's error, when it refused the row as a whole (a
    /// constraint): its SQLSTATE, detail and constraint.
    pub server: Option<&'a tokio_postgres::error::DbError>,
}

/// One row of text fields; `None` is NULL. A source that holds typed
/// values may give a field already in the column type's binary form
/// ([`TextRow::push_encoded`]).
#[derive(Debug, Default)]
pub struct TextRow {
    data: String,
    fields: Vec<Option<(usize, usize)>>,
    /// Binary bodies of the encoded fields.
    encoded: Vec<u8>,
    /// Per field: 0 for text (or NULL), else the type oid of the encoded
    /// field's binary form. Empty while no field is encoded.
    forms: Vec<u32>,
}

/// The largest field body a binary COPY tuple holds (PostgreSQL's limit
/// on a value is lower still).
const MAX_FIELD: usize = i32::MAX as usize;

/// A field of a [`TextRow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldRef<'a> {
    /// Text, or `None` for NULL.
    Text(Option<&'a str>),
    /// The binary form of a value of the type with this oid.
    Encoded(u32, &'a [u8]),
}

impl TextRow {
    /// Empties the row for the next one.
    pub fn clear(&mut self) {
        self.data.clear();
        self.fields.clear();
        self.encoded.clear();
        self.forms.clear();
    }

    /// Appends a field.
    pub fn push(&mut self, field: Option<&str>) {
        if !self.forms.is_empty() {
            self.forms.push(0);
        }
        self.fields.push(field.map(|f| {
            let start = self.data.len();
            self.data.push_str(f);
            (start, self.data.len())
        }));
    }

    /// Appends a field in the binary form of the type `oid` (a built-in
    /// type, never 0), written by `body`: exactly what the type's receive
    /// function reads as the value the server's input function makes of
    /// the value's text. When `body` returns `false` nothing is appended
    /// (the caller then pushes the text).
    pub fn push_encoded(&mut self, oid: u32, body: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let start = self.encoded.len();
        if oid == 0 || !body(&mut self.encoded) || self.encoded.len() - start > MAX_FIELD {
            self.encoded.truncate(start);
            return false;
        }
        self.forms.resize(self.fields.len(), 0);
        self.forms.push(oid);
        self.fields.push(Some((start, self.encoded.len())));
        true
    }

    /// Makes the row `data` with its fields at `fields` (byte ranges of
    /// `data`, `None` for NULL): the fields move in without a copy.
    /// Returns the row's previous buffer (for the caller to reuse), or
    /// gives `data` back when a range is not a string slice of it.
    pub fn set(
        &mut self,
        data: String,
        fields: &[Option<(usize, usize)>],
    ) -> std::result::Result<Vec<u8>, Vec<u8>> {
        let fits = fields.iter().flatten().all(|&(a, b)| {
            a <= b && b <= data.len() && data.is_char_boundary(a) && data.is_char_boundary(b)
        });
        if !fits {
            return Err(data.into_bytes());
        }
        self.fields.clear();
        self.fields.extend_from_slice(fields);
        self.encoded.clear();
        self.forms.clear();
        let mut previous = std::mem::replace(&mut self.data, data).into_bytes();
        previous.clear();
        Ok(previous)
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The text of field `i` (`None`: NULL, or a field given encoded).
    pub fn get(&self, i: usize) -> Option<&str> {
        match self.field(i) {
            FieldRef::Text(text) => text,
            FieldRef::Encoded(..) => None,
        }
    }

    /// Field `i`.
    pub(crate) fn field(&self, i: usize) -> FieldRef<'_> {
        let span = self.fields.get(i).copied().flatten();
        match (span, self.forms.get(i).copied().unwrap_or(0)) {
            (None, _) => FieldRef::Text(None),
            (Some((a, b)), 0) => FieldRef::Text(Some(&self.data[a..b])),
            (Some((a, b)), oid) => FieldRef::Encoded(oid, &self.encoded[a..b]),
        }
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
#[derive(Debug, Clone, Default)]
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
    /// Which row wins when rows of a batch repeat a key.
    pub on_duplicate: OnDuplicate,
    /// Rows the server refuses (a constraint, a value) are found and handed
    /// to the source's [`TextRows::reject_staged`] (which may still fail the
    /// batch) instead of failing the batch at once. Every row is staged
    /// with its location then, and a failing merge is bisected: slower on
    /// bad data, unchanged on good data.
    pub reject_rows: bool,
    /// Called after each batch commits (progress, interrupt summaries).
    pub on_commit: Option<OnCommit>,
    /// Set to the number of the batch being merged while its rows are
    /// merged and committed (the client waits on the server then), 0
    /// otherwise: for progress displays.
    pub merging: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// For one of several parallel streams into the same tables: the
    /// stream's name, so each keeps its own watermark row
    /// (`<first table>#<stream>`).
    pub stream: Option<String>,
    /// Create missing tables (and the schema and watermark table) in the
    /// first batch's transaction instead of at once: a run that fails
    /// before its first commit leaves nothing behind, and zero batches
    /// create nothing. Not with [`Mode::ReplaceAtomic`], which creates at
    /// once.
    pub create_with_first_batch: bool,
    /// With `create_with_first_batch`: when no batch comes, the missing
    /// tables are still created, in a transaction of their own at the end
    /// (pg-bulk-ingest's behaviour) instead of not at all.
    pub create_without_batches: bool,
    /// When the one table of an upsert or append is empty and has indexes
    /// (`crate::rebuild::empty_and_indexed`), the first batch
    /// fills a new copy of it, rows frozen and indexes built once they are
    /// in, and swaps it in at its commit (grants, views and the rest kept);
    /// if the table got rows meanwhile (another run loading it at once
    /// swapped its copy in first), or the swap cannot have its locks within
    /// a few seconds, the copy's rows are merged into the table instead.
    /// For runs on one connection: the streams of one run would each make
    /// a copy, and all but one be merged.
    pub fill_empty: bool,
    /// [`merge_stages`] rewrites a table whose rows the stages mostly
    /// change (a new copy with the staged rows laid over the table's,
    /// swapped in) instead of merging into it (default). Like every table
    /// swap (and PostgreSQL's own `TRUNCATE`, `CLUSTER` and rewriting
    /// `ALTER TABLE`), not MVCC-safe: a `REPEATABLE READ` or `SERIALIZABLE`
    /// transaction whose snapshot predates the commit and that first reads
    /// the table after it finds it empty. Off: always merged.
    pub rewrite: bool,
    /// With [`Options::rewrite`], a batch upserting into a table holding
    /// rows rewrites it too when its staged rows change most of them (a
    /// batch of at least 100,000 rows, with no repeated key and no value
    /// left to the server to convert; see [`merge_stages`] for the rest).
    /// For runs on one connection per table (default on): off where
    /// several connections of one run write into the same table at once.
    pub rewrite_batches: bool,
    /// Batches this run already committed through an earlier call (a
    /// load's first rows, upserted before it chose how to go on): this
    /// call's batches are numbered from `batch_offset + 1` in logs,
    /// reports, hooks and errors. Default 0.
    pub batch_offset: usize,
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
            on_duplicate: OnDuplicate::Last,
            reject_rows: false,
            on_commit: None,
            merging: None,
            stream: None,
            create_with_first_batch: false,
            create_without_batches: false,
            fill_empty: false,
            rewrite: true,
            rewrite_batches: true,
            batch_offset: 0,
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
            .field("on_duplicate", &self.on_duplicate)
            .field("on_commit", &self.on_commit.is_some())
            .field("stream", &self.stream)
            .field("create_with_first_batch", &self.create_with_first_batch)
            .field("create_without_batches", &self.create_without_batches)
            .field("fill_empty", &self.fill_empty)
            .field("rewrite", &self.rewrite)
            .field("rewrite_batches", &self.rewrite_batches)
            .field("batch_offset", &self.batch_offset)
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
    /// Rows whose key existed with the same values (not rewritten).
    pub unchanged: u64,
    /// Rows deleted (delete-then-upsert, first batch).
    pub deleted: u64,
    /// Rows left out because another row of the same batch had the same
    /// key (see [`OnDuplicate`]).
    pub repeated: u64,
}

impl Counts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Counts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
        self.repeated += other.repeated;
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

impl Report {
    /// Adds another ingest's report (a parallel stream of the same load)
    /// to this one.
    pub fn merge(&mut self, other: Report) {
        for (table, counts) in &other.tables {
            self.tables.entry(table.clone()).or_default().add(counts);
        }
        for (table, n) in other.skipped {
            *self.skipped.entry(table).or_default() += n;
        }
        self.batches.extend(other.batches);
        // Streams of one load share the migrations settled before them.
        for m in other.migrations {
            if !self.migrations.contains(&m) {
                self.migrations.push(m);
            }
        }
        self.seconds = self.seconds.max(other.seconds);
    }

    /// The counts of every table, summed.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.tables.values() {
            total.add(counts);
        }
        total
    }
}

/// What an ingest knows before its first batch: the plan (declared and
/// live facts, the steps to create and migrate), the server's version and
/// the session's time zone. Read once with [`prepare`]; callers take the
/// declared facts from it instead of resolving the declaration again.
#[derive(Debug, Clone)]
pub struct Prepared {
    plan: Plan,
    first: TableName,
    session: Session,
    /// Migrations already applied by [`settle`].
    done: Vec<String>,
}

impl Prepared {
    /// The declared facts of `table` (one of the declared tables).
    pub fn facts(&self, table: &TableName) -> Option<&TableFacts> {
        self.plan
            .declared
            .iter()
            .find(|(n, _)| n == table)
            .map(|(_, f)| f)
    }

    /// The plan: what creating and migrating the tables takes.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `server_version_num`.
    pub fn server_version(&self) -> i32 {
        self.session.server_version
    }

    /// The facts of the session it was prepared on.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether `table` did not exist when this was prepared.
    fn was_missing(&self, table: &TableName) -> bool {
        self.plan
            .live
            .iter()
            .any(|(n, oid)| n == table && oid.is_none())
    }

    fn names(&self) -> Vec<TableName> {
        self.plan.live.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The steps creating missing tables, and the others.
    fn steps(&self) -> (Vec<Step>, Vec<Step>) {
        self.plan.steps.iter().cloned().partition(|s| {
            self.plan
                .live
                .iter()
                .any(|(n, oid)| *n == s.table && oid.is_none())
        })
    }
}

pub use crate::watermark::StoredResume;

/// Where the source of `stream`'s ingest into `first` (the first declared
/// table) stood when its last batch committed, as the source said through
/// [`Batch::resume`]; `None` when nothing was stored, or it was stored for
/// a table of that name that was dropped since.
pub async fn stored_resume(
    client: &Client,
    first: &TableName,
    stream: Option<&str>,
) -> Result<Option<StoredResume>> {
    watermark::read_resume(client, first, &watermark::key(first, stream)).await
}

/// Plans an ingest of `declaration` (nothing is changed): refuses a server
/// older than PostgreSQL 13, resolves the declaration, reads the live tables
/// and the session's time zone.
pub async fn prepare(client: &mut Client, declaration: &Declaration) -> Result<Prepared> {
    let session = Session::read(client).await?;
    prepare_in(client, session, declaration).await
}

/// [`prepare`] on a connection whose [`Session`] was read already.
pub async fn prepare_in(
    client: &mut Client,
    session: Session,
    declaration: &Declaration,
) -> Result<Prepared> {
    supported(session.server_version)?;
    let plan = plan::plan_in(client, &session, declaration).await?;
    let first = plan
        .live
        .first()
        .map(|(n, _)| n.clone())
        .ok_or_else(|| Error::config("nothing declared"))?;
    Ok(Prepared {
        plan,
        first,
        session,
        done: Vec::new(),
    })
}

/// Creates and migrates what `prepared` plans, now, without a batch (and
/// without a watermark row): for several connections loading the same
/// tables at once, which then each run [`ingest_prepared`] on the settled
/// plan. Not for [`Mode::ReplaceAtomic`].
pub async fn settle(
    client: &mut Client,
    prepared: Prepared,
    options: &Options,
) -> Result<Prepared> {
    if options.mode == Mode::ReplaceAtomic {
        return Err(Error::config(
            "replace-atomic loads on one connection: nothing to settle",
        ));
    }
    let options = Options {
        create_with_first_batch: false,
        before_visible: None,
        on_commit: None,
        ..options.clone()
    };
    let mut report = Report::default();
    run(
        client,
        &prepared,
        vec![Ok(Batch::new(None, Vec::new()))],
        &options,
        Duties::watermark(false),
        &mut report,
    )
    .await?;
    let mut done = prepared.done;
    done.extend(report.migrations);
    Ok(Prepared {
        plan: Plan {
            steps: Vec::new(),
            rebuilds: Vec::new(),
            ..prepared.plan
        },
        done,
        ..prepared
    })
}

/// Runs an ingest: see the module documentation. `source` is called once
/// with the high watermark chosen by `options` and yields batches; when it
/// yields an error, the batches before stay committed and the error is
/// returned. [`prepare`] then [`ingest_prepared`].
pub async fn ingest<I>(
    client: &mut Client,
    declaration: &Declaration,
    source: impl FnOnce(Option<serde_json::Value>) -> I,
    options: &Options,
) -> Result<Report>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let prepared = prepare(client, declaration).await?;
    ingest_prepared(client, &prepared, source, options).await
}

/// A hook run on a thread of its own (it may block) inside each batch's
/// transaction, before it commits, while a second client may join the
/// session through `door` (`host=<door> port=<port>` for libpq; see
/// [`crate::relay`]): that client sees the batch's rows. An error rolls
/// the batch back.
pub trait SharedHook: Send + Sync {
    /// Runs the hook.
    fn call(&self, door: &std::path::Path, port: u16, batch: &BatchInfo) -> Result<()>;
}

/// [`SharedHook`] as the engine's hook: the door is open while it runs.
struct DoorHook {
    door: Arc<crate::relay::Door>,
    hook: Arc<dyn SharedHook>,
}

impl BeforeVisible for DoorHook {
    fn call<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        batch: &'a BatchInfo,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            self.door.open().await?;
            let hook = self.hook.clone();
            let dir = self.door.socket_dir().to_path_buf();
            let info = batch.clone();
            let ran = tokio::task::spawn_blocking(move || {
                hook.call(&dir, crate::relay::DOOR_PORT, &info)
            })
            .await;
            let closed = self.door.close().await;
            ran.map_err(|e| Error::new(ErrorKind::Data, format!("the hook did not finish: {e}")))??;
            closed
        })
    }
}

/// [`ingest`] on a session of its own to `params`, registered with
/// `progress` so that [`crate::load::Progress::cancel`] stops its
/// statement. With `shared`, the session runs through a relay and
/// `shared` is the hook before each batch becomes visible (replacing
/// `options.before_visible`).
pub async fn ingest_at<I>(
    params: &crate::conninfo::ConnParams,
    declaration: &Declaration,
    source: impl FnOnce(Option<serde_json::Value>) -> I,
    options: &Options,
    progress: &crate::load::Progress,
    shared: Option<Arc<dyn SharedHook>>,
) -> Result<Report>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let Some(hook) = shared else {
        let mut client = crate::connect::connect(params).await?.client;
        progress.register(&client);
        return ingest(&mut client, declaration, source, options).await;
    };
    let (mut client, door) = crate::relay::connect(params).await?;
    progress.register(&client);
    let options = Options {
        before_visible: Some(Arc::new(DoorHook {
            door: Arc::new(door),
            hook,
        })),
        ..options.clone()
    };
    ingest(&mut client, declaration, source, &options).await
}

/// Runs an ingest planned by [`prepare`] (see [`ingest`]).
pub async fn ingest_prepared<I>(
    client: &mut Client,
    prepared: &Prepared,
    source: impl FnOnce(Option<serde_json::Value>) -> I,
    options: &Options,
) -> Result<Report>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let started = Instant::now();
    let mut report = Report {
        migrations: prepared.done.clone(),
        ..Report::default()
    };
    tag_session(client, prepared.session.server_version).await?;
    let first = &prepared.first;
    let start_hw = match &options.high_watermark {
        HighWatermark::Latest => {
            let key = watermark::key(first, options.stream.as_deref());
            let stored = watermark::read(&*client, first, &key).await?;
            // A watermark outlives its table, not its meaning: one stored
            // before the table was dropped would skip the rows before it
            // (pg-bulk-ingest's, in the table's comment, goes with it).
            if stored.is_some() && prepared.was_missing(first) {
                tracing::warn!(
                    "{first} did not exist, though an earlier run stored a high watermark for it: starting from the beginning"
                );
                None
            } else {
                stored
            }
        }
        HighWatermark::Earliest => None,
        HighWatermark::Value(v) => Some(v.clone()),
    };
    let replace = options.mode == Mode::ReplaceAtomic;
    run(
        client,
        prepared,
        source(start_hw),
        options,
        Duties::watermark(!replace),
        &mut report,
    )
    .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What each batch's transaction does beyond its rows.
#[derive(Debug, Clone, Copy)]
struct Duties {
    /// Store the watermark (and the source's position) with the batch.
    watermark: bool,
    /// Take the ingest lock of the tables (not when the caller holds it
    /// for the session of another connection: a parallel run's streams).
    ingest_lock: bool,
    /// The batches are shares of batches the caller reports whole (a
    /// parallel run's streams): their commits are logged at debug level.
    share: bool,
}

impl Duties {
    /// The watermark as `watermark` says, the ingest lock.
    const fn watermark(watermark: bool) -> Self {
        Self {
            watermark,
            ingest_lock: true,
            share: false,
        }
    }
}

/// Creates what is missing (at once, or in the first batch's transaction),
/// then runs the batches, each with `duties`.
async fn run<I>(
    client: &mut Client,
    prepared: &Prepared,
    batches: I,
    options: &Options,
    duties: Duties,
    report: &mut Report,
) -> Result<()>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let first = &prepared.first;
    let (create, migrate) = prepared.steps();
    let mut create = creation(client, &create, first).await?;
    let deferred = options.create_with_first_batch && options.mode != Mode::ReplaceAtomic;
    if !deferred && !create.sql.is_empty() {
        let what = "creating tables";
        let sql: Vec<String> = create.locks.iter().chain(&create.sql).cloned().collect();
        lock::run_in_own_transaction(client, &options.lock_policy, None, what, &sql).await?;
        report.migrations.append(&mut create.summaries);
        create = Creation::default();
    }
    let names = prepared.names();
    let replace = options.mode == Mode::ReplaceAtomic;
    if replace {
        crate::lock::hold_tables(client, &options.lock_policy, &names, true).await?;
    }
    let result = run_batches(
        client,
        prepared.session.server_version,
        &prepared.plan,
        create,
        &migrate,
        &names,
        batches,
        prepared.session.input_style(),
        first,
        options,
        duties,
        report,
    )
    .await;
    if replace {
        if result.is_err() && !client.is_closed() {
            drop_new_tables(client, &prepared.plan).await;
        }
        crate::lock::hold_tables(client, &options.lock_policy, &names, false).await?;
    }
    result
}

/// After a failed replace-atomic: drops the new tables its committed
/// batches filled (invisible, and started over by the next run, which
/// would drop them too), so their rows do not hold disk until then. Runs
/// under the run's table locks; a failure is only logged (the run's own
/// error is the one to report).
async fn drop_new_tables(client: &Client, plan: &Plan) {
    let news: Vec<String> = plan
        .declared
        .iter()
        .map(|(name, _)| rebuild::new_table_name(name).quoted())
        .collect();
    if news.is_empty() {
        return;
    }
    let sql = format!("DROP TABLE IF EXISTS {} CASCADE", news.join(", "));
    match client.batch_execute(&sql).await {
        Ok(()) => tracing::debug!("dropped the failed run's new tables {}", news.join(", ")),
        Err(e) => tracing::warn!(
            "the failed run's new tables {} were not dropped ({e}); the next replace-atomic drops them",
            news.join(", ")
        ),
    }
}

/// Tags the session's `application_name` with this process (see
/// [`lock::session_tag`]); on PostgreSQL 14 and later, makes the server
/// check the client every second while a statement runs: a killed pgbulk's
/// merge is ended within a second or two instead of holding its locks
/// until it finishes.
async fn tag_session(client: &Client, version: i32) -> Result<()> {
    // Tagged with this process, so a later run can tell an orphan.
    let app: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .map_err(|e| Error::server("reading application_name", e))?
        .get(0);
    if !app.contains(" [pgbulk ") {
        client
            .execute(
                "SELECT pg_catalog.set_config('application_name', $1, false)",
                &[&lock::session_tag(&app)],
            )
            .await
            .map_err(|e| Error::server("SET application_name", e))?;
    }
    if version < 140_000 {
        return Ok(());
    }
    client
        .batch_execute("SET client_connection_check_interval = 1000")
        .await
        .map_err(|e| Error::server("SET client_connection_check_interval", e))
}

/// The oldest PostgreSQL pgbulk writes to: 13 (`server_version_num`).
pub const OLDEST_SERVER: i32 = 130_000;

/// Refuses a server older than [`OLDEST_SERVER`], naming its version.
fn supported(version_num: i32) -> Result<()> {
    if version_num >= OLDEST_SERVER {
        return Ok(());
    }
    let (major, minor) = if version_num >= 100_000 {
        (version_num / 10_000, version_num % 10_000)
    } else {
        (version_num / 10_000, (version_num / 100) % 100)
    };
    Err(Error::new(
        ErrorKind::Connect,
        format!(
            "the server runs PostgreSQL {major}.{minor}; pgbulk needs PostgreSQL 13 or later (older versions are out of support)"
        ),
    ))
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn servers_before_13_are_refused_by_name() {
        assert!(supported(130_000).is_ok());
        assert!(supported(180_004).is_ok());
        let err = supported(120_019).expect_err("12");
        assert_eq!(err.kind(), ErrorKind::Connect);
        assert!(
            err.message()
                .contains("PostgreSQL 12.19; pgbulk needs PostgreSQL 13 or later")
        );
        assert!(
            supported(90_624)
                .expect_err("9.6")
                .message()
                .contains("9.6")
        );
    }
}

/// The loop over batches (see [`ingest`]).
#[allow(clippy::too_many_arguments)]
async fn run_batches<I>(
    client: &mut Client,
    version: i32,
    plan: &Plan,
    mut create: Creation,
    migrate: &[Step],
    names: &[TableName],
    batches: I,
    input: InputStyle,
    first: &TableName,
    options: &Options,
    duties: Duties,
    report: &mut Report,
) -> Result<()>
where
    I: IntoIterator<Item = Result<Batch>>,
{
    let replace = options.mode == Mode::ReplaceAtomic;
    let merge = version >= 150_000 && options.upsert == Upsert::Auto;
    let mut targets: Option<Targets> = None;
    let mut news: Vec<NewTable> = Vec::new();
    let mut last: Option<Committed> = None;
    for (ordinal, batch) in batches.into_iter().enumerate() {
        let opening = ordinal == 0;
        let number = ordinal + 1 + options.batch_offset;
        let batch = batch?;
        let batch_started = Instant::now();
        let mut pairs = None;
        if targets.is_none() && !replace {
            migrate_existing(client, &options.lock_policy, plan, migrate, report).await?;
            pairs = Some(names.iter().map(|n| (n.clone(), n.clone())).collect());
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::server("BEGIN", e))?;
        let created = std::mem::take(&mut create.summaries);
        let mut created_tables = std::mem::take(&mut create.tables);
        let mut fill = Vec::new();
        if targets.is_none() && !replace {
            if let Some(new) = empty_copy(&tx, plan, names, &created_tables, options).await? {
                created_tables.push(new.name.clone());
                pairs = Some(vec![(new.target.clone(), new.name.clone())]);
                fill.push(new);
            }
        }
        if targets.is_none() && replace {
            // The new tables are created in the first batch's transaction:
            // its rows go in frozen, their indexes are built after them.
            news = create_new_tables(&tx, plan).await?;
            created_tables.extend(news.iter().map(|n| n.name.clone()));
            pairs = Some(
                news.iter()
                    .map(|n| (n.target.clone(), n.name.clone()))
                    .collect::<Vec<(TableName, TableName)>>(),
            );
        }
        if !create.sql.is_empty() {
            // Deferred creation: the tables exist once this batch commits.
            // Another process creating the same tables holds the locks
            // until its first batch commits: waited for without a timeout,
            // as for the ingest lock.
            let mut sql = std::mem::take(&mut create.locks);
            sql.push(format!(
                "SET LOCAL lock_timeout = '{}ms'",
                options.lock_policy.lock_timeout.as_millis()
            ));
            sql.append(&mut create.sql);
            sql.push("SET LOCAL lock_timeout = DEFAULT".to_owned());
            tx.batch_execute(&sql.join(";\n"))
                .await
                .map_err(|e| Error::server("creating tables", e))?;
        }
        if let Some(pairs) = pairs {
            let list = keyed(read_targets(tx.client(), &pairs, input).await?, options)?;
            let lookup = name_lookup(&list);
            targets = Some(Targets { list, lookup });
        }
        let Some(current) = targets.as_ref() else {
            continue;
        };
        let mut fresh = if created_tables.is_empty() {
            Vec::new()
        } else {
            fresh_tables(&tx, current, &created_tables).await?
        };
        // An empty table's copy, made in a savepoint released since (its
        // `pg_class` row is the savepoint's): as fresh.
        for new in &fill {
            let made = current.list.iter().find(|t| t.write == new.name);
            if let Some(t) = made.filter(|t| !fresh.contains(&t.oid)) {
                fresh.push(t.oid);
            }
        }
        let context = BatchContext {
            number,
            opening,
            first,
            options,
            fresh,
            rebuild: if opening && !replace {
                rebuild_list(plan)
            } else {
                Vec::new()
            },
            fill,
            write_watermark: duties.watermark,
            ingest_lock: duties.ingest_lock,
            input,
            merge,
            rewrite: options.rewrite
                && options.rewrite_batches
                && merge
                && options.mode == Mode::Upsert,
        };
        let rebuilt = !context.rebuild.is_empty();
        let filled = !context.fill.is_empty();
        let (counts, skipped, committed, rewritten) =
            load_batch(tx, current, batch, &context, report)
                .await
                .map_err(|e| {
                    // Rows refused in a new table: named as the table's.
                    news.iter()
                        .chain(&context.fill)
                        .fold(e, |e, new| new.named_as_target(e))
                        .in_batch(number as u64)
                })?;
        for (table, c) in counts.iter().filter(|_| duties.share) {
            tracing::debug!(
                "a share of batch {number} committed into {table}: {} inserted, {} updated, {} unchanged",
                c.inserted,
                c.updated,
                c.unchanged
            );
        }
        for (table, c) in counts.iter().filter(|_| !duties.share) {
            info!(
                event = "batch_committed",
                table = %table,
                batch = number,
                stream = options.stream.as_deref(),
                inserted = c.inserted,
                updated = c.updated,
                unchanged = c.unchanged,
                deleted = c.deleted,
                repeated = c.repeated,
                watermark = committed.high_watermark.as_ref().map(|w| w.to_string()),
                "batch {number} committed into {table}"
            );
        }
        report.migrations.extend(created);
        if rebuilt || filled || !rewritten.is_empty() {
            report.migrations.extend(
                context
                    .rebuild
                    .iter()
                    .map(|(n, _, _)| format!("{n}: rebuilt and swapped in"))
                    .chain(rewritten.iter().map(rewrite::migration)),
            );
            // The rebuilt tables have new oids.
            let pairs: Vec<(TableName, TableName)> =
                names.iter().map(|n| (n.clone(), n.clone())).collect();
            let list = keyed(read_targets(client, &pairs, input).await?, options)?;
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
    if options.create_without_batches && !create.sql.is_empty() {
        let sql: Vec<String> = create.locks.iter().chain(&create.sql).cloned().collect();
        lock::run_in_own_transaction(client, &options.lock_policy, None, "creating tables", &sql)
            .await?;
        report.migrations.append(&mut create.summaries);
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

/// The oids of the `targets` among `created` that this transaction created
/// (not another process meanwhile: their `pg_class` row is this
/// transaction's) and that are plain tables, not partitions (whose key is
/// their parent's, not theirs to drop and build again): `COPY FREEZE` may
/// write into them.
async fn fresh_tables(
    tx: &Transaction<'_>,
    targets: &Targets,
    created: &[TableName],
) -> Result<Vec<u32>> {
    let oids: Vec<u32> = targets
        .list
        .iter()
        .filter(|t| created.contains(&t.write))
        .map(|t| t.oid)
        .collect();
    if oids.is_empty() {
        return Ok(oids);
    }
    let rows = tx
        .query(
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = ANY($1) AND c.relkind = 'r' \
             AND NOT c.relispartition AND c.xmin::text::bigint = pg_catalog.txid_current() % 4294967296",
            &[&oids],
        )
        .await
        .map_err(|e| Error::server("reading which tables this transaction created", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// With [`Options::fill_empty`], in the first batch's transaction: the new
/// copy of the run's one table, when that table is empty, has an index to
/// build after the rows instead of maintaining it row by row, and may be
/// swapped ([`rebuild::swappable_when_empty`]). No lock is taken: the batch
/// checks again before the swap.
async fn empty_copy(
    tx: &Transaction<'_>,
    plan: &Plan,
    names: &[TableName],
    created: &[TableName],
    options: &Options,
) -> Result<Option<NewTable>> {
    let [name] = names else {
        return Ok(None);
    };
    if !options.fill_empty
        || options.mode != Mode::Upsert
        || !plan.rebuilds.is_empty()
        || !created.is_empty()
    {
        return Ok(None);
    }
    // Looked at in a savepoint rolled back: reading the table locks it
    // (`ACCESS SHARE`) until the lock is released, and another load's swap
    // into it must not wait for this batch.
    let look = Savepoint::set(tx, "pgbulk_empty_look").await?;
    let found = rebuild::empty_and_indexed(tx, name).await;
    look.roll_back().await?;
    let Some(oid) = found? else {
        return Ok(None);
    };
    // A table whose copy cannot be made is written in place.
    let savepoint = Savepoint::set(tx, "pgbulk_empty_copy").await?;
    let made = async {
        let live = crate::catalog::facts::read(tx.client(), oid).await?;
        rebuild::create_copy(tx, name, &live).await
    }
    .await;
    match savepoint.end(made).await? {
        Ok(new) => {
            tracing::debug!("{name} is empty: the batch fills a new copy of it, to swap in");
            Ok(Some(new))
        }
        Err(e) => {
            tracing::debug!(
                "{name} is empty, but a copy of it cannot be made ({e}): written in place"
            );
            Ok(None)
        }
    }
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

/// Replace-atomic: the new tables, built in the declared shape in the
/// first batch's transaction `tx`.
async fn create_new_tables(tx: &Transaction<'_>, plan: &Plan) -> Result<Vec<NewTable>> {
    let mut news = Vec::new();
    for (name, declared) in &plan.declared {
        // The live table's triggers come with the swap, after the rows.
        let triggers: Vec<String> = tx
            .query(
                "SELECT quote_ident(tgname) FROM pg_catalog.pg_trigger \
                 WHERE tgrelid = pg_catalog.to_regclass($1) AND NOT tgisinternal \
                   AND tgenabled <> 'D' AND tgtype::int & 4 <> 0 ORDER BY tgname",
                &[&name.quoted()],
            )
            .await
            .map_err(|e| Error::server("reading the table's triggers", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !triggers.is_empty() {
            tracing::warn!(
                "{name} has insert triggers ({}): the rows of a replace-atomic go into a new table, which gets them with the swap, so they fire for none of the rows (--mode replace loads into the table itself, firing them)",
                triggers.join(", ")
            );
        }
        news.push(rebuild::create_new(tx, name, declared, true).await?);
    }
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
    // Every new table's statistics before the first lock on a live one.
    for new in news {
        rebuild::analyze(&tx, new).await?;
    }
    for new in news {
        rebuild::swap(&tx, &options.lock_policy, new).await?;
    }
    watermark::write(
        &tx,
        first,
        &watermark::key(first, options.stream.as_deref()),
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
    /// The batch's number (from [`Options::batch_offset`] + 1).
    number: usize,
    /// Whether it is this call's first batch.
    opening: bool,
    first: &'a TableName,
    options: &'a Options,
    /// Oids of the plain tables this batch's transaction created: rows
    /// copied straight into them are written frozen (`COPY ... FREEZE`).
    fresh: Vec<u32>,
    /// Tables rebuilt in this batch's transaction (first batch only).
    rebuild: Vec<(TableName, TableFacts, TableFacts)>,
    /// The new copy of an empty table this batch fills (first batch only,
    /// see [`Options::fill_empty`]).
    fill: Vec<NewTable>,
    write_watermark: bool,
    /// Take the ingest lock (see [`Duties::ingest_lock`]).
    ingest_lock: bool,
    /// How the session reads text values (see [`target::for_session`]).
    input: InputStyle,
    /// Whether the server has `MERGE` (PostgreSQL 15 and later).
    merge: bool,
    /// Whether staged rows changing most of a table may rewrite it (see
    /// [`Options::rewrite_batches`]).
    rewrite: bool,
}

/// What is missing: the declared tables not there yet (with their
/// schemas) and the watermark table, as statements for one transaction,
/// and their summaries for the report once it committed.
///
/// Several pgbulk processes may create the same things at once (pipeline
/// jobs, Spark tasks, backfills): the statements first take an advisory
/// lock per schema, table and watermark table (in name order, until the
/// transaction ends), then create each table only if it still does not
/// exist (another process may have created it meanwhile), and the schema
/// and the watermark table with `IF NOT EXISTS`.
#[derive(Debug, Default)]
struct Creation {
    /// The advisory locks, taken first.
    locks: Vec<String>,
    sql: Vec<String>,
    summaries: Vec<String>,
    /// The tables it creates (unless another process did meanwhile).
    tables: Vec<TableName>,
}

async fn creation(client: &Client, create: &[Step], first: &TableName) -> Result<Creation> {
    let mut summaries: Vec<String> = create
        .iter()
        .map(|s| format!("{}: {}", s.table, s.summary))
        .collect();
    let mut keys: Vec<String> = Vec::new();
    let mut body: Vec<String> = Vec::new();
    // The steps of one table (its schema's, then its own) under one guard.
    let mut tables: Vec<&TableName> = create.iter().map(|s| &s.table).collect();
    tables.dedup();
    let created: Vec<TableName> = tables.iter().map(|t| (*t).clone()).collect();
    for table in tables {
        keys.push(lock::schema_key(table.schema_or_public()));
        keys.push(table.to_string());
        let statements: Vec<&str> = create
            .iter()
            .filter(|s| s.table == *table)
            .flat_map(|s| s.sql.iter().map(String::as_str))
            .collect();
        let guarded = format!(
            "BEGIN IF pg_catalog.to_regclass({}) IS NULL THEN {}; END IF; END",
            dollar_quote(&table.quoted()),
            statements.join(";\n")
        );
        body.push(format!("DO {}", dollar_quote(&guarded)));
    }
    let schema = first.schema_or_public();
    if !watermark::exists(client, schema).await? {
        watermark::check_creatable(client, schema).await?;
        keys.push(watermark::table(schema).to_string());
        body.push(watermark::create_sql(schema));
        summaries.push(format!(
            "{}: create the watermark table",
            watermark::table(schema)
        ));
    }
    if body.is_empty() {
        return Ok(Creation::default());
    }
    Ok(Creation {
        locks: lock::creation_locks(keys),
        sql: body,
        summaries,
        tables: created,
    })
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

fn data_error(number: usize, table: &TableName, row: usize, detail: String) -> Error {
    Error::new(
        ErrorKind::Data,
        format!("batch {number}, table {table}, row {row}: {detail}"),
    )
    .in_batch(number as u64)
    .in_table(table)
    .in_row(row as u64)
}
