//! How a webhook reaches its receiver, the values of its keys that are more than a path:
//! `proxy` (a proxy URL, or `none` to go direct; absent, the environment decides, which
//! `sink::proxy` reads) and `compression`. A proxy URL may carry credentials, so it is a
//! [`SecretUrl`]: shown as `http://host:port/***`, its value never quoted in an error.

use super::secret::QuietString;
use super::{Secret, SecretUrl, VerifyScheme};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// The body as rendered.
    #[default]
    None,
    /// gzip, with `Content-Encoding: gzip`; signatures are over the compressed bytes.
    Gzip,
}

/// A webhook's `oauth2`: a bearer token from an OAuth2 token endpoint (client credentials grant).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

/// A key an HTTP source checks signatures with.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// An HMAC-SHA256 key: Flipt's and LaunchDarkly's secret as written, a `whsec_` secret's
    /// bytes (Standard Webhooks `v1`).
    Hmac(Vec<u8>),
    /// An ed25519 public key (`whpk_`, Standard Webhooks `v1a`), 32 bytes.
    Ed25519(Vec<u8>),
}

/// The keys of `verify_secret` under `scheme`; the error never quotes a value.
pub fn verify_keys(scheme: VerifyScheme, secrets: &[Secret]) -> Result<Vec<VerifyKey>, String> {
    let mut keys = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        let which = match secrets.len() {
            1 => String::new(),
            _ => format!(" (secret {} of the list)", i + 1),
        };
        let text = secret.expose();
        let key = match scheme {
            VerifyScheme::StandardWebhooks => standard_key(text),
            _ if i > 0 => Err("only standard-webhooks takes a list".to_string()),
            _ => Ok(VerifyKey::Hmac(text.as_bytes().to_vec())),
        };
        match key {
            Ok(VerifyKey::Hmac(k)) if k.is_empty() => {
                return Err(format!("the secret is empty{which}"));
            }
            Ok(key) => keys.push(key),
            Err(e) => return Err(format!("{e}{which}")),
        }
    }
    Ok(keys)
}

/// A Standard Webhooks key: `whpk_` + base64 of an ed25519 public key, or (`whsec_` +) base64.
fn standard_key(text: &str) -> Result<VerifyKey, String> {
    if let Some(b64) = text.strip_prefix("whpk_") {
        return match STANDARD.decode(b64) {
            Ok(key) if key.len() == 32 => Ok(VerifyKey::Ed25519(key)),
            _ => Err("a whpk_ key must be base64 of a 32-byte ed25519 public key".into()),
        };
    }
    if text.starts_with("whsk_") {
        return Err("a whsk_ key signs; a receiver verifies with its whpk_ public key".into());
    }
    STANDARD
        .decode(text.strip_prefix("whsec_").unwrap_or(text))
        .map(VerifyKey::Hmac)
        .map_err(|_| "a standard-webhooks secret must be base64 (optionally after whsec_)".into())
}

/// An HTTP source's `tls`: serve HTTPS, and with `client_ca_file`, mutual TLS.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain (PEM), leaf first. Required.
    pub cert_file: PathBuf,
    /// Its private key (PEM). Required.
    pub key_file: PathBuf,
    /// CA certificates (PEM): a client must present a certificate one of them signed, or the
    /// handshake is refused. Default none (no client certificate asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}
