//! The full Jacobian from `s` and from the logits: against the definition,
//! central finite differences, and its identities (columns sum to 0,
//! symmetry, `gᵀJ` equals Backward).

mod common;

use common::*;
use ndarray::{array, Array2, Array3, Axis};
use proptest::prelude::*;
use softmaxd::kernel::{self, Element, Exec, Form, KernelError};

fn tol<F: Element>() -> f64 {
    if is_f32::<F>() {
        1e-5
    } else {
        1e-12
    }
}

fn check<F: Element>(x: &Array2<f64>, inv_t: f64) {
    for form in FORMS {
        for exec in EXECS {
            let a = jacobian::<F>(x, inv_t, form, exec);
            let b = jacobian_from_logits::<F>(x, inv_t, form, exec);
            for (r, xr) in rows(x).enumerate() {
                let want: Vec<f64> = jacobian_row(&xr, inv_t, form).concat();
                let what = format!("{form:?} {exec:?} row {r}");
                let got_a = a.index_axis(Axis(0), r).iter().copied().collect::<Vec<_>>();
                let got_b = b.index_axis(Axis(0), r).iter().copied().collect::<Vec<_>>();
                assert_close(
                    &format!("from s, {what}"),
                    &got_a,
                    &want,
                    tol::<F>(),
                    None,
                    inv_t,
                );
                assert_close(
                    &format!("from logits, {what}"),
                    &got_b,
                    &want,
                    tol::<F>(),
                    None,
                    inv_t,
                );
            }
        }
    }
}

fn matrix(j: &Array3<f64>, r: usize) -> Array2<f64> {
    j.index_axis(Axis(0), r).to_owned()
}

