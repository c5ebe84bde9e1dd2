//! `pgbulk load --streams N` of an upsert: each key's rows on one of N
//! connections; the last row of a key wins, a failing stream hands over to
//! one connection from the last committed batch, a killed run is completed
//! by the next.

use std::process::{Command, Stdio};

use crate::cli_load::{assert_ok, count, server_version};
use crate::harness::{Scratch, TestDb, pgbulk, run};

/// Keys in the tests' tables.
const KEYS: u64 = 40_000;

/// A file of three passes over the keys: every key in pass 0 (ascending),
/// every key in pass 1 (descending, so a key's two rows may share a batch),
/// the even keys in pass 2. The last row of an odd key is its pass 1 row,
/// of an even key its pass 2 row.
fn three_passes() -> String {
    padded_passes(72)
}

/// [`three_passes`] with `pad` bytes of padding in each row.
fn padded_passes(pad: usize) -> String {
    let pad = "x".repeat(pad);
    let mut text = String::with_capacity((pad.len() + 40) * 3 * KEYS as usize);
    text.push_str("id,v,n\n");
    for i in 0..KEYS {
        text.push_str(&format!("{i},pass0 {pad},0\n"));
    }
    for i in (0..KEYS).rev() {
        text.push_str(&format!("{i},pass1 {pad},1\n"));
    }
    for i in (0..KEYS).step_by(2) {
        text.push_str(&format!("{i},pass2 {pad},2\n"));
    }
    text
}

/// A table holding every key with an old value.
async fn keyed_table(db: &TestDb) {
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE u (id int PRIMARY KEY, v text, n int); \
             INSERT INTO u SELECT i, 'old', -1 FROM generate_series(0, {}) i",
            KEYS - 1
        ))
        .await
        .expect("table");
}

/// Whether every key holds its last row of [`three_passes`].
async fn holds_last_rows(db: &TestDb) -> (i64, i64) {
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE n = CASE WHEN id % 2 = 0 THEN 2 ELSE 1 END \
               AND v LIKE 'pass' || n || ' %') FROM u",
            &[],
        )
        .await
        .expect("q");
    (row.get(0), row.get(1))
}

fn load_args<'a>(file: &'a str, url: &'a str) -> Vec<&'a str> {
    vec![
        "load",
        file,
        "--table",
        "u",
        "--db",
        url,
        "--batch-rows",
        "15000",
        "--streams",
        "2",
        "-v",
    ]
}

