//! Checking an HTTP source's senders' signatures (`verify`): Flipt's and LaunchDarkly's hex
//! HMAC-SHA256 of the body, or Standard Webhooks (`webhook-id`, `webhook-timestamp` within five
//! minutes of now, `webhook-signature`: space-separated `v1,` HMAC-SHA256 and `v1a,` ed25519
//! signatures of `id.timestamp.body`, any one of which under any configured key will do).
//! Every compare is constant-time (ring). A verifier built from keys the config check refused
//! takes nothing: it fails closed.

use crate::config::{Secret, VerifyKey, VerifyScheme, verify_keys};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use ring::{hmac, signature};

/// How far a Standard Webhooks timestamp may be from now, either way (the spec's tolerance).
const TOLERANCE_SECS: u64 = 5 * 60;

/// How a sender's signature is checked.
pub enum Verifier {
    /// A hex HMAC-SHA256 of the body in `header`.
    Hex {
        header: &'static str,
        key: hmac::Key,
    },
    /// Standard Webhooks, under any of these keys.
    Standard(Vec<Key>),
}

/// A Standard Webhooks key.
pub enum Key {
    /// `v1`: HMAC-SHA256.
    Hmac(hmac::Key),
    /// `v1a`: an ed25519 public key.
    Ed25519(Vec<u8>),
}

impl Verifier {
    /// The verifier of `scheme` with `secrets` (checked by the config already; keys it would
    /// refuse make a verifier that takes nothing).
    pub fn new(scheme: VerifyScheme, secrets: &[Secret]) -> Verifier {
        let keys = verify_keys(scheme, secrets).unwrap_or_default();
        let hmac_of = |k: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, k);
        match (scheme, keys.first()) {
            (VerifyScheme::Flipt | VerifyScheme::Launchdarkly, Some(VerifyKey::Hmac(k))) => {
                let header = match scheme {
                    VerifyScheme::Launchdarkly => "x-ld-signature",
                    _ => "x-flipt-webhook-signature",
                };
                Verifier::Hex {
                    header,
                    key: hmac_of(k),
                }
            }
            (VerifyScheme::StandardWebhooks, _) => Verifier::Standard(
                keys.iter()
                    .map(|k| match k {
                        VerifyKey::Hmac(k) => Key::Hmac(hmac_of(k)),
                        VerifyKey::Ed25519(k) => Key::Ed25519(k.clone()),
                    })
                    .collect(),
            ),
            _ => Verifier::Standard(Vec::new()),
        }
    }

    /// Whether the request with `headers` and `body` is signed, at `now` (Unix seconds).
    pub fn accepts(&self, headers: &HeaderMap, body: &[u8], now: u64) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Verifier::Hex { header: name, key } => header(name)
                .and_then(|h| crate::hex::decode::<32>(h.trim()))
                .is_some_and(|sig| hmac::verify(key, body, &sig).is_ok()),
            Verifier::Standard(keys) => {
                let (Some(id), Some(ts), Some(sigs)) = (
                    header("webhook-id"),
                    header("webhook-timestamp"),
                    header("webhook-signature"),
                ) else {
                    return false;
                };
                let Ok(when) = ts.trim().parse::<u64>() else {
                    return false;
                };
                if when.abs_diff(now) > TOLERANCE_SECS {
                    return false;
                }
                let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
                sigs.split(' ')
                    .any(|sig| keys.iter().any(|key| key.verifies(sig, &signed)))
            }
        }
    }
}

impl Key {
    /// Whether `sig` (`v1,…` or `v1a,…`) is this key's signature of `signed`.
    fn verifies(&self, sig: &str, signed: &[u8]) -> bool {
        let decoded = |b64: &str| STANDARD.decode(b64.trim()).ok();
        match (self, sig.split_once(',')) {
            (Key::Hmac(key), Some(("v1", b64))) => {
                decoded(b64).is_some_and(|tag| hmac::verify(key, signed, &tag).is_ok())
            }
            (Key::Ed25519(public), Some(("v1a", b64))) => decoded(b64).is_some_and(|tag| {
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(signed, &tag)
                    .is_ok()
            }),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn standard_webhooks_v1_and_v1a_within_the_tolerance() {
        // The spec's check value.
        let secret = Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into());
        let v = Verifier::new(VerifyScheme::StandardWebhooks, &[secret]);
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let sig = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        let h = headers(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            &format!("v1a,x {sig}"),
        );
        assert!(v.accepts(&h, body, 1649367553 + 299));
        assert!(!v.accepts(&h, body, 1649367553 + 301));
        assert!(!v.accepts(&h, b"{}", 1649367553));
        // ed25519, signed with ring here.
        let pair = signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
        let public = format!(
            "whpk_{}",
            STANDARD.encode(signature::KeyPair::public_key(&pair))
        );
        let v = Verifier::new(VerifyScheme::StandardWebhooks, &[Secret::new(public)]);
        let tag = STANDARD.encode(pair.sign(b"msg_1.100.{}").as_ref());
        assert!(v.accepts(&headers("msg_1", 100, &format!("v1a,{tag}")), b"{}", 100));
        assert!(!v.accepts(&headers("msg_1", 100, &format!("v1,{tag}")), b"{}", 100));
        assert!(!v.accepts(&headers("msg_2", 100, &format!("v1a,{tag}")), b"{}", 100));
        // Keys the config refuses take nothing.
        let bad = Verifier::new(
            VerifyScheme::StandardWebhooks,
            &[Secret::new("whsk_x".into())],
        );
        assert!(!bad.accepts(&headers("msg_1", 100, &format!("v1a,{tag}")), b"{}", 100));
    }
}
