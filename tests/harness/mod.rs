//! Shared by the service tests: starts the real server on an ephemeral
//! loopback port, builds wire tensors, and holds an f64 reference.
#![allow(dead_code)]

pub mod reference;
pub mod wire;

use bytes::Bytes;
use softmaxd::proto::v1::softmax_service_client::SoftmaxServiceClient;
use softmaxd::server::{self, Config, ServeError};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Streaming;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    HealthCheckResponse,
};

/// A server running in this process on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> Self {
        Self::start_with(Config::for_tests()).await
    }

    /// Starts a server with `config` (its listen address is replaced by an
    /// ephemeral loopback port).
    pub async fn start_with(mut config: Config) -> Self {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(config, listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// A connected API client with generous message limits.
    pub async fn client(&self) -> SoftmaxServiceClient<Channel> {
        SoftmaxServiceClient::new(self.channel().await)
            .max_decoding_message_size(512 << 20)
            .max_encoding_message_size(512 << 20)
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for the server to exit.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.signal_stop();
        self.task.await.expect("server task")
    }
}

/// Watches the API's health over `channel`, checking that it starts SERVING.
pub async fn watch_health(channel: Channel) -> Streaming<HealthCheckResponse> {
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "softmax.v1.SoftmaxService".into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("health status")
        .map(|r| r.status);
    assert_eq!(first, Some(ServingStatus::Serving as i32));
    watch
}

/// The Forward method's HTTP/2 path.
pub const FORWARD: &str = "/softmax.v1.SoftmaxService/Forward";

/// A raw HTTP/2 gRPC call to `path` whose body is `frame`, ended or left
/// open: for what a tonic client would never send or would hide.
pub async fn raw_call(
    addr: SocketAddr,
    path: &str,
    frame: Bytes,
    end: bool,
) -> (
    h2::client::SendRequest<Bytes>,
    Option<h2::client::ResponseFuture>,
    h2::SendStream<Bytes>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    send.send_data(frame, end).unwrap();
    (client, Some(resp), send)
}
