//! The journal of socket and HTTP sources under damage and at its budget, end to end: the real
//! binary, real files cut, deleted or replaced on disk, real HTTP and Unix socket clients.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use support::*;

/// A config with one http source `hooks` on a fresh port (its extra keys in `source`), the
/// admin endpoint on another, and the webhook sink `hook` to `rx` (its extra keys in `sink`);
/// `top` adds top-level keys. The setup, the source's port, the admin port, the config.
fn hooks(rx: &Receiver, top: &str, source: &str, sink: &str) -> (Setup, u16, u16, PathBuf) {
    let s = Setup::new();
    let (port, admin) = (free_port(), free_port());
    let text = format!(
        "state_dir: {}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nshutdown_grace: 1s\n{top}\nsources:\n  - name: hooks\n    format: flipt\n    http: \"127.0.0.1:{port}\"\n{source}sinks:\n{}",
        s.state().display(),
        webhook_sink(&rx.url("/"), sink),
    );
    let path = s.path("flagtail.yaml");
    std::fs::write(&path, text).unwrap();
    (s, port, admin, path)
}

/// Writes `text` to a fresh connection made by `connect` (retried until it is accepted), ends
/// the writing side and returns the whole answer. Blocking, in a thread of its own.
async fn exchange<S, F>(connect: F, text: String) -> String
where
    S: Read + Write + Send + 'static,
    F: Fn() -> std::io::Result<(S, Box<dyn Fn(&S) + Send>)> + Send + 'static,
{
    let (mut conn, half_close) = eventually(|| connect().map_err(|e| e.to_string())).await;
    tokio::task::spawn_blocking(move || {
        conn.write_all(text.as_bytes()).unwrap();
        half_close(&conn);
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap()
}

/// POSTs `body` to the http source on `port`; the status.
async fn post(port: u16, body: &str) -> u16 {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: flagtail\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let connect = move || {
        let c = std::net::TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(PATIENCE))?;
        let close: Box<dyn Fn(&std::net::TcpStream) + Send> = Box::new(|_| {});
        Ok((c, close))
    };
    let answer = exchange(connect, request).await;
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Sends `text` to the socket source at `sock`; its answer (`ok N`).
async fn send(sock: &Path, text: String) -> String {
    let sock = sock.to_path_buf();
    let connect = move || {
        let c = std::os::unix::net::UnixStream::connect(&sock)?;
        c.set_read_timeout(Some(PATIENCE))?;
        let close: Box<dyn Fn(&std::os::unix::net::UnixStream) + Send> =
            Box::new(|c| drop(c.shutdown(std::net::Shutdown::Write)));
        Ok((c, close))
    };
    exchange(connect, text).await
}

/// Flipt line `i` (JSON encoding) with its newline: one POST body, one journal line.
fn line(i: usize) -> String {
    flipt_line(i, Encoding::Json).0
}

/// Where line `i` starts in the journal's stream, when lines 0.. were journaled in order from 0.
fn offset(i: usize) -> u64 {
    (0..i).map(|j| line(j).len() as u64).sum()
}

/// The journal's segments of source `name`: (base, path), oldest first.
fn segments(s: &Setup, name: &str) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(s.state().join("journal").join(name))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let base = e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok()?;
            Some((base, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The byte ranges of the journal gaps recorded in `rejected/SOURCE.jsonl`.
fn gaps(s: &Setup, source: &str) -> Vec<(u64, u64)> {
    s.state_lines(&format!("rejected/{source}.jsonl"))
        .iter()
        .filter(|r| r["reason"] == "journal_gap")
        .map(|r| (r["offset"].as_u64().unwrap(), r["end"].as_u64().unwrap()))
        .collect()
}

/// `flagtail_lines_rejected_total` of `source` for journal gaps, as the admin endpoint says.
fn gap_counter(admin: u16, source: &str) -> String {
    let (_, metrics) = admin_get(admin, "/metrics").unwrap();
    metrics
        .lines()
        .find(|l| {
            l.starts_with("flagtail_lines_rejected_total{")
                && l.contains(&format!("source=\"{source}\""))
                && l.contains("reason=\"journal_gap\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("none")
        .to_string()
}

/// Idempotency keys delivered so far.
fn idempotency_keys(rx: &Receiver) -> Vec<String> {
    let delivered = rx.delivered();
    delivered
        .iter()
        .map(|r| r.header("idempotency-key").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_segments_are_recorded_as_gaps_and_intake_stays_up_across_restarts() {
    let rx = Receiver::start().await;
    // Segments of 2 KiB: about nine lines each.
    let (s, port, admin, config) = hooks(
        &rx,
        "max_line_bytes: 1024\njournal: {max_bytes: 8KiB}\n",
        "    max_body_bytes: 1024\n",
        "    max_backoff_duration: 60s\n    timeout: 60s\n",
    );
    let mut ft = Flagtail::start(&config);
    for i in 0..5 {
        assert_eq!(post(port, &line(i)).await, 200);
    }
    wait_keys(flag_keys(0..5), || delivered_keys(&rx)).await;
    let id_key = idempotency_keys(&rx)[0].clone();
    // The receiver stalls (a queue that is not full is not a stall of the sink): the rest stays
    // in the journal (SIGTERM saves the checkpoint at 5).
    rx.plan(|_| Reply::Stall);
    for i in 5..30 {
        assert_eq!(post(port, &line(i)).await, 200);
    }
    assert!(ft.terminate().await.success());
    let segs = segments(&s, "hooks");
    assert_eq!(segs.len(), 4, "{segs:?}");
    // The oldest (the checkpoint points into it) deleted, the next replaced by a directory, the
    // third cut in the middle of a line; a stray file named like a segment; the id file lost.
    std::fs::remove_file(&segs[0].1).unwrap();
    std::fs::remove_file(&segs[1].1).unwrap();
    std::fs::create_dir(&segs[1].1).unwrap();
    let third = std::fs::read(&segs[2].1).unwrap();
    std::fs::write(&segs[2].1, &third[..third.len() / 2]).unwrap();
    std::fs::write(s.state().join("journal/hooks/stray.seg"), "{}\n").unwrap();
    std::fs::remove_file(s.state().join("journal/hooks/id")).unwrap();
    rx.plan(|_| Reply::Status(200));
    let ft = Flagtail::start(&config);
    assert_eq!(post(port, &line(30)).await, 200, "{}", ft.stderr());
    // Gaps: from the checkpoint to the third segment; from the line cut in the third to the fourth.
    let cut = segs[2].0 + third.len() as u64 / 2;
    let torn = (0..30).find(|i| offset(i + 1) > cut).unwrap();
    let want = [(offset(5), segs[2].0), (offset(torn), segs[3].0)];
    let lost = |i: usize| want.iter().any(|g| offset(i) < g.1 && g.0 < offset(i + 1));
    let kept: Vec<usize> = (5..31).filter(|i| !lost(*i)).collect();
    assert!(kept.len() >= 8 && kept.len() < 26, "{kept:?}");
    wait_keys(kept.iter().map(|i| format!("flag-{i}")), || {
        delivered_keys(&rx)
    })
    .await;
    eventually(|| match gaps(&s, "hooks") {
        g if g == want => Ok(()),
        g => Err(format!("gaps {g:?}, want {want:?}")),
    })
    .await;
    assert_eq!(gap_counter(admin, "hooks"), "2");
    assert_eq!(ft.stderr().matches("lost from the journal").count(), 2);
    let delivered = delivered_keys(&rx);
    assert!(
        (5..31)
            .filter(|i| lost(*i))
            .all(|i| !delivered.contains(&format!("flag-{i}")))
    );
    // The lost id was taken from the checkpoint: the keys are those of the same stream.
    let stream = id_key.rsplit_once('-').unwrap().0;
    let keys = idempotency_keys(&rx);
    let key = format!("{stream}-{}", offset(kept[0]));
    assert!(keys.contains(&key), "{key} not in {keys:?}");
    // A restart reads on from the checkpoint: no gap recorded again, intake up.
    let mut ft = ft;
    assert!(ft.terminate().await.success());
    let mut ft = Flagtail::start(&config);
    assert_eq!(post(port, &line(31)).await, 200);
    wait_keys(flag_keys(31..32), || delivered_keys(&rx)).await;
    assert_eq!(gaps(&s, "hooks"), want);
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segment_being_written_deleted_or_cut_while_running_loses_only_what_it_held() {
    let rx = Receiver::start().await;
    // Stalled: nothing is done with, so the checkpoint stays at the start.
    rx.plan(|_| Reply::Stall);
    let (s, port, admin, config) = hooks(
        &rx,
        "",
        "",
        "    max_backoff_duration: 60s\n    timeout: 60s\n",
    );
    let mut ft = Flagtail::start(&config);
    for i in 0..3 {
        assert_eq!(post(port, &line(i)).await, 200);
    }
    let segs = segments(&s, "hooks");
    assert_eq!(segs.len(), 1);
    std::fs::remove_file(&segs[0].1).unwrap();
    for i in 3..6 {
        assert_eq!(post(port, &line(i)).await, 200);
    }
    // The segment these went to is cut to nothing.
    let segs = segments(&s, "hooks");
    assert_eq!(segs.len(), 1, "{segs:?}");
    std::fs::File::create(&segs[0].1).unwrap();
    for i in 6..9 {
        assert_eq!(post(port, &line(i)).await, 200);
    }
    ft.kill_9().await;
    rx.plan(|_| Reply::Status(200));
    let mut ft = Flagtail::start(&config);
    // What was answered 200 after each damage is delivered; what the damage took is recorded.
    wait_keys(flag_keys(6..9), || delivered_keys(&rx)).await;
    let want = [(0, offset(3)), (offset(3), offset(6))];
    // Recorded by the restarted daemon; the daemon killed may have recorded one of them, or the
    // part of it past what it had read when the segment was cut, before.
    eventually(|| {
        let g = gaps(&s, "hooks");
        let within = |&(a, b): &(u64, u64)| want.iter().any(|&(x, y)| x <= a && b <= y && a < b);
        match g.ends_with(&want) && g.iter().all(within) {
            true => Ok(()),
            false => Err(format!("gaps {g:?}, want {want:?} last")),
        }
    })
    .await;
    assert_eq!(gap_counter(admin, "hooks"), "2");
    assert_eq!(post(port, &line(9)).await, 200);
    wait_keys(flag_keys(9..10), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_segment_deleted_while_stopped_is_a_gap_and_no_key_is_used_twice() {
    let rx = Receiver::start().await;
    // Stalled: the events stay in the journal, not yet done (not in the sink's backlog either).
    rx.plan(|_| Reply::Stall);
    let (s, port, admin, config) = hooks(
        &rx,
        "max_line_bytes: 1024\njournal: {max_bytes: 64KiB}\n",
        "    max_body_bytes: 1024\n",
        "    max_backoff_duration: 60s\n    timeout: 60s\n",
    );
    let mut ft = Flagtail::start(&config);
    for i in 0..3 {
        assert_eq!(post(port, &line(i)).await, 200);
    }
    let tried = rx.wait_attempts(1).await[0]
        .header("idempotency-key")
        .to_string();
    assert!(ft.terminate().await.success());
    let segs = segments(&s, "hooks");
    assert_eq!(segs.len(), 1);
    std::fs::remove_file(&segs[0].1).unwrap();
    rx.plan(|_| Reply::Status(200));
    let mut ft = Flagtail::start(&config);
    assert_eq!(post(port, &line(3)).await, 200);
    wait_keys(flag_keys(3..4), || delivered_keys(&rx)).await;
    // The segment held at most the whole journal: the stream goes on past that, under new keys.
    let want = [(0, 65536)];
    eventually(|| match gaps(&s, "hooks") {
        g if g == want => Ok(()),
        g => Err(format!("gaps {g:?}, want {want:?}")),
    })
    .await;
    assert_eq!(gap_counter(admin, "hooks"), "1");
    let stream = tried.rsplit_once('-').unwrap().0;
    assert_eq!(
        idempotency_keys(&rx).last().unwrap(),
        &format!("{stream}-65536")
    );
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_fits_the_journal_is_taken_once_what_came_before_is_delivered() {
    let rx = Receiver::start().await;
    // 4 KiB of journal: segments of 1 KiB.
    let (_s, port, _, config) = hooks(
        &rx,
        "max_line_bytes: 1024\njournal: {max_bytes: 4KiB}\n",
        "    max_body_bytes: 4095\n",
        "",
    );
    let mut ft = Flagtail::start(&config);
    assert_eq!(post(port, &line(0)).await, 200);
    wait_keys(flag_keys(0..1), || delivered_keys(&rx)).await;
    // More than the journal has left beside the delivered line, no more than max_body_bytes.
    let n = (1..)
        .find(|n| offset(n + 1) - offset(1) > 4096 - offset(1))
        .unwrap();
    let body: String = (1..n + 1).map(line).collect();
    assert!(body.len() <= 4095, "{} bytes", body.len());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match post(port, &body).await {
            200 => break,
            503 if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => panic!("answered {other}; log:\n{}", ft.stderr()),
        }
    }
    wait_keys(flag_keys(0..n + 1), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_line_that_fits_the_journal_is_taken_once_what_came_before_is_delivered() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let sock = s.path("in.sock");
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nmax_line_bytes: 4000\njournal: {{max_bytes: 4KiB}}\nsources:\n  - {{name: local, socket: {}, format: flipt}}\nsinks:\n{}",
            s.state().display(),
            sock.display(),
            webhook_sink(&rx.url("/"), "")
        ),
    )
    .unwrap();
    let mut ft = Flagtail::start(&config);
    assert_eq!(send(&sock, line(0)).await, "ok 1\n");
    wait_keys(flag_keys(0..1), || delivered_keys(&rx)).await;
    // One line of 3,900 bytes: more than the journal has left beside the delivered line.
    let pad = "x".repeat(3900 - line(1).len());
    let big = line(1).replace("\"name\":\"Flag 1\"", &format!("\"name\":\"Flag 1{pad}\""));
    assert_eq!(big.len(), 3900);
    assert_eq!(send(&sock, big).await, "ok 1\n", "{}", ft.stderr());
    wait_keys(flag_keys(0..2), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_body_or_line_limit_the_journal_cannot_hold() {
    let s = Setup::new();
    for (top, source, key) in [
        (
            "journal: {max_bytes: 4KiB}\nmax_line_bytes: 1024",
            "http: \"127.0.0.1:1\", max_body_bytes: 4096",
            "sources.0.max_body_bytes",
        ),
        (
            "journal: {max_bytes: 4KiB}\nmax_line_bytes: 4096",
            "socket: /tmp/x.sock",
            "journal.max_bytes",
        ),
    ] {
        let config = s.path("flagtail.yaml");
        std::fs::write(
            &config,
            format!(
                "state_dir: {}\n{top}\nsources:\n  - {{name: a, format: flipt, {source}}}\nsinks:\n  - {{name: out, type: stdout}}\n",
                s.state().display()
            ),
        )
        .unwrap();
        let (code, _, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(key), "{err}");
        assert_eq!(err.matches(": ").count(), 2, "only {key} is refused: {err}");
    }
}
