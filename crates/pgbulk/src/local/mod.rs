//! A local PostgreSQL cluster run from the installed server programs.
//!
//! Two uses of the same code: [`Cluster::throwaway`] for tests (created in
//! the temporary directory, removed when dropped and, should the process die
//! first, by a watchdog when the process exits), and [`Cluster::persistent`]
//! under `$PGBULK_HOME/local`, the CLI's target when no connection is
//! configured.
//!
//! The server listens on `127.0.0.1` (password authentication, SCRAM) and on
//! a unix socket in a private directory (trust: only the owner can reach the
//! socket). Run as root, the server runs as the unprivileged `postgres` OS
//! user through `runuser`, since PostgreSQL refuses to run as root.

mod binaries;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use binaries::Binaries;

use crate::conninfo::{self, ConnParams, Environment, Origin, Password, Request};
use crate::error::{Error, Result};
use crate::os_user::{self, Account};

/// The superuser role of clusters pgbulk creates.
pub const SUPERUSER: &str = "postgres";

/// The OS account a root-started server runs as.
const SERVER_ACCOUNT: &str = "postgres";

/// Whether a cluster exists and runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No data directory yet.
    NotCreated,
    /// Created, not running.
    Stopped,
    /// Running.
    Running {
        /// The postmaster's process id.
        pid: u32,
        /// The port it listens on.
        port: u16,
    },
}

/// Extra set-up for a throwaway server.
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// `postgresql.conf` settings, `(name, value)`.
    pub settings: Vec<(String, String)>,
    /// Files for the data directory, `(file name, contents)`.
    pub data_files: Vec<(String, Vec<u8>)>,
    /// The directory of the server programs to run (another major
    /// version's, say); default: found as [`Binaries::find`] finds them.
    pub bindir: Option<PathBuf>,
}

/// How [`Cluster::ensure_running`] brought the cluster into use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalUse {
    /// It was running already.
    Running,
    /// It existed and was started now.
    Started,
    /// It was created and started now.
    Created,
}

/// A local cluster: its directory, the programs that run it and the account
/// it runs as.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    binaries: Binaries,
    /// The account the server runs as when we are root.
    server_account: Option<Account>,
    throwaway: bool,
    /// Stdin of the watchdog that removes a throwaway cluster when this
    /// process exits; closing it triggers the clean-up.
    watchdog: Option<Child>,
}

impl Cluster {
    /// The persistent cluster under `$PGBULK_HOME/local` (not created or
    /// started by this call).
    pub fn persistent(env: &Environment) -> Result<Self> {
        let binaries = Binaries::find(env)?;
        let server_account = server_account()?;
        let mut root = env.pgbulk_home().join("local");
        if let Some(account) = &server_account {
            if !reachable_by(account, &root) {
                root = unreachable_home_fallback(account, &root);
            }
        }
        Ok(Self {
            root,
            binaries,
            server_account,
            throwaway: false,
            watchdog: None,
        })
    }

    /// Creates and starts a new cluster in the temporary directory, tuned for
    /// tests (no fsync). It is stopped and removed when dropped, or when the
    /// process exits without dropping it.
    pub fn throwaway() -> Result<Self> {
        Self::throwaway_with(&ServerSetup::default())
    }

    /// [`Cluster::throwaway`] with extra server settings and files (such as
    /// a TLS certificate and key) put in place before the server starts.
    pub fn throwaway_with(setup: &ServerSetup) -> Result<Self> {
        let binaries = match &setup.bindir {
            Some(dir) => Binaries::at(dir)?,
            None => Binaries::find(&Environment::from_process())?,
        };
        let server_account = server_account()?;
        let root = unique_temp_dir()?;
        let mut cluster = Self {
            root,
            binaries,
            server_account,
            throwaway: true,
            watchdog: None,
        };
        cluster.chown(&cluster.root)?;
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.create()?;
        cluster.install(setup)?;
        cluster.start()?;
        Ok(cluster)
    }

