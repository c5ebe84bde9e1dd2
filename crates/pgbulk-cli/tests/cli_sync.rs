//! `pgbulk sync` between two databases: every type round-trips exactly,
//! columns match by name, a mismatch writes nothing.

use crate::cli_load::{rows, s, server_version};
use crate::harness::{Run, Scratch, Standby, TestDb, peak_memory, pgbulk, resolve, run, server};

const TYPES: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE t (
    id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric, n2 numeric(12,2), r real, d double precision,
    b bool, tx text, vc varchar(10), ch char(3), by bytea, dt date, tm time, ttz timetz,
    ts timestamp, tstz timestamptz, iv interval, u uuid, j json, jb jsonb, ip inet, cidr_ cidr,
    mac macaddr, arr int[], tarr text[], m mood, bits bit(4)
);";

const ROWS: &str = "INSERT INTO t VALUES
 (1, -32768, 9223372036854775807, 123456789012345678901234567890.123456789, 12.34, 'NaN', '-Infinity',
  true, 'a \"quoted\", text
with a line', 'vc', 'ab', '\\x00ff', 'infinity', '24:00:00', '10:00+05:30',
  '-infinity', '2024-02-29 23:59:59.999999+00', '1 year 2 mons -3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{\"k\": [1, 2.50]}', '{\"k\": null}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '{1,NULL,3}',
  '{\"\",NULL,\"x,y\"}', 'happy', B'1010'),
 (2, NULL, NULL, 'NaN', NULL, 1.5e-40, 0.1, NULL, '', NULL, NULL, '\\x', '4713-01-01 BC', NULL, NULL,
  '294276-12-31 23:59:59', NULL, '-178000000 years', NULL, 'null', '\"\"', '::1', NULL, NULL, '{}', '{}', 'sad', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

async fn all(db: &TestDb, table: &str) -> Vec<Vec<Option<String>>> {
    rows(db, &format!("SELECT * FROM {table} ORDER BY id")).await
}

#[tokio::test]
async fn every_type_round_trips_into_a_created_table_then_upserts_nothing() {
    let src = TestDb::new("sync_src").await;
    let dst = TestDb::new("sync_dst").await;
    let home = Scratch::new("sync-types");
    src.connect()
        .await
        .batch_execute(&format!("{TYPES}\n{ROWS}"))
        .await
        .expect("source");
    // The same enum, under another oid, in the destination.
    dst.connect()
        .await
        .batch_execute(
            "CREATE TYPE other AS ENUM ('x'); CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');",
        )
        .await
        .expect("destination types");
    let sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--table", "t", "--db", &dst.url])
            .args(extra))
    };
    let out = sync(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("synced t into t: 3 rows read, 3 inserted"),
        "{}",
        out.stdout
    );
    assert_eq!(all(&dst, "t").await, all(&src, "t").await);
    // The created table has the source's key: a second sync changes nothing.
    let again = sync(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("0 inserted, 0 updated, 3 unchanged"),
        "{}",
        again.stdout
    );
    // A filtered sync into another table.
    let some = sync(&["--where", "id <> 2", "--to", "public.subset"]);
    assert_eq!(some.code, 0, "{}", some.stderr);
    assert_eq!(
        rows(&dst, "SELECT id::text FROM subset ORDER BY id").await,
        vec![vec![s("1")], vec![s("3")]]
    );
    // The enum (and the arrays and bit string) keep the rows on the text
    // path; without them the rows pass through in binary, as exactly.
    assert!(!out.stderr.contains(PASSED_THROUGH), "{}", out.stderr);
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE scalars AS SELECT id, i2, i8, n, n2, r, d, b, tx, vc, ch, by, dt, tm, ttz, \
             ts, tstz, iv, u, j, jb, ip, cidr_, mac FROM t; \
             ALTER TABLE scalars ADD PRIMARY KEY (id);",
        )
        .await
        .expect("scalars");
    let out = run(pgbulk(&home).args([
        "sync", "--from", &src.url, "--table", "scalars", "--db", &dst.url,
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(PASSED_THROUGH), "{}", out.stderr);
    assert_eq!(all(&dst, "scalars").await, all(&src, "scalars").await);
    let again = run(pgbulk(&home).args([
        "sync", "--from", &src.url, "--table", "scalars", "--db", &dst.url,
    ]));
    assert!(
        again.stdout.contains("0 inserted, 0 updated, 3 unchanged"),
        "{}",
        again.stdout
    );
}

/// What a sync says when the source's binary COPY went straight in.
const PASSED_THROUGH: &str = "binary COPY passed through";

#[tokio::test]
async fn columns_match_by_name_and_a_mismatch_writes_nothing() {
    let src = TestDb::new("sync_src_names").await;
    let dst = TestDb::new("sync_dst_names").await;
    let home = Scratch::new("sync-names");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE u (id int PRIMARY KEY, name varchar(20), score int, at timestamp, doc json);
             INSERT INTO u VALUES (1, 'ann', 7, '2024-01-01 12:00', '{\"a\":1}'), (2, 'bob', NULL, NULL, NULL);
             CREATE TABLE w (id int PRIMARY KEY, name text, code text);
             INSERT INTO w VALUES (1, 'x', 'not a number');",
        )
        .await
        .expect("source");
    dst.connect()
        .await
        .batch_execute(
            "CREATE TABLE u (doc jsonb, score bigint, id bigint PRIMARY KEY, at timestamptz, name text);
             CREATE TABLE w (id int PRIMARY KEY, code int, must text NOT NULL);
             INSERT INTO w VALUES (9, 9, 'kept');",
        )
        .await
        .expect("destination");
    let dry = run(pgbulk(&home).args([
        "sync",
        "--from",
        &src.url,
        "--table",
        "u",
        "--db",
        &dst.url,
        "--dry-run",
    ]));
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    for line in [
        "  id <- \"id\"::bigint",
        "  doc <- \"doc\"::jsonb",
        "  at <- (\"at\" AT TIME ZONE '",
        "would read public.u into public.u",
    ] {
        assert!(dry.stdout.contains(line), "{line}: {}", dry.stdout);
    }
    assert_eq!(
        rows(&dst, "SELECT count(*)::text FROM u").await,
        vec![vec![s("0")]],
        "a dry run writes nothing"
    );
    let out =
        run(pgbulk(&home).args(["sync", "--from", &src.url, "--table", "u", "--db", &dst.url]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        rows(
            &dst,
            "SELECT id::text, name, score::text, at::text, doc::text FROM u ORDER BY id"
        )
        .await,
        vec![
            vec![
                s("1"),
                s("ann"),
                s("7"),
                s("2024-01-01 12:00:00+00"),
                s("{\"a\": 1}")
            ],
            vec![s("2"), s("bob"), None, None, None],
        ],
        "by name, widened, the timestamp read in the source's zone (UTC here)"
    );
    let refused =
        run(pgbulk(&home).args(["sync", "--from", &src.url, "--table", "w", "--db", &dst.url]));
    assert_eq!(refused.code, 9, "{}", refused.stderr);
    for why in [
        "nothing was written",
        "column \"name\" (text) is not in the destination",
        "column \"code\": source text, destination integer",
        "column \"must\" (text) of the destination is NOT NULL without a default",
    ] {
        assert!(refused.stderr.contains(why), "{why}: {}", refused.stderr);
    }
    assert_eq!(
        rows(&dst, "SELECT id::text, code::text, must FROM w").await,
        vec![vec![s("9"), s("9"), s("kept")]]
    );
}

/// An incremental sync `from` a source into `dst` (with `extra`
/// arguments), with a late commit: a writer (the superuser) opens its
/// transaction and stamps a row, a newer row commits, a sync runs (the
/// second), the writer commits, a sync runs (the third). The destination
/// then holds every row. `standby`, a session on the standby `from` names,
/// is waited for to replay each change. Returns the second and third runs.
async fn late_commit(
    src: &TestDb,
    dst: &TestDb,
    home: &Scratch,
    (from, extra): (&str, &[&str]),
    standby: Option<&tokio_postgres::Client>,
) -> (Run, Run) {
    let sync = || {
        run(pgbulk(home)
            .args(["sync", "--from", from, "--table", "ev"])
            .args(["--incremental", "at", "--db", &dst.url])
            .args(extra))
    };
    let replayed = |count: i64| async move {
        if let Some(standby) = standby {
            replayed(standby, count).await;
        }
    };
    replayed(1).await;
    let first = sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    let late = src.connect().await;
    late.batch_execute("BEGIN; SELECT now(); INSERT INTO ev (id, v) VALUES (2, 'late')")
        .await
        .expect("late writer");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    src.connect()
        .await
        .batch_execute("INSERT INTO ev (id, v) VALUES (3, 'after')")
        .await
        .expect("after");
    replayed(2).await;
    let second = sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stdout.contains("1 inserted"), "{}", second.stdout);
    late.batch_execute("COMMIT").await.expect("COMMIT");
    replayed(3).await;
    let third = sync();
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(
        rows(dst, "SELECT id::text, v FROM ev ORDER BY id").await,
        vec![
            vec![s("1"), s("before")],
            vec![s("2"), s("late")],
            vec![s("3"), s("after")]
        ],
        "the late row is there"
    );
    (second, third)
}

/// Waits until the standby `client` is on has replayed `count` rows of ev.
async fn replayed(client: &tokio_postgres::Client, count: i64) {
    for _ in 0..600 {
        let seen: Option<i64> = client
            .query_opt("SELECT count(*) FROM ev", &[])
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if seen == Some(count) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the standby did not replay {count} rows of ev");
}

const LATE_TABLE: &str =
    "CREATE TABLE ev (id int PRIMARY KEY, v text, at timestamptz NOT NULL DEFAULT now());
     INSERT INTO ev (id, v) VALUES (1, 'before');";

/// A row stamped by a transaction still open when a sync reads is not
/// lost: the watermark stays before the transaction's start, and the
/// next sync reads the row; a sync with nothing new writes nothing.
#[tokio::test]
async fn an_incremental_sync_does_not_miss_a_late_commit() {
    let src = TestDb::new("sync_late_src").await;
    let dst = TestDb::new("sync_late_dst").await;
    let home = Scratch::new("sync-late");
    src.connect()
        .await
        .batch_execute(LATE_TABLE)
        .await
        .expect("source");
    let (_, third) = late_commit(&src, &dst, &home, (&src.url, &[]), None).await;
    assert!(
        third.stdout.contains("1 inserted, 0 updated"),
        "only the boundary is re-read, unchanged: {}",
        third.stdout
    );
    let sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--table", "ev"])
            .args(["--incremental", "at", "--db", &dst.url])
            .args(extra))
    };
    // No transaction was open: the next run reads after the watermark,
    // not the boundary's rows again.
    let idle = sync(&[]);
    assert!(
        idle.stdout.contains(": 0 rows read, 0 inserted, 0 updated"),
        "{}",
        idle.stdout
    );
    // Incremental needs a key: append is refused.
    let append = sync(&["--mode", "append"]);
    assert_eq!(append.code, 3, "{}", append.stderr);
}

/// An incremental column without an order (bool, uuid) is refused before
/// anything is created or read, naming the column and its type; so is a
/// `--where` the source rejects, naming it.
#[tokio::test]
async fn an_unordered_incremental_column_or_a_bad_where_is_refused_up_front() {
    let src = TestDb::new("sync_unordered_src").await;
    let dst = TestDb::new("sync_unordered_dst").await;
    let home = Scratch::new("sync-unordered");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE uo (id int PRIMARY KEY, ok bool, u uuid);
             INSERT INTO uo VALUES (1, true, NULL);",
        )
        .await
        .expect("source");
    for (column, type_name) in [("ok", "boolean"), ("u", "uuid")] {
        let out = run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--table", "uo"])
            .args(["--incremental", column, "--db", &dst.url]));
        assert_eq!(out.code, 3, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "--incremental {column}: column \"{column}\" of public.uo is {type_name}, which has no order"
            )),
            "{}",
            out.stderr
        );
    }
    let out = run(pgbulk(&home)
        .args(["sync", "--from", &src.url, "--table", "uo"])
        .args(["--where", "nosuch = 1", "--db", &dst.url]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--where nosuch = 1: column \"nosuch\" does not exist"),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&dst, "SELECT to_regclass('uo')::text").await,
        vec![vec![None]],
        "nothing created"
    );
}

/// A `date` column's watermark is bounded like a timestamp's, by the date
/// the oldest open transaction (or the clock) started on in the earliest
/// time zone: a row stamped with `current_date` by a transaction open
/// during the read, or committed after it, is read next time even when
/// the source holds later dates.
#[tokio::test]
async fn an_incremental_date_column_does_not_run_ahead_of_current_date() {
    let src = TestDb::new("sync_date_mark_src").await;
    let dst = TestDb::new("sync_date_mark_dst").await;
    let home = Scratch::new("sync-date-mark");
    let source = src.connect().await;
    source
        .batch_execute(
            "CREATE TABLE dm (id int PRIMARY KEY, day date NOT NULL DEFAULT current_date);
             INSERT INTO dm VALUES (1, '2999-01-01');",
        )
        .await
        .expect("source");
    let sync = || {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--table", "dm"])
            .args(["--incremental", "day", "--db", &dst.url]))
    };
    let late = src.connect().await;
    late.batch_execute("BEGIN; INSERT INTO dm (id) VALUES (2)")
        .await
        .expect("late writer");
    let first = sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    late.batch_execute("COMMIT").await.expect("COMMIT");
    source
        .batch_execute("INSERT INTO dm (id) VALUES (3)")
        .await
        .expect("after");
    let second = sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stdout.contains("2 inserted"), "{}", second.stdout);
    assert_eq!(
        rows(&dst, "SELECT id::text FROM dm ORDER BY id").await,
        vec![vec![s("1")], vec![s("2")], vec![s("3")]]
    );
}

