//! PostgreSQL's binary COPY output, decoded into Arrow record batches of
//! bounded size, column by column as [`super::columns`] maps them.
//!
//! Values a warehouse cannot hold are clamped to its range and counted:
//! dates and timestamps before 0001-01-01 (and `-infinity`) become
//! 0001-01-01 (00:00:00), after 9999-12-31 (and `infinity`) 9999-12-31
//! (23:59:59.999999); `time` 24:00:00 becomes 23:59:59.999999. A numeric
//! the decimal cannot hold exactly (NaN, infinity, more digits) is an
//! error naming the row, column and value: never a rounded value.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, i256};
use arrow_schema::{FieldRef, Schema, SchemaRef};

use super::columns::{ExportColumn, Kind};
use crate::error::{Error, ErrorKind, Result};

/// What to do with NULL elements of arrays (BigQuery's arrays hold none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArrayNulls {
    /// Write them (Parquet holds them).
    #[default]
    Keep,
    /// Leave them out of the array.
    Drop,
    /// Refuse the row, naming it.
    Refuse,
}

/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;
/// 0001-01-01 and 9999-12-31 in days from 1970-01-01.
const MIN_DAY: i32 = -719_162;
const MAX_DAY: i32 = 2_932_896;
/// 0001-01-01 00:00:00 and 9999-12-31 23:59:59.999999 in microseconds
/// from 1970-01-01.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;
/// 23:59:59.999999 in microseconds.
const MAX_TIME: i64 = 86_399_999_999;

/// The signature that starts binary COPY output.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The tuple bytes after which a batch is handed on before it has
/// `batch_rows` rows: wide rows (documents of 100 KB) then cost megabytes,
/// not gigabytes.
const BATCH_BYTES: usize = 16 << 20;

/// Decodes binary COPY output into record batches of `batch_rows` rows
/// (fewer, when they hold [`BATCH_BYTES`] of values).
#[derive(Debug)]
pub struct Decoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// How errors name the source.
    label: String,
    batch_rows: usize,
    in_batch: usize,
    /// Tuple bytes of the batch being built.
    in_batch_bytes: usize,
    /// Rows decoded so far.
    rows: u64,
    /// The columns (by position) naming a refused row besides its number.
    key: Vec<usize>,
    /// Bytes of an unfinished tuple (or header) from earlier chunks.
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

