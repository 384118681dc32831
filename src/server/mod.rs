//! The server layer: configuration, tonic wiring with health, reflection,
//! compression and HTTP/2 tuning, telemetry and graceful shutdown.

mod api;
pub mod auth;
pub mod coalesce;
pub mod config;
mod direct;
pub mod health_check;
mod limits;
pub mod metrics;
mod request;
pub mod shutdown;
mod stream;
pub mod telemetry;
pub mod tls;

pub use config::{Cli, Command, Config, LogFormat};

use crate::service::{self, Echo, Softmax};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// The health-service names reported: the whole server and the API.
const HEALTH_NAMES: [&str; 2] = ["", "softmax.v1.SoftmaxService"];

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
}

/// Serves on `listener` until `shutdown` resolves, then drains: health turns
/// NOT_SERVING, new calls get UNAVAILABLE, in-flight calls finish (up to the
/// drain deadline).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let softmax = Softmax::new(service::Config {
        max_message_bytes: config.max_message_bytes,
        parallel_threshold: config.parallel_threshold,
        stream_chunk_bytes: config.stream_chunk_bytes,
        max_concurrent_requests: config.max_concurrent_requests,
        max_inflight_bytes: config.max_inflight_bytes,
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_NAMES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let keepalive =
        (config.http2_keepalive > 0).then(|| Duration::from_secs(config.http2_keepalive));
    let coalesce = config.coalesce_writes;
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(config.tcp_nodelay))
        .map(move |accepted| accepted.map(|tcp| coalesce::Coalesced::new(tcp, coalesce)));

    // Drain first, then let tonic stop accepting and wait for in-flight calls.
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let softmax = softmax.clone();
        let mut health = health.clone();
        async move {
            shutdown.await;
            for name in HEALTH_NAMES {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            softmax.start_draining();
            let _ = drained_tx.send(());
            // New calls now get UNAVAILABLE on open connections; close them
            // (GOAWAY) only once the calls in flight have answered.
            softmax.idle().await;
            // A health Watch never ends by itself and would hold its
            // connection open until the drain deadline; dropping the statuses
            // ends every Watch cleanly.
            for name in HEALTH_NAMES {
                health.clear_service_status(name).await;
            }
        }
    };
    // Metrics outermost, so they see the final status of every call,
    // including those the layers inside refuse or rewrite.
    let auth = auth::AuthLayer::from_args(&config.auth)?;
    let mut builder = tonic::transport::Server::builder();
    if config.default_timeout > 0.0 {
        // Applies to calls without grpc-timeout; tonic always honours the
        // client's own deadline, dropping the handler (and so cancelling
        // its pool work) when it passes.
        builder = builder.timeout(Duration::from_secs_f64(config.default_timeout));
    }
    if let Some(tls) = config.tls.server_config()? {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .layer(metrics::GrpcMetricsLayer)
        .layer(tower::util::MapResponseLayer::new(
            limits::over_limit_status,
        ))
        .layer(auth)
        .initial_stream_window_size(config.http2_stream_window)
        .initial_connection_window_size(config.http2_connection_window)
        .max_frame_size(config.http2_max_frame)
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(config.http2_keepalive_timeout)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Echo mode (a benchmark baseline) swaps only the service behind the same stack.
    let server = if config.echo {
        tracing::warn!("echo mode: answering every call with its input, not computing softmax");
        server.add_service(direct(Echo, &config))
    } else {
        server.add_service(direct(softmax.clone(), &config))
    }
    .serve_with_incoming_shutdown(incoming, drain);

    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(ServeError::from),
        _ = drained_rx => {}
    }
    match tokio::time::timeout(config.drain(), server).await {
        Ok(r) => {
            tracing::info!("drained, exiting");
            r.map_err(ServeError::from)
        }
        Err(_) => {
            tracing::warn!(
                deadline_s = config.drain_timeout,
                "drain deadline passed with calls still running; exiting anyway"
            );
            Ok(())
        }
    }
}

/// `service` behind the direct unary route, with the server's limits and
/// compression.
fn direct<S: direct::Unary>(service: S, config: &Config) -> direct::Direct<S> {
    direct::Direct::new(
        service.clone(),
        api::endpoint(service, config),
        config.max_message_bytes,
        config.compress_responses,
    )
}
