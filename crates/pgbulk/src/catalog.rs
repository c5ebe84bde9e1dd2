//! Reads live tables from the system catalogs into facts: columns with
//! their types, nullability and defaults, and the primary key.

use tokio_postgres::Client;
use tokio_postgres::types::Oid;

use crate::codec::{ColumnType, TypeKind};
use crate::error::{Error, Result};

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its type, resolved for encoding.
    pub ty: ColumnType,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The default expression (`pg_get_expr`), if any.
    pub default: Option<String>,
    /// Whether the column is generated (and so cannot be written).
    pub generated: bool,
}

/// A table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table's oid.
    pub oid: Oid,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Live columns in order.
    pub columns: Vec<Column>,
    /// Primary-key columns in key order (empty without a key).
    pub primary_key: Vec<String>,
    /// The table comment.
    pub comment: Option<String>,
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Reads table `schema.name`, or `None` when it does not exist.
pub async fn table(client: &Client, schema: &str, name: &str) -> Result<Option<Table>> {
    let row = client
        .query_opt(
            "SELECT c.oid, pg_catalog.obj_description(c.oid, 'pg_class') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(|e| Error::server("reading the catalog", e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let oid: Oid = row.get(0);
    let comment: Option<String> = row.get(1);
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, \
                    pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '' \
             FROM pg_catalog.pg_attribute a \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading columns", e))?;
    let mut columns = Vec::with_capacity(rows.len());
    for r in rows {
        columns.push(Column {
            name: r.get(0),
            ty: column_type(client, r.get(1), r.get(2)).await?,
            not_null: r.get(3),
            default: r.get(4),
            generated: r.get(5),
        });
    }
    let primary_key = client
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading the primary key", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(Table {
        oid,
        schema: schema.to_owned(),
        name: name.to_owned(),
        columns,
        primary_key,
        comment,
    }))
}

/// Resolves a type for encoding: domains to their base type, enums to
/// text, arrays to their element type. `typmod` only affects the name.
pub async fn column_type(client: &Client, oid: Oid, typmod: i32) -> Result<ColumnType> {
    let row = client
        .query_one(
            "SELECT pg_catalog.format_type($1, $2), \
             pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname) \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.oid = $1",
            &[&oid, &typmod],
        )
        .await
        .map_err(|e| Error::server("reading a type", e))?;
    let name: String = row.get(0);
    let cast_name: String = row.get(1);
    let mut current = oid;
    for _ in 0..32 {
        let row = client
            .query_one(
                "SELECT t.typtype::text, t.typbasetype, t.typelem, t.typcategory::text, t.typlen \
                 FROM pg_catalog.pg_type t WHERE t.oid = $1",
                &[&current],
            )
            .await
            .map_err(|e| Error::server("reading a type", e))?;
        let typtype: String = row.get(0);
        let base: Oid = row.get(1);
        let elem: Oid = row.get(2);
        let category: String = row.get(3);
        let typlen: i16 = row.get(4);
        if typtype == "d" {
            current = base;
            continue;
        }
        let kind = if typtype == "e" {
            TypeKind::Text
        } else if category == "A" && elem != 0 && typlen == -1 {
            let elem_type = Box::pin(column_type(client, elem, -1)).await?;
            TypeKind::Array(Box::new(elem_type))
        } else {
            ColumnType::kind_of_builtin(current)
        };
        // varchar(n) and char(n) keep n + 4 in their typmod.
        let max_chars = (matches!(current, 1043 | 1042) && typmod >= 4)
            .then(|| u32::try_from(typmod - 4).ok())
            .flatten();
        // numeric(p, s) keeps ((p << 16) | s) + 4, s as 11 signed bits.
        let precision_scale = (current == 1700 && typmod >= 4).then(|| {
            let t = typmod - 4;
            let scale = t & 0x7ff;
            let scale = if scale & 0x400 != 0 {
                scale - 0x800
            } else {
                scale
            };
            (u32::try_from((t >> 16) & 0xffff).unwrap_or(0), scale)
        });
        return Ok(ColumnType {
            oid: current,
            kind,
            name,
            cast_name,
            max_chars,
            precision_scale,
        });
    }
    Err(Error::new(
        crate::ErrorKind::Server,
        format!("type {name} nests domains too deeply"),
    ))
}
