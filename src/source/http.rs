//! The `http` source: receives webhooks (Unleash's, LaunchDarkly's, AB Tasty's, Flipt's own) and
//! puts their events in the source's journal before answering.
//!
//! `POST path` with one JSON event, a JSON array of events, or NDJSON. The answer (SPEC §4):
//! - 200 `{"accepted": N}` only once every event of the request is durable in the journal, so a
//!   sender that got 200 can forget them; values that are not events are refused here, never
//!   journaled: recorded in `rejected/` as one record for the request, and counted in the answer
//!   (`"refused": M`), which is 400 if the request holds no event at all;
//! - 401 on a missing or wrong token (`Authorization: Bearer TOKEN`, the bare token, or
//!   `?token=TOKEN` for senders that can only be given a URL) or signature (`verify`: hex
//!   HMAC-SHA256 of the raw body in `X-Flipt-Webhook-Signature` or `X-LD-Signature`, or
//!   Standard Webhooks: see [`super::verify`]); both are compared in constant time;
//! - 400 on a body that is not JSON (recorded in `rejected/`), 413 over `max_body_bytes`,
//!   503 with `Retry-After` when the journal is full or cannot be written, 405 for other methods,
//!   404 for other paths.
//!
//! Connections are served by [`crate::listen`] (head timeout, connection cap, half-close,
//! HTTP/2 refusal). At most `max_connections` requests are served at once: a request takes its
//! slot once its token is checked (waiting up to 30 s for one, then 503), so neither an idle
//! connection nor a request without the token holds one; a request gets 30 s for its body
//! (408). Request bodies and query strings are never logged. The listener is bound once by the
//! daemon and kept across reloads.

use super::Rejected;
use super::coding::{Codings, DecodeError};
use super::rejected::Run;
use super::verify::Verifier;
use crate::event::{Format, Rejection};
use crate::journal::{AppendError, Journal};
use crate::listen::Answer;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use ring::hmac;
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a request may wait for a slot, and then take to send its body.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A bound HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    /// The configured address (what a reload compares).
    pub addr: String,
    listener: TcpListener,
}

