//! The generated `SoftmaxService` trait, implemented by delegating each RPC
//! to its module and wrapping it in a [`Call`] for telemetry; and the unary
//! entry points that can answer with an encoded message.

use super::call::Call;
use super::framed::Reply;
use super::jacobian::{unencoded, JacobianAnswers, JacobianStream};
use super::{Admission, Error, Softmax};
use crate::proto::v1::softmax_service_server::SoftmaxService;
use crate::proto::v1::{
    BackwardRequest, BackwardResponse, CrossEntropyRequest, CrossEntropyResponse, ForwardRequest,
    ForwardResponse, JacobianRequest, JacobianResponse,
};
use futures::Stream;
use std::pin::Pin;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// The stream ForwardStream answers with.
pub type ForwardStream = Pin<Box<dyn Stream<Item = Result<ForwardResponse, Status>> + Send>>;

/// An admitted ForwardStream whose caller reads the messages and sends the
/// answers itself; the call counts as in flight until this is dropped.
pub struct ForwardAnswers {
    service: Softmax,
    span: tracing::Span,
    _admitted: Admission,
}

impl ForwardAnswers {
    /// Answers one message of the stream, raw results already encoded.
    pub async fn answer(&self, req: ForwardRequest) -> Result<Reply<ForwardResponse>, Status> {
        self.service
            .forward_one(req, None, true)
            .instrument(self.span.clone())
            .await
            .map_err(Status::from)
    }
}

impl Softmax {
    /// Serves a Forward call. With `encode`, raw results come back as the
    /// whole encoded response, for a server that sends it as is.
    pub async fn forward_unary(
        &self,
        req: ForwardRequest,
        encode: bool,
    ) -> Result<Reply<ForwardResponse>, Status> {
        self.unary("Forward", async |call| {
            self.forward_one(req, Some(call), encode).await
        })
        .await
    }

    /// Serves a Backward call; `encode` as for [`Self::forward_unary`].
    pub async fn backward_unary(
        &self,
        req: BackwardRequest,
        encode: bool,
    ) -> Result<Reply<BackwardResponse>, Status> {
        self.unary("Backward", async |call| {
            self.backward_one(req, call, encode).await
        })
        .await
    }

    /// Serves a Jacobian call; `encode` as for [`Self::forward_unary`].
    pub async fn jacobian_unary(
        &self,
        req: JacobianRequest,
        encode: bool,
    ) -> Result<Reply<JacobianResponse>, Status> {
        self.unary("Jacobian", async |call| {
            self.jacobian_one(req, call, encode).await
        })
        .await
    }

    /// Serves a CrossEntropy call; `encode` as for [`Self::forward_unary`].
    pub async fn cross_entropy_unary(
        &self,
        req: CrossEntropyRequest,
        encode: bool,
    ) -> Result<Reply<CrossEntropyResponse>, Status> {
        self.unary("CrossEntropy", async |call| {
            self.cross_entropy_one(req, call, encode).await
        })
        .await
    }

    /// Admits a ForwardStream call that is read and answered outside
    /// tonic, one message at a time (see [`ForwardAnswers`]).
    pub fn forward_answers(&self) -> Result<ForwardAnswers, Status> {
        let call = Call::start("ForwardStream");
        let admitted = {
            let _enter = call.span().enter();
            self.admit()
        };
        let span = call.span().clone();
        let answers = admitted.map(|admitted| ForwardAnswers {
            service: self.clone(),
            span,
            _admitted: admitted,
        });
        call.finish(answers).map(Response::into_inner)
    }

    /// Admits a JacobianStream call and starts producing its messages, raw
    /// ones already encoded, for a caller that sends them itself.
    pub fn jacobian_answers(&self, req: JacobianRequest) -> Result<JacobianAnswers, Status> {
        self.jacobian_stream_call(req, true)
    }

    /// Admits a JacobianStream call and starts producing its messages, raw
    /// ones encoded when `encode` asks for it.
    fn jacobian_stream_call(
        &self,
        req: JacobianRequest,
        encode: bool,
    ) -> Result<JacobianAnswers, Status> {
        let call = Call::start("JacobianStream");
        let r = {
            let _enter = call.span().enter();
            self.admit()
                .and_then(|admitted| self.jacobian_answers_start(req, &call, admitted, encode))
        };
        call.finish(r).map(Response::into_inner)
    }

    /// Runs one unary call of `method`: admitted, inside its span, and
    /// finished with its telemetry.
    async fn unary<M>(
        &self,
        method: &'static str,
        work: impl AsyncFnOnce(&Call) -> Result<M, Error>,
    ) -> Result<M, Status> {
        let call = Call::start(method);
        let admitted_work = async {
            let _admitted = self.admit()?;
            work(&call).await
        };
        let r = admitted_work.instrument(call.span().clone()).await;
        call.finish(r).map(Response::into_inner)
    }
}

/// The message of an answer that was not asked to be encoded.
fn message<M>(reply: Reply<M>) -> Result<Response<M>, Status> {
    reply
        .into_message()
        .map(Response::new)
        .map_err(Status::from)
}

#[tonic::async_trait]
impl SoftmaxService for Softmax {
    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        message(self.forward_unary(req.into_inner(), false).await?)
    }

    async fn backward(
        &self,
        req: Request<BackwardRequest>,
    ) -> Result<Response<BackwardResponse>, Status> {
        message(self.backward_unary(req.into_inner(), false).await?)
    }

    async fn jacobian(
        &self,
        req: Request<JacobianRequest>,
    ) -> Result<Response<JacobianResponse>, Status> {
        message(self.jacobian_unary(req.into_inner(), false).await?)
    }

    type JacobianStreamStream = JacobianStream;

    async fn jacobian_stream(
        &self,
        req: Request<JacobianRequest>,
    ) -> Result<Response<Self::JacobianStreamStream>, Status> {
        self.jacobian_stream_call(req.into_inner(), false)
            .map(|answers| Response::new(unencoded(answers)))
    }

    type ForwardStreamStream = ForwardStream;

    async fn forward_stream(
        &self,
        req: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let call = Call::start("ForwardStream");
        let admitted = match self.admit() {
            Ok(a) => a,
            Err(e) => return call.finish(Err(e)),
        };
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<ForwardResponse, Status>>(2);
        let service = self.clone();
        let span = call.span().clone();
        tokio::spawn(
            async move {
                let _admitted = admitted;
                // One response per request, in order; the first error ends it.
                loop {
                    let next = match incoming.message().await {
                        Ok(Some(req)) => service
                            .forward_one(req, None, false)
                            .await
                            .and_then(Reply::into_message)
                            .map_err(Status::from),
                        Ok(None) => break,
                        Err(status) => Err(status),
                    };
                    let failed = next.is_err();
                    if tx.send(next).await.is_err() || failed {
                        break;
                    }
                }
            }
            .instrument(span),
        );
        let stream: ForwardStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        call.finish(Ok::<_, Error>(stream))
    }

    async fn cross_entropy(
        &self,
        req: Request<CrossEntropyRequest>,
    ) -> Result<Response<CrossEntropyResponse>, Status> {
        message(self.cross_entropy_unary(req.into_inner(), false).await?)
    }
}
