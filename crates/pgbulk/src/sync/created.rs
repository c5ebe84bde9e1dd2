//! What a destination created from the source's definition gets besides
//! its columns and primary key ([`super::create_ddl`]): the source's
//! validated `CHECK` constraints, and an index for each of the source's
//! other valid indexes, built once the rows are in (after the first batch;
//! with `jobs`, once every range is in: `ranges::Ledger::finish`).
//!
//! The indexes are plain ones, also where the source's is unique or backs
//! a unique or exclusion constraint: the destination keeps rows the source
//! deleted (unless `--delete-missing`), and a batch writes the rows that
//! changed in an order of its own, so a value the source moved from one
//! row to another could be refused though the source allowed it. Checks
//! hold row by row, as at the source. Each is tried first on a temporary
//! copy of the table in the destination (rolled back): one the destination
//! cannot build (a function, an operator class or an extension it lacks) is
//! left out, and a note says which and why.

use tokio_postgres::Client;

use super::types::NeededType;
use crate::catalog::TableFacts;
use crate::error::{Error, Result};
use crate::schema::{TableName, quote_ident};

/// The `CREATE TABLE` and `CREATE INDEX` statements of a new destination,
/// and what the user should know about them.
#[derive(Debug, Default)]
pub(super) struct Creation {
    /// The `CREATE TABLE`, checks included.
    pub(super) table: String,
    /// One `CREATE INDEX` per index, each ending with `;`.
    pub(super) indexes: Vec<String>,
    pub(super) notes: Vec<String>,
}

impl Creation {
    /// The table's and the indexes' statements.
    pub(super) fn ddl(&self) -> String {
        std::iter::once(self.table.as_str())
            .chain(self.indexes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }
}

/// One of the source's `CHECK` constraints or indexes, as the destination
/// would get it.
#[derive(Debug)]
struct Extra {
    /// `CONSTRAINT "name" CHECK (...)`, or the index's definition from
    /// `USING` on.
    clause: String,
    /// For the notes: `check constraint x`, `index y`.
    label: String,
    /// For an index unique or exclusive in the source (plain in the
    /// destination): `x_key (UNIQUE (a))`, `unique index y`.
    weakened: Option<String>,
    is_index: bool,
}

/// The statements that create `dest` as `source` (a table of the source
/// session, `source_facts` its facts) is defined, with the checks and
/// indexes the destination can build; `types` are the enums and domains it
/// will create first.
pub(super) async fn creation(
    source: &mut Client,
    dest: &mut Client,
    dest_name: &TableName,
    source_facts: &TableFacts,
    types: &[NeededType],
) -> Result<Creation> {
    let lines = super::columns::table_lines(source_facts);
    let (extras, mut notes) = if source_facts.oid == 0 {
        (Vec::new(), Vec::new())
    } else {
        read_extras(source, source_facts.oid).await?
    };
    let (extras, left_out) = buildable(dest, &lines, extras, types).await?;
    notes.extend(left_out);
    let mut lines = lines;
    let mut indexes = Vec::new();
    let mut weakened = Vec::new();
    for extra in &extras {
        if extra.is_index {
            indexes.push(format!(
                "CREATE INDEX ON {} {};",
                dest_name.quoted(),
                extra.clause
            ));
        } else {
            lines.push(format!("    {}", extra.clause));
        }
        weakened.extend(extra.weakened.as_deref());
    }
    if !weakened.is_empty() {
        notes.push(format!(
            "{dest_name} has plain indexes for the source's {}: rows the source deletes stay here (unless --delete-missing) and a batch writes its rows in an order of its own, so unique ones could refuse rows the source allowed",
            weakened.join(", ")
        ));
    }
    let table = format!(
        "CREATE TABLE {} (\n{}\n);",
        dest_name.quoted(),
        lines.join(",\n")
    );
    Ok(Creation {
        table,
        indexes,
        notes,
    })
}

/// The source table's validated `CHECK` constraints and its valid indexes
/// besides the primary key's, read with only `pg_catalog` on the search
/// path (so every other schema's functions and types are qualified), and
/// notes naming the checks left out.
async fn read_extras(source: &mut Client, oid: u32) -> Result<(Vec<Extra>, Vec<String>)> {
    let read = |e| Error::server("reading the source's constraints and indexes", e);
    let tx = source.transaction().await.map_err(read)?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .await
        .map_err(read)?;
    let checks = tx
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid), convalidated FROM pg_constraint \
             WHERE conrelid = $1 AND contype = 'c' ORDER BY conname",
            &[&oid],
        )
        .await
        .map_err(read)?;
    let indexes = tx
        .query(
            "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid), i.indisunique, \
                    c.contype::text, c.conname::text, pg_get_constraintdef(c.oid) \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid \
                  AND c.contype IN ('u', 'x') \
             WHERE i.indrelid = $1 AND NOT i.indisprimary AND i.indisvalid \
             ORDER BY ic.relname",
            &[&oid],
        )
        .await
        .map_err(read)?;
    tx.commit().await.map_err(read)?;
    let mut extras = Vec::new();
    let mut notes = Vec::new();
    for r in &checks {
        let name: String = r.get(0);
        if !r.get::<_, bool>(2) {
            notes.push(format!(
                "the source's check constraint {name} was left out: the source has rows it did not check (NOT VALID)"
            ));
            continue;
        }
        extras.push(Extra {
            clause: format!(
                "CONSTRAINT {} {}",
                quote_ident(&name),
                r.get::<_, String>(1)
            ),
            label: format!("check constraint {name}"),
            weakened: None,
            is_index: false,
        });
    }
    for r in &indexes {
        let name: String = r.get(0);
        let unique: bool = r.get(2);
        let constraint = match (r.get::<_, Option<String>>(4), r.get::<_, Option<String>>(5)) {
            (Some(con), Some(def)) => Some(format!("{con} ({def})")),
            _ => None,
        };
        let weakened = match constraint {
            Some(c) => Some(c),
            None if unique => Some(format!("unique index {name}")),
            None => None,
        };
        extras.push(Extra {
            clause: crate::catalog::facts::index_body(&r.get::<_, String>(1)),
            label: format!("index {name}"),
            weakened,
            is_index: true,
        });
    }
    Ok((extras, notes))
}

