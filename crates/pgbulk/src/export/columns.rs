//! How each source column is exported: the `SELECT` expression that reads
//! it (binary COPY), the Arrow/Parquet type it is written as, and the
//! BigQuery type it loads into.
//!
//! int2/int4/int8 → INT64 (Parquet INT16/INT32/INT64), float4/float8 →
//! FLOAT64 (Parquet FLOAT/DOUBLE), numeric(p,s) → NUMERIC when BigQuery's
//! NUMERIC (38 digits, 9 after the point) holds it, else BIGNUMERIC (76
//! digits, 38 after the point), refused when neither does; numeric
//! without a precision → BIGNUMERIC, each value checked. bool → BOOL;
//! text, varchar, char(n), name, enums and uuid → STRING; bytea → BYTES;
//! date → DATE; timestamp → DATETIME; timestamptz → TIMESTAMP; time →
//! TIME; json/jsonb → JSON (Parquet's JSON type); one-dimensional arrays of
//! these → ARRAY; anything else → STRING, as the server prints it. A
//! domain is exported as its base type.

use arrow_schema::{DataType, Field, TimeUnit};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// What a column's values are written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `bool`.
    Bool,
    /// `int2`.
    Int16,
    /// `int4`.
    Int32,
    /// `int8`.
    Int64,
    /// `float4`.
    Float32,
    /// `float8`.
    Float64,
    /// `numeric`, as a decimal of this precision and scale.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// Text of the client encoding (UTF-8).
    Text,
    /// `uuid`, written as its text.
    Uuid,
    /// `json`.
    Json,
    /// `jsonb` (its binary form: a version byte, then the text).
    Jsonb,
    /// `bytea`.
    Bytes,
    /// `date`.
    Date,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `time`.
    Time,
    /// A one-dimensional array of the element kind.
    List(Box<Kind>),
}

/// The largest precision of BigQuery's `BIGNUMERIC` (and of Arrow's
/// `Decimal256`).
const MAX_PRECISION: u8 = 76;

impl Kind {
    /// The Arrow type of the column.
    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Decimal { precision, scale } if *precision <= 38 => {
                DataType::Decimal128(*precision, *scale as i8)
            }
            Self::Decimal { precision, scale } => DataType::Decimal256(*precision, *scale as i8),
            Self::Text | Self::Uuid | Self::Json | Self::Jsonb => DataType::Utf8,
            Self::Bytes => DataType::Binary,
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Time => DataType::Time64(TimeUnit::Microsecond),
            Self::List(element) => DataType::List(element.field("element").into()),
        }
    }

    /// A nullable Arrow field of this kind named `name` (JSON carries
    /// Arrow's JSON extension type, written as Parquet's JSON type).
    pub fn field(&self, name: &str) -> Field {
        let field = Field::new(name, self.arrow_type(), true);
        match self {
            Self::Json | Self::Jsonb => {
                field.with_extension_type(arrow_schema::extension::Json::default())
            }
            _ => field,
        }
    }

    /// The BigQuery type the column loads into.
    pub fn bigquery_type(&self) -> String {
        match self {
            Self::Bool => "BOOL".to_owned(),
            Self::Int16 | Self::Int32 | Self::Int64 => "INT64".to_owned(),
            Self::Float32 | Self::Float64 => "FLOAT64".to_owned(),
            Self::Decimal { precision, scale } => {
                if bigquery_numeric(*precision, *scale) {
                    format!("NUMERIC({precision}, {scale})")
                } else {
                    format!("BIGNUMERIC({precision}, {scale})")
                }
            }
            Self::Text | Self::Uuid => "STRING".to_owned(),
            Self::Json | Self::Jsonb => "JSON".to_owned(),
            Self::Bytes => "BYTES".to_owned(),
            Self::Date => "DATE".to_owned(),
            Self::Timestamp => "DATETIME".to_owned(),
            Self::TimestampTz => "TIMESTAMP".to_owned(),
            Self::Time => "TIME".to_owned(),
            Self::List(element) => format!("ARRAY<{}>", element.bigquery_type()),
        }
    }

    /// How a plan names the Parquet side.
    pub fn parquet_type(&self) -> String {
        match self {
            Self::Bool => "BOOLEAN".to_owned(),
            Self::Int16 => "INT32 (INT(16))".to_owned(),
            Self::Int32 => "INT32".to_owned(),
            Self::Int64 => "INT64".to_owned(),
            Self::Float32 => "FLOAT".to_owned(),
            Self::Float64 => "DOUBLE".to_owned(),
            Self::Decimal { precision, scale } => format!("DECIMAL({precision}, {scale})"),
            Self::Text | Self::Uuid => "STRING".to_owned(),
            Self::Json | Self::Jsonb => "JSON".to_owned(),
            Self::Bytes => "BINARY".to_owned(),
            Self::Date => "DATE".to_owned(),
            Self::Timestamp => "TIMESTAMP(MICROS, local)".to_owned(),
            Self::TimestampTz => "TIMESTAMP(MICROS, UTC)".to_owned(),
            Self::Time => "TIME(MICROS)".to_owned(),
            Self::List(element) => format!("LIST<{}>", element.parquet_type()),
        }
    }
}

