//! `pgbulk export`: tables of a PostgreSQL database into a warehouse (a
//! BigQuery dataset, see [`bigquery`]) or files it reads (a directory of
//! Parquet files, see [`parquet_dir`]), incrementally.
//!
//! Each table is read with `COPY (SELECT ...) TO STDOUT (FORMAT binary)`
//! in a read-only snapshot, decoded into Arrow record batches of bounded
//! size ([`decode`]), typed as [`columns`] maps them, and written as
//! Parquet row groups of bounded size while the server sends more: memory
//! does not grow with the table.
//!
//! Incremental (`incremental`): the rows whose column is at or after the
//! watermark of the last run, read in one snapshot with the next
//! watermark, bounded as [`crate::mark`] says (exact for columns stamped by
//! the writing transaction's `now()`). The watermark is stored with the
//! destination (the Parquet directory's state file, the dataset's
//! `_pgbulk_state` table), written after the rows.
//!
//! Several tables run one after another, each its own unit: one table's
//! failure leaves the others' exports in place, and the report says which
//! failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;

pub mod bigquery;
pub mod columns;
pub mod decode;
pub mod google;
pub mod parquet_dir;
mod status;

use crate::conninfo::ConnParams;
use crate::error::{Error, ErrorKind, Result};
use crate::load::Progress;
use crate::mark::{self, Bound, Mark};
use crate::schema::{TableName, quote_ident};
use crate::session::Session;
use bigquery::BigQuery;
pub use columns::{ExportColumn, Kind};
pub use decode::ArrayNulls;
use parquet_dir::{FileWriter, ParquetDir};
pub use status::{ExportStatus, status};

/// Where an export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A directory of Parquet files (`parquet://DIR`).
    Parquet(PathBuf),
    /// A BigQuery dataset (`bigquery://PROJECT/DATASET`).
    BigQuery {
        /// The project's id.
        project: String,
        /// The dataset's id.
        dataset: String,
    },
}

impl Destination {
    /// Parses `parquet://DIR` (a relative or absolute path) or
    /// `bigquery://PROJECT/DATASET`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.split_once("://") {
            Some(("parquet", dir)) if !dir.is_empty() => Ok(Self::Parquet(PathBuf::from(dir))),
            Some(("bigquery", path)) => match path.trim_end_matches('/').split_once('/') {
                Some((project, dataset))
                    if !project.is_empty() && !dataset.is_empty() && !dataset.contains('/') =>
                {
                    Ok(Self::BigQuery {
                        project: project.to_owned(),
                        dataset: dataset.to_owned(),
                    })
                }
                _ => Err(Error::config(format!(
                    "cannot read the destination \"{text}\": write bigquery://PROJECT/DATASET"
                ))),
            },
            _ => Err(Error::config(format!(
                "cannot read the destination \"{text}\": write parquet://DIR (a directory, created if missing) or bigquery://PROJECT/DATASET"
            ))),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Parquet(dir) => write!(f, "parquet://{}", dir.display()),
            Self::BigQuery { project, dataset } => write!(f, "bigquery://{project}/{dataset}"),
        }
    }
}

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The source tables (or views).
    pub tables: Vec<TableName>,
    /// Instead of tables: the rows of this query (a `SELECT`; then
    /// `to_table` names the destination, and BigQuery needs `key`).
    pub query: Option<String>,
    /// Where they go.
    pub to: Destination,
    /// The destination's name of the table (one table only; default: the
    /// source's name, with its schema unless that is `public`: `schema.name`
    /// for files, `schema_name` in BigQuery).
    pub to_table: Option<String>,
    /// The key BigQuery's `MERGE` matches rows on (default: the source's
    /// primary key).
    pub key: Option<Vec<String>>,
    /// Only the source rows this SQL condition selects.
    pub filter: Option<String>,
    /// Read only the rows whose value in this column is at or after the
    /// stored watermark.
    pub incremental: Option<String>,
    /// Widen the re-read overlap by this much (application clocks).
    pub lookback: Option<std::time::Duration>,
    /// NULL elements of arrays.
    pub array_nulls: ArrayNulls,
    /// Rows per record batch (0: 8192).
    pub batch_rows: usize,
    /// BigQuery's address: an emulator's (`host:port` or a URL), with no
    /// credentials; `None`: BigQuery itself.
    pub bigquery_endpoint: Option<String>,
    /// Plan only: say what would be read and written.
    pub dry_run: bool,
}

