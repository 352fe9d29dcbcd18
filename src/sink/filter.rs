//! Which events a sink takes: Flipt's `type:action` patterns with `*` wildcards, and source names.
//!
//! `["flag:*", "segment:created"]` matches every flag event and created segments. The default is
//! `["*:*"]`. A sink with `sources: [a, b]` takes only events read by those sources.

use crate::event::{Action, Event};
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

/// The whole filter of one sink.
#[derive(Debug, Clone)]
pub struct Filter {
    pub events: Vec<EventPattern>,
    /// `None`: every source.
    pub sources: Option<Vec<String>>,
}

impl Filter {
    /// Whether the sink takes this event read by `source`.
    pub fn accepts(&self, source: &str, event: &Event) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == source))
            && self.events.iter().any(|p| p.matches(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Format, parse_line};

    fn event(kind: &str, action: &str) -> Event {
        let line = format!(
            r#"{{"version":"0.2","type":"{kind}","action":"{action}","metadata":{{}},"payload":null,"timestamp":"t"}}"#
        );
        parse_line(Format::Flipt, &line).unwrap()
    }

    #[test]
    fn patterns_match_like_flipt() {
        let f = Filter {
            events: vec![
                EventPattern::parse("flag:*").unwrap(),
                EventPattern::parse("segment:created").unwrap(),
            ],
            sources: Some(vec!["flipt".into()]),
        };
        assert!(f.accepts("flipt", &event("flag", "deleted")));
        assert!(f.accepts("flipt", &event("segment", "created")));
        assert!(!f.accepts("flipt", &event("segment", "deleted")));
        assert!(!f.accepts("other", &event("flag", "created")));
        assert!(
            EventPattern::parse("*:*")
                .unwrap()
                .matches(&event("rule", "updated"))
        );
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(
            EventPattern::parse("flag")
                .unwrap_err()
                .contains("type:action")
        );
        assert!(
            EventPattern::parse("flag:create")
                .unwrap_err()
                .contains("not an action")
        );
        assert!(
            EventPattern::parse("Flag:*")
                .unwrap_err()
                .contains("not a type name")
        );
        assert_eq!(
            EventPattern::parse("*:deleted").unwrap().to_string(),
            "*:deleted"
        );
    }
}