/// Whether BigQuery's `NUMERIC` (up to 29 digits before the point and 9
/// after) holds every value of `numeric(precision, scale)`.
fn bigquery_numeric(precision: u8, scale: u8) -> bool {
    scale <= 9 && precision.saturating_sub(scale) <= 29
}

/// One exported column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportColumn {
    /// Its name (the source's).
    pub name: String,
    /// The source's type, as `format_type` prints it.
    pub source_type: String,
    /// What it is written as.
    pub kind: Kind,
    /// The `SELECT` expression that reads it (the column, or its text).
    pub select: String,
}

impl ExportColumn {
    /// `name  source type -> Parquet type / BigQuery type`, for plans.
    pub fn describe(&self) -> String {
        format!(
            "{} {} -> Parquet {}, BigQuery {}{}",
            quote_ident(&self.name),
            self.source_type,
            self.kind.parquet_type(),
            self.kind.bigquery_type(),
            if self.select.ends_with("::text") || self.select.ends_with("::text[]") {
                " (as text)"
            } else {
                ""
            }
        )
    }
}

/// A type as the catalog describes it, domains resolved to their base.
struct TypeInfo {
    /// The base type's OID.
    oid: u32,
    /// The base type's modifier (a domain's own, when it has one).
    typmod: i32,
    /// `typtype = 'e'`.
    is_enum: bool,
    /// The element type, for arrays.
    element: Option<u32>,
}

/// Reads the columns `relation` returns (a table or `(query) AS name`,
/// prepared, not run) and how each is exported. A `numeric` whose
/// precision neither BigQuery decimal holds is refused, naming it.
pub async fn read(client: &Client, relation: &str, label: &str) -> Result<Vec<ExportColumn>> {
    let statement = client
        .prepare(&format!("SELECT * FROM {relation}"))
        .await
        .map_err(|e| Error::server(&format!("reading the columns of {label}"), e))?;
    let mut columns = Vec::new();
    for c in statement.columns() {
        if columns.iter().any(|o: &ExportColumn| o.name == c.name()) {
            return Err(Error::config(format!(
                "{label} has two columns named \"{}\" (give each its own name with AS)",
                c.name()
            )));
        }
        let source_type: String = client
            .query_one(
                "SELECT pg_catalog.format_type($1, $2)",
                &[&c.type_().oid(), &c.type_modifier()],
            )
            .await
            .map_err(|e| Error::server("reading a column's type", e))?
            .get(0);
        let info = type_info(client, c.type_().oid(), c.type_modifier()).await?;
        let column = quote_ident(c.name());
        let (kind, select) = match scalar(&info) {
            Some(kind) => (kind, column),
            None => match info.element {
                Some(element) => {
                    let element = type_info(client, element, info.typmod).await?;
                    match scalar(&element) {
                        Some(kind) => (Kind::List(Box::new(kind)), column),
                        None => (
                            Kind::List(Box::new(Kind::Text)),
                            format!("{column}::text[]"),
                        ),
                    }
                }
                None => (Kind::Text, format!("{column}::text")),
            },
        };
        check_decimal(&kind).map_err(|why| {
            Error::config(format!(
                "column \"{}\" of {label} is {source_type}: {why}",
                c.name()
            ))
        })?;
        columns.push(ExportColumn {
            name: c.name().to_owned(),
            source_type,
            kind,
            select,
        });
    }
    Ok(columns)
}

/// Refuses a decimal neither BigQuery type holds.
fn check_decimal(kind: &Kind) -> std::result::Result<(), String> {
    match kind {
        Kind::Decimal { precision, scale } if *precision > MAX_PRECISION || *scale > 38 => {
            Err(format!(
                "numeric({precision},{scale}) fits neither BigQuery's NUMERIC (38 digits, 9 after the point) nor BIGNUMERIC (76 digits, 38 after the point); cast it in a --query"
            ))
        }
        Kind::List(element) => check_decimal(element),
        _ => Ok(()),
    }
}

