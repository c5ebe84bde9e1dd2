//! The `pgbulk` command: parses flags, sets up logging, calls the library and
//! maps its errors to the exit codes documented in the README.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pgbulk::conninfo::{Environment, Request};
use pgbulk::local::{Cluster, Status};
use pgbulk::target::LocalUse;
use pgbulk::{ErrorKind, target};

/// Exit codes (documented in the README).
mod exit {
    pub(crate) const FAILURE: u8 = 1;
    pub(crate) const CONFIG: u8 = 3;
    pub(crate) const CONNECT: u8 = 4;
    pub(crate) const AUTH: u8 = 5;
    pub(crate) const TLS: u8 = 6;
    pub(crate) const LOCAL: u8 = 7;
    pub(crate) const NOT_RUNNING: u8 = 8;
    pub(crate) const DATA: u8 = 9;
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// Move data into PostgreSQL in bulk: fast, incremental, safe for the live
/// database.
///
/// Connections resolve as in libpq: --db takes a URI, a key=value string or a
/// database name; PG* variables, ~/.pgpass and pg_service.conf apply; profiles
/// come from pgbulk.toml. With nothing configured, pgbulk uses (and starts) its
/// own local cluster under $PGBULK_HOME.
#[derive(Debug, Parser)]
#[command(name = "pgbulk", version, propagate_version = true)]
struct Cli {
    /// Connection string: postgresql:// URI, "key=value ..." or a database name.
    #[arg(long, global = true, value_name = "CONNINFO", hide_env_values = true)]
    db: Option<String>,

    /// Connection profile from pgbulk.toml (default: $PGBULK_PROFILE).
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,

