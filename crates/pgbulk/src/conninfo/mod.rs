//! Where to connect, resolved exactly as libpq resolves it.
//!
//! Precedence, highest first: the connection string (`--db`: URI, `key=value`
//! or a bare database name), a named profile from `pgbulk.toml`, the service
//! named by `service`/`PGSERVICE` in `pg_service.conf`, the `PG*` environment
//! variables, then libpq's defaults (the default socket directory, port 5432,
//! the OS user name, a database named after the user). A password missing
//! after all that is looked up per host in `~/.pgpass` / `PGPASSFILE` when
//! connecting.

mod keyword;
mod params;
mod parse;
mod pgpass;
pub mod profile;
mod service;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use params::{
    ConnParams, Endpoint, Host, Keepalives, Origin, Password, SslMode, TargetSessionAttrs,
    TlsFiles, TlsVersion,
};
pub(crate) use pgpass::{Skipped as PassfileSkipped, lookup as passfile_lookup};

use crate::error::{Error, Result};

/// Environment variables that, when set, mean the user configured a target
/// (so pgbulk does not fall back to its local cluster).
const TARGET_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
];

/// The process environment as connection resolution sees it: variables, the
/// home directory, the OS user and the working directory. Tests build one by
/// hand instead of touching the real environment.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
    os_user: Option<String>,
    cwd: Option<PathBuf>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vars: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        f.debug_struct("Environment")
            .field("vars", &vars)
            .field("home", &self.home)
            .field("os_user", &self.os_user)
            .field("cwd", &self.cwd)
            .finish()
    }
}

impl Environment {
    /// The current process's environment.
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("PG") || k == "HOME" || k == "XDG_DATA_HOME")
            .collect::<BTreeMap<_, _>>();
        let home = vars
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| crate::os_user::current().map(|u| u.home));
        Self {
            vars,
            home,
            os_user: crate::os_user::current().map(|u| u.name),
            cwd: std::env::current_dir().ok(),
        }
    }

    /// An empty environment: no variables, no home, no user, no directory.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Sets a variable.
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Sets the home directory.
    pub fn with_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// Sets the OS user name (libpq's default role).
    pub fn with_os_user(mut self, user: &str) -> Self {
        self.os_user = Some(user.to_owned());
        self
    }

    /// Sets the working directory (where `pgbulk.toml` is looked for first).
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// A variable's value.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The home directory.
    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// The working directory.
    pub fn cwd(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// pgbulk's own directory: `$PGBULK_HOME`, else
    /// `$XDG_DATA_HOME/pgbulk`, else `~/.local/share/pgbulk`.
    pub fn pgbulk_home(&self) -> PathBuf {
        if let Some(home) = self.var("PGBULK_HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(home);
        }
        if let Some(data) = self.var("XDG_DATA_HOME").filter(|h| h.starts_with('/')) {
            return Path::new(data).join("pgbulk");
        }
        self.home
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(".local/share/pgbulk")
    }

    fn home_file(&self, relative: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(relative))
    }
}

/// What the user asked for on the command line (or through the API).
#[derive(Clone, Default)]
pub struct Request {
    /// A connection string: URI, `key=value` string or database name.
    pub db: Option<String>,
    /// A profile name; `PGBULK_PROFILE` is used when this is `None`.
    pub profile: Option<String>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("db", &self.db.as_ref().map(|_| "<connection string>"))
            .field("profile", &self.profile)
            .finish()
    }
}

impl Request {
    /// The profile asked for, by argument or `PGBULK_PROFILE`.
    pub fn profile_name<'a>(&'a self, env: &'a Environment) -> Option<&'a str> {
        self.profile
            .as_deref()
            .or_else(|| env.var("PGBULK_PROFILE").filter(|p| !p.is_empty()))
    }

    /// Whether any target is configured: a connection string, a profile, or
    /// one of `PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGDATABASE`, `PGUSER`,
    /// `PGSERVICE`. When none is, pgbulk uses its local cluster.
    pub fn is_configured(&self, env: &Environment) -> bool {
        self.db.is_some()
            || self.profile_name(env).is_some()
            || TARGET_VARS.iter().any(|v| env.var(v).is_some())
    }
}

#[derive(Debug)]
struct Setting {
    value: String,
    origin: Origin,
}

/// Keyword settings with their origins; first writer of a keyword wins
/// unless it overrides.
#[derive(Debug, Default)]
struct Settings(BTreeMap<String, Setting>);

impl Settings {
    fn set(&mut self, key: String, value: String, origin: Origin) {
        self.0.insert(key, Setting { value, origin });
    }

    fn set_default(&mut self, key: &str, value: &str, origin: Origin) {
        if !self.0.contains_key(key) {
            self.set(key.to_owned(), value.to_owned(), origin);
        }
    }

