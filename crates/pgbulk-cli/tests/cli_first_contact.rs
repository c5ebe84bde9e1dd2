//! What a new user meets in the first hour of `pgbulk load`: ordinary text
//! never panics, a rerun never silently does nothing or loads twice, and
//! a wrong guess is said, not loaded.

use crate::cli_load::{assert_bad, assert_ok, count, load, rows, s};
use crate::harness::{Scratch, TestDb, pgbulk, run};

#[tokio::test]
async fn non_ascii_text_never_panics() {
    let db = TestDb::new("fc_unicode").await;
    let home = Scratch::new("fc-unicode");
    let file = home.file(
        "people.csv",
        "name,seen\nJosé Lu,2024-01-01 10:00+1é1\nZoë,2024-01-02\n",
        0o644,
    );
    assert!(file.exists());
    // The working directory is `home`: a relative name, as users type it.
    let f = "people.csv";
    let out = run(pgbulk(&home).args(["infer", f, "--table", "people"]));
    assert_ok(&out);
    assert!(out.stdout.contains("\"name\" text"), "{}", out.stdout);
    assert!(out.stdout.contains("\"seen\" text"), "{}", out.stdout);
    assert_ok(&load(&db, &home, &[f, "--table", "people"]));
    assert_eq!(
        rows(&db, "SELECT name, seen FROM people ORDER BY name").await,
        vec![
            vec![s("José Lu"), s("2024-01-01 10:00+1é1")],
            vec![s("Zoë"), s("2024-01-02")],
        ]
    );
    db.connect()
        .await
        .batch_execute("CREATE TABLE visits (name text, seen timestamptz)")
        .await
        .expect("table");
    assert_bad(
        &load(&db, &home, &[f, "--table", "visits"]),
        "people.csv:2:2: column \"seen\": invalid input syntax for type timestamp with time zone: \"2024-01-01 10:00+1é1\"",
    );
    assert_eq!(count(&db, "visits").await, 0);
}

