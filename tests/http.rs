//! The HTTP ingest source, end to end: the real binary, real HTTP over loopback, its journal.

mod support;

use std::net::TcpListener as StdListener;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A free port on loopback.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with one http source `hooks` (its keys in `source`) and `sinks`.
fn http_config(s: &Setup, top: &str, source: &str, sinks: &str) -> std::path::PathBuf {
    let text = format!(
        "state_dir: {}\nadmin: {{listen: \"\"}}\nshutdown_grace: 5s\n{top}\nsources:\n  - name: hooks\n    format: flipt\n{source}sinks:\n{sinks}",
        s.state().display(),
    );
    let path = s.path("flagtail.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One HTTP/1.1 request on a fresh connection: (status, response head and body).
async fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut conn = eventually_connect(port).await;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, conn.read_to_string(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

async fn eventually_connect(port: u16) -> TcpStream {
    eventually(|| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

fn event(i: usize) -> String {
    flipt_line(i, Encoding::Json).0.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signatures_limits_and_bad_bodies_get_their_status() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (port, signed_port) = (free_port(), free_port());
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsources:\n\
             \x20 - {{name: hooks, http: \"127.0.0.1:{port}\", path: /in, auth_token: tok-123, max_body_bytes: 4096, format: flipt}}\n\
             \x20 - {{name: ld, http: \"127.0.0.1:{signed_port}\", verify: launchdarkly, verify_secret: s3crET, format: flipt}}\n\
             sinks:\n{}",
            s.state().display(),
            webhook_sink(&rx.url("/"), "")
        ),
    )
    .unwrap();
    let mut ft = Flagtail::start(&config);
    let bearer = [("Authorization", "Bearer tok-123")];
    // Accepted: one event, an array, NDJSON; the token as a bearer, bare, or in the query.
    assert_eq!(
        request(port, "POST", "/in", &bearer, &event(0)).await.0,
        200
    );
    let array = format!("[{}, {}]", event(1), event(2));
    assert_eq!(
        request(port, "POST", "/in", &[("Authorization", "tok-123")], &array)
            .await
            .0,
        200
    );
    let ndjson = format!("{}\n{}\n", event(3), event(4));
    let (code, answer) = request(port, "POST", "/in?token=tok-123", &[], &ndjson).await;
    assert_eq!(code, 200);
    assert!(answer.ends_with("{\"accepted\":2}"), "{answer}");
    // Refused.
    assert_eq!(
        request(
            port,
            "POST",
            "/in",
            &[("Authorization", "Bearer tok-124")],
            &event(9)
        )
        .await
        .0,
        401
    );
    assert_eq!(
        request(port, "POST", "/in?token=tok-12", &[], &event(9))
            .await
            .0,
        401
    );
    assert_eq!(request(port, "POST", "/in", &[], &event(9)).await.0, 401);
    assert_eq!(
        request(port, "POST", "/in", &bearer, &"x".repeat(5000))
            .await
            .0,
        413
    );
    assert_eq!(
        request(port, "POST", "/in", &bearer, "{\"version\": oops")
            .await
            .0,
        400
    );
    let (code, head) = request(port, "GET", "/in", &bearer, "").await;
    assert_eq!(code, 405);
    assert!(head.to_lowercase().contains("allow: post"), "{head}");
    assert_eq!(
        request(port, "POST", "/elsewhere", &bearer, &event(9))
            .await
            .0,
        404
    );
    // LaunchDarkly's signature: right, then wrong by one byte.
    let body = event(5);
    let sig = flipt_signature("s3crET", &body);
    assert_eq!(
        request(signed_port, "POST", "/", &[("X-LD-Signature", &sig)], &body)
            .await
            .0,
        200
    );
    let mut wrong = sig.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    assert_eq!(
        request(
            signed_port,
            "POST",
            "/",
            &[("X-LD-Signature", &wrong)],
            &event(9)
        )
        .await
        .0,
        401
    );
    assert_eq!(
        request(signed_port, "POST", "/", &[], &event(9)).await.0,
        401
    );

    wait_keys(flag_keys(0..6), || delivered_keys(&rx)).await;
    let rejected = s.state_lines("rejected/hooks.jsonl");
    assert!(ft.terminate().await.success());
    assert_eq!(rx.delivered().len(), 6, "nothing refused was delivered");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "not_json");
    assert_eq!(rejected[0]["line"], "{\"version\": oops");
    let log = ft.stderr();
    assert!(
        !log.contains("tok-123") && !log.contains("tok-12&") && !log.contains("flag-9"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagtails_own_flipt_webhook_is_taken_by_an_http_source_that_verifies_it() {
    // One daemon: a file source posts Flipt-signed webhooks to its own http source, which checks
    // the signature and writes what it takes to a file: Flipt's webhook sink can point here.
    let s = Setup::new();
    let port = free_port();
    let out = s.path("received.jsonl");
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsources:\n\
             \x20 - {{name: flipt, file: {}, format: flipt}}\n\
             \x20 - {{name: hooks, http: \"127.0.0.1:{port}\", verify: flipt, verify_secret: s3crET, format: flipt}}\n\
             sinks:\n\
             \x20 - {{name: relay, url: \"http://127.0.0.1:{port}/\", signing_secret: s3crET, sources: [flipt], initial_backoff: 50ms}}\n\
             \x20 - {{name: archive, type: file, path: {}, sources: [hooks]}}\n",
            s.state().display(),
            s.log().display(),
            out.display()
        ),
    )
    .unwrap();
    s.write_lines(0..5, Encoding::Console);
    let mut ft = Flagtail::start(&config);
    let lines = eventually(|| {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        match text.lines().count() {
            5 => Ok(text),
            n => Err(format!("{n} events relayed")),
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    let expected: String = (0..5)
        .map(|i| flipt_line(i, Encoding::Console).1 + "\n")
        .collect();
    assert_eq!(lines, expected, "relayed byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_200_loses_nothing_and_a_full_journal_answers_503() {
    let rx = Receiver::start().await;
    rx.plan(|_| Reply::Status(503));
    let s = Setup::new();
    let port = free_port();
    let config = http_config(
        &s,
        "max_line_bytes: 1024\njournal: {max_bytes: 4KiB}\n",
        &format!("    http: \"127.0.0.1:{port}\"\n    max_body_bytes: 1024\n"),
        &webhook_sink(
            &rx.url("/"),
            "    max_backoff_duration: 60s\n    initial_backoff: 20ms\n",
        ),
    );
    let mut ft = Flagtail::start(&config);
    // The receiver is down: events pile up in the journal until it is full.
    let mut accepted = 0;
    let mut full = None;
    for i in 0..40 {
        let (code, head) = request(port, "POST", "/", &[], &event(i)).await;
        match code {
            200 => accepted += 1,
            503 => {
                full = Some(head);
                break;
            }
            other => panic!("unexpected {other}: {head}"),
        }
    }
    let full = full.expect("a full journal answers 503");
    assert!(full.to_lowercase().contains("retry-after: 1"), "{full}");
    assert!(
        accepted >= 8,
        "{accepted} accepted before the journal was full"
    );
    // kill -9 right after those 200s; nothing was delivered yet.
    ft.kill_9().await;
    rx.plan(|_| Reply::Status(200));
    let mut ft = Flagtail::start(&config);
    wait_keys(flag_keys(0..accepted), || delivered_keys(&rx)).await;
    // Room again once the delivered segments are trimmed: a sender retrying gets its 200.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match request(port, "POST", "/", &[], &event(accepted)).await.0 {
            200 => break,
            503 if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => panic!("answered {other}"),
        }
    }
    wait_keys(flag_keys(0..accepted + 1), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rebinds_a_changed_address_and_refuses_one_it_cannot_bind() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (a, b) = (free_port(), free_port());
    let sinks = webhook_sink(&rx.url("/"), "");
    let config = http_config(&s, "", &format!("    http: \"127.0.0.1:{a}\"\n"), &sinks);
    let mut ft = Flagtail::start(&config);
    assert_eq!(request(a, "POST", "/", &[], &event(0)).await.0, 200);
    http_config(&s, "", &format!("    http: \"127.0.0.1:{b}\"\n"), &sinks);
    ft.signal("HUP");
    ft.wait_log("config reloaded").await;
    assert_eq!(request(b, "POST", "/", &[], &event(1)).await.0, 200);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", a)).is_err(),
        "the old address is closed"
    );
    // An address that is taken: the reload is refused, the running listener stays.
    let taken = StdListener::bind("127.0.0.1:0").unwrap();
    let c = taken.local_addr().unwrap().port();
    http_config(&s, "", &format!("    http: \"127.0.0.1:{c}\"\n"), &sinks);
    ft.signal("HUP");
    ft.wait_log("reload refused").await;
    assert_eq!(request(b, "POST", "/", &[], &event(2)).await.0, 200);
    wait_keys(flag_keys(0..3), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_max_line_bytes_is_refused_whole_not_half_taken() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    let config = http_config(
        &s,
        "max_line_bytes: 400\n",
        &format!("    http: \"127.0.0.1:{port}\"\n"),
        &webhook_sink(&rx.url("/"), ""),
    );
    let mut ft = Flagtail::start(&config);
    let long = format!("{{\"pad\": \"{}\"}}", "x".repeat(500));
    let body = format!("[{}, {long}]", event(0));
    let (code, answer) = request(port, "POST", "/", &[], &body).await;
    assert_eq!(code, 413, "{answer}");
    assert_eq!(request(port, "POST", "/", &[], &event(1)).await.0, 200);
    let got = rx.wait_delivered(1).await;
    assert!(ft.terminate().await.success());
    assert_eq!(
        key_of(&got[0].body),
        "flag-1",
        "nothing of the refused request was taken"
    );
    assert_eq!(rx.delivered().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_launchdarkly_webhook_arrives_mapped() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    let config = http_config(
        &s,
        "",
        &format!(
            "    http: \"127.0.0.1:{port}\"\n    verify: launchdarkly\n    verify_secret: ld-s3cret\n"
        ),
        &webhook_sink(&rx.url("/"), ""),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("format: flipt", "format: launchdarkly"),
    )
    .unwrap();
    let mut ft = Flagtail::start(&config);
    // LaunchDarkly sends its entry pretty-printed or compact; either is one event.
    let body = std::fs::read_to_string("tests/fixtures/launchdarkly-flag-on.json").unwrap();
    let sig = flipt_signature("ld-s3cret", &body);
    assert_eq!(
        request(port, "POST", "/", &[("X-LD-Signature", &sig)], &body)
            .await
            .0,
        200
    );
    let got = rx.wait_delivered(1).await;
    assert!(ft.terminate().await.success());
    let event: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["type"], "flag");
    assert_eq!(event["action"], "updated");
    assert_eq!(event["payload"]["key"], "new-ui");
    assert_eq!(event["payload"]["enabled"], true);
    assert_eq!(event["metadata"]["actor"]["name"], "Ariel Flores");
    assert_eq!(event["timestamp"], "2016-08-26T20:38:58.774Z");
}
