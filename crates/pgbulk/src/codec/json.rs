//! Which `json` and `jsonb` texts the server's input functions accept,
//! told without building the document: a text this check passes is
//! sent as is; any other is the server's to judge (and to refuse with the
//! row's position), so the check may say no to a text the server would
//! take, never yes to one it would refuse.

/// Containers nested deeper than this are left to the server (it allows
/// far more).
const MAX_DEPTH: usize = 128;

/// A `jsonb` number longer than this, or with an exponent beyond
/// ±[`MAX_EXPONENT`], is left to the server: `jsonb` stores numbers as
/// `numeric`, whose input refuses `1e131072` and `0e-20000`. Within both
/// bounds a number has at most 1,000 digits before its point and 1,000
/// after, well inside what every version's `numeric` holds.
const MAX_NUMBER_LEN: usize = 500;
/// See [`MAX_NUMBER_LEN`].
const MAX_EXPONENT: u32 = 500;

/// A `jsonb` text longer than this is left to the server (`jsonb` has
/// limits of its own near 256 MB).
const MAX_JSONB_LEN: usize = 1 << 26;

/// Whether the server takes `text` as `json` (`jsonb`: as `jsonb` in a
/// UTF-8 database): one value of RFC 8259's grammar, with surrounding
/// whitespace; for `jsonb` also no `\u0000` and no number `numeric` would
/// refuse. A `\u` escape of a UTF-16 surrogate must be a high one followed
/// by a low one (`jsonb` refuses others; `json` keeps them, but they are
/// rare, and the server decides).
pub(super) fn accepted(text: &str, jsonb: bool) -> bool {
    let b = text.as_bytes();
    if jsonb && b.len() > MAX_JSONB_LEN {
        return false;
    }
    let mut stack = [0u8; MAX_DEPTH];
    let mut depth = 0;
    let mut i = skip_space(b, 0);
    'value: loop {
        // A value is expected at `i`.
        match b.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                i = skip_space(b, i + 1);
                let close = if open == b'{' { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return false;
                    }
                    stack[depth] = open;
                    depth += 1;
                    if open == b'{' {
                        match key(b, i, jsonb) {
                            Some(next) => i = next,
                            None => return false,
                        }
                    }
                    continue 'value;
                }
            }
            Some(b'"') => match string(b, i + 1, jsonb) {
                Some(next) => i = next,
                None => return false,
            },
            Some(b'-' | b'0'..=b'9') => match number(b, i, jsonb) {
                Some(next) => i = next,
                None => return false,
            },
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            _ => return false,
        }
        // After a value: the next of its container, the container's end,
        // or the end of the text.
        loop {
            i = skip_space(b, i);
            if depth == 0 {
                return i == b.len();
            }
            let open = stack[depth - 1];
            match b.get(i) {
                Some(b',') => {
                    i = skip_space(b, i + 1);
                    if open == b'{' {
                        match key(b, i, jsonb) {
                            Some(next) => i = next,
                            None => return false,
                        }
                    }
                    continue 'value;
                }
                Some(b'}') if open == b'{' => {
                    i += 1;
                    depth -= 1;
                }
                Some(b']') if open == b'[' => {
                    i += 1;
                    depth -= 1;
                }
                _ => return false,
            }
        }
    }
}

/// JSON's whitespace: space, tab, line feed, carriage return.
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// An object's key at `i` (a string), then its colon: where its value
/// starts.
fn key(b: &[u8], i: usize, jsonb: bool) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_space(b, string(b, i + 1, jsonb)?);
    (b.get(i) == Some(&b':')).then(|| skip_space(b, i + 1))
}

/// The rest of a string whose opening quote is before `i`: where it
/// ends, after its closing quote. Characters below U+0020 must be
/// escaped, and escapes are JSON's (see [`accepted`] for `\u`).
fn string(b: &[u8], mut i: usize, jsonb: bool) -> Option<usize> {
    loop {
        let c = *b.get(i)?;
        i += 1;
        match c {
            b'"' => return Some(i),
            b'\\' => {
                let e = *b.get(i)?;
                i += 1;
                match e {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let code = hex4(b, i)?;
                        i += 4;
                        match code {
                            0 if jsonb => return None,
                            0xD800..=0xDBFF => {
                                if b.get(i..i + 2) != Some(b"\\u")
                                    || !(0xDC00..=0xDFFF).contains(&hex4(b, i + 2)?)
                                {
                                    return None;
                                }
                                i += 6;
                            }
                            0xDC00..=0xDFFF => return None,
                            _ => {}
                        }
                    }
                    _ => return None,
                }
            }
            0..=0x1F => return None,
            _ => {}
        }
    }
}

/// The four hexadecimal digits at `i`, as a number.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)?.iter().try_fold(0u32, |code, d| {
        Some(code << 4 | char::from(*d).to_digit(16)?)
    })
}

/// A number at `start` (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`):
/// where it ends. For `jsonb`, within [`MAX_NUMBER_LEN`] and
/// [`MAX_EXPONENT`].
fn number(b: &[u8], start: usize, jsonb: bool) -> Option<usize> {
    let digits = |from: usize| {
        let end = from + b[from..].iter().take_while(|d| d.is_ascii_digit()).count();
        (end > from).then_some(end)
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let from = i;
        i = digits(i)?;
        if jsonb {
            b[from..i].iter().try_fold(0u32, |e, d| {
                let e = e * 10 + u32::from(d - b'0');
                (e <= MAX_EXPONENT).then_some(e)
            })?;
        }
    }
    (!jsonb || i - start <= MAX_NUMBER_LEN).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::accepted;

    #[test]
    fn json_documents_are_checked_as_the_server_reads_them() {
        for good in [
            "0",
            "-0",
            " {\"a\": [1, 2.5e-3, true, false, null, \"x\\\"y\\u00e9\\ud83d\\ude00\"]}\n",
            "[]",
            "{}",
            "[[], {}, [[1]]]",
            "\"\\/\\b\\f\\n\\r\\t\\\\\"",
            "{\"k\": 1, \"tags\": [\"a\", \"b\"]}",
            "1E+5",
            "\t\r\n 12 ",
            "\"é ü 中\"",
        ] {
            assert!(accepted(good, true), "{good}");
            assert!(accepted(good, false), "{good}");
        }
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "-",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{1: 2}",
            "[1 2]",
            "[1] [2]",
            "tru",
            "True",
            "nul",
            "NaN",
            "Infinity",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"tab\there\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800x\"",
            "[",
            "]",
            "{",
            "{\"a\": [}",
            "[}",
            "\u{0}",
        ] {
            assert!(!accepted(bad, true), "{bad:?}");
            assert!(!accepted(bad, false), "{bad:?}");
        }
        // jsonb refuses what json keeps; numbers within the bounds are
        // taken by both.
        let long = format!("1{}", "0".repeat(500));
        for (text, jsonb) in [
            ("\"\\u0000\"", false),
            ("1e501", false),
            ("1e-501", false),
            ("0e-20000", false),
            (long.as_str(), false),
            (&long[..500], true),
            ("1e500", true),
            ("-1.5E-0500", true),
        ] {
            assert!(accepted(text, false), "{text}");
            assert_eq!(accepted(text, true), jsonb, "{text}");
        }
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(accepted(&deep(128), true));
        assert!(!accepted(&deep(129), true));
    }
}
