//! What the ledger in the target says of a table: its watermark, the files
//! loaded into it and when, unfinished loads and syncs (a resume pending),
//! and the counts of the last run. Read from `pgbulk_watermark` (one query
//! per schema; no scan of the data).
//!
//! A load or sync that succeeds records its counts as the row
//! `<table>#last-run` (`batch_metadata`), after its last batch committed.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::schema::TableName;
use crate::watermark;

/// One ledger row of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// The row's key after `<table>#` (empty: the table's own watermark
    /// row).
    pub part: String,
    /// The stored high watermark.
    pub high_watermark: Option<serde_json::Value>,
    /// The batch metadata (for `last-run`: the run's counts).
    pub metadata: Option<serde_json::Value>,
    /// The resume state a load stored with its last batch.
    pub resume: Option<serde_json::Value>,
    /// When it was written (the server's text, in the session's zone).
    pub updated_at: String,
}

/// The ledger of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableStatus {
    /// Schema-qualified.
    pub table: TableName,
    /// Ordered by key.
    pub rows: Vec<LedgerRow>,
}

/// The ledgers of `tables` (unqualified names are found in the session's
/// current schema), in the order given.
pub async fn read(client: &Client, tables: &[TableName]) -> Result<Vec<TableStatus>> {
    let session = crate::session::Session::read(client).await?;
    let qualified: Vec<TableName> = tables
        .iter()
        .map(|t| t.in_schema(&session.current_schema))
        .collect();
    let mut out: Vec<TableStatus> = qualified
        .iter()
        .map(|t| TableStatus {
            table: t.clone(),
            rows: Vec::new(),
        })
        .collect();
    let mut schemas: Vec<&str> = qualified.iter().map(TableName::schema_or_public).collect();
    schemas.sort_unstable();
    schemas.dedup();
    for schema in schemas {
        if !watermark::exists(client, schema).await? {
            continue;
        }
        let names: Vec<String> = qualified
            .iter()
            .filter(|t| t.schema_or_public() == schema)
            .map(ToString::to_string)
            .collect();
        let rows = client
            .query(
                &format!(
                    "SELECT t.name, substr(w.table_name, length(t.name) + 2), \
                     w.high_watermark::text, w.batch_metadata::text, (w.resume -> 'state')::text, \
                     to_char(w.updated_at, 'YYYY-MM-DD HH24:MI:SSOF') \
                     FROM unnest($1::text[]) AS t(name) JOIN {} w \
                     ON w.table_name = t.name OR left(w.table_name, length(t.name) + 1) = t.name || '#' \
                     ORDER BY w.table_name",
                    watermark::table(schema).quoted()
                ),
                &[&names],
            )
            .await
            .map_err(|e| Error::server("reading the ledger", e))?;
        for row in rows {
            let name: String = row.get(0);
            let json = |i: usize| -> Option<serde_json::Value> {
                row.get::<_, Option<String>>(i)
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .filter(|v: &serde_json::Value| !v.is_null())
            };
            let entry = LedgerRow {
                part: row.get(1),
                high_watermark: json(2),
                metadata: json(3),
                resume: json(4),
                updated_at: row.get(5),
            };
            if let Some(status) = out.iter_mut().find(|s| s.table.to_string() == name) {
                status.rows.push(entry);
            }
        }
    }
    Ok(out)
}

/// Records `counts` as the last run of `table` (unqualified: in the
/// session's current schema), when pgbulk keeps a ledger in its schema.
pub async fn record_run(
    client: &Client,
    table: &TableName,
    counts: serde_json::Value,
) -> Result<()> {
    let schema = match &table.schema {
        Some(s) => s.clone(),
        None => crate::session::Session::read(client).await?.current_schema,
    };
    if !watermark::exists(client, &schema).await? {
        return Ok(());
    }
    let table = TableName::new(&schema, &table.name);
    client
        .execute(
            &format!(
                "INSERT INTO {} (table_name, batch_metadata, updated_at) VALUES ($1, $2::text::jsonb, now()) \
                 ON CONFLICT (table_name) DO UPDATE SET batch_metadata = EXCLUDED.batch_metadata, updated_at = now()",
                watermark::table(&schema).quoted()
            ),
            &[&watermark::key(&table, Some("last-run")), &counts.to_string()],
        )
        .await
        .map_err(|e| Error::server("recording the run in the ledger", e))?;
    Ok(())
}

/// The counts of a load report, as [`record_run`] stores them.
pub fn counts(
    command: &str,
    report: &crate::load::LoadReport,
    rows_read: u64,
) -> serde_json::Value {
    serde_json::json!({
        "command": command,
        "rows_read": rows_read,
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "deleted": report.deleted,
        "rejected": report.rejected,
        "batches": report.batches,
        "seconds": (report.seconds * 1000.0).round() / 1000.0,
        "skipped_inputs": report.skipped.len(),
    })
}

impl TableStatus {
    /// What the ledger says, in sentences (as `pgbulk status` prints them).
    pub fn describe(&self) -> Vec<String> {
        describe(self)
    }
}

fn describe(status: &TableStatus) -> Vec<String> {
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
                    recorded(m)
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
        let rows = if rows == 1 {
            "1 row".to_owned()
        } else {
            format!("{rows} rows")
        };
        format!("loaded:    {input} ({rows}) at {}", row.updated_at)
    } else {
        format!(
            "pending:   {input}: {rows} rows committed at {}; the same command continues after them",
            row.updated_at
        )
    }
}

/// A stored watermark as the user reads it.
pub(crate) fn mark(value: &serde_json::Value) -> String {
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
fn recorded(m: &serde_json::Value) -> String {
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
        let lines = status.describe();
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
        assert!(empty.describe()[0].contains("never loaded"));
    }
}
