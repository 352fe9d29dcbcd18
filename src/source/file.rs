//! Following one file: resume from the checkpoint, read new lines as they are written, and follow
//! rotations (SPEC §4).
//!
//! - Start: the checkpoint's file is found by inode *and* fingerprint — at the configured path, or
//!   renamed away in the same directory (`audit.log.1`), whose rest is read first. A file that was
//!   truncated, replaced or whose inode was reused while flagtail was down does not match and is
//!   read from the start. With no checkpoint, `read_from` decides.
//! - Running: wake-ups come from [`super::watch`]; each reads to the end of the file.
//! - copytruncate: the file got shorter than what was read, or its first line changed: start over.
//! - rename-and-recreate: the old file is kept open and read to its end; the new file is taken up
//!   once something is written to it (the writer has moved on), so nothing written late to the old
//!   file is missed.
//!
//! Reads are plain blocking reads of at most 64 KiB from the page cache, done on the runtime.

use super::lines::LineSplitter;
use super::{Dispatch, Origin, Span, Stopped, watch};
use crate::checkpoint::CheckpointBook;
use crate::config::ReadFrom;
use crate::metrics;
use crate::position::{FINGERPRINT_MAX, FileIdentity, Fingerprint, Position};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub struct FileSource {
    pub path: PathBuf,
    pub read_from: ReadFrom,
    pub max_line: usize,
    pub book: Arc<CheckpointBook>,
    pub dispatch: Dispatch,
}

/// The file being read.
struct Reader {
    file: File,
    identity: Arc<FileIdentity>,
    /// Hex of the fingerprint, for idempotency keys; empty until the first line is complete.
    file_key: String,
    splitter: LineSplitter,
}

/// What a look at the file system found after reading to the end.
enum Found {
    Nothing,
    /// The file is shorter than what was read, or its first line changed.
    Truncated,
    /// Another file is at the path and has data: finish this one, then switch.
    Replaced,
}

/// How reading to the end went.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    End,
    /// The file was truncated under the reader; nothing of the last read was used.
    Truncated,
}

