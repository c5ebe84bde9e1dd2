//! Rebuilding a table: a new table in the declared shape is built beside
//! the live one (under temporary names), filled, and swapped in inside a
//! transaction that keeps everything users attached to the old one: owner,
//! grants (PUBLIC and column grants too), comments, dependent views and
//! materialized views (with their indexes, owners, grants and comments),
//! foreign keys from other tables, triggers, rules and sequence positions.
//!
//! Readers keep reading the old table until the swap commits; the swap's
//! `ACCESS EXCLUSIVE` lock is taken under the lock policy and held only for
//! the catalog changes. [`carried`] keeps the rest (storage settings,
//! row-level security, publications, ...) and refuses tables a swap would
//! take out of their hierarchy.

mod carried;

use std::time::Instant;

use tokio_postgres::Transaction;
use tokio_postgres::types::Oid;
use tracing::info;

use crate::catalog::{ColumnFacts, TableFacts};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{self, LockPolicy};
use crate::savepoint::Savepoint;
use crate::schema::{TableName, quote_ident, quote_literal};

/// A new table being built for `target`.
#[derive(Debug, Clone)]
pub(crate) struct NewTable {
    /// The table that will be replaced (and whose name this one takes).
    pub(crate) target: TableName,
    /// The new table's temporary name, in the target's schema.
    pub(crate) name: TableName,
    /// `(temporary, final)` names of constraints to rename after the swap.
    constraint_renames: Vec<(String, String)>,
    /// `(temporary, final)` names of indexes to rename after the swap.
    index_renames: Vec<(String, String)>,
    /// Declared comments (table, then columns).
    comments: Vec<String>,
    /// Whether the declaration sets the table comment.
    declares_table_comment: bool,
    /// Columns of the new table, with whether the declaration comments them.
    columns: Vec<(String, bool)>,
}

impl NewTable {
    /// `error` with the temporary names of this table's constraints and
    /// indexes (`pgbulk_con_...`, in a server's message about a row it
    /// refused) written as the table's own.
    pub(crate) fn named_as_target(&self, error: Error) -> Error {
        self.renames()
            .fold(error, |e, (tmp, name)| e.renaming(&tmp, &name))
    }

    /// `text` (a server's words) with those names written as the table's.
    pub(crate) fn text_as_target(&self, text: &str) -> String {
        self.renames()
            .fold(text.to_owned(), |t, (tmp, name)| t.replace(&tmp, &name))
    }

    /// The temporary names as messages spell them, with the final ones.
    fn renames(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.constraint_renames
            .iter()
            .chain(&self.index_renames)
            .flat_map(|(tmp, name)| {
                [
                    (format!("\"{tmp}\""), format!("\"{name}\"")),
                    (
                        format!("(constraint {tmp})"),
                        format!("(constraint {name})"),
                    ),
                ]
            })
    }
}

/// A short name derived from `parts`, unique enough for temporary objects.
fn temp_name(prefix: &str, parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("pgbulk_{prefix}_{hex}")
}

/// The temporary name of the new table built for `target`.
pub(crate) fn new_table_name(target: &TableName) -> TableName {
    TableName::new(
        target.schema_or_public(),
        &temp_name("new", &[target.schema_or_public(), &target.name]),
    )
}

fn render_column(c: &ColumnFacts) -> String {
    let name = quote_ident(&c.name);
    let mut sql = if let Some(generated) = &c.generated {
        // `s`: stored; `v`: virtual (PostgreSQL 18), computed on read.
        format!(
            "{name} {} GENERATED ALWAYS AS ({}) {}",
            c.type_name,
            c.raw_default.as_deref().unwrap_or("NULL"),
            if generated == "v" {
                "VIRTUAL"
            } else {
                "STORED"
            }
        )
    } else if let Some(identity) = &c.identity {
        format!(
            "{name} {} GENERATED {} AS IDENTITY",
            c.type_name,
            if identity == "a" {
                "ALWAYS"
            } else {
                "BY DEFAULT"
            }
        )
    } else if c.default.as_deref() == Some("nextval(<sequence>)") {
        let serial = match c.type_name.as_str() {
            "bigint" => "bigserial",
            "smallint" => "smallserial",
            _ => "serial",
        };
        format!("{name} {serial}")
    } else {
        let mut sql = format!("{name} {}", c.type_name);
        if let Some(collation) = &c.collation {
            sql.push_str(&format!(" COLLATE {}", quote_ident(collation)));
        }
        if let Some(default) = &c.raw_default {
            sql.push_str(&format!(" DEFAULT {default}"));
        }
        sql
    };
    if c.not_null {
        sql.push_str(" NOT NULL");
    }
    sql
}

