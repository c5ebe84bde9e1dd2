//! Arrow input: a stream of record batches (a pyarrow Table or
//! RecordBatchReader, a polars or pandas DataFrame through the Arrow C
//! stream interface) loaded into a table with the ingest engine: created
//! from the Arrow schema when missing ([`types`]), columns matched by name
//! like a CSV header, each value handed over as the text the server's input
//! function reads ([`text`]), so it is stored exactly as PostgreSQL stores
//! that value. Batches of `batch_rows` rows commit one by one (or all at
//! once with `single_transaction`); modes, keys and lock policy as for a
//! load.

mod binary;
pub mod partitioned;
mod text;
mod types;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};

use crate::error::{Error, ErrorKind, Result};
use crate::ingest::{
    self, Batch, BatchWatermark, RowFailure, Rows, StagedRejection, TextRow, TextRows,
};
use crate::load::{LoadMode, LoadOptions, LoadReport, Progress};
use crate::schema::{Declaration, TableName, quote_ident};
use crate::session::Session;

/// Record batches, as a stream reader yields them.
pub type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

/// The `CREATE TABLE` for `schema` as `table` (primary key `key`, named as
/// in the schema).
pub fn create_table(
    table: &TableName,
    schema: &arrow_schema::Schema,
    key: Option<&[String]>,
) -> Result<String> {
    let mut lines = Vec::new();
    for field in schema.fields() {
        let sql_type = types::column_type(field)
            .map_err(|why| Error::config(format!("column \"{}\": {why}", field.name())))?;
        lines.push(format!("    {} {sql_type}", quote_ident(field.name())));
    }
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        for k in key {
            if schema.field_with_name(k).is_err() {
                return Err(Error::config(format!(
                    "key column \"{k}\" is not a column of the data"
                )));
            }
        }
        let names: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
        lines.push(format!("    PRIMARY KEY ({})", names.join(", ")));
    }
    Ok(format!(
        "CREATE TABLE {} (\n{}\n);\n",
        table.quoted(),
        lines.join(",\n")
    ))
}

/// Loads `batches` (whose schema is `schema`) into `opts.table` on a
/// connection to `params`. Uses the table, its declaration (`schema_ddl`),
/// the mode, key, duplicates rule, `ignore_extra`, `batch_rows`,
/// `single_transaction` and lock policy of `opts`. A missing table is
/// created from the Arrow schema when `create`, else refused.
pub async fn write(
    params: &crate::conninfo::ConnParams,
    schema: SchemaRef,
    batches: Batches,
    opts: &LoadOptions,
    create: bool,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let client = crate::connect::connect(params).await?.client;
    let data = Data {
        schema,
        batches,
        name: None,
        skipped: 0,
    };
    write_on(client, params, data, opts, create, progress, None).await
}

/// Record batches to write, and what messages call them.
pub(crate) struct Data {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Batches,
    /// The input's name, for row locations (`row 7 of NAME`); `None`:
    /// "the data".
    pub(crate) name: Option<String>,
    /// Rows of the input before the first of `batches` (left out: an
    /// earlier run committed them), for row numbers.
    pub(crate) skipped: u64,
}

/// Each batch of a [`write_on`] commits with its ledger row: the rows of
/// the data read so far (`{"rows": N, "complete": bool}`), kept under
/// `name` (see [`ingest::Options::stream`]). The data is then written on
/// one connection, in order.
pub(crate) struct Ledger {
    pub(crate) name: String,
}

