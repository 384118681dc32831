//! `Vector` for x86-64: f32x16 and f64x8 on AVX-512F, f32x8 and f64x4 on
//! AVX2+FMA, with `std::arch` intrinsics.
//!
//! Soundness: values of these types are only ever created inside the
//! `#[target_feature]` functions of `dispatch`, which are only called after
//! the CPU was checked for the features; every method is `#[inline(always)]`
//! so it is compiled into that function, with those features enabled.
#![allow(unsafe_code)]

use super::vector::Vector;
use std::arch::x86_64::*;

/// Loads `N` values from the front of `src`, or (never, for the exact
/// chunks the row loops pass) a zero-padded copy of a shorter slice.
macro_rules! load {
    ($src:expr, $n:expr, $t:ty, $load:ident) => {{
        let src: &[$t] = $src;
        match src.get(..$n) {
            // SAFETY: the slice has $n readable values; unaligned load.
            Some(s) => unsafe { $load(s.as_ptr()) },
            None => {
                let mut buf = [0.0 as $t; $n];
                for (b, &v) in buf.iter_mut().zip(src) {
                    *b = v;
                }
                // SAFETY: `buf` has $n readable values; unaligned load.
                unsafe { $load(buf.as_ptr()) }
            }
        }
    }};
}

macro_rules! store {
    ($v:expr, $dst:expr, $n:expr, $t:ty, $store:ident) => {{
        let dst: &mut [$t] = $dst;
        let mut buf = [0.0 as $t; $n];
        match dst.get_mut(..$n) {
            // SAFETY: the slice has $n writable values; unaligned store.
            Some(d) => unsafe { $store(d.as_mut_ptr(), $v) },
            None => {
                // SAFETY: `buf` has $n writable values; unaligned store.
                unsafe { $store(buf.as_mut_ptr(), $v) };
                for (d, &b) in dst.iter_mut().zip(&buf) {
                    *d = b;
                }
            }
        }
    }};
}

