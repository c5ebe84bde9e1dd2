//! Resolved settings: the raw flags of `args.rs` turned into the library's
//! options, without I/O (files named by flags are read by the caller), so
//! every rule is unit-tested.

use pgbulk::csv::Dialect;
use pgbulk::ingest::OnDuplicate;
use pgbulk::load::{LoadMode, LoadOptions, Sample};
use pgbulk::schema::TableName;

#[cfg(feature = "export")]
use crate::args::{ArrayNullsArg, ExportArgs};
use crate::args::{
    DialectArgs, InferArgs, InferenceArgs, LoadArgs, ModeArg, OnDuplicateArg, SyncArgs,
};

/// Why flags do not make settings.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A combination that cannot work: a usage error (exit 2).
    Usage(String),
    /// A value the library refuses (a table name, an encoding).
    Invalid(pgbulk::Error),
}

impl From<pgbulk::Error> for Refusal {
    fn from(e: pgbulk::Error) -> Self {
        Self::Invalid(e)
    }
}

/// The options of `pgbulk load` (`schema_ddl` is left for the caller to
/// read from `args.schema`).
pub(crate) fn load(args: &LoadArgs) -> Result<LoadOptions, Refusal> {
    Ok(LoadOptions {
        sources: pgbulk::input::expand_args(&args.files)?,
        recreate: args.recreate,
        ignore_extra: args.ignore_extra,
        mode: args.mode.map(mode),
        key: args.key.clone(),
        on_duplicate: match args.on_duplicate {
            OnDuplicateArg::Last => OnDuplicate::Last,
            OnDuplicateArg::First => OnDuplicate::First,
            OnDuplicateArg::Error => OnDuplicate::Error,
        },
        batch_rows: args.batch_rows.unwrap_or(pgbulk::load::DEFAULT_BATCH_ROWS),
        batch_rows_asked: args.batch_rows.is_some(),
        rewrite: !args.no_rewrite,
        max_field_size: args.max_field_size.min(pgbulk::csv::MAX_FIELD),
        single_transaction: args.single_transaction,
        max_errors: args.max_errors,
        reject_file: args.reject_file.clone(),
        restart: args.restart,
        dry_run: args.dry_run,
        streams: args.streams.unwrap_or(2).max(1),
        upsert_streams: args.streams.map(|n| n.max(1)),
        retries: args.retries,
        lock_policy: pgbulk::lock::LockPolicy {
            terminate_blockers_after: args.terminate_blockers,
            ..pgbulk::lock::LockPolicy::default()
        },
        ..reading(&args.dialect, &args.inference, load_table(args)?)?
    })
}

/// The table of `pgbulk load`: `--table`, else the one file's name
/// ([`pgbulk::infer::table_for_file`]); refused for standard input,
/// several files or a pattern (whose files could name different tables).
fn load_table(args: &LoadArgs) -> Result<TableName, Refusal> {
    if let Some(table) = &args.table {
        return Ok(TableName::parse(table)?);
    }
    let named = match args.files.as_slice() {
        // A pattern is a name with `*`, `?` or `[` that names no file.
        [one]
            if one != "-"
                && (!one.contains(['*', '?', '[']) || std::path::Path::new(one).exists()) =>
        {
            pgbulk::infer::table_for_file(std::path::Path::new(one))
        }
        _ => None,
    };
    named
        .map(|name| TableName { schema: None, name })
        .ok_or_else(|| {
            Refusal::Usage(
                match args.files.as_slice() {
                    [] | [_] if args.files.iter().all(|f| f == "-") => {
                        "name the table with --table (-t): standard input has no name to give it (pgbulk load FILE names the table by the file, without extensions)"
                    }
                    _ => {
                        "name the table with --table (-t): only one file names its table, by its name without extensions"
                    }
                }
                .to_owned(),
            )
        })
}

/// [`load`] with the `--schema` file read.
pub(crate) fn load_with_schema(args: &LoadArgs) -> Result<LoadOptions, Refusal> {
    Ok(LoadOptions {
        schema_ddl: schema(args.schema.as_deref())?,
        ..load(args)?
    })
}

/// [`sync`] with the `--schema` file read.
pub(crate) fn sync_with_schema(args: &SyncArgs) -> Result<pgbulk::sync::SyncOptions, Refusal> {
    Ok(pgbulk::sync::SyncOptions {
        schema_ddl: schema(args.schema.as_deref())?,
        ..sync(args)?
    })
}

/// The DDL in a `--schema` file.
fn schema(path: Option<&std::path::Path>) -> Result<Option<String>, Refusal> {
    Ok(path.map(pgbulk::schema::read_ddl).transpose()?)
}

