//! Fused cross-entropy: loss `-Σ y_i log s_i` and gradient `(1/T)(s Σy - y)`
//! from the logits in one call, never materialising `log s`.

use super::forward::{clean_sum, masked_row_clean};
use super::{check_layout, check_same, Element, Exec, KernelError, Screen, Screened};
use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// What each row's cross-entropy is taken against.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a, F> {
    /// One class index per row (callers check each is below k).
    Labels(&'a [u32]),
    /// A non-negative distribution per row, same shape as the logits.
    Dist(ArrayView2<'a, F>),
}

/// Writes the loss of each row into `loss` and the gradient into `grad`.
///
/// A fully masked row (all logits `-inf`) contributes loss 0 and gradient 0,
/// like padding. A target with mass on a masked entry gives loss `+inf`.
/// The logits are screened as [`super::forward`] screens them (`Suspect`
/// exactly when one is NaN or `+inf`); the target is not.
pub fn cross_entropy<F: Element>(
    x: ArrayView2<'_, F>,
    target: Target<'_, F>,
    mut loss: ArrayViewMut1<'_, F>,
    mut grad: ArrayViewMut2<'_, F>,
    inv_t: F,
    exec: Exec,
) -> Result<Screened, KernelError> {
    check_same("logits", &x, &grad)?;
    check_same("grad_logits", &grad, &x)?;
    check_layout("loss", &loss)?;
    let rows = x.nrows();
    if loss.len() != rows {
        return Err(KernelError::Shape {
            what: "loss",
            got: vec![loss.len()],
            want: vec![rows],
        });
    }
    let screen = Screen::new();
    match target {
        Target::Labels(labels) => {
            if labels.len() != rows {
                return Err(KernelError::Labels {
                    got: labels.len(),
                    rows,
                });
            }
            let labels = ndarray::ArrayView1::from(labels);
            let zip = Zip::from(x.rows())
                .and(grad.rows_mut())
                .and(&mut loss)
                .and(&labels);
            super::for_rows!(exec, zip, |x, mut g, l: &mut F, &c: &u32| {
                if let (Some(x), Some(g)) = (x.as_slice(), g.as_slice_mut()) {
                    let (loss, clean) = label_row(x, c as usize, inv_t, g);
                    *l = loss;
                    screen.row(clean);
                }
            });
        }
        Target::Dist(y) => {
            check_same("target", &y, &x)?;
            let zip = Zip::from(x.rows())
                .and(y.rows())
                .and(grad.rows_mut())
                .and(&mut loss);
            super::for_rows!(exec, zip, |x, y, mut g, l: &mut F| {
                if let (Some(x), Some(y), Some(g)) = (x.as_slice(), y.as_slice(), g.as_slice_mut())
                {
                    let (loss, clean) = dist_row(x, y, inv_t, g);
                    *l = loss;
                    screen.row(clean);
                }
            });
        }
    }
    Ok(screen.verdict())
}

/// Shift and log-normaliser of a row (`None` when it is fully masked), and
/// whether the row held no NaN or `+inf`.
fn log_normaliser<F: Element>(x: &[F], inv_t: F, s: &mut [F]) -> (Option<(F, f64)>, bool) {
    let m = F::row_max(x);
    if m == F::neg_infinity() {
        s.fill(F::zero());
        return (None, masked_row_clean(x));
    }
    let sum = F::exp_shifted(x, m, inv_t, s);
    F::scale(s, F::of(1.0 / sum));
    (Some((m, sum.ln())), clean_sum(sum))
}

/// A row's loss against class `c`, and whether its logits were clean.
fn label_row<F: Element>(x: &[F], c: usize, inv_t: F, g: &mut [F]) -> (F, bool) {
    let (normaliser, clean) = log_normaliser(x, inv_t, g);
    let Some((m, lse)) = normaliser else {
        return (F::zero(), clean);
    };
    F::scale(g, inv_t);
    if let Some(gc) = g.get_mut(c) {
        *gc = *gc - inv_t;
    }
    let xc = x.get(c).copied().unwrap_or_else(F::neg_infinity);
    // -log s_c = lse - (x_c - m)/T, +inf when c is masked.
    let loss = F::of(lse - ((xc - m) * inv_t).to_f64().unwrap_or(f64::NEG_INFINITY));
    (loss, clean)
}

/// A row's loss against the distribution `y`, and whether its logits were
/// clean.
fn dist_row<F: Element>(x: &[F], y: &[F], inv_t: F, g: &mut [F]) -> (F, bool) {
    let (normaliser, clean) = log_normaliser(x, inv_t, g);
    let Some((m, lse)) = normaliser else {
        return (F::zero(), clean);
    };
    let mut loss = 0.0f64;
    let mut mass = 0.0f64;
    for (&xi, &yi) in x.iter().zip(y) {
        let yi = yi.to_f64().unwrap_or(0.0);
        if yi > 0.0 {
            let z = ((xi - m) * inv_t).to_f64().unwrap_or(f64::NEG_INFINITY);
            loss += yi * (lse - z);
            mass += yi;
        }
    }
    let mass = F::of(mass);
    for (gi, &yi) in g.iter_mut().zip(y) {
        *gi = inv_t * (*gi * mass - yi);
    }
    (F::of(loss), clean)
}
