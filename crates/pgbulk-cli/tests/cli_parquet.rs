//! `pgbulk load` of Parquet files (written by the DuckDB CLI, as another
//! tool's files would be): the table created from the file's types, values
//! stored as PostgreSQL stores them, upserts, the ledger and its resume.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli_landing::kill_once;
use crate::cli_load::{count, load, rows, s};
use crate::harness::{Scratch, TestDb, pgbulk, run};

/// Writes the rows of the DuckDB query `select` to the Parquet file
/// `name` in `home` (DuckDB's own compression options in `options`).
fn parquet(home: &Scratch, name: &str, select: &str, options: &str) -> PathBuf {
    let path = home.path().join(name);
    let out = run(Command::new(crate::harness::duckdb())
        .arg("-c")
        .arg(format!(
            "COPY ({select}) TO '{}' (FORMAT parquet{options})",
            path.display()
        )));
    assert_eq!(out.code, 0, "duckdb: {}", out.stderr);
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// One row of every kind of value, and a row of NULLs (and infinity).
const TYPED: &str = "SELECT * FROM (VALUES
 (1, 'héllo, \"w\"', 1.5::DOUBLE, 'NaN'::DOUBLE, 12345.67::DECIMAL(12,2), true, DATE '2024-02-29',
  TIMESTAMPTZ '2024-05-01 12:34:56.789012+02', TIMESTAMP '2024-05-01 12:34:56',
  UUID 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2.50]}'::JSON, [1, NULL, 3],
  {'a': 1, 'b': 'x'}, '\\x00\\xff'::BLOB, TIME '23:59:59.5', 127::TINYINT, 4000000000::UINTEGER),
 (2, NULL, NULL, 'inf'::DOUBLE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
) t(id, name, d, d2, n, b, dt, tz, ts, u, j, l, st, bl, tm, ti, ui)";

