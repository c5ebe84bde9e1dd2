//! Two streams for one big file: its halves, split at a record boundary,
//! loaded at once on two connections.

use std::sync::Arc;

use super::reader::Position;
use super::{LoadOptions, csv_error};
use crate::csv::{self, CsvError};
use crate::error::{Error, Result};
use crate::input::{self, Source};
use std::io::Read;

/// Files at least this big are read as two halves on two connections.
pub(super) const PARALLEL_MIN_BYTES: u64 = 32 << 20;

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
/// read as it is ([`input::read_as_is`]).
pub(super) fn parallel_input(sources: &[Source], opts: &LoadOptions) -> Result<bool> {
    let [source @ Source::File(_)] = sources else {
        return Ok(false);
    };
    if !input::read_as_is(opts.encoding) || source.size().unwrap_or(0) < PARALLEL_MIN_BYTES {
        return Ok(false);
    }
    let (_, compression) = input::open(source, opts.encoding, Arc::default())?;
    Ok(compression == input::Compression::None)
}

/// The first record boundary at or after the middle of the file, and the
/// line it starts on: where the parser the load uses finds it (see
/// [`split_parsed`]), found without parsing when it may be (see
/// [`split_scanned`]).
pub(super) fn split_point(source: &Source, opts: &LoadOptions) -> Result<Option<(u64, u64)>> {
    match split_scanned(source, opts)? {
        Some(found) => Ok(found),
        None => split_parsed(source, opts),
    }
}

/// [`split_point`] by a scan for quotes and line ends, or `None` when the
/// parser must say where records end: a carriage return comes before the
/// boundary, or a quote while the escape is another character (or lines
/// are skipped, which the parser reads without looking at quotes), or, in
/// the text format (which has no quotes), a backslash before a line end
/// (an escaped one, inside its record) or before a dot (the end marker
/// `\.`, after which nothing is read).
/// Otherwise quotes alternate in and out of quoted parts (a doubled quote
/// inside them is two quotes), a `\n` outside them ends a record, each
/// `\n` ends a line, and a record is blank only when nothing comes before
/// its `\n`: the boundary is the end of the first record not blank that
/// ends at or after the middle.
fn split_scanned(source: &Source, opts: &LoadOptions) -> Result<Option<Option<(u64, u64)>>> {
    let middle = source.size().unwrap_or(0) / 2;
    let text = opts.dialect.text;
    let quote = opts.dialect.quote;
    let follows_quotes = opts.dialect.escape == quote && opts.skip_lines == 0;
    // In the text format: whether the previous read ended in a backslash.
    let mut backslash = false;
    let (mut stream, _) = input::open(source, opts.encoding, Arc::default())?;
    let mut buf = vec![0u8; 1 << 20];
    // Bytes before `buf`, `\n`s seen, where the current record starts,
    // whether a quoted part is open.
    let (mut offset, mut newlines, mut record_start, mut quoted) = (0u64, 0u64, 0u64, false);
    let mut found = (middle == 0).then_some((0, 1));
    loop {
        let n = match stream.read(&mut buf) {
            // A boundary at the input's end splits nothing.
            Ok(0) => return Ok(Some(None)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("cannot read {}", source.name()), e)),
        };
        if found.is_some() {
            return Ok(Some(found));
        }
        let chunk = &buf[..n];
        if text {
            let escapes = |c: &[u8]| {
                memchr::memmem::find(c, b"\\\n").is_some()
                    || memchr::memmem::find(c, b"\\.").is_some()
            };
            if escapes(chunk) || (backslash && matches!(chunk[0], b'\n' | b'.')) {
                return Ok(None);
            }
            backslash = chunk[n - 1] == b'\\';
        }
        let quotes = !text && memchr::memchr(quote, chunk).is_some();
        if memchr::memchr(b'\r', chunk).is_some() || (quotes && !follows_quotes) {
            return Ok(None);
        }
        if !quotes && !quoted && offset + (n as u64) < middle {
            // No record here ends at or after the middle: count lines at once.
            newlines += memchr::memchr_iter(b'\n', chunk).count() as u64;
            if let Some(last) = memchr::memrchr(b'\n', chunk) {
                record_start = offset + last as u64 + 1;
            }
            offset += n as u64;
            continue;
        }
        // Line by line: the quotes before each line end say whether it is
        // inside a quoted part (counted at once: a call per quote would
        // cost more than the count).
        let mut from = 0;
        for at in memchr::memchr_iter(b'\n', chunk) {
            quoted ^= quotes && memchr::memchr_iter(quote, &chunk[from..at]).count() % 2 == 1;
            from = at + 1;
            newlines += 1;
            if quoted {
                continue;
            }
            let end = offset + at as u64 + 1;
            let blank = end - 1 == record_start;
            record_start = end;
            if end >= middle && !blank {
                // The next record starts on the line after `newlines` lines.
                found = Some((end, newlines + 1));
                if at + 1 < n {
                    return Ok(Some(found));
                }
                break;
            }
        }
        quoted ^= quotes && memchr::memchr_iter(quote, &chunk[from..]).count() % 2 == 1;
        offset += n as u64;
    }
}