/// What the export of one table did.
#[derive(Debug, Clone, Default)]
pub struct TableExport {
    /// The source.
    pub source: String,
    /// The destination's name of the table.
    pub table: String,
    /// Rows read and written.
    pub rows: u64,
    /// The file written (relative to the destination directory), if any.
    pub file: Option<String>,
    /// Its size in bytes.
    pub bytes: u64,
    /// BigQuery: what the `MERGE` did.
    pub merged: Option<Merged>,
    /// With `incremental`: where the read started and where the next starts.
    pub watermarks: Option<(Option<String>, Option<String>)>,
    /// How each column is exported.
    pub mapping: Vec<String>,
    /// With `dry_run`: what would be read and written.
    pub plan: Vec<String>,
    /// What the user should know (values clamped, a table created).
    pub notes: Vec<String>,
}

/// What BigQuery's `MERGE` of a table's rows did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Rows inserted or updated.
    pub affected: u64,
    /// Of those, inserted and updated, when BigQuery says so (its
    /// `dmlStats`).
    pub split: Option<(u64, u64)>,
}

/// What an export did, table by table.
#[derive(Debug, Default)]
pub struct ExportReport {
    /// Each table's outcome, in the order given.
    pub tables: Vec<(String, Result<TableExport>)>,
}

impl ExportReport {
    /// The tables that failed.
    pub fn failed(&self) -> impl Iterator<Item = (&str, &Error)> {
        self.tables
            .iter()
            .filter_map(|(t, r)| r.as_ref().err().map(|e| (t.as_str(), e)))
    }
}

/// An open destination.
enum Open {
    Parquet(ParquetDir),
    /// The client, lent to blocking calls (see [`blocking`]).
    BigQuery(Box<Option<BigQuery>>),
    /// A dry run of a directory: nothing opened.
    Plan(PathBuf),
}

/// Runs `work` with the BigQuery client on a blocking thread.
async fn blocking<T: Send + 'static>(
    client: &mut Option<BigQuery>,
    work: impl FnOnce(&mut BigQuery) -> Result<T> + Send + 'static,
) -> Result<T> {
    let mut bq = client
        .take()
        .ok_or_else(|| Error::new(ErrorKind::Io, "the BigQuery client was lost"))?;
    let (bq, result) = tokio::task::spawn_blocking(move || {
        let result = work(&mut bq);
        (bq, result)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("a BigQuery call failed: {e}")))?;
    *client = Some(bq);
    result
}

