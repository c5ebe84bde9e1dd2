//! The `pgbulk` command: parses flags, sets up logging, calls the library and
//! maps its errors to the exit codes documented in the README.

mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pgbulk::conninfo::{Environment, Request};
use pgbulk::csv::Dialect;
use pgbulk::ingest::OnDuplicate;
use pgbulk::input::Source;
use pgbulk::load::{LoadMode, LoadOptions, Progress, Sample};
use pgbulk::local::{Cluster, Status};
use pgbulk::schema::TableName;
use pgbulk::target::LocalUse;
use pgbulk::{ErrorKind, target};

use crate::progress::thousands;

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

    /// Only errors and the final summary (no progress).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect, then print the target (without password), server version and latency.
    Ping,
    /// Load CSV files (or stdin; gzip and zstd recognised) into a table.
    Load(LoadArgs),
    /// Print the CREATE TABLE pgbulk would infer for a CSV file, without loading.
    Infer(InferArgs),
    /// Print the migration plan of a declared schema, without running it.
    Plan {
        /// The declared DDL (CREATE TABLE, CREATE INDEX, COMMENT ON).
        #[arg(long, value_name = "FILE.sql")]
        schema: PathBuf,
    },
    /// Manage pgbulk's own local PostgreSQL cluster (under $PGBULK_HOME).
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
}

/// How the input is written.
#[derive(Debug, Args)]
struct DialectArgs {
    /// Field delimiter: one byte, or \t (tab) (default: detected from the header and first lines among , ; tab |).
    #[arg(long, value_name = "C", value_parser = Dialect::parse_byte)]
    delimiter: Option<u8>,
    /// Quote character.
    #[arg(long, default_value = "\"", value_name = "C", value_parser = Dialect::parse_byte)]
    quote: u8,
    /// Escape character inside quotes (default: the quote, doubled).
    #[arg(long, value_name = "C", value_parser = Dialect::parse_byte)]
    escape: Option<u8>,
    /// The files have no header line (name the columns with --columns).
    #[arg(long)]
    no_header: bool,
    /// An unquoted field equal to this is NULL (default: an unquoted empty field).
    #[arg(long, value_name = "STRING")]
    null: Option<String>,
    /// Text encoding: utf-8, latin1, windows-1252, utf-16le, shift_jis, ...
    #[arg(long, default_value = "utf-8", value_name = "NAME")]
    encoding: String,
    /// Lines to skip before the header (or the data).
    #[arg(long, default_value_t = 0, value_name = "N")]
    skip_lines: u64,
    /// Column names for the fields, comma-separated (headerless files, or overriding the header).
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    columns: Option<Vec<String>>,
}

/// How column types are inferred for a table pgbulk creates.
#[derive(Debug, Args)]
struct InferenceArgs {
    /// Infer from the first N rows (default: 1 MiB from the start, middle and end of a file).
    #[arg(long, value_name = "N", conflicts_with = "sample_all")]
    sample_rows: Option<u64>,
    /// Infer from every row (reads a file twice).
    #[arg(long)]
    sample_all: bool,
    /// Column types overriding inference, e.g. --type code=text,amount=numeric(12,2).
    #[arg(long = "type", value_name = "COL=TYPE,...", value_parser = parse_type_overrides)]
    types: Vec<Vec<(String, String)>>,
}

/// A size in bytes: `N`, or with `K`, `M`, `G` (powers of 1024; `B`/`iB`
/// may follow).
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("expected a size like 64M, got \"{text}\""))?;
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("size \"{text}\" is out of range"))
}

