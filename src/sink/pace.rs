//! A sink's `rate_limit`: requests evenly spaced, `rate_limit_burst` of them back to back, shared
//! by all of the sink's delivery workers (the generic cell rate algorithm: each request reserves
//! the next slot, so waiting workers go out one interval apart, in the order they asked).
//!
//! Waiting holds the worker, and so the queue and the source behind it: nothing is dropped.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct Pace {
    /// Time between two requests.
    interval: Duration,
    /// How far ahead of the schedule requests may run (`burst - 1` intervals).
    slack: Duration,
    /// When the next request is due on the even schedule (it may go up to `slack` earlier).
    due: Mutex<Instant>,
}

impl Pace {
    pub fn new(interval: Duration, burst: u32) -> Pace {
        Pace {
            interval,
            slack: interval * burst.saturating_sub(1),
            due: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot; `false` if `stop` fired first (the slot is not given back:
    /// stopping is for good).
    pub async fn wait(&self, stop: &CancellationToken) -> bool {
        let at = {
            let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*due).max(now);
            *due = start + self.interval;
            // Allowed as soon as it is within the slack of its due time.
            start.checked_sub(self.slack).unwrap_or(start).max(now)
        };
        if at <= Instant::now() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => true,
            _ = stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_after_the_burst() {
        let pace = Pace::new(Duration::from_millis(200), 3);
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let mut at = Vec::new();
        for _ in 0..6 {
            assert!(pace.wait(&stop).await);
            at.push((Instant::now() - t0).as_millis());
        }
        assert_eq!(at, [0, 0, 0, 200, 400, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pace_does_not_save_up_more_than_the_burst() {
        let pace = Pace::new(Duration::from_millis(100), 2);
        let stop = CancellationToken::new();
        tokio::time::advance(Duration::from_secs(10)).await;
        let t0 = Instant::now();
        let mut at = Vec::new();
        for _ in 0..4 {
            pace.wait(&stop).await;
            at.push((Instant::now() - t0).as_millis());
        }
        assert_eq!(at, [0, 0, 100, 200]);
    }
}
