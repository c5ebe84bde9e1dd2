//! Rebuilds (`--mode replace-atomic`, and migrations that build the table
//! anew) keep what the live table had beyond its rows and shape, and refuse
//! tables a swap would take out of their hierarchy.

use crate::cli_load::{assert_ok, count, load, rows, s, server_version};
use std::path::Path;

use crate::harness::{Run, Scratch, TestDb, server};

/// Loads `csv` into `table` declared as `ddl`, which moves column `note`
/// to second place: a migration that rebuilds the table. Asserts it
/// worked and the table has the declared order.
async fn note_moved_to_second(db: &TestDb, home: &Scratch, table: &str, ddl: &str, csv: &str) {
    let declared = home.file(&format!("{table}.sql"), ddl, 0o644);
    let more = home.file("more.csv", csv, 0o644);
    let out = load(
        db,
        home,
        &[
            more.to_str().expect("utf8"),
            "--table",
            table,
            "--schema",
            declared.to_str().expect("utf8"),
        ],
    );
    assert_ok(&out);
    assert_eq!(
        rows(
            db,
            &format!(
                "SELECT attname FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum = 2"
            )
        )
        .await,
        vec![vec![s("note")]],
        "{table} was rebuilt in the declared order"
    );
}

/// Everything about table `t` a rebuild must keep, as text, by name (not
/// by oid or column position).
async fn described(db: &TestDb, t: &str, version: i32) -> Vec<Vec<Vec<Option<String>>>> {
    let mut queries = vec![
        format!(
            "SELECT c.relpersistence::text, c.reloptions::text, t.reloptions::text, \
                    c.relrowsecurity::text, c.relforcerowsecurity::text, c.relreplident::text \
             FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.oid = '{t}'::regclass"
        ),
        format!(
            "SELECT attname, attstattarget::text, attstorage::text, attoptions::text FROM pg_attribute \
             WHERE attrelid = '{t}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname"
        ),
        format!(
            "SELECT policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies \
             WHERE tablename = '{t}' ORDER BY 1"
        ),
        format!("SELECT pubname FROM pg_publication_tables WHERE tablename = '{t}' ORDER BY 1"),
        format!(
            "SELECT pg_get_statisticsobjdef(oid), stxstattarget::text FROM pg_statistic_ext \
             WHERE stxrelid = '{t}'::regclass ORDER BY 1"
        ),
        format!(
            "SELECT i.relname, x.indisclustered::text, x.indisreplident::text FROM pg_index x \
             JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = '{t}'::regclass ORDER BY 1"
        ),
    ];
    if version >= 140_000 {
        queries.push(format!(
            "SELECT attname, attcompression::text FROM pg_attribute \
             WHERE attrelid = '{t}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attname"
        ));
    }
    if version >= 150_000 {
        queries.push(format!(
            "SELECT pubname, (SELECT array_agg(a ORDER BY a) FROM unnest(attnames) a)::text, rowfilter \
             FROM pg_publication_tables WHERE tablename = '{t}' ORDER BY 1"
        ));
    }
    let mut out = Vec::new();
    for q in &queries {
        out.push(rows(db, q).await);
    }
    out
}

/// `pgbulk load FILE --table TABLE --mode MODE`.
fn load_as(db: &TestDb, home: &Scratch, file: &Path, table: &str, mode: &str) -> Run {
    load(
        db,
        home,
        &[
            file.to_str().expect("utf8"),
            "--table",
            table,
            "--mode",
            mode,
        ],
    )
}

