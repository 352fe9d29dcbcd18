//! Splits a byte stream into lines with their byte offsets.
//!
//! Bytes are appended with [`LineSplitter::fill_from`] (a file or a journal) or
//! [`LineSplitter::push`] (a socket) and taken out as [`Piece`]s: a complete line (without `\n`
//! and a trailing `\r`), or a line longer than the limit, which is never held in memory whole:
//! only its first bytes are kept for the rejected record, the rest is skipped up to the next
//! newline. A last line with no newline stays pending until its newline arrives. It knows nothing
//! of files or events.

use memchr::memchr;
use std::io::{self, Read};

/// How many bytes one read asks for.
const CHUNK: usize = 64 * 1024;
/// How much of an over-long line is kept for the rejected record.
pub const TOO_LONG_PREFIX: usize = 1024;

/// One unit of output.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line. `start` is the offset of its first byte, `end` the offset after its `\n`.
    Line {
        start: u64,
        end: u64,
        text: &'a [u8],
    },
    /// A line over the limit; `len` counts its bytes without the line ending.
    TooLong {
        start: u64,
        end: u64,
        len: u64,
        prefix: &'a [u8],
    },
}

impl Piece<'_> {
    /// The byte range of the piece: its first byte, and the offset after its line ending.
    pub fn range(&self) -> (u64, u64) {
        match self {
            Piece::Line { start, end, .. } | Piece::TooLong { start, end, .. } => (*start, *end),
        }
    }

    /// A copy that does not borrow the splitter.
    pub fn to_owned(&self) -> OwnedPiece {
        match self {
            Piece::Line { start, end, text } => OwnedPiece::Line {
                start: *start,
                end: *end,
                text: text.to_vec(),
            },
            Piece::TooLong {
                start,
                end,
                len,
                prefix,
            } => OwnedPiece::TooLong {
                start: *start,
                end: *end,
                len: *len,
                prefix: prefix.to_vec(),
            },
        }
    }
}

/// A [`Piece`] copied out of the splitter, so it can be handed on while the splitter is used.
#[derive(Debug)]
pub enum OwnedPiece {
    Line {
        start: u64,
        end: u64,
        text: Vec<u8>,
    },
    TooLong {
        start: u64,
        end: u64,
        len: u64,
        prefix: Vec<u8>,
    },
}

impl OwnedPiece {
    pub fn range(&self) -> (u64, u64) {
        match self {
            OwnedPiece::Line { start, end, .. } | OwnedPiece::TooLong { start, end, .. } => {
                (*start, *end)
            }
        }
    }
}

/// Over-long line being skipped.
#[derive(Debug)]
struct Skipping {
    start: u64,
    len: u64,
    prefix: Vec<u8>,
}

#[derive(Debug)]
pub struct LineSplitter {
    /// `buf[..end]` is what was read; `buf[consumed..end]` is pending. The bytes after `end` are
    /// room for the next read, zeroed once when the buffer grows (not on every read).
    buf: Vec<u8>,
    end: usize,
    consumed: usize,
    /// File offset of `buf[0]`.
    base: u64,
    max_line: usize,
    skipping: Option<Skipping>,
    /// Set after a piece that must be copied before the next call (`TooLong` borrows `skipping`).
    finished_skip: Option<Skipping>,
}

