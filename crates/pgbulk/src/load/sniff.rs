//! What an input says about itself when the user did not: its encoding
//! from a byte order mark, its delimiter from the header and first lines.

use encoding_rs::Encoding;

use crate::csv::{CsvError, Dialect, Reader, Record};
use crate::infer::Inference;

/// Why `text` (an input's start) is a JSON document rather than CSV, and
/// the pandas call that reads it: its first line (after `skip_lines`) is a
/// JSON object (JSON Lines), or opens an array of objects. Read as CSV, its quotes would be taken for CSV
/// quoting and its keys for a header.
pub(super) fn json_document(text: &[u8], skip_lines: u64) -> Option<(&'static str, &'static str)> {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let line = text
        .split(|b| *b == b'\n')
        .skip(usize::try_from(skip_lines).unwrap_or(usize::MAX))
        .map(<[u8]>::trim_ascii)
        .find(|l| !l.is_empty())?;
    if line.starts_with(b"{")
        && line.ends_with(b"}")
        && serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
    {
        return Some((
            "its first line is a JSON object: JSON Lines",
            "pandas.read_json(path, lines=True)",
        ));
    }
    let opened = line.strip_prefix(b"[").map(<[u8]>::trim_ascii_start);
    if opened.is_some_and(|rest| rest.is_empty() || rest.starts_with(b"{")) {
        return Some((
            "it opens a JSON array of objects: JSON",
            "pandas.read_json(path)",
        ));
    }
    None
}

/// Delimiters tried, in order of preference.
pub(super) const CANDIDATES: &[u8] = b",;\t|";

/// Lines read to decide.
const LINES: usize = 50;

