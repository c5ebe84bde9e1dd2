//! `~/.pgpass` (or `PGPASSFILE`): libpq's password file, with its matching,
//! escaping and permission rules.

use std::path::Path;

/// The unix-socket directory libpq treats as `localhost` when matching
/// password file entries (Debian's compiled-in default).
pub(crate) const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Why a password file was not used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// The file does not exist (silently ignored, as libpq does).
    Missing,
    /// The file is readable by group or others, or is not a plain file; libpq
    /// warns and ignores it.
    Insecure(String),
}

/// Looks up the password for one connection target in the file at `path`.
///
/// `host` is the host name, socket directory or (when no host is set) the
/// `hostaddr`; an empty host and the default socket directory match
/// `localhost`, as in libpq.
pub(crate) fn lookup(
    path: &Path,
    host: &str,
    port: &str,
    dbname: &str,
    user: &str,
) -> Result<Option<String>, Skipped> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Err(Skipped::Missing),
    };
    if !meta.is_file() {
        return Err(Skipped::Insecure(format!(
            "password file \"{}\" is not a plain file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Skipped::Insecure(format!(
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                path.display()
            )));
        }
    }
    let Ok(bytes) = std::fs::read(path) else {
        return Err(Skipped::Missing);
    };
    let text = String::from_utf8_lossy(&bytes);
    let host = if host.is_empty() || host == DEFAULT_SOCKET_DIR {
        "localhost"
    } else {
        host
    };
    Ok(find(&text, host, port, dbname, user))
}

/// The password of the first line matching all four fields, de-escaped.
pub(crate) fn find(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = Some(line)
            .and_then(|l| match_field(l, host))
            .and_then(|l| match_field(l, port))
            .and_then(|l| match_field(l, dbname))
            .and_then(|l| match_field(l, user));
        if let Some(password) = rest {
            return Some(unescape(password));
        }
    }
    None
}

/// Matches the field at the start of `line` against `token`: `*` matches
/// anything, `\` escapes `:` and `\`. Returns the rest after the `:`.
fn match_field<'a>(line: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let bytes = line.as_bytes();
    let token = token.as_bytes();
    let mut t = 0;
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes[i] == b'\\' && i + 1 < bytes.len();
        if escaped {
            i += 1;
        }
        if !escaped && bytes[i] == b':' {
            return (t == token.len()).then(|| &line[i + 1..]);
        }
        if t < token.len() && bytes[i] == token[t] {
            t += 1;
            i += 1;
        } else {
            return None;
        }
    }
    None
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment line: *:*:*:*:never
db.example.com:5432:sales:alice:first
db.example.com:*:*:alice:second
*:5433:*:bob:b\\:o\\\\b
host\\:with\\:colons:5432:*:carol:carol-pw
localhost:5432:*:dave:dave-pw\r
/tmp/sock:6000:*:erin:erin-pw
";

    fn f(host: &str, port: &str, db: &str, user: &str) -> Option<String> {
        find(FILE, host, port, db, user)
    }

    #[test]
    fn first_matching_line_wins() {
        assert_eq!(
            f("db.example.com", "5432", "sales", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            f("db.example.com", "5432", "hr", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(
            f("db.example.com", "6543", "hr", "alice").as_deref(),
            Some("second")
        );
        assert_eq!(f("other", "5432", "sales", "alice"), None);
    }

    #[test]
    fn wildcards_escapes_and_crlf() {
        assert_eq!(f("anything", "5433", "x", "bob").as_deref(), Some("b:o\\b"));
        assert_eq!(
            f("host:with:colons", "5432", "x", "carol").as_deref(),
            Some("carol-pw")
        );
        assert_eq!(
            f("localhost", "5432", "x", "dave").as_deref(),
            Some("dave-pw")
        );
        assert_eq!(
            f("/tmp/sock", "6000", "x", "erin").as_deref(),
            Some("erin-pw")
        );
    }

    #[test]
    fn comments_never_match_and_prefixes_do_not_match() {
        assert_eq!(f("x", "1", "x", "*"), None);
        assert_eq!(f("db.example.co", "5432", "sales", "alice"), None);
        assert_eq!(f("db.example.com", "5432", "sales", "alic"), None);
    }

    #[test]
    fn short_lines_do_not_match() {
        assert_eq!(find("h:5432:db\n", "h", "5432", "db", "u"), None);
        assert_eq!(find("h:5432:db:u\n", "h", "5432", "db", "u"), None);
        assert_eq!(
            find("h:5432:db:u:\n", "h", "5432", "db", "u").as_deref(),
            Some("")
        );
    }

    #[cfg(unix)]
    #[test]
    fn file_permissions_and_socket_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgbulk-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pgpass");
        std::fs::write(&path, "localhost:5432:*:u:pw\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            lookup(&path, "localhost", "5432", "d", "u"),
            Err(Skipped::Insecure(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            lookup(&path, "", "5432", "d", "u"),
            Ok(Some("pw".to_owned()))
        );
        assert_eq!(
            lookup(&path, DEFAULT_SOCKET_DIR, "5432", "d", "u"),
            Ok(Some("pw".to_owned()))
        );
        assert_eq!(lookup(&path, "/tmp", "5432", "d", "u"), Ok(None));
        assert_eq!(
            lookup(&dir.join("none"), "h", "1", "d", "u"),
            Err(Skipped::Missing)
        );
        assert!(matches!(
            lookup(&dir, "h", "1", "d", "u"),
            Err(Skipped::Insecure(_))
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
