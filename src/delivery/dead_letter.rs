//! Dead letters: deliveries that failed for good, kept in `state_dir/dead-letter/SINK.jsonl` for
//! `flagtail replay`.
//!
//! Each line holds the event (in Flipt's webhook form), the original line, where it was read, its
//! idempotency key, the reason and the attempt count — enough to render and sign it again later,
//! with whatever template and secret the sink has then. The event and the line are kept as the
//! source's bytes and read back without re-serialising (numbers, key order and escapes as they
//! were), so a replay sends byte for byte what would have been sent.

use crate::event::{Format, parse_line};
use crate::record::{Record, SourceInfo};
use crate::record_log::{RecordLog, now_rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::Arc;

/// One line of a dead-letter file.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was written (RFC 3339).
    pub time: String,
    pub sink: String,
    pub source: String,
    pub format: Format,
    pub offset: u64,
    pub idempotency_key: String,
    pub attempts: u32,
    pub reason: String,
    /// The event in Flipt's webhook form, kept as bytes (never re-serialised).
    pub event: Box<RawValue>,
    /// The source's line as read.
    pub line: String,
    /// The start of the body that could not be sent (a template's output that was not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_excerpt: Option<String>,
    /// Retries ran out (see [`super::Result::Failed`]): sent again automatically once the sink
    /// delivers. Letters written before this field existed are not.
    #[serde(default)]
    pub retryable: bool,
    /// In a sink's backlog, on the first of events that were sent together (one batch) and
    /// failed: how many, so they are sent together again, under the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

impl DeadLetter {
    pub fn new(sink: &str, record: &Record, attempts: u32, reason: &str) -> DeadLetter {
        let mut event = Vec::with_capacity(record.line().len());
        record.event.write_flipt_json(&mut event);
        let event = RawValue::from_string(String::from_utf8_lossy(&event).into_owned())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        DeadLetter {
            time: now_rfc3339(),
            sink: sink.to_string(),
            source: record.source.name.to_string(),
            format: record.source.format,
            offset: record.offset,
            idempotency_key: record.key(),
            attempts,
            reason: reason.to_string(),
            event,
            line: record.line().to_string(),
            body_excerpt: None,
            retryable: false,
            group: None,
        }
    }

    /// The record to deliver again.
    pub fn to_record(&self) -> Result<Record, String> {
        let event = parse_line(Format::Flipt, self.event.get())
            .map_err(|e| e.to_string())?
            .relined(&self.line);
        let source = Arc::new(SourceInfo {
            name: self.source.as_str().into(),
            format: self.format,
        });
        Ok(Record::new(
            source,
            self.offset,
            self.idempotency_key.as_str().into(),
            event,
        ))
    }
}

/// The dead-letter file of one sink.
pub fn log(state_dir: &Path, sink: &str) -> RecordLog {
    RecordLog::new(state_dir, "dead-letter", sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_gives_back_its_event_key_and_first_line() {
        let line = r#"{"id":41,"type":"feature-created","createdBy":"admin","createdAt":"2026-11-23T06:00:07.000Z","featureName":"a<b>","project":"default","data":null,"preData":null,"tags":[]}"#;
        let event = parse_line(Format::Unleash, line).unwrap();
        let info = Arc::new(SourceInfo {
            name: "unleash".into(),
            format: Format::Unleash,
        });
        let record = Record::read(info, 7, "j1".into(), event);
        let letter = DeadLetter::new("hook", &record, 3, "503");
        let again = letter.to_record().unwrap();
        assert_eq!(again.line(), line, "the line as read, not the event");
        assert_eq!(again.key(), "unleash-j1-7");
        let body = |r: &Record| {
            let mut out = Vec::new();
            r.event.write_flipt_json(&mut out);
            out
        };
        assert_eq!(body(&again), body(&record));
        assert_eq!(again.event.payload(), record.event.payload());
    }
}
