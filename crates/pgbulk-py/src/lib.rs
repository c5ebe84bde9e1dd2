//! `pgbulk._pgbulk`: the library for the Python package `pgbulk` (its
//! typed signatures and docstrings live in `python/pgbulk`). Each function
//! turns its arguments into the library's options, runs the library with
//! the GIL released and maps its report to a dict and its errors to the
//! exceptions of `pgbulk.errors`: no behaviour of its own.

mod errors;
mod ingest;
mod runtime;

use std::sync::Arc;

use pgbulk::conninfo::{Environment, Request};
use pgbulk::load::{LoadMode, LoadOptions, LoadReport, Progress};
use pgbulk::schema::TableName;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The library's result in Python: the value, or the exception.
fn done<T>(py: Python<'_>, outcome: PyResult<pgbulk::Result<T>>) -> PyResult<T> {
    outcome?.map_err(|e| errors::to_py(py, &e))
}

fn config_error(py: Python<'_>, message: String) -> PyErr {
    errors::to_py(py, &pgbulk::Error::new(pgbulk::ErrorKind::Config, message))
}

/// An exception raised while the data was turned into Arrow (pyarrow's,
/// for a pandas column of mixed types) as a `DataError`, naming the column
/// when the message does, its cause the original.
fn conversion_error(py: Python<'_>, original: PyErr) -> PyErr {
    let text = original
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut error = pgbulk::Error::new(
        pgbulk::ErrorKind::Data,
        format!("the data cannot be read as Arrow: {text}"),
    );
    if let Some(column) = text
        .split("Conversion failed for column ")
        .nth(1)
        .and_then(|rest| rest.split(" with type ").next())
    {
        error = error.for_column(column);
    }
    let converted = errors::to_py(py, &error);
    converted.set_cause(py, Some(original));
    converted
}

/// Where `db` points, resolved as the CLI resolves `--db` (libpq's rules;
/// nothing configured: pgbulk's local cluster, started as needed).
fn target(py: Python<'_>, db: Option<String>) -> PyResult<pgbulk::conninfo::ConnParams> {
    let request = Request { db, profile: None };
    let env = Environment::from_process();
    done(
        py,
        Ok(pgbulk::endpoint::resolve(&request, &env).map(|e| e.params)),
    )
}

/// Runs the library's `work` (given the run's progress) with the GIL
/// released; Ctrl-C interrupts it (the batch in flight rolls back).
fn with_progress<T, F>(
    py: Python<'_>,
    params: &pgbulk::conninfo::ConnParams,
    work: impl FnOnce(Arc<Progress>) -> F,
) -> PyResult<T>
where
    T: Send,
    F: std::future::Future<Output = pgbulk::Result<T>> + Send,
{
    let progress = Arc::new(Progress::default());
    done(
        py,
        runtime::run(py, work(progress.clone()), progress, Some(params.clone())),
    )
}

/// [`with_progress`] for work that reads a COPY stream (sync, export,
/// the Spark commit's relay): run by [`pgbulk::worker::on_worker`], as the
/// CLI runs them.
fn with_progress_on_worker<T, F>(
    py: Python<'_>,
    params: &pgbulk::conninfo::ConnParams,
    work: impl FnOnce(Arc<Progress>) -> F,
) -> PyResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = pgbulk::Result<T>> + Send + 'static,
{
    with_progress(py, params, |progress| {
        let work = work(progress);
        async move { pgbulk::worker::on_worker(work).await.and_then(|r| r) }
    })
}

fn mode(py: Python<'_>, mode: Option<&str>) -> PyResult<Option<LoadMode>> {
    Ok(match mode {
        None => None,
        Some("upsert") => Some(LoadMode::Upsert),
        Some("append") => Some(LoadMode::Append),
        Some("replace") => Some(LoadMode::Replace),
        Some("replace-atomic") => Some(LoadMode::ReplaceAtomic),
        Some(other) => {
            return Err(config_error(
                py,
                format!(
                    "mode {other:?}: expected \"upsert\", \"append\", \"replace\" or \"replace-atomic\""
                ),
            ));
        }
    })
}

fn table(py: Python<'_>, name: &str) -> PyResult<TableName> {
    done(py, Ok(TableName::parse(name)))
}

