//! Sinks: where events go, built from their config section into ready parts.
//!
//! A [`Sink`] knows which events it takes ([`filter`]), how to make a body ([`render`]), and where
//! the body goes ([`Output`]: a webhook with its headers and signature, a NATS JetStream subject,
//! stdout, or a file).
//! Connections, sending, retrying and dead-lettering belong to `delivery`, which builds on this.

pub mod filter;
pub mod gofmt;
pub mod kafka;
pub mod nats;
pub mod pace;
pub mod protobuf;
pub mod render;
pub mod sign;

use crate::config::{Config, ConfigError, Scrubber, SinkKind, SinkSection};
use crate::record::Record;
use ::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use base64::Engine;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const USER_AGENT_VALUE: &str = concat!("flagtail/", env!("CARGO_PKG_VERSION"));

/// A sink ready to take events.
pub struct Sink {
    pub name: Arc<str>,
    pub filter: filter::Filter,
    pub renderer: Arc<render::Renderer>,
    pub output: Output,
    /// Events per request (1: one request per event, Flipt's semantics).
    pub max_events: usize,
    /// How long a batch waits to fill.
    pub linger: Duration,
    /// Requests in flight.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// The sink's `rate_limit`, shared by its delivery workers.
    pub pace: Option<pace::Pace>,
    /// `dead_letter.auto_replay`.
    pub auto_replay: bool,
    /// `backlog.max_bytes`: what the sink's waiting room on disk may hold.
    pub backlog_bytes: u64,
    /// `backlog.when_full`.
    pub when_full: crate::config::WhenFull,
    pub metrics: crate::metrics::SinkMetrics,
    /// Masks every secret value this sink sends in what its receiver says.
    pub scrubber: Arc<Scrubber>,
}

/// When and how long one delivery is retried (the sink's retry keys).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_elapsed: Duration,
    /// Refusals tried again.
    pub retry_on: crate::config::policy::RetryOn,
    /// Explicit delays instead of exponential ones.
    pub schedule: Option<Vec<Duration>>,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// While the sink is down, the longest wait between probes.
    pub max_probe_interval: Duration,
}

pub enum Output {
    Webhook(Box<Webhook>),
    Nats(Box<nats::Nats>),
    Kafka(Box<kafka::Kafka>),
    Stdout,
    File(FileOutput),
}

/// Where a `file` sink appends.
pub struct FileOutput {
    pub path: PathBuf,
    /// Permission bits the file is created with.
    pub mode: u32,
}

pub struct Webhook {
    /// Where to connect (scheme, host, port), user info removed.
    pub url: ::http::Uri,
    /// The request line (`POST` and the URL's path and query) and the headers every request
    /// carries, written once; each attempt adds its own (see [`Webhook::write_head`]).
    pub head: Vec<u8>,
    /// The URL with its path masked, for logs and errors.
    pub shown: String,
    /// Configured headers plus `Content-Type` and `User-Agent`.
    pub headers: HeaderMap,
    pub signer: Option<sign::Signer>,
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM) for the transport.
    pub ca_file: Option<PathBuf>,
    /// The sink's scrubber, for what the receiver answers.
    pub scrubber: Arc<Scrubber>,
}

