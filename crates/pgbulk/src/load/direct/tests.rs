use super::*;
use crate::codec::{ColumnType, CopyWriter, TypeKind};
use crate::csv::{Dialect, Reader};

fn column(kind: TypeKind, oid: u32, not_null: bool) -> Column {
    Column {
        name: format!("c{oid}"),
        ty: ColumnType {
            oid,
            kind,
            name: String::new(),
            cast_name: String::new(),
            max_chars: None,
            precision_scale: None,
            labels: None,
            base_name: None,
            charset: None,
        },
        not_null,
        default: None,
        generated: false,
        always_identity: false,
    }
}

fn columns() -> Vec<Column> {
    let mut varchar = column(TypeKind::Text, 1043, false);
    varchar.ty.max_chars = Some(3);
    vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Int8, 20, true),
        column(TypeKind::Date, 1082, false),
        column(TypeKind::Text, 25, false),
        varchar,
        column(TypeKind::Int2, 21, false),
        column(TypeKind::Numeric, 1700, false),
        column(TypeKind::Jsonb, 3802, false),
    ]
}

fn plan<'a>(columns: &'a [Column], dialect: &'a Dialect, skip: &[usize]) -> Plan<'a> {
    let mut next = columns.iter();
    let width = columns.len() + skip.len();
    Plan {
        delimiter: dialect.delimiter,
        quote: if dialect.text { b'\\' } else { dialect.quote },
        escape: dialect.escape,
        null: &dialect.null,
        text: dialect.text,
        refuse_text_null: false,
        guards: Vec::new(),
        empty_nulls: Vec::new(),
        fields: (0..width)
            .map(|i| if skip.contains(&i) { None } else { next.next() })
            .collect(),
        max_field: 64,
        ascii_only: false,
    }
}

/// The tuples the row-by-row path writes for `input` (its records read by
/// the CSV reader, each field by [`CopyWriter::text`]), or `None` when it
/// would fail or reject a record.
fn row_by_row(plan: &Plan<'_>, dialect: &Dialect, input: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut reader = Reader::new(input, dialect.clone());
    let mut writer = CopyWriter::tuples_only();
    let mut records = 0;
    while let Some(record) = reader.read_record().ok()? {
        if record.len() != plan.fields.len() {
            return None;
        }
        writer.start_tuple(u16::try_from(plan.fields.iter().flatten().count()).ok()?);
        for (i, column) in plan.fields.iter().enumerate() {
            let Some(column) = column else { continue };
            let text = match record.get(i) {
                None if column.not_null => return None,
                None => None,
                Some(bytes) => Some(std::str::from_utf8(bytes).ok()?),
            };
            writer.text(text, &column.ty).ok()?;
        }
        records += 1;
    }
    Some((writer.take(), records))
}

fn encode_all(plan: &Plan<'_>, input: &[u8]) -> (Run, Vec<u8>) {
    let mut out = Vec::new();
    let run = encode(plan, input, &mut out, usize::MAX, u64::MAX, usize::MAX);
    (run, out)
}

#[test]
fn plain_records_encode_as_the_row_by_row_path_does() {
    let columns = columns();
    let dialect = Dialect::default();
    let plan = plan(&columns, &dialect, &[]);
    let input = b"1,2,2020-02-29,abc,xy,-7,12.50,[1]\n\
                  -2147483648,-922337203685477580,0001-01-01,,,32767,,\n\
                  0,0,9999-12-31,\xc3\xa9t\xc3\xa9,\xc3\xa9t\xc3\xa9,0,-0.5,[]\n";
    let (run, out) = encode_all(&plan, input);
    assert_eq!(run.records, 3);
    assert_eq!(run.consumed, input.len());
    assert_eq!(Some((out, 3)), row_by_row(&plan, &dialect, input));
}