#[tokio::test]
async fn an_upsert_on_two_connections_keeps_the_last_row_of_each_key() {
    let db = TestDb::new("upsert_streams").await;
    let home = Scratch::new("upsert-streams");
    keyed_table(&db).await;
    let file = home.file("passes.csv", &three_passes(), 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args(load_args(f, &db.url)));
    assert_ok(&out);
    assert!(
        out.stderr.contains("upserting on 2 connections"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("going on with one"), "{}", out.stderr);
    // Two and a half passes over the keys.
    assert!(out.stdout.contains("100,000 rows read"), "{}", out.stdout);
    // Each batch's commit is logged once, with both connections' counts.
    for batch in 1..=7 {
        let logged = out
            .stderr
            .matches(&format!("batch {batch} committed into"))
            .count();
        assert_eq!(logged, 1, "batch {batch}: {}", out.stderr);
    }
    assert_eq!(holds_last_rows(&db).await, (KEYS as i64, KEYS as i64));
    // The ledger says the file is loaded: the same command does nothing.
    let again = run(pgbulk(&home).args(load_args(f, &db.url)));
    assert!(
        again.stdout.contains("was loaded completely into"),
        "{}",
        again.stdout
    );
}

#[tokio::test]
async fn a_bad_row_in_a_parallel_upsert_is_named_by_one_connection_from_the_last_batch() {
    let db = TestDb::new("upsert_streams_bad").await;
    let home = Scratch::new("upsert-streams-bad");
    keyed_table(&db).await;
    let mut text = three_passes();
    // Line 2 is key 0's first row: the 50,001st line (a pass 1 row) is in
    // the fourth batch of 15,000 rows.
    let line = 50_001;
    let start = text
        .match_indices('\n')
        .nth(line - 2)
        .map(|(i, _)| i + 1)
        .expect("line");
    let end = start + text[start..].find('\n').expect("end");
    let bad = text[start..end].replacen(",1", ",not a number", 1);
    text.replace_range(start..end, &bad);
    let file = home.file("bad.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args(load_args(f, &db.url)));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("going on with one"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("bad.csv:{line}")),
        "the row is named: {}",
        out.stderr
    );
    // The three batches before it committed, on both connections.
    let changed: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM u WHERE n >= 0", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(changed, KEYS as i64, "every key's pass 0 row is in");
}

#[tokio::test]
async fn a_key_value_the_server_converts_hands_the_upsert_to_one_connection() {
    let db = TestDb::new("upsert_streams_dates").await;
    let home = Scratch::new("upsert-streams-dates");
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE d (day date PRIMARY KEY, v text)")
        .await
        .expect("table");
    // Distinct days, ISO, then 1999-01-08 again as `01/08/1999` (the server
    // reads it by its DateStyle, MDY): the later row must win.
    let days: Vec<String> = client
        .query(
            "SELECT (date '1990-01-01' + i)::text FROM generate_series(0, 19999) i",
            &[],
        )
        .await
        .expect("days")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pad = "y".repeat(20);
    let mut text = String::from("day,v\n");
    for day in &days {
        text.push_str(&format!("{day},first {pad}\n"));
    }
    text.push_str("01/08/1999,last\n");
    let file = home.file("days.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args([
        "load",
        f,
        "--table",
        "d",
        "--db",
        &db.url,
        "--batch-rows",
        "5000",
        "--streams",
        "2",
        "-v",
    ]));
    assert_ok(&out);
    assert!(out.stderr.contains("going on with one"), "{}", out.stderr);
    // The connection that goes on numbers its batches after those the
    // two committed: each number is logged once.
    for batch in 1..=5 {
        let logged = out
            .stderr
            .matches(&format!("batch {batch} committed into"))
            .count();
        assert!(logged <= 1, "batch {batch}: {}", out.stderr);
    }
    assert!(
        out.stderr.contains("batch 5 committed into"),
        "{}",
        out.stderr
    );
    // One load: the rows the two connections committed count once, and
    // not as an earlier run's. The second connection's share of the batch
    // that failed may have committed: upserted again, unchanged.
    let count = |what: &str| -> u64 {
        let end = out.stdout.find(&format!(" {what}")).expect(what);
        let start = out.stdout[..end].rfind(' ').map_or(0, |i| i + 1);
        out.stdout[start..end].replace(',', "").parse().expect(what)
    };
    assert_eq!(count("rows read"), 20_001, "{}", out.stdout);
    assert_eq!(count("updated"), 1, "{}", out.stdout);
    assert_eq!(
        count("inserted") + count("unchanged"),
        20_000,
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("5 batches"), "{}", out.stdout);
    assert!(!out.stdout.contains("earlier run"), "{}", out.stdout);
    let row = client
        .query_one(
            "SELECT count(*), (SELECT v FROM d WHERE day = '1999-01-08') FROM d",
            &[],
        )
        .await
        .expect("q");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (days.len() as i64, "last".to_owned())
    );
}

/// Killed with SIGKILL while its streams commit (one may have committed a
/// batch the other has not), then run again: every key ends with its last
/// row.
#[tokio::test]
async fn a_killed_parallel_upsert_then_the_same_command_converges() {
    killed_twice_then_converges("upsert_streams_kill", &three_passes(), &["--streams", "2"]).await;
}

/// The same without `--streams`, on a file big enough (37 MB) for its
/// first rows to choose (two connections: every row changes one).
#[tokio::test]
async fn a_killed_upsert_on_connections_its_first_rows_chose_then_the_same_command_converges() {
    killed_twice_then_converges("upsert_streams_kill_auto", &padded_passes(360), &[]).await;
}

