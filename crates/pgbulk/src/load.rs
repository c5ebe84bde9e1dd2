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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use encoding_rs::Encoding;
use tokio_postgres::Client;
use tracing::info;

use crate::codec::shorten;
use crate::csv::{self, CsvError, Dialect};
use crate::error::{Error, ErrorKind, Result};
use crate::infer::{self, Inference};
use crate::ingest::{
    self, Batch, BatchWatermark, Mode, Options, RowFailure, Rows, TextRow, TextRows, Upsert,
};
use crate::input::{self, Source};
use crate::lock::LockPolicy;
use crate::schema::facts::TableFacts;
use crate::schema::{Declaration, TableName};
use crate::watermark;

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
    /// Whether the first record of each input is a header.
    pub header: bool,
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
    /// Rows per batch (each batch commits).
    pub batch_rows: u64,
    /// The whole load in one transaction.
    pub single_transaction: bool,
    /// Bad rows tolerated (rejected) before the load fails.
    pub max_errors: u64,
    /// Where rejected rows go, exactly as in the input; reasons go to
    /// `PATH.log`.
    pub reject_file: Option<PathBuf>,
    /// Ignore the stored position and load the inputs from the start.
    pub restart: bool,
    /// Lock timeouts for migrations.
    pub lock_policy: LockPolicy,
    /// Connections to load with at once (one big uncompressed file is split
    /// in halves); 1 disables it.
    pub streams: usize,
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
            header: true,
            skip_lines: 0,
            encoding: encoding_rs::UTF_8,
            columns: None,
            ignore_extra: false,
            schema_ddl: None,
            mode: None,
            key: None,
            batch_rows: DEFAULT_BATCH_ROWS,
            single_transaction: false,
            max_errors: 0,
            reject_file: None,
            restart: false,
            lock_policy: LockPolicy::default(),
            streams: 2,
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
    fn register(&self, client: &Client) {
        if let Ok(mut tokens) = self.cancel.0.lock() {
            tokens.push(client.cancel_token());
        }
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
    /// Rows whose key existed with the same values (and repeats of a key).
    pub unchanged: u64,
    /// Rows deleted (replace).
    pub deleted: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Batches committed.
    pub batches: u64,
    /// Seconds in all.
    pub seconds: f64,
    /// The DDL chosen when the table was created from inferred types.
    pub inferred_ddl: Option<String>,
    /// Rows of the inputs already loaded by an earlier, interrupted run and
    /// skipped now.
    pub resumed_after_rows: Option<u64>,
    /// The inputs were loaded completely before: nothing was done.
    pub already_loaded: bool,
    /// Migrations applied.
    pub migrations: Vec<String>,
}

