//! Dates, times, timestamps and intervals: ISO 8601 / PostgreSQL text forms
//! to microseconds and days since 2000-01-01.
//!
//! Accepted: `YYYY-MM-DD` (and `YYYYMMDD`) with optional ` BC`; times
//! `HH:MM[:SS[.ffffff]]`; a `T` or space between date and time; offsets `Z`,
//! `UTC`, `±HH`, `±HHMM`, `±HH:MM[:SS]`; `infinity`, `-infinity`, `epoch`;
//! intervals in PostgreSQL's unit form (`1 year 2 mons 3 days 04:05:06`,
//! `@ 1 hour ago`, `1.5 days`) and ISO 8601 (`P1Y2M3DT4H5M6.5S`).

use super::{EncodeError, Encoded, invalid, out_of_range};

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical years).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (astronomical year, month, day) of days
/// since 1970-01-01: the inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 2000-01-01 as PostgreSQL prints a date (ISO, `BC` for years
/// before 1).
pub(super) fn iso_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days) + PG_EPOCH_DAYS);
    if y > 0 {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// What a date/time text parsed to.
enum Parsed {
    Finite(i64),
    PosInfinity,
    NegInfinity,
}

fn special(t: &str) -> Option<Parsed> {
    // Dates start with a digit: skip the comparisons on the hot path.
    if t.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("+infinity") {
        Some(Parsed::PosInfinity)
    } else if t.eq_ignore_ascii_case("-infinity") {
        Some(Parsed::NegInfinity)
    } else if t.eq_ignore_ascii_case("epoch") {
        Some(Parsed::Finite(-PG_EPOCH_DAYS))
    } else {
        None
    }
}

/// Splits off a trailing ` BC` / ` AD`.
fn era(t: &str) -> (&str, bool) {
    let n = t.len();
    let tail = t.get(n.saturating_sub(3)..).unwrap_or("");
    if n >= 3 && tail.eq_ignore_ascii_case(" bc") {
        (t[..n - 3].trim_end_matches(super::is_space), true)
    } else if n >= 3 && tail.eq_ignore_ascii_case(" ad") {
        (t[..n - 3].trim_end_matches(super::is_space), false)
    } else {
        (t, false)
    }
}

/// `YYYY-MM-DD` or `YYYYMMDD` to days since 2000-01-01.
fn parse_date(s: &str, bc: bool) -> Option<i64> {
    let (y, m, d) = if let Some((y, rest)) = s.split_once('-') {
        let (m, d) = rest.split_once('-')?;
        (y, m, d)
    } else if s.len() == 8 && s.is_ascii() {
        (&s[..4], &s[4..6], &s[6..])
    } else {
        return None;
    };
    let num = |p: &str| -> Option<i64> {
        (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    // A year of fewer than four digits reads differently under each
    // DateStyle (`1-5-21` is 2021-01-05 in MDY): the server's to read.
    if y.len() < 4 {
        return None;
    }
    let (mut y, m, d) = (num(y)?, num(m)?, num(d)?);
    if y == 0 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(if bc { 1 - y } else { y }, m)
    {
        return None;
    }
    if bc {
        y = 1 - y;
    }
    Some(days_from_civil(y, m, d) - PG_EPOCH_DAYS)
}

/// `HH:MM[:SS[.ffffff]]` to microseconds since midnight. As PostgreSQL
/// reads it, `24` hours and `60` seconds are allowed but the whole may not
/// pass 24:00:00 (`12:30:60.5` is 12:31:00.5; `23:59:60.5` is refused).
fn parse_time(s: &str) -> Option<i64> {
    let mut parts = s.split(':');
    let h: i64 = digits(parts.next()?, 2)?;
    let m: i64 = digits(parts.next()?, 2)?;
    let (sec, frac) = match parts.next() {
        Some(sec) => match sec.split_once('.') {
            Some((s, f)) => (digits(s, 2)?, f),
            None => (digits(sec, 2)?, ""),
        },
        None => (0, ""),
    };
    if parts.next().is_some() || m > 59 || sec > 60 {
        return None;
    }
    // A bare trailing `.` is read differently by server versions (13
    // refuses `24:00:00.`): the server's to judge.
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (frac.is_empty() && s.ends_with('.')) {
        return None;
    }
    let micros = if frac.is_empty() {
        0
    } else {
        fraction_micros(frac.as_bytes())?
    };
    let total = ((h * 60 + m) * 60 + sec) * USECS_PER_SEC + micros;
    (total <= USECS_PER_DAY).then_some(total)
}

/// Microseconds of a fraction of a second given by its digits (those
/// after the point), as PostgreSQL reads them: the fraction as a double,
/// times 1e6, rounded half to even (rint), so ties round exactly as the
/// server rounds them. Up to six digits that is exactly the digits scaled
/// to microseconds (the double is within 1e-16 of the fraction: far from
/// a tie), read without a double.
fn fraction_micros(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() <= 6 {
        let value = digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        return Some(value * 10i64.pow(6 - digits.len() as u32));
    }
    let f: f64 = format!("0.{}", std::str::from_utf8(digits).ok()?)
        .parse()
        .ok()?;
    #[allow(clippy::cast_possible_truncation)]
    let us = (f * 1e6).round_ties_even() as i64;
    Some(us)
}

fn digits(s: &str, max_len: usize) -> Option<i64> {
    (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A trailing UTC offset, in seconds east: `Z`, `UTC`, `±HH`, `±HHMM`,
/// `±HH:MM[:SS]`. Returns the text before it.
fn split_offset(s: &str) -> Result<(&str, Option<i32>), ()> {
    let ends_with = |suffix: &str| {
        s.len() >= suffix.len()
            && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    for zulu in ["UTC", "GMT", "Z"] {
        if ends_with(zulu) {
            return Ok((
                s[..s.len() - zulu.len()].trim_end_matches(super::is_space),
                Some(0),
            ));
        }
    }
    // The sign of an offset comes after the time's colon-separated part.
    let time_start = s.rfind([' ', 'T', 't']).map_or(0, |i| i + 1);
    let Some(at) = s[time_start..].rfind(['+', '-']).map(|i| i + time_start) else {
        return Ok((s, None));
    };
    if at == 0 || (time_start == 0 && s[..at].matches('-').count() < 2 && !s[..at].contains(':')) {
        return Ok((s, None));
    }
    let sign = if s.as_bytes()[at] == b'-' { -1 } else { 1 };
    let zone = &s[at + 1..];
    let (h, m, sec) = if zone.contains(':') {
        let mut p = zone.split(':');
        let h = digits(p.next().ok_or(())?, 2).ok_or(())?;
        let m = digits(p.next().ok_or(())?, 2).ok_or(())?;
        let sec = p.next().map_or(Some(0), |x| digits(x, 2)).ok_or(())?;
        (h, m, sec)
    } else if zone.len() == 4 && zone.is_ascii() {
        (
            digits(&zone[..2], 2).ok_or(())?,
            digits(&zone[2..], 2).ok_or(())?,
            0,
        )
    } else {
        (digits(zone, 2).ok_or(())?, 0, 0)
    };
    if h > 15 || m > 59 || sec > 59 {
        return Err(());
    }
    let offset = i32::try_from(sign * (h * 3600 + m * 60 + sec)).map_err(|_| ())?;
    Ok((s[..at].trim_end_matches(super::is_space), Some(offset)))
}

/// `YYYY-MM-DD` exactly: the common case, without splitting or trimming.
pub(super) fn parse_iso_date(t: &[u8]) -> Option<i64> {
    if t.len() != 10 || t[4] != b'-' || t[7] != b'-' {
        return None;
    }
    let d = |r: std::ops::Range<usize>| -> Option<u32> {
        t[r].iter().try_fold(0u32, |acc, b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    let (y, m, day) = (d(0..4)?, d(5..7)?, d(8..10)?);
    (y > 0
        && (1..=12).contains(&m)
        && day >= 1
        && i64::from(day) <= days_in_month(i64::from(y), i64::from(m)))
    .then(|| days_from_civil_ad(y, m, day) - PG_EPOCH_DAYS)
}

/// [`days_from_civil`] of a date in a year from 1 on, in unsigned
/// arithmetic (the ISO dates of a big file take this way).
fn days_from_civil_ad(y: u32, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let (era, yoe) = (y / 400, y % 400);
    let doy = (153 * if m > 2 { m - 3 } else { m + 9 } + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i64::from(era * 146_097 + doe) - 719_468
}

pub(super) fn date(text: &str, out: &mut Vec<u8>) -> Encoded {
    if let Some(days) = parse_iso_date(text.as_bytes()) {
        // Years 1 to 9999: always in range.
        out.extend_from_slice(&i32::try_from(days).unwrap_or(0).to_be_bytes());
        return Ok(());
    }
    let t = super::trim_space(text);
    let days = match special(t) {
        Some(Parsed::PosInfinity) => i64::from(i32::MAX),
        Some(Parsed::NegInfinity) => i64::from(i32::MIN),
        Some(Parsed::Finite(d)) => d,
        None => {
            let (t, bc) = era(t);
            parse_date(t, bc).ok_or_else(|| invalid("date", text))?
        }
    };
    let lowest = days_from_civil(-4713, 11, 24) - PG_EPOCH_DAYS;
    if days != i64::from(i32::MAX)
        && days != i64::from(i32::MIN)
        // The last valid date is 5874897-12-31, one before DATE_END_JULIAN.
        && (days < lowest || days >= 2_147_483_494 - 2_451_545)
    {
        return Err(out_of_range("date", text));
    }
    let days = i32::try_from(days).map_err(|_| out_of_range("date", text))?;
    out.extend_from_slice(&days.to_be_bytes());
    Ok(())
}

pub(super) fn time(text: &str, out: &mut Vec<u8>) -> Encoded {
    let micros = parse_time(super::trim_space(text))
        .ok_or_else(|| invalid("time without time zone", text))?;
    out.extend_from_slice(&micros.to_be_bytes());
    Ok(())
}

pub(super) fn timetz(text: &str, default_offset: i32, out: &mut Vec<u8>) -> Encoded {
    let bad = || invalid("time with time zone", text);
    let (t, offset) = split_offset(super::trim_space(text)).map_err(|()| bad())?;
    let micros = parse_time(t).ok_or_else(bad)?;
    out.extend_from_slice(&micros.to_be_bytes());
    // PostgreSQL stores the zone as seconds west of UTC.
    out.extend_from_slice(&(-offset.unwrap_or(default_offset)).to_be_bytes());
    Ok(())
}

/// Microseconds since 2000-01-01 00:00 of `date[ T]time`, and the offset
/// if one was given.
/// `YYYY-MM-DD HH:MM:SS` with an optional `+HH` / `-HH` / `Z` offset,
/// exactly: the common case, without splitting or searching.
fn iso_timestamp(t: &[u8]) -> Option<(i64, Option<i32>)> {
    if t.len() < 19 || !(t[10] == b' ' || t[10] == b'T') || t[13] != b':' || t[16] != b':' {
        return None;
    }
    let days = parse_iso_date(&t[..10])?;
    let num = |a: usize, b: usize| -> Option<i64> {
        t[a..b].iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (h, m, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    // A fraction of up to six digits.
    let (micros, rest) = match &t[19..] {
        [b'.', rest @ ..] => {
            let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if !(1..=6).contains(&n) {
                return None;
            }
            (fraction_micros(&rest[..n])?, &rest[n..])
        }
        rest => (0, rest),
    };
    let offset = match rest {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            let hours = i32::from(a - b'0') * 10 + i32::from(b - b'0');
            if hours > 15 {
                return None;
            }
            Some(if *sign == b'-' {
                -hours * 3600
            } else {
                hours * 3600
            })
        }
        _ => return None,
    };
    Some((
        days * USECS_PER_DAY + ((h * 60 + m) * 60 + sec) * USECS_PER_SEC + micros,
        offset,
    ))
}

fn parse_timestamp(text: &str, type_name: &str) -> Result<(Parsed, Option<i32>), EncodeError> {
    if let Some((us, offset)) = iso_timestamp(text.as_bytes()) {
        return Ok((Parsed::Finite(us), offset));
    }
    let t = super::trim_space(text);
    if let Some(p) = special(t) {
        return Ok((
            match p {
                Parsed::Finite(days) => Parsed::Finite(days * USECS_PER_DAY),
                other => other,
            },
            Some(0),
        ));
    }
    let (t, bc) = era(t);
    let (t, offset) = split_offset(t).map_err(|()| invalid(type_name, text))?;
    let (date_part, time_part) = match t.find(['T', 't', ' ']) {
        Some(at) => (
            &t[..at],
            Some(t[at + 1..].trim_start_matches(super::is_space)),
        ),
        None => (t, None),
    };
    let days = parse_date(date_part, bc).ok_or_else(|| invalid(type_name, text))?;
    let micros = match time_part {
        Some(tp) => parse_time(tp).ok_or_else(|| invalid(type_name, text))?,
        None => 0,
    };
    // Years far past PostgreSQL's range overflow here: out of range, never
    // a wrapped value.
    let us = days
        .checked_mul(USECS_PER_DAY)
        .and_then(|us| us.checked_add(micros))
        .ok_or_else(|| out_of_range(type_name, text))?;
    Ok((Parsed::Finite(us), offset))
}

fn write_timestamp(
    parsed: Parsed,
    shift: i64,
    text: &str,
    type_name: &str,
    out: &mut Vec<u8>,
) -> Encoded {
    let v = match parsed {
        Parsed::PosInfinity => i64::MAX,
        Parsed::NegInfinity => i64::MIN,
        Parsed::Finite(us) => {
            let us = us
                .checked_sub(shift)
                .ok_or_else(|| out_of_range(type_name, text))?;
            // 4714-11-24 BC to 294276-12-31 AD, as PostgreSQL allows.
            const LOW: i64 = (days_from_civil(-4713, 11, 24) - PG_EPOCH_DAYS) * USECS_PER_DAY;
            const HIGH: i64 = (days_from_civil(294_277, 1, 1) - PG_EPOCH_DAYS) * USECS_PER_DAY;
            if !(LOW..HIGH).contains(&us) {
                return Err(out_of_range(type_name, text));
            }
            us
        }
    };
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

pub(super) fn timestamp(text: &str, out: &mut Vec<u8>) -> Encoded {
    let name = "timestamp without time zone";
    // A timestamp ignores any offset given, as PostgreSQL does.
    let (parsed, _) = parse_timestamp(text, name)?;
    write_timestamp(parsed, 0, text, name, out)
}

pub(super) fn timestamptz(text: &str, default_offset: Option<i32>, out: &mut Vec<u8>) -> Encoded {
    let name = "timestamp with time zone";
    let (parsed, offset) = parse_timestamp(text, name)?;
    // Without an offset of its own, a value in a zone whose offset moves
    // (daylight saving) is the server's to place.
    let offset = offset
        .or(default_offset)
        .ok_or_else(|| EncodeError::for_server(name, text))?;
    let shift = i64::from(offset) * USECS_PER_SEC;
    write_timestamp(parsed, shift, text, name, out)
}

/// `interval` in the server's own output form (`IntervalStyle`
/// `postgres`): `[N year[s]] [N mon[s]] [N day[s]] [[+-]H:MM:SS[.ffffff]]`
/// with integer counts, converted with integer arithmetic as the server
/// does. Every other spelling (`@ 1 hour ago`, `1.5 days`, ISO 8601
/// `P1D`, `3days`) is the server's to read.
/// With `sql_standard` (the session's `IntervalStyle` is `sql_standard`) a
/// value led by a minus is the server's: there the sign may apply to every
/// field.
pub(super) fn interval(text: &str, sql_standard: bool, out: &mut Vec<u8>) -> Encoded {
    let undecided = || invalid("interval", text);
    if sql_standard && text.trim_start_matches(super::is_space).starts_with('-') {
        return Err(EncodeError::for_server("interval", text));
    }
    let mut words = text
        .split(super::is_space)
        .filter(|w| !w.is_empty())
        .peekable();
    if words.peek().is_none() {
        return Err(undecided());
    }
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    // Units must come in the output's order, each once.
    let mut next_unit = 0;
    while let Some(word) = words.next() {
        if word.contains(':') {
            if words.peek().is_some() {
                return Err(undecided());
            }
            micros = clock(word).ok_or_else(undecided)?;
            break;
        }
        let count = signed_count(word).ok_or_else(undecided)?;
        let unit = match words.next() {
            Some("year" | "years") => 1,
            Some("mon" | "mons") => 2,
            Some("day" | "days") => 3,
            _ => return Err(undecided()),
        };
        if unit <= next_unit {
            return Err(undecided());
        }
        next_unit = unit;
        match unit {
            1 => months = count.checked_mul(12).ok_or_else(undecided)?,
            2 => months = months.checked_add(count).ok_or_else(undecided)?,
            _ => days = count,
        }
    }
    let months = i32::try_from(months).map_err(|_| undecided())?;
    let days = i32::try_from(days).map_err(|_| undecided())?;
    out.extend_from_slice(&micros.to_be_bytes());
    out.extend_from_slice(&days.to_be_bytes());
    out.extend_from_slice(&months.to_be_bytes());
    Ok(())
}

/// A signed integer of at most 10 digits.
fn signed_count(word: &str) -> Option<i64> {
    let digits = word.strip_prefix(['-', '+']).unwrap_or(word);
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    word.parse().ok()
}

/// `[+-]H:MM:SS[.ffffff]` (any number of hour digits up to 10) to
/// microseconds.
fn clock(word: &str) -> Option<i64> {
    let (negative, rest) = match word.as_bytes().first()? {
        b'-' => (true, &word[1..]),
        b'+' => (false, &word[1..]),
        _ => (false, word),
    };
    let mut parts = rest.split(':');
    let h = parts.next()?;
    let m = parts.next()?;
    let s = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let (s, frac) = s.split_once('.').unwrap_or((s, ""));
    let number = |p: &str, min: usize, max: usize| -> Option<i64> {
        (p.len() >= min && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let (h, m, s) = (number(h, 1, 10)?, number(m, 2, 2)?, number(s, 2, 2)?);
    if m > 59 || s > 59 || (frac.is_empty() && rest.ends_with('.')) || frac.len() > 6 {
        return None;
    }
    let frac_micros = if frac.is_empty() {
        0
    } else {
        number(frac, 1, 6)? * 10i64.pow(6 - u32::try_from(frac.len()).ok()?)
    };
    let total = h
        .checked_mul(3600)?
        .checked_add(m * 60 + s)?
        .checked_mul(USECS_PER_SEC)?
        .checked_add(frac_micros)?;
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be_i64(out: &[u8]) -> i64 {
        i64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), PG_EPOCH_DAYS);
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 1),
            29
        );
        // The unsigned way agrees on every day of years 1 to 9999.
        for y in 1..=9999u32 {
            for m in 1..=12u32 {
                for d in 1..=31u32 {
                    assert_eq!(
                        days_from_civil_ad(y, m, d),
                        days_from_civil(y.into(), m.into(), d.into()),
                        "{y}-{m}-{d}"
                    );
                }
            }
        }
    }

    /// Every fraction of up to six digits is read as the server reads it
    /// (a double, times 1e6, rounded half to even).
    #[test]
    fn fractions_of_up_to_six_digits_read_as_the_server_reads_them() {
        for len in 1..=6u32 {
            for value in 0..10u32.pow(len) {
                let digits = format!("{value:0width$}", width = len as usize);
                let f: f64 = format!("0.{digits}").parse().expect("a fraction");
                #[allow(clippy::cast_possible_truncation)]
                let server = (f * 1e6).round_ties_even() as i64;
                assert_eq!(fraction_micros(digits.as_bytes()), Some(server), "{digits}");
            }
        }
        // Past six digits, rounded half to even as a double.
        assert_eq!(fraction_micros(b"0000005"), Some(0));
        assert_eq!(fraction_micros(b"0000015"), Some(2));
        assert_eq!(fraction_micros(b"1234567"), Some(123_457));
        assert_eq!(fraction_micros(b""), None);
        assert_eq!(fraction_micros(b"1a"), None);
    }

    /// Timestamps with a fraction of a second read the same on the common
    /// form's fast path as on the general one.
    #[test]
    fn fractions_of_seconds_in_timestamps() {
        let at = |text: &str| {
            let mut out = Vec::new();
            timestamptz(text, Some(0), &mut out).expect(text);
            be_i64(&out)
        };
        let second = at("2020-01-01 00:00:01+00");
        for (text, micros) in [
            ("2020-01-01 00:00:01.001+00", 1_000),
            ("2020-01-01T00:00:01.5Z", 500_000),
            ("2020-01-01 00:00:01.123456", 123_456),
            ("2020-01-01 00:00:01.000001-00", 1),
            ("2020-01-01 01:00:01.25+01", 250_000),
            ("2020-01-01 00:00:01.1234565+00", 123_456),
            ("2020-01-01 00:00:01.1234575 +00:00", 123_458),
            (" 2020-01-01 00:00:01.9 ", 900_000),
        ] {
            assert_eq!(at(text) - second, micros, "{text}");
        }
        for bad in [
            "2020-01-01 00:00:01.+00",
            "2020-01-01 00:00:01.x",
            "2020-01-01 00:00:01.5.5",
        ] {
            assert!(timestamptz(bad, Some(0), &mut Vec::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn in_a_zone_without_a_fixed_offset_only_values_without_one_are_the_servers() {
        for (text, expected) in [
            ("2000-01-01 01:00:00+01", 0),
            ("2000-01-01T00:00:00Z", 0),
            ("infinity", i64::MAX),
            ("epoch", -946_684_800 * USECS_PER_SEC),
        ] {
            let mut out = Vec::new();
            timestamptz(text, None, &mut out).expect(text);
            assert_eq!(be_i64(&out), expected, "{text}");
        }
        for local in [
            "2000-01-01 00:00:00",
            "2000-01-01",
            "2000-01-01 10:00 Europe/Paris",
        ] {
            let mut out = Vec::new();
            let e = timestamptz(local, None, &mut out).expect_err(local);
            assert!(e.is_for_server(), "{local}: {}", e.message());
            assert!(out.is_empty(), "{local}");
        }
    }

    #[test]
    fn timestamps_with_offsets() {
        let mut a = Vec::new();
        timestamptz("2000-01-01 01:00:00+01", Some(0), &mut a).expect("ok");
        assert_eq!(be_i64(&a), 0);
        let mut b = Vec::new();
        timestamptz("2000-01-01T00:00:00Z", Some(0), &mut b).expect("ok");
        assert_eq!(be_i64(&b), 0);
        let mut c = Vec::new();
        timestamptz("1999-12-31 19:00:00-05:00", Some(0), &mut c).expect("ok");
        assert_eq!(be_i64(&c), 0);
        let mut d = Vec::new();
        timestamp("2000-01-02", &mut d).expect("ok");
        assert_eq!(be_i64(&d), USECS_PER_DAY);
        for bad in [
            "2001-02-29",
            "2000-13-01",
            "2000-01-01 25:00",
            "nonsense",
            "2000-01-01 10:61",
        ] {
            assert!(timestamp(bad, &mut Vec::new()).is_err(), "{bad}");
        }
    }

    /// 60 seconds and 24 hours are read, but never past 24:00:00, as the
    /// server reads them (checked against PostgreSQL 15's `::time` and
    /// `::timestamp`).
    #[test]
    fn a_leap_second_or_midnight_never_passes_the_day() {
        let micros = |s: &str| {
            let mut out = Vec::new();
            time(s, &mut out).ok().map(|()| be_i64(&out))
        };
        let at =
            |h: i64, m: i64, s: i64, us: i64| Some(((h * 60 + m) * 60 + s) * USECS_PER_SEC + us);
        assert_eq!(micros("12:30:60.5"), at(12, 31, 0, 500_000));
        assert_eq!(micros("23:59:60"), at(24, 0, 0, 0));
        assert_eq!(micros("23:59:60.0000005"), at(24, 0, 0, 0));
        assert_eq!(micros("24:00:00.0000004"), at(24, 0, 0, 0));
        for past in [
            "23:59:60.5",
            "23:59:60.000001",
            "23:59:60.0000006",
            "24:00:00.5",
            "24:00:01",
        ] {
            assert_eq!(micros(past), None, "{past}");
            assert!(
                timestamp(&format!("2024-01-01 {past}"), &mut Vec::new()).is_err(),
                "{past}"
            );
        }
        let mut next_day = Vec::new();
        timestamp("1999-12-31 23:59:60", &mut next_day).expect("ok");
        assert_eq!(be_i64(&next_day), 0);
    }

    #[test]
    fn intervals() {
        let mut out = Vec::new();
        interval("1 year 2 mons 3 days 04:05:06.5", false, &mut out).expect("ok");
        assert_eq!(
            be_i64(&out),
            (4 * 3600 + 5 * 60 + 6) * USECS_PER_SEC + 500_000
        );
        assert_eq!(i32::from_be_bytes(out[8..12].try_into().expect("4")), 3);
        assert_eq!(i32::from_be_bytes(out[12..16].try_into().expect("4")), 14);
        let mut negative = Vec::new();
        interval(
            "-1 years +2 mons -3 days -04:05:06.000001",
            false,
            &mut negative,
        )
        .expect("ok");
        assert_eq!(
            be_i64(&negative),
            -((4 * 3600 + 5 * 60 + 6) * USECS_PER_SEC + 1)
        );
        assert_eq!(
            i32::from_be_bytes(negative[8..12].try_into().expect("4")),
            -3
        );
        assert_eq!(
            i32::from_be_bytes(negative[12..16].try_into().expect("4")),
            -10
        );
        // Other spellings are the server's to read.
        for other in [
            "@ 1 day ago",
            "P1Y2M3DT4H5M6.5S",
            "1.5 days",
            "3days",
            "P",
            "1 day 1 year",
            "9223372036854775807 usec",
            "10:00",
            "",
        ] {
            let err = interval(other, false, &mut Vec::new()).expect_err(other);
            assert!(err.is_for_server(), "{other}");
        }
        // Under IntervalStyle sql_standard a leading minus may apply to
        // every field: the server's; other values are read the same.
        for led in ["-1 days +02:03:04", " -1 day", "-1 years 2 mons"] {
            let err = interval(led, true, &mut Vec::new()).expect_err(led);
            assert!(err.is_for_server(), "{led}");
        }
        let mut standard = Vec::new();
        interval("1 year 2 mons 3 days 04:05:06.5", true, &mut standard).expect("ok");
        assert_eq!(standard, out);
    }
}