#[test]
fn skipped_fields_and_a_null_string_are_read_as_the_row_by_row_path_reads_them() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
    ];
    let dialect = Dialect {
        delimiter: b'|',
        null: b"NULL".to_vec(),
        ..Dialect::default()
    };
    let plan = plan(&columns, &dialect, &[1]);
    let input = b"1|skipped|\n2||NULL\nNULL|x,y|text\n";
    let (run, out) = encode_all(&plan, input);
    assert_eq!(run.records, 3);
    assert_eq!(Some((out, 3)), row_by_row(&plan, &dialect, input));
}

#[test]
fn fields_quoted_whole_are_read_as_the_row_by_row_path_reads_them() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
        column(TypeKind::Text, 25, false),
    ];
    for (dialect, input) in [
        (
            Dialect::default(),
            b"\"1\",\"a,\"\"b\"\"\",\"\"\n2,\"x\"\"\",N\n3,N,\"\"\"\"\n".as_slice(),
        ),
        (
            Dialect {
                escape: b'\\',
                null: b"N".to_vec(),
                ..Dialect::default()
            },
            b"\"1\",\"a,\\\"b\\\"\",\"\"\n2,\"\\x\\\\\",\"N\"\n3,N,\"\\\"\"\n",
        ),
    ] {
        let plan = plan(&columns, &dialect, &[]);
        let (run, out) = encode_all(&plan, input);
        assert_eq!(run.records, 3, "{dialect:?}");
        assert_eq!(
            Some((out, 3)),
            row_by_row(&plan, &dialect, input),
            "{dialect:?}"
        );
    }
}

/// PostgreSQL's text format: plain fields and a whole `\N` go straight
/// in; a record with another escape stops the run, left to the reader.
#[test]
fn text_format_records_are_read_as_the_row_by_row_path_reads_them() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
    ];
    let dialect = Dialect::postgres_text();
    let plan = plan(&columns, &dialect, &[]);
    let plain = b"1\t\"a\"\n\\N\t\\N\n3\t\\Nx\n".as_slice();
    let (run, out) = encode_all(&plan, plain);
    assert_eq!(run.records, 2, "stopped at the escaped \\Nx");
    let taken = &plain[..run.consumed];
    assert_eq!(Some((out, 2)), row_by_row(&plan, &dialect, taken));
    for escaped in [b"4\ta\\tb\n".as_slice(), b"5\t\\\\N\n", b"\\.\n"] {
        let (run, _) = encode_all(&plan, escaped);
        assert_eq!(run.records, 0, "{:?}", String::from_utf8_lossy(escaped));
    }
}

/// A CSV input that may be the text format after all: a record with an
/// unquoted `\N` is left to the reader (which fails it), a quoted one and
/// one with `\N` inside a value go straight in.
#[test]
fn an_unquoted_text_null_is_left_to_the_reader_when_refused() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
    ];
    let dialect = Dialect {
        delimiter: b'\t',
        ..Dialect::default()
    };
    let mut plan = plan(&columns, &dialect, &[]);
    plan.refuse_text_null = true;
    let input = b"1\t\"\\N\"\n2\ta\\Nb\n3\t\\N\n4\tx\n".as_slice();
    let (run, _) = encode_all(&plan, input);
    assert_eq!(run.records, 2, "stopped at the unquoted \\N");
    plan.refuse_text_null = false;
    let (run, _) = encode_all(&plan, input);
    assert_eq!(run.records, 4);
}

/// A value its column of inferred type would store in part (a leading
/// zero) is left to the reader; NULL and values kept whole go straight in.
#[test]
fn a_value_an_inferred_type_would_cut_is_left_to_the_reader() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Date, 1082, false),
    ];
    let dialect = Dialect::default();
    let mut plan = plan(&columns, &dialect, &[]);
    plan.guards = vec![Some("integer"), Some("date")];
    let input = b"90210,2024-01-01\n,\n0,2024-01-02\n02134,2024-01-03\n".as_slice();
    let (run, _) = encode_all(&plan, input);
    assert_eq!(run.records, 3, "stopped at the leading zero");
    plan.guards.clear();
    let (run, _) = encode_all(&plan, input);
    assert_eq!(run.records, 4);
}

