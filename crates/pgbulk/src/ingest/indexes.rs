//! Indexes of a table created in the batch's own transaction, built after
//! its rows are in rather than maintained row by row.
//!
//! Nobody else can see such a table before the transaction commits, so its
//! primary key and plain indexes can be dropped before the COPY and created
//! again after it: one sort per index instead of an index insertion per
//! row. Unique constraints other than the primary key, exclusion
//! constraints and indexes in a tablespace of their own are left in place
//! (a row they refuse is refused during the COPY, where it can be named);
//! so is every index of a table another table's foreign key references.
//!
//! Rows of a table keyed by its primary key are all copied straight in
//! when nothing else checks them or reacts to them
//! ([`Deferred::keys_free`]), their keys unchecked: when building the key
//! fails on a repeat, rows whose key a later row of the batch repeats are
//! removed ([`remove_repeats`], as a merge keeps the last) and the key is
//! built again. Other tables take rows straight in only until a key
//! repeats (see the stage's `Pending::seen`).

use tokio_postgres::Transaction;
use tracing::debug;

use super::target::Target;
use crate::error::{Error, Result};
use crate::schema::{TableName, quote_ident};

/// Indexes dropped from freshly created tables, to be built again.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// Per table (its declared name), the statements that create them
    /// again, in order.
    build: Vec<(TableName, Vec<String>)>,
    /// Oids of the tables whose primary key was dropped and that have no
    /// other unique index, no constraint but NOT NULL, no trigger (foreign
    /// keys have theirs) and no rule: a row whose key a later one repeats
    /// may be inserted and deleted again with no one the wiser.
    keys_free: Vec<u32>,
}

/// Drops the primary key and plain indexes of each target in `fresh` (oids
/// of plain tables this transaction created) that no foreign key
/// references.
pub(super) async fn defer(
    tx: &Transaction<'_>,
    targets: &[Target],
    fresh: &[u32],
) -> Result<Deferred> {
    let mut deferred = Deferred::default();
    if fresh.is_empty() {
        return Ok(deferred);
    }
    let rows = tx
        .query(
            "SELECT i.indrelid, i.indrelid::regclass::text, i.indexrelid::regclass::text, c.conname, \
                    pg_catalog.pg_get_constraintdef(c.oid), \
                    pg_catalog.pg_get_indexdef(i.indexrelid) \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid \
             LEFT JOIN pg_catalog.pg_constraint c \
                    ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid \
             WHERE i.indrelid = ANY($1) AND x.reltablespace = 0 \
               AND (c.contype = 'p' OR (c.oid IS NULL AND NOT i.indisunique)) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
                               WHERE f.confrelid = i.indrelid) \
             ORDER BY i.indrelid, i.indexrelid",
            &[&fresh],
        )
        .await
        .map_err(|e| Error::server("reading the indexes of the new tables", e))?;
    let mut drop = Vec::with_capacity(rows.len());
    for row in &rows {
        let oid: u32 = row.get(0);
        let table: String = row.get(1);
        let index: String = row.get(2);
        let constraint: Option<String> = row.get(3);
        let definition: Option<String> = row.get(4);
        let index_definition: String = row.get(5);
        let Some(target) = targets.iter().find(|t| t.oid == oid) else {
            continue;
        };
        let build = match deferred.build.last_mut() {
            Some((name, build)) if *name == target.name => build,
            _ => {
                deferred.build.push((target.name.clone(), Vec::new()));
                &mut deferred.build.last_mut().expect("just pushed").1
            }
        };
        match (constraint, definition) {
            (Some(name), Some(definition)) => {
                let name = quote_ident(&name);
                drop.push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
                build.push(format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
                ));
            }
            _ => {
                drop.push(format!("DROP INDEX {index}"));
                build.push(index_definition);
            }
        }
    }
    if !drop.is_empty() {
        debug!(
            indexes = drop.len(),
            "new tables: indexes built after the rows are in"
        );
        tx.batch_execute(&drop.join(";\n"))
            .await
            .map_err(|e| Error::server("deferring the indexes of the new tables", e))?;
        let dropped_keys: Vec<u32> = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(3).is_some())
            .map(|r| r.get(0))
            .collect();
        deferred.keys_free = tx
            .query(
                "SELECT c.oid FROM pg_catalog.pg_class c \
                 WHERE c.oid = ANY($1) AND NOT c.relhastriggers AND NOT c.relhasrules \
                   AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k \
                                   WHERE k.conrelid = c.oid AND k.contype NOT IN ('p', 'n')) \
                   AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i \
                                   WHERE i.indrelid = c.oid AND i.indisunique)",
                &[&dropped_keys],
            )
            .await
            .map_err(|e| Error::server("reading the constraints of the new tables", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    Ok(deferred)
}

/// Deletes from `target` (a table created in this transaction, rows copied
/// straight in, its primary key `target.key` not built yet) every row whose
/// key a later row repeats, keeping the last row per key as a merge does.
/// Such a table is only appended to, by COPY, which skips the free space
/// map for a table created in its transaction: `ctid` order is arrival
/// order. Returns the rows deleted.
pub(super) async fn remove_repeats(tx: &Transaction<'_>, target: &Target) -> Result<u64> {
    let table = target.write.quoted();
    let key = target
        .key
        .iter()
        .map(|&k| quote_ident(&target.columns[k].name))
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute(
        &format!(
            "DELETE FROM {table} WHERE ctid = ANY (ARRAY( \
                SELECT r FROM (SELECT ctid AS r, row_number() OVER (PARTITION BY {key} ORDER BY ctid DESC) AS n \
                               FROM {table}) s \
                WHERE n > 1))"
        ),
        &[],
    )
    .await
    .map_err(|e| {
        Error::in_context(
            Error::server("DELETE", e),
            &format!("table {}: removing rows whose key a later row repeats", target.name),
        )
        .in_table(&target.name)
    })
}

impl Deferred {
    /// Whether no index was dropped.
    pub(super) fn is_empty(&self) -> bool {
        self.build.is_empty()
    }

    /// Tables whose primary key is built after the rows are in and is the
    /// only thing that checks their rows against each other or against
    /// other tables (see the module's description).
    pub(super) fn keys_free(&self) -> &[u32] {
        &self.keys_free
    }

    /// Builds the deferred indexes (in the same transaction, before
    /// anything merges into the tables).
    /// A key that repeats fails it with the server's unique violation,
    /// naming the table.
    pub(super) async fn build(&self, tx: &Transaction<'_>, batch: usize) -> Result<()> {
        for (table, build) in &self.build {
            tx.batch_execute(&build.join(";\n")).await.map_err(|e| {
                Error::in_context(
                    Error::server("CREATE INDEX", e),
                    &format!("batch {batch}, table {table}: building its indexes"),
                )
                .in_table(table)
            })?;
        }
        Ok(())
    }
}
