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
//! The primary key's uniqueness is the client's to guarantee (it checks a
//! key copied straight in for repeats); if a repeat still got in, building
//! the index fails the batch, which rolls back whole.

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
    }
    Ok(deferred)
}

impl Deferred {
    /// Whether no index was dropped.
    pub(super) fn is_empty(&self) -> bool {
        self.build.is_empty()
    }

    /// Builds the deferred indexes (in the same transaction, before
    /// anything merges into the tables).
    /// A key that repeats fails it with the server's unique violation,
    /// naming the table.
    pub(super) async fn build(self, tx: &Transaction<'_>, batch: usize) -> Result<()> {
        for (table, build) in self.build {
            tx.batch_execute(&build.join(";\n")).await.map_err(|e| {
                Error::in_context(
                    Error::server("CREATE INDEX", e),
                    &format!("batch {batch}, table {table}: building its indexes"),
                )
                .in_table(&table)
            })?;
        }
        Ok(())
    }
}
