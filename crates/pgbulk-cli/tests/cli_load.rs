//! `pgbulk load`, `infer` and `plan` end to end against a real server.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{Run, Scratch, TestDb, pgbulk, run, server};

pub(crate) fn load(db: &TestDb, home: &Scratch, args: &[&str]) -> Run {
    run(pgbulk(home).arg("load").arg("--db").arg(&db.url).args(args))
}

pub(crate) async fn rows(db: &TestDb, sql: &str) -> Vec<Vec<Option<String>>> {
    let client = db.connect().await;
    client
        .simple_query(sql)
        .await
        .expect("query")
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

pub(crate) async fn count(db: &TestDb, table: &str) -> i64 {
    rows(db, &format!("SELECT count(*) FROM {table}")).await[0][0]
        .as_deref()
        .expect("count")
        .parse()
        .expect("number")
}

pub(crate) fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// The server's `server_version_num` (150004 for 15.4).
pub(crate) async fn server_version(db: &TestDb) -> i32 {
    db.connect()
        .await
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .expect("version")
        .get(0)
}

const SALES: &str = "PointOfSale;Product;Date;Stock\n121017;17240503103734;2019-08-17;2\n121017;17240503103735;2019-08-17;5\n121018;17240503103734;2019-08-18;1\n";

pub(crate) fn assert_ok(out: &Run) {
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
}

pub(crate) fn assert_bad(out: &Run, message: &str) {
    assert_eq!(
        out.code, 9,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let last = out.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("pgbulk: error: {message}"),
        "stderr: {}",
        out.stderr
    );
}

/// Shift_JIS, Big5 and GBK put ASCII bytes inside characters (`表` is
/// 0x95 0x5C, a backslash; `怖` 0x95 0x7C, a `|`): the text format's
/// escapes and a `|` delimiter are read as the server's COPY reads them,
/// as part of the character.
#[tokio::test]
async fn characters_holding_ascii_bytes_read_as_copy_reads_them() {
    let db = TestDb::new("load_ascii_inside").await;
    let home = Scratch::new("load-ascii-inside");
    let client = db.connect().await;
    for (label, server_name, format, bytes) in [
        (
            "shift_jis",
            "SJIS",
            "text",
            &b"1\tx\x95\x5cy\\n\x95\x5c\n2\t\x83\x5c\x95\x5c\n"[..],
        ),
        (
            "shift_jis",
            "SJIS",
            "csv",
            &b"1|x\x95\x7cy\n2|\x95\x7c\n"[..],
        ),
        ("big5", "BIG5", "text", &b"1\t\xa5\x5c\xa5\x5c\n"[..]),
        ("gbk", "GBK", "csv", &b"1|\x81\x7c\n"[..]),
    ] {
        client
            .batch_execute("DROP TABLE IF EXISTS theirs, ours; CREATE TABLE theirs (id int, v text); CREATE TABLE ours (id int, v text)")
            .await
            .expect("tables");
        let delimiter = if format == "csv" {
            ", DELIMITER '|'"
        } else {
            ""
        };
        pgbulk::copy::copy_in(
            &client,
            &format!(
                "COPY theirs FROM STDIN (FORMAT {format}, ENCODING '{server_name}'{delimiter})"
            ),
            [bytes.to_vec()],
        )
        .await
        .expect("the server reads it");
        let file = home.path().join(format!("{label}.{format}"));
        std::fs::write(&file, bytes).expect("write");
        let path = file.to_str().expect("utf8");
        let mut flags = vec![
            path,
            "--table",
            "ours",
            "--no-header",
            "--encoding",
            label,
            "--format",
            format,
        ];
        if format == "csv" {
            flags.extend(["--delimiter", "|"]);
        }
        assert_ok(&load(&db, &home, &flags));
        assert_eq!(
            rows(&db, "SELECT id::text, o.v FROM theirs t FULL JOIN ours o USING (id) WHERE t.v IS DISTINCT FROM o.v").await,
            Vec::<Vec<Option<String>>>::new(),
            "{label} {format}: the rows whose values differ from COPY's"
        );
        assert_eq!(
            rows(&db, "SELECT count(*)::text FROM ours").await,
            rows(&db, "SELECT count(*)::text FROM theirs").await,
        );
    }
}

/// Every byte from 0x80 up, in each single-byte encoding both pgbulk and
/// PostgreSQL know, reads as the server's own `COPY ... (ENCODING ...)`
/// reads it, and a byte the server refuses is a bad row.
#[tokio::test]
async fn single_byte_encodings_read_as_copy_reads_them() {
    let db = TestDb::new("load_single_byte").await;
    let home = Scratch::new("load-single-byte");
    let client = db.connect().await;
    for (label, server_name) in [
        ("latin1", "LATIN1"),
        ("windows-1252", "WIN1252"),
        ("windows-1250", "WIN1250"),
        ("windows-1251", "WIN1251"),
        ("windows-1253", "WIN1253"),
        ("windows-1254", "WIN1254"),
        ("windows-1255", "WIN1255"),
        ("windows-1256", "WIN1256"),
        ("windows-1257", "WIN1257"),
        ("windows-1258", "WIN1258"),
        ("iso-8859-2", "LATIN2"),
        ("iso-8859-3", "LATIN3"),
        ("iso-8859-4", "LATIN4"),
        ("iso-8859-5", "ISO_8859_5"),
        ("iso-8859-6", "ISO_8859_6"),
        ("iso-8859-7", "ISO_8859_7"),
        ("iso-8859-8", "ISO_8859_8"),
        ("iso-8859-9", "LATIN5"),
        ("iso-8859-10", "LATIN6"),
        ("iso-8859-13", "LATIN7"),
        ("iso-8859-14", "LATIN8"),
        ("iso-8859-15", "LATIN9"),
        ("iso-8859-16", "LATIN10"),
        ("koi8-r", "KOI8R"),
        ("koi8-u", "KOI8U"),
        ("ibm866", "WIN866"),
        ("windows-874", "WIN874"),
    ] {
        client
            .batch_execute("DROP TABLE IF EXISTS theirs, ours; CREATE TABLE theirs (id int, v text); CREATE TABLE ours (id int, v text)")
            .await
            .expect("tables");
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for byte in 0x80u8..=0xff {
            let row = [format!("{byte},").into_bytes(), vec![byte, b'\n']].concat();
            let copied = pgbulk::copy::copy_in(
                &client,
                &format!("COPY theirs FROM STDIN (FORMAT csv, ENCODING '{server_name}')"),
                [row.clone()],
            )
            .await;
            if copied.is_ok() {
                accepted.extend_from_slice(&row);
            } else {
                refused.push(row);
            }
        }
        // The server's name of the encoding reads as the WHATWG label.
        assert_eq!(
            pgbulk::input::encoding(server_name).expect(server_name),
            pgbulk::input::encoding(label).expect(label),
            "{server_name}"
        );
        let file = home.path().join(format!("{label}.csv"));
        std::fs::write(&file, &accepted).expect("write");
        let path = file.to_str().expect("utf8");
        let flags = ["--table", "ours", "--no-header", "--encoding", label];
        assert_ok(&load(&db, &home, &[&[path][..], &flags].concat()));
        assert_eq!(
            rows(&db, "SELECT id::text FROM theirs t FULL JOIN ours o USING (id) WHERE t.v IS DISTINCT FROM o.v").await,
            Vec::<Vec<Option<String>>>::new(),
            "{label}: the bytes whose values differ from COPY's"
        );
        assert_eq!(
            rows(&db, "SELECT count(*)::text FROM ours").await,
            vec![vec![s(&(128 - refused.len()).to_string())]]
        );
        // Each byte the server refuses is a row set aside, none loaded.
        if !refused.is_empty() {
            std::fs::write(&file, refused.concat()).expect("write");
            let out = load(
                &db,
                &home,
                &[&[path, "--max-errors", "1000"][..], &flags].concat(),
            );
            assert_ok(&out);
            assert!(
                out.stdout.contains(&format!(
                    " 0 inserted, 0 updated, 0 unchanged, {} rejected",
                    refused.len()
                )),
                "{label}: {}",
                out.stdout
            );
        }
    }
}

#[tokio::test]
async fn sales_file_inferred_then_upserted_with_a_key() {
    let db = TestDb::new("load_sales").await;
    let home = Scratch::new("load-sales");
    let file = home.file("sales.csv", SALES, 0o644);
    let f = file.to_str().expect("utf8");
    let out = load(
        &db,
        &home,
        &[
            f,
            "--table",
            "sales",
            "--delimiter",
            ";",
            "--key",
            "PointOfSale,Product,Date",
        ],
    );
    assert_ok(&out);
    assert!(
        out.stderr
            .contains("PRIMARY KEY (\"pointofsale\", \"product\", \"date\")"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("3 rows read, 3 inserted, 0 updated, 0 unchanged, 0 rejected"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(&db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'sales'::regclass AND attnum > 0 ORDER BY attnum").await,
        vec![vec![s("integer")], vec![s("bigint")], vec![s("date")], vec![s("integer")]]
    );
    // The same file again: already loaded, nothing to do.
    let again = load(&db, &home, &[f, "--table", "sales", "--delimiter", ";"]);
    assert_ok(&again);
    assert!(
        again.stdout.contains("was loaded completely into"),
        "{}",
        again.stdout
    );
    // A changed file repeating a key: upsert by default (the table has a key), last row wins.
    let changed = home.file(
        "sales2.csv",
        "PointOfSale;Product;Date;Stock\n121017;17240503103734;2019-08-17;7\n121017;17240503103734;2019-08-17;9\n121017;17240503103735;2019-08-17;5\n121019;1;2019-08-19;3\n",
        0o644,
    );
    let out = load(
        &db,
        &home,
        &[
            changed.to_str().expect("utf8"),
            "--table",
            "sales",
            "--delimiter",
            ";",
        ],
    );
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("4 rows read, 1 inserted, 1 updated, 1 unchanged, 1 repeated a key already in their batch (the last row per key was kept)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(
            &db,
            "SELECT stock::text FROM sales WHERE product = 17240503103734 AND pointofsale = 121017"
        )
        .await,
        vec![vec![s("9")]]
    );
    assert_eq!(count(&db, "sales").await, 4);
}

#[tokio::test]
async fn dialect_matrix() {
    let db = TestDb::new("load_dialects").await;
    let home = Scratch::new("load-dialects");
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE d (id int PRIMARY KEY, name text, note text, day date)")
        .await
        .expect("table");
    drop(client);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "comma",
            "id,name,note,day\n1,\"multi\nline\",,2024-01-01\n".to_owned(),
            vec![],
        ),
        (
            "semicolon-crlf",
            "id;name;note;day\r\n2;\"a;b\";\"\";2024-01-02\r\n".to_owned(),
            vec!["--delimiter", ";"],
        ),
        (
            "tab-headerless",
            "3\tx\t\\N\t2024-01-03\n".to_owned(),
            vec![
                "--delimiter",
                "\\t",
                "--no-header",
                "--columns",
                "id,name,note,day",
                "--null",
                "\\N",
            ],
        ),
        (
            "quote-escape",
            "id|name|note|day\n4|'it\\'s'|'NULL'|2024-01-04\n".to_owned(),
            vec!["--delimiter", "|", "--quote", "'", "--escape", "\\"],
        ),
        (
            "bom-skip",
            "\u{feff}# exported 2024\n# by a tool\nDAY,ID,Name\n2024-01-05,5,reordered\n"
                .to_owned(),
            vec!["--skip-lines", "2"],
        ),
    ];
    for (name, text, flags) in &cases {
        let file = home.file(&format!("{name}.csv"), text, 0o644);
        let mut args = vec![file.to_str().expect("utf8"), "--table", "d"];
        args.extend(flags.iter().copied());
        assert_ok(&load(&db, &home, &args));
    }
    // latin1 and UTF-16.
    let latin1 = home.path().join("latin1.csv");
    std::fs::write(&latin1, b"id,name\n6,caf\xe9\n").expect("write");
    assert_ok(&load(
        &db,
        &home,
        &[
            latin1.to_str().expect("utf8"),
            "--table",
            "d",
            "--encoding",
            "latin1",
        ],
    ));
    let utf16 = home.path().join("utf16.csv");
    let mut bytes = vec![0xff, 0xfe];
    for u in "id,name\n7,Grüße 🐘\n".encode_utf16() {
        bytes.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(&utf16, bytes).expect("write");
    assert_ok(&load(
        &db,
        &home,
        &[
            utf16.to_str().expect("utf8"),
            "--table",
            "d",
            "--encoding",
            "utf-16le",
        ],
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT id::text, name, note, day::text FROM d ORDER BY id"
        )
        .await,
        vec![
            vec![s("1"), s("multi\nline"), None, s("2024-01-01")],
            vec![s("2"), s("a;b"), s(""), s("2024-01-02")],
            vec![s("3"), s("x"), None, s("2024-01-03")],
            vec![s("4"), s("it's"), s("NULL"), s("2024-01-04")],
            vec![s("5"), s("reordered"), None, s("2024-01-05")],
            vec![s("6"), s("café"), None, None],
            vec![s("7"), s("Grüße 🐘"), None, None],
        ]
    );
}

#[tokio::test]
async fn bad_rows_name_file_line_column_and_reason() {
    let db = TestDb::new("load_bad").await;
    let home = Scratch::new("load-bad");
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE b (a int, b text, d date, n numeric, twice int GENERATED ALWAYS AS (a * 2) STORED)",
        )
        .await
        .expect("table");
    let cases: Vec<(&str, &[u8], String)> = vec![
        ("unclosed", b"a,b,d,n\n1,x,2024-01-01,1\n2,\"open,2024-01-01,1\n3,y,2024-01-01,1\n", "unclosed.csv:3: unterminated quoted field (a quote opened on line 3 is never closed)".into()),
        ("fields", b"a,b,d,n\n1,x,2024-01-01\n", "fields.csv:2: expected 4 fields, found 3".into()),
        ("undecodable", b"a,b,d,n\n1,ab\xffc,2024-01-01,1\n", "undecodable.csv:2:2: column \"b\": undecodable byte sequence for encoding UTF-8 at byte 2 of the field (0xff 0x63); an input in another encoding is read with --encoding NAME (windows-1252, latin1, ...)".into()),
        ("nul", b"a,b,d,n\n1,a\0b,2024-01-01,1\n", "nul.csv:2:2: column \"b\": value \"a\\0b\": invalid byte sequence for encoding \"UTF8\": 0x00 (a NUL character at position 2)".into()),
        ("overflow", b"a,b,d,n\n99999999999,x,2024-01-01,1\n", "overflow.csv:2:1: column \"a\": value \"99999999999\" is out of range for type integer".into()),
        // Values the encoder does not take are the server's to judge, in its words.
        ("date", b"a,b,d,n\n1,x,2019-02-30,1\n", "date.csv:2:3: column \"d\": date/time field value out of range: \"2019-02-30\"".into()),
        ("date_style", b"a,b,d,n\n1,x,02/30/2019,1\n", "date_style.csv:2:3: column \"d\": date/time field value out of range: \"02/30/2019\"".into()),
        ("number", b"a,b,d,n\n1,x,2024-01-01,1.2.3\n", "number.csv:2:4: column \"n\": invalid input syntax for type numeric: \"1.2.3\"".into()),
        ("duplicate", b"a,b,a\n1,2,3\n", "duplicate.csv:1: duplicate column name \"a\" in the header (fields 1 and 3); --columns A,B,C names the fields instead of the header".into()),
        ("extra", b"a,zzz\n1,2\n", "extra.csv:1: column \"zzz\" (field 2) is not a column of public.b (it has: a, b, d, n); --ignore-extra skips it".into()),
        ("generated", b"a,Twice\n1,2\n", "generated.csv:1: column \"Twice\" (field 2) is the generated column \"twice\" of public.b, whose values the server computes; --ignore-extra skips it".into()),
    ];
    for (name, bytes, message) in &cases {
        let path = home.path().join(format!("{name}.csv"));
        std::fs::write(&path, bytes).expect("write");
        let out = run(pgbulk(&home).current_dir(home.path()).args([
            "load",
            &format!("{name}.csv"),
            "--table",
            "b",
            "--db",
            &db.url,
        ]));
        assert_bad(&out, message);
    }
    assert_eq!(
        count(&db, "b").await,
        0,
        "nothing of a failed batch is visible"
    );
    let header_only = home.file("header.csv", "a,b,d,n\n", 0o644);
    let out = load(
        &db,
        &home,
        &[header_only.to_str().expect("utf8"), "--table", "b"],
    );
    assert_ok(&out);
    assert!(out.stdout.contains("0 rows read"), "{}", out.stdout);
    let extra = home.file("extra2.csv", "a,zzz\n1,2\n", 0o644);
    assert_ok(&load(
        &db,
        &home,
        &[
            extra.to_str().expect("utf8"),
            "--table",
            "b",
            "--ignore-extra",
        ],
    ));
    client
        .batch_execute("CREATE TABLE req (id int NOT NULL, v text)")
        .await
        .expect("table");
    let missing = home.file("missing.csv", "v\nx\n", 0o644);
    let out = run(pgbulk(&home).current_dir(home.path()).args([
        "load",
        "missing.csv",
        "--table",
        "req",
        "--db",
        &db.url,
    ]));
    assert_bad(
        &out,
        "missing.csv: column \"id\" of public.req is NOT NULL without a default, and the input has no such column",
    );
    let _ = missing;
}

/// An enum's labels are checked where the row is known: a value that is
/// not one (exactly: case and spaces count, as for the server) names its
/// file, line and column, and `--max-errors` sets its row aside.
#[tokio::test]
async fn a_value_that_is_no_label_of_its_enum_is_named_by_line() {
    let db = TestDb::new("load_enum").await;
    let home = Scratch::new("load-enum");
    db.connect()
        .await
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE TABLE en (id int PRIMARY KEY, m mood, ms mood[]);
             CREATE TABLE plain (id int, m mood, ms mood[])",
        )
        .await
        .expect("tables");
    let cases = [
        (
            "case.csv",
            "id,m,ms\n1,ok,{}\n2,Sad,{}\n",
            "case.csv:3:2: column \"m\": invalid input value for enum mood: \"Sad\"",
        ),
        (
            "space.csv",
            "id,m,ms\n1, sad,{}\n",
            "space.csv:2:2: column \"m\": invalid input value for enum mood: \" sad\"",
        ),
        (
            "element.csv",
            "id,m,ms\n1,ok,\"{ok,happy}\"\n2,ok,\"{ok,bad}\"\n",
            "element.csv:3:3: column \"ms\": value \"{ok,bad}\": invalid input value for enum mood: \"bad\"",
        ),
    ];
    for table in ["en", "plain"] {
        for (name, text, message) in cases {
            home.file(name, text, 0o644);
            let out = run(pgbulk(&home)
                .current_dir(home.path())
                .args(["load", name, "--table", table, "--db", &db.url]));
            assert_bad(&out, message);
            assert_eq!(count(&db, table).await, 0, "{table} {name}");
        }
        home.file(
            "mixed.csv",
            "id,m,ms\n1,sad,\"{happy,NULL}\"\n2,Ok,{}\n3,,\n4,ok,{x}\n5,happy,{}\n",
            0o644,
        );
        let out = run(pgbulk(&home).current_dir(home.path()).args([
            "load",
            "mixed.csv",
            "--table",
            table,
            "--db",
            &db.url,
            "--max-errors",
            "2",
            "--reject-file",
            "bad.csv",
        ]));
        assert_ok(&out);
        assert!(
            out.stdout.contains("2 rejected (in bad.csv)"),
            "{}",
            out.stdout
        );
        assert_eq!(
            std::fs::read_to_string(home.path().join("bad.csv")).expect("rejects"),
            "2,Ok,{}\n4,ok,{x}\n"
        );
        assert_eq!(
            std::fs::read_to_string(home.path().join("bad.csv.log")).expect("log"),
            "mixed.csv:3:2: column \"m\": invalid input value for enum mood: \"Ok\"\n\
             mixed.csv:5:3: column \"ms\": value \"{x}\": invalid input value for enum mood: \"x\"\n"
        );
        assert_eq!(
            rows(
                &db,
                &format!("SELECT id::text, m::text, ms::text FROM {table} ORDER BY id")
            )
            .await,
            vec![
                vec![s("1"), s("sad"), s("{happy,NULL}")],
                vec![s("3"), None, None],
                vec![s("5"), s("happy"), s("{}")],
            ]
        );
        std::fs::remove_file(home.path().join("bad.csv")).expect("rm");
        std::fs::remove_file(home.path().join("bad.csv.log")).expect("rm");
    }
}

