//! `Element`: the per-row vector operations every kernel is built from, with
//! portable scalar defaults (the reference); f32 and f64 override them with
//! SIMD in `simd`.

use num_traits::Float;
use std::fmt::Debug;

/// A floating-point type the kernels run on (f32 or f64).
///
/// Each method works on whole rows; all slices passed together have the same
/// length (the caller guarantees it, the defaults zip and so never index out
/// of bounds). Sums are returned in f64 so that their error does not grow
/// with the row length for f32 data.
pub trait Element: Float + Debug + Default + Send + Sync + 'static {
    /// Converts from f64, rounding to nearest.
    fn of(v: f64) -> Self;

    /// One row of softmax(x · inv_t) into `out` (see `forward`); by
    /// default [`super::forward::softmax_row_by_parts`], pass by pass.
    ///
    /// This and the other forward row methods return whether the rows they
    /// read were free of NaN and `+inf` (`-inf`, a mask, is allowed): such a
    /// value makes the row's sum of exponentials NaN, so the screen costs one
    /// comparison per row instead of a pass over the data. When false, the
    /// output is meaningless.
    fn softmax_row(x: &[Self], inv_t: Self, out: &mut [Self]) -> bool {
        super::forward::softmax_row_by_parts(x, inv_t, out)
    }

    /// Softmax of each `k`-value row of `x` with `e` (`2k` values, of which
    /// the default uses `k`) as scratch and streaming stores into `out`; by default
    /// [`super::forward::softmax_rows_streamed_by_row`]. With less scratch
    /// it does what [`Element::softmax_rows`] does.
    fn softmax_rows_streamed(
        x: &[Self],
        k: usize,
        inv_t: Self,
        e: &mut [Self],
        out: &mut [Self],
    ) -> bool {
        super::forward::softmax_rows_streamed_by_row(x, k, inv_t, e, out)
    }

    /// One row of log-softmax(x · inv_t) into `out`; by default
    /// [`super::forward::log_softmax_row_by_parts`].
    fn log_softmax_row(x: &[Self], inv_t: Self, out: &mut [Self]) -> bool {
        super::forward::log_softmax_row_by_parts(x, inv_t, out)
    }

    /// Softmax of each row of `x`, contiguous rows of `k` values, into
    /// `out` (same shape); by default row by row. SIMD types pipeline it.
    fn softmax_rows(x: &[Self], k: usize, inv_t: Self, out: &mut [Self]) -> bool {
        super::forward::softmax_rows_by_row(x, k, inv_t, out)
    }

    /// As [`Element::softmax_rows`] for log-softmax.
    fn log_softmax_rows(x: &[Self], k: usize, inv_t: Self, out: &mut [Self]) -> bool {
        super::forward::log_softmax_rows_by_row(x, k, inv_t, out)
    }

    /// Whether every value of `x` is finite, or `-inf` too when
    /// `neg_inf_ok` (a masked logit): false on any NaN or `+inf`.
    fn all_finite(x: &[Self], neg_inf_ok: bool) -> bool {
        super::finite::all_finite_by_blocks(x, neg_inf_ok)
    }

    /// The largest value of `x`; `-inf` for an empty or fully masked row.
    fn row_max(x: &[Self]) -> Self {
        x.iter().fold(Self::neg_infinity(), |m, &v| m.max(v))
    }

    /// `out_i = exp((x_i - m) * inv_t)`; returns `Σ out_i`.
    fn exp_shifted(x: &[Self], m: Self, inv_t: Self, out: &mut [Self]) -> f64 {
        let mut acc = Lanes::default();
        for (o, &v) in out.iter_mut().zip(x) {
            let e = ((v - m) * inv_t).exp();
            *o = e;
            acc.add(e.to_f64().unwrap_or(0.0));
        }
        acc.sum()
    }

    /// `Σ exp((x_i - m) * inv_t)`, writing nothing.
    fn sum_exp_shifted(x: &[Self], m: Self, inv_t: Self) -> f64 {
        let mut acc = Lanes::default();
        for &v in x {
            acc.add(((v - m) * inv_t).exp().to_f64().unwrap_or(0.0));
        }
        acc.sum()
    }

    /// `out_i = (x_i - m) * inv_t - lse`.
    fn log_shifted(x: &[Self], m: Self, inv_t: Self, lse: Self, out: &mut [Self]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m) * inv_t - lse;
        }
    }

    /// `out_i *= c`.
    fn scale(out: &mut [Self], c: Self) {
        for o in out {
            *o = *o * c;
        }
    }

    /// `Σ a_i b_i`.
    fn dot(a: &[Self], b: &[Self]) -> f64 {
        let mut acc = Lanes::default();
        for (&x, &y) in a.iter().zip(b) {
            acc.add((x * y).to_f64().unwrap_or(0.0));
        }
        acc.sum()
    }

    /// `Σ a_i`.
    fn sum(a: &[Self]) -> f64 {
        let mut acc = Lanes::default();
        for &x in a {
            acc.add(x.to_f64().unwrap_or(0.0));
        }
        acc.sum()
    }

    /// `Σ exp(l_i) g_i`: ⟨g, s⟩ from log-probabilities.
    fn dot_exp(l: &[Self], g: &[Self]) -> f64 {
        let mut acc = Lanes::default();
        for (&x, &y) in l.iter().zip(g) {
            acc.add((x.exp() * y).to_f64().unwrap_or(0.0));
        }
        acc.sum()
    }

    /// Softmax VJP: `out_j = c * s_j * (g_j - d)`.
    fn vjp(s: &[Self], g: &[Self], d: Self, c: Self, out: &mut [Self]) {
        for ((o, &sj), &gj) in out.iter_mut().zip(s).zip(g) {
            *o = c * sj * (gj - d);
        }
    }

    /// Softmax VJP in place, `s` held in `out`: `out_j = c * out_j * (g_j - d)`.
    fn vjp_in_place(out: &mut [Self], g: &[Self], d: Self, c: Self) {
        for (o, &gj) in out.iter_mut().zip(g) {
            *o = c * *o * (gj - d);
        }
    }

    /// Log-softmax VJP: `out_j = c * (g_j - exp(l_j) * sg)`.
    fn log_vjp(l: &[Self], g: &[Self], sg: Self, c: Self, out: &mut [Self]) {
        for ((o, &lj), &gj) in out.iter_mut().zip(l).zip(g) {
            *o = c * (gj - lj.exp() * sg);
        }
    }

    /// Log-softmax VJP in place, `l` held in `out`: `out_j = c * (g_j - exp(out_j) * sg)`.
    fn log_vjp_in_place(out: &mut [Self], g: &[Self], sg: Self, c: Self) {
        for (o, &gj) in out.iter_mut().zip(g) {
            *o = c * (gj - o.exp() * sg);
        }
    }

    /// `out_j = a * s_j`.
    fn scaled(s: &[Self], a: Self, out: &mut [Self]) {
        for (o, &sj) in out.iter_mut().zip(s) {
            *o = a * sj;
        }
    }

    /// As [`scaled`](Self::scaled), with stores that bypass the cache where
    /// the CPU has them: for outputs far larger than the cache, which would
    /// otherwise be read from memory before being overwritten.
    fn scaled_stream(s: &[Self], a: Self, out: &mut [Self]) {
        Self::scaled(s, a, out)
    }

    /// `out_j = a * exp(l_j)`.
    fn scaled_exp(l: &[Self], a: Self, out: &mut [Self]) {
        for (o, &lj) in out.iter_mut().zip(l) {
            *o = a * lj.exp();
        }
    }
}

/// Four independent f64 accumulators: breaks the add dependency chain and
/// keeps the rounding error of long sums small.
#[derive(Default)]
struct Lanes {
    lane: [f64; 4],
    next: usize,
}

impl Lanes {
    #[inline]
    fn add(&mut self, v: f64) {
        if let Some(l) = self.lane.get_mut(self.next) {
            *l += v;
        }
        self.next = (self.next + 1) & 3;
    }

    fn sum(&self) -> f64 {
        let [a, b, c, d] = self.lane;
        (a + b) + (c + d)
    }
}
