//! The ingest engine against a real server.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use pgbulk::codec::Value;
use pgbulk::ingest::{
    Batch, BatchInfo, BatchWatermark, BeforeVisible, HighWatermark, Mode, Options, Row, ingest,
};
use pgbulk::schema::Declaration;
use pgbulk::{ErrorKind, Result};
use serde_json::json;

use crate::harness::TestDb;

fn decl(sql: &str) -> Declaration {
    Declaration::parse(sql).expect("declaration parses")
}

fn row(table: &str, values: Vec<Value>) -> Row {
    Row::new(table, values)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn batch(hw: serde_json::Value, rows: Vec<Row>) -> Result<Batch> {
    Ok(Batch {
        high_watermark: BatchWatermark::Value(Some(hw)),
        metadata: json!({}),
        rows: pgbulk::ingest::Rows::values(rows.into_iter().map(Ok)),
        resume: None,
    })
}

async fn oid(client: &tokio_postgres::Client, table: &str) -> u32 {
    client
        .query_one("SELECT $1::text::regclass::oid", &[&table])
        .await
        .expect("oid")
        .get(0)
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect("count").get(0)
}

const SALES: &str = "CREATE TABLE sales.stock (pos int, product bigint, day date, stock int NOT NULL, \
                     PRIMARY KEY (pos, product, day));";

#[tokio::test]
async fn creates_schema_and_tables_with_zero_batches() {
    let db = TestDb::new("ingest_create").await;
    let mut client = db.connect().await;
    let d = decl(
        "CREATE TABLE \"My Schema\".\"Odd \"\"Name\"\" 🐘.x\" (\"ID\" int PRIMARY KEY, \"Value Ü\" text UNIQUE, \
         CHECK (\"ID\" > 0));\
         CREATE INDEX \"lower idx\" ON \"My Schema\".\"Odd \"\"Name\"\" 🐘.x\" (lower(\"Value Ü\")) WHERE \"ID\" > 10;\
         COMMENT ON TABLE \"My Schema\".\"Odd \"\"Name\"\" 🐘.x\" IS 'weird but fine';\
         COMMENT ON INDEX \"My Schema\".\"lower idx\" IS 'an index comment';",
    );
    let report = ingest(
        &mut client,
        &d,
        |hw| {
            assert_eq!(hw, None);
            Vec::<Result<Batch>>::new()
        },
        &Options::default(),
    )
    .await
    .expect("ingest");
    assert!(report.batches.is_empty());
    assert!(!report.migrations.is_empty());
    let comment: Option<String> = client
        .query_one(
            "SELECT obj_description('\"My Schema\".\"Odd \"\"Name\"\" 🐘.x\"'::regclass)",
            &[],
        )
        .await
        .expect("comment")
        .get(0);
    assert_eq!(comment.as_deref(), Some("weird but fine"));
    assert_eq!(
        count(&client, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'My Schema' AND indexname = 'lower idx'").await,
        1
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM pg_class WHERE relname = 'lower idx' AND obj_description(oid, 'pg_class') = 'an index comment'").await,
        1
    );
    // The same declaration again changes nothing.
    let before = oid(&client, "\"My Schema\".\"Odd \"\"Name\"\" 🐘.x\"").await;
    let report = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(1), vec![])],
        &Options::default(),
    )
    .await
    .expect("again");
    assert!(report.migrations.is_empty(), "{:?}", report.migrations);
    assert_eq!(
        oid(&client, "\"My Schema\".\"Odd \"\"Name\"\" 🐘.x\"").await,
        before
    );
}

#[tokio::test]
async fn equivalent_declarations_never_migrate() {
    let db = TestDb::new("ingest_same").await;
    let mut client = db.connect().await;
    let long = "a".repeat(63);
    let sql = format!(
        "CREATE TABLE t (id integer PRIMARY KEY, f8 float8, f double precision, r real, n numeric(12,2), \
         arr int[], arr2 text[][], ts timestamptz DEFAULT now(), j jsonb, u uuid UNIQUE, v varchar(20) NOT NULL DEFAULT 'x', \
         \"{long}\" int, s serial);\
         CREATE UNIQUE INDEX t_u_v ON t (v, u);\
         CREATE INDEX t_j ON t USING gin (j);\
         CREATE INDEX t_brin ON t USING brin (ts);\
         CREATE INDEX t_inc ON t (f) INCLUDE (r) WHERE f > 0;"
    );
    let d = decl(&sql);
    ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(1), vec![])],
        &Options::default(),
    )
    .await
    .expect("first");
    let before = oid(&client, "t").await;
    let plan = pgbulk::plan::plan(&mut client, &d).await.expect("plan");
    assert!(plan.is_empty(), "{plan}");
    let report = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(2), vec![])],
        &Options::default(),
    )
    .await
    .expect("second");
    assert!(report.migrations.is_empty(), "{:?}", report.migrations);
    assert_eq!(oid(&client, "t").await, before);
    let default: String = client
        .query_one("SELECT column_default FROM information_schema.columns WHERE table_name = 't' AND column_name = 'id'", &[])
        .await
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .expect("default");
    assert_eq!(default, "", "an integer key never becomes serial");
}

#[tokio::test]
async fn upserts_with_composite_keys_and_duplicates() {
    upsert_scenario(Options::default()).await;
}

#[tokio::test]
async fn upserts_with_on_conflict() {
    upsert_scenario(Options {
        upsert: pgbulk::ingest::Upsert::OnConflict,
        ..Options::default()
    })
    .await;
}

async fn upsert_scenario(options: Options) {
    let db = TestDb::new("ingest_upsert").await;
    let mut client = db.connect().await;
    let d = decl(SALES);
    let r = |pos: i64, product: i64, day: &str, stock: i64| {
        row(
            "sales.stock",
            vec![
                Value::Int(pos),
                Value::Int(product),
                text(day),
                Value::Int(stock),
            ],
        )
    };
    let report = ingest(
        &mut client,
        &d,
        |_| {
            vec![batch(
                json!("2019-08-17"),
                vec![
                    r(1, 10, "2019-08-17", 2),
                    r(1, 11, "2019-08-17", 5),
                    r(1, 10, "2019-08-17", 3),
                ],
            )]
        },
        &options,
    )
    .await
    .expect("first");
    let c = report.tables["sales.stock"];
    assert_eq!((c.inserted, c.updated), (2, 0), "{c:?}");
    assert_eq!(
        count(
            &client,
            "SELECT stock::int8 FROM sales.stock WHERE product = 10"
        )
        .await,
        3,
        "the last row for a key wins"
    );
    let xmin_before: String = client
        .query_one("SELECT xmin::text FROM sales.stock WHERE product = 11", &[])
        .await
        .expect("xmin")
        .get(0);
    let report = ingest(
        &mut client,
        &d,
        |hw| {
            assert_eq!(hw, Some(json!("2019-08-17")));
            vec![batch(
                json!("2019-08-18"),
                vec![
                    r(1, 10, "2019-08-17", 4),
                    r(1, 11, "2019-08-17", 5),
                    r(2, 10, "2019-08-18", 1),
                ],
            )]
        },
        &options,
    )
    .await
    .expect("second");
    let c = report.tables["sales.stock"];
    assert_eq!((c.inserted, c.updated, c.unchanged), (1, 1, 1), "{c:?}");
    let xmin_after: String = client
        .query_one("SELECT xmin::text FROM sales.stock WHERE product = 11", &[])
        .await
        .expect("xmin")
        .get(0);
    assert_eq!(xmin_before, xmin_after, "an unchanged row is not rewritten");
    let hw: String = client
        .query_one("SELECT high_watermark::text FROM sales.pgbulk_watermark WHERE table_name = 'sales.stock'", &[])
        .await
        .expect("watermark readable with SQL")
        .get(0);
    assert_eq!(hw, "\"2019-08-18\"");
}

#[tokio::test]
async fn appends_without_a_key_and_skips_undeclared_tables() {
    let db = TestDb::new("ingest_append").await;
    let mut client = db.connect().await;
    let d = decl(
        "CREATE TABLE events (at timestamptz, what text, payload jsonb, tags text[], n numeric);",
    );
    let rows = vec![
        row(
            "events",
            vec![
                text("2024-01-01 10:00+02"),
                text("a"),
                Value::Json(json!(null)),
                text("{x,y}"),
                text("1.5"),
            ],
        ),
        row(
            "events",
            vec![
                Value::Null,
                text("b"),
                Value::Null,
                Value::Null,
                Value::Float(2.25),
            ],
        ),
        row(
            "public.events",
            vec![
                Value::Null,
                text("c"),
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ),
        row("nope", vec![Value::Int(1)]),
        row("nope", vec![Value::Int(2)]),
    ];
    let report = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(1), rows)],
        &Options::default(),
    )
    .await
    .expect("ingest");
    assert_eq!(report.tables["public.events"].inserted, 3);
    assert_eq!(report.skipped["nope"], 2);
    assert_eq!(report.batches[0].skipped, 2);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM events WHERE payload IS NOT NULL AND payload = 'null'::jsonb"
        )
        .await,
        1
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM events WHERE payload IS NULL").await,
        2
    );
}

