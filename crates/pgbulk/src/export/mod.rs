//! `pgbulk export`: tables of a PostgreSQL database into files a warehouse
//! reads (a directory of Parquet files), incrementally.
//!
//! Each table is read with `COPY (SELECT ...) TO STDOUT (FORMAT binary)`
//! in a read-only snapshot, decoded into Arrow record batches of bounded
//! size ([`decode`]), typed as [`columns`] maps them, and written as
//! Parquet row groups of bounded size while the server sends more: memory
//! does not grow with the table.
//!
//! Incremental (`incremental`): the rows whose column is at or after the
//! watermark of the last run, read in one snapshot with the next
//! watermark, bounded as [`crate::mark`] says (exact for columns stamped by
//! the writing transaction's `now()`). The watermark is stored with the
//! destination (the Parquet directory's state file), written after the
//! rows.
//!
//! Several tables run one after another, each its own unit: one table's
//! failure leaves the others' exports in place, and the report says which
//! failed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;

pub mod columns;
pub mod decode;
pub mod parquet_dir;

use crate::conninfo::ConnParams;
use crate::error::{Error, ErrorKind, Result};
use crate::load::Progress;
use crate::mark::{self, Bound, Mark};
use crate::schema::{TableName, quote_ident};
use crate::session::Session;
pub use columns::{ExportColumn, Kind};
pub use decode::ArrayNulls;
use parquet_dir::{FileWriter, ParquetDir};

/// Where an export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A directory of Parquet files (`parquet://DIR`).
    Parquet(PathBuf),
}

impl Destination {
    /// Parses `parquet://DIR` (a relative or absolute path).
    pub fn parse(text: &str) -> Result<Self> {
        match text.split_once("://") {
            Some(("parquet", dir)) if !dir.is_empty() => Ok(Self::Parquet(PathBuf::from(dir))),
            _ => Err(Error::config(format!(
                "cannot read the destination \"{text}\": write parquet://DIR (a directory, created if missing)"
            ))),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Parquet(dir) => write!(f, "parquet://{}", dir.display()),
        }
    }
}

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The source tables (or views).
    pub tables: Vec<TableName>,
    /// Where they go.
    pub to: Destination,
    /// The destination's name of the table (one table only; default: the
    /// source's name, with its schema unless that is `public`).
    pub to_table: Option<String>,
    /// Only the source rows this SQL condition selects.
    pub filter: Option<String>,
    /// Read only the rows whose value in this column is at or after the
    /// stored watermark.
    pub incremental: Option<String>,
    /// Widen the re-read overlap by this much (application clocks).
    pub lookback: Option<std::time::Duration>,
    /// NULL elements of arrays.
    pub array_nulls: ArrayNulls,
    /// Rows per record batch (0: 8192).
    pub batch_rows: usize,
    /// Plan only: say what would be read and written.
    pub dry_run: bool,
}

/// What the export of one table did.
#[derive(Debug, Clone, Default)]
pub struct TableExport {
    /// The source.
    pub source: String,
    /// The destination's name of the table.
    pub table: String,
    /// Rows written.
    pub rows: u64,
    /// The file written (relative to the destination), if any.
    pub file: Option<String>,
    /// Its size in bytes.
    pub bytes: u64,
    /// With `incremental`: where the read started and where the next starts.
    pub watermarks: Option<(Option<String>, Option<String>)>,
    /// How each column is exported.
    pub mapping: Vec<String>,
    /// With `dry_run`: what would be read and written.
    pub plan: Vec<String>,
    /// What the user should know (values clamped).
    pub notes: Vec<String>,
}

/// What an export did, table by table.
#[derive(Debug, Default)]
pub struct ExportReport {
    /// Each table's outcome, in the order given.
    pub tables: Vec<(String, Result<TableExport>)>,
}

impl ExportReport {
    /// The tables that failed.
    pub fn failed(&self) -> impl Iterator<Item = (&str, &Error)> {
        self.tables
            .iter()
            .filter_map(|(t, r)| r.as_ref().err().map(|e| (t.as_str(), e)))
    }
}

