//! Serving HTTP/1.1 on a bound TCP listener, for the HTTP source and the admin endpoint.
//!
//! What a connection may hold, and for how long:
//! - Accepting is never gated by requests in service: a connection costs a task and a socket,
//!   not a request slot (the services take those per request, once a request head arrived).
//! - A connection gets [`HEAD_TIMEOUT`] to send a request head, from its opening and again after
//!   each answer (hyper's `header_read_timeout`, which also bounds keep-alive idleness); a head
//!   longer than 32 KiB is answered 431.
//! - At most [`Limits::connections`] are open at once. At the cap, the oldest connection with no
//!   request in service is closed to make room for the new one; if every one is in service, the
//!   new one waits in the listen queue until one finishes.
//! - A client that shuts its write side after sending its request still gets its answer.
//! - A client that opens with HTTP/2's prior-knowledge preface gets a SETTINGS frame and a GOAWAY
//!   with `HTTP_1_1_REQUIRED`, and a WARN line names the listener and the peer.
//!
//! - With TLS (an HTTP source's `tls`), the handshake is part of the opening: it too must end
//!   within [`HEAD_TIMEOUT`], and a client the TLS config refuses (no certificate from the
//!   client CA) is refused there, before any request.
//!
//! It does not route, authenticate or read bodies: that is the service's job.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a connection may take to send a request head (or stay idle between requests).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection may have buffered: a request head longer than this is answered 431, and
/// 1,024 connections sending heads slowly hold at most 32 MiB.
const MAX_BUFFER: usize = 32 * 1024;

/// How long a closing connection with no request in service may take to send what it has.
const FLUSH: Duration = Duration::from_millis(200);

/// Connections one listener keeps open at once (a larger `max_connections` raises it).
pub const CONNECTIONS: usize = 1024;

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// How long requests being answered may take to finish once the server stops.
    pub grace: Duration,
    /// When every connection has a request in service, close the oldest for a new one rather than
    /// wait (the admin listener: a scrape may be cut short, a probe is always let in).
    pub cut_busy: bool,
}

/// An answer as the services make them.
pub type Answer = Response<Full<Bytes>>;