/// The serial and identity sequences of the columns `old` and `new` both
/// have: `(old sequence, new sequence, old sequence's oid)`.
async fn sequence_pairs(
    tx: &Transaction<'_>,
    old: &TableName,
    new: &TableName,
) -> Result<Vec<(String, String, Oid)>> {
    let rows = tx
        .query(
            "SELECT pg_catalog.pg_get_serial_sequence($1, a.attname), pg_catalog.pg_get_serial_sequence($2, a.attname), \
                    pg_catalog.pg_get_serial_sequence($1, a.attname)::regclass::oid \
             FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
               AND pg_catalog.pg_get_serial_sequence($1, a.attname) IS NOT NULL \
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute b WHERE b.attrelid = $2::regclass AND b.attname = a.attname)",
            &[&old.quoted(), &new.quoted()],
        )
        .await
        .map_err(|e| Error::server("reading sequences", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get(2),
            ))
        })
        .collect())
}

/// `ALTER SEQUENCE new` to the options of the sequence `oid` (type,
/// increment, bounds, start, cache, cycle): a serial's or identity's
/// sequence may have been altered, and the new table's starts with the
/// defaults.
async fn sequence_options(tx: &Transaction<'_>, oid: Oid, new: &str) -> Result<String> {
    let row = tx
        .query_one(
            "SELECT s.seqtypid::regtype::text, s.seqincrement::text, s.seqmin::text, s.seqmax::text, \
                    s.seqstart::text, s.seqcache::text, s.seqcycle \
             FROM pg_catalog.pg_sequence s WHERE s.seqrelid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading a sequence's options", e))?;
    let text = |i: usize| row.get::<_, String>(i);
    Ok(format!(
        "ALTER SEQUENCE {new} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} RESTART CACHE {} {}",
        text(0),
        text(1),
        text(2),
        text(3),
        text(4),
        text(5),
        if row.get::<_, bool>(6) {
            "CYCLE"
        } else {
            "NO CYCLE"
        }
    ))
}

/// SQL setting sequence `new` to where `old` stands; `forward_only`: only
/// when `old` is further along (in its direction), never back.
fn advance_sequence(old: &str, new: &str, forward_only: bool) -> String {
    let set = format!(
        "SELECT pg_catalog.setval({}, o.last_value, o.is_called) FROM {old} o",
        quote_literal(new)
    );
    if !forward_only {
        return set;
    }
    format!(
        "{set}, {new} n, pg_catalog.pg_sequence q WHERE q.seqrelid = {}::regclass \
         AND CASE WHEN q.seqincrement > 0 THEN (o.last_value, o.is_called) > (n.last_value, n.is_called) \
         ELSE (o.last_value, NOT o.is_called) < (n.last_value, NOT n.is_called) END",
        quote_literal(new)
    )
}

/// Creates the new table for `target` in the declared shape and stored as
/// the live table is, with temporary names for everything whose name must
/// be unique in the schema. Leftovers of an earlier attempt are dropped
/// first. Refuses a partitioned, partition or inheritance table;
/// `replacing`: for a replace-atomic (else a migration), for the hint.
pub(crate) async fn create_new(
    tx: &Transaction<'_>,
    target: &TableName,
    declared: &TableFacts,
    replacing: bool,
) -> Result<NewTable> {
    create_named(tx, target, declared, replacing, new_table_name(target)).await
}

/// [`create_new`] under a name of this session's own (its backend's pid
/// in it): for a copy of an empty table, which sessions loading the same
/// table at once each make (under one name, the second would wait for the
/// first's transaction).
pub(crate) async fn create_copy(
    tx: &Transaction<'_>,
    target: &TableName,
    live: &TableFacts,
) -> Result<NewTable> {
    let pid: i32 = tx
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .await
        .map_err(|e| Error::server("reading the backend's pid", e))?
        .get(0);
    let schema = target.schema_or_public();
    let name = TableName::new(
        schema,
        &temp_name("new", &[schema, &target.name, &pid.to_string()]),
    );
    create_named(tx, target, live, false, name).await
}

