//! `numeric`: decimal text to PostgreSQL's base-10000 binary form.

use super::{EncodeError, Encoded, invalid};

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;
const NAN: u16 = 0xC000;

/// Encodes a value for `numeric(p, s)` (`precision_scale`) or plain
/// `numeric`: values that fit are sent exactly (the server rounds them to
/// the scale as its own input would); a value that is too large, or that
/// rounding could make too large, or any value of a negative scale, is
/// the server's to round or refuse.
pub(super) fn encode_within(
    text: &str,
    precision_scale: Option<(u32, i32)>,
    out: &mut Vec<u8>,
) -> Encoded {
    if let Some((precision, scale)) = precision_scale {
        if !fits(text, precision, scale) {
            return Err(EncodeError::for_server_because(format!(
                "numeric field overflow: \"{}\" does not fit numeric({precision},{scale})",
                super::shorten(text)
            )));
        }
    }
    encode(text, out)
}

/// A plain decimal: `[+-]digits[.digits][e[+-]digits]`, its digits not yet
/// checked.
struct Decimal<'a> {
    negative: bool,
    int_part: &'a [u8],
    frac_part: &'a [u8],
    exponent: i64,
}

impl<'a> Decimal<'a> {
    /// Splits `body` (the text without its sign) into its parts; `None`
    /// when the exponent is not an integer.
    fn split(negative: bool, body: &'a str) -> Option<Self> {
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], body[at + 1..].parse::<i64>().ok()?),
            None => (body, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        Some(Self {
            negative,
            int_part: int_part.as_bytes(),
            frac_part: frac_part.as_bytes(),
            exponent,
        })
    }

    /// Whether it has a digit and only digits.
    fn is_plain(&self) -> bool {
        !(self.int_part.is_empty() && self.frac_part.is_empty())
            && self.int_part.iter().all(u8::is_ascii_digit)
            && self.frac_part.iter().all(u8::is_ascii_digit)
    }

    /// Digit `j` of the integer then the fraction digits.
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.int_part.iter().chain(self.frac_part).map(|b| b - b'0')
    }

    /// Where the decimal point falls among [`Decimal::digits`].
    fn point(&self) -> i64 {
        i64::try_from(self.int_part.len()).unwrap_or(i64::MAX) + self.exponent
    }
}

/// The sign and the rest of `text` (white space around it dropped).
fn signed(text: &str) -> (bool, &str) {
    let t = super::trim_space(text);
    match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    }
}

/// Whether a plain decimal `text` fits `numeric(precision, scale)` without
/// rounding near the limit: its integer digits leave room, or it has no
/// digit beyond the scale that could round up into one more. Anything not
/// plainly decimal says yes (the encoder then decides).
fn fits(text: &str, precision: u32, scale: i32) -> bool {
    let (_, body) = signed(text);
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        // Infinities do not fit a typed numeric.
        return false;
    }
    let Some(d) = Decimal::split(false, body).filter(|d| d.exponent.abs() <= 100_000) else {
        return true;
    };
    if !d.is_plain() {
        return true;
    }
    if scale < 0 {
        return false;
    }
    let point = d.point();
    let Some(lead) = d.digits().position(|x| x != 0) else {
        return true;
    };
    let int_digits = (point - i64::try_from(lead).unwrap_or(0)).max(0);
    let room = i64::from(precision) - i64::from(scale);
    if int_digits != room {
        return int_digits < room;
    }
    // A nonzero digit past the scale is rounded away, possibly up.
    let first_beyond = usize::try_from((point + i64::from(scale)).max(0)).unwrap_or(usize::MAX);
    !d.digits().skip(first_beyond).any(|x| x != 0)
}

