//! The test harness: one throwaway PostgreSQL cluster per test run (TLS on,
//! with a test CA), or the server `PGBULK_TEST_DATABASE_URL` names; a fresh,
//! uniquely named database per test, dropped afterwards. Shared by the
//! library's and the command's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use pgbulk::conninfo::{self, ConnParams, Environment, Host, Request};
use pgbulk::local::{Cluster, ServerSetup};

/// The server the suite runs against.
#[derive(Debug)]
pub struct Server {
    /// Superuser URL (with password) of the `postgres` database, over TCP.
    pub url: String,
    /// The resolved form of `url`.
    pub params: ConnParams,
    /// Set for the throwaway cluster: its TLS material.
    pub tls: Option<TestCa>,
    _cluster: Option<Cluster>,
}

/// Certificates for TLS tests: the CA that signed the server's certificate
/// (for `localhost` only) and an unrelated CA. They live in the cluster's
/// directory, so they go when it goes.
#[derive(Debug)]
pub struct TestCa {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The server programs the suite runs: `PGBULK_TEST_PG_BINDIR`, or
/// `PGBULK_TEST_PG` naming a major version fetched by `scripts/pg-versions`
/// (under `PGBULK_PG_CACHE`, default `/var/cache/pgbulk-pg`); else the
/// machine's own.
pub fn test_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PGBULK_TEST_PG_BINDIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let major = std::env::var("PGBULK_TEST_PG")
        .ok()
        .filter(|m| !m.is_empty())?;
    let cache = std::env::var_os("PGBULK_PG_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/pgbulk-pg"), PathBuf::from);
    Some(cache.join(major).join("bin"))
}

/// The test tools' virtualenv (`scripts/install-deps`): `$PGBULK_TOOLS`,
/// default `~/.cache/pgbulk-tools`.
fn tools() -> PathBuf {
    std::env::var_os("PGBULK_TOOLS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pgbulk-tools")))
        .unwrap_or_default()
}

/// A BigQuery emulator (PyPI's `bqemulator`, from the test tools'
/// virtualenv), started once per test binary on a free port and stopped
/// when the binary exits.
#[derive(Debug)]
pub struct BigQueryEmulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The watchdog shell whose stdin closing stops the emulator.
    _watchdog: std::sync::Mutex<std::process::Child>,
    agent: ureq::Agent,
}

static BIGQUERY: OnceLock<BigQueryEmulator> = OnceLock::new();

/// The emulator (see [`BigQueryEmulator`]); panics, saying how to get it,
/// when it is not installed.
pub fn bigquery() -> &'static BigQueryEmulator {
    BIGQUERY.get_or_init(|| {
        let program = tools().join("bin/bqemulator");
        assert!(
            program.is_file(),
            "the BigQuery emulator is not at {}: run scripts/install-deps",
            program.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log =
            std::env::temp_dir().join(format!("pgbulk-bqemulator-{}.log", std::process::id()));
        // The log says why a start failed; once the binary exits (stdin
        // closes) it is removed with the emulator.
        let script = "\"$@\" >\"$LOG\" 2>&1 & child=$!; read _ignored; kill $child; \
                      wait $child; rm -f \"$LOG\"";
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&program)
            .args([
                "start",
                "--ephemeral",
                "--grpc-port",
                "0",
                "--project",
                "pgbulk-test",
                "--rest-port",
            ])
            .arg(port.to_string())
            .env("LOG", &log)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("the emulator starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        loop {
            let ready = agent
                .get(format!("{url}/bigquery/v2/projects/pgbulk-test/datasets"))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "the BigQuery emulator did not answer within two minutes: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        BigQueryEmulator {
            url,
            _watchdog: std::sync::Mutex::new(watchdog),
            agent,
        }
    })
}