/// Exports `opts.tables` of the `source` database to `opts.to`, each table
/// its own unit (see the module documentation). Fails as a whole only when
/// nothing can start (the options, the connection, the destination).
pub async fn export(
    source: &ConnParams,
    opts: &ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport> {
    match (&opts.query, opts.tables.is_empty(), &opts.to_table) {
        (None, true, _) => return Err(Error::config("name a table to export (--table)")),
        (Some(_), false, _) => {
            return Err(Error::config(
                "export reads tables or a query, not both (--table or --query)",
            ));
        }
        (Some(_), true, None) => {
            return Err(Error::config(
                "an export of a query needs its destination named (--to-table)",
            ));
        }
        _ => {}
    }
    if opts.to_table.is_some() && opts.tables.len() > 1 {
        return Err(Error::config(
            "--to-table names the destination of one table; several are exported under their own names",
        ));
    }
    let mut open = match &opts.to {
        Destination::Parquet(dir) if opts.dry_run => Open::Plan(dir.clone()),
        Destination::Parquet(dir) => Open::Parquet(ParquetDir::open(dir)?),
        Destination::BigQuery { project, dataset } => {
            let (project, dataset, endpoint) = (
                project.clone(),
                dataset.clone(),
                opts.bigquery_endpoint.clone(),
            );
            let bq = tokio::task::spawn_blocking(move || {
                BigQuery::new(&project, &dataset, endpoint.as_deref())
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("opening BigQuery: {e}")))??;
            Open::BigQuery(Box::new(Some(bq)))
        }
    };
    let mut client = crate::connect::connect(source).await?.client;
    progress.register(&client);
    let session = Session::read(&client).await?;
    let mut report = ExportReport::default();
    let sources: Vec<Source> = match &opts.query {
        Some(query) => vec![Source::Query(query.clone())],
        None => opts
            .tables
            .iter()
            .map(|t| Source::Table(t.in_schema(&session.current_schema)))
            .collect(),
    };
    for name in &sources {
        let outcome = export_table(&mut client, name, opts, &mut open, &progress)
            .await
            .map_err(|e| e.in_table(name));
        if outcome.is_err() && client.is_closed() {
            client = crate::connect::connect(source).await?.client;
            progress.register(&client);
        }
        report.tables.push((name.to_string(), outcome));
        if progress.is_interrupted() {
            break;
        }
    }
    Ok(report)
}

/// What one unit of an export reads.
enum Source {
    Table(TableName),
    /// A `SELECT`.
    Query(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Table(t) => write!(f, "{t}"),
            Self::Query(_) => f.write_str("the query"),
        }
    }
}

/// What the writer of a table's file did.
struct Written {
    rows: u64,
    bytes: u64,
    /// Values clamped, per column.
    clamped: Vec<(String, u64)>,
}

/// The destination's name of `source`: `table`, or `schema.table` (files)
/// / `schema_table` (BigQuery) outside `public`; refused when it cannot be
/// a directory's or a BigQuery table's name.
fn destination_name(source: &Source, opts: &ExportOptions) -> Result<String> {
    let bigquery = matches!(opts.to, Destination::BigQuery { .. });
    let name = match (&opts.to_table, source) {
        (Some(name), _) => name.clone(),
        (None, Source::Query(_)) => {
            return Err(Error::config(
                "an export of a query needs its destination named (--to-table)",
            ));
        }
        (None, Source::Table(source)) => table_destination(source, bigquery),
    };
    let bad = if bigquery {
        name.is_empty()
            || name.starts_with("_pgbulk")
            || name.contains(['/', '`', '\\', '.', '\0', '?', '#'])
    } else {
        name.is_empty()
            || name.starts_with('.')
            || name.starts_with("_pgbulk")
            || name.contains(['/', '\0'])
    };
    if bad {
        return Err(Error::config(format!(
            "\"{name}\" cannot name the destination table: give another with --to-table"
        )));
    }
    Ok(name)
}

/// A source table's name at the destination.
fn table_destination(source: &TableName, bigquery: bool) -> String {
    match source.schema_or_public() {
        "public" => source.name.clone(),
        schema if bigquery => format!("{schema}_{}", source.name),
        schema => format!("{schema}.{}", source.name),
    }
}

/// The incremental column of a table: its name, source type, and where
/// this run starts.
struct Incremental {
    column: String,
    type_name: String,
    start: Option<Mark>,
}

