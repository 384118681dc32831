//! Backward pass: the vector-Jacobian product, O(k) per row, never forming J.

use super::{check_same, for_rows, Element, Exec, Form, KernelError, Screen, Screened};
use ndarray::{ArrayView2, ArrayViewMut2, Zip};

/// `out = (1/T) s (g - ⟨g, s⟩)` per row, from the forward output `s`
/// (probabilities, or log-probabilities for `Form::LogProbs`, where the rule
/// is `(1/T)(g - s Σg)`).
///
/// Screens `s` and `g` by the row's `⟨g, s⟩`: a NaN or infinity in either
/// makes it NaN or infinite (so can an overflowing product of finite values:
/// `Suspect` only asks the caller to look). Log-probabilities are not
/// screened (`Suspect`).
pub fn backward<F: Element>(
    s: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    mut out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<Screened, KernelError> {
    check_same("output", &s, &out)?;
    check_same("grad_output", &g, &s)?;
    check_same("grad_logits", &out, &s)?;
    let screen = Screen::new();
    let zip = Zip::from(s.rows()).and(g.rows()).and(out.rows_mut());
    for_rows!(exec, zip, |s, g, mut o| {
        if let (Some(s), Some(g), Some(o)) = (s.as_slice(), g.as_slice(), o.as_slice_mut()) {
            match form {
                Form::Probs => {
                    let d = F::dot(g, s);
                    F::vjp(s, g, F::of(d), inv_t, o);
                    screen.row(d.is_finite());
                }
                Form::LogProbs => {
                    log_vjp_row(s, g, inv_t, o);
                    screen.row(false);
                }
            }
        }
    });
    Ok(screen.verdict())
}

/// As [`backward`], recomputing `s` from the logits `x` into `out` first.
///
/// Screens `x` as [`super::forward`] does, and `g` by `⟨g, s⟩` (softmax;
/// `s` is a probability, so only a NaN or infinity in `g` makes it
/// non-finite) or `Σg` (log-softmax).
pub fn backward_from_logits<F: Element>(
    x: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    mut out: ArrayViewMut2<'_, F>,
    inv_t: F,
    form: Form,
    exec: Exec,
) -> Result<Screened, KernelError> {
    check_same("logits", &x, &out)?;
    check_same("grad_output", &g, &x)?;
    check_same("grad_logits", &out, &x)?;
    let screen = Screen::new();
    let zip = Zip::from(x.rows()).and(g.rows()).and(out.rows_mut());
    for_rows!(exec, zip, |x, g, mut o| {
        if let (Some(x), Some(g), Some(o)) = (x.as_slice(), g.as_slice(), o.as_slice_mut()) {
            match form {
                Form::Probs => {
                    let clean = F::softmax_row(x, inv_t, o);
                    let d = F::dot(g, o);
                    F::vjp_in_place(o, g, F::of(d), inv_t);
                    screen.row(clean && d.is_finite());
                }
                Form::LogProbs => {
                    // The log-softmax rule only needs s Σg; s = exp(log s).
                    let clean = F::log_softmax_row(x, inv_t, o);
                    let sg = F::sum(g);
                    if F::row_max(o) == F::neg_infinity() {
                        o.fill(F::zero());
                    } else {
                        F::log_vjp_in_place(o, g, F::of(sg), inv_t);
                    }
                    screen.row(clean && sg.is_finite());
                }
            }
        }
    });
    Ok(screen.verdict())
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
