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
        self.kind.as_deref().is_none_or(|k| k == &*event.kind)
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
