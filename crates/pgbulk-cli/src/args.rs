//! The command line as clap reads it: raw flags, each defined once. `main`
//! turns them into the library's options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pgbulk::conninfo::Request;
use pgbulk::csv::Dialect;

/// Move data into PostgreSQL in bulk: fast, incremental, safe for the live
/// database.
///
/// Connections resolve as in libpq: --db takes a URI, a key=value string or a
/// database name; PG* variables, ~/.pgpass and pg_service.conf apply; profiles
/// come from pgbulk.toml. With nothing configured, pgbulk uses (and starts) its
/// own local cluster under $PGBULK_HOME.
#[derive(Debug, Parser)]
#[command(name = "pgbulk", version, propagate_version = true)]
pub(crate) struct Cli {
    /// More output: -v for progress, -vv for debugging.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Only errors and the final summary (no progress).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// human (default): messages for people; json: one JSON object per event on stderr, for schedulers and log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        value_name = "FORMAT"
    )]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where to connect, as libpq resolves it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub(crate) struct ConnectionArgs {
    /// Connection string: postgresql:// URI, "key=value ..." or a database name.
    #[arg(
        long,
        short = 'd',
        visible_alias = "dbname",
        value_name = "CONNINFO",
        hide_env_values = true
    )]
    pub(crate) db: Option<String>,
    /// Connection profile from pgbulk.toml (default: $PGBULK_PROFILE).
    #[arg(long, value_name = "NAME")]
    pub(crate) profile: Option<String>,
}

impl ConnectionArgs {
    pub(crate) fn request(&self) -> Request {
        Request {
            db: self.db.clone(),
            profile: self.profile.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Connect, then print the target (without password), server version and latency.
    #[command(after_help = "Example:\n  pgbulk ping --db postgresql://loader@db.example.com/sales")]
    Ping {
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Load CSV files (or stdin; gzip and zstd recognised) or Parquet files into a table.
    #[command(
        after_help = "Examples:\n  pgbulk load sales.csv -t sales --key PointOfSale,Product,Date\n  zcat day.csv.gz | pgbulk load - -t staging.orders --db service=warehouse\n  pgbulk load landing/*.csv -t events --max-errors 100 --reject-file rejects.csv\n  pgbulk load 'lake/events/*.parquet' -t events --key id"
    )]
    Load(LoadArgs),
    /// Copy a table of another PostgreSQL database into this one, columns matched by name.
    #[command(
        after_help = "Examples:\n  pgbulk sync --from postgresql://reader@src/app --table users --db service=warehouse\n  pgbulk sync --from service=app --table users --where \"created_at::date = '2024-05-01'\" --delete-missing"
    )]
    Sync(SyncArgs),
    /// Export tables of a PostgreSQL database to BigQuery or Parquet files, incrementally.
    #[cfg(feature = "export")]
    #[command(
        after_help = "Examples:\n  pgbulk export --from service=app --table users --table orders --to bigquery://my-project/analytics\n  pgbulk export --from service=app --table users --to parquet://exports\n  pgbulk export --from postgresql://reader@src/app -t events --incremental updated_at --to parquet:///data/events"
    )]
    Export(ExportArgs),
    /// Print the CREATE TABLE pgbulk would infer for a CSV file, without loading.
    #[command(
        after_help = "Example:\n  pgbulk infer sales.csv -t sales --key PointOfSale,Product,Date --type stock=numeric(10,2)"
    )]
    Infer(InferArgs),
    /// Print the migration plan of a declared schema, without running it.
    #[command(
        after_help = "Example:\n  pgbulk plan --schema schema.sql --db postgresql://loader@db/sales"
    )]
    Plan {
        /// The declared DDL (CREATE TABLE, CREATE INDEX, COMMENT ON).
        #[arg(long, value_name = "FILE.sql")]
        schema: PathBuf,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Run the jobs of a pipeline file: [[load]], [[sync]] and [[export]] tables whose keys are those commands' flags.
    #[command(
        after_help = "Examples:\n  pgbulk run pipeline.toml\n  pgbulk run pipeline.toml --only sales,users --dry-run\n  0 * * * * cd /srv/etl && pgbulk run pipeline.toml --log-format json"
    )]
    Run(RunArgs),
    /// Say what the target's ledger holds for each job of a pipeline (or for one table): watermark, files loaded, last run, pending resume.
    #[command(
        after_help = "Examples:\n  pgbulk status pipeline.toml\n  pgbulk status --table sales --db service=warehouse"
    )]
    Status(StatusArgs),
    /// Manage pgbulk's own local PostgreSQL cluster (under $PGBULK_HOME).
    #[command(after_help = "Example:\n  pgbulk local psql -c 'SELECT count(*) FROM sales'")]
    Local {
        #[command(subcommand)]
        action: LocalAction,
    },
}

