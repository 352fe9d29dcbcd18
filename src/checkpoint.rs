//! Saved positions: `state_dir/checkpoints.json`, one entry per source.
//!
//! [`CheckpointBook`] holds the latest position of every source in memory (set by the sources'
//! trackers) and writes them to disk from one task: each write takes whatever changed since the
//! last one (group commit), so disk writes never slow delivery and nothing is written when idle.
//! A write is a temp file, fsync, rename, fsync of the directory; writes are at least
//! [`SAVE_INTERVAL`] apart. Entries of sources no longer in the config are kept. After each write
//! the book publishes, per source, the position that is now durable ([`CheckpointBook::durable`]):
//! a journal deletes only what lies before it.
//!
//! The file is versioned: `"version": "2"` holds file and journal positions; a version-1 file
//! (file positions only, from earlier releases) is read and rewritten as version 2 on the next save.

use crate::position::{FileIdentity, Position};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// The shortest time between two saves. Back-to-back fsyncs under load cost a third of per-event
/// throughput on a 2-core machine (31k vs 45k events/s, `benches/` notes); waiting this long lets
/// one save cover the acknowledgements of many deliveries. 10 ms was still too often: each save is
/// two fsyncs, and at 10,000 events/s the flushes stalled delivery for a few milliseconds every
/// 100 ms (latency p99 1.04-1.06 ms; 0.19-0.23 ms at 100 ms, same run). The price: after a crash,
/// up to this much more of what was delivered is sent again (same `Idempotency-Key`). Idle: no
/// wake-ups.
pub const SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// A file position as version 1 wrote it (and version 2 still does, under `"file"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub file: FileIdentity,
    pub offset: u64,
}

/// One source's entry in a version-2 file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Saved {
    File(Checkpoint),
    Journal { id: String, offset: u64 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum CheckpointFile {
    #[serde(rename = "1")]
    V1 {
        sources: BTreeMap<String, Checkpoint>,
    },
    #[serde(rename = "2")]
    V2 { sources: BTreeMap<String, Saved> },
}

impl From<Saved> for Position {
    fn from(s: Saved) -> Position {
        match s {
            Saved::File(c) => Position::File {
                file: Arc::new(c.file),
                offset: c.offset,
            },
            Saved::Journal { id, offset } => Position::Journal {
                id: id.into(),
                offset,
            },
        }
    }
}

impl From<&Position> for Saved {
    fn from(p: &Position) -> Saved {
        match p {
            Position::File { file, offset } => Saved::File(Checkpoint {
                file: (**file).clone(),
                offset: *offset,
            }),
            Position::Journal { id, offset } => Saved::Journal {
                id: id.to_string(),
                offset: *offset,
            },
        }
    }
}

struct Book {
    positions: BTreeMap<String, Position>,
    dirty: bool,
    /// What the file on disk holds.
    on_disk: BTreeMap<String, Position>,
}

pub struct CheckpointBook {
    path: PathBuf,
    book: Mutex<Book>,
    changed: Notify,
    /// Serialises writers (the background task and a final save).
    write_lock: Mutex<()>,
    /// Per source, the position last written to disk, for those who asked ([`Self::durable`]).
    durable: Mutex<HashMap<String, watch::Sender<Option<Position>>>>,
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
                    .map(|(name, c)| (name, Saved::File(c).into()))
                    .collect(),
                Ok(CheckpointFile::V2 { sources }) => sources
                    .into_iter()
                    .map(|(name, s)| (name, s.into()))
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
        keep_reserve(state_dir);
        Ok(Arc::new(CheckpointBook {
            path,
            book: Mutex::new(Book {
                on_disk: positions.clone(),
                positions,
                dirty: false,
            }),
            changed: Notify::new(),
            write_lock: Mutex::new(()),
            durable: Mutex::new(HashMap::new()),
        }))
    }

    pub fn get(&self, source: &str) -> Option<Position> {
        self.lock().positions.get(source).cloned()
    }

    pub fn set(&self, source: &str, position: Position) {
        let mut b = self.lock();
        match b.positions.get_mut(source) {
            Some(entry) => *entry = position,
            None => {
                b.positions.insert(source.to_string(), position);
            }
        }
        b.dirty = true;
        drop(b);
        self.changed.notify_one();
    }

    /// The position of `source` that is on disk, updated after every save. Starts with what the
    /// book was opened with (that is on disk too) or `None`.
    pub fn durable(&self, source: &str) -> watch::Receiver<Option<Position>> {
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        durable
            .entry(source.to_string())
            .or_insert_with(|| watch::channel(self.lock().on_disk.get(source).cloned()).0)
            .subscribe()
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
        let positions = {
            let mut b = self.lock();
            if !b.dirty {
                return Ok(());
            }
            b.dirty = false;
            b.positions.clone()
        };
        let sources = positions
            .iter()
            .map(|(name, p)| (name.clone(), Saved::from(p)))
            .collect();
        let bytes = serde_json::to_vec_pretty(&CheckpointFile::V2 { sources })?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let result = match write_atomically(&self.path, &bytes) {
            // The disk is full: the space kept for this save is given to it, since only a saved
            // position lets the journals and backlogs delete what was delivered.
            Err(e) if is_full(&e) && use_reserve(dir) => write_atomically(&self.path, &bytes),
            Err(e) => Err(e),
            Ok(()) => {
                keep_reserve(dir);
                Ok(())
            }
        };
        match &result {
            Ok(()) => {
                self.lock().on_disk = positions.clone();
                let durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
                for (name, tx) in durable.iter() {
                    if let Some(p) = positions.get(name) {
                        tx.send_replace(Some(p.clone()));
                    }
                }
            }
            Err(_) => self.lock().dirty = true,
        }
        result
    }
    /// Saves after every change until `stop`, then once more. Saves are at least
    /// [`SAVE_INTERVAL`] apart, so under load one write covers many acknowledgements. Returns the
    /// result of the last save: the daemon exits 1 if its positions could not be saved.
    pub async fn run_writer(self: Arc<Self>, stop: CancellationToken) -> io::Result<()> {
        // After a failed save, the next comes by itself (a second later, then up to 30 s), change
        // or not: what was delivered is only let go of once its position is on disk.
        let mut again: Option<Duration> = None;
        loop {
            if let Some(wait) = again {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
            } else {
                tokio::select! {
                    _ = self.changed.notified() => {}
                    _ = stop.cancelled() => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SAVE_INTERVAL) => {}
                _ = stop.cancelled() => break,
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save()).await {
                Ok(Ok(())) => {
                    if again.take().is_some() {
                        tracing::info!(path = %self.path.display(), "checkpoints saved again");
                    }
                }
                Ok(Err(e)) => {
                    if again.is_none() {
                        tracing::error!(path = %self.path.display(), error = %e, "cannot save checkpoints; trying again every few seconds");
                    }
                    let next = again.map_or(Duration::from_secs(1), |w| w * 2);
                    again = Some(next.min(Duration::from_secs(30)));
                }
                Err(e) => tracing::error!(error = %e, "checkpoint writer panicked"),
            }
        }
        self.save()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Space kept in the state directory for saving checkpoints once the disk is full.
const RESERVE: &str = "reserve";
const RESERVE_BYTES: usize = 1024 * 1024;

/// Makes `dir/reserve` (1 MiB of zeros, really written) if it is not there; a disk too full for
/// it is left as it is, and it is tried again after the next save.
fn keep_reserve(dir: &Path) {
    let path = dir.join(RESERVE);
    if path.exists() {
        return;
    }
    let made = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(&vec![0u8; RESERVE_BYTES])?;
            f.sync_all()
        });
    if made.is_err() {
        let _ = fs::remove_file(&path);
    }
}

