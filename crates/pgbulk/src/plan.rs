//! Migration plans: the difference between a live table and its declaration
//! as ordered steps, each saying what it does, the lock it takes, whether it
//! rewrites the table and its hazards, so a DBA can read it before it runs.
//!
//! Changes PostgreSQL can make in place without a rewrite or a long strong
//! lock are planned as steps. A table with any change that cannot (a
//! rewriting type change, a column moved or inserted in the middle, a
//! changed primary key, ...) is rebuilt instead, with the reasons listed in
//! [`Plan::rebuilds`]: a new table in the declared shape is filled by column
//! name and swapped in within the first batch's transaction.
//!
//! A partitioned table is migrated with the same steps on the parent
//! (PostgreSQL carries them to the partitions); a new index is built
//! partition by partition (PostgreSQL cannot build one concurrently on a
//! partitioned table); what it cannot do there (a rebuild would drop the
//! partitions, a new key needs a unique index on the whole table) refuses
//! the plan. A partition is planned only for what is its own (comments,
//! its own indexes) and only when its parent is declared too.

use std::fmt;

use tokio_postgres::Client;

use crate::catalog::{self, ColumnFacts, IndexFacts, TableFacts};
use crate::error::Result;
use crate::schema::{Declaration, TableName, quote_ident, quote_literal};
use crate::session::Session;

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In a short transaction of its own, under the lock policy.
    Transaction,
    /// Outside any transaction (`CONCURRENTLY`).
    Concurrently,
}

/// One migration step.
#[derive(Debug, Clone)]
pub struct Step {
    /// The table it changes.
    pub table: TableName,
    /// What it does, in words.
    pub summary: String,
    /// The statements, run in order.
    pub sql: Vec<String>,
    /// The strongest lock it takes and for how long.
    pub lock: &'static str,
    /// Whether it rewrites the table.
    pub rewrites: bool,
    /// What could go wrong or be lost.
    pub hazards: Vec<String>,
    /// Where it runs.
    pub phase: Phase,
    /// A statement that undoes a failed attempt (an invalid index).
    pub cleanup: Option<String>,
}

/// The steps that bring the live tables to their declaration.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// Tables to rebuild, with the reasons: `(table, reason)`.
    pub rebuilds: Vec<(TableName, String)>,
    /// The declared facts of each table.
    pub declared: Vec<(TableName, TableFacts)>,
    /// The facts of each live table.
    pub live_facts: Vec<(TableName, TableFacts)>,
    /// Oids of live tables (absent for tables still to create).
    pub live: Vec<(TableName, Option<u32>)>,
}

impl Plan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.rebuilds.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "nothing to do: every table matches its declaration");
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "{}. {}: {}", i + 1, step.table, step.summary)?;
            writeln!(
                f,
                "   lock: {}; rewrites the table: {}; runs {}",
                step.lock,
                if step.rewrites { "yes" } else { "no" },
                match step.phase {
                    Phase::Transaction => "in a short transaction under lock_timeout",
                    Phase::Concurrently => "outside a transaction (CONCURRENTLY)",
                }
            )?;
            for h in &step.hazards {
                writeln!(f, "   hazard: {h}")?;
            }
            for sql in &step.sql {
                writeln!(f, "   {sql};")?;
            }
        }
        let mut rebuilt: Vec<&TableName> = self.rebuilds.iter().map(|(t, _)| t).collect();
        rebuilt.dedup();
        for table in rebuilt {
            writeln!(
                f,
                "{}. {table}: rebuild: build a new table in the declared shape, copy the rows by column name, \
                 swap it in within the first batch's transaction, keeping grants, owner, comments, views, \
                 foreign keys, triggers and sequence positions",
                self.steps.len() + 1
            )?;
            writeln!(
                f,
                "   lock: SHARE while rows are copied (reads continue, writes wait), then ACCESS EXCLUSIVE \
                 for the swap only, under lock_timeout; rewrites the table: yes"
            )?;
            for (_, why) in self.rebuilds.iter().filter(|(t, _)| t == table) {
                writeln!(f, "   because: {why}")?;
            }
            writeln!(
                f,
                "   hazard: needs room for a second copy of the table; writes wait while it is copied"
            )?;
        }
        Ok(())
    }
}

/// Plans the migration of every declared table: reads the live tables and
/// the declaration (parsed by the server).
pub async fn plan(client: &mut Client, declaration: &Declaration) -> Result<Plan> {
    let session = Session::read(client).await?;
    plan_in(client, &session, declaration).await
}

