//! `${VAR}` substitution in every string value of the config.
//!
//! Runs on figment's value tree after the file and environment are merged and before the typed
//! config is extracted, so `concurrency: ${N}` works as well as `url: ${HOOK_URL}`. A missing
//! variable is an error that names the variable and the key; `$${` writes a literal `${`.
//! It does not look at keys, only values.

use figment::value::{Dict, Value};
use std::collections::BTreeMap;

/// A value `${VAR}` substitution changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    /// As the user wrote it: `Bearer ${TOKEN}`.
    pub written: String,
    /// What it became; never to be printed.
    pub expanded: String,
}

/// Replaces `${VAR}` in every string below `dict`; `path` names the keys for error messages.
/// Collects every problem found, not just the first, and in `written` the text as written of
/// every value that substitution changed.
pub fn interpolate_dict(
    dict: &mut Dict,
    path: &str,
    errors: &mut Vec<String>,
    written: &mut BTreeMap<String, Substituted>,
) {
    for (key, value) in dict.iter_mut() {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        interpolate_value(value, &here, errors, written);
    }
}

fn interpolate_value(
    value: &mut Value,
    path: &str,
    errors: &mut Vec<String>,
    written: &mut BTreeMap<String, Substituted>,
) {
    match value {
        Value::String(_, s) => match expand(s, |name| std::env::var(name).ok()) {
            Ok(expanded) if expanded != *s => {
                let sub = Substituted {
                    written: std::mem::replace(s, expanded.clone()),
                    expanded,
                };
                written.insert(path.to_string(), sub);
            }
            Ok(_) => {}
            Err(name) => errors.push(format!("{path}: environment variable {name} is not set")),
        },
        Value::Dict(_, dict) => interpolate_dict(dict, path, errors, written),
        Value::Array(_, items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}.{i}"), errors, written);
            }
        }
        _ => {}
    }
}

/// Expands `${NAME}` using `lookup`; `Err(NAME)` for the first variable that is not set.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => return Err(name.to_string()),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(&rest[at..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "abc".to_string())
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("Bearer ${TOKEN}", env).unwrap(), "Bearer abc");
        assert_eq!(expand("${TOKEN}${TOKEN}", env).unwrap(), "abcabc");
        assert_eq!(
            expand("cost $5, $${TOKEN}", env).unwrap(),
            "cost $5, ${TOKEN}"
        );
        assert_eq!(expand("open ${TOKEN", env).unwrap(), "open ${TOKEN");
        assert_eq!(expand("${MISSING}", env).unwrap_err(), "MISSING");
    }
}
