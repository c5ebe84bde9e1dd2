//! A write whose rows arrive in partitions from many processes at once (the
//! tasks of a Spark job), exactly once whichever attempts ran.
//!
//! 1. [`begin`] (once, before any partition) creates the table from the
//!    data's Arrow schema or migrates it to its declaration, drops the
//!    stages of stale writes, and names the write ([`WriteId`]).
//! 2. [`stage`] (once per partition, in any process, any number of
//!    attempts) copies the partition's rows into an UNLOGGED stage of its
//!    own, named by the write and the partition, not the attempt. Attempts
//!    of one partition take turns (a session advisory lock on the stage);
//!    a stage is marked complete in its comment once its rows committed,
//!    and a complete stage is never written again: a later attempt (a
//!    retry, a speculative copy) leaves it as it is and reports its rows.
//!    An incomplete stage (an attempt killed half-way) is dropped and
//!    written anew.
//! 3. [`commit`] merges the complete stages of the partitions it is given
//!    in one transaction ([`crate::ingest::merge_stages`]) and drops them
//!    in it; [`abort`] drops every stage of the write.
//!
//! While a write is open it has a marker, an empty table
//! `pgbulk_stage_<write>_open` that [`begin`] creates. An attempt creates
//! its stage only while the marker is there (holding it in the creating
//! transaction); [`commit`] and [`abort`] drop the marker before the
//! stages, so an attempt that outlives its write (Spark aborts a job
//! without waiting for its running tasks) is refused instead of leaving a
//! stage behind.
//!
//! A write whose driver died between staging and commit leaves its stages
//! behind; [`begin`] of a later write into the same schema drops those of
//! writes that began more than `stale_after` ago and that no attempt is
//! writing.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_schema::SchemaRef;
use tokio_postgres::Client;

use super::{Batches, declare, matched_columns, refuse_instants_as_wall_times};
use crate::error::{Error, Result};
use crate::ingest::{self, Options};
use crate::load::{LoadMode, LoadOptions, LoadReport, Progress};
use crate::schema::{TableName, quote_literal};
use crate::session::Session;

/// What names a stage table: `pgbulk_stage_<write>_<partition>`.
const STAGE_PREFIX: &str = "pgbulk_stage_";
/// What ends the name of a write's open marker.
const OPEN: &str = "open";
/// The comment of a stage whose rows committed (followed by their number).
const COMPLETE: &str = "pgbulk stage complete: ";

/// A write's name: when it began (Unix seconds) and 32 random bits, in
/// hexadecimal (18 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteId(String);

