//! Reports an over-limit request as RESOURCE_EXHAUSTED (DESIGN.md §6):
//! tonic rejects it, before buffering it, with OUT_OF_RANGE, so the status
//! it puts in the response headers is rewritten here.

use http::{HeaderValue, Response};

/// The gRPC code tonic uses for a message over the decoding limit.
const OUT_OF_RANGE: &[u8] = b"11";
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");

/// Rewrites a headers-only OUT_OF_RANGE "message length too large" status.
pub fn over_limit_status<B>(mut resp: Response<B>) -> Response<B> {
    let headers = resp.headers_mut();
    let too_large = headers.get("grpc-status").map(HeaderValue::as_bytes) == Some(OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if too_large {
        headers.insert("grpc-status", RESOURCE_EXHAUSTED);
        if let Some(msg) = headers.get("grpc-message").and_then(|m| m.to_str().ok()) {
            let hint = format!(
                "{msg}; send fewer vectors per call (for Jacobians use JacobianStream) or raise --max-message-bytes"
            )
            .replace(' ', "%20");
            if let Ok(v) = HeaderValue::from_str(&hint) {
                headers.insert("grpc-message", v);
            }
        }
    }
    resp
}
