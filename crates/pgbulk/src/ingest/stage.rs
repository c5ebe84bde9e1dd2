//! Staging a batch: rows encoded to binary COPY and streamed in chunks into
//! staging tables (or straight into the target).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use tokio_postgres::Transaction;

use super::key_hashes::KeyHashes;
use super::merge::column_list;
use super::target::{Target, declared_index};
use super::{FieldRef, Row, RowFailure, Rows, TextRow, TextRows, data_error};
use std::borrow::Cow;

use crate::codec::{ColumnType, CopyWriter, TypeKind, Value, shorten};
use crate::copy::CopyIn;
use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// Bytes of encoded rows sent to the server at a time.
pub(super) const CHUNK: usize = 1 << 20;

/// Buffers of sent chunks, back from the connection once it has written
/// them: each chunk is handed over without a copy, and the next one fills
/// memory already touched instead of a fresh allocation.
#[derive(Clone, Default)]
pub(super) struct ChunkPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers a pool keeps (more in flight are freed when they come back).
const POOLED_CHUNKS: usize = 4;

impl ChunkPool {
    /// An empty buffer for the next chunk.
    fn spare(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK + CHUNK / 8))
    }

    /// `chunk` as bytes to send; its buffer returns to the pool when sent.
    fn wrap(&self, chunk: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            chunk,
            pool: self.clone(),
        })
    }
}

/// A chunk on its way to the server (see [`ChunkPool`]).
struct Pooled {
    chunk: Vec<u8>,
    pool: ChunkPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.chunk
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.0.lock() {
            if pool.len() < POOLED_CHUNKS {
                let mut chunk = std::mem::take(&mut self.chunk);
                chunk.clear();
                pool.push(chunk);
            }
        }
    }
}

/// A table's rows in the batch being staged.
pub(super) struct Pending {
    /// Encoded tuples not sent yet.
    pub(super) writer: CopyWriter,
    /// Buffers for the writer once its chunk is sent.
    pub(super) chunks: ChunkPool,
    /// Where its COPY goes (the target, or a staging table), once
    /// decided.
    pub(super) into: Option<String>,
    /// The stage is an UNLOGGED table (see [`promote`]): dropped by the
    /// batch before it commits, as only TEMP tables drop themselves.
    pub(super) unlogged: bool,
    /// Whether [`promote`] has decided this stage.
    promoted: bool,
    /// Whether it is copied straight into the target.
    pub(super) direct: bool,
    /// The target was created in this transaction: rows copied straight
    /// into it are written frozen (no hint-bit writes on the first read,
    /// nothing for VACUUM to freeze later).
    pub(super) freeze: bool,
    pub(super) rows: u64,
    pub(super) copied: u64,
    /// Hashes of the keys seen, checked for repeats when the COPY ends;
    /// `None` when nothing hashes the keys (the server looks for repeats,
    /// or, for rows copied straight in, building the key finds them).
    pub(super) keys: Option<KeyHashes>,
    pub(super) duplicates: bool,
    /// Per column: whether the stage has a text shadow for it, holding the
    /// values the encoder left to the server (see [`Layout`]).
    pub(super) shadows: Vec<bool>,
    /// Rows copied straight into the target before a value had to be left
    /// to the server (the rest of the batch is staged).
    pub(super) copied_direct: u64,
    /// Every row keeps its location (rows the server refuses are isolated
    /// and rejected, not only values it casts).
    pub(super) locate_all: bool,
    /// For a table with a key copied straight in whose rows something
    /// besides its primary key checks (a constraint, a trigger: see
    /// [`super::indexes::Deferred::keys_free`]): the key hashes so far. The
    /// first repeated one (or one too many to track) ends the direct COPY;
    /// the rest of the batch is staged and merged (its rows update the
    /// ones copied in, as the later row of a key wins), so only the first
    /// and the last row of a key are checked, as when the table is not
    /// new.
    seen: Option<std::collections::HashSet<u64>>,
    /// The layout's fields per tuple and whether rows carry their location:
    /// kept, not recomputed for every row ([`Pending::relayout`]).
    tuple_fields: u16,
    located: bool,
}

impl Pending {
    /// Whether rows were copied straight into `target` by its key: when
    /// building the key finds a repeat, it is theirs to remove
    /// ([`super::indexes::remove_repeats`]; none with [`Pending::seen`]).
    pub(super) fn keyed_direct(&self, target: &Target) -> bool {
        !target.key.is_empty() && (self.direct || self.copied_direct > 0)
    }

