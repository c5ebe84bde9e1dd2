//! What a new user meets in the first hour of `pgbulk load`: ordinary text
//! never panics, a rerun never silently does nothing or loads twice, and
//! a wrong guess is said, not loaded.

use crate::cli_load::{assert_bad, assert_ok, count, load, rows, s};
use crate::harness::{Scratch, TestDb, peak_memory, pgbulk, run, server};

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
    // A file saved by a Windows spreadsheet, read as UTF-8: the bytes and
    // the flag that reads it; then read with the flag, exactly.
    let latin = home.path().join("cafes.csv");
    std::fs::write(&latin, b"name,city\nCaf\xe9 Noir,Li\xe8ge\n").expect("write");
    assert_bad(
        &load(&db, &home, &["cafes.csv", "--table", "cafes"]),
        "cafes.csv:2:1: undecodable byte sequence for encoding UTF-8 at byte 3 of the field (0xe9 0x20 0x4e 0x6f); an input in another encoding is read with --encoding NAME (windows-1252, latin1, ...)",
    );
    assert_ok(&load(
        &db,
        &home,
        &[
            "cafes.csv",
            "--table",
            "cafes",
            "--encoding",
            "windows-1252",
        ],
    ));
    assert_eq!(
        rows(&db, "SELECT name, city FROM cafes").await,
        vec![vec![s("Café Noir"), s("Liège")]]
    );
    // With --max-errors such a row is a bad row like any other, in a
    // table the load creates from the other rows too.
    std::fs::write(
        home.path().join("mixed.csv"),
        b"name,n\nAda,1\nCaf\xe9,2\nBob,3\n",
    )
    .expect("write");
    let mixed = load(
        &db,
        &home,
        &[
            "mixed.csv",
            "--table",
            "mixed",
            "--max-errors",
            "1",
            "--reject-file",
            "mixed.rejected.csv",
        ],
    );
    assert_ok(&mixed);
    assert!(mixed.stdout.contains("1 rejected"), "{}", mixed.stdout);
    assert_eq!(
        rows(&db, "SELECT name, n::text FROM mixed ORDER BY n").await,
        vec![vec![s("Ada"), s("1")], vec![s("Bob"), s("3")]]
    );
    assert_eq!(
        std::fs::read(home.path().join("mixed.rejected.csv")).expect("rejects"),
        b"Caf\xe9,2\n"
    );
    // A warning in a log (stderr not a terminal) is plain text.
    let counted = load(
        &db,
        &home,
        &["mixed.csv", "--table", "mixed_counted", "--max-errors", "1"],
    );
    assert_ok(&counted);
    assert!(
        counted
            .stderr
            .contains("WARN --max-errors without --reject-file")
            && !counted.stderr.contains('\x1b'),
        "{:?}",
        counted.stderr
    );
}

/// A file that quotes every field (Python's `QUOTE_ALL`, pandas) writes
/// a missing value as `""`: NULL in a column whose type has no empty
/// value, inferred or existing, an empty string in a text one; a NOT NULL
/// column's error names the empty value.
#[tokio::test]
async fn a_file_quoting_every_field_loads_its_empty_values_as_null() {
    let db = TestDb::new("fc_quote_all").await;
    let home = Scratch::new("fc-quote-all");
    home.file(
        "qa.csv",
        "\"id\",\"n\",\"d\",\"s\",\"tags\"\n\
         \"1\",\"5\",\"2024-01-01\",\"x\",\"{a}\"\n\
         \"2\",\"\",\"\",\"\",\"\"\n",
        0o644,
    );
    let inferred = load(&db, &home, &["qa.csv", "-t", "qa"]);
    assert_ok(&inferred);
    assert!(
        inferred.stderr.contains("\"n\" integer,\n    \"d\" date,"),
        "{}",
        inferred.stderr
    );
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE typed (id int, n int, d date, s text, tags text[]);
             CREATE TABLE strict (id int, n int NOT NULL, d date, s text, tags text[])",
        )
        .await
        .expect("tables");
    assert_ok(&load(&db, &home, &["qa.csv", "-t", "typed"]));
    let read = |table: &str| {
        format!(
            "SELECT id::text, n::text, d::text, s, tags::text, s IS NULL FROM {table} ORDER BY id"
        )
    };
    let expected = vec![
        vec![s("1"), s("5"), s("2024-01-01"), s("x"), s("{a}"), s("f")],
        vec![s("2"), None, None, s(""), None, s("f")],
    ];
    assert_eq!(rows(&db, &read("typed")).await, expected);
    assert_eq!(
        rows(
            &db,
            "SELECT id::text, n::text, d::text, s, NULL, s IS NULL FROM qa ORDER BY id"
        )
        .await,
        expected
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r[4] = None;
                r
            })
            .collect::<Vec<_>>()
    );
    let strict = load(&db, &home, &["qa.csv", "-t", "strict"]);
    assert_eq!(strict.code, 9, "{}", strict.stderr);
    assert!(
        strict.stderr.contains("qa.csv:3:2: column \"n\"") && strict.stderr.contains("\"\""),
        "{}",
        strict.stderr
    );
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
    let wrong = load(
        &db,
        &home,
        &["m.csv", "-t", "m", "--ignore-extra", "--delimiter", ","],
    );
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
    assert_eq!(count(&db, "pg_class WHERE relname = 'strict'").await, 0);
}

