//! `pgbulk export --to bigquery://...` against a BigQuery emulator
//! (PyPI's `bqemulator`, started by the harness): created, merged,
//! incremental, matched by name, refused.

use crate::cli_load::s;
use crate::harness::{Run, Scratch, TestDb, bigquery, pgbulk, run};

fn export(home: &Scratch, src: &TestDb, dataset: &str, args: &[&str]) -> Run {
    run(pgbulk(home)
        .args(["export", "--from", &src.url, "--to"])
        .arg(format!("bigquery://pgbulk-test/{dataset}"))
        .args(["--bigquery-endpoint", &bigquery().url])
        .args(args))
}

#[tokio::test]
async fn a_table_is_created_filled_then_merged_incrementally() {
    let src = TestDb::new("export_bq").await;
    let home = Scratch::new("export-bq");
    let client = src.connect().await;
    client
        .batch_execute(
            "CREATE TABLE acc (id int PRIMARY KEY, name text, amount numeric(38,9), u uuid, d date,
                 stamp timestamptz NOT NULL DEFAULT now(), tags text[]);
             INSERT INTO acc VALUES
              (1, 'ann', 99999999999999999999999999999.999999999, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
               '2024-02-29', '2024-05-01 12:00:00.123456+00', '{x,y}'),
              (2, 'bob', -0.000000001, NULL, 'infinity', '2024-05-01 12:00:01+00', '{}'),
              (3, NULL, NULL, NULL, '0044-03-15 BC', '2024-05-01 12:00:02+00', NULL);",
        )
        .await
        .expect("source");
    bigquery().dataset("ds_first");
    let inc = ["-t", "acc", "--incremental", "stamp"];
    let dry = export(
        &home,
        &src,
        "ds_first",
        &[&inc[..], &["--dry-run"]].concat(),
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("`pgbulk-test.ds_first.acc` does not exist: it would be created"),
        "{}",
        dry.stdout
    );
    let first = export(&home, &src, "ds_first", &inc);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first
            .stdout
            .contains("public.acc: 3 rows read, merged into acc"),
        "{}",
        first.stdout
    );
    assert!(
        first
            .stderr
            .contains("created `pgbulk-test.ds_first.acc` (key id)"),
        "{}",
        first.stderr
    );
    let rows = || {
        bigquery().query(
            "SELECT id, name, CAST(amount AS STRING), u, CAST(d AS STRING), ARRAY_LENGTH(tags) \
             FROM ds_first.acc ORDER BY id",
        )
    };
    assert_eq!(
        rows(),
        vec![
            vec![
                s("1"),
                s("ann"),
                s("99999999999999999999999999999.999999999"),
                s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                s("2024-02-29"),
                s("2")
            ],
            vec![
                s("2"),
                s("bob"),
                s("-0.000000001"),
                None,
                s("9999-12-31"),
                s("0")
            ],
            vec![s("3"), None, None, None, s("0001-01-01"), None],
        ]
    );
    // An update and an insert: the next run merges exactly them.
    client
        .batch_execute(
            "UPDATE acc SET name = 'ann 2', stamp = now() WHERE id = 1;
             INSERT INTO acc (id, name) VALUES (4, 'dan');",
        )
        .await
        .expect("changes");
    let second = export(&home, &src, "ds_first", &inc);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(
        second
            .stdout
            .contains("public.acc: 2 rows read, merged into acc: 2 inserted or updated"),
        "{}",
        second.stdout
    );
    let names = bigquery().query("SELECT id, name FROM ds_first.acc ORDER BY id");
    assert_eq!(
        names,
        vec![
            vec![s("1"), s("ann 2")],
            vec![s("2"), s("bob")],
            vec![s("3"), None],
            vec![s("4"), s("dan")],
        ]
    );
    // Nothing new: nothing read, nothing merged.
    let third = export(&home, &src, "ds_first", &inc);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert!(
        third.stdout.contains("public.acc: nothing new"),
        "{}",
        third.stdout
    );
    // `pgbulk status` of a pipeline exporting there: each table's
    // destination and stored watermark, read from the dataset.
    let pipeline = home.file(
        "pipeline.toml",
        &format!(
            "[[export]]\nname = \"bq\"\nfrom = \"{}\"\ntable = [\"acc\", \"later\"]\n\
             to = \"bigquery://pgbulk-test/ds_first\"\nbigquery_endpoint = \"{}\"\nincremental = \"stamp\"\n",
            src.url,
            bigquery().url
        ),
        0o600,
    );
    let status = run(pgbulk(&home).arg("status").arg(&pipeline));
    assert_eq!(status.code, 0, "{}", status.stderr);
    for expected in [
        "bq (export of acc to bigquery://pgbulk-test/ds_first/acc)\n  table:     `pgbulk-test.ds_first.acc`\n  \
         watermark: the next export reads public.acc.stamp ",
        "bq (export of later to bigquery://pgbulk-test/ds_first/later)\n  \
         table:     `pgbulk-test.ds_first.later` does not exist yet\n",
    ] {
        assert!(
            status.stdout.contains(expected),
            "{expected}\n{}",
            status.stdout
        );
    }
    // The state remembers the run's --where: a run with another says what
    // it does not read; the next with the same says nothing.
    let filtered = [&inc[..], &["--where", "id > 1"]].concat();
    let note = "the watermark was stored by an export without --where; rows this --where selects that \
                are older than the watermark are not read: an export without --incremental reads them once";
    let changed = export(&home, &src, "ds_first", &filtered);
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    assert!(changed.stderr.contains(note), "{}", changed.stderr);
    let same = export(&home, &src, "ds_first", &filtered);
    assert!(
        !same.stderr.contains("watermark was stored"),
        "{}",
        same.stderr
    );
    // A watermark goes with its table: once it is dropped, the next run
    // reads everything.
    let (status, _) = bigquery().call(
        "DELETE",
        "/bigquery/v2/projects/pgbulk-test/datasets/ds_first/tables/acc",
        None,
    );
    assert!(status < 300, "{status}");
    let dropped = export(&home, &src, "ds_first", &inc);
    assert_eq!(dropped.code, 0, "{}\n{}", dropped.stdout, dropped.stderr);
    assert!(
        dropped.stderr.contains(
            "`pgbulk-test.ds_first.acc` did not exist, though an earlier export stored a watermark for it: read from the start"
        ),
        "{}",
        dropped.stderr
    );
    assert_eq!(
        bigquery().query("SELECT id FROM ds_first.acc ORDER BY id"),
        vec![vec![s("1")], vec![s("2")], vec![s("3")], vec![s("4")]]
    );
    // The rows of a query, merged on the key named.
    let query = export(
        &home,
        &src,
        "ds_first",
        &[
            "--query",
            "SELECT id, upper(name) AS name FROM acc WHERE id < 3",
            "--to-table",
            "acc_names",
            "--key",
            "id",
        ],
    );
    assert_eq!(query.code, 0, "{}\n{}", query.stdout, query.stderr);
    assert_eq!(
        bigquery().query("SELECT id, name FROM ds_first.acc_names ORDER BY id"),
        vec![vec![s("1"), s("ANN 2")], vec![s("2"), s("BOB")]]
    );
    // No staging table is left behind.
    let (_, tables) = bigquery().call(
        "GET",
        "/bigquery/v2/projects/pgbulk-test/datasets/ds_first/tables",
        None,
    );
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["tableReference"]["tableId"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names.iter().all(|n| !n.starts_with("_pgbulk_stage")),
        "{names:?}"
    );
}