async fn export_table(
    client: &mut tokio_postgres::Client,
    source: &Source,
    opts: &ExportOptions,
    open: &mut Open,
    progress: &Arc<Progress>,
) -> Result<TableExport> {
    let label = source.to_string();
    let table = destination_name(source, opts)?;
    let (oid, relation) = match source {
        Source::Table(name) => {
            let schema = name.schema_or_public();
            match crate::catalog::table_oid(client, schema, &name.name).await? {
                Some(oid) => (Some(oid), name.quoted()),
                // A view, a materialized view or a foreign table: read as
                // a query of its rows is.
                None if crate::catalog::relation_kind(client, schema, &name.name)
                    .await?
                    .is_some_and(|k| matches!(k.as_str(), "v" | "m" | "f")) =>
                {
                    (None, name.quoted())
                }
                None => {
                    return Err(crate::catalog::not_a_table(
                        client,
                        schema,
                        &name.name,
                        "--to-table",
                    )
                    .await?);
                }
            }
        }
        Source::Query(query) => (
            None,
            format!(
                "({}) AS pgbulk_query",
                query.trim().trim_end_matches(';').trim_end()
            ),
        ),
    };
    let columns = columns::read(client, &relation, &label).await?;
    if let Some(filter) = &opts.filter {
        crate::sync::check_filter(client, &relation, filter).await?;
    }
    let mapping: Vec<String> = columns.iter().map(ExportColumn::describe).collect();
    let incremental_type = match &opts.incremental {
        Some(column) => {
            let type_name = columns
                .iter()
                .find(|c| c.name == *column)
                .ok_or_else(|| {
                    Error::config(format!("--incremental: {label} has no column \"{column}\""))
                })?
                .source_type
                .clone();
            crate::mark::check_orderable(client, &relation, column, &type_name, &label).await?;
            Some(type_name)
        }
        None => None,
    };
    // Rows whose incremental column is NULL are read by every run; a
    // query's columns may always be NULL.
    let nullable = match (&opts.incremental, oid) {
        (Some(column), Some(oid)) => client
            .query_opt(
                "SELECT NOT a.attnotnull FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped",
                &[&oid, column],
            )
            .await
            .map_err(|e| Error::server("reading the incremental column", e))?
            .is_none_or(|r| r.get(0)),
        _ => true,
    };
    let copy = |start: Option<&Mark>| {
        let mut filters: Vec<String> = opts.filter.iter().map(|w| format!("({w})")).collect();
        if let (Some(column), Some(type_name), Some(start)) =
            (&opts.incremental, &incremental_type, start)
        {
            filters.push(start.condition(column, type_name, opts.lookback, nullable));
        }
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("{} AS {}", c.select, quote_ident(&c.name)))
            .collect();
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        };
        format!(
            "COPY (SELECT {} FROM {relation}{filter}) TO STDOUT (FORMAT binary)",
            select.join(", ")
        )
    };
    let read_plan = |start: Option<&Mark>| {
        format!(
            "would read {label}{}{}",
            opts.filter
                .as_deref()
                .map(|w| format!(" WHERE {w}"))
                .unwrap_or_default(),
            opts.incremental
                .as_ref()
                .map(|c| format!(", {}", Mark::describe(start, c, nullable)))
                .unwrap_or_default()
        )
    };
    let incremental = |start: Option<Mark>| {
        opts.incremental
            .as_ref()
            .zip(incremental_type.as_ref())
            .map(|(column, type_name)| Incremental {
                column: column.clone(),
                type_name: type_name.clone(),
                start,
            })
    };
    let mut done = TableExport {
        source: label.clone(),
        table: table.clone(),
        mapping,
        ..TableExport::default()
    };
    match open {
        Open::Plan(dir) => {
            let state = ParquetDir::peek(dir, &table)?;
            let gone = state.as_ref().is_some_and(|s| s.files_gone(dir));
            let runs = state.as_ref().map_or(0, |s| s.runs);
            let state = state.filter(|_| !gone);
            let start = parquet_start(state.as_ref(), opts);
            done.plan = vec![
                read_plan(start.as_ref()),
                format!(
                    "into {}/{table}/run-{:06}.parquet{}",
                    dir.display(),
                    runs + 1,
                    if opts.incremental.is_some() {
                        ", beside the earlier runs' files"
                    } else {
                        ", replacing the table's earlier files"
                    }
                ),
                format!("with {}", copy(start.as_ref())),
            ];
            done.plan
                .extend(parquet_filter_changed(state.as_ref(), opts));
            done.plan.extend(gone.then(|| files_gone_note(&table, dir)));
            done.watermarks = opts
                .incremental
                .as_ref()
                .map(|_| (start.map(|m| m.value), None));
            Ok(done)
        }
        Open::Parquet(destination) => {
            // The state as the table's lock holder sees it.
            let run = destination.begin(&table)?;
            let inc = incremental(parquet_start(Some(run.state()), opts));
            let sql = copy(inc.as_ref().and_then(|i| i.start.as_ref()));
            // Names a row a file cannot hold, besides its number.
            let key = match (&opts.key, oid) {
                (Some(key), _) => key.clone(),
                (None, Some(oid)) => crate::catalog::facts::read(client, oid)
                    .await?
                    .primary_key
                    .map(|(_, key)| key)
                    .unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            let (written, next) = match read_rows(
                client,
                &relation,
                &label,
                &columns,
                &key,
                &sql,
                inc.as_ref(),
                &run.partial,
                opts,
                progress,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = std::fs::remove_file(&run.partial);
                    return Err(e);
                }
            };
            // An incremental run that read nothing publishes no file.
            let publish = written.rows > 0 || inc.is_none();
            if !publish {
                let _ = std::fs::remove_file(&run.partial);
            }
            destination.commit(
                &run,
                publish.then_some(written.rows),
                opts.incremental.as_deref(),
                next.as_ref().map(Mark::to_json),
                opts.filter.as_deref(),
                &label,
                inc.is_none(),
            )?;
            done.rows = written.rows;
            done.file = publish.then(|| run.relative().to_owned());
            done.bytes = if publish { written.bytes } else { 0 };
            done.notes = clamp_notes(&columns, written.clamped);
            done.notes
                .extend(parquet_filter_changed(Some(run.state()), opts));
            done.notes.extend(
                run.files_gone
                    .then(|| files_gone_note(&table, destination.dir())),
            );
            done.watermarks = inc.map(|i| (i.start.map(|m| m.value), next.map(|m| m.value)));
            Ok(done)
        }
        Open::BigQuery(bq) => {
            let primary = match oid {
                Some(oid) => crate::catalog::facts::read(client, oid)
                    .await?
                    .primary_key
                    .map(|(_, key)| key),
                None => None,
            };
            let key = opts.key.clone().or(primary).ok_or_else(|| {
                Error::config(format!(
                    "BigQuery merges on a key: {label} has no primary key; name its key with --key"
                ))
            })?;
            if let Some(k) = key.iter().find(|k| !columns.iter().any(|c| c.name == **k)) {
                return Err(Error::config(format!(
                    "--key: {label} has no column \"{k}\""
                )));
            }
            let export = bigquery_export(bq, &table, &columns, &key, &label, opts).await?;
            let start = export.start.clone();
            let inc = incremental(start.clone());
            if opts.dry_run {
                done.plan = export.plan;
                done.plan.insert(0, read_plan(start.as_ref()));
                done.plan.push(format!("with {}", copy(start.as_ref())));
                done.plan.extend(export.notes);
                done.watermarks = inc.map(|i| (i.start.map(|m| m.value), None));
                return Ok(done);
            }
            let path = std::env::temp_dir().join(format!(
                "pgbulk-export-{}-{}.parquet",
                std::process::id(),
                STAGE_COUNTER.fetch_add(1, Ordering::SeqCst)
            ));
            let sql = copy(start.as_ref());
            let read = read_rows(
                client,
                &relation,
                &label,
                &columns,
                &key,
                &sql,
                inc.as_ref(),
                &path,
                opts,
                progress,
            )
            .await;
            let outcome = match read {
                Ok((written, next)) => {
                    let merged = if written.rows > 0 {
                        merge_into_bigquery(bq, &table, &columns, &export, &path).await
                    } else {
                        Ok(Merged::default())
                    };
                    merged.map(|m| (written, next, m))
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&path);
            let (written, next, merged) = outcome?;
            if let (Some(column), Some(next)) = (&opts.incremental, &next) {
                let (table, column, mark, source) = (
                    table.clone(),
                    column.clone(),
                    next.to_json().to_string(),
                    label.clone(),
                );
                let filter = opts.filter.clone();
                blocking(bq, move |bq| {
                    bigquery::store_mark(bq, &table, &column, &mark, filter.as_deref(), &source)
                })
                .await?;
            }
            done.rows = written.rows;
            done.merged = Some(merged);
            done.notes = clamp_notes(&columns, written.clamped);
            done.notes.extend(export.notes.clone());
            if export.create && written.rows > 0 {
                done.notes.push(format!(
                    "created {} (key {}) from the type mapping",
                    export.quoted,
                    key.join(", ")
                ));
            }
            done.watermarks = inc.map(|i| (i.start.map(|m| m.value), next.map(|m| m.value)));
            Ok(done)
        }
    }
}