/// A value its column's domain refuses (a CHECK of the domain, its NOT
/// NULL) fails the batch with the server's words, and `--max-errors` sets
/// its row aside by line, as for a table's CHECK; one too long for the
/// domain's `varchar(n)` is named by line and column as it is read.
#[tokio::test]
async fn a_row_a_domain_refuses_is_set_aside_by_max_errors() {
    let db = TestDb::new("load_domain").await;
    let home = Scratch::new("load-domain");
    db.connect()
        .await
        .batch_execute(
            "CREATE DOMAIN posint AS int CHECK (VALUE > 0);
             CREATE DOMAIN code AS varchar(4) NOT NULL CHECK (VALUE ~ '^[A-Z]+$');
             CREATE TABLE dk (id int PRIMARY KEY, n posint, c code);
             CREATE TABLE dp (id int, n posint, c code);
             CREATE TABLE dc (id int PRIMARY KEY, n int CHECK (n > 0), c text)",
        )
        .await
        .expect("tables");
    home.file(
        "d.csv",
        "id,n,c\n1,5,AB\n2,-1,AB\n3,7,ab\n4,8,\n5,9,XYZ\n",
        0o644,
    );
    home.file(
        "d7.csv",
        "id,n,c\n1,5,AB\n2,-1,AB\n3,7,ab\n4,8,\n5,9,XYZ\n6,10,ABCDE\n",
        0o644,
    );
    // An empty table is filled as a new copy of it: the server's message
    // names the table, not the copy.
    let out = run(pgbulk(&home)
        .current_dir(home.path())
        .args(["load", "d.csv", "--table", "dc", "--db", &db.url]));
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("new row for relation public.dc violates check constraint \"dc_n_check\"")
            && !out.stderr.contains("pgbulk_new"),
        "{}",
        out.stderr
    );
    // A replace-atomic whose first batch committed into its new table:
    // the failed run drops that table (its rows would hold disk until the
    // next run).
    let out = run(pgbulk(&home).current_dir(home.path()).args([
        "load",
        "d.csv",
        "--table",
        "dc",
        "--mode",
        "replace-atomic",
        "--batch-rows",
        "1",
        "--db",
        &db.url,
    ]));
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("d.csv:3: new row for relation public.dc violates check constraint"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text FROM pg_class WHERE relname LIKE 'pgbulk\\_new\\_%'"
        )
        .await,
        vec![vec![s("0")]],
        "no new table left"
    );
    for table in ["dk", "dp"] {
        let out = run(pgbulk(&home)
            .current_dir(home.path())
            .args(["load", "d.csv", "--table", table, "--db", &db.url]));
        assert_eq!(out.code, 9, "{}", out.stderr);
        assert!(
            out.stderr
                .contains("violates check constraint \"posint_check\"")
                && out.stderr.contains("--max-errors N sets such rows aside"),
            "{}",
            out.stderr
        );
        assert_eq!(count(&db, table).await, 0);
        let out = run(pgbulk(&home).current_dir(home.path()).args([
            "load",
            "d7.csv",
            "--table",
            table,
            "--db",
            &db.url,
            "--max-errors",
            "4",
            "--reject-file",
            "bad.csv",
        ]));
        assert_ok(&out);
        assert!(
            out.stdout.contains("4 rejected (in bad.csv)"),
            "{}",
            out.stdout
        );
        // The domain's varchar(4) is checked as the file is read.
        assert_eq!(
            std::fs::read_to_string(home.path().join("bad.csv")).expect("rejects"),
            "6,10,ABCDE\n2,-1,AB\n3,7,ab\n4,8,\n"
        );
        let log = std::fs::read_to_string(home.path().join("bad.csv.log")).expect("log");
        assert!(
            log.contains(
                "d7.csv:3: value for domain posint violates check constraint \"posint_check\""
            ) && log.contains(
                "d7.csv:4: value for domain code violates check constraint \"code_check\""
            ) && log.contains("d7.csv:5: domain code does not allow null values")
                && log.starts_with(
                    "d7.csv:7:3: column \"c\": value too long for type character varying(4): \"ABCDE\"\n"
                ),
            "{log}"
        );
        assert_eq!(
            rows(
                &db,
                &format!("SELECT id::text, n::text, c::text FROM {table} ORDER BY id")
            )
            .await,
            vec![
                vec![s("1"), s("5"), s("AB")],
                vec![s("5"), s("9"), s("XYZ")],
            ]
        );
        std::fs::remove_file(home.path().join("bad.csv")).expect("rm");
        std::fs::remove_file(home.path().join("bad.csv.log")).expect("rm");
    }
}

