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

    /// [`RecordLog::append`] to a log kept under `max` bytes: when `lines` would take it over,
    /// its oldest records are dropped first, keeping the newest that fit in half of `max` with
    /// `lines` (room for the appends to come before the next cut). Returns how many were dropped.
    pub fn append_bounded(&self, lines: &[Vec<u8>], max: u64) -> io::Result<u64> {
        let _held = self.hold()?;
        let adding: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        let len = match fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let dropped = match len.saturating_add(adding) > max {
            true => self.drop_oldest(len, (max / 2).saturating_sub(adding))?,
            false => 0,
        };
        self.append_held(lines)?;
        Ok(dropped)
    }

    /// Rewrites the log (`len` bytes, the lock held) keeping only its newest whole lines that fit
    /// in `keep` bytes: written aside, fsynced, renamed over it. Returns how many were dropped.
    fn drop_oldest(&self, len: u64, keep: u64) -> io::Result<u64> {
        let mut f = File::open(&self.path)?;
        let cut = match len.saturating_sub(keep) {
            0 => 0,
            // Just after the first newline at or after `from - 1`: a line boundary.
            from => next_line_start(&mut f, from - 1, len)?,
        };
        f.seek(SeekFrom::Start(0))?;
        let dropped = count_lines(&mut f, cut)?;
        let aside = self.path.with_extension("jsonl.cut");
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)?;
        f.seek(SeekFrom::Start(cut))?;
        io::copy(&mut f.take(len - cut), &mut out)?;
        out.sync_all()?;
        fs::rename(&aside, &self.path)?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        Ok(dropped)
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

/// The offset just after the first newline at or after `from` in the first `len` bytes of `f`
/// (`len` if there is none).
fn next_line_start(f: &mut File, from: u64, len: u64) -> io::Result<u64> {
    let mut pos = from;
    let mut buf = vec![0u8; 64 * 1024];
    f.seek(SeekFrom::Start(pos))?;
    while pos < len {
        let n = f.read(&mut buf[..(len - pos).min(64 * 1024) as usize])?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
    Ok(len)
}

/// How many lines the first `upto` bytes of `f` (read from where it stands) hold, a last one
/// without its newline included.
pub fn count_lines(f: &mut File, upto: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut left, mut lines, mut last) = (upto, 0u64, b'\n');
    while left > 0 {
        let n = f.read(&mut buf[..left.min(64 * 1024) as usize])?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        last = buf[n - 1];
        left -= n as u64;
    }
    Ok(lines + u64::from(last != b'\n'))
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
    fn a_bounded_log_drops_its_oldest_records_to_stay_under_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path(), "rejected", "s");
        let record = |i: usize| format!("{{\"n\":{i:4}}}").into_bytes(); // 10 bytes and a newline
        let mut dropped = 0;
        for i in 0..100 {
            dropped += log.append_bounded(&[record(i)], 110).unwrap();
            assert!(fs::metadata(log.path()).unwrap().len() <= 110);
        }
        let c = RecordLog::read(log.path()).unwrap();
        assert_eq!(
            dropped as usize + c.records.len(),
            100,
            "every record kept or counted"
        );
        assert_eq!(
            c.records.last().unwrap(),
            r#"{"n":  99}"#,
            "the newest kept"
        );
        assert!(c.records.len() >= 5, "{} kept", c.records.len());
        // A torn tail is cut with the old records, and counted.
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"{\"torn\"").unwrap();
        let before = RecordLog::read(log.path()).unwrap().records.len() as u64 + 1;
        let dropped = log.append_bounded(&vec![record(100); 5], 110).unwrap();
        assert_eq!(dropped, before);
        assert_eq!(RecordLog::read(log.path()).unwrap().records.len(), 5);
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
