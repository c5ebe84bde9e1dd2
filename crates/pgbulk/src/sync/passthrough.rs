//! Binary pass-through: the source's `COPY ... TO STDOUT (FORMAT binary)`
//! streamed into the destination's COPY as it arrives, no value decoded,
//! no spool. Used where nothing needs the rows' text and one transaction
//! takes all the rows read: a new destination created from the source's
//! definition and appended to in one transaction (created in it, written
//! frozen, indexed once the rows are in), and each range of `--jobs` (a
//! range commits on its own); every column of a built-in type the engine
//! encodes itself (the `SELECT` list already casts each to the
//! destination's type, and a built-in type's binary form is the same on
//! every server).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio_postgres::{Client, Transaction};

use super::Reading;
use crate::codec::tuples::Tuples;
use crate::codec::{COPY_HEADER, COPY_TRAILER, ColumnType, TypeKind};
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

/// What one pass-through reads and where it goes.
pub(super) struct Passage<'a> {
    /// The rows.
    pub(super) reading: &'a Reading,
    /// A condition on them besides the reading's (a range), or none.
    pub(super) range: Option<&'a str>,
    /// How messages name them.
    pub(super) label: String,
    /// The destination columns the `SELECT` list fills, in order.
    pub(super) columns: Vec<String>,
    /// Runs in each batch's transaction just before it commits.
    pub(super) before_visible: Option<Arc<dyn ingest::BeforeVisible>>,
    /// Rows per batch (`u64::MAX`: all in one), each batch committed on
    /// its own.
    pub(super) batch_rows: u64,
    /// No two rows share the destination's key (it is the source's
    /// primary key): the destination need not look for repeats.
    pub(super) keys_unique: bool,
    /// An existing destination found empty, appended to in one batch:
    /// filled as a new copy of it when it has an index (see
    /// [`ingest::Options::fill_empty`]).
    pub(super) fill_empty: bool,
    /// A full sync, batches not asked for, into a table that holds rows:
    /// a first batch of [`PROBE_ROWS`] rows decides. When it changed
    /// nothing, the rest goes in one batch, which reads the table once
    /// where each batch of more than a twentieth of it reads all of it
    /// (see `crate::load::probe`).
    pub(super) probe: bool,
}

/// Rows of the first batch of a [`Passage::probe`].
const PROBE_ROWS: u64 = 20_000;

/// Streams the rows `passage` selects (in `tx`, the source's snapshot)
/// into `opts.table` on `dest` (a session the caller may use again after),
/// in batches cut at tuple bounds: a new table is declared by
/// `opts.schema_ddl` (and created by it), an existing one is taken as it
/// is.
pub(super) async fn run(
    tx: &Transaction<'_>,
    passage: Passage<'_>,
    dest: &mut Client,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let started = std::time::Instant::now();
    progress.register(dest);
    let session = Session::read(dest).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let exists = crate::catalog::table_oid(dest, table.schema_or_public(), &table.name)
        .await?
        .is_some();
    let declaration = match crate::load::declared(opts, &table, &session.current_schema, exists)? {
        Declared::Given(d) => d,
        Declared::Existing if exists => crate::schema::Declaration::existing(vec![table.clone()]),
        _ => {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{table}: the pass-through needs the destination's declaration"),
            ));
        }
    };
    let (prepared, _, chosen) =
        crate::load::prepare_table(dest, session, &declaration, opts, &table, exists).await?;
    let fill_empty =
        passage.fill_empty && exists && crate::rebuild::fill_pays(dest, &table).await?;
    let options = ingest::Options {
        before_visible: passage.before_visible,
        fill_empty,
        ..crate::load::engine_options(chosen.mode, chosen.key.as_ref(), &table, opts, &progress)
    };
    let reading = passage.reading;
    let filter = match passage.range {
        Some(range) => reading.filter_and(range),
        None => reading.filter(),
    };
    let copy = format!(
        "COPY (SELECT {} FROM {}{filter}) TO STDOUT (FORMAT binary)",
        reading.select, reading.relation,
    );
    let label = passage.label;
    let stream = tx
        .copy_out(&copy)
        .await
        .map_err(|e| Error::server(&format!("reading {label}"), e))?;
    let fields = u16::try_from(passage.columns.len()).unwrap_or(u16::MAX);
    let splitter = Arc::new(tokio::sync::Mutex::new(Splitter {
        // Each message holds one row: those already arrived are taken
        // together.
        stream: stream.ready_chunks(1024).boxed(),
        tuples: Tuples::new(fields),
        pending: VecDeque::new(),
        label,
        progress: progress.clone(),
    }));
    let done = Arc::new(AtomicBool::new(false));
    let part = CopyPart {
        splitter,
        done: done.clone(),
        table: table.to_string(),
        columns: Arc::new(passage.columns),
        left: passage.batch_rows.max(1),
        stage: Stage::Header,
        keys_unique: passage.keys_unique,
    };
    let batch = |part: CopyPart| Batch {
        high_watermark: BatchWatermark::Value(None),
        metadata: serde_json::Value::Null,
        rows: Rows::Binary(Box::new(part)),
        resume: None,
    };
    let mut options = options;
    let mut first = None;
    let mut part = part;
    let mut prepared = prepared;
    if passage.probe && part.left > PROBE_ROWS {
        // Migrated first: the batches are two ingests' (the table's
        // migration is not the first batch's).
        prepared = ingest::settle(dest, prepared, &options).await?;
        let probe = CopyPart {
            left: PROBE_ROWS,
            ..part.fresh()
        };
        let engine = ingest::ingest_prepared(
            dest,
            &prepared,
            |_| std::iter::once(Ok(batch(probe))),
            &options,
        )
        .await?;
        if engine
            .tables
            .values()
            .all(|c| c.inserted == 0 && c.updated == 0)
        {
            tracing::debug!(
                "{table}: the first {PROBE_ROWS} rows changed nothing: the rest in one batch, which reads the table once"
            );
            part.left = u64::MAX;
        }
        options.batch_offset = engine.batches.len();
        first = Some(engine);
    }
    let engine = if done.load(Ordering::SeqCst) {
        ingest::Report::default()
    } else {
        let batches = std::iter::from_fn(move || {
            (!done.load(Ordering::SeqCst)).then(|| Ok(batch(part.fresh())))
        });
        ingest::ingest_prepared(dest, &prepared, |_| batches, &options).await?
    };
    let engine = match first {
        Some(mut first) => {
            first.merge(engine);
            first
        }
        None => engine,
    };
    let mut report = LoadReport::default();
    report.count(engine);
    report.rows_read = report.inserted + report.updated + report.unchanged + report.repeated;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The source's binary COPY stream, read by one batch after another.
