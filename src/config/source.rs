//! A source as the user wrote it: `name` and `format`, which every source takes, and the keys of
//! its kind, told by which of `file`, `socket` or `http` it has. Each kind is its own struct with
//! only its own keys, so `socket_mode` on an http source is refused by the parser, naming the key
//! and the kinds that take it.

use super::item::{self, Located};
use super::reach::{self, TlsSection};
use super::secret::{Secret, Secrets};
use super::values::{Address, Connections, FileMode, Name, Positive, UrlPath};
use crate::event::Format;
use figment::value::Value;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

/// One source.
#[derive(Debug, Serialize)]
pub struct SourceSection {
    /// Unique, `[a-z0-9_-]+`. Required.
    pub name: Name,
    /// What the events are: `auto`, `flipt`, `unleash`, `abtasty`, `launchdarkly`. Default `auto`.
    pub format: Format,
    /// The keys of its kind.
    #[serde(flatten)]
    pub kind: SourceKind,
}

/// The kinds of source, each with its own keys.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SourceKind {
    File(FileSource),
    Socket(SocketSource),
    Http(HttpSource),
}

/// The keys every source takes, beside `name`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceCommon {
    #[serde(default)]
    format: Format,
}

/// Follows an audit log file.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Path of the audit log to follow. Required.
    pub file: PathBuf,
    /// Where to start when there is no checkpoint yet: `beginning` or `end`. Default `beginning`.
    #[serde(default)]
    pub read_from: ReadFrom,
}

/// Listens on a Unix stream socket for newline-delimited events.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SocketSource {
    /// Path of the socket. Required.
    pub socket: PathBuf,
    /// Permissions of the socket. Default `"0600"`.
    #[serde(default)]
    pub socket_mode: FileMode,
    /// Clients served at once; more wait to be accepted. Default 64.
    #[serde(default)]
    pub max_connections: Connections,
}

/// Receives webhooks over HTTP.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// Address to listen on, `IP:PORT`. Required.
    pub http: Address,
    /// Path it answers on. Default `/`.
    #[serde(default)]
    pub path: UrlPath,
    /// Token it requires (`Authorization: Bearer TOKEN`, the bare token, or `?token=TOKEN`).
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Signature it checks over the raw body. Default `none`.
    #[serde(default)]
    pub verify: VerifyScheme,
    /// The sender's key for `verify`; required with it, refused without it. For
    /// `standard-webhooks`, a list (`whsec_` secrets, `whpk_` public keys) to rotate: a request
    /// signed under any one is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_secret: Option<Secrets>,
    /// `{cert_file, key_file, client_ca_file}` to serve HTTPS (and require client certificates);
    /// re-read on reload. Default none (plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// Largest request body taken. Default 1048576.
    #[serde(default = "default_body_bytes")]
    pub max_body_bytes: Positive,
    /// Clients served at once. Default 64.
    #[serde(default)]
    pub max_connections: Connections,
}

impl HttpSource {
    /// The scheme and the sender's secrets, when `verify` is not `none`.
    pub fn verify(&self) -> Option<(VerifyScheme, &[Secret])> {
        match (self.verify, &self.verify_secret) {
            (VerifyScheme::None, _) | (_, None) => None,
            (scheme, Some(secrets)) => Some((scheme, secrets.0.as_slice())),
        }
    }

    fn check(&self) -> Result<(), Located> {
        match (self.verify, &self.verify_secret) {
            (VerifyScheme::None, Some(_)) => Err(Located::at(
                "verify_secret",
                "set verify (flipt, launchdarkly or standard-webhooks) to use it",
            )),
            (VerifyScheme::None, None) => Ok(()),
            (_, None) => Err(Located::at(
                "verify_secret",
                "verify needs the sender's secret",
            )),
            (scheme, Some(secrets)) => reach::verify_keys(scheme, &secrets.0)
                .map(|_| ())
                .map_err(|e| Located::at("verify_secret", e)),
        }
    }
}

/// Default `max_body_bytes` of an HTTP source, and per event of a sink's request.
pub const DEFAULT_BODY_BYTES: u64 = 1024 * 1024;

fn default_body_bytes() -> Positive {
    Positive(DEFAULT_BODY_BYTES)
}

/// Whose webhook signature an HTTP source checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifyScheme {
    #[default]
    None,
    /// `X-Flipt-Webhook-Signature`: hex HMAC-SHA256 of the body (Flipt's webhook sink).
    Flipt,
    /// `X-LD-Signature`: hex HMAC-SHA256 of the body (LaunchDarkly's signed webhooks).
    Launchdarkly,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` (within 5 minutes),
    /// `webhook-signature` with `v1,` HMAC (`whsec_` secrets) or `v1a,` ed25519 (`whpk_` keys).
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// The keys that tell a source's kind, in the order kinds are named in messages.
const KIND_KEYS: [&str; 3] = ["file", "socket", "http"];

impl SourceSection {
    /// Reads one item of `sources`.
    fn parse(value: &Value) -> Result<SourceSection, Located> {
        let mut keys = item::keys_of_item(value)?;
        let name: Name = item::take(&mut keys, "name")?
            .ok_or_else(|| Located::at("name", "missing field `name`"))?;
        let common = item::split_off(&mut keys, &["format"]);
        let present: Vec<&str> = KIND_KEYS
            .into_iter()
            .filter(|k| keys.contains_key(*k))
            .collect();
        let kind = match present.as_slice() {
            [] => return Err(Located::whole("needs one of file, socket, http")),
            [_, _, ..] => return Err(Located::whole("has more than one of file, socket, http")),
            [kind] => *kind,
        };
        let kinds = kind_keys();
        let unknown = |key: &str| item::unknown_key(key, kind, "source", &kinds);
        let kind = match kind {
            "file" => SourceKind::File(item::read(keys, &unknown)?),
            "socket" => SourceKind::Socket(item::read(keys, &unknown)?),
            _ => {
                let http: HttpSource = item::read(keys, &unknown)?;
                http.check()?;
                SourceKind::Http(http)
            }
        };
        let common: SourceCommon = item::read(common, &|key| format!("unknown key `{key}`"))?;
        Ok(SourceSection {
            name,
            format: common.format,
            kind,
        })
    }

    /// `file`, `socket` or `http`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::File(_) => "file",
            SourceKind::Socket(_) => "socket",
            SourceKind::Http(_) => "http",
        }
    }
}

/// Each kind's keys, with `name` and `format`.
fn kind_keys() -> [(&'static str, Vec<&'static str>); 3] {
    let with_common = |keys: &[&'static str]| {
        let mut all = vec!["name", "format"];
        all.extend_from_slice(keys);
        all
    };
    [
        ("file", with_common(item::keys_taken::<FileSource>())),
        ("socket", with_common(item::keys_taken::<SocketSource>())),
        ("http", with_common(item::keys_taken::<HttpSource>())),
    ]
}

impl<'de> Deserialize<'de> for SourceSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = <Value as Deserialize>::deserialize(d)?;
        SourceSection::parse(&value).map_err(Located::into_serde)
    }
}
