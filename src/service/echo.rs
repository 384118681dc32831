//! The identity service behind `softmaxd --echo`: the transport's ceiling.
//!
//! It answers every RPC with the request's primary tensor unchanged, so a
//! load test against it measures everything softmaxd pays for except the
//! validation and the math: HTTP/2, protobuf decoding and encoding, tonic.

use crate::proto::v1::softmax_service_server::SoftmaxService;
use crate::proto::v1::{
    BackwardRequest, BackwardResponse, CrossEntropyRequest, CrossEntropyResponse, ForwardRequest,
    ForwardResponse, JacobianRequest, JacobianResponse, Tensor,
};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

/// A stream of responses, boxed.
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers each RPC with its request's primary tensor, untouched.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Echo {
    /// A Forward answer: the logits.
    pub fn forward_of(req: ForwardRequest) -> ForwardResponse {
        ForwardResponse { output: req.logits }
    }

    /// A Backward answer: the output gradient.
    pub fn backward_of(req: BackwardRequest) -> BackwardResponse {
        BackwardResponse {
            grad_logits: req.grad_output,
        }
    }

    /// A CrossEntropy answer: no loss, and the logits as the gradient.
    pub fn cross_entropy_of(req: CrossEntropyRequest) -> CrossEntropyResponse {
        CrossEntropyResponse {
            loss: Some(Tensor::default()),
            grad_logits: req.logits,
        }
    }

    /// A Jacobian answer: whichever of `output` or `logits` is set.
    pub fn jacobian_of(req: JacobianRequest) -> JacobianResponse {
        JacobianResponse {
            jacobian: req.output.or(req.logits),
            first_row: 0,
        }
    }
}

#[tonic::async_trait]
impl SoftmaxService for Echo {
    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        Ok(Response::new(Echo::forward_of(req.into_inner())))
    }

    async fn backward(
        &self,
        req: Request<BackwardRequest>,
    ) -> Result<Response<BackwardResponse>, Status> {
        Ok(Response::new(Echo::backward_of(req.into_inner())))
    }

    async fn jacobian(
        &self,
        req: Request<JacobianRequest>,
    ) -> Result<Response<JacobianResponse>, Status> {
        Ok(Response::new(Echo::jacobian_of(req.into_inner())))
    }

    type JacobianStreamStream = Boxed<JacobianResponse>;

    async fn jacobian_stream(
        &self,
        req: Request<JacobianRequest>,
    ) -> Result<Response<Self::JacobianStreamStream>, Status> {
        let one = Echo::jacobian_of(req.into_inner());
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(one)]))))
    }

    type ForwardStreamStream = Boxed<ForwardResponse>;

    async fn forward_stream(
        &self,
        req: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let echoed = req
            .into_inner()
            .map(|m| m.map(|r| ForwardResponse { output: r.logits }));
        Ok(Response::new(Box::pin(echoed)))
    }

    async fn cross_entropy(
        &self,
        req: Request<CrossEntropyRequest>,
    ) -> Result<Response<CrossEntropyResponse>, Status> {
        Ok(Response::new(Echo::cross_entropy_of(req.into_inner())))
    }
}
