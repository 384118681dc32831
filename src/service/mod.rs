//! The service layer: validates and converts requests, picks inline or pool
//! execution by size, calls the kernel and builds responses.

mod backward;
pub mod buffers;
mod call;
mod cross_entropy;
mod echo;
mod error;
mod forward;
mod framed;
mod handlers;
mod jacobian;
mod reuse;
mod run;
pub mod tensor;
mod validate;

pub use echo::Echo;
pub use error::Error;
pub use framed::{declared, prefix, Encoded, Reply, PREFIX};
pub use handlers::ForwardAnswers;
pub use jacobian::JacobianAnswers;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Limits and tuning the service applies to every call.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Elements per request from which work runs on the rayon pool.
    pub parallel_threshold: usize,
    /// Target size of one JacobianStream message, in bytes.
    pub stream_chunk_bytes: usize,
    /// Calls served at once; more fail fast with RESOURCE_EXHAUSTED (0: no limit).
    pub max_concurrent_requests: usize,
    /// Tensor bytes (inputs and outputs) held by calls at once; a call that
    /// would exceed it fails with RESOURCE_EXHAUSTED (0: no limit).
    pub max_inflight_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            parallel_threshold: 1 << 20,
            stream_chunk_bytes: 4 << 20,
            max_concurrent_requests: 0,
            max_inflight_bytes: 0,
        }
    }
}

/// The `softmax.v1.SoftmaxService` implementation.
#[derive(Clone, Debug)]
pub struct Softmax {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    bytes: AtomicUsize,
}

/// Bytes of the in-flight budget held by one call until it has answered.
#[derive(Debug)]
pub(crate) struct Reservation(Arc<Inner>, usize);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.bytes.fetch_sub(self.1, Ordering::SeqCst);
    }
}

/// Held by every admitted call until it has answered: what draining waits for.
#[derive(Debug)]
pub(crate) struct Admission(Arc<Inner>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Softmax {
    /// A service applying `config`.
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                draining: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
            }),
        }
    }

    /// From now on new calls are refused with UNAVAILABLE; calls already
    /// running finish.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Calls admitted and not yet answered (streams count until they end).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once draining has started and no call is in flight.
    pub async fn idle(&self) {
        while self.in_flight() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Admits a new call, unless the server is draining. Counting first and
    /// checking second means `idle` never misses a call that got in.
    fn admit(&self) -> Result<Admission, Error> {
        let now = self.inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let admission = Admission(Arc::clone(&self.inner));
        let limit = self.config().max_concurrent_requests;
        if self.inner.draining.load(Ordering::SeqCst) {
            Err(Error::ShuttingDown)
        } else if limit > 0 && now > limit {
            Err(Error::TooLarge(format!(
                "server busy: {limit} calls already in flight (--max-concurrent-requests); \
                 retry with backoff"
            )))
        } else {
            Ok(admission)
        }
    }

    /// Takes `bytes` from the in-flight byte budget for the rest of a call,
    /// or fails fast when the budget cannot hold them.
    fn reserve(&self, bytes: usize) -> Result<Reservation, Error> {
        let limit = self.config().max_inflight_bytes;
        let held = self.inner.bytes.fetch_add(bytes, Ordering::SeqCst);
        let reservation = Reservation(Arc::clone(&self.inner), bytes);
        if limit > 0 && held.saturating_add(bytes) > limit {
            return Err(Error::TooLarge(format!(
                "server busy: this call needs {bytes} bytes of tensor memory and {held} of the \
                 {limit}-byte budget are in use (--max-inflight-bytes); retry with backoff or \
                 send fewer vectors per call"
            )));
        }
        Ok(reservation)
    }

    /// Fails when a response of `elements` values of `width` bytes would not
    /// fit in one message.
    fn check_response(&self, what: &str, elements: usize, width: usize) -> Result<(), Error> {
        let limit = self.config().max_message_bytes;
        // Field tags, lengths and shape take well under 1 KiB.
        let bytes = elements
            .checked_mul(width)
            .and_then(|b| b.checked_add(1024));
        match bytes {
            Some(b) if b <= limit => Ok(()),
            _ => Err(Error::TooLarge(format!(
                "{what}: the response would hold {elements} values ({} bytes), over the \
                 {limit}-byte message limit; send fewer vectors per call{}",
                elements.saturating_mul(width),
                if what == "jacobian" {
                    " or use JacobianStream"
                } else {
                    ""
                }
            ))),
        }
    }
}
