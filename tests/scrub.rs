//! A receiver's words never carry a secret out: receivers that echo the request they got (its
//! request line and headers, as sent and as JSON) in a 400 and in 503s are quoted in the log, the
//! dead letters, `/status.json`, the status page and `flagtail status` with every configured
//! secret masked, in every form it was sent in.

mod support;

use base64::Engine;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "pa55-w0rd-Zq9?";
const API_KEY: &str = "key-7f3a9c2e51";
const PATH_TOKEN: &str = "T0K3N-b1d8e6";
const QUERY_TOKEN: &str = "qtok-a8c4e2f0";

/// A receiver on 127.0.0.1 answering every request with `status` and a body that echoes the
/// request's head as it came, then its headers as JSON (with `/` written `\/`, as PHP does).
async fn echoing(status: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = Vec::new();
                while let Some(head) = request(&mut io, &mut read).await {
                    let headers: serde_json::Map<String, serde_json::Value> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(": "))
                        .map(|(k, v)| (k.to_string(), v.into()))
                        .collect();
                    let json = serde_json::Value::Object(headers).to_string();
                    let body = format!("{head}\n{}", json.replace('/', "\\/"));
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if io.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Reads one request: its head (the body is read and dropped); `None` once the client is gone.
async fn request(io: &mut TcpStream, read: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&read[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            while read.len() < end + 4 + len {
                if io.read_buf(read).await.ok()? == 0 {
                    return None;
                }
            }
            read.drain(..end + 4 + len);
            return Some(head);
        }
        if io.read_buf(read).await.ok()? == 0 {
            return None;
        }
    }
}

/// A webhook sink `name` to `port` carrying every kind of secret: URL user info (sent as Basic
/// auth), a token in the path and one in the query, and a header value.
fn secret_sink(name: &str, port: u16, extra: &str) -> String {
    let password = PASSWORD.replace('?', "%3F");
    let url =
        format!("'http://bot:{password}@127.0.0.1:{port}/hooks/{PATH_TOKEN}?token={QUERY_TOKEN}'");
    let extra = format!("    headers: {{X-Api-Key: {API_KEY}}}\n{extra}");
    webhook_sink(&url, &extra).replace("name: hook", &format!("name: {name}"))
}

/// Turns the admin endpoint of `config` on, on `port`.
fn admin_on(config: &std::path::Path, port: u16) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "admin: {listen: \"\"}",
        &format!("admin: {{listen: \"127.0.0.1:{port}\"}}"),
    );
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_echoed_by_a_receiver_are_masked_wherever_its_words_are_shown() {
    let (refusing, busy) = (echoing("400 Bad Request").await, echoing("503 Busy").await);
    let s = Setup::new();
    let port = free_port();
    let sinks = secret_sink("refused", refusing, "")
        + &secret_sink("busy", busy, "    max_backoff_duration: 1s\n");
    let config = s.config(&sinks);
    admin_on(&config, port);
    s.write_lines(0..2, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    wait_dead_letters(&s, "refused", 2).await;
    // A 503 is not a refusal: the busy sink goes down, its last error quoting the receiver.
    ft.wait_log("sink is down").await;
    let (_, status) = eventually(|| admin_get(port, "/status.json")).await;
    let (_, page) = admin_get(port, "/").unwrap();
    let (code, table, err) = run_cmd(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 0, "{err}");
    assert!(ft.terminate().await.success());

    let letters = |sink: &str| {
        std::fs::read_to_string(s.state().join(format!("dead-letter/{sink}.jsonl"))).unwrap()
    };
    // The receivers' words are there, quoted, with the secrets masked.
    let refused = &dead_reasons(&s, "refused")[0];
    for quoted in [
        "400 Bad Request: POST *** HTTP/1.1",
        "x-api-key: ***",
        "authorization: Basic ***",
    ] {
        assert!(refused.contains(quoted), "{quoted} not in {refused}");
    }
    let busy: serde_json::Value = serde_json::from_str(&status).unwrap();
    let busy = busy["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "busy")
        .unwrap();
    assert_eq!(busy["state"], "down", "{busy}");
    let busy_reason = busy["last_error"]["reason"].as_str().unwrap();
    assert!(
        busy_reason.contains("503 Service Unavailable: POST *** HTTP/1.1"),
        "{busy_reason}"
    );
    assert!(status.contains("503 Service Unavailable"), "{status}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot:{PASSWORD}"));
    let json_basic = basic.replace('/', "\\/");
    for (place, text) in [
        ("the log", ft.stderr()),
        ("refused's dead letters", letters("refused")),
        ("/status.json", status),
        ("the status page", page),
        ("flagtail status", table),
    ] {
        for secret in [
            PASSWORD,
            &basic,
            &json_basic,
            API_KEY,
            PATH_TOKEN,
            QUERY_TOKEN,
        ] {
            assert!(!text.contains(secret), "{secret} in {place}:\n{text}");
        }
    }
}
