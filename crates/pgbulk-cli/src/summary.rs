//! What `pgbulk load` says when it ends: the summary line on stdout, what
//! the user should know on stderr, the interrupt message. Text only, so it
//! is unit-tested.

use pgbulk::ingest::OnDuplicate;
use pgbulk::input::Source;
use pgbulk::load::{LoadOptions, LoadReport};

use crate::progress::thousands;

/// The inputs as the summary names them (those loaded now, when an
/// earlier run loaded some).
fn inputs(opts: &LoadOptions, report: &LoadReport) -> String {
    if opts.sources.is_empty() {
        "stdin".to_owned()
    } else {
        let names: Vec<String> = opts
            .sources
            .iter()
            .map(Source::name)
            .filter(|n| report.already_loaded || !report.skipped.contains(n))
            .collect();
        names.join(", ")
    }
}

/// The lines for stderr (unless `--quiet`): the DDL of a table created from
/// inferred types, a schema created for it, notes.
pub(crate) fn said_on_stderr(report: &LoadReport, opts: &LoadOptions) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(ddl) = &report.inferred_ddl {
        let sampled = report
            .sampled
            .as_ref()
            .map(pgbulk::load::Sampled::comment)
            .unwrap_or_default();
        let from = if report.typed_input {
            "the input's schema"
        } else {
            "inferred types"
        };
        lines.push(format!(
            "created {} from {from}:\n{sampled}{ddl}",
            opts.table
        ));
    }
    // A schema pgbulk created is said: it was not asked for by name.
    for m in report
        .migrations
        .iter()
        .filter(|m| m.contains(": create schema "))
    {
        lines.push(format!("{m} (for the new table)"));
    }
    // So is a declared type created (one that existed is used as it is).
    lines.extend(
        report
            .migrations
            .iter()
            .filter(|m| m.contains(": create type "))
            .cloned(),
    );
    lines.extend(report.notes.iter().cloned());
    lines
}

/// The outcome for stdout: nothing to load, already loaded, or the
/// summary (after a line saying where an interrupted run is resumed).
pub(crate) fn outcome(report: &LoadReport, opts: &LoadOptions) -> String {
    let inputs = inputs(opts, report);
    if let Some(why) = &report.nothing_to_load {
        return why.clone();
    }
    if report.already_loaded {
        return format!(
            "{inputs} was loaded completely into {} by an earlier run with the same options, and the table has not been emptied or rewritten since; nothing to do (--restart loads it again)",
            opts.table
        );
    }
    let mut out = String::new();
    if let Some(rows) = report.resumed_after_rows {
        out.push_str(&format!(
            "resumed after {} committed by an earlier run\n",
            self::rows(rows)
        ));
    }
    let rate = report.rows_read as f64 / report.seconds.max(0.001);
    out.push_str(&format!(
        "loaded {inputs} into {}: {} read, {} inserted, {} updated, {} unchanged",
        opts.table,
        rows(report.rows_read),
        thousands(report.inserted),
        thousands(report.updated),
        thousands(report.unchanged)
    ));
    if report.deleted > 0 {
        out.push_str(&format!(", {} deleted", thousands(report.deleted)));
    }
    if report.repeated > 0 {
        let kept = match opts.on_duplicate {
            OnDuplicate::First => "first",
            _ => "last",
        };
        out.push_str(&format!(
            ", {} repeated a key already in their batch (the {kept} row per key was kept)",
            thousands(report.repeated)
        ));
    }
    out.push_str(&format!(", {} rejected", thousands(report.rejected)));
    if report.rejected > 0 {
        if let Some(path) = &opts.reject_file {
            out.push_str(&format!(" (in {})", path.display()));
        }
    }
    out.push_str(&format!(
        "; {} in {:.1} s ({} rows/s)",
        batches(report.batches),
        report.seconds,
        thousands(rate as u64)
    ));
    out
}

/// The outcome of a sync for stdout.
pub(crate) fn synced(
    report: &pgbulk::sync::SyncReport,
    opts: &pgbulk::sync::SyncOptions,
) -> String {
    let load = &report.load;
    let to = match (&opts.to, &opts.source) {
        (Some(to), _) => to.to_string(),
        (None, source) => source.to_string(),
    };
    format!(
        "synced {}{} into {to}: {} read, {} inserted, {} updated, {} unchanged{}; {} in {:.1} s",
        opts.source,
        report
            .ranges
            .map(|n| format!(" (in {n} ranges)"))
            .unwrap_or_default(),
        rows(load.rows_read),
        thousands(load.inserted),
        thousands(load.updated),
        thousands(load.unchanged),
        if load.deleted > 0 {
            format!(", {} deleted", thousands(load.deleted))
        } else {
            String::new()
        },
        batches(load.batches),
        load.seconds
    )
}

/// "1 batch", "3 batches".
fn batches(n: u64) -> String {
    if n == 1 {
        "1 batch".to_owned()
    } else {
        format!("{} batches", thousands(n))
    }
}

