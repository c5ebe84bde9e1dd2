//! What an export's destination records of each table it exports (for
//! `pgbulk status`): the Parquet directory's state file, or the BigQuery
//! dataset's `_pgbulk_state` table and the table itself. Reads only; the
//! source is not connected to (an unqualified table is taken as in
//! `public`).

use std::path::Path;

use super::bigquery::{self, BigQuery};
use super::parquet_dir::{ParquetDir, TableState};
use super::{Destination, ExportOptions, Source, destination_name};
use crate::error::{Error, ErrorKind, Result};

/// One exported table's record at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportStatus {
    /// The source table (or "the query").
    pub source: String,
    /// The destination's name of the table.
    pub table: String,
    /// What the destination records, in sentences (as `pgbulk status`
    /// prints them).
    pub lines: Vec<String>,
}

/// What `opts.to` records of each table `opts` exports, in order.
pub async fn status(opts: &ExportOptions) -> Result<Vec<ExportStatus>> {
    let sources: Vec<(String, Source)> = match &opts.query {
        Some(query) => vec![("the query".to_owned(), Source::Query(query.clone()))],
        None => opts
            .tables
            .iter()
            .map(|t| (t.to_string(), Source::Table(t.clone())))
            .collect(),
    };
    let mut wanted = Vec::new();
    for (label, source) in &sources {
        wanted.push((label.clone(), destination_name(source, opts)?));
    }
    match &opts.to {
        Destination::Parquet(dir) => wanted
            .into_iter()
            .map(|(source, table)| {
                let state = ParquetDir::peek(dir, &table)?;
                let lines = parquet_lines(dir, &table, state.as_ref());
                Ok(ExportStatus {
                    source,
                    table,
                    lines,
                })
            })
            .collect(),
        Destination::BigQuery { project, dataset } => {
            let (project, dataset, endpoint) = (
                project.clone(),
                dataset.clone(),
                opts.bigquery_endpoint.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let mut bq = BigQuery::new(&project, &dataset, endpoint.as_deref())?;
                let state = bigquery_marks(&mut bq)?;
                wanted
                    .into_iter()
                    .map(|(source, table)| {
                        let mut lines = vec![match bq.columns(&table)? {
                            Some(_) => format!("table:     {}", bq.quoted(&table)),
                            None => format!("table:     {} does not exist yet", bq.quoted(&table)),
                        }];
                        for m in state.iter().filter(|m| m.table == table) {
                            lines.push(format!(
                                "watermark: the next export reads {}.{} {} (stored at {})",
                                m.source, m.column, m.mark, m.at
                            ));
                        }
                        Ok(ExportStatus {
                            source,
                            table,
                            lines,
                        })
                    })
                    .collect()
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("reading BigQuery: {e}")))?
        }
    }
}

/// The Parquet directory's record of `table`.
fn parquet_lines(dir: &Path, table: &str, state: Option<&TableState>) -> Vec<String> {
    let Some(state) = state else {
        return vec![format!(
            "nothing exported into {} yet",
            dir.join(table).display()
        )];
    };
    let mut lines = Vec::new();
    if state.files_gone(dir) {
        lines.push(format!(
            "files:     gone from {} (the next run exports every row again)",
            dir.join(table).display()
        ));
    } else if let Some(newest) = state.files.last() {
        lines.push(format!(
            "files:     {} holding {} from {}; the newest {}",
            counted(state.files.len() as u64, "file"),
            counted(state.rows, "row"),
            counted(state.runs, "run"),
            dir.join(newest).display()
        ));
    } else {
        lines.push(format!(
            "files:     none, from {}",
            counted(state.runs, "run")
        ));
    }
    if let (Some(column), Some(mark)) = (&state.column, &state.watermark) {
        lines.push(format!(
            "watermark: the next export reads {}.{column} {}",
            state.source,
            crate::status::mark(mark)
        ));
    }
    lines
}

/// `1 row`, `2 rows`.
fn counted(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// A watermark the dataset's state table holds.
struct StoredMark {
    table: String,
    column: String,
    source: String,
    /// As `pgbulk status` says it.
    mark: String,
    /// When it was stored.
    at: String,
}

/// The dataset's stored watermarks, none without a state table.
fn bigquery_marks(bq: &mut BigQuery) -> Result<Vec<StoredMark>> {
    if bq.columns(bigquery::STATE_TABLE)?.is_none() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT table_name, column_name, source, watermark, CAST(updated_at AS STRING) FROM {} \
         ORDER BY table_name, column_name",
        bq.quoted(bigquery::STATE_TABLE)
    );
    let (rows, _) = bq.query(&sql, &[], "reading the stored watermarks")?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let mark = serde_json::from_str(&cell(3))
                .map(|m| crate::status::mark(&m))
                .unwrap_or_else(|_| cell(3));
            StoredMark {
                table: cell(0),
                column: cell(1),
                source: cell(2),
                mark,
                at: cell(4),
            }
        })
        .collect())
}
