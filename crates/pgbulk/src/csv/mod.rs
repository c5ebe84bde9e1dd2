//! A reader of PostgreSQL's `COPY` formats. CSV (`FORMAT csv`): any
//! single-byte delimiter, quote and escape; quoted fields spanning lines;
//! a quote anywhere in a field opens a quoted part of it (`a"b,c"d` is the
//! one field `ab,cd`); an unquoted empty field (or the NULL string, unquoted) is NULL while a
//! quoted one is a value; a UTF-8 BOM is ignored. It works on bytes (so any
//! ASCII-compatible encoding parses the same), tracks line numbers, and can
//! keep each record's raw bytes for reject files. Blank lines are skipped
//! (unless [`Reader::blank_lines_are_records`]).
//!
//! Text (`FORMAT text`, what `COPY ... TO` and `psql \copy ... to` write by
//! default, and MySQL's `SELECT ... INTO OUTFILE` alike): no quoting;
//! backslash escapes (`\t`, `\n`, `\\`, `\N` for NULL, octal `\123`,
//! hex `\x41`, a backslash before any other byte is that byte); a field
//! equal to the NULL string before its escapes are undone is NULL; a line
//! `\.` ends the data, and `\.` elsewhere is an error (as COPY has it);
//! a blank line is a record of one empty field.

use std::io::{self, Read};

/// How a file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    /// Field separator (default `,`).
    pub delimiter: u8,
    /// Quote character (default `"`).
    pub quote: u8,
    /// Escape inside quotes (default: the quote, doubled).
    pub escape: u8,
    /// An unquoted field equal to this is NULL. Default: the empty field.
    pub null: Vec<u8>,
    /// PostgreSQL's text format instead of CSV (`quote` and `escape` then
    /// unused).
    pub text: bool,
}

impl Dialect {
    /// One byte from its spelling on a command line: the character itself,
    /// or `\t` / `tab` for a tab.
    pub fn parse_byte(text: &str) -> Result<u8, String> {
        match text {
            "\\t" | "tab" | "\t" => Ok(b'\t'),
            t if t.len() == 1 => Ok(t.as_bytes()[0]),
            t => Err(format!(
                "must be a single one-byte character (or \\t for tab), not \"{t}\""
            )),
        }
    }

    /// Refuses the combinations COPY refuses: a delimiter, quote or escape
    /// that is a line end, a delimiter equal to the quote or escape, a NULL
    /// marker holding the delimiter or a line end.
    pub fn validate(&self) -> Result<(), String> {
        if self.text {
            if matches!(self.delimiter, b'\\' | b'\n' | b'\r')
                || self.delimiter.is_ascii_alphanumeric()
            {
                return Err(format!(
                    "the text format's delimiter cannot be {:?}",
                    char::from(self.delimiter)
                ));
            }
            if self.null.contains(&self.delimiter) {
                return Err("the NULL marker cannot contain the delimiter".to_owned());
            }
            if self.null.iter().any(|b| *b == b'\n' || *b == b'\r') {
                return Err("the NULL marker cannot contain a line end".to_owned());
            }
            return Ok(());
        }
        for (name, b) in [
            ("delimiter", self.delimiter),
            ("quote", self.quote),
            ("escape", self.escape),
        ] {
            if b == b'\n' || b == b'\r' {
                return Err(format!("the {name} cannot be a line end"));
            }
        }
        if self.delimiter == self.quote {
            return Err("the delimiter and the quote must differ".to_owned());
        }
        if self.delimiter == self.escape {
            return Err("the delimiter and the escape must differ".to_owned());
        }
        if self.null.contains(&self.delimiter) {
            return Err("the NULL marker cannot contain the delimiter".to_owned());
        }
        if self.null.iter().any(|b| *b == b'\n' || *b == b'\r') {
            return Err("the NULL marker cannot contain a line end".to_owned());
        }
        Ok(())
    }
}

