//! Picks the widest instruction set the CPU has, once, and runs row loops
//! compiled for it.
//!
//! A row loop is an `#[inline(always)]` closure, inlined into one of the
//! `#[target_feature]` functions below and so compiled for that instruction
//! set. `SOFTMAXD_SIMD=portable|avx2` caps the choice (for benchmarks).
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// An instruction set the row loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Level {
    /// The target's baseline (SSE2 on x86-64, NEON with FMA on aarch64).
    Portable,
    Avx2,
    Avx512,
}

/// The level in use: the best the CPU supports, capped by `SOFTMAXD_SIMD`.
pub(crate) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("SOFTMAXD_SIMD").as_deref() {
        Ok("portable") => Level::Portable,
        Ok("avx2") => best().min(Level::Avx2),
        _ => best(),
    })
}

/// The best level this CPU supports.
pub(crate) fn best() -> Level {
    static BEST: OnceLock<Level> = OnceLock::new();
    *BEST.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

/// `#[target_feature]` entry points: `f`, an `#[inline(always)]` closure, is
/// compiled into them with their instruction set enabled.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    /// Callers must have checked that [`super::best`] is `Avx512`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(crate) fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Callers must have checked that [`super::best`] is at least `Avx2`.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