    /// Recomputes what depends on the layout (after a shadow was added).
    fn relayout(&mut self, target: &Target) {
        let (fields, located) = {
            let layout = self.layout(target);
            (layout.fields(), layout.any())
        };
        self.tuple_fields = fields;
        self.located = located;
    }

    /// The layout of this table's stage.
    pub(super) fn layout<'a>(&'a self, target: &'a Target) -> Layout<'a> {
        Layout {
            target,
            shadows: &self.shadows,
            locate_all: self.locate_all,
            sorted: false,
        }
    }
}

/// The stage's layout beyond the target's columns: a text shadow per column
/// whose values the encoder could not convert exactly (`01/08/1999` for a
/// date), cast by the server when merging; and, with any shadow, where each
/// row with such a value came from, so a value the server rejects names
/// its row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout<'a> {
    pub(super) target: &'a Target,
    pub(super) shadows: &'a [bool],
    /// Every row has its location (not only those with server-cast values).
    pub(super) locate_all: bool,
    /// Merge the rows in key order: the table's new row versions then fill
    /// its key's index from left to right instead of all over it (2 M
    /// changed rows of a three-column key in arbitrary order: 14 s instead
    /// of 20.6 s). For stages in no particular order.
    pub(super) sorted: bool,
}

/// The column of the stage holding the input's location of a row with
/// shadowed values.
pub(super) const WHERE_COLUMN: &str = "pgbulk#where";
/// The column holding such a row's raw input (for reject files).
pub(super) const RAW_COLUMN: &str = "pgbulk#raw";

