//! The fault suite: for each fault, every line of the input is either received or in a dead-letter
//! or rejected file, and the counts add up exactly.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_with_the_same_keys() {
    let rx = Receiver::start().await;
    rx.script(vec![
        Reply::Status(503),
        Reply::Drop,
        Reply::Status(408),
        Reply::Status(500),
    ]);
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let sinks = webhook_sink(
        &rx.url("/"),
        "    signature: standard-webhooks\n    signing_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    );
    let mut ft = Flagtail::start(&s.config(&sinks));
    rx.wait_delivered(1).await;
    ft.terminate().await;
    let attempts = rx.attempts();
    assert_eq!(attempts.len(), 5);
    let ids: HashSet<(&str, &str)> = attempts
        .iter()
        .map(|a| (a.header("idempotency-key"), a.header("webhook-id")))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every retry carries the same Idempotency-Key and webhook-id: {ids:?}"
    );
    assert!(!ids.iter().next().unwrap().0.is_empty());
    let wh = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(
        attempts
            .iter()
            .all(|a| wh.verify(&a.body, &a.headers).is_ok())
    );
    assert!(dead_keys(&s, "hook").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_seconds_and_as_a_date_is_honoured() {
    let rx = Receiver::start().await;
    let mut n = 0;
    rx.plan(move |_| {
        n += 1;
        match n {
            1 => Reply::StatusWith(429, vec![("retry-after", "2".into())]),
            2 => Reply::StatusWith(
                503,
                vec![(
                    "retry-after",
                    httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3)),
                )],
            ),
            _ => Reply::Status(204),
        }
    });
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 30s\n",
    )));
    rx.wait_delivered(1).await;
    ft.terminate().await;
    let a = rx.attempts();
    assert_eq!(a.len(), 3);
    assert!(
        a[1].at - a[0].at >= Duration::from_secs(2),
        "{:?}",
        a[1].at - a[0].at
    );
    // An HTTP date has whole seconds: at least 2 of the 3 seconds asked for.
    assert!(
        a[2].at - a[1].at >= Duration::from_secs(2),
        "{:?}",
        a[2].at - a[1].at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_statuses_are_dead_lettered_at_once_then_replayed() {
    let rx = Receiver::start().await;
    rx.plan(|r| {
        if key_of(&r.body) == "flag-3" {
            Reply::Status(501)
        } else {
            Reply::Status(404)
        }
    });
    let s = Setup::new();
    s.write_lines(0..5, Encoding::Console);
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    let mut ft = Flagtail::start(&config);
    rx.wait_attempts(5).await;
    assert!(ft.terminate().await.success());
    assert_eq!(rx.attempts().len(), 5, "4xx and 501 are final: no retry");
    let dead = s.state_lines("dead-letter/hook.jsonl");
    assert_eq!(dead.len(), 5);
    assert!(
        dead.iter()
            .all(|d| d["attempts"] == 1 && d["sink"] == "hook" && d["source"] == "flipt")
    );
    assert!(dead[0]["reason"].as_str().unwrap().contains("404"));
    let checkpoint = std::fs::read_to_string(s.state().join("checkpoints.json")).unwrap();
    assert!(
        checkpoint.contains(&format!(
            "\"offset\": {}",
            std::fs::metadata(s.log()).unwrap().len()
        )),
        "dead letters count as done"
    );

    // Replay while the receiver still refuses one of them: that one is kept.
    rx.plan(|r| {
        if key_of(&r.body) == "flag-3" {
            Reply::Status(400)
        } else {
            Reply::Status(200)
        }
    });
    let (code, out, err) = replay(&config, "hook");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("4 delivered, 1 failed again"), "{out}");
    assert_eq!(dead_keys(&s, "hook"), ["flag-3"]);
    let keys: HashSet<String> = rx
        .delivered()
        .iter()
        .map(|r| r.header("idempotency-key").to_string())
        .collect();
    let dead_ids: HashSet<String> = dead
        .iter()
        .map(|d| d["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    assert!(keys.is_subset(&dead_ids), "replays carry the original keys");
    rx.plan(|_| Reply::Status(200));
    let (code, out, _) = replay(&config, "hook");
    assert_eq!(code, 0, "{out}");
    assert!(dead_keys(&s, "hook").is_empty());
    let mut got = delivered_keys(&rx);
    got.sort();
    assert_eq!(got, ["flag-0", "flag-1", "flag-2", "flag-3", "flag-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_longer_than_max_backoff_is_healed_with_no_command() {
    let rx = Receiver::start().await;
    rx.stop().await;
    let s = Setup::new();
    s.write_lines(0..10, Encoding::Console);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 1s\n    concurrency: 4\n",
    ));
    let mut ft = Flagtail::start(&config);
    // Down for longer than max_backoff_duration: the events wait in the backlog, none is
    // dead-lettered (connection refused is not the receiver refusing them).
    ft.wait_log("sink is down").await;
    assert!(dead_keys(&s, "hook").is_empty());
    rx.restart().await;
    s.write_lines(10..15, Encoding::Console);
    rx.wait_delivered(15).await;
    ft.terminate().await;
    let (code, out, err) = replay(&config, "hook");
    assert_eq!(code, 0, "{out}{err}");
    let got = counts(delivered_keys(&rx));
    assert_eq!(got.len(), 15);
    assert!(got.values().all(|c| *c == 1), "{got:?}");
    assert!(dead_keys(&s, "hook").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_times_out_and_is_retried() {
    let rx = Receiver::start().await;
    rx.script(vec![Reply::Stall]);
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Console);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "    timeout: 300ms\n")));
    let got = rx.wait_delivered(3).await;
    ft.terminate().await;
    assert_eq!(
        got.iter().map(|r| key_of(&r.body)).collect::<Vec<_>>(),
        ["flag-0", "flag-1", "flag-2"]
    );
    assert_eq!(rx.attempts().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_lines_are_recorded_and_reading_goes_on() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = s.config_with("max_line_bytes: 400", &webhook_sink(&rx.url("/"), ""));
    s.write_lines(0..2, Encoding::Console);
    append(&s.log(), "not json at all\n");
    append(&s.log(), "{\"version\":\"0.2\",\"type\":\"flag\"}\n");
    append(&s.log(), &format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000)));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(s.log())
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"bad\":\"\xff\xfe\"}\n").unwrap();
    s.write_lines(2..4, Encoding::Console);
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(4).await;
    ft.terminate().await;
    // Consecutive rejected lines are one record: the first line's keys, and the run's.
    let rejected = s.state_lines("rejected/flipt.jsonl");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let run = &rejected[0];
    assert_eq!(
        (&run["reason"], &run["count"], &run["source"]),
        (&"not_json".into(), &4.into(), &"flipt".into())
    );
    assert_eq!(
        run["reasons"],
        serde_json::json!({"not_json": 1, "not_an_event": 1, "too_long": 1, "invalid_utf8": 1})
    );
    let log_len = std::fs::metadata(s.log()).unwrap().len();
    let first_two =
        flipt_line(0, Encoding::Console).0.len() + flipt_line(1, Encoding::Console).0.len();
    assert_eq!(run["offset"], first_two as u64);
    let last_four =
        flipt_line(2, Encoding::Console).0.len() + flipt_line(3, Encoding::Console).0.len();
    assert_eq!(
        run["end_offset"],
        log_len - last_four as u64,
        "after its newline"
    );
    assert_eq!(run["line"], "not json at all");
    assert_eq!(
        delivered_keys(&rx),
        ["flag-0", "flag-1", "flag-2", "flag-3"]
    );
    assert!(ft.stderr().contains("rejected line"));
}

