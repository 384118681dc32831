//! Shared support for the kernel tests: a plain f64 reference of every
//! operation, straight from the definitions in DESIGN.md §2, and helpers that
//! run the real kernel on either dtype.
#![allow(dead_code)]

use ndarray::{Array1, Array2, Array3};
use proptest::prelude::*;
use softmaxd::kernel::{self, Element, Exec, Form, Screened, Target};

pub const EXECS: [Exec; 2] = [Exec::Inline, Exec::Pool];
pub const FORMS: [Form; 2] = [Form::Probs, Form::LogProbs];
pub const NEG_INF: f64 = f64::NEG_INFINITY;

// ---------------------------------------------------------------- reference

/// Neumaier-compensated sum, so the reference is more accurate than any
/// kernel under test, whatever k.
pub fn sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut c, mut plain) = (0.0f64, 0.0f64, 0.0f64);
    for v in values {
        plain += v;
        let t = s + v;
        if s.abs() >= v.abs() {
            c += (s - t) + v;
        } else {
            c += (v - t) + s;
        }
        s = t;
    }
    // Infinite terms make the compensation NaN; the plain sum is right then.
    if plain.is_finite() {
        s + c
    } else {
        plain
    }
}

fn max(x: &[f64]) -> f64 {
    x.iter().fold(NEG_INF, |m, &v| m.max(v))
}

/// `s_i = exp(x_i/T - m) / Σ exp(x_t/T - m)`; a fully masked row gives zeros.
pub fn softmax(x: &[f64], inv_t: f64) -> Vec<f64> {
    let m = max(x);
    if m == NEG_INF {
        return vec![0.0; x.len()];
    }
    let e: Vec<f64> = x.iter().map(|&v| ((v - m) * inv_t).exp()).collect();
    let total = sum(e.iter().copied());
    e.iter().map(|v| v / total).collect()
}

/// `log s_i = x_i/T - m - log Σ exp(x_t/T - m)`; a fully masked row gives -inf.
pub fn log_softmax(x: &[f64], inv_t: f64) -> Vec<f64> {
    let m = max(x);
    if m == NEG_INF {
        return vec![NEG_INF; x.len()];
    }
    let lse = sum(x.iter().map(|&v| ((v - m) * inv_t).exp())).ln();
    x.iter().map(|&v| (v - m) * inv_t - lse).collect()
}

pub fn forward_row(x: &[f64], inv_t: f64, form: Form) -> Vec<f64> {
    match form {
        Form::Probs => softmax(x, inv_t),
        Form::LogProbs => log_softmax(x, inv_t),
    }
}

/// `J[i][j] = ∂f_i/∂x_j` from the logits, entry by entry:
/// `(1/T)(δ_ij s_i - s_i s_j)` or, for log-softmax, `(1/T)(δ_ij - s_j)`.
/// A fully masked row has a zero Jacobian.
pub fn jacobian_row(x: &[f64], inv_t: f64, form: Form) -> Vec<Vec<f64>> {
    let k = x.len();
    let s = softmax(x, inv_t);
    let masked = max(x) == NEG_INF;
    (0..k)
        .map(|i| {
            (0..k)
                .map(|j| {
                    let delta = if i == j { 1.0 } else { 0.0 };
                    if masked {
                        0.0
                    } else if form == Form::Probs {
                        inv_t * (delta * s[i] - s[i] * s[j])
                    } else {
                        inv_t * (delta - s[j])
                    }
                })
                .collect()
        })
        .collect()
}

/// The VJP `Σ_i g_i J_ij`, by building J (independent of the O(k) formula
/// the kernel uses).
pub fn backward_row(x: &[f64], g: &[f64], inv_t: f64, form: Form) -> Vec<f64> {
    let j = jacobian_row(x, inv_t, form);
    (0..x.len())
        .map(|c| sum(j.iter().zip(g).map(|(row, &gi)| gi * row[c])))
        .collect()
}

