//! The scan for non-finite values on this CPU's best code path (the other
//! paths run it in `kernel_level_*`).

mod common;

#[test]
fn all_finite_matches_its_definition() {
    common::check_all_finite();
}