/// Gives the reserve's space back to the disk; false if there was none to give.
fn use_reserve(dir: &Path) -> bool {
    let given = fs::remove_file(dir.join(RESERVE)).is_ok();
    if given {
        tracing::warn!(dir = %dir.display(), "the disk is full: saving checkpoints in the space kept for them, so that what was delivered can be deleted");
    }
    given
}

/// Whether `e` says the disk (or a quota) is full.
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(libc::ENOSPC)
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
    use crate::position::Fingerprint;

    fn jp(offset: u64) -> Position {
        Position::Journal {
            id: "j1".into(),
            offset,
        }
    }

    fn file_at(offset: u64) -> Position {
        Position::File {
            file: Arc::new(FileIdentity {
                path: "/var/log/a".into(),
                dev: 3,
                inode: 4,
                fingerprint: Some(Fingerprint::of_bytes(b"line\n")),
            }),
            offset,
        }
    }

    #[test]
    fn positions_survive_a_reopen_and_keep_other_sources() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let book = CheckpointBook::open(&state).unwrap();
        book.set("a", file_at(42));
        book.set("b", jp(7));
        book.save().unwrap();
        let again = CheckpointBook::open(&state).unwrap();
        assert_eq!(again.get("a"), Some(file_at(42)));
        assert_eq!(again.get("b"), Some(jp(7)));
        again.set("a", file_at(50));
        again.save().unwrap();
        let text = fs::read_to_string(state.join("checkpoints.json")).unwrap();
        assert!(
            text.contains("\"version\": \"2\"") && text.contains("\"journal\""),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_version_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"version": "1", "sources": {"a": {"path": "/var/log/a", "dev": 3, "inode": 4, "fingerprint": {"len": 5, "hash": "HASH"}, "offset": 42}}}"#;
        let hash = crate::hex::encode(&Fingerprint::of_bytes(b"line\n").hash);
        fs::write(
            dir.path().join("checkpoints.json"),
            v1.replace("HASH", &hash),
        )
        .unwrap();
        let book = CheckpointBook::open(dir.path()).unwrap();
        assert_eq!(book.get("a"), Some(file_at(42)));
        book.set("b", jp(1));
        book.save().unwrap();
        let again = CheckpointBook::open(dir.path()).unwrap();
        assert_eq!(again.get("a"), Some(file_at(42)));
        let text = fs::read_to_string(dir.path().join("checkpoints.json")).unwrap();
        assert!(text.contains("\"version\": \"2\""), "{text}");
    }

    #[test]
    fn the_durable_position_moves_only_when_saved() {
        let dir = tempfile::tempdir().unwrap();
        let book = CheckpointBook::open(dir.path()).unwrap();
        let durable = book.durable("j");
        book.set("j", jp(10));
        assert_eq!(*durable.borrow(), None, "not on disk yet");
        book.save().unwrap();
        assert_eq!(*durable.borrow(), Some(jp(10)));
        let reopened = CheckpointBook::open(dir.path()).unwrap();
        assert_eq!(*reopened.durable("j").borrow(), Some(jp(10)));
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