impl Dialect {
    /// PostgreSQL's text format with `COPY`'s defaults: tab-separated,
    /// `\N` for NULL.
    pub fn postgres_text() -> Self {
        Self {
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            text: true,
            ..Self::default()
        }
    }
}

impl Default for Dialect {
    fn default() -> Self {
        Self {
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            null: Vec::new(),
            text: false,
        }
    }
}

/// A record could not be read.
#[derive(Debug)]
pub enum CsvError {
    /// The input ended inside a quoted field that starts on `line`.
    UnclosedQuote {
        /// Where the quoted field starts.
        line: u64,
    },
    /// A field grew past the limit ([`Reader::set_max_field`]); for a
    /// quoted one, most likely a quote that is never closed.
    FieldTooLong {
        /// Where the record starts.
        line: u64,
        /// The limit in bytes.
        limit: usize,
        /// Whether the field is quoted.
        quoted: bool,
    },
    /// An unquoted field is `\N`, PostgreSQL's text format's NULL, in an
    /// input read as CSV ([`Reader::refuse_text_null`]).
    TextFormatNull {
        /// Where the record starts.
        line: u64,
        /// The field (1-based).
        field: usize,
        /// The input is tab-separated (PostgreSQL's text format, else
        /// MySQL's `INTO OUTFILE` with another delimiter).
        tab: bool,
    },
    /// In the text format, `\.` (the end-of-data marker) not alone on its
    /// line.
    EndMarkerNotAlone {
        /// Where it is.
        line: u64,
    },
    /// Reading failed.
    Io(io::Error),
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnclosedQuote { line } => write!(
                f,
                "unterminated quoted field starting on line {line} (the file ends inside quotes)"
            ),
            Self::FieldTooLong {
                line,
                limit,
                quoted: true,
            } => write!(
                f,
                "a quoted field starting on line {line} is longer than {limit} bytes (--max-field-size); is its quote never closed?"
            ),
            Self::FieldTooLong { line, limit, .. } => write!(
                f,
                "a field on line {line} is longer than {limit} bytes (--max-field-size)"
            ),
            Self::TextFormatNull { line, field, tab } => {
                write!(f, "field {field} on line {line} is {}", text_null(*tab))
            }
            Self::EndMarkerNotAlone { line } => write!(f, "line {line}: {END_MARKER_NOT_ALONE}"),
            Self::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl std::error::Error for CsvError {}

/// One field: where it ends in the record's field buffer, and whether it
/// was quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    end: usize,
    quoted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StartField,
    Unquoted,
    Quoted,
    AfterQuote,
}

/// What [`CsvError::EndMarkerNotAlone`] says of its line.
pub const END_MARKER_NOT_ALONE: &str = "\\. (the text format's end-of-data marker) is not alone on its line, where COPY refuses it (PostgreSQL 17 and older end the data at one ending a line); a backslash that is data is written \\\\";

/// What [`CsvError::TextFormatNull`] says of its field, in a `tab`-separated
/// input or one of another delimiter.
pub fn text_null(tab: bool) -> &'static str {
    if tab {
        "\\N, the NULL of PostgreSQL's text format (what COPY TO writes), in a tab-separated input read as CSV, which would store it as the two characters \\N and keep every backslash escape; give --format text to read it as COPY reads it, or --format csv to keep \\N as text"
    } else {
        "\\N, how MySQL's SELECT ... INTO OUTFILE writes NULL, in an input read as CSV, which would store it as the two characters \\N; give --null '\\N' to read it as NULL (with --escape '\\' for MySQL's backslash before a quote), or --format csv to keep \\N as text"
    }
}

