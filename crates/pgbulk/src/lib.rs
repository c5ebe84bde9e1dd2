//! pgbulk moves data into PostgreSQL in bulk: fast, incremental, and safe for
//! the live database.
//!
//! This crate holds all of pgbulk's behaviour; the `pgbulk` command is a thin
//! layer over it.
//!
//! - [`conninfo`] resolves where to connect exactly as libpq does (URIs,
//!   `key=value` strings, `PG*` variables, `~/.pgpass`, `pg_service.conf`,
//!   `sslmode`) plus named profiles from `pgbulk.toml`; [`connect`] opens a
//!   session over TCP or a unix socket, with rustls TLS; [`ping`] checks it;
//! - [`local`] runs a local PostgreSQL cluster from the installed server
//!   programs, for tests and as the default endpoint ([`endpoint`]);
//! - [`schema`] reads declared tables (plain DDL, parsed by the server) and
//!   [`catalog`] live ones into the same [`catalog::TableFacts`]; [`plan`]
//!   diffs them into migration steps run under the [`lock`] policy;
//!   [`session`] holds what a connection's settings mean for them;
//! - [`codec`] encodes rows to binary COPY (sans-IO), [`copy`] streams it;
//! - [`ingest`] is the engine: batches of rows into declared tables with
//!   upserts and atomic watermarks ([`watermark`]);
//! - [`csv`], [`input`], [`infer`] and [`load`] turn files into batches for
//!   the engine (`pgbulk load`).
//!
//! ```no_run
//! # async fn example() -> pgbulk::Result<()> {
//! use pgbulk::conninfo::{self, Environment, Request};
//! let request = Request { db: Some("postgresql://loader@db.example.com/sales".into()), profile: None };
//! let params = conninfo::resolve(&request, &Environment::from_process())?;
//! let report = pgbulk::ping::ping(&params).await?;
//! println!("{} answered in {:?}", report.server_version, report.latency);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, clippy::print_stdout, clippy::print_stderr)]

#[cfg(test)]
mod arbitrary;
#[cfg(feature = "arrow")]
pub mod arrow;
pub mod catalog;
pub mod codec;
pub mod connect;
pub mod conninfo;
pub mod copy;
pub mod csv;
pub mod endpoint;
mod error;
#[cfg(feature = "export")]
pub mod export;
pub mod infer;
pub mod ingest;
pub mod input;
pub mod load;
pub mod local;
pub mod lock;
pub mod mark;
mod os_user;
pub mod ping;
pub mod plan;
mod rebuild;
pub mod relay;
mod savepoint;
pub mod schema;
mod sequence;
pub mod session;
pub mod status;
pub mod sync;
mod tls;
pub mod watermark;
pub mod worker;

pub use error::{Error, ErrorKind, Location, Result, ServerErrorKind};