/// An incremental sync whose `--where` differs from the one its watermark
/// was stored with says what that leaves out (the rows the new filter
/// adds before the watermark), and how to read them; the same filter
/// again says nothing.
#[tokio::test]
async fn a_changed_where_under_a_stored_watermark_is_called_out() {
    let src = TestDb::new("sync_where_mark_src").await;
    let dst = TestDb::new("sync_where_mark_dst").await;
    let home = Scratch::new("sync-where-mark");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE wm (id int PRIMARY KEY, region text, at timestamptz NOT NULL DEFAULT now());
             INSERT INTO wm (id, region) VALUES (1, 'eu'), (2, 'us');",
        )
        .await
        .expect("source");
    let sync = |filter: &str, extra: &[&str]| {
        run(pgbulk(&home)
            .args([
                "sync", "--from", &src.url, "--table", "wm", "--db", &dst.url,
            ])
            .args(["--incremental", "at", "--where", filter])
            .args(extra))
    };
    let eu = sync("region = 'eu'", &[]);
    assert_eq!(eu.code, 0, "{}", eu.stderr);
    let again = sync("region = 'eu'", &[]);
    assert!(
        !again.stderr.contains("watermark was stored"),
        "{}",
        again.stderr
    );
    let note = "the watermark was stored by a sync with --where region = 'eu'; rows this --where selects \
                that are older than the watermark are not read: a sync without --incremental reads them once";
    let plan = sync("region IN ('eu', 'us')", &["--dry-run"]);
    assert!(plan.stdout.contains(note), "{}", plan.stdout);
    let both = sync("region IN ('eu', 'us')", &[]);
    assert_eq!(both.code, 0, "{}", both.stderr);
    assert!(both.stderr.contains(note), "{}", both.stderr);
    assert_eq!(
        rows(&dst, "SELECT id::text FROM wm ORDER BY id").await,
        vec![vec![s("1")]],
        "the older us row is not read, as the note says"
    );
    let once = run(pgbulk(&home)
        .args([
            "sync", "--from", &src.url, "--table", "wm", "--db", &dst.url,
        ])
        .args(["--where", "region IN ('eu', 'us')"]));
    assert_eq!(once.code, 0, "{}", once.stderr);
    assert_eq!(
        rows(&dst, "SELECT id::text FROM wm ORDER BY id").await,
        vec![vec![s("1")], vec![s("2")]],
        "a sync without --incremental reads it"
    );
    let next = sync("region IN ('eu', 'us')", &[]);
    assert!(
        !next.stderr.contains("watermark was stored"),
        "{}",
        next.stderr
    );
}

/// A view named as the source table is read as a query of its rows is:
/// by the key given (it has none of its own), into a table of its name.
#[tokio::test]
async fn a_view_is_synced_by_the_key_given() {
    let src = TestDb::new("sync_view_src").await;
    let dst = TestDb::new("sync_view_dst").await;
    let home = Scratch::new("sync-view");
    let source = src.connect().await;
    source
        .batch_execute(
            "CREATE TABLE base (id int PRIMARY KEY, v text);
             INSERT INTO base VALUES (1, 'a'), (2, 'b');
             CREATE VIEW recent AS SELECT id, v FROM base WHERE id > 1;
             CREATE MATERIALIZED VIEW everything AS SELECT id, v FROM base;",
        )
        .await
        .expect("source");
    let sync = |source: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--db", &dst.url])
            .args(source))
    };
    let refused = sync(&["--table", "recent"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "the source's public.recent is a view, which has no primary key: --key COL,... names the columns that identify its rows"
        ),
        "{}",
        refused.stderr
    );
    let synced = sync(&["--table", "recent", "--key", "id"]);
    assert_eq!(synced.code, 0, "{}", synced.stderr);
    assert!(
        synced
            .stdout
            .starts_with("synced recent into recent: 1 row read, 1 inserted"),
        "{}",
        synced.stdout
    );
    source
        .batch_execute("UPDATE base SET v = 'b2' WHERE id = 2; INSERT INTO base VALUES (3, 'c')")
        .await
        .expect("changes");
    let again = sync(&["--table", "recent", "--key", "id", "--jobs", "2"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains(
            "read in one range, not split for --jobs: a query or a view has no table to split"
        ),
        "{}",
        again.stderr
    );
    assert_eq!(
        rows(&dst, "SELECT id::text, v FROM recent ORDER BY id").await,
        vec![vec![s("2"), s("b2")], vec![s("3"), s("c")]]
    );
    // A materialized view, as it was last refreshed; a query reads the
    // same way.
    let matview = sync(&["--table", "everything", "--key", "id"]);
    assert_eq!(matview.code, 0, "{}", matview.stderr);
    let query = sync(&[
        "--query",
        "SELECT * FROM everything",
        "--to",
        "copied",
        "--key",
        "id",
    ]);
    assert_eq!(query.code, 0, "{}", query.stderr);
    let expected = vec![vec![s("1"), s("a")], vec![s("2"), s("b")]];
    assert_eq!(
        rows(&dst, "SELECT id::text, v FROM everything ORDER BY id").await,
        expected
    );
    assert_eq!(
        rows(&dst, "SELECT id::text, v FROM copied ORDER BY id").await,
        expected
    );
}

/// A table whose incremental column `at` may be NULL: one row stamped,
/// one not.
pub(crate) const NULL_STAMP_TABLE: &str =
    "CREATE TABLE ns (id int PRIMARY KEY, v text, at timestamptz);
     INSERT INTO ns VALUES (1, 'a', now()), (2, 'b', NULL);";

/// Rows whose incremental column is NULL cannot be placed by a watermark:
/// every run reads them, so a new or changed row without a stamp still
/// arrives; a column declared NOT NULL spares that read.
#[tokio::test]
async fn an_incremental_sync_reads_the_rows_with_a_null_stamp_every_time() {
    let src = TestDb::new("sync_null_stamp_src").await;
    let dst = TestDb::new("sync_null_stamp_dst").await;
    let home = Scratch::new("sync-null-stamp");
    let source = src.connect().await;
    source
        .batch_execute(NULL_STAMP_TABLE)
        .await
        .expect("source");
    let sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--table", "ns"])
            .args(["--incremental", "at", "--db", &dst.url])
            .args(extra))
    };
    let first = sync(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("2 inserted"), "{}", first.stdout);
    source
        .batch_execute(
            "INSERT INTO ns VALUES (3, 'c', NULL), (4, 'd', now());
             UPDATE ns SET v = 'b2' WHERE id = 2;",
        )
        .await
        .expect("changes");
    let plan = sync(&["--dry-run"]);
    assert!(
        plan.stdout
            .contains("and every row with a NULL one (read on every run)"),
        "{}",
        plan.stdout
    );
    let second = sync(&[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("2 inserted, 1 updated"),
        "the unstamped row and the unstamped change arrive: {}",
        second.stdout
    );
    let expected = vec![
        vec![s("1"), s("a")],
        vec![s("2"), s("b2")],
        vec![s("3"), s("c")],
        vec![s("4"), s("d")],
    ];
    let query = "SELECT id::text, v FROM ns ORDER BY id";
    assert_eq!(rows(&dst, query).await, expected);
    // Once the column is NOT NULL, only the stamped rows are read.
    source
        .batch_execute(
            "UPDATE ns SET at = now() WHERE at IS NULL; ALTER TABLE ns ALTER at SET NOT NULL",
        )
        .await
        .expect("NOT NULL");
    let plan = sync(&["--dry-run"]);
    assert!(!plan.stdout.contains("NULL one"), "{}", plan.stdout);
    let third = sync(&[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(rows(&dst, query).await, expected);
}

/// The late-commit table in `src`, and a login role `{prefix}_{pid}` that
/// may read it but not other roles' transaction starts: a session on
/// `src`, the role, and its connection string.
async fn reader_role(src: &TestDb, prefix: &str) -> (tokio_postgres::Client, String, String) {
    let role = format!("{prefix}_{}", std::process::id());
    let source = src.connect().await;
    source
        .batch_execute(&format!(
            "{LATE_TABLE}
             CREATE ROLE {role} LOGIN PASSWORD 'reader-secret';
             GRANT SELECT ON ev TO {role};"
        ))
        .await
        .expect("source");
    let (host, port) = server().host_port();
    let reader = format!(
        "host={host} port={port} user={role} password=reader-secret dbname={}",
        src.name
    );
    (source, role, reader)
}

async fn drop_role(source: &tokio_postgres::Client, role: &str) {
    source
        .batch_execute(&format!("REVOKE ALL ON ev FROM {role}; DROP ROLE {role}"))
        .await
        .expect("drop the role");
}

/// The same late commit, seen by a source role without
/// `pg_read_all_stats`: `pg_stat_activity` hides the writer's start from
/// it, so the watermark stays where it was (and the run says why) until
/// the writer has committed; the late row is not missed.
#[tokio::test]
async fn a_reader_role_that_cannot_see_a_late_writer_still_gets_its_row() {
    let src = TestDb::new("sync_hidden_src").await;
    let dst = TestDb::new("sync_hidden_dst").await;
    let home = Scratch::new("sync-hidden");
    let (source, role, reader) = reader_role(&src, "pgbulk_reader").await;
    // The writer is the superuser: its session is hidden from the reader.
    let (second, third) = late_commit(&src, &dst, &home, (&reader, &[]), None).await;
    assert!(
        second.stderr.contains(&format!(
            "1 transaction(s) of other roles were open on the source, and their start is hidden from \"{role}\""
        )) && second.stderr.contains(&format!("GRANT pg_read_all_stats TO \"{role}\"")),
        "{}",
        second.stderr
    );
    assert!(!third.stderr.contains("hidden from"), "{}", third.stderr);
    drop_role(&source, &role).await;
}

/// A first incremental sync (no watermark, an empty destination) while a
/// transaction hidden from the reading role is open: it stores a
/// watermark before every row (`-infinity`), not none, so the next sync
/// reads everything again and gets the writer's row, which is older than
/// the destination's newest one.
#[tokio::test]
async fn a_first_sync_with_a_hidden_writer_open_reads_everything_next_time() {
    let src = TestDb::new("sync_hidden_first_src").await;
    let dst = TestDb::new("sync_hidden_first_dst").await;
    let home = Scratch::new("sync-hidden-first");
    let (source, role, reader) = reader_role(&src, "pgbulk_first_reader").await;
    let sync = || {
        run(pgbulk(&home)
            .args(["sync", "--from", &reader, "--table", "ev"])
            .args(["--incremental", "at", "--db", &dst.url]))
    };
    let late = src.connect().await;
    late.batch_execute("BEGIN; SELECT now(); INSERT INTO ev (id, v) VALUES (2, 'late')")
        .await
        .expect("late writer");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    source
        .batch_execute("INSERT INTO ev (id, v) VALUES (3, 'after')")
        .await
        .expect("after");
    let first = sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stdout.contains("2 inserted"), "{}", first.stdout);
    assert!(first.stderr.contains("hidden from"), "{}", first.stderr);
    late.batch_execute("COMMIT").await.expect("COMMIT");
    let second = sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("1 inserted, 0 updated, 2 unchanged"),
        "everything is read again, the late row inserted: {}",
        second.stdout
    );
    let third = sync();
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert!(
        third.stdout.contains("0 inserted, 0 updated"),
        "{}",
        third.stdout
    );
    assert_eq!(
        rows(&dst, "SELECT id::text, v FROM ev ORDER BY id").await,
        vec![
            vec![s("1"), s("before")],
            vec![s("2"), s("late")],
            vec![s("3"), s("after")]
        ]
    );
    drop_role(&source, &role).await;
}

