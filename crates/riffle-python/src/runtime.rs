//! The tokio runtime jobs run on, and waiting for them without holding the GIL.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use riffle::RiffleError;

/// One multi-threaded runtime for the process, started on first use.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("riffle")
            .build()
            .expect("the tokio runtime starts")
    })
}

/// Runs `future` to its end with the GIL released, checking for Ctrl-C (and other signals
/// Python handles) every 100 ms: a signal drops the future, which cancels what it ran, and
/// raises the signal's exception.
pub(crate) fn wait_for<F, T>(py: Python<'_>, future: F) -> PyResult<T>
where
    F: Future<Output = Result<T, RiffleError>> + Send,
    T: Send,
{
    let outcome = py.detach(|| {
        runtime().block_on(async {
            tokio::pin!(future);
            loop {
                tokio::select! {
                    outcome = &mut future => return Ok(outcome),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    });
    match outcome {
        Ok(result) => result.map_err(crate::errors::to_python),
        Err(signal) => Err(signal),
    }
}
