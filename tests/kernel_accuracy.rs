//! DESIGN.md §4 accuracy targets against the f64 reference for k from 1 to
//! 100 000, offsets up to ±1e4 and several temperatures, and the error of
//! the vectorised exp itself.

mod common;

use common::*;
use ndarray::Array2;
use softmaxd::kernel::{Element, Exec, Form};

const KS: [usize; 22] = [
    1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 64, 65, 100, 1000, 1024, 4097, 10_000, 65_536,
    100_000,
];

/// Rows whose probabilities span from ~1 down to far below 1e-30 (and to
/// exact underflow in f32), around `offset`, with one masked entry.
fn row(k: usize, offset: f64, seed: u64) -> Vec<f64> {
    let mut x = spread(k, seed, offset - 90.0, offset + 5.0);
    if k > 2 {
        x[k / 2] = NEG_INF;
        // One clear winner so that some probabilities are near 1.
        x[1] = f32_exact(offset + 8.0);
    }
    x
}

fn check_all<F: Element>() {
    for (n, &k) in KS.iter().enumerate() {
        for offset in [0.0, 1e4, -1e4] {
            for t in [1.0, 0.5, 3.0] {
                let inv_t = f32_exact(1.0 / t);
                let x = Array2::from_shape_vec(
                    (2, k),
                    [row(k, offset, n as u64), row(k, offset, 99 + n as u64)].concat(),
                )
                .unwrap_or_default();
                for form in FORMS {
                    for exec in EXECS {
                        let got = forward::<F>(&x, inv_t, form, exec);
                        for (r, (g, xr)) in rows(&got).zip(rows(&x)).enumerate() {
                            let what =
                                format!("k={k} offset={offset} T={t} {form:?} {exec:?} row {r}");
                            check_forward_row::<F>(&what, &g, &xr, inv_t, form);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn forward_f32_meets_targets() {
    check_all::<f32>();
}

#[test]
fn forward_f64_meets_targets() {
    check_all::<f64>();
}

#[test]
fn uniform_long_rows_keep_their_sum() {
    // k equal logits: each s_i = 1/k exactly in the reference; an error that
    // grew with k would show here first.
    for k in [1000, 65_536, 100_000] {
        let x = Array2::from_elem((1, k), f32_exact(1e4 - 0.1));
        let s32 = forward::<f32>(&x, 1.0, Form::Probs, Exec::Inline);
        let s64 = forward::<f64>(&x, 1.0, Form::Probs, Exec::Inline);
        let want = 1.0 / k as f64;
        assert!(
            s32.iter().all(|&v| ((v - want) / want).abs() <= 1e-6),
            "f32 k={k}"
        );
        assert!(
            s64.iter().all(|&v| ((v - want) / want).abs() <= 1e-14),
            "f64 k={k}"
        );
    }
}

/// Arguments covering the whole exp range, past underflow, densely near 0.
fn exp_args(lo: f64) -> Vec<f64> {
    let n = 200_000;
    let mut z: Vec<f64> = (0..=n).map(|i| lo * i as f64 / n as f64).collect();
    z.extend((0..10_000).map(|i| -(i as f64) * 1e-6));
    z.extend([-0.0, f64::MIN_POSITIVE.ln(), -1e30, NEG_INF]);
    z
}

#[test]
fn exp_f32_error() {
    // Documented bound: relative error ≤ 3 ulp (2^-21) where the result is a
    // normal f32; below that the result may be flushed to zero.
    let z: Vec<f32> = exp_args(-110.0).iter().map(|&v| v as f32).collect();
    let mut out = vec![0.0f32; z.len()];
    let total = f32::exp_shifted(&z, 0.0, 1.0, &mut out);
    let mut want_total = Vec::with_capacity(z.len());
    for (&zi, &oi) in z.iter().zip(&out) {
        let want = f64::from(zi).exp();
        want_total.push(want);
        let got = f64::from(oi);
        if want >= f64::from(f32::MIN_POSITIVE) {
            assert!(
                ((got - want) / want).abs() <= 2f64.powi(-21),
                "exp({zi}) = {got:e}, want {want:e}"
            );
        } else {
            assert!(
                (got - want).abs() <= f64::from(f32::MIN_POSITIVE),
                "exp({zi}) = {got:e}, want {want:e}"
            );
        }
    }
    let want_total = sum(want_total);
    assert!(
        ((total - want_total) / want_total).abs() <= 1e-6,
        "{total} vs {want_total}"
    );
}

#[test]
fn exp_f64_error() {
    // Documented bound: relative error ≤ 4 ulp (2^-50) where the result is a
    // normal f64; below that the result may be flushed to zero.
    let z = exp_args(-750.0);
    let mut out = vec![0.0f64; z.len()];
    f64::exp_shifted(&z, 0.0, 1.0, &mut out);
    for (&zi, &got) in z.iter().zip(&out) {
        let want = zi.exp();
        if want >= f64::MIN_POSITIVE {
            assert!(
                ((got - want) / want).abs() <= 2f64.powi(-50),
                "exp({zi}) = {got:e}, want {want:e}"
            );
        } else {
            assert!(
                (got - want).abs() <= f64::MIN_POSITIVE,
                "exp({zi}) = {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn shifted_exp_applies_max_and_temperature() {
    let x: Vec<f32> = spread(1000, 21, -50.0, 50.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let inv_t = 0.37f32;
    let mut out = vec![0.0f32; x.len()];
    let total = f32::exp_shifted(&x, m, inv_t, &mut out);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| ((f64::from(v) - f64::from(m)) * f64::from(inv_t)).exp())
        .collect();
    let got: Vec<f64> = out.iter().map(|&v| f64::from(v)).collect();
    assert_close("exp_shifted", &got, &want, 1e-6, Some(1e-5), 1.0);
    assert!((total - sum(want.iter().copied())).abs() <= 1e-6 * total);
    let sum_only = f32::sum_exp_shifted(&x, m, inv_t);
    assert!((sum_only - total).abs() <= 1e-6 * total);
    assert_eq!(f32::row_max(&x), m);
}