/// An array column's typmod bounds its elements, as the server's input
/// does: an element too long for `varchar(2)[]` or too wide for
/// `numeric(5,2)[]` is a bad row named by line and column (set aside by
/// `--max-errors`), not a failed COPY; spaces past the length are cut
/// and digits past the scale rounded as the server does. An empty
/// sub-array (`{{}}`) is the server's to judge, as its own COPY would.
#[tokio::test]
async fn an_arrays_elements_are_bounded_by_its_columns_type() {
    let db = TestDb::new("load_array_bounds").await;
    let home = Scratch::new("load-array-bounds");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE ab (id int, tags varchar(2)[], amounts numeric(5,2)[], m int[])",
        )
        .await
        .expect("table");
    home.file(
        "a.csv",
        "id,tags,amounts,m\n\
         1,\"{ab,\"\"c \"\",NULL}\",\"{1.005,-2.5,NULL}\",\"{{1,2},{3,4}}\"\n\
         2,{abc},{1},{}\n\
         3,\"{\"\"ab   \"\"}\",{1234.5},{}\n\
         4,{x},{2},{{}}\n\
         5,{},{},{5}\n",
        0o644,
    );
    let out = load(&db, &home, &["a.csv", "-t", "ab"]);
    assert_bad(
        &out,
        "a.csv:3:2: column \"tags\": value \"{abc}\": value too long for type character varying(2): \"abc\"",
    );
    assert_eq!(count(&db, "ab").await, 0);
    let out = load(
        &db,
        &home,
        &[
            "a.csv",
            "-t",
            "ab",
            "--max-errors",
            "5",
            "--reject-file",
            "bad.csv",
        ],
    );
    assert_ok(&out);
    // `{{}}` is the server's to judge: PostgreSQL 17's parser reads it as
    // an empty array, earlier ones refuse it.
    let empty_sub_array = db
        .connect()
        .await
        .query_one("SELECT '{{}}'::int[]::text", &[])
        .await
        .ok()
        .map(|row| row.get::<_, String>(0));
    let rejected = if empty_sub_array.is_some() { 2 } else { 3 };
    assert!(
        out.stdout
            .contains(&format!("{rejected} rejected (in bad.csv)")),
        "{}",
        out.stdout
    );
    let log = std::fs::read_to_string(home.path().join("bad.csv.log")).expect("log");
    assert!(
        log.contains("a.csv:3:2: column \"tags\": value \"{abc}\": value too long for type character varying(2)")
            && log.contains("a.csv:4:3: column \"amounts\": value \"{1234.5}\": numeric field overflow")
            && (empty_sub_array.is_some()
                || log.contains("a.csv:5:4: column \"m\": malformed array literal: \"{{}}\"")),
        "{log}"
    );
    let mut expected = vec![vec![
        s("1"),
        s("{ab,\"c \",NULL}"),
        s("{1.01,-2.50,NULL}"),
        s("{{1,2},{3,4}}"),
    ]];
    if let Some(m) = empty_sub_array {
        expected.push(vec![s("4"), s("{x}"), s("{2.00}"), Some(m)]);
    }
    expected.push(vec![s("5"), s("{}"), s("{}"), s("{5}")]);
    assert_eq!(
        rows(
            &db,
            "SELECT id::text, tags::text, amounts::text, m::text FROM ab ORDER BY id"
        )
        .await,
        expected
    );
}

#[tokio::test]
async fn reject_file_keeps_bad_rows_byte_for_byte() {
    let db = TestDb::new("load_reject").await;
    let home = Scratch::new("load-reject");
    db.connect()
        .await
        .batch_execute("CREATE TABLE r (a int, b text)")
        .await
        .expect("table");
    let input: &[u8] = b"a,b\r\n1,one\r\nx,\"two\r\nlines\"\r\n3,three\r\n4\r\n5,five\r\n";
    std::fs::write(home.path().join("r.csv"), input).expect("write");
    let out = run(pgbulk(&home).current_dir(home.path()).args([
        "load",
        "r.csv",
        "--table",
        "r",
        "--db",
        &db.url,
        "--max-errors",
        "5",
        "--reject-file",
        "bad.csv",
    ]));
    assert_ok(&out);
    assert!(
        out.stdout.contains("5 rows read, 3 inserted")
            && out.stdout.contains("2 rejected (in bad.csv)"),
        "{}",
        out.stdout
    );
    let rejected = std::fs::read(home.path().join("bad.csv")).expect("reject file");
    // Rows rejected while reading come first, then those the server
    // rejected, batch by batch.
    assert_eq!(rejected, b"4\r\nx,\"two\r\nlines\"\r\n");
    let log = std::fs::read_to_string(home.path().join("bad.csv.log")).expect("log");
    assert_eq!(
        log,
        "r.csv:6: expected 2 fields, found 1\nr.csv:3:1: column \"a\": invalid input syntax for type integer: \"x\"\n"
    );
    assert_eq!(count(&db, "r").await, 3);
    let out = run(pgbulk(&home).current_dir(home.path()).args([
        "load",
        "r.csv",
        "--table",
        "r",
        "--db",
        &db.url,
        "--max-errors",
        "1",
        "--reject-file",
        "bad2.csv",
        "--restart",
    ]));
    assert_bad(
        &out,
        "r.csv:3:1: column \"a\": invalid input syntax for type integer: \"x\" (more than --max-errors 1 bad rows)",
    );
}

