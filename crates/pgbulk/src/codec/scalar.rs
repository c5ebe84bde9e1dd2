//! Text to binary for the scalar types that need no calendar or decimal
//! arithmetic.

use std::net::IpAddr;

use super::{EncodeError, Encoded, invalid, out_of_range};

/// `boolean`: `t`, `true`, `yes`, `on`, `1` and their opposites, any case,
/// unique prefixes, surrounding white space.
pub(super) fn bool(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = super::trim_space(text).as_bytes();
    let is_prefix = |word: &str, min: usize| {
        t.len() >= min
            && t.len() <= word.len()
            && word.as_bytes()[..t.len()].eq_ignore_ascii_case(t)
    };
    let value = if is_prefix("true", 1)
        || is_prefix("yes", 1)
        || t.eq_ignore_ascii_case(b"on")
        || t == b"1"
    {
        true
    } else if is_prefix("false", 1) || is_prefix("no", 1) || is_prefix("off", 2) || t == b"0" {
        false
    } else {
        return Err(invalid("boolean", text));
    };
    out.push(u8::from(value));
    Ok(())
}

fn int(text: &str, type_name: &str) -> Result<i64, EncodeError> {
    // The common case: plain digits, at most 18 of them (cannot overflow).
    let b = text.as_bytes();
    if !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit) {
        return Ok(b.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')));
    }
    let t = super::trim_space(text);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(type_name, text));
    }
    t.parse::<i64>().map_err(|_| out_of_range(type_name, text))
}

pub(super) fn int2(text: &str, out: &mut Vec<u8>) -> Encoded {
    let v = i16::try_from(int(text, "smallint")?).map_err(|_| out_of_range("smallint", text))?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn int4(text: &str, out: &mut Vec<u8>) -> Encoded {
    let v = i32::try_from(int(text, "integer")?).map_err(|_| out_of_range("integer", text))?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn int8(text: &str, out: &mut Vec<u8>) -> Encoded {
    let v = int(text, "bigint")?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Whether `t` spells an infinity or NaN, which Rust and PostgreSQL both
/// accept.
fn is_special(t: &str) -> bool {
    let t = t.trim_start_matches(['+', '-']);
    ["inf", "infinity", "nan"]
        .iter()
        .any(|word| t.eq_ignore_ascii_case(word))
}

/// The float's spelling without surrounding spaces, if it is one.
fn float_text<'a>(text: &'a str, type_name: &str) -> Result<&'a str, EncodeError> {
    let t = super::trim_space(text);
    let ok = !t.is_empty()
        && (t
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
            || is_special(t));
    if ok {
        Ok(t)
    } else {
        Err(invalid(type_name, text))
    }
}

/// Whether a finite, non-special spelling holds a non-zero digit before any
/// exponent (so a parsed zero means underflow).
fn has_nonzero_mantissa(t: &str) -> bool {
    t.split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().any(|b| (b'1'..=b'9').contains(&b)))
}

