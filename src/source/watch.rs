//! File-system notifications for one followed file, with no polling (Linux inotify).
//!
//! Two kinds of watch on one inotify descriptor, read on the runtime (no thread of its own):
//! - the file itself (by inode, so it keeps reporting after a rename rotation while the renamed
//!   file is still written to): modification, truncation, attributes, deletion, moves;
//! - its directory, for names only: creation, deletion and renames of the file or of a file whose
//!   name starts with its name (`audit.log.1`). Writes to other files of the directory (another
//!   program's busy log beside it) are not asked for, so they cost no wake-up at all; nor do our
//!   own reads, so an idle file costs none either.
//!
//! When a file appears at the path, it is watched too. A queue overflow wakes the source, which
//! then looks at the file whatever happened.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// What is asked of the file's own watch.
const FILE_MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;
/// What is asked of the directory's watch: names coming and going, never writes.
const DIR_MASK: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;

/// Keeps the watch going; dropping it stops the watch and closes the descriptor.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `path` (which need not exist yet; its directory must); `wake` is notified for
/// every change that may matter to the file.
pub fn watch(path: &Path, wake: Arc<Notify>) -> io::Result<Watcher> {
    // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let dir = super::dir_of(path).to_path_buf();
    let dir_wd = add_watch(&fd, &dir, DIR_MASK)?;
    // The file may not be there yet; it is watched when it appears.
    watch_file(&fd, path, &dir);
    // SAFETY: the `OwnedFd` is an open inotify descriptor, owned by the `AsyncFd` from here on and
    // never swapped for another.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let path = path.to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let task = tokio::spawn(async move {
        // Room for many events at once (each is 16 bytes plus its name).
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Ok(mut ready) = fd.readable().await else {
                wake.notify_one();
                return;
            };
            let read = ready.try_io(|fd| {
                // SAFETY: reads at most `buf.len()` bytes into `buf`, which outlives the call.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast::<libc::c_void>(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match read {
                Ok(Ok(n)) => n,
                // Not readable after all: wait again.
                Err(_would_block) => continue,
                Ok(Err(_)) => {
                    wake.notify_one();
                    continue;
                }
            };
            let mut relevant = false;
            let mut appeared = false;
            for event in events(&buf[..n]) {
                if event.mask & libc::IN_Q_OVERFLOW != 0 {
                    relevant = true;
                } else if event.wd == dir_wd {
                    if event.name.starts_with(&name) {
                        relevant = true;
                        appeared |= event.name == name.as_slice()
                            && event.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0;
                    }
                } else if event.mask & libc::IN_IGNORED == 0 {
                    relevant = true;
                }
            }
            if appeared {
                watch_file(fd.get_ref(), &path, &dir);
            }
            if relevant {
                wake.notify_one();
            }
        }
    });
    Ok(Watcher { task })
}

/// Watches the file at `path` itself. If that cannot be done (the watch limit,
/// `fs.inotify.max_user_watches`, is reached), the directory's watch takes writes too, with a
/// warning: more wake-ups, but none missed.
fn watch_file(fd: &OwnedFd, path: &Path, dir: &Path) {
    match add_watch(fd, path, FILE_MASK) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch the file itself; watching every write in its directory instead (raise fs.inotify.max_user_watches)");
            if let Err(e) = add_watch(fd, dir, DIR_MASK | FILE_MASK) {
                tracing::error!(path = %dir.display(), error = %e, "cannot watch the directory for writes either; new lines are read only after the next rename or creation in it");
            }
        }
    }
}

fn add_watch(fd: &OwnedFd, path: &Path, mask: u32) -> io::Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; the descriptor is open.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
    if wd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(wd)
    }
}

/// One inotify event as read.
struct Event<'a> {
    wd: i32,
    mask: u32,
    /// The name within a watched directory, without its NUL padding; empty for a file's watch.
    name: &'a [u8],
}

/// The events in what one read returned: `struct inotify_event` (wd, mask, cookie, len) and `len`
/// bytes of NUL-padded name, one after another.
fn events(mut buf: &[u8]) -> impl Iterator<Item = Event<'_>> {
    std::iter::from_fn(move || {
        let word = |at: usize| -> Option<[u8; 4]> { buf.get(at..at + 4)?.try_into().ok() };
        let wd = i32::from_ne_bytes(word(0)?);
        let mask = u32::from_ne_bytes(word(4)?);
        let len = u32::from_ne_bytes(word(12)?) as usize;
        let name = buf.get(16..16 + len)?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let event = Event {
            wd,
            mask,
            name: &name[..end],
        };
        buf = &buf[16 + len..];
        Some(event)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_with_their_names() {
        let mut buf = Vec::new();
        for (wd, mask, name) in [
            (1, libc::IN_CREATE, &b"audit.log\0\0\0"[..]),
            (2, libc::IN_MODIFY, b""),
        ] {
            buf.extend_from_slice(&i32::to_ne_bytes(wd));
            buf.extend_from_slice(&u32::to_ne_bytes(mask));
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            buf.extend_from_slice(name);
        }
        let got: Vec<(i32, u32, Vec<u8>)> = events(&buf)
            .map(|e| (e.wd, e.mask, e.name.to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (1, libc::IN_CREATE, b"audit.log".to_vec()),
                (2, libc::IN_MODIFY, vec![])
            ]
        );
        assert_eq!(events(&buf[..10]).count(), 0, "a cut event is not read");
    }

    #[tokio::test]
    async fn writes_to_other_files_in_the_directory_do_not_wake() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let wake = Arc::new(Notify::new());
        let _w = watch(&path, wake.clone()).unwrap();
        std::fs::write(dir.path().join("access.log"), "x").unwrap();
        std::fs::write(dir.path().join("access.log"), "xy").unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(200), wake.notified());
        assert!(quiet.await.is_err(), "woken by another file");
        std::fs::write(&path, "line\n").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified())
            .await
            .expect("woken when the file appears");
        // Drain a wake-up left by the creation, then a write to the watched file wakes.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), wake.notified()).await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"more\n"))
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.notified())
            .await
            .expect("woken by a write to the file");
    }
}
