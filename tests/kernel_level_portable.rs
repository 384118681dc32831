//! Every operation on the portable code path (forced with SOFTMAXD_SIMD, which the
//! kernel reads once per process: so this file holds one test).

mod common;

#[test]
fn all_ops_match_reference_on_portable() {
    // Edition 2021: set_var is safe; no other thread has started yet.
    std::env::set_var("SOFTMAXD_SIMD", "portable");
    common::check_all_ops();
}