/// Loads `text` ([`padded_passes`]) with `streams` into a table holding
/// every key, kills the run after 10,000 and then 50,000 rows changed,
/// then runs the same command to its end: every key holds its last row.
async fn killed_twice_then_converges(name: &str, text: &str, streams: &[&str]) {
    let db = TestDb::new(name).await;
    let home = Scratch::new(&name.replace('_', "-"));
    keyed_table(&db).await;
    let file = home.file("passes.csv", text, 0o644);
    let f = file.to_str().expect("utf8");
    let mut command = vec![
        "load",
        f,
        "--table",
        "u",
        "--db",
        &db.url,
        "--batch-rows",
        "15000",
    ];
    command.extend_from_slice(streams);
    let client = db.connect().await;
    let mut killed = 0;
    for at in [10_000i64, 50_000] {
        let child = pgbulk(&home)
            .args(&command)
            .arg("--restart")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id().to_string();
        let mut child = child;
        loop {
            // Rows some stream has committed since the run began.
            let changed: i64 = client
                .query_one(
                    "SELECT coalesce(sum(n_tup_upd), 0)::int8 FROM pg_stat_user_tables WHERE relname = 'u'",
                    &[],
                )
                .await
                .expect("q")
                .get(0);
            if changed >= at || child.try_wait().expect("wait").is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("kill");
        let status = child.wait().expect("wait");
        killed += usize::from(status.code().is_none());
    }
    assert!(killed > 0, "no run was killed before it ended");
    let out = run(pgbulk(&home).args(&command));
    assert_ok(&out);
    assert_eq!(holds_last_rows(&db).await, (KEYS as i64, KEYS as i64));
}

/// A `--restart` run stopped after the other streams committed their
/// shares of its first batch, and before the first stream committed its
/// share with the position: the next run does not take the position a
/// completed earlier run stored for done (it would leave the first
/// batch's older rows in). The first stream is held in its commit by a
/// deferred trigger on the ledger table waiting for a lock the test holds,
/// and its backend terminated there with the run: no timing decides.
#[tokio::test]
async fn a_restart_stopped_between_the_streams_commits_is_not_taken_for_done() {
    let db = TestDb::new("upsert_streams_restart_stop").await;
    let home = Scratch::new("upsert-streams-restart-stop");
    keyed_table(&db).await;
    let file = home.file("passes.csv", &three_passes(), 0o644);
    let f = file.to_str().expect("utf8");
    let command = [
        "load",
        f,
        "--table",
        "u",
        "--db",
        &db.url,
        "--batch-rows",
        "15000",
        "--streams",
        "2",
    ];
    let done = run(pgbulk(&home).args(command).arg("--restart"));
    assert_ok(&done);
    assert_eq!(holds_last_rows(&db).await, (KEYS as i64, KEYS as i64));
    let holder = db.connect().await;
    holder
        .batch_execute(
            "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER hold AFTER INSERT OR UPDATE ON pgbulk_watermark \
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold();
             SELECT pg_advisory_lock(4242);",
        )
        .await
        .expect("hold the ledger's commits");
    let mut child = pgbulk(&home)
        .args(command)
        .arg("--restart")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    let held = loop {
        let pids: Vec<i32> = holder
            .query(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("activity")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let [pid] = pids.as_slice() {
            break *pid;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended though its commit was held"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no commit of the run waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(child.wait().expect("wait").code().is_none(), "killed");
    holder
        .batch_execute(&format!(
            "SELECT pg_terminate_backend({held}); DROP TRIGGER hold ON pgbulk_watermark; \
             SELECT pg_advisory_unlock(4242)"
        ))
        .await
        .expect("release");
    let out = run(pgbulk(&home).args(command));
    assert_ok(&out);
    assert_eq!(holds_last_rows(&db).await, (KEYS as i64, KEYS as i64));
}

/// Without `--streams`, the first rows of an upsert of a big file choose:
/// two connections when most of them change rows of the table, one when
/// most are already in it or new.
#[tokio::test]
async fn without_streams_the_first_rows_choose_the_connections() {
    let db = TestDb::new("upsert_streams_auto").await;
    let home = Scratch::new("upsert-streams-auto");
    keyed_table(&db).await;
    // Over 32 MB (a big file), every key with a new value.
    let pad = "y".repeat(860);
    let mut text = String::with_capacity(880 * KEYS as usize);
    text.push_str("id,v,n\n");
    for i in 0..KEYS {
        text.push_str(&format!("{i},new {pad},7\n"));
    }
    let file = home.file("changed.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let args = [
        "load",
        f,
        "--table",
        "u",
        "--db",
        &db.url,
        "--restart",
        "-v",
    ];
    let out = run(pgbulk(&home).args(args));
    assert_ok(&out);
    assert!(
        out.stderr.contains(
            "20000 of the first 20000 rows changed a row of it: upserting the rest on 2 connections"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("40,000 updated") && out.stdout.contains("2 batches"),
        "{}",
        out.stdout
    );
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE n = 7 AND v = 'new ' || repeat('y', 860)) FROM u",
            &[],
        )
        .await
        .expect("q");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (KEYS as i64, KEYS as i64)
    );
    // The same rows again change nothing: one connection.
    let again = run(pgbulk(&home).args(args));
    assert_ok(&again);
    assert!(
        again.stdout.contains("40,000 unchanged"),
        "{}",
        again.stdout
    );
    assert!(!again.stderr.contains("connections"), "{}", again.stderr);
    // New keys go no faster on two: one connection.
    let new_keys: String = std::iter::once("id,v,n\n".to_owned())
        .chain((KEYS..2 * KEYS).map(|i| format!("{i},new {pad},8\n")))
        .collect();
    let file = home.file("new.csv", &new_keys, 0o644);
    let f = file.to_str().expect("utf8");
    let args = ["load", f, "--table", "u", "--db", &db.url, "-v"];
    let out = run(pgbulk(&home).args(args));
    assert_ok(&out);
    assert!(out.stdout.contains("40,000 inserted"), "{}", out.stdout);
    assert!(!out.stderr.contains("connections"), "{}", out.stderr);
    assert_eq!(count(&db, "u").await, 2 * KEYS as i64);
}

/// Keys of [`rewrite_table`].
const TABLE_KEYS: i64 = 130_000;
/// Keys of the table that [`changing_most_rows`] changes.
const CHANGED_KEYS: i64 = 120_000;
/// Keys [`changing_most_rows`] adds.
const NEW_KEYS: i64 = 10_000;

/// A table holding keys 0 to [`TABLE_KEYS`] with old values, analyzed,
/// with a view over it.
async fn rewrite_table(db: &TestDb) -> u32 {
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE r (id int PRIMARY KEY, v text, n int); \
             INSERT INTO r SELECT i, 'old', -1 FROM generate_series(0, {}) i; \
             ANALYZE r; \
             CREATE VIEW rv AS SELECT id, n FROM r",
            TABLE_KEYS - 1
        ))
        .await
        .expect("table");
    oid_of_r(db).await
}

