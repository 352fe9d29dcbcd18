//! What the status page and the periodic summary tell that counters cannot: each source's last
//! rejected line, each sink's last failure and the backoff it is waiting out, and whether anything
//! happened since the last summary. One process-wide board, like the metrics registry, so it
//! outlives reloads; written only off the hot path (rejections, failures, retries) except for one
//! relaxed load per delivery group that marks activity.

use crate::history::{Hour, LagMinute, SinkMinute};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// Something that happened, and when.
#[derive(Debug, Clone)]
pub struct Note {
    pub at: SystemTime,
    pub text: String,
}

impl Note {
    fn now(text: impl Into<String>) -> Note {
        Note {
            at: SystemTime::now(),
            text: text.into(),
        }
    }
}

/// One source's recent past.
#[derive(Debug, Default)]
pub struct SourceState {
    /// Lines rejected since start.
    pub rejected: AtomicU64,
    /// The last rejected line's reason (with the offset it was read at).
    last_rejected: Mutex<Option<Note>>,
    /// Its lag, minute by minute, over the last hour.
    pub lag: Hour<LagMinute>,
}

impl SourceState {
    /// `lines` more lines rejected, the first of them for `reason`.
    pub fn rejected(&self, lines: u64, reason: String) {
        self.rejected.fetch_add(lines, Ordering::Relaxed);
        *lock(&self.last_rejected) = Some(Note::now(reason));
        touch();
    }

    pub fn last_rejected(&self) -> Option<Note> {
        lock(&self.last_rejected).clone()
    }

    /// Its lag was `bytes` when looked at: the minute keeps the most it saw.
    pub fn lag_seen(&self, bytes: u64) {
        self.lag
            .count(|m| m.lag_bytes = Some(m.lag_bytes.map_or(bytes, |l| l.max(bytes))));
    }
}

/// One sink's recent past.
#[derive(Debug, Default)]
pub struct SinkState {
    /// The last failed attempt (retried or final).
    last_error: Mutex<Option<Note>>,
    /// The latest end of a wait before a retry, and how long that wait is.
    backoff: Mutex<Option<(SystemTime, Duration)>>,
    /// Set while the sink's attempts fail (the fast path reads only this).
    failing_now: AtomicBool,
    /// Since when its attempts fail, none having succeeded since; whether `down` was logged.
    failing: Mutex<Option<(SystemTime, bool)>>,
    /// How long it fails before it is `down` (`max_backoff_duration`), in milliseconds.
    down_after_ms: AtomicU64,
    /// Events waiting in its backlog, and the bytes they take there.
    pub backlog_events: AtomicU64,
    pub backlog_bytes: AtomicU64,
    /// What it did, minute by minute, over the last hour.
    pub history: Hour<SinkMinute>,
}

/// What a sink is doing (SPEC §4): delivering, failing for less than `max_backoff_duration`, or
/// failing for longer (it then probes its receiver with its oldest waiting event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Up,
    Retrying { since: SystemTime },
    Down { since: SystemTime },
}

impl Condition {
    pub fn name(&self) -> &'static str {
        match self {
            Condition::Up => "up",
            Condition::Retrying { .. } => "retrying",
            Condition::Down { .. } => "down",
        }
    }

    /// Since when it fails, unless it is up.
    pub fn since(&self) -> Option<SystemTime> {
        match self {
            Condition::Up => None,
            Condition::Retrying { since } | Condition::Down { since } => Some(*since),
        }
    }
}

/// A wait before a retry that has not ended yet.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The whole wait.
    pub wait: Duration,
    /// What is left of it.
    pub left: Duration,
}

impl SinkState {
    /// An attempt failed and is tried again after `wait`.
    pub fn retrying(&self, reason: &str, wait: Duration) {
        *lock(&self.last_error) = Some(Note::now(reason));
        let until = SystemTime::now() + wait;
        let mut backoff = lock(&self.backoff);
        if backoff.is_none_or(|(end, _)| end <= until) {
            *backoff = Some((until, wait));
        }
    }

    /// Says how long the sink may fail before it is `down`.
    pub fn set_down_after(&self, after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.down_after_ms.store(ms, Ordering::Relaxed);
    }

    /// An attempt failed with no answer worth taking (connection error, timeout, a status in
    /// `retry_on`). Returns since when the sink fails, and whether it has just become `down`
    /// (true once per outage, for the one log line that says so).
    pub fn attempt_failed(&self) -> (SystemTime, bool) {
        self.failing_now.store(true, Ordering::Relaxed);
        let now = SystemTime::now();
        let mut failing = lock(&self.failing);
        let (since, told) = failing.get_or_insert((now, false));
        let down = now.duration_since(*since).unwrap_or_default() >= self.down_after();
        let newly_down = down && !*told;
        *told |= down;
        (*since, newly_down)
    }

