//! Incremental reads of a source column: where a read starts (a stored
//! [`Mark`]) and the next watermark, never later than a row a transaction
//! still open on the source can carry. `sync` and `export` read the same
//! way.
//!
//! For a `timestamptz`/`timestamp` column the next watermark is never later
//! than the start of the oldest transaction open on the source database
//! just before the snapshot (nor advanced while prepared transactions, or
//! transactions whose start is hidden from the reading role, exist): a
//! transaction that stamps rows with its `now()` and commits after the
//! read is read by the next run. That is exact for columns stamped by the
//! writing transaction's `now()` (default or trigger); for application
//! clocks, and for a standby source (its primary's transactions do not
//! show on it), widen the overlap with a lookback. A `date` column is
//! bounded by that start's date in the earliest time zone, so a
//! `current_date` stamp is exact in any zone; for integer columns the
//! watermark is the largest value read (exact only without concurrent
//! writers). Rows whose column is NULL (when it may be) are
//! read by every run: no watermark can place them.

use tokio_postgres::{Client, Transaction};

use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// What to tell the user when the watermark a run of `command` (with its
/// article: "a sync", "an export") reads from was stored with another
/// `--where` (`before`) than this run's (`now`): rows the new filter adds
/// that are older than the watermark are not read. `None` when the filters
/// are the same.
pub(crate) fn filter_changed(
    command: &str,
    before: Option<&str>,
    now: Option<&str>,
) -> Option<String> {
    (before != now).then(|| {
        format!(
            "the watermark was stored by {command} {}; rows this --where selects that are older \
             than the watermark are not read: {command} without --incremental reads them once",
            before.map_or("without --where".to_owned(), |w| format!(
                "with --where {w}"
            )),
        )
    })
}

/// A stored incremental watermark. Rows at or after `value` are read
/// next time; only those after it (`after`) when the run that stored it
/// found no transaction open on the source that started at or before
/// `value`: then no later commit can carry `value` itself (a transaction
/// stamps rows with its start), and the boundary's rows are not read
/// again and again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The column's value, as the source prints it.
    pub value: String,
    /// Only rows after `value` are new.
    pub after: bool,
}

impl Mark {
    /// A mark from which rows at or after `value` are read.
    pub fn at(value: String) -> Self {
        Self {
            value,
            after: false,
        }
    }

    /// As stored: the value (a JSON string), or `{"after": value}`.
    pub fn to_json(&self) -> serde_json::Value {
        if self.after {
            serde_json::json!({ "after": self.value })
        } else {
            serde_json::Value::String(self.value.clone())
        }
    }

    /// From its stored form.
    pub fn from_json(json: &serde_json::Value) -> Option<Self> {
        match json {
            serde_json::Value::String(value) => Some(Self::at(value.clone())),
            serde_json::Value::Object(o) => Some(Self {
                value: o.get("after")?.as_str()?.to_owned(),
                after: true,
            }),
            _ => None,
        }
    }

    /// The condition on `column` (of `type_name`) of the rows a read from
    /// this mark selects; `lookback` widens it for timestamp and date
    /// columns. A `nullable` column's rows with no value are selected too:
    /// no watermark can place them, so every read takes them again
    /// rather than never.
    pub fn condition(
        &self,
        column: &str,
        type_name: &str,
        lookback: Option<std::time::Duration>,
        nullable: bool,
    ) -> String {
        let lookback = lookback
            .filter(|_| type_name.starts_with("timestamp") || type_name == "date")
            .map(|d| format!(" - interval '{} milliseconds'", d.as_millis()));
        // After the mark only when no later commit can carry its value
        // and no lookback widens the overlap.
        let op = if self.after && lookback.is_none() {
            ">"
        } else {
            ">="
        };
        let column = quote_ident(column);
        let condition = format!(
            "{column} {op} ({}::{}{})",
            crate::schema::dollar_quote(&self.value),
            type_name,
            lookback.unwrap_or_default()
        );
        if nullable {
            format!("({condition} OR {column} IS NULL)")
        } else {
            condition
        }
    }

