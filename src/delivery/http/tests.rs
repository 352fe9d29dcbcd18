//! The transport against receivers on 127.0.0.1 that answer with raw bytes from a script.

use super::request::MAX_RESPONSE_BODY;
use super::response::MAX_INTERIM;
use super::*;
use crate::sink::Output;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A receiver on 127.0.0.1 that answers the requests on its Nth connection with the raw
/// answers of `script[N]`, one per request, then closes that connection. Reports each
/// request (its head and body) and each closed connection.
struct Receiver {
    port: u16,
    heard: mpsc::UnboundedReceiver<Heard>,
}

#[derive(Debug, PartialEq)]
enum Heard {
    Request {
        connection: usize,
        head: String,
        body: Vec<u8>,
    },
    Closed(usize),
    /// Bytes went out unasked after an answer.
    Extra(usize),
}

impl Receiver {
    async fn start(script: Vec<Vec<&'static str>>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tell, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (connection, answers) in script.into_iter().enumerate() {
                let (mut io, _) = listener.accept().await.unwrap();
                let tell = tell.clone();
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    for answer in answers {
                        let Some((head, body)) = read_request(&mut io, &mut read).await else {
                            break;
                        };
                        let _ = tell.send(Heard::Request {
                            connection,
                            head,
                            body,
                        });
                        // `ANSWER|EXTRA|MORE`: MORE goes out after ANSWER, unasked;
                        // `ANSWER|RST|`: the connection is reset after ANSWER.
                        let (answer, extra) = match answer.split_once("|EXTRA|") {
                            Some((answer, extra)) => (answer, Some(extra)),
                            None => (answer, None),
                        };
                        let (answer, reset) = match answer.strip_suffix("|RST|") {
                            Some(answer) => (answer, true),
                            None => (answer, false),
                        };
                        if io.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                        if reset {
                            // Linger 0 resets at once: nothing blocks on drop.
                            #[allow(deprecated)]
                            io.set_linger(Some(Duration::ZERO)).unwrap();
                            break;
                        }
                        if let Some(extra) = extra {
                            io.write_all(extra.as_bytes()).await.unwrap();
                            let _ = tell.send(Heard::Extra(connection));
                        }
                    }
                    drop(io);
                    let _ = tell.send(Heard::Closed(connection));
                });
            }
        });
        Receiver { port, heard }
    }

    /// A webhook sink sending to this receiver.
    fn hook(&self) -> Box<Webhook> {
        hook_to(self.port, "")
    }

    async fn next(&mut self) -> Heard {
        self.heard.recv().await.unwrap()
    }
}

/// A webhook sink sending to port `port` on 127.0.0.1, with `extra` keys.
fn hook_to(port: u16, extra: &str) -> Box<Webhook> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagtail.yaml");
    let yaml = format!(
        "sources: [{{name: s, file: {}/a.log}}]\nsinks: [{{name: r, url: 'http://127.0.0.1:{port}/in?x=1', signing_secret: s3cret{extra}}}]\n",
        dir.path().display(),
    );
    std::fs::write(&path, yaml).unwrap();
    let config = crate::config::Config::load(&path).unwrap();
    let sink = crate::sink::Sink::build(0, &config.file.sinks[0]).unwrap();
    match sink.output {
        Output::Webhook(hook) => hook,
        _ => unreachable!(),
    }
}

/// Reads one request (head to the blank line, then its `content-length` bytes).
async fn read_request(io: &mut TcpStream, read: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(read[..end].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            while read.len() < end + 4 + len {
                if io.read_buf(read).await.ok()? == 0 {
                    return None;
                }
            }
            let body = read[end + 4..end + 4 + len].to_vec();
            read.drain(..end + 4 + len);
            return Some((head, body));
        }
        if io.read_buf(read).await.ok()? == 0 {
            return None;
        }
    }
}

/// What an attempt came to, short: `delivered`, `refused CODE: REASON`, `retry: REASON`.
fn said(attempt: Attempt) -> String {
    match attempt {
        Attempt::Delivered { .. } => "delivered".into(),
        Attempt::Refused {
            status,
            reason,
            retry_after,
        } => {
            format!("refused {status} {retry_after:?}: {reason}")
        }
        Attempt::Retry { reason } => format!("retry: {reason}"),
        Attempt::Final { reason, .. } => format!("final: {reason}"),
    }
}

