//! `pg_service.conf`: named groups of connection settings, read from
//! `PGSERVICEFILE` (default `~/.pg_service.conf`) and then
//! `PGSYSCONFDIR/pg_service.conf`.

use std::path::Path;

use super::keyword;

/// The settings of service `name` in `text` (a service file called `file` in
/// errors), or `None` when the file has no such service.
pub(crate) fn find(
    text: &str,
    file: &Path,
    name: &str,
) -> Result<Option<Vec<(String, String)>>, String> {
    let mut in_group = false;
    let mut found: Option<Vec<(String, String)>> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            in_group = section.strip_suffix(']') == Some(name);
            if in_group {
                found = Some(Vec::new());
            }
            continue;
        }
        if !in_group {
            continue;
        }
        let syntax = || {
            format!(
                "syntax error in service file \"{}\", line {}",
                file.display(),
                n + 1
            )
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(syntax());
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "service" {
            return Err(format!(
                "nested service specifications not supported in service file \"{}\", line {}",
                file.display(),
                n + 1
            ));
        }
        if !keyword::is_known(key) {
            return Err(syntax());
        }
        if let Some(group) = found.as_mut() {
            group.push((key.to_owned(), value.to_owned()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Services
[dev]
host=dev-db
port=5433
  dbname = sales
[qa]
host=qa-db
[broken]
host
[nested]
service=dev
";

    fn f(name: &str) -> Result<Option<Vec<(String, String)>>, String> {
        find(FILE, Path::new("/etc/pg_service.conf"), name)
    }

    #[test]
    fn finds_a_group_and_stops_at_the_next() {
        let dev = f("dev").expect("ok").expect("found");
        assert_eq!(
            dev,
            vec![
                ("host".to_owned(), "dev-db".to_owned()),
                ("port".to_owned(), "5433".to_owned()),
                ("dbname".to_owned(), "sales".to_owned()),
            ]
        );
        assert_eq!(f("qa").expect("ok").expect("found").len(), 1);
        assert_eq!(f("prod").expect("ok"), None);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            f("broken").unwrap_err(),
            "syntax error in service file \"/etc/pg_service.conf\", line 9"
        );
        assert!(f("nested").unwrap_err().starts_with("nested service"));
    }
}