    /// How a plan says where a read starts (`nullable`: rows with no
    /// value in `column` are read too).
    pub fn describe(start: Option<&Self>, column: &str, nullable: bool) -> String {
        match start {
            Some(m) => format!(
                "rows with {column} {} {}{}",
                if m.after { ">" } else { ">=" },
                m.value,
                if nullable {
                    ", and every row with a NULL one (read on every run)"
                } else {
                    ""
                }
            ),
            None => format!("rows with any {column} (no watermark yet)"),
        }
    }
}

/// Refuses an incremental `column` (of `type_name`) of `relation` (named
/// `label` in messages) whose values have no order to keep a watermark
/// in (`bool`, `uuid`, `json`, ...: no `max`), before anything is read.
pub async fn check_orderable(
    client: &Client,
    relation: &str,
    column: &str,
    type_name: &str,
    label: &str,
) -> Result<()> {
    let probe = client
        .prepare(&format!(
            "SELECT max({}) FROM {relation} WHERE false",
            quote_ident(column)
        ))
        .await;
    match probe {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) => {
            Err(Error::config(format!(
                "--incremental {column}: column \"{column}\" of {label} is {type_name}, which has no order \
                 to keep a watermark in; give a timestamp, date or integer column"
            )))
        }
        Err(e) => Err(Error::server("checking the incremental column", e)),
        Ok(_) => Ok(()),
    }
}

/// What bounds the next watermark of a timestamp or date column, read on
/// the source before its snapshot: the start of the oldest transaction
/// open (or the clock when none is), whether prepared transactions exist,
/// and the open transactions whose start is hidden from this role.
#[derive(Debug, Clone)]
pub struct Bound {
    oldest: Option<String>,
    prepared: bool,
    /// Sessions of other roles in a transaction: `pg_stat_activity` hides
    /// their start from a role without `pg_read_all_stats`, but their
    /// `virtualxid` lock shows in `pg_locks`.
    hidden: i64,
    /// The role reading the source.
    role: String,
    /// The source is a hot standby: its primary's transactions do not
    /// show in its `pg_stat_activity`.
    standby: bool,
}

impl Bound {
    /// Reads the bound on `source`, before the snapshot is taken; `None`
    /// for columns that are neither timestamps nor dates. For a `date`
    /// column the bound is the start's date where it is earliest (UTC-12):
    /// a writer's `current_date` is its start's date in its own time zone.
    pub async fn read(source: &Client, type_name: &str) -> Result<Option<Self>> {
        // A session in a transaction holds its own `virtualxid` lock. One
        // whose transaction is just starting holds it before its
        // `xact_start` shows: its statement's `query_start` (set first,
        // and what its `now()` will be) stands for it. One of a role whose
        // sessions this role cannot see (not its own or a member's, and no
        // `pg_read_all_stats`) shows neither: it is hidden. (A visible one
        // showing neither is still connecting: it has written nothing.
        // Autovacuum workers have no role.) `pg_locks` is read once, not
        // per session.
        let start = "least(min(coalesce(a.xact_start, \
                       CASE WHEN a.pid IN (SELECT pid FROM locked) THEN a.query_start END)), \
                     clock_timestamp())";
        let oldest = if type_name.starts_with("timestamp") {
            format!("{start}::{type_name}::text")
        } else if type_name == "date" {
            format!("({start} AT TIME ZONE INTERVAL '-12:00')::date::text")
        } else {
            return Ok(None);
        };
        let row = source
            .query_one(
                &format!(
                    "WITH locked AS (SELECT l.pid FROM pg_catalog.pg_locks l WHERE l.locktype = 'virtualxid') \
                     SELECT {oldest}, \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts p WHERE p.database = current_database()), \
                     count(*) FILTER (WHERE a.xact_start IS NULL AND a.query_start IS NULL \
                                        AND a.usesysid IS NOT NULL AND a.pid IN (SELECT pid FROM locked) \
                                        AND NOT pg_catalog.pg_has_role(a.usesysid, 'USAGE') \
                                        AND NOT pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')), \
                     current_user::text, pg_catalog.pg_is_in_recovery() \
                     FROM pg_catalog.pg_stat_activity a \
                     WHERE a.datname = current_database() AND a.pid <> pg_catalog.pg_backend_pid()"
                ),
                &[],
            )
            .await
            .map_err(|e| Error::server("reading the source's open transactions", e))?;
        Ok(Some(Self {
            oldest: row.get(0),
            prepared: row.get(1),
            hidden: row.get(2),
            role: row.get(3),
            standby: row.get(4),
        }))
    }

