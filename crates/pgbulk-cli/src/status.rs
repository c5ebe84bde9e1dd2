//! `pgbulk status`: what the target's ledger says of each job of a
//! pipeline, or of one table (see `pgbulk::status`).

use pgbulk::conninfo::Environment;
use pgbulk::schema::TableName;
use pgbulk::status::{LedgerRow, TableStatus};

use crate::args::{Command, StatusArgs};
use crate::pipeline;

/// Runs `pgbulk status`.
pub(crate) async fn status(args: StatusArgs, env: &Environment) -> anyhow::Result<u8> {
    // (heading, target request, table)
    let mut wanted: Vec<(String, pgbulk::conninfo::Request, TableName)> = Vec::new();
    if let Some(file) = &args.file {
        let lookup = |name: &str| std::env::var(name).ok();
        let pipeline = pipeline::read(file, &lookup)?;
        for job in &pipeline.jobs {
            let (connection, table) = match &job.command {
                Command::Load(a) => (&a.connection, a.table.clone()),
                Command::Sync(a) => (
                    &a.connection,
                    a.to.clone().or_else(|| a.table.clone()).unwrap_or_default(),
                ),
                _ => continue,
            };
            let table = TableName::parse(&table)?;
            wanted.push((
                format!("{} ({} into {table})", job.name, job.kind),
                connection.request(),
                table,
            ));
        }
    } else if let Some(table) = &args.table {
        let table = TableName::parse(table)?;
        wanted.push((table.to_string(), args.connection.request(), table));
    }
    // One connection per target, one ledger query per schema.
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    let mut targets: Vec<(String, pgbulk::conninfo::ConnParams, Vec<usize>)> = Vec::new();
    for (i, (_, request, _)) in wanted.iter().enumerate() {
        let params = pgbulk::endpoint::resolve(request, env)?.params;
        let id = params.to_string();
        match targets.iter_mut().find(|(t, _, _)| *t == id) {
            Some((_, _, jobs)) => jobs.push(i),
            None => targets.push((id, params, vec![i])),
        }
    }
    let mut described: Vec<Option<Vec<String>>> = vec![None; wanted.len()];
    for (_, params, jobs) in &targets {
        let client = pgbulk::connect::connect(params).await?.client;
        let tables: Vec<TableName> = jobs.iter().map(|i| wanted[*i].2.clone()).collect();
        let statuses = pgbulk::status::read(&client, &tables).await?;
        for (i, s) in jobs.iter().zip(&statuses) {
            described[*i] = Some(describe(s));
        }
    }
    for ((heading, _, _), lines) in wanted.iter().zip(described) {
        blocks.push((heading.clone(), lines.unwrap_or_default()));
    }
    for (i, (heading, lines)) in blocks.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{heading}");
        for line in lines {
            println!("  {line}");
        }
    }
    Ok(0)
}

/// The lines saying what `status` holds.
pub(crate) fn describe(status: &TableStatus) -> Vec<String> {
    if status.rows.is_empty() {
        return vec![format!(
            "nothing recorded for {} (never loaded by pgbulk)",
            status.table
        )];
    }
    let mut lines = Vec::new();
    let mut ranges_done = 0;
    let mut pending_sync = None;
    for row in &status.rows {
        let part = row.part.as_str();
        let at = &row.updated_at;
        if part == "last-run" {
            if let Some(m) = &row.metadata {
                lines.push(format!(
                    "last run:  {} at {at}: {}",
                    text(m.get("command")),
                    counts(m)
                ));
            }
        } else if part.is_empty() {
            if let Some(hw) = &row.high_watermark {
                lines.push(format!("watermark: {} (at {at})", mark(hw)));
            }
        } else if part.starts_with("load:") {
            lines.push(loaded(row));
        } else if let Some(sync) = part.strip_prefix("sync:") {
            if sync.ends_with("#plan") {
                pending_sync = Some(at.clone());
            } else if sync.contains("#range:") {
                ranges_done += 1;
            } else {
                let from = row
                    .metadata
                    .as_ref()
                    .map(|m| format!("{}.{}", text(m.get("source")), text(m.get("column"))))
                    .unwrap_or_else(|| sync.to_owned());
                let next = row.high_watermark.as_ref().map(mark).unwrap_or_default();
                lines.push(format!(
                    "watermark: the next sync reads {from} {next} (stored at {at})"
                ));
            }
        }
    }
    if let Some(at) = pending_sync {
        lines.push(format!(
            "pending:   a sync in ranges was interrupted ({ranges_done} ranges committed; started {at}): the rerun reads only the others"
        ));
    }
    lines
}