/// A source role whose row-level security hides rows: the sync reads with
/// `row_security` off, as `pg_dump` does, so it fails with the server's
/// words and writes nothing, instead of copying part of the table (and,
/// with `--delete-missing`, deleting the rows the role cannot see).
#[tokio::test]
async fn a_source_role_that_row_security_filters_is_refused() {
    let src = TestDb::new("sync_rls_src").await;
    let dst = TestDb::new("sync_rls_dst").await;
    let home = Scratch::new("sync-rls");
    let (source, role, reader) = reader_role(&src, "pgbulk_rls_reader").await;
    source
        .batch_execute(
            "INSERT INTO ev (id, v) VALUES (2, 'hidden');
             ALTER TABLE ev ENABLE ROW LEVEL SECURITY;
             CREATE POLICY first_only ON ev FOR SELECT USING (id = 1);",
        )
        .await
        .expect("row security");
    let out = run(pgbulk(&home).args([
        "sync", "--from", &src.url, "--table", "ev", "--db", &dst.url,
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        rows(&dst, "SELECT count(*)::text FROM ev").await,
        vec![vec![s("2")]]
    );
    let out = run(pgbulk(&home)
        .args(["sync", "--from", &reader, "--table", "ev", "--db", &dst.url])
        .args(["--where", "id > 0", "--delete-missing"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("query would be affected by row-level security policy for table \"ev\""),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&dst, "SELECT string_agg(id::text, ',' ORDER BY id) FROM ev").await,
        vec![vec![s("1,2")]],
        "nothing deleted"
    );
    source
        .batch_execute("DROP POLICY first_only ON ev")
        .await
        .expect("drop the policy");
    drop_role(&source, &role).await;
}

/// From a hot standby the primary's open transactions cannot be seen: a
/// sync says so (the late row it can miss), and with `--lookback` the
/// late row is read.
#[tokio::test]
async fn a_standby_source_says_what_it_cannot_see_and_lookback_covers_it() {
    let src = TestDb::new("sync_standby_src").await;
    let dst = TestDb::new("sync_standby_dst").await;
    let home = Scratch::new("sync-standby");
    src.connect()
        .await
        .batch_execute(LATE_TABLE)
        .await
        .expect("source");
    let Some(standby) = Standby::start() else {
        return;
    };
    let replica = standby.url(&src.name);
    let on_replica = pgbulk::connect::connect(&resolve(&replica))
        .await
        .expect("standby session")
        .client;
    replayed(&on_replica, 1).await;
    let standby_sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &replica, "--table", "ev"])
            .args(["--incremental", "at", "--db", &dst.url])
            .args(extra))
    };
    const SAID: &str = "the source is a standby: transactions open on its primary cannot be seen";
    // Said by the plan, and by the run.
    let plan = standby_sync(&["--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains(SAID), "{}", plan.stdout);
    let first = standby_sync(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains(SAID), "{}", first.stderr);
    let lookback: &[&str] = &["--lookback", "10m"];
    let (second, _) = late_commit(&src, &dst, &home, (&replica, lookback), Some(&on_replica)).await;
    assert!(!second.stderr.contains("standby"), "{}", second.stderr);
}

/// A sync killed with SIGKILL at several instants, then run again, ends
/// with exactly the source's rows (and no spool left behind by the rerun).
#[tokio::test]
async fn a_killed_sync_then_the_same_command_converges() {
    killed_then_rerun("1", Some("20000")).await;
}

/// The same for a sync that passes the source's binary COPY through into
/// a new table in one transaction: a killed run leaves no table.
#[tokio::test]
async fn a_killed_pass_through_sync_then_the_same_command_converges() {
    killed_then_rerun("1", None).await;
}

/// The same with two jobs: ranges committed by a killed run are kept, the
/// others read again.
#[tokio::test]
async fn a_killed_sync_of_two_jobs_then_the_same_command_converges() {
    killed_then_rerun("2", Some("20000")).await;
}

/// And with two jobs passing each range through in one transaction.
#[tokio::test]
async fn a_killed_pass_through_sync_of_two_jobs_then_the_same_command_converges() {
    killed_then_rerun("2", None).await;
}

/// Into a destination without a key (appended to): a run killed in the
/// middle of its COPY leaves none of its rows, with one job and with two,
/// so its rerun holds each source row once. (It committed batches of
/// 20,000 and 1 M rows before, which the rerun appended again.)
#[tokio::test]
async fn a_killed_sync_into_a_keyless_table_leaves_none_of_its_rows() {
    let src = TestDb::new("sync_keyless_kill_src").await;
    let dst = TestDb::new("sync_keyless_kill_dst").await;
    let home = Scratch::new("sync-keyless-kill");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE events (id bigint, v text, at date);
             INSERT INTO events SELECT i, 'event number ' || i, DATE '2020-01-01' + i % 999
             FROM generate_series(1, 1500000) i; ANALYZE events;",
        )
        .await
        .expect("source");
    let dest = dst.connect().await;
    dest.batch_execute("CREATE TABLE events (id bigint, v text, at date)")
        .await
        .expect("destination");
    let check = "SELECT count(*)::text, sum(id)::text FROM events";
    for jobs in ["1", "2"] {
        dest.batch_execute("TRUNCATE events")
            .await
            .expect("truncate");
        let command = || {
            let mut cmd = pgbulk(&home);
            cmd.args([
                "--quiet", "sync", "--from", &src.url, "--table", "events", "--jobs", jobs, "--db",
                &dst.url,
            ]);
            cmd
        };
        let mut child = command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Killed once the destination is copying.
        loop {
            assert!(
                child.try_wait().expect("wait").is_none(),
                "the sync ended before it could be killed"
            );
            let copying: i64 = dest
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE state = 'active' AND query LIKE 'COPY%FROM STDIN%'",
                    &[],
                )
                .await
                .expect("activity")
                .get(0);
            if copying > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        child.kill().expect("kill -9");
        let _ = child.wait();
        assert_eq!(
            rows(&dst, "SELECT count(*)::text FROM events").await,
            vec![vec![s("0")]],
            "jobs {jobs}: the killed run left rows"
        );
        let out = run(&mut command());
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            rows(&dst, check).await,
            rows(&src, check).await,
            "jobs {jobs}"
        );
    }
}

/// Two jobs into a new table: it is created without its primary key, which
/// is added once every range is in. Killed mid-copy, it is left without the
/// key; reruns asking for batches, killed too, still load each range in one
/// transaction (a range's committed batches, read again into the table
/// without its key, would be there twice), and the last ends with exactly
/// the source's rows and the key.
#[tokio::test]
async fn a_new_table_gets_its_key_after_two_jobs_killed_and_rerun_in_batches() {
    let src = TestDb::new("sync_keylater_src").await;
    let dst = TestDb::new("sync_keylater_dst").await;
    let home = Scratch::new("sync-keylater");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, v text, at date);
             INSERT INTO events SELECT i, 'event number ' || i, DATE '2020-01-01' + i % 999
             FROM generate_series(1, 1500000) i; ANALYZE events;",
        )
        .await
        .expect("source");
    let dest = dst.connect().await;
    let command = |batches: bool| {
        let mut cmd = pgbulk(&home);
        cmd.args([
            "--quiet", "sync", "--from", &src.url, "--table", "events", "--jobs", "2", "--db",
            &dst.url,
        ]);
        if batches {
            cmd.args(["--batch-rows", "20000"]);
        }
        cmd
    };
    // The first run killed while it copies (no range in); a rerun in
    // batches killed as soon as the table holds rows (without the one
    // transaction per range: after its first batch of 20,000).
    for batches in [false, true] {
        let mut child = command(batches)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let watch = if batches {
            "SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1) e"
        } else {
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE 'COPY%FROM STDIN%'"
        };
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            let seen: i64 = dest.query_one(watch, &[]).await.map_or(0, |r| r.get(0));
            if seen > 0 {
                if !batches {
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                }
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        if !batches {
            assert_eq!(
                constraints(&dst, "events").await,
                Vec::<Vec<Option<String>>>::new(),
                "the key is added once every range is in"
            );
        }
    }
    // A run that would not go on with the ranges (it reads in one) is
    // refused: the table would stay without its key.
    let before = rows(&dst, "SELECT count(*)::text FROM events").await;
    for flag in ["--delete-missing", "--mode=replace"] {
        let out = run(command(false).arg(flag));
        assert_eq!(out.code, 3, "{flag}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("stopped before every range was in: it gets its primary key"),
            "{flag}: {}",
            out.stderr
        );
        assert_eq!(
            rows(&dst, "SELECT count(*)::text FROM events").await,
            before
        );
    }
    let out = run(&mut command(true));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let check = "SELECT count(*)::text, count(DISTINCT id)::text, sum(id)::text FROM events";
    assert_eq!(rows(&dst, check).await, rows(&src, check).await);
    assert_eq!(
        constraints(&dst, "events").await,
        vec![vec![s("events_pkey"), s("PRIMARY KEY (id)")]]
    );
}

/// The name and definition of each constraint of `table` but its `NOT
/// NULL` ones (catalogued as constraints from PostgreSQL 18 on).
async fn constraints(db: &TestDb, table: &str) -> Vec<Vec<Option<String>>> {
    rows(
        db,
        &format!(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = '{table}'::regclass AND contype <> 'n' ORDER BY conname"
        ),
    )
    .await
}

async fn killed_then_rerun(jobs: &str, batch_rows: Option<&str>) {
    let name = format!("{jobs}{}", if batch_rows.is_some() { "" } else { "_one" });
    let jobs = jobs.to_owned();
    let src = TestDb::new(&format!("sync_kill{name}_src")).await;
    let dst = TestDb::new(&format!("sync_kill{name}_dst")).await;
    let home = Scratch::new(&format!("sync-kill-{name}"));
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text, n numeric);
             CREATE INDEX big_v ON big (v);
             INSERT INTO big SELECT i, 'row ' || i, i / 3.0 FROM generate_series(1, 200000) i;",
        )
        .await
        .expect("source");
    let command = || {
        let mut cmd = pgbulk(&home);
        cmd.args([
            "--quiet", "sync", "--from", &src.url, "--table", "big", "--jobs", &jobs, "--db",
            &dst.url,
        ])
        .args(
            batch_rows
                .map(|n| ["--batch-rows", n])
                .into_iter()
                .flatten(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        cmd
    };
    let mut killed = Vec::new();
    for delay in [50u64, 300, 700, 1200] {
        let mut child = command().spawn().expect("spawn");
        killed.push(child.id());
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let out = run(&mut command());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let check = "SELECT count(*)::text, sum(id)::text, md5(string_agg(id || v || n, ',' ORDER BY id)) FROM big";
    assert_eq!(rows(&dst, check).await, rows(&src, check).await);
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*)::text FROM pgbulk_watermark WHERE table_name LIKE '%#sync:%'"
        )
        .await,
        vec![vec![s("0")]],
        "the ranges' ledger is removed once all are in"
    );
    // The created table's primary key, whichever run created the table
    // (with two jobs: added once every range is in).
    assert_eq!(
        constraints(&dst, "big").await,
        vec![vec![s("big_pkey"), s("PRIMARY KEY (id)")]]
    );
    // The created table's index, whichever run created the table (with
    // two jobs: built once every range is in).
    assert_eq!(
        rows(
            &dst,
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index \
             WHERE indrelid = 'big'::regclass AND NOT indisprimary"
        )
        .await,
        vec![vec![s(
            "CREATE INDEX big_v_idx ON public.big USING btree (v)"
        )]]
    );
    // The killed runs' spools are gone (a run removes those of dead
    // processes; other tests' killed runs are theirs to clean).
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| {
            n.strip_prefix("pgbulk-sync-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| killed.contains(&pid))
        })
        .collect();
    assert!(left.is_empty(), "spools of killed syncs left: {left:?}");
}

/// Bad flags and names: a usage error, or a clear refusal that creates
/// nothing in the destination.
#[tokio::test]
async fn bad_sync_requests_are_refused_before_writing() {
    let src = TestDb::new("sync_bad_src").await;
    let dst = TestDb::new("sync_bad_dst").await;
    let home = Scratch::new("sync-bad");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, at timestamptz);
             CREATE TABLE \"Invoices\" (id int PRIMARY KEY);
             CREATE SCHEMA sales; CREATE TABLE sales.invoices (id int PRIMARY KEY);",
        )
        .await
        .expect("source");
    let sync = |args: &[&str]| run(pgbulk(&home).args(["sync", "--db", &dst.url]).args(args));
    let no_source = sync(&["--table", "t"]);
    assert_eq!(no_source.code, 2, "{}", no_source.stderr);
    let missing = sync(&["--from", &src.url, "--table", "nope"]);
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("the source has no table public.nope\n"),
        "{}",
        missing.stderr
    );
    // The same name but for case (unquoted names fold to lower case), or
    // in another schema: named as --table takes them.
    let near = sync(&["--from", &src.url, "--table", "Invoices"]);
    assert_eq!(near.code, 3, "{}", near.stderr);
    assert!(
        near.stderr.contains(
            "the source has no table public.invoices; did you mean --table '\"Invoices\"' or --table sales.invoices?"
        ),
        "{}",
        near.stderr
    );
    let column = sync(&["--from", &src.url, "--table", "t", "--incremental", "nope"]);
    assert_eq!(column.code, 3, "{}", column.stderr);
    assert!(
        column.stderr.contains("has no column \"nope\""),
        "{}",
        column.stderr
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*)::text FROM pg_class WHERE relname IN ('t', 'nope', 'pgbulk_watermark')"
        )
        .await,
        vec![vec![s("0")]],
        "nothing was created"
    );
}