/// Exports `opts.tables` of the `source` database to `opts.to`, each table
/// its own unit (see the module documentation). Fails as a whole only when
/// nothing can start (the options, the connection, the destination).
pub async fn export(
    source: &ConnParams,
    opts: &ExportOptions,
    progress: Arc<Progress>,
) -> Result<ExportReport> {
    if opts.tables.is_empty() {
        return Err(Error::config("name a table to export (--table)"));
    }
    if opts.to_table.is_some() && opts.tables.len() > 1 {
        return Err(Error::config(
            "--to-table names the destination of one table; several are exported under their own names",
        ));
    }
    let mut client = crate::connect::connect(source).await?.client;
    progress.register(&client);
    let session = Session::read(&client).await?;
    let Destination::Parquet(dir) = &opts.to;
    let destination = if opts.dry_run {
        None
    } else {
        Some(ParquetDir::open(dir)?)
    };
    let mut report = ExportReport::default();
    for table in &opts.tables {
        let name = table.in_schema(&session.current_schema);
        let outcome = export_table(
            &mut client,
            &name,
            opts,
            destination.as_ref(),
            dir,
            &progress,
        )
        .await
        .map_err(|e| e.in_table(&name));
        if outcome.is_err() && client.is_closed() {
            client = crate::connect::connect(source).await?.client;
            progress.register(&client);
        }
        report.tables.push((name.to_string(), outcome));
        if progress.is_interrupted() {
            break;
        }
    }
    Ok(report)
}

/// What the writer of a table's file did.
struct Written {
    rows: u64,
    bytes: u64,
    /// Values clamped, per column.
    clamped: Vec<(String, u64)>,
}

/// The destination's name of `source`: `table`, or `schema.table` outside
/// `public`; refused when it cannot be a directory name.
fn destination_name(source: &TableName, opts: &ExportOptions) -> Result<String> {
    let name = match &opts.to_table {
        Some(name) => name.clone(),
        None if source.schema_or_public() == "public" => source.name.clone(),
        None => format!("{}.{}", source.schema_or_public(), source.name),
    };
    if name.is_empty()
        || name.starts_with('.')
        || name.starts_with("_pgbulk")
        || name.contains(['/', '\0'])
    {
        return Err(Error::config(format!(
            "\"{name}\" cannot name the table's directory: give another with --to-table"
        )));
    }
    Ok(name)
}