impl Layout<'_> {
    /// The shadow column of column `c`.
    pub(super) fn shadow_name(c: usize) -> String {
        format!("pgbulk#text{c}")
    }

    /// Whether some values are cast by the server when merging: shadowed
    /// ones, or a column that travels as text.
    pub(super) fn any(&self) -> bool {
        self.shadows.iter().any(|s| *s) || self.target.needs_cast() || self.locate_all
    }

    /// Whether column `c`'s values may be cast by the server: shadowed, or
    /// travelling as text. Its [`Layout::server_text`] holds them.
    pub(super) fn cast_by_server(&self, c: usize) -> bool {
        self.shadows.get(c).copied().unwrap_or(false) || self.target.columns[c].ty.needs_cast()
    }

    /// The staged text the server casts for column `c`.
    pub(super) fn server_text(&self, c: usize) -> String {
        if self.shadows.get(c).copied().unwrap_or(false) {
            quote_ident(&Self::shadow_name(c))
        } else {
            quote_ident(&self.target.columns[c].name)
        }
    }

    /// Column `c` of the staged row, typed: its shadow cast by the server
    /// when it holds the value, the column cast when it travels as text.
    /// Casts go to the type without its modifier; the assignment to the
    /// column applies the modifier as COPY would.
    pub(super) fn value(&self, c: usize, prefix: &str) -> String {
        let column = &self.target.columns[c];
        let col = format!("{prefix}{}", quote_ident(&column.name));
        let typed = if column.ty.needs_cast() {
            format!("{col}::{}", column.ty.cast_name)
        } else {
            col
        };
        if self.shadows.get(c).copied().unwrap_or(false) {
            let shadow = format!("{prefix}{}", quote_ident(&Self::shadow_name(c)));
            format!(
                "(CASE WHEN {shadow} IS NULL THEN {typed} ELSE {shadow}::{} END)",
                column.ty.cast_name
            )
        } else {
            typed
        }
    }

    /// Every column's [`Layout::value`], comma-separated.
    pub(super) fn values(&self, prefix: &str) -> String {
        (0..self.target.columns.len())
            .map(|c| self.value(c, prefix))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key columns' values, comma-separated.
    pub(super) fn key_values(&self, prefix: &str) -> String {
        self.target
            .key
            .iter()
            .map(|&k| self.value(k, prefix))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The stage's columns as COPY fills them: the target's, the shadows,
    /// and with any shadow the row's location and raw input.
    pub(super) fn copy_columns(&self) -> String {
        let mut names: Vec<String> = self
            .target
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        names.extend(
            self.extra_columns()
                .into_iter()
                .map(|(n, _)| quote_ident(&n)),
        );
        names.join(", ")
    }

    /// The columns beyond the target's, with their types.
    pub(super) fn extra_columns(&self) -> Vec<(String, &'static str)> {
        let mut extra: Vec<(String, &'static str)> = self
            .shadows
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(c, _)| (Self::shadow_name(c), "text"))
            .collect();
        if self.any() {
            extra.push((WHERE_COLUMN.to_owned(), "text"));
            extra.push((RAW_COLUMN.to_owned(), "bytea"));
        }
        extra
    }

    /// Fields in a staged tuple.
    fn fields(&self) -> u16 {
        let shadows = self.shadows.iter().filter(|s| **s).count();
        let extra = if self.any() { shadows + 2 } else { 0 };
        u16::try_from(self.target.columns.len() + extra).unwrap_or(u16::MAX)
    }
}

/// How encoding one row went.
pub(super) enum Encoded<'a> {
    /// The row is in the buffer.
    Row,
    /// A value does not fit its column: the row is left out.
    Failed(RowFailure<'a>),
    /// Values of these columns are the server's to convert and the stage
    /// has no shadow for them yet: nothing was written.
    NeedsShadows(Vec<usize>),
}

/// Keys a table copied straight in is checked against (a hash set of
/// about 18 MB at most; see [`Pending::seen`]); its rows after these are
/// staged.
const MAX_DIRECT_KEYS: usize = 1 << 20;

/// The COPY in progress on the batch's connection.
pub(super) struct OpenCopy {
    pub(super) table: usize,
    pub(super) copy: CopyIn,
}

/// Streams the batch's rows into staging: each table's rows are encoded
/// into its own buffer and sent in chunks of [`CHUNK`] bytes, keeping one
/// COPY open while rows of the same table follow, so the server loads while
/// the client encodes and memory stays bounded whatever the batch's size.
/// Rows for undeclared tables are counted as skipped. Without
/// `direct_allowed` (a batch that deletes first), keyless tables are staged
/// too instead of copied straight into the table. With `keyed_direct`, a
/// table in `fresh` keyed by its primary key is copied straight in too:
/// one in `keys_free` whole, its keys not hashed (building the key finds
/// repeats, to be removed: [`Pending::keyed_direct`]), another until a
/// key repeats ([`Pending::seen`]).
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
    locate_all: bool,
    fresh: &[u32],
    keyed_direct: bool,
    keys_free: &[u32],
) -> Result<(Vec<Option<Pending>>, Option<Box<dyn TextRows>>)> {
    let mut pending: Vec<Option<Pending>> = targets.iter().map(|_| None).collect();
    let mut open: Option<OpenCopy> = None;
    let hasher = std::collections::hash_map::RandomState::new();
    let new_pending = |target: &Target| {
        let fresh = fresh.contains(&target.oid);
        let keyed = !target.key.is_empty();
        let direct = direct_allowed
            && !locate_all
            && !target.needs_cast()
            && (!keyed
                || (keyed_direct
                    && fresh
                    && target.key_is_primary
                    && (keys_free.contains(&target.oid) || keys_compare_by_bytes(target))));
        let checked = direct && keyed && !keys_free.contains(&target.oid);
        let unchecked = direct && keyed && !checked;
        Pending {
            writer: CopyWriter::tuples_only(),
            chunks: ChunkPool::default(),
            into: None,
            unlogged: false,
            promoted: false,
            direct,
            freeze: fresh,
            rows: 0,
            copied: 0,
            keys: (!unchecked).then(KeyHashes::default),
            // Keys the client cannot compare as the server does: the
            // server looks for repeats.
            duplicates: keyed && !keys_compare_by_bytes(target),
            shadows: vec![false; target.columns.len()],
            copied_direct: 0,
            locate_all,
            seen: checked.then(std::collections::HashSet::new),
            tuple_fields: 0,
            located: false,
        }
    };
    let new_pending = |target: &Target| {
        let mut p = new_pending(target);
        p.relayout(target);
        p
    };
    let mut text_source = None;
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
                if let Err(columns) = encode_row(p, target, &row, i + 1, number, &hasher)? {
                    widen(tx, targets, &mut pending, &mut open, t, &columns).await?;
                    let p = pending[t].get_or_insert_with(|| new_pending(target));
                    if let Err(columns) = encode_row(p, target, &row, i + 1, number, &hasher)? {
                        return Err(Error::new(
                            crate::ErrorKind::Io,
                            format!("columns {columns:?} still have no shadow"),
                        ));
                    }
                }
                let p = pending[t].get_or_insert_with(|| new_pending(target));
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
        }
        Rows::Text(mut source) => {
            let t = declared_index(lookup, source.table())?;
            let target = &targets[t];
            let types: Vec<_> = target.columns.iter().map(|c| c.ty.clone()).collect();
            source.bind(&types);
            let mut row = TextRow::default();
            // The source encodes rows itself while nothing is needed per
            // row: no key to hash, no value for the server to convert.
            let direct = target.key.is_empty() && !target.needs_cast();
            loop {
                if direct {
                    let p = pending[t].get_or_insert_with(|| new_pending(target));
                    if !p.located && usize::from(p.tuple_fields) == target.columns.len() {
                        p.rows +=
                            source.encode_rows(&target.columns, p.writer.buffer_mut(), CHUNK)?;
                        if p.writer.len() >= CHUNK {
                            flush(tx, targets, &mut pending, &mut open, t, false).await?;
                            continue;
                        }
                    }
                }
                if !source.next_row(&mut row)? {
                    break;
                }
                let mut widened = false;
                loop {
                    let p = pending[t].get_or_insert_with(|| new_pending(target));
                    match encode_text_row(p, target, &row, &hasher, &*source) {
                        Encoded::Row => break,
                        Encoded::Failed(failure) => {
                            source.reject(&failure)?;
                            break;
                        }
                        Encoded::NeedsShadows(columns) if !widened => {
                            widen(tx, targets, &mut pending, &mut open, t, &columns).await?;
                            widened = true;
                        }
                        Encoded::NeedsShadows(columns) => {
                            return Err(Error::new(
                                crate::ErrorKind::Io,
                                format!("columns {columns:?} still have no shadow"),
                            ));
                        }
                    }
                }
                let p = pending[t].get_or_insert_with(|| new_pending(target));
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
            *resume = source.resume();
            text_source = Some(source);
        }
        Rows::Binary(mut source) => {
            let t = declared_index(lookup, source.table())?;
            let target = &targets[t];
            let mut p = new_pending(target);
            if p.layout(target).any() {
                return Err(Error::new(
                    crate::ErrorKind::Io,
                    format!(
                        "binary COPY rows for {}: a column's type is one the server casts",
                        target.name
                    ),
                ));
            }
            // Nothing here hashes the keys: the server finds repeated keys
            // unless the source's keys are unique, and a table whose rows a
            // repeated key would fail is staged.
            p.keys = None;
            p.duplicates = !target.key.is_empty() && !source.keys_unique();
            if p.seen.take().is_some() {
                p.direct = false;
            }
            pending[t] = Some(p);
            let fields = u16::try_from(target.columns.len()).unwrap_or(u16::MAX);
            let mut tuples = crate::codec::tuples::Tuples::new(fields);
            let malformed = |why: String| {
                Error::new(
                    crate::ErrorKind::Data,
                    format!("the rows for {}: {why}", target.name),
                )
                .in_table(&target.name)
            };
            while let Some(chunks) = source.next_chunks().await? {
                let Some(p) = pending[t].as_mut() else {
                    return Err(Error::new(
                        crate::ErrorKind::Io,
                        format!("binary COPY rows for {}: no stage", target.name),
                    ));
                };
                for chunk in chunks {
                    let rows = tuples
                        .feed(&chunk, p.writer.buffer_mut())
                        .map_err(malformed)?;
                    p.rows += rows;
                }
                if p.writer.len() >= CHUNK {
                    flush(tx, targets, &mut pending, &mut open, t, false).await?;
                }
            }
            tuples.finish().map_err(malformed)?;
        }
    }
    for t in 0..targets.len() {
        if let Some(p) = pending[t].as_mut() {
            if let Some(keys) = p.keys.take() {
                p.duplicates |= keys.maybe_repeated();
            }
            flush(tx, targets, &mut pending, &mut open, t, true).await?;
        }
    }
    if let Some(copy) = open.take() {
        let copied = finish_copy(copy.copy, &targets[copy.table]).await?;
        if let Some(p) = pending[copy.table].as_mut() {
            p.copied += copied;
        }
    }
    Ok((pending, text_source))
}

