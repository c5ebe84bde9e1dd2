//! Arrow values as the text PostgreSQL's input functions read: the same
//! path as a CSV field, so a value is stored exactly as the server would
//! store that text (floats in their shortest round-trip form, decimals with
//! their scale, timestamps to the nanosecond for the server to round,
//! arrays as array literals, structs and maps as JSON).

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Date64Type, Decimal128Type, Decimal256Type,
    DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType,
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    IntervalDayTimeType, IntervalMonthDayNanoType, IntervalYearMonthType, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, OffsetSizeTrait};
use arrow_schema::{DataType, IntervalUnit, TimeUnit};

/// Why a value has no text.
pub(crate) type Refusal = String;

/// How a column's values are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// As PostgreSQL's input functions read them.
    Plain,
    /// The `arrow.uuid` extension: 16-byte binary values as UUIDs.
    Uuid,
    /// Into a `json` or `jsonb` column: lists, structs, maps and booleans
    /// in their JSON form (`[1,2]`, not the array literal `{"1","2"}`;
    /// `true`, not `t`); text as it is, the JSON it holds.
    Json,
}

/// Writes the value at `i` of `array` into `out` (cleared first) in
/// `form`; `false` for NULL.
pub(crate) fn cell(
    array: &dyn Array,
    i: usize,
    form: Form,
    out: &mut String,
) -> Result<bool, Refusal> {
    out.clear();
    if null_at(array, i) {
        return Ok(false);
    }
    match (array.data_type(), form) {
        (DataType::FixedSizeBinary(16), Form::Uuid) => {
            write_uuid(array.as_fixed_size_binary().value(i), out)
        }
        (
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Boolean,
            Form::Json,
        ) => json(array, i, out)?,
        _ => value(array, i, out)?,
    }
    Ok(true)
}

/// Whether the value at `i` is NULL: every value of a `Null` array is,
/// though it has no validity buffer for [`Array::is_null`] to read.
fn null_at(array: &dyn Array, i: usize) -> bool {
    matches!(array.data_type(), DataType::Null) || array.is_null(i)
}