/// Storage parameters, per-column settings (statistics target, storage,
/// compression, `n_distinct`), row-level security and its policies,
/// replica identity, the clustering index, publications and extended
/// statistics survive a replace-atomic and a rebuilding migration; an
/// unlogged table stays unlogged, a serial's sequence keeps its name (not
/// the new table's temporary one) and its privileges, and the new table
/// comes with statistics. Before, the swap dropped them all with the old
/// table (a table with row-level security came back open to every reader).
#[tokio::test]
async fn a_rebuild_keeps_storage_row_security_publications_and_statistics() {
    let db = TestDb::new("rebuild_keeps").await;
    let home = Scratch::new("rebuild-keeps");
    let version = server_version(&db).await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, amount numeric, note text) \
               WITH (fillfactor = 70, autovacuum_enabled = false, toast.autovacuum_enabled = false);
             ALTER TABLE acct ALTER COLUMN note SET STATISTICS 500, ALTER COLUMN note SET STORAGE EXTERNAL,
                 ALTER COLUMN owner SET (n_distinct = 100);
             ALTER TABLE acct ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY own ON acct FOR SELECT TO PUBLIC USING (owner = current_user);
             CREATE POLICY positive ON acct AS RESTRICTIVE FOR INSERT TO CURRENT_USER WITH CHECK (amount > 0);
             CREATE UNIQUE INDEX acct_owner ON acct (owner);
             ALTER TABLE acct CLUSTER ON acct_owner, REPLICA IDENTITY USING INDEX acct_owner;
             CREATE STATISTICS acct_st (dependencies) ON owner, amount FROM acct;
             ALTER STATISTICS acct_st SET STATISTICS 300;
             CREATE PUBLICATION acct_all FOR TABLE acct;
             INSERT INTO acct VALUES (1, 'old', 5, 'x');
             CREATE UNLOGGED TABLE scratchpad (id serial PRIMARY KEY, v text);
             GRANT USAGE ON SEQUENCE scratchpad_id_seq TO PUBLIC;",
        )
        .await
        .expect("tables");
    if version >= 140_000 {
        client
            .batch_execute("ALTER TABLE acct ALTER COLUMN note SET COMPRESSION pglz")
            .await
            .expect("compression");
    }
    if version >= 150_000 {
        client
            .batch_execute(
                "CREATE PUBLICATION acct_some FOR TABLE acct (id, owner) WHERE (amount > 10)",
            )
            .await
            .expect("publication");
    }
    let before = described(&db, "acct", version).await;
    assert_eq!(before[2].len(), 2, "two policies: {before:?}");
    assert_eq!(before[4].len(), 1, "one statistics object: {before:?}");
    let file = home.file(
        "acct.csv",
        "id,owner,amount,note\n1,alice,20,hi\n2,bob,30,yo\n",
        0o644,
    );
    let out = load_as(&db, &home, &file, "acct", "replace-atomic");
    assert_ok(&out);
    assert_eq!(
        rows(&db, "SELECT string_agg(owner, ',' ORDER BY id) FROM acct").await,
        vec![vec![s("alice,bob")]]
    );
    assert_eq!(
        described(&db, "acct", version).await,
        before,
        "replace-atomic keeps what the table had"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text FROM pg_stats WHERE tablename = 'acct' AND attname = 'owner'"
        )
        .await,
        vec![vec![s("1")]],
        "the new table was analyzed before it was swapped in"
    );

    // A migration that moves a column rebuilds the table: the same again.
    note_moved_to_second(
        &db,
        &home,
        "acct",
        "CREATE TABLE acct (id int PRIMARY KEY, note text, owner text NOT NULL, amount numeric);
         CREATE UNIQUE INDEX acct_owner ON acct (owner);",
        "id,owner,amount,note\n3,carol,40,hey\n",
    )
    .await;
    assert_eq!(count(&db, "acct").await, 3);
    assert_eq!(
        described(&db, "acct", version).await,
        before,
        "the rebuilding migration keeps what the table had"
    );

    let file = home.file("scratch.csv", "id,v\n1,a\n", 0o644);
    let out = load_as(&db, &home, &file, "scratchpad", "replace-atomic");
    assert_ok(&out);
    assert_eq!(
        rows(
            &db,
            "SELECT relpersistence::text FROM pg_class WHERE oid = 'scratchpad'::regclass"
        )
        .await,
        vec![vec![s("u")]],
        "an unlogged table stays unlogged"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT pg_get_serial_sequence('scratchpad', 'id'), \
                    has_sequence_privilege('public', 'scratchpad_id_seq', 'USAGE')::text"
        )
        .await,
        vec![vec![s("public.scratchpad_id_seq"), s("true")]],
        "the serial's sequence keeps its name and privileges"
    );
}

