//! Binary pass-through: the source's `COPY ... TO STDOUT (FORMAT binary)`
//! streamed into the destination's COPY as it arrives, no value decoded,
//! no spool. Used where nothing needs the rows' text: a new destination
//! created from the source's definition and appended to in one
//! transaction (created in it, written frozen, indexed once the rows are
//! in), every column of a built-in type the engine encodes itself (the
//! `SELECT` list already casts each to the destination's type, and a
//! built-in type's binary form is the same on every server).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio_postgres::{Client, Transaction};

use super::Reading;
use crate::codec::{ColumnType, TypeKind};
use crate::error::{Error, ErrorKind, Result};
use crate::ingest::{self, Batch, BatchWatermark, BinaryRows, NextChunks, Rows};
use crate::load::{Declared, LoadOptions, LoadReport, Progress};
use crate::session::Session;

/// Whether every column `reading` selects has a built-in type the engine
/// encodes (so its binary form is what the destination's column takes):
/// the `SELECT` is prepared in `tx`, not run.
pub(super) async fn eligible(tx: &Transaction<'_>, reading: &Reading) -> Result<bool> {
    let statement = tx
        .prepare(&format!(
            "SELECT {} FROM {}{}",
            reading.select,
            reading.relation,
            reading.filter()
        ))
        .await
        .map_err(|e| Error::server(&format!("reading {}", reading.label), e))?;
    Ok(statement
        .columns()
        .iter()
        .all(|c| ColumnType::kind_of_builtin(c.type_().oid()) != TypeKind::Other))
}

/// Streams the rows `reading` selects (in `tx`, the source's snapshot)
/// into `opts.table` on `dest` as one batch: the table is declared by
/// `opts.schema_ddl` (and created by it), `columns` are the destination
/// columns the `SELECT` list fills, in order.
pub(super) async fn run(
    tx: &Transaction<'_>,
    reading: &Reading,
    columns: Vec<String>,
    mut dest: Client,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let started = std::time::Instant::now();
    progress.register(&dest);
    let session = Session::read(&dest).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let declaration = match crate::load::declared(opts, &table, &session.current_schema, false)? {
        Declared::Given(d) => d,
        _ => {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{table}: the pass-through needs the destination's declaration"),
            ));
        }
    };
    let (prepared, _, chosen) =
        crate::load::prepare_table(&mut dest, session, &declaration, opts, &table, false).await?;
    let options =
        crate::load::engine_options(chosen.mode, chosen.key.as_ref(), &table, opts, &progress);
    let copy = format!(
        "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
        reading.select,
        reading.relation,
        reading.filter()
    );
    let label = reading.label.clone();
    let stream = tx
        .copy_out(&copy)
        .await
        .map_err(|e| Error::server(&format!("reading {label}"), e))?;
    let rows = CopyRows {
        table: table.to_string(),
        columns,
        label,
        // Each message holds one row: those already arrived are taken
        // together.
        stream: stream.ready_chunks(1024).boxed(),
        progress: progress.clone(),
    };
    let batch = Batch {
        high_watermark: BatchWatermark::Value(None),
        metadata: serde_json::Value::Null,
        rows: Rows::Binary(Box::new(rows)),
        resume: None,
    };
    let engine =
        ingest::ingest_prepared(&mut dest, &prepared, |_| vec![Ok(batch)], &options).await?;
    let mut report = LoadReport::default();
    report.count(engine);
    let total = report.inserted + report.updated + report.unchanged + report.repeated;
    report.rows_read = total;
    progress.rows_read.store(total, Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The source's binary COPY stream, as the engine takes it.
struct CopyRows {
    table: String,
    columns: Vec<String>,
    label: String,
    stream: BoxStream<'static, Vec<std::result::Result<Bytes, tokio_postgres::Error>>>,
    progress: Arc<Progress>,
}

impl BinaryRows for CopyRows {
    fn table(&self) -> &str {
        &self.table
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_chunks(&mut self) -> NextChunks<'_> {
        Box::pin(async move {
            if self.progress.is_interrupted() {
                return Err(Error::new(ErrorKind::Io, "interrupted"));
            }
            let Some(messages) = self.stream.next().await else {
                return Ok(None);
            };
            let chunks = messages
                .into_iter()
                .collect::<std::result::Result<Vec<Bytes>, _>>()
                .map_err(|e| Error::server(&format!("reading {}", self.label), e))?;
            let bytes: usize = chunks.iter().map(Bytes::len).sum();
            self.progress
                .bytes_read
                .fetch_add(bytes as u64, Ordering::Relaxed);
            self.progress
                .rows_read
                .fetch_add(chunks.len() as u64, Ordering::Relaxed);
            Ok(Some(chunks))
        })
    }
}
