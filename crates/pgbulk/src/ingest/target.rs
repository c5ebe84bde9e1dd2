//! The declared tables as the engine writes them: columns with their
//! encoders (adjusted to the session's time zone), keys, and how row table
//! names find them.

use std::collections::HashMap;

use tokio_postgres::{Client, Transaction};

use super::{Options, Upsert};
use crate::catalog::{self, Column};
use crate::codec::{ColumnType, TypeKind};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::TableName;
use crate::session::InputStyle;

/// A declared table as the engine writes it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The declared table.
    pub(super) name: TableName,
    /// Where rows go: the table itself, or the new table replacing it.
    pub(super) write: TableName,
    /// The oid of `write`.
    pub(super) oid: u32,
    /// Written columns (generated ones left out), types adjusted to the
    /// session's time zone.
    pub(super) columns: Vec<Column>,
    /// Positions in `columns` of the key rows are matched on.
    pub(super) key: Vec<usize>,
    /// Whether `key` is the primary key (a unique index `ON CONFLICT` can
    /// use), not other columns named for the upsert.
    pub(super) key_is_primary: bool,
    /// Whether `key` was named for the upsert (so the input must hold
    /// it), not taken from the primary key.
    pub(super) key_named: bool,
    /// Whether `write` is a partitioned table (its rows are in its
    /// partitions: `RETURNING` cannot read their system columns before
    /// PostgreSQL 15, and row counts are the partitions').
    pub(super) partitioned: bool,
}

impl Target {
    /// What an `INSERT` into the table says after its column list: a
    /// `GENERATED ALWAYS` identity column takes the rows' values, as `COPY`
    /// and the append path give them.
    pub(super) fn overriding(&self) -> &'static str {
        if self.columns.iter().any(|c| c.always_identity) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        }
    }

    /// Deletes every row of the table written (the first step of a
    /// replace), after refusing when another table's foreign key would
    /// carry the delete over to its rows (`ON DELETE CASCADE`, `SET NULL`,
    /// `SET DEFAULT`): re-inserting the same keys does not bring those
    /// back. Returns the rows deleted.
    pub(super) async fn delete_all(&self, tx: &Transaction<'_>) -> Result<u64> {
        let cascade = tx
            .query_opt(
                "SELECT c.conrelid::regclass::text, c.confdeltype::text, \
                        (SELECT string_agg(a.attname, ', ' ORDER BY k.i) \
                         FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, i) \
                         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) \
                 FROM pg_catalog.pg_constraint c \
                 WHERE c.contype = 'f' AND c.confrelid = $1 AND c.conrelid <> $1 \
                   AND c.confdeltype IN ('c', 'n', 'd') \
                 ORDER BY 1, c.conname LIMIT 1",
                &[&self.oid],
            )
            .await
            .map_err(|e| Error::server(&format!("reading the foreign keys to {}", self.name), e))?;
        if let Some(row) = cascade {
            let (child, action, columns): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            let (clause, effect) = match action.as_str() {
                "c" => (
                    "CASCADE",
                    format!("delete the rows of {child} that reference them"),
                ),
                "n" => ("SET NULL", format!("set {columns} of {child} to NULL")),
                _ => (
                    "SET DEFAULT",
                    format!("set {columns} of {child} to their default"),
                ),
            };
            return Err(Error::config(format!(
                "{} is referenced by {child} ({columns}) ON DELETE {clause}: replace deletes every row of {} first, \
                 which would {effect}, and loading the same keys again does not undo that; \
                 --mode upsert keeps them, --mode replace-atomic swaps in a new table and keeps the reference \
                 (failing if a referenced key is missing from the input)",
                self.name, self.name
            )));
        }
        tx.execute(&format!("DELETE FROM {}", self.write.quoted()), &[])
            .await
            .map_err(|e| Error::server("DELETE", e))
    }

    pub(super) fn needs_cast(&self) -> bool {
        self.columns.iter().any(|c| c.ty.needs_cast())
    }

    /// The target restricted to `names`, in that order (the columns a text
    /// source fills). An upsert needs every key column; when `replacing`
    /// (the rows go into an emptied or new table) a source without some
    /// column of the primary key (not a key asked for) appends its rows
    /// instead, the missing columns taking their defaults (a serial key
    /// numbers them).
    pub(super) fn project(&self, names: &[String], replacing: bool) -> Result<Target> {
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let column = self
                .columns
                .iter()
                .find(|c| c.name == *name)
                .ok_or_else(|| {
                    Error::config(format!("table {} has no column \"{name}\"", self.name))
                })?;
            columns.push(column.clone());
        }
        let mut key = Vec::with_capacity(self.key.len());
        for &k in &self.key {
            let name = &self.columns[k].name;
            match columns.iter().position(|c| c.name == *name) {
                Some(at) => key.push(at),
                None if replacing && !self.key_named => {
                    key.clear();
                    break;
                }
                None => {
                    return Err(Error::config(format!(
                        "the input has no value for key column \"{name}\" of {}: an upsert matches rows by the whole key \
                         (--mode append, replace or replace-atomic insert the rows with the column's default)",
                        self.name
                    )));
                }
            }
        }
        Ok(Target {
            columns,
            key,
            ..self.clone()
        })
    }
}

