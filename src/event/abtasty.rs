//! AB Tasty's webhook bodies (Flagship, and its successor Feature Experimentation & Rollouts)
//! mapped into the Flipt-style event (SPEC §1.3).
//!
//! Every body has the common fields `event, user_id, user_email, user_role, date` (ISO 8601), and
//! fields of its event: `account_id, account_name, environment_id, campaign_id, campaign_name,
//! campaign_type, campaign_status` for feature events, `flag_key` for flag events. The two
//! products spell the same events differently (`Flag.new` / `Flag created`); both are read.
//!
//! | event | type / action |
//! |---|---|
//! | `Feature.active`, `Feature.paused`, `Feature.status`, `Campaign.status.changed` | flag / updated, with `enabled` |
//! | `Flag.new`, `Flag created` | flag / created |
//! | `Flag.deleted`, `Flag removed` | flag / deleted |
//! | `Environment.sync`, `Environment.synchronize` | environment / updated |
//! | `… access granted to user` (project or account) | access / created |
//! | `… edit role granted to user` | access / updated |
//! | `… access removed` | access / deleted |
//!
//! Any other event name is [`Rejection::Unmapped`]: counted and skipped. The actor's `email` is
//! `user_email`; the timestamp is `date` as written. The payload is every field but the common
//! ones, plus `key` (`flag_key`, else `campaign_id`), `name` (`campaign_name`), `environment`
//! (`environment_id`), `namespace_key` (`project_id`) and `enabled` where the event says it.

use super::fields::Fields;
use super::{Action, Event, Rejection};
use serde_json::{Map, Value};

/// The fields every AB Tasty webhook carries; they become the actor and the timestamp.
const COMMON: [&str; 5] = ["event", "user_id", "user_email", "user_role", "date"];

/// Parses one AB Tasty webhook body.
pub fn parse(line: &str) -> Result<Event, Rejection> {
    from_fields(&Fields::parse(line)?)
}

/// Maps a body already read into its fields.
pub fn from_fields(f: &Fields<'_>) -> Result<Event, Rejection> {
    let name: String = f.require("event")?;
    let date: String = f.require("date")?;
    let (kind, action, enabled) =
        map_event(&name).ok_or_else(|| Rejection::Unmapped(name.clone()))?;
    let enabled = match enabled {
        Enabled::Is(on) => Some(on),
        Enabled::FromStatus => {
            let status = match f.get::<String>("campaign_status")? {
                Some(s) => Some(s),
                None => f.get::<String>("status")?,
            };
            status.as_deref().and_then(status_enabled)
        }
        Enabled::Unsaid => None,
    };
    let mut actor = Map::new();
    if let Some(email) = f.get::<String>("user_email")?.filter(|e| !e.is_empty()) {
        actor.insert("email".into(), email.into());
    }
    let mut payload = Map::new();
    for (key, raw) in f.iter().filter(|(k, _)| !COMMON.contains(k)) {
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| Rejection::NotAnEvent(format!("field {key:?}: {e}")))?;
        payload.insert(key.to_string(), value);
    }
    let copy = |payload: &mut Map<String, Value>, to: &str, from: &[&str]| {
        if payload.contains_key(to) {
            return;
        }
        if let Some(v) = from
            .iter()
            .find_map(|k| payload.get(*k).filter(|v| !v.is_null()))
        {
            let v = v.clone();
            payload.insert(to.into(), v);
        }
    };
    copy(&mut payload, "key", &["flag_key", "campaign_id"]);
    copy(&mut payload, "name", &["campaign_name", "flag_name"]);
    copy(&mut payload, "environment", &["environment_id"]);
    copy(&mut payload, "namespace_key", &["project_id"]);
    if let Some(on) = enabled {
        payload.insert("enabled".into(), on.into());
    }
    Event::mapped(f, kind, action, actor, payload, date)
}

/// Where an event's `enabled` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enabled {
    /// The event name says it (`Feature.active`).
    Is(bool),
    /// The campaign's new status says it (`Feature.status`).
    FromStatus,
    /// The event is not about being on or off.
    Unsaid,
}

