//! Where messages go: for people (`pgbulk: ...` lines on stderr, tracing at
//! the level `-v` asks for) or, with `--log-format json`, one JSON object
//! per event on stderr (the schema is in the README).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::args::{Cli, LogFormat};

/// `--log-format json` was given.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether messages are for people.
pub(crate) fn human() -> bool {
    !JSON.load(Ordering::Relaxed)
}

/// Sets up logging for `cli`'s flags.
pub(crate) fn init(cli: &Cli) {
    use tracing_subscriber::filter::LevelFilter;
    let json = cli.log_format == LogFormat::Json;
    JSON.store(json, Ordering::Relaxed);
    let level = match (cli.quiet, cli.verbose, json) {
        (true, _, _) => LevelFilter::ERROR,
        (false, 0, true) => LevelFilter::INFO,
        (false, 0, false) => LevelFilter::WARN,
        (false, 1, _) => LevelFilter::INFO,
        (false, 2, _) => LevelFilter::DEBUG,
        (false, _, _) => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        // Colours only for a terminal, and not with NO_COLOR set: a log
        // file, cron's mail or an Airflow task log gets plain text.
        use std::io::IsTerminal;
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        builder
            .with_target(cli.verbose > 1)
            .with_ansi(colour)
            .without_time()
            .init();
    }
}

/// Says `message` on stderr: `pgbulk: message` for people, a `message`
/// event in JSON.
pub(crate) fn say(message: &str) {
    if human() {
        eprintln!("pgbulk: {message}");
    } else {
        tracing::info!(event = "message", "{message}");
    }
}

/// Reports `error` (of `job`, in a pipeline) as a `pgbulk: error:` line
/// with the server's detail and hint (the cause chain, SQLSTATE and
/// context too with -v), or as an `error` event carrying the kind, the
/// location and the server's fields.
pub(crate) fn error(error: &anyhow::Error, job: Option<&str>) {
    let lib = error.downcast_ref::<pgbulk::Error>();
    let db = lib.and_then(pgbulk::Error::db_error);
    // What was detected of the input, as a report would have said it.
    for note in lib.map(pgbulk::Error::notes).unwrap_or_default() {
        say(note);
    }
    if !human() {
        let location = lib.and_then(pgbulk::Error::location);
        tracing::error!(
            event = "error",
            kind = lib
                .map(|e| format!("{:?}", e.kind()))
                .unwrap_or_else(|| "Other".to_owned()),
            exit_code = crate::exit_code(error),
            table = lib.and_then(pgbulk::Error::table),
            column = lib.and_then(pgbulk::Error::column),
            value = lib.and_then(pgbulk::Error::value),
            input = location.map(|l| l.input.as_str()),
            line = location.map(|l| l.line),
            field = location.and_then(|l| l.field),
            batch = lib.and_then(pgbulk::Error::batch),
            sqlstate = db.map(|d| d.code().code()),
            detail = db.and_then(|d| d.detail()),
            hint = db.and_then(|d| d.hint()),
            job,
            "{error}"
        );
        return;
    }
    let prefix = job.map(|j| format!("job {j}: ")).unwrap_or_default();
    eprintln!("pgbulk: {prefix}error: {error}");
    if let Some(db) = db {
        // Not again when the message says it already (a row named by line).
        if let Some(detail) = db.detail().filter(|d| !error.to_string().contains(d)) {
            eprintln!("  detail: {detail}");
        }
        if let Some(hint) = db.hint() {
            eprintln!("  hint: {hint}");
        }
    }
    if tracing::enabled!(tracing::Level::INFO) {
        for cause in error.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if let Some(db) = db {
            eprintln!("  sqlstate: {}", db.code().code());
            if let Some(context) = db.where_() {
                eprintln!("  context: {context}");
            }
        }
    }
}
