//! Where kernel work runs: small requests inline on the async worker, large
//! ones on the rayon pool (parallel over rows) so they never stall I/O.

use super::{Error, Softmax};
use crate::kernel::Exec;
use std::panic::{catch_unwind, AssertUnwindSafe};

impl Softmax {
    /// Runs `work` inline below the parallel threshold, else on the pool,
    /// turning a panic into an INTERNAL error instead of a dead worker.
    pub(super) async fn run<T, W>(&self, elements: usize, work: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: FnOnce(Exec) -> Result<T, Error> + Send + 'static,
    {
        if elements < self.config().parallel_threshold {
            return guarded(work, Exec::Inline);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        rayon::spawn(move || {
            // The receiver is gone only when the call was dropped.
            let _ = tx.send(guarded(work, Exec::Pool));
        });
        rx.await
            .map_err(|_| Error::Internal("the worker dropped its result".into()))?
    }
}

fn guarded<T, W>(work: W, exec: Exec) -> Result<T, Error>
where
    W: FnOnce(Exec) -> Result<T, Error>,
{
    catch_unwind(AssertUnwindSafe(|| work(exec)))
        .unwrap_or_else(|_| Err(Error::Internal("kernel panicked".into())))
}
