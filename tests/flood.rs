//! Floods of values that are not events, by each way in (one HTTP request, a socket client, a
//! file), against the real binary: each costs bounded work. The request is refused at the door
//! (400, one record); lines are coalesced into one record per run; every value is counted; the
//! WARN lines about them are few; the rejected file stays small and under `rejected.max_bytes`;
//! and a valid event sent right after is delivered as fast as any other.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;

/// What "as fast as any other" is held to: an event alone is delivered in milliseconds; one
/// queued behind a flood recorded line by line took minutes.
const PROMPT: Duration = Duration::from_secs(3);

/// Writes a config with admin on `admin`, one source `name` (its keys in `source`) and a webhook
/// sink to `rx`.
fn flood_config(
    s: &Setup,
    admin: u16,
    top: &str,
    source: &str,
    rx: &Receiver,
) -> std::path::PathBuf {
    let text = format!(
        "state_dir: {}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nshutdown_grace: 5s\n{top}\nsources:\n  - {source}\nsinks:\n{}",
        s.state().display(),
        webhook_sink(&rx.url("/"), ""),
    );
    let path = s.path("flagtail.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A POST of `body` to the source on `port`: (status, answer).
async fn post(port: u16, body: String) -> (u16, String) {
    eventually(|| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("http://127.0.0.1:{port}/"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("an answer")
        .unwrap();
    let status = answer.status().as_u16();
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The sum of the samples of `/metrics` on `admin` whose line starts with `prefix`.
fn metric_sum(admin: u16, prefix: &str) -> Result<u64, String> {
    let (_, text) = admin_get(admin, "/metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// Waits until the samples starting with `prefix` add up to `want`.
async fn wait_metric(admin: u16, prefix: &str, want: u64) {
    eventually(|| match metric_sum(admin, prefix)? {
        n if n == want => Ok(()),
        n => Err(format!("{prefix}: {n}, want {want}")),
    })
    .await;
}

/// The WARN lines about rejected lines in the daemon's log.
fn rejection_warnings(ft: &Flagtail) -> usize {
    ft.stderr()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("rejected"))
        .count()
}

/// The size of a file in the state directory.
fn state_size(s: &Setup, rel: &str) -> u64 {
    std::fs::metadata(s.state().join(rel)).map_or(0, |m| m.len())
}

fn event(i: usize) -> String {
    flipt_line(i, Encoding::Json).0.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_200_000_values_that_are_not_events_is_refused_at_the_door_as_one_record() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (port, admin) = (free_port(), free_port());
    let source = format!(
        "{{name: hooks, http: \"127.0.0.1:{port}\", max_body_bytes: 2097152, format: auto}}"
    );
    let config = flood_config(&s, admin, "", &source, &rx);
    let mut ft = Flagtail::start(&config);
    // 1.6 MB: 200,000 objects of no known shape.
    let flood = format!("[{}]", vec!["{\"a\":1}"; 200_000].join(","));
    let (code, answer) = post(port, flood).await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("\"refused\":200000"), "{answer}");
    assert!(answer.contains("\"accepted\":0"), "{answer}");
    let rejected = "flagtail_lines_rejected_total{source=\"hooks\",reason=\"not_an_event\"}";
    wait_metric(admin, rejected, 200_000).await;
    let sent = Instant::now();
    let (code, answer) = post(port, event(0)).await;
    assert_eq!((code, answer.as_str()), (200, "{\"accepted\":1}"));
    rx.wait_delivered(1).await;
    let took = sent.elapsed();
    assert!(took < PROMPT, "the event after the flood took {took:?}");
    // A request mixing events and other values: the events are taken, the rest is one record.
    let mixed = format!("[{}, 1, [2], \"three\", {}]", event(1), event(2));
    let (code, answer) = post(port, mixed).await;
    assert_eq!(
        (code, answer.as_str()),
        (200, "{\"accepted\":2,\"refused\":3}")
    );
    wait_keys(flag_keys(0..3), || delivered_keys(&rx)).await;
    wait_metric(
        admin,
        "flagtail_lines_rejected_total{source=\"hooks\"",
        200_003,
    )
    .await;
    let rejected = s.state_lines("rejected/hooks.jsonl");
    let counts: Vec<u64> = rejected
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [200_000, 3], "{rejected:?}");
    assert_eq!(rejected[0]["line"], "{\"a\":1}");
    assert_eq!(
        rejected[0]["reasons"],
        serde_json::json!({"not_an_event": 200_000})
    );
    assert_eq!(rejected[1]["reason"], "not_an_event");
    let size = state_size(&s, "rejected/hooks.jsonl");
    assert!(size < 4096, "the rejected file holds {size} bytes");
    let warnings = rejection_warnings(&ft);
    assert!(warnings <= 2, "{warnings} WARN lines:\n{}", ft.stderr());
    assert!(ft.terminate().await.success());
    println!("event after the flood delivered in {took:?}; rejected file {size} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_client_sending_200_000_bad_lines_costs_a_few_records_and_delays_nothing() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let admin = free_port();
    let sock = s.path("in.sock");
    let source = format!("{{name: local, socket: {}, format: flipt}}", sock.display());
    let config = flood_config(&s, admin, "", &source, &rx);
    let mut ft = Flagtail::start(&config);
    eventually(|| {
        std::os::unix::net::UnixStream::connect(&sock)
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let mut conn = tokio::net::UnixStream::connect(&sock).await.unwrap();
    // Three reasons, alternating: a run is one record whatever its reasons.
    let flood = "not json\n{\"a\":1}\n[1]\n".repeat(66_667);
    conn.write_all(flood.as_bytes()).await.unwrap();
    conn.write_all(b"\n\n").await.unwrap();
    let sent = Instant::now();
    conn.write_all(format!("{}\n", event(0)).as_bytes())
        .await
        .unwrap();
    conn.flush().await.unwrap();
    rx.wait_delivered(1).await;
    let took = sent.elapsed();
    wait_metric(
        admin,
        "flagtail_lines_rejected_total{source=\"local\"",
        200_001,
    )
    .await;
    let rejected = s.state_lines("rejected/local.jsonl");
    let total: u64 = rejected.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 200_001, "every line in a record's count");
    let size = state_size(&s, "rejected/local.jsonl");
    assert!(
        size < 16 * 1024,
        "the rejected file holds {size} bytes in {} records",
        rejected.len()
    );
    assert_eq!(rejected[0]["line"], "not json");
    assert!(
        rejected[0]["reasons"]["not_an_event"].as_u64() > Some(0),
        "{}",
        rejected[0]
    );
    let warnings = rejection_warnings(&ft);
    assert!(warnings <= 12, "{warnings} WARN lines");
    assert!(
        took < PROMPT + PROMPT,
        "the event after the flood took {took:?}"
    );
    assert!(ft.terminate().await.success());
    println!(
        "event after 200,001 bad lines delivered in {took:?}; {} records, {size} bytes",
        rejected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_a_million_junk_lines_costs_a_few_records_and_is_not_read_again() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let admin = free_port();
    append(&s.log(), &"junk\n{}\n".repeat(500_000));
    s.write_lines(0..1, Encoding::Json);
    let source = format!("{{name: flipt, file: {}, format: auto}}", s.log().display());
    let config = flood_config(&s, admin, "", &source, &rx);
    let started = Instant::now();
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(1).await;
    let took = started.elapsed();
    wait_metric(
        admin,
        "flagtail_lines_rejected_total{source=\"flipt\"",
        1_000_000,
    )
    .await;
    let rejected = eventually(|| {
        let r = s.state_lines("rejected/flipt.jsonl");
        match r.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>() {
            1_000_000 => Ok(r),
            n => Err(format!("{n} lines in records")),
        }
    })
    .await;
    let size = state_size(&s, "rejected/flipt.jsonl");
    assert!(
        size < 32 * 1024,
        "the rejected file holds {size} bytes in {} records",
        rejected.len()
    );
    let reasons = &rejected[0]["reasons"];
    assert!(
        reasons["not_json"].as_u64() > Some(0) && reasons["not_an_event"].as_u64() > Some(0),
        "{}",
        rejected[0]
    );
    let warnings = rejection_warnings(&ft);
    assert!(warnings <= 40, "{warnings} WARN lines");
    assert!(ft.terminate().await.success());
    // The checkpoint passed every run once it was recorded: nothing is read or recorded again.
    let mut ft = Flagtail::start(&config);
    s.write_lines(1..2, Encoding::Json);
    wait_keys(flag_keys(0..2), || delivered_keys(&rx)).await;
    wait_metric(admin, "flagtail_lines_read_total{source=\"flipt\"", 1).await;
    assert!(ft.terminate().await.success());
    assert_eq!(s.state_lines("rejected/flipt.jsonl").len(), rejected.len());
    println!(
        "1,000,001 lines read and the event delivered in {took:?}; {} records, {size} bytes",
        rejected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rejected_file_stays_under_rejected_max_bytes_dropping_its_oldest_records() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (port, admin) = (free_port(), free_port());
    let source = format!("{{name: hooks, http: \"127.0.0.1:{port}\", format: flipt}}");
    let config = flood_config(&s, admin, "rejected: {max_bytes: 1MiB}", &source, &rx);
    let mut ft = Flagtail::start(&config);
    let pad = "x".repeat(60_000);
    for i in 0..40 {
        let (code, answer) = post(port, format!("[{{\"i\":{i},\"pad\":\"{pad}\"}}]")).await;
        assert_eq!(code, 400, "{answer}");
    }
    let size = state_size(&s, "rejected/hooks.jsonl");
    assert!(size <= 1024 * 1024, "the rejected file holds {size} bytes");
    let kept = s.state_lines("rejected/hooks.jsonl");
    let last = kept.last().unwrap()["line"].as_str().unwrap().to_string();
    assert!(last.starts_with("{\"i\":39,"), "the newest record is kept");
    wait_metric(
        admin,
        "flagtail_rejected_dropped_total{source=\"hooks\"",
        40 - kept.len() as u64,
    )
    .await;
    assert!(
        kept.len() < 40 && kept.len() >= 8,
        "{} records kept",
        kept.len()
    );
    assert!(ft.terminate().await.success());
}