/// `COL=TYPE,...`: commas inside a type's parentheses (`numeric(12,2)`)
/// belong to the type.
fn parse_type_overrides(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(|item| {
            let bad = || format!("expected COL=TYPE, got \"{item}\"");
            let (column, sql_type) = item.split_once('=').ok_or_else(bad)?;
            let (column, sql_type) = (column.trim(), sql_type.trim());
            if column.is_empty() || sql_type.is_empty() {
                return Err(bad());
            }
            Ok((column.to_owned(), sql_type.to_owned()))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Append,
    Upsert,
    Replace,
    ReplaceAtomic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnDuplicateArg {
    Last,
    First,
    Error,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Input files; none or - reads stdin.
    #[arg(value_name = "FILE")]
    files: Vec<String>,
    /// The target table: [SCHEMA.]TABLE.
    #[arg(long, short = 't', value_name = "TABLE")]
    table: String,
    #[command(flatten)]
    dialect: DialectArgs,
    #[command(flatten)]
    inference: InferenceArgs,
    /// Drop the table's shape and create it from --schema or from inference, swapping the new table in atomically at the end (grants and views kept).
    #[arg(long)]
    recreate: bool,
    /// Skip file columns the table lacks instead of failing.
    #[arg(long)]
    ignore_extra: bool,
    /// Declared DDL for the table: created if missing, migrated if different.
    #[arg(long, value_name = "FILE.sql")]
    schema: Option<PathBuf>,
    /// append, upsert, replace or replace-atomic (default: upsert when the table has a key, else append).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Upsert on these columns (default: the primary key).
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    key: Option<Vec<String>>,
    /// When rows of one batch repeat a key: keep the last, the first, or fail (error).
    #[arg(long, value_enum, default_value = "last", value_name = "WHICH")]
    on_duplicate: OnDuplicateArg,
    /// The longest field accepted (bytes, or with K, M, G); a longer one stops the load at its line.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    max_field_size: usize,
    /// Rows per batch; each batch commits.
    #[arg(long, default_value_t = pgbulk::load::DEFAULT_BATCH_ROWS, value_name = "N")]
    batch_rows: u64,
    /// Load everything in one transaction.
    #[arg(long)]
    single_transaction: bool,
    /// Bad rows to reject (with --reject-file) before failing.
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_errors: u64,
    /// Where rejected rows go, as they were in the input; reasons go to PATH.log.
    #[arg(long, value_name = "PATH")]
    reject_file: Option<PathBuf>,
    /// Load the inputs from the start, ignoring where an interrupted run stopped.
    #[arg(long)]
    restart: bool,
    /// Connections to load one big uncompressed file with (its halves at once).
    #[arg(long, default_value_t = 2, value_name = "N")]
    streams: usize,
}

#[derive(Debug, Args)]
struct InferArgs {
    /// The CSV file (or - for stdin).
    #[arg(value_name = "FILE")]
    file: String,
    /// The table name to use in the DDL.
    #[arg(long, short = 't', default_value = "imported", value_name = "TABLE")]
    table: String,
    #[command(flatten)]
    dialect: DialectArgs,
    #[command(flatten)]
    inference: InferenceArgs,
    /// Primary key columns for the DDL.
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    key: Option<Vec<String>>,
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
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e, verbose),
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
        Command::Load(args) => load(args, &request, &env, cli.quiet).await,
        Command::Infer(args) => infer(args),
        Command::Plan { schema } => plan(&schema, &request, &env).await,
    }
}

/// Exits with code 2 and clap's usage message: a flag combination that
/// cannot work.
fn usage_error(message: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn load_options(
    dialect: &DialectArgs,
    inference: &InferenceArgs,
    table: &str,
) -> anyhow::Result<LoadOptions> {
    let quote = dialect.quote;
    let parsed = Dialect {
        delimiter: dialect.delimiter.unwrap_or(b','),
        quote,
        escape: dialect.escape.unwrap_or(quote),
        null: dialect.null.clone().unwrap_or_default().into_bytes(),
    };
    if dialect.delimiter.is_some() {
        if let Err(why) = parsed.validate() {
            usage_error(&why);
        }
    }
    Ok(LoadOptions {
        detect_delimiter: dialect.delimiter.is_none(),
        sample: match (inference.sample_all, inference.sample_rows) {
            (true, _) => Sample::All,
            (false, Some(n)) => Sample::Rows(n),
            (false, None) => Sample::Parts,
        },
        types: inference.types.concat(),
        table: TableName::parse(table)?,
        dialect: parsed,
        header: !dialect.no_header,
        skip_lines: dialect.skip_lines,
        encoding: pgbulk::input::encoding(&dialect.encoding)?,
        columns: dialect.columns.clone(),
        ..LoadOptions::default()
    })
}

fn connect_target(
    request: &Request,
    env: &Environment,
) -> anyhow::Result<pgbulk::conninfo::ConnParams> {
    let target = target::resolve(request, env)?;
    if let Some((how, dir)) = &target.local {
        say_local(*how, dir);
    }
    Ok(target.params)
}

async fn load(
    args: LoadArgs,
    request: &Request,
    env: &Environment,
    quiet: bool,
) -> anyhow::Result<u8> {
    let mut opts = load_options(&args.dialect, &args.inference, &args.table)?;
    opts.sources = args.files.iter().map(|f| Source::from_arg(f)).collect();
    opts.recreate = args.recreate;
    opts.ignore_extra = args.ignore_extra;
    opts.schema_ddl = match &args.schema {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            pgbulk::Error::new(
                ErrorKind::Config,
                format!("cannot read {}: {e}", path.display()),
            )
        })?),
        None => None,
    };
    opts.mode = args.mode.map(|m| match m {
        ModeArg::Append => LoadMode::Append,
        ModeArg::Upsert => LoadMode::Upsert,
        ModeArg::Replace => LoadMode::Replace,
        ModeArg::ReplaceAtomic => LoadMode::ReplaceAtomic,
    });
    opts.key = args.key;
    opts.on_duplicate = match args.on_duplicate {
        OnDuplicateArg::Last => OnDuplicate::Last,
        OnDuplicateArg::First => OnDuplicate::First,
        OnDuplicateArg::Error => OnDuplicate::Error,
    };
    opts.batch_rows = args.batch_rows;
    opts.max_field_size = args.max_field_size.min(pgbulk::csv::MAX_FIELD);
    opts.single_transaction = args.single_transaction;
    opts.max_errors = args.max_errors;
    opts.reject_file = args.reject_file;
    opts.restart = args.restart;
    opts.streams = args.streams.max(1);
    say_stdin_terminal(&opts.sources);
    if opts.max_errors > 0 && opts.reject_file.is_none() {
        tracing::warn!("--max-errors without --reject-file: bad rows are skipped and only counted");
    }

    let params = connect_target(request, env)?;
    let client = pgbulk::connect::connect(&params).await?.client;
    let progress = Arc::new(Progress::default());
    let display = progress::Display::start(progress.clone(), quiet);
    let names: Vec<String> = opts.sources.iter().map(Source::name).collect();
    let inputs = if names.is_empty() {
        "stdin".to_owned()
    } else {
        names.join(", ")
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let load = pgbulk::load::load(client, &params, &opts, progress.clone());
    tokio::pin!(load);
    let outcome = tokio::select! {
        result = &mut load => Some(result),
        _ = tokio::signal::ctrl_c() => None,
        _ = sigterm.recv() => None,
    };
    display.finish().await;
    let Some(result) = outcome else {
        // Ask the server to stop the statement in flight, then let the load
        // see that error: a COMMIT that landed meanwhile is counted, the
        // batch in flight rolls back. A load that does not stop soon is
        // dropped (its transaction rolls back with its connection).
        progress.interrupt();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), progress.cancel(&params)).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut load).await;
        let rows = progress.rows_committed.load(Ordering::Relaxed);
        let batches = progress.batches_committed.load(Ordering::Relaxed);
        if opts.single_transaction || batches == 0 {
            eprintln!("pgbulk: interrupted: nothing was committed");
        } else {
            eprintln!(
                "pgbulk: interrupted: {} rows in {batches} batches were committed; the batch in flight was rolled back. Run the same command again to continue.",
                thousands(rows)
            );
        }
        return Ok(exit::INTERRUPTED);
    };
    let report = result?;
    if let Some(ddl) = report.inferred_ddl.as_ref().filter(|_| !quiet) {
        let sampled = report
            .sampled
            .as_ref()
            .map(pgbulk::load::Sampled::comment)
            .unwrap_or_default();
        eprintln!(
            "pgbulk: created {} from inferred types:\n{sampled}{ddl}",
            opts.table
        );
    }
    for m in &report.migrations {
        tracing::info!("migrated: {m}");
    }
    for note in report.notes.iter().filter(|_| !quiet) {
        eprintln!("pgbulk: {note}");
    }
    if let Some(why) = &report.nothing_to_load {
        println!("{why}");
        return Ok(0);
    }
    if report.already_loaded {
        println!(
            "{inputs} was loaded completely into {} by an earlier run with the same options, and the table has not been emptied or rewritten since; nothing to do (--restart loads it again)",
            opts.table
        );
        return Ok(0);
    }
    if let Some(rows) = report.resumed_after_rows {
        println!(
            "resumed after {} rows committed by an earlier run",
            thousands(rows)
        );
    }
    let rate = report.rows_read as f64 / report.seconds.max(0.001);
    let mut summary = format!(
        "loaded {inputs} into {}: {} rows read, {} inserted, {} updated, {} unchanged",
        opts.table,
        thousands(report.rows_read),
        thousands(report.inserted),
        thousands(report.updated),
        thousands(report.unchanged)
    );
    if report.deleted > 0 {
        summary.push_str(&format!(", {} deleted", thousands(report.deleted)));
    }
    if report.repeated > 0 {
        let kept = match opts.on_duplicate {
            OnDuplicate::First => "first",
            _ => "last",
        };
        summary.push_str(&format!(
            ", {} repeated a key already in their batch (the {kept} row per key was kept)",
            thousands(report.repeated)
        ));
    }
    summary.push_str(&format!(", {} rejected", thousands(report.rejected)));
    if report.rejected > 0 {
        if let Some(path) = &opts.reject_file {
            summary.push_str(&format!(" (in {})", path.display()));
        }
    }
    summary.push_str(&format!(
        "; {} batches in {:.1} s ({} rows/s)",
        report.batches,
        report.seconds,
        thousands(rate as u64)
    ));
    println!("{summary}");
    Ok(0)
}

fn infer(args: InferArgs) -> anyhow::Result<u8> {
    let mut opts = load_options(&args.dialect, &args.inference, &args.table)?;
    opts.key = args.key;
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
    let ddl = std::fs::read_to_string(schema).map_err(|e| {
        pgbulk::Error::new(
            ErrorKind::Config,
            format!("cannot read {}: {e}", schema.display()),
        )
    })?;
    let declaration = pgbulk::schema::Declaration::parse(&ddl)?;
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
        eprintln!("pgbulk: reading CSV from standard input (a terminal); Ctrl-D ends it");
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