#[tokio::test]
async fn stdin_gzip_and_zstd() {
    let db = TestDb::new("load_stdin").await;
    let home = Scratch::new("load-stdin");
    // Standard input is peeked for its delimiter, then read whole.
    let text = "id;v\n1;a\n2;b\n";
    let mut child = pgbulk(&home)
        .args(["load", "--table", "s", "--db", &db.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (tool, text) in [("gzip", "id,v\n3,c\n"), ("zstd", "id,v\n4,d\n")] {
        let path = home.file(&format!("in-{tool}.csv"), text, 0o644);
        let status = Command::new(tool)
            .arg("-q")
            .arg("-f")
            .arg(&path)
            .status()
            .expect("compress");
        assert!(status.success());
        let compressed = format!(
            "{}.{}",
            path.display(),
            if tool == "gzip" { "gz" } else { "zst" }
        );
        assert_ok(&load(&db, &home, &[&compressed, "--table", "s"]));
    }
    assert_eq!(
        rows(&db, "SELECT id::text, v FROM s ORDER BY id").await,
        vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b")],
            vec![s("3"), s("c")],
            vec![s("4"), s("d")]
        ]
    );
}

#[tokio::test]
async fn interrupted_load_keeps_whole_batches_and_resumes() {
    let db = TestDb::new("load_sigint").await;
    let home = Scratch::new("load-sigint");
    let total = 600_000u64;
    let mut text = String::from("id,v\n");
    for i in 0..total {
        text.push_str(&format!("{i},value number {i}\n"));
    }
    let file = home.file("big.csv", &text, 0o644);
    let f = file.to_str().expect("utf8").to_owned();
    db.connect()
        .await
        .batch_execute("CREATE TABLE big (id int, v text)")
        .await
        .expect("table");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "load",
            &f,
            "--table",
            "big",
            "--db",
            &db.url,
            "--batch-rows",
            "20000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let child = pgbulk(&home)
        .args(args(&[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until some batches are committed, then interrupt.
    let client = db.connect().await;
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname = 'pgbulk_watermark'",
                &[],
            )
            .await
            .expect("q")
            .get(0);
        if n == 1 {
            let committed: i64 = client
                .query_one("SELECT count(*) FROM big", &[])
                .await
                .expect("q")
                .get(0);
            if committed >= 40_000 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id();
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("were committed; the batch in flight was rolled back"),
        "{stderr}"
    );
    let committed: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(committed % 20_000, 0, "only whole batches are committed");
    assert!(committed < total as i64, "interrupted before the end");
    let reported: String = stderr
        .split("interrupted: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("count in message")
        .replace(',', "");
    let reported: i64 = reported.parse().expect("number");
    // The load is stopped, not dropped: a COMMIT in flight when the
    // signal arrives is counted once it lands.
    assert_eq!(reported, committed, "the summary counts what committed");
    // The same command again continues where the first stopped.
    let out = run(pgbulk(&home).args(args(&[])));
    assert_ok(&out);
    assert!(
        out.stdout.contains(&format!(
            "resumed after {}",
            crate_thousands(committed as u64)
        )),
        "{}",
        out.stdout
    );
    assert_eq!(count(&db, "big").await, total as i64);
    assert_eq!(
        rows(&db, "SELECT count(DISTINCT id) FROM big").await[0][0].as_deref(),
        Some(total.to_string().as_str()),
        "no row loaded twice"
    );
    // --single-transaction: an interrupted load leaves nothing at all.
    db.connect()
        .await
        .batch_execute("TRUNCATE big")
        .await
        .expect("truncate");
    let child = pgbulk(&home)
        .args(args(&["--single-transaction"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    loop {
        let busy: i64 = client
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%' AND pid <> pg_backend_pid()", &[])
            .await
            .expect("q")
            .get(0);
        if busy > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130));
    // All or nothing, and said truly: a signal that comes as the COMMIT
    // lands finds the load done.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rows = count(&db, "big").await;
    if stderr.contains("nothing was committed") {
        assert_eq!(rows, 0, "{stderr}");
    } else {
        assert!(stderr.contains("after the load committed"), "{stderr}");
        assert_eq!(rows, total as i64, "{stderr}");
    }
}

fn crate_thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn infer_and_plan_print_without_changing_anything() {
    let db = TestDb::new("load_infer").await;
    let home = Scratch::new("load-infer");
    let file = home.file("sales.csv", SALES, 0o644);
    let out = run(pgbulk(&home).args([
        "infer",
        file.to_str().expect("utf8"),
        "--delimiter",
        ";",
        "--table",
        "sales.stock",
        "--key",
        "PointOfSale,Product,Date",
    ]));
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        "-- types inferred from 3 rows (136 bytes: all of it); --sample-all reads every row, --type COL=TYPE overrides one\nCREATE TABLE \"sales\".\"stock\" (\n    \"pointofsale\" integer,\n    \"product\" bigint,\n    \"date\" date,\n    \"stock\" integer,\n    PRIMARY KEY (\"pointofsale\", \"product\", \"date\")\n);\n"
    );
    let schema = home.file("schema.sql", &out.stdout.replace("\"sales\".", ""), 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE stock (pointofsale int, product bigint, date date)")
        .await
        .expect("t");
    let plan = run(pgbulk(&home).args([
        "plan",
        "--schema",
        schema.to_str().expect("utf8"),
        "--db",
        &db.url,
    ]));
    assert_ok(&plan);
    assert!(
        plan.stdout.contains("add column stock at the end"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("PRIMARY KEY USING INDEX"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        count(&db, "information_schema.columns WHERE table_name = 'stock'").await,
        3,
        "plan changes nothing"
    );
    // Loading with the schema applies it.
    assert_ok(&load(
        &db,
        &home,
        &[
            file.to_str().expect("utf8"),
            "--table",
            "stock",
            "--delimiter",
            ";",
            "--schema",
            schema.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(count(&db, "stock").await, 3);
}

#[tokio::test]
async fn a_big_file_loads_in_two_streams_and_resumes_each() {
    let db = TestDb::new("load_streams").await;
    let home = Scratch::new("load-streams");
    let total = 1_000_000u64;
    let mut text = String::with_capacity(40 * total as usize);
    text.push_str("id,v\n");
    for i in 0..total {
        text.push_str(&format!("{i},value number {i} with some padding\n"));
    }
    assert!(text.len() > 32 << 20, "big enough for two streams");
    let file = home.file("big.csv", &text, 0o644);
    drop(text);
    let f = file.to_str().expect("utf8").to_owned();
    // The table is declared, not there: created once, before the streams.
    let schema = home.file("big2.sql", "CREATE TABLE big2 (id int, v text);", 0o644);
    let schema = schema.to_str().expect("utf8").to_owned();
    let args = [
        "load",
        &f,
        "--table",
        "big2",
        "--schema",
        &schema,
        "--db",
        &db.url,
        "--batch-rows",
        "50000",
    ];
    let child = pgbulk(&home)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let client = db.connect().await;
    loop {
        // The table appears once the load has created it.
        let committed: i64 = client
            .query_one("SELECT count(*) FROM big2", &[])
            .await
            .map_or(0, |r| r.get(0));
        if committed >= 100_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streams: i64 = client
        .query_one(
            "SELECT count(*) FROM pgbulk_watermark WHERE table_name LIKE 'public.big2#load:%:_'",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert!(streams >= 1, "the halves keep their own positions");
    // Run again on one connection: it goes on with the halves where they
    // stopped, not with the whole file under the name for one.
    let out = run(pgbulk(&home).args(args).args(["--streams", "1"]));
    assert_ok(&out);
    assert!(out.stdout.contains("resumed after"), "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "big.csv in two halves and stopped: going on with each half where it stopped"
        ),
        "{}",
        out.stderr
    );
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM big2",
            &[],
        )
        .await
        .expect("q");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i32>(2),
            row.get::<_, i32>(3)
        ),
        (total as i64, total as i64, 0, total as i32 - 1),
        "every row exactly once"
    );
    let stray: i64 = client
        .query_one(
            "SELECT count(*) FROM pgbulk_watermark WHERE table_name NOT LIKE 'public.big2#load:%' \
             AND table_name <> 'public.big2#last-run'",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert_eq!(
        stray, 0,
        "only the streams' ledger rows and the last run, no setup row"
    );
    for streams in [None, Some("1")] {
        let again = run(pgbulk(&home)
            .args(args)
            .args(streams.map(|n| ["--streams", n]).into_iter().flatten()));
        assert!(
            again.stdout.contains("was loaded completely into")
                && !again.stderr.contains("stopped"),
            "{}\n{}",
            again.stdout,
            again.stderr
        );
    }
}

#[tokio::test]
async fn an_upsert_of_a_big_file_keeps_the_last_row_of_a_key_in_both_halves() {
    let db = TestDb::new("load_upsert_halves").await;
    let home = Scratch::new("load-upsert-halves");
    // Every key twice, once in each half of a file big enough to be split:
    // the second half's rows come later in the file, so they win.
    let keys = 400_000u64;
    let mut text = String::with_capacity(130 * keys as usize);
    text.push_str("id,v\n");
    for half in ["first", "second"] {
        for i in 0..keys {
            text.push_str(&format!(
                "{i},{half} row of key {i} padded to make it bigger\n"
            ));
        }
    }
    assert!(text.len() > 32 << 20, "big enough for two streams");
    let file = home.file("twice.csv", &text, 0o644);
    drop(text);
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE twice (id int PRIMARY KEY, v text)")
        .await
        .expect("table");
    let f = file.to_str().expect("utf8");
    let out = run(pgbulk(&home).args([
        "load",
        f,
        "--table",
        "twice",
        "--db",
        &db.url,
        "--batch-rows",
        "50000",
    ]));
    assert_ok(&out);
    assert!(!out.stderr.contains("waiting for"), "{}", out.stderr);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE v LIKE 'second %') FROM twice",
            &[],
        )
        .await
        .expect("q");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (keys as i64, keys as i64),
        "the later row of every key"
    );
}

#[tokio::test]
async fn a_big_text_file_splits_where_a_record_ends_and_stops_at_its_end_marker() {
    let db = TestDb::new("load_text_halves").await;
    let home = Scratch::new("load-text-halves");
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE lines (id int, v text)")
        .await
        .expect("table");
    // Each value spans two lines (a backslash before the line end, as
    // MySQL's INTO OUTFILE writes one), the first much the longer: a file
    // big enough to be read in halves is split where a record ends, not
    // at the first line end after its middle.
    let rows = 200_000u64;
    let pad = "x".repeat(150);
    let mut text = String::with_capacity(200 * rows as usize);
    for i in 0..rows {
        text.push_str(&format!("{i}\tline of row {i}, {pad}\\\nsecond\n"));
    }
    assert!(text.len() > 32 << 20, "big enough for two streams");
    // Then the same with `\.` alone on a line a fifth of the way in: COPY
    // reads nothing after it, and neither does a half.
    let at = text.len() / 5;
    let at = at + text[at..].find("second\n").expect("a record's end") + 7;
    let mut marked = text.clone();
    marked.insert_str(at, "\\.\n");
    let before = text[..at].matches("second\n").count() as i64;
    for (name, text, expected) in [
        ("escaped.txt", text, rows as i64),
        ("marked.txt", marked, before),
    ] {
        let file = home.file(name, &text, 0o644);
        drop(text);
        client
            .batch_execute("TRUNCATE lines")
            .await
            .expect("truncate");
        let f = file.to_str().expect("utf8");
        let out = run(pgbulk(&home).args([
            "load",
            f,
            "--table",
            "lines",
            "--db",
            &db.url,
            "--format",
            "text",
            "--no-header",
            "--restart",
        ]));
        assert_ok(&out);
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE v = 'line of row ' || id || ', ' || repeat('x', 150) || chr(10) || 'second') FROM lines",
                &[],
            )
            .await
            .expect("q");
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            (expected, expected),
            "{name}: {}",
            out.stderr
        );
        assert_eq!(
            out.stderr.contains("ends the data, as COPY reads it"),
            name == "marked.txt",
            "{}",
            out.stderr
        );
    }
    // `\.` anywhere else is refused, as COPY refuses it, naming its line.
    let file = home.file("dot.txt", "1\ta\n2\tb\\.\n3\tc\n", 0o644);
    let out = run(pgbulk(&home).args([
        "load",
        file.to_str().expect("utf8"),
        "--table",
        "lines",
        "--db",
        &db.url,
        "--format",
        "text",
        "--no-header",
    ]));
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "dot.txt:2: \\. (the text format's end-of-data marker) is not alone on its line"
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn upsert_on_a_key_other_than_the_primary_key_and_replace_modes() {
    let db = TestDb::new("load_key").await;
    let home = Scratch::new("load-key");
    db.connect()
        .await
        .batch_execute("CREATE TABLE k (code text, qty int, note text DEFAULT 'kept')")
        .await
        .expect("table");
    let first = home.file("k1.csv", "code,qty\nA,1\nB,2\n", 0o644);
    let out = load(
        &db,
        &home,
        &[
            first.to_str().expect("utf8"),
            "--table",
            "k",
            "--mode",
            "upsert",
            "--key",
            "code",
        ],
    );
    assert_ok(&out);
    let second = home.file("k2.csv", "code,qty\nB,3\nC,4\nA,1\n", 0o644);
    let out = load(
        &db,
        &home,
        &[
            second.to_str().expect("utf8"),
            "--table",
            "k",
            "--mode",
            "upsert",
            "--key",
            "code",
        ],
    );
    assert_ok(&out);
    assert!(
        out.stdout
            .contains("3 rows read, 1 inserted, 1 updated, 1 unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(&db, "SELECT code, qty::text, note FROM k ORDER BY code").await,
        vec![
            vec![s("A"), s("1"), s("kept")],
            vec![s("B"), s("3"), s("kept")],
            vec![s("C"), s("4"), s("kept")],
        ],
        "columns the file lacks keep their defaults and values"
    );
    let out = load(
        &db,
        &home,
        &[
            first.to_str().expect("utf8"),
            "--table",
            "k",
            "--mode",
            "upsert",
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("upsert needs a key"), "{}", out.stderr);
    // replace: the table ends up with exactly the file's rows.
    let out = load(
        &db,
        &home,
        &[
            second.to_str().expect("utf8"),
            "--table",
            "k",
            "--mode",
            "replace",
        ],
    );
    assert_ok(&out);
    assert!(out.stdout.contains("3 deleted"), "{}", out.stdout);
    assert_eq!(count(&db, "k").await, 3);
    let out = load(
        &db,
        &home,
        &[
            first.to_str().expect("utf8"),
            "--table",
            "k",
            "--mode",
            "replace-atomic",
        ],
    );
    assert_ok(&out);
    assert_eq!(
        rows(&db, "SELECT string_agg(code, ',' ORDER BY code) FROM k").await,
        vec![vec![s("A,B")]]
    );
    // A file of no rows replaces nothing, and says so.
    let header = home.file("header.csv", "code,qty\n", 0o644);
    for mode in ["replace", "replace-atomic"] {
        let out = load(
            &db,
            &home,
            &[
                header.to_str().expect("utf8"),
                "--table",
                "k",
                "--mode",
                mode,
            ],
        );
        assert_ok(&out);
        assert!(
            out.stderr
                .contains("public.k was not replaced and keeps its rows: the input has no rows"),
            "{}",
            out.stderr
        );
        assert_eq!(count(&db, "k").await, 2);
    }
}

#[tokio::test]
async fn identity_generated_and_defaulted_columns_fill_themselves() {
    let db = TestDb::new("load_generated").await;
    let home = Scratch::new("load-generated");
    let schema = home.file(
        "g.sql",
        "CREATE TABLE g (id bigint GENERATED ALWAYS AS IDENTITY, code text PRIMARY KEY, qty int NOT NULL DEFAULT 1, \
         double_qty int GENERATED ALWAYS AS (qty * 2) STORED, seen timestamptz DEFAULT '2024-01-01 00:00+00');",
        0o644,
    );
    let file = home.file("g.csv", "Code,Qty\nx,5\ny,\n", 0o644);
    let out = load(
        &db,
        &home,
        &[
            file.to_str().expect("utf8"),
            "--table",
            "g",
            "--schema",
            schema.to_str().expect("utf8"),
        ],
    );
    assert_eq!(
        out.code, 9,
        "an empty qty is NULL, and qty is NOT NULL: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("g.csv:3:2: column \"qty\": NULL in a NOT NULL column"),
        "{}",
        out.stderr
    );
    let file = home.file("g2.csv", "Code,Qty\nx,5\ny,7\n", 0o644);
    assert_ok(&load(
        &db,
        &home,
        &[
            file.to_str().expect("utf8"),
            "--table",
            "g",
            "--schema",
            schema.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT id::text, code, qty::text, double_qty::text, seen::text FROM g ORDER BY id"
        )
        .await,
        vec![
            vec![s("1"), s("x"), s("5"), s("10"), s("2024-01-01 00:00:00+00")],
            vec![s("2"), s("y"), s("7"), s("14"), s("2024-01-01 00:00:00+00")],
        ]
    );
    // Replace atomically: the new table keeps identity and generated columns.
    let file = home.file("g3.csv", "code,qty\nz,1\n", 0o644);
    assert_ok(&load(
        &db,
        &home,
        &[
            file.to_str().expect("utf8"),
            "--table",
            "g",
            "--mode",
            "replace-atomic",
        ],
    ));
    assert_eq!(
        rows(&db, "SELECT code, double_qty::text FROM g").await,
        vec![vec![s("z"), s("2")]]
    );
    assert_eq!(
        rows(&db, "SELECT attidentity::text, attgenerated::text FROM pg_attribute WHERE attrelid = 'g'::regclass AND attname IN ('id', 'double_qty') ORDER BY attnum").await,
        vec![vec![s("a"), s("")], vec![s(""), s("s")]]
    );
}

/// Rows with explicit values in a serial or identity column that leads an
/// index (a serial primary key) advance its sequence past them (a
/// descending one past the smallest), so the application's next insert
/// does not fail on a taken key; never backwards, and said on stderr.
/// Before, the sequence stayed where it was, as after `psql \copy`.
#[tokio::test]
async fn explicit_values_in_a_serial_key_advance_its_sequence() {
    let db = TestDb::new("load_serial").await;
    let home = Scratch::new("load-serial");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE up (id serial PRIMARY KEY, v text);
             CREATE TABLE down (id int GENERATED BY DEFAULT AS IDENTITY (START 100 INCREMENT -1 MAXVALUE 100) PRIMARY KEY, v text);
             INSERT INTO up (v) VALUES ('old');",
        )
        .await
        .expect("tables");
    let up = home.file(
        "up.csv",
        "id,v
10,a
2,b
",
        0o644,
    );
    let down = home.file(
        "down.csv",
        "id,v
50,a
40,b
",
        0o644,
    );
    let out = load(&db, &home, &[up.to_str().expect("utf8"), "--table", "up"]);
    assert_ok(&out);
    assert!(
        out.stderr
            .contains("public.up_id_seq (of public.up.id) advanced to 10, past the rows loaded"),
        "{}",
        out.stderr
    );
    let out = load(
        &db,
        &home,
        &[down.to_str().expect("utf8"), "--table", "down"],
    );
    assert_ok(&out);
    for (table, next) in [("up", "11"), ("down", "39")] {
        assert_eq!(
            rows(
                &db,
                &format!("INSERT INTO {table} (v) VALUES ('app') RETURNING id::text")
            )
            .await,
            vec![vec![s(next)]],
            "{table}"
        );
    }
    // Rows numbered by the sequence leave it alone (and say nothing).
    let more = home.file(
        "more.csv", "v
c
", 0o644,
    );
    let out = load(
        &db,
        &home,
        &[
            more.to_str().expect("utf8"),
            "--table",
            "up",
            "--mode",
            "append",
        ],
    );
    assert_ok(&out);
    assert!(!out.stderr.contains("advanced"), "{}", out.stderr);
    assert_eq!(
        rows(&db, "SELECT max(id)::text FROM up").await,
        vec![vec![s("12")]]
    );
}

/// PostgreSQL 18's virtual generated columns are computed on read: never
/// written, kept by a rebuild. Before 18 the same declaration is refused
/// by the server, and said so.
#[tokio::test]
async fn virtual_generated_columns_are_left_to_the_server() {
    let db = TestDb::new("load_virtual").await;
    let home = Scratch::new("load-virtual");
    let version: i32 = db
        .connect()
        .await
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .expect("version")
        .get(0);
    home.file(
        "v.sql",
        "CREATE TABLE v (id int PRIMARY KEY, qty int, twice int GENERATED ALWAYS AS (qty * 2) VIRTUAL);",
        0o644,
    );
    home.file("v.csv", "id,qty\n1,5\n2,7\n", 0o644);
    let out = load(&db, &home, &["v.csv", "-t", "v", "--schema", "v.sql"]);
    if version < 180_000 {
        assert_eq!(out.code, 3, "{}", out.stderr);
        assert!(out.stderr.contains("VIRTUAL"), "{}", out.stderr);
        return;
    }
    assert_ok(&out);
    // A column declared in the middle forces a rebuild: it keeps the
    // virtual column virtual.
    home.file(
        "v2.sql",
        "CREATE TABLE v (id int PRIMARY KEY, note text, qty int, twice int GENERATED ALWAYS AS (qty * 2) VIRTUAL);",
        0o644,
    );
    home.file("v2.csv", "id,qty,note\n3,1,n\n", 0o644);
    assert_ok(&load(
        &db,
        &home,
        &["v2.csv", "-t", "v", "--schema", "v2.sql"],
    ));
    assert_eq!(
        rows(&db, "SELECT id::text, twice::text FROM v ORDER BY id").await,
        vec![
            vec![s("1"), s("10")],
            vec![s("2"), s("14")],
            vec![s("3"), s("2")]
        ]
    );
    assert_eq!(
        rows(&db, "SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'v'::regclass AND attname = 'twice'").await,
        vec![vec![s("v")]]
    );
}

#[tokio::test]
async fn several_files_with_different_headers() {
    let db = TestDb::new("load_files").await;
    let home = Scratch::new("load-files");
    db.connect()
        .await
        .batch_execute("CREATE TABLE f (a int, b text)")
        .await
        .expect("table");
    let one = home.file("one.csv", "a,b\n1,x\n2,y\n", 0o644);
    let two = home.file("two.csv", "b,a\nz,3\n", 0o644);
    let three = home.file("three.csv.gz.src", "a,b\n4,w\n", 0o644);
    let status = Command::new("gzip")
        .arg("-q")
        .arg("-f")
        .arg("-S")
        .arg(".gz")
        .arg(&three)
        .status()
        .expect("gzip");
    assert!(status.success());
    let three = format!("{}.gz", three.display());
    let files = [
        one.to_str().expect("utf8"),
        two.to_str().expect("utf8"),
        three.as_str(),
    ];
    let mut args = files.to_vec();
    args.extend(["--table", "f"]);
    let out = load(&db, &home, &args);
    assert_ok(&out);
    assert!(
        out.stdout.contains("4 rows read, 4 inserted"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(&db, "SELECT a::text, b FROM f ORDER BY a").await,
        vec![
            vec![s("1"), s("x")],
            vec![s("2"), s("y")],
            vec![s("3"), s("z")],
            vec![s("4"), s("w")]
        ]
    );
    let again = load(&db, &home, &args);
    assert!(
        again.stdout.contains("was loaded completely into"),
        "{}",
        again.stdout
    );
    let mut single = args.clone();
    single.extend(["--single-transaction", "--restart"]);
    let out = load(&db, &home, &single);
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("columns differ from the previous input's"),
        "{}",
        out.stderr
    );
    assert_eq!(
        count(&db, "f").await,
        4,
        "nothing of the failed single transaction is left"
    );
}

/// Blank header fields (a trailing delimiter, an unnamed index column) are
/// named by their position, so several of them load; a table created when
/// they were all called "column" still takes the file.
#[tokio::test]
async fn unnamed_header_fields_are_named_by_their_position() {
    let db = TestDb::new("load_unnamed").await;
    let home = Scratch::new("load-unnamed");
    let file = home.file("unnamed.csv", ",name,\n0,x,\n1,y,\n", 0o644);
    let path = file.to_str().expect("utf8");
    let out = load(&db, &home, &[path, "--table", "t"]);
    assert_ok(&out);
    assert_eq!(
        rows(
            &db,
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 't'::regclass AND attnum > 0"
        )
        .await,
        vec![vec![s("column1,name,column3")]]
    );
    let again = load(&db, &home, &[path, "--table", "t", "--restart"]);
    assert_ok(&again);
    assert_eq!(
        rows(&db, "SELECT count(*)::text, count(column3)::text FROM t").await,
        vec![vec![s("4"), s("0")]]
    );
    db.connect()
        .await
        .batch_execute("CREATE TABLE old (\"column\" int, name text)")
        .await
        .expect("table");
    let one = home.file("one.csv", ",name\n5,z\n", 0o644);
    let out = load(&db, &home, &[one.to_str().expect("utf8"), "--table", "old"]);
    assert_ok(&out);
    assert_eq!(
        rows(&db, "SELECT \"column\"::text, name FROM old").await,
        vec![vec![s("5"), s("z")]]
    );
}

/// A few rows upserted into a table 20 times their size are merged by
/// probing the key's index: the same counts and values as the hash join.
#[tokio::test]
async fn a_small_upsert_into_a_big_table_counts_and_stores_the_same() {
    let db = TestDb::new("small_upsert").await;
    let home = Scratch::new("small-upsert");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text, n int);
             INSERT INTO big SELECT i, 'v' || i, i FROM generate_series(1, 50000) i",
        )
        .await
        .expect("big");
    // 100 rows: ids 1-25 unchanged, 26-50 changed, 50001-50050 new.
    let mut csv = String::from("id,v,n\n");
    for i in 1..=25 {
        csv.push_str(&format!("{i},v{i},{i}\n"));
    }
    for i in 26..=50 {
        csv.push_str(&format!("{i},changed,{}\n", -i));
    }
    for i in 50_001..=50_050 {
        csv.push_str(&format!("{i},new,{i}\n"));
    }
    let file = home.file("few.csv", &csv, 0o644);
    let out = load(&db, &home, &[file.to_str().expect("path"), "-t", "big"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("50 inserted, 25 updated, 25 unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text, sum(n)::text, count(*) FILTER (WHERE v = 'changed')::text FROM big"
        )
        .await,
        vec![vec![
            Some("50050".to_owned()),
            Some((50_000i64 * 50_001 / 2 - 2 * (26..=50).sum::<i64>() + (50_001..=50_050).sum::<i64>()).to_string()),
            Some("25".to_owned())
        ]]
    );
}

/// A large upsert that changes few rows is sieved: the rows to write are
/// found by a join that only reads, and the merge handles those alone (none
/// when nothing changed). The counts, the values kept for a repeated key,
/// a value the server refuses and the untouched rows are as without the
/// sieve; a batch that changes most rows is merged directly.
#[tokio::test]
async fn a_large_upsert_of_few_changes_is_sieved_and_counts_the_same() {
    let db = TestDb::new("sieved_upsert").await;
    let home = Scratch::new("sieved-upsert");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text, n int, doc jsonb, d date);
             INSERT INTO big SELECT i, 'v' || i, CASE WHEN i % 10 <> 0 THEN i END, \
                 jsonb_build_object('i', i, 'k', 'x') FROM generate_series(1, 120000) i",
        )
        .await
        .expect("big");
    let xmin = "SELECT xmin::text FROM big WHERE id IN (1001, 119999) ORDER BY id";
    let untouched = rows(&db, xmin).await;
    // Ids 1-1000 changed (id 5 twice: the last row wins), 1001-120000 as
    // they are (a document with its keys in another order is the same
    // jsonb), 120001-120500 new, with a date only the server reads and
    // one it refuses in the last two.
    let mut csv = String::from("id,v,n,doc,d\n");
    let n = |i: u32| {
        if i.is_multiple_of(10) {
            String::new()
        } else {
            i.to_string()
        }
    };
    for i in 1..=120_000u32 {
        let v = if i <= 1000 {
            "changed".to_owned()
        } else {
            format!("v{i}")
        };
        csv.push_str(&format!(
            "{i},{v},{},\"{{\"\"k\"\": \"\"x\"\", \"\"i\"\": {i}}}\",\n",
            n(i)
        ));
        if i == 5 {
            csv.push_str("5,last,5,\"{\"\"i\"\": 5, \"\"k\"\": \"\"x\"\"}\",\n");
        }
    }
    for i in 120_001..=120_498u32 {
        csv.push_str(&format!("{i},new,{i},,\n"));
    }
    csv.push_str("120499,new,120499,,01/08/1999\n120500,new,120500,,31/31/1999\n");
    let file = home.file("rows.csv", &csv, 0o644);
    let path = file.to_str().expect("path");
    // Loads the file (again), checking the summary and the debug log. The
    // stage becomes UNLOGGED, and the server is told that parallel workers
    // cost nothing, so that they sieve this small stage (and raise the
    // refused date) too.
    let upsert = |again: bool, counts: &str, log: &str| {
        let out = run(pgbulk(&home)
            .env(
                "PGOPTIONS",
                "-c parallel_setup_cost=0 -c min_parallel_table_scan_size=0",
            )
            .args([
                "-vv",
                "load",
                "--db",
                &db.url,
                "-t",
                "big",
                "--max-errors",
                "1",
                path,
            ])
            .args(again.then_some("--restart")));
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains(counts), "{}", out.stdout);
        assert!(out.stderr.contains(log), "{}", out.stderr);
        assert!(
            out.stderr.contains("staging in \"public\".\"pgbulk_batch_"),
            "{}",
            out.stderr
        );
        out
    };
    let first = upsert(
        false,
        "120,501 rows read, 499 inserted, 1,000 updated, 119,000 unchanged, 1 repeated",
        "sieved 120500 staged rows: 1499 to write",
    );
    assert!(first.stdout.contains(", 1 rejected"), "{}", first.stdout);
    assert_eq!(
        rows(&db, xmin).await,
        untouched,
        "unchanged rows are not rewritten"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text, count(*) FILTER (WHERE v = 'changed')::text, \
                    (SELECT v FROM big WHERE id = 5), sum(n)::text, count(doc)::text, \
                    (SELECT d::text FROM big WHERE id = 120499) FROM big"
        )
        .await,
        vec![vec![
            Some("120499".to_owned()),
            Some("999".to_owned()),
            Some("last".to_owned()),
            Some(
                ((1..=120_499i64)
                    .filter(|i| i % 10 != 0 || *i > 120_000)
                    .sum::<i64>())
                .to_string()
            ),
            Some("120000".to_owned()),
            Some("1999-01-08".to_owned()),
        ]]
    );
    // Again: nothing to write, no merge.
    upsert(
        true,
        "0 inserted, 0 updated, 120,499 unchanged, 1 repeated",
        "sieved 120500 staged rows: 0 to write",
    );
    assert_eq!(
        rows(
            &db,
            "SELECT relname::text FROM pg_class WHERE relname LIKE 'pgbulk\\_batch%'"
        )
        .await,
        Vec::<Vec<Option<String>>>::new(),
        "the UNLOGGED stages are gone"
    );
    // Most rows changed: merged without the sieve.
    let changed = csv.replace("\"\"x\"\"", "\"\"y\"\"");
    home.file("rows.csv", &changed, 0o644);
    let out = upsert(
        true,
        "0 inserted, 120,000 updated, 499 unchanged, 1 repeated",
        "merging without a sieve",
    );
    assert!(!out.stderr.contains("sieved"), "{}", out.stderr);
    assert_eq!(
        rows(&db, "SELECT count(*)::text FROM big WHERE doc->>'k' = 'y'").await,
        vec![vec![Some("120000".to_owned())]]
    );
    // A role that may not create tables in the schema: the stage stays a
    // TEMP table, the counts are the same.
    let role = format!("sieve_writer_{}", std::process::id());
    let admin = db.connect().await;
    admin
        .batch_execute(&format!(
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             CREATE ROLE {role} LOGIN PASSWORD 'writer-secret'; \
             GRANT SELECT, INSERT, UPDATE ON big, pgbulk_watermark TO {role}"
        ))
        .await
        .expect("role");
    let (host, port) = server().host_port();
    let url = format!(
        "host={host} port={port} user={role} password=writer-secret dbname={}",
        db.name
    );
    let out = run(pgbulk(&home).args([
        "-vv",
        "load",
        "--db",
        &url,
        "-t",
        "big",
        "--max-errors",
        "1",
        "--restart",
        path,
    ]));
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON big, pgbulk_watermark FROM {role}; DROP ROLE {role}"
        ))
        .await
        .expect("drop the role");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("0 inserted, 0 updated, 120,499 unchanged, 1 repeated"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("sieved 120500 staged rows: 0 to write")
            && !out.stderr.contains("staging in"),
        "{}",
        out.stderr
    );
}