impl HttpListener {
    pub fn bind(addr: &str) -> io::Result<HttpListener> {
        let at: SocketAddr = addr.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr:?} is not an address"),
            )
        })?;
        let std = std::net::TcpListener::bind(at)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        std.set_nonblocking(true)?;
        Ok(HttpListener {
            addr: addr.to_string(),
            listener: TcpListener::from_std(std)?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The token a request must carry, kept as an HMAC under a key made at start-up so that a
/// presented token is compared in constant time (`hmac::verify`).
pub struct Token {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl Token {
    pub fn new(token: &str) -> Token {
        // A fresh key from the system's random source; only this process ever holds it.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            // Without a random source the token keys itself: the compare stays constant-time.
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes()));
        let tag = hmac::sign(&key, token.as_bytes());
        Token { key, tag }
    }

    fn matches(&self, presented: &str) -> bool {
        hmac::verify(&self.key, presented.as_bytes(), self.tag.as_ref()).is_ok()
    }
}

pub struct HttpSource {
    pub name: Arc<str>,
    pub listener: Arc<HttpListener>,
    pub journal: Journal,
    /// The path requests are taken on.
    pub path: String,
    pub token: Option<Token>,
    pub verifier: Option<Verifier>,
    /// HTTPS (`tls`), read when the source was made.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_body: usize,
    /// Longest event taken (`max_line_bytes`); a longer one is answered 413.
    pub max_line: usize,
    /// The source's format: a value it cannot read as an event is refused at the door.
    pub format: Format,
    /// How long a connection may take to finish once the source stops (`shutdown_grace`).
    pub grace: std::time::Duration,
    pub max_connections: usize,
    pub rejected: Rejected,
    pub stop: CancellationToken,
}

impl HttpSource {
    pub async fn run(self) -> io::Result<()> {
        let me = Arc::new(self);
        let slots = Arc::new(Semaphore::new(me.max_connections));
        tracing::info!(source = %me.name, address = %me.listener.addr, path = %me.path, "listening for webhooks");
        let loopback = me.listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        if me.token.is_none() && me.verifier.is_none() && !loopback {
            tracing::warn!(source = %me.name, address = %me.listener.addr, "this webhook source takes requests from anyone who can reach it: set auth_token or verify");
        }
        let service = {
            let me = me.clone();
            service_fn(move |req| {
                let (me, slots) = (me.clone(), slots.clone());
                async move { Ok::<_, Infallible>(me.handle(req, &slots).await) }
            })
        };
        let limits = crate::listen::Limits {
            connections: me.max_connections.max(crate::listen::CONNECTIONS),
            grace: me.grace,
            // A request being taken is never cut for a new connection.
            cut_busy: false,
        };
        let (listener, name) = (&me.listener.listener, me.name.clone());
        let tls = me.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        crate::listen::serve(listener, name, (limits, tls), service, me.stop.clone()).await;
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>, slots: &Semaphore) -> Answer {
        let answer = self.answer(req, slots).await;
        tracing::debug!(source = %self.name, status = answer.status().as_u16(), "webhook answered");
        answer
    }

    async fn answer(&self, req: Request<Incoming>, slots: &Semaphore) -> Answer {
        if req.uri().path() != self.path {
            return reply(StatusCode::NOT_FOUND, "no such path");
        }
        if req.method() != Method::POST {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "only POST");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            return r;
        }
        if let Some(token) = &self.token
            && !presented_tokens(&req).iter().any(|t| token.matches(t))
        {
            return reply(StatusCode::UNAUTHORIZED, "missing or wrong token");
        }
        // A slot per request, taken once the token is checked: a connection that sent no request,
        // or a request without the token, holds none.
        let Ok(Ok(_slot)) = tokio::time::timeout(READ_TIMEOUT, slots.acquire()).await else {
            return busy();
        };
        let codings = match Codings::of(req.headers()) {
            Ok(codings) => codings,
            Err(name) => return unsupported(&name),
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over max_body_bytes");
        }
        let headers = self.verifier.as_ref().map(|_| req.headers().clone());
        let read = Limited::new(req.into_body(), self.max_body).collect();
        let body = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return reply(StatusCode::PAYLOAD_TOO_LARGE, "body over max_body_bytes");
            }
            Ok(Err(_)) => return reply(StatusCode::BAD_REQUEST, "the body could not be read"),
        };
        if let (Some(v), Some(headers)) = (&self.verifier, headers)
            && !v.accepts(&headers, &body, crate::sink::unix_now())
        {
            return reply(StatusCode::UNAUTHORIZED, "missing or wrong signature");
        }
        // Signatures are over the body as sent; the events are in the body as decoded.
        let body = match self.decoded(&codings, body).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        self.take(&body).await
    }

    /// Puts a body's events in the journal, and records its values that are not events (one
    /// record for all): 200 with how many were accepted (and refused), 400 if none is an event.
    async fn take(&self, body: &[u8]) -> Answer {
        let mut events = match Events::of(body, self.max_line, self.format) {
            Ok(events) => events,
            Err(BodyError::TooLong(len)) => {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("an event of {len} bytes is over max_line_bytes"),
                );
            }
            Err(BodyError::NotJson(why)) => {
                return self
                    .refuse_body(body, Rejection::NotJson(why), "the body is not JSON")
                    .await;
            }
        };
        // One append: the request's events are taken whole or not at all.
        if events.count > 0
            && let Err(e) = self
                .journal
                .try_append(std::mem::take(&mut events.lines))
                .await
        {
            if !matches!(e, AppendError::Full) {
                tracing::error!(source = %self.name, error = %e, "cannot take a webhook");
            }
            return busy();
        }
        let accepted = events.count;
        let Some(refused) = events.refused.take() else {
            return reply(StatusCode::OK, &format!("{{\"accepted\":{accepted}}}"));
        };
        let (n, first) = (refused.count(), refused.detail().to_string());
        if let Some(stopping) = self.refuse(refused).await {
            return stopping;
        }
        let text = match accepted {
            0 => serde_json::json!({
                "error": format!("no event in the request: {n} values refused; the first: {first}"),
                "accepted": 0,
                "refused": n,
            }),
            _ => serde_json::json!({"accepted": accepted, "refused": n}),
        };
        let status = match accepted {
            0 => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        reply(status, &text.to_string())
    }

    /// Records what a request held that is not an event, as one record; the answer to give
    /// instead if the source stops meanwhile.
    async fn refuse(&self, run: Run) -> Option<Answer> {
        let path = format!("{} (POST {})", self.listener.addr, self.path);
        match self.rejected.record(&path, run, &self.stop).await {
            Ok(()) => None,
            Err(_) => Some(reply(StatusCode::SERVICE_UNAVAILABLE, "stopping")),
        }
    }

    /// The body with its content codings undone (off the async threads), or the answer: 413 when
    /// it decodes to more than `max_body_bytes`, 400 (recorded as rejected) when it does not
    /// decode.
    async fn decoded(&self, codings: &Codings, body: Bytes) -> Result<Bytes, Answer> {
        if codings.is_identity() {
            return Ok(body);
        }
        let (max, sent) = (self.max_body, body.clone());
        let codings = Codings::clone(codings);
        let decoded = tokio::task::spawn_blocking(move || codings.decode(body, max)).await;
        match decoded {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(DecodeError::TooLarge)) => Err(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the decoded body is over max_body_bytes",
            )),
            Ok(Err(DecodeError::Corrupt(why))) => {
                let answer = why.clone();
                Err(self
                    .refuse_body(&sent, Rejection::NotJson(why), &answer)
                    .await)
            }
            Err(_) => Err(reply(StatusCode::SERVICE_UNAVAILABLE, "stopping")),
        }
    }

    /// Records a body that cannot be read as events in `rejected/` (its first 64 KiB, as sent) and
    /// answers 400 with `answer`; 503 if the source stops first.
    async fn refuse_body(&self, body: &[u8], why: Rejection, answer: &str) -> Answer {
        let run = Run::new((0, body.len() as u64), &why, body);
        match self.refuse(run).await {
            Some(stopping) => stopping,
            None => reply(StatusCode::BAD_REQUEST, answer),
        }
    }
}

