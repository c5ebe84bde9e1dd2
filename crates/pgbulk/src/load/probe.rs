//! How many connections and batches an upsert of one big file takes when
//! the user did not say: its first rows, upserted as a small first batch
//! on one connection, show how much of the input changes rows of the
//! table.
//!
//! The rest goes in one batch when it would change most of the table's
//! rows (the batch then rewrites the table: 5 M changed rows into a 5 M-row
//! table, 14.5 s against 23-27 s on two connections), or when the first
//! rows changed nothing (a batch of more than a twentieth of the table
//! reads all of it: 5 M unchanged rows 4.2-4.8 s in one batch against
//! 6.2-7.0 s in batches of 1 M).
//!
//! Two connections pay for rows that change rows of the table, and cost
//! for the others: each connection's sieve reads the table for its share
//! of the keys, and new keys go no faster. Measured on two cores (5 M
//! narrow rows into a table holding 5 M, 1 M-row batches): changed values
//! 23.0-26.8 s on two connections against 25.1-32.3 s on one; unchanged
//! values 14.9 s against 10.2 s; new keys 14.4-14.9 s either way, two
//! taking 65% more CPU.

use std::sync::{Arc, Mutex};

use tokio_postgres::Client;
use tracing::{debug, info};

use super::reader::{Shared, exhausted, next_batch};
use crate::error::{Error, ErrorKind, Result};
use crate::ingest::{self, Options, Prepared};
use crate::schema::TableName;

/// Rows of the first batch, which decides.
const PROBE_ROWS: u64 = 20_000;

/// The share of the first batch's rows that changed a row of the table
/// from which on the rest goes on [`STREAMS`] connections.
const UPDATED_SHARE: f64 = 0.5;

/// Connections when they pay.
const STREAMS: usize = 2;

/// What the first rows chose.
#[derive(Debug)]
pub(super) struct Choice {
    /// Connections for the rest of the input.
    pub(super) streams: usize,
    /// The rest of the input goes in one batch (which rewrites the table
    /// when its rows change most of it).
    pub(super) one_batch: bool,
    /// The first batch's report, when the choice committed one.
    pub(super) first: Option<ingest::Report>,
}

impl Choice {
    const ONE: Self = Self {
        streams: 1,
        one_batch: false,
        first: None,
    };
}

/// Chooses the connections for an upsert of one big file (see
/// [`super::plan::may_hash`]) into `table` (`prepared` is settled): one
/// unless the table allows several (see
/// [`ingest::parallel_unsuited`]) and holds rows, and at least
/// [`UPDATED_SHARE`] of the first [`PROBE_ROWS`] rows, upserted and
/// committed here as the first batch on `client`, changed a row of it.
/// With `one_batch_allowed` (the batch size was not asked for), one batch
/// for the rest instead when those rows show that it changes most of the
/// table's rows and the table may be rewritten
/// ([`ingest::rewritable`]), or when they changed nothing and the rest
/// holds more than `batch_rows` rows.
pub(super) async fn upsert_streams(
    client: &mut Client,
    prepared: &Prepared,
    options: &Options,
    shared: &Arc<Mutex<Shared>>,
    table: &TableName,
    batch_rows: u64,
    one_batch_allowed: bool,
) -> Result<Choice> {
    let columns = {
        let mut s = shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        if exhausted(&mut s)? {
            return Ok(Choice::ONE);
        }
        s.file_columns.clone()
    };
    if let Some(why) = ingest::parallel_unsuited(client, prepared, table, &columns, options).await?
    {
        debug!("{table}: upserting on one connection: {why}");
        return Ok(Choice::ONE);
    }
    if crate::rebuild::is_empty(&*client, table).await? {
        debug!("{table}: upserting on one connection: the table is empty");
        return Ok(Choice::ONE);
    }
    // A rewrite of the table is weighed before the batch: the table's rows
    // change under it.
    let rewritable = if one_batch_allowed {
        ingest::rewritable(client, prepared, table, &columns, options).await?
    } else {
        None
    };
    let before = offset(shared)?;
    let Some(batch) = next_batch(shared, PROBE_ROWS.min(batch_rows))? else {
        return Ok(Choice::ONE);
    };
    let first =
        ingest::ingest_prepared(client, prepared, |_| std::iter::once(Ok(batch)), options).await?;
    let counts = first.total();
    let updated = counts.updated;
    let seen = counts.inserted + updated + counts.unchanged;
    let rest = if one_batch_allowed {
        rest_rows(shared, before, &counts)?
    } else {
        None
    };
    // Rows that change nothing: one batch reads the table once, where each
    // batch (from a twentieth of the table) reads all of it.
    if let Some(rest) =
        rest.filter(|&r| seen > 0 && counts.unchanged == seen && r > batch_rows as f64)
    {
        info!(
            "{table}: the first {seen} rows changed nothing, and the rest of the input holds about {rest:.0} rows: loading the rest in one batch, which reads the table once (--batch-rows N keeps batches)"
        );
        return Ok(Choice {
            streams: 1,
            one_batch: true,
            first: Some(first),
        });
    }
    if let (Some(table_rows), Some(rest)) = (rewritable, rest) {
        let share = |n: u64| n as f64 / seen.max(1) as f64;
        if ingest::rewrite_pays(rest, share(updated), share(counts.inserted), table_rows) {
            info!(
                "{table}: {updated} of the first {seen} rows changed a row of it, and the rest of the input holds about {rest:.0} rows, the table about {table_rows:.0}: loading the rest in one batch, which rewrites it (--batch-rows N keeps batches)"
            );
            return Ok(Choice {
                streams: 1,
                one_batch: true,
                first: Some(first),
            });
        }
    }
    let streams = if seen > 0 && updated as f64 >= UPDATED_SHARE * seen as f64 {
        info!(
            "{table}: {updated} of the first {seen} rows changed a row of it: upserting the rest on {STREAMS} connections, each key's rows on one (--streams 1 keeps one)"
        );
        STREAMS
    } else {
        debug!(
            "{table}: {updated} of the first {seen} rows changed a row of it: upserting on one connection"
        );
        1
    };
    Ok(Choice {
        streams,
        one_batch: false,
        first: Some(first),
    })
}

/// Where the reader stands in its current input (bytes, after
/// decompression).
fn offset(shared: &Arc<Mutex<Shared>>) -> Result<Option<u64>> {
    Ok(lock(shared)?.reader.as_ref().map(|r| r.offset()))
}

fn lock(shared: &Arc<Mutex<Shared>>) -> Result<std::sync::MutexGuard<'_, Shared>> {
    shared
        .lock()
        .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))
}

/// The rows left in the input, estimated from the bytes the first batch's
/// records (`counts`) took from offset `before`: `None` when the input's
/// size is not known. A compressed input's size is its compressed one, so
/// its rows are underestimated.
fn rest_rows(
    shared: &Arc<Mutex<Shared>>,
    before: Option<u64>,
    counts: &ingest::Counts,
) -> Result<Option<f64>> {
    let records = counts.inserted + counts.updated + counts.unchanged + counts.repeated;
    let (after, size) = {
        let s = lock(shared)?;
        (
            s.reader.as_ref().map(|r| r.offset()),
            s.sources.get(s.file).and_then(|f| f.size()),
        )
    };
    Ok(match (before, after, size) {
        (Some(before), Some(after), Some(size)) if after > before && records > 0 => {
            Some(size.saturating_sub(after) as f64 * records as f64 / (after - before) as f64)
        }
        _ => None,
    })
}
