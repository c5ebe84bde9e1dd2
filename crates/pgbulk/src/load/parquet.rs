//! Parquet files as `load` input. A file's record batches go through the
//! Arrow input's encoder ([`crate::arrow`]) into the table, which is
//! created from the file's schema when missing (the Arrow type mapping)
//! and whose columns are matched by name. Like a CSV file, a Parquet file
//! loads with a ledger: each batch commits with the rows of the file read
//! so far, so the same command after an interruption goes on after the
//! last committed batch (the reader skips the rows before it), and a file
//! loaded completely (known by its content, under any name) is skipped.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_postgres::Client;

use super::{LoadMode, LoadOptions, LoadReport, Progress, ledger, plan};
use crate::error::{Error, ErrorKind, Result};
use crate::input::Source;
use crate::session::Session;

/// Record batches read from a file at a time.
const BATCH_ROWS: usize = 8192;

/// Whether `source` is a Parquet file: named `*.parquet`, or beginning and
/// ending with Parquet's magic bytes.
pub(super) fn is_parquet(source: &Source) -> bool {
    let Source::File(path) = source else {
        return false;
    };
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
        || has_magic(path)
}

/// Whether the file at `path` begins with `PAR1` and ends with a footer's
/// length that fits in it and `PAR1`.
fn has_magic(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    if size < 12
        || file.read_exact(&mut head).is_err()
        || head != *b"PAR1"
        || file.seek(SeekFrom::End(-8)).is_err()
        || file.read_exact(&mut tail).is_err()
        || tail[4..] != *b"PAR1"
    {
        return false;
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    footer + 12 <= size
}

/// Refuses the options of a CSV load a Parquet file has no use for.
fn refuse_csv_options(opts: &LoadOptions, name: &str) -> Result<()> {
    let given = [
        (opts.max_errors > 0, "--max-errors"),
        (opts.reject_file.is_some(), "--reject-file"),
        (opts.columns.is_some(), "--columns"),
        (!opts.types.is_empty(), "--type"),
    ];
    if let Some((_, option)) = given.iter().find(|(given, _)| *given) {
        return Err(Error::config(format!(
            "{name} is a Parquet file: {option} applies to CSV input only (a Parquet file's columns and types are in it)"
        )));
    }
    Ok(())
}

/// Refuses a file with a Parquet `INTERVAL` column and no Arrow schema
/// saying how it was written: the reader takes such values as days and
/// milliseconds, dropping their months, and a value must be stored exactly
/// or not at all.
fn refuse_lossy_intervals(
    builder: &ParquetRecordBatchReaderBuilder<std::fs::File>,
    name: &str,
) -> Result<()> {
    use parquet::basic::ConvertedType;
    let typed = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|k| k.key == "ARROW:schema"));
    if typed {
        return Ok(());
    }
    let intervals: Vec<String> = builder
        .parquet_schema()
        .columns()
        .iter()
        .filter(|c| c.converted_type() == ConvertedType::INTERVAL)
        .map(|c| format!("\"{}\"", c.path().string()))
        .collect();
    if intervals.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Data,
        format!(
            "{name}: column {} is a Parquet INTERVAL, which pgbulk cannot read exactly (the Arrow Parquet reader drops its months); write it as a string (PostgreSQL's interval syntax) or as a number of seconds instead",
            intervals.join(", ")
        ),
    ))
}

/// Refuses a file compressed with a codec this build does not read
/// (Brotli, LZO), before anything is written.
fn refuse_unread_codecs(
    builder: &ParquetRecordBatchReaderBuilder<std::fs::File>,
    name: &str,
) -> Result<()> {
    use parquet::basic::Compression;
    let unread = builder
        .metadata()
        .row_groups()
        .iter()
        .flat_map(|g| g.columns())
        .map(|c| c.compression())
        .find_map(|c| match c {
            Compression::BROTLI(_) => Some("Brotli"),
            Compression::LZO => Some("LZO"),
            _ => None,
        });
    match unread {
        Some(codec) => Err(Error::new(
            ErrorKind::Data,
            format!(
                "{name}: compressed with {codec}, which pgbulk does not read; write it with Snappy, zstd, gzip or LZ4 instead"
            ),
        )),
        None => Ok(()),
    }
}

