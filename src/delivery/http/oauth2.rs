//! A sink's bearer token (`oauth2`, the client credentials grant): fetched from the token
//! endpoint before the first request, shared by the sink's workers, used until shortly before
//! its `expires_in` runs out (then fetched again), and fetched again once when the receiver
//! answers 401 to it before that answer counts. A token endpoint that fails makes the attempt
//! one to retry, under the sink's policy, with the endpoint's answer as the reason. One fetch
//! runs at a time; the others wait for its token. The token is never logged: a reason that
//! quotes it (a receiver echoing its request) has it masked.

use super::Connection;
use super::connect::Connector;
use crate::delivery::retry::Attempt;
use crate::sink::Webhook;
use crate::sink::oauth2::OAuth2;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The most a token may be used before its `expires_in` runs out: it is fetched again this
/// long before (or halfway through its life, for short ones).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A sink's current token and the connection to its token endpoint.
#[derive(Default)]
pub struct Tokens {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The token in use, if one was fetched.
    current: Option<Token>,
    /// The connection to the token endpoint, opened on the first fetch.
    conn: Option<Box<Connection>>,
}

struct Token {
    value: String,
    /// When it is to be fetched again; none if the endpoint gave no `expires_in`.
    refresh_at: Option<Instant>,
}

impl Tokens {
    /// The token to send: the current one, unless it is `stale` (a receiver refused it) or
    /// due for refresh, else a new one from the endpoint.
    async fn bearer(
        &self,
        grant: &OAuth2,
        connector: &Connector,
        stale: Option<&str>,
    ) -> Result<String, String> {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.current
            && stale != Some(token.value.as_str())
            && token.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.value.clone());
        }
        let conn = state.conn.get_or_insert_with(|| {
            // Its own token cache, never used: a connector holding this one would be a cycle.
            let connector = Connector {
                tokens: Default::default(),
                ..connector.clone()
            };
            Box::new(Connection::new(connector))
        });
        let fetched = Instant::now();
        let (token, expires_in) = fetch(conn, &grant.endpoint, &grant.form).await?;
        let refresh_at = expires_in.map(|life| fetched + life - REFRESH_MARGIN.min(life / 2));
        state.current = Some(Token {
            value: token.clone(),
            refresh_at,
        });
        Ok(token)
    }
}

/// `check --connect`: fetches a token from the hook's endpoint (it is not kept), so wrong
/// client credentials show before the first event; why there is none otherwise.
pub async fn probe(connector: &Connector, grant: &OAuth2) -> Result<(), String> {
    let mut conn = Connection::new(Connector {
        tokens: Default::default(),
        ..connector.clone()
    });
    let timeout = grant.endpoint.timeout;
    match tokio::time::timeout(timeout, fetch(&mut conn, &grant.endpoint, &grant.form)).await {
        Ok(fetched) => fetched.map(drop),
        Err(_) => Err(format!(
            "OAuth2 token endpoint {}: no token within {}",
            grant.endpoint.shown,
            humantime::format_duration(timeout)
        )),
    }
}

/// One token request: the token and its lifetime, or why there is none.
async fn fetch(
    conn: &mut Connection,
    endpoint: &Webhook,
    form: &[u8],
) -> Result<(String, Option<Duration>), String> {
    let shown = &endpoint.shown;
    let (status, body) = conn
        .request(endpoint, form)
        .await
        .map_err(|e| format!("OAuth2 token endpoint {shown}: {e}"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let quoted = endpoint.scrubber.quote(text.trim(), 200);
        return Err(format!("OAuth2 token endpoint {shown}: {status}: {quoted}"));
    }
    parse(&body).map_err(|e| format!("OAuth2 token endpoint {shown}: {e}"))
}

/// A token response (RFC 6749 §5.1): `access_token`, a `token_type` of `Bearer`, and
/// `expires_in` in seconds if given.
fn parse(body: &[u8]) -> Result<(String, Option<Duration>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let token = v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty() && http::HeaderValue::from_str(t).is_ok())
        .ok_or("the answer has no access_token a header can carry")?;
    if let Some(kind) = v["token_type"].as_str()
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("token_type is {kind:?}, not Bearer"));
    }
    let expires_in = match &v["expires_in"] {
        serde_json::Value::Number(n) => n.as_f64().filter(|s| *s > 0.0 && *s < 1e9),
        serde_json::Value::String(s) => s.parse::<f64>().ok().filter(|s| *s > 0.0 && *s < 1e9),
        _ => None,
    };
    Ok((token.to_string(), expires_in.map(Duration::from_secs_f64)))
}

impl Connection {
    /// POSTs `body` with the sink's bearer token; a 401 has the token fetched again and the
    /// request sent once more before it counts.
    pub(super) async fn post_authorized(
        &mut self,
        hook: &Webhook,
        grant: &OAuth2,
        key: &str,
        unix_secs: u64,
        body: &[u8],
    ) -> Attempt {
        let tokens = self.connector.tokens.clone();
        let mut stale: Option<String> = None;
        loop {
            let token = match tokens
                .bearer(grant, &self.connector, stale.as_deref())
                .await
            {
                Ok(token) => token,
                Err(reason) => {
                    return Attempt::Retry {
                        reason: format!("POST {}: {reason}", hook.shown),
                    };
                }
            };
            let attempt = self
                .post_body(hook, key, unix_secs, body, Some(&token))
                .await;
            match attempt {
                Attempt::Refused { status: 401, .. } if stale.is_none() => stale = Some(token),
                attempt => return attempt.with_reason(|r| r.replace(&token, "***")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers() {
        let ok = parse(br#"{"access_token":"t-1","token_type":"bearer","expires_in":2}"#);
        assert_eq!(ok, Ok(("t-1".to_string(), Some(Duration::from_secs(2)))));
        let forever = parse(br#"{"access_token":"t-2","expires_in":"x"}"#);
        assert_eq!(forever, Ok(("t-2".to_string(), None)));
        for bad in [
            &br#"{"token_type":"bearer"}"#[..],
            br#"{"access_token":"a\nb"}"#,
            br#"{"access_token":"t","token_type":"mac"}"#,
            b"<html>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
