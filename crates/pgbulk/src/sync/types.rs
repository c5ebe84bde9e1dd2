//! The enum, domain, composite and range types a destination created from
//! the source's definition needs: those the source's columns use (directly,
//! as an array's element, a domain's base, a composite's attribute, a
//! range's subtype or a multirange's range) that the destination lacks are
//! created in it as the source defines them, before the table. A type an
//! extension provides (`citext`, `hstore`, PostGIS's `geometry`) is not
//! created: a destination without the extension refuses the run, naming
//! the `CREATE EXTENSION` to run there.

use tokio_postgres::Client;
use tokio_postgres::types::Oid;

use crate::error::{Error, Result};
use crate::schema::{quote_ident, quote_literal};

/// A type to create in the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NeededType {
    /// `"schema"."name"`, quoted.
    pub(super) name: String,
    /// The `CREATE TYPE` / `CREATE DOMAIN` statement (after a `CREATE
    /// SCHEMA` when the destination lacks its schema), each ending with
    /// `;`.
    pub(super) ddl: String,
    /// "an enum", "a domain", "a composite type" or "a range type", for
    /// the notes.
    pub(super) what: &'static str,
}

/// The user-defined enums, domains, composite and range types the columns
/// of types `oids` use in the source (the types a type is made of before
/// it) that the destination lacks (by schema-qualified name), with the DDL
/// that creates each as the source defines it. A type of an extension the destination lacks is
/// an error naming the extension and its columns' types (installing
/// extensions is the destination's owner's call). Other user-defined types
/// (a range with a canonical function, a table's row type) are left to the
/// server's "type does not exist".
pub(super) async fn missing(
    source: &mut Client,
    dest: &Client,
    oids: &[Oid],
) -> Result<Vec<NeededType>> {
    let read = |e| Error::server("reading the source's user-defined types", e);
    // Names as the destination must read them: with pg_catalog alone on
    // the search path, format_type and pg_get_constraintdef qualify every
    // other schema's types and functions.
    let tx = source.transaction().await.map_err(read)?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .await
        .map_err(read)?;
    // Multiranges (PostgreSQL 14 and later): a multirange column's range
    // type is needed, and names its multirange where both have them.
    let version = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    const VERSION: &str = "SELECT pg_catalog.current_setting('server_version_num')::int4";
    let multiranges = version(tx.query_one(VERSION, &[]).await.map_err(read)?) >= 140_000;
    let dest_multiranges = version(
        dest.query_one(VERSION, &[])
            .await
            .map_err(|e| Error::server("reading the destination's version", e))?,
    ) >= 140_000;
    let multirange_part = if multiranges {
        "UNION ALL \
         SELECT r.rngtypid FROM pg_range r WHERE t.typtype = 'm' AND r.rngmultitypid = t.oid "
    } else {
        ""
    };
    let rows = tx
        .query(
            &format!(
            "WITH RECURSIVE used(oid, depth) AS ( \
               SELECT CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem ELSE t.oid END, 0 \
               FROM pg_type t WHERE t.oid = ANY($1) \
               UNION \
               SELECT CASE WHEN b.typcategory = 'A' AND b.typelem <> 0 THEN b.typelem ELSE b.oid END, u.depth + 1 \
               FROM used u JOIN pg_type t ON t.oid = u.oid \
               CROSS JOIN LATERAL ( \
                 SELECT t.typbasetype WHERE t.typtype = 'd' \
                 UNION ALL \
                 SELECT a.atttypid FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid \
                 WHERE t.typtype = 'c' AND c.oid = t.typrelid AND c.relkind = 'c' \
                   AND a.attnum > 0 AND NOT a.attisdropped \
                 UNION ALL \
                 SELECT r.rngsubtype FROM pg_range r WHERE t.typtype = 'r' AND r.rngtypid = t.oid \
                 {multirange_part}\
               ) part(oid) \
               JOIN pg_type b ON b.oid = part.oid \
               WHERE u.depth < 32 \
             ) \
             SELECT t.oid, n.nspname::text, t.typname::text, t.typtype::text, x.extname::text, t.typrelid \
             FROM (SELECT oid, max(depth) AS depth FROM used GROUP BY oid) u \
             JOIN pg_type t ON t.oid = u.oid JOIN pg_namespace n ON n.oid = t.typnamespace \
             LEFT JOIN pg_class c ON c.oid = t.typrelid \
             LEFT JOIN pg_range rg ON rg.rngtypid = t.oid \
             LEFT JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e' \
             LEFT JOIN pg_extension x ON x.oid = d.refobjid \
             WHERE (t.typtype IN ('e', 'd') OR c.relkind = 'c' OR rg.rngcanonical = 0 OR x.oid IS NOT NULL) \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY u.depth DESC, t.oid"
            ),
            &[&oids],
        )
        .await
        .map_err(read)?;
    let mut needed = Vec::new();
    let mut schemas_made = Vec::new();
    let mut lacking = Vec::new();
    for row in rows {
        let (oid, schema, name, kind): (Oid, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        let there: bool = dest
            .query_one(
                "SELECT pg_catalog.to_regtype($1) IS NOT NULL",
                &[&qualified],
            )
            .await
            .map_err(|e| Error::server("reading the destination's types", e))?
            .get(0);
        if there {
            continue;
        }
        if let Some(extension) = row.get::<_, Option<String>>(4) {
            lacking.push(lacking_extension(dest, &extension, &schema, &qualified).await?);
            continue;
        }
        let (body, what) = if kind == "e" {
            let labels: Vec<String> = tx
                .query(
                    "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder",
                    &[&oid],
                )
                .await
                .map_err(read)?
                .iter()
                .map(|r| quote_literal(r.get::<_, &str>(0)))
                .collect();
            (
                format!("CREATE TYPE {qualified} AS ENUM ({})", labels.join(", ")),
                "an enum",
            )
        } else if kind == "r" {
            (
                range_body(&tx, oid, &qualified, multiranges && dest_multiranges)
                    .await
                    .map_err(read)?,
                "a range type",
            )
        } else if kind == "c" {
            let relation: Oid = row.get(5);
            (
                composite_body(&tx, relation, &qualified)
                    .await
                    .map_err(read)?,
                "a composite type",
            )
        } else {
            (
                domain_body(&tx, oid, &qualified).await.map_err(read)?,
                "a domain",
            )
        };
        let schema_there: bool = dest
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .map_err(|e| Error::server("reading the destination's schemas", e))?
            .get(0);
        let ddl = if schema_there || schemas_made.contains(&schema) {
            format!("{body};")
        } else {
            schemas_made.push(schema.clone());
            format!("CREATE SCHEMA {};\n{body};", quote_ident(&schema))
        };
        needed.push(NeededType {
            ddl,
            name: qualified,
            what,
        });
    }
    tx.commit().await.map_err(read)?;
    if !lacking.is_empty() {
        return Err(Error::config(format!(
            "the destination lacks types the source's columns use; nothing was written:\n  {}\n\
             (or declare the destination's table with --schema FILE.sql)",
            lacking.join("\n  ")
        )));
    }
    Ok(needed)
}

/// What to tell about the type `qualified` of the source's `extension`
/// (installed in `schema` there) that the destination does not have.
async fn lacking_extension(
    dest: &Client,
    extension: &str,
    schema: &str,
    qualified: &str,
) -> Result<String> {
    let row = dest
        .query_one(
            "SELECT (SELECT n.nspname::text FROM pg_catalog.pg_extension x \
                     JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace WHERE x.extname = $1), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = $1)",
            &[&extension],
        )
        .await
        .map_err(|e| Error::server("reading the destination's extensions", e))?;
    let (installed_in, available): (Option<String>, bool) = (row.get(0), row.get(1));
    let create = format!(
        "CREATE EXTENSION {} SCHEMA {}",
        quote_ident(extension),
        quote_ident(schema)
    );
    Ok(match installed_in {
        Some(there) => format!(
            "{qualified}, of extension {extension}: the destination has {extension} in schema \
             {}, the source in {}",
            quote_ident(&there),
            quote_ident(schema)
        ),
        None if available => format!(
            "{qualified}, of extension {extension}, which the destination lacks: run \
             `{create}` there"
        ),
        None => format!(
            "{qualified}, of extension {extension}, which the destination's server does not \
             have: install {extension} on it, then run `{create}` there"
        ),
    })
}

/// `CREATE DOMAIN` of the domain `oid` as the source defines it: its base
/// type, collation, default, `NOT NULL` and CHECK constraints.
async fn domain_body(
    tx: &tokio_postgres::Transaction<'_>,
    oid: Oid,
    qualified: &str,
) -> std::result::Result<String, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT format_type(t.typbasetype, t.typtypmod), \
               CASE WHEN t.typcollation <> 0 AND t.typcollation <> b.typcollation \
                 THEN quote_ident(cn.nspname) || '.' || quote_ident(c.collname) END, \
               pg_get_expr(t.typdefaultbin, 0), t.typnotnull \
             FROM pg_type t JOIN pg_type b ON b.oid = t.typbasetype \
             LEFT JOIN pg_collation c ON c.oid = t.typcollation \
             LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace \
             WHERE t.oid = $1",
            &[&oid],
        )
        .await?;
    let mut body = format!("CREATE DOMAIN {qualified} AS {}", row.get::<_, String>(0));
    if let Some(collation) = row.get::<_, Option<String>>(1) {
        body.push_str(&format!(" COLLATE {collation}"));
    }
    if let Some(default) = row.get::<_, Option<String>>(2) {
        body.push_str(&format!(" DEFAULT {default}"));
    }
    if row.get::<_, bool>(3) {
        body.push_str(" NOT NULL");
    }
    for check in tx
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE contypid = $1 AND contype = 'c' ORDER BY conname",
            &[&oid],
        )
        .await?
    {
        let definition: &str = check.get(1);
        // A constraint not yet validated against the source's columns is
        // one all the destination's values (none yet) meet.
        let definition = definition.strip_suffix(" NOT VALID").unwrap_or(definition);
        body.push_str(&format!(
            " CONSTRAINT {} {definition}",
            quote_ident(check.get::<_, &str>(0))
        ));
    }
    Ok(body)
}