    /// What the run should say about the bound: open transactions whose
    /// start this role cannot see (the watermark then stays), and a
    /// standby source read without a `lookback` (its primary's open
    /// transactions cannot be seen from it).
    pub fn notes(&self, lookback: bool) -> Vec<String> {
        let mut notes = Vec::new();
        if self.hidden > 0 {
            notes.push(format!(
                "{} transaction(s) of other roles were open on the source, and their start is hidden from {} \
                 (pg_stat_activity): the watermark stays where it was, so that their rows are read once they \
                 commit; GRANT pg_read_all_stats TO {} lets it advance past them",
                self.hidden,
                quote_ident(&self.role),
                quote_ident(&self.role)
            ));
        }
        if self.standby && !lookback {
            notes.push(
                "the source is a standby: transactions open on its primary cannot be seen from it, so a row \
                 stamped with the start of one (its now()) that commits after this read is missed; give \
                 --lookback a margin longer than the primary's longest writing transaction, or read from the primary"
                    .to_owned(),
            );
        }
        notes
    }
}

/// The watermark the next read starts from, read in the snapshot `tx` of
/// the source: the largest value of `column` (of `type_name`) in
/// `relation` (` WHERE filter`), bounded by `bound`; `start` when nothing
/// was read, or when prepared transactions or transactions whose start
/// is hidden exist (then `-infinity` when there is no `start`).
pub async fn next(
    tx: &Transaction<'_>,
    column: &str,
    type_name: &str,
    relation: &str,
    filter: Option<&str>,
    start: Option<&Mark>,
    bound: Option<&Bound>,
) -> Result<Option<Mark>> {
    let within = filter.map(|w| format!(" WHERE {w}")).unwrap_or_default();
    let newest: Option<String> = tx
        .query_one(
            &format!(
                "SELECT max({})::text FROM {relation}{within}",
                quote_ident(column)
            ),
            &[],
        )
        .await
        .map_err(|e| Error::server("reading the source's newest row", e))?
        .get(0);
    Ok(match (bound, newest) {
        // Prepared transactions, or transactions whose start is hidden:
        // their rows' stamps are unknown. With no start yet, the next run
        // reads every row again.
        (Some(b), _) if b.prepared || b.hidden > 0 => Some(
            start
                .cloned()
                .unwrap_or_else(|| Mark::at("-infinity".to_owned())),
        ),
        (
            Some(Bound {
                oldest: Some(oldest),
                ..
            }),
            Some(newest),
        ) => {
            let row = tx
                .query_one(
                    &format!(
                        "SELECT least($1::text::{t}, $2::text::{t})::text, $2::text::{t} > $1::text::{t}",
                        t = type_name
                    ),
                    &[&newest, oldest],
                )
                .await
                .map_err(|e| Error::server("bounding the watermark", e))?;
            Some(Mark {
                value: row.get(0),
                after: row.get(1),
            })
        }
        (_, Some(newest)) => Some(Mark::at(newest)),
        (_, None) => start.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::Mark;

    #[test]
    fn marks_round_trip_and_say_where_they_start() {
        let at = Mark::at("2024-05-01 00:00:00+00".to_owned());
        let after = Mark {
            after: true,
            ..at.clone()
        };
        assert_eq!(Mark::from_json(&at.to_json()), Some(at.clone()));
        assert_eq!(Mark::from_json(&after.to_json()), Some(after.clone()));
        assert_eq!(
            at.condition("t", "timestamptz", None, false),
            "\"t\" >= ($pgbulk0$2024-05-01 00:00:00+00$pgbulk0$::timestamptz)"
        );
        assert_eq!(
            at.condition("t", "timestamptz", None, true),
            "(\"t\" >= ($pgbulk0$2024-05-01 00:00:00+00$pgbulk0$::timestamptz) OR \"t\" IS NULL)"
        );
        assert!(
            after
                .condition("t", "timestamptz", None, false)
                .contains("\"t\" > (")
        );
        assert!(
            after
                .condition(
                    "t",
                    "timestamptz",
                    Some(std::time::Duration::from_secs(60)),
                    false
                )
                .contains("::timestamptz - interval '60000 milliseconds')")
        );
    }
}
