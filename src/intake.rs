//! The parts of socket (and later HTTP) sources that outlive one pipeline: the bound listener and
//! the journal, with the task that trims it. The daemon keeps them across reloads, so clients
//! never see the socket go away; a reload rebinds only what changed, and one that cannot bind
//! changes nothing (the running config stays).

use crate::checkpoint::CheckpointBook;
use crate::config::{Config, FileMode};
use crate::journal::Journal;
use crate::source::socket::SocketListener;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One source's listener and journal.
pub struct Intake {
    pub listener: Arc<SocketListener>,
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
            let Some(path) = &s.socket else { continue };
            let name = s.name.as_str();
            let mode = s.socket_mode.unwrap_or(FileMode::PRIVATE).0;
            if let Some(old) = self.by_source.get(name)
                && old.listener.path == *path
            {
                if old.listener.mode != mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
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
            let listener = SocketListener::bind(path, mode)
                .with_context(|| format!("source {name}: cannot listen on the socket"))?;
            let trimming = CancellationToken::new();
            tokio::spawn(journal.clone().trim(book.durable(name), trimming.clone()));
            next.insert(
                name.to_string(),
                Arc::new(Intake {
                    listener: Arc::new(listener),
                    journal,
                    trimming,
                }),
            );
        }
        self.by_source = next;
        Ok(())
    }
}
