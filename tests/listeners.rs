//! The HTTP listeners (ingest and admin) against hostile and unusual clients: idle connections,
//! half-closing senders, HTTP/2 prior knowledge, compressed bodies. The real binary, real TCP on
//! loopback.

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "tok-idle";

/// A daemon with the admin endpoint and an http source `hooks` (token [`TOKEN`]) posting to `rx`:
/// (daemon, admin port, ingest port).
async fn start(s: &Setup, rx: &Receiver) -> (Flagtail, u16, u16) {
    start_with(s, rx, "").await
}

/// [`start`], with more keys (`, key: value`) for the source.
async fn start_with(s: &Setup, rx: &Receiver, keys: &str) -> (Flagtail, u16, u16) {
    let (admin, ingest) = (free_port(), free_port());
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nshutdown_grace: 2s\nsources:\n\
             \x20 - {{name: hooks, http: \"127.0.0.1:{ingest}\", auth_token: {TOKEN}, format: flipt{keys}}}\n\
             sinks:\n{}",
            s.state().display(),
            webhook_sink(&rx.url("/"), "")
        ),
    )
    .unwrap();
    let ft = Flagtail::start(&config);
    eventually(|| match admin_get(admin, "/readyz") {
        Ok((200, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    (ft, admin, ingest)
}

/// Sends `request` on a fresh connection, shuts the write side if `half_close`, and reads the
/// answer to its end: (status, whole answer).
async fn exchange(port: u16, request: &[u8], half_close: bool) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(request).await.unwrap();
    if half_close {
        conn.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn post(body: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    post_with(body.as_bytes(), connection)
}

/// A POST with the token, `headers` (each line ending in CRLF) and `body`.
fn post_with(body: &[u8], headers: &str) -> Vec<u8> {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: flagtail\r\nAuthorization: Bearer {TOKEN}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: flagtail\r\nConnection: close\r\n\r\n").into_bytes()
}

fn event(i: usize) -> String {
    flipt_line(i, Encoding::Json).0.trim_end().to_string()
}

/// Opens `n` connections to `port` that never finish a request head: most send nothing, every
/// fourth sends half a request line.
async fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 4 == 0 {
            conn.write_all(b"POST / HT").await.unwrap();
        }
        held.push(conn);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_take_no_slot_probes_and_posts_answer_within_a_second() {
    // This process holds thousands of sockets too.
    flagtail::listen::raise_open_files(0);
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (mut ft, admin, ingest) = start(&s, &rx).await;
    // More than a listener's 1,024 connections, on each: the oldest idle ones make room.
    let _held_admin = idle_connections(admin, 1100).await;
    let _held_ingest = idle_connections(ingest, 1100).await;
    for round in 0..5 {
        for path in ["/healthz", "/readyz"] {
            let began = Instant::now();
            let (status, answer) = exchange(admin, &get(path), false).await;
            let took = began.elapsed();
            assert_eq!(status, 200, "{path}: {answer}");
            assert!(
                took < Duration::from_secs(1),
                "{path} round {round}: {took:?}"
            );
        }
        let began = Instant::now();
        let (status, answer) = exchange(ingest, &post(&event(round), true), false).await;
        let took = began.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert!(
            took < Duration::from_secs(1),
            "POST round {round}: {took:?}"
        );
    }
    wait_keys(flag_keys(0..5), || delivered_keys(&rx)).await;
    // A connection that sends nothing is closed after a few seconds, not held.
    let mut idle = TcpStream::connect(("127.0.0.1", ingest)).await.unwrap();
    let began = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection still open after {:?}",
        began.elapsed()
    );
    // Connections that have sent nothing yet do not hold up a shutdown.
    let _fresh = idle_connections(ingest, 100).await;
    let _fresh_admin = idle_connections(admin, 100).await;
    let began = Instant::now();
    assert!(ft.terminate().await.success());
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_half_closes_gets_its_answer() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (mut ft, admin, ingest) = start(&s, &rx).await;
    // As `nc -N` and socat do: the request, then the write side shut.
    let (status, answer) = exchange(ingest, &post(&event(0), false), true).await;
    assert_eq!(status, 200, "{answer:?}");
    assert!(answer.ends_with("{\"accepted\":1}"), "{answer}");
    // Refusals too.
    let refused = b"POST / HTTP/1.1\r\nHost: flagtail\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(exchange(ingest, refused, true).await.0, 401);
    let (status, answer) = exchange(admin, &get("/healthz"), true).await;
    assert_eq!(status, 200, "{answer:?}");
    // A head too long to buffer is refused, not held.
    let long = format!(
        "GET /healthz HTTP/1.1\r\nHost: f\r\nX-Long: {}\r\n\r\n",
        "x".repeat(40 * 1024)
    );
    assert_eq!(exchange(admin, long.as_bytes(), false).await.0, 431);
    wait_keys(flag_keys(0..1), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
}

/// Sends HTTP/2's preface and an empty SETTINGS frame to `port`: what came back, until closed.
async fn speak_http2(port: u16) -> (Vec<u8>, u16) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let local = conn.local_addr().unwrap().port();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut out))
        .await
        .expect("the connection closed in time")
        .unwrap();
    (out, local)
}

/// The frames of an HTTP/2 byte stream: (type, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        let payload = bytes[9..].get(..len).expect("a whole frame").to_vec();
        out.push((bytes[3], stream, payload));
        bytes = &bytes[9 + len..];
    }
    assert!(bytes.is_empty(), "trailing bytes: {bytes:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_gets_goaway_http_1_1_required_and_a_warning() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (mut ft, admin, ingest) = start(&s, &rx).await;
    for port in [ingest, admin] {
        let (answer, peer) = speak_http2(port).await;
        let frames = frames(&answer);
        assert_eq!(frames[0].0, 0x4, "SETTINGS first: {frames:?}");
        let (_, stream, goaway) = frames
            .iter()
            .find(|f| f.0 == 0x7)
            .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
        assert_eq!(*stream, 0);
        assert_eq!(goaway[4..8], [0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
        assert!(String::from_utf8_lossy(&goaway[8..]).contains("HTTP/1.1"));
        ft.wait_log(&format!("127.0.0.1:{peer}")).await;
    }
    let log = ft.stderr();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("HTTP/2")).collect();
    assert_eq!(warned.len(), 2, "{log}");
    assert!(warned.iter().all(|l| l.contains("WARN")), "{warned:?}");
    assert!(
        warned[0].contains("hooks") && warned[1].contains("admin"),
        "{warned:?}"
    );
    // The listeners still serve HTTP/1.1.
    assert_eq!(exchange(admin, &get("/healthz"), false).await.0, 200);
    assert!(ft.terminate().await.success());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_deflate_bodies_are_decoded_within_max_body_bytes_and_other_codings_get_415() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (mut ft, _, ingest) = start_with(&s, &rx, ", max_body_bytes: 4096").await;
    let send = |body: Vec<u8>, coding: &'static str| async move {
        let headers = format!("Content-Encoding: {coding}\r\nConnection: close\r\n");
        exchange(ingest, &post_with(&body, &headers), false).await
    };
    let ndjson = format!("{}\n{}\n", event(0), event(1));
    let (status, answer) = send(gzip(ndjson.as_bytes()), "gzip").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("{\"accepted\":2}"), "{answer}");
    let (status, answer) = send(zlib(format!("[{}]", event(2)).as_bytes()), "deflate").await;
    assert!(answer.ends_with("{\"accepted\":1}"), "{status} {answer}");
    // Small on the wire, over max_body_bytes decoded.
    let padded = format!("[{}{}]", event(9), " ".repeat(8192));
    let bomb = gzip(padded.as_bytes());
    assert!(bomb.len() < 4096);
    let (status, answer) = send(bomb, "gzip").await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer.contains("decoded body is over max_body_bytes"),
        "{answer}"
    );
    // Another coding: 415 naming it, before any body is read.
    let (status, answer) = send(event(9).into_bytes(), "br").await;
    assert_eq!(status, 415, "{answer}");
    assert!(answer.contains("\\\"br\\\""), "{answer}");
    // Said to be gzip, but is not: 400, recorded as rejected with the bytes as sent.
    let (status, answer) = send(event(9).into_bytes(), "gzip").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("gzip body does not decode"), "{answer}");
    wait_keys(flag_keys(0..3), || delivered_keys(&rx)).await;
    let rejected = s.state_lines("rejected/hooks.jsonl");
    assert!(ft.terminate().await.success());
    assert_eq!(rx.delivered().len(), 3, "nothing refused was delivered");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0]["detail"].as_str().unwrap().contains("gzip"));
    assert_eq!(rejected[0]["line"].as_str(), Some(event(9).as_str()));
}