#[tokio::test]
async fn a_failed_first_load_leaves_no_table() {
    let db = TestDb::new("fc_no_table").await;
    let home = Scratch::new("fc-no-table");
    // Inference samples parts of the file; a value between them does not
    // fit the inferred type.
    let mut codes = String::from("code,n\n");
    for i in 0..1_200_000 {
        codes.push_str(if i == 360_000 { "A17,c\n" } else { "1234,a\n" });
    }
    home.file("codes.csv", &codes, 0o644);
    let out = load(&db, &home, &["codes.csv", "-t", "fresh.codes"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert_eq!(
        count(
            &db,
            "pg_class WHERE relname IN ('codes', 'pgbulk_watermark')"
        )
        .await,
        0,
        "no table is left behind"
    );
    assert_eq!(count(&db, "pg_namespace WHERE nspname = 'fresh'").await, 0);
    // Loaded, the schema is created with the table, and said.
    let out = load(
        &db,
        &home,
        &["codes.csv", "-t", "fresh.codes", "--sample-all"],
    );
    assert_ok(&out);
    assert!(
        out.stderr
            .contains("fresh.codes: create schema fresh (for the new table)"),
        "{}",
        out.stderr
    );
    // The repeated-key refusal of a new table leaves nothing either.
    home.file("k.csv", "id,v\n1,a\n1,b\n", 0o644);
    let refused = load(
        &db,
        &home,
        &["k.csv", "-t", "k", "--key", "id", "--on-duplicate", "error"],
    );
    assert_eq!(refused.code, 9, "{}", refused.stderr);
    assert_eq!(count(&db, "pg_class WHERE relname = 'k'").await, 0);
}

#[tokio::test]
async fn inference_samples_the_file_and_takes_overrides() {
    let db = TestDb::new("fc_sample").await;
    let home = Scratch::new("fc-sample");
    let mut codes = String::from("code,n\n");
    for i in 0..1_200_000 {
        codes.push_str(if i == 360_000 { "A17,c\n" } else { "1234,a\n" });
    }
    // The last part of the file is read too: its 2.5 has to widen n.
    codes.push_str("7,2.5\n");
    home.file("codes.csv", &codes, 0o644);
    let infer = run(pgbulk(&home).args(["infer", "codes.csv", "-t", "codes"]));
    assert_ok(&infer);
    assert!(
        infer.stdout.starts_with("-- types inferred from ")
            && infer
                .stdout
                .contains("bytes: the start, middle and end of 8400012 bytes)"),
        "{}",
        infer.stdout
    );
    assert!(
        infer.stdout.contains("\"code\" integer"),
        "{}",
        infer.stdout
    );
    assert!(infer.stdout.contains("\"n\" text"), "{}", infer.stdout);
    let rows_only = run(pgbulk(&home).args(["infer", "codes.csv", "--sample-rows", "2"]));
    assert!(
        rows_only
            .stdout
            .starts_with("-- types inferred from 2 rows"),
        "{}",
        rows_only.stdout
    );
    let all = run(pgbulk(&home).args(["infer", "codes.csv", "--sample-all"]));
    assert!(all.stdout.contains("\"code\" text"), "{}", all.stdout);
    let typed = run(pgbulk(&home).args([
        "infer",
        "codes.csv",
        "--type",
        "code=varchar(8),n=numeric(12,2)",
    ]));
    assert!(
        typed
            .stdout
            .contains("\"code\" varchar(8),\n    \"n\" numeric(12,2)"),
        "{}",
        typed.stdout
    );
    // The load names the misfit and the way out.
    let failed = load(&db, &home, &["codes.csv", "-t", "codes"]);
    assert_eq!(failed.code, 9);
    assert!(
        failed.stderr.contains("codes.csv:360002:1: column \"code\": invalid input syntax for type integer: \"A17\" (the type was inferred from a sample of the input; --type code=text or --sample-all)"),
        "{}",
        failed.stderr
    );
    // A value the sample did not foresee: the --type that takes it, the
    // next wider type where one does, quoted for the shell when needed.
    for (text, hint) in [
        ("1\n2\n2.5\n", "--type amount=numeric or --sample-all"),
        (
            "1\n2\n1e5\n",
            "--type 'amount=double precision' or --sample-all",
        ),
    ] {
        home.file("amounts.csv", &format!("amount\n{text}"), 0o644);
        let out = load(
            &db,
            &home,
            &["amounts.csv", "-t", "amounts", "--sample-rows", "2"],
        );
        assert_eq!(out.code, 9, "{}", out.stderr);
        assert!(out.stderr.contains(hint), "{text:?}: {}", out.stderr);
    }
    // A value the server would take and store in part (a ZIP code's
    // leading zero, a date's time of day, a timestamp's zone): refused
    // all the same, before anything is loaded, straight from the buffer
    // or row by row.
    for (table, text, message) in [
        (
            "zips",
            "zip\n90210\n10001\n02134\n",
            "zips.csv:4:1: column \"zip\": value \"02134\": integer would drop its leading zero (the type was inferred from a sample of the input; --type zip=text or --sample-all)",
        ),
        (
            "days",
            "day\n2024-01-01\n2024-01-02\n\"2024-02-01 10:30\"\n",
            "days.csv:4:1: column \"day\": value \"2024-02-01 10:30\": date would drop its time of day (the type was inferred from a sample of the input; --type day=timestamp or --sample-all)",
        ),
        (
            "stamps",
            "at\n2024-01-01 10:00\n2024-01-02 11:00\n2024-02-01T10:30:00+02:00\n",
            "stamps.csv:4:1: column \"at\": value \"2024-02-01T10:30:00+02:00\": timestamp without time zone would drop its time zone (the type was inferred from a sample of the input; --type at=timestamptz or --sample-all)",
        ),
    ] {
        let file = format!("{table}.csv");
        home.file(&file, text, 0o644);
        let out = load(&db, &home, &[&file, "-t", table, "--sample-rows", "2"]);
        assert_eq!(out.code, 9, "{}", out.stderr);
        assert!(out.stderr.contains(message), "{}", out.stderr);
        assert_eq!(
            rows(&db, &format!("SELECT to_regclass('{table}') IS NULL")).await,
            vec![vec![s("t")]],
            "{table} is not left behind"
        );
    }
    // A type given is the user's: its values are the server's to read.
    assert_ok(&load(
        &db,
        &home,
        &[
            "zips.csv",
            "-t",
            "zips",
            "--sample-rows",
            "2",
            "--type",
            "zip=integer",
        ],
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT string_agg(zip::text, ',' ORDER BY zip) FROM zips"
        )
        .await,
        vec![vec![s("2134,10001,90210")]]
    );
    // Into the table as it is now, a --type of another type (or of no
    // column) is said, not followed; the same type again says nothing.
    let again = load(
        &db,
        &home,
        &[
            "zips.csv",
            "-t",
            "zips",
            "--restart",
            "--type",
            "zip=text",
            "--type",
            "city=text",
        ],
    );
    assert_ok(&again);
    assert!(
        again.stderr.contains("--type zip=text: public.zips exists and its column \"zip\" is integer, which the load keeps"),
        "{}",
        again.stderr
    );
    assert!(
        again
            .stderr
            .contains("--type city=text: public.zips exists and has no column \"city\""),
        "{}",
        again.stderr
    );
    let same = load(
        &db,
        &home,
        &["zips.csv", "-t", "zips", "--restart", "--type", "zip=int4"],
    );
    assert_ok(&same);
    assert!(!same.stderr.contains("--type"), "{}", same.stderr);
    assert_ok(&load(
        &db,
        &home,
        &["codes.csv", "-t", "codes", "--type", "code=text"],
    ));
    assert_eq!(count(&db, "codes").await, 1_200_001);
    assert_eq!(
        rows(&db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'codes'::regclass AND attnum > 0 ORDER BY attnum").await,
        vec![vec![s("text")], vec![s("text")]]
    );
}

#[tokio::test]
async fn recreate_gives_the_table_a_new_shape_atomically() {
    let db = TestDb::new("fc_recreate").await;
    let home = Scratch::new("fc-recreate");
    home.file("v1.csv", "id,amount\n1,10\n2,20\n", 0o644);
    home.file("v2.csv", "id,amount,note\n1,10.5,x\n3,7,y\n", 0o644);
    assert_ok(&load(&db, &home, &["v1.csv", "-t", "t"]));
    let client = db.connect().await;
    client
        .batch_execute("CREATE ROLE fc_reader; GRANT SELECT ON t TO fc_reader")
        .await
        .expect("grant");
    let conflict = load(
        &db,
        &home,
        &["v2.csv", "-t", "t", "--recreate", "--mode", "append"],
    );
    assert_eq!(conflict.code, 3, "{}", conflict.stderr);
    let out = load(&db, &home, &["v2.csv", "-t", "t", "--recreate"]);
    assert_ok(&out);
    assert!(out.stderr.contains("\"amount\" numeric"), "{}", out.stderr);
    assert_eq!(
        rows(&db, "SELECT id, amount, note FROM t ORDER BY id").await,
        vec![
            vec![s("1"), s("10.5"), s("x")],
            vec![s("3"), s("7"), s("y")]
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT has_table_privilege('fc_reader', 't', 'SELECT')::text"
        )
        .await,
        vec![vec![s("true")]],
        "grants kept"
    );
    client
        .batch_execute("DROP OWNED BY fc_reader; DROP ROLE fc_reader")
        .await
        .expect("drop role");
}

/// A file of more columns than a table can have: the server's limit,
/// said of the table pgbulk would have created, and no table.
#[tokio::test]
async fn a_file_wider_than_a_table_can_be_creates_nothing() {
    let db = TestDb::new("fc_too_wide").await;
    let home = Scratch::new("fc-too-wide");
    let header: Vec<String> = (0..1601).map(|i| format!("c{i}")).collect();
    let values: Vec<String> = (0..1601).map(|i| i.to_string()).collect();
    home.file(
        "wide.csv",
        &format!("{}\n{}\n", header.join(","), values.join(",")),
        0o644,
    );
    let out = load(&db, &home, &["wide.csv", "-t", "wide"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the table definition of public.wide: tables can have at most 1600 columns"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text FROM pg_class WHERE relname = 'wide'"
        )
        .await,
        vec![vec![s("0")]]
    );
}

/// A loading role with only its table's privileges: the missing ledger
/// is named with the statements a DBA runs once, which then let it load.
#[tokio::test]
async fn a_role_that_may_not_create_the_ledger_is_told_what_to_run() {
    let db = TestDb::new("fc_ledger_role").await;
    let home = Scratch::new("fc-ledger-role");
    let role = format!("fc_loader_{}", std::process::id());
    let admin = db.connect().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA app; CREATE TABLE app.sales (id int PRIMARY KEY, v text);
             CREATE ROLE {role} LOGIN PASSWORD 'loader-secret';
             GRANT USAGE ON SCHEMA app TO {role};
             GRANT SELECT, INSERT, UPDATE ON app.sales TO {role}"
        ))
        .await
        .expect("role");
    home.file("sales.csv", "id,v\n1,a\n2,b\n", 0o644);
    let (host, port) = server().host_port();
    let url = format!(
        "host={host} port={port} user={role} password=loader-secret dbname={}",
        db.name
    );
    let as_loader =
        || run(pgbulk(&home).args(["load", "--db", &url, "-t", "app.sales", "sales.csv"]));
    let refused = as_loader();
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "app.pgbulk_watermark, where pgbulk keeps its ledger (each batch's watermark, the files loaded, where to resume), does not exist, and role \"{role}\" may not create it (no CREATE privilege on schema \"app\")"
        )),
        "{}",
        refused.stderr
    );
    assert_eq!(count(&db, "app.sales").await, 0);
    // What the error says to run, run by the DBA.
    let statements: Vec<&str> = refused
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .collect();
    assert_eq!(statements.len(), 2, "{}", refused.stderr);
    admin
        .batch_execute(&statements.join("\n"))
        .await
        .expect("the statements the error gives");
    let loaded = as_loader();
    let loaded_rows = count(&db, "app.sales").await;
    let cleanup = admin
        .batch_execute(&format!("DROP SCHEMA app CASCADE; DROP ROLE {role}"))
        .await;
    assert_ok(&loaded);
    assert_eq!(loaded_rows, 2);
    cleanup.expect("drop the role");
}

