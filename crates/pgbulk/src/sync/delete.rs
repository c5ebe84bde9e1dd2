//! `--delete-missing`: the keys read, and the delete of the destination
//! rows whose key is not among them.

use futures_util::StreamExt;
use tokio_postgres::Client;

use super::{ColumnMap, SyncOptions};
use crate::catalog::TableFacts;
use crate::error::{Error, Result};
use crate::ingest;
use crate::load::LoadMode;
use crate::schema::{TableName, quote_ident};

/// `--delete-missing`: which destination rows go.
#[derive(Debug)]
pub(super) struct Delete {
    /// The destination's key columns.
    pub(super) key: Vec<String>,
    /// The source expression of each key column.
    pub(super) exprs: Vec<String>,
}

impl Delete {
    /// The `DELETE` of the destination rows within `filter` whose key is
    /// not in the keys read (`keys`: some were read).
    pub(super) fn sql(&self, dest: &TableName, filter: Option<&str>, keys: bool) -> String {
        let mut conditions: Vec<String> = filter.iter().map(|w| format!("({w})")).collect();
        if keys {
            let matches: Vec<String> = self
                .key
                .iter()
                .map(|k| {
                    let k = quote_ident(k);
                    format!("k.{k} = {}.{k}", dest.quoted())
                })
                .collect();
            conditions.push(format!(
                "NOT EXISTS (SELECT 1 FROM pg_temp.{KEYS} k WHERE {})",
                matches.join(" AND ")
            ));
        }
        let mut sql = format!("DELETE FROM {}", dest.quoted());
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql
    }
}

/// The temporary table of the keys read, in the destination session.
pub(super) const KEYS: &str = "pgbulk_sync_keys";

/// Refuses `--delete-missing` where it has no meaning.
pub(super) fn refuse_delete(opts: &SyncOptions) -> Result<()> {
    if opts.incremental.is_some() {
        return Err(Error::config(
            "--delete-missing needs every row of the window read: not with --incremental, which reads only the rows changed",
        ));
    }
    if matches!(opts.mode, Some(LoadMode::Replace | LoadMode::ReplaceAtomic)) {
        return Err(Error::config(
            "--delete-missing with --mode replace: replace deletes every row of the destination already",
        ));
    }
    Ok(())
}

/// Checks `--delete-missing` against the existing destination: its key,
/// and that `--where` can be evaluated there (it selects the rows the
/// delete considers).
pub(super) async fn plan_delete(
    dest: &Client,
    dest_name: &TableName,
    facts: &TableFacts,
    maps: &[ColumnMap],
    opts: &SyncOptions,
) -> Result<Delete> {
    refuse_delete(opts)?;
    let key = opts.key.clone().unwrap_or_else(|| facts.key().to_vec());
    if key.is_empty() {
        return Err(Error::config(format!(
            "--delete-missing needs a key: {dest_name} has no primary key (--key names columns)"
        )));
    }
    let mut exprs = Vec::new();
    for k in &key {
        let map = maps.iter().find(|m| &m.to == k).ok_or_else(|| {
            Error::config(format!(
                "--delete-missing: the key column \"{k}\" of {dest_name} is not filled from the source"
            ))
        })?;
        exprs.push(map.expr.clone());
    }
    if let Some(filter) = &opts.filter {
        dest.batch_execute(&format!(
            "SELECT 1 FROM {} WHERE ({filter}) LIMIT 0",
            dest_name.quoted()
        ))
        .await
        .map_err(|e| {
            Error::server(
                &format!("--delete-missing applies --where to {dest_name} as well"),
                e,
            )
        })?;
    }
    Ok(Delete { key, exprs })
}

/// Copies the keys of the rows read (`relation` and `filter` as in the
/// rows' `SELECT`, in the same snapshot `tx`) into a new temporary table
/// of the `dest` session, typed like `dest_name`'s key; returns how many.
pub(super) async fn copy_keys(
    tx: &tokio_postgres::Transaction<'_>,
    dest: &Client,
    dest_name: &TableName,
    relation: &str,
    filter: &str,
    delete: &Delete,
) -> Result<u64> {
    use futures_util::SinkExt;
    let columns: Vec<String> = delete.key.iter().map(|k| quote_ident(k)).collect();
    let selected: Vec<String> = delete
        .exprs
        .iter()
        .zip(&columns)
        .map(|(e, c)| format!("{e} AS {c}"))
        .collect();
    dest.batch_execute(&format!(
        "DROP TABLE IF EXISTS pg_temp.{KEYS}; \
         CREATE TEMP TABLE {KEYS} AS SELECT {} FROM {} WITH NO DATA",
        columns.join(", "),
        dest_name.quoted()
    ))
    .await
    .map_err(|e| Error::server("creating the table of the keys read", e))?;
    let sink = dest
        .copy_in::<_, bytes::Bytes>(&format!("COPY pg_temp.{KEYS} FROM STDIN (FORMAT csv)"))
        .await
        .map_err(|e| Error::server("copying the keys read", e))?;
    futures_util::pin_mut!(sink);
    let stream = tx
        .copy_out(&format!(
            "COPY (SELECT {} FROM {relation}{filter}) TO STDOUT (FORMAT csv)",
            selected.join(", ")
        ))
        .await
        .map_err(|e| Error::server("reading the source's keys", e))?;
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::server("reading the source's keys", e))?;
        sink.send(chunk)
            .await
            .map_err(|e| Error::server("copying the keys read", e))?;
    }
    let keys = sink
        .finish()
        .await
        .map_err(|e| Error::server("copying the keys read", e))?;
    dest.batch_execute(&format!("ANALYZE pg_temp.{KEYS}"))
        .await
        .map_err(|e| Error::server("analyzing the keys read", e))?;
    Ok(keys)
}

/// The `--delete-missing` hook: runs the delete in the transaction it is
/// given and counts the rows.
pub(super) struct DeleteMissing {
    pub(super) sql: String,
    pub(super) deleted: std::sync::atomic::AtomicU64,
    pub(super) ran: std::sync::atomic::AtomicBool,
}

impl ingest::BeforeVisible for DeleteMissing {
    fn call<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        _batch: &'a ingest::BatchInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let n = tx
                .execute(self.sql.as_str(), &[])
                .await
                .map_err(|e| Error::server("deleting the rows missing from the source", e))?;
            self.deleted
                .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            self.ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    }
}
