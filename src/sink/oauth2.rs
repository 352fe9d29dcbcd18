//! A webhook's `oauth2` key made ready: the token endpoint as a request target of its own
//! (reached as the sink's receiver is: its proxy, its `ca_file`, its `timeout`), with the client
//! credentials as Basic auth and the client credentials grant as the form body. Fetching,
//! caching and refreshing the token is `delivery::http::oauth2`'s.

use super::{Webhook, host_of, proxy, push_header, webhook_head};
use crate::config::{OAuth2Section, Scrubber, SinkSection, WebhookSink};
use ::http::HeaderMap;
use ::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use base64::Engine;
use std::sync::Arc;

/// Where a sink's bearer tokens come from.
pub struct OAuth2 {
    /// The token endpoint: URL, request head (Basic auth included), proxy, timeout.
    pub endpoint: Webhook,
    /// The form body of a token request: `grant_type=client_credentials`, scope, audience.
    pub form: Vec<u8>,
}

/// The sink's `oauth2` made ready; the client secret (and its Basic form) is added to
/// `scrubber`. Errors name the key.
pub fn build(
    s: &SinkSection,
    hook: &WebhookSink,
    o: &OAuth2Section,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
    scrubber: &mut Scrubber,
) -> Option<OAuth2> {
    scrubber.add(o.client_secret.expose());
    scrubber.add_user_info(&o.client_id, o.client_secret.expose());
    refuse_other_authorization(hook, at, errors);
    let url = match o.token_url.scheme() {
        "http" | "https" if o.token_url.has_host() => {
            o.token_url.target().parse::<::http::Uri>().ok()
        }
        _ => None,
    };
    let Some(url) = url else {
        errors.push(format!(
            "{}: {} is not an http:// or https:// URL",
            at("oauth2.token_url"),
            o.token_url
        ));
        return None;
    };
    let headers = token_headers(&url);
    let proxy = proxy::resolve(hook.proxy.as_ref(), &url, |name| std::env::var(name).ok())
        .map_err(|e| errors.push(format!("{}: {e}", at("proxy"))))
        .ok()?;
    let mut head = webhook_head(&url, &headers, None, proxy.as_ref());
    // RFC 6749 §2.3.1: the id and the secret are form-encoded, then joined as Basic auth.
    let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    let (id, secret): (String, String) = (encode(&o.client_id), encode(o.client_secret.expose()));
    scrubber.add(&secret);
    scrubber.add_user_info(&id, &secret);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    push_header(
        &mut head,
        AUTHORIZATION.as_str(),
        format!("Basic {basic}").as_bytes(),
    );
    let endpoint = Webhook {
        url,
        head,
        shown: o.token_url.redacted(),
        headers,
        signer: None,
        timeout: s.common.timeout,
        ca_file: hook.ca_file.clone(),
        scrubber: Arc::new(scrubber.clone()),
        proxy,
        client_cert: None,
        compression: crate::config::Compression::None,
        oauth2: None,
    };
    Some(OAuth2 {
        endpoint,
        form: form(o),
    })
}

/// An error if the sink sends an Authorization of its own (a header, the URL's user info).
fn refuse_other_authorization(
    hook: &WebhookSink,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) {
    let authorization = hook
        .headers
        .keys()
        .any(|h| h.eq_ignore_ascii_case("authorization"));
    let user_info = hook.url.0.credentials().is_some();
    if authorization || user_info {
        errors.push(format!(
            "{}: sends its own Authorization; remove it from headers and the URL's user info",
            at("oauth2")
        ));
    }
}

/// The fixed headers of a token request to `url`.
fn token_headers(url: &::http::Uri) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(super::USER_AGENT_VALUE),
    );
    if let Some(host) = host_of(url) {
        headers.insert(HOST, host);
    }
    headers
}

/// The client credentials grant, form-encoded.
fn form(o: &OAuth2Section) -> Vec<u8> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if !o.scopes.is_empty() {
        form.append_pair("scope", &o.scopes.join(" "));
    }
    if let Some(audience) = &o.audience {
        form.append_pair("audience", audience);
    }
    form.finish().into_bytes()
}
