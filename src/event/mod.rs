//! The Flipt audit event (version "0.2") that every source is mapped into, and the formats a
//! source's lines can come in.
//!
//! An [`Event`] keeps `metadata` and `payload` as JSON text, already in the compact, Go-escaped form
//! Flipt's webhook sends (see [`gojson`]), so the default webhook body is a concatenation and never
//! re-orders keys or re-spells numbers. Parsing a line is [`parse_line`]; it never panics and turns
//! every bad line into a [`Rejection`] with a reason.

pub mod abtasty;
pub mod fields;
pub mod flipt;
pub mod gojson;
pub mod launchdarkly;
pub mod pattern;
mod scan;
pub mod unleash;

use bytestring::ByteString;
use fields::Fields;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What happened to the resource. Flipt's set; other sources map onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "created" => Some(Action::Created),
            "updated" => Some(Action::Updated),
            "deleted" => Some(Action::Deleted),
            _ => None,
        }
    }
}

/// Whether the change was allowed. Lines from Flipt before 1.44 have no status at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Denied,
    /// The line had no `status`; the webhook body then carries `"status":""` as Flipt's does.
    Absent,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Denied => "denied",
            Status::Absent => "",
        }
    }
}

/// How a source's lines are read. `auto` decides per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Flipt,
    Unleash,
    Abtasty,
    Launchdarkly,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Flipt => "flipt",
            Format::Unleash => "unleash",
            Format::Abtasty => "abtasty",
            Format::Launchdarkly => "launchdarkly",
        }
    }
}

/// One audit event, and the line it was read from.
///
/// The line is kept as read: read from a source, it shares the buffer it was read into (no copy,
/// no allocation). Texts that are pieces of the line as they are (plain strings, JSON already
/// compact and Go-escaped, as Flipt writes it) are kept as where they are in it; the others
/// (strings with escapes, JSON to compact, another vendor's mapped values) are written one after
/// another into `extra`. A Flipt line as Flipt writes it becomes an event without an allocation.
#[derive(Debug, Clone)]
pub struct Event {
    pub action: Action,
    pub status: Status,
    /// The line as read, without its line ending.
    line: ByteString,
    /// `version`, `kind`, `metadata`, `payload` and `timestamp` where they are not pieces of the
    /// line; empty (no allocation) when they all are.
    extra: String,
    /// Where each of those five texts is.
    places: [Place; 5],
}

/// Where one of an event's texts is: a byte range of its line or of its `extra`.
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    in_line: bool,
    start: usize,
    end: usize,
}

/// JSON text for [`Parts`]' `metadata` or `payload`.
#[derive(Debug, Clone, Copy)]
pub enum Json<'a> {
    /// Valid JSON as a source wrote it: compacted and Go-escaped on the way in.
    Written(&'a str),
    /// Already compact and Go-escaped (what [`gojson::to_vec`] writes).
    Compact(&'a str),
}

impl Json<'_> {
    /// The text as given.
    pub fn text(&self) -> &str {
        match self {
            Json::Written(t) | Json::Compact(t) => t,
        }
    }
}

/// What an event is made of, borrowed from wherever it was read.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub version: &'a str,
    pub kind: &'a str,
    pub action: Action,
    pub status: Status,
    /// Must be valid JSON text.
    pub metadata: Json<'a>,
    /// Must be valid JSON text.
    pub payload: Json<'a>,
    pub timestamp: &'a str,
}

impl Event {
    /// The event made of `parts`, read from `line` (empty when it was not read from a line); the
    /// line is copied.
    pub fn new(line: &str, parts: Parts<'_>) -> Event {
        Event::assemble(ByteString::from(line), line, parts)
    }

    /// The event made of `parts`, read from `line`, which it shares.
    pub fn read(line: &ByteString, parts: Parts<'_>) -> Event {
        Event::assemble(line.clone(), line, parts)
    }

