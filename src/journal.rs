//! A source's journal: `state_dir/journal/SOURCE/`, an append-only, segmented log of lines that
//! socket and HTTP sources write before they acknowledge anything.
//!
//! - **Layout.** Segments are files named by the offset of their first byte in the journal's
//!   stream (`00000000000000000000.seg`), so a position is one number and reading goes from one
//!   segment to the next with no guessing. `id` holds a random id made with the journal, used in
//!   idempotency keys (a journal made anew gets new keys).
//! - **Writing.** One thread per journal takes every append waiting (from all clients or
//!   requests), writes them with one `write` and makes them durable with one `fdatasync` (group
//!   commit); only then is each append answered. Segments end at batch boundaries, so every
//!   segment holds whole lines; a segment that reaches its size is closed right after the commit
//!   that filled it, so the segment being written (the one trimming cannot delete) stays small.
//!   Writes go at explicit offsets; one that fails is cut back off and its appends refused.
//!   A caller may hand over appends without waiting for each ([`Journal::submit`]); those in
//!   one [`Chain`] (a socket client's) are refused after the first of them that fails, so a
//!   client's lines are never written after a gap.
//! - **Bounded.** `max_bytes` bounds what the segments hold: an append first takes its size from a
//!   budget that trimming gives back; when it is spent, [`Journal::append`] waits (the socket then
//!   stops reading) or [`Journal::try_append`] refuses (HTTP answers 503). Nothing accepted is
//!   ever dropped.
//! - **Trimming.** [`Journal::trim`] follows the source's durable checkpoint and deletes the
//!   segments wholly before it. The segment being written is kept, unless an append found no
//!   room: then, once all of it is delivered, a new segment is started and it is deleted too, so
//!   an append that fits `max_bytes` is always taken once what came before it is delivered.
//! - **Reading.** [`JournalReader`] reads lines in order across segments, only up to what has been
//!   made durable: a line is never dispatched before it would survive a crash.
//! - **Start.** A last segment that ends in a partial line (a crash mid-write, never answered) is
//!   cut back to its last newline, and the segment is fsynced (bytes a killed process left in the
//!   page cache are made durable before they count). If the segment being written is lost (the
//!   last one left is full, or the source's checkpoint lies past the end, or none is left), a
//!   new segment starts past the most it can have held (all segments together hold at most
//!   `max_bytes`), so an offset, and the idempotency key made from it, is never reused.
//! - **Damage.** Segments deleted, cut short, replaced (by a directory, say) or unreadable never
//!   stop the journal: the reader skips what it cannot read up to the next readable offset and
//!   reports the [`Gap`] (the source records it), and the writer, finding the segment it writes
//!   deleted, cut or replaced, goes on in a new one (in the directory made again, with its id,
//!   if the whole directory was deleted). Names that are not segment names are left alone
//!   (warned about); a lost `id` is taken back from the source's checkpoint.

use crate::checkpoint::{create_private_dir, sync_dir};
use crate::position::Position;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// A new segment is started once the current one holds this much (or `max_bytes / 4`, if less).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Appends waiting for the writer.
const QUEUE: usize = 1024;
/// The highest segment name taken as one: offsets stay far from overflowing.
const MAX_BASE: u64 = 1 << 62;

/// Why an append was not taken.
#[derive(Debug)]
pub enum AppendError {
    /// The journal holds `max_bytes` already (only from [`Journal::try_append`]).
    Full,
    /// Larger than the whole journal may ever hold.
    TooLarge,
    /// The write or its fsync failed, or the journal is shut down.
    Io(String),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Full => f.write_str("the journal is full (journal.max_bytes)"),
            AppendError::TooLarge => f.write_str("larger than journal.max_bytes"),
            AppendError::Io(e) => write!(f, "cannot write the journal: {e}"),
        }
    }
}

/// One segment: where it starts in the stream and how long it is.
#[derive(Debug, Clone, Copy)]
struct Segment {
    base: u64,
    len: u64,
}

struct State {
    /// Oldest first; the last one is being written.
    segments: VecDeque<Segment>,
}

struct Append {
    bytes: Vec<u8>,
    /// The append's share of the budget: kept by the journal once written, given back if the
    /// append fails or never reaches the writer.
    permit: OwnedSemaphorePermit,
    done: oneshot::Sender<Result<(), String>>,
    /// The appends this one must follow, if any: once one of them fails, the rest are refused.
    chain: Option<Chain>,
}

/// Appends that must be written in order, all or a prefix (one socket client's): once one of
/// them fails, the writer refuses the rest instead of writing later lines after a gap.
#[derive(Debug, Clone, Default)]
pub struct Chain(Arc<std::sync::atomic::AtomicBool>);

