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
pub mod rejected;
pub mod socket;
pub mod tls;
pub mod verify;
mod watch;

use crate::ack::Tracker;
use crate::event::{Rejection, parse_shared};
use crate::position::{FileIdentity, Position};
use crate::record::{Record, SourceInfo};
use crate::sink::Sink;
use bytes::Bytes;
use bytestring::ByteString;
use lines::Piece;
pub use rejected::Rejected;
use rejected::{Done, Run};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The directory a file is in (`.` for a bare file name).
pub fn dir_of(path: &std::path::Path) -> &std::path::Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}

/// A sink as sources see it: its filter, its queue, and its backlog (told when the queue stalls).
pub struct SinkPort {
    pub sink: Arc<Sink>,
    pub queue: mpsc::Sender<Arc<Record>>,
    pub backlog: Arc<crate::delivery::backlog::Backlog>,
    /// Since when a source has found the queue full each time it handed a record over (in
    /// nanoseconds from [`epoch`]; 0: it last found room).
    pub full_since: std::sync::atomic::AtomicU64,
}

/// The instant `SinkPort::full_since` counts from.
fn epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

impl SinkPort {
    /// A record went in at once: the queue had room.
    fn had_room(&self) {
        if self.full_since.load(Ordering::Relaxed) != 0 {
            self.full_since.store(0, Ordering::Relaxed);
        }
    }

    /// The queue is full: since when it has been full at every hand-over, this one included.
    fn full(&self) -> tokio::time::Instant {
        let now = u64::try_from((tokio::time::Instant::now() - epoch()).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let since =
            match self
                .full_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        epoch() + Duration::from_nanos(since)
    }
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
    /// The rejected lines just read, not recorded yet.
    pub run: OpenRun,
}

/// The run of rejected lines a source is in, if any: recorded as one record once a line that is
/// not rejected comes, the reading pauses, another stream is read, or it has lasted a second.
#[derive(Default)]
pub struct OpenRun(Mutex<Option<Open>>);

/// A run being read, and where.
struct Open {
    run: Run,
    /// The stream it is read from (a run never spans two).
    stream: Arc<str>,
    /// The path shown in its record.
    path: String,
    /// Where the checkpoint may move once it is recorded: after its last line, or after the
    /// blank or unmapped lines read since.
    settle: Position,
}

impl OpenRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
            return self.pass(at, bytes.len()).await;
        }
        let event = match parse_shared(self.info.format, &text) {
            Ok(event) => event,
            Err(Rejection::Unmapped(kind)) => {
                tracing::debug!(source = %self.info.name, offset = at.start, kind = %kind, "event type not mapped; skipped");
                self.unmapped.inc();
                return self.pass(at, bytes.len()).await;
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
                Ok(()) => {
                    port.had_room();
                    continue;
                }
                Err(mpsc::error::TrySendError::Full(record)) => record,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stopped),
            };
            self.wait_for_room(port, record).await?;
        }
        Ok(())
    }

    /// Hands `record` to a full queue once it has room. A queue that makes no room for
    /// [`STALL`](crate::delivery::backlog::STALL) stalls its sink: the sink then moves what waits to
    /// its backlog, so one stuck receiver never holds this source (and its other sinks) back. So
    /// does a slow one, beside other sinks: a queue found full at every hand-over for `STALL`,
    /// however often it made room for one more, holds the others to its pace.
    async fn wait_for_room(&self, port: &SinkPort, record: Arc<Record>) -> Result<(), Stopped> {
        let send = port.queue.send(record);
        tokio::pin!(send);
        let stall = crate::delivery::backlog::STALL;
        let since = match self.sinks.len() {
            1 => tokio::time::Instant::now(),
            _ => port.full(),
        };
        let stall = tokio::time::sleep_until(since + stall);
        tokio::pin!(stall);
        loop {
            tokio::select! {
                sent = &mut send => return sent.map_err(|_| Stopped),
                () = &mut stall, if !stall.is_elapsed() => port.backlog.stall(),
                _ = self.stop.cancelled() => return Err(Stopped),
            }
        }
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
    /// A run of rejected lines read before is recorded first, so the checkpoint passes it in order.
    async fn settle(
        &self,
        at: Span<'_>,
        sinks: u32,
        cost: u32,
        held: usize,
    ) -> Result<u64, Stopped> {
        self.idle().await?;
        let cost = cost.max(self.tracker.cost(held));
        self.admit(cost).await?;
        Ok(self.tracker.push(at.origin.at(at.end), sinks, cost))
    }

    /// Takes `cost` from the source's budget, waiting (with a way out) only when it is spent.
    async fn admit(&self, cost: u32) -> Result<(), Stopped> {
        if !self.tracker.try_admit(cost) {
            tokio::select! {
                _ = self.tracker.admit(cost) => {}
                _ = self.stop.cancelled() => return Err(Stopped),
            }
        }
        Ok(())
    }

    /// A line that is neither an event nor rejected (blank, or an event no mapping covers): part
    /// of the run of rejected lines it is read in, if any, else done at once.
    async fn pass(&self, at: Span<'_>, held: usize) -> Result<(), Stopped> {
        match self.extend(at, None) {
            Some(Some(due)) => self.record(due).await,
            Some(None) => Ok(()),
            None => self.settle(at, 0, 0, held).await.map(drop),
        }
    }

    /// Adds the line to the run of rejected lines being read (a new one if the line is the first,
    /// or read from another stream); the run is recorded once it ends, or has lasted a second.
    async fn reject(&self, at: Span<'_>, why: Rejection, raw: &[u8]) -> Result<(), Stopped> {
        let ended = match self.extend(at, Some(&why)) {
            Some(due) => due,
            None => self.run.lock().replace(Open {
                run: Run::new((at.start, at.end), &why, raw),
                stream: Arc::clone(at.origin.key()),
                path: at.origin.path().display().to_string(),
                settle: at.origin.at(at.end),
            }),
        };
        match ended {
            Some(open) => self.record(open).await,
            None => Ok(()),
        }
    }

    /// Extends the run being read from `at`'s stream, if there is one, to the end of `at`,
    /// adding it to the run's lines if it was rejected (`why`). `Some(Some(run))` when the run is
    /// then due to be recorded (taken out), `None` when there is no such run.
    fn extend(&self, at: Span<'_>, why: Option<&Rejection>) -> Option<Option<Open>> {
        let mut open = self.run.lock();
        let o = open.as_mut().filter(|o| o.stream == *at.origin.key())?;
        if let Some(why) = why {
            o.run.add((at.start, at.end), why);
        }
        o.settle = at.origin.at(at.end);
        Some(o.run.is_due().then(|| open.take()).flatten())
    }

    /// Records the run of rejected lines being read, if any: the source reads on meanwhile, and
    /// the checkpoint passes the run once its record is durable. Called by a source before it
    /// waits for more to read.
    pub async fn idle(&self) -> Result<(), Stopped> {
        let open = self.run.lock().take();
        match open {
            Some(open) => self.record(open).await,
            None => Ok(()),
        }
    }

    /// Hands a run's record to the writer; its slot is acknowledged once the record is durable.
    async fn record(&self, open: Open) -> Result<(), Stopped> {
        let cost = self.tracker.cost(open.run.held());
        self.admit(cost).await?;
        let seq = self.tracker.push(open.settle, 1, cost);
        let done = Done::Ack(self.tracker.clone(), seq);
        self.rejected
            .submit(&open.path, open.run, done, &self.stop)
            .await
    }
}
