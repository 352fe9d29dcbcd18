//! The values of a sink's delivery policy keys, as written and read back: `retry_on` (statuses
//! and classes) and `rate_limit` (`"1/s"`, `"100/m"`). Read while the config is, so a bad value
//! is an error naming its key.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Statuses worth another try: exact codes and classes (`5xx`). A class never takes in 501 (Not
/// Implemented will not change on its own); list 501 itself to retry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn(pub Vec<StatusMatch>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// One status (`404`).
    Code(u16),
    /// A class by its first digit (`5` for `5xx`).
    Class(u16),
}

impl RetryOn {
    /// Whether a response with `status` is tried again.
    pub fn retries(&self, status: u16) -> bool {
        self.0.iter().any(|m| match *m {
            StatusMatch::Code(c) => c == status,
            StatusMatch::Class(k) => status / 100 == k && status != 501,
        })
    }
}

impl Default for RetryOn {
    /// `[408, 429, 5xx]`.
    fn default() -> Self {
        RetryOn(vec![
            StatusMatch::Code(408),
            StatusMatch::Code(429),
            StatusMatch::Class(5),
        ])
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items: Vec<serde_json::Value> = self
            .0
            .iter()
            .map(|m| match m {
                StatusMatch::Code(c) => serde_json::Value::from(*c),
                StatusMatch::Class(k) => serde_json::Value::from(format!("{k}xx")),
            })
            .collect();
        items.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Num(u64),
            Text(String),
        }
        let items = Vec::<Item>::deserialize(d)?;
        let mut out = Vec::new();
        for item in items {
            let text = match item {
                Item::Num(n) => n.to_string(),
                Item::Text(t) => t.trim().to_ascii_lowercase(),
            };
            let parsed = match text.strip_suffix("xx") {
                Some(k) => k
                    .parse::<u16>()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .map(StatusMatch::Class),
                None => text
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusMatch::Code),
            };
            match parsed {
                Some(StatusMatch::Code(c)) if (200..300).contains(&c) => {
                    return Err(serde::de::Error::custom(format!(
                        "{c} is a success; only failures can be retried"
                    )));
                }
                Some(StatusMatch::Class(2)) => {
                    return Err(serde::de::Error::custom(
                        "2xx is a success; only failures can be retried",
                    ));
                }
                Some(m) => out.push(m),
                None => {
                    return Err(serde::de::Error::custom(format!(
                        "{text:?} is not a status (404) or a class (5xx)"
                    )));
                }
            }
        }
        Ok(RetryOn(out))
    }
}

/// Explicit delays between attempts (`[1s, 5s, 30s, 2m]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<Duration>);

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        items.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<humantime_serde::Serde<Duration>>::deserialize(d)?;
        Ok(Schedule(items.into_iter().map(|d| *d).collect()))
    }
}

/// Requests allowed per period, evenly spaced: `"1/s"`, `"100/m"`, `"5/10s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Rate {
    /// The spacing between two requests.
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let per = match self.per.as_secs() {
            1 => "s".to_string(),
            60 => "m".to_string(),
            3600 => "h".to_string(),
            _ => humantime::format_duration(self.per).to_string(),
        };
        s.serialize_str(&format!("{}/{per}", self.requests))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad =
            || serde::de::Error::custom(format!("{text:?} is not a rate like 1/s, 100/m or 5/10s"));
        let (n, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if per.is_zero() {
            return Err(bad());
        }
        Ok(Rate { requests, per })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_reads_codes_and_classes_and_keeps_501_out_of_5xx() {
        let r: RetryOn = serde_json::from_str(r#"[404, "5xx", "429"]"#).unwrap();
        assert!(r.retries(404) && r.retries(503) && r.retries(429));
        assert!(!r.retries(501) && !r.retries(400));
        let r: RetryOn = serde_json::from_str(r#"[501]"#).unwrap();
        assert!(r.retries(501));
        assert!(RetryOn::default().retries(408) && !RetryOn::default().retries(404));
        for bad in [r#"["2xx"]"#, "[200]", r#"["6xx"]"#, "[42]", r#"["soon"]"#] {
            assert!(serde_json::from_str::<RetryOn>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&RetryOn::default()).unwrap(),
            r#"[408,429,"5xx"]"#
        );
    }

    #[test]
    fn rates() {
        let r: Rate = serde_json::from_str(r#""5/s""#).unwrap();
        assert_eq!(r.interval(), Duration::from_millis(200));
        let r: Rate = serde_json::from_str(r#""100/m""#).unwrap();
        assert_eq!(r.interval(), Duration::from_millis(600));
        let r: Rate = serde_json::from_str(r#""5/10s""#).unwrap();
        assert_eq!(r.interval(), Duration::from_secs(2));
        for bad in [r#""0/s""#, r#""fast""#, r#""1/0s""#, r#""1/x""#] {
            assert!(serde_json::from_str::<Rate>(bad).is_err(), "{bad}");
        }
    }
}
