//! Sans-IO encoding of rows into PostgreSQL's binary COPY format.
//!
//! Each column has a [`ColumnType`] (read from the catalog); a value arrives
//! either typed ([`Value`]) or as a text field, which is converted with the
//! syntax the server's input function accepts for the common forms. Types
//! without a binary encoder here ([`TypeKind::Other`]) are sent as text to a
//! `text` staging column and cast by the server.

mod array;
mod charset;
mod datetime;
mod json;
mod numeric;
mod scalar;
pub mod tuples;

pub use charset::Charset;

#[cfg(feature = "arrow")]
pub(crate) use numeric::write as write_numeric;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// How a column's values are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// `boolean`
    Bool,
    /// `smallint`
    Int2,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `numeric`
    Numeric,
    /// `text`, `varchar`, `char`, `name`, enums: the characters themselves.
    Text,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `time`
    Time,
    /// `timetz`; values without an offset take this many seconds east of
    /// UTC (the session's fixed `TimeZone`).
    TimeTz(i32),
    /// `timestamp`
    Timestamp,
    /// `timestamptz`; values without an offset take this many seconds east
    /// of UTC (the session's fixed `TimeZone`). `None`: the session's zone
    /// is not a fixed offset (its offset changes with the date), so such
    /// values are left to the server; values with an offset do not depend
    /// on it.
    TimestampTz(Option<i32>),
    /// `interval`; `sql_standard`: the session's `IntervalStyle` is
    /// `sql_standard`, where a leading minus applies to every field of a
    /// value without other signs (such values are left to the server).
    Interval {
        /// See above.
        sql_standard: bool,
    },
    /// `uuid`
    Uuid,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// `inet`
    Inet,
    /// `cidr`
    Cidr,
    /// `macaddr`
    MacAddr,
    /// An array of the element type.
    Array(Box<ColumnType>),
    /// Anything else: sent as text and cast by the server.
    Other,
}

/// A column's type: its oid (for array headers), how to encode it, and its
/// SQL name (for messages and casts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// The type's oid (for a domain: its base type's).
    pub oid: u32,
    /// The encoder.
    pub kind: TypeKind,
    /// `format_type` of the declared type, e.g. `numeric(12,2)`.
    pub name: String,
    /// The declared type by its qualified catalog name, without a type
    /// modifier (`pg_catalog."numeric"`, `pg_catalog."bpchar"`): text cast
    /// to it keeps its length, so assigning it to the column applies the
    /// modifier as COPY does (an error for a too-long `varchar` or `bit`,
    /// where a cast to `varchar(3)` would cut silently).
    pub cast_name: String,
    /// For `varchar(n)` and `char(n)`: `n`. Longer values fail here, with
    /// the row's position, rather than on the server (excess spaces are cut,
    /// as PostgreSQL cuts them).
    pub max_chars: Option<u32>,
    /// For `numeric(p, s)`: `(p, s)`. A value that would need rounding
    /// near the precision, or one too large, is left to the server (its
    /// rounding and its message); others are sent exactly.
    pub precision_scale: Option<(u32, i32)>,
    /// For an enum: its labels, as read when the table was.
    /// A value that is one of them is sent as it is; any other is left to
    /// the server (a label added since, or a bad value it names by row).
    pub labels: Option<Arc<BTreeSet<String>>>,
    /// For a domain: its base type, as `format_type` names it. Stages hold
    /// that type, so the domain's checks run as the rows merge, where a
    /// refused row is found by its line.
    pub base_name: Option<String>,
    /// The database's encoding, when it is not UTF-8 and its characters
    /// are known here: a value with a character it lacks is a bad row (the
    /// server's conversion would fail the whole COPY, unlocated), and
    /// `bytea` text beyond ASCII is the server's (its bytes are the
    /// database encoding's).
    pub charset: Option<Charset>,
}