/// [`plan`] on a connection whose [`Session`] was read already.
pub async fn plan_in(
    client: &mut Client,
    session: &Session,
    declaration: &Declaration,
) -> Result<Plan> {
    let declared = declaration.resolve(client, &session.current_schema).await?;
    let mut plan = Plan {
        declared: declared.clone(),
        ..Plan::default()
    };
    let declaration = declaration.qualified(&session.current_schema);
    let mut schemas_created = Vec::new();
    // Declared types the server lacks: created with the first table to
    // create, before it (else, with no table to create, before the
    // migrations), each with its schema when missing.
    let mut types = declaration.missing_types(&*client).await?;
    for (name, want) in &declared {
        let schema = name.schema_or_public().to_owned();
        let oid = catalog::table_oid(&*client, &schema, &name.name).await?;
        plan.live.push((name.clone(), oid));
        match oid {
            None => {
                if let Some(step) =
                    schema_step(&*client, name, &schema, &mut schemas_created).await?
                {
                    plan.steps.push(step);
                }
                for t in std::mem::take(&mut types) {
                    let type_schema = t.table.schema_or_public();
                    if let Some(step) =
                        schema_step(&*client, name, type_schema, &mut schemas_created).await?
                    {
                        plan.steps.push(step);
                    }
                    plan.steps.push(type_step(name, t));
                }
                let sql = declaration
                    .statements()
                    .iter()
                    .filter(|s| s.table == *name)
                    .map(|s| s.render(TableName::quoted, true))
                    .collect();
                plan.steps.push(Step {
                    table: name.clone(),
                    summary: "create the table with its constraints, indexes and comments"
                        .to_owned(),
                    sql,
                    lock: "none on existing objects",
                    rewrites: false,
                    hazards: vec![],
                    phase: Phase::Transaction,
                    cleanup: None,
                });
            }
            Some(oid) => {
                let have = catalog::facts::read(&*client, oid).await?;
                let kind = relation_kind(&*client, oid).await?;
                let (steps, rebuilds) = (plan.steps.len(), plan.rebuilds.len());
                let parent_declared = matches!(&kind, Kind::Partition(_, parent)
                    if plan.live.iter().any(|(_, o)| *o == Some(*parent)));
                if parent_declared {
                    // The parent's migration brings the columns, their
                    // constraints and the key: not the partition's own to
                    // migrate.
                    let inherited = TableFacts {
                        columns: want.columns.clone(),
                        primary_key: want.primary_key.clone(),
                        constraints: want.constraints.clone(),
                        ..have.clone()
                    };
                    diff(name, &inherited, want, &mut plan, None);
                } else if kind == Kind::Partitioned {
                    let tree = partition_tree(&*client, oid).await?;
                    diff(name, &have, want, &mut plan, Some(&tree));
                } else {
                    diff(name, &have, want, &mut plan, None);
                }
                let changed = plan.steps.len() > steps || plan.rebuilds.len() > rebuilds;
                match kind {
                    Kind::Plain => {}
                    Kind::Partitioned if plan.rebuilds.len() == rebuilds => {}
                    Kind::Partitioned => {
                        let changes: Vec<&str> = plan.rebuilds[rebuilds..]
                            .iter()
                            .map(|(_, why)| why.as_str())
                            .collect();
                        return Err(crate::Error::config(format!(
                            "{name} is a partitioned table and the declaration differs from it in ways \
                             pgbulk does not migrate in place on one ({}); it migrates a partitioned \
                             table's columns, defaults, NOT NULL, checks, comments and indexes, \
                             not a rebuild (which would drop its partitions) or a new key: migrate \
                             it by hand, then run again",
                            changes.join("; ")
                        )));
                    }
                    Kind::Partition(..) if parent_declared && plan.rebuilds.len() == rebuilds => {}
                    Kind::Partition(parent, _) if changed => {
                        let changes: Vec<&str> = plan.steps[steps..]
                            .iter()
                            .map(|s| s.summary.as_str())
                            .chain(
                                plan.rebuilds[rebuilds..]
                                    .iter()
                                    .map(|(_, why)| why.as_str()),
                            )
                            .collect();
                        return Err(crate::Error::config(format!(
                            "{name} is a partition of {parent} and the declaration differs from it \
                             ({}): a partition takes its columns from its parent; declare and \
                             migrate {parent} instead",
                            changes.join("; ")
                        )));
                    }
                    Kind::Partition(..) => {}
                }
                plan.live_facts.push((name.clone(), have));
            }
        }
    }
    // No table to create: the types go before the migrations, on their own.
    let mut first = Vec::new();
    for t in types {
        if let Some(step) = schema_step(
            &*client,
            &t.table,
            t.table.schema_or_public(),
            &mut schemas_created,
        )
        .await?
        {
            first.push(step);
        }
        first.push(type_step(&t.table, t));
    }
    plan.steps.splice(0..0, first);
    Ok(plan)
}

