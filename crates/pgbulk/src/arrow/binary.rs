//! Arrow values straight into PostgreSQL's binary form, for the pairs of
//! Arrow type and column type where that form is exactly what the server's
//! input function makes of the value's text ([`super::text`]): integers
//! that fit, floats (NaN as the server's own), booleans, decimals whose
//! column holds every value of their precision, unlimited text, bytes,
//! UUIDs, dates, times, and timestamps within the server's range
//! (nanoseconds rounded as the server rounds their text). Any other pair, and any value outside those bounds, goes
//! as text, so the server (or the engine's text encoder) decides as before.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, Time32MillisecondType, Time32SecondType, Time64MicrosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow_schema::{DataType, TimeUnit};

use crate::codec::{ColumnType, TypeKind};

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = EPOCH_DAYS * 86_400_000_000;
/// The first valid date (4714-11-24 BC) in days from 2000-01-01.
const MIN_DATE: i64 = -2_451_545;
/// One past the last valid date (5874897-12-31) in days from 2000-01-01.
const END_DATE: i64 = 2_145_031_949;
/// The first valid timestamp in microseconds from 2000-01-01.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// One past the last valid timestamp (294277-01-01).
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
/// Microseconds in a day (`24:00:00` is a valid time).
const DAY_MICROS: i64 = 86_400_000_000;

/// How one Arrow column is encoded for its column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    Bool,
    /// An integer into `int2`, `int4` or `int8` (bytes 2, 4, 8), when it
    /// fits.
    Int(IntSource, u8),
    Float4,
    Float8,
    /// A decimal of scale `scale` whose unscaled values below `limit`
    /// (10^precision) the column always holds.
    Decimal {
        scale: u16,
        limit: u128,
    },
    /// Characters without a NUL into `text` or unlimited `varchar`.
    Text,
    /// Bytes into `bytea` (or 16 into `uuid`).
    Bytes,
    /// Days from 1970 into `date`.
    Date,
    /// Into `time`: microseconds per unit.
    Time(TimeUnit),
    /// Into `timestamp` (naive) or `timestamptz` (zoned): the unit.
    Timestamp(TimeUnit),
}

/// The Arrow integer type of an [`Direct::Int`] column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntSource {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
}

/// How values of `data_type` (`uuid`: an `arrow.uuid` column) are encoded
/// for a column of type `ty`, or `None`: as text.
pub(crate) fn plan(data_type: &DataType, uuid: bool, ty: &ColumnType) -> Option<Direct> {
    let int = |source| {
        let bytes = match ty.kind {
            TypeKind::Int2 => 2,
            TypeKind::Int4 => 4,
            TypeKind::Int8 => 8,
            _ => return None,
        };
        Some(Direct::Int(source, bytes))
    };
    match (data_type, &ty.kind) {
        (DataType::Boolean, TypeKind::Bool) => Some(Direct::Bool),
        (DataType::Int8, _) => int(IntSource::I8),
        (DataType::Int16, _) => int(IntSource::I16),
        (DataType::Int32, _) => int(IntSource::I32),
        (DataType::Int64, _) => int(IntSource::I64),
        (DataType::UInt8, _) => int(IntSource::U8),
        (DataType::UInt16, _) => int(IntSource::U16),
        (DataType::UInt32, _) => int(IntSource::U32),
        (DataType::Float32, TypeKind::Float4) => Some(Direct::Float4),
        (DataType::Float64, TypeKind::Float8) => Some(Direct::Float8),
        (DataType::Decimal128(precision, scale), TypeKind::Numeric) => {
            decimal(*precision, *scale, ty.precision_scale)
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, TypeKind::Text)
            // text and varchar without a limit: the characters as they are
            // (into a database of another encoding, the text path checks
            // them).
            if matches!(ty.oid, 25 | 1043) && ty.max_chars.is_none() && ty.charset.is_none() =>
        {
            Some(Direct::Text)
        }
        (DataType::Binary | DataType::LargeBinary | DataType::BinaryView, TypeKind::Bytea) => {
            Some(Direct::Bytes)
        }
        (DataType::FixedSizeBinary(16), TypeKind::Uuid) if uuid => Some(Direct::Bytes),
        (DataType::FixedSizeBinary(_), TypeKind::Bytea) if !uuid => Some(Direct::Bytes),
        (DataType::Date32, TypeKind::Date) => Some(Direct::Date),
        (DataType::Time32(unit), TypeKind::Time) => Some(Direct::Time(*unit)),
        (DataType::Time64(TimeUnit::Microsecond), TypeKind::Time) => {
            Some(Direct::Time(TimeUnit::Microsecond))
        }
        (DataType::Timestamp(unit, None), TypeKind::Timestamp)
        | (DataType::Timestamp(unit, Some(_)), TypeKind::TimestampTz(_)) => {
            Some(Direct::Timestamp(*unit))
        }
        _ => None,
    }
}