/// 415 naming the content coding that is not taken.
fn unsupported(name: &str) -> Answer {
    let text =
        format!("Content-Encoding {name:?} is not supported: send gzip, deflate or identity");
    reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, &text)
}

/// 503 with `Retry-After: 1`: the journal is full or cannot be written, or every slot is taken.
fn busy() -> Answer {
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

fn reply(status: StatusCode, text: &str) -> Answer {
    let body = if text.starts_with('{') {
        text.to_string()
    } else {
        format!("{{\"error\":{}}}", serde_json::Value::from(text))
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The tokens a request presents: the `Authorization` header (after `Bearer `, or bare) and the
/// `token` query parameter.
fn presented_tokens(req: &Request<Incoming>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let bare = v
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map_or(v, |_| v[7..].trim());
        out.push(bare.to_string());
    }
    if let Some(query) = req.uri().query() {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "token" {
                out.push(v.into_owned());
            }
        }
    }
    out
}

/// Why a body cannot be taken.
#[derive(Debug)]
pub enum BodyError {
    NotJson(String),
    /// An event longer than `max_line_bytes` (its length).
    TooLong(usize),
}

/// The events of a body as journal lines: a JSON array's elements, one JSON value, or NDJSON,
/// each on one line, written into one buffer as they are found (no allocation per event). Line
/// breaks inside an event (pretty-printed JSON) can only be whitespace between tokens, so they
/// are written as spaces; every other byte is kept. A value the source's format cannot read as
/// an event (not an object, or of no shape the format knows) is refused here: it never reaches
/// the journal, and all of a body's refused values are one [`Run`] (offsets in the body).
#[derive(Debug)]
pub struct Events {
    /// The lines, each ending in `\n`.
    pub lines: Vec<u8>,
    pub count: usize,
    /// The values that are not events, if any.
    pub refused: Option<Run>,
    /// What the values are read as.
    format: Format,
    /// Where the body starts in memory: offsets of refused values are measured from it.
    base: usize,
    /// The length of an event over the limit, which stopped the reading.
    too_long: Option<usize>,
}

impl Events {
    pub fn of(body: &[u8], max_line: usize, format: Format) -> Result<Events, BodyError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| BodyError::NotJson("the body is not UTF-8".into()))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(BodyError::NotJson("the body is empty".into()));
        }
        let mut events = Events {
            lines: Vec::with_capacity(body.len() + 1),
            count: 0,
            refused: None,
            format,
            base: body.as_ptr() as usize,
            too_long: None,
        };
        if trimmed.starts_with('[') {
            let mut de = serde_json::Deserializer::from_str(trimmed);
            serde::Deserializer::deserialize_seq(&mut de, Elements(&mut events, max_line))
                .and_then(|()| de.end())
                .map_err(|e| match events.too_long {
                    Some(len) => BodyError::TooLong(len),
                    None => BodyError::NotJson(format!("a JSON array that does not parse: {e}")),
                })?;
            return Ok(events);
        }
        if serde_json::from_str::<&RawValue>(trimmed).is_ok() {
            events.push(trimmed, max_line)?;
            return Ok(events);
        }
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            serde_json::from_str::<serde::de::IgnoredAny>(line)
                .map_err(|e| BodyError::NotJson(format!("line {} is not JSON: {e}", i + 1)))?;
            events.push(line, max_line)?;
        }
        Ok(events)
    }

    fn push(&mut self, raw: &str, max_line: usize) -> Result<(), BodyError> {
        if raw.len() > max_line {
            self.too_long = Some(raw.len());
            return Err(BodyError::TooLong(raw.len()));
        }
        match crate::event::parse_line(self.format, raw) {
            Ok(_) | Err(Rejection::Unmapped(_)) => {}
            Err(why) => {
                self.refuse(raw, &why);
                return Ok(());
            }
        }
        self.lines.extend(
            raw.bytes()
                .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        self.lines.push(b'\n');
        self.count += 1;
        Ok(())
    }
}

