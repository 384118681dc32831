//! `Vector`: a SIMD register of f32 or f64 lanes, and the row operations
//! written once over it (explicit lanes, several accumulators, vector exp).
//! The scalar tail of each row goes through `Real`, the same algorithm.
// Only x86-64 has `Vector` implementations so far (NEON uses `rows`).
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::exp::Real;

/// One SIMD register of `Self::T` lanes. Implementations exist only for
/// instruction sets the CPU has been checked for (see `dispatch`).
pub(crate) trait Vector: Copy {
    type T: Real;
    const LANES: usize;

    fn splat(v: Self::T) -> Self;
    /// Loads `LANES` values; `src` has exactly that many.
    fn load(src: &[Self::T]) -> Self;
    /// Stores `LANES` values; `dst` has exactly that many.
    fn store(self, dst: &mut [Self::T]);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `self * b + c`, fused.
    fn fmadd(self, b: Self, c: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    /// `self` with the lanes where `z < limit` set to 0.
    fn zero_where_below(self, z: Self, limit: Self) -> Self;
    /// `2^n` from `t = n + SHIFTER` (n an integer held in t's low bits).
    fn pow2_from_shifted(t: Self) -> Self;
    /// The last step of exp: `p · 2^n` where `n = t - SHIFTER`, and 0 where
    /// `z < MIN_ARG`. This default builds 2^n in the exponent bits and masks;
    /// AVX-512 overrides it with `vscalefps`, which underflows to 0 itself.
    #[inline(always)]
    fn scale_pow2(p: Self, t: Self, n: Self, z: Self, min_arg: Self) -> Self {
        let _ = n;
        p.mul(Self::pow2_from_shifted(t))
            .zero_where_below(z, min_arg)
    }
    fn reduce_max(self) -> Self::T;
    /// Sum of the lanes, in f64.
    fn reduce_sum(self) -> f64;

    /// Stores `LANES` values into `dst` (exactly that many), past the cache
    /// when `dst` is aligned to a whole vector; this default stores normally.
    #[inline(always)]
    fn stream(self, dst: &mut [Self::T]) {
        self.store(dst)
    }

    /// Orders earlier streaming stores before any later store (they are
    /// weakly ordered), so a row is complete before another thread reads it.
    #[inline(always)]
    fn fence() {}
}

/// Constants of the exp of `Real`, per lane type.
pub(crate) trait ExpConsts: Real {
    const MIN_ARG: Self;
    /// Lower clamp of the argument: 2^round(LOWEST·log2 e) underflows to 0.
    const LOWEST: Self;
    const MAX_ARG: Self;
    const SHIFTER: Self;
    const LOG2_E: Self;
    const LN2_HI: Self;
    const LN2_LO: Self;
    /// Polynomial coefficients of e^r, highest degree first.
    const POLY: &'static [Self];
}

/// exp of every lane, the algorithm of [`Real::exp`] (see `exp.rs`).
#[inline(always)]
fn exp<V: Vector>(z: V) -> V
where
    V::T: ExpConsts,
{
    exp_below(z.min(V::splat(V::T::MAX_ARG)))
}

/// exp of lanes known to be at most `MAX_ARG`, such as the `x - max(x)` of
/// softmax: one instruction fewer than [`exp`] in the hottest loop.
#[inline(always)]
fn exp_below<V: Vector>(z: V) -> V
where
    V::T: ExpConsts,
{
    // Clamped far enough below MIN_ARG that 2^n underflows to 0 (and -inf
    // becomes finite): `scale_pow2` gets 0 there by masking or by underflow.
    let zc = z.max(V::splat(V::T::LOWEST));
    let shifter = V::splat(V::T::SHIFTER);
    let t = zc.fmadd(V::splat(V::T::LOG2_E), shifter);
    let n = t.sub(shifter);
    let r = n.fmadd(V::splat(V::T::ZERO - V::T::LN2_HI), zc);
    let r = n.fmadd(V::splat(V::T::ZERO - V::T::LN2_LO), r);
    let mut coeffs = V::T::POLY.iter();
    let mut p = V::splat(coeffs.next().copied().unwrap_or(V::T::ZERO));
    for &c in coeffs {
        p = p.fmadd(r, V::splat(c));
    }
    V::scale_pow2(p, t, n, z, V::splat(V::T::MIN_ARG))
}

/// Vectors per f32 partial sum before it is folded into f64: each lane adds
/// at most this many terms in `T`, so the error does not grow with k.
const BLOCK: usize = 16;

/// Sums `f(i)` over the row's full vectors: two accumulators in `T`, folded
/// into f64 every [`BLOCK`] vectors.
#[inline(always)]
fn sum_vectors<V: Vector>(n: usize, mut f: impl FnMut(usize) -> V) -> f64 {
    let mut total = 0.0;
    let mut i = 0;
    while i < n {
        let end = (i + BLOCK).min(n);
        let mut a = V::splat(V::T::ZERO);
        let mut b = V::splat(V::T::ZERO);
        while i + 1 < end {
            a = a.add(f(i));
            b = b.add(f(i + 1));
            i += 2;
        }
        if i < end {
            a = a.add(f(i));
            i += 1;
        }
        total += a.add(b).reduce_sum();
    }
    total
}

#[inline(always)]
pub(crate) fn row_max<V: Vector>(x: &[V::T]) -> V::T {
    let mut xs = x.chunks_exact(V::LANES);
    let mut a = V::splat(V::T::NEG_INF);
    let mut b = a;
    loop {
        match (xs.next(), xs.next()) {
            (Some(p), Some(q)) => {
                a = a.max(V::load(p));
                b = b.max(V::load(q));
            }
            (Some(p), None) => {
                a = a.max(V::load(p));
                break;
            }
            _ => break,
        }
    }
    let m = a.max(b).reduce_max();
    xs.remainder().iter().fold(m, |m, &v| V::T::vmax(m, v))
}

/// `(x - m) · inv_t` for one vector; the multiply is skipped at T = 1,
/// the common case, as a separate instantiation rather than a branch.
#[inline(always)]
fn shifted<V: Vector, const SCALED: bool>(x: V, vm: V, vt: V) -> V {
    if SCALED {
        x.sub(vm).mul(vt)
    } else {
        x.sub(vm)
    }
}

#[inline(always)]
pub(crate) fn exp_shifted<V: Vector>(x: &[V::T], m: V::T, inv_t: V::T, out: &mut [V::T]) -> f64
where
    V::T: ExpConsts,
{
    if inv_t == V::T::ONE {
        exp_shifted_as::<V, false>(x, m, inv_t, out)
    } else {
        exp_shifted_as::<V, true>(x, m, inv_t, out)
    }
}

#[inline(always)]
fn exp_shifted_as<V: Vector, const SCALED: bool>(
    x: &[V::T],
    m: V::T,
    inv_t: V::T,
    out: &mut [V::T],
) -> f64
where
    V::T: ExpConsts,
{
    let (vm, vt) = (V::splat(m), V::splat(inv_t));
    let mut tail = 0.0;
    let mut xs = x.chunks_exact(V::LANES);
    let mut os = out.chunks_exact_mut(V::LANES);
    let n = xs.len().min(os.len());
    let body = sum_vectors::<V>(
        n,
        #[inline(always)]
        |_| match (xs.next(), os.next()) {
            (Some(x), Some(o)) => {
                let e = exp_below(shifted::<V, SCALED>(V::load(x), vm, vt));
                e.store(o);
                e
            }
            _ => V::splat(V::T::ZERO),
        },
    );
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = V::T::exp((v - m) * inv_t, true);
        tail += o.widen();
    }
    body + tail
}