#[tokio::test]
async fn interleaved_tables_in_one_batch_and_atomic_visibility() {
    let db = TestDb::new("ingest_two").await;
    let mut client = db.connect().await;
    let observer = db.connect().await;
    let d = decl(
        "CREATE TABLE a (id bigint PRIMARY KEY, v text); CREATE TABLE b (id bigint PRIMARY KEY, w float8);",
    );
    ingest(
        &mut client,
        &d,
        |_| Vec::<Result<Batch>>::new(),
        &Options::default(),
    )
    .await
    .expect("create");
    let mut rows = Vec::new();
    // Wide enough that each table's rows take several COPY chunks, so the
    // stream switches between the tables' COPYs many times.
    for i in 0..60_000 {
        rows.push(row(
            "a",
            vec![
                Value::Int(i),
                Value::Text(format!("value number {i} with some padding to widen it")),
            ],
        ));
        rows.push(row("b", vec![Value::Int(i), Value::Float(i as f64 / 2.0)]));
    }

    struct Peek(tokio_postgres::Client, Arc<AtomicI64>);
    impl BeforeVisible for Peek {
        fn call<'a>(
            &'a self,
            tx: &'a tokio_postgres::Transaction<'a>,
            _batch: &'a BatchInfo,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
            Box::pin(async move {
                let inside: i64 = tx
                    .query_one("SELECT count(*) FROM a", &[])
                    .await
                    .expect("inside")
                    .get(0);
                let outside: i64 = self
                    .0
                    .query_one("SELECT count(*) FROM a", &[])
                    .await
                    .expect("outside")
                    .get(0);
                assert_eq!(inside, 60_000, "the hook sees the batch");
                self.1.store(outside, Ordering::SeqCst);
                Ok(())
            })
        }
    }
    let seen_outside = Arc::new(AtomicI64::new(-1));
    let options = Options {
        before_visible: Some(Arc::new(Peek(observer, seen_outside.clone()))),
        ..Options::default()
    };
    let report = ingest(&mut client, &d, |_| vec![batch(json!(1), rows)], &options)
        .await
        .expect("ingest");
    assert_eq!(
        seen_outside.load(Ordering::SeqCst),
        0,
        "another session sees nothing before commit"
    );
    assert_eq!(report.tables["public.a"].inserted, 60_000);
    assert_eq!(report.tables["public.b"].inserted, 60_000);
    let other = db.connect().await;
    assert_eq!(count(&other, "SELECT count(*) FROM a").await, 60_000);
    assert_eq!(count(&other, "SELECT count(*) FROM b").await, 60_000);
    assert_eq!(count(&other, "SELECT count(*) FROM a WHERE v <> 'value number ' || id || ' with some padding to widen it'").await, 0);
}

#[tokio::test]
async fn failures_keep_earlier_batches_and_name_the_value() {
    let db = TestDb::new("ingest_fail").await;
    let mut client = db.connect().await;
    let d = decl("CREATE TABLE t (id int PRIMARY KEY, amount integer NOT NULL, code text UNIQUE);");
    let err = ingest(
        &mut client,
        &d,
        |_| {
            vec![
                batch(
                    json!(1),
                    vec![row("t", vec![Value::Int(1), text("10"), text("a")])],
                ),
                batch(
                    json!(2),
                    vec![
                        row("t", vec![Value::Int(2), text("20"), text("b")]),
                        row("t", vec![Value::Int(3), text("12x"), text("c")]),
                    ],
                ),
            ]
        },
        &Options::default(),
    )
    .await
    .expect_err("bad value");
    assert_eq!(err.kind(), ErrorKind::Data);
    assert_eq!(
        err.message(),
        "batch 2, table public.t, row 2: column amount: invalid input syntax for type integer: \"12x\""
    );
    // The same, as data.
    assert_eq!(
        (
            err.batch(),
            err.table(),
            err.row(),
            err.column(),
            err.value()
        ),
        (
            Some(2),
            Some("public.t"),
            Some(2),
            Some("amount"),
            Some("12x")
        )
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM t").await,
        1,
        "batch 1 stays, batch 2 is gone"
    );
    let hw: String = client
        .query_one("SELECT high_watermark::text FROM pgbulk_watermark", &[])
        .await
        .expect("hw")
        .get(0);
    assert_eq!(hw, "1");

    let err = ingest(
        &mut client,
        &d,
        |_| {
            vec![batch(
                json!(3),
                vec![row("t", vec![Value::Int(5), text("1"), text("a")])],
            )]
        },
        &Options::default(),
    )
    .await
    .expect_err("unique violation");
    // A row the server refuses is bad data, with a coarse kind to branch on.
    assert_eq!(err.kind(), ErrorKind::Data);
    assert_eq!(
        err.server_kind(),
        Some(pgbulk::ServerErrorKind::UniqueViolation)
    );
    assert!(
        err.message()
            .contains("duplicate key value violates unique constraint"),
        "{err}"
    );
    assert!(err.message().contains("(constraint t_code_key)"), "{err}");
    assert_eq!((err.batch(), err.table()), (Some(1), Some("public.t")));
    assert!(
        err.db_error()
            .and_then(|d| d.detail())
            .is_some_and(|d| d.contains("(code)=(a)"))
    );

    let err = ingest(
        &mut client,
        &d,
        |_| {
            vec![
                batch(
                    json!(4),
                    vec![row("t", vec![Value::Int(6), text("1"), text("z")])],
                ),
                Err(pgbulk::Error::new(ErrorKind::Io, "source broke")),
            ]
        },
        &Options::default(),
    )
    .await
    .expect_err("source error");
    assert_eq!(err.message(), "source broke");
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 2);
    let hw: String = client
        .query_one("SELECT high_watermark::text FROM pgbulk_watermark", &[])
        .await
        .expect("hw")
        .get(0);
    assert_eq!(hw, "4");

    let err = ingest(
        &mut client,
        &d,
        |_| {
            vec![batch(
                json!(5),
                vec![row("t", vec![Value::Int(7), Value::Null, text("q")])],
            )]
        },
        &Options::default(),
    )
    .await
    .expect_err("null");
    assert_eq!(
        err.message(),
        "batch 1, table public.t, row 1: column amount: NULL in a NOT NULL column"
    );
}

#[tokio::test]
async fn watermarks_latest_earliest_explicit_and_computed() {
    let db = TestDb::new("ingest_hw").await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE legacy (id int PRIMARY KEY, v text); \
             COMMENT ON TABLE legacy IS '{\"pg-bulk-ingest\": {\"high-watermark\": \"2023-05-01\"}, \"note\": \"kept\"}'",
        )
        .await
        .expect("legacy table");
    let d = decl("CREATE TABLE legacy (id int PRIMARY KEY, v text);");
    let mut seen = Vec::new();
    ingest(
        &mut client,
        &d,
        |hw| {
            seen.push(hw);
            vec![batch(json!("2023-06-01"), vec![])]
        },
        &Options::default(),
    )
    .await
    .expect("picks up pg-bulk-ingest");
    ingest(
        &mut client,
        &d,
        |hw| {
            seen.push(hw);
            Vec::<Result<Batch>>::new()
        },
        &Options::default(),
    )
    .await
    .expect("latest");
    let earliest = Options {
        high_watermark: HighWatermark::Earliest,
        ..Options::default()
    };
    ingest(
        &mut client,
        &d,
        |hw| {
            seen.push(hw);
            Vec::<Result<Batch>>::new()
        },
        &earliest,
    )
    .await
    .expect("earliest");
    let explicit = Options {
        high_watermark: HighWatermark::Value(json!({"k": 1})),
        ..Options::default()
    };
    ingest(
        &mut client,
        &d,
        |hw| {
            seen.push(hw);
            vec![Ok(Batch {
                high_watermark: BatchWatermark::Computed(Box::new(|| Ok(Some(json!("computed"))))),
                metadata: json!({"file": "x"}),
                rows: pgbulk::ingest::Rows::values(std::iter::empty()),
                resume: None,
            })]
        },
        &explicit,
    )
    .await
    .expect("explicit");
    assert_eq!(
        seen,
        vec![
            Some(json!("2023-05-01")),
            Some(json!("2023-06-01")),
            None,
            Some(json!({"k": 1}))
        ]
    );
    let (hw, meta): (String, String) = client
        .query_one(
            "SELECT high_watermark::text, batch_metadata::text FROM pgbulk_watermark",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("row");
    assert_eq!(
        (hw.as_str(), meta.as_str()),
        ("\"computed\"", "{\"file\": \"x\"}")
    );
    let comment: String = client
        .query_one("SELECT obj_description('legacy'::regclass)", &[])
        .await
        .expect("c")
        .get(0);
    assert!(
        comment.contains("\"note\": \"kept\""),
        "the comment is left alone: {comment}"
    );
    // A watermark goes with its table: once it is dropped, the next
    // ingest starts from the beginning (as pg-bulk-ingest's comment does).
    client
        .batch_execute("DROP TABLE legacy")
        .await
        .expect("drop");
    let mut after_drop = Vec::new();
    ingest(
        &mut client,
        &d,
        |hw| {
            after_drop.push(hw);
            vec![batch(json!("2023-07-01"), vec![])]
        },
        &Options::default(),
    )
    .await
    .expect("after the drop");
    ingest(
        &mut client,
        &d,
        |hw| {
            after_drop.push(hw);
            Vec::<Result<Batch>>::new()
        },
        &Options::default(),
    )
    .await
    .expect("latest again");
    assert_eq!(after_drop, vec![None, Some(json!("2023-07-01"))]);
}

