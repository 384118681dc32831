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

/// Calls/s of one round.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub softmaxd_calls_per_s: f64,
    pub echo_calls_per_s: f64,
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
        out
    }
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
        let a = load::run(&softmaxd.addr, args, payload, payload.response_values).await?;
        let a = Report::new(&softmaxd.label, args, payload.body.len(), &a);
        let b = load::run(&echo.addr, args, payload, echo_values).await?;
        let b = Report::new(&echo.label, args, payload.body.len(), &b);
        rounds.push(Round {
            softmaxd_calls_per_s: a.calls_per_s,
            echo_calls_per_s: b.calls_per_s,
        });
        ours.push(a);
        theirs.push(b);
    }
    let softmaxd = median(ours).ok_or("no round ran")?;
    let echo = median(theirs).ok_or("no round ran")?;
    Ok(Comparison {
        ratio: softmaxd.calls_per_s / echo.calls_per_s.max(1e-9),
        softmaxd,
        echo,
        rounds,
    })
}
