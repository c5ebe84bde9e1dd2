//! A directory of Parquet files as an export's destination.
//!
//! `DIR/TABLE/run-000001.parquet`, one file per table per run (written as
//! `.run-000001.parquet.partial`, synced, then renamed: a reader never sees
//! a half-written file), and `DIR/_pgbulk_state.json`, which lists each
//! table's files and holds its watermark. The state is written last and
//! atomically (a new file renamed over the old): files it does not list
//! are what a killed run left, and are removed at the start of the next
//! run, which writes the same run number again. So a rerun after a crash
//! never leaves a file half-written or a row counted twice.
//!
//! An incremental export adds a file per run (the rows at or after the
//! watermark); a full export replaces the table's files with one. One
//! export at a time writes a table (an exclusive `flock` on
//! `DIR/TABLE/.pgbulk.lock`, refused when held); exports of other tables
//! may write the directory at the same time (the state file is updated
//! under `DIR/_pgbulk_state.lock`, held for the update only).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The state file's name.
pub const STATE_FILE: &str = "_pgbulk_state.json";
const LOCK_FILE: &str = "_pgbulk_state.lock";
const TABLE_LOCK: &str = ".pgbulk.lock";

/// Rows per row group at most.
const ROW_GROUP_ROWS: usize = 1 << 20;
/// Encoded bytes per row group at most: bounds the writer's memory.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// What the state file says about one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableState {
    /// The source, as messages name it.
    pub source: String,
    /// The incremental column, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Where the next incremental read starts (a [`crate::mark::Mark`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<serde_json::Value>,
    /// The `--where` of the run that stored the watermark (absent in
    /// states written before it was recorded).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<StoredFilter>,
    /// Runs that wrote this table (the next file's number is one more).
    pub runs: u64,
    /// The table's files, relative to the directory, oldest first.
    pub files: Vec<String>,
    /// Rows in those files.
    pub rows: u64,
}

/// A run's `--where`, as its table's state records it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredFilter {
    /// The condition (`None`: the run had none).
    pub sql: Option<String>,
}

/// The state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    pgbulk_export: u32,
    tables: BTreeMap<String, TableState>,
}

/// An open destination directory.
#[derive(Debug)]
pub struct ParquetDir {
    dir: PathBuf,
}

/// Opens (creating) `path` and takes an exclusive `flock` on it: waits for
/// it (`wait`), or returns `None` when another holds it. The lock lasts as
/// long as the file is open.
fn lock(path: &Path, wait: bool) -> Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let how = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), how) };
    Ok((locked == 0).then_some(file))
}

impl TableState {
    /// Whether it lists files and none of them is in `dir` any more.
    pub fn files_gone(&self, dir: &Path) -> bool {
        !self.files.is_empty() && self.files.iter().all(|f| !dir.join(f).exists())
    }
}

impl ParquetDir {
    /// Opens `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the state file of `dir` says about `table`, read without the
    /// lock (for plans).
    pub fn peek(dir: &Path, table: &str) -> Result<Option<TableState>> {
        read_state(dir).map(|s| s.tables.get(table).cloned())
    }

    /// What the state file says about `table`.
    pub fn table_state(&self, table: &str) -> Result<Option<TableState>> {
        Ok(self.read_state()?.tables.get(table).cloned())
    }

    fn read_state(&self) -> Result<State> {
        read_state(&self.dir)
    }

