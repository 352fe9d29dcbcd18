//! The NATS JetStream transport: one client per sink, shared by its delivery workers (NATS
//! multiplexes), connected on first use and reconnecting by itself. A publish counts as
//! delivered only once JetStream acknowledges it; its outcome goes to the one retry policy
//! ([`super::retry::Tries`]) like a webhook's answer.
//!
//! Every message carries one event and `Nats-Msg-Id` = that event's idempotency key, so a
//! stream's duplicate window drops what is sent again after a crash or a lost ack. Several events
//! in one message could not be: after a restart they are grouped otherwise, and a group's id is
//! new. `batch.max_events` is how many messages a worker publishes before it waits for their
//! acks ([`deliver`]).

use super::Outcomes;
use super::retry::{Attempt, Patience, Tries};
use crate::config::Scrubber;
use crate::record::Record;
use crate::sink::Sink;
use crate::sink::nats::{Auth, Nats};
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{Client, ConnectOptions, ServerAddr};
use bytes::Bytes;
use futures_util::future::join_all;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Publishes the client may hold (at least; twice the sink's `concurrency` if more). While it is
/// disconnected none are queued (each attempt fails at once and waits out the backoff), so memory
/// stays with the sources' budget.
const QUEUED: usize = 64;

/// Failed reconnections after which a client gives up; the next publish makes a new one. So a
/// client whose sink a reload dropped stops trying within about a minute.
const MAX_RECONNECTS: usize = 60;

/// How often, and how long apart, a publish answered "no responders" is tried again at once: a
/// clustered stream has none while it elects a leader.
const NO_RESPONDERS_TRIES: u32 = 3;
const NO_RESPONDERS_WAIT: Duration = Duration::from_millis(250);

/// JetStream error codes that sending again cannot change: the message exceeds the stream's
/// maximum message size (10054).
const FINAL_CODES: &[u64] = &[10054];

/// Longest wait between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// A sink's connection to NATS, made on first use.
pub struct Publisher {
    servers: Vec<ServerAddr>,
    /// The servers, masked.
    shown: String,
    auth: Auth,
    /// Trusted roots (webpki plus `ca_file`), for TLS.
    tls: rustls::ClientConfig,
    tls_required: bool,
    timeout: Duration,
    /// The sink's name, for logs and the connection's name.
    sink: String,
    /// Publishes in flight at most (the sink's `concurrency`).
    concurrency: usize,
    connected: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// The last connection problem the client reported, for the reason of a failed attempt.
    trouble: Arc<Mutex<Option<String>>>,
    /// The sink's scrubber, for what the server says (its errors may quote credentials).
    scrubber: Arc<Scrubber>,
}

/// One client and its JetStream context.
struct Conn {
    client: Client,
    context: jetstream::Context,
    flags: Arc<Flags>,
}

/// What a client's events say about it.
struct Flags {
    /// `true` once connected (for a first publish to wait for).
    up: tokio::sync::watch::Sender<bool>,
    /// The client gave up reconnecting: a new one is needed.
    closed: std::sync::atomic::AtomicBool,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            up: tokio::sync::watch::channel(false).0,
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Publisher {
    /// Checks what can be checked before connecting (the servers' addresses, the credentials,
    /// the CA file); an error names the config key at fault.
    pub fn new(
        sink: &str,
        concurrency: usize,
        bus: &Nats,
        scrubber: Arc<Scrubber>,
    ) -> Result<Publisher, (&'static str, String)> {
        let servers = bus
            .servers
            .iter()
            .map(|u| {
                u.target()
                    .parse::<ServerAddr>()
                    .map_err(|_| ("url", format!("{u} is not a NATS server address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = super::http::client_config(bus.ca_file.as_deref(), bus.client_cert.as_ref())?;
        let publisher = Publisher {
            servers,
            shown: bus.shown.clone(),
            auth: bus.auth.clone(),
            tls,
            // A CA file or a certificate given is meant to be used: never fall back to plain
            // text.
            tls_required: bus.tls_required || bus.ca_file.is_some() || bus.client_cert.is_some(),
            timeout: bus.timeout,
            sink: sink.to_string(),
            concurrency,
            connected: tokio::sync::Mutex::new(None),
            trouble: Arc::new(Mutex::new(None)),
            scrubber,
        };
        publisher.options(None).map_err(|e| ("creds_file", e))?;
        Ok(publisher)
    }

    /// The connection options. With `events` (the daemon), connect in the background (a server
    /// that is down at start is waited for) and report to them; without (`check --connect`),
    /// fail at once.
    fn options(&self, events: Option<Arc<Flags>>) -> Result<ConnectOptions, String> {
        let mut o = ConnectOptions::new()
            .name(format!("flagtail {}", self.sink))
            .connection_timeout(self.timeout)
            .client_capacity(QUEUED.max(self.concurrency.saturating_mul(2)))
            // Back soon after the server is: a delivery waiting out its backoff finds the
            // connection up (async-nats waits up to 4 s between attempts by default).
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 * 2u64.pow(attempts.min(5) as u32)).min(RECONNECT_MAX)
            })
            .tls_client_config(self.tls.clone())
            .require_tls(self.tls_required);
        if let Some(conn) = events {
            // The flags live as long as the client's callback: a `Conn` dropped with its sink
            // leaves them to the client until it gives up.
            let (sink, trouble) = (self.sink.clone(), self.trouble.clone());
            let scrubber = self.scrubber.clone();
            o = o
                .retry_on_initial_connect()
                .max_reconnects(MAX_RECONNECTS)
                .event_callback(move |event| {
                    let (sink, trouble, flags) = (sink.clone(), trouble.clone(), conn.clone());
                    let text = scrubber.scrub(&event.to_string());
                    async move { note_event(&sink, &trouble, &flags, event, text) }
                });
        }
        Ok(match &self.auth {
            Auth::None => o,
            Auth::Token(t) => o.token(t.expose().to_string()),
            Auth::UserPassword(u, p) => o.user_and_password(u.clone(), p.expose().to_string()),
            Auth::NkeySeed(seed) => o.nkey(seed.expose().to_string()),
            Auth::Creds(text) => o
                .credentials(text.expose())
                .map_err(|_| "not a NATS credentials file (user JWT and NKey seed)".to_string())?,
        })
    }

    /// The client and its JetStream context, connecting on first use or after the last client
    /// gave up (in the background: this does not wait for the server).
    async fn connection(&self) -> Result<Arc<Conn>, String> {
        let mut held = self.connected.lock().await;
        if let Some(conn) = &*held
            && !conn.flags.closed.load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(conn.clone());
        }
        // The events callback needs the connection's flags before the client exists: make the
        // flags first, the client with them, and put them together.
        let flags = Arc::new(Flags::default());
        let client = self
            .options(Some(flags.clone()))?
            .connect(self.servers.clone())
            .await
            .map_err(|e| format!("NATS {}: {e}", self.shown))?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(self.timeout);
        let conn = Arc::new(Conn {
            client,
            context,
            flags,
        });
        *held = Some(conn.clone());
        Ok(conn)
    }

    /// The last connection problem, as a clause for a reason.
    fn trouble(&self) -> String {
        match &*self.trouble.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(t) => format!("; last connection problem: {t}"),
            None => String::new(),
        }
    }

    /// The client, once connected: waits up to `timeout` for a client that is still making its
    /// first connection; the reason to try again later if there is none.
    async fn ready(&self) -> Result<Arc<Conn>, String> {
        let conn = self.connection().await?;
        match conn.client.connection_state() {
            State::Connected => Ok(conn),
            // Not connected yet (just started): worth waiting for, up to `timeout`.
            State::Pending => {
                let mut up = conn.flags.up.subscribe();
                match tokio::time::timeout(self.timeout, up.wait_for(|up| *up)).await {
                    Ok(Ok(_)) => Ok(conn),
                    _ => Err(format!(
                        "NATS {}: not connected yet{}",
                        self.shown,
                        self.trouble()
                    )),
                }
            }
            // Lost: nothing is queued in the client meanwhile.
            State::Disconnected => Err(format!(
                "NATS {}: not connected{}",
                self.shown,
                self.trouble()
            )),
        }
    }

    /// Publishes `messages` one after the other without waiting, then waits for all their acks
    /// (a pipeline): one attempt each, in their order. Those answered "no responders" are asked
    /// again, twice at most, [`NO_RESPONDERS_WAIT`] apart.
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Vec<Attempt> {
        let mut answers: Vec<Option<Acked>> = messages.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..messages.len()).collect();
        for round in 0..NO_RESPONDERS_TRIES {
            if round > 0 {
                tokio::time::sleep(NO_RESPONDERS_WAIT).await;
            }
            let conn = match self.ready().await {
                Ok(conn) => conn,
                Err(reason) => {
                    for &i in &todo {
                        answers[i] = Some(Err(Unacked::NotConnected(reason.clone())));
                    }
                    break;
                }
            };
            let acked = pipeline(&conn, todo.iter().map(|&i| &messages[i])).await;
            let last = round + 1 == NO_RESPONDERS_TRIES;
            todo = std::iter::zip(std::mem::take(&mut todo), acked)
                .filter_map(|(i, answer)| match answer {
                    Err(e) if e.kind() == PublishErrorKind::StreamNotFound && !last => Some(i),
                    answer => {
                        answers[i] = Some(answer.map_err(Unacked::Refused));
                        None
                    }
                })
                .collect();
            if todo.is_empty() {
                break;
            }
        }
        self.attempts(messages, answers)
    }

    /// Each message's answer as an attempt; duplicates the stream dropped are logged once.
    fn attempts(&self, messages: &[Outgoing], answers: Vec<Option<Acked>>) -> Vec<Attempt> {
        let mut duplicates = 0;
        let attempts = std::iter::zip(messages, answers)
            .map(|(m, answer)| match answer {
                Some(Ok(ack)) => {
                    duplicates += usize::from(ack.duplicate);
                    Attempt::Delivered { status: None }
                }
                Some(Err(Unacked::Refused(e))) => self.classify(&m.subject, &e),
                Some(Err(Unacked::NotConnected(reason))) => Attempt::Retry { reason },
                None => Attempt::Retry {
                    reason: format!("NATS {}: not published", self.shown),
                },
            })
            .collect();
        if duplicates > 0 {
            tracing::info!(sink = %self.sink, duplicates, of = messages.len(), "JetStream already had these messages (same Nats-Msg-Id within the stream's duplicate window): counted as delivered");
        }
        attempts
    }

    fn classify(&self, subject: &str, e: &jetstream::context::PublishError) -> Attempt {
        let at = &self.shown;
        match e.kind() {
            // Nothing listens on the subject: no stream takes it (or none has a leader yet).
            // Final now, and replayed by itself once the sink delivers again.
            PublishErrorKind::StreamNotFound => Attempt::Final {
                reason: format!(
                    "NATS {at}: no JetStream stream takes subject {subject} (no responders); create a stream for it, then `flagtail replay`"
                ),
                retryable: true,
            },
            PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence => Attempt::Final {
                reason: format!("NATS {at}: {subject}: {e}"),
                retryable: false,
            },
            PublishErrorKind::TimedOut => Attempt::Retry {
                reason: format!(
                    "NATS {at}: no JetStream ack for {subject} within {}{}",
                    humantime::format_duration(self.timeout),
                    self.trouble()
                ),
            },
            _ => {
                // JetStream's refusals: a message larger than the stream takes will not change by
                // sending again; anything else (an account or stream full, too many requests)
                // may, so it is retried.
                let api =
                    std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
                match api {
                    Some(api) if FINAL_CODES.contains(&api.error_code().0) => Attempt::Final {
                        reason: format!("NATS {at}: {subject}: JetStream refused: {api}"),
                        retryable: false,
                    },
                    _ => Attempt::Retry {
                        reason: format!("NATS {at}: {subject}: {e}"),
                    },
                }
            }
        }
    }

    /// `check --connect`: connects (failing at once if it cannot) and names the stream that
    /// takes each subject.
    pub async fn check(&self, subjects: &[String]) -> Result<Vec<String>, String> {
        let servers = u32::try_from(self.servers.len().max(1)).unwrap_or(u32::MAX);
        let limit = self.timeout.saturating_mul(servers);
        let client = tokio::time::timeout(limit, self.options(None)?.connect(self.servers.clone()))
            .await
            .map_err(|_| format!("no connection within {}", humantime::format_duration(limit)))?
            .map_err(|e| e.to_string())?;
        let mut context = jetstream::new(client);
        context.set_timeout(self.timeout);
        let mut found = Vec::new();
        for subject in subjects {
            match context.stream_by_subject(subject.clone()).await {
                Ok(stream) => found.push(format!("subject {subject} → stream {stream}")),
                Err(e) => {
                    return Err(format!(
                        "subject {subject}: no JetStream stream takes it ({e})"
                    ));
                }
            }
        }
        Ok(found)
    }
}

/// One message ready to go: where, its headers (signed for this attempt) and its body.
pub struct Outgoing {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub body: Bytes,
}

/// A publish's answer: JetStream's ack, or why there is none.
type Acked = Result<jetstream::publish::PublishAck, Unacked>;

/// Why a publish has no ack.
enum Unacked {
    /// The client is not connected: nothing was sent.
    NotConnected(String),
    /// Sent, and refused, timed out or lost.
    Refused(jetstream::context::PublishError),
}

/// Sends `messages` in order, then waits for their acks together (each within the context's
/// timeout, counted from when the waiting starts, so they run out together).
async fn pipeline<'m>(
    conn: &Conn,
    messages: impl Iterator<Item = &'m Outgoing>,
) -> Vec<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>> {
    let mut sent = Vec::new();
    for m in messages {
        let publish =
            conn.context
                .publish_with_headers(m.subject.clone(), m.headers.clone(), m.body.clone());
        sent.push(publish.await);
    }
    join_all(sent.into_iter().map(|sent| async move { sent?.await })).await
}

