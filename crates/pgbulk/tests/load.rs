//! `load::load` called as a library: what a caller (Python, a pipeline)
//! gets back when a row is bad is data, not only a message.

use std::sync::Arc;

use pgbulk::ErrorKind;
use pgbulk::input::Source;
use pgbulk::load::{LoadOptions, Progress, load};
use pgbulk::schema::TableName;

use crate::harness::{Scratch, TestDb, resolve};

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
        async move {
            let client = pgbulk::connect::connect(&params)
                .await
                .expect("connect")
                .client;
            load(client, &params, &o, Arc::new(Progress::default())).await
        }
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
