//! Forward pass: softmax and log-softmax over the last axis.

use super::{check_same, scratch_row, streams, Element, Exec, Form, KernelError, Screened};
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Writes softmax(x · inv_t) (or log-softmax) of every row of `x` into `out`.
///
/// `-inf` entries are masked (probability 0); a fully masked row gives all
/// zeros (log: all `-inf`). NaN and `+inf` have no softmax: the call screens
/// for them as it goes, at no extra pass over `x`, and returns
/// [`Screened::Suspect`] when it met one, leaving `out` meaningless.
pub fn forward<F: Element>(
    x: ArrayView2<'_, F>,
    mut out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<Screened, KernelError> {
    check_same("logits", &x, &out)?;
    check_same("output", &out, &x)?;
    let k = x.ncols();
    let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) else {
        return Err(KernelError::Layout("logits"));
    };
    if k == 0 {
        return Ok(Screened::Clean);
    }
    let streamed = streams::<F>(os.len()) && form == Form::Probs;
    let rows = |x: &[F], o: &mut [F]| match form {
        Form::Probs if streamed => {
            let mut buf = Vec::new();
            F::softmax_rows_streamed(x, k, inv_t, scratch_row(&mut buf, 2 * k), o)
        }
        Form::Probs => F::softmax_rows(x, k, inv_t, o),
        Form::LogProbs => F::log_softmax_rows(x, k, inv_t, o),
    };
    let clean = match exec {
        Exec::Inline => rows(xs, os),
        Exec::Pool => {
            // Whole rows per task, enough of them that a task outweighs its
            // scheduling and the row-to-row pipelining has rows to run on.
            let block = (POOL_BLOCK_VALUES / k).max(1) * k;
            xs.par_chunks(block)
                .zip(os.par_chunks_mut(block))
                .map(|(x, o)| rows(x, o))
                .reduce(|| true, |a, b| a & b)
        }
    };
    Ok(Screened::of(clean))
}

/// Values per pool task of the row-block forward (64 K: 256 KiB of f32).
const POOL_BLOCK_VALUES: usize = 1 << 16;

/// Softmax of each `k`-value row of `x`, one [`Element::softmax_row`] at a
/// time: the default of [`Element::softmax_rows`].
pub(crate) fn softmax_rows_by_row<F: Element>(x: &[F], k: usize, inv_t: F, out: &mut [F]) -> bool {
    k == 0
        || x.chunks_exact(k)
            .zip(out.chunks_exact_mut(k))
            .fold(true, |clean, (x, o)| F::softmax_row(x, inv_t, o) & clean)
}

/// As [`softmax_rows_by_row`] for log-softmax.
pub(crate) fn log_softmax_rows_by_row<F: Element>(
    x: &[F],
    k: usize,
    inv_t: F,
    out: &mut [F],
) -> bool {
    k == 0
        || x.chunks_exact(k)
            .zip(out.chunks_exact_mut(k))
            .fold(true, |clean, (x, o)| {
                F::log_softmax_row(x, inv_t, o) & clean
            })
}

/// Softmax of each `k`-value row for outputs too large for the cache, one
/// row at a time: the default of [`Element::softmax_rows_streamed`]. The
/// exponentials go to the scratch row `e`, which stays in cache, and the
/// scaled result is streamed to `out` once, so memory sees one read of `x`
/// and one write of `out`, like a memcpy, instead of a read-for-ownership
/// as well.
pub(crate) fn softmax_rows_streamed_by_row<F: Element>(
    x: &[F],
    k: usize,
    inv_t: F,
    e: &mut [F],
    out: &mut [F],
) -> bool {
    let Some(e) = e.get_mut(..k).filter(|_| k > 0) else {
        // No scratch row to stream from: the cached rows are as exact.
        return softmax_rows_by_row(x, k, inv_t, out);
    };
    x.chunks_exact(k)
        .zip(out.chunks_exact_mut(k))
        .fold(true, |clean, (x, o)| {
            softmax_row_streamed_by_parts(x, inv_t, e, o) & clean
        })
}

/// One row of [`softmax_rows_streamed_by_row`].
fn softmax_row_streamed_by_parts<F: Element>(
    x: &[F],
    inv_t: F,
    e: &mut [F],
    out: &mut [F],
) -> bool {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        out.fill(F::zero());
        return masked_row_clean(x);
    }
    let sum = F::exp_shifted(x, m, inv_t, e);
    F::scaled_stream(e, F::of(1.0 / sum), out);
    clean_sum(sum)
}

/// Whether a row whose sum of exponentials is `sum` held no NaN or `+inf`:
/// a NaN gives a NaN exponential, and `+inf` makes the max `+inf` and its
/// own exponent `inf - inf`, NaN; the vector exps carry NaN through. Finite
/// logits give a sum in `[1, k]`.
pub(crate) fn clean_sum(sum: f64) -> bool {
    !sum.is_nan()
}

/// Whether a row whose max is `-inf` held no NaN: `max` may skip NaN, so
/// such a row (all masks, or so it seemed) is scanned. Rare, and short of a
/// whole pass: only fully masked rows pay it.
pub(crate) fn masked_row_clean<F: Element>(x: &[F]) -> bool {
    F::all_finite(x, true)
}

/// One row of softmax: max, then exp and sum, then scale, each pass over a
/// row that stays in cache. `Element::softmax_row` runs this, or the same
/// passes fused into one SIMD call.
pub(crate) fn softmax_row_by_parts<F: Element>(x: &[F], inv_t: F, out: &mut [F]) -> bool {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        out.fill(F::zero());
        return masked_row_clean(x);
    }
    let sum = F::exp_shifted(x, m, inv_t, out);
    F::scale(out, F::of(1.0 / sum));
    clean_sum(sum)
}

/// One row of log-softmax, as `(x - m)·inv_t - log Σ exp(...)`, never `log(s)`.
pub(crate) fn log_softmax_row_by_parts<F: Element>(x: &[F], inv_t: F, out: &mut [F]) -> bool {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        out.fill(F::neg_infinity());
        return masked_row_clean(x);
    }
    let sum = F::sum_exp_shifted(x, m, inv_t);
    F::log_shifted(x, m, inv_t, F::of(sum.ln()), out);
    clean_sum(sum)
}
