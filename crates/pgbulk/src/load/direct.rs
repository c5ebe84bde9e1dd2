//! Records encoded straight from the reader's buffer into binary COPY
//! tuples. Most records of a big file are one line with no carriage
//! return, whose fields are plain or quoted whole (`"a,""b"""`), holding
//! values the encoder converts itself (ASCII ones, in an input of another
//! encoding than UTF-8): those skip the copy into a row of
//! text fields and the engine's work per field. Any other record (a field
//! spanning lines or quoted in part, a blank line, the wrong number of
//! fields, a value that does not convert or that the server converts, cut
//! by the end of the buffer) stops the run and is left for the row-by-row
//! path, which reads it, names what is wrong with it or leaves a value to
//! the server.

use crate::catalog::Column;
use crate::codec::encode_field_bytes;
use crate::csv::find_special;

/// How the records of one input are read and encoded.
pub(super) struct Plan<'a> {
    pub(super) delimiter: u8,
    pub(super) quote: u8,
    pub(super) escape: u8,
    /// An unquoted field equal to this is NULL.
    pub(super) null: &'a [u8],
    /// Per field of a record: the column it fills, or `None` (skipped).
    pub(super) fields: Vec<Option<&'a Column>>,
    /// A longer field is left to the row-by-row path (which fails it).
    pub(super) max_field: usize,
    /// The input is in another encoding than UTF-8 (an ASCII-compatible
    /// one): a value with a byte beyond ASCII is left to the row-by-row
    /// path, which decodes it.
    pub(super) ascii_only: bool,
}

/// What [`encode`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Run {
    /// Bytes of the buffer read (whole records).
    pub(super) consumed: usize,
    /// Records encoded, one tuple each.
    pub(super) records: u64,
}

/// Encodes the records at the start of `buf` into `out`, one tuple of the
/// plan's columns each, while `out` is shorter than `until`, fewer than
/// `max_records` are encoded, the next record starts before byte
/// `starts_before` and it is one this path takes (see the module). What
/// is written is exactly what the row-by-row path writes for the same
/// records.
pub(super) fn encode(
    plan: &Plan<'_>,
    buf: &[u8],
    out: &mut Vec<u8>,
    until: usize,
    max_records: u64,
    starts_before: usize,
) -> Run {
    let columns = plan.fields.iter().flatten().count();
    let Ok(width) = u16::try_from(columns) else {
        return Run::default();
    };
    // Records of no field would be read without end, none of them a byte.
    if plan.fields.is_empty() {
        return Run::default();
    }
    let mut run = Run::default();
    let last = plan.fields.len().saturating_sub(1);
    // A quoted field's value, its doubled quotes undone.
    let mut value = Vec::new();
    'records: while out.len() < until && run.records < max_records && run.consumed < starts_before {
        let mark = out.len();
        let mut at = run.consumed;
        out.extend_from_slice(&width.to_be_bytes());
        for (i, column) in plan.fields.iter().enumerate() {
            let rest = &buf[at..];
            let terminator = if i == last { b'\n' } else { plan.delimiter };
            let field = if rest.first() == Some(&plan.quote) {
                quoted(plan, rest, terminator, &mut value).map(|len| (len, &value[..], true))
            } else {
                match find_special(rest, plan.delimiter, plan.quote) {
                    Some(end) if rest[end] == terminator => Some((end, &rest[..end], false)),
                    _ => None,
                }
            };
            // A quote inside a field, a carriage return, too many or too
            // few fields, or the record goes on past the buffer.
            let Some((len, bytes, quoted)) = field else {
                out.truncate(mark);
                break 'records;
            };
            // A blank line is no record.
            let blank = last == 0 && len == 0;
            let written = !blank
                && bytes.len() <= plan.max_field
                && match column {
                    None => true,
                    Some(column) if !quoted && bytes == plan.null => {
                        out.extend_from_slice(&(-1i32).to_be_bytes());
                        !column.not_null
                    }
                    Some(_) if plan.ascii_only && !bytes.is_ascii() => false,
                    Some(column) => encode_field_bytes(bytes, &column.ty, out),
                };
            if !written {
                out.truncate(mark);
                break 'records;
            }
            at += len + 1;
        }
        run.consumed = at;
        run.records += 1;
    }
    run
}

/// Reads the field at the start of `rest`, quoted whole and ending on its
/// line in `terminator`, into `value`: its length in `rest` (the
/// terminator left out), or `None` for a field this path does not take
/// (one that spans lines, goes on after its closing quote or past the
/// buffer).
fn quoted(plan: &Plan<'_>, rest: &[u8], terminator: u8, value: &mut Vec<u8>) -> Option<usize> {
    value.clear();
    let mut at = 1;
    loop {
        let stop = if plan.escape == plan.quote {
            memchr::memchr2(plan.quote, b'\n', &rest[at..])
        } else {
            memchr::memchr3(plan.quote, plan.escape, b'\n', &rest[at..])
        }?;
        value.extend_from_slice(&rest[at..at + stop]);
        at += stop;
        let (b, next) = (rest[at], *rest.get(at + 1)?);
        if b == b'\n' {
            return None;
        }
        if b == plan.escape && (next == plan.quote || next == plan.escape) {
            value.push(next);
            at += 2;
        } else if b == plan.quote {
            // The closing quote.
            return (next == terminator).then_some(at + 1);
        } else {
            // An escape before anything else is itself.
            value.push(b);
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests;
