//! `Vector`: a SIMD register of f32 or f64 lanes, and the row operations
//! written once over it (explicit lanes, several accumulators, vector exp).
//! A row's tail (its last `len % LANES` values) is one more vector, loaded
//! and stored through a mask, so every value takes the same vector path.
// Only x86-64 has `Vector` implementations so far (NEON uses `rows`).
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::exp::Real;
use crate::kernel::forward::clean_sum;

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

    /// Loads a row's tail, the `src.len() < LANES` values left after its
    /// full vectors, with `fill` in the other lanes, so that tails run the
    /// vector code rather than a scalar loop. This default goes through a
    /// stack copy; AVX-512 uses a masked load.
    #[inline(always)]
    fn load_part(src: &[Self::T], fill: Self::T) -> Self {
        let mut buf = [fill; MAX_LANES];
        for (b, &v) in buf.iter_mut().zip(src) {
            *b = v;
        }
        Self::load(&buf)
    }

    /// Stores the first `dst.len() < LANES` lanes (a row's tail).
    #[inline(always)]
    fn store_part(self, dst: &mut [Self::T]) {
        let mut buf = [Self::T::ZERO; MAX_LANES];
        self.store(&mut buf);
        for (d, &b) in dst.iter_mut().zip(&buf) {
            *d = b;
        }
    }
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
    /// `z < MIN_ARG` (z = -inf included, where p and t are NaN). A NaN `z`
    /// must give NaN: that is how forward finds NaN logits. This
    /// default builds 2^n in the exponent bits and blends; AVX-512 overrides
    /// it with a zero-masked `vscalefps`, so that no lane underflows.
    #[inline(always)]
    fn scale_pow2(p: Self, t: Self, n: Self, z: Self, min_arg: Self) -> Self {
        let _ = n;
        p.mul(Self::pow2_from_shifted(t))
            .zero_where_below(z, min_arg)
    }
    fn reduce_max(self) -> Self::T;
    /// Sum of the lanes, in f64.
    fn reduce_sum(self) -> f64;

    /// Hints that the cache line holding `p` will be used soon. Never
    /// faults and never reads memory as far as the program can tell, so `p`
    /// may point anywhere; this default does nothing.
    #[inline(always)]
    fn prefetch(p: *const Self::T) {
        let _ = p;
    }

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

/// The most lanes of any `Vector` (f32 on AVX-512).
const MAX_LANES: usize = 16;

/// Constants of the exp of `Real`, per lane type.
pub(crate) trait ExpConsts: Real {
    const MIN_ARG: Self;
    const MAX_ARG: Self;
    const SHIFTER: Self;
    const LOG2_E: Self;
    /// ln 2 as a sum of parts: r = z - n·part for each in turn.
    const LN2_PARTS: &'static [Self];
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
    // No clamp below: lanes under MIN_ARG (-inf included, which turns the
    // arithmetic into NaN) are set to 0 by `scale_pow2` from `z` itself.
    let shifter = V::splat(V::T::SHIFTER);
    let t = z.fmadd(V::splat(V::T::LOG2_E), shifter);
    let n = t.sub(shifter);
    let mut r = z;
    for &part in V::T::LN2_PARTS {
        r = n.fmadd(V::splat(V::T::ZERO - part), r);
    }
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

/// A running sum of vectors: two accumulators in `T` (to hide add
/// latency), folded into f64 every [`BLOCK`] vectors.
struct Sum<V> {
    a: V,
    b: V,
    n: usize,
    total: f64,
}

impl<V: Vector> Sum<V> {
    #[inline(always)]
    fn new() -> Self {
        let zero = V::splat(V::T::ZERO);
        Self {
            a: zero,
            b: zero,
            n: 0,
            total: 0.0,
        }
    }

    #[inline(always)]
    fn add2(&mut self, p: V, q: V) {
        self.a = self.a.add(p);
        self.b = self.b.add(q);
        self.n += 2;
        if self.n >= BLOCK {
            self.fold();
        }
    }

    #[inline(always)]
    fn fold(&mut self) {
        self.total += self.a.add(self.b).reduce_sum();
        self.a = V::splat(V::T::ZERO);
        self.b = self.a;
        self.n = 0;
    }