impl WriteId {
    /// A new write, beginning now.
    pub fn new() -> Result<Self> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut random = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| Error::config("no random bytes for the write's name"))?;
        Ok(Self(format!(
            "{secs:010x}{:08x}",
            u32::from_be_bytes(random)
        )))
    }

    /// A write named `text` (as [`WriteId::as_str`] gave it).
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() == 18 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(Error::config(format!(
                "{text:?} is not the name of a write (18 hexadecimal digits)"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the write began, in Unix seconds.
    pub fn began(&self) -> u64 {
        u64::from_str_radix(&self.0[..10], 16).unwrap_or(0)
    }
}

/// The stage of `partition` of `write` into `table` (in `table`'s schema).
pub fn stage_name(table: &TableName, write: &WriteId, partition: u32) -> TableName {
    TableName::new(
        table.schema_or_public(),
        &format!("{STAGE_PREFIX}{}_{partition}", write.as_str()),
    )
}

/// The marker of an open `write` into `table` (see the module
/// documentation).
fn open_marker(table: &TableName, write: &WriteId) -> TableName {
    TableName::new(
        table.schema_or_public(),
        &format!("{STAGE_PREFIX}{}_{OPEN}", write.as_str()),
    )
}

/// The advisory-lock key attempts of a partition take turns on (not the
/// stage's ingest lock, which the copy into it takes).
fn stage_key(stage: &TableName) -> String {
    format!("stage {stage}")
}

/// What [`begin`] did.
#[derive(Debug, Clone)]
pub struct Begun {
    /// The write's name, for [`stage`], [`commit`] and [`abort`].
    pub write: WriteId,
    /// The table, qualified with its schema.
    pub table: TableName,
    /// The `CREATE TABLE` run, when the table was created from the data's
    /// schema.
    pub created_ddl: Option<String>,
    /// Migration steps applied, in words.
    pub migrations: Vec<String>,
    /// Stages of stale writes dropped.
    pub dropped: Vec<String>,
}

/// Begins a write of data of `schema` into `opts.table`: creates the table
/// (from the Arrow schema when `create`, or from `opts.schema_ddl`) or
/// migrates it to `opts.schema_ddl`, checks the data's columns and the key
/// against it, and drops stages of writes into the same schema that began
/// more than `stale_after` ago and are not being written.
pub async fn begin(
    params: &crate::conninfo::ConnParams,
    schema: SchemaRef,
    opts: &LoadOptions,
    create: bool,
    stale_after: Duration,
) -> Result<Begun> {
    let write = WriteId::new()?;
    let Opened {
        mut client,
        table,
        prepared,
        created_ddl,
        ..
    } = open(params, &schema, opts, create).await?;
    let plan = prepared.plan();
    let migrations: Vec<String> = plan
        .steps
        .iter()
        .map(|s| format!("{}: {}", s.table, s.summary))
        .collect();
    if !plan.steps.is_empty() || !plan.rebuilds.is_empty() {
        let options = Options {
            lock_policy: opts.lock_policy.clone(),
            ..Options::default()
        };
        ingest::settle(&mut client, prepared, &options).await?;
    }
    let dropped = drop_stale(&client, &table, &write, stale_after).await?;
    let marker = open_marker(&table, &write);
    client
        .batch_execute(&format!("CREATE UNLOGGED TABLE {} ()", marker.quoted()))
        .await
        .map_err(|e| Error::server(&format!("creating the write's marker {marker}"), e))?;
    Ok(Begun {
        write,
        table,
        created_ddl,
        migrations,
        dropped,
    })
}

/// What [`stage`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    /// Rows in the stage.
    pub rows: u64,
    /// Whether an earlier attempt had staged the partition already (its
    /// stage was kept, these batches were not read).
    pub reused: bool,
}

/// Stages `partition` of `write` (see the module documentation): the
/// `batches` (of `schema`) into the partition's stage, in one transaction.
pub async fn stage(
    params: &crate::conninfo::ConnParams,
    write: &WriteId,
    partition: u32,
    schema: SchemaRef,
    batches: Batches,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<Staged> {
    let mut client = crate::connect::connect(params).await?.client;
    let session = Session::read(&client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let stage = stage_name(&table, write, partition);
    let key = stage_key(&stage);
    crate::lock::hold_key(&client, &opts.lock_policy, &key).await?;
    if let Some(rows) = complete_rows(&client, &stage).await? {
        return Ok(Staged { rows, reused: true });
    }
    // Only while the write is open: the marker, held in this transaction,
    // cannot be dropped until the stage is there for [`drop_stages`] to see.
    let marker = open_marker(&table, write);
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::server(&format!("creating the stage {stage}"), e))?;
    if let Err(e) = tx
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS SHARE MODE",
            marker.quoted()
        ))
        .await
    {
        if e.as_db_error()
            .is_some_and(|db| db.code().code() == "42P01")
        {
            return Err(Error::config(format!(
                "write {} into {table} is no longer open (it was committed or aborted): partition {partition} was not staged",
                write.as_str()
            )));
        }
        return Err(Error::server(
            &format!("holding the write's marker {marker}"),
            e,
        ));
    }
    // The stage has the table's columns and types, without constraints or
    // defaults: columns the data does not fill stay NULL there and are
    // not written by the merge.
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS {s}; CREATE UNLOGGED TABLE {s} AS SELECT * FROM {t} WITH NO DATA",
        s = stage.quoted(),
        t = table.quoted()
    ))
    .await
    .map_err(|e| Error::server(&format!("creating the stage {stage}"), e))?;
    tx.commit()
        .await
        .map_err(|e| Error::server(&format!("creating the stage {stage}"), e))?;
    let into_stage = LoadOptions {
        table: stage.clone(),
        mode: Some(LoadMode::Append),
        key: None,
        schema_ddl: None,
        single_transaction: true,
        ..opts.clone()
    };
    let report = super::write(params, schema, batches, &into_stage, false, progress).await?;
    let rows = report.inserted;
    client
        .batch_execute(&format!(
            "COMMENT ON TABLE {} IS {}",
            stage.quoted(),
            quote_literal(&format!("{COMPLETE}{rows}"))
        ))
        .await
        .map_err(|e| Error::server(&format!("marking the stage {stage} complete"), e))?;
    crate::lock::release_key(&client, &key).await?;
    Ok(Staged {
        rows,
        reused: false,
    })
}

