//! End to end: the real binary follows a file and POSTs to a hyper receiver inside this bench.
//!
//! `cargo bench --bench e2e` runs three measurements, one after another:
//! - per event: `--events` Flipt lines (default 100,000) already in the file, one signed POST
//!   each, 4 in flight; the clock runs from spawning flagtail until the receiver has them all;
//! - batched: ten times as many lines, 500 events per POST;
//! - latency: lines appended at `--rate` lines/s (default 1,000 and 10,000) for `--seconds`
//!   (default 5), each stamped with the time it was written; the receiver takes the stamp out of
//!   the body it gets, so p50 / p99 / max are from append to receipt, on one clock.
//!
//! Each prints events/s (the latency runs: what arrived of what was sent), flagtail's CPU per
//! million events (user + system, from `/proc`) and its peak RSS (`VmHWM`). The receiver
//! answers 204 and runs on one thread, like the shared script's nginx. Ratios against another
//! shipper are the shared script's job (`../shared/bench/vs-syslog-ng.py`); this one needs
//! nothing but the crate.
//!
//! Options (after `--`): `--events N`, `--rate R` (repeatable), `--seconds S`. `BENCH_KEEP=N` in
//! the environment sets `attempts.keep` (default 1000; 0 measures without the attempt log).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_flagtail");
/// Marks the flag key of every event; the receiver counts events by it.
const MARK: &[u8] = b"\"key\":\"e";

/// One Flipt audit line whose flag key is `e<stamp>`.
fn line(stamp: u64, i: u64) -> String {
    format!(
        concat!(
            r#"{{"version":"0.2","type":"flag","action":"updated","status":"success","#,
            r#""metadata":{{"actor":{{"authentication":"token","email":"dev{}@example.com","#,
            r#""ip":"10.0.0.{}","name":"Dev"}}}},"payload":{{"description":"e2e bench flag","#,
            r#""enabled":true,"key":"e{}","name":"Flag {}","namespace_key":"default"}},"#,
            r#""timestamp":"2026-11-23T06:00:00Z"}}"#,
            "\n"
        ),
        i % 50,
        i % 250,
        stamp,
        i
    )
}

/// What the receiver saw: events counted, and (latency runs) each event's append-to-receipt time.
struct Seen {
    events: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
    changed: Notify,
    /// The clock the writer stamps lines with.
    epoch: Instant,
    /// Whether the keys are stamps to measure (latency runs) or just numbers.
    stamped: AtomicBool,
}

impl Seen {
    fn take(&self, body: &[u8]) {
        let now = self.epoch.elapsed().as_micros() as u64;
        let stamped = self.stamped.load(Ordering::Relaxed);
        let mut n = 0;
        let mut lat = Vec::new();
        for at in memchr::memmem::find_iter(body, MARK) {
            n += 1;
            let rest = &body[at + MARK.len()..];
            if stamped {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if let Some(stamp) = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|d| d.parse::<u64>().ok())
                {
                    lat.push(now.saturating_sub(stamp));
                }
            }
        }
        if !lat.is_empty() {
            self.latencies.lock().unwrap().extend(lat);
        }
        self.events.fetch_add(n, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn wait_for(&self, n: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if self.events.load(Ordering::SeqCst) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.events.load(Ordering::SeqCst) >= n;
            }
        }
    }
}

/// Starts the receiver on 127.0.0.1; its port.
async fn receiver(seen: Arc<Seen>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        seen.take(&body);
                        let mut answer = Response::new(Empty::<Bytes>::new());
                        *answer.status_mut() = StatusCode::NO_CONTENT;
                        Ok::<_, hyper::Error>(answer)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn config(dir: &Path, log: &Path, port: u16, batch: usize) -> PathBuf {
    let batch = match batch {
        1 => String::new(),
        n => format!("    batch: {{max_events: {n}, linger: 100ms}}\n"),
    };
    let path = dir.join("flagtail.yaml");
    std::fs::write(
        &path,
        format!(
            r#"state_dir: {state}
admin: {{listen: ""}}
log: {{level: warn}}
attempts: {{keep: {keep}}}
sources:
  - name: bench
    file: {log}
    format: flipt
    read_from: beginning
sinks:
  - name: receiver
    url: http://127.0.0.1:{port}/
    signing_secret: bench-secret
    concurrency: 4
{batch}"#,
            state = dir.join("state").display(),
            log = log.display(),
            keep = std::env::var("BENCH_KEEP").unwrap_or("1000".into()),
        ),
    )
    .expect("config");
    path
}

/// flagtail's CPU seconds so far and its peak RSS in MiB.
fn usage(child: &Child) -> (f64, f64) {
    let pid = child.id();
    // SAFETY: sysconf only reads a constant of the system.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / tick)
        })
        .unwrap_or(f64::NAN);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let kib = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            kib.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0);
    (cpu, rss)
}

