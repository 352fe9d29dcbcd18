//! Which proxy, if any, a webhook's requests go through: the sink's `proxy` key, or else the
//! environment as curl reads it.
//!
//! From the environment: `no_proxy` (or `NO_PROXY`) first: a comma- or space-separated list of
//! host names (each matching itself and its subdomains; a leading dot is allowed), IP addresses,
//! CIDR ranges, or `*` for every host. Then, by the receiver's scheme, `https_proxy` or
//! `http_proxy`, then `all_proxy`; for each, the lower-case name wins over the upper-case one.
//! Unlike curl, `HTTP_PROXY` in upper case is read too (curl leaves it out for CGI programs,
//! where a request header can set it; a daemon has no such header). An empty value is unset.
//!
//! A proxy is `http://[user:password@]host[:port]` (no scheme means `http://`, as in curl; no
//! port means 80, where curl would take 1080). Its user info becomes `Proxy-Authorization: Basic …`, a sensitive header
//! value that is never printed; the proxy is shown as `http://host:port`. What a proxy is used
//! for (absolute-form requests, CONNECT tunnels) is `delivery::http`'s.

use crate::config::{ProxySetting, SecretUrl};
use ::http::{HeaderValue, Uri};
use base64::Engine;
use std::net::IpAddr;

/// The proxy a sink's requests go through.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Where to connect: `http://host:port` of the proxy.
    pub uri: Uri,
    /// `Basic …` of the proxy URL's user info, marked sensitive; none without user info.
    pub authorization: Option<HeaderValue>,
    /// The proxy as logs and errors show it: `http://host:port`, no user info.
    pub shown: String,
    /// The user info, percent-decoded, for the sink's scrubber.
    pub credentials: Option<(String, String)>,
}

/// The proxy for requests to `target`: the sink's `proxy` key if it is set, else the
/// environment (read through `env`). An error names where the setting came from (`proxy` or the
/// variable) and never quotes its value.
pub fn resolve(
    setting: Option<&ProxySetting>,
    target: &Uri,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, String> {
    match setting {
        Some(ProxySetting::Direct) => Ok(None),
        Some(ProxySetting::Via(url)) => parse(url).map(Some),
        None => {
            let host = target.host().unwrap_or("");
            if let Some(list) = first_set(&env, &["no_proxy", "NO_PROXY"])
                && bypassed(&list.1, host)
            {
                return Ok(None);
            }
            let names: &[&str] = match target.scheme_str() {
                Some("https") => &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
                _ => &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"],
            };
            let Some((name, value)) = first_set(&env, names) else {
                return Ok(None);
            };
            let value = value.trim();
            let text = match value.contains("://") {
                true => value.to_string(),
                false => format!("http://{value}"),
            };
            SecretUrl::parse(&text)
                .and_then(|url| parse(&url))
                .map(Some)
                .map_err(|e| format!("environment variable {name}: {e}"))
        }
    }
}

/// The first of `names` set to something other than blanks, with its name.
fn first_set(
    env: &impl Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|&n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

/// A proxy URL as a [`Proxy`]: `http` only, a host, the port 80 unless given.
fn parse(url: &SecretUrl) -> Result<Proxy, String> {
    if url.scheme() != "http" {
        return Err(format!(
            "{url} is not an http:// proxy (the only kind supported)"
        ));
    }
    if !url.has_host() {
        return Err(format!("{url} names no host"));
    }
    let (host, port) = url.host_port();
    let shown = format!("http://{host}:{}", port.unwrap_or(80));
    let uri = shown
        .parse::<Uri>()
        .map_err(|_| format!("{url} is not a proxy address a connection can be opened to"))?;
    let credentials = url.credentials();
    let authorization = credentials.as_ref().and_then(|(user, password)| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    });
    Ok(Proxy {
        uri,
        authorization,
        shown,
        credentials,
    })
}

/// Whether `no_proxy`'s `list` takes `host` out of proxying.
fn bypassed(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            match (ip, entry.split_once('/')) {
                (Some(ip), Some((net, bits))) => in_range(ip, net, bits),
                (Some(ip), None) => entry.parse::<IpAddr>() == Ok(ip),
                (None, _) => {
                    let name = entry.trim_start_matches('.').trim_end_matches('.');
                    let name = name.to_ascii_lowercase();
                    !name.is_empty()
                        && (host == name
                            || host.ends_with(&name)
                                && host[..host.len() - name.len()].ends_with('.'))
                }
            }
        })
}