/// The `CREATE TABLE` a load of the Parquet file `source` into `table`
/// would run when the table is missing (for `pgbulk infer`).
pub(super) fn table_ddl(
    source: &Source,
    opts: &LoadOptions,
    table: &crate::schema::TableName,
) -> Result<String> {
    let name = source.name();
    let Source::File(path) = source else {
        return Err(Error::config(
            "a Parquet file cannot be read from standard input",
        ));
    };
    let builder = open(path, &name)?;
    refuse_lossy_intervals(&builder, &name)?;
    let (_, schema) = without_pandas_index(builder)?;
    let ddl = crate::arrow::create_table(table, &schema, opts.key.as_deref())?;
    Ok(format!("-- types from the Parquet file's schema\n{ddl}"))
}

/// `builder` without the columns pandas wrote for an unnamed index
/// (`__index_level_0__`, a filtered frame's row labels: `read_parquet`
/// makes them the index again, and `pgbulk.write` leaves such an index
/// out), as its file's pandas metadata lists them; and the schema of the
/// columns read. A named index is data (`set_index("id")`), kept.
fn without_pandas_index(
    builder: ParquetRecordBatchReaderBuilder<std::fs::File>,
) -> Result<(
    ParquetRecordBatchReaderBuilder<std::fs::File>,
    arrow_schema::SchemaRef,
)> {
    let schema = builder.schema().clone();
    let index: Vec<String> = schema
        .metadata()
        .get("pandas")
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|m| m.get("index_columns").cloned())
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str())
        .filter(|c| is_unnamed_index(c))
        .map(str::to_owned)
        .collect();
    if index.is_empty() {
        return Ok((builder, schema));
    }
    let kept: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !index.contains(schema.field(*i).name()))
        .collect();
    let projected = Arc::new(
        schema
            .project(&kept)
            .map_err(|e| Error::new(ErrorKind::Data, e.to_string()))?,
    );
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), kept);
    Ok((builder.with_projection(mask), projected))
}

