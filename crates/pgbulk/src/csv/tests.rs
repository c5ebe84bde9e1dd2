use super::*;

fn records(input: &str, dialect: Dialect) -> Vec<(u64, Vec<Option<String>>)> {
    let mut r = Reader::new(input.as_bytes(), dialect);
    let mut out = Vec::new();
    while let Some(rec) = r.read_record().expect("parses") {
        let fields = (0..rec.len())
            .map(|i| rec.get(i).map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
        out.push((rec.line, fields));
    }
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn copy_csv_semantics() {
    let got = records(
        "a,,\"\",\"x,y\"\n\"multi\nline\",\"say \"\"hi\"\"\",z\r\nlast,row",
        Dialect::default(),
    );
    assert_eq!(
        got,
        vec![
            (1, vec![s("a"), None, s(""), s("x,y")]),
            (2, vec![s("multi\nline"), s("say \"hi\""), s("z")]),
            (4, vec![s("last"), s("row")]),
        ]
    );
}

#[test]
fn dialects() {
    let semi = Dialect {
        delimiter: b';',
        ..Dialect::default()
    };
    assert_eq!(
        records("PointOfSale;Product\n121017;1724\n", semi)[1].1,
        vec![s("121017"), s("1724")]
    );
    let tab_backslash = Dialect {
        delimiter: b'\t',
        quote: b'\'',
        escape: b'\\',
        null: b"NULL".to_vec(),
        text: false,
    };
    assert_eq!(
        records("'it\\'s'\tNULL\t'NULL'\t\\x\n", tab_backslash)[0].1,
        vec![s("it's"), None, s("NULL"), s("\\x")]
    );
}

#[test]
fn bom_blank_lines_and_lone_cr() {
    let got = records("\u{feff}h1,h2\r\n\r\n1,2\r3,4\n\n", Dialect::default());
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1[0], s("h1"));
    assert_eq!(got[2], (4, vec![s("3"), s("4")]));
}

#[test]
fn blank_lines_are_records_of_one_empty_field_when_told() {
    let mut r = Reader::new("a\n\n\"\"\r\n\r\nb\n\n".as_bytes(), Dialect::default());
    r.blank_lines_are_records(true);
    let mut got = Vec::new();
    while let Some(rec) = r.read_record().expect("parses") {
        let fields: Vec<_> = (0..rec.len())
            .map(|i| rec.get(i).map(<[u8]>::to_vec))
            .collect();
        got.push((rec.line, fields));
    }
    let a = |v: &[u8]| Some(v.to_vec());
    assert_eq!(
        got,
        vec![
            (1, vec![a(b"a")]),
            (2, vec![None]),
            (3, vec![a(b"")]),
            (4, vec![None]),
            (5, vec![a(b"b")]),
            (6, vec![None]),
        ]
    );
}

#[test]
fn unclosed_quote_names_its_line() {
    let mut r = Reader::new("a,b\n\"open,\nmore\n".as_bytes(), Dialect::default());
    assert!(r.read_record().expect("first").is_some());
    match r.read_record() {
        Err(CsvError::UnclosedQuote { line }) => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_bytes_and_offsets() {
    let input = "x,\"y\nz\"\r\nnext,1\n";
    let mut r = Reader::new(input.as_bytes(), Dialect::default());
    r.keep_raw(true);
    let first = r.read_record().expect("ok").expect("record").raw.to_vec();
    assert_eq!(first, b"x,\"y\nz\"\r\n");
    assert_eq!(r.offset(), 9);
    let second = r.read_record().expect("ok").expect("record").raw.to_vec();
    assert_eq!(second, b"next,1\n");
    assert!(r.read_record().expect("ok").is_none());
}

#[test]
fn fields_across_buffer_refills() {
    // Longer than the read buffer, with quotes and delimiters throughout.
    let mut input = String::new();
    for i in 0..50_000 {
        input.push_str(&format!("{i},\"q{i},\"\"x\"\"\",tail{i}\n"));
    }
    let got = records(&input, Dialect::default());
    assert_eq!(got.len(), 50_000);
    assert_eq!(
        got[49_999].1,
        vec![s("49999"), s("q49999,\"x\""), s("tail49999")]
    );
    assert_eq!(got[49_999].0, 50_000);
}

#[test]
fn skip_lines_ignores_quotes() {
    let mut r = Reader::new("title \"line\nsecond\na,b\n".as_bytes(), Dialect::default());
    r.skip_lines(2).expect("skip");
    let rec = r.read_record().expect("ok").expect("record");
    assert_eq!((rec.line, rec.get(0)), (3, Some(&b"a"[..])));
}

/// The reader on arbitrary bytes in several dialects: records or an error,
/// never a panic; and reading resumes where `offset` said.
#[test]
fn reader_never_panics() {
    use crate::arbitrary::{Strings, case_count, each_case};
    let mut strings = Strings::new(11);
    let seeds = [
        "a,b\n1,\"x\"\"y\"\n",
        "\"multi\nline\",2\r\n3,\\N\n",
        "p;q\n\"unclosed\n",
        "\u{feff}h1\th2\n1\t2",
    ];
    let cases = strings.cases(&seeds, case_count());
    let dialects = [
        Dialect::default(),
        Dialect {
            delimiter: b';',
            null: b"\\N".to_vec(),
            ..Dialect::default()
        },
        Dialect {
            delimiter: b'\t',
            escape: b'\\',
            ..Dialect::default()
        },
    ];
    each_case(&cases, |text| {
        for dialect in &dialects {
            let mut r = Reader::new(text.as_bytes(), dialect.clone());
            r.keep_raw(true);
            for _ in 0..100 {
                match r.read_record() {
                    Ok(Some(rec)) => {
                        for i in 0..rec.len() {
                            let _ = rec.get(i);
                            let _ = rec.raw_field(i);
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = r.take_raw();
        }
    });
}

/// Gives one byte per read, as a slow pipe may.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), out.first_mut()) {
            (Some((b, rest)), Some(o)) => {
                *o = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// A BOM that arrives alone or in pieces (a pipe's first reads) is skipped
/// like one read with the rest: the first field's quotes still quote it.
#[test]
fn a_bom_read_alone_or_in_pieces_is_skipped() {
    let input = b"\xEF\xBB\xBF\"a,1\",b\n";
    let alone = std::io::Read::chain(&input[..3], &input[3..]);
    let readers: [Box<dyn std::io::Read>; 3] = [
        Box::new(alone),
        Box::new(Trickle(input)),
        Box::new(&input[..]),
    ];
    for inner in readers {
        let mut r = Reader::new(inner, Dialect::default());
        let rec = r.read_record().expect("parses").expect("a record");
        assert_eq!(
            (rec.get(0), rec.get(1)),
            (Some(&b"a,1"[..]), Some(&b"b"[..]))
        );
        assert!(r.read_record().expect("parses").is_none());
        assert_eq!(r.offset(), input.len() as u64);
    }
    // Bytes that only begin like a BOM are data.
    let mut r = Reader::new(Trickle(b"\xEF\xBBx\n"), Dialect::default());
    let rec = r.read_record().expect("parses").expect("a record");
    assert_eq!(rec.get(0), Some(&b"\xEF\xBBx"[..]));
}

/// No field longer than the limit is accepted, whether it came in one read
/// or in many; one of the limit's length is.
#[test]
fn a_field_past_the_limit_is_refused_however_it_was_read() {
    let input = b"a,b\n1,0123456789\n2,0123456789a\n";
    let readers: [Box<dyn std::io::Read>; 2] = [Box::new(&input[..]), Box::new(Trickle(input))];
    for inner in readers {
        let mut r = Reader::new(inner, Dialect::default());
        r.set_max_field(10);
        assert!(r.read_record().expect("the header").is_some());
        let rec = r.read_record().expect("ten bytes fit").expect("a record");
        assert_eq!(rec.get(1), Some(&b"0123456789"[..]));
        match r.read_record() {
            Err(CsvError::FieldTooLong {
                line: 3, limit: 10, ..
            }) => {}
            other => panic!("{:?}", other.map(|r| r.map(|r| r.line))),
        }
    }
}

/// A CSV input detected from a sample may be the text format after all:
/// an unquoted `\N` field fails its record, named by line and field; a
/// quoted one is a value, and the text format and a `\N` NULL string
/// are never refused.
#[test]
fn an_unquoted_text_null_fails_its_record_when_refused() {
    let tabs = Dialect {
        delimiter: b'\t',
        ..Dialect::default()
    };
    let input = b"a\tb\n1\t\"\\N\"\n2\tx\\N\n3\t\\N\n".as_slice();
    let mut r = Reader::new(input, tabs.clone());
    r.refuse_text_null(true);
    assert!(r.refuses_text_null());
    for _ in 0..3 {
        assert!(r.read_record().expect("no \\N field").is_some());
    }
    match r.read_record() {
        Err(CsvError::TextFormatNull {
            line: 4,
            field: 2,
            tab: true,
        }) => {}
        other => panic!("{:?}", other.map(|r| r.map(|r| r.line))),
    }
    for dialect in [
        Dialect::postgres_text(),
        Dialect {
            null: b"\\N".to_vec(),
            ..tabs
        },
    ] {
        let mut r = Reader::new(input, dialect);
        r.refuse_text_null(true);
        assert!(!r.refuses_text_null());
        while r.read_record().expect("read").is_some() {}
    }
}

/// PostgreSQL's text format as `COPY ... TO` writes it, read back as the
/// server reads it, whether the bytes come at once or one by one.
#[test]
fn the_text_format_reads_as_copy_reads_it() {
    let input = "1\ta\\tb\t\\N\n\
                 2\tline1\\nline2\tback\\\\slash\n\
                 3\t\"quoted\"\t\\\\N\n\
                 4\t\\Nx\t\\101\\x41\\q\\\t\r\n\
                 5\t\t\n";
    let expected = vec![
        (1, vec![s("1"), s("a\tb"), None]),
        (2, vec![s("2"), s("line1\nline2"), s("back\\slash")]),
        (3, vec![s("3"), s("\"quoted\""), s("\\N")]),
        (4, vec![s("4"), s("Nx"), s("AAq\t")]),
        (5, vec![s("5"), s(""), s("")]),
    ];
    assert_eq!(records(input, Dialect::postgres_text()), expected);
    let mut r = Reader::new(Trickle(input.as_bytes()), Dialect::postgres_text());
    let mut got = Vec::new();
    while let Some(rec) = r.read_record().expect("parses") {
        got.push((
            rec.line,
            (0..rec.len())
                .map(|i| rec.get(i).map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect::<Vec<_>>(),
        ));
    }
    assert_eq!(got, expected);
    // A NULL string of its own: `\N` is then the value N.
    let null_word = Dialect {
        null: b"NULL".to_vec(),
        ..Dialect::postgres_text()
    };
    assert_eq!(
        records("NULL\t\\N\tnull\n", null_word)[0].1,
        vec![None, s("N"), s("null")]
    );
    // A NULL string with a backslash is compared with the field as written.
    let backslash_null = Dialect {
        null: b"\\X".to_vec(),
        ..Dialect::postgres_text()
    };
    assert_eq!(
        records("\\X\t\\\\X\t\\XX\t\\N\tX\r\n\\X\n", backslash_null)
            .into_iter()
            .map(|r| r.1)
            .collect::<Vec<_>>(),
        vec![vec![None, s("\\X"), s("XX"), s("N"), s("X")], vec![None]]
    );
    // `\.` alone on its line ends the data; elsewhere it is an error
    // naming its line, as COPY refuses it.
    assert_eq!(
        records("x\ta\n\\.\nignored\n", Dialect::postgres_text()),
        vec![(1, vec![s("x"), s("a")])]
    );
    for (input, line) in [
        ("\\.x\n", 1),
        ("a\n\\\n\\.\n", 3),
        ("a\\.\n", 1),
        ("a\t\\.\n", 1),
    ] {
        let mut reader = Reader::new(input.as_bytes(), Dialect::postgres_text());
        let error = loop {
            match reader.read_record() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{input:?} read to its end"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(error, CsvError::EndMarkerNotAlone { line: l } if l == line),
            "{input:?}: {error}"
        );
    }
    // An escaped carriage return is data; the line feed after it still
    // ends the record.
    assert_eq!(
        records("a\\\r\nb\n", Dialect::postgres_text()),
        vec![(1, vec![s("a\r")]), (2, vec![s("b")])]
    );
    // A blank line is a record of one empty field, as COPY reads it.
    assert_eq!(
        records("\n", Dialect::postgres_text()),
        vec![(1, vec![s("")])]
    );
}

/// Every record of `reader` (line, fields, offset after it), up to the end
/// or the first error (its message).
type ReadBack = (Vec<(u64, Vec<Option<Vec<u8>>>, u64)>, Option<String>);

fn read_back<R: std::io::Read>(mut reader: Reader<R>) -> ReadBack {
    let mut records = Vec::new();
    loop {
        match reader.read_record() {
            Ok(Some(rec)) => {
                let fields = (0..rec.len())
                    .map(|i| rec.get(i).map(<[u8]>::to_vec))
                    .collect();
                let line = rec.line;
                records.push((line, fields, reader.offset()));
            }
            Ok(None) => return (records, None),
            Err(e) => return (records, Some(e.to_string())),
        }
    }
}

/// Any input, in CSV or in the text format: no panic, and the same
/// records (or the same error after the same records) whether the bytes
/// come at once or one by one.
#[test]
fn any_input_reads_alike_at_once_and_byte_by_byte() {
    let seeds = [
        "1\ta\\tb\t\\N\n2\t\\\\N\t\\.\n",
        "a\\\r\nb\t\\x4g\\101\\\n",
        "\\.\n1\t2\n",
        "a,\"b\"\"c\",\n\"x\ny\",\r\n",
        "\"open,1\n2\r3\n\n",
    ];
    let mut strings = crate::arbitrary::Strings::new(41);
    let cases = strings.cases(&seeds, crate::arbitrary::case_count());
    let dialects = [
        Dialect::default(),
        Dialect {
            delimiter: b'\t',
            ..Dialect::default()
        },
        Dialect::postgres_text(),
    ];
    crate::arbitrary::each_case(&cases, |case| {
        for dialect in &dialects {
            let whole = read_back(Reader::new(case.as_bytes(), dialect.clone()));
            let trickled = read_back(Reader::new(Trickle(case.as_bytes()), dialect.clone()));
            assert_eq!(whole, trickled, "{case:?} in {dialect:?}");
        }
    });
}
