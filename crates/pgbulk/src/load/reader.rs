//! Reading the inputs for the batches of a load: one shared reader per
//! stream, handed out batch by batch, with bad rows rejected or failing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::direct;
use super::sample::Replay;
use super::{LoadOptions, Progress, csv_error, empty_file, match_column};
use crate::catalog::TableFacts;
use crate::codec::shorten;
use crate::csv::{self, CsvError};
use crate::error::{Error, ErrorKind, Location, Result};
use crate::ingest::{Batch, BatchWatermark, RowFailure, Rows, StagedRejection, TextRow, TextRows};
use crate::input::{self, Source};
use crate::schema::TableName;

/// Where a load stands, stored with each committed batch: input file, byte
/// offset in it (after decompression) and line, records of the inputs read
/// by committed batches, the lengths of the reject file and its log at that
/// commit, and the end of the stream's part of the input (one of two
/// halves).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Position {
    /// The input (index in the load's inputs) to go on with.
    pub file: usize,
    /// Its byte offset (after decompression).
    pub offset: u64,
    /// Its line there.
    pub line: u64,
    /// Records read by committed batches (loaded or rejected).
    pub rows: u64,
    /// Bytes of the reject file then.
    pub rejects: u64,
    /// Bytes of the reject log then.
    pub rejects_log: u64,
    /// Where the stream's part of the input ends (`None`: at its end).
    pub limit: Option<u64>,
    /// The input read last (for `pgbulk status`; not used to resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Every input was read to its end (for `pgbulk status`).
    pub complete: bool,
    /// The ledger name of the same load by its inputs' paths, sizes and
    /// modification times (not content): an unfinished run is found by it
    /// after a file was corrected in place keeping all three.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_key: Option<String>,
    /// The ledger name of the same load of one file by its path alone:
    /// when the file grows, the next run finds by it the run that loaded
    /// the file as it was (see [`InputEnd`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_only: Option<String>,
    /// Where the load's one file ended, once read to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<InputEnd>,
    /// The ledger key of the completed run this one goes on from (its
    /// file grew since): removed once this one has read everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grew_from: Option<String>,
}

/// A file read to its end by a completed load: its byte offset and line
/// there, and its identity then. A later run of the same load, finding the
/// file longer and its first `size` bytes with this hash, reads only what
/// was appended.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct InputEnd {
    pub offset: u64,
    pub line: u64,
    pub size: u64,
    pub xxh3: String,
}

impl Position {
    /// The position stored in a ledger row, if it reads as one.
    pub(super) fn from_state(state: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(state.clone()).ok()
    }
}

/// The reject file and its log, and the bytes written to each.
pub(super) struct Rejects {
    pub(super) data: BufWriter<File>,
    pub(super) log: BufWriter<File>,
    pub(super) data_len: u64,
    pub(super) log_len: u64,
}

impl Rejects {
    /// A fresh reject file (and log) at `path`; or, when a load resumes,
    /// the existing ones cut back to the lengths they had when its last
    /// batch committed (the rows rejected by the batch that rolled back are
    /// read, and rejected, again) and appended to.
    ///
    /// The files hold rows of the input: they are created readable by the
    /// owner only, and a path that is a symbolic link is refused rather
    /// than followed (it could point at a file to overwrite).
    pub(super) fn open(path: &std::path::Path, resume: Option<(u64, u64)>) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |p: &std::path::Path, keep: Option<u64>| -> Result<(BufWriter<File>, u64)> {
            let err = |e: std::io::Error| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    return Error::new(
                        ErrorKind::Config,
                        format!(
                            "{} is a symbolic link; pgbulk does not write reject files through links (name the file itself)",
                            p.display()
                        ),
                    );
                }
                Error::io(format!("cannot open {}", p.display()), e)
            };
            let mut file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)
                .map_err(err)?;
            // A fresh run starts a fresh file; a resumed one keeps what was
            // there at its last commit.
            let len = keep.unwrap_or(0).min(file.metadata().map_err(err)?.len());
            file.set_len(len).map_err(err)?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(len)).map_err(err)?;
            let len = file.metadata().map_err(err)?.len();
            Ok((BufWriter::new(file), len))
        };
        let mut log_path = path.as_os_str().to_owned();
        log_path.push(".log");
        let (data, data_len) = open(path, resume.map(|r| r.0))?;
        let (log, log_len) = open(std::path::Path::new(&log_path), resume.map(|r| r.1))?;
        Ok(Self {
            data,
            log,
            data_len,
            log_len,
        })
    }

    fn write(&mut self, raw: &[u8], reason: &str) -> Result<()> {
        let line = format!("{reason}\n");
        self.data
            .write_all(raw)
            .and_then(|()| self.log.write_all(line.as_bytes()))
            .and_then(|()| self.data.flush())
            .and_then(|()| self.log.flush())
            .map_err(|e| Error::io("cannot write the reject file", e))?;
        self.data_len += raw.len() as u64;
        self.log_len += line.len() as u64;
        Ok(())
    }
}

