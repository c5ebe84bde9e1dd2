//! `arrow::partitioned`: partitions staged once whatever the attempts,
//! merged in one transaction, a commit missing a partition writing nothing.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use pgbulk::arrow::Batches;
use pgbulk::arrow::partitioned::{self, stage_name};
use pgbulk::ingest::OnDuplicate;
use pgbulk::load::{LoadOptions, Progress};
use pgbulk::schema::TableName;

use crate::harness::{TestDb, resolve};

pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]))
}

fn rows(keys: &[i64], values: &[&str]) -> Batches {
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(StringArray::from(values.to_vec())),
        ],
    )
    .expect("batch");
    Box::new(std::iter::once(Ok(batch)))
}

/// An upsert into `kv` on `k`.
fn upsert_kv() -> LoadOptions {
    LoadOptions {
        table: TableName::parse("kv").expect("name"),
        key: Some(vec!["k".to_owned()]),
        ..LoadOptions::default()
    }
}

#[tokio::test]
async fn partitions_are_staged_once_and_merged_at_once() {
    let db = TestDb::new("partitioned").await;
    let params = resolve(&db.url);
    let client = db.connect().await;
    let opts = upsert_kv();
    let progress = || Arc::new(Progress::default());
    let begun = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
        .await
        .expect("begin");
    assert!(
        begun
            .created_ddl
            .as_deref()
            .is_some_and(|d| d.contains("PRIMARY KEY (\"k\")")),
        "{:?}",
        begun.created_ddl
    );
    let write = begun.write;
    let stage = |p: u32, keys: &'static [i64], values: &'static [&'static str]| {
        let (params, opts, write) = (params.clone(), opts.clone(), write.clone());
        async move {
            partitioned::stage(
                &params,
                &write,
                p,
                schema(),
                rows(keys, values),
                &opts,
                progress(),
            )
            .await
            .expect("stage")
        }
    };
    let first = stage(0, &[1, 2], &["a", "b"]).await;
    assert_eq!((first.rows, first.reused), (2, false));
    // Another attempt of partition 0 (a retry, a speculative copy): the
    // complete stage is kept, its rows not read.
    let again = stage(0, &[9], &["z"]).await;
    assert_eq!((again.rows, again.reused), (2, true));
    // Partition 1 repeats key 2: the later partition's row wins.
    stage(1, &[2, 3], &["B", "c"]).await;

    let commit = |partitions: &'static [u32]| {
        let (params, opts, write) = (params.clone(), opts.clone(), write.clone());
        async move {
            partitioned::commit(&params, &write, partitions, schema(), &opts, progress()).await
        }
    };
    let err = commit(&[0, 1, 2])
        .await
        .expect_err("partition 2 is missing");
    assert!(err.message().contains("partition 2"), "{}", err.message());
    let count: i64 = client
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0, "a failed commit writes nothing");

    // An attempt killed after creating its stage left it incomplete: the
    // next attempt writes it anew.
    let killed = stage_name(&TableName::parse("public.kv").expect("name"), &write, 2);
    client
        .batch_execute(&format!(
            "CREATE UNLOGGED TABLE {t} AS SELECT * FROM kv WITH NO DATA; INSERT INTO {t} VALUES (66, 'junk')",
            t = killed.quoted()
        ))
        .await
        .expect("incomplete stage");
    let retried = stage(2, &[4], &["d"]).await;
    assert_eq!((retried.rows, retried.reused), (1, false));

    let report = commit(&[0, 1, 2]).await.expect("commit");
    assert_eq!((report.inserted, report.repeated), (4, 1));
    let got = kv_rows(&client).await;
    let want: Vec<(i64, String)> = [(1, "a"), (2, "B"), (3, "c"), (4, "d")]
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    assert_eq!(got, want);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbulk\\_stage\\_%'",
            &[],
        )
        .await
        .expect("stages")
        .get(0);
    assert_eq!(left, 0, "the commit drops its stages");
}