#[tokio::test]
async fn delete_then_upsert() {
    let db = TestDb::new("ingest_delete").await;
    let mut client = db.connect().await;
    let d = decl("CREATE TABLE t (id int PRIMARY KEY, v text);");
    let opts = Options {
        mode: Mode::DeleteThenUpsert,
        ..Options::default()
    };
    ingest(
        &mut client,
        &d,
        |_| {
            vec![batch(
                json!(1),
                vec![
                    row("t", vec![Value::Int(1), text("old")]),
                    row("t", vec![Value::Int(2), text("old")]),
                ],
            )]
        },
        &opts,
    )
    .await
    .expect("first");
    ingest(&mut client, &d, |_| Vec::<Result<Batch>>::new(), &opts)
        .await
        .expect("zero batches");
    assert_eq!(
        count(&client, "SELECT count(*) FROM t").await,
        2,
        "zero batches delete nothing"
    );
    let report = ingest(
        &mut client,
        &d,
        |_| {
            vec![
                batch(json!(2), vec![row("t", vec![Value::Int(3), text("new")])]),
                batch(json!(3), vec![row("t", vec![Value::Int(4), text("new")])]),
            ]
        },
        &opts,
    )
    .await
    .expect("replace");
    assert_eq!(report.tables["public.t"].deleted, 2);
    assert_eq!(
        count(&client, "SELECT count(*) FROM t WHERE v = 'new'").await,
        2
    );
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 2);
}

#[tokio::test]
async fn in_place_migrations_keep_the_table() {
    let db = TestDb::new("ingest_migrate").await;
    let mut client = db.connect().await;
    let v1 =
        decl("CREATE TABLE t (id int PRIMARY KEY, name varchar(10) NOT NULL, old int, note text);");
    ingest(
        &mut client,
        &v1,
        |_| {
            vec![batch(
                json!(1),
                vec![row(
                    "t",
                    vec![Value::Int(1), text("a"), Value::Int(1), text("n")],
                )],
            )]
        },
        &Options::default(),
    )
    .await
    .expect("v1");
    let before = oid(&client, "t").await;
    let v2 = decl(
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(50), note text NOT NULL, added int DEFAULT 7, extra text);\
         CREATE INDEX t_note ON t (note);\
         COMMENT ON COLUMN t.note IS 'a note';",
    );
    // Zero batches: nothing migrates.
    ingest(
        &mut client,
        &v2,
        |_| Vec::<Result<Batch>>::new(),
        &Options::default(),
    )
    .await
    .expect("zero");
    assert_eq!(count(&client, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'old'").await, 1);
    let plan = pgbulk::plan::plan(&mut client, &v2).await.expect("plan");
    let printed = plan.to_string();
    assert!(
        printed.contains("drop column old")
            && printed.contains("hazard: the data in column old is lost"),
        "{printed}"
    );
    assert!(
        printed.contains("lock: ACCESS EXCLUSIVE, brief"),
        "{printed}"
    );
    let report = ingest(
        &mut client,
        &v2,
        |_| {
            vec![batch(
                json!(2),
                vec![row(
                    "t",
                    vec![
                        Value::Int(2),
                        text("a much longer name"),
                        text("x"),
                        Value::Null,
                        Value::Null,
                    ],
                )],
            )]
        },
        &Options::default(),
    )
    .await
    .expect("v2");
    assert!(report.migrations.len() >= 6, "{:?}", report.migrations);
    assert_eq!(oid(&client, "t").await, before, "migrated in place");
    let facts: Vec<(String, String, String)> = client
        .query("SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns WHERE table_name = 't' ORDER BY ordinal_position", &[])
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let names: Vec<&str> = facts.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["id", "name", "note", "added", "extra"]);
    assert_eq!(facts[1].2, "YES", "NOT NULL dropped");
    assert_eq!(facts[2].2, "NO", "NOT NULL set");
    assert_eq!(
        count(&client, "SELECT count(*) FROM t WHERE added = 7").await,
        1,
        "the default fills existing rows"
    );
    let again = pgbulk::plan::plan(&mut client, &v2).await.expect("plan");
    assert!(again.is_empty(), "{again}");

    let v3 = decl(
        "CREATE TABLE t (id int PRIMARY KEY, name bigint, note text NOT NULL, added int DEFAULT 7, extra text);",
    );
    let err = ingest(
        &mut client,
        &v3,
        |_| vec![batch(json!(3), vec![])],
        &Options::default(),
    )
    .await
    .expect_err("the rebuild cannot cast the names");
    assert_eq!(err.kind(), ErrorKind::Server);
    assert!(
        err.message()
            .contains("invalid input syntax for type bigint"),
        "{err}"
    );
    assert_eq!(
        oid(&client, "t").await,
        before,
        "a failed rebuild leaves the table as it was"
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbulk\\_new%'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn concurrent_ingests_into_one_table() {
    let db = TestDb::new("ingest_concurrent").await;
    let mut setup = db.connect().await;
    let d = decl("CREATE TABLE t (id int PRIMARY KEY, v int);");
    ingest(
        &mut setup,
        &d,
        |_| Vec::<Result<Batch>>::new(),
        &Options::default(),
    )
    .await
    .expect("create");
    let mut tasks = Vec::new();
    for worker in 0..2i64 {
        let mut client = db.connect().await;
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let batches: Vec<Result<Batch>> = (0..5)
                .map(|b| {
                    // Both workers write the same keys in opposite orders.
                    let mut rows: Vec<Row> = (0..2000)
                        .map(|k| row("t", vec![Value::Int(k), Value::Int(worker * 100 + b)]))
                        .collect();
                    if worker == 1 {
                        rows.reverse();
                    }
                    batch(json!(b), rows)
                })
                .collect();
            ingest(&mut client, &d, |_| batches, &Options::default()).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("no deadlock, no error");
    }
    assert_eq!(count(&setup, "SELECT count(*) FROM t").await, 2000);
}

/// Runs `SELECT count(*)` on `table` in a loop on its own session until
/// told to stop; returns the counts seen. Its `lock_timeout` makes any wait
/// longer than `max_wait_ms` an error, so the server itself checks that
/// readers never queue for long.
fn reader(
    db: &TestDb,
    table: &'static str,
    max_wait_ms: u64,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<Vec<i64>>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = db.url.clone();
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let client = pgbulk::connect::connect(&crate::harness::resolve(&url))
            .await
            .expect("reader")
            .client;
        client
            .batch_execute(&format!("SET lock_timeout = '{max_wait_ms}ms'"))
            .await
            .expect("lock_timeout");
        let mut seen = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .expect("a reader never waits longer than the lock timeout")
                .get(0);
            seen.push(n);
        }
        seen
    });
    (stop, handle)
}

