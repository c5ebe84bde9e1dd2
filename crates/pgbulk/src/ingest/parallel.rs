//! One upsert on several connections. A reader thread sends each row to
//! the stream its key hashes to, so all rows of a key go to one stream, in
//! input order, and two streams never touch the same row. Each stream
//! stages and merges its share of every batch in a transaction of its own;
//! a batch commits only once every stream has merged it: the other streams
//! first, then the first stream, whose transaction stores the watermark
//! (the source's position). An error anywhere rolls back every stream that
//! has not committed. A run killed between those commits leaves part of a
//! batch visible without its watermark: the next run reads the batch again
//! and upserts it once more (its rows already in are unchanged and not
//! rewritten), which completes it.
//!
//! Only where that is safe ([`unsuited`]): an upsert into one plain table
//! whose key compares by its binary form, with no trigger, no unique or
//! exclusion index that two different keys could collide on, and no
//! foreign key to itself (a stream waiting for another's uncommitted row
//! while that one waits for it to merge would never end).

use std::hash::Hasher;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_postgres::{Client, Transaction};

use super::stage::keys_compare_by_bytes;
use super::target::{Target, keyed, read_targets};
use super::{
    Batch, BatchInfo, BatchReport, BatchWatermark, BeforeVisible, Duties, FieldRef, Mode, Options,
    Prepared, Report, Rows, TextRow, TextRows, Upsert, run, tag_session,
};
use crate::codec::{ColumnType, CopyWriter};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableName;

/// Rows sent to a stream at a time.
const CHUNK_ROWS: usize = 512;
/// Chunks waiting for a stream at most (memory stays bounded).
const QUEUED_CHUNKS: usize = 16;

