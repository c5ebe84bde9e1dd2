//! Encoder unit tests; the server-as-oracle tests live in the integration
//! suite (`codec.rs`).

use super::*;

/// A column type of `kind` without cast, length or precision.
pub(crate) fn ty(kind: TypeKind, oid: u32, name: &str) -> ColumnType {
    ColumnType {
        oid,
        kind,
        name: name.to_owned(),
        cast_name: String::new(),
        max_chars: None,
        precision_scale: None,
        labels: None,
        base_name: None,
        charset: None,
    }
}

fn body(text: &str, t: &ColumnType) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_text(text, t, &mut out).map(|()| out)
}

#[test]
fn booleans_and_integers() {
    let b = ty(TypeKind::Bool, 16, "boolean");
    for (text, v) in [
        ("t", 1),
        (" TRUE ", 1),
        ("y", 1),
        ("on", 1),
        ("0", 0),
        ("of", 0),
        ("no", 0),
    ] {
        assert_eq!(body(text, &b).expect(text), vec![v], "{text}");
    }
    assert!(body("o", &b).is_err());
    let i2 = ty(TypeKind::Int2, 21, "smallint");
    assert_eq!(
        body(" -32768 ", &i2).expect("min"),
        (-32768i16).to_be_bytes()
    );
    assert_eq!(
        body("32768", &i2).unwrap_err().message().to_owned(),
        "value \"32768\" is out of range for type smallint"
    );
    assert_eq!(
        body("1.5", &i2).unwrap_err().message().to_owned(),
        "invalid input syntax for type smallint: \"1.5\""
    );
}

#[test]
fn text_rejects_nul() {
    let t = ty(TypeKind::Text, 25, "text");
    let err = body("ab\0c", &t).unwrap_err();
    assert!(
        err.message().contains("0x00") && err.message().contains("position 3"),
        "{err}"
    );
}

#[test]
fn uuid_and_macaddr_spellings() {
    let u = ty(TypeKind::Uuid, 2950, "uuid");
    let want = body("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", &u).expect("canonical");
    for s in [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
    ] {
        assert_eq!(body(s, &u).expect(s), want, "{s}");
    }
    for bad in [
        "a0eebc99-9c0b",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
    ] {
        assert!(body(bad, &u).is_err(), "{bad}");
    }
    let m = ty(TypeKind::MacAddr, 829, "macaddr");
    let want = vec![0x08, 0x00, 0x2b, 0x01, 0x02, 0x03];
    for s in ["08:00:2b:01:02:03", "08-00-2B-01-02-03"] {
        assert_eq!(body(s, &m).expect(s), want, "{s}");
    }
    // Other spellings, right or wrong, are the server's to read.
    for other in [
        "08002b:010203",
        "0800.2b01.0203",
        "08002B010203",
        "08:00:2b:01:02",
        "08:00-2b:01:02:03",
        "b6.77.a6.a2.2b.f3",
    ] {
        assert!(body(other, &m).expect_err(other).is_for_server(), "{other}");
    }
}

#[test]
fn arrays_must_be_rectangular() {
    let int4 = ty(TypeKind::Int4, 23, "integer");
    let arr = ty(TypeKind::Array(Box::new(int4)), 1007, "integer[]");
    assert!(body("{{1,2},{3,4}}", &arr).is_ok());
    assert!(body("{}", &arr).is_ok());
    for bad in ["{{1,2},{3}}", "{1,{2}}", "{1,2", "1,2", "{1,,2}", "{1} x"] {
        assert!(body(bad, &arr).is_err(), "{bad}");
    }
    // An empty sub-array the server's parser refuses (or, by version,
    // reads its own way): the server decides.
    for empty in ["{{}}", "{{},{}}", "{1,{}}", "{{1},{}}", "{ { } }"] {
        assert!(
            body(empty, &arr).expect_err(empty).is_for_server(),
            "{empty}"
        );
    }
    let err = body("{1,x}", &arr).unwrap_err();
    assert!(
        err.message()
            .contains("invalid input syntax for type integer"),
        "{err}"
    );
}

#[test]
fn writer_undoes_a_failed_field() {
    let int4 = ty(TypeKind::Int4, 23, "integer");
    let mut w = CopyWriter::new();
    w.start_tuple(1);
    let before = w.len();
    assert!(w.text(Some("nope"), &int4).is_err());
    assert_eq!(w.len(), before);
    assert!(w.value(&Value::Int(1 << 40), &int4).is_err());
    assert_eq!(w.len(), before);
    w.value(&Value::Int(7), &int4).expect("fits");
    assert_eq!(w.len(), before + 8);
}

