//! `pgbulk export` into Parquet files, read back with the DuckDB CLI and
//! compared value by value with the source.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli_load::{rows, s};
use crate::cli_sync::NULL_STAMP_TABLE;
use crate::harness::{Run, Scratch, TestDb, peak_memory, pgbulk, run};

pub(crate) const TYPES: &str = "CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE t (
    id int PRIMARY KEY, i2 smallint, i8 bigint, r real, d double precision,
    n numeric(12,2), big numeric(38,9), b bool, tx text, ch char(3), u uuid, j json, jb jsonb,
    by bytea, dt date, ts timestamp, tz timestamptz, tm time, arr int[], tarr text[], m mood,
    p posint, iv interval, narr numeric(5,1)[]
);
INSERT INTO t VALUES
 (1, -32768, 9223372036854775807, 1.1, -0.5, 1234567890.12, 99999999999999999999999999999.999999999,
  true, 'a \"quoted\", text
with a line and é', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2.50]}', '{\"k\": null}',
  '\\x00ff', '2024-02-29', '2024-02-29 23:59:59.999999', '2024-05-01 12:34:56.789012+02', '23:59:59.5',
  '{1,NULL,3}', '{\"\",NULL,\"x,y\"}', 'happy', 7, '1 year 2 mons -3 days 04:05:06.7', '{1.5,-2}'),
 (2, 32767, -9223372036854775808, 3.4e38, 1e300, -0.01, -99999999999999999999999999999.999999999,
  false, '', 'abc', '00000000-0000-0000-0000-000000000000', 'null', '\"\"', '\\x', 'infinity',
  '-infinity', 'infinity', '24:00:00', '{}', '{}', 'sad', 1, '-178000000 years', '{}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '4713-01-01 BC',
  '10000-01-01', '0001-01-01 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-infinity',
  '0001-01-01 00:00:00', '0044-03-15 12:00:00+00 BC', '00:00:00', NULL, NULL, NULL, NULL, NULL, NULL)";

/// Each column as PostgreSQL holds it (what the export must give, after
/// clamping to the warehouse's range), and as DuckDB reads it back, both
/// as text.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("i2", "i2::text", "CAST(i2 AS VARCHAR)"),
    ("i8", "i8::text", "CAST(i8 AS VARCHAR)"),
    ("r", "r::text", "CAST(r AS VARCHAR)"),
    ("d", "d::text", "CAST(d AS VARCHAR)"),
    ("n", "n::text", "CAST(n AS VARCHAR)"),
    ("big", "big::text", "CAST(big AS VARCHAR)"),
    ("b", "b::text", "CAST(b AS VARCHAR)"),
    ("tx", "tx", "tx"),
    (
        "ch",
        "CASE WHEN ch IS NOT NULL THEN format('%s', ch) END",
        "ch",
    ),
    ("u", "u::text", "u"),
    ("j", "j::text", "CAST(j AS VARCHAR)"),
    ("jb", "jb::text", "CAST(jb AS VARCHAR)"),
    ("by", "encode(by, 'hex')", "lower(hex(\"by\"))"),
    (
        "dt",
        "CASE WHEN dt > '9999-12-31' THEN '9999-12-31' WHEN dt < '0001-01-01' THEN '0001-01-01' ELSE dt::text END",
        "CAST(dt AS VARCHAR)",
    ),
    (
        "ts",
        "CASE WHEN ts > '9999-12-31 23:59:59.999999' THEN '9999-12-31 23:59:59.999999' WHEN ts < '0001-01-01' THEN '0001-01-01 00:00:00' ELSE ts::text END",
        "CAST(ts AS VARCHAR)",
    ),
    (
        "tz",
        "CASE WHEN tz > '9999-12-31 23:59:59.999999+00' THEN '9999-12-31 23:59:59.999999+00' WHEN tz < '0001-01-01 00:00:00+00' THEN '0001-01-01 00:00:00+00' ELSE tz::text END",
        "CAST(tz AS VARCHAR)",
    ),
    (
        "tm",
        "CASE WHEN tm = '24:00:00' THEN '23:59:59.999999' ELSE tm::text END",
        "CAST(tm AS VARCHAR)",
    ),
    (
        "arr",
        "array_to_string(arr, '|', 'NULL')",
        "array_to_string(list_transform(arr, lambda x: coalesce(CAST(x AS VARCHAR), 'NULL')), '|')",
    ),
    (
        "tarr",
        "array_to_string(tarr, '|', 'NULL')",
        "array_to_string(list_transform(tarr, lambda x: coalesce(x, 'NULL')), '|')",
    ),
    ("m", "m::text", "m"),
    ("p", "p::text", "CAST(p AS VARCHAR)"),
    ("iv", "iv::text", "iv"),
    (
        "narr",
        "array_to_string(narr, '|', 'NULL')",
        "array_to_string(list_transform(narr, lambda x: CAST(x AS VARCHAR)), '|')",
    ),
];

