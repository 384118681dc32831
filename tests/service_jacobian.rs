//! Jacobian and JacobianStream over the wire: values against the reference,
//! columns summing to zero, chunking, and the unary size limit.

mod harness;

use harness::reference::{jacobian, max_abs_diff, per_row, softmax, values};
use harness::wire::{expect, tensor, Kind, ALL_KINDS};
use harness::TestServer;
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::{ForwardRequest, JacobianRequest};
use tonic::transport::Channel;
use tonic::Code;

#[tokio::test]
async fn jacobian_matches_reference_and_columns_sum_to_zero() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shapes: [&[u32]; 3] = [&[4], &[3, 5], &[2, 2, 3]];
    for kind in ALL_KINDS {
        for shape in shapes {
            for (temperature, log) in [(None, false), (Some(0.5f32), false), (Some(2.0), true)] {
                let n: u32 = shape.iter().product();
                let k = *shape.last().unwrap() as usize;
                let t = temperature.map_or(1.0, f64::from);
                let x = kind.round(&values(n as usize, 21, -3.0, 3.0));
                let resp = client
                    .jacobian(JacobianRequest {
                        logits: Some(tensor(shape, &x, kind)),
                        output: None,
                        temperature,
                        log,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let mut jshape = shape.to_vec();
                jshape.push(k as u32);
                let got = expect(resp.jacobian, &jshape, kind);
                let want: Vec<f64> = x.chunks(k).flat_map(|r| jacobian(r, t, log)).collect();
                assert!(
                    max_abs_diff(&got, &want) <= 4.0 * kind.tol(),
                    "{kind:?} {shape:?} log={log}"
                );
                if !log {
                    for m in got.chunks(k * k) {
                        for c in 0..k {
                            let col: f64 = (0..k).map(|i| m[i * k + c]).sum();
                            assert!(col.abs() <= 10.0 * kind.tol(), "column {c} sums to {col}");
                        }
                    }
                }
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn jacobian_from_output_equals_from_logits() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for log in [false, true] {
        let x = values(2 * 6, 9, -2.0, 2.0);
        let logits = tensor(&[2, 6], &x, Kind::F64Raw);
        let s = client
            .forward(ForwardRequest {
                logits: Some(logits.clone()),
                temperature: Some(1.5),
                log,
            })
            .await
            .unwrap()
            .into_inner()
            .output;
        let a = client
            .jacobian(JacobianRequest {
                logits: Some(logits),
                output: None,
                temperature: Some(1.5),
                log,
            })
            .await
            .unwrap()
            .into_inner();
        let b = client
            .jacobian(JacobianRequest {
                logits: None,
                output: s,
                temperature: Some(1.5),
                log,
            })
            .await
            .unwrap()
            .into_inner();
        let a = expect(a.jacobian, &[2, 6, 6], Kind::F64Raw);
        let b = expect(b.jacobian, &[2, 6, 6], Kind::F64Raw);
        assert!(max_abs_diff(&a, &b) < 1e-12);
    }
    server.stop().await.unwrap();
}

/// The values of every message of a JacobianStream of `[k, k]` matrices of
/// `kind`, in order, and the number of vectors in each; checks that each
/// message's `first_row` follows on from the last.
async fn streamed(
    client: &mut SoftmaxServiceClient<Channel>,
    req: JacobianRequest,
    k: u32,
    kind: Kind,
) -> (Vec<f64>, Vec<u32>) {
    let mut stream = client.jacobian_stream(req).await.unwrap().into_inner();
    let (mut all, mut sizes, mut next_row) = (Vec::new(), Vec::new(), 0u64);
    while let Some(msg) = stream.message().await.unwrap() {
        assert_eq!(msg.first_row, next_row, "{kind:?}");
        let n = msg.jacobian.as_ref().map_or(0, |t| t.shape[0]);
        all.extend(expect(msg.jacobian, &[n, k, k], kind));
        sizes.push(n);
        next_row += u64::from(n);
    }
    (all, sizes)
}

#[tokio::test]
async fn stream_sends_the_same_values_in_chunks_of_whole_vectors() {
    let mut config = softmaxd::server::Config::for_tests();
    config.stream_chunk_bytes = 10 * 10 * 4 * 3; // three f32 vectors per message
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let (rows, k) = (8usize, 10usize);
    let x = Kind::F32Raw.round(&values(rows * k, 2, -3.0, 3.0));
    let req = JacobianRequest {
        logits: Some(tensor(&[2, 4, k as u32], &x, Kind::F32Raw)),
        output: None,
        temperature: None,
        log: false,
    };
    let (all, sizes) = streamed(&mut client, req.clone(), k as u32, Kind::F32Raw).await;
    assert_eq!(sizes, [3, 3, 2]);
    let unary = client.jacobian(req).await.unwrap().into_inner();
    let want = expect(unary.jacobian, &[2, 4, k as u32, k as u32], Kind::F32Raw);
    assert_eq!(all, want);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unary_jacobian_over_the_limit_points_to_the_stream() {
    let mut config = softmaxd::server::Config::for_tests();
    config.max_message_bytes = 1 << 20;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    // 300 x 300 f64 Jacobians of 4 vectors: 2.9 MB, over a 1 MiB limit.
    let x = values(4 * 300, 1, -1.0, 1.0);
    let req = JacobianRequest {
        logits: Some(tensor(&[4, 300], &x, Kind::F64Raw)),
        output: None,
        temperature: None,
        log: false,
    };
    let err = client.jacobian(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("JacobianStream"),
        "{}",
        err.message()
    );
    // The stream serves it, each message under the limit.
    let mut stream = client.jacobian_stream(req).await.unwrap().into_inner();
    let mut rows = 0;
    while let Some(msg) = stream.message().await.unwrap() {
        let t = msg.jacobian.unwrap();
        assert!(t.f64_le.len() < 1 << 20);
        rows += t.shape[0];
    }
    assert_eq!(rows, 4);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stream_of_an_empty_batch_sends_one_empty_message() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let req = JacobianRequest {
        logits: Some(tensor(&[0, 3], &[], Kind::F32Typed)),
        output: None,
        temperature: None,
        log: false,
    };
    let mut stream = client.jacobian_stream(req).await.unwrap().into_inner();
    let msg = stream.message().await.unwrap().expect("one message");
    assert_eq!(msg.jacobian.unwrap().shape, vec![0, 3, 3]);
    assert!(stream.message().await.unwrap().is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stream_chunks_of_every_kind_match_the_unary_answer() {
    let mut config = softmaxd::server::Config::for_tests();
    config.stream_chunk_bytes = 10 * 10 * 8 * 2; // two f64 or four f32 vectors
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let (rows, k) = (9usize, 10u32);
    for (i, kind) in ALL_KINDS.into_iter().enumerate() {
        let x = kind.round(&values(rows * k as usize, 10 + i as u64, -4.0, 4.0));
        let req = JacobianRequest {
            logits: None,
            output: Some(tensor(
                &[rows as u32, k],
                &per_row(&x, k as usize, |r| softmax(r, 2.0)),
                kind,
            )),
            temperature: Some(2.0),
            log: false,
        };
        let (all, sizes) = streamed(&mut client, req.clone(), k, kind).await;
        let per_message = if matches!(kind, Kind::F32Typed | Kind::F32Raw) {
            4
        } else {
            2
        };
        assert!(
            sizes.iter().all(|&n| n <= per_message),
            "{kind:?}: {sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<u32>(), rows as u32, "{kind:?}");
        let unary = client.jacobian(req).await.unwrap().into_inner();
        assert_eq!(
            all,
            expect(unary.jacobian, &[rows as u32, k, k], kind),
            "{kind:?}"
        );
    }
    server.stop().await.unwrap();
}
