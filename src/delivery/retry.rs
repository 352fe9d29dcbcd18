//! The one attempt-and-retry loop every transport uses ([`until_done`]), and when to try again
//! (SPEC §4): exponential backoff with jitter from `initial_backoff`, doubling up to
//! [`MAX_DELAY`], until `max_backoff_duration` has passed since the first attempt. A receiver's
//! `Retry-After` replaces the computed delay; one longer than the time left ends the retries at
//! once instead of sending early.

use super::Result as Outcome;
use crate::sink::{RetryPolicy, Sink};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How one attempt ended, whatever the transport.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    /// Worth another try, after at least `retry_after` if the receiver said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Not worth another try (a 4xx): dead-lettered at once.
    Final {
        reason: String,
    },
}

/// Runs `attempt` until it delivers, fails for good, runs out of `max_backoff_duration`, or `stop`
/// fires while waiting to try again (then [`Outcome::Abandoned`]: not acknowledged, so sent again
/// after a restart). `key` names the delivery in logs.
pub async fn until_done<F, Fut>(
    sink: &Sink,
    key: &str,
    stop: &CancellationToken,
    mut attempt: F,
) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut backoff = Backoff::start(sink.retry);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (reason, retry_after) = match attempt().await {
            Attempt::Delivered => return Outcome::Delivered { attempts },
            Attempt::Final { reason } => {
                return Outcome::Failed {
                    reason,
                    attempts,
                    excerpt: None,
                };
            }
            Attempt::Retry {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        let wait = match backoff.next_delay(retry_after) {
            Ok(wait) => wait,
            Err(why) => {
                return Outcome::Failed {
                    reason: format!("{reason}; {why}"),
                    attempts,
                    excerpt: None,
                };
            }
        };
        tracing::info!(sink = %sink.name, key = %key, attempt = attempts, retry_in = ?wait, "{reason}; will retry");
        sink.metrics.retries.inc();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Outcome::Abandoned,
        }
    }
}

/// No single wait is longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

pub struct Backoff {
    policy: RetryPolicy,
    deadline: Instant,
    next: Duration,
}

impl Backoff {
    pub fn start(policy: RetryPolicy) -> Backoff {
        Backoff {
            policy,
            deadline: Instant::now() + policy.max_elapsed,
            next: policy.initial_backoff,
        }
    }

    /// How long to wait before the next attempt, or `Err(why not)` when time is up.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "gave up after max_backoff_duration {}",
                humantime::format_duration(self.policy.max_elapsed)
            ));
        }
        if let Some(wait) = retry_after {
            if wait > left {
                return Err(format!(
                    "server asked to retry after {}s, beyond max_backoff_duration",
                    wait.as_secs()
                ));
            }
            return Ok(wait);
        }
        // Equal jitter: half the delay fixed, half random.
        let base = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        let half = base / 2;
        let jittered = half + half.mul_f64(fastrand::f64());
        Ok(jittered.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(initial_ms),
            max_elapsed: Duration::from_millis(max_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delays_grow_with_jitter_and_stop_at_the_deadline() {
        let mut b = Backoff::start(policy(100, 1000));
        let first = b.next_delay(None).unwrap();
        let second = b.next_delay(None).unwrap();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        assert!(
            second >= Duration::from_millis(100) && second <= Duration::from_millis(200),
            "{second:?}"
        );
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(
            b.next_delay(None).unwrap() <= Duration::from_millis(100),
            "never past the deadline"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.next_delay(None).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_or_ends_retrying() {
        let mut b = Backoff::start(policy(100, 10_000));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3))).unwrap(),
            Duration::from_secs(3)
        );
        assert!(
            b.next_delay(Some(Duration::from_secs(60)))
                .unwrap_err()
                .contains("retry after 60s")
        );
    }
}