fn spawn(config: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flagtail runs")
}

fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a pid this bench spawned and has not yet waited for.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let _ = child.wait();
}

/// A run of `events` lines written before flagtail starts.
async fn throughput(seen: &Arc<Seen>, port: u16, name: &str, events: u64, batch: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("audit.log");
    let mut text = String::new();
    for i in 0..events {
        text.push_str(&line(i, i));
    }
    std::fs::write(&log, text).expect("log");
    let config = config(dir.path(), &log, port, batch);
    seen.stamped.store(false, Ordering::SeqCst);
    seen.events.store(0, Ordering::SeqCst);
    let start = Instant::now();
    let child = spawn(&config);
    let done = seen.wait_for(events, Duration::from_secs(600)).await;
    let secs = start.elapsed().as_secs_f64();
    let (cpu, rss) = usage(&child);
    stop(child);
    if !done {
        println!(
            "{name}: only {} of {events} events arrived",
            seen.events.load(Ordering::SeqCst)
        );
        return;
    }
    println!(
        "{name}: {events} events in {secs:.2} s, {:.0} events/s, CPU {:.1} s per 1M events, peak RSS {rss:.1} MiB",
        events as f64 / secs,
        cpu * 1e6 / events as f64,
    );
}

/// Lines appended at `rate` per second for `seconds`, each stamped with when it was written.
async fn latency(seen: &Arc<Seen>, port: u16, rate: u64, seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("audit.log");
    let mut file = std::fs::File::create(&log).expect("log");
    let config = config(dir.path(), &log, port, 1);
    seen.stamped.store(true, Ordering::SeqCst);
    seen.events.store(0, Ordering::SeqCst);
    let child = spawn(&config);
    // One line first, so start-up is not measured.
    let stamp = seen.epoch.elapsed().as_micros() as u64;
    file.write_all(line(stamp, 0).as_bytes()).expect("append");
    if !seen.wait_for(1, Duration::from_secs(30)).await {
        println!("latency at {rate}/s: the first line never arrived");
        stop(child);
        return;
    }
    seen.latencies.lock().unwrap().clear();
    let cpu_before = usage(&child).0;
    // A tick per millisecond, writing the lines due by then in one append.
    let start = tokio::time::Instant::now();
    let total = rate * seconds;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due > sent {
            let stamp = seen.epoch.elapsed().as_micros() as u64;
            let mut chunk = String::new();
            for i in sent..due {
                chunk.push_str(&line(stamp, i + 1));
            }
            file.write_all(chunk.as_bytes()).expect("append");
            sent = due;
        }
    }
    let arrived = seen.wait_for(total + 1, Duration::from_secs(30)).await;
    let (cpu, rss) = usage(&child);
    stop(child);
    let mut lat = std::mem::take(&mut *seen.latencies.lock().unwrap());
    lat.sort_unstable();
    let at = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)));
    let ms = |v: Option<&u64>| v.map_or(f64::NAN, |v| *v as f64 / 1000.0);
    println!(
        "latency at {rate}/s for {seconds} s: {}{} events, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, CPU {:.1} s per 1M events, peak RSS {rss:.1} MiB",
        lat.len(),
        if arrived { "" } else { " (not all arrived)" },
        ms(at(0.5)),
        ms(at(0.99)),
        ms(lat.last()),
        (cpu - cpu_before) * 1e6 / total as f64,
    );
}

fn main() {
    let mut events = 100_000u64;
    let mut rates = Vec::new();
    let mut seconds = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--events" => events = value().unwrap_or(events),
            "--rate" => rates.extend(value()),
            "--seconds" => seconds = value().unwrap_or(seconds),
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {}
        }
    }
    if rates.is_empty() {
        rates = vec![1_000, 10_000];
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let seen = Arc::new(Seen {
            events: AtomicU64::new(0),
            latencies: Default::default(),
            changed: Notify::new(),
            epoch: Instant::now(),
            stamped: Default::default(),
        });
        let port = receiver(seen.clone()).await;
        throughput(&seen, port, "per event", events, 1).await;
        throughput(&seen, port, "batched (500)", events * 10, 500).await;
        for rate in rates {
            latency(&seen, port, rate, seconds).await;
        }
    });
}