impl Decoder {
    /// A decoder of rows of `columns` (in `SELECT` order) of `label`.
    pub fn new(
        columns: &[ExportColumn],
        label: &str,
        batch_rows: usize,
        array_nulls: ArrayNulls,
    ) -> Self {
        let fields: Vec<_> = columns.iter().map(|c| c.kind.field(&c.name)).collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
            columns: columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    builder: Builder::new(&c.kind, batch_rows, array_nulls),
                    kind: c.kind.clone(),
                    clamped: 0,
                })
                .collect(),
            label: label.to_owned(),
            batch_rows: batch_rows.max(1),
            in_batch: 0,
            in_batch_bytes: 0,
            rows: 0,
            key: Vec::new(),
            pending: Vec::new(),
            header_read: false,
            ended: false,
        }
    }

    /// Names a refused row by the values of these columns too (the
    /// source's key), where their kinds print (integers, text, uuid); not
    /// when one is not read.
    pub fn naming_rows_by(mut self, key: &[String]) -> Self {
        self.key = key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| c.name == *k))
            .collect();
        if self.key.len() != key.len() {
            self.key.clear();
        }
        self
    }

    /// The Arrow schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows decoded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Values clamped to the warehouse's range, per column (those with
    /// any).
    pub fn clamped(&self) -> Vec<(String, u64)> {
        self.columns
            .iter()
            .filter(|c| c.clamped > 0)
            .map(|c| (c.name.clone(), c.clamped))
            .collect()
    }

    /// Decodes `chunk` (the next bytes of the output, cut anywhere),
    /// handing each full batch to `out`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        if self.pending.is_empty() {
            let used = self.decode(chunk, out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.decode(&pending, out)?;
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(())
    }

    /// Ends the output: the last (partial) batch goes to `out`. Output
    /// that stopped before its end marker is an error.
    pub fn finish(&mut self, out: &mut impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        if !self.ended || !self.pending.is_empty() {
            return Err(self.malformed("the output ended in the middle of a row"));
        }
        if self.in_batch > 0 {
            out(self.batch()?)?;
        }
        Ok(())
    }

    /// Decodes whole tuples from `bytes`; returns how many bytes were used.
    fn decode(
        &mut self,
        bytes: &[u8],
        out: &mut impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<usize> {
        let mut at = 0;
        if !self.header_read {
            let fixed = SIGNATURE.len() + 8;
            if bytes.len() < fixed {
                return Ok(0);
            }
            if &bytes[..SIGNATURE.len()] != SIGNATURE {
                return Err(self.malformed("it does not start with binary COPY's signature"));
            }
            let extension = be_u32(&bytes[SIGNATURE.len() + 4..]) as usize;
            if bytes.len() < fixed + extension {
                return Ok(0);
            }
            at = fixed + extension;
            self.header_read = true;
        }
        let count = self.columns.len();
        while at + 2 <= bytes.len() {
            if self.ended {
                return Err(self.malformed("bytes after the end marker"));
            }
            let fields = i16::from_be_bytes([bytes[at], bytes[at + 1]]);
            if fields == -1 {
                self.ended = true;
                at += 2;
                continue;
            }
            if fields as usize != count {
                return Err(self.malformed(&format!("a row of {fields} fields, not {count}")));
            }
            // The whole tuple first: its values are decoded only once it
            // is all here.
            let mut end = at + 2;
            for _ in 0..count {
                if end + 4 > bytes.len() {
                    return Ok(at);
                }
                let len = i32::from_be_bytes([
                    bytes[end],
                    bytes[end + 1],
                    bytes[end + 2],
                    bytes[end + 3],
                ]);
                end += 4 + usize::try_from(len).unwrap_or(0);
                if end > bytes.len() {
                    return Ok(at);
                }
            }
            let mut field = at + 2;
            let row = self.rows + 1;
            let mut failed = None;
            for (i, column) in self.columns.iter_mut().enumerate() {
                let len = be_u32(&bytes[field..]) as i32;
                field += 4;
                let value = if len < 0 {
                    None
                } else {
                    let v = &bytes[field..field + len as usize];
                    field += len as usize;
                    Some(v)
                };
                if let Err(why) = column.append(value) {
                    failed = Some((i, why));
                    break;
                }
            }
            if let Some((i, why)) = failed {
                let name = &self.columns[i].name;
                let key = self
                    .key_text(&bytes[at + 2..end])
                    .map(|k| format!(" ({k})"))
                    .unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Data,
                    format!(
                        "{}, row {row}{key}, column \"{name}\": {}",
                        self.label, why.message
                    ),
                )
                .in_table(&self.label)
                .for_column(name)
                .in_row(row)
                .with_value(why.value.as_deref()));
            }
            self.in_batch_bytes += end - at;
            at = end;
            self.rows += 1;
            self.in_batch += 1;
            if self.in_batch == self.batch_rows || self.in_batch_bytes >= BATCH_BYTES {
                out(self.batch()?)?;
            }
        }
        Ok(at)
    }

    /// The key's values in a tuple's fields (`tuple` after its field
    /// count), as `id = 42` or `region = 'eu', id = 7`; `None` without a
    /// key or when a key column is of a kind not printed here.
    fn key_text(&self, tuple: &[u8]) -> Option<String> {
        if self.key.is_empty() {
            return None;
        }
        let mut values: Vec<Option<&[u8]>> = Vec::with_capacity(self.columns.len());
        let mut at = 0;
        for _ in &self.columns {
            let len = i32::from_be_bytes(tuple.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            if len < 0 {
                values.push(None);
            } else {
                values.push(Some(tuple.get(at..at + len as usize)?));
                at += len as usize;
            }
        }
        let mut parts = Vec::with_capacity(self.key.len());
        for &k in &self.key {
            let column = &self.columns[k];
            let text = match (values[k], &column.kind) {
                (None, _) => "NULL".to_owned(),
                (Some(v), Kind::Int16) => i16::from_be_bytes(v.try_into().ok()?).to_string(),
                (Some(v), Kind::Int32) => i32::from_be_bytes(v.try_into().ok()?).to_string(),
                (Some(v), Kind::Int64) => i64::from_be_bytes(v.try_into().ok()?).to_string(),
                (Some(v), Kind::Text) => {
                    let text = String::from_utf8_lossy(v);
                    let mut shown: String = text.chars().take(64).collect();
                    if shown.len() < text.len() {
                        shown.push_str("...");
                    }
                    format!("'{}'", shown.replace('\'', "''"))
                }
                (Some(v), Kind::Uuid) if v.len() == 16 => uuid_text(v),
                _ => return None,
            };
            parts.push(format!("{} = {text}", column.name));
        }
        Some(parts.join(", "))
    }

    /// The rows decoded since the last batch, as one.
    fn batch(&mut self) -> Result<RecordBatch> {
        self.in_batch = 0;
        self.in_batch_bytes = 0;
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("building a batch of {}: {e}", self.label),
            )
        })
    }

    fn malformed(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::Io,
            format!(
                "the binary COPY output of {} cannot be read: {why}",
                self.label
            ),
        )
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Why a value was refused, and the value as text.
struct Refusal {
    message: String,
    value: Option<String>,
}