#[tokio::test]
async fn a_parquet_file_loads_with_its_own_types_and_exact_values() {
    let db = TestDb::new("parquet_types").await;
    let home = Scratch::new("parquet-types");
    let file = parquet(&home, "typed.parquet", TYPED, ", COMPRESSION snappy");

    let plan = load(&db, &home, &[arg(&file), "-t", "typed", "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("public.typed would be created from the Parquet file's schema")
            && plan
                .stdout
                .contains("typed.parquet: 2 rows would be loaded into public.typed"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        rows(&db, "SELECT to_regclass('typed') IS NULL").await,
        vec![vec![s("t")]]
    );

    let infer = run(pgbulk(&home).args(["infer", arg(&file), "--key", "id"]));
    assert_eq!(infer.code, 0, "{}", infer.stderr);
    assert!(
        infer.stdout.starts_with(
            // Named as the load names it.
            "-- types from the Parquet file's schema\nCREATE TABLE \"typed\" (\n    \"id\" integer,"
        ) && infer.stdout.contains("    \"j\" jsonb,\n")
            && infer.stdout.contains("PRIMARY KEY (\"id\")"),
        "{}",
        infer.stdout
    );

    // The table's name from the file's.
    let out = load(&db, &home, &[arg(&file)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("created typed from the input's schema"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = 'typed'::regclass AND attnum > 0"
        )
        .await,
        vec![vec![s(
            "id integer, name text, d double precision, d2 double precision, n numeric(12,2), b boolean, \
             dt date, tz timestamp with time zone, ts timestamp without time zone, u uuid, j jsonb, \
             l integer[], st jsonb, bl bytea, tm time without time zone, ti smallint, ui bigint"
        )]]
    );
    let values = "SELECT id::text, name, d::text, d2::text, n::text, b::text, dt::text, \
                  (tz AT TIME ZONE 'UTC')::text, ts::text, u::text, j::text, l::text, st::text, bl::text, \
                  tm::text, ti::text, ui::text FROM typed ORDER BY id";
    let none = || None;
    assert_eq!(
        rows(&db, values).await,
        vec![
            vec![
                s("1"),
                s("héllo, \"w\""),
                s("1.5"),
                s("NaN"),
                s("12345.67"),
                s("true"),
                s("2024-02-29"),
                s("2024-05-01 10:34:56.789012"),
                s("2024-05-01 12:34:56"),
                s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                s("{\"k\": [1, 2.50]}"),
                s("{1,NULL,3}"),
                s("{\"a\": 1, \"b\": \"x\"}"),
                s("\\x00ff"),
                s("23:59:59.5"),
                s("127"),
                s("4000000000"),
            ],
            vec![
                s("2"),
                none(),
                none(),
                s("Infinity"),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
                none(),
            ],
        ]
    );

    // The same file again: known by its content, under any name.
    let copy = home.path().join("copy.parquet");
    std::fs::copy(&file, &copy).expect("copy");
    let again = load(&db, &home, &[arg(&copy), "-t", "typed"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("was loaded completely into typed"),
        "{}",
        again.stdout
    );
    assert_eq!(count(&db, "typed").await, 2);
}

#[tokio::test]
async fn parquet_files_that_cannot_load_exactly_are_refused_with_the_reason() {
    let db = TestDb::new("parquet_refused").await;
    let home = Scratch::new("parquet-refused");
    // An INTERVAL's months would be lost by the reader: refused, nothing
    // created.
    let interval = parquet(
        &home,
        "iv.parquet",
        "SELECT 1 AS id, INTERVAL '1 year 2 months 3 days' AS iv",
        "",
    );
    let out = load(&db, &home, &[arg(&interval), "-t", "iv"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "iv.parquet: column \"iv\" is a Parquet INTERVAL, which pgbulk cannot read exactly"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&db, "SELECT to_regclass('iv') IS NULL").await,
        vec![vec![s("t")]]
    );
    // A cut file.
    let whole = std::fs::read(parquet(&home, "whole.parquet", TYPED, "")).expect("read");
    let cut = home.path().join("cut.parquet");
    std::fs::write(&cut, &whole[..whole.len() / 2]).expect("write");
    let out = load(&db, &home, &[arg(&cut), "-t", "cut"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cut.parquet: not a Parquet file pgbulk can read"),
        "{}",
        out.stderr
    );
    // A codec this build does not read: said before anything is created.
    let brotli = parquet(
        &home,
        "brotli.parquet",
        "SELECT 1 AS id",
        ", COMPRESSION brotli",
    );
    let out = load(&db, &home, &[arg(&brotli), "-t", "brotli"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("brotli.parquet: compressed with Brotli, which pgbulk does not read"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&db, "SELECT to_regclass('brotli') IS NULL").await,
        vec![vec![s("t")]]
    );
    // CSV options.
    let ok = parquet(&home, "ok.parquet", "SELECT 1 AS id", "");
    let out = load(&db, &home, &[arg(&ok), "-t", "ok", "--max-errors", "5"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("ok.parquet is a Parquet file: --max-errors applies to CSV input only"),
        "{}",
        out.stderr
    );
    // A value the table's column refuses: the file's row and column named,
    // nothing loaded.
    db.connect()
        .await
        .batch_execute("CREATE TABLE counts (id int PRIMARY KEY, qty int)")
        .await
        .expect("table");
    let bad = parquet(
        &home,
        "bad.parquet",
        "SELECT i AS id, CASE WHEN i = 3 THEN 'abc' ELSE i::varchar END AS qty FROM range(1, 6) t(i)",
        "",
    );
    let out = load(&db, &home, &[arg(&bad), "-t", "counts"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "bad.parquet: column \"qty\": invalid input syntax for type integer: \"abc\""
        ) && out.stderr.contains("row 3 of "),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "counts").await, 0);
}

#[tokio::test]
async fn a_parquet_file_upserts_by_key_its_columns_matched_by_name() {
    let db = TestDb::new("parquet_upsert").await;
    let home = Scratch::new("parquet-upsert");
    db.connect()
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, qty int, name text)")
        .await
        .expect("table");
    let first = parquet(
        &home,
        "first.parquet",
        "SELECT * FROM (VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c')) t(id, qty, name)",
        "",
    );
    let out = load(&db, &home, &[arg(&first), "-t", "items"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Another order, and without `name`: kept for the rows updated.
    let second = parquet(
        &home,
        "second.parquet",
        "SELECT * FROM (VALUES (20, 2), (31, 3), (40, 4)) t(qty, id)",
        ", COMPRESSION zstd",
    );
    let out = load(&db, &home, &[arg(&second), "-t", "items"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("3 rows read, 1 inserted, 1 updated, 1 unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(&db, "SELECT id, qty, name FROM items ORDER BY id").await,
        vec![
            vec![s("1"), s("10"), s("a")],
            vec![s("2"), s("20"), s("b")],
            vec![s("3"), s("31"), s("c")],
            vec![s("4"), s("40"), None],
        ]
    );
}

#[tokio::test]
async fn an_interrupted_parquet_load_goes_on_after_its_last_committed_batch() {
    let db = TestDb::new("parquet_resume").await;
    let home = Scratch::new("parquet-resume");
    let total = 1_200_000u64;
    let file = parquet(
        &home,
        "events.parquet",
        &format!("SELECT i AS id, 'event ' || i AS name FROM range(0, {total}) t(i)"),
        ", ROW_GROUP_SIZE 100000",
    );
    db.connect()
        .await
        .batch_execute("CREATE TABLE events (id bigint, name text)")
        .await
        .expect("table");
    let args = [
        "load",
        arg(&file),
        "-t",
        "events",
        "--db",
        &db.url,
        "--batch-rows",
        "200000",
    ];
    // SIGKILL once two batches committed: the keyless table is appended
    // to, so a row loaded twice would show.
    let ended = kill_once(&db, &home, &args, "events", 400_000).await;
    let committed = count(&db, "events").await;
    // `--mode append` is the same load as no mode on a keyless table.
    let rerun = run(pgbulk(&home).args(args).args(["--mode", "append"]));
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    if !ended && committed < total as i64 {
        let said = format!("{}{}", rerun.stdout, rerun.stderr);
        assert!(
            said.contains(&format!("resumed after {} rows", thousands(committed))),
            "{committed}: {said}"
        );
    }
    assert_eq!(
        rows(
            &db,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events"
        )
        .await,
        vec![vec![
            s(&total.to_string()),
            s(&total.to_string()),
            s("0"),
            s(&(total - 1).to_string())
        ]]
    );
    // CSV options do not make it another load.
    let again = run(pgbulk(&home)
        .args(args)
        .args(["--delimiter", ";", "--no-header"]));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    assert_eq!(count(&db, "events").await, total as i64);
}

/// `n` as the summary writes it (`1,200,000`).
fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn a_table_exported_to_parquet_loads_back_as_it_was() {
    let db = TestDb::new("parquet_round_trip").await;
    let home = Scratch::new("parquet-round-trip");
    db.connect()
        .await
        .batch_execute(crate::cli_export::TYPES)
        .await
        .expect("source");
    let lake = home.path().join("lake");
    let to = format!("parquet://{}", lake.display());
    let out = run(pgbulk(&home).args(["export", "--from", &db.url, "-t", "t", "--to", &to]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let files = lake.join("t").join("*.parquet");
    let out = load(&db, &home, &[arg(&files), "-t", "back"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&db, "back").await, 4);
    // Every value as the source holds it: the export writes uuid, enum and
    // interval as strings and json as Parquet JSON (so text and jsonb
    // here), and clamps dates and times to the warehouses' range (only the
    // first row's are in it).
    let same = "SELECT t.id FROM t JOIN back b USING (id) WHERE \
        (t.i2, t.i8, t.r, t.d, t.n, t.big, t.b, t.tx, CASE WHEN t.ch IS NOT NULL THEN format('%s', t.ch) END, t.u::text, t.j::jsonb, t.jb, \
         t.by, t.arr, t.tarr, t.m::text, t.p, t.iv::text, t.narr) IS NOT DISTINCT FROM \
        (b.i2, b.i8, b.r, b.d, b.n, b.big, b.b, b.tx, b.ch, b.u, b.j, b.jb, b.by, b.arr, b.tarr, b.m, b.p, b.iv, b.narr) \
        AND (t.id > 1 OR (t.dt, t.ts, t.tz, t.tm) = (b.dt, b.ts, b.tz, b.tm)) ORDER BY 1";
    assert_eq!(
        rows(&db, same).await,
        vec![vec![s("1")], vec![s("2")], vec![s("3")], vec![s("4")]]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT string_agg(format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = 'back'::regclass AND attname IN ('big', 'jb', 'narr', 'tz', 'ts')"
        )
        .await,
        vec![vec![s(
            "numeric(38,9), jsonb, timestamp without time zone, timestamp with time zone, numeric(5,1)[]"
        )]]
    );
}