/// The options of `pgbulk sync`.
pub(crate) fn sync(args: &SyncArgs) -> Result<pgbulk::sync::SyncOptions, Refusal> {
    if args.source.from.is_none() && args.source.from_profile.is_none() {
        return Err(Refusal::Usage(
            "sync needs a source: --from CONNINFO or --from-profile NAME".to_owned(),
        ));
    }
    let source = match (&args.table, &args.query) {
        (Some(table), None) => pgbulk::sync::SyncSource::Table(TableName::parse(table)?),
        (None, Some(query)) => pgbulk::sync::SyncSource::Query(query.clone()),
        _ => {
            return Err(Refusal::Usage(
                "sync reads --table TABLE or --query SQL".to_owned(),
            ));
        }
    };
    Ok(pgbulk::sync::SyncOptions {
        source,
        to: args.to.as_deref().map(TableName::parse).transpose()?,
        filter: args.filter.clone(),
        mode: args.mode.map(mode),
        key: args.key.clone(),
        ignore_extra: args.ignore_extra,
        batch_rows: args.batch_rows.unwrap_or(0),
        lock_policy: pgbulk::lock::LockPolicy::default(),
        incremental: args.incremental.clone(),
        lookback: args.lookback,
        dry_run: args.dry_run,
        delete_missing: args.delete_missing,
        jobs: args.jobs,
        // Read by the caller (I/O).
        schema_ddl: None,
    })
}

/// The options of `pgbulk export`.
#[cfg(feature = "export")]
pub(crate) fn export(args: &ExportArgs) -> Result<pgbulk::export::ExportOptions, Refusal> {
    let tables = args
        .table
        .iter()
        .map(|t| TableName::parse(t))
        .collect::<pgbulk::Result<Vec<_>>>()?;
    if args.to_table.is_some() && tables.len() > 1 {
        return Err(Refusal::Usage(
            "--to-table names the destination of one --table".to_owned(),
        ));
    }
    let to = pgbulk::export::Destination::parse(&args.to)?;
    let array_nulls = match (args.array_nulls, &to) {
        (Some(ArrayNullsArg::Keep), _) => pgbulk::export::ArrayNulls::Keep,
        (Some(ArrayNullsArg::Drop), _) => pgbulk::export::ArrayNulls::Drop,
        (Some(ArrayNullsArg::Refuse), _) | (None, pgbulk::export::Destination::BigQuery { .. }) => {
            pgbulk::export::ArrayNulls::Refuse
        }
        (None, pgbulk::export::Destination::Parquet(_)) => pgbulk::export::ArrayNulls::Keep,
    };
    Ok(pgbulk::export::ExportOptions {
        tables,
        query: args.query.clone(),
        to,
        to_table: args.to_table.clone(),
        key: args.key.clone(),
        bigquery_endpoint: args.bigquery_endpoint.clone(),
        filter: args.filter.clone(),
        incremental: args.incremental.clone(),
        lookback: args.lookback,
        array_nulls,
        batch_rows: 0,
        dry_run: args.dry_run,
    })
}

fn mode(m: ModeArg) -> LoadMode {
    match m {
        ModeArg::Append => LoadMode::Append,
        ModeArg::Upsert => LoadMode::Upsert,
        ModeArg::Replace => LoadMode::Replace,
        ModeArg::ReplaceAtomic => LoadMode::ReplaceAtomic,
    }
}

/// The options of `pgbulk infer`: the table is named as `pgbulk load`
/// names it, `imported` for standard input.
pub(crate) fn infer(args: &InferArgs) -> Result<LoadOptions, Refusal> {
    let table = match &args.table {
        Some(table) => TableName::parse(table)?,
        None => TableName {
            schema: None,
            name: Some(args.file.as_str())
                .filter(|f| *f != "-")
                .and_then(|f| pgbulk::infer::table_for_file(std::path::Path::new(f)))
                .unwrap_or_else(|| "imported".to_owned()),
        },
    };
    Ok(LoadOptions {
        key: args.key.clone(),
        ..reading(&args.dialect, &args.inference, table)?
    })
}