    #[inline(always)]
    fn finish(mut self) -> f64 {
        self.fold();
        self.total
    }
}

/// The values after a row's vector pairs (fewer than 2·LANES), as two
/// parts of at most LANES each, for `load_part`/`store_part`.
#[inline(always)]
fn halves<T>(rest: &[T], lanes: usize) -> (&[T], &[T]) {
    rest.split_at(lanes.min(rest.len()))
}

#[inline(always)]
fn halves_mut<T>(rest: &mut [T], lanes: usize) -> (&mut [T], &mut [T]) {
    let at = lanes.min(rest.len());
    rest.split_at_mut(at)
}

/// Σ f(x_i) over a row, two vectors per step; lanes past the end hold
/// `fill`, for which `f` must give 0. `ahead` as in [`Ahead`]; returns the
/// sum and the max of `beside`'s row.
#[inline(always)]
fn sum_map<V: Vector, const A: usize, const NEXT: bool>(
    x: &[V::T],
    fill: V::T,
    ahead: Ahead<V::T, A>,
    mut beside: MaxBeside<'_, V, NEXT>,
    f: impl Fn(V) -> V,
) -> (f64, V::T) {
    let mut acc = Sum::new();
    let mut xs = x.chunks_exact(2 * V::LANES);
    for (i, c) in (&mut xs).enumerate() {
        ahead.fetch::<V>(i);
        beside.step();
        let (p, q) = c.split_at(V::LANES);
        acc.add2(f(V::load(p)), f(V::load(q)));
    }
    let (p, q) = halves(xs.remainder(), V::LANES);
    acc.add2(f(V::load_part(p, fill)), f(V::load_part(q, fill)));
    (acc.finish(), beside.finish())
}

/// Rows to prefetch while a compute-bound pass runs over another: at step
/// `i` (two vectors), the same two vectors' lines of each row in `rows`.
/// Loading the next row (or the row a later pass stores to) this way
/// overlaps its memory latency with the exp arithmetic, where otherwise a
/// pass that only loads or only stores would wait for it.
#[derive(Clone, Copy)]
struct Ahead<T, const A: usize> {
    rows: [*const T; A],
}

/// Rows up to this many bytes are prefetched whole, a pass ahead; longer
/// ones would not stay in L1 until used, and stream well unaided.
const AHEAD_MAX_BYTES: usize = 32 << 10;

impl<T> Ahead<T, 0> {
    #[inline(always)]
    fn none() -> Self {
        Self { rows: [] }
    }
}

impl<T, const A: usize> Ahead<T, A> {
    #[inline(always)]
    fn fetch<V: Vector<T = T>>(&self, i: usize) {
        for row in self.rows.into_iter().filter(|r| !r.is_null()) {
            let at = row.wrapping_add(2 * V::LANES * i);
            V::prefetch(at);
            V::prefetch(at.wrapping_add(V::LANES));
        }
    }
}

/// `x` itself as a prefetch target, or null — never fetched — when it is
/// too long for prefetching a pass ahead to pay.
#[inline(always)]
fn own_row<T>(x: &[T]) -> *const T {
    if std::mem::size_of_val(x) <= AHEAD_MAX_BYTES {
        x.as_ptr()
    } else {
        std::ptr::null()
    }
}

/// The row that follows `x` in memory: the next row of a contiguous batch
/// (for any other layout, a harmless useless prefetch); null as [`own_row`].
#[inline(always)]
fn next_row<T>(x: &[T]) -> *const T {
    let own = own_row(x);
    if own.is_null() {
        own
    } else {
        own.wrapping_add(x.len())
    }
}

/// The row after the one that follows `x`; null as [`own_row`].
#[inline(always)]
fn row_after_next<T>(x: &[T]) -> *const T {
    let next = next_row(x);
    if next.is_null() {
        next
    } else {
        next.wrapping_add(x.len())
    }
}

/// The row's full vectors and its tail (fewer than `LANES` values).
#[inline(always)]
fn split<V: Vector>(x: &[V::T]) -> (std::slice::ChunksExact<'_, V::T>, &[V::T]) {
    let xs = x.chunks_exact(V::LANES);
    let tail = xs.remainder();
    (xs, tail)
}

#[inline(always)]
fn split_mut<V: Vector>(x: &mut [V::T]) -> (std::slice::ChunksExactMut<'_, V::T>, &mut [V::T]) {
    let body = x.len() - x.len() % V::LANES;
    let (head, tail) = x.split_at_mut(body);
    (head.chunks_exact_mut(V::LANES), tail)
}

#[inline(always)]
pub(crate) fn row_max<V: Vector>(x: &[V::T]) -> V::T {
    let (mut xs, tail) = split::<V>(x);
    let mut a = V::load_part(tail, V::T::NEG_INF);
    let mut b = V::splat(V::T::NEG_INF);
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
    a.max(b).reduce_max()
}

/// Whether every value is finite (or `-inf`, when `neg_inf_ok`): one fused
/// multiply-add per vector, `acc + v·0`, which stays 0 while every `v` is
/// finite and turns NaN for good at the first NaN or ±inf (when -inf is
/// allowed, negative lanes are zeroed first; NaN is never below 0). Four
/// accumulators in `T`, reduced once at the end: a check needs no f64 sums,
/// and going through [`sum_map`], which folds into f64 every few vectors,
/// made the scan 1.3-1.4x slower (criterion group `all_finite_f32`).
#[inline(always)]
pub(crate) fn all_finite<V: Vector>(x: &[V::T], neg_inf_ok: bool) -> bool {
    if neg_inf_ok {
        poison_free::<V, true>(x)
    } else {
        poison_free::<V, false>(x)
    }
}

#[inline(always)]
fn poison_free<V: Vector, const MASKS_OK: bool>(x: &[V::T]) -> bool {
    let zero = V::splat(V::T::ZERO);
    let poison = |acc: V, v: V| {
        let v = if MASKS_OK {
            v.zero_where_below(v, zero)
        } else {
            v
        };
        v.fmadd(zero, acc)
    };
    let mut acc = [zero; 4];
    let mut steps = x.chunks_exact(4 * V::LANES);
    for step in &mut steps {
        for (a, v) in acc.iter_mut().zip(step.chunks_exact(V::LANES)) {
            *a = poison(*a, V::load(v));
        }
    }
    let mut rest = steps.remainder().chunks_exact(V::LANES);
    for (a, v) in acc.iter_mut().zip(&mut rest) {
        *a = poison(*a, V::load(v));
    }
    let [a, b, c, d] = acc;
    let a = poison(a, V::load_part(rest.remainder(), V::T::ZERO));
    a.add(b).add(c.add(d)).reduce_sum() == 0.0
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
    exp_shifted_ahead::<V, 0, _, false>(
        x,
        m,
        inv_t,
        out,
        Ahead::none(),
        MaxBeside::<V, false>::new(&[]),
    )
    .0
}

/// [`exp_shifted`] that prefetches `ahead` and runs `beside`'s work (the
/// next row's max, and maybe the last row's stores) a step at a time along
/// with it; returns the sum and that max.
#[inline(always)]
fn exp_shifted_ahead<V: Vector, const A: usize, B: Beside<V>, const Z: bool>(
    x: &[V::T],
    m: V::T,
    inv_t: V::T,
    out: &mut [V::T],
    ahead: Ahead<V::T, A>,
    beside: B,
) -> (f64, V::T)
where
    V::T: ExpConsts,
{
    if inv_t == V::T::ONE {
        exp_shifted_as::<V, false, A, B, Z>(x, m, inv_t, out, ahead, beside)
    } else {
        exp_shifted_as::<V, true, A, B, Z>(x, m, inv_t, out, ahead, beside)
    }
}

/// `exp((x - m) · inv_t)` of one vector (closures cannot be
/// `#[inline(always)]`, which code under `target_feature` needs).
struct ShiftedExp<V, const SCALED: bool> {
    vm: V,
    vt: V,
}

impl<V: Vector, const SCALED: bool> ShiftedExp<V, SCALED>
where
    V::T: ExpConsts,
{
    #[inline(always)]
    fn at(&self, x: V) -> V {
        exp_below(self.z(x))
    }

    /// The exponent, `(x - m) · inv_t`.
    #[inline(always)]
    fn z(&self, x: V) -> V {
        shifted::<V, SCALED>(x, self.vm, self.vt)
    }
}

/// Lanes past the row's end are loaded as -inf, whose exp is 0. Stores the
/// exps, or with `Z` their exponents `(x - m) · inv_t` (log-softmax).
#[inline(always)]
fn exp_shifted_as<V: Vector, const SCALED: bool, const A: usize, B: Beside<V>, const Z: bool>(
    x: &[V::T],
    m: V::T,
    inv_t: V::T,
    out: &mut [V::T],
    ahead: Ahead<V::T, A>,
    mut beside: B,
) -> (f64, V::T)
where
    V::T: ExpConsts,
{
    let (vm, vt) = (V::splat(m), V::splat(inv_t));
    let e = ShiftedExp::<V, SCALED> { vm, vt };
    let mut acc = Sum::new();
    let mut xs = x.chunks_exact(2 * V::LANES);
    let mut os = out.chunks_exact_mut(2 * V::LANES);
    for (i, (x, o)) in (&mut xs).zip(&mut os).enumerate() {
        ahead.fetch::<V>(i);
        beside.step();
        let ((x0, x1), (o0, o1)) = (x.split_at(V::LANES), o.split_at_mut(V::LANES));
        let (z0, z1) = (e.z(V::load(x0)), e.z(V::load(x1)));
        let (e0, e1) = (exp_below(z0), exp_below(z1));
        let (s0, s1) = if Z { (z0, z1) } else { (e0, e1) };
        s0.store(o0);
        s1.store(o1);
        acc.add2(e0, e1);
    }
    let (x0, x1) = halves(xs.remainder(), V::LANES);
    let (o0, o1) = halves_mut(os.into_remainder(), V::LANES);
    let (z0, z1) = (
        e.z(V::load_part(x0, V::T::NEG_INF)),
        e.z(V::load_part(x1, V::T::NEG_INF)),
    );
    let (e0, e1) = (exp_below(z0), exp_below(z1));
    let (s0, s1) = if Z { (z0, z1) } else { (e0, e1) };
    s0.store_part(o0);
    s1.store_part(o1);
    acc.add2(e0, e1);
    (acc.finish(), beside.finish())
}

/// The max of a row, taken two vectors per step of a pass over another
/// row of the same length: the next row of a batch, whose loads then hide
/// behind the current row's exp arithmetic, and which needs no max pass of
/// its own. With `ON` false it loads and computes nothing.
struct MaxBeside<'a, V: Vector, const ON: bool> {
    chunks: std::slice::ChunksExact<'a, V::T>,
    a: V,
    b: V,
}

