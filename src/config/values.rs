//! Small value types of the config, each checked where it is read, so a bad value is refused by
//! the parser with its key: sizes, file modes, names, counts, delays, addresses, URL paths.
//!
//! Numbers are lenient: written as a number or as a string (what `${VAR}` substitution makes).

use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// A number or a text, for values that `${VAR}` substitution may turn into strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

/// A whole number written as a number or as a string.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a whole number"))),
    }
}

/// A size: a whole number of bytes, optionally with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => return Ok(ByteSize(n)),
            NumOrText::Text(t) => t,
        };
        let t = text.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(digits);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => u64::MAX,
        };
        n.parse::<u64>()
            .ok()
            .filter(|_| scale != u64::MAX)
            .and_then(|n| n.checked_mul(scale))
            .map(ByteSize)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a size like 256MiB (units B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            })
    }
}

/// Unix permission bits, written as octal digits: `"0640"` (or `640`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    pub const PRIVATE: FileMode = FileMode(0o600);
}

impl Default for FileMode {
    fn default() -> Self {
        FileMode::PRIVATE
    }
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let digits = match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => n.to_string(),
            NumOrText::Text(t) => t.trim().to_string(),
        };
        match u32::from_str_radix(&digits, 8) {
            Ok(bits) if !digits.is_empty() && bits <= 0o777 => Ok(FileMode(bits)),
            _ => Err(serde::de::Error::custom(format!(
                "{digits:?} is not a file mode like \"0600\" (octal, at most 0777)"
            ))),
        }
    }
}

/// A source or sink name: `[a-z0-9_-]+`. Names appear in file names and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Name(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "name {s:?} must match [a-z0-9_-]+"
            )))
        }
    }
}

/// A count that must be at least 1 (`concurrency`, `batch.max_events`, `rate_limit_burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Count(pub u32);

impl Count {
    pub const ONE: Count = Count(1);

    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl Default for Count {
    fn default() -> Self {
        Count::ONE
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = lenient_u64(d)?;
        match u32::try_from(n) {
            Ok(0) => Err(serde::de::Error::custom("must be at least 1")),
            Ok(n) => Ok(Count(n)),
            Err(_) => Err(serde::de::Error::custom(format!("{n} is too large"))),
        }
    }
}

/// A whole number of at least 1 that may be large (`max_body_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Positive(pub u64);

impl Positive {
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match lenient_u64(d)? {
            0 => Err(serde::de::Error::custom("must be at least 1")),
            n => Ok(Positive(n)),
        }
    }
}

/// Clients a socket or HTTP source serves at once unless `max_connections` says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 64;
/// The most `max_connections` may allow (larger values are taken as this).
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// Clients a listening source serves at once: at least 1, at most [`MAX_CONNECTIONS`] (more is
/// taken as that). Default [`DEFAULT_CONNECTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Connections(pub usize);

impl Default for Connections {
    fn default() -> Self {
        Connections(DEFAULT_CONNECTIONS)
    }
}

impl<'de> Deserialize<'de> for Connections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match lenient_u64(d)? {
            0 => Err(serde::de::Error::custom("must be at least 1")),
            n => Ok(Connections(
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(MAX_CONNECTIONS),
            )),
        }
    }
}

/// A delay of at least 1ms, written as `500ms`, `2s`, `1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Delay(#[serde(with = "humantime_serde")] pub Duration);

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let delay: Duration = humantime_serde::deserialize(d)?;
        if delay < Duration::from_millis(1) {
            return Err(serde::de::Error::custom("must be at least 1ms"));
        }
        Ok(Delay(delay))
    }
}

/// A listening address, `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Address(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim().parse().map(Address).map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not an address like 127.0.0.1:8686"))
        })
    }
}

/// The path an HTTP source answers on: starts with `/`. Default `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UrlPath(pub String);

impl Default for UrlPath {
    fn default() -> Self {
        UrlPath("/".into())
    }
}

impl<'de> Deserialize<'de> for UrlPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = String::deserialize(d)?;
        if !path.starts_with('/') {
            return Err(serde::de::Error::custom("must start with /"));
        }
        Ok(UrlPath(path))
    }
}

/// A list that may not be empty; what an empty one would mean is said in `why`.
pub(crate) fn non_empty<'de, D, T>(d: D, why: &str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Vec::<T>::deserialize(d)?;
    if items.is_empty() {
        return Err(serde::de::Error::custom(why));
    }
    Ok(items)
}