/// Sends `n` requests over one worker's connection to a receiver answering as `script`
/// says; what each came to (as [`said`], without the `POST URL: ` of reasons).
async fn send_n(script: Vec<Vec<&'static str>>, n: usize) -> Vec<String> {
    let receiver = Receiver::start(script).await;
    let hook = receiver.hook();
    let mut conn = Connection::new(connector(None, None).unwrap());
    let mut got = Vec::new();
    for _ in 0..n {
        let said = said(conn.post(&hook, "k", 0, b"x").await);
        got.push(said.replace(&format!("POST {}: ", hook.shown), ""));
    }
    got
}

#[tokio::test]
async fn the_request_carries_its_signed_head_and_the_body_as_written() {
    let mut receiver = Receiver::start(vec![vec!["HTTP/1.1 204 No Content\r\n\r\n"]]).await;
    let hook = receiver.hook();
    let mut conn = Connection::new(connector(None, None).unwrap());
    let body = br#"{"a":1}"#;
    assert_eq!(said(conn.post(&hook, "s-k-1", 7, body).await), "delivered");
    let Heard::Request {
        head, body: got, ..
    } = receiver.next().await
    else {
        panic!("no request");
    };
    assert_eq!(got, body);
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "POST /in?x=1 HTTP/1.1");
    let sig = crate::hex::encode(
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret"),
            body,
        )
        .as_ref(),
    );
    for want in [
        format!("host: 127.0.0.1:{}", receiver.port),
        "content-type: application/json".into(),
        "idempotency-key: s-k-1".into(),
        format!("x-flipt-webhook-signature: {sig}"),
        "content-length: 7".into(),
    ] {
        assert!(lines.contains(&want.as_str()), "{want} not in {head}");
    }
}

#[tokio::test]
async fn interim_and_chunked_answers_keep_the_connection_until_the_receiver_closes_it() {
    let mut receiver = Receiver::start(vec![
        vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
        ],
        vec!["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
    ])
    .await;
    let hook = receiver.hook();
    let mut conn = Connection::new(connector(None, None).unwrap());
    let mut connections = Vec::new();
    for _ in 0..2 {
        assert_eq!(said(conn.post(&hook, "k", 0, b"x").await), "delivered");
        match receiver.next().await {
            Heard::Request { connection, .. } => connections.push(connection),
            other => panic!("{other:?}"),
        }
    }
    // The receiver closes the first connection while it is idle: the next request goes out
    // on a new one, at its first attempt.
    assert_eq!(receiver.next().await, Heard::Closed(0));
    assert_eq!(said(conn.post(&hook, "k", 0, b"x").await), "delivered");
    match receiver.next().await {
        Heard::Request { connection, .. } => connections.push(connection),
        other => panic!("{other:?}"),
    }
    assert_eq!(connections, [0, 0, 1]);
}

#[tokio::test]
async fn connection_close_and_http_1_0_answers_are_not_kept() {
    // Were either connection reused, its second answer (a 500) would be read.
    let got = send_n(
        vec![
            vec![
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            ],
            vec![
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            ],
            vec!["HTTP/1.1 204 No Content\r\n\r\n"],
        ],
        3,
    )
    .await;
    assert_eq!(got, ["delivered"; 3]);
}

#[tokio::test]
async fn refusals_quote_their_body_and_broken_answers_are_retried() {
    let got = send_n(vec![
        vec!["HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n"],
        vec!["HTTP/1.1 503 Busy\r\nRetry-After: 7\r\n\r\nbusy"],
        vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
        vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"],
        vec!["SSH-2.0-OpenSSH_9.2\r\n\r\n"],
        vec!["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"],
        vec![""],
    ], 7)
    .await;
    assert_eq!(
        got,
        [
            "refused 400 None: 400 Bad Request: nope",
            "refused 503 Some(7s): 503 Service Unavailable: busy",
            "retry: 200 OK but the response was cut short: the connection closed 3 bytes before the body's end",
            "retry: 200 OK but the response was cut short: the connection closed 8 bytes before the body's end",
            "retry: the response is not HTTP/1.1: invalid HTTP version",
            "retry: the response's Content-Length is not one number",
            "retry: the connection closed before a response",
        ]
    );
}

#[tokio::test]
async fn a_long_answer_is_read_up_to_its_limit_and_its_connection_not_kept() {
    static LONG: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    let long = LONG.get_or_init(|| {
        let body = "y".repeat(MAX_RESPONSE_BODY * 4);
        Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    });
    let got = send_n(
        vec![
            vec![long, "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"],
            vec!["HTTP/1.1 204 No Content\r\n\r\n"],
        ],
        2,
    )
    .await;
    assert_eq!(got, ["delivered"; 2]);
}

