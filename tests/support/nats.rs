//! A real `nats-server -js` for the NATS sink tests, on a free loopback port with a temporary
//! store, and a client to make streams and read them back.

use async_nats::jetstream::{self, message::StreamMessage, stream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    /// Extra command-line arguments (auth, TLS).
    args: Vec<String>,
    /// How the test's own client gets in.
    pub access: Access,
}

/// How a client authenticates to a test server, and whether it uses TLS.
#[derive(Clone, Default)]
pub struct Access {
    pub token: Option<String>,
    pub user: Option<(String, String)>,
    pub nkey_seed: Option<String>,
    /// CA file to trust; the connection is TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM files), for servers that verify clients.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The `nats-server` binary, or `None` outside CI when there is none (CI installs it).
fn binary() -> Option<&'static str> {
    super::tool(&["nats-server", "/usr/sbin/nats-server"], "nats-server")
}

impl NatsServer {
    /// Starts a server, or `None` (the test is skipped) where there is no nats-server outside CI.
    pub async fn start() -> Option<NatsServer> {
        NatsServer::start_with(&[], Access::default()).await
    }

    /// Starts a server with extra arguments (`--auth TOKEN`, `--tls …`, `-c FILE`); the test's
    /// client gets in with `access`.
    pub async fn start_with(args: &[&str], access: Access) -> Option<NatsServer> {
        binary()?;
        let mut server = NatsServer {
            child: None,
            port: super::free_port(),
            store: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
            access,
        };
        server.start_again().await;
        Some(server)
    }

    /// A client of the server, as `access` says.
    pub async fn client(&self) -> Result<async_nats::Client, String> {
        let a = &self.access;
        let mut o = async_nats::ConnectOptions::new();
        if let Some(t) = &a.token {
            o = o.token(t.clone());
        }
        if let Some((u, p)) = &a.user {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(seed) = &a.nkey_seed {
            o = o.nkey(seed.clone());
        }
        if let Some((cert, key)) = &a.client_cert {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        let url = match &a.ca_file {
            Some(ca) => {
                o = o.add_root_certificates(ca.clone()).require_tls(true);
                format!("tls://127.0.0.1:{}", self.port)
            }
            None => self.url(),
        };
        o.connect(url).await.map_err(|e| e.to_string())
    }

    /// Starts the server (again) on the same port and store.
    pub async fn start_again(&mut self) {
        let child = Command::new(binary().unwrap())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Ready once JetStream answers.
        super::eventually_async(|| async {
            {
                let client = self.client().await?;
                let answer = client
                    .request("$JS.API.INFO", "".into())
                    .await
                    .map_err(|e| e.to_string())?;
                match String::from_utf8_lossy(&answer.payload).contains("account_info_response") {
                    true => Ok(()),
                    false => Err(format!("{answer:?}")),
                }
            }
        })
        .await;
    }

    /// Stops the server (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await.unwrap())
    }

    /// Makes stream `name` taking `subjects`, with a duplicate window of 2 minutes.
    pub async fn add_stream(&self, name: &str, subjects: &[&str]) {
        self.jetstream()
            .await
            .create_stream(stream::Config {
                name: name.into(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Every message in stream `name`, in order.
    pub async fn messages(&self, name: &str) -> Vec<StreamMessage> {
        let js = self.jetstream().await;
        let mut stream = js.get_stream(name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(m);
            }
        }
        out
    }

    /// How many messages stream `name` holds (its state, not its messages: cheap to ask often).
    pub async fn count(&self, name: &str) -> u64 {
        let js = self.jetstream().await;
        let mut stream = js.get_stream(name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Waits until stream `name` holds at least `n` messages, asking only for its count.
    pub async fn wait_count(&self, name: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        loop {
            let got = self.count(name).await;
            if got >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {name}: {got} of {n} messages"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until stream `name` holds `n` messages; they, in order.
    pub async fn wait_messages(&self, name: &str, n: usize) -> Vec<StreamMessage> {
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        loop {
            let got = self.messages(name).await;
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {name}: {} of {n} messages",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The flag key in a message's body (the default body: one event).
pub fn message_key(m: &StreamMessage) -> String {
    super::key_of(&m.payload)
}

/// The flag keys of the events a message carries: one for an event's body, each member's for a
/// JSON array (a batching sink's body).
pub fn event_keys(m: &StreamMessage) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap() {
        serde_json::Value::Array(events) => events
            .iter()
            .map(|e| e["payload"]["key"].as_str().unwrap_or("").to_string())
            .collect(),
        one => vec![one["payload"]["key"].as_str().unwrap_or("").to_string()],
    }
}
