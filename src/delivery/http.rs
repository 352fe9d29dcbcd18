//! The HTTP side of webhook sinks: one worker's connection and one attempt at a request.
//!
//! Each delivery worker owns one HTTP/1.1 connection to its sink's receiver and speaks the
//! protocol itself: the sink's request line and fixed headers are written once at start-up, each
//! attempt adds its key, signature and length and goes out in one vectored write, and the answer
//! is parsed with `httparse` (length, chunks or read-to-close; interim 1xx answers skipped). The
//! connection is kept while the receiver keeps it; before a kept one is reused the kernel is
//! asked whether the receiver closed it or sent anything unasked, so a stale answer is never
//! taken for a new request's. Everything a receiver controls is bounded (head 64 KiB, kept body
//! 64 KiB, 8 interim answers, chunk lines 4 KiB, trailers 16 KiB), and the whole attempt runs
//! within the sink's `timeout`. Connecting (DNS, TCP, TLS) is hyper-rustls' connector: rustls
//! (ring provider) trusting the webpki roots plus a sink's `ca_file`.
//!
//! An attempt ends in one of three ways (SPEC §4): delivered (2xx), worth retrying (connection
//! errors, timeouts, a 2xx cut short, 408, 429, 5xx except 501; with the receiver's
//! `Retry-After`), or final (any other status).

use super::retry::Attempt;
use crate::sink::Webhook;
use http::StatusCode;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tower_service::Service;

/// Opens TCP or TLS connections to a sink's receiver.
pub type Connector = HttpsConnector<HttpConnector>;

/// Response bodies are read (to keep the connection) up to this size, and quoted in errors.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How much of a refusal's body its reason quotes, in characters.
const QUOTED_CHARS: usize = 200;

/// A connector trusting the webpki roots and, if given, the certificates in `ca_file`.
pub fn connector(ca_file: Option<&Path>) -> Result<Connector, String> {
    let tls = tls_config(ca_file)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// A TLS client config (rustls, ring) trusting the webpki roots and, if given, the certificates
/// in `ca_file`: what every sink that speaks TLS trusts.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    Ok(tls_builder(ca_file)?.with_no_client_auth())
}

/// A TLS client config builder (rustls, ring) trusting the webpki roots and `ca_file`, ready for
/// the client's own authentication (none, or a certificate).
pub fn tls_builder(
    ca_file: Option<&Path>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots))
}

/// `check --connect`: opens a connection to the receiver (TCP, and the TLS handshake for
/// `https`), sends nothing, and closes it.
pub async fn probe(connector: &Connector, hook: &Webhook) -> Result<(), String> {
    let mut connector = connector.clone();
    let open = async {
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        connector.call(hook.url.clone()).await.map(drop)
    };
    match tokio::time::timeout(hook.timeout, open).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(error_chain(&*e)),
        Err(_) => Err(format!(
            "no connection within {}",
            humantime::format_duration(hook.timeout)
        )),
    }
}

/// One worker's connection to a sink's receiver, opened when first needed and kept alive between
/// requests while the receiver keeps it.
pub struct Connection {
    connector: Connector,
    open: Option<Box<Open>>,
    /// The head of the request being sent (kept for its capacity).
    head: Vec<u8>,
}

/// A connection's byte stream: plain TCP, or TLS (rustls, through the connector's stream).
type Io = Either<TcpStream, TokioIo<Stream>>;
type Stream = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;

/// An open connection and what has been read from it and not yet used.
struct Open {
    io: Io,
    /// The TCP socket under `io`, looked at without reading (see [`Open::reusable`]).
    socket: RawFd,
    /// Bytes read; those before `at` are used.
    read: Vec<u8>,
    at: usize,
}

/// Why an exchange failed before the receiver answered.
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// A body as far as it was read: whole (or its first [`MAX_RESPONSE_BODY`] bytes), or cut short
/// (with why).
type Body = Result<Vec<u8>, String>;

/// What a request came to: the response's status, `Retry-After`, and its body.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Body,
}

/// How many interim (1xx) answers may come before the real one.
const MAX_INTERIM: usize = 8;
/// The most a line of a chunked body may take.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most a chunked body's trailers may take together.
const MAX_TRAILERS: usize = 16 * 1024;
/// A read buffer grown past this (by a long response head) is let go after the exchange.
const KEPT_READ_BUFFER: usize = 16 * 1024;

