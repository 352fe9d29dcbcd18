//! `Secret`: a string from the config that must never be printed.
//!
//! Signing secrets, tokens and header values are wrapped in it. `Debug`, `Display` and `Serialize`
//! all write `***`, so `flagtail check`, logs and error messages cannot leak the value by accident;
//! the only way to the text is [`Secret::expose`], which call sites use at the moment of signing or
//! sending.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A configured value that is shown as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from somewhere other than the config file (e.g. `signing_secret_file`).
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The real value, for signing and sending only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }
}

/// A webhook URL: it may carry a token in its path or query (Slack's do), so it is shown as
/// `scheme://host[:port]/***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with everything after the authority (and any user info) masked.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let tail = if authority_end < rest.len() && &rest[authority_end..] != "/" {
            "/***"
        } else {
            ""
        };
        format!("{scheme}://{host}{tail}")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod url_tests {
    use super::SecretUrl;

    #[test]
    fn urls_keep_only_scheme_and_host() {
        let u = |s: &str| SecretUrl(s.into()).redacted();
        assert_eq!(
            u("https://hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            u("http://user:pw@127.0.0.1:8080/?token=1"),
            "http://127.0.0.1:8080/***"
        );
        assert_eq!(u("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
    }
}