/// Loads the inputs into the table. See the module documentation.
/// `client` does the work; when `opts.streams` allows and the input is one
/// big uncompressed file (append and upsert), a second connection to
/// `params` loads its second half at the same time. Every connection's
/// cancel token is registered in `progress` for interrupt handling.
pub async fn load(
    client: Client,
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    progress.register(&client);
    let mut clients = vec![client];
    let started = Instant::now();
    let mut report = LoadReport::default();
    let sources = if opts.sources.is_empty() {
        vec![Source::Stdin]
    } else {
        opts.sources.clone()
    };
    let total: u64 = sources.iter().filter_map(Source::size).sum();
    progress.bytes_total.store(total, Ordering::Relaxed);
    let schema: String = clients[0]
        .query_one("SELECT current_schema()::text", &[])
        .await
        .map_err(|e| Error::server("reading current_schema()", e))?
        .get(0);
    let table = TableName::new(
        opts.table.schema.as_deref().unwrap_or(&schema),
        &opts.table.name,
    );

    // The declaration: given, the existing table, or inferred.
    let mut sample: Option<Replay> = None;
    let declaration = if let Some(ddl) = &opts.schema_ddl {
        let d = Declaration::parse(ddl)?.qualified(&schema);
        if !d.tables().contains(&table) {
            return Err(Error::config(format!(
                "the schema file does not declare table {table} (it declares {})",
                d.tables()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        d
    } else if crate::schema::facts::table_oid(&clients[0], table.schema_or_public(), &table.name)
        .await?
        .is_some()
    {
        Declaration::existing(vec![table.clone()])
    } else {
        let (ddl, replay) = infer_from(&sources[0], opts, &table, progress.bytes_read.clone())?;
        info!("created from inferred types:\n{ddl}");
        report.inferred_ddl = Some(ddl.clone());
        sample = replay;
        Declaration::parse(&ddl)?
    };
    let facts = declaration
        .resolve(&mut clients[0])
        .await?
        .into_iter()
        .find(|(n, _)| *n == table)
        .map(|(_, f)| f)
        .ok_or_else(|| Error::config(format!("table {table} is not declared")))?;

    // Key columns named as in the file are matched like header names.
    let key: Option<Vec<String>> = opts
        .key
        .as_ref()
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    match_column(&facts, n).ok_or_else(|| {
                        Error::config(format!("key column \"{n}\" is not a column of {table}"))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let has_key = facts.primary_key.is_some() || key.is_some();
    let mode = opts.mode.unwrap_or(if has_key {
        LoadMode::Upsert
    } else {
        LoadMode::Append
    });
    if mode == LoadMode::Upsert && !has_key {
        return Err(Error::config(format!(
            "upsert needs a key: {table} has no primary key (name the key columns with --key)"
        )));
    }

    // Where an earlier run of the same inputs stopped.
    let identities: Vec<Option<serde_json::Value>> = sources.iter().map(Source::identity).collect();
    let resumable = matches!(mode, LoadMode::Append | LoadMode::Upsert)
        && identities.iter().all(Option::is_some)
        && !opts.single_transaction;
    let options = engine_options(mode, key.as_ref(), &table, opts, &progress);

    // One stream, or two reading halves of one big file on two connections
    // (the server's work is then spread over two backends).
    let mut streams = vec![Stream {
        name: None,
        start: Position::default(),
        limit: None,
    }];
    // Measured: narrow rows leave the client idle while one backend is busy,
    // so a second stream helps; wide rows already keep both cores busy.
    let narrow = facts.columns.len() <= PARALLEL_MAX_COLUMNS;
    if opts.streams > 1
        && narrow
        && resumable
        && sample.is_none()
        && parallel_input(&sources, opts)?
    {
        if let Some((offset, line)) = split_point(&sources[0], opts)? {
            let second = crate::connect::connect(params).await?.client;
            progress.register(&second);
            clients.push(second);
            streams = vec![
                Stream {
                    name: Some("1".to_owned()),
                    start: Position::default(),
                    limit: Some(offset),
                },
                Stream {
                    name: Some("2".to_owned()),
                    start: Position {
                        file: 0,
                        offset,
                        line,
                        rows: 0,
                    },
                    limit: None,
                },
            ];
        }
    }
    for stream in &mut streams {
        if !resumable || opts.restart {
            continue;
        }
        let key = watermark::key(&table, stream.name.as_deref());
        let Some(state) = watermark::read_resume(&clients[0], &table, &key).await? else {
            continue;
        };
        if state.get("inputs") == Some(&serde_json::json!(identities))
            && state.get("limit").and_then(serde_json::Value::as_u64) == stream.limit
        {
            stream.start = Position::from_json(&state);
        }
    }
    if streams.iter().all(|s| s.start.file >= sources.len()) {
        report.already_loaded = true;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let resumed: u64 = streams.iter().map(|s| s.start.rows).sum();
    if resumed > 0 {
        report.resumed_after_rows = Some(resumed);
    }

    let rejects = match &opts.reject_file {
        Some(path) => Some(Arc::new(Mutex::new(Rejects::create(path)?))),
        None => None,
    };
    let rejected = Arc::new(AtomicU64::new(0));
    let batch_rows = if opts.single_transaction {
        u64::MAX
    } else {
        opts.batch_rows.max(1)
    };
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
        }))
    };

    let engine = if streams.len() == 1 {
        let shared = make_shared(&streams[0], sample);
        let batches = std::iter::from_fn(move || next_batch(&shared, batch_rows).transpose());
        ingest::ingest(&mut clients[0], &declaration, |_| batches, &options).await?
    } else {
        // Create and migrate once, then load both halves at once.
        let setup = Options {
            stream: Some("setup".to_owned()),
            on_commit: None,
            ..options.clone()
        };
        ingest::ingest(
            &mut clients[0],
            &declaration,
            |_| vec![Ok(Batch::new(None, Vec::new()))],
            &setup,
        )
        .await?;
        let mut tasks = Vec::new();
        for (stream, mut client) in streams.iter().zip(clients) {
            let shared = make_shared(stream, None);
            let declaration = declaration.clone();
            let options = Options {
                stream: stream.name.clone(),
                ..options.clone()
            };
            tasks.push(tokio::spawn(async move {
                let batches =
                    std::iter::from_fn(move || next_batch(&shared, batch_rows).transpose());
                ingest::ingest(&mut client, &declaration, |_| batches, &options).await
            }));
        }
        let mut merged = ingest::Report::default();
        let mut first_error = None;
        for task in tasks {
            match task.await {
                Ok(Ok(r)) => {
                    for (t, c) in r.tables {
                        let e = merged.tables.entry(t).or_default();
                        e.inserted += c.inserted;
                        e.updated += c.updated;
                        e.unchanged += c.unchanged;
                        e.deleted += c.deleted;
                    }
                    merged.batches.extend(r.batches);
                    merged.migrations.extend(r.migrations);
                }
                Ok(Err(e)) => {
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
            return Err(e);
        }
        merged
    };
    for c in engine.tables.values() {
        report.inserted += c.inserted;
        report.updated += c.updated;
        report.unchanged += c.unchanged;
        report.deleted += c.deleted;
    }
    report.batches = engine.batches.len() as u64;
    report.migrations = engine.migrations;
    report.rows_read = progress.rows_read.load(Ordering::Relaxed);
    report.rejected = rejected.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Files at least this big are read as two halves on two connections.
const PARALLEL_MIN_BYTES: u64 = 32 << 20;

/// Tables with more columns load with one stream (the client's encoding
/// then keeps a core busy by itself).
const PARALLEL_MAX_COLUMNS: usize = 6;

/// One reader of the inputs: where it starts, where it stops, and the name
/// its watermark row is kept under.
#[derive(Debug, Clone)]
struct Stream {
    name: Option<String>,
    start: Position,
    limit: Option<u64>,
}

/// Whether the inputs can be split into halves: one big, uncompressed file
/// in an ASCII-compatible encoding.
fn parallel_input(sources: &[Source], opts: &LoadOptions) -> Result<bool> {
    let [source @ Source::File(_)] = sources else {
        return Ok(false);
    };
    if !opts.encoding.is_ascii_compatible() || source.size().unwrap_or(0) < PARALLEL_MIN_BYTES {
        return Ok(false);
    }
    let (_, compression) = input::open(source, opts.encoding, Arc::default())?;
    Ok(compression == input::Compression::None)
}

/// The first record boundary at or after the middle of the file, and the
/// line it starts on, found with the same parser the load uses.
fn split_point(source: &Source, opts: &LoadOptions) -> Result<Option<(u64, u64)>> {
    let name = source.name();
    let middle = source.size().unwrap_or(0) / 2;
    let (stream, _) = input::open(source, opts.encoding, Arc::default())?;
    let mut reader = csv::Reader::new(stream, opts.dialect.clone());
    reader
        .skip_lines(opts.skip_lines)
        .map_err(|e| csv_error(&name, e))?;
    while reader.offset() < middle {
        match reader.read_record() {
            Ok(Some(_)) => {}
            Ok(None) | Err(CsvError::UnclosedQuote { .. }) => return Ok(None),
            Err(e) => return Err(csv_error(&name, e)),
        }
    }
    if reader.at_end().map_err(|e| csv_error(&name, e))? {
        return Ok(None);
    }
    Ok(Some((reader.offset(), reader.line())))
}

/// The engine's options for a load in `mode`.
fn engine_options(
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
        on_commit: Some(Arc::new(move |b: &ingest::BatchReport| {
            let rows: u64 = b
                .tables
                .values()
                .map(|c| c.inserted + c.updated + c.unchanged)
                .sum();
            commit_progress
                .rows_committed
                .fetch_add(rows, Ordering::Relaxed);
            commit_progress
                .batches_committed
                .fetch_add(1, Ordering::Relaxed);
        })),
        ..Options::default()
    }
}

/// A sample read from a stream that cannot be reopened (stdin), and the
/// rest of that stream: the load reads the sample again, then the rest.
type Replay = (Vec<u8>, Box<dyn Read + Send>);

/// Reads a sample of `source` (up to 1 MiB) and infers its columns' types.
/// Returns the DDL and, for standard input, what the load must replay.
fn infer_from(
    source: &Source,
    opts: &LoadOptions,
    table: &TableName,
    counter: Arc<AtomicU64>,
) -> Result<(String, Option<Replay>)> {
    let (mut reader, _) = input::open(source, opts.encoding, counter)?;
    let mut sample = Vec::with_capacity(1 << 20);
    reader
        .by_ref()
        .take(1 << 20)
        .read_to_end(&mut sample)
        .map_err(|e| Error::io(format!("cannot read {}", source.name()), e))?;
    // Keep whole records only: cut after the last line end.
    let cut = if sample.len() == 1 << 20 {
        sample
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(sample.len(), |i| i + 1)
    } else {
        sample.len()
    };
    let ddl = infer_ddl(&sample[..cut], source, opts, table)?;
    let replay = match source {
        Source::Stdin => Some((sample, reader)),
        Source::File(_) => None,
    };
    Ok((ddl, replay))
}

/// The `CREATE TABLE` inferred from the start of an input (`pgbulk infer`).
pub fn infer_ddl(
    bytes: &[u8],
    source: &Source,
    opts: &LoadOptions,
    table: &TableName,
) -> Result<String> {
    let name = source.name();
    let mut reader = csv::Reader::new(bytes, opts.dialect.clone());
    reader
        .skip_lines(opts.skip_lines)
        .map_err(|e| csv_error(&name, e))?;
    let mut scratch = String::new();
    let mut decode = |b: &[u8], line: u64, field: usize| -> Result<String> {
        input::decode_field(b, input::field_encoding(opts.encoding), &mut scratch)
            .map(str::to_owned)
            .map_err(|at| {
                Error::new(
                    ErrorKind::Data,
                    format!(
                        "{name}:{line}:{}: undecodable byte sequence for encoding {} at byte {at} of the field",
                        field + 1,
                        opts.encoding.name()
                    ),
                )
            })
    };
    let mut names: Option<Vec<String>> = opts.columns.clone();
    if opts.header {
        let header = reader
            .read_record()
            .map_err(|e| csv_error(&name, e))?
            .ok_or_else(|| empty_file(&name))?;
        let line = header.line;
        let fields: Vec<String> = (0..header.len())
            .map(|i| decode(header.raw_field(i), line, i))
            .collect::<Result<_>>()?;
        if names.is_none() {
            names = Some(fields);
        }
    }
    let mut inference: Option<Inference> = names.as_ref().map(|n| Inference::new(n));
    let mut fields: Vec<Option<String>> = Vec::new();
    loop {
        let record = match reader.read_record() {
            Ok(Some(r)) => r,
            Ok(None) | Err(CsvError::UnclosedQuote { .. }) => break,
            Err(e) => return Err(csv_error(&name, e)),
        };
        let line = record.line;
        fields.clear();
        for i in 0..record.len() {
            fields.push(record.get(i).map(|b| decode(b, line, i)).transpose()?);
        }
        let inf = inference.get_or_insert_with(|| {
            Inference::new(
                &(1..=fields.len())
                    .map(|i| format!("column{i}"))
                    .collect::<Vec<_>>(),
            )
        });
        inf.add_row(&fields.iter().map(Option::as_deref).collect::<Vec<_>>());
    }
    let inference = inference.ok_or_else(|| empty_file(&name))?;
    let columns = inference.columns();
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.clone()) {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{name}: two columns are both called \"{}\" (after normalising the header)",
                    c.name
                ),
            ));
        }
    }
    let key: Vec<String> = opts
        .key
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|k| infer::normalize_name(k))
        .collect();
    Ok(infer::create_table_sql(table, &columns, &key))
}

