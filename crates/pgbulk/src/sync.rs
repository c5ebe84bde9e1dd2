//! `pgbulk sync`: a table (or the rows of it a `WHERE` selects, or the rows
//! of a query) of one PostgreSQL database into a table of another, columns
//! matched by name, never by position.
//!
//! Before anything is written the columns are compared: identical types
//! travel as they are, safe differences are cast in the source `SELECT`
//! (integer widening, integers to `numeric`, `varchar(n)` to `text` or a
//! wider `varchar`, `json`/`jsonb`, `uuid` or an enum to `text`,
//! `timestamp` to `timestamptz` in the source's time zone), and anything
//! else refuses the run, listing every mismatch. A destination that does
//! not exist is created from the source's columns, `NOT NULL`, constant
//! defaults and primary key; the identity and serial sequences of an
//! existing one are advanced past the values copied.
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
//! row up to it committed. For a `timestamptz`/`timestamp` column the new
//! watermark is never later than the start of the oldest transaction open
//! on the source database just before the snapshot (nor advanced while
//! prepared transactions exist): a transaction that stamps rows with its
//! `now()` and commits after the read is read by the next run. That is
//! exact for columns stamped by the writing transaction's `now()` (default
//! or trigger); for application clocks use `lookback`; for integer and
//! `date` columns the watermark is the largest value read (exact only
//! without concurrent writers). Rows re-read at the boundary are upserted
//! unchanged (not rewritten); an incremental sync needs a key.
//!
//! `delete_missing`: the keys read go (same snapshot) into a temporary
//! table of the destination session, and the destination rows within the
//! filter whose key is not among them are deleted in the last batch's
//! transaction.
//!
//! Not yet: `--jobs` over one exported snapshot, binary pass-through.

use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::Client;

use crate::catalog::{self, ColumnFacts, TableFacts};
use crate::error::{Error, ErrorKind, Result};
use crate::ingest;
use crate::input::Source;
use crate::load::{LoadMode, LoadOptions, LoadReport, Progress};
use crate::schema::{TableName, quote_ident, quote_literal};
use crate::session::Session;
use crate::watermark;

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
    /// Rows per batch (0: the load's default).
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
}

/// One destination column and the source expression that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// The destination column.
    pub to: String,
    /// The source `SELECT` expression (the column, or its cast).
    pub expr: String,
}

