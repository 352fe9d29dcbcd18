//! File-system notifications for one followed file, with no polling.
//!
//! Watches the file's directory (so creation and renames are seen, not just writes) and wakes the
//! source for events about the file or a file whose name starts with its name (`audit.log.1` after
//! a rename rotation, which may still be written to). Access events (our own reads) are ignored, so
//! an idle file causes no wake-ups at all.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Notify;

/// Starts watching; the returned watcher must be kept alive for as long as wake-ups are wanted.
pub fn watch(path: &Path, wake: Arc<Notify>) -> notify::Result<RecommendedWatcher> {
    let dir = super::dir_of(path).to_path_buf();
    let name = path
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let ours = event.paths.is_empty()
                    || event.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| n.as_bytes().starts_with(&name))
                    });
                if ours && !matches!(event.kind, EventKind::Access(_)) {
                    wake.notify_one();
                }
            }
            // Overflow or a watch error: look at the file, whatever happened.
            Err(_) => wake.notify_one(),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
