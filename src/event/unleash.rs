//! Unleash's event objects (its webhook integration's default body, its event log) mapped into the
//! Flipt-style event (SPEC §1.3).
//!
//! The object: `id, type, createdBy, createdByUserId, createdAt, data, preData, tags, featureName,
//! project, environment`. `type` decides the event's type and action (the table in [`map_type`]);
//! a type no row covers (client metrics, favourites, …) is [`Rejection::Unmapped`]: counted and
//! skipped, never an error. The actor is `createdBy` (an email if it has `@`, else a name), with
//! `authentication` from Unleash's system user ids (−1337: none, −42: an admin token). The
//! timestamp is `createdAt` as written. The payload is `data` (`preData` for deletions), with
//! `key` (the feature), `namespace_key` (the project), `environment`, and `enabled` for the
//! environment on/off events; written as Go writes a map (keys sorted, `<>&` escaped).

use super::fields::Fields;
use super::{Action, Event, Rejection};
use serde_json::{Map, Value};

/// Unleash's user id for changes made with authentication turned off.
const UNAUTHENTICATED: i64 = -1337;
/// Unleash's user id for changes made with an admin API token.
const ADMIN_TOKEN: i64 = -42;

/// Parses one Unleash event object.
pub fn parse(line: &str) -> Result<Event, Rejection> {
    from_fields(&Fields::parse(line)?)
}

/// Maps an event object already read into its fields.
pub fn from_fields(f: &Fields<'_>) -> Result<Event, Rejection> {
    let event_type: String = f.require("type")?;
    let created_at: String = f.require("createdAt")?;
    let (kind, action, enabled) =
        map_type(&event_type).ok_or_else(|| Rejection::Unmapped(event_type.clone()))?;
    let mut actor = Map::new();
    if let Some(by) = f.get::<String>("createdBy")?.filter(|b| !b.is_empty()) {
        let key = if by.contains('@') { "email" } else { "name" };
        actor.insert(key.into(), by.into());
    }
    match f.get::<i64>("createdByUserId")? {
        Some(UNAUTHENTICATED) => {
            actor.insert("authentication".into(), "none".into());
        }
        Some(ADMIN_TOKEN) => {
            actor.insert("authentication".into(), "token".into());
        }
        _ => {}
    }
    let (data, pre_data) = (f.get::<Value>("data")?, f.get::<Value>("preData")?);
    let base = match action {
        Action::Deleted => pre_data.or(data),
        _ => data.or(pre_data),
    };
    let mut payload = match base {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => Map::new(),
        Some(other) => Map::from_iter([("data".to_string(), other)]),
    };
    if let Some(f) = f.get::<String>("featureName")? {
        payload.insert("key".into(), f.into());
    }
    if let Some(p) = f.get::<String>("project")? {
        payload.insert("namespace_key".into(), p.into());
    }
    if let Some(env) = f.get::<String>("environment")? {
        payload.insert("environment".into(), env.into());
    }
    if let Some(on) = enabled {
        payload.insert("enabled".into(), on.into());
    }
    Event::mapped(f, kind, action, actor, payload, created_at)
}