/// pandas' name for the column of an unnamed index level:
/// `__index_level_N__`.
fn is_unnamed_index(name: &str) -> bool {
    name.strip_prefix("__index_level_")
        .and_then(|rest| rest.strip_suffix("__"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The reader of the Parquet file at `path`, named `name` in errors.
///
/// INT96 timestamps (Spark's and Impala's) are read in microseconds: the
/// reader's default, nanoseconds, wraps around silently outside 1677-2262
/// (Spark's `0001-01-01` and `9999-12-31`), where microseconds reach
/// ±290,000 years. Its digits past the microsecond are cut (Spark writes
/// none). Such a timestamp nested in a list or struct is refused.
fn open(path: &Path, name: &str) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::basic::Type as PhysicalType;
    let file =
        || std::fs::File::open(path).map_err(|e| Error::io(format!("cannot read {name}"), e));
    let unreadable = |e: parquet::errors::ParquetError| {
        Error::new(
            ErrorKind::Data,
            format!("{name}: not a Parquet file pgbulk can read: {e}"),
        )
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file()?).map_err(unreadable)?;
    let int96: Vec<Vec<String>> = builder
        .parquet_schema()
        .columns()
        .iter()
        .filter(|c| c.physical_type() == PhysicalType::INT96)
        .map(|c| c.path().parts().to_vec())
        .collect();
    if int96.is_empty() {
        return Ok(builder);
    }
    if let Some(nested) = int96.iter().find(|p| p.len() != 1) {
        return Err(Error::new(
            ErrorKind::Data,
            format!(
                "{name}: column \"{}\" is an INT96 timestamp inside a list or struct, which pgbulk cannot read exactly (the Arrow Parquet reader takes it in nanoseconds, which wrap around outside 1677-2262); write it as a TIMESTAMP (INT64) instead",
                nested.join(".")
            ),
        ));
    }
    let schema = builder.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(_, tz) if int96.iter().any(|p| p[0] == *f.name()) => Field::new(
                f.name(),
                DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                f.is_nullable(),
            )
            .with_metadata(f.metadata().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let hint = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    ParquetRecordBatchReaderBuilder::try_new_with_options(
        file()?,
        ArrowReaderOptions::new().with_schema(hint),
    )
    .map_err(unreadable)
}

/// Loads the Parquet file `source` into `opts.table` on `client` (see the
/// module documentation).
pub(super) async fn load_file(
    client: Client,
    params: &crate::conninfo::ConnParams,
    opts: &LoadOptions,
    progress: Arc<Progress>,
    source: &Source,
    of_many: bool,
) -> Result<LoadReport> {
    let started = std::time::Instant::now();
    let name = source.name();
    refuse_csv_options(opts, &name)?;
    let Source::File(path) = source else {
        return Err(Error::config(
            "a Parquet file cannot be read from standard input",
        ));
    };
    let size = source.size().unwrap_or(0);
    if !of_many {
        progress.bytes_total.store(size, Ordering::Relaxed);
    }
    let builder = open(path, &name)?;
    refuse_lossy_intervals(&builder, &name)?;
    refuse_unread_codecs(&builder, &name)?;
    let (builder, schema) = without_pandas_index(builder)?;
    let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);

    let session = Session::read(&client).await?;
    let table = opts.table.in_schema(&session.current_schema);
    let exists = crate::catalog::table_oid(&client, table.schema_or_public(), &table.name)
        .await?
        .is_some();
    let mut report = LoadReport::default();
    // The ledger: this file's rows committed by earlier runs of the load.
    let resumable = opts.ledger && !opts.single_transaction;
    // The mode as the load takes it: no mode on a table without a primary
    // key (and no --key) is `--mode append`, the same load.
    let mode = match opts.mode {
        Some(mode) => mode,
        None if opts.key.is_none() && !(exists && has_primary_key(&client, &table).await?) => {
            LoadMode::Append
        }
        None => LoadMode::Upsert,
    };
    let ledger_name = if resumable {
        let hashed = source.clone();
        let identity =
            tokio::task::spawn_blocking(move || hashed.identity(&AtomicBool::new(false)))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("hashing {name}: {e}")))?
                .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
        let identities = [identity, Some(serde_json::json!("parquet"))];
        // The CSV options do not change what a Parquet file loads: a rerun
        // that gives one (`--delimiter`) is the same load.
        let as_loaded = LoadOptions {
            dialect: crate::csv::Dialect::default(),
            header: true,
            skip_lines: 0,
            encoding: encoding_rs::UTF_8,
            sample: super::Sample::Parts,
            ..opts.clone()
        };
        plan::ledger_name(
            Some(&ledger::fingerprint(
                &identities,
                mode,
                opts.key.as_ref(),
                &as_loaded,
            )),
            None,
        )
    } else {
        None
    };
    let mut skip = 0;
    let mut complete = false;
    if let (Some(key), true, false) = (&ledger_name, exists, opts.restart) {
        let stored = crate::ingest::stored_resume(&client, &table, Some(key)).await?;
        match judge(stored.as_ref(), &client, &table, mode).await? {
            Verdict::Fresh(note) => report.notes.extend(note),
            Verdict::After { rows, done } => {
                skip = rows;
                complete = done;
            }
        }
    }
    if opts.dry_run {
        let line = if complete {
            format!(
                "{name}: loaded completely by an earlier run with the same options; would be skipped"
            )
        } else if skip > 0 {
            format!(
                "{name}: would continue after the {skip} rows an earlier run committed ({} left)",
                total.saturating_sub(skip)
            )
        } else {
            format!("{name}: {total} rows would be loaded into {table}")
        };
        if !exists && opts.schema_ddl.is_none() {
            let ddl = crate::arrow::create_table(&table, &schema, opts.key.as_deref())?;
            report.plan.push(format!(
                "{table} would be created from the Parquet file's schema:\n{ddl}"
            ));
        }
        report.plan.push(line);
        report.already_loaded = complete;
        return Ok(report);
    }
    if complete {
        report.already_loaded = true;
        progress.bytes_read.fetch_add(size, Ordering::Relaxed);
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .with_offset(usize::try_from(skip).unwrap_or(usize::MAX))
        .build()
        .map_err(|e| Error::new(ErrorKind::Data, format!("{name}: {e}")))?;
    // Progress in bytes, as the share of the file's rows read.
    let counted = progress.bytes_read.clone();
    let mut read = skip;
    let mut credited = 0;
    let batches = reader.inspect(move |batch| {
        if let Ok(b) = batch {
            read += b.num_rows() as u64;
            let share = if total == 0 {
                size
            } else {
                u64::try_from(u128::from(size) * u128::from(read) / u128::from(total))
                    .unwrap_or(size)
            };
            counted.fetch_add(share.saturating_sub(credited), Ordering::Relaxed);
            credited = credited.max(share);
        }
    });
    let data = crate::arrow::Data {
        schema,
        batches: Box::new(batches),
        name: Some(name.clone()),
        skipped: skip,
    };
    let ledger = ledger_name.map(|name| crate::arrow::Ledger { name });
    let mut written =
        crate::arrow::write_on(client, params, data, opts, true, progress, ledger).await?;
    written.notes.splice(0..0, report.notes);
    written.typed_input = true;
    if skip > 0 {
        written.resumed_after_rows = Some(skip);
    }
    if let Some(why) = &mut written.nothing_to_load {
        *why = why.replacen("the data has", &format!("{name} has"), 1);
    }
    written.seconds = started.elapsed().as_secs_f64();
    Ok(written)
}

/// What an earlier run's ledger row says to do.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// From the file's first row (with why an earlier run's row does not
    /// count, if there was one).
    Fresh(Option<String>),
    /// After the first `rows` rows; `done`: the file was loaded completely.
    After { rows: u64, done: bool },
}

