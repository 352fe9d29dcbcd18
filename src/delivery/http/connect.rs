//! Opening a connection to a sink's receiver, and telling whether a kept one is still good.
//!
//! Connecting (DNS, TCP, TLS) is hyper-rustls' connector, with the TLS config of [`super::tls`]. An [`Open`] connection is its byte stream, the raw
//! socket under it (asked by the kernel, without reading, whether the receiver closed it or sent
//! something unasked), and the bytes read from it and not yet used.

use super::{Failure, error_chain};
use crate::sink::{ClientCert, Webhook};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tower_service::Service;

/// Opens TCP or TLS connections to a sink's receiver, directly or through its proxy.
#[derive(Clone)]
pub struct Connector {
    /// TCP, and TLS for `https` URLs (hyper-rustls): direct connections, and plain requests
    /// to a proxy.
    pub(super) https: HttpsConnector<HttpConnector>,
    /// TCP alone: the leg to a proxy that a CONNECT tunnel runs through.
    pub(super) tcp: HttpConnector,
    /// TLS to a receiver inside a proxy's tunnel: the same trust and ALPN as `https`.
    pub(super) tunnel_tls: tokio_rustls::TlsConnector,
    /// The sink's bearer token (`oauth2`), shared by its workers.
    pub(super) tokens: Arc<super::oauth2::Tokens>,
}

/// A connector trusting the webpki roots and, if given, the certificates in `ca_file`, and
/// presenting `client`'s certificate to receivers that ask for one. An error names the key at
/// fault.
pub fn connector(
    ca_file: Option<&Path>,
    client: Option<&ClientCert>,
) -> Result<Connector, (&'static str, String)> {
    let tls = super::tls::client_config(ca_file, client)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let mut tunnel_tls = tls.clone();
    tunnel_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Connector {
        tokens: Arc::default(),
        tcp: http.clone(),
        tunnel_tls: tokio_rustls::TlsConnector::from(Arc::new(tunnel_tls)),
        https: hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    })
}

/// `check --connect`: opens a connection to the receiver (TCP, and the TLS handshake for
/// `https`), sends nothing, and closes it.
pub async fn probe(connector: &Connector, hook: &Webhook) -> Result<(), String> {
    let mut connector = connector.clone();
    let open = Open::connect(&mut connector, hook);
    match tokio::time::timeout(hook.timeout, open).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(error_chain(&*e)),
        Err(_) => Err(format!(
            "no connection within {}",
            humantime::format_duration(hook.timeout)
        )),
    }
}

/// A connection's byte stream: plain TCP, or TLS (rustls, through the connector's stream).
pub(super) type Io = Either<TcpStream, TokioIo<Stream>>;
pub(super) type Stream = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;

/// An open connection and what has been read from it and not yet used.
pub(super) struct Open {
    pub(super) io: Io,
    /// The TCP socket under `io`, looked at without reading (see [`Open::reusable`]).
    socket: RawFd,
    /// Bytes read; those before `at` are used.
    pub(super) read: Vec<u8>,
    pub(super) at: usize,
}

impl Open {
    /// Opens a connection to the hook's receiver: directly, to its proxy (an `http` URL), or
    /// through a tunnel its proxy opens (an `https` URL).
    pub(super) async fn connect(
        connector: &mut Connector,
        hook: &Webhook,
    ) -> Result<Open, Failure> {
        let to = match &hook.proxy {
            Some(proxy) if hook.url.scheme_str() == Some("https") => {
                return super::proxy::tunnel(connector, proxy, hook).await;
            }
            Some(proxy) => &proxy.uri,
            None => &hook.url,
        };
        let https = &mut connector.https;
        std::future::poll_fn(|cx| https.poll_ready(cx)).await?;
        let (io, socket) = match https.call(to.clone()).await? {
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
        Ok(Open::new(io, socket))
    }

    /// A connection on `io`, whose TCP socket is `socket`, nothing read yet.
    pub(super) fn new(io: Io, socket: RawFd) -> Open {
        Open {
            io,
            socket,
            read: Vec::with_capacity(1024),
            at: 0,
        }
    }

    /// What has been read and not yet used.
    pub(super) fn unread(&self) -> &[u8] {
        &self.read[self.at..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.at += n;
    }

    /// Whether the connection can take a request: the receiver has neither closed it nor sent
    /// anything unasked (a stale answer must never be taken for the next request's). Asks the
    /// kernel, without waiting and without reading; over TLS, records waiting (a session ticket)
    /// are handed to rustls, and anything they hold but protocol makes the connection unusable.
    pub(super) fn reusable(&mut self) -> bool {
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
}

/// What [`peek`] saw on a socket.
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
