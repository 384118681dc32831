//! Drives the load: `concurrency` workers over `connections` channels, in
//! closed loop (send when the last answer came) or on a fixed schedule
//! (open loop), after a warm-up, until the duration or request count is
//! reached.

use super::args::BenchArgs;
use super::caller::{connect, Caller};
use super::check;
use super::codec::Prefixed;
use super::cpu;
use super::payload::Payload;
use super::stats::{code_name, Stats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A send this far behind its schedule counts as late (fixed-rate mode).
const LATE: Duration = Duration::from_millis(1);

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Merged measurements of all workers.
    pub stats: Stats,
    /// From the end of the warm-up to the last answer.
    pub elapsed: Duration,
    /// The server's CPU time over `elapsed`, when its pid was given.
    pub server_cpu: Option<Duration>,
}

/// The schedule and bounds every worker follows.
struct Shared {
    start: Instant,
    warmup_end: Instant,
    deadline: Instant,
    timeout: Duration,
    rate: Option<f64>,
    concurrency: u64,
    requests: Option<u64>,
    tickets: AtomicU64,
    body: Prefixed,
    /// The invalid variants of `body`, and the fraction of calls to spoil.
    invalid: Vec<Prefixed>,
    invalid_fraction: f64,
    /// Calls started, warm-up included: numbers them for the invalid ones.
    started: AtomicU64,
}

impl Shared {
    /// False once the measured-call budget is spent.
    fn take_ticket(&self) -> bool {
        match self.requests {
            None => true,
            Some(max) => self.tickets.fetch_add(1, Ordering::Relaxed) < max,
        }
    }

    /// The request of the next call, and whether it is an invalid one.
    /// Call `i` is invalid when `floor((i + 1) f)` steps up at it, which
    /// spreads invalid calls evenly at the fraction `f`; they take the
    /// invalid variants in turn.
    fn next_body(&self) -> (&Prefixed, bool) {
        if self.invalid.is_empty() {
            return (&self.body, false);
        }
        let i = self.started.fetch_add(1, Ordering::Relaxed) as f64;
        let f = self.invalid_fraction;
        let (before, after) = ((i * f).floor(), ((i + 1.0) * f).floor());
        if after > before {
            let which = before as usize % self.invalid.len();
            if let Some(body) = self.invalid.get(which) {
                return (body, true);
            }
        }
        (&self.body, false)
    }

    /// When the `n`-th call of worker `index` is due (fixed rate): the
    /// workers' schedules interleave into one even schedule.
    fn due(&self, rate: f64, index: u64, n: u64) -> Instant {
        let slot = n.saturating_mul(self.concurrency).saturating_add(index);
        let offset = Duration::try_from_secs_f64(slot as f64 / rate).unwrap_or(Duration::MAX);
        self.start.checked_add(offset).unwrap_or(self.deadline)
    }
}

/// Loads the server at `addr` with `payload`; `want` is how many values a
/// correct answer holds (checked on one call before the run).
pub async fn run(
    addr: &str,
    args: &BenchArgs,
    payload: &Payload,
    want: u64,
    server_pid: Option<u32>,
) -> Result<Outcome, String> {
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(addr, args).await?);
    }
    let first = channels.first().cloned().ok_or("no connection")?;
    let mut probe = Caller::new(first, args.rpc, true);
    let reply = tokio::time::timeout(args.call_timeout(), probe.call(&payload.body))
        .await
        .map_err(|_| format!("{addr}: the first call timed out"))?
        .map_err(|s| {
            format!(
                "{addr}: the first call failed: {} {}",
                code_name(s.code()),
                s.message()
            )
        })?;
    check::answer(args.rpc, reply.body.unwrap_or_default(), want)
        .map_err(|e| format!("{addr}: {e}"))?;
    drop(probe);

    let start = Instant::now();
    let warmup_end = start + args.warmup_for();
    let shared = Arc::new(Shared {
        start,
        warmup_end,
        deadline: warmup_end + args.measure_for(),
        timeout: args.call_timeout(),
        rate: args.rate,
        concurrency: u64::from(args.concurrency),
        requests: args.requests,
        tickets: AtomicU64::new(0),
        body: payload.body.clone(),
        invalid: payload.invalid.iter().map(|(_, b)| b.clone()).collect(),
        invalid_fraction: args.invalid_fraction,
        started: AtomicU64::new(0),
    });
    let workers: Vec<_> = channels
        .iter()
        .cycle()
        .take(args.concurrency as usize)
        .enumerate()
        .map(|(i, ch)| {
            let caller = Caller::new(ch.clone(), args.rpc, false);
            tokio::spawn(worker(caller, i as u64, Arc::clone(&shared)))
        })
        .collect();
    // Read when the measured part starts, on a task of its own so that no
    // worker waits for it.
    let cpu_at_start = server_pid.map(|pid| {
        let read = tokio::spawn(async move {
            tokio::time::sleep_until(warmup_end).await;
            cpu::used(pid)
        });
        (pid, read)
    });
    let mut stats = Stats::new();
    for w in futures::future::join_all(workers).await {
        stats.merge(&w.map_err(|e| format!("a load worker failed: {e}"))?);
    }
    let elapsed = Instant::now().saturating_duration_since(warmup_end);
    let server_cpu = match cpu_at_start {
        Some((pid, start)) => {
            let start = start
                .await
                .map_err(|e| format!("reading the server's CPU time: {e}"))??;
            Some(cpu::used(pid)?.saturating_sub(start))
        }
        None => None,
    };
    Ok(Outcome {
        stats,
        elapsed,
        server_cpu,
    })
}

async fn worker(mut caller: Caller, index: u64, shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::new();
    for n in 0u64.. {
        let intended = match shared.rate {
            Some(rate) => shared.due(rate, index, n),
            None => Instant::now(),
        };
        if intended >= shared.deadline {
            break;
        }
        let measured = intended >= shared.warmup_end;
        if measured && !shared.take_ticket() {
            break;
        }
        if shared.rate.is_some() {
            let now = Instant::now();
            if now < intended {
                tokio::time::sleep_until(intended).await;
            } else if measured && now - intended > LATE {
                stats.late += 1;
            }
        }
        let (body, invalid) = shared.next_body();
        let sent = body.message_len();
        let result = tokio::time::timeout(shared.timeout, caller.call(body)).await;
        // Latency from the scheduled send, not the actual one: a slow answer
        // delays later sends, and that wait is part of what callers see.
        let latency = Instant::now().saturating_duration_since(intended);
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                caller.reset();
                Err(tonic::Status::deadline_exceeded("abandoned at --timeout"))
            }
        };
        match result {
            _ if !measured => {}
            Ok(_) if invalid => stats.invalid_call(tonic::Code::Ok, sent),
            Err(status) if invalid => stats.invalid_call(status.code(), sent),
            Ok(reply) => stats.success(latency, sent, reply.len),
            Err(status) => stats.failure(status.code(), sent),
        }
    }
    stats
}
