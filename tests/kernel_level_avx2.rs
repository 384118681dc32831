//! Every operation on the avx2 code path (forced with SOFTMAXD_SIMD, which the
//! kernel reads once per process: so this file holds one test).

mod common;

#[test]
fn all_ops_match_reference_on_avx2() {
    // Edition 2021: set_var is safe; no other thread has started yet.
    std::env::set_var("SOFTMAXD_SIMD", "avx2");
    common::check_all_ops();
}