/// Whether two keys of `target` are equal exactly when their binary forms
/// are (so a repeat the server would see is one the client's key hashes
/// see): not for
/// `numeric` (`1.0` = `1.00`), floats (`-0` = `0`), `char(n)` (trailing
/// spaces) or types the server converts. Text is compared by bytes as the
/// deterministic collations (all but custom ICU ones) do.
pub(super) fn keys_compare_by_bytes(target: &Target) -> bool {
    use crate::codec::TypeKind;
    target.key.iter().all(|&k| {
        let ty = &target.columns[k].ty;
        match ty.kind {
            TypeKind::Text => ty.oid != 1042,
            TypeKind::Bool
            | TypeKind::Int2
            | TypeKind::Int4
            | TypeKind::Int8
            | TypeKind::Date
            | TypeKind::Timestamp
            | TypeKind::TimestampTz(_)
            | TypeKind::Uuid
            | TypeKind::Bytea => true,
            _ => false,
        }
    })
}

/// Gives table `t`'s stage text shadows for `columns` (and the location
/// columns with its first shadow): the rows buffered so far are sent in
/// the old layout and its COPY ends; a table copied straight into its
/// target is staged from here on.
async fn widen(
    tx: &Transaction<'_>,
    targets: &[Target],
    pending: &mut [Option<Pending>],
    open: &mut Option<OpenCopy>,
    t: usize,
    columns: &[usize],
) -> Result<()> {
    let target = &targets[t];
    let needs_flush = pending[t].as_ref().is_some_and(|p| {
        !p.writer.is_empty_buffer() || open.as_ref().is_some_and(|o| o.table == t)
    });
    if needs_flush {
        flush(tx, targets, pending, open, t, true).await?;
    }
    let Some(p) = pending[t].as_mut() else {
        return Ok(());
    };
    if p.direct {
        // Rows so far went straight in; the rest needs the server's casts
        // or repeats a key: it is staged, its keys tracked anew.
        p.direct = false;
        p.copied_direct = p.copied;
        p.copied = 0;
        p.into = None;
        p.seen = None;
        if !target.key.is_empty() {
            p.keys = Some(KeyHashes::default());
        }
    }
    let had_any = p.layout(target).any();
    let mut added = Vec::new();
    for &c in columns {
        if !p.shadows[c] {
            p.shadows[c] = true;
            added.push(c);
        }
    }
    p.relayout(target);
    // A key left to the server cannot be compared by its hash: let the
    // server find repeats.
    if columns.iter().any(|c| target.key.contains(c)) {
        p.duplicates = true;
    }
    if let Some(stage) = p.into.clone() {
        let mut alter: Vec<String> = added
            .iter()
            .map(|c| format!("ADD COLUMN {} text", quote_ident(&Layout::shadow_name(*c))))
            .collect();
        if !had_any {
            alter.push(format!("ADD COLUMN {} text", quote_ident(WHERE_COLUMN)));
            alter.push(format!("ADD COLUMN {} bytea", quote_ident(RAW_COLUMN)));
        }
        if !alter.is_empty() {
            tx.batch_execute(&format!("ALTER TABLE {stage} {}", alter.join(", ")))
                .await
                .map_err(|e| {
                    Error::in_context(
                        Error::server("widening the staging table", e),
                        &target.name.to_string(),
                    )
                    .in_table(&target.name)
                })?;
        }
    }
    Ok(())
}