async fn export_table(
    client: &mut tokio_postgres::Client,
    source: &TableName,
    opts: &ExportOptions,
    destination: Option<&ParquetDir>,
    dir: &std::path::Path,
    progress: &Arc<Progress>,
) -> Result<TableExport> {
    let label = source.to_string();
    let table = destination_name(source, opts)?;
    let exists = crate::catalog::table_oid(client, source.schema_or_public(), &source.name)
        .await?
        .is_some();
    if !exists {
        return Err(Error::config(format!("the source has no table {label}")));
    }
    let relation = source.quoted();
    let columns = columns::read(client, &relation, &label).await?;
    let mapping: Vec<String> = columns.iter().map(ExportColumn::describe).collect();
    let state = match destination {
        Some(d) => d.table_state(&table)?,
        None => ParquetDir::peek(dir, &table)?,
    };
    let incremental = match &opts.incremental {
        Some(column) => {
            let c = columns.iter().find(|c| c.name == *column).ok_or_else(|| {
                Error::config(format!("--incremental: {label} has no column \"{column}\""))
            })?;
            let start = state
                .as_ref()
                .filter(|s| s.column.as_deref() == Some(column.as_str()))
                .and_then(|s| s.watermark.as_ref())
                .and_then(Mark::from_json);
            Some((column.clone(), c.source_type.clone(), start))
        }
        None => None,
    };
    let mut filters: Vec<String> = opts.filter.iter().map(|w| format!("({w})")).collect();
    if let Some((column, type_name, Some(start))) = &incremental {
        filters.push(start.condition(column, type_name, opts.lookback));
    }
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("{} AS {}", c.select, quote_ident(&c.name)))
        .collect();
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let copy = format!(
        "COPY (SELECT {} FROM {relation}{filter}) TO STDOUT (FORMAT binary)",
        select.join(", ")
    );
    if opts.dry_run {
        let mut plan = vec![format!(
            "would read {label}{}{}",
            opts.filter
                .as_deref()
                .map(|w| format!(" WHERE {w}"))
                .unwrap_or_default(),
            incremental
                .as_ref()
                .map(|(c, _, start)| format!(", {}", Mark::describe(start.as_ref(), c)))
                .unwrap_or_default()
        )];
        let runs = state.as_ref().map_or(0, |s| s.runs);
        plan.push(format!(
            "into {}/{table}/run-{:06}.parquet{}",
            dir.display(),
            runs + 1,
            if incremental.is_some() {
                ", beside the earlier runs' files"
            } else {
                ", replacing the table's earlier files"
            }
        ));
        plan.push(format!("with {copy}"));
        return Ok(TableExport {
            source: label,
            table,
            mapping,
            plan,
            watermarks: incremental.map(|(_, _, start)| (start.map(|m| m.value), None)),
            ..TableExport::default()
        });
    }
    let Some(destination) = destination else {
        return Err(Error::config("no destination is open"));
    };
    let run = destination.begin(&table)?;

    let bound = match &incremental {
        Some((_, type_name, _)) => Bound::read(client, type_name).await?,
        None => None,
    };
    let tx = crate::sync::snapshot(client).await?;
    let next = match &incremental {
        Some((column, type_name, start)) => {
            mark::next(
                &tx,
                column,
                type_name,
                &relation,
                opts.filter.as_deref(),
                start.as_ref(),
                bound.as_ref(),
            )
            .await?
        }
        None => None,
    };
    let stream = tx
        .copy_out(&copy)
        .await
        .map_err(|e| Error::server(&format!("reading {label}"), e))?;
    futures_util::pin_mut!(stream);

    // Decoded and written on a thread of its own while the server sends
    // more; chunks of about 256 KiB, a few in flight.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let decoder = decode::Decoder::new(
        &columns,
        &label,
        if opts.batch_rows > 0 {
            opts.batch_rows
        } else {
            8192
        },
        opts.array_nulls,
    );
    let partial = run.partial.clone();
    let counter = progress.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Written> {
        let mut decoder = decoder;
        let mut file = FileWriter::create(&partial, decoder.schema())?;
        let mut write = |batch: arrow_array::RecordBatch| -> Result<()> {
            counter
                .rows_read
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            file.write(&batch)
        };
        while let Some(chunk) = receiver.blocking_recv() {
            decoder.feed(&chunk, &mut write)?;
        }
        decoder.finish(&mut write)?;
        let bytes = file.close()?;
        Ok(Written {
            rows: decoder.rows(),
            bytes,
            clamped: decoder.clamped(),
        })
    });
    let read = async {
        let mut buffer = Vec::with_capacity(256 << 10);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::server(&format!("reading {label}"), e))?;
            progress
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= 256 << 10 {
                let full = std::mem::replace(&mut buffer, Vec::with_capacity(256 << 10));
                if sender.send(full).await.is_err() {
                    // The writer stopped: its error says why.
                    return Ok(());
                }
            }
            if progress.is_interrupted() {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("interrupted while reading {label}: nothing of it was published"),
                ));
            }
        }
        if !buffer.is_empty() {
            let _ = sender.send(buffer).await;
        }
        Ok(())
    };
    let read: Result<()> = read.await;
    drop(sender);
    let written = writer
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("the Parquet writer failed: {e}")));
    let written = match (read, written) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(w)) => w,
    };
    let Written {
        rows,
        bytes,
        clamped,
    } = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&run.partial);
            return Err(e);
        }
    };
    tx.commit()
        .await
        .map_err(|e| Error::server("ending the source snapshot", e))?;

    // An incremental run that read nothing publishes no file.
    let publish = rows > 0 || incremental.is_none();
    if !publish {
        let _ = std::fs::remove_file(&run.partial);
    }
    destination.commit(
        &run,
        publish.then_some(rows),
        incremental.as_ref().map(|(c, _, _)| c.as_str()),
        next.as_ref().map(Mark::to_json),
        &label,
        incremental.is_none(),
    )?;
    let notes = clamped
        .into_iter()
        .map(|(column, n)| {
            let range = match columns.iter().find(|c| c.name == column).map(|c| &c.kind) {
                Some(Kind::Time) => "24:00:00 became 23:59:59.999999",
                _ => "0001-01-01 to 9999-12-31 23:59:59.999999; infinity is beyond it",
            };
            format!("{n} values of \"{column}\" lay outside BigQuery's range and were clamped to it ({range})")
        })
        .collect();
    Ok(TableExport {
        source: label,
        rows,
        file: publish.then(|| run.relative().to_owned()),
        bytes: if publish { bytes } else { 0 },
        watermarks: incremental
            .map(|(_, _, start)| (start.map(|m| m.value), next.map(|m| m.value))),
        table,
        mapping,
        plan: Vec::new(),
        notes,
    })
}
