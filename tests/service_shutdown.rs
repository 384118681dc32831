//! Graceful shutdown in process: health turns NOT_SERVING, calls in flight
//! finish with their full answers, new calls get UNAVAILABLE, serve returns Ok.

mod harness;

use harness::reference::values;
use harness::wire::{tensor, Kind};
use harness::{watch_health, TestServer};
use softmaxd::proto::v1::{ForwardRequest, JacobianRequest};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn drain_finishes_in_flight_streams_and_refuses_new_calls() {
    let mut config = softmaxd::server::Config::for_tests();
    config.stream_chunk_bytes = 64 * 64 * 4; // one vector per message: a long stream
    let mut server = TestServer::start_with(config).await;
    let channel = server.channel().await;
    let mut client =
        softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient::new(channel.clone());
    let mut watch = watch_health(channel.clone()).await;

    let rows = 200;
    let x = values(rows * 64, 4, -1.0, 1.0);
    let req = JacobianRequest {
        logits: Some(tensor(&[rows as u32, 64], &x, Kind::F32Raw)),
        output: None,
        temperature: None,
        log: false,
    };
    let mut stream = client.jacobian_stream(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.first_row, 0);

    server.signal_stop();
    // Health flips first.
    let flipped = watch.message().await.unwrap().unwrap();
    assert_eq!(flipped.status, ServingStatus::NotServing as i32);
    // A new call on the open connection is refused with UNAVAILABLE.
    let refused = client
        .forward(ForwardRequest {
            logits: Some(tensor(&[2], &[1.0, 2.0], Kind::F32Typed)),
            temperature: None,
            log: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "{}",
        refused.message()
    );
    // The stream in flight still delivers every vector.
    let mut got = 1;
    while let Some(msg) = stream.message().await.unwrap() {
        assert_eq!(msg.first_row, got);
        got += msg.jacobian.unwrap().shape[0] as u64;
    }
    assert_eq!(got, rows as u64);
    drop((stream, watch, client, channel));
    server
        .stop()
        .await
        .expect("serve returns Ok after draining");
}