impl Chain {
    fn broken(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn break_off(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An append the writer has, not yet known to be durable.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<(), String>>);

impl Pending {
    /// Once the append is durable; an error if its write or fsync failed. Cancelling the wait
    /// leaves the append as it was; once it has answered, it must not be asked again.
    pub async fn durable(&mut self) -> Result<(), AppendError> {
        (&mut self.0)
            .await
            .unwrap_or_else(|_| Err("the journal writer stopped".into()))
            .map_err(AppendError::Io)
    }
}

struct Shared {
    dir: PathBuf,
    id: Arc<str>,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Bytes the segments may still take (permits, one per byte).
    budget: Arc<Semaphore>,
    /// End of the durable stream: readers read up to here.
    committed: watch::Sender<u64>,
    /// The segment being written, open (the writer's; taken by trimming to start a new one).
    writer: Mutex<Option<(u64, File)>>,
    /// Held while segments are deleted, so two trims never delete the same one.
    trimming: Mutex<()>,
    /// The source's durable position in this journal: everything before it is delivered.
    delivered: AtomicU64,
    /// An append found no room: the segment being written is closed as soon as all of it is
    /// delivered, so its bytes can be given back.
    short: AtomicBool,
}

/// A source's journal; cheap to clone. The writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    appends: mpsc::Sender<Append>,
}

impl Journal {
    /// Opens (or makes) the journal in `dir`, with room for `max_bytes`. `checkpoint` is the
    /// source's saved position: a journal made anew starts its stream there, so positions never
    /// go backwards.
    pub fn open(dir: &Path, max_bytes: u64, checkpoint: Option<&Position>) -> io::Result<Journal> {
        let made = !dir.exists();
        create_private_dir(dir)?;
        if made && let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let (mut segments, unreadable) = list_segments(dir)?;
        let (id, kept) = journal_id(dir, checkpoint, !segments.is_empty())?;
        let id: Arc<str> = id.into();
        // The source's position in this journal, if it has one here.
        let saved = match checkpoint {
            Some(Position::Journal { id: of, offset }) if *of == id => Some(*offset),
            _ => None,
        };
        let segment_bytes = SEGMENT_BYTES.min((max_bytes / 4).max(1));
        let lost = Lost {
            unreadable: unreadable.max(mend_last(dir, &mut segments)),
            kept,
            saved,
        };
        let floor = past_lost_tail(dir, &segments, lost, segment_bytes, max_bytes);
        start_segment(dir, &mut segments, saved, floor)?;
        let size: u64 = segments.iter().map(|s| s.len).sum();
        let end = segments.back().map_or(0, |s| s.base + s.len);
        let budget = usize::try_from(max_bytes.saturating_sub(size))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            id,
            max_bytes,
            segment_bytes,
            state: Mutex::new(State { segments }),
            budget: Arc::new(Semaphore::new(budget)),
            committed: watch::channel(end).0,
            writer: Mutex::new(None),
            trimming: Mutex::new(()),
            delivered: AtomicU64::new(saved.unwrap_or(0)),
            short: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("flagtail-journal".into())
            .spawn(move || write_loop(&writer, rx))?;
        Ok(Journal {
            shared,
            appends: tx,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The journal's id, for idempotency keys and positions.
    pub fn id(&self) -> &Arc<str> {
        &self.shared.id
    }

    /// The most one append should carry: a segment is started past this size too, so once the
    /// segments before the one being written are trimmed there is always room for one more.
    pub fn batch_limit(&self) -> usize {
        usize::try_from(self.shared.segment_bytes).unwrap_or(usize::MAX)
    }

    /// Where the stream kept in the segments starts, and where its durable part ends.
    pub fn extent(&self) -> (u64, u64) {
        let start = self.shared.lock().segments.front().map_or(0, |s| s.base);
        (start, *self.shared.committed.borrow())
    }

    /// Where the oldest segment ends: what must be done with before trimming frees anything.
    pub fn first_segment_end(&self) -> u64 {
        let st = self.shared.lock();
        match (st.segments.front(), st.segments.len()) {
            (Some(s), 1) => s.base + s.len.max(self.shared.segment_bytes),
            (Some(s), _) => s.base + s.len,
            (None, _) => 0,
        }
    }

    /// Bytes the segments hold now.
    pub fn size(&self) -> u64 {
        self.shared.lock().segments.iter().map(|s| s.len).sum()
    }

    /// Appends `bytes` (whole lines, each ending in `\n`) and returns once they are durable,
    /// waiting for room if the journal is full.
    pub async fn append(&self, bytes: Vec<u8>) -> Result<(), AppendError> {
        self.submit(bytes, None).await?.durable().await
    }

    /// Hands `bytes` (whole lines, each ending in `\n`) to the writer, waiting for room if the
    /// journal is full, but not for the write: [`Pending::durable`] says when they are durable.
    /// One caller's submissions are written in the order submitted; those in one `chain` are
    /// refused after the first of them that fails.
    pub async fn submit(
        &self,
        bytes: Vec<u8>,
        chain: Option<&Chain>,
    ) -> Result<Pending, AppendError> {
        let n = self.cost(&bytes)?;
        let permit = match self.take_room(n).await? {
            Some(permit) => permit,
            None => self
                .shared
                .budget
                .clone()
                .acquire_many_owned(n)
                .await
                .map_err(|_| AppendError::Io("the journal is closed".into()))?,
        };
        self.hand_over(bytes, permit, chain.cloned()).await
    }

    /// Like [`Journal::append`], but refuses at once when the journal is full.
    pub async fn try_append(&self, bytes: Vec<u8>) -> Result<(), AppendError> {
        let n = self.cost(&bytes)?;
        let permit = self.take_room(n).await?.ok_or(AppendError::Full)?;
        self.hand_over(bytes, permit, None).await?.durable().await
    }

    /// Like [`Journal::try_append`], but gives `bytes` back (`Err`) when there is no room, so a
    /// caller that waits for room does not copy them for each try.
    pub async fn try_append_or_keep(
        &self,
        bytes: Vec<u8>,
    ) -> Result<Result<(), AppendError>, Vec<u8>> {
        let n = match self.cost(&bytes) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let permit = match self.take_room(n).await {
            Ok(Some(permit)) => permit,
            Ok(None) => return Err(bytes),
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.hand_over(bytes, permit, None).await {
            Ok(mut pending) => pending.durable().await,
            Err(e) => Err(e),
        })
    }

    /// `n` bytes of the budget if they are free now, or once the segment being written is closed
    /// and deleted because all of it is delivered (its bytes would otherwise stay taken until more
    /// is appended, which a full journal refuses). `None` if there is no room yet: the segment is
    /// then closed as soon as the source's position reaches its end.
    async fn take_room(&self, n: u32) -> Result<Option<OwnedSemaphorePermit>, AppendError> {
        let take = || match self.shared.budget.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(Some(permit)),
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(AppendError::Io("the journal is closed".into())),
        };
        if let Some(permit) = take()? {
            return Ok(Some(permit));
        }
        self.shared.short.store(true, Ordering::SeqCst);
        let upto = self.shared.delivered.load(Ordering::SeqCst);
        if !self.shared.all_delivered(upto) {
            return Ok(None);
        }
        self.reclaim(upto).await;
        take()
    }

    /// [`Shared::reclaim`] off the async threads; a failure is logged (and tried again at the
    /// next checkpoint).
    async fn reclaim(&self, upto: u64) {
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || shared.reclaim(upto)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(journal = %self.shared.dir.display(), error = %e, "cannot delete journal segments; trying again after the next checkpoint")
            }
            Err(e) => tracing::error!(error = %e, "journal trimming failed"),
        }
    }

