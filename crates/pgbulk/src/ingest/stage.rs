//! Staging a batch: rows encoded to binary COPY and streamed in chunks into
//! TEMP staging tables (or straight into the target).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Transaction;

use super::batch::with_table;
use super::merge::column_list;
use super::target::Target;
use super::{Row, RowFailure, Rows, TextRow, data_error};
use crate::codec::{CopyWriter, Value, shorten};
use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// Bytes of encoded rows sent to the server at a time.
pub(super) const CHUNK: usize = 1 << 20;

/// A table's rows in the batch being staged.
pub(super) struct Pending {
    /// Encoded tuples not sent yet.
    pub(super) writer: CopyWriter,
    /// Where its COPY goes (the target, or a TEMP staging table), once
    /// decided.
    pub(super) into: Option<String>,
    /// Whether it is copied straight into the target.
    pub(super) direct: bool,
    pub(super) rows: u64,
    pub(super) copied: u64,
    /// Hashes of the keys seen, checked for repeats when the COPY ends;
    /// `None` past [`MAX_TRACKED_KEYS`] (repeats are then removed by the
    /// server).
    pub(super) keys: Option<Vec<u64>>,
    pub(super) duplicates: bool,
}

/// Key hashes tracked per table and batch (8 bytes each): beyond this the
/// batch is deduplicated on the server instead.
pub(super) const MAX_TRACKED_KEYS: usize = 8 << 20;

/// The COPY in progress on the batch's connection.
pub(super) struct OpenCopy {
    pub(super) table: usize,
    pub(super) sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
}

