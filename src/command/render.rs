//! `flagtail render`: a dry run. Every input line becomes one JSON object on stdout: the request
//! exactly as the sink would send it now (`{"method","url","headers","body"}`, signature headers
//! included and computed over the bytes sent; a Kafka record's `key`; `body_base64` when the
//! bytes sent are not the body's text: gzipped, or Flipt's protobuf; configured header values and
//! URL user info as `***`), or `{"skipped": REASON}` (the sink's filter does not take it), or
//! `{"rejected": REASON}` (not an event, or its body cannot be made).

use super::{Failure, find_sink};
use crate::config::Config;
use crate::event::parse_line;
use crate::record::{Record, SourceInfo};
use crate::sink::{Output, unix_now};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

pub fn render(
    config: &Config,
    sink: &str,
    source: Option<&str>,
    input: Option<&Path>,
) -> Result<(), Failure> {
    let sink = find_sink(config, sink)?;
    let section = match source {
        Some(name) => config
            .file
            .sources
            .iter()
            .find(|s| s.name.as_str() == name)
            .ok_or_else(|| {
                Failure::usage(format!("--source: there is no source named {name:?}"))
            })?,
        None => config
            .file
            .sources
            .first()
            .ok_or_else(|| Failure::usage("the config has no source"))?,
    };
    let info = Arc::new(SourceInfo {
        name: section.name.as_str().into(),
        format: section.format,
    });
    let reader: Box<dyn Read> = match input {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| Failure::runtime(format!("--input {}: {e}", path.display())))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let mut reader = BufReader::new(reader);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut offset = 0u64;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| Failure::runtime(format!("reading input: {e}")))?;
        if n == 0 {
            break;
        }
        let start = offset;
        offset += n as u64;
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let object = match parse_line(info.format, line) {
            Err(crate::event::Rejection::Unmapped(kind)) => serde_json::json!({
                "skipped": format!("event type {kind:?} is not mapped")
            })
            .to_string(),
            Err(rejection) => serde_json::json!({ "rejected": rejection.to_string() }).to_string(),
            Ok(event) if !sink.filter.accepts(&info.name, &event, &mut Default::default()) => serde_json::json!({
                "skipped": format!("sink {} does not take {}:{} from source {}", sink.name, event.kind(), event.action.as_str(), info.name)
            })
            .to_string(),
            Ok(event) => {
                let key = format!("{}-render-{start}", info.name);
                let record = Arc::new(Record::new(info.clone(), start, key.into(), event));
                request(&sink, &[record])
            }
        };
        writeln!(out, "{object}").map_err(|e| Failure::runtime(format!("writing output: {e}")))?;
    }
    Ok(())
}

/// `headers` to show: configured header values and URL user info are secrets, shown as `***`.
fn shown(headers: &::http::HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let shown = if v.is_sensitive() {
                "***".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.to_string(), shown)
        })
        .collect()
}

/// The request as one line of JSON, keys in the order `method, url, [key,] headers, body,
/// [body_base64]`.
fn request(sink: &crate::sink::Sink, records: &[Arc<Record>]) -> String {
    let body = match sink.renderer.render(records) {
        Ok(body) => body,
        Err(e) => return rejected(e.reason),
    };
    let key = crate::sink::Sink::delivery_key(records);
    let Some(first) = records.first() else {
        return String::new();
    };
    let sent = match &sink.output {
        Output::Webhook(hook) => webhook(hook, body, &key),
        Output::Nats(bus) => nats(sink, bus, first, body, &key),
        Output::Kafka(bus) => kafka(bus, first, body, &key),
        Output::Stdout => Ok(Sent::plain("WRITE", "stdout:".into(), body)),
        Output::File(file) => Ok(Sent::plain(
            "WRITE",
            format!("file://{}", file.path.display()),
            body,
        )),
    };
    match sent {
        Ok(sent) => sent.json(),
        Err(reason) => rejected(reason),
    }
}

fn rejected(reason: String) -> String {
    serde_json::json!({ "rejected": reason }).to_string()
}

/// What would go out, before it is shown.
struct Sent {
    method: &'static str,
    url: String,
    /// A Kafka record's key.
    key: Option<String>,
    headers: BTreeMap<String, String>,
    /// The rendered body, as text.
    body: Vec<u8>,
    /// The bytes sent, when they are not `body`.
    wire: Option<Wire>,
}

/// What `render` prints of a [`Sent`], in this order.
#[derive(serde::Serialize)]
struct Shown {
    method: &'static str,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

/// Bytes sent in place of the rendered body.
enum Wire {
    /// The body gzipped (`compression: gzip`).
    Gzip(Vec<u8>),
    /// Flipt's `flipt.audit.Event` (`encoding: protobuf`), which has no text.
    Protobuf(Vec<u8>),
}

impl Sent {
    fn plain(method: &'static str, url: String, body: Vec<u8>) -> Sent {
        Sent {
            method,
            url,
            key: None,
            headers: BTreeMap::new(),
            body,
            wire: None,
        }
    }

