//! The binary encoder against the server as the oracle: for every input,
//! what we encode and COPY in reads back exactly as the server's own cast
//! of the same text, and what we reject the server rejects too.

use pgbulk::catalog;
use pgbulk::codec::{CopyWriter, Value};
use pgbulk::copy::copy_in;

use crate::harness::{Rng, TestDb};

/// Encodes `inputs` for a column of `sql_type`, copies the accepted ones in
/// and compares each with the server's cast; checks that the server also
/// rejects what the encoder rejected.
async fn oracle(db: &TestDb, sql_type: &str, inputs: &[String]) {
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "SET TimeZone = 'UTC'; DROP TABLE IF EXISTS t; CREATE TABLE t (id int, v {sql_type})"
        ))
        .await
        .expect("table");
    let info = catalog::table(&client, "public", "t")
        .await
        .expect("catalog")
        .expect("table exists");
    let (int4, ty) = (&info.columns[0].ty, &info.columns[1].ty);
    let mut writer = CopyWriter::new();
    let mut accepted = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let mark = writer.len();
        writer.start_tuple(2);
        writer.value(&Value::Int(i as i64), int4).expect("id");
        match writer.text(Some(input), ty) {
            Ok(()) => accepted.push(i),
            // Not a form the encoder reads exactly: the server's input
            // function decides (the engine sends such text for it to cast).
            Err(err) if err.is_for_server() => writer.truncate(mark),
            Err(err) => {
                writer.truncate(mark);
                // The server's own COPY of the same text (input function and
                // typmod, as a load applies them) must reject it too.
                let csv = format!("-1,\"{}\"\n", input.replace('"', "\"\""));
                let server = copy_in(
                    &client,
                    "COPY t (id, v) FROM STDIN (FORMAT csv)",
                    [csv.into_bytes()],
                )
                .await;
                if server.is_ok() {
                    client
                        .batch_execute("DELETE FROM t WHERE id = -1")
                        .await
                        .expect("clean up");
                }
                assert!(
                    server.is_err(),
                    "{sql_type}: we rejected {input:?} ({err}) but the server's COPY accepts it"
                );
            }
        }
    }
    copy_in(
        &client,
        "COPY t (id, v) FROM STDIN (FORMAT binary)",
        [writer.finish()],
    )
    .await
    .unwrap_or_else(|e| panic!("{sql_type}: COPY failed: {e}"));
    let rows = client
        .query(
            &format!(
                "SELECT t.id, t.v::text, i.x::{sql_type}::text FROM t \
                 JOIN unnest($1::text[]) WITH ORDINALITY AS i(x, n) ON i.n = t.id + 1 ORDER BY t.id"
            ),
            &[&inputs],
        )
        .await
        .unwrap_or_else(|e| panic!("{sql_type}: comparing: {e}"));
    assert_eq!(rows.len(), accepted.len(), "{sql_type}: rows copied");
    for row in rows {
        let id: i32 = row.get(0);
        let ours: Option<String> = row.get(1);
        let server: Option<String> = row.get(2);
        assert_eq!(
            ours,
            server,
            "{sql_type}: input {:?}",
            inputs[usize::try_from(id).expect("id")]
        );
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn scalar_types_match_the_server() {
    let db = TestDb::new("codec_scalar").await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ints = strings(&[
        "0",
        "-0",
        "+7",
        " 42 ",
        "2147483647",
        "-2147483648",
        "2147483648",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "1.5",
        "",
        "abc",
        "1e3",
        "0x10",
    ]);
    for _ in 0..200 {
        let v = rng.next_u64() as i64 >> rng.below(63);
        ints.push(v.to_string());
    }
    for t in ["smallint", "integer", "bigint"] {
        oracle(&db, t, &ints).await;
    }

    let mut floats = strings(&[
        "0",
        "-0",
        "1.5",
        " 3.25 ",
        ".5",
        "5.",
        "1e308",
        "1e309",
        "-1e309",
        "1e-400",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "-inf",
        "+inf",
        "3.4028235e38",
        "3.5e38",
        "1e-50",
        "1,5",
        "e5",
        ".",
        "",
        "1e",
        "0.1",
        "123456789012345678901234567890",
    ]);
    for _ in 0..200 {
        floats.push(format!("{:e}", f64::from_bits(rng.next_u64() >> 2)));
        floats.push(format!("{}", (rng.next_u64() as i64 as f64) / 1000.0));
    }
    for t in ["real", "double precision"] {
        oracle(&db, t, &floats).await;
    }

    let mut numerics = strings(&[
        "0",
        "0.00",
        "-0.000",
        "1",
        "12345.678",
        "-0.0001",
        "10000",
        "1.5e3",
        "15e-5",
        "1E+2",
        "NaN",
        "Infinity",
        "-Infinity",
        "inf",
        "+1.000",
        ".5",
        "5.",
        "",
        ".",
        "1.2.3",
        "abc",
        "99999999999999999999999999999999999999999999999999.00000000000000000000000001",
    ]);
    for _ in 0..200 {
        let int = rng.next_u64() >> rng.below(64);
        let frac = rng.next_u64() % 1_000_000;
        let scale = rng.below(8);
        let sign = if rng.below(2) == 0 { "-" } else { "" };
        numerics.push(format!(
            "{sign}{int}.{frac:0>width$}",
            width = usize::try_from(scale).expect("s")
        ));
        numerics.push(format!(
            "{sign}{int}e{}",
            i64::try_from(rng.below(40)).expect("e") - 20
        ));
    }
    oracle(&db, "numeric", &numerics).await;
    oracle(
        &db,
        "numeric(12,2)",
        &strings(&["1.005", "1234567890.12", "-0.004", "12.3"]),
    )
    .await;

    oracle(
        &db,
        "boolean",
        &strings(&[
            "t", "f", "true", "FALSE", " yes ", "no", "on", "off", "1", "0", "tr", "n", "maybe",
            "o", "",
        ]),
    )
    .await;

    let mut texts = strings(&[
        "",
        " ",
        "plain",
        "with 'quotes' and \"doubles\"",
        "back\\slash",
        "tab\tnew\nline",
        "emoji 🐘🚀",
        "ünïcödé",
    ]);
    for _ in 0..50 {
        let len = rng.below(20);
        texts.push(
            (0..len)
                .map(|_| {
                    char::from_u32(u32::try_from(rng.below(0x2FFF) + 1).expect("c")).unwrap_or('x')
                })
                .collect(),
        );
    }
    oracle(&db, "text", &texts).await;
    oracle(
        &db,
        "varchar(10)",
        &strings(&[
            "short",
            "exactly10!",
            "exactly10!   ",
            "this is too long",
            "ünïcödé ok",
            "ünïcödé too long!",
        ]),
    )
    .await;
    oracle(
        &db,
        "char(4)",
        &strings(&["ab", "abcd", "abcd   ", "abcde"]),
    )
    .await;

    oracle(
        &db,
        "bytea",
        &strings(&[
            "\\x0102ff",
            "\\x",
            "\\xDEADbeef",
            "\\x01 02",
            "abc\\\\def",
            "\\001\\377",
            "plain",
            "\\x0",
            "\\xzz",
            "\\q",
            "\\400",
        ]),
    )
    .await;

    let mut uuids = strings(&[
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "a0eebc99-9c0b",
        "not-a-uuid",
        "",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1-",
        "a0eebc99-9c0b-4ef8-bb6d_6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1\u{e9}",
        "a0eebc99 9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
        "a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11",
    ]);
    for _ in 0..50 {
        let (a, b) = (rng.next_u64(), rng.next_u64());
        uuids.push(format!("{a:016x}{b:016x}"));
        let hyphenated = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        );
        uuids.push(if a % 2 == 0 {
            hyphenated.to_uppercase()
        } else {
            hyphenated
        });
    }
    oracle(&db, "uuid", &uuids).await;

    oracle(
        &db,
        "inet",
        &strings(&[
            "192.168.0.1",
            "192.168.0.0/24",
            "10.1.2.3/8",
            "::1",
            "2001:db8::/32",
            "::ffff:1.2.3.4",
            "300.1.1.1",
            "1.2.3.4/33",
            "x",
        ]),
    )
    .await;
    oracle(
        &db,
        "cidr",
        &strings(&[
            "10.0.0.0/8",
            "192.168.1.0/24",
            "10/8",
            "192.168/16",
            "2001:db8::/32",
            "10.1.2.3/8",
            "1.2.3.4",
        ]),
    )
    .await;
    oracle(
        &db,
        "macaddr",
        &strings(&[
            "08:00:2b:01:02:03",
            "08-00-2b-01-02-03",
            "08002b:010203",
            "08002b-010203",
            "0800.2b01.0203",
            "0800-2b01-0203",
            "08002B010203",
            "08:00:2b:01:02",
            "zz:00:2b:01:02:03",
        ]),
    )
    .await;

    // What the encoder passes as JSON the server must take: the oracle's
    // COPY of every passed document fails otherwise.
    let mut documents = strings(&[
        "{\"a\": [1, 2.5, null]}",
        "null",
        "\"str\"",
        " 42 ",
        "{\"b\": 1, \"a\": [true, {}]}",
        "[]",
        "1e400",
        "1e500",
        "1e-500",
        "1e1001",
        "1e131072",
        "1e-16384",
        "0e-20000",
        "-0.0e-0",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud83d\\u0041\"",
        "\"\\u00e9\\u4e2d\"",
        "\"\\u007f\u{7f}\"",
        "{\"a\": 1, \"a\": 2}",
    ]);
    documents.push(format!("1{}", "0".repeat(499)));
    documents.push(format!("0.{}1e-500", "0".repeat(497)));
    for depth in [128, 129, 2000] {
        documents.push(format!("{}1{}", "[".repeat(depth), "]".repeat(depth)));
    }
    let mut rng = Rng(0x6a73_6f6e);
    documents.extend((0..400).map(|_| random_json(&mut rng, 0)));
    oracle(&db, "json", &documents).await;
    oracle(&db, "jsonb", &documents).await;
}