    /// The event of `parts`, whose texts may be pieces of `read`; `line` holds the same text as
    /// `read` (its copy, or the shared line itself).
    fn assemble(line: ByteString, read: &str, parts: Parts<'_>) -> Event {
        // A text kept as it is: its range in the line, when it is a piece of it.
        let within = |text: &str| {
            let start = (text.as_ptr() as usize).checked_sub(read.as_ptr() as usize)?;
            (start + text.len() <= read.len()).then_some(start)
        };
        let texts = [
            Json::Compact(parts.version),
            Json::Compact(parts.kind),
            parts.metadata,
            parts.payload,
            Json::Compact(parts.timestamp),
        ];
        let mut places = [Place::default(); 5];
        let mut outside = 0;
        for (place, text) in places.iter_mut().zip(texts) {
            match text {
                Json::Compact(t) if let Some(start) = within(t) => {
                    *place = Place {
                        in_line: true,
                        start,
                        end: start + t.len(),
                    }
                }
                other => outside += other.text().len(),
            }
        }
        let mut extra = String::with_capacity(outside);
        for (place, text) in places.iter_mut().zip(texts) {
            if place.in_line {
                continue;
            }
            let start = extra.len();
            match text {
                Json::Written(t) => gojson::compact(t, &mut extra),
                Json::Compact(t) => extra.push_str(t),
            }
            *place = Place {
                in_line: false,
                start,
                end: extra.len(),
            };
        }
        Event {
            action: parts.action,
            status: parts.status,
            line,
            extra,
            places,
        }
    }

    /// The same event, as read from `line` instead (a dead letter's event with its first line).
    pub fn relined(&self, line: &str) -> Event {
        Event::new(
            line,
            Parts {
                version: self.version(),
                kind: self.kind(),
                action: self.action,
                status: self.status,
                metadata: Json::Compact(self.metadata()),
                payload: Json::Compact(self.payload()),
                timestamp: self.timestamp(),
            },
        )
    }

    /// Text `i` of the five after the line.
    fn part(&self, i: usize) -> &str {
        let Place {
            in_line,
            start,
            end,
        } = self.places[i];
        let text: &str = if in_line { &self.line } else { &self.extra };
        text.get(start..end).unwrap_or_default()
    }

    /// The line the event was read from, without its line ending.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// `"0.2"` for current Flipt; kept as written.
    pub fn version(&self) -> &str {
        self.part(0)
    }

    /// The resource type (`flag`, `segment`, ...); an open set, as other sources add their own.
    pub fn kind(&self) -> &str {
        self.part(1)
    }

    /// Compact, Go-escaped JSON text of `{"actor": {...}}`.
    pub fn metadata(&self) -> &str {
        self.part(2)
    }

    /// Compact, Go-escaped JSON text of any value; `null` for denied events.
    pub fn payload(&self) -> &str {
        self.part(3)
    }

    /// RFC 3339, as written by the source.
    pub fn timestamp(&self) -> &str {
        self.part(4)
    }

    /// Bytes the event holds on the heap (its line and texts), for the in-flight budget.
    pub fn heap_bytes(&self) -> usize {
        self.line.len() + self.extra.capacity()
    }

