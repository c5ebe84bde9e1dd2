//! The load ledger: what an earlier run of the same load committed, and
//! whether it still describes the table.
//!
//! A load is known by a fingerprint of everything that decides what it
//! stores: each input's identity (path, size, modification time), the
//! dialect, header handling, encoding, column names, the schema, the key
//! and the mode. Each fingerprint (and each of its parallel streams) keeps
//! its own row in `pgbulk_watermark`, committed with every batch, so
//! another load into the same table never overwrites it, and a changed
//! option is a different load. The same rule holds in every mode: a rerun
//! of a load continues after its last committed batch, and does nothing
//! once it completed, unless the table was emptied or rewritten since.
//!
//! A load of one file also keeps, under a name made of its options and the
//! file's path alone, where the file ended and its hash: when the file has
//! grown since (lines appended, its earlier bytes unchanged), the next run
//! reads only what was appended.

use std::sync::atomic::AtomicBool;

use ring::digest;
use tokio_postgres::Client;

use super::reader::{InputEnd, Position};
use super::{LoadMode, LoadOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::ingest::StoredResume;
use crate::input::Source;
use crate::schema::TableName;

/// The fingerprint of a load: 16 hex digits.
pub(super) fn fingerprint(
    identities: &[Option<serde_json::Value>],
    mode: LoadMode,
    key: Option<&Vec<String>>,
    opts: &LoadOptions,
) -> String {
    let d = &opts.dialect;
    let mut described = serde_json::json!({
        "inputs": identities,
        "delimiter": d.delimiter,
        "quote": d.quote,
        "escape": d.escape,
        "null": String::from_utf8_lossy(&d.null),
        "header": opts.header,
        "skip_lines": opts.skip_lines,
        "encoding": crate::input::encoding_name(opts.encoding),
        "columns": opts.columns,
        "ignore_extra": opts.ignore_extra,
        "schema": opts.schema_ddl,
        "sample": format!("{:?}", opts.sample),
        "types": opts.types,
        "recreate": opts.recreate,
        "mode": format!("{mode:?}"),
        "key": key,
        "on_duplicate": format!("{:?}", opts.on_duplicate),
    });
    // Added only when set: the fingerprints of CSV loads stay as they were.
    if d.text {
        described["text"] = serde_json::Value::Bool(true);
    }
    let hash = digest::digest(&digest::SHA256, described.to_string().as_bytes());
    hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What to do with a stored resume state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Continue from this position.
    Resume(Position),
    /// Start from the beginning; the reason an earlier run's state does
    /// not count, if there was one.
    Fresh(Option<String>),
    /// Neither is safe: the message says why and what to do.
    Refuse(String),
}

/// Judges the stored state of one stream. `table_empty` is whether the
/// table holds no row now; `limit` the stream's end.
pub(super) fn judge(
    stored: Option<&StoredResume>,
    limit: Option<u64>,
    mode: LoadMode,
    table_empty: bool,
    table: &str,
) -> Verdict {
    let Some(stored) = stored else {
        return Verdict::Fresh(None);
    };
    let Some(position) = Position::from_state(&stored.state) else {
        return Verdict::Fresh(Some(format!(
            "the ledger row of an earlier run of this load into {table} does not read as a position: loading from the start"
        )));
    };
    if position.limit != limit {
        return Verdict::Fresh(None);
    }
    if position.rows == 0 {
        return Verdict::Resume(position);
    }
    if table_empty {
        return Verdict::Fresh(Some(format!(
            "{table} is empty now, though an earlier run of this load committed {} rows: loading from the start",
            position.rows
        )));
    }
    if !stored.rewritten {
        return Verdict::Resume(position);
    }
    match mode {
        LoadMode::Upsert | LoadMode::Replace | LoadMode::ReplaceAtomic => {
            Verdict::Fresh(Some(format!(
                "{table} was truncated or rewritten since an earlier run of this load: loading from the start"
            )))
        }
        LoadMode::Append => Verdict::Refuse(format!(
            "{table} was truncated or rewritten (TRUNCATE, VACUUM FULL, CLUSTER or ALTER TABLE) since an earlier run of this load committed {} rows, so pgbulk cannot tell whether those rows are still there; --restart appends the input again, a key (--key or --mode upsert) makes reloading safe",
            position.rows
        )),
    }
}

/// A completed run of the same load that read the file when it was
/// shorter.
#[derive(Debug, Clone)]
pub(super) struct Grown {
    /// Its ledger key, without the part of a stream.
    pub(super) key: String,
    pub(super) stored: StoredResume,
    /// Where the file ended then.
    pub(super) end: InputEnd,
    /// The file's byte before that end.
    pub(super) last_byte: Option<u8>,
}

/// The most recent completed run of the load named `path_only` (see
/// [`Position::path_only`]) that read `source` when it was shorter than
/// `size` bytes: its earlier end's bytes have the hash recorded then.
/// A file that went through decompression or transcoding (its end's
/// offset is not its size) is never taken for grown.
pub(super) async fn grown_from(
    client: &Client,
    table: &TableName,
    path_only: &str,
    source: &Source,
    size: u64,
) -> Result<Option<Grown>> {
    for key in crate::watermark::keys_of_ended(client, table, "path_only", path_only).await? {
        let Some(stored) = crate::watermark::read_resume(client, table, &key).await? else {
            continue;
        };
        let Some(end) = Position::from_state(&stored.state).and_then(|p| p.end) else {
            continue;
        };
        if end.offset != end.size || end.size == 0 || end.size >= size {
            continue;
        }
        let (source, len) = (source.clone(), end.size);
        let prefix = tokio::task::spawn_blocking(move || {
            source
                .prefix_identity(len, &AtomicBool::new(false))
                .map_err(|e| Error::io(format!("cannot read {}", source.name()), e))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("hashing the input: {e}")))??;
        let Some((identity, last_byte)) = prefix else {
            continue;
        };
        if identity.get("xxh3").and_then(serde_json::Value::as_str) != Some(end.xxh3.as_str()) {
            continue;
        }
        let key = match key.rsplit_once(':') {
            Some((base, "1" | "2")) => base.to_owned(),
            _ => key,
        };
        return Ok(Some(Grown {
            key,
            stored,
            end,
            last_byte,
        }));
    }
    Ok(None)
}

/// Judges a file that grew since `grown` read it, in a load into `table`
/// that has no ledger row of its own yet: read from the earlier end when
/// that end was a line's and the rows read then are still in the table;
/// otherwise from the start (an upsert) or refused (an append, which
/// would repeat rows).
pub(super) fn judge_grown(
    grown: &Grown,
    mode: LoadMode,
    table_empty: bool,
    table: &str,
    name: &str,
) -> (Verdict, Option<String>) {
    let end = &grown.end;
    // The line after the end, or the last one when it had no line break.
    let lines = if grown.last_byte == Some(b'\n') {
        end.line.saturating_sub(1)
    } else {
        end.line
    };
    let restart = "--restart appends all of it again; a key (--key or --mode upsert) makes loading it again safe";
    let fresh_or_refuse = |why: String| match mode {
        LoadMode::Append => (
            Verdict::Refuse(format!(
                "{why}, so pgbulk cannot tell which of its rows are in {table} already; {restart}"
            )),
            None,
        ),
        _ => (
            Verdict::Fresh(Some(format!("{why}: loading all of it"))),
            None,
        ),
    };
    if table_empty {
        return (
            Verdict::Fresh(Some(format!(
                "{table} is empty now, though an earlier run loaded {name} when it had {lines} lines: loading all of it"
            ))),
            None,
        );
    }
    if grown.stored.rewritten {
        return fresh_or_refuse(format!(
            "{name} grew since an earlier run loaded its {lines} lines, and {table} was truncated or rewritten (TRUNCATE, VACUUM FULL, CLUSTER or ALTER TABLE) since"
        ));
    }
    if grown.last_byte != Some(b'\n') {
        return fresh_or_refuse(format!(
            "{name} grew since an earlier run loaded its {lines} lines, but the last of them had no line break then (it may have been written in part)"
        ));
    }
    (
        Verdict::Resume(Position {
            offset: end.offset,
            line: end.line,
            ..Position::default()
        }),
        Some(format!(
            "{name} grew since an earlier run loaded its first {lines} lines: loading the lines appended after them"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rows: u64, file: u64, rewritten: bool) -> StoredResume {
        StoredResume {
            state: serde_json::json!({"limit": null, "file": file, "offset": 10, "line": 3, "rows": rows}),
            rewritten,
        }
    }

    #[test]
    fn options_that_change_the_result_change_the_fingerprint() {
        let ids = vec![Some(serde_json::json!({"path": "/a.csv", "size": 3}))];
        let base = LoadOptions::default();
        let f = |opts: &LoadOptions, mode, key: Option<&Vec<String>>| {
            fingerprint(&ids, mode, key, opts)
        };
        let reference = f(&base, LoadMode::Append, None);
        assert_eq!(reference.len(), 16);
        assert_eq!(reference, f(&base, LoadMode::Append, None));
        let mut semicolon = base.clone();
        semicolon.dialect.delimiter = b';';
        let mut null = base.clone();
        null.dialect.null = b"NA".to_vec();
        let mut latin1 = base.clone();
        latin1.encoding = encoding_rs::WINDOWS_1252;
        let mut batch = base.clone();
        batch.batch_rows = 7;
        let mut text = null.clone();
        text.dialect.text = true;
        let key = vec!["a".to_owned()];
        for other in [
            f(&semicolon, LoadMode::Append, None),
            f(&null, LoadMode::Append, None),
            f(&text, LoadMode::Append, None),
            f(&latin1, LoadMode::Append, None),
            f(&base, LoadMode::Upsert, Some(&key)),
            f(&base, LoadMode::Replace, None),
            fingerprint(&[None], LoadMode::Append, None, &base),
        ] {
            assert_ne!(reference, other);
        }
        assert_ne!(
            f(&null, LoadMode::Append, None),
            f(&text, LoadMode::Append, None)
        );
        // The batch size only changes where commits fall.
        assert_eq!(reference, f(&batch, LoadMode::Append, None));
    }

    #[test]
    fn a_grown_file_goes_on_from_its_earlier_end_only_when_safe() {
        let grown = |rewritten, last_byte| Grown {
            key: "public.t#load:0123456789abcdef".to_owned(),
            stored: stored(3, 1, rewritten),
            end: InputEnd {
                offset: 20,
                line: 4,
                size: 20,
                xxh3: String::new(),
            },
            last_byte,
        };
        let judge = |g: &Grown, mode, empty| judge_grown(g, mode, empty, "public.t", "a.csv");
        let clean = grown(false, Some(b'\n'));
        let (verdict, note) = judge(&clean, LoadMode::Append, false);
        assert_eq!(
            verdict,
            Verdict::Resume(Position {
                offset: 20,
                line: 4,
                ..Position::default()
            })
        );
        assert_eq!(
            note.as_deref(),
            Some(
                "a.csv grew since an earlier run loaded its first 3 lines: loading the lines appended after them"
            )
        );
        assert!(matches!(
            judge(&clean, LoadMode::Append, true).0,
            Verdict::Fresh(Some(why)) if why.contains("empty now")
        ));
        for broken in [grown(true, Some(b'\n')), grown(false, Some(b'x'))] {
            assert!(matches!(
                judge(&broken, LoadMode::Append, false).0,
                Verdict::Refuse(why) if why.contains("--restart")
            ));
            assert!(matches!(
                judge(&broken, LoadMode::Upsert, false),
                (Verdict::Fresh(Some(why)), None) if why.ends_with("loading all of it")
            ));
        }
    }

    #[test]
    fn stale_states_are_not_resumed() {
        let t = "public.t";
        assert_eq!(
            judge(None, None, LoadMode::Append, true, t),
            Verdict::Fresh(None)
        );
        let kept = stored(5, 1, false);
        assert!(matches!(
            judge(Some(&kept), None, LoadMode::Append, false, t),
            Verdict::Resume(p) if p.file == 1 && p.rows == 5
        ));
        assert!(matches!(
            judge(Some(&kept), None, LoadMode::Append, true, t),
            Verdict::Fresh(Some(why)) if why.contains("empty")
        ));
        assert!(matches!(
            judge(Some(&kept), Some(4), LoadMode::Append, false, t),
            Verdict::Fresh(None)
        ));
        let rewritten = stored(5, 1, true);
        assert!(matches!(
            judge(Some(&rewritten), None, LoadMode::Upsert, false, t),
            Verdict::Fresh(Some(why)) if why.contains("rewritten")
        ));
        assert!(matches!(
            judge(Some(&rewritten), None, LoadMode::Append, false, t),
            Verdict::Refuse(why) if why.contains("--restart")
        ));
    }
}