    /// A value; an empty one counts as unset, as in libpq.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(|s| s.value.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Percent-encodes a URI component (everything but unreserved characters).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resolves `request` in `env` into connection parameters, applying the
/// connection string, profile, service file, environment and defaults.
pub fn resolve(request: &Request, env: &Environment) -> Result<ConnParams> {
    let mut settings = Settings::default();
    if let Some(name) = request.profile_name(env) {
        for (k, v) in profile::load(env, name)? {
            settings.set(k, v, Origin::Profile(name.to_owned()));
        }
    }
    if let Some(db) = &request.db {
        let pairs = parse::parse(db).map_err(Error::config)?;
        for (k, v) in pairs {
            settings.set(k, v, Origin::ConnString);
        }
    }
    if let Some(name) = settings.get("service").map(str::to_owned).or_else(|| {
        env.var("PGSERVICE")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }) {
        for (k, v) in service_settings(env, &name)? {
            settings.set_default(&k, &v, Origin::Service(name.clone()));
        }
    }
    for (keyword, var) in keyword::with_env() {
        if let Some(value) = env.var(var) {
            settings.set_default(keyword, value, Origin::Environment(var));
        }
    }
    for (key, setting) in &settings.0 {
        keyword::check_inert(key, &setting.value).map_err(Error::config)?;
    }
    build(&settings, env)
}

/// The settings of service `name`: the user's file (`PGSERVICEFILE` or
/// `~/.pg_service.conf`) first, then `PGSYSCONFDIR/pg_service.conf`.
fn service_settings(env: &Environment, name: &str) -> Result<Vec<(String, String)>> {
    let user_file = env
        .var("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| env.home_file(".pg_service.conf"));
    let sysconf = env.var("PGSYSCONFDIR").unwrap_or("/etc/postgresql-common");
    let system_file = Path::new(sysconf).join("pg_service.conf");
    for path in user_file.into_iter().chain([system_file]) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("cannot read service file \"{}\"", path.display()),
                    e,
                ));
            }
        };
        if let Some(found) = service::find(&text, &path, name).map_err(Error::config)? {
            return Ok(found);
        }
    }
    Err(Error::config(format!(
        "definition of service \"{name}\" not found"
    )))
}

fn invalid_int(value: &str, keyword: &str) -> Error {
    Error::config(format!(
        "invalid integer value \"{value}\" for connection option \"{keyword}\""
    ))
}

fn int_setting(settings: &Settings, keyword: &str) -> Result<Option<i64>> {
    settings
        .get(keyword)
        .map(|v| v.trim().parse::<i64>().map_err(|_| invalid_int(v, keyword)))
        .transpose()
}

fn seconds(settings: &Settings, keyword: &str) -> Result<Option<Duration>> {
    Ok(int_setting(settings, keyword)?
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.unsigned_abs())))
}

fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// The unix socket directory libpq uses when no host is given.
fn default_socket_dir() -> PathBuf {
    let debian = Path::new(pgpass::DEFAULT_SOCKET_DIR);
    if debian.is_dir() {
        debian.to_path_buf()
    } else {
        PathBuf::from("/tmp")
    }
}

fn endpoints(settings: &Settings) -> Result<Vec<Endpoint>> {
    let hosts = split_list(settings.get("host"));
    let addrs = split_list(settings.get("hostaddr"));
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(Error::config(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            addrs.len()
        )));
    }
    let count = hosts.len().max(addrs.len()).max(1);
    let ports = split_list(settings.get("port"));
    if ports.len() > 1 && ports.len() != count {
        return Err(Error::config(format!(
            "could not match {} port numbers to {} hosts",
            ports.len(),
            count
        )));
    }
    (0..count)
        .map(|i| {
            let hostaddr = match addrs.get(i).filter(|a| !a.is_empty()) {
                Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                    Error::config(format!("could not parse network address \"{a}\""))
                })?),
                None => None,
            };
            let host = match hosts.get(i).filter(|h| !h.is_empty()) {
                Some(h) if h.starts_with('/') => Host::Socket(PathBuf::from(h)),
                Some(h) => Host::Tcp(h.clone()),
                None if hostaddr.is_some() => Host::AddrOnly,
                None => Host::Socket(default_socket_dir()),
            };
            let port = match ports.get(i).or(ports.first()).filter(|p| !p.is_empty()) {
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid_int(p, "port"))?,
                None => 5432,
            };
            Ok(Endpoint {
                host,
                hostaddr,
                port,
            })
        })
        .collect()
}

