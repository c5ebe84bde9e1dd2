//! The PostgreSQL column type of each Arrow type, for a table pgbulk
//! creates from an Arrow schema (the table in the README).

use arrow_schema::{DataType, Field};

/// Whether `field` is the `arrow.uuid` extension type.
pub(crate) fn is_uuid(field: &Field) -> bool {
    matches!(field.data_type(), DataType::FixedSizeBinary(16))
        && field
            .metadata()
            .get("ARROW:extension:name")
            .is_some_and(|n| n == "arrow.uuid")
}

/// Whether `field` holds text marked by metadata `key` = `value`.
fn is_marked_text(field: &Field, key: &str, value: &str) -> bool {
    matches!(
        field.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) && field.metadata().get(key).is_some_and(|v| v == value)
}

/// Whether `field` holds JSON text: the `arrow.json` extension type (a
/// Parquet file's JSON logical type reads as it).
fn is_json(field: &Field) -> bool {
    is_marked_text(field, "ARROW:extension:name", "arrow.json")
}

/// Whether `field` holds numbers as text, each with its own scale: the
/// Python package's reading of a pandas column of `decimal.Decimal`
/// (pyarrow would give every value the largest scale and the precision of
/// the values seen, too narrow for the next batch's).
fn is_numeric_text(field: &Field) -> bool {
    is_marked_text(field, "pgbulk:type", "numeric")
}

/// Refuses a field of an extension type whose values are integers standing
/// for something else: pandas' `pandas.period` holds the periods since
/// 1970 (2024-01 as 648), which would be stored as those numbers.
/// Extension types over text, binary or nested storage keep their
/// storage's meaning (a WKB geometry as `bytea`).
pub(crate) fn known_meaning(field: &Field) -> Result<(), String> {
    let Some(name) = field.metadata().get("ARROW:extension:name") else {
        return Ok(());
    };
    if field.data_type().is_integer() {
        return Err(format!(
            "its Arrow extension type {name} holds integers that stand for its values, and pgbulk does not know how; convert the column first (a pandas Period: .dt.to_timestamp() for its start, .astype(str) for its text)"
        ));
    }
    Ok(())
}

/// The column type for `field`, or why there is none.
pub(crate) fn column_type(field: &Field) -> Result<String, String> {
    known_meaning(field)?;
    if is_uuid(field) {
        return Ok("uuid".to_owned());
    }
    if is_json(field) {
        return Ok("jsonb".to_owned());
    }
    if is_numeric_text(field) {
        return Ok("numeric".to_owned());
    }
    sql_type(field.data_type())
}

/// The time zone of a timestamp type with one, or of a list's (or
/// dictionary's) timestamps.
pub(crate) fn time_zone(data_type: &DataType) -> Option<&str> {
    match data_type {
        DataType::Timestamp(_, zone) => zone.as_deref(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            time_zone(f.data_type())
        }
        DataType::Dictionary(_, values) => time_zone(values),
        _ => None,
    }
}

fn sql_type(data_type: &DataType) -> Result<String, String> {
    Ok(match data_type {
        DataType::Null | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            "text".to_owned()
        }
        DataType::Boolean => "boolean".to_owned(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".to_owned(),
        DataType::Int32 | DataType::UInt16 => "integer".to_owned(),
        DataType::Int64 | DataType::UInt32 => "bigint".to_owned(),
        DataType::UInt64 => "numeric(20,0)".to_owned(),
        DataType::Float16 | DataType::Float32 => "real".to_owned(),
        DataType::Float64 => "double precision".to_owned(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            if *s < 0 || i16::from(*s) > i16::from(*p) {
                // numeric(p,s) needs 0 <= s <= p before PostgreSQL 15.
                "numeric".to_owned()
            } else {
                format!("numeric({p},{s})")
            }
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "bytea".to_owned(),
        DataType::Date32 | DataType::Date64 => "date".to_owned(),
        DataType::Time32(_) | DataType::Time64(_) => "time".to_owned(),
        DataType::Timestamp(_, None) => "timestamp".to_owned(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".to_owned(),
        DataType::Duration(_) | DataType::Interval(_) => "interval".to_owned(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            let inner = sql_type(f.data_type())?;
            // PostgreSQL arrays of arrays are one type: int[] holds
            // {{1,2},{3,4}} too.
            if inner.ends_with("[]") {
                inner
            } else {
                format!("{inner}[]")
            }
        }
        DataType::Struct(_) | DataType::Map(..) => "jsonb".to_owned(),
        DataType::Dictionary(_, values) => sql_type(values)?,
        other => {
            return Err(format!(
                "Arrow type {other} has no PostgreSQL column type here"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{Fields, TimeUnit};

    use super::*;

    #[test]
    fn arrow_types_map_to_columns() {
        let t = |d: DataType| column_type(&Field::new("c", d, true));
        assert_eq!(t(DataType::Int8).as_deref(), Ok("smallint"));
        assert_eq!(t(DataType::UInt64).as_deref(), Ok("numeric(20,0)"));
        assert_eq!(
            t(DataType::Decimal128(12, 2)).as_deref(),
            Ok("numeric(12,2)")
        );
        assert_eq!(
            t(DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("Europe/Oslo".into())
            ))
            .as_deref(),
            Ok("timestamptz")
        );
        assert_eq!(
            t(DataType::Timestamp(TimeUnit::Second, None)).as_deref(),
            Ok("timestamp")
        );
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int32, true)));
        assert_eq!(t(list.clone()).as_deref(), Ok("integer[]"));
        assert_eq!(
            t(DataType::List(Arc::new(Field::new("item", list, true)))).as_deref(),
            Ok("integer[]")
        );
        assert_eq!(t(DataType::Struct(Fields::empty())).as_deref(), Ok("jsonb"));
        assert_eq!(
            t(DataType::Dictionary(
                Box::new(DataType::Int8),
                Box::new(DataType::Utf8)
            ))
            .as_deref(),
            Ok("text")
        );
        let uuid = Field::new("u", DataType::FixedSizeBinary(16), true)
            .with_metadata([("ARROW:extension:name".to_owned(), "arrow.uuid".to_owned())].into());
        assert_eq!(column_type(&uuid).as_deref(), Ok("uuid"));
        let numeric = Field::new("n", DataType::Utf8, true)
            .with_metadata([("pgbulk:type".to_owned(), "numeric".to_owned())].into());
        assert_eq!(column_type(&numeric).as_deref(), Ok("numeric"));
        let other = Field::new("n", DataType::Utf8, true)
            .with_metadata([("pgbulk:type".to_owned(), "money".to_owned())].into());
        assert_eq!(column_type(&other).as_deref(), Ok("text"));
        let period = Field::new("p", DataType::Int64, true).with_metadata(
            [(
                "ARROW:extension:name".to_owned(),
                "pandas.period".to_owned(),
            )]
            .into(),
        );
        assert!(column_type(&period).is_err_and(|why| why.contains("pandas.period")));
        let wkb = Field::new("g", DataType::Binary, true)
            .with_metadata([("ARROW:extension:name".to_owned(), "geoarrow.wkb".to_owned())].into());
        assert_eq!(column_type(&wkb).as_deref(), Ok("bytea"));
        assert!(
            t(DataType::Union(
                arrow_schema::UnionFields::empty(),
                arrow_schema::UnionMode::Dense
            ))
            .is_err()
        );
    }
}