impl Sink {
    /// Builds a sink: compiles its template, reads its secret and CA files, makes its HTTP client.
    /// Errors name the key (`sinks.N.KEY`).
    pub fn build(index: usize, s: &SinkSection) -> Result<Sink, Vec<String>> {
        let at = |key: &str| format!("sinks.{index}.{key} (sink {})", s.name);
        let mut errors = Vec::new();
        let batched = s.batch.max_events > 1;
        let limits = render::Limits {
            max_body_bytes: s.body_limit(),
            time: s.timeout,
            parallel: s.concurrency as usize,
        };
        let renderer = render::Renderer::new(
            s.name.as_str(),
            s.body.as_deref(),
            &s.content_type,
            batched,
            limits,
        )
        .map_err(|e| errors.push(format!("{}: {e}", at("body"))))
        .ok()
        .map(Arc::new);
        let (output, scrubber) = build_output(s, &at, &mut errors);
        match (renderer, output) {
            (Some(renderer), Some(output)) if errors.is_empty() => Ok(Sink {
                name: s.name.as_str().into(),
                filter: filter::Filter {
                    events: s.events.clone(),
                    sources: s
                        .sources
                        .as_ref()
                        .map(|v| v.iter().map(|n| n.to_string()).collect()),
                    matches: s.matches.clone(),
                },
                renderer,
                output,
                max_events: s.batch.max_events as usize,
                linger: s.batch.linger,
                concurrency: s.concurrency as usize,
                retry: RetryPolicy {
                    initial_backoff: s.initial_backoff,
                    max_elapsed: s.max_backoff_duration,
                    retry_on: s.retry_on.clone(),
                    schedule: s.retry_schedule.as_ref().map(|d| d.0.clone()),
                    max_retry_after: s.max_retry_after,
                    max_probe_interval: s.max_probe_interval,
                },
                pace: s
                    .rate_limit
                    .map(|rate| pace::Pace::new(rate.interval(), s.rate_limit_burst)),
                auto_replay: s.dead_letter.auto_replay,
                backlog_bytes: s.backlog.max_bytes.0,
                when_full: s.backlog.when_full,
                metrics: crate::metrics::get().sink(s.name.as_str()),
                scrubber,
            }),
            _ => Err(errors),
        }
    }

    /// `webhook`, `file` or `stdout`.
    pub fn kind_name(&self) -> &'static str {
        match &self.output {
            Output::Webhook(_) => "webhook",
            Output::Nats(_) => "nats",
            Output::Kafka(_) => "kafka",
            Output::File(_) => "file",
            Output::Stdout => "stdout",
        }
    }

    /// Where the sink delivers, safe to show: a webhook's URL as `scheme://host/***`, a file's
    /// path, `stdout`.
    pub fn shown(&self) -> String {
        match &self.output {
            Output::Webhook(hook) => hook.shown.clone(),
            Output::Nats(bus) => bus.shown.clone(),
            Output::Kafka(bus) => bus.shown.clone(),
            Output::File(f) => f.path.display().to_string(),
            Output::Stdout => "stdout".into(),
        }
    }

    /// The `Idempotency-Key` (and Standard Webhooks id) of a delivery of `records`. A batch's
    /// names every member (a hash of their keys): the same first event with other companions
    /// (after a restart, or a reload that changed filters) is another delivery.
    pub fn delivery_key(records: &[Arc<Record>]) -> String {
        match records {
            [one] => one.key(),
            [first, ..] => {
                let mut keys = String::with_capacity(records.len() * 48);
                for r in records {
                    r.write_key(&mut keys);
                    keys.push('\n');
                }
                let hash = ring::digest::digest(&ring::digest::SHA256, keys.as_bytes());
                format!(
                    "{}+{}-{}",
                    first.key(),
                    records.len(),
                    crate::hex::encode(&hash.as_ref()[..8])
                )
            }
            [] => String::new(),
        }
    }
}

impl Webhook {
    /// All headers of one attempt to send `body`.
    pub fn headers_for(&self, body: &[u8], key: &str, unix_secs: u64) -> HeaderMap {
        signed_headers(&self.headers, self.signer.as_ref(), body, key, unix_secs)
    }

    /// Writes into `out` the HTTP/1.1 head of one attempt to send `body`: the same headers as
    /// [`Webhook::headers_for`], then `Content-Length`, then the blank line.
    pub fn write_head(&self, out: &mut Vec<u8>, body: &[u8], key: &str, unix_secs: u64) {
        out.clear();
        out.extend_from_slice(&self.head);
        for (name, value) in attempt_headers(self.signer.as_ref(), body, key, unix_secs) {
            push_header(out, name, value.as_bytes());
        }
        use std::io::Write;
        let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
    }
}

/// The headers one attempt adds to a sink's own: `Idempotency-Key` and, with a signer, the
/// signature headers of `body`. A value that cannot be a header value is left out.
fn attempt_headers(
    signer: Option<&sign::Signer>,
    body: &[u8],
    key: &str,
    unix_secs: u64,
) -> impl Iterator<Item = (&'static str, HeaderValue)> {
    let signed = signer
        .map(|s| s.headers(body, key, unix_secs))
        .unwrap_or_default();
    std::iter::once((IDEMPOTENCY_KEY, key.to_string()))
        .chain(signed)
        .filter_map(|(name, value)| Some((name, HeaderValue::from_str(&value).ok()?)))
}