/// AB Tasty's event name → (type, action, where `enabled` comes from); `None`: unmapped.
pub fn map_event(name: &str) -> Option<(&'static str, Action, Enabled)> {
    use Action::{Created, Deleted, Updated};
    let lower = name.trim().to_ascii_lowercase();
    let row = match lower.as_str() {
        "feature.active" => ("flag", Updated, Enabled::Is(true)),
        "feature.paused" => ("flag", Updated, Enabled::Is(false)),
        "feature.status" | "campaign.status.changed" => ("flag", Updated, Enabled::FromStatus),
        "flag.new" | "flag created" => ("flag", Created, Enabled::Unsaid),
        "flag.deleted" | "flag removed" => ("flag", Deleted, Enabled::Unsaid),
        "environment.sync" | "environment.synchronize" | "environment.synchronized" => {
            ("environment", Updated, Enabled::Unsaid)
        }
        t if t.starts_with("project ") || t.starts_with("account ") => {
            let action = if t.contains("edit role granted") {
                Updated
            } else if t.contains("access granted") {
                Created
            } else if t.contains("access removed") {
                Deleted
            } else {
                return None;
            };
            ("access", action, Enabled::Unsaid)
        }
        _ => return None,
    };
    Some(row)
}

/// Whether a campaign status means on (`active`, `live`, `running`) or off (`paused`,
/// `interrupted`, `draft`, `stopped`); `None` for any other.
fn status_enabled(status: &str) -> Option<bool> {
    match status.to_ascii_lowercase().as_str() {
        "active" | "live" | "running" | "on" => Some(true),
        "paused" | "interrupted" | "draft" | "stopped" | "off" | "inactive" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TURNED_ON: &str = r#"{"event":"Feature.active","user_id":"u-17","user_email":"ops<1>@acme.io","user_role":"admin","date":"2026-11-23T06:00:00+00:00","account_id":"acc-1","account_name":"Acme","environment_id":"env-prod","campaign_id":"c-42","campaign_name":"New checkout","campaign_type":"toggle","campaign_status":"active"}"#;

    #[test]
    fn a_feature_turned_on() {
        assert_eq!(
            parse(TURNED_ON).unwrap().webhook_body(),
            r#"{"version":"0.2","type":"flag","action":"updated","metadata":{"actor":{"email":"ops\u003c1\u003e@acme.io"}},"payload":{"account_id":"acc-1","account_name":"Acme","campaign_id":"c-42","campaign_name":"New checkout","campaign_status":"active","campaign_type":"toggle","enabled":true,"environment":"env-prod","environment_id":"env-prod","key":"c-42","name":"New checkout"},"timestamp":"2026-11-23T06:00:00+00:00","status":"success"}"#
        );
    }

    #[test]
    fn status_events_read_enabled_from_the_status() {
        let paused = TURNED_ON
            .replace("Feature.active", "Feature.status")
            .replace(
                r#""campaign_status":"active""#,
                r#""campaign_status":"interrupted""#,
            );
        assert!(
            parse(&paused)
                .unwrap()
                .webhook_body()
                .contains(r#""enabled":false"#)
        );
        let unknown = paused.replace("interrupted", "archived");
        assert!(!parse(&unknown).unwrap().webhook_body().contains("enabled"));
    }

    #[test]
    fn the_table() {
        use Action::*;
        for (name, kind, action) in [
            ("Feature.active", "flag", Updated),
            ("Feature.paused", "flag", Updated),
            ("Feature.status", "flag", Updated),
            ("Campaign.status.changed", "flag", Updated),
            ("Flag.new", "flag", Created),
            ("Flag created", "flag", Created),
            ("Flag.deleted", "flag", Deleted),
            ("Flag removed", "flag", Deleted),
            ("Environment.synchronize", "environment", Updated),
            ("Environment.sync", "environment", Updated),
            ("Project access granted to user", "access", Created),
            ("Project edit role granted to user", "access", Updated),
            ("Project access removed", "access", Deleted),
            ("Account access granted to user", "access", Created),
            ("Account edit role granted to user", "access", Updated),
            ("Account access removed", "access", Deleted),
        ] {
            assert_eq!(
                map_event(name).map(|r| (r.0, r.1)),
                Some((kind, action)),
                "{name}"
            );
        }
        for name in ["Report.ready", "Project renamed", "", "Feature"] {
            assert_eq!(map_event(name), None, "{name}");
        }
        assert!(matches!(
            parse(r#"{"event":"Report.ready","date":"t"}"#),
            Err(Rejection::Unmapped(_))
        ));
    }
}