/// A large batch of part of a larger table is sieved reading only the
/// table's rows within the staged keys' bounds (from PostgreSQL 15, where
/// the merge is a `MERGE`): the sieve's statement takes them as
/// parameters. Rows outside the bounds are neither read into the join nor
/// touched.
#[tokio::test]
async fn a_sieved_batch_of_part_of_the_table_reads_within_its_bounds() {
    let db = TestDb::new("sieved_bounds").await;
    let home = Scratch::new("sieved-bounds");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE ranged (id int PRIMARY KEY, v text);
             INSERT INTO ranged SELECT i, 'v' || i FROM generate_series(1, 400000) i \
                 WHERE i NOT BETWEEN 300001 AND 300100",
        )
        .await
        .expect("ranged");
    let version: i32 = rows(&db, "SELECT current_setting('server_version_num')").await[0][0]
        .as_deref()
        .expect("version")
        .parse()
        .expect("a number");
    let xmin = "SELECT xmin::text FROM ranged WHERE id IN (1, 250000, 400000) ORDER BY id";
    let untouched = rows(&db, xmin).await;
    // Ids 200001-350000: the first 1,000 changed, 300001-300100 new.
    let mut csv = String::from("id,v\n");
    for i in 200_001..=350_000u32 {
        if i <= 201_000 {
            csv.push_str(&format!("{i},changed\n"));
        } else {
            csv.push_str(&format!("{i},v{i}\n"));
        }
    }
    let file = home.file("part.csv", &csv, 0o644);
    let out = run(pgbulk(&home).args([
        "-vv",
        "load",
        "--db",
        &db.url,
        "-t",
        "ranged",
        file.to_str().expect("path"),
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("100 inserted, 1,000 updated, 148,900 unchanged"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("sieved 150000 staged rows: 1100 to write"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr
            .contains("the table is read within the staged keys' bounds"),
        version >= 150_000,
        "{}",
        out.stderr
    );
    assert_eq!(rows(&db, xmin).await, untouched);
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text, count(*) FILTER (WHERE v = 'changed')::text, \
                    count(*) FILTER (WHERE v = 'v' || id)::text FROM ranged"
        )
        .await,
        vec![vec![
            Some("400000".to_owned()),
            Some("1000".to_owned()),
            Some("399000".to_owned()),
        ]]
    );
}

/// Rows copied straight into a table the load's first batch created are
/// written frozen (COPY FREEZE): the first read writes no hint bits and
/// VACUUM has nothing to freeze. A table that existed is loaded as usual.
#[tokio::test]
async fn a_table_created_by_the_load_is_written_frozen() {
    let db = TestDb::new("load_freeze").await;
    let home = Scratch::new("load-freeze");
    let mut text = String::from("id,name\n");
    for i in 0..20_000 {
        text.push_str(&format!("{i},name {i}\n"));
    }
    home.file("rows.csv", &text, 0o644);
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE existing (id integer, name text)")
        .await
        .expect("table");
    for table in ["fresh", "existing"] {
        let out = load(&db, &home, &["rows.csv", "-t", table]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(count(&db, "fresh").await, 20_000);
    let available = count(&db, "pg_available_extensions WHERE name = 'pg_visibility'").await;
    // The visibility map records frozen pages written by COPY FREEZE from
    // PostgreSQL 14 on (13 freezes the rows but leaves the map to VACUUM).
    let version = count(
        &db,
        "(SELECT current_setting('server_version_num')::int AS v) s WHERE v >= 140000",
    )
    .await;
    if available == 0 || version == 0 {
        return;
    }
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        .await
        .expect("pg_visibility");
    let frozen = |t: &str| format!("pg_visibility_map('{t}') WHERE all_frozen");
    let pages = |t: &str| format!("pg_visibility_map('{t}')");
    // Every page holding rows (16 and later extend a table by several
    // pages at once: the empty ones at its end are not marked).
    let with_rows = count(&db, "(SELECT DISTINCT (ctid::text::point)[0] FROM fresh) p").await;
    assert!(with_rows > 1 && count(&db, &pages("fresh")).await >= with_rows);
    assert_eq!(count(&db, &frozen("fresh")).await, with_rows);
    assert_eq!(count(&db, &frozen("existing")).await, 0);
}

/// Loads into a partitioned table: an upsert counts the rows its
/// partitions took (it counted none on PostgreSQL 15+, and failed before
/// 15: `RETURNING` cannot read a partitioned table's system columns), and
/// a partition truncated since an earlier run is noticed, so the same file
/// loads again (it was "nothing to do", leaving the rows gone). A
/// partition added since is not a rewrite.
#[tokio::test]
async fn a_partitioned_table_counts_its_rows_and_notices_a_truncated_partition() {
    let db = TestDb::new("load_partitioned").await;
    let home = Scratch::new("load-partitioned");
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE ev (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
             CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE ev_rest PARTITION OF ev DEFAULT;",
        )
        .await
        .expect("table");
    // Loads `file` into ev; its summary (stdout) has `said`.
    let into_ev = |file: &std::path::Path, said: &str| {
        let out = load(&db, &home, &[file.to_str().expect("utf8"), "--table", "ev"]);
        assert_ok(&out);
        assert!(out.stdout.contains(said), "{}", out.stdout);
        out
    };
    let first = home.file("a.csv", "id,day,v\n1,2024-05-01,a\n2,2030-01-01,b\n", 0o644);
    into_ev(&first, "2 rows read, 2 inserted, 0 updated, 0 unchanged");
    let second = home.file(
        "b.csv",
        "id,day,v\n1,2024-05-01,changed\n2,2030-01-01,b\n3,2024-06-01,c\n",
        0o644,
    );
    into_ev(&second, "3 rows read, 1 inserted, 1 updated, 1 unchanged");
    client
        .batch_execute("TRUNCATE ev_2024")
        .await
        .expect("truncate");
    let out = into_ev(&second, "3 rows read, 2 inserted, 0 updated, 1 unchanged");
    assert!(
        out.stderr.contains("public.ev was truncated or rewritten since an earlier run of this load: loading from the start"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM ev"
        )
        .await,
        vec![vec![s("1=changed,2=b,3=c")]]
    );
    client
        .batch_execute(
            "CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        )
        .await
        .expect("partition");
    into_ev(&second, "nothing to do");
}

/// A partitioned table declared with its partitions (`--schema`) is
/// created and loaded in one transaction: the partitions' keys are their
/// parent's, so they are not dropped to be built after the rows (that
/// failed: "cannot drop inherited constraint"). A later declaration that
/// adds columns, defaults, NOT NULL, checks or comments is migrated in
/// place on the parent; one that would need a rebuild or a new index is
/// refused before anything is migrated.
#[tokio::test]
async fn a_declared_partitioned_table_is_created_with_its_partitions() {
    let db = TestDb::new("load_declared_partitions").await;
    let home = Scratch::new("load-declared-partitions");
    let declared = home.file(
        "decl.sql",
        "CREATE TABLE decl (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
         CREATE TABLE decl_2024 PARTITION OF decl FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE decl_rest PARTITION OF decl DEFAULT;",
        0o644,
    );
    let file = home.file(
        "decl.csv",
        "id,day,v\n1,2024-05-01,a\n2,2030-01-01,b\n",
        0o644,
    );
    let declared_load = |file: &std::path::Path, schema: &std::path::Path| {
        load(
            &db,
            &home,
            &[
                file.to_str().expect("utf8"),
                "--table",
                "decl",
                "--schema",
                schema.to_str().expect("utf8"),
            ],
        )
    };
    let out = declared_load(&file, &declared);
    assert_ok(&out);
    assert_eq!(
        rows(
            &db,
            "SELECT tableoid::regclass::text, id::text FROM decl ORDER BY id"
        )
        .await,
        vec![vec![s("decl_2024"), s("1")], vec![s("decl_rest"), s("2")]]
    );
    // A declaration that adds a column, a default, NOT NULL, a check and
    // comments: migrated in place on the parent, which PostgreSQL carries
    // to the partitions (the partitions' own declarations agree).
    let changed = home.file(
        "changed.sql",
        "CREATE TABLE decl (id int, day date, v text NOT NULL DEFAULT 'none', note text CHECK (note <> ''), \
                            PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
         COMMENT ON TABLE decl IS 'events';
         COMMENT ON COLUMN decl.note IS 'free text';
         CREATE TABLE decl_2024 PARTITION OF decl FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE decl_rest PARTITION OF decl DEFAULT;",
        0o644,
    );
    let with_note = home.file(
        "note.csv",
        "id,day,v,note\n3,2024-06-01,c,hello\n4,2031-01-01,d,\n",
        0o644,
    );
    let out = declared_load(&with_note, &changed);
    assert_ok(&out);
    assert_eq!(
        rows(
            &db,
            "SELECT tableoid::regclass::text, id::text, v, coalesce(note, '-') FROM decl ORDER BY id"
        )
        .await,
        vec![
            vec![s("decl_2024"), s("1"), s("a"), s("-")],
            vec![s("decl_rest"), s("2"), s("b"), s("-")],
            vec![s("decl_2024"), s("3"), s("c"), s("hello")],
            vec![s("decl_rest"), s("4"), s("d"), s("-")],
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT c.relname::text, a.attnotnull::text, pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE c.relname IN ('decl', 'decl_2024', 'decl_rest') AND a.attname = 'v' ORDER BY 1"
        )
        .await,
        ["decl", "decl_2024", "decl_rest"]
            .map(|t| vec![s(t), s("true"), s("'none'::text")])
            .to_vec()
    );
    assert_eq!(
        rows(
            &db,
            "SELECT obj_description('decl'::regclass, 'pg_class'), col_description('decl'::regclass, 4), \
                    (SELECT count(*)::text FROM pg_constraint WHERE contype = 'c' AND conrelid = 'decl_rest'::regclass)"
        )
        .await,
        vec![vec![s("events"), s("free text"), s("1")]]
    );
    // Running the same declaration again: nothing to migrate.
    let plan = run(pgbulk(&home)
        .args(["plan", "--schema", changed.to_str().expect("utf8"), "--db"])
        .arg(&db.url));
    assert_ok(&plan);
    assert!(!plan.stdout.contains("ALTER"), "{}", plan.stdout);
    // A new index: created ON ONLY the table, built concurrently on each
    // partition and attached (no lock that blocks writes while it builds);
    // a build left half-done (the table's index invalid, a partition's
    // invalid) is completed by the next run.
    let indexed = home.file(
        "indexed.sql",
        "CREATE TABLE decl (id int, day date, v text NOT NULL DEFAULT 'none', note text CHECK (note <> ''), \
                            PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
         CREATE INDEX decl_note ON decl (note, v);",
        0o644,
    );
    let out = declared_load(&with_note, &indexed);
    assert_ok(&out);
    let index_parts = "SELECT c.relname::text, i.indisvalid::text, \
                              coalesce((SELECT h.inhparent::regclass::text FROM pg_inherits h WHERE h.inhrelid = c.oid), '-') \
                       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                       WHERE c.relname LIKE '%decl_note' ORDER BY 1";
    let built = vec![
        vec![s("decl_2024_decl_note"), s("true"), s("decl_note")],
        vec![s("decl_note"), s("true"), s("-")],
        vec![s("decl_rest_decl_note"), s("true"), s("decl_note")],
    ];
    assert_eq!(rows(&db, index_parts).await, built);
    db.connect()
        .await
        .batch_execute(
            "DROP INDEX decl_note;
             CREATE INDEX decl_note ON ONLY decl (note, v);
             CREATE INDEX decl_2024_decl_note ON decl_2024 (note, v);
             ALTER INDEX decl_note ATTACH PARTITION decl_2024_decl_note;",
        )
        .await
        .expect("half an index");
    db.connect()
        .await
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY decl_rest_decl_note ON decl_rest ((1))")
        .await
        .expect_err("the rows repeat its one value: an invalid index is left");
    let more = home.file("more.csv", "id,day,v,note\n5,2024-07-01,e,again\n", 0o644);
    let out = declared_load(&more, &indexed);
    assert_ok(&out);
    assert_eq!(rows(&db, index_parts).await, built);
    // What PostgreSQL cannot do in place on a partitioned table (a type
    // change is a rebuild, which would drop the partitions; a new key
    // needs a unique index built on the table as a whole): refused before
    // anything changes.
    for (name, sql, reason) in [
        (
            "retyped.sql",
            "CREATE TABLE decl (id int, day date, v int NOT NULL DEFAULT 0, note text CHECK (note <> ''), \
                                PRIMARY KEY (id, day)) PARTITION BY RANGE (day);",
            "column v changes type from text to integer",
        ),
        (
            "keyed.sql",
            "CREATE TABLE decl (id int, day date, v text NOT NULL DEFAULT 'none', note text CHECK (note <> ''), \
                                extra int, PRIMARY KEY (id, day), UNIQUE (note, day)) PARTITION BY RANGE (day);
             CREATE INDEX decl_note ON decl (note, v);",
            "unique constraint decl_note_day_key (UNIQUE (note, day)) is added",
        ),
    ] {
        let schema = home.file(name, sql, 0o644);
        let out = declared_load(&with_note, &schema);
        assert_eq!(out.code, 3, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "public.decl is a partitioned table and the declaration differs from it in ways pgbulk does not migrate in place on one ({reason}"
            )),
            "{}",
            out.stderr
        );
        assert_eq!(
            rows(
                &db,
                "SELECT count(*)::text FROM pg_attribute WHERE attrelid = 'decl'::regclass AND attname = 'extra'"
            )
            .await,
            vec![vec![s("0")]],
            "nothing migrated"
        );
    }
    // A partition declared without its parent takes its columns from the
    // parent: refused, naming it.
    let alone = home.file(
        "partition.sql",
        "CREATE TABLE decl_2024 (id int, day date, v text NOT NULL DEFAULT 'none', note text, extra int);",
        0o644,
    );
    let out = load(
        &db,
        &home,
        &[
            with_note.to_str().expect("utf8"),
            "--table",
            "decl_2024",
            "--schema",
            alone.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "public.decl_2024 is a partition of decl and the declaration differs from it"
        ) && out.stderr.contains("declare and migrate decl instead"),
        "{}",
        out.stderr
    );
    // A foreign partition: an index attached part by part would never
    // become valid, so none is planned.
    db.connect()
        .await
        .batch_execute(
            "CREATE EXTENSION file_fdw;
             CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
             CREATE TABLE mixed (id int, day date) PARTITION BY RANGE (day);
             CREATE TABLE mixed_2024 PARTITION OF mixed FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE FOREIGN TABLE mixed_old PARTITION OF mixed FOR VALUES FROM ('2000-01-01') TO ('2024-01-01')
               SERVER files OPTIONS (filename '/dev/null');",
        )
        .await
        .expect("a foreign partition");
    let mixed = home.file(
        "mixed.sql",
        "CREATE TABLE mixed (id int, day date) PARTITION BY RANGE (day);
         CREATE INDEX mixed_id ON mixed (id);",
        0o644,
    );
    let out = run(pgbulk(&home)
        .args(["plan", "--schema", mixed.to_str().expect("utf8"), "--db"])
        .arg(&db.url));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("index mixed_id is added, and partition public.mixed_old is a foreign table"),
        "{}",
        out.stderr
    );
}

/// `--mode replace` into a table another table's foreign key references
/// with `ON DELETE CASCADE` (or `SET NULL`) is refused before anything is
/// deleted: its delete of every row would have deleted (or cleared) the
/// referencing rows, and loading the same keys again does not bring them
/// back. A plain reference (`NO ACTION`) is left to the server, and
/// replace-atomic keeps the reference.
#[tokio::test]
async fn replace_refuses_to_cascade_into_referencing_tables() {
    let db = TestDb::new("load_replace_cascade").await;
    let home = Scratch::new("load-replace-cascade");
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE dim (id int PRIMARY KEY, name text);
             INSERT INTO dim VALUES (1, 'one'), (2, 'two');
             CREATE TABLE fact (n int, dim_id int REFERENCES dim ON DELETE CASCADE);
             INSERT INTO fact VALUES (10, 1), (20, 2);",
        )
        .await
        .expect("tables");
    let file = home.file("dim.csv", "id,name\n1,uno\n2,dos\n", 0o644);
    let replace = |mode: &str| {
        load(
            &db,
            &home,
            &[
                file.to_str().expect("utf8"),
                "--table",
                "dim",
                "--mode",
                mode,
            ],
        )
    };
    let out = replace("replace");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "public.dim is referenced by fact (dim_id) ON DELETE CASCADE: replace deletes every row of public.dim first, \
             which would delete the rows of fact that reference them"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&db, "SELECT (SELECT string_agg(name, ',' ORDER BY id) FROM dim) || ' ' || (SELECT count(*) FROM fact)").await,
        vec![vec![s("one,two 2")]],
        "nothing deleted"
    );
    let out = replace("replace-atomic");
    assert_ok(&out);
    assert_eq!(
        rows(&db, "SELECT (SELECT string_agg(name, ',' ORDER BY id) FROM dim) || ' ' || (SELECT count(*) FROM fact)").await,
        vec![vec![s("uno,dos 2")]],
        "replace-atomic replaced the rows and kept the referencing ones"
    );
}