/// A rebuild copies the live table's rows as the loading role reads them:
/// where row-level security would hide some of them from it, the copy is
/// an error, and nothing changes. Before, the hidden rows were silently
/// left behind.
#[tokio::test]
async fn a_rebuild_that_row_security_would_filter_is_refused() {
    let db = TestDb::new("rebuild_rls").await;
    let home = Scratch::new("rebuild-rls");
    let role = format!("pgbulk_rls_owner_{}", std::process::id());
    let admin = db.connect().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'owner-secret';
             ALTER DATABASE {} OWNER TO {role};
             GRANT CREATE ON SCHEMA public TO {role};",
            db.name
        ))
        .await
        .expect("role");
    let (host, port) = server().host_port();
    let url = format!(
        "host={host} port={port} user={role} password=owner-secret dbname={}",
        db.name
    );
    let (owner, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect as the owner");
    tokio::spawn(connection);
    owner
        .batch_execute(
            "CREATE TABLE sec (id int PRIMARY KEY, owner text, v text);
             INSERT INTO sec VALUES (1, current_user, 'mine'), (2, 'someone else', 'theirs');
             ALTER TABLE sec ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY mine ON sec USING (owner = current_user);",
        )
        .await
        .expect("table");
    let declared = home.file(
        "sec.sql",
        "CREATE TABLE sec (id int PRIMARY KEY, v text, owner text);",
        0o644,
    );
    let file = home.file("sec.csv", &format!("id,v,owner\n3,new,{role}\n"), 0o644);
    let out = crate::harness::run(
        crate::harness::pgbulk(&home)
            .args(["load", "--db", &url])
            .arg(&file)
            .args(["--table", "sec", "--schema"])
            .arg(&declared),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("query would be affected by row-level security policy for table \"sec\""),
        "{}",
        out.stderr
    );
    assert_eq!(
        rows(&db, "SELECT id::text, v FROM sec ORDER BY id").await,
        vec![vec![s("1"), s("mine")], vec![s("2"), s("theirs")]],
        "nothing changed"
    );
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text FROM pg_policies WHERE tablename = 'sec'"
        )
        .await,
        vec![vec![s("1")]]
    );
    drop(owner);
    admin
        .batch_execute(&format!(
            "REASSIGN OWNED BY {role} TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .await
        .expect("drop the role");
}

/// A partitioned table, a partition and tables in an inheritance hierarchy
/// are not rebuilt (a swap would drop the partitions or take the table out
/// of its parent): replace-atomic is refused before anything changes, and
/// says that `--mode replace` replaces the rows instead. Before, a
/// partitioned table came back as a plain one without its partitions.
#[tokio::test]
async fn a_partitioned_or_inheriting_table_is_not_rebuilt() {
    let db = TestDb::new("rebuild_partitioned").await;
    let home = Scratch::new("rebuild-partitioned");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE ev (id int, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
             CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE ev_rest PARTITION OF ev DEFAULT;
             INSERT INTO ev VALUES (1, '2024-05-01', 'old'), (2, '2030-01-01', 'old');
             CREATE TABLE base (id int PRIMARY KEY, v text);
             CREATE TABLE derived (extra int) INHERITS (base);",
        )
        .await
        .expect("tables");
    let events = home.file("ev.csv", "id,day,v\n1,2024-05-01,new\n", 0o644);
    let plain = home.file("base.csv", "id,v\n1,new\n", 0o644);
    for (table, file, refusal) in [
        (
            "ev",
            &events,
            "public.ev is a partitioned table: replace-atomic builds a new table and swaps it in, which would drop its partitions",
        ),
        (
            "ev_2024",
            &events,
            "public.ev_2024 is a partition of ev: replace-atomic builds a new table and swaps it in, which would take it out of ev",
        ),
        (
            "base",
            &plain,
            "public.base is the parent of derived (INHERITS): replace-atomic builds a new table and swaps it in, which would take derived out of it",
        ),
        (
            "derived",
            &plain,
            "public.derived is a child table of base (INHERITS): replace-atomic builds a new table and swaps it in, which would take it out of base",
        ),
    ] {
        let out = load_as(&db, &home, file, table, "replace-atomic");
        assert_eq!(out.code, 3, "{table}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim_end(),
            format!(
                "pgbulk: error: {refusal}; --mode replace replaces its rows in one transaction instead \
                 (readers see the old rows until it commits)"
            )
        );
    }
    assert_eq!(
        rows(
            &db,
            "SELECT c.relname, c.relkind::text, c.relispartition::text FROM pg_class c \
             WHERE c.relname IN ('ev', 'ev_2024', 'ev_rest', 'base', 'derived') ORDER BY 1"
        )
        .await,
        vec![
            vec![s("base"), s("r"), s("false")],
            vec![s("derived"), s("r"), s("false")],
            vec![s("ev"), s("p"), s("false")],
            vec![s("ev_2024"), s("r"), s("true")],
            vec![s("ev_rest"), s("r"), s("true")],
        ],
        "every table as it was"
    );
    assert_eq!(
        rows(&db, "SELECT string_agg(v, ',' ORDER BY id) FROM ev").await,
        vec![vec![s("old,old")]]
    );
    let out = load_as(&db, &home, &events, "ev", "replace");
    assert_ok(&out);
    assert_eq!(
        rows(&db, "SELECT string_agg(v, ',' ORDER BY id) FROM ev_2024").await,
        vec![vec![s("new")]],
        "--mode replace replaces the rows, the partitions stay"
    );
    assert_eq!(count(&db, "ev").await, 1);
}

/// A file without the serial or identity key replaces the rows of a table
/// (`--mode replace` and `replace-atomic`): the new rows are numbered by
/// the table's sequence, past the old rows' numbers, with the sequence's
/// own options (a descending identity, a serial altered to step by 10).
/// Before, both modes refused the file ("upserts need the whole key"), and
/// a replace-atomic's new rows restarted at the default sequence's 1
/// (numbers the old rows had) and its sequence came back ascending by 1.
#[tokio::test]
async fn a_file_without_the_serial_key_replaces_the_rows_numbered_past_the_old_ones() {
    let db = TestDb::new("rebuild_serial").await;
    let home = Scratch::new("rebuild-serial");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE up (id int GENERATED ALWAYS AS IDENTITY (START 100 INCREMENT -1 MAXVALUE 100) PRIMARY KEY, v text);
             CREATE TABLE tens (id smallserial PRIMARY KEY, v text);
             ALTER SEQUENCE tens_id_seq INCREMENT 10;
             INSERT INTO up (v) VALUES ('old'), ('old');
             INSERT INTO tens (v) VALUES ('old'), ('old');",
        )
        .await
        .expect("tables");
    let file = home.file("v.csv", "v\nc\nd\n", 0o644);
    for (mode, up, tens) in [
        ("replace", ["98", "97", "96"], ["21", "31", "41"]),
        ("replace-atomic", ["95", "94", "93"], ["51", "61", "71"]),
    ] {
        for (table, expected) in [("up", up), ("tens", tens)] {
            assert_ok(&load_as(&db, &home, &file, table, mode));
            let next = rows(
                &db,
                &format!("INSERT INTO {table} (v) VALUES ('app') RETURNING id::text"),
            )
            .await;
            let ids = rows(&db, &format!("SELECT id::text, v FROM {table} ORDER BY v")).await;
            assert_eq!(
                ids,
                vec![
                    vec![s(expected[2]), s("app")],
                    vec![s(expected[0]), s("c")],
                    vec![s(expected[1]), s("d")],
                ],
                "{mode} {table}"
            );
            assert_eq!(next[0][0].as_deref(), Some(expected[2]), "{mode} {table}");
            // The next run replaces the application's row too.
        }
    }
    // An upsert still needs the key, and says what does not.
    let out = load_as(&db, &home, &file, "tens", "upsert");
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("an upsert matches rows by the whole key")
            && out
                .stderr
                .contains("--mode append, replace or replace-atomic"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "tens").await, 3);
    // A key asked for with --key is a key to match on, also in a replace.
    let out = load(
        &db,
        &home,
        &[
            file.to_str().expect("utf8"),
            "--table",
            "tens",
            "--mode",
            "replace",
            "--key",
            "id",
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("no value for key column \"id\""),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "tens").await, 3);
}