/// An overwrite (replace-atomic) fills a new table in the commit's
/// transaction: its key is built once the rows are in, and it is swapped
/// in whole. Before PostgreSQL 15 (`ON CONFLICT` needs the key)
/// the key is kept while the rows go in.
#[tokio::test]
async fn an_overwrite_builds_the_new_tables_key_after_its_rows() {
    let db = TestDb::new("partitioned_overwrite").await;
    let params = resolve(&db.url);
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE kv (k bigint PRIMARY KEY, v text); INSERT INTO kv VALUES (-1, 'old')",
        )
        .await
        .expect("table");
    let opts = LoadOptions {
        table: TableName::parse("kv").expect("name"),
        mode: Some(pgbulk::load::LoadMode::ReplaceAtomic),
        ..LoadOptions::default()
    };
    let begun = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
        .await
        .expect("begin");
    for (p, range) in [(0u32, 2500..5000i64), (1, 0..2500)] {
        stage_range(&params, &begun.write, &opts, p, range, "v").await;
    }
    // Commits partitions 0 and 1 of a write.
    let commit = |write: partitioned::WriteId| {
        let (params, opts) = (params.clone(), opts.clone());
        async move { commit_parts(&params, &write, &[0, 1], &opts).await }
    };
    commit(begun.write).await.expect("commit");
    assert_eq!(
        one(&client, "SELECT count(*) FROM kv WHERE v = 'v' || k").await,
        5000
    );
    assert_eq!(one(&client, "SELECT count(*) FROM kv").await, 5000);
    let key: String = client
        .query_one(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'kv'::regclass AND indisprimary",
            &[],
        )
        .await
        .expect("key")
        .get(0);
    // Built once the rows were in, the key's statistics count them (an
    // index filled row by row has none until VACUUM or ANALYZE).
    let counted = one(
        &client,
        &format!("SELECT reltuples::bigint FROM pg_class WHERE oid = '{key}'::regclass"),
    )
    .await;
    let version = one(
        &client,
        "SELECT current_setting('server_version_num')::bigint",
    )
    .await;
    if version >= 150_000 {
        assert_eq!(counted, 5000);
    }

    // A key repeated across partitions: the later partition's row wins.
    let begun = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
        .await
        .expect("begin");
    stage_parts(
        &params,
        &begun.write,
        &opts,
        &[(0, &[1, 2], &["a", "b"]), (1, &[2, 3], &["B", "c"])],
    )
    .await;
    let report = commit(begun.write)
        .await
        .expect("commit with a repeated key");
    assert_eq!((report.inserted, report.repeated), (3, 1));
    let got = kv_rows(&client).await;
    assert_eq!(
        got,
        vec![
            (1, "a".to_owned()),
            (2, "B".to_owned()),
            (3, "c".to_owned())
        ]
    );
}

