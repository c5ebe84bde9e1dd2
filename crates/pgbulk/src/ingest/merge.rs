//! The statements that merge a staged batch into its table, and the search
//! for the values the server rejects when a cast of a shadowed value fails.

use tokio_postgres::Transaction;

use super::OnDuplicate;
use super::range::{Bounds, restriction};
use super::stage::{Layout, RAW_COLUMN, WHERE_COLUMN};
use super::target::Target;
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

/// Rows inserted and updated in `target` (in its partitions when it is
/// partitioned: the partitioned table itself counts none) by this
/// transaction so far.
pub(super) async fn xact_stats(tx: &Transaction<'_>, target: &Target) -> Result<(u64, u64)> {
    // By name, as the merge named it: another run may have swapped a new
    // copy of the table in since this run read its oid.
    let relations = if target.partitioned {
        crate::catalog::leaf_partitions("$1::text::regclass")
    } else {
        "SELECT $1::text::regclass".to_owned()
    };
    let row = tx
        .query_one(
            &format!(
                "SELECT coalesce(sum(pg_catalog.pg_stat_get_xact_tuples_inserted(r.relid)), 0)::int8, \
                        coalesce(sum(pg_catalog.pg_stat_get_xact_tuples_updated(r.relid)), 0)::int8 \
                 FROM ({relations}) AS r(relid)"
            ),
            &[&target.write.quoted()],
        )
        .await
        .map_err(|e| Error::server("reading row counts", e))?;
    Ok((
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
    ))
}

/// The positions of the columns outside the primary key that an update
/// sets (not a `GENERATED ALWAYS` identity column, which keeps its value).
pub(super) fn non_key_columns(target: &Target) -> Vec<usize> {
    (0..target.columns.len())
        .filter(|&i| !target.key.contains(&i) && !target.columns[i].always_identity)
        .collect()
}

