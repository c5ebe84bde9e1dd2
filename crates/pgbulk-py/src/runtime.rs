//! The tokio runtime the extension runs the library on: one per process.
//! A forked child (Airflow/Celery prefork, `multiprocessing`) has none of
//! its parent's threads, so it gets a fresh runtime instead of waiting on
//! workers that do not exist; the parent's is left alone (never dropped in
//! the child).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

/// The runtime and the process it was made in.
static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);

/// This process's runtime, made on first use.
fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgbulk")
            .enable_all()
            .build()
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("pgbulk: no runtime: {e}"))
            })?,
    );
    // A parent's runtime inherited through fork: its threads are gone, so
    // dropping it could wait forever. It is forgotten instead.
    if let Some(inherited) = slot.replace((pid, rt.clone())) {
        std::mem::forget(inherited);
    }
    Ok(rt)
}

/// Runs `work` on the runtime with the GIL released, checking for Python
/// signals (Ctrl-C) every 100 ms: on one, the `progress` of the work is
/// interrupted (no further row is read) and the statement its connections
/// to `params` run is cancelled, the work is awaited to its end (it rolls
/// back what is in flight), then the signal's exception is raised.
pub(crate) fn run<T, F>(
    py: Python<'_>,
    work: F,
    progress: Arc<pgbulk::load::Progress>,
    params: Option<pgbulk::conninfo::ConnParams>,
) -> PyResult<pgbulk::Result<T>>
where
    T: Send,
    F: Future<Output = pgbulk::Result<T>> + Send,
{
    let interrupt = || {
        progress.interrupt();
        if let Some(params) = params.clone() {
            let progress = progress.clone();
            tokio::spawn(async move { progress.cancel(&params).await });
        }
    };
    let rt = runtime()?;
    let mut signalled = None;
    let outcome = py.detach(|| {
        rt.block_on(async {
            tokio::pin!(work);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    done = &mut work => return done,
                    _ = tick.tick(), if signalled.is_none() => {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            signalled = Some(e);
                            interrupt();
                        }
                    }
                }
            }
        })
    });
    match signalled {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}
