//! A sink's backlog: its own durable waiting room, `state_dir/backlog/SINK/`, so that a sink that
//! is slow, stalled or down never holds the source, and so never holds another sink.
//!
//! It is a [`Journal`] (segments, one writer with group commit and fsync, trimming, `max_bytes`):
//! the same machinery as a socket or HTTP source's, holding one line per event in the dead-letter
//! form (event, original line, source, offset, idempotency key), so what comes out of it is sent
//! byte for byte as it would have been, under its original key.
//!
//! A sink is in one of two modes, and its delivery is in one of three conditions:
//!
//! ```text
//!              first attempt worth another try fails, or a stall
//!   live ───────────────────────────────────────────────────────▶ spilling
//!   (workers send from the                                        (workers append what they take
//!    in-memory queue)    ◀───────────────────────────────────────  from the queue; one drainer
//!                         drainer has sent everything appended     sends the backlog oldest first)
//!
//!   up ──failure──▶ retrying ──failing for max_backoff_duration──▶ down
//!    ◀──────────────── any answer (delivered, or a final refusal) ───┘
//! ```
//!
//! - **Spilling.** A live attempt that fails in a way worth another try (connection error,
//!   timeout, a status in `retry_on`) is not retried in memory: its records go to the backlog, in
//!   one group that stays together (a batch keeps its key), and the sink turns to spilling. So
//!   does a stall: when the source finds the sink's queue full and no room made for
//!   [`STALL`], the attempts in flight are cut short and their records spilled first. While
//!   spilling, the workers append everything they take from the queue. A record counts as done
//!   for the sink (its line's position may be saved) once its backlog append is durable.
//! - **Draining.** One drainer sends the backlog oldest first, one request at a time (in order,
//!   whatever `concurrency`), trying each until the receiver answers: retrying, then down, where
//!   it probes with the oldest waiting event at most every `max_probe_interval`. Its position in
//!   the backlog is saved in the checkpoint book as `sink:NAME`, and segments before the saved
//!   position are deleted. When it has sent everything appended (checked under the gate the
//!   appends hold), the sink is live again.
//! - **Full.** With `when_full: dead_letter` an append that finds no room asks the drainer to
//!   dead-letter the oldest waiting events (at least the oldest segment, retryable: replayed by
//!   themselves once the sink delivers) and then waits for the room; with `block` it waits for
//!   the drainer, and the queue, then the source, wait with it.
//! - **Restart.** Everything appended survives `kill -9`; the drainer starts from the saved
//!   position (an event delivered after the last save is sent again, under the same key). A
//!   sink whose backlog holds events starts spilling, so new events queue behind them.

use super::dead_letter::DeadLetter;
use crate::checkpoint::CheckpointBook;
use crate::config::WhenFull;
use crate::journal::{AppendError, Journal, JournalReader};
use crate::position::Position;
use crate::record::Record;
use crate::sink::Sink;
use crate::source::lines::{LineSplitter, Piece};
use crate::status::SinkState;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a full queue may go without room being made before the sink counts as stalled.
pub const STALL: Duration = Duration::from_secs(1);

/// The longest backlog line read back: whatever the journal took (an append is at most its
/// `max_bytes`), so no entry written is ever skipped as too long, whatever `max_line_bytes` is
/// now; an entry is only as long as it was when written.
fn max_entry(backlog_bytes: u64) -> usize {
    usize::try_from(backlog_bytes).unwrap_or(usize::MAX)
}

