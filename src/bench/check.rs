//! Checks one answer before a run: it must decode as the RPC's response and
//! hold as many values as the payload asks for, so a run never measures a
//! server that answers with something else.

use super::args::Rpc;
use crate::proto::v1::{
    BackwardResponse, CrossEntropyResponse, ForwardResponse, JacobianResponse, Tensor,
};
use bytes::Bytes;
use prost::Message;

fn values(t: &Tensor) -> u64 {
    (t.f32.len() + t.f64.len() + t.f32_le.len() / 4 + t.f64_le.len() / 8) as u64
}

fn decode<M: Message + Default>(body: Bytes) -> Result<M, String> {
    M::decode(body).map_err(|e| format!("the answer does not decode: {e}"))
}

/// Checks `body`, an answer to `rpc` (the last message of a stream), against
/// the `want` values its main tensor must hold (per message for streams:
/// only that the tensor is there).
pub fn answer(rpc: Rpc, body: Bytes, want: u64) -> Result<(), String> {
    let main = match rpc {
        Rpc::Forward | Rpc::ForwardStream => decode::<ForwardResponse>(body)?.output,
        Rpc::Backward => decode::<BackwardResponse>(body)?.grad_logits,
        Rpc::Jacobian | Rpc::JacobianStream => decode::<JacobianResponse>(body)?.jacobian,
        Rpc::CrossEntropy => decode::<CrossEntropyResponse>(body)?.grad_logits,
    };
    let main = main.ok_or("the answer has no result tensor")?;
    let got = values(&main);
    match rpc {
        Rpc::JacobianStream if got > 0 => Ok(()),
        _ if got == want => Ok(()),
        _ => Err(format!("the answer holds {got} values, expected {want}")),
    }
}