impl Events {
    /// Adds `raw`, a value of the body, to the refused ones.
    fn refuse(&mut self, raw: &str, why: &Rejection) {
        let start = (raw.as_ptr() as usize).saturating_sub(self.base) as u64;
        let range = (start, start + raw.len() as u64);
        match &mut self.refused {
            Some(run) => run.add(range, why),
            None => self.refused = Some(Run::new(range, why, raw.as_bytes())),
        }
    }
}

/// Visits a JSON array, writing each element's text as a line.
struct Elements<'e>(&'e mut Events, usize);

impl<'de> serde::de::Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            if self.0.push(raw.get(), self.1).is_err() {
                return Err(serde::de::Error::custom("an event is over max_line_bytes"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Flipt event with key `k`, its first separator `sep`.
    fn ev(k: &str, sep: &str) -> String {
        format!(
            r#"{{"version":"0.2",{sep}"type":"flag","action":"created","metadata":{{}},"payload":{{"key":"{k}"}},"timestamp":"t"}}"#
        )
    }

    fn lines(b: &str) -> Result<(String, usize), BodyError> {
        Events::of(b.as_bytes(), 400, Format::Auto)
            .map(|e| (String::from_utf8(e.lines).unwrap(), e.count))
    }

    #[test]
    fn bodies_become_lines() {
        let (a, b) = (ev("a", ""), ev("b", ""));
        assert_eq!(
            lines(&format!("{}\n", ev("a", "\n "))).unwrap(),
            (format!("{}\n", ev("a", "  ")), 1)
        );
        assert_eq!(
            lines(&format!("[{a}, {b}]")).unwrap(),
            (format!("{a}\n{b}\n"), 2)
        );
        assert_eq!(
            lines(&format!("{a}\n{b}\n")).unwrap(),
            (format!("{a}\n{b}\n"), 2)
        );
        assert_eq!(lines("[]").unwrap(), (String::new(), 0));
        assert!(matches!(lines("not json"), Err(BodyError::NotJson(_))));
        assert!(matches!(
            lines(&format!("{a}\nnope\n")),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(lines("[1,"), Err(BodyError::NotJson(_))));
        assert!(matches!(lines(""), Err(BodyError::NotJson(_))));
        let long = format!("[1, \"{}\"]", "x".repeat(500));
        assert!(matches!(lines(&long), Err(BodyError::TooLong(502))));
    }

    #[test]
    fn values_that_are_not_events_are_refused_at_the_door_as_one_run() {
        let (a, b) = (ev("a", ""), ev("b", ""));
        let body = format!("[1, {a}, {{\"x\":2}}, [3], {b}, \"s\"]");
        let events = Events::of(body.as_bytes(), 400, Format::Auto).unwrap();
        assert_eq!(
            String::from_utf8(events.lines).unwrap(),
            format!("{a}\n{b}\n")
        );
        let refused = events.refused.unwrap();
        assert_eq!(refused.count(), 4);
        assert!(
            refused.detail().contains("not an audit event"),
            "{}",
            refused.detail()
        );
        // NDJSON of no event at all: nothing to journal, every line refused.
        let body = "1\n{}\n\"x\"\n".repeat(1000);
        let events = Events::of(body.as_bytes(), 400, Format::Auto).unwrap();
        assert_eq!((events.count, events.lines.len()), (0, 0));
        assert_eq!(events.refused.unwrap().count(), 3000);
        // An event of a kind no mapping covers is taken (counted as unmapped when read).
        let favourite = r#"{"id":1,"type":"feature-favorited","createdAt":"2024-01-01T00:00:00Z","createdBy":"a"}"#;
        let events = Events::of(favourite.as_bytes(), 400, Format::Unleash).unwrap();
        assert_eq!((events.count, events.refused.is_none()), (1, true));
    }

    #[test]
    fn tokens_compare_by_value() {
        let t = Token::new("s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3creT"));
        assert!(!t.matches(""));
    }
}