/// [`split_point`] found by the parser the load uses.
fn split_parsed(source: &Source, opts: &LoadOptions) -> Result<Option<(u64, u64)>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A boundary's offset and line.
    type Split = Option<(u64, u64)>;

    /// Both ways of splitting `text` (the scan only when it may).
    fn splits(text: &[u8], name: &str) -> (Option<Split>, Split) {
        let path = std::env::temp_dir().join(format!("pgbulk-split-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        let source = Source::File(path.clone());
        let opts = LoadOptions::default();
        let scanned = split_scanned(&source, &opts).expect("scan");
        let parsed = split_parsed(&source, &opts).expect("parse");
        std::fs::remove_file(&path).expect("remove");
        (scanned, parsed)
    }

    #[test]
    fn the_scan_finds_the_boundary_the_parser_finds() {
        // Lines of pseudo-random lengths, some empty, with and without a
        // last line end; the middle falls on every kind of place.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for case in 0..400 {
            let mut text = Vec::new();
            for _ in 0..1 + next(12) {
                let len = if next(4) == 0 { 0 } else { next(9) };
                for _ in 0..len {
                    // Half the cases have quotes, some doubled, some
                    // around line ends, some never closed.
                    text.push(match next(12) {
                        0..4 => b',',
                        4 if case % 2 == 0 => b'"',
                        5 if case % 4 == 0 => b'\n',
                        _ => b'a' + next(26) as u8,
                    });
                }
                text.push(b'\n');
            }
            if next(2) == 0 {
                text.pop();
            }
            let (scanned, parsed) = splits(&text, &case.to_string());
            assert_eq!(
                scanned,
                Some(parsed),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn whole_reads_before_the_middle_count_their_lines_as_the_parser_does() {
        // Several reads of input, blank lines here and there and, in some
        // cases, a run of them where the middle falls.
        for (case, blank_every) in [3u64, 5, 7, 11].into_iter().enumerate() {
            let mut text = Vec::new();
            let mut i = 0u64;
            while text.len() < 3 << 20 {
                if !i.is_multiple_of(blank_every) {
                    text.extend_from_slice(format!("{i},x").as_bytes());
                }
                text.push(b'\n');
                i += 1;
            }
            if case % 2 == 1 {
                let half = text.len() / 2 - 20;
                let at = half + memchr::memchr(b'\n', &text[half..]).expect("a line end") + 1;
                text.splice(at..at, std::iter::repeat_n(b'\n', 64));
            }
            let (scanned, parsed) = splits(&text, &format!("reads-{case}"));
            assert!(parsed.is_some(), "case {case} splits");
            assert_eq!(scanned, Some(parsed), "case {case}");
        }
    }

    #[test]
    fn a_boundary_at_the_end_of_a_read_is_found_once_more_input_follows() {
        let mut text = vec![b'a'; (1 << 20) - 1];
        text.push(b'\n');
        let (scanned, parsed) = splits(&text, "one-line");
        assert_eq!((scanned, parsed), (Some(None), None));
        text.extend(std::iter::repeat_n(b'b', (1 << 20) - 10));
        text.push(b'\n');
        let (scanned, parsed) = splits(&text, "two-lines");
        assert_eq!(
            (scanned, parsed),
            (Some(Some((1 << 20, 2))), Some((1 << 20, 2)))
        );
    }

    #[test]
    fn quotes_are_followed_and_a_carriage_return_leaves_it_to_the_parser() {
        let (scanned, parsed) = splits(b"a,\"b\nc\"\nd,e\nf,g\n", "quote");
        assert_eq!(parsed, Some((8, 3)));
        assert_eq!(scanned, Some(parsed));
        let (scanned, parsed) = splits(b"a,\"b\"\"\n\nc\"\nd,e\nf,g\n", "doubled");
        assert_eq!(parsed, Some((11, 4)));
        assert_eq!(scanned, Some(parsed));
        let (scanned, _) = splits(b"a,b\r\nc,d\r\ne,f\r\n", "cr");
        assert_eq!(scanned, None);
    }

    #[test]
    fn in_the_text_format_quotes_are_data_and_escaped_line_ends_or_an_end_marker_leave_it_to_the_parser()
     {
        let text_opts = || LoadOptions {
            dialect: csv::Dialect::postgres_text(),
            ..LoadOptions::default()
        };
        let split = |text: &[u8], name: &str| {
            let path =
                std::env::temp_dir().join(format!("pgbulk-split-{}-{name}", std::process::id()));
            std::fs::write(&path, text).expect("write");
            let source = Source::File(path.clone());
            let found = (
                split_scanned(&source, &text_opts()).expect("scan"),
                split_parsed(&source, &text_opts()).expect("parse"),
            );
            std::fs::remove_file(&path).expect("remove");
            found
        };
        // A quote opens nothing: the line end after the middle is the boundary.
        let (scanned, parsed) = split(b"a\"b\nc\nd\"e\nf\n", "text-quotes");
        assert_eq!(parsed, Some((6, 3)));
        assert_eq!(scanned, Some(parsed));
        // A backslash before a line end escapes it: the record goes on.
        let (scanned, parsed) = split(b"ab\tc\\\nd\te\nf\n", "text-escaped");
        assert_eq!((scanned, parsed), (None, Some((10, 3))));
        // Across two reads of the scan.
        let mut text = vec![b'a'; 1 << 20];
        text[(1 << 20) - 1] = b'\\';
        text.extend_from_slice(b"\nb\nc\n");
        let (scanned, parsed) = split(&text, "text-escaped-reads");
        assert_eq!((scanned, parsed), (None, Some(((1 << 20) + 3, 3))));
        // Nothing is read after the end marker: no second half.
        let (scanned, parsed) = split(b"a\n\\.\nb\nc\nd\n", "text-marker");
        assert_eq!((scanned, parsed), (None, None));
    }

    #[test]
    fn quotes_with_another_escape_or_skipped_lines_leave_it_to_the_parser() {
        let path = std::env::temp_dir().join(format!("pgbulk-split-{}-escape", std::process::id()));
        std::fs::write(&path, b"a,\"b\\\"\nc\"\nd,e\nf,g\n").expect("write");
        let source = Source::File(path.clone());
        let mut opts = LoadOptions::default();
        opts.dialect.escape = b'\\';
        assert_eq!(split_scanned(&source, &opts).expect("scan"), None);
        assert_eq!(split_parsed(&source, &opts).expect("parse"), Some((10, 3)));
        let opts = LoadOptions {
            skip_lines: 1,
            ..LoadOptions::default()
        };
        assert_eq!(split_scanned(&source, &opts).expect("scan"), None);
        std::fs::remove_file(&path).expect("remove");
    }
}