/// A ledger row of a load: an input loaded, or a resume pending.
fn loaded(row: &LedgerRow) -> String {
    let state = row.resume.as_ref();
    let input = state
        .and_then(|s| s.get("input"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("(inputs of an earlier version)");
    let rows = state
        .and_then(|s| s.get("rows"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let complete = state
        .and_then(|s| s.get("complete"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if complete {
        format!("loaded:    {input} ({rows} rows) at {}", row.updated_at)
    } else {
        format!(
            "pending:   {input}: {rows} rows committed at {}; the same command continues after them",
            row.updated_at
        )
    }
}

/// A stored watermark as the user reads it.
fn mark(value: &serde_json::Value) -> String {
    match value.get("after") {
        Some(after) => format!("> {}", text(Some(after))),
        None => format!(">= {}", text(Some(value))),
    }
}

fn text(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".to_owned(),
    }
}

/// A run's recorded counts.
fn counts(m: &serde_json::Value) -> String {
    let n = |k: &str| m.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let seconds = m
        .get("seconds")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let mut out = format!(
        "{} read, {} inserted, {} updated, {} unchanged, {} deleted, {} rejected in {seconds:.1} s",
        n("rows_read"),
        n("inserted"),
        n("updated"),
        n("unchanged"),
        n("deleted"),
        n("rejected")
    );
    if n("skipped_inputs") > 0 {
        out.push_str(&format!(
            " ({} inputs loaded before, skipped)",
            n("skipped_inputs")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        part: &str,
        hw: Option<serde_json::Value>,
        meta: Option<serde_json::Value>,
        resume: Option<serde_json::Value>,
    ) -> LedgerRow {
        LedgerRow {
            part: part.to_owned(),
            high_watermark: hw,
            metadata: meta,
            resume,
            updated_at: "2026-12-01 10:00:00+00".to_owned(),
        }
    }

    #[test]
    fn ledger_rows_read_as_sentences() {
        let status = TableStatus {
            table: TableName::new("public", "sales"),
            rows: vec![
                row(
                    "last-run",
                    None,
                    Some(
                        serde_json::json!({"command": "load", "rows_read": 3, "inserted": 2, "updated": 1, "seconds": 0.25}),
                    ),
                    None,
                ),
                row(
                    "load:aa",
                    None,
                    None,
                    Some(
                        serde_json::json!({"input": "landing/a.csv", "rows": 2, "complete": true}),
                    ),
                ),
                row(
                    "load:bb",
                    None,
                    None,
                    Some(
                        serde_json::json!({"input": "landing/b.csv", "rows": 5, "complete": false}),
                    ),
                ),
                row(
                    "sync:public.users.updated_at",
                    Some(serde_json::json!({"after": "2024-05-01 00:00:00+00"})),
                    Some(serde_json::json!({"source": "public.users", "column": "updated_at"})),
                    None,
                ),
            ],
        };
        let lines = describe(&status);
        assert_eq!(
            lines[0],
            "last run:  load at 2026-12-01 10:00:00+00: 3 read, 2 inserted, 1 updated, 0 unchanged, 0 deleted, 0 rejected in 0.2 s"
        );
        assert_eq!(
            lines[1],
            "loaded:    landing/a.csv (2 rows) at 2026-12-01 10:00:00+00"
        );
        assert!(lines[2].starts_with("pending:   landing/b.csv: 5 rows committed"));
        assert_eq!(
            lines[3],
            "watermark: the next sync reads public.users.updated_at > 2024-05-01 00:00:00+00 (stored at 2026-12-01 10:00:00+00)"
        );
        let empty = TableStatus {
            table: TableName::new("public", "t"),
            rows: vec![],
        };
        assert!(describe(&empty)[0].contains("never loaded"));
    }
}
