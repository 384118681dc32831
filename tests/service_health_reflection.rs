//! Health and server reflection: the probes Kubernetes uses and the
//! lookups grpcurl and ghz make (including ghz's by-method symbol lookup).

mod harness;

use futures::StreamExt;
use harness::TestServer;
use prost::Message as _;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1 as refl;
use tonic_reflection::pb::v1alpha as refl_alpha;

#[tokio::test]
async fn health_reports_serving_for_server_and_api() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "softmax.v1.SoftmaxService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    server.stop().await.unwrap();
}

async fn ask_v1(
    server: &TestServer,
    req: refl::server_reflection_request::MessageRequest,
) -> refl::server_reflection_response::MessageResponse {
    let mut client =
        refl::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let req = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    stream
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

fn file_names(resp: refl::server_reflection_response::MessageResponse) -> Vec<String> {
    match resp {
        refl::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => f
            .file_descriptor_proto
            .iter()
            .map(|b| {
                prost_types::FileDescriptorProto::decode(&b[..])
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect(),
        other => panic!("expected files, got {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_lists_and_resolves_symbols() {
    use refl::server_reflection_request::MessageRequest as Q;
    use refl::server_reflection_response::MessageResponse as A;
    let server = TestServer::start().await;
    match ask_v1(&server, Q::ListServices(String::new())).await {
        A::ListServicesResponse(l) => {
            let names: Vec<_> = l.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&"softmax.v1.SoftmaxService"), "{names:?}");
            assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        }
        other => panic!("{other:?}"),
    }
    // The service, a method (ghz's lookup), and a message.
    for symbol in [
        "softmax.v1.SoftmaxService",
        "softmax.v1.SoftmaxService.Forward",
        "softmax.v1.SoftmaxService.ForwardStream",
        "softmax.v1.Tensor",
        "softmax.v1.JacobianResponse",
    ] {
        let files = file_names(ask_v1(&server, Q::FileContainingSymbol(symbol.into())).await);
        assert!(
            files.contains(&"softmax/v1/softmax.proto".to_string()),
            "{symbol}: {files:?}"
        );
    }
    let files = file_names(
        ask_v1(
            &server,
            Q::FileByFilename("softmax/v1/softmax.proto".into()),
        )
        .await,
    );
    assert_eq!(files[0], "softmax/v1/softmax.proto");
    // An unknown symbol: tonic-reflection ends the stream with NOT_FOUND.
    let mut client =
        refl::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let req = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(Q::FileContainingSymbol("softmax.v1.Nope".into())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match stream.next().await.unwrap() {
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound),
        Ok(r) => assert!(
            matches!(r.message_response, Some(A::ErrorResponse(_))),
            "{r:?}"
        ),
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_v1alpha_resolves_methods_too() {
    use refl_alpha::server_reflection_request::MessageRequest as Q;
    use refl_alpha::server_reflection_response::MessageResponse as A;
    let server = TestServer::start().await;
    let mut client =
        refl_alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let req = refl_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(Q::FileContainingSymbol(
            "softmax.v1.SoftmaxService.Backward".into(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match stream
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        A::FileDescriptorResponse(f) => assert!(!f.file_descriptor_proto.is_empty()),
        other => panic!("{other:?}"),
    }
    server.stop().await.unwrap();
}