pub(super) fn column_names(target: &Target) -> String {
    target
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One field of a row to encode: text read from an input (`None`: NULL),
/// or a value given by the caller.
#[derive(Clone, Copy)]
enum Field<'a> {
    Text(Option<&'a str>),
    Value(&'a Value),
    /// A body already in the binary form of the type with this oid.
    Encoded(u32, &'a [u8]),
}

/// How encoding a row's fields went (see [`encode_fields`]).
enum Fields {
    Row,
    NeedsShadows(Vec<usize>),
    /// Field `field` does not fit its column.
    Failed {
        field: usize,
        reason: String,
    },
}

/// Encodes one row (`field(c)` is column `c`'s field) into its table's
/// buffer, noting its key; on failure the buffer is left as it was. Values
/// the encoder leaves to the server go to their shadows, and then the row's
/// location and raw input (from `locate`) with them; when a shadow they
/// need is missing, nothing is written and the columns are named.
fn encode_fields<'a>(
    p: &mut Pending,
    target: &Target,
    field: impl Fn(usize) -> Field<'a>,
    hasher: &std::collections::hash_map::RandomState,
    locate: impl FnOnce() -> (String, Option<Vec<u8>>),
) -> Fields {
    let mark = p.writer.len();
    p.writer.start_tuple(p.tuple_fields);
    // Keys copied straight in unchecked are not hashed.
    let mut key_hash = (!target.key.is_empty() && (p.keys.is_some() || p.seen.is_some()))
        .then(|| hasher.build_hasher());
    let mut deferred: Vec<(usize, Cow<'a, str>)> = Vec::new();
    let mut missing: Vec<usize> = Vec::new();
    for (c, column) in target.columns.iter().enumerate() {
        let f = field(c);
        let before = p.writer.len();
        let null = matches!(f, Field::Text(None) | Field::Value(Value::Null));
        let result = if null && column.not_null {
            Err(None)
        } else {
            match f {
                Field::Text(text) => p.writer.text(text, &column.ty),
                Field::Value(value) => p.writer.value(value, &column.ty),
                Field::Encoded(oid, body) if oid == column.ty.oid && !column.ty.needs_cast() => {
                    p.writer.encoded(body);
                    Ok(())
                }
                Field::Encoded(oid, _) => Err(crate::codec::EncodeError::new(format!(
                    "a value encoded for type oid {oid} does not fit a column of type {}",
                    column.ty.name
                ))),
            }
            .map_err(Some)
        };
        let failure = match result {
            Ok(()) => None,
            Err(Some(e)) if e.is_for_server() => {
                let text: Option<Cow<'a, str>> = match f {
                    Field::Text(Some(t)) => Some(Cow::Borrowed(t)),
                    Field::Value(Value::Text(t)) => Some(Cow::Borrowed(t.as_str())),
                    Field::Value(Value::Int(i)) => Some(Cow::Owned(i.to_string())),
                    Field::Value(Value::Float(f)) => Some(Cow::Owned(crate::codec::float_text(*f))),
                    _ => None,
                };
                match text {
                    Some(text) => {
                        if !p.shadows[c] {
                            missing.push(c);
                        }
                        deferred.push((c, text));
                        p.writer.text(None, &column.ty).ok();
                        None
                    }
                    None => Some(e.to_string()),
                }
            }
            Err(Some(e)) => Some(e.to_string()),
            Err(None) => Some("NULL in a NOT NULL column".to_owned()),
        };
        if let Some(reason) = failure {
            p.writer.truncate(mark);
            return Fields::Failed { field: c, reason };
        }
        if let Some(h) = key_hash.as_mut() {
            if target.key.contains(&c) {
                h.write(p.writer.bytes_since(before));
            }
        }
    }
    if !missing.is_empty() {
        p.writer.truncate(mark);
        return Fields::NeedsShadows(missing);
    }
    // Beyond the target's columns only when the stage has more.
    if p.located {
        let deferred: Vec<(usize, &str)> = deferred.iter().map(|(c, t)| (*c, t.as_ref())).collect();
        if deferred.is_empty() && !target.needs_cast() && !p.locate_all {
            write_shadows(p, &deferred, None);
        } else {
            let (location, raw) = locate();
            write_shadows(p, &deferred, Some((&location, raw.as_deref())));
        }
    }
    let key_hash = key_hash.map(|h| h.finish());
    if let (Some(seen), Some(h)) = (p.seen.as_mut(), key_hash) {
        if seen.len() < MAX_DIRECT_KEYS && seen.insert(h) {
            p.rows += 1;
            return Fields::Row;
        }
        // A repeated key: this row and the rest are staged (see
        // [`Pending::seen`]).
        p.writer.truncate(mark);
        return Fields::NeedsShadows(Vec::new());
    }
    track_key(p, key_hash);
    Fields::Row
}

/// Encodes one row of text fields (already projected to `target`'s
/// columns) into its table's buffer; on failure the buffer is left as it
/// was. Values the encoder leaves to the server go to their shadows, with
/// the row's location from `source`.
pub(super) fn encode_text_row<'a>(
    p: &mut Pending,
    target: &'a Target,
    row: &'a TextRow,
    hasher: &std::collections::hash_map::RandomState,
    source: &dyn TextRows,
) -> Encoded<'a> {
    let encoded = encode_fields(
        p,
        target,
        |c| match row.field(c) {
            FieldRef::Text(text) => Field::Text(text),
            FieldRef::Encoded(oid, body) => Field::Encoded(oid, body),
        },
        hasher,
        || (source.location(), source.raw()),
    );
    match encoded {
        Fields::Row => Encoded::Row,
        Fields::NeedsShadows(columns) => Encoded::NeedsShadows(columns),
        Fields::Failed { field, reason } => Encoded::Failed(RowFailure {
            field,
            column: &target.columns[field].name,
            value: row.get(field),
            reason,
        }),
    }
}