/// Names the staging files of one process's exports.
static STAGE_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where an incremental read of a directory's table starts: its state's
/// watermark of the same column.
fn parquet_start(state: Option<&parquet_dir::TableState>, opts: &ExportOptions) -> Option<Mark> {
    let column = opts.incremental.as_deref()?;
    state
        .filter(|s| s.column.as_deref() == Some(column))
        .and_then(|s| s.watermark.as_ref())
        .and_then(Mark::from_json)
}

/// What a run says when every file the state listed for `table` was gone.
fn files_gone_note(table: &str, dir: &std::path::Path) -> String {
    format!(
        "the files {} listed for {table} are gone from {}: its watermark was dropped, read from the start",
        parquet_dir::STATE_FILE,
        dir.display()
    )
}

/// When an incremental read starts from a watermark stored with another
/// `--where`: what the user should know (see [`mark::filter_changed`]).
fn parquet_filter_changed(
    state: Option<&parquet_dir::TableState>,
    opts: &ExportOptions,
) -> Option<String> {
    parquet_start(state, opts)?;
    let before = state?.filter.as_ref()?;
    mark::filter_changed("an export", before.sql.as_deref(), opts.filter.as_deref())
}

/// What BigQuery's side of a table's export was found to be.
struct BigQueryPlan {
    /// The destination, quoted.
    quoted: String,
    /// It does not exist: it is created.
    create: bool,
    /// How its columns are filled from the staging table's.
    fills: Vec<bigquery::Fill>,
    key: Vec<String>,
    /// Where an incremental read starts.
    start: Option<Mark>,
    /// What the user should know about where the read starts: the
    /// watermark was stored with another `--where`, or for a table since
    /// dropped.
    notes: Vec<String>,
    /// For dry runs.
    plan: Vec<String>,
    description: String,
}