/// A load's report as a dict (the Python side makes it a dataclass).
fn load_report<'py>(py: Python<'py>, r: &LoadReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("rows_read", r.rows_read)?;
    d.set_item("inserted", r.inserted)?;
    d.set_item("updated", r.updated)?;
    d.set_item("unchanged", r.unchanged)?;
    d.set_item("deleted", r.deleted)?;
    d.set_item("repeated", r.repeated)?;
    d.set_item("rejected", r.rejected)?;
    d.set_item("batches", r.batches)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("created_ddl", r.inferred_ddl.clone())?;
    d.set_item("resumed_after_rows", r.resumed_after_rows)?;
    d.set_item("nothing_to_load", r.nothing_to_load.clone())?;
    d.set_item("already_loaded", r.already_loaded)?;
    d.set_item("skipped", r.skipped.clone())?;
    d.set_item("plan", r.plan.clone())?;
    d.set_item("migrations", r.migrations.clone())?;
    d.set_item("notes", r.notes.clone())?;
    Ok(d)
}

/// `pgbulk.load_csv`: CSV files into a table, as `pgbulk load`.
#[pyfunction]
#[pyo3(signature = (
    paths, table_name, *, db=None, mode_name=None, key=None, schema_ddl=None,
    delimiter=None, header=None, null=None, encoding=None, batch_rows=None,
    max_errors=0, reject_file=None, restart=false, single_transaction=false,
    ignore_extra=false, streams=None, retries=0, dry_run=false, input_format=None,
    quote=None, escape=None, skip_lines=0, columns=None, types=None, sample_rows=None,
    sample_all=false
))]
#[allow(clippy::too_many_arguments)]
fn load_csv<'py>(
    py: Python<'py>,
    paths: Vec<String>,
    table_name: &str,
    db: Option<String>,
    mode_name: Option<&str>,
    key: Option<Vec<String>>,
    schema_ddl: Option<String>,
    delimiter: Option<&str>,
    header: Option<bool>,
    null: Option<String>,
    encoding: Option<&str>,
    batch_rows: Option<u64>,
    max_errors: u64,
    reject_file: Option<String>,
    restart: bool,
    single_transaction: bool,
    ignore_extra: bool,
    streams: Option<usize>,
    retries: u32,
    dry_run: bool,
    input_format: Option<&str>,
    quote: Option<&str>,
    escape: Option<&str>,
    skip_lines: u64,
    columns: Option<Vec<String>>,
    types: Option<Vec<(String, String)>>,
    sample_rows: Option<u64>,
    sample_all: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let defaults = LoadOptions::default();
    let mut dialect = defaults.dialect.clone();
    // The text format's defaults are COPY's: tab, and \N for NULL.
    dialect.text = match input_format {
        None | Some("csv") => false,
        Some("text") => true,
        Some(other) => {
            return Err(config_error(
                py,
                format!("format {other:?}: \"csv\" or \"text\""),
            ));
        }
    };
    if dialect.text {
        dialect.delimiter = b'\t';
        dialect.null = b"\\N".to_vec();
    }
    let delimiter = match delimiter {
        None => None,
        Some(d) if d.len() == 1 => Some(d.as_bytes()[0]),
        Some("\\t") => Some(b'\t'),
        Some(d) => {
            return Err(config_error(
                py,
                format!("delimiter {d:?}: one ASCII character"),
            ));
        }
    };
    if let Some(d) = delimiter {
        dialect.delimiter = d;
    }
    let byte = |name: &str, c: &str| {
        pgbulk::csv::Dialect::parse_byte(c)
            .map_err(|why| config_error(py, format!("{name}: {why}")))
    };
    if let Some(q) = quote {
        dialect.quote = byte("quote", q)?;
    }
    dialect.escape = match escape {
        Some(e) => byte("escape", e)?,
        None => dialect.quote,
    };
    let null_given = null.is_some();
    if let Some(null) = null {
        dialect.null = null.into_bytes();
    }
    dialect.validate().map_err(|why| config_error(py, why))?;
    let opts = LoadOptions {
        sources: done(py, Ok(pgbulk::input::expand_args(&paths)))?,
        table: table(py, table_name)?,
        detect_format: input_format.is_none() && !null_given,
        dialect,
        detect_delimiter: delimiter.is_none() && input_format != Some("text"),
        header: header.unwrap_or(true),
        detect_header: header.is_none(),
        encoding: done(py, Ok(pgbulk::input::encoding(encoding.unwrap_or("utf-8"))))?,
        ignore_extra,
        schema_ddl,
        mode: mode(py, mode_name)?,
        key,
        batch_rows: batch_rows.unwrap_or(defaults.batch_rows),
        single_transaction,
        max_errors,
        reject_file: reject_file.map(Into::into),
        restart,
        streams: streams.unwrap_or(defaults.streams).max(1),
        upsert_streams: streams.map(|n| n.max(1)),
        retries,
        dry_run,
        skip_lines,
        columns,
        types: types.unwrap_or_default(),
        sample: match (sample_all, sample_rows) {
            (true, _) => pgbulk::load::Sample::All,
            (false, Some(n)) => pgbulk::load::Sample::Rows(n),
            (false, None) => pgbulk::load::Sample::Parts,
        },
        ..defaults
    };
    if opts.sources.is_empty() && !paths.is_empty() {
        let report = pgbulk::load::LoadReport {
            nothing_to_load: Some(format!(
                "no file matches {}: nothing to load",
                paths.join(", ")
            )),
            ..Default::default()
        };
        return load_report(py, &report);
    }
    let params = target(py, db)?;
    let report = with_progress(py, &params, |p| {
        pgbulk::load::load_retrying(&params, &opts, p)
    })?;
    load_report(py, &report)
}

