//! The `pgbulk` command: parses flags, sets up logging, calls the library and
//! maps its errors to the exit codes documented in the README.

mod args;
mod logs;
mod pipeline;
mod progress;
mod run;
mod settings;
mod status;
mod summary;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use clap::Parser;
use pgbulk::conninfo::{Environment, Request};
use pgbulk::input::Source;
use pgbulk::load::{LoadOptions, Progress};
use pgbulk::local::{Cluster, LocalUse, Status};
use pgbulk::{ErrorKind, endpoint};

#[cfg(feature = "export")]
use crate::args::ExportArgs;
use crate::args::{Cli, Command, InferArgs, LoadArgs, LocalAction, SyncArgs};

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
    pub(crate) const CONNECTION_LOST: u8 = 10;
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// glibc raises its mmap threshold whenever a large block is freed, after
/// which the 1 MiB COPY chunks come from per-thread heaps that keep growing
/// with the input. A fixed threshold keeps them mmap'd: memory stays flat
/// however big the load (measured: 17 MB for 1 M and for 17 M rows).
fn fix_malloc_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    fix_malloc_threshold();
    let cli = Cli::parse();
    QUIET.store(cli.quiet, Ordering::Relaxed);
    logs::init(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e)),
    };
    let on_worker = on_worker(&cli.command);
    let work = async {
        let outcome = run(cli).await;
        // The clients are dropped: let their sessions say goodbye.
        pgbulk::connect::close_sessions(std::time::Duration::from_secs(2)).await;
        outcome
    };
    let outcome = if on_worker {
        runtime.block_on(async {
            pgbulk::worker::on_worker(work)
                .await
                .unwrap_or_else(|e| Err(e.into()))
        })
    } else {
        runtime.block_on(work)
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

/// Reports the error (see [`logs::error`]) and exits with the code of its
/// kind.
fn fail(error: &anyhow::Error) -> ExitCode {
    logs::error(error, None);
    ExitCode::from(exit_code(error))
}

/// The exit code of an error's kind (documented in the README).
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    match error
        .downcast_ref::<pgbulk::Error>()
        .map(pgbulk::Error::kind)
    {
        Some(ErrorKind::Config) => exit::CONFIG,
        Some(ErrorKind::Connect) => exit::CONNECT,
        Some(ErrorKind::Auth) => exit::AUTH,
        Some(ErrorKind::Tls) => exit::TLS,
        Some(ErrorKind::Local) => exit::LOCAL,
        Some(ErrorKind::Data) => exit::DATA,
        Some(ErrorKind::ConnectionLost) => exit::CONNECTION_LOST,
        _ => exit::FAILURE,
    }
}

/// Whether `command` runs on a runtime worker rather than the main
/// thread ([`pgbulk::worker::on_worker`]): those that read a source
/// database's COPY stream (sync, export, and pipelines, which hold syncs).
/// `load` stays on the main thread, where reading a pipe on stdin that
/// waits holds no worker (a pipeline never reads stdin).
fn on_worker(command: &Command) -> bool {
    match command {
        Command::Sync(_) | Command::Run(_) => true,
        #[cfg(feature = "export")]
        Command::Export(_) => true,
        _ => false,
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let env = Environment::from_process();
    match cli.command {
        Command::Ping { connection } => ping(&connection.request(), &env).await,
        Command::Local { action } => local(action, &env),
        Command::Load(args) => {
            let request = args.connection.request();
            load(args, &request, &env, cli.quiet).await
        }
        Command::Sync(args) => sync(args, &env, cli.quiet).await,
        #[cfg(feature = "export")]
        Command::Export(args) => export(args, &env, cli.quiet).await,
        Command::Infer(args) => infer(args),
        Command::Plan { schema, connection } => plan(&schema, &connection.request(), &env).await,
        Command::Run(args) => run::run(args, &env, cli.quiet).await,
        Command::Status(args) => status::status(args, &env).await,
    }
}

/// Exits with code 2 and clap's usage message: a flag combination that
/// cannot work.
fn usage_error(message: &str) -> ! {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    cli.build();
    // The usage of the command given (`pgbulk load [OPTIONS] ...`).
    let given = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && cli.find_subcommand(a).is_some())
        .unwrap_or_default();
    match cli.find_subcommand_mut(&given) {
        Some(command) => command.error(clap::error::ErrorKind::ArgumentConflict, message),
        None => cli.error(clap::error::ErrorKind::ArgumentConflict, message),
    }
    .exit()
}

