//! `load::load` called as a library: what a caller (Python, a pipeline)
//! gets back when a row is bad is data, not only a message.

use std::sync::Arc;

use pgbulk::ErrorKind;
use pgbulk::copy::copy_in;
use pgbulk::input::Source;
use pgbulk::load::{LoadOptions, Progress, load};
use pgbulk::schema::TableName;

use crate::harness::{Scratch, TestDb, resolve};

/// `load` on a connection of its own.
async fn load_on_new_connection(
    params: &pgbulk::conninfo::ConnParams,
    opts: &LoadOptions,
) -> pgbulk::Result<pgbulk::load::LoadReport> {
    let client = pgbulk::connect::connect(params)
        .await
        .expect("connect")
        .client;
    load(client, params, opts, Arc::new(Progress::default())).await
}

#[tokio::test]
async fn a_bad_value_is_located_as_data() {
    let db = TestDb::new("lib_load_located").await;
    db.connect()
        .await
        .batch_execute("CREATE TABLE sale (id int PRIMARY KEY, amount int CHECK (amount > 0))")
        .await
        .expect("table");
    let dir = Scratch::new("lib-load");
    let bad_value = dir.file("values.csv", "id,amount\n1,5\n2,12x\n", 0o644);
    let refused = dir.file("refused.csv", "id,amount\n1,5\n2,-3\n", 0o644);
    let params = resolve(&db.url);
    let opts = |path: &std::path::Path| LoadOptions {
        sources: vec![Source::File(path.to_owned())],
        table: TableName {
            schema: None,
            name: "sale".to_owned(),
        },
        ..LoadOptions::default()
    };
    let run = |o: LoadOptions| {
        let params = params.clone();
        async move { load_on_new_connection(&params, &o).await }
    };

    let err = run(opts(&bad_value)).await.expect_err("a bad value");
    assert_eq!(err.kind(), ErrorKind::Data);
    let at = err.location().expect("a location");
    assert_eq!(
        (at.input.as_str(), at.line, at.field),
        (bad_value.to_str().expect("utf8"), 3, Some(2))
    );
    assert_eq!(
        (err.table(), err.column(), err.value()),
        (Some("public.sale"), Some("amount"), Some("12x"))
    );
    assert_eq!(at.to_string(), format!("{}:3:2", bad_value.display()));

    // A row a constraint refuses, set aside with --max-errors: the report
    // counts it; without, the error names the constraint as data too.
    let err = run(opts(&refused)).await.expect_err("a refused row");
    assert_eq!(
        err.server_kind(),
        Some(pgbulk::ServerErrorKind::CheckViolation)
    );
    assert_eq!(err.table(), Some("public.sale"));
    let report = run(LoadOptions {
        max_errors: 1,
        ..opts(&refused)
    })
    .await
    .expect("loaded");
    assert_eq!((report.rejected, report.inserted), (1, 1), "{report:?}");

    // JSON the server's jsonb input refuses (a lone UTF-16 surrogate, a
    // number beyond numeric) is a bad row with its line, and one of the
    // rows --max-errors sets aside: not a failed COPY.
    db.connect()
        .await
        .batch_execute("CREATE TABLE doc (id int, body jsonb)")
        .await
        .expect("table");
    let json = dir.file(
        "docs.csv",
        "id,body\n1,\"{\"\"a\"\": 1}\"\n2,\"[\"\"\\ud800\"\"]\"\n3,1e131072\n4,[1]\n",
        0o644,
    );
    let docs = LoadOptions {
        table: TableName {
            schema: None,
            name: "doc".to_owned(),
        },
        ..opts(&json)
    };
    let err = run(docs.clone()).await.expect_err("a bad document");
    let at = err.location().expect("a location");
    assert_eq!((at.line, at.field), (3, Some(2)), "{err}");
    assert_eq!(err.column(), Some("body"));
    let report = run(LoadOptions {
        max_errors: 2,
        ..docs
    })
    .await
    .expect("loaded");
    assert_eq!((report.rejected, report.inserted), (2, 2), "{report:?}");
}

