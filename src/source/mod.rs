//! Sources: where lines come from, and what happens to each line read.
//!
//! [`file`] follows a file. Every line goes through [`Dispatch`]: it is parsed in the source's
//! format, offered to each sink whose filter takes it, and registered with the source's
//! [`Tracker`] so the checkpoint moves past it only once every such sink is done. A line that is
//! not an event is written to `rejected/SOURCE.jsonl` (with offset and reason), logged and counted
//! before the checkpoint may pass it.

pub mod coding;
pub mod file;
pub mod http;
pub mod journaled;
pub mod lines;
pub mod socket;
mod watch;

use crate::ack::Tracker;
use crate::event::{Rejection, parse_shared};
use crate::metrics;
use crate::position::{FileIdentity, Position};
use crate::record::{Record, SourceInfo};
use crate::record_log::{RecordLog, now_rfc3339};
use crate::sink::Sink;
use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use lines::Piece;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The directory a file is in (`.` for a bare file name).
pub fn dir_of(path: &std::path::Path) -> &std::path::Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}

/// A sink as sources see it: its filter, and its queue.
pub struct SinkPort {
    pub sink: Arc<Sink>,
    pub queue: mpsc::Sender<Arc<Record>>,
}

/// Waits for a free connection slot, then for the next connection from `accept`; `None` once
/// `stop` fires. The slot is taken before accepting, so a source at `max_connections` stops
/// accepting (clients wait in the listen queue) instead of failing them. Accept errors (say, out
/// of file descriptors) are logged and the wait goes on.
pub async fn next_connection<S, F, Fut>(
    source: &str,
    slots: &Arc<tokio::sync::Semaphore>,
    stop: &CancellationToken,
    accept: F,
) -> Option<(tokio::sync::OwnedSemaphorePermit, S)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let slot = tokio::select! {
        s = slots.clone().acquire_owned() => s.ok()?,
        _ = stop.cancelled() => return None,
    };
    loop {
        tokio::select! {
            accepted = accept() => match accepted {
                Ok(conn) => return Some((slot, conn)),
                Err(e) => tracing::warn!(source = %source, error = %e, "cannot accept a connection"),
            },
            _ = stop.cancelled() => return None,
        }
        // Out of file descriptors, say: wait a little instead of spinning on the error.
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// The source was told to stop while handing over a line.
#[derive(Debug)]
pub struct Stopped;

/// Where a source's lines go.
pub struct Dispatch {
    pub info: Arc<SourceInfo>,
    pub tracker: Arc<Tracker>,
    pub sinks: Arc<[SinkPort]>,
    pub rejected: Rejected,
    pub stop: CancellationToken,
    /// `flagtail_lines_read_total` of this source.
    pub lines_read: prometheus_client::metrics::counter::Counter,
    /// `flagtail_events_unmapped_total` of this source.
    pub unmapped: prometheus_client::metrics::counter::Counter,
    /// Said once the source is open (`/readyz`, systemd).
    pub opened: crate::health::Opening,
}

/// What a line was read from.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// A followed file, and its fingerprint in hex (for keys).
    File {
        file: &'a Arc<FileIdentity>,
        key: &'a Arc<str>,
    },
    /// A source's journal (its directory), and the journal's id (for keys).
    Journal { dir: &'a Path, id: &'a Arc<str> },
}

impl Origin<'_> {
    /// What identifies the stream in idempotency keys: the same after a restart, different for
    /// another file (or a journal made anew).
    fn key(&self) -> &Arc<str> {
        match self {
            Origin::File { key, .. } => key,
            Origin::Journal { id, .. } => id,
        }
    }

    /// The path shown in rejected records and logs.
    fn path(&self) -> &Path {
        match self {
            Origin::File { file, .. } => &file.path,
            Origin::Journal { dir, .. } => dir,
        }
    }

    /// The position of byte `offset` of this stream.
    fn at(&self, offset: u64) -> Position {
        match self {
            Origin::File { file, .. } => Position::File {
                file: Arc::clone(file),
                offset,
            },
            Origin::Journal { id, .. } => Position::Journal {
                id: Arc::clone(id),
                offset,
            },
        }
    }
}

/// Where a line sits: what it was read from, and its byte range there.
#[derive(Clone, Copy)]
pub struct Span<'a> {
    pub origin: Origin<'a>,
    pub start: u64,
    pub end: u64,
}