struct Splitter {
    stream: BoxStream<'static, Vec<std::result::Result<Bytes, tokio_postgres::Error>>>,
    /// The stream's framing: tuples are handed on without its header and
    /// trailer (each batch gets its own).
    tuples: Tuples,
    /// Messages read and not yet handed to a batch.
    pending: VecDeque<Bytes>,
    label: String,
    progress: Arc<Progress>,
}

impl Splitter {
    /// The next message, or `None` at the end of the stream.
    async fn next_message(&mut self) -> Result<Option<Bytes>> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(Some(message));
        }
        let Some(messages) = self.stream.next().await else {
            return Ok(None);
        };
        for message in messages {
            let message =
                message.map_err(|e| Error::server(&format!("reading {}", self.label), e))?;
            self.progress
                .bytes_read
                .fetch_add(message.len() as u64, Ordering::Relaxed);
            self.pending.push_back(message);
        }
        Ok(self.pending.pop_front())
    }

    /// See [`Tuples::whole`].
    fn whole(&mut self, message: &[u8]) -> Result<Option<(usize, u64)>> {
        self.tuples
            .whole(message)
            .map_err(|why| Error::new(ErrorKind::Data, format!("reading {}: {why}", self.label)))
    }

    /// Appends the tuples of `message` to `out`; how many.
    fn split(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<u64> {
        self.tuples
            .feed(message, out)
            .map_err(|why| Error::new(ErrorKind::Data, format!("reading {}: {why}", self.label)))
    }
}

/// Where a batch's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Tuples,
    Trailer,
    Done,
}

/// One batch's rows: up to `left` tuples of the source's stream, framed
/// as a stream of their own.
struct CopyPart {
    splitter: Arc<tokio::sync::Mutex<Splitter>>,
    /// Set once the source's trailer was read: no batch follows.
    done: Arc<AtomicBool>,
    table: String,
    columns: Arc<Vec<String>>,
    left: u64,
    stage: Stage,
    keys_unique: bool,
}

impl CopyPart {
    /// The next batch's part (as many rows as this one was given).
    fn fresh(&self) -> Self {
        Self {
            splitter: self.splitter.clone(),
            done: self.done.clone(),
            table: self.table.clone(),
            columns: self.columns.clone(),
            left: self.left,
            stage: Stage::Header,
            keys_unique: self.keys_unique,
        }
    }

