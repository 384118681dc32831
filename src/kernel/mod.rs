//! Pure softmax math over ndarray views: no async, no protobuf, no allocation
//! beyond what the caller passes in.
//!
//! Every operation works on `[rows, k]` arrays in standard (row-major) layout,
//! one softmax per row, and writes into a caller-provided output.

#[forbid(unsafe_code)]
mod backward;
#[forbid(unsafe_code)]
mod cross_entropy;
#[forbid(unsafe_code)]
mod element;
#[forbid(unsafe_code)]
mod finite;
#[forbid(unsafe_code)]
mod forward;
#[forbid(unsafe_code)]
mod jacobian;
// The one module with unsafe code: every block states why it is sound.
#[deny(clippy::undocumented_unsafe_blocks)]
mod simd;

pub use backward::{backward, backward_from_logits};
pub use cross_entropy::{cross_entropy, Target};
pub use element::Element;
pub use forward::forward;
pub use jacobian::{jacobian, jacobian_from_logits};

/// Where a kernel call runs its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exec {
    /// On the calling thread, row after row.
    Inline,
    /// Split over rows on the global rayon pool.
    Pool,
}

/// What the kernel refuses: only shape disagreements between its arguments,
/// which the service layer rules out before calling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("{what}: shape {got:?} does not match {want:?}")]
    Shape {
        what: &'static str,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("{0}: arrays must be in standard (row-major, contiguous) layout")]
    Layout(&'static str),
    #[error("labels: {got} labels for {rows} rows")]
    Labels { got: usize, rows: usize },
}

/// What a kernel call vouches for in its inputs besides its result: `Clean`
/// when its screen, folded into the passes it makes anyway, proved every
/// value one the operation takes; `Suspect` when it met a NaN or infinity it
/// does not take (for [`forward`], exactly then) or could not tell. The
/// caller then scans the inputs, which finds and names the value: a scan
/// worth paying only then.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screened {
    Clean,
    Suspect,
}

impl Screened {
    fn of(clean: bool) -> Self {
        if clean {
            Screened::Clean
        } else {
            Screened::Suspect
        }
    }
}

/// A screen's verdict gathered over rows that may run on several threads.
struct Screen(std::sync::atomic::AtomicBool);

impl Screen {
    fn new() -> Self {
        Self(std::sync::atomic::AtomicBool::new(true))
    }

    /// Records one row's verdict.
    fn row(&self, clean: bool) {
        if !clean {
            self.0.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn verdict(self) -> Screened {
        Screened::of(self.0.into_inner())
    }
}

/// Softmax (`Probs`) or log-softmax (`LogProbs`): which function a call is about,
/// and so how its `s` argument is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Probs,
    LogProbs,
}

/// Runs `$body` for each row tuple of `$zip`, inline or on the rayon pool.
macro_rules! for_rows {
    ($exec:expr, $zip:expr, $body:expr) => {
        match $exec {
            $crate::kernel::Exec::Inline => $zip.for_each($body),
            $crate::kernel::Exec::Pool => $zip.par_for_each($body),
        }
    };
}
pub(crate) use for_rows;

/// Outputs of at least this many bytes are written with streaming stores:
/// far beyond the L2 cache, where normal stores would first read every line
/// of the output from memory. (glibc's memcpy switches the same way.)
const STREAM_MIN_BYTES: usize = 32 << 20;

/// A scratch row of `k` values in `buf` starting on a cache line, so that
/// full-vector stores into it never split across two lines.
pub(crate) fn scratch_row<F: Element>(buf: &mut Vec<F>, k: usize) -> &mut [F] {
    let pad = 64 / std::mem::size_of::<F>();
    buf.resize(k + pad, F::zero());
    let off = buf.as_ptr().align_offset(64).min(pad);
    // Never empty: `buf` holds `k + pad` values and `off <= pad`.
    buf.get_mut(off..off + k).unwrap_or_default()
}

/// Whether an output of `len` values is written with streaming stores.
pub(crate) fn streams<F>(len: usize) -> bool {
    len.saturating_mul(std::mem::size_of::<F>()) >= STREAM_MIN_BYTES
}

pub(crate) fn check_same<A, B, D: ndarray::Dimension>(
    what: &'static str,
    a: &ndarray::ArrayBase<A, D>,
    want: &ndarray::ArrayBase<B, D>,
) -> Result<(), KernelError>
where
    A: ndarray::Data,
    B: ndarray::RawData,
{
    if !a.is_standard_layout() {
        return Err(KernelError::Layout(what));
    }
    if a.shape() != want.shape() {
        return Err(KernelError::Shape {
            what,
            got: a.shape().to_vec(),
            want: want.shape().to_vec(),
        });
    }
    Ok(())
}

pub(crate) fn check_layout<S: ndarray::RawData, D: ndarray::Dimension>(
    what: &'static str,
    a: &ndarray::ArrayBase<S, D>,
) -> Result<(), KernelError> {
    if a.is_standard_layout() {
        Ok(())
    } else {
        Err(KernelError::Layout(what))
    }
}