/// Merges the stages of `partitions` of `write` into `opts.table` in one
/// transaction (see [`crate::ingest::merge_stages`]): the data's columns
/// (`schema`, matched as [`begin`] matched them), upserted on the key
/// (`opts.key`, else the primary key) or appended, `replace` deleting every
/// row first and `replace-atomic` swapping a new table in. A partition
/// whose stage is missing or incomplete fails the commit, writing nothing.
/// Stages of the write that no partition names are dropped too.
pub async fn commit(
    params: &crate::conninfo::ConnParams,
    write: &WriteId,
    partitions: &[u32],
    schema: SchemaRef,
    opts: &LoadOptions,
    progress: Arc<Progress>,
) -> Result<LoadReport> {
    let started = std::time::Instant::now();
    let Opened {
        mut client,
        table,
        prepared,
        chosen,
        columns,
        ..
    } = open(params, &schema, opts, false).await?;
    let options =
        crate::load::engine_options(chosen.mode, chosen.key.as_ref(), &table, opts, &progress);
    let mut partitions = partitions.to_vec();
    partitions.sort_unstable();
    partitions.dedup();
    let mut stages = Vec::with_capacity(partitions.len());
    for p in partitions {
        let stage = stage_name(&table, write, p);
        if complete_rows(&client, &stage).await?.is_none() {
            return Err(Error::config(format!(
                "partition {p} of write {} was not staged completely ({stage} is missing or incomplete): nothing was written",
                write.as_str()
            )));
        }
        stages.push(stage);
    }
    let engine = ingest::merge_stages(
        &mut client,
        &prepared,
        &table,
        &columns,
        &stages,
        &options,
        Some(params),
    )
    .await
    .map_err(|e| e.in_table(&table))?;
    drop_stages(&client, &table, write).await?;
    let mut report = LoadReport::default();
    report.count(engine);
    if report.inserted > 0 {
        report.notes = crate::sequence::advance_past_rows(
            &client,
            &table,
            crate::sequence::Columns::Indexed,
            "rows written",
        )
        .await;
    }
    report.rows_read = report.inserted + report.updated + report.unchanged + report.repeated;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Drops every stage of `write` into `opts.table`; how many there were.
pub async fn abort(
    params: &crate::conninfo::ConnParams,
    write: &WriteId,
    opts: &LoadOptions,
) -> Result<usize> {
    let client = crate::connect::connect(params).await?.client;
    let session = Session::read(&client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    Ok(drop_stages(&client, &table, write).await?.len())
}

/// A write's table as [`begin`] and [`commit`] see it.
struct Opened {
    client: Client,
    /// Qualified with the session's schema.
    table: TableName,
    prepared: ingest::Prepared,
    /// The `CREATE TABLE` inferred from the data, when the table is missing.
    created_ddl: Option<String>,
    chosen: crate::load::KeyAndMode,
    /// The table's columns the data fills.
    columns: Vec<String>,
}

/// Connects and plans the write of data of `schema` into `opts.table`
/// (created from the schema when missing and `create`), checking the key,
/// the mode and the data's columns against the table.
async fn open(
    params: &crate::conninfo::ConnParams,
    schema: &SchemaRef,
    opts: &LoadOptions,
    create: bool,
) -> Result<Opened> {
    let mut client = crate::connect::connect(params).await?.client;
    let session = Session::read(&client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let exists = table_exists(&client, &table).await?;
    let zone = (session.utc_offset != Some(0)).then(|| session.time_zone.clone());
    let (declaration, created_ddl) = declare(opts, &table, &session, exists, schema, create)?;
    let (prepared, facts, chosen) =
        crate::load::prepare_table(&mut client, session, &declaration, opts, &table, exists)
            .await?;
    let (columns, fields, _) = matched_columns(&facts, &table, schema, opts.ignore_extra)?;
    if let Some(zone) = &zone {
        refuse_instants_as_wall_times(&facts, &table, schema, &columns, &fields, zone)?;
    }
    Ok(Opened {
        client,
        table,
        prepared,
        created_ddl: created_ddl.filter(|_| !exists),
        chosen,
        columns,
    })
}

async fn table_exists(client: &Client, table: &TableName) -> Result<bool> {
    Ok(
        crate::catalog::table_oid(client, table.schema_or_public(), &table.name)
            .await?
            .is_some(),
    )
}

/// The rows of `stage` when it is complete; `None` when it is missing or
/// incomplete.
async fn complete_rows(client: &Client, stage: &TableName) -> Result<Option<u64>> {
    let row = client
        .query_opt(
            "SELECT pg_catalog.obj_description(c.oid, 'pg_class') \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&stage.schema_or_public(), &stage.name],
        )
        .await
        .map_err(|e| Error::server(&format!("reading the stage {stage}"), e))?;
    let comment: Option<String> = row.and_then(|r| r.get(0));
    Ok(comment
        .as_deref()
        .and_then(|c| c.strip_prefix(COMPLETE))
        .and_then(|n| n.parse().ok()))
}

/// The stages and open markers in `table`'s schema: `(name, write)`.
async fn stages_in(client: &Client, table: &TableName) -> Result<Vec<(String, WriteId)>> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname LIKE 'pgbulk\\_stage\\_%' \
             ORDER BY 1",
            &[&table.schema_or_public()],
        )
        .await
        .map_err(|e| Error::server("listing the stages", e))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let rest = name.strip_prefix(STAGE_PREFIX)?;
            let (id, partition) = rest.split_once('_')?;
            if partition != OPEN {
                partition.parse::<u32>().ok()?;
            }
            let write = WriteId::parse(id).ok()?;
            Some((name, write))
        })
        .collect())
}

