//! The library's integration tests: one binary, one throwaway cluster per
//! run (or `PGBULK_TEST_DATABASE_URL`), a fresh database per test.

#![allow(unreachable_pub)]

mod codec;
mod connect;
mod csv;
mod ingest;
mod load;
#[cfg(feature = "arrow")]
mod partitioned;
#[cfg(feature = "arrow")]
mod write;

use pgbulk_testkit as harness;