/// An empty field, quoted or not, is NULL in a column marked so; the
/// records encode as the row-by-row path encodes them with their empty
/// fields unquoted.
#[test]
fn an_empty_field_is_null_where_marked() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
    ];
    let dialect = Dialect::default();
    let mut plan = plan(&columns, &dialect, &[]);
    plan.empty_nulls = vec![true, false];
    let (run, out) = encode_all(&plan, b"\"\",\"\"\n1,\"x\"\n");
    assert_eq!(run.records, 2);
    let mut expected = Vec::new();
    for (n, text) in [(None, ""), (Some(1i32), "x")] {
        expected.extend_from_slice(&2u16.to_be_bytes());
        match n {
            None => expected.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(n) => {
                expected.extend_from_slice(&4i32.to_be_bytes());
                expected.extend_from_slice(&n.to_be_bytes());
            }
        }
        expected.extend_from_slice(&i32::try_from(text.len()).expect("short").to_be_bytes());
        expected.extend_from_slice(text.as_bytes());
    }
    assert_eq!(out, expected);
    plan.empty_nulls.clear();
    assert_eq!(
        encode_all(&plan, b"\"\",x\n").0.records,
        0,
        "left to the server"
    );
}

#[test]
fn a_record_it_does_not_take_stops_the_run_before_it() {
    let columns = vec![
        column(TypeKind::Int4, 23, true),
        column(TypeKind::Date, 1082, false),
    ];
    let dialect = Dialect::default();
    let plan = plan(&columns, &dialect, &[]);
    let first = b"1,2020-01-01\n".as_slice();
    for rest in [
        b"2\"\",2020-01-01\n".as_slice(),
        b"\"2\"x,2020-01-01\n",
        b"\"2\n\",2020-01-01\n",
        b"\"2\",\"2020-01-01\"\r\n",
        b"\"\",2020-01-01\n",
        b"\"2,2020-01-01\n",
        b"2,2020-01-01\r\n",
        b"\n",
        b"2\n",
        b"2,2020-01-01,3\n",
        b",2020-01-01\n",
        b"2147483648,2020-01-01\n",
        b" 2,2020-01-01\n",
        b"+2,2020-01-01\n",
        b"2,2020-02-30\n",
        b"2,20200101\n",
        b"2,2020-01-01",
        b"2,2020-01",
    ] {
        let input = [first, rest].concat();
        let (run, out) = encode_all(&plan, &input);
        let shown = String::from_utf8_lossy(rest);
        assert_eq!(
            run,
            Run {
                consumed: first.len(),
                records: 1
            },
            "{shown:?}"
        );
        assert_eq!(
            Some((out, 1)),
            row_by_row(&plan, &dialect, first),
            "{shown:?}"
        );
    }
}

