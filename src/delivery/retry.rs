//! The one retry policy every transport uses ([`Tries`]), and when to try again (SPEC §4):
//! exponential backoff with jitter from `initial_backoff`, doubling up to [`MAX_DELAY`], or the
//! sink's explicit `retry_schedule`, until `max_backoff_duration` has passed since the first
//! attempt. A refusal is tried again only if its status is in `retry_on`. A receiver's
//! `Retry-After`, cut to `max_retry_after`, is the least delay; one that reaches past
//! `max_backoff_duration` is still waited for, once, and the attempt after it is the last.

use super::Result as Outcome;
use crate::sink::{RetryPolicy, Sink};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How one attempt ended, whatever the transport.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    /// The receiver answered with a failure status: tried again if the sink's `retry_on` lists
    /// it, after at least `retry_after` if the receiver said so.
    Refused {
        status: u16,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer (connection error, timeout, an answer cut short, a failed write): always worth
    /// another try.
    Retry {
        reason: String,
    },
    /// Not worth another try now, whatever the policy. `retryable`: the receiver may take it
    /// later (a NATS subject whose stream is not there yet), so its dead letter is replayed by
    /// itself once the sink delivers again.
    Final {
        reason: String,
        retryable: bool,
    },
}

impl Attempt {
    /// The attempt with the sink's secrets masked in its reason: whatever a transport quotes of
    /// its receiver passes here before it is logged, shown or put in a dead letter.
    fn scrubbed(self, scrubber: &crate::config::Scrubber) -> Attempt {
        match self {
            Attempt::Delivered => Attempt::Delivered,
            Attempt::Refused {
                status,
                reason,
                retry_after,
            } => Attempt::Refused {
                status,
                reason: scrubber.scrub(&reason),
                retry_after,
            },
            Attempt::Retry { reason } => Attempt::Retry {
                reason: scrubber.scrub(&reason),
            },
            Attempt::Final { reason, retryable } => Attempt::Final {
                reason: scrubber.scrub(&reason),
                retryable,
            },
        }
    }
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
    backoff: Backoff<'a>,
    attempts: u32,
    /// The receiver's last answer.
    status: Option<u16>,
}

impl<'a> Tries<'a> {
    pub fn new(sink: &'a Sink, key: &'a str) -> Tries<'a> {
        Tries {
            sink,
            key,
            backoff: Backoff::start(&sink.retry),
            attempts: 0,
            status: None,
        }
    }

    /// After an attempt: the delivery's outcome, or `None` (after the wait) to try again.
    pub async fn settle(&mut self, attempt: Attempt, stop: &CancellationToken) -> Option<Outcome> {
        self.attempts += 1;
        let attempts = self.attempts;
        let (reason, retry_after) = match attempt.scrubbed(&self.sink.scrubber) {
            Attempt::Delivered => return Some(Outcome::Delivered { attempts }),
            Attempt::Final { reason, retryable } => {
                return Some(Outcome::Failed {
                    reason,
                    attempts,
                    status: self.status,
                    excerpt: None,
                    retryable,
                });
            }
            Attempt::Refused {
                status,
                reason,
                retry_after,
            } => {
                self.status = Some(status);
                if !self.sink.retry.retry_on.retries(status) {
                    return Some(Outcome::Failed {
                        reason: format!("{reason} (not in retry_on)"),
                        attempts,
                        status: self.status,
                        excerpt: None,
                        retryable: false,
                    });
                }
                (reason, retry_after)
            }
            Attempt::Retry { reason } => (reason, None),
        };
        if let Some(asked) = retry_after
            && asked > self.sink.retry.max_retry_after
        {
            tracing::warn!(sink = %self.sink.name, key = %self.key, "the receiver asked to wait {}; waiting max_retry_after ({}) instead", humantime::format_duration(asked), humantime::format_duration(self.sink.retry.max_retry_after));
        }
        let wait = match self.backoff.next_delay(retry_after) {
            Ok(wait) => wait,
            Err(why) => {
                return Some(Outcome::Failed {
                    reason: format!("{reason}; {why}"),
                    attempts,
                    status: self.status,
                    excerpt: None,
                    retryable: true,
                });
            }
        };
        tracing::debug!(sink = %self.sink.name, key = %self.key, attempt = attempts, retry_in = ?wait, "{reason}; will retry");
        self.sink.metrics.retries.inc();
        self.sink.metrics.state.retrying(&reason, wait);
        tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = stop.cancelled() => Some(Outcome::Abandoned),
        }
    }
}

