//! Request signatures (SPEC §3): Flipt's `X-Flipt-Webhook-Signature` and Standard Webhooks.
//!
//! The key is prepared once at start-up; signing is one HMAC-SHA256 per request. Standard Webhooks
//! signatures include the attempt's timestamp, so each attempt (and a replay) is signed afresh.
//! A Standard Webhooks secret is symmetric (`whsec_` + base64 key: a `v1,` HMAC-SHA256
//! signature) or an ed25519 signing key (`whsk_` + base64 of the 32-byte seed, or of the seed
//! and the public key, 64 bytes: a `v1a,` signature, the spec's asymmetric scheme, which
//! receivers verify with the `whpk_` public key). A list may mix both; each key adds its own.

use crate::config::{Secret, SignatureScheme};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair};

pub const FLIPT_HEADER: &str = "x-flipt-webhook-signature";
/// Standard Webhooks' headers: the message id, the attempt's time, the signatures.
const STANDARD_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// Signing keys, newest first, and the scheme they are used with.
pub struct Signer {
    scheme: SignatureScheme,
    keys: Vec<Key>,
}

/// One signing key.
enum Key {
    /// HMAC-SHA256: Flipt's, and Standard Webhooks' `v1`.
    Hmac(hmac::Key),
    /// ed25519: Standard Webhooks' `v1a`.
    Ed25519(Ed25519KeyPair),
}

/// The prefix of an ed25519 signing key, and of its public key.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?}, {} × ***)", self.scheme, self.keys.len())
    }
}

impl Signer {
    /// Prepares the keys. Standard Webhooks secrets are base64, optionally after `whsec_`.
    pub fn new(scheme: SignatureScheme, secrets: &[Secret]) -> Result<Signer, String> {
        if secrets.is_empty() {
            return Err("the list of signing secrets is empty".into());
        }
        let mut keys = Vec::new();
        for (i, secret) in secrets.iter().enumerate() {
            // Which one, when there are several; never its value.
            let which = if secrets.len() > 1 {
                format!(" (secret {} of the list)", i + 1)
            } else {
                String::new()
            };
            keys.push(key_of(scheme, secret.expose()).map_err(|e| format!("{e}{which}"))?);
        }
        Ok(Signer { scheme, keys })
    }

    /// The names of the headers [`Signer::headers`] makes.
    pub fn header_names(&self) -> &'static [&'static str] {
        match self.scheme {
            SignatureScheme::Flipt => &[FLIPT_HEADER],
            SignatureScheme::StandardWebhooks => &STANDARD_HEADERS,
        }
    }

    /// Headers that sign `body`; `id` is the delivery's stable id, `unix_secs` the attempt's time.
    /// Flipt's signature is made with the newest key; Standard Webhooks carries one `v1,`
    /// signature per key, space-separated, so receivers can rotate without a gap.
    pub fn headers(&self, body: &[u8], id: &str, unix_secs: u64) -> Vec<(&'static str, String)> {
        match self.scheme {
            SignatureScheme::Flipt => match &self.keys[0] {
                Key::Hmac(key) => {
                    let tag = hmac::sign(key, body);
                    vec![(FLIPT_HEADER, crate::hex::encode(tag.as_ref()))]
                }
                // Refused by `Signer::new`.
                Key::Ed25519(_) => Vec::new(),
            },
            SignatureScheme::StandardWebhooks => {
                let msg_id = format!("msg_{id}");
                let ts = unix_secs.to_string();
                let signed = |key: &Key| match key {
                    Key::Hmac(key) => {
                        let mut ctx = hmac::Context::with_key(key);
                        for part in [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body] {
                            ctx.update(part);
                        }
                        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
                    }
                    Key::Ed25519(pair) => {
                        let message = [msg_id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
                        format!("v1a,{}", STANDARD.encode(pair.sign(&message).as_ref()))
                    }
                };
                let sigs: Vec<String> = self.keys.iter().map(signed).collect();
                let [id, timestamp, signature] = STANDARD_HEADERS;
                vec![(id, msg_id), (timestamp, ts), (signature, sigs.join(" "))]
            }
        }
    }
}

