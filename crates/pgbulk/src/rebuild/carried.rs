//! What a rebuilt table keeps of the live one besides its declared shape.
//!
//! How the live table is stored (unlogged, storage parameters such as
//! `fillfactor` and autovacuum settings, its TOAST table's parameters,
//! tablespace, access method, and per column: storage, compression,
//! statistics target) is given to the new table when it is created,
//! before its rows go in. What guards or publishes the live table
//! (row-level security and its policies, replica identity, publications,
//! extended statistics, the index it is clustered on) is replayed at the
//! swap, which would otherwise drop it silently with the old table.
//!
//! A table whose place in a hierarchy a swap would lose (partitioned, a
//! partition, a parent or child by inheritance) is not rebuilt at all.

use tokio_postgres::Transaction;
use tokio_postgres::types::Oid;

use crate::error::{Error, Result};
use crate::schema::{TableName, quote_ident, quote_literal};

/// The live table's storage, to be repeated by the new table's `CREATE`.
#[derive(Debug, Default)]
pub(super) struct Storage {
    /// `CREATE TABLE` or `CREATE UNLOGGED TABLE`.
    pub(super) create: &'static str,
    /// `USING`, `WITH` and `TABLESPACE` clauses (with a leading space).
    pub(super) clauses: String,
}

/// Reads how `target` is stored, and refuses when it is partitioned, a
/// partition or in an inheritance hierarchy (the swap would drop its
/// partitions or take it out of its parent). A target that does not exist
/// yet gets the defaults. `replacing`: the rebuild is a replace-atomic
/// (else a migration), for the refusal's hint.
pub(super) async fn storage(
    tx: &Transaction<'_>,
    target: &TableName,
    replacing: bool,
) -> Result<Storage> {
    let row = tx
        .query_opt(
            "SELECT c.relkind::text, c.relispartition, c.relpersistence::text, \
                    c.reloptions::text[], t.reloptions::text[], ts.spcname::text, \
                    CASE WHEN am.amname <> 'heap' THEN am.amname::text END, \
                    (SELECT i.inhparent::regclass::text FROM pg_catalog.pg_inherits i \
                     WHERE i.inhrelid = c.oid ORDER BY i.inhseqno LIMIT 1), \
                    (SELECT i.inhrelid::regclass::text FROM pg_catalog.pg_inherits i \
                     WHERE i.inhparent = c.oid ORDER BY 1 LIMIT 1) \
             FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid \
             LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace \
             LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam \
             WHERE c.oid = pg_catalog.to_regclass($1::text)",
            &[&target.quoted()],
        )
        .await
        .map_err(|e| Error::server(&format!("reading how {target} is stored"), e))?;
    let Some(row) = row else {
        return Ok(Storage {
            create: "CREATE TABLE",
            clauses: String::new(),
        });
    };
    let kind: String = row.get(0);
    let partition: bool = row.get(1);
    let parent: Option<String> = row.get(7);
    let child: Option<String> = row.get(8);
    let place = if kind == "p" {
        Some((
            "a partitioned table".to_owned(),
            "drop its partitions".to_owned(),
        ))
    } else if let Some(parent) = &parent {
        let what = if partition {
            format!("a partition of {parent}")
        } else {
            format!("a child table of {parent} (INHERITS)")
        };
        Some((what, format!("take it out of {parent}")))
    } else {
        child.map(|child| {
            (
                format!("the parent of {child} (INHERITS)"),
                format!("take {child} out of it"),
            )
        })
    };
    if let Some((what, loss)) = place {
        return Err(Error::config(if replacing {
            format!(
                "{target} is {what}: replace-atomic builds a new table and swaps it in, which would {loss}; \
                 --mode replace replaces its rows in one transaction instead (readers see the old rows until it commits)"
            )
        } else {
            format!(
                "{target} is {what}: this migration rebuilds it (a new table swapped in), which would {loss}; \
                 migrate it by hand"
            )
        }));
    }
    let mut with = storage_parameters("", row.get(3));
    with.extend(storage_parameters("toast.", row.get(4)));
    let mut clauses = String::new();
    if let Some(method) = row.get::<_, Option<String>>(6) {
        clauses.push_str(&format!(" USING {}", quote_ident(&method)));
    }
    if !with.is_empty() {
        clauses.push_str(&format!(" WITH ({})", with.join(", ")));
    }
    if let Some(space) = row.get::<_, Option<String>>(5) {
        clauses.push_str(&format!(" TABLESPACE {}", quote_ident(&space)));
    }
    Ok(Storage {
        create: if row.get::<_, String>(2) == "u" {
            "CREATE UNLOGGED TABLE"
        } else {
            "CREATE TABLE"
        },
        clauses,
    })
}