#[test]
fn success_is_delivered_and_any_other_status_is_a_refusal_with_its_code() {
    let hook = hook_to(9, "");
    let kind = |code: u16| match classify(StatusCode::from_u16(code).unwrap(), None, b"", &hook) {
        Attempt::Delivered { .. } => 0,
        Attempt::Refused { status, .. } => status,
        _ => 1,
    };
    assert_eq!(kind(204), 0);
    for code in [301, 404, 408, 429, 501, 503] {
        assert_eq!(kind(code), code);
    }
}

#[test]
fn a_refusal_quoting_the_sinks_secrets_is_masked_before_it_is_cut() {
    let hook = hook_to(9, ", headers: {X-Api-Key: k-0123456789abcdef}");
    // The secret runs across the 200th character: cut first, its start would be quoted.
    let body = format!("{} k-0123456789abcdef", "x".repeat(195));
    let status = StatusCode::BAD_REQUEST;
    let Attempt::Refused { reason, .. } = classify(status, None, body.as_bytes(), &hook) else {
        panic!("not a refusal");
    };
    assert!(
        reason.ends_with("x ***") && !reason.contains("k-0"),
        "{reason}"
    );
    let short = classify(status, None, b"signed with s3cret.", &hook);
    assert!(
        matches!(&short, Attempt::Refused { reason, .. } if reason.ends_with("signed with ***.")),
        "{short:?}"
    );
}

#[test]
fn retry_after_seconds_and_dates() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let d = parse_retry_after(&soon).unwrap();
    assert!(
        d > Duration::from_secs(25) && d <= Duration::from_secs(30),
        "{d:?}"
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
}

#[tokio::test]
async fn bytes_sent_unasked_after_an_answer_are_never_taken_for_the_next_one() {
    // A stale 200 waits on the kept connection: the next request must go out on a new
    // connection, whose 503 is its answer.
    let mut receiver = Receiver::start(vec![
        vec!["HTTP/1.1 204 No Content\r\n\r\n|EXTRA|HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        vec!["HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"],
    ])
    .await;
    let hook = receiver.hook();
    let mut conn = Connection::new(connector(None, None).unwrap());
    assert_eq!(said(conn.post(&hook, "k", 0, b"x").await), "delivered");
    assert!(matches!(
        receiver.next().await,
        Heard::Request { connection: 0, .. }
    ));
    assert_eq!(receiver.next().await, Heard::Extra(0));
    assert!(said(conn.post(&hook, "k", 0, b"x").await).starts_with("refused 503"));
}

#[tokio::test]
async fn a_kept_http_1_0_connection_is_reused_and_odd_framing_is_not_kept() {
    let got = send_n(vec![
        vec![
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            // Both framings: read as chunks, and the connection is let go.
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        ],
        vec!["HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"],
    ], 3).await;
    assert_eq!(got, ["delivered"; 3]);
}

#[tokio::test]
async fn hostile_answers_end_the_attempt_with_a_reason() {
    static LONG: std::sync::OnceLock<[&'static str; 4]> = std::sync::OnceLock::new();
    let [head, interims, trailers, tiny] = *LONG.get_or_init(|| {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        [
            leak(format!(
                "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
                "a".repeat(70_000)
            )),
            leak("HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1)),
            leak(format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{}",
                "T: x\r\n".repeat(4000)
            )),
            leak(format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
                "1\r\nz\r\n".repeat(MAX_RESPONSE_BODY + 5)
            )),
        ]
    });
    let got = send_n(
        vec![
            vec![head],
            vec![interims],
            vec![trailers],
            vec!["HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nabcde\r\n0\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\nz\r\n0\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\n\r\nhalf an answer|RST|"],
            vec![tiny],
            vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0005\r\nabcde\r\n0\r\n\r\n"],
        ],
        9,
    )
    .await;
    assert_eq!(
        got,
        [
            "retry: the response head is over 64 KiB",
            "retry: more than 8 interim answers",
            "retry: 200 OK but the response was cut short: the trailers are over 16 KiB",
            "retry: the receiver switched protocols",
            "retry: 200 OK but the response was cut short: a chunk's size is not hex",
            "retry: 200 OK but the response was cut short: a line of the chunked body does not end in CRLF",
            "retry: 200 OK but the response was cut short: Connection reset by peer (os error 104)",
            // Kept up to the limit; the rest is not waited for.
            "delivered",
            "delivered",
        ]
    );
}
