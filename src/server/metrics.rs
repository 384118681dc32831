//! Prometheus metrics: a tower layer that records every gRPC call (counts by
//! method and status code, latency, wire bytes, in-flight calls) and a small
//! HTTP server for `/metrics`.

use clap::Args;
use http::{Request, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::Code;
use tower::{Layer, Service};

/// Calls received, by method.
pub const STARTED: &str = "grpc_server_started_total";
/// Calls completed, by method and status code.
pub const HANDLED: &str = "grpc_server_handled_total";
/// Time from the request's headers to the response's end, in seconds.
pub const LATENCY: &str = "grpc_server_handling_seconds";
/// Request body bytes on the wire (gRPC framing included, after compression).
pub const REQUEST_BYTES: &str = "grpc_server_request_bytes";
/// Response body bytes on the wire.
pub const RESPONSE_BYTES: &str = "grpc_server_response_bytes";
/// Calls started and not yet completed.
pub const IN_FLIGHT: &str = "grpc_server_in_flight";
/// Tensor elements per request (recorded by the service layer).
pub const ELEMENTS: &str = "softmaxd_request_elements";

/// 10 µs to 10 s: an inline Forward of a few values takes tens of µs, a
/// 64 MiB Jacobian stream seconds.
const LATENCY_BUCKETS: [f64; 19] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Powers of 4 from 64 B to 256 MiB.
const BYTES_BUCKETS: [f64; 12] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
];
/// Powers of 10 from 1 to 10⁹.
const ELEMENT_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The methods served, with their gRPC call type. Labels come only from this
/// table, so no client can grow the label set with made-up paths.
const METHODS: [(&str, &str, &str); 10] = [
    ("softmax.v1.SoftmaxService", "Forward", "unary"),
    ("softmax.v1.SoftmaxService", "Backward", "unary"),
    ("softmax.v1.SoftmaxService", "Jacobian", "unary"),
    (
        "softmax.v1.SoftmaxService",
        "JacobianStream",
        "server_stream",
    ),
    ("softmax.v1.SoftmaxService", "ForwardStream", "bidi_stream"),
    ("softmax.v1.SoftmaxService", "CrossEntropy", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
];

/// Metrics flags.
#[derive(Clone, Debug, Args)]
pub struct MetricsArgs {
    /// Address of the Prometheus `/metrics` endpoint; "" disables it.
    #[arg(long, env = "SOFTMAXD_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: MetricsListen,
}

/// Where `/metrics` is served, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            Ok(Self(None))
        } else {
            s.trim().parse().map(|a| Self(Some(a)))
        }
    }
}

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle, so tests in one process share it).
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &BYTES_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(ELEMENTS.into()), &ELEMENT_BUCKETS)
                })
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(STARTED, "gRPC calls started, by method.");
    describe_counter!(HANDLED, "gRPC calls completed, by method and status code.");
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "Call latency, headers in to response end."
    );
    describe_histogram!(
        REQUEST_BYTES,
        Unit::Bytes,
        "Request body bytes per call on the wire."
    );
    describe_histogram!(
        RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes per call on the wire."
    );
    describe_gauge!(IN_FLIGHT, "gRPC calls in progress.");
    describe_histogram!(ELEMENTS, "Tensor elements per request.");
}

/// When `args` names an address: installs the recorder, binds it and serves
/// `/metrics` there in the background. Returns the bound address.
pub async fn start(args: &MetricsArgs) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = args.metrics_listen.0 else {
        return Ok(None);
    };
    let handle = install()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(serve(listener, handle));
    Ok(Some(bound))
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until the
/// task is dropped; other paths get 404. Also runs the recorder's periodic
/// upkeep, which keeps histogram memory bounded.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    // CPU time, memory, threads and file descriptors of this process, read
    // from /proc at each scrape.
    let process = Arc::new(metrics_process::Collector::default());
    process.describe();
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handle = handle.clone();
                let process = Arc::clone(&process);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        std::future::ready(Ok::<_, Infallible>(scrape(&handle, &process, &req)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = upkeep.tick() => handle.run_upkeep(),
        }
    }
}

fn scrape<B>(
    handle: &PrometheusHandle,
    process: &metrics_process::Collector,
    req: &Request<B>,
) -> Response<String> {
    let mut response = Response::new(String::new());
    if req.uri().path() != "/metrics" {
        *response.status_mut() = http::StatusCode::NOT_FOUND;
    } else if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    } else {
        process.collect();
        *response.body_mut() = handle.render();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    }
    response
}

/// Records every call that passes through it; add it to the tonic server
/// builder outside any layer that can refuse calls, so refusals count too.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service of [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for GrpcMetrics<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let call = Arc::new(CallRecord::start(req.uri().path()));
        let counted = Arc::clone(&call);
        let req = req.map(|body| {
            Body::new(RequestBody {
                inner: body,
                call: counted,
            })
        });
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            // A trailers-only response (most errors) carries its status here.
            if let Some(code) = header_code(response.headers()) {
                call.set_code(code);
            }
            Ok(response.map(|body| Body::new(ResponseBody { inner: body, call })))
        })
    }
}

