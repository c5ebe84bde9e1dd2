//! A table as catalog facts: what both a live table and a declared one are
//! read into, so that equal declarations compare equal.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;
use tokio_postgres::types::Oid;

use crate::error::{Error, Result};

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnFacts {
    /// Name.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, the server's own spelling.
    pub type_name: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The default expression; sequence names are replaced by
    /// `<sequence>` so a serial column compares equal wherever it lives.
    pub default: Option<String>,
    /// The default (or generation) expression as the server prints it
    /// (not compared).
    pub raw_default: Option<String>,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for identity columns.
    pub identity: Option<String>,
    /// `s` for stored generated columns.
    pub generated: Option<String>,
    /// A collation other than the type's default.
    pub collation: Option<String>,
    /// `atttypid` (not compared: `type_name` is).
    pub type_oid: Oid,
    /// `atttypmod` (not compared).
    pub typmod: i32,
}

impl ColumnFacts {
    /// A nullable column of `type_name` without default, identity,
    /// generation or collation.
    pub fn plain(name: &str, type_name: &str, type_oid: Oid, typmod: i32) -> Self {
        Self {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            not_null: false,
            default: None,
            raw_default: None,
            identity: None,
            generated: None,
            collation: None,
            type_oid,
            typmod,
        }
    }
}

/// A unique, check or exclusion constraint, by definition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConstraintFacts {
    /// `u`, `c` or `x`.
    pub kind: String,
    /// `pg_get_constraintdef`.
    pub def: String,
    /// The constraint's name (not compared).
    pub name: String,
}

/// An index that backs no constraint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexFacts {
    /// Whether it is unique.
    pub unique: bool,
    /// The definition from `USING` on: method, keys, `INCLUDE`, `WHERE`.
    pub def: String,
    /// The index's name (not compared).
    pub name: String,
    /// The index's comment.
    pub comment: Option<String>,
    /// Whether it is valid: a `CREATE INDEX CONCURRENTLY` that failed or
    /// was killed leaves an invalid index, which matches nothing declared.
    pub valid: bool,
}

/// Everything pgbulk compares about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// The table's oid (not compared).
    pub oid: Oid,
    /// Live columns in order.
    pub columns: Vec<ColumnFacts>,
    /// Primary-key columns in key order, with the constraint's name.
    pub primary_key: Option<(String, Vec<String>)>,
    /// Unique, check and exclusion constraints, sorted.
    pub constraints: Vec<ConstraintFacts>,
    /// Indexes backing no constraint, sorted.
    pub indexes: Vec<IndexFacts>,
    /// The table's comment.
    pub comment: Option<String>,
    /// Column comments by column name.
    pub column_comments: BTreeMap<String, String>,
}

impl TableFacts {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnFacts> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Primary-key column names (empty without a key).
    pub fn key(&self) -> &[String] {
        self.primary_key
            .as_ref()
            .map_or(&[], |(_, cols)| cols.as_slice())
    }
}

fn normalize_default(default: String) -> String {
    match default.find("nextval(") {
        Some(_) => "nextval(<sequence>)".to_owned(),
        None => default,
    }
}

pub(crate) fn index_body(def: &str) -> String {
    let after_on = def.find(" ON ").map_or(0, |i| i + 4);
    match def[after_on..].find(" USING ") {
        Some(i) => def[after_on + i + 1..].to_owned(),
        None => def.to_owned(),
    }
}

/// Reads the facts of the table with `oid`.
pub async fn read(client: &impl GenericClient, oid: Oid) -> Result<TableFacts> {
    let err = |what: &'static str| move |e| Error::server(what, e);
    let columns = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_catalog.pg_get_expr(d.adbin, d.adrelid), nullif(a.attidentity::text, ''), \
                    nullif(a.attgenerated::text, ''), \
                    CASE WHEN a.attcollation <> t.typcollation THEN co.collname::text END, \
                    pg_catalog.col_description(a.attrelid, a.attnum), a.atttypid, a.atttypmod \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(err("reading columns"))?;
    let mut column_comments = BTreeMap::new();
    let columns = columns
        .into_iter()
        .map(|r| {
            let name: String = r.get(0);
            if let Some(comment) = r.get::<_, Option<String>>(7) {
                column_comments.insert(name.clone(), comment);
            }
            ColumnFacts {
                name,
                type_name: r.get(1),
                not_null: r.get(2),
                default: r.get::<_, Option<String>>(3).map(normalize_default),
                raw_default: r.get(3),
                identity: r.get(4),
                generated: r.get(5),
                collation: r.get(6),
                type_oid: r.get(8),
                typmod: r.get(9),
            }
        })
        .collect();
    let primary_key = client
        .query_opt(
            "SELECT con.conname::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o) \
             FROM pg_catalog.pg_constraint con WHERE con.conrelid = $1 AND con.contype = 'p'",
            &[&oid],
        )
        .await
        .map_err(err("reading the primary key"))?
        .map(|r| (r.get(0), r.get(1)));
    let mut constraints: Vec<ConstraintFacts> = client
        .query(
            "SELECT con.contype::text, pg_catalog.pg_get_constraintdef(con.oid), con.conname::text \
             FROM pg_catalog.pg_constraint con \
             WHERE con.conrelid = $1 AND con.contype IN ('u', 'c', 'x') \
               AND con.conname::text NOT LIKE 'pgbulk\\_%'",
            &[&oid],
        )
        .await
        .map_err(err("reading constraints"))?
        .into_iter()
        .map(|r| ConstraintFacts {
            kind: r.get(0),
            def: r.get(1),
            name: r.get(2),
        })
        .collect();
    constraints.sort();
    let mut indexes: Vec<IndexFacts> = client
        .query(
            "SELECT i.indisunique, pg_catalog.pg_get_indexdef(i.indexrelid), ic.relname::text, \
                    pg_catalog.obj_description(i.indexrelid, 'pg_class'), i.indisvalid \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = $1 AND NOT EXISTS ( \
                 SELECT 1 FROM pg_catalog.pg_constraint con \
                 WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))",
            &[&oid],
        )
        .await
        .map_err(err("reading indexes"))?
        .into_iter()
        .map(|r| IndexFacts {
            unique: r.get(0),
            def: index_body(&r.get::<_, String>(1)),
            name: r.get(2),
            comment: r.get(3),
            valid: r.get(4),
        })
        .collect();
    indexes.sort();
    let comment = client
        .query_one("SELECT pg_catalog.obj_description($1, 'pg_class')", &[&oid])
        .await
        .map_err(err("reading the table comment"))?
        .get(0);
    Ok(TableFacts {
        oid,
        columns,
        primary_key,
        constraints,
        indexes,
        comment,
        column_comments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_body_drops_name_and_table() {
        assert_eq!(
            index_body(
                "CREATE UNIQUE INDEX \"x ON y\" ON pg_temp_3.t USING btree (a) INCLUDE (b) WHERE (a > 0)"
            ),
            "USING btree (a) INCLUDE (b) WHERE (a > 0)"
        );
        assert_eq!(
            normalize_default("nextval('s.t_id_seq'::regclass)".into()),
            "nextval(<sequence>)"
        );
    }
}