/// Appends the shadow fields of a tuple (the deferred values, NULL for the
/// other shadowed columns) and, when the server casts any value of the
/// stage, the row's location and raw input (`located`: given for a row
/// with a value the server casts).
fn write_shadows(
    p: &mut Pending,
    deferred: &[(usize, &str)],
    located: Option<(&str, Option<&[u8]>)>,
) {
    if !p.located {
        return;
    }
    let text = ColumnType {
        oid: 25,
        kind: TypeKind::Text,
        name: "text".to_owned(),
        cast_name: String::new(),
        max_chars: None,
        precision_scale: None,
        labels: None,
        base_name: None,
        charset: None,
    };
    let bytea = ColumnType {
        oid: 17,
        kind: TypeKind::Bytea,
        name: "bytea".to_owned(),
        cast_name: String::new(),
        max_chars: None,
        precision_scale: None,
        labels: None,
        base_name: None,
        charset: None,
    };
    for c in (0..p.shadows.len()).filter(|c| p.shadows[*c]) {
        let value = deferred.iter().find(|(d, _)| *d == c).map(|(_, v)| *v);
        // Text fields only fail on NUL, which the encoder refused already.
        p.writer.text(value, &text).ok();
    }
    if let Some((location, raw)) = located {
        p.writer.text(Some(location), &text).ok();
        match raw {
            Some(raw) => {
                p.writer.value(&Value::Bytes(raw.to_vec()), &bytea).ok();
            }
            None => {
                p.writer.text(None, &bytea).ok();
            }
        }
    } else {
        p.writer.text(None, &text).ok();
        p.writer.text(None, &text).ok();
    }
}