/// [`write`] on `client` (a connection to `params`, which further streams
/// connect to), with the data's name and position and, when given, a
/// ledger row committed with each batch.
pub(crate) async fn write_on(
    mut client: tokio_postgres::Client,
    params: &crate::conninfo::ConnParams,
    data: Data,
    opts: &LoadOptions,
    create: bool,
    progress: Arc<Progress>,
    ledger: Option<Ledger>,
) -> Result<LoadReport> {
    let started = std::time::Instant::now();
    let Data {
        schema,
        batches,
        name,
        skipped,
    } = data;
    // List values become array literals whose NULL is a null element, as
    // `array_nulls` on reads them; the streams' connections say so too.
    client
        .batch_execute("SET array_nulls = on")
        .await
        .map_err(|e| Error::server("setting array_nulls", e))?;
    let params = &params.with_setting("array_nulls", "on");
    progress.register(&client);
    let session = Session::read(&client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let exists = crate::catalog::table_oid(&client, table.schema_or_public(), &table.name)
        .await?
        .is_some();
    let mut report = LoadReport::default();
    let zone = (session.utc_offset != Some(0)).then(|| session.time_zone.clone());
    let (declaration, inferred) = declare(opts, &table, &session, exists, &schema, create)?;
    report.inferred_ddl = inferred;
    let (prepared, facts, chosen) =
        crate::load::prepare_table(&mut client, session, &declaration, opts, &table, exists)
            .await?;
    let mut options =
        crate::load::engine_options(chosen.mode, chosen.key.as_ref(), &table, opts, &progress);
    let ledgered = ledger.is_some();
    options.stream = ledger.map(|l| l.name);

    let (columns, fields, left_out) = matched_columns(&facts, &table, &schema, opts.ignore_extra)?;
    if let Some(zone) = &zone {
        refuse_instants_as_wall_times(&facts, &table, &schema, &columns, &fields, zone)?;
    }
    if !left_out.is_empty() {
        report.notes.push(format!(
            "left out (not columns of {table}): {}",
            left_out.join(", ")
        ));
    }
    let feed = Arc::new(Mutex::new(Feed {
        batches,
        current: None,
        row: 0,
        consumed: skipped,
        what: name.clone().unwrap_or_else(|| "the Arrow data".to_owned()),
        stopped: false,
        progress: progress.clone(),
    }));
    let batch_rows = if opts.single_transaction {
        u64::MAX
    } else {
        opts.batch_rows.max(1)
    };
    let data_types = fields
        .iter()
        .map(|(index, _)| schema.field(*index).data_type().clone())
        .collect();
    let part = Part {
        feed: feed.clone(),
        table: table.to_string(),
        columns: Arc::new(columns),
        fields: Arc::new(fields),
        data_types: Arc::new(data_types),
        direct: Vec::new(),
        forms: Vec::new(),
        left: batch_rows,
        chunk: None,
        chunk_row: 0,
        chunk_first: 0,
        number: 0,
        scratch: String::new(),
        progress: progress.clone(),
        what: Arc::from(name.as_deref().unwrap_or("the data")),
        ledgered,
    };
    // Appending batches that commit one by one into a table that is
    // there as declared: on several connections, each taking batches of
    // the rows as they come (the server's side of COPY is the slower).
    let plan = prepared.plan();
    let appends = chosen.mode == LoadMode::Append
        || chosen.mode == LoadMode::Upsert && chosen.effective_key.is_none();
    let parallel = appends
        && !ledgered
        && exists
        && !opts.single_transaction
        && plan.steps.is_empty()
        && plan.rebuilds.is_empty();
    // An empty table with an index: its rows go into a new copy of it on
    // one connection, the index built once they are in (1 M rows with a
    // bigint key: 1.35 s, against 1.7-2.1 s on two connections into it).
    options.fill_empty = opts.fill_empty
        && exists
        && plan.steps.is_empty()
        && plan.rebuilds.is_empty()
        && crate::rebuild::fill_pays(&mut client, &table).await?;
    let streams = if parallel && !options.fill_empty {
        opts.streams.max(1)
    } else {
        1
    };
    // On one connection a batch changing most of the table's rows may
    // rewrite it (`fill_empty` is off for writes beside others).
    options.rewrite_batches = streams == 1 && opts.fill_empty;
    if streams > 1 {
        report
            .notes
            .push(format!("appended on {streams} connections at once"));
    }
    let (engine, client) = if streams == 1 {
        let engine =
            ingest::ingest_prepared(&mut client, &prepared, |_| part.batches(), &options).await?;
        (engine, client)
    } else {
        let mut clients = vec![client];
        for _ in 1..streams {
            let client = crate::connect::connect(params).await?.client;
            progress.register(&client);
            clients.push(client);
        }
        let mut tasks = Vec::with_capacity(streams);
        for mut client in clients {
            let (prepared, options, part) = (prepared.clone(), options.clone(), part.fresh());
            let feed = feed.clone();
            tasks.push(tokio::spawn(async move {
                let result =
                    ingest::ingest_prepared(&mut client, &prepared, |_| part.batches(), &options)
                        .await;
                if result.is_err() {
                    if let Ok(mut f) = feed.lock() {
                        f.stopped = true;
                    }
                }
                (result, client)
            }));
        }
        let mut merged = ingest::Report::default();
        let mut failures = Vec::new();
        let mut first = None;
        for task in tasks {
            match task.await {
                Ok((Ok(r), client)) => {
                    merged.merge(r);
                    first.get_or_insert(client);
                }
                Ok((Err(e), _)) => failures.push(e),
                Err(e) => failures.push(Error::new(
                    ErrorKind::Io,
                    format!("a stream of the write failed: {e}"),
                )),
            }
        }
        // The failure that stopped the others.
        failures.sort_by_key(|e| e.message().contains(STOPPED));
        if let Some(e) = failures.into_iter().next() {
            return Err(e);
        }
        let Some(client) = first else {
            return Err(Error::new(ErrorKind::Io, "the write had no streams"));
        };
        (merged, client)
    };
    report.count(engine);
    if report.inserted > 0 && !opts.dry_run {
        // Explicit values in a serial key: the table's own inserts must
        // not take them next.
        let notes = crate::sequence::advance_past_rows(
            &client,
            &table,
            crate::sequence::Columns::Indexed,
            "rows written",
        )
        .await;
        report.notes.extend(notes);
    }
    if report.batches == 0 {
        report.nothing_to_load = Some(match report.inferred_ddl.take() {
            Some(_) => {
                format!("the data has no rows: nothing to load, and {table} was not created")
            }
            None if matches!(chosen.mode, LoadMode::Replace | LoadMode::ReplaceAtomic) => format!(
                "the data has no rows: nothing to load, and {table} was not replaced and keeps its rows (a replace swaps the table's rows for the first batch it loads; TRUNCATE empties a table)"
            ),
            None => "the data has no rows: nothing to load".to_owned(),
        });
    }
    report.rows_read = feed.lock().map(|f| f.consumed - skipped).unwrap_or(0);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The declaration of `table` for data of `schema`: the given one, the
/// table as it is, or (a missing table, when `create`) one inferred from
/// the Arrow schema, returned as its DDL too.
fn declare(
    opts: &LoadOptions,
    table: &TableName,
    session: &Session,
    exists: bool,
    schema: &arrow_schema::Schema,
    create: bool,
) -> Result<(Declaration, Option<String>)> {
    Ok(
        match crate::load::declared(opts, table, &session.current_schema, exists)? {
            crate::load::Declared::Given(d) => (d, None),
            crate::load::Declared::Existing => (Declaration::existing(vec![table.clone()]), None),
            crate::load::Declared::Inferred if !create => {
                return Err(Error::config(format!(
                    "table {table} does not exist (create=True creates it from the data's schema)"
                )));
            }
            crate::load::Declared::Inferred => {
                let ddl = create_table(table, schema, opts.key.as_deref())?;
                (Declaration::parse(&ddl)?, Some(ddl))
            }
        },
    )
}

/// The columns of `table` the data's fields fill (matched by name like a
/// header), with each one's field index and whether it is an `arrow.uuid`
/// field; and the fields left out (only with `ignore_extra`, else an error).
#[allow(clippy::type_complexity)]
fn matched_columns(
    facts: &crate::schema::TableFacts,
    table: &TableName,
    schema: &arrow_schema::Schema,
    ignore_extra: bool,
) -> Result<(Vec<String>, Vec<(usize, bool)>, Vec<String>)> {
    let mut columns = Vec::new();
    let mut fields = Vec::new();
    let mut left_out = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        match crate::load::match_column(facts, field.name()) {
            Some(column) if columns.contains(&column) => {
                return Err(Error::config(format!(
                    "columns of the data fill column \"{column}\" of {table} twice"
                )));
            }
            Some(column) => {
                types::known_meaning(field).map_err(|why| {
                    Error::config(format!("column \"{}\" of the data: {why}", field.name()))
                })?;
                columns.push(column);
                fields.push((index, types::is_uuid(field)));
            }
            None if ignore_extra => left_out.push(field.name().clone()),
            None => {
                return Err(Error::config(format!(
                    "column \"{}\" of the data is not a column of {table} (ignore_extra leaves it out)",
                    field.name()
                )));
            }
        }
    }
    Ok((columns, fields, left_out))
}

/// Refuses data whose timestamps have a time zone (instants) for a
/// `timestamp` (without time zone), `date` or `time` column of `table`
/// (or an array of them) when the session's `TimeZone` is `zone`, not UTC.
/// PostgreSQL stores an instant there as its wall time (or that wall
/// time's date, or time of day) in the session's zone, whose offset
/// changes with the date by rules only the server knows; in UTC the
/// encoder writes it itself.
fn refuse_instants_as_wall_times(
    facts: &crate::schema::TableFacts,
    table: &TableName,
    schema: &arrow_schema::Schema,
    columns: &[String],
    fields: &[(usize, bool)],
    zone: &str,
) -> Result<()> {
    for (column, (index, _)) in columns.iter().zip(fields) {
        let Some(data_zone) = types::time_zone(schema.field(*index).data_type()) else {
            continue;
        };
        // timestamp, date and time, and their arrays
        let Some(local) = facts
            .column(column)
            .filter(|c| matches!(c.type_oid, 1114 | 1115 | 1082 | 1182 | 1083 | 1183))
        else {
            continue;
        };
        return Err(Error::config(format!(
            "column \"{column}\" of {table} is {} and the data's \"{field}\" holds instants (time zone {data_zone}): PostgreSQL stores an instant there by its wall time in the session's TimeZone ({zone}), whose offset changes with the date, and pgbulk converts only in UTC. Set the session's TimeZone (PGOPTIONS='-c TimeZone=UTC' stores UTC wall times), make the column timestamptz, or give the data wall times without a zone (pandas: .dt.tz_convert(ZONE).dt.tz_localize(None))",
            local.type_name,
            field = schema.field(*index).name()
        ))
        .in_table(table.to_string())
        .for_column(column.clone()));
    }
    Ok(())
}

/// The record batches being read, and where.
struct Feed {
    batches: Batches,
    current: Option<RecordBatch>,
    /// The next row of `current`.
    row: usize,
    /// Rows handed out in all (with the rows of the data skipped before
    /// the first batch).
    consumed: u64,
    /// What messages call the data.
    what: String,
    /// Another stream of the write failed: no more rows are handed out.
    stopped: bool,
    /// Counts the rows handed out as read.
    progress: Arc<Progress>,
}

impl Feed {
    /// Whether a row remains (reads the next non-empty record batch when
    /// the current one is done).
    fn has_more(&mut self) -> Result<bool> {
        loop {
            if self
                .current
                .as_ref()
                .is_some_and(|b| self.row < b.num_rows())
            {
                return Ok(true);
            }
            match self.batches.next() {
                None => {
                    self.current = None;
                    return Ok(false);
                }
                Some(Err(e)) => {
                    return Err(Error::new(
                        ErrorKind::Data,
                        format!("reading {} after row {}: {e}", self.what, self.consumed),
                    ));
                }
                Some(Ok(batch)) => {
                    self.current = Some(batch);
                    self.row = 0;
                }
            }
        }
    }

    /// The next at most `max` rows (a slice of the current record batch,
    /// not copied) and the rows handed out before them; `None` when every
    /// row was.
    fn take(&mut self, max: usize) -> Result<Option<(RecordBatch, u64)>> {
        if self.stopped {
            return Err(Error::new(ErrorKind::Io, STOPPED));
        }
        if !self.has_more()? {
            return Ok(None);
        }
        let Some(batch) = self.current.as_ref() else {
            return Ok(None);
        };
        let n = max.min(batch.num_rows() - self.row);
        let chunk = batch.slice(self.row, n);
        let before = self.consumed;
        self.row += n;
        self.consumed += n as u64;
        self.progress
            .rows_read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(Some((chunk, before)))
    }
}

/// Why a stream stopped when another stream of the write failed.
const STOPPED: &str = "stopped: another stream of the write failed";

/// Rows a part takes from the feed at a time (one lock per chunk, not per
/// row, when several streams read the feed).
const CHUNK_ROWS: usize = 4096;

/// The rows of one engine batch: up to `left` rows from the feed.
struct Part {
    feed: Arc<Mutex<Feed>>,
    table: String,
    columns: Arc<Vec<String>>,
    /// For each column: the record batch column it comes from, and whether
    /// it is an `arrow.uuid` column.
    fields: Arc<Vec<(usize, bool)>>,
    /// For each column: the Arrow type of its values.
    data_types: Arc<Vec<arrow_schema::DataType>>,
    /// For each column, once bound: its values' binary encoding with the
    /// column's type oid, or `None` (as text).
    direct: Vec<Option<(binary::Direct, u32)>>,
    /// For each column, once bound: the form of its values as text.
    forms: Vec<text::Form>,
    left: u64,
    /// The rows taken from the feed and not yet read, the next one's index
    /// in it, and the rows of the data before it.
    chunk: Option<RecordBatch>,
    chunk_row: usize,
    chunk_first: u64,
    /// The data's row number (1-based) of the row just read.
    number: u64,
    scratch: String,
    progress: Arc<Progress>,
    /// What row locations name (`row 7 of the data`).
    what: Arc<str>,
    /// Each batch stores where the data stands after it (see [`Ledger`]).
    ledgered: bool,
}

impl Part {
    /// The engine's batches: parts of up to `left` rows each, until the
    /// feed has no more rows. A part is made with its first rows, so that
    /// no batch is empty when other streams read the same feed.
    fn batches(&self) -> impl Iterator<Item = Result<Batch>> + Send + 'static {
        let part = self.fresh();
        std::iter::from_fn(move || {
            let taken = part
                .feed
                .lock()
                .map_err(|_| Error::new(ErrorKind::Io, "the Arrow feed is poisoned"))
                .and_then(|mut f| f.take(part.chunk_rows()));
            match taken {
                Ok(None) => None,
                Err(e) => Some(Err(e)),
                Ok(Some((chunk, before))) => Some(Ok(Batch {
                    high_watermark: BatchWatermark::Value(None),
                    metadata: serde_json::Value::Null,
                    rows: Rows::Text(Box::new(Part {
                        chunk: Some(chunk),
                        chunk_first: before,
                        ..part.fresh()
                    })),
                    resume: None,
                })),
            }
        })
    }

    /// How many rows to take from the feed next: a chunk, within the
    /// batch.
    fn chunk_rows(&self) -> usize {
        CHUNK_ROWS.min(usize::try_from(self.left).unwrap_or(usize::MAX))
    }

    /// Another part over the same feed.
    fn fresh(&self) -> Self {
        Self {
            feed: self.feed.clone(),
            table: self.table.clone(),
            columns: self.columns.clone(),
            fields: self.fields.clone(),
            data_types: self.data_types.clone(),
            direct: Vec::new(),
            forms: Vec::new(),
            left: self.left,
            chunk: None,
            chunk_row: 0,
            chunk_first: 0,
            number: 0,
            scratch: String::new(),
            progress: self.progress.clone(),
            what: self.what.clone(),
            ledgered: self.ledgered,
        }
    }
}

