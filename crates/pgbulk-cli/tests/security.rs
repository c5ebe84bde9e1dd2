//! What a hostile input, flag or file system cannot make pgbulk do: run
//! SQL it did not write, print a password, leak rejected rows to other
//! users, or overwrite a file through a link.

use std::os::unix::fs::PermissionsExt;

use crate::cli_load::{count, load, rows, s};
use crate::harness::{Scratch, TestDb, pgbulk, run, server};

const HOSTILE: &str = "a\"; DROP TABLE x; --";

#[tokio::test]
async fn hostile_names_and_markers_are_identifiers_and_values_never_sql() {
    let db = TestDb::new("sec_names").await;
    let home = Scratch::new("sec-names");
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    // A table whose name and first column are hostile (a header matches
    // it exactly; a table pgbulk creates gets normalised names instead).
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE x (keep int); INSERT INTO x VALUES (1);
             CREATE TABLE public.{t} ({t} int, v text);",
            t = quoted(HOSTILE)
        ))
        .await
        .expect("tables");
    // A header, a table name, a key and a NULL marker, all hostile.
    home.file(
        "h.csv",
        &format!("{},v\n1,'); DROP TABLE x; --\n2,\n", quoted(HOSTILE)),
        0o644,
    );
    let table = format!("public.{}", quoted(HOSTILE));
    let out = load(
        &db,
        &home,
        &[
            "h.csv",
            "-t",
            &table,
            "--key",
            HOSTILE,
            "--null",
            "'); DROP TABLE x; --",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&db, "x").await, 1, "x is still there");
    let sql = format!(
        "SELECT {c}::text, v FROM public.{t} ORDER BY 1",
        c = quoted(HOSTILE),
        t = quoted(HOSTILE)
    );
    assert_eq!(
        rows(&db, &sql).await,
        vec![vec![s("1"), None], vec![s("2"), s("")]],
        "the marker made NULL; the empty field stayed a value"
    );
    // Headerless, with hostile --columns.
    home.file("c.csv", "3,z\n", 0o644);
    let cols = format!("{HOSTILE},v");
    let out = load(
        &db,
        &home,
        &["c.csv", "-t", &table, "--no-header", "--columns", &cols],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&db, "x").await, 1);
    assert_eq!(count(&db, &format!("public.{}", quoted(HOSTILE))).await, 3);
    // A table pgbulk creates from the hostile header.
    let out = load(&db, &home, &["h.csv", "-t", "created"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&db, "x").await, 1);
    assert_eq!(count(&db, "created").await, 2);
}

#[tokio::test]
async fn the_password_never_appears_in_any_output() {
    let db = TestDb::new("sec_password").await;
    let home = Scratch::new("sec-password");
    let password = server().password();
    assert!(!password.is_empty());
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
        .await
        .expect("t");
    let mut text = String::from("id,n\n");
    for i in 0..5000 {
        text.push_str(&format!("{i},{i}\n"));
    }
    text.push_str("5000,not a number\n");
    home.file("in.csv", &text, 0o644);
    for verbosity in ["-q", "-v", "-vv"] {
        // A load that fails mid-way, and one that succeeds.
        for extra in [&[][..], &["--max-errors", "1"][..]] {
            let out = run(pgbulk(&home)
                .args([
                    verbosity,
                    "load",
                    "in.csv",
                    "-t",
                    "t",
                    "--batch-rows",
                    "1000",
                    "--db",
                    &db.url,
                ])
                .args(extra));
            assert!(
                !out.stdout.contains(&password) && !out.stderr.contains(&password),
                "{verbosity} {extra:?} printed the password"
            );
        }
    }
}

#[tokio::test]
async fn reject_files_are_private_and_never_written_through_a_link() {
    let db = TestDb::new("sec_rejects").await;
    let home = Scratch::new("sec-rejects");
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (n int)")
        .await
        .expect("t");
    home.file("in.csv", "n\n1\nsecret\n", 0o644);
    let out = load(
        &db,
        &home,
        &[
            "in.csv",
            "-t",
            "t",
            "--max-errors",
            "5",
            "--reject-file",
            "bad.csv",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for f in ["bad.csv", "bad.csv.log"] {
        let mode = std::fs::metadata(home.path().join(f))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} is private");
    }
    // A link at the reject file's path is refused, its target untouched.
    let victim = home.file("victim.txt", "precious\n", 0o644);
    std::os::unix::fs::symlink(&victim, home.path().join("linked.csv")).expect("symlink");
    let out = load(
        &db,
        &home,
        &[
            "in.csv",
            "-t",
            "t",
            "--max-errors",
            "5",
            "--reject-file",
            "linked.csv",
            "--restart",
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
}
