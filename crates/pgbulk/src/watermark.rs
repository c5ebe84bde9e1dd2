//! High watermarks, committed in the same transaction as each batch.
//!
//! pgbulk keeps them in a table of its own, `<schema>.pgbulk_watermark`, in
//! the schema of the first declared table, one row per ingest keyed by that
//! table's qualified name:
//!
//! ```sql
//! SELECT high_watermark FROM sales.pgbulk_watermark WHERE table_name = 'sales.orders';
//! ```
//!
//! A row, not a table comment as pg-bulk-ingest uses: updating it is an
//! ordinary MVCC write in the batch's transaction (no catalog change, no
//! lock on the data table beyond the batch's own), it is readable with
//! plain SQL, and comments stay the DBA's. A watermark pg-bulk-ingest left
//! in the first table's comment (`{"pg-bulk-ingest": {"high-watermark":
//! ...}}`) is read when pgbulk has none of its own, so its users can switch.

use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::schema::TableName;

/// The key of an ingest's row: the first table's name, and for one of
/// several parallel streams of a load, `#` and the stream's name.
pub fn key(first: &TableName, stream: Option<&str>) -> String {
    match stream {
        Some(stream) => format!("{first}#{stream}"),
        None => first.to_string(),
    }
}

/// The table holding watermarks in `schema`.
pub fn table(schema: &str) -> TableName {
    TableName::new(schema, "pgbulk_watermark")
}

/// `CREATE TABLE` for the watermark table in `schema`.
pub(crate) fn create_sql(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         table_name text PRIMARY KEY, \
         high_watermark jsonb, \
         batch_metadata jsonb, \
         resume jsonb, \
         updated_at timestamptz NOT NULL DEFAULT now())",
        table(schema).quoted()
    )
}

/// Whether the watermark table exists in `schema`.
pub(crate) async fn exists(client: &impl GenericClient, schema: &str) -> Result<bool> {
    Ok(
        crate::catalog::table_oid(client, schema, "pgbulk_watermark")
            .await?
            .is_some(),
    )
}

/// The stored high watermark of the ingest keyed by `first` (its first
/// table), falling back to pg-bulk-ingest's table comment.
pub async fn read(
    client: &impl GenericClient,
    first: &TableName,
    key: &str,
) -> Result<Option<serde_json::Value>> {
    let schema = first.schema_or_public();
    if let Some(value) = stored(client, schema, key, "high_watermark").await? {
        return parse(value);
    }
    let comment: Option<String> = client
        .query_opt(
            "SELECT pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &first.name],
        )
        .await
        .map_err(|e| Error::server("reading the table comment", e))?
        .and_then(|r| r.get(0));
    Ok(comment.and_then(|c| pg_bulk_ingest_watermark(&c)))
}

/// The metadata stored with the watermark row `key` in `first`'s schema
/// (`None` without one).
pub async fn read_metadata(
    client: &impl GenericClient,
    first: &TableName,
    key: &str,
) -> Result<Option<serde_json::Value>> {
    parse(
        stored(client, first.schema_or_public(), key, "batch_metadata")
            .await?
            .flatten(),
    )
}

/// Column `column` (as text) of the watermark row `key` in `schema`: `None`
/// without a row (or without the table), `Some(None)` for SQL NULL.
async fn stored(
    client: &impl GenericClient,
    schema: &str,
    key: &str,
    column: &str,
) -> Result<Option<Option<String>>> {
    if !exists(client, schema).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT {column}::text FROM {} WHERE table_name = $1",
                table(schema).quoted()
            ),
            &[&key],
        )
        .await
        .map_err(|e| Error::server(&format!("reading the stored {column}"), e))?;
    Ok(row.map(|r| r.get(0)))
}