    fn cost(&self, bytes: &[u8]) -> Result<u32, AppendError> {
        if bytes.len() as u64 > self.shared.max_bytes {
            return Err(AppendError::TooLarge);
        }
        u32::try_from(bytes.len()).map_err(|_| AppendError::TooLarge)
    }

    async fn hand_over(
        &self,
        bytes: Vec<u8>,
        permit: OwnedSemaphorePermit,
        chain: Option<Chain>,
    ) -> Result<Pending, AppendError> {
        let (done, answer) = oneshot::channel();
        let append = Append {
            bytes,
            permit,
            done,
            chain,
        };
        // If this is cancelled, or the writer refuses, the permit inside goes back to the budget.
        self.appends
            .send(append)
            .await
            .map_err(|_| AppendError::Io("the journal writer stopped".into()))?;
        Ok(Pending(answer))
    }

    /// Deletes the segments wholly before the source's durable position, each time it moves,
    /// until `stop`. Their bytes go back to the budget. Once an append found no room, the
    /// segment being written is closed and deleted too as soon as all of it is delivered.
    pub async fn trim(
        self,
        mut durable: watch::Receiver<Option<Position>>,
        stop: CancellationToken,
    ) {
        loop {
            // Only a position in this journal says what this journal may delete.
            let upto = match &*durable.borrow_and_update() {
                Some(Position::Journal { id, offset }) if *id == self.shared.id => Some(*offset),
                _ => None,
            };
            if let Some(upto) = upto {
                self.shared.delivered.store(upto, Ordering::SeqCst);
                self.reclaim(upto).await;
            }
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }

    /// A reader from `offset` (the source's position in this journal), or from the stream's start.
    pub fn reader(&self, offset: Option<u64>) -> JournalReader {
        let (first, end) = {
            let st = self.shared.lock();
            let first = st.segments.front().map_or(0, |s| s.base);
            let end = st.segments.back().map_or(0, |s| s.base + s.len);
            (first, end)
        };
        let start = match offset {
            // Before the first segment only if segments were lost: the reader records the gap.
            Some(o) if o <= end => o,
            Some(o) => {
                tracing::warn!(journal = %self.shared.dir.display(), checkpoint = o, first, end, "the checkpoint is not in the journal (was it deleted or replaced?); reading it from its start");
                first
            }
            // No position yet: nothing was trimmed, the stream starts at 0 (bytes lost before
            // the first segment are a gap).
            None => 0,
        };
        JournalReader {
            shared: self.shared.clone(),
            committed: self.shared.committed.subscribe(),
            pos: start,
            open: None,
            gap: None,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the segment being written holds something and all of it is before `upto`.
    fn all_delivered(&self, upto: u64) -> bool {
        let st = self.lock();
        st.segments
            .back()
            .is_some_and(|s| s.len > 0 && s.base + s.len <= upto)
    }

    /// Deletes what is delivered (before `upto`): the segments wholly before it, and, if an
    /// append found no room, the segment being written once all of it is delivered (a new one is
    /// started in its place).
    fn reclaim(&self, upto: u64) -> io::Result<()> {
        let _trimming = self.trimming.lock().unwrap_or_else(PoisonError::into_inner);
        if self.short.load(Ordering::SeqCst) {
            let mut file = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            if self.all_delivered(upto) {
                let end = self.lock().segments.back().map_or(0, |s| s.base + s.len);
                roll_over(self, &mut file, end)?;
                self.short.store(false, Ordering::SeqCst);
            }
        }
        self.trim(upto)
    }

    fn trim(&self, upto: u64) -> io::Result<()> {
        let mut freed = 0u64;
        let result = loop {
            let gone = {
                let st = self.lock();
                match (st.segments.front(), st.segments.len()) {
                    (Some(s), n) if n > 1 && s.base + s.len <= upto => *s,
                    _ => break Ok(()),
                }
            };
            let path = segment_path(&self.dir, gone.base);
            match fs::symlink_metadata(&path) {
                Ok(meta) if !meta.is_file() => {
                    tracing::warn!(path = %path.display(), "a journal segment was replaced by something that is not a file; leaving it in place")
                }
                _ => match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => break Err(e),
                },
            }
            self.lock().segments.pop_front();
            freed += gone.len;
        };
        // What was deleted goes back to the budget whatever happened after.
        if freed > 0 {
            self.budget
                .add_permits(usize::try_from(freed).unwrap_or(usize::MAX));
        }
        result?;
        if freed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The writer thread: group commits until every [`Journal`] is dropped.
fn write_loop(shared: &Shared, mut appends: mpsc::Receiver<Append>) {
    while let Some(first) = appends.blocking_recv() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        // A group stays within about one segment, so the segment it closes is trimmable soon.
        let group_bytes = usize::try_from(shared.segment_bytes).unwrap_or(usize::MAX);
        let mut next = Some(first);
        while let Some(a) = next.take() {
            if a.chain.as_ref().is_some_and(Chain::broken) {
                // Its permit goes back to the budget.
                let _ = a
                    .done
                    .send(Err("an earlier append of its client failed".into()));
            } else {
                bytes += a.bytes.len();
                batch.push(a);
            }
            if bytes < group_bytes {
                next = appends.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let result = {
            let mut file = shared.writer.lock().unwrap_or_else(PoisonError::into_inner);
            commit(shared, &mut file, &batch).map_err(|e| e.to_string())
        };
        if let Err(e) = &result {
            tracing::error!(journal = %shared.dir.display(), error = %e, "cannot write the journal; the appends are refused");
        }
        for a in batch {
            match &result {
                // Written: its share of the budget stays taken until trimming gives it back.
                Ok(()) => a.permit.forget(),
                Err(_) => {
                    drop(a.permit);
                    if let Some(chain) = &a.chain {
                        chain.break_off();
                    }
                }
            }
            let _ = a.done.send(result.clone());
        }
    }
}

/// Writes `batch` at the end of the current segment and fsyncs; then, if the segment is full,
/// starts the next one.
fn commit(shared: &Shared, file: &mut Option<(u64, File)>, batch: &[Append]) -> io::Result<()> {
    let (base, len) = current_segment(shared, file)?;
    let Some((_, f)) = file.as_mut() else {
        return Err(io::Error::other("no segment open"));
    };
    let size: u64 = batch.iter().map(|a| a.bytes.len() as u64).sum();
    // At an explicit offset: bytes a failed write left behind are overwritten, never followed.
    let written = write_group(f, batch, len).and_then(|()| f.sync_data());
    if let Err(e) = written {
        let _ = f.set_len(len);
        *file = None;
        return Err(e);
    }
    let end = base + len + size;
    {
        let mut st = shared.lock();
        if let Some(last) = st.segments.back_mut() {
            last.len += size;
        }
    }
    shared.committed.send_replace(end);
    if end - base >= shared.segment_bytes
        && let Err(e) = roll_over(shared, file, end)
    {
        tracing::error!(journal = %shared.dir.display(), error = %e, "cannot start a new journal segment; trying again at the next append");
    }
    Ok(())
}

/// Opens the segment to write (`file`) and returns its base and length: the last one, or a new
/// one if the last is full, or was deleted, cut short or replaced since it was written (its
/// bytes are then a gap the reader records; the appends go on in a file that survives a restart).
fn current_segment(shared: &Shared, file: &mut Option<(u64, File)>) -> io::Result<(u64, u64)> {
    let (mut base, mut len) = {
        let st = shared.lock();
        st.segments.back().map_or((0, 0), |s| (s.base, s.len))
    };
    // A rollover that failed after an earlier commit is tried again first.
    if len >= shared.segment_bytes {
        roll_over(shared, file, base + len)?;
        (base, len) = (base + len, 0);
    }
    let Err(e) = open_intact(shared, file, base, len) else {
        return Ok((base, len));
    };
    tracing::warn!(segment = %segment_path(&shared.dir, base).display(), error = %e, "the journal segment being written was deleted, cut short or replaced; going on in a new one");
    let at = match roll_over(shared, file, base + len) {
        Ok(()) => base + len,
        Err(e) if len > 0 => return Err(e),
        // An empty segment's own name is taken by something that is not a segment.
        Err(_) => {
            roll_over(shared, file, base + 1)?;
            base + 1
        }
    };
    open_intact(shared, file, at, 0)?;
    Ok((at, 0))
}

/// Opens the segment at `base` into `file` (unless open already) and checks that it is still
/// the segment written: a file, linked, at least `len` bytes long.
fn open_intact(
    shared: &Shared,
    file: &mut Option<(u64, File)>,
    base: u64,
    len: u64,
) -> io::Result<()> {
    if file.as_ref().is_none_or(|(b, _)| *b != base) {
        *file = None;
        // A link put in a segment's place is not followed: the segment is then damaged.
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(segment_path(&shared.dir, base))?;
        *file = Some((base, f));
    }
    let Some((_, f)) = file.as_ref() else {
        return Err(io::Error::other("no segment open"));
    };
    let meta = f.metadata()?;
    if meta.nlink() == 0 || !meta.is_file() || meta.len() < len {
        *file = None;
        return Err(io::Error::other(format!(
            "deleted, replaced or cut short ({} of {len} bytes left)",
            meta.len()
        )));
    }
    Ok(())
}

/// Writes the appends' bytes one after another from `offset`, gathered by the kernel (no copy
/// into one buffer first).
fn write_group(f: &mut File, batch: &[Append], offset: u64) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|a| IoSlice::new(&a.bytes)).collect();
    let mut rest = &mut slices[..];
    // Empty appends are dropped first: a write of nothing returns 0, which is not a failure.
    IoSlice::advance_slices(&mut rest, 0);
    f.seek(SeekFrom::Start(offset))?;
    while !rest.is_empty() {
        match f.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts the segment at stream offset `base`.
fn roll_over(shared: &Shared, file: &mut Option<(u64, File)>, base: u64) -> io::Result<()> {
    *file = None;
    match create_segment(&shared.dir, base) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dir_again(shared)?;
            create_segment(&shared.dir, base)?;
        }
        made => made?,
    }
    let mut st = shared.lock();
    // An empty segment made again where it was (deleted before anything was written to it).
    if st.segments.back().is_none_or(|s| s.base != base) {
        st.segments.push_back(Segment { base, len: 0 });
    }
    Ok(())
}

/// The journal's directory was deleted while it ran (an operator cleaning up): made again, with
/// its id, so appends go on and a restart reads on under the same keys.
fn make_dir_again(shared: &Shared) -> io::Result<()> {
    tracing::warn!(journal = %shared.dir.display(), "the journal's directory was deleted; making it again (what its segments held is lost)");
    create_private_dir(&shared.dir)?;
    if let Some(parent) = shared.dir.parent() {
        sync_dir(parent)?;
    }
    crate::checkpoint::write_atomically(&shared.dir.join("id"), shared.id.as_bytes())
}

/// Bytes the journal lost (a segment deleted, cut short, replaced or unreadable): the reader
/// skips them and says so, so the source records the gap and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub start: u64,
    pub end: u64,
    /// What happened to them.
    pub why: String,
}

/// Reads a journal's lines in order, up to what is durable.
pub struct JournalReader {
    shared: Arc<Shared>,
    committed: watch::Receiver<u64>,
    /// Stream offset of the next byte to read.
    pos: u64,
    /// The segment being read: its base, its file.
    open: Option<(u64, File)>,
    /// Bytes skipped and not yet taken by [`JournalReader::take_gap`]; reading waits until then.
    gap: Option<Gap>,
}

impl JournalReader {
    /// Stream offset of the next byte [`JournalReader::read`] returns.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Waits until there is something past the read position, or `stop`; false on stop.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        loop {
            if *self.committed.borrow_and_update() > self.pos {
                return true;
            }
            tokio::select! {
                changed = self.committed.changed() => if changed.is_err() { return false },
                _ = stop.cancelled() => return false,
            }
        }
    }

