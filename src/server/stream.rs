//! ForwardStream and JacobianStream answered directly: request messages
//! read out of their DATA frames as a unary request is
//! (`request::Messages`), each answer sent as the service encoded it, and
//! the call's status in the trailers.
//!
//! Through tonic, every message of a stream is copied into a growing decode
//! buffer and every answer once more into an encode buffer; at [256,4096]
//! f32 raw that made a ForwardStream message cost the server about a
//! quarter more than the same unary call.

use super::direct::{encoded, grpc_response, ok_trailers, Answers, Unary};
use super::request;
use super::request::Messages;
use crate::proto::v1::{ForwardRequest, JacobianRequest, JacobianResponse};
use crate::service::Reply;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::StreamBody;
use std::convert::Infallible;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::Status;

/// Answers a ForwardStream call admitted as `answers` (or refused): one
/// answer per request message, in order, each of at most `max` bytes, read
/// and written as they come; the first error ends the stream with its
/// status.
pub async fn forward<A: Answers>(
    req: http::Request<Body>,
    max: usize,
    answers: Result<A, Status>,
) -> Result<http::Response<Body>, Infallible> {
    let answers = match answers {
        Ok(answers) => answers,
        Err(status) => return Ok(status.into_http()),
    };
    let mut messages = Messages::<ForwardRequest>::new(req.into_body(), max);
    // Two answers ahead at most: a client that stops reading stops the
    // reading of its requests too.
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let answer = match messages.next().await {
                Ok(Some(m)) => answers.answer(m).await,
                // Closing the channel ends the answers with OK.
                Ok(None) => return,
                Err(status) => Err(status),
            };
            let failed = answer.is_err();
            // Fails only when the client is gone.
            if tx.send(answer).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(grpc_response(body(ReceiverStream::new(rx), max)))
}

/// Answers a JacobianStream call: its one request read as a unary one,
/// then the service's messages as they are computed (the producer waits
/// for the client), and the status of the first error or OK.
pub async fn jacobian<S: Unary>(
    req: http::Request<Body>,
    max: usize,
    service: S,
) -> Result<http::Response<Body>, Infallible> {
    let answers = match request::message::<JacobianRequest, JacobianResponse>(req.into_body(), max)
        .await
        .and_then(|m| service.jacobian_answers(m))
    {
        Ok(answers) => answers,
        Err(status) => return Ok(status.into_http()),
    };
    Ok(grpc_response(body(answers, max)))
}

/// The body of a streaming answer: each message, encoded here unless it
/// already is, then the trailers: OK once `answers` ends, or the status of
/// its first error, after which nothing more is read from it.
fn body<M: prost::Message + 'static>(
    answers: impl Stream<Item = Result<Reply<M>, Status>> + Send + 'static,
    max: usize,
) -> Body {
    let frames = futures::stream::unfold(Some(Box::pin(answers)), move |answers| async move {
        let mut answers = answers?;
        let trailers = match answers.next().await {
            Some(Ok(reply)) => match encoded(reply, max) {
                Ok(message) => return Some((Frame::data(message), Some(answers))),
                Err(status) => trailers(Some(status)),
            },
            Some(Err(status)) => trailers(Some(status)),
            None => trailers(None),
        };
        Some((Frame::trailers(trailers), None))
    });
    Body::new(StreamBody::new(frames.map(Ok::<_, Infallible>)))
}

/// The trailers that end the stream: OK, or the status of its first error.
fn trailers(status: Option<Status>) -> HeaderMap {
    let Some(status) = status else {
        return ok_trailers();
    };
    let mut trailers = HeaderMap::new();
    if let Err(unencodable) = status.add_header(&mut trailers) {
        // Only a message that cannot be a header value gets here.
        trailers.clear();
        let _ = Status::new(unencodable.code(), "").add_header(&mut trailers);
    }
    trailers
}
