//! `arrow::write` into a table that is there and empty: the rows fill a new
//! copy of it, indexed once they are in, swapped in at the batch's commit;
//! rows that came into the table meanwhile get the batch merged into them.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use pgbulk::arrow::Batches;
use pgbulk::load::{LoadMode, LoadOptions, Progress};
use pgbulk::schema::TableName;

use crate::harness::{TestDb, resolve};
use crate::partitioned::{KV_WITH_USERS, assert_swapped_in, one, schema};

/// Keys `range` with values `v<k>`, in one record batch.
fn batch(range: std::ops::Range<i64>) -> RecordBatch {
    let keys: Vec<i64> = range.rev().collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(keys.clone())),
            Arc::new(StringArray::from(
                keys.iter().map(|k| format!("v{k}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch")
}

async fn write(
    db: &TestDb,
    table: &str,
    mode: LoadMode,
    batches: Batches,
) -> pgbulk::load::LoadReport {
    let opts = LoadOptions {
        table: TableName::parse(table).expect("name"),
        mode: Some(mode),
        ..LoadOptions::default()
    };
    pgbulk::arrow::write(
        &resolve(&db.url),
        schema(),
        batches,
        &opts,
        false,
        Arc::new(Progress::default()),
    )
    .await
    .expect("write")
}

/// The first rows into an empty table with a key go into a new copy of it
/// (the key built once they are in, the grants, views and comments kept);
/// the next write, into a table that holds rows, goes in place.
#[tokio::test]
async fn a_write_into_an_empty_table_fills_a_new_copy() {
    let db = TestDb::new("write_empty").await;
    let client = db.connect().await;
    client.batch_execute(KV_WITH_USERS).await.expect("table");
    let oid = "SELECT 'kv'::regclass::oid::int8";
    let before = one(&client, oid).await;
    let report = write(
        &db,
        "kv",
        LoadMode::Append,
        Box::new(vec![Ok(batch(2500..5000)), Ok(batch(0..2500))].into_iter()),
    )
    .await;
    assert_eq!(report.inserted, 5000);
    assert_swapped_in(&client, before, 5000).await;
    let filled = one(&client, oid).await;
    let report = write(
        &db,
        "kv",
        LoadMode::Upsert,
        Box::new(std::iter::once(Ok(batch(4990..5010)))),
    )
    .await;
    assert_eq!((report.inserted, report.unchanged), (10, 10));
    assert_eq!(one(&client, oid).await, filled, "written in place");
}

/// Rows that another session writes into the empty table while the batch
/// fills its copy: the copy is not swapped in, the batch is merged into
/// the table (its row for a key both have wins) and the copy dropped.
#[tokio::test]
async fn rows_written_meanwhile_get_the_batch_merged_into_them() {
    let db = TestDb::new("write_empty_race").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE kv (k bigint PRIMARY KEY, v text)")
        .await
        .expect("table");
    let oid = "SELECT 'kv'::regclass::oid::int8";
    let before = one(&client, oid).await;
    let url = db.url.clone();
    let mut pulled = 0;
    // The second record batch is asked for while the first one's rows are
    // copied into the new table: another session inserts two rows then.
    let batches = std::iter::from_fn(move || {
        pulled += 1;
        match pulled {
            1 => Some(Ok(batch(0..50))),
            2 => {
                let url = url.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        let other = pgbulk::connect::connect(&resolve(&url))
                            .await
                            .expect("connect")
                            .client;
                        other
                            .batch_execute("INSERT INTO kv VALUES (1, 'other'), (-1, 'other')")
                            .await
                            .expect("insert meanwhile");
                    });
                })
                .join()
                .expect("thread");
                Some(Ok(batch(50..100)))
            }
            _ => None,
        }
    });
    let report = write(&db, "kv", LoadMode::Upsert, Box::new(batches)).await;
    assert_eq!((report.inserted, report.updated), (99, 1));
    assert_eq!(one(&client, oid).await, before, "not swapped in");
    assert_eq!(one(&client, "SELECT count(*) FROM kv").await, 101);
    assert_eq!(
        one(&client, "SELECT count(*) FROM kv WHERE k = 1 AND v = 'v1'").await,
        1,
        "the batch's row wins"
    );
    assert_eq!(
        one(
            &client,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgbulk\\_new\\_%'"
        )
        .await,
        0
    );
}