impl ColumnType {
    /// The scalar kind of a built-in type oid, or `Other`.
    pub fn kind_of_builtin(oid: u32) -> TypeKind {
        match oid {
            16 => TypeKind::Bool,
            21 => TypeKind::Int2,
            23 => TypeKind::Int4,
            20 => TypeKind::Int8,
            700 => TypeKind::Float4,
            701 => TypeKind::Float8,
            1700 => TypeKind::Numeric,
            25 | 1043 | 1042 | 19 => TypeKind::Text,
            17 => TypeKind::Bytea,
            1082 => TypeKind::Date,
            1083 => TypeKind::Time,
            1266 => TypeKind::TimeTz(0),
            1114 => TypeKind::Timestamp,
            1184 => TypeKind::TimestampTz(Some(0)),
            1186 => TypeKind::Interval {
                sql_standard: false,
            },
            2950 => TypeKind::Uuid,
            114 => TypeKind::Json,
            3802 => TypeKind::Jsonb,
            869 => TypeKind::Inet,
            650 => TypeKind::Cidr,
            829 => TypeKind::MacAddr,
            _ => TypeKind::Other,
        }
    }

    /// Whether values travel as text for the server to cast (the type, or
    /// an array's element type, has no binary encoder here).
    pub fn needs_cast(&self) -> bool {
        match &self.kind {
            TypeKind::Other => true,
            TypeKind::Array(elem) => elem.needs_cast(),
            _ => false,
        }
    }
}

/// A typed value from the Rust API. Dates, times, numerics, UUIDs and
/// network addresses arrive as [`Value::Text`] in their SQL text form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (fits any integer, numeric or float column, and a text
    /// column as its decimal text, as the server's cast would store it).
    Int(i64),
    /// A float (fits float and numeric columns, and integer columns when
    /// it is a whole number).
    Float(f64),
    /// Text, or any value in its SQL text form.
    Text(String),
    /// Raw bytes for `bytea`.
    Bytes(Vec<u8>),
    /// A JSON document; `Json(serde_json::Value::Null)` is JSON `null`, not
    /// SQL NULL.
    Json(serde_json::Value),
    /// An array; nested arrays make more dimensions.
    Array(Vec<Value>),
    /// A calendar date as days from 2000-01-01 (PostgreSQL's binary form);
    /// into a column of another type it goes as its ISO text
    /// (`YYYY-MM-DD`), as the server would read that.
    Date(i32),
}

/// Why a value was not encoded: it does not fit its column, or its text is
/// not in a form this encoder converts exactly as the server's input
/// function would, so the server must decide ([`EncodeError::for_server`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    message: String,
    for_server: bool,
}

