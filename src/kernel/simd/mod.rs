//! SIMD `Element` implementations for f32 and f64, chosen at run time from
//! the CPU's features (AVX-512, AVX2+FMA, NEON, or portable code), so one
//! build is fast on every machine; no `target-cpu=native` needed.

mod dispatch;
// Compile-time coefficient tables indexed within their fixed length; no
// request data reaches an index here.
#[allow(clippy::indexing_slicing)]
mod exp;
mod rows;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::finite::all_finite_by_blocks;
use super::forward::{
    log_softmax_row_by_parts, log_softmax_rows_by_row, softmax_row_by_parts, softmax_rows_by_row,
    softmax_rows_streamed_by_row,
};
use super::Element;
#[allow(unused_imports)]
use dispatch::{level, Level};

/// Runs `$vec` (generic over the vector type `$v`) on the best instruction
/// set of this CPU, or `$port` (given `$fused`: whether FMA is native) on the
/// portable path.
macro_rules! simd {
    ($t:ty; $v:ident => $vec:expr; $fused:ident => $port:expr) => {{
        match level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                #[allow(dead_code)]
                type $v = <$t as x86::Lanes>::Avx512;
                // SAFETY: `level` is Avx512 only when the CPU has AVX-512F and FMA.
                #[allow(unsafe_code)]
                unsafe {
                    dispatch::x86::avx512(
                        #[inline(always)]
                        || $vec,
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                #[allow(dead_code)]
                type $v = <$t as x86::Lanes>::Avx2;
                // SAFETY: `level` is Avx2 only when the CPU has AVX2 and FMA.
                #[allow(unsafe_code)]
                unsafe {
                    dispatch::x86::avx2(
                        #[inline(always)]
                        || $vec,
                    )
                }
            }
            _ => {
                // aarch64 always has NEON and fused multiply-add; baseline
                // x86-64 may lack FMA, where `mul_add` is a slow libm call.
                let $fused = cfg!(target_arch = "aarch64");
                $port
            }
        }
    }};
}

macro_rules! simd_element {
    ($t:ty) => {
        impl Element for $t {
            fn of(v: f64) -> Self {
                v as $t
            }

            fn all_finite(x: &[Self], neg_inf_ok: bool) -> bool {
                simd!($t; V => vector::all_finite::<V>(x, neg_inf_ok); _fused => all_finite_by_blocks(x, neg_inf_ok))
            }

            fn row_max(x: &[Self]) -> Self {
                simd!($t; V => vector::row_max::<V>(x); _fused => rows::row_max(x))
            }

            fn softmax_rows(x: &[Self], k: usize, inv_t: Self, out: &mut [Self]) -> bool {
                simd!($t; V => vector::softmax_rows::<V>(x, k, inv_t, out); _fused => softmax_rows_by_row(x, k, inv_t, out))
            }

            fn log_softmax_rows(x: &[Self], k: usize, inv_t: Self, out: &mut [Self]) -> bool {
                simd!($t; V => vector::log_softmax_rows::<V>(x, k, inv_t, out); _fused => log_softmax_rows_by_row(x, k, inv_t, out))
            }

            fn softmax_row(x: &[Self], inv_t: Self, out: &mut [Self]) -> bool {
                simd!($t; V => vector::softmax_rows::<V>(x, x.len(), inv_t, out); _fused => softmax_row_by_parts(x, inv_t, out))
            }

            fn softmax_rows_streamed(x: &[Self], k: usize, inv_t: Self, e: &mut [Self], out: &mut [Self]) -> bool {
                simd!($t; V => vector::softmax_rows_streamed::<V>(x, k, inv_t, e, out); _fused => softmax_rows_streamed_by_row(x, k, inv_t, e, out))
            }

            fn log_softmax_row(x: &[Self], inv_t: Self, out: &mut [Self]) -> bool {
                simd!($t; V => vector::log_softmax_rows::<V>(x, x.len(), inv_t, out); _fused => log_softmax_row_by_parts(x, inv_t, out))
            }

            fn exp_shifted(x: &[Self], m: Self, inv_t: Self, out: &mut [Self]) -> f64 {
                simd!($t; V => vector::exp_shifted::<V>(x, m, inv_t, out); fused => rows::exp_shifted(fused, x, m, inv_t, out))
            }

            fn sum_exp_shifted(x: &[Self], m: Self, inv_t: Self) -> f64 {
                simd!($t; V => vector::sum_exp_shifted::<V>(x, m, inv_t); fused => rows::sum_exp_shifted(fused, x, m, inv_t))
            }

            fn log_shifted(x: &[Self], m: Self, inv_t: Self, lse: Self, out: &mut [Self]) {
                simd!($t; V => vector::log_shifted::<V>(x, m, inv_t, lse, out); _fused => rows::log_shifted(x, m, inv_t, lse, out))
            }

            fn scale(out: &mut [Self], c: Self) {
                simd!($t; V => vector::scale::<V>(out, c); _fused => rows::scale(out, c))
            }

            fn dot(a: &[Self], b: &[Self]) -> f64 {
                simd!($t; V => vector::dot::<V>(a, b); _fused => rows::dot(a, b))
            }

            fn sum(a: &[Self]) -> f64 {
                simd!($t; V => vector::sum::<V>(a); _fused => rows::sum(a))
            }

            fn dot_exp(l: &[Self], g: &[Self]) -> f64 {
                simd!($t; V => vector::dot_exp::<V>(l, g); fused => rows::dot_exp(fused, l, g))
            }

            fn vjp(s: &[Self], g: &[Self], d: Self, c: Self, out: &mut [Self]) {
                simd!($t; V => vector::vjp::<V>(s, g, d, c, out); _fused => rows::vjp(s, g, d, c, out))
            }

            fn vjp_in_place(out: &mut [Self], g: &[Self], d: Self, c: Self) {
                simd!($t; V => vector::vjp_in_place::<V>(out, g, d, c); _fused => rows::vjp_in_place(out, g, d, c))
            }

            fn log_vjp(l: &[Self], g: &[Self], sg: Self, c: Self, out: &mut [Self]) {
                simd!($t; V => vector::log_vjp::<V>(l, g, sg, c, out); fused => rows::log_vjp(fused, l, g, sg, c, out))
            }

            fn log_vjp_in_place(out: &mut [Self], g: &[Self], sg: Self, c: Self) {
                simd!($t; V => vector::log_vjp_in_place::<V>(out, g, sg, c); fused => rows::log_vjp_in_place(fused, out, g, sg, c))
            }

            fn scaled(s: &[Self], a: Self, out: &mut [Self]) {
                simd!($t; V => vector::scaled::<V>(s, a, out); _fused => rows::scaled(s, a, out))
            }

            fn scaled_stream(s: &[Self], a: Self, out: &mut [Self]) {
                simd!($t; V => vector::scaled_stream::<V>(s, a, out); _fused => rows::scaled(s, a, out))
            }

            fn scaled_exp(l: &[Self], a: Self, out: &mut [Self]) {
                simd!($t; V => vector::scaled_exp::<V>(l, a, out); fused => rows::scaled_exp(fused, l, a, out))
            }
        }
    };
}

simd_element!(f32);
simd_element!(f64);