/// The lane-wise arithmetic shared by all four types.
macro_rules! arith {
    ($add:ident, $sub:ident, $mul:ident, $fmadd:ident, $max:ident, $min:ident) => {
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: see the module docs.
            Self(unsafe { $add(self.0, o.0) })
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: see the module docs.
            Self(unsafe { $sub(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: see the module docs.
            Self(unsafe { $mul(self.0, o.0) })
        }
        #[inline(always)]
        fn fmadd(self, b: Self, c: Self) -> Self {
            // SAFETY: see the module docs.
            Self(unsafe { $fmadd(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn max(self, o: Self) -> Self {
            // SAFETY: see the module docs.
            Self(unsafe { $max(self.0, o.0) })
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            // SAFETY: see the module docs.
            Self(unsafe { $min(self.0, o.0) })
        }
        #[inline(always)]
        fn prefetch(p: *const Self::T) {
            // SAFETY: a prefetch is only a hint: it never faults and has no
            // effect the program can observe, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
        }
    };
}

/// `load_part`/`store_part` through AVX-512 masked moves: `$n` lanes of
/// `$t`, a `$mask` lane mask built in `$wide` (one bit wider, so 1 << $n fits).
macro_rules! masked_part {
    ($t:ty, $n:expr, $mask:ty, $wide:expr, $load:ident, $store:ident) => {
        #[inline(always)]
        fn load_part(src: &[$t], fill: $t) -> Self {
            // Most rows have no tail; a masked access costs more than a branch.
            if src.is_empty() {
                return Self::splat(fill);
            }
            let mask = ($wide << src.len().min($n)).wrapping_sub(1) as $mask;
            // SAFETY: only the lanes in `mask`, the first `src.len()` values,
            // are read; masked-off lanes are never accessed (nor can fault).
            Self(unsafe { $load(Self::splat(fill).0, mask, src.as_ptr()) })
        }
        #[inline(always)]
        fn store_part(self, dst: &mut [$t]) {
            if dst.is_empty() {
                return;
            }
            let mask = ($wide << dst.len().min($n)).wrapping_sub(1) as $mask;
            // SAFETY: only the lanes in `mask`, the first `dst.len()` values,
            // are written.
            unsafe { $store(dst.as_mut_ptr(), mask, self.0) }
        }
    };
}

/// Lane reductions through an array, halving pairwise (a tree, so the
/// latency before the next pass can start is log2(lanes) steps, not lanes).
macro_rules! reduce_by_halves {
    () => {
        #[inline(always)]
        fn reduce_max(self) -> Self::T {
            let mut lanes = [0.0 as Self::T; Self::LANES];
            self.store(&mut lanes);
            let mut n = Self::LANES;
            while n > 1 {
                n /= 2;
                let (lo, hi) = lanes.split_at_mut(n);
                for (a, &b) in lo.iter_mut().zip(hi.iter()) {
                    *a = if b > *a { b } else { *a };
                }
            }
            lanes.first().copied().unwrap_or(Self::T::NEG_INFINITY)
        }
        #[inline(always)]
        fn reduce_sum(self) -> f64 {
            let mut lanes = [0.0 as Self::T; Self::LANES];
            self.store(&mut lanes);
            let mut wide = [0.0f64; Self::LANES];
            for (w, &v) in wide.iter_mut().zip(&lanes) {
                *w = f64::from(v);
            }
            let mut n = Self::LANES;
            while n > 1 {
                n /= 2;
                let (lo, hi) = wide.split_at_mut(n);
                for (a, &b) in lo.iter_mut().zip(hi.iter()) {
                    *a += b;
                }
            }
            wide.first().copied().unwrap_or(0.0)
        }
    };
}

#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m512);

impl Vector for F32x16 {
    type T = f32;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(v: f32) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe { _mm512_set1_ps(v) })
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        Self(load!(src, 16, f32, _mm512_loadu_ps))
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        store!(self.0, dst, 16, f32, _mm512_storeu_ps)
    }
    masked_part!(
        f32,
        16,
        u16,
        1u32,
        _mm512_mask_loadu_ps,
        _mm512_mask_storeu_ps
    );
    #[inline(always)]
    fn stream(self, dst: &mut [f32]) {
        match dst.get_mut(..16) {
            Some(d) if (d.as_ptr() as usize).is_multiple_of(64) => {
                // SAFETY: 16 writable values, aligned as the streaming store
                // requires (checked just above).
                unsafe { _mm512_stream_ps(d.as_mut_ptr(), self.0) }
            }
            _ => self.store(dst),
        }
    }
    #[inline(always)]
    fn fence() {
        // SAFETY: see the module docs (sfence needs only SSE).
        unsafe { _mm_sfence() }
    }
    arith!(
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_max_ps,
        _mm512_min_ps
    );
    #[inline(always)]
    fn reduce_max(self) -> f32 {
        // SAFETY: see the module docs.
        unsafe { _mm512_reduce_max_ps(self.0) }
    }
    #[inline(always)]
    fn reduce_sum(self) -> f64 {
        // SAFETY: see the module docs. Both halves widened to f64, then a
        // shuffle tree.
        unsafe {
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(self.0));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(self.0),
            )));
            _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
        }
    }
    #[inline(always)]
    fn zero_where_below(self, z: Self, limit: Self) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe {
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z.0, limit.0);
            _mm512_mask_blend_ps(below, self.0, _mm512_setzero_ps())
        })
    }
    #[inline(always)]
    fn pow2_from_shifted(t: Self) -> Self {
        const SHIFTER: i32 = 12_582_912.0f32.to_bits() as i32;
        // SAFETY: see the module docs.
        Self(unsafe {
            let n = _mm512_sub_epi32(_mm512_castps_si512(t.0), _mm512_set1_epi32(SHIFTER - 127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(n))
        })
    }
    #[inline(always)]
    fn scale_pow2(p: Self, _t: Self, n: Self, z: Self, min_arg: Self) -> Self {
        // SAFETY: see the module docs. p·2^n unless z < MIN_ARG, else 0
        // (NaN is kept: forward screens its input by it). The
        // lanes below are masked out rather than left to underflow: an
        // underflowing result costs a microcode assist (~150 cycles), which
        // every -inf (masked) logit and every padded tail lane would pay.
        Self(unsafe {
            let normal = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(z.0, min_arg.0);
            _mm512_maskz_scalef_ps(normal, p.0, n.0)
        })
    }
}

