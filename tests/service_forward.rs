//! Forward over the wire: every dtype and encoding, 1-3 D shapes,
//! temperature, log-softmax and masks, against the f64 reference.

mod harness;

use harness::reference::{log_softmax, per_row, softmax, values};
use harness::wire::{expect, tensor, Kind, ALL_KINDS};
use harness::TestServer;
use softmaxd::proto::v1::ForwardRequest;

fn close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "index {i}: got {g}, want {w}"
        );
    }
}

#[tokio::test]
async fn forward_matches_reference_for_every_kind_and_shape() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shapes: [&[u32]; 4] = [&[7], &[3, 5], &[2, 3, 4], &[1, 1]];
    for kind in ALL_KINDS {
        for shape in shapes {
            for (temperature, log) in [
                (None, false),
                (Some(0.5f32), false),
                (None, true),
                (Some(3.0), true),
            ] {
                let n: u32 = shape.iter().product();
                let k = *shape.last().unwrap() as usize;
                let x = kind.round(&values(n as usize, 11, -8.0, 8.0));
                let resp = client
                    .forward(ForwardRequest {
                        logits: Some(tensor(shape, &x, kind)),
                        temperature,
                        log,
                    })
                    .await
                    .unwrap_or_else(|s| panic!("{kind:?} {shape:?}: {s}"))
                    .into_inner();
                let got = expect(resp.output, shape, kind);
                let t = temperature.map_or(1.0, f64::from);
                let want = if log {
                    per_row(&x, k, |r| log_softmax(r, t))
                } else {
                    per_row(&x, k, |r| softmax(r, t))
                };
                close(&got, &want, kind.tol());
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn masks_and_large_offsets_are_stable() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let ninf = f64::NEG_INFINITY;
    // Row 0 partly masked, row 1 fully masked (padding), row 2 huge offset.
    let x = [1.0, ninf, 2.0, ninf, ninf, ninf, 1234.0, 0.0, -1e4];
    for kind in ALL_KINDS {
        let logits = tensor(&[3, 3], &x, kind);
        let probs = client
            .forward(ForwardRequest {
                logits: Some(logits.clone()),
                temperature: None,
                log: false,
            })
            .await
            .unwrap()
            .into_inner();
        let p = expect(probs.output, &[3, 3], kind);
        let e = 1.0 / (1.0 + 1f64.exp());
        close(
            &p,
            &[e, 0.0, 1.0 - e, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            kind.tol(),
        );
        let logp = client
            .forward(ForwardRequest {
                logits: Some(logits),
                temperature: None,
                log: true,
            })
            .await
            .unwrap()
            .into_inner();
        let l = expect(logp.output, &[3, 3], kind);
        assert_eq!(l[1], ninf);
        assert!(
            l[3..6].iter().all(|&v| v == ninf),
            "fully masked row: {:?}",
            &l[3..6]
        );
        assert!(
            (l[8] + 1e4 + 1234.0).abs() < 1e-2,
            "log-softmax must not underflow: {}",
            l[8]
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn empty_batch_gives_empty_result() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for kind in ALL_KINDS {
        let resp = client
            .forward(ForwardRequest {
                logits: Some(tensor(&[0, 5], &[], kind)),
                temperature: None,
                log: false,
            })
            .await
            .unwrap()
            .into_inner();
        let v = expect(resp.output, &[0, 5], kind);
        assert!(v.is_empty());
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn large_request_runs_on_the_pool_and_matches() {
    let mut config = softmaxd::server::Config::for_tests();
    config.parallel_threshold = 1000;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let k = 300;
    let x = Kind::F32Raw.round(&values(64 * k, 5, -20.0, 20.0));
    let resp = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[64, k as u32], &x, Kind::F32Raw)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap()
        .into_inner();
    let got = expect(resp.output, &[64, k as u32], Kind::F32Raw);
    close(&got, &per_row(&x, k, |r| softmax(r, 1.0)), 2e-6);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn raw_results_over_many_blocks_match_at_every_field_alignment() {
    // Raw results are written over the request's own bytes, shifted to
    // alignment, block by block from the end. Each leading 1 in the shape
    // moves the field one byte along the message, so these shapes put the
    // values at every offset modulo 8; the pool server splits the rows into
    // 1 MiB blocks, the inline one into 64 KiB blocks.
    let mut config = softmaxd::server::Config::for_tests();
    config.parallel_threshold = 200_000;
    let pool = TestServer::start_with(config).await;
    let inline = TestServer::start().await;
    for server in [&inline, &pool] {
        let mut client = server.client().await;
        for kind in [Kind::F32Raw, Kind::F64Raw] {
            for ones in 0..8 {
                let (rows, k) = (300u32, 1000usize);
                let mut shape = vec![1u32; ones];
                shape.extend([rows, k as u32]);
                let x = kind.round(&values(rows as usize * k, ones as u64 + 3, -30.0, 30.0));
                for log in [false, true] {
                    let resp = client
                        .forward(ForwardRequest {
                            logits: Some(tensor(&shape, &x, kind)),
                            temperature: None,
                            log,
                        })
                        .await
                        .unwrap_or_else(|s| panic!("{kind:?} {shape:?}: {s}"))
                        .into_inner();
                    let got = expect(resp.output, &shape, kind);
                    let want = if log {
                        per_row(&x, k, |r| log_softmax(r, 1.0))
                    } else {
                        per_row(&x, k, |r| softmax(r, 1.0))
                    };
                    close(&got, &want, kind.tol());
                }
            }
        }
    }
    inline.stop().await.unwrap();
    pool.stop().await.unwrap();
}