pub(super) fn float4(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = float_text(text, "real")?;
    let v: f32 = t.parse().map_err(|_| invalid("real", text))?;
    if (v.is_infinite() && !is_special(t)) || (v == 0.0 && has_nonzero_mantissa(t)) {
        return Err(out_of_range("real", text));
    }
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn float8(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = float_text(text, "double precision")?;
    let v: f64 = t.parse().map_err(|_| invalid("double precision", text))?;
    if (v.is_infinite() && !is_special(t)) || (v == 0.0 && has_nonzero_mantissa(t)) {
        return Err(out_of_range("double precision", text));
    }
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Text is sent as is; PostgreSQL text cannot hold a NUL character.
pub(super) fn text(text: &str, out: &mut Vec<u8>) -> Encoded {
    if let Some(at) = memchr::memchr(0, text.as_bytes()) {
        return Err(EncodeError::new(format!(
            "invalid byte sequence for encoding \"UTF8\": 0x00 (a NUL character at position {})",
            text[..at].chars().count() + 1
        )));
    }
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Text for `varchar(n)` / `char(n)`: at most `max` characters, beyond
/// which only spaces may follow (and are cut).
pub(super) fn bounded_text(text: &str, max: u32, type_name: &str, out: &mut Vec<u8>) -> Encoded {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    match text.char_indices().nth(max) {
        None => self::text(text, out),
        Some((cut, _)) if text[cut..].bytes().all(|b| b == b' ') => self::text(&text[..cut], out),
        Some(_) => Err(EncodeError::new(format!(
            "value too long for type {type_name}: \"{}\"",
            super::shorten(text)
        ))),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `bytea`: hex format (`\x...`, white space between pairs allowed) or the
/// escape format (`\\`, `\nnn` octal).
pub(super) fn bytea(text: &str, out: &mut Vec<u8>) -> Encoded {
    let bytes = text.as_bytes();
    if let Some(hex) = text.strip_prefix("\\x") {
        // As the server reads it: white space only between pairs.
        let hex = hex.as_bytes();
        let mut i = 0;
        while i < hex.len() {
            if matches!(hex[i], b' ' | b'\n' | b'\t' | b'\r') {
                i += 1;
                continue;
            }
            let hi = hex_val(hex[i]).ok_or_else(|| invalid("bytea", text))?;
            let lo = hex
                .get(i + 1)
                .and_then(|b| hex_val(*b))
                .ok_or_else(|| invalid("bytea", text))?;
            out.push(hi << 4 | lo);
            i += 2;
        }
        return Ok(());
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| d[0] <= b'3' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
                .ok_or_else(|| invalid("bytea", text))?;
            out.push((octal[0] - b'0') << 6 | (octal[1] - b'0') << 3 | (octal[2] - b'0'));
            i += 4;
        }
    }
    Ok(())
}

/// `uuid`: 32 hex digits, optionally in braces, hyphens after any group of
/// four digits.
pub(super) fn uuid(text: &str, out: &mut Vec<u8>) -> Encoded {
    if let Some(bytes) = canonical_uuid(text.as_bytes()) {
        out.extend_from_slice(&bytes);
        return Ok(());
    }
    // uuid_in reads the characters as they are: no white space around.
    let t = text;
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(t);
    let mut bytes = [0u8; 16];
    let mut n = 0;
    let mut since_hyphen = 0;
    for (i, b) in inner.bytes().enumerate() {
        if b == b'-' {
            if i == 0 || since_hyphen % 4 != 0 || since_hyphen == 0 || n == 32 {
                return Err(invalid("uuid", text));
            }
            since_hyphen = 0;
            continue;
        }
        let v = hex_val(b).ok_or_else(|| invalid("uuid", text))?;
        if n == 32 {
            return Err(invalid("uuid", text));
        }
        bytes[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
        n += 1;
        since_hyphen += 1;
    }
    if n != 32 || inner.ends_with('-') {
        return Err(invalid("uuid", text));
    }
    out.extend_from_slice(&bytes);
    Ok(())
}

/// The usual form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in either case,
/// read without branching per character; anything else is `None`.
fn canonical_uuid(t: &[u8]) -> Option<[u8; 16]> {
    if t.len() != 36 || t[8] != b'-' || t[13] != b'-' || t[18] != b'-' || t[23] != b'-' {
        return None;
    }
    // Where each byte's two digits start.
    const PAIRS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut bytes = [0u8; 16];
    let mut bad = 0u8;
    for (byte, &i) in bytes.iter_mut().zip(&PAIRS) {
        let (hi, lo) = (HEX[usize::from(t[i])], HEX[usize::from(t[i + 1])]);
        bad |= (hi | lo) & 0x10;
        *byte = ((hi & 0x0F) << 4) | (lo & 0x0F);
    }
    (bad == 0).then_some(bytes)
}

/// Hexadecimal digit values; 0x10 marks a byte that is not one.
static HEX: [u8; 256] = {
    let mut table = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// `inet` / `cidr`: an address with an optional `/bits`.
pub(super) fn inet(text: &str, cidr: bool, out: &mut Vec<u8>) -> Encoded {
    let type_name = if cidr { "cidr" } else { "inet" };
    let t = super::trim_space(text);
    let (addr, bits) = match t.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    };
    // Four dotted octets or an IPv6 address; abbreviated networks
    // (`10/8`, classful `222.105.29`) are the server's to read.
    let addr: IpAddr = addr.parse().map_err(|_| invalid(type_name, text))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits: u8 = match bits {
        Some(b) if !b.is_empty() && b.len() <= 3 && b.bytes().all(|d| d.is_ascii_digit()) => b
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| invalid(type_name, text))?,
        Some(_) => return Err(invalid(type_name, text)),
        None => max,
    };
    let octets: Vec<u8> = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    if cidr {
        let host_bits_set = octets.iter().enumerate().any(|(i, o)| {
            let start = i * 8;
            let keep = usize::from(bits).saturating_sub(start).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            o & !mask != 0
        });
        if host_bits_set {
            return Err(EncodeError::new(format!(
                "invalid cidr value: \"{}\" (value has bits set to right of mask)",
                super::shorten(text)
            )));
        }
    }
    // PostgreSQL's own family numbers: 2 for IPv4, 3 for IPv6.
    out.push(if addr.is_ipv4() { 2 } else { 3 });
    out.push(bits);
    out.push(u8::from(cidr));
    out.push(u8::try_from(octets.len()).unwrap_or(16));
    out.extend_from_slice(&octets);
    Ok(())
}

/// `macaddr` in its output form: six pairs of hex digits separated by `:`
/// (or all by `-`). Its other spellings are the server's to read.
pub(super) fn macaddr(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = text.as_bytes();
    let separator = t.get(2).copied().unwrap_or(0);
    if t.len() != 17 || !matches!(separator, b':' | b'-') {
        return Err(invalid("macaddr", text));
    }
    let mut bytes = [0u8; 6];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let at = i * 3;
        if i > 0 && t[at - 1] != separator {
            return Err(invalid("macaddr", text));
        }
        let hi = hex_val(t[at]).ok_or_else(|| invalid("macaddr", text))?;
        let lo = hex_val(t[at + 1]).ok_or_else(|| invalid("macaddr", text))?;
        *byte = hi << 4 | lo;
    }
    out.extend_from_slice(&bytes);
    Ok(())
}

/// `json` / `jsonb`: the text as is, once [`super::json::accepted`] found
/// the server takes it (so a bad document is a bad row with its position,
/// not a failed COPY); any other text is the server's to judge.
pub(super) fn json(text: &str, jsonb: bool, out: &mut Vec<u8>) -> Encoded {
    let type_name = if jsonb { "jsonb" } else { "json" };
    if !super::json::accepted(text, jsonb) {
        return Err(invalid(type_name, text));
    }
    if jsonb {
        out.push(1);
    }
    self::text(text, out)
}