impl Refusal {
    fn new(message: impl Into<String>, value: Option<String>) -> Self {
        Self {
            message: message.into(),
            value,
        }
    }
}

/// One column's values of the batch being built.
#[derive(Debug)]
struct Column {
    name: String,
    kind: Kind,
    builder: Builder,
    clamped: u64,
}

impl Column {
    fn append(&mut self, value: Option<&[u8]>) -> std::result::Result<(), Refusal> {
        self.builder.append(&self.kind, value, &mut self.clamped)
    }

    fn finish(&mut self) -> ArrayRef {
        self.builder.finish(&self.kind)
    }
}

/// The Arrow builder of a kind.
#[derive(Debug)]
enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal128(Decimal128Builder),
    Decimal256(Decimal256Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    List(Box<ListBuilder>),
}

/// A list column: offsets, validity and the elements' builder.
#[derive(Debug)]
struct ListBuilder {
    field: FieldRef,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Builder,
    /// Elements appended (the next offset).
    len: i32,
    array_nulls: ArrayNulls,
}

impl Builder {
    fn new(kind: &Kind, capacity: usize, array_nulls: ArrayNulls) -> Self {
        match kind {
            Kind::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int16 => Self::Int16(Int16Builder::with_capacity(capacity)),
            Kind::Int32 => Self::Int32(Int32Builder::with_capacity(capacity)),
            Kind::Int64 => Self::Int64(Int64Builder::with_capacity(capacity)),
            Kind::Float32 => Self::Float32(Float32Builder::with_capacity(capacity)),
            Kind::Float64 => Self::Float64(Float64Builder::with_capacity(capacity)),
            Kind::Decimal { precision, .. } if *precision <= 38 => {
                Self::Decimal128(Decimal128Builder::with_capacity(capacity))
            }
            Kind::Decimal { .. } => Self::Decimal256(Decimal256Builder::with_capacity(capacity)),
            Kind::Text | Kind::Uuid | Kind::Json | Kind::Jsonb => {
                Self::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            Kind::Bytes => Self::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            Kind::Timestamp | Kind::TimestampTz => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            Kind::Time => Self::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            Kind::List(element) => Self::List(Box::new(ListBuilder {
                field: element.field("element").into(),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(capacity),
                values: Self::new(element, capacity, array_nulls),
                len: 0,
                array_nulls,
            })),
        }
    }

    fn append(
        &mut self,
        kind: &Kind,
        value: Option<&[u8]>,
        clamped: &mut u64,
    ) -> std::result::Result<(), Refusal> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        let width = |n: usize| {
            if v.len() == n {
                Ok(())
            } else {
                Err(Refusal::new(
                    format!("a value of {} bytes where {n} were expected", v.len()),
                    None,
                ))
            }
        };
        match (self, kind) {
            (Self::Bool(b), _) => {
                width(1)?;
                b.append_value(v[0] != 0);
            }
            (Self::Int16(b), _) => {
                width(2)?;
                b.append_value(i16::from_be_bytes([v[0], v[1]]));
            }
            (Self::Int32(b), _) => {
                width(4)?;
                b.append_value(be_u32(v) as i32);
            }
            (Self::Int64(b), _) => {
                width(8)?;
                b.append_value(be_i64(v));
            }
            (Self::Float32(b), _) => {
                width(4)?;
                b.append_value(f32::from_bits(be_u32(v)));
            }
            (Self::Float64(b), _) => {
                width(8)?;
                b.append_value(f64::from_bits(be_i64(v) as u64));
            }
            (Self::Decimal128(b), Kind::Decimal { precision, scale }) => {
                let n = scaled::<i128>(v, *precision, *scale)?;
                b.append_value(n);
            }
            (Self::Decimal256(b), Kind::Decimal { precision, scale }) => {
                let n = scaled::<i256>(v, *precision, *scale)?;
                b.append_value(n);
            }
            (Self::Text(b), Kind::Uuid) => {
                width(16)?;
                b.append_value(uuid_text(v));
            }
            (Self::Text(b), Kind::Jsonb) => match v.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err(Refusal::new("a jsonb value of an unknown version", None)),
            },
            (Self::Text(b), _) => b.append_value(utf8(v)?),
            (Self::Bytes(b), _) => b.append_value(v),
            (Self::Date(b), _) => {
                width(4)?;
                let days = be_u32(v) as i32;
                let day = days.saturating_add(EPOCH_DAYS);
                let kept = day.clamp(MIN_DAY, MAX_DAY);
                if kept != day {
                    *clamped += 1;
                }
                b.append_value(kept);
            }
            (Self::Timestamp(b), _) => {
                width(8)?;
                let micros = be_i64(v);
                let at = micros.saturating_add(EPOCH_MICROS);
                let kept = at.clamp(MIN_MICROS, MAX_MICROS);
                if kept != at {
                    *clamped += 1;
                }
                b.append_value(kept);
            }
            (Self::Time(b), _) => {
                width(8)?;
                let micros = be_i64(v);
                if micros > MAX_TIME {
                    *clamped += 1;
                }
                b.append_value(micros.min(MAX_TIME));
            }
            (Self::List(list), Kind::List(element)) => list.append(element, v, clamped)?,
            _ => return Err(Refusal::new("a column built for another type", None)),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Decimal128(b) => b.append_null(),
            Self::Decimal256(b) => b.append_null(),
            Self::Text(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::List(list) => {
                list.offsets.push(list.len);
                list.nulls.append_null();
            }
        }
    }