/// The step creating `schema` for `table` when the server lacks it and no
/// step creates it already (recorded in `created`).
async fn schema_step(
    client: &impl tokio_postgres::GenericClient,
    table: &TableName,
    schema: &str,
    created: &mut Vec<String>,
) -> Result<Option<Step>> {
    if created.iter().any(|c| c == schema) {
        return Ok(None);
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(|e| crate::Error::server("looking up a schema", e))?
        .is_some();
    if exists {
        return Ok(None);
    }
    created.push(schema.to_owned());
    Ok(Some(Step {
        table: table.clone(),
        summary: format!("create schema {schema}"),
        sql: vec![format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        )],
        lock: "none on existing objects",
        rewrites: false,
        hazards: vec![],
        phase: Phase::Transaction,
        cleanup: None,
    }))
}

/// The step creating the declared type `t` (with `table`), unless another
/// session created it meanwhile.
fn type_step(table: &TableName, t: &crate::schema::Statement) -> Step {
    let name = t.table.quoted();
    let guarded = format!(
        "BEGIN IF pg_catalog.to_regtype({}) IS NULL THEN {}; END IF; END",
        quote_literal(&name),
        t.render(TableName::quoted, true)
    );
    Step {
        table: table.clone(),
        summary: format!("create type {}", t.table),
        sql: vec![format!("DO {}", crate::schema::sql::dollar_quote(&guarded))],
        lock: "none on existing objects",
        rewrites: false,
        hazards: vec![],
        phase: Phase::Transaction,
        cleanup: None,
    }
}

/// What kind of relation a live table is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    /// Its rows are in its partitions.
    Partitioned,
    /// A partition of this parent (its name as messages give it, its oid).
    Partition(String, tokio_postgres::types::Oid),
}

async fn relation_kind(
    client: &impl tokio_postgres::GenericClient,
    oid: tokio_postgres::types::Oid,
) -> Result<Kind> {
    let row = client
        .query_one(
            "SELECT c.relkind = 'p', i.inhparent::regclass::text, i.inhparent \
             FROM pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_inherits i ON c.relispartition AND i.inhrelid = c.oid \
             WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| crate::Error::server("looking up a table", e))?;
    Ok(
        match (
            row.get::<_, bool>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<tokio_postgres::types::Oid>>(2),
        ) {
            (_, Some(parent), Some(parent_oid)) => Kind::Partition(parent, parent_oid),
            (true, ..) => Kind::Partitioned,
            (false, ..) => Kind::Plain,
        },
    )
}

/// A partition (at any depth) of a partitioned table, as building an index
/// on it partition by partition needs it.
#[derive(Debug, Clone)]
struct Partition {
    table: TableName,
    /// The table it is a partition of.
    parent: TableName,
    /// Whether it holds rows (else it is partitioned itself).
    leaf: bool,
    /// A foreign table: it takes no index (and a partitioned index built
    /// part by part never becomes valid with one).
    foreign: bool,
    /// Its indexes: name and whether valid.
    indexes: Vec<(String, bool)>,
}

/// The partitions of the partitioned table `oid`, parents before their
/// partitions.
async fn partition_tree(
    client: &impl tokio_postgres::GenericClient,
    oid: tokio_postgres::types::Oid,
) -> Result<Vec<Partition>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, pn.nspname::text, pc.relname::text, t.isleaf, \
                    c.relkind = 'f', \
                    ARRAY(SELECT ic.relname::text FROM pg_catalog.pg_index i \
                          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
                          WHERE i.indrelid = c.oid ORDER BY 1), \
                    ARRAY(SELECT i.indisvalid FROM pg_catalog.pg_index i \
                          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
                          WHERE i.indrelid = c.oid ORDER BY ic.relname::text) \
             FROM pg_catalog.pg_partition_tree($1::oid::regclass) t \
             JOIN pg_catalog.pg_class c ON c.oid = t.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_class pc ON pc.oid = t.parentrelid \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace \
             WHERE t.level > 0 ORDER BY t.level, 1, 2",
            &[&oid],
        )
        .await
        .map_err(|e| crate::Error::server("reading the partitions", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let names: Vec<String> = r.get(6);
            let valid: Vec<bool> = r.get(7);
            Partition {
                table: TableName::new(r.get(0), r.get(1)),
                parent: TableName::new(r.get(2), r.get(3)),
                leaf: r.get(4),
                foreign: r.get(5),
                indexes: names.into_iter().zip(valid).collect(),
            }
        })
        .collect())
}