/// Adjusts the kinds whose text the session's settings read: a fixed
/// session offset is applied by the encoder. In any other zone a
/// `timestamptz` value without an offset of its own is left to the server
/// (one with an offset does not depend on the zone), and `timetz` is sent
/// as text for the server to interpret. Under `IntervalStyle`
/// `sql_standard` an interval led by a minus is left to the server. With
/// `array_nulls` off an unquoted `NULL` in an array is the string, so
/// arrays are sent as text for the server to read. In a database of
/// another encoding than UTF-8, values are checked for characters it lacks.
pub(super) fn for_session(ty: &ColumnType, input: InputStyle) -> ColumnType {
    let kind = match (&ty.kind, input.utc_offset) {
        (TypeKind::Array(_), _) if !input.array_nulls => TypeKind::Other,
        (TypeKind::TimestampTz(_), offset) => TypeKind::TimestampTz(offset),
        (TypeKind::TimeTz(_), Some(o)) => TypeKind::TimeTz(o),
        (TypeKind::TimeTz(_), None) => TypeKind::Other,
        (TypeKind::Interval { .. }, _) => TypeKind::Interval {
            sql_standard: input.interval_sql_standard,
        },
        (TypeKind::Array(elem), _) => TypeKind::Array(Box::new(for_session(elem, input))),
        (other, _) => other.clone(),
    };
    ColumnType {
        kind,
        charset: input.charset,
        ..ty.clone()
    }
}

/// Reads the targets: `(declared name, table written)` pairs.
pub(super) async fn read_targets(
    client: &Client,
    names: &[(TableName, TableName)],
    input: InputStyle,
) -> Result<Vec<Target>> {
    let mut targets = Vec::with_capacity(names.len());
    for (name, write) in names {
        let table = catalog::table(client, write.schema_or_public(), &write.name)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Server, format!("table {write} disappeared")))?;
        let columns: Vec<Column> = table
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| Column {
                ty: for_session(&c.ty, input),
                ..c.clone()
            })
            .collect();
        let key = table
            .primary_key
            .iter()
            .filter_map(|k| columns.iter().position(|c| c.name == *k))
            .collect();
        targets.push(Target {
            name: name.clone(),
            write: write.clone(),
            oid: table.oid,
            columns,
            key,
            key_is_primary: true,
            key_named: false,
            partitioned: table.partitioned,
        });
    }
    Ok(targets)
}

/// Applies the options' keys: `Upsert::Append` drops every key, and a key
/// given for a table replaces its primary key.
pub(super) fn keyed(mut targets: Vec<Target>, options: &Options) -> Result<Vec<Target>> {
    for t in &mut targets {
        if options.upsert == Upsert::Append {
            t.key.clear();
        } else if let Some(names) = options.keys.get(&t.name.to_string()) {
            let key: Vec<usize> = names
                .iter()
                .map(|n| {
                    t.columns.iter().position(|c| c.name == *n).ok_or_else(|| {
                        Error::config(format!("key column \"{n}\" is not a column of {}", t.name))
                    })
                })
                .collect::<Result<_>>()?;
            // The primary key's columns named, in any order, are still it
            // (kept in its index's order).
            let mut sorted = [t.key.clone(), key.clone()];
            sorted.iter_mut().for_each(|k| k.sort_unstable());
            t.key_named = true;
            if !(t.key_is_primary && !t.key.is_empty() && sorted[0] == sorted[1]) {
                t.key_is_primary = false;
                t.key = key;
            }
        }
    }
    Ok(targets)
}

/// The declared tables as written, and how row table names find them.
#[derive(Debug, Clone)]
pub(super) struct Targets {
    pub(super) list: Vec<Target>,
    pub(super) lookup: HashMap<String, usize>,
}

/// The position of the declared table `table` names (through
/// [`name_lookup`]'s map), or an error saying it is not declared.
pub(super) fn declared_index(lookup: &HashMap<String, usize>, table: &str) -> Result<usize> {
    lookup
        .get(table)
        .copied()
        .ok_or_else(|| Error::config(format!("table {table} is not declared")))
}

/// Row table names to targets: `schema.table` always, `table` when only
/// one declared table has that name.
pub(super) fn name_lookup(targets: &[Target]) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut bare: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        map.insert(t.name.to_string(), i);
        bare.entry(t.name.name.as_str()).or_default().push(i);
    }
    for (name, ids) in bare {
        if let [only] = ids.as_slice() {
            map.entry(name.to_owned()).or_insert(*only);
        }
    }
    map
}
