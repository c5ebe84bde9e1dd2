//! Serial and identity sequences after rows with explicit values went in:
//! advanced past the largest value in their columns, so the table's own
//! inserts (which take the sequence's next value) do not collide with the
//! rows copied or loaded.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::schema::{TableName, quote_ident};

/// Which serial and identity columns of a table to look at.
pub(crate) enum Columns<'a> {
    /// These (the ones a sync filled from its source).
    Named(&'a [String]),
    /// Those that lead an index, so that their largest value is read from
    /// the index, not by scanning the table.
    Indexed,
}

/// Advances the sequence of each of `columns` of `table` (that this role
/// can read) past the largest
/// value now in the column (the smallest, for a descending one), never
/// backwards; returns what the user should know, naming the `rows` (e.g.
/// "rows copied"): each sequence advanced, or why none was (privileges:
/// the rows are in either way).
pub(crate) async fn advance_past_rows(
    client: &Client,
    table: &TableName,
    columns: Columns<'_>,
    rows: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Err(e) = advance(client, table, &columns, rows, &mut notes).await {
        notes.push(format!(
            "the sequences of {table} were not advanced past the {rows}: {e}"
        ));
    }
    notes
}

async fn advance(
    client: &Client,
    table: &TableName,
    columns: &Columns<'_>,
    rows: &str,
    notes: &mut Vec<String>,
) -> Result<()> {
    let quoted = table.quoted();
    let indexed = matches!(columns, Columns::Indexed);
    let sequences = client
        .query(
            "SELECT a.attname::text, pg_catalog.pg_get_serial_sequence($1, a.attname::text) \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
               AND pg_catalog.pg_get_serial_sequence($1, a.attname::text) IS NOT NULL \
               AND pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT') \
               AND (NOT $2 OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                                      WHERE i.indrelid = a.attrelid AND i.indkey[0] = a.attnum))",
            &[&quoted, &indexed],
        )
        .await
        .map_err(|e| Error::server(&format!("reading the sequences of {table}"), e))?;
    for row in sequences {
        let column: String = row.get(0);
        let sequence: String = row.get(1);
        if let Columns::Named(names) = columns {
            if !names.contains(&column) {
                continue;
            }
        }
        let advanced = client
            .query_opt(
                &format!(
                    "SELECT pg_catalog.setval($1::text::regclass, x.m)::text \
                     FROM (SELECT CASE WHEN q.seqincrement > 0 THEN (SELECT max({c}) FROM {quoted}) \
                                       ELSE (SELECT min({c}) FROM {quoted}) END::int8 AS m, \
                                  q.seqincrement AS step, \
                                  coalesce(pg_catalog.pg_sequence_last_value($1::text::regclass), \
                                           q.seqstart - q.seqincrement) AS at \
                           FROM pg_catalog.pg_sequence q WHERE q.seqrelid = $1::text::regclass) x \
                     WHERE CASE WHEN x.step > 0 THEN x.m > x.at ELSE x.m < x.at END",
                    c = quote_ident(&column)
                ),
                &[&sequence],
            )
            .await
            .map_err(|e| Error::server(&format!("advancing {sequence}"), e))?;
        if let Some(row) = advanced {
            let to: String = row.get(0);
            notes.push(format!(
                "{sequence} (of {table}.{column}) advanced to {to}, past the {rows}"
            ));
        }
    }
    Ok(())
}