impl<'a, V: Vector, const ON: bool> MaxBeside<'a, V, ON> {
    #[inline(always)]
    fn new(row: &'a [V::T]) -> Self {
        let low = V::splat(V::T::NEG_INF);
        Self {
            chunks: row.chunks_exact(2 * V::LANES),
            a: low,
            b: low,
        }
    }

    #[inline(always)]
    fn step(&mut self) {
        if ON {
            if let Some(c) = self.chunks.next() {
                let (p, q) = c.split_at(V::LANES);
                self.a = self.a.max(V::load(p));
                self.b = self.b.max(V::load(q));
            }
        }
    }

    /// The row's max (`-inf` when `ON` is false).
    #[inline(always)]
    fn finish(mut self) -> V::T {
        if !ON {
            return V::T::NEG_INF;
        }
        while self.chunks.len() > 0 {
            self.step();
        }
        let (p, q) = halves(self.chunks.remainder(), V::LANES);
        let a = self.a.max(V::load_part(p, V::T::NEG_INF));
        let b = self.b.max(V::load_part(q, V::T::NEG_INF));
        a.max(b).reduce_max()
    }
}

/// Work done a step (two vectors) at a time beside a pass over another
/// row, so that its memory traffic overlaps that pass's arithmetic.
trait Beside<V: Vector> {
    fn step(&mut self);
    /// Does what the steps left; returns the next row's max (`-inf` if
    /// this work takes none).
    fn finish(self) -> V::T;
}