/// A `GENERATED ALWAYS` identity column takes the input's values in every
/// mode, as `COPY` gives them (an upsert inserts with `OVERRIDING SYSTEM
/// VALUE`); outside the key an update leaves it as it is, the only value
/// PostgreSQL lets an update give it being `DEFAULT`.
#[tokio::test]
async fn an_always_identity_column_takes_the_inputs_values_in_every_mode() {
    let db = TestDb::new("load_always_identity").await;
    let home = Scratch::new("load-always-identity");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE acct (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
             CREATE TABLE tagged (n int GENERATED ALWAYS AS IDENTITY, code text PRIMARY KEY, v text);",
        )
        .await
        .expect("tables");
    home.file("a1.csv", "id,v\n10,a\n20,b\n", 0o644);
    home.file("a2.csv", "id,v\n10,changed\n30,c\n", 0o644);
    home.file("t1.csv", "n,code,v\n5,x,1\n6,y,2\n", 0o644);
    home.file("t2.csv", "n,code,v\n99,x,10\n7,z,3\n", 0o644);
    for (file, table, mode) in [
        ("a1.csv", "acct", "append"),
        ("a2.csv", "acct", "upsert"),
        ("t1.csv", "tagged", "upsert"),
        ("t2.csv", "tagged", "upsert"),
    ] {
        let out = load(&db, &home, &[file, "--table", table, "--mode", mode]);
        assert_ok(&out);
    }
    assert_eq!(
        rows(&db, "SELECT id::text, v FROM acct ORDER BY id").await,
        vec![
            vec![s("10"), s("changed")],
            vec![s("20"), s("b")],
            vec![s("30"), s("c")]
        ]
    );
    assert_eq!(
        rows(&db, "SELECT n::text, code, v FROM tagged ORDER BY code").await,
        vec![
            vec![s("5"), s("x"), s("10")],
            vec![s("6"), s("y"), s("2")],
            vec![s("7"), s("z"), s("3")]
        ]
    );
}

