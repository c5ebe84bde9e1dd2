//! `pgbulk.ingest`: batches of Python rows into declared tables through the
//! library's ingest engine (pg-bulk-ingest's `ingest`; the Python side in
//! `python/pgbulk/ingest.py` compiles the SQLAlchemy tables to DDL).
//!
//! The engine pulls batches and rows from Python on its own threads,
//! taking the GIL for each chunk of rows. The first exception raised by
//! the caller's code (the batches, their rows, a computed watermark) is
//! kept and raised again once the engine has rolled the batch back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use pgbulk::codec::Value;
use pgbulk::ingest::{Batch, BatchWatermark, Row, Rows};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDelta, PyDeltaAccess, PyDict, PyFloat, PyInt, PyIterator,
    PyList, PyString, PyTuple,
};

/// Each batch's `batch_metadata` by batch number (1 for the first), kept
/// for the hook.
type BatchMetadata = Arc<Mutex<BTreeMap<usize, Py<PyAny>>>>;

/// Rows converted per acquisition of the GIL.
const CHUNK: usize = 512;

/// The declared tables as the batches name them.
pub(crate) struct Tables {
    /// `sa.Table` (any hashable the rows name) -> index into `names`.
    pub(crate) lookup: Py<PyDict>,
    /// The engine's name of each table (`schema.table`).
    pub(crate) names: Vec<Arc<str>>,
    /// For each table, what each column's declared type asks of a value.
    pub(crate) classes: Vec<Vec<Class>>,
    /// For each table, per column: the label stored for each member of
    /// the Python enum of an `sa.Enum(EnumClass)` column (its name, or
    /// what `values_callable` says), as SQLAlchemy stores it.
    pub(crate) labels: Vec<Vec<Option<Py<PyDict>>>>,
    /// For each table, its columns' names, for messages.
    pub(crate) columns: Vec<Vec<String>>,
    /// Rows skipped because their table is not declared, by its `str()`.
    pub(crate) skipped: Mutex<BTreeMap<String, u64>>,
}

/// The first exception the caller's code raised, kept for re-raising.
#[derive(Default)]
pub(crate) struct Raised(Mutex<Option<PyErr>>);

impl Raised {
    /// Keeps `err` (the first one only) and returns the library error that
    /// fails the batch.
    fn keep(&self, py: Python<'_>, what: &str, err: PyErr) -> pgbulk::Error {
        let message = format!("{what} raised {}", err.value(py));
        if let Ok(mut slot) = self.0.lock() {
            if slot.is_none() {
                *slot = Some(err);
            }
        }
        pgbulk::Error::new(pgbulk::ErrorKind::Data, message)
    }

    /// The kept exception, if any.
    pub(crate) fn take(&self) -> Option<PyErr> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// `json.dumps(value)` as serde JSON.
fn to_json(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = py
        .import("json")?
        .call_method1("dumps", (value,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("json.dumps gave unreadable JSON: {e}"))
    })
}

/// `date(2000, 1, 1).toordinal()`: PostgreSQL's day 0.
const DATE_2000_01_01: i64 = 730_120;

/// `datetime.date` (its subclass `datetime` is not taken for one).
fn date_type(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyType>> {
    static DATE: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> = pyo3::sync::PyOnceLock::new();
    DATE.import(py, "datetime", "date")
}

/// `decimal.Decimal`.
fn decimal_type(py: Python<'_>) -> PyResult<&Bound<'_, pyo3::types::PyType>> {
    static DECIMAL: pyo3::sync::PyOnceLock<Py<pyo3::types::PyType>> = pyo3::sync::PyOnceLock::new();
    DECIMAL.import(py, "decimal", "Decimal")
}

/// What a column's declared SQLAlchemy type asks of a row's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Converted by its Python type alone.
    Any,
    /// `sa.JSON` and its kinds: serialised with `json.dumps`, as
    /// pg-bulk-ingest does.
    Json,
    /// `sa.Integer` and its kinds: a `Decimal` is taken when it is a whole
    /// number (as a float is, by the library).
    Integer,
    /// `sa.LargeBinary` (`BYTEA`): bytes, or their text form as a `str`;
    /// no other value's `str()`.
    Bytes,
}

impl Class {
    /// The class `pgbulk.declared` names: `""`, `"json"`, `"integer"` or
    /// `"bytes"`.
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "" => Self::Any,
            "json" => Self::Json,
            "integer" => Self::Integer,
            "bytes" => Self::Bytes,
            other => return Err(format!("column class {other:?}")),
        })
    }
}

