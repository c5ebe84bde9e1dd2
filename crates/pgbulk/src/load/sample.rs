//! Column types inferred from a sample of an input: by default 1 MiB from
//! its start and, for a big uncompressed file, 1 MiB from its middle and
//! its end; or the first N rows; or all of it.

use std::io::Read;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::{LoadOptions, csv_error, empty_file};
use crate::csv::{self, CsvError};
use crate::error::{Error, ErrorKind, Result};
use crate::infer::{self, Inference};
use crate::input::{self, Source};
use crate::schema::TableName;

/// A sample read from a stream that cannot be reopened (stdin), and the
/// rest of that stream: the load reads the sample again, then the rest.
pub(super) type Replay = (Vec<u8>, Box<dyn Read + Send>);

/// How much of an input inference reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sample {
    /// 1 MiB from the start; for an uncompressed file over 3 MiB also 1 MiB
    /// from its middle and from its end.
    #[default]
    Parts,
    /// The first N rows.
    Rows(u64),
    /// Every row (a file; standard input would have to be held).
    All,
}

/// Bytes of each sampled part.
const PART: u64 = 1 << 20;

/// What inference read: rows, bytes, and which parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampled {
    /// Records read.
    pub rows: u64,
    /// Bytes read (after decompression).
    pub bytes: u64,
    /// Which parts: "all", "the start", "the start, middle and end", ...
    pub parts: String,
}

impl Sampled {
    /// A SQL comment saying what the types were inferred from.
    pub fn comment(&self) -> String {
        format!(
            "-- types inferred from {} row{} ({} bytes: {}); --sample-all reads every row, --type COL=TYPE overrides one\n",
            self.rows,
            if self.rows == 1 { "" } else { "s" },
            self.bytes,
            self.parts
        )
    }
}

/// Infers the columns of `source` from a sample (see [`Sample`]) and
/// returns the DDL, what was sampled and, for standard input, what the
/// load must replay.
pub(super) fn infer_from(
    source: &Source,
    opts: &LoadOptions,
    table: &TableName,
    counter: Arc<AtomicU64>,
) -> Result<(String, Sampled, Option<Replay>)> {
    let name = source.name();
    if opts.sample == Sample::All && matches!(source, Source::Stdin) {
        return Err(Error::config(
            "--sample-all reads the input before loading it: give a file, not standard input",
        ));
    }
    let (reader, _) = input::open(source, opts.encoding, counter)?;
    let kept = Arc::new(Mutex::new(Vec::new()));
    let keep = matches!(source, Source::Stdin);
    let tee = Tee {
        inner: reader,
        kept: keep.then(|| kept.clone()),
    };
    let (max_bytes, max_rows) = match opts.sample {
        Sample::Parts => (Some(PART), None),
        Sample::Rows(n) => (None, Some(n)),
        Sample::All => (None, None),
    };
    let mut csv = csv::Reader::new(tee, opts.dialect.clone());
    csv.set_max_field(opts.max_field_size);
    csv.skip_lines(opts.skip_lines)
        .map_err(|e| csv_error(&name, e))?;
    let mut scratch = String::new();
    let names = header(&mut csv, opts, &name, &mut scratch)?;
    let mut inference: Option<Inference> = names.as_ref().map(|n| Inference::new(n));
    let mut sampled = Sampled {
        rows: 0,
        bytes: 0,
        parts: "the start".to_owned(),
    };
    let expected = names.as_ref().map(Vec::len);
    read_rows(
        &mut csv,
        &mut inference,
        &mut sampled,
        Limits {
            max_bytes,
            max_rows,
            expected: None,
        },
        opts,
        &name,
        &mut scratch,
    )?;
    let whole = csv.at_end().unwrap_or(false);
    sampled.bytes = csv.offset();
    let replay = if keep {
        let sample = std::mem::take(&mut *kept.lock().map_err(|_| poisoned())?);
        let Tee { inner, .. } = csv.into_inner();
        Some((sample, inner))
    } else {
        None
    };
    if whole {
        sampled.parts = "all of it".to_owned();
    } else if opts.sample == Sample::Parts {
        sample_middle_and_end(source, opts, &mut inference, &mut sampled, expected)?;
    }
    let inference = inference.ok_or_else(|| empty_file(&name))?;
    let ddl = ddl(&inference, opts, table, &name)?;
    Ok((ddl, sampled, replay))
}