/// An over-long line holds only its kept prefix in memory, so it is charged that, not its length:
/// a line longer than the source's whole share must not stop reading while the sink is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_line_does_not_stop_reading_while_a_sink_is_down() {
    let rx = Receiver::start().await;
    let outage = rx.outage(|_| None);
    let s = Setup::new();
    let config = s.config_with("max_line_bytes: 4096", &webhook_sink(&rx.url("/"), ""));
    s.write_lines(0..1, Encoding::Console);
    // Longer than the 4 MiB every source may hold in flight, and read while flag-0 is in flight.
    append(
        &s.log(),
        &format!("{{\"pad\":\"{}\"}}\n", "x".repeat(5 << 20)),
    );
    append(&s.log(), "not json at all\n");
    let mut ft = Flagtail::start(&config);
    rx.wait_attempts(1).await;
    let rejected = eventually(|| {
        let rejected = s.state_lines("rejected/flipt.jsonl");
        match rejected.first().map(|r| &r["count"]) {
            Some(n) if n == 2 => Ok(rejected),
            n => Err(format!("{n:?} of 2 lines rejected")),
        }
    })
    .await;
    assert_eq!(rejected[0]["reason"], "too_long");
    assert_eq!(
        rejected[0]["reasons"],
        serde_json::json!({"too_long": 1, "not_json": 1})
    );
    assert!(delivered_keys(&rx).is_empty(), "the sink is still down");
    outage.end();
    rx.wait_delivered(1).await;
    ft.terminate().await;
    assert_eq!(delivered_keys(&rx), ["flag-0"]);
}