/// One event of a group, ready to publish.
struct Message {
    /// Its record's place in the group.
    at: usize,
    subject: String,
    /// Its record's idempotency key: the same whatever group it travels in.
    key: String,
    body: Bytes,
}

/// Delivers `records` as one message each, whatever `batch.max_events` is: each carries its own
/// record's `Nats-Msg-Id`, so what is sent again after a crash is dropped by the stream however
/// the records are grouped then. A group is published in a pipeline and its acks awaited
/// together; messages to retry are sent again together after their backoff.
pub async fn deliver(
    sink: &Sink,
    bus: &Nats,
    publisher: &Publisher,
    records: &[Arc<Record>],
    stop: &CancellationToken,
    patience: Patience<'_>,
) -> Outcomes {
    let (ready, mut outcomes) = prepare(sink, bus, records).await;
    let mut pending: Vec<(&Message, Tries)> = ready
        .iter()
        .map(|m| {
            (
                m,
                Tries::new(sink, &m.key, patience, &records[m.at..m.at + 1]),
            )
        })
        .collect();
    while !pending.is_empty() {
        let outgoing = outgoing(sink, bus, records, &pending, stop).await;
        let mut attempts = publisher.publish_all(&outgoing).await.into_iter();
        // Messages the rate limit or `stop` kept back were not sent: abandoned.
        let settled = join_all(pending.iter_mut().map(|(_, tries)| {
            let attempt = attempts.next();
            async move {
                match attempt {
                    Some(attempt) => tries.settle(attempt, stop).await,
                    None => Some(super::Result::Abandoned),
                }
            }
        }))
        .await;
        pending = std::iter::zip(pending, settled)
            .filter_map(|((m, tries), done)| match done {
                Some(result) => {
                    outcomes.push((m.at..m.at + 1, result));
                    None
                }
                None => Some((m, tries)),
            })
            .collect();
    }
    outcomes.sort_by_key(|(range, _)| range.start);
    outcomes
}