fn tls_version(settings: &Settings, keyword: &str) -> Result<Option<TlsVersion>> {
    match settings.get(keyword) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("tlsv1.2") => Ok(Some(TlsVersion::Tls12)),
        Some(v) if v.eq_ignore_ascii_case("tlsv1.3") => Ok(Some(TlsVersion::Tls13)),
        Some(v) if keyword == "ssl_min_protocol_version" && (v == "TLSv1" || v == "TLSv1.1") => {
            Ok(None)
        }
        Some(v) => Err(Error::config(format!(
            "invalid {keyword} value: \"{v}\" (pgbulk speaks TLSv1.2 and TLSv1.3)"
        ))),
    }
}

fn build(settings: &Settings, env: &Environment) -> Result<ConnParams> {
    let endpoints = endpoints(settings)?;
    let user = match settings.get("user") {
        Some(u) => u.to_owned(),
        None => env.os_user.clone().ok_or_else(|| {
            Error::config("could not determine the user name: set PGUSER or user=")
        })?,
    };
    let dbname = settings.get("dbname").unwrap_or(&user).to_owned();
    let password = settings
        .0
        .get("password")
        .filter(|s| !s.value.is_empty())
        .map(|s| (Password::new(s.value.clone()), s.origin.clone()));
    let passfile = settings
        .get("passfile")
        .map(PathBuf::from)
        .or_else(|| env.home_file(".pgpass"));

    let rootcert = settings.get("sslrootcert").map(str::to_owned);
    let sslmode = match settings.get("sslmode") {
        Some(mode) => SslMode::parse(mode)
            .ok_or_else(|| Error::config(format!("invalid sslmode value: \"{mode}\"")))?,
        None if rootcert.as_deref() == Some("system") => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if rootcert.as_deref() == Some("system") && sslmode != SslMode::VerifyFull {
        return Err(Error::config(format!(
            "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
            sslmode.as_str()
        )));
    }
    let postgresql_dir = env.home_file(".postgresql");
    let tls = TlsFiles {
        rootcert_explicit: rootcert.is_some(),
        rootcert: rootcert.or_else(|| {
            postgresql_dir
                .as_ref()
                .map(|d| d.join("root.crt").display().to_string())
        }),
        cert: settings
            .get("sslcert")
            .map(PathBuf::from)
            .or_else(|| postgresql_dir.as_ref().map(|d| d.join("postgresql.crt"))),
        key: settings
            .get("sslkey")
            .map(PathBuf::from)
            .or_else(|| postgresql_dir.as_ref().map(|d| d.join("postgresql.key"))),
        sni: settings.get("sslsni") != Some("0"),
        min_version: tls_version(settings, "ssl_min_protocol_version")?,
        max_version: tls_version(settings, "ssl_max_protocol_version")?,
    };

    let target_session_attrs = match settings.get("target_session_attrs") {
        Some(v) => TargetSessionAttrs::parse(v)
            .ok_or_else(|| Error::config(format!("invalid target_session_attrs value: \"{v}\"")))?,
        None => TargetSessionAttrs::Any,
    };
    let load_balance_hosts = match settings.get("load_balance_hosts") {
        None | Some("disable") => false,
        Some("random") => true,
        Some(v) => {
            return Err(Error::config(format!(
                "invalid load_balance_hosts value: \"{v}\""
            )));
        }
    };
    use tokio_postgres::config::ChannelBinding;
    let channel_binding = match settings.get("channel_binding") {
        None | Some("prefer") => ChannelBinding::Prefer,
        Some("disable") => ChannelBinding::Disable,
        Some("require") => ChannelBinding::Require,
        Some(v) => {
            return Err(Error::config(format!(
                "invalid channel_binding value: \"{v}\""
            )));
        }
    };
    let connect_timeout = int_setting(settings, "connect_timeout")?
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.unsigned_abs().max(2)));
    let keepalives = Keepalives {
        enabled: int_setting(settings, "keepalives")?.unwrap_or(1) != 0,
        idle: seconds(settings, "keepalives_idle")?,
        interval: seconds(settings, "keepalives_interval")?,
        count: int_setting(settings, "keepalives_count")?
            .filter(|c| *c > 0)
            .map(|c| u32::try_from(c).unwrap_or(u32::MAX)),
        tcp_user_timeout: int_setting(settings, "tcp_user_timeout")?
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.unsigned_abs())),
    };
    let application_name = settings
        .get("application_name")
        .or_else(|| settings.get("fallback_application_name"))
        .unwrap_or("pgbulk")
        .to_owned();
    let target_origin = ["host", "hostaddr", "port", "dbname", "service"]
        .iter()
        .find_map(|k| settings.0.get(*k).map(|s| s.origin.clone()));
    Ok(ConnParams {
        endpoints,
        dbname,
        user,
        password,
        passfile,
        sslmode,
        tls,
        application_name,
        connect_timeout,
        options: settings.get("options").map(str::to_owned),
        target_session_attrs,
        load_balance_hosts,
        channel_binding,
        keepalives,
        target_origin,
    })
}

#[cfg(test)]
mod tests;
