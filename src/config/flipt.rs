//! `--flipt-config`: a Flipt `config.yml` read as flagtail config, so a Flipt user starts from the
//! file they already have.
//!
//! Only `audit` is read; every other section is Flipt's own business. `audit.sinks.log.file`
//! becomes the file source `flipt-log` (format `flipt`); `audit.sinks.webhook.url` (with
//! `signing_secret`, `max_backoff_duration`) the sink `flipt-webhook`, signed as Flipt signs;
//! each of `audit.sinks.webhook.templates[]` the sink `flipt-template-N` (N from 1) with its
//! `url`, `headers` and its body translated from Go's template language ([`super::gotemplate`]);
//! `audit.events` every one of those sinks' `events`. Flipt's environment overrides of these keys
//! (`FLIPT_AUDIT_SINKS_WEBHOOK_SIGNING_SECRET`, …) apply, as they do for Flipt. `${VAR}` in a value
//! is filled from the environment as everywhere in flagtail's config.
//!
//! The result is a list of source and sink sections in flagtail's own shape, appended to
//! flagtail's config (or standing alone), so every check of flagtail's config applies to them;
//! [`Origin`]s turn the keys of their problems back into the Flipt keys the user wrote.

use super::gotemplate;
use figment::Figment;
use figment::providers::{Env, Format as _, Toml, Yaml};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// Name of the source made from `audit.sinks.log.file`.
pub const LOG_SOURCE: &str = "flipt-log";
/// Name of the sink made from `audit.sinks.webhook.url`.
pub const WEBHOOK_SINK: &str = "flipt-webhook";

/// Flipt's environment variables for the keys read here (viper's `FLIPT_` + key with `_`).
const ENV_KEYS: &[(&str, &str)] = &[
    ("AUDIT_SINKS_LOG_ENABLED", "audit.sinks.log.enabled"),
    ("AUDIT_SINKS_LOG_FILE", "audit.sinks.log.file"),
    ("AUDIT_SINKS_WEBHOOK_ENABLED", "audit.sinks.webhook.enabled"),
    ("AUDIT_SINKS_WEBHOOK_URL", "audit.sinks.webhook.url"),
    (
        "AUDIT_SINKS_WEBHOOK_SIGNING_SECRET",
        "audit.sinks.webhook.signing_secret",
    ),
    (
        "AUDIT_SINKS_WEBHOOK_MAX_BACKOFF_DURATION",
        "audit.sinks.webhook.max_backoff_duration",
    ),
    ("AUDIT_EVENTS", "audit.events"),
    ("AUDIT_SINKS_KAFKA_ENABLED", "audit.sinks.kafka.enabled"),
    ("AUDIT_SINKS_KAFKA_TOPIC", "audit.sinks.kafka.topic"),
    (
        "AUDIT_SINKS_KAFKA_BOOTSTRAP_SERVERS",
        "audit.sinks.kafka.bootstrap_servers",
    ),
    ("AUDIT_SINKS_KAFKA_ENCODING", "audit.sinks.kafka.encoding"),
    (
        "AUDIT_SINKS_KAFKA_REQUIRE_TLS",
        "audit.sinks.kafka.require_tls",
    ),
    (
        "AUDIT_SINKS_KAFKA_INSECURE_SKIP_TLS",
        "audit.sinks.kafka.insecure_skip_tls",
    ),
    (
        "AUDIT_SINKS_KAFKA_AUTHENTICATION_USERNAME",
        "audit.sinks.kafka.authentication.username",
    ),
    (
        "AUDIT_SINKS_KAFKA_AUTHENTICATION_PASSWORD",
        "audit.sinks.kafka.authentication.password",
    ),
    (
        "AUDIT_SINKS_KAFKA_SCHEMA_REGISTRY_URL",
        "audit.sinks.kafka.schema_registry.url",
    ),
    ("TRACING_ENABLED", "tracing.enabled"),
];

/// Name of the sink made from `audit.sinks.kafka`.
pub const KAFKA_SINK: &str = "flipt-kafka";