#[tokio::test]
async fn an_existing_table_is_matched_by_name_and_a_mismatch_writes_nothing() {
    let src = TestDb::new("export_bq_match").await;
    let home = Scratch::new("export-bq-match");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, qty int, name text);
             INSERT INTO items VALUES (1, 7, 'one'), (2, NULL, 'two');
             CREATE TABLE wrong (id int PRIMARY KEY, name text, gone text);
             INSERT INTO wrong VALUES (1, 'x', 'y');
             CREATE TABLE holes (id int PRIMARY KEY, tags int[]);
             INSERT INTO holes VALUES (1, '{1,NULL,3}');",
        )
        .await
        .expect("source");
    let bq = bigquery();
    bq.dataset("ds_match");
    let table = |name: &str, fields: serde_json::Value| {
        let (status, answer) = bq.call(
            "POST",
            "/bigquery/v2/projects/pgbulk-test/datasets/ds_match/tables",
            Some(serde_json::json!({
                "tableReference": { "projectId": "pgbulk-test", "datasetId": "ds_match", "tableId": name },
                "schema": { "fields": fields },
            })),
        );
        assert_eq!(status, 200, "{answer}");
    };
    // Columns in another order, qty as NUMERIC, and one the source lacks.
    table(
        "items",
        serde_json::json!([
            { "name": "name", "type": "STRING" },
            { "name": "qty", "type": "NUMERIC" },
            { "name": "extra", "type": "STRING" },
            { "name": "id", "type": "INT64" },
        ]),
    );
    table(
        "wrong",
        serde_json::json!([{ "name": "id", "type": "INT64" }, { "name": "name", "type": "STRING" }]),
    );
    bq.query("INSERT INTO ds_match.wrong (id, name) VALUES (9, 'kept')");
    let out = export(
        &home,
        &src,
        "ds_match",
        &["-t", "items", "-t", "wrong", "-t", "holes"],
    );
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("public.items: 2 rows read, merged into items"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "public.wrong: failed: public.wrong does not fit `pgbulk-test.ds_match.wrong`; nothing was loaded:"
        ) && out.stdout.contains("column \"gone\" (text) is not in the destination"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "public.holes: failed: public.holes, row 1 (id = 1), column \"tags\": element 2 of the array is NULL, which BigQuery's arrays cannot hold (--array-nulls drop leaves them out)"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("2 of 3 tables failed (public.wrong, public.holes)"),
        "{}",
        out.stderr
    );
    // Dropped, the array keeps its other elements.
    let dropped = export(
        &home,
        &src,
        "ds_match",
        &["-t", "holes", "--array-nulls", "drop"],
    );
    assert_eq!(dropped.code, 0, "{}\n{}", dropped.stdout, dropped.stderr);
    assert_eq!(
        bq.query("SELECT ARRAY_LENGTH(tags) FROM ds_match.holes"),
        vec![vec![s("2")]]
    );
    assert_eq!(
        bq.query("SELECT id, CAST(CAST(qty AS INT64) AS STRING), name, extra FROM ds_match.items ORDER BY id"),
        vec![
            vec![s("1"), s("7"), s("one"), None],
            vec![s("2"), None, s("two"), None],
        ]
    );
    assert_eq!(
        bq.query("SELECT id, name FROM ds_match.wrong"),
        vec![vec![s("9"), s("kept")]]
    );
}