/// The `CREATE TABLE` inferred from a sample of `source` for `table`,
/// preceded by a comment saying what was sampled (`pgbulk infer`).
/// The dialect is detected as [`super::detect_dialect`] does.
pub fn infer_source(source: &Source, opts: &LoadOptions, table: &TableName) -> Result<String> {
    if super::parquet_file(source) {
        #[cfg(feature = "parquet")]
        return super::parquet::table_ddl(source, opts, table);
        #[cfg(not(feature = "parquet"))]
        return Err(super::without_parquet(source));
    }
    let opts = LoadOptions {
        sources: vec![source.clone()],
        ..opts.clone()
    };
    let (opts, notes) = super::detect_dialect(&opts)?;
    let notes: String = notes.iter().map(|n| format!("-- {n}\n")).collect();
    infer_from(source, &opts, table, Arc::default())
        .map(|(ddl, sampled, _)| format!("{notes}{}{ddl}", sampled.comment()))
}

/// The header's fields, or the names given; `None` without either.
fn header<R: Read>(
    csv: &mut csv::Reader<R>,
    opts: &LoadOptions,
    name: &str,
    scratch: &mut String,
) -> Result<Option<Vec<String>>> {
    let mut names: Option<Vec<String>> = opts.columns.clone();
    if opts.header {
        let header = csv
            .read_record()
            .map_err(|e| csv_error(name, e))?
            .ok_or_else(|| empty_file(name))?;
        let line = header.line;
        let fields: Vec<String> = (0..header.len())
            .map(|i| decode(header.raw_field(i), line, i, opts, name, scratch).map(str::to_owned))
            .collect::<Result<_>>()?;
        if names.is_none() {
            names = Some(fields);
        }
    }
    Ok(names)
}

fn decode<'s>(
    bytes: &'s [u8],
    line: u64,
    field: usize,
    opts: &LoadOptions,
    name: &str,
    scratch: &'s mut String,
) -> Result<&'s str> {
    let encoding = input::field_encoding(opts.encoding);
    input::decode_field(bytes, encoding, scratch).map_err(|at| {
        Error::new(
            ErrorKind::Data,
            format!(
                "{name}:{line}:{}: {}",
                field + 1,
                input::undecodable(bytes, at, encoding)
            ),
        )
    })
}

/// Where reading a part stops, and which records count.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_bytes: Option<u64>,
    max_rows: Option<u64>,
    /// In a part read from the middle of a file: records with another
    /// number of fields are cut-off pieces, not rows.
    expected: Option<usize>,
}

#[allow(clippy::too_many_arguments)]
fn read_rows<R: Read>(
    csv: &mut csv::Reader<R>,
    inference: &mut Option<Inference>,
    sampled: &mut Sampled,
    limits: Limits,
    opts: &LoadOptions,
    name: &str,
    scratch: &mut String,
) -> Result<()> {
    let start = csv.offset();
    let mut rows = 0u64;
    let mut fields: Vec<Option<String>> = Vec::new();
    loop {
        if limits.max_bytes.is_some_and(|m| csv.offset() - start >= m)
            || limits.max_rows.is_some_and(|m| rows >= m)
        {
            break;
        }
        let record = match csv.read_record() {
            Ok(Some(r)) => r,
            // A quote never closed before any row was read: there is
            // nothing to infer from, and the load would read the same;
            // said here rather than "no rows".
            Err(e @ CsvError::UnclosedQuote { .. })
                if limits.expected.is_none() && rows == 0 && sampled.rows == 0 =>
            {
                return Err(csv_error(name, e));
            }
            Ok(None) | Err(CsvError::UnclosedQuote { .. }) => break,
            Err(e) if limits.expected.is_some() => {
                let _ = e;
                break;
            }
            Err(e) => return Err(csv_error(name, e)),
        };
        if limits.expected.is_some_and(|n| n != record.len()) {
            continue;
        }
        let line = record.line;
        fields.clear();
        for i in 0..record.len() {
            match record.get(i) {
                None => fields.push(None),
                Some(b) => match decode(b, line, i, opts, name, scratch) {
                    Ok(text) => fields.push(Some(text.to_owned())),
                    // A part from the middle may start inside a character;
                    // with --max-errors the load rejects the row itself.
                    Err(_) if limits.expected.is_some() || opts.max_errors > 0 => fields.push(None),
                    Err(e) => return Err(e),
                },
            }
        }
        let inf = inference.get_or_insert_with(|| {
            Inference::new(
                &(1..=fields.len())
                    .map(|i| format!("column{i}"))
                    .collect::<Vec<_>>(),
            )
        });
        inf.add_row(&fields.iter().map(Option::as_deref).collect::<Vec<_>>());
        rows += 1;
    }
    sampled.rows += rows;
    Ok(())
}

