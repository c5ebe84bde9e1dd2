//! The range of keys a stage holds, so a merge reads only the part of its
//! table those keys can match.
//!
//! A merge's hash join reads and hashes the whole table for every batch
//! (5 M rows, 378 MB and ~4 s of a 1 M-row batch's merge measured here).
//! Every table row a staged row matches has key values between the stage's
//! smallest and largest, so `t.k BETWEEN min AND max` on each key column
//! changes no match and lets the scan drop the rest before hashing: on a
//! file in key order, each batch then hashes its fifth of the table.

use bytes::BytesMut;
use tokio_postgres::Transaction;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::stage::Layout;
use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// A value in the server's binary form, as read and sent back unchanged:
/// the bounds travel exactly as the server computed them, whatever the
/// session's output settings.
#[derive(Debug, Clone)]
pub(super) struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl ToSql for Raw {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The smallest and largest staged value of one key column.
#[derive(Debug, Clone)]
pub(super) struct Bounds {
    /// The column's position in the target.
    pub(super) column: usize,
    pub(super) min: Raw,
    pub(super) max: Raw,
}

/// Whether `min` and `max` of this base type exist and order values as the
/// key's btree index does: integers, `numeric`, floats, the text types,
/// dates and times. Not `uuid` or `bool` (no `min`), nor types sent as
/// text.
fn has_min_max(oid: u32) -> bool {
    matches!(
        oid,
        20 | 21 | 23 | 700 | 701 | 1700 | 25 | 1042 | 1043 | 1082 | 1083 | 1114 | 1184
    )
}

/// The bounds of the key columns of `stage` a range can restrict: those
/// whose staged values are not cast by the server, of a type with
/// `min`/`max`, and (text) compared under the table column's collation.
/// Columns whose values are all NULL are left out.
pub(super) async fn key_bounds(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
) -> Result<Vec<Bounds>> {
    let target = layout.target;
    let candidates: Vec<usize> = target
        .key
        .iter()
        .copied()
        .filter(|&k| !layout.cast_by_server(k) && has_min_max(target.columns[k].ty.oid))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // The stage's columns take their types' collations; the table's may
    // name another, under which `min` would pick a different value.
    let names: Vec<&str> = candidates
        .iter()
        .map(|&k| target.columns[k].name.as_str())
        .collect();
    let same: Vec<String> = tx
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_attribute b ON b.attrelid = $2::text::regclass AND b.attname = a.attname \
             WHERE a.attrelid = $1 AND a.attname = ANY($3) AND a.attcollation = b.attcollation",
            &[&target.oid, &stage, &names],
        )
        .await
        .map_err(|e| Error::server("reading the key columns' collations", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let columns: Vec<usize> = candidates
        .into_iter()
        .filter(|&k| same.contains(&target.columns[k].name))
        .collect();
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let aggregates: Vec<String> = columns
        .iter()
        .map(|&k| {
            let c = quote_ident(&target.columns[k].name);
            format!("min({c}), max({c})")
        })
        .collect();
    let row = tx
        .query_one(
            &format!("SELECT {} FROM {stage}", aggregates.join(", ")),
            &[],
        )
        .await
        .map_err(|e| Error::server("reading the staged keys' range", e))?;
    let mut bounds = Vec::with_capacity(columns.len());
    for (i, &column) in columns.iter().enumerate() {
        let read = |at: usize| {
            row.try_get::<_, Option<Raw>>(at)
                .map_err(|e| Error::server("reading the staged keys' range", e))
        };
        if let (Some(min), Some(max)) = (read(2 * i)?, read(2 * i + 1)?) {
            bounds.push(Bounds { column, min, max });
        }
    }
    Ok(bounds)
}

/// `AND t.c BETWEEN $n AND $n+1` for each of `bounds`, numbering from
/// `$first`; the parameters are [`parameters`]'s.
pub(super) fn restriction(layout: Layout<'_>, bounds: &[Bounds], first: usize) -> String {
    bounds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                " AND t.{} BETWEEN ${} AND ${}",
                quote_ident(&layout.target.columns[b.column].name),
                first + 2 * i,
                first + 2 * i + 1
            )
        })
        .collect()
}

/// The values of [`restriction`]'s parameters.
pub(super) fn parameters(bounds: &[Bounds]) -> Vec<&(dyn ToSql + Sync)> {
    bounds
        .iter()
        .flat_map(|b| [&b.min as &(dyn ToSql + Sync), &b.max])
        .collect()
}