#[tokio::test]
async fn delete_missing_replaces_a_window_with_the_last_batch() {
    let src = TestDb::new("sync_del_src").await;
    let dst = TestDb::new("sync_del_dst").await;
    let home = Scratch::new("sync-delete");
    let source = src.connect().await;
    source
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, day date NOT NULL, name text);
             INSERT INTO users SELECT i, CASE WHEN i <= 5 THEN date '2024-05-01' ELSE date '2024-05-02' END, 'u' || i
             FROM generate_series(1, 8) i",
        )
        .await
        .expect("source");
    let sync = |args: &[&str]| {
        run(pgbulk(&home)
            .args([
                "sync", "--from", &src.url, "--table", "users", "--db", &dst.url,
            ])
            .args(args))
    };
    let first = sync(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    dst.connect()
        .await
        .batch_execute("ALTER TABLE users ADD CHECK (name <> 'bad')")
        .await
        .expect("check");
    // The source changes within the day 2024-05-01 and outside it.
    source
        .batch_execute(
            "DELETE FROM users WHERE id IN (2, 6); UPDATE users SET name = 'changed' WHERE id = 3;
             INSERT INTO users VALUES (9, '2024-05-01', 'bad')",
        )
        .await
        .expect("changes");
    let day1 = [
        "--where",
        "day = '2024-05-01'",
        "--delete-missing",
        "--batch-rows",
        "2",
    ];
    let ids = || async { rows(&dst, "SELECT id::text, name FROM users ORDER BY id").await };
    // The last batch fails: the rows missing from the source are still there.
    let failed = sync(&day1);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(failed.stderr.contains("check"), "{}", failed.stderr);
    assert!(ids().await.contains(&vec![s("2"), s("u2")]), "not deleted");
    source
        .batch_execute("UPDATE users SET name = 'new' WHERE id = 9")
        .await
        .expect("fix");
    let plan = sync(&[&day1[..], &["--dry-run"]].concat());
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "would delete the rows of public.users WHERE day = '2024-05-01' whose key (id) is not among them"
        ),
        "{}",
        plan.stdout
    );
    let done = sync(&day1);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(done.stdout.contains("1 deleted"), "{}", done.stdout);
    // Row 6 is outside the window: kept although the source lost it.
    let expect = |pairs: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        pairs.iter().map(|(i, n)| vec![s(i), s(n)]).collect()
    };
    assert_eq!(
        ids().await,
        expect(&[
            ("1", "u1"),
            ("3", "changed"),
            ("4", "u4"),
            ("5", "u5"),
            ("6", "u6"),
            ("7", "u7"),
            ("8", "u8"),
            ("9", "new")
        ])
    );
    // A window the source no longer has rows in: all of it goes.
    source
        .batch_execute("DELETE FROM users WHERE day = '2024-05-02'")
        .await
        .expect("empty day");
    let day2 = sync(&["--where", "day = '2024-05-02'", "--delete-missing"]);
    assert_eq!(day2.code, 0, "{}", day2.stderr);
    assert!(day2.stdout.contains("3 deleted"), "{}", day2.stdout);
    assert_eq!(all(&dst, "users").await, all(&src, "users").await);

    // Refused: with replace, and a --where the destination cannot evaluate.
    let replace = sync(&["--delete-missing", "--mode", "replace"]);
    assert_eq!(replace.code, 3, "{}", replace.stderr);
    dst.connect()
        .await
        .batch_execute("CREATE TABLE narrow (id int PRIMARY KEY, name text); INSERT INTO narrow VALUES (100, 'x')")
        .await
        .expect("narrow");
    let narrow = sync(&[
        "--to",
        "narrow",
        "--ignore-extra",
        "--where",
        "day = '2024-05-01'",
        "--delete-missing",
    ]);
    assert_ne!(narrow.code, 0, "{}", narrow.stdout);
    assert!(
        narrow
            .stderr
            .contains("--delete-missing applies --where to public.narrow as well"),
        "{}",
        narrow.stderr
    );
    assert_eq!(
        rows(&dst, "SELECT id::text FROM narrow").await,
        vec![vec![s("100")]],
        "nothing written"
    );
}

#[tokio::test]
async fn a_query_syncs_into_a_named_table_keyed_as_told() {
    let src = TestDb::new("sync_query_src").await;
    let dst = TestDb::new("sync_query_dst").await;
    let home = Scratch::new("sync-query");
    let source = src.connect().await;
    source
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer int NOT NULL, amount numeric(10,2), code varchar(5));
             INSERT INTO orders VALUES (1, 10, 1.50, 'a'), (2, 10, 2.25, 'bb'), (3, 20, 7.00, 'ccc')",
        )
        .await
        .expect("source");
    dst.connect()
        .await
        .batch_execute("CREATE TABLE codes (id int PRIMARY KEY, code varchar(5))")
        .await
        .expect("codes");
    let sync = |args: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--db", &dst.url])
            .args(args))
    };
    let totals = [
        "--query",
        "SELECT customer, sum(amount) AS total, count(*)::int AS n FROM orders GROUP BY customer;",
        "--to",
        "totals",
        "--key",
        "customer",
    ];
    let first = sync(&totals);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains("synced the query into totals: 2 rows read, 2 inserted"),
        "{}",
        first.stdout
    );
    let read = || async {
        rows(
            &dst,
            "SELECT customer::text, total::text, n::text FROM totals ORDER BY customer",
        )
        .await
    };
    assert_eq!(
        read().await,
        vec![
            vec![s("10"), s("3.75"), s("2")],
            vec![s("20"), s("7.00"), s("1")]
        ]
    );
    // Created keyed on --key: the next sync upserts.
    source
        .batch_execute("INSERT INTO orders VALUES (4, 20, 1.00, 'd')")
        .await
        .expect("more");
    let second = sync(&totals);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stdout.contains("0 inserted, 1 updated, 1 unchanged"),
        "{}",
        second.stdout
    );
    assert_eq!(read().await[1], vec![s("20"), s("8.00"), s("2")]);
    // The query's column types keep their modifiers: varchar(5) fits
    // varchar(5).
    let codes = sync(&[
        "--query",
        "SELECT id, code FROM orders",
        "--to",
        "codes",
        "--key",
        "id",
    ]);
    assert_eq!(codes.code, 0, "{}", codes.stderr);
    assert_eq!(
        rows(&dst, "SELECT string_agg(code, ',' ORDER BY id) FROM codes").await,
        vec![vec![s("a,bb,ccc,d")]]
    );
    // A query's rows may repeat a key (it has none of its own): into the
    // existing table, passed through, the last of them wins as in a load.
    let repeated = sync(&[
        "--query",
        "SELECT id, code::varchar(5) FROM (VALUES (1, 'x', 1), (1, 'y', 2), (5, 'e', 3)) v(id, code, n) ORDER BY n",
        "--to",
        "codes",
        "--key",
        "id",
    ]);
    assert_eq!(repeated.code, 0, "{}", repeated.stderr);
    assert!(
        repeated
            .stdout
            .contains("3 rows read, 1 inserted, 1 updated"),
        "{}",
        repeated.stdout
    );
    assert!(
        repeated.stderr.contains(PASSED_THROUGH),
        "{}",
        repeated.stderr
    );
    assert_eq!(
        rows(&dst, "SELECT string_agg(code, ',' ORDER BY id) FROM codes").await,
        vec![vec![s("y,bb,ccc,d,e")]]
    );
    // Refused: no --to or --key, two columns of one name, a key it lacks.
    let unnamed = sync(&["--query", "SELECT 1 AS id"]);
    assert_eq!(unnamed.code, 2, "{}", unnamed.stderr);
    let twice = sync(&[
        "--query",
        "SELECT id, id FROM orders",
        "--to",
        "twice",
        "--key",
        "id",
    ]);
    assert_eq!(twice.code, 3, "{}", twice.stderr);
    assert!(
        twice.stderr.contains("two columns named \"id\""),
        "{}",
        twice.stderr
    );
    let broken = sync(&[
        "--query",
        "SELEC id FROM orders",
        "--to",
        "broken",
        "--key",
        "id",
    ]);
    assert_ne!(broken.code, 0, "{}", broken.stdout);
    assert!(broken.stderr.contains("syntax error"), "{}", broken.stderr);
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*)::text FROM pg_class WHERE relname = 'broken'"
        )
        .await,
        vec![vec![s("0")]],
        "nothing created"
    );
    let nokey = sync(&[
        "--query",
        "SELECT id FROM orders",
        "--to",
        "k",
        "--key",
        "nope",
    ]);
    assert_eq!(nokey.code, 3, "{}", nokey.stderr);
    assert!(
        nokey
            .stderr
            .contains("the query returns no column \"nope\""),
        "{}",
        nokey.stderr
    );
}

#[tokio::test]
async fn defaults_that_are_constants_are_kept_and_sequences_advance() {
    let src = TestDb::new("sync_seq_src").await;
    let dst = TestDb::new("sync_seq_dst").await;
    let home = Scratch::new("sync-seq");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL DEFAULT 0,
                                 label text COLLATE \"C\" DEFAULT 'n/a', at timestamptz DEFAULT now());
             INSERT INTO items (id) SELECT generate_series(1, 40)",
        )
        .await
        .expect("source");
    let dest = dst.connect().await;
    dest.batch_execute(
        "CREATE TABLE tagged (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, qty int, serial_ bigserial)",
    )
    .await
    .expect("tagged");
    // The source named by a profile of pgbulk.toml.
    home.file(
        "pgbulk.toml",
        &format!("[profiles.app]\nurl = \"{}\"\n", src.url),
        0o600,
    );
    let sync = |args: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from-profile", "app", "--db", &dst.url])
            .args(args))
    };
    let created = sync(&["--table", "items"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(
        rows(
            &dst,
            "SELECT column_name::text, column_default::text FROM information_schema.columns \
             WHERE table_name = 'items' ORDER BY ordinal_position"
        )
        .await,
        vec![
            vec![s("id"), None],
            vec![s("qty"), s("0")],
            vec![s("label"), s("'n/a'::text")],
            vec![s("at"), None],
        ],
        "constants kept, now() not"
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT attname::text, collname::text FROM pg_attribute JOIN pg_collation c ON c.oid = attcollation \
             WHERE attrelid = 'items'::regclass AND attnum > 0 ORDER BY attnum"
        )
        .await,
        vec![vec![s("label"), s("C")]],
        "the column's collation copied"
    );
    // Into a table with an identity column: its sequence goes past the
    // copied ids, so the destination's own inserts do not collide. The
    // serial column not filled from the source is left alone.
    let tagged = sync(&["--table", "items", "--to", "tagged", "--ignore-extra"]);
    assert_eq!(tagged.code, 0, "{}", tagged.stderr);
    assert!(
        tagged
            .stderr
            .contains("advanced to 40, past the rows copied"),
        "{}",
        tagged.stderr
    );
    dest.batch_execute("INSERT INTO tagged (qty) VALUES (7)")
        .await
        .expect("the destination's own insert");
    assert_eq!(
        rows(&dst, "SELECT max(id)::text, max(serial_)::text FROM tagged").await,
        vec![vec![s("41"), s("41")]]
    );
}

