//! The library's one error type: a coarse [`ErrorKind`] callers branch on, a
//! message that names what failed, and the underlying cause.

use std::fmt;

/// What went wrong, coarsely: enough to choose an exit code or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection settings, a service file, a password file or a profile
    /// are malformed or name something that does not exist.
    Config,
    /// No server could be reached: refused, unresolvable, timed out, closed.
    Connect,
    /// The server rejected the credentials, or a password was needed and none
    /// was given.
    Auth,
    /// TLS could not be set up as `sslmode` demands (certificates, handshake).
    Tls,
    /// The local PostgreSQL cluster could not be found, created, started or
    /// stopped.
    Local,
    /// The server reported an error for a statement.
    Server,
    /// A value or row in the input does not fit its table: names the table,
    /// column, batch and row.
    Data,
    /// The connection went away mid-run (the server stopped or restarted,
    /// the session was terminated, the network dropped): the transaction in
    /// flight rolled back, and running the same command again continues.
    ConnectionLost,
    /// A local file or process failed.
    Io,
}

/// What the server refused, coarsely (from its SQLSTATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerErrorKind {
    /// A unique or primary key constraint (23505).
    UniqueViolation,
    /// A NOT NULL constraint (23502).
    NotNullViolation,
    /// A CHECK constraint, or a domain's (23514).
    CheckViolation,
    /// A foreign key (23503).
    ForeignKeyViolation,
    /// A value the type's input refused, or out of range (class 22).
    InvalidValue,
    /// A lock was not granted within `lock_timeout` (55P03).
    LockTimeout,
    /// The statement was canceled (57014).
    Canceled,
    /// The connection or the server went away (class 08, 57P).
    ConnectionLost,
    /// Anything else.
    Other,
}

/// The error of every fallible pgbulk operation.
///
/// `Display` prints one line that never contains a password. What is known
/// of where it happened is also kept as data: the input [`Location`], the
/// table, column, batch, row and value ([`Error::location`] and the other
/// accessors), and the server's report with its detail, hint and context
/// ([`Error::db_error`], [`Error::server_kind`]).
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    location: Option<Location>,
    table: Option<String>,
    column: Option<String>,
    batch: Option<u64>,
    row: Option<u64>,
    value: Option<String>,
    notes: Vec<String>,
}

