//! Forward (softmax and log-softmax) against the f64 reference, with
//! temperature, masks, offsets and both execution modes.

mod common;

use common::*;
use ndarray::{array, Array2};
use proptest::prelude::*;
use softmaxd::kernel::{self, Element, Exec, Form, KernelError, Screened};

fn check<F: Element>(x: &Array2<f64>, inv_t: f64) {
    for form in FORMS {
        for exec in EXECS {
            let got = forward::<F>(x, inv_t, form, exec);
            for (r, (g, xr)) in rows(&got).zip(rows(x)).enumerate() {
                check_forward_row::<F>(&format!("{form:?} {exec:?} row {r}"), &g, &xr, inv_t, form);
            }
        }
    }
}

proptest! {
    #[test]
    fn matches_reference_f32(x in logits(4, 40, true), inv_t in inv_t_strategy()) {
        check::<f32>(&x, inv_t);
    }

    #[test]
    fn matches_reference_f64(x in logits(4, 40, true), inv_t in inv_t_strategy()) {
        check::<f64>(&x, inv_t);
    }

    #[test]
    fn probabilities_sum_to_one(x in logits(3, 300, false), inv_t in inv_t_strategy()) {
        for s in rows(&forward::<f32>(&x, inv_t, Form::Probs, Exec::Inline)) {
            prop_assert!((sum(s.iter().copied()) - 1.0).abs() <= 1e-5);
        }
        for s in rows(&forward::<f64>(&x, inv_t, Form::Probs, Exec::Inline)) {
            prop_assert!((sum(s.iter().copied()) - 1.0).abs() <= 1e-13);
        }
    }

    #[test]
    fn shift_invariant(x in logits(2, 30, false), c in -50.0f64..50.0) {
        // softmax(x + c) = softmax(x): only differences of logits matter.
        let shifted = x.mapv(|v| v + c);
        let a = forward::<f64>(&x, 1.0, Form::Probs, Exec::Inline);
        let b = forward::<f64>(&shifted, 1.0, Form::Probs, Exec::Inline);
        assert_close("shifted", b.as_slice().unwrap_or(&[]), a.as_slice().unwrap_or(&[]), 1e-12, None, 1.0);
    }
}

#[test]
fn k_one_is_certain() {
    let x = array![[3.5], [-1e4], [1e4], [NEG_INF]];
    for exec in EXECS {
        let s = forward::<f32>(&x, 0.5, Form::Probs, exec);
        assert_eq!(s, array![[1.0], [1.0], [1.0], [0.0]]);
        let l = forward::<f64>(&x, 0.5, Form::LogProbs, exec);
        assert_eq!(l, array![[0.0], [0.0], [0.0], [NEG_INF]]);
    }
}

#[test]
fn large_logits_do_not_overflow() {
    // The candle regression: [1234, 0] must be [1, 0], not NaN.
    let x = array![[1234.0, 0.0], [1e4, 1e4 - 1.0], [-1e4, -1e4]];
    let s = forward::<f32>(&x, 1.0, Form::Probs, Exec::Inline);
    assert_eq!(s[[0, 0]], 1.0);
    assert_eq!(s[[0, 1]], 0.0);
    check::<f32>(&x, 1.0);
    check::<f64>(&x, 1.0);
}

#[test]
fn masks_give_exact_zeros() {
    let x = array![
        [1.0, NEG_INF, 2.0, NEG_INF],
        [NEG_INF; 4],
        [NEG_INF, NEG_INF, NEG_INF, 7.0]
    ];
    for exec in EXECS {
        let s = forward::<f32>(&x, 2.0, Form::Probs, exec);
        assert_eq!(s[[0, 1]], 0.0);
        assert_eq!(s[[0, 3]], 0.0);
        assert_eq!(s.row(1).to_vec(), vec![0.0; 4]);
        assert_eq!(s.row(2).to_vec(), vec![0.0, 0.0, 0.0, 1.0]);
        let l = forward::<f64>(&x, 2.0, Form::LogProbs, exec);
        assert_eq!(l[[0, 1]], NEG_INF);
        assert_eq!(l.row(1).to_vec(), vec![NEG_INF; 4]);
        assert_eq!(l.row(2).to_vec(), vec![NEG_INF, NEG_INF, NEG_INF, 0.0]);
    }
    check::<f32>(&x, 2.0);
    check::<f64>(&x, 2.0);
}

#[test]
fn log_softmax_where_softmax_underflows() {
    // s_0 underflows to 0 in both dtypes, but log s_0 = -2000 is finite.
    let x = array![[0.0, 2000.0]];
    let l = forward::<f32>(&x, 1.0, Form::LogProbs, Exec::Inline);
    assert_eq!(l[[0, 0]], -2000.0);
    assert_eq!(l[[0, 1]], 0.0);
}