impl BigQueryEmulator {
    /// Sends `body` (JSON) to `path` (after the address) with `method`;
    /// the status and the JSON answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.url);
        let response = match body {
            Some(b) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(b.to_string()),
            None if method == "DELETE" => self.agent.delete(&url).call(),
            None => self.agent.get(&url).call(),
        };
        let mut response = response.expect("the emulator answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Creates the dataset `name` of project `pgbulk-test`.
    pub fn dataset(&self, name: &str) {
        let (status, answer) = self.call(
            "POST",
            "/bigquery/v2/projects/pgbulk-test/datasets",
            Some(serde_json::json!({ "datasetReference": { "projectId": "pgbulk-test", "datasetId": name } })),
        );
        assert_eq!(status, 200, "creating dataset {name}: {answer}");
    }

    /// The rows of `sql` (standard SQL), each cell as text (`None`: NULL).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let (status, answer) = self.call(
            "POST",
            "/bigquery/v2/projects/pgbulk-test/queries",
            Some(serde_json::json!({ "query": sql, "useLegacySql": false })),
        );
        assert!(
            status == 200 && answer.get("errors").is_none(),
            "{sql}: {answer}"
        );
        let cell = |c: &serde_json::Value| match &c["v"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        answer["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r["f"]
                            .as_array()
                            .map(|f| f.iter().map(cell).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The DuckDB CLI (`scripts/install-deps` puts PyPI's `duckdb-cli` under
/// `$PGBULK_TOOLS`, default `~/.cache/pgbulk-tools`; `PGBULK_DUCKDB` names
/// another). Panics, saying how to get it, when it is missing.
pub fn duckdb() -> PathBuf {
    if let Some(path) = std::env::var_os("PGBULK_DUCKDB").filter(|d| !d.is_empty()) {
        return PathBuf::from(path);
    }
    let path = tools().join("bin/duckdb");
    assert!(
        path.is_file(),
        "the DuckDB CLI is not at {}: run scripts/install-deps (or set PGBULK_DUCKDB)",
        path.display()
    );
    path
}

/// The suite's server, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("PGBULK_TEST_DATABASE_URL") {
            let params = resolve(&url);
            return Server {
                url,
                params,
                tls: None,
                _cluster: None,
            };
        }
        let certs = make_certs();
        let file = |name: &str| read(&certs.path().join(name));
        let setup = ServerSetup {
            bindir: test_bindir(),
            settings: vec![
                ("ssl".into(), "on".into()),
                ("ssl_cert_file".into(), "server.crt".into()),
                ("ssl_key_file".into(), "server.key".into()),
            ],
            data_files: vec![
                ("server.crt".into(), file("server.crt")),
                ("server.key".into(), file("server.key")),
            ],
        };
        let cluster = Cluster::throwaway_with(&setup).expect("throwaway cluster starts");
        let ca = TestCa {
            ca: cluster.root().join("test-ca.crt"),
            other_ca: cluster.root().join("test-other-ca.crt"),
        };
        std::fs::write(&ca.ca, file("ca.crt")).expect("ca");
        std::fs::write(&ca.other_ca, file("other_ca.crt")).expect("other ca");
        let url = cluster.tcp_url("postgres").expect("cluster url");
        Server {
            params: resolve(&url),
            url,
            tls: Some(ca),
            _cluster: Some(cluster),
        }
    })
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read test file")
}

/// Resolves a URL with no environment at all.
pub fn resolve(url: &str) -> ConnParams {
    let request = Request {
        db: Some(url.to_owned()),
        profile: None,
    };
    conninfo::resolve(&request, &Environment::empty().with_os_user("nobody"))
        .expect("test URL resolves")
}

impl Server {
    /// The TCP host and port of the server.
    pub fn host_port(&self) -> (String, u16) {
        let endpoint = &self.params.endpoints[0];
        let host = match &endpoint.host {
            Host::Tcp(h) => h.clone(),
            Host::Socket(dir) => dir.display().to_string(),
            Host::AddrOnly => endpoint.hostaddr.map(|a| a.to_string()).unwrap_or_default(),
        };
        (host, endpoint.port)
    }

    /// The superuser name.
    pub fn user(&self) -> &str {
        &self.params.user
    }

    /// The superuser password.
    pub fn password(&self) -> String {
        self.params
            .password()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default()
    }
}

/// A database created for one test and dropped when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    /// Superuser URL of this database.
    pub url: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    /// Creates `pgbulk_test_<label>_<pid>_<n>`.
    pub async fn new(label: &str) -> Self {
        Self::create(label, "").await
    }

