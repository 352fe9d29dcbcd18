//! Loading the config: YAML or TOML file, then `FLAGTAIL_*` environment variables, then `${VAR}`
//! substitution, then checks that span several keys. Every error names its key.
//!
//! The result, [`Config`], is still only data; the running parts (sinks with compiled templates and
//! TLS clients, sources) are built from it by their own modules, so `flagtail check` can build them
//! and throw them away.

mod checks;
mod extract;
mod file;
pub mod flipt;
pub mod gotemplate;
mod interpolate;
mod item;
pub mod kafka;
pub mod policy;
mod reach;
mod schema;
pub mod scrub;
mod secret;
pub mod sink;
pub mod source;
mod values;

pub use file::{ConfigFile, JournalSection, LogFormat, LogSection};
pub use interpolate::Substituted;
pub use kafka::{KafkaEncoding, KafkaSink, SaslMechanism, SaslSection};
pub use reach::{Compression, OAuth2Section, ProxySetting, TlsSection, VerifyKey, verify_keys};
pub use schema::config_schema;
pub use scrub::Scrubber;
pub use secret::{OneOrMany, Secret, SecretUrl, Secrets, Urls};
pub use sink::{
    BatchSection, FileSink, NatsSink, SignatureScheme, SinkKind, SinkSection, SinkType,
    WebhookSink, WhenFull,
};
pub use source::{
    DEFAULT_BODY_BYTES, FileSource, HttpSource, ReadFrom, SocketSource, SourceKind, SourceSection,
    VerifyScheme,
};
pub use values::{ByteSize, Count, DEFAULT_CONNECTIONS, FileMode, Name};

use figment::Figment;
use figment::providers::{Env, Format as _, Toml, Yaml};
use figment::value::Dict;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The scalar keys that `FLAGTAIL_*` environment variables may override. Only these, so that a
/// user's own `FLAGTAIL_SECRET` (for `${FLAGTAIL_SECRET}`) is not taken for an unknown key.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("STATE_DIR", "state_dir"),
    ("MAX_LINE_BYTES", "max_line_bytes"),
    ("SHUTDOWN_GRACE", "shutdown_grace"),
    ("ADMIN__LISTEN", "admin.listen"),
    ("LOG__FORMAT", "log.format"),
    ("LOG__LEVEL", "log.level"),
];

/// Where a config comes from: flagtail's own file, a Flipt `config.yml` (`--flipt-config`), or
/// both (Flipt's sections are then added to flagtail's).
#[derive(Debug, Clone, Default)]
pub struct ConfigPaths {
    pub flagtail: Option<PathBuf>,
    pub flipt: Option<PathBuf>,
}

impl fmt::Display for ConfigPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.flagtail, &self.flipt) {
            (Some(a), Some(b)) => write!(f, "{} + Flipt config {}", a.display(), b.display()),
            (Some(a), None) => write!(f, "{}", a.display()),
            (None, Some(b)) => write!(f, "Flipt config {}", b.display()),
            (None, None) => f.write_str("(no config)"),
        }
    }
}

/// A config that parsed and passed every check.
#[derive(Debug)]
pub struct Config {
    /// The files it came from, for messages and SIGHUP reloads.
    pub paths: ConfigPaths,
    pub file: ConfigFile,
    /// Values that `${VAR}` substitution changed, by key path (`sinks.0.body`): `check` shows them
    /// as written instead of what the variables hold.
    pub written: BTreeMap<String, Substituted>,
    /// Sections made from the Flipt config, to name their Flipt keys in problems.
    pub origins: Vec<flipt::Origin>,
    /// What a Flipt config had that was not carried over; logged at start, printed by `check`.
    pub notes: Vec<String>,
}