#[tokio::test]
async fn rebuild_keeps_grants_views_owner_comments_and_keys() {
    let db = TestDb::new("ingest_rebuild").await;
    let mut client = db.connect().await;
    let role = |r: &str| format!("{r}_{}", db.name);
    let (r1, r2) = (role("r1"), role("r2"));
    client
        .batch_execute(&format!("CREATE ROLE {r1}; CREATE ROLE {r2}; CREATE SCHEMA sales; GRANT ALL ON SCHEMA sales TO {r2}"))
        .await
        .expect("roles");
    let v1 = decl(
        "CREATE TABLE sales.t (id int PRIMARY KEY, amount int, note text);\
         CREATE UNIQUE INDEX t_note_u ON sales.t (note);\
         COMMENT ON COLUMN sales.t.note IS 'declared';",
    );
    let rows = |from: i64, to: i64| -> Vec<Row> {
        (from..to)
            .map(|i| {
                row(
                    "sales.t",
                    vec![
                        Value::Int(i),
                        Value::Int(i * 10),
                        Value::Text(format!("n{i}")),
                    ],
                )
            })
            .collect()
    };
    ingest(
        &mut client,
        &v1,
        |_| vec![batch(json!(1), rows(0, 1000))],
        &Options::default(),
    )
    .await
    .expect("v1");
    client
        .batch_execute(&format!(
            "ALTER TABLE sales.t OWNER TO {r2}; \
             GRANT SELECT ON sales.t TO PUBLIC; GRANT UPDATE (amount) ON sales.t TO {r1}; \
             COMMENT ON TABLE sales.t IS 'live comment'; \
             CREATE VIEW sales.v AS SELECT id, amount FROM sales.t; \
             CREATE VIEW sales.v2 AS SELECT count(*) AS n FROM sales.v; \
             GRANT SELECT ON sales.v TO {r1}; ALTER VIEW sales.v OWNER TO {r2}; \
             CREATE MATERIALIZED VIEW sales.mv AS SELECT count(*) AS n FROM sales.t; \
             CREATE UNIQUE INDEX mv_n ON sales.mv (n); ALTER MATERIALIZED VIEW sales.mv OWNER TO {r2}; \
             CREATE TABLE sales.child (id int PRIMARY KEY, t_id int REFERENCES sales.t (id)); \
             INSERT INTO sales.child VALUES (1, 5); \
             CREATE FUNCTION sales.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; \
             CREATE TRIGGER t_touch BEFORE UPDATE ON sales.t FOR EACH ROW EXECUTE FUNCTION sales.touch(); \
             CREATE RULE t_keep AS ON DELETE TO sales.t WHERE old.id < 10 DO INSTEAD NOTHING; \
             CREATE TRIGGER t_off BEFORE INSERT ON sales.t FOR EACH ROW EXECUTE FUNCTION sales.touch(); \
             ALTER TABLE sales.t DISABLE TRIGGER t_off; \
             CREATE TRIGGER t_replica BEFORE INSERT ON sales.t FOR EACH ROW EXECUTE FUNCTION sales.touch(); \
             ALTER TABLE sales.t ENABLE REPLICA TRIGGER t_replica; \
             CREATE RULE t_off AS ON UPDATE TO sales.t DO INSTEAD NOTHING; \
             ALTER TABLE sales.t DISABLE RULE t_off;"
        ))
        .await
        .expect("live objects");
    let before = oid(&client, "sales.t").await;
    let v2 = decl(
        "CREATE TABLE sales.t (id int PRIMARY KEY, extra text DEFAULT 'x', amount bigint, note text);\
         CREATE UNIQUE INDEX t_note_u ON sales.t (note);\
         COMMENT ON COLUMN sales.t.note IS 'declared';",
    );
    let plan = pgbulk::plan::plan(&mut client, &v2).await.expect("plan");
    let printed = plan.to_string();
    assert!(
        printed.contains("rebuild")
            && printed.contains("column amount changes type from integer to bigint"),
        "{printed}"
    );

    let (stop, readers) = reader(&db, "sales.v", 4000);
    let report = ingest(
        &mut client,
        &v2,
        |_| {
            vec![batch(
                json!(2),
                (1000..1500)
                    .map(|i| {
                        row(
                            "sales.t",
                            vec![
                                Value::Int(i),
                                Value::Null,
                                Value::Int(i),
                                Value::Text(format!("n{i}")),
                            ],
                        )
                    })
                    .collect(),
            )]
        },
        &Options::default(),
    )
    .await
    .expect("rebuild");
    stop.store(true, Ordering::SeqCst);
    let seen = readers.await.expect("reader task");
    assert!(
        seen.iter().all(|n| *n == 1000 || *n == 1500),
        "all old or all new: {seen:?}"
    );
    assert!(
        report.migrations.iter().any(|m| m.contains("rebuilt")),
        "{:?}",
        report.migrations
    );
    assert_ne!(oid(&client, "sales.t").await, before);
    let check = |sql: String| {
        let client = &client;
        async move {
            client
                .query_one(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, bool>(0)
        }
    };
    assert!(check("SELECT count(*) = 1500 FROM sales.t".into()).await);
    assert!(
        check("SELECT count(*) = 1000 FROM sales.t WHERE extra = 'x' AND amount = id * 10".into())
            .await,
        "rows copied by name"
    );
    assert!(check("SELECT array_agg(attname::text ORDER BY attnum) = '{id,extra,amount,note}' FROM pg_attribute WHERE attrelid = 'sales.t'::regclass AND attnum > 0".into()).await);
    assert!(check("SELECT format_type(atttypid, atttypmod) = 'bigint' FROM pg_attribute WHERE attrelid = 'sales.t'::regclass AND attname = 'amount'".into()).await);
    assert!(check(format!("SELECT pg_get_userbyid(relowner) = '{r2}' FROM pg_class WHERE oid = 'sales.t'::regclass")).await, "owner kept");
    assert!(
        check("SELECT has_table_privilege('public', 'sales.t', 'SELECT')".into()).await,
        "PUBLIC grant kept"
    );
    assert!(
        check(format!(
            "SELECT has_column_privilege('{r1}', 'sales.t', 'amount', 'UPDATE')"
        ))
        .await,
        "column grant kept"
    );
    assert!(check("SELECT obj_description('sales.t'::regclass) = 'live comment'".into()).await);
    assert!(check("SELECT col_description('sales.t'::regclass, 4) = 'declared'".into()).await);
    assert!(
        check("SELECT n = 1500 FROM sales.v2".into()).await,
        "view chain recreated"
    );
    assert!(
        check(format!(
            "SELECT has_table_privilege('{r1}', 'sales.v', 'SELECT')"
        ))
        .await,
        "view grant kept"
    );
    assert!(check(format!("SELECT pg_get_userbyid(relowner) = '{r2}' FROM pg_class WHERE oid = 'sales.v'::regclass")).await);
    assert!(
        check("SELECT n = 1500 FROM sales.mv".into()).await,
        "materialized view recreated and filled"
    );
    assert!(
        check(
            "SELECT count(*) = 1 FROM pg_indexes WHERE schemaname = 'sales' AND indexname = 'mv_n'"
                .into()
        )
        .await
    );
    assert!(check("SELECT count(*) = 1 FROM pg_constraint WHERE conrelid = 'sales.child'::regclass AND contype = 'f' AND confrelid = 'sales.t'::regclass AND convalidated".into()).await, "foreign key re-pointed");
    assert!(check("SELECT count(*) = 1 FROM pg_trigger WHERE tgrelid = 'sales.t'::regclass AND tgname = 't_touch'".into()).await);
    assert!(
        check(
            "SELECT array_agg(tgname::text || '=' || tgenabled::text ORDER BY tgname) \
             = '{t_off=D,t_replica=R,t_touch=O}' FROM pg_trigger \
             WHERE tgrelid = 'sales.t'::regclass AND NOT tgisinternal"
                .into()
        )
        .await,
        "triggers kept, each enabled, disabled or replica-only as it was"
    );
    assert!(
        check(
            "SELECT array_agg(rulename::text || '=' || ev_enabled::text ORDER BY rulename) \
             = '{t_keep=O,t_off=D}' FROM pg_rewrite WHERE ev_class = 'sales.t'::regclass"
                .into()
        )
        .await,
        "rules kept, the disabled one disabled"
    );
    client
        .batch_execute("DELETE FROM sales.t WHERE id IN (1, 20)")
        .await
        .expect("delete");
    assert!(
        check("SELECT count(*) = 1499 AND count(*) FILTER (WHERE id = 1) = 1 FROM sales.t".into())
            .await,
        "rule kept: the row it guards stays, the other goes"
    );
    assert!(
        check(
            "SELECT indisunique FROM pg_index WHERE indexrelid = 'sales.t_note_u'::regclass".into()
        )
        .await,
        "unique stays unique"
    );
    assert!(check("SELECT count(*) = 1 FROM pg_constraint WHERE conrelid = 'sales.t'::regclass AND conname = 't_pkey'".into()).await);
    assert!(
        check("SELECT count(*) = 0 FROM pg_class WHERE relname LIKE 'pgbulk\\_new\\_%'".into())
            .await,
        "no leftovers"
    );
    // Declared again: untouched.
    let after = oid(&client, "sales.t").await;
    let report = ingest(
        &mut client,
        &v2,
        |_| vec![batch(json!(3), vec![])],
        &Options::default(),
    )
    .await
    .expect("again");
    assert!(report.migrations.is_empty(), "{:?}", report.migrations);
    assert_eq!(oid(&client, "sales.t").await, after);
}

#[tokio::test]
async fn replace_atomic_swaps_after_the_final_batch() {
    let db = TestDb::new("ingest_replace").await;
    let mut client = db.connect().await;
    let d = decl("CREATE TABLE t (id int PRIMARY KEY, v text);");
    let old: Vec<Row> = (0..100)
        .map(|i| row("t", vec![Value::Int(i), text("old")]))
        .collect();
    ingest(
        &mut client,
        &d,
        |_| vec![batch(json!("old"), old)],
        &Options::default(),
    )
    .await
    .expect("old");
    client
        .batch_execute("CREATE VIEW tv AS SELECT v, count(*) AS n FROM t GROUP BY v; GRANT SELECT ON t TO PUBLIC")
        .await
        .expect("view");
    let opts = Options {
        mode: Mode::ReplaceAtomic,
        ..Options::default()
    };
    ingest(&mut client, &d, |_| Vec::<Result<Batch>>::new(), &opts)
        .await
        .expect("zero batches");
    assert_eq!(
        count(&client, "SELECT count(*) FROM t").await,
        100,
        "zero batches change nothing"
    );

    struct SeeOld(tokio_postgres::Client);
    impl BeforeVisible for SeeOld {
        fn call<'a>(
            &'a self,
            _tx: &'a tokio_postgres::Transaction<'a>,
            _batch: &'a BatchInfo,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
            Box::pin(async move {
                let row = self
                    .0
                    .query_one("SELECT count(*), min(v) FROM t", &[])
                    .await
                    .expect("outside");
                assert_eq!(
                    (row.get::<_, i64>(0), row.get::<_, String>(1)),
                    (100, "old".to_owned()),
                    "readers see the old rows until the swap"
                );
                Ok(())
            })
        }
    }
    let (stop, readers) = reader(&db, "tv", 4000);
    let opts = Options {
        mode: Mode::ReplaceAtomic,
        before_visible: Some(Arc::new(SeeOld(db.connect().await))),
        ..Options::default()
    };
    let new = |from: i64, to: i64| -> Vec<Row> {
        (from..to)
            .map(|i| row("t", vec![Value::Int(i), text("new")]))
            .collect()
    };
    let report = ingest(
        &mut client,
        &d,
        |_| {
            vec![
                batch(json!("b1"), new(0, 30)),
                batch(json!("b2"), new(1000, 1030)),
            ]
        },
        &opts,
    )
    .await
    .expect("replace");
    stop.store(true, Ordering::SeqCst);
    let seen = readers.await.expect("reader");
    assert!(
        seen.iter().all(|n| *n == 1),
        "one group: all old or all new: {seen:?}"
    );
    assert_eq!(report.batches.len(), 2);
    assert_eq!(
        count(&client, "SELECT count(*) FROM t WHERE v = 'new'").await,
        60
    );
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 60);
    assert_eq!(
        count(&client, "SELECT n FROM tv").await,
        60,
        "the view follows the new table"
    );
    let public: bool = client
        .query_one("SELECT has_table_privilege('public', 't', 'SELECT')", &[])
        .await
        .expect("grant")
        .get(0);
    assert!(public);
    let hw: String = client
        .query_one("SELECT high_watermark::text FROM pgbulk_watermark", &[])
        .await
        .expect("hw")
        .get(0);
    assert_eq!(hw, "\"b2\"", "the watermark commits with the swap");
    // The new table is created in the first batch's transaction: its rows
    // go in frozen and its key is built after them, as compact as a
    // rebuilt one though they came in descending key order.
    let descending: Vec<Row> = (0..3000)
        .rev()
        .map(|i| row("t", vec![Value::Int(i), text("desc")]))
        .collect();
    let opts = Options {
        mode: Mode::ReplaceAtomic,
        ..Options::default()
    };
    ingest(
        &mut client,
        &d,
        |_| vec![batch(json!("b3"), descending)],
        &opts,
    )
    .await
    .expect("replace again");
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 3000);
    let key: String = client
        .query_one(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 't'::regclass AND indisprimary",
            &[],
        )
        .await
        .expect("key")
        .get(0);
    let size = format!("SELECT pg_relation_size('{key}')");
    let built = count(&client, &size).await;
    client
        .batch_execute(&format!("REINDEX INDEX {key}"))
        .await
        .expect("reindex");
    assert_eq!(built, count(&client, &size).await);
}