/// Runs `sql` in the DuckDB CLI; each row's values as text (`None`:
/// NULL), in the order of the columns' names (JSON objects come back
/// sorted): name them so.
fn duckdb(sql: &str) -> Vec<Vec<Option<String>>> {
    let out = run(Command::new(crate::harness::duckdb())
        .args(["-json", "-c"])
        .arg(format!("SET TimeZone = 'UTC'; {sql}")));
    assert_eq!(out.code, 0, "duckdb: {}\n{sql}", out.stderr);
    let text = out.stdout.trim();
    if text.is_empty() {
        return Vec::new();
    }
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("duckdb's JSON: {e}\n{text}"));
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|(_, v)| match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                })
                .collect()
        })
        .collect()
}

fn export(home: &Scratch, src: &TestDb, args: &[&str]) -> Run {
    run(pgbulk(home).args(["export", "--from", &src.url]).args(args))
}

/// The files of a table's folder but its lock file.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".pgbulk.lock")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A view named with `-t` is exported as its rows are, into a folder of
/// its name, incrementally too; a sequence is refused, naming it.
#[tokio::test]
async fn a_view_is_exported_by_name() {
    let src = TestDb::new("export_view").await;
    let home = Scratch::new("export-view");
    let source = src.connect().await;
    source
        .batch_execute(
            "CREATE TABLE base (id int PRIMARY KEY, v text);
             INSERT INTO base VALUES (1, 'a'), (2, 'b'), (3, 'c');
             CREATE VIEW odd AS SELECT id, v FROM base WHERE id % 2 = 1;
             CREATE SEQUENCE counter;",
        )
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let first = export(
        &home,
        &src,
        &["-t", "odd", "--to", &to, "--incremental", "id"],
    );
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains("public.odd: 2 rows into odd/run-000001.parquet"),
        "{}",
        first.stdout
    );
    source
        .batch_execute("INSERT INTO base VALUES (5, 'e'), (6, 'f')")
        .await
        .expect("more");
    let next = export(
        &home,
        &src,
        &["-t", "odd", "--to", &to, "--incremental", "id"],
    );
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_eq!(
        duckdb(&format!(
            "SELECT CAST(id AS VARCHAR), v FROM '{}' ORDER BY id",
            out_dir.join("odd").join("run-000002.parquet").display()
        )),
        vec![vec![s("3"), s("c")], vec![s("5"), s("e")]],
        "from the watermark on, the boundary row again"
    );
    let refused = export(&home, &src, &["-t", "counter", "--to", &to]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("the source's public.counter is a sequence, not a table"),
        "{}",
        refused.stderr
    );
}

