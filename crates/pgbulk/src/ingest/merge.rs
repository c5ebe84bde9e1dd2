//! The statements that merge a staged batch into its table.

use tokio_postgres::Transaction;

use super::OnDuplicate;
use super::target::Target;
use crate::catalog::Column;
use crate::codec::{ColumnType, TypeKind};
use crate::error::{Error, Result};
use crate::schema::quote_ident;

pub(super) fn column_list(target: &Target) -> String {
    target
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The staged columns, cast to their real types where they travel as text.
pub(super) fn cast_list(target: &Target, prefix: &str) -> String {
    target
        .columns
        .iter()
        .map(|c| {
            let col = format!("{prefix}{}", quote_ident(&c.name));
            if c.ty.needs_cast() {
                format!("{col}::{}", c.ty.name)
            } else {
                col
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether values of this type compare with `IS DISTINCT FROM` directly
/// (`json` and types sent as text have no guaranteed equality operator, so
/// they compare as text).
pub(super) fn compares_natively(ty: &ColumnType) -> bool {
    match &ty.kind {
        TypeKind::Json | TypeKind::Other => false,
        TypeKind::Array(elem) => compares_natively(elem),
        _ => true,
    }
}

/// Rows inserted and updated in `oid` by this transaction so far.
pub(super) async fn xact_stats(tx: &Transaction<'_>, oid: u32) -> Result<(u64, u64)> {
    let row = tx
        .query_one(
            "SELECT pg_catalog.pg_stat_get_xact_tuples_inserted($1), pg_catalog.pg_stat_get_xact_tuples_updated($1)",
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading row counts", e))?;
    Ok((
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
    ))
}

/// The columns outside the primary key.
pub(super) fn non_key_columns(target: &Target) -> Vec<&Column> {
    target
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !target.key.contains(i))
        .map(|(_, c)| c)
        .collect()
}

/// `expr` of each column, as text where its type has no equality operator,
/// joined for a row comparison.
pub(super) fn comparable_list(columns: &[&Column], expr: impl Fn(&Column) -> String) -> String {
    columns
        .iter()
        .map(|c| {
            let v = expr(c);
            if compares_natively(&c.ty) {
                v
            } else {
                format!("({v})::text")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The staged rows, one per key: the last (or first) in arrival order when
/// the batch repeats a key (sorted only then). A staging table is only
/// appended to, so `ctid` order is arrival order.
pub(super) fn merge_source(
    target: &Target,
    stage: &str,
    duplicates: Option<OnDuplicate>,
) -> String {
    match duplicates {
        Some(which) => {
            let key = key_list(target);
            let order = if which == OnDuplicate::First {
                "ASC"
            } else {
                "DESC"
            };
            format!("(SELECT DISTINCT ON ({key}) * FROM {stage} ORDER BY {key}, ctid {order}) s")
        }
        None => format!("{stage} s"),
    }
}

/// Rows of the staged batch that repeat the key of another, and one such
/// key in its text form.
pub(super) async fn repeats(
    tx: &Transaction<'_>,
    target: &Target,
    stage: &str,
) -> Result<(u64, Option<String>)> {
    let key = key_list(target);
    let row = tx
        .query_one(
            &format!(
                "SELECT COALESCE(sum(n - 1), 0)::bigint, \
                 (pg_catalog.array_agg(k) FILTER (WHERE n > 1))[1] \
                 FROM (SELECT count(*) AS n, ROW({key})::text AS k FROM {stage} GROUP BY {key}) g"
            ),
            &[],
        )
        .await
        .map_err(|e| Error::server("counting repeated keys", e))?;
    Ok((u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), row.get(1)))
}

pub(super) fn key_list(target: &Target) -> String {
    target
        .key
        .iter()
        .map(|&k| quote_ident(&target.columns[k].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A staged column, cast to its real type when it travels as text.
pub(super) fn staged(column: &Column) -> String {
    let col = format!("s.{}", quote_ident(&column.name));
    if column.ty.needs_cast() {
        format!("{col}::{}", column.ty.name)
    } else {
        col
    }
}

/// The upsert as `MERGE` (PostgreSQL 15+): one hash join of the batch with
/// the table; a matched row is updated only when a non-key column differs,
/// so unchanged rows are neither rewritten nor locked (no WAL).
pub(super) fn merge_statement(
    target: &Target,
    stage: &str,
    duplicates: Option<OnDuplicate>,
) -> String {
    let t = target.write.quoted();
    let on: Vec<String> = target
        .key
        .iter()
        .map(|&k| {
            let c = &target.columns[k];
            format!("t.{} = {}", quote_ident(&c.name), staged(c))
        })
        .collect();
    let others = non_key_columns(target);
    let matched = if others.is_empty() {
        String::new()
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|c| format!("{} = {}", quote_ident(&c.name), staged(c)))
            .collect();
        format!(
            " WHEN MATCHED AND ({}) IS DISTINCT FROM ({}) THEN UPDATE SET {}",
            comparable_list(&others, |c| format!("t.{}", quote_ident(&c.name))),
            comparable_list(&others, staged),
            set.join(", ")
        )
    };
    let values: Vec<String> = target.columns.iter().map(staged).collect();
    format!(
        "MERGE INTO {t} AS t USING {} ON {}{matched} WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        merge_source(target, stage, duplicates),
        on.join(" AND "),
        column_list(target),
        values.join(", ")
    )
}

/// The upsert before PostgreSQL 15: `INSERT ... ON CONFLICT DO UPDATE`,
/// guarded so unchanged rows are not rewritten, counting inserts and
/// updates from `RETURNING`.
pub(super) fn on_conflict_statement(
    target: &Target,
    stage: &str,
    duplicates: Option<OnDuplicate>,
) -> String {
    let t = target.write.quoted();
    let key = key_list(target);
    let source = merge_source(target, stage, duplicates);
    let others = non_key_columns(target);
    let on_conflict = if others.is_empty() {
        format!("ON CONFLICT ({key}) DO NOTHING")
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
            .collect();
        format!(
            "ON CONFLICT ({key}) DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            set.join(", "),
            comparable_list(&others, |c| format!("t.{}", quote_ident(&c.name))),
            comparable_list(&others, |c| format!("EXCLUDED.{}", quote_ident(&c.name)))
        )
    };
    format!(
        "WITH ins AS (INSERT INTO {t} AS t ({cols}) SELECT {casts} FROM {source} {on_conflict} \
         RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM ins",
        cols = column_list(target),
        casts = cast_list(target, "s.")
    )
}