/// Splits `extras` into those the destination builds on a temporary table
/// of columns `lines` (after creating `types`, all rolled back) and notes
/// naming the others with the server's reason. When the temporary table
/// itself cannot be made, every extra is kept: the real `CREATE TABLE`
/// then fails with the server's error.
async fn buildable(
    dest: &mut Client,
    lines: &[String],
    extras: Vec<Extra>,
    types: &[NeededType],
) -> Result<(Vec<Extra>, Vec<String>)> {
    if extras.is_empty() {
        return Ok((extras, Vec::new()));
    }
    let probe = |e| Error::server("trying the source's constraints and indexes", e);
    let tx = dest.transaction().await.map_err(probe)?;
    let table = "pg_temp.pgbulk_created_probe";
    let setup: String = types
        .iter()
        .map(|t| format!("{}\n", t.ddl))
        .chain(std::iter::once(format!(
            "CREATE TEMP TABLE pgbulk_created_probe (\n{}\n)",
            lines.join(",\n")
        )))
        .collect();
    if tx.batch_execute(&setup).await.is_err() {
        tx.rollback().await.map_err(probe)?;
        return Ok((extras, Vec::new()));
    }
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for extra in extras {
        let statement = if extra.is_index {
            format!("CREATE INDEX ON {table} {}", extra.clause)
        } else {
            format!("ALTER TABLE {table} ADD {}", extra.clause)
        };
        tx.batch_execute("SAVEPOINT pgbulk_probe")
            .await
            .map_err(probe)?;
        match tx.batch_execute(&statement).await {
            Ok(()) => kept.push(extra),
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT pgbulk_probe")
                    .await
                    .map_err(probe)?;
                let reason = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |db| db.message().to_owned());
                notes.push(format!(
                    "the source's {} was left out: the destination cannot build it ({reason})",
                    extra.label
                ));
            }
        }
    }
    tx.rollback().await.map_err(probe)?;
    Ok((kept, notes))
}