    /// The bytes the last read skipped, if it did: it returned 0 and the read position is past
    /// them. Reading goes on once it is taken.
    pub fn take_gap(&mut self) -> Option<Gap> {
        self.gap.take()
    }

    /// Reads durable bytes at the read position into `buf`; 0 when there are none yet, or when
    /// bytes were lost (see [`JournalReader::take_gap`]). What cannot be read for good (missing,
    /// cut short, not a file, an I/O error) is a gap; an error that says nothing of the segment
    /// (out of file descriptors or memory) is returned, and the read position stays.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let committed = *self.committed.borrow();
        if self.gap.is_some() || self.pos >= committed {
            return Ok(0);
        }
        let (segment, next) = {
            let st = self.shared.lock();
            let holds = st
                .segments
                .iter()
                .find(|s| s.base <= self.pos && self.pos < s.base + s.len)
                .copied();
            let next = st
                .segments
                .iter()
                .find(|s| s.base > self.pos)
                .map(|s| s.base);
            (holds, next)
        };
        let Some(segment) = segment else {
            let end = next.unwrap_or(committed);
            let why = "no segment holds them (deleted, cut short or not a file; where the \
                       segment being written was lost, the most it can have held)";
            return Ok(self.skip(end, why.into()));
        };
        match self.read_in(segment, committed, buf) {
            Ok(0) => Ok(self.skip(
                segment.base + segment.len,
                format!("{} is shorter than recorded", segment_name(segment.base)),
            )),
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            // Out of file descriptors or memory says nothing of the segment: the read is tried
            // again later from where it is, never skipped.
            Err(e) if passing(&e) => {
                self.open = None;
                Err(e)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(self.skip(
                segment.base + segment.len,
                format!("{} is missing", segment_name(segment.base)),
            )),
            Err(e) => Ok(self.skip(
                segment.base + segment.len,
                format!("{} cannot be read: {e}", segment_name(segment.base)),
            )),
        }
    }

