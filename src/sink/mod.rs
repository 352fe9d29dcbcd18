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
pub mod oauth2;
pub mod pace;
pub mod protobuf;
pub mod proxy;
pub mod render;
pub mod sign;

use crate::config::{Config, ConfigError, Scrubber, Secret, SinkKind, SinkSection, WebhookSink};
use crate::record::Record;
use ::http::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
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
    /// The proxy requests go through (the `proxy` key or the environment); none: direct.
    pub proxy: Option<proxy::Proxy>,
    /// The client certificate presented to receivers that require mutual TLS.
    pub client_cert: Option<ClientCert>,
    /// How the body is encoded on the wire (`Content-Encoding` is in `head`).
    pub compression: crate::config::Compression,
    /// Where each request's bearer token comes from (`oauth2`).
    pub oauth2: Option<Box<oauth2::OAuth2>>,
}

/// A client certificate for mutual TLS: the files of `cert_file` and `key_file`, read by the
/// transport when it is built (at start and on reload).
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

impl Sink {
    /// Builds a sink: compiles its template, reads its secret and CA files, makes its HTTP client.
    /// Errors name the key (`sinks.N.KEY`).
    pub fn build(index: usize, s: &SinkSection) -> Result<Sink, Vec<String>> {
        let at = |key: &str| format!("sinks.{index}.{key} (sink {})", s.name);
        let c = &s.common;
        let mut errors = Vec::new();
        let batched = c.batch.max_events.0 > 1;
        let limits = render::Limits {
            max_body_bytes: s.body_limit(),
            time: c.timeout,
            parallel: c.concurrency.get(),
        };
        let renderer = render::Renderer::new(
            s.name.as_str(),
            c.body.as_deref(),
            &c.content_type,
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
                    events: c.events.clone(),
                    sources: c
                        .sources
                        .as_ref()
                        .map(|v| v.iter().map(|n| n.to_string()).collect()),
                    matches: c.matches.clone(),
                },
                renderer,
                output,
                max_events: c.batch.max_events.get(),
                linger: c.batch.linger,
                concurrency: c.concurrency.get(),
                retry: RetryPolicy {
                    initial_backoff: c.initial_backoff.0,
                    max_elapsed: c.max_backoff_duration,
                    retry_on: s.retry_on(),
                    schedule: c.retry_schedule.as_ref().map(|d| d.0.clone()),
                    max_retry_after: s.max_retry_after(),
                    max_probe_interval: c.max_probe_interval.0,
                },
                pace: c
                    .rate_limit
                    .map(|rate| pace::Pace::new(rate.interval(), c.rate_limit_burst.0)),
                auto_replay: c.dead_letter.auto_replay,
                backlog_bytes: c.backlog.max_bytes.0,
                when_full: c.backlog.when_full,
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
    /// With `bearer`, an `Authorization: Bearer` header too (`oauth2`'s token).
    pub fn write_head(
        &self,
        out: &mut Vec<u8>,
        body: &[u8],
        key: &str,
        unix_secs: u64,
        bearer: Option<&str>,
    ) {
        out.clear();
        out.extend_from_slice(&self.head);
        for (name, value) in attempt_headers(self.signer.as_ref(), body, key, unix_secs) {
            push_header(out, name, value.as_bytes());
        }
        if let Some(token) = bearer {
            for part in [
                b"authorization: Bearer ".as_slice(),
                token.as_bytes(),
                b"\r\n",
            ] {
                out.extend_from_slice(part);
            }
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

/// The `Host` header of requests to `url`: its authority, without the scheme's default port.
fn host_of(url: &::http::Uri) -> Option<HeaderValue> {
    let authority = url.authority()?;
    let default_port = match url.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let host = match authority.port_u16() {
        Some(port) if port == default_port => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::from_str(host).ok()
}

/// The request line and fixed headers of a webhook's requests to `url` (its path and query). Through a proxy, an `http` request names the whole URL and carries the proxy's
/// credentials; an `https` one goes through a CONNECT tunnel as it would go direct.
fn webhook_head(
    url: &::http::Uri,
    headers: &HeaderMap,
    signer: Option<&sign::Signer>,
    proxy: Option<&proxy::Proxy>,
) -> Vec<u8> {
    let via = proxy.filter(|_| url.scheme_str() != Some("https"));
    let target = match (via, url.path_and_query().map(|pq| pq.as_str())) {
        (Some(_), _) => url.to_string(),
        (None, Some(t)) if t.starts_with('/') => t.to_string(),
        (None, Some(t)) => format!("/{t}"),
        (None, None) => "/".to_string(),
    };
    let mut head = request_head(&target, headers, signer);
    if let Some(auth) = via.and_then(|p| p.authorization.as_ref()) {
        push_header(&mut head, "proxy-authorization", auth.as_bytes());
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
    hook: &WebhookSink,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
    scrubber: &mut Scrubber,
) -> Option<Webhook> {
    let url_text = &hook.url.0;
    // User info never reaches the client (whose logs would print it): it becomes Basic auth.
    let Ok(url) = url_text.target().parse::<::http::Uri>() else {
        errors.push(format!(
            "{}: {url_text} is not a URL a request can be sent to",
            at("url")
        ));
        return None;
    };
    let mut headers = base_headers(s, &hook.headers, at, errors);
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
        && let Some(host) = host_of(&url)
    {
        headers.insert(::http::header::HOST, host);
    }
    let oauth2 = match &hook.oauth2 {
        Some(section) => Some(Box::new(oauth2::build(
            s, hook, section, at, errors, scrubber,
        )?)),
        None => None,
    };
    let proxy = proxy::resolve(hook.proxy.as_ref(), &url, |name| std::env::var(name).ok())
        .map_err(|e| errors.push(format!("{}: {e}", at("proxy"))))
        .ok()?;
    if let Some((user, password)) = proxy.as_ref().and_then(|p| p.credentials.as_ref()) {
        scrubber.add_user_info(user, password);
    }
    let head = webhook_head(&url, &headers, signer.as_ref(), proxy.as_ref());
    Some(Webhook {
        oauth2,
        proxy,
        client_cert: client_cert_of(hook.cert_file.as_ref(), hook.key_file.as_ref()),
        compression: hook.compression,
        url,
        head,
        shown: url_text.redacted(),
        headers,
        signer,
        timeout: s.common.timeout,
        ca_file: hook.ca_file.clone(),
        scrubber: Arc::new(scrubber.clone()),
    })
}

/// The sink's `cert_file` and `key_file`, when both are set.
fn client_cert_of(cert_file: Option<&PathBuf>, key_file: Option<&PathBuf>) -> Option<ClientCert> {
    let (cert_file, key_file) = cert_file.cloned().zip(key_file.cloned())?;
    Some(ClientCert {
        cert_file,
        key_file,
    })
}

/// The configured headers, `Content-Type` and `User-Agent`.
fn base_headers(
    s: &SinkSection,
    configured: &std::collections::BTreeMap<String, Secret>,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in configured {
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
    match HeaderValue::from_str(&s.common.content_type) {
        Ok(v) => {
            headers.insert(CONTENT_TYPE, v);
        }
        Err(_) => errors.push(format!("{}: not a valid header value", at("content_type"))),
    }
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    let gzip = matches!(&s.kind, SinkKind::Webhook(hook) if hook.compression == crate::config::Compression::Gzip);
    if gzip {
        if headers.contains_key(CONTENT_ENCODING) {
            errors.push(format!(
                "{}: Content-Encoding is set by compression: gzip",
                at("headers")
            ));
        }
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers
}

/// Where a sink's messages go, and its scrubber (a webhook's, made with it).
fn build_output(
    s: &SinkSection,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) -> (Option<Output>, Arc<Scrubber>) {
    let mut scrubber = scrubber_of(s);
    let output = match &s.kind {
        SinkKind::Stdout(_) => Some(Output::Stdout),
        SinkKind::File(file) => Some(Output::File(FileOutput {
            path: file.path.clone(),
            mode: file.mode.0,
        })),
        SinkKind::Webhook(hook) => {
            build_webhook(s, hook, at, errors, &mut scrubber).map(|w| Output::Webhook(Box::new(w)))
        }
        SinkKind::Nats(bus) => {
            let headers = base_headers(s, &bus.headers, at, errors);
            let signer = build_signer(s, at, errors, &mut scrubber);
            nats::build(s, bus, at, headers, signer, errors).map(|n| {
                n.auth.mask_in(&mut scrubber);
                Output::Nats(Box::new(n))
            })
        }
        SinkKind::Kafka(bus) => {
            let headers = base_headers(s, &bus.headers, at, errors);
            let signer = build_signer(s, at, errors, &mut scrubber);
            if let Some(sasl) = &bus.sasl {
                scrubber.add_user_info(&sasl.username, sasl.password.expose());
            }
            kafka::build(s, bus, at, headers, signer, errors).map(|k| Output::Kafka(Box::new(k)))
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
    for value in s.headers().into_iter().flat_map(|h| h.values()) {
        scrubber.add_header_value(value.expose());
    }
    let urls = match &s.kind {
        SinkKind::Webhook(hook) => std::slice::from_ref(&hook.url.0),
        SinkKind::Nats(bus) => bus.url.0.as_slice(),
        _ => &[],
    };
    for url in urls {
        if let Some((user, password)) = url.credentials() {
            scrubber.add_user_info(&user, &password);
        }
        for part in url.hidden_parts() {
            scrubber.add(&part);
        }
    }
    for secret in s
        .common
        .signing_secret
        .iter()
        .flat_map(|secrets| &secrets.0)
    {
        mask_signing_secret(&mut scrubber, secret.expose());
    }
    if let SinkKind::Nats(bus) = &s.kind {
        for secret in bus.token.iter().chain(&bus.password) {
            scrubber.add(secret.expose());
        }
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
    let c = &s.common;
    let secret = match (&c.signing_secret, &c.signing_secret_file) {
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
        let key = if c.signing_secret.is_some() {
            "signing_secret"
        } else {
            "signing_secret_file"
        };
        sign::Signer::new(c.signature, &secret)
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