#[test]
fn text_that_is_not_utf8_or_holds_nul_or_is_too_long_is_left_to_the_row_by_row_path() {
    let mut varchar = column(TypeKind::Text, 1043, false);
    varchar.ty.max_chars = Some(2);
    let columns = vec![column(TypeKind::Text, 25, false), varchar];
    let dialect = Dialect::default();
    let plan = plan(&columns, &dialect, &[]);
    for input in [
        b"\xff,a\n".as_slice(),
        b"a\0,a\n",
        b"a,abc\n",
        b"a,\xc3\xa9\xc3\xa9\xc3\xa9\n",
    ] {
        assert_eq!(encode_all(&plan, input).0.records, 0, "{input:?}");
    }
    // Two characters in four bytes fit varchar(2): the encoder counts them.
    let input = b"a,\xc3\xa9\xc3\xa9\n";
    let (run, out) = encode_all(&plan, input);
    assert_eq!(run.records, 1);
    assert_eq!(Some((out, 1)), row_by_row(&plan, &dialect, input));
    // The buffer is checked a block at a time: a NUL or a byte that is not
    // UTF-8 further on stops the run at its record, not before; quoted
    // values (copied or not) are checked as well.
    for (input, taken) in [
        (b"a,b\nc\0,d\ne,f\n".as_slice(), 1),
        (b"a,b\nc,d\n\xff,x\n", 2),
        (b"\xc3\xa9,b\n\"c\",\"\xc3\xa9\"\n\"x\"\"\0\",y\n", 2),
        (b"\"a\",\"b\"\n\"c\xff\",d\n", 1),
        (b"\"a\"\"\",b\nc,\"\0\"\n", 1),
    ] {
        let (run, out) = encode_all(&plan, input);
        assert_eq!(run.records, taken, "{input:?}");
        assert_eq!(
            Some((out, taken)),
            row_by_row(&plan, &dialect, &input[..run.consumed]),
            "{input:?}"
        );
    }
}

#[test]
fn the_limits_stop_the_run_at_a_record_boundary() {
    let columns = vec![column(TypeKind::Int4, 23, false)];
    let dialect = Dialect::default();
    let mut plan = plan(&columns, &dialect, &[]);
    let input = b"1\n22\n333\n";
    let mut out = Vec::new();
    assert_eq!(
        encode(&plan, input, &mut out, usize::MAX, 2, usize::MAX).records,
        2
    );
    out.clear();
    // A record starting before the limit is read whole.
    assert_eq!(
        encode(&plan, input, &mut out, usize::MAX, u64::MAX, 3),
        Run {
            consumed: 5,
            records: 2
        }
    );
    out.clear();
    assert_eq!(
        encode(&plan, input, &mut out, 1, u64::MAX, usize::MAX).records,
        1
    );
    out.clear();
    plan.max_field = 2;
    assert_eq!(
        encode(&plan, input, &mut out, usize::MAX, u64::MAX, usize::MAX).records,
        2
    );
}

