//! Whether the daemon is ready (every source open) and alive (no source or sink task has died),
//! for the admin endpoint's `/readyz` and `/healthz` and for systemd (`Type=notify`: `READY=1`
//! once every source is open the first time, `STOPPING=1` at shutdown).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Sources of the running config not open yet.
    waiting: BTreeSet<String>,
    /// What died, once something did.
    dead: Option<String>,
    /// Whether systemd was told the daemon is ready.
    told: bool,
}

/// A source's way to say it is open.
#[derive(Debug, Clone)]
pub struct Opening {
    health: Arc<Health>,
    source: String,
}

impl Opening {
    /// The source follows its file (or waits for it with a watch set), or reads its journal.
    pub fn done(&self) {
        self.health.opened(&self.source);
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A config starts: these sources are to open.
    pub fn expect(&self, sources: impl IntoIterator<Item = String>) {
        self.lock().waiting = sources.into_iter().collect();
    }

    pub fn opening(self: &Arc<Self>, source: &str) -> Opening {
        Opening {
            health: self.clone(),
            source: source.to_string(),
        }
    }

    fn opened(&self, source: &str) {
        let mut s = self.lock();
        s.waiting.remove(source);
        if s.waiting.is_empty() && !s.told {
            s.told = true;
            notify_systemd("READY=1");
        }
    }

    /// A source or sink task ended while it should run: the daemon is stopping with an error.
    pub fn died(&self, what: String) {
        self.lock().dead.get_or_insert(what);
    }

    /// `Err(sources not open yet)`.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let s = self.lock();
        if s.waiting.is_empty() {
            Ok(())
        } else {
            Err(s.waiting.iter().cloned().collect())
        }
    }

    /// `Err(what died)`.
    pub fn liveness(&self) -> Result<(), String> {
        match &self.lock().dead {
            None => Ok(()),
            Some(what) => Err(what.clone()),
        }
    }
}

/// Sends `state` to systemd's notification socket, if the service manager gave one
/// (`NOTIFY_SOCKET`; a name starting with `@` is in the abstract namespace). Best effort.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd ({state})");
    }
}
