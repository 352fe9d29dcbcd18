//! Flipt's event filter syntax: `type:action` with `*` as a wildcard on either side
//! (`["flag:*", "segment:created"]`). Part of the event vocabulary, so the config can parse it.

use super::{Action, Event};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One `type:action` pattern; `None` is the `*` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    kind: Option<String>,
    action: Option<Action>,
}

impl EventPattern {
    pub const ALL: &'static str = "*:*";

    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, action) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not of the form type:action (e.g. \"flag:*\")"))?;
        let kind = match kind {
            "*" => None,
            k if !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                Some(k.to_string())
            }
            k => return Err(format!("{k:?} in {s:?} is not a type name or *")),
        };
        let action = match action {
            "*" => None,
            a => Some(Action::parse(a).ok_or_else(|| {
                format!("{a:?} in {s:?} is not an action (created, updated, deleted or *)")
            })?),
        };
        Ok(EventPattern { kind, action })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.kind.as_deref().is_none_or(|k| k == event.kind())
            && self.action.is_none_or(|a| a == event.action)
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.as_deref().unwrap_or("*");
        let action = self.action.map_or("*", Action::as_str);
        write!(f, "{kind}:{action}")
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One `match:` entry of a sink: a dotted path into the event (`payload.namespace_key`,
/// `metadata.actor.email`, `type`) and glob patterns (`*` any run of characters, `?` one); the
/// event passes when the value at the path matches one of them. Strings are matched as they are,
/// numbers and booleans as JSON writes them; a path that is not there (or holds an object, a list
/// or null) matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMatch {
    pub path: FieldPath,
    pub globs: Vec<String>,
}

/// A path into the event: a top-level field, and keys under `metadata` or `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub root: Root,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Version,
    Type,
    Action,
    Status,
    Timestamp,
    Metadata,
    Payload,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let mut parts = text.split('.');
        let root = match parts.next().unwrap_or("") {
            "version" => Root::Version,
            "type" => Root::Type,
            "action" => Root::Action,
            "status" => Root::Status,
            "timestamp" => Root::Timestamp,
            "metadata" => Root::Metadata,
            "payload" => Root::Payload,
            _ => {
                return Err(format!(
                    "{text:?} is not a path into the event (type, action, status, version, timestamp, metadata.…, payload.…)"
                ));
            }
        };
        let keys: Vec<String> = parts.map(str::to_string).collect();
        let nested = matches!(root, Root::Metadata | Root::Payload);
        if nested && keys.is_empty() {
            return Err(format!(
                "{text:?} names a whole object; name a field under it (payload.key)"
            ));
        }
        if !nested && !keys.is_empty() {
            return Err(format!(
                "{text:?}: {} has no fields",
                text.split('.').next().unwrap_or("")
            ));
        }
        if keys.iter().any(|k| k.is_empty()) {
            return Err(format!("{text:?} has an empty key"));
        }
        Ok(FieldPath { root, keys })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = match self.root {
            Root::Version => "version",
            Root::Type => "type",
            Root::Action => "action",
            Root::Status => "status",
            Root::Timestamp => "timestamp",
            Root::Metadata => "metadata",
            Root::Payload => "payload",
        };
        f.write_str(root)?;
        for k in &self.keys {
            write!(f, ".{k}")?;
        }
        Ok(())
    }
}

impl FieldMatch {
    /// Whether `event` passes. `parsed` holds `metadata` and `payload` once parsed, so several
    /// entries (and sinks) share one parse per event.
    pub fn matches(&self, event: &Event, parsed: &mut Parsed) -> bool {
        let text: Option<std::borrow::Cow<str>> = match self.path.root {
            Root::Version => Some(event.version().into()),
            Root::Type => Some(event.kind().into()),
            Root::Action => Some(event.action.as_str().into()),
            Root::Status => Some(event.status.as_str().into()),
            Root::Timestamp => Some(event.timestamp().into()),
            Root::Metadata | Root::Payload => {
                let base = parsed.get(event, self.path.root);
                self.path
                    .keys
                    .iter()
                    .try_fold(base, |at, k| at.get(k))
                    .and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.as_str().into()),
                        serde_json::Value::Number(n) => Some(n.to_string().into()),
                        serde_json::Value::Bool(b) => Some(b.to_string().into()),
                        _ => None,
                    })
            }
        };
        text.is_some_and(|t| self.globs.iter().any(|g| glob(g, &t)))
    }
}

/// `metadata` and `payload` of one event as values, parsed when first needed.
#[derive(Default)]
pub struct Parsed {
    metadata: Option<serde_json::Value>,
    payload: Option<serde_json::Value>,
}

impl Parsed {
    fn get(&mut self, event: &Event, root: Root) -> &serde_json::Value {
        let (slot, raw) = match root {
            Root::Metadata => (&mut self.metadata, event.metadata()),
            _ => (&mut self.payload, event.payload()),
        };
        // Text that no value can hold (`1e999`) matches nothing rather than failing the event.
        slot.get_or_insert_with(|| serde_json::from_str(raw).unwrap_or_default())
    }
}

/// Whether `text` matches `pattern`: `*` any run of characters (none too), `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A sink's whole `match:` map: every entry must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches(pub Vec<FieldMatch>);

impl Matches {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `event` passes every entry.
    pub fn accept(&self, event: &Event, parsed: &mut Parsed) -> bool {
        self.0.iter().all(|m| m.matches(event, parsed))
    }
}

impl<'de> Deserialize<'de> for Matches {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Globs {
            One(String),
            Many(Vec<String>),
        }
        let map = std::collections::BTreeMap::<String, Globs>::deserialize(d)?;
        let mut out = Vec::new();
        for (path, globs) in map {
            let path = FieldPath::parse(&path).map_err(serde::de::Error::custom)?;
            let globs = match globs {
                Globs::One(g) => vec![g],
                Globs::Many(g) => g,
            };
            if globs.is_empty() {
                return Err(serde::de::Error::custom(format!(
                    "{path}: an empty list would match nothing; omit the path to take every value"
                )));
            }
            out.push(FieldMatch { path, globs });
        }
        Ok(Matches(out))
    }
}

impl Serialize for Matches {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for m in &self.0 {
            map.serialize_entry(&m.path.to_string(), &m.globs)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("prod*", "production") && glob("prod*", "prod"));
        assert!(glob("*@example.com", "ops@example.com"));
        assert!(!glob("*@example.com", "ops@example.com.evil"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && !glob("x", ""));
        assert!(glob("*a*b*", "xxaxxbxx") && !glob("*a*b*", "xxbxxaxx"));
    }

    #[test]
    fn paths() {
        assert!(FieldPath::parse("payload.namespace_key").is_ok());
        assert!(FieldPath::parse("metadata.actor.email").is_ok());
        assert!(FieldPath::parse("type").is_ok());
        for bad in ["payloads.key", "payload", "type.x", "payload..key", ""] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }
}
