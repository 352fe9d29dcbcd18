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
//!   segments wholly before it (never the one being written).
//! - **Reading.** [`JournalReader`] reads lines in order across segments, only up to what has been
//!   made durable: a line is never dispatched before it would survive a crash.
//! - **Start.** A last segment that ends in a partial line (a crash mid-write, never answered) is
//!   cut back to its last newline, and the segment is fsynced (bytes a killed process left in the
//!   page cache are made durable before they count). If the source's checkpoint in this journal
//!   lies past its end (bytes lost with a power cut after being delivered), a new segment starts
//!   at the checkpoint, so an offset, and the idempotency key made from it, is never reused.

use crate::checkpoint::{create_private_dir, sync_dir};
use crate::position::Position;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// A new segment is started once the current one holds this much (or `max_bytes / 4`, if less).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Appends waiting for the writer.
const QUEUE: usize = 1024;

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
        let id: Arc<str> = read_or_make_id(dir)?.into();
        // The source's position in this journal, if it has one here.
        let saved = match checkpoint {
            Some(Position::Journal { id: of, offset }) if *of == id => Some(*offset),
            _ => None,
        };
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            let base = saved.unwrap_or(0);
            create_segment(dir, base)?;
            segments.push_back(Segment { base, len: 0 });
        }
        if let Some(last) = segments.back_mut() {
            last.len = mend_tail(&segment_path(dir, last.base), last.len)?;
        }
        let end = segments.back().map_or(0, |s| s.base + s.len);
        if let Some(saved) = saved
            && saved > end
        {
            tracing::warn!(journal = %dir.display(), checkpoint = saved, end, "the journal ends before its checkpoint (lines lost after delivery, by a power cut?); going on from the checkpoint");
            create_segment(dir, saved)?;
            segments.push_back(Segment {
                base: saved,
                len: 0,
            });
        }
        let size: u64 = segments.iter().map(|s| s.len).sum();
        let end = segments.back().map_or(0, |s| s.base + s.len);
        let budget = usize::try_from(max_bytes.saturating_sub(size))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            id,
            max_bytes,
            segment_bytes: SEGMENT_BYTES.min((max_bytes / 4).max(1)),
            state: Mutex::new(State { segments }),
            budget: Arc::new(Semaphore::new(budget)),
            committed: watch::channel(end).0,
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
        let permit = self
            .shared
            .budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| AppendError::Io("the journal is closed".into()))?;
        self.hand_over(bytes, permit, chain.cloned()).await
    }

    /// Like [`Journal::append`], but refuses at once when the journal is full.
    pub async fn try_append(&self, bytes: Vec<u8>) -> Result<(), AppendError> {
        let n = self.cost(&bytes)?;
        let permit = match self.shared.budget.clone().try_acquire_many_owned(n) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => return Err(AppendError::Full),
            Err(TryAcquireError::Closed) => {
                return Err(AppendError::Io("the journal is closed".into()));
            }
        };
        self.hand_over(bytes, permit, None).await?.durable().await
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
    /// until `stop`. Their bytes go back to the budget.
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
                let shared = self.shared.clone();
                match tokio::task::spawn_blocking(move || shared.trim(upto)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(journal = %self.shared.dir.display(), error = %e, "cannot delete journal segments; trying again after the next checkpoint")
                    }
                    Err(e) => tracing::error!(error = %e, "journal trimming failed"),
                }
            }
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }

    /// A reader from `offset` (clamped into what the journal holds).
    pub fn reader(&self, offset: Option<u64>) -> JournalReader {
        let (first, end) = {
            let st = self.shared.lock();
            let first = st.segments.front().map_or(0, |s| s.base);
            let end = st.segments.back().map_or(0, |s| s.base + s.len);
            (first, end)
        };
        let start = match offset {
            Some(o) if (first..=end).contains(&o) => o,
            Some(o) => {
                tracing::warn!(journal = %self.shared.dir.display(), checkpoint = o, first, end, "the checkpoint is not in the journal (was it deleted or replaced?); reading it from its start");
                first
            }
            None => first,
        };
        JournalReader {
            shared: self.shared.clone(),
            committed: self.shared.committed.subscribe(),
            pos: start,
            open: None,
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
            match fs::remove_file(segment_path(&self.dir, gone.base)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => break Err(e),
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
    let mut file: Option<(u64, File)> = None;
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
        let result = commit(shared, &mut file, &batch).map_err(|e| e.to_string());
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
    let (base, len) = {
        let st = shared.lock();
        let last = st
            .segments
            .back()
            .copied()
            .unwrap_or(Segment { base: 0, len: 0 });
        (last.base, last.len)
    };
    // A rollover that failed after an earlier commit is tried again first.
    let (base, len) = if len >= shared.segment_bytes {
        roll_over(shared, file, base + len)?;
        (base + len, 0)
    } else {
        (base, len)
    };
    if file.as_ref().is_none_or(|(b, _)| *b != base) {
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(&shared.dir, base))?;
        *file = Some((base, f));
    }
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
    create_segment(&shared.dir, base)?;
    shared.lock().segments.push_back(Segment { base, len: 0 });
    *file = None;
    Ok(())
}

/// Reads a journal's lines in order, up to what is durable.
pub struct JournalReader {
    shared: Arc<Shared>,
    committed: watch::Receiver<u64>,
    /// Stream offset of the next byte to read.
    pos: u64,
    /// The segment being read: its base, its file.
    open: Option<(u64, File)>,
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

    /// Reads durable bytes at the read position into `buf`; 0 when there are none yet.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let committed = *self.committed.borrow();
        loop {
            if self.pos >= committed {
                return Ok(0);
            }
            let segment = {
                let st = self.shared.lock();
                st.segments
                    .iter()
                    .find(|s| s.base <= self.pos && self.pos < s.base + s.len)
                    .copied()
            };
            let Some(segment) = segment else {
                return Err(io::Error::other(format!(
                    "journal {}: no segment holds offset {}",
                    self.shared.dir.display(),
                    self.pos
                )));
            };
            if self.open.as_ref().is_none_or(|(b, _)| *b != segment.base) {
                let mut f = File::open(segment_path(&self.shared.dir, segment.base))?;
                f.seek(SeekFrom::Start(self.pos - segment.base))?;
                self.open = Some((segment.base, f));
            }
            let Some((_, f)) = self.open.as_mut() else {
                continue;
            };
            let until = (segment.base + segment.len).min(committed);
            let want = usize::try_from(until - self.pos)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "journal {}: segment {} is shorter than recorded",
                    self.shared.dir.display(),
                    segment.base
                )));
            }
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