#[tokio::test]
async fn long_headers_match_the_names_the_server_kept() {
    let db = TestDb::new("fc_long").await;
    let home = Scratch::new("fc-long");
    let long = format!(
        "{}_measured_in_degrees_celsius_at_the_north_station_every_hour",
        "temperature"
    );
    assert!(long.len() > 63);
    home.file("w.csv", &format!("id,{long}\n1,20\n"), 0o644);
    assert_ok(&load(&db, &home, &["w.csv", "-t", "w"]));
    home.file("w2.csv", &format!("id,{long}\n2,21\n"), 0o644);
    assert_ok(&load(&db, &home, &["w2.csv", "-t", "w"]));
    assert_eq!(count(&db, "w").await, 2);
    // A table created by hand with the long name (cut by the server) too.
    db.connect()
        .await
        .batch_execute(&format!("CREATE TABLE h (\"{long}\" int)"))
        .await
        .expect("table");
    home.file("h.csv", &format!("{long}\n5\n"), 0o644);
    assert_ok(&load(&db, &home, &["h.csv", "-t", "h"]));
    assert_eq!(count(&db, "h").await, 1);
}

#[tokio::test]
async fn a_resumed_load_keeps_the_rejects_of_the_run_before() {
    let db = TestDb::new("fc_rejects").await;
    let home = Scratch::new("fc-rejects");
    let mut text = String::from("id\n");
    let mut bad = Vec::new();
    for i in 1..=30 {
        text.push_str(&format!("{i}\n"));
        if [4, 8, 12, 13, 14, 24].contains(&i) {
            let row = format!("bad{i}\n");
            text.push_str(&row);
            bad.push(row);
        }
    }
    home.file("r.csv", &text, 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE r (id int)")
        .await
        .expect("table");
    let args = |max: &'static str| {
        vec![
            "r.csv",
            "-t",
            "r",
            "--batch-rows",
            "5",
            "--reject-file",
            "rej.csv",
            "--max-errors",
            max,
        ]
    };
    // Batches of 5 records: 1-3 commit with a bad row each; batch 4
    // rejects one more, then fails on the next: it rolls back.
    let failed = load(&db, &home, &args("4"));
    assert_eq!(failed.code, 9, "{}", failed.stderr);
    let committed = count(&db, "r").await;
    let first_rejects = std::fs::read_to_string(home.path().join("rej.csv")).expect("rejects");
    // Run 1 wrote a reject in the batch that rolled back.
    let committed_bad = bad
        .iter()
        .filter(|b| b[3..b.len() - 1].parse::<i64>().unwrap_or(0) <= committed)
        .count();
    assert!(
        first_rejects.lines().count() > committed_bad,
        "{committed}: {first_rejects}"
    );
    let out = load(&db, &home, &args("100"));
    assert_ok(&out);
    assert!(out.stdout.contains("resumed after"), "{}", out.stdout);
    assert_eq!(count(&db, "r").await, 30);
    let rejected = std::fs::read_to_string(home.path().join("rej.csv")).expect("rejects");
    assert_eq!(rejected, bad.concat(), "every bad row exactly once");
    let log = std::fs::read_to_string(home.path().join("rej.csv.log")).expect("log");
    assert_eq!(log.lines().count(), 6, "{log}");
    // A fresh run starts a fresh file.
    assert_ok(&load(
        &db,
        &home,
        &[&args("100")[..], &["--restart"]].concat(),
    ));
    let again = std::fs::read_to_string(home.path().join("rej.csv")).expect("rejects");
    assert_eq!(again, bad.concat());
}