/// `pgbulk.sync`: a table or query of one database into a table of
/// another, as `pgbulk sync`.
#[pyfunction]
#[pyo3(signature = (
    source, *, table_name=None, query=None, db=None, to=None, where_sql=None,
    mode_name=None, key=None, incremental=None, lookback_seconds=None,
    jobs=1, delete_missing=false, ignore_extra=false, batch_rows=None, dry_run=false,
    schema_ddl=None
))]
#[allow(clippy::too_many_arguments)]
fn sync<'py>(
    py: Python<'py>,
    source: String,
    table_name: Option<&str>,
    query: Option<String>,
    db: Option<String>,
    to: Option<&str>,
    where_sql: Option<String>,
    mode_name: Option<&str>,
    key: Option<Vec<String>>,
    incremental: Option<String>,
    lookback_seconds: Option<f64>,
    jobs: usize,
    delete_missing: bool,
    ignore_extra: bool,
    batch_rows: Option<u64>,
    dry_run: bool,
    schema_ddl: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let what = match (table_name, query) {
        (Some(t), None) => pgbulk::sync::SyncSource::Table(table(py, t)?),
        (None, Some(q)) => pgbulk::sync::SyncSource::Query(q),
        _ => {
            return Err(config_error(
                py,
                "sync reads a table or a query: give one".to_owned(),
            ));
        }
    };
    let opts = pgbulk::sync::SyncOptions {
        source: what,
        to: to.map(|t| table(py, t)).transpose()?,
        filter: where_sql,
        mode: mode(py, mode_name)?,
        key,
        ignore_extra,
        batch_rows: batch_rows.unwrap_or(0),
        lock_policy: pgbulk::lock::LockPolicy::default(),
        incremental,
        lookback: lookback_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64),
        dry_run,
        delete_missing,
        jobs,
        schema_ddl,
    };
    let env = Environment::from_process();
    let from = done(
        py,
        Ok(pgbulk::conninfo::resolve(
            &Request {
                db: Some(source),
                profile: None,
            },
            &env,
        )),
    )?;
    let params = target(py, db)?;
    let report = with_progress_on_worker(py, &params, |p| {
        let to = params.clone();
        async move { pgbulk::sync::sync(&from, &to, &opts, p).await }
    })?;
    let d = load_report(py, &report.load)?;
    d.set_item("rows_read", report.rows_read)?;
    d.set_item("mapping", report.mapping.clone())?;
    d.set_item("plan", report.plan.clone())?;
    d.set_item("ranges", report.ranges)?;
    d.set_item(
        "watermark_from",
        report.watermarks.as_ref().and_then(|w| w.0.clone()),
    )?;
    d.set_item(
        "watermark_next",
        report.watermarks.as_ref().and_then(|w| w.1.clone()),
    )?;
    let mut notes = report.load.notes.clone();
    notes.extend(report.notes.iter().cloned());
    d.set_item("notes", notes)?;
    Ok(d)
}