/// Why an upsert of `columns` into `table` cannot run on several
/// connections, or `None` when it can (see the module documentation).
pub async fn unsuited(
    client: &Client,
    prepared: &Prepared,
    table: &TableName,
    columns: &[String],
    options: &Options,
) -> Result<Option<String>> {
    if tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::MultiThread
    {
        return Ok(Some("the runtime has one thread".into()));
    }
    if options.mode != Mode::Upsert
        || options.upsert == Upsert::Append
        || options.reject_rows
        || options.before_visible.is_some()
        || prepared.names().len() != 1
    {
        return Ok(Some("not a plain upsert into one table".into()));
    }
    let target = target(client, prepared, table, options).await?;
    if target.key.is_empty() {
        return Ok(Some("the table has no key".into()));
    }
    let projected = target.project(columns, false)?;
    if !keys_compare_by_bytes(&projected) {
        return Ok(Some(
            "equal keys may differ in form (numeric, float, char(n) or a type the server converts)"
                .into(),
        ));
    }
    let key: Vec<&str> = target
        .key
        .iter()
        .map(|&k| target.columns[k].name.as_str())
        .collect();
    let row = client
        .query_one(
            "SELECT c.relkind::text, \
               (SELECT count(*) FROM pg_catalog.pg_trigger t \
                 WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), \
               (SELECT count(*) FROM pg_catalog.pg_index i \
                 WHERE i.indrelid = c.oid AND (i.indisunique OR i.indisexclusion) \
                   AND NOT i.indkey::int2[] @> (SELECT array_agg(a.attnum) \
                     FROM pg_catalog.pg_attribute a \
                     WHERE a.attrelid = c.oid AND a.attname = ANY($2::text[]))), \
               (SELECT count(*) FROM pg_catalog.pg_constraint f \
                 WHERE f.contype = 'f' AND f.conrelid = c.oid AND f.confrelid = c.oid) \
             FROM pg_catalog.pg_class c WHERE c.oid = $1::oid",
            &[&target.oid, &key],
        )
        .await
        .map_err(|e| Error::server("reading the table's indexes and triggers", e))?;
    let (kind, triggers, other_unique, self_references): (String, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    Ok(if kind != "r" {
        Some("not a plain table".into())
    } else if triggers > 0 {
        Some("the table has triggers".into())
    } else if other_unique > 0 {
        Some("a unique or exclusion index other than the key's".into())
    } else if self_references > 0 {
        Some("a foreign key to the table itself".into())
    } else {
        None
    })
}

/// The table as the engine writes it, keyed as `options` say.
pub(super) async fn target(
    client: &Client,
    prepared: &Prepared,
    table: &TableName,
    options: &Options,
) -> Result<Target> {
    let pairs = [(table.clone(), table.clone())];
    keyed(
        read_targets(client, &pairs, prepared.session.input_style()).await?,
        options,
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Error::config(format!("no table {table}")))
}

/// Upserts `batches` (text rows for one table, see [`unsuited`]) through
/// `clients`, one stream each, into the tables `prepared` (already settled:
/// created and migrated) describes. The first client holds pgbulk's ingest
/// lock on the table for the session meanwhile, and stores the watermark
/// (under `options.stream`) with each batch once every stream merged it.
/// The clients are handed back whatever happens (but for the connection of
/// a stream whose task panicked).
pub async fn ingest_parallel<I>(
    clients: Vec<Client>,
    prepared: &Prepared,
    batches: I,
    options: &Options,
) -> (Vec<Client>, Result<Report>)
where
    I: Iterator<Item = Result<Batch>> + Send + 'static,
{
    let first = prepared.first.clone();
    let setup = async {
        for client in &clients {
            tag_session(client, prepared.session.server_version).await?;
        }
        let target = target(&clients[0], prepared, &first, options).await?;
        crate::lock::hold_tables(
            &clients[0],
            &options.lock_policy,
            std::slice::from_ref(&first),
            true,
        )
        .await?;
        Ok::<_, Error>(target)
    };
    let target = match setup.await {
        Ok(target) => target,
        Err(e) => return (clients, Err(e)),
    };
    let (clients, result) = run_streams(clients, prepared, batches, options, target).await;
    // A stream's task that panicked took its connection (and, for the
    // first, the lock) with it.
    let released = match clients.first() {
        Some(client) => {
            crate::lock::hold_tables(client, &options.lock_policy, &[first], false).await
        }
        None => Ok(()),
    };
    let result = result.and_then(|report| released.map(|()| report));
    (clients, result)
}

/// Runs the streams and the reader until the batches end or one fails.
async fn run_streams<I>(
    clients: Vec<Client>,
    prepared: &Prepared,
    batches: I,
    options: &Options,
    target: Target,
) -> (Vec<Client>, Result<Report>)
where
    I: Iterator<Item = Result<Batch>> + Send + 'static,
{
    let n = clients.len();
    let gate = Arc::new(Gate::new(n));
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<TextRow>>(n * QUEUED_CHUNKS);
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for (i, mut client) in clients.into_iter().enumerate() {
        let (tx, rx) = sync_channel::<Message>(QUEUED_CHUNKS);
        senders.push(tx);
        let feed = Feed {
            rx: Arc::new(Mutex::new(rx)),
            recycle: recycle_tx.clone(),
            gate: gate.clone(),
        };
        let options = Options {
            before_visible: Some(Arc::new(StreamHook {
                stream: i,
                gate: gate.clone(),
            })),
            on_commit: Some(on_commit(i, gate.clone(), options.on_commit.clone())),
            stream: if i == 0 { options.stream.clone() } else { None },
            create_with_first_batch: false,
            create_without_batches: false,
            // Each stream merges a share of the keys into the same table.
            rewrite_batches: false,
            ..options.clone()
        };
        let duties = Duties {
            watermark: i == 0,
            ingest_lock: false,
            share: true,
        };
        let prepared = prepared.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let mut report = Report::default();
            let batches = std::iter::from_fn(move || feed.next_batch());
            let result = run(
                &mut client,
                &prepared,
                batches,
                &options,
                duties,
                &mut report,
            )
            .await;
            if let Err(e) = &result {
                gate.fail(e.to_string());
            }
            (client, result.map(|()| report))
        }));
    }
    drop(recycle_tx);
    let reader_gate = gate.clone();
    let reader = std::thread::spawn(move || {
        let result = route(batches, &senders, &target, &recycle_rx);
        if let Err(e) = &result {
            reader_gate.fail(e.to_string());
        }
        result
    });
    let mut clients = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(n);
    let mut first_error: Option<Error> = None;
    for task in tasks {
        match task.await {
            Ok((client, result)) => {
                clients.push(client);
                match result {
                    Ok(report) => reports.push(report),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(Error::new(
                    ErrorKind::Io,
                    format!("an upsert stream failed: {e}"),
                ));
            }
        }
    }
    // The reader ends once every stream dropped its queue.
    let routed = tokio::task::spawn_blocking(move || reader.join())
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("the reader failed: {e}")))
        .and_then(|joined| joined.map_err(|_| Error::new(ErrorKind::Io, "the reader panicked"))?);
    // The reader's error (the input's) says why the streams stopped.
    if let Err(e) = routed {
        return (clients, Err(e));
    }
    if let Some(e) = first_error {
        return (clients, Err(e));
    }
    if clients.len() != n {
        return (
            clients,
            Err(Error::new(ErrorKind::Io, "an upsert stream was lost")),
        );
    }
    (clients, Ok(combine(reports)))
}