/// The writable column of `facts` a file column called `name` fills:
/// the same name, else the only one equal ignoring case, else the name as
/// pgbulk normalises it.
fn match_column(facts: &TableFacts, name: &str) -> Option<String> {
    let columns: Vec<&str> = facts
        .columns
        .iter()
        .filter(|c| c.generated.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if let Some(c) = columns.iter().find(|c| **c == name) {
        return Some((*c).to_owned());
    }
    if let [only] = columns
        .iter()
        .filter(|c| c.eq_ignore_ascii_case(name))
        .collect::<Vec<_>>()
        .as_slice()
    {
        return Some((**only).to_owned());
    }
    let normalized = infer::normalize_name(name);
    columns
        .iter()
        .find(|c| **c == normalized)
        .map(|c| (*c).to_owned())
}

fn empty_file(name: &str) -> Error {
    Error::new(
        ErrorKind::Data,
        format!("{name}: the input is empty (expected a header line)"),
    )
}

fn csv_error(name: &str, e: CsvError) -> Error {
    match e {
        CsvError::Io(io) => Error::new(ErrorKind::Data, format!("{name}: {io}")).with_source(io),
        other => Error::new(ErrorKind::Data, format!("{name}: {other}")),
    }
}

/// Where a load stands: input file, byte offset in it (after decompression)
/// and line, and rows of the inputs committed before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Position {
    file: usize,
    offset: u64,
    line: u64,
    rows: u64,
}