#[test]
fn typed_values() {
    let jsonb = ty(TypeKind::Jsonb, 3802, "jsonb");
    let mut w = CopyWriter::new();
    let start = w.len();
    w.value(&Value::Json(serde_json::Value::Null), &jsonb)
        .expect("json null");
    assert_eq!(&w.take()[start..], &[0, 0, 0, 5, 1, b'n', b'u', b'l', b'l']);
    let mut w = CopyWriter::new();
    w.value(&Value::Null, &jsonb).expect("sql null");
    assert_eq!(&w.take()[start..], &[0xff, 0xff, 0xff, 0xff]);
    let text = ty(TypeKind::Text, 25, "text");
    let err = CopyWriter::new()
        .value(&Value::Bool(true), &text)
        .unwrap_err();
    assert_eq!(
        err.message(),
        "a boolean value does not fit a column of type text"
    );
}

/// The body of one typed value, or its error.
fn typed(value: &Value, column: &ColumnType) -> Result<Vec<u8>, EncodeError> {
    let mut w = CopyWriter::new();
    let start = w.len();
    w.value(value, column)?;
    Ok(w.take()[start + 4..].to_vec())
}

#[test]
fn typed_values_take_the_servers_assignment_casts_where_they_are_exact() {
    let text = ty(TypeKind::Text, 25, "text");
    let int4 = ty(TypeKind::Int4, 23, "integer");
    let int2 = ty(TypeKind::Int2, 21, "smallint");
    let mut numeric = ty(TypeKind::Numeric, 1700, "numeric");
    // An integer into text is its decimal text, as the server's cast.
    assert_eq!(typed(&Value::Int(-42), &text).expect("int"), b"-42");
    let mut varchar = ty(TypeKind::Text, 1043, "character varying(2)");
    varchar.max_chars = Some(2);
    assert!(typed(&Value::Int(123), &varchar).is_err());
    // A whole float into an integer column; a fraction, NaN or a float
    // out of range is refused.
    assert_eq!(
        typed(&Value::Float(3.0), &int4).expect("3.0"),
        3i32.to_be_bytes()
    );
    assert_eq!(
        typed(&Value::Float(-0.0), &int2).expect("-0.0"),
        0i16.to_be_bytes()
    );
    let err = typed(&Value::Float(2.5), &int4).unwrap_err();
    assert!(
        err.message().contains("has a fraction"),
        "{}",
        err.message()
    );
    assert!(!err.is_for_server());
    assert!(typed(&Value::Float(f64::NAN), &int4).is_err());
    assert!(typed(&Value::Float(40000.0), &int2).is_err());
    assert!(typed(&Value::Float(9.3e18), &ty(TypeKind::Int8, 20, "bigint")).is_err());
    // Numeric infinities and a float beyond the typmod are the server's.
    assert!(
        typed(&Value::Float(f64::INFINITY), &numeric)
            .unwrap_err()
            .is_for_server()
    );
    numeric.precision_scale = Some((3, 1));
    assert!(
        typed(&Value::Float(123.0), &numeric)
            .unwrap_err()
            .is_for_server()
    );
    assert!(typed(&Value::Float(12.5), &numeric).is_ok());
    // A date's ISO text is no bytea.
    assert!(typed(&Value::Date(0), &ty(TypeKind::Bytea, 17, "bytea")).is_err());
    assert_eq!(typed(&Value::Date(0), &text).expect("date"), b"2000-01-01");
}

#[test]
fn shortens_long_values_and_escapes_controls() {
    let long = "x".repeat(100);
    assert_eq!(
        shorten(&long),
        format!("{}... (100 bytes in all)", "x".repeat(57))
    );
    assert_eq!(shorten(&"x".repeat(60)), "x".repeat(60));
    assert_eq!(shorten("a\0b\nc\u{1b}"), "a\\0b\\nc\\x1b");
}