#[inline(always)]
pub(crate) fn sum_exp_shifted<V: Vector>(x: &[V::T], m: V::T, inv_t: V::T) -> f64
where
    V::T: ExpConsts,
{
    if inv_t == V::T::ONE {
        sum_exp_shifted_as::<V, false>(x, m, inv_t)
    } else {
        sum_exp_shifted_as::<V, true>(x, m, inv_t)
    }
}

#[inline(always)]
fn sum_exp_shifted_as<V: Vector, const SCALED: bool>(x: &[V::T], m: V::T, inv_t: V::T) -> f64
where
    V::T: ExpConsts,
{
    let (vm, vt) = (V::splat(m), V::splat(inv_t));
    let mut xs = x.chunks_exact(V::LANES);
    let body = sum_vectors::<V>(
        xs.len(),
        #[inline(always)]
        |_| match xs.next() {
            Some(x) => exp_below(shifted::<V, SCALED>(V::load(x), vm, vt)),
            None => V::splat(V::T::ZERO),
        },
    );
    let mut tail = 0.0;
    for &v in xs.remainder() {
        tail += V::T::exp((v - m) * inv_t, true).widen();
    }
    body + tail
}

#[inline(always)]
pub(crate) fn dot<V: Vector>(a: &[V::T], b: &[V::T]) -> f64 {
    let mut xs = a.chunks_exact(V::LANES);
    let mut ys = b.chunks_exact(V::LANES);
    let n = xs.len().min(ys.len());
    let body = sum_vectors::<V>(
        n,
        #[inline(always)]
        |_| match (xs.next(), ys.next()) {
            (Some(x), Some(y)) => V::load(x).mul(V::load(y)),
            _ => V::splat(V::T::ZERO),
        },
    );
    let mut tail = 0.0;
    for (&x, &y) in xs.remainder().iter().zip(ys.remainder()) {
        tail += (x * y).widen();
    }
    body + tail
}

