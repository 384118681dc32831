//! The `Element` row operations as branch-free loops over fixed-width
//! chunks, written so that LLVM vectorises them for whatever target features
//! the caller (see `dispatch`) enables. Everything is `#[inline(always)]`:
//! code compiled outside a `#[target_feature]` function would not use them.

use super::exp::Real;

/// Values per chunk: two AVX-512 registers of f32 (four of f64), so each
/// reduction has several independent accumulators to hide add latency.
const W: usize = 32;
/// Chunks summed in `T` before the partial sums are folded into f64: each
/// f32 lane adds at most this many terms, so the error does not grow with k.
const BLOCK: usize = 8;

/// Sums `f(chunk)` lane-wise: in `T` within blocks of [`BLOCK`] chunks, then
/// in f64 across blocks, and reduces the lanes pairwise.
#[inline(always)]
fn lane_sum<T: Real, C>(chunks: &[C], mut f: impl FnMut(&C) -> [T; W]) -> f64 {
    let mut wide = [0.0f64; W];
    for block in chunks.chunks(BLOCK) {
        let mut part = [T::ZERO; W];
        for c in block {
            add(&mut part, f(c));
        }
        widen_into(&mut wide, part);
    }
    reduce(wide)
}

/// As [`lane_sum`] over pairs of chunks of two rows of equal length.
#[inline(always)]
fn lane_sum_zip<T: Real>(
    a: &[[T; W]],
    b: &[[T; W]],
    mut f: impl FnMut(&[T; W], &[T; W]) -> [T; W],
) -> f64 {
    let mut wide = [0.0f64; W];
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut part = [T::ZERO; W];
        for (a, b) in ab.iter().zip(bb) {
            add(&mut part, f(a, b));
        }
        widen_into(&mut wide, part);
    }
    reduce(wide)
}

#[inline(always)]
fn add<T: Real>(acc: &mut [T; W], v: [T; W]) {
    for (a, v) in acc.iter_mut().zip(v) {
        *a = *a + v;
    }
}

#[inline(always)]
fn widen_into<T: Real>(wide: &mut [f64; W], part: [T; W]) {
    for (w, p) in wide.iter_mut().zip(part) {
        *w += p.widen();
    }
}

#[inline(always)]
fn reduce(mut wide: [f64; W]) -> f64 {
    let mut half = W / 2;
    while half > 0 {
        let (lo, hi) = wide.split_at_mut(half);
        for (a, b) in lo.iter_mut().zip(hi.iter()) {
            *a += *b;
        }
        half /= 2;
    }
    wide.first().copied().unwrap_or(0.0)
}

#[inline(always)]
pub(crate) fn row_max<T: Real>(x: &[T]) -> T {
    let (chunks, tail) = x.as_chunks::<W>();
    let mut acc = [T::NEG_INF; W];
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = T::vmax(*a, v);
        }
    }
    let m = acc.iter().fold(T::NEG_INF, |m, &v| T::vmax(m, v));
    tail.iter().fold(m, |m, &v| T::vmax(m, v))
}

#[inline(always)]
pub(crate) fn exp_shifted<T: Real>(fused: bool, x: &[T], m: T, inv_t: T, out: &mut [T]) -> f64 {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = T::exp((v - m) * inv_t, fused);
    }
    // Summing the row just written: it is still in L1/L2.
    sum(out)
}

#[inline(always)]
pub(crate) fn sum_exp_shifted<T: Real>(fused: bool, x: &[T], m: T, inv_t: T) -> f64 {
    let (xc, xt) = x.as_chunks::<W>();
    let mut tail = 0.0;
    for &v in xt {
        tail += T::exp((v - m) * inv_t, fused).widen();
    }
    let body = lane_sum(
        xc,
        #[inline(always)]
        |x: &[T; W]| {
            let mut e = *x;
            for e in e.iter_mut() {
                *e = T::exp((*e - m) * inv_t, fused);
            }
            e
        },
    );
    body + tail
}

#[inline(always)]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    let (ac, at) = a.as_chunks::<W>();
    let (bc, bt) = b.as_chunks::<W>();
    let mut tail = 0.0;
    for (&a, &b) in at.iter().zip(bt) {
        tail += (a * b).widen();
    }
    let body = lane_sum_zip(
        ac,
        bc,
        #[inline(always)]
        |a, b| {
            let mut p = *a;
            for (p, &b) in p.iter_mut().zip(b) {
                *p = *p * b;
            }
            p
        },
    );
    body + tail
}

#[inline(always)]
pub(crate) fn sum<T: Real>(a: &[T]) -> f64 {
    let (ac, at) = a.as_chunks::<W>();
    let mut tail = 0.0;
    for &v in at {
        tail += v.widen();
    }
    lane_sum(
        ac,
        #[inline(always)]
        |a: &[T; W]| *a,
    ) + tail
}

#[inline(always)]
pub(crate) fn dot_exp<T: Real>(fused: bool, l: &[T], g: &[T]) -> f64 {
    let (lc, lt) = l.as_chunks::<W>();
    let (gc, gt) = g.as_chunks::<W>();
    let mut tail = 0.0;
    for (&l, &g) in lt.iter().zip(gt) {
        tail += (T::exp(l, fused) * g).widen();
    }
    let body = lane_sum_zip(
        lc,
        gc,
        #[inline(always)]
        |l, g| {
            let mut p = *l;
            for (p, &g) in p.iter_mut().zip(g) {
                *p = T::exp(*p, fused) * g;
            }
            p
        },
    );
    body + tail
}

#[inline(always)]
pub(crate) fn log_shifted<T: Real>(x: &[T], m: T, inv_t: T, lse: T, out: &mut [T]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m) * inv_t - lse;
    }
}

#[inline(always)]
pub(crate) fn scale<T: Real>(out: &mut [T], c: T) {
    for o in out {
        *o = *o * c;
    }
}

#[inline(always)]
pub(crate) fn vjp<T: Real>(s: &[T], g: &[T], d: T, c: T, out: &mut [T]) {
    for ((o, &s), &g) in out.iter_mut().zip(s).zip(g) {
        *o = c * s * (g - d);
    }
}

#[inline(always)]
pub(crate) fn vjp_in_place<T: Real>(out: &mut [T], g: &[T], d: T, c: T) {
    for (o, &g) in out.iter_mut().zip(g) {
        *o = c * *o * (g - d);
    }
}

#[inline(always)]
pub(crate) fn log_vjp<T: Real>(fused: bool, l: &[T], g: &[T], sg: T, c: T, out: &mut [T]) {
    for ((o, &l), &g) in out.iter_mut().zip(l).zip(g) {
        *o = c * (g - T::exp(l, fused) * sg);
    }
}

#[inline(always)]
pub(crate) fn log_vjp_in_place<T: Real>(fused: bool, out: &mut [T], g: &[T], sg: T, c: T) {
    for (o, &g) in out.iter_mut().zip(g) {
        *o = c * (g - T::exp(*o, fused) * sg);
    }
}

#[inline(always)]
pub(crate) fn scaled<T: Real>(s: &[T], a: T, out: &mut [T]) {
    for (o, &s) in out.iter_mut().zip(s) {
        *o = a * s;
    }
}

#[inline(always)]
pub(crate) fn scaled_exp<T: Real>(fused: bool, l: &[T], a: T, out: &mut [T]) {
    for (o, &l) in out.iter_mut().zip(l) {
        *o = a * T::exp(l, fused);
    }
}
