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
            (Listener::Socket(l), SourceKind::Socket { path, .. }) => l.path == *path,
            (Listener::Http(l), SourceKind::Http { addr, .. }) => l.addr == *addr,
            _ => false,
        }
    }

    /// Binds what `kind` asks for; `None` for a kind that has no listener (a file).
    fn bind(name: &str, kind: &SourceKind) -> anyhow::Result<Option<Listener>> {
        Ok(match kind {
            SourceKind::Socket { path, mode, .. } => {
                let l = SocketListener::bind(path, mode.0)
                    .with_context(|| format!("source {name}: cannot listen on the socket"))?;
                Some(Listener::Socket(Arc::new(l)))
            }
            SourceKind::Http { addr, .. } => {
                let l = HttpListener::bind(addr).with_context(|| format!("source {name}"))?;
                Some(Listener::Http(Arc::new(l)))
            }
            SourceKind::File { .. } => None,
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
            let Some(kind) = s.kind() else { continue };
            if matches!(kind, SourceKind::File { .. }) {
                continue;
            }
            if let Some(old) = self.by_source.get(name)
                && old.listener.serves(&kind)
            {
                if let (Listener::Socket(l), SourceKind::Socket { mode, .. }) =
                    (&old.listener, kind)
                    && l.mode != mode.0
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&l.path, std::fs::Permissions::from_mode(mode.0))
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
            let Some(listener) = Listener::bind(name, &kind)? else {
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
