//! Parsing what a receiver sends: a response head (`httparse`, status, framing, keep-alive,
//! `Retry-After`), interim answers, a body of a given length, to the close, or in chunks with
//! trailers. Everything a receiver controls is bounded (head 64 KiB, 8 interim answers, chunk
//! lines 4 KiB, trailers 16 KiB, kept body [`MAX_RESPONSE_BODY`]).

use super::connect::Open;
use super::request::MAX_RESPONSE_BODY;
use super::{Failure, parse_retry_after};
use http::StatusCode;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A body as far as it was read: whole (or its first [`MAX_RESPONSE_BODY`] bytes), or cut short
/// (with why).
pub(super) type Body = Result<Vec<u8>, String>;

/// How many interim (1xx) answers may come before the real one.
pub(super) const MAX_INTERIM: usize = 8;
/// The most a line of a chunked body may take.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most a chunked body's trailers may take together.
const MAX_TRAILERS: usize = 16 * 1024;

impl Open {
    /// The head of the real answer, after any interim ones (100 Continue, 103 Early Hints).
    pub(super) async fn final_head(&mut self) -> Result<Head, Failure> {
        for _ in 0..=MAX_INTERIM {
            let head = self.read_head().await?;
            if head.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err("the receiver switched protocols".into());
            }
            if !head.status.is_informational() {
                return Ok(head);
            }
        }
        Err(format!("more than {MAX_INTERIM} interim answers").into())
    }

    /// Reads more bytes; `false` at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.at > 0 {
            self.read.drain(..self.at);
            self.at = 0;
        }
        if self.read.capacity() - self.read.len() < 512 {
            self.read.reserve(4096);
        }
        Ok(self.io.read_buf(&mut self.read).await? > 0)
    }

    /// Reads and parses a response head.
    async fn read_head(&mut self) -> Result<Head, Failure> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(self.unread()) {
                Ok(httparse::Status::Complete(len)) if len > MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Complete(len)) => {
                    let head = Head::of(&response)?;
                    self.consume(len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("the response is not HTTP/1.1: {e}").into()),
            }
            if self.unread().len() >= MAX_RESPONSE_HEAD {
                return Err("the response head is over 64 KiB".into());
            }
            if !self.fill().await? {
                return Err(match self.unread().is_empty() {
                    true => "the connection closed before a response",
                    false => "the connection closed within the response head",
                }
                .into());
            }
        }
    }

    /// Reads `len` bytes of body (`None`: up to the end of the stream) into `kept`, up to its
    /// [`MAX_RESPONSE_BODY`]th byte; `Ok(true)` if all of them were read, `Ok(false)` if the
    /// rest is not waited for (the connection is then closed instead). An error if the stream
    /// ends early or breaks.
    pub(super) async fn read_body(
        &mut self,
        len: Option<u64>,
        kept: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let mut left = len.unwrap_or(u64::MAX);
        loop {
            let unread = self.unread();
            let take = unread
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let room = MAX_RESPONSE_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&unread[..take.min(room)]);
            self.consume(take);
            left -= take as u64;
            if left == 0 {
                return Ok(true);
            }
            if kept.len() >= MAX_RESPONSE_BODY {
                return Ok(false);
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) if len.is_none() => return Ok(false),
                Ok(false) => {
                    return Err(format!(
                        "the connection closed {left} bytes before the body's end"
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Reads a chunked body to its end (trailers included) into `kept`, up to its
    /// [`MAX_RESPONSE_BODY`]th byte; as [`Open::read_body`].
    pub(super) async fn read_chunked(&mut self, kept: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let line = self.read_line().await?;
            let size = line.size.ok_or("a chunk's size is not hex")?;
            if size == 0 {
                // Trailers, up to the blank line.
                let mut trailers = 0;
                loop {
                    let line = self.read_line().await?;
                    if line.empty {
                        return Ok(true);
                    }
                    trailers += line.len;
                    if trailers > MAX_TRAILERS {
                        return Err("the trailers are over 16 KiB".into());
                    }
                }
            }
            if !self.read_body(Some(size), kept).await? {
                return Ok(false);
            }
            if !self.read_line().await?.empty {
                return Err("a chunk is longer than its size".into());
            }
        }
    }

    /// Reads (consumes) one CRLF-ended line of a chunked body.
    async fn read_line(&mut self) -> Result<Line, String> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', self.unread()) {
                let line = match self.unread()[..end].strip_suffix(b"\r") {
                    Some(text) => Line {
                        len: end + 1,
                        empty: text.is_empty(),
                        size: parse_chunk_size(text),
                    },
                    None => return Err("a line of the chunked body does not end in CRLF".into()),
                };
                self.consume(line.len);
                return Ok(line);
            }
            if self.unread().len() > MAX_CHUNK_LINE {
                return Err("a line of the chunked body is over 4 KiB".into());
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return Err("the connection closed within a chunked body".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A line of a chunked body.
struct Line {
    /// Its bytes, CRLF included.
    len: usize,
    /// Nothing before the CRLF.
    empty: bool,
    /// Read as a chunk-size line.
    size: Option<u64>,
}

/// The most headers a response may have.
const MAX_HEADERS: usize = 100;
/// The most a response head may take.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a response's body ends.
pub(super) enum Framing {
    Length(u64),
    Chunked,
    /// Neither a length nor chunks: the body runs to the end of the connection.
    UntilClose,
}

/// What the exchange needs of a response head.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
    pub(super) framing: Framing,
    /// The receiver keeps the connection open after this response.
    pub(super) keep_alive: bool,
}

impl Head {
    fn of(response: &httparse::Response) -> Result<Head, Failure> {
        let status = response
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or("the response has no valid status")?;
        let http10 = response.version == Some(0);
        let (mut length, mut coding, mut close, mut keep) = (None, None, false, false);
        let mut retry_after = None;
        for h in response.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("");
            let tokens = || value.split(',').map(str::trim);
            if h.name.eq_ignore_ascii_case("content-length") {
                // One number, or a list of the same number (RFC 9110 §8.6).
                for n in tokens() {
                    let n = n
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| n.parse::<u64>().ok());
                    match (n.flatten(), length) {
                        (Some(n), None) => length = Some(n),
                        (Some(n), Some(l)) if n == l => {}
                        _ => return Err("the response's Content-Length is not one number".into()),
                    }
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // The last coding decides; only chunked has an end of its own.
                coding = tokens()
                    .next_back()
                    .map(|c| c.eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= tokens().any(|t| t.eq_ignore_ascii_case("close"));
                keep |= tokens().any(|t| t.eq_ignore_ascii_case("keep-alive"));
            } else if h.name.eq_ignore_ascii_case("retry-after") {
                retry_after = parse_retry_after(value);
            }
        }
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); a response with both, or
        // with chunks over HTTP/1.0, is odd enough that its connection is not kept.
        let framing = match (coding, length) {
            (Some(true), _) if !http10 => Framing::Chunked,
            (Some(_), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        };
        let odd = coding.is_some() && (length.is_some() || http10);
        Ok(Head {
            status,
            retry_after,
            framing,
            // HTTP/1.0 closes unless it says keep-alive.
            keep_alive: !close && !odd && (!http10 || keep),
        })
    }
}

/// A chunk-size line's size (extensions after `;` ignored): hex digits only.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.split(';').next()?.trim_matches([' ', '\t']);
    let digits = size.trim_start_matches('0');
    if size.is_empty() || digits.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(if digits.is_empty() { "0" } else { digits }, 16).ok()
}