/// Nanoseconds per unit.
fn per_unit(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// Digits of a fraction of a second in `unit`.
fn digits(unit: TimeUnit) -> usize {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

fn prim<T: ArrowPrimitiveType>(array: &dyn Array, i: usize) -> T::Native {
    array.as_primitive::<T>().value(i)
}

/// The value at `i` (not NULL) appended to `out`.
fn value(array: &dyn Array, i: usize, out: &mut String) -> Result<(), Refusal> {
    let w = |r: std::fmt::Result| r.map_err(|e| e.to_string());
    match array.data_type() {
        DataType::Null => {}
        DataType::Boolean => out.push(if array.as_boolean().value(i) {
            't'
        } else {
            'f'
        }),
        DataType::Int8 => w(write!(out, "{}", prim::<Int8Type>(array, i)))?,
        DataType::Int16 => w(write!(out, "{}", prim::<Int16Type>(array, i)))?,
        DataType::Int32 => w(write!(out, "{}", prim::<Int32Type>(array, i)))?,
        DataType::Int64 => w(write!(out, "{}", prim::<Int64Type>(array, i)))?,
        DataType::UInt8 => w(write!(out, "{}", prim::<UInt8Type>(array, i)))?,
        DataType::UInt16 => w(write!(out, "{}", prim::<UInt16Type>(array, i)))?,
        DataType::UInt32 => w(write!(out, "{}", prim::<UInt32Type>(array, i)))?,
        DataType::UInt64 => w(write!(out, "{}", prim::<UInt64Type>(array, i)))?,
        DataType::Float16 => float(f64::from(prim::<Float16Type>(array, i).to_f32()), out),
        DataType::Float32 => {
            let v = prim::<Float32Type>(array, i);
            if v.is_finite() {
                // The shortest text that reads back as this f32.
                w(write!(out, "{v:?}"))?;
            } else {
                float(f64::from(v), out);
            }
        }
        DataType::Float64 => float(prim::<Float64Type>(array, i), out),
        DataType::Decimal128(..) => {
            out.push_str(&array.as_primitive::<Decimal128Type>().value_as_string(i))
        }
        DataType::Decimal256(..) => {
            out.push_str(&array.as_primitive::<Decimal256Type>().value_as_string(i))
        }
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(i)),
        DataType::Utf8View => out.push_str(array.as_string_view().value(i)),
        DataType::Binary => hex(array.as_binary::<i32>().value(i), out),
        DataType::LargeBinary => hex(array.as_binary::<i64>().value(i), out),
        DataType::BinaryView => hex(array.as_binary_view().value(i), out),
        DataType::FixedSizeBinary(_) => hex(array.as_fixed_size_binary().value(i), out),
        DataType::Date32 => date(i64::from(prim::<Date32Type>(array, i)), out),
        DataType::Date64 => date(prim::<Date64Type>(array, i).div_euclid(86_400_000), out),
        DataType::Time32(unit) => {
            let v = match unit {
                TimeUnit::Second => prim::<Time32SecondType>(array, i),
                _ => prim::<Time32MillisecondType>(array, i),
            };
            time_of_day(i128::from(v) * per_unit(*unit), digits(*unit), out);
        }
        DataType::Time64(unit) => {
            let v = match unit {
                TimeUnit::Microsecond => prim::<Time64MicrosecondType>(array, i),
                _ => prim::<Time64NanosecondType>(array, i),
            };
            time_of_day(i128::from(v) * per_unit(*unit), digits(*unit), out);
        }
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => prim::<TimestampSecondType>(array, i),
                TimeUnit::Millisecond => prim::<TimestampMillisecondType>(array, i),
                TimeUnit::Microsecond => prim::<TimestampMicrosecondType>(array, i),
                TimeUnit::Nanosecond => prim::<TimestampNanosecondType>(array, i),
            };
            timestamp(
                i128::from(v) * per_unit(*unit),
                digits(*unit),
                tz.is_some(),
                out,
            );
        }
        DataType::Duration(unit) => {
            let v = match unit {
                TimeUnit::Second => prim::<DurationSecondType>(array, i),
                TimeUnit::Millisecond => prim::<DurationMillisecondType>(array, i),
                TimeUnit::Microsecond => prim::<DurationMicrosecondType>(array, i),
                TimeUnit::Nanosecond => prim::<DurationNanosecondType>(array, i),
            };
            seconds(i128::from(v) * per_unit(*unit), out);
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            w(write!(
                out,
                "{} mons",
                prim::<IntervalYearMonthType>(array, i)
            ))?;
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = prim::<IntervalDayTimeType>(array, i);
            w(write!(out, "{} days ", v.days))?;
            seconds(i128::from(v.milliseconds) * 1_000_000, out);
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = prim::<IntervalMonthDayNanoType>(array, i);
            w(write!(out, "{} mons {} days ", v.months, v.days))?;
            seconds(i128::from(v.nanoseconds), out);
        }
        DataType::List(_) => list(array.as_list::<i32>(), i, out)?,
        DataType::LargeList(_) => list(array.as_list::<i64>(), i, out)?,
        DataType::FixedSizeList(..) => {
            let l = array.as_fixed_size_list();
            elements(l.value(i).as_ref(), out)?;
        }
        DataType::Struct(_) | DataType::Map(..) => json(array, i, out)?,
        DataType::Dictionary(..) => {
            let d = array.as_any_dictionary();
            let key = d.normalized_keys()[i];
            let values = d.values();
            if null_at(values.as_ref(), key) {
                return Err("a dictionary key points at a NULL value".to_owned());
            }
            value(values.as_ref(), key, out)?;
        }
        other => return Err(format!("Arrow type {other} is not supported")),
    }
    Ok(())
}

fn float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("Infinity");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Infinity");
    } else {
        // The shortest text that reads back as this f64.
        let _ = write!(out, "{v:?}");
    }
}

fn hex(bytes: &[u8], out: &mut String) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn write_uuid(b: &[u8], out: &mut String) {
    for (n, byte) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
}

/// Year, month and day of `days` since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD`, and the era suffix for years before 1 (` BC`).
fn ymd(days: i64, out: &mut String) -> &'static str {
    let (y, m, d) = civil(days);
    let (year, era) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
    let _ = write!(out, "{year:04}-{m:02}-{d:02}");
    era
}

fn date(days: i64, out: &mut String) {
    let era = ymd(days, out);
    out.push_str(era);
}

/// `HH:MM:SS[.fraction]` of `ns` nanoseconds (0 ≤ ns < a day, or more).
fn clock(ns: i128, frac_digits: usize, out: &mut String) {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac_digits > 0 {
        let scaled = frac / 10i128.pow(9 - frac_digits as u32);
        let _ = write!(out, ".{scaled:0frac_digits$}");
    }
}

fn time_of_day(ns: i128, frac_digits: usize, out: &mut String) {
    clock(ns, frac_digits, out);
}

