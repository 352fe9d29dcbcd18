//! Shared test parts: a real HTTP(S) receiver on 127.0.0.1:0 that can be told how to answer, the
//! real flagtail binary as a child process, and Flipt audit lines.
#![allow(dead_code)]

pub mod kafka;
pub mod nats;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long any wait in a test may take before the test fails (a safety net, not a sync point).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the receiver answers a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with extra headers (e.g. `Retry-After`).
    StatusWith(u16, Vec<(&'static str, String)>),
    /// Close the connection without answering.
    Drop,
    /// Never answer (until the client gives up).
    Stall,
    /// A status after a wait: a slow receiver.
    After(Duration, u16),
}

type Plan = Box<dyn FnMut(&Received) -> Reply + Send>;

struct State {
    /// Every attempt, answered or not.
    attempts: Mutex<Vec<Received>>,
    /// Requests answered with 2xx: what a sender may consider delivered.
    delivered: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
    plan: Mutex<Plan>,
    /// Connections accepted.
    connections: std::sync::atomic::AtomicUsize,
}

/// A real HTTP(S) server on loopback.
pub struct Receiver {
    pub addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<State>,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Receiver {
    /// Plain HTTP, answering 200 to everything.
    pub async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    pub async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            attempts: Mutex::new(Vec::new()),
            delivered: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            plan: Mutex::new(Box::new(|_| Reply::Status(200))),
            connections: Default::default(),
        });
        let r = Receiver {
            addr,
            tls,
            state,
            tasks: Mutex::new(None),
        };
        r.serve(listener);
        r
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Decides the answer to every following request.
    pub fn plan(&self, plan: impl FnMut(&Received) -> Reply + Send + 'static) {
        *self.state.plan.lock().unwrap() = Box::new(plan);
    }

    /// Answers the first requests with `replies`, in order, and 200 after them.
    pub fn script(&self, replies: Vec<Reply>) {
        let mut replies = replies.into_iter();
        self.plan(move |_| replies.next().unwrap_or(Reply::Status(200)));
    }

    /// Starts an outage: `always` answers the requests it has an answer for, during the outage
    /// and after; every other request is answered 503 until [`Outage::end`], 200 after it.
    pub fn outage(&self, always: impl Fn(&Received) -> Option<Reply> + Send + 'static) -> Outage {
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_down = down.clone();
        self.plan(move |r| {
            always(r).unwrap_or(if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                Reply::Status(503)
            } else {
                Reply::Status(200)
            })
        });
        Outage(down)
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn delivered(&self) -> Vec<Received> {
        self.state.delivered.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> Vec<Received> {
        self.state.attempts.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests were answered with 2xx; panics after [`PATIENCE`].
    pub async fn wait_delivered(&self, n: usize) -> Vec<Received> {
        let mut rx = self.state.count.subscribe();
        let got = tokio::time::timeout(PATIENCE, rx.wait_for(|c| *c >= n)).await;
        let have = self.delivered();
        assert!(
            got.is_ok(),
            "waited {PATIENCE:?} for {n} deliveries, got {}",
            have.len()
        );
        have
    }

    /// Waits until at least `n` attempts were made.
    pub async fn wait_attempts(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        let mut rx = self.state.count.subscribe();
        loop {
            let have = self.attempts();
            if have.len() >= n {
                return have;
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {n} attempts, got {}",
                have.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }

    /// Goes down: closes the listener and every connection. Connections are refused after this.
    pub async fn stop(&self) {
        let tasks = self.tasks.lock().unwrap().take();
        if let Some(mut tasks) = tasks {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Comes back on the same address.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let state = self.state.clone();
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let state = state.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.tasks.lock().unwrap() = Some(tasks);
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let got = Received {
        path,
        headers,
        body,
        at: Instant::now(),
    };
    state.attempts.lock().unwrap().push(got.clone());
    let reply = (state.plan.lock().unwrap())(&got);
    let (code, extra) = match reply {
        Reply::Status(code) => (code, Vec::new()),
        Reply::StatusWith(code, extra) => (code, extra),
        Reply::After(wait, code) => {
            tokio::time::sleep(wait).await;
            (code, Vec::new())
        }
        Reply::Drop => {
            state.count.send_modify(|_| {});
            return Err(std::io::Error::other("dropping the connection"));
        }
        Reply::Stall => {
            state.count.send_modify(|_| {});
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    if (200..300).contains(&code) {
        state.delivered.lock().unwrap().push(got);
        state.count.send_modify(|c| *c += 1);
    } else {
        state.count.send_modify(|_| {});
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"")));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    Ok(resp)
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    /// The server's certificate (for 127.0.0.1 and localhost) and key, PEM, for servers that
    /// read files (nats-server).
    pub leaf_pem: String,
    pub key_pem: String,
    /// The server, requiring a client certificate signed by the CA.
    pub mutual: Arc<rustls::ServerConfig>,
    /// A client certificate signed by the CA, and its key, PEM.
    pub client_pem: String,
    pub client_key_pem: String,
}

pub fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "flagtail test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["flagtail".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mutual = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    TestCa {
        ca_pem: ca.pem(),
        server: Arc::new(server),
        leaf_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        mutual: Arc::new(mutual),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// The real binary, running a config in a temp dir (killed when dropped).
pub struct Flagtail {
    pub child: tokio::process::Child,
    pub stderr_path: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flagtail")
}

impl Flagtail {
    pub fn start(config: &Path) -> Flagtail {
        Flagtail::start_env(config, &[])
    }

    pub fn start_env(config: &Path, env: &[(&str, &str)]) -> Flagtail {
        let args = ["--config", config.to_str().unwrap()];
        Flagtail::start_args(&args, config.parent().unwrap(), env)
    }

    /// Runs the daemon with `args`, its stderr kept in `dir`.
    pub fn start_args(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Flagtail {
        let n = std::fs::read_dir(dir).unwrap().count();
        let stderr_path = dir.join(format!("flagtail-{n}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("RUST_LOG", "flagtail=debug")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        Flagtail {
            child: cmd.spawn().unwrap(),
            stderr_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("flagtail is running") as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill_9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait().await
    }

    /// Waits for the exit (SIGCHLD, not polling).
    pub async fn wait(&mut self) -> ExitStatus {
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("flagtail did not exit; stderr:\n{}", self.stderr()),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until stderr contains `text` (the daemon logged something).
    pub async fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `check` (every 20 ms: files and logs give no signal to await) until it is `Ok`; fails
/// the test with the last `Err` after [`PATIENCE`].
pub async fn eventually<T>(mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => panic!("waited {PATIENCE:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The first of `names` that runs (`NAME --version`), or `None` outside CI when there is none:
/// the test is then skipped, saying so. In CI it must be there (`.ci/run` installs `package`).
pub fn tool(names: &[&'static str], package: &str) -> Option<&'static str> {
    let found = names.iter().copied().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {package} (.ci/run installs it)"
        );
        eprintln!("SKIPPED: no {package} on this machine (apt-get install {package})");
    }
    found
}

/// Like [`eventually`], for a check that awaits.
pub async fn eventually_async<T, F: std::future::Future<Output = Result<T, String>>>(
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => panic!("waited {PATIENCE:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until every key in `want` was delivered; `keys` lists what was delivered so far.
pub async fn wait_keys(
    want: impl IntoIterator<Item = String>,
    mut keys: impl FnMut() -> Vec<String>,
) {
    let want: Vec<String> = want.into_iter().collect();
    eventually(|| {
        let have: std::collections::HashSet<String> = keys().into_iter().collect();
        let missing = want.iter().filter(|k| !have.contains(*k)).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} of {} events not delivered", want.len()))
        }
    })
    .await;
}

/// `flag-0` .. `flag-{n-1}`.
pub fn flag_keys(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(|i| format!("flag-{i}"))
}

/// Flipt's two log encodings.
#[derive(Debug, Clone, Copy)]
pub enum Encoding {
    Console,
    Json,
}

/// Flipt audit line number `i` (with its newline), and the body Flipt's webhook would send for it.
pub fn flipt_line(i: usize, enc: Encoding) -> (String, String) {
    let actions = ["created", "updated", "deleted"];
    let action = actions[i % 3];
    let meta = format!(r#"{{"actor":{{"authentication":"token","email":"dev{i}@example.com"}}}}"#);
    let payload = format!(
        r#"{{"enabled":true,"key":"flag-{i}","name":"Flag {i}","namespace_key":"default"}}"#
    );
    let ts = format!("2026-11-23T06:{:02}:{:02}Z", (i / 60) % 60, i % 60);
    let line = match enc {
        Encoding::Console => format!(
            r#"{{"version": "0.2", "type": "flag", "action": "{action}", "status": "success", "metadata": {meta}, "payload": {payload}, "timestamp": "{ts}"}}"#
        ),
        Encoding::Json => format!(
            r#"{{"version":"0.2","type":"flag","action":"{action}","status":"success","metadata":{meta},"payload":{payload},"timestamp":"{ts}"}}"#
        ),
    };
    let body = format!(
        r#"{{"version":"0.2","type":"flag","action":"{action}","metadata":{meta},"payload":{payload},"timestamp":"{ts}","status":"success"}}"#
    );
    (line + "\n", body)
}

/// A webhook sink named `hook` posting to `url`, with short retry settings for tests; a key set
/// in `extra` (YAML lines of the sink) replaces the default one.
pub fn webhook_sink(url: &str, extra: &str) -> String {
    let mut sink = format!("  - name: hook\n    url: {url}\n");
    for (key, value) in [
        ("initial_backoff", "50ms"),
        ("max_backoff_duration", "3s"),
        ("timeout", "2s"),
    ] {
        if !extra.contains(&format!("    {key}:")) {
            sink.push_str(&format!("    {key}: {value}\n"));
        }
    }
    sink + extra
}

/// `X-Flipt-Webhook-Signature` of `body`, computed here with ring, independently of flagtail.
pub fn flipt_signature(secret: &str, body: impl AsRef<[u8]>) -> String {
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
        body.as_ref(),
    );
    mac.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The flag key in a default body, to tell events apart.
pub fn key_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["payload"]["key"].as_str().unwrap_or("").to_string()
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A temp dir holding a config and an audit log.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> PathBuf {
        self.path("audit.log")
    }

    /// Appends Flipt lines `flag-{i}` for each `i` in `range` to `audit.log`, in one write.
    pub fn write_lines(&self, range: std::ops::Range<usize>, enc: Encoding) {
        let text: String = range.map(|i| flipt_line(i, enc).0).collect();
        append(&self.log(), &text);
    }

    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// Writes `flagtail.yaml`: one file source on `audit.log`, and `sinks` (YAML list items).
    pub fn config(&self, sinks: &str) -> PathBuf {
        self.config_with("", sinks)
    }

    pub fn config_with(&self, top: &str, sinks: &str) -> PathBuf {
        let text = format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nshutdown_grace: 5s\n{top}\nsources:\n  - name: flipt\n    file: {}\n    format: flipt\nsinks:\n{sinks}",
            self.state().display(),
            self.log().display()
        );
        let path = self.path("flagtail.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Lines of a JSONL file in the state dir (dead letters, rejected).
    pub fn state_lines(&self, rel: &str) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(self.state().join(rel)) {
            Ok(t) => t
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|_| {
                        // A value JSON allows but serde_json cannot hold (`1e999`): keep the
                        // fields that it can, and the others as their text.
                        let fields: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str::<
                                std::collections::BTreeMap<
                                    String,
                                    Box<serde_json::value::RawValue>,
                                >,
                            >(l)
                            .unwrap()
                            .into_iter()
                            .map(|(k, raw)| {
                                let v = serde_json::from_str(raw.get())
                                    .unwrap_or_else(|_| raw.get().to_string().into());
                                (k, v)
                            })
                            .collect();
                        fields.into()
                    })
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Counts each key's occurrences.
pub fn counts(keys: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Runs a `flagtail` subcommand to completion: (exit code, stdout, stderr).
pub fn run_cmd(args: &[&str]) -> (i32, String, String) {
    run_cmd_env(args, &[])
}

pub fn run_cmd_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flag keys (one per input line) of what the receiver took (2xx).
pub fn delivered_keys(rx: &Receiver) -> Vec<String> {
    rx.delivered().iter().map(|r| key_of(&r.body)).collect()
}

/// Runs `flagtail replay --sink SINK`: (exit code, stdout, stderr).
pub fn replay(config: &Path, sink: &str) -> (i32, String, String) {
    run_cmd(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        sink,
    ])
}

/// Flag keys of the events in a sink's dead-letter file.
pub fn dead_keys(s: &Setup, sink: &str) -> Vec<String> {
    s.state_lines(&format!("dead-letter/{sink}.jsonl"))
        .iter()
        .map(|d| {
            d["event"]["payload"]["key"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// The reasons of a sink's dead letters, in order.
pub fn dead_reasons(s: &Setup, sink: &str) -> Vec<String> {
    s.state_lines(&format!("dead-letter/{sink}.jsonl"))
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the admin endpoint at `port`: (status, body).
pub fn admin_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: flagtail\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A receiver's outage, from [`Receiver::outage`].
pub struct Outage(Arc<std::sync::atomic::AtomicBool>);

impl Outage {
    /// The receiver is back.
    pub fn end(&self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits until `sink`'s dead-letter file holds `n` letters; their flag keys.
pub async fn wait_dead_letters(s: &Setup, sink: &str, n: usize) -> Vec<String> {
    eventually(|| match dead_keys(s, sink) {
        d if d.len() == n => Ok(d),
        d => Err(format!("{} of {n} dead letters: {d:?}", d.len())),
    })
    .await
}

/// A YAML file of the repository as JSON values (through figment, as flagtail reads YAML).
pub fn yaml_file(path: &str) -> serde_json::Value {
    use figment::providers::Format as _;
    figment::Figment::from(figment::providers::Yaml::file_exact(path))
        .extract()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `flagtail_…` metric the shipped alert rules and Grafana dashboard query.
pub fn deployed_metric_names() -> std::collections::BTreeSet<String> {
    let rules = yaml_file("deploy/prometheus/flagtail-rules.yaml");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/flagtail.json").unwrap())
            .unwrap();
    let mut queries: Vec<String> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["expr"].as_str().map(str::to_string))
        .collect();
    let panels = dashboard["panels"].as_array().into_iter().flatten();
    queries.extend(
        panels
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .filter_map(|t| t["expr"].as_str().map(str::to_string)),
    );
    if let Some(q) = dashboard["templating"]["list"][1]["definition"].as_str() {
        queries.push(q.to_string());
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    queries
        .iter()
        .flat_map(|q| q.split(|c| !word(c)))
        .filter(|w| w.starts_with("flagtail_"))
        .map(str::to_string)
        .collect()
}