/// Judges the ledger row `stored` of this load into `table` (which exists).
async fn judge(
    stored: Option<&crate::ingest::StoredResume>,
    client: &Client,
    table: &crate::schema::TableName,
    mode: LoadMode,
) -> Result<Verdict> {
    let Some(stored) = stored else {
        return Ok(Verdict::Fresh(None));
    };
    let rows = stored.state.get("rows").and_then(serde_json::Value::as_u64);
    let done = stored
        .state
        .get("complete")
        .and_then(serde_json::Value::as_bool);
    let (Some(rows), Some(done)) = (rows, done) else {
        return Ok(Verdict::Fresh(Some(format!(
            "the ledger row of an earlier run of this load into {table} does not read as a position: loading from the start"
        ))));
    };
    if rows == 0 {
        return Ok(Verdict::Fresh(None));
    }
    if super::is_empty(client, table).await? {
        return Ok(Verdict::Fresh(Some(format!(
            "{table} is empty now, though an earlier run of this load committed {rows} rows: loading from the start"
        ))));
    }
    if !stored.rewritten {
        return Ok(Verdict::After { rows, done });
    }
    match mode == LoadMode::Append {
        true => Err(Error::config(format!(
            "{table} was truncated or rewritten (TRUNCATE, VACUUM FULL, CLUSTER or ALTER TABLE) since an earlier run of this load committed {rows} rows, so pgbulk cannot tell whether those rows are still there; --restart appends the file again, a key (--key or --mode upsert) makes reloading safe"
        ))),
        false => Ok(Verdict::Fresh(Some(format!(
            "{table} was truncated or rewritten since an earlier run of this load: loading from the start"
        )))),
    }
}

/// Whether `table` has a primary key.
async fn has_primary_key(client: &Client, table: &crate::schema::TableName) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_index WHERE indrelid = $1::text::regclass AND indisprimary)",
            &[&table.quoted()],
        )
        .await
        .map_err(|e| Error::server(&format!("reading {table}"), e))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pandas_names_its_unnamed_index_levels_so() {
        assert!(super::is_unnamed_index("__index_level_0__"));
        assert!(super::is_unnamed_index("__index_level_12__"));
        for name in [
            "__index_level__",
            "__index_level_x__",
            "index",
            "__index_level_0",
        ] {
            assert!(!super::is_unnamed_index(name), "{name}");
        }
    }

    #[test]
    fn parquet_files_are_known_by_name_or_by_their_magic_bytes() {
        let dir = std::env::temp_dir().join(format!("pgbulk-parquet-magic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write");
            Source::File(path)
        };
        // By name, whatever is in it (a reader then says what is wrong).
        assert!(is_parquet(&file("a.PARQUET", b"id\n1\n")));
        // By its magic bytes at both ends.
        assert!(is_parquet(&file("export.dat", b"PAR1.\x01\0\0\0PAR1")));
        assert!(!is_parquet(&file("e.dat", b"PAR1.\x02\0\0\0PAR1")));
        assert!(!is_parquet(&file("b.csv", b"PAR1,x\n1,PAR1")));
        assert!(!is_parquet(&file("c.csv", b"PAR1,x\n1,2\n")));
        assert!(!is_parquet(&file("d.csv", b"PA")));
        assert!(!is_parquet(&Source::Stdin));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