/// The settings the flags resolve to; a usage error exits 2.
fn settled(settings: Result<LoadOptions, settings::Refusal>) -> anyhow::Result<LoadOptions> {
    match settings {
        Ok(opts) => Ok(opts),
        Err(settings::Refusal::Usage(why)) => usage_error(&why),
        Err(settings::Refusal::Invalid(e)) => Err(e.into()),
    }
}

fn connect_target(
    request: &Request,
    env: &Environment,
) -> anyhow::Result<pgbulk::conninfo::ConnParams> {
    let endpoint = endpoint::resolve(request, env)?;
    if let Some((how, dir)) = &endpoint.local {
        say_local(*how, dir);
    }
    Ok(endpoint.params)
}

async fn load(
    args: LoadArgs,
    request: &Request,
    env: &Environment,
    quiet: bool,
) -> anyhow::Result<u8> {
    let opts = settled(settings::load_with_schema(&args))?;
    if opts.sources.is_empty() && !args.files.is_empty() {
        println!("no file matches {}: nothing to load", args.files.join(", "));
        return Ok(0);
    }
    say_stdin_terminal(&opts.sources);
    if opts.max_errors > 0 && opts.reject_file.is_none() {
        tracing::warn!("--max-errors without --reject-file: bad rows are skipped and only counted");
    }

    let params = connect_target(request, env)?;
    let watched = watched(quiet, &params, opts.single_transaction, |progress| {
        pgbulk::load::load_retrying(&params, &opts, progress)
    });
    let report = match watched.await? {
        Some(result) => result?,
        None => return Ok(exit::INTERRUPTED),
    };
    if opts.dry_run {
        for line in report.nothing_to_load.iter().chain(&report.plan) {
            println!("{line}");
        }
        return Ok(0);
    }
    if !quiet {
        for line in summary::said_on_stderr(&report, &opts) {
            logs::say(&line);
        }
    }
    for m in &report.migrations {
        tracing::info!("migrated: {m}");
    }
    println!("{}", summary::outcome(&report, &opts));
    Ok(0)
}

/// Runs `work` (given its progress) under the progress display to its end,
/// or until Ctrl-C or SIGTERM (`None`): then the server is asked to stop the
/// statement in flight on the work's connections (to `params`) and the work
/// sees that error, so a COMMIT that landed meanwhile is counted and the
/// batch in flight rolls back; what committed is said on stderr. Work that
/// does not stop soon is dropped (its transaction rolls back with its
/// connection).
async fn watched<T, F>(
    quiet: bool,
    params: &pgbulk::conninfo::ConnParams,
    single_transaction: bool,
    work: impl FnOnce(Arc<Progress>) -> F,
) -> anyhow::Result<Option<T>>
where
    F: std::future::Future<Output = T>,
{
    let progress = Arc::new(Progress::default());
    let display = progress::Display::start(progress.clone(), quiet);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let work = work(progress.clone());
    tokio::pin!(work);
    let outcome = tokio::select! {
        result = &mut work => Some(result),
        _ = tokio::signal::ctrl_c() => None,
        _ = sigterm.recv() => None,
    };
    display.finish().await;
    if outcome.is_none() {
        progress.interrupt();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), progress.cancel(params)).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut work).await;
        let rows = progress.rows_committed.load(Ordering::Relaxed);
        let batches = progress.batches_committed.load(Ordering::Relaxed);
        logs::say(&summary::interrupted(rows, batches, single_transaction));
    }
    Ok(outcome)
}

async fn sync(args: SyncArgs, env: &Environment, quiet: bool) -> anyhow::Result<u8> {
    let opts = match settings::sync_with_schema(&args) {
        Ok(opts) => opts,
        Err(settings::Refusal::Usage(why)) => usage_error(&why),
        Err(settings::Refusal::Invalid(e)) => return Err(e.into()),
    };
    let source_params = pgbulk::conninfo::resolve(&args.source.request(), env)?;
    let params = connect_target(&args.connection.request(), env)?;
    let watched = watched(quiet, &params, false, |progress| {
        pgbulk::sync::sync(&source_params, &params, &opts, progress)
    });
    let report = match watched.await? {
        Some(result) => result?,
        None => return Ok(exit::INTERRUPTED),
    };
    if opts.dry_run {
        println!("columns (destination <- source):");
        for m in &report.mapping {
            println!("  {m}");
        }
        for line in &report.plan {
            println!("{line}");
        }
        return Ok(0);
    }
    for m in &report.mapping {
        tracing::info!("column {m}");
    }
    for m in report.load.migrations.iter().filter(|_| !quiet) {
        logs::say(m);
    }
    for n in report.notes.iter().filter(|_| !quiet) {
        logs::say(n);
    }
    if let Some((from, next)) = &report.watermarks {
        tracing::info!(
            "read from {}; the next sync starts at {}",
            from.as_deref().unwrap_or("the beginning"),
            next.as_deref().unwrap_or("the beginning")
        );
    }
    println!("{}", summary::synced(&report, &opts));
    Ok(0)
}