/// The keys of the watermark rows in `schema` that start with `prefix`
/// (none without the table).
pub(crate) async fn keys_with_prefix(
    client: &impl GenericClient,
    schema: &str,
    prefix: &str,
) -> Result<Vec<String>> {
    if !exists(client, schema).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT table_name FROM {} WHERE left(table_name, length($1)) = $1",
                table(schema).quoted()
            ),
            &[&prefix],
        )
        .await
        .map_err(|e| Error::server("reading the stored watermarks", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The key of the most recent unfinished resume state of `first`'s loads
/// whose `field` is `value` (none without the table).
pub(crate) async fn key_of_unfinished(
    client: &impl GenericClient,
    first: &TableName,
    field: &str,
    value: &str,
) -> Result<Option<String>> {
    let schema = first.schema_or_public();
    if !exists(client, schema).await? {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT table_name FROM {} WHERE left(table_name, length($1)) = $1 \
                 AND resume->'state'->>$2 = $3 \
                 AND resume->'state'->>'complete' IS DISTINCT FROM 'true' \
                 ORDER BY updated_at DESC LIMIT 1",
                table(schema).quoted()
            ),
            &[&format!("{first}#"), &field, &value],
        )
        .await
        .map_err(|e| Error::server("reading the stored resume states", e))?;
    Ok(row.map(|r| r.get(0)))
}

/// The keys of `first`'s completed loads whose `field` is `value` and that
/// recorded where their input ended, the most recent first (at most 8).
pub(crate) async fn keys_of_ended(
    client: &impl GenericClient,
    first: &TableName,
    field: &str,
    value: &str,
) -> Result<Vec<String>> {
    let schema = first.schema_or_public();
    if !exists(client, schema).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT table_name FROM {} WHERE left(table_name, length($1)) = $1 \
                 AND resume->'state'->>$2 = $3 \
                 AND resume->'state'->>'complete' = 'true' \
                 AND resume->'state'->'end' IS NOT NULL \
                 ORDER BY updated_at DESC LIMIT 8",
                table(schema).quoted()
            ),
            &[&format!("{first}#"), &field, &value],
        )
        .await
        .map_err(|e| Error::server("reading the stored resume states", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes the watermark rows in `schema` whose key starts with `prefix`
/// (in the caller's transaction).
pub(crate) async fn remove_prefix(
    client: &impl GenericClient,
    schema: &str,
    prefix: &str,
) -> Result<()> {
    client
        .execute(
            &format!(
                "DELETE FROM {} WHERE left(table_name, length($1)) = $1",
                table(schema).quoted()
            ),
            &[&prefix],
        )
        .await
        .map_err(|e| Error::server("removing stored watermarks", e))?;
    Ok(())
}

/// Deletes the watermark row `key` of `first`'s loads, if there is one.
pub(crate) async fn remove(
    client: &impl GenericClient,
    first: &TableName,
    key: &str,
) -> Result<()> {
    let schema = first.schema_or_public();
    if !exists(client, schema).await? {
        return Ok(());
    }
    client
        .execute(
            &format!(
                "DELETE FROM {} WHERE table_name = $1",
                table(schema).quoted()
            ),
            &[&key],
        )
        .await
        .map_err(|e| Error::server("removing a stored resume state", e))?;
    Ok(())
}

/// Refuses, saying what a DBA runs once, when the current role may not
/// create the (missing) watermark table of `schema`: a loading role often
/// holds only its tables' DML privileges.
pub(crate) async fn check_creatable(client: &impl GenericClient, schema: &str) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_user::text, \
                    pg_catalog.has_schema_privilege(n.oid, 'CREATE') \
             FROM pg_catalog.pg_namespace n WHERE n.nspname = $1",
            &[&schema],
        )
        .await;
    // A schema that does not exist (yet): creating it says what is wrong.
    let Ok(row) = row else {
        return Ok(());
    };
    let (role, may): (String, bool) = (row.get(0), row.get(1));
    if may {
        return Ok(());
    }
    let ledger = table(schema);
    Err(Error::new(
        crate::error::ErrorKind::Server,
        format!(
            "{ledger}, where pgbulk keeps its ledger (each batch's watermark, the files loaded, where to resume), \
             does not exist, and role {} may not create it (no CREATE privilege on schema {}); \
             a role that may runs once:\n  {};\n  GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {};",
            crate::schema::quote_ident(&role),
            crate::schema::quote_ident(schema),
            create_sql(schema).replacen(" IF NOT EXISTS", "", 1),
            ledger.quoted(),
            crate::schema::quote_ident(&role),
        ),
    ))
}

/// Creates the watermark table of `schema` unless it exists (in its own
/// transaction, under the creation locks).
pub(crate) async fn ensure(client: &tokio_postgres::Client, schema: &str) -> Result<()> {
    if exists(client, schema).await? {
        return Ok(());
    }
    check_creatable(client, schema).await?;
    let mut sql = crate::lock::creation_locks(vec![table(schema).to_string()]);
    sql.push(create_sql(schema));
    client
        .batch_execute(&format!("BEGIN; {}; COMMIT", sql.join(";\n")))
        .await
        .map_err(|e| Error::server("creating the watermark table", e))
}

/// A resume state stored with a committed batch, for the table that exists
/// now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResume {
    /// The state the source stored.
    pub state: serde_json::Value,
    /// Whether the table's storage changed since (`TRUNCATE`, `VACUUM
    /// FULL`, `CLUSTER`, a rewriting `ALTER TABLE`): rows the state counts
    /// may be gone.
    pub rewritten: bool,
}

