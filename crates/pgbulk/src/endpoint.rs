//! The endpoint of a command (the server it talks to): what the user
//! configured, or, when nothing is configured at all, pgbulk's persistent
//! local cluster, started on demand.

use crate::conninfo::{self, ConnParams, Environment, Request};
use crate::error::Result;
use crate::local::{Cluster, LocalUse, SUPERUSER};

/// Resolved connection parameters, and whether they point at the local
/// cluster.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where to connect.
    pub params: ConnParams,
    /// `Some` when nothing was configured and the local cluster is used:
    /// callers should say so (on stderr).
    pub local: Option<(LocalUse, std::path::PathBuf)>,
}

/// Resolves the endpoint of a command. With nothing configured (see
/// [`Request::is_configured`]) this creates and starts the persistent local
/// cluster as needed and connects to its `postgres` database.
pub fn resolve(request: &Request, env: &Environment) -> Result<Endpoint> {
    if request.is_configured(env) {
        return Ok(Endpoint {
            params: conninfo::resolve(request, env)?,
            local: None,
        });
    }
    let cluster = Cluster::persistent(env)?;
    let how = cluster.ensure_running()?;
    Ok(Endpoint {
        params: cluster.conn_params(SUPERUSER)?,
        local: Some((how, cluster.root().to_path_buf())),
    })
}
