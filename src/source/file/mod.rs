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
//!
//! The module is split by job: this file follows and rotates ([`FileSource::run`]); [`resume`]
//! finds where to start; [`disk`] finds files in the directory and opens only regular files.

mod disk;
mod resume;

pub use disk::check_path;

use super::lines::LineSplitter;
use super::{Dispatch, Origin, Span, Stopped, watch};
use crate::checkpoint::CheckpointBook;
use crate::config::ReadFrom;
use crate::position::{FINGERPRINT_MAX, FileIdentity, Fingerprint};
use disk::find_copy;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::path::PathBuf;
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
    file_key: Arc<str>,
    splitter: LineSplitter,
}

/// What [`FileSource::check`] found.
enum Check {
    Truncated,
    /// Neither shorter than what was read nor with another first line; `size` bytes long.
    Whole {
        size: u64,
    },
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
enum Drained {
    /// Everything the file held was read. `checked`: the file was found whole (not truncated, same
    /// first line) after the last read, so [`FileSource::look`] need not check it again: a change
    /// after that check is a new wake-up.
    End { checked: bool },
    /// The file was truncated under the reader; nothing of the last read was used.
    Truncated,
}

/// Test builds only: `FLAGTAIL_TEST_FAULT=hold-open:NAME` keeps source NAME from saying it is
/// open (until stopped), so the tests can see `/readyz` wait for it.
#[cfg(debug_assertions)]
async fn held_open(dispatch: &crate::source::Dispatch) -> Result<(), Error> {
    if std::env::var("FLAGTAIL_TEST_FAULT").ok().as_deref()
        == Some(&format!("hold-open:{}", dispatch.info.name))
    {
        dispatch.stop.cancelled().await;
        return Err(Error::Stopped);
    }
    Ok(())
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
                    #[cfg(debug_assertions)]
                    held_open(&self.dispatch).await?;
                    self.dispatch.opened.done();
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
            let checked = match self.drain(r).await? {
                Drained::End { checked } => checked,
                Drained::Truncated => {
                    self.start_over(r).await?;
                    continue;
                }
            };
            if replaced {
                tracing::info!(source = %self.dispatch.info.name, path = %self.path.display(), "file was rotated; following the new file");
                self.give_up_partial(r, "the file was rotated away").await?;
                return Ok(true);
            }
            match self.look(r, checked)? {
                Found::Nothing => return Ok(false),
                Found::Truncated => self.start_over(r).await?,
                Found::Replaced => replaced = true,
            }
        }
    }

    /// Reads and dispatches every complete line up to the end of the file.
    /// Every chunk is checked after it is read and before its lines go out: if the file was
    /// truncated meanwhile, the chunk may be new content at a stale offset, so it is dropped and
    /// `Drained::Truncated` returned. The check's size says when the end is reached, so a wake-up
    /// for one line costs one read, not a second one that returns nothing.
    async fn drain(&self, r: &mut Reader) -> Result<Drained, Error> {
        loop {
            if self.dispatch.stop.is_cancelled() {
                return Err(Error::Stopped);
            }
            let n = r.splitter.fill_from(&mut r.file)?;
            let at_end = match n {
                0 => true,
                _ => match self.check(r)? {
                    Check::Truncated => {
                        r.splitter.unread(n);
                        return Ok(Drained::Truncated);
                    }
                    Check::Whole { size } => size <= r.splitter.read_offset(),
                },
            };
            // Lines are parsed where they were read; only what a record keeps is copied.
            while let Some(piece) = r.splitter.next_piece() {
                let (start, end) = piece.range();
                if start == 0
                    && r.identity.fingerprint.is_none()
                    && let Err(e) = take_fingerprint(&r.file, &mut r.identity, &mut r.file_key, end)
                {
                    // Nothing of the file went out yet: read it again from the start when trying
                    // again, so its first line is neither lost nor read without a fingerprint.
                    r.splitter.reset(0);
                    r.file.seek(SeekFrom::Start(0))?;
                    return Err(e.into());
                }
                let origin = Origin::File {
                    file: &r.identity,
                    key: &r.file_key,
                };
                self.dispatch.piece(origin, piece, self.max_line).await?;
            }
            if at_end {
                // Caught up: the rejected lines just read are recorded before waiting.
                self.dispatch.idle().await?;
                // A read that returned nothing was not checked: the file may have shrunk since the
                // check before it (`look` checks it).
                return Ok(Drained::End { checked: n > 0 });
            }
            tokio::task::consume_budget().await;
        }
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
        r.file_key = Arc::from("");
        r.splitter.reset(0);
        r.file.seek(SeekFrom::Start(0))?;
        Ok(())
    }

    /// Whether the open file is shorter than what was read, or its first line changed; if not,
    /// its size.
    fn check(&self, r: &Reader) -> io::Result<Check> {
        let size = r.file.metadata()?.len();
        let changed = match &r.identity.fingerprint {
            Some(fp) => !fp.matches(&r.file)?,
            None => false,
        };
        Ok(match size < r.splitter.read_offset() || changed {
            true => Check::Truncated,
            false => Check::Whole { size },
        })
    }

    /// Checks the open file (unless `checked`: [`Drained::End`]) and the path after reading to the
    /// end.
    fn look(&self, r: &mut Reader, checked: bool) -> io::Result<Found> {
        if !checked && let Check::Truncated = self.check(r)? {
            return Ok(Found::Truncated);
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

/// Takes the fingerprint of `file` once its first line (ending at `first_line_end`) is complete:
/// `identity` gets it, and `key` its hex for idempotency keys.
fn take_fingerprint(
    file: &File,
    identity: &mut Arc<FileIdentity>,
    key: &mut Arc<str>,
    first_line_end: u64,
) -> io::Result<()> {
    if let Some(fp) = Fingerprint::of(file, first_line_end.min(FINGERPRINT_MAX))? {
        let mut changed = (**identity).clone();
        changed.fingerprint = Some(fp);
        *identity = Arc::new(changed);
        *key = fp.short_hex().into();
    }
    Ok(())
}
