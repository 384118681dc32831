//! The `softmaxd-bench` load tool: builds one payload, loads a server with
//! it, and reports throughput and latency, optionally against the echo
//! service's as the transport's ceiling.

pub mod args;
mod caller;
mod check;
mod codec;
pub mod compare;
mod cpu;
pub mod in_process;
mod load;
mod payload;
pub mod report;
mod stats;
mod unary;

pub use args::BenchArgs;

use serde::Serialize;

/// A server to load, and the name it has in the report.
#[derive(Clone, Debug)]
pub struct Target {
    pub label: String,
    pub addr: String,
}

/// What a run reports: one server, or softmaxd against the echo service.
// One value per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Output {
    Single(report::Report),
    Compare(compare::Comparison),
}

impl Output {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        match self {
            Output::Single(r) => r.text(),
            Output::Compare(c) => c.text(),
        }
    }

    /// Calls that failed, over every server and round reported.
    pub fn failed(&self) -> u64 {
        match self {
            Output::Single(r) => r.failed(),
            Output::Compare(c) => c.softmaxd.failed() + c.echo.failed(),
        }
    }
}

/// Loads `target`, and `echo` too when given, as `args` says.
pub async fn execute(
    args: &BenchArgs,
    target: &Target,
    echo: Option<&Target>,
) -> Result<Output, String> {
    let payload = payload::build(args)?;
    match echo {
        None => {
            let outcome = load::run(
                &target.addr,
                args,
                &payload,
                payload.response_values,
                args.server_pid,
            )
            .await?;
            Ok(Output::Single(report::Report::new(
                &target.label,
                args,
                payload.body.message_len(),
                &outcome,
            )))
        }
        Some(echo) => Ok(Output::Compare(
            compare::run(args, &payload, target, echo).await?,
        )),
    }
}