impl<V: Vector, const ON: bool> Beside<V> for MaxBeside<'_, V, ON> {
    #[inline(always)]
    fn step(&mut self) {
        MaxBeside::step(self);
    }

    #[inline(always)]
    fn finish(self) -> V::T {
        MaxBeside::finish(self)
    }
}

impl<V: Vector, B: Beside<V>> Beside<V> for (B, StreamBeside<'_, '_, V>) {
    #[inline(always)]
    fn step(&mut self) {
        self.0.step();
        self.1.step();
    }

    #[inline(always)]
    fn finish(self) -> V::T {
        self.1.finish();
        self.0.finish()
    }
}

/// The last row's results, `a · s`, streamed to `out` two vectors per step
/// of the pass over the next row. Stored alone after that row's exp pass,
/// they kept the core waiting on write-combining buffers with no
/// arithmetic to overlap.
struct StreamBeside<'s, 'o, V: Vector> {
    a: V,
    s: std::slice::ChunksExact<'s, V::T>,
    out: std::slice::ChunksExactMut<'o, V::T>,
}

impl<'s, 'o, V: Vector> StreamBeside<'s, 'o, V> {
    /// Stores `out`'s first values, up to a whole-vector boundary, at once
    /// (normal stores); the rest goes a step at a time.
    #[inline(always)]
    fn new(s: &'s [V::T], a: V::T, out: &'o mut [V::T]) -> Self {
        let align = V::LANES * std::mem::size_of::<V::T>();
        let n = s.len().min(out.len());
        let out = out.get_mut(..n).unwrap_or_default();
        let head = out.as_ptr().align_offset(align).min(n);
        let (out_head, out_body) = out.split_at_mut(head);
        let (s_head, s_body) = s.split_at(head);
        scaled::<V>(s_head, a, out_head);
        Self {
            a: V::splat(a),
            s: s_body.chunks_exact(2 * V::LANES),
            out: out_body.chunks_exact_mut(2 * V::LANES),
        }
    }

