//! `Real`: the scalar arithmetic of the SIMD row loops, including a
//! branch-free exp that LLVM vectorises.
//!
//! exp(z) = 2^n · e^r with n = round(z / ln 2) and r = z − n·ln 2, |r| ≤
//! ln2/2. Here and in the f64 vector code r comes from a Cody–Waite split of
//! ln 2 (a short high part, so n·ln2_hi is exact, and a low part); the f32
//! vector code uses one fused multiply-add with ln 2 rounded to f32 (see
//! `LN2_PARTS`). e^r is a polynomial (f32: a fitted degree-5 one in the
//! vector code, 1.5e-7, and Taylor degree 7 here; f64: a fitted degree-11
//! one in the vector code and Taylor degree 13 here, both below 2^-56 before
//! rounding), and 2^n is built in the exponent bits (or by `vscalef`).
//! Error against f64, tested in tests/kernel_accuracy.rs over the whole
//! range: relative ≤ 2^-21 (f32; 3.9e-7 at worst, near the smallest normal
//! result) and ≤ 2^-50 (f64), i.e. a few ulp, for every z whose result is a
//! normal number.
//! Results below the smallest normal (z < ln 2^-126 resp. ln 2^-1022, minus a
//! rounding margin) are 0, as is exp(-inf) — the mask. Arguments above 88
//! (f32) or 709 (f64) are clamped there; softmax never produces them (z ≤ 0).

use std::ops::{Add, Mul, Sub};

/// f32 or f64 as seen by the vectorised loops.
pub(crate) trait Real:
    Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;

    /// `a * b + c`, fused when the caller's target has FMA (`fused`), else
    /// two roundings (a libm `fma` call would be far slower).
    fn fmadd(a: Self, b: Self, c: Self, fused: bool) -> Self;
    fn widen(self) -> f64;
    /// The nearest value to `v`.
    fn narrow(v: f64) -> Self;
    fn exp(z: Self, fused: bool) -> Self;

    /// The larger of two values as one `max` instruction (no NaN fix-ups:
    /// callers have rejected NaN).
    #[inline(always)]
    fn vmax(a: Self, b: Self) -> Self {
        if b > a {
            b
        } else {
            a
        }
    }
}