/// The reading state shared by the batches of one load.
pub(super) struct Shared {
    pub(super) opts: LoadOptions,
    pub(super) table: TableName,
    pub(super) facts: TableFacts,
    pub(super) sources: Vec<Source>,
    pub(super) identities: Option<Vec<Option<serde_json::Value>>>,
    pub(super) file: usize,
    /// Where to start in `file` when it is opened (resume, second half).
    pub(super) resume_at: Option<Position>,
    /// Where to stop in the (single) input: the first half's end.
    pub(super) limit: Option<u64>,
    /// Bytes before `resume_at` an earlier run loaded (counted as progress
    /// when the input is opened there).
    pub(super) credit: u64,
    pub(super) reader: Option<csv::Reader<Box<dyn Read + Send>>>,
    /// The table columns the current file's fields fill.
    pub(super) file_columns: Vec<String>,
    /// For each field of the current file: its position in `file_columns`,
    /// or `None` when skipped (`--ignore-extra`).
    pub(super) mapping: Vec<Option<usize>>,
    pub(super) fields_expected: usize,
    /// Standard input read for inference, replayed for the load.
    pub(super) sample: Option<Replay>,
    pub(super) rows_before: u64,
    /// Records read so far in this run (loaded or rejected).
    pub(super) rows_in_batches: u64,
    pub(super) rejects: Option<Arc<Mutex<Rejects>>>,
    /// Rows rejected by every stream of the load.
    pub(super) rejected: Arc<AtomicU64>,
    pub(super) progress: Arc<Progress>,
    pub(super) scratch: String,
    /// The raw bytes and line of the row just read (for rejects).
    pub(super) raw: Vec<u8>,
    pub(super) line: u64,
    /// The current input's name.
    pub(super) name: String,
    /// See [`Position::path_key`].
    pub(super) path_key: Option<String>,
    /// See [`Position::path_only`].
    pub(super) path_only: Option<String>,
    /// Where the last input read to its end ended: its offset and line.
    pub(super) ended: Option<(u64, u64)>,
    /// See [`Position::grew_from`].
    pub(super) grew_from: Option<String>,
    /// Whether this run created the table from inferred types (a value
    /// that does not fit then suggests `--type`).
    pub(super) inferred: bool,
}

impl Shared {
    /// The current input's name (kept, not rebuilt per row).
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Whether `column` of the table is `text`: a value it refuses is no
    /// wrongly inferred type (`--type COL=text` would not help).
    fn is_text(&self, column: &str) -> bool {
        self.facts
            .columns
            .iter()
            .any(|c| c.name == column && c.type_name == "text")
    }

    /// For `column`, when this run inferred its type (no `--type` set
    /// it): the type, whose values are held to what inference would have
    /// given it (see [`crate::infer::dropped_by`]).
    fn guard(&self, column: &str) -> Option<String> {
        if !self.inferred
            || self
                .opts
                .types
                .iter()
                .any(|(c, _)| c == column || crate::infer::normalize_name(c) == column)
        {
            return None;
        }
        let column = self.facts.columns.iter().find(|c| c.name == column)?;
        crate::infer::may_drop(&column.type_name).then(|| column.type_name.clone())
    }

    /// Whether an empty field loads as NULL into `column` (see
    /// [`crate::infer::empty_is_null`]); not into a NOT NULL one, whose
    /// error then names the empty value.
    fn empty_is_null(&self, column: &str) -> bool {
        self.facts
            .columns
            .iter()
            .find(|c| c.name == column)
            .is_some_and(|c| !c.not_null && crate::infer::empty_is_null(c.type_oid, &c.type_name))
    }

    /// Fails (or sets aside) the row whose `value` of `column` (input
    /// field `field`, 1-based) its column of inferred type would store
    /// without `what` (see [`crate::infer::dropped_by`]).
    fn dropping(&mut self, column: &str, field: usize, value: &str, what: &str) -> Result<()> {
        let ty = self
            .facts
            .columns
            .iter()
            .find(|c| c.name == column)
            .map_or("its type", |c| c.type_name.as_str());
        let message = format!(
            "{}: column \"{column}\": value \"{}\": {ty} would drop {what}{}",
            self.place(Some(field)),
            shorten(value),
            self.inferred_hint(column, Some(value))
        );
        let error = self
            .row_error(message, Some(field))
            .for_column(column)
            .with_value(Some(value));
        self.bad_row(error)
    }