#[inline(always)]
pub(crate) fn sum<V: Vector>(a: &[V::T]) -> f64 {
    let mut xs = a.chunks_exact(V::LANES);
    let body = sum_vectors::<V>(
        xs.len(),
        #[inline(always)]
        |_| match xs.next() {
            Some(x) => V::load(x),
            None => V::splat(V::T::ZERO),
        },
    );
    let mut tail = 0.0;
    for &x in xs.remainder() {
        tail += x.widen();
    }
    body + tail
}

#[inline(always)]
pub(crate) fn dot_exp<V: Vector>(l: &[V::T], g: &[V::T]) -> f64
where
    V::T: ExpConsts,
{
    let mut xs = l.chunks_exact(V::LANES);
    let mut ys = g.chunks_exact(V::LANES);
    let n = xs.len().min(ys.len());
    let body = sum_vectors::<V>(
        n,
        #[inline(always)]
        |_| match (xs.next(), ys.next()) {
            (Some(x), Some(y)) => exp(V::load(x)).mul(V::load(y)),
            _ => V::splat(V::T::ZERO),
        },
    );
    let mut tail = 0.0;
    for (&x, &y) in xs.remainder().iter().zip(ys.remainder()) {
        tail += (V::T::exp(x, true) * y).widen();
    }
    body + tail
}

/// `out_i = f(a_i)` vector by vector, then `g` on the scalar tail.
#[inline(always)]
fn map1<V: Vector>(a: &[V::T], out: &mut [V::T], f: impl Fn(V) -> V, g: impl Fn(V::T) -> V::T) {
    let mut xs = a.chunks_exact(V::LANES);
    let mut os = out.chunks_exact_mut(V::LANES);
    for (x, o) in (&mut xs).zip(&mut os) {
        f(V::load(x)).store(o);
    }
    for (o, &x) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = g(x);
    }
}

/// `out_i = f(a_i, b_i)` vector by vector, then `g` on the scalar tail.
#[inline(always)]
fn map2<V: Vector>(
    a: &[V::T],
    b: &[V::T],
    out: &mut [V::T],
    f: impl Fn(V, V) -> V,
    g: impl Fn(V::T, V::T) -> V::T,
) {
    let mut xs = a.chunks_exact(V::LANES);
    let mut ys = b.chunks_exact(V::LANES);
    let mut os = out.chunks_exact_mut(V::LANES);
    for ((x, y), o) in (&mut xs).zip(&mut ys).zip(&mut os) {
        f(V::load(x), V::load(y)).store(o);
    }
    let tail = os
        .into_remainder()
        .iter_mut()
        .zip(xs.remainder())
        .zip(ys.remainder());
    for ((o, &x), &y) in tail {
        *o = g(x, y);
    }
}

/// `out_i = f(out_i, b_i)` in place.
#[inline(always)]
fn update<V: Vector>(
    out: &mut [V::T],
    b: &[V::T],
    f: impl Fn(V, V) -> V,
    g: impl Fn(V::T, V::T) -> V::T,
) {
    let mut ys = b.chunks_exact(V::LANES);
    let mut os = out.chunks_exact_mut(V::LANES);
    for (o, y) in (&mut os).zip(&mut ys) {
        f(V::load(o), V::load(y)).store(o);
    }
    for (o, &y) in os.into_remainder().iter_mut().zip(ys.remainder()) {
        *o = g(*o, y);
    }
}

