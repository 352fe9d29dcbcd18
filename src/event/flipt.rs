//! Flipt's audit log lines (SPEC §1.1): `console` and `json` encodings, lines from Flipt before 1.44
//! (no `status`, HTML-escaped), and denied events (`payload: null`).
//!
//! Field order and spacing in the line do not matter; `metadata` and `payload` are kept as their
//! JSON text, compacted and Go-escaped, which is what Flipt's webhook would send.

use super::fields::Fields;
use super::{Action, Event, Json, Parts, Rejection, Status};

/// Parses one Flipt audit line.
pub fn parse(line: &str) -> Result<Event, Rejection> {
    from_fields(&Fields::parse(line)?)
}

/// Maps a line already read into its fields.
pub fn from_fields(f: &Fields<'_>) -> Result<Event, Rejection> {
    let version = f.require_str("version")?;
    let kind = f.require_str("type")?;
    let action = f.require_str("action")?;
    let action = Action::parse(&action)
        .ok_or_else(|| Rejection::NotAnEvent(format!("unknown action {action:?}")))?;
    let status = match f.str("status")?.as_deref() {
        None | Some("") => Status::Absent,
        Some("success") => Status::Success,
        Some("denied") => Status::Denied,
        Some(other) => return Err(Rejection::NotAnEvent(format!("unknown status {other:?}"))),
    };
    if kind.is_empty() {
        return Err(Rejection::NotAnEvent("empty type".into()));
    }
    let metadata = json(f, "metadata")?;
    let payload = json(f, "payload")?;
    let timestamp = f.require_str("timestamp")?;
    if !metadata.text().starts_with('{') {
        return Err(Rejection::NotAnEvent("metadata is not an object".into()));
    }
    Ok(f.event(Parts {
        version: &version,
        kind: &kind,
        action,
        status,
        metadata,
        payload,
        timestamp: &timestamp,
    }))
}

/// Field `key`'s JSON text, kept as it is when it is already compact and Go-escaped.
fn json<'a>(f: &Fields<'a>, key: &str) -> Result<Json<'a>, Rejection> {
    let value = f.require_value(key)?;
    Ok(if value.compact {
        Json::Compact(value.text)
    } else {
        Json::Written(value.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(line: &str) -> String {
        parse(line).unwrap().webhook_body()
    }

    #[test]
    fn console_encoding_becomes_flipt_webhook_body() {
        let line = r#"{"version": "0.2", "type": "flag", "action": "created", "status": "success", "metadata": {"actor":{"authentication":"token","email":"a&b@x.io"}}, "payload": {"key":"<new>","rollout":0.5}, "timestamp": "2026-11-23T06:00:00Z"}"#;
        assert_eq!(
            body(line),
            r#"{"version":"0.2","type":"flag","action":"created","metadata":{"actor":{"authentication":"token","email":"a\u0026b@x.io"}},"payload":{"key":"\u003cnew\u003e","rollout":0.5},"timestamp":"2026-11-23T06:00:00Z","status":"success"}"#
        );
    }

    #[test]
    fn old_lines_and_denied_events() {
        let old = r#"{"version":"0.2","type":"segment","action":"deleted","metadata":{},"payload":{"key":"\u003cb\u003e"},"timestamp":"t"}"#;
        assert_eq!(
            body(old),
            r#"{"version":"0.2","type":"segment","action":"deleted","metadata":{},"payload":{"key":"\u003cb\u003e"},"timestamp":"t","status":""}"#
        );
        let denied = r#"{"version":"0.2","type":"flag","action":"updated","status":"denied","metadata":{"actor":{"ip":"1.2.3.4"}},"payload":null,"timestamp":"t"}"#;
        assert!(body(denied).contains(r#""payload":null,"timestamp":"t","status":"denied"}"#));
    }

    #[test]
    fn bad_shapes_are_rejections() {
        assert_eq!(parse("{").unwrap_err().tag(), "not_json");
        assert_eq!(
            parse(r#"{"version":"0.2"}"#).unwrap_err().tag(),
            "not_an_event"
        );
        let bad_action = r#"{"version":"0.2","type":"flag","action":"exploded","metadata":{},"payload":null,"timestamp":"t"}"#;
        assert!(
            parse(bad_action)
                .unwrap_err()
                .to_string()
                .contains("exploded")
        );
    }
}
