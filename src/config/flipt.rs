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
];

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
    kafka: Toggle,
}

#[derive(Debug, Default, Deserialize)]
struct Toggle {
    #[serde(default, deserialize_with = "flag")]
    enabled: bool,
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

/// Where a section made from the Flipt config came from, to name it in problems.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The section's key in flagtail's config (`sinks.2`).
    pub key: String,
    /// The Flipt key it was made from (`audit.sinks.webhook.templates.0`).
    pub flipt_key: String,
    /// The section's name (`flipt-template-1`).
    pub name: String,
}

/// Sections made from a Flipt config, to be appended to flagtail's.
#[derive(Debug, Default)]
pub struct Translated {
    /// Each with the Flipt key it came from.
    pub sources: Vec<(Value, String)>,
    pub sinks: Vec<(Value, String)>,
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
    let audit: Audit = match figment.find_value("audit") {
        Err(_) => Audit::default(),
        Ok(_) => figment.extract_inner("audit").map_err(|e| {
            e.into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    format!(
                        "{}: {}",
                        if key.is_empty() { "audit".into() } else { key },
                        e.kind
                    )
                })
                .collect::<Vec<_>>()
        })?,
    };
    translate(audit)
}

fn translate(audit: Audit) -> Result<Translated, Vec<String>> {
    let mut out = Translated::default();
    let mut problems = Vec::new();
    let log = &audit.sinks.log;
    let from_log = match (log.enabled, log.file.as_deref()) {
        (true, Some(file)) if !file.is_empty() => {
            out.sources.push((
                json!({"name": LOG_SOURCE, "file": file, "format": "flipt"}),
                "audit.sinks.log.file".into(),
            ));
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
    };
    if audit.sinks.kafka.enabled {
        out.notes
            .push("audit.sinks.kafka is not carried over: flagtail has no Kafka sink".into());
    }
    let hook = &audit.sinks.webhook;
    // What every sink made here shares: Flipt's events filter, retry budget, and (when the Flipt
    // config names a log file) only that log's events, as Flipt's own sinks only see Flipt's.
    let common = |sink: &mut serde_json::Map<String, Value>| {
        if let Some(events) = &audit.events {
            sink.insert("events".into(), json!(events));
        }
        if let Some(d) = &hook.max_backoff_duration {
            sink.insert("max_backoff_duration".into(), json!(d));
        }
        if from_log {
            sink.insert("sources".into(), json!([LOG_SOURCE]));
        }
    };
    if hook.enabled {
        match (&hook.url, hook.templates.is_empty()) {
            (Some(url), true) if !url.is_empty() => {
                let mut sink = serde_json::Map::new();
                sink.insert("name".into(), json!(WEBHOOK_SINK));
                sink.insert("url".into(), json!(url));
                if let Some(secret) = hook.signing_secret.as_ref().filter(|s| !s.is_empty()) {
                    sink.insert("signing_secret".into(), json!(secret));
                    sink.insert("signature".into(), json!("flipt"));
                }
                common(&mut sink);
                out.sinks
                    .push((Value::Object(sink), "audit.sinks.webhook".into()));
            }
            (Some(url), false) if !url.is_empty() => problems.push(
                "audit.sinks.webhook: only one of url or templates is allowed (as in Flipt)".into(),
            ),
            (_, true) => problems
                .push("audit.sinks.webhook: enabled, but has neither url nor templates".into()),
            _ => {}
        }
        if !hook.templates.is_empty() && hook.signing_secret.is_some() {
            out.notes.push(
                "audit.sinks.webhook.signing_secret is not used with templates (nor is it by Flipt)"
                    .into(),
            );
        }
        for (i, t) in hook.templates.iter().enumerate() {
            let at = format!("audit.sinks.webhook.templates.{i}");
            let name = format!("flipt-template-{}", i + 1);
            let mut sink = serde_json::Map::new();
            sink.insert("name".into(), json!(name));
            match &t.url {
                Some(url) => {
                    sink.insert("url".into(), json!(url));
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
                sink.insert("content_type".into(), json!(value));
            }
            if !headers.is_empty() {
                sink.insert("headers".into(), json!(headers));
            }
            match gotemplate::translate(t.body.as_deref().unwrap_or("")) {
                Ok(body) => {
                    sink.insert("body".into(), json!(body));
                }
                Err(e) => problems.push(format!(
                    "{at}.body ({name}): the Go template construct {:?} cannot be translated: {}",
                    e.construct, e.reason
                )),
            }
            common(&mut sink);
            out.sinks.push((Value::Object(sink), at));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
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
            t.sources[0].0,
            json!({"name": "flipt-log", "file": "/var/log/flipt/audit.log", "format": "flipt"})
        );
        assert_eq!(
            t.sinks[0].0,
            json!({"name": "flipt-template-1", "url": "https://hooks.slack.com/x",
                   "content_type": "application/json", "headers": {"X-Team": "core"},
                   "body": "{\"text\": \"{{ type }}\"}", "events": ["flag:*"],
                   "max_backoff_duration": "30s", "sources": ["flipt-log"]})
        );
        assert_eq!(t.sinks[0].1, "audit.sinks.webhook.templates.0");
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
