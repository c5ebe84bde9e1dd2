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
/// `Display` prints one line that never contains a password. The server's
/// detail and hint, when there are any, are available through
/// [`Error::db_error`].
#[derive(thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
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
        Error::new(kind, message).with_source(error)
    }

    /// What went wrong, coarsely.
    pub fn kind(&self) -> ErrorKind {
        self.kind
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

    /// The one-line message (also what `Display` prints).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The server's error report, when the server sent one.
    pub fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self
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
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

/// `Result` with pgbulk's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