/// Writes one `name: value` header line.
fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    for part in [name.as_bytes(), b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Headers a webhook sink's config may not set: they frame the body or steer the connection,
/// which flagtail's HTTP/1.1 client does itself.
const FLAGTAIL_MANAGES: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

/// The request line and the headers of `headers` that no attempt sets itself (the idempotency
/// key and the signature headers replace configured ones of the same name).
fn request_head(target: &str, headers: &HeaderMap, signer: Option<&sign::Signer>) -> Vec<u8> {
    let mut head = format!("POST {target} HTTP/1.1\r\n").into_bytes();
    let per_attempt = |name: &str| {
        name == IDEMPOTENCY_KEY || signer.is_some_and(|s| s.header_names().contains(&name))
    };
    for (name, value) in headers {
        if !per_attempt(name.as_str()) {
            push_header(&mut head, name.as_str(), value.as_bytes());
        }
    }
    head
}

/// `base` plus `Idempotency-Key` and, with a signer, the signature headers of `body`.
pub fn signed_headers(
    base: &HeaderMap,
    signer: Option<&sign::Signer>,
    body: &[u8],
    key: &str,
    unix_secs: u64,
) -> HeaderMap {
    let mut h = base.clone();
    for (name, value) in attempt_headers(signer, body, key, unix_secs) {
        h.insert(HeaderName::from_static(name), value);
    }
    h
}

fn build_webhook(
    s: &SinkSection,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
    scrubber: &mut Scrubber,
) -> Option<Webhook> {
    let url_text = s.url.as_ref()?.first()?;
    // User info never reaches the client (whose logs would print it): it becomes Basic auth.
    let Ok(url) = url_text.target().parse::<::http::Uri>() else {
        errors.push(format!(
            "{}: {url_text} is not a URL a request can be sent to",
            at("url")
        ));
        return None;
    };
    let mut headers = base_headers(s, at, errors);
    // The body's framing and the connection are flagtail's to manage.
    for name in headers.keys() {
        if FLAGTAIL_MANAGES.contains(&name.as_str()) {
            errors.push(format!(
                "{}: {name} is set by flagtail, not by config",
                at("headers")
            ));
        }
    }
    if let Some((user, password)) = url_text.credentials() {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        if let Ok(mut v) = HeaderValue::from_str(&format!("Basic {token}")) {
            v.set_sensitive(true);
            headers.insert(::http::header::AUTHORIZATION, v);
        }
    }
    let signer = build_signer(s, at, errors, scrubber);
    // HTTP/1.1 needs Host; the connection is opened to `url`, the request line carries `target`.
    if !headers.contains_key(::http::header::HOST)
        && let Some(authority) = url.authority()
    {
        let default_port = match url.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = match authority.port_u16() {
            Some(port) if port == default_port => authority.host(),
            _ => authority.as_str(),
        };
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(::http::header::HOST, v);
        }
    }
    let target = match url.path_and_query().map(|pq| pq.as_str()) {
        Some(t) if t.starts_with('/') => t.to_string(),
        Some(t) => format!("/{t}"),
        None => "/".to_string(),
    };
    let head = request_head(&target, &headers, signer.as_ref());
    Some(Webhook {
        url,
        head,
        shown: url_text.redacted(),
        headers,
        signer,
        timeout: s.timeout,
        ca_file: s.ca_file.clone(),
        scrubber: Arc::new(scrubber.clone()),
    })
}

/// The configured headers, `Content-Type` and `User-Agent`.
fn base_headers(
    s: &SinkSection,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &s.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose()),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.insert(n, v);
            }
            (Err(_), _) => errors.push(format!("{}: {name:?} is not a header name", at("headers"))),
            (_, Err(_)) => errors.push(format!(
                "{}: the value of {name} is not a valid header value",
                at("headers")
            )),
        }
    }
    match HeaderValue::from_str(&s.content_type) {
        Ok(v) => {
            headers.insert(CONTENT_TYPE, v);
        }
        Err(_) => errors.push(format!("{}: not a valid header value", at("content_type"))),
    }
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers
}

