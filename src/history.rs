//! The last hour, minute by minute: what each sink did (delivered, failed attempts,
//! dead-lettered) and how far each source was behind. Kept in the process-wide status board, so
//! it outlives a reload (SIGHUP). No timer rolls the minutes: a count or a look finds the minute it
//! falls in, and minutes older than the hour are dropped then.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Minutes kept.
pub const MINUTES: u64 = 60;

/// What a sink did in one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkMinute {
    /// Events delivered.
    pub delivered: u64,
    /// Attempts that failed (each retry of a group counts once).
    pub failed: u64,
    /// Events written to the dead-letter file.
    pub dead_lettered: u64,
}

/// How far a source was behind in one minute: the most bytes not yet read by every sink seen in
/// it (sampled whenever the status page, `/status.json` or `/metrics` is read), if it was looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagMinute {
    pub lag_bytes: Option<u64>,
}

/// One minute of a chart, as `/status.json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minute<T> {
    /// The minute's start, RFC 3339.
    pub time: String,
    #[serde(flatten)]
    pub counts: T,
}

/// The last [`MINUTES`] minutes of `T`, newest last; only minutes something happened in are kept.
#[derive(Debug, Default)]
pub struct Hour<T> {
    minutes: Mutex<VecDeque<(u64, T)>>,
}

/// Minutes since the epoch.
fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

impl<T: Default + Copy> Hour<T> {
    /// Changes the current minute's entry with `f`.
    pub fn count(&self, f: impl FnOnce(&mut T)) {
        self.count_at(SystemTime::now(), f);
    }

    fn count_at(&self, at: SystemTime, f: impl FnOnce(&mut T)) {
        let now = minute_of(at);
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if minutes.back().is_none_or(|(m, _)| *m != now) {
            // A new minute (or a clock set back): what is older than the hour, or ahead of now,
            // is dropped then, not at every count.
            minutes.retain(|(m, _)| *m + MINUTES > now && *m <= now);
            minutes.push_back((now, T::default()));
        }
        if let Some((_, t)) = minutes.back_mut() {
            f(t);
        }
    }

    /// The hour up to now, every minute of it (empty ones as `T::default()`), oldest first.
    pub fn minutes(&self) -> Vec<Minute<T>> {
        self.minutes_at(SystemTime::now())
    }

    fn minutes_at(&self, at: SystemTime) -> Vec<Minute<T>> {
        let now = minute_of(at);
        let kept = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        ((now + 1).saturating_sub(MINUTES)..=now)
            .map(|m| Minute {
                time: humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + std::time::Duration::from_secs(m * 60),
                )
                .to_string(),
                counts: kept
                    .iter()
                    .find(|(k, _)| *k == m)
                    .map(|(_, t)| *t)
                    .unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn minutes_roll_when_counted_and_the_hour_is_whole_when_read() {
        let h = Hour::<SinkMinute>::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000 * 60 + 5);
        h.count_at(t0, |m| m.delivered += 2);
        h.count_at(t0 + Duration::from_secs(10), |m| m.failed += 1);
        h.count_at(t0 + Duration::from_secs(120), |m| m.dead_lettered += 3);
        let read = h.minutes_at(t0 + Duration::from_secs(120));
        assert_eq!(read.len(), 60);
        assert_eq!(read[57].counts.delivered, 2);
        assert_eq!(read[57].counts.failed, 1);
        assert_eq!(read[59].counts.dead_lettered, 3);
        assert_eq!(read[59].time, "1970-01-01T16:42:00Z");
        // An hour on, only the newest minute is counted; the old ones are gone from memory.
        h.count_at(t0 + Duration::from_secs(3_800), |m| m.delivered += 1);
        assert_eq!(h.minutes.lock().unwrap().len(), 1);
        let read = h.minutes_at(t0 + Duration::from_secs(3_800));
        assert_eq!(read.iter().map(|m| m.counts.delivered).sum::<u64>(), 1);
        // A clock set back drops what lies ahead of it rather than counting into it.
        h.count_at(t0, |m| m.failed += 1);
        assert_eq!(h.minutes_at(t0)[59].counts.failed, 1);
    }
}