/// `pgbulk.export`: tables into Parquet files or BigQuery, as `pgbulk
/// export`. Each table's outcome: its report (a dict) or its exception.
#[pyfunction]
#[pyo3(signature = (
    source, tables, to, *, query=None, to_table=None, key=None, where_sql=None, incremental=None,
    lookback_seconds=None, array_nulls=None, bigquery_endpoint=None, dry_run=false
))]
#[allow(clippy::too_many_arguments)]
fn export<'py>(
    py: Python<'py>,
    source: Option<String>,
    tables: Vec<String>,
    to: &str,
    query: Option<String>,
    to_table: Option<String>,
    key: Option<Vec<String>>,
    where_sql: Option<String>,
    incremental: Option<String>,
    lookback_seconds: Option<f64>,
    array_nulls: Option<&str>,
    bigquery_endpoint: Option<String>,
    dry_run: bool,
) -> PyResult<Vec<(String, Py<PyAny>)>> {
    use pgbulk::export::{ArrayNulls, Destination, ExportOptions};
    let to = done(py, Ok(Destination::parse(to)))?;
    let array_nulls = match (array_nulls, &to) {
        (Some("keep"), _) | (None, Destination::Parquet(_)) => ArrayNulls::Keep,
        (Some("drop"), _) => ArrayNulls::Drop,
        (Some("refuse"), _) | (None, Destination::BigQuery { .. }) => ArrayNulls::Refuse,
        (Some(other), _) => {
            return Err(config_error(
                py,
                format!("array_nulls {other:?}: expected \"keep\", \"drop\" or \"refuse\""),
            ));
        }
    };
    let opts = ExportOptions {
        tables: tables
            .iter()
            .map(|t| table(py, t))
            .collect::<PyResult<Vec<_>>>()?,
        query,
        to,
        to_table,
        key,
        filter: where_sql,
        incremental,
        lookback: lookback_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64),
        array_nulls,
        batch_rows: 0,
        bigquery_endpoint,
        dry_run,
    };
    let params = target(py, source)?;
    let report = with_progress_on_worker(py, &params, |p| {
        let from = params.clone();
        async move { pgbulk::export::export(&from, &opts, p).await }
    })?;
    report
        .tables
        .into_iter()
        .map(|(name, outcome)| {
            let value: Py<PyAny> = match outcome {
                Ok(t) => {
                    let d = PyDict::new(py);
                    d.set_item("source", &t.source)?;
                    d.set_item("table", &t.table)?;
                    d.set_item("rows", t.rows)?;
                    d.set_item("file", &t.file)?;
                    d.set_item("bytes", t.bytes)?;
                    d.set_item("merged", t.merged.map(|m| m.affected))?;
                    d.set_item("inserted", t.merged.and_then(|m| m.split).map(|s| s.0))?;
                    d.set_item("updated", t.merged.and_then(|m| m.split).map(|s| s.1))?;
                    d.set_item(
                        "watermark_from",
                        t.watermarks.as_ref().and_then(|w| w.0.clone()),
                    )?;
                    d.set_item(
                        "watermark_next",
                        t.watermarks.as_ref().and_then(|w| w.1.clone()),
                    )?;
                    d.set_item("mapping", &t.mapping)?;
                    d.set_item("plan", &t.plan)?;
                    d.set_item("notes", &t.notes)?;
                    d.into_any().unbind()
                }
                Err(e) => errors::to_py(py, &e).into_value(py).into_any(),
            };
            Ok((name, value))
        })
        .collect()
}

/// The first column of `stream`'s schema whose Arrow type this build
/// cannot read (such as polars' `Int128`), named with the reason; `None`
/// when every column reads, or the schema cannot be had (the reader then
/// says why).
///
/// # Safety
///
/// `stream` points to a live `FFI_ArrowArrayStream`; it is only asked for
/// its schema (which the C stream interface allows any number of times).
unsafe fn unreadable_column(
    stream: *mut arrow_array::ffi_stream::FFI_ArrowArrayStream,
) -> Option<String> {
    use arrow_schema::ffi::FFI_ArrowSchema;
    // SAFETY: the caller's obligation: `stream` is live.
    let get_schema = unsafe { (*stream).get_schema }?;
    let mut schema = FFI_ArrowSchema::empty();
    // SAFETY: `schema` is an empty struct for the producer to fill; it is
    // released when dropped.
    if unsafe { get_schema(stream, &mut schema) } != 0 {
        return None;
    }
    schema.children().find_map(|child| {
        arrow_schema::Field::try_from(child).err().map(|e| {
            format!(
                "column \"{}\" (Arrow format \"{}\"): {e}",
                child.name().unwrap_or_default(),
                child.format()
            )
        })
    })
}

