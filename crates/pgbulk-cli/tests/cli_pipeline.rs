//! `pgbulk run` and `pgbulk status` over a pipeline of three loads (one a
//! glob over a landing folder) and two syncs, against throwaway databases.

use std::process::Command;

use crate::cli_load::{count, rows};
use crate::harness::{Run, Scratch, TestDb, pgbulk, run};

const PIPELINE: &str = r#"
[defaults]
db = "${TARGET}"

[[load]]
name = "daily-sales"
files = ["landing/*.csv"]
table = "sales"
key = ["day", "store"]

[[load]]
name = "stores"
files = "stores.csv"
table = "stores"

[[load]]
name = "prices"
files = ["prices.csv"]
table = "prices"
key = "sku"

[[sync]]
name = "users"
from = "${SOURCE}"
table = "users"
incremental = "updated_at"

[[sync]]
from = "${SOURCE}"
table = "orders"
to = "${ORDERS_TABLE:-orders_copy}"
jobs = 2
"#;

struct Setup {
    home: Scratch,
    src: TestDb,
    dst: TestDb,
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = pgbulk(&self.home);
        cmd.env("TARGET", &self.dst.url)
            .env("SOURCE", &self.src.url)
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&mut self.command(args))
    }

    /// The status lines of `job` (its block in `pgbulk status`).
    fn status(&self) -> String {
        let out = self.run(&["status", "pipeline.toml"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    }

    /// Activity and ledger of the target, to compare around a dry run.
    async fn footprint(&self) -> Vec<Vec<Option<String>>> {
        let mut all = rows(
            &self.dst,
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables ORDER BY relname",
        )
        .await;
        all.extend(
            rows(
                &self.dst,
                "SELECT table_name, updated_at::text FROM pgbulk_watermark ORDER BY 1",
            )
            .await,
        );
        all
    }
}

/// The status column of `job` in a summary table.
fn job_status<'a>(table: &'a str, job: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .map(|l| {
            // After the 9 fixed columns.
            let mut rest = l;
            for _ in 0..9 {
                rest = rest.trim_start();
                rest = &rest[rest.find(' ').unwrap_or(rest.len())..];
            }
            rest.trim()
        })
        .unwrap_or_else(|| panic!("no row for {job} in\n{table}"))
}

async fn setup(name: &str) -> Setup {
    let src = TestDb::new(&format!("{name}_src")).await;
    let dst = TestDb::new(&format!("{name}_dst")).await;
    let home = Scratch::new(name);
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO users (id, name) SELECT g, 'u' || g FROM generate_series(1, 50) g;
             CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric);
             INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("source");
    home.file("pipeline.toml", PIPELINE, 0o644);
    home.file(
        "landing/2024-05-01.csv",
        "day,store,sales\n2024-05-01,1,10\n2024-05-01,2,20\n",
        0o644,
    );
    home.file(
        "landing/2024-05-02.csv",
        "day,store,sales\n2024-05-02,1,11\n",
        0o644,
    );
    home.file("stores.csv", "store,city\n1,Oslo\n2,Lima\n", 0o644);
    home.file("prices.csv", "sku,price\nA,1.50\nB,2.25\n", 0o644);
    Setup { home, src, dst }
}

