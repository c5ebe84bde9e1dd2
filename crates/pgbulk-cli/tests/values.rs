//! Values through `pgbulk load`, differentially against the server: every
//! string stores exactly what the server's input function stores for it
//! (a literal inserted into a column of the same type, as COPY reads it,
//! under the same DateStyle and TimeZone), or is rejected when, and only
//! when, the server rejects it; but an empty field, NULL in a column whose
//! type has no empty value (see the README's leniencies).

use crate::cli_load::{assert_ok, load};
use crate::harness::{Rng, Scratch, TestDb};

const SPICE: &[char] = &[
    '-', ':', '+', '.', ' ', '/', 'T', 't', 'Z', 'e', '0', '1', '5', '9', 'é', '١', '٣', '：',
    '－', '\u{a0}', '中', '😀', 'x', '{', '}', '"', ',', '@', 'P',
];

/// `seeds`, and mutations of them: characters inserted, replaced or
/// removed, non-ASCII among them.
fn with_mutations(rng: &mut Rng, seeds: &[&str], count: usize) -> Vec<String> {
    let mut out: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
    for _ in 0..count {
        let mut chars: Vec<char> = seeds[rng.index(seeds.len())].chars().collect();
        for _ in 0..=rng.index(2) {
            let at = rng.index(chars.len() + 1);
            let c = SPICE[rng.index(SPICE.len())];
            match rng.index(3) {
                0 => chars.insert(at, c),
                1 if at < chars.len() => chars[at] = c,
                _ if at < chars.len() => {
                    chars.remove(at);
                }
                _ => chars.push(c),
            }
        }
        out.push(chars.into_iter().collect());
    }
    out
}

fn csv_field(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// Loads `inputs` into a `v sql_type` column with every bad row rejected,
/// then compares each stored value with the server's cast of its input and
/// checks that what was rejected the server rejects.
async fn differential(db: &TestDb, home: &Scratch, sql_type: &str, inputs: &[String]) {
    let client = db.connect().await;
    let table = format!(
        "d_{}",
        sql_type.replace(|c: char| !c.is_alphanumeric(), "_")
    );
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, v {sql_type});
             DROP TABLE IF EXISTS probe; CREATE TEMP TABLE probe (v {sql_type});
             CREATE OR REPLACE FUNCTION pg_temp.server_input(value text) RETURNS text
             LANGUAGE plpgsql AS $f$ DECLARE r text; BEGIN
             DELETE FROM probe;
             EXECUTE format('INSERT INTO probe VALUES (%L)', value);
             SELECT v::text INTO r FROM probe; RETURN r;
             EXCEPTION WHEN OTHERS THEN RETURN '<rejected>'; END $f$"
        ))
        .await
        .expect("table");
    let mut csv = String::from("id,v\n");
    for (i, input) in inputs.iter().enumerate() {
        if input.contains('\0') {
            continue;
        }
        csv.push_str(&format!("{i},{}\n", csv_field(input)));
    }
    let file = format!("{table}.csv");
    home.file(&file, &csv, 0o644);
    let out = load(
        db,
        home,
        &[
            &file,
            "-t",
            &table,
            "--delimiter",
            ",",
            "--max-errors",
            "1000000",
            "--batch-rows",
            "50",
        ],
    );
    assert_ok(&out);
    let stored: std::collections::HashMap<i32, Option<String>> = client
        .query(&format!("SELECT id, v::text FROM {table}"), &[])
        .await
        .expect("stored")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (i, input) in inputs.iter().enumerate() {
        if input.contains('\0') {
            continue;
        }
        let server: String = client
            .query_one("SELECT pg_temp.server_input($1)", &[input])
            .await
            .expect("cast")
            .get(0);
        let id = i32::try_from(i).expect("id");
        match stored.get(&id) {
            // An empty field is NULL where the type has no empty value (as
            // COPY's FORCE_NULL reads it), the one leniency.
            Some(None) if input.is_empty() => assert_eq!(
                server, "<rejected>",
                "{sql_type}: an empty value the server accepts was stored as NULL"
            ),
            Some(ours) => assert_eq!(
                ours.as_deref(),
                Some(server.as_str()),
                "{sql_type}: {input:?} stored differently from the server's cast"
            ),
            None => assert_eq!(
                server, "<rejected>",
                "{sql_type}: {input:?} was rejected but the server accepts it"
            ),
        }
    }
}

