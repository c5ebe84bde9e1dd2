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
    /// PostgreSQL's text format: `quote` is its backslash, and a field
    /// with one is left to the row-by-row path (but a whole `\N` when it
    /// is the NULL string).
    pub(super) text: bool,
    /// Per field of a record: the column it fills, or `None` (skipped).
    pub(super) fields: Vec<Option<&'a Column>>,
    /// An unquoted `\N` field is left to the row-by-row path (which fails
    /// it, see [`crate::csv::Reader::refuse_text_null`]).
    pub(super) refuse_text_null: bool,
    /// Per field, empty when none has one: the type of its column when
    /// this run inferred it; a value it would store only in part (see
    /// [`crate::infer::dropped_by`]) is left to the row-by-row path, which
    /// fails it.
    pub(super) guards: Vec<Option<&'a str>>,
    /// Per field (empty: none): an empty field is NULL (see
    /// [`crate::infer::empty_is_null`]).
    pub(super) empty_nulls: Vec<bool>,
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
    let mut checked = Checked::default();
    'records: while out.len() < until && run.records < max_records && run.consumed < starts_before {
        let mark = out.len();
        let mut at = run.consumed;
        out.extend_from_slice(&width.to_be_bytes());
        for (i, column) in plan.fields.iter().enumerate() {
            let rest = &buf[at..];
            let terminator = if i == last { b'\n' } else { plan.delimiter };
            // The field's length in the buffer, and where its value is:
            // in `value` (`None`), or at these bytes of the buffer.
            let field = if plan.text && rest.first() == Some(&plan.quote) {
                // A whole `\N` is NULL when it is the NULL string (else
                // it is `N`, which the row-by-row path undoes).
                (plan.null == b"\\N"
                    && rest.get(1) == Some(&b'N')
                    && rest.get(2) == Some(&terminator))
                .then_some((2, Some((at, at + 2)), false))
            } else if rest.first() == Some(&plan.quote) {
                quoted(plan, rest, terminator, &mut value)
                    .map(|(len, copied)| (len, (!copied).then_some((at + 1, at + len - 1)), true))
            } else {
                match find_special(rest, plan.delimiter, plan.quote) {
                    Some(end) if rest[end] == terminator => {
                        Some((end, Some((at, at + end)), false))
                    }
                    _ => None,
                }
            };
            // A quote inside a field, a carriage return, too many or too
            // few fields, or the record goes on past the buffer.
            let Some((len, place, quoted)) = field else {
                out.truncate(mark);
                break 'records;
            };
            let bytes = match place {
                Some((from, to)) => &buf[from..to],
                None => &value[..],
            };
            let is_null = (!quoted && bytes == plan.null)
                || (bytes.is_empty() && plan.empty_nulls.get(i) == Some(&true));
            let refused = (plan.refuse_text_null && !quoted && bytes == b"\\N")
                || (!is_null
                    && plan.guards.get(i).copied().flatten().is_some_and(|ty| {
                        std::str::from_utf8(bytes)
                            .is_ok_and(|v| crate::infer::dropped_by(ty, v).is_some())
                    }));
            if refused {
                out.truncate(mark);
                break 'records;
            }
            // A blank line is no record.
            let blank = last == 0 && len == 0;
            let written = !blank
                && bytes.len() <= plan.max_field
                && match column {
                    None => true,
                    Some(column) if is_null => {
                        out.extend_from_slice(&(-1i32).to_be_bytes());
                        !column.not_null
                    }
                    Some(_) if plan.ascii_only && !bytes.is_ascii() => false,
                    Some(column) => {
                        let known = place.and_then(|(from, to)| checked.get(buf, from, to));
                        encode_field_bytes(bytes, known, &column.ty, out)
                    }
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

/// Bytes of a buffer known to be UTF-8, checked a block at a time (one
/// check of 64 KiB costs less than one per field), and whether they hold
/// a NUL.
#[derive(Default)]
struct Checked<'b> {
    /// Where `text` starts in the buffer.
    start: usize,
    text: &'b str,
    nul_free: bool,
}

impl<'b> Checked<'b> {
    /// Bytes checked at once.
    const BLOCK: usize = 64 << 10;

    /// Bytes `from..to` of `buf` as text, and whether they are known to
    /// hold no NUL; `None` when they are not UTF-8 (or are cut by the
    /// buffer's end), for the caller to check them itself.
    fn get(&mut self, buf: &'b [u8], from: usize, to: usize) -> Option<(&'b str, bool)> {
        if from < self.start || to > self.start + self.text.len() {
            let block = &buf[from..buf.len().min(to.max(from + Self::BLOCK))];
            let valid = match std::str::from_utf8(block) {
                Ok(text) => text,
                Err(e) => std::str::from_utf8(&block[..e.valid_up_to()]).unwrap_or_default(),
            };
            *self = Self {
                start: from,
                text: valid,
                nul_free: memchr::memchr(0, valid.as_bytes()).is_none(),
            };
        }
        let text = self.text.get(from - self.start..to - self.start)?;
        Some((text, self.nul_free))
    }
}

/// Reads the field at the start of `rest`, quoted whole and ending on its
/// line in `terminator`: its length in `rest` (the terminator left out)
/// and whether its value was copied into `value` (it holds a doubled
/// quote or an escape; else the value is the bytes between the quotes),
/// or `None` for a field this path does not take (one that spans lines,
/// goes on after its closing quote or past the buffer).
fn quoted(
    plan: &Plan<'_>,
    rest: &[u8],
    terminator: u8,
    value: &mut Vec<u8>,
) -> Option<(usize, bool)> {
    value.clear();
    let mut copied = false;
    let mut at = 1;
    loop {
        let stop = if plan.escape == plan.quote {
            memchr::memchr2(plan.quote, b'\n', &rest[at..])
        } else {
            memchr::memchr3(plan.quote, plan.escape, b'\n', &rest[at..])
        }?;
        if copied {
            value.extend_from_slice(&rest[at..at + stop]);
        }
        at += stop;
        let (b, next) = (rest[at], *rest.get(at + 1)?);
        if b == b'\n' {
            return None;
        }
        if b == plan.escape && (next == plan.quote || next == plan.escape) {
            if !copied {
                value.extend_from_slice(&rest[1..at]);
                copied = true;
            }
            value.push(next);
            at += 2;
        } else if b == plan.quote {
            // The closing quote.
            return (next == terminator).then_some((at + 1, copied));
        } else {
            // An escape before anything else is itself.
            if copied {
                value.push(b);
            }
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests;