/// One sink's backlog; shared by its workers, its drainer and the source side.
pub struct Backlog {
    sink: Arc<str>,
    journal: Journal,
    /// Its position's key in the checkpoint book.
    book_key: String,
    book: Arc<CheckpointBook>,
    when_full: WhenFull,
    /// `backlog.max_bytes` it was opened with.
    max_bytes: u64,
    /// Held while appending and while the drainer turns the sink live: a switch to live sees
    /// every append.
    gate: tokio::sync::Mutex<()>,
    /// Records go to the backlog, not to the receiver.
    spilling: AtomicBool,
    /// Spills under way: the sink is not turned live while one is.
    spills: std::sync::atomic::AtomicUsize,
    /// One spill writes at a time (the journal has one writer anyway): what spills hold in
    /// memory is one chunk, however many workers the sink has.
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The source found the queue full and no room made for [`STALL`].
    stalled: AtomicBool,
    stall_wake: Notify,
    /// An append found the backlog full (`when_full: dead_letter`).
    overflow: AtomicBool,
    overflow_wake: Notify,
    /// Wakes the drainer when spilling starts.
    wake: Notify,
    /// The drainer's next attempt not before this: the wait a live attempt that failed was told.
    hold: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The sink's board entry: its backlog gauges.
    state: Arc<SinkState>,
    /// Stops trimming when the backlog is dropped.
    trimming: CancellationToken,
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.trimming.cancel();
    }
}

/// `stop` fired before a spill was durable.
#[derive(Debug)]
pub struct Stopped;

/// Ends a spill: the drainer may turn the sink live again once it has sent what was appended.
struct SpillGuard<'a>(&'a Backlog);

