//! The target of a command: what the user configured, or, when nothing is
//! configured at all, pgbulk's persistent local cluster, started on demand.

use crate::conninfo::{self, ConnParams, Environment, Request};
use crate::error::Result;
use crate::local::{Cluster, SUPERUSER};

/// How the local cluster was brought into use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalUse {
    /// It was running already.
    Running,
    /// It existed and was started now.
    Started,
    /// It was created and started now.
    Created,
}

/// Resolved connection parameters, and whether they point at the local
/// cluster.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to connect.
    pub params: ConnParams,
    /// `Some` when nothing was configured and the local cluster is used:
    /// callers should say so (on stderr).
    pub local: Option<(LocalUse, std::path::PathBuf)>,
}

/// Resolves the target of a command. With nothing configured (see
/// [`Request::is_configured`]) this creates and starts the persistent local
/// cluster as needed and connects to its `postgres` database.
pub fn resolve(request: &Request, env: &Environment) -> Result<Target> {
    if request.is_configured(env) {
        return Ok(Target {
            params: conninfo::resolve(request, env)?,
            local: None,
        });
    }
    let cluster = Cluster::persistent(env)?;
    let created = cluster.create()?;
    let started = cluster.start()?;
    let how = match (created, started) {
        (true, _) => LocalUse::Created,
        (false, true) => LocalUse::Started,
        (false, false) => LocalUse::Running,
    };
    Ok(Target {
        params: cluster.conn_params(SUPERUSER)?,
        local: Some((how, cluster.root().to_path_buf())),
    })
}
