//! `pgbulk sync`: a table (or the rows of it a `WHERE` selects, or the rows
//! of a query) of one PostgreSQL database into a table of another, columns
//! matched by name, never by position.
//!
//! Before anything is written the columns are compared: identical types
//! travel as they are, safe differences are cast in the source `SELECT`
//! (integer widening, integers to `numeric`, `varchar(n)` to `text` or a
//! wider `varchar`, `json`/`jsonb`, `uuid` or an enum to `text`,
//! `timestamp` to `timestamptz` in the source's time zone, arrays of
//! those element by element, a domain as its base type), and anything
//! else refuses the run, listing every mismatch. A destination that does
//! not exist is created from the source's columns, `NOT NULL`, constant
//! defaults, primary key, checks and indexes (`created.rs`); the identity
//! and serial sequences of an existing one are advanced past the values
//! copied.
//!
//! The rows are read with `COPY (SELECT ...) TO STDOUT (FORMAT csv)` in a
//! source session set for an exact text round trip (ISO dates, UTC, hex
//! bytea, shortest-exact floats) into a private spool file, which
//! [`crate::load`] then loads: the same modes, keys, upsert, batches,
//! ledger, migrations and lock policy. Memory does not grow with the
//! table; disk holds one copy of the rows read.
//!
//! Incremental (`incremental`): rows at or after the stored watermark are
//! read, in one snapshot with the new watermark, which is stored once every
//! row up to it committed, bounded as [`crate::mark`] says: exact for
//! columns stamped by the writing transaction's `now()` (or, for a `date`
//! column, its `current_date`), `lookback` for application clocks, integer
//! columns only without concurrent writers. Rows whose column is NULL are
//! read by every run. Rows re-read at the boundary are upserted unchanged (not
//! rewritten); an incremental sync needs a key.
//!
//! `delete_missing`: the keys read go (same snapshot) into a temporary
//! table of the destination session, and the destination rows within the
//! filter whose key is not among them are deleted in the last batch's
//! transaction.
//!
//! `jobs`: the source is read in ranges on several connections importing
//! one snapshot, each range committed and recorded on its own (see
//! `ranges.rs`).
//!
//! When every column read is of a built-in type and no `delete_missing`
//! asks for the keys, the spool and the text are skipped: the source's
//! binary COPY goes straight into the destination's (`passthrough.rs`): a
//! new destination created from the source's definition in one
//! transaction, each `jobs` range in one, anything else in batches cut at
//! tuple bounds.

use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;

mod columns;
mod created;
mod delete;
mod passthrough;
mod ranges;
mod source;
mod spool;
mod types;

use crate::catalog;
use crate::conninfo::ConnParams;
use crate::error::{Error, ErrorKind, Result};
use crate::ingest;
use crate::input::Source;
use crate::load::{LoadMode, LoadOptions, LoadReport, Progress};
pub(crate) use crate::mark::Mark;
use crate::mark::{self, Bound};
use crate::schema::{TableName, quote_ident};
use crate::session::Session;
use crate::watermark;
pub use columns::{ColumnMap, SourceTypes, create_ddl, map_columns};
use delete::{DeleteMissing, copy_keys, plan_delete, refuse_delete};
use source::{Described, describe};
use spool::Spool;

/// What a sync reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncSource {
    /// A table (or view).
    Table(TableName),
    /// The rows of a query (a `SELECT`): the destination must be named and
    /// a key given.
    Query(String),
}

impl std::fmt::Display for SyncSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Table(t) => write!(f, "{t}"),
            Self::Query(_) => f.write_str("the query"),
        }
    }
}

/// What to sync, and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// What is read.
    pub source: SyncSource,
    /// The destination table (default: the source's name).
    pub to: Option<TableName>,
    /// A filter on the source rows (SQL, run on the source).
    pub filter: Option<String>,
    /// As for `load`.
    pub mode: Option<LoadMode>,
    /// Key columns (destination names).
    pub key: Option<Vec<String>>,
    /// Source columns the destination lacks are left out instead of
    /// refusing the run.
    pub ignore_extra: bool,
    /// Rows per batch (0: the load's default, except that a new
    /// destination appended to by one job is filled in one transaction).
    pub batch_rows: u64,
    /// As for `load`.
    pub lock_policy: crate::lock::LockPolicy,
    /// Read only the rows whose value in this source column is at or after
    /// the stored watermark (see [`sync`]).
    pub incremental: Option<String>,
    /// Widen the re-read overlap by this much (an interval, e.g. `5
    /// minutes`), for columns stamped by application clocks.
    pub lookback: Option<std::time::Duration>,
    /// Plan only: say what would be read and how, write nothing.
    pub dry_run: bool,
    /// Delete the destination rows (within `filter`, evaluated on the
    /// destination too) whose key is not among the rows read, in the
    /// transaction of the last batch. Not with `incremental` or the
    /// replace modes.
    pub delete_missing: bool,
    /// Read and load this many ranges at once, from one snapshot (see
    /// the module documentation); 0 or 1: one stream.
    pub jobs: usize,
    /// Declared DDL of the destination (created or migrated like a load's
    /// `--schema`); the source's columns are matched against it.
    pub schema_ddl: Option<String>,
}