async fn create_named(
    tx: &Transaction<'_>,
    target: &TableName,
    declared: &TableFacts,
    replacing: bool,
    name: TableName,
) -> Result<NewTable> {
    let storage = carried::storage(tx, target, replacing).await?;
    let q = name.quoted();
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {q} CASCADE"))
        .await
        .map_err(|e| Error::server("dropping a leftover new table", e))?;
    let mut parts: Vec<String> = declared.columns.iter().map(render_column).collect();
    let mut constraint_renames = Vec::new();
    if let Some((pk, cols)) = &declared.primary_key {
        let tmp = temp_name("pk", &[&name.name, pk]);
        let cols: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
        parts.push(format!(
            "CONSTRAINT {} PRIMARY KEY ({})",
            quote_ident(&tmp),
            cols.join(", ")
        ));
        constraint_renames.push((tmp, pk.clone()));
    }
    for c in &declared.constraints {
        if c.kind == "c" {
            parts.push(format!("CONSTRAINT {} {}", quote_ident(&c.name), c.def));
        } else {
            let tmp = temp_name("con", &[&name.name, &c.name]);
            parts.push(format!("CONSTRAINT {} {}", quote_ident(&tmp), c.def));
            constraint_renames.push((tmp, c.name.clone()));
        }
    }
    let building = |e| Error::server(&format!("building the new {target}"), e);
    tx.batch_execute(&format!(
        "{} {q} ({}){}",
        storage.create,
        parts.join(", "),
        storage.clauses
    ))
    .await
    .map_err(building)?;
    // Before any row goes in: the columns take the live ones' settings,
    // and the serial and identity sequences continue the live ones' (the
    // new rows do not take numbers the old rows had).
    let mut sql = carried::column_settings(tx, target, &name).await?;
    for (old_seq, new_seq, oid) in sequence_pairs(tx, target, &name).await? {
        sql.push(sequence_options(tx, oid, &new_seq).await?);
        sql.push(advance_sequence(&old_seq, &new_seq, false));
    }
    let mut index_renames = Vec::new();
    for i in &declared.indexes {
        let tmp = temp_name("idx", &[&name.name, &i.name]);
        sql.push(format!(
            "CREATE {}INDEX {} ON {q} {}",
            if i.unique { "UNIQUE " } else { "" },
            quote_ident(&tmp),
            i.def
        ));
        index_renames.push((tmp, i.name.clone()));
    }
    for s in &sql {
        tx.batch_execute(s).await.map_err(building)?;
    }
    let mut comments = Vec::new();
    if let Some(c) = &declared.comment {
        comments.push(format!(
            "COMMENT ON TABLE {} IS {}",
            target.quoted(),
            quote_literal(c)
        ));
    }
    for i in &declared.indexes {
        if let Some(c) = &i.comment {
            comments.push(format!(
                "COMMENT ON INDEX {} IS {}",
                TableName::new(target.schema_or_public(), &i.name).quoted(),
                quote_literal(c)
            ));
        }
    }
    for (col, c) in &declared.column_comments {
        comments.push(format!(
            "COMMENT ON COLUMN {}.{} IS {}",
            target.quoted(),
            quote_ident(col),
            quote_literal(c)
        ));
    }
    Ok(NewTable {
        target: target.clone(),
        name,
        constraint_renames,
        index_renames,
        comments,
        declares_table_comment: declared.comment.is_some(),
        columns: declared
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    declared.column_comments.contains_key(&c.name),
                )
            })
            .collect(),
    })
}

/// Copies the rows of the live table into the new one by column name,
/// casting columns whose type changes. Returns the rows copied.
pub(crate) async fn copy_rows(
    tx: &Transaction<'_>,
    new: &NewTable,
    live: &TableFacts,
    declared: &TableFacts,
) -> Result<u64> {
    let common: Vec<(&ColumnFacts, &ColumnFacts)> = declared
        .columns
        .iter()
        .filter(|d| d.generated.is_none())
        .filter_map(|d| live.column(&d.name).map(|l| (l, d)))
        .collect();
    if common.is_empty() {
        return Ok(0);
    }
    let into: Vec<String> = common.iter().map(|(_, d)| quote_ident(&d.name)).collect();
    let select: Vec<String> = common
        .iter()
        .map(|(l, d)| {
            let col = quote_ident(&d.name);
            if l.type_name == d.type_name {
                col
            } else {
                format!("{col}::{}", d.type_name)
            }
        })
        .collect();
    let overriding = if declared
        .columns
        .iter()
        .any(|c| c.identity.as_deref() == Some("a"))
    {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let started = Instant::now();
    // Every row or an error: with row_security off, a role whose row-level
    // security would hide rows of the live table gets an error instead of
    // a new table without them.
    let row_security: String = tx
        .query_one(
            "SELECT pg_catalog.current_setting('row_security'), \
                    pg_catalog.set_config('row_security', 'off', true)",
            &[],
        )
        .await
        .map_err(|e| Error::server("turning row_security off", e))?
        .get(0);
    let n = tx
        .execute(
            &format!(
                "INSERT INTO {} ({}){overriding} SELECT {} FROM {}",
                new.name.quoted(),
                into.join(", "),
                select.join(", "),
                new.target.quoted()
            ),
            &[],
        )
        .await
        .map_err(|e| Error::server(&format!("copying {} into its new shape", new.target), e))?;
    tx.execute(
        "SELECT pg_catalog.set_config('row_security', $1, true)",
        &[&row_security],
    )
    .await
    .map_err(|e| Error::server("restoring row_security", e))?;
    info!(
        "copied {n} rows of {} in {:.1} s",
        new.target,
        started.elapsed().as_secs_f64()
    );
    Ok(n)
}

/// A dependent view or materialized view, captured to recreate it.
#[derive(Debug)]
struct View {
    name: TableName,
    materialized: bool,
    definition: String,
    owner: String,
    options: Option<Vec<String>>,
    grants: Vec<String>,
    comments: Vec<String>,
    indexes: Vec<String>,
}

/// `GRANT` statements that recreate the privileges of relation `oid` on
/// `on` (table- and column-level, PUBLIC included).
async fn grants(tx: &Transaction<'_>, oid: Oid, on: &str) -> Result<Vec<String>> {
    let rows = tx
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, \
                    a.privilege_type, a.is_grantable, NULL::text \
             FROM pg_catalog.pg_class c, aclexplode(c.relacl) a WHERE c.oid = $1 AND c.relacl IS NOT NULL \
             UNION ALL \
             SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, \
                    a.privilege_type, a.is_grantable, att.attname::text \
             FROM pg_catalog.pg_attribute att, aclexplode(att.attacl) a \
             WHERE att.attrelid = $1 AND att.attacl IS NOT NULL AND NOT att.attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading grants", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let grantee: String = r.get(0);
            let privilege: String = r.get(1);
            let grantable: bool = r.get(2);
            let column: Option<String> = r.get(3);
            let cols = column
                .map(|c| format!(" ({})", quote_ident(&c)))
                .unwrap_or_default();
            format!(
                "GRANT {privilege}{cols} ON {on} TO {grantee}{}",
                if grantable { " WITH GRANT OPTION" } else { "" }
            )
        })
        .collect())
}