/// A load into an empty table with a key fills a new copy of it (rows
/// frozen, the key built once they are in) and swaps it in keeping what a
/// rebuild keeps (storage parameters, column settings, extended statistics,
/// the clustering index, comments, grants, views); the next load, into a
/// table that holds rows, goes in place.
#[tokio::test]
async fn a_load_into_an_empty_keyed_table_fills_a_new_copy() {
    let db = TestDb::new("rb_fill").await;
    let home = Scratch::new("rb-fill");
    let v = server_version(&db).await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE f (id int PRIMARY KEY, v text) WITH (fillfactor = 90);
             ALTER TABLE f ALTER v SET STATISTICS 500;
             CREATE STATISTICS f_st ON id, v FROM f;
             CLUSTER f USING f_pkey;
             COMMENT ON TABLE f IS 'kept';
             GRANT SELECT ON f TO PUBLIC;
             CREATE VIEW f_view AS SELECT id, v FROM f",
        )
        .await
        .expect("table");
    let before = described(&db, "f", v).await;
    let oid = "SELECT 'f'::regclass::oid";
    let empty = rows(&db, oid).await;
    let first = home.file("first.csv", "id,v\n2,b\n1,a\n3,c\n", 0o644);
    assert_ok(&load_as(&db, &home, &first, "f", "upsert"));
    assert_ne!(rows(&db, oid).await, empty, "a new copy was swapped in");
    assert_eq!(described(&db, "f", v).await, before);
    assert_eq!(
        rows(&db, "SELECT obj_description('f'::regclass, 'pg_class'), has_table_privilege('public', 'f', 'SELECT')::text, (SELECT count(*) FROM f_view)::text").await,
        vec![vec![s("kept"), s("true"), s("3")]]
    );
    let filled = rows(&db, oid).await;
    let second = home.file("second.csv", "id,v\n3,C\n4,d\n", 0o644);
    assert_ok(&load_as(&db, &home, &second, "f", "upsert"));
    assert_eq!(rows(&db, oid).await, filled, "written in place");
    assert_eq!(
        rows(&db, "SELECT string_agg(id || v, ',' ORDER BY id) FROM f").await,
        vec![vec![s("1a,2b,3C,4d")]]
    );
    assert_eq!(count(&db, "f").await, 4);
}

