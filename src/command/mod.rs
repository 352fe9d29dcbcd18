//! The one-shot commands: `check`, `render`, `replay`, `dead-letters`, `status`. The daemon is [`crate::daemon`].

pub mod attempts;
pub mod check;
pub mod dead_letters;
pub mod render;
pub mod replay;
pub mod status;
pub mod table;

use crate::config::{Config, SourceKind};
use crate::delivery::{Ready, Transport};
use crate::sink::{self, Sink};
use std::sync::Arc;

/// Why a command failed, and its exit code (SPEC §5: 1 runtime failure, 2 bad config or usage).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Builds the sink called `name`, or says which sinks there are.
pub fn find_sink(config: &Config, name: &str) -> Result<Arc<Sink>, Failure> {
    let (index, section) = config
        .file
        .sinks
        .iter()
        .enumerate()
        .find(|(_, s)| s.name.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config.file.sinks.iter().map(|s| s.name.as_str()).collect();
            Failure::usage(format!(
                "--sink: there is no sink named {name:?} (sinks: {})",
                names.join(", ")
            ))
        })?;
    Sink::build(index, section).map(Arc::new).map_err(|mut e| {
        if e.is_empty() {
            e.push(format!("sinks.{index} (sink {name}): cannot be built"));
        }
        Failure::usage(config.error(e).to_string())
    })
}

/// Builds every sink with its transport and checks every source's path, as the daemon does
/// before it starts, to report every config error at once.
pub fn build_sinks(config: &Config) -> Result<Vec<Ready>, Failure> {
    let mut problems: Vec<String> = config
        .file
        .sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.kind {
            SourceKind::Socket(socket) => {
                let path = &socket.socket;
                use std::os::unix::fs::FileTypeExt;
                std::fs::symlink_metadata(path)
                    .ok()
                    .filter(|m| !m.file_type().is_socket())
                    .map(|_| {
                        format!(
                            "sources.{i}.socket: {} exists and is not a socket; flagtail will not replace it",
                            path.display()
                        )
                    })
            }
            SourceKind::File(file) => crate::source::file::check_path(&file.file)
                .err()
                .map(|e| format!("sources.{i}.file: {e}")),
            SourceKind::Http(http) => http
                .tls
                .as_ref()
                .and_then(|tls| crate::source::tls::server_config(tls).err())
                .map(|(key, e)| format!("sources.{i}.tls.{key}: {e}")),
        })
        .collect();
    let sinks = match sink::build_all(config) {
        Ok(sinks) => sinks,
        Err(e) => {
            problems.extend(e.problems);
            return Err(Failure::usage(config.error(problems).to_string()));
        }
    };
    let mut ready = Vec::new();
    for (i, sink) in sinks.into_iter().enumerate() {
        match Transport::for_sink(&sink) {
            Ok(t) => ready.push(Ready {
                sink,
                transport: Arc::new(t),
            }),
            Err((key, e)) => problems.push(format!("sinks.{i}.{key} (sink {}): {e}", sink.name)),
        }
    }
    if problems.is_empty() {
        Ok(ready)
    } else {
        Err(Failure::usage(config.error(problems).to_string()))
    }
}