/// A `timedelta` as PostgreSQL prints an interval (`IntervalStyle`
/// `postgres`): what a text column would store from the server's cast,
/// and what any `IntervalStyle`'s input reads back as the same interval
/// (the time of day, never negative, is signed after negative days).
fn interval(delta: &Bound<'_, PyDelta>) -> String {
    let days = delta.get_days();
    let seconds = delta.get_seconds();
    let micros = delta.get_microseconds();
    let mut text = String::new();
    if days != 0 {
        text = format!("{days} day{}", if days == 1 { "" } else { "s" });
    }
    if seconds != 0 || micros != 0 || days == 0 {
        if days < 0 {
            text.push_str(" +");
        } else if days > 0 {
            text.push(' ');
        }
        text.push_str(&format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        ));
        if micros != 0 {
            let fraction = format!("{micros:06}");
            text.push('.');
            text.push_str(fraction.trim_end_matches('0'));
        }
    }
    text
}

/// A `Decimal` for an integer column: the whole number it equals. The
/// server's cast would round a fraction away where pg-bulk-ingest's
/// `int()` truncated it, so one with a fraction is refused.
fn whole_decimal(v: &Bound<'_, PyAny>) -> PyResult<Value> {
    let finite: bool = v.call_method0("is_finite")?.extract()?;
    if !finite || !v.eq(v.call_method0("to_integral_value")?)? {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "an integer column holds whole numbers: round or truncate the Decimal first",
        ));
    }
    let whole = v.call_method0("__int__")?;
    Ok(match whole.extract::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Text(whole.str()?.to_str()?.to_owned()),
    })
}

/// A Python value as the engine's [`Value`]: the engine encodes it exactly
/// as the server's input function would read its text, or sends the text
/// for the server to decide.
fn value(py: Python<'_>, v: &Bound<'_, PyAny>, class: Class) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    match class {
        Class::Json => {
            let text: String = py.import("json")?.call_method1("dumps", (v,))?.extract()?;
            return Ok(Value::Text(text));
        }
        Class::Bytes
            if !(v.is_instance_of::<PyBytes>()
                || v.is_instance_of::<PyByteArray>()
                || v.is_instance_of::<pyo3::types::PyMemoryView>()
                || v.is_instance_of::<PyString>()
                || missing(v, &v.str()?.to_string_lossy())?) =>
        {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "a bytea column takes bytes (or their text form as a str), not a {}",
                v.get_type().name()?
            )));
        }
        _ => {}
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(match v.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Text(v.str()?.to_str()?.to_owned()),
        });
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Text(s.to_str()?.to_owned()));
    }
    if v.get_type().is(date_type(py)?) {
        // One call instead of str()'s formatting and the encoder's parsing
        // (a quarter of a microsecond per date).
        let ordinal: i64 = v.call_method0("toordinal")?.extract()?;
        let days = i32::try_from(ordinal - DATE_2000_01_01)
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("date out of range"))?;
        return Ok(Value::Date(days));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in v.try_iter()? {
            items.push(value(py, &item?, Class::Any)?);
        }
        return Ok(Value::Array(items));
    }
    if let Ok(d) = v.cast::<PyDelta>() {
        return Ok(Value::Text(interval(d)));
    }
    if v.is_instance_of::<PyDict>() {
        return Ok(Value::Json(to_json(py, v)?));
    }
    if let Ok(m) = v.cast::<pyo3::types::PyMemoryView>() {
        return Ok(Value::Bytes(
            py.import("builtins")?
                .getattr("bytes")?
                .call1((m,))?
                .extract()?,
        ));
    }
    if class == Class::Integer && v.is_instance(decimal_type(py)?)? {
        return whole_decimal(v);
    }
    // Decimal, date, datetime, time, UUID, ...: their str() is the text
    // PostgreSQL reads.
    let text = v.str()?.to_str()?.to_owned();
    if missing(v, &text)? {
        return Ok(Value::Null);
    }
    Ok(Value::Text(text))
}

