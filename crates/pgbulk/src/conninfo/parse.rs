//! Connection strings as libpq reads them: `postgresql://` URIs and
//! `key=value` strings. Error messages never repeat the input, which may hold
//! a password.

use super::keyword;

/// Parses a connection string into `(keyword, value)` pairs in order of
/// appearance.
///
/// A string that is neither a URI nor contains `=` is a database name, as
/// `psql -d NAME` treats it.
pub(crate) fn parse(input: &str) -> Result<Vec<(String, String)>, String> {
    if let Some(rest) = uri_body(input)? {
        parse_uri(rest)
    } else if input.contains('=') {
        parse_keyword_value(input)
    } else {
        Ok(vec![("dbname".to_owned(), input.to_owned())])
    }
}

/// What follows the scheme of a URI: libpq's `postgresql://` and
/// `postgres://`, and SQLAlchemy's `postgresql+DRIVER://` (what Airflow's
/// `get_uri()` writes), whose driver says nothing to libpq. `None`: not a
/// URI (a `key=value` string, a database name). Another scheme is refused,
/// naming no more than the scheme: the rest may hold a password (libpq
/// would take it for a database name, or a keyword, and echo it).
fn uri_body(input: &str) -> Result<Option<&str>, String> {
    let Some((scheme, rest)) = input.split_once("://") else {
        return Ok(None);
    };
    if scheme.contains(|c: char| c == '=' || c.is_whitespace()) {
        // `options='-c x=a://b'`: a key=value string.
        return Ok(None);
    }
    let base = scheme.split_once('+').map_or(scheme, |(base, _)| base);
    if base == "postgresql" || base == "postgres" {
        return Ok(Some(rest));
    }
    if scheme.eq_ignore_ascii_case("jdbc:postgresql") {
        return Err("a JDBC URL (jdbc:postgresql://...) is not a connection string libpq reads: \
             drop \"jdbc:\" and give its parameters in libpq's words (sslmode=require, not ssl=true)"
            .to_owned());
    }
    let shown = if plain(scheme, "+-.:") { scheme } else { "..." };
    Err(format!(
        "\"{shown}://\" is not a connection URI: one starts with postgresql:// or postgres://"
    ))
}

/// `text` is short and made of ASCII letters, digits, `_` and `extra`:
/// safe to repeat in a message.
fn plain(text: &str, extra: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c))
}

fn check_keyword(keyword: &str) -> Result<(), String> {
    if keyword::is_known(keyword) {
        Ok(())
    } else if plain(keyword, "") {
        Err(format!("invalid connection option \"{keyword}\""))
    } else {
        // Not a keyword's shape: it may hold a password (a URI of a
        // misspelt scheme), so it is not repeated.
        Err(
            "invalid connection option: a keyword is letters, digits and underscores before \"=\" \
             (a URI starts with postgresql://)"
                .to_owned(),
        )
    }
}

/// `key = value` pairs separated by white space; values may be single-quoted;
/// a backslash escapes the next character.
fn parse_keyword_value(input: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "unterminated quoted string in connection info string".to_owned()
                        );
                    }
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(
                                "unterminated quoted string in connection info string".to_owned()
                            );
                        }
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        check_keyword(&key)?;
        pairs.push((key, value));
    }
}

/// `[user[:password]@][host][:port][,...][/dbname][?key=value&...]`, after the
/// scheme.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match authority_and_path.find('/') {
        Some(i) => (&authority_and_path[..i], Some(&authority_and_path[i + 1..])),
        None => (authority_and_path, None),
    };
    let hosts = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_owned(), decode(user, "user name")?));
            }
            if let Some(password) = password {
                if !password.is_empty() {
                    pairs.push(("password".to_owned(), decode(password, "password")?));
                }
            }
            &authority[at + 1..]
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let (host_list, port_list) = split_hosts(hosts)?;
        if host_list.iter().any(|h| !h.is_empty()) || host_list.len() > 1 {
            pairs.push(("host".to_owned(), host_list.join(",")));
        }
        if port_list.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_owned(), port_list.join(",")));
        }
    }
    if let Some(path) = path {
        if !path.is_empty() {
            pairs.push(("dbname".to_owned(), decode(path, "database name")?));
        }
    }
    if let Some(query) = query {
        for (n, param) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
            let Some((key, value)) = param.split_once('=') else {
                return Err(format!(
                    "missing key/value separator \"=\" in URI query parameter {}",
                    n + 1
                ));
            };
            let key = decode(key, "query parameter")?;
            let value = decode(value, "query parameter")?;
            if key == "ssl" {
                if value == "true" {
                    pairs.push(("sslmode".to_owned(), "require".to_owned()));
                    continue;
                }
                return Err(format!("invalid URI query parameter \"ssl={value}\""));
            }
            if !keyword::is_known(&key) {
                return Err(format!("invalid URI query parameter: \"{key}\""));
            }
            pairs.push((key, value));
        }
    }
    Ok(pairs)
}