/// Cross-entropy `-Σ y_i log s_i` (terms with y_i = 0 left out) and its
/// gradient `-Σ_i y_i ∂ log s_i/∂x_j`. A fully masked row is padding: 0, 0.
pub fn cross_entropy_row(x: &[f64], y: &[f64], inv_t: f64) -> (f64, Vec<f64>) {
    if max(x) == NEG_INF {
        return (0.0, vec![0.0; x.len()]);
    }
    let l = log_softmax(x, inv_t);
    let loss = -sum(y
        .iter()
        .zip(&l)
        .filter(|(&yi, _)| yi > 0.0)
        .map(|(yi, li)| yi * li));
    let minus_y: Vec<f64> = y.iter().map(|v| -v).collect();
    (loss, backward_row(x, &minus_y, inv_t, Form::LogProbs))
}

pub fn one_hot(k: usize, c: usize) -> Vec<f64> {
    (0..k).map(|i| if i == c { 1.0 } else { 0.0 }).collect()
}

// ------------------------------------------------------------ kernel runners

pub fn cast<F: Element>(a: &Array2<f64>) -> Array2<F> {
    a.mapv(F::of)
}

pub fn widen<F: Element, D: ndarray::Dimension>(
    a: &ndarray::Array<F, D>,
) -> ndarray::Array<f64, D> {
    a.mapv(|v| v.to_f64().unwrap_or(f64::NAN))
}

pub fn forward<F: Element>(x: &Array2<f64>, inv_t: f64, form: Form, exec: Exec) -> Array2<f64> {
    let x = cast::<F>(x);
    let mut out = Array2::<F>::zeros(x.dim());
    let screened = kernel::forward(x.view(), out.view_mut(), F::of(inv_t), form, exec);
    assert_eq!(
        screened,
        Ok(Screened::Clean),
        "finite logits and masks pass"
    );
    widen(&out)
}

/// Backward from the forward output `s` (computed by the kernel in `F`).
pub fn backward<F: Element>(
    x: &Array2<f64>,
    g: &Array2<f64>,
    inv_t: f64,
    form: Form,
    exec: Exec,
) -> Array2<f64> {
    let x = cast::<F>(x);
    let g = cast::<F>(g);
    let mut s = Array2::<F>::zeros(x.dim());
    let screened = kernel::forward(x.view(), s.view_mut(), F::of(inv_t), form, exec);
    assert_eq!(
        screened,
        Ok(Screened::Clean),
        "finite logits and masks pass"
    );
    let mut out = Array2::<F>::zeros(x.dim());
    let screened = kernel::backward(s.view(), g.view(), out.view_mut(), F::of(inv_t), form, exec);
    // Log-probabilities are not screened.
    let want = match form {
        Form::Probs => Screened::Clean,
        Form::LogProbs => Screened::Suspect,
    };
    assert_eq!(screened, Ok(want), "finite probabilities and gradients");
    widen(&out)
}

pub fn backward_from_logits<F: Element>(
    x: &Array2<f64>,
    g: &Array2<f64>,
    inv_t: f64,
    form: Form,
    exec: Exec,
) -> Array2<f64> {
    let x = cast::<F>(x);
    let g = cast::<F>(g);
    let mut out = Array2::<F>::zeros(x.dim());
    let screened =
        kernel::backward_from_logits(x.view(), g.view(), out.view_mut(), F::of(inv_t), form, exec);
    assert_eq!(
        screened,
        Ok(Screened::Clean),
        "finite logits, masks, gradients"
    );
    widen(&out)
}

/// Jacobian from the forward output `s` (computed by the kernel in `F`).
pub fn jacobian<F: Element>(x: &Array2<f64>, inv_t: f64, form: Form, exec: Exec) -> Array3<f64> {
    let x = cast::<F>(x);
    let (rows, k) = x.dim();
    let mut s = Array2::<F>::zeros(x.dim());
    let screened = kernel::forward(x.view(), s.view_mut(), F::of(inv_t), form, exec);
    assert_eq!(
        screened,
        Ok(Screened::Clean),
        "finite logits and masks pass"
    );
    let mut out = Array3::<F>::zeros((rows, k, k));
    kernel::jacobian(s.view(), out.view_mut(), F::of(inv_t), form, exec).expect("shapes agree");
    widen(&out)
}

pub fn jacobian_from_logits<F: Element>(
    x: &Array2<f64>,
    inv_t: f64,
    form: Form,
    exec: Exec,
) -> Array3<f64> {
    let x = cast::<F>(x);
    let (rows, k) = x.dim();
    let mut out = Array3::<F>::zeros((rows, k, k));
    kernel::jacobian_from_logits(x.view(), out.view_mut(), F::of(inv_t), form, exec)
        .expect("shapes agree");
    widen(&out)
}