/// Reads the destination `table` (columns, watermark) and checks the
/// source's columns against it; nothing is written.
async fn bigquery_export(
    bq: &mut Option<BigQuery>,
    table: &str,
    columns: &[ExportColumn],
    key: &[String],
    label: &str,
    opts: &ExportOptions,
) -> Result<BigQueryPlan> {
    let (table, columns, key, label, incremental, opts_filter) = (
        table.to_owned(),
        columns.to_vec(),
        key.to_vec(),
        label.to_owned(),
        opts.incremental.clone(),
        opts.filter.clone(),
    );
    blocking(bq, move |bq| {
        let quoted = bq.quoted(&table);
        let existing = bq.columns(&table)?;
        let description = format!(
            "Exported by pgbulk from {label}; key: ({}).",
            key.join(", ")
        );
        let (create, fills) = match &existing {
            Some(dest) => {
                let fills = bigquery::fills(&columns, dest).map_err(|mismatches| {
                    Error::new(
                        ErrorKind::Data,
                        format!(
                            "{label} does not fit {quoted}; nothing was loaded:\n  {}",
                            mismatches.join("\n  ")
                        ),
                    )
                })?;
                for k in &key {
                    if !fills.iter().any(|f| f.column.eq_ignore_ascii_case(k)) {
                        return Err(Error::config(format!(
                            "the key column \"{k}\" is not in {quoted}"
                        )));
                    }
                }
                (false, fills)
            }
            None => (
                true,
                columns
                    .iter()
                    .map(|c| bigquery::Fill {
                        column: c.name.clone(),
                        expr: format!("S.`{}`", c.name),
                    })
                    .collect(),
            ),
        };
        let (mut start, stored_filter) = match &incremental {
            Some(column) => bigquery::read_mark(bq, &table, column, existing.as_deref())?,
            None => (None, None),
        };
        let mut notes: Vec<String> = stored_filter
            .and_then(|before| {
                mark::filter_changed("an export", before.as_deref(), opts_filter.as_deref())
            })
            .into_iter()
            .collect();
        // A watermark goes with its table: one stored before the table
        // was dropped would skip every row before it.
        if start.is_some() && existing.is_none() {
            start = None;
            notes = vec![format!(
                "{quoted} did not exist, though an earlier export stored a watermark for it: read from the start"
            )];
        }
        let mut plan = Vec::new();
        if create {
            plan.push(format!(
                "{quoted} does not exist: it would be created with the mapping above ({description})"
            ));
        }
        plan.push(format!(
            "into {quoted} by a load job into a staging table, then {}",
            bigquery::merge_sql(&quoted, "`staging`", &key, &fills)
        ));
        Ok(BigQueryPlan {
            quoted,
            create,
            fills,
            key,
            start,
            notes,
            plan,
            description,
        })
    })
    .await
}