/// `CREATE TYPE ... AS RANGE (...)` of the range type `oid` as the source
/// defines it: its subtype, operator class (when not the subtype's
/// default), collation (when not the subtype's), `subtype_diff` when a
/// built-in function (a user's function is left out: it only helps GiST
/// indexes choose), and its multirange's name when `multirange` (both
/// servers have them). Range types with a canonical function (C code) are
/// not created at all.
async fn range_body(
    tx: &tokio_postgres::Transaction<'_>,
    oid: Oid,
    qualified: &str,
    multirange: bool,
) -> std::result::Result<String, tokio_postgres::Error> {
    let multirange_name = if multirange {
        "(SELECT quote_ident(mn.nspname) || '.' || quote_ident(mt.typname) FROM pg_type mt \
           JOIN pg_namespace mn ON mn.oid = mt.typnamespace WHERE mt.oid = r.rngmultitypid)"
    } else {
        "NULL::text"
    };
    let row = tx
        .query_one(
            &format!(
                "SELECT format_type(r.rngsubtype, NULL), \
                   CASE WHEN NOT oc.opcdefault THEN quote_ident(ocn.nspname) || '.' || quote_ident(oc.opcname) END, \
                   CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation \
                     THEN quote_ident(cn.nspname) || '.' || quote_ident(c.collname) END, \
                   CASE WHEN pn.nspname = 'pg_catalog' THEN 'pg_catalog.' || quote_ident(p.proname) END, \
                   {multirange_name} \
                 FROM pg_range r JOIN pg_type st ON st.oid = r.rngsubtype \
                 JOIN pg_opclass oc ON oc.oid = r.rngsubopc \
                 JOIN pg_namespace ocn ON ocn.oid = oc.opcnamespace \
                 LEFT JOIN pg_collation c ON c.oid = r.rngcollation \
                 LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace \
                 LEFT JOIN pg_proc p ON p.oid = r.rngsubdiff \
                 LEFT JOIN pg_namespace pn ON pn.oid = p.pronamespace \
                 WHERE r.rngtypid = $1"
            ),
            &[&oid],
        )
        .await?;
    let mut parts = vec![format!("SUBTYPE = {}", row.get::<_, String>(0))];
    for (at, name) in [
        (1, "SUBTYPE_OPCLASS"),
        (2, "COLLATION"),
        (3, "SUBTYPE_DIFF"),
        (4, "MULTIRANGE_TYPE_NAME"),
    ] {
        if let Some(value) = row.get::<_, Option<String>>(at) {
            parts.push(format!("{name} = {value}"));
        }
    }
    Ok(format!(
        "CREATE TYPE {qualified} AS RANGE ({})",
        parts.join(", ")
    ))
}