/// Keys repeated across partitions and within one, into a table holding
/// rows (so the stages are gathered, not copied into a new table): the
/// last row in partition order, then arrival order, wins; or the first;
/// or the commit fails naming a key and writes nothing.
#[tokio::test]
async fn keys_repeated_across_partitions_keep_the_last_or_the_first_or_fail() {
    let db = TestDb::new("partitioned_repeats").await;
    let params = resolve(&db.url);
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE kv (k bigint PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'old'), (9, 'kept')")
        .await
        .expect("table");
    // Partition 0: keys 1, 2, 1; partition 1: 2, 3, 1; partition 2: 3.
    let parts: [(u32, &[i64], &[&str]); 3] = [
        (0, &[1, 2, 1], &["p0a", "p0b", "p0c"]),
        (1, &[2, 3, 1], &["p1a", "p1b", "p1c"]),
        (2, &[3], &["p2a"]),
    ];
    let write = |on_duplicate| {
        let params = params.clone();
        async move {
            let opts = LoadOptions {
                on_duplicate,
                ..upsert_kv()
            };
            let begun = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
                .await
                .expect("begin");
            stage_parts(&params, &begun.write, &opts, &parts).await;
            let committed = commit_parts(&params, &begun.write, &[0, 1, 2], &opts).await;
            if committed.is_err() {
                // As Spark does after a failed commit.
                let dropped = partitioned::abort(&params, &begun.write, &opts)
                    .await
                    .expect("abort");
                assert_eq!(
                    dropped, 3,
                    "the failed commit's stages are kept for the abort"
                );
            }
            committed
        }
    };
    let expect = |rows: &[(i64, &str)]| -> Vec<(i64, String)> {
        rows.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    };

    let err = write(OnDuplicate::Error)
        .await
        .expect_err("repeated keys with on_duplicate error");
    assert!(
        err.message().contains("4 staged rows repeat the key")
            && (err.message().contains("= (1)")
                || err.message().contains("= (2)")
                || err.message().contains("= (3)")),
        "{}",
        err.message()
    );
    assert_eq!(kv_rows(&client).await, expect(&[(1, "old"), (9, "kept")]));

    let report = write(OnDuplicate::First).await.expect("first");
    assert_eq!(
        (report.inserted, report.updated, report.repeated),
        (2, 1, 4)
    );
    assert_eq!(
        kv_rows(&client).await,
        expect(&[(1, "p0a"), (2, "p0b"), (3, "p1b"), (9, "kept")])
    );

    let report = write(OnDuplicate::Last).await.expect("last");
    assert_eq!(
        (report.inserted, report.updated, report.repeated),
        (0, 3, 4)
    );
    assert_eq!(
        kv_rows(&client).await,
        expect(&[(1, "p1c"), (2, "p1a"), (3, "p2a"), (9, "kept")])
    );
    let left = one(
        &client,
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbulk\\_stage\\_%'",
    )
    .await;
    assert_eq!(left, 0, "the stages are dropped");
}

/// Partitions that change most rows of a table holding rows rewrite it
/// (PostgreSQL 15 and later): a new copy with the staged rows laid over
/// the old ones, indexed, swapped in with its view, grant and comment.
/// Unchanged rows and new keys merge into the table itself; so do changed
/// rows while a reader holds the table past the swap's wait. Keys in two
/// partitions are gathered one per key first, the later partition's row
/// kept.
#[tokio::test]
async fn partitions_changing_most_rows_rewrite_the_table() {
    let db = TestDb::new("partitioned_rewrite").await;
    let params = resolve(&db.url);
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "{KV_WITH_USERS};
             CREATE INDEX kv_v ON kv (v);
             INSERT INTO kv SELECT k, 'old' || k FROM generate_series(0, 149999) k;
             ANALYZE kv"
        ))
        .await
        .expect("table");
    let rewrites = one(
        &client,
        "SELECT (current_setting('server_version_num')::int >= 150000)::int::int8",
    )
    .await
        == 1;
    let opts = upsert_kv();
    // Partitions 0 and 1 of a write: `ranges` of keys, values
    // `<prefix><k>` of each its prefix.
    let write = |ranges: [std::ops::Range<i64>; 2], prefixes: [&'static str; 2]| {
        let (params, opts) = (params.clone(), opts.clone());
        async move {
            let begun = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
                .await
                .expect("begin");
            for ((p, range), prefix) in (0u32..).zip(ranges).zip(prefixes) {
                stage_range(&params, &begun.write, &opts, p, range, prefix).await;
            }
            commit_parts(&params, &begun.write, &[0, 1], &opts)
                .await
                .expect("commit")
        }
    };
    let oid = || one(&client, "SELECT 'kv'::regclass::oid::int8");

    // Every row changed and 10,000 new: rewritten.
    let before = oid().await;
    let report = write([0..80_000, 80_000..160_000], ["v", "v"]).await;
    assert_eq!(
        (
            report.inserted,
            report.updated,
            report.unchanged,
            report.repeated
        ),
        (10_000, 150_000, 0, 0)
    );
    assert_eq!(
        report.migrations,
        if rewrites {
            vec!["public.kv: most of its rows changed: rewritten as a new copy and swapped in"]
        } else {
            Vec::new()
        }
    );
    if rewrites {
        assert_swapped_in(&client, before, 160_000).await;
        assert_eq!(
            one(
                &client,
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'kv_v'"
            )
            .await,
            1,
            "the other index is built on the copy"
        );
    } else {
        assert_eq!(oid().await, before, "merged before PostgreSQL 15");
    }
    assert_eq!(
        one(&client, "SELECT count(*) FROM kv_view WHERE v = 'v' || k").await,
        160_000
    );

    // Nothing changed: merged into the table as it is.
    let before = oid().await;
    let report = write([0..60_000, 60_000..120_000], ["v", "v"]).await;
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (0, 0, 120_000)
    );
    assert_eq!(
        oid().await,
        before,
        "unchanged rows do not rewrite the table"
    );

    // New keys, about as many as the table holds: inserted into it.
    let report = write([200_000..280_000, 280_000..360_000], ["v", "v"]).await;
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (160_000, 0, 0)
    );
    assert_eq!(oid().await, before, "new keys do not rewrite the table");
    for sql in ["DELETE FROM kv WHERE k >= 200000", "VACUUM ANALYZE kv"] {
        client
            .execute(sql, &[])
            .await
            .expect("back to 160,000 rows");
    }

    // A reader holds the table: the swap cannot have its lock, so the
    // rows are merged into the table, all of them.
    let mut reader = db.connect().await;
    let reading = reader.transaction().await.expect("BEGIN");
    reading
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .expect("read");
    let report = write([0..80_000, 80_000..160_000], ["w", "w"]).await;
    reading.commit().await.expect("COMMIT");
    assert_eq!(
        (report.inserted, report.updated, report.unchanged),
        (0, 160_000, 0)
    );
    assert_eq!(oid().await, before, "merged while a reader held the table");
    assert!(report.migrations.is_empty(), "{:?}", report.migrations);
    assert_eq!(
        one(&client, "SELECT count(*) FROM kv WHERE v = 'w' || k").await,
        160_000
    );

    // Keys in both partitions fail the first rewrite's key: gathered one
    // per key (the later partition's row), then rewritten.
    let before = oid().await;
    let report = write([0..100_000, 50_000..160_000], ["x", "y"]).await;
    assert_eq!(
        (
            report.inserted,
            report.updated,
            report.unchanged,
            report.repeated
        ),
        (0, 160_000, 0, 50_000)
    );
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FROM kv WHERE v = 'x' || k AND k < 50000"
        )
        .await,
        50_000
    );
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FROM kv WHERE v = 'y' || k AND k >= 50000"
        )
        .await,
        110_000
    );
    assert_eq!(one(&client, "SELECT count(*) FROM kv").await, 160_000);
    if rewrites {
        assert_ne!(oid().await, before, "rewritten once gathered");
    }
}