/// What `load` and `infer` share: the table, the dialect and inference.
fn reading(
    dialect: &DialectArgs,
    inference: &InferenceArgs,
    table: TableName,
) -> Result<LoadOptions, Refusal> {
    let quote = dialect.quote;
    let text = dialect.format == Some(crate::args::InputFormat::Text);
    // The text format's defaults are COPY's: tab, and \N for NULL.
    let parsed = Dialect {
        delimiter: dialect.delimiter.unwrap_or(if text { b'\t' } else { b',' }),
        quote,
        escape: dialect.escape.unwrap_or(quote),
        null: match &dialect.null {
            Some(null) => null.clone().into_bytes(),
            None if text => b"\\N".to_vec(),
            None => Vec::new(),
        },
        text,
    };
    // A detected delimiter is checked against the rest once detected.
    if dialect.delimiter.is_some() || text {
        parsed.validate().map_err(Refusal::Usage)?;
    }
    Ok(LoadOptions {
        detect_delimiter: dialect.delimiter.is_none() && !text,
        detect_format: dialect.format.is_none() && dialect.null.is_none(),
        sample: match (inference.sample_all, inference.sample_rows) {
            (true, _) => Sample::All,
            (false, Some(n)) => Sample::Rows(n),
            (false, None) => Sample::Parts,
        },
        types: inference.types.concat(),
        table,
        dialect: parsed,
        header: !dialect.no_header,
        detect_header: !dialect.header && !dialect.no_header,
        skip_lines: dialect.skip_lines,
        encoding: pgbulk::input::encoding(&dialect.encoding)?,
        columns: dialect.columns.clone(),
        ..LoadOptions::default()
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use pgbulk::input::Source;

    use super::*;
    use crate::args::{Cli, Command};

    fn load_args(argv: &[&str]) -> LoadArgs {
        let argv = ["pgbulk", "load"].iter().chain(argv);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Load(args) => args,
            _ => unreachable!("a load command"),
        }
    }

    fn settle(argv: &[&str]) -> Result<LoadOptions, Refusal> {
        load(&load_args(argv))
    }

    #[test]
    fn defaults_detect_the_delimiter_and_infer_from_parts() {
        let o = settle(&["sales.csv", "-t", "sales"]).expect("settings");
        assert!(o.detect_delimiter);
        assert_eq!(o.sample, Sample::Parts);
        assert_eq!(o.table.to_string(), "sales");
        assert_eq!(o.sources, vec![Source::File("sales.csv".into())]);
        assert_eq!((o.mode, o.on_duplicate), (None, OnDuplicate::Last));
        assert!(o.header && o.streams >= 1);
    }

    #[test]
    fn flags_become_options() {
        let o = settle(&[
            "-",
            "a.csv",
            "-t",
            "s.t",
            "--delimiter",
            "\\t",
            "--null",
            "NA",
            "--mode",
            "replace-atomic",
            "--key",
            "a,b",
            "--on-duplicate",
            "error",
            "--max-errors",
            "5",
            "--reject-file",
            "bad.csv",
            "--streams",
            "0",
            "--max-field-size",
            "4G",
            "--sample-rows",
            "10",
            "--type",
            "a=text,b=numeric(12,2)",
            "--no-header",
            "--columns",
            "a,b",
        ])
        .expect("settings");
        assert_eq!(o.sources, vec![Source::Stdin, Source::File("a.csv".into())]);
        assert_eq!(o.table.to_string(), "s.t");
        assert_eq!(
            (
                o.dialect.delimiter,
                o.dialect.null.as_slice(),
                o.detect_delimiter
            ),
            (b'\t', &b"NA"[..], false)
        );
        assert_eq!(o.mode, Some(LoadMode::ReplaceAtomic));
        assert_eq!(o.key, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(o.on_duplicate, OnDuplicate::Error);
        assert_eq!(
            (o.max_errors, o.reject_file.as_deref()),
            (5, Some("bad.csv".as_ref()))
        );
        assert_eq!(
            (o.streams, o.upsert_streams),
            (1, Some(1)),
            "no fewer than one stream"
        );
        assert_eq!(
            o.max_field_size,
            pgbulk::csv::MAX_FIELD,
            "capped at the server's limit"
        );
        assert_eq!(o.sample, Sample::Rows(10));
        assert_eq!(
            o.types,
            vec![
                ("a".to_owned(), "text".to_owned()),
                ("b".to_owned(), "numeric(12,2)".to_owned())
            ]
        );
        assert!(!o.header);
        assert_eq!(o.columns, Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn contradictions_are_usage_errors_and_bad_values_invalid() {
        assert!(matches!(
            settle(&["a.csv", "-t", "t", "--delimiter", ";", "--quote", ";"]),
            Err(Refusal::Usage(_))
        ));
        assert!(matches!(
            settle(&["a.csv", "-t", "my-sales.x.y"]),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            settle(&["a.csv", "-t", "t", "--encoding", "klingon"]),
            Err(Refusal::Invalid(_))
        ));
        // clap itself refuses conflicting inference flags.
        assert!(
            Cli::try_parse_from([
                "pgbulk",
                "load",
                "a.csv",
                "-t",
                "t",
                "--sample-all",
                "--sample-rows",
                "5"
            ])
            .is_err()
        );
    }
}