/// Each record's subject and body (rendered on their own, as a batch of one when the sink
/// batches); those that cannot be made are outcomes already.
async fn prepare(sink: &Sink, bus: &Nats, records: &[Arc<Record>]) -> (Vec<Message>, Outcomes) {
    let subjects = bus.subjects(records).await;
    let bodies = match sink.renderer.render_each_bounded(records).await {
        Ok(bodies) => bodies,
        Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
    };
    let (mut ready, mut failed) = (Vec::new(), Vec::new());
    for (at, (subject, body)) in std::iter::zip(subjects, bodies).enumerate() {
        match (subject, body) {
            (Ok(subject), Ok(body)) => ready.push(Message {
                at,
                subject,
                key: records[at].key(),
                body: Bytes::from(body),
            }),
            (Err(e), _) | (_, Err(e)) => failed.push((at..at + 1, super::render_failed(e))),
        }
    }
    (ready, failed)
}

/// This round's messages of `pending`, in order, each signed now and each taking a slot of the
/// rate limit; none once `stop` fired.
async fn outgoing(
    sink: &Sink,
    bus: &Nats,
    records: &[Arc<Record>],
    pending: &[(&Message, Tries<'_>)],
    stop: &CancellationToken,
) -> Vec<Outgoing> {
    let mut out = Vec::with_capacity(pending.len());
    for (m, _) in pending {
        let paced = match &sink.pace {
            Some(pace) => pace.wait(stop).await,
            None => true,
        };
        if !paced || stop.is_cancelled() {
            break;
        }
        let headers = crate::sink::signed_headers(
            &bus.headers,
            bus.signer.as_ref(),
            &m.body,
            &m.key,
            crate::sink::unix_now(),
        );
        out.push(Outgoing {
            subject: m.subject.clone(),
            headers: message_headers(&headers, &sink.name, &m.key, &records[m.at].source.name),
            body: m.body.clone(),
        });
    }
    out
}

impl Drop for Publisher {
    /// A sink replaced by a reload closes its connection (a client reconnecting to a server that
    /// is down would otherwise go on trying, and logging, for ever).
    fn drop(&mut self) {
        // Connected: closed now. Reconnecting: the client gives up after MAX_RECONNECTS.
        if let Some(conn) = self.connected.get_mut().take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.client.drain()).await;
            });
        }
    }
}

