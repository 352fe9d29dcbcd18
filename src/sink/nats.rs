//! A `type: nats` sink's parts, built from its config: the servers, the subject template, the
//! headers every message carries, and how to authenticate. Publishing is `delivery::nats`.

use super::render::{self, RenderError, Renderer};
use super::sign::Signer;
use crate::config::{NatsSink, Secret, SecretUrl, SinkSection};
use crate::record::Record;
use ::http::header::HeaderMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest subject a template may render.
pub const MAX_SUBJECT: usize = 1024;

pub struct Nats {
    /// The servers, tried in turn (user info moved into `auth` where given).
    pub servers: Vec<SecretUrl>,
    /// The servers, masked, for logs and errors.
    pub shown: String,
    pub subject: Arc<Renderer>,
    /// Configured headers plus `Content-Type`; signature headers are added per message.
    pub headers: HeaderMap,
    pub signer: Option<Signer>,
    pub auth: Auth,
    pub ca_file: Option<PathBuf>,
    /// Presented to servers that verify clients (`cert_file`, `key_file`).
    pub client_cert: Option<super::ClientCert>,
    /// A server is given as `tls://`: the connection must be TLS.
    pub tls_required: bool,
    /// Limit of one publish, ack included.
    pub timeout: Duration,
}

/// How the connection authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Token(Secret),
    UserPassword(String, Secret),
    /// The content of a `.creds` file.
    Creds(Secret),
    /// An NKey seed.
    NkeySeed(Secret),
}

impl Auth {
    /// Adds the secrets this sends to `scrubber`: the token, the password, a seed, and the lines
    /// of a `.creds` file that are keys (the user JWT and the seed, not its prose).
    pub fn mask_in(&self, scrubber: &mut crate::config::Scrubber) {
        match self {
            Auth::None => {}
            Auth::Token(token) => scrubber.add(token.expose()),
            Auth::UserPassword(user, password) => scrubber.add_user_info(user, password.expose()),
            Auth::NkeySeed(seed) => scrubber.add(seed.expose()),
            Auth::Creds(text) => {
                let keys = text.expose().lines().map(str::trim).filter(|l| {
                    l.len() >= 16 && !l.starts_with(['-', '*']) && !l.contains(char::is_whitespace)
                });
                keys.for_each(|key| scrubber.add(key));
            }
        }
    }
}

/// Builds a NATS sink's parts; errors are pushed naming their key.
pub fn build(
    s: &SinkSection,
    bus: &NatsSink,
    at: &dyn Fn(&str) -> String,
    headers: HeaderMap,
    signer: Option<Signer>,
    errors: &mut Vec<String>,
) -> Option<Nats> {
    let servers: Vec<SecretUrl> = bus.url.0.clone();
    let subject = bus.subject.as_str();
    let limits = render::Limits {
        max_body_bytes: MAX_SUBJECT,
        time: s.common.timeout,
        parallel: s.common.concurrency.get(),
    };
    let subject = Renderer::new(
        &format!("{}.subject", s.name),
        Some(subject),
        "text/plain",
        false,
        limits,
    )
    .map_err(|e| errors.push(format!("{}: {e}", at("subject"))))
    .ok()?;
    let read =
        |key: &str, path: &PathBuf, errors: &mut Vec<String>| match std::fs::read_to_string(path) {
            Ok(text) => Some(Secret::new(text.trim().to_string())),
            Err(e) => {
                errors.push(format!("{}: cannot read {}: {e}", at(key), path.display()));
                None
            }
        };
    let user_info = servers.iter().find_map(SecretUrl::credentials);
    let auth = if let Some(token) = &bus.token {
        Auth::Token(token.clone())
    } else if let (Some(user), Some(password)) = (&bus.user, &bus.password) {
        Auth::UserPassword(user.clone(), password.clone())
    } else if let Some(path) = &bus.creds_file {
        Auth::Creds(read("creds_file", path, errors)?)
    } else if let Some(path) = &bus.nkey_seed_file {
        let seed = read("nkey_seed_file", path, errors)?;
        if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
            errors.push(format!(
                "{}: {} does not hold a valid NKey seed (SU…)",
                at("nkey_seed_file"),
                path.display()
            ));
            return None;
        }
        Auth::NkeySeed(seed)
    } else if let Some((user, password)) = user_info {
        // nats://user:password@host, or nats://token@host.
        match password.is_empty() {
            true => Auth::Token(Secret::new(user)),
            false => Auth::UserPassword(user, Secret::new(password)),
        }
    } else {
        Auth::None
    };
    let shown = servers
        .iter()
        .map(SecretUrl::redacted)
        .collect::<Vec<_>>()
        .join(",");
    Some(Nats {
        tls_required: servers.iter().any(|u| u.scheme() == "tls"),
        servers,
        shown,
        subject: Arc::new(subject),
        headers,
        signer,
        auth,
        ca_file: bus.ca_file.clone(),
        client_cert: super::client_cert_of(bus.cert_file.as_ref(), bus.key_file.as_ref()),
        timeout: s.common.timeout,
    })
}

