//! `softmaxd --echo`: every RPC answers with its primary tensor unchanged,
//! through the same server stack.

mod harness;

use futures::StreamExt;
use harness::wire::{tensor, ALL_KINDS};
use harness::TestServer;
use softmaxd::proto::v1::{
    BackwardRequest, CrossEntropyRequest, ForwardRequest, JacobianRequest, Tensor,
};
use softmaxd::server::Config;

async fn echo_server() -> TestServer {
    let mut config = Config::for_tests();
    config.echo = true;
    TestServer::start_with(config).await
}

/// Values no softmax would return unchanged (and a NaN the real service
/// would refuse), so an echo cannot be mistaken for a computed answer.
fn odd_tensor(kind: harness::wire::Kind) -> Tensor {
    tensor(&[2, 3], &[1.0, -2.0, 3.5, 100.0, 0.25, -7.0], kind)
}

#[tokio::test]
async fn unary_rpcs_return_the_primary_tensor_unchanged() {
    let server = echo_server().await;
    let mut client = server.client().await;
    for kind in ALL_KINDS {
        let x = odd_tensor(kind);
        let g = tensor(&[2, 3], &[9.0, 8.0, 7.0, 6.0, 5.0, 4.0], kind);

        let out = client
            .forward(ForwardRequest {
                logits: Some(x.clone()),
                ..Default::default()
            })
            .await
            .expect("forward")
            .into_inner();
        assert_eq!(out.output.as_ref(), Some(&x), "{kind:?}");

        let out = client
            .backward(BackwardRequest {
                output: Some(x.clone()),
                grad_output: Some(g.clone()),
                ..Default::default()
            })
            .await
            .expect("backward")
            .into_inner();
        assert_eq!(out.grad_logits.as_ref(), Some(&g), "{kind:?}");

        let out = client
            .jacobian(JacobianRequest {
                logits: Some(x.clone()),
                ..Default::default()
            })
            .await
            .expect("jacobian")
            .into_inner();
        assert_eq!(out.jacobian.as_ref(), Some(&x), "{kind:?}");
        assert_eq!(out.first_row, 0);

        let out = client
            .cross_entropy(CrossEntropyRequest {
                logits: Some(x.clone()),
                labels: vec![0, 2],
                ..Default::default()
            })
            .await
            .expect("cross_entropy")
            .into_inner();
        assert_eq!(out.grad_logits.as_ref(), Some(&x), "{kind:?}");
        assert_eq!(out.loss, Some(Tensor::default()));
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn streaming_rpcs_echo_each_message() {
    let server = echo_server().await;
    let mut client = server.client().await;
    let kinds = ALL_KINDS;
    let sent: Vec<Tensor> = kinds.iter().map(|&k| odd_tensor(k)).collect();

    let requests = futures::stream::iter(sent.clone().into_iter().map(|t| ForwardRequest {
        logits: Some(t),
        ..Default::default()
    }));
    let got: Vec<Tensor> = client
        .forward_stream(requests)
        .await
        .expect("forward_stream")
        .into_inner()
        .map(|r| r.expect("message").output.expect("output"))
        .collect()
        .await;
    assert_eq!(got, sent);

    let x = sent[0].clone();
    let got: Vec<_> = client
        .jacobian_stream(JacobianRequest {
            output: Some(x.clone()),
            ..Default::default()
        })
        .await
        .expect("jacobian_stream")
        .into_inner()
        .collect()
        .await;
    assert_eq!(got.len(), 1);
    let one = got[0].as_ref().expect("message");
    assert_eq!(one.jacobian.as_ref(), Some(&x));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_real_service_is_served_without_the_flag() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let x = odd_tensor(harness::wire::Kind::F64Typed);
    let out = client
        .forward(ForwardRequest {
            logits: Some(x.clone()),
            ..Default::default()
        })
        .await
        .expect("forward")
        .into_inner();
    assert_ne!(out.output.as_ref(), Some(&x));
    server.stop().await.expect("clean stop");
}