#[cfg(feature = "export")]
async fn export(args: ExportArgs, env: &Environment, quiet: bool) -> anyhow::Result<u8> {
    let opts = match settings::export(&args) {
        Ok(opts) => opts,
        Err(settings::Refusal::Usage(why)) => usage_error(&why),
        Err(settings::Refusal::Invalid(e)) => return Err(e.into()),
    };
    let params = connect_target(&args.source.request(), env)?;
    let watched = watched(quiet, &params, false, |progress| {
        pgbulk::export::export(&params, &opts, progress)
    });
    let report = match watched.await? {
        Some(result) => result?,
        None => return Ok(exit::INTERRUPTED),
    };
    let total = report.tables.len();
    let mut first_failure = None;
    let mut failed = Vec::new();
    for (table, outcome) in report.tables {
        match outcome {
            Ok(done) if opts.dry_run => {
                println!("{table} (columns: source -> destination):");
                for m in &done.mapping {
                    println!("  {m}");
                }
                for line in &done.plan {
                    println!("{line}");
                }
            }
            Ok(done) => {
                for m in &done.mapping {
                    tracing::info!("{table}: column {m}");
                }
                for n in done.notes.iter().filter(|_| !quiet) {
                    logs::say(&format!("{table}: {n}"));
                }
                println!("{}", summary::exported(&done));
            }
            Err(e) => {
                println!("{table}: failed: {e}");
                failed.push(table);
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        None => Ok(0),
        // One table: its error is the run's.
        Some(e) if total == 1 => Err(anyhow::Error::new(e)),
        Some(e) if failed.len() == total => Err(anyhow::Error::new(e)
            .context(format!("all {total} tables failed ({})", failed.join(", ")))),
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "{} of {total} tables failed ({}); the others were exported",
            failed.len(),
            failed.join(", ")
        ))),
    }
}

fn infer(args: InferArgs) -> anyhow::Result<u8> {
    let opts = settled(settings::infer(&args))?;
    let source = Source::from_arg(&args.file);
    say_stdin_terminal(std::slice::from_ref(&source));
    let ddl = pgbulk::load::infer_source(&source, &opts, &opts.table)?;
    print!("{ddl}");
    Ok(0)
}

async fn plan(
    schema: &std::path::Path,
    request: &Request,
    env: &Environment,
) -> anyhow::Result<u8> {
    let declaration = pgbulk::schema::Declaration::read(schema)?;
    let params = connect_target(request, env)?;
    let mut client = pgbulk::connect::connect(&params).await?.client;
    let plan = pgbulk::plan::plan(&mut client, &declaration).await?;
    print!("{plan}");
    Ok(0)
}

async fn ping(request: &Request, env: &Environment) -> anyhow::Result<u8> {
    let params = &connect_target(request, env)?;
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

/// Says that standard input is read when it is a terminal (where a silent
/// wait looks like a hang).
fn say_stdin_terminal(sources: &[Source]) {
    let reads_stdin = sources.is_empty() || sources.contains(&Source::Stdin);
    // SAFETY: isatty only inspects the descriptor.
    let terminal = unsafe { libc::isatty(0) } == 1;
    if reads_stdin && terminal && !quiet() {
        logs::say("reading CSV from standard input (a terminal); Ctrl-D ends it");
    }
}

/// `--quiet`: only errors and the final summary are printed.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

fn say_local(how: LocalUse, dir: &std::path::Path) {
    if quiet() {
        return;
    }
    let what = match how {
        LocalUse::Running => "running",
        LocalUse::Started => "started it",
        LocalUse::Created => "created and started it",
    };
    logs::say(&format!(
        "no connection configured (--db, --profile or PG* variables); using the local cluster in {} ({what})",
        dir.display()
    ));
}

fn local(action: LocalAction, env: &Environment) -> anyhow::Result<u8> {
    let cluster = Cluster::persistent(env)?;
    let ensure_running = |cluster: &Cluster| -> anyhow::Result<()> {
        let how = cluster.ensure_running()?;
        if how != LocalUse::Running && !quiet() {
            logs::say(&format!(
                "{} the local cluster in {}",
                if how == LocalUse::Created {
                    "created and started"
                } else {
                    "started"
                },
                cluster.root().display()
            ));
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
        LocalAction::Remove => {
            if cluster.remove()? {
                println!("removed local cluster in {}", cluster.root().display());
            } else {
                println!("no local cluster in {}", cluster.root().display());
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
