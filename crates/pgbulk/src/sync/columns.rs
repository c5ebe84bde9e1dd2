//! Matching a source's columns to a destination's, by name, and the
//! destination a sync creates.

use std::collections::BTreeMap;

use crate::catalog::{ColumnFacts, TableFacts};
use crate::schema::{TableName, quote_ident, quote_literal};

/// One destination column and the source expression that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// The destination column.
    pub to: String,
    /// The source `SELECT` expression (the column, or its cast).
    pub expr: String,
}

/// What the source's columns are beyond their type names.
#[derive(Debug, Clone, Default)]
pub struct SourceTypes {
    /// Columns of enum types.
    pub enums: Vec<String>,
    /// Columns of domain types, and the domain's base type.
    pub domains: Vec<(String, String)>,
}

/// Matches the source's columns to the destination's by name, casting
/// safe differences (`source_zone`: the source's `TimeZone`, for
/// `timestamp` into `timestamptz`). Every mismatch is listed in the error;
/// nothing is written before this passes.
pub fn map_columns(
    source: &TableFacts,
    types: &SourceTypes,
    dest: &TableFacts,
    ignore_extra: bool,
    source_zone: &str,
) -> std::result::Result<Vec<ColumnMap>, Vec<String>> {
    let mut maps = Vec::new();
    let mut mismatches = Vec::new();
    // A generated column's values are the source's data like any other's:
    // read into a plain destination column, computed by a generated one.
    for s in &source.columns {
        let Some(d) = dest.column(&s.name) else {
            if !ignore_extra {
                mismatches.push(format!(
                    "column \"{}\" ({}{}) is not in the destination (--ignore-extra leaves it out)",
                    s.name,
                    s.type_name,
                    if s.generated.is_some() {
                        ", generated"
                    } else {
                        ""
                    }
                ));
            }
            continue;
        };
        if d.generated.is_some() {
            continue;
        }
        let col = quote_ident(&s.name);
        match cast(s, types, d, source_zone) {
            Ok(None) => maps.push(ColumnMap {
                to: d.name.clone(),
                expr: col,
            }),
            Ok(Some(expr)) => maps.push(ColumnMap {
                to: d.name.clone(),
                expr,
            }),
            Err(why) => mismatches.push(format!(
                "column \"{}\": source {}, destination {}: {why}",
                s.name, s.type_name, d.type_name
            )),
        }
    }
    for d in &dest.columns {
        let filled = maps.iter().any(|m| m.to == d.name);
        let required =
            d.not_null && d.default.is_none() && d.identity.is_none() && d.generated.is_none();
        if !filled && required && source.column(&d.name).is_none() {
            mismatches.push(format!(
                "column \"{}\" ({}) of the destination is NOT NULL without a default, and the source has no such column",
                d.name, d.type_name
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(maps)
    } else {
        Err(mismatches)
    }
}

/// How source column `s` fills destination column `d`: as it is
/// (`None`), through a cast (the expression), or not at all (why).
fn cast(
    s: &ColumnFacts,
    types: &SourceTypes,
    d: &ColumnFacts,
    source_zone: &str,
) -> std::result::Result<Option<String>, String> {
    let (from, to) = (s.type_name.as_str(), d.type_name.as_str());
    if from == to {
        return Ok(None);
    }
    let col = quote_ident(&s.name);
    // A domain is read as its base type (always a valid value of it).
    let base = types
        .domains
        .iter()
        .find(|(c, _)| *c == s.name)
        .map(|(_, b)| b.as_str());
    let from = base.unwrap_or(from);
    if from == to {
        return Ok(Some(format!("{col}::{to}")));
    }
    if from == "timestamp without time zone" && to == "timestamp with time zone" {
        return Ok(Some(format!(
            "({col} AT TIME ZONE {})",
            quote_literal(source_zone)
        )));
    }
    let is_enum = types.enums.contains(&s.name);
    let safe = match (from.strip_suffix("[]"), to.strip_suffix("[]")) {
        // Arrays: element by element (not timestamps: AT TIME ZONE takes
        // no array).
        (Some(f), Some(t)) => !f.starts_with("timestamp") && safe_cast(f, t, false),
        (None, None) => safe_cast(from, to, is_enum),
        _ => false,
    };
    if safe {
        Ok(Some(format!("{col}::{to}")))
    } else {
        Err("not a safe conversion (it could fail or change values)".to_owned())
    }
}

/// Whether a value of type `from` always casts to `to` without failing or
/// changing (other than its type).
fn safe_cast(from: &str, to: &str, is_enum: bool) -> bool {
    let integers = ["smallint", "integer", "bigint"];
    let rank = |t: &str| integers.iter().position(|i| *i == t);
    // An integer type's most digits, and a numeric's (precision, scale).
    let digits = |t: &str| rank(t).map(|r| [5, 10, 19][r]);
    let numeric = |t: &str| -> Option<(u32, u32)> {
        let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
        let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
        Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
    };
    match (from, to) {
        _ if from == to => true,
        _ if rank(from).is_some() && rank(to).is_some() => rank(from) < rank(to),
        (_, "numeric") => rank(from).is_some() || numeric(from).is_some(),
        // Into numeric(p,s): as many digits before the point, at least as
        // many after (a negative scale, PostgreSQL 15's, is not parsed).
        _ if numeric(to).is_some() => {
            let (p, s) = numeric(to).unwrap_or_default();
            match (digits(from), numeric(from)) {
                (Some(d), _) => p - s >= d,
                (None, Some((fp, fs))) => s >= fs && p - s >= fp.saturating_sub(fs),
                (None, None) => false,
            }
        }
        ("json", "jsonb") | ("jsonb", "json") | ("uuid", "text") => true,
        (_, "text") if is_enum => true,
        // varchar(n) into text or a varchar as long or longer.
        _ => crate::plan::is_widening(from, to),
    }
}

/// How a created destination's column is made, where not as a plain copy
/// of the source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Made {
    /// With this clause after its type: `GENERATED ALWAYS AS (...)
    /// STORED`, `GENERATED ALWAYS AS IDENTITY (...)`, as at the source.
    Clause(String),
    /// Of this type instead: `serial`, `bigserial` or `smallserial`, for a
    /// column numbered by a sequence of its own with serial's options.
    Type(String),
}

/// The `CREATE TABLE` of a destination made from the source's columns
/// (generated ones as plain columns, filled with the source's values) with
/// their collations, `NOT NULL`, defaults that are constants and primary
/// key. A collation the destination lacks fails the `CREATE` with the
/// server's error.
pub fn create_ddl(dest: &TableName, source: &TableFacts) -> String {
    format!(
        "CREATE TABLE {} (\n{}\n);\n",
        dest.quoted(),
        table_lines(source, &BTreeMap::new()).join(",\n")
    )
}

/// The column and primary-key lines of [`create_ddl`], except that a
/// column named in `made` is made as that says.
pub(super) fn table_lines(source: &TableFacts, made: &BTreeMap<String, Made>) -> Vec<String> {
    let mut lines: Vec<String> = source
        .columns
        .iter()
        .map(|c| {
            let default = match made.get(&c.name) {
                Some(Made::Clause(clause)) => format!(" {clause}"),
                Some(Made::Type(_)) => String::new(),
                None => c
                    .raw_default
                    .as_deref()
                    .filter(|d| c.identity.is_none() && c.generated.is_none() && is_constant(d))
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default(),
            };
            let collation = c
                .collation
                .as_deref()
                .map(|name| format!(" COLLATE {}", quote_ident(name)))
                .unwrap_or_default();
            let type_name = match made.get(&c.name) {
                Some(Made::Type(name)) => name,
                _ => &c.type_name,
            };
            format!(
                "    {} {type_name}{collation}{default}{}",
                quote_ident(&c.name),
                if c.not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    if let Some((_, key)) = &source.primary_key {
        lines.push(key_line(key));
    }
    lines
}

/// The primary-key line of [`table_lines`] for the columns `key`.
pub(super) fn key_line(key: &[String]) -> String {
    let cols: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    format!("    PRIMARY KEY ({})", cols.join(", "))
}

/// Whether a default expression (as `pg_get_expr` prints it) is a
/// constant: one literal (a quoted string, a number, `true`, `false`,
/// `NULL`), possibly parenthesised, then only casts. Functions (`now()`,
/// `nextval(...)`), operators and anything else are not.
fn is_constant(expr: &str) -> bool {
    let e = expr.trim();
    let casts = if let Some(body) = e.strip_prefix('\'') {
        let bytes = body.as_bytes();
        let mut i = 0;
        loop {
            match bytes.get(i) {
                None => return false,
                Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        &body[i + 1..]
    } else {
        let end = e.find("::").unwrap_or(e.len());
        let core = &e[..end];
        let inner = core
            .strip_prefix('(')
            .and_then(|c| c.strip_suffix(')'))
            .unwrap_or(core);
        let number = inner.starts_with(|c: char| c.is_ascii_digit() || c == '-')
            && inner.chars().any(|c| c.is_ascii_digit())
            && inner
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        if !(number || matches!(inner, "true" | "false" | "NULL")) {
            return false;
        }
        &e[end..]
    };
    casts.is_empty()
        || casts.strip_prefix("::").is_some_and(|types| {
            types.split("::").all(|t| {
                !t.trim().is_empty()
                    && t.chars().all(|c| {
                        c.is_alphanumeric()
                            || matches!(c, '_' | ' ' | '.' | '"' | '[' | ']' | '(' | ')' | ',')
                    })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, not_null: bool) -> ColumnFacts {
        ColumnFacts {
            not_null,
            ..ColumnFacts::plain(name, ty, 0, -1)
        }
    }

    fn table(columns: Vec<ColumnFacts>) -> TableFacts {
        TableFacts {
            oid: 1,
            columns,
            primary_key: None,
            constraints: Vec::new(),
            indexes: Vec::new(),
            comment: None,
            column_comments: Default::default(),
        }
    }

    #[test]
    fn columns_match_by_name_and_cast_only_safely() {
        let source = table(vec![
            col("id", "integer", true),
            col("name", "character varying(20)", false),
            col("at", "timestamp without time zone", false),
            col("doc", "json", false),
            col("mood", "mood", false),
            col("amount", "numeric(10,2)", false),
            col("total", "numeric(10,2)", false),
            col("n", "integer", false),
        ]);
        // The destination orders its columns differently.
        let dest = table(vec![
            col("doc", "jsonb", false),
            col("at", "timestamp with time zone", false),
            col("name", "text", false),
            col("id", "bigint", true),
            col("mood", "text", false),
            col("amount", "numeric(12,3)", false),
            col("total", "numeric", false),
            col("n", "numeric(12,2)", false),
        ]);
        let types = SourceTypes {
            enums: vec!["mood".to_owned()],
            domains: Vec::new(),
        };
        let maps = map_columns(&source, &types, &dest, false, "Europe/Berlin").expect("safe");
        let exprs: Vec<(&str, &str)> = maps
            .iter()
            .map(|m| (m.to.as_str(), m.expr.as_str()))
            .collect();
        assert_eq!(
            exprs,
            vec![
                ("id", "\"id\"::bigint"),
                ("name", "\"name\"::text"),
                ("at", "(\"at\" AT TIME ZONE 'Europe/Berlin')"),
                ("doc", "\"doc\"::jsonb"),
                ("mood", "\"mood\"::text"),
                ("amount", "\"amount\"::numeric(12,3)"),
                ("total", "\"total\"::numeric"),
                ("n", "\"n\"::numeric(12,2)"),
            ]
        );
        // Fewer digits before or after the point could fail or round.
        for (from, to) in [
            ("numeric(10,2)", "numeric(10,3)"),
            ("numeric(10,2)", "numeric(10,1)"),
            ("numeric", "numeric(30,10)"),
            ("integer", "numeric(11,2)"),
            ("bigint", "numeric(20,2)"),
            ("numeric(5,2)", "integer"),
        ] {
            assert!(!safe_cast(from, to, false), "{from} -> {to}");
        }
        assert!(safe_cast("bigint", "numeric(21,2)", false));
        assert!(safe_cast("smallint", "numeric(5,0)", false));
        assert!(safe_cast("numeric(10,2)", "numeric(10,2)", false));
    }

    #[test]
    fn arrays_cast_element_by_element_and_domains_as_their_base() {
        let source = table(vec![
            col("ids", "integer[]", false),
            col("tags", "character varying(5)[]", false),
            col("ats", "timestamp without time zone[]", false),
            col("n", "posint", false),
            col("m", "posint", false),
        ]);
        let dest = table(vec![
            col("ids", "bigint[]", false),
            col("tags", "text[]", false),
            col("ats", "timestamp with time zone[]", false),
            col("n", "bigint", false),
            col("m", "smallint", false),
        ]);
        let types = SourceTypes {
            enums: Vec::new(),
            domains: vec![
                ("n".to_owned(), "integer".to_owned()),
                ("m".to_owned(), "integer".to_owned()),
            ],
        };
        let why = map_columns(&source, &types, &dest, false, "UTC").expect_err("two refused");
        assert_eq!(why.len(), 2, "{why:#?}");
        assert!(why[0].starts_with("column \"ats\""), "{why:#?}");
        assert!(why[1].starts_with("column \"m\""), "{why:#?}");
        let dest = table(vec![
            col("ids", "bigint[]", false),
            col("tags", "text[]", false),
            col("n", "bigint", false),
            col("m", "integer", false),
        ]);
        let maps = map_columns(&source, &types, &dest, true, "UTC").expect("safe");
        let exprs: Vec<&str> = maps.iter().map(|m| m.expr.as_str()).collect();
        assert_eq!(
            exprs,
            vec![
                "\"ids\"::bigint[]",
                "\"tags\"::text[]",
                "\"n\"::bigint",
                "\"m\"::integer"
            ]
        );
    }

    #[test]
    fn every_mismatch_is_listed() {
        let source = table(vec![
            col("id", "bigint", true),
            col("name", "text", false),
            col("extra", "integer", false),
            col("code", "character varying(30)", false),
        ]);
        let dest = table(vec![
            col("id", "integer", true),
            col("name", "integer", false),
            col("code", "character varying(10)", false),
            col("required", "text", true),
        ]);
        let why = map_columns(&source, &SourceTypes::default(), &dest, false, "UTC")
            .expect_err("refused");
        assert_eq!(why.len(), 5, "{why:#?}");
        assert!(why[0].starts_with("column \"id\": source bigint, destination integer"));
        assert!(
            why.iter()
                .any(|w| w.contains("\"extra\" (integer) is not in the destination"))
        );
        assert!(
            why.iter()
                .any(|w| w.contains("\"required\" (text) of the destination is NOT NULL"))
        );
        // --ignore-extra leaves the extra column out, the rest still refuse.
        let why =
            map_columns(&source, &SourceTypes::default(), &dest, true, "UTC").expect_err("refused");
        assert_eq!(why.len(), 4);
    }

    #[test]
    fn only_constant_defaults_are_constants() {
        for constant in [
            "0",
            "(-1)",
            "1.5e10",
            "(0)::numeric",
            "'x'::text",
            "'it''s'::character varying",
            "'{}'::jsonb",
            "'sad'::mood",
            "true",
            "NULL::integer",
            "'2024-01-01 00:00:00'::timestamp without time zone",
            "'{1,2}'::integer[]",
        ] {
            assert!(is_constant(constant), "{constant}");
        }
        for not in [
            "now()",
            "nextval('t_id_seq'::regclass)",
            "gen_random_uuid()",
            "'a'::text || 'b'::text",
            "(1 + 2)",
            "CURRENT_TIMESTAMP",
            "'x",
            "'x'::text::",
            "inf",
            "e",
        ] {
            assert!(!is_constant(not), "{not}");
        }
    }

    #[test]
    fn a_created_destination_copies_columns_not_null_and_key() {
        let mut name = col("Name", "text", false);
        name.collation = Some("C".to_owned());
        let mut source = table(vec![col("id", "integer", true), name]);
        source.primary_key = Some(("t_pkey".to_owned(), vec!["id".to_owned()]));
        let mut generated = col("twice", "integer", false);
        generated.generated = Some("s".to_owned());
        source.columns.push(generated);
        assert_eq!(
            create_ddl(&TableName::new("public", "t"), &source),
            "CREATE TABLE \"public\".\"t\" (\n    \"id\" integer NOT NULL,\n    \"Name\" text COLLATE \"C\",\n    \"twice\" integer,\n    PRIMARY KEY (\"id\")\n);\n"
        );
        let generation = BTreeMap::from([(
            "twice".to_owned(),
            Made::Clause("GENERATED ALWAYS AS ((id * 2)) STORED".to_owned()),
        )]);
        assert_eq!(
            table_lines(&source, &generation)[2],
            "    \"twice\" integer GENERATED ALWAYS AS ((id * 2)) STORED"
        );
        let serial = BTreeMap::from([("id".to_owned(), Made::Type("serial".to_owned()))]);
        assert_eq!(
            table_lines(&source, &serial)[0],
            "    \"id\" serial NOT NULL"
        );
    }
}