    /// Like [`TestDb::new`], in `encoding` (`LATIN1`, `WIN1252`), with
    /// the C locale, which goes with every encoding.
    pub async fn with_encoding(label: &str, encoding: &str) -> Self {
        Self::create(
            label,
            &format!(" ENCODING '{encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"),
        )
        .await
    }

    /// Creates the database with `options` after its name.
    async fn create(label: &str, options: &str) -> Self {
        let server = server();
        let name = format!(
            "pgbulk_test_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let session = pgbulk::connect::connect(&server.params)
            .await
            .expect("admin connection");
        session
            .client
            .batch_execute(&format!("CREATE DATABASE \"{name}\"{options}"))
            .await
            .expect("create test database");
        let sep = if server.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}dbname={name}", server.url);
        Self { name, url }
    }

    /// Makes `setting` `value` for every new session of this database (as
    /// the database's own setting, which pgbulk's sessions pick up) and
    /// checks a new session has it.
    pub async fn set(&self, setting: &str, value: &str) {
        let client = self.connect().await;
        let sql: String = client
            .query_one(
                "SELECT format('ALTER DATABASE %I SET %I = %L', current_database(), $1::text, $2::text)",
                &[&setting, &value],
            )
            .await
            .expect("format")
            .get(0);
        client.batch_execute(&sql).await.expect("setting");
        let now: String = self
            .connect()
            .await
            .query_one("SELECT current_setting($1)", &[&setting])
            .await
            .expect("setting")
            .get(0);
        assert_eq!(now, value, "{setting}");
    }

    /// A session on this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        pgbulk::connect::connect(&resolve(&self.url))
            .await
            .expect("test database connection")
            .client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let session = pgbulk::connect::connect(&server().params).await?;
                session
                    .client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| pgbulk::Error::new(pgbulk::ErrorKind::Server, e.to_string()))
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop test database {}", self.name);
        }
    }
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "pgbulk-it-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` with `mode` and returns its path.
    pub fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished command's exit code, stdout and stderr.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("pgbulk runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `cmd` (its output discarded) and returns its exit code and its