    /// An attempt was answered (delivered, or refused for good): the receiver is there. Returns
    /// since when the sink had been failing, if it had.
    pub fn attempt_answered(&self) -> Option<SystemTime> {
        if !self.failing_now.load(Ordering::Relaxed) {
            return None;
        }
        self.failing_now.store(false, Ordering::Relaxed);
        lock(&self.failing).take().map(|(since, _)| since)
    }

    fn down_after(&self) -> Duration {
        Duration::from_millis(self.down_after_ms.load(Ordering::Relaxed))
    }

    /// The sink's condition now.
    pub fn condition(&self) -> Condition {
        let Some((since, _)) = *lock(&self.failing) else {
            return Condition::Up;
        };
        let failing_for = SystemTime::now().duration_since(since).unwrap_or_default();
        match failing_for >= self.down_after() {
            true => Condition::Down { since },
            false => Condition::Retrying { since },
        }
    }

    /// A delivery failed for good.
    pub fn failed(&self, reason: &str) {
        *lock(&self.last_error) = Some(Note::now(reason));
    }

    /// `events` delivered, for the last hour's chart.
    pub fn delivered(&self, events: u64) {
        self.history.count(|m| m.delivered += events);
    }

    /// An attempt failed (retried or not), for the last hour's chart.
    pub fn attempt_lost(&self) {
        self.history.count(|m| m.failed += 1);
    }

    /// `events` dead-lettered, for the last hour's chart.
    pub fn dead_lettered(&self, events: u64) {
        self.history.count(|m| m.dead_lettered += events);
    }

    pub fn last_error(&self) -> Option<Note> {
        lock(&self.last_error).clone()
    }

    /// The wait before a retry that is still running, if any.
    pub fn backoff(&self) -> Option<Backoff> {
        let (until, wait) = (*lock(&self.backoff))?;
        let left = until.duration_since(SystemTime::now()).ok()?;
        Some(Backoff { wait, left })
    }
}

/// The board: states by name, and the activity mark.
#[derive(Default)]
struct Board {
    sources: Mutex<BTreeMap<String, Arc<SourceState>>>,
    sinks: Mutex<BTreeMap<String, Arc<SinkState>>>,
    /// Something happened since the last summary.
    active: AtomicBool,
    /// Wakes the summary when `active` turns true.
    wake: Notify,
}

fn board() -> &'static Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD.get_or_init(Board::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// When the daemon started (the first time this was asked).
pub fn started() -> SystemTime {
    static STARTED: OnceLock<SystemTime> = OnceLock::new();
    *STARTED.get_or_init(SystemTime::now)
}

/// The sources and sinks that have a state, by name.
pub fn names() -> (Vec<String>, Vec<String>) {
    let b = board();
    (
        lock(&b.sources).keys().cloned().collect(),
        lock(&b.sinks).keys().cloned().collect(),
    )
}

/// The state of source `name` (made on first use).
pub fn source(name: &str) -> Arc<SourceState> {
    lock(&board().sources)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// The state of sink `name` (made on first use).
pub fn sink(name: &str) -> Arc<SinkState> {
    lock(&board().sinks)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Marks that something happened: the next summary has something to say.
pub fn touch() {
    let b = board();
    if !b.active.load(Ordering::Relaxed) && !b.active.swap(true, Ordering::AcqRel) {
        b.wake.notify_one();
    }
}

/// Waits until something happens (at once if it already has since the last [`settle`]).
pub async fn activity() {
    let b = board();
    loop {
        let woken = b.wake.notified();
        if b.active.load(Ordering::Acquire) {
            return;
        }
        woken.await;
    }
}

/// Clears the activity mark, before a summary reads the counters: anything after it marks again.
pub fn settle() {
    board().active.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_backoff_still_running_is_shown_and_then_gone() {
        let s = SinkState::default();
        s.retrying("HTTP 503", Duration::from_secs(30));
        s.retrying("HTTP 503", Duration::from_millis(1));
        let b = s.backoff().expect("the 30 s wait runs");
        assert_eq!(b.wait, Duration::from_secs(30));
        assert!(b.left > Duration::from_secs(29));
        assert_eq!(s.last_error().unwrap().text, "HTTP 503");
        let s = SinkState::default();
        s.retrying("timeout", Duration::ZERO);
        assert!(s.backoff().is_none());
    }

    #[test]
    fn a_sink_is_retrying_then_down_then_up_again() {
        let s = SinkState::default();
        s.set_down_after(Duration::from_millis(50));
        assert_eq!(s.condition(), Condition::Up);
        let (since, newly_down) = s.attempt_failed();
        assert!(!newly_down);
        assert_eq!(s.condition(), Condition::Retrying { since });
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.attempt_failed(), (since, true), "down is said once");
        assert_eq!(s.attempt_failed(), (since, false));
        assert_eq!(s.condition(), Condition::Down { since });
        assert_eq!(s.attempt_answered(), Some(since));
        assert_eq!(s.condition(), Condition::Up);
        assert_eq!(s.attempt_answered(), None);
    }
}