/// Cross-entropy against class labels: (loss per row, gradient).
pub fn cross_entropy_labels<F: Element>(
    x: &Array2<f64>,
    labels: &[u32],
    inv_t: f64,
    exec: Exec,
) -> (Array1<f64>, Array2<f64>) {
    let x = cast::<F>(x);
    let mut loss = Array1::<F>::zeros(x.nrows());
    let mut grad = Array2::<F>::zeros(x.dim());
    let screened = kernel::cross_entropy(
        x.view(),
        Target::Labels(labels),
        loss.view_mut(),
        grad.view_mut(),
        F::of(inv_t),
        exec,
    );
    assert_eq!(
        screened,
        Ok(Screened::Clean),
        "finite logits and masks pass"
    );
    (widen(&loss), widen(&grad))
}

/// Cross-entropy against target distributions: (loss per row, gradient).
pub fn cross_entropy_dist<F: Element>(
    x: &Array2<f64>,
    y: &Array2<f64>,
    inv_t: f64,
    exec: Exec,
) -> (Array1<f64>, Array2<f64>) {
    let x = cast::<F>(x);
    let y = cast::<F>(y);
    let mut loss = Array1::<F>::zeros(x.nrows());
    let mut grad = Array2::<F>::zeros(x.dim());
    let screened = kernel::cross_entropy(
        x.view(),
        Target::Dist(y.view()),
        loss.view_mut(),
        grad.view_mut(),
        F::of(inv_t),
        exec,
    );
    assert_eq!(
        screened,
        Ok(Screened::Clean),
        "finite logits and masks pass"
    );
    (widen(&loss), widen(&grad))
}

// --------------------------------------------------------------- comparison

/// Whether `F` is the single-precision type.
pub fn is_f32<F: Element>() -> bool {
    std::mem::size_of::<F>() == 4
}

/// DESIGN.md §4 targets: (absolute, relative) error against the f64
/// reference; relative only counts for entries above 1e-30.
pub fn prob_tol<F: Element>() -> (f64, f64) {
    if is_f32::<F>() {
        (2e-6, 1e-5)
    } else {
        (1e-12, 1e-12)
    }
}

/// Checks `got` against `want` entry by entry: equal infinities match, else
/// `|got - want| <= abs * scale` and, for `|want| > 1e-30`, also
/// `|got - want| <= rel * |want|` when `rel` is given.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], abs: f64, rel: Option<f64>, scale: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]: got {g}, want {w}");
            continue;
        }
        let err = (g - w).abs();
        assert!(
            err <= abs * scale,
            "{what}[{i}]: got {g:e}, want {w:e}, abs err {err:e} > {:e}",
            abs * scale
        );
        if let Some(rel) = rel {
            if w.abs() > 1e-30 {
                assert!(
                    err <= rel * w.abs(),
                    "{what}[{i}]: got {g:e}, want {w:e}, rel err {:e} > {rel:e}",
                    err / w.abs()
                );
            }
        }
    }
}

/// Checks the kernel's forward output of one row against the reference:
/// probabilities to the §4 targets, log-probabilities relative to their
/// magnitude (their absolute size grows with the spread of the logits).
pub fn check_forward_row<F: Element>(what: &str, got: &[f64], x: &[f64], inv_t: f64, form: Form) {
    let want = forward_row(x, inv_t, form);
    let (abs, rel) = prob_tol::<F>();
    match form {
        Form::Probs => assert_close(what, got, &want, abs, Some(rel), 1.0),
        Form::LogProbs => {
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let bound = abs * w.abs().max(1.0);
                assert!(
                    (g == w) || (g - w).abs() <= bound,
                    "{what}[{i}]: got {g:e}, want {w:e} (bound {bound:e})"
                );
            }
        }
    }
}

pub fn rows(a: &Array2<f64>) -> impl Iterator<Item = Vec<f64>> + '_ {
    a.rows().into_iter().map(|r| r.to_vec())
}

// --------------------------------------------------------------- strategies

/// A value representable in f32, so both dtypes see the same input.
pub fn f32_exact(v: f64) -> f64 {
    f64::from(v as f32)
}

