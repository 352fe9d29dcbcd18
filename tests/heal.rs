//! Self-healing dead letters (`dead_letter.auto_replay`): once a sink delivers again, its
//! retry-exhausted dead letters go out in the background with their original keys; final 4xx ones
//! stay; a replay cut off by `kill -9` is resumed at the next start.

mod support;

use std::collections::HashMap;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_back_after_the_retry_budget_gets_every_event_without_a_replay_command() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // Down: 503 for everything; flag-2 is refused for good (400) whatever happens.
    let outage = rx.outage(|r| (key_of(&r.body) == "flag-2").then_some(Reply::Status(400)));
    s.write_lines(0..6, Encoding::Json);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 300ms\n",
    ));
    let port = free_port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin: {listen: \"\"}",
        &format!("admin: {{listen: \"127.0.0.1:{port}\"}}"),
    );
    std::fs::write(&config, text).unwrap();
    let mut ft = Flagtail::start(&config);
    wait_dead_letters(&s, "hook", 6).await;
    assert_eq!(dead_letter_gauge(port), 6);
    let first_keys: HashMap<String, String> = rx
        .attempts()
        .iter()
        .map(|r| (key_of(&r.body), r.header("idempotency-key").to_string()))
        .collect();
    // Back. The next event's delivery shows the sink works again.
    outage.end();
    s.write_lines(6..7, Encoding::Json);
    let got = rx.wait_delivered(6).await;
    let mut keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["flag-0", "flag-1", "flag-3", "flag-4", "flag-5", "flag-6"]
    );
    for r in got.iter().filter(|r| key_of(&r.body) != "flag-6") {
        assert_eq!(
            r.header("idempotency-key"),
            first_keys[&key_of(&r.body)],
            "a replayed event keeps its key"
        );
    }
    let left = eventually(|| match dead_keys(&s, "hook") {
        d if d.len() == 1 => Ok(d),
        d => Err(format!("{d:?}")),
    })
    .await;
    assert_eq!(
        left,
        ["flag-2"],
        "a final 4xx is never replayed automatically"
    );
    let flag2 = rx
        .attempts()
        .iter()
        .filter(|r| key_of(&r.body) == "flag-2")
        .count();
    assert_eq!(flag2, 1);
    // The gauge is counted when scraped: it dropped as the letters were delivered.
    eventually(|| match dead_letter_gauge(port) {
        1 => Ok(()),
        n => Err(format!("gauge {n}")),
    })
    .await;
    assert!(ft.terminate().await.success());
    assert!(
        ft.stderr().contains("replayed dead letters"),
        "{}",
        ft.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_automatic_replay_loses_nothing_and_leaves_nothing_behind() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let outage = rx.outage(|_| None);
    s.write_lines(0..20, Encoding::Json);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 200ms\n    rate_limit: 10/s\n    concurrency: 4\n",
    ));
    let mut ft = Flagtail::start(&config);
    wait_dead_letters(&s, "hook", 20).await;
    outage.end();
    s.write_lines(20..21, Encoding::Json);
    // The replay is under way (10/s): some letters went, most have not.
    rx.wait_delivered(4).await;
    ft.kill_9().await;
    let replaying = s.state().join("dead-letter/hook.replaying.jsonl");
    assert!(
        replaying.exists(),
        "the cut-off replay's letters are kept aside"
    );
    // At the next start the replay resumes at once, without waiting for a new event.
    let mut ft = Flagtail::start(&config);
    let want: Vec<String> = flag_keys(0..21).collect();
    eventually(|| {
        let mut have = delivered_keys(&rx);
        have.sort();
        have.dedup();
        let mut want = want.clone();
        want.sort();
        if have == want {
            Ok(())
        } else {
            Err(format!("{} of {} delivered", have.len(), want.len()))
        }
    })
    .await;
    eventually(|| {
        if !replaying.exists() && dead_keys(&s, "hook").is_empty() {
            Ok(())
        } else {
            Err(format!("left: {:?}", dead_keys(&s, "hook")))
        }
    })
    .await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_the_receiver_keeps_refusing_does_not_hold_back_the_others() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // Once back, the receiver still refuses flag-0 (500), and only flag-0.
    let outage = rx.outage(|r| (key_of(&r.body) == "flag-0").then_some(Reply::Status(500)));
    s.write_lines(0..2, Encoding::Json);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 200ms\n",
    ));
    let mut ft = Flagtail::start(&config);
    wait_dead_letters(&s, "hook", 2).await;
    outage.end();
    // New events keep coming; each delivery may start a round (at most one per cool-down).
    let mut next = 2;
    eventually(|| {
        s.write_lines(next..next + 1, Encoding::Json);
        next += 1;
        if delivered_keys(&rx).contains(&"flag-1".to_string()) {
            Ok(())
        } else {
            Err("flag-1 not replayed yet".into())
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    assert_eq!(dead_keys(&s, "hook"), ["flag-0"]);
    let flag0 = rx
        .attempts()
        .iter()
        .filter(|r| key_of(&r.body) == "flag-0")
        .count();
    // Its first delivery, and at most a few rounds (one per cool-down), not one per new event.
    assert!(
        flag0 < 2 * (next - 2) + 4,
        "flag-0 tried {flag0} times over {} new events",
        next - 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_replay_false_leaves_dead_letters_for_the_replay_command() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let outage = rx.outage(|_| None);
    s.write_lines(0..1, Encoding::Json);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 200ms\n    dead_letter: {auto_replay: false}\n",
    ));
    let mut ft = Flagtail::start(&config);
    wait_dead_letters(&s, "hook", 1).await;
    outage.end();
    s.write_lines(1..3, Encoding::Json);
    rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    assert_eq!(delivered_keys(&rx), ["flag-1", "flag-2"]);
    assert_eq!(dead_keys(&s, "hook"), ["flag-0"]);
}

/// `flagtail_dead_letters{sink="hook"}` as the admin endpoint's `/metrics` says now.
fn dead_letter_gauge(port: u16) -> i64 {
    let (status, text) = admin_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("flagtail_dead_letters{sink=\"hook\"} "))
        .unwrap_or_else(|| panic!("no dead-letter gauge in {text}"))
        .trim()
        .parse()
        .unwrap()
}
