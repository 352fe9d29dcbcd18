//! One daemon per state directory: an exclusive lock on the directory itself and on
//! `state_dir/lock`, held while it runs.
//!
//! Two daemons on one directory would deliver every event twice and write `checkpoints.json` at
//! the same time. The locks are `flock`s (released by the kernel when the process dies, so
//! `kill -9` leaves nothing to clean up). The directory's own lock holds even if `lock` is deleted
//! (an operator tidying up); the file holds the holder's PID so the second daemon can name it. `render`, `replay` and `dead-letters` do not take it: they work beside a running daemon.

use crate::checkpoint::create_private_dir;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct StateLock {
    _dir: File,
    _file: File,
}

/// Another process holds the lock.
#[derive(Debug)]
pub struct Held {
    pub path: PathBuf,
    /// The holder's PID as it wrote it, if readable.
    pub pid: Option<u32>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.pid {
            Some(pid) => format!("another flagtail (pid {pid})"),
            None => "another flagtail".to_string(),
        };
        write!(
            f,
            "state_dir {} is in use by {who}: one daemon per state directory (lock {})",
            self.path.parent().unwrap_or(Path::new(".")).display(),
            self.path.display()
        )
    }
}

impl std::error::Error for Held {}

/// Why the lock was not taken.
#[derive(Debug)]
pub enum LockError {
    Held(Held),
    Io(io::Error),
}

/// Takes the lock of `state_dir` (creating the directory, 0700) and writes our PID into it.
pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
    create_private_dir(state_dir).map_err(LockError::Io)?;
    let path = state_dir.join("lock");
    let held = |path: PathBuf| {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        LockError::Held(Held {
            pid: text.trim().parse().ok(),
            path,
        })
    };
    let cannot = |e: io::Error, what: &Path| {
        LockError::Io(io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", what.display()),
        ))
    };
    let dir = File::open(state_dir).map_err(|e| cannot(e, state_dir))?;
    match dir.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(held(path)),
        Err(TryLockError::Error(e)) => return Err(cannot(e, state_dir)),
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| LockError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(held(path)),
        Err(TryLockError::Error(e)) => return Err(cannot(e, &path)),
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(pid.as_bytes()))
        .map_err(LockError::Io)?;
    Ok(StateLock {
        _dir: dir,
        _file: file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        match acquire(dir.path()) {
            Err(LockError::Held(h)) => assert_eq!(h.pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = acquire(dir.path()).unwrap();
        // The lock file deleted by an operator: the directory's own lock still holds.
        std::fs::remove_file(dir.path().join("lock")).unwrap();
        assert!(matches!(acquire(dir.path()), Err(LockError::Held(_))));
        drop(again);
        assert!(acquire(dir.path()).is_ok());
    }
}
