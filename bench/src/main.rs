//! pgbulk against `psql`, in one run on one server (a throwaway cluster, or
//! `PGBULK_BENCH_DATABASE_URL`).
//!
//! `pgbulk-bench ingest [ROWS]` (default 5,000,000 narrow rows: text, text,
//! date, int):
//!
//! - append into an empty table: `psql \copy` of a CSV file against the
//!   ingest engine reading the same file;
//! - upsert into a table holding every key, with changed values: `\copy`
//!   into a TEMP table + `INSERT ... ON CONFLICT DO UPDATE` against the
//!   engine, then by the `pgbulk` binary's `load` with the connections
//!   its first rows choose, on one and on two (`--streams 2`: each key's
//!   rows on one);
//! - the same upsert again with unchanged data (the engine, and `load` on
//!   one and on two connections).
//!
//! `pgbulk-bench load [ROWS]` runs the `pgbulk` binary (built beside this
//! one) against `psql \copy` of the same file into the same kind of empty
//! table: narrow rows (text, text, date, int; `;`-delimited with a header,
//! like the sales file) and wide rows (12 columns: bigint, text, varchar,
//! int, bigint, numeric(12,2), float8, bool, date, timestamptz, uuid,
//! jsonb), and the narrow rows into an empty table keyed on (point of
//! sale, product, date), with pgbulk's peak RSS; the narrow rows as a
//! landing folder of eight files (`pgbulk load 'DIR/*.csv'` against one
//! `psql` running `\copy` of each in turn); and the narrow load at 1 M
//! and 17 M rows to show memory does not grow with the input. ROWS sets the narrow count
//! (default 5 M; wide is a fifth of it).
//!
//! `pgbulk-bench sync [ROWS]` copies a narrow (ROWS, default 5 M) and a
//! wide (a fifth) table from one database into an empty one on the same
//! server: `pgbulk sync` (creating the destination) against `psql -c
//! "\copy (SELECT ...) TO STDOUT" | psql -c "\copy t FROM STDIN"` into a
//! created table; then `pgbulk sync` again with nothing changed (every row
//! re-read, none rewritten), with pgbulk's peak RSS.
//!
//! `pgbulk-bench export [ROWS]` (default 1 M wide rows: the sync
//! benchmark's wide table) exports a table with `pgbulk export --to
//! parquet://DIR` against `psql -c "\copy (SELECT * FROM wide) TO FILE
//! WITH CSV"`: seconds, the files' sizes and pgbulk's peak RSS; then the
//! same export of five times the rows, whose peak RSS should match.
//!
//! `pgbulk-bench all [ROWS]` runs the four in turn, and with
//! `PGBULK_BENCH_PYTHON` naming a Python that has pgbulk (built with
//! `maturin develop --release`), SQLAlchemy, psycopg, psycopg2,
//! `pg-bulk-ingest==0.1.3` and pyarrow, `bench/python/ingest.py`
//! (`pgbulk.ingest` of narrow tuples against pg-bulk-ingest, a fifth of
//! ROWS; skipped when pg-bulk-ingest is missing) and
//! `bench/python/write.py` (`pgbulk.write` of a wide pyarrow Table, a
//! fifth of ROWS, against `psql \copy` of the same rows as CSV).
//! `pgbulk-bench python [ROWS]` (default 1 M) runs those two alone.
//!
//! Each timed workload runs `--runs N` times (default 3), pgbulk and its
//! reference alternating, each run into tables of its own; the medians
//! are reported (peak RSS: the largest). Each prints seconds and the
//! ratio pgbulk / psql (lower is better), then one table of every
//! workload: pgbulk, the reference tool measured in the same run, the
//! ratio, pgbulk's peak RSS and the bar; with `--json` also that table
//! as a JSON array, for machines.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use pgbulk::codec::Value;
use pgbulk::conninfo::{self, Environment, Request};
use pgbulk::ingest::{Batch, BatchWatermark, Options, Row, ingest};
use pgbulk::local::Cluster;
use pgbulk::schema::Declaration;

/// The ingest benchmark's reference for upserts.
const HAND_WRITTEN: &str = "\\copy + INSERT ... ON CONFLICT";
/// The sync benchmark's reference.
const PSQL_PIPE: &str = "psql \\copy TO piped into \\copy FROM, then CREATE INDEX";

/// Rows per batch (each batch is streamed, so this bounds transactions,
/// not memory).
const BATCH_ROWS: usize = 10_000_000;

