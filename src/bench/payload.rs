//! The request a run sends, built and encoded once: every call then sends
//! the same bytes, so the load tool spends nothing per call on building it.

use super::args::{BenchArgs, Dtype, Encoding, Rpc};
use super::codec::Prefixed;
use crate::proto::v1::{
    BackwardRequest, CrossEntropyRequest, ForwardRequest, JacobianRequest, Tensor,
};
use bytes::Bytes;
use prost::Message;

/// An encoded request and what its answer must hold.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The encoded request.
    pub body: Prefixed,
    /// Values the answer's main tensor holds, summed over a stream's messages.
    pub response_values: u64,
    /// With `--invalid-fraction`: the same request spoilt in each way, in turn.
    pub invalid: Vec<(Invalid, Prefixed)>,
}

/// A way of making the request invalid; the service must answer each with
/// INVALID_ARGUMENT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The main tensor's first value is NaN (an extra NaN when it has none).
    Nan,
    /// The main tensor holds one value more than its shape says.
    Length,
    /// The main tensor has values in two fields (f32 and f64).
    TwoFields,
}

impl Invalid {
    /// Every way, in the order calls take them.
    pub const ALL: [Invalid; 3] = [Invalid::Nan, Invalid::Length, Invalid::TwoFields];

    /// Spoils `t` this way.
    fn apply(self, t: &mut Tensor) {
        match self {
            Invalid::Nan => {
                if let Some(v) = t.f32.first_mut() {
                    *v = f32::NAN;
                } else if let Some(v) = t.f64.first_mut() {
                    *v = f64::NAN;
                } else if !t.f32_le.is_empty() {
                    t.f32_le = splice(&t.f32_le, &f32::NAN.to_le_bytes());
                } else if !t.f64_le.is_empty() {
                    t.f64_le = splice(&t.f64_le, &f64::NAN.to_le_bytes());
                } else {
                    t.f32.push(f32::NAN);
                }
            }
            Invalid::Length => {
                if !t.f32.is_empty() {
                    t.f32.push(0.0);
                } else if !t.f64.is_empty() {
                    t.f64.push(0.0);
                } else if !t.f64_le.is_empty() {
                    t.f64_le = [&t.f64_le[..], &0f64.to_le_bytes()].concat().into();
                } else {
                    t.f32_le = [&t.f32_le[..], &0f32.to_le_bytes()].concat().into();
                }
            }
            Invalid::TwoFields => {
                if t.f32.is_empty() && t.f32_le.is_empty() {
                    t.f32.push(0.0);
                } else {
                    t.f64.push(0.0);
                }
            }
        }
    }
}

/// `bytes` with its start overwritten by `head`.
fn splice(bytes: &Bytes, head: &[u8]) -> Bytes {
    let mut v = bytes.to_vec();
    v.iter_mut().zip(head).for_each(|(b, h)| *b = *h);
    v.into()
}

/// Deterministic logits spread over [-4, 4): finite, varied, no RNG needed.
fn logits(n: usize) -> impl Iterator<Item = f64> {
    (0..n).map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 8192) as f64 / 1024.0 - 4.0)
}

/// A uniform distribution per vector: valid Forward output for Backward.
fn probs(n: usize, k: u32) -> impl Iterator<Item = f64> {
    let p = 1.0 / f64::from(k.max(1));
    (0..n).map(move |_| p)
}

fn tensor(args: &BenchArgs, values: impl Iterator<Item = f64>) -> Tensor {
    let mut t = Tensor {
        shape: args.shape.0.clone(),
        ..Tensor::default()
    };
    match (args.dtype, args.encoding) {
        (Dtype::F32, Encoding::Typed) => t.f32 = values.map(|v| v as f32).collect(),
        (Dtype::F64, Encoding::Typed) => t.f64 = values.collect(),
        (Dtype::F32, Encoding::Raw) => {
            t.f32_le = values.flat_map(|v| (v as f32).to_le_bytes()).collect()
        }
        (Dtype::F64, Encoding::Raw) => t.f64_le = values.flat_map(f64::to_le_bytes).collect(),
    }
    t
}

/// Builds and encodes the request `args` describe (and its invalid
/// variants when some calls are to be invalid).
pub fn build(args: &BenchArgs) -> Result<Payload, String> {
    let n = args.shape.elements() as usize;
    let k = u64::from(args.shape.k());
    let response_values = match args.rpc {
        Rpc::Jacobian | Rpc::JacobianStream => (n as u64).saturating_mul(k),
        _ => n as u64,
    };
    let invalid = if args.invalid_fraction > 0.0 {
        Invalid::ALL
            .iter()
            .map(|&way| Ok((way, encode(args, Some(way))?)))
            .collect::<Result<_, String>>()?
    } else {
        Vec::new()
    };
    Ok(Payload {
        body: encode(args, None)?,
        response_values,
        invalid,
    })
}

/// The request `args` describe, its main tensor spoilt in the `spoil` way.
fn encode(args: &BenchArgs, spoil: Option<Invalid>) -> Result<Prefixed, String> {
    let n = args.shape.elements() as usize;
    let k = args.shape.k();
    let rows = args.shape.rows();
    // The main tensor: the one the service validates first.
    let main = |values: &mut dyn Iterator<Item = f64>| {
        let mut t = tensor(args, values);
        if let Some(way) = spoil {
            way.apply(&mut t);
        }
        Some(t)
    };
    let body = match args.rpc {
        Rpc::Forward | Rpc::ForwardStream => ForwardRequest {
            logits: main(&mut logits(n)),
            ..Default::default()
        }
        .encode_to_vec(),
        Rpc::Backward => BackwardRequest {
            output: main(&mut probs(n, k)),
            grad_output: Some(tensor(args, logits(n))),
            ..Default::default()
        }
        .encode_to_vec(),
        Rpc::Jacobian | Rpc::JacobianStream => JacobianRequest {
            logits: main(&mut logits(n)),
            ..Default::default()
        }
        .encode_to_vec(),
        Rpc::CrossEntropy => CrossEntropyRequest {
            logits: main(&mut logits(n)),
            labels: (0..rows).map(|r| (r % u64::from(k)) as u32).collect(),
            ..Default::default()
        }
        .encode_to_vec(),
    };
    Prefixed::new(&body)
        .ok_or_else(|| format!("a {}-byte request is over gRPC's 4 GiB", body.len()))
}
