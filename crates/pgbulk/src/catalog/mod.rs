//! The one place pgbulk reads the system catalogs: a table's oid by name,
//! its [`TableFacts`] (columns, keys, constraints, indexes, comments: what
//! plans compare), and the encoder's view of the same facts ([`Table`],
//! each column's type resolved through domains, enums and arrays).

use tokio_postgres::GenericClient;
use tokio_postgres::types::Oid;

use crate::codec::{ColumnType, TypeKind};
use crate::error::{Error, Result};

pub mod facts;

pub use facts::{ColumnFacts, ConstraintFacts, IndexFacts, TableFacts};

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
    /// `GENERATED ALWAYS AS IDENTITY`: inserted into with `OVERRIDING
    /// SYSTEM VALUE` (as `COPY` writes it), never updated (PostgreSQL
    /// updates it only to `DEFAULT`).
    pub always_identity: bool,
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
    /// Whether it is a partitioned table (its rows are in its partitions).
    pub partitioned: bool,
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The oid of table `schema.name` (an ordinary or partitioned table), if
/// it exists: the one lookup of a table by name.
pub async fn table_oid(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<Option<Oid>> {
    Ok(table_class(client, schema, name).await?.map(|(oid, _)| oid))
}

/// [`table_oid`], and whether the table is partitioned.
async fn table_class(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<Option<(Oid, bool)>> {
    Ok(client
        .query_opt(
            "SELECT c.oid, c.relkind = 'p' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(|e| Error::server("looking up a table", e))?
        .map(|r| (r.get(0), r.get(1))))
}

/// SQL selecting the leaf partitions (column `relid`) of `relation`, an
/// SQL expression of type `regclass`: where a partitioned table's rows
/// and storage are. A table outside any partition tree is its own leaf.
pub(crate) fn leaf_partitions(relation: &str) -> String {
    format!("SELECT p.relid FROM pg_catalog.pg_partition_tree({relation}) p WHERE p.isleaf")
}

/// The `relkind` of `schema.name`, or `None` when there is no such
/// relation.
pub async fn relation_kind(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT c.relkind::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &name],
        )
        .await
        .map_err(|e| Error::server("looking up a table", e))?
        .map(|r| r.get(0)))
}

/// What a relation of `relkind` is, for messages: `a view`, ...
pub fn kind_name(relkind: &str) -> &'static str {
    match relkind {
        "v" => "a view",
        "m" => "a materialized view",
        "f" => "a foreign table",
        "S" => "a sequence",
        "i" | "I" => "an index",
        _ => "not a table",
    }
}

/// Why `schema.name` is not a table a sync or an export can read by name:
/// what it is instead (a view, a materialized view, a foreign table, ...)
/// and that a `--query` reads it (`with` the options that then need
/// giving), or that it does not exist.
pub async fn not_a_table(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
    with: &str,
) -> Result<Error> {
    let qualified = crate::schema::TableName::new(schema, name);
    let Some(kind) = relation_kind(client, schema, name).await? else {
        let near = near_names(client, schema, name).await?;
        let hint = if near.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", near.join(" or "))
        };
        return Ok(Error::config(format!(
            "the source has no table {qualified}{hint}"
        )));
    };
    Ok(Error::config(format!(
        "the source's {qualified} is {}, not a table: read it with --query 'SELECT * FROM {}' (with {with})",
        kind_name(&kind),
        qualified.quoted()
    )))
}

/// The tables and views the user may have meant by `schema.name`, which
/// does not exist: those of the same name but for case (an unquoted name
/// folds to lower case) in any schema, and of the same name in another
/// schema, each as the `--table` that names it (at most three).
async fn near_names(client: &impl GenericClient, schema: &str, name: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND lower(c.relname) = lower($2) \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_%' \
             ORDER BY n.nspname = $1 DESC, 1, 2 LIMIT 3",
            &[&schema, &name],
        )
        .await
        .map_err(|e| Error::server("looking up tables of similar names", e))?;
    let typed = |ident: &str| {
        let plain = ident
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && ident
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            ident.to_owned()
        } else {
            crate::schema::quote_ident(ident)
        }
    };
    Ok(rows
        .iter()
        .map(|r| {
            let (s, n): (String, String) = (r.get(0), r.get(1));
            let written = if s == "public" {
                typed(&n)
            } else {
                format!("{}.{}", typed(&s), typed(&n))
            };
            if written.contains('"') {
                format!("--table '{written}'")
            } else {
                format!("--table {written}")
            }
        })
        .collect())
}

/// Reads table `schema.name` for encoding, or `None` when it does not
/// exist: its [`TableFacts`] with each column's type resolved.
pub async fn table(client: &impl GenericClient, schema: &str, name: &str) -> Result<Option<Table>> {
    let Some((oid, partitioned)) = table_class(client, schema, name).await? else {
        return Ok(None);
    };
    let facts = facts::read(client, oid).await?;
    let types: Vec<(Oid, i32)> = facts
        .columns
        .iter()
        .map(|c| (c.type_oid, c.typmod))
        .collect();
    let types = column_types(client, &types).await?;
    let columns = facts
        .columns
        .iter()
        .zip(types)
        .map(|(c, ty)| Column {
            name: c.name.clone(),
            ty,
            not_null: c.not_null,
            default: c.raw_default.clone(),
            generated: c.generated.is_some(),
            always_identity: c.identity.as_deref() == Some("a"),
        })
        .collect();
    Ok(Some(Table {
        oid,
        schema: schema.to_owned(),
        name: name.to_owned(),
        columns,
        primary_key: facts.key().to_vec(),
        comment: facts.comment,
        partitioned,
    }))
}

