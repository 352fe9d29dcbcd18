//! What is not an event: recorded in `rejected/SOURCE.jsonl`, logged and counted, at a cost that
//! does not grow with how much of it arrives.
//!
//! Consecutive rejected lines of a stream are one [`Run`], written as one record holding their
//! count, their first and last offsets, the count of each reason and an excerpt of the first line
//! (a request's refused values likewise). Every line is still counted in
//! `flagtail_lines_rejected_total`; the WARN lines about records are at most one a second per
//! source, the next one saying how many were not logged. One writer task per source appends the
//! records waiting, all with one fsync, and keeps the file under `rejected.max_bytes` by dropping
//! its oldest records (counted in `flagtail_rejected_dropped_total`). It does not decide what is
//! rejected: the formats do.

use super::Stopped;
use crate::ack::Tracker;
use crate::event::Rejection;
use crate::metrics;
use crate::record_log::{RecordLog, now_rfc3339};
use base64::Engine;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How much of a rejected line (or body) a record keeps.
pub const EXCERPT: usize = 64 * 1024;
/// A run still going on is recorded after this long, so it never holds the checkpoint for longer.
const RUN_SPAN: Duration = Duration::from_secs(1);
/// At most one WARN line about rejected lines per source in this long.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// Records written with one append at the most (about).
const GROUP_BYTES: usize = 1024 * 1024;
/// Records waiting for the writer; more wait to be queued.
const QUEUE: usize = 256;

/// Consecutive rejected lines (or a request's refused values), recorded as one record.
#[derive(Debug)]
pub struct Run {
    /// Byte range of the first line.
    first: (u64, u64),
    /// Byte range of the last line.
    last: (u64, u64),
    count: u64,
    /// How many lines had each reason, in the order the reasons were first seen.
    reasons: Vec<(&'static str, u64)>,
    /// Why the first line was rejected.
    detail: String,
    /// The first line, or its first [`EXCERPT`] bytes.
    excerpt: Vec<u8>,
    /// The first line's whole length, when the excerpt is shorter.
    cut_from: Option<u64>,
    /// When the first line was rejected.
    started: Instant,
}

impl Run {
    /// A run of one line, at `range`, rejected for `why`; `raw` is what was kept of it.
    pub fn new(range: (u64, u64), why: &Rejection, raw: &[u8]) -> Run {
        let kept = raw.len().min(EXCERPT);
        Run {
            first: range,
            last: range,
            count: 1,
            reasons: vec![(why.tag(), 1)],
            detail: why.to_string(),
            excerpt: raw[..kept].to_vec(),
            cut_from: (kept < raw.len()).then_some(raw.len() as u64),
            started: Instant::now(),
        }
    }

    /// Adds the next rejected line, at `range`.
    pub fn add(&mut self, range: (u64, u64), why: &Rejection) {
        self.last = range;
        self.count += 1;
        let tag = why.tag();
        match self.reasons.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, n)) => *n += 1,
            None => self.reasons.push((tag, 1)),
        }
    }

    /// How many lines it holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether it has gone on long enough to be recorded now.
    pub fn is_due(&self) -> bool {
        self.started.elapsed() >= RUN_SPAN
    }

    /// The bytes it holds in memory.
    pub fn held(&self) -> usize {
        self.excerpt.len() + self.detail.len()
    }

    /// Why the first line was rejected.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The record, one JSON line: the keys of a single rejected line (`offset`, `end`, `reason`,
    /// `detail` and `line` or `line_base64` are the first line's) and those of the run.
    fn entry(&self, source: &str, path: &str) -> Vec<u8> {
        let reasons: serde_json::Map<String, serde_json::Value> = self
            .reasons
            .iter()
            .map(|(tag, n)| (tag.to_string(), (*n).into()))
            .collect();
        let mut entry = serde_json::json!({
            "time": now_rfc3339(),
            "source": source,
            "path": path,
            "offset": self.first.0,
            "end": self.first.1,
            "reason": self.reasons[0].0,
            "detail": self.detail,
            "count": self.count,
            "last_offset": self.last.0,
            "end_offset": self.last.1,
            "reasons": reasons,
        });
        let text = utf8_prefix(&self.excerpt, self.cut_from.is_some());
        match text {
            Some(text) => entry["line"] = text.into(),
            None => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.excerpt);
                entry["line_base64"] = b64.into();
            }
        }
        if let Some(len) = self.cut_from {
            entry["line_bytes"] = len.into();
        }
        serde_json::to_vec(&entry).unwrap_or_default()
    }
}

