//! Splits a byte stream into lines with their byte offsets.
//!
//! Bytes are appended with [`LineSplitter::fill_from`] (a file or a journal) or
//! [`LineSplitter::push`] (a socket) and taken out as [`Piece`]s: a complete line (without `\n`
//! and a trailing `\r`), or a line longer than the limit, which is never held in memory whole:
//! only its first bytes are kept for the rejected record, the rest is skipped up to the next
//! newline. A last line with no newline stays pending until its newline arrives. It knows nothing
//! of files or events.
//!
//! Lines are handed out as [`Bytes`] that share the buffer they were read into: the lines of one
//! 64 KiB buffer are one allocation, however many there are and however long they live. A buffer
//! is kept while any of its lines is, so what lines in flight hold is their own bytes plus at most
//! the two buffers at the ends of the run of lines in flight.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;
use std::io::{self, Read};

/// How many bytes one read asks for, and how big a new buffer is.
const CHUNK: usize = 64 * 1024;
/// How much of an over-long line is kept for the rejected record.
pub const TOO_LONG_PREFIX: usize = 1024;

/// One unit of output.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A complete line. `start` is the offset of its first byte, `end` the offset after its `\n`.
    Line { start: u64, end: u64, text: Bytes },
    /// A line over the limit; `len` counts its bytes without the line ending.
    TooLong {
        start: u64,
        end: u64,
        len: u64,
        prefix: Bytes,
    },
}

impl Piece {
    /// The byte range of the piece: its first byte, and the offset after its line ending.
    pub fn range(&self) -> (u64, u64) {
        match self {
            Piece::Line { start, end, .. } | Piece::TooLong { start, end, .. } => (*start, *end),
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
    /// What was read and not taken out yet. Lines are split off its front and keep sharing its
    /// memory; reads are appended at its back, into a new buffer once this one is full.
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Where a read lands before it is appended (zeroed once, not on every read).
    scratch: Vec<u8>,
    max_line: usize,
    skipping: Option<Skipping>,
}

impl LineSplitter {
    /// A splitter whose next byte is at `offset` in the stream.
    pub fn new(offset: u64, max_line: usize) -> Self {
        LineSplitter {
            buf: BytesMut::new(),
            base: offset,
            scratch: Vec::new(),
            max_line,
            skipping: None,
        }
    }

    /// Offset of the next byte that will be read into the buffer.
    pub fn read_offset(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Forgets everything buffered and continues at `offset` (a truncated file starts over).
    pub fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.base = offset;
        self.skipping = None;
    }

    /// The partial line waiting for its newline: its offset and bytes (empty if none).
    pub fn pending(&self) -> (u64, &[u8]) {
        match &self.skipping {
            Some(skip) => (skip.start, &skip.prefix),
            None => (self.base, &self.buf),
        }
    }

    /// Reads once from `r` into the buffer, at most [`CHUNK`] bytes; returns the byte count (0 at
    /// end of file).
    pub fn fill_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        if self.scratch.len() < CHUNK {
            self.scratch.resize(CHUNK, 0);
        }
        let n = r.read(&mut self.scratch)?;
        let LineSplitter { buf, scratch, .. } = self;
        Self::append(buf, &scratch[..n], self.max_line);
        Ok(n)
    }

    /// Forgets the last `n` bytes read (only right after [`LineSplitter::fill_from`], before any
    /// piece is taken): they turned out to belong to a file that replaced the one being read.
    pub fn unread(&mut self, n: usize) {
        self.buf.truncate(self.buf.len().saturating_sub(n));
    }

    /// Appends bytes directly.
    pub fn push(&mut self, bytes: &[u8]) {
        Self::append(&mut self.buf, bytes, self.max_line);
    }

    /// Appends `bytes` to `buf`: in place while it has room; else in the same memory if no line
    /// holds any of it, or in a new buffer of at least [`CHUNK`] bytes that starts with what is
    /// pending. A buffer a long line made big is given back once it is no longer needed.
    fn append(buf: &mut BytesMut, bytes: &[u8], max_line: usize) {
        if buf.capacity() > 4 * CHUNK.max(max_line) && buf.len() < CHUNK {
            let mut small = BytesMut::with_capacity(CHUNK);
            small.extend_from_slice(buf);
            *buf = small;
        }
        if buf.capacity() - buf.len() < bytes.len() {
            buf.reserve(bytes.len().max(CHUNK));
        }
        buf.extend_from_slice(bytes);
    }

    /// Takes the first `n` pending bytes out of the buffer.
    fn take(&mut self, n: usize) -> Bytes {
        self.base += n as u64;
        self.buf.split_to(n).freeze()
    }

    /// The next complete piece, or `None` when more bytes are needed.
    pub fn next_piece(&mut self) -> Option<Piece> {
        let start = self.base;
        let newline = memchr(b'\n', &self.buf);
        if let Some(skip) = &mut self.skipping {
            match newline {
                Some(i) => {
                    skip.len += i as u64;
                    self.base += i as u64 + 1;
                    self.buf.advance(i + 1);
                    let s = self.skipping.take()?;
                    return Some(Piece::TooLong {
                        start: s.start,
                        end: start + i as u64 + 1,
                        len: s.len,
                        prefix: Bytes::from(s.prefix),
                    });
                }
                None => {
                    let pending = self.buf.len();
                    skip.len += pending as u64;
                    let room = TOO_LONG_PREFIX.saturating_sub(skip.prefix.len());
                    skip.prefix
                        .extend_from_slice(&self.buf[..room.min(pending)]);
                    self.base += pending as u64;
                    self.buf.clear();
                    return None;
                }
            }
        }
        match newline {
            Some(i) => {
                let mut text = self.take(i + 1);
                text.truncate(i);
                if text.ends_with(b"\r") {
                    text.truncate(i - 1);
                }
                let end = start + i as u64 + 1;
                if text.len() > self.max_line {
                    // A copy: the rejected record keeps it, not the whole line.
                    let prefix = Bytes::copy_from_slice(&text[..TOO_LONG_PREFIX.min(text.len())]);
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
            None if self.buf.len() > self.max_line + 1 => {
                // No newline within the limit (+1 for a `\r`): skip the rest of this line.
                let pending = self.buf.len();
                let prefix = self.buf[..TOO_LONG_PREFIX.min(pending)].to_vec();
                self.skipping = Some(Skipping {
                    start,
                    len: pending as u64,
                    prefix,
                });
                self.base += pending as u64;
                self.buf.clear();
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
                    format!("{start}-{end}:{}", String::from_utf8_lossy(&text))
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
    fn lines_share_the_buffer_they_were_read_into_and_outlive_it() {
        let mut s = LineSplitter::new(0, 2 * CHUNK);
        s.push(b"one\ntwo\nthr");
        let Some(Piece::Line { text: one, .. }) = s.next_piece() else {
            panic!("a line")
        };
        let Some(Piece::Line { text: two, .. }) = s.next_piece() else {
            panic!("a line")
        };
        // One allocation: the second line starts right after the first one's newline.
        assert_eq!(one.as_ptr().wrapping_add(4), two.as_ptr());
        // Reads go on into new memory while the lines are held; the lines do not change.
        for _ in 0..CHUNK {
            s.push(b"x");
        }
        s.push(b"\n");
        let Some(Piece::Line { text: long, .. }) = s.next_piece() else {
            panic!("a line")
        };
        assert_eq!((&one[..], &two[..]), (&b"one"[..], &b"two"[..]));
        assert_eq!(long.len(), 3 + CHUNK);
        assert!(long.starts_with(b"thrxx"));
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