    /// Reads from `segment`, up to `committed`.
    fn read_in(&mut self, segment: Segment, committed: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.open.as_ref().is_none_or(|(b, _)| *b != segment.base) {
            self.open = None;
            let mut f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(segment_path(&self.shared.dir, segment.base))?;
            f.seek(SeekFrom::Start(self.pos - segment.base))?;
            self.open = Some((segment.base, f));
        }
        let Some((_, f)) = self.open.as_mut() else {
            return Err(io::Error::other("no segment open"));
        };
        let until = (segment.base + segment.len).min(committed);
        let want = usize::try_from(until - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        f.read(&mut buf[..want])
    }

    /// Skips to `end` (bytes lost for `why`); returns 0, the bytes read.
    fn skip(&mut self, end: u64, why: String) -> usize {
        self.open = None;
        self.gap = Some(Gap {
            start: self.pos,
            end,
            why,
        });
        self.pos = end;
        0
    }
}

/// An error that passes (the process or the system is short of something), not damage.
fn passing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EAGAIN)
        )
}

impl Read for JournalReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        JournalReader::read(self, buf)
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_name(base))
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn create_segment(dir: &Path, base: u64) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(segment_path(dir, base))?;
    sync_dir(dir)
}

/// The segments in `dir`, oldest first, and the highest base of an entry named as a segment that
/// is not a file (its bytes are a gap the reader records). Other names ending in `.seg` are not
/// segments: warned about and left alone.
/// Bytes of the journal in `dir` past `saved` (a reader's position in it), read from its files
/// alone: no writer, nothing mended. For a journal no one runs any more (a sink renamed).
pub fn bytes_past(dir: &Path, saved: Option<&Position>) -> io::Result<u64> {
    let id = fs::read_to_string(dir.join("id")).unwrap_or_default();
    let (segments, _) = list_segments(dir)?;
    let (Some(first), Some(last)) = (segments.front(), segments.back()) else {
        return Ok(0);
    };
    let (start, end) = (first.base, last.base + last.len);
    let from = match saved {
        Some(Position::Journal { id: of, offset }) if **of == *id.trim() => *offset,
        _ => start,
    };
    Ok(end.saturating_sub(from.max(start)))
}

fn list_segments(dir: &Path) -> io::Result<(VecDeque<Segment>, Option<u64>)> {
    let (mut out, mut unreadable) = (Vec::new(), None);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.ends_with(".seg")) else {
            continue;
        };
        let base = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok());
        let Some(base) = base.filter(|b| segment_name(*b) == name && *b <= MAX_BASE) else {
            tracing::warn!(journal = %dir.display(), name, "not a journal segment name; ignored");
            continue;
        };
        let meta = entry.metadata()?;
        if !meta.is_file() {
            tracing::info!(journal = %dir.display(), name, "a journal segment that is not a file; its bytes are lost");
            unreadable = unreadable.max(Some(base));
            continue;
        }
        out.push(Segment {
            base,
            len: meta.len(),
        });
    }
    out.sort_by_key(|s| s.base);
    // A segment never reaches into the next one (bytes written into it from outside).
    for i in 1..out.len() {
        let next = out[i].base;
        let s = &mut out[i - 1];
        if s.base + s.len > next {
            tracing::warn!(journal = %dir.display(), segment = s.base, "a journal segment runs into the next one; reading it up to there");
            s.len = next - s.base;
        }
    }
    Ok((out.into(), unreadable))
}

/// Starts a segment at the source's position `saved` (or `floor`, if further) when there is
/// none, or when the journal ends before it.
fn start_segment(
    dir: &Path,
    segments: &mut VecDeque<Segment>,
    saved: Option<u64>,
    floor: u64,
) -> io::Result<()> {
    let end = segments.back().map_or(0, |s| s.base + s.len);
    let start = saved.unwrap_or(0).max(floor);
    if segments.is_empty() || start > end {
        if let Some(saved) = saved.filter(|saved| *saved > end) {
            tracing::info!(journal = %dir.display(), checkpoint = saved, end, "the journal ends before its checkpoint (segments deleted, or lost with a power cut?)");
        }
        create_segment(dir, start)?;
        segments.push_back(Segment {
            base: start,
            len: 0,
        });
    }
    Ok(())
}

/// Mends the last segment ([`mend_tail`]); one that cannot be opened is left out (its bytes are
/// lost, a gap the reader records). Returns the highest base left out.
fn mend_last(dir: &Path, segments: &mut VecDeque<Segment>) -> Option<u64> {
    let mut left_out = None;
    while let Some(last) = segments.back_mut() {
        match mend_tail(&segment_path(dir, last.base), last.len) {
            Ok(len) => {
                last.len = len;
                break;
            }
            Err(e) => {
                tracing::info!(journal = %dir.display(), segment = last.base, error = %e, "the last journal segment cannot be opened; its bytes are lost");
                left_out = left_out.max(Some(last.base));
                segments.pop_back();
            }
        }
    }
    left_out
}

