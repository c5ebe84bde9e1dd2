//! Column types inferred from a sample of text fields, narrowest first:
//! `integer`, `bigint`, `numeric`, `double precision`, `boolean`, `date`,
//! `timestamp`, `timestamptz`, `uuid`, `jsonb`, else `text`. A value is
//! tested with the same conversions the load uses, so what is inferred
//! loads. Numbers with leading zeros (codes, zip codes) stay text. Dates
//! in spellings every `DateStyle` reads alike (`2012/01/31`, `Jan 8 1999`,
//! `8 Jan 1999`, `January 8, 1999`) are dates too (the server converts
//! them when loading); `01/08/1999` is not (January or August?).

use crate::codec::{ColumnType, TypeKind, encode_text};
use crate::schema::{TableName, quote_ident};

/// A column and the type inferred for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferredColumn {
    /// The column's name (normalised: lower case, `_` for other characters).
    pub name: String,
    /// The SQL type.
    pub sql_type: String,
    /// Whether a NULL was seen.
    pub nullable: bool,
}

/// Candidate types, narrowest first.
const CANDIDATES: &[(&str, u32)] = &[
    ("integer", 23),
    ("bigint", 20),
    ("numeric", 1700),
    ("double precision", 701),
    ("boolean", 16),
    ("date", 1082),
    ("timestamp", 1114),
    ("timestamptz", 1184),
    ("uuid", 2950),
    ("jsonb", 3802),
];

/// The longest identifier PostgreSQL keeps, in bytes (`NAMEDATALEN - 1`).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// `name` as PostgreSQL stores it: cut to 63 bytes on a character
/// boundary.
pub fn truncate_identifier(name: &str) -> &str {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name;
    }
    let mut end = MAX_IDENTIFIER_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A column name as pgbulk creates it: lower case, characters other than
/// letters, digits and `_` replaced by `_`, never empty, at most 63 bytes
/// (as the server would cut it).
pub fn normalize_name(name: &str) -> String {
    let mut out: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("column");
    }
    let cut = truncate_identifier(&out).len();
    out.truncate(cut);
    out
}

/// The table a file loads into when none is named: the file's name
/// without its directory and extensions (`.gz`, `.zst`, `.zstd` and
/// `.bz2`, then one of `.csv`, `.tsv`, `.psv`, `.txt`, `.dat`; or
/// `.parquet` and a codec's before it, `.snappy.parquet`), as
/// [`normalize_name`] writes it: `landing/Sales 2024.csv.gz` loads into
/// `sales_2024`. `None` when that leaves nothing.
pub fn table_for_file(path: &std::path::Path) -> Option<String> {
    let mut name = path.file_name()?.to_str()?;
    if let Some(stem) = strip_suffix_ignoring_case(name, ".parquet") {
        name = stem;
        for codec in [".snappy", ".gz", ".zstd", ".zst", ".lz4"] {
            if let Some(stem) = strip_suffix_ignoring_case(name, codec) {
                name = stem;
                break;
            }
        }
        return (!name.trim().is_empty()).then(|| normalize_name(name));
    }
    for ext in [".gz", ".zst", ".zstd", ".bz2"] {
        if let Some(stem) = strip_suffix_ignoring_case(name, ext) {
            name = stem;
            break;
        }
    }
    for ext in [".csv", ".tsv", ".psv", ".txt", ".dat"] {
        if let Some(stem) = strip_suffix_ignoring_case(name, ext) {
            name = stem;
            break;
        }
    }
    (!name.trim().is_empty()).then(|| normalize_name(name))
}

fn strip_suffix_ignoring_case<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = name.len().checked_sub(suffix.len())?;
    (name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(suffix)).then(|| &name[..cut])
}

/// The name pgbulk gives the column of the header field `name` at
/// `position` (0-based): [`normalize_name`], or `column<N>` (its 1-based
/// position) when the field is blank, so that several unnamed fields (a
/// trailing delimiter, an index column without a name) get distinct names.
pub fn column_name(name: &str, position: usize) -> String {
    if name.trim().is_empty() {
        format!("column{}", position + 1)
    } else {
        normalize_name(name)
    }
}

