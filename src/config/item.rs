//! One item of the `sources` or `sinks` list, parsed by kind.
//!
//! An item's keys are split in two: those every kind takes (`name`, and a struct of common keys)
//! and those of its kind (a struct per kind, `deny_unknown_fields`). Each part is read by serde
//! from figment's own values, so a problem keeps its key path below the item; [`Located`] carries
//! that path out through serde's error, and the loader puts it back together with the item's
//! (`sinks.2.subject: only nats sinks use it`).

use figment::error::Kind;
use figment::value::{Dict, Tag, Value};
use serde::de::DeserializeOwned;

/// Marks the key path a [`Located`] problem carries inside a serde error message.
const MARK: char = '\u{1f}';

/// A problem inside one item: the key path below the item, and what is wrong.
#[derive(Debug)]
pub struct Located {
    pub path: Vec<String>,
    pub message: String,
}

impl Located {
    /// A problem of the key `key` of the item.
    pub fn at(key: &str, message: impl Into<String>) -> Located {
        Located {
            path: vec![key.to_string()],
            message: message.into(),
        }
    }

    /// A problem of the item as a whole.
    pub fn whole(message: impl Into<String>) -> Located {
        Located {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// figment's error, with the key it names (unknown, missing) as part of the path.
    pub fn from_figment(e: &figment::Error) -> Located {
        let mut path = e.path.clone();
        if let Kind::UnknownField(key, _) = &e.kind {
            path.push(key.clone());
        } else if let Kind::MissingField(key) = &e.kind {
            path.push(key.to_string());
        }
        Located {
            path,
            message: e.kind.to_string(),
        }
    }

    /// The problem as a serde error of the item; [`Located::decode`] takes the path back out.
    pub fn into_serde<E: serde::de::Error>(self) -> E {
        E::custom(format!(
            "{MARK}{}{MARK}{}",
            self.path.join("."),
            self.message
        ))
    }

    /// The key path and message of a problem made by [`Located::into_serde`], if it is one.
    pub fn decode(message: &str) -> Option<(Vec<String>, String)> {
        let rest = message.strip_prefix(MARK)?;
        let (path, message) = rest.split_once(MARK)?;
        let path = path
            .split('.')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        Some((path, message.to_string()))
    }
}

/// The item's keys, or a problem if it is not a table of keys.
pub fn keys_of_item(value: &Value) -> Result<Dict, Located> {
    match value {
        Value::Dict(_, dict) => Ok(dict.clone()),
        _ => Err(Located::whole("must be a table of keys")),
    }
}

/// The keys a struct with `deny_unknown_fields` takes, as serde lists them when it meets a key it
/// does not take.
pub fn keys_taken<T: DeserializeOwned>() -> &'static [&'static str] {
    let probe = Dict::from([("\u{0}".to_string(), Value::from(0u8))]);
    match Value::Dict(Tag::Default, probe).deserialize::<T>() {
        Err(e) => match e.kind {
            Kind::UnknownField(_, expected) => expected,
            _ => &[],
        },
        Ok(_) => &[],
    }
}

/// Takes `key` out of `dict` and reads it; `None` when it is not there.
pub fn take<T: DeserializeOwned>(dict: &mut Dict, key: &str) -> Result<Option<T>, Located> {
    match dict.remove(key) {
        None => Ok(None),
        Some(value) => value.deserialize::<T>().map(Some).map_err(|e| {
            let mut at = Located::from_figment(&e);
            at.path.insert(0, key.to_string());
            at
        }),
    }
}

/// Takes out of `dict` the keys in `keys`, as a table of their own.
pub fn split_off(dict: &mut Dict, keys: &[&str]) -> Dict {
    let taken: Vec<String> = dict
        .keys()
        .filter(|k| keys.contains(&k.as_str()))
        .cloned()
        .collect();
    taken
        .into_iter()
        .filter_map(|k| dict.remove(&k).map(|v| (k, v)))
        .collect()
}

/// Reads a table of keys as `T`. A key `T` does not take is described by `unknown` (which kinds
/// take it, or what this kind takes).
pub fn read<T: DeserializeOwned>(
    dict: Dict,
    unknown: &dyn Fn(&str) -> String,
) -> Result<T, Located> {
    Value::Dict(Tag::Default, dict)
        .deserialize::<T>()
        .map_err(|e| match &e.kind {
            Kind::UnknownField(key, _) => Located::at(key, unknown(key)),
            _ => Located::from_figment(&e),
        })
}

/// What to say of a key the kind `kind` does not take: which other kinds use it, or, when none
/// does, that it is unknown and what `kind` takes.
pub fn unknown_key(
    key: &str,
    kind: &str,
    what: &str,
    kinds: &[(&str, Vec<&'static str>)],
) -> String {
    let users: Vec<&str> = kinds
        .iter()
        .filter(|(k, keys)| *k != kind && keys.contains(&key))
        .map(|(k, _)| *k)
        .collect();
    if users.is_empty() {
        let mut takes: Vec<&str> = kinds
            .iter()
            .filter(|(k, _)| *k == kind)
            .flat_map(|(_, keys)| keys.iter().copied())
            .collect();
        takes.sort_unstable();
        let article = if kind.starts_with(['a', 'e', 'h', 'i', 'o']) {
            "an"
        } else {
            "a"
        };
        format!(
            "unknown key `{key}`; {article} {kind} {what} takes {}",
            takes.join(", ")
        )
    } else {
        format!("only {} {what}s use it", users.join(" and "))
    }
}