/// `1/T` for a temperature, rounded to f32 so both dtypes get the same one.
pub fn inv_t_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), 0.25f64..4.0].prop_map(|t| f32_exact(1.0 / t))
}

/// Logits `[rows, k]`: values around an offset (0, ±1e4 or random), some
/// entries masked with -inf, and sometimes a whole row masked.
pub fn logits(max_rows: usize, max_k: usize, masks: bool) -> impl Strategy<Value = Array2<f64>> {
    let offset = prop_oneof![Just(0.0), Just(1e4), Just(-1e4), -100.0f64..100.0];
    let mask_p = if masks { 0.15 } else { 0.0 };
    (1..=max_rows, 1..=max_k, offset).prop_flat_map(move |(r, k, off)| {
        let entry = (-25.0f64..25.0, proptest::bool::weighted(mask_p)).prop_map(move |(v, m)| {
            if m {
                NEG_INF
            } else {
                f32_exact(off + v)
            }
        });
        let full_mask = proptest::collection::vec(proptest::bool::weighted(mask_p), r);
        (proptest::collection::vec(entry, r * k), full_mask).prop_map(move |(v, full)| {
            let mut a = Array2::from_shape_vec((r, k), v).expect("r*k values");
            for (mut row, f) in a.rows_mut().into_iter().zip(full) {
                if f {
                    row.fill(NEG_INF);
                }
            }
            a
        })
    })
}

/// Upstream gradients in [-2, 2] of the same shape.
pub fn grads(rows: usize, k: usize) -> impl Strategy<Value = Array2<f64>> {
    proptest::collection::vec((-2.0f64..2.0).prop_map(f32_exact), rows * k)
        .prop_map(move |v| Array2::from_shape_vec((rows, k), v).expect("rows*k values"))
}

/// Logits together with a same-shaped upstream gradient.
pub fn logits_and_grads(
    max_rows: usize,
    max_k: usize,
    masks: bool,
) -> impl Strategy<Value = (Array2<f64>, Array2<f64>)> {
    logits(max_rows, max_k, masks).prop_flat_map(|x| {
        let (r, k) = x.dim();
        (Just(x), grads(r, k))
    })
}

/// Deterministic pseudo-random values in [lo, hi) (a splitmix64 stream), for
/// the large fixed-size cases that proptest would make slow.
pub fn spread(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64;
            f32_exact(lo + (hi - lo) * u)
        })
        .collect()
}

/// Every operation, both dtypes, rows of many lengths (vector body plus
/// every tail length) against the reference: for the per-level test files.
/// `Element::all_finite` against its definition, for both dtypes, every
/// row length up to 70 (every tail length of every vector width) and 1000,
/// with each kind of value at each position.
pub fn check_all_finite() {
    check_all_finite_of::<f32>();
    check_all_finite_of::<f64>();
}

fn check_all_finite_of<F: Element>() {
    let odd = [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        NEG_INF,
        f64::MAX,
        -f64::MAX,
        1e-310,
        -0.0,
    ];
    let lens = (0..=70).chain([1000]);
    for (n, len) in lens.enumerate() {
        let clean: Vec<F> = spread(len, n as u64, -80.0, 80.0)
            .into_iter()
            .map(F::of)
            .collect();
        for neg_inf_ok in [false, true] {
            assert!(F::all_finite(&clean, neg_inf_ok), "clean row of {len}");
        }
        for at in 0..len {
            for &v in &odd {
                let mut x = clean.clone();
                x[at] = F::of(v);
                let v = x[at];
                for neg_inf_ok in [false, true] {
                    let want = v.is_finite() || (neg_inf_ok && v == F::neg_infinity());
                    assert_eq!(
                        F::all_finite(&x, neg_inf_ok),
                        want,
                        "{v:?} at {at} of {len}, neg_inf_ok {neg_inf_ok}"
                    );
                }
            }
        }
    }
}

/// Forward's screen: every NaN or `+inf`, wherever it sits (first value,
/// vector tails, a fully masked row, any row of a batch), makes the call
/// `Suspect`; finite values, `-inf` masks and extremes (`±MAX`, where
/// `x - max` overflows to `-inf`) never do, on either path.
pub fn check_forward_screens() {
    check_forward_screens_of::<f32>();
    check_forward_screens_of::<f64>();
}