/// Logs a connection event once per change (a server that keeps refusing is one line, not one
/// per reconnect attempt), keeps the last problem for failure reasons, and sets the client's flags.
/// `text` is the event as said, the sink's secrets masked.
fn note_event(
    sink: &str,
    trouble: &Mutex<Option<String>>,
    flags: &Flags,
    event: async_nats::Event,
    text: String,
) {
    let mut last = trouble.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        async_nats::Event::Connected => {
            tracing::info!(sink = %sink, "connected to NATS");
            flags.up.send_replace(true);
            *last = None;
        }
        async_nats::Event::ClientError(async_nats::ClientError::MaxReconnects) => {
            tracing::warn!(sink = %sink, "NATS: gave up reconnecting; a new connection is made for the next message");
            flags
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        _ => {
            if last.as_deref() != Some(&text) {
                tracing::warn!(sink = %sink, "NATS: {text}");
                *last = Some(text);
            }
        }
    }
}

/// The message headers of `headers` (flagtail's, as for a webhook) for NATS, plus `Nats-Msg-Id`
/// and `Flagtail-Source`. NATS header names are compared as written, so they go out in the
/// canonical form receivers look up (`X-Flipt-Webhook-Signature`, `Webhook-Id`).
///
/// `Nats-Msg-Id` is the idempotency key scoped to the sink (`SINK:KEY`): JetStream drops
/// duplicates per stream by id alone, so two sinks publishing the same event into one stream (on
/// different subjects) must not share an id.
pub fn message_headers(
    headers: &::http::HeaderMap,
    sink: &str,
    key: &str,
    source: &str,
) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            out.append(canonical(name.as_str()).as_str(), value);
        }
    }
    out.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message_id(sink, key).as_str(),
    );
    out.insert("Flagtail-Source", source);
    out
}

/// The `Nats-Msg-Id` of a delivery.
pub fn message_id(sink: &str, key: &str) -> String {
    format!("{sink}:{key}")
}

/// `x-flipt-webhook-signature` → `X-Flipt-Webhook-Signature`.
pub fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_names_go_out_canonical() {
        assert_eq!(
            super::canonical("x-flipt-webhook-signature"),
            "X-Flipt-Webhook-Signature"
        );
        assert_eq!(super::canonical("webhook-id"), "Webhook-Id");
        let mut h = ::http::HeaderMap::new();
        h.insert("idempotency-key", "k".parse().unwrap());
        let out = super::message_headers(&h, "bus", "key-1", "flipt");
        assert_eq!(
            out.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("bus:key-1")
        );
        assert_eq!(out.get("Idempotency-Key").map(|v| v.as_str()), Some("k"));
        assert_eq!(
            out.get("Flagtail-Source").map(|v| v.as_str()),
            Some("flipt")
        );
    }
}