/// What a sync did: the load of the rows read, and what was read.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Rows read from the source.
    pub rows_read: u64,
    /// With `incremental`: the watermark the rows were read from, and the
    /// one stored for the next run (as the source prints the column).
    pub watermarks: Option<(Option<String>, Option<String>)>,
    /// The destination's side.
    pub load: LoadReport,
    /// How each destination column is filled (`column <- source expr`).
    pub mapping: Vec<String>,
    /// With `dry_run`: the destination's `CREATE TABLE` when it would be
    /// created, and the source query.
    pub plan: Vec<String>,
    /// What the user should know: sequences advanced, or not.
    pub notes: Vec<String>,
    /// With `jobs`: the ranges the source was read in.
    pub ranges: Option<usize>,
}

/// Syncs `opts.source` of the `source` session into the destination
/// (`dest`, a session to `dest_params`). See the module documentation.
pub async fn sync(
    source_params: &ConnParams,
    dest_params: &ConnParams,
    opts: &SyncOptions,
    progress: Arc<Progress>,
) -> Result<SyncReport> {
    let mut source = crate::connect::connect(source_params).await?.client;
    let settings = source
        .query_one(
            "SELECT current_setting('TimeZone'), current_setting('xmloption')",
            &[],
        )
        .await
        .map_err(|e| Error::server("reading the source's settings", e))?;
    let zone: String = settings.get(0);
    let xmloption: String = settings.get(1);
    // The destination reads the values as the source wrote them: a null
    // array element as NULL (the string is "NULL", quoted) whatever its own
    // array_nulls, XML as the source's xmloption accepted it.
    let mut dest_params = dest_params.with_setting("array_nulls", "on");
    if matches!(xmloption.as_str(), "content" | "document") {
        dest_params = dest_params.with_setting("xmloption", &xmloption);
    }
    let dest_params = &dest_params;
    let mut dest = crate::connect::connect(dest_params).await?.client;
    progress.register(&source);
    let Described {
        label: src_name,
        relation: src_relation,
        facts: src_facts,
        types,
        unique,
    } = describe(&source, opts).await?;
    if let Some(filter) = &opts.filter {
        check_filter(&source, &src_relation, filter).await?;
    }

    let dest_session = Session::read(&dest).await?;
    let to = match (&opts.to, &opts.source) {
        (Some(to), _) => to.clone(),
        (None, SyncSource::Table(table)) => table.clone(),
        (None, SyncSource::Query(_)) => {
            return Err(Error::config(
                "a sync of a query needs the destination table named (--to)",
            ));
        }
    };
    let dest_name = TableName::new(
        to.schema.as_deref().unwrap_or(&dest_session.current_schema),
        &to.name,
    );
    let dest_facts =
        match catalog::table_oid(&dest, dest_name.schema_or_public(), &dest_name.name).await? {
            Some(oid) => Some(catalog::facts::read(&dest, oid).await?),
            None => None,
        };
    // A table a stopped `--jobs` run created gets its key once its ranges
    // are in: only a run going on with them (in ranges) finishes it.
    if dest_facts.is_some()
        && (opts.delete_missing
            || matches!(opts.mode, Some(LoadMode::Replace | LoadMode::ReplaceAtomic)))
        && ranges::key_pending(&dest, &dest_name, &src_name).await?
    {
        return Err(Error::config(format!(
            "{dest_name} was created by a sync in ranges (--jobs) that stopped before every range was in: it gets its primary key once they are. Run that sync again (without --delete-missing or a replace mode) to finish it first"
        ))
        .in_table(&dest_name));
    }
    // A declared destination: its facts as declared (planned on the
    // destination, nothing changed yet); the load creates or migrates it.
    let declared = match &opts.schema_ddl {
        Some(ddl) => {
            let declaration =
                crate::schema::Declaration::parse(ddl)?.qualified(&dest_session.current_schema);
            if !declaration.tables().contains(&dest_name) {
                return Err(Error::config(format!(
                    "the schema does not declare {dest_name}"
                )));
            }
            let prepared =
                ingest::prepare_in(&mut dest, dest_session.clone(), &declaration).await?;
            let facts = prepared.facts(&dest_name).cloned();
            let steps: Vec<String> = prepared
                .plan()
                .steps
                .iter()
                .map(|s| s.summary.clone())
                .collect();
            facts.map(|f| (f, steps))
        }
        None => None,
    };
    let target_facts = declared.as_ref().map(|(f, _)| f).or(dest_facts.as_ref());
    let (mut maps, schema_ddl) = match target_facts {
        Some(d) => {
            let maps = map_columns(&src_facts, &types, d, opts.ignore_extra, &zone).map_err(
                |mismatches| {
                    Error::new(
                        ErrorKind::Data,
                        format!(
                            "{src_name} does not fit {dest_name}; nothing was written:\n  {}",
                            mismatches.join("\n  ")
                        ),
                    )
                    .in_table(&dest_name)
                },
            )?;
            (maps, opts.schema_ddl.clone())
        }
        // Made below, once the creation says which columns it computes.
        None => (Vec::new(), None),
    };
    // A destination created from the source's definition: the source's
    // user-defined types it lacks are created first, its checks and
    // indexes with it.
    let type_oids: Vec<_> = src_facts.columns.iter().map(|c| c.type_oid).collect();
    let needed_types = if target_facts.is_none() {
        types::missing(&mut source, &dest, &type_oids).await?
    } else {
        Vec::new()
    };
    let mut creation = None;
    let schema_ddl = if target_facts.is_none() {
        let made = created::creation(
            &mut source,
            &mut dest,
            &dest_name,
            &src_facts,
            &needed_types,
        )
        .await?;
        let ddl = made.ddl();
        // Every column but those the destination computes (as the source
        // does).
        maps = src_facts
            .columns
            .iter()
            .filter(|c| !made.generated.contains(&c.name))
            .map(|c| ColumnMap {
                to: c.name.clone(),
                expr: quote_ident(&c.name),
            })
            .collect();
        creation = Some(made);
        Some(ddl)
    } else {
        schema_ddl
    };
    let creation_notes: Vec<String> = creation
        .as_mut()
        .map(|c| std::mem::take(&mut c.notes))
        .unwrap_or_default();
    if maps.is_empty() {
        return Err(Error::config(format!(
            "no column of {src_name} matches a column of {dest_name}"
        )));
    }

    let delete = match (&dest_facts, opts.delete_missing) {
        (Some(d), true) => Some(plan_delete(&dest, &dest_name, d, &maps, opts).await?),
        (None, true) => {
            refuse_delete(opts)?;
            None
        }
        _ => None,
    };

    // Incremental: where to read from, and the bound of the next start.
    let mut filter_changed = None;
    let mut stale = None;
    let incremental = match &opts.incremental {
        Some(column) => {
            let c = src_facts.column(column).ok_or_else(|| {
                Error::config(format!(
                    "--incremental: {src_name} has no column \"{column}\""
                ))
            })?;
            mark::check_orderable(&source, &src_relation, column, &c.type_name, &src_name).await?;
            if opts.mode == Some(LoadMode::Append)
                || opts.mode == Some(LoadMode::ReplaceAtomic)
                || opts.mode == Some(LoadMode::Replace)
            {
                return Err(Error::config(
                    "--incremental re-reads the rows at its boundary: it needs an upsert (a key), not append or replace",
                ));
            }
            let key = watermark::key(&dest_name, Some(&format!("sync:{src_name}.{column}")));
            let stored = watermark::read(&dest, &dest_name, &key)
                .await?
                .as_ref()
                .and_then(Mark::from_json);
            // The watermark of another --where: what the new one adds
            // before it is not read.
            if stored.is_some() {
                let metadata = watermark::read_metadata(&dest, &dest_name, &key).await?;
                if let Some(before) = metadata.as_ref().and_then(|m| m.get("where")) {
                    filter_changed =
                        mark::filter_changed("a sync", before.as_str(), opts.filter.as_deref());
                }
            }
            // A watermark goes with its table: one stored before the
            // destination was dropped would skip every row before it. (One
            // of a table emptied since stands: rows a downstream job took
            // out of it are not read again. A sync without --incremental
            // reads everything once.)
            let stored = match (stored, &dest_facts) {
                (Some(_), None) => {
                    stale = Some(format!(
                        "{dest_name} did not exist, though an earlier sync stored a watermark for it: read from the start"
                    ));
                    None
                }
                (stored, _) => stored,
            };
            // No stored watermark: start after what the destination has.
            let start = match (stored, &dest_facts) {
                (Some(w), _) => Some(w),
                (None, Some(d)) if d.column(column).is_some() => dest
                    .query_one(
                        &format!(
                            "SELECT max({})::text FROM {}",
                            quote_ident(column),
                            dest_name.quoted()
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| Error::server("reading the destination's newest row", e))?
                    .get::<_, Option<String>>(0)
                    .map(Mark::at),
                _ => None,
            };
            Some(Incremental {
                column: column.clone(),
                type_name: c.type_name.clone(),
                key,
                start,
                nullable: !c.not_null,
            })
        }
        None => None,
    };
    // Before the snapshot: the oldest transaction open on the source.
    let bound = match &incremental {
        Some(inc) => Bound::read(&source, &inc.type_name).await?,
        None => None,
    };
    // --delete-missing needs every key in one session, and replace
    // deletes with its first batch: one job.
    let one_job =
        delete.is_some() || matches!(opts.mode, Some(LoadMode::Replace | LoadMode::ReplaceAtomic));
    let jobs = if one_job { 1 } else { opts.jobs.max(1) };
    let version = Session::read(&source).await?.server_version;
    if opts.dry_run {
        let mut plan = Vec::new();
        match (&declared, &schema_ddl) {
            (Some((_, steps)), _) if steps.is_empty() => {
                plan.push(format!("{dest_name} is as declared: no migration"));
            }
            (Some((_, steps)), _) => plan.push(format!(
                "{dest_name} would be brought to the declared schema:\n  {}",
                steps.join("\n  ")
            )),
            (None, Some(ddl)) => plan.push(format!(
                "{dest_name} does not exist: it would be created as\n{}{ddl}",
                needed_types
                    .iter()
                    .map(|t| format!("{}\n", t.ddl))
                    .collect::<String>()
            )),
            (None, None) => {}
        }
        let start = incremental
            .as_ref()
            .map(|inc| Mark::describe(inc.start.as_ref(), &inc.column, inc.nullable));
        plan.push(format!(
            "would read {src_name}{}{} into {dest_name}",
            opts.filter
                .as_deref()
                .map(|w| format!(" WHERE {w}"))
                .unwrap_or_default(),
            start.map(|s| format!(", {s}")).unwrap_or_default()
        ));
        if let Some(delete) = &delete {
            plan.push(format!(
                "would delete the rows of {dest_name}{} whose key ({}) is not among them, with the last batch",
                opts.filter
                    .as_deref()
                    .map(|w| format!(" WHERE {w}"))
                    .unwrap_or_default(),
                delete.key.join(", ")
            ));
        }
        if jobs > 1 {
            let reading = Reading {
                label: src_name.clone(),
                relation: src_relation.clone(),
                select: String::new(),
                filters: opts.filter.iter().map(|w| format!("({w})")).collect(),
            };
            let ranges =
                ranges::split(&source, &src_facts, unique, &reading, version, jobs).await?;
            plan.push(if ranges.len() > 1 {
                format!(
                    "in {} ranges read at once from one snapshot:\n  {}",
                    ranges.len(),
                    ranges.join("\n  ")
                )
            } else {
                ranges::one_range(&src_facts)
            });
        }
        // What the watermark cannot see past, said before a run too.
        if let Some(bound) = &bound {
            plan.extend(bound.notes(opts.lookback.is_some()));
        }
        plan.extend(filter_changed.clone());
        plan.extend(creation_notes);
        return Ok(SyncReport {
            mapping: maps
                .iter()
                .map(|m| format!("{} <- {}", m.to, m.expr))
                .collect(),
            watermarks: incremental.map(|inc| (inc.start.map(|m| m.value), None)),
            plan,
            ..SyncReport::default()
        });
    }
    let mut created_types = Vec::new();
    for made in types::create(&mut source, &mut dest, &type_oids, needed_types).await? {
        created_types.push(format!(
            "created {} {} in the destination, as the source defines it",
            made.what, made.name
        ));
    }
    // Into a new or empty destination keyed like the source, the source's
    // rows are unique by that key: they are appended (straight COPY), not
    // merged. A destination that has rows (another run's, a killed one's)
    // is upserted.
    let unique_in_source = |key: &[String]| {
        unique
            && src_facts
                .primary_key
                .as_ref()
                .is_some_and(|(_, pk)| pk.as_slice() == key)
    };
    // The destination's key, when it is the source's primary key: the
    // rows read are unique by it.
    let dest_key = opts
        .key
        .clone()
        .unwrap_or_else(|| match (&dest_facts, &declared) {
            (Some(d), _) => d.key().to_vec(),
            (None, Some((d, _))) => d.key().to_vec(),
            (None, None) => src_facts.key().to_vec(),
        });
    let keys_unique = unique_in_source(&dest_key);
    // A destination without a key is appended to: without --batch-rows,
    // a run's rows (each range's, with --jobs) go in one transaction, so a
    // run cut short leaves none of them and its rerun appends them once.
    let append_whole = opts.batch_rows == 0
        && dest_key.is_empty()
        && delete.is_none()
        && matches!(opts.mode, None | Some(LoadMode::Append));
    let empty_twin = match (&dest_facts, &declared) {
        (None, None) => unique,
        (None, Some((d, _))) => {
            unique_in_source(&opts.key.clone().unwrap_or_else(|| d.key().to_vec()))
        }
        (Some(d), _) => {
            let key = opts.key.clone().unwrap_or_else(|| d.key().to_vec());
            !key.is_empty()
                && unique_in_source(&key)
                && dest
                    .query_one(
                        &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", dest_name.quoted()),
                        &[],
                    )
                    .await
                    .map_err(|e| Error::server(&format!("reading {dest_name}"), e))?
                    .get::<_, bool>(0)
        }
    };
    // A new destination filled by appending, in one job: in one transaction
    // (the table is created in it, its rows are written frozen and its
    // indexes built once they are in; a run cut short leaves no table).
    let one_transaction = dest_facts.is_none() && empty_twin && opts.batch_rows == 0;
    // An existing empty destination filled by appending, in one job: in
    // one batch, into a new copy of it (written frozen, indexed once the
    // rows are in, swapped in) as `load` fills an empty table (5 M narrow
    // rows: 3.7 s, against 5.5 s in batches of 1 M rows, each maintaining
    // the key's index).
    let fill_existing = dest_facts.is_some() && empty_twin && opts.batch_rows == 0 && jobs == 1;
    let mut load_opts = LoadOptions {
        table: dest_name.clone(),
        detect_delimiter: false,
        schema_ddl,
        mode: match opts.mode {
            None if empty_twin => Some(LoadMode::Append),
            m => m,
        },
        key: opts.key.clone(),
        batch_rows: if opts.batch_rows > 0 {
            opts.batch_rows
        } else if append_whole {
            u64::MAX
        } else {
            LoadOptions::default().batch_rows
        },
        lock_policy: opts.lock_policy.clone(),
        // The spool is new each run: no ledger of it (an upsert of rows
        // an earlier run loaded changes nothing).
        ledger: false,
        // A sync sets no rows aside: the server's words are the message.
        max_errors_hint: false,
        // Not the spool's path and line: the source.
        input_label: Some(format!("{src_name} (source)")),
        streams: 1,
        // Jobs (`--jobs`) are how a sync runs on several connections.
        upsert_streams: Some(1),
        // An empty table with an index filled as a new copy of it, as
        // `load` does; not where jobs load ranges into the same table at
        // once, nor under --delete-missing's hook.
        fill_empty: jobs == 1 && delete.is_none(),
        ..LoadOptions::default()
    };

    let tx = snapshot(&mut source).await?;
    let mut filters: Vec<String> = opts.filter.iter().map(|w| format!("({w})")).collect();
    let mut next = None;
    if let Some(inc) = &incremental {
        if let Some(start) = &inc.start {
            filters.push(start.condition(&inc.column, &inc.type_name, opts.lookback, inc.nullable));
        }
        next = mark::next(
            &tx,
            &inc.column,
            &inc.type_name,
            &src_relation,
            opts.filter.as_deref(),
            inc.start.as_ref(),
            bound.as_ref(),
        )
        .await?;
    }
    // The rows, spooled: an exact text round trip.
    tx.batch_execute(EXACT_TEXT)
        .await
        .map_err(|e| Error::server("setting up the source session", e))?;
    let select: Vec<String> = maps
        .iter()
        .map(|m| format!("{} AS {}", m.expr, quote_ident(&m.to)))
        .collect();
    let reading = Reading {
        label: src_name.clone(),
        relation: src_relation.clone(),
        select: select.join(", "),
        filters,
    };
    let split = if one_job {
        None
    } else {
        let ledger = ranges::Ledger::new(&dest_name, &reading);
        let mut pending = ledger.pending(&dest).await?;
        // The ranges an interrupted run finished go with the table: not
        // done after it was dropped.
        if pending.is_some() && dest_facts.is_none() {
            ledger.forget(&dest).await?;
            pending = None;
        }
        // An interrupted run's ranges are gone on with whatever --jobs
        // says now: read whole, the rows of the ranges it finished would
        // be appended a second time to a table without a key.
        let split = match &pending {
            Some(p) => p.ranges.clone(),
            None => ranges::split(&tx, &src_facts, unique, &reading, version, jobs).await?,
        };
        (split.len() > 1 || pending.is_some()).then_some((split, ledger))
    };
    let mut passed_through = false;
    // The destination session, when the load leaves it for what follows.
    let mut kept = None;
    let (load, ranged) = match split {
        Some((split, ledger)) => {
            // Each range in one transaction, passed through, unless batches
            // were asked for.
            let binary = opts.batch_rows == 0 && passthrough::eligible(&tx, &reading).await?;
            passed_through = binary;
            let spool = if binary { None } else { Some(Spool::new()?) };
            // Created once, before the ranges load at once; its indexes
            // after them (see `ranges::Ledger::finish`), and its primary
            // key too where the rows are appended, unique by it, each
            // range in one transaction (so none is appended twice): two
            // ranges of 5 M narrow rows into a new table took 9.2-10.4 s
            // with the key's index, 6.2-6.5 s without.
            let (indexes, add_key) = match &creation {
                Some(c) => {
                    let later = c.key_later.as_ref().filter(|_| {
                        keys_unique
                            && load_opts.mode == Some(LoadMode::Append)
                            && opts.batch_rows == 0
                    });
                    load_opts.schema_ddl = Some(
                        later
                            .map(|(unkeyed, _)| unkeyed)
                            .unwrap_or(&c.table)
                            .clone(),
                    );
                    (c.indexes.clone(), later.map(|(_, add)| add.clone()))
                }
                None => (Vec::new(), None),
            };
            if !indexes.is_empty() || add_key.is_some() {
                // The plan before the table: a run stopped once the table
                // is there goes on with the plan, and builds them.
                let schema = dest_name.schema_or_public();
                // (Not asked when it exists: that needs CREATE on the
                // database even then.)
                let there = dest
                    .query_opt(
                        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                        &[&schema],
                    )
                    .await
                    .map_err(|e| Error::server("looking up the destination's schema", e))?
                    .is_some();
                if !there {
                    dest.batch_execute(&format!(
                        "CREATE SCHEMA IF NOT EXISTS {}",
                        quote_ident(schema)
                    ))
                    .await
                    .map_err(|e| Error::server("creating the destination's schema", e))?;
                }
                watermark::ensure(&dest, schema).await?;
                ledger
                    .start(&dest, &split, next.as_ref(), (&indexes, add_key.as_deref()))
                    .await?;
            }
            crate::load::settle_declared(&mut dest, &load_opts).await?;
            load_opts.schema_ddl = None;
            drop(dest);
            let run = ranges::Run {
                source: source_params,
                dest: dest_params,
                load: load_opts,
                spool: spool.as_ref().map(Spool::dir),
                progress: progress.clone(),
                binary: binary.then(|| maps.iter().map(|m| m.to.clone()).collect()),
                keys_unique,
                indexes,
                add_key,
            };
            let outcome = ranges::run(tx, run, &reading, &ledger, split, next.clone()).await?;
            next = outcome.next.clone();
            let mut client = crate::connect::connect(dest_params).await?.client;
            let stored = match (&incremental, &next) {
                (Some(inc), Some(next)) => Some((
                    inc.key.as_str(),
                    next.to_json(),
                    watermark_metadata(&src_name, inc, opts.filter.as_deref()),
                )),
                _ => None,
            };
            ledger
                .finish(
                    &mut client,
                    stored,
                    (&outcome.indexes, outcome.add_key.as_deref()),
                    &opts.lock_policy,
                )
                .await?;
            let load = outcome.load.clone();
            (load, Some(outcome))
        }
        None if delete.is_none()
            && matches!(
                load_opts.mode,
                None | Some(LoadMode::Upsert | LoadMode::Append)
            )
            && passthrough::eligible(&tx, &reading).await? =>
        {
            // The binary COPY passed through: into a new table in one
            // transaction, else cut into batches at tuple bounds, each
            // committed on its own.
            let passage = passthrough::Passage {
                reading: &reading,
                range: None,
                label: reading.label.clone(),
                columns: maps.iter().map(|m| m.to.clone()).collect(),
                before_visible: None,
                batch_rows: if one_transaction || fill_existing {
                    u64::MAX
                } else {
                    load_opts.batch_rows
                },
                keys_unique,
                fill_empty: fill_existing,
                // A full sync (an incremental one reads a few rows, which
                // the probe would split into two batches).
                probe: opts.batch_rows == 0
                    && dest_facts.is_some()
                    && !fill_existing
                    && !append_whole
                    && incremental.is_none(),
            };
            let mut dest = dest;
            let load = passthrough::run(&tx, passage, &mut dest, &load_opts, progress).await?;
            kept = Some(dest);
            tx.commit()
                .await
                .map_err(|e| Error::server("ending the source snapshot", e))?;
            passed_through = true;
            (load, None)
        }
        None => {
            let spool = Spool::new()?;
            let path = spool.path("rows.csv");
            spool_rows(&tx, &reading.copy(), &path, &src_name).await?;
            // --delete-missing: the keys read, in the same snapshot, into
            // a temporary table of the destination session the load runs
            // on.
            let mut deleted = None;
            if let Some(delete) = &delete {
                let keys = copy_keys(
                    &tx,
                    &dest,
                    &dest_name,
                    &src_relation,
                    &reading.filter(),
                    delete,
                )
                .await?;
                let hook = Arc::new(DeleteMissing {
                    sql: delete.sql(&dest_name, opts.filter.as_deref(), keys > 0),
                    deleted: std::sync::atomic::AtomicU64::new(0),
                    ran: std::sync::atomic::AtomicBool::new(false),
                });
                if keys == 0 {
                    // No batch will run the hook: nothing read, every row
                    // of the window goes.
                    let tx = dest
                        .transaction()
                        .await
                        .map_err(|e| Error::server("starting the delete", e))?;
                    ingest::BeforeVisible::call(hook.as_ref(), &tx, &ingest::BatchInfo::default())
                        .await?;
                    tx.commit()
                        .await
                        .map_err(|e| Error::server(&format!("deleting from {dest_name}"), e))?;
                } else {
                    load_opts.before_final_commit = Some(crate::load::FinalHook(hook.clone()));
                }
                deleted = Some(hook);
            }
            tx.commit()
                .await
                .map_err(|e| Error::server("ending the source snapshot", e))?;
            load_opts.sources = vec![Source::File(path)];
            load_opts.single_transaction =
                one_transaction && load_opts.mode == Some(LoadMode::Append);
            let mut load = crate::load::load(dest, dest_params, &load_opts, progress).await?;
            if let Some(hook) = &deleted {
                if !hook.ran.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "the rows of {dest_name} missing from the source were not deleted: no batch read the rows to their end"
                        ),
                    ));
                }
                load.deleted += hook.deleted.load(std::sync::atomic::Ordering::SeqCst);
            }
            (load, None)
        }
    };
    // What follows the load (the watermark, the sequences, the run's
    // record) shares one session of the destination.
    let mut after = LazySession::new(dest_params, kept);
    if ranged.is_none() {
        // (Ranges store it with the ledger's end.)
        store_watermark(
            &mut after,
            &dest_name,
            (&src_name, opts.filter.as_deref()),
            incremental.as_ref(),
            next.as_ref(),
        )
        .await?;
    }
    drop(source);
    let mut notes = created_types;
    notes.extend(creation_notes);
    if load.inserted > 0 {
        notes.extend(advance_sequences(&mut after, &dest_name, &maps).await);
    }
    if passed_through {
        notes.push(if ranged.is_some() {
            "each range in one transaction, the source's binary COPY passed through (no spool)"
                .to_owned()
        } else if one_transaction && load.batches <= 1 {
            "a new table, filled in one transaction with the source's binary COPY passed through (no spool)"
                .to_owned()
        } else {
            "the source's binary COPY passed through (no spool)".to_owned()
        });
    }
    if let Some(bound) = &bound {
        notes.extend(bound.notes(opts.lookback.is_some()));
    }
    notes.extend(filter_changed);
    notes.extend(stale);
    if opts.jobs > 1 && jobs == 1 {
        notes.push(
            "read with one job: --delete-missing and the replace modes read in one".to_owned(),
        );
    } else if jobs > 1 && ranged.is_none() {
        notes.push(ranges::one_range(&src_facts));
    }
    if let Some(r) = &ranged {
        if r.done_before > 0 {
            notes.push(format!(
                "{} of {} ranges were synced by an interrupted run and skipped; the others were read now",
                r.done_before, r.ranges
            ));
        }
    }
    let counts = crate::status::counts("sync", &load, load.rows_read);
    let recorded = async {
        let dest = after.client().await?;
        crate::status::record_run(dest, &dest_name, counts).await
    };
    if let Err(e) = recorded.await {
        tracing::warn!("the sync committed, but recording it as the table's last run failed: {e}");
    }
    Ok(SyncReport {
        notes,
        rows_read: load.rows_read,
        ranges: ranged.map(|r| r.ranges),
        watermarks: incremental.map(|inc| (inc.start.map(|m| m.value), next.map(|m| m.value))),
        plan: Vec::new(),
        mapping: maps
            .iter()
            .map(|m| format!("{} <- {}", m.to, m.expr))
            .collect(),
        load,
    })
}