/// Flipt's `audit` section: only the keys flagtail uses; the others are ignored.
#[derive(Debug, Default, Deserialize)]
struct Audit {
    #[serde(default)]
    sinks: Sinks,
    #[serde(default, deserialize_with = "words")]
    events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct Sinks {
    #[serde(default)]
    log: LogSink,
    #[serde(default)]
    webhook: WebhookSink,
    #[serde(default)]
    kafka: KafkaSink,
}

/// Flipt's `audit.sinks.kafka` (Flipt 1.61: records keyed by the event type).
#[derive(Debug, Default, Deserialize)]
struct KafkaSink {
    #[serde(default, deserialize_with = "flag")]
    enabled: bool,
    #[serde(default, deserialize_with = "text")]
    topic: Option<String>,
    #[serde(default, deserialize_with = "words")]
    bootstrap_servers: Option<Vec<String>>,
    /// `protobuf` (Flipt's default) or `avro`.
    #[serde(default, deserialize_with = "text")]
    encoding: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    require_tls: bool,
    #[serde(default, deserialize_with = "flag")]
    insecure_skip_tls: bool,
    #[serde(default)]
    authentication: Option<KafkaLogin>,
    #[serde(default)]
    schema_registry: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct KafkaLogin {
    #[serde(default, deserialize_with = "text")]
    username: Option<String>,
    #[serde(default, deserialize_with = "text")]
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct LogSink {
    #[serde(default, deserialize_with = "flag")]
    enabled: bool,
    #[serde(default, deserialize_with = "text")]
    file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WebhookSink {
    #[serde(default, deserialize_with = "flag")]
    enabled: bool,
    #[serde(default, deserialize_with = "text")]
    url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    signing_secret: Option<String>,
    #[serde(default, deserialize_with = "text")]
    max_backoff_duration: Option<String>,
    #[serde(default)]
    templates: Vec<Template>,
}

#[derive(Debug, Deserialize)]
struct Template {
    #[serde(default, deserialize_with = "text")]
    url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A source or sink section made from the Flipt config.
#[derive(Debug)]
pub struct Section {
    /// In flagtail's shape (`{"name": …, "url": …}`).
    pub value: Value,
    /// The Flipt key it was made from (`audit.sinks.webhook.templates.0`).
    pub flipt_key: String,
    /// Keys of the section that came from elsewhere in the Flipt config (`events` from
    /// `audit.events`), to name them as written.
    pub keys: Vec<(String, String)>,
}

impl Section {
    fn name(&self) -> &str {
        self.value["name"].as_str().unwrap_or_default()
    }
}

/// Where a section made from the Flipt config is in flagtail's, to name its Flipt keys in problems.
#[derive(Debug)]
pub struct Origin {
    /// The section's key in flagtail's config (`sinks.2`).
    pub key: String,
    pub name: String,
    pub flipt_key: String,
    pub keys: Vec<(String, String)>,
}

impl Origin {
    pub fn new(key: String, section: Section) -> Origin {
        Origin {
            key,
            name: section.name().to_string(),
            flipt_key: section.flipt_key,
            keys: section.keys,
        }
    }

    /// A problem about this section with its key as the Flipt key the user wrote
    /// (`sinks.3.url: …` → `audit.sinks.webhook.templates.0.url (flipt-template-1): …`); `None`
    /// for a problem about its name, which only flagtail chose (the clash is reported on the
    /// user's own section). The problem as it was when it is about another key.
    pub fn rename(&self, problem: &str) -> Option<Option<String>> {
        let end = problem.find([':', ' ']).unwrap_or(problem.len());
        let (key, rest) = problem.split_at(end);
        let sub = key.strip_prefix(&self.key)?;
        if !(sub.is_empty() || sub.starts_with('.')) {
            return None;
        }
        let mut parts = sub.trim_start_matches('.').splitn(2, '.');
        let (first, more) = (parts.next().unwrap_or(""), parts.next());
        if first == "name" {
            return Some(None);
        }
        let flipt = match self.keys.iter().find(|(k, _)| k == first) {
            Some((_, flipt)) => match more {
                Some(more) => format!("{flipt}.{more}"),
                None => flipt.clone(),
            },
            None => format!("{}{sub}", self.flipt_key),
        };
        let rest = rest
            .strip_prefix(&format!(" (sink {})", self.name))
            .or_else(|| rest.strip_prefix(&format!(" (source {})", self.name)))
            .unwrap_or(rest);
        Some(Some(format!("{flipt} ({}){rest}", self.name)))
    }
}

/// Sections made from a Flipt config, to be appended to flagtail's.
#[derive(Debug, Default)]
pub struct Translated {
    pub sources: Vec<Section>,
    pub sinks: Vec<Section>,
    /// What was not carried over, for the log and `check`.
    pub notes: Vec<String>,
}

/// Reads the `audit` section of the Flipt config at `path` into flagtail sections. Problems name
/// the Flipt key.
pub fn read(path: &Path) -> Result<Translated, Vec<String>> {
    if !path.is_file() {
        return Err(vec![format!(
            "--flipt-config: cannot read {}: no such file",
            path.display()
        )]);
    }
    let file = if path.extension().is_some_and(|e| e == "toml") {
        Figment::from(Toml::file_exact(path))
    } else {
        Figment::from(Yaml::file_exact(path))
    };
    let figment = file.merge(Env::prefixed("FLIPT_").filter_map(|key| {
        ENV_KEYS
            .iter()
            .find(|(var, _)| key == *var)
            .map(|(_, key)| (*key).into())
    }));
    let problems = |e: figment::Error| {
        e.into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let at = if key.is_empty() {
                    format!("--flipt-config {}", path.display())
                } else {
                    key
                };
                format!("{at}: {}", e.kind)
            })
            .collect::<Vec<_>>()
    };
    // The whole file first: one that does not parse is an error, never "no audit section".
    let whole: figment::value::Dict = figment.extract().map_err(problems)?;
    let audit: Audit = match whole.contains_key("audit") {
        false => Audit::default(),
        true => figment.extract_inner("audit").map_err(problems)?,
    };
    let sinks = &audit.sinks;
    let audit_on = sinks.log.enabled || sinks.webhook.enabled || sinks.kafka.enabled;
    let tracing: Tracing = figment.extract_inner("tracing").unwrap_or_default();
    let mut translated = translate(audit)?;
    if audit_on && !tracing.enabled {
        translated.notes.push(TRACING_OFF.into());
    }
    Ok(translated)
}

/// Why a Flipt config with audit sinks and tracing off gets a warning.
pub const TRACING_OFF: &str = "audit sinks are enabled but tracing.enabled is false: Flipt 1.61.1 emits no audit events at all unless tracing is enabled (flipt-io/flipt #6279, fixed after that release); set tracing.enabled: true in the Flipt config";

/// Flipt's `tracing` section: only `enabled`.
#[derive(Debug, Default, Deserialize)]
struct Tracing {
    #[serde(default, deserialize_with = "flag")]
    enabled: bool,
}

/// A value from the Flipt config as flagtail's config must hold it: Flipt fills a value that is
/// entirely `${VAR}` from the environment and leaves any other `${` as it is, where flagtail would
/// fill every `${…}`; so only the whole-value form is left for flagtail to fill.
fn as_written(value: &str) -> Value {
    // Flipt's pattern: `^\$\{([a-zA-Z_]+[a-zA-Z0-9_]*)}$`.
    let whole = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(|name| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if whole {
        Value::String(value.to_string())
    } else {
        Value::String(value.replace("${", "$${"))
    }
}

fn translate(audit: Audit) -> Result<Translated, Vec<String>> {
    let mut out = Translated::default();
    let mut problems = Vec::new();
    let shared = Shared {
        audit: &audit,
        from_log: log_source(&audit.sinks.log, &mut out),
    };
    translate_kafka(&audit, shared.from_log, &mut out, &mut problems);
    let hook = &audit.sinks.webhook;
    if hook.enabled {
        url_sink(hook, &shared, &mut out, &mut problems);
        if !hook.templates.is_empty() && hook.signing_secret.is_some() {
            out.notes.push(
                "audit.sinks.webhook.signing_secret is not used with templates (nor is it by Flipt)"
                    .into(),
            );
        }
        for (i, t) in hook.templates.iter().enumerate() {
            out.sinks.push(template_sink(i, t, &shared, &mut problems));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The source made from `audit.sinks.log` (its file, format `flipt`), if it names a file; true if
/// one was made.
fn log_source(log: &LogSink, out: &mut Translated) -> bool {
    match (log.enabled, log.file.as_deref()) {
        (true, Some(file)) if !file.is_empty() => {
            out.sources.push(Section {
                value: json!({"name": LOG_SOURCE, "file": as_written(file), "format": "flipt"}),
                flipt_key: "audit.sinks.log".into(),
                keys: vec![("file".into(), "audit.sinks.log.file".into())],
            });
            true
        }
        (true, _) => {
            out.notes.push(
                "audit.sinks.log has no file (Flipt writes to stdout): no source is made from it"
                    .into(),
            );
            false
        }
        (false, _) => {
            out.notes.push(
                "audit.sinks.log is not enabled: no source is made from the Flipt config".into(),
            );
            false
        }
    }
}

/// What every sink made from the Flipt config shares: Flipt's events filter, retry budget, and
/// (when the Flipt config names a log file) only that log's events, as Flipt's own sinks only
/// see Flipt's.
struct Shared<'a> {
    audit: &'a Audit,
    /// Whether a source was made from `audit.sinks.log`.
    from_log: bool,
}

impl Shared<'_> {
    fn add_to(&self, sink: &mut serde_json::Map<String, Value>, keys: &mut Vec<(String, String)>) {
        if let Some(events) = &self.audit.events {
            let events: Vec<Value> = events.iter().map(|e| as_written(e)).collect();
            sink.insert("events".into(), Value::Array(events));
            keys.push(("events".into(), "audit.events".into()));
        }
        if let Some(d) = &self.audit.sinks.webhook.max_backoff_duration {
            sink.insert("max_backoff_duration".into(), as_written(d));
            keys.push((
                "max_backoff_duration".into(),
                "audit.sinks.webhook.max_backoff_duration".into(),
            ));
        }
        if self.from_log {
            sink.insert("sources".into(), json!([LOG_SOURCE]));
        }
    }
}

/// The sink made from `audit.sinks.webhook.url` (Flipt's body, signed as Flipt signs).
fn url_sink(
    hook: &WebhookSink,
    shared: &Shared<'_>,
    out: &mut Translated,
    problems: &mut Vec<String>,
) {
    match (&hook.url, hook.templates.is_empty()) {
        (Some(url), true) if !url.is_empty() => {
            let mut sink = serde_json::Map::new();
            let mut keys = Vec::new();
            sink.insert("name".into(), json!(WEBHOOK_SINK));
            sink.insert("url".into(), as_written(url));
            if let Some(secret) = hook.signing_secret.as_ref().filter(|s| !s.is_empty()) {
                sink.insert("signing_secret".into(), as_written(secret));
                sink.insert("signature".into(), json!("flipt"));
            }
            shared.add_to(&mut sink, &mut keys);
            out.sinks.push(Section {
                value: Value::Object(sink),
                flipt_key: "audit.sinks.webhook".into(),
                keys,
            });
        }
        (Some(url), false) if !url.is_empty() => problems.push(
            "audit.sinks.webhook: only one of url or templates is allowed (as in Flipt)".into(),
        ),
        (_, true) => {
            problems.push("audit.sinks.webhook: enabled, but has neither url nor templates".into())
        }
        _ => {}
    }
}

/// The sink `flipt-template-N` made from `audit.sinks.webhook.templates[i]`: its url, headers
/// (`Content-Type` as `content_type`) and its Go template body translated to Tera.
fn template_sink(
    i: usize,
    t: &Template,
    shared: &Shared<'_>,
    problems: &mut Vec<String>,
) -> Section {
    let at = format!("audit.sinks.webhook.templates.{i}");
    let name = format!("flipt-template-{}", i + 1);
    let mut sink = serde_json::Map::new();
    let mut keys = Vec::new();
    sink.insert("name".into(), json!(name));
    match &t.url {
        Some(url) => {
            sink.insert("url".into(), as_written(url));
        }
        None => problems.push(format!("{at}.url ({name}): a template needs a url")),
    }
    let mut headers = t.headers.clone();
    let content_type = headers
        .keys()
        .find(|k| k.eq_ignore_ascii_case("content-type"))
        .cloned();
    if let Some(key) = content_type
        && let Some(value) = headers.remove(&key)
    {
        sink.insert("content_type".into(), as_written(&value));
        keys.push(("content_type".into(), format!("{at}.headers.{key}")));
    }
    if !headers.is_empty() {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), as_written(v)))
            .collect();
        sink.insert("headers".into(), Value::Object(headers));
    }
    match gotemplate::translate(t.body.as_deref().unwrap_or("")) {
        Ok(body) => {
            sink.insert("body".into(), as_written(&body));
        }
        Err(e) => problems.push(format!(
            "{at}.body ({name}): the Go template construct {:?} cannot be translated: {}",
            e.construct, e.reason
        )),
    }
    shared.add_to(&mut sink, &mut keys);
    Section {
        value: Value::Object(sink),
        flipt_key: at,
        keys,
    }
}

/// `audit.sinks.kafka`, when enabled, as the sink `flipt-kafka` with Flipt's defaults: encoding
/// `protobuf`, key `{{ type }}`, SASL SCRAM-SHA-256 for `authentication`, TLS for `require_tls`.
/// What flagtail cannot do as Flipt does (Avro, a schema registry, skipping TLS verification) is
/// a problem naming its key, never a sink that writes something else.
fn translate_kafka(
    audit: &Audit,
    from_log: bool,
    out: &mut Translated,
    problems: &mut Vec<String>,
) {
    let k = &audit.sinks.kafka;
    if !k.enabled {
        return;
    }
    let at = "audit.sinks.kafka";
    let mut sink = serde_json::Map::new();
    sink.insert("name".into(), json!(KAFKA_SINK));
    sink.insert("type".into(), json!("kafka"));
    match k.encoding.as_deref().unwrap_or("protobuf") {
        "protobuf" => sink.insert("encoding".into(), json!("protobuf")),
        other => {
            problems.push(format!("{at}.encoding: {other:?} is not carried over: flagtail writes protobuf (Flipt's default) or json, not Avro"));
            None
        }
    };
    if let Some(topic) = &k.topic {
        sink.insert("topic".into(), as_written(topic));
    }
    if let Some(servers) = &k.bootstrap_servers {
        let servers: Vec<Value> = servers.iter().map(|s| as_written(s)).collect();
        sink.insert("bootstrap_servers".into(), Value::Array(servers));
    }
    if k.require_tls {
        sink.insert("tls".into(), json!(true));
    }
    if k.insecure_skip_tls {
        problems.push(format!("{at}.insecure_skip_tls: flagtail always verifies the broker's certificate; give its CA in a flagtail sink's ca_file instead"));
    }
    if k.schema_registry.as_ref().is_some_and(|r| !r.is_empty()) {
        problems.push(format!("{at}.schema_registry: not supported: flagtail writes plain protobuf records without a registry's schema id"));
    }
    if let Some(login) = &k.authentication {
        let user = login.username.as_deref().map_or(json!(""), as_written);
        let password = login.password.as_deref().map_or(json!(""), as_written);
        sink.insert(
            "sasl".into(),
            json!({"mechanism": "SCRAM-SHA-256", "username": user, "password": password}),
        );
    }
    let mut keys = vec![
        ("sasl".to_string(), format!("{at}.authentication")),
        ("tls".to_string(), format!("{at}.require_tls")),
    ];
    if let Some(events) = &audit.events {
        let events: Vec<Value> = events.iter().map(|e| as_written(e)).collect();
        sink.insert("events".into(), Value::Array(events));
        keys.push(("events".into(), "audit.events".into()));
    }
    if from_log {
        sink.insert("sources".into(), json!([LOG_SOURCE]));
    }
    out.sinks.push(Section {
        value: Value::Object(sink),
        flipt_key: at.into(),
        keys,
    });
}

/// A `true`/`false` that may also be written as text (`"true"`), as Flipt's viper allows.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Bool(b) => Ok(b),
        Scalar::Text(t) if t.eq_ignore_ascii_case("true") => Ok(true),
        Scalar::Text(t) if t.eq_ignore_ascii_case("false") || t.is_empty() => Ok(false),
        _ => Err(serde::de::Error::custom("expected true or false")),
    }
}