impl Dispatch {
    /// Handles one complete line (without its line ending).
    pub async fn line(&self, at: Span<'_>, bytes: Bytes) -> Result<(), Stopped> {
        self.lines_read.inc();
        // The event keeps the line as read, sharing the buffer it was read into.
        let Ok(text) = ByteString::try_from(bytes.clone()) else {
            return self.reject(at, Rejection::InvalidUtf8, &bytes).await;
        };
        if text.trim().is_empty() {
            return self.settle(at, 0, 0, bytes.len()).await.map(drop);
        }
        let event = match parse_shared(self.info.format, &text) {
            Ok(event) => event,
            Err(Rejection::Unmapped(kind)) => {
                tracing::debug!(source = %self.info.name, offset = at.start, kind = %kind, "event type not mapped; skipped");
                self.unmapped.inc();
                return self.settle(at, 0, 0, bytes.len()).await.map(drop);
            }
            Err(rejection) => return self.reject(at, rejection, &bytes).await,
        };
        // The filters are evaluated again when sending, cheaper than keeping a list per line; a
        // `match:` parses the payload once for both passes and all sinks.
        let mut parsed = crate::sink::filter::Parsed::default();
        let mut wanted = 0;
        for p in self.sinks.iter() {
            if p.sink.filter.accepts(&self.info.name, &event, &mut parsed) {
                wanted += 1;
            } else {
                p.sink.metrics.filtered.inc();
                crate::status::touch();
            }
        }
        // What the record will hold: the line and what of the event is not in it. A line no sink
        // takes is charged too (see `settle`).
        let cost = match wanted {
            0 => 0,
            _ => self.tracker.cost(event.heap_bytes()),
        };
        let stream = Arc::clone(at.origin.key());
        let (start, tracker) = (at.start, self.tracker.clone());
        let seq = self.settle(at, wanted, cost, bytes.len()).await?;
        if wanted == 0 {
            return Ok(());
        }
        let record =
            Arc::new(Record::read(self.info.clone(), start, stream, event).with_ack(tracker, seq));
        let ports = self.sinks.iter().filter(|p| {
            p.sink
                .filter
                .accepts(&self.info.name, &record.event, &mut parsed)
        });
        for port in ports {
            // Waiting (with a way out) only when the queue is full.
            let record = match port.queue.try_send(record.clone()) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(record)) => record,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stopped),
            };
            tokio::select! {
                sent = port.queue.send(record) => if sent.is_err() { return Err(Stopped) },
                _ = self.stop.cancelled() => return Err(Stopped),
            }
        }
        Ok(())
    }

    /// Handles one piece read from `origin`: a line, or a line over `max_line` bytes.
    pub async fn piece(
        &self,
        origin: Origin<'_>,
        piece: Piece,
        max_line: usize,
    ) -> Result<(), Stopped> {
        let (start, end) = piece.range();
        let at = Span { origin, start, end };
        match piece {
            Piece::Line { text, .. } => self.line(at, text).await,
            Piece::TooLong { len, prefix, .. } => {
                self.too_long(at, len, max_line as u64, &prefix).await
            }
        }
    }

    /// Handles a line longer than `max_line_bytes`, of which `prefix` was kept.
    pub async fn too_long(
        &self,
        at: Span<'_>,
        len: u64,
        max: u64,
        prefix: &[u8],
    ) -> Result<(), Stopped> {
        self.lines_read.inc();
        self.reject(at, Rejection::TooLong { len, max }, prefix)
            .await
    }

    /// Records bytes that can never become a line (cut off by truncation or rotation).
    pub async fn incomplete(&self, at: Span<'_>, bytes: &[u8], why: &str) -> Result<(), Stopped> {
        self.reject(
            at,
            Rejection::NotAnEvent(format!("incomplete line: {why}")),
            bytes,
        )
        .await
    }

    /// Admits the line's cost and registers it with the tracker. Every line is charged at least
    /// the `held` bytes it kept in memory, taken or not: lines share the buffer they were read
    /// into, so a line no sink took stays in memory as long as a neighbour that one did. (An
    /// over-long line held only its prefix: the rest was skipped, never buffered.)
    async fn settle(
        &self,
        at: Span<'_>,
        sinks: u32,
        cost: u32,
        held: usize,
    ) -> Result<u64, Stopped> {
        let cost = cost.max(self.tracker.cost(held));
        // Waiting (with a way out) only when the budget is spent.
        if !self.tracker.try_admit(cost) {
            tokio::select! {
                _ = self.tracker.admit(cost) => {}
                _ = self.stop.cancelled() => return Err(Stopped),
            }
        }
        Ok(self.tracker.push(at.origin.at(at.end), sinks, cost))
    }

    /// Writes the line to the rejected file (retrying until it is written), then lets the
    /// checkpoint pass it.
    async fn reject(&self, at: Span<'_>, why: Rejection, raw: &[u8]) -> Result<(), Stopped> {
        let path = at.origin.path().display().to_string();
        self.rejected
            .record(
                &self.info.name,
                &path,
                (at.start, at.end),
                why,
                raw,
                &self.stop,
            )
            .await?;
        self.settle(at, 0, 0, raw.len()).await.map(drop)
    }
}

/// Where a source's rejected lines are recorded: `rejected/SOURCE.jsonl`.
#[derive(Debug, Clone)]
pub struct Rejected(pub RecordLog);

impl Rejected {
    /// Logs, counts and durably records a rejected line read at `range` of `path`, retrying until
    /// it is written or `stop` fires.
    pub async fn record(
        &self,
        source: &str,
        path: &str,
        range: (u64, u64),
        why: Rejection,
        raw: &[u8],
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        tracing::warn!(source = %source, path = %path, offset = range.0, reason = %why, "rejected line");
        metrics::get().rejected(source, why.tag());
        crate::status::source(source).rejected(format!("{why} (offset {} of {path})", range.0));
        let mut entry = serde_json::json!({
            "time": now_rfc3339(),
            "source": source,
            "path": path,
            "offset": range.0,
            "end": range.1,
            "reason": why.tag(),
            "detail": why.to_string(),
        });
        match std::str::from_utf8(raw) {
            Ok(text) => entry["line"] = text.into(),
            Err(_) => {
                entry["line_base64"] = base64::engine::general_purpose::STANDARD.encode(raw).into()
            }
        }
        let line = serde_json::to_vec(&entry).unwrap_or_default();
        let mut wait = Duration::from_millis(200);
        loop {
            let (log, line) = (self.0.clone(), line.clone());
            match tokio::task::spawn_blocking(move || log.append(&[line])).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    tracing::error!(source = %source, path = %self.0.path().display(), error = %e, "cannot record a rejected line; holding the source until it can")
                }
                Err(e) => tracing::error!(error = %e, "rejected-line writer failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => wait = (wait * 2).min(Duration::from_secs(30)),
                _ = stop.cancelled() => return Err(Stopped),
            }
        }
    }
}