/// Splits `host[:port],host[:port]...` (hosts may be `[IPv6]`) into the host
/// and port lists, percent-decoded.
fn split_hosts(netloc: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in netloc.split(',') {
        let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
            let Some(end) = bracketed.find(']') else {
                return Err("end of string reached when looking for matching \"]\" in IPv6 host address in URI".to_owned());
            };
            let host = &bracketed[..end];
            if host.is_empty() {
                return Err("IPv6 host address may not be empty in URI".to_owned());
            }
            match &bracketed[end + 1..] {
                "" => (host, ""),
                after => match after.strip_prefix(':') {
                    Some(port) => (host, port),
                    None => {
                        return Err(format!(
                            "unexpected character \"{}\" after IPv6 host address in URI",
                            after.chars().next().unwrap_or(' ')
                        ));
                    }
                },
            }
        } else {
            match entry.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (entry, ""),
            }
        };
        hosts.push(decode(host, "host")?);
        ports.push(decode(port, "port")?);
    }
    Ok((hosts, ports))
}

/// Percent-decodes one URI component. `what` names it in errors (the value
/// itself is never shown: it may be a password).
pub(crate) fn decode(s: &str, what: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(0) => return Err(format!("forbidden value %00 in percent-encoded {what}")),
                Some(b) => out.push(b),
                None => return Err(format!("invalid percent-encoded token in {what}")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("percent-encoded {what} is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        parse(s).expect("parses")
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plain_name_is_a_database() {
        assert_eq!(p("sales"), kv(&[("dbname", "sales")]));
    }

    #[test]
    fn sqlalchemy_urls_are_uris_and_other_schemes_are_refused_unrepeated() {
        assert_eq!(
            p("postgresql+psycopg://u:pw@h:5/db?sslmode=require"),
            p("postgresql://u:pw@h:5/db?sslmode=require")
        );
        assert_eq!(p("postgres+psycopg2://h/db"), p("postgres://h/db"));
        for (input, said) in [
            (
                "jdbc:postgresql://u:s3cret@h/db?sslmode=require",
                "a JDBC URL",
            ),
            (
                "postgresq://u:s3cret@h/db",
                "\"postgresq://\" is not a connection URI",
            ),
            (
                "mysql://u:s3cret@h/db",
                "\"mysql://\" is not a connection URI",
            ),
            (
                "host=h x@y:s3cret=1",
                "invalid connection option: a keyword is",
            ),
        ] {
            let e = parse(input).unwrap_err();
            assert!(e.contains(said), "{input}: {e}");
            assert!(!e.contains("s3cret"), "{input}: {e}");
        }
        // A value holding "://" keeps a key=value string one.
        assert_eq!(
            p("host=h options='-c x=a://b'"),
            kv(&[("host", "h"), ("options", "-c x=a://b")])
        );
    }

    #[test]
    fn keyword_value_with_quotes_and_escapes() {
        assert_eq!(
            p("host=localhost  port = 5433 dbname='my db' password='it\\'s' user=a\\ b"),
            kv(&[
                ("host", "localhost"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("password", "it's"),
                ("user", "a b"),
            ])
        );
        assert_eq!(p("dbname=''"), kv(&[("dbname", "")]));
    }

    #[test]
    fn keyword_value_errors() {
        assert_eq!(
            parse("host localhost port=5").unwrap_err(),
            "missing \"=\" after \"host\" in connection info string"
        );
        assert_eq!(
            parse("password='secret").unwrap_err(),
            "unterminated quoted string in connection info string"
        );
        assert_eq!(
            parse("hots=x").unwrap_err(),
            "invalid connection option \"hots\""
        );
    }

    #[test]
    fn uri_full() {
        assert_eq!(
            p(
                "postgresql://alice:s%40cret@db.example.com:5433/sales?sslmode=require&application_name=x"
            ),
            kv(&[
                ("user", "alice"),
                ("password", "s@cret"),
                ("host", "db.example.com"),
                ("port", "5433"),
                ("dbname", "sales"),
                ("sslmode", "require"),
                ("application_name", "x"),
            ])
        );
    }

    #[test]
    fn uri_minimal_and_socket() {
        assert_eq!(p("postgres://"), kv(&[]));
        assert_eq!(p("postgresql:///db"), kv(&[("dbname", "db")]));
        assert_eq!(
            p("postgresql://%2Fvar%2Frun%2Fpostgresql/db"),
            kv(&[("host", "/var/run/postgresql"), ("dbname", "db")])
        );
        assert_eq!(
            p("postgresql:///db?host=/tmp/sock&port=6000"),
            kv(&[("dbname", "db"), ("host", "/tmp/sock"), ("port", "6000")])
        );
    }

    #[test]
    fn uri_several_hosts_and_ipv6() {
        assert_eq!(
            p("postgresql://a:1,[::1]:2,c/db"),
            kv(&[("host", "a,::1,c"), ("port", "1,2,"), ("dbname", "db")])
        );
        assert_eq!(p("postgresql://[::1]"), kv(&[("host", "::1")]));
        assert!(parse("postgresql://[::1/db").is_err());
    }

    #[test]
    fn uri_ssl_true_and_errors() {
        assert_eq!(
            p("postgresql://h/?ssl=true"),
            kv(&[("host", "h"), ("sslmode", "require")])
        );
        assert_eq!(
            parse("postgresql://h/d?bogus=1").unwrap_err(),
            "invalid URI query parameter: \"bogus\""
        );
        assert!(parse("postgresql://u:%zz@h").is_err());
        assert!(parse("postgresql://u:a%00b@h").is_err());
    }

    #[test]
    fn uri_errors_never_show_the_password() {
        for bad in [
            "postgresql://u:topsecret%zz@h/d",
            "postgresql://u:topsecret@h/d?topsecret",
            "postgresql://u:topsecret@[h/d",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(!err.contains("topsecret"), "{err}");
        }
    }
}