/// Where in the input a row or value is: the input's name (a file, or
/// `-` for standard input), its line (1-based, where the row starts) and,
/// for a value, its field (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The input's name as given.
    pub input: String,
    /// The line the row starts on.
    pub line: u64,
    /// The field, for an error about one value.
    pub field: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.input, self.line)?;
        if let Some(field) = self.field {
            write!(f, ":{field}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The quoted name of a copy of a table pgbulk fills (`"pgbulk_new_"`
/// and 16 hex digits, as [`crate::rebuild`] names them) in `message`.
fn internal_copy_name(message: &str) -> Option<&str> {
    const PREFIX: &str = "\"pgbulk_new_";
    let at = message.find(PREFIX)?;
    let end = at + PREFIX.len() + 16;
    let digits = message.get(at + PREFIX.len()..end)?;
    (digits.bytes().all(|b| b.is_ascii_hexdigit()) && message[end..].starts_with('"'))
        .then(|| &message[at..=end])
}

/// The longest value an error keeps (longer ones are cut, see
/// [`crate::codec::shorten`]).
const KEPT_VALUE: usize = 200;

impl Error {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            kind,
            message: message.into(),
            source: None,
            location: None,
            table: None,
            column: None,
            batch: None,
            row: None,
            value: None,
            notes: Vec::new(),
        }))
    }

    /// Attaches the underlying cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Records where in the input it happened (the message is unchanged).
    pub fn at(mut self, location: Location) -> Self {
        self.0.location = Some(location);
        self
    }

    /// Records the table it happened in, unless one is known already. The
    /// server's message naming the new copy pgbulk fills in the table's
    /// stead (`relation "pgbulk_new_0123456789abcdef"`) names the table.
    pub fn in_table(mut self, table: impl fmt::Display) -> Self {
        let table = table.to_string();
        if let Some(copy) = internal_copy_name(&self.0.message) {
            self.0.message = self.0.message.replacen(copy, &table, 1);
        }
        self.0.table.get_or_insert(table);
        self
    }

    /// Adds what the operation had found out before it failed (what it
    /// detected of its input), which a report would have carried: the
    /// caller says it with the error. Notes it has already are left out.
    pub fn with_notes(mut self, notes: impl IntoIterator<Item = String>) -> Self {
        for note in notes {
            if !self.0.notes.contains(&note) {
                self.0.notes.push(note);
            }
        }
        self
    }

    /// Records the batch (1-based) it happened in, unless known already.
    pub fn in_batch(mut self, batch: u64) -> Self {
        self.0.batch.get_or_insert(batch);
        self
    }

    /// Records the row of the batch (1-based) it is about.
    pub fn in_row(mut self, row: u64) -> Self {
        self.0.row.get_or_insert(row);
        self
    }

    /// Records the column it is about.
    pub fn for_column(mut self, column: impl Into<String>) -> Self {
        self.0.column.get_or_insert_with(|| column.into());
        self
    }

    /// Records the value it is about (`None`: SQL NULL), cut to a bounded
    /// length.
    pub fn with_value(mut self, value: Option<&str>) -> Self {
        if self.0.value.is_none() {
            self.0.value = value.map(|v| {
                if v.len() > KEPT_VALUE {
                    crate::codec::shorten(v)
                } else {
                    v.to_owned()
                }
            });
        }
        self
    }

    /// A copy of the message with `prefix` before it, keeping every field
    /// and taking this error as the source.
    fn prefixed(self, kind: ErrorKind, message: String) -> Self {
        let Inner {
            location,
            table,
            column,
            batch,
            row,
            value,
            ..
        } = &*self.0;
        let mut wrapped = Self::new(kind, message);
        wrapped.0.location = location.clone();
        wrapped.0.table = table.clone();
        wrapped.0.column = column.clone();
        wrapped.0.batch = *batch;
        wrapped.0.row = *row;
        wrapped.0.value = value.clone();
        wrapped.with_source(self)
    }

    /// Prefixes the message with `context` (`batch 2`), keeping the fields
    /// and the source.
    pub(crate) fn context(self, context: impl fmt::Display) -> Self {
        let message = format!("{context}: {}", self.0.message);
        let kind = self.0.kind;
        self.prefixed(kind, message)
    }

    /// The message with every `from` in it written `to` (an object's
    /// temporary name given its final one), keeping the fields and the
    /// source.
    pub(crate) fn renaming(mut self, from: &str, to: &str) -> Self {
        if self.0.message.contains(from) {
            self.0.message = self.0.message.replace(from, to);
        }
        self
    }

    /// Adds `text` at the end of the message, keeping the fields and the
    /// source.
    pub(crate) fn append(self, text: &str) -> Self {
        let message = format!("{}{text}", self.0.message);
        let kind = self.0.kind;
        self.prefixed(kind, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Local, message)
    }

    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{}: {source}", message.into())).with_source(source)
    }

    /// A statement failed on the server: keeps the server's message, and its
    /// detail and hint stay reachable through [`Error::db_error`].
    pub(crate) fn server(context: &str, source: tokio_postgres::Error) -> Self {
        let lost = match source.as_db_error() {
            // Terminated, shut down, crashed: 57P01..57P03, and class 08.
            Some(db) => {
                let code = db.code().code();
                code.starts_with("57P") || code.starts_with("08")
            }
            None => {
                source.is_closed()
                    || std::error::Error::source(&source)
                        .is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some())
            }
        };
        let message = match source.as_db_error() {
            Some(db) => format!("{context}: {}", db.message()),
            None => format!("{context}: {source}"),
        };
        if lost {
            return Self::new(
                ErrorKind::ConnectionLost,
                format!(
                    "{message}: the connection was lost; what was in flight rolled back, run the same command again to continue"
                ),
            )
            .with_source(source);
        }
        Self::new(ErrorKind::Server, message).with_source(source)
    }

    /// Prefixes the message with where it happened (`batch 2, table
    /// public.t: upserting`), keeping the source (the server's detail,
    /// hint and constraint stay reachable) and naming the constraint. A
    /// value or row the server refused (SQLSTATE classes 22 and 23) is bad
    /// data ([`ErrorKind::Data`]): a duplicate key in append mode exits as
    /// bad input, not as a failure.
    pub(crate) fn in_context(error: Error, context: &str) -> Error {
        let constraint = error
            .db_error()
            .and_then(|db| db.constraint().map(|c| format!(" (constraint {c})")))
            .unwrap_or_default();
        let message = format!("{context}: {}{constraint}", error.message());
        let data = error.db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("22") || code.starts_with("23")
        });
        let kind = if data && error.kind() != ErrorKind::ConnectionLost {
            ErrorKind::Data
        } else {
            error.kind()
        };
        let column = error
            .db_error()
            .and_then(|db| db.column().map(str::to_owned));
        let error = error.prefixed(kind, message);
        match column {
            Some(c) => error.for_column(c),
            None => error,
        }
    }

    /// What went wrong, coarsely.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// What the server refused, coarsely, when it refused something: so
    /// callers branch without knowing SQLSTATEs.
    pub fn server_kind(&self) -> Option<ServerErrorKind> {
        let code = self.db_error()?.code().code();
        Some(match code {
            "23505" => ServerErrorKind::UniqueViolation,
            "23502" => ServerErrorKind::NotNullViolation,
            "23514" => ServerErrorKind::CheckViolation,
            "23503" => ServerErrorKind::ForeignKeyViolation,
            "55P03" => ServerErrorKind::LockTimeout,
            "57014" => ServerErrorKind::Canceled,
            c if c.starts_with("22") => ServerErrorKind::InvalidValue,
            c if c.starts_with("08") || c.starts_with("57P") => ServerErrorKind::ConnectionLost,
            _ => ServerErrorKind::Other,
        })
    }

    /// Whether the statement was canceled or the connection lost: a
    /// failure no other way of doing the same work gets past.
    pub fn is_canceled_or_lost(&self) -> bool {
        matches!(
            self.server_kind(),
            Some(ServerErrorKind::Canceled | ServerErrorKind::ConnectionLost)
        )
    }

    /// The one-line message (also what `Display` prints).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Where in the input the bad row or value is.
    pub fn location(&self) -> Option<&Location> {
        self.0.location.as_ref()
    }

    /// The table it happened in (`schema.table`, quoted where needed).
    pub fn table(&self) -> Option<&str> {
        self.0.table.as_deref()
    }

    /// The column the bad value is for.
    pub fn column(&self) -> Option<&str> {
        self.0.column.as_deref()
    }

    /// What the operation had found out before it failed
    /// ([`Error::with_notes`]).
    pub fn notes(&self) -> &[String] {
        &self.0.notes
    }

    /// The batch (1-based) it happened in.
    pub fn batch(&self) -> Option<u64> {
        self.0.batch
    }

    /// The row of the batch (1-based), for rows given as values.
    pub fn row(&self) -> Option<u64> {
        self.0.row
    }

    /// The bad value (cut when long); `None` also when it was NULL.
    pub fn value(&self) -> Option<&str> {
        self.0.value.as_deref()
    }

    /// The server's context lines for the error (its `CONTEXT`, e.g.
    /// `COPY t, line 3`), when it sent any.
    pub fn server_context(&self) -> Option<&str> {
        self.db_error().and_then(|db| db.where_())
    }

    /// The server's error report, when the server sent one.
    pub fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self
            .0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(err) = cause {
            if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
                if let Some(db) = pg.as_db_error() {
                    return Some(db);
                }
            }
            if let Some(db) = err.downcast_ref::<tokio_postgres::error::DbError>() {
                return Some(db);
            }
            cause = err.source();
        }
        None
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.0;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind).field("message", &i.message);
        if let Some(l) = &i.location {
            d.field("location", l);
        }
        for (name, v) in [
            ("table", &i.table),
            ("column", &i.column),
            ("value", &i.value),
        ] {
            if let Some(v) = v {
                d.field(name, v);
            }
        }
        if !i.notes.is_empty() {
            d.field("notes", &i.notes);
        }
        for (name, v) in [("batch", &i.batch), ("row", &i.row)] {
            if let Some(v) = v {
                d.field(name, v);
            }
        }
        d.field("source", &i.source).finish()
    }
}

/// `Result` with pgbulk's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_pgbulk_fills_is_named_by_its_table() {
        let e = Error::new(
            ErrorKind::Data,
            "COPY: new row for relation \"pgbulk_new_bbcb24287ac524f0\" violates check constraint \"c\"",
        )
        .in_table("public.ck");
        assert_eq!(
            e.message(),
            "COPY: new row for relation public.ck violates check constraint \"c\""
        );
        assert_eq!(e.table(), Some("public.ck"));
        // Anything else is left as the server said it.
        for message in [
            "relation \"pgbulk_new_xyz\" is odd",
            "relation \"pgbulk_new_bbcb24287ac524f0x\"",
            "relation \"pgbulk_new_bbcb2428\"",
        ] {
            let e = Error::new(ErrorKind::Data, message).in_table("t");
            assert_eq!(e.message(), message);
        }
    }
}
