//! The file system around a followed file: what is at a path (only regular files are ever
//! opened), which file beside it is the one the checkpoint names (renamed, or copied by
//! copytruncate), and where its first and last lines end.

use crate::position::{FINGERPRINT_MAX, FileIdentity};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What is at a source's path.
pub(super) enum Opened {
    File(File),
    Missing,
    /// Something that is not a regular file (named by its kind): never read.
    NotRegular(&'static str),
}

/// Opens `path` if it is a regular file. Anything else is never opened; and should it be swapped
/// in between the look and the open, the open does not block (a FIFO would wait for a writer) and
/// the kind is checked again on the open file.
pub(super) fn open_path(path: &Path) -> io::Result<Opened> {
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
pub(super) fn find_renamed(
    path: &Path,
    saved: &FileIdentity,
) -> io::Result<Option<(PathBuf, File)>> {
    let found = candidates(path, |m| saved.same_inode(m), |f| saved.is(f))?;
    Ok(found.into_iter().next().map(|c| (c.path, c.file)))
}

/// Finds, in the directory of `path`, another file (not `of` itself) that starts with the same
/// first line as `of` and reaches `offset`: the copy copytruncate made. If several do (a backup
/// beside the rotated copy), the longest wins, as it holds the most of the file; then the most
/// recently written; then the first name. The choice never depends on the directory's order.
pub(super) fn find_copy(
    path: &Path,
    of: &FileIdentity,
    offset: u64,
) -> io::Result<Option<(PathBuf, File)>> {
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
    let mut names: Vec<PathBuf> = fs::read_dir(crate::source::dir_of(path))?
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
pub(super) fn last_line_end(f: &mut File) -> io::Result<u64> {
    let size = f.metadata()?.len();
    crate::record_log::last_line_end(f, size)
}

/// Offset just after the first newline (or the fingerprint limit).
pub(super) fn first_line_end(f: &mut File) -> io::Result<u64> {
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
