//! The one retry policy every transport uses ([`Tries`]), and when to try again (SPEC §4):
//! exponential backoff with jitter from `initial_backoff`, doubling up to [`MAX_DELAY`], or the
//! sink's explicit `retry_schedule`, until `max_backoff_duration` has passed since the first
//! attempt. A refusal is tried again only if its status is in `retry_on`. A receiver's
//! `Retry-After`, cut to `max_retry_after`, is the least delay; one that reaches past
//! `max_backoff_duration` is still waited for, once, and the attempt after it is the last.

use super::Result as Outcome;
use super::backlog::Backlog;
use crate::sink::{RetryPolicy, Sink};
use crate::status::Condition;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How one attempt ended, whatever the transport.
#[derive(Debug)]
pub enum Attempt {
    /// Taken; `status` is the receiver's HTTP status, for transports that have one.
    Delivered { status: Option<u16> },
    /// The receiver answered with a failure status: tried again if the sink's `retry_on` lists
    /// it, after at least `retry_after` if the receiver said so.
    Refused {
        status: u16,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// No answer (connection error, timeout, an answer cut short, a failed write): always worth
    /// another try.
    Retry { reason: String },
    /// Not worth another try now, whatever the policy. `retryable`: the receiver may take it
    /// later (a NATS subject whose stream is not there yet), so its dead letter is replayed by
    /// itself once the sink delivers again.
    Final { reason: String, retryable: bool },
}

impl Attempt {
    /// The attempt with the sink's secrets masked in its reason: whatever a transport quotes of
    /// its receiver passes here before it is logged, shown or put in a dead letter.
    fn scrubbed(self, scrubber: &crate::config::Scrubber) -> Attempt {
        self.with_reason(|reason| scrubber.scrub(reason))
    }

    /// The attempt with its reason, if it has one, rewritten by `rewrite`.
    pub fn with_reason(self, rewrite: impl Fn(&str) -> String) -> Attempt {
        match self {
            Attempt::Delivered { status } => Attempt::Delivered { status },
            Attempt::Refused {
                status,
                reason,
                retry_after,
            } => Attempt::Refused {
                status,
                reason: rewrite(&reason),
                retry_after,
            },
            Attempt::Retry { reason } => Attempt::Retry {
                reason: rewrite(&reason),
            },
            Attempt::Final { reason, retryable } => Attempt::Final {
                reason: rewrite(&reason),
                retryable,
            },
        }
    }
}

/// How long a delivery keeps trying, and where it goes when it stops.
#[derive(Clone, Copy)]
pub enum Patience<'a> {
    /// Until `max_backoff_duration` has passed; then a retryable failure (a replay, whose dead
    /// letter stays where it is).
    Bounded,
    /// The live path: the first failure that is worth another try hands the delivery to the
    /// sink's backlog at once ([`Outcome::Deferred`]), and so does a stall (see
    /// [`Backlog::stalled`]).
    Live(&'a Backlog),
    /// Draining the backlog: tried until it is answered, probing at most every
    /// `max_probe_interval` once the sink is down. A backlog that overflows cuts the wait short:
    /// the delivery is dead-lettered (retryable) to make room. `tried`: the attempts made before
    /// it was spilled, which its count and its backoff go on from.
    Drain { backlog: &'a Backlog, tried: u32 },
}

/// One delivery's attempts: every transport sends, then hands the attempt's outcome to
/// [`Tries::settle`], which decides whether and when to try again, waits, logs and counts:
///
/// ```ignore
/// let mut tries = Tries::new(sink, &key, patience, records);
/// let result = loop {
///     let attempt = send().await;
///     if let Some(done) = tries.settle(attempt, stop).await { break done; }
/// };
/// ```
///
/// A delivery ends when it is delivered, fails for good, is handed to the backlog, runs out of
/// patience, or `stop` fires while it waits to try again (then [`Outcome::Abandoned`]: not
/// acknowledged, so sent again after a restart).
pub struct Tries<'a> {
    sink: &'a Sink,
    /// Names the delivery in logs.
    key: &'a str,
    backoff: Backoff<'a>,
    attempts: u32,
    /// The receiver's last answer.
    status: Option<u16>,
    patience: Patience<'a>,
    /// What it carries (the attempt log names their `type:action`).
    records: &'a [std::sync::Arc<crate::record::Record>],
    /// When the attempt being made started (after the last wait).
    started: Instant,
}

impl<'a> Tries<'a> {
    pub fn new(
        sink: &'a Sink,
        key: &'a str,
        patience: Patience<'a>,
        records: &'a [std::sync::Arc<crate::record::Record>],
    ) -> Tries<'a> {
        let mut backoff = Backoff::start(&sink.retry);
        let attempts = match patience {
            Patience::Drain { tried, .. } => tried,
            _ => 0,
        };
        for _ in 0..attempts {
            backoff.skip();
        }
        Tries {
            sink,
            key,
            backoff,
            attempts,
            status: None,
            patience,
            records,
            started: Instant::now(),
        }
    }