/// The Arrow stream of `data`: its `__arrow_c_stream__` (a pyarrow Table or
/// RecordBatchReader, a polars or pandas DataFrame), else its
/// `__arrow_c_array__` (one record batch).
fn arrow_stream(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
) -> PyResult<(arrow_schema::SchemaRef, pgbulk::arrow::Batches)> {
    use arrow_array::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
    use arrow_array::{RecordBatchReader, StructArray};
    use pyo3::types::PyCapsule;
    let bad = |why: String| config_error(py, why);
    if data.hasattr("__arrow_c_stream__")? {
        let capsule = data
            .call_method0("__arrow_c_stream__")
            .map_err(|e| conversion_error(py, e))?;
        let capsule = capsule
            .cast::<PyCapsule>()
            .map_err(|_| bad("__arrow_c_stream__ did not return a capsule".to_owned()))?;
        let pointer = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
        // SAFETY: as below; the stream stays in the capsule.
        if let Some(why) =
            unsafe { unreadable_column(pointer.as_ptr().cast::<FFI_ArrowArrayStream>()) }
        {
            return Err(bad(format!("the Arrow stream cannot be read: {why}")));
        }
        // SAFETY: the capsule named "arrow_array_stream" holds an
        // FFI_ArrowArrayStream (the Arrow PyCapsule interface); from_raw
        // moves it out, leaving a released stream for the capsule's
        // destructor.
        let reader = unsafe {
            ArrowArrayStreamReader::from_raw(pointer.as_ptr().cast::<FFI_ArrowArrayStream>())
        }
        .map_err(|e| bad(format!("the Arrow stream cannot be read: {e}")))?;
        let schema = reader.schema();
        return Ok((schema, Box::new(reader)));
    }
    if data.hasattr("__arrow_c_array__")? {
        let pair = data
            .call_method0("__arrow_c_array__")
            .map_err(|e| conversion_error(py, e))?;
        let (schema_capsule, array_capsule): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            pair.extract()?;
        let schema_capsule = schema_capsule
            .cast::<PyCapsule>()
            .map_err(|_| bad("__arrow_c_array__ did not return capsules".to_owned()))?;
        let array_capsule = array_capsule
            .cast::<PyCapsule>()
            .map_err(|_| bad("__arrow_c_array__ did not return capsules".to_owned()))?;
        let schema_ptr = schema_capsule.pointer_checked(Some(c"arrow_schema"))?;
        let array_ptr = array_capsule.pointer_checked(Some(c"arrow_array"))?;
        // SAFETY: the capsules hold an FFI_ArrowSchema and an FFI_ArrowArray
        // (the Arrow PyCapsule interface); the array is moved out (its
        // release left null for the capsule), the schema borrowed.
        let data = unsafe {
            let array = std::ptr::replace(
                array_ptr
                    .as_ptr()
                    .cast::<arrow_array::ffi::FFI_ArrowArray>(),
                arrow_array::ffi::FFI_ArrowArray::empty(),
            );
            let schema = &*schema_ptr
                .as_ptr()
                .cast::<arrow_schema::ffi::FFI_ArrowSchema>();
            arrow_array::ffi::from_ffi(array, schema)
        }
        .map_err(|e| bad(format!("the Arrow array cannot be read: {e}")))?;
        let batch = arrow_array::RecordBatch::from(StructArray::from(data));
        let schema = batch.schema();
        return Ok((schema, Box::new(std::iter::once(Ok(batch)))));
    }
    let name = data.get_type().name()?;
    // A query not yet run: it has no rows until collected.
    let lazy = if name == "LazyFrame" {
        " (a polars LazyFrame: .collect() it first)"
    } else {
        ""
    };
    Err(bad(format!(
        "{name} is not Arrow data{lazy}: pass a pyarrow Table or RecordBatchReader, a polars DataFrame or a pandas DataFrame (pandas 2.2 or later), or anything with __arrow_c_stream__"
    )))
}

