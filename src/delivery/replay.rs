//! Sending dead letters again, for `flagtail replay` and the daemon's automatic replay alike.
//!
//! One replay of a sink runs at a time (a lock held from start to end; another one is told the
//! sink is busy). The dead-letter file is moved aside to `SINK.replaying.jsonl` under the append
//! lock, so the daemon goes on appending to a fresh one; the letters are sent oldest first with
//! the sink's current template, secret, retry policy and rate limit, and their original
//! idempotency keys; those not sent (not selected, failed again, or not reached) are appended back
//! at the end and the taken file removed. A replay cut off (a crash, `kill -9`) leaves the taken
//! file, which the next replay takes up first: a letter is sent again rather than lost.

use super::dead_letter::DeadLetter;
use super::{Link, Result as Delivery, deliver};
use crate::record_log::{RecordLog, now_rfc3339};
use crate::sink::Sink;
use std::io;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    pub delivered: usize,
    /// Sent and failed again (kept, with the new reason and attempt count).
    pub failed: usize,
    /// Not selected, or not reached after a failure or a stop (kept as they were).
    pub left: usize,
    /// Lines that are not dead letters (kept as they were).
    pub unreadable: usize,
}

/// How to replay.
pub struct Options<'a> {
    /// Which letters to send.
    pub select: &'a (dyn Fn(&DeadLetter) -> bool + Sync),
    /// Stop at the first letter that fails again (the receiver is down again); the rest wait.
    pub stop_at_failure: bool,
    /// Says what happens to a letter, for the command line (`None` in the daemon).
    pub report: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// Replays `log`'s letters through `link`; `None` if another replay of the sink is running.
pub async fn replay(
    sink: &Sink,
    link: &mut Link,
    log: &RecordLog,
    options: &Options<'_>,
    stop: &CancellationToken,
) -> io::Result<Option<Summary>> {
    let Some(_running) = log.try_hold_replay()? else {
        return Ok(None);
    };
    // File work off the async threads (the daemon replays beside its workers).
    let (taken, contents) = blocking(log, |log| {
        let taken = {
            let held = log.hold()?;
            log.take(&held)?
        };
        let contents = RecordLog::read(&taken)?;
        Ok((taken, contents))
    })
    .await?;
    let mut keep: Vec<Vec<u8>> = Vec::new();
    // Letters that failed again go back behind the others, so one letter a receiver keeps
    // refusing does not stand in front of the rest at every round.
    let mut again: Vec<Vec<u8>> = Vec::new();
    let mut summary = Summary::default();
    let say = |text: &str| {
        if let Some(report) = options.report {
            report(text);
        }
    };
    for (line_no, text) in &contents.unreadable {
        say(&format!(
            "{}:{line_no}: unreadable dead letter (torn by a crash?); kept as it is",
            taken.display()
        ));
        summary.unreadable += 1;
        keep.push(text.clone().into_bytes());
    }
    let mut halted = false;
    for text in contents.records {
        // Parsed from its text: the event stays the bytes that were written.
        let mut letter: DeadLetter = match serde_json::from_str(&text) {
            Ok(l) => l,
            Err(e) => {
                say(&format!(
                    "a dead letter does not have the expected fields ({e}); kept as it is"
                ));
                summary.unreadable += 1;
                keep.push(text.into_bytes());
                continue;
            }
        };
        if halted || stop.is_cancelled() || !(options.select)(&letter) {
            summary.left += 1;
            keep.push(text.into_bytes());
            continue;
        }
        let record = match letter.to_record() {
            Ok(r) => Arc::new(r),
            Err(e) => {
                say(&format!(
                    "{}: its event cannot be read ({e}); kept",
                    letter.idempotency_key
                ));
                summary.unreadable += 1;
                keep.push(text.into_bytes());
                continue;
            }
        };
        let records = std::slice::from_ref(&record);
        let outcome = deliver(sink, link, records, stop, super::retry::Patience::Bounded).await;
        match outcome.into_iter().next().map(|(_, r)| r) {
            Some(Delivery::Delivered { .. }) => {
                sink.metrics.delivered.inc();
                summary.delivered += 1;
            }
            Some(Delivery::Failed {
                reason,
                attempts,
                excerpt,
                retryable,
                ..
            }) => {
                sink.metrics.state.failed(&reason);
                say(&format!(
                    "{}: still failing: {reason}",
                    letter.idempotency_key
                ));
                summary.failed += 1;
                letter.attempts += attempts;
                letter.reason = reason;
                letter.body_excerpt = excerpt;
                letter.retryable = retryable;
                letter.time = now_rfc3339();
                again.push(serde_json::to_vec(&letter).unwrap_or_default());
                halted = options.stop_at_failure;
            }
            Some(Delivery::Abandoned | Delivery::Deferred { .. }) | None => {
                summary.left += 1;
                keep.push(text.into_bytes());
                halted = true;
            }
        }
    }
    keep.append(&mut again);
    blocking(log, move |log| {
        let _held = log.hold()?;
        if !keep.is_empty() {
            log.append_held(&keep)?;
        }
        match std::fs::remove_file(&taken) {
            // Nothing was taken: there were no dead letters.
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
    .await?;
    Ok(Some(summary))
}

/// Runs `work` on `log` on a blocking thread.
async fn blocking<T: Send + 'static>(
    log: &RecordLog,
    work: impl FnOnce(&RecordLog) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || work(&log))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Whether `log` holds a letter the automatic replay would send, or a replay was cut off.
pub fn pending(log: &RecordLog) -> bool {
    if log.replaying().exists() {
        return true;
    }
    RecordLog::read(log.path()).is_ok_and(|c| {
        c.records
            .iter()
            .any(|t| serde_json::from_str::<DeadLetter>(t).is_ok_and(|l| l.retryable))
    })
}