    fn finish(&mut self, kind: &Kind) -> ArrayRef {
        match (self, kind) {
            (Self::Bool(b), _) => Arc::new(b.finish()),
            (Self::Int16(b), _) => Arc::new(b.finish()),
            (Self::Int32(b), _) => Arc::new(b.finish()),
            (Self::Int64(b), _) => Arc::new(b.finish()),
            (Self::Float32(b), _) => Arc::new(b.finish()),
            (Self::Float64(b), _) => Arc::new(b.finish()),
            (Self::Decimal128(b), Kind::Decimal { precision, scale }) => Arc::new(
                b.finish()
                    .with_data_type(arrow_schema::DataType::Decimal128(*precision, *scale as i8)),
            ),
            (Self::Decimal256(b), Kind::Decimal { precision, scale }) => Arc::new(
                b.finish()
                    .with_data_type(arrow_schema::DataType::Decimal256(*precision, *scale as i8)),
            ),
            (Self::Text(b), _) => Arc::new(b.finish()),
            (Self::Bytes(b), _) => Arc::new(b.finish()),
            (Self::Date(b), _) => Arc::new(b.finish()),
            (Self::Timestamp(b), Kind::TimestampTz) => Arc::new(b.finish().with_timezone("UTC")),
            (Self::Timestamp(b), _) => Arc::new(b.finish()),
            (Self::Time(b), _) => Arc::new(b.finish()),
            (Self::List(list), Kind::List(element)) => {
                let values = list.values.finish(element);
                let offsets = std::mem::replace(&mut list.offsets, vec![0]);
                list.len = 0;
                Arc::new(ListArray::new(
                    list.field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    values,
                    list.nulls.finish(),
                ))
            }
            (b, _) => unreachable!("builder {b:?} does not match its kind"),
        }
    }
}

