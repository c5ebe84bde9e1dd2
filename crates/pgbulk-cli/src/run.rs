//! `pgbulk run`: the jobs of a pipeline file, `--jobs` at a time; a
//! summary table at the end, and the worst job's exit code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pgbulk::conninfo::{ConnParams, Environment};
use pgbulk::load::{LoadOptions, Progress};
use pgbulk::sync::SyncOptions;
use tracing::Instrument as _;

use crate::args::{Command, RunArgs};
use crate::pipeline::{self, Job};
use crate::settings::{self, Refusal};
use crate::{exit, exit_code, logs};

/// A job ready to run: its options and connections resolved.
struct Planned {
    name: String,
    kind: &'static str,
    target: ConnParams,
    work: Work,
}

enum Work {
    Load(LoadOptions),
    /// No file matches the job's patterns: nothing to load.
    NoFiles(String),
    Sync(Box<SyncOptions>, ConnParams),
    /// Exports from the job's target (its source).
    #[cfg(feature = "export")]
    Export(Box<pgbulk::export::ExportOptions>),
}

/// What a job did, for the summary.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) read: u64,
    pub(crate) inserted: u64,
    pub(crate) updated: u64,
    pub(crate) unchanged: u64,
    pub(crate) deleted: u64,
    pub(crate) rejected: u64,
    pub(crate) seconds: f64,
    /// `ok`, `nothing new`, `failed: ...`, `interrupted`, `not started`.
    pub(crate) status: String,
    /// The exit code this job alone would have had.
    pub(crate) code: u8,
}

impl Outcome {
    fn new(name: &str, kind: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            read: 0,
            inserted: 0,
            updated: 0,
            unchanged: 0,
            deleted: 0,
            rejected: 0,
            seconds: 0.0,
            status: String::new(),
            code: 0,
        }
    }

    fn counted(mut self, report: &pgbulk::load::LoadReport, read: u64) -> Self {
        self.read = read;
        self.inserted = report.inserted;
        self.updated = report.updated;
        self.unchanged = report.unchanged;
        self.deleted = report.deleted;
        self.rejected = report.rejected;
        self.seconds = report.seconds;
        self
    }
}

/// Runs `args.file`'s jobs; see the module documentation.
pub(crate) async fn run(args: RunArgs, env: &Environment, quiet: bool) -> anyhow::Result<u8> {
    let lookup = |name: &str| std::env::var(name).ok();
    let pipeline = pipeline::read(&args.file, &lookup)?;
    for name in &args.only {
        if !pipeline.jobs.iter().any(|j| j.name == *name) {
            let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(pgbulk::Error::new(
                pgbulk::ErrorKind::Config,
                format!(
                    "--only names `{name}`, which {} does not have (its jobs: {})",
                    args.file.display(),
                    names.join(", ")
                ),
            )
            .into());
        }
    }
    // Everything is checked and resolved before anything runs.
    let mut planned = Vec::new();
    for job in pipeline
        .jobs
        .iter()
        .filter(|j| pipeline::selected(j, &args.only))
    {
        planned.push(plan(job, &pipeline.path, env, args.dry_run)?);
    }
    if args.dry_run {
        for p in &planned {
            dry_run(p).await?;
        }
        return Ok(0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progresses: Vec<Arc<Progress>> = planned.iter().map(|_| Arc::default()).collect();
    let planned: Arc<Vec<Planned>> = Arc::new(planned);
    // Workers take the jobs in the file's order.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.jobs.clamp(1, planned.len().max(1)) {
        let (stop, next, planned, all) = (
            stop.clone(),
            next.clone(),
            planned.clone(),
            progresses.clone(),
        );
        let fail_fast = args.fail_fast;
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = planned.get(index) else {
                    return done;
                };
                if stop.load(Ordering::SeqCst) {
                    let mut outcome = Outcome::new(&job.name, job.kind);
                    outcome.status = "not started (--fail-fast)".to_owned();
                    outcome.code = exit::FAILURE;
                    done.push((index, outcome));
                    continue;
                }
                let span = tracing::info_span!("job", job = %job.name, kind = job.kind);
                let outcome = execute(job, all[index].clone(), quiet)
                    .instrument(span)
                    .await;
                if outcome.code != 0 && fail_fast && !stop.swap(true, Ordering::SeqCst) {
                    stop_all(&planned, &all).await;
                }
                done.push((index, outcome));
            }
        });
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; progresses.len()];
    let mut interrupted = false;
    loop {
        tokio::select! {
            finished = tasks.join_next() => match finished {
                Some(Ok(done)) => {
                    for (index, outcome) in done {
                        outcomes[index] = Some(outcome);
                    }
                }
                Some(Err(e)) => return Err(anyhow::anyhow!("a job's task failed: {e}")),
                None => break,
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => interrupted = true,
            _ = sigterm.recv(), if !interrupted => interrupted = true,
        }
        if interrupted && !stop.swap(true, Ordering::SeqCst) {
            logs::say(
                "interrupted: stopping every job (each rolls back its batch in flight; the rerun continues)",
            );
            stop_all(&planned, &progresses).await;
        }
    }
    let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
    println!("{}", table(&outcomes));
    let worst = outcomes.iter().map(|o| o.code).max().unwrap_or(0);
    Ok(if interrupted {
        exit::INTERRUPTED
    } else {
        worst
    })
}

