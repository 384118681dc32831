//! Overload: the concurrency limit and the in-flight byte budget fail fast
//! with RESOURCE_EXHAUSTED and recover at once; a client deadline ends the
//! call with DEADLINE_EXCEEDED or CANCELLED.

mod harness;

use harness::reference::values;
use harness::wire::{tensor, Kind};
use harness::TestServer;
use softmaxd::proto::v1::{ForwardRequest, JacobianRequest};
use std::time::{Duration, Instant};
use tonic::Code;

fn small() -> ForwardRequest {
    ForwardRequest {
        logits: Some(tensor(&[2], &[0.0, 1.0], Kind::F32Typed)),
        temperature: None,
        log: false,
    }
}

#[tokio::test]
async fn concurrency_limit_fails_fast_and_recovers() {
    let mut config = softmaxd::server::Config::for_tests();
    config.max_concurrent_requests = 2;
    config.stream_chunk_bytes = 64 * 64 * 4;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    // Two long JacobianStreams that nobody reads hold both slots.
    let x = values(4096 * 64, 1, -1.0, 1.0);
    let req = JacobianRequest {
        logits: Some(tensor(&[4096, 64], &x, Kind::F32Raw)),
        output: None,
        temperature: None,
        log: false,
    };
    let a = client
        .jacobian_stream(req.clone())
        .await
        .unwrap()
        .into_inner();
    let b = client.jacobian_stream(req).await.unwrap().into_inner();
    let err = client.forward(small()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("--max-concurrent-requests"),
        "{}",
        err.message()
    );
    drop((a, b));
    // Recovery is immediate once the streams are gone (allow for the RST to land).
    let start = Instant::now();
    loop {
        match client.forward(small()).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not recover");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn byte_budget_refuses_calls_that_do_not_fit() {
    let mut config = softmaxd::server::Config::for_tests();
    config.max_inflight_bytes = 1 << 20;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    // 256 Ki f32 in and out: 2 MiB, over a 1 MiB budget.
    let x = values(256 << 10, 2, -1.0, 1.0);
    let big = ForwardRequest {
        logits: Some(tensor(&[256, 1024], &x, Kind::F32Raw)),
        temperature: None,
        log: false,
    };
    let err = client.forward(big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("--max-inflight-bytes"),
        "{}",
        err.message()
    );
    // Within budget it serves, so nothing leaked from the refused call.
    for _ in 0..3 {
        client.forward(small()).await.unwrap();
    }
    let x = values(32 << 10, 2, -1.0, 1.0);
    let fits = ForwardRequest {
        logits: Some(tensor(&[32, 1024], &x, Kind::F32Raw)),
        temperature: None,
        log: false,
    };
    client.forward(fits).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn client_deadline_ends_the_call_and_the_server_keeps_serving() {
    let mut config = softmaxd::server::Config::for_tests();
    config.parallel_threshold = 1;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    // A large Jacobian with a deadline far too short for it.
    let x = values(2048 * 64, 3, -1.0, 1.0);
    let mut req = tonic::Request::new(JacobianRequest {
        logits: Some(tensor(&[2048, 64], &x, Kind::F64Raw)),
        output: None,
        temperature: None,
        log: false,
    });
    req.set_timeout(Duration::from_millis(1));
    let err = client.jacobian(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    client.forward(small()).await.unwrap();
    server.stop().await.unwrap();
}
