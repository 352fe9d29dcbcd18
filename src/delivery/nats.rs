//! The NATS JetStream transport: one client per sink, shared by its delivery workers (NATS
//! multiplexes), connected on first use and reconnecting by itself. A publish counts as
//! delivered only once JetStream acknowledges it; its outcome goes to the one retry policy
//! ([`super::retry::Tries`]) like a webhook's answer.
//!
//! Every message carries `Nats-Msg-Id` = the delivery's idempotency key, so a stream's
//! duplicate window drops what is sent again after a crash or a lost ack.

use super::retry::Attempt;
use crate::sink::nats::{Auth, Nats};
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{ConnectOptions, ServerAddr};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::OnceCell;

/// A sink's connection to NATS, made on first use.
pub struct Publisher {
    servers: Vec<ServerAddr>,
    /// The servers, masked.
    shown: String,
    auth: Auth,
    ca_file: Option<std::path::PathBuf>,
    tls_required: bool,
    timeout: Duration,
    /// The sink's name, for logs and the connection's name.
    sink: String,
    context: OnceCell<jetstream::Context>,
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
        if let Some(ca) = &bus.ca_file {
            super::http::connector(Some(ca)).map_err(|e| ("ca_file", e))?;
        }
        let publisher = Publisher {
            servers,
            shown: bus.shown.clone(),
            auth: match &bus.auth {
                Auth::None => Auth::None,
                Auth::Token(t) => Auth::Token(t.clone()),
                Auth::UserPassword(u, p) => Auth::UserPassword(u.clone(), p.clone()),
                Auth::Creds(c) => Auth::Creds(c.clone()),
                Auth::NkeySeed(s) => Auth::NkeySeed(s.clone()),
            },
            ca_file: bus.ca_file.clone(),
            tls_required: bus.tls_required,
            timeout: bus.timeout,
            sink: sink.to_string(),
            context: OnceCell::new(),
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
            .require_tls(self.tls_required);
        if background {
            let sink = self.sink.clone();
            o = o.retry_on_initial_connect().event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(sink = %sink, "connected to NATS")
                        }
                        other => tracing::warn!(sink = %sink, "NATS: {other}"),
                    }
                }
            });
        }
        if let Some(ca) = &self.ca_file {
            o = o.add_root_certificates(ca.clone());
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

    /// The JetStream context, connecting on first use (in the background: this does not wait
    /// for the server).
    async fn context(&self) -> Result<&jetstream::Context, String> {
        self.context
            .get_or_try_init(|| async {
                let client = self
                    .options(true)?
                    .connect(self.servers.clone())
                    .await
                    .map_err(|e| format!("NATS {}: {e}", self.shown))?;
                let mut context = jetstream::new(client);
                context.set_timeout(self.timeout);
                Ok(context)
            })
            .await
    }

    /// Publishes one message and waits for JetStream's ack.
    pub async fn publish(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        body: Bytes,
    ) -> Attempt {
        let context = match self.context().await {
            Ok(c) => c,
            Err(reason) => return Attempt::Retry { reason },
        };
        let published = context
            .publish_with_headers(subject.to_string(), headers, body)
            .await;
        let acked = match published {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(sink = %self.sink, subject, stream = %ack.stream, "JetStream already had this message (Nats-Msg-Id): counted as delivered");
                }
                Attempt::Delivered
            }
            Err(e) => self.classify(subject, e.kind(), &e.to_string()),
        }
    }

    fn classify(&self, subject: &str, kind: PublishErrorKind, text: &str) -> Attempt {
        let at = &self.shown;
        match kind {
            PublishErrorKind::StreamNotFound => Attempt::Final {
                reason: format!(
                    "NATS {at}: no JetStream stream takes subject {subject} (no responders); create a stream for it, then `flagtail replay`"
                ),
            },
            PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence => Attempt::Final {
                reason: format!("NATS {at}: {subject}: {text}"),
            },
            PublishErrorKind::TimedOut => Attempt::Retry {
                reason: format!(
                    "NATS {at}: no JetStream ack for {subject} within {} (server unreachable or JetStream unavailable)",
                    humantime::format_duration(self.timeout)
                ),
            },
            _ => Attempt::Retry {
                reason: format!("NATS {at}: {subject}: {text}"),
            },
        }
    }

    /// `check --connect`: connects (failing at once if it cannot) and names the stream that
    /// takes each subject.
    pub async fn check(&self, subjects: &[String]) -> Result<Vec<String>, String> {
        let client = tokio::time::timeout(
            self.timeout,
            self.options(false)?.connect(self.servers.clone()),
        )
        .await
        .map_err(|_| {
            format!(
                "no connection within {}",
                humantime::format_duration(self.timeout)
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

/// The message headers of `headers` (flagtail's, as for a webhook) for NATS, plus `Nats-Msg-Id`
/// and `Flagtail-Source`. NATS header names are compared as written, so they go out in the
/// canonical form receivers look up (`X-Flipt-Webhook-Signature`, `Webhook-Id`).
pub fn message_headers(
    headers: &::http::HeaderMap,
    key: &str,
    source: &str,
) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            out.append(canonical(name.as_str()).as_str(), value);
        }
    }
    out.insert(async_nats::header::NATS_MESSAGE_ID, key);
    out.insert("Flagtail-Source", source);
    out
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
        let out = super::message_headers(&h, "key-1", "flipt");
        assert_eq!(out.get("Nats-Msg-Id").map(|v| v.as_str()), Some("key-1"));
        assert_eq!(out.get("Idempotency-Key").map(|v| v.as_str()), Some("k"));
        assert_eq!(
            out.get("Flagtail-Source").map(|v| v.as_str()),
            Some("flipt")
        );
    }
}
