//! The Unix socket source, end to end: real sockets, the real binary, its journal on disk.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Writes a config with one socket source `local` on `sock` and `sinks`; `top` adds top-level keys.
fn socket_config(s: &Setup, top: &str, sinks: &str) -> (PathBuf, PathBuf) {
    let sock = s.path("in.sock");
    let text = format!(
        "state_dir: {}\nadmin: {{listen: \"\"}}\nshutdown_grace: 5s\n{top}\nsources:\n  - name: local\n    socket: {}\n    format: flipt\nsinks:\n{sinks}",
        s.state().display(),
        sock.display()
    );
    let path = s.path("flagtail.yaml");
    std::fs::write(&path, text).unwrap();
    (path, sock)
}

/// Waits until the socket accepts connections.
async fn connect(sock: &Path) -> UnixStream {
    eventually(|| {
        std::os::unix::net::UnixStream::connect(sock)
            .map(drop)
            .map_err(|e| format!("{}: {e}", sock.display()))
    })
    .await;
    UnixStream::connect(sock).await.unwrap()
}

/// Sends `text`, ends the writing side, and returns flagtail's answer.
async fn send(sock: &Path, text: &str) -> String {
    let mut c = connect(sock).await;
    c.write_all(text.as_bytes()).await.unwrap();
    c.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, c.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    answer
}

fn lines(range: std::ops::Range<usize>) -> String {
    range.map(|i| flipt_line(i, Encoding::Json).0).collect()
}

