//! Fused cross-entropy against labels and distributions: loss and gradient
//! against the f64 reference and finite differences, `(s − y)/T` when y sums
//! to 1, zero gradient at s = y, masks and padding rows.

mod common;

use common::*;
use ndarray::{array, Array1, Array2};
use proptest::prelude::*;
use softmaxd::kernel::{self, Element, Exec, Form, KernelError, Target};

fn tol<F: Element>() -> f64 {
    if is_f32::<F>() {
        1e-5
    } else {
        1e-12
    }
}

/// Logits with a target distribution that puts no mass on masked entries,
/// normalised to 1 or not.
fn logits_and_targets() -> impl Strategy<Value = (Array2<f64>, Array2<f64>)> {
    logits(3, 30, true).prop_flat_map(|x| {
        let (r, k) = x.dim();
        let y = proptest::collection::vec(prop_oneof![Just(0.0), 0.0f64..1.0], r * k);
        (Just(x), y, any::<bool>()).prop_map(move |(x, y, normalise)| {
            let mut y = Array2::from_shape_vec((r, k), y).unwrap_or_default();
            y.zip_mut_with(&x, |yi, &xi| {
                if xi == NEG_INF {
                    *yi = 0.0;
                }
            });
            if normalise {
                for mut row in y.rows_mut() {
                    let total = row.sum();
                    if total > 0.0 {
                        row.mapv_inplace(|v| v / total);
                    }
                }
            }
            (x, y.mapv(f32_exact))
        })
    })
}

fn check_dist<F: Element>(x: &Array2<f64>, y: &Array2<f64>, inv_t: f64) {
    for exec in EXECS {
        let (loss, grad) = cross_entropy_dist::<F>(x, y, inv_t, exec);
        for (r, ((xr, yr), gr)) in rows(x).zip(rows(y)).zip(rows(&grad)).enumerate() {
            let (want_loss, want_grad) = cross_entropy_row(&xr, &yr, inv_t);
            let mass: f64 = yr.iter().sum();
            assert_close(
                &format!("loss {exec:?} row {r}"),
                &[loss[r]],
                &[want_loss],
                tol::<F>(),
                None,
                want_loss.abs().max(1.0),
            );
            assert_close(
                &format!("grad {exec:?} row {r}"),
                &gr,
                &want_grad,
                tol::<F>(),
                None,
                inv_t * (1.0 + mass),
            );
        }
    }
}

fn check_labels<F: Element>(x: &Array2<f64>, labels: &[u32], inv_t: f64) {
    for exec in EXECS {
        let (loss, grad) = cross_entropy_labels::<F>(x, labels, inv_t, exec);
        for (r, (xr, gr)) in rows(x).zip(rows(&grad)).enumerate() {
            let y = one_hot(xr.len(), labels[r] as usize);
            let (want_loss, want_grad) = cross_entropy_row(&xr, &y, inv_t);
            assert_close(
                &format!("loss {exec:?} row {r}"),
                &[loss[r]],
                &[want_loss],
                tol::<F>(),
                None,
                want_loss.abs().max(1.0),
            );
            assert_close(
                &format!("grad {exec:?} row {r}"),
                &gr,
                &want_grad,
                tol::<F>(),
                None,
                inv_t * 2.0,
            );
        }
    }
}

fn labels_for(x: &Array2<f64>, picks: &[usize]) -> Vec<u32> {
    picks
        .iter()
        .zip(x.rows())
        .map(|(p, row)| (p % row.len()) as u32)
        .collect()
}