    /// Writes the body Flipt's own webhook sink sends for this event, byte for byte:
    /// compact, keys `version, type, action, metadata, payload, timestamp, status`.
    pub fn write_flipt_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"version\":");
        gojson::write_str(out, self.version());
        out.extend_from_slice(b",\"type\":");
        gojson::write_str(out, self.kind());
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(self.action.as_str().as_bytes());
        out.extend_from_slice(b"\",\"metadata\":");
        out.extend_from_slice(self.metadata().as_bytes());
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(self.payload().as_bytes());
        out.extend_from_slice(b",\"timestamp\":");
        gojson::write_str(out, self.timestamp());
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.extend_from_slice(b"\"}");
    }

    /// An event mapped from another vendor's format: `version` "0.2", `status` success, and
    /// `metadata` (`{"actor": actor}`) and `payload` written as Go writes a map (keys sorted,
    /// `<>&` escaped), as Flipt's webhook would send them.
    pub fn mapped(
        f: &Fields<'_>,
        kind: &str,
        action: Action,
        actor: serde_json::Map<String, serde_json::Value>,
        payload: serde_json::Map<String, serde_json::Value>,
        timestamp: String,
    ) -> Result<Event, Rejection> {
        let go = |v: serde_json::Value| -> Result<String, Rejection> {
            let bytes = gojson::to_vec(&v).map_err(|e| Rejection::NotAnEvent(e.to_string()))?;
            String::from_utf8(bytes).map_err(|e| Rejection::NotAnEvent(e.to_string()))
        };
        let metadata = serde_json::Map::from_iter([("actor".to_string(), actor.into())]);
        let (metadata, payload) = (go(metadata.into())?, go(payload.into())?);
        Ok(f.event(Parts {
            version: "0.2",
            kind,
            action,
            status: Status::Success,
            metadata: Json::Compact(&metadata),
            payload: Json::Compact(&payload),
            timestamp: &timestamp,
        }))
    }

    /// The default webhook body as text, for tests.
    #[cfg(test)]
    pub fn webhook_body(&self) -> String {
        let mut out = Vec::new();
        self.write_flipt_json(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The event as a JSON value, for templates (`{{ payload.key }}`). An error, never `null`,
    /// when `metadata` or `payload` has what a JSON value cannot hold (a number out of range like
    /// `1e999`, nesting deeper than 128 levels): the bytes are kept, but a template cannot see them.
    pub fn to_value(&self) -> Result<serde_json::Value, String> {
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| format!("{what}: {e}"))
        };
        Ok(serde_json::json!({
            "version": self.version(),
            "type": self.kind(),
            "action": self.action.as_str(),
            "status": self.status.as_str(),
            "metadata": parse("metadata", self.metadata())?,
            "payload": parse("payload", self.payload())?,
            "timestamp": self.timestamp(),
        }))
    }
}

/// Why a line is not an event. Recorded in `rejected/SOURCE.jsonl`; the reason's tag is the
/// `reason` label of `flagtail_lines_rejected_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NotJson(String),
    InvalidUtf8,
    TooLong {
        len: u64,
        max: u64,
    },
    NotAnEvent(String),
    /// An event of a kind no mapping covers (Unleash's client metrics, favourites, …): counted
    /// (`flagtail_events_unmapped_total`) and skipped, never recorded as rejected.
    Unmapped(String),
    /// Bytes a source's journal lost (a segment deleted, cut short or unreadable), and why.
    JournalGap(String),
}

impl Rejection {
    /// A short stable label for metrics and the rejected file.
    pub fn tag(&self) -> &'static str {
        match self {
            Rejection::NotJson(_) => "not_json",
            Rejection::InvalidUtf8 => "invalid_utf8",
            Rejection::TooLong { .. } => "too_long",
            Rejection::NotAnEvent(_) => "not_an_event",
            Rejection::Unmapped(_) => "unmapped",
            Rejection::JournalGap(_) => "journal_gap",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotJson(e) => write!(f, "not JSON: {e}"),
            Rejection::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Rejection::TooLong { len, max } => {
                write!(
                    f,
                    "line of {len} bytes is longer than max_line_bytes ({max})"
                )
            }
            Rejection::NotAnEvent(e) => write!(f, "not an audit event: {e}"),
            Rejection::Unmapped(t) => write!(f, "event type {t:?} is not mapped"),
            Rejection::JournalGap(why) => write!(f, "lost from the journal: {why}"),
        }
    }
}

/// Reads one line (without its line ending) in `format`. The line is read once, into its
/// top-level fields; `auto` picks the vendor from the keys it finds (SPEC §1.3).
pub fn parse_line(format: Format, line: &str) -> Result<Event, Rejection> {
    from_fields(format, &Fields::parse(line)?)
}

/// [`parse_line`] for a line the event then shares instead of copying.
pub fn parse_shared(format: Format, line: &ByteString) -> Result<Event, Rejection> {
    from_fields(format, &Fields::parse_shared(line)?)
}