/// `expr` of each column, as text where its type has no equality operator,
/// joined for a row comparison.
pub(super) fn comparable_list(
    target: &Target,
    columns: &[usize],
    expr: impl Fn(usize) -> String,
) -> String {
    columns
        .iter()
        .map(|&c| {
            let v = expr(c);
            if compares_natively(&target.columns[c].ty) {
                v
            } else {
                format!("({v})::text")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The staged rows, one per key: the last (or first) in arrival order when
/// the batch repeats a key (sorted by key then, and when the layout asks
/// for it). A staging table is only appended to, so `ctid` order is
/// arrival order.
pub(super) fn merge_source(
    layout: Layout<'_>,
    stage: &str,
    duplicates: Option<OnDuplicate>,
) -> String {
    match duplicates {
        Some(which) => {
            let key = layout.key_values("");
            let order = if which == OnDuplicate::First {
                "ASC"
            } else {
                "DESC"
            };
            format!("(SELECT DISTINCT ON ({key}) * FROM {stage} ORDER BY {key}, ctid {order}) s")
        }
        None if layout.sorted => {
            let key = layout.key_values("");
            format!("(SELECT * FROM {stage} ORDER BY {key}) s")
        }
        None => format!("{stage} s"),
    }
}

/// Rows of the staged batch that repeat the key of another, and one such
/// key in its text form (made only for the keys that repeat: for each key
/// of a 2 M-row stage it cost 0.5 s of 2.0 s).
pub(super) async fn repeats(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
) -> Result<(u64, Option<String>)> {
    let key = layout.key_values("");
    let row = tx
        .query_one(
            &format!(
                "SELECT COALESCE(sum(n - 1), 0)::bigint, \
                 (pg_catalog.array_agg(k::text) FILTER (WHERE n > 1))[1] \
                 FROM (SELECT count(*) AS n, ROW({key}) AS k FROM {stage} GROUP BY {key}) g"
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

/// The join of staged rows `s` with the table's rows `t` on the key.
fn key_match(layout: Layout<'_>) -> String {
    let target = layout.target;
    target
        .key
        .iter()
        .map(|&k| {
            format!(
                "t.{} = {}",
                quote_ident(&target.columns[k].name),
                layout.value(k, "s.")
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Of a staged row `s` left-joined with the table's row `t` by
/// [`key_match`]: whether a merge writes it (its key is new, or a non-key
/// column differs, compared as the merge compares them). A matched row's
/// first key column is not null, as it equals the staged value.
fn writes_row(layout: Layout<'_>) -> String {
    let target = layout.target;
    let name = |c: usize| quote_ident(&target.columns[c].name);
    let new = format!("t.{} IS NULL", name(target.key[0]));
    let others = non_key_columns(target);
    if others.is_empty() {
        return new;
    }
    format!(
        "{new} OR {}",
        differs(target, &others, |c| layout.value(c, "s."))
    )
}

/// Whether the table's row `t` differs from `other(c)` in the non-key
/// columns `others`: the one test of a changed row, shared by the merges
/// and the sieve so that they always agree.
fn differs(target: &Target, others: &[usize], other: impl Fn(usize) -> String) -> String {
    let name = |c: usize| quote_ident(&target.columns[c].name);
    format!(
        "({}) IS DISTINCT FROM ({})",
        comparable_list(target, others, |c| format!("t.{}", name(c))),
        comparable_list(target, others, other)
    )
}

/// Fills `new` (a copy of the table, its columns in the same order) with
/// every row of the table and every staged row of the stages `sources`, a
/// staged row taking its key's place (each key staged once, or `new`'s
/// unique index fails), and counts the staged rows as [`sample_statement`]
/// does: those a merge would write, all, and those whose key is new. The
/// joined rows are counted as they are inserted (a data-modifying `WITH`):
/// 5 M rows into a 5 M-row table took 9.3 s so, against 9.2 s for the
/// insert alone and 2.5-2.7 s for a count of its own after it.
pub(super) fn rewrite_statement(
    layout: Layout<'_>,
    sources: &[impl AsRef<str>],
    new: &str,
) -> String {
    let target = layout.target;
    let names = column_list(target);
    let staged = union(sources, |s| {
        format!("SELECT {names}, true AS \"pgbulk:staged\" FROM {s}")
    });
    let values = (0..target.columns.len())
        .map(|c| {
            let name = quote_ident(&target.columns[c].name);
            format!(
                "CASE WHEN s.\"pgbulk:staged\" IS NULL THEN t.{name} ELSE {} END AS {name}",
                layout.value(c, "s.")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // 0: the table's row kept; 1: a changed row; 2: a new one; 3: unchanged.
    let kind = format!(
        "CASE WHEN s.\"pgbulk:staged\" IS NULL THEN 0 WHEN t.{} IS NULL THEN 2 WHEN {} THEN 1 ELSE 3 END",
        quote_ident(&target.columns[target.key[0]].name),
        writes_row(layout)
    );
    format!(
        "WITH joined AS (SELECT {values}, {kind} AS \"pgbulk:kind\" \
         FROM {} AS t FULL JOIN ({staged}) AS s ON {}), \
         filled AS (INSERT INTO {new} ({names}) SELECT {names} FROM joined) \
         SELECT count(*) FILTER (WHERE \"pgbulk:kind\" IN (1, 2))::int8, \
                count(*) FILTER (WHERE \"pgbulk:kind\" > 0)::int8, \
                count(*) FILTER (WHERE \"pgbulk:kind\" = 2)::int8 \
         FROM joined",
        target.write.quoted(),
        key_match(layout)
    )
}

/// The table that [`sieve_statement`] fills.
pub(super) const CHANGES: &str = "pg_temp.pgbulk_changes";

/// Of the staged rows in a sample of the pages of the stages `sources`
/// (`$1` percent; tables of the same columns), those a merge writes, all,
/// and those whose key is new: whether sieving or rewriting pays. Probes
/// the key's index per sampled row.
pub(super) fn sample_statement(layout: Layout<'_>, sources: &[impl AsRef<str>]) -> String {
    staged_counts(
        layout,
        &union(sources, |s| {
            format!("SELECT * FROM {s} TABLESAMPLE SYSTEM ($1::float4)")
        }),
    )
}

/// `select` of each of `sources`, in a `UNION ALL`.
fn union(sources: &[impl AsRef<str>], select: impl Fn(&str) -> String) -> String {
    sources
        .iter()
        .map(|s| select(s.as_ref()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Of the staged rows `staged` (a query), those a merge writes, all, and
/// those whose key is new.
fn staged_counts(layout: Layout<'_>, staged: &str) -> String {
    let target = layout.target;
    format!(
        "SELECT count(*) FILTER (WHERE {})::int8, count(*)::int8, \
         count(*) FILTER (WHERE t.{} IS NULL)::int8 \
         FROM ({staged}) s \
         LEFT JOIN {} AS t ON {}",
        writes_row(layout),
        quote_ident(&target.columns[target.key[0]].name),
        target.write.quoted(),
        key_match(layout)
    )
}

/// Counts, in a sample of `relation`'s pages (`$1` percent of them) read
/// in storage order, the rows whose `key` (a list of values) is lower than
/// the row's before, and the rows that have a row before.
pub(super) fn order_statement(key: &str, relation: &str) -> String {
    format!(
        "SELECT count(*) FILTER (WHERE k < p)::int8, count(p)::int8 \
         FROM (SELECT ROW({key}) AS k, lag(ROW({key})) OVER (ORDER BY ctid) AS p \
               FROM {relation} TABLESAMPLE SYSTEM ($1::float4)) s"
    )
}

/// Creates [`CHANGES`] (dropped at commit) holding the staged rows a merge
/// writes, one per key as [`merge_source`] keeps them: a join that only
/// reads, so the merge that follows joins and re-reads only those rows
/// (a `MERGE` fetches every matched row again, changed or not). The table
/// is read only within `bounds`, as by [`merge_statement`]. As a `CREATE
/// TABLE AS` (unlike `INSERT ... SELECT`) the join may run in parallel
/// workers, when the stage is not a TEMP table.
pub(super) fn sieve_statement(
    layout: Layout<'_>,
    stage: &str,
    duplicates: Option<OnDuplicate>,
    bounds: &[Bounds],
) -> String {
    let unsorted = Layout {
        sorted: false,
        ..layout
    };
    format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT s.* FROM {} LEFT JOIN {} AS t ON {}{} WHERE {}",
        CHANGES.trim_start_matches("pg_temp."),
        merge_source(unsorted, stage, duplicates),
        layout.target.write.quoted(),
        key_match(layout),
        restriction(layout, bounds, 1),
        writes_row(layout)
    )
}

/// The upsert as `MERGE` (PostgreSQL 15+): one hash join of the batch with
/// the table; a matched row is updated only when a non-key column differs,
/// so unchanged rows are neither rewritten nor locked (no WAL). The table
/// is read only within `bounds` (parameters `$1`, `$2`, ...).
pub(super) fn merge_statement(
    layout: Layout<'_>,
    stage: &str,
    duplicates: Option<OnDuplicate>,
    bounds: &[Bounds],
) -> String {
    let target = layout.target;
    let t = target.write.quoted();
    let name = |c: usize| quote_ident(&target.columns[c].name);
    let staged = |c: usize| layout.value(c, "s.");
    let others = non_key_columns(target);
    let matched = if others.is_empty() {
        String::new()
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|&c| format!("{} = {}", name(c), staged(c)))
            .collect();
        format!(
            " WHEN MATCHED AND {} THEN UPDATE SET {}",
            differs(target, &others, staged),
            set.join(", ")
        )
    };
    format!(
        "MERGE INTO {t} AS t USING {} ON {}{}{matched} WHEN NOT MATCHED THEN INSERT ({}){} VALUES ({})",
        merge_source(layout, stage, duplicates),
        key_match(layout),
        restriction(layout, bounds, 1),
        column_list(target),
        target.overriding(),
        layout.values("s.")
    )
}

/// Inserts every row of `stage` (keys not repeated), in key order when
/// the layout asks for it.
pub(super) fn insert_statement(layout: Layout<'_>, stage: &str) -> String {
    format!(
        "INSERT INTO {} ({}){} SELECT {} FROM {}",
        layout.target.write.quoted(),
        column_list(layout.target),
        layout.target.overriding(),
        layout.values("s."),
        merge_source(layout, stage, None)
    )
}

/// The upsert before PostgreSQL 15: `INSERT ... ON CONFLICT DO UPDATE`,
/// guarded so unchanged rows are not rewritten, counting inserts and
/// updates from `RETURNING`.
pub(super) fn on_conflict_statement(
    layout: Layout<'_>,
    stage: &str,
    duplicates: Option<OnDuplicate>,
) -> String {
    let target = layout.target;
    let t = target.write.quoted();
    let key = key_list(target);
    let source = merge_source(layout, stage, duplicates);
    let others = non_key_columns(target);
    let name = |c: usize| quote_ident(&target.columns[c].name);
    let on_conflict = if others.is_empty() {
        format!("ON CONFLICT ({key}) DO NOTHING")
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|&c| format!("{0} = EXCLUDED.{0}", name(c)))
            .collect();
        format!(
            "ON CONFLICT ({key}) DO UPDATE SET {} WHERE {}",
            set.join(", "),
            differs(target, &others, |c| format!("EXCLUDED.{}", name(c)))
        )
    };
    // A row the statement inserted has `xmax = 0`; a partitioned table's
    // rows have no system columns to return before PostgreSQL 15, so there
    // a row counts as inserted when its key was not in the table before
    // the statement (which the outer query still sees).
    let (returning, inserted) = if target.partitioned {
        let keys: Vec<String> = target
            .key
            .iter()
            .enumerate()
            .map(|(i, &k)| format!("t.{} AS k{i}", name(k)))
            .collect();
        let matches: Vec<String> = target
            .key
            .iter()
            .enumerate()
            .map(|(i, &k)| format!("o.{} = ins.k{i}", name(k)))
            .collect();
        (
            keys.join(", "),
            format!(
                "NOT EXISTS (SELECT 1 FROM {t} AS o WHERE {})",
                matches.join(" AND ")
            ),
        )
    } else {
        ("(xmax = 0) AS inserted".to_owned(), "inserted".to_owned())
    };
    format!(
        "WITH ins AS (INSERT INTO {t} AS t ({cols}){overriding} SELECT {casts} FROM {source} {on_conflict} \
         RETURNING {returning}) \
         SELECT count(*) FILTER (WHERE {inserted}), count(*) FILTER (WHERE NOT {inserted}) FROM ins",
        cols = column_list(target),
        overriding = target.overriding(),
        casts = layout.values("s.")
    )
}

/// The upsert on columns named for it before PostgreSQL 15 (no unique
/// index for `ON CONFLICT` to use): matched rows are updated when a non-key
/// column differs, the others inserted, in one statement; the ingest lock
/// keeps other pgbulk ingests of the table out meanwhile. Counts inserts
/// and updates.
pub(super) fn update_then_insert_statement(
    layout: Layout<'_>,
    stage: &str,
    duplicates: Option<OnDuplicate>,
) -> String {
    let target = layout.target;
    let t = target.write.quoted();
    let name = |c: usize| quote_ident(&target.columns[c].name);
    let source = merge_source(layout, stage, duplicates);
    // The staged rows, typed, under the target's column names.
    let typed: Vec<String> = (0..target.columns.len())
        .map(|c| format!("{} AS {}", layout.value(c, "s."), name(c)))
        .collect();
    let matches: Vec<String> = target
        .key
        .iter()
        .map(|&k| format!("t.{0} = src.{0}", name(k)))
        .collect();
    let others = non_key_columns(target);
    let update = if others.is_empty() {
        "upd AS (SELECT 1 WHERE false)".to_owned()
    } else {
        let set: Vec<String> = others
            .iter()
            .map(|&c| format!("{0} = src.{0}", name(c)))
            .collect();
        format!(
            "upd AS (UPDATE {t} AS t SET {} FROM src WHERE {} AND {} RETURNING 1)",
            set.join(", "),
            matches.join(" AND "),
            differs(target, &others, |c| format!("src.{}", name(c)))
        )
    };
    format!(
        "WITH src AS (SELECT {typed} FROM {source}), {update}, \
         ins AS (INSERT INTO {t} ({cols}){overriding} SELECT {cols} FROM src \
         WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {on}) RETURNING 1) \
         SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)",
        typed = typed.join(", "),
        cols = column_list(target),
        overriding = target.overriding(),
        on = matches.join(" AND ")
    )
}

/// A shadowed value the server's input function rejects: the staged row
/// (its `ctid`), where it came from, the column and the server's message.
#[derive(Debug)]
pub(super) struct Rejected {
    pub(super) ctid: String,
    pub(super) location: String,
    pub(super) raw: Option<Vec<u8>>,
    pub(super) column: String,
    pub(super) value: String,
    pub(super) reason: String,
    /// The server's error for the row, when it refused the row as a whole.
    pub(super) server: Option<tokio_postgres::error::DbError>,
}

/// The staged rows whose shadowed values the server rejects, in arrival
/// order, one per row (its first bad column). Each value is cast in a
/// subtransaction of its own by a temporary function, so this runs only
/// after a cast failed.
pub(super) async fn rejected_values(
    tx: &Transaction<'_>,
    layout: Layout<'_>,
    stage: &str,
) -> Result<Vec<Rejected>> {
    // Each value goes into a column of the target's type as a literal, read
    // by the type's input function with the column's modifier, as COPY reads
    // it.
    tx.batch_execute(
        "CREATE OR REPLACE FUNCTION pg_temp.pgbulk_input_error(value text) \
         RETURNS text LANGUAGE plpgsql AS $f$ \
         BEGIN EXECUTE pg_catalog.format('INSERT INTO pg_temp.pgbulk_probe VALUES (%L)', value); \
         RETURN NULL; \
         EXCEPTION WHEN OTHERS THEN RETURN SQLERRM; END $f$",
    )
    .await
    .map_err(|e| Error::server("creating the input check", e))?;
    let mut found: Vec<Rejected> = Vec::new();
    for (c, column) in layout.target.columns.iter().enumerate() {
        if !layout.cast_by_server(c) {
            continue;
        }
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.pgbulk_probe; CREATE TEMP TABLE pgbulk_probe (v {}) ON COMMIT DROP",
            column.ty.name
        ))
        .await
        .map_err(|e| Error::server("creating the input check", e))?;
        let shadow = layout.server_text(c);
        let rows = tx
            .query(
                &format!(
                    "SELECT ctid::text, {w}, {r}, pg_catalog.textsend({shadow}), \
                     pg_catalog.textsend(e) FROM {stage}, \
                     LATERAL (SELECT pg_temp.pgbulk_input_error({shadow})) x(e) \
                     WHERE {shadow} IS NOT NULL AND e IS NOT NULL ORDER BY ctid",
                    w = quote_ident(WHERE_COLUMN),
                    r = quote_ident(RAW_COLUMN),
                ),
                &[],
            )
            .await
            .map_err(|e| Error::server("checking values for the server", e))?;
        let read = |e| Error::server("reading values the server refused", e);
        for row in rows {
            let ctid: String = row.try_get(0).map_err(read)?;
            if found.iter().any(|f| f.ctid == ctid) {
                continue;
            }
            // The value and the server's message as bytes: a message need
            // not be valid UTF-8.
            let text = |i: usize| -> Result<String> {
                let bytes: Vec<u8> = row.try_get(i).map_err(read)?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            };
            found.push(Rejected {
                ctid,
                location: row
                    .try_get::<_, Option<String>>(1)
                    .map_err(read)?
                    .unwrap_or_default(),
                raw: row.try_get(2).map_err(read)?,
                column: column.name.clone(),
                value: text(3)?,
                reason: text(4)?,
                server: None,
            });
        }
    }
    found.sort_by_key(|r| ctid_order(&r.ctid));
    Ok(found)
}

/// `(block,offset)` as numbers, for arrival order.
fn ctid_order(ctid: &str) -> (u64, u64) {
    let inner = ctid.trim_start_matches('(').trim_end_matches(')');
    let (block, offset) = inner.split_once(',').unwrap_or((inner, "0"));
    (block.parse().unwrap_or(0), offset.parse().unwrap_or(0))
}

/// Whether an error is a constraint refusing a row (unique, foreign key,
/// check, not-null, exclusion).
pub(super) fn is_row_error(error: &Error) -> bool {
    error
        .db_error()
        .is_some_and(|db| db.code().code().starts_with("23"))
}

/// Whether an error is the server refusing a value (a data exception, or
/// a domain's check), as a failed cast of a shadowed value is.
pub(super) fn is_value_error(error: &Error) -> bool {
    error.db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code == "23514"
    })
}