#[tokio::test]
async fn lock_policy_names_or_terminates_blockers() {
    use pgbulk::lock::LockPolicy;
    use std::time::Duration;
    let db = TestDb::new("ingest_lock").await;
    let mut client = db.connect().await;
    let v1 = decl("CREATE TABLE t (id int PRIMARY KEY);");
    ingest(
        &mut client,
        &v1,
        |_| vec![batch(json!(1), vec![])],
        &Options::default(),
    )
    .await
    .expect("v1");
    let blocker = db.connect().await;
    blocker
        .batch_execute("SET application_name = 'dashboard'; BEGIN; SELECT * FROM t")
        .await
        .expect("blocker holds ACCESS SHARE");
    let v2 = decl("CREATE TABLE t (id int PRIMARY KEY, added int);");
    let strict = Options {
        lock_policy: LockPolicy {
            lock_timeout: Duration::from_millis(100),
            total_wait: Duration::from_millis(600),
            terminate_blockers_after: None,
        },
        ..Options::default()
    };
    let err = ingest(&mut client, &v2, |_| vec![batch(json!(2), vec![])], &strict)
        .await
        .expect_err("blocked");
    assert!(err.message().contains("gave up after waiting"), "{err}");
    assert!(
        err.message().contains("(dashboard)"),
        "names the blocker: {err}"
    );
    let terminate = Options {
        lock_policy: LockPolicy {
            terminate_blockers_after: Some(Duration::from_millis(200)),
            total_wait: Duration::from_secs(30),
            ..strict.lock_policy.clone()
        },
        ..Options::default()
    };
    ingest(
        &mut client,
        &v2,
        |_| vec![batch(json!(3), vec![])],
        &terminate,
    )
    .await
    .expect("blocker terminated");
    assert!(
        blocker.simple_query("SELECT 1").await.is_err(),
        "the blocker's session was terminated"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'added'").await, 1);
}

#[tokio::test]
async fn the_builder_declares_what_the_ddl_declares() {
    use pgbulk::schema::builder::Table;
    let db = TestDb::new("ingest_builder").await;
    let mut client = db.connect().await;
    let written = decl(
        "CREATE TABLE \"Stock 🐘\" (pos integer NOT NULL, day date NOT NULL, stock integer DEFAULT 0, tags text[] UNIQUE, \
         PRIMARY KEY (pos, day), CHECK (stock >= 0));\
         CREATE INDEX stock_tags ON \"Stock 🐘\" USING gin (tags);\
         CREATE UNIQUE INDEX stock_pos ON \"Stock 🐘\" (pos, day) INCLUDE (stock) WHERE stock > 0;\
         COMMENT ON TABLE \"Stock 🐘\" IS 'per day';",
    );
    let built = Table::new(None, "Stock 🐘")
        .column("pos", "integer", |c| c.not_null())
        .column("day", "date", |c| c.not_null())
        .column("stock", "integer", |c| c.default("0"))
        .column("tags", "text[]", |c| c.unique())
        .primary_key(&["pos", "day"])
        .check("stock >= 0")
        .index("stock_tags", &["tags"], |i| i.using("gin"))
        .index("stock_pos", &["pos", "day"], |i| {
            i.unique().include(&["stock"]).r#where("stock > 0")
        })
        .comment("per day")
        .to_sql();
    let built = decl(&built);
    let a = written
        .resolve(&mut client, "public")
        .await
        .expect("written");
    let b = built.resolve(&mut client, "public").await.expect("built");
    let strip = |mut f: pgbulk::schema::TableFacts| {
        f.oid = 0;
        f
    };
    assert_eq!(strip(a[0].1.clone()), strip(b[0].1.clone()));
    ingest(
        &mut client,
        &written,
        |_| vec![batch(json!(1), vec![])],
        &Options::default(),
    )
    .await
    .expect("written");
    let report = ingest(
        &mut client,
        &built,
        |_| vec![batch(json!(2), vec![])],
        &Options::default(),
    )
    .await
    .expect("built");
    assert!(report.migrations.is_empty(), "{:?}", report.migrations);
}

#[tokio::test]
async fn types_without_an_encoder_and_a_local_time_zone_go_through_the_server() {
    let db = TestDb::new("ingest_other").await;
    let mut client = db.connect().await;
    client
        .batch_execute("SET TimeZone = 'Europe/Berlin'")
        .await
        .expect("zone");
    let d = decl(
        "CREATE TABLE o (id int PRIMARY KEY, r int4range, p point, x xml, at timestamptz, tags int4range[]);\
         CREATE TABLE plain (r int4range, at timestamptz);",
    );
    let rows = |v: &str| -> Vec<Row> {
        vec![
            row(
                "o",
                vec![
                    Value::Int(1),
                    text("[1,5)"),
                    text("(1,2)"),
                    Value::Text(format!("<a>{v}</a>")),
                    text("2024-06-01 12:00"),
                    text("{\"[1,2)\",\"[3,4)\"}"),
                ],
            ),
            row(
                "o",
                vec![
                    Value::Int(2),
                    text("empty"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            ),
            row("plain", vec![text("[2,3]"), text("2024-01-01 00:00")]),
        ]
    };
    let first = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(1), rows("one"))],
        &Options::default(),
    )
    .await
    .expect("first");
    assert_eq!(first.tables["public.o"].inserted, 2);
    assert_eq!(first.tables["public.plain"].inserted, 1);
    let again = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(2), rows("one"))],
        &Options::default(),
    )
    .await
    .expect("unchanged");
    let c = again.tables["public.o"];
    assert_eq!((c.inserted, c.updated, c.unchanged), (0, 0, 2), "{c:?}");
    let changed = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(3), rows("two"))],
        &Options::default(),
    )
    .await
    .expect("changed");
    assert_eq!(changed.tables["public.o"].updated, 1);
    let row = client
        .query_one(
            "SELECT r::text, p::text, x::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), tags::text FROM o WHERE id = 1",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "[1,5)");
    assert_eq!(row.get::<_, String>(1), "(1,2)");
    assert_eq!(row.get::<_, String>(2), "<a>two</a>");
    assert_eq!(
        row.get::<_, String>(3),
        "2024-06-01 10:00",
        "read in the session's zone (CEST)"
    );
    assert_eq!(row.get::<_, String>(4), "{\"[1,2)\",\"[3,4)\"}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM plain WHERE r = '[2,4)'").await,
        3,
        "appended by each run"
    );
}