/// Every type's text parser, and arrays of it, on arbitrary Unicode
/// strings and mutations of valid inputs: an error or a value, never a
/// panic.
#[test]
fn text_parsers_never_panic() {
    use crate::arbitrary::{Strings, case_count, each_case};
    let kinds = [
        (TypeKind::Bool, 16, "boolean", vec!["true", "off", "y"]),
        (TypeKind::Int2, 21, "smallint", vec!["-32768", " 12 "]),
        (TypeKind::Int4, 23, "integer", vec!["2147483647", "+1"]),
        (TypeKind::Int8, 20, "bigint", vec!["-9223372036854775808"]),
        (
            TypeKind::Float4,
            700,
            "real",
            vec!["1.5e10", "NaN", "-Infinity"],
        ),
        (
            TypeKind::Float8,
            701,
            "double precision",
            vec!["1e-320", "inf"],
        ),
        (
            TypeKind::Numeric,
            1700,
            "numeric",
            vec!["-12.345e-3", "NaN", ".5"],
        ),
        (TypeKind::Text, 25, "text", vec!["José Lu"]),
        (TypeKind::Bytea, 17, "bytea", vec!["\\x0aff", "a\\\\b\\001"]),
        (
            TypeKind::Date,
            1082,
            "date",
            vec!["2024-01-31", "20240131", "4713-11-24 BC", "infinity"],
        ),
        (
            TypeKind::Time,
            1083,
            "time",
            vec!["10:00", "23:59:59.999999", "24:00:00"],
        ),
        (
            TypeKind::TimeTz(3600),
            1266,
            "timetz",
            vec!["10:00+01", "10:00:00-0530", "10:00Z"],
        ),
        (
            TypeKind::Timestamp,
            1114,
            "timestamp",
            vec!["2024-01-01 10:00:00", "2024-01-01T10:00:00.5", "epoch"],
        ),
        (
            TypeKind::TimestampTz(Some(0)),
            1184,
            "timestamptz",
            vec![
                "2024-01-01 10:00+1",
                "2024-01-01 10:00:00-05:30:15",
                "2024-01-01 10:00 UTC",
            ],
        ),
        (
            TypeKind::Interval {
                sql_standard: false,
            },
            1186,
            "interval",
            vec![
                "1 year 2 mons -3 days 04:05:06.5",
                "@ 1 hour ago",
                "P1Y2M3DT4H5M6.5S",
                "3days",
            ],
        ),
        (
            TypeKind::Uuid,
            2950,
            "uuid",
            vec![
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
            ],
        ),
        (TypeKind::Json, 114, "json", vec!["{\"a\": [1, null]}"]),
        (TypeKind::Jsonb, 3802, "jsonb", vec!["[true]"]),
        (
            TypeKind::Inet,
            869,
            "inet",
            vec!["192.168.0.1/24", "::ffff:1.2.3.4", "fe80::1%eth0"],
        ),
        (
            TypeKind::Cidr,
            650,
            "cidr",
            vec!["10.0.0.0/8", "2001:db8::/32"],
        ),
        (
            TypeKind::MacAddr,
            829,
            "macaddr",
            vec!["08:00:2b:01:02:03", "0800.2b01.0203"],
        ),
    ];
    let mut strings = Strings::new(7);
    for (kind, oid, name, seeds) in kinds {
        let scalar = ty(kind, oid, name);
        let array = ty(
            TypeKind::Array(Box::new(scalar.clone())),
            0,
            &format!("{name}[]"),
        );
        let mut array_seeds: Vec<String> =
            seeds.iter().map(|s| format!("{{\"{s}\",NULL}}")).collect();
        array_seeds.push("{{1,2},{3,4}}".to_owned());
        array_seeds.push("[0:1]={a,b}".to_owned());
        let cases = strings.cases(&seeds, case_count());
        each_case(&cases, |text| {
            let _ = body(text, &scalar);
        });
        let array_seeds: Vec<&str> = array_seeds.iter().map(String::as_str).collect();
        let cases = strings.cases(&array_seeds, case_count() / 4);
        each_case(&cases, |text| {
            let _ = body(text, &array);
        });
    }
    let bounded = ColumnType {
        max_chars: Some(3),
        precision_scale: None,
        labels: None,
        base_name: None,
        charset: None,
        ..ty(TypeKind::Text, 1043, "character varying(3)")
    };
    each_case(&strings.cases(&["abc  ", "é  "], case_count()), |text| {
        let _ = body(text, &bounded);
    });
    each_case(&strings.cases(&["José Lu"], case_count()), |text| {
        let _ = shorten(text);
    });
}

#[test]
fn dates_as_days_match_their_iso_text() {
    let date = ty(TypeKind::Date, 1082, "date");
    let text = ty(TypeKind::Text, 25, "text");
    for (days, iso) in [
        (0, "2000-01-01"),
        (59, "2000-02-29"),
        (-1, "1999-12-31"),
        (-10_957, "1970-01-01"),
        (8_825, "2024-02-29"),
        (-730_119, "0001-01-01"),
        (-730_120, "0001-12-31 BC"),
        (2_921_939, "9999-12-31"),
    ] {
        assert_eq!(datetime::iso_date(days), iso, "{days}");
        let mut typed = Vec::new();
        encode_typed(&Value::Date(days), &date, &mut typed).expect("date");
        assert_eq!(typed, body(iso, &date).expect(iso), "{iso}");
        let mut as_text = Vec::new();
        encode_typed(&Value::Date(days), &text, &mut as_text).expect("text");
        assert_eq!(as_text, iso.as_bytes(), "{iso}");
    }
}

#[test]
fn trim_space_drops_the_servers_spaces_only() {
    for (text, trimmed) in [
        ("", ""),
        (" \t\n\x0B\x0C\r", ""),
        (" 12 ", "12"),
        ("\t1.5e3\r\n", "1.5e3"),
        ("\u{a0}7\u{a0}", "\u{a0}7\u{a0}"),
        (" é ", "é"),
        ("x y", "x y"),
    ] {
        assert_eq!(trim_space(text), trimmed, "{text:?}");
    }
    let mut strings = crate::arbitrary::Strings::new(11);
    let cases = strings.cases(&[" 1 ", "\u{3000}", "\t\r"], crate::arbitrary::case_count());
    crate::arbitrary::each_case(&cases, |text| {
        assert_eq!(trim_space(text), text.trim_matches(is_space), "{text:?}");
    });
}