    #[inline(always)]
    fn step(&mut self) {
        if let (Some(s), Some(o)) = (self.s.next(), self.out.next()) {
            let ((s0, s1), (o0, o1)) = (s.split_at(V::LANES), o.split_at_mut(V::LANES));
            self.a.mul(V::load(s0)).stream(o0);
            self.a.mul(V::load(s1)).stream(o1);
        }
    }

    /// The steps left, the tail, and a fence: the row is then visible to
    /// any thread, as after [`scaled_stream`].
    #[inline(always)]
    fn finish(mut self) {
        while self.s.len() > 0 {
            self.step();
        }
        let (xs, xt) = split::<V>(self.s.remainder());
        let (os, ot) = split_mut::<V>(self.out.into_remainder());
        for (x, o) in xs.zip(os) {
            self.a.mul(V::load(x)).stream(o);
        }
        self.a.mul(V::load_part(xt, V::T::ZERO)).store_part(ot);
        V::fence();
    }
}

#[inline(always)]
pub(crate) fn sum_exp_shifted<V: Vector>(x: &[V::T], m: V::T, inv_t: V::T) -> f64
where
    V::T: ExpConsts,
{
    sum_exp_shifted_ahead::<V, 0, false>(x, m, inv_t, Ahead::none(), MaxBeside::new(&[])).0
}

#[inline(always)]
fn sum_exp_shifted_ahead<V: Vector, const A: usize, const NEXT: bool>(
    x: &[V::T],
    m: V::T,
    inv_t: V::T,
    ahead: Ahead<V::T, A>,
    beside: MaxBeside<'_, V, NEXT>,
) -> (f64, V::T)
where
    V::T: ExpConsts,
{
    if inv_t == V::T::ONE {
        sum_exp_shifted_as::<V, false, A, NEXT>(x, m, inv_t, ahead, beside)
    } else {
        sum_exp_shifted_as::<V, true, A, NEXT>(x, m, inv_t, ahead, beside)
    }
}

#[inline(always)]
fn sum_exp_shifted_as<V: Vector, const SCALED: bool, const A: usize, const NEXT: bool>(
    x: &[V::T],
    m: V::T,
    inv_t: V::T,
    ahead: Ahead<V::T, A>,
    beside: MaxBeside<'_, V, NEXT>,
) -> (f64, V::T)
where
    V::T: ExpConsts,
{
    let e = ShiftedExp::<V, SCALED> {
        vm: V::splat(m),
        vt: V::splat(inv_t),
    };
    sum_map::<V, A, NEXT>(
        x,
        V::T::NEG_INF,
        ahead,
        beside,
        #[inline(always)]
        |x| e.at(x),
    )
}

/// [`softmax_rows`] for outputs past the cache: each row's exps go to a
/// scratch row of `e` (`2k` values: two rows, taken in turns), then the
/// scaled row is streamed to `out` during the next row's exp pass. The
/// next row's max is taken during the exp pass too, so both its loads and
/// the last row's stores overlap the exp arithmetic.
#[inline(always)]
pub(crate) fn softmax_rows_streamed<V: Vector>(
    x: &[V::T],
    k: usize,
    inv_t: V::T,
    e: &mut [V::T],
    out: &mut [V::T],
) -> bool
where
    V::T: ExpConsts,
{
    if e.len() < 2 * k {
        // Too little scratch for two rows: the cached rows are as exact.
        return softmax_rows::<V>(x, k, inv_t, out);
    }
    let passes = StreamedSoftmaxPasses {
        inv_t,
        e,
        pending: None,
    };
    pipelined_rows::<V>(x, k, out, passes)
}