impl Position {
    fn from_json(v: &serde_json::Value) -> Self {
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Self {
            file: usize::try_from(n("file")).unwrap_or(usize::MAX),
            offset: n("offset"),
            line: n("line"),
            rows: n("rows"),
        }
    }
}

/// The reject file and its log.
struct Rejects {
    data: BufWriter<File>,
    log: BufWriter<File>,
}

impl Rejects {
    fn create(path: &std::path::Path) -> Result<Self> {
        let create = |p: &std::path::Path| {
            File::create(p)
                .map(BufWriter::new)
                .map_err(|e| Error::io(format!("cannot create {}", p.display()), e))
        };
        let mut log_path = path.as_os_str().to_owned();
        log_path.push(".log");
        Ok(Self {
            data: create(path)?,
            log: create(std::path::Path::new(&log_path))?,
        })
    }

    fn write(&mut self, raw: &[u8], reason: &str) -> Result<()> {
        self.data
            .write_all(raw)
            .and_then(|()| writeln!(self.log, "{reason}"))
            .and_then(|()| self.data.flush())
            .and_then(|()| self.log.flush())
            .map_err(|e| Error::io("cannot write the reject file", e))
    }
}

/// The reading state shared by the batches of one load.
struct Shared {
    opts: LoadOptions,
    table: TableName,
    facts: TableFacts,
    sources: Vec<Source>,
    identities: Option<Vec<Option<serde_json::Value>>>,
    file: usize,
    /// Where to start in `file` when it is opened (resume, second half).
    resume_at: Option<Position>,
    /// Where to stop in the (single) input: the first half's end.
    limit: Option<u64>,
    reader: Option<csv::Reader<Box<dyn Read + Send>>>,
    /// The table columns the current file's fields fill.
    file_columns: Vec<String>,
    /// For each field of the current file: its position in `file_columns`,
    /// or `None` when skipped (`--ignore-extra`).
    mapping: Vec<Option<usize>>,
    fields_expected: usize,
    /// Standard input read for inference, replayed for the load.
    sample: Option<Replay>,
    rows_before: u64,
    /// Records read so far in this run (loaded or rejected).
    rows_in_batches: u64,
    rejects: Option<Arc<Mutex<Rejects>>>,
    /// Rows rejected by every stream of the load.
    rejected: Arc<AtomicU64>,
    progress: Arc<Progress>,
    scratch: String,
    /// The raw bytes and line of the row just read (for rejects).
    raw: Vec<u8>,
    line: u64,
    /// The current input's name.
    name: String,
}