#[tokio::test]
async fn the_dialect_is_detected_or_refused_never_guessed_wrong() {
    let db = TestDb::new("fc_dialect").await;
    let home = Scratch::new("fc-dialect");
    home.file(
        "sales.csv",
        "PointOfSale;Product;Date;Stock\n121017;17240503103734;2019-08-17;2,5\n",
        0o644,
    );
    let out = load(&db, &home, &["sales.csv", "-t", "sales"]);
    assert_ok(&out);
    assert!(
        out.stderr.contains("sales.csv: delimiter ';' (detected from the header and first lines; --delimiter sets it)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&db, "SELECT pointofsale::text, stock FROM sales").await,
        vec![vec![s("121017"), s("2,5")]]
    );
    // The same load with the delimiter given is the same load.
    let again = load(
        &db,
        &home,
        &["sales.csv", "-t", "sales", "--delimiter", ";"],
    );
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);

    home.file("odd.csv", "a;b,c\n1;2,3\n", 0o644);
    assert_bad(
        &load(&db, &home, &["odd.csv", "-t", "odd"]),
        "odd.csv: cannot tell the delimiter: ',' and ';' each split every line into 2 fields; give --delimiter",
    );
    assert_eq!(count(&db, "pg_class WHERE relname = 'odd'").await, 0);

    // UTF-16 with a byte order mark.
    let mut utf16 = vec![0xff, 0xfe];
    for unit in "id\tname\n1\tZoë\n".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    std::fs::write(home.path().join("u16.csv"), utf16).expect("write");
    let out = load(&db, &home, &["u16.csv", "-t", "u16"]);
    assert_ok(&out);
    assert!(
        out.stderr.contains("reading it as UTF-16LE"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&db, "SELECT id::text, name FROM u16").await,
        vec![vec![s("1"), s("Zoë")]]
    );

    // bzip2 and xz are named, not "undecodable".
    std::fs::write(home.path().join("x.csv.bz2"), b"BZh91AY&SY\x00\x00").expect("write");
    assert_bad(
        &load(&db, &home, &["x.csv.bz2", "-t", "x"]),
        "x.csv.bz2 is bzip2-compressed; pgbulk reads gzip and zstd: decompress it first, e.g. `bzcat x.csv.bz2 | pgbulk load -`",
    );
    std::fs::write(home.path().join("x.csv.xz"), b"\xfd7zXZ\x00\x00\x04").expect("write");
    let xz = load(&db, &home, &["x.csv.xz", "-t", "x"]);
    assert!(xz.stderr.contains("is xz-compressed"), "{}", xz.stderr);
    // Workbooks and JSON are named, not read as CSV (which made a table
    // of mangled JSON, or found "no rows" in a workbook, and exited 0).
    std::fs::write(home.path().join("book.xlsx"), b"PK\x03\x04\x14\x00\x00\x00").expect("write");
    let book = load(&db, &home, &["book.xlsx", "-t", "x"]);
    assert_eq!(book.code, 9, "{}", book.stderr);
    assert!(
        book.stderr.contains("book.xlsx is a ZIP archive (an Excel .xlsx or OpenDocument .ods workbook, or a .zip), not text"),
        "{}",
        book.stderr
    );
    home.file(
        "events.jsonl",
        "{\"id\": 1, \"v\": \"a\"}\n{\"id\": 2}\n",
        0o644,
    );
    assert_bad(
        &load(&db, &home, &["events.jsonl", "-t", "x"]),
        "events.jsonl: its first line is a JSON object: JSON Lines, which pgbulk does not read as a file (it reads CSV, PostgreSQL's text format and Parquet); in Python, pgbulk.write(pandas.read_json(path, lines=True)) loads it",
    );
    assert_eq!(
        rows(&db, "SELECT to_regclass('x') IS NULL").await,
        vec![vec![s("t")]]
    );

    // Dialects COPY refuses are usage errors.
    for bad in [
        &["sales.csv", "-t", "t", "--delimiter", ";;"][..],
        &["sales.csv", "-t", "t", "--delimiter", ";", "--quote", ";"],
        &["sales.csv", "-t", "t", "--delimiter", ",", "--null", "a,b"],
        &["sales.csv", "-t", "t", "--no-such-flag"],
    ] {
        let out = load(&db, &home, bad);
        assert_eq!(out.code, 2, "{bad:?}: {}", out.stderr);
    }
}

