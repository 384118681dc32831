//! The request a run sends, built and encoded once: every call then sends
//! the same bytes, so the load tool spends nothing per call on building it.

use super::args::{BenchArgs, Dtype, Encoding, Rpc};
use crate::proto::v1::{
    BackwardRequest, CrossEntropyRequest, ForwardRequest, JacobianRequest, Tensor,
};
use bytes::Bytes;
use prost::Message;

/// An encoded request and what its answer must hold.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The encoded protobuf message.
    pub body: Bytes,
    /// Values the answer's main tensor holds, summed over a stream's messages.
    pub response_values: u64,
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

/// Builds and encodes the request `args` describe.
pub fn build(args: &BenchArgs) -> Payload {
    let n = args.shape.elements() as usize;
    let k = args.shape.k();
    let rows = args.shape.rows();
    let x = || Some(tensor(args, logits(n)));
    let (body, response_values) = match args.rpc {
        Rpc::Forward | Rpc::ForwardStream => (
            ForwardRequest {
                logits: x(),
                ..Default::default()
            }
            .encode_to_vec(),
            n as u64,
        ),
        Rpc::Backward => (
            BackwardRequest {
                output: Some(tensor(args, probs(n, k))),
                grad_output: x(),
                ..Default::default()
            }
            .encode_to_vec(),
            n as u64,
        ),
        Rpc::Jacobian | Rpc::JacobianStream => (
            JacobianRequest {
                logits: x(),
                ..Default::default()
            }
            .encode_to_vec(),
            (n as u64).saturating_mul(u64::from(k)),
        ),
        Rpc::CrossEntropy => (
            CrossEntropyRequest {
                logits: x(),
                labels: (0..rows).map(|r| (r % u64::from(k)) as u32).collect(),
                ..Default::default()
            }
            .encode_to_vec(),
            n as u64,
        ),
    };
    Payload {
        body: Bytes::from(body),
        response_values,
    }
}