/// Encodes `[+-]digits[.digits][e[+-]digits]`, `NaN`, `Infinity`, `inf`
/// (any case, surrounding white space), unconstrained.
pub(super) fn encode(text: &str, out: &mut Vec<u8>) -> Encoded {
    let (negative, body) = signed(text);
    let unsigned = body.len() == super::trim_space(text).len();
    if body.eq_ignore_ascii_case("nan") && unsigned {
        return special(NAN, out);
    }
    if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
        // PostgreSQL 14 added numeric infinities; 13 refuses their binary
        // form. The server's input decides, in its own words.
        return Err(EncodeError::for_server("numeric", text));
    }
    let d = Decimal::split(negative, body).ok_or_else(|| invalid("numeric", text))?;
    if !d.is_plain() {
        return Err(invalid("numeric", text));
    }
    if d.exponent.abs() > 100_000 {
        return Err(EncodeError::for_server("numeric", text));
    }
    let frac_len = i64::try_from(d.frac_part.len()).unwrap_or(i64::MAX);
    let dscale = (frac_len - d.exponent).max(0);
    // Beyond what this encoder writes: the server says whether it fits.
    let overflow = || EncodeError::for_server("numeric", text);
    let dscale = u16::try_from(dscale)
        .ok()
        .filter(|d| *d <= 0x3FFF)
        .ok_or_else(overflow)?;
    // Digit j (of int_part ++ frac_part) is worth 10^(point - 1 - j); it
    // lands in the base-10000 group of weight floor(x / 4).
    let n = i64::try_from(d.int_part.len() + d.frac_part.len()).unwrap_or(i64::MAX);
    let point = d.point();
    let (w_hi, w_lo) = ((point - 1).div_euclid(4), (point - n).div_euclid(4));
    let count = usize::try_from(w_hi - w_lo + 1).unwrap_or(0);
    let mut stack = [0i16; 32];
    let mut heap = Vec::new();
    let groups: &mut [i16] = if count <= stack.len() {
        &mut stack[..count]
    } else {
        heap.resize(count, 0);
        &mut heap
    };
    const POW: [i16; 4] = [1, 10, 100, 1000];
    // The first digit's place; each next digit is one place lower, moving
    // to the next group after the units place of a group.
    let x = point - 1;
    let mut slot = usize::try_from(w_hi - x.div_euclid(4)).unwrap_or(0);
    let mut r = usize::try_from(x.rem_euclid(4)).unwrap_or(0);
    for digit in d.digits() {
        groups[slot] += i16::from(digit) * POW[r];
        if r == 0 {
            r = 3;
            slot += 1;
        } else {
            r -= 1;
        }
    }
    let first = groups.iter().position(|g| *g != 0);
    let Some(first) = first else {
        write(out, 0, 0, POSITIVE, dscale, &[]);
        return Ok(());
    };
    let last = groups.iter().rposition(|g| *g != 0).unwrap_or(first);
    let weight = i16::try_from(w_hi - i64::try_from(first).unwrap_or(0)).map_err(|_| overflow())?;
    let digits = &groups[first..=last];
    let ndigits = i16::try_from(digits.len()).map_err(|_| overflow())?;
    let sign = if d.negative { NEGATIVE } else { POSITIVE };
    write(out, ndigits, weight, sign, dscale, digits);
    Ok(())
}

fn special(sign: u16, out: &mut Vec<u8>) -> Encoded {
    write(out, 0, 0, sign, 0, &[]);
    Ok(())
}

/// Appends `numeric`'s binary form: the header, then the base-10000 groups.
pub(crate) fn write(
    out: &mut Vec<u8>,
    ndigits: i16,
    weight: i16,
    sign: u16,
    dscale: u16,
    groups: &[i16],
) {
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(text: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut out = Vec::new();
        encode(text, &mut out).expect("encodes");
        let word = |i: usize| [out[i], out[i + 1]];
        let n = i16::from_be_bytes(word(0));
        let groups = (0..usize::try_from(n).unwrap_or(0))
            .map(|k| i16::from_be_bytes(word(8 + 2 * k)))
            .collect();
        (
            n,
            i16::from_be_bytes(word(2)),
            u16::from_be_bytes(word(4)),
            u16::from_be_bytes(word(6)),
            groups,
        )
    }

    #[test]
    fn layout_matches_postgres() {
        assert_eq!(enc("0"), (0, 0, POSITIVE, 0, vec![]));
        assert_eq!(enc("0.00"), (0, 0, POSITIVE, 2, vec![]));
        assert_eq!(enc("1"), (1, 0, POSITIVE, 0, vec![1]));
        assert_eq!(enc("12345.678"), (3, 1, POSITIVE, 3, vec![1, 2345, 6780]));
        assert_eq!(enc("-0.0001"), (1, -1, NEGATIVE, 4, vec![1]));
        assert_eq!(enc("10000"), (1, 1, POSITIVE, 0, vec![1]));
        assert_eq!(enc("1.5e3"), (1, 0, POSITIVE, 0, vec![1500]));
        assert_eq!(enc("15e-5"), (2, -1, POSITIVE, 5, vec![1, 5000]));
        assert_eq!(enc(" NaN ").2, NAN);
        // Infinities are the server's (PostgreSQL 13 has none).
        for inf in ["-Infinity", "inf"] {
            assert!(encode(inf, &mut Vec::new()).expect_err(inf).is_for_server());
        }
    }

    #[test]
    fn rejects_what_postgres_rejects() {
        for bad in ["", ".", "1.2.3", "1e", "abc", "--1", "1 2", "-NaN"] {
            let mut out = Vec::new();
            assert!(encode(bad, &mut out).is_err(), "{bad:?}");
        }
    }
}