/// `CREATE TYPE ... AS (...)` of the composite type whose relation is
/// `relation`, as the source defines it: its attributes in order, each
/// with its type and a collation other than its type's.
async fn composite_body(
    tx: &tokio_postgres::Transaction<'_>,
    relation: Oid,
    qualified: &str,
) -> std::result::Result<String, tokio_postgres::Error> {
    let attributes: Vec<String> = tx
        .query(
            "SELECT quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) || \
               CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
                 THEN ' COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(c.collname) ELSE '' END \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_collation c ON c.oid = a.attcollation \
             LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&relation],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(format!(
        "CREATE TYPE {qualified} AS ({})",
        attributes.join(", ")
    ))
}

/// Creates `types` in the destination, in one transaction. Another
/// session creating one of them first is no error: whatever is still
/// missing afterwards is created again, once.
pub(super) async fn create(
    source: &mut Client,
    dest: &mut Client,
    oids: &[Oid],
    types: Vec<NeededType>,
) -> Result<Vec<NeededType>> {
    let mut types = types;
    for attempt in 0..2 {
        if types.is_empty() {
            break;
        }
        let ddl: Vec<&str> = types.iter().map(|t| t.ddl.as_str()).collect();
        let done = async {
            let tx = dest.transaction().await?;
            tx.batch_execute(&ddl.join("\n")).await?;
            tx.commit().await
        }
        .await;
        match done {
            Ok(()) => return Ok(types),
            Err(e) if attempt == 0 && raced(&e) => {
                types = missing(source, dest, oids).await?;
            }
            Err(e) => {
                let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::server(
                    &format!(
                        "creating the source's types {} in the destination",
                        names.join(", ")
                    ),
                    e,
                ));
            }
        }
    }
    Ok(Vec::new())
}

/// Whether `e` is another session's type or schema created first.
fn raced(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code()
        .is_some_and(|c| *c == SqlState::DUPLICATE_OBJECT || *c == SqlState::UNIQUE_VIOLATION)
}
