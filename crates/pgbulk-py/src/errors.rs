//! The library's errors as the exceptions of `pgbulk.errors`, with their
//! fields (table, column, line, row, value; the server's SQLSTATE, detail and
//! hint).

use pgbulk::ErrorKind;
use pyo3::prelude::*;

/// The exception class of `pgbulk.errors` for an error of `kind`.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "ConfigError",
        ErrorKind::Connect | ErrorKind::Tls => "ConnectError",
        ErrorKind::Auth => "AuthError",
        ErrorKind::Local => "LocalError",
        ErrorKind::Server => "ServerError",
        ErrorKind::Data => "DataError",
        ErrorKind::ConnectionLost => "ConnectionLostError",
        ErrorKind::Io => "IOError",
        _ => "Error",
    }
}

/// `error` as the Python exception of its kind.
pub(crate) fn to_py(py: Python<'_>, error: &pgbulk::Error) -> PyErr {
    match build(py, error) {
        Ok(e) => e,
        Err(e) => e,
    }
}

fn build(py: Python<'_>, error: &pgbulk::Error) -> PyResult<PyErr> {
    let module = py.import("pgbulk.errors")?;
    let class = module.getattr(class_name(error.kind()))?;
    let exc = class.call1((error.to_string(),))?;
    let location = error.location();
    exc.setattr("table", error.table())?;
    exc.setattr("column", error.column())?;
    exc.setattr("value", error.value())?;
    exc.setattr("input", location.map(|l| l.input.clone()))?;
    exc.setattr("line", location.map(|l| l.line))?;
    exc.setattr("batch", error.batch())?;
    exc.setattr("row", error.row())?;
    exc.setattr("notes", error.notes().to_vec())?;
    if let Some(db) = error.db_error() {
        exc.setattr("sqlstate", db.code().code())?;
        exc.setattr("detail", db.detail())?;
        exc.setattr("hint", db.hint())?;
    }
    Ok(PyErr::from_value(exc))
}
