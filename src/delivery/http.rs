//! The HTTP side of webhook sinks: one worker's connection and one attempt at a request.
//!
//! Each delivery worker owns one HTTP/1.1 connection (hyper's `client::conn::http1`) to its sink's
//! receiver, kept alive between requests and opened again when the receiver closes it or an
//! attempt fails; a request the connection could not take before sending anything goes out at once
//! on a new one. TLS is rustls (ring provider) trusting the webpki roots plus a sink's `ca_file`.
//! An attempt ends in one of three ways (SPEC §4): delivered (2xx), worth retrying (connection
//! errors, timeouts, 408, 429, 5xx except 501; with the receiver's `Retry-After`), or final (any
//! other status).

use super::retry::Attempt;
use crate::sink::Webhook;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower_service::Service;

/// Opens TCP or TLS connections to a sink's receiver.
pub type Connector = HttpsConnector<HttpConnector>;

/// Response bodies are read (to keep the connection) up to this size, and quoted in errors.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

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
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tls)
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

/// One worker's connection to a sink's receiver, opened when first needed. The worker drives it
/// itself while a request is out (no connection task to hand each request to and back).
pub struct Connection {
    connector: Connector,
    open: Option<Open>,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;
type Stream = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// An open HTTP/1.1 connection: where requests go in, and the connection itself, which only
/// moves while it is polled.
struct Open {
    sender: SendRequest<Full<Bytes>>,
    wire: http1::Connection<Stream, Full<Bytes>>,
}

/// What a request came to: the response's status, `Retry-After`, and its body (or why the body
/// could not be read).
type Answer = (StatusCode, Option<Duration>, Result<Vec<u8>, hyper::Error>);

impl Open {
    async fn connect(connector: &mut Connector, hook: &Webhook) -> Result<Open, Failure> {
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let stream = connector.call(hook.url.clone()).await?;
        let (sender, wire) = http1::handshake(stream).await?;
        Ok(Open { sender, wire })
    }

    /// Runs `work` while driving the connection; `true` with it if the connection ended.
    async fn drive<T>(
        wire: &mut http1::Connection<Stream, Full<Bytes>>,
        work: impl std::future::Future<Output = T>,
    ) -> (T, bool) {
        tokio::pin!(work);
        tokio::select! {
            biased;
            out = &mut work => (out, false),
            _ = wire => (work.await, true),
        }
    }

    /// Sends `req` and reads the answer. `Err(Ok(req))`: the connection could not take the
    /// request before sending any of it (the receiver closed it while idle), so it can go out on
    /// a new one.
    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> (Result<Answer, Result<Request<Full<Bytes>>, Failure>>, bool) {
        let Open { sender, wire } = self;
        let (ready, ended) = Open::drive(wire, sender.ready()).await;
        if ready.is_err() || ended {
            return (Err(Ok(req)), true);
        }
        let work = async {
            let resp = match sender.try_send_request(req).await {
                Ok(resp) => resp,
                Err(mut e) => {
                    return Err(match e.take_message() {
                        Some(req) => Ok(req),
                        None => Err(Failure::from(e.into_error())),
                    });
                }
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = read_body(resp.into_body()).await;
            Ok((status, retry_after, body))
        };
        Open::drive(wire, work).await
    }
}

impl Connection {
    pub fn new(connector: Connector) -> Connection {
        Connection {
            connector,
            open: None,
        }
    }

    /// POSTs `body` with `headers` to the sink's receiver, within the sink's `timeout`.
    pub async fn post(&mut self, hook: &Webhook, headers: HeaderMap, body: Bytes) -> Attempt {
        let shown = &hook.shown;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = hook.target.clone();
        *req.headers_mut() = headers;
        let outcome = tokio::time::timeout(hook.timeout, self.send(hook, req)).await;
        if !matches!(outcome, Ok(Ok((_, _, Ok(_))))) {
            // The connection's state is unknown: the next attempt opens a new one.
            self.open = None;
        }
        match outcome {
            // A 2xx cut short (fewer bytes than its Content-Length, a broken chunk) is not an
            // answer: the receiver may not have taken the event. Any other status stands as it is.
            Ok(Ok((status, _, Err(e)))) if status.is_success() => Attempt::Retry {
                reason: format!(
                    "POST {shown}: {status} but the response was cut short: {}",
                    error_chain(&e)
                ),
            },
            Ok(Ok((status, retry_after, Err(_)))) => classify(status, retry_after, b"", shown),
            Err(_) => Attempt::Retry {
                reason: format!(
                    "POST {shown}: no response within {}",
                    humantime::format_duration(hook.timeout)
                ),
            },
            Ok(Err(e)) => Attempt::Retry {
                reason: format!("POST {shown}: {}", error_chain(e.as_ref())),
            },
            Ok(Ok((status, retry_after, Ok(body)))) => classify(status, retry_after, &body, shown),
        }
    }

    /// Sends `req` on the open connection, or on a new one if there is none or the open one
    /// could not take it before sending anything (the receiver closed it while it was idle).
    async fn send(
        &mut self,
        hook: &Webhook,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Answer, Failure> {
        for fresh in [false, true] {
            let open = match self.open.take() {
                Some(open) if !fresh => open,
                // Boxed: connecting (TLS included) is the biggest state of this future, and
                // is rare; inline, every request would move it around.
                _ => Box::pin(Open::connect(&mut self.connector, hook)).await?,
            };
            let open = self.open.insert(open);
            let (result, ended) = open.exchange(req).await;
            if ended {
                self.open = None;
            }
            match result {
                Ok(answer) => return Ok(answer),
                Err(Ok(back)) if !fresh => {
                    self.open = None;
                    req = back;
                }
                Err(Ok(_)) => return Err("the new connection could not take the request".into()),
                Err(Err(e)) => return Err(e),
            }
        }
        Err("no connection could take the request".into())
    }
}

/// Reads a response body to its end (so the connection can be kept) or to its first
/// [`MAX_RESPONSE_BODY`] bytes, whichever comes first (the rest is not waited for; the connection
/// is then closed). An error if the body ends early.
async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let room = MAX_RESPONSE_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
            if room < data.len() {
                break;
            }
        }
    }
    Ok(kept)
}

fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    shown: &str,
) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let reason = format!(
        "POST {shown}: {status}{}{}",
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

    #[test]
    fn success_is_delivered_and_any_other_status_is_a_refusal_with_its_code() {
        let kind = |code: u16| match classify(StatusCode::from_u16(code).unwrap(), None, b"", "u") {
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
}