    /// The tuples of the messages at hand (waiting for one when none is),
    /// up to the batch's size; empty once the batch is full or the stream
    /// ended. A big message of whole tuples (a huge value) is handed on as
    /// it is, not copied.
    async fn tuples(&mut self) -> Result<Vec<Bytes>> {
        let mut splitter = self.splitter.lock().await;
        if splitter.progress.is_interrupted() {
            return Err(Error::new(ErrorKind::Io, "interrupted"));
        }
        let mut chunks = Vec::new();
        let mut out = Vec::new();
        while self.left > 0 && !splitter.tuples.is_done() {
            if (!out.is_empty() || !chunks.is_empty()) && splitter.pending.is_empty() {
                // Hand these on rather than wait for more.
                break;
            }
            let Some(message) = splitter.next_message().await? else {
                break;
            };
            let whole = if message.len() >= PASSED_WHOLE {
                splitter.whole(&message)?
            } else {
                None
            };
            let rows = match whole {
                Some((len, rows)) => {
                    if !out.is_empty() {
                        chunks.push(Bytes::from(std::mem::take(&mut out)));
                    }
                    chunks.push(message.slice(..len));
                    rows
                }
                None => splitter.split(&message, &mut out)?,
            };
            splitter
                .progress
                .rows_read
                .fetch_add(rows, Ordering::Relaxed);
            self.left = self.left.saturating_sub(rows);
        }
        if self.left == 0 && !splitter.tuples.is_done() {
            // A full batch: when only the trailer follows, it is the last.
            if let Some(next) = splitter.next_message().await? {
                if next.as_ref() == COPY_TRAILER {
                    splitter.split(&next, &mut out)?;
                } else {
                    splitter.pending.push_front(next);
                }
            }
        }
        if !out.is_empty() {
            chunks.push(Bytes::from(out));
        }
        if splitter.tuples.is_done() {
            self.done.store(true, Ordering::SeqCst);
        } else if chunks.is_empty() && self.left > 0 {
            // The stream ended before its trailer.
            let label = splitter.label.clone();
            splitter
                .tuples
                .finish()
                .map_err(|why| Error::new(ErrorKind::Data, format!("reading {label}: {why}")))?;
        }
        Ok(chunks)
    }
}

/// A message of at least this many bytes that holds whole tuples is
/// handed on as it is (a slice of the source's message) instead of copied
/// into a batch's chunk: a 200 MB value so costs two copies, not three.
const PASSED_WHOLE: usize = 1 << 20;

