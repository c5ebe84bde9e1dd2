//! Files that arrive: a glob over a landing folder loads each file once,
//! by content, in name order.

use crate::cli_load::{count, load, rows};
use crate::harness::{Scratch, TestDb, pgbulk, run};

/// Rewrites `path` with `content` (same length), keeping its mtime.
fn rewrite_keeping_mtime(path: &std::path::Path, content: &str) {
    let meta = std::fs::metadata(path).expect("meta");
    assert_eq!(meta.len(), content.len() as u64, "same size");
    std::fs::write(path, content).expect("write");
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(meta.modified().expect("mtime"))
        .expect("set mtime");
}

#[tokio::test]
async fn a_landing_folder_loads_each_file_once() {
    let db = TestDb::new("landing").await;
    let home = Scratch::new("landing");
    std::fs::create_dir_all(home.path().join("landing")).expect("dir");
    home.file("landing/2024-05-01.csv", "day,sales\n1,10\n", 0o644);
    home.file("landing/2024-05-02.csv", "day,sales\n2,20\n", 0o644);
    // Append mode (no key): loading a file twice would duplicate its rows.
    let glob = "landing/*.csv";
    // A dry run says what would happen and changes nothing.
    let dry = load(&db, &home, &[glob, "-t", "sales", "--dry-run"]);
    assert!(dry.code == 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("public.sales would be created from inferred types")
            && dry
                .stdout
                .contains("2024-05-01.csv: would be loaded into public.sales")
            && dry
                .stdout
                .contains("2024-05-02.csv: would be loaded into public.sales"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        count(
            &db,
            "pg_class WHERE relname IN ('sales', 'pgbulk_watermark')"
        )
        .await,
        0
    );
    let first = load(&db, &home, &[glob, "-t", "sales"]);
    assert!(first.code == 0, "{}", first.stderr);
    assert!(
        first.stdout.contains("2 rows read, 2 inserted"),
        "{}",
        first.stdout
    );
    assert_eq!(count(&db, "sales").await, 2);

    let dry = load(&db, &home, &[glob, "-t", "sales", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("2024-05-01.csv: loaded completely by an earlier run"),
        "{}",
        dry.stdout
    );
    let again = load(&db, &home, &[glob, "-t", "sales"]);
    assert!(again.code == 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("by an earlier run") && again.stdout.contains("nothing to do"),
        "{}",
        again.stdout
    );
    assert_eq!(count(&db, "sales").await, 2);

    // A new file loads alone; the others are said to be skipped.
    home.file("landing/2024-05-03.csv", "day,sales\n3,30\n", 0o644);
    let third = load(&db, &home, &[glob, "-t", "sales"]);
    assert!(third.code == 0, "{}", third.stderr);
    assert!(
        third.stdout.contains("2024-05-03.csv into")
            && !third.stdout.contains("2024-05-01.csv")
            && third.stdout.contains("1 row read, 1 inserted"),
        "{}",
        third.stdout
    );
    assert!(third.stderr.contains("skipped"), "{}", third.stderr);
    assert_eq!(count(&db, "sales").await, 3);

    // Renamed: the same content, not loaded again.
    std::fs::rename(
        home.path().join("landing/2024-05-01.csv"),
        home.path().join("landing/2024-05-01.done.csv"),
    )
    .expect("rename");
    let renamed = load(&db, &home, &[glob, "-t", "sales"]);
    assert!(renamed.code == 0, "{}", renamed.stderr);
    assert_eq!(count(&db, "sales").await, 3, "{}", renamed.stdout);

    // Rewritten in place with the same size and mtime: noticed by its hash.
    rewrite_keeping_mtime(
        &home.path().join("landing/2024-05-02.csv"),
        "day,sales\n2,21\n",
    );
    let rewritten = load(&db, &home, &[glob, "-t", "sales"]);
    assert!(rewritten.code == 0, "{}", rewritten.stderr);
    assert!(
        rewritten.stdout.contains("2024-05-02.csv into") && rewritten.stdout.contains("1 inserted"),
        "{}",
        rewritten.stdout
    );
    assert_eq!(
        rows(&db, "SELECT day, sales FROM sales ORDER BY day, sales").await,
        [["1", "10"], ["2", "20"], ["2", "21"], ["3", "30"]]
            .map(|r| r.map(|v| Some(v.to_owned())).to_vec())
            .to_vec()
    );

    // The ledger, for one-off loads: each file loaded, and the last run.
    let status = run(pgbulk(&home).args(["status", "--table", "sales", "--db", &db.url]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.starts_with("sales\n")
            && status.stdout.contains("last run:  load at ")
            && status.stdout.contains("2024-05-03.csv (1 row) at ")
            && status.stdout.contains("2024-05-02.csv (1 row) at ")
            && !status.stdout.contains("pending"),
        "{}",
        status.stdout
    );

    // An empty folder (the pattern matches nothing) is nothing to load,
    // not a read of standard input.
    let none = load(&db, &home, &["empty/*.csv", "-t", "sales"]);
    assert!(none.code == 0, "{}", none.stderr);
    assert!(
        none.stdout.contains("no file matches empty/*.csv"),
        "{}",
        none.stdout
    );
}

#[tokio::test]
async fn a_failing_file_keeps_the_files_before_it() {
    let db = TestDb::new("landing_fail").await;
    let home = Scratch::new("landing-fail");
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
        .await
        .expect("table");
    home.file("a.csv", "id,n\n1,1\n", 0o644);
    home.file("b.csv", "id,n\n2,x\n", 0o644);
    home.file("c.csv", "id,n\n3,3\n", 0o644);
    let failed = load(&db, &home, &["*.csv", "-t", "t"]);
    assert_eq!(failed.code, 9, "{}", failed.stderr);
    assert!(failed.stderr.contains("b.csv"), "{}", failed.stderr);
    assert_eq!(count(&db, "t").await, 1, "a.csv committed, b.csv not");
    // Fixed (same size): a.csv is skipped, b.csv and c.csv load.
    home.file("b.csv", "id,n\n2,2\n", 0o644);
    let fixed = load(&db, &home, &["*.csv", "-t", "t"]);
    assert!(fixed.code == 0, "{}", fixed.stderr);
    assert!(
        fixed.stdout.contains("2 rows read, 2 inserted"),
        "{}",
        fixed.stdout
    );
    assert_eq!(count(&db, "t").await, 3);
}

#[tokio::test]
async fn json_logs_carry_the_error_kind_and_location() {
    let db = TestDb::new("landing_json").await;
    let home = Scratch::new("landing-json");
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
        .await
        .expect("table");
    home.file("bad.csv", "id,n\n1,1\n2,two\n", 0o644);
    let out = load(&db, &home, &["bad.csv", "-t", "t", "--log-format", "json"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let error = events
        .iter()
        .find(|e| e["event"] == "error")
        .unwrap_or_else(|| panic!("no error event in {}", out.stderr));
    assert_eq!(
        (
            error["level"].as_str(),
            error["kind"].as_str(),
            error["exit_code"].as_u64(),
            error["input"].as_str(),
            error["line"].as_u64(),
            error["column"].as_str(),
            error["value"].as_str(),
        ),
        (
            Some("ERROR"),
            Some("Data"),
            Some(9),
            Some("bad.csv"),
            Some(3),
            Some("n"),
            Some("two")
        ),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad.csv:3")),
        "{error}"
    );
}

#[tokio::test]
async fn killed_in_the_middle_of_a_folder_the_rerun_loads_each_row_once() {
    let db = TestDb::new("landing_kill").await;
    let home = Scratch::new("landing-kill");
    let per_file = 100_000u64;
    write_parts(&home, 3, per_file);
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id bigint, v text)")
        .await
        .expect("table");
    let args = [
        "load",
        "landing/*.csv",
        "-t",
        "t",
        "--db",
        &db.url,
        "--batch-rows",
        "10000",
        "--streams",
        "1",
    ];
    // SIGKILL once the second file is half loaded.
    let ended = kill_once(&db, &home, &args, "t", per_file * 3 / 2).await;
    assert!(!ended, "ended before the kill");
    let committed = count(&db, "t").await;
    assert!(committed < (per_file * 3) as i64, "killed before the end");
    let rerun = run(pgbulk(&home).args(args));
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    // A busy machine may let the load finish the second file before the
    // kill lands: a rerun then starts the third at its beginning.
    let mid_file = committed % per_file as i64 != 0;
    assert!(
        (!mid_file || rerun.stdout.contains("resumed after"))
            && rerun.stderr.contains("part-0.csv"),
        "{}\n{}",
        rerun.stdout,
        rerun.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t"
        )
        .await,
        vec![vec![
            Some((per_file * 3).to_string()),
            Some((per_file * 3).to_string()),
            Some("0".to_owned()),
            Some((per_file * 3 - 1).to_string()),
        ]]
    );
}

/// Writes `landing/part-F.csv` for F below `files`, each of `per_file`
/// rows `id,v` with ids following on from the file before.
fn write_parts(home: &Scratch, files: u64, per_file: u64) {
    for f in 0..files {
        let mut text = String::from("id,v\n");
        for i in 0..per_file {
            text.push_str(&format!("{},row {i} of file {f}\n", f * per_file + i));
        }
        home.file(&format!("landing/part-{f}.csv"), &text, 0o644);
    }
}

/// Runs pgbulk with `args` and SIGKILLs it once `table` holds `rows`
/// rows; whether it ended by itself first.
pub(crate) async fn kill_once(
    db: &TestDb,
    home: &Scratch,
    args: &[&str],
    table: &str,
    rows: u64,
) -> bool {
    let mut child = pgbulk(home)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut ended = false;
    while count(db, table).await < rows as i64 {
        if child.try_wait().expect("wait").is_some() {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    ended
}

/// Appends `text` to the file at `path`.
fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    std::fs::File::options()
        .append(true)
        .open(path)
        .expect("open")
        .write_all(text.as_bytes())
        .expect("append");
}

#[tokio::test]
async fn a_file_that_grows_loads_only_the_lines_appended() {
    let db = TestDb::new("landing_grown").await;
    let home = Scratch::new("landing-grown");
    let log = home.path().join("log.csv");
    home.file("log.csv", "day,sales\n1,10\n2,20\n", 0o644);
    let first = load(&db, &home, &["log.csv", "-t", "log"]);
    assert!(first.code == 0, "{}", first.stderr);
    // Append mode: the two rows appended, not all four again.
    append(&log, "3,30\n4,40\n");
    let grown = load(&db, &home, &["log.csv", "-t", "log"]);
    assert!(grown.code == 0, "{}", grown.stderr);
    assert!(
        grown.stdout.contains("2 rows read, 2 inserted")
            && grown.stderr.contains(
                "log.csv grew since an earlier run loaded its first 3 lines: loading the lines appended after them"
            ),
        "{}\n{}",
        grown.stdout,
        grown.stderr
    );
    let again = load(&db, &home, &["log.csv", "-t", "log"]);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    append(&log, "5,50\n");
    let dry = load(&db, &home, &["log.csv", "-t", "log", "--dry-run"]);
    assert!(
        dry.stdout.contains("log.csv: grew since an earlier run loaded its first 5 lines; the lines appended would be loaded into public.log"),
        "{}",
        dry.stdout
    );
    assert_eq!(count(&db, "log").await, 4);
    // A last line without its line break (still being written) is loaded
    // as it is; once it goes on, an append cannot tell what to add.
    append(&log, "6,6");
    let part = load(&db, &home, &["log.csv", "-t", "log"]);
    assert!(
        part.stdout.contains("2 rows read, 2 inserted"),
        "{}",
        part.stdout
    );
    append(&log, "0\n7,70\n");
    let refused = load(&db, &home, &["log.csv", "-t", "log"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("log.csv grew since an earlier run loaded its 7 lines, but the last of them had no line break then (it may have been written in part), so pgbulk cannot tell which of its rows are in public.log already; --restart appends all of it again"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        rows(&db, "SELECT day, sales FROM log ORDER BY day").await,
        [
            ["1", "10"],
            ["2", "20"],
            ["3", "30"],
            ["4", "40"],
            ["5", "50"],
            ["6", "6"]
        ]
        .map(|r| r.map(|v| Some(v.to_owned())).to_vec())
        .to_vec()
    );
    // An upsert loads all of it again instead: the row is corrected.
    let keyed = |table: &str| load(&db, &home, &["log.csv", "-t", table, "--key", "day"]);
    home.file("log.csv", "day,sales\n1,10\n6,6", 0o644);
    assert_eq!(keyed("keyed").code, 0);
    append(&log, "0\n7,70\n");
    let whole = keyed("keyed");
    assert!(
        whole
            .stdout
            .contains("3 rows read, 1 inserted, 1 updated, 1 unchanged")
            && whole.stderr.contains(
                "had no line break then (it may have been written in part): loading all of it"
            ),
        "{}\n{}",
        whole.stdout,
        whole.stderr
    );
    append(&log, "8,80\n");
    let more = keyed("keyed");
    assert!(
        more.stdout.contains("1 row read, 1 inserted"),
        "{}",
        more.stdout
    );
    assert_eq!(
        rows(&db, "SELECT day, sales FROM keyed ORDER BY day").await,
        [["1", "10"], ["6", "60"], ["7", "70"], ["8", "80"]]
            .map(|r| r.map(|v| Some(v.to_owned())).to_vec())
            .to_vec()
    );
    // Emptied since: all of it; changed in its first lines: a new file.
    db.connect()
        .await
        .batch_execute("TRUNCATE keyed")
        .await
        .expect("truncate");
    append(&log, "9,90\n");
    let emptied = keyed("keyed");
    assert!(
        emptied.stdout.contains("5 rows read, 5 inserted")
            && emptied.stderr.contains("public.keyed is empty now"),
        "{}\n{}",
        emptied.stdout,
        emptied.stderr
    );
    home.file(
        "log.csv",
        "day,sales\n1,11\n6,60\n7,70\n8,80\n9,90\n10,100\n",
        0o644,
    );
    let changed = keyed("keyed");
    assert!(
        changed
            .stdout
            .contains("6 rows read, 1 inserted, 1 updated, 4 unchanged")
            && !changed.stderr.contains("grew"),
        "{}\n{}",
        changed.stdout,
        changed.stderr
    );
}

#[tokio::test]
async fn a_big_file_loaded_in_halves_grows_and_only_its_tail_loads() {
    let db = TestDb::new("landing_grown_big").await;
    let home = Scratch::new("landing-grown-big");
    // Over 32 MB: loaded in two halves on two connections.
    let mut text = String::from("id,name\n");
    let rows_at_first = 1_100_000;
    for i in 0..rows_at_first {
        text.push_str(&format!("{i},name number {i} of the big file\n"));
    }
    assert!(text.len() > 32 << 20);
    home.file("big.csv", &text, 0o644);
    let first = load(&db, &home, &["big.csv", "-t", "big"]);
    assert!(first.code == 0, "{}", first.stderr);
    let ledger_rows = "pgbulk_watermark WHERE table_name LIKE 'public.big#load:%'";
    assert_eq!(count(&db, ledger_rows).await, 2, "one per half");
    append(&home.path().join("big.csv"), "-1,appended\n");
    let grown = load(&db, &home, &["big.csv", "-t", "big"]);
    assert!(
        grown.stdout.contains("1 row read, 1 inserted"),
        "{}\n{}",
        grown.stdout,
        grown.stderr
    );
    let again = load(&db, &home, &["big.csv", "-t", "big"]);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    let summary = "SELECT count(*), count(DISTINCT id), min(id) FROM big";
    let exact = |n: usize, min: &str| {
        vec![vec![
            Some(n.to_string()),
            Some(n.to_string()),
            Some(min.to_owned()),
        ]]
    };
    assert_eq!(rows(&db, summary).await, exact(rows_at_first + 1, "-1"));
    // Its ledger: one row for the file as it is now.
    assert_eq!(count(&db, ledger_rows).await, 1);

    // SIGKILL while the lines appended load: the same command goes on.
    let mut more = String::new();
    for i in 0..400_000 {
        more.push_str(&format!("-{},more\n", i + 2));
    }
    append(&home.path().join("big.csv"), &more);
    let args = [
        "load",
        "big.csv",
        "-t",
        "big",
        "--db",
        &db.url,
        "--batch-rows",
        "20000",
    ];
    kill_once(&db, &home, &args, "big", rows_at_first as u64 + 100_000).await;
    let rerun = run(pgbulk(&home).args(args));
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert_eq!(
        rows(&db, summary).await,
        exact(rows_at_first + 400_001, "-400001")
    );
    let again = load(&db, &home, &["big.csv", "-t", "big"]);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    // The run before the file grew is forgotten once the next completed,
    // interrupted or not.
    assert_eq!(count(&db, ledger_rows).await, 1);
}

/// Appended into a table without a key, files load two at once (each on a
/// connection of its own, with its own ledger row): killed, or stopped by
/// a bad file, the same command loads each row once. A keyed table (an
/// upsert, where a later file's row wins) loads them in order.
#[tokio::test]
async fn files_appended_two_at_once_load_each_row_once_killed_or_failing() {
    let db = TestDb::new("landing_at_once").await;
    let home = Scratch::new("landing-at-once");
    let per_file = 100_000u64;
    let files = 6;
    write_parts(&home, files, per_file);
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id bigint, v text); INSERT INTO t VALUES (-1, 'before')")
        .await
        .expect("table");
    let args = [
        "load",
        "landing/*.csv",
        "-t",
        "t",
        "--db",
        &db.url,
        "--batch-rows",
        "10000",
    ];
    let ended = kill_once(&db, &home, &args, "t", per_file * 2).await;
    assert!(!ended, "ended before the kill");
    let rerun = run(pgbulk(&home).args(args));
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert!(
        rerun
            .stderr
            .contains("appended up to 2 files at once, each on a connection of its own"),
        "{}",
        rerun.stderr
    );
    let total = per_file * files;
    assert_eq!(
        rows(
            &db,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t"
        )
        .await,
        vec![vec![
            Some((total + 1).to_string()),
            Some((total + 1).to_string()),
            Some("-1".to_owned()),
            Some((total - 1).to_string()),
        ]]
    );
    let again = run(pgbulk(&home).args(args));
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);

    // A bad file among them: the files before it, and those loading beside
    // it, keep their rows; fixed, the same command adds only the rest.
    for (name, text) in [
        ("a", "id,n\n1,1\n"),
        ("b", "id,n\n2,2\n"),
        ("c", "id,n\n3,x\n"),
        ("d", "id,n\n4,4\n"),
        ("e", "id,n\n5,5\n"),
    ] {
        home.file(&format!("bad/{name}.csv"), text, 0o644);
    }
    let failed = load(&db, &home, &["bad/*.csv", "-t", "u"]);
    assert_eq!(failed.code, 9, "{}", failed.stderr);
    assert!(failed.stderr.contains("c.csv:2"), "{}", failed.stderr);
    assert!(count(&db, "u").await >= 2, "a.csv and b.csv committed");
    home.file("bad/c.csv", "id,n\n3,3\n", 0o644);
    let fixed = load(&db, &home, &["bad/*.csv", "-t", "u"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert_eq!(
        rows(&db, "SELECT id, n FROM u ORDER BY id").await,
        (1..=5)
            .map(|i| vec![Some(i.to_string()), Some(i.to_string())])
            .collect::<Vec<_>>()
    );

    // The same content under two names, both new: loaded once, as one
    // after another would (the copy waits for the first and is skipped).
    home.file("dup/a.csv", "id,n\n7,7\n8,8\n", 0o644);
    home.file("dup/b.csv", "id,n\n7,7\n8,8\n", 0o644);
    home.file("dup/c.csv", "id,n\n9,9\n", 0o644);
    let dup = load(&db, &home, &["dup/*.csv", "-t", "u"]);
    assert_eq!(dup.code, 0, "{}", dup.stderr);
    assert!(
        dup.stderr.contains("b.csv loaded completely"),
        "{}",
        dup.stderr
    );
    assert_eq!(count(&db, "u").await, 8, "{}", dup.stdout);

    // Upserted, files load in order.
    let keyed = load(&db, &home, &["bad/*.csv", "-t", "k", "--key", "id"]);
    assert_eq!(keyed.code, 0, "{}", keyed.stderr);
    assert!(!keyed.stderr.contains("at once"), "{}", keyed.stderr);
}