/// The name of index `index`'s part on `partition`: both names joined,
/// cut to 63 bytes with a digest of the whole when longer.
fn partition_index_name(partition: &str, index: &str) -> String {
    let full = format!("{partition}_{index}");
    if full.len() <= 63 {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, full.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cut = 63 - hex.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hex}", &full[..cut])
}

/// A new index `w` on the partitioned table `name` (partitions `tree`),
/// without a lock that blocks writes while it builds (PostgreSQL cannot
/// build one concurrently on a partitioned table): created `ON ONLY` the
/// table and each partitioned partition (invalid, no rows read), built
/// `CONCURRENTLY` on each partition holding rows, then each part attached
/// to its parent's, which makes the table's valid. Every statement may run
/// again: a build interrupted half-way is completed by the next run (an
/// invalid part is dropped and built again).
fn partitioned_index(name: &TableName, w: &IndexFacts, tree: &[Partition]) -> Vec<Step> {
    let unique = if w.unique { "UNIQUE " } else { "" };
    let part_name = |p: &TableName| -> String {
        if p == name {
            w.name.clone()
        } else {
            partition_index_name(&p.name, &w.name)
        }
    };
    let mut create = step(
        name,
        format!(
            "create {}index {} on the partitioned table alone (invalid until its partitions' are attached)",
            unique.to_lowercase(),
            w.name
        ),
        vec![format!(
            "CREATE {unique}INDEX IF NOT EXISTS {} ON ONLY {} {}",
            quote_ident(&w.name),
            name.quoted(),
            w.def
        )],
        "SHARE on the partitioned table alone, brief (no rows are read)",
    );
    let parts: Vec<&Partition> = tree.iter().collect();
    for p in parts.iter().filter(|p| !p.leaf) {
        create.sql.push(format!(
            "CREATE {unique}INDEX IF NOT EXISTS {} ON ONLY {} {}",
            quote_ident(&part_name(&p.table)),
            p.table.quoted(),
            w.def
        ));
    }
    let mut steps = vec![create];
    for p in parts.iter().filter(|p| p.leaf) {
        let index = part_name(&p.table);
        let qualified = TableName::new(p.table.schema_or_public(), &index).quoted();
        match p.indexes.iter().find(|(n, _)| *n == index) {
            Some((_, true)) => continue,
            Some((_, false)) => {
                steps.push(drop_invalid_index(
                    name,
                    format!(
                        "drop invalid index {index} of {} (an interrupted build)",
                        p.table
                    ),
                    &qualified,
                    "SHARE UPDATE EXCLUSIVE on the partition (reads and writes continue)",
                ));
            }
            None => {}
        }
        let mut build = step(
            name,
            format!(
                "build {}index {index} on {} concurrently",
                unique.to_lowercase(),
                p.table
            ),
            vec![format!(
                "CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {}",
                quote_ident(&index),
                p.table.quoted(),
                w.def
            )],
            "SHARE UPDATE EXCLUSIVE on the partition while it builds (reads and writes continue)",
        );
        build.phase = Phase::Concurrently;
        build.cleanup = Some(format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"));
        if w.unique {
            build
                .hazards
                .push("fails if existing rows are not unique".to_owned());
        }
        steps.push(build);
    }
    // Deepest first: a partitioned partition's index is valid once its own
    // partitions' are attached, and only a valid one makes its parent's so.
    let attach: Vec<String> = parts
        .iter()
        .rev()
        .map(|p| {
            format!(
                "ALTER INDEX {} ATTACH PARTITION {}",
                TableName::new(p.parent.schema_or_public(), &part_name(&p.parent)).quoted(),
                TableName::new(p.table.schema_or_public(), &part_name(&p.table)).quoted()
            )
        })
        .collect();
    if !attach.is_empty() {
        steps.push(step(
            name,
            format!("attach the partitions' parts of index {}", w.name),
            attach,
            "SHARE UPDATE EXCLUSIVE on the indexes, brief",
        ));
    }
    steps
}

/// Drops the invalid index `qualified` (left by a failed or killed
/// concurrent build) of `table`'s, concurrently.
fn drop_invalid_index(
    table: &TableName,
    summary: String,
    qualified: &str,
    lock: &'static str,
) -> Step {
    let mut s = step(
        table,
        summary,
        vec![format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}")],
        lock,
    );
    s.phase = Phase::Concurrently;
    s
}

fn step(table: &TableName, summary: String, sql: Vec<String>, lock: &'static str) -> Step {
    Step {
        table: table.clone(),
        summary,
        sql,
        lock,
        rewrites: false,
        hazards: vec![],
        phase: Phase::Transaction,
        cleanup: None,
    }
}

const BRIEF_EXCLUSIVE: &str = "ACCESS EXCLUSIVE, brief (catalog change only)";
/// [`BRIEF_EXCLUSIVE`] on a partitioned table.
const BRIEF_EXCLUSIVE_PARTITIONS: &str =
    "ACCESS EXCLUSIVE on the table and each partition, brief (catalog change only)";

/// A short, stable name for a helper object of column `col`.
fn helper_name(prefix: &str, col: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, col.as_bytes());
    let hex: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("pgbulk_{prefix}_{hex}")
}

