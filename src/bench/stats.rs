//! What one load worker records: latencies in an HDR histogram, bytes, and
//! errors by gRPC status code; merged over workers at the end.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Three significant digits: 0.1% resolution at any latency.
const SIGFIGS: u8 = 3;

/// Measurements of one worker, or of a whole run once merged.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of successful calls, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by status code name.
    pub errors: BTreeMap<String, u64>,
    /// Invalid calls (`--invalid-fraction`) made.
    pub invalid: u64,
    /// Invalid calls that got the status they must get, by code name.
    pub expected: BTreeMap<String, u64>,
    /// Every other outcome but a valid call's OK, by code name (`OK` for an
    /// invalid call that was answered).
    pub unexpected: BTreeMap<String, u64>,
    /// Request bytes sent by measured calls.
    pub sent_bytes: u64,
    /// Response bytes received by successful measured calls.
    pub received_bytes: u64,
    /// Fixed-rate mode: calls sent after their scheduled time.
    pub late: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Self {
        Self {
            // Auto-resizing, so a slow outlier is recorded, never dropped.
            latency_ns: Histogram::new(SIGFIGS)
                .expect("3 significant figures is a valid precision"),
            ok: 0,
            errors: BTreeMap::new(),
            invalid: 0,
            expected: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            sent_bytes: 0,
            received_bytes: 0,
            late: 0,
        }
    }

    /// Records a successful call.
    pub fn success(&mut self, latency: Duration, sent: usize, received: usize) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // Recording only fails past the histogram's range; it auto-resizes.
        let _ = self.latency_ns.record(ns);
        self.ok += 1;
        self.sent_bytes += sent as u64;
        self.received_bytes += received as u64;
    }

    /// Records a failed valid call.
    pub fn failure(&mut self, code: tonic::Code, sent: usize) {
        *self.errors.entry(code_name(code)).or_default() += 1;
        *self.unexpected.entry(code_name(code)).or_default() += 1;
        self.sent_bytes += sent as u64;
    }

    /// Records how an invalid call ended (`Ok` if it was answered): only
    /// INVALID_ARGUMENT is expected.
    pub fn invalid_call(&mut self, code: tonic::Code, sent: usize) {
        self.invalid += 1;
        self.sent_bytes += sent as u64;
        if code != tonic::Code::Ok {
            *self.errors.entry(code_name(code)).or_default() += 1;
        }
        let by_code = if code == tonic::Code::InvalidArgument {
            &mut self.expected
        } else {
            &mut self.unexpected
        };
        *by_code.entry(code_name(code)).or_default() += 1;
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: &Stats) {
        let _ = self.latency_ns.add(&other.latency_ns);
        self.ok += other.ok;
        for (mine, theirs) in [
            (&mut self.errors, &other.errors),
            (&mut self.expected, &other.expected),
            (&mut self.unexpected, &other.unexpected),
        ] {
            for (code, n) in theirs {
                *mine.entry(code.clone()).or_default() += n;
            }
        }
        self.invalid += other.invalid;
        self.sent_bytes += other.sent_bytes;
        self.received_bytes += other.received_bytes;
        self.late += other.late;
    }

    /// Calls that did not end as they should, in total.
    pub fn failed(&self) -> u64 {
        self.unexpected.values().sum()
    }
}

/// The canonical gRPC name of a status code, e.g. `RESOURCE_EXHAUSTED`.
pub fn code_name(code: tonic::Code) -> String {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
    .to_string()
}