impl Open {
    async fn connect(connector: &mut Connector, hook: &Webhook) -> Result<Open, Failure> {
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let (io, socket) = match connector.call(hook.url.clone()).await? {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => {
                let tcp = tcp.into_inner();
                let socket = tcp.as_raw_fd();
                (Either::Left(tcp), socket)
            }
            hyper_rustls::MaybeHttpsStream::Https(tls) => {
                let socket = tls.inner().get_ref().0.inner().inner().as_raw_fd();
                let tls = hyper_rustls::MaybeHttpsStream::Https(tls);
                (Either::Right(TokioIo::new(tls)), socket)
            }
        };
        Ok(Open {
            io,
            socket,
            read: Vec::with_capacity(1024),
            at: 0,
        })
    }

    /// What has been read and not yet used.
    fn unread(&self) -> &[u8] {
        &self.read[self.at..]
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
    }

    /// Whether the connection can take a request: the receiver has neither closed it nor sent
    /// anything unasked (a stale answer must never be taken for the next request's). Asks the
    /// kernel, without waiting and without reading; over TLS, records waiting (a session ticket)
    /// are handed to rustls, and anything they hold but protocol makes the connection unusable.
    fn reusable(&mut self) -> bool {
        if !self.unread().is_empty() {
            return false;
        }
        match peek(self.socket) {
            Peek::Nothing => true,
            Peek::Closed => false,
            Peek::Waiting if matches!(self.io, Either::Left(_)) => false,
            Peek::Waiting => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let read = std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(|cx| {
                    Pin::new(&mut self.io).poll_read(cx, &mut buf)
                })));
                read.poll(&mut cx).is_pending() && peek(self.socket) == Peek::Nothing
            }
        }
    }

    /// Writes the request and reads the answer; `true` with it if the connection can be kept.
    async fn exchange(&mut self, head: &[u8], body: &[u8]) -> Result<(Answer, bool), Failure> {
        let written = self.write_request(head, body).await;
        let wrote_all = written.is_ok();
        let head = match (self.final_head().await, written) {
            (Ok(head), Ok(())) => head,
            // A receiver that stops reading may have answered first (413 to a body too big):
            // that answer stands, unless it claims to have taken what it could not read.
            (Ok(head), Err(_)) if !head.status.is_success() => head,
            (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        };
        let (body, whole) = match head.framing {
            _ if head.status == StatusCode::NO_CONTENT
                || head.status == StatusCode::NOT_MODIFIED =>
            {
                (Ok(Vec::new()), true)
            }
            Framing::Length(n) => {
                let mut kept = Vec::new();
                match self.read_body(Some(n), &mut kept).await {
                    Ok(all) => (Ok(kept), all),
                    Err(e) => (Err(e), false),
                }
            }
            Framing::Chunked => {
                let mut kept = Vec::new();
                match self.read_chunked(&mut kept).await {
                    Ok(all) => (Ok(kept), all),
                    Err(e) => (Err(e), false),
                }
            }
            Framing::UntilClose => {
                // The body is what comes before the close; a reset is no close.
                let mut kept = Vec::new();
                match self.read_body(None, &mut kept).await {
                    Ok(_) => (Ok(kept), false),
                    Err(e) => (Err(e), false),
                }
            }
        };
        let keep = wrote_all && head.keep_alive && whole && self.unread().is_empty();
        if keep {
            self.read.clear();
            self.at = 0;
            if self.read.capacity() > KEPT_READ_BUFFER {
                self.read = Vec::with_capacity(1024);
            }
        }
        let answer = Answer {
            status: head.status,
            retry_after: head.retry_after,
            body,
        };
        Ok((answer, keep))
    }

    /// Writes the head and the body, in one write when the connection takes it.
    async fn write_request(&mut self, head: &[u8], body: &[u8]) -> Result<(), Failure> {
        let mut parts = [IoSlice::new(head), IoSlice::new(body)];
        let mut left = &mut parts[..];
        while !left.is_empty() {
            let n = self.io.write_vectored(left).await?;
            if n == 0 {
                return Err("the connection took no more bytes".into());
            }
            IoSlice::advance_slices(&mut left, n);
        }
        self.io.flush().await?;
        Ok(())
    }

    /// The head of the real answer, after any interim ones (100 Continue, 103 Early Hints).
    async fn final_head(&mut self) -> Result<Head, Failure> {
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
    async fn read_body(&mut self, len: Option<u64>, kept: &mut Vec<u8>) -> Result<bool, String> {
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
    async fn read_chunked(&mut self, kept: &mut Vec<u8>) -> Result<bool, String> {
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

/// What [`Open::peek`] saw on a socket.
#[derive(PartialEq)]
enum Peek {
    /// Nothing to read: the connection is idle.
    Nothing,
    /// The receiver closed the connection (or it failed).
    Closed,
    /// Bytes are waiting.
    Waiting,
}

/// Looks at `socket` without reading from it or waiting.
fn peek(socket: RawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: `socket` is the open socket of a connection this worker holds; one byte is
    // peeked into a local.
    let n = unsafe {
        libc::recv(
            socket,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Waiting,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            Peek::Nothing
        }
        _ => Peek::Closed,
    }
}

/// The most headers a response may have.
const MAX_HEADERS: usize = 100;
/// The most a response head may take.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a response's body ends.
enum Framing {
    Length(u64),
    Chunked,
    /// Neither a length nor chunks: the body runs to the end of the connection.
    UntilClose,
}

/// What the exchange needs of a response head.
struct Head {
    status: StatusCode,
    retry_after: Option<Duration>,
    framing: Framing,
    /// The receiver keeps the connection open after this response.
    keep_alive: bool,
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

impl Connection {
    pub fn new(connector: Connector) -> Connection {
        Connection {
            connector,
            open: None,
            head: Vec::new(),
        }
    }

    /// POSTs `body` to the sink's receiver with the headers of delivery `key` (signed at
    /// `unix_secs`), within the sink's `timeout`.
    pub async fn post(
        &mut self,
        hook: &Webhook,
        key: &str,
        unix_secs: u64,
        body: &[u8],
    ) -> Attempt {
        let shown = &hook.shown;
        hook.write_head(&mut self.head, body, key, unix_secs);
        // Pinned where it is: moving the exchange's state into the timeout would copy it.
        let send = std::pin::pin!(self.send(hook, body));
        let outcome = tokio::time::timeout(hook.timeout, send).await;
        match outcome {
            Ok(Ok(answer)) => match answer.body {
                Ok(body) => classify(answer.status, answer.retry_after, &body, hook),
                // A 2xx cut short (fewer bytes than its Content-Length, a broken chunk) is not
                // an answer: the receiver may not have taken the event.
                Err(e) if answer.status.is_success() => Attempt::Retry {
                    reason: format!(
                        "POST {shown}: {} but the response was cut short: {e}",
                        answer.status
                    ),
                },
                // Any other status stands as it is.
                Err(_) => classify(answer.status, answer.retry_after, b"", hook),
            },
            // The connection was dropped with the request: the next attempt opens a new one.
            Err(_) => Attempt::Retry {
                reason: format!(
                    "POST {shown}: no response within {}",
                    humantime::format_duration(hook.timeout)
                ),
            },
            Ok(Err(e)) => Attempt::Retry {
                reason: format!("POST {shown}: {}", error_chain(e.as_ref())),
            },
        }
    }

    /// Sends the request on the kept connection, or on a new one if there is none or the
    /// receiver closed it while it was idle; keeps the connection if the receiver does.
    async fn send(&mut self, hook: &Webhook, body: &[u8]) -> Result<Answer, Failure> {
        if self.open.as_mut().is_some_and(|open| !open.reusable()) {
            self.open = None;
        }
        // Taken for the exchange: a connection dropped with it (an error, the timeout) is not
        // used again. Boxed, so taking it moves a pointer, not a TLS session.
        let mut open = match self.open.take() {
            Some(open) => open,
            // Boxed: connecting (TLS included) is the biggest state of this future, and is
            // rare; inline, every request would move it around.
            _ => Box::new(Box::pin(Open::connect(&mut self.connector, hook)).await?),
        };
        let (answer, keep) = open.exchange(&self.head, body).await?;
        if keep {
            self.open = Some(open);
        }
        Ok(answer)
    }
}

/// An answer as an attempt. A refusal's reason quotes the start of its body, the sink's secrets
/// masked first (the receiver may echo what it was sent).
fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    hook: &Webhook,
) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let text = hook
        .scrubber
        .quote(String::from_utf8_lossy(body).trim(), QUOTED_CHARS);
    let reason = format!(
        "POST {}: {status}{}{}",
        hook.shown,
        if text.trim().is_empty() { "" } else { ": " },
        text.trim()
    );
    // Whether it is tried again is the sink's `retry_on`, decided in one place for every
    // transport.
    Attempt::Refused {
        status: status.as_u16(),
        reason,
        retry_after,
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Output;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    /// A receiver on 127.0.0.1 that answers the requests on its Nth connection with the raw
    /// answers of `script[N]`, one per request, then closes that connection. Reports each
    /// request (its head and body) and each closed connection.
    struct Receiver {
        port: u16,
        heard: mpsc::UnboundedReceiver<Heard>,
    }

    #[derive(Debug, PartialEq)]
    enum Heard {
        Request {
            connection: usize,
            head: String,
            body: Vec<u8>,
        },
        Closed(usize),
        /// Bytes went out unasked after an answer.
        Extra(usize),
    }

    impl Receiver {
        async fn start(script: Vec<Vec<&'static str>>) -> Receiver {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let (tell, heard) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                for (connection, answers) in script.into_iter().enumerate() {
                    let (mut io, _) = listener.accept().await.unwrap();
                    let tell = tell.clone();
                    tokio::spawn(async move {
                        let mut read = Vec::new();
                        for answer in answers {
                            let Some((head, body)) = read_request(&mut io, &mut read).await else {
                                break;
                            };
                            let _ = tell.send(Heard::Request {
                                connection,
                                head,
                                body,
                            });
                            // `ANSWER|EXTRA|MORE`: MORE goes out after ANSWER, unasked;
                            // `ANSWER|RST|`: the connection is reset after ANSWER.
                            let (answer, extra) = match answer.split_once("|EXTRA|") {
                                Some((answer, extra)) => (answer, Some(extra)),
                                None => (answer, None),
                            };
                            let (answer, reset) = match answer.strip_suffix("|RST|") {
                                Some(answer) => (answer, true),
                                None => (answer, false),
                            };
                            if io.write_all(answer.as_bytes()).await.is_err() {
                                break;
                            }
                            if reset {
                                // Linger 0 resets at once: nothing blocks on drop.
                                #[allow(deprecated)]
                                io.set_linger(Some(Duration::ZERO)).unwrap();
                                break;
                            }
                            if let Some(extra) = extra {
                                io.write_all(extra.as_bytes()).await.unwrap();
                                let _ = tell.send(Heard::Extra(connection));
                            }
                        }
                        drop(io);
                        let _ = tell.send(Heard::Closed(connection));
                    });
                }
            });
            Receiver { port, heard }
        }

        /// A webhook sink sending to this receiver.
        fn hook(&self) -> Box<Webhook> {
            hook_to(self.port, "")
        }

        async fn next(&mut self) -> Heard {
            self.heard.recv().await.unwrap()
        }
    }

    /// A webhook sink sending to port `port` on 127.0.0.1, with `extra` keys.
    fn hook_to(port: u16, extra: &str) -> Box<Webhook> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flagtail.yaml");
        let yaml = format!(
            "sources: [{{name: s, file: {}/a.log}}]\nsinks: [{{name: r, url: 'http://127.0.0.1:{port}/in?x=1', signing_secret: s3cret{extra}}}]\n",
            dir.path().display(),
        );
        std::fs::write(&path, yaml).unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        let sink = crate::sink::Sink::build(0, &config.file.sinks[0]).unwrap();
        match sink.output {
            Output::Webhook(hook) => hook,
            _ => unreachable!(),
        }
    }

    /// Reads one request (head to the blank line, then its `content-length` bytes).
    async fn read_request(io: &mut TcpStream, read: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
        loop {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(read[..end].to_vec()).unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                while read.len() < end + 4 + len {
                    if io.read_buf(read).await.ok()? == 0 {
                        return None;
                    }
                }
                let body = read[end + 4..end + 4 + len].to_vec();
                read.drain(..end + 4 + len);
                return Some((head, body));
            }
            if io.read_buf(read).await.ok()? == 0 {
                return None;
            }
        }
    }

    /// What an attempt came to, short: `delivered`, `refused CODE: REASON`, `retry: REASON`.
    fn said(attempt: Attempt) -> String {
        match attempt {
            Attempt::Delivered => "delivered".into(),
            Attempt::Refused {
                status,
                reason,
                retry_after,
            } => {
                format!("refused {status} {retry_after:?}: {reason}")
            }
            Attempt::Retry { reason } => format!("retry: {reason}"),
            Attempt::Final { reason, .. } => format!("final: {reason}"),
        }
    }

    /// Sends `n` requests over one worker's connection to a receiver answering as `script`
    /// says; what each came to (as [`said`], without the `POST URL: ` of reasons).
    async fn send_n(script: Vec<Vec<&'static str>>, n: usize) -> Vec<String> {
        let receiver = Receiver::start(script).await;
        let hook = receiver.hook();
        let mut conn = Connection::new(connector(None).unwrap());
        let mut got = Vec::new();
        for _ in 0..n {
            let said = said(conn.post(&hook, "k", 0, b"x").await);
            got.push(said.replace(&format!("POST {}: ", hook.shown), ""));
        }
        got
    }

    #[tokio::test]
    async fn the_request_carries_its_signed_head_and_the_body_as_written() {
        let mut receiver = Receiver::start(vec![vec!["HTTP/1.1 204 No Content\r\n\r\n"]]).await;
        let hook = receiver.hook();
        let mut conn = Connection::new(connector(None).unwrap());
        let body = br#"{"a":1}"#;
        assert_eq!(said(conn.post(&hook, "s-k-1", 7, body).await), "delivered");
        let Heard::Request {
            head, body: got, ..
        } = receiver.next().await
        else {
            panic!("no request");
        };
        assert_eq!(got, body);
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "POST /in?x=1 HTTP/1.1");
        let sig = crate::hex::encode(
            ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret"),
                body,
            )
            .as_ref(),
        );
        for want in [
            format!("host: 127.0.0.1:{}", receiver.port),
            "content-type: application/json".into(),
            "idempotency-key: s-k-1".into(),
            format!("x-flipt-webhook-signature: {sig}"),
            "content-length: 7".into(),
        ] {
            assert!(lines.contains(&want.as_str()), "{want} not in {head}");
        }
    }

    #[tokio::test]
    async fn interim_and_chunked_answers_keep_the_connection_until_the_receiver_closes_it() {
        let mut receiver = Receiver::start(vec![
            vec![
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
                "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
            ],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        ])
        .await;
        let hook = receiver.hook();
        let mut conn = Connection::new(connector(None).unwrap());
        let mut connections = Vec::new();
        for _ in 0..2 {
            assert_eq!(said(conn.post(&hook, "k", 0, b"x").await), "delivered");
            match receiver.next().await {
                Heard::Request { connection, .. } => connections.push(connection),
                other => panic!("{other:?}"),
            }
        }
        // The receiver closes the first connection while it is idle: the next request goes out
        // on a new one, at its first attempt.
        assert_eq!(receiver.next().await, Heard::Closed(0));
        assert_eq!(said(conn.post(&hook, "k", 0, b"x").await), "delivered");
        match receiver.next().await {
            Heard::Request { connection, .. } => connections.push(connection),
            other => panic!("{other:?}"),
        }
        assert_eq!(connections, [0, 0, 1]);
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_answers_are_not_kept() {
        // Were either connection reused, its second answer (a 500) would be read.
        let got = send_n(
            vec![
                vec![
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                ],
                vec![
                    "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                    "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                ],
                vec!["HTTP/1.1 204 No Content\r\n\r\n"],
            ],
            3,
        )
        .await;
        assert_eq!(got, ["delivered"; 3]);
    }

    #[tokio::test]
    async fn refusals_quote_their_body_and_broken_answers_are_retried() {
        let got = send_n(vec![
            vec!["HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n"],
            vec!["HTTP/1.1 503 Busy\r\nRetry-After: 7\r\n\r\nbusy"],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"],
            vec!["SSH-2.0-OpenSSH_9.2\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"],
            vec![""],
        ], 7)
        .await;
        assert_eq!(
            got,
            [
                "refused 400 None: 400 Bad Request: nope",
                "refused 503 Some(7s): 503 Service Unavailable: busy",
                "retry: 200 OK but the response was cut short: the connection closed 3 bytes before the body's end",
                "retry: 200 OK but the response was cut short: the connection closed 8 bytes before the body's end",
                "retry: the response is not HTTP/1.1: invalid HTTP version",
                "retry: the response's Content-Length is not one number",
                "retry: the connection closed before a response",
            ]
        );
    }

    #[tokio::test]
    async fn a_long_answer_is_read_up_to_its_limit_and_its_connection_not_kept() {
        static LONG: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
        let long = LONG.get_or_init(|| {
            let body = "y".repeat(MAX_RESPONSE_BODY * 4);
            Box::leak(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_boxed_str(),
            )
        });
        let got = send_n(
            vec![
                vec![long, "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"],
                vec!["HTTP/1.1 204 No Content\r\n\r\n"],
            ],
            2,
        )
        .await;
        assert_eq!(got, ["delivered"; 2]);
    }

    #[test]
    fn success_is_delivered_and_any_other_status_is_a_refusal_with_its_code() {
        let hook = hook_to(9, "");
        let kind = |code: u16| match classify(StatusCode::from_u16(code).unwrap(), None, b"", &hook)
        {
            Attempt::Delivered => 0,
            Attempt::Refused { status, .. } => status,
            _ => 1,
        };
        assert_eq!(kind(204), 0);
        for code in [301, 404, 408, 429, 501, 503] {
            assert_eq!(kind(code), code);
        }
    }

    #[test]
    fn a_refusal_quoting_the_sinks_secrets_is_masked_before_it_is_cut() {
        let hook = hook_to(9, ", headers: {X-Api-Key: k-0123456789abcdef}");
        // The secret runs across the 200th character: cut first, its start would be quoted.
        let body = format!("{} k-0123456789abcdef", "x".repeat(195));
        let status = StatusCode::BAD_REQUEST;
        let Attempt::Refused { reason, .. } = classify(status, None, body.as_bytes(), &hook) else {
            panic!("not a refusal");
        };
        assert!(
            reason.ends_with("x ***") && !reason.contains("k-0"),
            "{reason}"
        );
        let short = classify(status, None, b"signed with s3cret.", &hook);
        assert!(
            matches!(&short, Attempt::Refused { reason, .. } if reason.ends_with("signed with ***.")),
            "{short:?}"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn bytes_sent_unasked_after_an_answer_are_never_taken_for_the_next_one() {
        // A stale 200 waits on the kept connection: the next request must go out on a new
        // connection, whose 503 is its answer.
        let mut receiver = Receiver::start(vec![
            vec!["HTTP/1.1 204 No Content\r\n\r\n|EXTRA|HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            vec!["HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"],
        ])
        .await;
        let hook = receiver.hook();
        let mut conn = Connection::new(connector(None).unwrap());
        assert_eq!(said(conn.post(&hook, "k", 0, b"x").await), "delivered");
        assert!(matches!(
            receiver.next().await,
            Heard::Request { connection: 0, .. }
        ));
        assert_eq!(receiver.next().await, Heard::Extra(0));
        assert!(said(conn.post(&hook, "k", 0, b"x").await).starts_with("refused 503"));
    }

    #[tokio::test]
    async fn a_kept_http_1_0_connection_is_reused_and_odd_framing_is_not_kept() {
        let got = send_n(vec![
            vec![
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                // Both framings: read as chunks, and the connection is let go.
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            ],
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"],
        ], 3).await;
        assert_eq!(got, ["delivered"; 3]);
    }

    #[tokio::test]
    async fn hostile_answers_end_the_attempt_with_a_reason() {
        static LONG: std::sync::OnceLock<[&'static str; 4]> = std::sync::OnceLock::new();
        let [head, interims, trailers, tiny] = *LONG.get_or_init(|| {
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            [
                leak(format!(
                    "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
                    "a".repeat(70_000)
                )),
                leak("HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1)),
                leak(format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{}",
                    "T: x\r\n".repeat(4000)
                )),
                leak(format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
                    "1\r\nz\r\n".repeat(MAX_RESPONSE_BODY + 5)
                )),
            ]
        });
        let got = send_n(vec![
            vec![head],
            vec![interims],
            vec![trailers],
            vec!["HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\nz\r\n0\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\n\r\nhalf an answer|RST|"],
            vec![tiny],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0005\r\nabcde\r\n0\r\n\r\n"],
        ], 9).await;
        assert_eq!(
            got,
            [
                "retry: the response head is over 64 KiB",
                "retry: more than 8 interim answers",
                "retry: 200 OK but the response was cut short: the trailers are over 16 KiB",
                "retry: the receiver switched protocols",
                "retry: 200 OK but the response was cut short: a chunk's size is not hex",
                "retry: 200 OK but the response was cut short: a line of the chunked body does not end in CRLF",
                "retry: 200 OK but the response was cut short: Connection reset by peer (os error 104)",
                // Kept up to the limit; the rest is not waited for.
                "delivered",
                "delivered",
            ]
        );
    }
}