/// Types a `--schema` file declares (`CREATE TYPE`, `CREATE DOMAIN`) are
/// created when the database lacks them, before the table (or, for a new
/// column of an existing table, before its migration), with their schema;
/// a type that exists is used as it is, never migrated.
#[tokio::test]
async fn declared_types_are_created_when_missing_and_used_as_they_are() {
    let db = TestDb::new("load_declared_types").await;
    let home = Scratch::new("load-declared-types");
    let types = "CREATE TYPE shop.mood AS ENUM ('happy', 'sad');\n\
                 CREATE DOMAIN shop.pos AS integer CHECK (VALUE > 0);\n";
    home.file(
        "t.sql",
        &format!("{types}CREATE TABLE shop.things (id shop.pos PRIMARY KEY, m shop.mood, ms shop.mood[]);\n"),
        0o644,
    );
    home.file(
        "t.csv",
        "id,m,ms\n1,happy,\"{happy,sad}\"\n2,sad,{}\n",
        0o644,
    );
    let args = ["t.csv", "--table", "shop.things", "--schema", "t.sql"];
    let plan = load(&db, &home, &[&args[..], &["--dry-run"]].concat());
    assert_ok(&plan);
    assert!(
        plan.stdout.contains("shop.things: create type shop.mood")
            && plan.stdout.contains("shop.things: create type shop.pos"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text FROM pg_type WHERE typname IN ('mood', 'pos')"
        )
        .await,
        vec![vec![Some("0".to_owned())]],
        "a dry run creates nothing"
    );
    let out = load(&db, &home, &args);
    assert_ok(&out);
    assert!(
        out.stderr.contains("shop.things: create type shop.mood"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT id::text, m::text, ms::text FROM shop.things ORDER BY id"
        )
        .await,
        vec![
            vec![
                Some("1".to_owned()),
                Some("happy".to_owned()),
                Some("{happy,sad}".to_owned())
            ],
            vec![
                Some("2".to_owned()),
                Some("sad".to_owned()),
                Some("{}".to_owned())
            ],
        ]
    );
    // Used as it is: a label added since stays and takes rows.
    db.connect()
        .await
        .batch_execute("ALTER TYPE shop.mood ADD VALUE 'calm'")
        .await
        .expect("label");
    home.file("u.csv", "id,m,ms\n3,calm,{}\n", 0o644);
    let again = load(
        &db,
        &home,
        &["u.csv", "--table", "shop.things", "--schema", "t.sql"],
    );
    assert_ok(&again);
    assert!(!again.stderr.contains("create type"), "{}", again.stderr);
    // A new column of a new type in an existing table: the type first.
    home.file(
        "t2.sql",
        &format!(
            "{types}CREATE TYPE shop.size AS ENUM ('s', 'm');\n\
             CREATE TABLE shop.things (id shop.pos PRIMARY KEY, m shop.mood, ms shop.mood[], sz shop.size);\n"
        ),
        0o644,
    );
    home.file("v.csv", "id,m,ms,sz\n4,sad,{},m\n", 0o644);
    let migrated = load(
        &db,
        &home,
        &["v.csv", "--table", "shop.things", "--schema", "t2.sql"],
    );
    assert_ok(&migrated);
    assert_eq!(
        rows(&db, "SELECT sz::text FROM shop.things WHERE id = 4").await,
        vec![vec![Some("m".to_owned())]]
    );
    // The domain's check is the server's: a bad row names its line.
    home.file("w.csv", "id,m,ms,sz\n0,sad,{},s\n", 0o644);
    let bad = load(
        &db,
        &home,
        &["w.csv", "--table", "shop.things", "--schema", "t2.sql"],
    );
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    assert!(bad.stderr.contains("w.csv:2"), "{}", bad.stderr);
}

