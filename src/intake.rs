//! The parts of socket and HTTP sources that outlive one pipeline: the bound listener and the
//! journal, with the task that trims it. The daemon keeps them across reloads, so clients
//! never see the socket go away; a reload rebinds only what changed, and one that cannot bind
//! changes nothing (the running config stays).

use crate::checkpoint::CheckpointBook;
use crate::config::{Config, SourceKind};
use crate::journal::Journal;
use crate::source::http::HttpListener;
use crate::source::socket::SocketListener;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound listener of either kind.
pub enum Listener {
    Socket(Arc<SocketListener>),
    Http(Arc<HttpListener>),
}

impl Listener {
    /// Whether this listener already serves what `kind` asks for.
    fn serves(&self, kind: &SourceKind) -> bool {
        match (self, kind) {
            (Listener::Socket(l), SourceKind::Socket(socket)) => l.path == socket.socket,
            (Listener::Http(l), SourceKind::Http(http)) => l.addr == http.http.0.to_string(),
            _ => false,
        }
    }

    /// Binds what `kind` asks for; `None` for a kind that has no listener (a file).
    fn bind(name: &str, kind: &SourceKind) -> anyhow::Result<Option<Listener>> {
        Ok(match kind {
            SourceKind::Socket(socket) => {
                let l = SocketListener::bind(&socket.socket, socket.socket_mode.0)
                    .with_context(|| format!("source {name}: cannot listen on the socket"))?;
                Some(Listener::Socket(Arc::new(l)))
            }
            SourceKind::Http(http) => {
                let l = HttpListener::bind(&http.http.0.to_string())
                    .with_context(|| format!("source {name}"))?;
                Some(Listener::Http(Arc::new(l)))
            }
            SourceKind::File(_) => None,
        })
    }
}

/// One source's listener and journal.
pub struct Intake {
    pub listener: Listener,
    pub journal: Journal,
    /// Stops the journal's trimming when the source goes away.
    trimming: CancellationToken,
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.trimming.cancel();
    }
}

/// The intakes of the running config, by source name.
#[derive(Default)]
pub struct Intakes {
    by_source: HashMap<String, Arc<Intake>>,
}

impl Intakes {
    pub fn get(&self, source: &str) -> Option<&Arc<Intake>> {
        self.by_source.get(source)
    }

    /// Makes the intakes `config` needs: keeps those whose socket path is unchanged (a new
    /// `socket_mode` is applied in place), binds the others, opens journals. If anything fails,
    /// nothing changes. Intakes of sources no longer configured are dropped (their sockets removed).
    pub fn update(&mut self, config: &Config, book: &Arc<CheckpointBook>) -> anyhow::Result<()> {
        let c = &config.file;
        let mut next = HashMap::new();
        for s in &c.sources {
            let name = s.name.as_str();
            let kind = &s.kind;
            if matches!(kind, SourceKind::File(_)) {
                continue;
            }
            if let Some(old) = self.by_source.get(name)
                && old.listener.serves(kind)
            {
                if let (Listener::Socket(l), SourceKind::Socket(socket)) = (&old.listener, kind)
                    && l.mode != socket.socket_mode.0
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = socket.socket_mode.0;
                    std::fs::set_permissions(&l.path, std::fs::Permissions::from_mode(mode))
                        .with_context(|| format!("source {name}: cannot set socket_mode"))?;
                }
                next.insert(name.to_string(), old.clone());
                continue;
            }
            let journal = match self.by_source.get(name) {
                Some(old) => old.journal.clone(),
                None => {
                    let dir = c.state_dir.join("journal").join(name);
                    Journal::open(&dir, c.journal.max_bytes.0, book.get(name).as_ref())
                        .with_context(|| {
                            format!("source {name}: cannot open the journal {}", dir.display())
                        })?
                }
            };
            let Some(listener) = Listener::bind(name, kind)? else {
                continue;
            };
            let trimming = CancellationToken::new();
            tokio::spawn(journal.clone().trim(book.durable(name), trimming.clone()));
            next.insert(
                name.to_string(),
                Arc::new(Intake {
                    listener,
                    journal,
                    trimming,
                }),
            );
        }
        self.by_source = next;
        Ok(())
    }
}