impl ListBuilder {
    /// Appends one array value (binary: dimensions, flags, element type,
    /// each dimension's length and lower bound, then the elements).
    fn append(
        &mut self,
        element: &Kind,
        v: &[u8],
        clamped: &mut u64,
    ) -> std::result::Result<(), Refusal> {
        let short = || Refusal::new("an array value cut short", None);
        if v.len() < 12 {
            return Err(short());
        }
        let dims = be_u32(v) as i32;
        let mut at = 12;
        let count = match dims {
            0 => 0,
            1 => {
                if v.len() < 20 {
                    return Err(short());
                }
                at = 20;
                be_u32(&v[12..]) as usize
            }
            n => {
                return Err(Refusal::new(
                    format!(
                        "an array of {n} dimensions: one dimension is exported (cast it in a --query)"
                    ),
                    None,
                ));
            }
        };
        for index in 0..count {
            if at + 4 > v.len() {
                return Err(short());
            }
            let len = be_u32(&v[at..]) as i32;
            at += 4;
            if len < 0 {
                match self.array_nulls {
                    ArrayNulls::Keep => {
                        self.values.append_null();
                        self.len += 1;
                    }
                    ArrayNulls::Drop => {}
                    ArrayNulls::Refuse => {
                        return Err(Refusal::new(
                            format!(
                                "element {} of the array is NULL, which BigQuery's arrays cannot hold (--array-nulls drop leaves them out)",
                                index + 1
                            ),
                            None,
                        ));
                    }
                }
                continue;
            }
            let end = at + len as usize;
            if end > v.len() {
                return Err(short());
            }
            self.values
                .append(element, Some(&v[at..end]), clamped)
                .map_err(|r| {
                    Refusal::new(format!("element {}: {}", index + 1, r.message), r.value)
                })?;
            self.len += 1;
            at = end;
        }
        self.offsets.push(self.len);
        self.nulls.append_non_null();
        Ok(())
    }
}

fn utf8(v: &[u8]) -> std::result::Result<&str, Refusal> {
    std::str::from_utf8(v).map_err(|_| Refusal::new("text that is not UTF-8", None))
}

/// A uuid's 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
fn uuid_text(v: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, b) in v.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// A wide signed integer a decimal is built in.
trait Wide: Copy + PartialOrd {
    const ZERO: Self;
    fn small(v: u32) -> Self;
    fn mul_add(self, m: u32, a: u32) -> Option<Self>;
    fn neg(self) -> Self;
}

impl Wide for i128 {
    const ZERO: Self = 0;
    fn small(v: u32) -> Self {
        v.into()
    }
    fn mul_add(self, m: u32, a: u32) -> Option<Self> {
        self.checked_mul(m.into())?.checked_add(a.into())
    }
    fn neg(self) -> Self {
        -self
    }
}

