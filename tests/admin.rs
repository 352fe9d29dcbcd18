//! The admin endpoint and systemd readiness: `/readyz` waits for every source, `/metrics` counts
//! what happened, `READY=1`/`STOPPING=1` reach systemd's notification socket.

mod support;

use std::io::{Read, Write};
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
    assert!(
        !metrics.contains("# EOF"),
        "text 0.0.4 when no format is asked for"
    );
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

/// `/status.json` from the admin endpoint at `port`, once `ready` says it shows what is awaited.
async fn status_when(port: u16, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    eventually(|| {
        let (code, body) = admin_get(port, "/status.json")?;
        let status: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
        match ready(&status) {
            true => Ok(status),
            false => Err(body),
        }
    })
    .await
}

/// The source or sink called `name` in a status.
fn named<'a>(status: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    status[list]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {status}"))
}

/// A headless Chromium, or `None` outside CI when there is none (CI installs it).
fn chromium() -> Option<&'static str> {
    tool(
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_run_in_a_real_browser_and_in_flagtail_status() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    rx.plan(|r| match key_of(&r.body).as_str() {
        "flag-3" => Reply::Status(400),
        _ => Reply::Status(204),
    });
    s.write_lines(0..6, Encoding::Json);
    append(&s.log(), "this is not an event\n");
    let size = std::fs::metadata(s.log()).unwrap().len();
    let config = with_admin(&s, &webhook_sink(&rx.url("/"), ""), port);
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(5).await;
    let status = status_when(port, |st| {
        let (src, sink) = (named(st, "sources", "flipt"), named(st, "sinks", "hook"));
        sink["delivered"] == 5
            && sink["dead_letters_waiting"] == 1
            && src["rejected"] == 1
            && src["lag_bytes"] == 0
    })
    .await;
    let (src, sink) = (
        named(&status, "sources", "flipt"),
        named(&status, "sinks", "hook"),
    );
    assert_eq!(src["kind"], "file");
    assert_eq!(src["address"], s.log().display().to_string());
    assert_eq!(src["position"], size, "everything in the file is done");
    assert_eq!(src["lines_read"], 7);
    let rejected = src["last_rejected"]["reason"].as_str().unwrap().to_string();
    assert!(rejected.contains("offset"), "{rejected}");
    let error = sink["last_error"]["reason"].as_str().unwrap().to_string();
    assert!(error.contains("400"), "{error}");
    let target = sink["target"].as_str().unwrap();
    assert!(target.starts_with("http://127.0.0.1:"), "{target}");
    assert_eq!(status["healthy"], true);
    assert_eq!(status["ready"], true, "a missing file is watched for: open");
    assert_eq!(status["state"], "ok", "a refusal is not a sink failing");

    // The page, as a real browser renders it.
    if let Some(browser) = chromium() {
        let out = headless(
            browser,
            &["--dump-dom"],
            &format!("http://127.0.0.1:{port}/"),
        );
        let dom = String::from_utf8_lossy(&out.stdout);
        let row = |table: &str, name: &str| {
            let t = dom
                .split(&format!("<table id=\"{table}\">"))
                .nth(1)
                .unwrap_or_else(|| panic!("no {table} table in {dom}"));
            // A row as `<tr ...>` (a sink's row carries its state as its class) and its cells.
            t.split("<tr")
                .find(|r| r.contains(&format!("><td>{name}</td>")) && r.find('>') < r.find("<td>"))
                .unwrap_or_else(|| panic!("no row {name} in {t}"))
                .to_string()
        };
        let source = row("sources", "flipt");
        for want in [
            "<td>file</td>".to_string(),
            format!("<td>{}</td>", s.log().display()),
            format!("<td class=\"n\">{size}</td>"),
            "<td class=\"n\">0</td>".into(),
            "<td class=\"n\">7</td>".into(),
            rejected.clone(),
        ] {
            assert!(source.contains(&want), "{want} not in {source}");
        }
        let sink = row("sinks", "hook");
        for want in [
            " class=\"sink-up\">",
            "<td class=\"ok\">up</td>",
            "<td>webhook</td>",
            "<td class=\"n\">5</td>",
            "<td class=\"n bad\">1</td>",
            &error,
        ] {
            assert!(sink.contains(want), "{want} not in {sink}");
        }
        assert!(row("sources", "other").contains("<td>file</td>"));
        assert!(dom.contains("<span class=\"ok\">ready</span>"), "{dom}");
    }

    // The same in the terminal: by address, and by the config's admin.listen.
    let (code, table, err) = run_cmd(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 0, "{err}");
    let (code, again, err) = run_cmd(&["status", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let row = |table: &str, first: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{first} ")))
            .unwrap_or_else(|| panic!("no {first} row in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for t in [&table, &again] {
        assert!(t.starts_with("flagtail "), "{t}");
        assert!(t.contains(": ok, healthy, ready, up "), "{t}");
        let flipt = row(t, "flipt");
        assert_eq!(
            flipt[..7],
            [
                "flipt".to_string(),
                "file".into(),
                s.log().display().to_string(),
                size.to_string(),
                "0".into(),
                "7".into(),
                "1".into()
            ]
        );
        let hook = row(t, "hook");
        assert_eq!(hook[1..4], ["up", "0", "webhook"], "state, backlog, kind");
        assert_eq!(
            hook[5..8],
            ["5", "0", "1"],
            "delivered, retries, dead letters"
        );
        assert!(hook.join(" ").contains("400"), "{hook:?}");
    }
    assert!(ft.terminate().await.success());
    // No daemon: the command says so and fails.
    let (code, _, err) = run_cmd(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

/// Headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=PATH`).
fn headless(browser: &str, args: &[&str], url: &str) -> std::process::Output {
    std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// The sum of `key` over a status entry's `history` (the last hour, per minute).
fn hour_sum(entry: &serde_json::Value, key: &str) -> u64 {
    let minutes = entry["history"].as_array().expect("a history");
    assert_eq!(minutes.len(), 60, "{entry}");
    minutes.iter().map(|m| m[key].as_u64().unwrap_or(0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_marked_and_charted_beside_one_that_delivers_and_its_hour_outlives_a_reload()
 {
    let (good, bad) = (Receiver::start().await, Receiver::start().await);
    bad.plan(|_| Reply::Status(500));
    let s = Setup::new();
    let port = free_port();
    s.write_lines(0..6, Encoding::Json);
    let sinks = webhook_sink(&good.url("/"), "")
        + &webhook_sink(&bad.url("/"), "").replace("name: hook", "name: broken");
    let config = with_admin(&s, &sinks, port);
    let mut ft = Flagtail::start(&config);
    good.wait_delivered(6).await;
    let down = |st: &serde_json::Value| {
        let (hook, broken) = (named(st, "sinks", "hook"), named(st, "sinks", "broken"));
        hour_sum(hook, "delivered") == 6
            && broken["state"] == "down"
            && hour_sum(broken, "failed") >= 2
    };
    let status = status_when(port, down).await;
    assert_eq!(status["state"], "degraded");
    let broken = named(&status, "sinks", "broken");
    assert!(broken["since"].as_str().is_some(), "{broken}");
    assert_eq!(hour_sum(broken, "delivered"), 0);
    let minute = &broken["history"][59];
    assert!(
        minute["time"].as_str().unwrap().ends_with(":00Z"),
        "{minute}"
    );
    let lag = &named(&status, "sources", "flipt")["history"][59]["lag_bytes"];
    assert!(lag.is_u64(), "the lag was looked at this minute: {status}");
    let failed = hour_sum(broken, "failed");

    // A reload keeps the hour.
    ft.signal("HUP");
    ft.wait_log("config reloaded").await;
    let status = status_when(port, down).await;
    assert!(hour_sum(named(&status, "sinks", "broken"), "failed") >= failed);

    if let Some(browser) = chromium() {
        let url = format!("http://127.0.0.1:{port}/");
        let shot = s.path("status-page.png");
        let out = headless(
            browser,
            &[
                "--hide-scrollbars",
                "--window-size=1700,1000",
                &format!("--screenshot={}", shot.display()),
            ],
            &url,
        );
        assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = headless(browser, &["--dump-dom"], &url);
        let dom = String::from_utf8_lossy(&out.stdout);
        assert!(
            dom.contains("<strong class=\"warn\">degraded</strong>"),
            "{dom}"
        );
        let row = |state: &str| {
            dom.split(&format!("<tr class=\"sink-{state}\">"))
                .nth(1)
                .and_then(|r| r.split("</tr>").next())
                .unwrap_or_else(|| panic!("no {state} row in {dom}"))
                .to_string()
        };
        let (broken, hook) = (row("down"), row("up"));
        assert!(
            broken.starts_with("<td>broken</td><td class=\"bad\">down for "),
            "{broken}"
        );
        assert!(
            hook.starts_with("<td>hook</td><td class=\"ok\">up</td>"),
            "{hook}"
        );
        for (row, bars, none) in [
            (&broken, "<rect class=\"f\"", "<rect class=\"d\""),
            (&hook, "<rect class=\"d\"", "<rect class=\"f\""),
        ] {
            assert!(row.contains("<svg class=\"chart sink-chart\""), "{row}");
            assert!(row.contains(bars) && !row.contains(none), "{row}");
        }
        assert!(
            hook.contains("last hour: 6 delivered, 0 failed attempts, 0 dead-lettered"),
            "{hook}"
        );
        assert!(dom.contains("<svg class=\"chart lag-chart\""), "{dom}");
        let failed = dom
            .split("<table class=\"attempts\" id=\"attempts-broken\">")
            .nth(1)
            .unwrap_or_else(|| panic!("no failed attempts of broken in {dom}"));
        let failed = failed.split("</table>").next().unwrap();
        let rows = failed.matches("<tr>").count() - 1;
        let seen = hour_sum(named(&status, "sinks", "broken"), "failed") as usize;
        assert!(
            (seen.min(20)..=20).contains(&rows),
            "{rows} rows, {seen} failed: {failed}"
        );
        assert!(failed.contains("500 Internal Server Error"), "{failed}");
        assert!(
            !dom.contains("id=\"attempts-hook\""),
            "hook failed nothing: {dom}"
        );
    }
    let listed = attempts(&config, "broken", &[]);
    assert_attempts(&listed, 500);
    assert!(ft.terminate().await.success());
    // Stopped: the same log, read from the state directory.
    let after = attempts(&config, "broken", &[]);
    assert!(after.len() >= listed.len(), "{after:?}");
    assert_attempts(&after, 500);
    assert_eq!(
        attempts(&config, "broken", &["--failed", "--limit", "2"]).len(),
        2
    );
    let hook = attempts(&config, "hook", &[]);
    assert!(
        !hook.is_empty()
            && hook.iter().all(|a| a["error"].is_null()
                && a["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
                && a["attempt"] == 1),
        "{hook:?}"
    );
    assert!(attempts(&config, "hook", &["--failed"]).is_empty());
    assert!(attempts(&config, "hook", &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let (code, table, err) = run_cmd(&[
        "attempts",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        "broken",
        "--limit",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.starts_with("TIME")
            && table.lines().count() == 4
            && table.contains("500 Internal Server Error"),
        "{table}"
    );
    assert!(err.contains("3 attempts"), "{err}");
    let (code, _, err) = run_cmd(&[
        "attempts",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        "nope",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");
}

/// `flagtail attempts --json` of `sink` with `more` arguments, one JSON object a line.
fn attempts(config: &std::path::Path, sink: &str, more: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "attempts",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        sink,
        "--json",
    ];
    args.extend_from_slice(more);
    let (code, out, err) = run_cmd(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Failed attempts answered `status`, newest first, each naming its delivery and event.
fn assert_attempts(listed: &[serde_json::Value], status: u64) {
    assert!(listed.len() >= 2, "{listed:?}");
    for a in listed {
        assert_eq!(a["status"], status, "{a}");
        assert!(
            a["error"].as_str().unwrap().contains(&status.to_string()),
            "{a}"
        );
        assert!(a["key"].as_str().unwrap().starts_with("flipt-"), "{a}");
        assert!(a["event"].as_str().unwrap().starts_with("flag:"), "{a}");
        assert!(
            a["attempt"].as_u64().unwrap() >= 1 && a["duration_ms"].is_u64(),
            "{a}"
        );
    }
    let times: Vec<&str> = listed.iter().map(|a| a["time"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_source_shows_its_journal_lag_and_a_sink_its_backoff() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    let sock = s.path("in.sock");
    let outage = rx.outage(|_| None);
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"127.0.0.1:{port}\"}}\nshutdown_grace: 5s\nsources:\n  - name: local\n    socket: {}\n    format: flipt\nsinks:\n{}",
            s.state().display(),
            sock.display(),
            webhook_sink(
                &rx.url("/"),
                "    initial_backoff: 2s\n    max_backoff_duration: 1m\n    concurrency: 1\n"
            )
        ),
    )
    .unwrap();
    let mut ft = Flagtail::start(&config);
    let text: String = (0..3).map(|i| flipt_line(i, Encoding::Json).0).collect();
    eventually(|| std::os::unix::net::UnixStream::connect(&sock).map_err(|e| e.to_string())).await;
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(text.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "ok 3\n");
    // The receiver is down: all three lines wait in the sink's backlog (the source is done with
    // them); the sink is retrying and waits out a backoff.
    let status = status_when(port, |st| {
        let sink = named(st, "sinks", "hook");
        sink["backoff"]["left_ms"].as_u64().is_some() && sink["backlog_events"] == 3
    })
    .await;
    let (src, sink) = (
        named(&status, "sources", "local"),
        named(&status, "sinks", "hook"),
    );
    assert_eq!(src["kind"], "socket");
    assert_eq!(sink["state"], "retrying", "{sink}");
    assert!(sink["since"].as_str().is_some(), "{sink}");
    let done = status_when(port, |st| named(st, "sources", "local")["lag_bytes"] == 0).await;
    let src = named(&done, "sources", "local");
    assert_eq!(src["journal_bytes"], text.len(), "{src}");
    assert!(
        sink["last_error"]["reason"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{sink}"
    );
    let (_, metrics) = admin_get(port, "/metrics").unwrap();
    for line in [
        "flagtail_source_lag_bytes{source=\"local\"} 0",
        "flagtail_sink_up{sink=\"hook\"} 0",
        "flagtail_sink_backlog_events{sink=\"hook\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
    }
    assert!(metrics.contains("flagtail_journal_bytes{source=\"local\"}"));
    assert!(metrics.contains(&format!(
        "flagtail_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    outage.end();
    rx.wait_delivered(3).await;
    let status = status_when(port, |st| named(st, "sinks", "hook")["backlog_events"] == 0).await;
    let sink = named(&status, "sinks", "hook");
    assert!(sink.get("backoff").is_none(), "{sink}");
    assert_eq!(sink["state"], "up", "{sink}");
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_is_logged_only_when_something_happened() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Json);
    let config = s.config_with(
        "log: {summary_interval: 200ms}",
        &webhook_sink(&rx.url("/"), ""),
    );
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(3).await;
    ft.wait_log("3 delivered").await;
    // Idle for many intervals: no summary says "nothing happened".
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    s.write_lines(3..5, Encoding::Json);
    rx.wait_delivered(5).await;
    ft.wait_log("2 delivered").await;
    assert!(ft.terminate().await.success());
    let summaries: Vec<String> = ft
        .stderr()
        .lines()
        .filter(|l| l.contains("summary of the last"))
        .map(str::to_string)
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:#?}");
    assert!(
        summaries[0]
            .contains("3 lines read, 0 rejected; hook: 3 delivered, 0 dead-lettered, 0 retries"),
        "{summaries:#?}"
    );
    assert!(summaries[1].contains("2 lines read"), "{summaries:#?}");
}

/// A raw HTTP/1.1 exchange with `127.0.0.1:port`: (`Content-Type` of the answer, its body).
fn exchange(port: u16, request: &str) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let kind = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (kind, body.to_string())
}

/// `GET /metrics` with an `Accept` line (or none).
fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: f\r\n{accept}Connection: close\r\n\r\n");
    exchange(port, &request)
}

/// Every family of SPEC §6 that a source or sink has, by a sample of it.
const FAMILIES: [&str; 10] = [
    "flagtail_lines_read_total{source=\"flipt\"}",
    "flagtail_lines_rejected_total{source=\"flipt\",reason=\"not_json\"}",
    "flagtail_events_unmapped_total{source=\"hooks\"}",
    "flagtail_deliveries_total{sink=\"hook\",outcome=\"dead_letter\"} 1",
    "flagtail_delivery_retries_total{sink=\"hook\"} 1",
    "flagtail_delivery_seconds_bucket{",
    "flagtail_source_lag_bytes{source=\"flipt\"}",
    "flagtail_dead_letters{sink=\"hook\"} 1",
    "flagtail_journal_bytes{source=\"hooks\"}",
    "flagtail_build_info{version=",
];

/// A config with every family of [`FAMILIES`]: a file source `flipt` with 4 events and a line
/// that is not one, an http source `hooks` on `ingest`, a webhook sink `hook` on `rx` that
/// refuses flag-3 for good and flag-1's first attempt with 503, the admin endpoint on `port`.
fn every_family(s: &Setup, rx: &Receiver, port: u16, ingest: u16) -> std::path::PathBuf {
    let retried = std::sync::atomic::AtomicBool::new(false);
    rx.plan(move |r| match key_of(&r.body).as_str() {
        "flag-3" => Reply::Status(400),
        "flag-1" if !retried.swap(true, std::sync::atomic::Ordering::SeqCst) => Reply::Status(503),
        _ => Reply::Status(204),
    });
    s.write_lines(0..4, Encoding::Json);
    append(&s.log(), "this is not an event\n");
    let config = s.config_with(
        &format!("admin: {{listen: \"127.0.0.1:{port}\"}}"),
        &webhook_sink(&rx.url("/"), ""),
    );
    let hooks =
        format!("sources:\n  - {{name: hooks, http: \"127.0.0.1:{ingest}\", format: flipt}}\n");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("admin: {listen: \"\"}\n", "")
        .replace("sources:\n", &hooks);
    std::fs::write(&config, text).unwrap();
    config
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool_check(promtool: &str, text: &str) -> (bool, String) {
    let checked = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    (
        checked.status.success(),
        format!("{:?}: {said}", checked.status),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_text_0_0_4_that_promtool_passes_and_openmetrics_when_asked() {
    let Some(promtool) = tool(&["promtool"], "prometheus") else {
        return;
    };
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (port, ingest) = (free_port(), free_port());
    let mut ft = Flagtail::start(&every_family(&s, &rx, port, ingest));
    rx.wait_delivered(3).await;
    let event = flipt_line(4, Encoding::Json).0;
    let post = format!(
        "POST / HTTP/1.1\r\nHost: f\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{event}",
        event.len()
    );
    eventually(|| admin_get(port, "/readyz")).await;
    assert!(exchange(ingest, &post).1.contains("accepted"));
    rx.wait_delivered(4).await;
    let text = eventually(|| {
        let (_, text) = scrape(port, None);
        match FAMILIES.iter().find(|f| !text.contains(*f)) {
            None => Ok(text),
            Some(missing) => Err(format!("no {missing} in:\n{text}")),
        }
    })
    .await;
    for accept in [None, Some("text/plain;version=0.0.4"), Some("text/plain")] {
        let (kind, body) = scrape(port, accept);
        assert_eq!(
            kind, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!body.contains("# EOF"), "{body}");
    }
    let (passed, said) = promtool_check(promtool, &text);
    assert!(passed, "promtool check metrics: {said}\n{text}");
    // Every metric the shipped alert rules and dashboard query is one this daemon serves.
    for name in deployed_metric_names() {
        let sample =
            |l: &str| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "));
        assert!(
            text.lines().any(sample),
            "deploy/ queries {name}, which /metrics does not serve:\n{text}"
        );
    }
    // What Prometheus asks for: OpenMetrics first.
    let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (kind, body) = scrape(port, Some(prometheus));
    assert_eq!(
        kind,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE flagtail_deliveries counter\n"),
        "{body}"
    );
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_log_that_cannot_be_written_is_counted_and_deliveries_go_on() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let port = free_port();
    let config = with_admin(&s, &webhook_sink(&rx.url("/"), ""), port);
    // A file where the attempt log's directory goes: every write of it fails.
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::write(s.state().join("attempts"), "not a directory").unwrap();
    s.write_lines(0..3, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(3).await;
    ft.wait_log("cannot record attempts in the attempt log")
        .await;
    let (_, text) = scrape(port, None);
    let errors = text
        .lines()
        .find(|l| l.starts_with("flagtail_attempt_log_errors_total{sink=\"hook\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(errors >= 1, "{text}");
    assert!(ft.terminate().await.success());
    assert_eq!(
        ft.stderr().matches("cannot record attempts").count(),
        1,
        "once per outage"
    );
}
