//! ForwardStream: one response per request, in order, on one stream; a bad
//! message ends the stream with its status.

mod harness;

use harness::reference::{per_row, softmax, values};
use harness::wire::{expect, tensor, Kind, ALL_KINDS};
use harness::TestServer;
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::proto::v1::{ForwardRequest, ForwardResponse};
use tonic::transport::Channel;
use tonic::Code;

/// Sends one ForwardStream message per `(kind, shape, values)` and returns
/// the stream of answers.
async fn stream<'a>(
    client: &mut SoftmaxServiceClient<Channel>,
    tensors: impl Iterator<Item = (Kind, Vec<u32>, &'a Vec<f64>)>,
    temperature: Option<f32>,
) -> tonic::Streaming<ForwardResponse> {
    let reqs: Vec<ForwardRequest> = tensors
        .map(|(kind, shape, x)| ForwardRequest {
            logits: Some(tensor(&shape, x, kind)),
            temperature,
            log: false,
        })
        .collect();
    client
        .forward_stream(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn responses_come_back_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut sent = Vec::new();
    for (i, kind) in ALL_KINDS.iter().cycle().take(12).enumerate() {
        let k = 2 + i;
        let x = kind.round(&values(3 * k, i as u64, -5.0, 5.0));
        sent.push((*kind, k, x));
    }
    let shapes = sent
        .iter()
        .map(|(kind, k, x)| (*kind, vec![3, *k as u32], x));
    let mut responses = stream(&mut client, shapes, None).await;
    for (kind, k, x) in &sent {
        let resp = responses
            .message()
            .await
            .unwrap()
            .expect("a response per request");
        let got = expect(resp.output, &[3, *k as u32], *kind);
        let want = per_row(x, *k, |r| softmax(r, 1.0));
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| (a - b).abs() <= kind.tol()));
    }
    assert!(responses.message().await.unwrap().is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_message_ends_the_stream_with_its_status() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let good = ForwardRequest {
        logits: Some(tensor(&[2], &[1.0, 2.0], Kind::F32Typed)),
        temperature: None,
        log: false,
    };
    let bad = ForwardRequest {
        logits: Some(tensor(&[2], &[1.0, f64::NAN], Kind::F32Typed)),
        temperature: None,
        log: false,
    };
    let mut responses = client
        .forward_stream(tokio_stream::iter(vec![good.clone(), bad, good.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());
    let err = responses.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("NaN at flat index 1"),
        "{}",
        err.message()
    );
    // The server goes on serving.
    assert!(client.forward(good).await.is_ok());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_stream_from_a_channel_is_answered_as_it_is_fed() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut responses = client
        .forward_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..50 {
        let x = [i as f64, 0.0];
        tx.send(ForwardRequest {
            logits: Some(tensor(&[2], &x, Kind::F64Typed)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap();
        let got = expect(
            responses.message().await.unwrap().unwrap().output,
            &[2],
            Kind::F64Typed,
        );
        let want = softmax(&x, 1.0);
        assert!((got[0] - want[0]).abs() < 1e-12);
    }
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn messages_of_many_frames_and_of_part_of_one_are_answered_alike() {
    // Large messages span many DATA frames; small ones share frames with
    // the end of the message before them. Every answer must be its own.
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let shapes: [(usize, usize); 6] = [(64, 4096), (1, 3), (2, 5), (300, 1000), (1, 1), (16, 4096)];
    let sent: Vec<(Kind, usize, usize, Vec<f64>)> = shapes
        .iter()
        .zip(ALL_KINDS.iter().cycle())
        .enumerate()
        .map(|(i, (&(rows, k), &kind))| {
            (
                kind,
                rows,
                k,
                kind.round(&values(rows * k, 40 + i as u64, -8.0, 8.0)),
            )
        })
        .collect();
    let tensors = sent
        .iter()
        .map(|(kind, rows, k, x)| (*kind, vec![*rows as u32, *k as u32], x));
    let mut responses = stream(&mut client, tensors, Some(0.5)).await;
    for (kind, rows, k, x) in &sent {
        let resp = responses.message().await.unwrap().expect("an answer");
        let got = expect(resp.output, &[*rows as u32, *k as u32], *kind);
        let want = per_row(x, *k, |r| softmax(r, 0.5));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= kind.tol(), "[{rows},{k}] {kind:?}: off by {worst}");
    }
    assert!(responses.message().await.unwrap().is_none());
    server.stop().await.unwrap();
}
