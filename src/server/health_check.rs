//! `softmaxd health-check`: a grpc.health.v1 probe built into the binary,
//! for images that ship no shell and no grpc_health_probe.

use super::config::HealthCheckArgs;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};

/// Asks the server; `Ok(())` only when the service is SERVING.
pub async fn probe(args: &HealthCheckArgs) -> Result<(), String> {
    let tls = args.tls.client_config().map_err(|e| e.to_string())?;
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", args.addr)
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| format!("{url}: {e}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("{url}: {e}"))?;
    }
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("{url}: cannot connect: {e}"))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| format!("{url}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    match ServingStatus::try_from(reply.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "{url}: service {:?} is {}",
            args.service,
            other.as_str_name()
        )),
        Err(_) => Err(format!("{url}: unknown status {}", reply.status)),
    }
}
