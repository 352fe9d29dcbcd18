//! Append-only JSON Lines files in `state_dir`: `dead-letter/SINK.jsonl` and `rejected/SOURCE.jsonl`.
//!
//! Every append takes an exclusive lock (`NAME.lock` beside the file), so the daemon and
//! `flagtail replay` never interleave, and goes through [`append_lines`], the one way flagtail
//! appends to a file of lines (the file sink uses it too): a single `write` of whole lines, cut
//! back off if it fails part-way (a full disk), a torn last line (a crash mid-write) ended with a
//! newline first, and an fsync before it returns, so a record that was appended survives `kill -9`.
//! Readers report torn or unreadable lines and keep them instead of dropping them. Lines are read
//! back as their text, never re-serialised, so what was written is what is replayed.

use crate::checkpoint::{create_private_dir, sync_dir};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The time a record is written, RFC 3339 with milliseconds (UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// One JSONL file and its lock.
#[derive(Debug, Clone)]
pub struct RecordLog {
    path: PathBuf,
    lock: PathBuf,
}

/// The content of a log: the lines that are JSON, as written, and the ones that are not (torn or
/// damaged).
#[derive(Debug, Default)]
pub struct Contents {
    pub records: Vec<String>,
    /// `(line number, text)` of lines that could not be read.
    pub unreadable: Vec<(usize, String)>,
}

/// An exclusive hold on a log; released when dropped.
pub struct Held {
    _lock: File,
}

impl RecordLog {
    /// The log `state_dir/kind/name.jsonl`.
    pub fn new(state_dir: &Path, kind: &str, name: &str) -> RecordLog {
        let dir = state_dir.join(kind);
        RecordLog {
            path: dir.join(format!("{name}.jsonl")),
            lock: dir.join(format!("{name}.lock")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a lock file of this log (created 0600, its directory 0700).
    fn lock_file(&self, path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
    }

    /// Takes the exclusive lock (blocking).
    pub fn hold(&self) -> io::Result<Held> {
        let f = self.lock_file(&self.lock)?;
        f.lock()?;
        Ok(Held { _lock: f })
    }

    /// Takes the lock that one replay of this log holds from start to end, or `None` if another
    /// replay (the daemon's or a `flagtail replay`) holds it.
    pub fn try_hold_replay(&self) -> io::Result<Option<Held>> {
        let f = self.lock_file(&self.lock.with_extension("replay.lock"))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Held { _lock: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Where a replay keeps the letters it took until it is done.
    pub fn replaying(&self) -> PathBuf {
        self.path.with_extension("replaying.jsonl")
    }

    /// Appends `lines` (each one JSON document without a newline) durably.
    pub fn append(&self, lines: &[Vec<u8>]) -> io::Result<()> {
        let _held = self.hold()?;
        self.append_held(lines)
    }

    /// [`RecordLog::append`] for a caller that already holds the lock.
    pub fn append_held(&self, lines: &[Vec<u8>]) -> io::Result<()> {
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>());
        for line in lines {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        append_lines(&self.path, 0o600, &out)
    }

    /// Reads every line of `path` (the log itself or a file taken from it).
    pub fn read(path: &Path) -> io::Result<Contents> {
        let text = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
            Err(e) => return Err(e),
        };
        let mut c = Contents::default();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Checked as JSON without building a value, so any number or depth JSON allows passes.
            match (
                std::str::from_utf8(line),
                serde_json::from_slice::<serde::de::IgnoredAny>(line),
            ) {
                (Ok(text), Ok(_)) => c.records.push(text.to_string()),
                _ => c
                    .unreadable
                    .push((i + 1, String::from_utf8_lossy(line).into_owned())),
            }
        }
        Ok(c)
    }

    /// Moves the log's content to `NAME.replaying.jsonl` for replay (merging one left by a replay
    /// that was interrupted) and returns that file's path. The daemon appends to a fresh log meanwhile.
    pub fn take(&self, _held: &Held) -> io::Result<PathBuf> {
        let taken = self.replaying();
        if self.path.exists() {
            if taken.exists() {
                let mut rest = fs::read(&self.path)?;
                if !rest.is_empty() {
                    if rest.last() != Some(&b'\n') {
                        rest.push(b'\n');
                    }
                    append_lines(&taken, 0o600, &rest)?;
                }
                fs::remove_file(&self.path)?;
            } else {
                fs::rename(&self.path, &taken)?;
            }
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(taken)
    }
}

/// Appends `bytes` (whole lines, each ending in `\n`) to the file at `path` (created with `mode`),
/// durably and whole: a last line left without its newline (a crash or a failed write before) is
/// ended first; a write that fails part-way is cut back off, so the file only ever gains whole
/// lines; the data is fsynced (and a new file's directory entry) before this returns `Ok`.
pub fn append_lines(path: &Path, mode: u32, bytes: &[u8]) -> io::Result<()> {
    let created = !path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(mode)
        .open(path)?;
    // Other appenders (a file sink with concurrency > 1, two sinks on one path, `replay` beside the
    // daemon) wait here: the length read below stays true until this append is done, so cutting
    // a failed write back can never take anyone else's lines.
    f.lock()?;
    let len = f.metadata()?.len();
    let mut torn = false;
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        torn = last[0] != b'\n';
    }
    if torn {
        tracing::warn!(path = %path.display(), "the last line is incomplete (cut by a crash or an earlier failed write); ending it and appending after it");
        f.write_all(b"\n")
            .and_then(|()| f.write_all(bytes))
            .or_else(|e| cut_back(&f, len, e))?;
    } else {
        f.write_all(bytes).or_else(|e| cut_back(&f, len, e))?;
    }
    f.sync_data().or_else(|e| cut_back(&f, len, e))?;
    if created {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// The offset just after the last newline among the first `len` bytes of `f` (0 if there is
/// none): where a file of whole lines ends, whatever torn bytes follow.
pub fn last_line_end(f: &mut File, len: u64) -> io::Result<u64> {
    let mut pos = len;
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

/// Takes a failed append back off the file, then returns its error.
fn cut_back(f: &File, len: u64, e: io::Error) -> io::Result<()> {
    if let Err(cut) = f.set_len(len) {
        tracing::error!(error = %cut, "cannot cut a failed write back off; the next append ends the incomplete line");
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_ended_and_reported_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path(), "dead-letter", "audit");
        log.append(&[br#"{"n":1}"#.to_vec()]).unwrap();
        // A crash in the middle of the second append:
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(br#"{"n":2,"rea"#).unwrap();
        log.append(&[br#"{"n":3}"#.to_vec()]).unwrap();
        let c = RecordLog::read(log.path()).unwrap();
        assert_eq!(
            c.records,
            vec![r#"{"n":1}"#.to_string(), r#"{"n":3}"#.to_string()]
        );
        assert_eq!(c.unreadable, vec![(2, r#"{"n":2,"rea"#.to_string())]);
    }

    #[test]
    fn take_moves_content_aside_and_merges_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path(), "dead-letter", "audit");
        log.append(&[b"1".to_vec()]).unwrap();
        let held = log.hold().unwrap();
        let taken = log.take(&held).unwrap();
        drop(held);
        log.append(&[b"2".to_vec()]).unwrap();
        let held = log.hold().unwrap();
        assert_eq!(log.take(&held).unwrap(), taken);
        assert_eq!(fs::read_to_string(&taken).unwrap(), "1\n2\n");
        assert!(!log.path().exists());
    }
}
