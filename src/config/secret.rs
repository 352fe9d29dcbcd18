//! Values from the config that must never be printed: [`Secret`] and [`SecretUrl`].
//!
//! Signing secrets, tokens and header values are [`Secret`]s: `Debug`, `Display` and `Serialize`
//! all write `***`, and a value of the wrong type (`signing_secret: 12345678901`) is refused with an
//! error that names the problem but not the value. The only way to the text is [`Secret::expose`],
//! used at the moment of signing or sending.
//!
//! Webhook URLs are [`SecretUrl`]s: parsed once with the `url` crate (the WHATWG rules browsers
//! use), shown as `scheme://host[:port]/***`, and split into the address requests go to and the
//! user info (`https://user:pass@host/`), which is sent as Basic auth and never shown or logged.

use serde::de::{self, Visitor};
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
        d.deserialize_any(QuietString).map(Secret)
    }
}

/// One value or a list of them, written either way: `signing_secret: [new, old]` (newest first,
/// while receivers rotate), `url: [nats://a:4222, nats://b:4222]`. A value of the wrong type is
/// refused without being quoted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OneOrMany<T>(pub Vec<T>);

/// Signing secrets, newest first; each shown as `***`.
pub type Secrets = OneOrMany<Secret>;

/// URLs (a NATS sink's servers); each shown masked.
pub type Urls = OneOrMany<SecretUrl>;

impl<T> OneOrMany<T> {
    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }
}

impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Visit<T> {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|t| vec![t])
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                self.visit_str(&v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<T>()? {
                    out.push(s);
                }
                Ok(out)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(QuietString::refuse("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(QuietString::refuse("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(QuietString::refuse("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(QuietString::refuse("a number"))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
            .map(OneOrMany)
    }
}

/// Reads a string; any other type is an error that does not quote the value (serde's default
/// `invalid type: found unsigned int 12345678901` would print a numeric secret).
pub(super) struct QuietString;

impl QuietString {
    fn refuse<E: de::Error>(what: &str) -> E {
        E::custom(format!(
            "must be a string, found {what} (put the value in quotes; it is not shown here)"
        ))
    }
}

impl<'de> Visitor<'de> for QuietString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(Self::refuse("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        Err(Self::refuse("a number"))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<String, E> {
        Err(Self::refuse("bytes"))
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Err(Self::refuse("nothing"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(Self::refuse("nothing"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse("a list"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse("a map"))
    }
}

/// A webhook (or bus) URL. It may carry a token in its path or query (Slack's do) and a password
/// in its user info, so it is only ever shown as `scheme://host[:port]` plus `/***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(url::Url);

impl SecretUrl {
    /// Parses `text`; the error never quotes it.
    pub fn parse(text: &str) -> Result<SecretUrl, String> {
        url::Url::parse(text)
            .map(SecretUrl)
            .map_err(|e| format!("not a valid URL ({e}); the value is not shown"))
    }

    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    pub fn has_host(&self) -> bool {
        self.0.host_str().is_some_and(|h| !h.is_empty())
    }

    /// The host (an IPv6 address in brackets) and the port, given or the scheme's default.
    pub fn host_port(&self) -> (String, Option<u16>) {
        let host = self.0.host_str().unwrap_or("").to_string();
        (host, self.0.port_or_known_default())
    }

    /// The URL requests go to: without user info, so no client or log below us ever sees it.
    pub fn target(&self) -> String {
        let mut u = self.0.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    /// `user` and `password` of the user info, percent-decoded, if the URL has any.
    pub fn credentials(&self) -> Option<(String, String)> {
        let user = self.0.username();
        let password = self.0.password();
        if user.is_empty() && password.is_none() {
            return None;
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Some((decode(user), decode(password.unwrap_or(""))))
    }

    /// The parts [`SecretUrl::redacted`] hides and a request sends: the path with its query, the
    /// path and the query alone, and each query value (a token in `?token=…`); empty if the path
    /// is `/` and there is no query.
    pub fn hidden_parts(&self) -> Vec<String> {
        let u = &self.0;
        let path = match u.path() {
            "/" | "" => None,
            path => Some(path.to_string()),
        };
        let mut parts: Vec<String> = path.iter().cloned().collect();
        if let Some(query) = u.query().filter(|q| !q.is_empty()) {
            parts.push(format!("{}?{query}", u.path()));
            parts.push(query.to_string());
            parts.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
        }
        parts
    }

    /// `scheme://host[:port]`, then `/***` if anything follows or user info was given.
    pub fn redacted(&self) -> String {
        let u = &self.0;
        let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
        if let Some(port) = u.port() {
            out.push_str(&format!(":{port}"));
        }
        let more = u.path() != "/" && !u.path().is_empty()
            || u.query().is_some()
            || u.fragment().is_some()
            || self.credentials().is_some();
        if more {
            out.push_str("/***");
        }
        out
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_any(QuietString)?;
        SecretUrl::parse(&text).map_err(de::Error::custom)
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
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        let err = serde_json::from_str::<Secret>("12345678901")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("12345678901") && err.contains("string"),
            "{err}"
        );
    }

    #[test]
    fn urls_keep_only_scheme_and_host() {
        let u = |s: &str| SecretUrl::parse(s).unwrap().redacted();
        assert_eq!(
            u("https://hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            u("http://user:pw@127.0.0.1:8080/?token=1"),
            "http://127.0.0.1:8080/***"
        );
        assert_eq!(
            u("http://user:pw@127.0.0.1:8080/"),
            "http://127.0.0.1:8080/***"
        );
        assert_eq!(u("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(u("https://h.example\\services\\S"), "https://h.example/***");
        for bad in [
            "https://user:p#ss@host/x",
            "https://user:pa/ss@host/",
            "hooks.slack.com/services/T/B/SECRET",
        ] {
            let err = SecretUrl::parse(bad).unwrap_err();
            assert!(!err.contains("ss") && !err.contains("SECRET"), "{err}");
        }
    }

    #[test]
    fn user_info_is_split_off() {
        let u = SecretUrl::parse("https://bot:p%40ss+w@h.example:8443/in?x=1").unwrap();
        assert_eq!(u.target(), "https://h.example:8443/in?x=1");
        assert_eq!(
            u.credentials(),
            Some(("bot".to_string(), "p@ss+w".to_string()))
        );
        assert_eq!(SecretUrl::parse("https://h/").unwrap().credentials(), None);
        assert_eq!(
            u.hidden_parts(),
            ["/in", "/in?x=1", "x=1", "1"].map(String::from)
        );
        assert!(
            SecretUrl::parse("https://h/")
                .unwrap()
                .hidden_parts()
                .is_empty()
        );
    }
}