impl Nats {
    /// Each record's subject, rendered within the sink's limits and checked.
    pub async fn subjects(&self, records: &[Arc<Record>]) -> Vec<Result<String, RenderError>> {
        match self.subject.render_each_bounded(records).await {
            Ok(each) => each.into_iter().map(checked).collect(),
            Err(e) => records
                .iter()
                .map(|_| Err(subject_error(e.clone())))
                .collect(),
        }
    }

    /// `record`'s subject, rendered on this thread (`render`, `check --connect`).
    pub fn subject_of(&self, record: &Arc<Record>) -> Result<String, RenderError> {
        checked(self.subject.render(std::slice::from_ref(record)))
    }
}

fn subject_error(mut e: RenderError) -> RenderError {
    e.reason = format!("subject {}", e.reason);
    e
}

/// A rendered subject, trimmed and checked.
fn checked(rendered: Result<Vec<u8>, RenderError>) -> Result<String, RenderError> {
    let subject = String::from_utf8_lossy(&rendered.map_err(subject_error)?)
        .trim()
        .to_string();
    match invalid_subject(&subject) {
        Some(why) => Err(RenderError {
            reason: why,
            excerpt: None,
        }),
        None => Ok(subject),
    }
}

/// Why a rendered subject cannot be published on, if it cannot: NATS subjects are dot-separated
/// tokens with no whitespace, a message cannot go to a wildcard, and the `$…` and `_INBOX`
/// subjects are the server's API and replies (an event must never reach
/// `$JS.API.STREAM.PURGE…` through a template).
pub fn invalid_subject(subject: &str) -> Option<String> {
    let first = subject.split('.').next().unwrap_or("");
    let why = if subject.is_empty() {
        "it is empty"
    } else if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it has whitespace"
    } else if subject.split('.').any(str::is_empty) {
        "it has an empty token (a leading, trailing or double dot)"
    } else if subject.split('.').any(|t| t == "*" || t == ">") {
        "it has a wildcard token (* or >)"
    } else if first.starts_with('$') || first == "_INBOX" {
        "it is a system subject ($… or _INBOX…)"
    } else {
        return None;
    };
    Some(format!(
        "the subject template rendered {:?}, which cannot be published on: {why}",
        subject.chars().take(120).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::{Auth, invalid_subject};
    use crate::config::{Scrubber, Secret};

    #[test]
    fn credentials_are_masked_and_a_creds_files_prose_is_not() {
        let creds = "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5In0.abc\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n------END USER NKEY SEED------\n";
        let mut s = Scrubber::default();
        Auth::Creds(Secret::new(creds.into())).mask_in(&mut s);
        Auth::UserPassword("u".into(), Secret::new("nats-pass-1234".into())).mask_in(&mut s);
        Auth::Token(Secret::new("tok-0123456789".into())).mask_in(&mut s);
        assert_eq!(
            s.scrub("authorization violation: pass nats-pass-1234 tok-0123456789 SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4 eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5In0.abc"),
            "authorization violation: pass *** *** *** ***"
        );
        assert_eq!(
            s.scrub("NKEY Seed printed below"),
            "NKEY Seed printed below"
        );
    }

    #[test]
    fn subjects_with_spaces_empty_tokens_or_wildcards_are_refused() {
        assert!(invalid_subject("flipt.audit.flag.created").is_none());
        assert!(invalid_subject("flipt.audit.flag-x_1.created").is_none());
        for bad in [
            "",
            "flipt audit",
            "flipt.audit.",
            ".flipt",
            "a..b",
            "a.*.b",
            "a.>",
            "a\tb",
            "$JS.API.STREAM.PURGE.AUDIT",
            "_INBOX.x",
        ] {
            assert!(invalid_subject(bad).is_some(), "{bad:?}");
        }
    }
}
