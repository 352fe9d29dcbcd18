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
    let mut round = Round {
        options,
        keep: Vec::new(),
        again: Vec::new(),
        summary: Summary::default(),
        halted: false,
    };
    for (line_no, text) in &contents.unreadable {
        round.say(&format!(
            "{}:{line_no}: unreadable dead letter (torn by a crash?); kept as it is",
            taken.display()
        ));
        round.unreadable(text.clone());
    }
    for text in contents.records {
        round.letter(sink, link, text, stop).await;
    }
    let Round {
        mut keep,
        mut again,
        summary,
        ..
    } = round;
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

/// One replay's letters as they are settled.
struct Round<'a> {
    options: &'a Options<'a>,
    /// Letters written back as they were.
    keep: Vec<Vec<u8>>,
    /// Letters that failed again: written back behind the others, so one letter a receiver keeps
    /// refusing does not stand in front of the rest at every round.
    again: Vec<Vec<u8>>,
    summary: Summary,
    /// No more letters are sent this round.
    halted: bool,
}

impl Round<'_> {
    fn say(&self, text: &str) {
        if let Some(report) = self.options.report {
            report(text);
        }
    }

    fn unreadable(&mut self, text: String) {
        self.summary.unreadable += 1;
        self.keep.push(text.into_bytes());
    }

    /// Sends the letter `text` again, if it is selected and can be read, and settles it.
    async fn letter(
        &mut self,
        sink: &Sink,
        link: &mut Link,
        text: String,
        stop: &CancellationToken,
    ) {
        // Parsed from its text: the event stays the bytes that were written.
        let letter: DeadLetter = match serde_json::from_str(&text) {
            Ok(l) => l,
            Err(e) => {
                self.say(&format!(
                    "a dead letter does not have the expected fields ({e}); kept as it is"
                ));
                return self.unreadable(text);
            }
        };
        if self.halted || stop.is_cancelled() || !(self.options.select)(&letter) {
            self.summary.left += 1;
            return self.keep.push(text.into_bytes());
        }
        let record = match letter.to_record() {
            Ok(r) => Arc::new(r),
            Err(e) => {
                let key = &letter.idempotency_key;
                self.say(&format!("{key}: its event cannot be read ({e}); kept"));
                return self.unreadable(text);
            }
        };
        let records = std::slice::from_ref(&record);
        let outcome = deliver(sink, link, records, stop, super::retry::Patience::Bounded).await;
        let outcome = outcome.into_iter().next().map(|(_, r)| r);
        self.settle(sink, letter, text, outcome);
    }

    /// What a letter's delivery came to: gone, back behind the others, or kept as it was.
    fn settle(
        &mut self,
        sink: &Sink,
        mut letter: DeadLetter,
        text: String,
        outcome: Option<Delivery>,
    ) {
        match outcome {
            Some(Delivery::Delivered { .. }) => {
                sink.metrics.delivered.inc();
                sink.metrics.state.delivered(1);
                self.summary.delivered += 1;
            }
            Some(Delivery::Failed {
                reason,
                attempts,
                excerpt,
                retryable,
                ..
            }) => {
                sink.metrics.state.failed(&reason);
                self.say(&format!(
                    "{}: still failing: {reason}",
                    letter.idempotency_key
                ));
                self.summary.failed += 1;
                letter.attempts += attempts;
                letter.reason = reason;
                letter.body_excerpt = excerpt;
                letter.retryable = retryable;
                letter.time = now_rfc3339();
                self.again
                    .push(serde_json::to_vec(&letter).unwrap_or_default());
                self.halted = self.options.stop_at_failure;
            }
            Some(Delivery::Abandoned | Delivery::Deferred { .. }) | None => {
                self.summary.left += 1;
                self.keep.push(text.into_bytes());
                self.halted = true;
            }
        }
    }
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