/// A session of the destination opened when first needed (unless one was
/// at hand), then reused.
struct LazySession<'a> {
    params: &'a ConnParams,
    client: Option<tokio_postgres::Client>,
}

impl<'a> LazySession<'a> {
    /// The session `client`, or one of `params` when first needed.
    fn new(params: &'a ConnParams, client: Option<tokio_postgres::Client>) -> Self {
        Self { params, client }
    }

    /// The session, connected now if it is not yet (a failed connection
    /// is tried again by the next call).
    async fn client(&mut self) -> Result<&tokio_postgres::Client> {
        let client = match self.client.take() {
            Some(client) => client,
            None => crate::connect::connect(self.params).await?.client,
        };
        Ok(self.client.insert(client))
    }
}

/// Stores the next watermark of an incremental sync, once every row up to
/// it committed.
async fn store_watermark(
    after: &mut LazySession<'_>,
    dest_name: &TableName,
    (source, filter): (&str, Option<&str>),
    incremental: Option<&Incremental>,
    next: Option<&Mark>,
) -> Result<()> {
    let (Some(inc), Some(next)) = (incremental, next) else {
        return Ok(());
    };
    let dest = after.client().await?;
    watermark::ensure(dest, dest_name.schema_or_public()).await?;
    watermark::write(
        dest,
        dest_name,
        &inc.key,
        Some(&next.to_json()),
        &watermark_metadata(source, inc, filter),
        None,
    )
    .await
}