impl BinaryRows for CopyPart {
    fn table(&self) -> &str {
        &self.table
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn keys_unique(&self) -> bool {
        self.keys_unique
    }

    fn next_chunks(&mut self) -> NextChunks<'_> {
        Box::pin(async move {
            match self.stage {
                Stage::Header => {
                    self.stage = Stage::Tuples;
                    Ok(Some(vec![Bytes::from_static(COPY_HEADER)]))
                }
                Stage::Tuples => {
                    let chunks = self.tuples().await?;
                    if chunks.is_empty() {
                        self.stage = Stage::Done;
                        return Ok(Some(vec![Bytes::from_static(COPY_TRAILER)]));
                    }
                    if self.left == 0 || self.done.load(Ordering::SeqCst) {
                        self.stage = Stage::Trailer;
                    }
                    Ok(Some(chunks))
                }
                Stage::Trailer => {
                    self.stage = Stage::Done;
                    Ok(Some(vec![Bytes::from_static(COPY_TRAILER)]))
                }
                Stage::Done => Ok(None),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY stream of `rows` one-field tuples (`i32` values), one
    /// message per row as a server sends them: the header with the first
    /// row, the trailer alone; `cut`: the trailer never comes.
    fn stream(rows: i32, cut: bool) -> Vec<Bytes> {
        let mut messages = Vec::new();
        let mut first = COPY_HEADER.to_vec();
        for i in 0..rows {
            let mut m = if i == 0 {
                std::mem::take(&mut first)
            } else {
                Vec::new()
            };
            m.extend_from_slice(&1i16.to_be_bytes());
            m.extend_from_slice(&4i32.to_be_bytes());
            m.extend_from_slice(&i.to_be_bytes());
            messages.push(Bytes::from(m));
        }
        if !first.is_empty() {
            messages.push(Bytes::from(first));
        }
        if !cut {
            messages.push(Bytes::from_static(COPY_TRAILER));
        }
        messages
    }

    /// The batches `messages` (of one-field tuples) are cut into at
    /// `batch_rows`, each as the bytes of its stream.
    async fn raw_batches(messages: Vec<Bytes>, batch_rows: u64) -> Result<Vec<Vec<u8>>> {
        let groups: Vec<Vec<std::result::Result<Bytes, tokio_postgres::Error>>> = messages
            .chunks(3)
            .map(|c| c.iter().cloned().map(Ok).collect())
            .collect();
        let splitter = Arc::new(tokio::sync::Mutex::new(Splitter {
            stream: futures_util::stream::iter(groups).boxed(),
            tuples: Tuples::new(1),
            pending: VecDeque::new(),
            label: "t".to_owned(),
            progress: Arc::new(Progress::default()),
        }));
        let first = CopyPart {
            splitter,
            done: Arc::new(AtomicBool::new(false)),
            table: "t".to_owned(),
            columns: Arc::new(vec!["v".to_owned()]),
            left: batch_rows,
            stage: Stage::Header,
            keys_unique: false,
        };
        let mut out = Vec::new();
        while !first.done.load(Ordering::SeqCst) {
            let mut part = first.fresh();
            let mut bytes = Vec::new();
            while let Some(chunks) = part.next_chunks().await? {
                for c in chunks {
                    bytes.extend_from_slice(&c);
                }
            }
            out.push(bytes);
            assert!(out.len() < 100, "batches never end");
        }
        Ok(out)
    }

    /// The batches `messages` are cut into at `batch_rows`, each as the
    /// values of its tuples (checked to be a whole stream of its own).
    async fn batches(messages: Vec<Bytes>, batch_rows: u64) -> Result<Vec<Vec<i32>>> {
        let mut out = Vec::new();
        for bytes in raw_batches(messages, batch_rows).await? {
            let mut tuples = Tuples::new(1);
            let mut body = Vec::new();
            tuples.feed(&bytes, &mut body).expect("a whole stream");
            tuples.finish().expect("with its trailer");
            out.push(
                body.chunks(10)
                    .map(|t| i32::from_be_bytes([t[6], t[7], t[8], t[9]]))
                    .collect(),
            );
        }
        Ok(out)
    }

    #[tokio::test]
    async fn huge_values_are_handed_on_whole_in_order() {
        let tuple = |value: &[u8]| {
            let mut t = 1i16.to_be_bytes().to_vec();
            t.extend_from_slice(&i32::try_from(value.len()).expect("len").to_be_bytes());
            t.extend_from_slice(value);
            t
        };
        let big = |b: u8| vec![b; PASSED_WHOLE + 7];
        let tuples = [
            tuple(b"a"),
            tuple(&big(b'b')),
            tuple(b"c"),
            tuple(&big(b'd')),
            tuple(&big(b'e')),
        ];
        let mut messages = vec![Bytes::from([COPY_HEADER, &tuples[0][..]].concat())];
        messages.extend(tuples[1..].iter().map(|t| Bytes::from(t.clone())));
        messages.push(Bytes::from_static(COPY_TRAILER));
        let framed = |ts: &[Vec<u8>]| {
            [
                &[COPY_HEADER][..],
                &ts.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                &[COPY_TRAILER],
            ]
            .concat()
            .concat()
        };
        assert_eq!(
            raw_batches(messages.clone(), 2).await.expect("batches"),
            vec![
                framed(&tuples[..2]),
                framed(&tuples[2..4]),
                framed(&tuples[4..])
            ]
        );
        assert_eq!(
            raw_batches(messages, u64::MAX).await.expect("one batch"),
            vec![framed(&tuples)]
        );
    }

    #[tokio::test]
    async fn the_stream_is_cut_into_batches_at_tuple_bounds() {
        let all = |n: i32| (0..n).collect::<Vec<_>>();
        // Full batches, the last one full too: no empty batch after it.
        let got = batches(stream(6, false), 3).await.expect("batches");
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5]]);
        let got = batches(stream(7, false), 3).await.expect("batches");
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert_eq!(
            batches(stream(7, false), u64::MAX).await.expect("one"),
            vec![all(7)]
        );
        assert_eq!(
            batches(stream(1, false), 1).await.expect("one"),
            vec![vec![0]]
        );
        // No rows: one empty batch.
        assert_eq!(
            batches(stream(0, false), 3).await.expect("empty"),
            vec![Vec::<i32>::new()]
        );
        // A stream cut before its trailer fails, whichever batch it is in.
        for (rows, size) in [(7, 3), (6, 3), (0, 3), (5, u64::MAX)] {
            let e = batches(stream(rows, true), size).await.expect_err("cut");
            assert!(
                e.message().contains("ended before its trailer"),
                "{}",
                e.message()
            );
        }
    }
}