/// Notes a row's key hash (for the repeated-key check) and counts the row.
pub(super) fn track_key(p: &mut Pending, key_hash: Option<u64>) {
    if let Some(h) = key_hash {
        match p.keys.as_mut() {
            Some(keys) => keys.push(h),
            None => p.duplicates = true,
        }
    }
    p.rows += 1;
}

/// Encodes one row into its table's buffer, noting repeated keys. `Ok(Err)`
/// names the columns whose values are the server's to convert and that
/// have no shadow yet (nothing was written).
pub(super) fn encode_row(
    p: &mut Pending,
    target: &Target,
    row: &Row,
    row_number: usize,
    number: usize,
    hasher: &std::collections::hash_map::RandomState,
) -> Result<std::result::Result<(), Vec<usize>>> {
    let encoded = encode_fields(
        p,
        target,
        |c| Field::Value(&row.values[c]),
        hasher,
        || (format!("row {row_number}"), None),
    );
    match encoded {
        Fields::Row => Ok(Ok(())),
        Fields::NeedsShadows(columns) => Ok(Err(columns)),
        Fields::Failed { field, reason } => {
            let column = &target.columns[field];
            let value = &row.values[field];
            let (text, why) = match value {
                Value::Null => (None, reason),
                Value::Text(t) => (
                    Some(t.clone()),
                    format!("value \"{}\": {reason}", shorten(t)),
                ),
                other => (Some(format!("{other:?}")), reason),
            };
            Err(data_error(
                number,
                &target.name,
                row_number,
                format!("column {}: {why}", column.name),
            )
            .for_column(&column.name)
            .with_value(text.as_deref()))
        }
    }
}

/// A writer buffer larger than this (grown by a huge field; chunks are
/// sent at about 1 MiB) is sent as it is rather than copied and kept.
const OVERSIZED_BUFFER: usize = 8 << 20;

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
            let copied = finish_copy(copy.copy, &targets[copy.table]).await?;
            if let Some(p) = pending[copy.table].as_mut() {
                p.copied += copied;
            }
        }
    }
    let target = &targets[t];
    let Some(p) = pending[t].as_mut() else {
        return Ok(());
    };
    if !p.direct && !p.promoted && p.rows >= PROMOTE_ROWS && p.into.is_some() {
        promote(tx, target, p, open).await?;
    }
    if open.is_none() {
        let into = match &p.into {
            Some(into) => into.clone(),
            None => {
                let into = if p.direct {
                    target.write.quoted()
                } else {
                    let stage = quote_ident(&format!("pgbulk_stage_{t}"));
                    let layout = p.layout(target);
                    create_stage(tx, layout, &stage).await?;
                    stage
                };
                p.into = Some(into.clone());
                into
            }
        };
        let columns = if p.direct {
            column_list(target)
        } else {
            p.layout(target).copy_columns()
        };
        let options = if p.direct && p.freeze {
            "FORMAT binary, FREEZE"
        } else {
            "FORMAT binary"
        };
        let statement = format!("COPY {into} ({columns}) FROM STDIN ({options})");
        let copy = CopyIn::start(tx.client(), &statement)
            .await
            .map_err(|e| Error::in_context(e, &target.name.to_string()).in_table(&target.name))?;
        *open = Some(OpenCopy { table: t, copy });
    }
    if let Some(copy) = open.as_mut() {
        if !p.writer.is_empty_buffer() {
            // The writer's buffer goes to the connection and the writer
            // goes on in a pooled one: a few fixed-size buffers in turn
            // keep the process's memory flat however long the load runs.
            // A buffer a huge field grew is not pooled: its memory is
            // freed once sent.
            let chunk = if p.writer.capacity() > OVERSIZED_BUFFER {
                Bytes::from(p.writer.take())
            } else {
                let spare = p.chunks.spare();
                p.chunks
                    .wrap(std::mem::replace(p.writer.buffer_mut(), spare))
            };
            copy.copy.send(chunk).await.map_err(|e| {
                Error::in_context(e, &target.name.to_string()).in_table(&target.name)
            })?;
            // The rows are encoded on a runtime worker, between awaits: let
            // the connection take the chunk and fill the socket (and the
            // runtime poll for sockets ready) before the next chunk's
            // encoding holds the worker. Else, with both workers encoding
            // (two streams), the server empties the socket and waits:
            // 5 M narrow rows in two halves over a Unix socket, 1.76 s ->
            // 1.58 s.
            tokio::task::yield_now().await;
        }
    }
    if last {
        if let Some(copy) = open.take() {
            p.copied += finish_copy(copy.copy, target).await?;
        }
    }
    Ok(())
}