fn check_forward_screens_of<F: Element>() {
    let odd = [f64::NAN, -f64::NAN, f64::INFINITY];
    for (n, k) in [1usize, 2, 7, 16, 17, 33, 64, 100, 1000]
        .into_iter()
        .enumerate()
    {
        let rows = 3;
        let mut clean = spread(rows * k, n as u64, -30.0, 30.0);
        if k > 2 {
            let max = F::max_value().to_f64().unwrap_or(f64::MAX);
            clean[1] = NEG_INF;
            clean[k] = max;
            clean[k + 1] = -max;
        }
        // The last row fully masked.
        for v in &mut clean[(rows - 1) * k..] {
            *v = NEG_INF;
        }
        let x = Array2::from_shape_vec((rows, k), clean).unwrap_or_default();
        for form in FORMS {
            for exec in [Exec::Inline, Exec::Pool] {
                assert_eq!(screen::<F>(&x, form, exec), Screened::Clean, "clean {k}");
            }
        }
        let spots = [0, k / 2, k - 1, k, 2 * k - 1, 2 * k, 3 * k - 1];
        for at in spots.into_iter().filter(|&at| at < rows * k) {
            for v in odd {
                let mut bad = x.clone();
                if let Some(slot) = bad.iter_mut().nth(at) {
                    *slot = v;
                }
                for form in FORMS {
                    for exec in [Exec::Inline, Exec::Pool] {
                        assert_eq!(
                            screen::<F>(&bad, form, exec),
                            Screened::Suspect,
                            "{v} at {at} of [{rows}, {k}], {form:?}, {exec:?}"
                        );
                    }
                }
            }
        }
    }
}

/// Backward's screen: a NaN or infinity anywhere in the probabilities or the
/// gradient (from the output), or NaN/`+inf` in the logits or NaN/±inf in
/// the gradient (from the logits, both forms) makes the call `Suspect`.
pub fn check_backward_screens() {
    check_backward_screens_of::<f32>();
    check_backward_screens_of::<f64>();
}

fn check_backward_screens_of<F: Element>() {
    let odd = [f64::NAN, f64::INFINITY, NEG_INF];
    for (n, k) in [1usize, 7, 16, 33, 100].into_iter().enumerate() {
        let rows = 3;
        let mut x = spread(rows * k, n as u64, -10.0, 10.0);
        if k > 2 {
            x[1] = NEG_INF;
        }
        let x = Array2::from_shape_vec((rows, k), x).unwrap_or_default();
        let g = Array2::from_shape_vec((rows, k), spread(rows * k, 9 + n as u64, -1.0, 1.0))
            .unwrap_or_default();
        let s = forward::<F>(&x, 1.0, Form::Probs, Exec::Inline);
        let spots = [0, k / 2, k - 1, k, 3 * k - 1];
        for at in spots {
            for v in odd {
                let set = |a: &Array2<f64>| {
                    let mut a = a.clone();
                    if let Some(slot) = a.iter_mut().nth(at) {
                        *slot = v;
                    }
                    a
                };
                let what = format!("{v} at {at} of [{rows}, {k}]");
                for exec in [Exec::Inline, Exec::Pool] {
                    let screen = |x: &Array2<f64>, g: &Array2<f64>, from_logits, form| {
                        let (x, g) = (cast::<F>(x), cast::<F>(g));
                        let mut out = Array2::<F>::zeros(x.dim());
                        let (x, g, o) = (x.view(), g.view(), out.view_mut());
                        let got = if from_logits {
                            kernel::backward_from_logits(x, g, o, F::one(), form, exec)
                        } else {
                            kernel::backward(x, g, o, F::one(), form, exec)
                        };
                        got.expect("shapes agree")
                    };
                    let suspect = Screened::Suspect;
                    assert_eq!(
                        screen(&set(&s), &g, false, Form::Probs),
                        suspect,
                        "s: {what}"
                    );
                    assert_eq!(
                        screen(&s, &set(&g), false, Form::Probs),
                        suspect,
                        "g: {what}"
                    );
                    for form in FORMS {
                        let gx = screen(&x, &set(&g), true, form);
                        assert_eq!(gx, suspect, "g from logits: {what}, {form:?}");
                        if v != NEG_INF {
                            let xx = screen(&set(&x), &g, true, form);
                            assert_eq!(xx, suspect, "logits: {what}, {form:?}");
                        }
                    }
                }
            }
        }
    }
}

