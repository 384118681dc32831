//! Abusive transport: a message declaring a huge length, a flood of tiny
//! calls on one connection, idle connections, half-sent streams, and
//! clients that never read their responses. The server keeps answering a
//! well-behaved client and its memory stays flat.

mod harness;

use bytes::Bytes;
use harness::reference::values;
use harness::wire::{tensor, Kind};
use harness::{raw_call, TestServer, FORWARD};
use softmaxd::proto::v1::{ForwardRequest, JacobianRequest};
use std::time::Duration;
use tonic::Code;

fn small() -> ForwardRequest {
    ForwardRequest {
        logits: Some(tensor(&[2], &[0.0, 1.0], Kind::F32Typed)),
        temperature: None,
        log: false,
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn a_message_declaring_a_huge_length_is_refused_without_reading_it() {
    let server = TestServer::start().await;
    // gRPC frame header: uncompressed, length 0xFFFF_FFF0 (~4 GiB), then 8 bytes.
    let mut frame = vec![0u8, 0xFF, 0xFF, 0xFF, 0xF0];
    frame.extend_from_slice(&[0u8; 8]);
    let before = rss();
    let (_c, resp, _send) = raw_call(server.addr, FORWARD, Bytes::from(frame), false).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), resp.unwrap())
        .await
        .unwrap()
        .unwrap();
    let status = match grpc_status(resp.headers()) {
        Some(s) => s,
        None => {
            let mut body = resp.into_body();
            let trailers = body.trailers().await.unwrap().unwrap_or_default();
            grpc_status(&trailers).unwrap_or_default()
        }
    };
    assert_eq!(status, (Code::ResourceExhausted as i32).to_string());
    assert!(
        rss() < before + (64 << 20),
        "the declared size must not be allocated"
    );
    server.client().await.forward(small()).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_tiny_calls_on_one_connection_is_served() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = std::collections::HashMap::new();
            for _ in 0..100 {
                let code = match c.forward(small()).await {
                    Ok(_) => Code::Ok,
                    Err(s) => s.code(),
                };
                *codes.entry(code).or_insert(0) += 1;
            }
            codes
        }));
    }
    let mut ok = 0;
    for t in tasks {
        for (code, n) in t.await.unwrap() {
            assert!(
                matches!(code, Code::Ok | Code::ResourceExhausted),
                "{code:?}"
            );
            if code == Code::Ok {
                ok += n;
            }
        }
    }
    assert_eq!(
        ok, 3200,
        "32 concurrent callers stay under the default limits"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_and_half_open_connections_do_not_block_others() {
    let server = TestServer::start().await;
    // 200 TCP connections that never speak, 20 HTTP/2 connections with a
    // call whose message is cut off half-way, and one ForwardStream left open.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let mut half = Vec::new();
    for _ in 0..20 {
        // Declares 100 bytes, sends 10, never ends the stream.
        let mut frame = vec![0u8, 0, 0, 0, 100];
        frame.extend_from_slice(&[0x0a; 10]);
        half.push(raw_call(server.addr, FORWARD, Bytes::from(frame), false).await);
    }
    let mut open = server.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(small()).await.unwrap();
    let mut stream = open
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    // A well-behaved client is served promptly all the while.
    let mut client = server.client().await;
    for _ in 0..50 {
        tokio::time::timeout(Duration::from_secs(5), client.forward(small()))
            .await
            .unwrap()
            .unwrap();
    }
    drop((idle, half, tx, stream));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_keeps_server_memory_flat() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // 8192 Jacobians of k = 512 in f32: 8 GiB if it were all produced.
    let x = values(8192 * 512, 7, -1.0, 1.0);
    let req = JacobianRequest {
        logits: Some(tensor(&[8192, 512], &x, Kind::F32Raw)),
        output: None,
        temperature: None,
        log: false,
    };
    let before = rss();
    let stream = client.jacobian_stream(req).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "stream not read, yet memory grew by {} MiB",
        grown >> 20
    );

    // ForwardStream: send many 1 MiB requests without reading answers; the
    // sender must be held back by flow control, not buffered without bound.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _responses = client
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let x = values(256 * 1024, 8, -1.0, 1.0);
    let big = ForwardRequest {
        logits: Some(tensor(&[256, 1024], &x, Kind::F32Raw)),
        temperature: None,
        log: false,
    };
    let mut sent = 0;
    for _ in 0..512 {
        match tokio::time::timeout(Duration::from_millis(300), tx.send(big.clone())).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(
        sent < 512,
        "512 MiB were accepted without a single response read"
    );
    let grown = rss().saturating_sub(before);
    assert!(grown < 512 << 20, "memory grew by {} MiB", grown >> 20);
    drop((stream, tx));
    server.client().await.forward(small()).await.unwrap();
    server.stop().await.unwrap();
}
