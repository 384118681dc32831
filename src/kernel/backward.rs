//! Backward pass: the vector-Jacobian product, O(k) per row, never forming J.

use super::{check_same, for_rows, Element, Exec, Form, KernelError};
use ndarray::{ArrayView2, ArrayViewMut2, Zip};

/// `out = (1/T) s (g - ⟨g, s⟩)` per row, from the forward output `s`
/// (probabilities, or log-probabilities for `Form::LogProbs`, where the rule
/// is `(1/T)(g - s Σg)`).
pub fn backward<F: Element>(
    s: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    mut out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<(), KernelError> {
    check_same("output", &s, &out)?;
    check_same("grad_output", &g, &s)?;
    check_same("grad_logits", &out, &s)?;
    let zip = Zip::from(s.rows()).and(g.rows()).and(out.rows_mut());
    for_rows!(exec, zip, |s, g, mut o| {
        if let (Some(s), Some(g), Some(o)) = (s.as_slice(), g.as_slice(), o.as_slice_mut()) {
            match form {
                Form::Probs => {
                    let d = F::of(F::dot(g, s));
                    F::vjp(s, g, d, inv_t, o);
                }
                Form::LogProbs => log_vjp_row(s, g, inv_t, o),
            }
        }
    });
    Ok(())
}

/// As [`backward`], recomputing `s` from the logits `x` into `out` first.
pub fn backward_from_logits<F: Element>(
    x: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    mut out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<(), KernelError> {
    check_same("logits", &x, &out)?;
    check_same("grad_output", &g, &x)?;
    check_same("grad_logits", &out, &x)?;
    let zip = Zip::from(x.rows()).and(g.rows()).and(out.rows_mut());
    for_rows!(exec, zip, |x, g, mut o| {
        if let (Some(x), Some(g), Some(o)) = (x.as_slice(), g.as_slice(), o.as_slice_mut()) {
            match form {
                Form::Probs => {
                    F::softmax_row(x, inv_t, o);
                    let d = F::of(F::dot(g, o));
                    F::vjp_in_place(o, g, d, inv_t);
                }
                Form::LogProbs => {
                    // The log-softmax rule only needs s Σg; s = exp(log s).
                    F::log_softmax_row(x, inv_t, o);
                    if F::row_max(o) == F::neg_infinity() {
                        o.fill(F::zero());
                    } else {
                        let sg = F::of(F::sum(g));
                        F::log_vjp_in_place(o, g, sg, inv_t);
                    }
                }
            }
        }
    });
    Ok(())
}

/// A fully masked row (all log-probabilities `-inf`) passes no gradient, as
/// in the "safe softmax" of JAX and PyTorch attention.
fn log_vjp_row<F: Element>(l: &[F], g: &[F], inv_t: F, out: &mut [F]) {
    if F::row_max(l) == F::neg_infinity() {
        out.fill(F::zero());
        return;
    }
    let sg = F::of(F::sum(g));
    F::log_vjp(l, g, sg, inv_t, out);
}