    /// The hint for a value an inferred column refused: the `--type` that
    /// takes it (the next wider inferred type, else text), or reading every
    /// row to infer; none for a column of text or a table not inferred.
    fn inferred_hint(&self, column: &str, value: Option<&str>) -> String {
        if !self.inferred || self.is_text(column) {
            return String::new();
        }
        let wider = match (value, self.facts.columns.iter().find(|c| c.name == column)) {
            (Some(v), Some(c)) => crate::infer::wider_type(&c.type_name, v),
            _ => "text",
        };
        let flag = format!("{column}={wider}");
        let flag = if flag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | '.'))
        {
            flag
        } else {
            crate::schema::quote_literal(&flag)
        };
        format!(
            " (the type was inferred from a sample of the input; --type {flag} or --sample-all)"
        )
    }

    /// Where the row just read is, for messages: `FILE:LINE`, then
    /// `:FIELD` when given; only the inputs' label when they have one.
    fn place(&self, field: Option<usize>) -> String {
        match (&self.opts.input_label, field) {
            (Some(label), _) => label.clone(),
            (None, Some(field)) => format!("{}:{}:{field}", self.name, self.line),
            (None, None) => format!("{}:{}", self.name, self.line),
        }
    }

    /// Opens the current input, reads its header and maps its columns.
    fn open(&mut self) -> Result<()> {
        let source = self.sources[self.file].clone();
        let name = source.name();
        self.name = name.clone();
        let counted_before = self.progress.bytes_read.load(Ordering::Relaxed);
        let stream: Box<dyn Read + Send> = match self.sample.take() {
            // Standard input was sampled: read the sample again, then the rest.
            Some((sample, rest)) if self.file == 0 => {
                Box::new(std::io::Cursor::new(sample).chain(rest))
            }
            _ => {
                input::open(
                    &source,
                    self.opts.encoding,
                    self.progress.bytes_read.clone(),
                )?
                .0
            }
        };
        let mut reader = csv::Reader::new(stream, self.opts.dialect.clone());
        reader.set_max_field(self.opts.max_field_size);
        reader.keep_raw(self.opts.reject_file.is_some());
        reader
            .skip_lines(self.opts.skip_lines)
            .map_err(|e| csv_error(&name, e))?;
        let header: Option<Vec<String>> = if self.opts.header {
            let record = reader
                .read_record()
                .map_err(|e| csv_error(&name, e))?
                .ok_or_else(|| empty_file(&name))?;
            let line = record.line;
            let mut fields = Vec::with_capacity(record.len());
            for i in 0..record.len() {
                let encoding = input::field_encoding(self.opts.encoding);
                let text = input::decode_field(record.raw_field(i), encoding, &mut self.scratch)
                    .map_err(|at| {
                        Error::new(
                            ErrorKind::Data,
                            format!(
                                "{name}:{line}:{}: the header: {}",
                                i + 1,
                                input::undecodable(record.raw_field(i), at, encoding)
                            ),
                        )
                    })?;
                fields.push(text.trim().to_owned());
            }
            Some(fields)
        } else {
            None
        };
        // An input read as CSV without a format or NULL string asked for
        // fails at a `\N` field: PostgreSQL's text format (tab-separated,
        // not detected from the sample) or MySQL's NULL.
        reader.refuse_text_null(self.opts.detect_format);
        let names = match (&self.opts.columns, header) {
            (Some(cols), _) => cols.clone(),
            (None, Some(h)) => h,
            (None, None) => self
                .facts
                .columns
                .iter()
                .filter(|c| c.generated.is_none())
                .map(|c| c.name.clone())
                .collect(),
        };
        self.map_columns(&name, &names)?;
        if let Some(at) = self
            .resume_at
            .take()
            .filter(|p| p.file == self.file && p.offset > 0)
        {
            let counter = self.progress.bytes_read.clone();
            match input::open_at(&source, self.opts.encoding, counter, at.offset)? {
                Some(stream) => {
                    // The header was read from a reader of its own: only
                    // the bytes from the offset on count as progress, plus
                    // what an earlier run loaded.
                    let header_bytes =
                        self.progress.bytes_read.load(Ordering::Relaxed) - counted_before;
                    self.progress
                        .bytes_read
                        .fetch_sub(header_bytes, Ordering::Relaxed);
                    self.progress
                        .bytes_read
                        .fetch_add(self.credit, Ordering::Relaxed);
                    reader = csv::Reader::starting_at(
                        stream,
                        self.opts.dialect.clone(),
                        at.offset,
                        at.line,
                    );
                    reader.set_max_field(self.opts.max_field_size);
                    reader.keep_raw(self.opts.reject_file.is_some());
                }
                None => reader
                    .skip_to(at.offset, at.line)
                    .map_err(|e| csv_error(&name, e))?,
            }
        }
        // One field per record: a blank line is that field, empty (NULL
        // unless the NULL string is another), as COPY reads it and as
        // `COPY ... TO` writes a NULL; with more, COPY would refuse it
        // and it is skipped.
        reader.blank_lines_are_records(names.len() == 1);
        self.reader = Some(reader);
        Ok(())
    }

    /// Matches the file's column names to the table's: exactly, then
    /// ignoring case, then as pgbulk normalises names.
    fn map_columns(&mut self, file: &str, names: &[String]) -> Result<()> {
        let line = self.opts.skip_lines + 1;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            // Blank fields are told apart by their position.
            let named = if n.trim().is_empty() {
                crate::infer::column_name(n, i)
            } else {
                n.clone()
            };
            if let Some(first) = seen.insert(named, i) {
                let n = shorten(n);
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "{file}:{line}: duplicate column name \"{n}\" in the header (fields {} and {}); --columns A,B,C names the fields instead of the header",
                        first + 1,
                        i + 1
                    ),
                ));
            }
        }
        let table_columns: Vec<&str> = self
            .facts
            .columns
            .iter()
            .filter(|c| c.generated.is_none())
            .map(|c| c.name.as_str())
            .collect();
        let facts = &self.facts;
        let find = |n: &str| match_column(facts, n);
        let mut file_columns: Vec<String> = Vec::new();
        let mut mapping = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            let shown = shorten(n);
            // A blank field is named by its position where pgbulk created
            // the table ("column" before it numbered them).
            let found = if n.trim().is_empty() {
                find(&crate::infer::column_name(n, i)).or_else(|| find(n))
            } else {
                find(n)
            };
            match found.as_deref() {
                Some(c) if file_columns.iter().any(|f| f == c) => {
                    return Err(Error::new(
                        ErrorKind::Data,
                        format!(
                            "{file}:{line}: fields {} (\"{shown}\") and another both match column \"{c}\" of {}",
                            i + 1,
                            self.table
                        ),
                    ));
                }
                Some(c) => {
                    mapping.push(Some(file_columns.len()));
                    file_columns.push(c.to_owned());
                }
                None if self.opts.ignore_extra => mapping.push(None),
                None => {
                    // A generated column is computed, never written.
                    let normalized = crate::infer::normalize_name(n);
                    let what = match facts.columns.iter().find(|c| {
                        c.generated.is_some()
                            && (c.name.eq_ignore_ascii_case(n) || c.name == normalized)
                    }) {
                        Some(c) => format!(
                            "is the generated column \"{}\" of {}, whose values the server computes",
                            c.name, self.table
                        ),
                        None => format!(
                            "is not a column of {} (it has: {})",
                            self.table,
                            table_columns.join(", ")
                        ),
                    };
                    return Err(Error::new(
                        ErrorKind::Data,
                        format!(
                            "{file}:{line}: column \"{shown}\" (field {}) {what}; --ignore-extra skips it",
                            i + 1,
                        ),
                    ));
                }
            }
        }
        if file_columns.is_empty() {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{file}:{line}: no column of the input matches a column of {} (the input has: {}; the table has: {}); is the delimiter right?",
                    self.table,
                    names
                        .iter()
                        .map(|n| format!("\"{}\"", shorten(n)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    table_columns.join(", ")
                ),
            ));
        }
        for c in &self.facts.columns {
            let required =
                c.not_null && c.default.is_none() && c.identity.is_none() && c.generated.is_none();
            if required && !file_columns.contains(&c.name) {
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "{file}: column \"{}\" of {} is NOT NULL without a default, and the input has no such column",
                        c.name, self.table
                    ),
                ));
            }
        }
        self.fields_expected = names.len();
        self.file_columns = file_columns;
        self.mapping = mapping;
        Ok(())
    }

    /// A bad row of the current input at the current line (or a bad value
    /// in its `field`, 1-based), as data.
    fn row_error(&self, message: String, field: Option<usize>) -> Error {
        let error = Error::new(ErrorKind::Data, message).in_table(&self.table);
        // Inputs with a label of their own (sync's spool) have no file and
        // line to give.
        if self.opts.input_label.is_some() {
            return error;
        }
        error.at(Location {
            input: self.name.clone(),
            line: self.line,
            field,
        })
    }

    /// Handles a bad row: rejected while under the limit, else the error.
    fn bad_row(&mut self, error: Error) -> Result<()> {
        let counted = self
            .rejected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.opts.max_errors).then_some(n + 1)
            })
            .is_ok();
        if counted {
            self.progress.rows_rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(rejects) = &self.rejects {
                rejects
                    .lock()
                    .map_err(|_| Error::new(ErrorKind::Io, "reject file poisoned"))?
                    .write(&self.raw, error.message())?;
            }
            return Ok(());
        }
        if self.opts.max_errors > 0 {
            return Err(error.append(&format!(
                " (more than --max-errors {} bad rows)",
                self.opts.max_errors
            )));
        }
        Err(error)
    }

    /// The position after the rows read so far (the next input's start
    /// once the current one is exhausted).
    fn position(&mut self) -> Option<serde_json::Value> {
        let limit = self.limit;
        let exhausted = self
            .reader
            .as_mut()
            .is_none_or(|r| limit.is_some_and(|l| r.offset() >= l) || r.at_end().unwrap_or(false));
        if exhausted {
            self.note_end();
        }
        let (file, offset, line) = match (&self.reader, exhausted) {
            (_, true) => (self.file + usize::from(self.reader.is_some()), 0, 1),
            (Some(r), false) => (self.file, r.offset(), r.line()),
            (None, false) => (self.file, 0, 1),
        };
        let (rejects, rejects_log) = self
            .rejects
            .as_ref()
            .and_then(|r| r.lock().ok().map(|r| (r.data_len, r.log_len)))
            .unwrap_or((0, 0));
        self.identities.as_ref()?;
        serde_json::to_value(Position {
            file,
            offset,
            line,
            rows: self.rows_before + self.rows_in_batches,
            rejects,
            rejects_log,
            limit: self.limit,
            input: self
                .sources
                .get(self.file.min(self.sources.len().saturating_sub(1)))
                .map(Source::name),
            complete: file >= self.sources.len(),
            path_key: self.path_key.clone(),
            path_only: self.path_only.clone(),
            end: self.input_end(file),
            grew_from: self.grew_from.clone(),
        })
        .ok()
    }

    /// Notes where the current input ended, before it is closed: the end
    /// of the whole file (not of a first half).
    fn note_end(&mut self) {
        if let (None, Some(r)) = (self.limit, &self.reader) {
            self.ended = Some((r.offset(), r.line()));
        }
    }

    /// The end of the load's one file, once `file` (the position's input)
    /// is past it: where it ended and its identity.
    fn input_end(&self, file: usize) -> Option<InputEnd> {
        let (offset, line) = self.ended?;
        let identity = self.identities.as_ref()?.first()?.as_ref()?;
        if self.sources.len() != 1 || file == 0 {
            return None;
        }
        Some(InputEnd {
            offset,
            line,
            size: identity.get("size")?.as_u64()?,
            xxh3: identity.get("xxh3")?.as_str()?.to_owned(),
        })
    }
}

