//! The NATS JetStream transport: one client per sink, shared by its delivery workers (NATS
//! multiplexes), connected on first use and reconnecting by itself. A publish counts as
//! delivered only once JetStream acknowledges it; its outcome goes to the one retry policy
//! ([`super::retry::Tries`]) like a webhook's answer.
//!
//! Every message carries `Nats-Msg-Id` = the delivery's idempotency key, so a stream's
//! duplicate window drops what is sent again after a crash or a lost ack.

use super::retry::Attempt;
use crate::sink::nats::{Auth, Nats};
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{Client, ConnectOptions, ServerAddr};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Publishes the client may hold while it connects; while it is disconnected none are queued
/// (each attempt fails at once and waits out the backoff), so memory stays with the sink's budget.
const QUEUED: usize = 64;

/// How often, and how long apart, a publish answered "no responders" is tried again at once: a
/// clustered stream has none while it elects a leader.
const NO_RESPONDERS_TRIES: u32 = 3;
const NO_RESPONDERS_WAIT: Duration = Duration::from_millis(250);

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
    connected: OnceCell<(Client, jetstream::Context)>,
    /// The last connection problem the client reported, for the reason of a failed attempt.
    trouble: Arc<Mutex<Option<String>>>,
}

impl Publisher {
    /// Checks what can be checked before connecting (the servers' addresses, the credentials,
    /// the CA file); an error names the config key at fault.
    pub fn new(sink: &str, bus: &Nats) -> Result<Publisher, (&'static str, String)> {
        let servers = bus
            .servers
            .iter()
            .map(|u| {
                u.target()
                    .parse::<ServerAddr>()
                    .map_err(|_| ("url", format!("{u} is not a NATS server address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = super::http::tls_config(bus.ca_file.as_deref()).map_err(|e| ("ca_file", e))?;
        let publisher = Publisher {
            servers,
            shown: bus.shown.clone(),
            auth: bus.auth.clone(),
            tls,
            // A CA file given is meant to be used: never fall back to plain text.
            tls_required: bus.tls_required || bus.ca_file.is_some(),
            timeout: bus.timeout,
            sink: sink.to_string(),
            connected: OnceCell::new(),
            trouble: Arc::new(Mutex::new(None)),
        };
        publisher.options(false).map_err(|e| ("creds_file", e))?;
        Ok(publisher)
    }

    /// The connection options; `background`: connect in the background (the daemon: a server
    /// that is down at start is waited for) rather than fail at once (`check --connect`).
    fn options(&self, background: bool) -> Result<ConnectOptions, String> {
        let mut o = ConnectOptions::new()
            .name(format!("flagtail {}", self.sink))
            .connection_timeout(self.timeout)
            .client_capacity(QUEUED)
            // Back soon after the server is: a delivery waiting out its backoff finds the
            // connection up (async-nats waits up to 4 s between attempts by default).
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 * 2u64.pow(attempts.min(5) as u32)).min(RECONNECT_MAX)
            })
            .tls_client_config(self.tls.clone())
            .require_tls(self.tls_required);
        if background {
            let (sink, trouble) = (self.sink.clone(), self.trouble.clone());
            o = o.retry_on_initial_connect().event_callback(move |event| {
                let (sink, trouble) = (sink.clone(), trouble.clone());
                async move { note_event(&sink, &trouble, event) }
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

    /// The client and its JetStream context, connecting on first use (in the background: this
    /// does not wait for the server).
    async fn connection(&self) -> Result<&(Client, jetstream::Context), String> {
        self.connected
            .get_or_try_init(|| async {
                let client = self
                    .options(true)?
                    .connect(self.servers.clone())
                    .await
                    .map_err(|e| format!("NATS {}: {e}", self.shown))?;
                let mut context = jetstream::new(client.clone());
                context.set_timeout(self.timeout);
                Ok((client, context))
            })
            .await
    }

    /// The last connection problem, as a clause for a reason.
    fn trouble(&self) -> String {
        match &*self.trouble.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(t) => format!("; last connection problem: {t}"),
            None => String::new(),
        }
    }

    /// Publishes one message and waits for JetStream's ack.
    pub async fn publish(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        body: Bytes,
    ) -> Attempt {
        let (client, context) = match self.connection().await {
            Ok(c) => c,
            Err(reason) => return Attempt::Retry { reason },
        };
        let mut no_responders = 0;
        loop {
            if client.connection_state() == State::Disconnected {
                return Attempt::Retry {
                    reason: format!("NATS {}: not connected{}", self.shown, self.trouble()),
                };
            }
            let published = context
                .publish_with_headers(subject.to_string(), headers.clone(), body.clone())
                .await;
            let acked = match published {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::info!(sink = %self.sink, subject, stream = %ack.stream, "JetStream already had this message (same Nats-Msg-Id within the stream's duplicate window): counted as delivered");
                    }
                    return Attempt::Delivered;
                }
                Err(e)
                    if e.kind() == PublishErrorKind::StreamNotFound
                        && no_responders + 1 < NO_RESPONDERS_TRIES =>
                {
                    no_responders += 1;
                    tokio::time::sleep(NO_RESPONDERS_WAIT).await;
                }
                Err(e) => return self.classify(subject, &e),
            }
        }
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
                // JetStream's own refusals carry an HTTP-like code: 4xx will not change by
                // sending again (a message too large for the stream, a sealed stream).
                let api =
                    std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>());
                match api {
                    Some(api) if (400..500).contains(&api.code()) => Attempt::Final {
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
        let servers = self.servers.len().max(1) as u32;
        let client = tokio::time::timeout(
            self.timeout * servers,
            self.options(false)?.connect(self.servers.clone()),
        )
        .await
        .map_err(|_| {
            format!(
                "no connection within {}",
                humantime::format_duration(self.timeout * servers)
            )
        })?
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

impl Drop for Publisher {
    /// A sink replaced by a reload closes its connection (a client reconnecting to a server that
    /// is down would otherwise go on trying, and logging, for ever).
    fn drop(&mut self) {
        if let Some((client, _)) = self.connected.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), client.drain()).await;
            });
        }
    }
}

/// Logs a connection event once per change (a server that keeps refusing is one line, not one
/// per reconnect attempt) and keeps the last problem for failure reasons.
fn note_event(sink: &str, trouble: &Mutex<Option<String>>, event: async_nats::Event) {
    let mut last = trouble.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        async_nats::Event::Connected => {
            tracing::info!(sink = %sink, "connected to NATS");
            *last = None;
        }
        other => {
            let text = other.to_string();
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
