//! Bounded retries of calls that fail with UNAVAILABLE, with jittered
//! exponential backoff: tonic has no retry policy of its own.

use super::ClientError;
use std::future::Future;
use std::time::Duration;
use tonic::Code;
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;

/// When a call is tried again. Only UNAVAILABLE is retried: the server was
/// unreachable, restarting or draining, so it did no work for the call, and
/// every softmaxd RPC is a pure function of its request anyway. Other codes
/// (RESOURCE_EXHAUSTED included, so retries never add to an overload) are
/// returned at once. The same policy as the Python and Node clients'
/// service config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per call, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles with each retry.
    pub initial_backoff: Duration,
    /// Longest wait between two tries (jitter included).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// One try per call.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Runs `attempt` until it succeeds, fails with another code than
    /// UNAVAILABLE, or `max_attempts` tries have been made.
    pub(super) async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        // Up to 100% jitter on each wait spreads out clients that lost the
        // same server at the same moment.
        let mut backoff = ExponentialBackoffMaker::new(
            self.initial_backoff.min(self.max_backoff),
            self.max_backoff,
            1.0,
            HasherRng::default(),
        )
        .ok()
        .map(|mut maker| maker.make_backoff());
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(e) if e.code() == Code::Unavailable && tries < self.max_attempts => {
                    tries += 1;
                    if let Some(b) = backoff.as_mut() {
                        b.next_backoff().await;
                    }
                }
                result => return result,
            }
        }
    }
}