/// Resolves `types` (oid and typmod each) as [`column_type`] does, the
/// base types that are not arrays all in one query (a table's columns
/// are then read in one round trip, not four per column).
pub async fn column_types(
    client: &impl GenericClient,
    types: &[(Oid, i32)],
) -> Result<Vec<ColumnType>> {
    let (oids, typmods): (Vec<Oid>, Vec<i32>) = types.iter().copied().unzip();
    let rows = client
        .query(
            "SELECT pg_catalog.format_type(u.oid, u.typmod), \
             pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname), \
             t.typtype::text, t.typcategory::text, t.typelem, t.typlen \
             FROM unnest($1::pg_catalog.oid[], $2::pg_catalog.int4[]) WITH ORDINALITY AS u(oid, typmod, i) \
             JOIN pg_catalog.pg_type t ON t.oid = u.oid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace ORDER BY u.i",
            &[&oids, &typmods],
        )
        .await
        .map_err(|e| Error::server("reading types", e))?;
    let mut resolved = Vec::with_capacity(types.len());
    for (i, &(oid, typmod)) in types.iter().enumerate() {
        let plain = rows.get(i).filter(|r| {
            rows.len() == types.len()
                && r.get::<_, String>(2) == "b"
                && !(r.get::<_, String>(3) == "A"
                    && r.get::<_, Oid>(4) != 0
                    && r.get::<_, i16>(5) == -1)
        });
        resolved.push(match plain {
            Some(row) => resolved_type(
                oid,
                ColumnType::kind_of_builtin(oid),
                row.get(0),
                row.get(1),
                typmod,
                None,
                None,
            ),
            None => column_type(client, oid, typmod).await?,
        });
    }
    Ok(resolved)
}

/// Resolves a type for encoding: domains to their base type, enums to
/// text, arrays to their element type. `typmod` is the column's: it names the
/// type and bounds its values (`varchar(n)`, `numeric(p, s)`, their arrays'
/// elements).
pub async fn column_type(client: &impl GenericClient, oid: Oid, typmod: i32) -> Result<ColumnType> {
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
    // Under a domain: the typmod its base type has there.
    let mut domain_typmod = None;
    for _ in 0..32 {
        let row = client
            .query_one(
                "SELECT t.typtype::text, t.typbasetype, t.typelem, t.typcategory::text, t.typlen, \
                 t.typtypmod FROM pg_catalog.pg_type t WHERE t.oid = $1",
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
            domain_typmod = Some(row.get::<_, i32>(5));
            current = base;
            continue;
        }
        let base_name = match domain_typmod {
            Some(base_typmod) => Some(
                client
                    .query_one(
                        "SELECT pg_catalog.format_type($1, $2)",
                        &[&current, &base_typmod],
                    )
                    .await
                    .map_err(|e| Error::server("reading a type", e))?
                    .get::<_, String>(0),
            ),
            None => None,
        };
        // A column of a domain over `varchar(n)` or `numeric(p, s)` has no
        // typmod of its own: the domain's applies.
        let typmod = match domain_typmod {
            Some(m) if typmod < 0 => m,
            _ => typmod,
        };
        let mut labels = None;
        let kind = if typtype == "e" {
            let read: Vec<String> = client
                .query(
                    "SELECT enumlabel::text FROM pg_catalog.pg_enum WHERE enumtypid = $1",
                    &[&current],
                )
                .await
                .map_err(|e| Error::server("reading an enum's labels", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            labels = Some(std::sync::Arc::new(read.into_iter().collect()));
            TypeKind::Text
        } else if category == "A" && elem != 0 && typlen == -1 {
            // An array's typmod is its elements' (`varchar(2)[]`).
            let elem_type = Box::pin(column_type(client, elem, typmod)).await?;
            TypeKind::Array(Box::new(elem_type))
        } else {
            ColumnType::kind_of_builtin(current)
        };
        return Ok(resolved_type(
            current, kind, name, cast_name, typmod, labels, base_name,
        ));
    }
    Err(Error::new(
        crate::ErrorKind::Server,
        format!("type {name} nests domains too deeply"),
    ))
}

/// A resolved type: `oid` the type's (a domain's base type), `typmod`
/// the column's (or its domain's), which gives `varchar(n)`'s length and
/// `numeric(p, s)`'s precision and scale.
fn resolved_type(
    oid: Oid,
    kind: TypeKind,
    name: String,
    cast_name: String,
    typmod: i32,
    labels: Option<std::sync::Arc<std::collections::BTreeSet<String>>>,
    base_name: Option<String>,
) -> ColumnType {
    // varchar(n) and char(n) keep n + 4 in their typmod.
    let max_chars = (matches!(oid, 1043 | 1042) && typmod >= 4)
        .then(|| u32::try_from(typmod - 4).ok())
        .flatten();
    // numeric(p, s) keeps ((p << 16) | s) + 4, s as 11 signed bits.
    let precision_scale = (oid == 1700 && typmod >= 4).then(|| {
        let t = typmod - 4;
        let scale = t & 0x7ff;
        let scale = if scale & 0x400 != 0 {
            scale - 0x800
        } else {
            scale
        };
        (u32::try_from((t >> 16) & 0xffff).unwrap_or(0), scale)
    });
    ColumnType {
        oid,
        kind,
        name,
        cast_name,
        max_chars,
        precision_scale,
        labels,
        base_name,
        // Set for a session (see `ingest::target::for_session`).
        charset: None,
    }
}
