//! Finding the PostgreSQL server programs (`initdb`, `pg_ctl`, `postgres`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::conninfo::Environment;
use crate::error::{Error, Result};

const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// The directory holding the server programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// Where `initdb`, `pg_ctl` and `postgres` are.
    pub bindir: PathBuf,
}

impl Binaries {
    /// Finds the server programs: `$PGBULK_PG_BINDIR`; else, when
    /// `$PGBULK_PG_VERSION` names a major version, that version's (fetched
    /// by `scripts/pg-versions` under `$PGBULK_PG_CACHE`, default
    /// `/var/cache/pgbulk-pg`, or `/usr/lib/postgresql/<version>/bin`);
    /// else `initdb` on `PATH`, then `pg_config --bindir`, then the newest
    /// `/usr/lib/postgresql/<version>/bin`, then `/usr/local/pgsql/bin`.
    pub fn find(env: &Environment) -> Result<Self> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(version) = env.var("PGBULK_PG_VERSION").filter(|v| !v.is_empty()) {
            let cache = env
                .var("PGBULK_PG_CACHE")
                .filter(|c| !c.is_empty())
                .unwrap_or("/var/cache/pgbulk-pg");
            let dirs = [
                Path::new(cache).join(version).join("bin"),
                Path::new("/usr/lib/postgresql").join(version).join("bin"),
            ];
            return dirs
                .iter()
                .find(|d| has_programs(d))
                .map(|d| Self { bindir: d.clone() })
                .ok_or_else(|| {
                    Error::local(format!(
                        "PGBULK_PG_VERSION={version}: no server programs in {} or {} (scripts/pg-versions fetches 13 to 18)",
                        dirs[0].display(),
                        dirs[1].display()
                    ))
                });
        }
        if let Some(dir) = env.var("PGBULK_PG_BINDIR").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return if has_programs(&dir) {
                Ok(Self { bindir: dir })
            } else {
                Err(Error::local(format!(
                    "PGBULK_PG_BINDIR={} does not hold initdb, pg_ctl and postgres",
                    dir.display()
                )))
            };
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let initdb = dir.join("initdb");
                if initdb.is_file() {
                    let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                    if let Some(parent) = real.parent() {
                        candidates.push(parent.to_path_buf());
                    }
                    candidates.push(dir);
                }
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                candidates.push(PathBuf::from(dir));
            }
        }
        candidates.extend(versioned_dirs(Path::new("/usr/lib/postgresql")));
        candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
        candidates
            .into_iter()
            .find(|dir| has_programs(dir))
            .map(|bindir| Self { bindir })
            .ok_or_else(|| {
                Error::local(
                    "no PostgreSQL server programs found (looked for initdb on PATH, in `pg_config --bindir`, \
                     under /usr/lib/postgresql/*/bin and /usr/local/pgsql/bin); install the server \
                     (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; \
                     macOS: brew install postgresql) or set PGBULK_PG_BINDIR",
                )
            })
    }

    /// The server programs in `dir`, which must hold them.
    pub fn at(dir: &Path) -> Result<Self> {
        if has_programs(dir) {
            Ok(Self {
                bindir: dir.to_path_buf(),
            })
        } else {
            Err(Error::local(format!(
                "{} does not hold initdb, pg_ctl and postgres",
                dir.display()
            )))
        }
    }

    /// The path of one program in the directory.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The server's version, as `postgres --version` prints it.
    pub fn version(&self) -> Result<String> {
        let out = Command::new(self.program("postgres"))
            .arg("--version")
            .output()
            .map_err(|e| Error::io("cannot run postgres --version", e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

fn has_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

/// `<root>/<N>/bin` for every numeric `N`, newest first.
fn versioned_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()?;
            Some((key, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_first() {
        let root = std::env::temp_dir().join(format!("pgbulk-bins-{}", std::process::id()));
        for v in ["9.6", "15", "16", "notaversion"] {
            std::fs::create_dir_all(root.join(v).join("bin")).expect("mkdir");
        }
        let dirs = versioned_dirs(&root);
        assert_eq!(
            dirs,
            vec![
                root.join("16/bin"),
                root.join("15/bin"),
                root.join("9.6/bin")
            ]
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn explicit_bindir_must_hold_the_programs() {
        let env = Environment::empty().with_var("PGBULK_PG_BINDIR", "/nonexistent");
        let err = Binaries::find(&env).unwrap_err();
        assert!(err.message().contains("PGBULK_PG_BINDIR"), "{err}");
    }
}