impl FileSource {
    /// Follows the file until the dispatch's stop token fires. Errors only if the directory cannot
    /// be watched; read errors are logged and retried.
    pub async fn run(self) -> io::Result<()> {
        let wake = Arc::new(Notify::new());
        let _watcher = watch::watch(&self.path, wake.clone()).map_err(|e| {
            io::Error::other(format!(
                "source {}: cannot watch {}: {e}",
                self.dispatch.info.name,
                self.path.display()
            ))
        })?;
        let mut reader = None;
        let mut started = false;
        loop {
            let step = async {
                if !started {
                    reader = self.resume()?;
                    started = true;
                    self.announce(reader.as_ref());
                } else if reader.is_none() {
                    reader = self.open(0)?;
                    self.announce(reader.as_ref());
                }
                if let Some(r) = reader.as_mut()
                    && self.follow(r).await?
                {
                    reader = self.open(0)?;
                    if let Some(r) = reader.as_mut() {
                        self.follow(r).await?;
                    }
                }
                Ok::<_, Error>(())
            };
            let mut wait = None;
            match step.await {
                Ok(()) => {}
                Err(Error::Stopped) => return Ok(()),
                Err(Error::Io(e)) => {
                    tracing::error!(source = %self.dispatch.info.name, path = %self.path.display(), error = %e, "cannot read; trying again");
                    wait = Some(Duration::from_secs(1));
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
                _ = self.dispatch.stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Logs where reading starts (or that the file is awaited).
    fn announce(&self, reader: Option<&Reader>) {
        let name = &self.dispatch.info.name;
        match reader {
            Some(r) => {
                tracing::info!(source = %name, path = %r.identity.path.display(), offset = r.splitter.read_offset(), "following file")
            }
            None => {
                tracing::info!(source = %name, path = %self.path.display(), "waiting for the file to appear")
            }
        }
    }

    /// Reads `r` to its end and checks for rotation. `Ok(true)`: switch to the file now at the path.
    async fn follow(&self, r: &mut Reader) -> Result<bool, Error> {
        // Set once another file is at the path: read this one to its end once more, then switch.
        let mut replaced = false;
        loop {
            // `drain` checks every chunk, so a truncation is seen before a stale offset is used.
            if self.drain(r).await? == Drained::Truncated {
                self.start_over(r).await?;
                continue;
            }
            if replaced {
                tracing::info!(source = %self.dispatch.info.name, path = %self.path.display(), "file was rotated; following the new file");
                self.give_up_partial(r, "the file was rotated away").await?;
                return Ok(true);
            }
            match self.look(r)? {
                Found::Nothing => return Ok(false),
                Found::Truncated => self.start_over(r).await?,
                Found::Replaced => replaced = true,
            }
        }
    }

    /// Reads and dispatches every complete line up to the end of the file.
    /// Every chunk is checked after it is read and before its lines go out: if the file was
    /// truncated meanwhile, the chunk may be new content at a stale offset, so it is dropped and
    /// `Drained::Truncated` returned.
    async fn drain(&self, r: &mut Reader) -> Result<Drained, Error> {
        loop {
            if self.dispatch.stop.is_cancelled() {
                return Err(Error::Stopped);
            }
            let n = r.splitter.fill_from(&mut r.file)?;
            if n > 0 && self.truncated(r)? {
                r.splitter.unread(n);
                return Ok(Drained::Truncated);
            }
            while let Some(piece) = r.splitter.next_piece().map(|p| p.to_owned()) {
                let (start, end) = piece.range();
                if start == 0 && r.identity.fingerprint.is_none() {
                    self.take_fingerprint(r, end)?;
                }
                let origin = Origin::File {
                    file: &r.identity,
                    key: &r.file_key,
                };
                self.dispatch.piece(origin, piece, self.max_line).await?;
            }
            if n == 0 {
                return Ok(Drained::End);
            }
            tokio::task::consume_budget().await;
        }
    }

    fn take_fingerprint(&self, r: &mut Reader, first_line_end: u64) -> io::Result<()> {
        if let Some(fp) = Fingerprint::of(&r.file, first_line_end.min(FINGERPRINT_MAX))? {
            let mut identity = (*r.identity).clone();
            identity.fingerprint = Some(fp);
            r.identity = Arc::new(identity);
            r.file_key = fp.short_hex();
        }
        Ok(())
    }

    /// The file was truncated in place: finish its copy if there is one (copytruncate copies before
    /// truncating, so lines not read yet are there), then read the file from the start.
    async fn start_over(&self, r: &mut Reader) -> Result<(), Error> {
        let name = &self.dispatch.info.name;
        let (resume_at, _) = r.splitter.pending();
        match find_copy(&self.path, &r.identity, resume_at)? {
            Some((copy_path, file)) => {
                tracing::warn!(source = %name, path = %self.path.display(), copy = %copy_path.display(), offset = resume_at, "file was truncated (copytruncate); reading the rest of its copy, then the file from the start");
                let identity = FileIdentity {
                    fingerprint: r.identity.fingerprint,
                    ..FileIdentity::of_open(&copy_path, &file)?
                };
                let mut copy = self.reader_at(file, Arc::new(identity), resume_at)?;
                // The copy is not truncated again (it is not the file being written).
                self.drain(&mut copy).await?;
                self.give_up_partial(
                    &mut copy,
                    "the copy of a truncated file ends without a newline",
                )
                .await?;
            }
            None => {
                tracing::warn!(source = %name, path = %self.path.display(), "file was truncated and no copy of it was found; reading it from the start");
                self.give_up_partial(r, "the file was truncated").await?;
            }
        }
        r.identity = Arc::new(FileIdentity::of_open(&self.path, &r.file)?);
        r.file_key.clear();
        r.splitter.reset(0);
        r.file.seek(SeekFrom::Start(0))?;
        Ok(())
    }

    /// Whether the open file is shorter than what was read, or its first line changed.
    fn truncated(&self, r: &Reader) -> io::Result<bool> {
        let size = r.file.metadata()?.len();
        let changed = match &r.identity.fingerprint {
            Some(fp) => !fp.matches(&r.file)?,
            None => false,
        };
        Ok(size < r.splitter.read_offset() || changed)
    }

    /// Checks the open file and the path after reading to the end.
    fn look(&self, r: &mut Reader) -> io::Result<Found> {
        if self.truncated(r)? {
            return Ok(Found::Truncated);
        }
        let size = r.file.metadata()?.len();
        if let Some(Position::File { file, offset }) = self.book.get(&self.dispatch.info.name)
            && file.same_inode(&r.file.metadata()?)
        {
            let lag = size.saturating_sub(offset) as i64;
            metrics::get()
                .source_lag_bytes
                .get_or_create(&metrics::SourceLabel {
                    source: self.dispatch.info.name.to_string(),
                })
                .set(lag);
        }
        match fs::metadata(&self.path) {
            Ok(m) if r.identity.same_inode(&m) => Ok(Found::Nothing),
            Ok(m) if m.len() > 0 => Ok(Found::Replaced),
            Ok(_) => Ok(Found::Nothing),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Nothing),
            Err(e) => Err(e),
        }
    }

    /// Records a partial last line that can no longer be completed.
    async fn give_up_partial(&self, r: &mut Reader, why: &str) -> Result<(), Stopped> {
        let (start, bytes) = r.splitter.pending();
        if bytes.is_empty() {
            return Ok(());
        }
        let bytes = bytes.to_vec();
        let end = start + bytes.len() as u64;
        let at = Span {
            origin: Origin::File {
                file: &r.identity,
                key: &r.file_key,
            },
            start,
            end,
        };
        self.dispatch.incomplete(at, &bytes, why).await
    }

    /// The reader to start with: from the checkpoint if its file is found, else per `read_from`.
    fn resume(&self) -> io::Result<Option<Reader>> {
        let name = &self.dispatch.info.name;
        // A journal position (the source used to be a socket or HTTP source) says nothing here.
        let Some(Position::File {
            file: saved,
            offset,
        }) = self.book.get(name)
        else {
            let r = self.open(0)?;
            return match (r, self.read_from) {
                (Some(mut r), ReadFrom::End) => {
                    let at = last_line_end(&mut r.file)?;
                    if at > 0 {
                        let first = first_line_end(&mut r.file)?;
                        self.take_fingerprint(&mut r, first)?;
                    }
                    r.file.seek(SeekFrom::Start(at))?;
                    r.splitter.reset(at);
                    Ok(Some(r))
                }
                (r, _) => Ok(r),
            };
        };
        let at_path = match open_path(&self.path)? {
            Opened::File(f) => Some(f),
            Opened::Missing | Opened::NotRegular(_) => None,
        };
        if let Some(f) = at_path
            && saved.is(&f)?
            && f.metadata()?.len() >= offset
        {
            return Ok(Some(self.reader_at(f, saved, offset)?));
        }
        let elsewhere = match find_renamed(&self.path, &saved)? {
            Some(found) => Some(found),
            None => find_copy(&self.path, &saved, offset)?,
        };
        if let Some((path, f)) = elsewhere
            && f.metadata()?.len() >= offset
        {
            tracing::info!(source = %name, path = %path.display(), offset, "checkpoint is in a rotated or copied file; reading its rest first");
            // Read under its own name and inode: a copy is another file than the one at the path,
            // so once it is read to its end the file at the path is followed from its start.
            let identity = FileIdentity {
                fingerprint: saved.fingerprint,
                ..FileIdentity::of_open(&path, &f)?
            };
            return Ok(Some(self.reader_at(f, Arc::new(identity), offset)?));
        }
        tracing::warn!(
            source = %name, path = %self.path.display(), offset,
            "the checkpointed file is gone, truncated or replaced (inode or first line differ); reading the file at the path from the start"
        );
        self.open(0)
    }

    fn reader_at(
        &self,
        mut file: File,
        identity: Arc<FileIdentity>,
        offset: u64,
    ) -> io::Result<Reader> {
        file.seek(SeekFrom::Start(offset))?;
        let file_key = identity
            .fingerprint
            .map(|f| f.short_hex())
            .unwrap_or_default();
        Ok(Reader {
            file,
            identity,
            file_key,
            splitter: LineSplitter::new(offset, self.max_line),
        })
    }

    /// Opens the file at the path from `offset`; `None` if there is no regular file there yet.
    /// Anything else at the path (a directory, a FIFO, a device) is not opened: it is logged and
    /// the source waits for the next change in the directory.
    fn open(&self, offset: u64) -> io::Result<Option<Reader>> {
        match open_path(&self.path)? {
            Opened::File(f) => {
                let identity = Arc::new(FileIdentity::of_open(&self.path, &f)?);
                Ok(Some(self.reader_at(f, identity, offset)?))
            }
            Opened::Missing => Ok(None),
            Opened::NotRegular(kind) => {
                tracing::error!(source = %self.dispatch.info.name, path = %self.path.display(), "the path is {kind}, not a regular file; waiting for a regular file there");
                Ok(None)
            }
        }
    }
}

/// What is at a source's path.
enum Opened {
    File(File),
    Missing,
    /// Something that is not a regular file (named by its kind): never read.
    NotRegular(&'static str),
}

/// Opens `path` if it is a regular file. Anything else is never opened; and should it be swapped
/// in between the look and the open, the open does not block (a FIFO would wait for a writer) and
/// the kind is checked again on the open file.
fn open_path(path: &Path) -> io::Result<Opened> {
    use std::os::unix::fs::OpenOptionsExt;
    // Looked at before opening: opening a device can have effects of its own.
    match fs::metadata(path) {
        Ok(m) => {
            if let Some(name) = kind_name(m.file_type()) {
                return Ok(Opened::NotRegular(name));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(e),
    }
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => {
            let kind = f.metadata()?.file_type();
            Ok(match kind_name(kind) {
                None => Opened::File(f),
                Some(name) => Opened::NotRegular(name),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Missing),
        Err(e) => Err(e),
    }
}

/// `None` for a regular file, else what it is ("a directory").
fn kind_name(kind: fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Start-up check of a `file:` path: `Err` if something other than a regular file is there (a
/// missing file is fine: it is waited for).
pub fn check_path(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(m) => match kind_name(m.file_type()) {
            None => Ok(()),
            Some(kind) => Err(format!(
                "{} is {kind}, not a regular file: flagtail follows append-only files",
                path.display()
            )),
        },
        Err(_) => Ok(()),
    }
}

/// Finds, in the directory of `path`, the file `saved` (same inode and first line) under another name.
fn find_renamed(path: &Path, saved: &FileIdentity) -> io::Result<Option<(PathBuf, File)>> {
    let found = candidates(path, |m| saved.same_inode(m), |f| saved.is(f))?;
    Ok(found.into_iter().next().map(|c| (c.path, c.file)))
}

/// Finds, in the directory of `path`, another file (not `of` itself) that starts with the same
/// first line as `of` and reaches `offset`: the copy copytruncate made. If several do (a backup
/// beside the rotated copy), the longest wins, as it holds the most of the file; then the most
/// recently written; then the first name. The choice never depends on the directory's order.
fn find_copy(path: &Path, of: &FileIdentity, offset: u64) -> io::Result<Option<(PathBuf, File)>> {
    let Some(fp) = of.fingerprint else {
        return Ok(None);
    };
    let found = candidates(
        path,
        |m| !of.same_inode(m) && m.len() >= offset.max(fp.len),
        |f| fp.matches(f),
    )?;
    let key = |c: &Candidate| (c.meta.len(), c.meta.modified().ok());
    let mut best: Option<Candidate> = None;
    let count = found.len();
    for c in found {
        // `found` is sorted by name, so on a tie the first name stays.
        if best.as_ref().is_none_or(|b| key(&c) > key(b)) {
            best = Some(c);
        }
    }
    if count > 1
        && let Some(b) = &best
    {
        tracing::info!(path = %path.display(), copy = %b.path.display(), candidates = count, "several files start like the truncated one; taking the longest");
    }
    Ok(best.map(|c| (c.path, c.file)))
}

/// A file beside the followed one that may be its earlier self.
struct Candidate {
    path: PathBuf,
    file: File,
    meta: fs::Metadata,
}

/// The regular files beside `path` whose metadata passes `cheap` and whose content `check`,
/// sorted by name.
fn candidates(
    path: &Path,
    cheap: impl Fn(&fs::Metadata) -> bool,
    check: impl Fn(&File) -> io::Result<bool>,
) -> io::Result<Vec<Candidate>> {
    let mut names: Vec<PathBuf> = fs::read_dir(super::dir_of(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Ok(m) = fs::metadata(&name) else { continue };
        if !m.is_file() || !cheap(&m) {
            continue;
        }
        let Ok(Opened::File(file)) = open_path(&name) else {
            continue;
        };
        if check(&file).unwrap_or(false) {
            out.push(Candidate {
                path: name,
                file,
                meta: m,
            });
        }
    }
    Ok(out)
}

/// Offset just after the last newline (where `read_from: end` starts, skipping a partial line).
fn last_line_end(f: &mut File) -> io::Result<u64> {
    let size = f.metadata()?.len();
    let mut pos = size;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let n = (buf.len() as u64).min(pos) as usize;
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return Ok(pos + i as u64 + 1);
        }
    }
    Ok(0)
}

/// Offset just after the first newline (or the fingerprint limit).
fn first_line_end(f: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; FINGERPRINT_MAX as usize];
    f.seek(SeekFrom::Start(0))?;
    let mut filled = 0;
    loop {
        let n = f.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
        if let Some(i) = memchr::memchr(b'\n', &buf[..filled]) {
            return Ok(i as u64 + 1);
        }
        if filled == buf.len() {
            break;
        }
    }
    Ok(filled as u64)
}

enum Error {
    Stopped,
    Io(io::Error),
}

impl From<Stopped> for Error {
    fn from(_: Stopped) -> Self {
        Error::Stopped
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