async fn oid_of_r(db: &TestDb) -> u32 {
    db.connect()
        .await
        .query_one("SELECT 'r'::regclass::oid", &[])
        .await
        .expect("oid")
        .get(0)
}

/// A file (34 MB) changing the first [`CHANGED_KEYS`] keys of
/// [`rewrite_table`] to `n` and adding [`NEW_KEYS`] keys after its own.
fn changing_most_rows(n: u32) -> String {
    let pad = "z".repeat(250);
    let mut text = String::from("id,v,n\n");
    let keys = (0..CHANGED_KEYS).chain(TABLE_KEYS..TABLE_KEYS + NEW_KEYS);
    for i in keys {
        text.push_str(&format!("{i},new {pad},{n}\n"));
    }
    text
}

/// Whether `r` holds [`changing_most_rows`]`(n)` over its old rows:
/// (rows, rows as expected).
async fn holds_changed_rows(db: &TestDb, n: i32) -> (i64, i64) {
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE CASE \
               WHEN id < $2 OR id >= $3 THEN n = $1 AND v = 'new ' || repeat('z', 250) \
               ELSE n = -1 AND v = 'old' END) FROM rv JOIN r USING (id, n)",
            &[&n, &(CHANGED_KEYS as i32), &(TABLE_KEYS as i32)],
        )
        .await
        .expect("q");
    (row.get(0), row.get(1))
}

