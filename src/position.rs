//! Where a line was read: a [`Position`] in a followed file or in a source's journal.
//!
//! Acknowledgement tracking and checkpoints work with positions of either kind. A file position
//! needs to know *which* file: device + inode, plus a fingerprint of the file's first line
//! ([`FileIdentity`]). A journal position is a byte offset in the journal's append-only stream of
//! lines (its segments are named by the offset they start at), so it needs no identity guessing.
//!
//! Inodes are reused and copytruncate keeps the inode while replacing the content, so the inode alone
//! cannot tell a file from its successor. The fingerprint is a SHA-256 of the bytes up to and
//! including the first newline (at most [`FINGERPRINT_MAX`]): Flipt's first line ends in a timestamp,
//! so it differs between files, and once written it never changes, so it identifies the file for its
//! whole life. A file with no complete line yet has no fingerprint (and nothing has been read from it).

use ring::digest;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How far a source has got: the first byte not yet done with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// In a followed file.
    File {
        file: Arc<FileIdentity>,
        offset: u64,
    },
    /// In a source's journal (`state_dir/journal/SOURCE/`), counted over all its segments. `id`
    /// names the journal, so a position is never taken for one in another journal (a directory
    /// made anew or restored).
    Journal { id: Arc<str>, offset: u64 },
}

impl Position {
    pub fn offset(&self) -> u64 {
        match self {
            Position::File { offset, .. } | Position::Journal { offset, .. } => *offset,
        }
    }
}

/// At most this many leading bytes are hashed.
pub const FINGERPRINT_MAX: u64 = 64 * 1024;

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many leading bytes were hashed: at most [`FINGERPRINT_MAX`], also when read back from a
    /// damaged or hand-edited checkpoint file (the bytes are read into memory to compare).
    #[serde(deserialize_with = "bounded_len")]
    pub len: u64,
    #[serde(with = "hex16")]
    pub hash: [u8; 16],
}

impl Fingerprint {
    /// Hashes `file`'s first `len` bytes; `None` if the file is now shorter.
    pub fn of(file: &File, len: u64) -> io::Result<Option<Fingerprint>> {
        let mut head = vec![0u8; len as usize];
        match file.read_exact_at(&mut head, 0) {
            Ok(()) => Ok(Some(Fingerprint::of_bytes(&head))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn of_bytes(head: &[u8]) -> Fingerprint {
        let d = digest::digest(&digest::SHA256, head);
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&d.as_ref()[..16]);
        Fingerprint {
            len: head.len() as u64,
            hash,
        }
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        Ok(Fingerprint::of(file, self.len)? == Some(*self))
    }

    /// 16 hex digits, used in idempotency keys.
    pub fn short_hex(&self) -> String {
        crate::hex::encode(&self.hash[..8])
    }
}

/// One file: where it was opened, its inode, and (once it has a line) its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

impl FileIdentity {
    pub fn of_open(path: &Path, file: &File) -> io::Result<FileIdentity> {
        let m = file.metadata()?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            dev: m.dev(),
            inode: m.ino(),
            fingerprint: None,
        })
    }

    pub fn same_inode(&self, m: &std::fs::Metadata) -> bool {
        self.dev == m.dev() && self.inode == m.ino()
    }

    /// Whether `file` is this file: same inode, and it still starts with the fingerprinted line.
    pub fn is(&self, file: &File) -> io::Result<bool> {
        if !self.same_inode(&file.metadata()?) {
            return Ok(false);
        }
        match &self.fingerprint {
            Some(fp) => fp.matches(file),
            None => Ok(true),
        }
    }
}

fn bounded_len<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let len = u64::deserialize(d)?;
    if len > FINGERPRINT_MAX {
        return Err(serde::de::Error::custom(format!(
            "fingerprint len {len} is over the largest flagtail writes ({FINGERPRINT_MAX})"
        )));
    }
    Ok(len)
}

mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        crate::hex::decode(&s)
            .ok_or_else(|| serde::de::Error::custom("fingerprint hash must be 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprint_tells_rewritten_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"first line\nsecond\n").unwrap();
        let mut id = FileIdentity::of_open(&path, &f).unwrap();
        id.fingerprint = Fingerprint::of(&File::open(&path).unwrap(), 11).unwrap();
        assert!(id.is(&File::open(&path).unwrap()).unwrap());
        f.set_len(0).unwrap();
        f.write_all_at(b"other line\n", 0).unwrap();
        assert!(!id.is(&File::open(&path).unwrap()).unwrap());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<FileIdentity>(&json).unwrap(), id);
    }
}