/// In the text format, a NULL string is compared with a field's bytes
/// before its escapes are undone, as COPY compares them: one with a
/// backslash of its own (COPY's regression suite has `\X`), and `\N`
/// where the NULL string is another (the letter N).
#[tokio::test]
async fn text_format_null_strings_match_fields_before_their_escapes_are_undone() {
    let db = TestDb::new("load_text_nulls").await;
    let home = Scratch::new("load-text-nulls");
    let client = db.connect().await;
    for (null, delimiter, text) in [
        (
            "\\X",
            ":",
            "4000:\\X:C:\\X:\\X\n4001:1:empty::\n4003:3:Backslash:\\\\:\\\\\n4004:4:BackslashX:\\\\X:\\\\X\n\
             4005:5:N:\\N:\\N\n4006:6:BackslashN:\\\\N:\\\\N\n4007:7:XX:\\XX:\\XX\n4008:8:Delimiter:\\::\\:\n",
        ),
        (
            "nil",
            "\t",
            "1\t\\N\tnil\tx\tnil\\n\n2\tnil\t\\N\t\\x41\t\\\\N\n",
        ),
    ] {
        client
            .batch_execute(
                "DROP TABLE IF EXISTS theirs, ours;
                 CREATE TABLE theirs (a int, b text, c text, d text, e text);
                 CREATE TABLE ours (LIKE theirs)",
            )
            .await
            .expect("tables");
        let delimiter_sql = if delimiter == "\t" { "E'\\t'" } else { "':'" };
        pgbulk::copy::copy_in(
            &client,
            &format!(
                "COPY theirs FROM STDIN (FORMAT text, DELIMITER {delimiter_sql}, NULL '{null}')"
            ),
            [text.as_bytes().to_vec()],
        )
        .await
        .expect("the server reads it");
        let file = home.file("nulls.txt", text, 0o644);
        let out = load(
            &db,
            &home,
            &[
                file.to_str().expect("utf8"),
                "--table",
                "ours",
                "--format",
                "text",
                "--no-header",
                "--delimiter",
                delimiter,
                "--null",
                null,
            ],
        );
        assert_ok(&out);
        let table = |t: &str| format!("SELECT t::text FROM {t} t ORDER BY a");
        let theirs = rows(&db, &table("theirs")).await;
        assert_eq!(rows(&db, &table("ours")).await, theirs, "NULL {null}");
        assert!(theirs.len() > 1, "{theirs:?}");
    }
}

/// A table of one column, as `psql \copy ... to ... csv` writes it: each
/// NULL is a blank line, which COPY reads back as NULL (an empty string is
/// `""`). Blank lines of wider files are skipped; these are rows.
#[tokio::test]
async fn a_one_column_csv_keeps_the_nulls_copy_wrote_as_blank_lines() {
    let db = TestDb::new("load_one_column").await;
    let home = Scratch::new("load-one-column");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE src (email text);
             INSERT INTO src SELECT CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'u' || i END
             FROM generate_series(1, 1000) i;
             CREATE TABLE dst (email text);",
        )
        .await
        .expect("source");
    let file = home.path().join("emails.csv");
    let out = Command::new("psql")
        .arg(&db.url)
        .args(["-X", "-q", "-c"])
        .arg(format!("\\copy src to '{}' csv header", file.display()))
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = file.to_str().expect("utf8");
    for table in ["dst", "created"] {
        assert_ok(&load(&db, &home, &[path, "--table", table]));
        assert_eq!(
            rows(
                &db,
                &format!(
                    "SELECT (SELECT count(*) FROM (SELECT * FROM src EXCEPT ALL SELECT * FROM {table}) l)
                          + (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM src) r),
                            (SELECT count(*) FROM {table} WHERE email IS NULL)"
                )
            )
            .await,
            vec![vec![Some("0".to_owned()), Some("250".to_owned())]],
            "{table}"
        );
    }
}

/// PostgreSQL's text format, as `psql \copy ... to` writes it: read back
/// exactly as the server reads it (escapes, `\N`, a value that is the
/// string `\N`, control characters, arrays, bytea, jsonb), detected from
/// its `\N` fields or asked for with `--format text`; `--format csv` reads
/// the same bytes as CSV.
#[tokio::test]
async fn the_text_format_copy_writes_is_read_back_exactly() {
    let db = TestDb::new("load_text_format").await;
    let home = Scratch::new("load-text-format");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE src (id int, t text, a text[], b bytea, j jsonb, n numeric);
             INSERT INTO src SELECT i,
                 CASE i % 5 WHEN 0 THEN NULL
                     WHEN 1 THEN E'tab\\there\\nnew\\\\back\\rcr'
                     WHEN 2 THEN 'plain ' || i
                     WHEN 3 THEN E'\\\\N'
                     ELSE chr(1) || chr(127) || 'é€😀' || chr(8) || chr(11) || chr(12) END,
                 ARRAY[E'a\\tb', NULL, 'c\"d', E'e\\\\f', ''],
                 decode(md5(i::text), 'hex'),
                 jsonb_build_object('k', E'v\\n' || i),
                 i / 7.0
             FROM generate_series(1, 30000) i;
             CREATE TABLE detected (LIKE src);
             CREATE TABLE asked (LIKE src);
             CREATE TABLE as_csv (id int, t text, a text, b text, j text, n text);",
        )
        .await
        .expect("source");
    // What `psql \copy TABLE to FILE` writes.
    let copy_to = |table: &str, name: &str| {
        let out = Command::new("psql")
            .arg(&db.url)
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "\\copy {table} to '{}'",
                home.path().join(name).display()
            ))
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    copy_to("src", "src.tsv");
    let same = |table: &str| {
        format!(
            "SELECT (SELECT count(*) FROM (SELECT * FROM src EXCEPT ALL SELECT * FROM {table}) l)
                  + (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL SELECT * FROM src) r)"
        )
    };
    // Its first line is data: COPY TO writes no header unless asked.
    let detected = load(&db, &home, &["src.tsv", "--table", "detected"]);
    assert_ok(&detected);
    assert!(
        detected
            .stderr
            .contains("src.tsv: PostgreSQL's text format")
            && detected
                .stderr
                .contains("src.tsv: its first line is read as data"),
        "{}",
        detected.stderr
    );
    assert_eq!(
        rows(&db, &same("detected")).await,
        vec![vec![Some("0".to_owned())]]
    );
    let asked = load(
        &db,
        &home,
        &[
            "src.tsv",
            "--table",
            "asked",
            "--no-header",
            "--format",
            "text",
        ],
    );
    assert_ok(&asked);
    assert_eq!(
        rows(&db, &same("asked")).await,
        vec![vec![Some("0".to_owned())]]
    );
    // Plain rows, most of them encoded straight from the buffer, with a
    // whole `\N` for NULL and an escape now and then.
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE plain (id int, v text, d date);
             INSERT INTO plain SELECT i, CASE WHEN i % 3 = 0 THEN NULL
                 WHEN i % 1000 = 1 THEN E'x\\y' ELSE 'v' || i END,
                 CASE WHEN i % 4 = 0 THEN NULL ELSE date '2024-01-01' + i % 400 END
             FROM generate_series(1, 200000) i;
             CREATE TABLE plain_copy (LIKE plain);",
        )
        .await
        .expect("plain");
    copy_to("plain", "plain.tsv");
    assert_ok(&load(
        &db,
        &home,
        &["plain.tsv", "--table", "plain_copy", "--no-header"],
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT (SELECT count(*) FROM (SELECT * FROM plain EXCEPT ALL SELECT * FROM plain_copy) l)
                  + (SELECT count(*) FROM (SELECT * FROM plain_copy EXCEPT ALL SELECT * FROM plain) r)"
        )
        .await,
        vec![vec![Some("0".to_owned())]]
    );
    // A file whose only NULL is on its last line (beyond the first 256
    // KiB): found in the end read too.
    let mut late = String::new();
    for i in 1..=200_000 {
        late.push_str(&format!("{i}\tvalue {i}\n"));
    }
    late.push_str("200001\t\\N\n");
    home.file("late.tsv", &late, 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE late (id int, v text)")
        .await
        .expect("late");
    let found = load(&db, &home, &["late.tsv", "--table", "late", "--no-header"]);
    assert_ok(&found);
    assert!(
        found.stderr.contains("late.tsv: PostgreSQL's text format"),
        "{}",
        found.stderr
    );
    assert_eq!(
        rows(&db, "SELECT count(*)::text FROM late WHERE v IS NULL").await,
        vec![vec![Some("1".to_owned())]]
    );
    // With a header line (COPY ... (HEADER)): names above integers.
    home.file("named.tsv", &format!("id\tv\n{late}"), 0o644);
    let named = load(&db, &home, &["named.tsv", "--table", "named"]);
    assert_ok(&named);
    assert!(
        named
            .stderr
            .contains("named.tsv: its first line is read as a header"),
        "{}",
        named.stderr
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text, count(v)::text, sum(id)::text FROM named"
        )
        .await,
        vec![vec![
            Some("200001".to_owned()),
            Some("200000".to_owned()),
            Some("20000300001".to_owned())
        ]]
    );
    // One whose only NULL lies between the parts read to detect it: the
    // load stops there, named by line and field, and loads nothing; asked
    // for, either format loads it.
    let mut hidden = String::new();
    for i in 1..=200_000 {
        if i == 50_000 {
            hidden.push_str(&format!("{i}\t\\N\n"));
        } else {
            hidden.push_str(&format!("{i}\tvalue {i}\n"));
        }
    }
    home.file("hidden.tsv", &hidden, 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE hidden (id int, v text)")
        .await
        .expect("hidden");
    let stopped = load(
        &db,
        &home,
        &["hidden.tsv", "--table", "hidden", "--no-header"],
    );
    assert_eq!(stopped.code, 9, "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("hidden.tsv:50000:2: the field is \\N")
            && stopped.stderr.contains("--format text")
            // What was detected is said with the error.
            && stopped.stderr.contains("pgbulk: hidden.tsv: delimiter tab (detected"),
        "{}",
        stopped.stderr
    );
    let count = "SELECT count(*)::text, count(v)::text FROM hidden";
    assert_eq!(
        rows(&db, count).await,
        vec![vec![Some("0".to_owned()), Some("0".to_owned())]]
    );
    for (format, values) in [("text", "199999"), ("csv", "200000")] {
        db.connect()
            .await
            .batch_execute("TRUNCATE hidden")
            .await
            .expect("truncate");
        let asked = load(
            &db,
            &home,
            &[
                "hidden.tsv",
                "--table",
                "hidden",
                "--no-header",
                "--format",
                format,
            ],
        );
        assert_ok(&asked);
        assert_eq!(
            rows(&db, count).await,
            vec![vec![Some("200000".to_owned()), Some(values.to_owned())]],
            "{format}"
        );
    }
    // MySQL's `INTO OUTFILE` with commas writes NULL as `\N` too: not
    // stored as text unless asked.
    home.file("mysql.csv", "id,v\n1,a\n2,\\N\n", 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE mysql (id int, v text)")
        .await
        .expect("mysql");
    let refused = load(&db, &home, &["mysql.csv", "--table", "mysql"]);
    assert_eq!(refused.code, 9, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("mysql.csv:3:2: the field is \\N, how MySQL")
            && refused.stderr.contains("--null '\\N'"),
        "{}",
        refused.stderr
    );
    for (option, nulls) in [("--null=\\N", "1"), ("--format=csv", "0")] {
        db.connect()
            .await
            .batch_execute("TRUNCATE mysql")
            .await
            .expect("truncate");
        assert_ok(&load(
            &db,
            &home,
            &["mysql.csv", "--table", "mysql", option],
        ));
        assert_eq!(
            rows(
                &db,
                "SELECT count(*)::text, (count(*) - count(v))::text FROM mysql"
            )
            .await,
            vec![vec![Some("2".to_owned()), Some(nulls.to_owned())]],
            "{option}"
        );
    }
    // An escape that makes bytes no UTF-8 text has: the row is named by
    // file, line and field, and nothing of the file is loaded.
    home.file("bad.tsv", "1\tok\n2\t\\xff\\N\n", 0o644);
    db.connect()
        .await
        .batch_execute("CREATE TABLE bad (id int, v text)")
        .await
        .expect("bad");
    let bad = load(
        &db,
        &home,
        &[
            "bad.tsv",
            "--table",
            "bad",
            "--no-header",
            "--format",
            "text",
        ],
    );
    assert_eq!(bad.code, 9, "{}", bad.stderr);
    assert!(bad.stderr.contains("bad.tsv:2:2"), "{}", bad.stderr);
    assert_eq!(
        rows(&db, "SELECT count(*)::text FROM bad").await,
        vec![vec![Some("0".to_owned())]]
    );
    // As CSV the escapes stay as they are written.
    let csv = load(
        &db,
        &home,
        &[
            "src.tsv",
            "--table",
            "as_csv",
            "--no-header",
            "--format",
            "csv",
        ],
    );
    assert_ok(&csv);
    assert_eq!(
        rows(&db, "SELECT t FROM as_csv WHERE id = 3").await,
        vec![vec![Some("\\\\N".to_owned())]]
    );
}