impl Wide for i256 {
    const ZERO: Self = i256::ZERO;
    fn small(v: u32) -> Self {
        i256::from_i128(v.into())
    }
    fn mul_add(self, m: u32, a: u32) -> Option<Self> {
        self.checked_mul(Self::small(m))?
            .checked_add(Self::small(a))
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
}

/// A binary `numeric` as an integer of `scale` digits after the point,
/// refused when it is not a number, has more digits after the point, or
/// `precision` digits do not hold it.
fn scaled<W: Wide>(v: &[u8], precision: u8, scale: u8) -> std::result::Result<W, Refusal> {
    if v.len() < 8 || !(v.len() - 8).is_multiple_of(2) {
        return Err(Refusal::new("a numeric value cut short", None));
    }
    let ndigits = usize::from(u16::from_be_bytes([v[0], v[1]]));
    let weight = i32::from(i16::from_be_bytes([v[2], v[3]]));
    let sign = u16::from_be_bytes([v[4], v[5]]);
    if v.len() != 8 + 2 * ndigits {
        return Err(Refusal::new("a numeric value cut short", None));
    }
    let digit = |i: usize| u32::from(u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]));
    let text = || Some(numeric_text(v));
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(Refusal::new("NaN, which a decimal cannot hold", text())),
        _ => {
            return Err(Refusal::new(
                "infinity, which a decimal cannot hold",
                text(),
            ));
        }
    }
    let scale_i = i32::from(scale);
    let too_precise = || Refusal::new(format!("more than {scale} digits after the point"), text());
    let too_large = || {
        Refusal::new(
            format!(
                "more than {} digits before the point",
                i32::from(precision) - scale_i
            ),
            text(),
        )
    };
    let mut acc = W::ZERO;
    // The power of ten of the last digit taken.
    let mut low: Option<i32> = None;
    for i in 0..ndigits {
        let d = digit(i);
        let e = 4 * (weight - i as i32);
        if e >= -scale_i {
            acc = acc.mul_add(10_000, d).ok_or_else(too_large)?;
            low = Some(e);
        } else {
            for j in 0..4u32 {
                let p = e + 3 - j as i32;
                let dd = d / 10u32.pow(3 - j) % 10;
                if p >= -scale_i {
                    acc = acc.mul_add(10, dd).ok_or_else(too_large)?;
                    low = Some(p);
                } else if dd != 0 {
                    return Err(too_precise());
                }
            }
        }
    }
    if let Some(low) = low {
        for _ in 0..(low + scale_i) {
            acc = acc.mul_add(10, 0).ok_or_else(too_large)?;
        }
    }
    // |acc| < 10^precision.
    let mut limit = W::small(1);
    for _ in 0..precision {
        limit = limit.mul_add(10, 0).ok_or_else(too_large)?;
    }
    if acc >= limit {
        return Err(too_large());
    }
    Ok(if sign == 0x4000 { acc.neg() } else { acc })
}