impl Shared {
    /// The current input's name (kept, not rebuilt per row).
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Opens the current input, reads its header and maps its columns.
    fn open(&mut self) -> Result<()> {
        let source = self.sources[self.file].clone();
        let name = source.name();
        self.name = name.clone();
        let stream: Box<dyn Read + Send> = match self.sample.take() {
            // Standard input was sampled: read the sample again, then the rest.
            Some((sample, rest)) if self.file == 0 => {
                Box::new(std::io::Cursor::new(sample).chain(rest))
            }
            _ => {
                input::open(
                    &source,
                    self.opts.encoding,
                    self.progress.bytes_read.clone(),
                )?
                .0
            }
        };
        let mut reader = csv::Reader::new(stream, self.opts.dialect.clone());
        reader.keep_raw(self.opts.reject_file.is_some());
        reader
            .skip_lines(self.opts.skip_lines)
            .map_err(|e| csv_error(&name, e))?;
        let header: Option<Vec<String>> = if self.opts.header {
            let record = reader
                .read_record()
                .map_err(|e| csv_error(&name, e))?
                .ok_or_else(|| empty_file(&name))?;
            let line = record.line;
            let mut fields = Vec::with_capacity(record.len());
            for i in 0..record.len() {
                let text = input::decode_field(record.raw_field(i), input::field_encoding(self.opts.encoding), &mut self.scratch)
                    .map_err(|at| {
                        Error::new(
                            ErrorKind::Data,
                            format!("{name}:{line}:{}: undecodable byte sequence in the header at byte {at}", i + 1),
                        )
                    })?;
                fields.push(text.trim().to_owned());
            }
            Some(fields)
        } else {
            None
        };
        let names = match (&self.opts.columns, header) {
            (Some(cols), _) => cols.clone(),
            (None, Some(h)) => h,
            (None, None) => self
                .facts
                .columns
                .iter()
                .filter(|c| c.generated.is_none())
                .map(|c| c.name.clone())
                .collect(),
        };
        self.map_columns(&name, &names)?;
        if let Some(at) = self
            .resume_at
            .take()
            .filter(|p| p.file == self.file && p.offset > 0)
        {
            reader
                .skip_to(at.offset, at.line)
                .map_err(|e| csv_error(&name, e))?;
        }
        self.reader = Some(reader);
        Ok(())
    }