/// What is stored with an incremental sync's watermark: the source, the
/// column and the `--where` (`null` without), which a later run compares.
fn watermark_metadata(source: &str, inc: &Incremental, filter: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "source": source, "column": inc.column, "where": filter })
}

/// A read-only `REPEATABLE READ` transaction: one snapshot of the source,
/// read with `row_security` off (as `pg_dump` reads): a role whose
/// row-level security would hide rows gets the server's error, not a
/// partial copy (nor, with `--delete-missing`, deletes of the rows it
/// cannot see).
pub(crate) async fn snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| Error::server("starting a snapshot of the source", e))?;
    tx.batch_execute("SET LOCAL row_security = off")
        .await
        .map_err(|e| Error::server("turning row_security off", e))?;
    Ok(tx)
}

/// The session settings for an exact text round trip of every value.
const EXACT_TEXT: &str = "SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; \
     SET LOCAL TimeZone = 'UTC'; SET LOCAL bytea_output = 'hex'; SET LOCAL extra_float_digits = 3";

/// What is read from the source: columns (cast), relation and conditions.
#[derive(Debug, Clone)]
pub(super) struct Reading {
    /// How messages name the source.
    pub(super) label: String,
    /// What `FROM` reads.
    pub(super) relation: String,
    /// The `SELECT` list.
    pub(super) select: String,
    /// Conditions on the rows (`--where`, the incremental start).
    pub(super) filters: Vec<String>,
}

