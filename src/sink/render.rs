//! Request bodies: Flipt's webhook body by default (SPEC §1.2), or a sink's Tera template.
//!
//! Template context (SPEC §2): the event's fields at top level, `event` (the same object),
//! `source` (`{name, format, line}`), and for batching sinks `events` (the list). The `toJson`
//! filter writes a value as Go's `json.Marshal` would, as Flipt's templates do. A template that
//! fails to render, or renders invalid JSON under a JSON content type, is a delivery error of that
//! event (it is dead-lettered), never a crash.

use crate::event::gojson;
use crate::record::Record;
use std::sync::Arc;
use tera::{Context, Kwargs, State, Tera, TeraResult, Value};

/// How a sink's body is made.
pub struct Renderer {
    template: Option<Tera>,
    /// Whether rendered bodies must be valid JSON (a JSON content type).
    check_json: bool,
    /// Whether one request carries a list of events.
    batched: bool,
}

const TEMPLATE: &str = "body";

impl Renderer {
    /// Compiles `body` if given. The error names the template's line.
    pub fn new(body: Option<&str>, content_type: &str, batched: bool) -> Result<Renderer, String> {
        let template = match body {
            None => None,
            Some(text) => {
                let mut tera = Tera::new();
                tera.autoescape_on(Vec::<&str>::new());
                tera.register_filter("toJson", to_json);
                tera.add_raw_template(TEMPLATE, text)
                    .map_err(|e| describe(&e))?;
                Some(tera)
            }
        };
        let check_json = content_type.to_ascii_lowercase().contains("json");
        Ok(Renderer {
            template,
            check_json,
            batched,
        })
    }

    /// The body for `records` (one record unless the sink batches).
    pub fn render(&self, records: &[Arc<Record>]) -> Result<Vec<u8>, String> {
        let Some(tera) = &self.template else {
            return Ok(flipt_body(records, self.batched));
        };
        let mut ctx = Context::new();
        if self.batched {
            let events: Vec<serde_json::Value> =
                records.iter().map(|r| r.event.to_value()).collect();
            ctx.insert("events", &events);
        } else if let Some(r) = records.first() {
            let event = r.event.to_value();
            if let serde_json::Value::Object(fields) = &event {
                for (k, v) in fields {
                    ctx.insert(k.clone(), v);
                }
            }
            ctx.insert("event", &event);
            let line: serde_json::Value =
                serde_json::from_str(&r.line).unwrap_or(serde_json::Value::Null);
            ctx.insert(
                "source",
                &serde_json::json!({"name": &*r.source.name, "format": r.source.format.as_str(), "line": line}),
            );
        }
        let body = tera
            .render(TEMPLATE, &ctx)
            .map_err(|e| format!("template: {}", describe(&e)))?;
        if self.check_json {
            serde_json::from_str::<serde::de::IgnoredAny>(&body)
                .map_err(|e| format!("rendered body is not valid JSON ({e}): {}", clip(&body)))?;
        }
        Ok(body.into_bytes())
    }
}

/// Flipt's webhook body for one event, or a JSON array of them for a batch.
pub fn flipt_body(records: &[Arc<Record>], batched: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.line.len() + 16).sum());
    if batched {
        out.push(b'[');
    }
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.event.write_flipt_json(&mut out);
    }
    if batched {
        out.push(b']');
    }
    out
}

/// `{{ value | toJson }}`: Go-compatible JSON (keys sorted, `<>&` escaped).
fn to_json(value: Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    let v = serde_json::to_value(&value).map_err(tera::Error::message)?;
    let bytes = gojson::to_vec(&v).map_err(tera::Error::message)?;
    Ok(Value::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A Tera error with its causes, on one line.
fn describe(e: &tera::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out.replace('\n', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Format, parse_line};
    use crate::record::SourceInfo;

    fn record(line: &str) -> Arc<Record> {
        let info = Arc::new(SourceInfo {
            name: "flipt".into(),
            format: Format::Flipt,
        });
        Arc::new(Record::new(
            info,
            0,
            "k".into(),
            line.into(),
            parse_line(Format::Flipt, line).unwrap(),
        ))
    }

    const LINE: &str = r#"{"version": "0.2", "type": "flag", "action": "created", "status": "success", "metadata": {"actor":{"email":"dev@x.io"}}, "payload": {"key":"new-ui","tags":["<a>"]}, "timestamp": "2026-11-23T06:00:00Z"}"#;

    #[test]
    fn slack_template_and_to_json() {
        let tpl = r#"{"text": "{{ type }}/{{ action }} {{ payload.key }} by {{ metadata.actor.email | default(value="someone") }} from {{ source.name }}", "p": {{ payload | toJson }}}"#;
        let r = Renderer::new(Some(tpl), "application/json", false).unwrap();
        let body = String::from_utf8(r.render(&[record(LINE)]).unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"text": "flag/created new-ui by dev@x.io from flipt", "p": {"key":"new-ui","tags":["\u003ca\u003e"]}}"#
        );
    }

    #[test]
    fn invalid_json_and_render_errors_are_errors() {
        let r = Renderer::new(Some("{{ type }} not json"), "application/json", false).unwrap();
        assert!(
            r.render(&[record(LINE)])
                .unwrap_err()
                .contains("not valid JSON")
        );
        let r = Renderer::new(Some("{{ type }} plain"), "text/plain", false).unwrap();
        assert_eq!(r.render(&[record(LINE)]).unwrap(), b"flag plain");
        let r = Renderer::new(Some("{{ nothere.x }}"), "text/plain", false).unwrap();
        assert!(r.render(&[record(LINE)]).is_err());
    }

    #[test]
    fn bad_templates_name_the_line() {
        let err = Renderer::new(Some("line one\n{{ type "), "application/json", false)
            .err()
            .unwrap();
        assert!(err.contains('2'), "{err}");
    }

    #[test]
    fn batches_are_arrays_or_events_lists() {
        let recs = [record(LINE), record(LINE)];
        let body = String::from_utf8(
            Renderer::new(None, "application/json", true)
                .unwrap()
                .render(&recs)
                .unwrap(),
        )
        .unwrap();
        assert!(
            body.starts_with(r#"[{"version":"0.2""#) && body.ends_with(r#""status":"success"}]"#)
        );
        let r = Renderer::new(Some("{{ events | length }}"), "text/plain", true).unwrap();
        assert_eq!(r.render(&recs).unwrap(), b"2");
    }
}
