//! The shared harness, and the `pgbulk` binary under test.

use std::process::Command;

pub use pgbulk_testkit::*;

/// The `pgbulk` binary in a clean environment: no `PG*` variables, `HOME`
/// and `PGBULK_HOME` inside `home`, working directory `home`.
pub fn pgbulk(home: &Scratch) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgbulk"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("PGBULK_HOME", home.path().join("pgbulk-home"))
        .current_dir(home.path());
    cmd
}