#[tokio::test]
async fn a_truncated_or_emptied_table_is_loaded_again() {
    let db = TestDb::new("fc_truncate").await;
    let home = Scratch::new("fc-truncate");
    home.file("a.csv", "id,v\n1,x\n2,y\n", 0o644);
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int, v text)")
        .await
        .expect("table");
    assert_ok(&load(&db, &home, &["a.csv", "-t", "t"]));
    let again = load(&db, &home, &["a.csv", "-t", "t"]);
    assert_ok(&again);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    assert_eq!(count(&db, "t").await, 2);

    client.batch_execute("TRUNCATE t").await.expect("truncate");
    let out = load(&db, &home, &["a.csv", "-t", "t"]);
    assert_ok(&out);
    assert!(out.stderr.contains("t is empty now"), "{}", out.stderr);
    assert_eq!(count(&db, "t").await, 2);

    client.batch_execute("DELETE FROM t").await.expect("delete");
    assert_ok(&load(&db, &home, &["a.csv", "-t", "t"]));
    assert_eq!(count(&db, "t").await, 2, "a table emptied by DELETE too");

    // Rewritten but not empty: appending again could duplicate, so it is
    // refused with what to do; with a key the reload is safe.
    client.batch_execute("VACUUM FULL t").await.expect("vacuum");
    let refused = load(&db, &home, &["a.csv", "-t", "t"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(refused.stderr.contains("--restart"), "{}", refused.stderr);
    assert_eq!(count(&db, "t").await, 2);
    let keyed = load(
        &db,
        &home,
        &["a.csv", "-t", "t", "--mode", "upsert", "--key", "id"],
    );
    assert_ok(&keyed);
    assert_eq!(count(&db, "t").await, 2);
}

#[tokio::test]
async fn another_load_in_between_keeps_the_resume_point() {
    let db = TestDb::new("fc_between").await;
    let home = Scratch::new("fc-between");
    let mut a = String::from("id\n");
    for i in 0..10 {
        a.push_str(&format!("{i}\n"));
    }
    // Line 8 of a.csv (id 6.5) is bad: the run stops after batch 2.
    a = a.replace("\n6\n", "\n6.5\n");
    assert!(a.contains("6.5"));
    let a_path = home.file("a.csv", &a, 0o644);
    home.file("b.csv", "id\n100\n101\n", 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .expect("table");
    let failed = load(&db, &home, &["a.csv", "-t", "t", "--batch-rows", "3"]);
    assert_eq!(failed.code, 9, "{}", failed.stderr);
    assert_eq!(count(&db, "t").await, 6);
    assert_ok(&load(&db, &home, &["b.csv", "-t", "t"]));
    // The fix keeps size and mtime: the same input, corrected in place.
    let fixed = a.replace("\n6.5\n", "\n6  \n");
    assert_eq!(fixed.len(), a.len());
    let meta = std::fs::metadata(&a_path).expect("meta");
    std::fs::write(&a_path, &fixed).expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(&a_path)
        .expect("open");
    file.set_modified(meta.modified().expect("mtime"))
        .expect("set mtime");
    let out = load(&db, &home, &["a.csv", "-t", "t", "--batch-rows", "3"]);
    assert_ok(&out);
    assert!(
        out.stdout.contains("resumed after 6 rows"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(&db, "SELECT count(*), count(DISTINCT id) FROM t").await,
        vec![vec![s("12"), s("12")]],
        "every row of a.csv and b.csv exactly once"
    );
}

#[tokio::test]
async fn changed_options_are_a_new_load() {
    let db = TestDb::new("fc_options").await;
    let home = Scratch::new("fc-options");
    home.file("m.csv", "code;qty\nA;NA\nB;2\n", 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE m (code text, qty text)")
        .await
        .expect("table");
    // The wrong delimiter: one column named "code;qty" does not match.
    let wrong = load(&db, &home, &["m.csv", "-t", "m", "--ignore-extra"]);
    assert_eq!(wrong.code, 9, "{}", wrong.stderr);
    assert!(
        wrong
            .stderr
            .contains("no column of the input matches a column of public.m"),
        "{}",
        wrong.stderr
    );
    assert_ok(&load(&db, &home, &["m.csv", "-t", "m", "--delimiter", ";"]));
    assert_eq!(
        rows(&db, "SELECT code, qty FROM m ORDER BY code").await,
        vec![vec![s("A"), s("NA")], vec![s("B"), s("2")]]
    );
    let with_null = load(
        &db,
        &home,
        &[
            "m.csv",
            "-t",
            "m",
            "--delimiter",
            ";",
            "--null",
            "NA",
            "--mode",
            "upsert",
            "--key",
            "code",
        ],
    );
    assert_ok(&with_null);
    assert!(
        !with_null.stdout.contains("nothing to do"),
        "{}",
        with_null.stdout
    );
    assert_eq!(
        rows(&db, "SELECT code, qty FROM m ORDER BY code").await,
        vec![vec![s("A"), None], vec![s("B"), s("2")]]
    );
    // Replace follows the same rule: done once, then nothing to do.
    let replace = ["m.csv", "-t", "m", "--delimiter", ";", "--mode", "replace"];
    assert_ok(&load(&db, &home, &replace));
    let again = load(&db, &home, &replace);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    assert_eq!(count(&db, "m").await, 2);
}

#[tokio::test]
async fn repeated_keys_are_counted_and_said() {
    let db = TestDb::new("fc_repeats").await;
    let home = Scratch::new("fc-repeats");
    home.file(
        "f.csv",
        "day,flight,carrier,dep\n1,10,AA,a\n1,10,AA,b\n2,10,AA,c\n1,10,AA,d\n3,11,UA,e\n",
        0o644,
    );
    let key = ["--key", "day,flight,carrier"];
    let out = load(&db, &home, &[&["f.csv", "-t", "last"][..], &key].concat());
    assert_ok(&out);
    assert!(
        out.stdout.contains("3 inserted, 0 updated, 0 unchanged, 2 repeated a key already in their batch (the last row per key was kept)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(&db, "SELECT dep FROM last ORDER BY day").await,
        vec![vec![s("d")], vec![s("c")], vec![s("e")]]
    );
    let first = load(
        &db,
        &home,
        &[
            &["f.csv", "-t", "first", "--on-duplicate", "first"][..],
            &key,
        ]
        .concat(),
    );
    assert_ok(&first);
    assert!(
        first.stdout.contains("the first row per key was kept"),
        "{}",
        first.stdout
    );
    assert_eq!(
        rows(&db, "SELECT dep FROM first ORDER BY day").await,
        vec![vec![s("a")], vec![s("c")], vec![s("e")]]
    );
    assert_bad(
        &load(
            &db,
            &home,
            &[
                &["f.csv", "-t", "strict", "--on-duplicate", "error"][..],
                &key,
            ]
            .concat(),
        ),
        "batch 1, table public.strict: 2 rows repeat the key of another row in the same batch, e.g. (\"day\", \"flight\", \"carrier\") = (1,10,AA); --on-duplicate last or first keeps one row per key",
    );
    assert_eq!(count(&db, "pg_class WHERE relname = 'strict'").await, 1);
    assert_eq!(count(&db, "strict").await, 0);
}
