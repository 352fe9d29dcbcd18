//! Append-only JSON Lines files in `state_dir`: `dead-letter/SINK.jsonl` and `rejected/SOURCE.jsonl`.
//!
//! Every append takes an exclusive lock (`NAME.lock` beside the file), so the daemon and
//! `flagtail replay` never interleave; is a single `write` of whole lines; and is fsynced before
//! it returns, so a record that was appended survives `kill -9`. A crash in the middle of a write
//! can leave a torn last line; the next append first ends it with a newline, and readers report
//! torn or unreadable lines and keep them instead of dropping them.

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

/// The content of a log: parsed lines and the ones that were not JSON (torn or damaged).
#[derive(Debug, Default)]
pub struct Contents {
    pub records: Vec<serde_json::Value>,
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

    /// Takes the exclusive lock (blocking).
    pub fn hold(&self) -> io::Result<Held> {
        if let Some(dir) = self.lock.parent() {
            create_private_dir(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)?;
        f.lock()?;
        Ok(Held { _lock: f })
    }

    /// Appends `lines` (each one JSON document without a newline) durably.
    pub fn append(&self, lines: &[Vec<u8>]) -> io::Result<()> {
        let _held = self.hold()?;
        self.append_held(lines)
    }

    /// [`RecordLog::append`] for a caller that already holds the lock.
    pub fn append_held(&self, lines: &[Vec<u8>]) -> io::Result<()> {
        let created = !self.path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&self.path)?;
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 1);
        let len = f.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut last)?;
            if last[0] != b'\n' {
                tracing::warn!(path = %self.path.display(), "last line was torn by a crash; ending it and appending after it");
                out.push(b'\n');
            }
        }
        for line in lines {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        f.write_all(&out)?;
        f.sync_data()?;
        if created {
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
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
            match serde_json::from_slice(line) {
                Ok(v) => c.records.push(v),
                Err(_) => c
                    .unreadable
                    .push((i + 1, String::from_utf8_lossy(line).into_owned())),
            }
        }
        Ok(c)
    }

    /// Moves the log's content to `NAME.replaying.jsonl` for replay (merging one left by a replay
    /// that was interrupted) and returns that file's path. The daemon appends to a fresh log meanwhile.
    pub fn take(&self, _held: &Held) -> io::Result<PathBuf> {
        let taken = self.path.with_extension("replaying.jsonl");
        if self.path.exists() {
            if taken.exists() {
                let mut rest = fs::read(&self.path)?;
                if !rest.is_empty() {
                    let mut f = OpenOptions::new().append(true).read(true).open(&taken)?;
                    let len = f.metadata()?.len();
                    let mut last = [0u8; 1];
                    if len > 0 {
                        f.seek(SeekFrom::Start(len - 1))?;
                        f.read_exact(&mut last)?;
                        if last[0] != b'\n' {
                            rest.insert(0, b'\n');
                        }
                    }
                    f.write_all(&rest)?;
                    f.sync_data()?;
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
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.records[1]["n"], 3);
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
