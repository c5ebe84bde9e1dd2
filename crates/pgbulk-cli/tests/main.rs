//! The command's integration tests: one binary, one throwaway cluster per run (or
//! `PGBULK_TEST_DATABASE_URL`), a fresh database per test.

#![allow(unreachable_pub)]

#[cfg(feature = "export")]
mod cli_export;
#[cfg(feature = "export")]
mod cli_export_bigquery;
mod cli_first_contact;
mod cli_landing;
mod cli_load;
mod cli_local;
#[cfg(feature = "export")]
mod cli_parquet;
mod cli_ping;
mod cli_pipeline;
mod cli_rebuild;
mod cli_sync;
mod cli_upsert_streams;
mod faults;
mod harness;
mod mutations;
mod security;
mod values;