#[tokio::test]
async fn empty_inputs_names_and_quiet_say_what_they_mean() {
    let db = TestDb::new("fc_messages").await;
    let home = Scratch::new("fc-messages");
    home.file("empty.csv", "", 0o644);
    let out = load(&db, &home, &["empty.csv", "-t", "e"]);
    assert_ok(&out);
    assert_eq!(out.stdout.trim(), "empty.csv is empty: nothing to load");
    home.file("header.csv", "a,b\n", 0o644);
    let out = load(&db, &home, &["header.csv", "-t", "h"]);
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("header.csv has no rows: nothing to load, and public.h was not created"),
        "{}",
        out.stdout
    );
    // A quote never closed (an inch mark, as COPY reads it) swallowing
    // every row is bad input named by its line, not "no rows".
    home.file("inch.csv", "id,item\n1,12\" pipe\n2,hose\n", 0o644);
    let out = load(&db, &home, &["inch.csv", "-t", "h"]);
    assert_eq!(out.code, 9, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("inch.csv: unterminated quoted field starting on line 2"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "pg_class WHERE relname IN ('e', 'h')").await, 0);
    // An empty file among others is skipped, and said.
    home.file("one.csv", "a,b\n1,2\n", 0o644);
    let out = load(&db, &home, &["empty.csv", "one.csv", "-t", "o"]);
    assert_ok(&out);
    assert!(
        out.stderr.contains("empty.csv is empty: skipped"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "o").await, 1);

    let out = load(&db, &home, &["one.csv", "-t", "my-sales"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read table name \"my-sales\": an unquoted name holds only letters, digits and _; quote it as SQL does, e.g. -t '\"my-sales\"'"),
        "{}",
        out.stderr
    );
    let out = load(&db, &home, &["one.csv", "-t", "\"my-sales\""]);
    assert_ok(&out);
    assert_eq!(count(&db, "\"my-sales\"").await, 1);

    // --quiet: the summary only.
    home.file("q.csv", "x;y\n1;2\n", 0o644);
    let out = run(pgbulk(&home).args(["--quiet", "load", "q.csv", "-t", "q", "--db", &db.url]));
    assert_ok(&out);
    assert_eq!(out.stderr, "", "quiet");
    assert!(
        out.stdout.starts_with("loaded q.csv into q: 1 row read"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn huge_fields_and_lines_give_bounded_errors() {
    let db = TestDb::new("fc_huge").await;
    let home = Scratch::new("fc-huge");
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (a text, b text)")
        .await
        .expect("table");
    // One line of 8 MB: the header names a column that does not exist.
    home.file("line.csv", &"x".repeat(8 << 20), 0o644);
    let out = load(&db, &home, &["line.csv", "-t", "t", "--delimiter", ","]);
    assert_eq!(out.code, 9, "{}", &out.stderr[..out.stderr.len().min(500)]);
    assert!(
        out.stderr.len() < 1000,
        "a bounded message: {} bytes",
        out.stderr.len()
    );
    assert!(
        out.stderr.contains("... (8388608 bytes in all)"),
        "{}",
        out.stderr
    );
    // A quote never closed: stopped at the limit, where it opened.
    let mut text = String::from("a,b\n1,x\n2,\"open\n");
    for _ in 0..50_000 {
        text.push_str("more text, on and on\n");
    }
    home.file("quote.csv", &text, 0o644);
    let out = load(
        &db,
        &home,
        &["quote.csv", "-t", "t", "--max-field-size", "64K"],
    );
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr.contains("quote.csv: a quoted field starting on line 3 is longer than 65536 bytes (--max-field-size); is its quote never closed?"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "t").await, 0);
    let bad = load(
        &db,
        &home,
        &["quote.csv", "-t", "t", "--max-field-size", "lots"],
    );
    assert_eq!(bad.code, 2);
}

#[tokio::test]
async fn a_huge_field_costs_about_twice_its_size_in_memory() {
    let db = TestDb::new("fc_big_field").await;
    let home = Scratch::new("fc-big-field");
    db.connect()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
        .await
        .expect("table");
    const FIELD: usize = 96 << 20;
    let mut text = String::with_capacity(FIELD + 64);
    text.push_str("id,body\n1,small\n2,");
    text.push_str(&"x".repeat(FIELD));
    text.push_str("\n3,tiny\n");
    home.file("big.csv", &text, 0o644);
    drop(text);
    // Appended straight into the table, then upserted through the stage.
    for extra in [&[][..], &["--key", "id", "--restart"][..]] {
        let (code, kib) = peak_memory(
            pgbulk(&home)
                .args(["load", "--db", &db.url, "big.csv", "-t", "t"])
                .args(extra),
        );
        assert_eq!(code, 0, "{extra:?}");
        let field_kib = (FIELD / 1024) as u64;
        assert!(
            kib < field_kib * 5 / 2 + 64 * 1024,
            "{extra:?}: peak {kib} KiB for a field of {field_kib} KiB"
        );
    }
    assert_eq!(
        rows(&db, "SELECT id, length(body) FROM t ORDER BY id").await,
        vec![
            vec![s("1"), s("5")],
            vec![s("2"), Some(FIELD.to_string())],
            vec![s("3"), s("4")],
        ]
    );
}

#[tokio::test]
async fn rows_a_constraint_refuses_are_isolated_with_their_lines() {
    let db = TestDb::new("fc_constraints").await;
    let home = Scratch::new("fc-constraints");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE shop (code text PRIMARY KEY);
             INSERT INTO shop VALUES ('A'), ('B');
             CREATE TABLE sale (id int PRIMARY KEY, shop text REFERENCES shop, amount int CHECK (amount > 0), ref text UNIQUE);
             INSERT INTO sale VALUES (100, 'A', 1, 'taken')",
        )
        .await
        .expect("tables");
    home.file(
        "sale.csv",
        "id,shop,amount,ref\n1,A,5,r1\n2,A,-3,r2\n3,Z,7,r3\n4,B,2,taken\n5,B,9,r5\n6,A,1,r5\n",
        0o644,
    );
    // Without --max-errors the load fails naming the first refused row's
    // line (its batch read again, every row located) with the server's
    // message and detail, and says how to have such rows set aside.
    let failed = load(&db, &home, &["sale.csv", "-t", "sale"]);
    assert_eq!(failed.code, 9, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("sale.csv:3: new row for relation \"sale\" violates check constraint \"sale_amount_check\": Failing row contains (2, A, -3, r2). --max-errors N sets such rows aside (in --reject-file).")
            && !failed.stderr.contains("detail:"),
        "{}",
        failed.stderr
    );
    assert_eq!(count(&db, "sale").await, 1);
    let out = load(
        &db,
        &home,
        &[
            "sale.csv",
            "-t",
            "sale",
            "--max-errors",
            "10",
            "--reject-file",
            "bad.csv",
        ],
    );
    assert_ok(&out);
    assert_eq!(
        rows(&db, "SELECT id::text FROM sale ORDER BY sale.id").await,
        vec![vec![s("1")], vec![s("5")], vec![s("100")]]
    );
    let rejected = std::fs::read_to_string(home.path().join("bad.csv")).expect("rejects");
    assert_eq!(rejected, "2,A,-3,r2\n3,Z,7,r3\n4,B,2,taken\n6,A,1,r5\n");
    let log = std::fs::read_to_string(home.path().join("bad.csv.log")).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(
        lines[0].starts_with("sale.csv:3:") && lines[0].contains("check constraint"),
        "{log}"
    );
    assert!(
        lines[1].starts_with("sale.csv:4:") && lines[1].contains("foreign key"),
        "{log}"
    );
    assert!(
        lines[2].starts_with("sale.csv:5:") && lines[2].contains("duplicate key"),
        "{log}"
    );
    // A value a row of the same file took first (the two rows merge
    // alone, not together): the later row is set aside.
    assert_eq!(
        lines[3],
        "sale.csv:7: duplicate key value violates unique constraint \"sale_ref_key\": Key (ref)=(r5) already exists.",
        "{log}"
    );
    // Into an empty table, filled as a new copy of it: the same rows set
    // aside, the constraints named as the table's.
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE fresh (id int PRIMARY KEY, shop text REFERENCES shop, amount int CHECK (amount > 0),
                                 ref text CONSTRAINT fresh_ref UNIQUE)",
        )
        .await
        .expect("fresh");
    let fresh = load(
        &db,
        &home,
        &[
            "sale.csv",
            "-t",
            "fresh",
            "--max-errors",
            "10",
            "--reject-file",
            "fresh.csv",
        ],
    );
    assert_ok(&fresh);
    assert_eq!(
        rows(&db, "SELECT id::text FROM fresh ORDER BY id").await,
        vec![vec![s("1")], vec![s("4")], vec![s("5")]]
    );
    let log = std::fs::read_to_string(home.path().join("fresh.csv.log")).expect("log");
    assert!(
        log.ends_with(
            "sale.csv:7: duplicate key value violates unique constraint \"fresh_ref\": Key (ref)=(r5) already exists.\n"
        ) && !log.contains("pgbulk_"),
        "{log}"
    );
    // Without --max-errors: the batch fails naming the table's constraint.
    let failed = load(&db, &home, &["sale.csv", "-t", "fresh", "--restart"]);
    assert_eq!(failed.code, 9, "{}", failed.stderr);
}

