//! softmaxd against the echo (identity) service: the same plan run against
//! both, alternating when there are several rounds, and the ratio of their
//! median calls/s.

use super::args::BenchArgs;
use super::load;
use super::payload::Payload;
use super::report::Report;
use super::Target;
use serde::Serialize;
use std::fmt::Write;

/// Calls/s of one round, and the servers' CPU time per call when their
/// pids were given.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub softmaxd_calls_per_s: f64,
    pub echo_calls_per_s: f64,
    pub softmaxd_cpu_us_per_call: Option<f64>,
    pub echo_cpu_us_per_call: Option<f64>,
}

/// The comparison's report.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// softmaxd's median round (by calls/s).
    pub softmaxd: Report,
    /// The echo service's median round.
    pub echo: Report,
    /// softmaxd's median calls/s over the echo's.
    pub ratio: f64,
    /// With both pids: the echo's median CPU time per call over softmaxd's,
    /// the same ratio by server cost (above 1: softmaxd costs less).
    pub cpu_ratio: Option<f64>,
    pub rounds: Vec<Round>,
}

impl Comparison {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        let mut out = self.softmaxd.text();
        out.push_str(&self.echo.text());
        let _ = writeln!(
            out,
            "softmaxd / echo calls/s: {:.3} (median of {} round(s))",
            self.ratio,
            self.rounds.len()
        );
        if let Some(r) = self.cpu_ratio {
            let _ = writeln!(
                out,
                "echo / softmaxd server CPU per call: {r:.3} (median of each)"
            );
        }
        out
    }
}

/// The median of the values present, if every round has one.
fn median_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut all: Vec<f64> = values.collect::<Option<_>>()?;
    all.sort_by(f64::total_cmp);
    all.get(all.len().checked_sub(1)? / 2).copied()
}

fn median(mut reports: Vec<Report>) -> Option<Report> {
    reports.sort_by(|a, b| a.calls_per_s.total_cmp(&b.calls_per_s));
    let mid = reports.len().saturating_sub(1) / 2;
    reports.into_iter().nth(mid)
}

/// Runs `args.rounds` rounds of softmaxd then echo.
pub async fn run(
    args: &BenchArgs,
    payload: &Payload,
    softmaxd: &Target,
    echo: &Target,
) -> Result<Comparison, String> {
    // The echo answers with the primary tensor, whatever the RPC.
    let echo_values = args.shape.elements();
    let (mut ours, mut theirs, mut rounds) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let a = load::run(
            &softmaxd.addr,
            args,
            payload,
            payload.response_values,
            args.server_pid,
        )
        .await?;
        let a = Report::new(&softmaxd.label, args, payload.body.len(), &a);
        let b = load::run(&echo.addr, args, payload, echo_values, args.echo_pid).await?;
        let b = Report::new(&echo.label, args, payload.body.len(), &b);
        rounds.push(Round {
            softmaxd_calls_per_s: a.calls_per_s,
            echo_calls_per_s: b.calls_per_s,
            softmaxd_cpu_us_per_call: a.server_cpu_us_per_call,
            echo_cpu_us_per_call: b.server_cpu_us_per_call,
        });
        ours.push(a);
        theirs.push(b);
    }
    let softmaxd = median(ours).ok_or("no round ran")?;
    let echo = median(theirs).ok_or("no round ran")?;
    let cpu_ratio = median_of(rounds.iter().map(|r| r.echo_cpu_us_per_call))
        .zip(median_of(rounds.iter().map(|r| r.softmaxd_cpu_us_per_call)))
        .map(|(echo, ours)| echo / ours.max(1e-9));
    Ok(Comparison {
        cpu_ratio,
        ratio: softmaxd.calls_per_s / echo.calls_per_s.max(1e-9),
        softmaxd,
        echo,
        rounds,
    })
}