/// How the input is written.
#[derive(Debug, Args)]
#[command(next_help_heading = "Input dialect")]
pub(crate) struct DialectArgs {
    /// csv, or text: PostgreSQL's text format, as COPY TO and psql \copy ... to write it (tab-separated, \N for NULL, backslash escapes) (default: csv; text when a tab-separated input has \N fields).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) format: Option<InputFormat>,
    /// Field delimiter: one byte, or \t (tab) (default: detected from the header and first lines among , ; tab |).
    #[arg(long, value_name = "C", value_parser = Dialect::parse_byte)]
    pub(crate) delimiter: Option<u8>,
    /// Quote character.
    #[arg(long, default_value = "\"", value_name = "C", value_parser = Dialect::parse_byte)]
    pub(crate) quote: u8,
    /// Escape character inside quotes (default: the quote, doubled).
    #[arg(long, value_name = "C", value_parser = Dialect::parse_byte)]
    pub(crate) escape: Option<u8>,
    /// The files have no header line (name the columns with --columns).
    #[arg(long, conflicts_with = "header")]
    pub(crate) no_header: bool,
    /// The files' first line is a header (the default, but for --format text, where it is when it looks like one: COPY TO writes none unless asked).
    #[arg(long)]
    pub(crate) header: bool,
    /// An unquoted field equal to this is NULL (default: an unquoted empty field; an unquoted \N, the NULL of PostgreSQL's text format and MySQL's, then stops the load unless --format is given).
    #[arg(long, value_name = "STRING")]
    pub(crate) null: Option<String>,
    /// Text encoding: utf-8, latin1, windows-1252, utf-16le, shift_jis, ...
    #[arg(long, default_value = "utf-8", value_name = "NAME")]
    pub(crate) encoding: String,
    /// Lines to skip before the header (or the data).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) skip_lines: u64,
    /// Column names for the fields, comma-separated (headerless files, or overriding the header).
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub(crate) columns: Option<Vec<String>>,
}

/// How an input's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InputFormat {
    /// CSV, as COPY ... (FORMAT csv) reads it.
    Csv,
    /// PostgreSQL's text format, as COPY ... (FORMAT text) reads it.
    Text,
}

/// How column types are inferred for a table pgbulk creates.
#[derive(Debug, Args)]
#[command(next_help_heading = "Type inference (for a table pgbulk creates)")]
pub(crate) struct InferenceArgs {
    /// Infer from the first N rows (default: 1 MiB from the start, middle and end of a file).
    #[arg(long, value_name = "N", conflicts_with = "sample_all")]
    pub(crate) sample_rows: Option<u64>,
    /// Infer from every row (reads a file twice).
    #[arg(long)]
    pub(crate) sample_all: bool,
    /// Column types overriding inference, e.g. --type code=text,amount=numeric(12,2).
    #[arg(long = "type", value_name = "COL=TYPE,...", value_parser = parse_type_overrides)]
    pub(crate) types: Vec<Vec<(String, String)>>,
}

/// A duration: `N` seconds, or `N` with `ms`, `s`, `m` or `h`.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => return Err(format!("unknown unit \"{other}\" (use ms, s, m or h)")),
    };
    ms.map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too long"))
}

/// A size in bytes: `N`, or with `K`, `M`, `G` (powers of 1024; `B`/`iB`
/// may follow).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("expected a size like 64M, got \"{text}\""))?;
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("size \"{text}\" is out of range"))
}