#[tokio::test]
async fn a_session_without_a_current_schema_is_refused_by_name() {
    let db = TestDb::new("lib_load_no_schema").await;
    let dir = Scratch::new("lib-load-no-schema");
    let file = dir.file("a.csv", "a\n1\n", 0o644);
    let params = resolve(&db.url);
    let client = pgbulk::connect::connect(&params)
        .await
        .expect("connect")
        .client;
    client
        .batch_execute("SET search_path = no_such_schema")
        .await
        .expect("SET");
    let opts = LoadOptions {
        sources: vec![Source::File(file)],
        table: TableName {
            schema: None,
            name: "t".to_owned(),
        },
        ..LoadOptions::default()
    };
    let err = load(client, &params, &opts, Arc::new(Progress::default()))
        .await
        .expect_err("no current schema");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.message().contains("the session has no current schema"),
        "{err}"
    );
}

/// A file of typed values written in every way the format allows (quoted
/// or not, doubled quotes and escapes, delimiters and line ends inside
/// quotes, the NULL string quoted and not, spaces the input functions
/// skip), big enough for many reads: `load` stores exactly the rows the
/// server's own `COPY ... (FORMAT csv)` stores from it, whichever way each
/// record is read.
#[tokio::test]
async fn a_file_loads_as_copy_csv_loads_it() {
    let db = TestDb::new("lib_load_oracle").await;
    let client = db.connect().await;
    let dir = Scratch::new("lib-load-oracle");
    let params = resolve(&db.url);
    let dialects = [
        ("", pgbulk::csv::Dialect::default()),
        (
            ", DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'N'",
            pgbulk::csv::Dialect {
                delimiter: b';',
                quote: b'\'',
                escape: b'\\',
                null: b"N".to_vec(),
                text: false,
            },
        ),
    ];
    let mut rng = crate::harness::Rng(0x9E37_79B9_7F4A_7C15);
    for (case, (options, dialect)) in dialects.iter().enumerate() {
        for line_end in ["\n", "\r\n"] {
            let (q, e, c) = (
                dialect.quote as char,
                dialect.escape as char,
                dialect.delimiter as char,
            );
            let null = String::from_utf8_lossy(&dialect.null).into_owned();
            let quoted = |text: &str| {
                let text = text.replace(e, &format!("{e}{e}"));
                let text = if q == e {
                    text
                } else {
                    text.replace(q, &format!("{e}{q}"))
                };
                format!("{q}{text}{q}")
            };
            let ints = [
                "1".to_owned(),
                "-5".to_owned(),
                "007".to_owned(),
                " 3".to_owned(),
                "2147483647".to_owned(),
                quoted("12"),
                null.clone(),
            ];
            let texts = [
                "abc".to_owned(),
                "\u{e9}t\u{e9}".to_owned(),
                quoted(&format!("x{q}y{c}z")),
                quoted("line\nbreak"),
                quoted(&null),
                quoted(""),
                format!("a{q}b{c}c{q}d"),
                null.clone(),
            ];
            let dates = [
                "2020-02-29".to_owned(),
                "2020-1-5".to_owned(),
                quoted("2021-01-01"),
                null.clone(),
            ];
            let shorts = [
                "ab".to_owned(),
                "\u{e9}t\u{e9}".to_owned(),
                "abc  ".to_owned(),
                quoted("x"),
                null.clone(),
            ];
            let mut text = format!("a{c}b{c}c{c}d{line_end}");
            for _ in 0..30_000 {
                let fields = [
                    &ints[rng.index(ints.len())],
                    &texts[rng.index(texts.len())],
                    &dates[rng.index(dates.len())],
                    &shorts[rng.index(shorts.len())],
                ];
                let record = fields.map(String::as_str).join(&c.to_string());
                text.push_str(&record);
                text.push_str(line_end);
            }
            let name = format!("t{case}_{}", line_end.len());
            for table in [format!("{name}_copy"), format!("{name}_load")] {
                client
                    .batch_execute(&format!(
                        "CREATE TABLE {table} (a int, b text, c date, d varchar(3))"
                    ))
                    .await
                    .expect("table");
            }
            let statement = format!("COPY {name}_copy FROM STDIN (FORMAT csv, HEADER{options})");
            copy_in(&client, &statement, [text.clone().into_bytes()])
                .await
                .expect("COPY takes the file");
            let path = dir.file(&format!("{name}.csv"), &text, 0o644);
            let opts = LoadOptions {
                dialect: dialect.clone(),
                ..LoadOptions::default()
            };
            loads_as_copy(&client, &params, path, &name, opts, 30_000).await;
        }
    }
}

