//! A `type: kafka` sink's own keys: the brokers, the topic and key templates, the value's
//! encoding, TLS (the same `ca_file`, `cert_file` and `key_file` as webhooks) and a SASL login.

use super::secret::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Publishes each event as one Kafka record, acknowledged by all in-sync replicas.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSink {
    /// The brokers to ask first, `HOST:PORT` each. Required.
    pub bootstrap_servers: Brokers,
    /// The topic to write to, a Tera template (`flipt-audit`). Required.
    pub topic: String,
    /// The record key, a Tera template; records of one key go to one partition. Default
    /// `{{ type }}` (as Flipt's Kafka sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The record value: `json` (the body template's output) or `protobuf` (Flipt's
    /// `flipt.audit.Event`). Default `json`.
    #[serde(default)]
    pub encoding: KafkaEncoding,
    /// SASL authentication (`mechanism`, `username`, `password`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSection>,
    /// Connect with TLS (on by itself when `ca_file` or a client certificate is set). Default
    /// `false`.
    #[serde(default)]
    pub tls: bool,
    /// Extra trusted CA certificates (PEM) for the brokers. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) for brokers that require mutual TLS; with `key_file`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Extra record headers. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

impl KafkaSink {
    /// A topic, a login with a name, and a certificate with its key.
    pub(super) fn check(&self) -> Result<(), super::item::Located> {
        use super::item::Located;
        if self.topic.trim().is_empty() {
            return Err(Located::at(
                "topic",
                "a kafka sink needs a topic (e.g. \"flipt-audit\")",
            ));
        }
        if let Some(sasl) = &self.sasl
            && sasl.username.is_empty()
        {
            return Err(Located {
                path: vec!["sasl".into(), "username".into()],
                message: "must not be empty".into(),
            });
        }
        super::sink::cert_with_key(self.cert_file.as_ref(), self.key_file.as_ref())
    }
}

/// Kafka brokers, `HOST:PORT` each, at least one.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Brokers(pub Vec<String>);

impl<'de> Deserialize<'de> for Brokers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let servers = Vec::<String>::deserialize(d)?;
        if servers.is_empty() {
            return Err(D::Error::custom(
                "a kafka sink needs bootstrap_servers (a list of HOST:PORT)",
            ));
        }
        for server in &servers {
            let port = server
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty() && !host.contains('/')) {
                return Err(D::Error::custom(format!("{server:?} is not HOST:PORT")));
            }
        }
        Ok(Brokers(servers))
    }
}

/// What a Kafka record's value is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KafkaEncoding {
    /// The sink's body (Flipt's webhook body, or the `body` template).
    #[default]
    Json,
    /// Flipt's `flipt.audit.Event` protobuf (what Flipt's own Kafka sink writes).
    Protobuf,
}

/// A Kafka sink's SASL login.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslSection {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Default `SCRAM-SHA-256` (as Flipt).
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Required.
    pub username: String,
    /// Required.
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[default]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}
