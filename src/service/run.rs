//! Where kernel work runs: small requests inline on the async worker, large
//! ones on the rayon pool (parallel over rows) so they never stall I/O, in
//! row blocks that stop early once the call is gone.

use super::{Error, Softmax};
use crate::kernel::Exec;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Output elements per block on the pool, between two cancellation checks:
/// about 1 MiB of f32, a few hundred microseconds of work, enough to pay for
/// splitting it over the threads.
const POOL_BLOCK_ELEMENTS: usize = 1 << 18;
/// Output elements per block inline: 64 KiB of f32, so that a block copied
/// out of unaligned request bytes is still in cache when the kernel reads it.
const INLINE_BLOCK_ELEMENTS: usize = 1 << 14;

/// Set when the call that started some work no longer waits for it (its
/// deadline passed or its client went away).
#[derive(Clone, Debug, Default)]
pub(super) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sets the flag when dropped: held by the awaiting future, so dropping
/// the call cancels its pool work.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on consecutive row blocks of a size fit for `exec` (`per_row`
/// output elements each), checking `cancel` before every block.
pub(super) fn in_blocks(
    rows: usize,
    per_row: usize,
    exec: Exec,
    cancel: &Cancel,
    f: impl FnMut(Range<usize>) -> Result<(), Error>,
) -> Result<(), Error> {
    each(blocks(rows, per_row, exec), cancel, f)
}

/// [`in_blocks`] from the last block to the first, for results written
/// over inputs a little higher up the same buffer. `f(rows, compute)`
/// checks a block and computes it only while `compute` (no block after it
/// has failed); every block is still checked, and the error returned is the
/// lowest failing block's, so it names the same bad value as `in_blocks`.
pub(super) fn in_blocks_from_end(
    rows: usize,
    per_row: usize,
    exec: Exec,
    cancel: &Cancel,
    mut f: impl FnMut(Range<usize>, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut lowest = None;
    each(blocks(rows, per_row, exec).rev(), cancel, |r| {
        if let Err(e) = f(r, lowest.is_none()) {
            lowest = Some(e);
        }
        Ok(())
    })?;
    lowest.map_or(Ok(()), Err)
}

/// The row blocks of `rows`, in order.
fn blocks(
    rows: usize,
    per_row: usize,
    exec: Exec,
) -> impl DoubleEndedIterator<Item = Range<usize>> {
    let block = match exec {
        Exec::Inline => INLINE_BLOCK_ELEMENTS,
        Exec::Pool => POOL_BLOCK_ELEMENTS,
    };
    let step = (block / per_row.max(1)).max(1);
    (0..rows.div_ceil(step)).map(move |i| i * step..rows.min((i + 1) * step))
}

fn each(
    blocks: impl Iterator<Item = Range<usize>>,
    cancel: &Cancel,
    mut f: impl FnMut(Range<usize>) -> Result<(), Error>,
) -> Result<(), Error> {
    for r in blocks {
        if cancel.is_set() {
            return Err(Error::Cancelled(
                "the call was cancelled or its deadline passed; work stopped".into(),
            ));
        }
        f(r)?;
    }
    Ok(())
}

impl Softmax {
    /// Runs `work` inline below the parallel threshold, else on the pool,
    /// turning a panic into an INTERNAL error instead of a dead worker.
    pub(super) async fn run<T, W>(&self, elements: usize, work: W) -> Result<T, Error>
    where
        T: Send + 'static,
        W: FnOnce(Exec, &Cancel) -> Result<T, Error> + Send + 'static,
    {
        let cancel = Cancel::default();
        if elements < self.config().parallel_threshold {
            return guarded(work, Exec::Inline, &cancel);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _guard = CancelOnDrop(cancel.clone());
        rayon::spawn(move || {
            // The receiver is gone only when the call was dropped.
            let _ = tx.send(guarded(work, Exec::Pool, &cancel));
        });
        rx.await
            .map_err(|_| Error::Internal("the worker dropped its result".into()))?
    }
}

fn guarded<T, W>(work: W, exec: Exec, cancel: &Cancel) -> Result<T, Error>
where
    W: FnOnce(Exec, &Cancel) -> Result<T, Error>,
{
    catch_unwind(AssertUnwindSafe(|| work(exec, cancel)))
        .unwrap_or_else(|_| Err(Error::Internal("kernel panicked".into())))
}
