//! Bearer-token authentication: calls without a valid token get
//! UNAUTHENTICATED, valid tokens pass, health checks stay open.

mod harness;

use harness::wire::{tensor, Kind};
use harness::TestServer;
use softmaxd::proto::v1::ForwardRequest;
use softmaxd::server::Config;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// A server accepting the two tokens "alpha-token" and "beta-token".
async fn server_with_tokens() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# accepted tokens\nalpha-token\n\n  beta-token  \n")
        .expect("write tokens");
    let mut config = Config::for_tests();
    config.auth.auth_token_file = Some(file);
    (TestServer::start_with(config).await, dir)
}

fn forward(authorization: Option<&str>) -> tonic::Request<ForwardRequest> {
    let mut request = tonic::Request::new(ForwardRequest {
        logits: Some(tensor(&[1, 2], &[0.0, 0.0], Kind::F32Typed)),
        temperature: None,
        log: false,
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("header"));
    }
    request
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_unauthenticated() {
    let (server, _dir) = server_with_tokens().await;
    let mut client = server.client().await;
    for authorization in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer alpha-toke"),
        Some("Bearer alpha-token-and-more"),
        Some("Bearer "),
        Some("Basic alpha-token"),
        Some("alpha-token"),
    ] {
        let status = client
            .forward(forward(authorization))
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{authorization:?}"
        );
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn valid_tokens_are_served() {
    let (server, _dir) = server_with_tokens().await;
    let mut client = server.client().await;
    for authorization in [
        "Bearer alpha-token",
        "Bearer beta-token",
        "bearer beta-token",
    ] {
        let reply = client
            .forward(forward(Some(authorization)))
            .await
            .expect(authorization);
        let probs = reply.into_inner().output.map(|t| t.f32).unwrap_or_default();
        assert_eq!(probs, vec![0.5, 0.5]);
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn health_stays_open_and_reflection_needs_a_token() {
    let (server, _dir) = server_with_tokens().await;
    let channel = server.channel().await;
    for service in ["", "softmax.v1.SoftmaxService"] {
        let reply = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health without a token");
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
    }

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let refused = reflection
        .server_reflection_info(tokio_stream::iter([request.clone()]))
        .await
        .expect_err("reflection without a token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut with_token = tonic::Request::new(tokio_stream::iter([request]));
    with_token.metadata_mut().insert(
        "authorization",
        "Bearer alpha-token".parse().expect("header"),
    );
    let mut replies = reflection
        .server_reflection_info(with_token)
        .await
        .expect("reflection")
        .into_inner();
    assert!(replies.message().await.expect("reply").is_some());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_unreadable_or_empty_token_file_stops_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nothing\n\n").expect("write");
    for file in [empty, dir.path().join("missing")] {
        let mut config = Config::for_tests();
        config.auth.auth_token_file = Some(file.clone());
        let result = TestServer::start_with(config).await.stop().await;
        assert!(result.is_err(), "{file:?} was accepted");
    }
}
