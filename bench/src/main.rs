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
//!   engine;
//! - the same upsert again with unchanged data.
//!
//! Prints seconds and the ratio pgbulk / psql for each (lower is better).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use pgbulk::codec::Value;
use pgbulk::conninfo::{self, Environment, Request};
use pgbulk::ingest::{Batch, BatchWatermark, Options, Row, ingest};
use pgbulk::local::Cluster;
use pgbulk::schema::Declaration;

/// Rows per batch (each batch is streamed, so this bounds transactions,
/// not memory).
const BATCH_ROWS: usize = 10_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        "ingest" => runtime.block_on(bench_ingest(rows)),
        "append" => runtime.block_on(bench_append(rows)),
        other => bail!("unknown benchmark {other:?} (try: ingest [ROWS])"),
    }
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

fn report(label: &str, ours: f64, theirs: f64, bar: f64) {
    let ratio = ours / theirs;
    println!(
        "{label:<44} pgbulk {ours:>7.2} s   psql {theirs:>7.2} s   ratio {ratio:>5.2}x   bar <= {bar:.2}x {}",
        if ratio <= bar { "ok" } else { "MISSED" }
    );
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

/// Only the append, for profiling.
async fn bench_append(rows: usize) -> anyhow::Result<()> {
    let server = server()?;
    let dir = std::env::temp_dir().join(format!("pgbulk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let original = dir.join("narrow.csv");
    write_csv(&original, rows, 0)?;
    let cols = "(pos text, product text, day date, stock int";
    let ours = pgbulk_ingest(
        &server,
        &format!("CREATE TABLE append_pgbulk {cols});"),
        &original,
        "append_pgbulk",
    )
    .await?;
    println!("append: {ours:.2} s");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

async fn bench_ingest(rows: usize) -> anyhow::Result<()> {
    let server = server()?;
    let dir = std::env::temp_dir().join(format!("pgbulk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let original = dir.join("narrow.csv");
    let changed = dir.join("narrow-changed.csv");
    write_csv(&original, rows, 0)?;
    write_csv(&changed, rows, 1)?;
    let file = |p: &Path| p.display().to_string().replace('\'', "''");
    println!(
        "ingest benchmark: {rows} narrow rows (text, text, date, int), batches of {BATCH_ROWS}"
    );

    // Append into empty tables.
    let cols = "(pos text, product text, day date, stock int";
    psql(&server, &[&format!("CREATE TABLE append_psql {cols})")])?;
    let theirs = psql(
        &server,
        &[&format!(
            "\\copy append_psql FROM '{}' (FORMAT csv)",
            file(&original)
        )],
    )?;
    let ours = pgbulk_ingest(
        &server,
        &format!("CREATE TABLE append_pgbulk {cols});"),
        &original,
        "append_pgbulk",
    )
    .await?;
    report("append into an empty table", ours, theirs, 0.9);

    // Upsert into tables holding every key.
    let keyed = format!("{cols}, PRIMARY KEY (pos, product, day))");
    for t in ["upsert_psql", "upsert_pgbulk"] {
        psql(
            &server,
            &[
                &format!("CREATE TABLE {t} {keyed}"),
                &format!("\\copy {t} FROM '{}' (FORMAT csv)", file(&original)),
                &format!("VACUUM ANALYZE {t}"),
            ],
        )?;
    }
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
    let theirs = psql(
        &server,
        &commands.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let ddl = format!("CREATE TABLE upsert_pgbulk {keyed};");
    let ours = pgbulk_ingest(&server, &ddl, &changed, "upsert_pgbulk").await?;
    report(
        "upsert, every key present, values changed",
        ours,
        theirs,
        1.0,
    );
    psql(
        &server,
        &["VACUUM upsert_psql", "VACUUM upsert_pgbulk", "CHECKPOINT"],
    )?;

    let theirs = psql(
        &server,
        &commands.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let ours = pgbulk_ingest(&server, &ddl, &changed, "upsert_pgbulk").await?;
    report("upsert again, values unchanged", ours, theirs, 0.3);

    println!("peak RSS of pgbulk-bench: {:.0} MB", peak_rss_mb());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
