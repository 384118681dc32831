//! Command-line and environment configuration (clap), one struct per
//! subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

/// softmaxd: softmax, its backward pass, Jacobian and cross-entropy over gRPC.
#[derive(Debug, Parser)]
#[command(
    name = "softmaxd",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the server, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: Config,
}

/// What the binary does besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve(Config),
    /// Probe a server's grpc.health.v1 service; exit 0 only when SERVING.
    HealthCheck(HealthCheckArgs),
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the span's fields.
    Json,
}

/// The server's configuration.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "SOFTMAXD_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Largest request and response message, in bytes.
    #[arg(long, env = "SOFTMAXD_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    pub max_message_bytes: usize,

    /// Elements per request from which work runs on the rayon pool, split
    /// over vectors; smaller requests run inline. 2^20 by measurement (see
    /// bench/README.md): below it the transport dominates a call and the
    /// fork-join does not pay, above it the pool halves the kernel's time.
    #[arg(long, env = "SOFTMAXD_PARALLEL_THRESHOLD", default_value_t = 1 << 20)]
    pub parallel_threshold: usize,

    /// Target size of one JacobianStream message, in bytes.
    #[arg(long, env = "SOFTMAXD_STREAM_CHUNK_BYTES", default_value_t = 4 << 20)]
    pub stream_chunk_bytes: usize,

    /// Calls served at once; beyond it calls fail fast with RESOURCE_EXHAUSTED
    /// instead of queueing (0: no limit).
    #[arg(long, env = "SOFTMAXD_MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: usize,

    /// Tensor bytes (inputs and outputs) that calls in flight may hold;
    /// beyond it calls fail fast with RESOURCE_EXHAUSTED (0: no limit).
    #[arg(long, env = "SOFTMAXD_MAX_INFLIGHT_BYTES", default_value_t = 1 << 30)]
    pub max_inflight_bytes: usize,

    /// Deadline in seconds for calls whose client set none (0: none).
    /// A client's own grpc-timeout is always honoured.
    #[arg(long, env = "SOFTMAXD_DEFAULT_TIMEOUT", default_value_t = 60.0, value_parser = non_negative_secs)]
    pub default_timeout: f64,

    /// Log format; levels come from RUST_LOG (default "info").
    #[arg(long, env = "SOFTMAXD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds that in-flight calls get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SOFTMAXD_DRAIN_TIMEOUT", default_value_t = 20.0, value_parser = positive_secs)]
    pub drain_timeout: f64,

    /// HTTP/2 flow-control window per stream, in bytes.
    #[arg(long, env = "SOFTMAXD_HTTP2_STREAM_WINDOW", default_value_t = 8 << 20)]
    pub http2_stream_window: u32,

    /// HTTP/2 flow-control window per connection, in bytes.
    #[arg(long, env = "SOFTMAXD_HTTP2_CONNECTION_WINDOW", default_value_t = 16 << 20)]
    pub http2_connection_window: u32,

    /// Largest HTTP/2 frame the server accepts, in bytes (16 KiB to 16 MiB - 1).
    #[arg(long, env = "SOFTMAXD_HTTP2_MAX_FRAME", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    pub http2_max_frame: u32,

    /// Concurrent streams allowed on one connection.
    #[arg(long, env = "SOFTMAXD_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Seconds between HTTP/2 keep-alive pings (0 disables).
    #[arg(long, env = "SOFTMAXD_HTTP2_KEEPALIVE", default_value_t = 30)]
    pub http2_keepalive: u64,

    /// Seconds to wait for a keep-alive ping's answer before closing the
    /// connection.
    #[arg(long, env = "SOFTMAXD_HTTP2_KEEPALIVE_TIMEOUT", default_value_t = 20)]
    pub http2_keepalive_timeout: u64,

    /// Set TCP_NODELAY on accepted connections.
    #[arg(long, env = "SOFTMAXD_TCP_NODELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub tcp_nodelay: bool,

    /// Gather each connection's small writes (answers under 16 KiB, trailers)
    /// into one `writev` per busy spell instead of two per answer. Off by
    /// default: holding answers back makes a closed-loop client wait, and
    /// it paid only with several busy connections (bench/README.md).
    #[arg(long, env = "SOFTMAXD_COALESCE_WRITES", default_value_t = false, action = clap::ArgAction::Set)]
    pub coalesce_writes: bool,

    /// Compress responses (gzip or zstd) for clients that accept it. Off by
    /// default: float tensors shrink little, gzip costs many times the
    /// softmax itself, and some clients (grpc-js) accept gzip on every call.
    /// Compressed requests are always accepted.
    #[arg(long, env = "SOFTMAXD_COMPRESS_RESPONSES", default_value_t = false, action = clap::ArgAction::Set)]
    pub compress_responses: bool,

    /// Benchmark baseline: answer every call with its input tensor (no
    /// validation, no math) through the same stack and settings.
    #[arg(long, env = "SOFTMAXD_ECHO", hide = true)]
    pub echo: bool,
    // Operations flags, each group defined beside the code that uses it.
    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

impl Config {
    /// The drain deadline as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }

    /// Defaults, for tests and embedding: listens on an ephemeral loopback port.
    pub fn for_tests() -> Self {
        let mut c = Cli::parse_from(["softmaxd"]).serve;
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}

/// Flags of `softmaxd health-check`.
#[derive(Clone, Debug, Args)]
pub struct HealthCheckArgs {
    /// Server to probe (host:port or a URL).
    #[arg(long, env = "SOFTMAXD_HEALTH_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Service to ask about; "" is the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0, value_parser = positive_secs)]
    pub timeout: f64,
    #[command(flatten)]
    pub tls: super::tls::ProbeTlsArgs,
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v == 0.0 => Ok(v),
        _ => positive_secs(s),
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}