/// Comments on relation `oid` (`None`) and its columns (`Some(column)`).
async fn comments(tx: &Transaction<'_>, oid: Oid) -> Result<Vec<(Option<String>, String)>> {
    let rows = tx
        .query(
            "SELECT NULL::text, pg_catalog.obj_description($1, 'pg_class') \
             UNION ALL \
             SELECT a.attname::text, pg_catalog.col_description($1, a.attnum) FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading comments", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get::<_, Option<String>>(0),
                r.get::<_, Option<String>>(1)?,
            ))
        })
        .collect())
}

/// `COMMENT ON` statements for `comments` of relation `on` of `kind`.
fn comment_sql(comments: &[(Option<String>, String)], kind: &str, on: &str) -> Vec<String> {
    comments
        .iter()
        .map(|(column, text)| match column {
            None => format!("COMMENT ON {kind} {on} IS {}", quote_literal(text)),
            Some(c) => format!(
                "COMMENT ON COLUMN {on}.{} IS {}",
                quote_ident(c),
                quote_literal(text)
            ),
        })
        .collect()
}

/// The one text column `sql` returns for relation `oid` (definitions to
/// replay after the swap).
async fn definitions(tx: &Transaction<'_>, sql: &str, oid: Oid, what: &str) -> Result<Vec<String>> {
    Ok(tx
        .query(sql, &[&oid])
        .await
        .map_err(|e| Error::server(what, e))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The definitions `sql` reads (definition, name and `pg_trigger.tgenabled`
/// or `pg_rewrite.ev_enabled` of each `kind`, `TRIGGER` or `RULE`, on the
/// table `oid`), each followed by the statement that sets how it fires on
/// `table` when that is not the default.
async fn enabled_definitions(
    tx: &Transaction<'_>,
    table: &str,
    kind: &str,
    sql: &str,
    oid: Oid,
) -> Result<Vec<String>> {
    let mut statements = Vec::new();
    for row in tx
        .query(sql, &[&oid])
        .await
        .map_err(|e| Error::server(&format!("reading {}s", kind.to_lowercase()), e))?
    {
        statements.push(row.get(0));
        let (name, enabled): (String, String) = (row.get(1), row.get(2));
        statements.extend(firing(table, kind, &name, &enabled));
    }
    Ok(statements)
}

/// The `ALTER TABLE` that makes the trigger or rule (`kind`) `name` on
/// `table` fire as `enabled` says (`O` by default: none; `D` disabled, `R`
/// only for replication, `A` always).
fn firing(table: &str, kind: &str, name: &str, enabled: &str) -> Option<String> {
    let how = match enabled {
        "D" => "DISABLE",
        "R" => "ENABLE REPLICA",
        "A" => "ENABLE ALWAYS",
        _ => return None,
    };
    Some(format!(
        "ALTER TABLE {table} {how} {kind} {}",
        quote_ident(name)
    ))
}

/// Views and materialized views depending on `oid`, directly or through
/// other views, deepest last.
async fn dependent_views(tx: &Transaction<'_>, oid: Oid) -> Result<Vec<View>> {
    let rows = tx
        .query(
            "WITH RECURSIVE deps(oid, depth, path) AS ( \
                 SELECT DISTINCT r.ev_class, 1, ARRAY[$1::oid, r.ev_class] \
                 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refobjid = $1 AND r.ev_class <> $1 \
               UNION ALL \
                 SELECT DISTINCT r.ev_class, deps.depth + 1, deps.path || r.ev_class \
                 FROM deps JOIN pg_catalog.pg_depend d ON d.refobjid = deps.oid \
                 JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.ev_class <> deps.oid \
                   AND NOT r.ev_class = ANY(deps.path)) \
             SELECT c.oid, n.nspname::text, c.relname::text, c.relkind = 'm', max(deps.depth), \
                    pg_catalog.pg_get_viewdef(c.oid), pg_catalog.pg_get_userbyid(c.relowner)::text, c.reloptions::text[] \
             FROM deps JOIN pg_catalog.pg_class c ON c.oid = deps.oid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.relowner, c.reloptions ORDER BY 5, 2, 3",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("finding dependent views", e))?;
    let mut views = Vec::with_capacity(rows.len());
    for r in rows {
        let view_oid: Oid = r.get(0);
        let name = TableName::new(&r.get::<_, String>(1), &r.get::<_, String>(2));
        let materialized: bool = r.get(3);
        let on = name.quoted();
        let kind = if materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        let indexes = definitions(
            tx,
            "SELECT pg_catalog.pg_get_indexdef(indexrelid) FROM pg_catalog.pg_index WHERE indrelid = $1",
            view_oid,
            "reading materialized view indexes",
        )
        .await?;
        views.push(View {
            grants: grants(tx, view_oid, &on).await?,
            comments: comment_sql(&comments(tx, view_oid).await?, kind, &on),
            name,
            materialized,
            definition: r.get(5),
            owner: r.get(6),
            options: r.get(7),
            indexes,
        });
    }
    Ok(views)
}

/// Analyzes `new` inside `tx`. Callers do it before [`swap`], and before
/// any lock they take on the live table: the planner does not meet the
/// swapped-in table without statistics (the old table's go with it;
/// autovacuum would take a while), and writers do not wait for them. (An
/// empty table without statistics filled through a copy is the exception:
/// it had none to lose.)
pub(crate) async fn analyze(tx: &Transaction<'_>, new: &NewTable) -> Result<()> {
    let target = &new.target;
    let started = Instant::now();
    tx.batch_execute(&format!("ANALYZE {}", new.name.quoted()))
        .await
        .map_err(|e| Error::server(&format!("analyzing the new {target}"), e))?;
    info!(
        "analyzed the new {target} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Swaps `new` (analyzed: [`analyze`]) in for its target inside `tx`:
/// takes the target's lock under the policy, captures what hangs on it,
/// drops it, gives the new table its name and its objects their final
/// names, and recreates the rest.
pub(crate) async fn swap(tx: &Transaction<'_>, policy: &LockPolicy, new: &NewTable) -> Result<()> {
    let target = &new.target;
    let t = target.quoted();
    let oid: Oid = tx
        .query_one("SELECT $1::text::regclass::oid", &[&t])
        .await
        .map_err(|e| Error::server(&format!("looking up {target}"), e))?
        .get(0);
    // The table's own foreign keys, which its DROP takes with it, unless
    // a column of theirs is gone: added to the new table and checked
    // against its rows before the live table is locked (a key to itself,
    // after the rename: it then refers to the new table). `(name,
    // definition without NOT VALID, validated, to itself)`.
    let own_keys: Vec<(String, String, bool, bool)> = tx
        .query(
            "SELECT quote_ident(c.conname), pg_catalog.pg_get_constraintdef(c.oid), c.convalidated, \
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                          WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)), \
                    CASE WHEN c.confrelid = c.conrelid THEN ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                          WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.confkey)) END \
             FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1 AND c.contype = 'f' ORDER BY c.conname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading foreign keys", e))?
        .iter()
        .filter(|r| {
            let kept = |cols: Vec<String>| cols.iter().all(|c| new.columns.iter().any(|(n, _)| n == c));
            kept(r.get(3)) && kept(r.get::<_, Option<Vec<String>>>(4).unwrap_or_default())
        })
        .map(|r| {
            let def: String = r.get(1);
            let def = def.strip_suffix(" NOT VALID").unwrap_or(&def).to_owned();
            (r.get(0), def, r.get(2), r.get::<_, Option<Vec<String>>>(4).is_some())
        })
        .collect();
    let add_key = |table: &str, name: &str, def: &str, validated: bool| {
        let mut sql = vec![format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {def} NOT VALID"
        )];
        if validated {
            sql.push(format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"));
        }
        sql
    };
    let new_table = new.name.quoted();
    for (name, def, validated, _) in own_keys.iter().filter(|k| !k.3) {
        for s in add_key(&new_table, name, def, *validated) {
            tx.batch_execute(&s)
                .await
                .map_err(|e| swap_error(target, &s, e))?;
        }
    }
    // Readers lock a view before the tables under it: lock in that order
    // (deepest view first, the table last) so a reader never deadlocks
    // with the swap. Materialized views are read from their own storage.
    let mut order: Vec<String> = dependent_views(tx, oid)
        .await?
        .iter()
        .rev()
        .filter(|v| !v.materialized)
        .map(|v| v.name.quoted())
        .collect();
    order.push(t.clone());
    lock::run_in_savepoint(
        tx,
        policy,
        oid,
        &format!("swapping in {target}"),
        &format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", order.join(", ")),
    )
    .await?;

    let owner: String = tx
        .query_one("SELECT pg_catalog.pg_get_userbyid(relowner)::text FROM pg_catalog.pg_class WHERE oid = $1", &[&oid])
        .await
        .map_err(|e| Error::server("reading the owner", e))?
        .get(0);
    let table_grants = grants(tx, oid, &t).await?;
    // Comments the declaration does not set survive the swap.
    let kept_comments: Vec<(Option<String>, String)> = comments(tx, oid)
        .await?
        .into_iter()
        .filter(|(column, _)| match column {
            None => !new.declares_table_comment,
            Some(c) => new.columns.iter().any(|(n, declared)| n == c && !declared),
        })
        .collect();
    let views = dependent_views(tx, oid).await?;
    let foreign_keys: Vec<(String, String, String)> = tx
        .query(
            "SELECT conrelid::regclass::text, quote_ident(conname), pg_catalog.pg_get_constraintdef(oid) \
             FROM pg_catalog.pg_constraint WHERE confrelid = $1 AND contype = 'f' AND conrelid <> $1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading foreign keys", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // Triggers and rules (`CREATE RULE ... ON INSERT TO t DO ...`) on the
    // table, which the old table's DROP would take with it, each as it was
    // enabled (`ALTER TABLE ... DISABLE TRIGGER` is not in its definition).
    let triggers = enabled_definitions(
        tx,
        &t,
        "TRIGGER",
        "SELECT pg_catalog.pg_get_triggerdef(oid), tgname::text, tgenabled::text \
         FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal ORDER BY tgname",
        oid,
    )
    .await?;
    let rules = enabled_definitions(
        tx,
        &t,
        "RULE",
        "SELECT pg_catalog.pg_get_ruledef(oid), rulename::text, ev_enabled::text \
         FROM pg_catalog.pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN' ORDER BY rulename",
        oid,
    )
    .await?;
    // Serial and identity sequences of columns present in both tables:
    // `(old, new, the old one's simple name, GRANTs on it)`. The new ones
    // take the old ones' positions, names and privileges (an application
    // inserting through a serial needs USAGE on its sequence).
    let mut sequences: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for (old_seq, new_seq, seq_oid) in sequence_pairs(tx, target, &new.name).await? {
        let name: String = tx
            .query_one(
                "SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1",
                &[&seq_oid],
            )
            .await
            .map_err(|e| Error::server("reading sequences", e))?
            .get(0);
        let on = format!("SEQUENCE {old_seq}");
        sequences.push((old_seq, new_seq, name, grants(tx, seq_oid, &on).await?));
    }
    let index_names: Vec<&str> = new
        .index_renames
        .iter()
        .chain(&new.constraint_renames)
        .map(|(_, name)| name.as_str())
        .collect();
    let guards = carried::guards(tx, oid, &t, &new.name, &index_names).await?;
    let mut sql: Vec<String> = Vec::new();
    // The new sequences started where the old ones stood; these were used
    // meanwhile by writers of the live table.
    for (old_seq, new_seq, _, _) in &sequences {
        sql.push(advance_sequence(old_seq, new_seq, true));
    }
    for v in views.iter().rev() {
        let kind = if v.materialized {
            "MATERIALIZED VIEW"
        } else {
            "VIEW"
        };
        sql.push(format!("DROP {kind} IF EXISTS {}", v.name.quoted()));
    }
    for (table, name, _) in &foreign_keys {
        sql.push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
    }
    sql.push(format!("DROP TABLE {t}"));
    sql.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        new.name.quoted(),
        quote_ident(&target.name)
    ));
    for (_, new_seq, name, _) in &sequences {
        sql.push(format!(
            "ALTER SEQUENCE {new_seq} RENAME TO {}",
            quote_ident(name)
        ));
    }
    for (tmp, name) in &new.constraint_renames {
        sql.push(format!(
            "ALTER TABLE {t} RENAME CONSTRAINT {} TO {}",
            quote_ident(tmp),
            quote_ident(name)
        ));
    }
    for (tmp, name) in &new.index_renames {
        let qualified = TableName::new(target.schema_or_public(), tmp).quoted();
        sql.push(format!(
            "ALTER INDEX {qualified} RENAME TO {}",
            quote_ident(name)
        ));
    }
    sql.extend(guards);
    sql.push(format!("ALTER TABLE {t} OWNER TO {}", quote_ident(&owner)));
    sql.extend(table_grants);
    sql.extend(sequences.into_iter().flat_map(|(_, _, _, grants)| grants));
    sql.extend(comment_sql(&kept_comments, "TABLE", &t));
    sql.extend(new.comments.iter().cloned());
    for (name, def, validated, _) in own_keys.iter().filter(|k| k.3) {
        sql.extend(add_key(&t, name, def, *validated));
    }
    for (table, name, def) in &foreign_keys {
        sql.push(format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {def} NOT VALID"
        ));
        sql.push(format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"));
    }
    sql.extend(triggers);
    sql.extend(rules);
    for v in &views {
        let q = v.name.quoted();
        let with = v
            .options
            .as_ref()
            .filter(|o| !o.is_empty())
            .map(|o| format!(" WITH ({})", o.join(", ")))
            .unwrap_or_default();
        if v.materialized {
            sql.push(format!(
                "CREATE MATERIALIZED VIEW {q}{with} AS {}",
                v.definition.trim_end_matches(';')
            ));
        } else {
            sql.push(format!(
                "CREATE VIEW {q}{with} AS {}",
                v.definition.trim_end_matches(';')
            ));
        }
        sql.extend(v.indexes.iter().cloned());
        sql.push(format!(
            "ALTER {} {q} OWNER TO {}",
            if v.materialized {
                "MATERIALIZED VIEW"
            } else {
                "VIEW"
            },
            quote_ident(&v.owner)
        ));
        sql.extend(v.grants.iter().cloned());
        sql.extend(v.comments.iter().cloned());
    }
    for s in &sql {
        tx.batch_execute(s)
            .await
            .map_err(|e| swap_error(target, s, e))?;
    }
    Ok(())
}

/// The error of the swap's statement `s` into `target`. A foreign key the
/// new rows break is bad data, found too late to set rows aside (no
/// `--max-errors` hint), and said so.
fn swap_error(target: &TableName, s: &str, e: tokio_postgres::Error) -> Error {
    let broken = e
        .as_db_error()
        .filter(|db| db.code().code().starts_with("23") && s.contains(" VALIDATE CONSTRAINT "));
    if let Some(db) = broken {
        return Error::new(
            ErrorKind::Data,
            format!(
                "{target}: the rows loaded break foreign key {} ({}); they were not swapped in: the table is as it was",
                db.constraint().unwrap_or("?"),
                db.detail().unwrap_or(db.message()).trim_end_matches('.')
            ),
        )
        .in_table(target);
    }
    Error::server(
        &format!(
            "swapping in the new {target} ({})",
            crate::codec::shorten(s)
        ),
        e,
    )
}

/// The oid of `table` when a new copy of it may be filled and swapped in
/// for it while it holds no row, with nothing users see changing but its
/// oid: [`swappable`], and of at most 1 MiB. Whether it holds rows is the
/// caller's to check.
pub(crate) async fn swappable_when_empty(
    tx: &Transaction<'_>,
    table: &TableName,
) -> Result<Option<Oid>> {
    swappable(tx, table, Some(1 << 20)).await
}

/// The oid of `table` when a new copy of it may be filled and swapped in
/// for it with nothing users see changing but its oid: a plain table (no
/// partition, no inheritance, no trigger, rule, row security or foreign
/// key, its own or another table's, and no publication in the database)
/// that the role owns, in a schema where it may create tables, and of at
/// most `max_bytes` when given. (A foreign key of its own would be checked
/// only at the swap, where a row it refuses cannot be set aside.)
pub(crate) async fn swappable(
    tx: &impl tokio_postgres::GenericClient,
    table: &TableName,
    max_bytes: Option<i64>,
) -> Result<Option<Oid>> {
    Ok(tx
        .query_opt(
            "SELECT c.oid FROM pg_catalog.pg_class c \
             WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind = 'r' \
               AND c.relpersistence IN ('p', 'u') AND NOT c.relispartition \
               AND NOT c.relhasrules AND NOT c.relrowsecurity \
               AND pg_catalog.pg_has_role(c.relowner, 'USAGE') \
               AND pg_catalog.has_schema_privilege(c.relnamespace, 'CREATE') \
               AND ($2::int8 IS NULL OR pg_catalog.pg_relation_size(c.oid) <= $2::int8) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i \
                               WHERE i.inhrelid = c.oid OR i.inhparent = c.oid) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t \
                               WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
                               WHERE f.contype = 'f' AND (f.confrelid = c.oid OR f.conrelid = c.oid)) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication)",
            &[&table.quoted(), &max_bytes],
        )
        .await
        .map_err(|e| Error::server(&format!("looking up {table}"), e))?
        .map(|r| r.get(0)))
}

/// How long the swap of an empty table's filled copy waits for its locks
/// before the rows go into the table itself.
pub(crate) const EMPTY_SWAP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `table` holds no row (that this transaction sees).
pub(crate) async fn is_empty(
    client: &impl tokio_postgres::GenericClient,
    table: &TableName,
) -> Result<bool> {
    Ok(client
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT FROM {})", table.quoted()),
            &[],
        )
        .await
        .map_err(|e| Error::server(&format!("reading {table}"), e))?
        .get(0))
}