impl Read for JournalReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        JournalReader::read(self, buf)
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn create_segment(dir: &Path, base: u64) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(segment_path(dir, base))?;
    sync_dir(dir)
}

/// The segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> io::Result<VecDeque<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment {
            base,
            len: entry.metadata()?.len(),
        });
    }
    out.sort_by_key(|s| s.base);
    Ok(out.into())
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

/// The journal's id: read from `dir/id`, or made (random) and saved.
fn read_or_make_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("id");
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("j{:015x}", fastrand::u64(..) >> 4);
    crate::checkpoint::write_atomically(&path, id.as_bytes())?;
    Ok(id)
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
        assert!(list_segments(dir.path()).unwrap().len() >= 3);
        // Full: 6 x 9 = 54 of 64 bytes taken; an 11-byte append does not fit.
        assert!(matches!(
            j.try_append(b"too-much!!\n".to_vec()).await,
            Err(AppendError::Full)
        ));
        j.shared.trim(r.position()).unwrap();
        assert_eq!(
            list_segments(dir.path()).unwrap().len(),
            1,
            "only the segment being written stays"
        );
        j.try_append(b"fits-now\n".to_vec()).await.unwrap();
        assert_eq!(read_all(&mut r), "fits-now\n");
    }

    #[tokio::test]
    async fn after_a_failed_append_the_rest_of_its_chain_is_refused_not_written_after_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 20, None).unwrap();
        // The segment to be written becomes a directory: the first write fails.
        let segment = segment_path(dir.path(), 0);
        let kept = std::fs::read(&segment).unwrap();
        std::fs::remove_file(&segment).unwrap();
        std::fs::create_dir(&segment).unwrap();
        let chain = Chain::default();
        let mut first = j.submit(b"one\n".to_vec(), Some(&chain)).await.unwrap();
        assert!(first.durable().await.is_err());
        // Mended: the chain's next append is still refused; others are written.
        std::fs::remove_dir(&segment).unwrap();
        std::fs::write(&segment, &kept).unwrap();
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
        let segments = || list_segments(dir.path()).unwrap().len();
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
        // A checkpoint in this journal past its end (delivered lines lost with a power cut): the
        // stream goes on from the checkpoint, so no offset (and key) is used twice.
        drop(j);
        let past = Position::Journal {
            id: id.as_str().into(),
            offset: 40,
        };
        let j = Journal::open(dir.path(), 1 << 20, Some(&past)).unwrap();
        j.append(b"c\n".to_vec()).await.unwrap();
        let mut r = j.reader(Some(40));
        assert_eq!(read_all(&mut r), "c\n");
        // A checkpoint of another journal says nothing about a journal made anew.
        let fresh = tempfile::tempdir().unwrap();
        let j = Journal::open(fresh.path(), 1 << 20, Some(&past)).unwrap();
        assert_ne!(**j.id(), *id);
        assert_eq!(j.reader(None).position(), 0);
    }
}
