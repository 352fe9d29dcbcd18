//! `flagtail status [--admin ADDR]`: asks a running daemon's admin endpoint for `/status.json`
//! and prints it as tables, the same content as the status page.

use super::Failure;
use super::table;
use crate::admin::snapshot::Snapshot;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::time::Duration;

/// The admin address when neither `--admin` nor a config says one (SPEC §2's default).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches and prints the status of the daemon whose admin endpoint listens on `admin`.
pub async fn status(admin: &str) -> Result<(), Failure> {
    let addr = connect_address(admin)?;
    let snapshot = tokio::time::timeout(TIMEOUT, fetch(&addr))
        .await
        .map_err(|_| Failure::runtime(format!("{addr}: no answer within {TIMEOUT:?}")))??;
    print!("{}", render(&snapshot));
    Ok(())
}

/// Where to connect for an `admin.listen` value or `--admin`: `host:port`, with or without
/// `http://`; an unspecified address (`0.0.0.0`, `[::]`) is reached on loopback.
fn connect_address(admin: &str) -> Result<String, Failure> {
    let bare = admin
        .strip_prefix("http://")
        .unwrap_or(admin)
        .trim_end_matches('/');
    if bare.is_empty() {
        return Err(Failure::usage(
            "the admin endpoint is off (admin.listen is \"\"); give --admin ADDR",
        ));
    }
    let Some((host, port)) = bare.rsplit_once(':') else {
        return Err(Failure::usage(format!(
            "--admin {admin:?}: expected HOST:PORT"
        )));
    };
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    Ok(format!("{host}:{port}"))
}

async fn fetch(addr: &str) -> Result<Snapshot, Failure> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Failure::runtime(format!(
            "{addr}: {what}: {e} (is flagtail running with admin.listen {addr}?)"
        ))
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| failed("cannot connect", &e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failed("handshake", &e))?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/status.json")
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("request", &e))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), 16 << 20)
        .collect()
        .await
        .map_err(|e| failed("reading the answer", &e))?
        .to_bytes();
    if !status.is_success() {
        return Err(failed("/status.json", &status));
    }
    serde_json::from_slice(&body).map_err(|e| failed("not a flagtail status", &e))
}

/// The snapshot as the terminal shows it.
pub fn render(s: &Snapshot) -> String {
    let mut out = format!(
        "flagtail {}: {}, {}, {}, up {}\n",
        s.version,
        s.state,
        if s.healthy { "healthy" } else { "UNHEALTHY" },
        if s.ready { "ready" } else { "NOT READY" },
        humantime::format_duration(Duration::from_secs(s.uptime_seconds))
    );
    if let Some(dead) = &s.dead {
        out.push_str(&format!("died: {}\n", table::printable(dead)));
    }
    if !s.waiting_for.is_empty() {
        out.push_str(&format!(
            "waiting for sources: {}\n",
            s.waiting_for.join(", ")
        ));
    }
    out.push('\n');
    out.push_str(&sources_table(s));
    out.push('\n');
    out.push_str(&sinks_table(s));
    out
}

fn number(n: Option<u64>) -> String {
    n.map_or("-".to_string(), |n| n.to_string())
}

fn noted(n: &Option<crate::admin::snapshot::Noted>) -> String {
    n.as_ref()
        .map_or(String::new(), |n| format!("{} {}", n.time, n.reason))
}

/// The sources, one row each.
fn sources_table(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .sources
        .iter()
        .map(|src| {
            vec![
                src.name.clone(),
                src.kind.clone(),
                src.address.clone(),
                number(src.position),
                number(src.lag_bytes),
                src.lines_read.to_string(),
                src.rejected.to_string(),
                noted(&src.last_rejected),
            ]
        })
        .collect();
    let head = [
        "SOURCE",
        "KIND",
        "PATH/ADDRESS",
        "POSITION",
        "LAG",
        "READ",
        "REJECTED",
        "LAST REJECTED",
    ];
    table::render(&head, &rows, &[3, 4, 5, 6])
}

/// The sinks, one row each, with their state and what waits in their backlog.
fn sinks_table(s: &Snapshot) -> String {
    let rows: Vec<Vec<String>> = s
        .sinks
        .iter()
        .map(|k| {
            vec![
                k.name.clone(),
                k.state.clone(),
                k.backlog_events.to_string(),
                k.kind.clone(),
                k.target.clone(),
                k.delivered.to_string(),
                k.retries.to_string(),
                k.dead_letters_waiting.to_string(),
                k.backoff.as_ref().map_or("-".into(), |b| b.to_string()),
                noted(&k.last_error),
            ]
        })
        .collect();
    let head = [
        "SINK",
        "STATE",
        "BACKLOG",
        "KIND",
        "TARGET",
        "DELIVERED",
        "RETRIES",
        "DEAD LETTERS",
        "BACKOFF",
        "LAST ERROR",
    ];
    table::render(&head, &rows, &[2, 5, 6, 7])
}

#[cfg(test)]
mod tests {
    #[test]
    fn admin_addresses_are_reached_on_loopback_when_unspecified() {
        let at = |a| super::connect_address(a).map_err(|f| f.message);
        assert_eq!(at("0.0.0.0:9464").unwrap(), "127.0.0.1:9464");
        assert_eq!(at("http://[::]:80/").unwrap(), "[::1]:80");
        assert_eq!(at("10.0.0.2:9").unwrap(), "10.0.0.2:9");
        assert!(at("").unwrap_err().contains("off"));
        assert!(at("nope").unwrap_err().contains("HOST:PORT"));
    }
}
