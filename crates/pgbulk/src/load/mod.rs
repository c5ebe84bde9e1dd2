//! `load`: CSV files (or standard input) into a table, through the ingest
//! engine.
//!
//! The target's columns come from the existing table, a declared schema
//! (created or migrated by the engine), or types inferred from a sample of
//! the input. File columns are matched to table columns by header name. Rows
//! are parsed and encoded on this side while the server writes; every batch
//! commits with the input's identity and position, so running the same
//! command again after an interruption continues after the last committed
//! batch instead of loading rows twice. Bad rows stop the load with
//! `file:line:field`, the column, the value and the reason, or, with a limit
//! and a reject file, are written there exactly as they were in the input.

mod direct;
mod ledger;
#[cfg(feature = "parquet")]
mod parquet;
mod plan;
mod probe;
mod reader;
mod sample;
mod sniff;
mod streams;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use encoding_rs::Encoding;
use tokio_postgres::Client;
use tracing::{debug, info};

use crate::csv::{CsvError, Dialect};
use crate::error::{Error, ErrorKind, Result};
use crate::ingest::{self, Mode, OnDuplicate, Options, Upsert};
use crate::input::Source;
use crate::lock::LockPolicy;
use crate::schema::{Declaration, TableName};
use crate::session::Session;
#[cfg(feature = "arrow")]
pub(crate) use plan::KeyAndMode;
pub(crate) use plan::match_column;
pub(crate) use plan::{Declared, declared, key_and_mode};
pub use reader::Position;
use reader::{Rejects, Shared, next_batch};
use sample::{Replay, infer_from};
pub use sample::{Sample, Sampled, infer_source};
use streams::{Stream, parallel_input, split_point};

/// How the load changes the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Insert every row (a key that exists fails the batch).
    Append,
    /// Insert new keys, update changed rows, leave unchanged ones alone.
    Upsert,
    /// Delete all rows in the first batch's transaction, then load.
    Replace,
    /// Load a new table and swap it in at the end: readers see all old,
    /// then all new.
    ReplaceAtomic,
}

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The inputs, in order; empty means standard input.
    pub sources: Vec<Source>,
    /// The target table.
    pub table: TableName,
    /// The CSV dialect.
    pub dialect: Dialect,
    /// Detect the delimiter from the first input's header and first lines
    /// (`dialect.delimiter` is then ignored); a UTF-16 byte order mark
    /// always selects UTF-16 when the encoding is UTF-8.
    pub detect_delimiter: bool,
    /// Read a tab-separated first input with `\N` fields in its first
    /// lines (or, uncompressed, in its middle or end) as PostgreSQL's text
    /// format (`dialect.text`, NULL `\N` unless `dialect.null` is set).
    /// An input still read as CSV then fails at an unquoted `\N` field
    /// (PostgreSQL's text format after all, or MySQL's NULL): the user
    /// says which they mean.
    pub detect_format: bool,
    /// Whether the first record of each input is a header.
    pub header: bool,
    /// In PostgreSQL's text format (given or detected), decide `header`
    /// from the first input's first lines: `COPY ... TO` writes a header
    /// only when asked, so its first line is data unless it looks like a
    /// header (see [`sniff::text_header`]).
    pub detect_header: bool,
    /// Physical lines to skip before the header or data.
    pub skip_lines: u64,
    /// The text encoding.
    pub encoding: &'static Encoding,
    /// Column names for the fields (headerless files, or overriding the
    /// header).
    pub columns: Option<Vec<String>>,
    /// Skip file columns the table lacks instead of failing.
    pub ignore_extra: bool,
    /// Declared DDL for the table (created or migrated).
    pub schema_ddl: Option<String>,
    /// The mode; `None`: upsert when the table has a key, else append.
    pub mode: Option<LoadMode>,
    /// Upsert on these columns instead of the primary key.
    pub key: Option<Vec<String>>,
    /// How much of the input type inference reads.
    pub sample: Sample,
    /// Types for inferred columns, overriding inference: `(column, type)`.
    pub types: Vec<(String, String)>,
    /// Create the table anew from `schema_ddl` or inference even though it
    /// exists, swapping the new table in atomically at the end (grants,
    /// owner, comments and views kept).
    pub recreate: bool,
    /// Which row wins when rows of one batch repeat a key.
    pub on_duplicate: OnDuplicate,
    /// Rows per batch (each batch commits).
    pub batch_rows: u64,
    /// `batch_rows` was asked for. Else (the default) an upsert of one big
    /// file whose first rows show that it changes most of the table's rows
    /// (or that change nothing) loads the rest in one batch, which rewrites
    /// the table when [`Self::rewrite`] allows (see
    /// [`probe::upsert_streams`]).
    pub batch_rows_asked: bool,
    /// Batches this load committed before the call (it goes on with one
    /// connection after its upsert on several stopped): the call numbers
    /// its batches after them, in logs, reports and errors.
    pub batch_offset: usize,
    /// The longest field accepted, in bytes (default: PostgreSQL's 1 GB):
    /// a longer one fails the load at its line instead of being buffered.
    pub max_field_size: usize,
    /// The whole load in one transaction.
    pub single_transaction: bool,
    /// Bad rows tolerated (rejected) before the load fails.
    pub max_errors: u64,
    /// Every row is staged with its input line, so one the server refuses
    /// (a constraint) fails the load naming its line also without
    /// `max_errors` (slower: no straight COPY). [`load_retrying`] sets it
    /// to read a batch that failed on such a row again.
    pub locate_rows: bool,
    /// Where rejected rows go, exactly as in the input; reasons go to
    /// `PATH.log`.
    pub reject_file: Option<PathBuf>,
    /// Ignore the stored position and load the inputs from the start.
    pub restart: bool,
    /// Lock timeouts for migrations.
    pub lock_policy: LockPolicy,
    /// Connections to append with at once (several files load this many
    /// at a time into a table without a key; one big uncompressed file is
    /// split in halves); 1 disables it.
    pub streams: usize,
    /// Connections to upsert one big file with, each key's rows sent to one
    /// of them (see [`crate::ingest::ingest_parallel`]); 1 disables it.
    /// `None` (the default) lets the first rows decide (see
    /// [`probe::upsert_streams`]): two connections when most of them
    /// change rows of the table, else one.
    pub upsert_streams: Option<usize>,
    /// Runs again after a lost connection, this many times at most (see
    /// [`load_retrying`]).
    pub retries: u32,
    /// Keep a ledger of the inputs loaded, to resume an interrupted load
    /// and skip one loaded before (default). Off for inputs that are new
    /// each run (a sync's spool): then only the table's watermark row is
    /// kept.
    pub ledger: bool,
    /// Runs inside the transaction of the last batch (the one that reads
    /// the inputs to their end), before it commits; its error rolls that
    /// batch back. With it the input is read by one stream. Zero batches
    /// run it not at all.
    pub before_final_commit: Option<FinalHook>,
    /// Say what would be done ([`LoadReport::plan`]: a table to create or
    /// the migration steps, each input to load, continue or skip), reading
    /// the inputs only to infer types; change nothing.
    pub dry_run: bool,
    /// An empty table with an index gets the first batch's rows in a new
    /// copy of it, indexed once they are in and swapped in at the batch's
    /// commit, when the load runs on one connection (see
    /// [`crate::ingest::Options::fill_empty`]; default). Off for loads
    /// that run beside others into the same table (a sync's jobs).
    pub fill_empty: bool,
    /// A commit of staged partitions ([`crate::arrow::partitioned`]), or a
    /// batch of a load on one connection (see
    /// [`crate::ingest::Options::rewrite_batches`]), whose rows change most
    /// of a table may rewrite it (see [`crate::ingest::Options::rewrite`];
    /// default). Off: always merged.
    pub rewrite: bool,
    /// A row a constraint refuses fails the load with the hint that
    /// `--max-errors` sets such rows aside (default). Off for callers that
    /// offer no such option (a sync).
    pub max_errors_hint: bool,
    /// What messages call every input instead of its path, line and field
    /// (a sync's spool: the source table, its rows named by their values).
    pub input_label: Option<String>,
}

/// A hook for [`LoadOptions::before_final_commit`].
#[derive(Clone)]
pub struct FinalHook(pub Arc<dyn ingest::BeforeVisible>);

impl std::fmt::Debug for FinalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FinalHook")
    }
}

/// Runs the final hook in the batch after which the input is exhausted.
struct AtEnd {
    shared: Arc<Mutex<Shared>>,
    hook: Arc<dyn ingest::BeforeVisible>,
}

impl ingest::BeforeVisible for AtEnd {
    fn call<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        batch: &'a ingest::BatchInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let last = {
                let mut s = self
                    .shared
                    .lock()
                    .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
                reader::exhausted(&mut s)?
            };
            if last {
                self.hook.call(tx, batch).await
            } else {
                Ok(())
            }
        })
    }
}