/// Staged rows from which a stage may become UNLOGGED ([`promote`]): the
/// rows from which a merge may sieve the stage first.
const PROMOTE_ROWS: u64 = super::batch::SIEVE_MIN_ROWS;

/// Moves a large TEMP stage of a table keyed by its primary key into an
/// UNLOGGED table of the table's schema, created in the batch's
/// transaction (so no other session ever sees it, and it is gone if the
/// batch fails), when the role may create tables there and the server runs
/// parallel queries: the server's parallel workers cannot read TEMP tables,
/// and with this stage the join that sieves the unchanged rows out
/// ([`super::merge::sieve_statement`]) runs on more than one core. Small
/// batches stay in TEMP stages, which cost less to create and drop. Ends
/// the table's open COPY; the next one goes into the new stage.
async fn promote(
    tx: &Transaction<'_>,
    target: &Target,
    p: &mut Pending,
    open: &mut Option<OpenCopy>,
) -> Result<()> {
    p.promoted = true;
    let Some(old) = p.into.clone() else {
        return Ok(());
    };
    if !target.key_is_primary {
        return Ok(());
    }
    if let Some(copy) = open.take() {
        p.copied += finish_copy(copy.copy, target).await?;
    }
    let context = |e| {
        Error::in_context(
            Error::server("moving the staging table", e),
            &target.name.to_string(),
        )
        .in_table(&target.name)
    };
    let place = tx
        .query_opt(
            "SELECT n.nspname::text, s.name \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, \
                  LATERAL (SELECT 'pgbulk_batch_' || pg_catalog.pg_backend_pid() || '_' || c.oid AS name) s \
             WHERE c.oid = $1 AND c.relpersistence <> 't' \
               AND pg_catalog.has_schema_privilege(n.oid, 'CREATE') \
               AND pg_catalog.current_setting('max_parallel_workers_per_gather')::int > 0 \
               AND pg_catalog.current_setting('max_parallel_workers')::int > 0 \
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_class o \
                               WHERE o.relnamespace = n.oid AND o.relname = s.name)",
            &[&target.oid],
        )
        .await
        .map_err(context)?;
    // Not where the role may not create tables, nor where a table of that
    // name exists (never written into).
    let Some(place) = place else {
        return Ok(());
    };
    let (schema, name): (String, String) = (place.get(0), place.get(1));
    let stage = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
    tx.batch_execute(&format!(
        "CREATE UNLOGGED TABLE {stage} AS SELECT * FROM {old}; DROP TABLE {old}"
    ))
    .await
    .map_err(context)?;
    tracing::debug!("table {}: staging in {stage}", target.name);
    p.into = Some(stage);
    p.unlogged = true;
    Ok(())
}

/// Creates the TEMP staging table of a target in `layout` (dropped at
/// commit); columns the server must cast arrive as `text`.
pub(super) async fn create_stage(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
) -> Result<()> {
    let target = layout.target;
    let mut cols: Vec<String> = target
        .columns
        .iter()
        .map(|c| {
            let ty = if c.ty.needs_cast() {
                "text"
            } else {
                c.ty.base_name.as_deref().unwrap_or(&c.ty.name)
            };
            format!("{} {ty}", quote_ident(&c.name))
        })
        .collect();
    cols.extend(
        layout
            .extra_columns()
            .into_iter()
            .map(|(name, ty)| format!("{} {ty}", quote_ident(&name))),
    );
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {stage} ({}) ON COMMIT DROP",
        cols.join(", ")
    ))
    .await
    .map_err(|e| {
        Error::in_context(
            Error::server("creating the staging table", e),
            &target.name.to_string(),
        )
        .in_table(&target.name)
    })
}

/// Ends a COPY (trailer, then `CopyDone`) and returns the rows copied.
pub(super) async fn finish_copy(copy: CopyIn, target: &Target) -> Result<u64> {
    copy.finish()
        .await
        .map_err(|e| Error::in_context(e, &target.name.to_string()).in_table(&target.name))
}