/// The streams' reports as one: the first stream's batches, each with the
/// counts of every stream.
fn combine(mut reports: Vec<Report>) -> Report {
    let mut report = reports.remove(0);
    for other in reports {
        for (mine, theirs) in report.batches.iter_mut().zip(&other.batches) {
            add_counts(mine, theirs);
        }
        for (table, counts) in &other.tables {
            report.tables.entry(table.clone()).or_default().add(counts);
        }
        for (table, n) in other.skipped {
            *report.skipped.entry(table).or_default() += n;
        }
        report.seconds = report.seconds.max(other.seconds);
    }
    report
}

/// Adds `other`'s counts (another stream's share of the same batch).
fn add_counts(batch: &mut BatchReport, other: &BatchReport) {
    for (table, counts) in &other.tables {
        batch.tables.entry(table.clone()).or_default().add(counts);
    }
    batch.skipped += other.skipped;
}

/// What the reader sends a stream.
enum Message {
    /// A batch begins (for the first stream, with its watermark).
    Begin {
        high_watermark: BatchWatermark,
        metadata: serde_json::Value,
        table: String,
        columns: Vec<String>,
    },
    /// Rows of the batch, in input order.
    Rows(Vec<TextRow>),
    /// The batch's rows are all sent; where the source then stands.
    End { resume: Option<serde_json::Value> },
}

/// Reads `batches` and sends each row to the stream of its key; every
/// stream gets every batch's beginning and end (a batch may hold no row of
/// a stream's).
fn route<I>(
    batches: I,
    senders: &[SyncSender<Message>],
    target: &Target,
    recycled: &Receiver<Vec<TextRow>>,
) -> Result<()>
where
    I: Iterator<Item = Result<Batch>>,
{
    let stopped = || Error::new(ErrorKind::Io, "an upsert stream stopped");
    let send = |i: usize, m: Message| senders[i].send(m).map_err(|_| stopped());
    let n = senders.len();
    let mut chunks: Vec<Vec<TextRow>> = (0..n).map(|_| Vec::with_capacity(CHUNK_ROWS)).collect();
    let mut spare: Vec<TextRow> = Vec::new();
    let mut scratch = CopyWriter::tuples_only();
    for batch in batches {
        let batch = batch?;
        let Rows::Text(mut source) = batch.rows else {
            return Err(Error::config("a parallel upsert reads text rows"));
        };
        let projected = target.project(source.columns(), false)?;
        let types: Vec<ColumnType> = projected.columns.iter().map(|c| c.ty.clone()).collect();
        source.bind(&types);
        let mut high_watermark = Some(batch.high_watermark);
        let mut metadata = Some(batch.metadata);
        for i in 0..n {
            send(
                i,
                Message::Begin {
                    high_watermark: high_watermark.take().unwrap_or(BatchWatermark::Value(None)),
                    metadata: metadata.take().unwrap_or_default(),
                    table: source.table().to_owned(),
                    columns: source.columns().to_vec(),
                },
            )?;
        }
        let mut row = spare.pop().unwrap_or_default();
        while source.next_row(&mut row)? {
            let s = stream_of(&row, &projected, &mut scratch, n)?;
            if spare.is_empty() {
                while let Ok(mut rows) = recycled.try_recv() {
                    spare.append(&mut rows);
                }
            }
            let next = spare.pop().unwrap_or_default();
            chunks[s].push(std::mem::replace(&mut row, next));
            if chunks[s].len() == CHUNK_ROWS {
                let full = std::mem::replace(&mut chunks[s], Vec::with_capacity(CHUNK_ROWS));
                send(s, Message::Rows(full))?;
            }
        }
        spare.push(row);
        let resume = source.resume();
        for (i, chunk) in chunks.iter_mut().enumerate() {
            if !chunk.is_empty() {
                send(i, Message::Rows(std::mem::take(chunk)))?;
            }
            send(
                i,
                Message::End {
                    resume: resume.clone(),
                },
            )?;
        }
    }
    Ok(())
}