#[derive(Clone, Copy)]
pub(crate) struct F64x8(__m512d);

impl Vector for F64x8 {
    type T = f64;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(v: f64) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe { _mm512_set1_pd(v) })
    }
    #[inline(always)]
    fn load(src: &[f64]) -> Self {
        Self(load!(src, 8, f64, _mm512_loadu_pd))
    }
    #[inline(always)]
    fn store(self, dst: &mut [f64]) {
        store!(self.0, dst, 8, f64, _mm512_storeu_pd)
    }
    masked_part!(
        f64,
        8,
        u8,
        1u16,
        _mm512_mask_loadu_pd,
        _mm512_mask_storeu_pd
    );
    #[inline(always)]
    fn stream(self, dst: &mut [f64]) {
        match dst.get_mut(..8) {
            Some(d) if (d.as_ptr() as usize).is_multiple_of(64) => {
                // SAFETY: 8 writable values, aligned as the streaming store
                // requires (checked just above).
                unsafe { _mm512_stream_pd(d.as_mut_ptr(), self.0) }
            }
            _ => self.store(dst),
        }
    }
    #[inline(always)]
    fn fence() {
        // SAFETY: see the module docs (sfence needs only SSE).
        unsafe { _mm_sfence() }
    }
    arith!(
        _mm512_add_pd,
        _mm512_sub_pd,
        _mm512_mul_pd,
        _mm512_fmadd_pd,
        _mm512_max_pd,
        _mm512_min_pd
    );
    #[inline(always)]
    fn reduce_max(self) -> f64 {
        // SAFETY: see the module docs.
        unsafe { _mm512_reduce_max_pd(self.0) }
    }
    #[inline(always)]
    fn reduce_sum(self) -> f64 {
        // SAFETY: see the module docs.
        unsafe { _mm512_reduce_add_pd(self.0) }
    }
    #[inline(always)]
    fn zero_where_below(self, z: Self, limit: Self) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe {
            let below = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(z.0, limit.0);
            _mm512_mask_blend_pd(below, self.0, _mm512_setzero_pd())
        })
    }
    #[inline(always)]
    fn pow2_from_shifted(t: Self) -> Self {
        const SHIFTER: i64 = 6_755_399_441_055_744.0f64.to_bits() as i64;
        // SAFETY: see the module docs.
        Self(unsafe {
            let n = _mm512_sub_epi64(_mm512_castpd_si512(t.0), _mm512_set1_epi64(SHIFTER - 1023));
            _mm512_castsi512_pd(_mm512_slli_epi64::<52>(n))
        })
    }
    #[inline(always)]
    fn scale_pow2(p: Self, _t: Self, n: Self, z: Self, min_arg: Self) -> Self {
        // SAFETY: see the module docs. p·2^n unless z < MIN_ARG, else 0
        // (NaN is kept: forward screens its input by it). The
        // lanes below are masked out rather than left to underflow: an
        // underflowing result costs a microcode assist (~150 cycles), which
        // every -inf (masked) logit and every padded tail lane would pay.
        Self(unsafe {
            let normal = _mm512_cmp_pd_mask::<_CMP_NLT_UQ>(z.0, min_arg.0);
            _mm512_maskz_scalef_pd(normal, p.0, n.0)
        })
    }
}

#[derive(Clone, Copy)]
pub(crate) struct F32x8(__m256);