    /// Matches the file's column names to the table's: exactly, then
    /// ignoring case, then as pgbulk normalises names.
    fn map_columns(&mut self, file: &str, names: &[String]) -> Result<()> {
        let line = self.opts.skip_lines + 1;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            if let Some(first) = seen.insert(n.clone(), i) {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "{file}:{line}: duplicate column name \"{n}\" in the header (fields {} and {})",
                        first + 1,
                        i + 1
                    ),
                ));
            }
        }
        let table_columns: Vec<&str> = self
            .facts
            .columns
            .iter()
            .filter(|c| c.generated.is_none())
            .map(|c| c.name.as_str())
            .collect();
        let facts = &self.facts;
        let find = |n: &str| match_column(facts, n);
        let mut file_columns: Vec<String> = Vec::new();
        let mut mapping = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            match find(n).as_deref() {
                Some(c) if file_columns.iter().any(|f| f == c) => {
                    return Err(Error::new(
                        ErrorKind::Data,
                        format!(
                            "{file}:{line}: fields {} (\"{n}\") and another both match column \"{c}\" of {}",
                            i + 1,
                            self.table
                        ),
                    ));
                }
                Some(c) => {
                    mapping.push(Some(file_columns.len()));
                    file_columns.push(c.to_owned());
                }
                None if self.opts.ignore_extra => mapping.push(None),
                None => {
                    return Err(Error::new(
                        ErrorKind::Data,
                        format!(
                            "{file}:{line}: column \"{n}\" (field {}) is not a column of {} (it has: {}); --ignore-extra skips it",
                            i + 1,
                            self.table,
                            table_columns.join(", ")
                        ),
                    ));
                }
            }
        }
        for c in &self.facts.columns {
            let required =
                c.not_null && c.default.is_none() && c.identity.is_none() && c.generated.is_none();
            if required && !file_columns.contains(&c.name) {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "{file}: column \"{}\" of {} is NOT NULL without a default, and the input has no such column",
                        c.name, self.table
                    ),
                ));
            }
        }
        self.fields_expected = names.len();
        self.file_columns = file_columns;
        self.mapping = mapping;
        Ok(())
    }

    /// Handles a bad row: rejected while under the limit, else the error.
    fn bad_row(&mut self, message: String) -> Result<()> {
        let counted = self
            .rejected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.opts.max_errors).then_some(n + 1)
            })
            .is_ok();
        if counted {
            self.progress.rows_rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(rejects) = &self.rejects {
                rejects
                    .lock()
                    .map_err(|_| Error::new(ErrorKind::Io, "reject file poisoned"))?
                    .write(&self.raw, &message)?;
            }
            return Ok(());
        }
        let limit = if self.opts.max_errors > 0 {
            format!(
                " (more than --max-errors {} bad rows)",
                self.opts.max_errors
            )
        } else {
            String::new()
        };
        Err(Error::new(ErrorKind::Data, format!("{message}{limit}")))
    }

    /// The position after the rows read so far (the next input's start
    /// once the current one is exhausted).
    fn position(&mut self) -> Option<serde_json::Value> {
        let identities = self.identities.as_ref()?;
        let limit = self.limit;
        let exhausted = self
            .reader
            .as_mut()
            .is_none_or(|r| limit.is_some_and(|l| r.offset() >= l) || r.at_end().unwrap_or(false));
        let (file, offset, line) = match (&self.reader, exhausted) {
            (_, true) => (self.file + usize::from(self.reader.is_some()), 0, 1),
            (Some(r), false) => (self.file, r.offset(), r.line()),
            (None, false) => (self.file, 0, 1),
        };
        Some(serde_json::json!({
            "inputs": identities,
            "limit": self.limit,
            "file": file,
            "offset": offset,
            "line": line,
            "rows": self.rows_before + self.rows_in_batches,
        }))
    }
}