/// Matches the source's columns to the destination's by name, casting
/// safe differences (`source_zone`: the source's `TimeZone`, for
/// `timestamp` into `timestamptz`; `enums`: source columns of enum types).
/// Every mismatch is listed in the error; nothing is written before this
/// passes.
pub fn map_columns(
    source: &TableFacts,
    enums: &[String],
    dest: &TableFacts,
    ignore_extra: bool,
    source_zone: &str,
) -> std::result::Result<Vec<ColumnMap>, Vec<String>> {
    let mut maps = Vec::new();
    let mut mismatches = Vec::new();
    for s in source.columns.iter().filter(|c| c.generated.is_none()) {
        let Some(d) = dest.column(&s.name) else {
            if !ignore_extra {
                mismatches.push(format!(
                    "column \"{}\" ({}) is not in the destination (--ignore-extra leaves it out)",
                    s.name, s.type_name
                ));
            }
            continue;
        };
        if d.generated.is_some() {
            continue;
        }
        let col = quote_ident(&s.name);
        match cast(s, enums.contains(&s.name), d, source_zone) {
            Ok(None) => maps.push(ColumnMap {
                to: d.name.clone(),
                expr: col,
            }),
            Ok(Some(expr)) => maps.push(ColumnMap {
                to: d.name.clone(),
                expr,
            }),
            Err(why) => mismatches.push(format!(
                "column \"{}\": source {}, destination {}: {why}",
                s.name, s.type_name, d.type_name
            )),
        }
    }
    for d in &dest.columns {
        let filled = maps.iter().any(|m| m.to == d.name);
        let required =
            d.not_null && d.default.is_none() && d.identity.is_none() && d.generated.is_none();
        if !filled && required && source.column(&d.name).is_none() {
            mismatches.push(format!(
                "column \"{}\" ({}) of the destination is NOT NULL without a default, and the source has no such column",
                d.name, d.type_name
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(maps)
    } else {
        Err(mismatches)
    }
}

/// How source column `s` fills destination column `d`: as it is
/// (`None`), through a cast (the expression), or not at all (why).
fn cast(
    s: &ColumnFacts,
    is_enum: bool,
    d: &ColumnFacts,
    source_zone: &str,
) -> std::result::Result<Option<String>, String> {
    let (from, to) = (s.type_name.as_str(), d.type_name.as_str());
    if from == to {
        return Ok(None);
    }
    let col = quote_ident(&s.name);
    let integers = ["smallint", "integer", "bigint"];
    let rank = |t: &str| integers.iter().position(|i| *i == t);
    let safe = match (from, to) {
        _ if rank(from).is_some() && rank(to).is_some() => rank(from) < rank(to),
        _ if rank(from).is_some() => to == "numeric",
        ("json", "jsonb") | ("jsonb", "json") | ("uuid", "text") => true,
        (_, "text") if is_enum => true,
        ("timestamp without time zone", "timestamp with time zone") => {
            return Ok(Some(format!(
                "({col} AT TIME ZONE {})",
                quote_literal(source_zone)
            )));
        }
        // varchar(n) into text or a varchar as long or longer.
        _ => crate::plan::is_widening(from, to),
    };
    if safe {
        Ok(Some(format!("{col}::{to}")))
    } else {
        Err("not a safe conversion (it could fail or change values)".to_owned())
    }
}

/// The `CREATE TABLE` of a destination made from the source's columns
/// (generated ones left out), `NOT NULL`, defaults that are constants and
/// primary key.
pub fn create_ddl(dest: &TableName, source: &TableFacts) -> String {
    let mut lines: Vec<String> = source
        .columns
        .iter()
        .filter(|c| c.generated.is_none())
        .map(|c| {
            let default = c
                .raw_default
                .as_deref()
                .filter(|d| c.identity.is_none() && is_constant(d))
                .map(|d| format!(" DEFAULT {d}"))
                .unwrap_or_default();
            format!(
                "    {} {}{default}{}",
                quote_ident(&c.name),
                c.type_name,
                if c.not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    if let Some((_, key)) = &source.primary_key {
        let cols: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
        lines.push(format!("    PRIMARY KEY ({})", cols.join(", ")));
    }
    format!(
        "CREATE TABLE {} (\n{}\n);\n",
        dest.quoted(),
        lines.join(",\n")
    )
}

/// Whether a default expression (as `pg_get_expr` prints it) is a
/// constant: one literal (a quoted string, a number, `true`, `false`,
/// `NULL`), possibly parenthesised, then only casts. Functions (`now()`,
/// `nextval(...)`), operators and anything else are not.
fn is_constant(expr: &str) -> bool {
    let e = expr.trim();
    let casts = if let Some(body) = e.strip_prefix('\'') {
        let bytes = body.as_bytes();
        let mut i = 0;
        loop {
            match bytes.get(i) {
                None => return false,
                Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        &body[i + 1..]
    } else {
        let end = e.find("::").unwrap_or(e.len());
        let core = &e[..end];
        let inner = core
            .strip_prefix('(')
            .and_then(|c| c.strip_suffix(')'))
            .unwrap_or(core);
        let number = inner.starts_with(|c: char| c.is_ascii_digit() || c == '-')
            && inner.chars().any(|c| c.is_ascii_digit())
            && inner
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        if !(number || matches!(inner, "true" | "false" | "NULL")) {
            return false;
        }
        &e[end..]
    };
    casts.is_empty()
        || casts.strip_prefix("::").is_some_and(|types| {
            types.split("::").all(|t| {
                !t.trim().is_empty()
                    && t.chars().all(|c| {
                        c.is_alphanumeric()
                            || matches!(c, '_' | ' ' | '.' | '"' | '[' | ']' | '(' | ')' | ',')
                    })
            })
        })
}

/// Syncs `opts.source` of the `source` session into the destination
/// (`dest`, a session to `dest_params`). See the module documentation.
pub async fn sync(
    source: Client,
    mut dest: Client,
    dest_params: &crate::conninfo::ConnParams,
    opts: &SyncOptions,
    progress: Arc<Progress>,
) -> Result<SyncReport> {
    let Described {
        label: src_name,
        relation: src_relation,
        facts: src_facts,
        enums,
        unique,
    } = describe(&source, opts).await?;
    let zone: String = source
        .query_one("SELECT current_setting('TimeZone')", &[])
        .await
        .map_err(|e| Error::server("reading the source's TimeZone", e))?
        .get(0);

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
    let (maps, schema_ddl) = match &dest_facts {
        Some(d) => {
            let maps = map_columns(&src_facts, &enums, d, opts.ignore_extra, &zone).map_err(
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
            (maps, None)
        }
        None => {
            let maps = src_facts
                .columns
                .iter()
                .filter(|c| c.generated.is_none())
                .map(|c| ColumnMap {
                    to: c.name.clone(),
                    expr: quote_ident(&c.name),
                })
                .collect();
            (maps, Some(create_ddl(&dest_name, &src_facts)))
        }
    };
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
    let incremental = match &opts.incremental {
        Some(column) => {
            let c = src_facts.column(column).ok_or_else(|| {
                Error::config(format!(
                    "--incremental: {src_name} has no column \"{column}\""
                ))
            })?;
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
                .and_then(|v| v.as_str().map(str::to_owned));
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
                    .get(0),
                _ => None,
            };
            Some(Incremental {
                column: column.clone(),
                type_name: c.type_name.clone(),
                key,
                start,
            })
        }
        None => None,
    };
    // Before the snapshot: the oldest transaction open on the source.
    let bound = match &incremental {
        Some(inc) if inc.type_name.starts_with("timestamp") => {
            let row = source
                .query_one(
                    &format!(
                        "SELECT least(min(a.xact_start), clock_timestamp())::{}::text, \
                         EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts p WHERE p.database = current_database()) \
                         FROM pg_catalog.pg_stat_activity a \
                         WHERE a.datname = current_database() AND a.xact_start IS NOT NULL \
                           AND a.pid <> pg_catalog.pg_backend_pid()",
                        inc.type_name
                    ),
                    &[],
                )
                .await
                .map_err(|e| Error::server("reading the source's open transactions", e))?;
            let prepared: bool = row.get(1);
            Some((row.get::<_, Option<String>>(0), prepared))
        }
        _ => None,
    };
    if opts.dry_run {
        let mut plan = Vec::new();
        if let Some(ddl) = &schema_ddl {
            plan.push(format!(
                "{dest_name} does not exist: it would be created as\n{ddl}"
            ));
        }
        let start = incremental.as_ref().map(|inc| {
            format!(
                "rows with {} >= {}",
                inc.column,
                inc.start
                    .as_deref()
                    .unwrap_or("(everything: no watermark yet)")
            )
        });
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
        return Ok(SyncReport {
            mapping: maps
                .iter()
                .map(|m| format!("{} <- {}", m.to, m.expr))
                .collect(),
            watermarks: incremental.map(|inc| (inc.start, None)),
            plan,
            ..SyncReport::default()
        });
    }
    let mut source = source;
    let tx = source
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| Error::server("starting the source snapshot", e))?;
    let mut filters: Vec<String> = opts.filter.iter().map(|w| format!("({w})")).collect();
    let mut next = None;
    if let Some(inc) = &incremental {
        let col = quote_ident(&inc.column);
        if let Some(start) = &inc.start {
            let lookback = opts
                .lookback
                .filter(|_| inc.type_name.starts_with("timestamp") || inc.type_name == "date")
                .map(|d| format!(" - interval '{} milliseconds'", d.as_millis()))
                .unwrap_or_default();
            filters.push(format!(
                "{col} >= ({}::{}{lookback})",
                crate::schema::dollar_quote(start),
                inc.type_name
            ));
        }
        let within = if opts.filter.is_some() {
            format!(" WHERE {}", opts.filter.as_deref().unwrap_or_default())
        } else {
            String::new()
        };
        let newest: Option<String> = tx
            .query_one(
                &format!("SELECT max({col})::text FROM {src_relation}{within}"),
                &[],
            )
            .await
            .map_err(|e| Error::server("reading the source's newest row", e))?
            .get(0);
        next = match (&bound, newest) {
            // Prepared transactions: their rows' stamps are unknown.
            (Some((_, true)), _) => inc.start.clone(),
            (Some((Some(bound), false)), Some(newest)) => tx
                .query_one(
                    &format!(
                        "SELECT least($1::text::{t}, $2::text::{t})::text",
                        t = inc.type_name
                    ),
                    &[&newest, bound],
                )
                .await
                .map_err(|e| Error::server("bounding the watermark", e))?
                .get(0),
            (_, Some(newest)) => Some(newest),
            (_, None) => inc.start.clone(),
        };
    }
    // The rows, spooled: an exact text round trip.
    tx.batch_execute(
        "SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL TimeZone = 'UTC'; \
         SET LOCAL bytea_output = 'hex'; SET LOCAL extra_float_digits = 3",
    )
    .await
    .map_err(|e| Error::server("setting up the source session", e))?;
    let select: Vec<String> = maps
        .iter()
        .map(|m| format!("{} AS {}", m.expr, quote_ident(&m.to)))
        .collect();
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let query = format!(
        "COPY (SELECT {} FROM {src_relation}{filter}) TO STDOUT (FORMAT csv, HEADER)",
        select.join(", "),
    );
    let spool = Spool::new()?;
    {
        let stream = tx
            .copy_out(&query)
            .await
            .map_err(|e| Error::server(&format!("reading {src_name}"), e))?;
        futures_util::pin_mut!(stream);
        let mut file = std::io::BufWriter::new(spool.create()?);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::server(&format!("reading {src_name}"), e))?;
            file.write_all(&chunk)
                .map_err(|e| Error::io("writing the spool file", e))?;
        }
        file.flush()
            .map_err(|e| Error::io("writing the spool file", e))?;
    }
    // --delete-missing: the keys read, in the same snapshot, into a
    // temporary table of the destination session the load runs on.
    let mut before_final_commit = None;
    let mut deleted = None;
    if let Some(delete) = &delete {
        let keys = copy_keys(&tx, &dest, &dest_name, &src_relation, &filter, delete).await?;
        let hook = Arc::new(DeleteMissing {
            sql: delete.sql(&dest_name, opts.filter.as_deref(), keys > 0),
            deleted: std::sync::atomic::AtomicU64::new(0),
            ran: std::sync::atomic::AtomicBool::new(false),
        });
        if keys == 0 {
            // No batch will run the hook: nothing read, every row of the
            // window goes.
            let tx = dest
                .transaction()
                .await
                .map_err(|e| Error::server("starting the delete", e))?;
            ingest::BeforeVisible::call(hook.as_ref(), &tx, &ingest::BatchInfo::default()).await?;
            tx.commit()
                .await
                .map_err(|e| Error::server(&format!("deleting from {dest_name}"), e))?;
        } else {
            before_final_commit = Some(crate::load::FinalHook(hook.clone()));
        }
        deleted = Some(hook);
    }
    tx.commit()
        .await
        .map_err(|e| Error::server("ending the source snapshot", e))?;
    drop(source);

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
    let empty_twin = match &dest_facts {
        None => unique,
        Some(d) => {
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
    let mode = match opts.mode {
        None if empty_twin => Some(LoadMode::Append),
        m => m,
    };
    let load_opts = LoadOptions {
        sources: vec![Source::File(spool.path.clone())],
        table: dest_name.clone(),
        detect_delimiter: false,
        schema_ddl,
        mode,
        key: opts.key.clone(),
        batch_rows: if opts.batch_rows > 0 {
            opts.batch_rows
        } else {
            LoadOptions::default().batch_rows
        },
        lock_policy: opts.lock_policy.clone(),
        // The spool is new each run: no ledger of it (an upsert of rows
        // an earlier run loaded changes nothing).
        ledger: false,
        streams: 1,
        before_final_commit,
        ..LoadOptions::default()
    };
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
    // Every row up to the new watermark committed: store it.
    if let (Some(inc), Some(next)) = (&incremental, &next) {
        let dest = crate::connect::connect(dest_params).await?.client;
        let schema = dest_name.schema_or_public();
        if !watermark::exists(&dest, schema).await? {
            let mut sql = crate::lock::creation_locks(vec![watermark::table(schema).to_string()]);
            sql.push(watermark::create_sql(schema));
            dest.batch_execute(&format!("BEGIN; {}; COMMIT", sql.join(";\n")))
                .await
                .map_err(|e| Error::server("creating the watermark table", e))?;
        }
        watermark::write(
            &dest,
            &dest_name,
            &inc.key,
            Some(&serde_json::Value::String(next.clone())),
            &serde_json::json!({ "source": src_name.to_string(), "column": inc.column }),
            None,
        )
        .await?;
    }
    let notes = if load.inserted > 0 {
        advance_sequences(dest_params, &dest_name, &maps).await
    } else {
        Vec::new()
    };
    Ok(SyncReport {
        notes,
        rows_read: load.rows_read,
        watermarks: incremental.map(|inc| (inc.start, next)),
        plan: Vec::new(),
        mapping: maps
            .iter()
            .map(|m| format!("{} <- {}", m.to, m.expr))
            .collect(),
        load,
    })
}

/// Advances the identity and serial sequences of the destination's
/// columns filled from the source past the largest value now in them
/// (never backwards), so the destination's own inserts do not collide
/// with copied rows. A sequence that cannot be advanced (privileges) is
/// said in a note: the rows are in either way.
async fn advance_sequences(
    params: &crate::conninfo::ConnParams,
    dest: &TableName,
    maps: &[ColumnMap],
) -> Vec<String> {
    let mut notes = Vec::new();
    let outcome: Result<()> = async {
        let client = crate::connect::connect(params).await?.client;
        let quoted = dest.quoted();
        let sequences = client
            .query(
                "SELECT a.attname::text, pg_catalog.pg_get_serial_sequence($1, a.attname::text) \
                 FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
                   AND pg_catalog.pg_get_serial_sequence($1, a.attname::text) IS NOT NULL",
                &[&quoted],
            )
            .await
            .map_err(|e| Error::server(&format!("reading the sequences of {dest}"), e))?;
        for row in sequences {
            let column: String = row.get(0);
            let sequence: String = row.get(1);
            if !maps.iter().any(|m| m.to == column) {
                continue;
            }
            let advanced = client
                .query_opt(
                    &format!(
                        "SELECT pg_catalog.setval($1::text::regclass, m)::text \
                         FROM (SELECT max({})::bigint AS m FROM {quoted}) x \
                         WHERE m > coalesce(pg_catalog.pg_sequence_last_value($1::text::regclass), \
                           (SELECT s.seqstart - 1 FROM pg_catalog.pg_sequence s WHERE s.seqrelid = $1::text::regclass))",
                        quote_ident(&column)
                    ),
                    &[&sequence],
                )
                .await
                .map_err(|e| Error::server(&format!("advancing {sequence}"), e))?;
            if let Some(row) = advanced {
                let to: String = row.get(0);
                notes.push(format!(
                    "{sequence} (of {dest}.{column}) advanced to {to}, past the rows copied"
                ));
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        notes.push(format!(
            "the sequences of {dest} were not advanced past the rows copied: {e}"
        ));
    }
    notes
}

/// The source as a sync reads it.
struct Described {
    /// How messages name it.
    label: String,
    /// What `FROM` reads.
    relation: String,
    /// Its columns (for a query: its key as primary key).
    facts: TableFacts,
    /// Its columns of enum types.
    enums: Vec<String>,
    /// Whether its rows are unique by its primary key (a table's are).
    unique: bool,
}

/// Reads the source's columns: the table's, or those a query returns
/// (prepared, not run).
async fn describe(source: &Client, opts: &SyncOptions) -> Result<Described> {
    match &opts.source {
        SyncSource::Table(table) => {
            let session = Session::read(source).await?;
            let name = TableName::new(
                table.schema.as_deref().unwrap_or(&session.current_schema),
                &table.name,
            );
            let oid = catalog::table_oid(source, name.schema_or_public(), &name.name)
                .await?
                .ok_or_else(|| Error::config(format!("the source has no table {name}")))?;
            let facts = catalog::facts::read(source, oid).await?;
            let enums = source
                .query(
                    "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'e'",
                    &[&oid],
                )
                .await
                .map_err(|e| Error::server("reading the source's enum columns", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(Described {
                label: name.to_string(),
                relation: name.quoted(),
                unique: facts.primary_key.is_some(),
                facts,
                enums,
            })
        }
        SyncSource::Query(query) => {
            let key = opts
                .key
                .clone()
                .ok_or_else(|| Error::config("a sync of a query needs its key named (--key)"))?;
            let query = query.trim().trim_end_matches(';').trim_end();
            let relation = format!("({query}) AS pgbulk_query");
            let statement = source
                .prepare(&format!("SELECT * FROM {relation}"))
                .await
                .map_err(|e| Error::server("reading the query's columns", e))?;
            let mut columns: Vec<ColumnFacts> = Vec::new();
            let mut enums = Vec::new();
            for c in statement.columns() {
                if columns.iter().any(|o| o.name == c.name()) {
                    return Err(Error::config(format!(
                        "the query returns two columns named \"{}\" (columns are matched by name: give each its own with AS)",
                        c.name()
                    )));
                }
                let row = source
                    .query_one(
                        "SELECT pg_catalog.format_type($1, $2), t.typtype = 'e' \
                         FROM pg_catalog.pg_type t WHERE t.oid = $1",
                        &[&c.type_().oid(), &c.type_modifier()],
                    )
                    .await
                    .map_err(|e| Error::server("reading the query's column types", e))?;
                if row.get::<_, bool>(1) {
                    enums.push(c.name().to_owned());
                }
                columns.push(ColumnFacts::plain(
                    c.name(),
                    row.get(0),
                    c.type_().oid(),
                    c.type_modifier(),
                ));
            }
            if let Some(k) = key.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
                return Err(Error::config(format!(
                    "--key: the query returns no column \"{k}\""
                )));
            }
            Ok(Described {
                label: "the query".to_owned(),
                relation,
                facts: TableFacts {
                    oid: 0,
                    columns,
                    primary_key: Some(("query_key".to_owned(), key)),
                    constraints: Vec::new(),
                    indexes: Vec::new(),
                    comment: None,
                    column_comments: Default::default(),
                },
                enums,
                unique: false,
            })
        }
    }
}

/// `--delete-missing`: which destination rows go.
#[derive(Debug)]
struct Delete {
    /// The destination's key columns.
    key: Vec<String>,
    /// The source expression of each key column.
    exprs: Vec<String>,
}

impl Delete {
    /// The `DELETE` of the destination rows within `filter` whose key is
    /// not in the keys read (`keys`: some were read).
    fn sql(&self, dest: &TableName, filter: Option<&str>, keys: bool) -> String {
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
const KEYS: &str = "pgbulk_sync_keys";

/// Refuses `--delete-missing` where it has no meaning.
fn refuse_delete(opts: &SyncOptions) -> Result<()> {
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
async fn plan_delete(
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
async fn copy_keys(
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
struct DeleteMissing {
    sql: String,
    deleted: std::sync::atomic::AtomicU64,
    ran: std::sync::atomic::AtomicBool,
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

/// An incremental sync's column and where it starts.
#[derive(Debug)]
struct Incremental {
    column: String,
    type_name: String,
    /// Its row in the destination's watermark table.
    key: String,
    /// Read from here (`>=`); `None`: everything.
    start: Option<String>,
}

/// A private spool directory (`pgbulk-sync-<pid>-<nanos>` in the temporary
/// directory), removed on drop.
struct Spool {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl Spool {
    /// A new spool; the spools of killed syncs (their process is gone)
    /// are removed first.
    fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        Self::remove_orphans();
        let dir = std::env::temp_dir().join(format!(
            "pgbulk-sync-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join("rows.csv");
        Ok(Self { dir, path })
    }

    fn remove_orphans() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("pgbulk-sync-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // SAFETY: signal 0 only checks that the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    fn create(&self) -> Result<std::fs::File> {
        std::fs::File::create(&self.path)
            .map_err(|e| Error::io(format!("cannot create {}", self.path.display()), e))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, not_null: bool) -> ColumnFacts {
        ColumnFacts {
            not_null,
            ..ColumnFacts::plain(name, ty, 0, -1)
        }
    }

    fn table(columns: Vec<ColumnFacts>) -> TableFacts {
        TableFacts {
            oid: 1,
            columns,
            primary_key: None,
            constraints: Vec::new(),
            indexes: Vec::new(),
            comment: None,
            column_comments: Default::default(),
        }
    }

    #[test]
    fn columns_match_by_name_and_cast_only_safely() {
        let source = table(vec![
            col("id", "integer", true),
            col("name", "character varying(20)", false),
            col("at", "timestamp without time zone", false),
            col("doc", "json", false),
            col("mood", "mood", false),
        ]);
        // The destination orders its columns differently.
        let dest = table(vec![
            col("doc", "jsonb", false),
            col("at", "timestamp with time zone", false),
            col("name", "text", false),
            col("id", "bigint", true),
            col("mood", "text", false),
        ]);
        let maps = map_columns(&source, &["mood".to_owned()], &dest, false, "Europe/Berlin")
            .expect("safe");
        let exprs: Vec<(&str, &str)> = maps
            .iter()
            .map(|m| (m.to.as_str(), m.expr.as_str()))
            .collect();
        assert_eq!(
            exprs,
            vec![
                ("id", "\"id\"::bigint"),
                ("name", "\"name\"::text"),
                ("at", "(\"at\" AT TIME ZONE 'Europe/Berlin')"),
                ("doc", "\"doc\"::jsonb"),
                ("mood", "\"mood\"::text"),
            ]
        );
    }

    #[test]
    fn every_mismatch_is_listed() {
        let source = table(vec![
            col("id", "bigint", true),
            col("name", "text", false),
            col("extra", "integer", false),
            col("code", "character varying(30)", false),
        ]);
        let dest = table(vec![
            col("id", "integer", true),
            col("name", "integer", false),
            col("code", "character varying(10)", false),
            col("required", "text", true),
        ]);
        let why = map_columns(&source, &[], &dest, false, "UTC").expect_err("refused");
        assert_eq!(why.len(), 5, "{why:#?}");
        assert!(why[0].starts_with("column \"id\": source bigint, destination integer"));
        assert!(
            why.iter()
                .any(|w| w.contains("\"extra\" (integer) is not in the destination"))
        );
        assert!(
            why.iter()
                .any(|w| w.contains("\"required\" (text) of the destination is NOT NULL"))
        );
        // --ignore-extra leaves the extra column out, the rest still refuse.
        let why = map_columns(&source, &[], &dest, true, "UTC").expect_err("refused");
        assert_eq!(why.len(), 4);
    }

    #[test]
    fn only_constant_defaults_are_constants() {
        for constant in [
            "0",
            "(-1)",
            "1.5e10",
            "(0)::numeric",
            "'x'::text",
            "'it''s'::character varying",
            "'{}'::jsonb",
            "'sad'::mood",
            "true",
            "NULL::integer",
            "'2024-01-01 00:00:00'::timestamp without time zone",
            "'{1,2}'::integer[]",
        ] {
            assert!(is_constant(constant), "{constant}");
        }
        for not in [
            "now()",
            "nextval('t_id_seq'::regclass)",
            "gen_random_uuid()",
            "'a'::text || 'b'::text",
            "(1 + 2)",
            "CURRENT_TIMESTAMP",
            "'x",
            "'x'::text::",
            "inf",
            "e",
        ] {
            assert!(!is_constant(not), "{not}");
        }
    }

    #[test]
    fn a_created_destination_copies_columns_not_null_and_key() {
        let mut source = table(vec![col("id", "integer", true), col("Name", "text", false)]);
        source.primary_key = Some(("t_pkey".to_owned(), vec!["id".to_owned()]));
        let mut generated = col("twice", "integer", false);
        generated.generated = Some("s".to_owned());
        source.columns.push(generated);
        assert_eq!(
            create_ddl(&TableName::new("public", "t"), &source),
            "CREATE TABLE \"public\".\"t\" (\n    \"id\" integer NOT NULL,\n    \"Name\" text,\n    PRIMARY KEY (\"id\")\n);\n"
        );
    }
}