/// What says the segment being written may have been lost.
#[derive(Clone, Copy)]
struct Lost {
    /// The highest base of a segment that is not a file or cannot be opened.
    unreadable: Option<u64>,
    /// The journal's id was read from its file (it is not a journal made anew).
    kept: bool,
    /// The source's position in this journal.
    saved: Option<u64>,
}

/// Where a new segment must start if the segment being written was lost: the last one left is
/// full (so another was started after it), or one at or past the end is not a file, or the
/// journal ends before the source's position, or no segment is left of a journal that had some. Its length is not known, but all segments
/// together never hold more than `max_bytes`, from the oldest (which starts at or before the
/// source's position, or at 0): the stream goes on past the most it can have held (a gap the
/// reader records), so no offset, and no idempotency key, is used twice. 0 if nothing was lost.
fn past_lost_tail(
    dir: &Path,
    segments: &VecDeque<Segment>,
    lost: Lost,
    segment_bytes: u64,
    max_bytes: u64,
) -> u64 {
    let size: u64 = segments.iter().map(|s| s.len).sum();
    let (from, gone) = match segments.back() {
        Some(last) => {
            let end = last.base + last.len;
            let past_end = lost.unreadable.is_some_and(|u| u >= end);
            let short_of_position = lost.saved.is_some_and(|s| s > end);
            (
                end,
                last.len >= segment_bytes || past_end || short_of_position,
            )
        }
        None => (
            lost.saved.unwrap_or(0),
            lost.kept || lost.unreadable.is_some(),
        ),
    };
    if !gone {
        return 0;
    }
    let next =
        (from + max_bytes.saturating_sub(size).max(1)).max(lost.unreadable.map_or(0, |u| u + 1));
    // The gap is recorded (and logged) when it is read.
    tracing::info!(journal = %dir.display(), offset = from, next, "the journal segment being written is lost (deleted, or not a file); what it held is lost, and the stream goes on past the most it can have held");
    next
}

/// Cuts a segment back to its last newline (a partial line is a write a crash cut short: it was
/// never acknowledged). Returns the new length.
fn mend_tail(path: &Path, len: u64) -> io::Result<u64> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let keep = crate::record_log::last_line_end(&mut f, len)?;
    if keep < len {
        tracing::warn!(segment = %path.display(), cut = len - keep, "the journal ends in a partial line (a crash mid-write, never acknowledged); cutting it off");
        f.set_len(keep)?;
    }
    // Whatever a killed process wrote is on disk before it is treated as saved.
    f.sync_all()?;
    Ok(keep)
}