#[tokio::test]
async fn values_through_load_match_the_server() {
    let db = TestDb::new("values_differential").await;
    let home = Scratch::new("values-differential");
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let cases: &[(&str, &[&str])] = &[
        (
            "date",
            &[
                "2024-01-31",
                "1-5-21",
                "12-05-21",
                "2012/01/01",
                "01/08/1999",
                "Jan 8 1999",
                "681130 bc",
                "{\"42-6-9\"}",
                "2024-02-30",
                "0044-03-15 BC",
                "20240131",
                "infinity",
                "epoch",
                "J2451545",
                "1999-01-08 04:05:06",
            ],
        ),
        (
            "timestamp",
            &[
                "2024-01-01 10:00:00",
                "1-01-30t19:55:23.10",
                "5/19/2006 0:00:00",
                "2024-01-01T10:00:00.1234567",
                "294277-01-01 00:00:00",
                "Jan 8 1999 04:05:06 PM",
                "2024-01-01 24:00:00",
                "2024-01-01 10:00:00+02",
            ],
        ),
        (
            "timestamptz",
            &[
                "2024-01-01 10:00:00+02",
                "1-01-30t19:55:23.10",
                "2024-01-01 10:00 Europe/Paris",
                "2024-01-01 10:00 EST",
                "2024-01-01 10:00+1é1",
                "January 8 04:05:06 1999 PST",
                "2024-01-01 10:00:00Z",
            ],
        ),
        (
            "interval",
            &[
                "1 year 2 mons 3 days 04:05:06.5",
                "+9757157.999999999 h",
                "@ +365067.5 usec ago",
                "P",
                "@ +4.5 ms 09:42:27",
                "9223372036854775807 usec",
                "P1Y2M3DT4H5M6.5S",
                "-1 days +02:03:04",
                "1.5 days",
                "3days",
                "10:00",
            ],
        ),
        (
            "cidr",
            &[
                "222.105.29",
                "10.0.0.0/8",
                "10/8",
                "192.168.1.0/24",
                "10.1.2.3/8",
            ],
        ),
        (
            "inet",
            &[
                "144.251.55/30",
                "192.168.0.1/24",
                "::ffff:1.2.3.4",
                "1.2.3.4/+24",
            ],
        ),
        (
            "macaddr",
            &[
                "b6.77.a6.a2.2b.f3",
                "08:00:2b:01:02:03",
                "0800.2b01.0203",
                "08002b:010203",
            ],
        ),
        (
            "numeric",
            &[
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "1.5e3",
                "NaN",
                "-Infinity",
                "1_000",
                "0x1F",
                " 7 ",
                "1.2.3",
            ],
        ),
        ("numeric(5,2)", &["123.456", "1234.5", "-0.005", "99.995"]),
        (
            "integer",
            &[
                "42",
                " 7 ",
                "1_000",
                "0x1F",
                "2147483648",
                "1.5",
                "x",
                "+-1",
            ],
        ),
        (
            "double precision",
            &["1e-320", "1e400", "0x1p3", "-inf", "NaN", "1.", ".5e1"],
        ),
        ("boolean", &["t", "yes", "of", "o", " TRUE ", "1", "2"]),
        (
            "jsonb",
            &[
                "{\"a\": 1}",
                "[1e400]",
                "{\"a\": \"\\u0000\"}",
                "{\"a\":",
                "nul",
            ],
        ),
        (
            "json",
            &["{\"a\": \"\\u0000\"}", "[1, 2", "{\"a\": 1, \"a\": 2}"],
        ),
        (
            "uuid",
            &[
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
                "a0ee-bc99",
            ],
        ),
        (
            "date[]",
            &[
                "{\"42-6-9\"}",
                "{2024-01-31,NULL}",
                "[0:1]={2024-01-01,2024-01-02}",
            ],
        ),
        (
            "time",
            &["10:00", "10:00 PM", "24:00:00", "23:59:60", "1:2:3.0000005"],
        ),
        (
            "bytea",
            &["\\x0aff", "\\x0a\x0cff", "\\x0 a", "a\\\\b\\001", "\\400"],
        ),
        ("varchar(3)", &["abc", "abcd", "ab  ", "é中😀", "ab\u{a0}"]),
        // Types without an encoder travel as text: a cast must not cut.
        ("bit(3)", &["101", "1111", "10", "x"]),
        ("point", &["(1,2)", "1,2", "(1,2", "(1e400,0)"]),
    ];
    for (sql_type, seeds) in cases {
        let inputs = with_mutations(&mut rng, seeds, 60);
        differential(&db, &home, sql_type, &inputs).await;
    }
}