/// `pgbulk.write`: Arrow data (any object with the Arrow PyCapsule
/// interface) into a table.
#[pyfunction]
#[pyo3(signature = (
    data, table_name, *, db=None, mode_name=None, key=None, schema_ddl=None,
    create=true, batch_rows=None, single_transaction=false, ignore_extra=false, streams=None,
    rewrite=true
))]
#[allow(clippy::too_many_arguments)]
fn write<'py>(
    py: Python<'py>,
    data: Bound<'py, PyAny>,
    table_name: &str,
    db: Option<String>,
    mode_name: Option<&str>,
    key: Option<Vec<String>>,
    schema_ddl: Option<String>,
    create: bool,
    batch_rows: Option<u64>,
    single_transaction: bool,
    ignore_extra: bool,
    streams: Option<usize>,
    rewrite: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let defaults = LoadOptions::default();
    let opts = LoadOptions {
        table: table(py, table_name)?,
        mode: mode(py, mode_name)?,
        key,
        schema_ddl,
        batch_rows: batch_rows.unwrap_or(defaults.batch_rows),
        single_transaction,
        ignore_extra,
        streams: streams.unwrap_or(defaults.streams).max(1),
        rewrite,
        ..defaults
    };
    let (schema, batches) = arrow_stream(py, &data)?;
    let params = target(py, db)?;
    let report = with_progress(py, &params, |p| {
        pgbulk::arrow::write(&params, schema, batches, &opts, create, p)
    })?;
    load_report(py, &report)
}

/// The options of a partitioned write (`pgbulk.spark`).
#[allow(clippy::too_many_arguments)]
fn partitioned_options(
    py: Python<'_>,
    table_name: &str,
    mode_name: Option<&str>,
    key: Option<Vec<String>>,
    schema_ddl: Option<String>,
    on_duplicate: Option<&str>,
    ignore_extra: bool,
    lock_timeout_ms: Option<u64>,
) -> PyResult<LoadOptions> {
    use pgbulk::ingest::OnDuplicate;
    let defaults = LoadOptions::default();
    let on_duplicate = match on_duplicate {
        None | Some("last") => OnDuplicate::Last,
        Some("first") => OnDuplicate::First,
        Some("error") => OnDuplicate::Error,
        Some(other) => {
            return Err(config_error(
                py,
                format!("on_duplicate {other:?}: expected \"last\", \"first\" or \"error\""),
            ));
        }
    };
    let mut lock_policy = defaults.lock_policy.clone();
    if let Some(ms) = lock_timeout_ms {
        lock_policy.lock_timeout = std::time::Duration::from_millis(ms);
    }
    Ok(LoadOptions {
        table: table(py, table_name)?,
        mode: mode(py, mode_name)?,
        key,
        schema_ddl,
        on_duplicate,
        ignore_extra,
        lock_policy,
        ..defaults
    })
}

fn write_id(py: Python<'_>, id: &str) -> PyResult<pgbulk::arrow::partitioned::WriteId> {
    done(py, Ok(pgbulk::arrow::partitioned::WriteId::parse(id)))
}

/// `pgbulk.spark`, on the driver before the tasks: creates or migrates the
/// table for `data`'s schema and names the write.
#[pyfunction]
#[pyo3(signature = (
    data, table_name, *, db=None, mode_name=None, key=None, schema_ddl=None,
    on_duplicate=None, ignore_extra=false, lock_timeout_ms=None, create=true,
    stale_after_seconds=86400
))]
#[allow(clippy::too_many_arguments)]
fn partitioned_begin<'py>(
    py: Python<'py>,
    data: Bound<'py, PyAny>,
    table_name: &str,
    db: Option<String>,
    mode_name: Option<&str>,
    key: Option<Vec<String>>,
    schema_ddl: Option<String>,
    on_duplicate: Option<&str>,
    ignore_extra: bool,
    lock_timeout_ms: Option<u64>,
    create: bool,
    stale_after_seconds: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = partitioned_options(
        py,
        table_name,
        mode_name,
        key,
        schema_ddl,
        on_duplicate,
        ignore_extra,
        lock_timeout_ms,
    )?;
    let (schema, _) = arrow_stream(py, &data)?;
    let params = target(py, db)?;
    let begun = with_progress(py, &params, |_| {
        pgbulk::arrow::partitioned::begin(
            &params,
            schema,
            &opts,
            create,
            std::time::Duration::from_secs(stale_after_seconds),
        )
    })?;
    let d = PyDict::new(py);
    d.set_item("write_id", begun.write.as_str())?;
    d.set_item("table", begun.table.to_string())?;
    d.set_item("created_ddl", begun.created_ddl)?;
    d.set_item("migrations", begun.migrations)?;
    d.set_item("dropped", begun.dropped)?;
    Ok(d)
}