impl Drop for SpillGuard<'_> {
    fn drop(&mut self) {
        self.0.spills.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

/// The most a spill encodes before appending it.
const CHUNK: usize = 64 * 1024;
/// While the backlog is full (`when_full: dead_letter`), how often an append looks for room.
const ROOM_CHECK: Duration = Duration::from_millis(50);

impl Backlog {
    /// What is said in the dead letters a full backlog makes.
    pub const OVERFLOW: &'static str =
        "the backlog was full (backlog.max_bytes); the oldest waiting events were dead-lettered";

    /// Opens (or makes) `sink`'s backlog in `state_dir/backlog/SINK/`, starting its trimming.
    pub fn open(state_dir: &Path, sink: &Sink, book: &Arc<CheckpointBook>) -> io::Result<Backlog> {
        let dir = state_dir.join("backlog").join(&*sink.name);
        crate::checkpoint::create_private_dir(&state_dir.join("backlog"))?;
        let book_key = format!("sink:{}", sink.name);
        let journal = Journal::open(&dir, sink.backlog_bytes, book.get(&book_key).as_ref())?;
        let trimming = CancellationToken::new();
        tokio::spawn(
            journal
                .clone()
                .trim(book.durable(&book_key), trimming.clone()),
        );
        let backlog = Backlog {
            sink: sink.name.clone(),
            journal,
            book_key,
            book: book.clone(),
            when_full: sink.when_full,
            max_bytes: sink.backlog_bytes,
            gate: tokio::sync::Mutex::new(()),
            spilling: AtomicBool::new(false),
            spills: std::sync::atomic::AtomicUsize::new(0),
            one_at_a_time: tokio::sync::Mutex::new(()),
            stalled: AtomicBool::new(false),
            stall_wake: Notify::new(),
            overflow: AtomicBool::new(false),
            overflow_wake: Notify::new(),
            wake: Notify::new(),
            hold: std::sync::Mutex::new(None),
            state: sink.metrics.state.clone(),
            trimming,
        };
        let (start, end) = (backlog.saved_offset(), backlog.journal.extent().1);
        if start.is_some_and(|s| s < end) || (start.is_none() && end > backlog.journal.extent().0) {
            backlog.spilling.store(true, Ordering::SeqCst);
        }
        Ok(backlog)
    }

    /// Where the drainer left off, if it has saved a position in this journal.
    fn saved_offset(&self) -> Option<u64> {
        match self.book.get(&self.book_key) {
            Some(Position::Journal { id, offset }) if id == *self.journal.id() => Some(offset),
            _ => None,
        }
    }

    /// Records go to the backlog rather than to the receiver.
    pub fn spilling(&self) -> bool {
        self.spilling.load(Ordering::Relaxed)
    }

    /// Said by the source side: the queue has been full for [`STALL`] with no room made.
    pub fn stall(&self) {
        if !self.spilling() && !self.stalled.swap(true, Ordering::SeqCst) {
            tracing::warn!(sink = %self.sink, "the sink's queue made no room for {}; its attempts in flight are cut short and its events wait in its backlog", humantime::format_duration(STALL));
            self.stall_wake.notify_waiters();
        }
    }

    /// Resolves once the sink is stalled (at once if it is).
    pub async fn stalled(&self) {
        loop {
            let woken = self.stall_wake.notified();
            if self.stalled.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    /// Resolves once an append found the backlog full (at once if one did).
    pub async fn overflowing(&self) {
        loop {
            let woken = self.overflow_wake.notified();
            if self.overflow.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    /// Appends `records` (kept together when they were `tried` as one and failed) and turns the
    /// sink to spilling; returns once they are durable, with the indices of those whose entry is
    /// larger than the whole backlog (for the dead-letter file), or `Err` if `stop` fired first
    /// (then none of them is acknowledged; what was appended is sent again, under its key). A
    /// write that fails (a full disk) is tried again until it succeeds or `stop` fires. Entries
    /// are encoded a chunk at a time, so a spill holds at most [`CHUNK`] of them in memory.
    pub async fn spill(
        &self,
        records: &[Arc<Record>],
        tried: u32,
        stop: &CancellationToken,
    ) -> Result<Vec<usize>, Stopped> {
        let _spill = self.begin_spill().await;
        let _alone = tokio::select! {
            alone = self.one_at_a_time.lock() => alone,
            _ = stop.cancelled() => return Err(Stopped),
        };
        let limit = CHUNK.min(self.journal.batch_limit()).max(1);
        let mut too_large = Vec::new();
        let mut at = 0;
        while at < records.len() {
            let (chunk, n) = encode_chunk(&self.sink, records, at, tried, limit);
            match self.append_durably(&chunk, stop).await? {
                true => {
                    let state = &self.state;
                    state.backlog_events.fetch_add(n as u64, Ordering::Relaxed);
                    state
                        .backlog_bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                false => too_large.extend(at..at + n),
            }
            at += n;
        }
        self.stalled.store(false, Ordering::SeqCst);
        Ok(too_large)
    }

    /// Marks a spill under way (the drainer does not turn the sink live meanwhile) and the sink
    /// spilling, under the gate; the guard ends the spill and wakes the drainer.
    async fn begin_spill(&self) -> SpillGuard<'_> {
        let _gate = self.gate.lock().await;
        self.spills.fetch_add(1, Ordering::SeqCst);
        self.spilling.store(true, Ordering::SeqCst);
        SpillGuard(self)
    }

    /// Appends `chunk` and waits until it is durable, trying again after a failed write; false if
    /// it is larger than the backlog may ever hold.
    async fn append_durably(
        &self,
        chunk: &[u8],
        stop: &CancellationToken,
    ) -> Result<bool, Stopped> {
        let mut wait = Duration::from_millis(200);
        loop {
            let appended = tokio::select! {
                a = self.append_chunk(chunk.to_vec()) => a,
                _ = stop.cancelled() => return Err(Stopped),
            };
            match appended {
                Ok(()) => return Ok(true),
                Err(AppendError::TooLarge) => return Ok(false),
                Err(e) => {
                    tracing::error!(sink = %self.sink, journal = %self.journal.dir().display(), error = %e, retry_in = ?wait, "cannot write the sink's backlog; holding these events until it can be");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => wait = (wait * 2).min(Duration::from_secs(30)),
                () = stop.cancelled() => return Err(Stopped),
            }
        }
    }

    /// One append, waiting for room; with `when_full: dead_letter`, a full backlog asks the
    /// drainer to make room (again every [`ROOM_CHECK`] while it is full).
    async fn append_chunk(&self, chunk: Vec<u8>) -> Result<(), AppendError> {
        if self.when_full == WhenFull::Block {
            return self.journal.append(chunk).await;
        }
        let mut chunk = chunk;
        loop {
            match self.journal.try_append_or_keep(chunk).await {
                Ok(done) => return done,
                Err(kept) => chunk = kept,
            }
            self.overflow.store(true, Ordering::SeqCst);
            self.overflow_wake.notify_waiters();
            self.wake.notify_one();
            tokio::time::sleep(ROOM_CHECK).await;
        }
    }

    /// The drainer's next attempt waits `wait` from now (at least).
    pub fn hold_for(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    /// Waits out a hold (an overflow cuts it short); false if `stop` fired.
    pub async fn held(&self, stop: &CancellationToken) -> bool {
        let until = self.hold.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(until) = until else {
            return true;
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => true,
            () = self.overflowing() => true,
            () = stop.cancelled() => false,
        }
    }

    /// Counts what waits from `from` to the end (at start: the gauges of a backlog left by an
    /// earlier run), reading it once off the async threads.
    pub async fn recount(&self, from: u64) {
        let mut reader = self.journal.reader(Some(from));
        let counted = tokio::task::spawn_blocking(move || {
            let (mut events, mut bytes, mut buf) = (0u64, 0u64, vec![0u8; 64 * 1024]);
            loop {
                match reader.read(&mut buf) {
                    // Bytes lost (said by the drainer when it gets there): counted past.
                    Ok(0) if reader.take_gap().is_some() => {}
                    Ok(0) | Err(_) => return (events, bytes),
                    Ok(n) => {
                        events += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                        bytes += n as u64;
                    }
                }
            }
        })
        .await
        .unwrap_or_default();
        self.state
            .backlog_events
            .store(counted.0, Ordering::Relaxed);
        self.state.backlog_bytes.store(counted.1, Ordering::Relaxed);
    }

    /// Turns the sink live if everything appended has been sent (`sent_to` is where the drainer
    /// is) and no spill is under way; under the gate, so no spill starts between the check and
    /// the switch.
    async fn go_live_if_done(&self, sent_to: u64) -> bool {
        let _gate = self.gate.lock().await;
        if self.spills.load(Ordering::SeqCst) > 0 || self.journal.extent().1 != sent_to {
            return false;
        }
        self.spilling.store(false, Ordering::SeqCst);
        self.state.backlog_events.store(0, Ordering::Relaxed);
        self.state.backlog_bytes.store(0, Ordering::Relaxed);
        true
    }

    /// Saves the drainer's position: everything before `offset` is done.
    fn done_to(&self, offset: u64, events: usize, bytes: u64) {
        let position = Position::Journal {
            id: self.journal.id().clone(),
            offset,
        };
        self.book.set(&self.book_key, position);
        let less = |n: u64| move |v: u64| Some(v.saturating_sub(n));
        let state = &self.state;
        let _ = state.backlog_events.fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            less(events as u64),
        );
        let _ = state
            .backlog_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, less(bytes));
    }
}

/// Backlog lines for `records[from..]`, as many as fit in `limit` bytes (at least one): each a
/// dead letter's form with the attempts made. Records tried as one (more than one) that fit in
/// `limit` together are kept as one group: one chunk, its first entry saying how many, so the
/// drainer never reads part of it and sends them again under the same key. A larger group is
/// not kept together (it could not be appended at once): its records go as any others. Returns
/// the lines and how many records they hold.
fn encode_chunk(
    sink: &str,
    records: &[Arc<Record>],
    from: usize,
    tried: u32,
    limit: usize,
) -> (Vec<u8>, usize) {
    let together = tried > 0 && from == 0 && records.len() > 1 && fits(records, limit);
    let mut chunk = Vec::new();
    let mut n = 0;
    for (i, r) in records.iter().enumerate().skip(from) {
        let mut entry = DeadLetter::new(sink, r, tried, "waiting in the backlog");
        if together && i == 0 {
            entry.group = u32::try_from(records.len()).ok();
        }
        let line = serde_json::to_vec(&entry).unwrap_or_default();
        if n > 0 && !together && chunk.len() + line.len() + 1 > limit {
            break;
        }
        chunk.extend_from_slice(&line);
        chunk.push(b'\n');
        n += 1;
    }
    (chunk, n)
}

/// Whether the entries of `records` come to at most `limit` bytes, by a generous estimate: an
/// entry holds the line and the event (in all about twice the line), and some fields.
fn fits(records: &[Arc<Record>], limit: usize) -> bool {
    let estimate: usize = records.iter().map(|r| 2 * r.line().len() + 512).sum();
    estimate <= limit
}

/// The backlogs of the running sinks, kept across reloads (a journal is opened once).
#[derive(Default)]
pub struct Backlogs(HashMap<String, Arc<Backlog>>);

impl Backlogs {
    /// Opens the backlogs of `sinks` not open yet; an error names the sink.
    pub fn open_all<'a>(
        &mut self,
        state_dir: &Path,
        sinks: impl IntoIterator<Item = &'a Sink>,
        book: &Arc<CheckpointBook>,
    ) -> anyhow::Result<()> {
        let sinks: Vec<&Sink> = sinks.into_iter().collect();
        let names: Vec<&str> = sinks.iter().map(|s| &*s.name).collect();
        Backlogs::warn_left_behind(state_dir, &names, book);
        for sink in sinks {
            if let Some(open) = self.0.get(&*sink.name)
                && (open.max_bytes, open.when_full) != (sink.backlog_bytes, sink.when_full)
            {
                tracing::warn!(sink = %sink.name, "backlog.max_bytes and backlog.when_full of a running sink change at the next restart, not on reload");
            }
            if !self.0.contains_key(&*sink.name) {
                let backlog = Backlog::open(state_dir, sink, book).map_err(|e| {
                    anyhow::anyhow!("sink {}: cannot open its backlog: {e}", sink.name)
                })?;
                self.0.insert(sink.name.to_string(), Arc::new(backlog));
            }
        }
        Ok(())
    }

    /// Says (a warning each) which backlogs under `state_dir` belong to no sink of the config
    /// and still hold events: a sink renamed or removed leaves them there, undelivered.
    pub fn warn_left_behind(state_dir: &Path, sinks: &[&str], book: &CheckpointBook) {
        let Ok(dirs) = std::fs::read_dir(state_dir.join("backlog")) else {
            return;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if sinks.contains(&name.as_str()) || !dir.path().is_dir() {
                continue;
            }
            let saved = book.get(&format!("sink:{name}"));
            match crate::journal::bytes_past(&dir.path(), saved.as_ref()) {
                Ok(0) | Err(_) => {}
                Ok(bytes) => {
                    tracing::warn!(backlog = %dir.path().display(), bytes, "the backlog of a sink named {name:?}, which the config no longer has, holds events not delivered; give a sink that name again to send them");
                }
            }
        }
    }

    /// The backlog of sink `name`, if it was opened.
    pub fn get(&self, name: &str) -> Option<Arc<Backlog>> {
        self.0.get(name).cloned()
    }
}

/// A group of records read back from the backlog, and where it ends there.
pub struct Group {
    pub records: Vec<Arc<Record>>,
    /// The backlog offset after its last entry.
    pub end: u64,
    /// Its entries' bytes.
    pub bytes: u64,
    /// Attempts made before it was spilled.
    pub tried: u32,
}

/// An entry decoded and not yet grouped.
struct Ahead {
    record: Arc<Record>,
    /// Its byte range in the backlog.
    start: u64,
    end: u64,
    /// How many were sent together with it (on the first of them).
    together: Option<u32>,
    /// Attempts made before it was spilled.
    tried: u32,
}

/// Reads a backlog's entries back in order, as groups of records for one request.
pub struct Entries {
    reader: JournalReader,
    splitter: LineSplitter,
    /// Decoded entries not yet grouped.
    ahead: VecDeque<Ahead>,
    sink: Arc<str>,
}

impl Entries {
    /// Entries from the drainer's saved position (or the backlog's start).
    pub fn of(backlog: &Backlog) -> Entries {
        let reader = backlog.journal.reader(backlog.saved_offset());
        let splitter = LineSplitter::new(reader.position(), max_entry(backlog.max_bytes));
        Entries {
            reader,
            splitter,
            ahead: VecDeque::new(),
            sink: backlog.sink.clone(),
        }
    }

    /// Where the next entry starts: everything before it was taken.
    pub fn position(&self) -> u64 {
        self.ahead
            .front()
            .map_or(self.splitter.pending().0, |a| a.start)
    }

    /// The next group of at most `max` records (a group sent together before stays whole), or
    /// `None` when everything durable has been taken.
    pub fn next_group(&mut self, max: usize) -> io::Result<Option<Group>> {
        self.fill(max.max(1))?;
        let Some(first) = self.ahead.front() else {
            return Ok(None);
        };
        let take = first.together.map_or(max.max(1), |n| n as usize);
        let take = take.min(self.ahead.len());
        let mut group = Group {
            records: Vec::with_capacity(take),
            end: 0,
            bytes: 0,
            tried: first.tried,
        };
        for a in self.ahead.drain(..take) {
            group.records.push(a.record);
            group.end = a.end;
            group.bytes += a.end - a.start;
        }
        Ok(Some(group))
    }

    /// Decodes entries until `want` are ahead or nothing durable is left.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        loop {
            let wanted = self
                .ahead
                .front()
                .and_then(|a| a.together)
                .map_or(want, |n| n as usize);
            if self.ahead.len() >= wanted {
                return Ok(());
            }
            match self.splitter.next_piece() {
                Some(piece) => self.decode(piece),
                None if self.splitter.fill_from(&mut self.reader)? > 0 => {}
                None => match self.reader.take_gap() {
                    Some(gap) => self.lost(gap),
                    None => return Ok(()),
                },
            }
        }
    }

    /// Bytes of the backlog that cannot be read (a segment deleted or damaged): what they held
    /// is lost, said as loudly as the journal of a source says it, and reading goes on after.
    fn lost(&mut self, gap: crate::journal::Gap) {
        let (from, partial) = self.splitter.pending();
        let from = from.min(gap.start);
        let partial = partial.len();
        tracing::error!(sink = %self.sink, start = from, end = gap.end, partial_bytes = partial, "events lost from the sink's backlog: bytes {}..{}: {}", gap.start, gap.end, gap.why);
        crate::metrics::get().backlog_lost(&self.sink);
        self.splitter.reset(gap.end);
    }

    fn decode(&mut self, piece: Piece) {
        let (start, end) = piece.range();
        let Piece::Line { text, .. } = piece else {
            tracing::error!(sink = %self.sink, offset = start, "a backlog entry is longer than any event; skipped");
            return;
        };
        let entry = serde_json::from_slice::<DeadLetter>(&text)
            .map_err(|e| e.to_string())
            .and_then(|letter| Ok((letter.to_record()?, letter.group, letter.attempts)));
        match entry {
            Ok((record, together, tried)) => self.ahead.push_back(Ahead {
                record: Arc::new(record),
                start,
                end,
                together,
                tried,
            }),
            Err(e) => {
                tracing::error!(sink = %self.sink, offset = start, error = %e, "a backlog entry cannot be read (damaged?); skipped")
            }
        }
    }

    /// Waits until something is appended past what was read, or `stop`; false on stop.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        self.reader.wait(stop).await
    }
}

/// Turns the sink live once the drainer has sent everything; true if it did.
pub async fn caught_up(backlog: &Backlog, entries: &Entries) -> bool {
    entries.ahead.is_empty()
        && entries.splitter.pending().1.is_empty()
        && backlog.go_live_if_done(entries.position()).await
}

/// Says the drainer is done with `group` (delivered or dead-lettered).
pub fn sent(backlog: &Backlog, group: &Group) {
    backlog.done_to(group.end, group.records.len(), group.bytes);
}

/// Whether an overflow asks the drainer to make room, and how far: the end of the oldest
/// segment, which trimming can then delete.
pub fn overflow_until(backlog: &Backlog) -> Option<u64> {
    if !backlog.overflow.load(Ordering::SeqCst) {
        return None;
    }
    Some(backlog.journal.first_segment_end())
}

/// The drainer has made room up to where it was asked to.
pub fn overflow_done(backlog: &Backlog) {
    backlog.overflow.store(false, Ordering::SeqCst);
}

/// Waits until spilling starts or an overflow asks for room.
pub async fn wake(backlog: &Backlog) {
    backlog.wake.notified().await
}
