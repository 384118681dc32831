//! softmaxd against the echo (identity) service: the same plan run against
//! both, alternating when there are several rounds, and the ratio of their
//! median calls/s.
//!
//! A shared VM drifts over minutes (on one afternoon the same kernel
//! binary moved between 0.31 and 0.41 ns/value from one run to the next),
//! so the servers take turns going first (softmaxd, echo, then echo,
//! softmaxd, ...): a drift within a round then favours neither.

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
            "softmaxd / echo calls/s: {:.3} (median of {} round(s){})",
            self.ratio,
            self.rounds.len(),
            spread(
                self.rounds
                    .iter()
                    .map(|r| Some(r.softmaxd_calls_per_s / r.echo_calls_per_s))
            )
        );
        if let Some(r) = self.cpu_ratio {
            let per_round = self.rounds.iter().map(|r| {
                r.echo_cpu_us_per_call
                    .zip(r.softmaxd_cpu_us_per_call)
                    .map(|(echo, ours)| echo / ours)
            });
            let _ = writeln!(
                out,
                "echo / softmaxd server CPU per call: {r:.3} (median of each{})",
                spread(per_round)
            );
        }
        out
    }
}

/// `"; rounds LO-HI"`: the range of a ratio over the rounds, when there are
/// several and each has the ratio, so that a reader sees how far to trust
/// the median.
fn spread(ratios: impl Iterator<Item = Option<f64>>) -> String {
    let Some(all) = ratios.collect::<Option<Vec<f64>>>() else {
        return String::new();
    };
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if all.len() < 2 || !lo.is_finite() || !hi.is_finite() {
        return String::new();
    }
    format!("; rounds {lo:.3}-{hi:.3}")
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

/// Runs `args.rounds` rounds of both servers, taking turns going first.
pub async fn run(
    args: &BenchArgs,
    payload: &Payload,
    softmaxd: &Target,
    echo: &Target,
) -> Result<Comparison, String> {
    // The echo answers with the primary tensor, whatever the RPC.
    let echo_values = args.shape.elements();
    let (mut ours, mut theirs, mut rounds) = (Vec::new(), Vec::new(), Vec::new());
    let run_softmaxd = || async {
        let a = load::run(
            &softmaxd.addr,
            args,
            payload,
            payload.response_values,
            args.server_pid,
        )
        .await?;
        Ok::<_, String>(Report::new(
            &softmaxd.label,
            args,
            payload.body.message_len(),
            &a,
        ))
    };
    let run_echo = || async {
        let b = load::run(&echo.addr, args, payload, echo_values, args.echo_pid).await?;
        Ok::<_, String>(Report::new(
            &echo.label,
            args,
            payload.body.message_len(),
            &b,
        ))
    };
    for round in 0..args.rounds {
        let (a, b) = if round % 2 == 0 {
            let a = run_softmaxd().await?;
            (a, run_echo().await?)
        } else {
            let b = run_echo().await?;
            (run_softmaxd().await?, b)
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_range_over_several_complete_rounds() {
        let r = |v: &[Option<f64>]| spread(v.iter().copied());
        assert_eq!(
            r(&[Some(0.9), Some(0.8), Some(1.05)]),
            "; rounds 0.800-1.050"
        );
        assert_eq!(r(&[Some(0.9)]), "", "one round has no spread");
        assert_eq!(r(&[Some(0.9), None]), "", "a round without the ratio");
        assert_eq!(r(&[]), "");
    }
}
