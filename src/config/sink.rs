//! A sink as the user wrote it: `name`, `type`, the keys every sink takes (what it sends and when,
//! how it retries, its backlog) and the keys of its kind, each kind a struct with only its own
//! keys. A key of another kind is refused by the parser, naming the kinds that take it.

use super::item::{self, Located};
use super::kafka::KafkaSink;
use super::policy::{Rate, RetryOn, Schedule};
use super::reach::{Compression, OAuth2Section, ProxySetting};
use super::secret::{Secret, SecretUrl, Secrets, Urls};
use super::source::DEFAULT_BODY_BYTES;
use super::values::{ByteSize, Count, Delay, FileMode, Name, Positive};
use crate::event::pattern::{EventPattern, Matches};
use figment::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One sink.
#[derive(Debug, Serialize)]
pub struct SinkSection {
    /// Unique, `[a-z0-9_-]+`. Required.
    pub name: Name,
    /// `type` and the keys of that kind.
    #[serde(flatten)]
    pub kind: SinkKind,
    /// The keys every kind takes.
    #[serde(flatten)]
    pub common: SinkCommon,
}

/// The kinds of sink (`type`), each with its own keys.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkKind {
    Webhook(Box<WebhookSink>),
    Stdout(StdoutSink),
    File(FileSink),
    /// NATS JetStream.
    Nats(NatsSink),
    /// Kafka (acks from all in-sync replicas).
    Kafka(KafkaSink),
}

/// A sink's `type`. Default `webhook`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    #[default]
    Webhook,
    Stdout,
    File,
    Nats,
    Kafka,
}

impl SinkType {
    const ALL: [SinkType; 5] = [
        SinkType::Webhook,
        SinkType::Stdout,
        SinkType::File,
        SinkType::Nats,
        SinkType::Kafka,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Webhook => "webhook",
            SinkType::Stdout => "stdout",
            SinkType::File => "file",
            SinkType::Nats => "nats",
            SinkType::Kafka => "kafka",
        }
    }

    /// The keys of this kind only.
    fn own_keys(self) -> &'static [&'static str] {
        match self {
            SinkType::Webhook => item::keys_taken::<WebhookSink>(),
            SinkType::Stdout => &[],
            SinkType::File => item::keys_taken::<FileSink>(),
            SinkType::Nats => item::keys_taken::<NatsSink>(),
            SinkType::Kafka => item::keys_taken::<KafkaSink>(),
        }
    }

    /// Keys this kind cannot do without, and what to say when one is missing.
    fn required(self) -> &'static [(&'static str, &'static str)] {
        match self {
            SinkType::Webhook => &[("url", "a webhook sink needs a url")],
            SinkType::File => &[("path", "a file sink needs a path")],
            SinkType::Nats => &[
                (
                    "url",
                    "a nats sink needs a url (nats://HOST:4222, or a list)",
                ),
                (
                    "subject",
                    "a nats sink needs a subject (e.g. \"flipt.audit.{{ type }}.{{ action }}\")",
                ),
            ],
            SinkType::Kafka => &[
                (
                    "bootstrap_servers",
                    "a kafka sink needs bootstrap_servers (a list of HOST:PORT)",
                ),
                ("topic", "a kafka sink needs a topic (e.g. \"flipt-audit\")"),
            ],
            SinkType::Stdout => &[],
        }
    }
}

/// Writes each message to standard output, a line each.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSink {}

/// Appends each message to a file, a line each.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// File to append to. Required.
    pub path: PathBuf,
    /// Permissions of the file when flagtail creates it. Default `"0600"`.
    #[serde(default)]
    pub mode: FileMode,
}

/// Posts each message (or batch) to an HTTP(S) receiver.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    /// The receiver's `http://` or `https://` URL; user info is sent as Basic auth. Required.
    pub url: WebhookUrl,
    /// Extra request headers. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Extra trusted CA certificates (PEM) for `https` URLs. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Statuses tried again (codes and classes; `5xx` leaves out 501), besides connection errors
    /// and timeouts, which always are. Default `[408, 429, 5xx]`.
    #[serde(default)]
    pub retry_on: RetryOn,
    /// Longest `Retry-After` honoured; a longer one is cut to this (with a warning). Default `5m`.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    #[schemars(with = "super::schema::Duration")]
    pub max_retry_after: Duration,
    /// The proxy requests go through, `http://[user:password@]host[:port]` (CONNECT tunnels for
    /// `https` URLs), or `none` to go direct. Default: the environment's
    /// `https_proxy`/`http_proxy`/`all_proxy` and `no_proxy` (either case), as curl reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySetting>,
    /// A client certificate chain (PEM), presented to receivers that require mutual TLS; with
    /// `key_file`. Read at start and on reload. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert_file`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// `gzip` sends the body compressed, with `Content-Encoding: gzip` (signatures over the
    /// bytes sent), or `none`. Default `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `{token_url, client_id, client_secret, scopes, audience}`: each request carries a bearer
    /// token from this OAuth2 token endpoint (client credentials). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Section>,
}