/// The stream a row's key goes to: a hash of the key's binary form (equal
/// keys have equal forms: [`keys_compare_by_bytes`]). A key value the
/// encoder leaves to the server cannot be placed: an error, after which
/// the caller goes on with one stream.
fn stream_of(row: &TextRow, target: &Target, scratch: &mut CopyWriter, n: usize) -> Result<usize> {
    let mut hash = std::hash::DefaultHasher::new();
    for &k in &target.key {
        match row.field(k) {
            FieldRef::Encoded(_, body) => hash.write(body),
            FieldRef::Text(text) => {
                scratch.truncate(0);
                match scratch.text(text, &target.columns[k].ty) {
                    // The body, without its length (as an encoded field).
                    Ok(()) => hash.write(scratch.bytes_since(4)),
                    Err(e) if e.is_for_server() => {
                        return Err(Error::new(
                            ErrorKind::Data,
                            format!(
                                "key column \"{}\": a value the server converts ({e}): its stream cannot be chosen",
                                target.columns[k].name
                            ),
                        ));
                    }
                    // The stream refuses it, naming the row.
                    Err(_) => hash.write_u8(0xff),
                }
            }
        }
    }
    Ok((hash.finish() % n as u64) as usize)
}

/// A stream's side of its queue: its batches, then each batch's rows.
struct Feed {
    rx: Arc<Mutex<Receiver<Message>>>,
    recycle: SyncSender<Vec<TextRow>>,
    gate: Arc<Gate>,
}

impl Feed {
    /// The next batch, `None` after the last one.
    fn next_batch(&self) -> Option<Result<Batch>> {
        match receive(&self.rx) {
            Ok(Message::Begin {
                high_watermark,
                metadata,
                table,
                columns,
            }) => Some(Ok(Batch {
                high_watermark,
                metadata,
                rows: Rows::Text(Box::new(Share {
                    rx: self.rx.clone(),
                    recycle: self.recycle.clone(),
                    table,
                    columns,
                    rows: Vec::new(),
                    consumed: Vec::new(),
                    resume: None,
                })),
                resume: None,
            })),
            Ok(_) => Some(Err(Error::new(
                ErrorKind::Io,
                "an upsert stream got rows outside a batch",
            ))),
            // The reader is done: after the last batch, or it failed.
            Err(()) => self.gate.failed().then(|| Err(self.gate.error())),
        }
    }
}

/// Waits for the next message on a worker thread of the multi-threaded
/// runtime (its other tasks move on meanwhile); `Err` when the reader is
/// gone.
fn receive(rx: &Mutex<Receiver<Message>>) -> std::result::Result<Message, ()> {
    let rx = rx.lock().map_err(|_| ())?;
    match rx.try_recv() {
        Ok(m) => Ok(m),
        Err(TryRecvError::Disconnected) => Err(()),
        Err(TryRecvError::Empty) => tokio::task::block_in_place(|| rx.recv().map_err(|_| ())),
    }
}

/// A stream's share of one batch.
struct Share {
    rx: Arc<Mutex<Receiver<Message>>>,
    recycle: SyncSender<Vec<TextRow>>,
    table: String,
    columns: Vec<String>,
    /// Rows received, not read yet (read from the back).
    rows: Vec<TextRow>,
    /// Rows read (the engine's previous ones), for the reader to refill.
    consumed: Vec<TextRow>,
    resume: Option<serde_json::Value>,
}

impl TextRows for Share {
    fn table(&self) -> &str {
        &self.table
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut TextRow) -> Result<bool> {
        loop {
            if let Some(mut next) = self.rows.pop() {
                std::mem::swap(row, &mut next);
                self.consumed.push(next);
                return Ok(true);
            }
            if !self.consumed.is_empty() {
                // Best effort: a full queue drops them.
                let _ = self.recycle.try_send(std::mem::take(&mut self.consumed));
            }
            match receive(&self.rx) {
                Ok(Message::Rows(mut rows)) => {
                    rows.reverse();
                    self.rows = rows;
                }
                Ok(Message::End { resume }) => {
                    self.resume = resume;
                    return Ok(false);
                }
                Ok(Message::Begin { .. }) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        "an upsert stream got a batch inside a batch",
                    ));
                }
                Err(()) => return Err(Error::new(ErrorKind::Io, "the reader stopped")),
            }
        }
    }

    fn reject(&mut self, failure: &super::RowFailure<'_>) -> Result<()> {
        // The caller goes on with one stream, which names the row.
        Err(Error::new(
            ErrorKind::Data,
            format!(
                "a row of {} does not convert: {}",
                self.table, failure.reason
            ),
        ))
    }

    fn resume(&self) -> Option<serde_json::Value> {
        self.resume.clone()
    }
}