/// Any scalar as text (an environment variable of digits arrives as a number).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match Scalar::deserialize(d)? {
        Scalar::Text(t) => t,
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
    }))
}

/// A list of strings, or one string of words (`FLIPT_AUDIT_EVENTS="flag:* segment:created"`).
fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Words {
        List(Vec<String>),
        Text(String),
    }
    Ok(Some(match Words::deserialize(d)? {
        Words::List(l) => l,
        Words::Text(t) => t
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(yaml: &str) -> Audit {
        Figment::from(Yaml::string(yaml))
            .extract_inner("audit")
            .unwrap()
    }

    #[test]
    fn log_webhook_and_templates_become_sections() {
        let t = translate(audit(
            r#"
audit:
  events: ["flag:*"]
  buffer: {capacity: 2}
  sinks:
    log: {enabled: true, file: /var/log/flipt/audit.log, encoding: json}
    webhook:
      enabled: "true"
      max_backoff_duration: 30s
      templates:
        - url: https://hooks.slack.com/x
          headers: {Content-Type: application/json, X-Team: core}
          body: '{"text": "{{ .Type }}"}'
"#,
        ))
        .unwrap();
        assert_eq!(
            t.sources[0].value,
            json!({"name": "flipt-log", "file": "/var/log/flipt/audit.log", "format": "flipt"})
        );
        assert_eq!(
            t.sinks[0].value,
            json!({"name": "flipt-template-1", "url": "https://hooks.slack.com/x",
                   "content_type": "application/json", "headers": {"X-Team": "core"},
                   "body": "{\"text\": \"{{ type }}\"}", "events": ["flag:*"],
                   "max_backoff_duration": "30s", "sources": ["flipt-log"]})
        );
        assert_eq!(t.sinks[0].flipt_key, "audit.sinks.webhook.templates.0");
    }

    #[test]
    fn kafka_becomes_flipt_kafka_and_what_flagtail_cannot_do_is_refused_by_key() {
        let t = translate(audit(
            "audit:\n  sinks:\n    kafka:\n      enabled: true\n      topic: audit\n      bootstrap_servers: [\"k:9092\"]\n      require_tls: true\n      authentication: {username: u, password: \"${PW}\"}\n",
        ))
        .unwrap();
        assert_eq!(
            t.sinks[0].value,
            json!({"name": "flipt-kafka", "type": "kafka", "encoding": "protobuf",
                   "topic": "audit", "bootstrap_servers": ["k:9092"], "tls": true,
                   "sasl": {"mechanism": "SCRAM-SHA-256", "username": "u", "password": "${PW}"}})
        );
        let problems = translate(audit(
            "audit:\n  sinks:\n    kafka: {enabled: true, topic: a, bootstrap_servers: [\"k:1\"], encoding: avro, insecure_skip_tls: true, schema_registry: {url: \"http://r\"}}\n",
        ))
        .unwrap_err();
        for key in ["encoding", "insecure_skip_tls", "schema_registry"] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with(&format!("audit.sinks.kafka.{key}:"))),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn only_a_whole_dollar_brace_value_is_filled_as_in_flipt() {
        assert_eq!(as_written("${SLACK_URL}"), json!("${SLACK_URL}"));
        assert_eq!(as_written("Bearer ${TOKEN}"), json!("Bearer $${TOKEN}"));
        assert_eq!(as_written("${A-B}"), json!("$${A-B}"));
        assert_eq!(as_written("price ${{ .x }}"), json!("price $${{ .x }}"));
    }

    #[test]
    fn url_and_templates_together_or_a_range_are_refused_by_key() {
        let e = translate(audit(
            "audit: {sinks: {webhook: {enabled: true, url: 'http://x', templates: [{url: 'http://y', body: '{{ range .Payload }}{{ end }}'}]}}}",
        ))
        .unwrap_err();
        assert!(e[0].contains("only one of url or templates"), "{e:?}");
        assert!(
            e[1].starts_with("audit.sinks.webhook.templates.0.body (flipt-template-1)")
                && e[1].contains("\"range\""),
            "{e:?}"
        );
    }
}