proptest! {
    #[test]
    fn matches_reference_f32(x in logits(3, 20, true), inv_t in inv_t_strategy()) {
        check::<f32>(&x, inv_t);
    }

    #[test]
    fn matches_reference_f64(x in logits(3, 20, true), inv_t in inv_t_strategy()) {
        check::<f64>(&x, inv_t);
    }

    #[test]
    fn matches_finite_differences(x in logits(2, 8, false), inv_t in inv_t_strategy()) {
        let h = 1e-5;
        for form in FORMS {
            let j = jacobian_from_logits::<f64>(&x, inv_t, form, Exec::Inline);
            for (r, xr) in rows(&x).enumerate() {
                // Shift to max 0 so that h is not lost in a 1e4 offset.
                let m = xr.iter().fold(f64::MIN, |m, &v| m.max(v));
                let xr: Vec<f64> = xr.iter().map(|v| v - m).collect();
                let k = xr.len();
                for c in 0..k {
                    let mut up = xr.clone();
                    let mut down = xr.clone();
                    up[c] += h;
                    down[c] -= h;
                    let (fu, fd) = (forward_row(&up, inv_t, form), forward_row(&down, inv_t, form));
                    for i in 0..k {
                        let want = (fu[i] - fd[i]) / (2.0 * h);
                        let got = j[[r, i, c]];
                        prop_assert!((got - want).abs() <= 1e-7 * (1.0 + inv_t.powi(3)),
                            "{form:?} J[{i}][{c}] = {got}, finite difference {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn columns_sum_to_zero_and_matrix_is_symmetric(x in logits(3, 30, true), inv_t in inv_t_strategy()) {
        for exec in EXECS {
            let j32 = jacobian_from_logits::<f32>(&x, inv_t, Form::Probs, exec);
            let j64 = jacobian::<f64>(&x, inv_t, Form::Probs, exec);
            for r in 0..x.nrows() {
                for (j, bound) in [(matrix(&j32, r), 1e-6), (matrix(&j64, r), 1e-14)] {
                    for col in j.columns() {
                        prop_assert!(sum(col.iter().copied()).abs() <= bound * inv_t, "column sum of {j:?}");
                    }
                    let asym = (&j - &j.t()).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    prop_assert!(asym <= bound * inv_t, "not symmetric: {j:?}");
                }
            }
        }
    }

    #[test]
    fn log_rows_sum_to_zero(x in logits(3, 30, false), inv_t in inv_t_strategy()) {
        // log-softmax is shift-invariant: Σ_j ∂ log s_i/∂x_j = 0.
        let j = jacobian_from_logits::<f64>(&x, inv_t, Form::LogProbs, Exec::Inline);
        for r in 0..x.nrows() {
            for row in matrix(&j, r).rows() {
                prop_assert!(sum(row.iter().copied()).abs() <= 1e-14 * inv_t);
            }
        }
    }

    #[test]
    fn vjp_equals_backward((x, g) in logits_and_grads(3, 20, true), inv_t in inv_t_strategy()) {
        for form in FORMS {
            let j = jacobian_from_logits::<f64>(&x, inv_t, form, Exec::Inline);
            let b = backward_from_logits::<f64>(&x, &g, inv_t, form, Exec::Inline);
            for r in 0..x.nrows() {
                let vjp = g.row(r).dot(&matrix(&j, r));
                let scale = inv_t * (1.0 + g.row(r).iter().map(|v| v.abs()).sum::<f64>());
                assert_close(&format!("{form:?}"), &vjp.to_vec(), &b.row(r).to_vec(), 1e-13, None, scale);
            }
        }
    }
}

#[test]
fn masked_rows_give_zero_matrices() {
    let x = array![[NEG_INF, NEG_INF], [NEG_INF, 0.0]];
    for form in FORMS {
        for exec in EXECS {
            let a = jacobian::<f32>(&x, 1.5, form, exec);
            let b = jacobian_from_logits::<f64>(&x, 1.5, form, exec);
            assert_eq!(
                matrix(&a, 0),
                Array2::<f64>::zeros((2, 2)),
                "{form:?} {exec:?}"
            );
            assert_eq!(
                matrix(&b, 0),
                Array2::<f64>::zeros((2, 2)),
                "{form:?} {exec:?}"
            );
        }
    }
    // Softmax: the masked entry has s = 0, so its row and column are 0; the
    // other entry has s = 1 and 1 - 1·1 = 0 as well.
    let j = jacobian_from_logits::<f64>(&x, 1.5, Form::Probs, Exec::Inline);
    assert_eq!(matrix(&j, 1), Array2::<f64>::zeros((2, 2)));
    check::<f32>(&x, 1.5);
    check::<f64>(&x, 1.5);
}

#[test]
fn k_one_is_zero() {
    let x = array![[42.0], [-1e4]];
    for form in FORMS {
        assert_eq!(
            jacobian::<f32>(&x, 0.3, form, Exec::Inline),
            Array3::<f64>::zeros((2, 1, 1))
        );
        assert_eq!(
            jacobian_from_logits::<f64>(&x, 0.3, form, Exec::Pool),
            Array3::<f64>::zeros((2, 1, 1))
        );
    }
}

#[test]
fn offsets_and_pool_agree() {
    let (r, k) = (16, 100);
    for off in [-1e4, 0.0, 1e4] {
        let x = Array2::from_shape_vec((r, k), spread(r * k, 3, off - 20.0, off + 20.0))
            .unwrap_or_default();
        check::<f32>(&x, 0.8);
        for form in FORMS {
            assert_eq!(
                jacobian_from_logits::<f32>(&x, 0.8, form, Exec::Inline),
                jacobian_from_logits::<f32>(&x, 0.8, form, Exec::Pool)
            );
        }
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let s = Array2::<f32>::zeros((2, 3));
    let mut out = Array3::<f32>::zeros((2, 3, 2));
    let err = kernel::jacobian(s.view(), out.view_mut(), 1.0, Form::Probs, Exec::Inline);
    assert!(
        matches!(
            err,
            Err(KernelError::Shape {
                what: "jacobian",
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn matrices_too_large_for_the_cache_are_streamed_and_still_exact() {
    // 9 × 1000² f32 values = 36 MB: above the kernel's streaming threshold
    // (32 MiB), with matrix rows starting at every alignment.
    let x = Array2::from_shape_fn((9, 1000), |(r, j)| {
        ((r * 7 + j * 13) % 101) as f64 * 0.05 - 2.0
    });
    check::<f32>(&x, 1.0);
}