/// Where each stream stands: the last batch each merged and committed, and
/// whether one failed.
#[derive(Debug, Clone)]
struct Standing {
    merged: Vec<usize>,
    committed: Vec<usize>,
    error: Option<String>,
    /// The other streams' reports of the batch the first stream commits
    /// next.
    shares: Vec<BatchReport>,
}

/// The streams' meeting point before each commit.
struct Gate {
    standing: watch::Sender<Standing>,
}

impl Gate {
    fn new(n: usize) -> Self {
        Self {
            standing: watch::Sender::new(Standing {
                merged: vec![0; n],
                committed: vec![0; n],
                error: None,
                shares: Vec::new(),
            }),
        }
    }

    /// A stream or the reader failed: streams that wait roll back.
    fn fail(&self, error: String) {
        self.standing.send_modify(|s| {
            s.error.get_or_insert(error);
        });
    }

    fn failed(&self) -> bool {
        self.standing.borrow().error.is_some()
    }

    fn error(&self) -> Error {
        let why = self.standing.borrow().error.clone().unwrap_or_default();
        Error::new(
            ErrorKind::Io,
            format!("another upsert stream failed: {why}"),
        )
    }

    /// Waits until `ready` holds; an error when a stream failed first.
    async fn wait(&self, ready: impl Fn(&Standing) -> bool) -> Result<()> {
        let mut rx = self.standing.subscribe();
        let standing = rx
            .wait_for(|s| ready(s) || s.error.is_some())
            .await
            .map_err(|_| Error::new(ErrorKind::Io, "the upsert streams' gate closed"))?;
        if ready(&standing) {
            Ok(())
        } else {
            drop(standing);
            Err(self.error())
        }
    }
}

/// Before a stream's batch commits: wait until every stream has merged
/// it; the first stream (which stores the watermark) also until the others
/// have committed it.
struct StreamHook {
    stream: usize,
    gate: Arc<Gate>,
}

impl BeforeVisible for StreamHook {
    fn call<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        batch: &'a BatchInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let (i, b) = (self.stream, batch.number);
            self.gate.standing.send_modify(|s| s.merged[i] = b);
            self.gate.wait(|s| s.merged.iter().all(|&m| m >= b)).await?;
            if i == 0 {
                self.gate
                    .wait(|s| s.committed[1..].iter().all(|&c| c >= b))
                    .await?;
            }
            Ok(())
        })
    }
}