/// The encoding a UTF-16 byte order mark names (those bytes are never
/// valid UTF-8, so the mark settles it). A UTF-8 mark needs nothing: the
/// reader skips it.
pub(super) fn bom_encoding(head: &[u8]) -> Option<&'static Encoding> {
    if head.starts_with(&[0xff, 0xfe]) {
        Some(encoding_rs::UTF_16LE)
    } else if head.starts_with(&[0xfe, 0xff]) {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

/// The delimiter that splits the header and the first lines of `text` (the
/// input's start, after `skip_lines`) into the same number of fields, more
/// than one. With no such candidate the input is one column (`,`). With
/// several that split alike, and none splitting into more fields than the
/// others, the answer is an error saying which.
pub(super) fn delimiter(text: &[u8], dialect: &Dialect, skip_lines: u64) -> Result<u8, String> {
    // Only whole lines: the last one may be cut.
    let text = match text.iter().rposition(|b| *b == b'\n') {
        Some(end) => &text[..=end],
        None => text,
    };
    let mut even: Vec<(u8, usize)> = Vec::new();
    for &candidate in CANDIDATES {
        if candidate == dialect.quote {
            continue;
        }
        let d = Dialect {
            delimiter: candidate,
            ..dialect.clone()
        };
        if let Some(fields) = fields_per_record(text, d, skip_lines) {
            if fields > 1 {
                even.push((candidate, fields));
            }
        }
    }
    match even.as_slice() {
        [] => Ok(b','),
        [(only, _)] => Ok(*only),
        several => {
            let most = several.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let widest: Vec<&(u8, usize)> = several.iter().filter(|(_, n)| *n == most).collect();
            if let [(only, _)] = widest.as_slice() {
                return Ok(*only);
            }
            Err(format!(
                "cannot tell the delimiter: {} each split every line into {most} fields; give --delimiter",
                widest
                    .iter()
                    .map(|(d, _)| describe(*d))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))
        }
    }
}

/// Whether the lines of `text` (after `skip_lines`), split at tabs, hold a
/// field `\N`: how PostgreSQL's text format (`COPY ... TO`, `psql \copy
/// ... to`) and MySQL's `SELECT ... INTO OUTFILE` write NULL, which no CSV
/// writer does.
pub(super) fn text_format(text: &[u8], skip_lines: u64) -> bool {
    text.split(|b| *b == b'\n')
        .skip(usize::try_from(skip_lines).unwrap_or(usize::MAX))
        .any(|line| {
            line.strip_suffix(b"\r")
                .unwrap_or(line)
                .split(|b| *b == b'\t')
                .any(|field| field == b"\\N")
        })
}

/// Whether the first record of `text`, PostgreSQL's text format in
/// `dialect` (after `skip_lines`), is a header. `COPY ... TO` writes one
/// only when asked (`HEADER`): it is one when the field of some column
/// whose later values all fit a type other than text fits none of those
/// (`id` over integers) and no such column's field fits (a first line of
/// `1`, `x` is data), and never when it holds a NULL.
pub(super) fn text_header(text: &[u8], dialect: &Dialect, skip_lines: u64) -> bool {
    // A line cut by the end of the sample is left out.
    let whole = memchr::memrchr(b'\n', text).map_or(text, |end| &text[..=end]);
    let mut reader = Reader::new(whole, dialect.clone());
    if reader.skip_lines(skip_lines).is_err() {
        return false;
    }
    let Ok(Some(first)) = reader.read_record() else {
        return false;
    };
    let first = owned_fields(&first);
    if first.iter().any(Option::is_none) {
        return false;
    }
    let names: Vec<String> = (1..=first.len()).map(|i| format!("c{i}")).collect();
    let mut rest = Inference::new(&names);
    for _ in 1..LINES {
        let Ok(Some(record)) = reader.read_record() else {
            break;
        };
        let fields = owned_fields(&record);
        rest.add_row(&fields.iter().map(Option::as_deref).collect::<Vec<_>>());
    }
    let mut with_first = rest.clone();
    with_first.add_row(&first.iter().map(Option::as_deref).collect::<Vec<_>>());
    let (mut header, mut data) = (0, 0);
    for (later, all) in rest.columns().iter().zip(with_first.columns()) {
        if later.sql_type != "text" {
            if all.sql_type == "text" {
                header += 1;
            } else {
                data += 1;
            }
        }
    }
    header > 0 && data == 0
}

/// A record's fields as text (`None`: NULL).
fn owned_fields(record: &Record<'_>) -> Vec<Option<String>> {
    (0..record.len())
        .map(|i| {
            record
                .get(i)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        })
        .collect()
}

/// The number of fields every record has, when they all have the same.
fn fields_per_record(text: &[u8], dialect: Dialect, skip_lines: u64) -> Option<usize> {
    let mut reader = Reader::new(text, dialect);
    reader.skip_lines(skip_lines).ok()?;
    let mut fields = None;
    for _ in 0..LINES {
        match reader.read_record() {
            Ok(Some(record)) => match fields {
                None => fields = Some(record.len()),
                Some(n) if n != record.len() => return None,
                Some(_) => {}
            },
            Ok(None) | Err(CsvError::UnclosedQuote { .. }) => break,
            Err(_) => return None,
        }
    }
    fields
}

/// A delimiter as the user would type it.
pub(super) fn describe(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "tab".to_owned(),
        d => format!("'{}'", char::from(d)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_documents_are_told_from_csv() {
        for json in [
            &b"{\"a\": 1}\n{\"a\": 2}\n"[..],
            b"\xef\xbb\xbf\n  {\"a\": {\"b\": [1]}}  \r\n",
            b"[\n  {\"a\": 1}\n]\n",
            b"[{\"a\": 1}, {\"a\": 2}]",
        ] {
            assert!(
                super::json_document(json, 0).is_some(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        for csv in [
            &b"a,b\n1,2\n"[..],
            b"{a},{b}\n1,2\n",
            b"\"{\"\"a\"\": 1}\"\n",
            b"[a],[b]\n",
            b"",
        ] {
            assert!(
                super::json_document(csv, 0).is_none(),
                "{}",
                String::from_utf8_lossy(csv)
            );
        }
        assert!(super::json_document(b"# export\n{\"a\": 1}\n", 1).is_some());
    }

    use super::*;

    fn detect(text: &str) -> Result<u8, String> {
        delimiter(text.as_bytes(), &Dialect::default(), 0)
    }

    #[test]
    fn a_tab_separated_null_written_as_backslash_n_is_the_text_format() {
        assert!(text_format(b"1\tx\n2\t\\N\n", 0));
        assert!(text_format(b"1\t\\N\r\n", 0));
        assert!(!text_format(b"1\t\\N\n2\tx\n", 1));
        assert!(!text_format(b"1\t\\Nx\n2\t\"\\N\"\n", 0));
        assert!(!text_format(b"1,\\N\n", 0));
    }

    #[test]
    fn a_text_format_header_is_names_over_typed_values() {
        let text = Dialect {
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            text: true,
            ..Dialect::default()
        };
        let header = |input: &str, skip| text_header(input.as_bytes(), &text, skip);
        assert!(header(
            "id\tname\tborn\n1\tAda\t1815-12-10\n2\t\\N\t\\N\n",
            0
        ));
        assert!(header("# dump\nid\tok\n1\tt\n2\tf\n", 1));
        // A cut last line does not make a typed column text.
        assert!(header("id\tv\n1\tx\n2\ty\n3", 0));
        // COPY TO's default: the first line is data.
        assert!(!header("1\tAda\n2\t\\N\n", 0));
        assert!(!header("1.5\tAda\n2\tBob\n", 0));
        // Every column text, a NULL, or a column one way and one the other.
        assert!(!header("name\tcity\nAda\tLondon\n", 0));
        assert!(!header("id\t\\N\n1\t2\n", 0));
        assert!(!header("id\t7\n1\t2\n", 0));
        assert!(!header("id\tname\n", 0));
        assert!(!header("", 0));
    }

    #[test]
    fn the_delimiter_that_splits_every_line_alike() {
        assert_eq!(detect("a,b,c\n1,2,3\n"), Ok(b','));
        assert_eq!(
            detect("PointOfSale;Product;Date;Stock\n121017;1724;2019-08-17;2\n"),
            Ok(b';')
        );
        // Decimal commas inside a ';' file.
        assert_eq!(detect("a;b\n1,5;2\n3;4,25\n"), Ok(b';'));
        assert_eq!(detect("a\tb\nx, y\tz\n"), Ok(b'\t'));
        assert_eq!(detect("a|b\n1|2\n"), Ok(b'|'));
        // Quoted delimiters do not count.
        assert_eq!(detect("name,note\n\"Lu; José\",\"a;b;c\"\n"), Ok(b','));
        // One column.
        assert_eq!(detect("name\nJosé\n"), Ok(b','));
        // A cut last line is ignored.
        assert_eq!(detect("a;b\n1;2\n3;"), Ok(b';'));
        // More fields wins when both split alike.
        assert_eq!(detect("a,b;c,d\n1,2;3,4\n"), Ok(b','));
    }

    #[test]
    fn ambiguous_inputs_are_refused() {
        let err = detect("a;b,c\n1;2,3\n").expect_err("ambiguous");
        assert!(
            err.contains("',' and ';'") && err.contains("--delimiter"),
            "{err}"
        );
    }

    #[test]
    fn byte_order_marks() {
        assert_eq!(bom_encoding(b"\xff\xfea\0"), Some(encoding_rs::UTF_16LE));
        assert_eq!(bom_encoding(b"\xfe\xff\0a"), Some(encoding_rs::UTF_16BE));
        assert_eq!(bom_encoding(b"\xef\xbb\xbfa"), None);
    }
}
