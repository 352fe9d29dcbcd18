//! Independent sinks: a receiver that refuses connections, stalls, answers 503 or answers slowly
//! costs the other sinks nothing; its own events wait in its backlog on disk, survive `kill -9`, and are delivered
//! in order, under their first keys, with no command once it is back; the sink's state is shown.

mod support;

use std::time::{Duration, Instant};
use support::*;

const EVENTS: usize = 20_000;

/// A file sink `out` (fed first) beside `hook`, with the admin endpoint on `port`.
fn two_sinks(s: &Setup, hook: &str, port: u16) -> std::path::PathBuf {
    let out = format!(
        "  - name: out\n    type: file\n    path: {}\n",
        s.path("out.jsonl").display()
    );
    let config = s.config(&format!("{out}{hook}"));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin: {listen: \"\"}",
        &format!("admin: {{listen: \"127.0.0.1:{port}\"}}"),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Starts flagtail on `config` with `EVENTS` lines in the log; the time until the file sink has
/// them all, and the running daemon.
async fn time_to_file_sink(s: &Setup, config: &std::path::Path) -> (Duration, Flagtail) {
    let _ = std::fs::remove_file(s.log());
    let _ = std::fs::remove_file(s.path("out.jsonl"));
    let _ = std::fs::remove_dir_all(s.state());
    s.write_lines(0..EVENTS, Encoding::Json);
    let started = Instant::now();
    let ft = Flagtail::start(config);
    let out = s.path("out.jsonl");
    eventually(|| match lines_in(&out) {
        n if n >= EVENTS => Ok(()),
        n => Err(format!("{n} of {EVENTS} in the file sink")),
    })
    .await;
    (started.elapsed(), ft)
}

/// One more event, while the webhook still fails, reaches the file sink as fast as ever.
async fn one_more_arrives(s: &Setup, i: usize) {
    let out = s.path("out.jsonl");
    let before = lines_in(&out);
    let at = Instant::now();
    s.write_lines(i..i + 1, Encoding::Json);
    eventually(|| match lines_in(&out) > before {
        true => Ok(()),
        false => Err("the next event did not reach the file sink".into()),
    })
    .await;
    let took = at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the file sink's latency grew during the outage: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stalled_or_503_receiver_costs_the_file_sink_nothing() {
    let s = Setup::new();
    let port = free_port();
    // Without the webhook: the time to beat.
    let alone = s.config(&format!(
        "  - name: out\n    type: file\n    path: {}\n",
        s.path("out.jsonl").display()
    ));
    let (base, mut ft) = time_to_file_sink(&s, &alone).await;
    ft.terminate().await;
    let refused = Receiver::start().await;
    refused.stop().await;
    let stalled = Receiver::start().await;
    stalled.plan(|_| Reply::Stall);
    let busy = Receiver::start().await;
    busy.plan(|_| Reply::Status(503));
    for (what, rx) in [("refused", &refused), ("stalled", &stalled), ("503", &busy)] {
        let hook = webhook_sink(&rx.url("/"), "    timeout: 10s\n");
        let config = two_sinks(&s, &hook, port);
        let (took, mut ft) = time_to_file_sink(&s, &config).await;
        assert!(
            took <= base.mul_f64(1.5).max(base + Duration::from_secs(3)),
            "{what}: {took:?} against {base:?} without the failing sink"
        );
        one_more_arrives(&s, EVENTS).await;
        // The failing sink's events wait in its backlog, on disk.
        let waiting =
            eventually(
                || match metric(port, "flagtail_sink_backlog_events{sink=\"hook\"}") {
                    n if n >= (EVENTS as i64) - 1 => Ok(n),
                    n => Err(format!("{what}: {n} waiting")),
                },
            )
            .await;
        assert!(waiting <= EVENTS as i64 + 1, "{what}: {waiting}");
        assert_eq!(metric(port, "flagtail_sink_up{sink=\"hook\"}"), 0, "{what}");
        assert_eq!(metric(port, "flagtail_sink_up{sink=\"out\"}"), 1, "{what}");
        assert!(dead_keys(&s, "hook").is_empty(), "{what}: no dead letter");
        assert!(ft.terminate().await.success(), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_costs_the_file_sink_nothing_and_gets_everything_in_order() {
    let s = Setup::new();
    let port = free_port();
    let slow = Receiver::start().await;
    // It answers, but 3 requests a second: it takes 2,000 events in 11 minutes.
    let fast = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let now_fast = fast.clone();
    slow.plan(
        move |_| match now_fast.load(std::sync::atomic::Ordering::SeqCst) {
            true => Reply::Status(200),
            false => Reply::After(Duration::from_millis(300), 200),
        },
    );
    let hook = webhook_sink(
        &slow.url("/"),
        "    timeout: 10s
",
    );
    let config = two_sinks(&s, &hook, port);
    s.write_lines(0..2_000, Encoding::Json);
    let at = Instant::now();
    let mut ft = Flagtail::start(&config);
    let out = s.path("out.jsonl");
    eventually(|| match lines_in(&out) {
        2_000 => Ok(()),
        n => Err(format!("{n} of 2000 in the file sink")),
    })
    .await;
    // Held for a second, not to the slow receiver's pace.
    let took = at.elapsed();
    assert!(took < Duration::from_secs(4), "the file sink took {took:?}");
    assert!(slow.delivered().len() < 100);
    one_more_arrives(&s, 2_000).await;
    // The slow sink's events wait on disk and all go, in order, once it is quicker.
    fast.store(true, std::sync::atomic::Ordering::SeqCst);
    slow.wait_delivered(2_001).await;
    assert!(ft.terminate().await.success());
    assert_eq!(
        delivered_keys(&slow),
        flag_keys(0..2_001).collect::<Vec<_>>()
    );
    assert!(dead_keys(&s, "hook").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_ten_times_max_backoff_heals_in_order_across_kill_9_with_no_command() {
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let port = free_port();
    let hook = webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 300ms\n    max_probe_interval: 200ms\n    concurrency: 1\n    signature: standard-webhooks\n    signing_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let config = two_sinks(&s, &hook, port);
    s.write_lines(0..2000, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    ft.wait_log("sink is down").await;
    // Down, with its events waiting; the page, the JSON and the metrics say so.
    let status = eventually(|| {
        let (_, text) = admin_get(port, "/status.json")?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let sink = v["sinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "hook")
            .cloned()
            .unwrap();
        match (sink["state"].as_str(), sink["backlog_events"].as_u64()) {
            (Some("down"), Some(2000)) => Ok(sink),
            _ => Err(format!("{sink}")),
        }
    })
    .await;
    assert!(status["since"].as_str().is_some(), "{status}");
    let (_, whole) = admin_get(port, "/status.json").unwrap();
    let whole: serde_json::Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["state"], "degraded", "one sink down, the other up");
    let (_, page) = admin_get(port, "/").unwrap();
    assert!(page.contains("class=\"sink-down\""), "{page}");
    assert!(
        page.contains("<strong class=\"warn\">degraded</strong>"),
        "{page}"
    );
    let (code, table, _) = run_cmd(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 0);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hook") && l.contains("down")),
        "{table}"
    );
    // kill -9 during the outage, and more events while it is stopped.
    ft.kill_9().await;
    s.write_lines(2000..2100, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    // Away for ten times max_backoff_duration in all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rx.delivered().is_empty());
    outage.end();
    let got = rx.wait_delivered(2100).await;
    let keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    let mut want: Vec<String> = flag_keys(0..2100).collect();
    assert_eq!(keys.len(), want.len());
    // In order, with each event once (copies only under the same key, never another order).
    let mut seen = keys.clone();
    seen.dedup();
    want.dedup();
    if let Some(at) = seen.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "not in source order from {at}: {:?}",
            &seen[at.saturating_sub(2)..(at + 5).min(seen.len())]
        );
    }
    assert_eq!(seen.len(), want.len());
    // Each under the key and webhook-id of its first attempt.
    let first: std::collections::HashMap<String, (String, String)> = rx
        .attempts()
        .iter()
        .rev()
        .map(|r| {
            let ids = (
                r.header("idempotency-key").to_string(),
                r.header("webhook-id").to_string(),
            );
            (key_of(&r.body), ids)
        })
        .collect();
    for r in &got {
        let ids = (
            r.header("idempotency-key").to_string(),
            r.header("webhook-id").to_string(),
        );
        assert_eq!(first[&key_of(&r.body)], ids);
    }
    let wh = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(got.iter().all(|a| wh.verify(&a.body, &a.headers).is_ok()));
    assert!(
        dead_keys(&s, "hook").is_empty(),
        "transient failures make no dead letter"
    );
    eventually(|| {
        match (
            metric(port, "flagtail_sink_up{sink=\"hook\"}"),
            metric(port, "flagtail_sink_backlog_events{sink=\"hook\"}"),
        ) {
            (1, 0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(lines_in(&s.path("out.jsonl")), 2100);
    assert!(ft.terminate().await.success());
    assert!(ft.stderr().contains("sink is up again"), "{}", ft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_dead_letters_its_oldest_then_heals_or_blocks_the_source() {
    // dead_letter: the oldest overflow to the dead-letter file, and come back by themselves.
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let port = free_port();
    let hook = webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 200ms\n    max_probe_interval: 200ms\n    backlog: {max_bytes: 64KiB}\n",
    );
    let config = two_sinks(&s, &hook, port);
    s.write_lines(0..600, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    let dead = eventually(|| match dead_reasons(&s, "hook") {
        d if !d.is_empty() => Ok(d),
        _ => Err("no dead letter yet".into()),
    })
    .await;
    assert!(
        dead.iter().all(|r| r.contains("backlog.max_bytes")),
        "{dead:?}"
    );
    eventually(|| match lines_in(&s.path("out.jsonl")) {
        600 => Ok(()),
        n => Err(format!("{n} of 600 in the file sink")),
    })
    .await;
    outage.end();
    s.write_lines(600..601, Encoding::Json);
    let want: Vec<String> = flag_keys(0..601).collect();
    eventually(|| {
        let mut have = delivered_keys(&rx);
        have.sort();
        have.dedup();
        let mut want = want.clone();
        want.sort();
        match have == want {
            true => Ok(()),
            false => Err(format!("{} of {} delivered", have.len(), want.len())),
        }
    })
    .await;
    eventually(|| match dead_keys(&s, "hook").len() {
        0 => Ok(()),
        n => Err(format!("{n} dead letters left")),
    })
    .await;
    assert!(ft.terminate().await.success());

    // block: the source waits (and so does the file sink beside it); nothing is dead-lettered.
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let hook = webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 200ms\n    backlog: {max_bytes: 64KiB, when_full: block}\n",
    );
    let config = two_sinks(&s, &hook, port);
    s.write_lines(0..3000, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    ft.wait_log("sink is down").await;
    let out = s.path("out.jsonl");
    let held = eventually_async(|| async {
        let before = lines_in(&out);
        tokio::time::sleep(Duration::from_millis(500)).await;
        match lines_in(&out) {
            after if after == before && after < 3000 => Ok(after),
            after => Err(format!("still moving or done: {after}")),
        }
    })
    .await;
    assert!(held < 3000, "{held}");
    assert!(dead_keys(&s, "hook").is_empty());
    outage.end();
    let got = rx.wait_delivered(3000).await;
    let mut keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    keys.dedup();
    assert_eq!(keys, flag_keys(0..3000).collect::<Vec<_>>());
    eventually(|| match lines_in(&out) {
        3000 => Ok(()),
        n => Err(format!("{n} of 3000")),
    })
    .await;
    assert!(ft.terminate().await.success());
}

/// The value of one sample of `/metrics`.
fn metric(port: u16, series: &str) -> i64 {
    metric_now(port, series).unwrap()
}

/// The value of one sample of `/metrics`, or why there is none (yet).
fn metric_now(port: u16, series: &str) -> Result<i64, String> {
    let (_, text) = admin_get(port, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
        .ok_or_else(|| format!("no {series} in\n{text}"))?
        .parse()
        .map_err(|e| format!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_backlog_segment_is_said_and_skipped_and_the_rest_is_delivered() {
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let port = free_port();
    // Segments of 64 KiB: 300 events fill several.
    let hook = webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 200ms\n    backlog: {max_bytes: 256KiB, when_full: block}\n",
    );
    let config = two_sinks(&s, &hook, port);
    s.write_lines(0..300, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    eventually(
        || match metric_now(port, "flagtail_sink_backlog_events{sink=\"hook\"}")? {
            n if n >= 299 => Ok(()),
            n => Err(format!("{n} waiting")),
        },
    )
    .await;
    assert!(ft.terminate().await.success());
    let dir = s.state().join("backlog/hook");
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    // The oldest segment is lost (an operator, a damaged disk).
    std::fs::remove_file(&segs[0]).unwrap();
    outage.end();
    let mut ft = Flagtail::start(&config);
    s.write_lines(300..301, Encoding::Json);
    // What the other segments held is delivered, in order, and the sink takes new events again.
    let got = eventually(|| {
        let have = delivered_keys(&rx);
        match have.last().map(String::as_str) {
            Some("flag-300") => Ok(have),
            _ => Err(format!("{} delivered", have.len())),
        }
    })
    .await;
    let first: usize = got[0].trim_start_matches("flag-").parse().unwrap();
    assert!(
        first > 0,
        "the lost segment's events are not there: {got:?}"
    );
    assert_eq!(got, flag_keys(first..301).collect::<Vec<_>>());
    ft.wait_log("events lost from the sink's backlog").await;
    assert_eq!(
        metric(port, "flagtail_sink_backlog_lost_total{sink=\"hook\"}"),
        1
    );
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_sinks_backlog_is_said_at_start_and_sent_once_the_name_is_back() {
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let hook = webhook_sink(&rx.url("/"), "    max_backoff_duration: 200ms\n");
    let config = s.config(&hook);
    s.write_lines(0..5, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    ft.wait_log("sink is down").await;
    assert!(ft.terminate().await.success());
    assert!(!ft.stderr().contains("no longer has"));
    // The operator renames the sink: its waiting events are not lost in silence.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("name: hook", "name: renamed")).unwrap();
    outage.end();
    let mut ft = Flagtail::start(&config);
    ft.wait_log("the backlog of a sink named \"hook\", which the config no longer has, holds events not delivered").await;
    assert!(ft.terminate().await.success());
    assert!(rx.delivered().is_empty(), "{:?}", delivered_keys(&rx));
    // The name back: they go, in order.
    std::fs::write(&config, text).unwrap();
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(5).await;
    assert!(ft.terminate().await.success());
    assert_eq!(delivered_keys(&rx), flag_keys(0..5).collect::<Vec<_>>());
    assert!(!ft.stderr().contains("no longer has"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_directory_deleted_while_running_is_made_again_and_nothing_stalls() {
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let port = free_port();
    let hook = webhook_sink(&rx.url("/"), "    max_backoff_duration: 200ms\n");
    let config = two_sinks(&s, &hook, port);
    s.write_lines(0..100, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    eventually(
        || match metric_now(port, "flagtail_sink_backlog_events{sink=\"hook\"}")? {
            n if n >= 99 => Ok(()),
            n => Err(format!("{n} waiting")),
        },
    )
    .await;
    // An operator cleans up the wrong directory.
    std::fs::remove_dir_all(s.state().join("backlog/hook")).unwrap();
    s.write_lines(100..3_000, Encoding::Json);
    let out = s.path("out.jsonl");
    eventually(|| match lines_in(&out) {
        3_000 => Ok(()),
        n => Err(format!("{n} of 3000 in the file sink")),
    })
    .await;
    ft.wait_log("the journal's directory was deleted; making it again")
        .await;
    // What was written after the deletion is delivered once the receiver is back.
    outage.end();
    s.write_lines(3_000..3_001, Encoding::Json);
    let got = eventually(|| {
        let have = delivered_keys(&rx);
        match have.last().map(String::as_str) {
            Some("flag-3000") => Ok(have),
            _ => Err(format!("{} delivered", have.len())),
        }
    })
    .await;
    assert!(got.len() >= 2_000, "{} delivered", got.len());
    assert!(ft.terminate().await.success());
    assert!(s.state().join("backlog/hook/id").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_larger_than_the_disk_are_said_at_start() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let hook = webhook_sink(&rx.url("/"), "    backlog: {max_bytes: 65536GiB}\n");
    let mut ft = Flagtail::start(&s.config(&hook));
    ft.wait_log("add up to more than the state directory's file system has free")
        .await;
    assert!(ft.terminate().await.success());
    // A budget that fits says nothing.
    let s = Setup::new();
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    s.write_lines(0..1, Encoding::Json);
    rx.wait_delivered(1).await;
    assert!(ft.terminate().await.success());
    assert!(!ft.stderr().contains("has free"));
    assert!(
        s.state().join("reserve").exists(),
        "room kept for checkpoints"
    );
}
