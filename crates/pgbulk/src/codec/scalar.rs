//! Text to binary for the scalar types that need no calendar or decimal
//! arithmetic.

use std::net::IpAddr;

use super::{EncodeError, Encoded, invalid, out_of_range};

/// `boolean`: `t`, `true`, `yes`, `on`, `1` and their opposites, any case,
/// unique prefixes, surrounding white space.
pub(super) fn bool(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = text.trim().as_bytes();
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
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
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
    let t = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
    t == "inf" || t == "infinity" || t == "nan"
}

fn float_text(text: &str, type_name: &str) -> Result<String, EncodeError> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let ok = !t.is_empty()
        && (is_special(t)
            || t.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')));
    if ok {
        Ok(t.to_owned())
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
    if (v.is_infinite() && !is_special(&t)) || (v == 0.0 && has_nonzero_mantissa(&t)) {
        return Err(out_of_range("real", text));
    }
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn float8(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = float_text(text, "double precision")?;
    let v: f64 = t.parse().map_err(|_| invalid("double precision", text))?;
    if (v.is_infinite() && !is_special(&t)) || (v == 0.0 && has_nonzero_mantissa(&t)) {
        return Err(out_of_range("double precision", text));
    }
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Text is sent as is; PostgreSQL text cannot hold a NUL character.
pub(super) fn text(text: &str, out: &mut Vec<u8>) -> Encoded {
    if let Some(at) = text.find('\0') {
        return Err(EncodeError(format!(
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
        Some(_) => Err(EncodeError(format!(
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
        let mut digits = hex.bytes().filter(|b| !b.is_ascii_whitespace());
        while let Some(hi) = digits.next() {
            let hi = hex_val(hi).ok_or_else(|| {
                EncodeError(format!("invalid hexadecimal digit: \"{}\"", char::from(hi)))
            })?;
            let lo = digits.next().ok_or_else(|| {
                EncodeError("invalid hexadecimal data: odd number of digits".to_owned())
            })?;
            let lo = hex_val(lo).ok_or_else(|| {
                EncodeError(format!("invalid hexadecimal digit: \"{}\"", char::from(lo)))
            })?;
            out.push(hi << 4 | lo);
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
    let t = text.trim();
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

/// `inet` / `cidr`: an address with an optional `/bits`.
pub(super) fn inet(text: &str, cidr: bool, out: &mut Vec<u8>) -> Encoded {
    let type_name = if cidr { "cidr" } else { "inet" };
    let t = text.trim();
    let (addr, bits) = match t.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (t, None),
    };
    let addr: IpAddr = match addr.parse() {
        Ok(a) => a,
        // cidr accepts abbreviated IPv4 networks such as 10/8 or 192.168/16.
        Err(_) if cidr && !addr.contains(':') => {
            let parts: Vec<&str> = addr.split('.').collect();
            if parts.is_empty() || parts.len() > 4 {
                return Err(invalid(type_name, text));
            }
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip(&parts) {
                *o = p.parse().map_err(|_| invalid(type_name, text))?;
            }
            IpAddr::from(octets)
        }
        Err(_) => return Err(invalid(type_name, text)),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits: u8 = match bits {
        Some(b) => b
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| invalid(type_name, text))?,
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
            return Err(EncodeError(format!(
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

/// `macaddr`: six bytes in any of PostgreSQL's spellings
/// (`08:00:2b:01:02:03`, `08-00-2b-01-02-03`, `08002b:010203`,
/// `0800.2b01.0203`, `08002b010203`, ...).
pub(super) fn macaddr(text: &str, out: &mut Vec<u8>) -> Encoded {
    let t = text.trim();
    let digits: Vec<u8> = t
        .bytes()
        .filter(|b| !matches!(b, b':' | b'-' | b'.'))
        .map(hex_val)
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("macaddr", text))?;
    let separators: String = t.chars().filter(|c| matches!(c, ':' | '-' | '.')).collect();
    let groups: Vec<usize> = t.split([':', '-', '.']).map(str::len).collect();
    let shape_ok = match separators.len() {
        0 => true,
        1 => groups == [6, 6],
        2 => groups == [4, 4, 4],
        5 => groups.iter().all(|g| *g == 2),
        _ => false,
    };
    let one_kind = separators.chars().all(|c| separators.starts_with(c));
    if digits.len() != 12 || !shape_ok || !one_kind {
        return Err(invalid("macaddr", text));
    }
    out.extend(digits.chunks(2).map(|p| p[0] << 4 | p[1]));
    Ok(())
}
