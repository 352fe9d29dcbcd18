//! A `type: kafka` sink's parts, built from its config: the brokers, the topic and key
//! templates, the value's encoding, the headers every record carries, TLS and SASL. Producing is
//! `delivery::kafka`.

use super::render::{self, RenderError, Renderer};
use super::sign::Signer;
use crate::config::{KafkaEncoding, SaslMechanism};
use crate::config::{KafkaSink, Secret, SinkSection};
use crate::record::Record;
use ::http::header::HeaderMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest topic name Kafka takes.
pub const MAX_TOPIC: usize = 249;
/// Longest record key a template may render.
pub const MAX_KEY: usize = 4096;
/// The key template when none is given: the event type, as Flipt's Kafka sink.
pub const DEFAULT_KEY: &str = "{{ type }}";

pub struct Kafka {
    /// `host:port` each, asked in turn for the cluster's metadata.
    pub brokers: Vec<String>,
    /// The brokers, for logs and errors.
    pub shown: String,
    pub topic: Arc<Renderer>,
    pub key: Arc<Renderer>,
    pub encoding: KafkaEncoding,
    /// Configured headers plus `Content-Type`; signature headers are added per record.
    pub headers: HeaderMap,
    pub signer: Option<Signer>,
    pub sasl: Option<(SaslMechanism, String, Secret)>,
    /// Connect with TLS (`tls: true`, or a `ca_file` or client certificate given).
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    /// The client certificate and key files, for mutual TLS.
    pub client_cert: Option<super::ClientCert>,
    /// Limit of one produce, acks included.
    pub timeout: Duration,
}

/// Builds a Kafka sink's parts; errors are pushed naming their key.
pub fn build(
    s: &SinkSection,
    bus: &KafkaSink,
    at: &dyn Fn(&str) -> String,
    headers: HeaderMap,
    signer: Option<Signer>,
    errors: &mut Vec<String>,
) -> Option<Kafka> {
    let brokers = bus.bootstrap_servers.0.clone();
    let encoding = bus.encoding;
    let mut headers = headers;
    if encoding == KafkaEncoding::Protobuf && s.common.content_type == "application/json" {
        // The default content type is the JSON body's; a protobuf value says what it is.
        headers.insert(
            ::http::header::CONTENT_TYPE,
            ::http::HeaderValue::from_static("application/protobuf"),
        );
    }
    let template = |key: &str, text: &str, max: usize, errors: &mut Vec<String>| {
        let limits = render::Limits {
            max_body_bytes: max,
            time: s.common.timeout,
            parallel: s.common.concurrency.get(),
        };
        Renderer::new(
            &format!("{}.{key}", s.name),
            Some(text),
            "text/plain",
            false,
            limits,
        )
        .map_err(|e| errors.push(format!("{}: {e}", at(key))))
        .ok()
        .map(Arc::new)
    };
    let topic = template("topic", &bus.topic, MAX_TOPIC, errors);
    let key = template(
        "key",
        bus.key.as_deref().unwrap_or(DEFAULT_KEY),
        MAX_KEY,
        errors,
    );
    let sasl = bus
        .sasl
        .as_ref()
        .map(|l| (l.mechanism, l.username.clone(), l.password.clone()));
    Some(Kafka {
        shown: brokers.join(","),
        brokers,
        topic: topic?,
        key: key?,
        encoding,
        headers,
        signer,
        sasl,
        tls: bus.tls || bus.ca_file.is_some() || bus.cert_file.is_some(),
        ca_file: bus.ca_file.clone(),
        client_cert: super::client_cert_of(bus.cert_file.as_ref(), bus.key_file.as_ref()),
        timeout: s.common.timeout,
    })
}

impl Kafka {
    /// Each record's topic and key, rendered within the sink's limits; the topic checked.
    pub async fn places(
        &self,
        records: &[Arc<Record>],
    ) -> Vec<Result<(String, Vec<u8>), RenderError>> {
        let topics = each(&self.topic, records, "topic").await;
        let keys = each(&self.key, records, "key").await;
        std::iter::zip(topics, keys)
            .map(|(topic, key)| Ok((checked(topic?)?, key?)))
            .collect()
    }

    /// `record`'s key, rendered on this thread (`render`).
    pub fn key_of(&self, record: &Arc<Record>) -> Result<Vec<u8>, RenderError> {
        self.key
            .render(std::slice::from_ref(record))
            .map_err(|e| named(e, "key"))
    }

    /// `record`'s topic, rendered on this thread (`check --connect`).
    pub fn topic_of(&self, record: &Arc<Record>) -> Result<String, RenderError> {
        checked(
            self.topic
                .render(std::slice::from_ref(record))
                .map_err(|e| named(e, "topic"))?,
        )
    }
}

/// `renderer`'s output for each record, errors named by `what`.
async fn each(
    renderer: &Arc<Renderer>,
    records: &[Arc<Record>],
    what: &str,
) -> Vec<Result<Vec<u8>, RenderError>> {
    match renderer.render_each_bounded(records).await {
        Ok(each) => each
            .into_iter()
            .map(|r| r.map_err(|e| named(e, what)))
            .collect(),
        Err(e) => records
            .iter()
            .map(|_| Err(named(e.clone(), what)))
            .collect(),
    }
}

fn named(mut e: RenderError, what: &str) -> RenderError {
    e.reason = format!("{what} {}", e.reason);
    e
}

/// A rendered topic, trimmed and checked as Kafka names topics.
fn checked(rendered: Vec<u8>) -> Result<String, RenderError> {
    let topic = String::from_utf8_lossy(&rendered).trim().to_string();
    match invalid_topic(&topic) {
        Some(why) => Err(RenderError {
            reason: format!(
                "the topic template rendered {:?}, which is not a Kafka topic name: {why}",
                topic.chars().take(120).collect::<String>()
            ),
            excerpt: None,
        }),
        None => Ok(topic),
    }
}

/// Why `topic` is not a Kafka topic name (1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`).
pub fn invalid_topic(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("it is empty")
    } else if topic.len() > MAX_TOPIC {
        Some("it is longer than 249 characters")
    } else if topic == "." || topic == ".." {
        Some("it is . or ..")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn topic_names_are_checked_as_kafka_does() {
        assert!(super::invalid_topic("flipt-audit.v1_x").is_none());
        for bad in ["", ".", "..", "a b", "a/b", "ä", &"x".repeat(250)] {
            assert!(super::invalid_topic(bad).is_some(), "{bad:?}");
        }
    }
}