impl EncodeError {
    /// The value does not fit: the server would refuse it too.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            for_server: false,
        }
    }

    /// The text is not a form the encoder converts exactly as the server
    /// does (`01/08/1999`, `Jan 8 1999`, a named time zone, `0x1F`): it is
    /// sent as text for the server's own input function, which accepts or
    /// rejects it.
    pub fn for_server(type_name: &str, text: &str) -> Self {
        Self {
            message: format!(
                "invalid input syntax for type {type_name}: \"{}\"",
                shorten(text)
            ),
            for_server: true,
        }
    }

    /// Like [`EncodeError::for_server`], with a message of its own.
    pub(crate) fn for_server_because(message: String) -> Self {
        Self {
            message,
            for_server: true,
        }
    }

    /// Whether the server must decide (see [`EncodeError::for_server`]).
    pub fn is_for_server(&self) -> bool {
        self.for_server
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EncodeError {}

pub(crate) type Encoded = Result<(), EncodeError>;

/// White space as the server's input functions skip it (C `isspace`):
/// space, tab, line feed, vertical tab, form feed, carriage return. Not
/// Unicode spaces: `t\u{a0}` is no boolean to the server.
pub(crate) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// `text` without the white space the server skips around a value.
pub(crate) fn trim_space(text: &str) -> &str {
    // The spaces are ASCII: trimming bytes keeps `text`'s char boundaries.
    let space = |b: &u8| is_space(char::from(*b));
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    text.get(start..end).unwrap_or(text)
}

/// A text this encoder does not parse: the server's input function
/// decides (it may accept forms the encoder does not know).
fn invalid(type_name: &str, text: &str) -> EncodeError {
    EncodeError::for_server(type_name, text)
}

/// A value parsed exactly that is outside the type's range: the server
/// would say the same.
fn out_of_range(type_name: &str, text: &str) -> EncodeError {
    EncodeError::new(format!(
        "value \"{}\" is out of range for type {type_name}",
        shorten(text)
    ))
}

/// A value for messages: at most 60 characters, control characters
/// escaped (`\0`, `\n`, `\x1b`, ...); a longer one is cut with `...` and
/// its length.
pub fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::with_capacity(text.len().min(MAX + 32));
    for (n, c) in text.chars().enumerate() {
        if n == MAX - 3 && text.chars().nth(MAX).is_some() {
            out.push_str(&format!("... ({} bytes in all)", text.len()));
            break;
        }
        match c {
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Writes binary COPY: the header, then tuples, then the trailer.
#[derive(Debug, Default)]
pub struct CopyWriter {
    buf: Vec<u8>,
}

/// The binary COPY header: signature, flags and header extension length.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The binary COPY trailer.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

const HEADER: &[u8] = COPY_HEADER;

impl CopyWriter {
    /// A writer whose buffer starts with the COPY header.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(HEADER);
        Self { buf }
    }

    /// Starts a tuple of `fields` fields.
    pub fn start_tuple(&mut self, fields: u16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    /// Writes one field from a typed value.
    pub fn value(&mut self, value: &Value, ty: &ColumnType) -> Encoded {
        let mark = self.buf.len();
        let result = encode_value(value, ty, &mut self.buf);
        if result.is_err() {
            self.buf.truncate(mark);
        }
        result
    }

    /// Writes one field from its text form; `None` is NULL.
    pub fn text(&mut self, text: Option<&str>, ty: &ColumnType) -> Encoded {
        let mark = self.buf.len();
        let result = match text {
            None => {
                self.buf.extend_from_slice(&(-1i32).to_be_bytes());
                Ok(())
            }
            Some(text) => field(&mut self.buf, |out| encode_text(text, ty, out)),
        };
        if result.is_err() {
            self.buf.truncate(mark);
        }
        result
    }

    /// Writes one field whose body is already in binary form.
    pub fn encoded(&mut self, body: &[u8]) {
        let len = i32::try_from(body.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(body);
    }

    /// A writer for tuples only: the caller sends [`COPY_HEADER`] and
    /// [`COPY_TRAILER`] around them.
    pub fn tuples_only() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Bytes written so far (header and tuples).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing but possibly the header was written.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= HEADER.len()
    }

    /// Takes the bytes written so far, leaving the writer empty (the header
    /// is written only once) with a buffer of the usual size.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, Vec::with_capacity(64 * 1024))
    }

    /// The buffer, for appending whole tuples already in binary COPY form
    /// (see [`tuples::Tuples`]).
    pub(crate) fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The buffer's allocated size.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether no byte is buffered.
    pub fn is_empty_buffer(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written since byte `start`.
    pub fn bytes_since(&self, start: usize) -> &[u8] {
        &self.buf[start.min(self.buf.len())..]
    }

    /// Drops everything after byte `len` (undoes a partly written tuple).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Appends the trailer and returns the remaining bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// Writes a length-prefixed field whose body `body` appends.
fn field(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Encoded) -> Encoded {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out)?;
    let len = i32::try_from(out.len() - at - 4)
        .map_err(|_| EncodeError::new("value is larger than 2 GB".to_owned()))?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn encode_value(value: &Value, ty: &ColumnType, out: &mut Vec<u8>) -> Encoded {
    match value {
        Value::Null => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            Ok(())
        }
        Value::Text(text) => field(out, |out| encode_text(text, ty, out)),
        other => field(out, |out| encode_typed(other, ty, out)),
    }
}

/// The body of a non-null typed value.
fn encode_typed(value: &Value, ty: &ColumnType, out: &mut Vec<u8>) -> Encoded {
    let mismatch = || {
        EncodeError::new(format!(
            "{} does not fit a column of type {}",
            value_kind(value),
            ty.name
        ))
    };
    match (value, &ty.kind) {
        (Value::Null, _) => Err(EncodeError::new("NULL inside a field".to_owned())),
        (Value::Text(text), _) => encode_text(text, ty, out),
        (Value::Bool(b), TypeKind::Bool) => {
            out.push(u8::from(*b));
            Ok(())
        }
        (Value::Int(i), TypeKind::Int2) => {
            let v = i16::try_from(*i).map_err(|_| out_of_range("smallint", &i.to_string()))?;
            out.extend_from_slice(&v.to_be_bytes());
            Ok(())
        }
        (Value::Int(i), TypeKind::Int4) => {
            let v = i32::try_from(*i).map_err(|_| out_of_range("integer", &i.to_string()))?;
            out.extend_from_slice(&v.to_be_bytes());
            Ok(())
        }
        (Value::Int(i), TypeKind::Int8) => {
            out.extend_from_slice(&i.to_be_bytes());
            Ok(())
        }
        #[allow(clippy::cast_precision_loss)]
        (Value::Int(i), TypeKind::Float4) => {
            out.extend_from_slice(&(*i as f32).to_be_bytes());
            Ok(())
        }
        #[allow(clippy::cast_precision_loss)]
        (Value::Int(i), TypeKind::Float8) => {
            out.extend_from_slice(&(*i as f64).to_be_bytes());
            Ok(())
        }
        (Value::Int(i), TypeKind::Numeric) => {
            numeric::encode_within(&i.to_string(), ty.precision_scale, out)
        }
        // The server's assignment cast to a string type: the decimal text.
        (Value::Int(i), TypeKind::Text | TypeKind::Other) => encode_text(&i.to_string(), ty, out),
        (Value::Float(f), TypeKind::Int2 | TypeKind::Int4 | TypeKind::Int8) => {
            encode_typed(&Value::Int(whole(*f, ty)?), ty, out)
        }
        (Value::Float(f), TypeKind::Float8) => {
            out.extend_from_slice(&f.to_be_bytes());
            Ok(())
        }
        #[allow(clippy::cast_possible_truncation)]
        (Value::Float(f), TypeKind::Float4) => {
            let v = *f as f32;
            if v.is_infinite() && f.is_finite() {
                return Err(out_of_range("real", &f.to_string()));
            }
            out.extend_from_slice(&v.to_be_bytes());
            Ok(())
        }
        (Value::Float(f), TypeKind::Numeric) => {
            numeric::encode_within(&float_text(*f), ty.precision_scale, out)
        }
        (Value::Bytes(b), TypeKind::Bytea) => {
            out.extend_from_slice(b);
            Ok(())
        }
        (Value::Json(j), TypeKind::Json | TypeKind::Jsonb | TypeKind::Text | TypeKind::Other) => {
            if ty.kind == TypeKind::Jsonb {
                out.push(1);
            }
            let start = out.len();
            serde_json::to_writer(&mut *out, j).map_err(|e| EncodeError::new(e.to_string()))?;
            match (ty.charset, std::str::from_utf8(&out[start..])) {
                (Some(charset), Ok(text)) => match charset.first_missing(text) {
                    Some(c) => Err(EncodeError::new(charset.missing_message(c))),
                    None => Ok(()),
                },
                _ => Ok(()),
            }
        }
        (Value::Array(_), TypeKind::Array(elem)) if elem.needs_cast() => {
            Err(EncodeError::new(format!(
                "arrays of {} are sent as text: pass the array in its text form",
                elem.name
            )))
        }
        (Value::Array(items), TypeKind::Array(elem)) => array::encode_values(items, elem, out),
        (Value::Date(days), TypeKind::Date) => {
            out.extend_from_slice(&days.to_be_bytes());
            Ok(())
        }
        (Value::Date(_), TypeKind::Bytea) => Err(mismatch()),
        (Value::Date(days), _) => encode_text(&datetime::iso_date(*days), ty, out),
        _ => Err(mismatch()),
    }
}

/// A float's text as numeric input reads it: the shortest that reads
/// back as the same float, `NaN`, `Infinity` or `-Infinity`.
pub(crate) fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        format!("{f:?}")
    }
}

/// The integer a float for an integer column `ty` equals. PostgreSQL's
/// cast would round a fraction away (half to even) where a Python
/// `int()` truncates it, so a float with a fraction is refused rather
/// than stored as either.
fn whole(f: f64, ty: &ColumnType) -> Result<i64, EncodeError> {
    if !f.is_finite() {
        return Err(EncodeError::new(format!(
            "float value {} does not fit a column of type {}",
            float_text(f),
            ty.name
        )));
    }
    if f.fract() != 0.0 {
        return Err(EncodeError::new(format!(
            "float value {} has a fraction and a column of type {} holds whole numbers: \
             round or truncate it first",
            float_text(f),
            ty.name
        )));
    }
    // -2^63 <= f < 2^63: exactly the floats an i64 holds.
    #[allow(clippy::cast_possible_truncation)]
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        Ok(f as i64)
    } else {
        Err(out_of_range(&ty.name, &float_text(f)))
    }
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "a NULL",
        Value::Bool(_) => "a boolean value",
        Value::Int(_) => "an integer value",
        Value::Float(_) => "a float value",
        Value::Text(_) => "a text value",
        Value::Bytes(_) => "a bytes value",
        Value::Json(_) => "a JSON value",
        Value::Array(_) => "an array value",
        Value::Date(_) => "a date value",
    }
}