/// A decimal of `precision` and `scale` into `numeric` or `numeric(p, s)`:
/// only when every value of the decimal fits the column without rounding
/// into more digits, so the server's typmod never refuses one.
fn decimal(precision: u8, scale: i8, column: Option<(u32, i32)>) -> Option<Direct> {
    let scale_u = u16::try_from(scale).ok()?;
    if let Some((p, s)) = column {
        let (precision, scale) = (i64::from(precision), i64::from(scale));
        let (p, s) = (i64::from(p), i64::from(s));
        if scale > s || precision - scale > p - s {
            return None;
        }
    }
    let limit = 10u128.checked_pow(u32::from(precision))?;
    Some(Direct::Decimal {
        scale: scale_u,
        limit,
    })
}

fn prim<T: ArrowPrimitiveType>(array: &dyn Array, i: usize) -> Option<T::Native> {
    array.as_primitive_opt::<T>().map(|a| a.value(i))
}

impl Direct {
    /// Appends the binary body of the value at `i` of `array` (not NULL)
    /// to `out`; `false` (with `out` as it may be) when the value must go as
    /// text.
    pub(crate) fn encode(self, array: &dyn Array, i: usize, out: &mut Vec<u8>) -> bool {
        match self {
            Self::Bool => match array.as_boolean_opt() {
                Some(a) => {
                    out.push(u8::from(a.value(i)));
                    true
                }
                None => false,
            },
            Self::Int(source, bytes) => {
                let v = match source {
                    IntSource::I8 => prim::<Int8Type>(array, i).map(i64::from),
                    IntSource::I16 => prim::<Int16Type>(array, i).map(i64::from),
                    IntSource::I32 => prim::<Int32Type>(array, i).map(i64::from),
                    IntSource::I64 => prim::<Int64Type>(array, i),
                    IntSource::U8 => prim::<UInt8Type>(array, i).map(i64::from),
                    IntSource::U16 => prim::<UInt16Type>(array, i).map(i64::from),
                    IntSource::U32 => prim::<UInt32Type>(array, i).map(i64::from),
                };
                let Some(v) = v else { return false };
                match bytes {
                    2 => i16::try_from(v).is_ok_and(|v| {
                        out.extend_from_slice(&v.to_be_bytes());
                        true
                    }),
                    4 => i32::try_from(v).is_ok_and(|v| {
                        out.extend_from_slice(&v.to_be_bytes());
                        true
                    }),
                    _ => {
                        out.extend_from_slice(&v.to_be_bytes());
                        true
                    }
                }
            }
            Self::Float4 => prim::<Float32Type>(array, i).is_some_and(|v| {
                // The server's own NaN, whatever the payload.
                let v = if v.is_nan() { f32::NAN } else { v };
                out.extend_from_slice(&v.to_be_bytes());
                true
            }),
            Self::Float8 => prim::<Float64Type>(array, i).is_some_and(|v| {
                let v = if v.is_nan() { f64::NAN } else { v };
                out.extend_from_slice(&v.to_be_bytes());
                true
            }),
            Self::Decimal { scale, limit } => prim::<Decimal128Type>(array, i)
                .is_some_and(|v| v.unsigned_abs() < limit && numeric(v, scale, out)),
            Self::Text => {
                let s = match array.data_type() {
                    DataType::Utf8 => array.as_string_opt::<i32>().map(|a| a.value(i)),
                    DataType::LargeUtf8 => array.as_string_opt::<i64>().map(|a| a.value(i)),
                    DataType::Utf8View => array.as_string_view_opt().map(|a| a.value(i)),
                    _ => None,
                };
                // PostgreSQL text holds no NUL: the text path says so.
                s.filter(|s| !s.as_bytes().contains(&0)).is_some_and(|s| {
                    out.extend_from_slice(s.as_bytes());
                    true
                })
            }
            Self::Bytes => {
                let b = match array.data_type() {
                    DataType::Binary => array.as_binary_opt::<i32>().map(|a| a.value(i)),
                    DataType::LargeBinary => array.as_binary_opt::<i64>().map(|a| a.value(i)),
                    DataType::BinaryView => array.as_binary_view_opt().map(|a| a.value(i)),
                    DataType::FixedSizeBinary(_) => {
                        array.as_fixed_size_binary_opt().map(|a| a.value(i))
                    }
                    _ => None,
                };
                b.is_some_and(|b| {
                    out.extend_from_slice(b);
                    true
                })
            }
            Self::Date => prim::<Date32Type>(array, i)
                .map(|d| i64::from(d) - EPOCH_DAYS)
                .filter(|d| (MIN_DATE..END_DATE).contains(d))
                .and_then(|d| i32::try_from(d).ok())
                .is_some_and(|d| {
                    out.extend_from_slice(&d.to_be_bytes());
                    true
                }),
            Self::Time(unit) => {
                let micros = match unit {
                    TimeUnit::Second => prim::<Time32SecondType>(array, i)
                        .and_then(|v| i64::from(v).checked_mul(1_000_000)),
                    TimeUnit::Millisecond => prim::<Time32MillisecondType>(array, i)
                        .and_then(|v| i64::from(v).checked_mul(1_000)),
                    TimeUnit::Microsecond => prim::<Time64MicrosecondType>(array, i),
                    TimeUnit::Nanosecond => None,
                };
                micros
                    .filter(|m| (0..=DAY_MICROS).contains(m))
                    .is_some_and(|m| {
                        out.extend_from_slice(&m.to_be_bytes());
                        true
                    })
            }
            Self::Timestamp(unit) => {
                let micros = match unit {
                    TimeUnit::Second => {
                        prim::<TimestampSecondType>(array, i).and_then(|v| v.checked_mul(1_000_000))
                    }
                    TimeUnit::Millisecond => prim::<TimestampMillisecondType>(array, i)
                        .and_then(|v| v.checked_mul(1_000)),
                    TimeUnit::Microsecond => prim::<TimestampMicrosecondType>(array, i),
                    TimeUnit::Nanosecond => {
                        prim::<TimestampNanosecondType>(array, i).map(rounded_micros)
                    }
                };
                micros
                    .and_then(|m| m.checked_sub(EPOCH_MICROS))
                    .filter(|m| (MIN_TIMESTAMP..END_TIMESTAMP).contains(m))
                    .is_some_and(|m| {
                        out.extend_from_slice(&m.to_be_bytes());
                        true
                    })
            }
        }
    }
}