    /// More output: -v for progress, -vv for debugging.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect, then print the target (without password), server version and latency.
    Ping,
    /// Manage pgbulk's own local PostgreSQL cluster (under $PGBULK_HOME).
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
}

#[derive(Debug, Subcommand)]
enum LocalAction {
    /// Create the cluster if needed and start it.
    Start,
    /// Stop the cluster.
    Stop,
    /// Say whether the cluster exists and runs (exit 8 when it does not run).
    Status,
    /// Print the connection URL (starting the cluster if needed).
    Url,
    /// Run psql against the cluster (starting it if needed); extra arguments go to psql.
    Psql {
        /// Arguments for psql.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e), cli.verbose),
    };
    let verbose = cli.verbose;
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match outcome {
        Some(Ok(code)) => ExitCode::from(code),
        Some(Err(e)) => fail(&e, verbose),
        None => {
            eprintln!("pgbulk: interrupted");
            ExitCode::from(exit::INTERRUPTED)
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(cli.verbose > 1)
        .without_time()
        .init();
}

/// Prints the error on one line (the cause chain and server detail too with
/// -v) and picks the exit code from its kind.
fn fail(error: &anyhow::Error, verbose: u8) -> ExitCode {
    let lib = error.downcast_ref::<pgbulk::Error>();
    eprintln!("pgbulk: error: {error}");
    if verbose > 0 {
        for cause in error.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if let Some(db) = lib.and_then(pgbulk::Error::db_error) {
            eprintln!("  sqlstate: {}", db.code().code());
            if let Some(detail) = db.detail() {
                eprintln!("  detail: {detail}");
            }
            if let Some(hint) = db.hint() {
                eprintln!("  hint: {hint}");
            }
        }
    }
    let code = match lib.map(pgbulk::Error::kind) {
        Some(ErrorKind::Config) => exit::CONFIG,
        Some(ErrorKind::Connect) => exit::CONNECT,
        Some(ErrorKind::Auth) => exit::AUTH,
        Some(ErrorKind::Tls) => exit::TLS,
        Some(ErrorKind::Local) => exit::LOCAL,
        Some(ErrorKind::Data) => exit::DATA,
        _ => exit::FAILURE,
    };
    ExitCode::from(code)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let env = Environment::from_process();
    let request = Request {
        db: cli.db,
        profile: cli.profile,
    };
    match cli.command {
        Command::Ping => ping(&request, &env).await,
        Command::Local { action } => local(action, &env),
    }
}

async fn ping(request: &Request, env: &Environment) -> anyhow::Result<u8> {
    let target = target::resolve(request, env)?;
    if let Some((how, dir)) = &target.local {
        say_local(*how, dir);
    }
    let params = &target.params;
    tracing::info!("connecting to {params}");
    let report = pgbulk::ping::ping(params).await?;
    let origin = params
        .target_origin
        .as_ref()
        .map(|o| format!(" (from {o})"))
        .unwrap_or_default();
    println!(
        "target:   {} dbname={} user={} sslmode={}{origin}",
        report.endpoint,
        report.dbname,
        report.user,
        params.sslmode.as_str()
    );
    if let Some(origin) = &report.password_origin {
        println!("password: from {origin}");
    }
    println!("server:   PostgreSQL {}", report.server_version);
    println!("tls:      {}", report.tls.as_deref().unwrap_or("off"));
    println!(
        "connect:  {:.1} ms",
        report.connect_time.as_secs_f64() * 1e3
    );
    println!("latency:  {:.2} ms", report.latency.as_secs_f64() * 1e3);
    Ok(0)
}

fn say_local(how: LocalUse, dir: &std::path::Path) {
    let what = match how {
        LocalUse::Running => "running",
        LocalUse::Started => "started it",
        LocalUse::Created => "created and started it",
    };
    eprintln!(
        "pgbulk: no connection configured (--db, --profile or PG* variables); using the local cluster in {} ({what})",
        dir.display()
    );
}

fn local(action: LocalAction, env: &Environment) -> anyhow::Result<u8> {
    let cluster = Cluster::persistent(env)?;
    let ensure_running = |cluster: &Cluster| -> anyhow::Result<()> {
        let created = cluster.create()?;
        if cluster.start()? {
            eprintln!(
                "pgbulk: {} the local cluster in {}",
                if created {
                    "created and started"
                } else {
                    "started"
                },
                cluster.root().display()
            );
        }
        Ok(())
    };
    match action {
        LocalAction::Start => {
            let created = cluster.create()?;
            let started = cluster.start()?;
            let port = match cluster.status()? {
                Status::Running { port, .. } => port,
                _ => anyhow::bail!(
                    "the local cluster did not stay up; see {}",
                    cluster.log_file().display()
                ),
            };
            let verb = match (created, started) {
                (true, _) => "created and started",
                (false, true) => "started",
                (false, false) => "already running:",
            };
            println!(
                "{verb} local cluster in {} on port {port}",
                cluster.root().display()
            );
            println!("{}", cluster.url(pgbulk::local::SUPERUSER)?);
            Ok(0)
        }
        LocalAction::Stop => {
            if cluster.stop()? {
                println!("stopped local cluster in {}", cluster.root().display());
            } else {
                println!(
                    "local cluster in {} is not running",
                    cluster.root().display()
                );
            }
            Ok(0)
        }
        LocalAction::Status => match cluster.status()? {
            Status::Running { pid, port } => {
                println!("running (pid {pid}, port {port})");
                println!("directory: {}", cluster.root().display());
                println!("server:    {}", cluster.binaries().bindir.display());
                println!("url:       {}", cluster.url(pgbulk::local::SUPERUSER)?);
                Ok(0)
            }
            Status::Stopped => {
                println!("stopped ({})", cluster.root().display());
                Ok(exit::NOT_RUNNING)
            }
            Status::NotCreated => {
                println!(
                    "not created ({}); pgbulk local start creates it",
                    cluster.root().display()
                );
                Ok(exit::NOT_RUNNING)
            }
        },
        LocalAction::Url => {
            ensure_running(&cluster)?;
            println!("{}", cluster.url(pgbulk::local::SUPERUSER)?);
            Ok(0)
        }
        LocalAction::Psql { args } => {
            ensure_running(&cluster)?;
            let status = cluster
                .psql_command(pgbulk::local::SUPERUSER, &args)?
                .status()
                .context("cannot run psql")?;
            Ok(status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(exit::FAILURE))
        }
    }
}
