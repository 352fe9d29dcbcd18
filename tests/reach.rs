//! Reaching receivers (issue 28): webhooks through a real proxy (Debian's tinyproxy on
//! loopback, its own log saying what passed through it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::*;

/// tinyproxy in the foreground on a free loopback port, requiring Basic credentials
/// `flag:pr0xy-pass`, letting CONNECT reach `connect_port`.
struct Tinyproxy {
    _child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    /// `None` (the test skipped, saying so) where tinyproxy is not installed, outside CI.
    async fn start(dir: &Path, connect_port: u16) -> Option<Tinyproxy> {
        let installed = std::process::Command::new("tinyproxy")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have tinyproxy (.ci/run installs it)"
            );
            eprintln!("SKIPPED: no tinyproxy on this machine (apt-get install tinyproxy)");
            return None;
        }
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        let text = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nConnectPort {connect_port}\nBasicAuth flag pr0xy-pass\nMaxClients 20\n",
            log.display()
        );
        std::fs::write(&conf, text).unwrap();
        let child = tokio::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eventually_async(|| async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("tinyproxy not listening yet: {e}"))
        })
        .await;
        Some(Tinyproxy {
            _child: child,
            port,
            log,
        })
    }

    fn url(&self, user_info: &str) -> String {
        format!("http://{user_info}@127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A webhook sink `name` posting to `url`, signed with `s3cret`, with `extra` YAML lines.
fn sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    url: {url}\n    signing_secret: s3cret\n    initial_backoff: 50ms\n    timeout: 2s\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_go_through_the_proxy_the_environment_or_their_key_names_or_direct() {
    let plain = Receiver::start().await;
    let ca = test_ca();
    let tls = Receiver::start_with(Some(ca.server.clone())).await;
    let s = Setup::new();
    let Some(proxy) = Tinyproxy::start(s.dir.path(), tls.addr.port()).await else {
        return;
    };
    let ca_file = s.path("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let sinks = [
        // From HTTP_PROXY: absolute-form requests to the proxy.
        sink("env", &plain.url("/env?token=t0k"), ""),
        // From its key: a CONNECT tunnel, TLS to the receiver inside it.
        sink(
            "tunneled",
            &tls.url("/tunneled"),
            &format!(
                "    proxy: {}\n    ca_file: {}\n",
                proxy.url("flag:pr0xy-pass"),
                ca_file.display()
            ),
        ),
        // `none`: direct, whatever the environment says.
        sink("direct", &plain.url("/direct"), "    proxy: none\n"),
        // Wrong credentials: the proxy's refusal is a reason to retry, and says so.
        sink(
            "refused",
            &format!("https://127.0.0.1:{}/refused", plain.addr.port()),
            &format!("    proxy: {}\n", proxy.url("flag:bad-pass-9")),
        ),
    ]
    .concat();
    s.write_lines(0..3, Encoding::Json);
    let env_proxy = proxy.url("flag:pr0xy-pass");
    // `check --connect` reaches each receiver through its proxy (the refused one aside).
    let reachable = sinks[..sinks.find("  - name: refused").unwrap()].to_string();
    let (code, out, err) = run_cmd_env(
        &[
            "check",
            "--connect",
            "--config",
            s.config(&reachable).to_str().unwrap(),
        ],
        &[("HTTP_PROXY", &proxy.url("flag:pr0xy-pass"))],
    );
    assert_eq!(code, 0, "{out}{err}");
    let through = format!("through proxy http://127.0.0.1:{}", proxy.port);
    assert_eq!(err.matches(&through).count(), 2, "{err}");
    let config = s.config(&sinks);
    // `check` shows the proxy without its credentials, and reaches the receiver through it.
    let (code, out, err) = run_cmd_env(
        &["check", "--config", config.to_str().unwrap()],
        &[("HTTP_PROXY", &proxy.url("flag:pr0xy-pass"))],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "\"proxy\": \"http://127.0.0.1:{}/***\"",
            proxy.port
        )),
        "{out}"
    );
    assert!(
        !out.contains("pr0xy-pass") && !err.contains("pr0xy-pass"),
        "{out}{err}"
    );
    let mut ft = Flagtail::start_env(&config, &[("HTTP_PROXY", &env_proxy), ("NO_PROXY", "")]);
    let got_plain = plain.wait_delivered(6).await;
    let got_tls = tls.wait_delivered(3).await;
    // tinyproxy answers a CONNECT with wrong credentials 401.
    ft.wait_log("answered CONNECT 127.0.0.1:").await;

    let log = proxy.log();
    let env_line = format!(
        "POST http://127.0.0.1:{}/env?token=t0k HTTP/1.1",
        plain.addr.port()
    );
    let connect_line = format!("CONNECT 127.0.0.1:{} HTTP/1.1", tls.addr.port());
    assert_eq!(log.matches(&env_line).count(), 3, "{log}");
    // One tunnel for `check`, one (or more, kept alive) for the events.
    assert!(log.matches(&connect_line).count() >= 2, "{log}");
    assert!(
        !log.contains("/direct") && !log.contains("/tunneled"),
        "{log}"
    );

    // Signatures and idempotency keys are those of the direct requests.
    let key_of_event = |r: &Received| (key_of(&r.body), r.header("idempotency-key").to_string());
    let mut direct: Vec<_> = got_plain
        .iter()
        .filter(|r| r.path == "/direct")
        .map(key_of_event)
        .collect();
    let mut env: Vec<_> = got_plain
        .iter()
        .filter(|r| r.path.starts_with("/env"))
        .map(key_of_event)
        .collect();
    let mut tunneled: Vec<_> = got_tls
        .iter()
        .filter(|r| r.path == "/tunneled")
        .map(key_of_event)
        .collect();
    for v in [&mut direct, &mut env, &mut tunneled] {
        v.sort();
    }
    assert_eq!(direct.len(), 3);
    assert!(direct.iter().all(|(_, key)| !key.is_empty()));
    assert_eq!(env, direct);
    assert_eq!(tunneled, direct);
    for r in got_plain.iter().chain(&got_tls) {
        let want = flipt_signature("s3cret", r.text());
        assert_eq!(r.header("x-flipt-webhook-signature"), want, "{}", r.path);
        // The proxy's credentials are the proxy's: never passed on to a receiver.
        assert_eq!(r.header("proxy-authorization"), "", "{}", r.path);
    }
    assert!(plain.attempts().iter().all(|r| r.path != "/refused"));
    let stderr = ft.stderr();
    assert!(
        stderr.contains("answered CONNECT 127.0.0.1:") && stderr.contains("http://127.0.0.1:"),
        "{stderr}"
    );
    for secret in ["pr0xy-pass", "bad-pass-9", "t0k"] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
    assert!(ft.terminate().await.success());
}