/// A binary `numeric` as PostgreSQL prints it (for messages).
fn numeric_text(v: &[u8]) -> String {
    let ndigits = usize::from(u16::from_be_bytes([v[0], v[1]]));
    let weight = i32::from(i16::from_be_bytes([v[2], v[3]]));
    let sign = u16::from_be_bytes([v[4], v[5]]);
    let dscale = usize::from(u16::from_be_bytes([v[6], v[7]]));
    match sign {
        0xC000 => return "NaN".to_owned(),
        0xD000 => return "Infinity".to_owned(),
        0xF000 => return "-Infinity".to_owned(),
        _ => {}
    }
    let digit = |i: i32| -> u32 {
        if i < 0 || i as usize >= ndigits {
            0
        } else {
            let i = i as usize;
            u32::from(u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]))
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            if i == 0 {
                s.push_str(&d.to_string());
            } else {
                s.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary form of a numeric from base-10000 digits.
    fn numeric(digits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn batches_end_at_their_rows_or_their_bytes() {
        let columns = [ExportColumn {
            name: "doc".to_owned(),
            source_type: "text".to_owned(),
            kind: Kind::Text,
            select: "doc".to_owned(),
        }];
        let tuple = |len: usize| {
            let mut t = 1i16.to_be_bytes().to_vec();
            t.extend_from_slice(&u32::try_from(len).expect("len").to_be_bytes());
            t.extend(std::iter::repeat_n(b'x', len));
            t
        };
        // Three rows of 7 MiB, then three small ones: a batch ends at its
        // rows (2 here) or once 16 MiB of values are in it.
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&[0; 8]);
        for len in [7 << 20, 7 << 20, 7 << 20, 1, 2, 3] {
            stream.extend(tuple(len));
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let sizes = |batch_rows: usize| {
            let mut decoder = Decoder::new(&columns, "t", batch_rows, ArrayNulls::Keep);
            let mut sizes = Vec::new();
            let mut out = |b: RecordBatch| {
                sizes.push(b.num_rows());
                Ok(())
            };
            decoder.feed(&stream, &mut out).expect("decoded");
            decoder.finish(&mut out).expect("ended");
            sizes
        };
        assert_eq!(sizes(2), vec![2, 2, 2]);
        assert_eq!(
            sizes(8192),
            vec![3, 3],
            "16 MiB reached within the third row"
        );
    }

    #[test]
    fn numerics_scale_exactly_or_are_refused() {
        // 12345.67 = [1, 2345, 6700], weight 1
        let n = numeric(&[1, 2345, 6700], 1, false, 2);
        assert_eq!(scaled::<i128>(&n, 10, 2).ok(), Some(1_234_567));
        assert_eq!(scaled::<i128>(&n, 10, 4).ok(), Some(123_456_700));
        assert_eq!(numeric_text(&n), "12345.67");
        let refused = scaled::<i128>(&n, 10, 1).err().map(|r| r.message);
        assert_eq!(
            refused.as_deref(),
            Some("more than 1 digits after the point")
        );
        assert!(scaled::<i128>(&n, 6, 2).is_err());
        // -0.0001 = [1], weight -1
        let n = numeric(&[1], -1, true, 4);
        assert_eq!(scaled::<i128>(&n, 9, 4).ok(), Some(-1));
        assert_eq!(numeric_text(&n), "-0.0001");
        // 1e20 = [1], weight 5
        let n = numeric(&[1], 5, false, 0);
        assert_eq!(scaled::<i128>(&n, 38, 9).ok(), Some(10i128.pow(29)));
        assert_eq!(
            scaled::<i256>(&n, 76, 38).ok(),
            Some(i256::from_i128(10i128.pow(20)).wrapping_mul(i256::from_i128(10i128.pow(38))))
        );
        // zero
        let n = numeric(&[], 0, false, 0);
        assert_eq!(scaled::<i128>(&n, 5, 2).ok(), Some(0));
        // NaN
        let mut nan = numeric(&[], 0, false, 0);
        nan[4] = 0xC0;
        assert!(scaled::<i128>(&nan, 5, 2).is_err());
    }

    #[test]
    fn uuids_print_as_postgres_does() {
        let bytes: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid_text(&bytes), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }

    #[test]
    fn a_refused_row_is_named_by_its_key_where_it_prints() {
        let column = |name: &str, kind: Kind| ExportColumn {
            name: name.to_owned(),
            source_type: String::new(),
            kind,
            select: name.to_owned(),
        };
        let columns = [
            column("region", Kind::Text),
            column("id", Kind::Int64),
            column(
                "n",
                Kind::Decimal {
                    precision: 5,
                    scale: 2,
                },
            ),
        ];
        let mut nan = numeric(&[], 0, false, 0);
        nan[4] = 0xC0;
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&[0; 8]);
        for (region, id, n) in [
            (&b"eu"[..], 7i64, numeric(&[1], 0, false, 0)),
            (b"o'k", 8, nan),
        ] {
            stream.extend_from_slice(&3i16.to_be_bytes());
            for value in [region, &id.to_be_bytes()[..], &n] {
                stream.extend_from_slice(&(value.len() as u32).to_be_bytes());
                stream.extend_from_slice(value);
            }
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let refusal = |key: &[&str]| {
            let key: Vec<String> = key.iter().map(|k| (*k).to_owned()).collect();
            let mut decoder =
                Decoder::new(&columns, "public.t", 10, ArrayNulls::Keep).naming_rows_by(&key);
            decoder
                .feed(&stream, &mut |_| Ok(()))
                .expect_err("NaN is refused")
                .to_string()
        };
        let named = refusal(&["region", "id"]);
        assert!(
            named.starts_with("public.t, row 2 (region = 'o''k', id = 8), column \"n\": "),
            "{named}"
        );
        // Without a key, or with one not read: by its number only.
        assert!(refusal(&[]).starts_with("public.t, row 2, column \"n\""));
        assert!(refusal(&["missing"]).starts_with("public.t, row 2, column \"n\""));
    }
}
