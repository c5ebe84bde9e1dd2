//! Bad input at scale, through the command: a valid file mutated (bytes
//! flipped, cut, inserted; a huge field; thousands of columns) never makes
//! pgbulk panic or hang, always ends in a documented exit code, and a
//! failed run leaves only whole committed batches.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Rng, Scratch, TestDb, pgbulk};

const BATCH: i64 = 10;

fn valid_file(rng: &mut Rng) -> Vec<u8> {
    let mut text = String::from("id,amount,day,at,name,ok,doc\n");
    for i in 0..60 {
        text.push_str(&format!(
            "{i},{}.{:02},2024-{:02}-{:02},2024-03-{:02} 10:{:02}:00+01,\"n{i}, \"\"q\"\"\",{},\"{{\"\"k\"\": {i}}}\"\n",
            rng.below(100_000),
            rng.below(100),
            1 + rng.below(12),
            1 + rng.below(28),
            1 + rng.below(28),
            rng.below(60),
            if rng.below(2) == 0 { "true" } else { "f" },
        ));
    }
    text.into_bytes()
}

/// One mutation of `file`, and what it was.
fn mutate(file: &[u8], rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let mut out = file.to_vec();
    let at = |rng: &mut Rng, len: usize| rng.below(len.max(1) as u64) as usize;
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = at(rng, out.len());
                out[i] ^= 1 << rng.below(8);
            }
            (out, "bytes flipped")
        }
        1 => {
            out.truncate(at(rng, out.len()));
            (out, "cut short")
        }
        2 => {
            let i = at(rng, out.len());
            let junk: Vec<u8> = (0..1 + rng.below(40))
                .map(|_| rng.below(256) as u8)
                .collect();
            out.splice(i..i, junk);
            (out, "random bytes inserted")
        }
        3 => {
            let i = at(rng, out.len());
            let special = [
                b",".as_slice(),
                b"\"",
                b"\n",
                b"\r",
                b"\\",
                b"\0",
                "é".as_bytes(),
            ];
            let s = special[rng.below(special.len() as u64) as usize];
            out.splice(i..i, s.iter().copied());
            (out, "a syntax byte inserted")
        }
        4 => {
            let i = out.iter().position(|b| *b == b'\n').unwrap_or(0) + 1;
            let mut huge = b"1,2,2024-01-01,2024-01-01 00:00:00+00,\"".to_vec();
            huge.extend(std::iter::repeat_n(b'x', 2 << 20));
            huge.extend_from_slice(b"\",true,{}\n");
            out.splice(i..i, huge);
            (out, "a huge field")
        }
        5 => {
            let header: Vec<String> = (0..5000).map(|c| format!("c{c}")).collect();
            let mut text = header.join(",").into_bytes();
            text.push(b'\n');
            text.extend(std::iter::repeat_n(b"1,".as_slice(), 4999).flatten());
            text.extend_from_slice(b"1\n");
            (text, "5,000 columns")
        }
        _ => {
            let random: Vec<u8> = (0..rng.below(4096)).map(|_| rng.below(256) as u8).collect();
            (random, "random bytes")
        }
    }
}

#[tokio::test]
async fn mutated_inputs_end_in_documented_codes_with_whole_batches() {
    let db = TestDb::new("mutations").await;
    let home = Scratch::new("mutations");
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, amount numeric(12,2), day date, at timestamptz, name text, ok bool, doc jsonb)",
        )
        .await
        .expect("table");
    let cases: u64 = std::env::var("PGBULK_MUTATION_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let mut rng = Rng(0x5eed_0fba_5e00);
    let valid = valid_file(&mut rng);
    for case in 0..cases {
        let (input, what) = mutate(&valid, &mut rng);
        std::fs::write(home.path().join("m.csv"), &input).expect("write");
        client
            .batch_execute("TRUNCATE t; DROP TABLE IF EXISTS pgbulk_watermark")
            .await
            .expect("reset");
        let mut child = pgbulk(&home)
            .args([
                "--quiet",
                "load",
                "m.csv",
                "-t",
                "t",
                "--batch-rows",
                "10",
                "--db",
                &db.url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("case {case} ({what}): pgbulk hung");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        assert!(
            !stderr.contains("panicked"),
            "case {case} ({what}): {stderr}"
        );
        let code = status.code();
        assert!(
            matches!(code, Some(0 | 9)),
            "case {case} ({what}): exit {code:?}: {stderr}"
        );
        assert!(
            stderr.len() < 4096,
            "case {case} ({what}): a bounded message ({} bytes)",
            stderr.len()
        );
        let rows: i64 = client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get(0);
        if code != Some(0) {
            assert_eq!(
                rows % BATCH,
                0,
                "case {case} ({what}): only whole batches are visible after a failure: {stderr}"
            );
        }
    }
}
