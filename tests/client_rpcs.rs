//! `softmaxd::client` beyond the shared vectors: large messages, streaming,
//! layouts and errors, against the real server.

mod client_support;

use client_support::Server;
use futures::StreamExt;
use ndarray::{Array, Array2, ArrayD, Axis, IxDyn};
use softmaxd::client::{Client, ClientOptions, Params, Source, Target};
use std::time::Duration;
use tonic::Code;

/// Deterministic values in [-4, 4).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 8.0 - 4.0
        })
        .collect()
}

fn softmax_row(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

#[tokio::test]
async fn forward_of_a_32_mib_request() {
    let server = Server::start().await;
    let client = server.client().await;
    let (rows, k) = (4096, 2048);
    let x = Array2::from_shape_vec(
        (rows, k),
        values(rows * k, 1).into_iter().map(|v| v as f32).collect(),
    )
    .unwrap();
    assert!(x.len() * 4 >= 32 << 20);
    let out = client.forward(x.view(), Params::default()).await.unwrap();
    assert_eq!(out.shape(), &[rows, k]);
    for row in [0, 1234, rows - 1] {
        let xr: Vec<f64> = x.row(row).iter().map(|&v| v as f64).collect();
        for (g, w) in out.index_axis(Axis(0), row).iter().zip(softmax_row(&xr)) {
            assert!((*g as f64 - w).abs() <= 2e-6 + 1e-5 * w, "{g} vs {w}");
        }
    }
}

#[tokio::test]
async fn jacobian_streams_transparently_when_large() {
    let server = Server::start().await;
    let client = server.client().await;
    // 80 x 512 x 512 f64 = 160 MiB: over the 64 MiB message limit.
    let x = Array2::from_shape_vec((80, 512), values(80 * 512, 2)).unwrap();
    let err = client
        .jacobian_with(Source::Logits(x.view()), Params::default(), Some(false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let j = client
        .jacobian(Source::Logits(x.view()), Params::default())
        .await
        .unwrap();
    assert_eq!(j.shape(), &[80, 512, 512]);
    for row in [0, 79] {
        let s = softmax_row(x.row(row).as_slice().unwrap());
        for (a, b) in [(0, 0), (3, 7), (511, 2)] {
            let want = if a == b { s[a] } else { 0.0 } - s[a] * s[b];
            assert!((j[[row, a, b]] - want).abs() < 1e-12);
        }
        // Every column of J sums to 0.
        let col: f64 = (0..512).map(|i| j[[row, i, 5]]).sum();
        assert!(col.abs() < 1e-12, "{col}");
    }
}

#[tokio::test]
async fn jacobian_stream_chunks_are_consecutive() {
    let server = Server::start().await;
    let client = server.client().await;
    let x = Array::from_shape_vec(
        IxDyn(&[4, 16, 300]),
        values(4 * 16 * 300, 3)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
    )
    .unwrap();
    let mut chunks = Box::pin(
        client
            .jacobian_stream(Source::Logits(x.view()), Params::default())
            .await
            .unwrap(),
    );
    let mut next = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.first_row, next);
        assert_eq!(&chunk.jacobian.shape()[1..], &[300, 300]);
        next += chunk.jacobian.shape()[0] as u64;
    }
    assert_eq!(next, 64);
}

#[tokio::test]
async fn forward_stream_keeps_order_and_ends_on_a_bad_message() {
    let server = Server::start().await;
    let client = server.client().await;
    let inputs: Vec<ArrayD<f64>> = (1..=20)
        .map(|i| ArrayD::from_shape_vec(IxDyn(&[i, 3 + i]), values(i * (3 + i), i as u64)).unwrap())
        .collect();
    let outs: Vec<_> = client
        .forward_stream(
            futures::stream::iter(inputs.clone()),
            Params::default().with_log(true),
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(outs.len(), 20);
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out.unwrap().shape(), inputs[i].shape());
    }
    let mut bad = inputs[1].clone();
    bad[[0, 0]] = f64::NAN;
    let stream = futures::stream::iter(vec![inputs[0].clone(), bad, inputs[2].clone()]);
    let outs: Vec<_> = client
        .forward_stream(stream, Params::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(outs[0].is_ok());
    let err = outs
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn cross_entropy_of_one_vector_has_a_scalar_loss() {
    let server = Server::start().await;
    let client = server.client().await;
    let x = ndarray::array![0.0f64, 1.0, 2.0];
    let res = client
        .cross_entropy(x.view(), Target::Labels(&[2]), None)
        .await
        .unwrap();
    assert_eq!(res.loss.shape(), &[] as &[usize]);
    let s = softmax_row(&[0.0, 1.0, 2.0]);
    assert!((res.loss.iter().next().unwrap() + s[2].ln()).abs() < 1e-12);
    assert!((res.grad_logits[2] - (s[2] - 1.0)).abs() < 1e-12);
}

#[tokio::test]
async fn any_memory_layout_is_sent_row_major() {
    let server = Server::start().await;
    let client = server.client().await;
    let x = Array2::from_shape_vec((3, 5), values(15, 4)).unwrap();
    let t = x.t();
    let out = client
        .forward(t, Params::default().with_temperature(0.5))
        .await
        .unwrap();
    let want = client
        .forward(
            t.as_standard_layout().view(),
            Params::default().with_temperature(0.5),
        )
        .await
        .unwrap();
    assert_eq!(out, want);
    assert_eq!(out.shape(), &[5, 3]);
}

#[tokio::test]
async fn uniform_upstream_gradient_gives_zero_gradient() {
    let server = Server::start().await;
    let client = server.client().await;
    let x = Array::from_shape_vec(IxDyn(&[3, 2, 5]), values(30, 5)).unwrap();
    let g = ArrayD::from_elem(IxDyn(&[3, 2, 5]), 0.3f64);
    let out = client
        .backward(
            Source::Logits(x.view()),
            g.view(),
            Params::default().with_temperature(2.0),
        )
        .await
        .unwrap();
    assert!(out.iter().all(|v| v.abs() < 1e-15));
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let err = Client::connect_with(
        "127.0.0.1:1",
        ClientOptions {
            timeout: Some(Duration::from_secs(5)),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn token_and_deadline_are_sent() {
    let server = Server::start().await;
    let options = ClientOptions {
        token: Some("secret".into()),
        timeout: Some(Duration::from_secs(10)),
        ..ClientOptions::default()
    };
    let client = server.client_with(options).await;
    let req = client.request(()).unwrap();
    assert_eq!(
        req.metadata().get("authorization").unwrap(),
        "Bearer secret"
    );
    assert_eq!(req.metadata().get("grpc-timeout").unwrap(), "10000000u");
    let out = client
        .forward(ndarray::array![1.0f32, 1.0].view(), Params::default())
        .await
        .unwrap();
    assert_eq!(out, ndarray::array![0.5f32, 0.5].into_dyn());
}