/// Reads records from a byte stream.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    dialect: Dialect,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Unescaped field bytes of the current record.
    data: Vec<u8>,
    fields: Vec<Field>,
    /// Raw bytes of the current record (when `keep_raw`).
    raw: Vec<u8>,
    keep_raw: bool,
    /// The line the next record starts on (1-based).
    line: u64,
    /// The line the current record started on.
    record_line: u64,
    /// Bytes consumed from the stream (position after the current record).
    offset: u64,
    bom_checked: bool,
    /// The longest field read, in bytes.
    max_field: usize,
    /// The text format's end marker (`\.`) was read: no more records.
    ended: bool,
    /// An unquoted `\N` field fails its record ([`Reader::refuse_text_null`]).
    refuse_text_null: bool,
    /// A blank CSV line is a record of one empty field, not skipped
    /// ([`Reader::blank_lines_are_records`]).
    blank_records: bool,
    /// The text format's NULL string has a backslash (but is not `\N`):
    /// raw bytes are kept to compare each field's with it, as COPY does
    /// before it undoes escapes.
    raw_null: bool,
}

/// The UTF-8 byte order mark, skipped at the start of an input.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A buffer grown past this by one record is replaced by a small one for
/// the next.
const OVERSIZED: usize = 8 << 20;

/// PostgreSQL's own limit on a field: 1 GB.
pub const MAX_FIELD: usize = (1 << 30) - 1;

/// A record just read: borrow its fields from the reader.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    data: &'a [u8],
    fields: &'a [Field],
    null: &'a [u8],
    /// The line the record starts on.
    pub line: u64,
    /// The record's bytes as they were in the input (empty unless the
    /// reader keeps them).
    pub raw: &'a [u8],
}

impl<'a> Record<'a> {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Field `i`'s bytes, or `None` when it is NULL (unquoted and equal to
    /// the NULL string).
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let f = self.fields.get(i)?;
        let start = if i == 0 { 0 } else { self.fields[i - 1].end };
        let bytes = &self.data[start..f.end];
        if !f.quoted && bytes == self.null {
            None
        } else {
            Some(bytes)
        }
    }

    /// Where field `i`'s bytes are in the record's data (see
    /// [`Reader::exchange_data`]), or `None` when it is NULL or absent.
    pub fn span(&self, i: usize) -> Option<(usize, usize)> {
        let f = self.fields.get(i)?;
        let start = if i == 0 { 0 } else { self.fields[i - 1].end };
        if !f.quoted && &self.data[start..f.end] == self.null {
            None
        } else {
            Some((start, f.end))
        }
    }

    /// All fields' bytes, one after the other.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Field `i`'s bytes whether or not it is NULL.
    pub fn raw_field(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { 0 } else { self.fields[i - 1].end };
        self.fields.get(i).map_or(&[], |f| &self.data[start..f.end])
    }
}

impl<R: Read> Reader<R> {
    /// A reader of `inner` in `dialect`.
    pub fn new(inner: R, dialect: Dialect) -> Self {
        let raw_null = dialect.text && dialect.null.contains(&b'\\') && dialect.null != b"\\N";
        Self {
            inner,
            dialect,
            buf: vec![0; 256 * 1024].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            data: Vec::with_capacity(1024),
            fields: Vec::with_capacity(64),
            raw: Vec::new(),
            keep_raw: false,
            line: 1,
            record_line: 1,
            offset: 0,
            bom_checked: false,
            max_field: MAX_FIELD,
            ended: false,
            refuse_text_null: false,
            blank_records: false,
            raw_null,
        }
    }

    /// A reader of `inner` that starts at byte `offset` of a stream whose
    /// line there is `line` (a record boundary of an input opened there).
    pub fn starting_at(inner: R, dialect: Dialect, offset: u64, line: u64) -> Self {
        let mut reader = Self::new(inner, dialect);
        reader.offset = offset;
        reader.line = line;
        reader.bom_checked = true;
        reader
    }