/// Adds 1 MiB from the middle and 1 MiB from the end of a big uncompressed
/// file in an ASCII-compatible encoding. Each part starts after the first
/// line end at its offset; records with another number of fields than the
/// header (a part that began inside a quoted field) are left out, which can
/// only widen a type, never narrow it.
fn sample_middle_and_end(
    source: &Source,
    opts: &LoadOptions,
    inference: &mut Option<Inference>,
    sampled: &mut Sampled,
    expected: Option<usize>,
) -> Result<()> {
    let Some(size) = source.size() else {
        return Ok(());
    };
    if size < 3 * PART {
        return Ok(());
    }
    let name = source.name();
    let mut scratch = String::new();
    let mut read_any = false;
    for offset in [size / 2 - PART / 2, size - PART] {
        let Some(stream) = input::open_at(source, opts.encoding, Arc::default(), offset)? else {
            return Ok(());
        };
        let mut csv = csv::Reader::starting_at(stream, opts.dialect.clone(), 0, 1);
        csv.set_max_field(opts.max_field_size);
        // The rest of the line the offset fell in.
        if csv.skip_lines(1).is_err() {
            continue;
        }
        let before = csv.offset();
        read_rows(
            &mut csv,
            inference,
            sampled,
            Limits {
                max_bytes: Some(PART),
                max_rows: None,
                expected: Some(expected.unwrap_or(0)).filter(|n| *n > 0),
            },
            opts,
            &name,
            &mut scratch,
        )?;
        sampled.bytes += csv.offset() - before;
        read_any = true;
    }
    if read_any {
        sampled.parts = format!("the start, middle and end of {size} bytes");
    }
    Ok(())
}

/// The DDL of the inferred columns, `--type` overrides applied.
fn ddl(inference: &Inference, opts: &LoadOptions, table: &TableName, name: &str) -> Result<String> {
    let mut columns = inference.columns();
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.clone()) {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{name}: two columns are both called \"{}\" (after normalising the header); --columns A,B,C names them instead of the header",
                    c.name
                ),
            ));
        }
    }
    for (column, sql_type) in &opts.types {
        let wanted = infer::normalize_name(column);
        let c = columns
            .iter_mut()
            .find(|c| c.name == wanted || c.name == *column)
            .ok_or_else(|| {
                Error::config(format!(
                    "--type {column}={sql_type}: the input has no column \"{column}\" (it has: {})",
                    seen.iter().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
        c.sql_type.clone_from(sql_type);
    }
    let key: Vec<String> = opts
        .key
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|k| infer::normalize_name(k))
        .collect();
    Ok(infer::create_table_sql(table, &columns, &key))
}

fn poisoned() -> Error {
    Error::new(ErrorKind::Io, "sample buffer poisoned")
}

/// Keeps a copy of what is read through it (standard input's sample, to
/// be read again by the load).
struct Tee {
    inner: Box<dyn Read + Send>,
    kept: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(kept) = &self.kept {
            kept.lock()
                .map_err(|_| std::io::Error::other("sample buffer poisoned"))?
                .extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}
