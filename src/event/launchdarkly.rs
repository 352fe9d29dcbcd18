//! LaunchDarkly's webhook body, which is an audit-log entry, mapped into the Flipt-style event
//! (SPEC §1.3).
//!
//! The entry: `_id, date` (epoch milliseconds), `kind, name, accesses[] {action, resource}`,
//! `member {email, firstName, lastName}`, `target`, `currentVersion`, `previousVersion`, …
//! `kind` gives the type (`flag`, `segment`, `project` → `namespace`, `environment`); the first
//! access's action gives the action by its verb (`create…` → created, `update…` → updated,
//! `delete…` → deleted; `updateOn`/`updateOff` also set payload `enabled`). Any other kind or verb
//! is [`Rejection::Unmapped`]: counted and skipped. The actor's `email` is the member's, `name`
//! their first and last name; the timestamp is `date` as RFC 3339 UTC with milliseconds. The
//! payload has `key` (from the `flag/KEY` or `segment/KEY` part of the resource string),
//! `namespace_key` (`proj/…`), `environment` (`env/…`) and `name`.

use super::fields::Fields;
use super::{Action, Event, Rejection};
use serde::Deserialize;
use serde_json::Map;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Deserialize)]
struct Access {
    action: String,
    #[serde(default)]
    resource: Option<String>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(default)]
    email: Option<String>,
    #[serde(default, rename = "firstName")]
    first_name: Option<String>,
    #[serde(default, rename = "lastName")]
    last_name: Option<String>,
}

/// Parses one LaunchDarkly audit-log entry.
pub fn parse(line: &str) -> Result<Event, Rejection> {
    from_fields(&Fields::parse(line)?)
}

/// Maps an entry already read into its fields.
pub fn from_fields(f: &Fields<'_>) -> Result<Event, Rejection> {
    let entry_kind: String = f.require("kind")?;
    let date: u64 = f.require("date")?;
    let accesses: Vec<Access> = f.get("accesses")?.unwrap_or_default();
    let access = accesses
        .first()
        .ok_or_else(|| Rejection::NotAnEvent("no accesses".into()))?;
    let kind = match entry_kind.as_str() {
        "flag" => "flag",
        "segment" => "segment",
        "project" => "namespace",
        "environment" => "environment",
        other => return Err(Rejection::Unmapped(format!("kind {other}"))),
    };
    let verb = access.action.as_str();
    let action = if verb.starts_with("create") {
        Action::Created
    } else if verb.starts_with("update") {
        Action::Updated
    } else if verb.starts_with("delete") {
        Action::Deleted
    } else {
        return Err(Rejection::Unmapped(format!("{entry_kind} {verb}")));
    };
    let mut actor = Map::new();
    if let Some(m) = f.get::<Member>("member")? {
        if let Some(email) = m.email.as_deref().filter(|s| !s.is_empty()) {
            actor.insert("email".into(), email.into());
        }
        let name = [m.first_name.as_deref(), m.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            actor.insert("name".into(), name.into());
        }
    }
    let mut payload = Map::new();
    if let Some(resource) = &access.resource {
        for part in resource.split(':') {
            // `flag/KEY`, possibly with `;tag` qualifiers after it.
            let (what, rest) = part.split_once('/').unwrap_or((part, ""));
            let value = rest.split(';').next().unwrap_or(rest);
            let key = match what {
                "flag" | "segment" => "key",
                "proj" => "namespace_key",
                "env" => "environment",
                _ => continue,
            };
            if !value.is_empty() && value != "*" {
                payload.insert(key.into(), value.into());
            }
        }
    }
    if let Some(name) = f.get::<String>("name")? {
        payload.insert("name".into(), name.into());
    }
    match verb {
        "updateOn" => {
            payload.insert("enabled".into(), true.into());
        }
        "updateOff" => {
            payload.insert("enabled".into(), false.into());
        }
        _ => {}
    }
    let when = UNIX_EPOCH + Duration::from_millis(date);
    let timestamp = humantime::format_rfc3339_millis(when).to_string();
    Event::mapped(f, kind, action, actor, payload, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of LaunchDarkly's documented sample webhook payload (an audit-log entry).
    const TURNED_ON: &str = r#"{"_links":{"canonical":{"href":"/api/v2/flags/default/new-ui","type":"application/json"},"self":{"href":"/api/v2/auditlog/57c0a8e29969090743529965","type":"application/json"}},"_id":"57c0a8e29969090743529965","date":1472243938774,"accesses":[{"action":"updateOn","resource":"proj/default:env/production:flag/new-ui"}],"kind":"flag","name":"New UI","description":"turned on the flag","shortDescription":"","member":{"_links":{"self":{"href":"/api/v2/members/548f6741c1efad40031b18ae","type":"application/json"}},"_id":"548f6741c1efad40031b18ae","email":"ariel@acme.com","firstName":"Ariel","lastName":"Flores"},"titleVerb":"turned on the flag","title":"Ariel Flores turned on the flag New UI in Production","target":{"_links":{},"name":"New UI","resources":["proj/default:env/production:flag/new-ui"]}}"#;

    fn body(line: &str) -> String {
        parse(line).unwrap().webhook_body()
    }

    #[test]
    fn a_flag_turned_on() {
        assert_eq!(
            body(TURNED_ON),
            r#"{"version":"0.2","type":"flag","action":"updated","metadata":{"actor":{"email":"ariel@acme.com","name":"Ariel Flores"}},"payload":{"enabled":true,"environment":"production","key":"new-ui","name":"New UI","namespace_key":"default"},"timestamp":"2016-08-26T20:38:58.774Z","status":"success"}"#
        );
    }

    #[test]
    fn kinds_and_verbs() {
        let with = |kind: &str, action: &str| {
            TURNED_ON
                .replace(r#""kind":"flag""#, &format!(r#""kind":"{kind}""#))
                .replace("updateOn", action)
        };
        let e = parse(&with("flag", "createFlag")).unwrap();
        assert_eq!((e.kind(), e.action), ("flag", Action::Created));
        let e = parse(&with("flag", "deleteFlag")).unwrap();
        assert_eq!((e.kind(), e.action), ("flag", Action::Deleted));
        assert!(!body(&with("flag", "updateOff")).contains("\"enabled\":true"));
        assert!(body(&with("flag", "updateOff")).contains("\"enabled\":false"));
        let e = parse(&with("project", "updateName")).unwrap();
        assert_eq!((e.kind(), e.action), ("namespace", Action::Updated));
        let e = parse(&with("segment", "createSegment")).unwrap();
        assert_eq!(e.kind(), "segment");
        assert!(matches!(
            parse(&with("member", "createMember")),
            Err(Rejection::Unmapped(_))
        ));
        assert!(matches!(
            parse(&with("flag", "cloneFlag")),
            Err(Rejection::Unmapped(_))
        ));
    }
}