/// A commit of a write rewriting `kv`, held at its swap.
struct HeldRewrite {
    params: pgbulk::conninfo::ConnParams,
    opts: LoadOptions,
    write: partitioned::WriteId,
    client: tokio_postgres::Client,
    /// In a transaction that read `kv`: the swap waits for it.
    reader: tokio_postgres::Client,
    committing: tokio::task::JoinHandle<pgbulk::Result<pgbulk::load::LoadReport>>,
    /// `kv`'s oid before the commit.
    before: i64,
    /// The commit's backend.
    pid: i32,
}

/// [`KV_WITH_USERS`]'s `kv` holding 150,000 rows `old<k>`, a write of
/// every key changed (`v<k>`) in two partitions, and its commit begun
/// while a reader holds the table: returned once the commit, its copy
/// filled, waits for the swap's lock. `None` before PostgreSQL 15 (no
/// rewrite).
async fn rewrite_held_at_swap(db: &TestDb) -> Option<HeldRewrite> {
    let params = resolve(&db.url);
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "{KV_WITH_USERS};
             INSERT INTO kv SELECT k, 'old' || k FROM generate_series(0, 149999) k;
             ANALYZE kv"
        ))
        .await
        .expect("table");
    if one(
        &client,
        "SELECT current_setting('server_version_num')::int8",
    )
    .await
        < 150_000
    {
        return None;
    }
    let opts = upsert_kv();
    let write = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
        .await
        .expect("begin")
        .write;
    for (p, range) in [(0u32, 0..80_000i64), (1, 80_000..150_000)] {
        stage_range(&params, &write, &opts, p, range, "v").await;
    }
    let before = one(&client, "SELECT 'kv'::regclass::oid::int8").await;
    let reader = db.connect().await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM kv")
        .await
        .expect("read");
    let committing = {
        let (params, opts, write) = (params.clone(), opts.clone(), write.clone());
        tokio::spawn(async move { commit_parts(&params, &write, &[0, 1], &opts).await })
    };
    for _ in 0..500 {
        let waiting = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query ILIKE '%lock table%kv%' LIMIT 1",
                &[],
            )
            .await
            .expect("activity");
        if let Some(row) = waiting {
            return Some(HeldRewrite {
                params,
                opts,
                write,
                client,
                reader,
                committing,
                before,
                pid: row.get(0),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the commit never waited for the swap's lock");
}

/// A writer that comes while a commit rewrites the table waits for it and
/// then writes into the new table: its row is there after both, beside
/// the rewritten rows.
#[tokio::test]
async fn a_writer_during_a_rewrite_writes_into_the_new_table() {
    let db = TestDb::new("partitioned_rewrite_writer").await;
    let Some(held) = rewrite_held_at_swap(&db).await else {
        return;
    };
    let writer = db.connect().await;
    let writing = tokio::spawn(async move {
        writer
            .execute("INSERT INTO kv VALUES (999999, 'app')", &[])
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writing.is_finished(), "the writer waits for the rewrite");
    held.reader.batch_execute("COMMIT").await.expect("COMMIT");
    let report = held.committing.await.expect("task").expect("commit");
    assert_eq!((report.inserted, report.updated), (0, 150_000));
    assert_eq!(writing.await.expect("task").expect("insert"), 1);
    let client = &held.client;
    assert_ne!(
        one(client, "SELECT 'kv'::regclass::oid::int8").await,
        held.before
    );
    assert_eq!(
        one(client, "SELECT count(*) FROM kv WHERE v = 'v' || k").await,
        150_000
    );
    assert_eq!(
        one(
            client,
            "SELECT count(*) FROM kv WHERE k = 999999 AND v = 'app'"
        )
        .await,
        1
    );
}

/// A commit rewriting the table whose session is terminated while its
/// filled copy waits for the swap's lock (a reader holds the table) leaves
/// the table as it was and nothing behind; the same write commits after.
#[tokio::test]
async fn a_rewrite_terminated_before_its_swap_changes_nothing() {
    let db = TestDb::new("partitioned_rewrite_killed").await;
    let Some(held) = rewrite_held_at_swap(&db).await else {
        return;
    };
    let client = &held.client;
    client
        .execute("SELECT pg_terminate_backend($1)", &[&held.pid])
        .await
        .expect("terminate");
    let err = held
        .committing
        .await
        .expect("task")
        .expect_err("a terminated commit fails");
    assert!(err.is_canceled_or_lost(), "{}", err.message());
    held.reader.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(
        one(client, "SELECT 'kv'::regclass::oid::int8").await,
        held.before
    );
    assert_eq!(
        one(client, "SELECT count(*) FROM kv WHERE v = 'old' || k").await,
        150_000
    );
    assert_eq!(
        one(
            client,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbulk\\_new\\_%'"
        )
        .await,
        0
    );
    let report = commit_parts(&held.params, &held.write, &[0, 1], &held.opts)
        .await
        .expect("commit again");
    assert_eq!((report.inserted, report.updated), (0, 150_000));
    assert_swapped_in(client, held.before, 150_000).await;
}

/// An attempt that outlives its write (Spark aborts a failed job without
/// waiting for its running tasks) is refused: it leaves no stage behind,
/// after an abort as after a commit.
#[tokio::test]
async fn an_attempt_after_the_write_ended_leaves_nothing() {
    let db = TestDb::new("partitioned_late").await;
    let params = resolve(&db.url);
    let client = db.connect().await;
    let opts = upsert_kv();
    let stages = || async {
        client
            .query(
                "SELECT relname::text FROM pg_class WHERE relname LIKE 'pgbulk\\_stage\\_%' ORDER BY 1",
                &[],
            )
            .await
            .expect("stages")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let stage = |write: partitioned::WriteId, p: u32| {
        let (params, opts) = (params.clone(), opts.clone());
        async move {
            partitioned::stage(
                &params,
                &write,
                p,
                schema(),
                rows(&[i64::from(p)], &["x"]),
                &opts,
                Arc::new(Progress::default()),
            )
            .await
        }
    };
    for commit in [false, true] {
        let begun = partitioned::begin(&params, schema(), &opts, true, Duration::from_secs(60))
            .await
            .expect("begin");
        let write = begun.write;
        assert_eq!(
            stages().await,
            [format!("pgbulk_stage_{}_open", write.as_str())],
            "an open write has its marker"
        );
        stage(write.clone(), 0).await.expect("stage 0");
        if commit {
            commit_parts(&params, &write, &[0], &opts)
                .await
                .expect("commit");
        } else {
            let dropped = partitioned::abort(&params, &write, &opts)
                .await
                .expect("abort");
            assert_eq!(dropped, 1);
        }
        assert_eq!(stages().await, Vec::<String>::new());
        let late = stage(write.clone(), 1).await.expect_err("the write ended");
        assert!(
            late.message().contains("no longer open"),
            "{}",
            late.message()
        );
        // A retry of a partition whose stage the end dropped is refused too.
        stage(write, 0).await.expect_err("the write ended");
        assert_eq!(stages().await, Vec::<String>::new(), "commit {commit}");
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1, "only the committed write's row");
}

/// The one `int8` that `sql` returns.
/// The rows of `kv`, by key.
/// Commits the `partitions` of `write` with `opts`.
async fn commit_parts(
    params: &pgbulk::conninfo::ConnParams,
    write: &partitioned::WriteId,
    partitions: &[u32],
    opts: &LoadOptions,
) -> pgbulk::Result<pgbulk::load::LoadReport> {
    partitioned::commit(
        params,
        write,
        partitions,
        schema(),
        opts,
        Arc::new(Progress::default()),
    )
    .await
}

/// Stages each `(partition, keys, values)` of `parts` for `write`.
async fn stage_parts(
    params: &pgbulk::conninfo::ConnParams,
    write: &partitioned::WriteId,
    opts: &LoadOptions,
    parts: &[(u32, &[i64], &[&str])],
) {
    for (p, keys, values) in parts {
        partitioned::stage(
            params,
            write,
            *p,
            schema(),
            rows(keys, values),
            opts,
            Arc::new(Progress::default()),
        )
        .await
        .expect("stage");
    }
}

async fn kv_rows(client: &tokio_postgres::Client) -> Vec<(i64, String)> {
    client
        .query("SELECT k, v FROM kv ORDER BY k", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub(crate) async fn one(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// `kv` (`k bigint` primary key, `v text`) with a view, a grant and a
/// comment: what a swap must keep.
pub(crate) const KV_WITH_USERS: &str = "CREATE TABLE kv (k bigint PRIMARY KEY, v text);
     CREATE VIEW kv_view AS SELECT k, v FROM kv;
     GRANT SELECT ON kv TO PUBLIC;
     COMMENT ON TABLE kv IS 'the rows';";

/// Checks that a new copy of [`KV_WITH_USERS`]'s `kv` (whose oid was
/// `before`) holding `rows` rows `v<k>` was swapped in: the view, the grant
/// and the comment kept, its key built once the rows were in (an index
/// filled row by row counts none until `VACUUM` or `ANALYZE`), no leftover.
pub(crate) async fn assert_swapped_in(client: &tokio_postgres::Client, before: i64, rows: i64) {
    let checks = [
        ("SELECT count(*) FROM kv_view WHERE v = 'v' || k", rows),
        (
            "SELECT has_table_privilege('public', 'kv', 'SELECT')::int::int8",
            1,
        ),
        (
            "SELECT (obj_description('kv'::regclass, 'pg_class') = 'the rows')::int::int8",
            1,
        ),
        (
            "SELECT reltuples::int8 FROM pg_class WHERE oid = 'kv_pkey'::regclass",
            rows,
        ),
        (
            "SELECT count(*) FROM pg_class \
             WHERE relname LIKE 'pgbulk\\_new\\_%' OR relname LIKE 'pgbulk\\_pk\\_%'",
            0,
        ),
    ];
    for (sql, want) in checks {
        assert_eq!(one(client, sql).await, want, "{sql}");
    }
    assert_ne!(
        one(client, "SELECT 'kv'::regclass::oid::int8").await,
        before,
        "a new copy was swapped in"
    );
}

/// Stages the rows `range` (values `<prefix><k>`) as partition `p` of
/// `write`.
async fn stage_range(
    params: &pgbulk::conninfo::ConnParams,
    write: &partitioned::WriteId,
    opts: &LoadOptions,
    p: u32,
    range: std::ops::Range<i64>,
    prefix: &str,
) {
    let keys: Vec<i64> = range.rev().collect();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(keys.clone())),
            Arc::new(StringArray::from(
                keys.iter()
                    .map(|k| format!("{prefix}{k}"))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch");
    partitioned::stage(
        params,
        write,
        p,
        schema(),
        Box::new(std::iter::once(Ok(batch))),
        opts,
        Arc::new(Progress::default()),
    )
    .await
    .expect("stage");
}

/// Appends the keys from each range's start up to its end (one partition
/// each) to `table` in one write.
async fn append(
    params: &pgbulk::conninfo::ConnParams,
    table: &str,
    ranges: &[(i64, i64)],
) -> pgbulk::Result<pgbulk::load::LoadReport> {
    write_ranges(params, table, pgbulk::load::LoadMode::Append, ranges).await
}

/// A write of `ranges` of keys (partition `i` the `i`-th range) into
/// `table` in `mode`.
async fn write_ranges(
    params: &pgbulk::conninfo::ConnParams,
    table: &str,
    mode: pgbulk::load::LoadMode,
    ranges: &[(i64, i64)],
) -> pgbulk::Result<pgbulk::load::LoadReport> {
    let opts = LoadOptions {
        table: TableName::parse(table).expect("name"),
        mode: Some(mode),
        ..LoadOptions::default()
    };
    let begun = partitioned::begin(params, schema(), &opts, true, Duration::from_secs(60))
        .await
        .expect("begin");
    let mut partitions = Vec::new();
    for (p, &(start, end)) in (0u32..).zip(ranges) {
        stage_range(params, &begun.write, &opts, p, start..end, "v").await;
        partitions.push(p);
    }
    commit_parts(params, &begun.write, &partitions, &opts).await
}

/// From server version `since`: `table`'s rows came in by COPY FREEZE,
/// which from PostgreSQL 14 marks the pages it fills all-visible (16 and
/// later also add empty pages ahead, which are not); an `INSERT ...
/// SELECT` marks none.
async fn assert_frozen(client: &tokio_postgres::Client, table: &str, since: i64) {
    let version = one(client, "SELECT current_setting('server_version_num')::int8").await;
    if version < since {
        return;
    }
    let visible = one(
        client,
        &format!("SELECT relallvisible::int8 FROM pg_class WHERE oid = '{table}'::regclass"),
    )
    .await;
    assert!(visible > 0, "{table}: its rows came in frozen");
}

/// A write into an empty table fills a new copy of it (its key built once
/// the rows are in) and swaps it in, keeping what users attached to the
/// table; a table that holds rows, has a trigger, or that a reader keeps
/// the swap from locking is written in place, and a repeated key fails
/// with the table's own constraint named, writing nothing.
#[tokio::test]
async fn a_write_into_an_empty_table_fills_a_copy_and_swaps_it_in() {
    let db = TestDb::new("partitioned_empty").await;
    let params = resolve(&db.url);
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "{KV_WITH_USERS}
             CREATE TABLE kt (k bigint PRIMARY KEY, v text);
             CREATE TABLE kt_seen (n bigint);
             CREATE FUNCTION kt_count() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO kt_seen VALUES (1); RETURN NULL; END $$;
             CREATE TRIGGER kt_count AFTER INSERT ON kt FOR EACH ROW EXECUTE FUNCTION kt_count();
             CREATE TABLE kr (k bigint PRIMARY KEY, v text);
             CREATE TABLE ku (k bigint PRIMARY KEY, v text)"
        ))
        .await
        .expect("tables");
    let oid = |t: &str| format!("SELECT '{t}'::regclass::oid::int8");
    let before = one(&client, &oid("kv")).await;
    // A repeated key: the rows go into the table itself, whose key names
    // the error, and nothing is written.
    let err = append(&params, "kv", &[(0, 10), (5, 15)])
        .await
        .expect_err("a repeated key");
    assert!(err.message().contains("kv_pkey"), "{}", err.message());
    assert_eq!(one(&client, "SELECT count(*) FROM kv").await, 0);
    assert_eq!(one(&client, &oid("kv")).await, before);

    append(&params, "kv", &[(2500, 5000), (0, 2500)])
        .await
        .expect("append into the empty table");
    assert_swapped_in(&client, before, 5000).await;
    // Copied in by COPY FREEZE, read on a second connection.
    assert_frozen(&client, "kv", 140_000).await;

    // An upsert on the primary key into an empty table: the rows are
    // copied in the same way.
    let ku = one(&client, &oid("ku")).await;
    let report = write_ranges(
        &params,
        "ku",
        pgbulk::load::LoadMode::Upsert,
        &[(0, 300), (300, 600)],
    )
    .await
    .expect("upsert into the empty table");
    assert_eq!(
        (report.inserted, report.updated, report.repeated),
        (600, 0, 0)
    );
    assert_ne!(one(&client, &oid("ku")).await, ku, "swapped in");
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FILTER (WHERE v = 'v' || k) FROM ku"
        )
        .await,
        600
    );
    // (Before 15 an upsert's new table keeps its key while the rows go in.)
    assert_frozen(&client, "ku", 150_000).await;
    // Never analyzed: its copy's statistics are left to autovacuum. An
    // emptied table that had them: its copy is analyzed.
    let analyzed = |t: &str| format!("SELECT count(*) FROM pg_stats WHERE tablename = '{t}'");
    assert_eq!(one(&client, &analyzed("ku")).await, 0);
    client
        .batch_execute(
            "CREATE TABLE ke (k bigint PRIMARY KEY, v text);
             INSERT INTO ke SELECT i, NULL FROM generate_series(1, 100) i;
             ANALYZE ke;
             DELETE FROM ke",
        )
        .await
        .expect("an emptied table");
    let ke = one(&client, &oid("ke")).await;
    append(&params, "ke", &[(0, 300)])
        .await
        .expect("append into the emptied table");
    assert_ne!(one(&client, &oid("ke")).await, ke, "swapped in");
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FROM pg_stats WHERE tablename = 'ke' AND attname = 'v' AND null_frac = 0"
        )
        .await,
        1
    );

    // The table holds rows now: in place.
    let filled = one(&client, &oid("kv")).await;
    append(&params, "kv", &[(5000, 5100)])
        .await
        .expect("append");
    assert_eq!(one(&client, "SELECT count(*) FROM kv").await, 5100);
    assert_eq!(one(&client, &oid("kv")).await, filled);

    // A trigger fires for each row written, as it would in place.
    let kt = one(&client, &oid("kt")).await;
    append(&params, "kt", &[(0, 100), (100, 200)])
        .await
        .expect("append");
    assert_eq!(one(&client, "SELECT count(*) FROM kt_seen").await, 200);
    assert_eq!(one(&client, &oid("kt")).await, kt);

    // A reader keeps the swap from its lock: in place.
    let kr = one(&client, &oid("kr")).await;
    let mut reader = db.connect().await;
    let open = reader.transaction().await.expect("reader");
    open.query("SELECT * FROM kr", &[]).await.expect("read");
    append(&params, "kr", &[(0, 100)]).await.expect("append");
    open.rollback().await.expect("reader ends");
    assert_eq!(one(&client, "SELECT count(*) FROM kr").await, 100);
    assert_eq!(one(&client, &oid("kr")).await, kr);
}
