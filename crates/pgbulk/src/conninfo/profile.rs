//! Named connection profiles in `pgbulk.toml`:
//!
//! ```toml
//! [profiles.dev]
//! url = "postgresql://loader@dev-db/sales"
//!
//! [profiles.qa]
//! service = "qa"
//! sslmode = "verify-full"
//! ```
//!
//! A profile holds libpq keywords (any of them) and optionally `url`, a
//! connection string its keywords refine. The file is read from the working
//! directory first, then from `$PGBULK_HOME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Environment, keyword, parse};
use crate::error::{Error, Result};

/// The file name profiles are read from.
pub const FILE_NAME: &str = "pgbulk.toml";

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

/// The files that may hold profiles, in the order they are searched.
pub(crate) fn candidate_files(env: &Environment) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(cwd) = env.cwd() {
        files.push(cwd.join(FILE_NAME));
    }
    files.push(env.pgbulk_home().join(FILE_NAME));
    files
}

/// The connection settings of profile `name`, from the first file that
/// defines it.
pub(crate) fn load(env: &Environment, name: &str) -> Result<Vec<(String, String)>> {
    let mut known = Vec::new();
    let mut searched = Vec::new();
    for path in candidate_files(env) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                searched.push(path.display().to_string());
                continue;
            }
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        searched.push(path.display().to_string());
        match parse(&text, &path, name)? {
            Ok(settings) => return Ok(settings),
            Err(names) => known.extend(names),
        }
    }
    known.sort();
    known.dedup();
    let known = if known.is_empty() {
        "no profiles are defined".to_owned()
    } else {
        format!("defined profiles: {}", known.join(", "))
    };
    Err(Error::config(format!(
        "profile \"{name}\" not found in {} ({known})",
        searched.join(" or ")
    )))
}

/// A profile's settings, or the names of the profiles a file defines
/// instead.
pub(crate) type Lookup = std::result::Result<Vec<(String, String)>, Vec<String>>;

/// The settings of profile `name` in the text of profile file `path`, or
/// the names of the profiles it defines when it has no such profile.
pub(crate) fn parse(text: &str, path: &Path, name: &str) -> Result<Lookup> {
    let file: File = toml::from_str(text).map_err(|e| {
        Error::config(format!(
            "invalid profile file {}: {}",
            path.display(),
            e.message()
        ))
    })?;
    match file.profiles.get(name) {
        Some(profile) => settings(path, name, profile).map(Ok),
        None => Ok(Err(file.profiles.into_keys().collect())),
    }
}

fn settings(
    path: &Path,
    name: &str,
    profile: &BTreeMap<String, toml::Value>,
) -> Result<Vec<(String, String)>> {
    let bad =
        |msg: String| Error::config(format!("profile \"{name}\" in {}: {msg}", path.display()));
    let mut pairs = Vec::new();
    if let Some(url) = profile.get("url") {
        let url = url
            .as_str()
            .ok_or_else(|| bad("url must be a string".to_owned()))?;
        pairs.extend(parse::parse(url).map_err(bad)?);
    }
    for (key, value) in profile.iter().filter(|(k, _)| *k != "url") {
        if !keyword::is_known(key) {
            return Err(bad(format!("unknown connection option \"{key}\"")));
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => if *b { "1" } else { "0" }.to_owned(),
            _ => return Err(bad(format!("\"{key}\" must be a string or a number"))),
        };
        pairs.push((key.clone(), value));
    }
    if pairs.iter().any(|(k, _)| k == "password") && is_shared(path) {
        return Err(bad(
            "holds a password but the file has group or world access; chmod 600 it or move the password to ~/.pgpass".to_owned(),
        ));
    }
    Ok(pairs)
}

#[cfg(unix)]
fn is_shared(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o077 != 0)
        .unwrap_or(true)
}

#[cfg(not(unix))]
fn is_shared(_path: &Path) -> bool {
    false
}