/// The labels of one method.
#[derive(Clone, Copy, Debug)]
struct Method {
    service: &'static str,
    method: &'static str,
    kind: &'static str,
}

impl Method {
    fn of(path: &str) -> Self {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        METHODS
            .iter()
            .find(|(s, m, _)| *s == service && *m == method)
            .map_or(
                Self {
                    service: "unknown",
                    method: "unknown",
                    kind: "unknown",
                },
                |&(service, method, kind)| Self {
                    service,
                    method,
                    kind,
                },
            )
    }
}

/// One call: started when its headers arrive, finished once, when its
/// response ends or is dropped.
#[derive(Debug)]
struct CallRecord {
    method: Method,
    start: Instant,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    /// `Code as i32 + 1`; 0 while unknown.
    code: AtomicU64,
    finished: AtomicBool,
}

impl CallRecord {
    fn start(path: &str) -> Self {
        let m = Method::of(path);
        counter!(STARTED, "grpc_service" => m.service, "grpc_method" => m.method, "grpc_type" => m.kind)
            .increment(1);
        gauge!(IN_FLIGHT, "grpc_service" => m.service, "grpc_method" => m.method).increment(1.0);
        Self {
            method: m,
            start: Instant::now(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            code: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn set_code(&self, code: Code) {
        self.code.store(code as u64 + 1, Ordering::Relaxed);
    }

    /// Records the outcome; a response that ends without a status (the
    /// client reset the stream) counts as CANCELLED.
    fn finish(&self) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let code = match self.code.load(Ordering::Relaxed) {
            0 => Code::Cancelled,
            c => Code::from_i32(c as i32 - 1),
        };
        let m = self.method;
        counter!(HANDLED, "grpc_service" => m.service, "grpc_method" => m.method,
            "grpc_type" => m.kind, "grpc_code" => code_name(code))
        .increment(1);
        histogram!(LATENCY, "grpc_service" => m.service, "grpc_method" => m.method)
            .record(self.start.elapsed().as_secs_f64());
        histogram!(REQUEST_BYTES, "grpc_service" => m.service, "grpc_method" => m.method)
            .record(self.request_bytes.load(Ordering::Relaxed) as f64);
        histogram!(RESPONSE_BYTES, "grpc_service" => m.service, "grpc_method" => m.method)
            .record(self.response_bytes.load(Ordering::Relaxed) as f64);
        gauge!(IN_FLIGHT, "grpc_service" => m.service, "grpc_method" => m.method).decrement(1.0);
    }
}

fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.trim().parse::<i32>().ok().map(Code::from_i32)
}

/// The status code names of the gRPC specification, as Prometheus labels.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Counts the bytes of a request body.
struct RequestBody {
    inner: Body,
    call: Arc<CallRecord>,
}

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.call
                    .request_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the bytes of a response body, reads its status from the trailers
/// and finishes the call when the body ends or is dropped.
struct ResponseBody {
    inner: Body,
    call: Arc<CallRecord>,
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.call
                        .response_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                } else if let Some(trailers) = frame.trailers_ref() {
                    // Trailers end a gRPC response: finish before the client
                    // can see them, so a scrape after the call sees it done.
                    if let Some(code) = header_code(trailers) {
                        self.call.set_code(code);
                    }
                    self.call.finish();
                }
            }
            Poll::Ready(Some(Err(status))) => {
                self.call.set_code(status.code());
                self.call.finish();
            }
            Poll::Ready(None) => self.call.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.call.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_only_from_the_method_table() {
        let m = Method::of("/softmax.v1.SoftmaxService/ForwardStream");
        assert_eq!(
            (m.service, m.method, m.kind),
            ("softmax.v1.SoftmaxService", "ForwardStream", "bidi_stream")
        );
        for path in [
            "/softmax.v1.SoftmaxService/Nope",
            "/x/Forward",
            "/",
            "",
            "/a/b/c",
        ] {
            assert_eq!(Method::of(path).service, "unknown", "{path}");
        }
    }

    #[test]
    fn the_method_table_covers_the_contract() {
        let proto = include_str!("../../proto/softmax/v1/softmax.proto");
        let declared: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        assert_eq!(declared.len(), 6);
        for name in declared {
            let m = Method::of(&format!("/softmax.v1.SoftmaxService/{name}"));
            assert_eq!(m.method, name);
        }
    }

    #[test]
    fn metrics_listen_parses_or_disables() {
        assert_eq!("".parse::<MetricsListen>().ok(), Some(MetricsListen(None)));
        assert_eq!(
            "127.0.0.1:9090".parse::<MetricsListen>().ok(),
            Some(MetricsListen(Some(SocketAddr::from((
                [127, 0, 0, 1],
                9090
            )))))
        );
        assert!("localhost".parse::<MetricsListen>().is_err());
    }
}
