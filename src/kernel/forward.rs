//! Forward pass: softmax and log-softmax over the last axis.

use super::{check_same, scratch_row, streams, Element, Exec, Form, KernelError};
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Writes softmax(x · inv_t) (or log-softmax) of every row of `x` into `out`.
///
/// `-inf` entries are masked (probability 0); a fully masked row gives all
/// zeros (log: all `-inf`). Callers reject NaN and `+inf` beforehand.
pub fn forward<F: Element>(
    x: ArrayView2<'_, F>,
    mut out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<(), KernelError> {
    check_same("logits", &x, &out)?;
    check_same("output", &out, &x)?;
    let k = x.ncols();
    let (Some(xs), Some(os)) = (x.as_slice(), out.as_slice_mut()) else {
        return Err(KernelError::Layout("logits"));
    };
    if k == 0 {
        return Ok(());
    }
    let streamed = streams::<F>(os.len()) && form == Form::Probs;
    let rows = |x: &[F], o: &mut [F]| match form {
        Form::Probs if streamed => {
            let mut buf = Vec::new();
            F::softmax_rows_streamed(x, k, inv_t, scratch_row(&mut buf, k), o)
        }
        Form::Probs => F::softmax_rows(x, k, inv_t, o),
        Form::LogProbs => F::log_softmax_rows(x, k, inv_t, o),
    };
    match exec {
        Exec::Inline => rows(xs, os),
        Exec::Pool => {
            // Whole rows per task, enough of them that a task outweighs its
            // scheduling and the row-to-row pipelining has rows to run on.
            let block = (POOL_BLOCK_VALUES / k).max(1) * k;
            xs.par_chunks(block)
                .zip(os.par_chunks_mut(block))
                .for_each(|(x, o)| rows(x, o));
        }
    }
    Ok(())
}

/// Values per pool task of the row-block forward (64 K: 256 KiB of f32).
const POOL_BLOCK_VALUES: usize = 1 << 16;

/// Softmax of each `k`-value row of `x`, one [`Element::softmax_row`] at a
/// time: the default of [`Element::softmax_rows`].
pub(crate) fn softmax_rows_by_row<F: Element>(x: &[F], k: usize, inv_t: F, out: &mut [F]) {
    if k > 0 {
        for (x, o) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
            F::softmax_row(x, inv_t, o);
        }
    }
}

/// As [`softmax_rows_by_row`] for log-softmax.
pub(crate) fn log_softmax_rows_by_row<F: Element>(x: &[F], k: usize, inv_t: F, out: &mut [F]) {
    if k > 0 {
        for (x, o) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
            F::log_softmax_row(x, inv_t, o);
        }
    }
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
) {
    if k > 0 {
        let e = e.get_mut(..k).unwrap_or_default();
        for (x, o) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
            softmax_row_streamed_by_parts(x, inv_t, e, o);
        }
    }
}

/// One row of [`softmax_rows_streamed_by_row`].
fn softmax_row_streamed_by_parts<F: Element>(x: &[F], inv_t: F, e: &mut [F], out: &mut [F]) {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        out.fill(F::zero());
        return;
    }
    let sum = F::exp_shifted(x, m, inv_t, e);
    F::scaled_stream(e, F::of(1.0 / sum), out);
}

/// One row of softmax: max, then exp and sum, then scale, each pass over a
/// row that stays in cache. `Element::softmax_row` runs this, or the same
/// passes fused into one SIMD call.
pub(crate) fn softmax_row_by_parts<F: Element>(x: &[F], inv_t: F, out: &mut [F]) {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        out.fill(F::zero());
        return;
    }
    let sum = F::exp_shifted(x, m, inv_t, out);
    F::scale(out, F::of(1.0 / sum));
}

/// One row of log-softmax, as `(x - m)·inv_t - log Σ exp(...)`, never `log(s)`.
pub(crate) fn log_softmax_row_by_parts<F: Element>(x: &[F], inv_t: F, out: &mut [F]) {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        out.fill(F::neg_infinity());
        return;
    }
    let lse = F::of(F::sum_exp_shifted(x, m, inv_t).ln());
    F::log_shifted(x, m, inv_t, lse, out);
}