    /// The bytes signed and sent.
    fn bytes(&self) -> &[u8] {
        match &self.wire {
            Some(Wire::Gzip(b) | Wire::Protobuf(b)) => b,
            None => &self.body,
        }
    }

    /// `body` is the text, unless the bytes sent are protobuf (then only `body_base64`);
    /// `body_base64` is the bytes sent, when they are not the text.
    fn json(self) -> String {
        use base64::Engine;
        let body = match self.wire {
            Some(Wire::Protobuf(_)) => None,
            _ => Some(String::from_utf8_lossy(&self.body).into_owned()),
        };
        let body_base64 = match &self.wire {
            Some(Wire::Gzip(b) | Wire::Protobuf(b)) => {
                Some(base64::engine::general_purpose::STANDARD.encode(b))
            }
            None => None,
        };
        let shown = Shown {
            method: self.method,
            url: self.url,
            key: self.key,
            headers: self.headers,
            body,
            body_base64,
        };
        serde_json::to_string(&shown).unwrap_or_default()
    }
}

/// A webhook's POST: the body gzipped if the sink says so, signed as sent.
fn webhook(hook: &crate::sink::Webhook, body: Vec<u8>, key: &str) -> Result<Sent, String> {
    let mut sent = Sent::plain("POST", hook.url.to_string(), body);
    if hook.compression == crate::config::Compression::Gzip {
        let mut gz = crate::delivery::http::gzip::Gzip::default();
        let packed = gz.compress(&sent.body).map_err(|e| e.to_string())?;
        sent.wire = Some(Wire::Gzip(packed.to_vec()));
    }
    sent.headers = shown(&hook.headers_for(sent.bytes(), key, unix_now()));
    Ok(sent)
}

/// A NATS message on its subject, with its canonical headers, id and source.
fn nats(
    sink: &crate::sink::Sink,
    bus: &crate::sink::nats::Nats,
    record: &Arc<Record>,
    body: Vec<u8>,
    key: &str,
) -> Result<Sent, String> {
    let subject = bus.subject_of(record).map_err(|e| e.reason)?;
    let mut sent = Sent::plain("PUBLISH", format!("nats:{subject}"), body);
    sent.headers = canonical(signed(&bus.headers, bus.signer.as_ref(), &sent, key));
    let id = crate::delivery::nats::message_id(&sink.name, key);
    sent.headers.insert("Nats-Msg-Id".into(), id);
    let source = record.source.name.to_string();
    sent.headers.insert("Flagtail-Source".into(), source);
    Ok(sent)
}

/// A Kafka record: its topic and key, the value in the sink's encoding, its headers signed over
/// the value as a delivery makes them.
fn kafka(
    bus: &crate::sink::kafka::Kafka,
    record: &Arc<Record>,
    body: Vec<u8>,
    key: &str,
) -> Result<Sent, String> {
    let topic = bus.topic_of(record).map_err(|e| e.reason)?;
    let record_key = bus.key_of(record).map_err(|e| e.reason)?;
    let mut sent = Sent::plain("PRODUCE", format!("kafka:{topic}"), body);
    sent.key = Some(String::from_utf8_lossy(&record_key).into_owned());
    if bus.encoding == crate::config::KafkaEncoding::Protobuf {
        let value = crate::sink::protobuf::encode_event(&record.event);
        sent.wire = Some(Wire::Protobuf(value));
    }
    let mut headers = signed(&bus.headers, bus.signer.as_ref(), &sent, key);
    headers.remove(::http::header::USER_AGENT);
    sent.headers = canonical(headers);
    let source = record.source.name.to_string();
    sent.headers.insert("Flagtail-Source".into(), source);
    Ok(sent)
}

/// A bus message's headers: its own and the signature's, over the bytes sent, signed now.
fn signed(
    headers: &::http::HeaderMap,
    signer: Option<&crate::sink::sign::Signer>,
    sent: &Sent,
    key: &str,
) -> ::http::HeaderMap {
    crate::sink::signed_headers(headers, signer, sent.bytes(), key, unix_now())
}

/// Headers shown in their canonical form (`Idempotency-Key`), as NATS and Kafka carry them.
fn canonical(headers: ::http::HeaderMap) -> BTreeMap<String, String> {
    shown(&headers)
        .into_iter()
        .map(|(k, v)| (crate::delivery::nats::canonical(&k), v))
        .collect()
}