/// The key a secret holds under `scheme`; the error never quotes it.
fn key_of(scheme: SignatureScheme, text: &str) -> Result<Key, String> {
    let bytes = match scheme {
        SignatureScheme::Flipt if text.starts_with(SIGNING_KEY_PREFIX) => {
            return Err(
                "a whsk_ (ed25519) key signs with signature: standard-webhooks only".into(),
            );
        }
        SignatureScheme::Flipt => text.as_bytes().to_vec(),
        SignatureScheme::StandardWebhooks => {
            if let Some(b64) = text.strip_prefix(SIGNING_KEY_PREFIX) {
                return ed25519_key(b64).map(Key::Ed25519);
            }
            let b64 = text.strip_prefix("whsec_").unwrap_or(text);
            STANDARD.decode(b64).map_err(|_| {
                "a standard-webhooks secret must be base64 (optionally after whsec_), or whsk_ and base64 of an ed25519 key".to_string()
            })?
        }
    };
    if bytes.is_empty() {
        return Err("the signing secret is empty".into());
    }
    Ok(Key::Hmac(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
}

/// The ed25519 key pair of base64 `b64`: a 32-byte seed, or the seed and its public key.
fn ed25519_key(b64: &str) -> Result<Ed25519KeyPair, String> {
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| "a whsk_ key must be base64 after whsk_".to_string())?;
    match bytes.len() {
        32 => Ed25519KeyPair::from_seed_unchecked(&bytes)
            .map_err(|_| "the whsk_ key is not an ed25519 seed".to_string()),
        64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..])
            .map_err(|_| "the whsk_ key's public half is not its seed's".to_string()),
        n => Err(format!(
            "a whsk_ key holds an ed25519 seed (32 bytes) or seed and public key (64), not {n} bytes"
        )),
    }
}

/// A new ed25519 signing key and its public key: `whsk_` + base64 of the seed, and `whpk_` +
/// base64 of the public key (for `flagtail keygen ed25519`).
pub fn new_ed25519_key() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let pair = ed25519_key(&STANDARD.encode(seed))?;
    Ok((
        format!("{SIGNING_KEY_PREFIX}{}", STANDARD.encode(seed)),
        format!(
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(pair.public_key().as_ref())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flipt_check_value_from_the_spec() {
        let s = Signer::new(SignatureScheme::Flipt, &[Secret::new("s3crET".into())]).unwrap();
        let body = br#"{"version":"","type":"flag","action":"create","metadata":{},"payload":null,"timestamp":"","status":""}"#;
        assert_eq!(
            s.headers(body, "x", 0),
            vec![(
                FLIPT_HEADER,
                "6bc16d7434cbd746abfd25e3350a3f43fba04883b7f0b83f09bbc373116f84b0".to_string()
            )]
        );
    }

    #[test]
    fn standard_webhooks_check_value_from_the_spec() {
        let s = Signer::new(
            SignatureScheme::StandardWebhooks,
            &[Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into())],
        )
        .unwrap();
        let h = s.headers(
            br#"{"email":"test@example.com","username":"test_user"}"#,
            "27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
        );
        assert_eq!(h[0].1, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk");
        assert_eq!(h[2].1, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(
            Signer::new(
                SignatureScheme::StandardWebhooks,
                &[Secret::new("whsec_!!".into())]
            )
            .is_err()
        );
    }

    #[test]
    fn ed25519_keys_sign_v1a_beside_v1_and_bad_ones_are_refused_unquoted() {
        let (secret, public) = new_ed25519_key().unwrap();
        let seed = STANDARD.decode(&secret[5..]).unwrap();
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let full = format!(
            "whsk_{}",
            STANDARD.encode([&seed[..], pair.public_key().as_ref()].concat())
        );
        let hmac = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let keys = [
            Secret::new(secret.clone()),
            Secret::new(hmac.into()),
            Secret::new(full),
        ];
        let s = Signer::new(SignatureScheme::StandardWebhooks, &keys).unwrap();
        let h = s.headers(b"{}", "k", 7);
        let sigs: Vec<&str> = h[2].1.split(' ').collect();
        assert_eq!(sigs.len(), 3);
        assert!(sigs[0].starts_with("v1a,") && sigs[1].starts_with("v1,") && sigs[2] == sigs[0]);
        let public = STANDARD.decode(&public[5..]).unwrap();
        let sig = STANDARD.decode(&sigs[0][4..]).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(b"msg_k.7.{}", &sig)
            .unwrap();
        let standard = |text: &str| {
            Signer::new(
                SignatureScheme::StandardWebhooks,
                &[Secret::new(text.into())],
            )
        };
        for bad in [
            "whsk_!!",
            "whsk_AAAA",
            &format!("whsk_{}", STANDARD.encode([7u8; 64])),
        ] {
            let err = standard(bad).unwrap_err();
            assert!(!err.contains(&bad[5..]), "{err}");
        }
        assert!(Signer::new(SignatureScheme::Flipt, &[Secret::new(secret)]).is_err());
    }
}