    /// Starts the next run of `table`: removes the files of `table`'s
    /// directory its state does not list (a killed run's), and names the
    /// file this run writes.
    pub fn begin(&self, table: &str) -> Result<Run> {
        let table_dir = self.dir.join(table);
        std::fs::create_dir_all(&table_dir)
            .map_err(|e| Error::io(format!("cannot create {}", table_dir.display()), e))?;
        let held = lock(&table_dir.join(TABLE_LOCK), false)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "another export is writing {table} in {} (it holds {}); one at a time",
                    self.dir.display(),
                    table_dir.join(TABLE_LOCK).display()
                ),
            )
        })?;
        let mut state = self.table_state(table)?.unwrap_or_default();
        // The watermark stands for the files: once every one is gone
        // (the table's directory removed), the run starts over.
        let files_gone = state.files_gone(&self.dir);
        if files_gone {
            state.watermark = None;
            state.filter = None;
            state.files.clear();
            state.rows = 0;
        }
        let entries = std::fs::read_dir(&table_dir)
            .map_err(|e| Error::io(format!("cannot list {}", table_dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("cannot list {}", table_dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = (name.starts_with("run-") && name.ends_with(".parquet"))
                || (name.starts_with(".run-") && name.ends_with(".partial"));
            let listed = state.files.iter().any(|f| *f == format!("{table}/{name}"));
            if ours && !listed {
                tracing::info!(
                    "removing {}: a killed export's, not in {STATE_FILE}",
                    entry.path().display()
                );
                std::fs::remove_file(entry.path()).map_err(|e| {
                    Error::io(format!("cannot remove {}", entry.path().display()), e)
                })?;
            }
        }
        let number = state.runs + 1;
        let name = format!("run-{number:06}.parquet");
        Ok(Run {
            _lock: held,
            table: table.to_owned(),
            number,
            relative: format!("{table}/{name}"),
            partial: table_dir.join(format!(".{name}.partial")),
            path: table_dir.join(name),
            state,
            files_gone,
        })
    }

    /// Publishes a run: its file (if one was written) renamed into place,
    /// then the state saying so, with `watermark` and the run's `filter`;
    /// a full export (`replace`) then removes the table's older files.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        run: &Run,
        written: Option<u64>,
        column: Option<&str>,
        watermark: Option<serde_json::Value>,
        filter: Option<&str>,
        source: &str,
        replace: bool,
    ) -> Result<()> {
        let mut entry = run.state.clone();
        let old_files = if replace {
            std::mem::take(&mut entry.files)
        } else {
            Vec::new()
        };
        if replace {
            entry.rows = 0;
        }
        if let Some(rows) = written {
            std::fs::rename(&run.partial, &run.path)
                .map_err(|e| Error::io(format!("cannot rename to {}", run.path.display()), e))?;
            sync_dir(run.path.parent().unwrap_or(&self.dir))?;
            entry.files.push(run.relative.clone());
            entry.rows += rows;
            entry.runs = run.number;
        }
        entry.source = source.to_owned();
        entry.column = column.map(str::to_owned);
        entry.watermark = watermark;
        entry.filter = Some(StoredFilter {
            sql: filter.map(str::to_owned),
        });
        let _updating = lock(&self.dir.join(LOCK_FILE), true)?;
        let mut state = self.read_state()?;
        state.pgbulk_export = 1;
        state.tables.insert(run.table.clone(), entry);
        self.write_state(&state)?;
        for old in old_files {
            let path = self.dir.join(&old);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io(format!("cannot remove {}", path.display()), e));
                }
            }
        }
        Ok(())
    }

    /// Writes the state to a new file, syncs it and renames it over the
    /// old one.
    fn write_state(&self, state: &State) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let temporary = self.dir.join(format!(".{STATE_FILE}.partial"));
        let mut text = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::new(ErrorKind::Io, format!("encoding the state: {e}")))?;
        text.push(b'\n');
        let mut file = File::create(&temporary)
            .map_err(|e| Error::io(format!("cannot create {}", temporary.display()), e))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}", temporary.display()), e))?;
        std::fs::rename(&temporary, &path)
            .map_err(|e| Error::io(format!("cannot rename to {}", path.display()), e))?;
        sync_dir(&self.dir)
    }
}

/// The state file of `dir` (empty when there is none).
fn read_state(dir: &Path) -> Result<State> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{} cannot be read: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
            pgbulk_export: 1,
            tables: BTreeMap::new(),
        }),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot sync {}", dir.display()), e))
}

/// One run of one table: the file it writes.
#[derive(Debug)]
pub struct Run {
    /// The table's lock, held for the run.
    _lock: File,
    table: String,
    number: u64,
    /// `TABLE/run-N.parquet`.
    relative: String,
    /// Where the rows are written.
    pub partial: PathBuf,
    /// Where they are published.
    pub path: PathBuf,
    state: TableState,
    /// The state listed files, and every one was gone: its watermark
    /// was dropped.
    pub files_gone: bool,
}

impl Run {
    /// The table's state when the run began (under its lock).
    pub fn state(&self) -> &TableState {
        &self.state
    }

    /// The file's name relative to the directory.
    pub fn relative(&self) -> &str {
        &self.relative
    }
}

/// Writes record batches into a Parquet file (Snappy, row groups bounded
/// in rows and bytes).
pub struct FileWriter {
    writer: ArrowWriter<std::io::BufWriter<File>>,
    path: PathBuf,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl FileWriter {
    /// Creates `path` for rows of `schema`.
    pub fn create(path: &Path, schema: arrow_schema::SchemaRef) -> Result<Self> {
        let file = File::create(path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(parquet::basic::ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_created_by(format!("pgbulk {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            schema,
            Some(props),
        )
        .map_err(|e| parquet_error(path, e))?;
        Ok(Self {
            writer,
            path: path.to_owned(),
        })
    }

    /// Writes a batch.
    pub fn write(&mut self, batch: &arrow_array::RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| parquet_error(&self.path, e))
    }

    /// Closes the file (footer written) and syncs it; returns its size.
    pub fn close(self) -> Result<u64> {
        let path = self.path;
        let buffered = self
            .writer
            .into_inner()
            .map_err(|e| parquet_error(&path, e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("cannot sync {}", path.display()), e))?;
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
    }
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::new(ErrorKind::Io, format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_per_table_and_a_killed_runs_files_go() {
        let dir = std::env::temp_dir().join(format!("pgbulk-parquet-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = ParquetDir::open(&dir).expect("open");
        let first = out.begin("t").expect("first run");
        assert!(out.begin("t").is_err(), "a second run of t is refused");
        let other = out.begin("u").expect("another table");
        drop(other);
        // A killed run: its file renamed into place, the state not written.
        std::fs::write(&first.partial, b"half").expect("partial");
        std::fs::write(&first.path, b"whole").expect("published");
        drop(first);
        let again = out.begin("t").expect("the rerun");
        assert_eq!(again.relative(), "t/run-000001.parquet");
        assert!(!again.path.exists() && !again.partial.exists());
        std::fs::write(&again.partial, b"rows").expect("rows");
        out.commit(&again, Some(3), None, None, None, "public.t", true)
            .expect("commit");
        let state = out.table_state("t").expect("state").expect("t");
        assert_eq!(
            (state.runs, state.rows, state.files),
            (1, 3, vec!["t/run-000001.parquet".to_owned()])
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