/// The base type of `oid` (domains resolved) and its modifier.
async fn type_info(client: &Client, oid: u32, typmod: i32) -> Result<TypeInfo> {
    let (mut oid, mut typmod) = (oid, typmod);
    // Domains over domains: a handful of steps at most.
    for _ in 0..32 {
        let row = client
            .query_one(
                "SELECT t.typtype::text, t.typbasetype, t.typtypmod, \
                 CASE WHEN t.typcategory = 'A' THEN t.typelem END \
                 FROM pg_catalog.pg_type t WHERE t.oid = $1",
                &[&oid],
            )
            .await
            .map_err(|e| Error::server("reading a column's type", e))?;
        let typtype: String = row.get(0);
        if typtype == "d" {
            let base_mod: i32 = row.get(2);
            oid = row.get(1);
            if base_mod >= 0 {
                typmod = base_mod;
            }
            continue;
        }
        return Ok(TypeInfo {
            oid,
            typmod,
            is_enum: typtype == "e",
            element: row.get(3),
        });
    }
    Err(Error::config(format!(
        "type {oid} is a chain of more than 32 domains"
    )))
}

/// The kind of a scalar type read as it is (binary), or `None` for
/// arrays and the types exported as text.
fn scalar(info: &TypeInfo) -> Option<Kind> {
    Some(match info.oid {
        16 => Kind::Bool,
        21 => Kind::Int16,
        23 => Kind::Int32,
        20 => Kind::Int64,
        700 => Kind::Float32,
        701 => Kind::Float64,
        1700 => numeric_kind(info.typmod),
        25 | 1043 | 1042 | 19 => Kind::Text,
        2950 => Kind::Uuid,
        114 => Kind::Json,
        3802 => Kind::Jsonb,
        17 => Kind::Bytes,
        1082 => Kind::Date,
        1114 => Kind::Timestamp,
        1184 => Kind::TimestampTz,
        1083 => Kind::Time,
        _ if info.is_enum => Kind::Text,
        _ => return None,
    })
}

/// `numeric(p,s)` by its modifier: the same precision and scale (a scale
/// above the precision widens the precision); without one, BigQuery's
/// `BIGNUMERIC` (76 digits, 38 after the point).
fn numeric_kind(typmod: i32) -> Kind {
    if typmod < 4 {
        return Kind::Decimal {
            precision: MAX_PRECISION,
            scale: 38,
        };
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    // PostgreSQL 15 keeps an 11-bit signed scale.
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    if scale < 0 {
        // Rounded to tens or more: whole numbers of up to p - s digits.
        let digits = precision - scale;
        return Kind::Decimal {
            precision: u8::try_from(digits).unwrap_or(u8::MAX),
            scale: 0,
        };
    }
    Kind::Decimal {
        precision: u8::try_from(precision.max(scale)).unwrap_or(u8::MAX),
        scale: u8::try_from(scale).unwrap_or(u8::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typmod(p: i32, s: i32) -> i32 {
        ((p << 16) | (s & 0x7ff)) + 4
    }

    #[test]
    fn numerics_map_by_precision() {
        assert_eq!(
            numeric_kind(typmod(12, 2)),
            Kind::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(
            numeric_kind(typmod(12, 2)).bigquery_type(),
            "NUMERIC(12, 2)"
        );
        assert_eq!(
            numeric_kind(typmod(38, 9)).bigquery_type(),
            "NUMERIC(38, 9)"
        );
        assert_eq!(
            numeric_kind(typmod(38, 10)).bigquery_type(),
            "BIGNUMERIC(38, 10)"
        );
        assert_eq!(numeric_kind(-1).bigquery_type(), "BIGNUMERIC(76, 38)");
        assert_eq!(
            numeric_kind(typmod(2, 5)),
            Kind::Decimal {
                precision: 5,
                scale: 5
            }
        );
        assert_eq!(
            numeric_kind(typmod(4, -2)),
            Kind::Decimal {
                precision: 6,
                scale: 0
            }
        );
        assert!(check_decimal(&numeric_kind(typmod(80, 2))).is_err());
        assert!(check_decimal(&numeric_kind(typmod(60, 40))).is_err());
        assert!(check_decimal(&numeric_kind(typmod(76, 38))).is_ok());
        assert_eq!(
            numeric_kind(typmod(50, 10)).arrow_type(),
            DataType::Decimal256(50, 10)
        );
    }
}