/// The next batch, or `None` when every input is read.
pub(super) fn next_batch(shared: &Arc<Mutex<Shared>>, batch_rows: u64) -> Result<Option<Batch>> {
    let mut s = shared
        .lock()
        .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
    if exhausted(&mut s)? {
        return Ok(None);
    }
    let name = s.name();
    let table = s.table.to_string();
    let columns = s.file_columns.clone();
    let guards: Vec<Option<String>> = columns.iter().map(|c| s.guard(c)).collect();
    let empty_nulls: Vec<bool> = columns.iter().map(|c| s.empty_is_null(c)).collect();
    let progress = s.progress.clone();
    drop(s);
    Ok(Some(Batch {
        high_watermark: BatchWatermark::Value(None),
        metadata: serde_json::json!({ "source": name }),
        rows: Rows::Text(Box::new(CsvRows {
            shared: shared.clone(),
            table,
            guarded: guards.iter().any(Option::is_some),
            guards,
            empty_nulls,
            columns,
            left: batch_rows,
            field_of: Vec::new(),
            spans: Vec::new(),
            spare: Vec::new(),
            progress,
            unpublished: 0,
        })),
        resume: None,
    }))
}

/// Whether every input (up to the stream's limit) has been read: moves
/// past inputs read to their end, opening the next one.
pub(super) fn exhausted(s: &mut Shared) -> Result<bool> {
    loop {
        if s.file >= s.sources.len() {
            return Ok(true);
        }
        if s.reader.is_none() {
            s.open()?;
        }
        let name = s.name();
        let limit = s.limit;
        let at_end = s
            .reader
            .as_mut()
            .map_or(Ok(true), |r| {
                if limit.is_some_and(|l| r.offset() >= l) {
                    Ok(true)
                } else {
                    r.at_end()
                }
            })
            .map_err(|e| csv_error(&name, e))?;
        if !at_end {
            return Ok(false);
        }
        s.note_end();
        s.reader = None;
        s.file += 1;
    }
}