/// `name = 'value'` settings of a catalog's options array (`reloptions`,
/// `attoptions`: `name=value` each), names prefixed by `prefix`.
fn storage_parameters(prefix: &str, options: Option<Vec<String>>) -> Vec<String> {
    options
        .unwrap_or_default()
        .iter()
        .filter_map(|option| option.split_once('='))
        .map(|(name, value)| format!("{prefix}{} = {}", quote_ident(name), quote_literal(value)))
        .collect()
}

/// The server's version number (`server_version_num`).
async fn version(tx: &Transaction<'_>) -> Result<i32> {
    Ok(tx
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|e| Error::server("reading the server version", e))?
        .get(0))
}

/// `ALTER TABLE` statements giving the columns of the new table `new` the
/// live table's per-column storage, compression, statistics target and
/// options (`n_distinct`; storage and compression only where the column
/// keeps its type). Empty when `target` does not exist.
pub(super) async fn column_settings(
    tx: &Transaction<'_>,
    target: &TableName,
    new: &TableName,
) -> Result<Vec<String>> {
    let compression = if version(tx).await? >= 140_000 {
        "CASE WHEN n.atttypid = o.atttypid THEN NULLIF(o.attcompression::text, '') END"
    } else {
        "NULL::text"
    };
    let rows = tx
        .query(
            &format!(
                "SELECT o.attname::text, o.attstattarget::int, \
                        CASE WHEN n.atttypid = o.atttypid AND o.attstorage <> ty.typstorage \
                             THEN o.attstorage::text END, \
                        {compression}, o.attoptions::text[] \
                 FROM pg_catalog.pg_attribute o \
                 JOIN pg_catalog.pg_type ty ON ty.oid = o.atttypid \
                 JOIN pg_catalog.pg_attribute n ON n.attrelid = $2::text::regclass \
                      AND n.attname = o.attname AND n.attnum > 0 AND NOT n.attisdropped \
                 WHERE o.attrelid = pg_catalog.to_regclass($1::text) AND o.attnum > 0 \
                   AND NOT o.attisdropped ORDER BY o.attnum"
            ),
            &[&target.quoted(), &new.quoted()],
        )
        .await
        .map_err(|e| Error::server(&format!("reading the column settings of {target}"), e))?;
    let on = new.quoted();
    let mut sql = Vec::new();
    for r in rows {
        let column = quote_ident(&r.get::<_, String>(0));
        if let Some(target) = r.get::<_, Option<i32>>(1).filter(|t| *t >= 0) {
            sql.push(format!(
                "ALTER TABLE {on} ALTER COLUMN {column} SET STATISTICS {target}"
            ));
        }
        let storage = match r.get::<_, Option<String>>(2).as_deref() {
            Some("p") => Some("PLAIN"),
            Some("e") => Some("EXTERNAL"),
            Some("m") => Some("MAIN"),
            Some("x") => Some("EXTENDED"),
            _ => None,
        };
        if let Some(storage) = storage {
            sql.push(format!(
                "ALTER TABLE {on} ALTER COLUMN {column} SET STORAGE {storage}"
            ));
        }
        let compression = match r.get::<_, Option<String>>(3).as_deref() {
            Some("p") => Some("pglz"),
            Some("l") => Some("lz4"),
            _ => None,
        };
        if let Some(compression) = compression {
            sql.push(format!(
                "ALTER TABLE {on} ALTER COLUMN {column} SET COMPRESSION {compression}"
            ));
        }
        let options = storage_parameters("", r.get(4));
        if !options.is_empty() {
            sql.push(format!(
                "ALTER TABLE {on} ALTER COLUMN {column} SET ({})",
                options.join(", ")
            ));
        }
    }
    Ok(sql)
}

