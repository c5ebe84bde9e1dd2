//! The connection keywords libpq knows, and the environment variable each one
//! falls back to.

/// How pgbulk treats a libpq keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    /// Honoured as libpq does.
    Yes,
    /// Accepted; only the values that change nothing are allowed (see
    /// [`check_inert`]).
    Inert,
}

/// `(keyword, environment variable, support)` for every libpq 16 keyword.
const KEYWORDS: &[(&str, Option<&str>, Support)] = &[
    ("host", Some("PGHOST"), Support::Yes),
    ("hostaddr", Some("PGHOSTADDR"), Support::Yes),
    ("port", Some("PGPORT"), Support::Yes),
    ("dbname", Some("PGDATABASE"), Support::Yes),
    ("user", Some("PGUSER"), Support::Yes),
    ("password", Some("PGPASSWORD"), Support::Yes),
    ("passfile", Some("PGPASSFILE"), Support::Yes),
    ("service", Some("PGSERVICE"), Support::Yes),
    ("sslmode", Some("PGSSLMODE"), Support::Yes),
    ("sslrootcert", Some("PGSSLROOTCERT"), Support::Yes),
    ("sslcert", Some("PGSSLCERT"), Support::Yes),
    ("sslkey", Some("PGSSLKEY"), Support::Yes),
    ("sslsni", Some("PGSSLSNI"), Support::Yes),
    (
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Support::Yes,
    ),
    (
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Support::Yes,
    ),
    ("application_name", Some("PGAPPNAME"), Support::Yes),
    ("fallback_application_name", None, Support::Yes),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT"), Support::Yes),
    ("options", Some("PGOPTIONS"), Support::Yes),
    (
        "target_session_attrs",
        Some("PGTARGETSESSIONATTRS"),
        Support::Yes,
    ),
    (
        "load_balance_hosts",
        Some("PGLOADBALANCEHOSTS"),
        Support::Yes,
    ),
    ("channel_binding", Some("PGCHANNELBINDING"), Support::Yes),
    ("keepalives", None, Support::Yes),
    ("keepalives_idle", None, Support::Yes),
    ("keepalives_interval", None, Support::Yes),
    ("keepalives_count", None, Support::Yes),
    ("tcp_user_timeout", None, Support::Yes),
    ("client_encoding", Some("PGCLIENTENCODING"), Support::Inert),
    ("gssencmode", Some("PGGSSENCMODE"), Support::Inert),
    ("krbsrvname", Some("PGKRBSRVNAME"), Support::Inert),
    ("gsslib", Some("PGGSSLIB"), Support::Inert),
    ("gssdelegation", Some("PGGSSDELEGATION"), Support::Inert),
    ("sslcompression", Some("PGSSLCOMPRESSION"), Support::Inert),
    ("sslcrl", Some("PGSSLCRL"), Support::Inert),
    ("sslcrldir", Some("PGSSLCRLDIR"), Support::Inert),
    ("sslpassword", None, Support::Inert),
    ("requirepeer", Some("PGREQUIREPEER"), Support::Inert),
    ("require_auth", Some("PGREQUIREAUTH"), Support::Inert),
    ("replication", None, Support::Inert),
];

/// Whether `keyword` is a libpq connection keyword.
pub(crate) fn is_known(keyword: &str) -> bool {
    KEYWORDS.iter().any(|(k, _, _)| *k == keyword)
}

/// Keywords that have an environment variable, with it, in libpq's order.
pub(crate) fn with_env() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYWORDS
        .iter()
        .filter_map(|(k, env, _)| env.map(|env| (*k, env)))
}

/// Rejects a value of an accepted-but-unimplemented keyword that would change
/// behaviour: pgbulk must not silently ignore, say, a CRL or a required peer.
pub(crate) fn check_inert(keyword: &str, value: &str) -> Result<(), String> {
    let Some((_, _, support)) = KEYWORDS.iter().find(|(k, _, _)| *k == keyword) else {
        return Ok(());
    };
    if *support == Support::Yes || value.is_empty() {
        return Ok(());
    }
    let inert = match keyword {
        "client_encoding" => {
            value.eq_ignore_ascii_case("utf8")
                || value.eq_ignore_ascii_case("utf-8")
                || value == "auto"
        }
        "gssencmode" => value == "disable" || value == "prefer",
        "sslcompression" | "replication" | "gssdelegation" => value == "0" || value == "false",
        "krbsrvname" | "gsslib" => true,
        _ => false,
    };
    if inert {
        Ok(())
    } else {
        Err(format!(
            "connection option \"{keyword}\" is not supported by pgbulk (value \"{}\")",
            if keyword == "sslpassword" {
                "***"
            } else {
                value
            }
        ))
    }
}