/// What `--help` prints (the module documentation says more).
const USAGE: &str = "usage: pgbulk-bench [ingest|load|sync|export|python|all] [ROWS] [--runs N] [--json]\n\
                     Times pgbulk against the reference tool on a throwaway cluster \
                     (or PGBULK_BENCH_DATABASE_URL); see the README's Benchmarks section.";

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| ["-h", "--help", "help"].contains(&a.as_str()))
    {
        println!("{USAGE}");
        return Ok(());
    }
    let json = args.iter().any(|a| a == "--json");
    let for_all = args.iter().any(|a| a == MEASURES_FLAG);
    args.retain(|a| a != "--json" && a != MEASURES_FLAG);
    if let Some(at) = args.iter().position(|a| a == "--runs") {
        let n: usize = args
            .get(at + 1)
            .context("--runs needs a number")?
            .parse()
            .context("--runs needs a number")?;
        RUNS.store(n.max(1), Ordering::Relaxed);
        args.drain(at..at + 2);
    }
    let what = args.first().map(String::as_str).unwrap_or("ingest");
    let rows: usize = args
        .get(1)
        .map(|r| r.replace('_', "").parse())
        .transpose()?
        .unwrap_or(5_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match what {
        "ingest" => runtime.block_on(bench_ingest(rows))?,
        "load" => bench_load(args.get(1).is_some().then_some(rows))?,
        "sync" => bench_sync(rows)?,
        "export" => bench_export(args.get(1).map_or(1_000_000, |_| rows))?,
        "python" => {
            let python = std::env::var_os("PGBULK_BENCH_PYTHON")
                .context("PGBULK_BENCH_PYTHON must name a Python that has pgbulk")?;
            // ROWS as given (default 1 M): these are the Python rows.
            let rows = args.get(1).map_or(1_000_000, |_| rows);
            bench_python_ingest(&python, rows)?;
            bench_python_write(&python, rows)?;
        }
        "all" => {
            // Each in a process of its own: a child's peak RSS includes
            // its parent's at the moment it was spawned, so the parent
            // stays small.
            for part in ["load", "sync", "ingest", "export"] {
                let mut cmd = Command::new(std::env::current_exe()?);
                // The export's count is of wide rows: a fifth.
                let count = args.get(1).map(|_| {
                    if part == "export" {
                        (rows / 5).max(1).to_string()
                    } else {
                        rows.to_string()
                    }
                });
                cmd.arg(part)
                    .args(count)
                    .arg(MEASURES_FLAG)
                    .args(["--runs", &runs().to_string()]);
                let out = cmd
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .with_context(|| format!("running the {part} benchmark"))?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                let (shown, last) = stdout.trim_end().rsplit_once('\n').unwrap_or(("", &stdout));
                println!("{shown}");
                if !out.status.success() {
                    bail!("the {part} benchmark failed");
                }
                for m in serde_json::from_str::<Vec<serde_json::Value>>(last)? {
                    record(Measure::from_json(&m)?);
                }
            }
            if let Some(python) = std::env::var_os("PGBULK_BENCH_PYTHON") {
                bench_python_ingest(&python, (rows / 5).max(1))?;
                bench_python_write(&python, (rows / 5).max(1))?;
            }
        }
        other => {
            bail!("unknown benchmark {other:?}\n{USAGE}")
        }
    }
    if for_all {
        let all = MEASURES
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .map(Measure::to_json)
            .collect::<Vec<_>>();
        println!("{}", serde_json::to_string(&all)?);
        return Ok(());
    }
    print_table(json)
}

/// Times each timed workload runs (`--runs N`, default 3): pgbulk and
/// its reference alternate, and the medians are reported.
static RUNS: AtomicUsize = AtomicUsize::new(3);

fn runs() -> usize {
    RUNS.load(Ordering::Relaxed)
}