/// The filled copy of an empty table that never had statistics is left
/// to autovacuum, as a COPY into the table would be (its size is known
/// from its key's build); the copy of an emptied table that had them is
/// analyzed before it is swapped in.
#[tokio::test]
async fn a_filled_copy_is_analyzed_when_the_empty_table_had_statistics() {
    let db = TestDb::new("rb_fill_stats").await;
    let home = Scratch::new("rb-fill-stats");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE never (id int PRIMARY KEY, v text);
             CREATE TABLE emptied (id int PRIMARY KEY, v text);
             INSERT INTO emptied SELECT i, NULL FROM generate_series(1, 1000) i;
             ANALYZE emptied;
             DELETE FROM emptied",
        )
        .await
        .expect("tables");
    let stats = |table: &str| {
        format!(
            "SELECT count(*)::text, coalesce(max(null_frac), -1)::text, \
                    (SELECT reltuples::int8::text FROM pg_class WHERE oid = '{table}'::regclass) \
             FROM pg_stats WHERE tablename = '{table}' AND attname = 'v'"
        )
    };
    assert_eq!(
        rows(&db, &stats("emptied")).await,
        vec![vec![s("1"), s("1"), s("1000")]],
        "the emptied table's statistics are those of its NULLs"
    );
    let oid = |table: &str| format!("SELECT '{table}'::regclass::oid");
    let file = home.file("rows.csv", "id,v\n1,a\n2,b\n3,c\n", 0o644);
    for table in ["never", "emptied"] {
        let before = rows(&db, &oid(table)).await;
        assert_ok(&load_as(&db, &home, &file, table, "upsert"));
        assert_ne!(
            rows(&db, &oid(table)).await,
            before,
            "{table}: a copy was swapped in"
        );
    }
    assert_eq!(
        rows(&db, &stats("never")).await,
        vec![vec![s("0"), s("-1"), s("3")]],
        "not analyzed; its size known"
    );
    assert_eq!(
        rows(&db, &stats("emptied")).await,
        vec![vec![s("1"), s("0"), s("3")]],
        "analyzed: statistics of the new rows"
    );
}