impl Vector for F32x8 {
    type T = f32;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(v: f32) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe { _mm256_set1_ps(v) })
    }
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        Self(load!(src, 8, f32, _mm256_loadu_ps))
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        store!(self.0, dst, 8, f32, _mm256_storeu_ps)
    }
    #[inline(always)]
    fn stream(self, dst: &mut [f32]) {
        match dst.get_mut(..8) {
            Some(d) if (d.as_ptr() as usize).is_multiple_of(32) => {
                // SAFETY: 8 writable values, aligned as the streaming store
                // requires (checked just above).
                unsafe { _mm256_stream_ps(d.as_mut_ptr(), self.0) }
            }
            _ => self.store(dst),
        }
    }
    #[inline(always)]
    fn fence() {
        // SAFETY: see the module docs (sfence needs only SSE).
        unsafe { _mm_sfence() }
    }
    arith!(
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_max_ps,
        _mm256_min_ps
    );
    reduce_by_halves!();
    #[inline(always)]
    fn zero_where_below(self, z: Self, limit: Self) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe {
            let below = _mm256_cmp_ps::<_CMP_LT_OQ>(z.0, limit.0);
            _mm256_blendv_ps(self.0, _mm256_setzero_ps(), below)
        })
    }
    #[inline(always)]
    fn pow2_from_shifted(t: Self) -> Self {
        const SHIFTER: i32 = 12_582_912.0f32.to_bits() as i32;
        // SAFETY: see the module docs.
        Self(unsafe {
            let n = _mm256_sub_epi32(_mm256_castps_si256(t.0), _mm256_set1_epi32(SHIFTER - 127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(n))
        })
    }
}

#[derive(Clone, Copy)]
pub(crate) struct F64x4(__m256d);

impl Vector for F64x4 {
    type T = f64;
    const LANES: usize = 4;

    #[inline(always)]
    fn splat(v: f64) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe { _mm256_set1_pd(v) })
    }
    #[inline(always)]
    fn load(src: &[f64]) -> Self {
        Self(load!(src, 4, f64, _mm256_loadu_pd))
    }
    #[inline(always)]
    fn store(self, dst: &mut [f64]) {
        store!(self.0, dst, 4, f64, _mm256_storeu_pd)
    }
    #[inline(always)]
    fn stream(self, dst: &mut [f64]) {
        match dst.get_mut(..4) {
            Some(d) if (d.as_ptr() as usize).is_multiple_of(32) => {
                // SAFETY: 4 writable values, aligned as the streaming store
                // requires (checked just above).
                unsafe { _mm256_stream_pd(d.as_mut_ptr(), self.0) }
            }
            _ => self.store(dst),
        }
    }
    #[inline(always)]
    fn fence() {
        // SAFETY: see the module docs (sfence needs only SSE).
        unsafe { _mm_sfence() }
    }
    arith!(
        _mm256_add_pd,
        _mm256_sub_pd,
        _mm256_mul_pd,
        _mm256_fmadd_pd,
        _mm256_max_pd,
        _mm256_min_pd
    );
    reduce_by_halves!();
    #[inline(always)]
    fn zero_where_below(self, z: Self, limit: Self) -> Self {
        // SAFETY: see the module docs.
        Self(unsafe {
            let below = _mm256_cmp_pd::<_CMP_LT_OQ>(z.0, limit.0);
            _mm256_blendv_pd(self.0, _mm256_setzero_pd(), below)
        })
    }
    #[inline(always)]
    fn pow2_from_shifted(t: Self) -> Self {
        const SHIFTER: i64 = 6_755_399_441_055_744.0f64.to_bits() as i64;
        // SAFETY: see the module docs.
        Self(unsafe {
            let n = _mm256_sub_epi64(_mm256_castpd_si256(t.0), _mm256_set1_epi64x(SHIFTER - 1023));
            _mm256_castsi256_pd(_mm256_slli_epi64::<52>(n))
        })
    }
}

/// The vector types of one lane type.
pub(crate) trait Lanes: super::vector::ExpConsts {
    type Avx512: Vector<T = Self>;
    type Avx2: Vector<T = Self>;
}

impl Lanes for f32 {
    type Avx512 = F32x16;
    type Avx2 = F32x8;
}

impl Lanes for f64 {
    type Avx512 = F64x8;
    type Avx2 = F64x4;
}
