//! Faults as tests: `pgbulk load` killed with SIGKILL at many instants, its
//! connections terminated, the server itself killed; after each, the same
//! command run again ends in exactly the right table.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgbulk::local::{Cluster, ServerSetup, Status};

use crate::harness::{Scratch, TestDb, pgbulk, run, test_bindir};

const ROWS: u64 = 200_000;

/// `id,v` rows `0..ROWS` with `v` derived from `id` and `salt`.
fn write_input(home: &Scratch, salt: &str) -> String {
    let mut text = String::from("id,v\n");
    for i in 0..ROWS {
        text.push_str(&format!("{i},{salt} {i}\n"));
    }
    home.file("in.csv", &text, 0o644);
    "in.csv".to_owned()
}

fn load_command(home: &Scratch, url: &str, extra: &[&str]) -> Command {
    let mut cmd = pgbulk(home);
    cmd.args([
        "--quiet",
        "load",
        "in.csv",
        "-t",
        "t",
        "--db",
        url,
        "--batch-rows",
        "10000",
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Whether `t` holds exactly rows `0..ROWS` with `v = '<salt> <id>'`.
async fn exact(client: &tokio_postgres::Client, salt: &str) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id), \
             count(*) FILTER (WHERE v = $1 || ' ' || id) FROM t",
            &[&salt],
        )
        .await
        .expect("count");
    (row.get(0), row.get(1), row.get(2))
}

/// Runs the same command until it succeeds (each run may be the one a
/// fault interrupted); fails after a few tries.
fn converge(home: &Scratch, url: &str, extra: &[&str]) {
    for _ in 0..4 {
        let out = run(&mut load_command(home, url, extra));
        if out.code == 0 {
            return;
        }
        eprintln!("rerun failed ({}): {}", out.code, out.stderr);
    }
    panic!("the load did not converge");
}

