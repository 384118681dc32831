//! The SoftmaxService endpoint with its methods answered directly (the
//! streaming ones in `stream.rs`): each request decoded where h2 read it
//! (or assembled once), and the results (raw or typed) computed straight
//! into the encoded response, which goes to h2 as it is, with no second
//! copy through tonic's encoder (see `service::Reply`). Through tonic, a
//! request was copied into a decode buffer that grew frame by frame and
//! the answer copied into the message after the kernel: `memmove` was a
//! quarter of a CrossEntropy [64,1000] call and 30% of a Jacobian [4,1000]
//! one.
//!
//! Only uncompressed calls take this route: a compressed request, or a
//! response that should be compressed, goes through tonic's own handler.
//! The echo service takes the same route, so that it stays the ceiling of
//! the transport softmaxd uses.

use super::{request, stream as streams};
use crate::proto::v1::softmax_service_server::{SoftmaxService, SoftmaxServiceServer};
use crate::proto::v1::{
    BackwardRequest, BackwardResponse, CrossEntropyRequest, CrossEntropyResponse, ForwardRequest,
    ForwardResponse, JacobianRequest, JacobianResponse,
};
use crate::service::{
    prefix, Echo, Encoded, ForwardAnswers, JacobianAnswers, Reply, Softmax, PREFIX,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{stream, Stream};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::StreamBody;
use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

const FORWARD: &str = "/softmax.v1.SoftmaxService/Forward";
const BACKWARD: &str = "/softmax.v1.SoftmaxService/Backward";
const JACOBIAN: &str = "/softmax.v1.SoftmaxService/Jacobian";
const CROSS_ENTROPY: &str = "/softmax.v1.SoftmaxService/CrossEntropy";
const FORWARD_STREAM: &str = "/softmax.v1.SoftmaxService/ForwardStream";
const JACOBIAN_STREAM: &str = "/softmax.v1.SoftmaxService/JacobianStream";

/// A service whose unary and streaming methods may answer with messages
/// already encoded.
pub trait Unary: SoftmaxService + Clone {
    /// What answers the messages of one ForwardStream call.
    type Answers: Answers;

    /// Admits a ForwardStream call, or refuses it.
    fn forward_answers(&self) -> Result<Self::Answers, Status>;

    /// The messages of one JacobianStream call.
    type JacobianAnswers: Stream<Item = Result<Reply<JacobianResponse>, Status>> + Send + 'static;

    /// Admits a JacobianStream call and starts its messages, or refuses it.
    fn jacobian_answers(&self, req: JacobianRequest) -> Result<Self::JacobianAnswers, Status>;
    fn forward(
        &self,
        req: ForwardRequest,
    ) -> impl Future<Output = Result<Reply<ForwardResponse>, Status>> + Send;
    fn backward(
        &self,
        req: BackwardRequest,
    ) -> impl Future<Output = Result<Reply<BackwardResponse>, Status>> + Send;
    fn jacobian(
        &self,
        req: JacobianRequest,
    ) -> impl Future<Output = Result<Reply<JacobianResponse>, Status>> + Send;
    fn cross_entropy(
        &self,
        req: CrossEntropyRequest,
    ) -> impl Future<Output = Result<Reply<CrossEntropyResponse>, Status>> + Send;
}

/// Answers the messages of one ForwardStream call, in order.
pub trait Answers: Send + 'static {
    fn answer(
        &self,
        req: ForwardRequest,
    ) -> impl Future<Output = Result<Reply<ForwardResponse>, Status>> + Send;
}

impl Answers for ForwardAnswers {
    fn answer(
        &self,
        req: ForwardRequest,
    ) -> impl Future<Output = Result<Reply<ForwardResponse>, Status>> + Send {
        ForwardAnswers::answer(self, req)
    }
}

impl Unary for Softmax {
    type Answers = ForwardAnswers;

    fn forward_answers(&self) -> Result<ForwardAnswers, Status> {
        Softmax::forward_answers(self)
    }

    type JacobianAnswers = JacobianAnswers;

    fn jacobian_answers(&self, req: JacobianRequest) -> Result<JacobianAnswers, Status> {
        Softmax::jacobian_answers(self, req)
    }
    fn forward(
        &self,
        req: ForwardRequest,
    ) -> impl Future<Output = Result<Reply<ForwardResponse>, Status>> + Send {
        self.forward_unary(req, true)
    }
    fn backward(
        &self,
        req: BackwardRequest,
    ) -> impl Future<Output = Result<Reply<BackwardResponse>, Status>> + Send {
        self.backward_unary(req, true)
    }
    fn jacobian(
        &self,
        req: JacobianRequest,
    ) -> impl Future<Output = Result<Reply<JacobianResponse>, Status>> + Send {
        self.jacobian_unary(req, true)
    }
    fn cross_entropy(
        &self,
        req: CrossEntropyRequest,
    ) -> impl Future<Output = Result<Reply<CrossEntropyResponse>, Status>> + Send {
        self.cross_entropy_unary(req, true)
    }
}

/// Echo answers with the request's own tensor, which prost then encodes
/// as it would for any typed answer.
impl Unary for Echo {
    type Answers = Echo;

    fn forward_answers(&self) -> Result<Echo, Status> {
        Ok(Echo)
    }

    type JacobianAnswers =
        stream::Iter<std::array::IntoIter<Result<Reply<JacobianResponse>, Status>, 1>>;