/// No single wait is longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

pub struct Backoff<'p> {
    policy: &'p RetryPolicy,
    deadline: Instant,
    /// The next exponential delay.
    next: Duration,
    /// Retries done, for the explicit schedule.
    step: usize,
}

impl<'p> Backoff<'p> {
    pub fn start(policy: &'p RetryPolicy) -> Backoff<'p> {
        Backoff {
            policy,
            deadline: Instant::now() + policy.max_elapsed,
            next: policy.initial_backoff,
            step: 0,
        }
    }

    /// How long to wait before the next attempt, or `Err(why not)` when there is none.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Result<Duration, String> {
        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(format!(
                "gave up after max_backoff_duration {}",
                humantime::format_duration(self.policy.max_elapsed)
            ));
        }
        let planned = match &self.policy.schedule {
            Some(schedule) => {
                let Some(wait) = schedule.get(self.step) else {
                    return Err(format!(
                        "retry_schedule ran out after {} retries",
                        schedule.len()
                    ));
                };
                self.step += 1;
                *wait
            }
            None => {
                // Equal jitter: half the delay fixed, half random.
                let base = self.next;
                self.next = (self.next * 2).min(MAX_DELAY);
                let half = base / 2;
                half + half.mul_f64(fastrand::f64())
            }
        };
        match retry_after.map(|asked| asked.min(self.policy.max_retry_after)) {
            // At least what the receiver asked (a `Retry-After: 0` never means "at once", over
            // and over), honoured even past the deadline, once: the attempt after it is the last.
            Some(asked) if asked > planned.min(left) => {
                if asked >= left {
                    self.deadline = now;
                }
                Ok(asked)
            }
            _ => Ok(planned.min(left)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(initial_ms),
            max_elapsed: Duration::from_millis(max_ms),
            retry_on: Default::default(),
            schedule: None,
            max_retry_after: Duration::from_secs(300),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delays_grow_with_jitter_and_stop_at_the_deadline() {
        let p = policy(100, 1000);
        let mut b = Backoff::start(&p);
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
    async fn retry_after_is_capped_and_honoured_once_past_the_deadline() {
        let mut p = policy(100, 10_000);
        p.max_retry_after = Duration::from_secs(30);
        let mut b = Backoff::start(&p);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3))).unwrap(),
            Duration::from_secs(3)
        );
        assert!(
            b.next_delay(Some(Duration::ZERO)).unwrap() >= Duration::from_millis(100),
            "Retry-After: 0 is not a reason to skip the backoff"
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3600))).unwrap(),
            Duration::from_secs(30),
            "cut to max_retry_after, and waited although it passes the deadline"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.next_delay(None).is_err(), "that was the last attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn an_explicit_schedule_is_followed_then_runs_out() {
        let mut p = policy(100, 600_000);
        p.schedule = Some(vec![Duration::from_secs(1), Duration::from_secs(5)]);
        let mut b = Backoff::start(&p);
        assert_eq!(b.next_delay(None).unwrap(), Duration::from_secs(1));
        assert_eq!(b.next_delay(None).unwrap(), Duration::from_secs(5));
        assert!(
            b.next_delay(None)
                .unwrap_err()
                .contains("retry_schedule ran out")
        );
    }
}
