//! The one retry policy every transport uses ([`Tries`]), and when to try again
//! (SPEC §4): exponential backoff with jitter from `initial_backoff`, doubling up to
//! [`MAX_DELAY`], until `max_backoff_duration` has passed since the first attempt. A receiver's
//! `Retry-After` replaces the computed delay; one longer than the time left ends the retries at
//! once instead of sending early.

use super::Result as Outcome;
use crate::sink::{RetryPolicy, Sink};
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

/// One delivery's attempts: every transport sends, then hands the attempt's outcome to
/// [`Tries::settle`], which decides whether and when to try again, waits, logs and counts:
///
/// ```ignore
/// let mut tries = Tries::new(sink, &key);
/// let result = loop {
///     let attempt = send().await;
///     if let Some(done) = tries.settle(attempt, stop).await { break done; }
/// };
/// ```
///
/// A delivery ends when it is delivered, fails for good, runs out of `max_backoff_duration`, or
/// `stop` fires while it waits to try again (then [`Outcome::Abandoned`]: not acknowledged, so
/// sent again after a restart).
pub struct Tries<'a> {
    sink: &'a Sink,
    /// Names the delivery in logs.
    key: &'a str,
    backoff: Backoff,
    attempts: u32,
}

impl<'a> Tries<'a> {
    pub fn new(sink: &'a Sink, key: &'a str) -> Tries<'a> {
        Tries {
            sink,
            key,
            backoff: Backoff::start(sink.retry),
            attempts: 0,
        }
    }

    /// After an attempt: the delivery's outcome, or `None` (after the wait) to try again.
    pub async fn settle(&mut self, attempt: Attempt, stop: &CancellationToken) -> Option<Outcome> {
        self.attempts += 1;
        let attempts = self.attempts;
        let (reason, retry_after) = match attempt {
            Attempt::Delivered => return Some(Outcome::Delivered { attempts }),
            Attempt::Final { reason } => {
                return Some(Outcome::Failed {
                    reason,
                    attempts,
                    excerpt: None,
                });
            }
            Attempt::Retry {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        let wait = match self.backoff.next_delay(retry_after) {
            Ok(wait) => wait,
            Err(why) => {
                return Some(Outcome::Failed {
                    reason: format!("{reason}; {why}"),
                    attempts,
                    excerpt: None,
                });
            }
        };
        tracing::info!(sink = %self.sink.name, key = %self.key, attempt = attempts, retry_in = ?wait, "{reason}; will retry");
        self.sink.metrics.retries.inc();
        tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = stop.cancelled() => Some(Outcome::Abandoned),
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
