//! The load tool's flags (clap) and the plan they describe.

use clap::{Parser, ValueEnum};
use std::time::Duration;

/// Longest any run may take, whatever the flags say: the tool never runs forever.
pub const MAX_DURATION_S: f64 = 3600.0;
/// How long a run bounded only by `--requests` may take at most.
const REQUESTS_CAP_S: f64 = 600.0;
/// How long a run lasts when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION_S: f64 = 10.0;

/// Which RPC to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rpc {
    Forward,
    Backward,
    Jacobian,
    JacobianStream,
    ForwardStream,
    CrossEntropy,
}

/// Element type of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F64,
}

/// How the payload's values travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `f32_le` / `f64_le` bytes fields.
    Raw,
    /// Packed `repeated float` / `repeated double` fields.
    Typed,
}

/// softmaxd-bench: load generator for softmaxd, with an identity-service baseline.
#[derive(Clone, Debug, Parser)]
#[command(name = "softmaxd-bench", version, about)]
pub struct BenchArgs {
    /// Server to load (host:port or http:// URL).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,

    /// Also load this echo server (`softmaxd --echo`) with the same plan and
    /// print softmaxd's calls/s as a ratio of the echo's.
    #[arg(long, value_name = "ADDR", conflicts_with = "in_process")]
    pub compare_echo: Option<String>,

    /// Also report the server's CPU time per successful call and the cores
    /// it kept busy, from /proc/PID/stat (Linux; the server runs here).
    #[arg(long, value_name = "PID", conflicts_with = "in_process")]
    pub server_pid: Option<u32>,

    /// The same for the echo server of `--compare-echo`.
    #[arg(long, value_name = "PID", requires = "compare_echo")]
    pub echo_pid: Option<u32>,

    /// Start softmaxd and an echo server in this process on loopback (same
    /// settings) and compare them; `--addr` is ignored.
    #[arg(long)]
    pub in_process: bool,

    /// Tokio worker threads of the in-process servers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub server_threads: u16,

    /// RPC to call.
    #[arg(long, value_enum, default_value_t = Rpc::Forward)]
    pub rpc: Rpc,

    /// Payload shape, comma-separated; the last dim is the softmax axis.
    #[arg(long, default_value = "64,1000", value_parser = parse_shape)]
    pub shape: Shape,

    /// Payload element type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,

    /// Payload encoding.
    #[arg(long, value_enum, default_value_t = Encoding::Raw)]
    pub encoding: Encoding,

    /// Calls in flight at once (closed loop), or senders (fixed rate).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// TCP connections (HTTP/2 channels) the calls are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,

    /// Seconds to measure for (default 10, or up to 600 with --requests).
    #[arg(long, value_parser = duration_secs)]
    pub duration: Option<f64>,

    /// Stop after this many measured calls (or at the duration, whichever is first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Fixed-rate (open-loop) mode: calls per second in total, on a fixed
    /// schedule; latency counts from the scheduled send time.
    #[arg(long, value_parser = positive)]
    pub rate: Option<f64>,

    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0, value_parser = warmup_secs)]
    pub warmup: f64,

    /// Seconds before one call is abandoned and counted as DEADLINE_EXCEEDED.
    #[arg(long, default_value_t = 30.0, value_parser = duration_secs)]
    pub timeout: f64,

    /// With a comparison: runs of each server, taking turns going first;
    /// medians are reported, with the range of the per-round ratios.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Tokio worker threads of the load generator (default: the cores it may use).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// HTTP/2 flow-control window per stream, in bytes (as the server's default).
    #[arg(long, default_value_t = 8 << 20)]
    pub http2_stream_window: u32,

    /// HTTP/2 flow-control window per connection, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub http2_connection_window: u32,

    /// Largest HTTP/2 frame the client accepts, in bytes.
    #[arg(long, default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    pub http2_max_frame: u32,

    /// Gather the tool's small writes (requests under 16 KiB) into one
    /// `writev` per busy spell, as the server's `--coalesce-writes` does:
    /// the tool then spends its core on calls, not on the loopback.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub coalesce_writes: bool,

    /// Make this fraction of calls (0 to 1, spread evenly) invalid, in turn:
    /// a NaN in the main tensor, one value more than its shape holds, two
    /// value fields set. Each must get INVALID_ARGUMENT; the report counts
    /// expected and unexpected codes apart.
    #[arg(long, default_value_t = 0.0, value_parser = fraction,
          conflicts_with_all = ["in_process", "compare_echo"])]
    pub invalid_fraction: f64,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// How long measuring may last: the given duration, else a default that
    /// depends on whether a request count bounds the run.
    pub fn measure_for(&self) -> Duration {
        let s = self.duration.unwrap_or(if self.requests.is_some() {
            REQUESTS_CAP_S
        } else {
            DEFAULT_DURATION_S
        });
        Duration::from_secs_f64(s.min(MAX_DURATION_S))
    }

    /// Warm-up time.
    pub fn warmup_for(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    /// Per-call timeout.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

/// A payload shape: batch dims then k.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape(pub Vec<u32>);

impl Shape {
    /// Number of values.
    pub fn elements(&self) -> u64 {
        self.0.iter().map(|&d| u64::from(d)).product()
    }

    /// The softmax axis length.
    pub fn k(&self) -> u32 {
        self.0.last().copied().unwrap_or(1)
    }

    /// Number of vectors.
    pub fn rows(&self) -> u64 {
        self.elements() / u64::from(self.k().max(1))
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.0.iter().map(u32::to_string).collect();
        write!(f, "[{}]", dims.join(","))
    }
}

/// Largest payload the tool builds: 1 GiB of values at most.
const MAX_ELEMENTS: u64 = 1 << 28;

fn parse_shape(s: &str) -> Result<Shape, String> {
    let dims = s
        .split(',')
        .map(|d| d.trim().parse::<u32>())
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|e| format!("`{s}`: {e}; expected dims like 64,1000"))?;
    let shape = Shape(dims);
    if shape.k() == 0 {
        return Err("the last dim must be at least 1".into());
    }
    if shape
        .0
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(u64::from(d)))
        .is_none_or(|n| n > MAX_ELEMENTS)
    {
        return Err(format!("`{s}` has more than {MAX_ELEMENTS} values"));
    }
    Ok(shape)
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: expected a fraction from 0 to 1")),
    }
}

fn duration_secs(s: &str) -> Result<f64, String> {
    match positive(s)? {
        v if v <= MAX_DURATION_S => Ok(v),
        _ => Err(format!("`{s}`: at most {MAX_DURATION_S} seconds")),
    }
}

fn warmup_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=MAX_DURATION_S).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: expected 0 to {MAX_DURATION_S} seconds")),
    }
}
