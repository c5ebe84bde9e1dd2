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

use ring::digest;

use super::reader::Position;
use super::{LoadMode, LoadOptions};
use crate::ingest::StoredResume;

/// The fingerprint of a load: 16 hex digits.
pub(super) fn fingerprint(
    identities: &[Option<serde_json::Value>],
    mode: LoadMode,
    key: Option<&Vec<String>>,
    opts: &LoadOptions,
) -> String {
    let d = &opts.dialect;
    let described = serde_json::json!({
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
        let key = vec!["a".to_owned()];
        for other in [
            f(&semicolon, LoadMode::Append, None),
            f(&null, LoadMode::Append, None),
            f(&latin1, LoadMode::Append, None),
            f(&base, LoadMode::Upsert, Some(&key)),
            f(&base, LoadMode::Replace, None),
            fingerprint(&[None], LoadMode::Append, None, &base),
        ] {
            assert_ne!(reference, other);
        }
        // The batch size only changes where commits fall.
        assert_eq!(reference, f(&batch, LoadMode::Append, None));
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