/// Streams the batch's rows into staging: each table's rows are encoded
/// into its own buffer and sent in chunks of [`CHUNK`] bytes, keeping one
/// COPY open while rows of the same table follow, so the server loads while
/// the client encodes and memory stays bounded whatever the batch's size.
/// Rows for undeclared tables are counted as skipped. Without
/// `direct_allowed` (a batch that deletes first), keyless tables are staged
/// too instead of copied straight into the table.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stage_rows(
    tx: &Transaction<'_>,
    targets: &[Target],
    lookup: &HashMap<String, usize>,
    rows: Rows,
    number: usize,
    skipped: &mut BTreeMap<String, u64>,
    resume: &mut Option<serde_json::Value>,
    direct_allowed: bool,
) -> Result<Vec<Option<Pending>>> {
    let mut pending: Vec<Option<Pending>> = targets.iter().map(|_| None).collect();
    let mut open: Option<OpenCopy> = None;
    let hasher = std::collections::hash_map::RandomState::new();
    let new_pending = |target: &Target| Pending {
        writer: CopyWriter::tuples_only(),
        into: None,
        direct: direct_allowed && target.key.is_empty() && !target.needs_cast(),
        rows: 0,
        copied: 0,
        keys: Some(Vec::new()),
        duplicates: false,
    };
    match rows {
        Rows::Values(rows) => {
            let mut last: Option<(Arc<str>, Option<usize>)> = None;
            for (i, row) in rows.enumerate() {
                let row = row?;
                let found = match &last {
                    Some((name, t)) if Arc::ptr_eq(name, &row.table) => *t,
                    _ => {
                        let t = lookup.get(&*row.table).copied();
                        last = Some((row.table.clone(), t));
                        t
                    }
                };
                let Some(t) = found else {
                    *skipped.entry(row.table.to_string()).or_default() += 1;
                    continue;
                };
                let target = &targets[t];
                if row.values.len() != target.columns.len() {
                    return Err(data_error(
                        number,
                        &target.name,
                        i + 1,
                        format!(
                            "{} values for {} columns ({})",
                            row.values.len(),
                            target.columns.len(),
                            column_names(target)
                        ),
                    ));
                }
                let p = pending[t].get_or_insert_with(|| new_pending(target));
                encode_row(p, target, &row, i + 1, number, &hasher)?;
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
        }
        Rows::Text(mut source) => {
            let Some(&t) = lookup.get(source.table()) else {
                return Err(Error::config(format!(
                    "table {} is not declared",
                    source.table()
                )));
            };
            let target = &targets[t];
            let mut row = TextRow::default();
            while source.next_row(&mut row)? {
                let p = pending[t].get_or_insert_with(|| new_pending(target));
                if let Some(failure) = encode_text_row(p, target, &row, &hasher) {
                    source.reject(&failure)?;
                    continue;
                }
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
            *resume = source.resume();
        }
    }
    for t in 0..targets.len() {
        if let Some(p) = pending[t].as_mut() {
            if let Some(keys) = p.keys.as_mut() {
                keys.sort_unstable();
                p.duplicates |= keys.windows(2).any(|w| w[0] == w[1]);
                p.keys = None;
            }
            flush(tx, targets, &mut pending, &mut open, t, true).await?;
        }
    }
    if let Some(copy) = open.take() {
        let copied = finish_copy(copy.sink, &targets[copy.table]).await?;
        if let Some(p) = pending[copy.table].as_mut() {
            p.copied += copied;
        }
    }
    Ok(pending)
}

pub(super) fn column_names(target: &Target) -> String {
    target
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encodes one row of text fields (already projected to `target`'s
/// columns) into its table's buffer; on failure the buffer is left as it
/// was and the failure returned.
pub(super) fn encode_text_row<'a>(
    p: &mut Pending,
    target: &'a Target,
    row: &'a TextRow,
    hasher: &std::collections::hash_map::RandomState,
) -> Option<RowFailure<'a>> {
    let mark = p.writer.len();
    p.writer
        .start_tuple(u16::try_from(target.columns.len()).unwrap_or(u16::MAX));
    let mut key_hash = (!target.key.is_empty()).then(|| hasher.build_hasher());
    for (c, column) in target.columns.iter().enumerate() {
        let value = row.get(c);
        let before = p.writer.len();
        let failure = if value.is_none() && column.not_null {
            Some("NULL in a NOT NULL column".to_owned())
        } else {
            p.writer
                .text(value, &column.ty)
                .err()
                .map(|e| e.to_string())
        };
        if let Some(reason) = failure {
            p.writer.truncate(mark);
            return Some(RowFailure {
                field: c,
                column: &column.name,
                value,
                reason,
            });
        }
        if let Some(h) = key_hash.as_mut() {
            if target.key.contains(&c) {
                h.write(p.writer.bytes_since(before));
            }
        }
    }
    track_key(p, key_hash.map(|h| h.finish()));
    None
}

/// Notes a row's key hash (for the repeated-key check) and counts the row.
pub(super) fn track_key(p: &mut Pending, key_hash: Option<u64>) {
    if let Some(h) = key_hash {
        match p.keys.as_mut() {
            Some(keys) if keys.len() < MAX_TRACKED_KEYS => keys.push(h),
            _ => {
                p.keys = None;
                p.duplicates = true;
            }
        }
    }
    p.rows += 1;
}

/// Encodes one row into its table's buffer, noting repeated keys.
pub(super) fn encode_row(
    p: &mut Pending,
    target: &Target,
    row: &Row,
    row_number: usize,
    number: usize,
    hasher: &std::collections::hash_map::RandomState,
) -> Result<()> {
    let mark = p.writer.len();
    p.writer
        .start_tuple(u16::try_from(target.columns.len()).unwrap_or(u16::MAX));
    let mut key_hash = (!target.key.is_empty()).then(|| hasher.build_hasher());
    for (c, (value, column)) in row.values.iter().zip(&target.columns).enumerate() {
        let before = p.writer.len();
        let failure = if matches!(value, Value::Null) && column.not_null {
            Some("NULL in a NOT NULL column".to_owned())
        } else {
            p.writer
                .value(value, &column.ty)
                .err()
                .map(|e| match value {
                    Value::Text(t) => format!("value \"{}\": {e}", shorten(t)),
                    _ => e.to_string(),
                })
        };
        if let Some(why) = failure {
            p.writer.truncate(mark);
            return Err(data_error(
                number,
                &target.name,
                row_number,
                format!("column {}: {why}", column.name),
            ));
        }
        if let Some(h) = key_hash.as_mut() {
            if target.key.contains(&c) {
                h.write(p.writer.bytes_since(before));
            }
        }
    }
    track_key(p, key_hash.map(|h| h.finish()));
    Ok(())
}

/// Sends table `t`'s buffered rows, opening its COPY (and creating its
/// staging table) first if needed; with `last`, ends its COPY.
pub(super) async fn flush(
    tx: &Transaction<'_>,
    targets: &[Target],
    pending: &mut [Option<Pending>],
    open: &mut Option<OpenCopy>,
    t: usize,
    last: bool,
) -> Result<()> {
    if open.as_ref().is_some_and(|o| o.table != t) {
        if let Some(copy) = open.take() {
            let copied = finish_copy(copy.sink, &targets[copy.table]).await?;
            if let Some(p) = pending[copy.table].as_mut() {
                p.copied += copied;
            }
        }
    }
    let target = &targets[t];
    let Some(p) = pending[t].as_mut() else {
        return Ok(());
    };
    if open.is_none() {
        let into = match &p.into {
            Some(into) => into.clone(),
            None => {
                let into = if p.direct {
                    target.write.quoted()
                } else {
                    let stage = quote_ident(&format!("pgbulk_stage_{t}"));
                    create_stage(tx, target, &stage).await?;
                    stage
                };
                p.into = Some(into.clone());
                into
            }
        };
        let statement = format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary)",
            column_list(target)
        );
        let sink = tx
            .copy_in::<_, Bytes>(&statement)
            .await
            .map_err(|e| with_table(Error::server("starting COPY", e), &target.name.to_string()))?;
        let mut sink = Box::pin(sink);
        sink.send(Bytes::from_static(crate::codec::COPY_HEADER))
            .await
            .map_err(|e| Error::server("COPY", e))?;
        *open = Some(OpenCopy { table: t, sink });
    }
    if let Some(copy) = open.as_mut() {
        if !p.writer.is_empty_buffer() {
            // Copy the chunk out and keep the writer's buffer: a fixed-size
            // allocation per chunk instead of a growing buffer each time
            // keeps the process's memory flat however long the load runs.
            let chunk = Bytes::copy_from_slice(p.writer.bytes_since(0));
            p.writer.truncate(0);
            copy.sink
                .send(chunk)
                .await
                .map_err(|e| with_table(Error::server("COPY", e), &target.name.to_string()))?;
        }
    }
    if last {
        if let Some(copy) = open.take() {
            p.copied += finish_copy(copy.sink, target).await?;
        }
    }
    Ok(())
}

/// Creates the TEMP staging table of `target` (dropped at commit); columns
/// the server must cast arrive as `text`.
pub(super) async fn create_stage(tx: &Transaction<'_>, target: &Target, stage: &str) -> Result<()> {
    let cols: Vec<String> = target
        .columns
        .iter()
        .map(|c| {
            let ty = if c.ty.needs_cast() {
                "text"
            } else {
                c.ty.name.as_str()
            };
            format!("{} {ty}", quote_ident(&c.name))
        })
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {stage} ({}) ON COMMIT DROP",
        cols.join(", ")
    ))
    .await
    .map_err(|e| {
        with_table(
            Error::server("creating the staging table", e),
            &target.name.to_string(),
        )
    })
}

/// Ends a COPY (trailer, then `CopyDone`) and returns the rows copied.
pub(super) async fn finish_copy(
    mut sink: Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    target: &Target,
) -> Result<u64> {
    sink.send(Bytes::from_static(crate::codec::COPY_TRAILER))
        .await
        .map_err(|e| with_table(Error::server("COPY", e), &target.name.to_string()))?;
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| with_table(Error::server("COPY", e), &target.name.to_string()))
}