/// Whether `table` holds column statistics (`pg_stats`, which shows those
/// of the tables the user may read): an empty table never analyzed with
/// rows has none.
pub(crate) async fn has_statistics(
    client: &impl tokio_postgres::GenericClient,
    table: &TableName,
) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stats s \
             JOIN pg_catalog.pg_class c ON c.relname = s.tablename \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname \
             WHERE c.oid = $1::text::regclass)",
            &[&table.quoted()],
        )
        .await
        .map_err(|e| Error::server("reading a table's statistics", e))?
        .get(0))
}

/// The oid of `table` when it is [`swappable_when_empty`], empty, and has
/// an index: a table whose first rows go faster into a new copy of it,
/// indexed once they are in, than into it (see
/// [`crate::ingest::Options::fill_empty`]).
pub(crate) async fn empty_and_indexed(
    tx: &Transaction<'_>,
    table: &TableName,
) -> Result<Option<Oid>> {
    let Some(oid) = swappable_when_empty(tx, table).await? else {
        return Ok(None);
    };
    let indexed: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index WHERE indrelid = $1)",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading the indexes", e))?
        .get(0);
    Ok((indexed && is_empty(tx, table).await?).then_some(oid))
}

/// [`empty_and_indexed`], asked in a transaction of its own on `client`.
pub(crate) async fn fill_pays(
    client: &mut tokio_postgres::Client,
    table: &TableName,
) -> Result<bool> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::server("BEGIN", e))?;
    let found = empty_and_indexed(&tx, table).await?.is_some();
    tx.rollback()
        .await
        .map_err(|e| Error::server("ROLLBACK", e))?;
    Ok(found)
}