// 1/n!, the Taylor coefficients of e^r.
const INV_FACT: [f64; 14] = {
    let mut c = [1.0f64; 14];
    let mut n = 1;
    while n < 14 {
        c[n] = c[n - 1] / n as f64;
        n += 1;
    }
    c
};

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;

    #[inline(always)]
    fn fmadd(a: Self, b: Self, c: Self, fused: bool) -> Self {
        if fused {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        f64::from(self)
    }

    #[inline(always)]
    fn narrow(v: f64) -> Self {
        v as f32
    }

    #[inline(always)]
    fn exp(z: Self, fused: bool) -> Self {
        // Just below ln(2^-126), so every z with a normal result is computed.
        const MIN_ARG: f32 = -87.336_55;
        const MAX_ARG: f32 = 88.0;
        // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
        const SHIFTER: f32 = 12_582_912.0;
        const LN2_HI: f32 = 0.693_145_75; // 0x3F317200: n·LN2_HI is exact for |n| ≤ 2^9
        const LN2_LO: f32 = 1.428_606_8e-6;
        let zc = z.clamp(MIN_ARG, MAX_ARG);
        let t = zc * std::f32::consts::LOG2_E + SHIFTER;
        let n = t - SHIFTER;
        let r = Self::fmadd(n, -LN2_HI, zc, fused);
        let r = Self::fmadd(n, -LN2_LO, r, fused);
        let mut p = INV_FACT[7] as f32;
        p = Self::fmadd(p, r, INV_FACT[6] as f32, fused);
        p = Self::fmadd(p, r, INV_FACT[5] as f32, fused);
        p = Self::fmadd(p, r, INV_FACT[4] as f32, fused);
        p = Self::fmadd(p, r, INV_FACT[3] as f32, fused);
        p = Self::fmadd(p, r, 0.5, fused);
        p = Self::fmadd(p, r, 1.0, fused);
        p = Self::fmadd(p, r, 1.0, fused);
        // n + 127 in the exponent field: the integer sits in t's low bits.
        let bits = t
            .to_bits()
            .wrapping_sub(SHIFTER.to_bits())
            .wrapping_add(127)
            << 23;
        let e = p * f32::from_bits(bits);
        if z < MIN_ARG {
            0.0
        } else {
            e
        }
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;

    #[inline(always)]
    fn fmadd(a: Self, b: Self, c: Self, fused: bool) -> Self {
        if fused {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }

    #[inline(always)]
    fn narrow(v: f64) -> Self {
        v
    }

    #[inline(always)]
    fn exp(z: Self, fused: bool) -> Self {
        // Just below ln(2^-1022), so every z with a normal result is computed.
        const MIN_ARG: f64 = -708.396_418_532_27;
        const MAX_ARG: f64 = 709.0;
        // 1.5·2^52: adding it rounds to an integer held in the low mantissa bits.
        const SHIFTER: f64 = 6_755_399_441_055_744.0;
        // High part with 32 significant bits, so n·LN2_HI is exact for |n| < 2^21.
        const LN2_HI: f64 = 0.693_147_180_369_123_8;
        const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
        let zc = z.clamp(MIN_ARG, MAX_ARG);
        let t = zc * std::f64::consts::LOG2_E + SHIFTER;
        let n = t - SHIFTER;
        let r = Self::fmadd(n, -LN2_HI, zc, fused);
        let r = Self::fmadd(n, -LN2_LO, r, fused);
        let mut p = INV_FACT[13];
        let mut i = 13;
        while i > 0 {
            i -= 1;
            p = Self::fmadd(p, r, INV_FACT[i], fused);
        }
        let bits = t
            .to_bits()
            .wrapping_sub(SHIFTER.to_bits())
            .wrapping_add(1023)
            << 52;
        let e = p * f64::from_bits(bits);
        if z < MIN_ARG {
            0.0
        } else {
            e
        }
    }
}

impl super::vector::ExpConsts for f32 {
    const MIN_ARG: Self = -87.336_55;
    const MAX_ARG: Self = 88.0;
    const SHIFTER: Self = 12_582_912.0;
    const LOG2_E: Self = std::f32::consts::LOG2_E;
    /// One part, ln 2 rounded to f32: with the fused multiply-add, r is off
    /// by |n|·1.9e-9 at most (2.4e-7 at the smallest normal result, and
    /// below 3e-8 wherever e^z > 1e-12), which keeps the total inside 2^-21
    /// (3.9e-7 worst case, measured) and saves one instruction per vector.
    const LN2_PARTS: &'static [Self] = &[std::f32::consts::LN_2];
    /// Degree 5, fitted (Lawson's iteratively reweighted least squares for
    /// relative error on |r| ≤ ln2/2, our own) with the constant term held
    /// at exactly 1, so exp(0) = 1 and a row with one finite logit gives
    /// exactly 1: 9.2e-8 in exact arithmetic, 1.5e-7 evaluated in f32 —
    /// inside the documented 2^-21 (4.8e-7).
    const POLY: &'static [Self] = &[
        0.008_290_297,
        0.041_897_91,
        0.166_676_36,
        0.499_991_5,
        0.999_999_7,
        1.0,
    ];
}

impl super::vector::ExpConsts for f64 {
    const MIN_ARG: Self = -708.396_418_532_27;
    const MAX_ARG: Self = 709.0;
    const SHIFTER: Self = 6_755_399_441_055_744.0;
    const LOG2_E: Self = std::f64::consts::LOG2_E;
    /// Cody–Waite: a high part with 32 significant bits (n·part exact for
    /// |n| < 2^21) and the rest.
    const LN2_PARTS: &'static [Self] = &[0.693_147_180_369_123_8, 1.908_214_929_270_587_7e-10];
    /// Degree 11, a Chebyshev fit (mpmath, 40 digits) of e^r on |r| ≤ ln2/2:
    /// 3e-18 truncation error, so f64 evaluation rounding (~1 ulp) is all that
    /// remains; two multiply-adds fewer than Taylor degree 13.
    const POLY: &'static [Self] = &[
        2.511_004_920_481_865_8e-8,
        2.763_265_472_252_779e-7,
        2.755_724_088_722_987e-6,
        2.480_148_544_156_131_3e-5,
        1.984_126_989_007_640_3e-4,
        1.388_888_895_235_286_3e-3,
        8.333_333_333_319_589e-3,
        4.166_666_666_648_795e-2,
        1.666_666_666_666_668e-1,
        5.000_000_000_000_019e-1,
        1.0,
        1.0,
    ];
}