/// Tracks which types every value of a column fits.
#[derive(Debug, Clone)]
pub struct Inference {
    names: Vec<String>,
    alive: Vec<Vec<bool>>,
    nullable: Vec<bool>,
    seen: Vec<bool>,
    scratch: Vec<u8>,
}

impl Inference {
    /// Starts inferring columns called `names`.
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names
                .iter()
                .enumerate()
                .map(|(i, n)| column_name(n, i))
                .collect(),
            alive: names.iter().map(|_| vec![true; CANDIDATES.len()]).collect(),
            nullable: vec![false; names.len()],
            seen: vec![false; names.len()],
            scratch: Vec::new(),
        }
    }

    /// Feeds one row (missing trailing fields count as NULL, and so do
    /// empty ones: a load stores an empty field of a column whose type has
    /// no empty value as NULL, see [`empty_is_null`]).
    pub fn add_row(&mut self, fields: &[Option<&str>]) {
        for c in 0..self.names.len() {
            match fields.get(c).copied().flatten().filter(|v| !v.is_empty()) {
                None => self.nullable[c] = true,
                Some(v) => {
                    self.seen[c] = true;
                    for (t, (_, oid)) in CANDIDATES.iter().enumerate() {
                        if self.alive[c][t] && !fits(v, *oid, &mut self.scratch) {
                            self.alive[c][t] = false;
                        }
                    }
                }
            }
        }
    }

    /// The inferred columns.
    pub fn columns(&self) -> Vec<InferredColumn> {
        (0..self.names.len())
            .map(|c| InferredColumn {
                name: self.names[c].clone(),
                sql_type: if self.seen[c] {
                    CANDIDATES
                        .iter()
                        .zip(&self.alive[c])
                        .find(|(_, alive)| **alive)
                        .map_or("text", |((name, _), _)| name)
                } else {
                    "text"
                }
                .to_owned(),
                nullable: self.nullable[c] || !self.seen[c],
            })
            .collect()
    }
}

/// What to declare for an inferred column of `type_name` (as `format_type`
/// prints it) that refused `value`: the next wider inferred type the
/// sample's values and `value` all fit (an integer column's `1.5`:
/// numeric; a date column's `2024-01-01 10:00`: timestamp), else `text`.
pub fn wider_type(type_name: &str, value: &str) -> &'static str {
    let chain: &[(&'static str, u32)] = match type_name {
        "integer" => &[("bigint", 20), ("numeric", 1700), ("double precision", 701)],
        "bigint" => &[("numeric", 1700), ("double precision", 701)],
        "date" => &[("timestamp", 1114), ("timestamptz", 1184)],
        "timestamp without time zone" => &[("timestamptz", 1184)],
        _ => &[],
    };
    let mut scratch = Vec::new();
    chain
        .iter()
        .find(|(_, oid)| fits(value, *oid, &mut scratch))
        .map_or("text", |(name, _)| name)
}

/// Whether an empty field (`""`, quoted: an unquoted one is NULL anyway)
/// loads as NULL into a column of type `type_oid` (`type_name` as
/// `format_type` prints it): a type that has no empty value, whose input
/// function refuses `''` (numbers, booleans, dates and times, uuid, JSON,
/// network addresses, arrays). Writers that quote every field (Python's
/// `QUOTE_ALL`, pandas) write a missing value so; `COPY` refuses it
/// (its `FORCE_NULL` reads it so). Text and bytea keep the empty value,
/// and types unknown here (domains, extensions) leave it to the server.
pub fn empty_is_null(type_oid: u32, type_name: &str) -> bool {
    type_name.ends_with("[]")
        || !matches!(
            ColumnType::kind_of_builtin(type_oid),
            TypeKind::Text | TypeKind::Bytea | TypeKind::Other
        )
}

/// What a column of inferred `type_name` (as `format_type` prints it)
/// would drop of `value`, which PostgreSQL's input function accepts but
/// inference would not have given that type: a number's leading zero
/// (`02134`, a ZIP code), a date's time of day, a timestamp's zone.
/// `None` when it keeps all of it (or refuses it: the server says so).
pub fn dropped_by(type_name: &str, value: &str) -> Option<&'static str> {
    let v = value.trim();
    match type_name {
        "integer" | "bigint" | "numeric" | "double precision" => {
            let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
            if v.starts_with('+') {
                Some("its plus sign")
            } else {
                (digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."))
                    .then_some("its leading zero")
            }
        }
        "date" => v.contains(':').then_some("its time of day"),
        "timestamp without time zone" => {
            (v.contains(':') && has_zone(v)).then_some("its time zone")
        }
        _ => None,
    }
}