/// The facts of `table` when it is [`swappable_when_empty`] and empty,
/// with a savepoint set before `SHARE` was taken on the table without
/// waiting (writers then wait until the transaction ends, readers do not),
/// so the table stays empty until the swap; the caller releases the
/// savepoint, or rolls back to it to go on without the lock. `None` (no
/// savepoint, no lock) when the table does not qualify or the lock is
/// taken.
pub(crate) async fn empty_for_swap<'a, 't>(
    tx: &'a Transaction<'t>,
    table: &TableName,
) -> Result<Option<(TableFacts, Savepoint<'a, 't>)>> {
    let q = table.quoted();
    let oid = swappable_when_empty(tx, table).await?;
    let Some(oid) = oid else {
        return Ok(None);
    };
    let savepoint = Savepoint::set(tx, "pgbulk_empty").await?;
    match tx
        .batch_execute(&format!("LOCK TABLE {q} IN SHARE MODE NOWAIT"))
        .await
    {
        Ok(()) => {}
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "55P03") => {
            savepoint.roll_back().await?;
            return Ok(None);
        }
        Err(e) => return Err(Error::server(&format!("locking {table}"), e)),
    }
    if !is_empty(tx, table).await? {
        savepoint.roll_back().await?;
        return Ok(None);
    }
    let facts = crate::catalog::facts::read(tx.client(), oid).await?;
    Ok(Some((facts, savepoint)))
}

/// Takes `SHARE` on the live table (writers wait, readers do not) under the
/// lock policy, so rows cannot change while they are copied.
pub(crate) async fn lock_for_copy(
    tx: &Transaction<'_>,
    policy: &LockPolicy,
    target: &TableName,
    oid: Oid,
) -> Result<()> {
    lock::run_in_savepoint(
        tx,
        policy,
        oid,
        &format!("locking {target} for copying"),
        &format!("LOCK TABLE {} IN SHARE MODE", target.quoted()),
    )
    .await
}