/// `1 row`, `2 rows`, `1,234 rows`.
fn rows(n: u64) -> String {
    if n == 1 {
        "1 row".to_owned()
    } else {
        format!("{} rows", thousands(n))
    }
}

/// What an interrupted load says: what committed, and what to do.
pub(crate) fn interrupted(rows: u64, batches: u64, single_transaction: bool) -> String {
    if batches == 0 {
        "interrupted: nothing was committed".to_owned()
    } else if single_transaction {
        format!(
            "interrupted after the load committed: all {} are in",
            self::rows(rows)
        )
    } else {
        format!(
            "interrupted: {} in {} {} committed; the batch in flight was rolled back. Run the same command again to continue.",
            self::rows(rows),
            self::batches(batches),
            if batches == 1 { "was" } else { "were" }
        )
    }
}

/// The line `pgbulk export` prints for a table it exported.
#[cfg(feature = "export")]
pub(crate) fn exported(done: &pgbulk::export::TableExport) -> String {
    let rows = match (&done.file, done.merged) {
        (_, Some(_)) if done.rows == 0 => "nothing new".to_owned(),
        (_, Some(merged)) => format!(
            "{} read, merged into {}: {}",
            rows(done.rows),
            done.table,
            match merged.split {
                Some((inserted, updated)) => format!(
                    "{} inserted, {} updated",
                    thousands(inserted),
                    thousands(updated)
                ),
                None => format!("{} inserted or updated", thousands(merged.affected)),
            }
        ),
        (Some(file), None) => format!("{} into {file} ({})", rows(done.rows), size(done.bytes)),
        (None, None) => "nothing new, no file written".to_owned(),
    };
    let next = match &done.watermarks {
        Some((_, Some(next))) => format!("; the next run starts at {next}"),
        _ => String::new(),
    };
    format!("{}: {rows}{next}", done.source)
}

/// A byte count for people.
#[cfg(feature = "export")]
fn size(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{} MB", bytes >> 20)
    } else if bytes >= 10 << 10 {
        format!("{} kB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            sources: vec![Source::File("a.csv".into()), Source::File("b.csv".into())],
            table: pgbulk::schema::TableName::parse("sales").expect("name"),
            reject_file: Some("bad.csv".into()),
            on_duplicate: OnDuplicate::First,
            ..LoadOptions::default()
        }
    }

    #[test]
    fn the_summary_counts_what_happened() {
        let report = LoadReport {
            rows_read: 1_234_567,
            inserted: 1_000_000,
            updated: 200_000,
            unchanged: 34_000,
            repeated: 560,
            rejected: 7,
            batches: 3,
            seconds: 2.0,
            resumed_after_rows: Some(5000),
            ..LoadReport::default()
        };
        assert_eq!(
            outcome(&report, &opts()),
            "resumed after 5,000 rows committed by an earlier run\n\
             loaded a.csv, b.csv into sales: 1,234,567 rows read, 1,000,000 inserted, 200,000 updated, 34,000 unchanged, \
             560 repeated a key already in their batch (the first row per key was kept), 7 rejected (in bad.csv); \
             3 batches in 2.0 s (617,283 rows/s)"
        );
        let done = LoadReport {
            already_loaded: true,
            ..LoadReport::default()
        };
        assert!(
            outcome(&done, &opts()).starts_with("a.csv, b.csv was loaded completely into sales")
        );
        let stdin = LoadOptions {
            sources: Vec::new(),
            ..opts()
        };
        assert!(
            outcome(&LoadReport::default(), &stdin)
                .starts_with("loaded stdin into sales: 0 rows read")
        );
    }

    #[test]
    fn an_interrupt_says_what_committed() {
        assert_eq!(
            interrupted(0, 0, false),
            "interrupted: nothing was committed"
        );
        assert!(
            interrupted(1500, 2, false)
                .starts_with("interrupted: 1,500 rows in 2 batches were committed")
        );
        assert_eq!(
            interrupted(10, 1, true),
            "interrupted after the load committed: all 10 rows are in"
        );
        assert!(
            interrupted(1, 1, false).starts_with("interrupted: 1 row in 1 batch was committed")
        );
    }

    #[test]
    fn stderr_says_the_inferred_table_a_created_schema_and_notes() {
        let report = LoadReport {
            inferred_ddl: Some("CREATE TABLE sales (a int);\n".to_owned()),
            migrations: vec![
                "s.sales: create schema s".to_owned(),
                "s.sales: create table".to_owned(),
            ],
            notes: vec!["detected delimiter ';'".to_owned()],
            ..LoadReport::default()
        };
        assert_eq!(
            said_on_stderr(&report, &opts()),
            vec![
                "created sales from inferred types:\nCREATE TABLE sales (a int);\n".to_owned(),
                "s.sales: create schema s (for the new table)".to_owned(),
                "detected delimiter ';'".to_owned(),
            ]
        );
    }
}
