//! Flipt's `flipt.audit.Event` protobuf (Flipt 1.61's `rpc/flipt/audit/event.proto`, what its
//! Kafka sink writes with `encoding: protobuf`), encoded by hand from an event.
//!
//! Hand-written rather than generated (prost): it is one message of seven fields with two small
//! nested ones, `google.protobuf.Timestamp` and `google.protobuf.Struct`; a code generator would
//! add a build step and `protoc` to every build for ~120 lines of wire format. Tests decode what
//! this writes with Flipt's own `.proto` compiled by an independent `protoc`.
//!
//! Field numbers: Event { version = 1; type = 2; action = 3; Metadata metadata = 4;
//! optional Struct payload = 5; Timestamp timestamp = 6; optional string status = 7 };
//! Metadata { optional Actor actor = 1 }; Actor { authentication = 1; ip = 2; email = 3;
//! name = 4; picture = 5 }.

use crate::event::Event;
use serde_json::Value;

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// The event as Flipt's Kafka sink encodes it. Like Flipt, a timestamp that is not RFC 3339
/// becomes the time of encoding, and the actor is always present (empty when the event has none).
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + event.payload().len());
    string(&mut out, 1, event.version());
    string(&mut out, 2, event.kind());
    string(&mut out, 3, event.action.as_str());
    message(&mut out, 4, &metadata(event.metadata()));
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(event.payload()) {
        message(&mut out, 5, &structure(&map));
    }
    message(&mut out, 6, &timestamp(event.timestamp()));
    // `optional`: written even when empty, as Flipt sets it always.
    key(&mut out, 7, LEN);
    bytes(&mut out, event.status.as_str().as_bytes());
    out
}

/// `Metadata { actor }` from the event's metadata JSON.
fn metadata(json: &str) -> Vec<u8> {
    let value: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let actor = value.get("actor");
    let field = |name: &str| {
        actor
            .and_then(|a| a.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let mut a = Vec::new();
    for (number, name) in [
        (1, "authentication"),
        (2, "ip"),
        (3, "email"),
        (4, "name"),
        (5, "picture"),
    ] {
        string(&mut a, number, field(name));
    }
    let mut out = Vec::new();
    message(&mut out, 1, &a);
    out
}

/// `google.protobuf.Timestamp { seconds = 1; nanos = 2 }`.
fn timestamp(text: &str) -> Vec<u8> {
    let at = humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .filter(|_| text.contains('T'))
        .unwrap_or_else(std::time::SystemTime::now);
    let (seconds, nanos) = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    let mut out = Vec::new();
    if seconds != 0 {
        key(&mut out, 1, VARINT);
        varint(&mut out, seconds as u64);
    }
    if nanos != 0 {
        key(&mut out, 2, VARINT);
        varint(&mut out, u64::from(nanos));
    }
    out
}

/// `google.protobuf.Struct { map<string, Value> fields = 1 }`.
fn structure(map: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in map {
        let mut entry = Vec::new();
        string(&mut entry, 1, name);
        message(&mut entry, 2, &value_of(value));
        message(&mut out, 1, &entry);
    }
    out
}

/// `google.protobuf.Value`: null_value = 1, number_value = 2, string_value = 3, bool_value = 4,
/// struct_value = 5, list_value = 6 (`ListValue { repeated Value values = 1 }`).
fn value_of(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        Value::Null => {
            key(&mut out, 1, VARINT);
            varint(&mut out, 0);
        }
        Value::Number(n) => {
            key(&mut out, 2, FIXED64);
            out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
        }
        Value::String(s) => {
            key(&mut out, 3, LEN);
            bytes(&mut out, s.as_bytes());
        }
        Value::Bool(b) => {
            key(&mut out, 4, VARINT);
            varint(&mut out, u64::from(*b));
        }
        Value::Object(map) => message(&mut out, 5, &structure(map)),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                message(&mut list, 1, &value_of(item));
            }
            message(&mut out, 6, &list);
        }
    }
    out
}

/// A proto3 string field; empty ones are left out, as proto3 does.
fn string(out: &mut Vec<u8>, number: u32, text: &str) {
    if !text.is_empty() {
        key(out, number, LEN);
        bytes(out, text.as_bytes());
    }
}

/// A nested message field (written even when empty: it is present).
fn message(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    key(out, number, LEN);
    bytes(out, body);
}

fn key(out: &mut Vec<u8>, number: u32, wire: u8) {
    varint(out, (u64::from(number) << 3) | u64::from(wire));
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    #[test]
    fn varints_and_negative_seconds_are_written_as_protobuf_does() {
        let mut out = Vec::new();
        super::varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        // 2026-01-01T00:00:00Z = 1767225600 s.
        let t = super::timestamp("2026-01-01T00:00:00Z");
        let mut want = vec![0x08];
        super::varint(&mut want, 1_767_225_600);
        assert_eq!(t, want);
    }
}