/// A JSON document of random values: strings with every kind of escape
/// (surrogates paired and not, `\u0000`), numbers with exponents near
/// `numeric`'s limits, and now and then a byte that makes it invalid.
fn random_json(rng: &mut Rng, depth: u32) -> String {
    let pick = if depth > 3 {
        rng.below(5)
    } else {
        rng.below(8)
    };
    let mut doc = match pick {
        0 => ["true", "false", "null"][rng.index(3)].to_owned(),
        1 | 2 => {
            let exponent = [
                "", "e5", "E-3", "e+500", "e-500", "e501", "e-0501", "e131072",
            ];
            let int = ["0", "-0", "7", "-123", "1000000000000000000000", "01"];
            let frac = ["", ".5", ".000", ".", ".12e"];
            format!(
                "{}{}{}",
                int[rng.index(int.len())],
                frac[rng.index(frac.len())],
                exponent[rng.index(exponent.len())]
            )
        }
        3 | 4 => {
            let pieces = [
                "a",
                "é",
                "中",
                " ",
                "\\\"",
                "\\\\",
                "\\/",
                "\\n",
                "\\t",
                "\\u0041",
                "\\u0000",
                "\\ud800",
                "\\udbff\\udfff",
                "\\udc00",
                "\\u00",
                "\\x",
                "\t",
            ];
            let n = rng.below(4);
            let body: String = (0..n).map(|_| pieces[rng.index(pieces.len())]).collect();
            format!("\"{body}\"")
        }
        5 | 6 => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|_| random_json(rng, depth + 1))
                .collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let items: Vec<String> = (0..rng.below(4))
                .map(|i| format!("\"k{i}\": {}", random_json(rng, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    };
    if depth == 0 && rng.below(10) == 0 {
        let at = rng.index(doc.len() + 1);
        if doc.is_char_boundary(at) {
            doc.insert(at, [',', ']', '}', '"', ':'][rng.index(5)]);
        }
    }
    doc
}

#[tokio::test]
async fn date_and_time_types_match_the_server() {
    let db = TestDb::new("codec_time").await;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut dates = strings(&[
        "2000-01-01",
        "1999-12-31",
        "2000-02-29",
        "2023-02-29",
        "1900-02-29",
        "2024-1-5",
        "20240105",
        "0044-03-15 BC",
        "4713-11-24 BC",
        "4714-11-23 BC",
        "5874897-12-31",
        "5874898-01-01",
        "4714-11-24 BC",
        "infinity",
        "-infinity",
        "epoch",
        " 2020-06-01 ",
        "2020-13-01",
        "2020-00-10",
        "",
        "yesterday-ish",
    ]);
    for _ in 0..200 {
        let y = 1 + rng.below(9999);
        let m = 1 + rng.below(12);
        let d = 1 + rng.below(31);
        dates.push(format!("{y:04}-{m:02}-{d:02}"));
    }
    oracle(&db, "date", &dates).await;

    let mut times = strings(&[
        "00:00",
        "23:59:59.999999",
        "24:00:00",
        "24:00:01",
        "12:30:15.5",
        "25:00",
        "12:60",
        "1:2:3",
        "12:00:00.1234567",
        // Sixty seconds and 24 hours, never past 24:00:00.
        "23:59:60",
        "23:59:60.5",
        "12:30:60.5",
        "24:00:00.5",
        "23:59:60.0000005",
        "23:59:60.0000006",
    ]);
    for _ in 0..100 {
        times.push(format!(
            "{:02}:{:02}:{:02}.{:06}",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        ));
    }
    oracle(&db, "time", &times).await;
    oracle(
        &db,
        "timetz",
        &strings(&[
            "10:00:00+02",
            "10:00:00-05:30",
            "10:00:00Z",
            "10:00:00",
            "23:59:59.5+14",
        ]),
    )
    .await;

    let mut stamps = strings(&[
        "2024-01-01T10:00:00",
        "2024-01-01 10:00:00+02",
        "2024-01-01 10:00",
        "2024-01-01",
        "infinity",
        "-infinity",
        "epoch",
        "2024-01-01 10:00:00.1234565",
        "0001-01-01 00:00:00 BC",
        "294276-12-31 23:59:59",
        "2024-02-30 00:00",
        "2024-01-01 24:00:00",
        "garbage",
        "2024-02-29 23:59:59-05",
        "2023-02-29 10:00:00",
        "2024-06-30T12:34:56Z",
        "2024-06-30 12:34:56+14",
        "2024-06-30 12:34:56+16",
        "2024-06-30 12:60:00",
        "0001-01-01 00:00:00",
        "2024-06-30 12:34:56.5+02",
        "2024-06-30 12:34:56.001Z",
        "2024-06-30T12:34:56.123",
        "2024-06-30 12:34:56.+02",
        "2024-06-30 12:34:56.1234567-01",
        "2024-06-30 12:34:56.999999+00",
        "2024-06-30 12:34:56.9999995+00",
        "2024-01-01 23:59:60",
        "2024-01-01 23:59:60.5",
        "2024-01-01 12:30:60.5",
        "2024-01-01 24:00:00.5",
        "2024-12-31 23:59:60.000001Z",
    ]);
    for _ in 0..200 {
        stamps.push(format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            1 + rng.below(9999),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        ));
    }
    // Fractions of one to seven digits, with and without an offset: the
    // common form's fast path takes up to six.
    for _ in 0..200 {
        let digits = 1 + rng.below(7) as usize;
        let fraction = rng.below(10u64.pow(digits as u32));
        let zone = ["", "Z", "+05", "-11", "+00", " UTC", "+05:30"][rng.below(7) as usize];
        stamps.push(format!(
            "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}.{fraction:0digits$}{zone}",
            1 + rng.below(9999),
            1 + rng.below(12),
            1 + rng.below(28),
            if rng.below(2) == 0 { ' ' } else { 'T' },
            rng.below(24),
            rng.below(60),
            rng.below(60),
        ));
    }
    oracle(&db, "timestamp", &stamps).await;
    let mut stamptz = stamps.clone();
    for zone in ["Z", "+05:30", "-0800", "+01", "-03:00", " UTC"] {
        stamptz.push(format!("2024-06-30 12:00:00{zone}"));
        stamptz.push(format!("1999-12-31T23:59:59.999{zone}"));
    }
    oracle(&db, "timestamptz", &stamptz).await;

    oracle(
        &db,
        "interval",
        &strings(&[
            "1 year 2 mons 3 days 04:05:06.5",
            "P1Y2M3DT4H5M6S",
            "P1Y2M3DT4H5M6.5S",
            "@ 1 hour ago",
            "1.5 days",
            "1.5 years",
            "0.1 months",
            "-1 day +02:00:00",
            "10",
            "3 weeks",
            "1 decade",
            "2 hours 30 minutes",
            "1 century",
            "-04:05",
            "PT36H",
            "P2W",
            "nonsense",
            "",
            "5 parsecs",
        ]),
    )
    .await;
}

#[tokio::test]
async fn enums_domains_and_arrays_match_the_server() {
    let db = TestDb::new("codec_arrays").await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀'); \
             CREATE DOMAIN posint AS integer CHECK (VALUE > 0);",
        )
        .await
        .expect("types");
    oracle(&db, "mood", &strings(&["sad", "happy 😀"])).await;
    oracle(&db, "posint", &strings(&["1", "2147483647", "x"])).await;
    oracle(
        &db,
        "integer[]",
        &strings(&[
            "{1,2,3}",
            "{}",
            "{{1,2},{3,4}}",
            "{1,NULL,3}",
            "{ 1 , 2 }",
            "{{{1}},{{2}}}",
            "{1,{2}}",
            "{1,2",
            "1,2",
            "{1,x}",
            "{null}",
        ]),
    )
    .await;
    oracle(
        &db,
        "text[]",
        &strings(&[
            "{\"a,b\",\"c\\\"d\",NULL,\"NULL\",plain}",
            "{\"\"}",
            "{ spaced out , x }",
            "{\\,}",
            "{a\\ b}",
            "{{a,b},{c,d}}",
            "{\"unterminated}",
        ]),
    )
    .await;
    oracle(
        &db,
        "numeric[]",
        &strings(&["{1.5,NaN,-2e3}", "{{1,2},{3,4}}"]),
    )
    .await;
    oracle(&db, "date[]", &strings(&["{2024-01-01,infinity}"])).await;
    // The column's typmod bounds each element.
    oracle(
        &db,
        "varchar(2)[]",
        &strings(&["{ab,NULL}", "{abc}", "{\"ab   \"}", "{a,é}", "{{ab},{xyz}}"]),
    )
    .await;
    oracle(
        &db,
        "numeric(5,2)[]",
        &strings(&["{1.005,-2.5,NULL}", "{1234.5}", "{999.995}", "{999.994}"]),
    )
    .await;
    oracle(&db, "mood[]", &strings(&["{sad,ok}"])).await;
    oracle(
        &db,
        "uuid[]",
        &strings(&["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"]),
    )
    .await;
}