    /// The underlying reader; bytes it read ahead into this reader's
    /// buffer are not in it any more.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Fails a record with a field longer than `bytes` (default
    /// [`MAX_FIELD`]) instead of buffering it: memory stays bounded by the
    /// limit, and an unclosed quote is reported where it opened.
    pub fn set_max_field(&mut self, bytes: usize) {
        self.max_field = bytes;
    }

    /// Reads a blank CSV line as a record of one empty (unquoted) field,
    /// as COPY does, instead of skipping it: for inputs of one field per
    /// record, where `COPY ... TO` writes a NULL as a blank line.
    pub fn blank_lines_are_records(&mut self, records: bool) {
        self.blank_records = records;
    }

    /// Fails a record with an unquoted field `\N`
    /// ([`CsvError::TextFormatNull`]): for a CSV input whose format was
    /// detected from a sample, which may be PostgreSQL's text format after
    /// all. Not in the text format, nor when `\N` is the NULL string.
    pub fn refuse_text_null(&mut self, refuse: bool) {
        self.refuse_text_null = refuse && !self.dialect.text && self.dialect.null != b"\\N";
    }

    /// Whether an unquoted `\N` field fails its record
    /// ([`Reader::refuse_text_null`]).
    pub fn refuses_text_null(&self) -> bool {
        self.refuse_text_null
    }

    /// Keep each record's raw bytes (for reject files).
    pub fn keep_raw(&mut self, keep: bool) {
        self.keep_raw = keep;
    }

    /// Bytes of the stream consumed so far (the end of the last record).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The line the next record starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The raw bytes of the record that failed to parse (an unterminated
    /// quote: the rest of the input), when raw bytes are kept.
    pub fn take_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    /// Exchanges the current record's field bytes with `other` (which the
    /// next record reuses): a record's fields move out without a copy. A
    /// record's fields are addressed by [`Record::span`].
    pub fn exchange_data(&mut self, other: &mut Vec<u8>) {
        std::mem::swap(&mut self.data, other);
    }

    /// Exchanges the current record's raw bytes with `other`.
    pub fn exchange_raw(&mut self, other: &mut Vec<u8>) {
        std::mem::swap(&mut self.raw, other);
    }