/// In a time zone with daylight saving, `timestamptz` values with an
/// offset of their own are converted by the encoder and the others (local
/// times in the gap and the overlap of a change, zone names) by the
/// server: every one stores what the server's cast stores.
#[tokio::test]
async fn timestamptz_values_in_a_zone_with_daylight_saving_match_the_server() {
    let db = TestDb::new("values_dst_zone").await;
    let home = Scratch::new("values-dst-zone");
    db.set("TimeZone", "America/New_York").await;
    let mut rng = Rng(0x0DD5_EED5_2024_0310);
    let seeds = [
        "2024-03-10 02:30:00",
        "2024-03-10 01:59:59.999999",
        "2024-11-03 01:30:00",
        "2024-11-03 01:30:00-04",
        "2024-11-03 01:30:00-05",
        "2024-07-01T12:00:00Z",
        "2024-01-01 10:00:00+05:30",
        "1883-11-18 12:00:00",
        "1883-11-18 12:00:00-04:56:02",
        "0044-03-15 12:00:00+00 BC",
        "2024-01-01 10:00 Europe/Paris",
        "2024-01-01 10:00 EST",
        "infinity",
        "-infinity",
        "epoch",
        "2024-06-01",
    ];
    let inputs = with_mutations(&mut rng, &seeds, 120);
    differential(&db, &home, "timestamptz", &inputs).await;

    // A plain load (no --max-errors): the values with an offset take the
    // encoder's fast path, the others go to the server among them.
    let texts: Vec<String> = (0..3000)
        .map(|i| match i % 4 {
            0 => format!("2024-03-10 0{}:{:02}:00", i % 4 + 1, i % 60),
            1 => format!("2024-11-03 01:{:02}:00-0{}", i % 60, 4 + i % 2),
            2 => format!("2024-{:02}-{:02} 12:00:00.{i:06}Z", 1 + i % 12, 1 + i % 28),
            _ => format!("1999-01-08 04:05:06+0{}:30", i % 10),
        })
        .collect();
    let mut csv = String::from("id,v\n");
    for (i, text) in texts.iter().enumerate() {
        csv.push_str(&format!("{i},{text}\n"));
    }
    home.file("mixed.csv", &csv, 0o644);
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE mixed (id int, v timestamptz); CREATE TABLE mixed_text (id int, t text)",
        )
        .await
        .expect("tables");
    let ids: Vec<i32> = (0..3000).collect();
    client
        .execute(
            "INSERT INTO mixed_text SELECT * FROM unnest($1::int[], $2::text[])",
            &[&ids, &texts],
        )
        .await
        .expect("texts");
    assert_ok(&load(&db, &home, &["mixed.csv", "-t", "mixed"]));
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM mixed), count(*) FILTER (WHERE m.v IS DISTINCT FROM x.t::timestamptz) \
             FROM mixed m FULL JOIN mixed_text x USING (id)",
            &[],
        )
        .await
        .expect("compared");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3000, 0));
}