/// Unleash's event type → (type, action, `enabled` for on/off events); `None`: unmapped.
pub fn map_type(t: &str) -> Option<(&'static str, Action, Option<bool>)> {
    use Action::{Created, Deleted, Updated};
    let by_suffix = |t: &str| {
        if t.ends_with("-created") || t.ends_with("-added") {
            Some(Created)
        } else if t.ends_with("-updated") || t.ends_with("-changed") {
            Some(Updated)
        } else if t.ends_with("-deleted") || t.ends_with("-removed") {
            Some(Deleted)
        } else {
            None
        }
    };
    let row = match t {
        "feature-created" | "feature-revived" => ("flag", Created, None),
        "feature-deleted" | "feature-archived" => ("flag", Deleted, None),
        "feature-environment-enabled" => ("flag", Updated, Some(true)),
        "feature-environment-disabled" => ("flag", Updated, Some(false)),
        "feature-updated"
        | "feature-metadata-updated"
        | "feature-type-updated"
        | "feature-project-change"
        | "feature-stale-on"
        | "feature-stale-off"
        | "feature-potentially-stale-on" => ("flag", Updated, None),
        "feature-strategy-add" => ("rollout", Created, None),
        "feature-strategy-update" => ("rollout", Updated, None),
        "feature-strategy-remove" => ("rollout", Deleted, None),
        "feature-variants-updated" | "feature-environment-variants-updated" => {
            ("variant", Updated, None)
        }
        "feature-tagged" => ("tag", Created, None),
        "feature-untagged" => ("tag", Deleted, None),
        t if t.starts_with("change-request-") => {
            let action = match t {
                "change-request-created" => Created,
                "change-request-discarded" | "change-request-cancelled" => Deleted,
                _ => Updated,
            };
            ("change_request", action, None)
        }
        "user-created" | "user-updated" | "user-deleted" => ("access", by_suffix(t)?, None),
        t if t.starts_with("project-access-")
            || t.starts_with("project-user-")
            || t.starts_with("project-group-")
            || t.starts_with("group-")
            || t.starts_with("role-") =>
        {
            ("access", by_suffix(t)?, None)
        }
        t if t.starts_with("segment-") => ("segment", by_suffix(t)?, None),
        "project-created" | "project-updated" | "project-deleted" => {
            ("namespace", by_suffix(t)?, None)
        }
        t if t.starts_with("environment-") => ("environment", by_suffix(t)?, None),
        t if t.starts_with("api-token-") || t.starts_with("pat-") => ("token", by_suffix(t)?, None),
        _ => return None,
    };
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(line: &str) -> String {
        parse(line).unwrap().webhook_body()
    }

    #[test]
    fn environment_enabled_becomes_flag_updated_with_enabled() {
        let line = r#"{"id":7,"type":"feature-environment-enabled","createdBy":"admin@example.com","createdByUserId":1,"createdAt":"2026-11-23T06:00:00.000Z","data":null,"preData":null,"tags":[],"featureName":"new-ui","project":"default","environment":"development"}"#;
        assert_eq!(
            body(line),
            r#"{"version":"0.2","type":"flag","action":"updated","metadata":{"actor":{"email":"admin@example.com"}},"payload":{"enabled":true,"environment":"development","key":"new-ui","namespace_key":"default"},"timestamp":"2026-11-23T06:00:00.000Z","status":"success"}"#
        );
    }

    #[test]
    fn deletions_carry_pre_data_and_system_users_their_authentication() {
        let line = r#"{"id":8,"type":"feature-archived","createdBy":"unknown","createdByUserId":-1337,"createdAt":"t","data":null,"preData":{"description":"<b>"},"featureName":"x","project":"p"}"#;
        assert_eq!(
            body(line),
            r#"{"version":"0.2","type":"flag","action":"deleted","metadata":{"actor":{"authentication":"none","name":"unknown"}},"payload":{"description":"\u003cb\u003e","key":"x","namespace_key":"p"},"timestamp":"t","status":"success"}"#
        );
    }

    #[test]
    fn the_table() {
        use Action::*;
        for (t, kind, action) in [
            ("feature-created", "flag", Created),
            ("feature-revived", "flag", Created),
            ("feature-deleted", "flag", Deleted),
            ("feature-stale-on", "flag", Updated),
            ("feature-strategy-add", "rollout", Created),
            ("feature-strategy-remove", "rollout", Deleted),
            ("feature-environment-variants-updated", "variant", Updated),
            ("feature-untagged", "tag", Deleted),
            ("segment-updated", "segment", Updated),
            ("project-deleted", "namespace", Deleted),
            ("environment-created", "environment", Created),
            ("api-token-created", "token", Created),
            ("pat-deleted", "token", Deleted),
            ("change-request-created", "change_request", Created),
            ("change-request-applied", "change_request", Updated),
            ("change-request-discarded", "change_request", Deleted),
            ("project-access-added", "access", Created),
            ("user-deleted", "access", Deleted),
            ("role-updated", "access", Updated),
        ] {
            assert_eq!(map_type(t).map(|r| (r.0, r.1)), Some((kind, action)), "{t}");
        }
        for t in [
            "feature-favorited",
            "client-metrics",
            "environment-import",
            "addon-config-created",
            "project-environment-added",
            "user-preference-updated",
            "public-signup-token-created",
        ] {
            assert_eq!(map_type(t), None, "{t}");
        }
        assert!(matches!(
            parse(r#"{"type":"feature-favorited","createdAt":"t"}"#),
            Err(Rejection::Unmapped(_))
        ));
    }
}