#[tokio::test]
async fn jobs_read_ranges_of_one_snapshot_and_a_rerun_redoes_only_the_unfinished() {
    let src = TestDb::new("sync_jobs_src").await;
    let dst = TestDb::new("sync_jobs_dst").await;
    let home = Scratch::new("sync-jobs");
    let source = src.connect().await;
    source
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT i, 'row ' || i FROM generate_series(1, 100000) i;
             CREATE TABLE heap (v text, n int);
             INSERT INTO heap SELECT 'value ' || i, i % 7 FROM generate_series(1, 100000) i;
             CREATE TABLE parted (id int, day date, v text, PRIMARY KEY (id, day))
                 PARTITION BY RANGE (day);
             CREATE TABLE parted_jan PARTITION OF parted
                 FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
             CREATE TABLE parted_feb PARTITION OF parted
                 FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
             CREATE TABLE parted_rest PARTITION OF parted DEFAULT;
             INSERT INTO parted SELECT i, '2024-01-01'::date + i % 90, 'row ' || i
                 FROM generate_series(1, 100000) i;
             CREATE TABLE family (v text, n int);
             CREATE TABLE family_child (extra int) INHERITS (family);
             INSERT INTO family SELECT 'parent ' || i, i FROM generate_series(1, 5000) i;
             INSERT INTO family_child SELECT 'child ' || i, i, i FROM generate_series(1, 95000) i;
             ANALYZE big, heap, parted, family, family_child;",
        )
        .await
        .expect("source");
    let sync = |args: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--db", &dst.url, "--jobs", "2"])
            .args(args))
    };
    let same = |table: &str| {
        format!(
            "SELECT count(*)::text, md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
        )
    };
    let plan = sync(&["--table", "big", "--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("in 2 ranges read at once from one snapshot:\n  \"id\" < "),
        "{}",
        plan.stdout
    );
    // By the integer key, and by blocks (no key) on PostgreSQL 14 and
    // later (before, in one): of a plain table, of every partition, of a
    // parent and its child alike.
    let version = server_version(&src).await;
    for table in ["big", "heap", "parted", "family"] {
        let out = sync(&["--table", table]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        // A plain table holds the rows of every partition or child.
        let shape = match table {
            "parted" => {
                "the source is partitioned (3 partitions); public.parted is created as a plain table"
            }
            "family" => "the source has 1 child table by inheritance, whose rows it reads too",
            _ => "",
        };
        assert!(out.stderr.contains(shape), "{}", out.stderr);
        let ranges = if table != "big" && version < 140_000 {
            ""
        } else {
            " (in 2 ranges)"
        };
        assert!(
            out.stdout.contains(&format!(
                "synced {table}{ranges} into {table}: 100,000 rows read"
            )),
            "{}",
            out.stdout
        );
        assert_eq!(
            rows(&dst, &same(table)).await,
            rows(&src, &same(table)).await,
            "{table}"
        );
    }
    // The upper range fails; the lower one commits and is not read again.
    dst.connect()
        .await
        .batch_execute("CREATE TABLE guarded (id int PRIMARY KEY, v text CHECK (v <> 'row 90000'))")
        .await
        .expect("guarded");
    let guarded = ["--table", "big", "--to", "guarded", "--batch-rows", "10000"];
    let failed = sync(&guarded);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(failed.stderr.contains("range 2 of 2"), "{}", failed.stderr);
    // Sync has no --max-errors to suggest.
    assert!(!failed.stderr.contains("--max-errors"), "{}", failed.stderr);
    // The boundary the plan printed: the lower range is every id below.
    let bound: u64 = plan
        .stdout
        .split("\"id\" < ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("a boundary");
    assert!(
        rows(
            &dst,
            &format!("SELECT count(*)::text FROM guarded WHERE id < {bound}")
        )
        .await
            == vec![vec![Some((bound - 1).to_string())]],
        "the lower range committed"
    );
    source
        .batch_execute("UPDATE big SET v = 'changed' WHERE id = 90000")
        .await
        .expect("fix");
    // Run again with one job: the interrupted run's plan is gone on with
    // all the same (read whole, a table without a key would get the
    // lower range's rows twice).
    let rerun = run(pgbulk(&home)
        .args(["sync", "--from", &src.url, "--db", &dst.url, "--jobs", "1"])
        .args(guarded));
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert!(
        rerun
            .stderr
            .contains("1 of 2 ranges were synced by an interrupted run and skipped"),
        "{}",
        rerun.stderr
    );
    let read_again = (100_000 - (bound - 1)).to_string();
    let read_again = format!(
        "{},{}",
        &read_again[..read_again.len() - 3],
        &read_again[read_again.len() - 3..]
    );
    assert!(
        rerun.stdout.contains(&format!(": {read_again} rows read")),
        "only the unfinished range is read ({read_again} rows): {}",
        rerun.stdout
    );
    assert_eq!(
        rows(&dst, &same("guarded")).await,
        rows(&src, &same("big")).await
    );
    // Incremental in ranges: the watermark is stored once both are in.
    source
        .batch_execute(
            "CREATE TABLE stamped (id int PRIMARY KEY, at timestamptz NOT NULL);
             INSERT INTO stamped SELECT i, '2024-01-01'::timestamptz + i * interval '1 second'
             FROM generate_series(1, 100000) i; ANALYZE stamped;",
        )
        .await
        .expect("stamped");
    let first = sync(&["--table", "stamped", "--incremental", "at"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first
            .stdout
            .contains("(in 2 ranges) into stamped: 100,000 rows read"),
        "{}",
        first.stdout
    );
    let second = sync(&["--table", "stamped", "--incremental", "at"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stdout.contains(": 0 rows read"), "{}", second.stdout);
}

/// A stored watermark, and the ranges an interrupted run finished, go
/// with the destination: after it was dropped, the sync reads everything
/// again and says so. Emptied, it keeps its watermark (a downstream job
/// may take rows out of it).
#[tokio::test]
async fn a_dropped_destination_is_read_again_from_the_start() {
    let src = TestDb::new("sync_gone_src").await;
    let dst = TestDb::new("sync_gone_dst").await;
    let home = Scratch::new("sync-gone");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE stamped (id int PRIMARY KEY, v text, at timestamptz NOT NULL);
             INSERT INTO stamped SELECT i, 'row ' || i, '2024-01-01'::timestamptz + i * interval '1 second'
             FROM generate_series(1, 100000) i; ANALYZE stamped;",
        )
        .await
        .expect("source");
    let sync = |args: &[&str]| {
        run(pgbulk(&home)
            .args([
                "sync", "--from", &src.url, "--db", &dst.url, "--table", "stamped",
            ])
            .args(args))
    };
    let count = || rows(&dst, "SELECT count(*)::text FROM stamped");
    let all = vec![vec![s("100000")]];
    let first = sync(&["--incremental", "at"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    dst.connect()
        .await
        .batch_execute("DROP TABLE stamped")
        .await
        .expect("drop");
    let dropped = sync(&["--incremental", "at"]);
    assert_eq!(dropped.code, 0, "{}", dropped.stderr);
    assert!(
        dropped.stderr.contains(
            "public.stamped did not exist, though an earlier sync stored a watermark for it: read from the start"
        ),
        "{}",
        dropped.stderr
    );
    assert_eq!(count().await, all, "after a DROP");
    dst.connect()
        .await
        .batch_execute("TRUNCATE stamped")
        .await
        .expect("truncate");
    let emptied = sync(&["--incremental", "at"]);
    assert_eq!(emptied.code, 0, "{}", emptied.stderr);
    assert!(
        emptied.stdout.contains(": 0 rows read"),
        "{}",
        emptied.stdout
    );
    assert_eq!(count().await, vec![vec![s("0")]], "after a TRUNCATE");
    // Two ranges: the upper one fails, the lower one is recorded done;
    // the table dropped, the rerun reads both.
    dst.connect()
        .await
        .batch_execute(
            "DROP TABLE stamped;
             CREATE TABLE stamped (id int PRIMARY KEY, v text CHECK (v <> 'row 90000'), at timestamptz NOT NULL)",
        )
        .await
        .expect("guarded");
    let failed = sync(&["--jobs", "2", "--batch-rows", "10000"]);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(failed.stderr.contains("range 2 of 2"), "{}", failed.stderr);
    assert_ne!(
        count().await,
        vec![vec![s("0")]],
        "the lower range committed"
    );
    dst.connect()
        .await
        .batch_execute("DROP TABLE stamped")
        .await
        .expect("drop");
    let rerun = sync(&["--jobs", "2", "--batch-rows", "10000"]);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert!(!rerun.stderr.contains("skipped"), "{}", rerun.stderr);
    assert_eq!(count().await, all, "after a DROP of a half-synced table");
}

#[tokio::test]
async fn weird_names_arrays_and_domains_are_synced_by_name() {
    let src = TestDb::new("sync_weird_src").await;
    let dst = TestDb::new("sync_weird_dst").await;
    let home = Scratch::new("sync-weird");
    src.connect()
        .await
        .batch_execute(
            r#"CREATE SCHEMA "My Schema";
               CREATE DOMAIN posint AS int CHECK (VALUE > 0);
               CREATE TABLE "My Schema"."Weird ""T""" (id int PRIMARY KEY, "select" text, "a b" posint,
                                                      "Ids" int[], tags varchar(5)[]);
               INSERT INTO "My Schema"."Weird ""T""" VALUES
                 (1, 'x', 5, '{1,NULL,3}', '{"a,b",NULL,""}'), (2, NULL, NULL, '{}', NULL)"#,
        )
        .await
        .expect("source");
    dst.connect()
        .await
        .batch_execute(
            r#"CREATE SCHEMA "Other";
               CREATE TABLE "Other"."dest t" ("Ids" bigint[], tags text[], "a b" bigint, "select" text, id bigint PRIMARY KEY)"#,
        )
        .await
        .expect("destination");
    let out = run(pgbulk(&home).args([
        "sync",
        "--from",
        &src.url,
        "--table",
        r#""My Schema"."Weird ""T""""#,
        "--to",
        r#""Other"."dest t""#,
        "--db",
        &dst.url,
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = |table: &str| {
        format!(
            r#"SELECT id::text, "select", "a b"::text, "Ids"::text, tags::text FROM {table} ORDER BY id"#
        )
    };
    assert_eq!(
        rows(&dst, &read(r#""Other"."dest t""#)).await,
        rows(&src, &read(r#""My Schema"."Weird ""T""""#)).await
    );
    assert_eq!(
        rows(
            &dst,
            r#"SELECT "Ids"::text, tags::text FROM "Other"."dest t" WHERE id = 1"#
        )
        .await,
        vec![vec![s("{1,NULL,3}"), s(r#"{"a,b",NULL,""}"#)]]
    );
}

/// A destination created from the source's definition gets the enums and
/// domains it lacks, as the source defines them (labels in order, base
/// types first, checks, collation, default, NOT NULL), in their schemas;
/// those it has are used; a dry run only shows them.
#[tokio::test]
async fn a_created_destination_gets_the_enums_and_domains_it_lacks() {
    let src = TestDb::new("sync_types_src").await;
    let dst = TestDb::new("sync_types_dst").await;
    let home = Scratch::new("sync-new-types");
    let source = src.connect().await;
    // A label added later sorts where it was added (a statement of its
    // own: a new label is usable once committed).
    source
        .batch_execute(
            r#"CREATE SCHEMA "App";
               CREATE TYPE "App"."Color" AS ENUM ('red', 'it''s', 'Blue', 'z')"#,
        )
        .await
        .expect("source enum");
    source
        .batch_execute(r#"ALTER TYPE "App"."Color" ADD VALUE 'green' BEFORE 'Blue'"#)
        .await
        .expect("source label");
    source
        .batch_execute(
            r#"CREATE DOMAIN posint AS int CHECK (VALUE > 0);
               CREATE DOMAIN small AS posint CHECK (VALUE < 100);
               ALTER DOMAIN small ADD CONSTRAINT "not 13" CHECK (VALUE <> 13) NOT VALID;
               CREATE DOMAIN "App".code AS text COLLATE "C" DEFAULT 'none' NOT NULL CHECK (length(VALUE) < 6);
               CREATE DOMAIN "App".palette AS "App"."Color"[] CHECK (cardinality(VALUE) < 3);
               CREATE TYPE other AS ENUM ('x');
               CREATE TABLE t (id int PRIMARY KEY, c "App"."Color", cs "App"."Color"[], p "App".palette,
                               n small, code "App".code, o other);
               INSERT INTO t VALUES (1, 'it''s', '{green,NULL}', '{Blue,red}', 99, 'ab', 'x'),
                                    (2, NULL, NULL, NULL, NULL, 'none', NULL)"#,
        )
        .await
        .expect("source");
    // The destination has "other" already (with another label): it is used.
    dst.connect()
        .await
        .batch_execute("CREATE TYPE other AS ENUM ('y', 'x')")
        .await
        .expect("destination type");
    let sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args(["sync", "--from", &src.url, "--table", "t", "--db", &dst.url])
            .args(extra))
    };
    let plan = sync(&["--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    for statement in [
        r#"CREATE SCHEMA "App";"#,
        r#"CREATE TYPE "App"."Color" AS ENUM ('red', 'it''s', 'green', 'Blue', 'z');"#,
        r#"CREATE DOMAIN "public"."posint" AS integer"#,
        r#"CREATE DOMAIN "App"."palette" AS "App"."Color"[]"#,
    ] {
        assert!(
            plan.stdout.contains(statement),
            "{statement}\n{}",
            plan.stdout
        );
    }
    assert!(!plan.stdout.contains(r#""other" AS"#), "{}", plan.stdout);
    let types = "SELECT n.nspname || '.' || t.typname FROM pg_type t \
                 JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE t.typtype IN ('e', 'd') AND n.nspname <> 'information_schema' ORDER BY 1";
    assert_eq!(rows(&dst, types).await, vec![vec![s("public.other")]]);

    let out = sync(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for made in [
        r#"created an enum "App"."Color""#,
        r#"created a domain "public"."posint""#,
        r#"created a domain "public"."small""#,
        r#"created a domain "App"."code""#,
        r#"created a domain "App"."palette""#,
    ] {
        assert!(out.stderr.contains(made), "{made}\n{}", out.stderr);
    }
    let read = "SELECT id::text, c::text, cs::text, p::text, n::text, code::text, o::text FROM t ORDER BY id";
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
    // The same definitions: labels in order, checks, collation, default.
    let described = r#"SELECT t.typname::text,
               (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid),
               format_type(t.typbasetype, t.typtypmod), t.typnotnull::text, t.typdefault,
               (SELECT collname::text FROM pg_collation WHERE oid = t.typcollation),
               (SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname)
                  FROM pg_constraint WHERE contypid = t.oid AND contype = 'c')
        FROM pg_type t WHERE t.typtype IN ('e', 'd') AND t.typname <> 'other'
          AND t.typnamespace <> 'information_schema'::regnamespace ORDER BY 1"#;
    let mut expected = rows(&src, described).await;
    for row in &mut expected {
        // Validated in the destination (it had no value to check).
        if let Some(Some(checks)) = row.get_mut(6) {
            *checks = checks.replace(" NOT VALID", "");
        }
    }
    assert_eq!(rows(&dst, described).await, expected);
    // The domains check in the destination too.
    let refused = dst
        .connect()
        .await
        .batch_execute("INSERT INTO t (id, n) VALUES (3, 13)")
        .await
        .expect_err("13 is not small");
    assert!(format!("{refused:?}").contains("not 13"), "{refused:?}");
    // Into another new table: the types are there, none is created again.
    let again = sync(&["--to", "t2"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains("created "), "{}", again.stderr);
    assert_eq!(
        rows(&dst, &read.replace("FROM t ", "FROM t2 ")).await,
        rows(&src, read).await
    );
}

/// Composite types the destination lacks are created as the source
/// defines them, the types of their attributes first (a composite of
/// another schema, an enum inside one); one the destination has is used
/// as it is. Values, arrays of them and NULL attributes come through.
#[tokio::test]
async fn a_created_destination_gets_the_composite_types_it_lacks() {
    let src = TestDb::new("sync_composite_src").await;
    let dst = TestDb::new("sync_composite_dst").await;
    let home = Scratch::new("sync-composite");
    src.connect()
        .await
        .batch_execute(
            r#"CREATE SCHEMA "Geo";
               CREATE TYPE mood AS ENUM ('sad', 'ok');
               CREATE TYPE "Geo"."Point 2" AS (x numeric(8,2), label text COLLATE "C", tags int[]);
               CREATE TYPE visit AS (at "Geo"."Point 2", path "Geo"."Point 2"[], m mood);
               ALTER TYPE visit DROP ATTRIBUTE m;
               ALTER TYPE visit ADD ATTRIBUTE feeling mood;
               CREATE TYPE kept AS (a int);
               CREATE TABLE trips (id int PRIMARY KEY, v visit, vs visit[], k kept);
               INSERT INTO trips VALUES
                 (1, ROW(ROW(1.5, 'a"b', '{1,NULL}'), ARRAY[ROW(NULL, NULL, NULL)::"Geo"."Point 2"], 'ok'),
                     ARRAY[NULL, ROW(NULL, NULL, 'sad')::visit], ROW(7)),
                 (2, NULL, NULL, NULL)"#,
        )
        .await
        .expect("source");
    dst.connect()
        .await
        .batch_execute("CREATE TYPE kept AS (a int)")
        .await
        .expect("destination type");
    let sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args([
                "sync", "--from", &src.url, "--table", "trips", "--db", &dst.url,
            ])
            .args(extra))
    };
    let plan = sync(&["--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let point = r#"CREATE TYPE "Geo"."Point 2" AS (x numeric(8,2), label text COLLATE pg_catalog."C", tags integer[]);"#;
    let visit = r#"CREATE TYPE "public"."visit" AS (at "Geo"."Point 2", path "Geo"."Point 2"[], feeling public.mood);"#;
    for statement in [point, visit] {
        assert!(
            plan.stdout.contains(statement),
            "{statement}\n{}",
            plan.stdout
        );
    }
    let at = |text: &str| plan.stdout.find(text).expect(text);
    assert!(
        at("\"public\".\"mood\" AS ENUM") < at(visit),
        "{}",
        plan.stdout
    );
    assert!(at(point) < at(visit), "{}", plan.stdout);
    assert!(!plan.stdout.contains(r#""kept" AS"#), "{}", plan.stdout);

    let out = sync(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for made in [
        r#"created a composite type "Geo"."Point 2""#,
        r#"created a composite type "public"."visit""#,
        r#"created an enum "public"."mood""#,
    ] {
        assert!(out.stderr.contains(made), "{made}\n{}", out.stderr);
    }
    let read = "SELECT id::text, v::text, vs::text, k::text FROM trips ORDER BY id";
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
    assert_eq!(
        rows(
            &dst,
            "SELECT ((v).at).label, ((v).path[1]).x::text FROM trips WHERE id = 1"
        )
        .await,
        vec![vec![s("a\"b"), None]]
    );
    // The same attributes: names, types and collations, in order.
    let described = r#"SELECT t.typname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
               (SELECT collname::text FROM pg_collation WHERE oid = a.attcollation)
        FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
        WHERE t.typtype = 'c' AND t.typname IN ('Point 2', 'visit', 'kept')
          AND a.attnum > 0 AND NOT a.attisdropped ORDER BY t.typname, a.attnum"#;
    assert_eq!(rows(&dst, described).await, rows(&src, described).await);
    // Again: the rows are there, nothing is created.
    let again = sync(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains("created "), "{}", again.stderr);
    assert!(
        again.stdout.contains("0 inserted, 0 updated, 2 unchanged"),
        "{}",
        again.stdout
    );
}

/// The public schema's range types: name, subtype, collation and
/// subtype_diff.
const DESCRIBED_RANGES: &str = "SELECT t.typname::text, format_type(r.rngsubtype, NULL), \
     (SELECT collname::text FROM pg_collation WHERE oid = r.rngcollation), r.rngsubdiff::text \
     FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid \
     WHERE t.typnamespace = 'public'::regnamespace ORDER BY 1";

/// Range types the destination lacks are created as the source defines
/// them (subtype, collation, a built-in subtype_diff; a user's function
/// left out; the multirange's name where both servers have multiranges),
/// after an enum they range over; on this server and on one of the
/// machine's own PostgreSQL (another major in CI).
#[tokio::test(flavor = "multi_thread")]
async fn a_created_destination_gets_the_range_types_it_lacks() {
    let src = TestDb::new("sync_range_src").await;
    let dst = TestDb::new("sync_range_dst").await;
    let home = Scratch::new("sync-range");
    let source = src.connect().await;
    let version = server_version(&src).await;
    // Multiranges (and naming them) from PostgreSQL 14 on.
    let (multirange, ms_column, ms_value) = if version >= 140_000 {
        (
            ", multirange_type_name = moods",
            ", ms moods",
            ", '{[sad,ok), [happy,happy]}'",
        )
    } else {
        ("", "", "")
    };
    source
        .batch_execute(&format!(
            r#"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
               CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
               CREATE TYPE moodrange AS RANGE (subtype = mood{multirange});
               CREATE TYPE "Text range" AS RANGE (subtype = text, collation = "C");
               CREATE FUNCTION text_diff(a text, b text) RETURNS float8 LANGUAGE sql IMMUTABLE AS 'SELECT 0.0::float8';
               CREATE TYPE named AS RANGE (subtype = text, subtype_diff = text_diff);
               CREATE TABLE spans (id int PRIMARY KEY, f floatrange, m moodrange{ms_column},
                                   t "Text range"[], n named);
               INSERT INTO spans VALUES
                 (1, '[1.5,2.5)', '[sad,happy]'{ms_value}, ARRAY['[a,b)'::"Text range", 'empty'], '[x,y]'),
                 (2, 'empty', NULL{}, NULL, NULL)"#,
            if ms_column.is_empty() { "" } else { ", '{}'" }
        ))
        .await
        .expect("source");
    let plan = run(pgbulk(&home).args([
        "sync",
        "--from",
        &src.url,
        "--table",
        "spans",
        "--db",
        &dst.url,
        "--dry-run",
    ]));
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let statement = |name: &str| {
        plan.stdout
            .lines()
            .find(|l| l.starts_with(&format!("CREATE TYPE \"public\".{name} AS RANGE")))
            .unwrap_or_else(|| panic!("{name}\n{}", plan.stdout))
            .to_owned()
    };
    assert!(
        statement("\"floatrange\"")
            .contains("SUBTYPE = double precision, SUBTYPE_DIFF = pg_catalog.float8mi")
    );
    let text_range = statement("\"Text range\"");
    assert!(
        text_range.contains(r#"SUBTYPE = text, COLLATION = pg_catalog."C""#),
        "{text_range}"
    );
    assert!(
        !statement("\"named\"").contains("SUBTYPE_DIFF"),
        "{}",
        plan.stdout
    );
    let mood_range = statement("\"moodrange\"");
    assert!(mood_range.contains("SUBTYPE = public.mood"), "{mood_range}");
    assert_eq!(
        mood_range.contains("MULTIRANGE_TYPE_NAME = public.moods"),
        version >= 140_000,
        "{mood_range}"
    );
    let at = |text: &str| plan.stdout.find(text).expect(text);
    assert!(
        at("\"public\".\"mood\" AS ENUM") < at(&mood_range),
        "{}",
        plan.stdout
    );

    let (_other, other_url, client) = other_cluster().await;
    let read = "SELECT to_jsonb(s)::text FROM spans s ORDER BY id";
    let expected = rows(&src, read).await;
    let mut ranges_expected = rows(&src, DESCRIBED_RANGES).await;
    for row in &mut ranges_expected {
        if row[3].as_deref() == Some("text_diff") {
            row[3] = Some("-".to_owned());
        }
    }
    let here = dst.connect().await;
    for (url, client) in [(&dst.url, &here), (&other_url, &client)] {
        let out =
            run(pgbulk(&home).args(["sync", "--from", &src.url, "--table", "spans", "--db", url]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        for made in ["floatrange", "moodrange", "Text range", "named"] {
            assert!(
                out.stderr
                    .contains(&format!("created a range type \"public\".\"{made}\"")),
                "{made}\n{}",
                out.stderr
            );
        }
        let got: Vec<Vec<Option<String>>> = client
            .query(read, &[])
            .await
            .expect("read")
            .iter()
            .map(|r| vec![r.get(0)])
            .collect();
        assert_eq!(got, expected);
        // The same definitions, but the user's subtype_diff.
        let described: Vec<Vec<Option<String>>> = client
            .query(DESCRIBED_RANGES, &[])
            .await
            .expect("ranges")
            .iter()
            .map(|r| (0..4).map(|i| r.get(i)).collect())
            .collect();
        assert_eq!(described, ranges_expected);
    }
}

/// A type of an extension the destination lacks (citext) is not made up:
/// the run is refused before anything is written, naming the
/// `CREATE EXTENSION` to run there; once it ran, the values come through.
#[tokio::test]
async fn a_created_destination_without_the_sources_extension_is_refused_naming_it() {
    let src = TestDb::new("sync_ext_src").await;
    let dst = TestDb::new("sync_ext_dst").await;
    let home = Scratch::new("sync-ext");
    src.connect()
        .await
        .batch_execute(
            "CREATE EXTENSION citext;
             CREATE DOMAIN handle AS citext CHECK (length(VALUE) < 20);
             CREATE TABLE users (id int PRIMARY KEY, email citext, aliases citext[], h handle);
             INSERT INTO users VALUES (1, 'Ann@Example.org', '{A,b}', 'Ann'), (2, NULL, NULL, NULL)",
        )
        .await
        .expect("source");
    let dest = dst.connect().await;
    let sync = || {
        run(pgbulk(&home).args([
            "sync", "--from", &src.url, "--table", "users", "--db", &dst.url,
        ]))
    };
    let table_there = "SELECT count(*)::text FROM pg_class WHERE relname IN ('users', 'handle')";
    let refused = sync();
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(r#""public"."citext", of extension citext, which the destination lacks: run `CREATE EXTENSION "citext" SCHEMA "public"` there"#),
        "{}",
        refused.stderr
    );
    assert_eq!(rows(&dst, table_there).await, vec![vec![s("0")]]);
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*)::text FROM pg_type WHERE typname = 'handle'"
        )
        .await,
        vec![vec![s("0")]],
        "no domain created before the refusal"
    );
    // Installed in another schema: the type is not the source's.
    dest.batch_execute("CREATE SCHEMA ext; CREATE EXTENSION citext SCHEMA ext")
        .await
        .expect("citext elsewhere");
    let elsewhere = sync();
    assert_eq!(elsewhere.code, 3, "{}", elsewhere.stderr);
    assert!(
        elsewhere
            .stderr
            .contains(r#"the destination has citext in schema "ext", the source in "public""#),
        "{}",
        elsewhere.stderr
    );
    dest.batch_execute("DROP EXTENSION citext; CREATE EXTENSION citext")
        .await
        .expect("citext");
    let out = sync();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = "SELECT id::text, email::text, aliases::text, h::text FROM users ORDER BY id";
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
    assert_eq!(
        rows(
            &dst,
            "SELECT id::text FROM users WHERE email = 'ann@EXAMPLE.org'"
        )
        .await,
        vec![vec![s("1")]],
        "compared as citext"
    );
}

/// A created destination gets the source's validated checks and an index
/// for each of its indexes, plain ones for unique and exclusion ones (a
/// row the source deleted stays in the destination); what the destination
/// cannot build is left out, naming it and why.
#[tokio::test]
async fn a_created_destination_gets_the_sources_checks_and_indexes() {
    let src = TestDb::new("sync_idx_src").await;
    let dst = TestDb::new("sync_idx_dst").await;
    let home = Scratch::new("sync-idx");
    src.connect()
        .await
        .batch_execute(
            "CREATE EXTENSION pg_trgm;
             CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, name text,
                                 age int CHECK (age >= 0), during tstzrange,
                                 EXCLUDE USING gist (during WITH &&));
             ALTER TABLE users ADD CONSTRAINT age_small CHECK (age < 200) NOT VALID;
             CREATE INDEX users_lower ON users (lower(name)) WHERE age > 10;
             CREATE UNIQUE INDEX users_name_u ON users (name, email);
             CREATE INDEX users_trgm ON users USING gin (name gin_trgm_ops);
             INSERT INTO users
             SELECT i, 'u' || i || '@x', 'user ' || i, i % 90,
                    tstzrange(timestamptz '2020-01-01' + i * interval '1 day',
                              timestamptz '2020-01-01' + (i + 1) * interval '1 day')
             FROM generate_series(1, 500) i",
        )
        .await
        .expect("source");
    let sync = |extra: &[&str]| {
        run(pgbulk(&home)
            .args([
                "sync", "--from", &src.url, "--table", "users", "--db", &dst.url,
            ])
            .args(extra))
    };
    let dry = sync(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    for statement in [
        r#"CONSTRAINT "users_age_check" CHECK ((age >= 0))"#,
        r#"CREATE INDEX ON "public"."users" USING btree (lower(name)) WHERE (age > 10);"#,
        r#"CREATE INDEX ON "public"."users" USING btree (email);"#,
        r#"CREATE INDEX ON "public"."users" USING gist (during);"#,
    ] {
        assert!(
            dry.stdout.contains(statement),
            "{statement}: {}",
            dry.stdout
        );
    }
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*)::text FROM pg_class WHERE relname = 'users'"
        )
        .await,
        vec![vec![s("0")]],
        "a dry run creates nothing"
    );
    let out = sync(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for note in [
        "the source's index users_trgm was left out: the destination cannot build it (operator class",
        "the source's check constraint age_small was left out: the source has rows it did not check (NOT VALID)",
        "public.users has plain indexes for the source's users_during_excl (EXCLUDE USING gist (during WITH &&)), users_email_key (UNIQUE (email)), unique index users_name_u:",
    ] {
        assert!(out.stderr.contains(note), "{note}: {}", out.stderr);
    }
    assert_eq!(
        rows(
            &dst,
            "SELECT i.indisunique::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = 'users'::regclass AND NOT i.indisprimary ORDER BY 2"
        )
        .await,
        vec![
            vec![
                s("false"),
                s("CREATE INDEX users_during_idx ON public.users USING gist (during)")
            ],
            vec![
                s("false"),
                s("CREATE INDEX users_email_idx ON public.users USING btree (email)")
            ],
            vec![
                s("false"),
                s(
                    "CREATE INDEX users_lower_idx ON public.users USING btree (lower(name)) WHERE (age > 10)"
                )
            ],
            vec![
                s("false"),
                s("CREATE INDEX users_name_email_idx ON public.users USING btree (name, email)")
            ],
        ]
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'users'::regclass AND contype NOT IN ('p', 'n') ORDER BY 1"
        )
        .await,
        vec![vec![s("users_age_check"), s("CHECK ((age >= 0))")]]
    );
    let read = "SELECT id::text, email, name, age::text, during::text FROM users ORDER BY id";
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
    // A user deleted at the source (not here: no --delete-missing) and
    // another given the email: the destination takes both.
    src.connect()
        .await
        .batch_execute(
            "DELETE FROM users WHERE id = 2;
             INSERT INTO users VALUES (501, 'u2@x', 'user 2', 20, NULL)",
        )
        .await
        .expect("source change");
    let again = sync(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        rows(
            &dst,
            "SELECT id::text FROM users WHERE email = 'u2@x' ORDER BY id"
        )
        .await,
        vec![vec![s("2")], vec![s("501")]]
    );
    // A check the source holds is the destination's too.
    let refused = dst
        .connect()
        .await
        .batch_execute("INSERT INTO users (id, age) VALUES (1000, -1)")
        .await;
    assert!(refused.is_err(), "the check refuses a negative age");
}

/// A huge value passes through whole: the source's message and the
/// destination's write buffer hold it, nothing else (before, a third
/// copy), into a new table and into an existing one (staged). The peak is
/// measured above the same sync's peak for small values: a debug binary's
/// own pages alone vary by several MiB between machines.
#[tokio::test]
async fn a_huge_value_costs_about_twice_its_size() {
    let src = TestDb::new("sync_huge_src").await;
    let dst = TestDb::new("sync_huge_dst").await;
    let home = Scratch::new("sync-huge");
    const VALUE: usize = 96 << 20;
    src.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE h (id int PRIMARY KEY, body text);
             INSERT INTO h VALUES (1, 'small'), (2, repeat('x', {VALUE})), (3, 'tiny');
             CREATE TABLE small (id int PRIMARY KEY, body text);
             INSERT INTO small VALUES (1, 'small'), (3, 'tiny')"
        ))
        .await
        .expect("source");
    let sync_table = |table: &str| {
        peak_memory(pgbulk(&home).args([
            "sync", "--from", &src.url, "--table", table, "--db", &dst.url,
        ]))
    };
    let (code, baseline) = sync_table("small");
    assert_eq!(code, 0, "the small table");
    for round in 0..2 {
        if round == 1 {
            src.connect()
                .await
                .batch_execute("UPDATE h SET body = body || 'y' WHERE id = 2")
                .await
                .expect("update");
        }
        let (code, kib) = sync_table("h");
        assert_eq!(code, 0, "round {round}");
        let value_kib = (VALUE / 1024) as u64;
        assert!(
            kib.saturating_sub(baseline) < value_kib * 2 + 12 * 1024,
            "round {round}: peak {kib} KiB (small values: {baseline} KiB) for a value of {value_kib} KiB"
        );
    }
    let read = "SELECT id::text, md5(body) FROM h ORDER BY id";
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
}

/// A generated column's values are the source's data: a created
/// destination computes them as the source does (or holds them, where it
/// cannot compute them), an existing one takes them into a plain column,
/// and one without the column refuses the run.
#[tokio::test]
async fn generated_columns_are_computed_or_copied_never_dropped() {
    let src = TestDb::new("sync_gen_src").await;
    let dst = TestDb::new("sync_gen_dst").await;
    let home = Scratch::new("sync-gen");
    let source = src.connect().await;
    let version = server_version(&src).await;
    // PostgreSQL 18's virtual generated columns too.
    let virtual_column = if version >= 180_000 {
        ", thrice int GENERATED ALWAYS AS (qty * 3) VIRTUAL"
    } else {
        ""
    };
    source
        .batch_execute(&format!(
            "CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
             CREATE TABLE g (id int PRIMARY KEY, qty int,
                             label text GENERATED ALWAYS AS ('#' || qty) STORED CHECK (label <> '#0'),
                             doubled int GENERATED ALWAYS AS (twice(qty)) STORED{virtual_column});
             CREATE INDEX g_label ON g (label);
             INSERT INTO g (id, qty) SELECT i, i FROM generate_series(1, 50) i"
        ))
        .await
        .expect("source");
    let sync = |to: &str| {
        run(pgbulk(&home).args([
            "sync", "--from", &src.url, "--table", "g", "--db", &dst.url, "--to", to,
        ]))
    };
    let out = sync("g");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("the source's generated column doubled is a plain column here, holding the source's values: the destination cannot compute it (function public.twice(integer) does not exist)"),
        "{}",
        out.stderr
    );
    let kinds = "SELECT attname::text, attgenerated::text FROM pg_attribute \
                 WHERE attrelid = 'g'::regclass AND attnum > 0 ORDER BY attnum";
    let mut expected = vec![
        vec![s("id"), s("")],
        vec![s("qty"), s("")],
        vec![s("label"), s("s")],
        vec![s("doubled"), s("")],
    ];
    if version >= 180_000 {
        expected.push(vec![s("thrice"), s("v")]);
    }
    assert_eq!(rows(&dst, kinds).await, expected);
    let read = "SELECT * FROM g ORDER BY id";
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
    assert_eq!(
        rows(
            &dst,
            "SELECT count(*)::text FROM pg_index WHERE indrelid = 'g'::regclass"
        )
        .await,
        vec![vec![s("2")]],
        "the key and the index on the generated column"
    );
    // Changed at the source: the computed column follows, the copied one
    // is copied again.
    source
        .batch_execute("UPDATE g SET qty = qty + 100 WHERE id <= 5")
        .await
        .expect("update");
    let again = sync("g");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("5 updated, 45 unchanged"),
        "{}",
        again.stdout
    );
    assert_eq!(rows(&dst, read).await, rows(&src, read).await);
    // A destination without the columns refuses the run, naming them.
    dst.connect()
        .await
        .batch_execute("CREATE TABLE narrow (id int PRIMARY KEY, qty int)")
        .await
        .expect("narrow");
    let refused = sync("narrow");
    assert_eq!(refused.code, 9, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "column \"label\" (text, generated) is not in the destination (--ignore-extra leaves it out)"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(
        rows(&dst, "SELECT count(*)::text FROM narrow").await,
        vec![vec![s("0")]]
    );
}

/// A throwaway cluster of the machine's own PostgreSQL (another major
/// than the suite's in CI), its URL and a session on it.
async fn other_cluster() -> (pgbulk::local::Cluster, String, tokio_postgres::Client) {
    let other = tokio::task::spawn_blocking(|| {
        pgbulk::local::Cluster::throwaway_with(&pgbulk::local::ServerSetup::default())
    })
    .await
    .expect("join")
    .expect("a second cluster of the machine's PostgreSQL");
    let url = other.tcp_url("postgres").expect("url");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the second cluster");
    tokio::spawn(connection);
    (other, url, client)
}

/// Between two servers: the suite's (each major in CI) and one of the
/// machine's own PostgreSQL, both ways, every type exactly.
#[tokio::test(flavor = "multi_thread")]
async fn sync_between_servers_of_different_majors_round_trips() {
    let src = TestDb::new("sync_xver_src").await;
    let back = TestDb::new("sync_xver_back").await;
    let home = Scratch::new("sync-xver");
    let (_other, other_url, client) = other_cluster().await;
    client
        .batch_execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        .await
        .expect("type");
    src.connect()
        .await
        .batch_execute(&format!("{TYPES}\n{ROWS}"))
        .await
        .expect("source");
    back.connect()
        .await
        .batch_execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        .await
        .expect("type");
    let versions = format!(
        "{} -> {}",
        rows(&src, "SELECT current_setting('server_version')").await[0][0]
            .clone()
            .unwrap_or_default(),
        client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .expect("version")
            .get::<_, String>(0)
    );
    let there = run(pgbulk(&home).args([
        "sync", "--from", &src.url, "--table", "t", "--db", &other_url,
    ]));
    assert_eq!(there.code, 0, "{versions}: {}", there.stderr);
    let and_back = run(pgbulk(&home).args([
        "sync", "--from", &other_url, "--table", "t", "--db", &back.url,
    ]));
    assert_eq!(and_back.code, 0, "{versions}: {}", and_back.stderr);
    assert_eq!(all(&back, "t").await, all(&src, "t").await, "{versions}");
    let text: Vec<Vec<Option<String>>> = client
        .query("SELECT t::text FROM t ORDER BY id", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| vec![r.get(0)])
        .collect();
    assert_eq!(
        text,
        rows(&src, "SELECT t::text FROM t ORDER BY id").await,
        "{versions}"
    );
}

#[tokio::test]
async fn a_declared_destination_is_created_or_migrated_and_matched_against() {
    let src = TestDb::new("sync_schema_src").await;
    let dst = TestDb::new("sync_schema_dst").await;
    let home = Scratch::new("sync-schema");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name varchar(10), qty int);
             INSERT INTO items VALUES (1, 'a', 3), (2, 'b', NULL)",
        )
        .await
        .expect("source");
    let v1 = home.file(
        "v1.sql",
        "CREATE TABLE shop.items (id bigint PRIMARY KEY, name text, qty bigint, note text DEFAULT 'none');",
        0o644,
    );
    let v2 = home.file(
        "v2.sql",
        "CREATE TABLE shop.items (id bigint PRIMARY KEY, name text, qty bigint, note text DEFAULT 'none', extra int);",
        0o644,
    );
    let sync = |schema: &std::path::Path, extra: &[&str]| {
        run(pgbulk(&home)
            .args([
                "sync",
                "--from",
                &src.url,
                "--table",
                "items",
                "--to",
                "shop.items",
            ])
            .arg("--schema")
            .arg(schema)
            .args(["--db", &dst.url])
            .args(extra))
    };
    let created = sync(&v1, &[]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(
        rows(
            &dst,
            "SELECT id::text, name, qty::text, note FROM shop.items ORDER BY id"
        )
        .await,
        vec![
            vec![s("1"), s("a"), s("3"), s("none")],
            vec![s("2"), s("b"), None, s("none")]
        ]
    );
    let plan = sync(&v2, &["--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("would be brought to the declared schema:")
            && plan.stdout.contains("extra"),
        "{}",
        plan.stdout
    );
    let migrated = sync(&v2, &[]);
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    assert!(
        migrated
            .stdout
            .contains("0 inserted, 0 updated, 2 unchanged"),
        "{}",
        migrated.stdout
    );
    assert_eq!(
        rows(&dst, "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'extra'").await,
        vec![vec![s("1")]]
    );
    let other = home.file("other.sql", "CREATE TABLE elsewhere (id int);", 0o644);
    let refused = sync(&other, &[]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("does not declare shop.items"),
        "{}",
        refused.stderr
    );
}

/// Ctrl-C: the batch in flight rolls back, the spool is removed, and the
/// same command continues to exactly the source's rows.
#[tokio::test]
async fn ctrl_c_rolls_back_the_batch_in_flight_and_the_rerun_completes() {
    let src = TestDb::new("sync_int_src").await;
    let dst = TestDb::new("sync_int_dst").await;
    let home = Scratch::new("sync-int");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT i, 'row ' || i FROM generate_series(1, 400000) i;",
        )
        .await
        .expect("source");
    let command = || {
        let mut cmd = pgbulk(&home);
        cmd.args([
            "sync",
            "--from",
            &src.url,
            "--table",
            "big",
            "--batch-rows",
            "20000",
            "--db",
            &dst.url,
        ]);
        cmd
    };
    let child = command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let client = dst.connect().await;
    let committed = || async {
        let exists: bool = client
            .query_one("SELECT to_regclass('big') IS NOT NULL", &[])
            .await
            .expect("exists")
            .get(0);
        if !exists {
            return 0;
        }
        let n: i64 = client
            .query_one("SELECT count(*) FROM big", &[])
            .await
            .expect("count")
            .get(0);
        n
    };
    for _ in 0..3000 {
        if committed().await >= 40_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let pid = child.id();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("the batch in flight was rolled back"),
        "{stderr}"
    );
    assert_eq!(
        committed().await % 20_000,
        0,
        "only whole batches are committed"
    );
    let spools: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(&format!("pgbulk-sync-{pid}-")))
        .collect();
    assert!(spools.is_empty(), "the spool is removed: {spools:?}");
    let rerun = run(&mut command());
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    let check = "SELECT count(*)::text, md5(string_agg(id || v, ',' ORDER BY id)) FROM big";
    assert_eq!(rows(&dst, check).await, rows(&src, check).await);
}

/// A new destination is filled in one transaction (one batch, whatever the
/// table's size, unless `--batch-rows` says otherwise): created in it, its
/// primary key built once the rows are in (as compact as a rebuilt one,
/// though the rows came in descending key order). With `--batch-rows`,
/// each batch commits (the stream cut at tuple bounds).
#[tokio::test]
async fn a_new_destination_is_filled_in_one_transaction() {
    let src = TestDb::new("sync_one_tx_src").await;
    let dst = TestDb::new("sync_one_tx_dst").await;
    let home = Scratch::new("sync-one-tx");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text);
             INSERT INTO big SELECT i, 'row ' || i FROM generate_series(30000, 1, -1) i;",
        )
        .await
        .expect("source");
    let sync = |extra: &[&str]| {
        let mut cmd = pgbulk(&home);
        cmd.args(["sync", "--from", &src.url, "--db", &dst.url])
            .args(extra);
        run(&mut cmd)
    };
    let out = sync(&["--table", "big"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("; 1 batch in"), "{}", out.stdout);
    assert!(out.stderr.contains(PASSED_THROUGH), "{}", out.stderr);
    let out = sync(&["--table", "big", "--to", "batched", "--batch-rows", "10000"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("; 3 batches"), "{}", out.stdout);
    // Passed through all the same, cut into batches at tuple bounds.
    assert!(
        out.stderr
            .contains("pgbulk: the source's binary COPY passed through (no spool)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("in one transaction"), "{}", out.stderr);
    let check = "SELECT count(*)::text, md5(string_agg(id || v, ',' ORDER BY id)) FROM big";
    assert_eq!(rows(&dst, check).await, rows(&src, check).await);
    assert_eq!(
        rows(&dst, &check.replace("FROM big", "FROM batched")).await,
        rows(&src, check).await
    );
    // Again, nothing changed: a first batch of 20,000 rows finds that,
    // the rest goes in one; a declared column is added first.
    let schema = home.file(
        "big.sql",
        "CREATE TABLE big (id int PRIMARY KEY, v text, note text);",
        0o644,
    );
    let again = sync(&["--table", "big", "--schema", schema.to_str().expect("utf8")]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains("30,000 rows read, 0 inserted, 0 updated, 30,000 unchanged; 2 batches"),
        "{}",
        again.stdout
    );
    assert_eq!(rows(&dst, check).await, rows(&src, check).await);
    assert_eq!(
        rows(&dst, "SELECT count(note)::text FROM big").await,
        vec![vec![s("0")]]
    );
    let size = "SELECT pg_relation_size('big_pkey')::text";
    let built = rows(&dst, size).await;
    dst.connect()
        .await
        .batch_execute("REINDEX INDEX big_pkey")
        .await
        .expect("reindex");
    assert_eq!(built, rows(&dst, size).await);
    // An existing empty destination: filled as a new copy of it, indexed
    // once the rows are in, swapped in with its grants and comment.
    let dest = dst.connect().await;
    dest.batch_execute(
        "CREATE TABLE pre (id int PRIMARY KEY, v text);
         COMMENT ON TABLE pre IS 'mine'; GRANT SELECT ON pre TO PUBLIC",
    )
    .await
    .expect("pre");
    let out = sync(&["--table", "big", "--to", "pre"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        rows(&dst, &check.replace("FROM big", "FROM pre")).await,
        rows(&src, check).await
    );
    assert_eq!(
        rows(
            &dst,
            "SELECT obj_description('pre'::regclass), has_table_privilege('public', 'pre', 'SELECT')::text"
        )
        .await,
        vec![vec![s("mine"), s("true")]]
    );
    let size = "SELECT pg_relation_size('pre_pkey')::text";
    let built = rows(&dst, size).await;
    dest.batch_execute("REINDEX INDEX pre_pkey")
        .await
        .expect("reindex");
    assert_eq!(built, rows(&dst, size).await, "the key built once");
    // The same with rows spooled as text (an enum is not passed through).
    let tone =
        "CREATE TYPE tone AS ENUM ('lo', 'hi'); CREATE TABLE toned (id int PRIMARY KEY, t tone)";
    src.connect()
        .await
        .batch_execute(&format!(
            "{tone}; INSERT INTO toned SELECT i, 'hi' FROM generate_series(30000, 1, -1) i"
        ))
        .await
        .expect("toned");
    dest.batch_execute(tone).await.expect("toned");
    let out = sync(&["--table", "toned"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains(PASSED_THROUGH), "{}", out.stderr);
    assert_eq!(
        rows(&dst, "SELECT count(*)::text FROM toned WHERE t = 'hi'").await,
        vec![vec![s("30000")]]
    );
    let size = "SELECT pg_relation_size('toned_pkey')::text";
    let built = rows(&dst, size).await;
    dest.batch_execute("REINDEX INDEX toned_pkey")
        .await
        .expect("reindex");
    assert_eq!(built, rows(&dst, size).await, "the key built once");
}

#[tokio::test]
async fn sessions_end_with_a_goodbye_not_a_cut() {
    let src = TestDb::new("sync_goodbye_src").await;
    let dst = TestDb::new("sync_goodbye_dst").await;
    let home = Scratch::new("sync-goodbye");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 5000) i;",
        )
        .await
        .expect("source");
    std::fs::write(home.path().join("t.csv"), "id,v\n1,a\n2,b\n").expect("csv");
    for args in [
        &["sync", "--from", &src.url, "--db", &dst.url, "--table", "t"][..],
        &[
            "sync", "--from", &src.url, "--db", &dst.url, "--table", "t", "--to", "two", "--jobs",
            "2",
        ],
        &[
            "sync",
            "--from",
            &src.url,
            "--db",
            &dst.url,
            "--table",
            "t",
            "--incremental",
            "id",
            "--to",
            "inc",
        ],
        &["load", "t.csv", "--db", &dst.url, "--table", "loaded"],
        &["ping", "--db", &dst.url],
    ] {
        let out = run(pgbulk(&home).args(args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    // A session the client cut (no Terminate) is counted as abandoned
    // (PostgreSQL 14 on; on 14 the count arrives late, so 15 on).
    let version = server_version(&dst).await;
    if version < 150000 {
        return;
    }
    for db in [&src, &dst] {
        let client = db.connect().await;
        let mut waited = 0;
        loop {
            let others: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("activity")
                .get(0);
            if others == 0 {
                break;
            }
            waited += 1;
            assert!(
                waited < 200,
                "{others} sessions of pgbulk still open on {}",
                db.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        client
            .batch_execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
            .await
            .expect("fresh stats");
        let row = client
            .query_one(
                "SELECT sessions, sessions_abandoned FROM pg_catalog.pg_stat_database \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("stats");
        let (sessions, abandoned): (i64, i64) = (row.get(0), row.get(1));
        assert!(sessions > 1, "{}: {sessions} sessions counted", db.name);
        assert_eq!(abandoned, 0, "{}: sessions cut by pgbulk", db.name);
    }
}

/// A destination whose key is `GENERATED ALWAYS AS IDENTITY` (as `pg_dump
/// --schema-only` of the source creates it) takes the source's ids, on the
/// first sync and on the upserts after; its sequence goes past them.
#[tokio::test]
async fn always_identity_destinations_take_the_sources_ids_and_created_ones_keep_identity_and_serial()
 {
    let src = TestDb::new("sync_always_src").await;
    let dst = TestDb::new("sync_always_dst").await;
    let home = Scratch::new("sync-always");
    let ddl = "CREATE TABLE acct (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)";
    let source = src.connect().await;
    source
        .batch_execute(&format!(
            "{ddl}; INSERT INTO acct (v) SELECT 'v' || i FROM generate_series(1, 20) i"
        ))
        .await
        .expect("source");
    let dest = dst.connect().await;
    dest.batch_execute(ddl).await.expect("destination");
    let sync = || {
        run(pgbulk(&home).args([
            "sync", "--from", &src.url, "--table", "acct", "--db", &dst.url,
        ]))
    };
    let first = sync();
    assert_eq!(first.code, 0, "{}", first.stderr);
    source
        .batch_execute(
            "UPDATE acct SET v = 'changed' WHERE id <= 3; INSERT INTO acct (v) VALUES ('new')",
        )
        .await
        .expect("changes");
    let second = sync();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second
            .stdout
            .contains("1 inserted, 3 updated, 17 unchanged"),
        "{}",
        second.stdout
    );
    let all = "SELECT id::text, v FROM acct ORDER BY id";
    assert_eq!(rows(&dst, all).await, rows(&src, all).await);
    assert_eq!(
        rows(
            &dst,
            "INSERT INTO acct (v) VALUES ('own') RETURNING id::text"
        )
        .await,
        vec![vec![s("22")]]
    );
    // A destination the sync creates gets the identity columns, with the
    // source sequences' options, advanced past the values copied.
    source
        .batch_execute(
            "CREATE TABLE down (id int GENERATED BY DEFAULT AS IDENTITY (START 100 INCREMENT -1 MAXVALUE 100) PRIMARY KEY, v text);
             INSERT INTO down (v) SELECT 'v' || i FROM generate_series(1, 5) i;
             CREATE TABLE ser (id serial PRIMARY KEY, v text);
             INSERT INTO ser (v) SELECT 'v' || i FROM generate_series(1, 5) i",
        )
        .await
        .expect("down");
    // A serial column is one here too, numbered on from the values copied.
    for (table, kind, next) in [("acct", "a", "22"), ("down", "d", "95"), ("ser", "", "6")] {
        let to = format!("{table}_created");
        let created = run(pgbulk(&home).args([
            "sync", "--from", &src.url, "--table", table, "--db", &dst.url, "--to", &to,
        ]));
        assert_eq!(created.code, 0, "{}", created.stderr);
        assert_eq!(
            rows(
                &dst,
                &format!(
                    "SELECT attidentity::text, pg_get_serial_sequence('{to}', 'id') IS NOT NULL \
                     FROM pg_attribute WHERE attrelid = '{to}'::regclass AND attname = 'id'"
                )
            )
            .await,
            vec![vec![s(kind), s("t")]]
        );
        assert_eq!(
            rows(
                &dst,
                &format!("INSERT INTO {to} (v) VALUES ('own') RETURNING id::text")
            )
            .await,
            vec![vec![s(next)]],
            "{table}"
        );
    }
}

/// A destination whose settings read text otherwise than the source's
/// wrote it gets the source's values: with `array_nulls` off null elements
/// stay null and the string "NULL" the string, whether its encoder reads
/// the array or the server casts it (`point[]`); with `xmloption` document
/// XML content (not a document) still goes in. Whether the table is
/// created or exists, on the text route (`--batch-rows`).
#[tokio::test]
async fn values_stay_the_sources_under_the_destinations_settings() {
    let src = TestDb::new("sync_array_nulls_src").await;
    let dst = TestDb::new("sync_array_nulls_dst").await;
    let home = Scratch::new("sync-array-nulls");
    src.connect()
        .await
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, t text[], i int[], p point[], x xml);
             INSERT INTO a VALUES
               (1, ARRAY['x', NULL, 'NULL', 'null'], ARRAY[1, NULL], ARRAY[point(1, 2), NULL],
                'content <b/>'),
               (2, '{{NULL,a},{b,NULL}}', '{}', NULL, '<doc/>')",
        )
        .await
        .expect("source");
    let dest = dst.connect().await;
    dst.set("array_nulls", "off").await;
    dst.set("xmloption", "document").await;
    let expected = rows(
        &src,
        "SELECT id, t::text, i::text, p::text, x::text FROM a ORDER BY id",
    )
    .await;
    for round in ["created", "existing"] {
        if round == "existing" {
            dest.batch_execute("TRUNCATE a").await.expect("truncate");
        }
        let out = run(pgbulk(&home).args([
            "sync",
            "--from",
            &src.url,
            "--table",
            "a",
            "--db",
            &dst.url,
            "--batch-rows",
            "1",
        ]));
        assert_eq!(out.code, 0, "{round}: {}", out.stderr);
        let got = rows(
            &dst,
            "SELECT id, t::text, i::text, p::text, x::text FROM a ORDER BY id",
        )
        .await;
        assert_eq!(got, expected, "{round}");
    }
}

/// A value the destination cannot hold (a character its encoding lacks)
/// fails the run naming the source table, the column and the value, not
/// the private spool the rows passed through.
#[tokio::test]
async fn a_value_the_destination_cannot_hold_is_named_by_source_and_column() {
    let src = TestDb::new("sync_latin1_src").await;
    let dst = TestDb::with_encoding("sync_latin1_dst", "LATIN1").await;
    let home = Scratch::new("sync-latin1");
    src.connect()
        .await
        // An xml column: the rows go through the spool, not passed through
        // (where the server's conversion fails them, unlocated).
        .batch_execute(
            "CREATE TABLE n (id int PRIMARY KEY, name text, x xml);
             INSERT INTO n VALUES (1, 'Müller', '<a/>'), (2, '日本', '<b/>')",
        )
        .await
        .expect("source");
    let sync = |format: &str| {
        run(pgbulk(&home).args([
            "--log-format",
            format,
            "sync",
            "--from",
            &src.url,
            "--table",
            "n",
            "--db",
            &dst.url,
            "--batch-rows",
            "10",
        ]))
    };
    let out = sync("human");
    assert_eq!(out.code, 9, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("public.n (source): column \"name\": value \"日本\": character \"日\"")
            && out.stderr.contains("encoding \"LATIN1\""),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("rows.csv"), "{}", out.stderr);
    // Nor in the JSON event's fields: no input or line of the spool.
    let json = sync("json");
    assert_eq!(json.code, 9, "{}", json.stderr);
    let event = json
        .stderr
        .lines()
        .find(|l| l.contains("\"column\":\"name\""))
        .unwrap_or_else(|| panic!("an error event naming the column: {}", json.stderr));
    assert!(
        !event.contains("rows.csv") && !event.contains("\"line\""),
        "{event}"
    );
}
