//! Self-healing dead letters (`dead_letter.auto_replay`): once a sink delivers again, the dead
//! letters a full backlog made (its oldest events, dead-lettered to make room) go out in the
//! background with their original keys; final 4xx ones stay; a replay cut off by `kill -9` is
//! resumed at the next start.

mod support;

use std::collections::HashMap;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlogs_dead_letters_reach_the_receiver_without_a_replay_command() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // Down: 503 for everything; flag-2 is refused for good (400) whatever happens.
    let outage = rx.outage(|r| (key_of(&r.body) == "flag-2").then_some(Reply::Status(400)));
    let config = s.config(&small_backlog(&rx, ""));
    let port = free_port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin: {listen: \"\"}",
        &format!("admin: {{listen: \"127.0.0.1:{port}\"}}"),
    );
    std::fs::write(&config, text).unwrap();
    let mut ft = Flagtail::start(&config);
    let dead = overflow(&s, 0..EVENTS).await;
    assert!(dead_letter_gauge(port) >= dead as i64);
    // Back. The backlog drains, and the sink delivering brings the letters out too.
    outage.end();
    s.write_lines(EVENTS..EVENTS + 1, Encoding::Json);
    let want: Vec<String> = flag_keys(0..EVENTS + 1).filter(|k| k != "flag-2").collect();
    wait_all(&rx, &want).await;
    // Every event went under one key, whichever way it came.
    let mut keys: HashMap<String, String> = HashMap::new();
    for r in rx.attempts() {
        let key = r.header("idempotency-key").to_string();
        let first = keys.entry(key_of(&r.body)).or_insert_with(|| key.clone());
        assert_eq!(*first, key, "an event keeps its key");
    }
    let left = eventually(|| match dead_keys(&s, "hook") {
        d if d.len() == 1 => Ok(d),
        d => Err(format!("{} left", d.len())),
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

/// Events written while the receiver is down: enough to fill a 64 KiB backlog several times.
const EVENTS: usize = 400;

/// The `hook` sink with a 64 KiB backlog that dead-letters its oldest when full.
fn small_backlog(rx: &Receiver, extra: &str) -> String {
    webhook_sink(
        &rx.url("/"),
        &format!(
            "    max_backoff_duration: 200ms\n    max_probe_interval: 200ms\n    backlog: {{max_bytes: 64KiB}}\n{extra}"
        ),
    )
}

/// Writes events `range` while the receiver is down and waits until the backlog has overflowed
/// (flag-0, the oldest, dead-lettered); how many letters there are then.
async fn overflow(s: &Setup, range: std::ops::Range<usize>) -> usize {
    s.write_lines(range, Encoding::Json);
    eventually(|| match dead_keys(s, "hook") {
        d if d.contains(&"flag-0".to_string()) => Ok(d.len()),
        d => Err(format!("{} dead letters, not flag-0", d.len())),
    })
    .await
}

/// Waits until the receiver has taken each of `want` (in any order, copies allowed).
async fn wait_all(rx: &Receiver, want: &[String]) {
    let mut want = want.to_vec();
    want.sort();
    eventually(|| {
        let mut have = delivered_keys(rx);
        have.sort();
        have.dedup();
        match have == want {
            true => Ok(()),
            false => Err(format!("{} of {} delivered", have.len(), want.len())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_automatic_replay_loses_nothing_and_leaves_nothing_behind() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let outage = rx.outage(|_| None);
    let config = s.config(&small_backlog(
        &rx,
        "    rate_limit: 100/s\n    concurrency: 4\n",
    ));
    let mut ft = Flagtail::start(&config);
    overflow(&s, 0..EVENTS).await;
    outage.end();
    s.write_lines(EVENTS..EVENTS + 1, Encoding::Json);
    // The replay is under way (100/s): some letters went, most have not.
    let replaying = s.state().join("dead-letter/hook.replaying.jsonl");
    eventually(|| match replaying.exists() {
        true => Ok(()),
        false => Err("no replay under way".into()),
    })
    .await;
    ft.kill_9().await;
    let replaying = s.state().join("dead-letter/hook.replaying.jsonl");
    assert!(
        replaying.exists(),
        "the cut-off replay's letters are kept aside"
    );
    // At the next start the replay resumes at once, without waiting for a new event.
    let mut ft = Flagtail::start(&config);
    let want: Vec<String> = flag_keys(0..EVENTS + 1).collect();
    wait_all(&rx, &want).await;
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
async fn a_round_that_failed_is_tried_again_without_a_new_event() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // Once back, the receiver refuses flag-0 (the oldest letter, first in a round) for 3 s more:
    // the rounds the backlog's deliveries start fail, and then no event comes.
    let back = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    let since = back.clone();
    let outage = rx.outage(move |r| {
        let blip = since
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(3));
        (blip && key_of(&r.body) == "flag-0").then_some(Reply::Status(503))
    });
    let config = s.config(&small_backlog(&rx, ""));
    let mut ft = Flagtail::start(&config);
    overflow(&s, 0..EVENTS).await;
    *back.lock().unwrap() = Some(std::time::Instant::now());
    outage.end();
    ft.wait_log("failed_again=1").await;
    // No new event: the letters go by themselves once flag-0 is taken.
    let want: Vec<String> = flag_keys(0..EVENTS).collect();
    wait_all(&rx, &want).await;
    assert!(ft.terminate().await.success());
    assert!(dead_keys(&s, "hook").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_an_automatic_replay_keeps_only_the_letters_not_sent() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let outage = rx.outage(|_| None);
    let config = s.config(&small_backlog(&rx, "    rate_limit: 100/s\n"));
    let mut ft = Flagtail::start(&config);
    overflow(&s, 0..EVENTS).await;
    outage.end();
    s.write_lines(EVENTS..EVENTS + 1, Encoding::Json);
    // The replay is under way (100/s) and has sent some letters.
    let replaying = s.state().join("dead-letter/hook.replaying.jsonl");
    eventually(|| {
        let sent = delivered_keys(&rx).len();
        match replaying.exists() && sent > EVENTS / 2 {
            true => Ok(()),
            false => Err(format!(
                "{sent} delivered; replaying: {}",
                replaying.exists()
            )),
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    // The round settled before the daemon ended: the letters it sent left the dead-letter file,
    // the others went back into it, and nothing is set aside for the next start.
    assert!(
        !replaying.exists(),
        "a graceful stop leaves no replay cut off"
    );
    let sent = delivered_keys(&rx);
    let kept = dead_keys(&s, "hook");
    assert!(!kept.is_empty(), "the stop came before the round's end");
    let twice: Vec<&String> = kept.iter().filter(|k| sent.contains(k)).collect();
    assert!(twice.is_empty(), "sent and still kept: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_the_receiver_keeps_refusing_does_not_hold_back_the_others() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // Once back, the receiver still refuses flag-0 (500), and only flag-0.
    let outage = rx.outage(|r| (key_of(&r.body) == "flag-0").then_some(Reply::Status(500)));
    let config = s.config(&small_backlog(&rx, ""));
    let mut ft = Flagtail::start(&config);
    overflow(&s, 0..EVENTS).await;
    outage.end();
    // New events keep coming; each delivery may start a round (at most one per cool-down).
    let mut next = EVENTS;
    let want: Vec<String> = flag_keys(1..EVENTS).collect();
    eventually(|| {
        s.write_lines(next..next + 1, Encoding::Json);
        next += 1;
        let have = delivered_keys(&rx);
        match want.iter().all(|k| have.contains(k)) {
            true => Ok(()),
            false => Err("not all replayed yet".into()),
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    // Kept: in the dead-letter file, or in the replay's file if the stop cut a round short.
    let mut left = dead_keys(&s, "hook");
    left.extend(
        s.state_lines("dead-letter/hook.replaying.jsonl")
            .iter()
            .map(|l| {
                l["event"]["payload"]["key"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            }),
    );
    assert_eq!(left, ["flag-0"]);
    let flag0 = rx
        .attempts()
        .iter()
        .filter(|r| key_of(&r.body) == "flag-0")
        .count();
    // Its probes while down (every 200 ms at most), and at most a few rounds after (one per
    // cool-down), not one per new event.
    assert!(
        flag0 < 2 * (next - EVENTS) + 40,
        "flag-0 tried {flag0} times over {} new events",
        next - EVENTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_replay_false_leaves_dead_letters_for_the_replay_command() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let outage = rx.outage(|_| None);
    let config = s.config(&small_backlog(
        &rx,
        "    dead_letter: {auto_replay: false}\n",
    ));
    let mut ft = Flagtail::start(&config);
    overflow(&s, 0..EVENTS).await;
    outage.end();
    s.write_lines(EVENTS..EVENTS + 1, Encoding::Json);
    // Every event is delivered or waits in the dead-letter file (the backlog may overflow a
    // little more while it drains).
    let all: Vec<String> = flag_keys(0..EVENTS + 1).collect();
    let dead = eventually(|| {
        let (dead, have) = (dead_keys(&s, "hook"), delivered_keys(&rx));
        match all.iter().all(|k| dead.contains(k) || have.contains(k)) {
            true => Ok(dead),
            false => Err(format!("{} delivered, {} dead", have.len(), dead.len())),
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    assert_eq!(
        dead_keys(&s, "hook"),
        dead,
        "the letters stay for `flagtail replay`"
    );
    assert!(dead.contains(&"flag-0".to_string()));
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