/// Waits until `t` has rows (a batch committed), a minute at most.
async fn first_commit(client: &tokio_postgres::Client) {
    let started = Instant::now();
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no batch committed within a minute"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test]
async fn sigkill_at_any_instant_then_the_same_command_converges() {
    let db = TestDb::new("faults_kill9").await;
    let home = Scratch::new("faults-kill9");
    let client = db.connect().await;
    // Killed instants spread over the load: before the first commit,
    // between and during batches, near the end (fixed, not random, so a
    // failure can be reproduced; the load's speed moves them anyway).
    // `PGBULK_SOAK_KILLS=N` (scripts/soak) kills at N seeded random
    // instants per mode instead and prints a summary.
    let soak: Option<u64> = std::env::var("PGBULK_SOAK_KILLS")
        .ok()
        .and_then(|n| n.parse().ok());
    let delays_ms: Vec<u64> = match soak {
        Some(n) => {
            let mut rng = crate::harness::Rng(0x50a4_0000_0000_0001);
            (0..n).map(|_| rng.below(900)).collect()
        }
        None => vec![30, 120, 260, 410, 600, 850],
    };
    for (mode, ddl, extra) in [
        ("append", "CREATE TABLE t (id int, v text)", &[][..]),
        (
            "upsert",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            &["--mode", "upsert"][..],
        ),
        (
            "replace",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            &["--mode", "replace"][..],
        ),
        (
            "replace-atomic",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            &["--mode", "replace-atomic"][..],
        ),
    ] {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS t, pgbulk_watermark; {ddl}"))
            .await
            .expect("table");
        if mode != "append" {
            // Every other key is there already, with an old value, and
            // keys the input lacks (a replace removes them).
            client
                .batch_execute(&format!(
                    "INSERT INTO t SELECT i, 'old' FROM generate_series(0, {}, 2) i",
                    ROWS + 99
                ))
                .await
                .expect("old rows");
        }
        let salt = format!("{mode}-value");
        write_input(&home, &salt);
        let mut finished = 0;
        for delay in &delays_ms {
            let mut child = load_command(&home, &db.url, extra).spawn().expect("spawn");
            std::thread::sleep(Duration::from_millis(*delay));
            if child.try_wait().ok().flatten().is_some() {
                finished += 1;
            }
            kill9(&mut child);
        }
        // From 14 on the server notices the dead client within a second or
        // two (client_connection_check_interval): no orphan keeps running.
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .expect("version")
            .get(0);
        if version >= 140_000 {
            let since = Instant::now();
            loop {
                let orphans: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .expect("orphans")
                    .get(0);
                if orphans == 0 {
                    break;
                }
                assert!(
                    since.elapsed() < Duration::from_secs(10),
                    "{mode}: {orphans} backends of killed loads still run"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        converge(&home, &db.url, extra);
        if soak.is_some() {
            println!(
                "soak {mode}: {} kills at random instants ({finished} runs had finished first); converged, checking the table",
                delays_ms.len()
            );
        }
        let expected = if mode == "upsert" {
            // The old keys the input lacks stay.
            let extra = (ROWS..ROWS + 100).step_by(2).count() as i64;
            (ROWS as i64 + extra, ROWS as i64 + extra, ROWS as i64)
        } else {
            (ROWS as i64, ROWS as i64, ROWS as i64)
        };
        assert_eq!(
            exact(&client, &salt).await,
            expected,
            "{mode}: every row exactly once, with its value, after SIGKILLs"
        );
        assert_eq!(
            leftovers(&client).await,
            (0, 0),
            "{mode}: no staging or new table, no invalid index is left"
        );
        let again = run(&mut load_command(&home, &db.url, extra));
        assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    }
}

#[tokio::test]
async fn lost_connections_fail_the_run_and_a_rerun_converges() {
    let db = TestDb::new("faults_terminate").await;
    let home = Scratch::new("faults-terminate");
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .expect("table");
    let salt = "terminated";
    write_input(&home, salt);
    let child = load_command(&home, &db.url, &[]).spawn().expect("spawn");
    // Once a batch committed, cut every connection of the load.
    first_commit(&client).await;
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Either the cut landed (said, with its own exit code) or the load had
    // finished.
    if out.status.code() != Some(0) {
        assert_eq!(out.status.code(), Some(10), "{stderr}");
        assert!(
            stderr.contains("the connection was lost; what was in flight rolled back, run the same command again to continue"),
            "{stderr}"
        );
    }
    converge(&home, &db.url, &[]);
    assert_eq!(
        exact(&client, salt).await,
        (ROWS as i64, ROWS as i64, ROWS as i64)
    );
}

#[tokio::test]
async fn a_server_crash_mid_load_then_the_same_command_converges() {
    // A cluster of its own: this test kills its server.
    let cluster = Cluster::throwaway_with(&ServerSetup {
        bindir: test_bindir(),
        ..ServerSetup::default()
    })
    .expect("cluster");
    let url = cluster.tcp_url("postgres").expect("url");
    let home = Scratch::new("faults-crash");
    let params = crate::harness::resolve(&url);
    let connect = || async {
        pgbulk::connect::connect(&params)
            .await
            .expect("connect")
            .client
    };
    connect()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .expect("table");
    let salt = "crashed";
    write_input(&home, salt);
    let child = load_command(&home, &url, &[]).spawn().expect("spawn");
    first_commit(&connect().await).await;
    // An immediate stop: every backend killed, no shutdown checkpoint; the
    // restart recovers from the WAL, as after a crash.
    assert!(cluster.stop_immediately().expect("crash"));
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) {
        assert_eq!(out.status.code(), Some(10), "{stderr}");
        assert!(stderr.contains("the connection was lost"), "{stderr}");
    }
    cluster.start().expect("restart");
    assert!(
        matches!(cluster.status(), Ok(Status::Running { .. })),
        "{}",
        cluster.log_tail(20)
    );
    // The restarted server may listen on another port.
    let url = cluster.tcp_url("postgres").expect("url");
    let params = crate::harness::resolve(&url);
    converge(&home, &url, &[]);
    let client = pgbulk::connect::connect(&params)
        .await
        .expect("connect")
        .client;
    assert_eq!(
        exact(&client, salt).await,
        (ROWS as i64, ROWS as i64, ROWS as i64)
    );
}

/// A concurrent index build that failed (or was killed) leaves an INVALID
/// index with the declared name and definition: it matches nothing, so the
/// plan drops it and builds it again, and the load leaves it valid.
#[tokio::test]
async fn an_invalid_index_left_by_a_failed_build_is_rebuilt() {
    let db = TestDb::new("fault_invalid_index").await;
    let home = Scratch::new("fault-invalid-index");
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, code text);
             INSERT INTO t VALUES (1, 'a'), (2, 'a');",
        )
        .await
        .expect("table");
    // The unique build fails on the duplicate and leaves the index INVALID.
    let failed = client
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY t_code ON t (code)")
        .await;
    assert!(failed.is_err());
    client
        .batch_execute("UPDATE t SET code = 'b' WHERE id = 2")
        .await
        .expect("fix the data");
    let invalid = "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND NOT indisvalid";
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count(invalid).await, 1);
    home.file(
        "schema.sql",
        "CREATE TABLE t (id int PRIMARY KEY, code text);\nCREATE UNIQUE INDEX t_code ON t (code);\n",
        0o644,
    );
    let plan = run(pgbulk(&home).args(["plan", "--schema", "schema.sql", "--db", &db.url]));
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains("drop invalid index t_code")
            && plan
                .stdout
                .contains("create unique index t_code concurrently"),
        "{}",
        plan.stdout
    );
    home.file("rows.csv", "id,code\n3,c\n", 0o644);
    let out = run(pgbulk(&home).args([
        "load",
        "rows.csv",
        "-t",
        "t",
        "--schema",
        "schema.sql",
        "--db",
        &db.url,
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(invalid).await, 0);
    assert_eq!(
        count("SELECT count(*) FROM pg_index WHERE indexrelid = 't_code'::regclass AND indisunique AND indisvalid").await,
        1
    );
    let again = run(pgbulk(&home).args(["plan", "--schema", "schema.sql", "--db", &db.url]));
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
}

/// Whether anything pgbulk builds on the side is left in `public`: a
/// staging or new table, an invalid index.
async fn leftovers(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public' AND c.relname NOT IN ('t', 'pgbulk_watermark') \
                     AND c.relkind IN ('r', 'p')), \
                    (SELECT count(*) FROM pg_index WHERE NOT indisvalid)",
            &[],
        )
        .await
        .expect("leftovers");
    (row.get(0), row.get(1))
}