/// Whether `v` (whose `str()` is `text`) is pandas' or numpy's marker of a
/// missing value, as rows of a DataFrame hold them (`df.itertuples()`):
/// `pd.NaT`, `pd.NA`, `np.datetime64("NaT")`. A float NaN is a value of
/// its own in PostgreSQL and stays one.
fn missing(v: &Bound<'_, PyAny>, text: &str) -> PyResult<bool> {
    if text != "NaT" && text != "<NA>" {
        return Ok(false);
    }
    let module: String = v.get_type().getattr("__module__")?.extract()?;
    Ok(module.starts_with("pandas") || module == "numpy")
}

/// One batch's rows, pulled from Python a chunk at a time.
struct PyRows {
    rows: Option<Py<PyIterator>>,
    tables: Arc<Tables>,
    raised: Arc<Raised>,
    progress: Arc<pgbulk::load::Progress>,
    ready: VecDeque<pgbulk::Result<Row>>,
    /// The batch's number (1 for the first), for messages.
    batch: usize,
    /// The batch's rows of declared tables read so far (as the engine
    /// numbers them), for messages.
    read: u64,
}

impl PyRows {
    /// Converts up to [`CHUNK`] rows into `ready`; drops the iterator at
    /// its end or at an error.
    fn fill(&mut self, py: Python<'_>) {
        let Some(rows) = self.rows.as_ref() else {
            return;
        };
        let mut rows = rows.bind(py).clone();
        let tables = self.tables.clone();
        let lookup = tables.lookup.bind(py);
        let mut converted = 0;
        while converted < CHUNK {
            let item = match rows.next() {
                None => {
                    self.rows = None;
                    return;
                }
                Some(Err(e)) => Err(self.raised.keep(py, "the batch's rows", e)),
                Some(Ok(item)) => self.row(py, lookup, &item),
            };
            match item {
                Ok(None) => continue,
                Ok(Some(row)) => self.ready.push_back(Ok(row)),
                Err(e) => {
                    self.ready.push_back(Err(e));
                    self.rows = None;
                    return;
                }
            }
            converted += 1;
        }
    }

    /// `(table, values)` as a row; `None` for a table not declared
    /// (skipped, as pg-bulk-ingest does).
    fn row(
        &mut self,
        py: Python<'_>,
        lookup: &Bound<'_, PyDict>,
        item: &Bound<'_, PyAny>,
    ) -> pgbulk::Result<Option<Row>> {
        let bad = |why: String| pgbulk::Error::new(pgbulk::ErrorKind::Data, why);
        let (table, values): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item.extract().map_err(|_| {
                bad("each row of a batch is a (table, values) pair: (sa.Table, tuple)".to_owned())
            })?;
        let index: usize = match lookup.get_item(&table) {
            Ok(Some(i)) => i.extract::<usize>().map_err(|e| bad(e.to_string()))?,
            Ok(None) => {
                let name = table.str().map(|s| s.to_string()).unwrap_or_default();
                if let Ok(mut skipped) = self.tables.skipped.lock() {
                    *skipped.entry(name).or_default() += 1;
                }
                return Ok(None);
            }
            Err(e) => return Err(self.raised.keep(py, "looking up a row's table", e)),
        };
        self.read += 1;
        let row = self.read;
        let tables = self.tables.clone();
        let classes = &tables.classes[index];
        let name = &tables.names[index];
        let mut out = Vec::with_capacity(classes.len());
        let fields = values
            .try_iter()
            .map_err(|_| bad(format!("table {name}: a row's values are not a tuple")))?;
        let labels = tables.labels.get(index);
        for (i, field) in fields.enumerate() {
            let mut field = field.map_err(|e| self.raised.keep(py, "a row's values", e))?;
            if let Some(Some(map)) = labels.and_then(|l| l.get(i)) {
                // An unhashable value is no member: left as it is.
                if let Ok(Some(label)) = map.bind(py).get_item(&field) {
                    field = label;
                }
            }
            let class = classes.get(i).copied().unwrap_or(Class::Any);
            let converted = value(py, &field, class).map_err(|e| {
                let shown = field
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|_| "?".to_owned());
                let column = tables
                    .columns
                    .get(index)
                    .and_then(|c| c.get(i))
                    .cloned()
                    .unwrap_or_else(|| (i + 1).to_string());
                bad(format!(
                    "batch {}, table {name}, row {row}: column {column}: value {shown} cannot be \
                     stored: {}",
                    self.batch,
                    e.value(py)
                ))
                .in_batch(self.batch as u64)
                .in_table(name)
                .in_row(row)
                .for_column(column)
                .with_value(Some(&shown))
            })?;
            out.push(converted);
        }
        if out.len() != classes.len() {
            return Err(bad(format!(
                "table {name}: a row has {} values, the table {} columns",
                out.len(),
                classes.len()
            )));
        }
        Ok(Some(Row::new(name.clone(), out)))
    }
}

