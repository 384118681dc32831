//! Per-call telemetry: a tracing span with method, dtype, shape, element
//! count, status code and latency, and one event when the call completes.

use super::tensor::{Decoded, Input, Wire};
use super::Error;
use std::time::Instant;
use tonic::{Response, Status};
use tracing::{field::Empty, Span};

/// One RPC being served.
pub(super) struct Call {
    span: Span,
    start: Instant,
    method: &'static str,
}

impl Call {
    /// Opens the span of a call to `method`. It is a debug span: an
    /// enabled span formats every recorded field, which cost small calls
    /// several percent of their throughput; failures are logged at info
    /// with their method and code either way.
    pub fn start(method: &'static str) -> Self {
        let span = tracing::debug_span!(
            "call",
            method,
            dtype = Empty,
            shape = Empty,
            elements = Empty,
            code = Empty,
            latency_us = Empty,
        );
        Self {
            span,
            start: Instant::now(),
            method,
        }
    }

    /// The call's span, to instrument its work with.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Records what the primary tensor is.
    pub fn tensor(&self, x: &Decoded) {
        match x {
            Decoded::F32(x) => self.record(x),
            Decoded::F64(x) => self.record(x),
        }
    }

    fn record<F: Wire>(&self, x: &Input<F>) {
        self.span.record("dtype", F::DTYPE.name());
        self.span.record("shape", tracing::field::debug(&x.dims));
        self.span.record("elements", x.len() as u64);
        // A no-op unless the server installed a metrics recorder.
        metrics::histogram!("softmaxd_request_elements", "grpc_method" => self.method)
            .record(x.len() as f64);
    }

    /// Closes the call: records its status and latency and logs one event.
    pub fn finish<T>(self, result: Result<T, Error>) -> Result<Response<T>, Status> {
        let latency_us = self.start.elapsed().as_micros() as u64;
        let result = result.map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.span.record("code", tracing::field::debug(code));
        self.span.record("latency_us", latency_us);
        let _enter = self.span.enter();
        match &result {
            Ok(_) => tracing::debug!("call completed"),
            Err(s) if s.code() == tonic::Code::Internal => {
                tracing::error!(
                    method = self.method,
                    ?code,
                    message = s.message(),
                    "call failed"
                )
            }
            Err(s) => {
                tracing::info!(
                    method = self.method,
                    ?code,
                    message = s.message(),
                    "call failed"
                )
            }
        }
        result.map(Response::new)
    }
}