/// Where a sink's messages go, and its scrubber (a webhook's, made with it).
fn build_output(
    s: &SinkSection,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) -> (Option<Output>, Arc<Scrubber>) {
    let mut scrubber = scrubber_of(s);
    let output = match s.kind {
        SinkKind::Stdout => Some(Output::Stdout),
        SinkKind::File => s.path.clone().map(|path| {
            Output::File(FileOutput {
                path,
                mode: s.mode.unwrap_or(crate::config::FileMode::PRIVATE).0,
            })
        }),
        SinkKind::Webhook => {
            build_webhook(s, at, errors, &mut scrubber).map(|w| Output::Webhook(Box::new(w)))
        }
        SinkKind::Nats => {
            let headers = base_headers(s, at, errors);
            let signer = build_signer(s, at, errors, &mut scrubber);
            nats::build(s, at, headers, signer, errors).map(|n| {
                n.auth.mask_in(&mut scrubber);
                Output::Nats(Box::new(n))
            })
        }
        SinkKind::Kafka => {
            let headers = base_headers(s, at, errors);
            let signer = build_signer(s, at, errors, &mut scrubber);
            if let Some(sasl) = &s.sasl {
                scrubber.add_user_info(&sasl.username, sasl.password.expose());
            }
            kafka::build(s, at, headers, signer, errors).map(|k| Output::Kafka(Box::new(k)))
        }
    };
    let scrubber = match &output {
        Some(Output::Webhook(hook)) => hook.scrubber.clone(),
        _ => Arc::new(scrubber),
    };
    (output, scrubber)
}

/// What a receiver must never be quoted saying: the configured header values, the URLs' user
/// info (as Basic auth too), paths and queries, the signing secrets, NATS' token and password.
/// Secrets read from files are added where they are read.
fn scrubber_of(s: &SinkSection) -> Scrubber {
    let mut scrubber = Scrubber::default();
    for value in s.headers.values() {
        scrubber.add_header_value(value.expose());
    }
    for url in s.url.iter().flat_map(|urls| &urls.0) {
        if let Some((user, password)) = url.credentials() {
            scrubber.add_user_info(&user, &password);
        }
        for part in url.hidden_parts() {
            scrubber.add(&part);
        }
    }
    for secret in s.signing_secret.iter().flat_map(|secrets| &secrets.0) {
        mask_signing_secret(&mut scrubber, secret.expose());
    }
    for secret in s.token.iter().chain(&s.password) {
        scrubber.add(secret.expose());
    }
    scrubber
}

/// A signing secret, and the key it holds after a `whsec_`/`whsk_` prefix.
fn mask_signing_secret(scrubber: &mut Scrubber, secret: &str) {
    scrubber.add(secret);
    if let Some((_, key)) = secret.split_once('_') {
        scrubber.add(key);
    }
}

/// The signer of `signing_secret` or `signing_secret_file`, if one is set; a secret read from
/// the file is added to `scrubber`.
fn build_signer(
    s: &SinkSection,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
    scrubber: &mut Scrubber,
) -> Option<sign::Signer> {
    let secret = match (&s.signing_secret, &s.signing_secret_file) {
        (Some(secrets), _) => Some(secrets.0.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => {
                let secret = text.trim_end_matches(['\n', '\r']);
                mask_signing_secret(scrubber, secret);
                Some(vec![crate::config::Secret::new(secret.to_string())])
            }
            Err(e) => {
                errors.push(format!(
                    "{}: cannot read {}: {e}",
                    at("signing_secret_file"),
                    path.display()
                ));
                None
            }
        },
        (None, None) => None,
    };
    secret.and_then(|secret| {
        let key = if s.signing_secret.is_some() {
            "signing_secret"
        } else {
            "signing_secret_file"
        };
        sign::Signer::new(s.signature, &secret)
            .map_err(|e| errors.push(format!("{}: {e}", at(key))))
            .ok()
    })
}

/// Builds every sink of a config, collecting all errors.
pub fn build_all(config: &Config) -> Result<Vec<Arc<Sink>>, ConfigError> {
    let mut sinks = Vec::new();
    let mut errors = Vec::new();
    for (i, s) in config.file.sinks.iter().enumerate() {
        match Sink::build(i, s) {
            Ok(sink) => sinks.push(Arc::new(sink)),
            // A sink is never left out silently: its events would be acknowledged unsent.
            Err(e) if e.is_empty() => {
                errors.push(format!("sinks.{i} (sink {}): cannot be built", s.name))
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(sinks)
    } else {
        Err(config.error(errors))
    }
}

/// Current time in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