/// `pgbulk.spark`, in a task: stages one partition.
#[pyfunction]
#[pyo3(signature = (
    data, table_name, write, partition, *, db=None, ignore_extra=false, lock_timeout_ms=None
))]
#[allow(clippy::too_many_arguments)]
fn partitioned_stage<'py>(
    py: Python<'py>,
    data: Bound<'py, PyAny>,
    table_name: &str,
    write: &str,
    partition: u32,
    db: Option<String>,
    ignore_extra: bool,
    lock_timeout_ms: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = partitioned_options(
        py,
        table_name,
        None,
        None,
        None,
        None,
        ignore_extra,
        lock_timeout_ms,
    )?;
    let write = write_id(py, write)?;
    let (schema, batches) = arrow_stream(py, &data)?;
    let params = target(py, db)?;
    let staged = with_progress(py, &params, |p| {
        pgbulk::arrow::partitioned::stage(&params, &write, partition, schema, batches, &opts, p)
    })?;
    let d = PyDict::new(py);
    d.set_item("rows", staged.rows)?;
    d.set_item("reused", staged.reused)?;
    Ok(d)
}

/// `pgbulk.spark`, on the driver after every task: merges the staged
/// partitions in one transaction.
#[pyfunction]
#[pyo3(signature = (
    data, table_name, write, partitions, *, db=None, mode_name=None, key=None,
    schema_ddl=None, on_duplicate=None, ignore_extra=false, lock_timeout_ms=None, rewrite=true
))]
#[allow(clippy::too_many_arguments)]
fn partitioned_commit<'py>(
    py: Python<'py>,
    data: Bound<'py, PyAny>,
    table_name: &str,
    write: &str,
    partitions: Vec<u32>,
    db: Option<String>,
    mode_name: Option<&str>,
    key: Option<Vec<String>>,
    schema_ddl: Option<String>,
    on_duplicate: Option<&str>,
    ignore_extra: bool,
    lock_timeout_ms: Option<u64>,
    rewrite: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = LoadOptions {
        rewrite,
        ..partitioned_options(
            py,
            table_name,
            mode_name,
            key,
            schema_ddl,
            on_duplicate,
            ignore_extra,
            lock_timeout_ms,
        )?
    };
    let write = write_id(py, write)?;
    let (schema, _) = arrow_stream(py, &data)?;
    let params = target(py, db)?;
    // The commit relays the stages into the copy (COPY out, COPY in):
    // on a worker, as a sync is.
    let report = with_progress_on_worker(py, &params, |p| {
        let to = params.clone();
        async move {
            pgbulk::arrow::partitioned::commit(&to, &write, &partitions, schema, &opts, p).await
        }
    })?;
    load_report(py, &report)
}

/// `pgbulk.spark`, on the driver when a task failed: drops the write's
/// stages.
#[pyfunction]
#[pyo3(signature = (table_name, write, *, db=None))]
fn partitioned_abort(
    py: Python<'_>,
    table_name: &str,
    write: &str,
    db: Option<String>,
) -> PyResult<usize> {
    let opts = partitioned_options(py, table_name, None, None, None, None, false, None)?;
    let write = write_id(py, write)?;
    let params = target(py, db)?;
    with_progress(py, &params, |_| {
        pgbulk::arrow::partitioned::abort(&params, &write, &opts)
    })
}

