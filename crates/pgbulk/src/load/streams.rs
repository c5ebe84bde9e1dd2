//! Two streams for one big file: its halves, split at a record boundary,
//! loaded at once on two connections.

use std::sync::Arc;

use super::reader::Position;
use super::{LoadOptions, csv_error};
use crate::csv::{self, CsvError};
use crate::error::Result;
use crate::input::{self, Source};

/// Files at least this big are read as two halves on two connections.
pub(super) const PARALLEL_MIN_BYTES: u64 = 32 << 20;

/// Tables with more columns load with one stream (the client's encoding
/// then keeps a core busy by itself).
pub(super) const PARALLEL_MAX_COLUMNS: usize = 6;

/// One reader of the inputs: where it starts, where it stops, and the name
/// its watermark row is kept under.
#[derive(Debug, Clone)]
pub(super) struct Stream {
    pub(super) name: Option<String>,
    /// The name the same load has by its inputs' locations (see
    /// [`Position::path_key`]).
    pub(super) path_key: Option<String>,
    pub(super) start: Position,
    pub(super) limit: Option<u64>,
    /// Bytes already loaded by an earlier run before `start` (progress).
    pub(super) credit: u64,
}

/// Whether the inputs can be split into halves: one big, uncompressed file
/// in an ASCII-compatible encoding.
pub(super) fn parallel_input(sources: &[Source], opts: &LoadOptions) -> Result<bool> {
    let [source @ Source::File(_)] = sources else {
        return Ok(false);
    };
    if !opts.encoding.is_ascii_compatible() || source.size().unwrap_or(0) < PARALLEL_MIN_BYTES {
        return Ok(false);
    }
    let (_, compression) = input::open(source, opts.encoding, Arc::default())?;
    Ok(compression == input::Compression::None)
}

/// The first record boundary at or after the middle of the file, and the
/// line it starts on, found with the same parser the load uses.
pub(super) fn split_point(source: &Source, opts: &LoadOptions) -> Result<Option<(u64, u64)>> {
    let name = source.name();
    let middle = source.size().unwrap_or(0) / 2;
    let (stream, _) = input::open(source, opts.encoding, Arc::default())?;
    let mut reader = csv::Reader::new(stream, opts.dialect.clone());
    reader.set_max_field(opts.max_field_size);
    reader
        .skip_lines(opts.skip_lines)
        .map_err(|e| csv_error(&name, e))?;
    while reader.offset() < middle {
        match reader.read_record() {
            Ok(Some(_)) => {}
            Ok(None) | Err(CsvError::UnclosedQuote { .. }) => return Ok(None),
            Err(e) => return Err(csv_error(&name, e)),
        }
    }
    if reader.at_end().map_err(|e| csv_error(&name, e))? {
        return Ok(None);
    }
    Ok(Some((reader.offset(), reader.line())))
}