/// A Latin-1 file, its values ASCII or not, quoted or not: `load` with
/// `latin1` stores the rows `COPY ... (FORMAT csv, ENCODING 'LATIN1')`
/// stores.
#[tokio::test]
async fn a_latin1_file_loads_as_copy_reads_it() {
    let db = TestDb::new("lib_load_latin1").await;
    let client = db.connect().await;
    let dir = Scratch::new("lib-load-latin1");
    let params = resolve(&db.url);
    // "\xc3\xa9" is two Latin-1 characters that UTF-8 would read as one.
    let texts: [&[u8]; 6] = [
        b"abc",
        b"\xe9t\xe9",
        b"\xc3\xa9",
        b"x y",
        b"\"a,\xe9\"",
        b"\"q\"\"\"",
    ];
    let mut rng = crate::harness::Rng(0x0DDB_1A5E_5BAD_5EED);
    let mut text = b"a,b\n".to_vec();
    for n in 0..20_000 {
        text.extend_from_slice(format!("{n},").as_bytes());
        text.extend_from_slice(texts[rng.index(texts.len())]);
        text.push(b'\n');
    }
    for table in ["latin_copy", "latin_load"] {
        client
            .batch_execute(&format!("CREATE TABLE {table} (a int, b text)"))
            .await
            .expect("table");
    }
    copy_in(
        &client,
        "COPY latin_copy FROM STDIN (FORMAT csv, HEADER, ENCODING 'LATIN1')",
        [text.clone()],
    )
    .await
    .expect("COPY takes the file");
    let path = dir.path().join("latin.csv");
    std::fs::write(&path, &text).expect("write");
    let opts = LoadOptions {
        encoding: pgbulk::input::encoding("latin1").expect("latin1"),
        ..LoadOptions::default()
    };
    loads_as_copy(&client, &params, path, "latin", opts, 20_000).await;
}

/// Loads `path` with `opts` into the table `{name}_load` (all of its
/// `rows`), then checks that it holds the rows of `{name}_copy`, which
/// the server's own COPY filled from the same file.
async fn loads_as_copy(
    client: &tokio_postgres::Client,
    params: &pgbulk::conninfo::ConnParams,
    path: std::path::PathBuf,
    name: &str,
    opts: LoadOptions,
    rows: u64,
) {
    let opts = LoadOptions {
        sources: vec![Source::File(path)],
        table: TableName {
            schema: None,
            name: format!("{name}_load"),
        },
        ..opts
    };
    let loader = pgbulk::connect::connect(params)
        .await
        .expect("connect")
        .client;
    let report = load(loader, params, &opts, Arc::new(Progress::default()))
        .await
        .expect("loaded");
    assert_eq!(report.inserted, rows, "{name}: {report:?}");
    let differ: i64 = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (TABLE {name}_copy EXCEPT ALL TABLE {name}_load) x) \
                      + (SELECT count(*) FROM (TABLE {name}_load EXCEPT ALL TABLE {name}_copy) x)"
            ),
            &[],
        )
        .await
        .expect("compare")
        .get(0);
    assert_eq!(differ, 0, "{name}: rows differ from COPY's");
}