/// `COL=TYPE,...`: commas inside a type's parentheses (`numeric(12,2)`)
/// belong to the type.
pub(crate) fn parse_type_overrides(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
        .into_iter()
        .map(|item| {
            let bad = || format!("expected COL=TYPE, got \"{item}\"");
            let (column, sql_type) = item.split_once('=').ok_or_else(bad)?;
            let (column, sql_type) = (column.trim(), sql_type.trim());
            if column.is_empty() || sql_type.is_empty() {
                return Err(bad());
            }
            Ok((column.to_owned(), sql_type.to_owned()))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ModeArg {
    Append,
    Upsert,
    Replace,
    ReplaceAtomic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnDuplicateArg {
    Last,
    First,
    Error,
}

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Input files; none or - reads stdin.
    #[arg(value_name = "FILE")]
    pub(crate) files: Vec<String>,
    /// The target table: [SCHEMA.]TABLE (SQL rules: quote names with other characters); default for one file: its name without extensions, written as pgbulk writes column names (Sales 2024.csv.gz: sales_2024).
    #[arg(long, short = 't', value_name = "TABLE", help_heading = "Target")]
    pub(crate) table: Option<String>,
    /// Declared DDL for the table: created if missing, migrated if different.
    #[arg(long, value_name = "FILE.sql", help_heading = "Target")]
    pub(crate) schema: Option<PathBuf>,
    /// Create the table anew from --schema or inference, swapping it in atomically at the end (grants and views kept).
    #[arg(long, help_heading = "Target")]
    pub(crate) recreate: bool,
    /// append, upsert, replace or replace-atomic (default: upsert when the table has a key, else append).
    #[arg(long, value_enum, help_heading = "Target")]
    pub(crate) mode: Option<ModeArg>,
    /// Upsert on these columns (default: the primary key).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "COL,...",
        help_heading = "Target"
    )]
    pub(crate) key: Option<Vec<String>>,
    /// When rows of one batch repeat a key: keep the last, the first, or fail (error).
    #[arg(
        long,
        value_enum,
        default_value = "last",
        value_name = "WHICH",
        help_heading = "Target"
    )]
    pub(crate) on_duplicate: OnDuplicateArg,
    /// Skip file columns the table lacks instead of failing.
    #[arg(long, help_heading = "Target")]
    pub(crate) ignore_extra: bool,
    #[command(flatten)]
    pub(crate) dialect: DialectArgs,
    #[command(flatten)]
    pub(crate) inference: InferenceArgs,
    /// Rows per batch; each batch commits [default: 1000000; an upsert of one big file that changes most of the table's rows, or whose first rows change nothing: its first 20000 rows, then the rest in one batch]
    #[arg(long, value_name = "N", help_heading = "Behaviour")]
    pub(crate) batch_rows: Option<u64>,
    /// Load everything in one transaction.
    #[arg(long, help_heading = "Behaviour")]
    pub(crate) single_transaction: bool,
    /// Merge into the table always: never rewrite it as a new copy when the rows change most of it.
    #[arg(long, help_heading = "Behaviour")]
    pub(crate) no_rewrite: bool,
    /// Bad rows to reject (with --reject-file) before failing.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        help_heading = "Behaviour"
    )]
    pub(crate) max_errors: u64,
    /// Where rejected rows go, as they were in the input; reasons go to PATH.log.
    #[arg(long, value_name = "PATH", help_heading = "Behaviour")]
    pub(crate) reject_file: Option<PathBuf>,
    /// Load the inputs from the start, ignoring where an earlier run of the same load stopped (or that it completed).
    #[arg(long, help_heading = "Behaviour")]
    pub(crate) restart: bool,
    /// Connections to load with at once: files appended to a table without a key load N at a time, one big file appended reads its halves at once (default 2), an upsert sends each key's rows to one of N (default: 2 for a file of 32 MB or more when most of its first 20,000 rows change rows of the table, else 1).
    #[arg(long, value_name = "N", help_heading = "Behaviour")]
    pub(crate) streams: Option<usize>,
    /// The longest field accepted (bytes, or with K, M, G); a longer one stops the load at its line.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G", help_heading = "Behaviour")]
    pub(crate) max_field_size: usize,
    /// After a lost connection (server restart, failover, network), continue from the last committed batch, this many times at most (files only).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        help_heading = "Behaviour"
    )]
    pub(crate) retries: u32,
    /// End the sessions that keep pgbulk from its locks once it has waited this long (e.g. 30s, 2m; 0 at once), and at once those a killed earlier run left behind.
    #[arg(long, value_name = "AFTER", value_parser = parse_duration, help_heading = "Behaviour")]
    pub(crate) terminate_blockers: Option<std::time::Duration>,
    /// Print the table to create or its migration steps and each input to load, continue or skip; change nothing.
    #[arg(long, help_heading = "Behaviour")]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