/// Two loads into one empty keyed table at once: each fills a copy; the
/// first to commit swaps its copy in, the other merges its copy into the
/// table; both count their rows as inserted, and every row is there.
#[tokio::test]
async fn two_loads_into_one_empty_table_at_once_both_land() {
    let db = TestDb::new("rb_fill_two").await;
    let home = Scratch::new("rb-fill-two");
    db.connect()
        .await
        .batch_execute("CREATE TABLE g (id int PRIMARY KEY, v text)")
        .await
        .expect("table");
    let file = |name: &str, from: i32| {
        let body: String = (from..from + 100_000)
            .map(|i| format!("{i},v{i}\n"))
            .collect();
        home.file(name, &format!("id,v\n{body}"), 0o644)
    };
    let (a, b) = (file("a.csv", 0), file("b.csv", 100_000));
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| load_as(&db, &home, &a, "g", "upsert"));
        let second = s.spawn(|| load_as(&db, &home, &b, "g", "upsert"));
        (first.join().expect("first"), second.join().expect("second"))
    });
    for out in [&first, &second] {
        assert_ok(out);
        assert!(out.stdout.contains("100,000 inserted"), "{}", out.stdout);
    }
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text, count(DISTINCT id)::text FROM g WHERE v = 'v' || id"
        )
        .await,
        vec![vec![s("200000"), s("200000")]]
    );
}

/// A bad value in the first batch into an empty keyed table: the error
/// names the line and column, and the table is as it was (empty, the same
/// oid, no copy left behind).
#[tokio::test]
async fn a_bad_row_in_a_first_load_into_an_empty_table_leaves_it_as_it_was() {
    let db = TestDb::new("rb_fill_bad").await;
    let home = Scratch::new("rb-fill-bad");
    db.connect()
        .await
        .batch_execute("CREATE TABLE h (id int PRIMARY KEY, n int)")
        .await
        .expect("table");
    let oid = "SELECT 'h'::regclass::oid";
    let before = rows(&db, oid).await;
    let bad = home.file("bad.csv", "id,n\n1,1\n2,x2\n3,3\n", 0o644);
    let out = load_as(&db, &home, &bad, "h", "upsert");
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("bad.csv:3") && out.stderr.contains("\"n\""),
        "{}",
        out.stderr
    );
    assert_eq!(count(&db, "h").await, 0);
    assert_eq!(rows(&db, oid).await, before);
    assert_eq!(
        rows(
            &db,
            "SELECT count(*)::text FROM pg_class WHERE relname LIKE 'pgbulk\\_new\\_%'"
        )
        .await,
        vec![vec![s("0")]]
    );
}

