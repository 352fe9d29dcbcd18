//! The config as the user wrote it (SPEC §2): every key, its default, and per-value validation.
//!
//! Unknown keys are refused (`deny_unknown_fields`), and values are checked while they are read
//! (names, durations, filters, enums), so figment's error already names the key. Nothing here does
//! I/O; turning this into running parts is [`super::Config::build`]. Every field's doc ends with its
//! default, and the tables of `docs/configuration.md` are written from these.

use super::policy::{Rate, RetryOn, Schedule};
use super::{Secret, Secrets, Urls};
use crate::event::Format;
use crate::event::pattern::{EventPattern, Matches};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole config file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Checkpoints, dead letters and rejected lines. Default `./flagtail-state`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Longer lines are rejected (recorded and skipped). Default 1048576.
    #[serde(default = "default_max_line_bytes", deserialize_with = "lenient_u64")]
    pub max_line_bytes: u64,
    /// Time allowed on SIGTERM to finish in-flight deliveries. Default `10s`.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub rejected: RejectedSection,
    /// Where events come from. Default: none (an error: at least one is needed).
    #[serde(default)]
    pub sources: Vec<SourceSection>,
    /// Where events go. Default: none (an error: at least one is needed).
    #[serde(default)]
    pub sinks: Vec<SinkSection>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of `/healthz`, `/readyz` and `/metrics`; `""` turns it off. Default `127.0.0.1:9464`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`. Default `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `flagtail=debug`); `RUST_LOG` overrides it. Default `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// How often a summary of what happened is logged at info, when something did; `0s` never.
    /// Default `1m`.
    #[serde(default = "default_summary_interval", with = "humantime_serde")]
    pub summary_interval: Duration,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::default(),
            level: default_log_level(),
            summary_interval: default_summary_interval(),
        }
    }
}

fn default_summary_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One source: exactly one of `file`, `socket`, `http`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Unique, `[a-z0-9_-]+`. Required.
    pub name: Name,
    /// Path of the audit log to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Unix stream socket to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Permissions of the socket. Default `"0600"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<FileMode>,
    /// Clients a socket source serves at once; more wait to be accepted. Default 64.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub max_connections: Option<u64>,
    /// Address to receive webhooks on (not in this version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Path an HTTP source answers on. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Token an HTTP source requires (`Authorization: Bearer TOKEN`, the bare token, or
    /// `?token=TOKEN`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Signature an HTTP source checks over the raw body. Default `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyScheme>,
    /// The sender's HMAC key for `verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_secret: Option<Secret>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub max_body_bytes: Option<u64>,
    /// `auto` or `flipt`. Default `auto`.
    #[serde(default)]
    pub format: Format,
    /// Where to start when there is no checkpoint yet: `beginning` or `end`. Default `beginning`.
    #[serde(default)]
    pub read_from: ReadFrom,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// What the journal of one socket or HTTP source may hold; when full, sockets stop reading
    /// and HTTP answers 503. Default `256MiB`.
    #[serde(default = "default_journal_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            max_bytes: default_journal_bytes(),
        }
    }
}

fn default_journal_bytes() -> ByteSize {
    ByteSize(256 * 1024 * 1024)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedSection {
    /// What the rejected file of one source may hold; its oldest records are dropped (and
    /// counted) to make room. Default `64MiB`.
    #[serde(default = "default_rejected_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for RejectedSection {
    fn default() -> Self {
        RejectedSection {
            max_bytes: default_rejected_bytes(),
        }
    }
}

fn default_rejected_bytes() -> ByteSize {
    ByteSize(64 * 1024 * 1024)
}

/// A size: a whole number of bytes, optionally with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrText {
            Num(u64),
            Text(String),
        }
        let text = match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => return Ok(ByteSize(n)),
            NumOrText::Text(t) => t,
        };
        let t = text.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(digits);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => u64::MAX,
        };
        n.parse::<u64>()
            .ok()
            .filter(|_| scale != u64::MAX)
            .and_then(|n| n.checked_mul(scale))
            .map(ByteSize)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a size like 256MiB (units B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            })
    }
}

/// Clients a socket or HTTP source serves at once unless `max_connections` says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 64;
/// The most `max_connections` may allow (larger values are taken as this).
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// What one source section describes, by kind (exactly one of `file`, `socket`, `http`, which the
/// loader checks), with each kind's keys and their defaults filled in.
#[derive(Debug, Clone, Copy)]
pub enum SourceKind<'a> {
    File {
        path: &'a std::path::Path,
        read_from: ReadFrom,
    },
    Socket {
        path: &'a std::path::Path,
        mode: FileMode,
        max_connections: usize,
    },
    Http {
        addr: &'a str,
        path: &'a str,
        auth_token: Option<&'a Secret>,
        /// The scheme and the sender's secret, when `verify` is not `none`.
        verify: Option<(VerifyScheme, &'a Secret)>,
        max_body: usize,
        max_connections: usize,
    },
}

