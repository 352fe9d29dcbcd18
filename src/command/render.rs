//! `flagtail render`: a dry run. Every input line becomes one JSON object on stdout: the request
//! exactly as the sink would send it now (`{"method","url","headers","body"}`, signature headers
//! included; configured header values and URL user info as `***`), or `{"skipped": REASON}` (the sink's filter does not take it), or
//! `{"rejected": REASON}` (not an event, or its body cannot be made).

use super::{Failure, find_sink};
use crate::config::Config;
use crate::event::parse_line;
use crate::record::{Record, SourceInfo};
use crate::sink::{Output, unix_now};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

#[derive(Serialize)]
struct Request<'a> {
    method: &'a str,
    url: String,
    headers: BTreeMap<String, String>,
    body: String,
}

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

/// The request as one line of JSON, keys in the order `method, url, headers, body`.
fn request(sink: &crate::sink::Sink, records: &[Arc<Record>]) -> String {
    let body = match sink.renderer.render(records) {
        Ok(body) => body,
        Err(e) => return serde_json::json!({ "rejected": e.reason }).to_string(),
    };
    let key = crate::sink::Sink::delivery_key(records);
    let (method, url, headers) = match &sink.output {
        Output::Webhook(hook) => (
            "POST",
            hook.url.to_string(),
            shown(&hook.headers_for(&body, &key, unix_now())),
        ),
        Output::Nats(bus) => {
            // One message per subject: `render` takes one event at a time.
            let subject = match records.first().map(|r| bus.subject_of(r)) {
                Some(Ok(subject)) => subject,
                Some(Err(e)) => return serde_json::json!({ "rejected": e.reason }).to_string(),
                None => return String::new(),
            };
            // As they go out: canonical names, plus the message id and the source.
            let mut headers: BTreeMap<String, String> = shown(&crate::sink::signed_headers(
                &bus.headers,
                bus.signer.as_ref(),
                &body,
                &key,
                unix_now(),
            ))
            .into_iter()
            .map(|(k, v)| (crate::delivery::nats::canonical(&k), v))
            .collect();
            headers.insert(
                "Nats-Msg-Id".into(),
                crate::delivery::nats::message_id(&sink.name, &key),
            );
            let source = records.first().map_or("", |r| &*r.source.name);
            headers.insert("Flagtail-Source".into(), source.to_string());
            ("PUBLISH", format!("nats:{subject}"), headers)
        }
        Output::Kafka(bus) => {
            let topic = match records.first().map(|r| bus.topic_of(r)) {
                Some(Ok(topic)) => topic,
                Some(Err(e)) => return serde_json::json!({ "rejected": e.reason }).to_string(),
                None => return String::new(),
            };
            let signed = crate::sink::signed_headers(
                &bus.headers,
                bus.signer.as_ref(),
                &body,
                &key,
                unix_now(),
            );
            let headers = shown(&signed)
                .into_iter()
                .map(|(k, v)| (crate::delivery::nats::canonical(&k), v))
                .collect();
            ("PRODUCE", format!("kafka:{topic}"), headers)
        }
        Output::Stdout => ("WRITE", "stdout:".to_string(), BTreeMap::new()),
        Output::File(file) => (
            "WRITE",
            format!("file://{}", file.path.display()),
            BTreeMap::new(),
        ),
    };
    let req = Request {
        method,
        url,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    serde_json::to_string(&req).unwrap_or_default()
}
