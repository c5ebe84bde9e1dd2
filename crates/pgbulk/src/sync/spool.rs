//! The private spool directory of a sync's rows.

use crate::error::{Error, Result};

/// A private spool directory (`pgbulk-sync-<pid>-<nanos>` in the temporary
/// directory), removed on drop.
pub(super) struct Spool {
    dir: std::path::PathBuf,
}

impl Spool {
    /// A new spool; the spools of killed syncs (their process is gone)
    /// are removed first.
    pub(super) fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        Self::remove_orphans();
        let dir = std::env::temp_dir().join(format!(
            "pgbulk-sync-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(Self { dir })
    }

    fn remove_orphans() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("pgbulk-sync-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // SAFETY: signal 0 only checks that the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The directory.
    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The path of the spool file `name`.
    pub(super) fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