#[tokio::test]
async fn a_duplicate_key_in_append_mode_is_bad_data() {
    let db = TestDb::new("fc_append_dup").await;
    let home = Scratch::new("fc-append-dup");
    db.connect()
        .await
        .batch_execute("CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'a')")
        .await
        .expect("table");
    home.file("k.csv", "id,v\n2,b\n1,c\n", 0o644);
    let out = load(&db, &home, &["k.csv", "-t", "k", "--mode", "append"]);
    assert_eq!(out.code, 9, "{}", out.stderr);
    // Named by its line: the batch is read again, every row located.
    assert!(
        out.stderr.contains(
            "k.csv:3: duplicate key value violates unique constraint \"k_pkey\": Key (id)=(1) already exists."
        ),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "k").await, 1);
    // Standard input cannot be read again: the server's message, and how
    // to have the row named.
    let stdin = run(pgbulk(&home)
        .args(["load", "-", "-t", "k", "--mode", "append", "--db", &db.url])
        .stdin(std::fs::File::open(home.path().join("k.csv")).expect("k.csv")));
    assert_eq!(stdin.code, 9, "{}", stdin.stderr);
    assert!(
        stdin.stderr.contains(
            "duplicate key value violates unique constraint \"k_pkey\" (constraint k_pkey); --max-errors N sets such rows aside (in --reject-file), each named by its input line"
        ),
        "{}",
        stdin.stderr
    );
    assert_eq!(count(&db, "k").await, 1);
}