/// Publishes each message to NATS JetStream.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSink {
    /// One or more `nats://` or `tls://` servers. Required.
    pub url: NatsUrls,
    /// The subject to publish on, a Tera template (`flipt.audit.{{ type }}.{{ action }}`).
    /// Required.
    pub subject: String,
    /// An authentication token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// User name, with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password, with `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A `.creds` file (user JWT and NKey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed_file: Option<PathBuf>,
    /// Extra message headers. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Extra trusted CA certificates (PEM) for `tls://` servers. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), presented to servers that verify clients (`verify:
    /// true` in nats-server's `tls` block); with `key_file`. Read at start and on reload; the
    /// connection is TLS. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert_file`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The keys every sink takes: what it sends, to whom, how it retries and waits.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    /// `type:action` patterns. Default `["*:*"]`.
    #[serde(default = "default_events", deserialize_with = "events")]
    pub events: Vec<EventPattern>,
    /// Dotted paths into the event → glob patterns; every listed path must match one of its
    /// patterns. Default none.
    #[serde(default, rename = "match", skip_serializing_if = "Matches::is_empty")]
    pub matches: Matches,
    /// Source names to take events from. Default: all sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Name>>,
    /// `Content-Type` of the message. Default `application/json`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Tera template of the body. Default: Flipt's webhook body (SPEC §1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// HMAC key, or a list of them (newest first). Default none (unsigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<Secrets>,
    /// File holding the HMAC key (trailing newline dropped); not with `signing_secret`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_file: Option<PathBuf>,
    /// `flipt` or `standard-webhooks`. Default `flipt`.
    #[serde(default)]
    pub signature: SignatureScheme,
    /// How long the sink fails before it is `down` (until then it is `retrying`); a delivery
    /// that keeps failing waits in the backlog, it is never dead-lettered for it. Default `15s`.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schemars(with = "super::schema::Duration")]
    pub max_backoff_duration: Duration,
    /// First retry delay; doubles each retry, with jitter. At least 1ms. Default `500ms`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Delay,
    /// Explicit delays between attempts instead of the exponential ones; when they run out the
    /// delivery is dead-lettered. Default none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "schedule"
    )]
    pub retry_schedule: Option<Schedule>,
    /// Requests per period (`1/s`, `100/m`), evenly spaced; waiting holds the queue back and never
    /// drops. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
    /// Requests allowed back to back before `rate_limit`'s spacing applies. Default 1.
    #[serde(default)]
    pub rate_limit_burst: Count,
    /// Limit of one attempt. Default `10s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "super::schema::Duration")]
    pub timeout: Duration,
    /// Requests in flight for this sink; 1 keeps order. Default 1.
    #[serde(default)]
    pub concurrency: Count,
    #[serde(default)]
    pub batch: BatchSection,
    #[serde(default)]
    pub dead_letter: DeadLetterSection,
    /// The sink's waiting room on disk (`state_dir/backlog/SINK/`).
    #[serde(default)]
    pub backlog: BacklogSection,
    /// While the sink is `down`: the longest wait between two probes of its receiver. At least
    /// 1ms. Default `60s`.
    #[serde(default = "default_max_probe_interval")]
    pub max_probe_interval: Delay,
    /// Largest body a template may render; over it the event is dead-lettered. Default 1 MiB per
    /// event of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<Positive>,
}

/// A webhook's one URL: `http://` or `https://`, with a host and a target a request line can carry.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(pub SecretUrl);

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let urls = Urls::deserialize(d)?;
        let url = match urls.0.as_slice() {
            [] => return Err(D::Error::custom("a webhook sink needs a url")),
            [url] => url.clone(),
            _ => return Err(D::Error::custom("a webhook sink takes one url")),
        };
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(D::Error::custom(format!(
                "{url} is not an http:// or https:// URL"
            )));
        }
        if url.target().parse::<http::Uri>().is_err() {
            return Err(D::Error::custom(format!(
                "{url} has characters an HTTP request line cannot carry; percent-encode them"
            )));
        }
        Ok(WebhookUrl(url))
    }
}