/// Under `IntervalStyle` `sql_standard` a leading minus applies to every
/// field of an interval without other signs (`-1 days 02:03:04` is minus a
/// day and two hours): every value stores what the server's cast stores.
#[tokio::test]
async fn intervals_under_the_sql_standard_style_match_the_server() {
    let db = TestDb::new("values_sql_standard").await;
    let home = Scratch::new("values-sql-standard");
    db.set("IntervalStyle", "sql_standard").await;
    let mut rng = Rng(0x1A7E_5A1D_0015_0000);
    let seeds = [
        "-1 days 02:03:04",
        "-1 days +02:03:04",
        "1 year 2 mons -3 days 04:05:06",
        "-1 years 2 mons",
        "-1 day",
        "-02:03:04",
        " -3 days",
        "+1 days -02:00:00",
        "{\"-1 days 02:00:00\"}",
    ];
    let inputs = with_mutations(&mut rng, &seeds, 80);
    differential(&db, &home, "interval", &inputs).await;
    let arrays: Vec<String> = ["{\"-1 days 02:00:00\",\"1 day\"}", "{\"-1 day\",NULL}"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    differential(&db, &home, "interval[]", &arrays).await;
}

/// With `array_nulls` off an unquoted `NULL` in an array literal is the
/// string `NULL`, not a null element: every value stores what the
/// server's cast stores.
#[tokio::test]
async fn arrays_with_array_nulls_off_match_the_server() {
    let db = TestDb::new("values_array_nulls").await;
    let home = Scratch::new("values-array-nulls");
    db.set("array_nulls", "off").await;
    let mut rng = Rng(0xA7_0A11_0FF0_0000);
    let seeds = [
        "{a,NULL,\"NULL\"}",
        "{NULL}",
        "{null, Null ,nUlL}",
        "{\"\",b}",
        "{{a,NULL},{NULL,b}}",
        "{N\\ULL,NULLS}",
        "{}",
    ];
    let inputs = with_mutations(&mut rng, &seeds, 80);
    differential(&db, &home, "text[]", &inputs).await;
    let numbers: Vec<String> = ["{1,NULL}", "{NULL}", "{1,2,3}", "{{1},{2}}"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    differential(&db, &home, "int[]", &numbers).await;
}

/// In a database of another encoding than UTF-8 a value with a character
/// the encoding lacks is a bad row named by its line and column (the
/// server's conversion fails the whole COPY, unlocated), which
/// `--max-errors` sets aside; every other value stores what the server's
/// own conversion of the same text stores (escaped `bytea` beyond ASCII
/// is the database encoding's bytes).
#[tokio::test]
async fn characters_a_database_encoding_lacks_are_bad_rows_named_by_line() {
    for (encoding, fine, lacking) in [
        ("LATIN1", "Müller ÿ \u{80}", '日'),
        ("WIN1252", "€ Œ Müller", 'ż'),
    ] {
        let label = format!("values_{}", encoding.to_lowercase());
        let db = TestDb::with_encoding(&label, encoding).await;
        let home = Scratch::new(&label.replace('_', "-"));
        db.connect()
            .await
            .batch_execute(
                "CREATE TABLE t (id int PRIMARY KEY, name text, doc jsonb, tags text[], raw bytea)",
            )
            .await
            .expect("table");
        let csv = format!(
            "id,name,doc,tags,raw\n\
             1,{fine},\"{{\"\"k\"\": \"\"{fine}\"\"}}\",\"{{a,\"\"{fine}\"\"}}\",é\n\
             2,x{lacking},{{}},{{}},x\n\
             3,ok,\"{{\"\"k\"\": \"\"{lacking}\"\"}}\",{{}},x\n\
             4,ok,{{}},\"{{a,{lacking}}}\",x\n\
             5,é,[],{{}},\\x00\n"
        );
        home.file("f.csv", &csv, 0o644);
        let failed = load(&db, &home, &["f.csv", "-t", "t"]);
        assert_eq!(failed.code, 9, "{encoding}: {}", failed.stderr);
        assert!(
            failed.stderr.contains("f.csv:3:2: column \"name\"")
                && failed
                    .stderr
                    .contains(&format!("has no equivalent in encoding \"{encoding}\"")),
            "{encoding}: {}",
            failed.stderr
        );
        let out = load(
            &db,
            &home,
            &[
                "f.csv",
                "-t",
                "t",
                "--max-errors",
                "10",
                "--reject-file",
                "rejected.csv",
            ],
        );
        assert_ok(&out);
        let rejected = std::fs::read_to_string(home.path().join("rejected.csv")).expect("rejects");
        assert_eq!(
            rejected.matches(lacking).count(),
            3,
            "{encoding}: {rejected}"
        );
        let client = db.connect().await;
        let stored: Vec<i32> = client
            .query("SELECT id FROM t ORDER BY id", &[])
            .await
            .expect("ids")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(stored, [1, 5], "{encoding}");
        let doc = format!("{{\"k\": \"{fine}\"}}");
        let tags = format!("{{a,\"{fine}\"}}");
        for (id, name, doc, tags, raw) in [
            (1, fine, doc.as_str(), tags.as_str(), "é"),
            (5, "é", "[]", "{}", "\\x00"),
        ] {
            let same: bool = client
                .query_one(
                    "SELECT name = $2 AND doc = $3::text::jsonb AND tags = $4::text::text[] \
                     AND raw = $5::text::bytea FROM t WHERE id = $1",
                    &[&id, &name, &doc, &tags, &raw],
                )
                .await
                .expect("compare")
                .get(0);
            assert!(
                same,
                "{encoding}: row {id} stored differently from the server's conversion"
            );
        }
    }
}
