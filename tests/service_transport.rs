//! Transport concerns: gzip and zstd requests and responses, and a 32 MiB
//! request through the default limits.

mod harness;

use harness::reference::{per_row, softmax, values};
use harness::wire::{expect, tensor, Kind};
use harness::TestServer;
use softmaxd::proto::v1::ForwardRequest;
use softmaxd::server::Config;
use tonic::codec::CompressionEncoding;

#[tokio::test]
async fn compressed_requests_and_responses() {
    let server = TestServer::start_with(Config {
        compress_responses: true,
        ..Config::for_tests()
    })
    .await;
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = server
            .client()
            .await
            .send_compressed(enc)
            .accept_compressed(enc);
        let x = Kind::F64Raw.round(&values(4 * 100, 3, -3.0, 3.0));
        let resp = client
            .forward(ForwardRequest {
                logits: Some(tensor(&[4, 100], &x, Kind::F64Raw)),
                temperature: None,
                log: false,
            })
            .await
            .unwrap();
        let enc_header = resp
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            enc_header.as_deref(),
            Some(if enc == CompressionEncoding::Gzip {
                "gzip"
            } else {
                "zstd"
            })
        );
        let got = expect(resp.into_inner().output, &[4, 100], Kind::F64Raw);
        let want = per_row(&x, 100, |r| softmax(r, 1.0));
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn responses_are_uncompressed_unless_the_server_is_told_to() {
    let server = TestServer::start().await;
    let mut client = server
        .client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let x = Kind::F32Raw.round(&values(2 * 50, 5, -3.0, 3.0));
    let resp = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[2, 50], &x, Kind::F32Raw)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("grpc-encoding"), None);
    let got = expect(resp.into_inner().output, &[2, 50], Kind::F32Raw);
    let want = per_row(&x, 50, |r| softmax(r, 1.0));
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 2e-6));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_32_mib_request_is_served() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (rows, k) = (2048usize, 4096usize); // 8 Mi f32 values = 32 MiB
    let x = Kind::F32Raw.round(&values(rows * k, 17, -10.0, 10.0));
    let resp = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[rows as u32, k as u32], &x, Kind::F32Raw)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap()
        .into_inner();
    let got = expect(resp.output, &[rows as u32, k as u32], Kind::F32Raw);
    // Spot-check a few rows against the reference and every row's sum.
    for r in [0, 1, rows / 2, rows - 1] {
        let want = per_row(&x[r * k..(r + 1) * k], k, |v| softmax(v, 1.0));
        let row = &got[r * k..(r + 1) * k];
        assert!(
            row.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 2e-6),
            "row {r}"
        );
    }
    for row in got.chunks(k) {
        let s: f64 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "row sums to {s}");
    }
    server.stop().await.unwrap();
}
