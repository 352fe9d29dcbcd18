//! Request signatures (SPEC §3): Flipt's `X-Flipt-Webhook-Signature` and Standard Webhooks.
//!
//! The key is prepared once at start-up; signing is one HMAC-SHA256 per request. Standard Webhooks
//! signatures include the attempt's timestamp, so each attempt (and a replay) is signed afresh.

use crate::config::{Secret, SignatureScheme};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

pub const FLIPT_HEADER: &str = "x-flipt-webhook-signature";
/// Standard Webhooks' headers: the message id, the attempt's time, the signatures.
const STANDARD_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// Signing keys, newest first, and the scheme they are used with.
pub struct Signer {
    scheme: SignatureScheme,
    keys: Vec<hmac::Key>,
}

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
            let key = match scheme {
                SignatureScheme::Flipt => secret.expose().as_bytes().to_vec(),
                SignatureScheme::StandardWebhooks => {
                    let text = secret.expose();
                    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
                    STANDARD.decode(b64).map_err(|_| {
                        format!(
                            "a standard-webhooks secret must be base64 (optionally after whsec_){which}"
                        )
                    })?
                }
            };
            if key.is_empty() {
                return Err(format!("the signing secret is empty{which}"));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &key));
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
            SignatureScheme::Flipt => {
                let tag = hmac::sign(&self.keys[0], body);
                vec![(FLIPT_HEADER, crate::hex::encode(tag.as_ref()))]
            }
            SignatureScheme::StandardWebhooks => {
                let msg_id = format!("msg_{id}");
                let ts = unix_secs.to_string();
                let sigs: Vec<String> = self
                    .keys
                    .iter()
                    .map(|key| {
                        let mut ctx = hmac::Context::with_key(key);
                        ctx.update(msg_id.as_bytes());
                        ctx.update(b".");
                        ctx.update(ts.as_bytes());
                        ctx.update(b".");
                        ctx.update(body);
                        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
                    })
                    .collect();
                let [id, timestamp, signature] = STANDARD_HEADERS;
                vec![(id, msg_id), (timestamp, ts), (signature, sigs.join(" "))]
            }
        }
    }
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
}