/// SIGKILL while a migration rebuilds the table (a column declared in the
/// middle), at several instants; the same command converges, leaving no
/// half-built table.
#[tokio::test]
async fn sigkill_during_a_rebuild_migration_then_the_same_command_converges() {
    let db = TestDb::new("faults_kill9_rebuild").await;
    let home = Scratch::new("faults-kill9-rebuild");
    let client = db.connect().await;
    let salt = "rebuilt";
    write_input(&home, salt);
    home.file(
        "v2.sql",
        "CREATE TABLE t (id int PRIMARY KEY, w int, v text);\n",
        0o644,
    );
    let extra = ["--schema", "v2.sql"];
    for delay in [20u64, 80, 200, 400] {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS t, pgbulk_watermark;
                 CREATE TABLE t (id int PRIMARY KEY, v text);
                 INSERT INTO t SELECT i, 'old' FROM generate_series(0, {}) i;",
                ROWS - 1
            ))
            .await
            .expect("v1");
        let mut child = load_command(&home, &db.url, &extra).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(delay));
        kill9(&mut child);
        converge(&home, &db.url, &extra);
        assert_eq!(
            exact(&client, salt).await,
            (ROWS as i64, ROWS as i64, ROWS as i64),
            "killed after {delay} ms"
        );
        let columns: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[],
            )
            .await
            .expect("columns")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(columns, ["id", "w", "v"], "killed after {delay} ms");
        assert_eq!(leftovers(&client).await, (0, 0), "killed after {delay} ms");
    }
}

