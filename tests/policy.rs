//! A sink's delivery policy against a real receiver: `rate_limit`, `retry_on`, `retry_schedule`,
//! `max_retry_after`.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_5_per_second_is_spaced_and_nothing_is_dropped() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..20, Encoding::Json);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    rate_limit: 5/s\n    concurrency: 4\n",
    ));
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(20).await;
    assert!(ft.terminate().await.success());
    let spread = got[19].at - got[0].at;
    assert!(
        spread >= Duration::from_millis(3600),
        "20 requests at 5/s take at least 19 intervals of 200ms: {spread:?}"
    );
    let mut keys = delivered_keys(&rx);
    keys.sort();
    let mut want: Vec<String> = flag_keys(0..20).collect();
    want.sort();
    assert_eq!(keys, want, "every event, once");
    assert!(dead_keys(&s, "hook").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_retries_a_listed_404_and_not_an_unlisted_503() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Json);
    rx.script(vec![Reply::Status(404), Reply::Status(404)]);
    let config = s.config(&webhook_sink(&rx.url("/"), "    retry_on: [404]\n"));
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(1).await;
    assert_eq!(rx.attempts().len(), 3, "404, 404, then 200");
    assert!(ft.terminate().await.success());

    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Json);
    rx.plan(|_| Reply::Status(503));
    let config = s.config(&webhook_sink(&rx.url("/"), "    retry_on: [404]\n"));
    let mut ft = Flagtail::start(&config);
    let dead = eventually(|| match dead_keys(&s, "hook") {
        d if d.len() == 1 => Ok(d),
        d => Err(format!("{d:?}")),
    })
    .await;
    assert_eq!(dead, ["flag-0"]);
    assert_eq!(
        rx.attempts().len(),
        1,
        "503 is not in retry_on: final at once"
    );
    let reason = &dead_reasons(&s, "hook")[0];
    assert!(reason.contains("not in retry_on"), "{reason}");
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_schedule_is_followed_then_its_last_delay_repeats() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Json);
    rx.plan(|_| Reply::Status(503));
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    retry_schedule: [100ms, 300ms]\n    max_backoff_duration: 1m\n",
    ));
    let mut ft = Flagtail::start(&config);
    let tries = rx.wait_attempts(4).await;
    // One attempt, then one per scheduled delay (across the hand-over to the backlog), then the
    // last delay again: a receiver that keeps failing is never given up on.
    let gap = |i: usize| tries[i].at - tries[i - 1].at;
    assert!(gap(1) >= Duration::from_millis(100), "{:?}", gap(1));
    assert!(gap(2) >= Duration::from_millis(300), "{:?}", gap(2));
    assert!(gap(3) >= Duration::from_millis(300), "{:?}", gap(3));
    assert!(gap(2) < Duration::from_millis(1000), "{:?}", gap(2));
    assert!(ft.terminate().await.success());
    assert!(dead_reasons(&s, "hook").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_max_retry_after_is_cut_to_it_and_warned_about() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Json);
    // A day, where the sink only has 3s to retry: waited for as max_retry_after, not given up.
    rx.script(vec![Reply::StatusWith(
        429,
        vec![("Retry-After", "86400".to_string())],
    )]);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_retry_after: 1s\n    initial_backoff: 10ms\n",
    ));
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(1).await;
    let tries = rx.attempts();
    assert_eq!(tries.len(), 2);
    let waited = tries[1].at - tries[0].at;
    // The backoff alone would have waited 10ms at most.
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(dead_keys(&s, "hook").is_empty());
    assert!(ft.terminate().await.success());
    assert!(
        ft.stderr().contains("waiting max_retry_after (1s) instead"),
        "{}",
        ft.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_past_the_budget_is_waited_for_and_zero_does_not_hammer() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Json);
    // flag-0: asked to come back in 2s, past a 500ms max_backoff_duration: waited for.
    // flag-1: "Retry-After: 0" four times: the backoff still spaces the attempts.
    let mut zeros = 0;
    rx.plan(move |r| match key_of(&r.body).as_str() {
        "flag-0" if zeros == 0 => {
            zeros += 1;
            Reply::StatusWith(429, vec![("Retry-After", "2".to_string())])
        }
        "flag-1" if zeros < 5 => {
            zeros += 1;
            Reply::StatusWith(503, vec![("Retry-After", "0".to_string())])
        }
        _ => Reply::Status(200),
    });
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    max_backoff_duration: 500ms\n    initial_backoff: 100ms\n",
    ));
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    assert!(dead_reasons(&s, "hook").is_empty());
    let tries = rx.attempts();
    let of = |k: &str| {
        tries
            .iter()
            .filter(|r| key_of(&r.body) == k)
            .collect::<Vec<_>>()
    };
    let zero = of("flag-0");
    assert_eq!(zero.len(), 2, "one wait of 2s, then delivered");
    assert!(zero[1].at - zero[0].at >= Duration::from_secs(2));
    let one = of("flag-1");
    assert_eq!(one.len(), 5);
    for pair in one.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(50),
            "Retry-After: 0 does not skip the backoff: {:?}",
            pair[1].at - pair[0].at
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secrets_each_verify_with_the_standard_webhooks_crate() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Json);
    let (new, old) = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    );
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    signature: standard-webhooks\n    signing_secret: [\"${NEW_SECRET}\", \"${OLD_SECRET}\"]\n",
    ));
    let env = [("NEW_SECRET", new), ("OLD_SECRET", old)];
    let mut ft = Flagtail::start_env(&config, &env);
    let got = rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    for r in &got {
        assert_eq!(r.header("webhook-signature").matches("v1,").count(), 2);
        // A receiver that knows only one of the two, either one, accepts the request.
        for secret in [new, old] {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(&r.body, &r.headers)
                .unwrap_or_else(|e| panic!("{e}: {:?}", r.headers));
        }
        let stranger = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==";
        assert!(
            standardwebhooks::Webhook::new(stranger)
                .unwrap()
                .verify(&r.body, &r.headers)
                .is_err()
        );
    }
    let (code, out, _) = run_cmd_env(&["check", "--config", config.to_str().unwrap()], &env);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["sinks"][0]["signing_secret"],
        serde_json::json!(["***", "***"])
    );
    assert!(
        !out.contains("MfKQ9r8G") && !out.contains("C2FVsBQ"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_flipt_signatures_the_newest_secret_signs() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Json);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    signing_secret: [newest, older]\n",
    ));
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(1).await;
    assert!(ft.terminate().await.success());
    assert_eq!(
        got[0].header("x-flipt-webhook-signature"),
        flipt_signature("newest", got[0].text())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_filters_take_only_events_whose_fields_match() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let line = |key: &str, ns: &str, email: &str, rollout: &str| {
        format!(
            r#"{{"version":"0.2","type":"flag","action":"updated","status":"success","metadata":{{"actor":{{"email":"{email}"}}}},"payload":{{"key":"{key}","namespace_key":"{ns}","rollout":{rollout}}},"timestamp":"2026-11-23T06:00:00Z"}}"#
        ) + "\n"
    };
    append(
        &s.log(),
        &[
            line("a", "production", "ops@example.com", "1"),
            line("b", "staging", "ops@example.com", "1"),
            line("c", "prod-eu", "intruder@evil.io", "1"),
            line("d", "prod-us", "dev@example.com", "0.5"),
            line("e", "prod-us", "dev@example.com", "1"),
        ]
        .concat(),
    );
    let config = s.config(&webhook_sink(
        &rx.url("/pager"),
        "    events: [\"flag:updated\"]\n    match:\n      payload.namespace_key: [\"prod*\"]\n      metadata.actor.email: \"*@example.com\"\n      payload.rollout: [\"1\"]\n",
    ));
    let mut ft = Flagtail::start(&config);
    // The last line is taken: everything before it has been decided by then (concurrency 1).
    rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    assert_eq!(delivered_keys(&rx), ["a", "e"]);

    let bad = s.config(&webhook_sink(
        &rx.url("/"),
        "    match: {payloads.key: [\"x\"]}\n",
    ));
    let (code, _, err) = run_cmd(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sinks.0.match") && err.contains("\"payloads.key\" is not a path"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_selectively_by_event_id_and_time() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // flag-0 created, flag-1 updated, flag-2 deleted: all refused for good.
    s.write_lines(0..3, Encoding::Json);
    rx.plan(|_| Reply::Status(400));
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    let mut ft = Flagtail::start(&config);
    wait_dead_letters(&s, "hook", 3).await;
    assert!(ft.terminate().await.success());
    rx.plan(|_| Reply::Status(200));
    let cfg = config.to_str().unwrap();

    let (code, out, err) = run_cmd(&["dead-letters", "--config", cfg, "--sink", "hook", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["event"].as_str().unwrap(), r["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("flag:created", "flag-0"),
            ("flag:updated", "flag-1"),
            ("flag:deleted", "flag-2")
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r["reason"].as_str().unwrap().contains("400"))
    );
    let (code, table, _) = run_cmd(&["dead-letters", "--config", cfg, "--sink", "hook"]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("TIME") && table.contains("flag:updated") && table.contains("flag-1")
    );
    // A torn line and JSON that is not a dead letter are both counted as unreadable, and kept.
    let file = s.state().join("dead-letter/hook.jsonl");
    let kept = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{kept}{{\"not\": \"a letter\"}}\n{{\"torn")).unwrap();
    let (code, _, err) = run_cmd(&["dead-letters", "--config", cfg, "--sink", "hook"]);
    assert_eq!(code, 0);
    assert!(
        err.contains("3 dead letters, 2 unreadable lines (kept as they are)"),
        "{err}"
    );
    std::fs::write(&file, kept).unwrap();

    // A dry run sends and changes nothing.
    let refused = rx.attempts().len();
    let (code, out, _) = run_cmd(&[
        "replay",
        "--config",
        cfg,
        "--sink",
        "hook",
        "--events",
        "flag:updated",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("flag-1") && !out.contains("flag-0"), "{out}");
    assert_eq!(rx.attempts().len(), refused);
    assert_eq!(dead_keys(&s, "hook").len(), 3);

    // By event: only flag-1 goes; the others stay, and that is not a failure.
    let (code, out, err) = run_cmd(&[
        "replay",
        "--config",
        cfg,
        "--sink",
        "hook",
        "--events",
        "flag:updated",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(delivered_keys(&rx), ["flag-1"]);
    assert_eq!(dead_keys(&s, "hook"), ["flag-0", "flag-2"]);

    // By id.
    let id = rows[2]["idempotency_key"].as_str().unwrap();
    let (code, _, _) = run_cmd(&["replay", "--config", cfg, "--sink", "hook", "--id", id]);
    assert_eq!(code, 0);
    assert_eq!(delivered_keys(&rx), ["flag-1", "flag-2"]);
    assert_eq!(
        rx.attempts().len(),
        refused + 2,
        "one request per replayed letter"
    );
    let sent = &rx.delivered()[1];
    assert_eq!(sent.header("idempotency-key"), id, "the original key");

    // By time: nothing was dead-lettered before an hour ago; everything left since then.
    let (code, _, _) = run_cmd(&["replay", "--config", cfg, "--sink", "hook", "--until", "1h"]);
    assert_eq!(code, 0);
    assert_eq!(dead_keys(&s, "hook"), ["flag-0"]);
    let (code, _, _) = run_cmd(&["replay", "--config", cfg, "--sink", "hook", "--since", "1h"]);
    assert_eq!(code, 0);
    assert_eq!(delivered_keys(&rx), ["flag-1", "flag-2", "flag-0"]);
    assert!(dead_keys(&s, "hook").is_empty());

    let (code, _, err) = run_cmd(&[
        "replay",
        "--config",
        cfg,
        "--sink",
        "hook",
        "--since",
        "yesterday-ish",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--since"), "{err}");
}