/// One batch's rows, read from the shared reader.
pub(super) struct CsvRows {
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) table: String,
    pub(super) columns: Vec<String>,
    /// Per column: its type, when this run inferred it ([`Shared::guard`]).
    pub(super) guards: Vec<Option<String>>,
    /// Whether any column has a guard.
    pub(super) guarded: bool,
    /// Per column: an empty field is NULL ([`Shared::empty_is_null`]).
    pub(super) empty_nulls: Vec<bool>,
    pub(super) left: u64,
    /// For the row just read: the file field of each projected column.
    pub(super) field_of: Vec<usize>,
    /// For the row just read: where each projected column's bytes are.
    pub(super) spans: Vec<Option<(usize, usize)>>,
    /// A buffer for the reader's next record (the row's previous one).
    pub(super) spare: Vec<u8>,
    /// The load's progress, and the records read and not yet counted in
    /// it: counted every [`PUBLISH_EVERY`] records and when the batch's
    /// rows end, not per record (the counter is shared by the streams).
    pub(super) progress: Arc<Progress>,
    pub(super) unpublished: u64,
}

/// Records read between updates of the shared progress counter.
const PUBLISH_EVERY: u64 = 4096;

impl CsvRows {
    fn publish(&mut self) {
        if self.unpublished > 0 {
            self.progress
                .rows_read
                .fetch_add(self.unpublished, Ordering::Relaxed);
            self.unpublished = 0;
        }
    }