/// A connection's byte stream: TCP, or TLS over it.
type Stream = tokio_util::either::Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Serves `service` on `listener` until `stop` fires; then requests being answered get
/// `limits.grace` to finish. `name` names the listener in logs (`admin`, a source's name).
/// With `tls`, connections are served over TLS.
pub async fn serve<S>(
    listener: &TcpListener,
    name: Arc<str>,
    (limits, tls): (Limits, Option<tokio_rustls::TlsAcceptor>),
    service: S,
    stop: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Answer, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let open = Arc::new(Open::default());
    let mut tasks = JoinSet::new();
    while let Some((stream, peer)) = accept(listener, &name, &stop).await {
        if !open
            .make_room(limits.connections, limits.cut_busy, &stop)
            .await
        {
            break;
        }
        let _ = stream.set_nodelay(true);
        let entry = open.add();
        let conn = Connection {
            name: name.clone(),
            peer,
            limits,
            entry,
            open: open.clone(),
            tls: tls.clone(),
        };
        tasks.spawn(conn.run(stream, service.clone(), stop.clone()));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// The next connection; `None` once `stop` fires. Accept errors (out of file descriptors, say)
/// are logged and waited out a little instead of spun on.
async fn accept(
    listener: &TcpListener,
    name: &str,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => return Some(conn),
                Err(e) => tracing::warn!(listener = %name, error = %e, "cannot accept a connection"),
            },
            _ = stop.cancelled() => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// The open connections of one listener, oldest first.
#[derive(Default)]
struct Open {
    conns: Mutex<BTreeMap<u64, Arc<Entry>>>,
    next: AtomicUsize,
    /// Told when a connection closes or a request ends.
    changed: Notify,
    /// When an HTTP/2 refusal was last logged, and how many were not logged since (at most one
    /// line a second: anyone can send the preface, over and over).
    h2_said: Mutex<(Option<std::time::Instant>, u64)>,
}

/// One open connection.
struct Entry {
    id: u64,
    /// Requests of this connection in service now.
    busy: AtomicUsize,
    /// Fired to close the connection (gracefully: a request in service still gets its answer).
    close: CancellationToken,
}

impl Open {
    /// Whether an HTTP/2 refusal may be logged now; if so, how many were not logged before it.
    fn may_say_h2(&self) -> Option<u64> {
        let mut said = self.h2_said.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if said
            .0
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            said.1 += 1;
            return None;
        }
        let missed = said.1;
        *said = (Some(now), 0);
        Some(missed)
    }

    fn add(&self) -> Arc<Entry> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let entry = Arc::new(Entry {
            id,
            busy: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        self.lock().insert(id, entry.clone());
        entry
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Entry>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection under `cap`: closes the oldest idle one, or (with
    /// `cut_busy`) the oldest, or waits for one to finish; `false` if `stop` fired first.
    async fn make_room(&self, cap: usize, cut_busy: bool, stop: &CancellationToken) -> bool {
        loop {
            let changed = self.changed.notified();
            {
                let mut conns = self.lock();
                if conns.len() < cap {
                    return true;
                }
                let idle = conns
                    .values()
                    .find(|e| e.busy.load(Ordering::SeqCst) == 0)
                    .or_else(|| conns.values().next().filter(|_| cut_busy))
                    .map(|e| e.id);
                if let Some(entry) = idle.and_then(|id| conns.remove(&id)) {
                    entry.close.cancel();
                    return true;
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = stop.cancelled() => return false,
            }
        }
    }
}

/// Marks a request in service for as long as it lives.
struct InService(Arc<Entry>, Arc<Open>);

impl InService {
    fn new(entry: &Arc<Entry>, open: &Arc<Open>) -> InService {
        entry.busy.fetch_add(1, Ordering::SeqCst);
        InService(entry.clone(), open.clone())
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.1.changed.notify_one();
    }
}

/// One accepted connection, until it closes.
struct Connection {
    name: Arc<str>,
    peer: SocketAddr,
    limits: Limits,
    entry: Arc<Entry>,
    open: Arc<Open>,
    /// TLS to take the connection through first, if the listener serves it.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Connection {
    async fn run<S>(self, stream: TcpStream, service: S, stop: CancellationToken)
    where
        S: Service<Request<Incoming>, Response = Answer, Error = Infallible>
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        // Closing and stopping are heard while the first bytes are awaited too.
        let opening = tokio::select! {
            opening = self.open_stream(stream) => opening,
            _ = self.entry.close.cancelled() => None,
            _ = stop.cancelled() => None,
        };
        match opening {
            Some(Opening::Http1(stream)) => self.serve_http1(stream, service, &stop).await,
            Some(Opening::Http2(stream)) => {
                if let Some(not_logged) = self.open.may_say_h2() {
                    tracing::warn!(listener = %self.name, peer = %self.peer, not_logged, "refused an HTTP/2 connection (prior knowledge): flagtail serves HTTP/1.1 only (at most one such line a second; not_logged counts the others since the last)");
                }
                tokio::select! {
                    _ = refuse_http2(stream) => {}
                    _ = self.entry.close.cancelled() => {}
                    _ = stop.cancelled() => {}
                }
            }
            None => {}
        }
        self.open.remove(self.entry.id);
    }

    /// The connection's stream (after the TLS handshake, if any), sniffed; `None` if the
    /// handshake failed or did not end within [`HEAD_TIMEOUT`].
    async fn open_stream(&self, tcp: TcpStream) -> Option<Opening> {
        let stream = match &self.tls {
            None => Stream::Left(tcp),
            Some(tls) => match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => Stream::Right(stream),
                Ok(Err(e)) => {
                    tracing::debug!(listener = %self.name, peer = %self.peer, error = %e, "TLS handshake refused");
                    return None;
                }
                Err(_) => return None,
            },
        };
        sniff(stream).await
    }

    async fn serve_http1<S>(&self, stream: Rewound, service: S, stop: &CancellationToken)
    where
        S: Service<Request<Incoming>, Response = Answer, Error = Infallible>
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let (entry, open) = (self.entry.clone(), self.open.clone());
        let service = Arc::new(service);
        let tracked = service_fn(move |req| {
            let in_service = InService::new(&entry, &open);
            let answer = service.call(req);
            async move {
                let answer = answer.await;
                drop(in_service);
                answer
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_BUFFER)
            .half_close(true)
            .serve_connection(TokioIo::new(stream), tracked);
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(listener = %self.name, peer = %self.peer, error = %e, "connection ended");
                }
                return;
            }
            _ = self.entry.close.cancelled() => {
                tracing::debug!(listener = %self.name, peer = %self.peer, "closing an idle connection for a new one");
            }
            _ = stop.cancelled() => {}
        }
        // Requests in service finish, within the grace; no new one starts. A connection with none
        // gets a moment to send an answer already made, not the time to finish a head it began
        // (hyper's graceful shutdown waits for a connection's first request).
        let wait = match self.entry.busy.load(Ordering::SeqCst) {
            0 => FLUSH,
            _ => self.limits.grace,
        };
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(wait, conn).await;
    }
}

/// How a connection opens.
enum Opening {
    Http1(Rewound),
    Http2(Stream),
}

/// Reads the connection's first bytes, as long as they could be HTTP/2's preface, within
/// [`HEAD_TIMEOUT`]; `None` if the client sent nothing in time or closed.
async fn sniff(mut stream: Stream) -> Option<Opening> {
    let mut head = [0u8; H2_PREFACE.len()];
    let mut have = 0;
    let read = async {
        while have < head.len() && head[..have] == H2_PREFACE[..have] {
            match stream.read(&mut head[have..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => have += n,
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read).await.ok()?;
    match &head[..have] {
        [] => None,
        h if h == H2_PREFACE => Some(Opening::Http2(stream)),
        h => Some(Opening::Http1(Rewound {
            head: Bytes::copy_from_slice(h),
            inner: stream,
        })),
    }
}

/// Answers an HTTP/2 client as HTTP/2 says a server that needs HTTP/1.1 does: its SETTINGS
/// frame, then GOAWAY with `HTTP_1_1_REQUIRED` and a reason; then reads what the client still
/// sends (for a while) so that closing does not reset the connection before it read the GOAWAY.
async fn refuse_http2(mut stream: Stream) {
    const REASON: &[u8] = b"flagtail serves HTTP/1.1 only";
    let mut frames = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let len = (8 + REASON.len()) as u32;
    frames.extend_from_slice(&len.to_be_bytes()[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes());
    frames.extend_from_slice(&0xdu32.to_be_bytes());
    frames.extend_from_slice(REASON);
    let linger = async {
        stream.write_all(&frames).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
}

/// A connection whose first bytes were read already: they are read again first.
struct Rewound {
    head: Bytes,
    inner: Stream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            let head = self.head.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises this process's soft limit on open files to its hard limit (as Go programs do), so that
/// the listeners' connection caps fit; logs a warning when even the hard limit is below what
/// `listeners` full listeners and the daemon's own files need. Returns the limit in force.
pub fn raise_open_files(listeners: usize) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if got && lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let limit: u64 = lim.rlim_cur;
    let needed = ((listeners + 1) * CONNECTIONS) as u64;
    if got && listeners > 0 && limit < needed {
        tracing::warn!(
            limit,
            needed,
            "the open-file limit is low for {listeners} HTTP listeners of {CONNECTIONS} connections each: raise it (LimitNOFILE=, ulimit -n)"
        );
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room() {
        let open = Arc::new(Open::default());
        let stop = CancellationToken::new();
        let (a, b) = (open.add(), open.add());
        let _busy = InService::new(&a, &open);
        assert!(open.make_room(3, false, &stop).await, "under the cap");
        assert!(open.make_room(2, false, &stop).await);
        assert!(
            !a.close.is_cancelled(),
            "a request in service is not closed"
        );
        assert!(b.close.is_cancelled(), "the idle one is");
        // Every one busy: the admin listener closes the oldest; the ingest waits, until stopped.
        let c = open.add();
        let _also = InService::new(&c, &open);
        assert!(open.make_room(2, true, &stop).await);
        assert!(a.close.is_cancelled(), "the oldest, though busy");
        assert!(!c.close.is_cancelled());
        let waiting = open.make_room(1, false, &stop);
        stop.cancel();
        assert!(!waiting.await);
    }
}
