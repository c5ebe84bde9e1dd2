//! Load progress on stderr: a redrawn line on a terminal (bytes, rows,
//! rate, ETA when the size is known), a log line every few seconds
//! otherwise, nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pgbulk::load::Progress;

/// Draws progress until the returned handle is dropped or stopped.
pub(crate) struct Display {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    terminal: bool,
}

impl Display {
    pub(crate) fn start(progress: Arc<Progress>, quiet: bool) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let terminal = std::io::stderr().is_terminal() && crate::logs::human();
        if quiet {
            return Self {
                stop,
                task: None,
                terminal,
            };
        }
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let every = if terminal {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            loop {
                tokio::time::sleep(every).await;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let line = render(&progress, started.elapsed());
                if !crate::logs::human() {
                    tracing::info!(
                        event = "progress",
                        rows_read = progress.rows_read.load(Ordering::Relaxed),
                        bytes_read = progress.bytes_read.load(Ordering::Relaxed),
                        bytes_total = progress.bytes_total.load(Ordering::Relaxed),
                        rows_committed = progress.rows_committed.load(Ordering::Relaxed),
                        batches_committed = progress.batches_committed.load(Ordering::Relaxed),
                        "{line}"
                    );
                    continue;
                }
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "pgbulk: {line}");
                }
                let _ = err.flush();
            }
        });
        Self {
            stop,
            task: Some(task),
            terminal,
        }
    }

    /// Stops drawing and clears the progress line.
    pub(crate) async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
            if self.terminal {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        }
    }
}

fn render(p: &Progress, elapsed: Duration) -> String {
    let total = p.bytes_total.load(Ordering::Relaxed);
    let bytes = p.bytes_read.load(Ordering::Relaxed);
    // Compressed inputs count compressed bytes; never show more than all.
    let bytes = if total > 0 { bytes.min(total) } else { bytes };
    let rows = p.rows_read.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = rows as f64 / secs;
    let mut line = if total > 0 {
        format!("{} / {}", mb(bytes), mb(total))
    } else {
        mb(bytes)
    };
    line.push_str(&format!(
        "  {} rows  {} rows/s",
        thousands(rows),
        thousands(rate as u64)
    ));
    let merging = p.merging.load(Ordering::Relaxed);
    if merging > 0 {
        line.push_str(&format!("  merging batch {merging}"));
    } else if total > 0 && bytes > 0 && bytes < total {
        let eta = secs * (total - bytes) as f64 / bytes as f64;
        line.push_str(&format!(
            "  ETA {}:{:02}",
            (eta as u64) / 60,
            (eta as u64) % 60
        ));
    }
    let rejected = p.rows_rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        line.push_str(&format!("  {} rejected", thousands(rejected)));
    }
    line
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(17_000_000), "17,000,000");
    }
}