    /// Reads the next record into `row` (the body of
    /// [`TextRows::next_row`], which counts the records it read).
    fn read_row(&mut self, row: &mut TextRow) -> Result<bool> {
        let mut guard = self
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        let s = &mut *guard;
        'records: loop {
            if s.progress.is_interrupted() {
                return Err(Error::new(ErrorKind::Io, "interrupted"));
            }
            if self.left == 0 {
                return Ok(false);
            }
            let name = s.name.as_str();
            let Some(reader) = s.reader.as_mut() else {
                return Ok(false);
            };
            if s.limit.is_some_and(|limit| reader.offset() >= limit) {
                return Ok(false);
            }
            let record = match reader.read_record() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    if reader.ended_by_marker() && !reader.at_end().unwrap_or(true) {
                        tracing::warn!(
                            "{name}:{}: \\. ends the data, as COPY reads it: the lines after it are not loaded",
                            reader.line() - 1
                        );
                    }
                    // The file is done; the next batch opens the next one.
                    // A batch does not span files whose columns differ.
                    s.note_end();
                    s.reader = None;
                    s.file += 1;
                    if s.file < s.sources.len() && s.sources.len() > 1 {
                        s.open()?;
                        if s.file_columns != self.columns {
                            if s.opts.single_transaction {
                                return Err(Error::new(
                                    ErrorKind::Data,
                                    format!(
                                        "{}: its columns differ from the previous input's; they cannot load in one transaction",
                                        s.name()
                                    ),
                                ));
                            }
                            return Ok(false);
                        }
                        continue;
                    }
                    return Ok(false);
                }
                Err(CsvError::UnclosedQuote { line }) => {
                    s.line = line;
                    s.raw = reader.take_raw();
                    self.unpublished += 1;
                    s.rows_in_batches += 1;
                    let message = format!(
                        "{name}:{line}: unterminated quoted field (a quote opened on line {line} is never closed)"
                    );
                    s.bad_row(s.row_error(message, None))?;
                    continue;
                }
                Err(e) => return Err(csv_error(name, e)),
            };
            self.unpublished += 1;
            s.rows_in_batches += 1;
            let line = record.line;
            s.line = line;
            let fields = record.len();
            self.field_of.clear();
            self.spans.clear();
            for (i, target) in s.mapping.iter().enumerate() {
                if target.is_some() {
                    let empty_null = self.empty_nulls.get(self.field_of.len()) == Some(&true);
                    self.field_of.push(i);
                    self.spans
                        .push(record.span(i).filter(|(from, to)| from < to || !empty_null));
                }
            }
            if s.opts.reject_file.is_some() {
                reader.exchange_raw(&mut s.raw);
            }
            if fields != s.fields_expected {
                let message = format!(
                    "{name}:{line}: expected {} fields, found {}",
                    s.fields_expected, fields
                );
                s.bad_row(s.row_error(message, None))?;
                continue;
            }
            // UTF-8 fields move into the row without a copy (a huge field
            // is then in memory once, not twice).
            if input::field_encoding(s.opts.encoding) == encoding_rs::UTF_8 {
                let mut data = std::mem::take(&mut self.spare);
                reader.exchange_data(&mut data);
                let data = match String::from_utf8(data) {
                    Ok(text) => row.set(text, &self.spans),
                    Err(e) => Err(e.into_bytes()),
                };
                match data {
                    Ok(previous) => {
                        self.spare = previous;
                        if let Some((k, value, what)) = dropped(self.guarded, &self.guards, row) {
                            let value = value.to_owned();
                            s.dropping(&self.columns[k], self.field_of[k] + 1, &value, what)?;
                            continue 'records;
                        }
                        self.left -= 1;
                        return Ok(true);
                    }
                    Err(mut data) => {
                        // Not valid UTF-8: the fields are read one by one
                        // below, naming the bad one.
                        reader.exchange_data(&mut data);
                        self.spare = data;
                    }
                }
            }
            let record = reader.current();
            row.clear();
            self.field_of.clear();
            for (i, target) in s.mapping.iter().enumerate() {
                if target.is_none() {
                    continue;
                }
                let empty_null = self.empty_nulls.get(self.field_of.len()) == Some(&true);
                self.field_of.push(i);
                match record.get(i) {
                    None => row.push(None),
                    Some(b"") if empty_null => row.push(None),
                    Some(bytes) => {
                        let encoding = input::field_encoding(s.opts.encoding);
                        match input::decode_field(bytes, encoding, &mut s.scratch) {
                            Ok(text) => row.push(Some(text)),
                            Err(at) => {
                                // (`Shared::place`, apart: the reader is borrowed.)
                                let place = match &s.opts.input_label {
                                    Some(label) => label.clone(),
                                    None => format!("{name}:{line}:{}", i + 1),
                                };
                                let message = format!(
                                    "{place}: column \"{}\": {}",
                                    self.columns[self.field_of.len() - 1],
                                    input::undecodable(bytes, at, encoding)
                                );
                                let error = s
                                    .row_error(message, Some(i + 1))
                                    .for_column(&self.columns[self.field_of.len() - 1]);
                                s.bad_row(error)?;
                                continue 'records;
                            }
                        }
                    }
                }
            }
            if let Some((k, value, what)) = dropped(self.guarded, &self.guards, row) {
                let value = value.to_owned();
                s.dropping(&self.columns[k], self.field_of[k] + 1, &value, what)?;
                continue 'records;
            }
            self.left -= 1;
            return Ok(true);
        }
    }
}

