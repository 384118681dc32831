//! The run's report: throughput, latency percentiles and errors, as text or JSON.

use super::args::{BenchArgs, Dtype, Encoding, Rpc};
use super::load::Outcome;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Latency percentiles of successful calls, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What a run against one server measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Which server: its address, or `softmaxd` / `echo` when in-process.
    pub target: String,
    pub rpc: Rpc,
    pub shape: Vec<u32>,
    pub dtype: Dtype,
    pub encoding: Encoding,
    /// `closed` (send on answer) or `open` (fixed rate).
    pub mode: &'static str,
    /// Fixed-rate mode: the calls per second asked for.
    pub rate: Option<f64>,
    pub concurrency: u32,
    pub connections: u32,
    /// Seconds measured (after the warm-up).
    pub elapsed_s: f64,
    /// Successful calls.
    pub calls: u64,
    /// Failed calls by gRPC status code.
    pub errors: BTreeMap<String, u64>,
    /// The fraction of calls made invalid on purpose.
    pub invalid_fraction: f64,
    /// Invalid calls made.
    pub invalid_calls: u64,
    /// Invalid calls answered with the status they must get, by code.
    pub expected_errors: BTreeMap<String, u64>,
    /// Outcomes other than OK for a valid call and INVALID_ARGUMENT for an
    /// invalid one, by code (`OK`: an invalid call was answered).
    pub unexpected: BTreeMap<String, u64>,
    pub calls_per_s: f64,
    /// Request plus response payload, in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Encoded size of one request message, in bytes.
    pub request_bytes: usize,
    /// Fixed-rate mode: sends more than 1 ms behind schedule.
    pub late_sends: u64,
    pub latency_us: Latency,
    /// With `--server-pid`: the server's CPU time per successful call, in
    /// microseconds (its CPU time over the measured part / `calls`).
    pub server_cpu_us_per_call: Option<f64>,
    /// With `--server-pid`: the server's CPU time over the measured part's
    /// wall time (1.0 = one core kept busy).
    pub server_cpu_cores: Option<f64>,
}

impl Report {
    /// Summarises `outcome` of a run against `target`.
    pub fn new(target: &str, args: &BenchArgs, request_bytes: usize, outcome: &Outcome) -> Self {
        let s = &outcome.stats;
        let secs = outcome.elapsed.as_secs_f64().max(1e-9);
        let h = &s.latency_ns;
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            target: target.to_string(),
            rpc: args.rpc,
            shape: args.shape.0.clone(),
            dtype: args.dtype,
            encoding: args.encoding,
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: args.rate,
            concurrency: args.concurrency,
            connections: args.connections,
            elapsed_s: secs,
            calls: s.ok,
            errors: s.errors.clone(),
            invalid_fraction: args.invalid_fraction,
            invalid_calls: s.invalid,
            expected_errors: s.expected.clone(),
            unexpected: s.unexpected.clone(),
            calls_per_s: s.ok as f64 / secs,
            mb_per_s: (s.sent_bytes + s.received_bytes) as f64 / secs / 1e6,
            request_bytes,
            late_sends: s.late,
            latency_us: Latency {
                p50: us(h.value_at_quantile(0.5)),
                p90: us(h.value_at_quantile(0.9)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
                mean: h.mean() / 1e3,
            },
            server_cpu_us_per_call: outcome
                .server_cpu
                .map(|c| c.as_secs_f64() * 1e6 / s.ok.max(1) as f64),
            server_cpu_cores: outcome.server_cpu.map(|c| c.as_secs_f64() / secs),
        }
    }

    /// Calls that did not end as they should.
    pub fn failed(&self) -> u64 {
        self.unexpected.values().sum()
    }

    /// A few human-readable lines.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let shape: Vec<String> = self.shape.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "{}: {:?} [{}] {:?} {:?}, {} loop, concurrency {}, {} connection(s){}",
            self.target,
            self.rpc,
            shape.join(","),
            self.dtype,
            self.encoding,
            self.mode,
            self.concurrency,
            self.connections,
            self.rate
                .map(|r| format!(", rate {r}/s"))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "  {} calls in {:.2} s: {:.0} calls/s, {:.1} MB/s ({} B per request)",
            self.calls, self.elapsed_s, self.calls_per_s, self.mb_per_s, self.request_bytes
        );
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if let (Some(per_call), Some(cores)) = (self.server_cpu_us_per_call, self.server_cpu_cores)
        {
            let _ = writeln!(
                out,
                "  server CPU: {per_call:.1} us per call, {cores:.2} cores busy"
            );
        }
        let _ = writeln!(out, "  errors: {}", by_code(&self.errors));
        if self.invalid_fraction > 0.0 {
            let _ = writeln!(
                out,
                "  invalid calls (fraction {}): {}, expected: {}; unexpected outcomes: {}",
                self.invalid_fraction,
                self.invalid_calls,
                by_code(&self.expected_errors),
                by_code(&self.unexpected)
            );
        }
        if self.mode == "open" {
            let _ = writeln!(
                out,
                "  late sends (>1 ms behind schedule): {}",
                self.late_sends
            );
        }
        out
    }
}

/// `CODE n, CODE n`, or `none`.
fn by_code(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let all: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
    all.join(", ")
}