/// SIGKILL while a migration builds an index CONCURRENTLY (held in the
/// build by an open transaction on the table, so the kill lands there):
/// the invalid index it leaves is dropped and built again by the rerun.
#[tokio::test]
async fn sigkill_during_a_concurrent_index_build_then_the_rerun_rebuilds_it() {
    let db = TestDb::new("faults_kill9_index").await;
    let home = Scratch::new("faults-kill9-index");
    let client = db.connect().await;
    let salt = "indexed";
    write_input(&home, salt);
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT i, 'old' FROM generate_series(0, {}) i;",
            ROWS - 1
        ))
        .await
        .expect("v1");
    home.file(
        "v2.sql",
        "CREATE TABLE t (id int PRIMARY KEY, v text);\nCREATE INDEX t_v ON t (v);\n",
        0o644,
    );
    let extra = ["--schema", "v2.sql"];
    // An open writer: the build waits for it after its first phase, with
    // the index already in the catalog, invalid.
    let mut blocker = db.connect().await;
    let tx = blocker.transaction().await.expect("BEGIN");
    tx.batch_execute("UPDATE t SET v = 'held' WHERE id = 0")
        .await
        .expect("UPDATE");
    let mut child = load_command(&home, &db.url, &extra).spawn().expect("spawn");
    let since = Instant::now();
    loop {
        let (_, invalid) = leftovers(&client).await;
        if invalid > 0 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the build never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill9(&mut child);
    tx.rollback().await.expect("ROLLBACK");
    converge(&home, &db.url, &extra);
    assert_eq!(
        exact(&client, salt).await,
        (ROWS as i64, ROWS as i64, ROWS as i64)
    );
    assert_eq!(leftovers(&client).await, (0, 0));
    let valid: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indexrelid = 't_v'::regclass AND indisvalid",
            &[],
        )
        .await
        .expect("index")
        .get(0);
    assert_eq!(valid, 1);
}

