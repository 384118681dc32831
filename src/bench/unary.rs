//! A unary call made on the HTTP/2 channel itself rather than through
//! tonic's codec: the request leaves as the one `Bytes` it was encoded in,
//! and the answer's DATA frames are counted where h2 read them (joined
//! only when the answer is kept for checking).
//!
//! Through `tonic::client::Grpc::unary` every call copied the whole request
//! into an encode buffer and the whole answer into a decode buffer: 40% of
//! the tool's CPU time on Forward [256,4096] f32, where the tool, not the
//! server, was the bound on calls/s.

use super::codec::{Prefixed, Reply};
use crate::service::{declared, PREFIX};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt;

/// Calls `path` with `request` on `channel`; keeps the answer's message
/// when `keep`.
pub async fn call(
    channel: &Channel,
    path: PathAndQuery,
    request: &Prefixed,
    keep: bool,
) -> Result<Reply, Status> {
    let mut req = http::Request::new(Body::new(Full::new(request.wire())));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_2;
    let headers = req.headers_mut();
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));

    let response = channel
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let (head, mut body) = response.into_parts();
    // A trailers-only answer: the status came with the headers.
    if let Some(status) = Status::from_header_map(&head.headers) {
        return Err(not_ok(status).unwrap_or_else(|| Status::internal("Missing response message.")));
    }

    let mut answer = Answer::new(keep);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => answer.push(data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    if let Some(status) = trailers.as_ref().and_then(Status::from_header_map) {
        if let Some(err) = not_ok(status) {
            return Err(err);
        }
    } else {
        return Err(without_status(head.status, trailers.as_ref()));
    }
    answer.finish()
}

/// `status` unless it is OK.
fn not_ok(status: Status) -> Option<Status> {
    (status.code() != Code::Ok).then_some(status)
}

/// The error for an answer that ended without a grpc-status, after gRPC's
/// mapping of HTTP status codes.
fn without_status(http: StatusCode, trailers: Option<&HeaderMap>) -> Status {
    let code = match http {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    let what = if trailers.is_some() {
        "trailers without grpc-status"
    } else {
        "no trailers"
    };
    Status::new(code, format!("HTTP {http}, {what}"))
}

/// The answer's DATA as it arrives: its length, its prefix, and its frames
/// when kept.
struct Answer {
    len: usize,
    head: [u8; PREFIX],
    kept: Option<Vec<Bytes>>,
}

impl Answer {
    fn new(keep: bool) -> Self {
        Self {
            len: 0,
            head: [0; PREFIX],
            kept: keep.then(Vec::new),
        }
    }

    fn push(&mut self, data: Bytes) {
        let have = self.len.min(PREFIX);
        let take = data.len().min(PREFIX - have);
        if let (Some(dst), Some(src)) = (self.head.get_mut(have..have + take), data.get(..take)) {
            dst.copy_from_slice(src);
        }
        self.len += data.len();
        if let Some(kept) = &mut self.kept {
            kept.push(data);
        }
    }

    /// The one uncompressed message the DATA must hold.
    fn finish(self) -> Result<Reply, Status> {
        if self.len < PREFIX {
            return Err(Status::internal("Missing response message."));
        }
        let (compressed, declared) = declared(self.head);
        let len = self.len - PREFIX;
        if compressed {
            return Err(Status::internal(
                "a compressed answer, which was not asked for",
            ));
        }
        if declared != len {
            return Err(Status::internal(format!(
                "the answer holds {len} bytes after its prefix, which declares {declared}"
            )));
        }
        let body = self.kept.map(|frames| {
            let mut all = BytesMut::with_capacity(self.len);
            for f in frames {
                all.extend_from_slice(&f);
            }
            let mut all = all.freeze();
            all.advance(PREFIX);
            all
        });
        Ok(Reply { len, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(frames: &[&[u8]], keep: bool) -> Result<Reply, Status> {
        let mut a = Answer::new(keep);
        for f in frames {
            a.push(Bytes::copy_from_slice(f));
        }
        a.finish()
    }

    #[test]
    fn a_prefix_split_over_frames_is_read_whole() {
        let r = answer(&[&[0, 0], &[0, 0, 3, 7], &[8, 9]], true).unwrap();
        assert_eq!(r.len, 3);
        assert_eq!(r.body.as_deref(), Some(&[7u8, 8, 9][..]));
        let r = answer(&[&[0, 0, 0, 0, 3, 7, 8, 9]], false).unwrap();
        assert_eq!((r.len, r.body), (3, None));
    }

    #[test]
    fn a_length_other_than_declared_is_refused() {
        let e = answer(&[&[0, 0, 0, 0, 4, 7, 8, 9]], false).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.message().contains("declares 4"), "{}", e.message());
        let e = answer(&[&[0, 0, 0]], false).unwrap_err();
        assert_eq!(e.message(), "Missing response message.");
        let e = answer(&[&[1, 0, 0, 0, 0]], false).unwrap_err();
        assert!(e.message().contains("compressed"), "{}", e.message());
    }

    #[test]
    fn http_codes_map_as_grpc_says() {
        assert_eq!(
            without_status(StatusCode::SERVICE_UNAVAILABLE, None).code(),
            Code::Unavailable
        );
        assert_eq!(
            without_status(StatusCode::OK, Some(&HeaderMap::new())).code(),
            Code::Unknown
        );
    }
}