/// A CA made here, signing certificates for servers (127.0.0.1) and clients.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `name` (a server's 127.0.0.1, or a client's name) and its key, PEM.
    fn sign(&self, name: &str, client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        if client {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server config for 127.0.0.1 that requires a client certificate this CA signed.
    fn server_requiring_clients(&self) -> std::sync::Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let (cert, key) = self.sign("127.0.0.1", false);
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        std::sync::Arc::new(config)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_requiring_client_certificates_takes_cert_file_and_a_renewed_one_on_sighup() {
    let trusted = Ca::new("receiver's CA");
    let stranger = Ca::new("some other CA");
    let rx = Receiver::start_with(Some(trusted.server_requiring_clients())).await;
    let s = Setup::new();
    let (ca_file, cert_file, key_file) =
        (s.path("ca.pem"), s.path("client.pem"), s.path("client.key"));
    std::fs::write(&ca_file, trusted.pem()).unwrap();
    let (good_cert, good_key) = trusted.sign("flagtail", true);
    let (bad_cert, bad_key) = stranger.sign("flagtail", true);
    let keys = format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    let config = s.config(&sink("mtls", &rx.url("/in"), &keys));
    let check = || run_cmd(&["check", "--config", config.to_str().unwrap()]);

    // Checked at start, errors naming the key: a missing file, a key of another certificate,
    // half a pair.
    let (code, _, err) = check();
    assert!(
        code != 0 && err.contains("sinks.0.cert_file (sink mtls): cannot read"),
        "{err}"
    );
    std::fs::write(&cert_file, &good_cert).unwrap();
    std::fs::write(&key_file, &bad_key).unwrap();
    let (code, _, err) = check();
    assert!(
        code != 0 && err.contains("sinks.0.key_file (sink mtls): "),
        "{err}"
    );
    std::fs::write(&key_file, "not a key\n").unwrap();
    let (code, _, err) = check();
    assert!(code != 0 && err.contains("holds no private key"), "{err}");
    let half = s.path("half.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &half,
        text.replace(&format!("    key_file: {}\n", key_file.display()), ""),
    )
    .unwrap();
    let (code, _, err) = run_cmd(&["check", "--config", half.to_str().unwrap()]);
    assert!(
        code != 0 && err.contains("cert_file needs its key_file"),
        "{err}"
    );

    // A certificate from a CA the receiver does not trust: refused in the handshake, retried.
    std::fs::write(&cert_file, &bad_cert).unwrap();
    std::fs::write(&key_file, &bad_key).unwrap();
    s.write_lines(0..3, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    ft.wait_log("attempt=2").await;
    assert!(
        rx.attempts().is_empty(),
        "a request got in without a trusted certificate"
    );

    // Renewed files, taken up on SIGHUP.
    std::fs::write(&cert_file, &good_cert).unwrap();
    std::fs::write(&key_file, &good_key).unwrap();
    ft.signal("HUP");
    let got = rx.wait_delivered(3).await;
    let mut keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    keys.sort();
    assert_eq!(keys, ["flag-0", "flag-1", "flag-2"]);
    assert!(ft.terminate().await.success());
}

/// `bytes` gunzipped by Python's `gzip` module, an implementation independent of flagtail's.
fn python_gunzip(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python could not gunzip the body");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_decoded_by_the_receiver_and_signed_as_sent() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..4, Encoding::Json);
    let sinks = [
        sink("gz", &rx.url("/gz"), "    compression: gzip\n"),
        sink(
            "gz-batch",
            &rx.url("/batch"),
            "    compression: gzip\n    batch: {max_events: 4, linger: 1s}\n",
        ),
    ]
    .concat();
    let mut ft = Flagtail::start(&s.config(&sinks));
    let got = rx.wait_delivered(5).await;
    assert!(ft.terminate().await.success());
    let mut plain = Vec::new();
    for r in &got {
        assert_eq!(r.header("content-encoding"), "gzip", "{}", r.path);
        assert_eq!(&r.body[..2], [0x1f, 0x8b], "{}: not gzip", r.path);
        // The signature is over the bytes sent.
        assert_eq!(
            r.header("x-flipt-webhook-signature"),
            flipt_signature("s3cret", &r.body)
        );
        let text = python_gunzip(&r.body);
        if r.path == "/gz" {
            plain.push(text);
        } else {
            let batch: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(batch.len(), 4);
        }
    }
    plain.sort();
    let mut want: Vec<String> = (0..4).map(|i| flipt_line(i, Encoding::Json).1).collect();
    want.sort();
    assert_eq!(plain, want);
    let (code, out, err) = run_cmd(&[
        "check",
        "--config",
        s.path("flagtail.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"compression\": \"gzip\""), "{out}");
    // `render` shows the text and the bytes sent, signed as sent.
    let (code, out, err) = run_cmd(&[
        "render",
        "--config",
        s.path("flagtail.yaml").to_str().unwrap(),
        "--sink",
        "gz",
        "--input",
        s.log().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let sent = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        line["body_base64"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(python_gunzip(&sent), line["body"].as_str().unwrap());
    assert_eq!(
        line["body"].as_str().unwrap(),
        flipt_line(0, Encoding::Json).1
    );
    assert_eq!(line["headers"]["content-encoding"], "gzip");
    assert_eq!(
        line["headers"]["x-flipt-webhook-signature"],
        flipt_signature("s3cret", &sent)
    );
}

/// Verifies each request's `v1a,` signatures with Python's `cryptography` (an ed25519
/// implementation independent of flagtail's ring) under the `whpk_` key `public`; the same
/// signature over a changed body must fail. Returns how many signatures verified.
fn python_verify_v1a(public: &str, got: &[Received]) -> usize {
    use base64::Engine;
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD;
    let requests: Vec<serde_json::Value> = got
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.header("webhook-id"),
                "ts": r.header("webhook-timestamp"),
                "sigs": r.header("webhook-signature"),
                "body": b64.encode(&r.body),
            })
        })
        .collect();
    let script = r#"
import base64, json, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
public, requests = json.load(sys.stdin)
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
n = 0
for r in requests:
    body = base64.b64decode(r["body"])
    for sig in r["sigs"].split(" "):
        if not sig.startswith("v1a,"):
            continue
        raw = base64.b64decode(sig[4:])
        key.verify(raw, f"{r['id']}.{r['ts']}.".encode() + body)
        try:
            key.verify(raw, f"{r['id']}.{r['ts']}.".encode() + body + b" ")
            sys.exit("a tampered body verified")
        except InvalidSignature:
            pass
        n += 1
print(n)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&(public, requests)).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'cryptography'") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have cryptography (.ci/run installs it)"
        );
        eprintln!("SKIPPED: no Python cryptography here (pip install cryptography)");
        return usize::MAX;
    }
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_keys_from_keygen_sign_v1a_beside_v1_verified_independently() {
    let (code, out, err) = run_cmd(&["keygen", "ed25519"]);
    assert_eq!(code, 0, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let (secret, public) = (field("signing_secret: "), field("public_key: "));
    assert!(
        secret.starts_with("whsk_") && public.starts_with("whpk_"),
        "{out}"
    );
    let hmac = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Json);
    let sinks = format!(
        "  - name: asym\n    url: {}\n    signature: standard-webhooks\n    signing_secret: [\"{secret}\", \"{hmac}\"]\n",
        rx.url("/in")
    );
    let config = s.config(&sinks);
    let (code, out, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(&secret[5..]),
        "the signing key is shown:\n{out}"
    );
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(3).await;
    assert!(ft.terminate().await.success());
    for r in &got {
        let sigs: Vec<&str> = r.header("webhook-signature").split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert!(
            sigs[0].starts_with("v1a,") && sigs[1].starts_with("v1,"),
            "{sigs:?}"
        );
        // The HMAC one still verifies with the standardwebhooks crate.
        let wh = standardwebhooks::Webhook::new(hmac).unwrap();
        wh.verify(&r.body, &r.headers).unwrap();
    }
    let verified = python_verify_v1a(&public, &got);
    assert!(verified == 3 || verified == usize::MAX, "{verified}");
}

/// An OAuth2 token endpoint on loopback issuing `tok-N` tokens that live 2 seconds; it answers
/// 503 to its first `fail_first` requests.
struct TokenEndpoint {
    port: u16,
    /// Each token issued, and when.
    issued: std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>>,
    /// Each request's Authorization header and form body.
    asked: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl TokenEndpoint {
    async fn start(fail_first: usize) -> TokenEndpoint {
        use http_body_util::{BodyExt, Full};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failures = std::sync::Arc::new(AtomicUsize::new(fail_first));
        let (i, a) = (issued.clone(), asked.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (issued, asked, failures) = (i.clone(), a.clone(), failures.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (issued, asked, failures) =
                            (issued.clone(), asked.clone(), failures.clone());
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let form = req.into_body().collect().await?.to_bytes();
                            asked
                                .lock()
                                .unwrap()
                                .push((auth, String::from_utf8_lossy(&form).into_owned()));
                            let (status, body) = if failures
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok()
                            {
                                (503, "idp busy".to_string())
                            } else {
                                let mut issued = issued.lock().unwrap();
                                let token = format!("tok-{}", issued.len());
                                issued.push((token.clone(), std::time::Instant::now()));
                                (
                                    200,
                                    format!(
                                        r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":2}}"#
                                    ),
                                )
                            };
                            let mut resp =
                                hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, hyper::Error>(resp)
                        }
                    },
                );
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        TokenEndpoint {
            port,
            issued,
            asked,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_fetched_refreshed_before_they_expire_and_again_on_a_401() {
    let idp = TokenEndpoint::start(1).await;
    let rx = Receiver::start().await;
    // A token is good for 2 s after it was issued; the very first request is refused 401, as a
    // receiver that revoked its token would.
    let issued = idp.issued.clone();
    let mut first = true;
    rx.plan(move |r| {
        let bearer = r
            .header("authorization")
            .strip_prefix("Bearer ")
            .unwrap_or("");
        let valid = issued
            .lock()
            .unwrap()
            .iter()
            .any(|(t, at)| t == bearer && at.elapsed() < std::time::Duration::from_secs(2));
        match (std::mem::take(&mut first), valid) {
            (false, true) => Reply::Status(204),
            _ => Reply::Status(401),
        }
    });
    let s = Setup::new();
    s.write_lines(0..40, Encoding::Json);
    let extra = format!(
        "    rate_limit: 20/s\n    oauth2:\n      token_url: http://127.0.0.1:{}/oauth/token\n      client_id: flagtail\n      client_secret: \"cl-s3cret/x+y\"\n      scopes: [audit.write, audit.read]\n      audience: https://api.example\n",
        idp.port
    );
    let config = s.config(&sink("api", &rx.url("/in"), &extra));
    let (code, out, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("cl-s3cret") && out.contains("\"client_secret\": \"***\""),
        "{out}"
    );
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(40).await;
    let stderr = ft.stderr();
    assert!(ft.terminate().await.success());

    let mut keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 40);
    // One 401 (the first request), answered by a new token and one more try; no token expired.
    let refused = rx.attempts().len() - got.len();
    assert_eq!(refused, 1, "requests refused");
    // 40 requests at 20/s take 2 s: tokens were renewed before they ran out, not per request.
    let issued = idp.issued.lock().unwrap().len();
    assert!((3..=8).contains(&issued), "{issued} tokens issued");
    let asked = idp.asked.lock().unwrap().clone();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        // RFC 6749 §2.3.1: the id and secret are form-encoded before they are joined.
        "flagtail:cl-s3cret%2Fx%2By",
    );
    for (auth, form) in &asked {
        assert_eq!(auth, &format!("Basic {basic}"));
        assert_eq!(
            form,
            "grant_type=client_credentials&scope=audit.write+audit.read&audience=https%3A%2F%2Fapi.example"
        );
    }
    // The endpoint's 503 was retried under the sink's policy and said so.
    assert!(
        stderr.contains("OAuth2 token endpoint http://127.0.0.1:")
            && stderr.contains("503 Service Unavailable: idp busy"),
        "{stderr}"
    );
    for secret in ["cl-s3cret", "tok-", &basic] {
        assert!(!stderr.contains(secret), "{secret} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_fetches_an_oauth2_token_and_says_why_there_is_none() {
    let idp = TokenEndpoint::start(1).await;
    let rx = Receiver::start().await;
    let s = Setup::new();
    let extra = format!(
        "    oauth2:\n      token_url: http://127.0.0.1:{}/oauth/token\n      client_id: flagtail\n      client_secret: \"cl-s3cret\"\n",
        idp.port
    );
    let config = s.config(&sink("api", &rx.url("/in"), &extra));
    let args = ["check", "--connect", "--config", config.to_str().unwrap()];
    // The endpoint's first answer is 503: no token, so the sink cannot be reached.
    let (code, out, err) = run_cmd(&args);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("OAuth2 token endpoint http://127.0.0.1:")
            && err.contains("503 Service Unavailable: idp busy"),
        "{err}"
    );
    // Then a token: reached, and said so; nothing was sent to the receiver.
    let (code, out2, err) = run_cmd(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("; an OAuth2 token from http://127.0.0.1:"),
        "{err}"
    );
    assert_eq!(idp.issued.lock().unwrap().len(), 1);
    assert!(rx.attempts().is_empty());
    for text in [&out, &out2, &err] {
        assert!(
            !text.contains("cl-s3cret") && !text.contains("tok-0"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_compression_and_oauth2_are_taken_up_on_sighup() {
    let rx = Receiver::start().await;
    let idp = TokenEndpoint::start(0).await;
    let s = Setup::new();
    let Some(proxy) = Tinyproxy::start(s.dir.path(), rx.addr.port()).await else {
        return;
    };
    // Direct, plain, no token.
    let config = s.config(&sink("api", &rx.url("/in"), "    proxy: none\n"));
    s.write_lines(0..1, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    let first = rx.wait_delivered(1).await;
    assert_eq!(first[0].header("content-encoding"), "");
    assert_eq!(first[0].header("authorization"), "");
    // Through the proxy, gzipped, with a bearer token: the same sink after a reload.
    let extra = format!(
        "    proxy: {}\n    compression: gzip\n    oauth2:\n      token_url: http://127.0.0.1:{}/oauth/token\n      client_id: flagtail\n      client_secret: cl-s3cret\n",
        proxy.url("flag:pr0xy-pass"),
        idp.port
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("    proxy: none\n", &extra);
    std::fs::write(&config, text).unwrap();
    ft.signal("HUP");
    ft.wait_log("config reloaded").await;
    s.write_lines(1..2, Encoding::Json);
    let got = rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    let second = &got[1];
    assert_eq!(second.header("content-encoding"), "gzip");
    assert_eq!(python_gunzip(&second.body), flipt_line(1, Encoding::Json).1);
    assert_eq!(second.header("authorization"), "Bearer tok-0");
    let log = proxy.log();
    let line = format!("POST http://127.0.0.1:{}/in HTTP/1.1", rx.addr.port());
    assert_eq!(log.matches(&line).count(), 1, "{log}");
}

/// Posts Flipt events to `port` as Standard Webhooks senders sign them, with Python's
/// `standardwebhooks` package (`v1`) and `cryptography` (`v1a`, with the ed25519 `seed`);
/// prints one status per case, or `SKIP` where the packages are missing.
fn python_senders(port: u16, old_secret: &str, seed_b64: &str, bodies: &[String]) -> String {
    let script = r#"
import base64, datetime, json, sys, urllib.request, urllib.error
try:
    from standardwebhooks import Webhook
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
except ImportError:
    print("SKIP"); sys.exit(0)
port, secret, seed, bodies = json.load(sys.stdin)
def post(msg_id, ts, body, sig):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body.encode(), method="POST",
        headers={"webhook-id": msg_id, "webhook-timestamp": str(int(ts.timestamp())), "webhook-signature": sig})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
now = datetime.datetime.now(tz=datetime.timezone.utc)
wh = Webhook(secret)
key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed))
def v1a(msg_id, ts, body):
    return "v1a," + base64.b64encode(key.sign(f"{msg_id}.{int(ts.timestamp())}.{body}".encode())).decode()
old = now - datetime.timedelta(minutes=10)
print(" ".join(str(s) for s in [
    post("msg_1", now, bodies[0], wh.sign("msg_1", now, bodies[0])),
    post("msg_2", now, bodies[1] + " ", wh.sign("msg_2", now, bodies[1])),
    post("msg_3", old, bodies[1], wh.sign("msg_3", old, bodies[1])),
    post("msg_4", now, bodies[1], "v1,bm9wZQ== " + v1a("msg_4", now, bodies[1])),
    post("msg_5", now, bodies[2], v1a("msg_5", now, bodies[1])),
    post("msg_6", now, bodies[2], ""),
]))
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&(port, old_secret, seed_b64, bodies)).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_source_takes_standard_webhooks_signed_by_independent_senders_and_refuses_the_rest()
{
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    let (new, old) = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    );
    let seed = [9u8; 32];
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let public = format!(
        "whpk_{}",
        b64.encode(ring::signature::KeyPair::public_key(&pair))
    );
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsources:\n  - {{name: hooks, http: \"127.0.0.1:{port}\", verify: standard-webhooks, verify_secret: [\"{new}\", \"{old}\", \"{public}\"], format: flipt}}\nsinks:\n{}",
            s.state().display(),
            sink("out", &rx.url("/"), "")
        ),
    )
    .unwrap();
    let (code, out, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("MfKQ9r8G") && !out.contains("C2FVsBQI"),
        "{out}"
    );
    let _ft = Flagtail::start(&config);
    eventually(|| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let bodies: Vec<String> = (0..3).map(|i| flipt_line(i, Encoding::Json).1).collect();
    let statuses = python_senders(port, old, &b64.encode(seed), &bodies);
    if statuses == "SKIP" {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have standardwebhooks and cryptography (.ci/run installs them)"
        );
        eprintln!("SKIPPED: pip install standardwebhooks cryptography");
        return;
    }
    // Signed under the older secret: taken; the body changed: refused; ten minutes old:
    // refused; a bad v1 beside a good v1a: taken; v1a of another body, or none: refused.
    assert_eq!(statuses, "200 401 401 200 401 401");
    let got = rx.wait_delivered(2).await;
    let mut keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    keys.sort();
    assert_eq!(keys, ["flag-0", "flag-1"]);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `curl` POSTing `body` to `url` with `args` (TLS options); its exit code and the HTTP status.
fn curl(url: &str, body: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--data-binary",
            body,
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_source_serves_tls_refuses_clients_without_a_certificate_and_rereads_on_sighup() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (server_ca, client_ca, stranger) = (
        Ca::new("ingest CA"),
        Ca::new("client CA"),
        Ca::new("stranger"),
    );
    let file = |name: &str, text: &str| {
        let path = s.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (cert, key) = server_ca.sign("127.0.0.1", false);
    let (cert_file, key_file) = (s.path("server.pem"), s.path("server.key"));
    let ca = file("ca.pem", &server_ca.pem());
    let clients = file("clients.pem", &client_ca.pem());
    let (c, k) = client_ca.sign("sender", true);
    let (good_cert, good_key) = (file("good.pem", &c), file("good.key", &k));
    let (c, k) = stranger.sign("sender", true);
    let (bad_cert, bad_key) = (file("bad.pem", &c), file("bad.key", &k));
    let port = free_port();
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsources:\n  - name: hooks\n    http: \"127.0.0.1:{port}\"\n    format: flipt\n    tls: {{cert_file: {}, key_file: {}, client_ca_file: {clients}}}\nsinks:\n{}",
            s.state().display(),
            cert_file.display(),
            key_file.display(),
            sink("out", &rx.url("/"), "")
        ),
    )
    .unwrap();
    // Checked at start, errors naming the key.
    let (code, _, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        code != 0 && err.contains("sources.0.tls.cert_file: cannot read"),
        "{err}"
    );
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let mut ft = Flagtail::start(&config);
    let url = format!("https://127.0.0.1:{port}/");
    eventually(|| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let event = |i| flipt_line(i, Encoding::Json).1;
    let with = |cert: &str, key: &str| {
        vec![
            "--cacert".to_string(),
            ca.clone(),
            "--cert".into(),
            cert.into(),
            "--key".into(),
            key.into(),
        ]
    };
    let good = with(&good_cert, &good_key);
    assert_eq!(curl(&url, &event(0), &strs(&good)), (0, "200".into()));
    // No certificate, or one from another CA: refused in the handshake, no HTTP status.
    let (code, status) = curl(&url, &event(1), &["--cacert", &ca]);
    assert!(code != 0 && status == "000", "{code} {status}");
    let (code, status) = curl(&url, &event(1), &strs(&with(&bad_cert, &bad_key)));
    assert!(code != 0 && status == "000", "{code} {status}");
    // Plain HTTP on the TLS port gets no answer either.
    let (_, status) = curl(&format!("http://127.0.0.1:{port}/"), &event(1), &[]);
    assert_eq!(status, "000");

    // A renewed certificate from another CA: taken up on SIGHUP, on the same listener.
    let renewed_ca = Ca::new("renewed ingest CA");
    let (cert, key) = renewed_ca.sign("127.0.0.1", false);
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let renewed = file("renewed.pem", &renewed_ca.pem());
    ft.signal("HUP");
    ft.wait_log("config reloaded").await;
    let mut new_args = with(&good_cert, &good_key);
    new_args[1] = renewed;
    eventually(|| match curl(&url, &event(2), &strs(&new_args)) {
        (0, status) if status == "200" => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    let (code, _) = curl(&url, &event(3), &strs(&good));
    assert!(code != 0, "the old certificate is still served");
    let got = rx.wait_delivered(2).await;
    let mut keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    keys.sort();
    assert_eq!(keys, ["flag-0", "flag-2"]);
    assert!(ft.terminate().await.success());
}
