//! What pgbulk needs to know about a connection's session, read once per
//! connection in one round trip: the schema unqualified names land in, the
//! server's version, and the settings the encoder must honour (the time
//! zone, the interval style, whether `NULL` in an array literal is a null,
//! the database's encoding).

use tokio_postgres::Client;

use crate::codec::Charset;

use crate::error::{Error, Result};

/// The facts of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `current_schema()`: where unqualified names are created and found.
    pub current_schema: String,
    /// `server_version_num` (e.g. 150004).
    pub server_version: i32,
    /// The session's `TimeZone` as a fixed offset east of UTC in seconds,
    /// when it is one (timestamptz text is then converted by the encoder;
    /// otherwise the server converts it).
    pub utc_offset: Option<i32>,
    /// The session's `TimeZone` as the server names it.
    pub time_zone: String,
    /// `IntervalStyle` is `sql_standard`: there a leading minus applies to
    /// every field of an interval without other signs (`-1 2:00:00` is
    /// minus a day and two hours), so such values are the server's.
    pub interval_sql_standard: bool,
    /// `array_nulls` is on: an unquoted `NULL` in an array literal is a
    /// null element. Off, it is the string `NULL`, and array text is the
    /// server's to read.
    pub array_nulls: bool,
    /// The database's encoding, when it is not UTF-8 and its characters
    /// are known (see [`Charset`]).
    pub charset: Option<Charset>,
}

/// How the session reads the text forms the encoder also converts: what
/// [`crate::ingest`] adjusts column types by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputStyle {
    /// See [`Session::utc_offset`].
    pub utc_offset: Option<i32>,
    /// See [`Session::interval_sql_standard`].
    pub interval_sql_standard: bool,
    /// See [`Session::array_nulls`].
    pub array_nulls: bool,
    /// See [`Session::charset`].
    pub charset: Option<Charset>,
}

impl Session {
    /// Reads the facts of `client`'s session.
    pub async fn read(client: &Client) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT current_schema()::text, \
                 current_setting('server_version_num')::int4, \
                 current_setting('TimeZone'), \
                 current_setting('IntervalStyle'), \
                 current_setting('array_nulls')::bool, \
                 current_setting('server_encoding')",
                &[],
            )
            .await
            .map_err(|e| Error::server("reading the session's settings", e))?;
        let read = |e| Error::server("reading the session's settings", e);
        let zone: String = row.try_get(2).map_err(read)?;
        let interval_style: String = row.try_get(3).map_err(read)?;
        let server_encoding: String = row.try_get(5).map_err(read)?;
        let current_schema: Option<String> = row.try_get(0).map_err(read)?;
        Ok(Self {
            current_schema: current_schema.ok_or_else(|| {
                Error::config(
                    "the session has no current schema (no schema on its search_path exists); set search_path (e.g. options='-c search_path=public') or create the schema",
                )
            })?,
            server_version: row.try_get(1).map_err(read)?,
            utc_offset: utc_offset(&zone),
            time_zone: zone,
            interval_sql_standard: interval_style.eq_ignore_ascii_case("sql_standard"),
            array_nulls: row.try_get(4).map_err(read)?,
            charset: Charset::of_server_encoding(&server_encoding),
        })
    }

    /// The settings the encoder honours.
    pub fn input_style(&self) -> InputStyle {
        InputStyle {
            utc_offset: self.utc_offset,
            interval_sql_standard: self.interval_sql_standard,
            array_nulls: self.array_nulls,
            charset: self.charset,
        }
    }
}

/// The offset of a `TimeZone` setting that is UTC by another name; `None`
/// for any other zone (its offset may change with the date).
fn utc_offset(zone: &str) -> Option<i32> {
    const UTC: [&str; 12] = [
        "UTC",
        "Etc/UTC",
        "GMT",
        "Etc/GMT",
        "UCT",
        "Etc/UCT",
        "Universal",
        "Zulu",
        "Etc/Zulu",
        "Etc/Universal",
        "Etc/GMT0",
        "GMT0",
    ];
    UTC.iter()
        .any(|z| z.eq_ignore_ascii_case(zone))
        .then_some(0)
}

#[cfg(test)]
mod tests {
    use super::utc_offset;

    #[test]
    fn only_utc_by_any_name_is_a_fixed_offset() {
        for zone in ["UTC", "utc", "Etc/UTC", "GMT", "Zulu", "Etc/GMT0"] {
            assert_eq!(utc_offset(zone), Some(0), "{zone}");
        }
        for zone in ["Europe/Berlin", "America/New_York", "", "UTC+1", "EST"] {
            assert_eq!(utc_offset(zone), None, "{zone}");
        }
    }
}
