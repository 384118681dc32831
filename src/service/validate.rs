//! Value checks on decoded tensors and scalar parameters, each naming the
//! field and the flat position of the first offending value.

use super::error::Error;
use super::tensor::{Input, Wire};
use crate::kernel::Element;

/// `1/T` in the call's dtype; `T` unset means 1. Zero, negative, non-finite
/// and temperatures whose reciprocal overflows are refused.
pub fn inv_temperature<F: Element>(t: Option<f32>) -> Result<F, Error> {
    let Some(t) = t else {
        return Ok(F::one());
    };
    if !(t.is_finite() && t > 0.0) {
        return Err(Error::invalid(format!(
            "temperature: must be finite and > 0, got {t}"
        )));
    }
    let inv = F::of(1.0 / f64::from(t));
    if !inv.is_finite() {
        return Err(Error::invalid(format!(
            "temperature: {t} is too small, 1/T overflows the request's dtype"
        )));
    }
    Ok(inv)
}

/// The error for a block the kernel's exact screen called suspect but the
/// scan found clean: a bug, never the client's fault.
pub fn unexplained_suspect(field: &str, offset: usize) -> Error {
    Error::Internal(format!(
        "{field}: the kernel screened out values from flat index {offset} that the check passes"
    ))
}

/// Which non-finite values a tensor may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    /// Logits and log-probabilities: `-inf` is a mask.
    NegInf,
    /// Probabilities, gradients, targets: only finite values.
    FiniteOnly,
}

/// Fails on the first value that `allow` rules out.
pub fn check_values<F: Wire>(input: &Input<F>, allow: Allow) -> Result<(), Error> {
    check_block(input.field, input.values()?, 0, allow)
}

/// Fails on the first value of `values` that `allow` rules out, naming its
/// flat index in the tensor (`values` starts at flat index `offset`).
pub fn check_block<F: Wire>(
    field: &str,
    values: &[F],
    offset: usize,
    allow: Allow,
) -> Result<(), Error> {
    // A fast scan first: almost every request is clean.
    if all_pass(values, allow) {
        return Ok(());
    }
    let bad = |v: F| {
        v.is_nan() || v == F::infinity() || (allow == Allow::FiniteOnly && v == F::neg_infinity())
    };
    let (i, v) = values
        .iter()
        .enumerate()
        .find(|(_, &v)| bad(v))
        .map(|(i, &v)| (i, v))
        .unwrap_or((0, F::nan()));
    Err(Error::invalid(format!(
        "{field}: {} at flat index {}{}",
        describe(v),
        offset + i,
        if allow == Allow::NegInf {
            " (only finite values and -inf masks are allowed)"
        } else {
            " (only finite values are allowed)"
        }
    )))
}

/// True when no value is ruled out: one SIMD scan of the kernel's.
fn all_pass<F: Wire>(values: &[F], allow: Allow) -> bool {
    F::all_finite(values, allow == Allow::NegInf)
}

/// Fails on a negative or non-finite target value.
pub fn check_target<F: Wire>(input: &Input<F>) -> Result<(), Error> {
    check_values(input, Allow::FiniteOnly)?;
    let values = input.values()?;
    match values.iter().position(|&v| v < F::zero()) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(format!(
            "{}: negative value {:?} at flat index {i} (a target is a non-negative distribution)",
            input.field,
            values.get(i).copied().unwrap_or_else(F::zero)
        ))),
    }
}

/// Fails unless there is one label per row, each below `k`.
pub fn check_labels(labels: &[u32], rows: usize, k: usize) -> Result<(), Error> {
    if labels.len() != rows {
        return Err(Error::invalid(format!(
            "labels: {} labels for {rows} vectors (one class index per vector)",
            labels.len()
        )));
    }
    match labels.iter().position(|&c| c as usize >= k) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(format!(
            "labels: label {} at index {i} is out of range for k = {k}",
            labels.get(i).copied().unwrap_or_default()
        ))),
    }
}

fn describe<F: Element>(v: F) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > F::zero() {
        "+inf"
    } else {
        "-inf"
    }
}
