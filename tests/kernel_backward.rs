//! Backward (the VJP) from `s` and from the logits: against `gᵀJ` built from
//! the definition, against central finite differences, and the identities of
//! DESIGN.md §2.

mod common;

use common::*;
use ndarray::{array, Array2};
use proptest::prelude::*;
use softmaxd::kernel::{self, Element, Exec, Form, KernelError};

fn tol<F: Element>() -> f64 {
    if is_f32::<F>() {
        1e-5
    } else {
        1e-12
    }
}

fn check<F: Element>(x: &Array2<f64>, g: &Array2<f64>, inv_t: f64) {
    for form in FORMS {
        for exec in EXECS {
            let a = backward::<F>(x, g, inv_t, form, exec);
            let b = backward_from_logits::<F>(x, g, inv_t, form, exec);
            for (r, ((xr, gr), (ar, br))) in
                rows(x).zip(rows(g)).zip(rows(&a).zip(rows(&b))).enumerate()
            {
                let want = backward_row(&xr, &gr, inv_t, form);
                let scale = inv_t * (1.0 + gr.iter().map(|v| v.abs()).sum::<f64>());
                let what = format!("{form:?} {exec:?} row {r}");
                assert_close(
                    &format!("from s, {what}"),
                    &ar,
                    &want,
                    tol::<F>(),
                    None,
                    scale,
                );
                assert_close(
                    &format!("from logits, {what}"),
                    &br,
                    &want,
                    tol::<F>(),
                    None,
                    scale,
                );
            }
        }
    }
}

/// Central differences of `e(x) = Σ g_i f_i(x)` in f64, row by row.
fn finite_difference(x: &[f64], g: &[f64], inv_t: f64, form: Form) -> Vec<f64> {
    let h = 1e-5;
    let e = |x: &[f64]| {
        sum(forward_row(x, inv_t, form)
            .iter()
            .zip(g)
            .map(|(f, g)| f * g))
    };
    (0..x.len())
        .map(|j| {
            let mut up = x.to_vec();
            let mut down = x.to_vec();
            up[j] += h;
            down[j] -= h;
            (e(&up) - e(&down)) / (2.0 * h)
        })
        .collect()
}

proptest! {
    #[test]
    fn matches_reference_f32((x, g) in logits_and_grads(3, 24, true), inv_t in inv_t_strategy()) {
        check::<f32>(&x, &g, inv_t);
    }

    #[test]
    fn matches_reference_f64((x, g) in logits_and_grads(3, 24, true), inv_t in inv_t_strategy()) {
        check::<f64>(&x, &g, inv_t);
    }

    #[test]
    fn matches_finite_differences((x, g) in logits_and_grads(3, 10, false), inv_t in inv_t_strategy()) {
        // Shift each row to max 0 so that the step h is not lost in a 1e4 offset.
        let x = Array2::from_shape_fn(x.dim(), |(r, c)| x[[r, c]] - x.row(r).fold(f64::MIN, |m, &v| m.max(v)));
        for form in FORMS {
            let got = backward_from_logits::<f64>(&x, &g, inv_t, form, Exec::Inline);
            for ((xr, gr), gotr) in rows(&x).zip(rows(&g)).zip(rows(&got)) {
                let fd = finite_difference(&xr, &gr, inv_t, form);
                assert_close(&format!("{form:?} vs finite differences"), &gotr, &fd, 1e-7, None, 1.0 + inv_t.powi(3));
            }
        }
    }

    #[test]
    fn uniform_upstream_gradient_passes_nothing(x in logits(3, 50, true), c in -3.0f64..3.0, inv_t in inv_t_strategy()) {
        // Columns of J sum to 0, so g = c·1 gives a zero gradient.
        let g = Array2::from_elem(x.dim(), f32_exact(c));
        for exec in EXECS {
            let got = backward::<f32>(&x, &g, inv_t, Form::Probs, exec);
            prop_assert!(got.iter().all(|v| v.abs() <= 1e-6 * inv_t * (1.0 + c.abs())), "{got:?}");
            let got = backward_from_logits::<f64>(&x, &g, inv_t, Form::Probs, exec);
            prop_assert!(got.iter().all(|v| v.abs() <= 1e-14 * inv_t * (1.0 + c.abs())), "{got:?}");
        }
    }

    #[test]
    fn gradients_sum_to_zero((x, g) in logits_and_grads(3, 50, false), inv_t in inv_t_strategy()) {
        // Both functions are shift-invariant, so Σ_j ∂e/∂x_j = 0.
        for form in FORMS {
            let got = backward_from_logits::<f64>(&x, &g, inv_t, form, Exec::Inline);
            for (r, gr) in rows(&got).zip(rows(&g)) {
                let bound = 1e-12 * inv_t * (1.0 + gr.iter().map(|v| v.abs()).sum::<f64>());
                prop_assert!(sum(r.iter().copied()).abs() <= bound, "{form:?}: {r:?}");
            }
        }
    }
}