/// Stops every running job: no further row is read, and the statements
/// in flight are cancelled (their batches roll back).
async fn stop_all(planned: &[Planned], progresses: &[Arc<Progress>]) {
    for p in progresses {
        p.interrupt();
    }
    for (job, p) in planned.iter().zip(progresses) {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), p.cancel(&job.target)).await;
    }
}

/// `job` with its options and connections resolved.
fn plan(
    job: &Job,
    file: &std::path::Path,
    env: &Environment,
    dry_run: bool,
) -> anyhow::Result<Planned> {
    let refused = |r: Refusal| -> anyhow::Error {
        let why = match r {
            Refusal::Usage(why) => why,
            Refusal::Invalid(e) => e.message().to_owned(),
        };
        pgbulk::Error::new(
            pgbulk::ErrorKind::Config,
            format!("{}:{}: job `{}`: {why}", file.display(), job.line, job.name),
        )
        .into()
    };
    let in_job = |e: pgbulk::Error| -> anyhow::Error {
        pgbulk::Error::new(
            e.kind(),
            format!(
                "{}:{}: job `{}`: {}",
                file.display(),
                job.line,
                job.name,
                e.message()
            ),
        )
        .into()
    };
    let (request, work) = match &job.command {
        Command::Load(args) => {
            if args.files.is_empty() || args.files.iter().any(|f| f == "-") {
                return Err(refused(Refusal::Usage(
                    "a load job names its files (files = [\"landing/*.csv\"]); standard input is not read in a pipeline".to_owned(),
                )));
            }
            let mut opts = settings::load_with_schema(args).map_err(refused)?;
            opts.dry_run = dry_run;
            let work = if opts.sources.is_empty() {
                Work::NoFiles(format!("no file matches {}", args.files.join(", ")))
            } else {
                Work::Load(opts)
            };
            (args.connection.request(), work)
        }
        Command::Sync(args) => {
            let mut opts = settings::sync_with_schema(args).map_err(refused)?;
            opts.dry_run = dry_run;
            let source = pgbulk::conninfo::resolve(&args.source.request(), env).map_err(in_job)?;
            (
                args.connection.request(),
                Work::Sync(Box::new(opts), source),
            )
        }
        #[cfg(feature = "export")]
        Command::Export(args) => {
            let mut opts = settings::export(args).map_err(refused)?;
            opts.dry_run = dry_run;
            (args.source.request(), Work::Export(Box::new(opts)))
        }
        _ => unreachable!("pipelines hold load, sync and export jobs"),
    };
    let target = pgbulk::endpoint::resolve(&request, env)
        .map_err(in_job)?
        .params;
    Ok(Planned {
        name: job.name.clone(),
        kind: job.kind,
        target,
        work,
    })
}

/// Prints what `p` would do.
async fn dry_run(p: &Planned) -> anyhow::Result<()> {
    match &p.work {
        #[cfg(feature = "export")]
        Work::Export(opts) => println!("== {} ({}) {} -> {}", p.name, p.kind, p.target, opts.to),
        _ => println!("== {} ({}) -> {}", p.name, p.kind, p.target),
    }
    match &p.work {
        Work::NoFiles(why) => println!("{why}: nothing to load"),
        Work::Load(opts) => {
            let report = pgbulk::load::load_retrying(&p.target, opts, Arc::default()).await?;
            for line in report.nothing_to_load.iter().chain(&report.plan) {
                println!("{line}");
            }
        }
        Work::Sync(opts, source) => {
            println!("source: {source}");
            let report = pgbulk::sync::sync(source, &p.target, opts, Arc::default()).await?;
            println!("columns (destination <- source):");
            for m in &report.mapping {
                println!("  {m}");
            }
            for line in &report.plan {
                println!("{line}");
            }
        }
        #[cfg(feature = "export")]
        Work::Export(opts) => {
            let report = pgbulk::export::export(&p.target, opts, Arc::default()).await?;
            for (table, outcome) in report.tables {
                let done = outcome?;
                println!("{table} (columns: source -> destination):");
                for m in &done.mapping {
                    println!("  {m}");
                }
                for line in &done.plan {
                    println!("{line}");
                }
            }
        }
    }
    println!();
    Ok(())
}

