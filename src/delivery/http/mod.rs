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
//! within the sink's `timeout`. With `compression: gzip` the body is compressed before it is
//! signed, into a buffer the connection keeps.
//!
//! The parts, where a reader looks for them: [`tls`] says what a connection trusts and presents;
//! [`oauth2`] fetches and keeps a sink's bearer token; [`connect`] opens a connection (DNS,
//! TCP, TLS) and
//! tells whether a kept one is still good; [`proxy`] opens a CONNECT tunnel through a proxy;
//! [`request`] sends one request on it and reads the
//! answer's body as its head frames it; [`response`] parses what the receiver sends (head,
//! length, chunks, trailers); this module is the transport: one attempt, within the timeout,
//! and what it came to.
//!
//! An attempt ends in one of three ways (SPEC §4): delivered (2xx), worth retrying (connection
//! errors, timeouts, a 2xx cut short, 408, 429, 5xx except 501; with the receiver's
//! `Retry-After`), or final (any other status).

mod connect;
pub mod gzip;
pub mod oauth2;
mod proxy;
mod request;
mod response;

#[cfg(test)]
mod tests;
mod tls;

pub use connect::{Connector, connector, probe};
pub use tls::client_config;

use super::retry::Attempt;
use crate::config::Compression;
use crate::sink::Webhook;
use connect::Open;
use http::StatusCode;
use request::Answer;
use std::time::{Duration, SystemTime};

/// How much of a refusal's body its reason quotes, in characters.
const QUOTED_CHARS: usize = 200;

/// One worker's connection to a sink's receiver, opened when first needed and kept alive between
/// requests while the receiver keeps it.
pub struct Connection {
    connector: Connector,
    open: Option<Box<Open>>,
    /// The head of the request being sent (kept for its capacity).
    head: Vec<u8>,
    /// Gzips bodies (`compression: gzip`), made when first needed.
    gz: Option<Box<gzip::Gzip>>,
}

/// Why an exchange failed before the receiver answered.
type Failure = Box<dyn std::error::Error + Send + Sync>;

impl Connection {
    pub fn new(connector: Connector) -> Connection {
        Connection {
            connector,
            open: None,
            head: Vec::new(),
            gz: None,
        }
    }

    /// POSTs `body` to the sink's receiver with the headers of delivery `key` (signed at
    /// `unix_secs`), within the sink's `timeout`; with `compression: gzip`, the body is
    /// compressed first and the signature is over the compressed bytes.
    /// With `oauth2`, the request carries the sink's bearer token (see [`oauth2`]).
    pub async fn post(
        &mut self,
        hook: &Webhook,
        key: &str,
        unix_secs: u64,
        body: &[u8],
    ) -> Attempt {
        match hook.oauth2.as_deref() {
            Some(grant) => {
                self.post_authorized(hook, grant, key, unix_secs, body)
                    .await
            }
            None => self.post_body(hook, key, unix_secs, body, None).await,
        }
    }

    /// POSTs `body`, compressed if the sink says so, with `bearer`'s `Authorization`.
    async fn post_body(
        &mut self,
        hook: &Webhook,
        key: &str,
        unix_secs: u64,
        body: &[u8],
        bearer: Option<&str>,
    ) -> Attempt {
        if hook.compression == Compression::None {
            return self.post_as_is(hook, key, unix_secs, body, bearer).await;
        }
        let mut gz = self.gz.take().unwrap_or_default();
        let attempt = match gz.compress(body) {
            Ok(packed) => self.post_as_is(hook, key, unix_secs, packed, bearer).await,
            Err(e) => Attempt::Retry {
                reason: format!("POST {}: cannot gzip the body: {e}", hook.shown),
            },
        };
        gz.trim();
        self.gz = Some(gz);
        attempt
    }

    /// POSTs `body` as it is.
    async fn post_as_is(
        &mut self,
        hook: &Webhook,
        key: &str,
        unix_secs: u64,
        body: &[u8],
        bearer: Option<&str>,
    ) -> Attempt {
        let shown = &hook.shown;
        hook.write_head(&mut self.head, body, key, unix_secs, bearer);
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

    /// POSTs `body` to `hook` and hands back the answer's status and body (its first
    /// 64 KiB), within `hook`'s timeout: for requests whose answer is data (a token).
    pub(super) async fn request(
        &mut self,
        hook: &Webhook,
        body: &[u8],
    ) -> Result<(StatusCode, Vec<u8>), String> {
        hook.write_head(&mut self.head, body, "token", 0, None);
        let send = std::pin::pin!(self.send(hook, body));
        match tokio::time::timeout(hook.timeout, send).await {
            Ok(Ok(answer)) => answer.body.map(|body| (answer.status, body)),
            Ok(Err(e)) => Err(error_chain(e.as_ref())),
            Err(_) => Err(format!(
                "no response within {}",
                humantime::format_duration(hook.timeout)
            )),
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
        return Attempt::Delivered {
            status: Some(status.as_u16()),
        };
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