/// Bytes the journal's segments hold.
fn journal_bytes(s: &Setup) -> u64 {
    std::fs::read_dir(s.state().join("journal/local"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_at_once_every_line_arrives_once() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (config, sock) = socket_config(&s, "", &webhook_sink(&rx.url("/"), "    concurrency: 4\n"));
    let mut ft = Flagtail::start(&config);
    connect(&sock).await;
    let mut clients = Vec::new();
    for c in 0..8 {
        let sock = sock.clone();
        clients.push(tokio::spawn(async move {
            // Each client writes its lines in small pieces, cut mid-line.
            let text = lines(c * 50..(c + 1) * 50);
            let mut conn = connect(&sock).await;
            for piece in text.as_bytes().chunks(97) {
                conn.write_all(piece).await.unwrap();
            }
            conn.shutdown().await.unwrap();
            let mut answer = String::new();
            conn.read_to_string(&mut answer).await.unwrap();
            answer
        }));
    }
    for c in clients {
        assert_eq!(c.await.unwrap(), "ok 50\n");
    }
    wait_keys(flag_keys(0..400), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
    let seen = counts(delivered_keys(&rx));
    assert_eq!(seen.len(), 400);
    assert!(seen.values().all(|n| *n == 1), "delivered more than once");
    let keys: Vec<String> = rx
        .delivered()
        .iter()
        .map(|r| r.header("idempotency-key").to_string())
        .collect();
    assert!(keys[0].starts_with("local-j"), "journal keys: {}", keys[0]);
    assert_eq!(counts(keys).len(), 400, "one key per event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_line_loses_only_that_line() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (config, sock) = socket_config(
        &s,
        "max_line_bytes: 1024\n",
        &webhook_sink(&rx.url("/"), ""),
    );
    let mut ft = Flagtail::start(&config);
    let long = format!("{}\n", "x".repeat(5000));
    let answer = send(
        &sock,
        &format!(
            "{}{long}{}{{\"version\": \"0.2\", \"ty",
            lines(0..2),
            lines(2..3)
        ),
    )
    .await;
    assert_eq!(answer, "ok 3\n");
    wait_keys(flag_keys(0..3), || delivered_keys(&rx)).await;
    let rejected = eventually(|| match s.state_lines("rejected/local.jsonl") {
        r if r.len() == 2 => Ok(r),
        r => Err(format!("{} rejected", r.len())),
    })
    .await;
    assert!(ft.terminate().await.success());
    assert_eq!(rejected[0]["reason"], "too_long");
    assert_eq!(rejected[1]["reason"], "not_an_event");
    assert!(
        rejected[1]["detail"]
            .as_str()
            .unwrap()
            .contains("disconnected")
    );
    assert_eq!(rejected[1]["line"], "{\"version\": \"0.2\", \"ty");
    assert_eq!(rx.delivered().len(), 3);
}

/// Sends lines `0..n` to a flagtail whose receiver refuses them all (and would retry for a
/// minute), checks the answer `ok n`, and kills it with -9: the lines exist only in the journal.
/// The receiver then takes everything. Returns it, the setup (kept alive), config and socket.
async fn acknowledged_then_killed(n: usize) -> (Receiver, Setup, PathBuf, PathBuf) {
    let rx = Receiver::start().await;
    rx.plan(|_| Reply::Status(503));
    let s = Setup::new();
    let (config, sock) = socket_config(
        &s,
        "",
        &webhook_sink(&rx.url("/"), "    max_backoff_duration: 60s\n"),
    );
    let mut ft = Flagtail::start(&config);
    assert_eq!(send(&sock, &lines(0..n)).await, format!("ok {n}\n"));
    ft.kill_9().await;
    rx.plan(|_| Reply::Status(200));
    (rx, s, config, sock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_the_socket_acknowledged_loses_nothing() {
    let (rx, _s, config, sock) = acknowledged_then_killed(20).await;
    assert!(
        std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_socket(),
        "kill -9 leaves the socket behind"
    );
    // The stale socket is replaced, and the journal read from the start.
    let mut ft = Flagtail::start(&config);
    assert_eq!(send(&sock, &lines(20..25)).await, "ok 5\n");
    wait_keys(flag_keys(0..25), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
    assert!(!sock.exists(), "the socket is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_read_on_while_its_lines_are_fsynced_is_told_only_what_is_durable_in_order() {
    // About 700 KB in one go: a dozen reads, several of them with the journal's writer at once.
    let n = 2000;
    let (rx, _s, config, _sock) = acknowledged_then_killed(n).await;
    let mut ft = Flagtail::start(&config);
    wait_keys(flag_keys(0..n), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
    // One client's lines keep their order through the journal (one delivery at a time here).
    let mut seen = std::collections::HashSet::new();
    let order: Vec<String> = delivered_keys(&rx)
        .into_iter()
        .filter(|k| !k.is_empty() && seen.insert(k.clone()))
        .collect();
    assert_eq!(order, flag_keys(0..n).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_holds_the_client_back_then_drains_and_shrinks() {
    let rx = Receiver::start().await;
    rx.plan(|_| Reply::Status(503));
    let s = Setup::new();
    let (config, sock) = socket_config(
        &s,
        "max_line_bytes: 1024\njournal: {max_bytes: 4KiB}\n",
        &webhook_sink(
            &rx.url("/"),
            "    max_backoff_duration: 60s\n    initial_backoff: 20ms\n",
        ),
    );
    let mut ft = Flagtail::start(&config);
    connect(&sock).await;
    let client = {
        let sock = sock.clone();
        tokio::spawn(async move { send(&sock, &lines(0..100)).await })
    };
    // The journal fills up to its bound and stays there: the client gets no answer yet.
    eventually(|| match journal_bytes(&s) {
        n if n > 3000 => Ok(()),
        n => Err(format!("journal holds {n} bytes")),
    })
    .await;
    assert!(journal_bytes(&s) <= 4096, "bounded: {}", journal_bytes(&s));
    assert!(
        !client.is_finished(),
        "lines not yet journaled are not acknowledged"
    );
    // The receiver comes back: everything drains, nothing is lost, and segments are deleted.
    rx.plan(|_| Reply::Status(200));
    assert_eq!(client.await.unwrap(), "ok 100\n");
    wait_keys(flag_keys(0..100), || delivered_keys(&rx)).await;
    eventually(|| match journal_bytes(&s) {
        n if n < 2048 => Ok(()),
        n => Err(format!("journal still holds {n} bytes after delivery")),
    })
    .await;
    assert!(ft.terminate().await.success());
    let seen = counts(delivered_keys(&rx));
    assert_eq!(seen.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_refuses_to_replace_a_file_and_survives_a_reload() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (config, sock) = socket_config(&s, "", &webhook_sink(&rx.url("/a"), ""));
    // A path that is not a socket is never replaced.
    std::fs::write(&sock, "precious").unwrap();
    let (code, _, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sources.0.socket") && err.contains("not a socket"),
        "{err}"
    );
    let mut ft = Flagtail::start(&config);
    assert_ne!(ft.wait().await.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");
    std::fs::remove_file(&sock).unwrap();

    let mut ft = Flagtail::start(&config);
    assert_eq!(send(&sock, &lines(0..1)).await, "ok 1\n");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second daemon cannot take over the socket (nor the state directory).
    let mut other = Flagtail::start(&config);
    assert_eq!(other.wait().await.code(), Some(2));
    // A reload keeps the listener: the same socket, still served, with the new sink.
    let (config, _) = socket_config(&s, "", &webhook_sink(&rx.url("/b"), ""));
    let _ = config;
    ft.signal("HUP");
    ft.wait_log("config reloaded").await;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().ino(),
        meta.ino(),
        "not rebound"
    );
    assert_eq!(send(&sock, &lines(1..2)).await, "ok 1\n");
    let got = rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    assert_eq!((got[0].path.as_str(), got[1].path.as_str()), ("/a", "/b"));
}

#[test]
fn render_reads_lines_as_a_socket_source_would() {
    let s = Setup::new();
    let (config, _) = socket_config(&s, "", "  - {name: out, type: stdout}\n");
    let input = s.path("input.jsonl");
    std::fs::write(&input, format!("{}not json\n", lines(0..1))).unwrap();
    let (code, out, err) = run_cmd(&[
        "render",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        "out",
        "--source",
        "local",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let out: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out[0]["body"], flipt_line(0, Encoding::Json).1);
    assert!(out[1]["rejected"].as_str().unwrap().contains("not JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connected_through_a_reload_is_told_what_was_journaled() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (config, sock) = socket_config(&s, "", &webhook_sink(&rx.url("/"), ""));
    let mut ft = Flagtail::start(&config);
    let mut conn = connect(&sock).await;
    conn.write_all(lines(0..3).as_bytes()).await.unwrap();
    rx.wait_delivered(3).await;
    ft.signal("HUP");
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, conn.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(answer, "ok 3\n");
    ft.wait_log("config reloaded").await;
    assert_eq!(send(&sock, &lines(3..4)).await, "ok 1\n");
    rx.wait_delivered(4).await;
    assert!(ft.terminate().await.success());
}
