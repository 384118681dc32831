//! The `softmaxd` binary: parse flags, start telemetry, serve or probe.
#![forbid(unsafe_code)]

use clap::Parser;
use softmaxd::server::{self, Cli, Command};
use std::process::ExitCode;

/// See Cargo.toml: steadier and faster than glibc's for tensor-sized blocks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("softmaxd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::HealthCheck(args)) => {
            match runtime.block_on(server::health_check::probe(&args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("softmaxd health-check: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Serve(config)) => runtime.block_on(run(config)),
        None => runtime.block_on(run(cli.serve)),
    }
}

async fn run(config: server::Config) -> ExitCode {
    server::telemetry::init(config.log_format);
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, "cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server::metrics::start(&config.metrics).await {
        Ok(Some(metrics)) => tracing::info!(%metrics, "serving Prometheus metrics on /metrics"),
        Ok(None) => {}
        Err(e) => {
            tracing::error!("metrics: {e}");
            return ExitCode::FAILURE;
        }
    }
    let addr = listener.local_addr().map_or(config.listen, |a| a);
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "softmaxd serving");
    match server::serve(config, listener, server::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
