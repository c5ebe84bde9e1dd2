//! The key hashes of one table's rows in a batch, to tell whether two rows
//! may repeat a key without the server grouping the whole stage (15 s for a
//! 5 M-row stage of a three-column key, measured here).
//!
//! Hashes are kept in memory up to [`RUN`] (8 MB); past that each full run
//! is sorted and written to a file that is already unlinked (nothing is
//! left behind by a crash), and the runs are merged at the end, reading
//! 64 KiB of each at a time. So memory stays flat however large the batch.
//! Equal keys have equal hashes: no equal pair means no repeat. An equal
//! pair (a repeat, or rarely two keys with one hash) or a failure to spill
//! answers "maybe", and the server then looks at the keys themselves.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hashes held in memory before a run is written out.
const RUN: usize = 1 << 20;

/// Bytes read from each run at a time while merging.
const READ: usize = 64 << 10;

/// Key hashes seen so far; see the module's description.
#[derive(Debug)]
pub(super) struct KeyHashes {
    run: Vec<u64>,
    /// Hashes per run ([`RUN`] but in tests).
    run_len: usize,
    spill: Option<Spill>,
    /// Two hashes were equal, or a run could not be written.
    maybe: bool,
}

#[derive(Debug)]
struct Spill {
    file: File,
    /// The length of each run written, in hashes.
    runs: Vec<u64>,
}

impl Default for KeyHashes {
    fn default() -> Self {
        KeyHashes {
            run: Vec::new(),
            run_len: RUN,
            spill: None,
            maybe: false,
        }
    }
}

impl KeyHashes {
    /// Notes one row's key hash.
    pub(super) fn push(&mut self, hash: u64) {
        if self.maybe {
            return;
        }
        self.run.push(hash);
        if self.run.len() >= self.run_len {
            self.write_run();
        }
    }

    /// Whether two rows may repeat a key (certainly not when `false`).
    pub(super) fn maybe_repeated(mut self) -> bool {
        if self.maybe {
            return true;
        }
        if self.spill.is_none() {
            return sorted_repeats(&mut self.run);
        }
        if !self.run.is_empty() {
            self.write_run();
        }
        match self.spill {
            Some(spill) if !self.maybe => spill.merge_repeats().unwrap_or(true),
            _ => true,
        }
    }

    /// Sorts the run in memory and appends it to the spill file.
    fn write_run(&mut self) {
        if sorted_repeats(&mut self.run) {
            self.give_up();
            return;
        }
        if self.spill.is_none() {
            match Spill::create() {
                Ok(spill) => self.spill = Some(spill),
                Err(_) => return self.give_up(),
            }
        }
        let written = self.spill.as_mut().map(|s| s.append(&self.run));
        match written {
            Some(Ok(())) => self.run.clear(),
            _ => self.give_up(),
        }
    }

    /// Leaves the answer to the server and frees what was held.
    fn give_up(&mut self) {
        self.maybe = true;
        self.run = Vec::new();
        self.spill = None;
    }
}

/// Sorts `hashes`; whether two are equal.
fn sorted_repeats(hashes: &mut [u64]) -> bool {
    hashes.sort_unstable();
    hashes.windows(2).any(|w| w[0] == w[1])
}

impl Spill {
    /// A new file in the temporary directory, unlinked at once.
    fn create() -> std::io::Result<Spill> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "pgbulk-keys-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Spill {
            file,
            runs: Vec::new(),
        })
    }

    fn append(&mut self, run: &[u64]) -> std::io::Result<()> {
        let mut out = BufWriter::with_capacity(READ, &self.file);
        for h in run {
            out.write_all(&h.to_le_bytes())?;
        }
        out.flush()?;
        self.runs.push(run.len() as u64);
        Ok(())
    }

    /// Merges the sorted runs; whether two hashes are equal.
    fn merge_repeats(&self) -> std::io::Result<bool> {
        let mut readers = Vec::with_capacity(self.runs.len());
        let mut start = 0u64;
        for &len in &self.runs {
            readers.push(RunReader {
                file: &self.file,
                next: start * 8,
                end: (start + len) * 8,
                buffer: Vec::new(),
                at: 0,
            });
            start += len;
        }
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(h) = r.next_hash()? {
                heap.push(Reverse((h, i)));
            }
        }
        let mut last = None;
        while let Some(Reverse((h, i))) = heap.pop() {
            if last == Some(h) {
                return Ok(true);
            }
            last = Some(h);
            if let Some(next) = readers[i].next_hash()? {
                heap.push(Reverse((next, i)));
            }
        }
        Ok(false)
    }
}

/// Reads one run of the spill file in order.
struct RunReader<'a> {
    file: &'a File,
    /// The file offset of the next bytes to read, and where the run ends.
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl RunReader<'_> {
    fn next_hash(&mut self) -> std::io::Result<Option<u64>> {
        if self.at == self.buffer.len() {
            let len = (self.end - self.next).min(READ as u64) as usize;
            if len == 0 {
                return Ok(None);
            }
            self.buffer.resize(len, 0);
            self.file.read_exact_at(&mut self.buffer, self.next)?;
            self.next += len as u64;
            self.at = 0;
        }
        let bytes: [u8; 8] = self.buffer[self.at..self.at + 8]
            .try_into()
            .map_err(|_| std::io::Error::other("a partial key hash in the spill file"))?;
        self.at += 8;
        Ok(Some(u64::from_le_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of distinct hashes.
    fn distinct(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555)
    }

    const RUN: usize = 1000;

    fn hashes() -> KeyHashes {
        KeyHashes {
            run_len: RUN,
            ..KeyHashes::default()
        }
    }

    #[test]
    fn distinct_hashes_in_memory_and_spilled_are_no_repeat() {
        for n in [0, 1, 999, 1000, 1001, 3017, 100_000] {
            let mut k = hashes();
            distinct(n).for_each(|h| k.push(h));
            assert!(!k.maybe_repeated(), "{n} distinct hashes");
        }
    }

    #[test]
    fn a_repeat_is_found_within_a_run_across_runs_and_in_the_last() {
        let n = 3 * RUN as u64 + 17;
        let all: Vec<u64> = distinct(n).collect();
        // (position of the repeat, position of the hash it repeats)
        let cases = [
            (5, 3),
            (RUN as u64 + 2, 7),
            (2 * RUN as u64 + 9, RUN as u64 + 1),
            (n - 1, 0),
            (n - 1, n - 2),
            (3 * RUN as u64 + 3, 2 * RUN as u64 + 1),
        ];
        for (at, of) in cases {
            let mut k = hashes();
            for (i, &h) in all.iter().enumerate() {
                k.push(if i as u64 == at { all[of as usize] } else { h });
            }
            assert!(k.maybe_repeated(), "row {at} repeating row {of}");
        }
    }
}