/// Runs one job to its end, saying so.
async fn execute(job: &Planned, progress: Arc<Progress>, quiet: bool) -> Outcome {
    let started = std::time::Instant::now();
    tracing::info!(
        event = "job_start",
        "job {} ({}) started",
        job.name,
        job.kind
    );
    let mut outcome = Outcome::new(&job.name, job.kind);
    let result: Result<Outcome, pgbulk::Error> = match &job.work {
        Work::NoFiles(why) => {
            outcome.status = format!("nothing to load ({why})");
            Ok(outcome.clone())
        }
        Work::Load(opts) => pgbulk::load::load_retrying(&job.target, opts, progress.clone())
            .await
            .map(|r| {
                let mut o = outcome.clone().counted(&r, r.rows_read);
                o.status = if r.already_loaded {
                    "nothing new (loaded before)".to_owned()
                } else if let Some(why) = &r.nothing_to_load {
                    format!("nothing to load ({why})")
                } else if r.skipped.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("ok ({} loaded before)", r.skipped.len())
                };
                o
            }),
        Work::Sync(opts, source) => pgbulk::sync::sync(source, &job.target, opts, progress.clone())
            .await
            .map(|r| {
                let mut o = outcome.clone().counted(&r.load, r.rows_read);
                o.status = if r.rows_read == 0 {
                    "nothing new".to_owned()
                } else {
                    "ok".to_owned()
                };
                o
            }),
        #[cfg(feature = "export")]
        Work::Export(opts) => {
            match pgbulk::export::export(&job.target, opts, progress.clone()).await {
                Ok(report) => exported(outcome.clone(), report),
                Err(e) => Err(e),
            }
        }
    };
    let mut outcome = match result {
        Ok(o) => o,
        Err(_) if progress.is_interrupted() => {
            outcome.status = "interrupted".to_owned();
            outcome.code = exit::INTERRUPTED;
            outcome
        }
        Err(e) => {
            let error = anyhow::Error::new(e);
            outcome.code = exit_code(&error);
            outcome.status = format!("failed: {error}");
            logs::error(&error, Some(&job.name));
            outcome
        }
    };
    if outcome.seconds == 0.0 {
        outcome.seconds = started.elapsed().as_secs_f64();
    }
    tracing::info!(
        event = "job_end",
        status = %outcome.status,
        rows_read = outcome.read,
        inserted = outcome.inserted,
        updated = outcome.updated,
        unchanged = outcome.unchanged,
        deleted = outcome.deleted,
        rejected = outcome.rejected,
        seconds = outcome.seconds,
        exit_code = outcome.code,
        "job {} ended: {}",
        outcome.name,
        outcome.status
    );
    if !quiet && logs::human() {
        eprintln!("pgbulk: job {}: {}", outcome.name, outcome.status);
    }
    outcome
}

#[cfg(feature = "export")]
/// The outcome of an export job: its rows, and its tables that failed
/// (the first one's error decides the exit code).
fn exported(
    mut outcome: Outcome,
    report: pgbulk::export::ExportReport,
) -> Result<Outcome, pgbulk::Error> {
    let mut failed = Vec::new();
    let mut first = None;
    let mut files = 0;
    for (table, result) in report.tables {
        match result {
            Ok(done) => {
                outcome.read += done.rows;
                files += usize::from(done.file.is_some());
                // Rows written into a file are new there; a MERGE says
                // what it inserted and updated.
                match done.merged.and_then(|m| m.split) {
                    Some((inserted, updated)) => {
                        outcome.inserted += inserted;
                        outcome.updated += updated;
                    }
                    None if done.merged.is_none() => outcome.inserted += done.rows,
                    None => {}
                }
            }
            Err(e) => {
                failed.push(table);
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first {
        return Err(pgbulk::Error::new(
            e.kind(),
            format!("{} failed: {}", failed.join(", "), e.message()),
        ));
    }
    outcome.status = if files == 0 {
        "nothing new".to_owned()
    } else {
        "ok".to_owned()
    };
    Ok(outcome)
}

/// The summary table.
pub(crate) fn table(outcomes: &[Outcome]) -> String {
    let header = [
        "job",
        "kind",
        "read",
        "inserted",
        "updated",
        "unchanged",
        "deleted",
        "rejected",
        "seconds",
        "status",
    ];
    let rows: Vec<[String; 10]> = outcomes
        .iter()
        .map(|o| {
            [
                o.name.clone(),
                o.kind.to_owned(),
                o.read.to_string(),
                o.inserted.to_string(),
                o.updated.to_string(),
                o.unchanged.to_string(),
                o.deleted.to_string(),
                o.rejected.to_string(),
                format!("{:.1}", o.seconds),
                o.status.lines().next().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let numeric = (2..9).contains(&i);
            let cell = if numeric {
                format!("{cell:>w$}")
            } else if i + 1 == cells.len() {
                cell.clone()
            } else {
                format!("{cell:<w$}")
            };
            out.push_str(&cell);
            if i + 1 < cells.len() {
                out.push_str("  ");
            }
        }
        out
    };
    let mut out = line(&header.map(str::to_owned));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lines_up() {
        let mut a = Outcome::new("sales", "load");
        a.inserted = 1234;
        a.status = "ok".to_owned();
        let mut b = Outcome::new("users-from-app", "sync");
        b.status = "failed: boom\ndetail".to_owned();
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("job             kind  read  inserted"));
        assert!(lines[1].contains("sales           load     0      1234"));
        assert!(lines[2].ends_with("failed: boom"));
    }
}
