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
        .map(|t| {
            TableName::new(
                t.schema.as_deref().unwrap_or(&session.current_schema),
                &t.name,
            )
        })
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