/// Without `--batch-rows`, a big file whose first rows change rows of the
/// table and that holds rows enough to change most of it goes in one batch
/// after its first rows, which rewrites the table (PostgreSQL 15+):
/// inserted and updated counted exactly, the rows not in the file kept,
/// the view over the table following it. The same rows again change
/// nothing and rewrite nothing; with `--batch-rows` asked for, batches
/// stay batches, and `--no-rewrite` merges.
#[tokio::test]
async fn a_big_file_changing_most_rows_of_a_table_rewrites_it_in_one_batch() {
    let db = TestDb::new("upsert_rewrite").await;
    let home = Scratch::new("upsert-rewrite");
    let oid = rewrite_table(&db).await;
    let rewrites = server_version(&db).await >= 150_000;
    let file = home.file("changed.csv", &changing_most_rows(7), 0o644);
    let f = file.to_str().expect("utf8");
    let args = ["load", f, "--table", "r", "--db", &db.url, "-v"];
    let out = run(pgbulk(&home).args(args));
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("130,000 rows read, 10,000 inserted, 120,000 updated, 0 unchanged"),
        "{}",
        out.stdout
    );
    let total = TABLE_KEYS + NEW_KEYS;
    assert_eq!(holds_changed_rows(&db, 7).await, (total, total));
    let now = oid_of_r(&db).await;
    if rewrites {
        assert!(
            out.stderr
                .contains("loading the rest in one batch, which rewrites it")
                && out
                    .stderr
                    .contains("r: most of its rows changed: rewritten as a new copy"),
            "{}",
            out.stderr
        );
        assert!(out.stdout.contains("2 batches"), "{}", out.stdout);
        assert_ne!(now, oid, "a new copy swapped in");
    } else {
        assert_eq!(now, oid, "merged in place");
    }
    // The same rows again: unchanged, merged in place.
    let again = run(pgbulk(&home).args(args).arg("--restart"));
    assert_ok(&again);
    assert!(
        again
            .stdout
            .contains("0 inserted, 0 updated, 130,000 unchanged"),
        "{}",
        again.stdout
    );
    assert!(!again.stderr.contains("rewrit"), "{}", again.stderr);
    // Batches asked for stay batches, and `--no-rewrite` merges.
    for (n, flags) in [
        (8, &["--batch-rows", "1000000"][..]),
        (9, &["--no-rewrite"][..]),
    ] {
        let file = home.file(&format!("changed{n}.csv"), &changing_most_rows(n), 0o644);
        let f = file.to_str().expect("utf8");
        let out = run(pgbulk(&home)
            .args(["load", f, "--table", "r", "--db", &db.url, "-v"])
            .args(flags));
        assert_ok(&out);
        assert!(
            out.stdout
                .contains("130,000 rows read, 0 inserted, 130,000 updated"),
            "{flags:?}: {}",
            out.stdout
        );
        assert!(!out.stderr.contains("rewrit"), "{flags:?}: {}", out.stderr);
        assert_eq!(holds_changed_rows(&db, n as i32).await, (total, total));
    }
}

/// Killed with SIGKILL while the batch after its first rows rewrites the
/// table, then run again: the table holds its old rows but the first
/// batch's until then (the rewrite rolled back whole), and every row of
/// the file after the rerun.
#[tokio::test]
async fn a_load_killed_while_it_rewrites_the_table_then_the_same_command_converges() {
    let db = TestDb::new("upsert_rewrite_kill").await;
    let home = Scratch::new("upsert-rewrite-kill");
    rewrite_table(&db).await;
    if server_version(&db).await < 150_000 {
        return;
    }
    let file = home.file("changed.csv", &changing_most_rows(7), 0o644);
    let f = file.to_str().expect("utf8");
    let args = ["load", f, "--table", "r", "--db", &db.url];
    let mut child = pgbulk(&home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let client = db.connect().await;
    let mut rewriting = false;
    while child.try_wait().expect("wait").is_none() {
        rewriting = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE 'WITH joined AS%')",
                &[],
            )
            .await
            .expect("q")
            .get(0);
        if rewriting {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(rewriting, "the run ended before its rewrite was seen");
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill");
    child.wait().expect("wait");
    // The first batch (20,000 rows) committed; the rest is not in.
    let changed: i64 = client
        .query_one("SELECT count(*) FROM r WHERE n = 7", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(changed, 20_000);
    let out = run(pgbulk(&home).args(args));
    assert_ok(&out);
    assert!(
        out.stdout.contains("110,000 rows read"),
        "continued after the first batch: {}",
        out.stdout
    );
    let total = TABLE_KEYS + NEW_KEYS;
    assert_eq!(holds_changed_rows(&db, 7).await, (total, total));
}

/// A batch (of a small file, here on one connection from the start) whose
/// rows change most of the table rewrites it too (PostgreSQL 15+); one
/// repeating a key is merged, its last row winning.
#[tokio::test]
async fn a_batch_changing_most_rows_of_a_table_rewrites_it() {
    let db = TestDb::new("batch_rewrite").await;
    let home = Scratch::new("batch-rewrite");
    let oid = rewrite_table(&db).await;
    let rewrites = server_version(&db).await >= 150_000;
    let short = |n: u32, repeat: bool| {
        let mut text = String::from("id,v,n\n");
        for i in (0..CHANGED_KEYS).chain(TABLE_KEYS..TABLE_KEYS + NEW_KEYS) {
            text.push_str(&format!("{i},new {},{n}\n", "z".repeat(250)));
        }
        if repeat {
            text = text.replacen(",new ", ",first ", 1);
            text.push_str(&format!("0,new {},{n}\n", "z".repeat(250)));
        }
        text
    };
    // Under 32 MB: one connection, one batch.
    let text = short(7, false).replace(&"z".repeat(250), "");
    let file = home.file("short.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args(["load", f, "--table", "r", "--db", &db.url, "-v"]));
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("130,000 rows read, 10,000 inserted, 120,000 updated, 0 unchanged")
            && out.stdout.contains("1 batch "),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stderr.contains("rewritten as a new copy"),
        rewrites,
        "{}",
        out.stderr
    );
    let (rows, changed): (i64, i64) = {
        let row = db
            .connect()
            .await
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE n = 7 AND v = 'new ') FROM rv JOIN r USING (id, n)",
                &[],
            )
            .await
            .expect("q");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (rows, changed),
        (TABLE_KEYS + NEW_KEYS, CHANGED_KEYS + NEW_KEYS)
    );
    let now = oid_of_r(&db).await;
    assert_eq!(now != oid, rewrites);
    // A key repeated: merged, the last row of key 0 winning.
    let text = short(8, true).replace(&"z".repeat(250), "");
    let file = home.file("repeat.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args(["load", f, "--table", "r", "--db", &db.url, "-v"]));
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("130,001 rows read, 0 inserted, 130,000 updated, 0 unchanged"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("rewrit"), "{}", out.stderr);
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE n = 8 AND v = 'new '), (SELECT v FROM r WHERE id = 0) FROM r",
            &[],
        )
        .await
        .expect("q");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (CHANGED_KEYS + NEW_KEYS, "new ".to_owned())
    );
}