/// The resume state stored with the last committed batch of the ingest
/// keyed by `first`, if any and if it was stored for the table that exists
/// now (not one dropped and created again since).
pub async fn read_resume(
    client: &impl GenericClient,
    first: &TableName,
    key: &str,
) -> Result<Option<StoredResume>> {
    let schema = first.schema_or_public();
    let Some(oid) = crate::catalog::table_oid(client, schema, &first.name).await? else {
        return Ok(None);
    };
    let Some(stored) = parse(stored(client, schema, key, "resume").await?.flatten())? else {
        return Ok(None);
    };
    let same_table =
        stored.get("table_oid").and_then(serde_json::Value::as_u64) == Some(u64::from(oid));
    let Some(state) = stored.get("state").filter(|_| same_table).cloned() else {
        return Ok(None);
    };
    // The table's storage, and for a partitioned table its partitions'
    // (one gone or truncated is a rewrite; one added since is not).
    let storage: Vec<(i64, Option<i64>)> = client
        .query(
            &format!(
                "SELECT 0::int8, pg_catalog.pg_relation_filenode($1::oid::regclass)::int8 \
                 UNION ALL \
                 SELECT l.relid::oid::int8, pg_catalog.pg_relation_filenode(l.relid)::int8 \
                 FROM ({}) l WHERE l.relid <> $1::oid::regclass",
                crate::catalog::leaf_partitions("$1::oid::regclass")
            ),
            &[&oid],
        )
        .await
        .map_err(|e| Error::server("reading the table's storage", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let filenode_of = |relid: i64| storage.iter().find(|(r, _)| *r == relid).map(|(_, f)| *f);
    let table_rewritten = stored
        .get("relfilenode")
        .and_then(serde_json::Value::as_i64)
        .is_some_and(|stored| filenode_of(0).flatten() != Some(stored));
    let partition_rewritten = stored
        .get("partitions")
        .and_then(serde_json::Value::as_object)
        .is_some_and(|partitions| {
            partitions.iter().any(|(relid, stored)| {
                relid
                    .parse::<i64>()
                    .map_or(true, |relid| filenode_of(relid) != Some(stored.as_i64()))
            })
        });
    Ok(Some(StoredResume {
        state,
        rewritten: table_rewritten || partition_rewritten,
    }))
}

/// The watermark in a pg-bulk-ingest table comment, if there is one.
pub fn pg_bulk_ingest_watermark(comment: &str) -> Option<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_str(comment).ok()?;
    json.get("pg-bulk-ingest")?.get("high-watermark").cloned()
}

fn parse(text: Option<String>) -> Result<Option<serde_json::Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            Error::new(
                crate::ErrorKind::Server,
                format!("stored watermark is not JSON: {e}"),
            )
        })
    })
    .transpose()
}

/// Writes the watermark (and the batch's metadata and resume state, tied
/// to the first table as it is in this transaction: its oid and its
/// storage, and its partitions' when it is partitioned, so a table
/// dropped, truncated or rewritten since is noticed) in the caller's
/// transaction.
pub(crate) async fn write(
    client: &impl GenericClient,
    first: &TableName,
    key: &str,
    high_watermark: Option<&serde_json::Value>,
    metadata: &serde_json::Value,
    resume: Option<&serde_json::Value>,
) -> Result<()> {
    let schema = first.schema_or_public();
    let sql = format!(
        "INSERT INTO {t} AS w (table_name, high_watermark, batch_metadata, resume, updated_at) \
         SELECT $1, $2::text::jsonb, $3::text::jsonb, \
         CASE WHEN $4::text IS NOT NULL THEN pg_catalog.jsonb_build_object(\
         'table_oid', c.oid::bigint, \
         'relfilenode', pg_catalog.pg_relation_filenode(c.oid)::bigint, \
         'partitions', (SELECT pg_catalog.jsonb_object_agg(l.relid::oid::bigint::text, \
                                pg_catalog.pg_relation_filenode(l.relid)::bigint) \
                        FROM ({leaves}) l WHERE l.relid <> c.oid::regclass), \
         'state', $4::text::jsonb) END, now() \
         FROM (SELECT pg_catalog.to_regclass($5)::oid AS oid) c \
         ON CONFLICT (table_name) DO UPDATE SET high_watermark = EXCLUDED.high_watermark, \
         batch_metadata = EXCLUDED.batch_metadata, resume = EXCLUDED.resume, updated_at = now()",
        t = table(schema).quoted(),
        leaves = crate::catalog::leaf_partitions("c.oid::regclass")
    );
    let hw = high_watermark.map(serde_json::Value::to_string);
    let meta = metadata.to_string();
    let resume = resume.map(serde_json::Value::to_string);
    let regclass = first.quoted();
    client
        .execute(&sql, &[&key, &hw, &meta, &resume, &regclass])
        .await
        .map_err(|e| Error::server("writing the high watermark", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pg_bulk_ingest_comments() {
        assert_eq!(
            pg_bulk_ingest_watermark(
                r#"{"pg-bulk-ingest": {"high-watermark": "2024-01-01"}, "other": 1}"#
            ),
            Some(serde_json::json!("2024-01-01"))
        );
        assert_eq!(pg_bulk_ingest_watermark("just a comment"), None);
        assert_eq!(pg_bulk_ingest_watermark(r#"{"pg-bulk-ingest": {}}"#), None);
    }
}