fn timestamp(ns: i128, frac_digits: usize, zoned: bool, out: &mut String) {
    const DAY: i128 = 86_400_000_000_000;
    let days = ns.div_euclid(DAY) as i64;
    let era = ymd(days, out);
    out.push(' ');
    clock(ns.rem_euclid(DAY), frac_digits, out);
    if zoned {
        out.push_str("+00");
    }
    out.push_str(era);
}

/// An interval of `ns` nanoseconds as `S.fffffffff seconds`.
fn seconds(ns: i128, out: &mut String) {
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.abs();
    let _ = write!(
        out,
        "{sign}{}.{:09} seconds",
        ns / 1_000_000_000,
        ns % 1_000_000_000
    );
}

fn list<O: OffsetSizeTrait>(
    l: &arrow_array::GenericListArray<O>,
    i: usize,
    out: &mut String,
) -> Result<(), Refusal> {
    elements(l.value(i).as_ref(), out)
}

/// An array literal of `values`: `{a,"b c",NULL,{1,2}}`.
fn elements(values: &dyn Array, out: &mut String) -> Result<(), Refusal> {
    out.push('{');
    let mut item = String::new();
    for j in 0..values.len() {
        if j > 0 {
            out.push(',');
        }
        if null_at(values, j) {
            out.push_str("NULL");
            continue;
        }
        item.clear();
        value(values, j, &mut item)?;
        let nested = matches!(
            values.data_type(),
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
        );
        if nested {
            out.push_str(&item);
        } else {
            out.push('"');
            for c in item.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    out.push('}');
    Ok(())
}

/// The value at `i` as JSON text (structs and maps become objects; other
/// values their JSON form).
fn json(array: &dyn Array, i: usize, out: &mut String) -> Result<(), Refusal> {
    if null_at(array, i) {
        out.push_str("null");
        return Ok(());
    }
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (n, field) in fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(field.name().as_str()).to_string());
                out.push(':');
                json(s.column(n).as_ref(), i, out)?;
            }
            out.push('}');
        }
        DataType::Map(..) => {
            let m = array.as_map();
            let entries = m.value(i);
            out.push('{');
            let mut key = String::new();
            for j in 0..entries.len() {
                if j > 0 {
                    out.push(',');
                }
                key.clear();
                value(entries.column(0).as_ref(), j, &mut key)?;
                out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                out.push(':');
                json(entries.column(1).as_ref(), j, out)?;
            }
            out.push('}');
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let items = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(i),
                DataType::LargeList(_) => array.as_list::<i64>().value(i),
                _ => array.as_fixed_size_list().value(i),
            };
            out.push('[');
            for j in 0..items.len() {
                if j > 0 {
                    out.push(',');
                }
                json(items.as_ref(), j, out)?;
            }
            out.push(']');
        }
        DataType::Boolean => out.push_str(if array.as_boolean().value(i) {
            "true"
        } else {
            "false"
        }),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let mut text = String::new();
            value(array, i, &mut text)?;
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&text);
            } else {
                return Err(format!("{text} has no JSON form"));
            }
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => value(array, i, out)?,
        _ => {
            let mut text = String::new();
            value(array, i, &mut text)?;
            out.push_str(&serde_json::Value::from(text).to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder};
    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
        DurationMicrosecondArray, Float32Array, Float64Array, Int64Array, StringArray, StructArray,
        Time64NanosecondArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow_schema::Field;

    use super::*;

    fn texts(array: &dyn Array) -> Vec<Option<String>> {
        texts_in(array, Form::Plain)
    }

    fn texts_in(array: &dyn Array, form: Form) -> Vec<Option<String>> {
        let mut out = String::new();
        (0..array.len())
            .map(|i| {
                cell(array, i, form, &mut out)
                    .expect("text")
                    .then(|| out.clone())
            })
            .collect()
    }

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some((*s).to_owned())).collect()
    }

    #[test]
    fn scalars_read_as_the_server_reads_them() {
        assert_eq!(
            texts(&Int64Array::from(vec![Some(i64::MIN), None, Some(7)])),
            [Some(i64::MIN.to_string()), None, Some("7".to_owned())]
        );
        assert_eq!(
            texts(&Float64Array::from(vec![
                0.1,
                f64::NAN,
                f64::NEG_INFINITY,
                1e-300,
                -0.0
            ])),
            some(&["0.1", "NaN", "-Infinity", "1e-300", "-0.0"])
        );
        assert_eq!(texts(&Float32Array::from(vec![0.1f32])), some(&["0.1"]));
        assert_eq!(
            texts(&BooleanArray::from(vec![true, false])),
            some(&["t", "f"])
        );
        let d = Decimal128Array::from(vec![12345, -5])
            .with_precision_and_scale(10, 2)
            .expect("decimal");
        assert_eq!(texts(&d), some(&["123.45", "-0.05"]));
        assert_eq!(
            texts(&BinaryArray::from(vec![&b"\x00\xff"[..]])),
            some(&["\\x00ff"])
        );
        assert_eq!(
            texts(&StringArray::from(vec!["a,\"b\""])),
            some(&["a,\"b\""])
        );
    }

    #[test]
    fn dates_and_times_keep_every_digit_and_the_era() {
        assert_eq!(
            texts(&Date32Array::from(vec![0, -1, 19_783, -719_528])),
            some(&["1970-01-01", "1969-12-31", "2024-03-01", "0001-01-01 BC"])
        );
        assert_eq!(
            texts(
                &TimestampMicrosecondArray::from(vec![1_709_251_199_999_999]).with_timezone("UTC")
            ),
            some(&["2024-02-29 23:59:59.999999+00"])
        );
        assert_eq!(
            texts(&TimestampNanosecondArray::from(vec![-1])),
            some(&["1969-12-31 23:59:59.999999999"])
        );
        assert_eq!(
            texts(&Time64NanosecondArray::from(vec![86_399_000_000_001])),
            some(&["23:59:59.000000001"])
        );
        assert_eq!(
            texts(&DurationMicrosecondArray::from(vec![
                -1_500_000,
                90_000_000_000
            ])),
            some(&["-1.500000000 seconds", "90000.000000000 seconds"])
        );
    }

    #[test]
    fn lists_are_array_literals_and_structs_json() {
        let mut b = ListBuilder::new(StringBuilder::new());
        b.values().append_value("a b");
        b.values().append_null();
        b.values().append_value("q\"\\");
        b.append(true);
        b.append(false);
        b.append(true);
        assert_eq!(
            texts(&b.finish()),
            [
                Some(r#"{"a b",NULL,"q\"\\"}"#.to_owned()),
                None,
                Some("{}".to_owned())
            ]
        );
        let mut nested = ListBuilder::new(ListBuilder::new(Int32Builder::new()));
        nested.values().values().append_value(1);
        nested.values().values().append_value(2);
        nested.values().append(true);
        nested.values().values().append_value(3);
        nested.values().values().append_value(4);
        nested.values().append(true);
        nested.append(true);
        assert_eq!(texts(&nested.finish()), some(&[r#"{{"1","2"},{"3","4"}}"#]));
        let s = StructArray::from(vec![
            (
                Arc::new(Field::new("n", DataType::Int64, true)),
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("s", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["x\"y", "z"])) as ArrayRef,
            ),
        ]);
        assert_eq!(
            texts(&s),
            some(&[r#"{"n":1,"s":"x\"y"}"#, r#"{"n":null,"s":"z"}"#])
        );
    }

    #[test]
    fn into_json_lists_and_booleans_are_json_and_text_is_the_json_it_holds() {
        let json = |array: &dyn Array| texts_in(array, Form::Json);
        let mut list = ListBuilder::new(StringBuilder::new());
        list.values().append_value("a\"b");
        list.values().append_null();
        list.append(true);
        assert_eq!(json(&list.finish()), some(&[r#"["a\"b",null]"#]));
        assert_eq!(
            json(&BooleanArray::from(vec![true, false])),
            some(&["true", "false"])
        );
        assert_eq!(
            json(&StringArray::from(vec![r#"{"a": 1}"#])),
            some(&[r#"{"a": 1}"#])
        );
        assert_eq!(json(&Int64Array::from(vec![7])), some(&["7"]));
    }

    #[test]
    fn a_null_array_is_null_alone_in_lists_and_in_structs() {
        // A Null array has no validity buffer: `is_null` says false.
        let nulls = arrow_array::NullArray::new(2);
        assert_eq!(texts(&nulls), [None, None]);
        let mut list = ListBuilder::new(arrow_array::builder::NullBuilder::new());
        list.values().append_nulls(2);
        list.append(true);
        assert_eq!(texts(&list.finish()), some(&["{NULL,NULL}"]));
        let s = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Null, true)),
            Arc::new(arrow_array::NullArray::new(1)) as ArrayRef,
        )]);
        assert_eq!(texts(&s), some(&[r#"{"x":null}"#]));
    }
}