/// NATS servers: one or more `nats://` or `tls://` URLs.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct NatsUrls(pub Vec<SecretUrl>);

impl<'de> Deserialize<'de> for NatsUrls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let urls = Urls::deserialize(d)?;
        if urls.0.is_empty() {
            return Err(D::Error::custom(
                "a nats sink needs a url (nats://HOST:4222, or a list)",
            ));
        }
        if let Some(u) = urls
            .0
            .iter()
            .find(|u| !matches!(u.scheme(), "nats" | "tls") || !u.has_host())
        {
            return Err(D::Error::custom(format!(
                "{u} is not a nats:// or tls:// URL"
            )));
        }
        Ok(NatsUrls(urls.0))
    }
}

impl WebhookSink {
    fn check(&self) -> Result<(), Located> {
        let authorization = self
            .headers
            .keys()
            .any(|h| h.eq_ignore_ascii_case("authorization"));
        if self.url.0.credentials().is_some() && authorization {
            return Err(Located::at(
                "url",
                "has user info (sent as Basic auth) and headers has Authorization too; keep one",
            ));
        }
        cert_with_key(self.cert_file.as_ref(), self.key_file.as_ref())
    }
}

/// A client certificate (`cert_file`) and its key (`key_file`) go together.
pub(super) fn cert_with_key(cert: Option<&PathBuf>, key: Option<&PathBuf>) -> Result<(), Located> {
    match (cert, key) {
        (Some(_), None) => Err(Located::at("key_file", "cert_file needs its key_file")),
        (None, Some(_)) => Err(Located::at("cert_file", "key_file needs its cert_file")),
        _ => Ok(()),
    }
}