#[tokio::test]
async fn a_pipeline_runs_reruns_and_reports() {
    let s = setup("pipe").await;

    // A dry run first: checks, resolves and plans, and changes nothing.
    let before = s.footprint_or_empty().await;
    let dry = s.run(&["run", "pipeline.toml", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("== daily-sales (load) -> ")
            && dry
                .stdout
                .contains("landing/2024-05-01.csv: would be loaded into")
            && dry.stdout.contains("in 2 ranges read at once"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("password"), "{}", dry.stdout);
    assert_eq!(
        s.footprint_or_empty().await,
        before,
        "a dry run changes nothing"
    );
    assert_eq!(
        count(
            &s.dst,
            "pg_class WHERE relname IN ('sales', 'stores', 'prices', 'users', 'orders_copy')"
        )
        .await,
        0
    );

    // First run: everything loads.
    let first = s.run(&["run", "pipeline.toml"]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    for job in ["daily-sales", "stores", "prices", "users", "orders_copy"] {
        assert_eq!(job_status(&first.stdout, job), "ok", "{}", first.stdout);
    }
    assert_eq!(count(&s.dst, "sales").await, 3);
    assert_eq!(count(&s.dst, "stores").await, 2);
    assert_eq!(count(&s.dst, "users").await, 50);
    assert_eq!(
        count(&s.dst, "orders_copy").await,
        2000,
        "${{VAR:-default}} named it"
    );
    let status = s.status();
    assert!(
        status.contains("daily-sales (load into sales)")
            && status.contains("loaded:    ")
            && status.contains("2024-05-01.csv (2 rows)")
            && status.contains("last run:  load at ")
            && status.contains("watermark: the next sync reads public.users.updated_at"),
        "{status}"
    );

    // A dry run over loaded tables changes nothing either: not the
    // tables' activity, not the ledger.
    let before = s.settled_footprint().await;
    let dry = s.run(&["run", "pipeline.toml", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains(
            "loaded completely by an earlier run with the same options; would be skipped"
        ) && dry.stdout.contains("rows with updated_at > "),
        "{}",
        dry.stdout
    );
    assert_eq!(
        s.settled_footprint().await,
        before,
        "a dry run changes nothing"
    );

    // Rerun: nothing new, and said so.
    let again = s.run(&["run", "pipeline.toml"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for job in ["daily-sales", "stores", "prices"] {
        assert_eq!(
            job_status(&again.stdout, job),
            "nothing new (loaded before)",
            "{}",
            again.stdout
        );
    }
    assert_eq!(job_status(&again.stdout, "users"), "nothing new");

    // A new file loads alone; a rewritten one (same size and mtime) is
    // noticed by its hash.
    s.home.file(
        "landing/2024-05-03.csv",
        "day,store,sales\n2024-05-03,1,12\n",
        0o644,
    );
    let path = s.home.path().join("landing/2024-05-02.csv");
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::write(&path, "day,store,sales\n2024-05-02,1,99\n").expect("rewrite");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("mtime");
    let arrived = s.run(&[
        "run",
        "pipeline.toml",
        "--only",
        "daily-sales",
        "--log-format",
        "json",
    ]);
    assert_eq!(arrived.code, 0, "{}", arrived.stderr);
    assert_eq!(
        job_status(&arrived.stdout, "daily-sales"),
        "ok (1 loaded before)",
        "{}",
        arrived.stdout
    );
    assert_eq!(
        rows(
            &s.dst,
            "SELECT day::text, store, sales FROM sales ORDER BY 1, 2"
        )
        .await,
        [
            ["2024-05-01", "1", "10"],
            ["2024-05-01", "2", "20"],
            ["2024-05-02", "1", "99"],
            ["2024-05-03", "1", "12"],
        ]
        .map(|r| r.map(|v| Some(v.to_owned())).to_vec())
        .to_vec()
    );
    // JSON logs: every stderr line is an object with the documented fields.
    let events: Vec<serde_json::Value> = arrived
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |name: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == name).collect()
    };
    for e in &events {
        assert!(
            e["timestamp"].is_string() && e["level"].is_string() && e["message"].is_string(),
            "{e}"
        );
    }
    assert_eq!(of("job_start").len(), 1);
    let end = of("job_end")[0];
    assert_eq!(
        (
            end["span"]["job"].as_str(),
            end["inserted"].as_u64(),
            end["updated"].as_u64(),
            end["exit_code"].as_u64()
        ),
        (Some("daily-sales"), Some(1), Some(1), Some(0)),
        "{end}"
    );
    assert_eq!(of("file_skipped").len(), 1);
    let loaded: Vec<&str> = of("file_loaded")
        .iter()
        .filter_map(|e| e["input"].as_str())
        .collect();
    assert!(
        loaded.len() == 2 && loaded[0].ends_with("2024-05-02.csv"),
        "{loaded:?}"
    );
    let batch = of("batch_committed")[0];
    assert_eq!(
        (batch["table"].as_str(), batch["batch"].as_u64()),
        (Some("public.sales"), Some(1))
    );

    // One job failing leaves the others complete, and the exit code is its.
    s.home
        .file("prices.csv", "sku,price\nA,1.50\nC,cheap\n", 0o644);
    s.home
        .file("stores.csv", "store,city\n1,Oslo\n2,Lima\n3,Pune\n", 0o644);
    let failing = s.run(&["run", "pipeline.toml"]);
    assert_eq!(failing.code, 9, "{}\n{}", failing.stdout, failing.stderr);
    assert!(
        job_status(&failing.stdout, "prices").starts_with("failed: "),
        "{}",
        failing.stdout
    );
    assert!(
        failing.stderr.contains("prices.csv:3"),
        "{}",
        failing.stderr
    );
    assert_eq!(job_status(&failing.stdout, "stores"), "ok");
    assert_eq!(
        rows(&s.dst, "SELECT store, city FROM stores ORDER BY store").await,
        [["1", "Oslo"], ["2", "Lima"], ["3", "Pune"]]
            .map(|r| r.map(|v| Some(v.to_owned())).to_vec())
            .to_vec(),
        "stores.csv grew: its line appended loaded (append)"
    );
    assert_eq!(count(&s.dst, "prices WHERE sku = 'C'").await, 0);

    // --fail-fast: the jobs after the failure do not start.
    let fast = s.run(&["run", "pipeline.toml", "--jobs", "1", "--fail-fast"]);
    assert_eq!(fast.code, 9, "{}", fast.stdout);
    assert!(
        job_status(&fast.stdout, "orders_copy").starts_with("not started"),
        "{}",
        fast.stdout
    );
}

impl Setup {
    /// [`Setup::footprint`] once the statistics of finished sessions have
    /// arrived (two reads 300 ms apart agree).
    async fn settled_footprint(&self) -> Vec<Vec<Option<String>>> {
        let mut last = self.footprint().await;
        for _ in 0..30 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = self.footprint().await;
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// [`Setup::footprint`], or nothing before the ledger exists.
    async fn footprint_or_empty(&self) -> Vec<Vec<Option<String>>> {
        let ledger = count(&self.dst, "pg_class WHERE relname = 'pgbulk_watermark'").await;
        if ledger == 0 {
            return rows(
                &self.dst,
                "SELECT relname, n_tup_ins FROM pg_stat_user_tables ORDER BY relname",
            )
            .await;
        }
        self.footprint().await
    }
}

#[tokio::test]
async fn pipeline_mistakes_are_refused_before_anything_runs() {
    let s = setup("pipe_bad").await;
    let cases: [(&str, &str); 5] = [
        (
            "[[load]]\nname = \"x\"\ntable = \"t\"\n",
            "pipeline.toml:1: job `x`: a load job names its files",
        ),
        (
            "[[load]]\ntable = \"t\"\nfiles = \"a.csv\"\nbatch_rows = \"lots\"\n",
            "pipeline.toml:4: key `batch_rows`",
        ),
        (
            "[[load]]\nname = \"x\"\ntable = \"t\"\nfiles = \"a.csv\"\n\n[[sync]]\nname = \"y\"\ntable = \"u\"\nfrom = \"${NOT_SET}\"\n",
            "pipeline.toml:9: key `from`: ${NOT_SET} is not set",
        ),
        (
            "[[sync]]\ntable = \"u\"\nfrom = \"x\"\nfiles = [\"a\"]\n",
            "pipeline.toml:4: unknown key `files`",
        ),
        (
            "[[load]]\nfiles = \"a.csv\"\n",
            "pipeline.toml:1: the load job lacks the required key `table`",
        ),
    ];
    for (text, expected) in cases {
        s.home.file("pipeline.toml", text, 0o644);
        let out = s.run(&["run", "pipeline.toml"]);
        assert_eq!(out.code, 3, "{text}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{text}: {}", out.stderr);
    }
    s.home.file("pipeline.toml", PIPELINE, 0o644);
    let out = s.run(&["run", "pipeline.toml", "--only", "nope"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("its jobs: daily-sales, stores, prices, users, orders_copy"),
        "{}",
        out.stderr
    );
    assert_eq!(
        count(&s.dst, "pg_class WHERE relname = 'pgbulk_watermark'").await,
        0
    );
}

#[tokio::test]
async fn an_interrupted_pipeline_stops_every_job_and_the_rerun_continues() {
    let s = setup("pipe_int").await;
    // Long enough (about 100 batches) for the interrupt to land while
    // batches remain, on a busy machine too.
    let total = 1_000_000u64;
    let mut text = String::from("day,store,sales\n");
    for i in 0..total {
        text.push_str(&format!("2024-01-01,{i},{i}\n"));
    }
    s.home.file("landing/big.csv", &text, 0o644);
    s.home.file(
        "pipeline.toml",
        &PIPELINE.replace(
            "key = [\"day\", \"store\"]",
            "key = [\"day\", \"store\"]\nbatch_rows = 10000\nstreams = 1",
        ),
        0o644,
    );
    let child = s
        .command(&["run", "pipeline.toml", "--only", "daily-sales,orders_copy"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    loop {
        let ready = count(&s.dst, "pg_class WHERE relname = 'sales'").await == 1
            && count(&s.dst, "sales").await >= 20_000;
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert_eq!(
        job_status(&stdout, "daily-sales"),
        "interrupted",
        "{stdout}"
    );
    let committed = count(&s.dst, "sales").await;
    assert!(committed < (total + 3) as i64, "stopped before the end");
    let status = s.status();
    assert!(status.contains("pending:   "), "{status}");
    let again = s.run(&["run", "pipeline.toml", "--only", "daily-sales,orders_copy"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(count(&s.dst, "sales").await, (total + 3) as i64);
    assert_eq!(count(&s.dst, "orders_copy").await, 2000);
}
