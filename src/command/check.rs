//! `flagtail check`: load the config, build every sink (templates, secret files, CA files), and
//! print the resolved config as JSON with secrets as `***`. With `--connect`, also reach each
//! sink without sending anything: a webhook's receiver by TCP (and the TLS handshake), a NATS
//! sink's servers and the JetStream stream that takes its subject.

use super::{Failure, build_sinks};
use crate::config::Config;
use crate::delivery::{Ready, Transport, http};
use crate::sink::Output;

pub fn check(config: &Config, connect: bool) -> Result<(), Failure> {
    let sinks = build_sinks(config)?;
    println!("{}", config.to_redacted_json());
    for note in &config.notes {
        eprintln!("note: {note}");
    }
    eprintln!("config {} is valid", config.paths);
    if !connect {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))?;
    let mut failed = 0;
    for ready in &sinks {
        // What a server said while refusing may quote what it was sent.
        let reached = runtime.block_on(reach(ready));
        match reached.map_err(|e| ready.sink.scrubber.scrub(&e)) {
            Ok(what) => eprintln!("sink {}: connected; {what}", ready.sink.name),
            Err(why) => {
                failed += 1;
                eprintln!("sink {}: {why}", ready.sink.name);
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Failure::runtime(format!("{n} sink(s) cannot be reached"))),
    }
}

/// Reaches one sink, sending nothing: what was found, or why it cannot be reached.
async fn reach(ready: &Ready) -> Result<String, String> {
    let sink = &ready.sink;
    match (&sink.output, &*ready.transport) {
        (Output::Webhook(hook), Transport::Http(connector)) => {
            http::probe(connector, hook).await?;
            let how = match hook.url.scheme_str() {
                Some("https") => "TCP and TLS",
                _ => "TCP",
            };
            let via = match &hook.proxy {
                Some(proxy) => format!(" through proxy {}", proxy.shown),
                None => String::new(),
            };
            let token = match &hook.oauth2 {
                Some(grant) => {
                    http::oauth2::probe(connector, grant).await?;
                    format!("; an OAuth2 token from {}", grant.endpoint.shown)
                }
                None => String::new(),
            };
            Ok(format!(
                "{how} to {}{via} (no request sent){token}",
                hook.shown
            ))
        }
        (Output::Nats(bus), Transport::Nats(publisher)) => {
            let subject = sample_subject(bus)?;
            let found = publisher
                .check(&[subject])
                .await
                .map_err(|e| format!("NATS {}: {e}", bus.shown))?;
            Ok(format!("NATS {}: {}", bus.shown, found.join(", ")))
        }
        (Output::Kafka(bus), Transport::Kafka(producer)) => {
            let topic = bus.topic_of(&sample_record()?).map_err(|e| e.reason)?;
            let found = producer
                .check(&[topic])
                .await
                .map_err(|e| format!("Kafka {}: {e}", bus.shown))?;
            Ok(format!(
                "Kafka {}: metadata reached, {} (nothing sent)",
                bus.shown,
                found.join(", ")
            ))
        }
        _ => Ok(format!(
            "{} needs no connection ({})",
            sink.kind_name(),
            sink.shown()
        )),
    }
}

/// The subject template rendered for a sample event.
fn sample_subject(bus: &crate::sink::nats::Nats) -> Result<String, String> {
    bus.subject_of(&sample_record()?).map_err(|e| e.reason)
}

/// A sample event for templates (a flag created in namespace `default`).
fn sample_record() -> Result<std::sync::Arc<crate::record::Record>, String> {
    use crate::event::{Format, parse_line};
    use crate::record::{Record, SourceInfo};
    use std::sync::Arc;
    let line = r#"{"version":"0.2","type":"flag","action":"created","status":"success","metadata":{"actor":{"authentication":"none"}},"payload":{"key":"check","name":"check","namespace_key":"default","enabled":true},"timestamp":"2026-01-01T00:00:00Z"}"#;
    let event = parse_line(Format::Flipt, line).map_err(|e| e.to_string())?;
    let info = Arc::new(SourceInfo {
        name: "check".into(),
        format: Format::Flipt,
    });
    Ok(Arc::new(Record::new(info, 0, "check".into(), event)))
}