/// Whether [`dropped_by`] finds anything for some value of `type_name`.
pub fn may_drop(type_name: &str) -> bool {
    matches!(
        type_name,
        "integer"
            | "bigint"
            | "numeric"
            | "double precision"
            | "date"
            | "timestamp without time zone"
    )
}

fn fits(value: &str, oid: u32, scratch: &mut Vec<u8>) -> bool {
    let v = value.trim();
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    let numeric = matches!(oid, 23 | 20 | 1700 | 701);
    // Codes, not numbers: a number would drop their leading zero or plus
    // sign (`00123`, `+4420...`).
    if numeric
        && (v.starts_with('+')
            || (digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.")))
    {
        return false;
    }
    match oid {
        // Only words for booleans: 0/1 are numbers.
        16 => {
            let l = v.to_ascii_lowercase();
            return matches!(l.as_str(), "true" | "false" | "t" | "f" | "yes" | "no");
        }
        // Numeric only for plain decimals; exponents mean floating point.
        1700 if v.contains(['e', 'E'])
            || v.eq_ignore_ascii_case("nan")
            || v.to_ascii_lowercase().contains("inf") =>
        {
            return false;
        }
        // Timestamps need a time; dates must not have one.
        1114 | 1184 if !v.contains(':') => return false,
        1114 if has_zone(v) => return false,
        1184 if !has_zone(v) => return false,
        3802 if !(v.starts_with('{') || v.starts_with('[')) => return false,
        3802 => return serde_json::from_str::<serde_json::Value>(v).is_ok(),
        _ => {}
    }
    let ty = ColumnType {
        oid,
        kind: ColumnType::kind_of_builtin(oid),
        name: String::new(),
        cast_name: String::new(),
        max_chars: None,
        precision_scale: None,
        labels: None,
        base_name: None,
        charset: None,
    };
    debug_assert!(ty.kind != TypeKind::Other);
    scratch.clear();
    encode_text(v, &ty, scratch).is_ok()
        || (oid == 1082 && unambiguous_date(v).is_some_and(|iso| fits(&iso, 1082, scratch)))
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A date spelled so that every `DateStyle` reads it alike, as ISO
/// `YYYY-MM-DD`: `YYYY/M/D`, or a month name with a day and a 4-digit year
/// in either order.
fn unambiguous_date(v: &str) -> Option<String> {
    let iso = |y: &str, m: u32, d: &str| -> Option<String> {
        let day: u32 = d.parse().ok()?;
        (y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()) && d.len() <= 2)
            .then(|| format!("{y}-{m:02}-{day:02}"))
    };
    let parts: Vec<&str> = v.split('/').collect();
    if let [y, m, d] = parts.as_slice() {
        let month: u32 = m.parse().ok().filter(|_| m.len() <= 2)?;
        return iso(y, month, d);
    }
    let words: Vec<&str> = v.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let month_of = |w: &str| -> Option<u32> {
        let w = w.to_ascii_lowercase();
        let w = w.strip_suffix('.').unwrap_or(&w);
        MONTHS
            .iter()
            .position(|m| *m == w || (w.len() == 3 && m.starts_with(w)))
            .and_then(|i| u32::try_from(i + 1).ok())
    };
    match words.as_slice() {
        [m, d, y] if month_of(m).is_some() => iso(y, month_of(m)?, d),
        [d, m, y] if month_of(m).is_some() => iso(y, month_of(m)?, d),
        _ => None,
    }
}

/// Whether a timestamp text ends with a zone (`Z`, `+02`, `-05:30`).
fn has_zone(v: &str) -> bool {
    let time = v.rsplit([' ', 'T']).next().unwrap_or("");
    time.ends_with(['Z', 'z']) || time.contains('+') || time.rfind('-').is_some_and(|i| i > 0)
}

/// `CREATE TABLE` for inferred columns, with `key` as the primary key.
pub fn create_table_sql(table: &TableName, columns: &[InferredColumn], key: &[String]) -> String {
    let mut lines: Vec<String> = columns
        .iter()
        .map(|c| format!("    {} {}", quote_ident(&c.name), c.sql_type))
        .collect();
    if !key.is_empty() {
        lines.push(format!(
            "    PRIMARY KEY ({})",
            key.iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    format!(
        "CREATE TABLE {} (\n{}\n);\n",
        table.quoted(),
        lines.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_its_table_without_directory_and_extensions() {
        for (path, table) in [
            ("landing/Sales 2024.csv.gz", Some("sales_2024")),
            ("orders.CSV", Some("orders")),
            ("/data/events.tsv.zst", Some("events")),
            ("report", Some("report")),
            ("a.b.csv", Some("a_b")),
            ("lake/Events.parquet", Some("events")),
            ("part-0.snappy.parquet", Some("part_0")),
            ("Über.txt", Some("Über")),
            (".csv", None),
            ("dir/", Some("dir")),
        ] {
            assert_eq!(
                table_for_file(std::path::Path::new(path)).as_deref(),
                table,
                "{path}"
            );
        }
    }

    fn infer(rows: &[&[&str]]) -> Vec<String> {
        let names: Vec<String> = (0..rows[0].len()).map(|i| format!("c{i}")).collect();
        let mut inf = Inference::new(&names);
        for r in rows {
            let fields: Vec<Option<&str>> = r
                .iter()
                .map(|f| if f.is_empty() { None } else { Some(*f) })
                .collect();
            inf.add_row(&fields);
        }
        inf.columns().into_iter().map(|c| c.sql_type).collect()
    }

    /// Inference tries every value as every candidate type, and names
    /// become column names: arbitrary Unicode never panics.
    #[test]
    fn never_panics() {
        use crate::arbitrary::{Strings, case_count, each_case};
        let mut strings = Strings::new(31);
        let seeds = [
            "José Lu",
            "2024-01-01",
            "12.5",
            "t",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ];
        each_case(&strings.cases(&seeds, case_count()), |text| {
            let mut inf = Inference::new(&[text.to_owned(), "b".to_owned()]);
            inf.add_row(&[Some(text), None]);
            let columns = inf.columns();
            let _ = create_table_sql(&TableName::new("public", text), &columns, &[]);
        });
    }

    #[test]
    fn narrowest_type_that_fits_every_value() {
        assert_eq!(
            infer(&[
                &[
                    "121017",
                    "17240503103734",
                    "2019-08-17",
                    "2",
                    "1.5",
                    "true",
                    "2019-08-17 10:00",
                    "2019-08-17T10:00:00Z",
                    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                    "{\"a\":1}",
                    "x"
                ],
                &[
                    "5",
                    "1",
                    "2019-08-18",
                    "",
                    "2",
                    "no",
                    "2019-08-17 11:00:00.5",
                    "2019-08-17 10:00+02",
                    "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12",
                    "[1]",
                    "12"
                ],
            ]),
            [
                "integer",
                "bigint",
                "date",
                "integer",
                "numeric",
                "boolean",
                "timestamp",
                "timestamptz",
                "uuid",
                "jsonb",
                "text"
            ]
        );
    }

    #[test]
    fn a_refused_value_names_the_next_wider_type() {
        assert_eq!(wider_type("integer", "1.5"), "numeric");
        assert_eq!(wider_type("integer", "3000000000"), "bigint");
        assert_eq!(wider_type("integer", "1e5"), "double precision");
        assert_eq!(wider_type("integer", "n/a"), "text");
        assert_eq!(wider_type("bigint", "99999999999999999999"), "numeric");
        assert_eq!(wider_type("date", "2024-01-01 10:00"), "timestamp");
        assert_eq!(wider_type("date", "2024-01-01 10:00+02"), "timestamptz");
        assert_eq!(
            wider_type("timestamp without time zone", "2024-01-01 10:00Z"),
            "timestamptz"
        );
        assert_eq!(wider_type("boolean", "maybe"), "text");
        assert_eq!(wider_type("uuid", "x"), "text");
    }

    /// An empty field is NULL in a column of a type without an empty
    /// value, for inference as for the load.
    #[test]
    fn an_empty_field_is_null_where_a_type_has_no_empty_value() {
        let names: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
        let mut inf = Inference::new(&names);
        for row in [
            ["1", "", "2024-01-01", "x"],
            ["", "", "", ""],
            ["3", "", "", "y"],
        ] {
            inf.add_row(&row.map(Some));
        }
        let types: Vec<String> = inf.columns().into_iter().map(|c| c.sql_type).collect();
        assert_eq!(types, ["integer", "text", "date", "text"]);
        for (oid, name) in [
            (23, "integer"),
            (1082, "date"),
            (3802, "jsonb"),
            (1009, "text[]"),
        ] {
            assert!(empty_is_null(oid, name), "{name}");
        }
        for (oid, name) in [
            (25, "text"),
            (1043, "character varying(3)"),
            (17, "bytea"),
            (16_384, "citext"),
        ] {
            assert!(!empty_is_null(oid, name), "{name}");
        }
    }

    /// What the server would take and drop; each one's wider type keeps it.
    #[test]
    fn what_an_inferred_type_would_drop() {
        for (ty, value, dropped, wider) in [
            ("integer", "02134", "its leading zero", "text"),
            ("bigint", "-007", "its leading zero", "text"),
            ("bigint", "+442071234567", "its plus sign", "text"),
            ("numeric", "00.5", "its leading zero", "text"),
            ("date", "2024-02-01 10:30", "its time of day", "timestamp"),
            (
                "date",
                "2024-02-01T10:30:00Z",
                "its time of day",
                "timestamptz",
            ),
            (
                "timestamp without time zone",
                "2024-02-01 10:30+02",
                "its time zone",
                "timestamptz",
            ),
        ] {
            assert_eq!(dropped_by(ty, value), Some(dropped), "{ty} {value}");
            assert_eq!(wider_type(ty, value), wider, "{ty} {value}");
        }
        for (ty, value) in [
            ("integer", "0"),
            ("integer", "-0"),
            ("numeric", "0.5"),
            ("integer", "2134"),
            ("date", "2024-02-01"),
            ("timestamp without time zone", "2024-02-01 10:30"),
            ("timestamp without time zone", "2024-02-01T10:30:00"),
            ("text", "007"),
            ("integer", "x"),
        ] {
            assert_eq!(dropped_by(ty, value), None, "{ty} {value}");
        }
    }

    #[test]
    fn codes_with_leading_zeros_stay_text() {
        assert_eq!(
            infer(&[&["00123", "0", "0.5"], &["0042", "7", "1e3"]]),
            ["text", "integer", "double precision"]
        );
        assert_eq!(
            infer(&[&["+442071234567", "1e+3"], &["+15551234", "-2"]]),
            ["text", "double precision"]
        );
        assert_eq!(infer(&[&["", "NaN"]]), ["text", "double precision"]);
    }

    #[test]
    fn dates_every_datestyle_reads_alike() {
        assert_eq!(infer(&[&["2012/01/31"], &["1999/8/1"]]), ["date"]);
        assert_eq!(
            infer(&[&["Jan 8 1999"], &["8 Jan 1999"], &["January 8, 1999"]]),
            ["date"]
        );
        // Which is the month? Text, not a guess.
        assert_eq!(infer(&[&["01/08/1999"]]), ["text"]);
        assert_eq!(infer(&[&["2012/02/30"]]), ["text"]);
        assert_eq!(infer(&[&["Jan 8 99"]]), ["text"]);
    }

    #[test]
    fn names_and_ddl() {
        assert_eq!(normalize_name(" Point Of Sale "), "point_of_sale");
        assert_eq!(column_name(" Point Of Sale ", 0), "point_of_sale");
        assert_eq!(column_name(" ", 2), "column3");
        assert_eq!(normalize_name("Größe"), "größe");
        let long = "é".repeat(40);
        assert_eq!(
            normalize_name(&long),
            "é".repeat(31),
            "63 bytes, cut before a character"
        );
        assert_eq!(truncate_identifier(&long).len(), 62);
        let cols = vec![InferredColumn {
            name: "id".into(),
            sql_type: "integer".into(),
            nullable: false,
        }];
        assert_eq!(
            create_table_sql(&TableName::new("s", "t"), &cols, &["id".to_owned()]),
            "CREATE TABLE \"s\".\"t\" (\n    \"id\" integer,\n    PRIMARY KEY (\"id\")\n);\n"
        );
    }
}