#[tokio::test]
async fn typed_values_round_trip() {
    let db = TestDb::new("codec_values").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE v (i int8, f float8, n numeric, j jsonb, a int4[], b bytea, t timestamptz)")
        .await
        .expect("table");
    let info = catalog::table(&client, "public", "v")
        .await
        .expect("catalog")
        .expect("exists");
    let rows = [
        vec![
            Value::Int(-5),
            Value::Float(f64::NAN),
            Value::Float(0.1),
            Value::Json(serde_json::json!({"k": [1, null]})),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Null]),
                Value::Array(vec![Value::Int(3), Value::Int(4)]),
            ]),
            Value::Bytes(vec![0, 1, 255]),
            Value::Text("2024-01-01 00:00:00+00".to_owned()),
        ],
        vec![
            Value::Null,
            Value::Float(f64::NEG_INFINITY),
            Value::Int(12),
            Value::Json(serde_json::Value::Null),
            Value::Array(vec![]),
            Value::Null,
            Value::Null,
        ],
    ];
    let mut w = CopyWriter::new();
    for row in &rows {
        w.start_tuple(7);
        for (value, column) in row.iter().zip(&info.columns) {
            w.value(value, &column.ty).expect("encodes");
        }
    }
    copy_in(&client, "COPY v FROM STDIN (FORMAT binary)", [w.finish()])
        .await
        .expect("copy");
    let got = client
        .query("SELECT i::text, f::text, n::text, j::text, j IS NULL, a::text, b::text, t::text FROM v ORDER BY i NULLS LAST", &[])
        .await
        .expect("select");
    let texts = |r: &tokio_postgres::Row| -> Vec<Option<String>> {
        (0..8)
            .map(|i| {
                if i == 4 {
                    Some(r.get::<_, bool>(i).to_string())
                } else {
                    r.get(i)
                }
            })
            .collect()
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        texts(&got[0]),
        vec![
            s("-5"),
            s("NaN"),
            s("0.1"),
            s("{\"k\": [1, null]}"),
            s("false"),
            s("{{1,NULL},{3,4}}"),
            s("\\x0001ff"),
            s("2024-01-01 00:00:00+00")
        ]
    );
    assert_eq!(
        texts(&got[1]),
        vec![
            None,
            s("-Infinity"),
            s("12"),
            s("null"),
            s("false"),
            s("{}"),
            None,
            None
        ],
        "JSON null is stored as JSON null, not SQL NULL"
    );
}
