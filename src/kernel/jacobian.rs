//! The full Jacobian, one `[k, k]` matrix per row: output-bound, so each
//! matrix row is written in one streaming pass.

use super::{check_layout, for_rows, scratch_row, streams, Element, Exec, Form, KernelError};
use ndarray::{ArrayView2, ArrayViewMut3, Axis, Zip};

/// `out[r, i, j] = ∂s_i/∂x_j = (1/T)(δ_ij s_i - s_i s_j)` for each row `r` of
/// `s`; with `Form::LogProbs`, `s` holds log-probabilities and
/// `out[r, i, j] = ∂ log s_i/∂x_j = (1/T)(δ_ij - s_j)`. A fully masked row
/// gives a zero matrix.
pub fn jacobian<F: Element>(
    s: ArrayView2<'_, F>,
    mut out: ArrayViewMut3<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<(), KernelError> {
    check_out(&s, &out)?;
    let stream = streams::<F>(out.len());
    let zip = Zip::from(s.rows()).and(out.axis_iter_mut(Axis(0)));
    for_rows!(exec, zip, |s, mut o| {
        if let (Some(s), Some(o)) = (s.as_slice(), o.as_slice_mut()) {
            match form {
                Form::Probs => probs_matrix(s, inv_t, o, stream),
                Form::LogProbs => log_matrix(s, inv_t, o),
            }
        }
    });
    Ok(())
}

/// As [`jacobian`], computing `s` from the logits `x` first (into a scratch
/// row per call, k values, not k² ones).
pub fn jacobian_from_logits<F: Element>(
    x: ArrayView2<'_, F>,
    mut out: ArrayViewMut3<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<(), KernelError> {
    check_out(&x, &out)?;
    let stream = streams::<F>(out.len());
    let zip = Zip::from(x.rows()).and(out.axis_iter_mut(Axis(0)));
    for_rows!(exec, zip, |x, mut o| {
        if let (Some(x), Some(o)) = (x.as_slice(), o.as_slice_mut()) {
            // The last matrix row is overwritten last, so it can hold s.
            let k = x.len();
            let split = o.len().saturating_sub(k);
            let (head, tail) = o.split_at_mut(split);
            // The caller has rejected NaN and +inf (this entry point does
            // not screen), so the row's own screen is not needed.
            let _ = match form {
                Form::Probs => F::softmax_row(x, inv_t, tail),
                Form::LogProbs => F::log_softmax_row(x, inv_t, tail),
            };
            fill_from_last(head, tail, inv_t, form, stream);
        }
    });
    Ok(())
}

fn check_out<F>(s: &ArrayView2<'_, F>, out: &ArrayViewMut3<'_, F>) -> Result<(), KernelError> {
    check_layout("input", s)?;
    check_layout("jacobian", out)?;
    let (rows, k) = s.dim();
    if out.dim() != (rows, k, k) {
        return Err(KernelError::Shape {
            what: "jacobian",
            got: out.shape().to_vec(),
            want: vec![rows, k, k],
        });
    }
    Ok(())
}

fn probs_matrix<F: Element>(s: &[F], inv_t: F, out: &mut [F], stream: bool) {
    let k = s.len();
    let mut rows = Rows::new(stream);
    for (i, (row, &si)) in out.chunks_exact_mut(k.max(1)).zip(s).enumerate() {
        rows.put(s, -inv_t * si, i, inv_t * si, row);
    }
}

/// Writes matrix rows `a · base + d · e_i`: in place, or, for outputs too
/// large for the cache, built in a scratch row and streamed past the cache
/// (so memory sees only the writes, as with a memset).
struct Rows<F> {
    scratch: Option<Vec<F>>,
}

impl<F: Element> Rows<F> {
    fn new(stream: bool) -> Self {
        Self {
            scratch: stream.then(Vec::new),
        }
    }

    fn put(&mut self, base: &[F], a: F, i: usize, d: F, row: &mut [F]) {
        match &mut self.scratch {
            None => {
                F::scaled(base, a, row);
                if let Some(v) = row.get_mut(i) {
                    *v = *v + d;
                }
            }
            Some(buf) => {
                let buf = scratch_row(buf, base.len());
                F::scaled(base, a, buf);
                if let Some(v) = buf.get_mut(i) {
                    *v = *v + d;
                }
                F::scaled_stream(buf, F::one(), row);
            }
        }
    }
}

fn log_matrix<F: Element>(l: &[F], inv_t: F, out: &mut [F]) {
    let k = l.len();
    if F::row_max(l) == F::neg_infinity() {
        out.fill(F::zero());
        return;
    }
    let mut rows = out.chunks_exact_mut(k.max(1));
    if let Some(first) = rows.next() {
        F::scaled_exp(l, -inv_t, first);
        let first: &[F] = first;
        for row in rows {
            row.copy_from_slice(first);
        }
    }
    for (i, row) in out.chunks_exact_mut(k.max(1)).enumerate() {
        if let Some(d) = row.get_mut(i) {
            *d = *d + inv_t;
        }
    }
}

/// Fills the matrix whose last row `tail` holds `s` (or log `s`): rows
/// `0..k-1` into `head`, then the last row in place.
fn fill_from_last<F: Element>(head: &mut [F], tail: &mut [F], inv_t: F, form: Form, stream: bool) {
    let k = tail.len();
    match form {
        Form::Probs => {
            let mut rows = Rows::new(stream);
            for (i, (row, &si)) in head.chunks_exact_mut(k.max(1)).zip(tail.iter()).enumerate() {
                rows.put(tail, -inv_t * si, i, inv_t * si, row);
            }
            let last = k.saturating_sub(1);
            if let Some(&sl) = tail.get(last) {
                F::scale(tail, -inv_t * sl);
                if let Some(d) = tail.get_mut(last) {
                    *d = *d + inv_t * sl;
                }
            }
        }
        Form::LogProbs => {
            if F::row_max(tail) == F::neg_infinity() {
                head.fill(F::zero());
                tail.fill(F::zero());
                return;
            }
            for v in tail.iter_mut() {
                *v = -inv_t * v.exp();
            }
            let t: &[F] = tail;
            for (i, row) in head.chunks_exact_mut(k.max(1)).enumerate() {
                row.copy_from_slice(t);
                if let Some(d) = row.get_mut(i) {
                    *d = *d + inv_t;
                }
            }
            let last = k.saturating_sub(1);
            if let Some(d) = tail.get_mut(last) {
                *d = *d + inv_t;
            }
        }
    }
}