impl Iterator for PyRows {
    type Item = pgbulk::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ready.is_empty() {
            if self.progress.is_interrupted() {
                self.rows = None;
                return Some(Err(pgbulk::Error::new(
                    pgbulk::ErrorKind::Data,
                    "interrupted",
                )));
            }
            Python::attach(|py| self.fill(py));
        }
        self.ready.pop_front()
    }
}

/// The batches of `batches(high_watermark)`: `(high_watermark,
/// batch_metadata, rows)` triples.
pub(crate) struct PyBatches {
    pub(crate) batches: Option<Py<PyIterator>>,
    pub(crate) tables: Arc<Tables>,
    pub(crate) raised: Arc<Raised>,
    pub(crate) progress: Arc<pgbulk::load::Progress>,
    /// Each batch's `batch_metadata`, by batch number (1 for the first),
    /// for the hook (when there is one).
    pub(crate) metadata: Option<BatchMetadata>,
    pub(crate) number: usize,
}

impl PyBatches {
    fn batch(&mut self, py: Python<'_>, item: &Bound<'_, PyAny>) -> pgbulk::Result<Batch> {
        let (watermark, metadata, rows): (Bound<'_, PyAny>, Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item.extract().map_err(|_| {
                pgbulk::Error::new(
                    pgbulk::ErrorKind::Data,
                    "batches(high_watermark) yields (high_watermark, batch_metadata, rows) triples",
                )
            })?;
        let high_watermark = if watermark.is_callable() {
            let function = watermark.unbind();
            let raised = self.raised.clone();
            BatchWatermark::Computed(Box::new(move || {
                Python::attach(|py| {
                    let v = function
                        .call0(py)
                        .and_then(|v| optional_json(py, v.bind(py)));
                    v.map_err(|e| raised.keep(py, "the high watermark function", e))
                })
            }))
        } else {
            BatchWatermark::Value(
                optional_json(py, &watermark)
                    .map_err(|e| self.raised.keep(py, "storing the high watermark", e))?,
            )
        };
        let stored = to_json(py, &metadata).unwrap_or(serde_json::Value::Null);
        if let Some(Ok(mut m)) = self.metadata.as_ref().map(|m| m.lock()) {
            m.insert(self.number, metadata.unbind());
        }
        let rows = PyIterator::from_object(&rows)
            .map_err(|e| self.raised.keep(py, "iterating a batch's rows", e))?;
        Ok(Batch {
            high_watermark,
            metadata: stored,
            rows: Rows::values(PyRows {
                rows: Some(rows.unbind()),
                tables: self.tables.clone(),
                raised: self.raised.clone(),
                progress: self.progress.clone(),
                ready: VecDeque::new(),
                batch: self.number,
                read: 0,
            }),
            resume: None,
        })
    }
}