/// Microseconds of `ns` nanoseconds as the server reads the nine-digit
/// fraction of their text (`ParseFractionalSecond`): the fraction as the
/// nearest double (`strtod`; dividing two exact doubles rounds the same),
/// times 10^6, rounded half to even (`rint`).
fn rounded_micros(ns: i64) -> i64 {
    let (seconds, fraction) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let micros = ((fraction as f64 / 1e9) * 1e6).round_ties_even() as i64;
    seconds * 1_000_000 + micros
}

/// `numeric`'s binary form of `unscaled` × 10^-`scale`: base-10000 digit
/// groups aligned on the decimal point, without leading or trailing zero
/// groups, the display scale `scale`. `false` when it does not fit here.
fn numeric(unscaled: i128, scale: u16, out: &mut Vec<u8>) -> bool {
    let Some(unit) = 10u128.checked_pow(u32::from(scale)) else {
        return false;
    };
    let abs = unscaled.unsigned_abs();
    let (mut int, frac) = (abs / unit, abs % unit);
    let scale_digits = u32::from(scale);
    let frac_groups = scale_digits.div_ceil(4);
    // Groups from the most significant: the integer's, then the fraction's.
    let mut groups = [0i16; 24];
    let mut int_groups = Vec::new();
    while int > 0 {
        int_groups.push(i16::try_from(int % 10_000).unwrap_or(0));
        int /= 10_000;
    }
    let mut n = 0;
    for g in int_groups.iter().rev() {
        groups[n] = *g;
        n += 1;
    }
    let first_frac = n;
    for j in 0..frac_groups {
        // Fraction digits 4j+1..=4j+4; the last group is padded with zeros.
        let after = scale_digits.saturating_sub(4 * (j + 1));
        let group = match 10u128.checked_pow(after) {
            Some(place) if 4 * (j + 1) <= scale_digits => frac / place % 10_000,
            _ => frac % 10u128.pow(scale_digits - 4 * j) * 10u128.pow(4 * (j + 1) - scale_digits),
        };
        if n == groups.len() {
            return false;
        }
        groups[n] = i16::try_from(group).unwrap_or(0);
        n += 1;
    }
    // Weight of groups[j]: integer groups count down to 0, then -1, -2...
    let weight_of =
        |j: usize| i32::try_from(first_frac).unwrap_or(0) - 1 - i32::try_from(j).unwrap_or(0);
    let digits = &groups[..n];
    let (ndigits, weight, sign, digits) = match (
        digits.iter().position(|g| *g != 0),
        digits.iter().rposition(|g| *g != 0),
    ) {
        (Some(a), Some(b)) => {
            let Ok(weight) = i16::try_from(weight_of(a)) else {
                return false;
            };
            let sign = if unscaled < 0 { 0x4000u16 } else { 0x0000 };
            (b + 1 - a, weight, sign, &digits[a..=b])
        }
        _ => (0, 0, 0x0000, &digits[..0]),
    };
    let Ok(ndigits) = i16::try_from(ndigits) else {
        return false;
    };
    crate::codec::write_numeric(out, ndigits, weight, sign, scale, digits);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::{Time32SecondType, TimestampSecondType};
    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
        Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array,
        LargeStringArray, PrimitiveArray, StringArray, StringViewArray, Time64MicrosecondArray,
        TimestampMicrosecondArray, TimestampMillisecondArray, UInt32Array,
    };

    use super::*;

    fn column(oid: u32) -> ColumnType {
        column_with(oid, None, None)
    }

    fn column_with(oid: u32, max_chars: Option<u32>, ps: Option<(u32, i32)>) -> ColumnType {
        ColumnType {
            oid,
            kind: ColumnType::kind_of_builtin(oid),
            name: format!("oid {oid}"),
            cast_name: String::new(),
            max_chars,
            precision_scale: ps,
            labels: None,
            base_name: None,
            charset: None,
        }
    }

    /// Every value of `array` for `ty`: encoded directly, it is byte for
    /// byte what the engine's text encoder makes of the value's text; a
    /// value left to text is one the direct encoder must not take. Returns
    /// how many went directly.
    fn same_as_text(array: ArrayRef, uuid: bool, ty: &ColumnType) -> usize {
        let direct = plan(array.data_type(), uuid, ty)
            .unwrap_or_else(|| panic!("{} into {}: no direct plan", array.data_type(), ty.name));
        let mut direct_count = 0;
        for i in 0..array.len() {
            let mut text = String::new();
            let form = if uuid {
                super::super::text::Form::Uuid
            } else {
                super::super::text::Form::Plain
            };
            let present = super::super::text::cell(array.as_ref(), i, form, &mut text)
                .expect("the text path takes it");
            assert!(present, "test arrays hold no NULL");
            let mut via_text = Vec::new();
            let text_result = crate::codec::encode_text(&text, ty, &mut via_text);
            let mut direct_out = Vec::new();
            if direct.encode(array.as_ref(), i, &mut direct_out) {
                direct_count += 1;
                match text_result {
                    Ok(()) => assert_eq!(direct_out, via_text, "{text:?} into {}", ty.name),
                    // Text the engine leaves to the server (far dates):
                    // the bounds are checked against a server elsewhere.
                    Err(e) if e.is_for_server() => {}
                    Err(e) => panic!("{text:?} into {}: taken directly, but {e}", ty.name),
                }
            }
        }
        direct_count
    }

    #[test]
    fn direct_values_are_byte_for_byte_what_their_text_encodes_to() {
        let i64s = Int64Array::from(vec![0, 1, -1, 32_767, 32_768, -32_769, i64::MAX, i64::MIN]);
        let i64s: ArrayRef = Arc::new(i64s);
        assert_eq!(same_as_text(i64s.clone(), false, &column(21)), 4);
        assert_eq!(same_as_text(i64s.clone(), false, &column(23)), 6);
        assert_eq!(same_as_text(i64s, false, &column(20)), 8);
        let small: ArrayRef = Arc::new(Int8Array::from(vec![i8::MIN, 0, i8::MAX]));
        assert_eq!(same_as_text(small, false, &column(21)), 3);
        let i16s: ArrayRef = Arc::new(Int16Array::from(vec![i16::MIN, i16::MAX]));
        assert_eq!(same_as_text(i16s, false, &column(23)), 2);
        let i32s: ArrayRef = Arc::new(Int32Array::from(vec![i32::MIN, i32::MAX, 7]));
        assert_eq!(same_as_text(i32s, false, &column(20)), 3);
        let u32s: ArrayRef = Arc::new(UInt32Array::from(vec![0, u32::MAX]));
        assert_eq!(same_as_text(u32s, false, &column(23)), 1);

        let f64s = Float64Array::from(vec![
            0.1,
            -0.0,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7FF0_0000_0000_0001),
        ]);
        assert_eq!(same_as_text(Arc::new(f64s), false, &column(701)), 11);
        let f32s = Float32Array::from(vec![0.1, -0.0, f32::MAX, 1e-45, f32::NAN, -f32::INFINITY]);
        assert_eq!(same_as_text(Arc::new(f32s), false, &column(700)), 6);

        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![true, false]));
        assert_eq!(same_as_text(bools, false, &column(16)), 2);

        let texts = vec!["", "plain", "é😀 \"quoted\"\n", "nul\0inside", " spaces "];
        let utf8: ArrayRef = Arc::new(StringArray::from(texts.clone()));
        assert_eq!(same_as_text(utf8.clone(), false, &column(25)), 4);
        assert_eq!(same_as_text(utf8.clone(), false, &column(1043)), 4);
        let large: ArrayRef = Arc::new(LargeStringArray::from(texts.clone()));
        assert_eq!(same_as_text(large, false, &column(25)), 4);
        let view: ArrayRef = Arc::new(StringViewArray::from(texts));
        assert_eq!(same_as_text(view, false, &column(25)), 4);
        // Limited or padded character types are the text path's.
        assert_eq!(
            plan(utf8.data_type(), false, &column_with(1043, Some(3), None)),
            None
        );
        assert_eq!(plan(utf8.data_type(), false, &column(1042)), None);
        assert_eq!(plan(utf8.data_type(), false, &column(3802)), None);

        let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![&b""[..], b"\x00\xff", b"\\x"]));
        assert_eq!(same_as_text(bytes, false, &column(17)), 3);
        let uuids: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_iter([[0u8; 16], [0xab; 16]].into_iter())
                .expect("uuids"),
        );
        assert_eq!(same_as_text(uuids.clone(), true, &column(2950)), 2);
        assert_eq!(same_as_text(uuids, false, &column(17)), 2);

        // Dates from before the first valid one to after the last.
        let dates = Date32Array::from(vec![
            0,
            10_957,
            -719_162,
            -2_440_588,
            -2_440_589,
            2_932_896,
            2_145_042_905,
            2_145_042_906,
            i32::MAX,
            i32::MIN,
        ]);
        assert_eq!(same_as_text(Arc::new(dates), false, &column(1082)), 6);

        let times = Time64MicrosecondArray::from(vec![0, 1, DAY_MICROS - 1, DAY_MICROS, -1]);
        assert_eq!(same_as_text(Arc::new(times), false, &column(1083)), 4);
        let seconds: ArrayRef = Arc::new(PrimitiveArray::<Time32SecondType>::from(vec![0, 86_399]));
        assert_eq!(same_as_text(seconds, false, &column(1083)), 2);

        let micros = vec![
            0,
            1,
            -1,
            EPOCH_MICROS,
            1_709_251_199_999_999,
            -62_135_596_800_000_000,
            MIN_TIMESTAMP + EPOCH_MICROS,
            MIN_TIMESTAMP + EPOCH_MICROS - 1,
            i64::MAX,
            i64::MIN,
        ];
        let naive = TimestampMicrosecondArray::from(micros.clone());
        assert_eq!(same_as_text(Arc::new(naive), false, &column(1114)), 8);
        let zoned = TimestampMicrosecondArray::from(micros).with_timezone("+05:30");
        let mut tz = column(1184);
        tz.kind = TypeKind::TimestampTz(Some(3600));
        assert_eq!(same_as_text(Arc::new(zoned), false, &tz), 8);
        let millis =
            TimestampMillisecondArray::from(vec![-1, 1_000, i64::MAX]).with_timezone("UTC");
        assert_eq!(same_as_text(Arc::new(millis), false, &tz), 2);
        let secs: ArrayRef = Arc::new(PrimitiveArray::<TimestampSecondType>::from(vec![
            -86_401, 0, 1,
        ]));
        assert_eq!(same_as_text(secs, false, &column(1114)), 3);
        // A naive timestamp into timestamptz is the server's to place.
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(plan(&naive, false, &tz), None);
    }

    #[test]
    fn decimals_encode_as_their_text_does() {
        let mut values: Vec<i128> = vec![0, 1, -1, 5, -5, 10, 100, 1000, 10_000, 99_999_999];
        values.extend([
            12_345,
            -12_345,
            1_000_000_000,
            10i128.pow(37),
            -(10i128.pow(38) - 1),
        ]);
        let mut x: i128 = 7;
        for _ in 0..60 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) % 10i128.pow(38);
            values.push(x);
            values.push(-x / 1_000);
        }
        for scale in [0i8, 1, 2, 3, 4, 5, 8, 10, 19, 38] {
            let array = Decimal128Array::from(values.clone())
                .with_precision_and_scale(38, scale)
                .expect("decimal");
            let n = same_as_text(Arc::new(array), false, &column(1700));
            assert_eq!(n, values.len(), "scale {scale}");
        }
        // Into numeric(p, s): only when every value fits without rounding.
        let d = |p, s| DataType::Decimal128(p, s);
        let ps = |p, s| column_with(1700, None, Some((p, s)));
        assert!(plan(&d(12, 2), false, &ps(12, 2)).is_some());
        assert!(plan(&d(10, 2), false, &ps(12, 4)).is_some());
        assert!(plan(&d(12, 2), false, &ps(12, 3)).is_none());
        assert!(plan(&d(12, 3), false, &ps(12, 2)).is_none());
        assert!(plan(&d(12, -2), false, &column(1700)).is_none());
        // A value beyond its own precision goes as text (the server's
        // message, with the row's place).
        let wide = Decimal128Array::from(vec![10i128.pow(12)])
            .with_precision_and_scale(12, 2)
            .expect("decimal");
        let direct = plan(wide.data_type(), false, &ps(12, 2)).expect("plan");
        assert!(!direct.encode(&wide, 0, &mut Vec::new()));
    }
}