/// The batch of a refused row is read again to name its line: from where
/// the run's committed batches left off, never appending them twice (also
/// with --restart), and never reporting a file an earlier run loaded as
/// done.
#[tokio::test]
async fn naming_a_refused_rows_line_appends_nothing_twice() {
    let db = TestDb::new("fc_locate_restart").await;
    let home = Scratch::new("fc-locate-restart");
    db.connect()
        .await
        .batch_execute("CREATE TABLE ap (id int, v int)")
        .await
        .expect("table");
    home.file("ap.csv", "id,v\n1,5\n2,6\n3,-1\n4,4\n", 0o644);
    assert_ok(&load(
        &db,
        &home,
        &["ap.csv", "-t", "ap", "--mode", "append"],
    ));
    // A check the rows loaded were not held to.
    db.connect()
        .await
        .batch_execute("ALTER TABLE ap ADD CONSTRAINT positive CHECK (v > 0) NOT VALID")
        .await
        .expect("check");
    let located = "ap.csv:4: new row for relation \"ap\" violates check constraint \"positive\"";
    for batch_rows in ["1000", "2"] {
        let out = load(
            &db,
            &home,
            &[
                "ap.csv",
                "-t",
                "ap",
                "--mode",
                "append",
                "--restart",
                "--batch-rows",
                batch_rows,
            ],
        );
        assert_eq!(out.code, 9, "{batch_rows}: {}", out.stderr);
        assert!(out.stderr.contains(located), "{batch_rows}: {}", out.stderr);
    }
    // The first 4, and the first batch of 2 of the last run, once.
    assert_eq!(count(&db, "ap").await, 6);
}