    /// The record last read (its fields as [`Reader::read_record`] gave
    /// them, unless [`Reader::exchange_data`] moved them out).
    pub fn current(&self) -> Record<'_> {
        Record {
            data: &self.data,
            fields: &self.fields,
            null: &self.dialect.null,
            line: self.record_line,
            raw: &self.raw,
        }
    }

    /// Whether the text format's end marker (`\.` alone on a line, the
    /// line before [`Reader::line`]) ended the records.
    pub fn ended_by_marker(&self) -> bool {
        self.ended
    }

    /// Whether the input is exhausted (reads ahead if needed).
    pub fn at_end(&mut self) -> Result<bool, CsvError> {
        if self.pos == self.len {
            self.fill()?;
        }
        Ok(self.pos == self.len)
    }

    /// Discards input up to byte `offset` of the stream (a record boundary
    /// saved earlier) and continues counting lines from `line`.
    pub fn skip_to(&mut self, offset: u64, line: u64) -> Result<(), CsvError> {
        while self.offset < offset {
            if self.pos == self.len && !self.fill()? {
                break;
            }
            let want = usize::try_from(offset - self.offset).unwrap_or(usize::MAX);
            let n = want.min(self.len - self.pos);
            self.advance_raw(n);
        }
        self.raw.clear();
        self.line = line;
        Ok(())
    }

    /// Skips `n` physical lines (not records: quotes are not interpreted).
    pub fn skip_lines(&mut self, n: u64) -> Result<(), CsvError> {
        for _ in 0..n {
            loop {
                if self.pos == self.len && !self.fill()? {
                    return Ok(());
                }
                let hay = &self.buf[self.pos..self.len];
                match memchr::memchr(b'\n', hay) {
                    Some(i) => {
                        self.advance_raw(i + 1);
                        self.line += 1;
                        break;
                    }
                    None => {
                        let n = hay.len();
                        self.advance_raw(n);
                    }
                }
            }
        }
        self.raw.clear();
        Ok(())
    }

    fn fill(&mut self) -> Result<bool, CsvError> {
        if self.eof {
            return Ok(false);
        }
        self.pos = 0;
        // Nothing stays buffered if the read fails.
        self.len = 0;
        self.len = self.read_at(0)?;
        if self.len == 0 {
            self.eof = true;
            return Ok(false);
        }
        if !self.bom_checked {
            self.bom_checked = true;
            // A BOM may arrive in pieces (a pipe): read until it is whole
            // or the bytes cannot be one.
            while self.len < BOM.len().min(self.buf.len()) && BOM.starts_with(&self.buf[..self.len])
            {
                match self.read_at(self.len)? {
                    0 => break,
                    n => self.len += n,
                }
            }
            if self.buf[..self.len].starts_with(BOM) {
                self.pos = 3;
                self.offset += 3;
                if self.pos == self.len {
                    // The read held nothing but the BOM: read on.
                    return self.fill();
                }
            }
        }
        Ok(true)
    }

    /// Reads from the input into the buffer from byte `at` on (retrying
    /// an interrupted read); 0 at the end of the input.
    fn read_at(&mut self, at: usize) -> Result<usize, CsvError> {
        loop {
            match self.inner.read(&mut self.buf[at..]) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CsvError::Io(e)),
            }
        }
    }

    /// The bytes read ahead and not consumed yet (see
    /// [`Reader::consume_lines`]); empty until the first record is read.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    /// Consumes the first `n` bytes of [`Reader::buffered`], which the
    /// caller read as `records` records of one line each, every one
    /// ending in `\n` (no line end inside quotes, no carriage return, none
    /// blank). Raw bytes are not kept for them: only when
    /// [`Reader::keeps_raw`] is false are records taken this way.
    pub fn consume_lines(&mut self, n: usize, records: u64) {
        let n = n.min(self.len - self.pos);
        self.pos += n;
        self.offset += n as u64;
        self.line += records;
    }

    /// Whether each record's raw bytes are kept ([`Reader::keep_raw`]).
    pub fn keeps_raw(&self) -> bool {
        self.keep_raw
    }

    /// The dialect read.
    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// The longest field read ([`Reader::set_max_field`]).
    pub fn max_field(&self) -> usize {
        self.max_field
    }

    /// Consumes `n` bytes from the buffer, keeping them as raw when asked.
    fn advance_raw(&mut self, n: usize) {
        if self.keep_raw || self.raw_null {
            self.raw
                .extend_from_slice(&self.buf[self.pos..self.pos + n]);
        }
        self.pos += n;
        self.offset += n as u64;
    }

    fn end_field(&mut self, quoted: bool) {
        self.fields.push(Field {
            end: self.data.len(),
            quoted,
        });
    }

    /// Reads the next record, or `None` at the end of the input.
    pub fn read_record(&mut self) -> Result<Option<Record<'_>>, CsvError> {
        loop {
            // A buffer a huge field grew is not kept for the rest of the run.
            for buf in [&mut self.data, &mut self.raw] {
                if buf.capacity() > OVERSIZED {
                    *buf = Vec::with_capacity(1024);
                }
                buf.clear();
            }
            self.fields.clear();
            self.record_line = self.line;
            if self.dialect.text {
                if self.ended || !self.parse_text_record()? {
                    return Ok(None);
                }
            } else if !self.parse_record()? {
                return Ok(None);
            }
            // Blank lines carry no record (in CSV, unless told).
            if !self.dialect.text
                && !self.blank_records
                && self.fields.len() == 1
                && self.data.is_empty()
                && !self.fields[0].quoted
            {
                continue;
            }
            // The check while parsing bounds memory; a field that came in
            // one read is held to the limit here.
            let mut start = 0;
            for (i, field) in self.fields.iter().enumerate() {
                if field.end - start > self.max_field {
                    return Err(CsvError::FieldTooLong {
                        line: self.record_line,
                        limit: self.max_field,
                        quoted: false,
                    });
                }
                if self.refuse_text_null && !field.quoted && &self.data[start..field.end] == b"\\N"
                {
                    return Err(CsvError::TextFormatNull {
                        line: self.record_line,
                        field: i + 1,
                        tab: self.dialect.delimiter == b'\t',
                    });
                }
                start = field.end;
            }
            return Ok(Some(Record {
                data: &self.data,
                fields: &self.fields,
                null: &self.dialect.null,
                line: self.record_line,
                raw: &self.raw,
            }));
        }
    }

    /// Copies the buffered bytes before `stop` (all of them, without one)
    /// into the field, then consumes and returns the byte at `stop`.
    #[inline]
    fn copy_until(&mut self, stop: Option<usize>) -> Option<u8> {
        let n = stop.unwrap_or(self.len - self.pos);
        self.data
            .extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.advance_raw(n);
        stop?;
        let b = self.buf[self.pos];
        self.advance_raw(1);
        Some(b)
    }

    /// Where the field being read starts in `data`, failing it once it is
    /// longer than the limit (`quoted`: inside quotes).
    fn check_field_size(&self, quoted: bool) -> Result<usize, CsvError> {
        let field_start = self.fields.last().map_or(0, |f| f.end);
        if self.data.len() - field_start > self.max_field {
            return Err(CsvError::FieldTooLong {
                line: self.record_line,
                limit: self.max_field,
                quoted,
            });
        }
        Ok(field_start)
    }

    /// Parses one record into `data`/`fields`; false at the end of input.
    fn parse_record(&mut self) -> Result<bool, CsvError> {
        let (delim, quote, escape) = (
            self.dialect.delimiter,
            self.dialect.quote,
            self.dialect.escape,
        );
        let mut state = State::StartField;
        let mut quoted = false;
        let mut any = false;
        loop {
            self.check_field_size(state == State::Quoted)?;
            if self.pos == self.len && !self.fill()? {
                return match state {
                    State::Quoted => Err(CsvError::UnclosedQuote {
                        line: self.record_line,
                    }),
                    _ if !any => Ok(false),
                    _ => {
                        self.end_field(quoted);
                        Ok(true)
                    }
                };
            }
            any = true;
            match state {
                State::StartField | State::Unquoted | State::AfterQuote => {
                    // Copy up to the next delimiter, quote or line end in
                    // one go.
                    let hay = &self.buf[self.pos..self.len];
                    let stop = find_special(hay, delim, quote);
                    let n = stop.unwrap_or(hay.len());
                    self.data.extend_from_slice(&hay[..n]);
                    self.advance_raw(n);
                    if stop.is_none() {
                        if state == State::StartField {
                            state = State::Unquoted;
                        }
                        continue;
                    }
                    let b = self.buf[self.pos];
                    self.advance_raw(1);
                    if b == quote {
                        // A quote anywhere in a field opens a quoted part
                        // (`a"b,c"d` is the one field `ab,cd`), as COPY
                        // reads it.
                        state = State::Quoted;
                        quoted = true;
                        continue;
                    }
                    if b == delim {
                        self.end_field(quoted);
                        quoted = false;
                        state = State::StartField;
                        continue;
                    }
                    // A line end: `\n`, `\r\n` or a lone `\r`.
                    if b == b'\r' {
                        if self.pos == self.len {
                            self.fill()?;
                        }
                        if self.pos < self.len && self.buf[self.pos] == b'\n' {
                            self.advance_raw(1);
                        }
                    }
                    self.line += 1;
                    self.end_field(quoted);
                    return Ok(true);
                }
                State::Quoted => {
                    let hay = &self.buf[self.pos..self.len];
                    let stop = if escape == quote {
                        memchr::memchr2(quote, b'\n', hay)
                    } else {
                        memchr::memchr3(quote, escape, b'\n', hay)
                    };
                    let Some(b) = self.copy_until(stop) else {
                        continue;
                    };
                    if b == b'\n' {
                        self.data.push(b'\n');
                        self.line += 1;
                        continue;
                    }
                    // A quote or escape: look at the next byte.
                    if self.pos == self.len && !self.fill()? {
                        if b == quote {
                            self.end_field(true);
                            return Ok(true);
                        }
                        return Err(CsvError::UnclosedQuote {
                            line: self.record_line,
                        });
                    }
                    let next = self.buf[self.pos];
                    if b == escape && (next == quote || next == escape) {
                        self.data.push(next);
                        self.advance_raw(1);
                    } else if b == quote {
                        state = State::AfterQuote;
                    } else {
                        // An escape not followed by quote or escape is itself.
                        self.data.push(b);
                    }
                }
            }
        }
    }
}