/// While a long transaction keeps a migration from its lock, pgbulk's
/// attempts (the default policy) never make a new reader wait long: each
/// queues for at most its short `lock_timeout`. The reader's own
/// `lock_timeout` of 1 s makes a longer wait an error (the old policy's
/// 2 s attempts failed it); the longest wait seen is printed.
#[tokio::test]
async fn readers_never_queue_long_behind_lock_attempts() {
    let db = TestDb::new("ingest_reader_wait").await;
    let mut client = db.connect().await;
    let v1 = decl("CREATE TABLE t (id int PRIMARY KEY);");
    ingest(
        &mut client,
        &v1,
        |_| vec![batch(json!(1), vec![row("t", vec![Value::Int(1)])])],
        &Options::default(),
    )
    .await
    .expect("v1");
    let blocker = db.connect().await;
    blocker
        .batch_execute("BEGIN; SELECT * FROM t")
        .await
        .expect("blocker holds ACCESS SHARE");
    let (stop, readers) = reader(&db, "t", 1000);
    let url = db.url.clone();
    let migration = tokio::spawn(async move {
        let mut client = pgbulk::connect::connect(&crate::harness::resolve(&url))
            .await
            .expect("connect")
            .client;
        let v2 = decl("CREATE TABLE t (id int PRIMARY KEY, added int);");
        ingest(
            &mut client,
            &v2,
            |_| vec![batch(json!(2), vec![])],
            &Options::default(),
        )
        .await
    });
    // Several attempts come and go while the blocker holds on.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    blocker.batch_execute("COMMIT").await.expect("COMMIT");
    migration
        .await
        .expect("task")
        .expect("migrated once the blocker let go");
    stop.store(true, Ordering::SeqCst);
    let seen = readers.await.expect("the reader never waited 1 s");
    assert!(seen.len() > 3, "the reader kept reading: {}", seen.len());
    assert_eq!(count(&client, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'added'").await, 1);
}

/// The hook of a relayed session: a second client (tokio-postgres here,
/// psycopg in the Python tests) joins the batch's transaction through the
/// door, sees the batch's rows while other sessions do not, and writes a
/// row that commits with the batch; its COMMIT is answered by the relay.
struct Joining {
    url: String,
    seen: std::sync::Mutex<Vec<(i64, i64)>>,
}

impl pgbulk::ingest::SharedHook for Joining {
    fn call(&self, door: &std::path::Path, port: u16, _batch: &BatchInfo) -> Result<()> {
        let failed = |e: tokio_postgres::Error| pgbulk::Error::new(ErrorKind::Data, e.to_string());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (side, connection) = tokio_postgres::Config::new()
                .host_path(door)
                .port(port)
                .user("anyone")
                .dbname("anything")
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
            tokio::spawn(connection);
            let inside = count(&side, "SELECT count(*) FROM s.t").await;
            let other = pgbulk::connect::connect(&crate::harness::resolve(&self.url)).await?;
            let outside = count(&other.client, "SELECT count(*) FROM s.t").await;
            side.execute("INSERT INTO s.audit VALUES ($1)", &[&inside])
                .await
                .map_err(failed)?;
            side.batch_execute("COMMIT").await.map_err(failed)?;
            self.seen.lock().expect("seen").push((inside, outside));
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_hook_joins_each_batch_transaction_through_the_relay() {
    let db = TestDb::new("ingest_shared").await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE SCHEMA s; CREATE TABLE s.audit (n bigint); \
             CREATE TABLE s.t (id int PRIMARY KEY, v text)",
        )
        .await
        .expect("setup");
    let hook = Arc::new(Joining {
        url: db.url.clone(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let params = crate::harness::resolve(&db.url);
    let d = decl("CREATE TABLE s.t (id int PRIMARY KEY, v text);");
    let source = |_| {
        vec![
            batch(json!(1), vec![row("s.t", vec![Value::Int(1), text("a")])]),
            batch(
                json!(2),
                vec![
                    row("s.t", vec![Value::Int(2), text("b")]),
                    row("s.t", vec![Value::Int(3), text("c")]),
                ],
            ),
        ]
    };
    let report = pgbulk::ingest::ingest_at(
        &params,
        &d,
        source,
        &Options::default(),
        &pgbulk::load::Progress::default(),
        Some(hook.clone()),
    )
    .await
    .expect("ingest with a shared hook");
    assert_eq!(report.batches.len(), 2);
    assert_eq!(*hook.seen.lock().expect("seen"), vec![(1, 0), (3, 1)]);
    assert_eq!(
        count(&client, "SELECT sum(n)::bigint FROM s.audit").await,
        4
    );
    // The session is usable after the hooks: the watermark committed.
    assert_eq!(
        count(&client, "SELECT count(*) FROM s.pgbulk_watermark").await,
        1
    );
}

/// The rows of `table` as `(id, v)`, in key order.
async fn id_values(client: &tokio_postgres::Client, table: &str) -> Vec<(i32, String)> {
    client
        .query(&format!("SELECT id, v FROM {table} ORDER BY id"), &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn pairs(list: &[(i32, &str)]) -> Vec<(i32, String)> {
    list.iter().map(|&(i, v)| (i, v.to_owned())).collect()
}

/// A keyed table created in the first batch's transaction is filled by
/// COPY straight into it, its primary key built after: rows whose key a
/// later row repeats are removed first, so the last row of each key wins
/// and the counts say so, also when a value the server converts stages the
/// rest of the batch. A table with a constraint beside its key takes rows
/// straight in only until a key repeats: a row between the first and the
/// last of a key is not checked, as when the table is not new.
#[tokio::test]
async fn a_new_keyed_table_takes_rows_straight_in_and_keeps_the_last_row_per_key() {
    let db = TestDb::new("ingest_fresh_keyed").await;
    let mut client = db.connect().await;
    let options = Options {
        create_with_first_batch: true,
        ..Options::default()
    };
    let d = decl("CREATE TABLE s.k (id int PRIMARY KEY, v text NOT NULL);");
    let r = |id: i64, v: &str| row("s.k", vec![Value::Int(id), text(v)]);
    // Repeats far apart, and one key three times.
    let mut rows: Vec<Row> = (0..3000).map(|i| r(i, "first")).collect();
    rows.extend((0..3000).step_by(3).map(|i| r(i, "second")));
    rows.push(r(6, "third"));
    let report = ingest(&mut client, &d, |_| vec![batch(json!(1), rows)], &options)
        .await
        .expect("ingest");
    let c = report.tables["s.k"];
    assert_eq!(
        (c.inserted, c.updated, c.unchanged, c.repeated),
        (3000, 0, 0, 1001)
    );
    let got = id_values(&client, "s.k").await;
    assert_eq!(got.len(), 3000);
    for (id, v) in got {
        let want = match id {
            6 => "third",
            i if i % 3 == 0 => "second",
            _ => "first",
        };
        assert_eq!(v, want, "id {id}");
    }
    // A value the server converts (an interval the client leaves to it)
    // stages the rest of the batch: the rows before it went straight in,
    // their repeats removed; the staged rows update them.
    let d2 = decl("CREATE TABLE s.k2 (id int PRIMARY KEY, v text NOT NULL, d interval);");
    let r2 = |id: i64, v: &str, d: &str| row("s.k2", vec![Value::Int(id), text(v), text(d)]);
    let rows = vec![
        r2(1, "a", "1 day"),
        r2(2, "b", "1 day"),
        r2(1, "c", "1 day"),
        r2(3, "d", "1.5 days"),
        r2(2, "e", "2 days"),
        r2(4, "f", "1 day"),
    ];
    let report = ingest(&mut client, &d2, |_| vec![batch(json!(1), rows)], &options)
        .await
        .expect("ingest");
    let c = report.tables["s.k2"];
    assert_eq!(
        (c.inserted, c.updated, c.unchanged, c.repeated),
        (4, 0, 0, 2)
    );
    assert_eq!(
        id_values(&client, "s.k2").await,
        pairs(&[(1, "c"), (2, "e"), (3, "d"), (4, "f")])
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM s.k2 WHERE (id, d) IN ((3, '36 hours'), (2, '2 days'))"
        )
        .await,
        2
    );
    // A check that only a replaced row between the first and the last
    // fails.
    let d3 = decl("CREATE TABLE s.k3 (id int PRIMARY KEY, v text NOT NULL CHECK (v <> 'bad'));");
    let rows = vec![
        row("s.k3", vec![Value::Int(1), text("a")]),
        row("s.k3", vec![Value::Int(2), text("b")]),
        row("s.k3", vec![Value::Int(1), text("bad")]),
        row("s.k3", vec![Value::Int(1), text("good")]),
    ];
    let report = ingest(&mut client, &d3, |_| vec![batch(json!(1), rows)], &options)
        .await
        .expect("ingest");
    assert_eq!(report.tables["s.k3"].repeated, 2);
    assert_eq!(
        id_values(&client, "s.k3").await,
        pairs(&[(1, "good"), (2, "b")])
    );
    // Keys equal to the server but not byte for byte (numeric scale): the
    // later row wins, no unique violation.
    let d4 = decl("CREATE TABLE s.k4 (id numeric PRIMARY KEY, v text NOT NULL);");
    let rows = vec![
        row("s.k4", vec![text("1.0"), text("first")]),
        row("s.k4", vec![text("1.00"), text("second")]),
    ];
    let report = ingest(&mut client, &d4, |_| vec![batch(json!(1), rows)], &options)
        .await
        .expect("ingest numeric keys");
    assert_eq!(report.tables["s.k4"].repeated, 1);
    assert_eq!(
        count(&client, "SELECT count(*) FROM s.k4 WHERE v = 'second'").await,
        1
    );
    assert_eq!(count(&client, "SELECT count(*) FROM s.k4").await, 1);
}

/// A large batch whose sampled keys are all new is inserted without a
/// join; when a key the sample missed is in the table after all, the
/// insert is rolled back and the batch merged: the same rows and counts.
#[tokio::test]
async fn a_batch_of_new_keys_is_inserted_and_one_old_key_among_them_is_merged() {
    let db = TestDb::new("ingest_new_keys").await;
    let mut client = db.connect().await;
    let d = decl("CREATE TABLE s.n (id int PRIMARY KEY, v text NOT NULL);");
    ingest(&mut client, &d, |_| Vec::new(), &Options::default())
        .await
        .expect("create");
    client
        .batch_execute("INSERT INTO s.n SELECT i, 'old' FROM generate_series(0, 199999) i")
        .await
        .expect("fill");
    client
        .batch_execute("VACUUM ANALYZE s.n")
        .await
        .expect("vacuum");
    let rows = |ids: std::ops::Range<i64>, v: &str| -> Vec<Row> {
        ids.map(|i| row("s.n", vec![Value::Int(i), text(v)]))
            .collect()
    };
    let report = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(1), rows(200_000..400_000, "new"))],
        &Options::default(),
    )
    .await
    .expect("new keys");
    let c = report.tables["s.n"];
    assert_eq!((c.inserted, c.updated, c.unchanged), (200_000, 0, 0));
    // One key of the table among 200,000 new ones (a sample of about
    // 10,000 rows misses it mostly).
    let mut second = rows(400_000..600_000, "newer");
    second[150_000] = row("s.n", vec![Value::Int(7), text("changed")]);
    let report = ingest(
        &mut client,
        &d,
        |_| vec![batch(json!(2), second)],
        &Options::default(),
    )
    .await
    .expect("new keys and one old");
    let c = report.tables["s.n"];
    assert_eq!((c.inserted, c.updated, c.unchanged), (199_999, 1, 0));
    for (sql, want) in [
        ("SELECT count(*) FROM s.n", 599_999),
        ("SELECT count(*) FROM s.n WHERE v = 'old'", 199_999),
        ("SELECT count(*) FROM s.n WHERE v = 'new'", 200_000),
        ("SELECT count(*) FROM s.n WHERE v = 'newer'", 199_999),
        ("SELECT count(*) FROM s.n WHERE id = 7 AND v = 'changed'", 1),
    ] {
        assert_eq!(count(&client, sql).await, want, "{sql}");
    }
}

/// The indexes and constraints of a table, as the server describes them.
async fn index_catalog(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
             WHERE format('%I.%I', schemaname, tablename) = $1 \
             UNION ALL \
             SELECT 'constraint ' || conname || ' ' || contype::text || ': ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE conrelid = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A table created in the first batch's transaction gets its primary key
/// and plain indexes built after its rows are in: the same indexes and
/// constraints as the declaration creates on an empty table, each usable;
/// a key that repeats in an append fails the batch as a unique violation
/// naming the table, and leaves no table behind.
#[tokio::test]
async fn a_new_table_gets_its_indexes_after_its_rows() {
    let db = TestDb::new("ingest_fresh_indexes").await;
    let empty = TestDb::new("ingest_fresh_indexes_empty").await;
    let mut client = db.connect().await;
    let sql = "CREATE TABLE s.f (id int PRIMARY KEY, code text UNIQUE, v text NOT NULL, \
               CHECK (id >= 0)); \
               CREATE INDEX f_lower_v ON s.f (lower(v)) WHERE id > 10; \
               CREATE INDEX f_code_v ON s.f (code, v DESC);";
    let d = decl(sql);
    let options = Options {
        create_with_first_batch: true,
        ..Options::default()
    };
    let rows: Vec<Row> = (0..5000)
        .rev()
        .map(|i| {
            row(
                "s.f",
                vec![
                    Value::Int(i),
                    text(&format!("c{i}")),
                    text(&format!("V{}", i % 7)),
                ],
            )
        })
        .collect();
    let report = ingest(&mut client, &d, |_| vec![batch(json!(1), rows)], &options)
        .await
        .expect("ingest");
    assert_eq!(report.tables["s.f"].inserted, 5000);
    let mut other = empty.connect().await;
    ingest(&mut other, &d, |_| Vec::new(), &Options::default())
        .await
        .expect("create empty");
    let got = index_catalog(&client, "s.f").await;
    assert_eq!(got, index_catalog(&other, "s.f").await);
    // Two indexes, two constraints with indexes of their own, a check
    // (and from PostgreSQL 18 on, NOT NULL constraints).
    assert_eq!(
        got.iter().filter(|l| !l.contains(" n: NOT NULL")).count(),
        7,
        "{got:?}"
    );
    // The primary key was built in one pass over the rows (the rows came
    // in descending key order: inserted one by one, they would have left
    // its pages half full), and is as compact as a rebuilt one.
    let size = "SELECT pg_relation_size('s.f_pkey')";
    let built = count(&client, size).await;
    client
        .batch_execute("REINDEX INDEX s.f_pkey")
        .await
        .expect("reindex");
    assert_eq!(built, count(&client, size).await);
    // Each index answers for every row.
    client
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .await
        .expect("set");
    for (sql, want) in [
        ("SELECT count(*) FROM s.f WHERE id BETWEEN 100 AND 199", 100),
        ("SELECT count(*) FROM s.f WHERE code = 'c4242'", 1),
        (
            "SELECT count(*) FROM s.f WHERE lower(v) = 'v3' AND id > 10",
            (11..5000).filter(|i| i % 7 == 3).count() as i64,
        ),
    ] {
        assert_eq!(count(&client, sql).await, want, "{sql}");
    }
    // An append that repeats a key into a new table.
    let d2 = decl("CREATE TABLE s.g (id int PRIMARY KEY, v text);");
    let rows = vec![
        row("s.g", vec![Value::Int(1), text("a")]),
        row("s.g", vec![Value::Int(2), text("b")]),
        row("s.g", vec![Value::Int(1), text("c")]),
    ];
    let append = Options {
        upsert: pgbulk::ingest::Upsert::Append,
        ..options
    };
    let err = ingest(&mut client, &d2, |_| vec![batch(json!(1), rows)], &append)
        .await
        .expect_err("a repeated key");
    assert_eq!(err.kind(), ErrorKind::Data, "{err}");
    assert_eq!(
        err.server_kind(),
        Some(pgbulk::ServerErrorKind::UniqueViolation)
    );
    assert_eq!(err.table(), Some("s.g"), "{err}");
    let detail = err
        .db_error()
        .and_then(|db| db.detail())
        .unwrap_or_default();
    assert!(detail.contains("(id)=(1)"), "{err}: {detail}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM pg_class WHERE relname = 'g'").await,
        0
    );
}

/// A binary COPY stream handed to the engine as it is.
struct Stream {
    columns: Vec<String>,
    chunks: Vec<bytes::Bytes>,
}

impl pgbulk::ingest::BinaryRows for Stream {
    fn table(&self) -> &str {
        "s.b"
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_chunks(&mut self) -> pgbulk::ingest::NextChunks<'_> {
        let chunks = std::mem::take(&mut self.chunks);
        Box::pin(async move { Ok((!chunks.is_empty()).then_some(chunks)) })
    }
}

/// A tuple of binary COPY: an int4 and a text (or NULL), plus `extra`
/// fields.
fn binary_tuple(id: i32, v: Option<&str>, extra: usize) -> Vec<u8> {
    let mut out = ((2 + extra) as i16).to_be_bytes().to_vec();
    out.extend_from_slice(&4i32.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    match v {
        Some(v) => {
            out.extend_from_slice(&(v.len() as i32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    for _ in 0..extra {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }
    out
}

/// Binary rows go in as they are, split anywhere; a stream that is not
/// binary COPY of the table's columns fails naming the table and leaves
/// nothing (the new table is not created).
#[tokio::test]
async fn binary_rows_pass_through_and_a_malformed_stream_leaves_nothing() {
    let db = TestDb::new("ingest_binary").await;
    let mut client = db.connect().await;
    let d = decl("CREATE TABLE s.b (id int PRIMARY KEY, v text);");
    let options = Options {
        create_with_first_batch: true,
        ..Options::default()
    };
    let run = |chunks: Vec<Vec<u8>>| {
        let stream = Stream {
            columns: vec!["id".to_owned(), "v".to_owned()],
            chunks: chunks.into_iter().map(bytes::Bytes::from).collect(),
        };
        vec![Ok(Batch {
            high_watermark: BatchWatermark::Value(None),
            metadata: json!({}),
            rows: pgbulk::ingest::Rows::Binary(Box::new(stream)),
            resume: None,
        })]
    };
    let mut bad = pgbulk::codec::COPY_HEADER.to_vec();
    bad.extend(binary_tuple(1, Some("a"), 0));
    bad.extend(binary_tuple(2, Some("b"), 1));
    bad.extend_from_slice(&[0xff, 0xff]);
    let err = ingest(&mut client, &d, |_| run(vec![bad]), &options)
        .await
        .expect_err("a tuple of three fields");
    assert_eq!(err.kind(), ErrorKind::Data, "{err}");
    assert!(err.message().contains("3 fields where 2"), "{err}");
    assert_eq!(err.table(), Some("s.b"), "{err}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM pg_class WHERE relname = 'b'").await,
        0
    );
    let cut = {
        let mut all = pgbulk::codec::COPY_HEADER.to_vec();
        all.extend(binary_tuple(1, Some("a"), 0));
        all
    };
    let err = ingest(&mut client, &d, |_| run(vec![cut]), &options)
        .await
        .expect_err("no trailer");
    assert!(err.message().contains("before its trailer"), "{err}");
    let mut good = pgbulk::codec::COPY_HEADER.to_vec();
    for i in 0..1000 {
        good.extend(binary_tuple(i, (i % 3 != 0).then_some("väl"), 0));
    }
    good.extend_from_slice(&[0xff, 0xff]);
    let chunks: Vec<Vec<u8>> = good.chunks(7).map(<[u8]>::to_vec).collect();
    let report = ingest(&mut client, &d, |_| run(chunks), &options)
        .await
        .expect("binary rows");
    assert_eq!(report.tables["s.b"].inserted, 1000);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM s.b WHERE v IS NULL = (id % 3 = 0) AND coalesce(v, 'väl') = 'väl'"
        )
        .await,
        1000
    );
}

/// Ingests each of `batches` on its own (watermarks 1, 2, ...); the counts
/// of `table` each reported.
async fn ingest_each<const N: usize>(
    client: &mut tokio_postgres::Client,
    d: &Declaration,
    table: &str,
    batches: [Vec<Row>; N],
) -> Vec<pgbulk::ingest::Counts> {
    let mut counts = Vec::new();
    for (hw, rows) in (1..).zip(batches) {
        let report = ingest(
            client,
            d,
            |_| vec![batch(json!(hw), rows)],
            &Options::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("batch {hw}: {e}"));
        counts.push(report.tables[table]);
    }
    counts
}

/// Each merge reads the table only between the staged keys' smallest and
/// largest values: keys equal under the column's type but written
/// differently (`1.00` and `1.0`, `-0` and `0`, padded `char`, another
/// time zone) still match, and a column under a collation other than its
/// type's is not restricted by a range computed under the default.
#[tokio::test]
async fn a_merge_matches_equal_keys_written_differently() {
    let db = TestDb::new("ingest_key_range").await;
    let mut client = db.connect().await;
    let d = decl(
        "CREATE TABLE r.k (n numeric, f float8, c char(4), t text COLLATE \"und-x-icu\", d text, \
         ts timestamptz, v int, PRIMARY KEY (n, f, c, t, d, ts));",
    );
    let r = |n: &str, f: &str, c: &str, t: &str, d: &str, ts: &str, v: i64| {
        row(
            "r.k",
            vec![
                text(n),
                text(f),
                text(c),
                text(t),
                text(d),
                text(ts),
                Value::Int(v),
            ],
        )
    };
    // Pages more than the next batch's stage, so it is merged by a join
    // (a stage as large as the table is not restricted), and fewer than 20
    // times as many (it would probe the key's index instead).
    let mut first: Vec<Row> = (100..400)
        .map(|n| {
            r(
                &n.to_string(),
                "0",
                "ff",
                "F",
                "f",
                "2022-01-01 00:00+00",
                0,
            )
        })
        .collect();
    first.extend([
        r("1.0", "0", "ab", "B", "x", "2020-01-01 00:00+00", 1),
        r("2.5", "1.5", "cd", "a", "y", "2020-06-01 00:00+00", 2),
        r("9", "9", "zz", "Z", "z", "2021-01-01 00:00+00", 3),
    ]);
    let second = vec![
        r("1.00", "-0", "ab  ", "B", "x", "2020-01-01 01:00+01", 10),
        r("2.50", "1.50", "cd", "a", "y", "2020-06-01 02:00+02", 20),
        r("0.5", "0", "ab", "A", "w", "2019-01-01 00:00+00", 30),
    ];
    let counts = ingest_each(&mut client, &d, "r.k", [first, second]).await;
    assert_eq!(counts[0].inserted, 303);
    let c = counts[1];
    assert_eq!((c.inserted, c.updated, c.unchanged), (1, 2, 0), "{c:?}");
    let rows: Vec<(String, i32)> = client
        .query("SELECT n::text, v FROM r.k WHERE n < 100 ORDER BY n", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [("0.5", 30), ("1.0", 10), ("2.5", 20), ("9", 3)];
    let expected: Vec<(String, i32)> = expected
        .iter()
        .map(|(n, v)| ((*n).to_owned(), *v))
        .collect();
    assert_eq!(rows, expected);
}

/// Loads 300,000 rows into `o.t` (keys 1 to 300,000, in key order or
/// `scrambled`), then upserts 10,000 of them spread over the table, staged
/// out of key order (in the table's storage order when it is scrambled);
/// the number of updated rows stored after a row with a higher key.
async fn descents_after_an_upsert(name: &str, scrambled: bool) -> i64 {
    let db = TestDb::new(name).await;
    let mut client = db.connect().await;
    let d = decl("CREATE TABLE o.t (id int PRIMARY KEY, v int NOT NULL);");
    let r = |id: i64, v: i64| row("o.t", vec![Value::Int(id), Value::Int(v)]);
    // Distinct keys all over the table (123,457 is prime to 300,000), 41%
    // of them lower than the key before.
    let spread = |i: i64| i * 123_457 % 300_000 + 1;
    let first: Vec<Row> = (0..300_000)
        .map(|i| r(if scrambled { spread(i) } else { i + 1 }, 0))
        .collect();
    // The table has more than 20 times the second batch's pages, so that
    // batch is merged by probing the key's index, row by row in the
    // order it comes from the stage.
    let second: Vec<Row> = (0..10_000).map(|i| r(spread(i * 30), 1)).collect();
    let counts = ingest_each(&mut client, &d, "o.t", [first, second]).await;
    let c = counts[1];
    assert_eq!(
        (c.inserted, c.updated, c.unchanged),
        (0, 10_000, 0),
        "{c:?}"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM o.t WHERE v = 1").await,
        10_000
    );
    count(
        &client,
        "SELECT count(*) FROM (SELECT id < lag(id) OVER (ORDER BY ctid) AS down \
         FROM o.t WHERE v = 1) s WHERE down",
    )
    .await
}

/// Rows staged out of key order, into a table stored in key order, are
/// merged in key order: the updated rows' new versions then follow the key
/// through the table (and its index) instead of lying all over it.
#[tokio::test]
async fn rows_staged_out_of_key_order_are_merged_in_key_order() {
    // Merged in the staged order, 41% would be lower than the one before
    // (a test run without the sort: 3,456 of 10,000).
    let descents = descents_after_an_upsert("ingest_key_order", false).await;
    assert!(
        descents < 100,
        "{descents} of 10,000 updated rows out of key order"
    );
}

/// Into a table not stored in key order (keyed by random values, say),
/// rows staged in its storage order are merged as staged: they then
/// update its pages in order, where key order would visit them at random.
#[tokio::test]
async fn rows_staged_in_storage_order_are_merged_as_staged() {
    // Merged in key order, fewer than 100 would be.
    let descents = descents_after_an_upsert("ingest_storage_order", true).await;
    assert!(
        descents > 3_000,
        "{descents} of 10,000 updated rows out of key order: merged in key order"
    );
}