/// `pgbulk.plan`: what bringing the database to the declared schema would
/// take, as `pgbulk plan` (nothing is changed).
#[pyfunction]
#[pyo3(signature = (schema_ddl, *, db=None))]
fn plan<'py>(
    py: Python<'py>,
    schema_ddl: &str,
    db: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let declaration = done(py, Ok(pgbulk::schema::Declaration::parse(schema_ddl)))?;
    let params = target(py, db)?;
    let plan = with_progress(py, &params.clone(), |_| async move {
        let mut client = pgbulk::connect::connect(&params).await?.client;
        pgbulk::plan::plan(&mut client, &declaration).await
    })?;
    let d = PyDict::new(py);
    d.set_item("text", plan.to_string())?;
    let steps = pyo3::types::PyList::empty(py);
    for step in &plan.steps {
        let s = PyDict::new(py);
        s.set_item("table", step.table.to_string())?;
        s.set_item("summary", step.summary.clone())?;
        s.set_item("sql", step.sql.clone())?;
        s.set_item("lock", step.lock)?;
        s.set_item("rewrites", step.rewrites)?;
        s.set_item("hazards", step.hazards.clone())?;
        steps.append(s)?;
    }
    d.set_item("steps", steps)?;
    Ok(d)
}

/// `pgbulk.status`: what the target's ledger holds for `table_name`, as
/// `pgbulk status --table` says it; the rows as JSON text.
#[pyfunction]
#[pyo3(signature = (table_name, *, db=None))]
fn status<'py>(
    py: Python<'py>,
    table_name: &str,
    db: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let wanted = table(py, table_name)?;
    let params = target(py, db)?;
    let found = with_progress(py, &params.clone(), |_| async move {
        let client = pgbulk::connect::connect(&params).await?.client;
        pgbulk::status::read(&client, std::slice::from_ref(&wanted)).await
    })?;
    let d = PyDict::new(py);
    if let Some(s) = found.first() {
        d.set_item("table", s.table.to_string())?;
        d.set_item("lines", s.describe())?;
        let rows: Vec<String> = s
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "part": r.part,
                    "high_watermark": r.high_watermark,
                    "metadata": r.metadata,
                    "resume": r.resume,
                    "updated_at": r.updated_at,
                })
                .to_string()
            })
            .collect();
        d.set_item("rows", rows)?;
    }
    Ok(d)
}

/// `pgbulk.local.start`: pgbulk's own local cluster (under
/// `$PGBULK_HOME`), created and started as needed; its URL.
#[pyfunction]
fn local_start(py: Python<'_>) -> PyResult<String> {
    let env = Environment::from_process();
    let cluster = done(py, Ok(pgbulk::local::Cluster::persistent(&env)))?;
    done(py, py.detach(|| Ok(cluster.ensure_running())))?;
    done(py, Ok(cluster.url("postgres")))
}

/// `pgbulk.local.stop`: stops the local cluster; whether it ran.
#[pyfunction]
fn local_stop(py: Python<'_>) -> PyResult<bool> {
    let env = Environment::from_process();
    let cluster = done(py, Ok(pgbulk::local::Cluster::persistent(&env)))?;
    done(py, py.detach(|| Ok(cluster.stop())))
}

/// `pgbulk.local.remove`: stops the local cluster and deletes it; whether
/// there was one.
#[pyfunction]
fn local_remove(py: Python<'_>) -> PyResult<bool> {
    let env = Environment::from_process();
    let cluster = done(py, Ok(pgbulk::local::Cluster::persistent(&env)))?;
    done(py, py.detach(|| Ok(cluster.remove())))
}

#[pymodule]
fn _pgbulk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(load_csv, m)?)?;
    m.add_function(wrap_pyfunction!(write, m)?)?;
    m.add_function(wrap_pyfunction!(ingest::ingest, m)?)?;
    m.add_function(wrap_pyfunction!(partitioned_begin, m)?)?;
    m.add_function(wrap_pyfunction!(partitioned_stage, m)?)?;
    m.add_function(wrap_pyfunction!(partitioned_commit, m)?)?;
    m.add_function(wrap_pyfunction!(partitioned_abort, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(sync, m)?)?;
    m.add_function(wrap_pyfunction!(export, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(local_start, m)?)?;
    m.add_function(wrap_pyfunction!(local_stop, m)?)?;
    m.add_function(wrap_pyfunction!(local_remove, m)?)?;
    Ok(())
}
