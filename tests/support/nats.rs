//! A real `nats-server -js` for the NATS sink tests, on a free loopback port with a temporary
//! store, and a client to make streams and read them back.

use async_nats::jetstream::{self, message::StreamMessage, stream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
}

/// The `nats-server` binary, or `None` outside CI when there is none (CI installs it).
fn binary() -> Option<&'static str> {
    let found = ["nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have nats-server (.ci/run installs it)"
        );
        eprintln!("SKIPPED: no nats-server on this machine (apt-get install nats-server)");
    }
    found
}

impl NatsServer {
    /// Starts a server, or `None` (the test is skipped) where there is no nats-server outside CI.
    pub async fn start() -> Option<NatsServer> {
        binary()?;
        let mut server = NatsServer {
            child: None,
            port: super::free_port(),
            store: tempfile::tempdir().unwrap(),
        };
        server.start_again().await;
        Some(server)
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Ready once JetStream answers.
        let url = self.url();
        super::eventually_async(|| {
            let url = url.clone();
            async move {
                let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
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
        jetstream::new(async_nats::connect(self.url()).await.unwrap())
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