/// Whether `ip` is in the range `net/bits` (both of one family).
fn in_range(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= width || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(env: &[(&str, &str)], target: &str) -> Result<Option<String>, String> {
        let env = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let proxy = resolve(None, &target.parse().unwrap(), env)?;
        Ok(proxy.map(|p| p.shown))
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let p = |v: &str| Ok(Some(v.to_string()));
        let https = "https://hooks.example.com/x";
        let http = "http://hooks.example.com/x";
        assert_eq!(via(&[], https), Ok(None));
        assert_eq!(
            via(&[("HTTPS_PROXY", "pr:3128")], https),
            p("http://pr:3128")
        );
        assert_eq!(via(&[("HTTPS_PROXY", "pr:3128")], http), Ok(None));
        assert_eq!(via(&[("http_proxy", "http://pr")], http), p("http://pr:80"));
        assert_eq!(
            via(&[("HTTP_PROXY", "pr:1"), ("http_proxy", "lo:2")], http),
            p("http://lo:2")
        );
        assert_eq!(
            via(&[("https_proxy", " "), ("ALL_PROXY", "a:9")], https),
            p("http://a:9")
        );
        for list in [
            "example.com",
            ".example.com",
            "x, EXAMPLE.com.",
            "*",
            "other hooks.example.com",
        ] {
            assert_eq!(
                via(&[("https_proxy", "pr:1"), ("no_proxy", list)], https),
                Ok(None),
                "{list}"
            );
        }
        for list in ["ample.com", "hooks.example", "*.example.com, 10.0.0.0/8"] {
            assert_eq!(
                via(&[("https_proxy", "pr:1"), ("NO_PROXY", list)], https),
                p("http://pr:1"),
                "{list}"
            );
        }
        let ip = "http://10.1.2.3:8080/x";
        for (list, direct) in [
            ("10.0.0.0/8", true),
            ("10.1.2.3", true),
            ("10.1.2.4", false),
            ("11.0.0.0/8", false),
            ("0.0.0.0/0", true),
        ] {
            let got = via(&[("http_proxy", "pr:1"), ("no_proxy", list)], ip);
            assert_eq!(got.unwrap().is_none(), direct, "{list}");
        }
        let v6 = "http://[::1]:8080/x";
        assert_eq!(
            via(&[("http_proxy", "pr:1"), ("no_proxy", "::1")], v6),
            Ok(None)
        );
        assert_eq!(via(&[("http_proxy", "[::1]:3")], http), p("http://[::1]:3"));
    }

    #[test]
    fn credentials_become_basic_and_errors_never_quote_the_value() {
        let url = SecretUrl::parse("http://us%40r:p%3Ass@pr:3128").unwrap();
        let proxy = resolve(
            Some(&ProxySetting::Via(url)),
            &"https://h/".parse().unwrap(),
            |_| None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(proxy.shown, "http://pr:3128");
        let basic = base64::engine::general_purpose::STANDARD.encode("us@r:p:ss");
        let auth = proxy.authorization.unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().unwrap(), format!("Basic {basic}"));
        assert_eq!(format!("{auth:?}"), "Sensitive");
        let env = |_: &str| Some("socks5://user:hunter2@pr:1080".to_string());
        let err = resolve(None, &"https://h/".parse().unwrap(), env).unwrap_err();
        assert!(
            err.starts_with("environment variable https_proxy: "),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let direct = resolve(
            Some(&ProxySetting::Direct),
            &"https://h/".parse().unwrap(),
            env,
        );
        assert!(matches!(direct, Ok(None)));
    }
}