/// A table's own foreign keys (to another table, and to itself) survive a
/// replace-atomic and a rebuilding migration, checked against the new
/// rows: rows that break one are not swapped in (exit 9, the table as it
/// was). Before, the swap dropped them with the old table, and a row
/// naming a shop that does not exist went in. An empty table with a
/// foreign key is loaded in place (checked row by row, so --max-errors
/// can set such rows aside), not through a new copy.
#[tokio::test]
async fn a_rebuild_keeps_the_tables_own_foreign_keys_and_checks_them() {
    let db = TestDb::new("rebuild_fkeys").await;
    let home = Scratch::new("rebuild-fkeys");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE shop (code text PRIMARY KEY); INSERT INTO shop VALUES ('A'), ('B');
             CREATE TABLE item (id int PRIMARY KEY, shop text CONSTRAINT item_shop REFERENCES shop ON DELETE CASCADE,
                                parent int CONSTRAINT item_parent REFERENCES item, note text);
             INSERT INTO item VALUES (9, 'A', NULL, 'old')",
        )
        .await
        .expect("tables");
    let keys = "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
                WHERE conrelid = 'item'::regclass AND contype = 'f' ORDER BY 1";
    let before = rows(&db, keys).await;
    assert_eq!(before.len(), 2);
    let good = home.file("good.csv", "id,shop,parent,note\n1,A,,x\n2,B,1,y\n", 0o644);
    assert_ok(&load_as(&db, &home, &good, "item", "replace-atomic"));
    assert_eq!(rows(&db, keys).await, before, "replace-atomic keeps them");
    assert_eq!(count(&db, "item").await, 2);
    // The key to itself refers to the new table, not the one it replaced.
    let refused = db
        .connect()
        .await
        .batch_execute("INSERT INTO item VALUES (3, 'A', 9, 'z')")
        .await
        .expect_err("item 9 is gone");
    assert!(
        format!("{refused:?}").contains("item_parent"),
        "{refused:?}"
    );

    for bad in [
        "id,shop,parent,note\n1,A,,x\n2,Z,,y\n",
        "id,shop,parent,note\n1,A,,x\n2,B,7,y\n",
    ] {
        let file = home.file("bad.csv", bad, 0o644);
        let out = load_as(&db, &home, &file, "item", "replace-atomic");
        assert_eq!(out.code, 9, "{}", out.stderr);
        assert!(
            out.stderr
                .contains("the rows loaded break foreign key item_")
                && out
                    .stderr
                    .contains("they were not swapped in: the table is as it was")
                && !out.stderr.contains("--max-errors"),
            "{}",
            out.stderr
        );
        assert_eq!(
            rows(&db, "SELECT id::text, shop FROM item ORDER BY id").await,
            vec![vec![s("1"), s("A")], vec![s("2"), s("B")]]
        );
        assert_eq!(rows(&db, keys).await, before);
    }

    // A migration that moves a column rebuilds the table: the keys stay.
    note_moved_to_second(
        &db,
        &home,
        "item",
        "CREATE TABLE item (id int PRIMARY KEY, note text, shop text, parent int);",
        "id,shop,parent,note\n3,A,2,z\n",
    )
    .await;
    assert_eq!(rows(&db, keys).await, before, "the migration keeps them");
    assert_eq!(count(&db, "item").await, 3);

    // Empty, keyed, with a foreign key: loaded in place, row by row.
    db.connect()
        .await
        .batch_execute("TRUNCATE item")
        .await
        .expect("truncate");
    let oid = rows(&db, "SELECT 'item'::regclass::oid::text").await;
    let mixed = home.file("mixed.csv", "id,shop,parent,note\n1,A,,x\n2,Z,,y\n", 0o644);
    let out = load(
        &db,
        &home,
        &[
            mixed.to_str().expect("utf8"),
            "--table",
            "item",
            "--max-errors",
            "1",
            "--reject-file",
            "rejects.csv",
        ],
    );
    assert_ok(&out);
    assert_eq!(count(&db, "item").await, 1);
    assert_eq!(
        rows(&db, "SELECT 'item'::regclass::oid::text").await,
        oid,
        "the table itself, not a copy swapped in"
    );
    assert_eq!(rows(&db, keys).await, before);
}

/// The rows of a replace-atomic go into a new table, which gets the live
/// table's triggers with the swap: none fires for them, and the run says
/// so, naming them; `--mode replace` loads into the table, firing them.
#[tokio::test]
async fn a_replace_atomic_says_the_insert_triggers_it_does_not_fire() {
    let db = TestDb::new("rebuild_triggers").await;
    let home = Scratch::new("rebuild-triggers");
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE tagged (id int PRIMARY KEY, v text);
             CREATE FUNCTION upper_v() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN NEW.v := upper(NEW.v); RETURN NEW; END $$;
             CREATE TRIGGER shout BEFORE INSERT OR UPDATE ON tagged FOR EACH ROW EXECUTE FUNCTION upper_v();
             CREATE TRIGGER off BEFORE INSERT ON tagged FOR EACH ROW EXECUTE FUNCTION upper_v();
             ALTER TABLE tagged DISABLE TRIGGER off",
        )
        .await
        .expect("table");
    let file = home.file("t.csv", "id,v\n1,abc\n", 0o644);
    let atomic = load_as(&db, &home, &file, "tagged", "replace-atomic");
    assert_ok(&atomic);
    assert!(
        atomic
            .stderr
            .contains("public.tagged has insert triggers (shout): the rows of a replace-atomic go into a new table"),
        "{}",
        atomic.stderr
    );
    assert_eq!(
        rows(&db, "SELECT v FROM tagged").await,
        vec![vec![s("abc")]]
    );
    let replace = load_as(&db, &home, &file, "tagged", "replace");
    assert_ok(&replace);
    assert!(
        !replace.stderr.contains("insert triggers"),
        "{}",
        replace.stderr
    );
    assert_eq!(
        rows(&db, "SELECT v FROM tagged").await,
        vec![vec![s("ABC")]]
    );
}