/// In a session zone with daylight saving: Arrow timestamps with a zone
/// are instants, encoded as they are; zoneless ones and text without an
/// offset are placed by the server in the session's zone (the clock change
/// gap included), as its cast places the same text.
#[tokio::test]
async fn timestamps_into_timestamptz_in_a_zone_with_daylight_saving() {
    use arrow_array::{ArrayRef, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    let db = TestDb::new("write_zone").await;
    db.set("TimeZone", "America/New_York").await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE tz (id bigint, at timestamptz, naive timestamptz, t timestamptz)",
        )
        .await
        .expect("table");
    // 2024-03-10 02:30 (in the gap), 2024-11-03 01:30 (in the overlap),
    // 2024-07-01 12:00, as microseconds of UTC or of a wall clock.
    let micros = [
        1_710_037_800_000_000_i64,
        1_730_597_400_000_000,
        1_719_835_200_000_000,
    ];
    let texts = [
        "2024-03-10 02:30:00",
        "2024-11-03 01:30:00",
        "2024-07-01 12:00:00+02",
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "naive",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("t", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![0, 1, 2])),
        Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(micros.to_vec())),
        Arc::new(StringArray::from(texts.to_vec())),
    ];
    let batch = RecordBatch::try_new(schema, columns).expect("batch");
    append(&db, "tz", batch).await;
    let wrong = one(
        &client,
        "SELECT count(*) FROM tz JOIN (VALUES \
           (0, '2024-03-10 02:30:00', '2024-03-10 02:30:00'), \
           (1, '2024-11-03 01:30:00', '2024-11-03 01:30:00'), \
           (2, '2024-07-01 12:00:00', '2024-07-01 12:00:00+02')) e(id, wall, t) USING (id) \
         WHERE at IS DISTINCT FROM (wall || '+00')::timestamptz \
            OR naive IS DISTINCT FROM wall::timestamptz \
            OR tz.t IS DISTINCT FROM e.t::timestamptz",
    )
    .await;
    assert_eq!(wrong, 0);
    assert_eq!(one(&client, "SELECT count(*) FROM tz").await, 3);
}

/// A null in an Arrow list is a null element and the string "NULL" is the
/// string, in a database whose `array_nulls` is off, whether the encoder
/// reads the list (`text[]`) or the server casts it (`point[]`).
#[tokio::test]
async fn null_list_elements_stay_null_with_array_nulls_off() {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{Array, ArrayRef};
    use arrow_schema::{DataType, Field, Schema};

    let db = TestDb::new("write_array_nulls").await;
    db.set("array_nulls", "off").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE a (id bigint, t text[], p point[])")
        .await
        .expect("table");
    let list = |items: &[Option<&str>]| {
        let mut b = ListBuilder::new(StringBuilder::new());
        for item in items {
            b.values().append_option(*item);
        }
        b.append(true);
        b.finish()
    };
    let texts = list(&[Some("x"), None, Some("NULL"), Some("null")]);
    let points = list(&[Some("(1,2)"), None]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("t", texts.data_type().clone(), true),
        Field::new("p", points.data_type().clone(), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1])),
        Arc::new(texts),
        Arc::new(points),
    ];
    let batch = RecordBatch::try_new(schema, columns).expect("batch");
    append(&db, "a", batch).await;
    let row = client
        .query_one(
            "SELECT t[2] IS NULL, t[3], t[4], p[2] IS NULL, p[1]::text FROM a",
            &[],
        )
        .await
        .expect("row");
    assert!(row.get::<_, bool>(0), "a null element");
    assert_eq!(row.get::<_, String>(1), "NULL");
    assert_eq!(row.get::<_, String>(2), "null");
    assert!(row.get::<_, bool>(3), "a null point");
    assert_eq!(row.get::<_, String>(4), "(1,2)");
}

/// Appends `batch` to `table` of `db` with `arrow::write`.
async fn append(db: &TestDb, table: &str, batch: RecordBatch) {
    appended(db, table, batch).await.expect("write");
}

/// What `arrow::write` of `batch` appended to `table` of `db` reports.
async fn appended(
    db: &TestDb,
    table: &str,
    batch: RecordBatch,
) -> pgbulk::Result<pgbulk::load::LoadReport> {
    let opts = LoadOptions {
        table: TableName::parse(table).expect("name"),
        mode: Some(LoadMode::Append),
        ..LoadOptions::default()
    };
    pgbulk::arrow::write(
        &resolve(&db.url),
        batch.schema(),
        Box::new(std::iter::once(Ok(batch))),
        &opts,
        false,
        Arc::new(Progress::default()),
    )
    .await
}

/// Into a LATIN1 database, Arrow text with a character LATIN1 lacks is a
/// bad value named by its row and column; text it has goes in converted.
#[tokio::test]
async fn text_a_database_encoding_lacks_is_named_by_row() {
    use arrow_array::ArrayRef;
    use arrow_schema::{DataType, Field, Schema};

    let db = TestDb::with_encoding("write_latin1", "LATIN1").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (id bigint, name text)")
        .await
        .expect("table");
    let batch = |names: Vec<&str>| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let ids: Vec<i64> = (1..=names.len() as i64).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
        ];
        RecordBatch::try_new(schema, columns).expect("batch")
    };
    let error = appended(&db, "t", batch(vec!["Müller", "日本"]))
        .await
        .expect_err("日 is no LATIN1 character");
    assert_eq!(error.row(), Some(2), "{error}");
    assert_eq!(error.column(), Some("name"), "{error}");
    assert!(error.to_string().contains("encoding \"LATIN1\""), "{error}");
    assert_eq!(one(&client, "SELECT count(*) FROM t").await, 0);
    append(&db, "t", batch(vec!["Müller", "ÿ"])).await;
    let same = one(
        &client,
        "SELECT count(*) FROM t WHERE (id, name) IN ((1, 'Müller'), (2, 'ÿ'))",
    )
    .await;
    assert_eq!(same, 2);
}