impl<R: Read> Reader<R> {
    /// The next byte, consumed; `None` at the end of the input.
    fn next_byte(&mut self) -> Result<Option<u8>, CsvError> {
        if self.pos == self.len && !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.pos];
        self.advance_raw(1);
        Ok(Some(b))
    }

    /// The next byte, not consumed; `None` at the end of the input.
    fn peek_byte(&mut self) -> Result<Option<u8>, CsvError> {
        if self.pos == self.len && !self.fill()? {
            return Ok(None);
        }
        Ok(Some(self.buf[self.pos]))
    }

    /// Ends a text-format field. One that held an escape is never NULL
    /// (its raw bytes are not the NULL string), so it is marked quoted; a
    /// leading `\N` kept as it is for the NULL check is undone (to `N`)
    /// when the field goes on after it or `\N` is not the NULL string.
    /// With a NULL string of another backslash, the field's raw bytes
    /// (from `raw_start`, less the `terminator` bytes that ended it) are
    /// compared with it instead.
    fn end_text_field(
        &mut self,
        escaped: bool,
        leading_null: bool,
        raw_start: usize,
        terminator: usize,
    ) {
        let start = self.fields.last().map_or(0, |f| f.end);
        if leading_null && (self.data.len() > start + 2 || self.dialect.null != b"\\N") {
            self.data.remove(start);
            if !self.raw_null {
                self.end_field(true);
                return;
            }
        }
        if self.raw_null {
            let raw_end = self.raw.len() - terminator;
            let null = self.raw.get(raw_start..raw_end) == Some(&self.dialect.null[..]);
            if null {
                self.data.truncate(start);
                self.data.extend_from_slice(&self.dialect.null);
            }
            self.end_field(!null);
        } else {
            self.end_field(escaped);
        }
    }

    /// Parses one text-format record into `data`/`fields`; false at the
    /// end of input or at the end marker.
    fn parse_text_record(&mut self) -> Result<bool, CsvError> {
        let delim = self.dialect.delimiter;
        let mut escaped = false;
        let mut leading_null = false;
        let mut any = false;
        let mut raw_start = self.raw.len();
        loop {
            let field_start = self.check_field_size(false)?;
            if self.pos == self.len && !self.fill()? {
                if !any {
                    return Ok(false);
                }
                self.end_text_field(escaped, leading_null, raw_start, 0);
                return Ok(true);
            }
            any = true;
            let stop = find_special(&self.buf[self.pos..self.len], delim, b'\\');
            let Some(b) = self.copy_until(stop) else {
                continue;
            };
            if b == delim {
                self.end_text_field(escaped, leading_null, raw_start, 1);
                escaped = false;
                leading_null = false;
                raw_start = self.raw.len();
                continue;
            }
            if b != b'\\' {
                // A line end: `\n`, `\r\n` or a lone `\r`.
                let mut terminator = 1;
                if b == b'\r' && self.peek_byte()? == Some(b'\n') {
                    self.advance_raw(1);
                    terminator = 2;
                }
                self.line += 1;
                self.end_text_field(escaped, leading_null, raw_start, terminator);
                return Ok(true);
            }
            let at_start = self.data.len() == field_start && !escaped;
            let Some(c) = self.next_byte()? else {
                // A backslash ending the input is itself.
                self.data.push(b'\\');
                escaped = true;
                continue;
            };
            match c {
                // Kept as written for the NULL check (see end_text_field).
                b'N' if at_start => {
                    self.data.extend_from_slice(b"\\N");
                    leading_null = true;
                    continue;
                }
                // `\.` alone on its line ends the data; elsewhere COPY
                // refuses it (PostgreSQL 18; 17 and older ended the data
                // at one ending its line and refused the rest).
                b'.' if !(at_start && self.fields.is_empty()) => {
                    return Err(CsvError::EndMarkerNotAlone { line: self.line });
                }
                b'.' => match self.peek_byte()? {
                    None => {
                        self.ended = true;
                        return Ok(false);
                    }
                    Some(b'\n' | b'\r') => {
                        let end = self.next_byte()?;
                        if end == Some(b'\r') && self.peek_byte()? == Some(b'\n') {
                            self.advance_raw(1);
                        }
                        self.line += 1;
                        self.ended = true;
                        return Ok(false);
                    }
                    Some(_) => return Err(CsvError::EndMarkerNotAlone { line: self.line }),
                },
                b'b' => self.data.push(8),
                b'f' => self.data.push(12),
                b'n' => self.data.push(b'\n'),
                b'r' => self.data.push(b'\r'),
                b't' => self.data.push(b'\t'),
                b'v' => self.data.push(11),
                b'0'..=b'7' => {
                    let mut value = u32::from(c - b'0');
                    for _ in 0..2 {
                        match self.peek_byte()? {
                            Some(d @ b'0'..=b'7') => {
                                self.advance_raw(1);
                                value = value * 8 + u32::from(d - b'0');
                            }
                            _ => break,
                        }
                    }
                    self.data.push((value & 0xFF) as u8);
                }
                b'x' => match self.peek_byte()? {
                    Some(d) if d.is_ascii_hexdigit() => {
                        let mut value = 0u32;
                        for _ in 0..2 {
                            match self.peek_byte()? {
                                Some(d) if d.is_ascii_hexdigit() => {
                                    self.advance_raw(1);
                                    value = value * 16 + char::from(d).to_digit(16).unwrap_or(0);
                                }
                                _ => break,
                            }
                        }
                        self.data.push(value as u8);
                    }
                    _ => self.data.push(b'x'),
                },
                // An escaped line end is data (and still a new line).
                b'\n' => {
                    self.data.push(b'\n');
                    self.line += 1;
                }
                // The backslash escapes the carriage return only: a line
                // feed after it ends the record, as COPY reads it.
                b'\r' => {
                    self.data.push(b'\r');
                    if self.peek_byte()? != Some(b'\n') {
                        self.line += 1;
                    }
                }
                other => self.data.push(other),
            }
            escaped = true;
        }
    }
}

/// Where the first delimiter, quote, `\n` or `\r` of `hay` is: eight
/// bytes at a time, for the short fields most records have (a call to
/// `memchr` per field costs more than it finds).
pub(crate) fn find_special(hay: &[u8], delim: u8, quote: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each zero byte of `x` (and, above the lowest one,
    // maybe of others: only the lowest is used).
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let [d, q, n, r] = [delim, quote, b'\n', b'\r'].map(|b| ONES * u64::from(b));
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let found = zeros(w ^ d) | zeros(w ^ q) | zeros(w ^ n) | zeros(w ^ r);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == delim || b == quote || b == b'\n' || b == b'\r')
        .map(|i| at + i)
}

#[cfg(test)]
mod tests;