impl SourceSection {
    /// The kind of source this section describes; `None` only for a section the loader refuses.
    pub fn kind(&self) -> Option<SourceKind<'_>> {
        let max_connections = self.max_connections.map_or(DEFAULT_CONNECTIONS, |n| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(MAX_CONNECTIONS)
        });
        match (&self.file, &self.socket, &self.http) {
            (Some(path), None, None) => Some(SourceKind::File {
                path,
                read_from: self.read_from,
            }),
            (None, Some(path), None) => Some(SourceKind::Socket {
                path,
                mode: self.socket_mode.unwrap_or(FileMode::PRIVATE),
                max_connections,
            }),
            (None, None, Some(addr)) => Some(SourceKind::Http {
                addr,
                path: self.path.as_deref().unwrap_or("/"),
                auth_token: self.auth_token.as_ref(),
                verify: match (self.verify.unwrap_or_default(), &self.verify_secret) {
                    (VerifyScheme::None, _) | (_, None) => None,
                    (scheme, Some(secret)) => Some((scheme, secret)),
                },
                max_body: self
                    .max_body_bytes
                    .map_or(DEFAULT_BODY_BYTES as usize, |n| {
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }),
                max_connections,
            }),
            _ => None,
        }
    }
}

/// Whose webhook signature an HTTP source checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyScheme {
    #[default]
    None,
    /// `X-Flipt-Webhook-Signature`: hex HMAC-SHA256 of the body (Flipt's webhook sink).
    Flipt,
    /// `X-LD-Signature`: hex HMAC-SHA256 of the body (LaunchDarkly's signed webhooks).
    Launchdarkly,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// One sink.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Unique, `[a-z0-9_-]+`. Required.
    pub name: Name,
    /// `webhook`, `stdout` or `file`. Default `webhook`.
    #[serde(default, rename = "type")]
    pub kind: SinkKind,
    /// `http://` or `https://` URL, required for webhooks; for NATS, one or more `nats://` or
    /// `tls://` servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Urls>,
    /// NATS: the subject to publish on, a Tera template (`flipt.audit.{{ type }}.{{ action }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// NATS: an authentication token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// NATS: user name, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// NATS: a `.creds` file (user JWT and NKey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// NATS: a file holding an NKey seed (`SU…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// File to append to; required for `type: file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `type:action` patterns. Default `["*:*"]`.
    #[serde(default = "default_events")]
    pub events: Vec<EventPattern>,
    /// Dotted paths into the event → glob patterns; every listed path must match one of its
    /// patterns. Default none.
    #[serde(default, rename = "match", skip_serializing_if = "Matches::is_empty")]
    pub matches: Matches,
    /// Source names to take events from. Default: all sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Name>>,
    /// Extra request headers. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `Content-Type` of the request. Default `application/json`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Tera template of the body. Default: Flipt's webhook body (SPEC §1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// HMAC key. Default none (unsigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<Secrets>,
    /// File holding the HMAC key (trailing newline dropped). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_file: Option<PathBuf>,
    /// `flipt` or `standard-webhooks`. Default `flipt`.
    #[serde(default)]
    pub signature: SignatureScheme,
    /// How long the sink fails before it is `down` (until then it is `retrying`); a delivery
    /// that keeps failing waits in the backlog, it is never dead-lettered for it. Default `15s`.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff_duration: Duration,
    /// First retry delay; doubles each retry, with jitter. Default `500ms`.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Statuses tried again (codes and classes; `5xx` leaves out 501), besides connection errors
    /// and timeouts, which always are. Default `[408, 429, 5xx]`.
    #[serde(default)]
    pub retry_on: RetryOn,
    /// Explicit delays between attempts instead of the exponential ones; when they run out the
    /// delivery is dead-lettered. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule: Option<Schedule>,
    /// Longest `Retry-After` honoured; a longer one is cut to this (with a warning). Default `5m`.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Requests per period (`1/s`, `100/m`), evenly spaced; waiting holds the queue back and never
    /// drops. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
    /// Requests allowed back to back before `rate_limit`'s spacing applies. Default 1.
    #[serde(default = "default_burst", deserialize_with = "lenient_u32")]
    pub rate_limit_burst: u32,
    /// Limit of one attempt. Default `10s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight for this sink; 1 keeps order. Default 1.
    #[serde(default = "default_concurrency", deserialize_with = "lenient_u32")]
    pub concurrency: u32,
    #[serde(default)]
    pub batch: BatchSection,
    #[serde(default)]
    pub dead_letter: DeadLetterSection,
    /// The sink's waiting room on disk (`state_dir/backlog/SINK/`).
    #[serde(default)]
    pub backlog: BacklogSection,
    /// While the sink is `down`: the longest wait between two probes of its receiver. Default
    /// `60s`.
    #[serde(default = "default_max_probe_interval", with = "humantime_serde")]
    pub max_probe_interval: Duration,
    /// Extra trusted CA certificates (PEM) for `https` URLs. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Permissions of the file a `file` sink creates. Default `"0600"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Largest body a template may render; over it the event is dead-lettered. Default 1 MiB per
    /// event of the request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub max_body_bytes: Option<u64>,
    // Kafka (`type: kafka`), kept together to move into its own per-kind section.
    /// Kafka: the brokers to ask first, `host:port` each. Required for `type: kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<Vec<String>>,
    /// Kafka: the topic to write to, a Tera template (`flipt-audit`). Required for `type: kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Kafka: the record key, a Tera template; records of one key go to one partition. Default
    /// `{{ type }}` (as Flipt's Kafka sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Kafka: the record value, `json` (the body template's output) or `protobuf` (Flipt's
    /// `flipt.audit.Event`). Default `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<KafkaEncoding>,
    /// Kafka: SASL authentication (`mechanism`, `username`, `password`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSection>,
    /// Kafka: connect with TLS (on by itself when `ca_file` or a client certificate is set).
    /// Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Kafka: the client certificate (PEM, its chain after it) for mutual TLS, with
    /// `client_key_file`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Kafka: the client certificate's private key (PEM). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