/// The passes of one row of a pipelined batch ([`pipelined_rows`]).
trait RowPasses<'o, V: Vector> {
    /// The output of a fully masked row.
    fn masked(&self) -> V::T;
    /// All passes of row `x` (max `m`, not fully masked) into `out`, with
    /// `beside` taking the next row's max; returns the row's sum of
    /// exponentials and that max.
    fn run<const NEXT: bool>(
        &mut self,
        x: &[V::T],
        m: V::T,
        out: &'o mut [V::T],
        beside: MaxBeside<'_, V, NEXT>,
    ) -> (f64, V::T);

    /// Writes whatever a pass left for later, after the last row.
    #[inline(always)]
    fn finish(&mut self) {}
}

/// Runs `passes` over each `k`-value row of `x` into `out`. Each row's
/// passes also take the max of the next row (see [`MaxBeside`]), so only
/// the first row has a max pass of its own. Returns whether every row was
/// free of NaN and `+inf`, from its sum (see `forward::clean_sum`).
#[inline(always)]
fn pipelined_rows<'o, V: Vector>(
    x: &[V::T],
    k: usize,
    out: &'o mut [V::T],
    mut passes: impl RowPasses<'o, V>,
) -> bool {
    let Some(first) = x.get(..k).filter(|_| k > 0) else {
        return true;
    };
    let mut clean = true;
    let mut m = row_max::<V>(first);
    for (i, (xr, or)) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)).enumerate() {
        let next = x.get((i + 1) * k..(i + 2) * k);
        m = if m == V::T::NEG_INF {
            or.fill(passes.masked());
            // `max` may have skipped a NaN.
            clean &= all_finite::<V>(xr, true);
            next.map_or(V::T::NEG_INF, row_max::<V>)
        } else {
            let (sum, next_m) = match next {
                Some(n) => passes.run::<true>(xr, m, or, MaxBeside::new(n)),
                None => passes.run::<false>(xr, m, or, MaxBeside::new(&[])),
            };
            clean &= clean_sum(sum);
            next_m
        };
    }
    passes.finish();
    clean
}

/// Softmax (`LOG` false) or log-softmax over rows in cache: one pass that
/// stores the exps (log: their exponents `(x - m)·inv_t`) and sums the
/// exps, prefetching the next output row (whose stores would otherwise wait
/// for read-for-ownership) and the x row after the next one; then a pass
/// over the row still in L1: scale by 1/Σ (log: subtract log Σ).
struct CachedPasses<T, const LOG: bool> {
    inv_t: T,
}

impl<'o, V: Vector, const LOG: bool> RowPasses<'o, V> for CachedPasses<V::T, LOG>
where
    V::T: ExpConsts,
{
    #[inline(always)]
    fn masked(&self) -> V::T {
        if LOG {
            V::T::NEG_INF
        } else {
            V::T::ZERO
        }
    }

    #[inline(always)]
    fn run<const NEXT: bool>(
        &mut self,
        x: &[V::T],
        m: V::T,
        out: &'o mut [V::T],
        beside: MaxBeside<'_, V, NEXT>,
    ) -> (f64, V::T) {
        let ahead = Ahead {
            rows: [next_row(out), row_after_next(x)],
        };
        let (sum, next_m) = exp_shifted_ahead::<V, 2, _, LOG>(x, m, self.inv_t, out, ahead, beside);
        if LOG {
            minus::<V>(out, V::T::narrow(sum.ln()));
        } else {
            scale::<V>(out, V::T::narrow(1.0 / sum));
        }
        (sum, next_m)
    }
}