#[inline(always)]
pub(crate) fn log_shifted<V: Vector>(
    x: &[V::T],
    m: V::T,
    inv_t: V::T,
    lse: V::T,
    out: &mut [V::T],
) {
    let (vm, vt, vl) = (V::splat(m), V::splat(inv_t), V::splat(lse));
    map1::<V>(
        x,
        out,
        #[inline(always)]
        |x| x.sub(vm).mul(vt).sub(vl),
        #[inline(always)]
        |x| (x - m) * inv_t - lse,
    );
}

#[inline(always)]
pub(crate) fn scale<V: Vector>(out: &mut [V::T], c: V::T) {
    let vc = V::splat(c);
    let mut os = out.chunks_exact_mut(V::LANES);
    for o in &mut os {
        V::load(o).mul(vc).store(o);
    }
    for o in os.into_remainder() {
        *o = *o * c;
    }
}

#[inline(always)]
pub(crate) fn vjp<V: Vector>(s: &[V::T], g: &[V::T], d: V::T, c: V::T, out: &mut [V::T]) {
    let (vd, vc) = (V::splat(d), V::splat(c));
    map2::<V>(
        s,
        g,
        out,
        #[inline(always)]
        |s, g| vc.mul(s).mul(g.sub(vd)),
        #[inline(always)]
        |s, g| c * s * (g - d),
    );
}

#[inline(always)]
pub(crate) fn vjp_in_place<V: Vector>(out: &mut [V::T], g: &[V::T], d: V::T, c: V::T) {
    let (vd, vc) = (V::splat(d), V::splat(c));
    update::<V>(
        out,
        g,
        #[inline(always)]
        |s, g| vc.mul(s).mul(g.sub(vd)),
        #[inline(always)]
        |s, g| c * s * (g - d),
    );
}

#[inline(always)]
pub(crate) fn log_vjp<V: Vector>(l: &[V::T], g: &[V::T], sg: V::T, c: V::T, out: &mut [V::T])
where
    V::T: ExpConsts,
{
    let (vs, vc) = (V::splat(sg), V::splat(c));
    map2::<V>(
        l,
        g,
        out,
        #[inline(always)]
        |l, g| vc.mul(g.sub(exp(l).mul(vs))),
        #[inline(always)]
        |l, g| c * (g - V::T::exp(l, true) * sg),
    );
}

#[inline(always)]
pub(crate) fn log_vjp_in_place<V: Vector>(out: &mut [V::T], g: &[V::T], sg: V::T, c: V::T)
where
    V::T: ExpConsts,
{
    let (vs, vc) = (V::splat(sg), V::splat(c));
    update::<V>(
        out,
        g,
        #[inline(always)]
        |l, g| vc.mul(g.sub(exp(l).mul(vs))),
        #[inline(always)]
        |l, g| c * (g - V::T::exp(l, true) * sg),
    );
}

#[inline(always)]
pub(crate) fn scaled<V: Vector>(s: &[V::T], a: V::T, out: &mut [V::T]) {
    let va = V::splat(a);
    map1::<V>(
        s,
        out,
        #[inline(always)]
        |s| va.mul(s),
        #[inline(always)]
        |s| a * s,
    );
}

/// [`scaled`] with streaming stores from the first vector-aligned element of
/// `out` on (the head before it, and the tail, are stored normally).
#[inline(always)]
pub(crate) fn scaled_stream<V: Vector>(s: &[V::T], a: V::T, out: &mut [V::T]) {
    let align = V::LANES * std::mem::size_of::<V::T>();
    let head = out.as_ptr().align_offset(align).min(out.len()).min(s.len());
    let (out_head, out_body) = out.split_at_mut(head);
    let (s_head, s_body) = s.split_at(head);
    for (o, &v) in out_head.iter_mut().zip(s_head) {
        *o = a * v;
    }
    let va = V::splat(a);
    let mut xs = s_body.chunks_exact(V::LANES);
    let mut os = out_body.chunks_exact_mut(V::LANES);
    for (x, o) in (&mut xs).zip(&mut os) {
        va.mul(V::load(x)).stream(o);
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = a * v;
    }
    V::fence();
}

#[inline(always)]
pub(crate) fn scaled_exp<V: Vector>(l: &[V::T], a: V::T, out: &mut [V::T])
where
    V::T: ExpConsts,
{
    let va = V::splat(a);
    map1::<V>(
        l,
        out,
        #[inline(always)]
        |l| va.mul(exp(l)),
        #[inline(always)]
        |l| a * V::T::exp(l, true),
    );
}