#[test]
fn fully_masked_rows_pass_no_gradient() {
    let x = array![[NEG_INF, NEG_INF, NEG_INF], [0.0, NEG_INF, 1.0]];
    let g = array![[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]];
    for form in FORMS {
        for exec in EXECS {
            let a = backward::<f32>(&x, &g, 2.0, form, exec);
            let b = backward_from_logits::<f64>(&x, &g, 2.0, form, exec);
            assert_eq!(a.row(0).to_vec(), vec![0.0; 3], "{form:?} {exec:?}");
            assert_eq!(b.row(0).to_vec(), vec![0.0; 3], "{form:?} {exec:?}");
        }
    }
    check::<f32>(&x, &g, 2.0);
    check::<f64>(&x, &g, 2.0);
}

#[test]
fn k_one_has_zero_gradient() {
    let x = array![[5.0], [-1e4]];
    let g = array![[3.0], [-7.0]];
    for form in FORMS {
        assert_eq!(
            backward::<f32>(&x, &g, 0.5, form, Exec::Inline),
            array![[0.0], [0.0]]
        );
        assert_eq!(
            backward_from_logits::<f64>(&x, &g, 0.5, form, Exec::Pool),
            array![[0.0], [0.0]]
        );
    }
}

#[test]
fn long_rows_match_reference() {
    // O(k) formula for the reference here: gᵀJ would be k².
    let k = 20_000;
    let x =
        Array2::from_shape_vec((2, k), spread(2 * k, 11, -1e4 - 40.0, -1e4)).unwrap_or_default();
    let g = Array2::from_shape_vec((2, k), spread(2 * k, 12, -1.0, 1.0)).unwrap_or_default();
    let inv_t = f32_exact(1.0 / 1.7);
    for exec in EXECS {
        let got32 = backward_from_logits::<f32>(&x, &g, inv_t, Form::Probs, exec);
        let got64 = backward::<f64>(&x, &g, inv_t, Form::Probs, exec);
        for ((xr, gr), (a, b)) in rows(&x).zip(rows(&g)).zip(rows(&got32).zip(rows(&got64))) {
            let s = softmax(&xr, inv_t);
            let d = sum(s.iter().zip(&gr).map(|(s, g)| s * g));
            let want: Vec<f64> = s
                .iter()
                .zip(&gr)
                .map(|(s, g)| inv_t * s * (g - d))
                .collect();
            assert_close("f32", &a, &want, 2e-6, None, inv_t);
            assert_close("f64", &b, &want, 1e-12, None, inv_t);
        }
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let s = Array2::<f64>::zeros((2, 3));
    let g = Array2::<f64>::zeros((2, 4));
    let mut out = Array2::<f64>::zeros((2, 3));
    let err = kernel::backward(
        s.view(),
        g.view(),
        out.view_mut(),
        1.0,
        Form::Probs,
        Exec::Inline,
    );
    assert!(
        matches!(
            err,
            Err(KernelError::Shape {
                what: "grad_output",
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn nan_and_infinities_make_the_call_suspect() {
    check_backward_screens();
}
