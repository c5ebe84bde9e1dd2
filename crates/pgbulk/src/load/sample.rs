//! Column types inferred from the start of an input.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::{LoadOptions, csv_error, empty_file};
use crate::csv::{self, CsvError};
use crate::error::{Error, ErrorKind, Result};
use crate::infer::{self, Inference};
use crate::input::{self, Source};
use crate::schema::TableName;

/// A sample read from a stream that cannot be reopened (stdin), and the
/// rest of that stream: the load reads the sample again, then the rest.
pub(super) type Replay = (Vec<u8>, Box<dyn Read + Send>);

/// Reads a sample of `source` (up to 1 MiB) and infers its columns' types.
/// Returns the DDL and, for standard input, what the load must replay.
pub(super) fn infer_from(
    source: &Source,
    opts: &LoadOptions,
    table: &TableName,
    counter: Arc<AtomicU64>,
) -> Result<(String, Option<Replay>)> {
    let (mut reader, _) = input::open(source, opts.encoding, counter)?;
    let mut sample = Vec::with_capacity(1 << 20);
    reader
        .by_ref()
        .take(1 << 20)
        .read_to_end(&mut sample)
        .map_err(|e| Error::io(format!("cannot read {}", source.name()), e))?;
    // Keep whole records only: cut after the last line end.
    let cut = if sample.len() == 1 << 20 {
        sample
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(sample.len(), |i| i + 1)
    } else {
        sample.len()
    };
    let ddl = infer_ddl(&sample[..cut], source, opts, table)?;
    let replay = match source {
        Source::Stdin => Some((sample, reader)),
        Source::File(_) => None,
    };
    Ok((ddl, replay))
}

/// The `CREATE TABLE` inferred from the first MiB of `source` for `table`
/// (`pgbulk infer`).
pub fn infer_source(source: &Source, opts: &LoadOptions, table: &TableName) -> Result<String> {
    infer_from(source, opts, table, Arc::default()).map(|(ddl, _)| ddl)
}

/// The `CREATE TABLE` inferred from the start of an input.
pub fn infer_ddl(
    bytes: &[u8],
    source: &Source,
    opts: &LoadOptions,
    table: &TableName,
) -> Result<String> {
    let name = source.name();
    let mut reader = csv::Reader::new(bytes, opts.dialect.clone());
    reader
        .skip_lines(opts.skip_lines)
        .map_err(|e| csv_error(&name, e))?;
    let mut scratch = String::new();
    let mut decode = |b: &[u8], line: u64, field: usize| -> Result<String> {
        input::decode_field(b, input::field_encoding(opts.encoding), &mut scratch)
            .map(str::to_owned)
            .map_err(|at| {
                Error::new(
                    ErrorKind::Data,
                    format!(
                        "{name}:{line}:{}: undecodable byte sequence for encoding {} at byte {at} of the field",
                        field + 1,
                        opts.encoding.name()
                    ),
                )
            })
    };
    let mut names: Option<Vec<String>> = opts.columns.clone();
    if opts.header {
        let header = reader
            .read_record()
            .map_err(|e| csv_error(&name, e))?
            .ok_or_else(|| empty_file(&name))?;
        let line = header.line;
        let fields: Vec<String> = (0..header.len())
            .map(|i| decode(header.raw_field(i), line, i))
            .collect::<Result<_>>()?;
        if names.is_none() {
            names = Some(fields);
        }
    }
    let mut inference: Option<Inference> = names.as_ref().map(|n| Inference::new(n));
    let mut fields: Vec<Option<String>> = Vec::new();
    loop {
        let record = match reader.read_record() {
            Ok(Some(r)) => r,
            Ok(None) | Err(CsvError::UnclosedQuote { .. }) => break,
            Err(e) => return Err(csv_error(&name, e)),
        };
        let line = record.line;
        fields.clear();
        for i in 0..record.len() {
            fields.push(record.get(i).map(|b| decode(b, line, i)).transpose()?);
        }
        let inf = inference.get_or_insert_with(|| {
            Inference::new(
                &(1..=fields.len())
                    .map(|i| format!("column{i}"))
                    .collect::<Vec<_>>(),
            )
        });
        inf.add_row(&fields.iter().map(Option::as_deref).collect::<Vec<_>>());
    }
    let inference = inference.ok_or_else(|| empty_file(&name))?;
    let columns = inference.columns();
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.clone()) {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{name}: two columns are both called \"{}\" (after normalising the header)",
                    c.name
                ),
            ));
        }
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