/// What a Kafka record's value is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaEncoding {
    /// The sink's body (Flipt's webhook body, or the `body` template).
    #[default]
    Json,
    /// Flipt's `flipt.audit.Event` protobuf (what Flipt's own Kafka sink writes).
    Protobuf,
}

/// A Kafka sink's SASL login.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[default]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SinkSection {
    /// The limit on a rendered body (`max_body_bytes`, default 1 MiB per event of a request).
    pub fn body_limit(&self) -> usize {
        let limit = self
            .max_body_bytes
            .unwrap_or(DEFAULT_BODY_BYTES.saturating_mul(u64::from(self.batch.max_events)));
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

/// Default `max_body_bytes` per event of a request.
pub const DEFAULT_BODY_BYTES: u64 = 1024 * 1024;

/// Unix permission bits, written as octal digits: `"0640"` (or `640`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    pub const PRIVATE: FileMode = FileMode(0o600);
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrText {
            Num(u64),
            Text(String),
        }
        let digits = match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => n.to_string(),
            NumOrText::Text(t) => t.trim().to_string(),
        };
        match u32::from_str_radix(&digits, 8) {
            Ok(bits) if !digits.is_empty() && bits <= 0o777 => Ok(FileMode(bits)),
            _ => Err(serde::de::Error::custom(format!(
                "{digits:?} is not a file mode like \"0600\" (octal, at most 0777)"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    Webhook,
    Stdout,
    File,
    /// NATS JetStream.
    Nats,
    /// Kafka (acks from all in-sync replicas).
    Kafka,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    #[default]
    Flipt,
    StandardWebhooks,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Events per request; above 1 the body is a JSON array (or the template's `events`). Default 1.
    #[serde(default = "default_max_events", deserialize_with = "lenient_u32")]
    pub max_events: u32,
    /// How long a batch waits to fill up. Default `0s`.
    #[serde(default, with = "humantime_serde")]
    pub linger: Duration,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_events: default_max_events(),
            linger: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSection {
    /// Send retry-exhausted dead letters again, in the background, once the sink delivers again.
    /// Default `true`.
    #[serde(default = "yes")]
    pub auto_replay: bool,
}

impl Default for DeadLetterSection {
    fn default() -> Self {
        DeadLetterSection { auto_replay: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacklogSection {
    /// What the sink's backlog may hold on disk. Default `256MiB`.
    #[serde(default = "default_journal_bytes")]
    pub max_bytes: ByteSize,
    /// What happens when it is full. Default `dead_letter`.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for BacklogSection {
    fn default() -> Self {
        BacklogSection {
            max_bytes: default_journal_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

/// What a sink does when its backlog is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The oldest waiting events go to the dead-letter file (replayed by themselves once the sink
    /// delivers again, with `dead_letter.auto_replay`), making room for the new.
    #[default]
    DeadLetter,
    /// The sources feeding this sink wait until there is room.
    Block,
}

fn default_max_probe_interval() -> Duration {
    Duration::from_secs(60)
}

fn yes() -> bool {
    true
}

/// A source or sink name: `[a-z0-9_-]+`. Names appear in file names and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Name(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "name {s:?} must match [a-z0-9_-]+"
            )))
        }
    }
}

/// A whole number written as a number or as a string (what `${VAR}` substitution produces).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u64),
        Text(String),
    }
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a whole number"))),
    }
}

fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = lenient_u64(d)?;
    u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is too large")))
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    lenient_u64(d).map(Some)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("./flagtail-state")
}
fn default_max_line_bytes() -> u64 {
    1_048_576
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_admin_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_events() -> Vec<EventPattern> {
    vec![EventPattern::parse(EventPattern::ALL).expect("the default pattern parses")]
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(15)
}
pub(crate) fn default_max_retry_after() -> Duration {
    Duration::from_secs(300)
}
fn default_burst() -> u32 {
    1
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> u32 {
    1
}
fn default_max_events() -> u32 {
    1
}
