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
            &tls.url("/refused"),
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
    assert!(
        log.matches(&connect_line).count() >= 4,
        "check and the events: {log}"
    );
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
        let want = flipt_signature("s3cret", &r.text());
        assert_eq!(r.header("x-flipt-webhook-signature"), want, "{}", r.path);
        // The proxy's credentials are the proxy's: never passed on to a receiver.
        assert_eq!(r.header("proxy-authorization"), "", "{}", r.path);
    }
    assert!(tls.attempts().iter().all(|r| r.path != "/refused"));
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