/// Everything wrong with a config, one line per problem, each naming its key.
#[derive(Debug)]
pub struct ConfigError {
    pub paths: ConfigPaths,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}:", self.paths)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, substitutes and checks the config at `path`, reporting every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_from(&ConfigPaths {
            flagtail: Some(path.to_path_buf()),
            flipt: None,
        })
    }

    /// Reads flagtail's config, a Flipt config, or both (Flipt's sections added after flagtail's),
    /// then substitutes and checks the whole, reporting every problem found.
    pub fn load_from(paths: &ConfigPaths) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            paths: paths.clone(),
            problems,
        };
        let mut dict = read_files(paths).map_err(fail)?;
        let flipt = match &paths.flipt {
            Some(path) => add_flipt(&mut dict, path).map_err(fail)?,
            None => FromFlipt::default(),
        };
        let mut problems = Vec::new();
        let mut written = BTreeMap::new();
        interpolate::interpolate_dict(&mut dict, "", &mut problems, &mut written);
        if !problems.is_empty() {
            problems.extend(flipt.clashes);
            return Err(fail(
                problems
                    .into_iter()
                    .filter_map(|p| from_flipt(p, &flipt.origins))
                    .collect(),
            ));
        }
        let extracted = extract::extract_all(dict, &paths.to_string());
        let mut problems = extracted.problems;
        if let Some(file) = &extracted.file {
            // A value set aside above was already reported; checks that miss it would only repeat it.
            let set_aside = &extracted.set_aside;
            problems.extend(
                checks::cross_checks(file)
                    .into_iter()
                    .filter(|p| !set_aside.iter().any(|key| extract::under(p, key))),
            );
        }
        let problems: Vec<String> = problems
            .into_iter()
            .filter_map(|p| from_flipt(scrub(p, &written), &flipt.origins))
            .chain(flipt.clashes)
            .fold(Vec::new(), |mut seen, p| {
                if !seen.contains(&p) {
                    seen.push(p);
                }
                seen
            });
        match extracted.file {
            Some(file) if problems.is_empty() => Ok(Config {
                paths: paths.clone(),
                file,
                written,
                origins: flipt.origins,
                notes: flipt.notes,
            }),
            _ => Err(fail(problems)),
        }
    }

    /// Problems found later, while building from this config (templates, secret and CA files).
    pub fn error(&self, problems: Vec<String>) -> ConfigError {
        ConfigError {
            paths: self.paths.clone(),
            problems: problems
                .into_iter()
                .filter_map(|p| from_flipt(p, &self.origins))
                .collect(),
        }
    }

    /// The resolved config as `flagtail check` prints it: JSON, secrets as `***`, and values that
    /// came from `${VAR}` as written, so no variable's value is printed.
    pub fn to_redacted_json(&self) -> String {
        let mut value = serde_json::to_value(&self.file).unwrap_or_default();
        for (key, sub) in &self.written {
            let mut at = Some(&mut value);
            for part in key.split('.') {
                at = at.and_then(|v| match v {
                    serde_json::Value::Object(m) => m.get_mut(part),
                    serde_json::Value::Array(a) => {
                        part.parse::<usize>().ok().and_then(|i| a.get_mut(i))
                    }
                    _ => None,
                });
            }
            // Only where the key printed what the variable holds: secrets and URLs print their own
            // masked form, and what they were written as may hold a literal token.
            let shows_value = |v: &serde_json::Value| match v {
                serde_json::Value::String(text) => *text == sub.expanded,
                other => {
                    sub.expanded
                        .trim()
                        .parse::<serde_json::Value>()
                        .ok()
                        .as_ref()
                        == Some(other)
                }
            };
            if let Some(v) = at
                && shows_value(v)
            {
                *v = serde_json::Value::String(sub.written.clone());
            }
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

/// flagtail's own file (YAML or TOML) with the `FLAGTAIL_*` overrides, as one table of values.
fn read_files(paths: &ConfigPaths) -> Result<Dict, Vec<String>> {
    let mut figment = Figment::new();
    if let Some(path) = &paths.flagtail {
        if !path.is_file() {
            return Err(vec![format!(
                "cannot read {}: no such file",
                path.display()
            )]);
        }
        figment = if path.extension().is_some_and(|e| e == "toml") {
            figment.merge(Toml::file_exact(path))
        } else {
            figment.merge(Yaml::file_exact(path))
        };
    }
    figment = figment.merge(Env::prefixed("FLAGTAIL_").filter_map(|key| {
        ENV_KEYS
            .iter()
            .find(|(var, _)| key == *var)
            .map(|(_, key)| (*key).into())
    }));
    figment.extract().map_err(extract::figment_problems)
}

/// What a Flipt config added: where its sections went, what was not carried over, and names of
/// the user's own that clash with the names given to them.
#[derive(Default)]
struct FromFlipt {
    origins: Vec<flipt::Origin>,
    notes: Vec<String>,
    clashes: Vec<String>,
}

/// Adds the sources and sinks made from the Flipt config at `path` to `dict`.
fn add_flipt(dict: &mut Dict, path: &Path) -> Result<FromFlipt, Vec<String>> {
    let translated = flipt::read(path)?;
    let mut clashes = Vec::new();
    let mut origins = append_sections(dict, translated.sources, "sources", &mut clashes);
    origins.extend(append_sections(
        dict,
        translated.sinks,
        "sinks",
        &mut clashes,
    ));
    Ok(FromFlipt {
        origins,
        notes: translated.notes,
        clashes,
    })
}

/// Appends sections made from the Flipt config to the list at `list` (`sources` or `sinks`), and
/// says where each now is. A section of the user's own with a name flagtail gives one of them is a
/// problem of that section.
fn append_sections(
    dict: &mut Dict,
    sections: Vec<flipt::Section>,
    list: &str,
    problems: &mut Vec<String>,
) -> Vec<flipt::Origin> {
    use figment::value::Value;
    let Value::Array(_, items) = dict
        .entry(list.to_string())
        .or_insert_with(|| Value::from(Vec::<Value>::new()))
    else {
        // Not a list: extraction reports it, and the Flipt sections have nowhere to go.
        return Vec::new();
    };
    let mut origins = Vec::new();
    for section in sections {
        let name = section.value["name"].as_str().unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            if item.find_ref("name").and_then(|n| n.as_str()) == Some(name) {
                problems.push(format!(
                    "{list}.{i}.name: {name:?} is the name flagtail gives what it makes from --flipt-config ({}); rename this one",
                    section.flipt_key
                ));
            }
        }
        if let Ok(value) = Value::serialize(&section.value) {
            origins.push(flipt::Origin::new(
                format!("{list}.{}", items.len()),
                section,
            ));
            items.push(value);
        }
    }
    origins
}

/// A problem with its key as the Flipt key the user wrote, when it is about a section made from
/// the Flipt config; `None` when it only repeats a name clash already reported.
fn from_flipt(problem: String, origins: &[flipt::Origin]) -> Option<String> {
    match origins.iter().find_map(|o| o.rename(&problem)) {
        Some(renamed) => renamed,
        None => Some(problem),
    }
}

/// A problem about a key whose value came from `${VAR}`, with that value written as the user wrote
/// it: a message such as `"tok…" is not a whole number` must not print what a variable holds.
fn scrub(problem: String, written: &BTreeMap<String, Substituted>) -> String {
    let Some((key, message)) = problem.split_once(": ") else {
        return problem;
    };
    let mut message = message.to_string();
    for (path, sub) in written {
        let about = key == path
            || key.starts_with(&format!("{path}."))
            || path.starts_with(&format!("{key}."));
        if about && !sub.expanded.is_empty() {
            message = message.replace(&sub.expanded, &sub.written);
        }
    }
    format!("{key}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const MINIMAL: &str = "sources:\n  - {name: flipt, file: /tmp/audit.log}\nsinks:\n  - {name: out, type: stdout}\n";

    #[test]
    fn defaults_fill_in() {
        let c = load("c.yaml", MINIMAL).unwrap();
        assert_eq!(c.file.max_line_bytes, 1_048_576);
        assert_eq!(c.file.log.level, "info");
        assert_eq!(c.file.admin.listen, "127.0.0.1:9464");
        assert_eq!(c.file.shutdown_grace, std::time::Duration::from_secs(10));
        assert_eq!(c.file.sinks[0].common.events[0].to_string(), "*:*");
        assert_eq!(
            c.file.sinks[0].common.initial_backoff.0,
            std::time::Duration::from_millis(500)
        );
    }

    #[test]
    fn attempts_keep_defaults_to_1000_and_is_bounded() {
        let c = load("c.yaml", MINIMAL).unwrap();
        assert_eq!(c.file.attempts.keep, 1000);
        let c = load("c.yaml", &format!("{MINIMAL}attempts: {{keep: 0}}\n")).unwrap();
        assert_eq!(c.file.attempts.keep, 0);
        let text = format!("{MINIMAL}attempts: {{keep: 2000000}}\n");
        let err = load("c.yaml", &text).unwrap_err().to_string();
        assert!(err.contains("attempts.keep: at most 1000000"), "{err}");
        let text = format!("{MINIMAL}attempts: {{kept: 5}}\n");
        let err = load("c.yaml", &text).unwrap_err().to_string();
        assert!(err.contains("kept"), "{err}");
    }

    #[test]
    fn rejected_max_bytes_defaults_to_64mib_and_is_checked() {
        let c = load("c.yaml", MINIMAL).unwrap();
        assert_eq!(c.file.rejected.max_bytes.0, 64 << 20);
        let c = load(
            "c.yaml",
            &format!("{MINIMAL}rejected: {{max_bytes: 2MiB}}\n"),
        )
        .unwrap();
        assert_eq!(c.file.rejected.max_bytes.0, 2 << 20);
        for bad in ["1KiB", "0"] {
            let text = format!("{MINIMAL}rejected: {{max_bytes: {bad}}}\n");
            let err = load("c.yaml", &text).unwrap_err().to_string();
            assert!(
                err.contains("rejected.max_bytes: must be at least 1MiB"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load("c.yaml", &format!("{MINIMAL}shutdown_grase: 5s\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shutdown_grase"), "{err}");
        let err = load("c.yaml", "sources:\n  - {name: a, file: /x, fromat: flipt}\nsinks:\n  - {name: o, type: stdout}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sources.0") && err.contains("fromat"), "{err}");
    }

    #[test]
    fn toml_and_bad_values() {
        let c = load(
            "c.toml",
            "[[sources]]\nname = \"a\"\nfile = \"/x\"\n[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n",
        );
        assert!(c.is_ok());
        let err = load("c.yaml", &format!("{MINIMAL}shutdown_grace: soon\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shutdown_grace"), "{err}");
        let err = load(
            "c.yaml",
            "sources:\n  - {name: A, file: /x}\nsinks:\n  - {name: o, type: stdout}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sources.0.name"), "{err}");
        let err = load("c.yaml", "sources:\n  - {name: a, file: /x}\nsinks:\n  - {name: o, url: ftp://x, sources: [b]}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sinks.0.url") && err.contains("sinks.0.sources"),
            "{err}"
        );
    }

    #[test]
    fn env_substitution_names_the_missing_variable() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("FT_TEST_CONC", "3") };
        let text = "sources:\n  - {name: a, file: /x}\nsinks:\n  - {name: o, url: \"http://h/${FT_TEST_NOPE}\", concurrency: \"${FT_TEST_CONC}\"}\n";
        let err = load("c.yaml", text).unwrap_err().to_string();
        assert!(
            err.contains("sinks.0.url") && err.contains("FT_TEST_NOPE"),
            "{err}"
        );
        let ok = load("c.yaml", &text.replace("${FT_TEST_NOPE}", "hook")).unwrap();
        assert_eq!(ok.file.sinks[0].common.concurrency.0, 3);
    }

    #[test]
    fn environment_overrides_listed_keys_only() {
        // SAFETY: no other test reads these variables.
        unsafe {
            std::env::set_var("FLAGTAIL_SHUTDOWN_GRACE", "3s");
            std::env::set_var("FLAGTAIL_SOMETHING_ELSE", "x");
        }
        let c = load("c.yaml", MINIMAL).unwrap();
        unsafe { std::env::remove_var("FLAGTAIL_SHUTDOWN_GRACE") };
        assert_eq!(c.file.shutdown_grace, std::time::Duration::from_secs(3));
    }

    #[test]
    fn secrets_are_masked_in_redacted_output() {
        let text = "sources:\n  - {name: a, file: /x}\nsinks:\n  - {name: o, url: \"https://hooks.example/T/B/tok\", signing_secret: s3cr3t, headers: {Authorization: Bearer xyz}}\n";
        let out = load("c.yaml", text).unwrap().to_redacted_json();
        assert!(
            !out.contains("s3cr3t") && !out.contains("xyz") && !out.contains("tok"),
            "{out}"
        );
        assert!(out.contains("https://hooks.example/***"), "{out}");
    }

    #[test]
    fn kafka_sinks_need_brokers_and_a_topic_and_their_password_is_never_shown() {
        let sink = |keys: &str| {
            format!(
                "sources:\n  - {{name: a, file: /x}}\nsinks:\n  - {{name: bus, type: kafka, {keys}}}\n"
            )
        };
        let ok = load(
            "c.yaml",
            &sink("bootstrap_servers: [\"k:9092\"], topic: audit, sasl: {mechanism: SCRAM-SHA-512, username: u, password: kafka-pw-9}"),
        )
        .unwrap();
        let out = ok.to_redacted_json();
        assert!(
            !out.contains("kafka-pw-9") && out.contains("SCRAM-SHA-512"),
            "{out}"
        );
        for (keys, want) in [
            ("topic: a", "sinks.0.bootstrap_servers: a kafka sink needs"),
            (
                "bootstrap_servers: [\"k:1\"]",
                "sinks.0.topic: a kafka sink needs a topic",
            ),
            (
                "bootstrap_servers: [\"kafka://k\"], topic: a",
                "is not HOST:PORT",
            ),
            (
                "bootstrap_servers: [\"k:1\"], topic: a, encoding: avro",
                "encoding",
            ),
            (
                "bootstrap_servers: [\"k:1\"], topic: a, sasl: {mechanism: GSSAPI, username: u, password: p}",
                "mechanism",
            ),
            (
                "bootstrap_servers: [\"k:1\"], topic: a, retry_on: [404]",
                "sinks.0.retry_on: only webhook sinks use it",
            ),
        ] {
            let err = load("c.yaml", &sink(keys)).unwrap_err().to_string();
            assert!(err.contains(want), "{keys}: {err}");
            assert!(!err.contains("kafka-pw-9"), "{err}");
        }
        let webhook = "sources:\n  - {name: a, file: /x}\nsinks:\n  - {name: h, url: \"https://a/\", topic: x}\n";
        let err = load("c.yaml", webhook).unwrap_err().to_string();
        assert!(
            err.contains("sinks.0.topic: only kafka sinks use it"),
            "{err}"
        );
    }

    #[test]
    fn nats_sinks_need_servers_a_subject_and_one_way_to_authenticate() {
        let sink = |keys: &str| {
            format!(
                "sources:\n  - {{name: a, file: /x}}\nsinks:\n  - {{name: bus, type: nats, {keys}}}\n"
            )
        };
        let ok = load(
            "c.yaml",
            &sink(
                "url: [\"nats://a:4222\", \"tls://b:4222\"], subject: \"x.{{ type }}\", token: t0k",
            ),
        )
        .unwrap();
        let SinkKind::Nats(bus) = &ok.file.sinks[0].kind else {
            panic!("a nats sink")
        };
        assert_eq!(bus.url.0.len(), 2);
        let out = ok.to_redacted_json();
        assert!(!out.contains("t0k"), "{out}");
        for (keys, want) in [
            ("subject: x", "sinks.0.url: a nats sink needs a url"),
            (
                "url: \"nats://a\"",
                "sinks.0.subject: a nats sink needs a subject",
            ),
            (
                "url: \"http://a\", subject: x",
                "is not a nats:// or tls:// URL",
            ),
            (
                "url: \"nats://a\", subject: x, token: t, creds_file: /c",
                "sinks.0.creds_file: set one way to authenticate, not token and creds_file",
            ),
            (
                "url: \"nats://a\", subject: x, user: u",
                "sinks.0.password: user and password go together",
            ),
            (
                "url: \"nats://u:p@a\", subject: x, token: t",
                "sinks.0.url: has user info and token is set too",
            ),
            (
                "url: \"nats://a\", subject: x, retry_on: [404]",
                "sinks.0.retry_on: only webhook sinks use it",
            ),
        ] {
            let err = load("c.yaml", &sink(keys)).unwrap_err().to_string();
            assert!(err.contains(want), "{keys}: {err}");
        }
        let webhook = "sources:\n  - {name: a, file: /x}\nsinks:\n  - {name: h, url: \"https://a/\", subject: x, token: t}\n";
        let err = load("c.yaml", webhook).unwrap_err().to_string();
        assert!(
            err.contains("sinks.0.subject: only nats sinks use it")
                && err.contains("sinks.0.token: only nats sinks use it"),
            "{err}"
        );
        let fast = format!("{MINIMAL}log: {{summary_interval: 1ms}}\n");
        let err = load("c.yaml", &fast).unwrap_err().to_string();
        assert!(
            err.contains("log.summary_interval: at least 100ms"),
            "{err}"
        );
        let two = "sources:\n  - {name: a, file: /x}\nsinks:\n  - {name: h, url: [\"https://a/\", \"https://b/\"]}\n";
        let err = load("c.yaml", two).unwrap_err().to_string();
        assert!(
            err.contains("sinks.0.url: a webhook sink takes one url"),
            "{err}"
        );
    }
}
