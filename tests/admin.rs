//! The admin endpoint and systemd readiness: `/readyz` waits for every source, `/metrics` counts
//! what happened, `READY=1`/`STOPPING=1` reach systemd's notification socket.

mod support;

use support::*;

/// `s`'s config with the admin endpoint on `port` and a second file source `other`.
fn with_admin(s: &Setup, sinks: &str, port: u16) -> std::path::PathBuf {
    let config = s.config(sinks);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "admin: {listen: \"\"}",
            &format!("admin: {{listen: \"127.0.0.1:{port}\"}}"),
        )
        .replace(
            "sources:\n",
            &format!(
                "sources:\n  - name: other\n    file: {}\n    format: flipt\n",
                s.path("other.log").display()
            ),
        );
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_every_source_to_open() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    let config = with_admin(&s, &webhook_sink(&rx.url("/"), ""), port);
    // `other` never says it is open (a test build's fault hook): not ready, and named.
    let mut ft = Flagtail::start_env(&config, &[("FLAGTAIL_TEST_FAULT", "hold-open:other")]);
    let (status, body) = eventually(|| admin_get(port, "/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let waiting: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(waiting["waiting_for_sources"], serde_json::json!(["other"]));
    assert_eq!(admin_get(port, "/healthz").unwrap().0, 200);
    assert!(ft.terminate().await.success());
    // Without it, both open: ready.
    let mut ft = Flagtail::start(&config);
    eventually(|| match admin_get(port, "/readyz") {
        Ok((200, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_run_count_what_the_receiver_got_and_what_was_rejected_or_dead_lettered() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    // flag-3 is refused for good; one line is not JSON.
    rx.plan(|r| {
        if key_of(&r.body) == "flag-3" {
            Reply::Status(400)
        } else {
            Reply::Status(204)
        }
    });
    s.write_lines(0..6, Encoding::Json);
    append(&s.log(), "this is not an event\n");
    let config = with_admin(&s, &webhook_sink(&rx.url("/"), ""), port);
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(5).await;
    let metrics = eventually(|| {
        let (_, text) = admin_get(port, "/metrics")?;
        let value = |line: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(line))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let got = (
            value("flagtail_deliveries_total{sink=\"hook\",outcome=\"delivered\"} "),
            value("flagtail_deliveries_total{sink=\"hook\",outcome=\"dead_letter\"} "),
            value("flagtail_lines_rejected_total{source=\"flipt\",reason=\"not_json\"} "),
            value("flagtail_dead_letters{sink=\"hook\"} "),
            value("flagtail_lines_read_total{source=\"flipt\"} "),
            // Computed when scraped: back to 0 once everything is done, with no more writes.
            value("flagtail_source_lag_bytes{source=\"flipt\"} "),
        );
        if got
            == (
                "5".into(),
                "1".into(),
                "1".into(),
                "1".into(),
                "7".into(),
                "0".into(),
            )
        {
            Ok(text)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    assert_eq!(rx.delivered().len(), 5);
    assert_eq!(dead_keys(&s, "hook"), ["flag-3"]);
    assert_eq!(s.state_lines("rejected/flipt.jsonl").len(), 1);
    assert!(metrics.contains("# EOF"));
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_once_sources_are_open_and_stopping_at_shutdown() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let notify = s.path("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&notify).unwrap();
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    let mut ft = Flagtail::start_env(&config, &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    assert!(ft.terminate().await.success());
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_gauge_counts_what_is_not_done_yet() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    rx.plan(|_| Reply::Stall);
    s.write_lines(0..3, Encoding::Json);
    let size = std::fs::metadata(s.log()).unwrap().len();
    let config = with_admin(&s, &webhook_sink(&rx.url("/"), "    timeout: 30s\n"), port);
    let mut ft = Flagtail::start(&config);
    rx.wait_attempts(1).await;
    let (_, text) = admin_get(port, "/metrics").unwrap();
    let lag = text
        .lines()
        .find_map(|l| l.strip_prefix("flagtail_source_lag_bytes{source=\"flipt\"} "))
        .unwrap_or_else(|| panic!("no lag gauge: {text}"));
    assert_eq!(
        lag.trim(),
        size.to_string(),
        "nothing is done while the first request stalls"
    );
    assert!(ft.terminate().await.success());
}