/// `None` as `None`, anything else as its JSON.
fn optional_json(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Option<serde_json::Value>> {
    if v.is_none() {
        Ok(None)
    } else {
        to_json(py, v).map(Some)
    }
}

impl Iterator for PyBatches {
    type Item = pgbulk::Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        Python::attach(|py| {
            let mut batches = self.batches.as_ref()?.bind(py).clone();
            let item = batches.next()?;
            self.number += 1;
            let batch = match item {
                Ok(item) => self.batch(py, &item),
                Err(e) => Err(self.raised.keep(py, "batches(high_watermark)", e)),
            };
            if batch.is_err() {
                self.batches = None;
            }
            Some(batch)
        })
    }
}

/// `on_before_visible`, called as `hook(socket_dir, port, batch_metadata)`
/// while the batch's session is open to a libpq client at that address.
struct Hook {
    hook: Py<PyAny>,
    raised: Arc<Raised>,
    metadata: BatchMetadata,
}

impl pgbulk::ingest::SharedHook for Hook {
    fn call(
        &self,
        door: &std::path::Path,
        port: u16,
        batch: &pgbulk::ingest::BatchInfo,
    ) -> pgbulk::Result<()> {
        Python::attach(|py| {
            let metadata = self
                .metadata
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&batch.number))
                .unwrap_or_else(|| py.None());
            self.hook
                .call1(py, (door.to_string_lossy().into_owned(), port, metadata))
                .map(|_| ())
                .map_err(|e| self.raised.keep(py, "on_before_visible", e))
        })
    }
}

/// Counts per table as a dict of dicts.
fn counts<'py>(
    py: Python<'py>,
    tables: &BTreeMap<String, pgbulk::ingest::Counts>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, c) in tables {
        let d = PyDict::new(py);
        d.set_item("inserted", c.inserted)?;
        d.set_item("updated", c.updated)?;
        d.set_item("unchanged", c.unchanged)?;
        d.set_item("deleted", c.deleted)?;
        d.set_item("repeated", c.repeated)?;
        out.set_item(name, d)?;
    }
    Ok(out)
}