/// A bad value after many records taken straight from the reader's buffer
/// (several reads of it): the error names its line and field, and the
/// batch leaves nothing in the table.
#[tokio::test]
async fn a_bad_value_after_many_good_records_is_located_and_loads_nothing() {
    let db = TestDb::new("lib_load_late_bad").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE late (a int, b text)")
        .await
        .expect("table");
    let dir = Scratch::new("lib-load-late-bad");
    let mut text = String::from("a,b\n");
    for n in 0..50_000 {
        text.push_str(&format!("{n},\"text, {n}\"\n"));
    }
    text.push_str("50000,fine\n12x,bad\n");
    let path = dir.file("late.csv", &text, 0o644);
    let params = resolve(&db.url);
    let opts = LoadOptions {
        sources: vec![Source::File(path.clone())],
        table: TableName {
            schema: None,
            name: "late".to_owned(),
        },
        ..LoadOptions::default()
    };
    let err = load_on_new_connection(&params, &opts)
        .await
        .expect_err("a bad value");
    assert_eq!(err.kind(), ErrorKind::Data);
    let at = err.location().expect("a location");
    assert_eq!(
        (at.input.as_str(), at.line, at.field),
        (path.to_str().expect("utf8"), 50_003, Some(1))
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM late", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);
}

/// A load into an empty table with a key, or into a new one given a key,
/// takes the whole file in one batch when batches were not asked for (the
/// key is built once, after the rows); keys repeated anywhere in the file
/// keep their last row, in one batch as in several (where a later batch
/// updates the row an earlier one inserted).
#[tokio::test]
async fn an_empty_or_new_keyed_table_takes_a_file_in_one_batch_keeping_the_last_row_per_key() {
    let db = TestDb::new("lib_load_one_batch").await;
    let client = db.connect().await;
    let dir = Scratch::new("lib-load-one-batch");
    // 5,000 records; every fifth repeats the key of a record 2,000 lines
    // earlier with another value.
    let mut csv = String::from("id,v\n");
    let mut want = std::collections::BTreeMap::new();
    for i in 0..5000 {
        let id = if i % 5 == 4 && i >= 2000 { i - 2000 } else { i };
        csv.push_str(&format!("{id},v{i}\n"));
        want.insert(id, format!("v{i}"));
    }
    let repeats = 5000 - want.len() as u64;
    assert!(repeats > 0);
    let file = dir.file("repeats.csv", &csv, 0o644);
    let params = resolve(&db.url);
    let run = |table: &str, batch_rows_asked: bool| {
        let o = LoadOptions {
            sources: vec![Source::File(file.clone())],
            table: TableName {
                schema: None,
                name: table.to_owned(),
            },
            key: Some(vec!["id".to_owned()]),
            batch_rows: 1000,
            batch_rows_asked,
            ..LoadOptions::default()
        };
        let params = params.clone();
        async move { load_on_new_connection(&params, &o).await.expect("load") }
    };
    client
        .batch_execute(
            "CREATE TABLE empty_one (id int PRIMARY KEY, v text); \
             CREATE TABLE empty_many (id int PRIMARY KEY, v text)",
        )
        .await
        .expect("tables");
    for (table, asked, batches, repeated, updated) in [
        ("empty_one", false, 1, repeats, 0),
        ("new_one", false, 1, repeats, 0),
        ("empty_many", true, 5, 0, repeats),
        ("new_many", true, 5, 0, repeats),
    ] {
        let report = run(table, asked).await;
        assert_eq!(
            (
                report.batches,
                report.inserted,
                report.repeated,
                report.updated
            ),
            (batches, want.len() as u64, repeated, updated),
            "{table}: {report:?}"
        );
        let got: std::collections::BTreeMap<i32, String> = client
            .query(&format!("SELECT id, v FROM {table}"), &[])
            .await
            .expect("rows")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let want: std::collections::BTreeMap<i32, String> =
            want.iter().map(|(&k, v)| (k, v.clone())).collect();
        assert_eq!(got, want, "{table}");
        let key: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p'",
                &[&table],
            )
            .await
            .expect("key")
            .get(0);
        assert_eq!(key, 1, "{table}");
    }
    // A bad value on the last line: the one batch leaves the table as it
    // was, key and all.
    let bad = dir.file("bad.csv", &format!("{csv}12x,bad\n"), 0o644);
    client
        .batch_execute("CREATE TABLE empty_bad (id int PRIMARY KEY, v text)")
        .await
        .expect("table");
    let o = LoadOptions {
        sources: vec![Source::File(bad.clone())],
        table: TableName {
            schema: None,
            name: "empty_bad".to_owned(),
        },
        key: Some(vec!["id".to_owned()]),
        batch_rows: 1000,
        ..LoadOptions::default()
    };
    let err = load_on_new_connection(&params, &o)
        .await
        .expect_err("a bad value");
    assert_eq!(err.kind(), ErrorKind::Data);
    let at = err.location().expect("a location");
    assert_eq!((at.line, at.field), (5002, Some(1)), "{err}");
    let left: (i64, i64) = client
        .query_one(
            "SELECT (SELECT count(*) FROM empty_bad), (SELECT count(*) FROM pg_constraint \
             WHERE conrelid = 'empty_bad'::regclass AND contype = 'p')",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("left");
    assert_eq!(left, (0, 1));
}
