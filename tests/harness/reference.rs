//! Plain f64 reference implementations, written from the formulas in
//! DESIGN.md §2 independently of the kernel.

/// Softmax of one vector at temperature `t`; masks and full masks as DESIGN.md §4.
pub fn softmax(x: &[f64], t: f64) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return vec![0.0; x.len()];
    }
    let e: Vec<f64> = x.iter().map(|&v| ((v - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Log-softmax of one vector.
pub fn log_softmax(x: &[f64], t: f64) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return vec![f64::NEG_INFINITY; x.len()];
    }
    let lse = x.iter().map(|&v| ((v - m) / t).exp()).sum::<f64>().ln();
    x.iter().map(|&v| (v - m) / t - lse).collect()
}

/// Jacobian of softmax (or log-softmax), row-major `[k, k]`.
pub fn jacobian(x: &[f64], t: f64, log: bool) -> Vec<f64> {
    let s = softmax(x, t);
    let k = x.len();
    let masked = x.iter().all(|&v| v == f64::NEG_INFINITY);
    let mut j = vec![0.0; k * k];
    if masked {
        return j;
    }
    for i in 0..k {
        for c in 0..k {
            let d = if i == c { 1.0 } else { 0.0 };
            j[i * k + c] = if log {
                (d - s[c]) / t
            } else {
                (d * s[i] - s[i] * s[c]) / t
            };
        }
    }
    j
}

/// g·J for one vector: the gradient with respect to the logits.
pub fn backward(x: &[f64], g: &[f64], t: f64, log: bool) -> Vec<f64> {
    let k = x.len();
    let j = jacobian(x, t, log);
    (0..k)
        .map(|c| (0..k).map(|i| g[i] * j[i * k + c]).sum())
        .collect()
}

/// Cross-entropy loss and gradient against a distribution `y`.
pub fn cross_entropy(x: &[f64], y: &[f64], t: f64) -> (f64, Vec<f64>) {
    if x.iter().all(|&v| v == f64::NEG_INFINITY) {
        return (0.0, vec![0.0; x.len()]);
    }
    let ls = log_softmax(x, t);
    let s = softmax(x, t);
    let mass: f64 = y.iter().sum();
    let loss = y
        .iter()
        .zip(&ls)
        .filter(|(&yi, _)| yi > 0.0)
        .map(|(&yi, &l)| -yi * l)
        .sum();
    let grad = s
        .iter()
        .zip(y)
        .map(|(&si, &yi)| (si * mass - yi) / t)
        .collect();
    (loss, grad)
}

/// Applies a per-vector function to every row of a flat `[rows, k]` array.
pub fn per_row(x: &[f64], k: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    x.chunks(k).flat_map(f).collect()
}

/// Deterministic pseudo-random values in `[lo, hi)` (xorshift64*).
pub fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Largest absolute difference, treating equal infinities as equal.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, f64::max)
}
