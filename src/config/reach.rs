//! How a webhook reaches its receiver, the values of its keys that are more than a path:
//! `proxy` (a proxy URL, or `none` to go direct; absent, the environment decides, which
//! `sink::proxy` reads) and `compression`. A proxy URL may carry credentials, so it is a
//! [`SecretUrl`]: shown as `http://host:port/***`, its value never quoted in an error.

use super::secret::QuietString;
use super::{Secret, SecretUrl};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a sink's `proxy` key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySetting {
    /// `none`: connect to the receiver directly, whatever the environment says.
    Direct,
    /// `http://[user:password@]host[:port]`: every request goes through this proxy.
    Via(SecretUrl),
}

impl<'de> Deserialize<'de> for ProxySetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_any(QuietString)?;
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(ProxySetting::Direct);
        }
        SecretUrl::parse(text.trim())
            .map(ProxySetting::Via)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ProxySetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProxySetting::Direct => s.serialize_str("none"),
            ProxySetting::Via(url) => url.serialize(s),
        }
    }
}

/// A webhook's `compression`: how its body is encoded on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// The body as rendered.
    #[default]
    None,
    /// gzip, with `Content-Encoding: gzip`; signatures are over the compressed bytes.
    Gzip,
}

/// A webhook's `oauth2`: a bearer token from an OAuth2 token endpoint (client credentials grant).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Section {
    /// The token endpoint, `https://` (or `http://`). Required.
    pub token_url: SecretUrl,
    /// The client's id. Required.
    pub client_id: String,
    /// The client's secret, sent with the id as Basic auth to the token endpoint. Required.
    pub client_secret: Secret,
    /// Scopes asked for, sent space-separated. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The `audience` parameter some providers (Auth0, Okta) want. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}