/// Writes one field (length and body) from the bytes of a field that is
/// not NULL, when they are UTF-8 and a value the encoder converts as the
/// column type's input function does; `false`, with nothing written, for
/// anything else (a malformed or out-of-range value, a type the server
/// converts), which the caller then reads as text to name the fault or
/// leave the value to the server. Plain integers, ISO dates and text take
/// a path of their own; other types go through [`encode_text`]. `known`:
/// the same bytes as text, when the caller checked them already, and
/// whether it knows them free of NUL.
pub(crate) fn encode_field_bytes(
    bytes: &[u8],
    known: Option<(&str, bool)>,
    ty: &ColumnType,
    out: &mut Vec<u8>,
) -> bool {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let as_text = || known.map_or_else(|| std::str::from_utf8(bytes).ok(), |(text, _)| Some(text));
    let written = match &ty.kind {
        TypeKind::Int2 => plain_int(bytes)
            .and_then(|v| i16::try_from(v).ok())
            .map(|v| out.extend_from_slice(&v.to_be_bytes()))
            .is_some(),
        TypeKind::Int4 => plain_int(bytes)
            .and_then(|v| i32::try_from(v).ok())
            .map(|v| out.extend_from_slice(&v.to_be_bytes()))
            .is_some(),
        TypeKind::Int8 => plain_int(bytes)
            .map(|v| out.extend_from_slice(&v.to_be_bytes()))
            .is_some(),
        // Years 1 to 9999: always in range.
        TypeKind::Date => datetime::parse_iso_date(bytes)
            .and_then(|days| i32::try_from(days).ok())
            .map(|days| out.extend_from_slice(&days.to_be_bytes()))
            .is_some(),
        // No more bytes than characters allowed: the length is not checked.
        // Beyond ASCII into a database of another encoding than UTF-8: the
        // text path checks its characters.
        TypeKind::Text
            if ty
                .max_chars
                .is_none_or(|max| bytes.len() <= usize::try_from(max).unwrap_or(usize::MAX))
                && (ty.charset.is_none() || bytes.is_ascii()) =>
        {
            let nul_free = known.is_some_and(|(_, nul_free)| nul_free);
            let text = as_text()
                .is_some_and(|t| ty.labels.as_ref().is_none_or(|labels| labels.contains(t)))
                && (nul_free || memchr::memchr(0, bytes).is_none());
            if text {
                out.extend_from_slice(bytes);
            }
            text
        }
        _ if ty.needs_cast() => false,
        _ => as_text().is_some_and(|text| encode_text(text, ty, out).is_ok()),
    };
    match i32::try_from(out.len() - at - 4) {
        Ok(len) if written => {
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            true
        }
        _ => {
            out.truncate(at);
            false
        }
    }
}