    /// Writes `setup`'s files into the data directory (mode 0600, owned by
    /// the server's account) and appends its settings to `postgresql.conf`.
    fn install(&self, setup: &ServerSetup) -> Result<()> {
        let data = self.data_dir();
        for (name, contents) in &setup.data_files {
            if name.contains('/') || name.starts_with('.') {
                return Err(Error::local(format!("invalid data file name \"{name}\"")));
            }
            let path = data.join(name);
            write_private(&path, contents)?;
            self.chown(&path)?;
        }
        let mut conf = String::new();
        for (name, value) in &setup.settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| Error::io("cannot write postgresql.conf", e))
    }

    /// The cluster's directory (holding `data/`, the log and the password).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The server programs in use.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The directory holding the unix socket: `<root>/run`, or a directory
    /// in `/tmp` when that path is too long for a socket address.
    pub fn socket_dir(&self) -> PathBuf {
        let dir = self.root.join("run");
        if dir.as_os_str().len() + ".s.PGSQL.65535".len() < 100 {
            return dir;
        }
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            self.root.as_os_str().as_encoded_bytes(),
        );
        let hex: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PathBuf::from(format!("/tmp/pgbulk-{hex}"))
    }

    fn password_file(&self) -> PathBuf {
        self.root.join("password")
    }

    /// The superuser's password (for TCP connections).
    pub fn password(&self) -> Result<Password> {
        let path = self.password_file();
        std::fs::read_to_string(&path)
            .map(|p| Password::new(p.trim().to_owned()))
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
    }

    /// Whether the cluster exists and runs.
    pub fn status(&self) -> Result<Status> {
        if !self.data_dir().join("PG_VERSION").is_file() {
            return Ok(Status::NotCreated);
        }
        let out = self
            .server_command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::io("cannot run pg_ctl status", e))?;
        if !out.success() {
            return Ok(Status::Stopped);
        }
        let pidfile = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .map_err(|e| Error::io("cannot read postmaster.pid", e))?;
        let mut lines = pidfile.lines();
        let pid = lines.next().and_then(|l| l.trim().parse().ok());
        let port = lines.nth(2).and_then(|l| l.trim().parse().ok());
        match (pid, port) {
            (Some(pid), Some(port)) => Ok(Status::Running { pid, port }),
            _ => Ok(Status::Stopped),
        }
    }

    /// Runs `initdb` unless the cluster exists. Returns whether it created it.
    pub fn create(&self) -> Result<bool> {
        if self.data_dir().join("PG_VERSION").is_file() {
            return Ok(false);
        }
        create_private_dir(&self.root)?;
        self.chown(&self.root)?;
        let password = random_hex(16)?;
        let pwfile = self.password_file();
        write_private(&pwfile, &password)?;
        self.chown(&pwfile)?;
        let data = self.data_dir();
        if data.exists() {
            return Err(Error::local(format!(
                "{} exists but holds no cluster; remove it and try again",
                data.display()
            )));
        }
        let mut initdb = self.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .arg("--username")
            .arg(SUPERUSER)
            .arg("--encoding=UTF8")
            .arg("--locale=C")
            .arg("--auth-local=trust")
            .arg("--auth-host=scram-sha-256")
            .arg("--pwfile")
            .arg(&pwfile);
        if self.throwaway {
            initdb.arg("--no-sync");
        }
        run(&mut initdb, "initdb")?;
        let socket_dir = self.socket_dir();
        let mut conf = format!(
            "\n# Added by pgbulk\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            socket_dir.display().to_string().replace('\'', "''")
        );
        if self.throwaway {
            conf.push_str(
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n",
            );
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| Error::io("cannot write postgresql.conf", e))?;
        Ok(true)
    }

    /// Starts the server (creating the cluster first if needed) on its last
    /// port when free, else on a free one. Returns whether it was started
    /// (false: it was running already).
    pub fn start(&self) -> Result<bool> {
        self.create()?;
        if let Status::Running { .. } = self.status()? {
            return Ok(false);
        }
        let socket_dir = self.socket_dir();
        create_private_dir(&socket_dir)?;
        self.chown(&socket_dir)?;
        let port_file = self.root.join("port");
        let preferred = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let mut last_error = None;
        for attempt in 0..3 {
            let port = match preferred.filter(|p| attempt == 0 && port_is_free(*p)) {
                Some(p) => p,
                None => free_port()?,
            };
            let mut pg_ctl = self.server_command("pg_ctl");
            pg_ctl
                .arg("start")
                .arg("-w")
                .arg("-t")
                .arg("60")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .arg("-o")
                .arg(format!("-p {port}"));
            match run(&mut pg_ctl, "pg_ctl start") {
                Ok(()) => {
                    let _ = std::fs::write(&port_file, port.to_string());
                    return Ok(true);
                }
                Err(e) => {
                    let log = self.log_tail(5);
                    let retry = log.contains("could not bind") || log.contains("already in use");
                    last_error = Some(Error::local(format!(
                        "{}; server log {}: {}",
                        e.message(),
                        self.log_file().display(),
                        log.replace('\n', " | ")
                    )));
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::local("pg_ctl start failed")))
    }

    /// Creates the cluster if needed and starts it if it is not running;
    /// says which it did.
    pub fn ensure_running(&self) -> Result<LocalUse> {
        let created = self.create()?;
        let started = self.start()?;
        Ok(match (created, started) {
            (true, _) => LocalUse::Created,
            (false, true) => LocalUse::Started,
            (false, false) => LocalUse::Running,
        })
    }

    /// Stops the server (fast shutdown). Returns whether it was running.
    pub fn stop(&self) -> Result<bool> {
        self.stop_in("fast")
    }

    /// Stops the server and deletes the cluster's directory: its data, log
    /// and password. Returns whether there was one.
    pub fn remove(&self) -> Result<bool> {
        if !self.root.exists() {
            return Ok(false);
        }
        self.stop()?;
        std::fs::remove_dir_all(&self.root)
            .map_err(|e| Error::io(format!("cannot remove {}", self.root.display()), e))?;
        Ok(true)
    }

    /// Stops the server at once, as a crash would: no shutdown checkpoint,
    /// the next start recovers from the WAL (fault tests). Returns whether
    /// it was running.
    pub fn stop_immediately(&self) -> Result<bool> {
        self.stop_in("immediate")
    }

    fn stop_in(&self, mode: &str) -> Result<bool> {
        if !matches!(self.status()?, Status::Running { .. }) {
            return Ok(false);
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("stop")
            .arg("-w")
            .arg("-m")
            .arg(mode)
            .arg("-D")
            .arg(self.data_dir());
        run(&mut pg_ctl, "pg_ctl stop")?;
        Ok(true)
    }

    /// Connection parameters for the superuser over the unix socket.
    pub fn conn_params(&self, dbname: &str) -> Result<ConnParams> {
        let Status::Running { port, .. } = self.status()? else {
            return Err(Error::local(format!(
                "the local cluster at {} is not running (pgbulk local start)",
                self.root.display()
            )));
        };
        let request = Request {
            db: Some(format!(
                "host='{}' port={port} user={SUPERUSER} dbname='{}'",
                escape_value(&self.socket_dir().display().to_string()),
                escape_value(dbname)
            )),
            profile: None,
        };
        let mut params = conninfo::resolve(&request, &Environment::empty())?;
        params.target_origin = Some(Origin::LocalCluster);
        params.passfile = None;
        Ok(params)
    }

    /// A `postgresql://` URL for the superuser over the unix socket.
    pub fn url(&self, dbname: &str) -> Result<String> {
        let Status::Running { port, .. } = self.status()? else {
            return Err(Error::local("the local cluster is not running"));
        };
        Ok(format!(
            "postgresql://{SUPERUSER}@/{}?host={}&port={port}",
            conninfo::percent_encode(dbname),
            conninfo::percent_encode(&self.socket_dir().display().to_string())
        ))
    }

    /// A URL over TCP, including the superuser's password: for handing to
    /// tests and tools, never for printing.
    pub fn tcp_url(&self, dbname: &str) -> Result<String> {
        let Status::Running { port, .. } = self.status()? else {
            return Err(Error::local("the local cluster is not running"));
        };
        Ok(format!(
            "postgresql://{SUPERUSER}:{}@127.0.0.1:{port}/{}",
            conninfo::percent_encode(self.password()?.expose()),
            conninfo::percent_encode(dbname)
        ))
    }

    /// A `psql` command connected to `dbname` on this cluster, with `args`
    /// appended; the caller runs it.
    pub fn psql_command(&self, dbname: &str, args: &[String]) -> Result<Command> {
        let psql = self.binaries.program("psql");
        let mut cmd = Command::new(if psql.is_file() {
            psql
        } else {
            PathBuf::from("psql")
        });
        cmd.arg(self.url(dbname)?).args(args);
        Ok(cmd)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A command for a server program, run as the server's account when we
    /// are root, with no `PG*` variables that could redirect it.
    fn server_command(&self, program: &str) -> Command {
        let path = self.binaries.program(program);
        let mut cmd = match &self.server_account {
            Some(account) => {
                let mut cmd = Command::new(runuser());
                cmd.arg("-u").arg(&account.name).arg("--").arg(path);
                cmd
            }
            None => Command::new(path),
        };
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(if self.root.is_dir() {
            self.root.as_path()
        } else {
            Path::new("/")
        });
        cmd.stdin(Stdio::null());
        cmd
    }

    fn chown(&self, path: &Path) -> Result<()> {
        let Some(account) = &self.server_account else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
            .map_err(|e| Error::io(format!("cannot chown {}", path.display()), e))
    }

    /// A shell that waits for its stdin to close (this process exiting, or
    /// [`Drop`]) and then stops the server and removes the directory.
    fn spawn_watchdog(&self) -> Result<Child> {
        let script =
            "read _ignored; \"$1\" stop -D \"$2\" -m immediate -w >/dev/null 2>&1; rm -rf \"$3\"";
        let mut cmd = match &self.server_account {
            Some(account) => {
                let mut cmd = Command::new(runuser());
                cmd.arg("-u").arg(&account.name).arg("--").arg("/bin/sh");
                cmd
            }
            None => Command::new("/bin/sh"),
        };
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(self.binaries.program("pg_ctl"))
            .arg(self.data_dir())
            .arg(&self.root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("cannot start the clean-up watchdog", e))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.throwaway {
            return;
        }
        let _ = self
            .server_command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-m")
            .arg("immediate")
            .arg("-w")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// `runuser`, found where util-linux installs it even when `PATH` lacks
/// the sbin directories.
fn runuser() -> PathBuf {
    [
        "/usr/sbin/runuser",
        "/sbin/runuser",
        "/usr/bin/runuser",
        "/bin/runuser",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// Escapes a value for a single-quoted `key='value'` connection string.
fn escape_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The unprivileged account to run the server as, when we are root.
fn server_account() -> Result<Option<Account>> {
    if !os_user::is_root() {
        return Ok(None);
    }
    os_user::by_name(SERVER_ACCOUNT).map(Some).ok_or_else(|| {
        Error::local(format!(
            "running as root: PostgreSQL refuses to run as root and there is no `{SERVER_ACCOUNT}` OS user \
             to run it as; create one (useradd --system {SERVER_ACCOUNT}) or run pgbulk as an ordinary user"
        ))
    })
}

/// Whether `account` can reach `path`: every existing ancestor is searchable
/// by it.
fn reachable_by(account: &Account, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().skip(1).all(|dir| {
        let Ok(meta) = std::fs::metadata(dir) else {
            return true;
        };
        let mode = meta.mode();
        if meta.uid() == account.uid {
            mode & 0o100 != 0
        } else if meta.gid() == account.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

/// Where a root-run persistent cluster lives when `$PGBULK_HOME` is private
/// to root: a directory in the server account's home named after the
/// unreachable path.
fn unreachable_home_fallback(account: &Account, root: &Path) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, root.as_os_str().as_encoded_bytes());
    let hex: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let base = if account.home.is_dir() {
        account.home.clone()
    } else {
        PathBuf::from("/var/tmp")
    };
    base.join(format!("pgbulk-{hex}"))
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if path.is_dir() {
        return Ok(());
    }
    // Parents get the usual mode so a root-started server's account can
    // still reach the directory; only the directory itself is private.
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::DirBuilder::new().mode(0o700).create(path))
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))
}

fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_ref()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

fn unique_temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!("pgbulk-{}-{}", std::process::id(), random_hex(4)?));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
        }
    }
    Err(Error::local("cannot create a unique temporary directory"))
}

fn random_hex(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::local("the system's random source failed"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> Result<u16> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free TCP port", e))
}

/// Runs a server program, turning a failure into an error carrying its
/// output.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io(format!("cannot run {what}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    Err(Error::local(format!(
        "{what} failed ({}): {}",
        out.status,
        text.trim().replace('\n', " | ")
    )))
}