    /// Puts the attempt on record (`attempts.keep`), as the status page and `flagtail attempts`
    /// show it.
    fn record(&mut self, attempt: &Attempt) {
        if !crate::attempt_log::enabled() {
            return;
        }
        let (status, error) = match attempt {
            Attempt::Delivered { status } => (*status, None),
            Attempt::Refused { status, reason, .. } => (Some(*status), Some(clipped(reason))),
            Attempt::Retry { reason } | Attempt::Final { reason, .. } => {
                (None, Some(clipped(reason)))
            }
        };
        let took = self.started.elapsed();
        crate::attempt_log::record(&crate::attempt_log::AttemptLine {
            time: crate::attempt_log::Time::Now,
            sink: &self.sink.name,
            key: self.key,
            event: &event_of(self.records),
            attempt: self.attempts,
            status,
            error: error.as_deref(),
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// After an attempt: the delivery's outcome, or `None` (after the wait) to try again.
    pub async fn settle(&mut self, attempt: Attempt, stop: &CancellationToken) -> Option<Outcome> {
        self.attempts += 1;
        if !matches!(attempt, Attempt::Delivered { .. }) {
            self.sink.metrics.state.attempt_lost();
        }
        let attempt = attempt.scrubbed(&self.sink.scrubber);
        self.record(&attempt);
        let (reason, retry_after) = match self.transient(attempt) {
            Ok(done) => return Some(done),
            Err(failure) => failure,
        };
        self.sink.metrics.retries.inc();
        self.failed_again(&reason);
        if let Some(asked) = retry_after
            && asked > self.sink.retry.max_retry_after
        {
            tracing::warn!(sink = %self.sink.name, key = %self.key, "the receiver asked to wait {}; waiting max_retry_after ({}) instead", humantime::format_duration(asked), humantime::format_duration(self.sink.retry.max_retry_after));
        }
        let (wait, backlog) = match self.patience {
            Patience::Live(_) => {
                let wait = self.backoff.next_probe(retry_after, false);
                tracing::debug!(sink = %self.sink.name, key = %self.key, attempt = self.attempts, retry_in = ?wait, "{reason}; will retry from the sink's backlog");
                self.sink.metrics.state.retrying(&reason, wait);
                let attempts = self.attempts;
                return Some(Outcome::Deferred {
                    reason,
                    attempts,
                    wait,
                });
            }
            Patience::Bounded => match self.backoff.next_delay(retry_after) {
                Ok(wait) => (wait, None),
                Err(why) => return Some(self.failed(format!("{reason}; {why}"), true)),
            },
            Patience::Drain { backlog, .. } => {
                let down = matches!(self.sink.metrics.state.condition(), Condition::Down { .. });
                (self.backoff.next_probe(retry_after, down), Some(backlog))
            }
        };
        tracing::debug!(sink = %self.sink.name, key = %self.key, attempt = self.attempts, retry_in = ?wait, "{reason}; will retry");
        self.sink.metrics.state.retrying(&reason, wait);
        let overflow = async {
            match backlog {
                Some(b) => b.overflowing().await,
                None => std::future::pending().await,
            }
        };
        let waited = tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = stop.cancelled() => Some(Outcome::Abandoned),
            _ = overflow => Some(self.failed(format!("{reason}; {}", Backlog::OVERFLOW), true)),
        };
        self.started = Instant::now();
        waited
    }

    /// The outcome of an attempt that needs no other, or why another is worth it (and the least
    /// wait the receiver asked for).
    fn transient(&mut self, attempt: Attempt) -> Result<Outcome, (String, Option<Duration>)> {
        let attempts = self.attempts;
        match attempt {
            Attempt::Delivered { .. } => {
                self.answered();
                Ok(Outcome::Delivered { attempts })
            }
            Attempt::Final { reason, retryable } => Ok(self.failed(reason, retryable)),
            Attempt::Refused { status, reason, .. }
                if !self.sink.retry.retry_on.retries(status) =>
            {
                self.status = Some(status);
                self.answered();
                Ok(self.failed(format!("{reason} (not in retry_on)"), false))
            }
            Attempt::Refused {
                status,
                reason,
                retry_after,
            } => {
                self.status = Some(status);
                Err((reason, retry_after))
            }
            Attempt::Retry { reason } => Err((reason, None)),
        }
    }

    fn failed(&self, reason: String, retryable: bool) -> Outcome {
        Outcome::Failed {
            reason,
            attempts: self.attempts,
            status: self.status,
            excerpt: None,
            retryable,
        }
    }

    /// The receiver answered: a sink that was failing is up again, and says so once.
    fn answered(&self) {
        let state = &self.sink.metrics.state;
        if let Some(since) = state.attempt_answered() {
            let waiting = state
                .backlog_events
                .load(std::sync::atomic::Ordering::Relaxed);
            let failed_for = since.elapsed().unwrap_or_default();
            tracing::info!(sink = %self.sink.name, url = %self.sink.shown(), failed_for = %humantime::format_duration(Duration::from_secs(failed_for.as_secs())), backlog_events = waiting, "sink is up again; its backlog is delivered in order");
        }
    }

    /// An attempt failed and is worth another: the sink is retrying, or down (said once).
    fn failed_again(&self, reason: &str) {
        let (since, newly_down) = self.sink.metrics.state.attempt_failed();
        if newly_down {
            let state = &self.sink.metrics.state;
            let waiting = state
                .backlog_events
                .load(std::sync::atomic::Ordering::Relaxed);
            let failing_for = since.elapsed().unwrap_or_default();
            tracing::warn!(sink = %self.sink.name, url = %self.sink.shown(), failing_for = %humantime::format_duration(Duration::from_secs(failing_for.as_secs())), backlog_events = waiting, max_probe_interval = %humantime::format_duration(self.sink.retry.max_probe_interval), "sink is down: its events wait in its backlog, and its receiver is probed with the oldest; last error: {reason}");
        }
    }
}

/// A reason as the attempt log keeps it: at most 1000 characters, so a line stays small.
fn clipped(reason: &str) -> String {
    match reason.char_indices().nth(1000) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_string(),
    }
}

/// `type:action` of the first of `records`, and `+N` for the others of a batch.
fn event_of(records: &[std::sync::Arc<crate::record::Record>]) -> String {
    let Some(first) = records.first() else {
        return String::new();
    };
    let e = &first.event;
    match records.len() {
        1 => format!("{}:{}", e.kind(), e.action.as_str()),
        n => format!("{}:{} +{}", e.kind(), e.action.as_str(), n - 1),
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

    /// How long to wait before the next probe of a backlog's oldest delivery: as
    /// [`Backoff::next_delay`] with no end (an explicit schedule keeps its last delay), and at
    /// most `max_probe_interval` once the sink is `down`; the receiver's `Retry-After` (cut to
    /// `max_retry_after`) is the least.
    pub fn next_probe(&mut self, retry_after: Option<Duration>, down: bool) -> Duration {
        let planned = match &self.policy.schedule {
            Some(schedule) => {
                let wait = schedule.get(self.step).or(schedule.last()).copied();
                self.step += 1;
                wait.unwrap_or(self.policy.initial_backoff)
            }
            None => self.jittered(),
        };
        let planned = match down {
            true => planned.min(self.policy.max_probe_interval),
            false => planned,
        };
        let asked = retry_after.map(|asked| asked.min(self.policy.max_retry_after));
        planned.max(asked.unwrap_or_default())
    }

    /// Passes one delay over (it was waited for before, by an attempt of another delivery).
    fn skip(&mut self) {
        self.step += 1;
        self.next = (self.next * 2).min(MAX_DELAY.max(self.policy.max_probe_interval));
    }

    /// The next exponential delay, with equal jitter (half fixed, half random).
    fn jittered(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX_DELAY.max(self.policy.max_probe_interval));
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
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
            None => self.jittered().min(MAX_DELAY),
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
            max_probe_interval: Duration::from_secs(60),
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