/// The event of a line read into its fields.
fn from_fields(format: Format, fields: &Fields<'_>) -> Result<Event, Rejection> {
    let format = match format {
        Format::Auto => detect(fields)?,
        known => known,
    };
    match format {
        Format::Flipt | Format::Auto => flipt::from_fields(fields),
        Format::Unleash => unleash::from_fields(fields),
        Format::Abtasty => abtasty::from_fields(fields),
        Format::Launchdarkly => launchdarkly::from_fields(fields),
    }
}

/// Picks the vendor of one line for `format: auto` by its keys: Flipt has `version`, `type` and
/// `action`; Unleash `createdAt` and a dashed `type` (`feature-created`); LaunchDarkly `kind`
/// and `accesses`; AB Tasty `event` and `date`.
fn detect(f: &Fields<'_>) -> Result<Format, Rejection> {
    if f.has("version") && f.has("type") && f.has("action") {
        Ok(Format::Flipt)
    } else if f.has("createdAt") && f.str_contains("type", '-') {
        Ok(Format::Unleash)
    } else if f.has("kind") && f.has("accesses") {
        Ok(Format::Launchdarkly)
    } else if f.has("event") && f.has("date") {
        Ok(Format::Abtasty)
    } else {
        Err(Rejection::NotAnEvent(
            "unknown shape: no known format matches (flipt needs version, type and action; unleash createdAt and a type like feature-created; launchdarkly kind and accesses; abtasty event and date)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_as_flipt_writes_it_is_shared_not_copied() {
        let compact = r#"{"version":"0.2","type":"flag","action":"created","status":"success","metadata":{"actor":{"ip":"1.2.3.4"}},"payload":{"key":"a"},"timestamp":"t"}"#;
        let line = ByteString::from(compact);
        let event = parse_shared(Format::Flipt, &line).unwrap();
        assert_eq!(event.line().as_ptr(), line.as_ptr(), "the line itself");
        assert_eq!(event.heap_bytes(), line.len(), "nothing beside it");
        assert_eq!(
            event.payload().as_ptr(),
            line[line.find("{\"key").unwrap()..].as_ptr()
        );
        assert_eq!(
            event.webhook_body(),
            parse_line(Format::Flipt, compact).unwrap().webhook_body()
        );
        // Spaces to compact and a type with escapes: those texts are written beside the line,
        // the others still are pieces of it, and the body is the same as from a copy.
        let spaced = r#"{"version":"0.2","type":"fl\u0061g","action":"created","status":"success","metadata":{"actor": {"ip":"1.2.3.4"}},"payload":{"key":"a"},"timestamp":"t"}"#;
        let line = ByteString::from(spaced);
        let event = parse_shared(Format::Flipt, &line).unwrap();
        assert_eq!(event.line().as_ptr(), line.as_ptr());
        assert_eq!(
            (event.kind(), event.metadata()),
            ("flag", r#"{"actor":{"ip":"1.2.3.4"}}"#)
        );
        assert_eq!(
            event.heap_bytes() - line.len(),
            "flag".len() + spaced.find(",\"payload").unwrap() - spaced.find("{\"actor").unwrap()
        );
        assert_eq!(
            event.webhook_body(),
            parse_line(Format::Flipt, spaced).unwrap().webhook_body()
        );
        assert!(event.webhook_body().contains(r#""type":"flag""#));
    }

    #[test]
    fn auto_detects_flipt_and_rejects_others() {
        let line = r#"{"version":"0.2","type":"flag","action":"created","metadata":{},"payload":null,"timestamp":"t"}"#;
        assert_eq!(parse_line(Format::Auto, line).unwrap().kind(), "flag");
        assert_eq!(
            parse_line(Format::Auto, r#"{"kind":"x"}"#)
                .unwrap_err()
                .tag(),
            "not_an_event"
        );
        assert_eq!(
            parse_line(Format::Auto, "[1,2]").unwrap_err().tag(),
            "not_an_event"
        );
        assert_eq!(
            parse_line(Format::Auto, "nope").unwrap_err().tag(),
            "not_json"
        );
    }
}
