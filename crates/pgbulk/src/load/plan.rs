//! What a load will do, decided from its options, the table's facts and
//! what earlier runs stored: the declaration's source, the key and mode,
//! the ledger's names, whether to split the input, where each stream
//! starts. No I/O here, so each rule is unit-tested without a server;
//! `load::load` reads what these decisions need and carries them out.

use crate::catalog::TableFacts;
use crate::error::{Error, Result};
use crate::infer;
use crate::schema::{Declaration, TableName};

use super::ledger::Verdict;
use super::streams::{PARALLEL_MIN_BYTES, Stream};
use super::{LoadMode, LoadOptions};
use crate::input::Source;

/// Where the table's declaration comes from.
#[derive(Debug)]
pub(crate) enum Declared {
    /// `--schema`, qualified with the session's schema.
    Given(Declaration),
    /// The table as it is.
    Existing,
    /// Types inferred from the input (the table is new, or `--recreate`).
    Inferred,
}

/// Chooses the declaration's source, refusing flags that contradict each
/// other or a schema file that does not declare the table.
pub(crate) fn declared(
    opts: &LoadOptions,
    table: &TableName,
    session_schema: &str,
    exists: bool,
) -> Result<Declared> {
    if opts.recreate && opts.mode.is_some_and(|m| m != LoadMode::ReplaceAtomic) {
        return Err(Error::config(
            "--recreate swaps a new table in atomically (mode replace-atomic); leave --mode out",
        ));
    }
    if let Some(ddl) = &opts.schema_ddl {
        let d = Declaration::parse(ddl)?.qualified(session_schema);
        if !d.tables().contains(table) {
            return Err(Error::config(format!(
                "the schema file does not declare table {table} (it declares {})",
                d.tables()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        return Ok(Declared::Given(d));
    }
    Ok(if !opts.recreate && exists {
        Declared::Existing
    } else {
        Declared::Inferred
    })
}

/// The key and mode of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyAndMode {
    /// `--key`, as the table's column names.
    pub(crate) key: Option<Vec<String>>,
    /// The key rows are matched on: named, else the primary key (so naming
    /// the primary key's columns or not is the same load).
    pub(crate) effective_key: Option<Vec<String>>,
    pub(crate) mode: LoadMode,
}

/// The key (`--key` columns matched like header names) and the mode:
/// given, else replace-atomic for `--recreate` of an existing table,
/// upsert when there is a key, append otherwise.
pub(crate) fn key_and_mode(
    opts: &LoadOptions,
    facts: &TableFacts,
    table: &TableName,
    exists: bool,
) -> Result<KeyAndMode> {
    let key: Option<Vec<String>> = opts
        .key
        .as_ref()
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    match_column(facts, n).ok_or_else(|| {
                        Error::config(format!("key column \"{n}\" is not a column of {table}"))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let has_key = facts.primary_key.is_some() || key.is_some();
    let mode = opts.mode.unwrap_or(if opts.recreate && exists {
        LoadMode::ReplaceAtomic
    } else if has_key {
        LoadMode::Upsert
    } else {
        LoadMode::Append
    });
    if mode == LoadMode::Upsert && !has_key {
        return Err(Error::config(format!(
            "upsert needs a key: {table} has no primary key (name the key columns with --key)"
        )));
    }
    let effective_key = key
        .clone()
        .or_else(|| facts.primary_key.as_ref().map(|(_, cols)| cols.clone()));
    Ok(KeyAndMode {
        key,
        effective_key,
        mode,
    })
}

/// The writable column of `facts` a file column called `name` fills:
/// the same name (as the server keeps it: cut to 63 bytes), else the only
/// one equal ignoring case, else the name as pgbulk normalises it.
pub(crate) fn match_column(facts: &TableFacts, name: &str) -> Option<String> {
    let name = infer::truncate_identifier(name);
    let columns: Vec<&str> = facts
        .columns
        .iter()
        .filter(|c| c.generated.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if let Some(c) = columns.iter().find(|c| **c == name) {
        return Some((*c).to_owned());
    }
    if let [only] = columns
        .iter()
        .filter(|c| c.eq_ignore_ascii_case(name))
        .collect::<Vec<_>>()
        .as_slice()
    {
        return Some((**only).to_owned());
    }
    let normalized = infer::normalize_name(name);
    columns
        .iter()
        .find(|c| **c == normalized)
        .map(|c| (*c).to_owned())
}

/// The ledger name of a load with `fingerprint` (none: not resumable), or
/// of one of its parallel parts.
pub(super) fn ledger_name(fingerprint: Option<&str>, part: Option<&str>) -> Option<String> {
    fingerprint.map(|fp| match part {
        Some(part) => format!("load:{fp}:{part}"),
        None => format!("load:{fp}"),
    })
}

/// Whether the load may read halves of its input on two connections (the
/// input itself is checked after): a resumable append, not inferred from
/// standard input. Measured: one backend cannot keep up with the client's
/// encoding, of narrow rows or wide ones.
/// Not an upsert: the halves commit in no particular order, so a key in
/// both could keep the first half's row.
pub(super) fn may_split(
    opts: &LoadOptions,
    mode: LoadMode,
    resumable: bool,
    replaying_sample: bool,
) -> bool {
    opts.streams > 1
        && resumable
        && mode == LoadMode::Append
        && !replaying_sample
        && opts.before_final_commit.is_none()
}

/// Whether an upsert may run on several connections, each key's rows in
/// one of them (the table is checked after, see
/// [`crate::ingest::parallel_unsuited`]): asked for, or left to the first
/// rows (see [`super::probe::upsert_streams`]) of a file of at least
/// [`PARALLEL_MIN_BYTES`], one input into a
/// table that is there, resumable (a stream that fails is followed by one
/// stream from the last committed batch), without rejects, sampled rows or
/// a hook.
pub(super) fn may_hash(
    opts: &LoadOptions,
    mode: LoadMode,
    exists: bool,
    resumable: bool,
    replaying_sample: bool,
    sources: &[Source],
) -> bool {
    let asked = match opts.upsert_streams {
        Some(n) => n > 1,
        // Left to the first rows: for one big file only.
        None => sources
            .iter()
            .all(|s| matches!(s, Source::File(_)) && s.size().unwrap_or(0) >= PARALLEL_MIN_BYTES),
    };
    asked
        && mode == LoadMode::Upsert
        && exists
        && resumable
        && !replaying_sample
        && opts.max_errors == 0
        && opts.before_final_commit.is_none()
        && sources.len() == 1
}

/// Moves `stream` to where the ledger says it stands; returns a note for
/// the user when the ledger was not followed, or the refusal.
pub(super) fn follow(stream: &mut Stream, verdict: Verdict) -> Result<Option<String>> {
    match verdict {
        Verdict::Resume(resumed) => {
            stream.credit = resumed.offset.saturating_sub(stream.start.offset);
            stream.start = resumed;
            Ok(None)
        }
        Verdict::Fresh(why) => Ok(why),
        Verdict::Refuse(why) => Err(Error::config(why)),
    }
}

/// Where the streams start, taken together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Start {
    /// Every stream's inputs were read and committed: nothing to do.
    pub(super) already_loaded: bool,
    /// Rows an earlier run committed.
    pub(super) resumed_rows: u64,
    /// An earlier run committed something: a replace does not delete
    /// again (its first batch deleted and committed), and the reject file
    /// is appended to.
    pub(super) continues: bool,
    /// The reject file's and its log's lengths at the last commit (the
    /// stream that wrote most), when continuing.
    pub(super) rejects: Option<(u64, u64)>,
}

/// Where `streams` of a load of `inputs` inputs start, taken together.
pub(super) fn start(streams: &[Stream], inputs: usize) -> Start {
    let continues = streams
        .iter()
        .any(|s| s.start.file > 0 || s.start.offset > 0 || s.start.rows > 0);
    Start {
        already_loaded: streams.iter().all(|s| s.start.file >= inputs),
        resumed_rows: streams.iter().map(|s| s.start.rows).sum(),
        continues,
        rejects: continues.then(|| {
            streams.iter().fold((0, 0), |(d, l), s| {
                (d.max(s.start.rejects), l.max(s.start.rejects_log))
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ColumnFacts;
    use crate::load::Position;

    fn column(name: &str) -> ColumnFacts {
        ColumnFacts::plain(name, "text", 25, -1)
    }

    fn facts(columns: &[&str], pk: Option<&[&str]>) -> TableFacts {
        TableFacts {
            oid: 1,
            columns: columns.iter().map(|c| column(c)).collect(),
            primary_key: pk.map(|k| {
                (
                    "t_pkey".to_owned(),
                    k.iter().map(|c| (*c).to_owned()).collect(),
                )
            }),
            constraints: Vec::new(),
            indexes: Vec::new(),
            comment: None,
            column_comments: Default::default(),
        }
    }

    fn table() -> TableName {
        TableName::new("public", "t")
    }

    #[test]
    fn the_declaration_comes_from_the_schema_the_table_or_inference() {
        let opts = LoadOptions::default();
        assert!(matches!(
            declared(&opts, &table(), "public", true),
            Ok(Declared::Existing)
        ));
        assert!(matches!(
            declared(&opts, &table(), "public", false),
            Ok(Declared::Inferred)
        ));
        let recreate = LoadOptions {
            recreate: true,
            ..LoadOptions::default()
        };
        assert!(matches!(
            declared(&recreate, &table(), "public", true),
            Ok(Declared::Inferred)
        ));
        let conflicting = LoadOptions {
            recreate: true,
            mode: Some(LoadMode::Append),
            ..LoadOptions::default()
        };
        assert!(
            declared(&conflicting, &table(), "public", true)
                .expect_err("conflict")
                .message()
                .contains("--recreate swaps a new table in atomically")
        );
        let other = LoadOptions {
            schema_ddl: Some("CREATE TABLE u (a int);".to_owned()),
            ..LoadOptions::default()
        };
        assert_eq!(
            declared(&other, &table(), "public", true)
                .expect_err("not declared")
                .message(),
            "the schema file does not declare table public.t (it declares public.u)"
        );
        let given = LoadOptions {
            schema_ddl: Some("CREATE TABLE t (a int);".to_owned()),
            ..LoadOptions::default()
        };
        assert!(matches!(
            declared(&given, &table(), "public", false),
            Ok(Declared::Given(_))
        ));
    }

    #[test]
    fn the_mode_follows_the_key() {
        let opts = LoadOptions::default();
        let keyless = facts(&["a", "b"], None);
        let keyed = facts(&["id", "b"], Some(&["id"]));
        let decide = |o: &LoadOptions, f: &TableFacts, exists| {
            key_and_mode(o, f, &table(), exists).map(|k| k.mode)
        };
        assert_eq!(decide(&opts, &keyless, true).ok(), Some(LoadMode::Append));
        assert_eq!(decide(&opts, &keyed, true).ok(), Some(LoadMode::Upsert));
        let named = LoadOptions {
            key: Some(vec!["A".to_owned()]),
            ..LoadOptions::default()
        };
        let k = key_and_mode(&named, &keyless, &table(), true).expect("key");
        assert_eq!(
            (k.mode, k.key.clone(), k.effective_key.clone()),
            (
                LoadMode::Upsert,
                Some(vec!["a".to_owned()]),
                Some(vec!["a".to_owned()])
            ),
            "a key named as in the file matches like a header"
        );
        let pk = key_and_mode(&opts, &keyed, &table(), true).expect("pk");
        assert_eq!(
            (pk.key, pk.effective_key),
            (None, Some(vec!["id".to_owned()]))
        );
        let unknown = LoadOptions {
            key: Some(vec!["nope".to_owned()]),
            ..LoadOptions::default()
        };
        assert_eq!(
            decide(&unknown, &keyless, true)
                .expect_err("unknown")
                .message(),
            "key column \"nope\" is not a column of public.t"
        );
        let upsert = LoadOptions {
            mode: Some(LoadMode::Upsert),
            ..LoadOptions::default()
        };
        assert!(
            decide(&upsert, &keyless, true)
                .expect_err("no key")
                .message()
                .starts_with("upsert needs a key")
        );
        let recreate = LoadOptions {
            recreate: true,
            ..LoadOptions::default()
        };
        assert_eq!(
            decide(&recreate, &keyed, true).ok(),
            Some(LoadMode::ReplaceAtomic)
        );
        assert_eq!(
            decide(&recreate, &keyed, false).ok(),
            Some(LoadMode::Upsert),
            "a table to create is created, not swapped"
        );
    }

    #[test]
    fn columns_match_exactly_then_ignoring_case_then_normalised() {
        let f = facts(&["id", "Name", "name2", "order_date"], None);
        assert_eq!(match_column(&f, "id").as_deref(), Some("id"));
        assert_eq!(match_column(&f, "NAME").as_deref(), Some("Name"));
        assert_eq!(
            match_column(&f, "Order Date").as_deref(),
            Some("order_date")
        );
        assert_eq!(match_column(&f, "missing"), None);
        let twins = facts(&["a", "A"], None);
        assert_eq!(match_column(&twins, "A").as_deref(), Some("A"));
        assert_eq!(match_column(&twins, "a").as_deref(), Some("a"));
    }

    #[test]
    fn only_resumable_appends_split() {
        let opts = LoadOptions {
            streams: 2,
            ..LoadOptions::default()
        };
        assert!(may_split(&opts, LoadMode::Append, true, false));
        assert!(!may_split(&opts, LoadMode::Upsert, true, false));
        assert!(!may_split(&opts, LoadMode::Replace, true, false));
        assert!(!may_split(&opts, LoadMode::Append, false, false));
        assert!(!may_split(&opts, LoadMode::Append, true, true));
        let one = LoadOptions {
            streams: 1,
            ..LoadOptions::default()
        };
        assert!(!may_split(&one, LoadMode::Append, true, false));
    }

    #[test]
    fn streams_resume_where_the_ledger_says() {
        let stream = |offset, rows| Stream {
            path_key: None,
            name: ledger_name(Some("fp"), None),
            start: Position {
                offset,
                rows,
                ..Position::default()
            },
            limit: None,
            credit: 0,
        };
        assert_eq!(
            ledger_name(Some("fp"), Some("2")).as_deref(),
            Some("load:fp:2")
        );
        assert_eq!(ledger_name(None, None), None);
        let mut s = stream(100, 0);
        let resumed = Position {
            offset: 400,
            rows: 30,
            rejects: 7,
            rejects_log: 9,
            ..Position::default()
        };
        assert_eq!(follow(&mut s, Verdict::Resume(resumed)).ok(), Some(None));
        assert_eq!((s.credit, s.start.offset), (300, 400));
        assert_eq!(
            follow(&mut s, Verdict::Fresh(Some("emptied".to_owned()))).ok(),
            Some(Some("emptied".to_owned()))
        );
        assert!(follow(&mut s, Verdict::Refuse("no".to_owned())).is_err());

        let fresh = start(&[stream(0, 0)], 1);
        assert_eq!(
            fresh,
            Start {
                already_loaded: false,
                resumed_rows: 0,
                continues: false,
                rejects: None,
            }
        );
        let both = start(&[s.clone(), stream(0, 5)], 1);
        assert_eq!(
            (both.resumed_rows, both.continues, both.rejects),
            (35, true, Some((7, 9)))
        );
        let done = Stream {
            start: Position {
                file: 1,
                ..Position::default()
            },
            ..stream(0, 0)
        };
        assert!(start(&[done], 1).already_loaded);
    }
}