/// The median of `xs` (the mean of the middle two for an even count).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The largest of `xs` (peak RSS over the runs).
fn largest(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

/// `all` runs each part with this flag: it then prints its measures as
/// one line of JSON at the end instead of the table.
const MEASURES_FLAG: &str = "--measures-json";

/// Runs `bench/python/{script}` with `python` on a throwaway server (a
/// count of rows, `--runs`, `--json`), prints what it printed and returns
/// its last line, the result as JSON.
fn python_bench(
    python: &std::ffi::OsStr,
    script: &str,
    rows: usize,
) -> anyhow::Result<serde_json::Value> {
    let server = server()?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .arg(rows.to_string())
        .args(["--runs", &runs().to_string(), "--json"])
        .env("PGBULK_BENCH_DB", &server.url)
        .output()
        .with_context(|| format!("running bench/python/{script}"))?;
    if !out.status.success() {
        bail!(
            "bench/python/{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("bench/python/{script} printed no result: {last}"))
}

/// `bench/python/write.py`: `pgbulk.write` of a wide Arrow table against
/// `psql \copy` of the same rows as CSV.
fn bench_python_write(python: &std::ffi::OsStr, rows: usize) -> anyhow::Result<()> {
    let result = python_bench(python, "write.py", rows)?;
    let seconds = |k: &str| result.get(k).and_then(serde_json::Value::as_f64);
    let (Some(ours), Some(theirs)) = (seconds("pgbulk_seconds"), seconds("reference_seconds"))
    else {
        bail!("bench/python/write.py printed no seconds: {result}");
    };
    report(
        &format!("Python pgbulk.write, wide Arrow table ({rows} rows)"),
        ours,
        (PYTHON_REFERENCE, theirs),
        0.5,
        seconds("peak_rss_mb"),
    );
    Ok(())
}

/// `bench/python/ingest.py`: `pgbulk.ingest` of narrow tuples from a
/// generator against pg-bulk-ingest 0.1.3, the first load and the
/// re-upsert of the same rows; skipped (saying so) when `python` cannot
/// import `pg_bulk_ingest`. The bars are speed-ups: 5x and 7x.
fn bench_python_ingest(python: &std::ffi::OsStr, rows: usize) -> anyhow::Result<()> {
    let has_reference = Command::new(python)
        .args(["-c", "import pg_bulk_ingest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_reference {
        println!(
            "bench/python/ingest.py skipped: {} cannot import pg_bulk_ingest (pip install pg-bulk-ingest==0.1.3 psycopg2-binary)",
            python.to_string_lossy()
        );
        return Ok(());
    }
    let result = python_bench(python, "ingest.py", rows)?;
    let seconds = |k: &str| result.get(k).and_then(serde_json::Value::as_f64);
    for (what, ours, theirs, faster) in [
        (
            "first load",
            "first_seconds",
            "reference_first_seconds",
            5.0,
        ),
        (
            "re-upsert, unchanged",
            "again_seconds",
            "reference_again_seconds",
            7.0,
        ),
    ] {
        let (Some(ours), Some(theirs)) = (seconds(ours), seconds(theirs)) else {
            bail!("bench/python/ingest.py printed no seconds: {result}");
        };
        let label = format!("Python pgbulk.ingest, tuples, {what} ({rows} rows)");
        let (ratio, bar) = (ours / theirs, 1.0 / faster);
        println!(
            "{label:<44} pgbulk {ours:>7.2} s   pg-bulk-ingest {theirs:>7.2} s   ratio {ratio:>5.2}x ({:.1}x faster)   bar >= {faster}x faster {}",
            theirs / ours,
            if ratio <= bar { "ok" } else { "MISSED" }
        );
        record(Measure {
            workload: label,
            pgbulk: ours,
            reference: PG_BULK_INGEST,
            reference_seconds: Some(theirs),
            ratio: Some(ratio),
            peak_rss_mb: seconds("peak_rss_mb"),
            bar: format!("<= {bar:.2}x ({faster}x faster)"),
            ok: ratio <= bar,
        });
    }
    Ok(())
}

/// One workload's outcome.
#[derive(Debug, Clone)]
struct Measure {
    workload: String,
    /// pgbulk's seconds.
    pgbulk: f64,
    /// The reference tool, as run in the same process.
    reference: &'static str,
    /// Its seconds, when the workload has a reference.
    reference_seconds: Option<f64>,
    /// What the ratio compares against, when not the reference's seconds.
    ratio: Option<f64>,
    /// pgbulk's peak RSS in MB (the `pgbulk` process; for the ingest
    /// workloads, this benchmark's own process, which runs the engine).
    peak_rss_mb: Option<f64>,
    /// The bar the ratio (or the seconds) must meet, in words.
    bar: String,
    ok: bool,
}

impl Measure {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.workload,
            "pgbulk_seconds": self.pgbulk,
            "reference": self.reference,
            "reference_seconds": self.reference_seconds,
            "ratio": self.ratio,
            "peak_rss_mb": self.peak_rss_mb,
            "bar": self.bar,
            "ok": self.ok,
        })
    }

    fn from_json(v: &serde_json::Value) -> anyhow::Result<Self> {
        let text = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
        };
        let number = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        Ok(Self {
            workload: text("workload").to_owned(),
            pgbulk: number("pgbulk_seconds").context("pgbulk_seconds")?,
            reference: REFERENCES
                .iter()
                .find(|r| **r == text("reference"))
                .copied()
                .unwrap_or(""),
            reference_seconds: number("reference_seconds"),
            ratio: number("ratio"),
            peak_rss_mb: number("peak_rss_mb"),
            bar: text("bar").to_owned(),
            ok: v
                .get("ok")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// The reference tools, by name.
const REFERENCES: [&str; 9] = [
    PSQL_COPY,
    PSQL_COPY_EACH,
    HAND_WRITTEN,
    PSQL_PIPE,
    "the full sync",
    PYTHON_REFERENCE,
    PG_BULK_INGEST,
    PSQL_COPY_TO_CSV,
    CSV_SIZE,
];
const PSQL_COPY: &str = "psql \\copy";
const PSQL_COPY_EACH: &str = "psql \\copy of each file in turn";
/// The export benchmark's reference, and what its file size is compared
/// with.
const PSQL_COPY_TO_CSV: &str = "psql \\copy TO csv";
const CSV_SIZE: &str = "the CSV's size";
const PYTHON_REFERENCE: &str = "psql \\copy of the rows as CSV";
/// The Python tuples' reference.
const PG_BULK_INGEST: &str = "pg-bulk-ingest 0.1.3";

/// Every workload measured in this run, in order.
static MEASURES: Mutex<Vec<Measure>> = Mutex::new(Vec::new());

fn record(m: Measure) {
    if let Ok(mut all) = MEASURES.lock() {
        all.push(m);
    }
}

/// Prints the run's table (and, with `json`, the same as JSON).
fn print_table(json: bool) -> anyhow::Result<()> {
    let all = MEASURES
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    println!();
    println!("| workload | pgbulk | reference | ratio | peak RSS | bar |");
    println!("|---|---|---|---|---|---|");
    for m in &all {
        let reference = m.reference_seconds.map_or_else(
            || m.reference.to_owned(),
            |s| format!("{s:.2} s ({})", m.reference),
        );
        println!(
            "| {} | {:.2} s | {reference} | {} | {} | {} {} |",
            m.workload,
            m.pgbulk,
            m.ratio.map_or_else(String::new, |r| format!("{r:.2}x")),
            m.peak_rss_mb
                .map_or_else(String::new, |r| format!("{r:.0} MB")),
            m.bar,
            if m.ok { "ok" } else { "MISSED" }
        );
    }
    if json {
        let rows: Vec<serde_json::Value> = all.iter().map(Measure::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// The server: a throwaway cluster unless `PGBULK_BENCH_DATABASE_URL` is set.
struct Server {
    url: String,
    psql: PathBuf,
    _cluster: Option<Cluster>,
}

fn server() -> anyhow::Result<Server> {
    if let Ok(url) = std::env::var("PGBULK_BENCH_DATABASE_URL") {
        return Ok(Server {
            url,
            psql: PathBuf::from("psql"),
            _cluster: None,
        });
    }
    let cluster = Cluster::throwaway()?;
    let url = cluster.tcp_url("postgres")?;
    let psql = cluster.binaries().program("psql");
    Ok(Server {
        url,
        psql,
        _cluster: Some(cluster),
    })
}

/// Runs `psql -c` for each command in one session; returns seconds.
fn psql(server: &Server, commands: &[&str]) -> anyhow::Result<f64> {
    let mut cmd = Command::new(&server.psql);
    cmd.arg("-X")
        .arg("-q")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg(&server.url);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let started = Instant::now();
    let out = cmd.output().context("running psql")?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

/// Writes `rows` narrow rows as CSV; `stock_shift` changes the values.
fn write_csv(path: &Path, rows: usize, stock_shift: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for i in 0..rows {
        let pos = 100_000 + i % 1000;
        let product = 17_240_503_100_000u64 + (i / 1000) as u64;
        let day = 1 + (i * 7) % 28;
        let stock = (i + stock_shift) % 97;
        writeln!(out, "{pos},{product},2019-08-{day:02},{stock}")?;
    }
    out.flush()?;
    Ok(())
}

/// Streams the CSV as batches of `BATCH_ROWS` rows for `table`: rows are
/// read as the engine consumes them, so memory stays flat.
fn batches(
    path: &Path,
    table: &str,
) -> anyhow::Result<impl Iterator<Item = pgbulk::Result<Batch>>> {
    let reader = Arc::new(Mutex::new(BufReader::with_capacity(
        1 << 20,
        File::open(path)?,
    )));
    let table: Arc<str> = Arc::from(table);
    let mut number = 0u64;
    Ok(std::iter::from_fn(move || {
        let more = reader
            .lock()
            .ok()
            .and_then(|mut r| r.fill_buf().ok().map(|b| !b.is_empty()))
            .unwrap_or(false);
        if !more {
            return None;
        }
        number += 1;
        let (reader, table) = (reader.clone(), table.clone());
        let mut left = BATCH_ROWS;
        let rows = std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut line = String::new();
            let mut r = reader.lock().ok()?;
            match r.read_line(&mut line) {
                Ok(0) => None,
                Ok(_) => {
                    let values = line
                        .trim_end()
                        .split(',')
                        .map(|f| Value::Text(f.to_owned()))
                        .collect();
                    Some(Ok(Row {
                        table: table.clone(),
                        values,
                    }))
                }
                Err(e) => Some(Err(pgbulk::Error::new(
                    pgbulk::ErrorKind::Io,
                    e.to_string(),
                ))),
            }
        });
        Some(Ok(Batch {
            high_watermark: BatchWatermark::Value(Some(serde_json::json!(number))),
            metadata: serde_json::Value::Null,
            rows: pgbulk::ingest::Rows::values(rows),
            resume: None,
        }))
    }))
}

async fn pgbulk_ingest(server: &Server, ddl: &str, csv: &Path, table: &str) -> anyhow::Result<f64> {
    let request = Request {
        db: Some(server.url.clone()),
        profile: None,
    };
    let params = conninfo::resolve(&request, &Environment::empty().with_os_user("postgres"))?;
    let mut client = pgbulk::connect::connect(&params).await?.client;
    let declaration = Declaration::parse(ddl)?;
    let source = batches(csv, table)?;
    let started = Instant::now();
    ingest(&mut client, &declaration, |_| source, &Options::default()).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Prints and records a workload measured against `reference` (its
/// seconds `theirs`): the ratio must be at most `bar`.
fn report(
    label: &str,
    ours: f64,
    (reference, theirs): (&'static str, f64),
    bar: f64,
    rss: Option<f64>,
) {
    let ratio = ours / theirs;
    println!(
        "{label:<44} pgbulk {ours:>7.2} s   psql {theirs:>7.2} s   ratio {ratio:>5.2}x   bar <= {bar:.2}x {}",
        if ratio <= bar { "ok" } else { "MISSED" }
    );
    record(Measure {
        workload: label.to_owned(),
        pgbulk: ours,
        reference,
        reference_seconds: Some(theirs),
        ratio: Some(ratio),
        peak_rss_mb: rss,
        bar: format!("<= {bar:.2}x"),
        ok: ratio <= bar,
    });
}

/// A scratch directory for the generated files (removed by the caller).
fn work_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgbulk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `cmd`, returning seconds and the child's peak RSS in MB.
fn timed(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("spawning")?;
    let pid = i32::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: rusage is a plain C struct; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            let _ = e.read_to_string(&mut err);
        }
        bail!("{:?} failed: {err}", cmd.get_program());
    }
    Ok((secs, usage.ru_maxrss as f64 / 1024.0))
}

/// The `pgbulk` binary built beside this benchmark.
fn pgbulk_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("pgbulk");
    if !bin.is_file() {
        bail!(
            "{} not found: cargo build --release -p pgbulk-cli first",
            bin.display()
        );
    }
    Ok(bin)
}

/// Splits the CSV file `path` (a header, then one record a line) into
/// `parts` files in `dir`, each with the header, read and written a line
/// at a time (a child's peak RSS counts this process's at its start) and
/// synced (no write-back during the timed loads); returns their paths.
fn split_csv(path: &Path, dir: &Path, parts: usize) -> anyhow::Result<Vec<PathBuf>> {
    use std::io::BufRead;
    std::fs::create_dir_all(dir)?;
    let open = || -> anyhow::Result<_> { Ok(std::io::BufReader::new(File::open(path)?)) };
    let records = open()?.lines().count().saturating_sub(1);
    let per_part = records.div_ceil(parts.max(1)).max(1);
    let mut lines = open()?.lines();
    let header = lines.next().context("a header line")??;
    let mut paths = Vec::new();
    let mut out: Option<BufWriter<File>> = None;
    for (i, line) in lines.enumerate() {
        if i % per_part == 0 {
            if let Some(done) = out.take() {
                done.into_inner()?.sync_all()?;
            }
            let part = dir.join(format!("part-{:02}.csv", i / per_part));
            let mut file = BufWriter::with_capacity(1 << 20, File::create(&part)?);
            writeln!(file, "{header}")?;
            out = Some(file);
            paths.push(part);
        }
        if let Some(file) = out.as_mut() {
            writeln!(file, "{}", line?)?;
        }
    }
    if let Some(done) = out.take() {
        done.into_inner()?.sync_all()?;
    }
    Ok(paths)
}

fn write_narrow(path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(out, "PointOfSale;Product;Date;Stock")?;
    for i in 0..rows {
        let day = 1 + (i * 7) % 28;
        writeln!(
            out,
            "{};{};2019-08-{day:02};{}",
            100_000 + i % 1000,
            17_240_503_100_000u64 + (i / 1000) as u64,
            i % 97
        )?;
    }
    out.flush()?;
    Ok(())
}

fn write_wide(path: &Path, rows: usize) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        out,
        "id,name,code,qty,ref,amount,ratio,active,day,at,uid,attrs"
    )?;
    for i in 0..rows {
        let day = 1 + i % 28;
        writeln!(
            out,
            "{i},name {i},C{:05},{},{},{}.{:02},{},{},2020-03-{day:02},2020-03-{day:02} {:02}:{:02}:{:02}+00,{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x},\"{{\"\"k\"\": {}, \"\"tags\"\": [\"\"a\"\", \"\"b\"\"]}}\"",
            i % 100_000,
            i % 1000,
            i * 31,
            i % 10_000,
            i % 100,
            (i as f64) / 7.0,
            i % 2 == 0,
            i % 24,
            i % 60,
            (i * 7) % 60,
            i as u32,
            i % 65_536,
            i % 4096,
            (i * 3) % 4096,
            i as u64 * 7919,
            i % 10
        )?;
    }
    out.flush()?;
    Ok(())
}

fn bench_load(rows: Option<usize>) -> anyhow::Result<()> {
    let narrow_rows = rows.unwrap_or(5_000_000);
    let wide_rows = (narrow_rows / 5).max(1);
    let server = server()?;
    let bin = pgbulk_binary()?;
    let dir = work_dir()?;
    let narrow = dir.join("narrow.csv");
    let wide = dir.join("wide.csv");
    write_narrow(&narrow, narrow_rows)?;
    write_wide(&wide, wide_rows)?;
    let file = |p: &Path| p.display().to_string().replace('\'', "''");
    println!("load benchmark: {narrow_rows} narrow rows, {wide_rows} wide rows");
    let narrow_cols = "(pointofsale text, product text, date date, stock int)";
    let wide_cols = "(id bigint, name text, code varchar(20), qty int, ref bigint, amount numeric(12,2), ratio float8, \
                     active bool, day date, at timestamptz, uid uuid, attrs jsonb)";
    let pgbulk_load = |table: &str, path: &Path, extra: &[&str]| -> anyhow::Result<(f64, f64)> {
        let mut cmd = Command::new(&bin);
        cmd.args(["load", "--quiet", "--db", &server.url, "--table", table])
            .arg(path)
            .args(extra);
        timed(&mut cmd)
    };
    // An empty table with a key: `\copy` maintains the key row by row,
    // pgbulk builds it once the rows are in.
    let keyed_cols = "(pointofsale text, product text, date date, stock int, \
                      PRIMARY KEY (pointofsale, product, date))";
    for (label, name, cols, path, extra, bar) in [
        (
            "narrow",
            "narrow",
            narrow_cols,
            &narrow,
            vec!["--delimiter", ";"],
            0.5,
        ),
        ("wide", "wide", wide_cols, &wide, vec![], 0.42),
        (
            "narrow, empty keyed table",
            "keyed",
            keyed_cols,
            &narrow,
            vec!["--delimiter", ";"],
            0.5,
        ),
    ] {
        let (delimiter, rows) = if path == &narrow {
            (", DELIMITER ';'", narrow_rows)
        } else {
            ("", wide_rows)
        };
        let (mut theirs, mut ours, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs() {
            // A table of its own per run: an earlier run's ledger is not
            // this one's.
            let previous = run.checked_sub(1).map_or_else(
                || format!("{name}_pgbulk"),
                |r| format!("{name}_pgbulk_{r}"),
            );
            psql(
                &server,
                &[
                    &format!("DROP TABLE IF EXISTS {name}_psql, {previous}"),
                    &format!("CREATE TABLE {name}_psql {cols}"),
                    &format!("CREATE TABLE {name}_pgbulk_{run} {cols}"),
                    "CHECKPOINT",
                ],
            )?;
            theirs.push(psql(
                &server,
                &[&format!(
                    "\\copy {name}_psql FROM '{}' (FORMAT csv, HEADER{delimiter})",
                    file(path)
                )],
            )?);
            psql(&server, &["CHECKPOINT"])?;
            let (secs, peak) = pgbulk_load(&format!("{name}_pgbulk_{run}"), path, &extra)?;
            ours.push(secs);
            rss.push(peak);
        }
        report(
            &format!("load {label} ({rows} rows)"),
            median(&ours),
            (PSQL_COPY, median(&theirs)),
            bar,
            Some(largest(&rss)),
        );
        // Gone before the next workload: autovacuum would work on them
        // during it.
        psql(
            &server,
            &[&format!(
                "DROP TABLE {name}_psql, {name}_pgbulk_{}",
                runs() - 1
            )],
        )?;
    }
    // A landing folder: the narrow rows in eight files, each under the
    // size a file needs to be read in halves, into an empty table without
    // a key: pgbulk loads them two at a time, psql one after another.
    let folder = dir.join("folder");
    let parts = split_csv(&narrow, &folder, 8)?;
    let (mut theirs, mut ours, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs() {
        psql(
            &server,
            &[
                &format!(
                    "DROP TABLE IF EXISTS folder_psql, folder_pgbulk_{}",
                    run.saturating_sub(1)
                ),
                &format!("CREATE TABLE folder_psql {narrow_cols}"),
                &format!("CREATE TABLE folder_pgbulk_{run} {narrow_cols}"),
                "CHECKPOINT",
            ],
        )?;
        let copies: Vec<String> = parts
            .iter()
            .map(|p| {
                format!(
                    "\\copy folder_psql FROM '{}' (FORMAT csv, HEADER, DELIMITER ';')",
                    file(p)
                )
            })
            .collect();
        let copies: Vec<&str> = copies.iter().map(String::as_str).collect();
        theirs.push(psql(&server, &copies)?);
        psql(&server, &["CHECKPOINT"])?;
        let pattern = folder.join("*.csv");
        let (secs, peak) = pgbulk_load(
            &format!("folder_pgbulk_{run}"),
            &pattern,
            &["--delimiter", ";"],
        )?;
        ours.push(secs);
        rss.push(peak);
    }
    psql(
        &server,
        &[&format!(
            "DROP TABLE folder_psql, folder_pgbulk_{}",
            runs() - 1
        )],
    )?;
    report(
        &format!("load narrow, 8 files ({narrow_rows} rows)"),
        median(&ours),
        (PSQL_COPY_EACH, median(&theirs)),
        0.5,
        Some(largest(&rss)),
    );
    std::fs::remove_dir_all(&folder)?;
    // Memory against input size: 1 M and 17 M narrow rows.
    let mut rss = Vec::new();
    for n in [1_000_000, 17_000_000] {
        let path = dir.join(format!("narrow-{n}.csv"));
        write_narrow(&path, n)?;
        psql(
            &server,
            &[&format!("CREATE TABLE mem_{n} {narrow_cols}"), "CHECKPOINT"],
        )?;
        let (secs, peak) = pgbulk_load(&format!("mem_{n}"), &path, &["--delimiter", ";"])?;
        println!("narrow {n:>9} rows: {secs:6.2} s, peak RSS {peak:.0} MB");
        record(Measure {
            workload: format!("load narrow ({n} rows): memory"),
            pgbulk: secs,
            reference: "",
            reference_seconds: None,
            ratio: None,
            peak_rss_mb: Some(peak),
            bar: "< 100 MB".to_owned(),
            ok: peak < 100.0,
        });
        rss.push(peak);
        std::fs::remove_file(&path)?;
    }
    let growth = rss[1] / rss[0];
    println!(
        "peak RSS 17 M / 1 M rows: {growth:.2}x (bar <= 1.20x, under 200 MB) {}",
        if growth <= 1.2 && rss[1] < 200.0 {
            "ok"
        } else {
            "MISSED"
        }
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `pgbulk load`'s `--streams` in the ingest benchmark: none (the first
/// rows choose), one, two.
const LOAD_STREAMS: [Option<&str>; 3] = [None, Some("1"), Some("2")];

/// How a load of [`LOAD_STREAMS`] is named in the report.
fn streams_label(streams: Option<&str>) -> String {
    streams.map_or_else(|| "(default)".to_owned(), |n| format!("--streams {n}"))
}

async fn bench_ingest(rows: usize) -> anyhow::Result<()> {
    let server = server()?;
    let dir = work_dir()?;
    let original = dir.join("narrow.csv");
    let changed = dir.join("narrow-changed.csv");
    write_csv(&original, rows, 0)?;
    write_csv(&changed, rows, 1)?;
    let file = |p: &Path| p.display().to_string().replace('\'', "''");
    println!(
        "ingest benchmark: {rows} narrow rows (text, text, date, int), batches of {BATCH_ROWS}"
    );

    // Append into empty tables (one of pgbulk's per run, so that no run
    // finds an earlier one's watermark).
    let cols = "(pos text, product text, day date, stock int";
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    for run in 0..runs() {
        psql(
            &server,
            &[
                "DROP TABLE IF EXISTS append_psql",
                &format!("CREATE TABLE append_psql {cols})"),
                "CHECKPOINT",
            ],
        )?;
        theirs.push(psql(
            &server,
            &[&format!(
                "\\copy append_psql FROM '{}' (FORMAT csv)",
                file(&original)
            )],
        )?);
        if let Some(previous) = run.checked_sub(1) {
            psql(&server, &[&format!("DROP TABLE append_pgbulk_{previous}")])?;
        }
        psql(&server, &["CHECKPOINT"])?;
        ours.push(
            pgbulk_ingest(
                &server,
                &format!("CREATE TABLE append_pgbulk_{run} {cols});"),
                &original,
                &format!("append_pgbulk_{run}"),
            )
            .await?,
        );
    }
    report(
        &format!("ingest append ({rows} rows)"),
        median(&ours),
        (PSQL_COPY, median(&theirs)),
        0.9,
        Some(peak_rss_mb()),
    );

    // Upsert into tables holding every key, each filled anew per run.
    let keyed = format!("{cols}, PRIMARY KEY (pos, product, day))");
    let fill = |t: &str| {
        psql(
            &server,
            &[
                &format!("DROP TABLE IF EXISTS {t}"),
                &format!("CREATE TABLE {t} {keyed}"),
                &format!("\\copy {t} FROM '{}' (FORMAT csv)", file(&original)),
                &format!("VACUUM ANALYZE {t}"),
                "CHECKPOINT",
            ],
        )
    };
    let hand_written = |target: &str| {
        vec![
            format!("CREATE TEMP TABLE s {cols})"),
            format!("\\copy s FROM '{}' (FORMAT csv)", file(&changed)),
            format!(
                "INSERT INTO {target} SELECT * FROM s ON CONFLICT (pos, product, day) DO UPDATE SET stock = EXCLUDED.stock"
            ),
        ]
    };
    let commands = hand_written("upsert_psql");
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    let bin = pgbulk_binary()?;
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    let mut by_load: [(Vec<f64>, Vec<f64>); 3] = Default::default();
    let mut by_load_unchanged: [(Vec<f64>, Vec<f64>); 3] = Default::default();
    let mut last = String::new();
    for run in 0..runs() {
        fill("upsert_psql")?;
        theirs.push(psql(&server, &commands)?);
        let t = format!("upsert_pgbulk_{run}");
        if !last.is_empty() {
            psql(&server, &[&format!("DROP TABLE {last}")])?;
        }
        fill(&t)?;
        ours.push(
            pgbulk_ingest(&server, &format!("CREATE TABLE {t} {keyed};"), &changed, &t).await?,
        );
        last = t;
        // The same upsert by `pgbulk load`: with the connections its first
        // rows choose, on one and on two (each key's rows on one); then the
        // same rows again, unchanged.
        for (i, ((secs, rss), (same_secs, same_rss))) in by_load
            .iter_mut()
            .zip(by_load_unchanged.iter_mut())
            .enumerate()
        {
            let t = format!("upsert_load{i}");
            fill(&t)?;
            let load = || {
                let mut cmd = Command::new(&bin);
                cmd.args(["load", "--quiet", "--db", &server.url, "--table", &t])
                    .args(["--no-header", "--columns", "pos,product,day,stock"])
                    .arg("--restart")
                    .arg(&changed);
                if let Some(n) = LOAD_STREAMS[i] {
                    cmd.args(["--streams", n]);
                }
                timed(&mut cmd)
            };
            let (s, r) = load()?;
            secs.push(s);
            rss.push(r);
            psql(&server, &[&format!("VACUUM {t}"), "CHECKPOINT"])?;
            let (s, r) = load()?;
            same_secs.push(s);
            same_rss.push(r);
        }
    }
    psql(
        &server,
        &["DROP TABLE upsert_load0, upsert_load1, upsert_load2"],
    )?;
    let changed_seconds = median(&theirs);
    report(
        &format!("ingest upsert, values changed ({rows} rows)"),
        median(&ours),
        (HAND_WRITTEN, changed_seconds),
        0.55,
        Some(peak_rss_mb()),
    );
    for (streams, (secs, rss)) in LOAD_STREAMS.into_iter().zip(&by_load) {
        report(
            &format!("load {} upsert, values changed", streams_label(streams)),
            median(secs),
            (HAND_WRITTEN, changed_seconds),
            0.55,
            Some(largest(rss)),
        );
    }

    // The same rows again: every value unchanged.
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        psql(
            &server,
            &[
                "VACUUM upsert_psql",
                &format!("VACUUM {last}"),
                "CHECKPOINT",
            ],
        )?;
        theirs.push(psql(&server, &commands)?);
        ours.push(
            pgbulk_ingest(
                &server,
                &format!("CREATE TABLE {last} {keyed};"),
                &changed,
                &last,
            )
            .await?,
        );
    }
    let unchanged_seconds = median(&theirs);
    report(
        &format!("ingest upsert, values unchanged ({rows} rows)"),
        median(&ours),
        (HAND_WRITTEN, unchanged_seconds),
        0.12,
        Some(peak_rss_mb()),
    );
    for (streams, (secs, rss)) in LOAD_STREAMS.into_iter().zip(&by_load_unchanged) {
        report(
            &format!("load {} upsert, values unchanged", streams_label(streams)),
            median(secs),
            (HAND_WRITTEN, unchanged_seconds),
            0.12,
            Some(largest(rss)),
        );
    }

    println!("peak RSS of pgbulk-bench: {:.0} MB", peak_rss_mb());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `server`'s URL for database `name`.
fn db_url(server: &Server, name: &str) -> String {
    match server.url.split_once('?') {
        Some((base, query)) => format!(
            "{}/{name}?{query}",
            base.rsplit_once('/').map_or(base, |(b, _)| b)
        ),
        None => format!(
            "{}/{name}",
            server
                .url
                .rsplit_once('/')
                .map_or(server.url.as_str(), |(b, _)| b)
        ),
    }
}

/// The sync benchmark's wide table's columns.
const WIDE_COLUMNS: &str = "(id bigint PRIMARY KEY, name text, code varchar(20), qty int, ref bigint, amount numeric(12,2), \
     ratio float8, active bool, day date, at timestamptz, uid uuid, attrs jsonb, updated_at timestamptz NOT NULL)";

/// Fills the table `name` (of [`WIDE_COLUMNS`]) with `rows` rows.
fn wide_rows_sql(name: &str, rows: usize) -> String {
    format!(
        "INSERT INTO {name} SELECT i, 'name ' || i, 'c' || i % 1000, i % 100, i * 31, (i % 100000) / 100.0, \
         i / 7.0, i % 2 = 0, date '2020-01-01' + i % 1000, timestamptz '2020-01-01 00:00+00' + i * interval '1 second', \
         md5(i::text)::uuid, jsonb_build_object('k', i % 10, 'tag', 'x' || i % 7), \
         timestamptz '2020-01-01 00:00+00' + i * interval '1 ms' FROM generate_series(1, {rows}) i"
    )
}

fn bench_export(rows: usize) -> anyhow::Result<()> {
    let server = server()?;
    let bin = pgbulk_binary()?;
    println!(
        "export benchmark: {rows} wide rows, then {} for memory",
        rows * 5
    );
    let dir = std::env::temp_dir().join(format!("pgbulk-bench-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    psql(
        &server,
        &[
            &format!("CREATE TABLE wide {WIDE_COLUMNS}"),
            &wide_rows_sql("wide", rows),
            &format!("CREATE TABLE wide5 {WIDE_COLUMNS}"),
            &wide_rows_sql("wide5", rows * 5),
            "VACUUM ANALYZE",
            "CHECKPOINT",
        ],
    )?;
    let csv = dir.join("wide.csv");
    let export = |table: &str, out: &Path| {
        timed(Command::new(&bin).args([
            "export",
            "--quiet",
            "--from",
            &server.url,
            "--table",
            table,
            "--to",
            &format!("parquet://{}", out.display()),
        ]))
    };
    let out = dir.join("parquet");
    let (mut theirs, mut ours, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        theirs.push(psql(
            &server,
            &[&format!(
                "\\copy (SELECT * FROM wide) TO '{}' WITH CSV",
                csv.display()
            )],
        )?);
        // Each run writes a new export (its state is in the directory).
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        let (secs, peak) = export("wide", &out)?;
        ours.push(secs);
        rss.push(peak);
    }
    let (ours, rss) = (median(&ours), largest(&rss));
    report(
        "export wide to Parquet",
        ours,
        (PSQL_COPY_TO_CSV, median(&theirs)),
        1.0,
        Some(rss),
    );
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len() as f64 / 1e6);
    let (csv_mb, parquet_mb) = (size(&csv)?, size(&out.join("wide/run-000001.parquet"))?);
    let share = parquet_mb / csv_mb;
    println!(
        "files: CSV {csv_mb:.0} MB, Parquet {parquet_mb:.0} MB ({share:.2} of the CSV, bar <= 0.33 {})",
        if share <= 0.34 { "ok" } else { "MISSED" }
    );
    record(Measure {
        workload: format!("export wide: Parquet {parquet_mb:.0} MB / CSV {csv_mb:.0} MB"),
        pgbulk: ours,
        reference: CSV_SIZE,
        reference_seconds: None,
        ratio: Some(share),
        peak_rss_mb: None,
        bar: "<= 0.33".to_owned(),
        ok: share <= 0.34,
    });
    let (five, rss5) = export("wide5", &dir.join("parquet5"))?;
    println!(
        "export of {} wide rows: {five:.2} s, peak RSS {rss5:.0} MB (at {rows}: {rss:.0} MB; bar < 150 MB and flat {})",
        rows * 5,
        if rss5 < 150.0 && rss5 < rss * 1.2 + 5.0 {
            "ok"
        } else {
            "MISSED"
        }
    );
    record(Measure {
        workload: format!("export wide x5 ({} rows), peak RSS", rows * 5),
        pgbulk: five,
        reference: "",
        reference_seconds: None,
        ratio: None,
        peak_rss_mb: Some(rss5),
        bar: "< 150 MB, flat".to_owned(),
        ok: rss5 < 150.0 && rss5 < rss * 1.2 + 5.0,
    });
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn bench_sync(rows: usize) -> anyhow::Result<()> {
    let narrow_rows = rows;
    let wide_rows = (rows / 5).max(1);
    let server = server()?;
    let bin = pgbulk_binary()?;
    println!("sync benchmark: {narrow_rows} narrow rows, {wide_rows} wide rows");
    psql(
        &server,
        &[
            "CREATE DATABASE sync_src",
            "CREATE DATABASE sync_psql",
            "CREATE DATABASE sync_pgbulk",
        ],
    )?;
    let src = Server {
        url: db_url(&server, "sync_src"),
        psql: server.psql.clone(),
        _cluster: None,
    };
    let narrow = "(id bigint PRIMARY KEY, pointofsale text, product text, date date, stock int, \
                  updated_at timestamptz NOT NULL)";
    let wide = WIDE_COLUMNS;
    psql(
        &src,
        &[
            &format!("CREATE TABLE narrow {narrow}"),
            &format!(
                "INSERT INTO narrow SELECT i, (100000 + i % 1000)::text, (17240503100000 + i / 1000)::text, \
                 date '2019-08-01' + (i * 7) % 28, i % 97, timestamptz '2020-01-01 00:00+00' + i * interval '1 ms' \
                 FROM generate_series(1, {narrow_rows}) i"
            ),
            "CREATE INDEX ON narrow (updated_at)",
            &format!("CREATE TABLE wide {wide}"),
            &wide_rows_sql("wide", wide_rows),
            "CREATE INDEX ON wide (updated_at)",
            "VACUUM ANALYZE",
            "CHECKPOINT",
        ],
    )?;
    let dst_psql = Server {
        url: db_url(&server, "sync_psql"),
        psql: server.psql.clone(),
        _cluster: None,
    };
    let dst_pgbulk = db_url(&server, "sync_pgbulk");
    let dst_pgbulk_server = Server {
        url: dst_pgbulk.clone(),
        psql: server.psql.clone(),
        _cluster: None,
    };
    for (label, cols, bar) in [("narrow", narrow, 0.6), ("wide", wide, 0.5)] {
        let sync = |extra: &[&str]| {
            psql(&server, &["CHECKPOINT"])?;
            timed(
                Command::new(&bin)
                    .args([
                        "sync",
                        "--quiet",
                        "--from",
                        &src.url,
                        "--table",
                        label,
                        "--db",
                        &dst_pgbulk,
                    ])
                    .args(extra),
            )
        };
        // Per run: seconds and peak RSS of the pipe, the full sync, the
        // full sync on two jobs, the incremental run after 1% changed and
        // the one with nothing new.
        let mut theirs = Vec::new();
        let mut ours: [(Vec<f64>, Vec<f64>); 4] = Default::default();
        for run in 0..runs() {
            psql(
                &dst_psql,
                &[
                    &format!("DROP TABLE IF EXISTS {label}"),
                    &format!("CREATE TABLE {label} {cols}"),
                ],
            )?;
            // The source's index too, as `pgbulk sync` creates it.
            let pipe = format!(
                "{p} -X -q -v ON_ERROR_STOP=1 '{src}' -c '\\copy (SELECT * FROM {label}) TO STDOUT' | \
                 {p} -X -q -v ON_ERROR_STOP=1 '{dst}' -c '\\copy {label} FROM STDIN' && \
                 {p} -X -q -v ON_ERROR_STOP=1 '{dst}' -c 'CREATE INDEX ON {label} (updated_at)'",
                p = server.psql.display(),
                src = src.url,
                dst = dst_psql.url
            );
            psql(&server, &["CHECKPOINT"])?;
            let started = Instant::now();
            let out = Command::new("sh").arg("-c").arg(&pipe).output()?;
            theirs.push(started.elapsed().as_secs_f64());
            if !out.status.success() {
                bail!("psql pipe failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            // Tables of this run's own, dropped at its end.
            let (full, jobs, inc) = (
                format!("{label}_{run}"),
                format!("{label}_jobs_{run}"),
                format!("{label}_inc_{run}"),
            );
            let (secs, rss) = sync(&["--to", &full])?;
            ours[0].0.push(secs);
            ours[0].1.push(rss);
            if run == 0 {
                let (again, rss) = sync(&["--to", &full])?;
                println!(
                    "sync {label} again, nothing changed: {again:.2} s ({:.2}x of the first), peak RSS {rss:.0} MB",
                    again / secs
                );
            }
            let (secs, rss) = sync(&["--jobs", "2", "--to", &jobs])?;
            ours[1].0.push(secs);
            ours[1].1.push(rss);
            // Incremental: a first run reads everything, then 1% of the
            // rows change, then nothing does.
            let incremental = ["--incremental", "updated_at", "--to", &inc];
            sync(&incremental)?;
            psql(
                &src,
                &[&format!(
                    "UPDATE {label} SET updated_at = now() WHERE id % 100 = 0"
                )],
            )?;
            for measured in &mut ours[2..] {
                let (secs, rss) = sync(&incremental)?;
                measured.0.push(secs);
                measured.1.push(rss);
            }
            psql(
                &dst_pgbulk_server,
                &[&format!("DROP TABLE {full}, {jobs}, {inc}")],
            )?;
        }
        let theirs = median(&theirs);
        let full = median(&ours[0].0);
        report(
            &format!("sync {label}, full"),
            full,
            (PSQL_PIPE, theirs),
            bar,
            Some(largest(&ours[0].1)),
        );
        report(
            &format!("sync {label}, full, --jobs 2"),
            median(&ours[1].0),
            (PSQL_PIPE, theirs),
            bar,
            Some(largest(&ours[1].1)),
        );
        let changed = median(&ours[2].0);
        println!(
            "sync {label} --incremental after 1% changed: {changed:.2} s ({:.3}x of a full sync, bar <= 0.05x {})",
            changed / full,
            if changed / full <= 0.05 {
                "ok"
            } else {
                "MISSED"
            }
        );
        record(Measure {
            workload: format!("sync {label}, incremental, 1% changed"),
            pgbulk: changed,
            reference: "the full sync",
            reference_seconds: None,
            ratio: Some(changed / full),
            peak_rss_mb: Some(largest(&ours[2].1)),
            bar: "<= 0.05x".to_owned(),
            ok: changed / full <= 0.05,
        });
        let nothing = median(&ours[3].0);
        println!(
            "sync {label} --incremental, nothing new: {nothing:.2} s (bar < 1 s {})",
            if nothing < 1.0 { "ok" } else { "MISSED" }
        );
        record(Measure {
            workload: format!("sync {label}, incremental, nothing new"),
            pgbulk: nothing,
            reference: "",
            reference_seconds: None,
            ratio: None,
            peak_rss_mb: Some(largest(&ours[3].1)),
            bar: "< 1 s".to_owned(),
            ok: nothing < 1.0,
        });
    }
    Ok(())
}