/// `pgbulk sync`.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// The source table: [SCHEMA.]TABLE.
    #[arg(long, short = 't', value_name = "TABLE", help_heading = "Source")]
    pub(crate) table: Option<String>,
    /// Instead of --table: the rows of this SELECT (then --to and --key are required).
    #[arg(
        long,
        value_name = "SQL",
        conflicts_with = "table",
        requires_all = ["to", "key"],
        help_heading = "Source"
    )]
    pub(crate) query: Option<String>,
    /// Only the source rows this SQL condition selects (run on the source).
    #[arg(long = "where", value_name = "SQL", help_heading = "Source")]
    pub(crate) filter: Option<String>,
    /// Read only rows at or after the stored watermark of this column (timestamptz, timestamp, date or integer); the next start is stored once they committed.
    #[arg(long, value_name = "COLUMN", help_heading = "Source")]
    pub(crate) incremental: Option<String>,
    /// With --incremental: re-read this much before the watermark too (e.g. 5m), for columns stamped by application clocks.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "incremental", help_heading = "Source")]
    pub(crate) lookback: Option<std::time::Duration>,
    /// The destination table (default: the source's name).
    #[arg(long, value_name = "TABLE", help_heading = "Target")]
    pub(crate) to: Option<String>,
    /// How the destination changes (default: upsert when it has a key, else append).
    #[arg(long, value_enum, help_heading = "Target")]
    pub(crate) mode: Option<ModeArg>,
    /// Key columns to upsert on (default: the destination's primary key).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "COL,...",
        help_heading = "Target"
    )]
    pub(crate) key: Option<Vec<String>>,
    /// Leave out source columns the destination lacks (default: refuse the run).
    #[arg(long, help_heading = "Target")]
    pub(crate) ignore_extra: bool,
    /// Declared DDL for the destination: created if missing, migrated if different; the source's columns are matched against it.
    #[arg(long, value_name = "FILE.sql", help_heading = "Target")]
    pub(crate) schema: Option<PathBuf>,
    /// Delete the destination's rows (within --where, evaluated there too) whose key is not among the rows read, with the last batch.
    #[arg(long, conflicts_with = "incremental", help_heading = "Target")]
    pub(crate) delete_missing: bool,
    /// Rows per batch; each batch commits [default: 1000000; a new destination is filled in one transaction: created, written frozen, indexed once its rows are in]
    #[arg(long, value_name = "N", help_heading = "Behaviour")]
    pub(crate) batch_rows: Option<u64>,
    /// Read and load N ranges of the source at once, from one snapshot (by a single integer key, else by blocks of the table or each of its partitions on PostgreSQL 14+); each range commits on its own and a rerun redoes only unfinished ones.
    #[arg(
        long,
        short = 'j',
        default_value_t = 1,
        value_name = "N",
        help_heading = "Behaviour"
    )]
    pub(crate) jobs: usize,
    /// Print the column mapping, casts, what would be read and a table to create; write nothing.
    #[arg(long, help_heading = "Behaviour")]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

/// Where a sync or an export reads from.
#[derive(Debug, Args)]
pub(crate) struct SourceArgs {
    /// The source database: what --db takes (URI, "key=value ...", service=NAME, a database name).
    #[arg(
        long,
        value_name = "CONNINFO",
        hide_env_values = true,
        help_heading = "Source"
    )]
    pub(crate) from: Option<String>,
    /// The source's connection profile from pgbulk.toml.
    #[arg(long, value_name = "NAME", help_heading = "Source")]
    pub(crate) from_profile: Option<String>,
}

impl SourceArgs {
    /// Where the source is.
    pub(crate) fn request(&self) -> Request {
        Request {
            db: self.from.clone(),
            profile: self.from_profile.clone(),
        }
    }
}

/// `pgbulk export`.
#[cfg(feature = "export")]
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// A source table, [SCHEMA.]TABLE; repeat for several (each exported on its own).
    #[arg(
        long,
        short = 't',
        value_name = "TABLE",
        required_unless_present = "query",
        help_heading = "Source"
    )]
    pub(crate) table: Vec<String>,
    /// Instead of --table: the rows of this SELECT (then --to-table, and for BigQuery --key, are required).
    #[arg(
        long,
        value_name = "SQL",
        conflicts_with = "table",
        requires = "to_table",
        help_heading = "Source"
    )]
    pub(crate) query: Option<String>,
    /// Only the source rows this SQL condition selects.
    #[arg(long = "where", value_name = "SQL", help_heading = "Source")]
    pub(crate) filter: Option<String>,
    /// Export only rows at or after the last run's watermark of this column (timestamptz, timestamp, date or integer); the next is stored after the rows.
    #[arg(long, value_name = "COLUMN", help_heading = "Source")]
    pub(crate) incremental: Option<String>,
    /// With --incremental: re-read this much before the watermark too (e.g. 5m), for columns stamped by application clocks.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "incremental", help_heading = "Source")]
    pub(crate) lookback: Option<std::time::Duration>,
    /// Where to: bigquery://PROJECT/DATASET, or parquet://DIR (a directory: one folder of files per table, and _pgbulk_state.json).
    #[arg(long, value_name = "URL", help_heading = "Destination")]
    pub(crate) to: String,
    /// BigQuery: the key the MERGE matches rows on (default: the source's primary key).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "COL,...",
        help_heading = "Destination"
    )]
    pub(crate) key: Option<Vec<String>>,
    /// BigQuery: an emulator's address (host:port or URL), used without credentials.
    #[arg(
        long,
        value_name = "URL",
        env = "BIGQUERY_EMULATOR_HOST",
        help_heading = "Destination"
    )]
    pub(crate) bigquery_endpoint: Option<String>,
    /// The destination's name of the table (one --table only; default: the table's name, with its schema outside public).
    #[arg(long, value_name = "NAME", help_heading = "Destination")]
    pub(crate) to_table: Option<String>,
    /// NULL elements of arrays: keep them, drop them, or refuse the row (default: keep in Parquet files, refuse for BigQuery, whose arrays hold none).
    #[arg(long, value_enum, help_heading = "Destination")]
    pub(crate) array_nulls: Option<ArrayNullsArg>,
    /// Print each table's column mapping, what would be read and the file that would be written; write nothing.
    #[arg(long, help_heading = "Behaviour")]
    pub(crate) dry_run: bool,
}