/// The journal's id, and whether it was read from `dir/id`. If it is lost (missing, empty, not
/// an id) while the journal has segments, the source's checkpoint in a journal says which one
/// this is; else a new random one is made. A new id is saved; if that fails, it is used anyway
/// (logged).
fn journal_id(
    dir: &Path,
    checkpoint: Option<&Position>,
    has_segments: bool,
) -> io::Result<(String, bool)> {
    let path = dir.join("id");
    let lost = match fs::read_to_string(&path) {
        Ok(text) if is_id(text.trim()) => return Ok((text.trim().to_string(), true)),
        Ok(text) if text.trim().is_empty() => None,
        Ok(_) => Some("it is not an id".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(e.to_string()),
    };
    let (id, from) = match checkpoint {
        Some(Position::Journal { id, .. }) if has_segments && is_id(id) => {
            (id.to_string(), "the source's checkpoint")
        }
        _ => (
            format!("j{:015x}", fastrand::u64(..) >> 4),
            "a new one (the journal is read from its start)",
        ),
    };
    // A position in a journal, but no journal here: its directory was deleted.
    let was_there = matches!(checkpoint, Some(Position::Journal { .. }));
    if has_segments || lost.is_some() || was_there {
        let why = lost.as_deref().unwrap_or("missing");
        tracing::warn!(path = %path.display(), why, id = %id, "the journal's id cannot be used; taking the id of {from}");
    }
    match crate::checkpoint::write_atomically(&path, id.as_bytes()) {
        Ok(()) => {}
        Err(e) if has_segments || lost.is_some() || was_there => {
            tracing::error!(path = %path.display(), error = %e, "cannot save the journal's id; using it unsaved")
        }
        Err(e) => return Err(e),
    }
    Ok((id, false))
}

/// What an id looks like: a few letters, digits, `-` or `_`.
fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(r: &mut JournalReader) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return String::from_utf8(out).unwrap();
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads everything there is: the text, and the gaps skipped on the way.
    fn read_with_gaps(r: &mut JournalReader) -> (String, Vec<(u64, u64)>) {
        let (mut text, mut gaps) = (String::new(), Vec::new());
        loop {
            text += &read_all(r);
            match r.take_gap() {
                Some(gap) => gaps.push((gap.start, gap.end)),
                None => return (text, gaps),
            }
        }
    }

    /// A journal of 64 bytes (segments of 16) holding `line-000` to `line-005`: segments at 0,
    /// 18 and 36 of two lines each, and an empty one at 54 being written.
    async fn six_lines(dir: &Path) -> Journal {
        let j = Journal::open(dir, 64, None).unwrap();
        for i in 0..6 {
            j.append(format!("line-{i:03}\n").into_bytes())
                .await
                .unwrap();
        }
        j
    }

    #[tokio::test]
    async fn lost_and_damaged_segments_are_gaps_and_reading_goes_on_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let id = six_lines(dir.path()).await.id().to_string();
        fs::remove_file(segment_path(dir.path(), 18)).unwrap();
        let cut = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 36));
        cut.unwrap().set_len(5).unwrap();
        fs::write(dir.path().join("junk.seg"), "x\n").unwrap();
        fs::write(dir.path().join("7.seg"), "x\n").unwrap();
        fs::remove_file(dir.path().join("id")).unwrap();
        let at = Position::Journal {
            id: id.as_str().into(),
            offset: 9,
        };
        let j = Journal::open(dir.path(), 64, Some(&at)).unwrap();
        assert_eq!(**j.id(), *id, "the lost id is the checkpoint's");
        let mut r = j.reader(Some(9));
        let (text, gaps) = read_with_gaps(&mut r);
        assert_eq!(text, "line-001\nline-");
        assert_eq!(gaps, [(18, 36), (41, 54)]);
        j.append(b"after\n".to_vec()).await.unwrap();
        assert_eq!(read_with_gaps(&mut r), ("after\n".to_string(), vec![]));
    }

    #[tokio::test]
    async fn the_segment_being_written_lost_while_stopped_is_a_gap_and_no_offset_is_used_twice() {
        let dir = tempfile::tempdir().unwrap();
        let id = six_lines(dir.path()).await.id().to_string();
        // The one at 54 was being written: 64 - 54 bytes is the most it can have held.
        fs::remove_file(segment_path(dir.path(), 54)).unwrap();
        let j = Journal::open(dir.path(), 64, None).unwrap();
        let (text, gaps) = read_with_gaps(&mut j.reader(None));
        assert_eq!((text.len(), gaps), (54, vec![(54, 64)]));
        drop(j);
        // Every segment gone: the stream goes on past the most the journal can have held after
        // the source's position.
        for segment in list_segments(dir.path()).unwrap().0 {
            fs::remove_file(segment_path(dir.path(), segment.base)).unwrap();
        }
        let at = Position::Journal {
            id: id.as_str().into(),
            offset: 54,
        };
        let j = Journal::open(dir.path(), 64, Some(&at)).unwrap();
        assert_eq!(**j.id(), *id);
        let (text, gaps) = read_with_gaps(&mut j.reader(Some(54)));
        assert_eq!((text.len(), gaps), (0, vec![(54, 118)]));
    }

    #[tokio::test]
    async fn a_segment_replaced_by_a_directory_is_a_gap_and_writing_goes_on_past_it() {
        let dir = tempfile::tempdir().unwrap();
        drop(six_lines(dir.path()).await);
        // The segment being written and the one before it are directories now.
        for base in [36, 54] {
            let path = segment_path(dir.path(), base);
            fs::remove_file(&path).unwrap();
            fs::create_dir(&path).unwrap();
        }
        let j = Journal::open(dir.path(), 64, None).unwrap();
        j.append(b"after\n".to_vec()).await.unwrap();
        let (text, gaps) = read_with_gaps(&mut j.reader(None));
        assert_eq!(text, "line-000\nline-001\nline-002\nline-003\nafter\n");
        assert_eq!(
            gaps,
            [(36, 64)],
            "past the most the lost segments can have held"
        );
    }

    #[tokio::test]
    async fn the_segment_being_written_deleted_or_cut_while_running_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let j = six_lines(dir.path()).await;
        // Room for what follows: the first three segments are delivered.
        j.shared.trim(54).unwrap();
        j.append(b"lost\n".to_vec()).await.unwrap();
        fs::remove_file(segment_path(dir.path(), 54)).unwrap();
        j.append(b"kept\n".to_vec()).await.unwrap();
        let cut = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 59));
        cut.unwrap().set_len(2).unwrap();
        j.append(b"also kept\n".to_vec()).await.unwrap();
        drop(j);
        // What came after each damage is in a file of its own, read after a restart.
        let j = Journal::open(dir.path(), 64, None).unwrap();
        let mut r = j.reader(Some(54));
        assert_eq!(
            read_with_gaps(&mut r),
            ("kealso kept\n".to_string(), vec![(54, 59), (61, 64)])
        );
    }

    #[tokio::test]
    async fn a_link_put_in_a_segments_place_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "secret\n").unwrap();
        let j = Journal::open(dir.path(), 1 << 20, None).unwrap();
        j.append(b"one\n".to_vec()).await.unwrap();
        fs::remove_file(segment_path(dir.path(), 0)).unwrap();
        std::os::unix::fs::symlink(&outside, segment_path(dir.path(), 0)).unwrap();
        let mut r = j.reader(None);
        assert_eq!(read_with_gaps(&mut r), (String::new(), vec![(0, 4)]));
        j.append(b"two\n".to_vec()).await.unwrap();
        assert_eq!(read_with_gaps(&mut r), ("two\n".to_string(), vec![]));
        assert_eq!(fs::read_to_string(&outside).unwrap(), "secret\n");
        // At start, a link named as a segment is not one either.
        drop(j);
        let j = Journal::open(dir.path(), 1 << 20, None).unwrap();
        j.append(b"three\n".to_vec()).await.unwrap();
        let (text, _) = read_with_gaps(&mut j.reader(None));
        assert_eq!(text, "two\nthree\n");
        assert_eq!(fs::read_to_string(&outside).unwrap(), "secret\n");
    }

    #[tokio::test]
    async fn a_full_journal_closes_its_delivered_segment_to_take_a_request_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        // 100 bytes, segments of 25: 20 bytes stay in the segment being written.
        let j = Journal::open(dir.path(), 100, None).unwrap();
        j.append([b'x'; 19].into_iter().chain([b'\n']).collect())
            .await
            .unwrap();
        let big: Vec<u8> = [b'y'; 89].into_iter().chain([b'\n']).collect();
        assert!(matches!(
            j.try_append(big.clone()).await,
            Err(AppendError::Full)
        ));
        // Delivered: the segment is closed and deleted, and the request fits.
        let (tx, rx) = watch::channel(Some(Position::Journal {
            id: j.id().clone(),
            offset: 20,
        }));
        let stop = CancellationToken::new();
        let trimming = tokio::spawn(j.clone().trim(rx, stop.clone()));
        eventually_appended(&j, &big).await;
        assert_eq!(read_all(&mut j.reader(Some(20))).len(), 90);
        drop(tx);
        stop.cancel();
        trimming.await.unwrap();
    }

    /// Retries `bytes` as a sender answered 503 would, for up to 5 s.
    async fn eventually_appended(j: &Journal, bytes: &[u8]) {
        for _ in 0..500 {
            match j.try_append(bytes.to_vec()).await {
                Ok(()) => return,
                Err(AppendError::Full) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("never taken");
    }

    #[tokio::test]
    async fn a_group_is_written_whole_whatever_its_appends_hold() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 20, None).unwrap();
        j.append(Vec::new()).await.unwrap();
        let big = "x".repeat(100_000) + "\n";
        // Handed over together, so the writer may take them as one group.
        let (first, empty, second) = tokio::join!(
            j.append(b"one\n".to_vec()),
            j.append(Vec::new()),
            j.append(big.clone().into_bytes())
        );
        first.and(empty).and(second).unwrap();
        let text = read_all(&mut j.reader(None));
        assert_eq!(text.len(), 4 + big.len());
        assert!(
            text.contains("one\n") && text.contains(&big),
            "{} bytes",
            text.len()
        );
    }

    #[tokio::test]
    async fn appends_are_read_back_in_order_across_segments_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 64, None).unwrap();
        assert_eq!(j.shared.segment_bytes, 16);
        for i in 0..6 {
            j.append(format!("line-{i:03}\n").into_bytes())
                .await
                .unwrap();
        }
        let mut r = j.reader(None);
        let text = read_all(&mut r);
        assert_eq!(text.lines().count(), 6);
        assert!(text.starts_with("line-000\nline-001\n"), "{text}");
        assert!(list_segments(dir.path()).unwrap().0.len() >= 3);
        // Full: 6 x 9 = 54 of 64 bytes taken; an 11-byte append does not fit.
        assert!(matches!(
            j.try_append(b"too-much!!\n".to_vec()).await,
            Err(AppendError::Full)
        ));
        j.shared.trim(r.position()).unwrap();
        assert_eq!(
            list_segments(dir.path()).unwrap().0.len(),
            1,
            "only the segment being written stays"
        );
        j.try_append(b"fits-now\n".to_vec()).await.unwrap();
        assert_eq!(read_all(&mut r), "fits-now\n");
    }

    #[tokio::test]
    async fn after_a_failed_append_the_rest_of_its_chain_is_refused_not_written_after_a_gap() {
        let top = tempfile::tempdir().unwrap();
        let (dir, away) = (top.path().join("j"), top.path().join("away"));
        let j = Journal::open(&dir, 1 << 20, None).unwrap();
        // The journal's directory becomes a file: no segment can be written, the first write fails.
        std::fs::rename(&dir, &away).unwrap();
        std::fs::write(&dir, "").unwrap();
        let chain = Chain::default();
        let mut first = j.submit(b"one\n".to_vec(), Some(&chain)).await.unwrap();
        assert!(first.durable().await.is_err());
        // Mended: the chain's next append is still refused; others are written.
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&away, &dir).unwrap();
        let mut second = j.submit(b"two\n".to_vec(), Some(&chain)).await.unwrap();
        let refused = second.durable().await.unwrap_err().to_string();
        assert!(refused.contains("earlier append"), "{refused}");
        j.append(b"other\n".to_vec()).await.unwrap();
        assert_eq!(read_all(&mut j.reader(None)), "other\n");
        // What the refused appends took from the budget came back.
        assert_eq!(
            j.shared.budget.available_permits() as u64,
            j.shared.max_bytes - 6
        );
    }

    #[tokio::test]
    async fn only_a_position_in_this_journal_trims_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 64, None).unwrap();
        for i in 0..6 {
            j.append(format!("line-{i:03}\n").into_bytes())
                .await
                .unwrap();
        }
        let segments = || list_segments(dir.path()).unwrap().0.len();
        let before = segments();
        let stopped = CancellationToken::new();
        stopped.cancel();
        let foreign = Position::Journal {
            id: "another".into(),
            offset: 1000,
        };
        let (_tx, rx) = watch::channel(Some(foreign));
        j.clone().trim(rx, stopped.clone()).await;
        assert_eq!(
            segments(),
            before,
            "another journal's position deletes nothing"
        );
        let own = Position::Journal {
            id: j.id().clone(),
            offset: 54,
        };
        let (_tx, rx) = watch::channel(Some(own));
        j.clone().trim(rx, stopped).await;
        assert!(segments() < before);
    }

    #[tokio::test]
    async fn a_full_segment_is_closed_at_once_so_trimming_frees_the_whole_budget() {
        let dir = tempfile::tempdir().unwrap();
        // 40 bytes, segments of 10: one 30-byte append fills a segment far past its size.
        let j = Journal::open(dir.path(), 40, None).unwrap();
        j.append(vec![b'x'; 29].into_iter().chain([b'\n']).collect())
            .await
            .unwrap();
        let mut r = j.reader(None);
        assert_eq!(read_all(&mut r).len(), 30);
        j.shared.trim(r.position()).unwrap();
        assert_eq!(j.size(), 0, "the filled segment was closed and deleted");
        // The whole budget is back: another 30-byte append fits at once.
        j.try_append(vec![b'y'; 29].into_iter().chain([b'\n']).collect())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_partial_tail_is_cut_and_positions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 20, None).unwrap();
        j.append(b"a\nb\n".to_vec()).await.unwrap();
        let id = j.id().to_string();
        drop(j);
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"torn").unwrap();
        let j = Journal::open(dir.path(), 1 << 20, None).unwrap();
        assert_eq!(**j.id(), *id);
        assert_eq!(fs::read(&seg).unwrap(), b"a\nb\n");
        let mut r = j.reader(Some(2));
        assert_eq!(read_all(&mut r), "b\n");
        // A checkpoint in this journal past its end (segments deleted, or lines lost with a power
        // cut): the stream goes on past the most it can have held, so no offset (and key) is
        // used twice, and the reader records what may be lost.
        drop(j);
        let past = Position::Journal {
            id: id.as_str().into(),
            offset: 40,
        };
        let j = Journal::open(dir.path(), 1 << 20, Some(&past)).unwrap();
        j.append(b"c\n".to_vec()).await.unwrap();
        let mut r = j.reader(Some(40));
        assert_eq!(
            read_with_gaps(&mut r),
            ("c\n".to_string(), vec![(40, 1 << 20)])
        );
        // A checkpoint of another journal says nothing about a journal made anew.
        let fresh = tempfile::tempdir().unwrap();
        let j = Journal::open(fresh.path(), 1 << 20, Some(&past)).unwrap();
        assert_ne!(**j.id(), *id);
        assert_eq!(j.reader(None).position(), 0);
    }
    #[test]
    fn running_short_of_descriptors_or_memory_is_no_damage() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
            assert!(
                super::passing(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [libc::ENOENT, libc::EIO, libc::ELOOP, libc::EISDIR] {
            assert!(
                !super::passing(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