/// A small deterministic random source, seeded from the clock and printed, so a failure can be rerun.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let seed = std::env::var("FLAGTAIL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (FLAGTAIL_TEST_SEED to repeat)");
    let mut rng = Lcg(seed);
    let rx = Receiver::start().await;
    // Some requests fail and are retried, so kills also land in the middle of retries.
    let mut fail = Lcg(seed ^ 0x5eed);
    rx.plan(move |_| {
        if fail.below(10) == 0 {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    });
    let s = Setup::new();
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    concurrency: 4\n    max_backoff_duration: 1h\n",
    ));
    let mut written = 0;
    for round in 0..20 {
        let more = 20 + rng.below(80) as usize;
        s.write_lines(written..written + more, Encoding::Console);
        written += more;
        let mut ft = Flagtail::start(&config);
        tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
        ft.kill_9().await;
        println!(
            "round {round}: {written} written, {} delivered so far",
            rx.delivered().len()
        );
    }
    let mut ft = Flagtail::start(&config);
    wait_keys(flag_keys(0..written), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
    let delivered = rx.delivered();
    let mut keys_of_event: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &delivered {
        keys_of_event
            .entry(key_of(&r.body))
            .or_default()
            .insert(r.header("idempotency-key").to_string());
    }
    assert_eq!(keys_of_event.len(), written, "every line arrived");
    for (event, keys) in &keys_of_event {
        assert_eq!(
            keys.len(),
            1,
            "{event} was re-sent under another Idempotency-Key: {keys:?}"
        );
    }
    assert!(dead_keys(&s, "hook").is_empty());
    println!(
        "{written} lines, {} requests delivered ({} duplicates after kills)",
        delivered.len(),
        delivered.len() - written
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_during_a_write_burst_loses_nothing() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "    concurrency: 4\n")));
    rx.wait_delivered(1).await;
    let log = s.log();
    let mut n = 1;
    let mut burst = |count: usize| {
        for _ in 0..count {
            append(&log, &flipt_line(n, Encoding::Json).0);
            n += 1;
        }
        n
    };
    for round in 0..6 {
        // A burst, a rotation in the middle of it (flagtail is still behind), and the burst goes on.
        let before = burst(400);
        if round % 2 == 0 {
            // copytruncate: the copy keeps the lines flagtail has not read yet.
            std::fs::copy(&log, s.path(&format!("audit.log.c{round}"))).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .unwrap()
                .set_len(0)
                .unwrap();
        } else {
            // rename and recreate: the writer moves on to a new file at the same path.
            std::fs::rename(&log, s.path(&format!("audit.log.r{round}"))).unwrap();
        }
        burst(400);
        // The next rotation comes after flagtail is done with this generation (as with logrotate,
        // whose rotations are far apart); see docs/guarantees.md.
        wait_keys(flag_keys(0..before), || delivered_keys(&rx)).await;
    }
    let total = n;
    wait_keys(flag_keys(0..total), || delivered_keys(&rx)).await;
    ft.terminate().await;
    let got = counts(delivered_keys(&rx));
    assert_eq!(got.len(), total);
    let dups: Vec<_> = got.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "no duplicates while running: {dups:?}");
    assert!(
        s.state_lines("rejected/flipt.jsonl").is_empty(),
        "no line was cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_changed_while_stopped_are_detected_by_fingerprint() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    let run = |want: usize| {
        let rx = &rx;
        let config = config.clone();
        async move {
            let mut ft = Flagtail::start(&config);
            rx.wait_delivered(want).await;
            assert!(ft.terminate().await.success());
        }
    };
    s.write_lines(0..10, Encoding::Console);
    run(10).await;
    // Truncated and rewritten, longer than before, while stopped; no copy kept: read from the start.
    let longer: String = (100..120)
        .map(|i| flipt_line(i, Encoding::Json).0)
        .collect();
    std::fs::write(s.log(), &longer).unwrap();
    run(30).await;
    // Replaced by a new file (new inode) while stopped, the old one deleted: read from the start.
    std::fs::remove_file(s.log()).unwrap();
    s.write_lines(200..205, Encoding::Console);
    run(35).await;
    // Inode reuse: same inode, different first line, same size: the fingerprint tells.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.log()).unwrap());
    let same_size: String = (300..305)
        .map(|i| flipt_line(i, Encoding::Console).0)
        .collect();
    assert_eq!(
        same_size.len() as u64,
        std::fs::metadata(s.log()).unwrap().len(),
        "the test needs equal sizes"
    );
    std::fs::write(s.log(), &same_size).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.log()).unwrap()),
        inode
    );
    run(40).await;
    // Renamed away with unread lines while stopped: its rest is read, then the new file.
    s.write_lines(400..403, Encoding::Console);
    std::fs::rename(s.log(), s.path("audit.log.1")).unwrap();
    s.write_lines(500..502, Encoding::Console);
    run(45).await;
    let got = counts(delivered_keys(&rx));
    let want: Vec<usize> = (0..10)
        .chain(100..120)
        .chain(200..205)
        .chain(300..305)
        .chain(400..403)
        .chain(500..502)
        .collect();
    for i in &want {
        assert_eq!(got.get(&format!("flag-{i}")), Some(&1), "flag-{i}: {got:?}");
    }
    assert_eq!(got.len(), want.len());
}