/// `pgbulk.ingest` (see `python/pgbulk/ingest.py`): `source(start)` is
/// called once with the starting high watermark as JSON text (or `None`)
/// and returns the iterable of `(high_watermark, batch_metadata, rows)`.
#[pyfunction]
#[pyo3(signature = (
    db, ddl, lookup, names, classes, source, *, start="latest", start_value=None,
    mode_name="upsert", upsert=true, lock_timeout_ms=None, on_commit=None, before_visible=None,
    rewrite=true, labels=None, columns=None
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn ingest<'py>(
    py: Python<'py>,
    db: Option<String>,
    ddl: String,
    lookup: Bound<'py, PyDict>,
    names: Vec<(Option<String>, String)>,
    classes: Vec<Vec<String>>,
    source: Py<PyAny>,
    start: &str,
    start_value: Option<String>,
    mode_name: &str,
    upsert: bool,
    lock_timeout_ms: Option<u64>,
    on_commit: Option<Py<PyAny>>,
    before_visible: Option<Py<PyAny>>,
    rewrite: bool,
    labels: Option<Vec<Vec<Option<Py<PyDict>>>>>,
    columns: Option<Vec<Vec<String>>>,
) -> PyResult<Bound<'py, PyDict>> {
    use pgbulk::ingest::{HighWatermark, Mode, Options, Upsert};
    let config = |m: String| crate::config_error(py, m);
    let high_watermark = match (start, start_value) {
        ("latest", _) => HighWatermark::Latest,
        ("earliest", _) => HighWatermark::Earliest,
        ("value", Some(v)) => HighWatermark::Value(
            serde_json::from_str(&v).map_err(|e| config(format!("high_watermark: {e}")))?,
        ),
        (other, _) => return Err(config(format!("high watermark start {other:?}"))),
    };
    let mode = match mode_name {
        "upsert" => Mode::Upsert,
        "delete-then-upsert" => Mode::DeleteThenUpsert,
        "replace-atomic" => Mode::ReplaceAtomic,
        other => return Err(config(format!("ingest mode {other:?}"))),
    };
    let mut options = Options {
        high_watermark,
        mode,
        upsert: if upsert { Upsert::Auto } else { Upsert::Append },
        create_with_first_batch: true,
        create_without_batches: true,
        rewrite,
        // One connection.
        rewrite_batches: true,
        ..Options::default()
    };
    if let Some(ms) = lock_timeout_ms {
        options.lock_policy.lock_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(callback) = on_commit {
        options.on_commit = Some(Arc::new(move |batch: &pgbulk::ingest::BatchReport| {
            Python::attach(|py| {
                // A failing progress callback does not fail the batch,
                // which is committed already.
                if let Ok(tables) = counts(py, &batch.tables) {
                    let _ = callback.call1(py, (batch.number, tables));
                }
            });
        }));
    }
    let tables = Arc::new(Tables {
        lookup: lookup.unbind(),
        names: names
            .iter()
            .map(|(schema, name)| {
                Arc::from(
                    pgbulk::schema::TableName {
                        schema: schema.clone(),
                        name: name.clone(),
                    }
                    .to_string(),
                )
            })
            .collect(),
        classes: classes
            .iter()
            .map(|t| t.iter().map(|c| Class::parse(c)).collect())
            .collect::<Result<_, _>>()
            .map_err(config)?,
        labels: labels.unwrap_or_default(),
        columns: columns.unwrap_or_default(),
        skipped: Mutex::new(BTreeMap::new()),
    });
    let declaration = crate::done(py, Ok(pgbulk::schema::Declaration::parse(&ddl)))?;
    let params = crate::target(py, db)?;
    let raised = Arc::new(Raised::default());
    let progress = Arc::new(pgbulk::load::Progress::default());
    let metadata = before_visible
        .as_ref()
        .map(|_| Arc::new(Mutex::new(BTreeMap::new())));
    let shared: Option<Arc<dyn pgbulk::ingest::SharedHook>> =
        match (before_visible, metadata.clone()) {
            (Some(hook), Some(metadata)) => Some(Arc::new(Hook {
                hook,
                raised: raised.clone(),
                metadata,
            })),
            _ => None,
        };
    let make_source = {
        let (raised, progress, metadata) = (raised.clone(), progress.clone(), metadata.clone());
        let tables = tables.clone();
        move |start: Option<serde_json::Value>| -> Box<dyn Iterator<Item = pgbulk::Result<Batch>> + Send> {
            Python::attach(|py| {
                let start = start.map(|v| v.to_string());
                let batches = source
                    .call1(py, (start,))
                    .and_then(|b| PyIterator::from_object(b.bind(py)).map(Bound::unbind));
                match batches {
                    Ok(batches) => Box::new(PyBatches {
                        batches: Some(batches),
                        tables,
                        raised,
                        progress,
                        metadata,
                        number: 0,
                    }) as Box<dyn Iterator<Item = pgbulk::Result<Batch>> + Send>,
                    Err(e) => Box::new(std::iter::once(Err(
                        raised.keep(py, "batches(high_watermark)", e)
                    ))),
                }
            })
        }
    };
    let work = {
        let (params, progress) = (params.clone(), progress.clone());
        async move {
            pgbulk::ingest::ingest_at(
                &params,
                &declaration,
                make_source,
                &options,
                &progress,
                shared,
            )
            .await
        }
    };
    let outcome = crate::runtime::run(py, work, progress, Some(params))?;
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            return Err(raised
                .take()
                .unwrap_or_else(|| crate::errors::to_py(py, &e)));
        }
    };
    let d = PyDict::new(py);
    d.set_item("batches", report.batches.len())?;
    d.set_item("tables", counts(py, &report.tables)?)?;
    let mut skipped = report.skipped.clone();
    if let Ok(undeclared) = tables.skipped.lock() {
        for (name, n) in undeclared.iter() {
            *skipped.entry(name.clone()).or_default() += n;
        }
    }
    d.set_item("skipped", skipped)?;
    d.set_item("migrations", report.migrations.clone())?;
    d.set_item("seconds", report.seconds)?;
    Ok(d)
}