/// Statements that give the swapped-in table (by then named `on`) what
/// the live table `oid` had beyond its rows and shape: row-level security
/// and its policies, replica identity, publications, extended statistics
/// and the index it is clustered on. `new` is the new table's temporary
/// name (extended statistics on columns it lacks are not recreated);
/// `indexes` are the final names of its indexes (a replica identity or
/// clustering index it lacks is not set).
pub(super) async fn guards(
    tx: &Transaction<'_>,
    oid: Oid,
    on: &str,
    new: &TableName,
    indexes: &[&str],
) -> Result<Vec<String>> {
    let mut sql = Vec::new();
    let table = tx
        .query_one(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, c.relreplident::text, \
                    (SELECT i.relname::text FROM pg_catalog.pg_index x \
                     JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
                     WHERE x.indrelid = c.oid AND x.indisreplident), \
                    (SELECT i.relname::text FROM pg_catalog.pg_index x \
                     JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
                     WHERE x.indrelid = c.oid AND x.indisclustered) \
             FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading row security and replica identity", e))?;
    if table.get::<_, bool>(0) {
        sql.push(format!("ALTER TABLE {on} ENABLE ROW LEVEL SECURITY"));
    }
    if table.get::<_, bool>(1) {
        sql.push(format!("ALTER TABLE {on} FORCE ROW LEVEL SECURITY"));
    }
    let has_index = |name: &Option<String>| {
        name.as_deref()
            .filter(|n| indexes.contains(n))
            .map(quote_ident)
    };
    match table.get::<_, String>(2).as_str() {
        "n" => sql.push(format!("ALTER TABLE {on} REPLICA IDENTITY NOTHING")),
        "f" => sql.push(format!("ALTER TABLE {on} REPLICA IDENTITY FULL")),
        "i" => {
            if let Some(index) = has_index(&table.get(3)) {
                sql.push(format!(
                    "ALTER TABLE {on} REPLICA IDENTITY USING INDEX {index}"
                ));
            }
        }
        _ => {}
    }
    if let Some(index) = has_index(&table.get(4)) {
        sql.push(format!("ALTER TABLE {on} CLUSTER ON {index}"));
    }

    let policies = tx
        .query(
            "SELECT p.polname::text, p.polpermissive, p.polcmd::text, \
                    ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' \
                                      ELSE quote_ident(pg_catalog.pg_get_userbyid(r)) END \
                          FROM unnest(p.polroles) r), \
                    pg_catalog.pg_get_expr(p.polqual, p.polrelid), \
                    pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) \
             FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 ORDER BY p.polname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading row security policies", e))?;
    for p in policies {
        let command = match p.get::<_, String>(2).as_str() {
            "r" => "SELECT",
            "a" => "INSERT",
            "w" => "UPDATE",
            "d" => "DELETE",
            _ => "ALL",
        };
        let roles: Vec<String> = p.get(3);
        let mut policy = format!(
            "CREATE POLICY {} ON {on} AS {} FOR {command} TO {}",
            quote_ident(&p.get::<_, String>(0)),
            if p.get::<_, bool>(1) {
                "PERMISSIVE"
            } else {
                "RESTRICTIVE"
            },
            roles.join(", ")
        );
        if let Some(using) = p.get::<_, Option<String>>(4) {
            policy.push_str(&format!(" USING ({using})"));
        }
        if let Some(check) = p.get::<_, Option<String>>(5) {
            policy.push_str(&format!(" WITH CHECK ({check})"));
        }
        sql.push(policy);
    }

    // Publications naming the table itself (not FOR ALL TABLES or a
    // schema's tables, which take the new table by themselves), with the
    // column list and row filter of PostgreSQL 15 on.
    let (columns, filter) = if version(tx).await? >= 150_000 {
        (
            "(SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) \
              FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid = r.prrelid AND a.attnum = ANY(r.prattrs::int2[]))",
            "pg_catalog.pg_get_expr(r.prqual, r.prrelid)",
        )
    } else {
        ("NULL::text", "NULL::text")
    };
    let publications = tx
        .query(
            &format!(
                "SELECT p.pubname::text, {columns}, {filter} \
                 FROM pg_catalog.pg_publication_rel r \
                 JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid \
                 WHERE r.prrelid = $1 ORDER BY p.pubname"
            ),
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading publications", e))?;
    for p in publications {
        let mut add = format!(
            "ALTER PUBLICATION {} ADD TABLE {on}",
            quote_ident(&p.get::<_, String>(0))
        );
        if let Some(columns) = p.get::<_, Option<String>>(1) {
            add.push_str(&format!(" ({columns})"));
        }
        if let Some(filter) = p.get::<_, Option<String>>(2) {
            add.push_str(&format!(" WHERE ({filter})"));
        }
        sql.push(add);
    }

    // Extended statistics whose columns the new table has (by name).
    let statistics = tx
        .query(
            "SELECT pg_catalog.pg_get_statisticsobjdef(s.oid), s.stxstattarget::int, \
                    quote_ident(n.nspname) || '.' || quote_ident(s.stxname) \
             FROM pg_catalog.pg_statistic_ext s \
             JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace \
             WHERE s.stxrelid = $1 AND NOT EXISTS ( \
                 SELECT 1 FROM unnest(s.stxkeys::int2[]) k \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attnum = k \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute b \
                                   WHERE b.attrelid = $2::text::regclass AND b.attname = a.attname \
                                     AND b.attnum > 0 AND NOT b.attisdropped)) \
             ORDER BY s.stxname",
            &[&oid, &new.quoted()],
        )
        .await
        .map_err(|e| Error::server("reading extended statistics", e))?;
    for s in statistics {
        sql.push(s.get(0));
        if let Some(target) = s.get::<_, Option<i32>>(1).filter(|t| *t >= 0) {
            sql.push(format!(
                "ALTER STATISTICS {} SET STATISTICS {target}",
                s.get::<_, String>(2)
            ));
        }
    }
    Ok(sql)
}