impl TextRows for Part {
    fn table(&self) -> &str {
        &self.table
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn bind(&mut self, types: &[crate::codec::ColumnType]) {
        self.direct = self
            .fields
            .iter()
            .zip(self.data_types.iter())
            .zip(types)
            .map(|(((_, uuid), data_type), ty)| {
                binary::plan(data_type, *uuid, ty).map(|d| (d, ty.oid))
            })
            .collect();
        self.forms = self
            .fields
            .iter()
            .zip(types)
            .map(|((_, uuid), ty)| match &ty.kind {
                _ if *uuid => text::Form::Uuid,
                crate::codec::TypeKind::Json | crate::codec::TypeKind::Jsonb => text::Form::Json,
                _ => text::Form::Plain,
            })
            .collect();
    }

    fn next_row(&mut self, row: &mut TextRow) -> Result<bool> {
        let read = self.read_row(row);
        if read.is_err() {
            self.stop_others();
        }
        read
    }

    fn reject(&mut self, failure: &RowFailure<'_>) -> Result<()> {
        self.stop_others();
        let number = self.number;
        Err(Error::new(
            ErrorKind::Data,
            format!(
                "row {number} of {}: column \"{}\": {}",
                self.what, failure.column, failure.reason
            ),
        )
        .in_table(&self.table)
        .in_row(number)
        .for_column(failure.column)
        .with_value(failure.value))
    }

    fn location(&self) -> String {
        format!("row {} of {}", self.number, self.what)
    }

    fn resume(&self) -> Option<serde_json::Value> {
        if !self.ledgered {
            return None;
        }
        // One stream: the rows taken so far are the data's first ones.
        let rows = self.chunk_first + self.chunk_row as u64;
        let complete = self
            .feed
            .lock()
            .ok()
            .and_then(|mut f| f.has_more().ok())
            .is_some_and(|more| !more);
        Some(serde_json::json!({"rows": rows, "complete": complete}))
    }

    fn reject_staged(&mut self, rejected: &StagedRejection<'_>) -> Result<()> {
        self.stop_others();
        let error = Error::new(
            ErrorKind::Data,
            format!(
                "{}: column \"{}\": {}",
                rejected.location, rejected.column, rejected.reason
            ),
        )
        .in_table(&self.table)
        .for_column(rejected.column)
        .with_value(Some(rejected.value));
        // The location is this part's own "row N of the data".
        let number = rejected
            .location
            .strip_prefix("row ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok());
        Err(match number {
            Some(n) => error.in_row(n),
            None => error,
        })
    }
}

impl Part {
    /// Stops the write's other streams: this one failed.
    fn stop_others(&self) {
        if let Ok(mut feed) = self.feed.lock() {
            feed.stopped = true;
        }
    }

    /// The next row into `row`; `false` when the part has no more.
    fn read_row(&mut self, row: &mut TextRow) -> Result<bool> {
        if self.progress.is_interrupted() {
            // The batch in flight rolls back.
            return Err(Error::new(ErrorKind::Io, "interrupted"));
        }
        if self.left == 0 {
            return Ok(false);
        }
        if self
            .chunk
            .as_ref()
            .is_none_or(|c| self.chunk_row >= c.num_rows())
        {
            let taken = self
                .feed
                .lock()
                .map_err(|_| Error::new(ErrorKind::Io, "the Arrow feed is poisoned"))?
                .take(self.chunk_rows())?;
            let Some((chunk, before)) = taken else {
                self.chunk = None;
                return Ok(false);
            };
            self.chunk = Some(chunk);
            self.chunk_row = 0;
            self.chunk_first = before;
        }
        let Some(batch) = self.chunk.as_ref() else {
            return Ok(false);
        };
        let r = self.chunk_row;
        self.chunk_row += 1;
        let number = self.chunk_first + r as u64 + 1;
        self.number = number;
        row.clear();
        for (k, (index, uuid)) in self.fields.iter().enumerate() {
            let array = batch.column(*index).as_ref();
            if let Some(Some((direct, oid))) = self.direct.get(k) {
                if array.is_null(r) {
                    row.push(None);
                    continue;
                }
                if row.push_encoded(*oid, |out| direct.encode(array, r, out)) {
                    continue;
                }
            }
            let form = self.forms.get(k).copied().unwrap_or(if *uuid {
                text::Form::Uuid
            } else {
                text::Form::Plain
            });
            let present = text::cell(array, r, form, &mut self.scratch).map_err(|why| {
                Error::new(
                    ErrorKind::Data,
                    format!(
                        "row {number} of {}: column \"{}\": {why}",
                        self.what, self.columns[k]
                    ),
                )
                .in_table(&self.table)
                .in_row(number)
                .for_column(self.columns[k].clone())
            })?;
            row.push(present.then_some(self.scratch.as_str()));
        }
        self.left -= 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_table_is_created_from_the_schema() {
        let schema = Schema::new(vec![
            Field::new("Id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        let ddl = create_table(&TableName::new("s", "t"), &schema, Some(&["Id".to_owned()]))
            .expect("ddl");
        assert_eq!(
            ddl,
            "CREATE TABLE \"s\".\"t\" (\n    \"Id\" bigint,\n    \"name\" text,\n    PRIMARY KEY (\"Id\")\n);\n"
        );
        assert!(
            create_table(
                &TableName::new("s", "t"),
                &schema,
                Some(&["nope".to_owned()])
            )
            .is_err()
        );
        let bad = Schema::new(vec![Field::new(
            "u",
            DataType::Union(
                arrow_schema::UnionFields::empty(),
                arrow_schema::UnionMode::Sparse,
            ),
            true,
        )]);
        let e = create_table(&TableName::new("s", "t"), &bad, None).expect_err("refused");
        assert!(
            e.message().starts_with("column \"u\": Arrow type"),
            "{}",
            e.message()
        );
        let _ = Arc::new(0);
    }
}