/// The next batch, or `None` when every input is read.
fn next_batch(shared: &Arc<Mutex<Shared>>, batch_rows: u64) -> Result<Option<Batch>> {
    let mut s = shared
        .lock()
        .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
    loop {
        if s.file >= s.sources.len() {
            return Ok(None);
        }
        if s.reader.is_none() {
            s.open()?;
        }
        let name = s.name();
        let limit = s.limit;
        let at_end = s
            .reader
            .as_mut()
            .map_or(Ok(true), |r| {
                if limit.is_some_and(|l| r.offset() >= l) {
                    Ok(true)
                } else {
                    r.at_end()
                }
            })
            .map_err(|e| csv_error(&name, e))?;
        if !at_end {
            break;
        }
        s.reader = None;
        s.file += 1;
    }
    let name = s.name();
    let table = s.table.to_string();
    let columns = s.file_columns.clone();
    drop(s);
    Ok(Some(Batch {
        high_watermark: BatchWatermark::Value(None),
        metadata: serde_json::json!({ "source": name }),
        rows: Rows::Text(Box::new(CsvRows {
            shared: shared.clone(),
            table,
            columns,
            left: batch_rows,
            field_of: Vec::new(),
        })),
        resume: None,
    }))
}

/// One batch's rows, read from the shared reader.
struct CsvRows {
    shared: Arc<Mutex<Shared>>,
    table: String,
    columns: Vec<String>,
    left: u64,
    /// For the row just read: the file field of each projected column.
    field_of: Vec<usize>,
}