impl Reading {
    /// ` WHERE ...` of the conditions, or nothing.
    pub(super) fn filter(&self) -> String {
        self.filter_and("")
    }

    /// ` WHERE ...` of the conditions and `more` (if not empty).
    pub(super) fn filter_and(&self, more: &str) -> String {
        let mut all: Vec<String> = self.filters.clone();
        if !more.is_empty() {
            all.push(format!("({more})"));
        }
        if all.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", all.join(" AND "))
        }
    }

    /// The `COPY` of the rows as CSV with a header.
    fn copy(&self) -> String {
        format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT csv, HEADER)",
            self.select,
            self.relation,
            self.filter()
        )
    }
}

/// Runs `copy` (a `COPY ... TO STDOUT`) in `tx` into the file `path`;
/// `what` names the source in errors.
pub(super) async fn spool_rows(
    tx: &tokio_postgres::Transaction<'_>,
    copy: &str,
    path: &std::path::Path,
    what: &str,
) -> Result<()> {
    let stream = tx
        .copy_out(copy)
        .await
        .map_err(|e| Error::server(&format!("reading {what}"), e))?;
    futures_util::pin_mut!(stream);
    let file = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let mut file = std::io::BufWriter::new(file);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::server(&format!("reading {what}"), e))?;
        file.write_all(&chunk)
            .map_err(|e| Error::io("writing the spool file", e))?;
    }
    file.flush()
        .map_err(|e| Error::io("writing the spool file", e))
}