/// Softmax past the cache: exp + sum into a scratch row (a pass that reads
/// only `x`, so the next row's max loads hide behind it), and the scaled
/// row streamed to `out`, which is never read. A row's stores wait for the
/// next row's exp pass and go along with it ([`StreamBeside`]), so the
/// scratch holds two rows, taken in turns.
struct StreamedSoftmaxPasses<'e, 'o, T> {
    inv_t: T,
    /// Two rows of scratch.
    e: &'e mut [T],
    /// The row waiting for its stores: its output, its `1/Σ`, and whether
    /// its exps are in the second scratch row.
    pending: Option<(&'o mut [T], T, bool)>,
}

impl<'o, V: Vector> RowPasses<'o, V> for StreamedSoftmaxPasses<'_, 'o, V::T>
where
    V::T: ExpConsts,
{
    #[inline(always)]
    fn masked(&self) -> V::T {
        V::T::ZERO
    }

    #[inline(always)]
    fn run<const NEXT: bool>(
        &mut self,
        x: &[V::T],
        m: V::T,
        out: &'o mut [V::T],
        beside: MaxBeside<'_, V, NEXT>,
    ) -> (f64, V::T) {
        // This row's exps go to the scratch row the pending one is not in.
        let in_second = self.pending.as_ref().is_some_and(|p| !p.2);
        let (e, last) = two_rows(self.e, x.len(), in_second);
        // The next row's own loads (its max) come during this pass; the row
        // after it is prefetched, so that those loads find it in cache.
        let ahead = Ahead {
            rows: [row_after_next(x)],
        };
        let inv_t = self.inv_t;
        let (sum, next_m) = match self.pending.take() {
            Some((o, a, _)) => {
                let stores = StreamBeside::new(last, a, o);
                exp_shifted_ahead::<V, 1, _, false>(x, m, inv_t, e, ahead, (beside, stores))
            }
            None => exp_shifted_ahead::<V, 1, _, false>(x, m, inv_t, e, ahead, beside),
        };
        self.pending = Some((out, V::T::narrow(1.0 / sum), in_second));
        (sum, next_m)
    }

    #[inline(always)]
    fn finish(&mut self) {
        if let Some((out, a, in_second)) = self.pending.take() {
            let (e, _) = two_rows(self.e, out.len(), in_second);
            scaled_stream::<V>(e, a, out);
        }
    }
}

/// The first or second `k`-value row of the scratch `e`, and the other one.
#[inline(always)]
fn two_rows<T>(e: &mut [T], k: usize, second: bool) -> (&mut [T], &mut [T]) {
    let (first, rest) = e.split_at_mut(k.min(e.len()));
    let other = rest.get_mut(..k).unwrap_or_default();
    if second {
        (other, first)
    } else {
        (first, other)
    }
}

/// Softmax of each row of `x` (rows of `k` values, `out` alike).
#[inline(always)]
pub(crate) fn softmax_rows<V: Vector>(x: &[V::T], k: usize, inv_t: V::T, out: &mut [V::T]) -> bool
where
    V::T: ExpConsts,
{
    pipelined_rows::<V>(x, k, out, CachedPasses::<_, false> { inv_t })
}

/// Log-softmax of each row of `x`.
#[inline(always)]
pub(crate) fn log_softmax_rows<V: Vector>(
    x: &[V::T],
    k: usize,
    inv_t: V::T,
    out: &mut [V::T],
) -> bool
where
    V::T: ExpConsts,
{
    pipelined_rows::<V>(x, k, out, CachedPasses::<_, true> { inv_t })
}

/// Sums `f(a_i, b_i)` over two rows of equal length; tail lanes past the
/// end are `fa` and `fb`, for which `f` must give 0.
#[inline(always)]
fn sum_zip<V: Vector>(a: &[V::T], b: &[V::T], fa: V::T, fb: V::T, f: impl Fn(V, V) -> V) -> f64 {
    let mut acc = Sum::new();
    let mut xs = a.chunks_exact(2 * V::LANES);
    let mut ys = b.chunks_exact(2 * V::LANES);
    for (x, y) in (&mut xs).zip(&mut ys) {
        let ((x0, x1), (y0, y1)) = (x.split_at(V::LANES), y.split_at(V::LANES));
        acc.add2(f(V::load(x0), V::load(y0)), f(V::load(x1), V::load(y1)));
    }
    let (x0, x1) = halves(xs.remainder(), V::LANES);
    let (y0, y1) = halves(ys.remainder(), V::LANES);
    acc.add2(
        f(V::load_part(x0, fa), V::load_part(y0, fb)),
        f(V::load_part(x1, fa), V::load_part(y1, fb)),
    );
    acc.finish()
}

#[inline(always)]
pub(crate) fn dot<V: Vector>(a: &[V::T], b: &[V::T]) -> f64 {
    sum_zip::<V>(
        a,
        b,
        V::T::ZERO,
        V::T::ZERO,
        #[inline(always)]
        |x, y| x.mul(y),
    )
}

#[inline(always)]
pub(crate) fn sum<V: Vector>(a: &[V::T]) -> f64 {
    sum_map::<V, 0, false>(
        a,
        V::T::ZERO,
        Ahead::none(),
        MaxBeside::new(&[]),
        #[inline(always)]
        |x| x,
    )
    .0
}

/// Σ exp(l_i)·g_i; tail lanes are l = -inf (exp 0) and g = 0.
#[inline(always)]
pub(crate) fn dot_exp<V: Vector>(l: &[V::T], g: &[V::T]) -> f64
where
    V::T: ExpConsts,
{
    sum_zip::<V>(
        l,
        g,
        V::T::NEG_INF,
        V::T::ZERO,
        #[inline(always)]
        |x, y| exp(x).mul(y),
    )
}

/// `out_i = f(a_i)`, the tail through partial loads and stores (its
/// padding lanes are computed on zeros and dropped).
#[inline(always)]
fn map1<V: Vector>(a: &[V::T], out: &mut [V::T], f: impl Fn(V) -> V) {
    let n = a.len().min(out.len());
    let (xs, xt) = split::<V>(a.get(..n).unwrap_or_default());
    let (os, ot) = split_mut::<V>(out.get_mut(..n).unwrap_or_default());
    for (x, o) in xs.zip(os) {
        f(V::load(x)).store(o);
    }
    f(V::load_part(xt, V::T::ZERO)).store_part(ot);
}

/// `out_i = f(a_i, b_i)`, the tail as in [`map1`].
#[inline(always)]
fn map2<V: Vector>(a: &[V::T], b: &[V::T], out: &mut [V::T], f: impl Fn(V, V) -> V) {
    let n = a.len().min(b.len()).min(out.len());
    let (xs, xt) = split::<V>(a.get(..n).unwrap_or_default());
    let (ys, yt) = split::<V>(b.get(..n).unwrap_or_default());
    let (os, ot) = split_mut::<V>(out.get_mut(..n).unwrap_or_default());
    for ((x, y), o) in xs.zip(ys).zip(os) {
        f(V::load(x), V::load(y)).store(o);
    }
    f(V::load_part(xt, V::T::ZERO), V::load_part(yt, V::T::ZERO)).store_part(ot);
}

/// `out_i = f(out_i, b_i)` in place, the tail as in [`map1`].
#[inline(always)]
fn update<V: Vector>(out: &mut [V::T], b: &[V::T], f: impl Fn(V, V) -> V) {
    let n = b.len().min(out.len());
    let (ys, yt) = split::<V>(b.get(..n).unwrap_or_default());
    let (os, ot) = split_mut::<V>(out.get_mut(..n).unwrap_or_default());
    for (o, y) in os.zip(ys) {
        f(V::load(o), V::load(y)).store(o);
    }
    let o = V::load_part(ot, V::T::ZERO);
    f(o, V::load_part(yt, V::T::ZERO)).store_part(ot);
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
    );
}

/// `out_i -= c`, in place.
#[inline(always)]
fn minus<V: Vector>(out: &mut [V::T], c: V::T) {
    let vc = V::splat(c);
    let (os, ot) = split_mut::<V>(out);
    for o in os {
        V::load(o).sub(vc).store(o);
    }
    V::load_part(ot, V::T::ZERO).sub(vc).store_part(ot);
}

#[inline(always)]
pub(crate) fn scale<V: Vector>(out: &mut [V::T], c: V::T) {
    let vc = V::splat(c);
    let (os, ot) = split_mut::<V>(out);
    for o in os {
        V::load(o).mul(vc).store(o);
    }
    V::load_part(ot, V::T::ZERO).mul(vc).store_part(ot);
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
    );
}

/// [`scaled`] with streaming stores from the first vector-aligned element of
/// `out` on (the head before it, and the tail, are stored normally).
#[inline(always)]
pub(crate) fn scaled_stream<V: Vector>(s: &[V::T], a: V::T, out: &mut [V::T]) {
    StreamBeside::<V>::new(s, a, out).finish();
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
    );
}