/// Rows of 100 KB documents: a record batch ends at 16 MiB of values, not
/// at 8,192 rows (845 MB for 20,000 such rows before), and every row is
/// in the file.
#[tokio::test]
async fn wide_documents_are_exported_in_bounded_memory() {
    let src = TestDb::new("export_docs").await;
    let home = Scratch::new("export-docs");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, doc text);
             INSERT INTO docs SELECT i, repeat(md5(i::text), 3200) FROM generate_series(1, 4000) i",
        )
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let (code, kib) =
        peak_memory(pgbulk(&home).args(["export", "--from", &src.url, "-t", "docs", "--to", &to]));
    assert_eq!(code, 0);
    assert!(kib < 150 * 1024, "peak {kib} KiB for 400 MB of documents");
    let file = out_dir.join("docs").join("run-000001.parquet");
    assert_eq!(
        duckdb(&format!(
            "SELECT CAST(count(*) AS VARCHAR), CAST(sum(length(doc)) AS VARCHAR) FROM '{}'",
            file.display()
        )),
        vec![vec![s("4000"), s("409600000")]]
    );
}

#[tokio::test]
async fn every_type_reads_back_from_duckdb_as_postgres_holds_it() {
    let src = TestDb::new("export_types").await;
    let home = Scratch::new("export-types");
    src.connect()
        .await
        .batch_execute(TYPES)
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let dry = export(&home, &src, &["-t", "t", "--to", &to, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    for line in [
        "  \"big\" numeric(38,9) -> Parquet DECIMAL(38, 9), BigQuery NUMERIC(38, 9)",
        "  \"u\" uuid -> Parquet STRING, BigQuery STRING",
        "  \"jb\" jsonb -> Parquet JSON, BigQuery JSON",
        "  \"tz\" timestamp with time zone -> Parquet TIMESTAMP(MICROS, UTC), BigQuery TIMESTAMP",
        "  \"ts\" timestamp without time zone -> Parquet TIMESTAMP(MICROS, local), BigQuery DATETIME",
        "  \"iv\" interval -> Parquet STRING, BigQuery STRING (as text)",
        "  \"narr\" numeric(5,1)[] -> Parquet LIST<DECIMAL(5, 1)>, BigQuery ARRAY<NUMERIC(5, 1)>",
    ] {
        assert!(dry.stdout.contains(line), "{line}\n{}", dry.stdout);
    }
    assert!(!out_dir.exists(), "a dry run writes nothing");

    let out = export(&home, &src, &["-t", "t", "--to", &to]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("public.t: 4 rows into t/run-000001.parquet"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("3 values of \"dt\" lay outside BigQuery's range"),
        "{}",
        out.stderr
    );
    let file = out_dir.join("t/run-000001.parquet");
    let client = src.connect().await;
    client
        .batch_execute("SET TimeZone = 'UTC'")
        .await
        .expect("utc");
    for (column, pg, duck) in COLUMNS {
        let expected: Vec<Vec<Option<String>>> = client
            .simple_query(&format!("SELECT id::text, {pg} FROM t ORDER BY id"))
            .await
            .expect("source values")
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(vec![
                    r.get(0).map(str::to_owned),
                    r.get(1).map(str::to_owned),
                ]),
                _ => None,
            })
            .collect();
        let got = duckdb(&format!(
            "SELECT CAST(id AS VARCHAR) AS id, {duck} AS v FROM '{}' ORDER BY id",
            file.display()
        ));
        assert_eq!(got, expected, "column {column}");
    }
    // The types DuckDB reads.
    let types = duckdb(&format!(
        "SELECT column_name, column_type FROM (DESCRIBE SELECT big, jb, tz, ts, arr FROM '{}')",
        file.display()
    ));
    assert_eq!(
        types,
        vec![
            vec![s("big"), s("DECIMAL(38,9)")],
            vec![s("jb"), s("JSON")],
            vec![s("tz"), s("TIMESTAMP WITH TIME ZONE")],
            vec![s("ts"), s("TIMESTAMP")],
            vec![s("arr"), s("INTEGER[]")],
        ]
    );
    // A full export again replaces the table's file.
    let again = export(&home, &src, &["-t", "t", "--to", &to]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(files(&out_dir.join("t")), vec!["run-000002.parquet"]);
}

#[tokio::test]
async fn incremental_runs_write_exactly_the_new_rows_including_late_commits() {
    let src = TestDb::new("export_incremental").await;
    let home = Scratch::new("export-incremental");
    let client = src.connect().await;
    client
        .batch_execute(
            "CREATE TABLE ev (id int PRIMARY KEY, v text, at timestamptz NOT NULL DEFAULT now());
             INSERT INTO ev (id, v) SELECT g, 'v' || g FROM generate_series(1, 100) g;",
        )
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let inc = |extra: &[&str]| {
        let mut args = vec!["-t", "ev", "--to", &to, "--incremental", "at"];
        args.extend_from_slice(extra);
        export(&home, &src, &args)
    };
    let first = inc(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains("public.ev: 100 rows into ev/run-000001.parquet")
    );
    // Nothing new: no file.
    let none = inc(&[]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert!(
        none.stdout
            .contains("public.ev: nothing new, no file written"),
        "{}",
        none.stdout
    );
    // A transaction that stamps its row before the export and commits
    // after it.
    let late = src.connect().await;
    late.batch_execute("BEGIN; INSERT INTO ev (id, v) VALUES (1000, 'late')")
        .await
        .expect("late row");
    tokio::time::sleep(Duration::from_millis(20)).await;
    client
        .batch_execute("UPDATE ev SET v = 'changed', at = now() WHERE id = 5; INSERT INTO ev (id, v) VALUES (101, 'new')")
        .await
        .expect("changes");
    let second = inc(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    late.batch_execute("COMMIT").await.expect("commit");
    let third = inc(&[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    let glob = format!("{}/ev/*.parquet", out_dir.display());
    let per_file = duckdb(&format!(
        "SELECT parse_filename(filename) AS f, string_agg(CAST(id AS VARCHAR) || '=' || v, ',' ORDER BY id) AS r \
         FROM read_parquet('{glob}', filename = true) WHERE id = 5 OR id > 100 GROUP BY f ORDER BY f"
    ));
    // The second run read what committed; the late row, stamped before
    // its watermark, comes with the third (the second's rows at its
    // boundary may come again: identical rows).
    assert_eq!(per_file[0], vec![s("run-000001.parquet"), s("5=v5")]);
    assert_eq!(
        per_file[1],
        vec![s("run-000002.parquet"), s("5=changed,101=new")]
    );
    let third_rows = per_file[2][1].clone().unwrap_or_default();
    assert!(
        third_rows.contains("1000=late") && per_file[2][0] == s("run-000003.parquet"),
        "{per_file:?}"
    );
    // Every source row is in the files, as the source holds it now.
    let latest = duckdb(&format!(
        "SELECT count(*) FROM (SELECT id, last(v ORDER BY filename) AS v FROM read_parquet('{glob}', filename = true) GROUP BY id)"
    ));
    assert_eq!(latest, vec![vec![s("102")]]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("_pgbulk_state.json")).expect("state"))
            .expect("state JSON");
    assert_eq!(state["tables"]["ev"]["column"], "at");
    assert_eq!(state["tables"]["ev"]["runs"], 3);
    // The watermark stands for the files: the table's directory removed,
    // the next run reads every row again.
    std::fs::remove_dir_all(out_dir.join("ev")).expect("remove the files");
    let plan = inc(&["--dry-run"]);
    assert!(
        plan.stdout.contains("ev/run-000004.parquet"),
        "{}",
        plan.stdout
    );
    let again = inc(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("the files _pgbulk_state.json listed for ev are gone from"),
        "{}",
        again.stderr
    );
    assert!(
        again
            .stdout
            .contains("public.ev: 102 rows into ev/run-000004.parquet"),
        "{}",
        again.stdout
    );
}

/// A row whose incremental column is NULL is in every run's file: no
/// watermark can place it, and it is never left out.
#[tokio::test]
async fn incremental_runs_write_the_rows_with_a_null_stamp_every_time() {
    let src = TestDb::new("export_null_stamp").await;
    let home = Scratch::new("export-null-stamp");
    let client = src.connect().await;
    client
        .batch_execute(NULL_STAMP_TABLE)
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let inc = || {
        export(
            &home,
            &src,
            &["-t", "ns", "--to", &to, "--incremental", "at"],
        )
    };
    let first = inc();
    assert_eq!(first.code, 0, "{}", first.stderr);
    client
        .batch_execute("INSERT INTO ns VALUES (3, 'c', NULL)")
        .await
        .expect("unstamped row");
    let second = inc();
    assert_eq!(second.code, 0, "{}", second.stderr);
    let glob = format!("{}/ns/*.parquet", out_dir.display());
    let per_file = duckdb(&format!(
        "SELECT parse_filename(filename) AS f, string_agg(CAST(id AS VARCHAR) || '=' || v, ',' ORDER BY id) AS r \
         FROM read_parquet('{glob}', filename = true) WHERE \"at\" IS NULL GROUP BY f ORDER BY f"
    ));
    assert_eq!(
        per_file,
        vec![
            vec![s("run-000001.parquet"), s("2=b")],
            vec![s("run-000002.parquet"), s("2=b,3=c")]
        ]
    );
    // The watermark remembers the run's --where: a run with another says
    // what it does not read, once; the next with the same says nothing.
    let filtered = |extra: &[&str]| {
        let mut args = vec![
            "-t",
            "ns",
            "--to",
            &to,
            "--incremental",
            "at",
            "--where",
            "id > 1",
        ];
        args.extend(extra);
        export(&home, &src, &args)
    };
    let note = "the watermark was stored by an export without --where; rows this --where selects that \
                are older than the watermark are not read: an export without --incremental reads them once";
    let plan = filtered(&["--dry-run"]);
    assert!(plan.stdout.contains(note), "{}", plan.stdout);
    let third = filtered(&[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert!(third.stderr.contains(note), "{}", third.stderr);
    let fourth = filtered(&[]);
    assert!(
        !fourth.stderr.contains("watermark was stored"),
        "{}",
        fourth.stderr
    );
}

#[tokio::test]
async fn one_tables_failure_leaves_the_others_exported_and_publishes_nothing_of_it() {
    let src = TestDb::new("export_failures").await;
    let home = Scratch::new("export-failures");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE good (id int, v text); INSERT INTO good VALUES (1, 'x');
             CREATE TABLE bad (id int PRIMARY KEY, amount numeric(10,2));
             INSERT INTO bad VALUES (1, 1.5), (2, 'NaN');",
        )
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let out = export(
        &home,
        &src,
        &["-t", "bad", "-t", "good", "-t", "missing", "--to", &to],
    );
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("public.bad: failed: public.bad, row 2 (id = 2), column \"amount\": NaN, which a decimal cannot hold"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("public.good: 1 row into good/run-000001.parquet")
    );
    assert!(
        out.stdout
            .contains("public.missing: failed: the source has no table public.missing")
    );
    assert!(
        out.stderr
            .contains("2 of 3 tables failed (public.bad, public.missing)"),
        "{}",
        out.stderr
    );
    assert_eq!(files(&out_dir.join("bad")), Vec::<String>::new());
    let state = std::fs::read_to_string(out_dir.join("_pgbulk_state.json")).expect("state");
    assert!(!state.contains("\"bad\""), "{state}");
}

#[tokio::test]
async fn killed_mid_export_a_rerun_leaves_exactly_one_copy_of_each_row() {
    let src = TestDb::new("export_kill9").await;
    let home = Scratch::new("export-kill9");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text, at timestamptz NOT NULL DEFAULT now());
             INSERT INTO big (id, v) SELECT g, repeat('x', 50) || g FROM generate_series(1, 400000) g;",
        )
        .await
        .expect("source");
    for (round, delay_ms) in [40u64, 150, 400, 900].into_iter().enumerate() {
        let out_dir = home.path().join(format!("out{round}"));
        let to = format!("parquet://{}", out_dir.display());
        let mut child = pgbulk(&home)
            .args([
                "export",
                "--from",
                &src.url,
                "-t",
                "big",
                "--incremental",
                "at",
                "--to",
                &to,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let again = export(
            &home,
            &src,
            &["-t", "big", "--incremental", "at", "--to", &to],
        );
        assert_eq!(again.code, 0, "{}", again.stderr);
        let counts = duckdb(&format!(
            "SELECT count(*), count(DISTINCT id) FROM '{}/big/*.parquet'",
            out_dir.display()
        ));
        assert_eq!(
            counts,
            vec![vec![s("400000"), s("400000")]],
            "killed after {delay_ms} ms"
        );
        assert!(
            files(&out_dir.join("big"))
                .iter()
                .all(|f| f.starts_with("run-") && f.ends_with(".parquet")),
            "{:?}",
            files(&out_dir.join("big"))
        );
    }
    let _ = rows(&src, "SELECT 1").await;
}

#[tokio::test]
async fn a_pipeline_exports_beside_its_file_and_reports_each_job() {
    let src = TestDb::new("export_pipeline").await;
    let home = Scratch::new("export-pipeline");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a VALUES (1, 'x'), (2, 'y');
             CREATE TABLE b (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
             INSERT INTO b (id) VALUES (1);",
        )
        .await
        .expect("source");
    let pipeline = home.file(
        "etc/pipeline.toml",
        "[[export]]\nname = \"lake\"\nfrom = \"${SOURCE}\"\ntable = [\"a\", \"b\"]\nto = \"parquet://lake\"\n\n\
         [[job]]\ntype = \"export\"\nfrom = \"${SOURCE}\"\ntable = \"b\"\nto_table = \"b_increments\"\nincremental = \"at\"\nto = \"parquet://lake\"\n",
        0o644,
    );
    let command = |extra: &[&str]| {
        run(pgbulk(&home)
            .env("SOURCE", &src.url)
            .arg("run")
            .arg(&pipeline)
            .args(extra))
    };
    let dry = command(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("would read public.b, rows with any at (no watermark yet)"),
        "{}",
        dry.stdout
    );
    let out = command(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // Rows written into files count as inserted there.
    assert!(
        lines[1].starts_with("lake  export     3         3"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].starts_with("b     export     1         1"),
        "{}",
        out.stdout
    );
    let lake = home.path().join("etc/lake");
    assert_eq!(files(&lake.join("a")), vec!["run-000001.parquet"]);
    assert_eq!(
        files(&lake.join("b_increments")),
        vec!["run-000001.parquet"]
    );
    // What each job's destination records, table by table.
    let status = run(pgbulk(&home)
        .env("SOURCE", &src.url)
        .arg("status")
        .arg(&pipeline));
    assert_eq!(status.code, 0, "{}", status.stderr);
    let lake_url = format!("parquet://{}", lake.display());
    for expected in [
        format!(
            "lake (export of a to {lake_url}/a)\n  files:     1 file holding 2 rows from 1 run; the newest {}/a/run-000001.parquet",
            lake.display()
        ),
        format!(
            "lake (export of b to {lake_url}/b)\n  files:     1 file holding 1 row from 1 run;"
        ),
        format!(
            "b (export of b to {lake_url}/b_increments)\n  files:     1 file holding 1 row from 1 run;"
        ),
        "  watermark: the next export reads public.b.at > ".to_owned(),
    ] {
        assert!(
            status.stdout.contains(&expected),
            "{expected}\n{}",
            status.stdout
        );
    }
    // Again: the incremental job has nothing new.
    let again = command(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .lines()
            .nth(2)
            .is_some_and(|l| l.ends_with("nothing new")),
        "{}",
        again.stdout
    );
    // A state file that cannot be read: said per job, not a crash; the
    // export refuses to guess past it.
    let before = files(&lake.join("a"));
    std::fs::write(lake.join("_pgbulk_state.json"), "{bad").expect("corrupt state");
    let unreadable = run(pgbulk(&home)
        .env("SOURCE", &src.url)
        .arg("status")
        .arg(&pipeline));
    assert_eq!(unreadable.code, 1, "{}", unreadable.stderr);
    assert!(
        unreadable
            .stderr
            .contains("the state of jobs lake, b cannot be read"),
        "{}",
        unreadable.stderr
    );
    assert!(
        unreadable.stdout.contains(&format!(
            "lake (export to {lake_url})\n  cannot be read: {}/_pgbulk_state.json cannot be read: ",
            lake.display()
        )),
        "{}",
        unreadable.stdout
    );
    let refused = command(&[]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("_pgbulk_state.json cannot be read"),
        "{}",
        refused.stderr
    );
    assert_eq!(files(&lake.join("a")), before, "nothing written");
}

#[tokio::test]
async fn weird_identifiers_are_quoted_everywhere() {
    let src = TestDb::new("export_weird").await;
    let home = Scratch::new("export-weird");
    src.connect()
        .await
        .batch_execute(
            "CREATE SCHEMA \"Sales Data\";
             CREATE TABLE \"Sales Data\".\"Odd \"\"Table\"\"\" (\"Mixed Case\" int, \"a;b\" text, \"select\" date);
             INSERT INTO \"Sales Data\".\"Odd \"\"Table\"\"\" VALUES (1, 'x', '2024-01-02');",
        )
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let out = export(
        &home,
        &src,
        &["-t", "\"Sales Data\".\"Odd \"\"Table\"\"\"", "--to", &to],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let file = out_dir.join("Sales Data.Odd \"Table\"/run-000001.parquet");
    assert!(file.is_file(), "{}", out.stdout);
    let got = duckdb(&format!(
        "SELECT \"Mixed Case\" AS c1, \"a;b\" AS c2, CAST(\"select\" AS VARCHAR) AS c3 FROM '{}'",
        file.display()
    ));
    assert_eq!(got, vec![vec![s("1"), s("x"), s("2024-01-02")]]);
}

#[tokio::test]
async fn the_rows_of_a_query_are_exported_into_the_table_named() {
    let src = TestDb::new("export_query").await;
    let home = Scratch::new("export-query");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE q (id int PRIMARY KEY, v text);
             INSERT INTO q SELECT g, 'v' || g FROM generate_series(1, 10) g;",
        )
        .await
        .expect("source");
    let out_dir = home.path().join("out");
    let to = format!("parquet://{}", out_dir.display());
    let query = "SELECT id, v || '!' AS shout FROM q WHERE id <= 3;";
    let unnamed = export(&home, &src, &["--query", query, "--to", &to]);
    assert_eq!(unnamed.code, 2, "{}", unnamed.stderr);
    assert!(unnamed.stderr.contains("--to-table"), "{}", unnamed.stderr);
    let out = export(
        &home,
        &src,
        &["--query", query, "--to-table", "shouts", "--to", &to],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("the query: 3 rows into shouts/run-000001.parquet"),
        "{}",
        out.stdout
    );
    let got = duckdb(&format!(
        "SELECT CAST(id AS VARCHAR) AS c1, shout AS c2 FROM '{}/shouts/*.parquet' ORDER BY id",
        out_dir.display()
    ));
    assert_eq!(
        got,
        vec![
            vec![s("1"), s("v1!")],
            vec![s("2"), s("v2!")],
            vec![s("3"), s("v3!")]
        ]
    );
}

#[test]
fn a_destination_that_cannot_be_read_is_refused_before_connecting() {
    let home = Scratch::new("export-bad-to");
    for (to, why) in [
        (
            "s3://bucket",
            "write parquet://DIR (a directory, created if missing) or bigquery://PROJECT/DATASET",
        ),
        ("bigquery://project", "write bigquery://PROJECT/DATASET"),
        ("parquet://", "write parquet://DIR"),
    ] {
        // The source does not exist: the destination is refused first.
        let out = run(pgbulk(&home).args([
            "export",
            "--from",
            "host=/nonexistent dbname=nothing",
            "-t",
            "t",
            "--to",
            to,
        ]));
        assert_eq!(out.code, 3, "{to}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("cannot read the destination \"{to}\": {why}")),
            "{to}: {}",
            out.stderr
        );
    }
}
