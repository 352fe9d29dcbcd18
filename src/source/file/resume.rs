//! Where a file source starts: the checkpoint's file, found by inode and first-line fingerprint at
//! the path, renamed away, or copied by copytruncate (then read under its own identity, so the file
//! at the path is followed from its start afterwards); or, with no checkpoint, `read_from`.

use super::disk::{Opened, find_copy, find_renamed, first_line_end, last_line_end, open_path};
use super::{FileSource, Reader};
use crate::config::ReadFrom;
use crate::position::{FileIdentity, Position};
use crate::source::lines::LineSplitter;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::sync::Arc;

impl FileSource {
    /// The reader to start with: from the checkpoint if its file is found, else per `read_from`.
    pub(super) fn resume(&self) -> io::Result<Option<Reader>> {
        let name = &self.dispatch.info.name;
        // A journal position (the source used to be a socket or HTTP source) says nothing here.
        let Some(Position::File {
            file: saved,
            offset,
        }) = self.book.get(name)
        else {
            let r = self.open(0)?;
            return match (r, self.read_from) {
                (Some(mut r), ReadFrom::End) => {
                    let at = last_line_end(&mut r.file)?;
                    if at > 0 {
                        let first = first_line_end(&mut r.file)?;
                        super::take_fingerprint(&r.file, &mut r.identity, &mut r.file_key, first)?;
                    }
                    r.file.seek(SeekFrom::Start(at))?;
                    r.splitter.reset(at);
                    Ok(Some(r))
                }
                (r, _) => Ok(r),
            };
        };
        let at_path = match open_path(&self.path)? {
            Opened::File(f) => Some(f),
            Opened::Missing | Opened::NotRegular(_) => None,
        };
        if let Some(f) = at_path
            && saved.is(&f)?
            && f.metadata()?.len() >= offset
        {
            return Ok(Some(self.reader_at(f, saved, offset)?));
        }
        let elsewhere = match find_renamed(&self.path, &saved)? {
            Some(found) => Some(found),
            None => find_copy(&self.path, &saved, offset)?,
        };
        if let Some((path, f)) = elsewhere
            && f.metadata()?.len() >= offset
        {
            tracing::info!(source = %name, path = %path.display(), offset, "checkpoint is in a rotated or copied file; reading its rest first");
            // Read under its own name and inode: a copy is another file than the one at the path,
            // so once it is read to its end the file at the path is followed from its start.
            let identity = FileIdentity {
                fingerprint: saved.fingerprint,
                ..FileIdentity::of_open(&path, &f)?
            };
            return Ok(Some(self.reader_at(f, Arc::new(identity), offset)?));
        }
        tracing::warn!(
            source = %name, path = %self.path.display(), offset,
            "the checkpointed file is gone, truncated or replaced (inode or first line differ); reading the file at the path from the start"
        );
        self.open(0)
    }

    pub(super) fn reader_at(
        &self,
        mut file: File,
        identity: Arc<FileIdentity>,
        offset: u64,
    ) -> io::Result<Reader> {
        file.seek(SeekFrom::Start(offset))?;
        let file_key = identity
            .fingerprint
            .map(|f| f.short_hex())
            .unwrap_or_default()
            .into();
        Ok(Reader {
            file,
            identity,
            file_key,
            splitter: LineSplitter::new(offset, self.max_line),
        })
    }

    /// Opens the file at the path from `offset`; `None` if there is no regular file there yet.
    /// Anything else at the path (a directory, a FIFO, a device) is not opened: it is logged and
    /// the source waits for the next change in the directory.
    pub(super) fn open(&self, offset: u64) -> io::Result<Option<Reader>> {
        match open_path(&self.path)? {
            Opened::File(f) => {
                let identity = Arc::new(FileIdentity::of_open(&self.path, &f)?);
                Ok(Some(self.reader_at(f, identity, offset)?))
            }
            Opened::Missing => Ok(None),
            Opened::NotRegular(kind) => {
                tracing::error!(source = %self.dispatch.info.name, path = %self.path.display(), "the path is {kind}, not a regular file; waiting for a regular file there");
                Ok(None)
            }
        }
    }
}