/// Cross-entropy screens its logits as forward does, against labels and
/// distributions alike.
pub fn check_cross_entropy_screens() {
    check_cross_entropy_screens_of::<f32>();
    check_cross_entropy_screens_of::<f64>();
}

fn check_cross_entropy_screens_of<F: Element>() {
    for (n, k) in [1usize, 7, 16, 33, 100].into_iter().enumerate() {
        let rows = 3;
        let mut x = spread(rows * k, n as u64, -10.0, 10.0);
        // The last row fully masked: a NaN there hides from the max.
        for v in &mut x[(rows - 1) * k..] {
            *v = NEG_INF;
        }
        let x = Array2::from_shape_vec((rows, k), x).unwrap_or_default();
        let y = Array2::from_elem((rows, k), 1.0 / k as f64);
        let labels: Vec<u32> = (0..rows as u32).map(|r| r % k as u32).collect();
        let screen = |x: &Array2<f64>, dist: bool, exec| {
            let (x, y) = (cast::<F>(x), cast::<F>(&y));
            let mut loss = Array1::<F>::zeros(rows);
            let mut grad = Array2::<F>::zeros(x.dim());
            let target = if dist {
                Target::Dist(y.view())
            } else {
                Target::Labels(&labels)
            };
            let (l, g) = (loss.view_mut(), grad.view_mut());
            kernel::cross_entropy(x.view(), target, l, g, F::one(), exec).expect("shapes agree")
        };
        for at in [0, k / 2, k - 1, k, 3 * k - 1] {
            for v in [f64::NAN, f64::INFINITY] {
                let mut bad = x.clone();
                if let Some(slot) = bad.iter_mut().nth(at) {
                    *slot = v;
                }
                for (dist, exec) in [(false, Exec::Inline), (true, Exec::Pool)] {
                    assert_eq!(
                        screen(&x, dist, exec),
                        Screened::Clean,
                        "clean [{rows}, {k}]"
                    );
                    let got = screen(&bad, dist, exec);
                    assert_eq!(
                        got,
                        Screened::Suspect,
                        "{v} at {at} of [{rows}, {k}], dist {dist}"
                    );
                }
            }
        }
    }
}

/// What forward's screen says of `x`.
pub fn screen<F: Element>(x: &Array2<f64>, form: Form, exec: Exec) -> Screened {
    let x = cast::<F>(x);
    let mut out = Array2::<F>::zeros(x.dim());
    kernel::forward(x.view(), out.view_mut(), F::one(), form, exec).expect("shapes agree")
}

/// Softmax past the kernel's streaming threshold (32 MiB of output), f32
/// and f64, on this process's code path. Rows of 4001 values start at
/// every alignment. Masked rows come first, right after the first
/// unmasked row, in a pair and last: the places where a row's stores wait
/// for the next row's pass, or for the end.
pub fn check_streamed() {
    fn one<F: Element>(n_rows: usize) {
        let inv_t = 1.0 / 0.7;
        let mut x = Array2::from_shape_fn((n_rows, 4001), |(r, j)| {
            ((r * 31 + j * 17) % 211) as f64 * 0.07 - 5.0
        });
        for r in [0, 2, 3, n_rows - 1] {
            x.row_mut(r).fill(NEG_INF);
        }
        let got = forward::<F>(&x, inv_t, Form::Probs, Exec::Inline);
        for (r, (g, xr)) in rows(&got).zip(rows(&x)).enumerate() {
            check_forward_row::<F>(&format!("streamed row {r}"), &g, &xr, inv_t, Form::Probs);
        }
    }
    one::<f32>(2100);
    one::<f64>(1050);
}