impl TextRows for CsvRows {
    fn table(&self) -> &str {
        &self.table
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut TextRow) -> Result<bool> {
        let mut guard = self
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        let s = &mut *guard;
        'records: loop {
            if self.left == 0 {
                return Ok(false);
            }
            let name = s.name.as_str();
            let Some(reader) = s.reader.as_mut() else {
                return Ok(false);
            };
            if s.limit.is_some_and(|limit| reader.offset() >= limit) {
                return Ok(false);
            }
            let record = match reader.read_record() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // The file is done; the next batch opens the next one.
                    // A batch does not span files whose columns differ.
                    s.reader = None;
                    s.file += 1;
                    if s.file < s.sources.len() && s.sources.len() > 1 {
                        s.open()?;
                        if s.file_columns != self.columns {
                            if s.opts.single_transaction {
                                return Err(Error::new(
                                    ErrorKind::Data,
                                    format!(
                                        "{}: its columns differ from the previous input's; they cannot load in one transaction",
                                        s.name()
                                    ),
                                ));
                            }
                            return Ok(false);
                        }
                        continue;
                    }
                    return Ok(false);
                }
                Err(CsvError::UnclosedQuote { line }) => {
                    s.line = line;
                    s.raw = reader.take_raw();
                    s.progress.rows_read.fetch_add(1, Ordering::Relaxed);
                    s.rows_in_batches += 1;
                    let message = format!(
                        "{name}:{line}: unterminated quoted field (a quote opened on line {line} is never closed)"
                    );
                    s.bad_row(message)?;
                    continue;
                }
                Err(e) => return Err(csv_error(name, e)),
            };
            s.progress.rows_read.fetch_add(1, Ordering::Relaxed);
            s.rows_in_batches += 1;
            let line = record.line;
            s.line = line;
            if s.opts.reject_file.is_some() {
                s.raw.clear();
                s.raw.extend_from_slice(record.raw);
            }
            if record.len() != s.fields_expected {
                let message = format!(
                    "{name}:{line}: expected {} fields, found {}",
                    s.fields_expected,
                    record.len()
                );
                s.bad_row(message)?;
                continue;
            }
            row.clear();
            self.field_of.clear();
            for (i, target) in s.mapping.iter().enumerate() {
                if target.is_none() {
                    continue;
                }
                self.field_of.push(i);
                match record.get(i) {
                    None => row.push(None),
                    Some(bytes) => {
                        match input::decode_field(
                            bytes,
                            input::field_encoding(s.opts.encoding),
                            &mut s.scratch,
                        ) {
                            Ok(text) => row.push(Some(text)),
                            Err(at) => {
                                let message = format!(
                                    "{name}:{line}:{}: column \"{}\": undecodable byte sequence for encoding {} at byte {at} of the field",
                                    i + 1,
                                    self.columns[self.field_of.len() - 1],
                                    s.opts.encoding.name()
                                );
                                s.bad_row(message)?;
                                continue 'records;
                            }
                        }
                    }
                }
            }
            self.left -= 1;
            return Ok(true);
        }
    }

    fn reject(&mut self, failure: &RowFailure<'_>) -> Result<()> {
        let mut s = self
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        let field = self
            .field_of
            .get(failure.field)
            .map_or(failure.field, |f| *f)
            + 1;
        let value = match failure.value {
            Some(v) if !failure.reason.contains(&format!("\"{}\"", shorten(v))) => {
                format!(" value \"{}\":", shorten(v))
            }
            None if !failure.reason.contains("NULL") => " NULL:".to_owned(),
            _ => String::new(),
        };
        let message = format!(
            "{}:{}:{field}: column \"{}\":{value} {}",
            s.name(),
            s.line,
            failure.column,
            failure.reason
        );
        s.bad_row(message)
    }

    fn resume(&self) -> Option<serde_json::Value> {
        self.shared.lock().ok()?.position()
    }
}