/// Without `--batch-rows`, a big file whose first rows change nothing
/// goes in one batch after them (one read of the table instead of one per
/// batch); rows further on that change or add rows are merged in it,
/// counted exactly.
#[tokio::test]
async fn a_big_file_whose_first_rows_change_nothing_goes_in_one_batch() {
    let db = TestDb::new("upsert_unchanged_one_batch").await;
    let home = Scratch::new("upsert-unchanged-one-batch");
    let keys = 1_200_000;
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE s (id int PRIMARY KEY, v text); \
             INSERT INTO s SELECT i, 'same value, padded ' || i FROM generate_series(0, {}) i; \
             ANALYZE s",
            keys - 1
        ))
        .await
        .expect("table");
    // Every key as it is but one, changed halfway, and 100,000 new keys.
    let mut text = String::with_capacity(48 * (keys + 100_000));
    text.push_str("id,v\n");
    for i in 0..keys + 100_000 {
        if i == keys / 2 {
            text.push_str(&format!("{i},changed\n"));
        } else {
            text.push_str(&format!("{i},\"same value, padded {i}\"\n"));
        }
    }
    let file = home.file("same.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args(["load", f, "--table", "s", "--db", &db.url, "-v"]));
    assert_ok(&out);
    assert!(
        out.stderr.contains("the first 20000 rows changed nothing")
            && out.stderr.contains("loading the rest in one batch"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("1,300,000 rows read, 100,000 inserted, 1 updated, 1,199,999 unchanged")
            && out.stdout.contains("2 batches"),
        "{}",
        out.stdout
    );
    // The rest's batch goes on counting from the first rows' one.
    assert!(
        out.stderr.matches("batch 1 committed").count() == 1
            && out.stderr.contains("batch 2 committed"),
        "{}",
        out.stderr
    );
    let row = db
        .connect()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE v = 'same value, padded ' || id), \
                    (SELECT v FROM s WHERE id = $1) FROM s",
            &[&(keys as i32 / 2)],
        )
        .await
        .expect("q");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2)
        ),
        (
            keys as i64 + 100_000,
            keys as i64 + 100_000 - 1,
            "changed".to_owned()
        )
    );
}

/// A row without its key in a batch that would rewrite the table fails
/// the load naming its line, and the table keeps its rows and its oid.
#[tokio::test]
async fn a_row_without_its_key_in_a_batch_that_would_rewrite_fails_naming_its_line() {
    let db = TestDb::new("batch_rewrite_null_key").await;
    let home = Scratch::new("batch-rewrite-null-key");
    let oid = rewrite_table(&db).await;
    let mut text = String::from("id,v,n\n");
    for i in 0..CHANGED_KEYS {
        text.push_str(&format!("{i},new,7\n"));
        if i == 70_000 {
            text.push_str(",no key,7\n");
        }
    }
    let file = home.file("nokey.csv", &text, 0o644);
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args(["load", f, "--table", "r", "--db", &db.url]));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("nokey.csv:70003") && out.stderr.contains("column \"id\""),
        "{}",
        out.stderr
    );
    assert_eq!(oid_of_r(&db).await, oid);
    assert_eq!(count(&db, "r WHERE n = -1").await, TABLE_KEYS);
}