#[cfg(feature = "export")]
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ArrayNullsArg {
    Keep,
    Drop,
    Refuse,
}

/// `pgbulk run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The pipeline file (TOML).
    #[arg(value_name = "PIPELINE.toml")]
    pub(crate) file: PathBuf,
    /// Jobs run at once.
    #[arg(long, short = 'j', default_value_t = 2, value_name = "N")]
    pub(crate) jobs: usize,
    /// Run only the jobs with these names.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub(crate) only: Vec<String>,
    /// Check the file, resolve the connections (no password shown) and print each job's plan; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Stop at the first job that fails: running jobs roll back their batch in flight, the others do not start.
    #[arg(long)]
    pub(crate) fail_fast: bool,
}

/// `pgbulk status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The pipeline file whose jobs to report on.
    #[arg(
        value_name = "PIPELINE.toml",
        required_unless_present = "table",
        conflicts_with = "table"
    )]
    pub(crate) file: Option<PathBuf>,
    /// Instead of a pipeline: the ledger of one table ([SCHEMA.]TABLE).
    #[arg(long, short = 't', value_name = "TABLE")]
    pub(crate) table: Option<String>,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InferArgs {
    /// The CSV file (or - for stdin).
    #[arg(value_name = "FILE")]
    pub(crate) file: String,
    /// The table name to use in the DDL (default: the file's name without extensions, as pgbulk load names it; imported for stdin).
    #[arg(long, short = 't', value_name = "TABLE")]
    pub(crate) table: Option<String>,
    #[command(flatten)]
    pub(crate) dialect: DialectArgs,
    #[command(flatten)]
    pub(crate) inference: InferenceArgs,
    /// Primary key columns for the DDL.
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    pub(crate) key: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LocalAction {
    /// Create the cluster if needed and start it.
    Start,
    /// Stop the cluster.
    Stop,
    /// Stop the cluster and delete it: its data, log and password.
    Remove,
    /// Say whether the cluster exists and runs (exit 8 when it does not run).
    Status,
    /// Print the connection URL (starting the cluster if needed).
    Url,
    /// Run psql against the cluster (starting it if needed); extra arguments go to psql.
    Psql {
        /// Arguments for psql.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert!(ms("soon").is_err() && ms("5 fortnights").is_err() && ms("").is_err());
        assert!(ms("99999999999999999999h").is_err());
    }

    /// Every flag of `pgbulk load` is documented in the README's flag table
    /// (and the table names no flag that does not exist).
    #[test]
    fn the_readme_documents_every_load_flag() {
        let readme = include_str!("../../../README.md");
        let table_start = readme
            .find("### `pgbulk load` flags")
            .expect("the README has a load flag table");
        let table: String = readme[table_start..]
            .lines()
            .skip(1)
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n");
        let command = Cli::command();
        let load = command.find_subcommand("load").expect("load exists");
        let flags: Vec<String> = load
            .get_arguments()
            .chain(command.get_arguments())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .filter(|f| !matches!(f.as_str(), "--help" | "--version" | "--db" | "--profile"))
            .collect();
        for flag in &flags {
            assert!(
                table.contains(&format!("`{flag}"))
                    || table.contains(&format!("{flag}`"))
                    || table.contains(&format!("{flag} ")),
                "README's load flag table lacks {flag}"
            );
        }
        for word in table.split(['`', ' ', ',']) {
            if let Some(flag) = word.strip_prefix("--") {
                assert!(
                    flags.contains(&format!("--{flag}")),
                    "README's load flag table names --{flag}, which pgbulk load does not have"
                );
            }
        }
    }
}