/// Advances the identity and serial sequences of the destination's
/// columns filled from the source past the rows now in them
/// ([`crate::sequence::advance_past_rows`]).
async fn advance_sequences(
    after: &mut LazySession<'_>,
    dest: &TableName,
    maps: &[ColumnMap],
) -> Vec<String> {
    let filled: Vec<String> = maps.iter().map(|m| m.to.clone()).collect();
    match after.client().await {
        Ok(client) => {
            crate::sequence::advance_past_rows(
                client,
                dest,
                crate::sequence::Columns::Named(&filled),
                "rows copied",
            )
            .await
        }
        Err(e) => vec![format!(
            "the sequences of {dest} were not advanced past the rows copied: {e}"
        )],
    }
}

/// Prepares (does not run) the source's `SELECT` with `--where filter`,
/// so that a filter the server rejects says so before anything is created
/// or read, naming it.
pub(crate) async fn check_filter(
    source: &tokio_postgres::Client,
    relation: &str,
    filter: &str,
) -> Result<()> {
    source
        .prepare(&format!("SELECT 1 FROM {relation} WHERE ({filter})"))
        .await
        .map(drop)
        .map_err(|e| Error::server(&format!("--where {filter}"), e))
}

/// An incremental sync's column and where it starts.
#[derive(Debug)]
struct Incremental {
    column: String,
    type_name: String,
    /// Its row in the destination's watermark table.
    key: String,
    /// Read from here; `None`: everything.
    start: Option<Mark>,
    /// The column may be NULL: such rows are read by every run.
    nullable: bool,
}
