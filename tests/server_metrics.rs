//! Prometheus metrics: scrape `/metrics` over HTTP after real calls and check
//! the counts, codes, sizes and in-flight gauge.

mod harness;

use harness::wire::{tensor, Kind};
use harness::TestServer;
use softmaxd::proto::v1::{ForwardRequest, JacobianRequest};
use softmaxd::server::metrics;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts the metrics endpoint on an ephemeral loopback port.
async fn metrics_endpoint() -> SocketAddr {
    let handle = metrics::install().expect("install the recorder");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(metrics::serve(listener, handle));
    addr
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

/// The value of the one sample of `name` whose labels include all of `labels`
/// (0 when there is none yet).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {matching:?}"
    );
    matching.first().copied().unwrap_or(0.0)
}

fn forward(values: &[f64]) -> ForwardRequest {
    ForwardRequest {
        logits: Some(tensor(&[2, values.len() as u32 / 2], values, Kind::F32Raw)),
        temperature: None,
        log: false,
    }
}

const FORWARD: (&str, &str) = ("grpc_method", "Forward");

#[tokio::test]
async fn scrape_counts_calls_by_method_and_code() {
    let metrics_addr = metrics_endpoint().await;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let before = scrape(metrics_addr).await;

    let good: Vec<f64> = (0..2000).map(|i| f64::from(i % 17) * 0.25).collect();
    for _ in 0..3 {
        client.forward(forward(&good)).await.expect("valid Forward");
    }
    let mut bad = good.clone();
    bad[5] = f64::NAN;
    for _ in 0..2 {
        let status = client
            .forward(forward(&bad))
            .await
            .expect_err("NaN is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    client
        .jacobian(JacobianRequest {
            logits: Some(tensor(&[1, 8], &[0.5; 8], Kind::F64Typed)),
            output: None,
            temperature: None,
            log: false,
        })
        .await
        .expect("Jacobian");

    let after = scrape(metrics_addr).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(delta(metrics::STARTED, &[FORWARD]), 5.0);
    assert_eq!(
        delta(metrics::HANDLED, &[FORWARD, ("grpc_code", "OK")]),
        3.0
    );
    assert_eq!(
        delta(
            metrics::HANDLED,
            &[FORWARD, ("grpc_code", "INVALID_ARGUMENT")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            metrics::HANDLED,
            &[
                ("grpc_method", "Jacobian"),
                ("grpc_code", "OK"),
                ("grpc_type", "unary")
            ]
        ),
        1.0
    );
    let latency_count = format!("{}_count", metrics::LATENCY);
    assert_eq!(delta(&latency_count, &[FORWARD]), 5.0);
    // Latencies fall in the 10 µs – 10 s buckets: the +Inf bucket holds no more than the 10 s one.
    let le = |b: &str| {
        delta(
            &format!("{}_bucket", metrics::LATENCY),
            &[FORWARD, ("le", b)],
        )
    };
    assert_eq!(le("10"), 5.0);
    assert_eq!(le("+Inf"), 5.0);
    // Each request carries 2000 f32 values (8000 bytes) plus framing; each
    // good response as much again.
    let request_bytes = delta(&format!("{}_sum", metrics::REQUEST_BYTES), &[FORWARD]);
    assert!(
        (5.0 * 8000.0..5.0 * 8200.0).contains(&request_bytes),
        "{request_bytes}"
    );
    let response_bytes = delta(&format!("{}_sum", metrics::RESPONSE_BYTES), &[FORWARD]);
    assert!(
        (3.0 * 8000.0..3.0 * 8200.0).contains(&response_bytes),
        "{response_bytes}"
    );
    let elements = delta(&format!("{}_sum", metrics::ELEMENTS), &[FORWARD]);
    assert!(elements >= 3.0 * 2000.0, "{elements}");
    assert_eq!(sample(&after, metrics::IN_FLIGHT, &[FORWARD]), 0.0);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn in_flight_gauge_follows_an_open_stream() {
    let metrics_addr = metrics_endpoint().await;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let stream_labels = [("grpc_method", "ForwardStream")];
    let idle = sample(
        &scrape(metrics_addr).await,
        metrics::IN_FLIGHT,
        &stream_labels,
    );

    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(forward(&[1.0, 2.0, 3.0, 4.0]))
        .await
        .expect("queue");
    let mut replies = client
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open stream")
        .into_inner();
    replies.message().await.expect("reply").expect("one reply");
    let open = sample(
        &scrape(metrics_addr).await,
        metrics::IN_FLIGHT,
        &stream_labels,
    );
    assert_eq!(open - idle, 1.0);

    drop(tx);
    assert!(replies.message().await.expect("clean end").is_none());
    let closed = sample(
        &scrape(metrics_addr).await,
        metrics::IN_FLIGHT,
        &stream_labels,
    );
    assert_eq!(closed, idle);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unknown_paths_share_one_label_set() {
    let metrics_addr = metrics_endpoint().await;
    let server = TestServer::start().await;
    let before = scrape(metrics_addr).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    let codec = tonic_prost::ProstCodec::<ForwardRequest, ForwardRequest>::default();
    for path in ["/softmax.v1.SoftmaxService/Nope", "/made.up.Service/Call"] {
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary(
                tonic::Request::new(forward(&[1.0, 2.0])),
                http::uri::PathAndQuery::from_static(path),
                codec.clone(),
            )
            .await
            .expect_err("no such method");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    let after = scrape(metrics_addr).await;
    let unknown = [
        ("grpc_service", "unknown"),
        ("grpc_method", "unknown"),
        ("grpc_code", "UNIMPLEMENTED"),
    ];
    assert_eq!(
        sample(&after, metrics::HANDLED, &unknown) - sample(&before, metrics::HANDLED, &unknown),
        2.0
    );
    assert!(!after.contains("Nope") && !after.contains("made.up"));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn only_the_metrics_path_is_served() {
    let metrics_addr = metrics_endpoint().await;
    assert_eq!(get(metrics_addr, "/").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        get(metrics_addr, "/metrics/x").await.0,
        "HTTP/1.1 404 Not Found"
    );
    let text = scrape(metrics_addr).await;
    // Process metrics come from /proc at scrape time.
    assert!(sample(&text, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sample(&text, "process_threads", &[]) >= 1.0);
}