/// The streamed softmax given less than its two scratch rows: the same
/// answer as the cached rows, bit for bit, rather than a wrong one.
pub fn check_short_scratch() {
    fn one<F: Element>() {
        let (rows, k) = (5, 1003);
        let x: Vec<F> = (0..rows * k)
            .map(|i| F::from((i * 37 % 101) as f64 * 0.11 - 5.0).unwrap_or_default())
            .collect();
        let inv_t = F::from(1.3).unwrap_or_default();
        let mut cached = vec![F::zero(); rows * k];
        assert!(F::softmax_rows(&x, k, inv_t, &mut cached));
        for scratch in [0, k - 1, k, 2 * k - 1] {
            let mut e = vec![F::zero(); scratch];
            let mut got = vec![F::zero(); rows * k];
            assert!(F::softmax_rows_streamed(&x, k, inv_t, &mut e, &mut got));
            assert!(got == cached, "{} scratch values", scratch);
        }
        // Enough scratch: streamed, and within rounding of the cached rows.
        let mut e = vec![F::zero(); 2 * k];
        let mut got = vec![F::zero(); rows * k];
        assert!(F::softmax_rows_streamed(&x, k, inv_t, &mut e, &mut got));
        let tol = F::epsilon() * F::from(8.0).unwrap_or_default();
        for (i, (g, c)) in got.iter().zip(&cached).enumerate() {
            assert!((*g - *c).abs() <= tol * *c, "value {i}: {g:?} vs {c:?}");
        }
    }
    one::<f32>();
    one::<f64>();
}

pub fn check_all_ops() {
    check_all_finite();
    check_streamed();
    check_short_scratch();
    check_forward_screens();
    check_backward_screens();
    check_cross_entropy_screens();
    let ks = [
        1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 257, 1000,
    ];
    for (n, &k) in ks.iter().enumerate() {
        let mut x = spread(2 * k, n as u64, -1e4 - 60.0, -1e4 + 5.0);
        if k > 3 {
            x[k / 3] = NEG_INF;
        }
        let x = Array2::from_shape_vec((2, k), x).unwrap_or_default();
        let g = Array2::from_shape_vec((2, k), spread(2 * k, 50 + n as u64, -1.0, 1.0))
            .unwrap_or_default();
        let inv_t = f32_exact(1.0 / 1.3);
        for form in FORMS {
            let f32_fwd = forward::<f32>(&x, inv_t, form, Exec::Inline);
            let f64_fwd = forward::<f64>(&x, inv_t, form, Exec::Pool);
            for (r, xr) in rows(&x).enumerate() {
                check_forward_row::<f32>("f32", &f32_fwd.row(r).to_vec(), &xr, inv_t, form);
                check_forward_row::<f64>("f64", &f64_fwd.row(r).to_vec(), &xr, inv_t, form);
                let gr = g.row(r).to_vec();
                let want = {
                    let s = softmax(&xr, inv_t);
                    match form {
                        Form::Probs => {
                            let d = sum(s.iter().zip(&gr).map(|(s, g)| s * g));
                            s.iter()
                                .zip(&gr)
                                .map(|(s, g)| inv_t * s * (g - d))
                                .collect::<Vec<_>>()
                        }
                        Form::LogProbs => {
                            let sg = sum(gr.iter().copied());
                            s.iter()
                                .zip(&gr)
                                .map(|(s, g)| inv_t * (g - s * sg))
                                .collect()
                        }
                    }
                };
                let scale = inv_t * (1.0 + gr.iter().map(|v| v.abs()).sum::<f64>());
                let b32 = backward::<f32>(&x, &g, inv_t, form, Exec::Inline);
                let b64 = backward_from_logits::<f64>(&x, &g, inv_t, form, Exec::Inline);
                assert_close(
                    "backward f32",
                    &b32.row(r).to_vec(),
                    &want,
                    1e-5,
                    None,
                    scale,
                );
                assert_close(
                    "backward f64",
                    &b64.row(r).to_vec(),
                    &want,
                    1e-12,
                    None,
                    scale,
                );
            }
        }
        let labels = [0, (k / 2) as u32];
        let (loss, grad) = cross_entropy_labels::<f32>(&x, &labels, inv_t, Exec::Inline);
        for (r, xr) in rows(&x).enumerate() {
            let (wl, wg) = cross_entropy_row(&xr, &one_hot(k, labels[r] as usize), inv_t);
            assert_close("ce loss", &[loss[r]], &[wl], 1e-5, None, wl.abs().max(1.0));
            assert_close(
                "ce grad",
                &grad.row(r).to_vec(),
                &wg,
                1e-5,
                None,
                2.0 * inv_t,
            );
        }
    }
}