/// Loads the Parquet file `path` into a staging table and merges it into
/// `table` (created first when `export.create`); the staging table is
/// dropped either way; a destination created here is dropped again when
/// the `MERGE` fails.
async fn merge_into_bigquery(
    bq: &mut Option<BigQuery>,
    table: &str,
    columns: &[ExportColumn],
    export: &BigQueryPlan,
    path: &std::path::Path,
) -> Result<Merged> {
    let stage = format!(
        "_pgbulk_stage_{table}_{}_{}",
        std::process::id(),
        STAGE_COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let (table, columns, path, create, description, fills, key, quoted) = (
        table.to_owned(),
        columns.to_vec(),
        path.to_owned(),
        export.create,
        export.description.clone(),
        export.fills.clone(),
        export.key.clone(),
        export.quoted.clone(),
    );
    blocking(bq, move |bq| {
        bq.create(
            &stage,
            &columns,
            &format!("pgbulk's staging of {quoted}"),
            true,
        )?;
        let merged = (|| {
            bq.load(&stage, &path)?;
            if create {
                bq.create(&table, &columns, &description, false)?;
            }
            let sql = bigquery::merge_sql(&quoted, &bq.quoted(&stage), &key, &fills);
            let merged = bq.query(&sql, &[], &format!("merging into {quoted}"));
            if merged.is_err() && create {
                let _ = bq.drop_table(&table);
            }
            let (_, stats) = merged?;
            let count = |v: &serde_json::Value| {
                v.as_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .or_else(|| v.as_u64())
            };
            let dml = &stats["dmlStats"];
            let split = count(&dml["insertedRowCount"]).zip(count(&dml["updatedRowCount"]));
            Ok(Merged {
                affected: count(&stats["numDmlAffectedRows"])
                    .or(split.map(|(i, u)| i + u))
                    .unwrap_or(0),
                split,
            })
        })();
        let dropped = bq.drop_table(&stage);
        let merged = merged?;
        dropped?;
        Ok(merged)
    })
    .await
}

/// Reads the rows of `copy` (a binary `COPY ... TO STDOUT`) of `relation`
/// in a read-only snapshot into the Parquet file `path`, with the next
/// watermark (`inc`) read in the same snapshot, bounded by the oldest
/// transaction open before it.
#[allow(clippy::too_many_arguments)]
async fn read_rows(
    client: &mut tokio_postgres::Client,
    relation: &str,
    label: &str,
    columns: &[ExportColumn],
    key: &[String],
    copy: &str,
    inc: Option<&Incremental>,
    path: &std::path::Path,
    opts: &ExportOptions,
    progress: &Arc<Progress>,
) -> Result<(Written, Option<Mark>)> {
    let bound = match inc {
        Some(i) => Bound::read(client, &i.type_name).await?,
        None => None,
    };
    for note in bound.iter().flat_map(|b| b.notes(opts.lookback.is_some())) {
        tracing::warn!("{note}");
    }
    let tx = crate::sync::snapshot(client).await?;
    let next = match inc {
        Some(i) => {
            mark::next(
                &tx,
                &i.column,
                &i.type_name,
                relation,
                opts.filter.as_deref(),
                i.start.as_ref(),
                bound.as_ref(),
            )
            .await?
        }
        None => None,
    };
    let stream = tx
        .copy_out(copy)
        .await
        .map_err(|e| Error::server(&format!("reading {label}"), e))?;
    futures_util::pin_mut!(stream);

    // Decoded and written on a thread of its own while the server sends
    // more; chunks of about 256 KiB, a few in flight.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let decoder = decode::Decoder::new(
        columns,
        label,
        if opts.batch_rows > 0 {
            opts.batch_rows
        } else {
            8192
        },
        opts.array_nulls,
    )
    .naming_rows_by(key);
    let partial = path.to_owned();
    let counter = progress.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Written> {
        let mut decoder = decoder;
        let mut file = FileWriter::create(&partial, decoder.schema())?;
        let mut write = |batch: arrow_array::RecordBatch| -> Result<()> {
            counter
                .rows_read
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            file.write(&batch)
        };
        while let Some(chunk) = receiver.blocking_recv() {
            decoder.feed(&chunk, &mut write)?;
        }
        decoder.finish(&mut write)?;
        let bytes = file.close()?;
        Ok(Written {
            rows: decoder.rows(),
            bytes,
            clamped: decoder.clamped(),
        })
    });
    let read = async {
        let mut buffer = Vec::with_capacity(256 << 10);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::server(&format!("reading {label}"), e))?;
            progress
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= 256 << 10 {
                let full = std::mem::replace(&mut buffer, Vec::with_capacity(256 << 10));
                if sender.send(full).await.is_err() {
                    // The writer stopped: its error says why.
                    return Ok(());
                }
            }
            if progress.is_interrupted() {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("interrupted while reading {label}: nothing of it was published"),
                ));
            }
        }
        if !buffer.is_empty() {
            let _ = sender.send(buffer).await;
        }
        Ok(())
    };
    let read: Result<()> = read.await;
    drop(sender);
    let written = writer
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("the Parquet writer failed: {e}")));
    let written = match (read, written) {
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(w)) => w?,
    };
    tx.commit()
        .await
        .map_err(|e| Error::server("ending the source snapshot", e))?;
    Ok((written, next))
}

/// What is said of the values clamped in each column.
fn clamp_notes(columns: &[ExportColumn], clamped: Vec<(String, u64)>) -> Vec<String> {
    clamped
        .into_iter()
        .map(|(column, n)| {
            let range = match columns.iter().find(|c| c.name == column).map(|c| &c.kind) {
                Some(Kind::Time) => "24:00:00 became 23:59:59.999999",
                _ => "0001-01-01 to 9999-12-31 23:59:59.999999; infinity is beyond it",
            };
            format!(
                "{n} values of \"{column}\" lay outside BigQuery's range and were clamped to it ({range})"
            )
        })
        .collect()
}