/// Whether a default expression may be volatile (so adding a column with it
/// would rewrite the table).
fn maybe_volatile(default: &str) -> bool {
    [
        "nextval(",
        "random(",
        "gen_random_uuid(",
        "clock_timestamp(",
        "timeofday(",
        "uuid_generate",
    ]
    .iter()
    .any(|f| default.contains(f))
}

/// Whether changing `from` to `to` only relaxes a length limit (no rewrite).
pub(crate) fn is_widening(from: &str, to: &str) -> bool {
    let varchar_len = |t: &str| -> Option<Option<u32>> {
        if t == "character varying" {
            return Some(None);
        }
        t.strip_prefix("character varying(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
            .map(Some)
    };
    match (varchar_len(from), varchar_len(to)) {
        (Some(_), None) => to == "text",
        (Some(Some(a)), Some(Some(b))) => b >= a,
        (Some(_), Some(None)) => true,
        _ => false,
    }
}

fn column_sql(col: &ColumnFacts) -> String {
    let mut sql = format!("{} {}", quote_ident(&col.name), col.type_name);
    if let Some(collation) = &col.collation {
        sql.push_str(&format!(" COLLATE {}", quote_ident(collation)));
    }
    if let Some(default) = &col.default {
        sql.push_str(&format!(" DEFAULT {default}"));
    }
    if col.not_null {
        sql.push_str(" NOT NULL");
    }
    sql
}

/// Plans the steps (or the rebuild) from `have` to `want`. On a
/// partitioned table (`tree`: its partitions; its statements reach them)
/// what cannot be done in place there is a rebuild reason too (a new key),
/// and a new index is built partition by partition
/// ([`partitioned_index`]).
fn diff(
    name: &TableName,
    have: &TableFacts,
    want: &TableFacts,
    plan: &mut Plan,
    tree: Option<&[Partition]>,
) {
    let partitioned = tree.is_some();
    let t = name.quoted();
    let brief = if partitioned {
        BRIEF_EXCLUSIVE_PARTITIONS
    } else {
        BRIEF_EXCLUSIVE
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut rebuild = |why: String| reasons.push(why);
    let mut steps = Vec::new();

    // Columns: dropped, then the kept ones must lead the declaration in order.
    let dropped: Vec<&ColumnFacts> = have
        .columns
        .iter()
        .filter(|c| want.column(&c.name).is_none())
        .collect();
    let kept: Vec<&ColumnFacts> = have
        .columns
        .iter()
        .filter(|c| want.column(&c.name).is_some())
        .collect();
    let in_order = kept
        .iter()
        .zip(&want.columns)
        .all(|(h, w)| h.name == w.name);
    if !in_order {
        rebuild("the declared column order differs from the table's (a column moved or was added in the middle)".to_owned());
    }
    for col in &dropped {
        let mut s = step(
            name,
            format!("drop column {}", col.name),
            vec![format!(
                "ALTER TABLE {t} DROP COLUMN {}",
                quote_ident(&col.name)
            )],
            brief,
        );
        s.hazards
            .push(format!("the data in column {} is lost", col.name));
        steps.push(s);
    }
    for w in want.columns.iter().skip(kept.len()) {
        if !in_order {
            break;
        }
        if w.identity.is_some()
            || w.generated.is_some()
            || w.default.as_deref().is_some_and(maybe_volatile)
        {
            rebuild(format!(
                "new column {} is an identity, generated or volatile-default column (adding it rewrites the table)",
                w.name
            ));
            continue;
        }
        let mut s = step(
            name,
            format!("add column {} at the end", w.name),
            vec![format!("ALTER TABLE {t} ADD COLUMN {}", column_sql(w))],
            brief,
        );
        if w.not_null && w.default.is_none() {
            s.hazards
                .push("fails if the table has rows: NOT NULL without a DEFAULT".to_owned());
        }
        steps.push(s);
    }
    for h in &kept {
        let Some(w) = want.column(&h.name) else {
            continue;
        };
        let c = quote_ident(&h.name);
        if h.type_name != w.type_name {
            if is_widening(&h.type_name, &w.type_name) {
                steps.push(step(
                    name,
                    format!(
                        "widen column {} from {} to {}",
                        h.name, h.type_name, w.type_name
                    ),
                    vec![format!(
                        "ALTER TABLE {t} ALTER COLUMN {c} TYPE {}",
                        w.type_name
                    )],
                    brief,
                ));
            } else {
                rebuild(format!(
                    "column {} changes type from {} to {}",
                    h.name, h.type_name, w.type_name
                ));
            }
        }
        if h.identity != w.identity || h.generated != w.generated || h.collation != w.collation {
            rebuild(format!(
                "column {} changes identity, generation or collation",
                h.name
            ));
        }
        if h.default != w.default {
            let serial =
                |d: &Option<String>| d.as_deref().is_some_and(|d| d.contains("<sequence>"));
            if serial(&h.default) || serial(&w.default) {
                rebuild(format!("column {} changes a sequence default", h.name));
            } else {
                let sql = match &w.default {
                    Some(d) => format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {d}"),
                    None => format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
                };
                steps.push(step(
                    name,
                    format!("change the default of {}", h.name),
                    vec![sql],
                    brief,
                ));
            }
        }
        if h.not_null && !w.not_null && !have.key().contains(&h.name) {
            steps.push(step(
                name,
                format!("drop NOT NULL on {}", h.name),
                vec![format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL")],
                brief,
            ));
        }
        if !h.not_null && w.not_null {
            steps.extend(set_not_null(name, &h.name, brief));
        }
    }

    // Primary key.
    match (&have.primary_key, &want.primary_key) {
        (Some((_, a)), Some((_, b))) if a != b => {
            rebuild(format!(
                "the primary key changes from ({}) to ({})",
                a.join(", "),
                b.join(", ")
            ));
        }
        (None, Some((pk_name, _))) if partitioned => {
            rebuild(format!(
                "primary key {pk_name} is added (its index cannot be built concurrently on a partitioned table)"
            ));
        }
        (None, Some((pk_name, cols))) => {
            let cols_sql = cols
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            steps.extend(unique_via_index(
                name,
                pk_name,
                &format!("USING btree ({cols_sql})"),
                "PRIMARY KEY",
            ));
        }
        (Some((pk_name, _)), None) => {
            let mut s = step(
                name,
                "drop the primary key".to_owned(),
                vec![format!(
                    "ALTER TABLE {t} DROP CONSTRAINT {}",
                    quote_ident(pk_name)
                )],
                brief,
            );
            s.hazards
                .push("without a key, loads append instead of upserting".to_owned());
            steps.push(s);
        }
        _ => {}
    }

    // Unique, check and exclusion constraints, by definition.
    for c in have.constraints.iter().filter(|c| {
        !want
            .constraints
            .iter()
            .any(|w| w.kind == c.kind && w.def == c.def)
    }) {
        steps.push(step(
            name,
            format!("drop constraint {} ({})", c.name, c.def),
            vec![format!(
                "ALTER TABLE {t} DROP CONSTRAINT {}",
                quote_ident(&c.name)
            )],
            brief,
        ));
    }
    for c in want.constraints.iter().filter(|w| {
        !have
            .constraints
            .iter()
            .any(|c| c.kind == w.kind && c.def == w.def)
    }) {
        match c.kind.as_str() {
            "c" => {
                let cn = quote_ident(&c.name);
                let mut add = step(
                    name,
                    format!("add check constraint {} NOT VALID", c.name),
                    vec![format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {cn} {} NOT VALID",
                        c.def
                    )],
                    brief,
                );
                add.hazards
                    .push("rows written from now on must satisfy it".to_owned());
                steps.push(add);
                let mut validate = step(
                    name,
                    format!("validate constraint {}", c.name),
                    vec![format!("ALTER TABLE {t} VALIDATE CONSTRAINT {cn}")],
                    "SHARE UPDATE EXCLUSIVE while it scans (reads and writes continue)",
                );
                validate
                    .hazards
                    .push("fails if existing rows violate it".to_owned());
                steps.push(validate);
            }
            "u" if partitioned => rebuild(format!(
                "unique constraint {} ({}) is added (its index cannot be built concurrently on a partitioned table)",
                c.name, c.def
            )),
            "u" if !c.def.contains("DEFERRABLE") => {
                let body = c.def.trim_start_matches("UNIQUE").trim();
                let (nulls, cols) = match body.strip_prefix("NULLS NOT DISTINCT") {
                    Some(cols) => (" NULLS NOT DISTINCT", cols.trim()),
                    None => ("", body),
                };
                steps.extend(unique_via_index(
                    name,
                    &c.name,
                    &format!("USING btree {cols}{nulls}"),
                    "UNIQUE",
                ));
            }
            _ => rebuild(format!(
                "constraint {} ({}) cannot be added in place",
                c.name, c.def
            )),
        }
    }

    // Indexes backing no constraint, by definition; an invalid one (left by
    // a failed or killed concurrent build) matches nothing and is dropped
    // before anything is built.
    for i in have.indexes.iter().filter(|i| !i.valid) {
        if partitioned {
            // An index whose partitions are not all attached yet (an
            // interrupted build): the build below completes it when it is
            // still declared; else it is dropped.
            let declared = want
                .indexes
                .iter()
                .any(|w| w.name == i.name && w.unique == i.unique && w.def == i.def);
            if !declared {
                let iname = TableName::new(name.schema_or_public(), &i.name).quoted();
                steps.insert(
                    0,
                    step(
                        name,
                        format!("drop invalid index {} (an interrupted build)", i.name),
                        vec![format!("DROP INDEX IF EXISTS {iname}")],
                        brief,
                    ),
                );
            }
            continue;
        }
        let iname = TableName::new(name.schema_or_public(), &i.name).quoted();
        steps.insert(
            0,
            drop_invalid_index(
                name,
                format!(
                    "drop invalid index {} (a failed or interrupted build)",
                    i.name
                ),
                &iname,
                "SHARE UPDATE EXCLUSIVE (reads and writes continue)",
            ),
        );
    }
    let have_valid: Vec<&IndexFacts> = have.indexes.iter().filter(|i| i.valid).collect();
    for i in have_valid.iter().filter(|i| {
        !want
            .indexes
            .iter()
            .any(|w| w.unique == i.unique && w.def == i.def)
    }) {
        let iname = TableName::new(name.schema_or_public(), &i.name).quoted();
        // A partitioned table's index cannot be dropped concurrently.
        let mut s = if partitioned {
            step(
                name,
                format!("drop index {} ({})", i.name, i.def),
                vec![format!("DROP INDEX IF EXISTS {iname}")],
                brief,
            )
        } else {
            let mut s = step(
                name,
                format!("drop index {} ({})", i.name, i.def),
                vec![format!("DROP INDEX CONCURRENTLY IF EXISTS {iname}")],
                "SHARE UPDATE EXCLUSIVE (reads and writes continue)",
            );
            s.phase = Phase::Concurrently;
            s
        };
        s.hazards
            .push("queries that used the index get slower".to_owned());
        steps.push(s);
    }
    for w in want.indexes.iter().filter(|w| {
        !have_valid
            .iter()
            .any(|i| i.unique == w.unique && i.def == w.def)
    }) {
        if let Some(tree) = tree {
            match tree.iter().find(|p| p.foreign) {
                // Its parts are attached one by one, and the count never
                // reaches the partitions' with a foreign one.
                Some(f) => rebuild(format!(
                    "index {} is added, and partition {} is a foreign table: an index built partition by \
                     partition would never become valid (a plain CREATE INDEX skips it, but blocks writes \
                     while it builds)",
                    w.name, f.table
                )),
                None => steps.extend(partitioned_index(name, w, tree)),
            }
            continue;
        }
        let iname = TableName::new(name.schema_or_public(), &w.name).quoted();
        let mut s = step(
            name,
            format!(
                "create {}index {} concurrently",
                if w.unique { "unique " } else { "" },
                w.name
            ),
            vec![format!(
                "CREATE {}INDEX CONCURRENTLY {} ON {t} {}",
                if w.unique { "UNIQUE " } else { "" },
                quote_ident(&w.name),
                w.def
            )],
            "SHARE UPDATE EXCLUSIVE while it builds (reads and writes continue)",
        );
        s.phase = Phase::Concurrently;
        s.cleanup = Some(format!("DROP INDEX CONCURRENTLY IF EXISTS {iname}"));
        if w.unique {
            s.hazards
                .push("fails if existing rows are not unique".to_owned());
        }
        steps.push(s);
    }

    // Comments: declared ones are applied; undeclared live ones are kept.
    for w in want.indexes.iter().filter(|w| w.comment.is_some()) {
        let live = have
            .indexes
            .iter()
            .find(|i| i.unique == w.unique && i.def == w.def);
        if live.is_some_and(|i| i.comment == w.comment) {
            continue;
        }
        let index = live.map_or(&w.name, |i| &i.name);
        steps.push(step(
            name,
            format!("set the comment of index {index}"),
            vec![format!(
                "COMMENT ON INDEX {} IS {}",
                TableName::new(name.schema_or_public(), index).quoted(),
                quote_literal(w.comment.as_deref().unwrap_or_default())
            )],
            "SHARE UPDATE EXCLUSIVE, brief",
        ));
    }
    if want.comment.is_some() && want.comment != have.comment {
        steps.push(step(
            name,
            "set the table comment".to_owned(),
            vec![format!(
                "COMMENT ON TABLE {t} IS {}",
                quote_literal(want.comment.as_deref().unwrap_or_default())
            )],
            "SHARE UPDATE EXCLUSIVE, brief",
        ));
    }
    for (col, comment) in &want.column_comments {
        if have.column_comments.get(col) != Some(comment) {
            steps.push(step(
                name,
                format!("set the comment of column {col}"),
                vec![format!(
                    "COMMENT ON COLUMN {t}.{} IS {}",
                    quote_ident(col),
                    quote_literal(comment)
                )],
                "SHARE UPDATE EXCLUSIVE, brief",
            ));
        }
    }
    if reasons.is_empty() {
        plan.steps.extend(steps);
    } else {
        // The rebuild produces the declared shape; no in-place step is needed.
        plan.rebuilds
            .extend(reasons.into_iter().map(|why| (name.clone(), why)));
    }
}

/// NOT NULL without a long lock: a `NOT VALID` check, validated while reads
/// and writes continue, then `SET NOT NULL` (which uses the check instead of
/// scanning) and the check dropped.
fn set_not_null(name: &TableName, column: &str, brief: &'static str) -> Vec<Step> {
    let t = name.quoted();
    let c = quote_ident(column);
    let check = quote_ident(&helper_name("nn", column));
    let mut add = step(
        name,
        format!("add a NOT VALID check that {column} IS NOT NULL"),
        vec![format!(
            "ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID"
        )],
        brief,
    );
    add.hazards
        .push(format!("rows written from now on must have {column}"));
    let mut validate = step(
        name,
        format!("validate that {column} has no NULLs"),
        vec![format!("ALTER TABLE {t} VALIDATE CONSTRAINT {check}")],
        "SHARE UPDATE EXCLUSIVE while it scans (reads and writes continue)",
    );
    validate
        .hazards
        .push(format!("fails if a row has NULL in {column}"));
    let set = step(
        name,
        format!("set NOT NULL on {column} (proved by the check, no scan)"),
        vec![
            format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"),
            format!("ALTER TABLE {t} DROP CONSTRAINT {check}"),
        ],
        brief,
    );
    vec![add, validate, set]
}

/// A unique or primary-key constraint on an index built concurrently.
fn unique_via_index(name: &TableName, constraint: &str, index_def: &str, kind: &str) -> Vec<Step> {
    let t = name.quoted();
    let index = quote_ident(constraint);
    let qualified_index = TableName::new(name.schema_or_public(), constraint).quoted();
    let mut build = step(
        name,
        format!("build unique index {constraint} concurrently"),
        vec![format!(
            "CREATE UNIQUE INDEX CONCURRENTLY {index} ON {t} {index_def}"
        )],
        "SHARE UPDATE EXCLUSIVE while it builds (reads and writes continue)",
    );
    build.phase = Phase::Concurrently;
    build.cleanup = Some(format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {qualified_index}"
    ));
    build
        .hazards
        .push("fails if existing rows are not unique".to_owned());
    let attach = step(
        name,
        format!("add {kind} constraint {constraint} using the index"),
        vec![format!(
            "ALTER TABLE {t} ADD CONSTRAINT {index} {kind} USING INDEX {index}"
        )],
        BRIEF_EXCLUSIVE,
    );
    vec![build, attach]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_rules() {
        assert!(is_widening(
            "character varying(10)",
            "character varying(20)"
        ));
        assert!(is_widening("character varying(10)", "text"));
        assert!(is_widening("character varying(10)", "character varying"));
        assert!(!is_widening(
            "character varying(20)",
            "character varying(10)"
        ));
        assert!(!is_widening("integer", "bigint"));
        assert!(!is_widening("text", "character varying(10)"));
    }

    #[test]
    fn partition_index_names_fit_and_stay_distinct() {
        assert_eq!(
            partition_index_name("ev_2024", "ev_note"),
            "ev_2024_ev_note"
        );
        let long = "é".repeat(40);
        let (a, b) = (
            partition_index_name(&long, "one"),
            partition_index_name(&long, "two"),
        );
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, partition_index_name(&long, "one"));
    }

    #[test]
    fn helper_names_are_short_and_stable() {
        let long = "x".repeat(63);
        assert_eq!(helper_name("nn", &long), helper_name("nn", &long));
        assert!(helper_name("nn", &long).len() < 30);
    }
}
