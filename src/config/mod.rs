//! Loading the config: YAML or TOML file, then `FLAGTAIL_*` environment variables, then `${VAR}`
//! substitution, then checks that span several keys. Every error names its key.
//!
//! The result, [`Config`], is still only data; the running parts (sinks with compiled templates and
//! TLS clients, sources) are built from it by their own modules, so `flagtail check` can build them
//! and throw them away.

mod file;
pub mod flipt;
pub mod gotemplate;
mod interpolate;
pub mod policy;
pub mod scrub;
mod secret;

pub use file::{
    BatchSection, ByteSize, ConfigFile, DEFAULT_BODY_BYTES, DEFAULT_CONNECTIONS, FileMode,
    JournalSection, KafkaEncoding, LogFormat, LogSection, Name, ReadFrom, SaslMechanism,
    SaslSection, SignatureScheme, SinkKind, SinkSection, SourceKind, SourceSection, VerifyScheme,
    WhenFull,
};
pub use interpolate::Substituted;
pub use scrub::Scrubber;
pub use secret::{OneOrMany, Secret, SecretUrl, Secrets, Urls};

use figment::providers::{Env, Format as _, Toml, Yaml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use std::collections::{BTreeMap, BTreeSet};
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

/// How many problems one load reports at most (each found one extraction after another).
const MAX_PROBLEMS: usize = 64;

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
        let mut figment = Figment::new();
        if let Some(path) = &paths.flagtail {
            if !path.is_file() {
                return Err(fail(vec![format!(
                    "cannot read {}: no such file",
                    path.display()
                )]));
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

        let mut dict: Dict = figment.extract().map_err(|e| fail(figment_problems(e)))?;
        let mut origins = Vec::new();
        let mut notes = Vec::new();
        let mut clashes = Vec::new();
        if let Some(path) = &paths.flipt {
            let translated = flipt::read(path).map_err(&fail)?;
            origins = append_sections(&mut dict, translated.sources, "sources", &mut clashes);
            origins.extend(append_sections(
                &mut dict,
                translated.sinks,
                "sinks",
                &mut clashes,
            ));
            notes = translated.notes;
        }
        let mut problems = Vec::new();
        let mut written = BTreeMap::new();
        interpolate::interpolate_dict(&mut dict, "", &mut problems, &mut written);
        if !problems.is_empty() {
            problems.extend(clashes);
            return Err(fail(
                problems
                    .into_iter()
                    .filter_map(|p| from_flipt(p, &origins))
                    .collect(),
            ));
        }
        let name = paths.to_string();
        let (file, mut problems, set_aside) = extract_all(dict, &name);
        if let Some(file) = &file {
            // A value set aside above was already reported; checks that miss it would only repeat it.
            let under = |p: &str, key: &str| {
                p.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(['.', ':', ' ']))
            };
            problems.extend(
                cross_checks(file)
                    .into_iter()
                    .filter(|p| !set_aside.iter().any(|key| under(p, key))),
            );
        }
        let problems: Vec<String> = problems
            .into_iter()
            .filter_map(|p| from_flipt(scrub(p, &written), &origins))
            .chain(clashes)
            .fold(Vec::new(), |mut seen, p| {
                if !seen.contains(&p) {
                    seen.push(p);
                }
                seen
            });
        match file {
            Some(file) if problems.is_empty() => Ok(Config {
                paths: paths.clone(),
                file,
                written,
                origins,
                notes,
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

/// Extracts the typed config, collecting every problem rather than the first: after each failed
/// extraction the offending value is set aside (removed, so its default applies) and extraction
/// runs again. Returns the config if what is left extracts, the problems, and the keys set aside.
fn extract_all(mut dict: Dict, name: &str) -> (Option<ConfigFile>, Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut set_aside = Vec::new();
    loop {
        let resolved = Figment::from(Resolved {
            dict: dict.clone(),
            name: name.to_string(),
        });
        let errors = match resolved.extract::<ConfigFile>() {
            Ok(file) => return (Some(file), problems, set_aside),
            Err(e) => e,
        };
        let mut progressed = false;
        for e in errors {
            let mut key = e.path.clone();
            let mut placeholder = None;
            match &e.kind {
                figment::error::Kind::UnknownField(field, _) => key.push(field.clone()),
                // Names are the only required keys: stand in for a missing one to go on checking.
                figment::error::Kind::MissingField(field) if field == "name" => {
                    key.push(field.to_string());
                    placeholder = Some(format!("unnamed-{}", set_aside.len()));
                }
                _ => {}
            }
            problems.extend(figment_problems(e));
            // A bad list element (`events.0`) sets aside the whole list.
            while !key.is_empty() {
                let joined = key.join(".");
                if set_aside.contains(&joined) {
                    break;
                }
                if set_value(&mut dict, &key, placeholder.take()) {
                    set_aside.push(joined);
                    progressed = true;
                    break;
                }
                key.pop();
            }
        }
        if !progressed || problems.len() >= MAX_PROBLEMS {
            return (None, problems, set_aside);
        }
    }
}

/// Removes the value at `key` (or sets it to `placeholder`); false if no dict holds that key.
/// `key` may go through lists (`sinks.0.url`).
fn set_value(dict: &mut Dict, key: &[String], placeholder: Option<String>) -> bool {
    use figment::value::Value;
    fn parent<'a>(dict: &'a mut Dict, path: &[String]) -> Option<&'a mut Dict> {
        let Some((first, rest)) = path.split_first() else {
            return Some(dict);
        };
        let mut v = dict.get_mut(first)?;
        for part in rest {
            v = match v {
                Value::Dict(_, d) => d.get_mut(part)?,
                Value::Array(_, items) => items.get_mut(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match v {
            Value::Dict(_, d) => Some(d),
            _ => None,
        }
    }
    let Some((last, parents)) = key.split_last() else {
        return false;
    };
    let Some(at) = parent(dict, parents) else {
        return false;
    };
    match placeholder {
        Some(text) => {
            at.insert(last.clone(), text.into());
            true
        }
        None => at.remove(last).is_some(),
    }
}

/// The merged, substituted values, handed back to figment so its errors still carry key paths.
struct Resolved {
    dict: Dict,
    name: String,
}

impl Provider for Resolved {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("config {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn figment_problems(e: figment::Error) -> Vec<String> {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            if key.is_empty() {
                kind
            } else {
                format!("{key}: {kind}")
            }
        })
        .collect()
}

/// Checks that involve more than one value.
fn cross_checks(c: &ConfigFile) -> Vec<String> {
    let mut p = Vec::new();
    if c.journal.max_bytes.0 < c.max_line_bytes.saturating_add(1) {
        p.push(format!(
            "journal.max_bytes: {} cannot hold one line of max_line_bytes ({}) and its newline",
            c.journal.max_bytes.0, c.max_line_bytes
        ));
    }
    if c.max_line_bytes == 0 {
        p.push("max_line_bytes: must be at least 1".into());
    }
    if c.rejected.max_bytes.0 < 1024 * 1024 {
        p.push(
            "rejected.max_bytes: must be at least 1MiB (a record keeps up to 64KiB of a line)"
                .into(),
        );
    }
    let summary = c.log.summary_interval;
    if !summary.is_zero() && summary < std::time::Duration::from_millis(100) {
        p.push("log.summary_interval: at least 100ms, or 0s to turn the summary off".into());
    }
    if !c.admin.listen.is_empty() && c.admin.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!(
            "admin.listen: {:?} is not an address like 127.0.0.1:9464 (or \"\")",
            c.admin.listen
        ));
    }
    if c.sources.is_empty() {
        p.push("sources: at least one source is needed".into());
    }
    if c.sinks.is_empty() {
        p.push("sinks: at least one sink is needed".into());
    }
    let mut seen = BTreeSet::new();
    for (i, s) in c.sources.iter().enumerate() {
        let at = format!("sources.{i}");
        if !seen.insert(s.name.as_str()) {
            p.push(format!(
                "{at}.name: source name {:?} is used twice",
                s.name.as_str()
            ));
        }
        let kinds = [s.file.is_some(), s.socket.is_some(), s.http.is_some()];
        match kinds.iter().filter(|k| **k).count() {
            1 => {}
            0 => p.push(format!("{at}: needs one of file, socket, http")),
            _ => p.push(format!("{at}: has more than one of file, socket, http")),
        }
        if s.max_connections == Some(0) {
            p.push(format!("{at}.max_connections: must be at least 1"));
        }
        if s.max_connections.is_some() && s.file.is_some() {
            p.push(format!("{at}.max_connections: not used by a file source"));
        }
        if let Some(addr) = &s.http {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                p.push(format!(
                    "{at}.http: {addr:?} is not an address like 127.0.0.1:8686"
                ));
            }
            if s.path.as_ref().is_some_and(|path| !path.starts_with('/')) {
                p.push(format!("{at}.path: must start with /"));
            }
            match (s.verify.unwrap_or_default(), &s.verify_secret) {
                (VerifyScheme::None, Some(_)) => p.push(format!(
                    "{at}.verify_secret: set verify (flipt or launchdarkly) to use it"
                )),
                (VerifyScheme::Flipt | VerifyScheme::Launchdarkly, None) => p.push(format!(
                    "{at}.verify_secret: verify needs the sender's secret"
                )),
                _ => {}
            }
            if s.max_body_bytes == Some(0) {
                p.push(format!("{at}.max_body_bytes: must be at least 1"));
            }
            // A body is journaled as its events, each ending in a newline: at most one byte more.
            let body = s.max_body_bytes.unwrap_or(DEFAULT_BODY_BYTES);
            if body.saturating_add(1) > c.journal.max_bytes.0 {
                p.push(format!(
                    "{at}.max_body_bytes: a body of {body} bytes is journaled as up to {} bytes, more than journal.max_bytes ({}); such a request could never be taken",
                    body.saturating_add(1),
                    c.journal.max_bytes.0
                ));
            }
            if s.socket_mode.is_some() {
                p.push(format!("{at}.socket_mode: not used by an http source"));
            }
        }
        if s.file.is_some() || s.socket.is_some() {
            let kind = if s.file.is_some() { "file" } else { "socket" };
            for (key, set) in [
                ("socket_mode", s.file.is_some() && s.socket_mode.is_some()),
                (
                    "max_connections",
                    s.file.is_some() && s.max_connections.is_some(),
                ),
                ("path", s.path.is_some()),
                ("auth_token", s.auth_token.is_some()),
                ("verify", s.verify.is_some()),
                ("verify_secret", s.verify_secret.is_some()),
                ("max_body_bytes", s.max_body_bytes.is_some()),
            ] {
                if set {
                    p.push(format!("{at}.{key}: not used by a {kind} source"));
                }
            }
        }
    }
    let sources: BTreeSet<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (i, s) in c.sinks.iter().enumerate() {
        let at = format!("sinks.{i}");
        if !seen.insert(s.name.as_str()) {
            p.push(format!(
                "{at}.name: sink name {:?} is used twice",
                s.name.as_str()
            ));
        }
        for name in s.sources.iter().flatten() {
            if !sources.contains(name.as_str()) {
                p.push(format!(
                    "{at}.sources: there is no source named {:?}",
                    name.as_str()
                ));
            }
        }
        if s.concurrency == 0 {
            p.push(format!("{at}.concurrency: must be at least 1"));
        }
        if s.batch.max_events == 0 {
            p.push(format!("{at}.batch.max_events: must be at least 1"));
        }
        if s.events.is_empty() {
            p.push(format!(
                "{at}.events: an empty list would drop every event; omit it for all"
            ));
        }
        if s.signing_secret.is_some() && s.signing_secret_file.is_some() {
            p.push(format!(
                "{at}.signing_secret_file: set either signing_secret or signing_secret_file"
            ));
        }
        if s.rate_limit_burst == 0 {
            p.push(format!("{at}.rate_limit_burst: must be at least 1"));
        }
        if s.retry_schedule.as_ref().is_some_and(|d| d.0.is_empty()) {
            p.push(format!(
                "{at}.retry_schedule: an empty list would never retry; omit it for exponential backoff"
            ));
        }
        if s.initial_backoff < std::time::Duration::from_millis(1) {
            p.push(format!("{at}.initial_backoff: must be at least 1ms"));
        }
        if s.max_probe_interval < std::time::Duration::from_millis(1) {
            p.push(format!("{at}.max_probe_interval: must be at least 1ms"));
        }
        if s.backlog.max_bytes.0 < 64 * 1024 {
            p.push(format!("{at}.backlog.max_bytes: must be at least 64KiB"));
        }
        if s.max_body_bytes == Some(0) {
            p.push(format!("{at}.max_body_bytes: must be at least 1"));
        }
        match s.kind {
            SinkKind::Webhook => match s.url.as_ref().map(|u| u.0.as_slice()) {
                None | Some([]) => p.push(format!("{at}.url: a webhook sink needs a url")),
                Some([_, _, ..]) => p.push(format!("{at}.url: a webhook sink takes one url")),
                Some([u]) => {
                    if !matches!(u.scheme(), "http" | "https") || !u.has_host() {
                        p.push(format!("{at}.url: {u} is not an http:// or https:// URL"));
                    } else if u.target().parse::<http::Uri>().is_err() {
                        p.push(format!(
                            "{at}.url: {u} has characters an HTTP request line cannot carry; percent-encode them"
                        ));
                    }
                    let authorization = s
                        .headers
                        .keys()
                        .any(|h| h.eq_ignore_ascii_case("authorization"));
                    if u.credentials().is_some() && authorization {
                        p.push(format!(
                            "{at}.url: has user info (sent as Basic auth) and headers has Authorization too; keep one"
                        ));
                    }
                }
            },
            SinkKind::File if s.path.is_none() => {
                p.push(format!("{at}.path: a file sink needs a path"))
            }
            SinkKind::Nats => check_nats(s, &at, &mut p),
            SinkKind::Kafka => check_kafka(s, &at, &mut p),
            _ => {}
        }
        if s.kind != SinkKind::Kafka {
            check_not_kafka(s, &at, &mut p);
        }
        if !matches!(s.kind, SinkKind::Webhook | SinkKind::Nats | SinkKind::Kafka)
            && s.ca_file.is_some()
        {
            p.push(format!(
                "{at}.ca_file: only webhook, nats and kafka sinks use it"
            ));
        }
        if !matches!(s.kind, SinkKind::Webhook | SinkKind::Nats | SinkKind::Kafka)
            && !s.headers.is_empty()
        {
            p.push(format!(
                "{at}.headers: only webhook, nats and kafka sinks use it"
            ));
        }
        if !matches!(s.kind, SinkKind::Webhook | SinkKind::Nats) {
            for (key, set) in [("url", s.url.is_some())] {
                if set {
                    p.push(format!("{at}.{key}: only webhook and nats sinks use it"));
                }
            }
        }
        if matches!(s.kind, SinkKind::Nats | SinkKind::Kafka) {
            // NATS and Kafka answer no HTTP statuses: nothing for these to act on.
            for (key, set) in [
                ("retry_on", s.retry_on != Default::default()),
                (
                    "max_retry_after",
                    s.max_retry_after != file::default_max_retry_after(),
                ),
            ] {
                if set {
                    p.push(format!(
                        "{at}.{key}: only webhook sinks use it (NATS and Kafka have no statuses)"
                    ));
                }
            }
        }
        if s.kind != SinkKind::Nats {
            for (key, set) in [
                ("subject", s.subject.is_some()),
                ("token", s.token.is_some()),
                ("user", s.user.is_some()),
                ("password", s.password.is_some()),
                ("creds_file", s.creds_file.is_some()),
                ("nkey_seed_file", s.nkey_seed_file.is_some()),
            ] {
                if set {
                    p.push(format!("{at}.{key}: only nats sinks use it"));
                }
            }
        }
        if s.kind != SinkKind::File && s.mode.is_some() {
            p.push(format!("{at}.mode: only file sinks use it"));
        }
        if s.kind != SinkKind::File && s.path.is_some() {
            p.push(format!("{at}.path: only file sinks use it"));
        }
    }
    p
}

/// A Kafka sink's keys: brokers as `host:port`, a topic.
fn check_kafka(s: &file::SinkSection, at: &str, p: &mut Vec<String>) {
    match s.bootstrap_servers.as_deref() {
        None | Some([]) => p.push(format!(
            "{at}.bootstrap_servers: a kafka sink needs bootstrap_servers (a list of HOST:PORT)"
        )),
        Some(servers) => {
            for server in servers {
                let port = server
                    .rsplit_once(':')
                    .map(|(host, port)| (host, port.parse::<u16>()));
                if !matches!(port, Some((host, Ok(_))) if !host.is_empty() && !host.contains('/')) {
                    p.push(format!(
                        "{at}.bootstrap_servers: {server:?} is not HOST:PORT"
                    ));
                }
            }
        }
    }
    match s.topic.as_deref().map(str::trim) {
        None | Some("") => p.push(format!(
            "{at}.topic: a kafka sink needs a topic (e.g. \"flipt-audit\")"
        )),
        _ => {}
    }
    if s.client_cert_file.is_some() != s.client_key_file.is_some() {
        p.push(format!(
            "{at}.client_key_file: client_cert_file and client_key_file go together"
        ));
    }
    if let Some(sasl) = &s.sasl
        && sasl.username.is_empty()
    {
        p.push(format!("{at}.sasl.username: must not be empty"));
    }
}

/// Kafka's keys on a sink of another type.
fn check_not_kafka(s: &file::SinkSection, at: &str, p: &mut Vec<String>) {
    for (key, set) in [
        ("bootstrap_servers", s.bootstrap_servers.is_some()),
        ("topic", s.topic.is_some()),
        ("key", s.key.is_some()),
        ("encoding", s.encoding.is_some()),
        ("sasl", s.sasl.is_some()),
        ("tls", s.tls.is_some()),
        ("client_cert_file", s.client_cert_file.is_some()),
        ("client_key_file", s.client_key_file.is_some()),
    ] {
        if set {
            p.push(format!("{at}.{key}: only kafka sinks use it"));
        }
    }
}

/// A NATS sink's keys: servers, a subject, at most one way to authenticate.
fn check_nats(s: &file::SinkSection, at: &str, p: &mut Vec<String>) {
    match s.url.as_ref().map(|u| u.0.as_slice()) {
        None | Some([]) => p.push(format!(
            "{at}.url: a nats sink needs a url (nats://HOST:4222, or a list)"
        )),
        Some(urls) => {
            for u in urls {
                if !matches!(u.scheme(), "nats" | "tls") || !u.has_host() {
                    p.push(format!("{at}.url: {u} is not a nats:// or tls:// URL"));
                }
            }
        }
    }
    match s.subject.as_deref().map(str::trim) {
        None | Some("") => p.push(format!(
            "{at}.subject: a nats sink needs a subject (e.g. \"flipt.audit.{{{{ type }}}}.{{{{ action }}}}\")"
        )),
        _ => {}
    }
    let ways: Vec<&str> = [
        ("token", s.token.is_some()),
        ("user", s.user.is_some() || s.password.is_some()),
        ("creds_file", s.creds_file.is_some()),
        ("nkey_seed_file", s.nkey_seed_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if ways.len() > 1 {
        p.push(format!(
            "{at}.{}: set one way to authenticate, not {}",
            ways[1],
            ways.join(" and ")
        ));
    }
    if s.user.is_some() != s.password.is_some() {
        p.push(format!("{at}.password: user and password go together"));
    }
    if s.url
        .iter()
        .flat_map(|u| &u.0)
        .any(|u| u.credentials().is_some())
        && !ways.is_empty()
    {
        p.push(format!(
            "{at}.url: has user info and {} is set too; keep one",
            ways[0]
        ));
    }
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
        assert_eq!(c.file.sinks[0].events[0].to_string(), "*:*");
        assert_eq!(
            c.file.sinks[0].initial_backoff,
            std::time::Duration::from_millis(500)
        );
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
        assert_eq!(ok.file.sinks[0].concurrency, 3);
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
        assert_eq!(ok.file.sinks[0].url.as_ref().unwrap().0.len(), 2);
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