/// Several processes load into a fresh database at once (pipeline jobs,
/// Spark tasks, backfills): some into one new table, some into tables of
/// their own, all in a schema that does not exist yet. Creating the
/// schema, the tables and the watermark table is serialised: every load
/// succeeds and every row is there once.
#[tokio::test]
async fn parallel_first_loads_into_a_fresh_database_all_succeed() {
    let db = TestDb::new("faults_parallel_first").await;
    let home = Scratch::new("faults-parallel-first");
    let client = db.connect().await;
    for round in 0..3 {
        let schema = format!("fresh{round}");
        let mut children = Vec::new();
        for i in 0..8 {
            let file = format!("p{round}_{i}.csv");
            let mut text = String::from("id,v\n");
            for r in 0..200 {
                text.push_str(&format!("{},{i}\n", i * 1000 + r));
            }
            home.file(&file, &text, 0o644);
            // Half into one shared table, half into tables of their own.
            let table = if i % 2 == 0 {
                format!("{schema}.shared")
            } else {
                format!("{schema}.own{i}")
            };
            children.push((
                i,
                pgbulk(&home)
                    .args(["--quiet", "load", &file, "-t", &table, "--db", &db.url])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn"),
            ));
        }
        for (i, child) in children {
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}, load {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let shared: i64 = client
            .query_one(&format!("SELECT count(*) FROM {schema}.shared"), &[])
            .await
            .expect("shared")
            .get(0);
        assert_eq!(shared, 800, "round {round}");
        for i in [1, 3, 5, 7] {
            let own: i64 = client
                .query_one(
                    &format!("SELECT count(DISTINCT id) FROM {schema}.own{i}"),
                    &[],
                )
                .await
                .expect("own")
                .get(0);
            assert_eq!(own, 200, "round {round}");
        }
    }
}

/// A backend a killed run left behind (its `application_name` names a
/// process of this host that is gone) holds the table's ingest lock: the
/// rerun names it and waits; with `--terminate-blockers` it ends it at once.
#[tokio::test]
async fn the_orphan_of_a_killed_run_is_named_and_can_be_ended() {
    use std::io::BufRead;
    let db = TestDb::new("faults_orphan").await;
    let home = Scratch::new("faults-orphan");
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .expect("t");
    home.file("in.csv", "id,v\n1,a\n2,b\n", 0o644);
    let mut gone = Command::new("true").spawn().expect("true");
    let pid = gone.id();
    gone.wait().expect("reaped");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let orphan_app = format!("pgbulk [pgbulk {}:{pid}]", host.trim());
    let hold = format!(
        "SET application_name = '{orphan_app}'; SELECT pg_advisory_lock(1885827693, hashtext('public.t'))"
    );
    let orphan = db.connect().await;
    orphan.batch_execute(&hold).await.expect("the orphan holds");

    // Without the option: named, then waited for.
    let mut child = pgbulk(&home)
        .args(["load", "in.csv", "-t", "t", "--db", &db.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = said.send(line);
        }
    });
    let named = loop {
        match heard.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("left running by an earlier pgbulk run that was killed") => {
                break line;
            }
            Ok(_) => {}
            Err(e) => panic!("the wait was not said: {e}"),
        }
    };
    assert!(named.contains(&orphan_app), "{named}");
    orphan
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get::<_, i64>(0),
        2
    );

    // With it: ended at once.
    orphan
        .batch_execute(&hold)
        .await
        .expect("the orphan holds again");
    let out = run(pgbulk(&home).args([
        "load",
        "in.csv",
        "-t",
        "t",
        "--restart",
        "--terminate-blockers",
        "10m",
        "--db",
        &db.url,
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ending backend"), "{}", out.stderr);
    assert!(
        orphan.simple_query("SELECT 1").await.is_err(),
        "the orphan's session was ended"
    );
}

/// The network path drops mid-load (a proxy the test controls cuts every
/// connection after the first commit): without `--retries` the run fails
/// as a lost connection (exit 10) and the same command converges; with
/// `--retries` the run itself continues from its last commit and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_network_path_fails_cleanly_or_is_retried() {
    let db = TestDb::new("faults_proxy").await;
    let home = Scratch::new("faults-proxy");
    let client = db.connect().await;
    let proxy = crate::harness::Proxy::start().await;
    let url = proxy.url(&db);
    assert_ne!(url, db.url, "the URL goes through the proxy");
    for (salt, extra) in [("cut", &[][..]), ("retried", &["--retries", "3"][..])] {
        client
            .batch_execute("DROP TABLE IF EXISTS t, pgbulk_watermark; CREATE TABLE t (id int PRIMARY KEY, v text)")
            .await
            .expect("table");
        write_input(&home, salt);
        let child = load_command(&home, &url, extra).spawn().expect("spawn");
        first_commit(&client).await;
        proxy.cut();
        // Waited for off the runtime: the proxy's tasks run on it.
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if extra.is_empty() {
            assert_eq!(out.status.code(), Some(10), "{stderr}");
            assert!(stderr.contains("the connection was lost"), "{stderr}");
            converge(&home, &url, extra);
        } else {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("resumed after"),
                "the run went on after the cut: {stdout}"
            );
        }
        assert_eq!(
            exact(&client, salt).await,
            (ROWS as i64, ROWS as i64, ROWS as i64),
            "{salt}"
        );
    }
}