#[tokio::test]
async fn dates_in_other_spellings_load_as_the_server_reads_them() {
    let db = TestDb::new("fc_datestyle").await;
    let home = Scratch::new("fc-datestyle");
    home.file(
        "d.csv",
        "id,day,stamp\n1,2012/01/31,5/19/2006 0:00:00\n2,Jan 8 1999,2024-01-01 10:00\n3,8 Jan 1999,Jan 8 1999 04:05:06 PM\n",
        0o644,
    );
    let out = load(
        &db,
        &home,
        &["d.csv", "-t", "d", "--type", "stamp=timestamp"],
    );
    assert_ok(&out);
    assert!(out.stderr.contains("\"day\" date"), "{}", out.stderr);
    assert_eq!(
        rows(&db, "SELECT day::text, stamp::text FROM d ORDER BY id").await,
        vec![
            vec![s("2012-01-31"), s("2006-05-19 00:00:00")],
            vec![s("1999-01-08"), s("2024-01-01 10:00:00")],
            vec![s("1999-01-08"), s("1999-01-08 16:05:06")],
        ]
    );
}

#[tokio::test]
async fn bad_inference_flags_are_refused_before_anything_is_written() {
    let db = TestDb::new("fc_bad_flags").await;
    let home = Scratch::new("fc-bad-flags");
    home.file("a.csv", "id,v\n1,x\n", 0o644);
    for (args, code, words) in [
        (
            &["--type", "nosuch=int"][..],
            3,
            "--type nosuch=int: the input has no column \"nosuch\"",
        ),
        (&["--type", "id"][..], 2, "expected COL=TYPE"),
        (&["--type", "id=no_such_type"][..], 3, "no_such_type"),
        (
            &["--sample-rows", "5", "--sample-all"][..],
            2,
            "cannot be used with",
        ),
    ] {
        let out = load(&db, &home, &[&["a.csv", "-t", "a"][..], args].concat());
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(words), "{args:?}: {}", out.stderr);
        assert_eq!(
            count(&db, "pg_class WHERE relname = 'a'").await,
            0,
            "{args:?}"
        );
    }
    // --sample-all reads the input twice: not standard input.
    let mut child = pgbulk(&home)
        .args(["load", "-", "-t", "a", "--sample-all", "--db", &db.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"id,v\n1,x\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a file, not standard input"));
}

/// `pgbulk load FILE` without `--table` loads into the table its name
/// says (without directory and extensions, written as column names are);
/// standard input, several files or a pattern need `--table` (exit 2).
#[tokio::test]
async fn one_file_names_its_table() {
    let db = TestDb::new("fc_file_table").await;
    let home = Scratch::new("fc-file-table");
    let file = home.file("landing/Sales 2024.csv", "id,v\n1,a\n2,b\n", 0o644);
    home.file("landing/other.csv", "id,v\n3,c\n", 0o644);
    let out = load(&db, &home, &[file.to_str().expect("utf8")]);
    assert_ok(&out);
    assert!(
        out.stdout.contains("into sales_2024:") || out.stderr.contains("into sales_2024:"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(count(&db, "sales_2024").await, 2);
    let pattern = home.path().join("landing/*.csv");
    for args in [
        vec!["-"],
        vec![file.to_str().expect("utf8"), file.to_str().expect("utf8")],
        vec![pattern.to_str().expect("utf8")],
    ] {
        let out = load(&db, &home, &args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("name the table with --table"),
            "{}",
            out.stderr
        );
        // Said with the usage of load, not of pgbulk's commands.
        assert!(
            out.stderr.contains("Usage: pgbulk load [OPTIONS]"),
            "{}",
            out.stderr
        );
        let why = if args == ["-"] {
            "standard input has no name to give it"
        } else {
            "only one file names its table"
        };
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
    }
}