/// `bytes` as text, if they are UTF-8; when they were `cut`, a character cut in two at the end
/// is left out.
fn utf8_prefix(bytes: &[u8], cut: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) if cut && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

/// What to do once a record is durable.
pub enum Done {
    /// Acknowledge the source's slot of the run: the checkpoint may pass its lines.
    Ack(Arc<Tracker>, u64),
    /// Wake whoever waits (a request answered once its refused values are recorded).
    Tell(oneshot::Sender<()>),
}

impl Done {
    fn fire(self) {
        match self {
            Done::Ack(tracker, seq) => tracker.ack(seq),
            Done::Tell(waiting) => drop(waiting.send(())),
        }
    }
}

/// A record waiting for the writer.
struct Waiting {
    line: Vec<u8>,
    done: Done,
}

/// When a WARN line about rejections was last written, and what was not logged since.
#[derive(Debug, Default)]
struct Quiet {
    last: Option<Instant>,
    records: u64,
    lines: u64,
}

impl Quiet {
    /// Whether a record of `lines` lines may be logged now; if so, the records and lines not
    /// logged since the last one.
    fn speak(&mut self, lines: u64) -> Option<(u64, u64)> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.records += 1;
            self.lines += lines;
            return None;
        }
        self.last = Some(now);
        Some((
            std::mem::take(&mut self.records),
            std::mem::take(&mut self.lines),
        ))
    }
}

/// Where a source's rejected lines are recorded: `rejected/SOURCE.jsonl`.
#[derive(Debug, Clone)]
pub struct Rejected(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    source: Box<str>,
    queue: mpsc::Sender<Waiting>,
    quiet: Mutex<Quiet>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiting")
    }
}

impl Rejected {
    /// The rejected file of `source`, kept under `max_bytes`; starts its writer (on the runtime
    /// this is called in), which ends once every clone is dropped.
    pub fn new(source: &str, log: RecordLog, max_bytes: u64) -> Rejected {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(source.into(), log, max_bytes, rx));
        Rejected(Arc::new(Shared {
            source: source.into(),
            queue,
            quiet: Mutex::default(),
        }))
    }

    /// Counts, logs and durably records `run`, read from `path`; returns once it is written, or
    /// when `stop` fires first.
    pub async fn record(
        &self,
        path: &str,
        run: Run,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let (tell, written) = oneshot::channel();
        self.submit(path, run, Done::Tell(tell), stop).await?;
        tokio::select! {
            w = written => w.map_err(|_| Stopped),
            _ = stop.cancelled() => Err(Stopped),
        }
    }

    /// Counts and logs `run`, read from `path`, and hands its record to the writer, which does
    /// `done` once it is durable. Waits only while the writer's queue is full.
    pub async fn submit(
        &self,
        path: &str,
        run: Run,
        done: Done,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let source = &*self.0.source;
        for (tag, n) in &run.reasons {
            metrics::get().rejected_lines(source, tag, *n);
        }
        let note = format!("{} (offset {} of {path})", run.detail, run.first.0);
        crate::status::source(source).rejected(run.count, note);
        // Bytes lost from a journal are rare and always said (each gap its own line).
        let lost = run.reasons.iter().any(|(tag, _)| *tag == "journal_gap");
        let spoken = match lost {
            true => Some((0, 0)),
            false => self
                .0
                .quiet
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .speak(run.count),
        };
        if let Some((records, lines)) = spoken {
            tracing::warn!(source = %source, path = %path, offset = run.first.0, end_offset = run.last.1, lines = run.count, reason = %run.detail, not_logged_records = records, not_logged_lines = lines, "rejected lines, recorded as one record (at most one such message a second per source; not_logged_* count the others since the last)");
        }
        let waiting = Waiting {
            line: run.entry(source, path),
            done,
        };
        tokio::select! {
            sent = self.0.queue.send(waiting) => sent.map_err(|_| Stopped),
            _ = stop.cancelled() => Err(Stopped),
        }
    }
}

