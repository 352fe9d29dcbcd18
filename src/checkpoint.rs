//! Saved positions: `state_dir/checkpoints.json`, one entry per source.
//!
//! [`CheckpointBook`] holds the latest position of every source in memory (set by the sources'
//! trackers) and writes them to disk from one task: each write takes whatever changed since the
//! last one (group commit), so disk writes never slow delivery and nothing is written when idle.
//! A write is a temp file, fsync, rename, fsync of the directory; writes are at least
//! [`SAVE_INTERVAL`] apart. Entries of sources no longer in
//! the config are kept. The file is versioned (`"version": "1"`).

use crate::source::identity::FileIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The shortest time between two saves. Back-to-back fsyncs under load cost a third of per-event
/// throughput on a 2-core machine (31k vs 45k events/s, `benches/` notes); waiting this long lets
/// one save cover the acknowledgements of many deliveries. The price: after a crash, up to this
/// much more of what was delivered is sent again (same `Idempotency-Key`). Idle: no wake-ups.
pub const SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// One source's position: the file and the offset of the first byte not yet done with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub file: FileIdentity,
    pub offset: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum CheckpointFile {
    #[serde(rename = "1")]
    V1 {
        sources: BTreeMap<String, Checkpoint>,
    },
}

struct Book {
    positions: BTreeMap<String, (Arc<FileIdentity>, u64)>,
    dirty: bool,
}

pub struct CheckpointBook {
    path: PathBuf,
    book: Mutex<Book>,
    changed: Notify,
    /// Serialises writers (the background task and a final save).
    write_lock: Mutex<()>,
}

impl CheckpointBook {
    /// Loads `state_dir/checkpoints.json` (creating `state_dir`, mode 0700). A file that cannot be
    /// read is an error: starting over could skip events (`read_from: end`).
    pub fn open(state_dir: &Path) -> io::Result<Arc<CheckpointBook>> {
        create_private_dir(state_dir)?;
        let path = state_dir.join("checkpoints.json");
        let positions = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CheckpointFile>(&bytes) {
                Ok(CheckpointFile::V1 { sources }) => sources
                    .into_iter()
                    .map(|(name, c)| (name, (Arc::new(c.file), c.offset)))
                    .collect(),
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: {e} (fix or remove it; removing re-reads sources from read_from)",
                            path.display()
                        ),
                    ));
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        Ok(Arc::new(CheckpointBook {
            path,
            book: Mutex::new(Book {
                positions,
                dirty: false,
            }),
            changed: Notify::new(),
            write_lock: Mutex::new(()),
        }))
    }

    pub fn get(&self, source: &str) -> Option<(Arc<FileIdentity>, u64)> {
        self.lock().positions.get(source).cloned()
    }

    pub fn set(&self, source: &str, file: Arc<FileIdentity>, offset: u64) {
        let mut b = self.lock();
        match b.positions.get_mut(source) {
            Some(entry) => *entry = (file, offset),
            None => {
                b.positions.insert(source.to_string(), (file, offset));
            }
        }
        b.dirty = true;
        drop(b);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the positions if anything changed since the last write.
    pub fn save(&self) -> io::Result<()> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sources = {
            let mut b = self.lock();
            if !b.dirty {
                return Ok(());
            }
            b.dirty = false;
            b.positions
                .iter()
                .map(|(name, (file, offset))| {
                    (
                        name.clone(),
                        Checkpoint {
                            file: (**file).clone(),
                            offset: *offset,
                        },
                    )
                })
                .collect()
        };
        let result = write_atomically(
            &self.path,
            &serde_json::to_vec_pretty(&CheckpointFile::V1 { sources })?,
        );
        if result.is_err() {
            self.lock().dirty = true;
        }
        result
    }

    /// Saves after every change until `stop`, then once more. Saves are at least
    /// [`SAVE_INTERVAL`] apart, so under load one write covers many acknowledgements. Returns the
    /// result of the last save: the daemon exits 1 if its positions could not be saved.
    pub async fn run_writer(self: Arc<Self>, stop: CancellationToken) -> io::Result<()> {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(SAVE_INTERVAL) => {}
                _ = stop.cancelled() => break,
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot save checkpoints; will retry on the next change")
                }
                Err(e) => tracing::error!(error = %e, "checkpoint writer panicked"),
            }
        }
        self.save()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content. The file
/// is private (0600): it names the files a source reads.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` applies only to a new file: a temp file left behind keeps its own.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::identity::Fingerprint;

    #[test]
    fn positions_survive_a_reopen_and_keep_other_sources() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let book = CheckpointBook::open(&state).unwrap();
        let file = Arc::new(FileIdentity {
            path: "/var/log/a".into(),
            dev: 3,
            inode: 4,
            fingerprint: Some(Fingerprint::of_bytes(b"line\n")),
        });
        book.set("a", file.clone(), 42);
        book.set("b", file.clone(), 7);
        book.save().unwrap();
        let again = CheckpointBook::open(&state).unwrap();
        assert_eq!(again.get("a"), Some((file.clone(), 42)));
        again.set("a", file, 50);
        again.save().unwrap();
        let text = fs::read_to_string(state.join("checkpoints.json")).unwrap();
        assert!(
            text.contains("\"version\": \"1\"") && text.contains("\"b\""),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("checkpoints.json"),
            b"{\"version\": \"1\", \"sour",
        )
        .unwrap();
        assert!(CheckpointBook::open(dir.path()).is_err());
    }
}