/// After a stream's batch commits: the others note it (with their counts);
/// the first stream's commit is the batch's, reported with every stream's
/// counts to `then`.
fn on_commit(stream: usize, gate: Arc<Gate>, then: Option<super::OnCommit>) -> super::OnCommit {
    Arc::new(move |report: &BatchReport| {
        if stream == 0 {
            let mut whole = report.clone();
            gate.standing.send_modify(|s| {
                for share in s.shares.drain(..) {
                    add_counts(&mut whole, &share);
                }
                s.committed[0] = report.number;
            });
            for (table, c) in &whole.tables {
                tracing::info!(
                    event = "batch_committed",
                    table = %table,
                    batch = whole.number,
                    inserted = c.inserted,
                    updated = c.updated,
                    unchanged = c.unchanged,
                    repeated = c.repeated,
                    "batch {} committed into {table}",
                    whole.number
                );
            }
            if let Some(then) = &then {
                then(&whole);
            }
        } else {
            gate.standing.send_modify(|s| {
                s.shares.push(report.clone());
                s.committed[stream] = report.number;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;
    use crate::codec::TypeKind;

    fn column(name: &str, kind: TypeKind, oid: u32) -> Column {
        Column {
            name: name.to_owned(),
            ty: crate::codec::tests::ty(kind, oid, name),
            not_null: false,
            default: None,
            generated: false,
            always_identity: false,
        }
    }

    fn target(key: Column) -> Target {
        Target {
            name: TableName::new("public", "t"),
            write: TableName::new("public", "t"),
            oid: 0,
            columns: vec![key, column("v", TypeKind::Text, 25)],
            key: vec![0],
            key_is_primary: true,
            key_named: false,
            partitioned: false,
        }
    }

    fn row(fields: &[&str]) -> TextRow {
        let mut row = TextRow::default();
        for f in fields {
            row.push(Some(f));
        }
        row
    }

    fn stream(target: &Target, key: &str, n: usize) -> Result<usize> {
        stream_of(&row(&[key, "v"]), target, &mut CopyWriter::tuples_only(), n)
    }

    #[test]
    fn equal_keys_written_differently_go_to_one_stream() {
        let ints = target(column("id", TypeKind::Int4, 23));
        let uuids = target(column("id", TypeKind::Uuid, 2950));
        for n in 2..6 {
            let five = stream(&ints, "5", n).expect("5");
            for same in ["+5", " 5", "005", "5 "] {
                assert_eq!(stream(&ints, same, n).expect(same), five, "{same}");
            }
            let lower = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
            let at = stream(&uuids, lower, n).expect("uuid");
            for same in [
                "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            ] {
                assert_eq!(stream(&uuids, same, n).expect(same), at, "{same}");
            }
        }
        // Different keys spread over the streams.
        let used: std::collections::BTreeSet<usize> = (0..64)
            .map(|i| stream(&ints, &i.to_string(), 4).expect("key"))
            .collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn a_key_only_the_server_reads_has_no_stream() {
        let dates = target(column("day", TypeKind::Date, 1082));
        assert!(stream(&dates, "1999-01-08", 2).is_ok());
        let e = stream(&dates, "01/08/1999", 2).expect_err("DateStyle decides");
        assert!(e.to_string().contains("\"day\""), "{e}");
    }

    /// Rows of one batch for [`route`].
    struct Listed {
        rows: std::vec::IntoIter<TextRow>,
        columns: Vec<String>,
    }

    impl TextRows for Listed {
        fn table(&self) -> &str {
            "t"
        }

        fn columns(&self) -> &[String] {
            &self.columns
        }

        fn next_row(&mut self, row: &mut TextRow) -> Result<bool> {
            Ok(self.rows.next().map(|r| *row = r).is_some())
        }

        fn reject(&mut self, _: &super::super::RowFailure<'_>) -> Result<()> {
            Ok(())
        }

        fn resume(&self) -> Option<serde_json::Value> {
            Some(serde_json::json!(self.rows.len()))
        }
    }

    #[test]
    fn every_stream_gets_every_batch_and_each_key_in_order() {
        let t = target(column("id", TypeKind::Int4, 23));
        // Two batches; keys 0..40 three times each, interleaved.
        let batch = |from: usize| {
            let rows: Vec<TextRow> = (from..from + 60)
                .map(|i| row(&[&(i % 40).to_string(), &i.to_string()]))
                .collect();
            Ok(Batch {
                high_watermark: BatchWatermark::Value(Some(serde_json::json!(from))),
                metadata: serde_json::json!({ "from": from }),
                rows: Rows::Text(Box::new(Listed {
                    rows: rows.into_iter(),
                    columns: vec!["id".into(), "v".into()],
                })),
                resume: None,
            })
        };
        let n = 3;
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| sync_channel::<Message>(1000)).unzip();
        let (_recycle_tx, recycle_rx) = sync_channel(10);
        route(
            vec![batch(0), batch(60)].into_iter(),
            &senders,
            &t,
            &recycle_rx,
        )
        .expect("routed");
        drop(senders);
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (s, rx) in receivers.iter().enumerate() {
            let mut begins = 0;
            let mut ends = 0;
            for m in rx.try_iter() {
                match m {
                    Message::Begin {
                        high_watermark,
                        metadata,
                        ..
                    } => {
                        begins += 1;
                        let BatchWatermark::Value(hw) = high_watermark else {
                            panic!("a computed watermark");
                        };
                        // Only the first stream stores the watermark.
                        assert_eq!(hw.is_some(), s == 0);
                        assert_eq!(metadata.is_null(), s != 0);
                    }
                    Message::Rows(rows) => {
                        assert_eq!(begins, ends + 1, "rows inside a batch");
                        for r in &rows {
                            let FieldRef::Text(Some(key)) = r.field(0) else {
                                panic!("a key");
                            };
                            let FieldRef::Text(Some(v)) = r.field(1) else {
                                panic!("a value");
                            };
                            seen.push((key.to_owned(), v.parse().expect("v")));
                            assert_eq!(stream(&t, key, n).expect("key"), s);
                        }
                    }
                    Message::End { resume } => {
                        ends += 1;
                        assert_eq!(resume, Some(serde_json::json!(0)));
                    }
                }
            }
            assert_eq!((begins, ends), (2, 2), "stream {s}");
        }
        assert_eq!(seen.len(), 120, "every row once");
        for key in 0..40 {
            let order: Vec<usize> = seen
                .iter()
                .filter(|(k, _)| *k == key.to_string())
                .map(|(_, v)| *v)
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{key}: {order:?}");
            assert_eq!(order.len(), 3);
        }
    }
}