/// An integer of at most 18 digits (it cannot overflow), with an optional
/// minus sign and nothing else: what `int8in` reads as the same number.
fn plain_int(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value = 0i64;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// The body of a value given in its text form.
pub(crate) fn encode_text(text: &str, ty: &ColumnType, out: &mut Vec<u8>) -> Encoded {
    if let Some(charset) = ty.charset.filter(|_| !text.is_ascii()) {
        if let Some(c) = charset.first_missing(text) {
            return Err(EncodeError::new(charset.missing_message(c)));
        }
        if ty.kind == TypeKind::Bytea {
            // Escaped bytea's other characters are bytes of the database's
            // encoding.
            return Err(EncodeError::for_server(&ty.name, text));
        }
    }
    if let TypeKind::Array(elem) = &ty.kind {
        if elem.needs_cast() {
            // The whole array travels as text for the server to cast.
            return scalar::text(text, out);
        }
    }
    match &ty.kind {
        TypeKind::Bool => scalar::bool(text, out),
        TypeKind::Int2 => scalar::int2(text, out),
        TypeKind::Int4 => scalar::int4(text, out),
        TypeKind::Int8 => scalar::int8(text, out),
        TypeKind::Float4 => scalar::float4(text, out),
        TypeKind::Float8 => scalar::float8(text, out),
        TypeKind::Numeric => numeric::encode_within(text, ty.precision_scale, out),
        TypeKind::Text => match (ty.max_chars, &ty.labels) {
            (_, Some(labels)) if !labels.contains(text) => {
                Err(EncodeError::for_server(&ty.name, text))
            }
            (Some(max), _) => {
                let type_name = ty.base_name.as_deref().unwrap_or(&ty.name);
                scalar::bounded_text(text, max, type_name, out)
            }
            (None, _) => scalar::text(text, out),
        },
        TypeKind::Json => scalar::json(text, false, out),
        TypeKind::Jsonb => scalar::json(text, true, out),
        TypeKind::Other => scalar::text(text, out),
        TypeKind::Bytea => scalar::bytea(text, out),
        TypeKind::Date => datetime::date(text, out),
        TypeKind::Time => datetime::time(text, out),
        TypeKind::TimeTz(zone) => datetime::timetz(text, *zone, out),
        TypeKind::Timestamp => datetime::timestamp(text, out),
        TypeKind::TimestampTz(zone) => datetime::timestamptz(text, *zone, out),
        TypeKind::Interval { sql_standard } => datetime::interval(text, *sql_standard, out),
        TypeKind::Uuid => scalar::uuid(text, out),
        TypeKind::Inet => scalar::inet(text, false, out),
        TypeKind::Cidr => scalar::inet(text, true, out),
        TypeKind::MacAddr => scalar::macaddr(text, out),
        TypeKind::Array(elem) => array::encode_text(text, elem, out),
    }
}

#[cfg(test)]
pub(crate) mod tests;