#[test]
fn pool_equals_inline_bit_for_bit() {
    let (r, k) = (64, 333);
    let x = Array2::from_shape_vec((r, k), spread(r * k, 7, -30.0, 30.0)).unwrap_or_default();
    for form in FORMS {
        let a = forward::<f32>(&x, 0.7, form, Exec::Inline);
        let b = forward::<f32>(&x, 0.7, form, Exec::Pool);
        assert_eq!(a, b);
        let a = forward::<f64>(&x, 0.7, form, Exec::Inline);
        let b = forward::<f64>(&x, 0.7, form, Exec::Pool);
        assert_eq!(a, b);
    }
}

#[test]
fn empty_batch_is_fine() {
    let x = Array2::<f64>::zeros((0, 5));
    assert_eq!(
        forward::<f32>(&x, 1.0, Form::Probs, Exec::Pool).dim(),
        (0, 5)
    );
}

#[test]
fn shape_mismatch_is_an_error() {
    let x = Array2::<f32>::zeros((2, 3));
    let mut out = Array2::<f32>::zeros((3, 2));
    let err = kernel::forward(x.view(), out.view_mut(), 1.0, Form::Probs, Exec::Inline);
    assert!(matches!(err, Err(KernelError::Shape { .. })), "{err:?}");
    let t = x.t();
    let mut out = Array2::<f32>::zeros((3, 2));
    let err = kernel::forward(t, out.view_mut(), 1.0, Form::Probs, Exec::Inline);
    assert_eq!(err, Err(KernelError::Layout("logits")));
}

#[test]
fn outputs_too_large_for_the_cache_are_streamed_and_still_exact() {
    // 2100 × 4001 f32 values = 33.6 MB: above the kernel's streaming
    // threshold (32 MiB); a row length of 4001 starts rows at every
    // alignment, so the unaligned head and tail paths run too. Masked rows
    // (two in a row, and the last, across the row-to-row max hand-over) and
    // a temperature are mixed in.
    let mut x = Array2::from_shape_fn((2100, 4001), |(r, j)| {
        ((r * 31 + j * 17) % 211) as f64 * 0.07 - 5.0
    });
    for r in [3, 4, 2099] {
        x.row_mut(r).fill(f64::NEG_INFINITY);
    }
    check::<f32>(&x, 1.0);
    check::<f32>(&x, 1.0 / 0.7);
    // f64 (half as many lanes per vector) past the threshold as well.
    common::check_streamed();
}

#[test]
fn streaming_with_too_little_scratch_gives_the_cached_rows() {
    common::check_short_scratch();
}

#[test]
fn nan_and_pos_inf_are_rejected_wherever_they_are() {
    check_forward_screens();
}

#[test]
fn streamed_outputs_are_screened_too() {
    // As above, past the streaming threshold: a bad value in the first row,
    // in a row after a masked one, and in the last row.
    let mut x = Array2::from_shape_fn((2100, 4001), |(r, j)| ((r * 7 + j * 13) % 97) as f64 * 0.1);
    x.row_mut(10).fill(f64::NEG_INFINITY);
    assert_eq!(
        screen::<f32>(&x, Form::Probs, Exec::Inline),
        Screened::Clean
    );
    for (r, j, v) in [
        (0, 0, f64::NAN),
        (11, 4000, f64::INFINITY),
        (2099, 2000, f64::NAN),
    ] {
        let mut bad = x.clone();
        bad[[r, j]] = v;
        for exec in [Exec::Inline, Exec::Pool] {
            let got = screen::<f32>(&bad, Form::Probs, exec);
            assert_eq!(got, Screened::Suspect, "{v} at [{r}, {j}], {exec:?}");
        }
    }
}

#[test]
fn batches_mixing_masked_and_unmasked_rows_match_reference() {
    // The SIMD kernel takes each row's max during the previous row's pass;
    // fully masked rows (before, after and between others) and every tail
    // length must not disturb that hand-over, inline or split over the pool.
    for k in [1, 2, 15, 16, 17, 31, 33, 100, 1000] {
        let rows = 70;
        let x = Array2::from_shape_fn((rows, k), |(r, j)| match r % 5 {
            0 | 3 => NEG_INF,
            1 if j % 3 == 0 => NEG_INF,
            _ => ((r * 31 + j * 17) % 23) as f64 * 0.7 - 8.0,
        });
        check::<f32>(&x, 1.0);
        check::<f64>(&x, 1.0);
        check::<f32>(&x, 0.37);
    }
}