/// The first value of `row` its column of inferred type would store only
/// in part (see [`Shared::guard`]): its position in the row, the value
/// and what would be dropped. Only looked for when `guarded`.
fn dropped<'r>(
    guarded: bool,
    guards: &[Option<String>],
    row: &'r TextRow,
) -> Option<(usize, &'r str, &'static str)> {
    if !guarded {
        return None;
    }
    guards.iter().enumerate().find_map(|(k, ty)| {
        let value = row.get(k)?;
        Some((k, value, crate::infer::dropped_by(ty.as_deref()?, value)?))
    })
}

impl Drop for CsvRows {
    fn drop(&mut self) {
        self.publish();
    }
}

impl TextRows for CsvRows {
    fn table(&self) -> &str {
        &self.table
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut TextRow) -> Result<bool> {
        let more = self.read_row(row);
        if !matches!(more, Ok(true)) || self.unpublished >= PUBLISH_EVERY {
            self.publish();
        }
        more
    }

    fn encode_rows(
        &mut self,
        columns: &[crate::catalog::Column],
        out: &mut Vec<u8>,
        until: usize,
    ) -> Result<u64> {
        let records = {
            let mut guard = self
                .shared
                .lock()
                .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
            let s = &mut *guard;
            // Rejected rows keep their raw bytes: those rows are read one
            // by one.
            if s.opts.reject_file.is_some() || s.progress.is_interrupted() {
                return Ok(0);
            }
            let Some(reader) = s.reader.as_mut().filter(|r| !r.keeps_raw()) else {
                return Ok(0);
            };
            // The row's fields are the mapped ones, in the input's order.
            let mapped = s.mapping.iter().flatten().count();
            if mapped != columns.len() || s.mapping.len() != s.fields_expected {
                return Ok(0);
            }
            let mut next = columns.iter();
            let fields = s
                .mapping
                .iter()
                .map(|to| if to.is_some() { next.next() } else { None })
                .collect();
            let mut next_empty = self.empty_nulls.iter();
            let empty_nulls = s
                .mapping
                .iter()
                .map(|to| to.and_then(|_| next_empty.next()) == Some(&true))
                .collect();
            let mut next_guard = self.guards.iter();
            let guards = if self.guarded {
                s.mapping
                    .iter()
                    .map(|to| {
                        to.and_then(|_| next_guard.next())
                            .and_then(Option::as_deref)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let dialect = reader.dialect();
            let plan = direct::Plan {
                delimiter: dialect.delimiter,
                quote: if dialect.text { b'\\' } else { dialect.quote },
                escape: dialect.escape,
                null: &dialect.null,
                text: dialect.text,
                refuse_text_null: reader.refuses_text_null(),
                guards,
                empty_nulls,
                fields,
                max_field: reader.max_field(),
                // Other encodings are decoded field by field, ASCII as it is.
                ascii_only: input::field_encoding(s.opts.encoding) != encoding_rs::UTF_8,
            };
            let starts_before = s.limit.map_or(usize::MAX, |limit| {
                usize::try_from(limit.saturating_sub(reader.offset())).unwrap_or(usize::MAX)
            });
            let run = direct::encode(
                &plan,
                reader.buffered(),
                out,
                until,
                self.left,
                starts_before,
            );
            reader.consume_lines(run.consumed, run.records);
            if run.records > 0 {
                // The line the last record was on.
                s.line = reader.line() - 1;
                s.rows_in_batches += run.records;
            }
            run.records
        };
        self.left -= records;
        self.unpublished += records;
        if self.unpublished >= PUBLISH_EVERY {
            self.publish();
        }
        Ok(records)
    }

    fn reject(&mut self, failure: &RowFailure<'_>) -> Result<()> {
        let mut s = self
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        let field = self
            .field_of
            .get(failure.field)
            .map_or(failure.field, |f| *f)
            + 1;
        let value = match failure.value {
            Some(v) if !failure.reason.contains(&format!("\"{}\"", shorten(v))) => {
                format!(" value \"{}\":", shorten(v))
            }
            None if !failure.reason.contains("NULL") => " NULL:".to_owned(),
            _ => String::new(),
        };
        let hint = match failure.value {
            Some(v) => s.inferred_hint(failure.column, Some(v)),
            None => String::new(),
        };
        let message = format!(
            "{}: column \"{}\":{value} {}{hint}",
            s.place(Some(field)),
            failure.column,
            failure.reason
        );
        let error = s
            .row_error(message, Some(field))
            .for_column(failure.column)
            .with_value(failure.value);
        s.bad_row(error)
    }

    fn resume(&self) -> Option<serde_json::Value> {
        self.shared.lock().ok()?.position()
    }

    fn location(&self) -> String {
        self.shared
            .lock()
            .map(|s| s.place(None))
            .unwrap_or_default()
    }

    fn raw(&self) -> Option<Vec<u8>> {
        let s = self.shared.lock().ok()?;
        s.opts.reject_file.is_some().then(|| s.raw.clone())
    }

    fn reject_staged(&mut self, rejected: &StagedRejection<'_>) -> Result<()> {
        let mut s = self
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "load state poisoned"))?;
        let value = shorten(rejected.value);
        let mention = if rejected.reason.contains(&value) {
            String::new()
        } else {
            format!(" value \"{value}\":")
        };
        // The field, when the row is from the input being read (its header
        // maps the columns).
        let field = rejected
            .location
            .strip_prefix(s.name.as_str())
            .filter(|rest| rest.starts_with(':'))
            .and_then(|_| {
                let c = s.file_columns.iter().position(|c| c == rejected.column)?;
                s.mapping.iter().position(|m| *m == Some(c))
            })
            .map(|f| format!(":{}", f + 1))
            .unwrap_or_default();
        let hint = s.inferred_hint(rejected.column, Some(rejected.value));
        let message = if rejected.column.is_empty() {
            // A constraint refused the row as a whole.
            format!("{}: {}", rejected.location, rejected.reason)
        } else {
            format!(
                "{}{field}: column \"{}\":{mention} {}{hint}",
                rejected.location, rejected.column, rejected.reason
            )
        };
        s.raw = rejected.raw.map(<[u8]>::to_vec).unwrap_or_default();
        let mut error = Error::new(ErrorKind::Data, message).in_table(&s.table);
        if let Some((input, line)) = rejected.location.rsplit_once(':') {
            if let Ok(line) = line.parse() {
                error = error.at(Location {
                    input: input.to_owned(),
                    line,
                    field: field.strip_prefix(':').and_then(|f| f.parse().ok()),
                });
            }
        }
        if !rejected.column.is_empty() {
            error = error
                .for_column(rejected.column)
                .with_value(Some(rejected.value));
        }
        if let Some(db) = rejected.server {
            error = error.with_source(db.clone());
        }
        s.bad_row(error)
    }
}