impl LineSplitter {
    /// A splitter whose next byte is at `offset` in the stream.
    pub fn new(offset: u64, max_line: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            end: 0,
            consumed: 0,
            base: offset,
            max_line,
            skipping: None,
            finished_skip: None,
        }
    }

    /// Offset of the next byte that will be read into the buffer.
    pub fn read_offset(&self) -> u64 {
        self.base + self.end as u64
    }

    /// Forgets everything buffered and continues at `offset` (a truncated file starts over).
    pub fn reset(&mut self, offset: u64) {
        self.end = 0;
        self.consumed = 0;
        self.base = offset;
        self.skipping = None;
        self.finished_skip = None;
    }

    /// The partial line waiting for its newline: its offset and bytes (empty if none).
    pub fn pending(&self) -> (u64, &[u8]) {
        match &self.skipping {
            Some(skip) => (skip.start, &skip.prefix),
            None => (
                self.base + self.consumed as u64,
                &self.buf[self.consumed..self.end],
            ),
        }
    }

    /// Reads once from `r` into the buffer, at most [`CHUNK`] bytes; returns the byte count (0 at
    /// end of file).
    pub fn fill_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        self.compact();
        let room = self.end + CHUNK;
        if self.buf.len() < room {
            self.buf.resize(room, 0);
        }
        let n = r.read(&mut self.buf[self.end..room])?;
        self.end += n;
        Ok(n)
    }

    /// Forgets the last `n` bytes read (only right after [`LineSplitter::fill_from`], before any
    /// piece is taken): they turned out to belong to a file that replaced the one being read.
    pub fn unread(&mut self, n: usize) {
        self.end = self.end.saturating_sub(n).max(self.consumed);
    }

    /// Appends bytes directly.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Moves the pending bytes to the front, and gives back memory a long line made the buffer
    /// take once it is no longer needed.
    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.end, 0);
            self.end -= self.consumed;
            self.base += self.consumed as u64;
            self.consumed = 0;
        }
        if self.buf.capacity() > 4 * CHUNK.max(self.max_line) && self.end < CHUNK {
            self.buf.truncate(CHUNK);
            self.buf.shrink_to_fit();
        }
    }

    /// The next complete piece, or `None` when more bytes are needed.
    pub fn next_piece(&mut self) -> Option<Piece<'_>> {
        self.finished_skip = None;
        let pending = &self.buf[self.consumed..self.end];
        let start = self.base + self.consumed as u64;
        let newline = memchr(b'\n', pending);
        if let Some(skip) = &mut self.skipping {
            match newline {
                Some(i) => {
                    skip.len += i as u64;
                    self.consumed += i + 1;
                    self.finished_skip = self.skipping.take();
                    let s = self.finished_skip.as_ref()?;
                    return Some(Piece::TooLong {
                        start: s.start,
                        end: start + i as u64 + 1,
                        len: s.len,
                        prefix: &s.prefix,
                    });
                }
                None => {
                    skip.len += pending.len() as u64;
                    let room = TOO_LONG_PREFIX.saturating_sub(skip.prefix.len());
                    skip.prefix
                        .extend_from_slice(&pending[..room.min(pending.len())]);
                    self.consumed = self.end;
                    return None;
                }
            }
        }
        match newline {
            Some(i) => {
                let raw = &self.buf[self.consumed..self.consumed + i];
                let text = raw.strip_suffix(b"\r").unwrap_or(raw);
                self.consumed += i + 1;
                let end = start + i as u64 + 1;
                if text.len() > self.max_line {
                    let prefix = &text[..TOO_LONG_PREFIX.min(text.len())];
                    Some(Piece::TooLong {
                        start,
                        end,
                        len: text.len() as u64,
                        prefix,
                    })
                } else {
                    Some(Piece::Line { start, end, text })
                }
            }
            None if pending.len() > self.max_line + 1 => {
                // No newline within the limit (+1 for a `\r`): skip the rest of this line.
                let prefix = pending[..TOO_LONG_PREFIX.min(pending.len())].to_vec();
                self.skipping = Some(Skipping {
                    start,
                    len: pending.len() as u64,
                    prefix,
                });
                self.consumed = self.end;
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(splitter: &mut LineSplitter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(p) = splitter.next_piece() {
            out.push(match p {
                Piece::Line { start, end, text } => {
                    format!("{start}-{end}:{}", String::from_utf8_lossy(text))
                }
                Piece::TooLong {
                    start, end, len, ..
                } => format!("{start}-{end}:long({len})"),
            });
        }
        out
    }

    #[test]
    fn lines_offsets_crlf_and_partial_tail() {
        let mut s = LineSplitter::new(100, 64);
        s.push(b"a\r\nbb\n\nccc");
        assert_eq!(collect(&mut s), ["100-103:a", "103-106:bb", "106-107:"]);
        s.push(b"c\n");
        assert_eq!(collect(&mut s), ["107-112:cccc"]);
        assert_eq!(s.read_offset(), 112);
    }

    #[test]
    fn too_long_lines_are_skipped_without_buffering() {
        let mut s = LineSplitter::new(0, 4);
        s.push(b"ok\n0123456789");
        assert_eq!(collect(&mut s), ["0-3:ok"]);
        s.push(b"abcdef");
        assert_eq!(collect(&mut s), Vec::<String>::new());
        s.push(b"gh\nnext\n12345\n");
        assert_eq!(
            collect(&mut s),
            ["3-22:long(18)", "22-27:next", "27-33:long(5)"]
        );
        assert!(s.buf.capacity() < 1 << 20);
    }

    #[test]
    fn reads_keep_the_partial_line_and_forget_what_was_unread() {
        // A reader that hands out a few bytes per read, cutting lines anywhere.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(out.len()).min(5);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut s = LineSplitter::new(10, 64);
        let mut r = Trickle(b"one\ntwo\nthree\nfour");
        let mut got = Vec::new();
        while s.fill_from(&mut r).unwrap() > 0 {
            got.extend(collect(&mut s));
        }
        assert_eq!(got, ["10-14:one", "14-18:two", "18-24:three"]);
        assert_eq!(s.pending(), (24, &b"four"[..]));
        assert_eq!(s.read_offset(), 28);
        // The last read turned out to be another file's: it is forgotten, the partial line kept.
        assert_eq!(s.fill_from(&mut Trickle(b"XY\n")).unwrap(), 3);
        s.unread(3);
        assert_eq!(s.read_offset(), 28);
        s.push(b"!\n");
        assert_eq!(collect(&mut s), ["24-30:four!"]);
    }

    #[test]
    fn reset_starts_over() {
        let mut s = LineSplitter::new(0, 10);
        s.push(b"half");
        s.reset(0);
        s.push(b"new\n");
        assert_eq!(collect(&mut s), ["0-4:new"]);
    }
}