/// The default rows per batch: measured, see the README.
pub const DEFAULT_BATCH_ROWS: u64 = 1_000_000;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            table: TableName {
                schema: None,
                name: String::new(),
            },
            dialect: Dialect::default(),
            detect_delimiter: false,
            detect_format: false,
            header: true,
            detect_header: false,
            skip_lines: 0,
            encoding: encoding_rs::UTF_8,
            columns: None,
            ignore_extra: false,
            schema_ddl: None,
            mode: None,
            key: None,
            sample: Sample::Parts,
            types: Vec::new(),
            recreate: false,
            on_duplicate: OnDuplicate::Last,
            batch_rows: DEFAULT_BATCH_ROWS,
            batch_rows_asked: false,
            batch_offset: 0,
            max_field_size: crate::csv::MAX_FIELD,
            single_transaction: false,
            max_errors: 0,
            locate_rows: false,
            reject_file: None,
            restart: false,
            lock_policy: LockPolicy::default(),
            streams: 2,
            upsert_streams: None,
            retries: 0,
            ledger: true,
            before_final_commit: None,
            dry_run: false,
            fill_empty: true,
            rewrite: true,
            max_errors_hint: true,
            input_label: None,
        }
    }
}

/// Live counters of a load, for progress display and interrupt summaries.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read from the inputs (compressed bytes for compressed inputs).
    pub bytes_read: Arc<AtomicU64>,
    /// Total size of the inputs, 0 when unknown.
    pub bytes_total: AtomicU64,
    /// Records read.
    pub rows_read: AtomicU64,
    /// Rows rejected.
    pub rows_rejected: AtomicU64,
    /// Rows in committed batches (inserted, updated or unchanged).
    pub rows_committed: AtomicU64,
    /// Batches committed.
    pub batches_committed: AtomicU64,
    /// The batch being merged and committed (0: none): the client waits on
    /// the server.
    pub merging: Arc<AtomicU64>,
    /// Set by [`Progress::interrupt`]: the load reads no further row.
    interrupted: std::sync::atomic::AtomicBool,
    /// Cancel tokens of the load's connections.
    cancel: CancelTokens,
}

/// The cancel tokens of a load's connections.
#[derive(Default)]
struct CancelTokens(Mutex<Vec<tokio_postgres::CancelToken>>);

impl std::fmt::Debug for CancelTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CancelTokens")
    }
}

impl Progress {
    /// Registers `client`'s cancel token, for [`Progress::cancel`].
    pub fn register(&self, client: &Client) {
        if let Ok(mut tokens) = self.cancel.0.lock() {
            tokens.push(client.cancel_token());
        }
    }

    /// Stops the load: no further row is read (the batch being read fails
    /// and rolls back). Follow with [`Progress::cancel`] for the statement
    /// the server is running.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }

    /// Whether [`Progress::interrupt`] was called.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Asks the server to stop whatever the load's connections are running
    /// (after an interrupt).
    pub async fn cancel(&self, params: &crate::conninfo::ConnParams) {
        let tokens: Vec<tokio_postgres::CancelToken> =
            self.cancel.0.lock().map(|t| t.clone()).unwrap_or_default();
        for token in tokens {
            let _ = crate::connect::cancel(&token, params).await;
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Records read (including rejected ones).
    pub rows_read: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows whose key existed with the same values.
    pub unchanged: u64,
    /// Rows deleted (replace).
    pub deleted: u64,
    /// Rows left out because a row of the same batch had the same key
    /// (`on_duplicate` says which one was kept).
    pub repeated: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Batches committed.
    pub batches: u64,
    /// Seconds in all.
    pub seconds: f64,
    /// The DDL chosen when the table was created from inferred types.
    pub inferred_ddl: Option<String>,
    /// What the types were inferred from.
    pub sampled: Option<Sampled>,
    /// [`LoadReport::inferred_ddl`] took its types from the input's own
    /// schema (a Parquet file's), not from a sample of its values.
    pub typed_input: bool,
    /// Rows of the inputs already loaded by an earlier, interrupted run and
    /// skipped now.
    pub resumed_after_rows: Option<u64>,
    /// Why nothing was loaded although the load succeeded: the inputs are
    /// empty, or have a header and no rows for a table to create.
    pub nothing_to_load: Option<String>,
    /// The same load (inputs and options) completed before, and the table
    /// was not emptied or rewritten since: nothing was done.
    pub already_loaded: bool,
    /// Migrations applied.
    pub migrations: Vec<String>,
    /// With `dry_run`: what would be done, one line per step.
    pub plan: Vec<String>,
    /// Inputs an earlier run with the same options loaded completely:
    /// skipped (of several files, loaded one at a time).
    pub skipped: Vec<String>,
    /// What the user should know but did not ask: a detected delimiter or
    /// encoding, why an earlier run's ledger was not followed (the table
    /// was emptied or rewritten since), a sequence advanced past the rows.
    pub notes: Vec<String>,
}

/// Connects to `params` and runs [`load`]; when the connection is lost
/// (the server restarted or failed over, the network dropped) or cannot be
/// made again, waits (1 s, doubling up to 30 s) and runs it again, at most
/// `opts.retries` times. That is safe: each batch commits with its ledger
/// row or not at all, so the next run reads from the ledger where the last
/// one stopped, also when a COMMIT's acknowledgement was what got lost.
/// Standard input cannot be read again: with it, nothing is retried.
pub async fn load_retrying(
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let rereadable = !opts.sources.is_empty() && !opts.sources.contains(&Source::Stdin);
    let retries = if rereadable { opts.retries } else { 0 };
    let mut lost = Vec::new();
    for attempt in 0..=retries {
        let outcome = match crate::connect::connect(params).await {
            Ok(session) => load(session.client, params, opts, progress.clone()).await,
            // Only a reconnection may fail to connect and be retried.
            Err(e) if attempt > 0 => Err(e),
            Err(e) => return Err(e),
        };
        match outcome {
            Err(e)
                if attempt < retries
                    && !progress.is_interrupted()
                    && matches!(e.kind(), ErrorKind::ConnectionLost | ErrorKind::Connect) =>
            {
                let wait = std::time::Duration::from_secs((1u64 << attempt.min(5)).min(30));
                tracing::warn!(
                    event = "retry",
                    retry = attempt + 1,
                    retries,
                    "{e}; retrying in {} s (retry {} of {retries})",
                    wait.as_secs(),
                    attempt + 1
                );
                lost.push(e.message().to_owned());
                progress.bytes_read.store(0, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
            }
            Err(e) if rereadable && refused_unlocated(&e, opts) && !progress.is_interrupted() => {
                return locate_refused(params, opts, progress, e).await;
            }
            Err(e) => return Err(e),
            Ok(mut report) => {
                if !lost.is_empty() {
                    report.notes.push(format!(
                        "the connection was lost {} time(s) and the load continued where its last batch committed",
                        lost.len()
                    ));
                }
                return Ok(report);
            }
        }
    }
    Err(Error::new(ErrorKind::ConnectionLost, "no attempt was made"))
}

/// Whether `e` is a row a constraint refused, not named by its input line,
/// in a load whose ledger lets the same load go on from its last
/// committed batch.
fn refused_unlocated(e: &Error, opts: &LoadOptions) -> bool {
    use crate::ServerErrorKind::{
        CheckViolation, ForeignKeyViolation, NotNullViolation, UniqueViolation,
    };
    opts.ledger
        && !opts.locate_rows
        && opts.max_errors == 0
        && !opts.dry_run
        && e.kind() == ErrorKind::Data
        && e.location().is_none()
        && matches!(
            e.server_kind(),
            Some(UniqueViolation | NotNullViolation | CheckViolation | ForeignKeyViolation)
        )
}

/// After a batch failed on a row a constraint refused (`refused`, which
/// names the constraint and the row's values, not its line): loads again
/// from the last committed batch with every row staged with its line, so
/// the same row fails the load named by its input line. The batches before
/// it committed already; a load the second reading completes (the row was
/// accepted this time: a concurrent change) is the load's result. When
/// the second reading fails otherwise, `refused` is the error.
async fn locate_refused(
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
    refused: Error,
) -> Result<LoadReport> {
    let by = refused
        .db_error()
        .and_then(|db| db.constraint())
        .map(|c| format!(" by constraint {c}"))
        .unwrap_or_default();
    let batch = refused
        .batch()
        .map(|n| format!(" of batch {n}"))
        .unwrap_or_default();
    tracing::warn!(
        "{}: a row{batch} was refused{by}; reading the batch again to name the row's input line",
        opts.table
    );
    // From where this run's committed batches left the ledger: not from
    // the start again (`restart`), which would append them twice.
    let committed = progress.batches_committed.load(Ordering::Relaxed) > 0;
    let locating = LoadOptions {
        locate_rows: true,
        restart: opts.restart && !committed,
        ..opts.clone()
    };
    progress.bytes_read.store(0, Ordering::Relaxed);
    progress.rows_read.store(
        progress.rows_committed.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let client = match crate::connect::connect(params).await {
        Ok(session) => session.client,
        Err(_) => return Err(refused),
    };
    match load(client, params, &locating, progress).await {
        // Loaded this time (a concurrent change let the row in).
        Ok(report) if report.nothing_to_load.is_none() => Ok(report),
        Ok(_) => Err(refused),
        Err(located) if located.location().is_some() => Err(suggest_max_errors(located, opts)),
        Err(_) => Err(refused),
    }
}

/// Loads the inputs into the table. See the module documentation.
/// `client` does the work; when `opts.streams` allows and the input is one
/// big uncompressed file (append and upsert), a second connection to
/// `params` loads its second half at the same time. Every connection's
/// cancel token is registered in `progress` for interrupt handling.
///
/// Several files with a ledger (not stdin, not replace, not one
/// transaction, not recreate) are loaded one after another, in the order
/// given, each as a load of its own with its own ledger row: a file an
/// earlier run loaded completely is skipped (by content, so also when it
/// was renamed), one it interrupted continues, a new one is loaded. A
/// landing folder loaded by cron with a glob is so loaded once per file.
pub async fn load(
    client: Client,
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let mut report = if file_by_file(opts) {
        load_each(client, params, opts, progress).await?
    } else {
        load_inputs(client, params, opts, progress, None).await?
    };
    after_load(params, opts, &mut report).await;
    Ok(report)
}

/// After a load's last commit, on one connection (best effort: the rows
/// are in either way): advances the table's serial and identity sequences
/// past explicit values in their indexed columns, so the table's own
/// inserts do not meet the rows loaded (said in the report's notes), and
/// records the run as the table's last (for `pgbulk status`).
async fn after_load(
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    report: &mut LoadReport,
) {
    let advance = report.inserted > 0 && !opts.dry_run;
    let record = opts.ledger && !opts.dry_run && report.nothing_to_load.is_none();
    if !advance && !record {
        return;
    }
    let client = match crate::connect::connect(params).await {
        Ok(session) => session.client,
        Err(e) => {
            if advance {
                report.notes.push(format!(
                    "the sequences of {} were not advanced past the rows loaded: {e}",
                    opts.table
                ));
            }
            if record {
                tracing::warn!(
                    "the load committed, but recording it as the table's last run failed: {e}"
                );
            }
            return;
        }
    };
    if advance {
        match crate::session::Session::read(&client).await {
            Ok(session) => {
                let notes = crate::sequence::advance_past_rows(
                    &client,
                    &opts.table.in_schema(&session.current_schema),
                    crate::sequence::Columns::Indexed,
                    "rows loaded",
                )
                .await;
                report.notes.extend(notes);
            }
            Err(e) => report.notes.push(format!(
                "the sequences of {} were not advanced past the rows loaded: {e}",
                opts.table
            )),
        }
    }
    if record {
        let counts = crate::status::counts("load", report, report.rows_read);
        if let Err(e) = crate::status::record_run(&client, &opts.table, counts).await {
            tracing::warn!(
                "the load committed, but recording it as the table's last run failed: {e}"
            );
        }
    }
}

/// [`load`] of several files, each a load of its own. They load one at a
/// time until the table is in its final shape (see [`several_at_once`]);
/// then, when they append (no key) and `opts.streams` allows, several at
/// once, each on a connection of its own (a file read in halves on two
/// connections runs alone). Every file still commits with its own ledger
/// row, so where a run stops, the next goes on, whichever files were in
/// flight.
async fn load_each(
    client: Client,
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let started = Instant::now();
    let total: u64 = opts.sources.iter().filter_map(Source::size).sum();
    progress.bytes_total.store(total, Ordering::Relaxed);
    let mut report = LoadReport::default();
    let empty: Vec<String> = opts
        .sources
        .iter()
        .filter(|s| s.size() == Some(0))
        .map(Source::name)
        .collect();
    if empty.len() == opts.sources.len() {
        report.nothing_to_load = Some(format!("{} is empty: nothing to load", empty.join(", ")));
        return Ok(report);
    }
    if !empty.is_empty() {
        report
            .notes
            .push(format!("{} is empty: skipped", empty.join(", ")));
    }
    let rows_before = progress.rows_read.load(Ordering::Relaxed);
    let sources: Vec<Source> = opts
        .sources
        .iter()
        .filter(|s| !empty.contains(&s.name()))
        .cloned()
        .collect();
    let mut taken = Taken::default();
    let mut client = Some(client);
    let mut next = 0;
    let mut may = true;
    // One at a time while the table may yet be created, migrated or
    // filled as an empty table (or files are to load in order).
    while next < sources.len() {
        let first = match client.take() {
            Some(c) => c,
            None => crate::connect::connect(params).await?.client,
        };
        if may {
            match several_at_once(&first, opts, taken.loaded > 0).await? {
                Some(true) => {
                    client = Some(first);
                    break;
                }
                Some(false) => {}
                None => may = false,
            }
        }
        let one = LoadOptions {
            sources: vec![sources[next].clone()],
            ..opts.clone()
        };
        let part = load_inputs(
            first,
            params,
            &one,
            progress.clone(),
            Some(taken.loaded > 0),
        )
        .await?;
        taken.take(part, &sources[next], opts, &progress, &mut report);
        next += 1;
    }
    if next < sources.len() {
        let at_once = opts.streams.max(1);
        if sources.len() - next > 1 {
            report.notes.push(format!(
                "appended up to {at_once} files at once, each on a connection of its own"
            ));
        }
        // Started in order, each as soon as a connection is free; taken
        // in order once all are done.
        let mut running: tokio::task::JoinSet<(usize, Result<LoadReport>)> =
            tokio::task::JoinSet::new();
        let mut done: Vec<Option<Result<LoadReport>>> = sources.iter().map(|_| None).collect();
        let mut failed = false;
        // The sizes of the files in flight: a file of the same size as one
        // of them may have its content (a copy under another name), which
        // must wait to find it loaded and be skipped, not load beside it.
        let mut sizes: Vec<(usize, Option<u64>)> = Vec::new();
        let lost = |e: tokio::task::JoinError| {
            Error::new(ErrorKind::Io, format!("a file's load failed: {e}"))
        };
        for (index, source) in sources.iter().enumerate().skip(next) {
            // A file read in halves takes two connections: it runs alone.
            let halves = streams::parallel_input(std::slice::from_ref(source), opts)?
                && !parquet_file(source);
            let room = if halves { 1 } else { at_once };
            let size = source.size();
            let twin = |sizes: &[(usize, Option<u64>)]| {
                sizes
                    .iter()
                    .any(|(_, s)| s.is_none() || size.is_none() || *s == size)
            };
            while running.len() >= room || halves && !running.is_empty() || twin(&sizes) {
                let Some(joined) = running.join_next().await else {
                    break;
                };
                let (i, result) = joined.map_err(lost)?;
                sizes.retain(|(j, _)| *j != i);
                failed |= result.is_err();
                done[i] = Some(result);
            }
            if failed || progress.is_interrupted() {
                break;
            }
            let first = match client.take() {
                Some(c) => c,
                None => crate::connect::connect(params).await?.client,
            };
            let one = LoadOptions {
                sources: vec![source.clone()],
                ..opts.clone()
            };
            let (params, progress) = (params.clone(), progress.clone());
            running.spawn(async move {
                let result = load_inputs(first, &params, &one, progress, Some(true)).await;
                (index, result)
            });
            sizes.push((index, size));
        }
        // What is in flight finishes (each commits its batches and ledger
        // rows); the first failure, in the files' order, is the load's.
        while let Some(joined) = running.join_next().await {
            let (i, result) = joined.map_err(lost)?;
            done[i] = Some(result);
        }
        for (i, result) in done.into_iter().enumerate() {
            if let Some(result) = result {
                taken.take(result?, &sources[i], opts, &progress, &mut report);
            }
        }
    }
    match (taken.loaded, report.skipped.len()) {
        (0, 0) => report.nothing_to_load = Some(taken.nothing.join("; ")),
        (0, _) if taken.nothing.is_empty() => report.already_loaded = true,
        (_, skipped) => {
            report.notes.extend(taken.nothing);
            if skipped > 0 {
                report.notes.push(format!(
                    "{} loaded completely by an earlier run with the same options (the same content, under any name): skipped",
                    report.skipped.join(", ")
                ));
            }
        }
    }
    report.rows_read = progress
        .rows_read
        .load(Ordering::Relaxed)
        .saturating_sub(rows_before);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What [`load_each`] has taken of its files' loads so far.
#[derive(Default)]
struct Taken {
    /// Files that loaded rows.
    loaded: usize,
    /// Why files had nothing to load.
    nothing: Vec<String>,
}

impl Taken {
    /// Adds the load of `source` to `report`.
    fn take(
        &mut self,
        part: LoadReport,
        source: &Source,
        opts: &LoadOptions,
        progress: &Progress,
        report: &mut LoadReport,
    ) {
        tracing::info!(
            event = if part.already_loaded { "file_skipped" } else { "file_loaded" },
            input = %source.name(),
            table = %opts.table,
            inserted = part.inserted,
            updated = part.updated,
            unchanged = part.unchanged,
            rejected = part.rejected,
            "{}: {}",
            source.name(),
            if part.already_loaded { "loaded by an earlier run, skipped" } else { "loaded" }
        );
        if part.already_loaded {
            report.skipped.push(source.name());
            if let Some(size) = source.size() {
                progress.bytes_read.fetch_add(size, Ordering::Relaxed);
            }
        } else if let Some(why) = &part.nothing_to_load {
            self.nothing.push(why.clone());
        } else {
            self.loaded += 1;
        }
        for line in &part.plan {
            let created = |l: &String| l.contains(" would be created from inferred types");
            let again = created(line) && report.plan.iter().any(created);
            if !again && !report.plan.contains(line) {
                report.plan.push(line.clone());
            }
        }
        report.absorb(part);
    }
}

/// Whether the files [`load_each`] has yet to load may load several at
/// once: they append (no mode, or `--mode append`, into a table without a
/// primary key and without `--key`) into a table in its final shape (a
/// file of this run loaded, or nothing is declared that could migrate it)
/// that no load fills as a new copy (it holds rows, or has no index),
/// several connections are
/// allowed, and nothing asks for one file after another (a reject file,
/// `--max-errors`, `--restart`, `--dry-run`, the second reading that names
/// a refused row). `None`: not in this run (they upsert, or the options
/// say one after another); `Some(false)`: not yet.
async fn several_at_once(
    client: &Client,
    opts: &LoadOptions,
    loaded: bool,
) -> Result<Option<bool>> {
    if opts.streams < 2
        || opts.dry_run
        || opts.restart
        || opts.locate_rows
        || opts.max_errors > 0
        || opts.reject_file.is_some()
        || opts.key.is_some()
        || !matches!(opts.mode, None | Some(LoadMode::Append))
    {
        return Ok(None);
    }
    if !loaded && opts.schema_ddl.is_some() {
        return Ok(Some(false));
    }
    let session = Session::read(client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let facts = client
        .query_opt(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                    EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema_or_public(), &table.name],
        )
        .await
        .map_err(|e| Error::server(&format!("reading {table}"), e))?;
    match facts.map(|row| (row.get::<_, bool>(0), row.get::<_, bool>(1))) {
        Some((true, _)) => Ok(None),
        // An empty table with an index is filled as a new copy, by one load.
        Some((false, indexed)) => Ok(Some(loaded || !indexed || !is_empty(client, &table).await?)),
        None => Ok(Some(false)),
    }
}

/// What a load would do, for [`LoadOptions::dry_run`].
fn dry_run_plan(
    prepared: &ingest::Prepared,
    report: &LoadReport,
    table: &TableName,
    sources: &[Source],
    start: &plan::Start,
    grown_after: Option<u64>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let steps = prepared.plan();
    if let Some(ddl) = &report.inferred_ddl {
        lines.push(format!(
            "{table} would be created from inferred types:\n{ddl}"
        ));
    } else if !steps.is_empty() {
        lines.push(format!("{table} would be migrated:\n{steps}"));
    }
    let names: Vec<String> = sources.iter().map(Source::name).collect();
    let names = names.join(", ");
    lines.push(if start.already_loaded {
        format!(
            "{names}: loaded completely by an earlier run with the same options; would be skipped"
        )
    } else if start.resumed_rows > 0 {
        format!(
            "{names}: would continue after the {} rows an earlier run committed",
            start.resumed_rows
        )
    } else if let Some(lines) = grown_after {
        format!(
            "{names}: grew since an earlier run loaded its first {lines} lines; the lines appended would be loaded into {table}"
        )
    } else {
        format!("{names}: would be loaded into {table}")
    });
    lines
}

/// Reads the input as one stream named `name` (not in halves), on the
/// first connection.
fn one_stream(
    streams: &mut Vec<Stream>,
    clients: &mut Vec<Client>,
    name: Option<String>,
    path_key: Option<String>,
) {
    streams.truncate(1);
    clients.truncate(1);
    let stream = &mut streams[0];
    stream.name = name;
    stream.path_key = path_key;
    stream.limit = None;
}

/// The error for a Parquet file where Parquet input was not built.
/// The two streams that read the halves of one file split at `(offset,
/// line)`, each with the ledger name and path key `names` gives its part
/// (`"1"`, `"2"`).
fn halves(
    (offset, line): (u64, u64),
    names: impl Fn(&'static str) -> (Option<String>, Option<String>),
) -> Vec<Stream> {
    let half = |part: &'static str, start: Position, limit: Option<u64>| {
        let (name, path_key) = names(part);
        Stream {
            name,
            path_key,
            start,
            limit,
            credit: 0,
        }
    };
    let second = Position {
        offset,
        line,
        ..Position::default()
    };
    vec![
        half("1", Position::default(), Some(offset)),
        half("2", second, None),
    ]
}

#[cfg(not(feature = "parquet"))]
fn without_parquet(source: &Source) -> Error {
    Error::config(format!(
        "{} is a Parquet file, and this pgbulk was built without Parquet input (the `parquet` feature)",
        source.name()
    ))
}

/// Whether `source` is a Parquet file (without Parquet input: named
/// `*.parquet`).
fn parquet_file(source: &Source) -> bool {
    #[cfg(feature = "parquet")]
    return parquet::is_parquet(source);
    #[cfg(not(feature = "parquet"))]
    return matches!(source, Source::File(p) if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")));
}

/// Whether [`load`] loads `opts.sources` one file at a time.
fn file_by_file(opts: &LoadOptions) -> bool {
    opts.sources.len() > 1
        && opts.sources.iter().all(|s| matches!(s, Source::File(_)))
        && opts.ledger
        && !opts.single_transaction
        && !opts.recreate
        && opts.before_final_commit.is_none()
        && !matches!(opts.mode, Some(LoadMode::Replace | LoadMode::ReplaceAtomic))
}

impl LoadReport {
    /// Takes the counts, batches and migrations of the ingest that loaded
    /// the rows.
    pub(crate) fn count(&mut self, engine: ingest::Report) {
        let total = engine.total();
        self.inserted = total.inserted;
        self.updated = total.updated;
        self.unchanged = total.unchanged;
        self.deleted = total.deleted;
        self.repeated = total.repeated;
        self.batches = engine.batches.len() as u64;
        self.migrations = engine.migrations;
    }

    /// Adds `total`, the counts of `batches` batches committed by the same
    /// load before it went on in another way, to these.
    fn add_counts(&mut self, total: &ingest::Counts, batches: u64) {
        self.inserted += total.inserted;
        self.updated += total.updated;
        self.unchanged += total.unchanged;
        self.deleted += total.deleted;
        self.repeated += total.repeated;
        self.batches += batches;
    }

    /// Adds the counts, (new) migrations and (new) notes of `part`, a load
    /// of some of the inputs.
    pub(crate) fn absorb(&mut self, part: LoadReport) {
        self.rows_read += part.rows_read;
        self.inserted += part.inserted;
        self.updated += part.updated;
        self.unchanged += part.unchanged;
        self.deleted += part.deleted;
        self.repeated += part.repeated;
        self.rejected += part.rejected;
        self.batches += part.batches;
        if self.inferred_ddl.is_none() {
            self.inferred_ddl = part.inferred_ddl;
            self.sampled = part.sampled;
            self.typed_input = part.typed_input;
        }
        if let Some(rows) = part.resumed_after_rows {
            *self.resumed_after_rows.get_or_insert(0) += rows;
        }
        for m in part.migrations {
            if !self.migrations.contains(&m) {
                self.migrations.push(m);
            }
        }
        for note in part.notes {
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
        }
    }
}

/// [`load`] of `opts.sources` as one load (one ledger row per stream).
/// `of_many`: they are one of several files [`load`] loads one at a time
/// (it counts the progress total), and with `Some(true)` the reject file
/// holds rows of inputs loaded before in this run and is appended to.
async fn load_inputs(
    client: Client,
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
    of_many: Option<bool>,
) -> Result<LoadReport> {
    if let Some(source) = opts.sources.iter().find(|s| parquet_file(s)) {
        if opts.sources.len() > 1 {
            return Err(Error::config(format!(
                "{} is a Parquet file: Parquet files load one file at a time, which --mode replace, --mode replace-atomic, --single-transaction and --recreate do not do; load it alone",
                source.name()
            )));
        }
        #[cfg(feature = "parquet")]
        return parquet::load_file(client, params, opts, progress, source, of_many.is_some()).await;
        #[cfg(not(feature = "parquet"))]
        return Err(without_parquet(source));
    }
    progress.register(&client);
    let (detected, notes) = detect_dialect(opts)?;
    let report = LoadReport {
        notes: notes.clone(),
        ..LoadReport::default()
    };
    load_detected(client, params, &detected, progress, of_many, report)
        .await
        .map_err(|e| e.with_notes(notes))
}

/// [`load_inputs`] in the dialect detected (`opts`), said in `report`'s
/// notes.
async fn load_detected(
    client: Client,
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
    of_many: Option<bool>,
    mut report: LoadReport,
) -> Result<LoadReport> {
    let mut clients = vec![client];
    let started = Instant::now();
    // Where the progress stood, for a handover from several connections
    // to one (which reads again what they did not commit).
    let read_at_entry = (
        progress.rows_read.load(Ordering::Relaxed),
        progress.bytes_read.load(Ordering::Relaxed),
    );
    let sources = if opts.sources.is_empty() {
        vec![Source::Stdin]
    } else {
        opts.sources.clone()
    };
    // Empty inputs hold nothing to load: said, not an error.
    let mut sources: Vec<Source> = sources;
    let empty: Vec<String> = sources
        .iter()
        .filter(|s| match s {
            Source::File(_) => s.size() == Some(0),
            Source::Stdin => crate::input::peek_stdin(1).is_ok_and(|b| b.is_empty()),
        })
        .map(Source::name)
        .collect();
    if !empty.is_empty() {
        sources.retain(|s| !empty.contains(&s.name()));
        let what = format!("{} is empty", empty.join(", "));
        if sources.is_empty() {
            report.nothing_to_load = Some(format!("{what}: nothing to load"));
            return Ok(report);
        }
        report.notes.push(format!("{what}: skipped"));
    }
    if of_many.is_none() {
        let total: u64 = sources.iter().filter_map(Source::size).sum();
        progress.bytes_total.store(total, Ordering::Relaxed);
    }
    // A load of files is resumable: the ledger knows them by their
    // content, hashed meanwhile.
    let resumable = opts.ledger
        && !opts.single_transaction
        && sources.iter().all(|s| matches!(s, Source::File(_)));
    let identities = resumable.then(|| Identities::start(&sources));
    let session = Session::read(&clients[0]).await?;
    let schema = session.current_schema.clone();
    let table = opts.table.in_schema(&schema);

    // The declaration: given, the existing table, or inferred.
    let mut sample: Option<Replay> = None;
    let exists = crate::catalog::table_oid(&clients[0], table.schema_or_public(), &table.name)
        .await?
        .is_some();
    let declaration = match plan::declared(opts, &table, &schema, exists)? {
        plan::Declared::Given(d) => d,
        plan::Declared::Existing => Declaration::existing(vec![table.clone()]),
        plan::Declared::Inferred => {
            let (ddl, sampled, replay) =
                infer_from(&sources[0], opts, &table, progress.bytes_read.clone())?;
            if sampled.rows == 0 && sources.len() == 1 {
                report.nothing_to_load = Some(format!(
                    "{} has no rows: nothing to load, and {table} was not created (no values to infer its column types from; --schema declares them)",
                    sources[0].name()
                ));
                return Ok(report);
            }
            report.sampled = Some(sampled);
            info!("created from inferred types:\n{ddl}");
            report.inferred_ddl = Some(ddl.clone());
            sample = replay;
            Declaration::parse(&ddl)?
        }
    };
    // Planned once: the declared facts come from the plan.
    let prepared = ingest::prepare_in(&mut clients[0], session, &declaration).await?;
    let facts = prepared
        .facts(&table)
        .cloned()
        .ok_or_else(|| Error::config(format!("table {table} is not declared")))?;

    let plan::KeyAndMode {
        key,
        effective_key,
        mode,
    } = plan::key_and_mode(opts, &facts, &table, exists)?;
    if exists && opts.schema_ddl.is_none() {
        report
            .notes
            .extend(types_not_applied(&clients[0], &facts, &table, &opts.types).await?);
    }

    // Two streams read halves of one big file on two connections (the
    // server's work is then spread over two backends): where the second
    // starts, and its connection, found while the inputs are hashed.
    let split = if plan::may_split(opts, mode, resumable, sample.is_some())
        && parallel_input(&sources, opts)?
    {
        match split_point(&sources[0], opts)? {
            Some(at) => {
                let second = crate::connect::connect(params).await?.client;
                progress.register(&second);
                clients.push(second);
                Some(at)
            }
            None => None,
        }
    } else {
        None
    };
    // Where an earlier run of the same load stopped: its ledger rows are
    // kept under the load's fingerprint (see `ledger`).
    let identities = match identities {
        Some(hashing) => hashing.finish().await?,
        None => Vec::new(),
    };
    let fingerprint =
        resumable.then(|| ledger::fingerprint(&identities, mode, effective_key.as_ref(), opts));
    let ledger_name = |part| plan::ledger_name(fingerprint.as_deref(), part);
    // The same load by the inputs' paths, sizes and modification times: an
    // interrupted run's rows are found by it when a file was corrected in
    // place keeping both (its content, and so its fingerprint, changed).
    let locations: Vec<Option<serde_json::Value>> = sources.iter().map(Source::location).collect();
    let located =
        resumable.then(|| ledger::fingerprint(&locations, mode, effective_key.as_ref(), opts));
    let path_key = |part| plan::ledger_name(located.as_deref(), part);
    // The same load of one file by its path alone: a run finds by it the
    // completed run that read the file before it grew.
    let path_only = (resumable && sources.len() == 1)
        .then(|| {
            let by_path = [sources[0].path_identity()];
            plan::ledger_name(
                Some(&ledger::fingerprint(
                    &by_path,
                    mode,
                    effective_key.as_ref(),
                    opts,
                )),
                None,
            )
        })
        .flatten();
    let mut options = engine_options(mode, key.as_ref(), &table, opts, &progress);

    // One stream, or the two halves.
    let mut streams = match split {
        None => vec![Stream {
            name: ledger_name(None),
            path_key: path_key(None),
            start: Position::default(),
            limit: None,
            credit: 0,
        }],
        Some(at) => halves(at, |part| (ledger_name(Some(part)), path_key(Some(part)))),
    };
    // An earlier run of this load read the file in halves on two
    // connections and stopped: this one (--streams 1, say) goes on from
    // where each half stopped, on two connections, instead of reading the
    // whole file again under the name for one (which would append the
    // halves' committed rows a second time).
    if resumable && !opts.restart && streams.len() == 1 && sources.len() == 1 {
        let mut stored_halves = Vec::new();
        for part in ["1", "2"] {
            let mut stored =
                ingest::stored_resume(&clients[0], &table, ledger_name(Some(part)).as_deref())
                    .await?;
            if let (None, Some(key)) = (&stored, path_key(Some(part))) {
                stored = match crate::watermark::key_of_unfinished(
                    &clients[0],
                    &table,
                    "path_key",
                    &key,
                )
                .await?
                {
                    Some(earlier) => {
                        crate::watermark::read_resume(&clients[0], &table, &earlier).await?
                    }
                    None => None,
                };
            }
            stored_halves.push(stored);
        }
        if stored_halves.iter().any(Option::is_some) {
            // Where the first half ended then; else where it would.
            let stored_limit = stored_halves[0]
                .as_ref()
                .and_then(|s| Position::from_state(&s.state))
                .and_then(|p| p.limit);
            let split = split_point(&sources[0], opts)?
                .filter(|&(at, _)| stored_limit.is_none_or(|limit| limit == at));
            let Some((offset, line)) = split else {
                return Err(Error::config(format!(
                    "an earlier run of this load into {table} read {} in two halves and stopped, and pgbulk cannot find where the halves met; run the load as before (without --streams 1), or with --restart to load the whole file again",
                    sources[0].name()
                )));
            };
            let second = crate::connect::connect(params).await?.client;
            progress.register(&second);
            clients.push(second);
            streams = halves((offset, line), |part| {
                (ledger_name(Some(part)), path_key(Some(part)))
            });
            let stopped = stored_halves.iter().any(|half| {
                half.as_ref()
                    .and_then(|s| Position::from_state(&s.state))
                    .is_none_or(|p| !p.complete)
            });
            if stopped {
                report.notes.push(format!(
                    "an earlier run of this load read {} in two halves and stopped: going on with each half where it stopped, on two connections",
                    sources[0].name()
                ));
            }
        }
    }
    let mut table_empty: Option<bool> = None;
    // Ledger rows of an earlier run found by the inputs' locations (or of
    // the run that read the file before it grew): removed once this run,
    // which keeps its own, has loaded everything.
    let mut superseded = Vec::new();
    let mut any_stored = false;
    // The completed run an interrupted one went on from (its file grew).
    let mut grew_from = None;
    let mut note_grown = |stored: &Option<ingest::StoredResume>| {
        let earlier = stored
            .as_ref()
            .and_then(|s| Position::from_state(&s.state))
            .and_then(|p| p.grew_from);
        if let Some(key) = earlier {
            grew_from = Some(key);
        }
    };
    for stream in &mut streams {
        if !resumable || opts.restart {
            continue;
        }
        let mut stored = ingest::stored_resume(&clients[0], &table, stream.name.as_deref()).await?;
        if let (None, Some(path_key)) = (&stored, &stream.path_key) {
            let earlier =
                crate::watermark::key_of_unfinished(&clients[0], &table, "path_key", path_key)
                    .await?;
            if let Some(earlier) = earlier {
                stored = crate::watermark::read_resume(&clients[0], &table, &earlier).await?;
                superseded.push(earlier);
            }
        }
        // Found either way, it is where this run goes on from.
        any_stored |= stored.is_some();
        note_grown(&stored);
        if stored.is_some() && table_empty.is_none() {
            table_empty = Some(is_empty(&clients[0], &table).await?);
        }
        let verdict = ledger::judge(
            stored.as_ref(),
            stream.limit,
            mode,
            table_empty.unwrap_or(false),
            &table.to_string(),
        );
        if let Some(why) = plan::follow(stream, verdict)? {
            if !report.notes.contains(&why) {
                report.notes.push(why);
            }
        }
    }
    // A run that went on from a grown file's earlier end read it on one
    // connection, under the load's name for one: a big file, which would
    // be read in halves, goes on (or is done) as that run left it.
    if resumable && !opts.restart && !any_stored && streams.len() == 2 {
        let whole = ledger_name(None);
        let stored = ingest::stored_resume(&clients[0], &table, whole.as_deref()).await?;
        note_grown(&stored);
        if let Some(stored) = stored {
            any_stored = true;
            one_stream(&mut streams, &mut clients, whole, path_key(None));
            let empty = is_empty(&clients[0], &table).await?;
            let verdict = ledger::judge(Some(&stored), None, mode, empty, &table.to_string());
            report.notes.extend(plan::follow(&mut streams[0], verdict)?);
        }
    }
    // A file that grew since a completed run of this load read it (lines
    // appended): the lines appended, on one connection. A replace loads
    // all of it, as the table is to hold the file.
    let grown = match (&path_only, &identities[..]) {
        (Some(path_only), [Some(identity)])
            if !opts.restart
                && !any_stored
                && matches!(mode, LoadMode::Append | LoadMode::Upsert) =>
        {
            let size = identity.get("size").and_then(serde_json::Value::as_u64);
            match size {
                Some(size) => {
                    ledger::grown_from(&clients[0], &table, path_only, &sources[0], size).await?
                }
                None => None,
            }
        }
        _ => None,
    };
    let mut grown_after = None;
    if let Some(grown) = grown {
        let empty = is_empty(&clients[0], &table).await?;
        let (verdict, note) =
            ledger::judge_grown(&grown, mode, empty, &table.to_string(), &sources[0].name());
        if matches!(verdict, ledger::Verdict::Resume(_)) {
            one_stream(
                &mut streams,
                &mut clients,
                ledger_name(None),
                path_key(None),
            );
            grew_from = Some(grown.key.clone());
            grown_after = Some(grown.end.line.saturating_sub(1));
        }
        if let Some(why) = plan::follow(&mut streams[0], verdict)? {
            report.notes.push(why);
        }
        report.notes.extend(note);
    }
    superseded.extend(grew_from.clone());
    let start = plan::start(&streams, sources.len());
    if opts.dry_run {
        report.plan = dry_run_plan(&prepared, &report, &table, &sources, &start, grown_after);
        report.already_loaded = start.already_loaded;
        return Ok(report);
    }
    if start.already_loaded {
        report.already_loaded = true;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if start.resumed_rows > 0 {
        report.resumed_after_rows = Some(start.resumed_rows);
    }
    if start.continues && mode == LoadMode::Replace {
        // The interrupted run's first batch deleted the old rows and
        // committed: continuing must not delete what it loaded.
        options.mode = Mode::Upsert;
    }

    let rejects = match &opts.reject_file {
        // Resumed: the reject file as it was at the last commit, appended to.
        Some(path) => {
            // Appended to: kept as it is (the lengths are cut to the file's).
            let keep = start
                .rejects
                .or((of_many == Some(true)).then_some((u64::MAX, u64::MAX)));
            Some(Arc::new(Mutex::new(Rejects::open(path, keep)?)))
        }
        None => None,
    };
    let rejected = Arc::new(AtomicU64::new(0));
    let batch_rows = if opts.single_transaction {
        u64::MAX
    } else {
        opts.batch_rows.max(1)
    };
    let inferred = report.inferred_ddl.is_some();
    let make_shared = |stream: &Stream, sample: Option<Replay>| {
        Arc::new(Mutex::new(Shared {
            opts: opts.clone(),
            table: table.clone(),
            facts: facts.clone(),
            sources: sources.clone(),
            identities: resumable.then(|| identities.clone()),
            file: stream.start.file,
            resume_at: Some(stream.start.clone()),
            limit: stream.limit,
            credit: stream.credit,
            reader: None,
            file_columns: Vec::new(),
            mapping: Vec::new(),
            fields_expected: 0,
            sample,
            rows_before: stream.start.rows,
            rows_in_batches: 0,
            rejects: rejects.clone(),
            rejected: rejected.clone(),
            progress: progress.clone(),
            scratch: String::new(),
            raw: Vec::new(),
            line: 0,
            name: String::new(),
            path_key: stream.path_key.clone(),
            path_only: path_only.clone(),
            ended: None,
            grew_from: grew_from.clone(),
            inferred,
        }))
    };

    // An upsert of one big file: on several connections, each key's rows
    // in one of them, when the table allows it.
    let hashed = streams.len() == 1
        && plan::may_hash(opts, mode, exists, resumable, sample.is_some(), &sources);
    let engine = if streams.len() == 1 {
        let shared = make_shared(&streams[0], sample);
        let mut prepared = prepared;
        let mut in_streams = None;
        // The first batch, when it chose the connections.
        let mut first = None;
        // The rest in one batch (the first rows chose it).
        let mut one_batch = false;
        // The batches after the first rows' go on counting from them.
        let mut batch_offset = opts.batch_offset;
        if hashed {
            prepared = ingest::settle(&mut clients[0], prepared, &options).await?;
            let options = Options {
                stream: streams[0].name.clone(),
                ..options.clone()
            };
            let connections = match opts.upsert_streams {
                Some(n) => n,
                None => {
                    let choice = probe::upsert_streams(
                        &mut clients[0],
                        &prepared,
                        &options,
                        &shared,
                        &table,
                        batch_rows,
                        !opts.batch_rows_asked && opts.fill_empty,
                    )
                    .await
                    .map_err(|e| suggest_max_errors(e, opts))?;
                    batch_offset += choice.first.as_ref().map_or(0, |f| f.batches.len());
                    first = choice.first;
                    one_batch = choice.one_batch;
                    choice.streams
                }
            };
            let options = Options {
                batch_offset,
                ..options
            };
            let parts = Parts {
                params,
                connections,
                progress: &progress,
                shared: &shared,
                batch_rows,
                table: &table,
            };
            // The streams commit their shares of a batch one after another,
            // the position last: a run from the start stopped between those
            // commits leaves rows older than a position an earlier run
            // stored (`--restart`, or a table emptied since), which the next
            // run would go on from. Forgotten first, the next run starts over
            // instead. (A first batch committed here stored this run's.)
            if connections > 1 && resumable && start.resumed_rows == 0 && first.is_none() {
                let key = crate::watermark::key(&table, options.stream.as_deref());
                crate::watermark::remove(&clients[0], &table, &key).await?;
            }
            let result = if connections > 1 {
                upsert_in_streams(&mut clients, &prepared, &options, parts).await
            } else {
                Ok(None)
            };
            match result {
                Ok(done) => in_streams = done,
                Err(stopped) if progress.is_interrupted() => return Err(stopped.error),
                Err(Stopped { error, committed }) => {
                    // Every batch before the failing one committed with its
                    // ledger row: one stream goes on from there, and names
                    // the failing row if the input is at fault.
                    info!(
                        "{table}: the upsert on {connections} connections stopped ({error}); going on with one from its last committed batch"
                    );
                    drop(std::mem::take(&mut clients));
                    let mut total = ingest::Counts::default();
                    let committed: Vec<_> = first
                        .iter()
                        .flat_map(|f| f.batches.iter().cloned())
                        .chain(committed)
                        .collect();
                    for counts in committed.iter().flat_map(|b| b.tables.values()) {
                        total.add(counts);
                    }
                    let committed_rows =
                        total.inserted + total.updated + total.unchanged + total.repeated;
                    progress
                        .rows_read
                        .store(read_at_entry.0 + committed_rows, Ordering::Relaxed);
                    progress
                        .bytes_read
                        .store(read_at_entry.1, Ordering::Relaxed);
                    let client = crate::connect::connect(params).await?.client;
                    let one = LoadOptions {
                        upsert_streams: Some(1),
                        batch_offset: opts.batch_offset + committed.len(),
                        ..opts.clone()
                    };
                    let mut rest =
                        Box::pin(load_inputs(client, params, &one, progress.clone(), of_many))
                            .await?;
                    // One load: the batches on several connections are this
                    // run's, not an earlier run's.
                    rest.add_counts(&total, committed.len() as u64);
                    rest.resumed_after_rows = report.resumed_after_rows;
                    return Ok(rest);
                }
            }
        }
        let engine = if let Some(engine) = in_streams {
            engine
        } else {
            let before_visible = opts.before_final_commit.as_ref().map(|h| {
                Arc::new(AtEnd {
                    shared: shared.clone(),
                    hook: h.0.clone(),
                }) as Arc<dyn ingest::BeforeVisible>
            });
            // An empty table with an index: the first batch fills a new
            // copy of it, indexed once the rows are in.
            let fill_empty = opts.fill_empty
                && exists
                && crate::rebuild::fill_pays(&mut clients[0], &table).await?;
            // Such a table, or a new one with an index, takes the input in
            // one batch unless batches were asked for: its indexes are
            // built once, where each later batch would maintain them row
            // by row (5 M narrow rows into an empty keyed table: 5.6 s,
            // against 22 s in batches of 1 M rows and 18 s for `psql
            // \copy`).
            let indexed_new = !exists
                && opts.fill_empty
                && (facts.primary_key.is_some() || !facts.indexes.is_empty());
            if !one_batch && !opts.batch_rows_asked && (fill_empty || indexed_new) {
                debug!(
                    "{table}: empty with an index: loading the input in one batch, which builds the indexes once the rows are in (--batch-rows N keeps batches)"
                );
                one_batch = true;
            }
            let batch_rows = if one_batch { u64::MAX } else { batch_rows };
            let batches = std::iter::from_fn(move || next_batch(&shared, batch_rows).transpose());
            let options = Options {
                stream: streams[0].name.clone(),
                batch_offset,
                before_visible,
                fill_empty,
                // One connection: a batch changing most of the table's rows
                // may rewrite it (`fill_empty` is off, as here, for loads
                // beside others into the same table).
                rewrite_batches: opts.fill_empty,
                ..options
            };
            ingest::ingest_prepared(&mut clients[0], &prepared, |_| batches, &options)
                .await
                .map_err(|e| suggest_max_errors(e, opts))?
        };
        match first {
            Some(mut first) => {
                first.merge(engine);
                first
            }
            None => engine,
        }
    } else {
        // Create and migrate once, then load both halves at once.
        let settled = ingest::settle(&mut clients[0], prepared, &options).await?;
        let mut tasks = Vec::new();
        for (stream, mut client) in streams.iter().zip(std::mem::take(&mut clients)) {
            let shared = make_shared(stream, None);
            let settled = settled.clone();
            let options = Options {
                stream: stream.name.clone(),
                ..options.clone()
            };
            tasks.push(tokio::spawn(async move {
                let batches =
                    std::iter::from_fn(move || next_batch(&shared, batch_rows).transpose());
                let result =
                    ingest::ingest_prepared(&mut client, &settled, |_| batches, &options).await;
                (client, result)
            }));
        }
        let mut merged = ingest::Report::default();
        let mut first_error = None;
        for task in tasks {
            match task.await {
                Ok((client, Ok(r))) => {
                    clients.push(client);
                    merged.merge(r);
                }
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::new(
                        ErrorKind::Io,
                        format!("a load stream failed: {e}"),
                    ));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(suggest_max_errors(e, opts));
        }
        merged
    };
    if let Some(client) = clients.first() {
        for key in &superseded {
            crate::watermark::remove_prefix(client, table.schema_or_public(), key).await?;
        }
    }
    report.count(engine);
    report.rows_read = progress.rows_read.load(Ordering::Relaxed);
    report.rejected = rejected.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    if exists && report.batches == 0 && matches!(mode, LoadMode::Replace | LoadMode::ReplaceAtomic)
    {
        report.notes.push(format!(
            "{table} was not replaced and keeps its rows: the input has no rows (a replace swaps the table's rows for the first batch it loads; TRUNCATE empties a table)"
        ));
    }
    Ok(report)
}

/// What [`upsert_in_streams`] reads and reports through.
struct Parts<'a> {
    params: &'a crate::conninfo::ConnParams,
    /// Connections to upsert on.
    connections: usize,
    progress: &'a Arc<Progress>,
    shared: &'a Arc<Mutex<Shared>>,
    batch_rows: u64,
    table: &'a TableName,
}

/// Why an upsert on several connections stopped, and the batches it
/// committed before.
struct Stopped {
    error: Error,
    committed: Vec<ingest::BatchReport>,
}

impl From<Error> for Stopped {
    fn from(error: Error) -> Self {
        Self {
            error,
            committed: Vec::new(),
        }
    }
}

/// Upserts the input on `parts.connections` connections, each key's rows in one
/// of them (see [`ingest::ingest_parallel`]), when the table allows it:
/// `Ok(None)` when it does not (nothing was read). `prepared` is settled.
async fn upsert_in_streams(
    clients: &mut Vec<Client>,
    prepared: &ingest::Prepared,
    options: &Options,
    parts: Parts<'_>,
) -> std::result::Result<Option<ingest::Report>, Stopped> {
    let columns = {
        let mut s = parts
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        if reader::exhausted(&mut s)? {
            return Ok(None);
        }
        s.file_columns.clone()
    };
    let unsuited =
        ingest::parallel_unsuited(&clients[0], prepared, parts.table, &columns, options).await?;
    if let Some(why) = unsuited {
        tracing::debug!("{}: upserting on one connection: {why}", parts.table);
        return Ok(None);
    }
    info!(
        "{}: upserting on {} connections, each key's rows on one",
        parts.table, parts.connections
    );
    while clients.len() < parts.connections {
        let client = crate::connect::connect(parts.params).await?.client;
        parts.progress.register(&client);
        clients.push(client);
    }
    let (shared, batch_rows) = (parts.shared.clone(), parts.batch_rows);
    let batches = std::iter::from_fn(move || next_batch(&shared, batch_rows).transpose());
    // The batches committed, each with every connection's counts.
    let committed = Arc::new(Mutex::new(Vec::new()));
    let options = Options {
        on_commit: Some({
            let (committed, then) = (committed.clone(), options.on_commit.clone());
            Arc::new(move |batch: &ingest::BatchReport| {
                if let Ok(mut c) = committed.lock() {
                    c.push(batch.clone());
                }
                if let Some(then) = &then {
                    then(batch);
                }
            })
        }),
        ..options.clone()
    };
    let (back, result) =
        ingest::ingest_parallel(std::mem::take(clients), prepared, batches, &options).await;
    *clients = back;
    result.map(Some).map_err(|error| Stopped {
        error,
        committed: committed
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default(),
    })
}

/// Creates or migrates `opts.table` to `opts.schema_ddl` now, loading no
/// row (nothing without a declaration): for loads into it that then run
/// side by side, each without the declaration.
pub async fn settle_declared(client: &mut Client, opts: &LoadOptions) -> Result<()> {
    let Some(ddl) = &opts.schema_ddl else {
        return Ok(());
    };
    let session = Session::read(client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let declaration = Declaration::parse(ddl)?.qualified(&session.current_schema);
    if !declaration.tables().contains(&table) {
        return Err(Error::config(format!(
            "the schema does not declare {table}"
        )));
    }
    let prepared = ingest::prepare_in(client, session, &declaration).await?;
    let options = Options {
        lock_policy: opts.lock_policy.clone(),
        ..Options::default()
    };
    ingest::settle(client, prepared, &options).await?;
    Ok(())
}

/// What `--type` overrides an existing `table` does not follow: they apply
/// to a table pgbulk creates, so one naming a column the table lacks, or
/// a type other than its column's, is said (the load goes on into the
/// table as it is).
async fn types_not_applied(
    client: &Client,
    facts: &crate::catalog::TableFacts,
    table: &TableName,
    types: &[(String, String)],
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for (column, sql_type) in types {
        let wanted = crate::infer::normalize_name(column);
        let found = facts
            .columns
            .iter()
            .find(|c| c.name == *column || c.name == wanted);
        let Some(found) = found else {
            notes.push(format!(
                "--type {column}={sql_type}: {table} exists and has no column \"{column}\" (--type applies to a table pgbulk creates)"
            ));
            continue;
        };
        let oid: Option<u32> = client
            .query_one("SELECT pg_catalog.to_regtype($1)::oid", &[sql_type])
            .await
            .map_err(|e| Error::server("reading a --type", e))?
            .get(0);
        if oid != Some(found.type_oid) {
            notes.push(format!(
                "--type {column}={sql_type}: {table} exists and its column \"{}\" is {}, which the load keeps (--type applies to a table pgbulk creates; --schema migrates one)",
                found.name, found.type_name
            ));
        }
    }
    Ok(notes)
}

/// Bytes of the first input read to detect its dialect.
const SNIFF_BYTES: usize = 256 * 1024;

/// `opts` with what the first input says about itself: a UTF-16 byte
/// order mark when the encoding is UTF-8, and the delimiter when
/// `detect_delimiter` asks for it. The notes say what was detected.
pub fn detect_dialect(opts: &LoadOptions) -> Result<(LoadOptions, Vec<String>)> {
    let mut detected = opts.clone();
    let mut notes = Vec::new();
    if !opts.detect_delimiter {
        opts.dialect.validate().map_err(Error::config)?;
        if opts.encoding != encoding_rs::UTF_8
            && !opts.detect_format
            && !(opts.detect_header && opts.dialect.text)
        {
            return Ok((detected, notes));
        }
    }
    let source = opts.sources.first().cloned().unwrap_or(Source::Stdin);
    let name = source.name();
    let mut head = crate::input::head(&source, encoding_rs::UTF_8, SNIFF_BYTES)?;
    if opts.encoding == encoding_rs::UTF_8 {
        if let Some(encoding) = sniff::bom_encoding(&head) {
            detected.encoding = encoding;
            notes.push(format!(
                "{name}: reading it as {} (its byte order mark says so; --encoding sets it)",
                encoding.name()
            ));
            head = crate::input::head(&source, encoding, SNIFF_BYTES)?;
        }
    }
    // Neither --format nor --null given: a JSON document is not read as
    // CSV, which would mangle it and exit 0.
    if opts.detect_format {
        if let Some((what, reader)) = sniff::json_document(&head, opts.skip_lines) {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{name}: {what}, which pgbulk does not read as a file (it reads CSV, PostgreSQL's text format and Parquet); in Python, pgbulk.write({reader}) loads it"
                ),
            ));
        }
    }
    let mut delimiter_note = None;
    if opts.detect_delimiter {
        let delimiter = sniff::delimiter(&head, &opts.dialect, opts.skip_lines)
            .map_err(|why| Error::new(ErrorKind::Data, format!("{name}: {why}")))?;
        detected.dialect.delimiter = delimiter;
        detected.detect_delimiter = false;
        detected.dialect.validate().map_err(|why| {
            Error::config(format!(
                "{name}: with the delimiter detected ({}): {why}; give --delimiter",
                sniff::describe(delimiter)
            ))
        })?;
        if delimiter != b',' {
            delimiter_note = Some(format!(
                "{name}: delimiter {} (detected from the header and first lines; --delimiter sets it)",
                sniff::describe(delimiter)
            ));
        }
    }
    if opts.detect_format
        && !detected.dialect.text
        && detected.dialect.delimiter == b'\t'
        && (sniff::text_format(&head, opts.skip_lines) || later_text_format(&source)?)
    {
        detected.dialect.text = true;
        if detected.dialect.null.is_empty() {
            detected.dialect.null = b"\\N".to_vec();
        }
        detected.detect_format = false;
        detected.dialect.validate().map_err(|why| {
            Error::config(format!("{name}: read as PostgreSQL's text format: {why}"))
        })?;
        // Its note says tab-separated: the delimiter's is not needed.
        delimiter_note = None;
        notes.push(format!(
            "{name}: PostgreSQL's text format, as COPY TO writes it (tab-separated, \\N for NULL, backslash escapes; detected from its \\N fields; --format csv reads it as CSV)"
        ));
    }
    notes.extend(delimiter_note);
    if opts.detect_header && detected.dialect.text {
        detected.header = sniff::text_header(&head, &detected.dialect, opts.skip_lines);
        detected.detect_header = false;
        notes.push(if detected.header {
            format!(
                "{name}: its first line is read as a header (its fields are not values of their columns; --no-header reads it as data)"
            )
        } else {
            format!(
                "{name}: its first line is read as data, as COPY TO writes no header unless asked (--header reads it as one)"
            )
        });
    }
    Ok((detected, notes))
}

/// Whether the middle or the end of a big uncompressed file has a `\N`
/// field (see [`sniff::text_format`]): a table's rows with NULLs can sit
/// anywhere in what `COPY ... TO` wrote, after updates at its end.
fn later_text_format(source: &Source) -> Result<bool> {
    let Some(size) = source.size() else {
        return Ok(false);
    };
    if size <= SNIFF_BYTES as u64 {
        return Ok(false);
    }
    let part = SNIFF_BYTES as u64;
    for offset in [size / 2 - part / 2, size.saturating_sub(part)] {
        let Some(stream) =
            crate::input::open_at(source, encoding_rs::UTF_8, Arc::default(), offset)?
        else {
            return Ok(false);
        };
        let mut bytes = Vec::with_capacity(SNIFF_BYTES);
        let mut part_of = std::io::Read::take(stream, part);
        std::io::Read::read_to_end(&mut part_of, &mut bytes)
            .map_err(|e| Error::io(format!("cannot read {}", source.name()), e))?;
        // The line the offset fell in is a piece of one: left out.
        if sniff::text_format(&bytes, 1) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The engine's options for a load in `mode`.
/// Plans `declaration` on `client` (see [`ingest::prepare_in`]) and
/// chooses the key and mode of loading `table` (which `exists` or not):
/// the plan, the table's declared facts and the choice.
pub(crate) async fn prepare_table(
    client: &mut Client,
    session: Session,
    declaration: &Declaration,
    opts: &LoadOptions,
    table: &TableName,
    exists: bool,
) -> Result<(
    ingest::Prepared,
    crate::catalog::TableFacts,
    plan::KeyAndMode,
)> {
    let prepared = ingest::prepare_in(client, session, declaration).await?;
    let facts = prepared
        .facts(table)
        .cloned()
        .ok_or_else(|| Error::config(format!("table {table} is not declared")))?;
    let chosen = key_and_mode(opts, &facts, table, exists)?;
    Ok((prepared, facts, chosen))
}

pub(crate) fn engine_options(
    mode: LoadMode,
    key: Option<&Vec<String>>,
    table: &TableName,
    opts: &LoadOptions,
    progress: &Arc<Progress>,
) -> Options {
    let commit_progress = progress.clone();
    Options {
        mode: match mode {
            LoadMode::Append | LoadMode::Upsert => Mode::Upsert,
            LoadMode::Replace => Mode::DeleteThenUpsert,
            LoadMode::ReplaceAtomic => Mode::ReplaceAtomic,
        },
        upsert: if mode == LoadMode::Append {
            Upsert::Append
        } else {
            Upsert::Auto
        },
        keys: key
            .iter()
            .map(|k| (table.to_string(), (*k).clone()))
            .collect::<BTreeMap<_, _>>(),
        lock_policy: opts.lock_policy.clone(),
        on_duplicate: opts.on_duplicate,
        rewrite: opts.rewrite,
        // Set where the load runs on one connection.
        rewrite_batches: false,
        merging: Some(progress.merging.clone()),
        reject_rows: opts.max_errors > 0 || opts.locate_rows,
        // A load that fails before its first commit leaves no table.
        create_with_first_batch: true,
        on_commit: Some(Arc::new(move |b: &ingest::BatchReport| {
            let rows: u64 = b
                .tables
                .values()
                .map(|c| c.inserted + c.updated + c.unchanged + c.repeated)
                .sum();
            commit_progress
                .rows_committed
                .fetch_add(rows, Ordering::Relaxed);
            commit_progress
                .batches_committed
                .fetch_add(1, Ordering::Relaxed);
        })),
        batch_offset: opts.batch_offset,
        ..Options::default()
    }
}

/// The inputs' identities for the ledger (see [`Source::identity`]),
/// taken on a thread of their own while the load gets ready: hashing reads
/// every file once. Dropped unfinished, the thread stops reading.
struct Identities {
    task: Option<tokio::task::JoinHandle<Result<Vec<Option<serde_json::Value>>>>>,
    stop: Arc<AtomicBool>,
}

impl Identities {
    fn start(sources: &[Source]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sources, stopped) = (sources.to_vec(), stop.clone());
        let task = tokio::task::spawn_blocking(move || {
            sources
                .iter()
                .map(|s| {
                    s.identity(&stopped)
                        .map_err(|e| Error::io(format!("cannot read {}", s.name()), e))
                })
                .collect()
        });
        Self {
            task: Some(task),
            stop,
        }
    }

    async fn finish(mut self) -> Result<Vec<Option<serde_json::Value>>> {
        let Some(task) = self.task.take() else {
            return Ok(Vec::new());
        };
        task.await
            .map_err(|e| Error::new(ErrorKind::Io, format!("hashing the inputs: {e}")))?
    }
}

impl Drop for Identities {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether `table` holds no row.
async fn is_empty(client: &Client, table: &TableName) -> Result<bool> {
    let row = client
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", table.quoted()),
            &[],
        )
        .await
        .map_err(|e| Error::server(&format!("reading {table}"), e))?;
    Ok(row.get(0))
}

fn empty_file(name: &str) -> Error {
    Error::new(
        ErrorKind::Data,
        format!("{name}: the input is empty (expected a header line)"),
    )
}

/// A reader's error: bad input is a data error (exit 9); a failed read
/// (a disk, a pipe) is an I/O error (exit 1).
fn csv_error(name: &str, e: CsvError) -> Error {
    match e {
        CsvError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Error::new(ErrorKind::Data, format!("{name}: {io}")).with_source(io)
        }
        CsvError::Io(io) => Error::new(ErrorKind::Io, format!("{name}: {io}")).with_source(io),
        CsvError::TextFormatNull { line, field, tab } => Error::new(
            ErrorKind::Data,
            format!(
                "{name}:{line}:{field}: the field is {}",
                crate::csv::text_null(tab)
            ),
        ),
        CsvError::EndMarkerNotAlone { line } => Error::new(
            ErrorKind::Data,
            format!("{name}:{line}: {}", crate::csv::END_MARKER_NOT_ALONE),
        ),
        other => Error::new(ErrorKind::Data, format!("{name}: {other}")),
    }
}

/// How to have rows a constraint refuses set aside.
const MAX_ERRORS_HINT: &str =
    "; --max-errors N sets such rows aside (in --reject-file), each named by its input line";

/// A row a constraint refused failed its batch (the server names the
/// constraint and the row's values, not the input line): says how to have
/// such rows set aside, each named by its line, unless `opts` sets some
/// aside already or the caller offers no such option.
fn suggest_max_errors(error: Error, opts: &LoadOptions) -> Error {
    use crate::ServerErrorKind::{
        CheckViolation, ForeignKeyViolation, NotNullViolation, UniqueViolation,
    };
    let refused = matches!(
        error.server_kind(),
        Some(UniqueViolation | NotNullViolation | CheckViolation | ForeignKeyViolation)
    );
    // Only rows: a catalog conflict (creating a table) is not bad data.
    if opts.max_errors > 0
        || !opts.max_errors_hint
        || !refused
        || error.kind() != ErrorKind::Data
        || error.message().contains("--max-errors")
    {
        return error;
    }
    match error.location() {
        // Named by its line already.
        Some(_) if error.message().ends_with('.') => {
            error.append(" --max-errors N sets such rows aside (in --reject-file).")
        }
        Some(_) => error.append("; --max-errors N sets such rows aside (in --reject-file)"),
        None => error.append(MAX_ERRORS_HINT),
    }
}