impl NatsSink {
    /// Servers, a subject, at most one way to authenticate.
    fn check(&self) -> Result<(), Located> {
        if self.subject.trim().is_empty() {
            return Err(Located::at("subject", SinkType::Nats.required()[1].1));
        }
        let ways: Vec<&str> = [
            ("token", self.token.is_some()),
            ("user", self.user.is_some() || self.password.is_some()),
            ("creds_file", self.creds_file.is_some()),
            ("nkey_seed_file", self.nkey_seed_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if ways.len() > 1 {
            return Err(Located::at(
                ways[1],
                format!("set one way to authenticate, not {}", ways.join(" and ")),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(Located::at("password", "user and password go together"));
        }
        if self.url.0.iter().any(|u| u.credentials().is_some()) && !ways.is_empty() {
            return Err(Located::at(
                "url",
                format!("has user info and {} is set too; keep one", ways[0]),
            ));
        }
        cert_with_key(self.cert_file.as_ref(), self.key_file.as_ref())
    }
}

impl SinkCommon {
    fn check(&self) -> Result<(), Located> {
        if self.signing_secret.is_some() && self.signing_secret_file.is_some() {
            return Err(Located::at(
                "signing_secret_file",
                "set either signing_secret or signing_secret_file",
            ));
        }
        if self.backlog.max_bytes.0 < 64 * 1024 {
            return Err(Located {
                path: vec!["backlog".into(), "max_bytes".into()],
                message: "must be at least 64KiB".into(),
            });
        }
        Ok(())
    }
}

impl SinkSection {
    /// Reads one item of `sinks`.
    fn parse(value: &Value) -> Result<SinkSection, Located> {
        let mut keys = item::keys_of_item(value)?;
        let name: Name = item::take(&mut keys, "name")?
            .ok_or_else(|| Located::at("name", "missing field `name`"))?;
        let kind: SinkType = item::take(&mut keys, "type")?.unwrap_or_default();
        let common_keys = item::keys_taken::<SinkCommon>();
        let common = item::split_off(&mut keys, common_keys);
        let kinds: Vec<(&str, Vec<&'static str>)> = SinkType::ALL
            .iter()
            .map(|t| {
                let mut all = vec!["name", "type"];
                all.extend_from_slice(common_keys);
                all.extend_from_slice(t.own_keys());
                (t.as_str(), all)
            })
            .collect();
        let unknown = |key: &str| item::unknown_key(key, kind.as_str(), "sink", &kinds);
        if let Some(key) = keys.keys().find(|k| !kind.own_keys().contains(&k.as_str())) {
            return Err(Located::at(key, unknown(key)));
        }
        if let Some((key, why)) = kind.required().iter().find(|(k, _)| !keys.contains_key(*k)) {
            return Err(Located::at(key, *why));
        }
        let kind = match kind {
            SinkType::Webhook => {
                let hook: WebhookSink = item::read(keys, &unknown)?;
                hook.check()?;
                SinkKind::Webhook(Box::new(hook))
            }
            SinkType::Stdout => SinkKind::Stdout(item::read(keys, &unknown)?),
            SinkType::File => SinkKind::File(item::read(keys, &unknown)?),
            SinkType::Nats => {
                let bus: NatsSink = item::read(keys, &unknown)?;
                bus.check()?;
                SinkKind::Nats(bus)
            }
            SinkType::Kafka => {
                let bus: KafkaSink = item::read(keys, &unknown)?;
                bus.check()?;
                SinkKind::Kafka(bus)
            }
        };
        let common: SinkCommon = item::read(common, &|key| format!("unknown key `{key}`"))?;
        common.check()?;
        Ok(SinkSection { name, kind, common })
    }

    /// The limit on a rendered body (`max_body_bytes`, default 1 MiB per event of a request).
    pub fn body_limit(&self) -> usize {
        let limit = self.common.max_body_bytes.map_or(
            DEFAULT_BODY_BYTES.saturating_mul(u64::from(self.common.batch.max_events.0)),
            |n| n.0,
        );
        usize::try_from(limit).unwrap_or(usize::MAX)
    }

    /// The statuses tried again: a webhook's `retry_on`; other kinds answer no statuses.
    pub fn retry_on(&self) -> RetryOn {
        match &self.kind {
            SinkKind::Webhook(hook) => hook.retry_on.clone(),
            _ => RetryOn::default(),
        }
    }

    /// A webhook's `max_retry_after`; the default for other kinds (which see no `Retry-After`).
    pub fn max_retry_after(&self) -> Duration {
        match &self.kind {
            SinkKind::Webhook(hook) => hook.max_retry_after,
            _ => default_max_retry_after(),
        }
    }

    /// The configured headers of a webhook or NATS sink.
    pub fn headers(&self) -> Option<&BTreeMap<String, Secret>> {
        match &self.kind {
            SinkKind::Webhook(hook) => Some(&hook.headers),
            SinkKind::Nats(bus) => Some(&bus.headers),
            SinkKind::Kafka(bus) => Some(&bus.headers),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for SinkSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = <Value as Deserialize>::deserialize(d)?;
        SinkSection::parse(&value).map_err(Located::into_serde)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    #[default]
    Flipt,
    StandardWebhooks,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Events per request; above 1 the body is a JSON array (or the template's `events`). Default 1.
    #[serde(default)]
    pub max_events: Count,
    /// How long a batch waits to fill up. Default `0s`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "super::schema::Duration")]
    pub linger: Duration,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_events: Count::ONE,
            linger: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacklogSection {
    /// What the sink's backlog may hold on disk; at least 64KiB. Default `256MiB`.
    #[serde(default = "default_backlog_bytes")]
    pub max_bytes: ByteSize,
    /// What happens when it is full. Default `dead_letter`.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for BacklogSection {
    fn default() -> Self {
        BacklogSection {
            max_bytes: default_backlog_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

/// What a sink does when its backlog is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The oldest waiting events go to the dead-letter file (replayed by themselves once the sink
    /// delivers again, with `dead_letter.auto_replay`), making room for the new.
    #[default]
    DeadLetter,
    /// The sources feeding this sink wait until there is room.
    Block,
}

fn events<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EventPattern>, D::Error> {
    super::values::non_empty(d, "an empty list would drop every event; omit it for all")
}

fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Schedule>, D::Error> {
    let schedule = Schedule::deserialize(d)?;
    if schedule.0.is_empty() {
        return Err(serde::de::Error::custom(
            "an empty list would never retry; omit it for exponential backoff",
        ));
    }
    Ok(Some(schedule))
}

fn default_backlog_bytes() -> ByteSize {
    ByteSize(256 * 1024 * 1024)
}
fn default_max_probe_interval() -> Delay {
    Delay(Duration::from_secs(60))
}
fn yes() -> bool {
    true
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
fn default_initial_backoff() -> Delay {
    Delay(Duration::from_millis(500))
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
