//! Which events a sink takes: Flipt's `type:action` patterns ([`EventPattern`], part of the event
//! vocabulary so the config can read them) and source names.
//!
//! `["flag:*", "segment:created"]` matches every flag event and created segments. The default is
//! `["*:*"]`. A sink with `sources: [a, b]` takes only events read by those sources.

use crate::event::Event;
pub use crate::event::pattern::{EventPattern, Matches, Parsed};

/// The whole filter of one sink.
#[derive(Debug, Clone)]
pub struct Filter {
    pub events: Vec<EventPattern>,
    /// `None`: every source.
    pub sources: Option<Vec<String>>,
    /// `match:` entries on the event's fields.
    pub matches: Matches,
}

impl Filter {
    /// Whether the sink takes this event read by `source`. `parsed` keeps the event's metadata
    /// and payload once a `match:` needed them, for the next sink's filter.
    pub fn accepts(&self, source: &str, event: &Event, parsed: &mut Parsed) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == source))
            && self.events.iter().any(|p| p.matches(event))
            && self.matches.accept(event, parsed)
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
            matches: Matches::default(),
        };
        assert!(f.accepts("flipt", &event("flag", "deleted"), &mut Parsed::default()));
        assert!(f.accepts(
            "flipt",
            &event("segment", "created"),
            &mut Parsed::default()
        ));
        assert!(!f.accepts(
            "flipt",
            &event("segment", "deleted"),
            &mut Parsed::default()
        ));
        assert!(!f.accepts("other", &event("flag", "created"), &mut Parsed::default()));
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