#[test]
fn whatever_it_encodes_the_row_by_row_path_encodes_the_same() {
    let columns = columns();
    let dialect = Dialect::default();
    let plan = plan(&columns, &dialect, &[2]);
    // Per field: values of its column's type (the skipped field takes any).
    let valid: [&[&str]; 9] = [
        &["1", "-5", "007", ""],
        &["0", "-922337203685477580", "42"],
        &["anything"],
        &["2020-02-29", "0001-01-01", ""],
        &["abc", "", "x y", "\u{e9}"],
        &["ab", "", "\u{e9}\u{e9}"],
        &["32767", "-1", ""],
        &["12.5", "-0", "1e3", ""],
        &["{\"k\": [1]}", "[]", "1", ""],
    ];
    let seeds: Vec<&str> = valid.iter().flat_map(|v| v.iter().copied()).collect();
    let mut strings = crate::arbitrary::Strings::new(29);
    let cases = strings.cases(&seeds, crate::arbitrary::case_count());
    let (mut taken, mut records) = (0, 0);
    for _ in 0..crate::arbitrary::case_count() {
        // Mostly values of the type, so that whole records are valid.
        let mut line = Vec::new();
        random_record(&mut strings, &valid, &cases, 8, &mut line);
        let (run, out) = encode_all(&plan, &line);
        if run.records > 0 {
            // A field holding a line end may end a record early.
            let read = &line[..run.consumed];
            assert_eq!(read.last(), Some(&b'\n'));
            assert_eq!(
                Some((out, run.records)),
                row_by_row(&plan, &dialect, read),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
            taken += 1;
        }
        records += 1;
    }
    // Both kinds of record were met: about a quarter are taken.
    assert!(
        taken > records / 10 && taken < records,
        "{taken} of {records}"
    );
    // Many records in one buffer: the run stops at the first record it
    // does not take, and encodes what it took as the row-by-row path does.
    for _ in 0..crate::arbitrary::case_count() / 20 {
        let mut input = Vec::new();
        for _ in 0..40 {
            random_record(&mut strings, &valid, &cases, 200, &mut input);
        }
        let (run, out) = encode_all(&plan, &input);
        assert_eq!(
            Some((out, run.records)),
            row_by_row(&plan, &dialect, &input[..run.consumed]).or(Some((Vec::new(), 0))),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

/// The text format: whatever the direct path takes of random records
/// (escapes, `\N`, `\.`, carriage returns, tabs in values) it encodes as
/// the row-by-row path does.
#[test]
fn text_format_records_encode_as_the_row_by_row_path_does() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
        column(TypeKind::Date, 1082, false),
    ];
    let dialect = Dialect::postgres_text();
    let plan = plan(&columns, &dialect, &[]);
    let valid: [&[&str]; 3] = [
        &["1", "-5", "\\N", "007"],
        &[
            "a", "", "a\\tb", "\\N", "\\\\N", "x\\101", "\\.", "\\Nx", "\u{e9}",
        ],
        &["2020-02-29", "\\N", ""],
    ];
    let seeds: Vec<&str> = valid.iter().flat_map(|v| v.iter().copied()).collect();
    let mut strings = crate::arbitrary::Strings::new(43);
    let cases = strings.cases(&seeds, crate::arbitrary::case_count());
    let mut taken = 0;
    for _ in 0..crate::arbitrary::case_count() / 10 {
        let mut input = Vec::new();
        for _ in 0..20 {
            for (f, values) in valid.iter().enumerate() {
                if f > 0 {
                    input.push(b'\t');
                }
                let field = if strings.below(30) == 0 {
                    cases[strings.below(cases.len())].as_str()
                } else {
                    values[strings.below(values.len())]
                };
                input.extend_from_slice(field.as_bytes());
            }
            input.push(b'\n');
        }
        let (run, out) = encode_all(&plan, &input);
        taken += run.records;
        assert_eq!(
            Some((out, run.records)),
            row_by_row(&plan, &dialect, &input[..run.consumed]).or(Some((Vec::new(), 0))),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
    }
    assert!(taken > 0);
}

/// Appends a record of one of `valid`'s values per field, one in
/// `one_in` of them one of `cases` instead, a quarter of them quoted
/// (their quotes doubled).
fn random_record(
    strings: &mut crate::arbitrary::Strings,
    valid: &[&[&str]],
    cases: &[String],
    one_in: usize,
    out: &mut Vec<u8>,
) {
    for (f, values) in valid.iter().enumerate() {
        if f > 0 {
            out.push(b',');
        }
        let field = if strings.below(one_in) == 0 {
            cases[strings.below(cases.len())].as_str()
        } else {
            values[strings.below(values.len())]
        };
        if strings.below(4) == 0 {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.push(b'\n');
}

#[test]
fn a_plan_of_no_field_reads_nothing() {
    let dialect = Dialect::default();
    let plan = plan(&[], &dialect, &[]);
    assert_eq!(encode_all(&plan, b"1\n2\n"), (Run::default(), Vec::new()));
}

#[test]
fn in_another_encoding_only_ascii_values_are_taken() {
    let columns = vec![
        column(TypeKind::Int4, 23, false),
        column(TypeKind::Text, 25, false),
    ];
    let dialect = Dialect::default();
    let mut plan = plan(&columns, &dialect, &[]);
    plan.ascii_only = true;
    // Latin-1 "\xc3\xa9" is two characters, not the UTF-8 one.
    let input = b"1,abc\n2,\xc3\xa9\n3,x\n";
    let (run, out) = encode_all(&plan, input);
    assert_eq!(
        run,
        Run {
            consumed: 6,
            records: 1
        }
    );
    assert_eq!(Some((out, 1)), row_by_row(&plan, &dialect, b"1,abc\n"));
}