/// Drops the stages of `write`, its marker first (waiting for an attempt
/// creating its stage); their names.
async fn drop_stages(client: &Client, table: &TableName, write: &WriteId) -> Result<Vec<String>> {
    let marker = open_marker(table, write);
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {}", marker.quoted()))
        .await
        .map_err(|e| Error::server(&format!("dropping the write's marker {marker}"), e))?;
    let mut dropped = Vec::new();
    for (name, w) in stages_in(client, table).await? {
        if w == *write {
            let stage = TableName::new(table.schema_or_public(), &name);
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", stage.quoted()))
                .await
                .map_err(|e| Error::server(&format!("dropping the stage {stage}"), e))?;
            dropped.push(stage.to_string());
        }
    }
    Ok(dropped)
}

/// Drops the stages of writes other than `current` that began more than
/// `stale_after` ago and that no attempt holds; their names.
async fn drop_stale(
    client: &Client,
    table: &TableName,
    current: &WriteId,
    stale_after: Duration,
) -> Result<Vec<String>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut dropped = Vec::new();
    for (name, write) in stages_in(client, table).await? {
        if write == *current || now.saturating_sub(write.began()) <= stale_after.as_secs() {
            continue;
        }
        let stage = TableName::new(table.schema_or_public(), &name);
        let key = stage_key(&stage);
        if !crate::lock::try_hold_key(client, &key).await? {
            continue;
        }
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", stage.quoted()))
            .await
            .map_err(|e| Error::server(&format!("dropping the stale stage {stage}"), e))?;
        crate::lock::release_key(client, &key).await?;
        dropped.push(stage.to_string());
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_named_by_when_it_began() {
        let w = WriteId::new().expect("random");
        assert_eq!(w.as_str().len(), 18);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now.abs_diff(w.began()) < 5, "{}", w.began());
        assert_eq!(WriteId::parse(w.as_str()).expect("parses"), w);
        assert!(WriteId::parse("x").is_err());
        assert!(WriteId::parse("00000000zz00000000").is_err());
        let t = TableName::new("sales", "stock");
        let s = stage_name(&t, &WriteId::parse("0000000001000000ff").expect("id"), 7);
        assert_eq!(s.to_string(), "sales.pgbulk_stage_0000000001000000ff_7");
    }
}