/// peak resident memory in KiB, as the kernel accounted it for this child
/// alone. When it fails, its stderr (kept in a file meanwhile) is printed,
/// for the test's output.
///
/// The child is started by GNU `time`, not by this process: a process
/// spawned from here (posix_spawn, a vfork) starts its accounting at this
/// test process's own peak, which other tests' buffers raise, and even a
/// fork starts at this process's current size. `time` is small, so what it
/// reports is the child's. `cmd` runs with only the environment set on it
/// (as [`Command::env_clear`] then `env` would), in its directory.
pub fn peak_memory(cmd: &mut Command) -> (i32, u64) {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let scratch = |what: &str| {
        std::env::temp_dir().join(format!(
            "pgbulk-peak-memory-{}-{}.{what}",
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
    };
    let (errors, report) = (scratch("err"), scratch("rss"));
    let mut timed = Command::new("/usr/bin/time");
    timed
        .env_clear()
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (name, value) in cmd.get_envs() {
        if let Some(value) = value {
            timed.env(name, value);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let status = timed
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&errors).expect("a file for stderr"))
        .status()
        .expect("/usr/bin/time runs (install the time package)");
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        let said = std::fs::read_to_string(&errors).unwrap_or_default();
        eprintln!("exit {code} ({status}); stderr:\n{said}");
    }
    // GNU time writes "Command exited with non-zero status N" above the
    // figure when the child failed: the figure is the last line.
    let reported = std::fs::read_to_string(&report).unwrap_or_default();
    let kib = reported
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time's report: {reported:?}"));
    let _ = std::fs::remove_file(&errors);
    let _ = std::fs::remove_file(&report);
    (code, kib)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (install the openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `localhost` signed by it, and an
/// unrelated CA, in a scratch directory.
fn make_certs() -> Scratch {
    let dir = Scratch::new("tls");
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for name in ["ca", "other_ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let subj = format!("/CN=pgbulk test {name}");
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        args.extend(["-keyout", &key, "-out", &crt, "-days", "3", "-subj", &subj]);
        openssl(d, &args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(d, &args);
    std::fs::write(d.join("ext.cnf"), "subjectAltName=DNS:localhost\n").expect("ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "3",
            "-extfile",
            "ext.cnf",
        ],
    );
    dir
}

/// A small deterministic generator (xorshift64*) for seeded test inputs.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }
}

/// A TCP proxy in front of the suite's server that the test controls:
/// [`Proxy::cut`] drops every connection open through it (as a network
/// failure would), new ones are still accepted.
#[derive(Debug)]
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free local port, forwarding to the suite's server.
    pub async fn start() -> Self {
        let (host, port) = server().host_port();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let local = listener.local_addr().expect("proxy address").port();
        let (cut, watch) = tokio::sync::watch::channel(0u64);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                let target = format!("{host}:{port}");
                tokio::spawn(async move {
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    watch.borrow_and_update();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = watch.changed() => {}
                    }
                });
            }
        });
        Self {
            port: local,
            cut,
            accept,
        }
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// `db`'s URL, through this proxy.
    pub fn url(&self, db: &TestDb) -> String {
        let (_, port) = server().host_port();
        db.url
            .replacen(&format!(":{port}/"), &format!(":{}/", self.port), 1)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A hot standby of the suite's throwaway server: a base backup of it,
/// streaming from it, on a unix socket of its own (`listen_addresses` is
/// empty). Stopped and removed when dropped.
#[derive(Debug)]
pub struct Standby {
    root: PathBuf,
    pg_ctl: PathBuf,
    port: u16,
    user: String,
    /// Run as root: the server runs as the `postgres` OS account.
    as_postgres: bool,
}

impl Standby {
    /// Starts one; `None` when the suite runs against a server it did not
    /// start (`PGBULK_TEST_DATABASE_URL`), or its binaries have no
    /// `pg_basebackup` (the server-only builds of other majors).
    pub fn start() -> Option<Self> {
        let server = server();
        let cluster = server._cluster.as_ref()?;
        let basebackup = cluster.binaries().program("pg_basebackup");
        if !basebackup.is_file() {
            return None;
        }
        let root = std::env::temp_dir().join(format!(
            "pgbulk-standby-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&root).expect("standby directory");
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&root)
                .status()
                .expect("chown");
            assert!(chown.success(), "chown of {}", root.display());
        }
        let standby = Self {
            pg_ctl: cluster.binaries().program("pg_ctl"),
            port: 5432,
            user: server.user().to_owned(),
            as_postgres,
            root,
        };
        let data = standby.root.join("data");
        let (_, primary_port) = server.host_port();
        standby.run(
            Command::new(basebackup)
                .arg("-h")
                .arg(cluster.socket_dir())
                .arg("-p")
                .arg(primary_port.to_string())
                .args([
                    "-U",
                    &standby.user,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-D",
                ])
                .arg(&data),
        );
        let mut conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).expect("conf");
        conf.push_str(&format!(
            "port = {}\nunix_socket_directories = '{}'\nlisten_addresses = ''\n",
            standby.port,
            standby.root.display()
        ));
        std::fs::write(data.join("postgresql.auto.conf"), conf).expect("conf");
        standby.run(
            Command::new(&standby.pg_ctl)
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(standby.root.join("server.log")),
        );
        Some(standby)
    }

    /// The superuser's connection string for `dbname` on the standby.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={dbname}",
            self.root.display(),
            self.port,
            self.user
        )
    }

    /// `cmd`, run as the `postgres` account when we are root.
    fn as_server(&self, cmd: &Command) -> Command {
        let mut wrapped = if self.as_postgres {
            // Where util-linux installs it, also when `PATH` lacks sbin.
            let program = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .into_iter()
                .find(|p| Path::new(p).is_file())
                .unwrap_or("runuser");
            let mut runuser = Command::new(program);
            runuser
                .args(["-u", "postgres", "--"])
                .arg(cmd.get_program());
            runuser
        } else {
            Command::new(cmd.get_program())
        };
        wrapped.args(cmd.get_args());
        wrapped
    }

    /// Runs `cmd` (see [`Standby::as_server`]); panics with its output
    /// when it fails.
    fn run(&self, cmd: &mut Command) {
        let mut cmd = self.as_server(cmd);
        let out = cmd.output().expect("standby command runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let mut stop = Command::new(&self.pg_ctl);
        stop.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.root.join("data"));
        let _ = self.as_server(&stop).output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