/// Bytes flagtail has read from files so far (`rchar` of /proc/PID/io).
fn bytes_read(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_pauses_reading_and_the_backlog_drains_later() {
    let rx = Receiver::start().await;
    rx.plan(|_| Reply::Status(503));
    let s = Setup::new();
    // 40 MiB of backlog, ten times the per-source in-flight budget.
    let lines = 100_000;
    let text: String = (0..lines)
        .map(|i| flipt_line(i, Encoding::Json).0)
        .collect();
    append(&s.log(), &text);
    let size = text.len() as u64;
    let mut ft = Flagtail::start(&s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 1h\n    initial_backoff: 100ms\n    batch: {max_events: 500}\n",
    )));
    rx.wait_attempts(3).await;
    ft.wait_log("retry_in").await;
    let read = bytes_read(ft.pid());
    assert!(
        read < size / 4,
        "reading must pause: {read} of {size} bytes read"
    );
    rx.plan(|_| Reply::Status(200));
    let batched_keys = || {
        let mut keys = Vec::new();
        for r in rx.delivered() {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            keys.extend(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["payload"]["key"].as_str().unwrap().to_string()),
            );
        }
        keys
    };
    wait_keys(flag_keys(0..lines), batched_keys).await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_deliveries_and_saves_checkpoints() {
    let rx = Receiver::start().await;
    // The first request is held for a while; SIGTERM arrives while it is on the wire.
    let (tx, hold) = std::sync::mpsc::channel::<()>();
    let hold = std::sync::Mutex::new(hold);
    let mut first = true;
    rx.plan(move |_| {
        if std::mem::take(&mut first) {
            let _ = hold
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_millis(700));
        }
        Reply::Status(200)
    });
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    rx.wait_attempts(1).await;
    ft.signal("TERM");
    let status = ft.wait().await;
    drop(tx);
    assert!(status.success(), "exit 0 after SIGTERM; {}", ft.stderr());
    assert_eq!(rx.delivered().len(), 1);
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("checkpoints.json")).unwrap())
            .unwrap();
    assert_eq!(
        checkpoint["sources"]["flipt"]["file"]["offset"],
        std::fs::metadata(s.log()).unwrap().len(),
        "the in-flight delivery finished and was checkpointed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_sinks_and_refuses_a_bad_config() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Console);
    let config = s.config(&webhook_sink(&rx.url("/v1"), ""));
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(2).await;
    // A new template and secret: lines written after the reload use them, positions are kept.
    s.config(&webhook_sink(
        &rx.url("/v2"),
        "    signing_secret: n3w\n    body: '{\"k\": \"{{ payload.key }}\"}'\n",
    ));
    ft.signal("HUP");
    ft.wait_log("config reloaded").await;
    s.write_lines(2..3, Encoding::Console);
    let got = rx.wait_delivered(3).await;
    assert_eq!(got[2].path, "/v2");
    assert_eq!(got[2].text(), "{\"k\": \"flag-2\"}");
    assert!(!got[2].header("x-flipt-webhook-signature").is_empty());
    // A bad config is refused; the running one goes on.
    s.config(&webhook_sink(&rx.url("/v3"), "    body: '{{ oops '\n"));
    ft.signal("HUP");
    ft.wait_log("reload refused").await;
    s.write_lines(3..4, Encoding::Console);
    let got = rx.wait_delivered(4).await;
    assert!(ft.terminate().await.success());
    assert_eq!(got[3].path, "/v2");
    assert_eq!(got.len(), 4, "positions were kept: nothing was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_share_one_in_flight_budget_while_the_receiver_is_down() {
    let rx = Receiver::start().await;
    rx.plan(|_| Reply::Status(503));
    let s = Setup::new();
    // Three sources of 8 MiB each, in lines of 10 KiB (so the sink's queue of 1024 records is
    // not what stops reading): with a budget per source they could hold 12 MiB at once.
    let per_source = 800;
    let long = format!(
        r#""namespace_key":"default","description":"{}""#,
        "x".repeat(10_000)
    );
    let mut extra = String::new();
    let mut sizes = 0u64;
    for name in ["a", "b", "c"] {
        let path = s.path(&format!("{name}.log"));
        let text: String = (0..per_source)
            .map(|i| {
                flipt_line(i, Encoding::Json)
                    .0
                    .replace(r#""namespace_key":"default""#, &long)
            })
            .collect();
        sizes += text.len() as u64;
        std::fs::write(&path, text).unwrap();
        extra.push_str(&format!(
            "  - name: {name}\n    file: {}\n    format: flipt\n",
            path.display()
        ));
    }
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 1h\n    initial_backoff: 100ms\n    batch: {max_events: 500}\n    backlog: {max_bytes: 512KiB, when_full: block}\n",
    ));
    // Lines up to 64 KiB, so each source's share is a third of the budget (a source's share is
    // never less than what a record of its longest line may hold).
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("sources:\n", &format!("sources:\n{extra}"));
    std::fs::write(&config, format!("max_line_bytes: 65536\n{text}")).unwrap();
    let mut ft = Flagtail::start(&config);
    rx.wait_attempts(3).await;
    ft.wait_log("retry_in").await;
    // Reading has paused: wait until it stops moving, then look.
    let pid = ft.pid();
    let read = eventually_async(|| async move {
        let before = bytes_read(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        match bytes_read(pid) {
            after if after.abs_diff(before) < 64 * 1024 => Ok(after),
            after => Err(format!("still reading: {after}")),
        }
    })
    .await;
    // The sink's backlog (512 KiB, `when_full: block`: some 250 KiB of these lines) is full, so
    // reading waits on the budget.
    // Split 4 MiB, charged with what records hold (the line, which they share with the buffer it
    // was read into), is some 4 MiB of lines plus what the readers have buffered ahead and the
    // first lines read back to check the files (3.5 MiB in all when this was written); 4 MiB
    // for each source would be 12 MiB.
    assert!(
        read < 5 * 1024 * 1024,
        "one 4 MiB budget for all sources, charged with what records hold: {read} of {sizes} bytes read"
    );
    rx.plan(|_| Reply::Status(200));
    let batched = || -> usize {
        rx.delivered()
            .iter()
            .map(|r| {
                serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
                    .unwrap()
                    .len()
            })
            .sum()
    };
    eventually(|| match batched() {
        n if n >= 3 * per_source => Ok(()),
        n => Err(format!("{n} of {} events", 3 * per_source)),
    })
    .await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_holds_back_only_the_sources_that_feed_it() {
    let down = Receiver::start().await;
    down.plan(|_| Reply::Status(503));
    let up = Receiver::start().await;
    let s = Setup::new();
    // `flipt` (lines of 10 KiB) goes only to the stuck sink and fills its share at once; `other`
    // goes only to the healthy one and must get all of its 4 MiB through meanwhile.
    let long = format!(
        r#""namespace_key":"default","description":"{}""#,
        "x".repeat(10_000)
    );
    let text: String = (0..600)
        .map(|i| {
            flipt_line(i, Encoding::Json)
                .0
                .replace(r#""namespace_key":"default""#, &long)
        })
        .collect();
    append(&s.log(), &text);
    let other = s.path("other.log");
    let lines = 12_000;
    let text: String = (0..lines)
        .map(|i| flipt_line(i, Encoding::Json).0)
        .collect();
    std::fs::write(&other, text).unwrap();
    let sinks = webhook_sink(
        &down.url("/"),
        "    max_backoff_duration: 1h\n    sources: [flipt]\n",
    ) + &webhook_sink(&up.url("/"), "    sources: [other]\n    concurrency: 4\n")
        .replace("name: hook", "name: up");
    let config = s.config(&sinks);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "sources:\n",
        &format!(
            "sources:\n  - name: other\n    file: {}\n    format: flipt\n",
            other.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut ft = Flagtail::start(&config);
    let got = up.wait_delivered(lines).await;
    assert_eq!(got.len(), lines);
    assert!(down.delivered().is_empty());
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_written_is_held_and_written_once_it_can() {
    let rx = Receiver::start().await;
    rx.plan(|_| Reply::Status(400));
    let s = Setup::new();
    // The dead-letter file's place is taken by a directory: every append fails.
    let blocker = s.state().join("dead-letter/hook.jsonl");
    std::fs::create_dir_all(&blocker).unwrap();
    s.write_lines(0..1, Encoding::Json);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    ft.wait_log("holding these events").await;
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(wait_dead_letters(&s, "hook", 1).await, ["flag-0"]);
    assert!(ft.terminate().await.success());
    // Acknowledged once written: after a restart only the next line is sent.
    let before = rx.attempts().len();
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    s.write_lines(1..2, Encoding::Json);
    wait_dead_letters(&s, "hook", 2).await;
    assert!(ft.terminate().await.success());
    let again: Vec<String> = rx.attempts()[before..]
        .iter()
        .map(|r| key_of(&r.body))
        .collect();
    assert_eq!(again, ["flag-1"]);
}