    fn jacobian_answers(&self, req: JacobianRequest) -> Result<Self::JacobianAnswers, Status> {
        Ok(stream::iter([Ok(Reply::Message(Echo::jacobian_of(req)))]))
    }
    async fn forward(&self, req: ForwardRequest) -> Result<Reply<ForwardResponse>, Status> {
        Ok(Reply::Message(Echo::forward_of(req)))
    }
    async fn backward(&self, req: BackwardRequest) -> Result<Reply<BackwardResponse>, Status> {
        Ok(Reply::Message(Echo::backward_of(req)))
    }
    async fn jacobian(&self, req: JacobianRequest) -> Result<Reply<JacobianResponse>, Status> {
        Ok(Reply::Message(Echo::jacobian_of(req)))
    }
    async fn cross_entropy(
        &self,
        req: CrossEntropyRequest,
    ) -> Result<Reply<CrossEntropyResponse>, Status> {
        Ok(Reply::Message(Echo::cross_entropy_of(req)))
    }
}

impl Answers for Echo {
    async fn answer(&self, req: ForwardRequest) -> Result<Reply<ForwardResponse>, Status> {
        Ok(Reply::Message(Echo::forward_of(req)))
    }
}

/// Routes uncompressed unary calls to the service's handlers that may
/// encode their own answers, the streaming ones and anything compressed to
/// tonic's generated server.
#[derive(Clone)]
pub struct Direct<S: Unary> {
    service: S,
    generated: SoftmaxServiceServer<S>,
    /// Largest request and response message.
    max_message_bytes: usize,
    /// Responses are compressed for clients that accept it.
    compress_responses: bool,
}

impl<S: Unary> Direct<S> {
    /// Serves `service` directly where it can, else through `generated`
    /// (the same service with the server's limits and compression).
    pub fn new(
        service: S,
        generated: SoftmaxServiceServer<S>,
        max_message_bytes: usize,
        compress_responses: bool,
    ) -> Self {
        Self {
            service,
            generated,
            max_message_bytes,
            compress_responses,
        }
    }

    /// True when neither the request nor its response is compressed.
    fn plain(&self, headers: &HeaderMap) -> bool {
        let identity = headers
            .get("grpc-encoding")
            .is_none_or(|e| e.as_bytes() == b"identity");
        let compressed_answer = self.compress_responses
            && headers
                .get("grpc-accept-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|e| matches!(e.trim(), "gzip" | "zstd")));
        identity && !compressed_answer
    }
}

impl<S: Unary> NamedService for Direct<S> {
    const NAME: &'static str = <SoftmaxServiceServer<S> as NamedService>::NAME;
}

impl<S: Unary> Service<http::Request<Body>> for Direct<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !self.plain(req.headers()) {
            return self.generated.call(req);
        }
        let service = self.service.clone();
        let max = self.max_message_bytes;
        match req.uri().path() {
            FORWARD => Box::pin(unary(req, max, async move |m| {
                Unary::forward(&service, m).await
            })),
            BACKWARD => Box::pin(unary(req, max, async move |m| {
                Unary::backward(&service, m).await
            })),
            JACOBIAN => Box::pin(unary(req, max, async move |m| {
                Unary::jacobian(&service, m).await
            })),
            CROSS_ENTROPY => Box::pin(unary(req, max, async move |m| {
                Unary::cross_entropy(&service, m).await
            })),
            JACOBIAN_STREAM => Box::pin(streams::jacobian(req, max, service)),
            FORWARD_STREAM => {
                Box::pin(streams::forward(req, max, Unary::forward_answers(&service)))
            }
            _ => self.generated.call(req),
        }
    }
}

/// Decodes the one request message of a unary call, lets `handle` answer
/// it and sends the answer, encoded here unless it already is.
async fn unary<Req, Resp>(
    req: http::Request<Body>,
    max: usize,
    handle: impl AsyncFnOnce(Req) -> Result<Reply<Resp>, Status>,
) -> Result<http::Response<Body>, Infallible>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let message = match request::message::<Req, Resp>(req.into_body(), max).await {
        Ok(m) => m,
        Err(status) => return Ok(status.into_http()),
    };
    let encoded = handle(message).await.and_then(|reply| encoded(reply, max));
    Ok(match encoded {
        Ok(message) => answer(message),
        Err(status) => status.into_http(),
    })
}

/// An answer as one gRPC length-prefixed message, encoded here unless it
/// already is.
pub(super) fn encoded<M: prost::Message>(reply: Reply<M>, max: usize) -> Result<Bytes, Status> {
    match reply {
        Reply::Encoded(Encoded { message }) => Ok(message),
        Reply::Message(m) => encode(&m, max),
    }
}

/// A message as one gRPC length-prefixed message, refused past `max` bytes
/// as tonic's encoder would.
fn encode(m: &impl prost::Message, max: usize) -> Result<Bytes, Status> {
    let len = m.encoded_len();
    if len > max {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {max} bytes"
        )));
    }
    let head = prefix(len)
        .ok_or_else(|| Status::resource_exhausted(format!("a {len}-byte message is over 4 GiB")))?;
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_slice(&head);
    m.encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding the response: {e}")))?;
    Ok(buf.freeze())
}

/// A successful gRPC response carrying one message (prefix included).
fn answer(message: Bytes) -> http::Response<Body> {
    let frames = [Frame::data(message), Frame::trailers(ok_trailers())].map(Ok::<_, Infallible>);
    grpc_response(Body::new(StreamBody::new(stream::iter(frames))))
}

/// The trailers of a call that succeeded.
pub(super) fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// A gRPC response whose messages and trailers are `body`.
pub(super) fn grpc_response(body: Body) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}
