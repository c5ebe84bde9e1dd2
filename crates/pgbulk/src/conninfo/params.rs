//! The resolved connection parameters: where to connect and how.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The password itself, for handing to the server; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Where a setting came from, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The connection string (`--db`).
    ConnString,
    /// A profile in `pgbulk.toml`.
    Profile(String),
    /// A service in a service file.
    Service(String),
    /// A `PG*` environment variable.
    Environment(&'static str),
    /// The password file (only for passwords), looked up per host.
    PasswordFile(PathBuf),
    /// The local cluster pgbulk manages.
    LocalCluster,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ConnString => f.write_str("connection string"),
            Origin::Profile(name) => write!(f, "profile \"{name}\""),
            Origin::Service(name) => write!(f, "service \"{name}\""),
            Origin::Environment(var) => f.write_str(var),
            Origin::PasswordFile(path) => write!(f, "password file \"{}\"", path.display()),
            Origin::LocalCluster => f.write_str("local cluster"),
        }
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// The directory holding the server's unix-domain socket.
    Socket(PathBuf),
    /// No name: only `hostaddr` is known.
    AddrOnly,
}

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name or socket directory.
    pub host: Host,
    /// A numeric address that replaces name resolution (`hostaddr`).
    pub hostaddr: Option<IpAddr>,
    /// The TCP port, also the socket file's suffix.
    pub port: u16,
}

impl Endpoint {
    /// The host as the password file matches it: the name, the socket
    /// directory, or the `hostaddr` when there is no name.
    pub(crate) fn passfile_host(&self) -> String {
        match (&self.host, self.hostaddr) {
            (Host::Tcp(name), _) => name.clone(),
            (Host::Socket(dir), _) => dir.display().to_string(),
            (Host::AddrOnly, Some(addr)) => addr.to_string(),
            (Host::AddrOnly, None) => String::new(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.hostaddr) {
            (Host::Tcp(name), Some(addr)) => write!(f, "host={name} hostaddr={addr}")?,
            (Host::Tcp(name), None) => write!(f, "host={name}")?,
            (Host::Socket(dir), _) => write!(f, "host={}", dir.display())?,
            (Host::AddrOnly, Some(addr)) => write!(f, "hostaddr={addr}")?,
            (Host::AddrOnly, None) => {}
        }
        write!(f, " port={}", self.port)
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS only if the server insists.
    Allow,
    /// TLS when the server offers it, unverified (the default).
    Prefer,
    /// TLS always; verified as `verify-ca` when a root certificate exists.
    Require,
    /// TLS, the server's certificate chain verified.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    pub(crate) fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// libpq's `target_session_attrs`: which kind of server is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// Any server.
    Any,
    /// One that accepts writes by default.
    ReadWrite,
    /// One that is read-only by default.
    ReadOnly,
    /// One not in recovery.
    Primary,
    /// One in recovery.
    Standby,
    /// A standby if any host is one, else any.
    PreferStandby,
}

impl TargetSessionAttrs {
    pub(crate) fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            _ => return None,
        })
    }
}

/// `ssl_min_protocol_version` / `ssl_max_protocol_version`, as far as
/// rustls speaks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// TLS settings beyond `sslmode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `sslrootcert`: a PEM file, or `system` for the system's roots.
    pub rootcert: Option<String>,
    /// `sslcert`: the client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `sslkey`: the client key (PEM).
    pub key: Option<PathBuf>,
    /// Whether the root certificate was given explicitly (rather than the
    /// `~/.postgresql/root.crt` default).
    pub rootcert_explicit: bool,
    /// Send the host name in TLS SNI (`sslsni`, default on).
    pub sni: bool,
    /// Lowest TLS version accepted.
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version accepted.
    pub max_version: Option<TlsVersion>,
}

/// Everything needed to connect, resolved the way libpq resolves it.
///
/// `Display` prints a `key=value` description without the password.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnParams {
    /// The servers to try, in order.
    pub endpoints: Vec<Endpoint>,
    /// Database name.
    pub dbname: String,
    /// Role name.
    pub user: String,
    pub(crate) password: Option<(Password, Origin)>,
    /// The password file consulted for hosts without an explicit password.
    pub passfile: Option<PathBuf>,
    /// `sslmode`.
    pub sslmode: SslMode,
    /// Certificates and TLS options.
    pub tls: TlsFiles,
    /// `application_name` reported to the server.
    pub application_name: String,
    /// Per-host connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Server options sent at start-up (`-c name=value ...`).
    pub options: Option<String>,
    /// Which kind of server is acceptable.
    pub target_session_attrs: TargetSessionAttrs,
    /// Try the hosts in random order.
    pub load_balance_hosts: bool,
    /// SCRAM channel binding: `disable`, `prefer`, `require`.
    pub channel_binding: tokio_postgres::config::ChannelBinding,
    /// TCP keepalives on, with their idle/interval/count settings.
    pub keepalives: Keepalives,
    /// Where the endpoints came from, for messages.
    pub target_origin: Option<Origin>,
}

/// TCP keepalive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalives {
    /// Whether keepalives are on (`keepalives`, default 1).
    pub enabled: bool,
    /// Idle time before the first probe.
    pub idle: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Probes before giving up.
    pub count: Option<u32>,
    /// `tcp_user_timeout`.
    pub tcp_user_timeout: Option<Duration>,
}

impl ConnParams {
    /// Where the explicitly configured password came from, if there is one
    /// (the password file is consulted per host at connect time).
    pub fn password_origin(&self) -> Option<&Origin> {
        self.password.as_ref().map(|(_, origin)| origin)
    }

    /// The explicitly configured password, if any.
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref().map(|(p, _)| p)
    }

    /// These parameters with `-c name=value` added to the start-up options
    /// (after any given, so it wins). `name` and `value` are pgbulk's own
    /// words: neither holds a space or a backslash.
    pub fn with_setting(&self, name: &str, value: &str) -> Self {
        let setting = format!("-c {name}={value}");
        let options = match &self.options {
            Some(given) if !given.trim().is_empty() => format!("{given} {setting}"),
            _ => setting,
        };
        Self {
            options: Some(options),
            ..self.clone()
        }
    }
}

impl fmt::Display for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{endpoint}")?;
        }
        write!(
            f,
            " dbname={} user={} sslmode={}",
            quote(&self.dbname),
            quote(&self.user),
            self.sslmode.as_str()
        )
    }
}

/// Quotes a value the way a `key=value` string needs it.
fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}