proptest! {
    #[test]
    fn distribution_matches_reference((x, y) in logits_and_targets(), inv_t in inv_t_strategy()) {
        check_dist::<f32>(&x, &y, inv_t);
        check_dist::<f64>(&x, &y, inv_t);
    }

    #[test]
    fn labels_match_reference(x in logits(3, 30, true), picks in proptest::collection::vec(0usize..1000, 3), inv_t in inv_t_strategy()) {
        let labels = labels_for(&x, &picks);
        check_labels::<f32>(&x, &labels, inv_t);
        check_labels::<f64>(&x, &labels, inv_t);
    }

    #[test]
    fn gradient_is_s_minus_y_over_t((x, y) in logits_and_targets(), inv_t in inv_t_strategy()) {
        let s = forward::<f64>(&x, inv_t, Form::Probs, Exec::Inline);
        let (_, grad) = cross_entropy_dist::<f64>(&x, &y, inv_t, Exec::Inline);
        for r in 0..x.nrows() {
            let mass: f64 = y.row(r).sum();
            if (mass - 1.0).abs() > 1e-6 || x.row(r).iter().all(|&v| v == NEG_INF) {
                continue;
            }
            // y was rounded to f32, so it sums to 1 only to ~1e-7.
            let want: Vec<f64> = s.row(r).iter().zip(y.row(r)).map(|(s, y)| (s * mass - y) * inv_t).collect();
            assert_close("(s - y)/T", &grad.row(r).to_vec(), &want, 1e-13, None, inv_t);
            let plain: Vec<f64> = s.row(r).iter().zip(y.row(r)).map(|(s, y)| (s - y) * inv_t).collect();
            assert_close("(s - y)/T", &grad.row(r).to_vec(), &plain, 1e-6, None, inv_t);
        }
    }

    #[test]
    fn gradient_vanishes_at_s_equal_y(x in logits(3, 30, true), inv_t in inv_t_strategy()) {
        let y = Array2::from_shape_vec(x.dim(), rows(&x).flat_map(|r| softmax(&r, inv_t)).collect()).unwrap_or_default();
        for exec in EXECS {
            let (loss, grad) = cross_entropy_dist::<f64>(&x, &y, inv_t, exec);
            prop_assert!(grad.iter().all(|g| g.abs() <= 1e-15 * inv_t), "{grad:?}");
            // The loss at s = y is the entropy of y.
            for (r, yr) in rows(&y).enumerate() {
                let entropy = -sum(yr.iter().filter(|&&v| v > 0.0).map(|v| v * v.ln()));
                prop_assert!((loss[r] - entropy).abs() <= 1e-12 * entropy.abs().max(1.0));
            }
            let (_, grad) = cross_entropy_dist::<f32>(&x, &y, inv_t, exec);
            prop_assert!(grad.iter().all(|g| g.abs() <= 4e-6 * inv_t), "{grad:?}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences((x, y) in logits_and_targets(), inv_t in inv_t_strategy()) {
        let h = 1e-5;
        let (_, grad) = cross_entropy_dist::<f64>(&x, &y, inv_t, Exec::Inline);
        for (r, (xr, yr)) in rows(&x).zip(rows(&y)).enumerate() {
            let m = xr.iter().fold(f64::MIN, |m, &v| m.max(v));
            if m == NEG_INF {
                continue;
            }
            let xr: Vec<f64> = xr.iter().map(|v| v - m).collect();
            for c in (0..xr.len()).filter(|&c| xr[c] > NEG_INF) {
                let mut up = xr.clone();
                let mut down = xr.clone();
                up[c] += h;
                down[c] -= h;
                let fd = (cross_entropy_row(&up, &yr, inv_t).0 - cross_entropy_row(&down, &yr, inv_t).0) / (2.0 * h);
                prop_assert!((grad[[r, c]] - fd).abs() <= 1e-7 * (1.0 + inv_t.powi(3)), "∂L/∂x[{c}] = {} vs {fd}", grad[[r, c]]);
            }
        }
    }
}

#[test]
fn padding_rows_cost_nothing() {
    let x = array![[NEG_INF, NEG_INF, NEG_INF], [1.0, 2.0, 3.0]];
    let y = array![[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]];
    for exec in EXECS {
        let (loss, grad) = cross_entropy_dist::<f32>(&x, &y, 1.0, exec);
        assert_eq!(loss[0], 0.0);
        assert_eq!(grad.row(0).to_vec(), vec![0.0; 3]);
        let (loss, grad) = cross_entropy_labels::<f64>(&x, &[2, 0], 1.0, exec);
        assert_eq!(loss[0], 0.0);
        assert_eq!(grad.row(0).to_vec(), vec![0.0; 3]);
        assert!(loss[1] > 0.0);
    }
}

#[test]
fn target_on_a_masked_entry_costs_infinity() {
    let x = array![[NEG_INF, 0.0, 1.0]];
    let (loss, _) = cross_entropy_labels::<f32>(&x, &[0], 1.0, Exec::Inline);
    assert_eq!(loss[0], f64::INFINITY);
    let (loss, _) = cross_entropy_dist::<f64>(&x, &array![[0.5, 0.5, 0.0]], 1.0, Exec::Inline);
    assert_eq!(loss[0], f64::INFINITY);
}

#[test]
fn k_one_costs_nothing() {
    let x = array![[7.0], [-1e4]];
    for exec in EXECS {
        let (loss, grad) = cross_entropy_labels::<f32>(&x, &[0, 0], 0.5, exec);
        assert_eq!(loss, array![0.0, 0.0]);
        assert_eq!(grad, array![[0.0], [0.0]]);
    }
}

#[test]
fn offsets_and_temperature() {
    let (r, k) = (4, 1000);
    for off in [-1e4, 1e4] {
        let x = Array2::from_shape_vec((r, k), spread(r * k, 5, off - 30.0, off + 30.0))
            .unwrap_or_default();
        let labels = [0, 17, 500, 999];
        let inv_t = f32_exact(1.0 / 2.5);
        check_labels::<f32>(&x, &labels, inv_t);
        check_labels::<f64>(&x, &labels, inv_t);
    }
}

#[test]
fn wrong_label_count_is_an_error() {
    let x = Array2::<f32>::zeros((2, 3));
    let mut loss = Array1::<f32>::zeros(2);
    let mut grad = Array2::<f32>::zeros((2, 3));
    let err = kernel::cross_entropy(
        x.view(),
        Target::Labels(&[0]),
        loss.view_mut(),
        grad.view_mut(),
        1.0,
        Exec::Inline,
    );
    assert_eq!(err, Err(KernelError::Labels { got: 1, rows: 2 }));
}

#[test]
fn nan_and_pos_inf_logits_make_the_call_suspect() {
    check_cross_entropy_screens();
}
