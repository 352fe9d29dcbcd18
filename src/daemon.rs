//! The daemon: builds the pipeline from a config, runs it, reloads it on request, stops it.
//!
//! [`run`] takes its stop signal and its reload requests as parameters (the binary wires them to
//! SIGTERM/SIGINT and SIGHUP), so tests can drive it. A reload builds the new sinks first; if the
//! new config is bad it is refused with a logged error and the running pipeline is untouched.
//! Otherwise the running pipeline is stopped like at shutdown and a new one started; positions come
//! from the in-memory checkpoints, so lines not yet acknowledged are read again (same keys).

use crate::ack::Tracker;
use crate::checkpoint::CheckpointBook;
use crate::config::Config;
use crate::delivery::{self, dead_letter};
use crate::record::SourceInfo;
use crate::record_log::RecordLog;
use crate::sink::{self, Sink};
use crate::source::file::FileSource;
use crate::source::{Dispatch, SinkPort};
use anyhow::{Context, anyhow};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs `config` with its `sinks` (built by [`sink::build_all`]) until `stop` fires; each message
/// on `reloads` reloads the config from its file.
pub async fn run(
    config: Config,
    sinks: Vec<Arc<Sink>>,
    mut reloads: mpsc::Receiver<()>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let book =
        CheckpointBook::open(&config.file.state_dir).context("cannot open the state directory")?;
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(book.clone().run_writer(writer_stop.clone()));
    let mut config = config;
    let mut pipeline = Pipeline::start(&config, sinks, &book);
    tracing::info!(config = %config.path.display(), sources = config.file.sources.len(), sinks = config.file.sinks.len(), "flagtail started");
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            failed = pipeline.sources.join_next() => match failed {
                Some(Ok(Err(e))) => break Err(anyhow!(e)),
                Some(Err(e)) if e.is_panic() => break Err(anyhow!("a source task panicked: {e}")),
                _ => continue,
            },
            Some(()) = reloads.recv() => match reload(&config) {
                Ok((next, sinks)) => {
                    pipeline.stop().await;
                    config = next;
                    pipeline = Pipeline::start(&config, sinks, &book);
                    tracing::info!(config = %config.path.display(), "config reloaded");
                }
                Err(e) => tracing::error!("reload refused, the running config stays: {e:#}"),
            },
        }
    };
    tracing::info!("stopping: finishing deliveries in flight");
    pipeline.stop().await;
    writer_stop.cancel();
    let _ = writer.await;
    tracing::info!("stopped; checkpoints saved");
    result
}

fn reload(current: &Config) -> anyhow::Result<(Config, Vec<Arc<Sink>>)> {
    let next = Config::load(&current.path)?;
    if next.file.state_dir != current.file.state_dir {
        return Err(anyhow!(
            "state_dir cannot change on reload; restart flagtail to move it"
        ));
    }
    let sinks = sink::build_all(&next)?;
    Ok((next, sinks))
}

/// Running sources and sink workers of one config.
struct Pipeline {
    stop: CancellationToken,
    sources: JoinSet<std::io::Result<()>>,
    sinks: JoinSet<()>,
}

impl Pipeline {
    fn start(config: &Config, sinks: Vec<Arc<Sink>>, book: &Arc<CheckpointBook>) -> Pipeline {
        let c = &config.file;
        let stop = CancellationToken::new();
        let mut sink_tasks = JoinSet::new();
        let mut ports = Vec::new();
        for sink in sinks {
            let (tx, rx) = mpsc::channel(delivery::QUEUE);
            let dead = dead_letter::log(&c.state_dir, &sink.name);
            sink_tasks.spawn(delivery::run_sink(
                sink.clone(),
                rx,
                dead,
                stop.clone(),
                c.shutdown_grace,
            ));
            ports.push(SinkPort { sink, queue: tx });
        }
        let ports: Arc<[SinkPort]> = ports.into();
        let mut sources = JoinSet::new();
        for s in &c.sources {
            let Some(path) = &s.file else { continue };
            let name = s.name.as_str();
            let max_line = usize::try_from(c.max_line_bytes).unwrap_or(usize::MAX);
            let dispatch = Dispatch {
                info: Arc::new(SourceInfo {
                    name: name.into(),
                    format: s.format,
                }),
                tracker: Arc::new(Tracker::new(name, book.clone(), max_line)),
                sinks: ports.clone(),
                rejected: RecordLog::new(&c.state_dir, "rejected", name),
                stop: stop.clone(),
                lines_read: crate::metrics::get().lines_read_of(name),
            };
            let source = FileSource {
                path: path.clone(),
                read_from: s.read_from,
                max_line,
                book: book.clone(),
                dispatch,
            };
            sources.spawn(source.run());
        }
        Pipeline {
            stop,
            sources,
            sinks: sink_tasks,
        }
    }

    /// Stops reading and waits; sink workers give deliveries in flight `shutdown_grace`.
    async fn stop(&mut self) {
        self.stop.cancel();
        while self.sources.join_next().await.is_some() {}
        while self.sinks.join_next().await.is_some() {}
    }
}