/// The writer of one rejected file: appends what waits, a group at a time, then does what each
/// record's [`Done`] says.
async fn write(source: Box<str>, log: RecordLog, max: u64, mut rx: mpsc::Receiver<Waiting>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.line.len();
        let mut group = vec![first];
        while bytes < GROUP_BYTES
            && let Ok(next) = rx.try_recv()
        {
            bytes += next.line.len();
            group.push(next);
        }
        let lines: Vec<Vec<u8>> = group
            .iter_mut()
            .map(|w| std::mem::take(&mut w.line))
            .collect();
        let Some(dropped) = append(&source, &log, max, lines, &rx).await else {
            return;
        };
        if dropped > 0 {
            metrics::get().rejected_dropped(&source, dropped);
            tracing::warn!(source = %source, path = %log.path().display(), dropped, max_bytes = max, "the rejected file reached rejected.max_bytes: its oldest records were dropped");
        }
        group.into_iter().for_each(|w| w.done.fire());
    }
}

/// Appends `lines` to the log, retrying until they are written (the sources wait meanwhile);
/// returns how many old records were dropped to keep it under `max`, or `None` if the pipeline
/// went away while the writes failed (its lines were not checkpointed: they are read again).
async fn append(
    source: &str,
    log: &RecordLog,
    max: u64,
    lines: Vec<Vec<u8>>,
    rx: &mpsc::Receiver<Waiting>,
) -> Option<u64> {
    let lines = Arc::new(lines);
    let mut wait = Duration::from_millis(200);
    loop {
        let (log, lines) = (log.clone(), lines.clone());
        let path = log.path().display().to_string();
        match tokio::task::spawn_blocking(move || log.append_bounded(&lines, max)).await {
            Ok(Ok(dropped)) => return Some(dropped),
            Ok(Err(e)) => {
                tracing::error!(source = %source, path = %path, error = %e, "cannot record rejected lines; holding the source until it can")
            }
            Err(e) => tracing::error!(error = %e, "rejected-line writer failed"),
        }
        if rx.is_closed() {
            return None;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_one_record_with_its_count_reasons_and_first_line() {
        let mut run = Run::new((10, 20), &Rejection::NotJson("x".into()), b"not json");
        run.add((20, 30), &Rejection::InvalidUtf8);
        run.add((30, 45), &Rejection::NotJson("y".into()));
        let v: serde_json::Value = serde_json::from_slice(&run.entry("s", "p")).unwrap();
        assert_eq!(
            (&v["offset"], &v["end"], &v["last_offset"], &v["end_offset"]),
            (&10.into(), &20.into(), &30.into(), &45.into())
        );
        assert_eq!((&v["count"], &v["reason"]), (&3.into(), &"not_json".into()));
        assert_eq!(
            v["reasons"],
            serde_json::json!({"not_json": 2, "invalid_utf8": 1})
        );
        assert_eq!(v["line"], "not json");
        assert!(v.get("line_bytes").is_none());
    }

    #[test]
    fn a_long_first_line_is_cut_at_a_character() {
        let long = format!("a{}", "é".repeat(EXCERPT));
        let run = Run::new((0, 1), &Rejection::InvalidUtf8, long.as_bytes());
        let v: serde_json::Value = serde_json::from_slice(&run.entry("s", "p")).unwrap();
        assert_eq!(v["line"].as_str().unwrap().len(), EXCERPT - 1);
        assert_eq!(v["line_bytes"], long.len() as u64);
        let run = Run::new((0, 1), &Rejection::InvalidUtf8, b"\xff\xfe");
        let v: serde_json::Value = serde_json::from_slice(&run.entry("s", "p")).unwrap();
        assert_eq!(v["line_base64"], "//4=");
    }

    #[test]
    fn warnings_are_held_back_and_counted() {
        let mut q = Quiet::default();
        assert_eq!(q.speak(5), Some((0, 0)));
        assert_eq!(q.speak(7), None);
        assert_eq!(q.speak(1), None);
        q.last = Some(Instant::now() - WARN_EVERY);
        assert_eq!(q.speak(1), Some((2, 8)));
    }
}
