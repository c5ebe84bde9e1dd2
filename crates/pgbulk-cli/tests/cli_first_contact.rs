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
