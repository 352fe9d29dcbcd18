//! The daemon: builds the pipeline from a config, runs it, reloads it on request, stops it.
//!
//! [`run`] takes its stop signal and its reload requests as parameters (the binary wires them to
//! SIGTERM/SIGINT and SIGHUP), so tests can drive it. A reload builds the new sinks first; if the
//! new config is bad it is refused with a logged error and the running pipeline is untouched.
//! Otherwise the running pipeline is stopped like at shutdown and a new one started; positions come
//! from the in-memory checkpoints, so lines not yet acknowledged are read again (same keys).

use crate::ack::{self, Tracker};
use crate::admin;
use crate::checkpoint::CheckpointBook;
use crate::config::Config;
use crate::config::SourceKind;
use crate::delivery::backlog::Backlogs;
use crate::delivery::{self, Ready, dead_letter};
use crate::health::Health;
use crate::intake::{Intake, Intakes, Listener};
use crate::record::SourceInfo;
use crate::record_log::RecordLog;
use crate::source::file::FileSource;
use crate::source::http::{HttpSource, Token, Verifier};
use crate::source::journaled::JournalSource;
use crate::source::socket::SocketSource;
use crate::source::{Dispatch, Rejected, SinkPort};
use crate::state_lock::{self, LockError};
use anyhow::{Context, anyhow};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs `config` with its `sinks` (built by [`crate::command::build_sinks`]) until `stop` fires; each message
/// on `reloads` reloads the config from its file.
///
/// Fails if another daemon holds the state directory (the error is a [`state_lock::Held`]), if a
/// source or sink task ends or panics while running (nothing would move its events any more), or
/// if the checkpoints cannot be saved at the end.
pub async fn run(
    config: Config,
    sinks: Vec<Ready>,
    mut reloads: mpsc::Receiver<()>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let _lock = match state_lock::acquire(&config.file.state_dir) {
        Ok(lock) => lock,
        Err(LockError::Held(held)) => return Err(held.into()),
        Err(LockError::Io(e)) => {
            return Err(anyhow!(e).context("cannot lock the state directory"));
        }
    };
    let book =
        CheckpointBook::open(&config.file.state_dir).context("cannot open the state directory")?;
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(book.clone().run_writer(writer_stop.clone()));
    let health = Arc::new(Health::default());
    crate::status::started();
    let http_listeners = config
        .file
        .sources
        .iter()
        .filter(|s| s.http.is_some())
        .count()
        + usize::from(!config.file.admin.listen.is_empty());
    crate::listen::raise_open_files(http_listeners);
    let mut config = config;
    let mut intakes = Intakes::default();
    intakes.update(&config, &book)?;
    let mut backlogs = Backlogs::default();
    backlogs.open_all(
        &config.file.state_dir,
        sinks.iter().map(|r| &*r.sink),
        &book,
    )?;
    let admin_view: admin::Shared = Arc::new(std::sync::RwLock::new(admin_view_of(
        &config, &book, &intakes, &sinks,
    )));
    let admin_stop = CancellationToken::new();
    let admin_listen = config.file.admin.listen.clone();
    let admin = if admin_listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&admin_listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen {admin_listen}"))?;
        Some(tokio::spawn(admin::serve(
            listener,
            admin_view.clone(),
            health.clone(),
            admin_stop.clone(),
        )))
    };
    let summary_stop = CancellationToken::new();
    let summary = tokio::spawn(crate::summary::run(
        config.file.log.summary_interval,
        summary_stop.clone(),
    ));
    let mut pipeline = Pipeline::start(&config, sinks, &book, (&intakes, &backlogs), &health);
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    tracing::info!(config = %config.paths, sources = config.file.sources.len(), sinks = config.file.sinks.len(), "flagtail started");
    let result = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            // A dead sink is reported before the source it leaves without a queue.
            ended = pipeline.sinks.join_next_with_id(), if !pipeline.sinks.is_empty() => {
                let e = ended_error(&pipeline.names, "sink", ended);
                health.died(format!("{e:#}"));
                break Err(e);
            }
            ended = pipeline.sources.join_next_with_id(), if !pipeline.sources.is_empty() => {
                let e = ended_error(&pipeline.names, "source", ended);
                health.died(format!("{e:#}"));
                break Err(e);
            }
            Some(()) = reloads.recv() => match reload(&config) {
                Ok((next, sinks)) => {
                    // Listeners first: a reload that cannot bind changes nothing.
                    if let Err(e) = intakes.update(&next, &book) {
                        tracing::error!("reload refused, the running config stays: {e:#}");
                        continue;
                    }
                    let state_dir = &next.file.state_dir;
                    if let Err(e) = backlogs.open_all(state_dir, sinks.iter().map(|r| &*r.sink), &book) {
                        tracing::error!("reload refused, the running config stays: {e:#}");
                        continue;
                    }
                    if let Err(e) = pipeline.stop().await {
                        break Err(e);
                    }
                    if next.file.admin.listen != admin_listen {
                        tracing::warn!(running = %admin_listen, "admin.listen changed; the admin endpoint stays where it is until a restart");
                    }
                    if next.file.log.summary_interval != config.file.log.summary_interval {
                        tracing::warn!("log.summary_interval changed; the running interval stays until a restart");
                    }
                    config = next;
                    if let Ok(mut view) = admin_view.write() {
                        *view = admin_view_of(&config, &book, &intakes, &sinks);
                    }
                    pipeline = Pipeline::start(&config, sinks, &book, (&intakes, &backlogs), &health);
                    tracing::info!(config = %config.paths, "config reloaded");
                }
                Err(e) => tracing::error!("reload refused, the running config stays: {e:#}"),
            },
        }
    };
    if let Err(e) = &result {
        tracing::error!("stopping: {e:#}");
    }
    crate::health::notify_systemd("STOPPING=1");
    tracing::info!("stopping: finishing deliveries in flight");
    let result = result.and(pipeline.stop().await);
    admin_stop.cancel();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    summary_stop.cancel();
    let _ = summary.await;
    writer_stop.cancel();
    let saved = match writer.await {
        Ok(saved) => saved.context("cannot save checkpoints at shutdown; undelivered events after the last saved position are sent again on restart"),
        Err(e) => Err(anyhow!("the checkpoint writer failed: {e}")),
    };
    match &saved {
        Ok(()) => tracing::info!("stopped; checkpoints saved"),
        Err(e) => tracing::error!("{e:#}"),
    }
    result.and(saved)
}

/// What the admin endpoint reports on for `config`.
fn admin_view_of(
    config: &Config,
    book: &Arc<CheckpointBook>,
    intakes: &Intakes,
    sinks: &[Ready],
) -> admin::View {
    let sources = config
        .file
        .sources
        .iter()
        .filter_map(|s| {
            let name = s.name.to_string();
            let (kind, address, follows) = match s.kind()? {
                SourceKind::File { path, .. } => (
                    "file",
                    path.display().to_string(),
                    admin::Follows::File(path.to_path_buf()),
                ),
                SourceKind::Socket { path, .. } => (
                    "socket",
                    path.display().to_string(),
                    admin::Follows::Journal(intakes.get(&name)?.journal.clone()),
                ),
                SourceKind::Http { addr, path, .. } => (
                    "http",
                    format!("http://{addr}{path}"),
                    admin::Follows::Journal(intakes.get(&name)?.journal.clone()),
                ),
            };
            Some(admin::SourceView {
                name,
                kind,
                address,
                follows,
            })
        })
        .collect();
    admin::View {
        state_dir: config.file.state_dir.clone(),
        sources,
        sinks: sinks
            .iter()
            .map(|r| admin::SinkView {
                name: r.sink.name.to_string(),
                kind: r.sink.kind_name(),
                target: r.sink.shown(),
            })
            .collect(),
        book: Some(book.clone()),
    }
}

fn reload(current: &Config) -> anyhow::Result<(Config, Vec<Ready>)> {
    let next = Config::load_from(&current.paths)?;
    if next.file.state_dir != current.file.state_dir {
        return Err(anyhow!(
            "state_dir cannot change on reload; restart flagtail to move it"
        ));
    }
    let sinks = crate::command::build_sinks(&next).map_err(|f| anyhow!(f.message))?;
    Ok((next, sinks))
}

/// Running sources and sink workers of one config.
struct Pipeline {
    stop: CancellationToken,
    sources: Tasks,
    sinks: Tasks,
    /// Source and sink names by task, to say which one ended.
    names: HashMap<tokio::task::Id, String>,
}

impl Pipeline {
    fn start(
        config: &Config,
        sinks: Vec<Ready>,
        book: &Arc<CheckpointBook>,
        (intakes, backlogs): (&Intakes, &Backlogs),
        health: &Arc<Health>,
    ) -> Pipeline {
        let c = &config.file;
        health.expect(c.sources.iter().map(|s| s.name.to_string()));
        for s in &c.sources {
            crate::status::source(s.name.as_str());
        }
        let stop = CancellationToken::new();
        let mut sink_tasks = JoinSet::new();
        let mut names = HashMap::new();
        let mut ports = Vec::new();
        for ready in sinks {
            let (tx, rx) = mpsc::channel(delivery::QUEUE);
            let dead = dead_letter::log(&c.state_dir, &ready.sink.name);
            let sink_name = ready.sink.name.to_string();
            // Opened for every sink before the pipeline starts (`Backlogs::open_all`).
            let Some(backlog) = backlogs.get(&sink_name) else {
                continue;
            };
            ports.push(SinkPort {
                sink: ready.sink.clone(),
                queue: tx,
                backlog: backlog.clone(),
            });
            let (stop, grace) = (stop.clone(), c.shutdown_grace);
            let worker = delivery::run_sink(ready, rx, dead, backlog, stop, grace);
            // Like a source, a sink worker only ends when stopped: any other end is an error.
            let task = sink_tasks.spawn(async move {
                worker.await;
                Ok(())
            });
            names.insert(task.id(), sink_name);
        }
        let ports: Arc<[SinkPort]> = ports.into();
        let mut sources = JoinSet::new();
        let max_line = usize::try_from(c.max_line_bytes).unwrap_or(usize::MAX);
        // The process's bytes in flight, split between the sources: one stuck sink holds back
        // only the sources that feed it.
        let share = ack::share(c.sources.len(), max_line);
        for s in &c.sources {
            let name = s.name.as_str();
            let log = RecordLog::new(&c.state_dir, "rejected", name);
            let rejected = Rejected::new(name, log, c.rejected.max_bytes.0);
            let dispatch = Dispatch {
                info: Arc::new(SourceInfo {
                    name: name.into(),
                    format: s.format,
                }),
                tracker: Arc::new(Tracker::new(name, book.clone(), share)),
                sinks: ports.clone(),
                rejected: rejected.clone(),
                stop: stop.clone(),
                lines_read: crate::metrics::get().lines_read_of(name),
                unmapped: crate::metrics::get().unmapped_of(name),
                opened: health.opening(name),
                run: Default::default(),
            };
            let intake = intakes.get(name).map(|i| &**i);
            let writer = match (s.kind(), intake) {
                (Some(SourceKind::File { path, read_from }), _) => {
                    let source = FileSource {
                        path: path.to_path_buf(),
                        read_from,
                        max_line,
                        book: book.clone(),
                        dispatch,
                    };
                    let task = sources.spawn(source.run());
                    names.insert(task.id(), name.to_string());
                    continue;
                }
                (
                    Some(SourceKind::Socket {
                        max_connections, ..
                    }),
                    Some(Intake {
                        listener: Listener::Socket(listener),
                        journal,
                        ..
                    }),
                ) => sources.spawn(
                    SocketSource {
                        name: name.into(),
                        listener: listener.clone(),
                        journal: journal.clone(),
                        max_connections,
                        max_line,
                        rejected,
                        stop: stop.clone(),
                    }
                    .run(),
                ),
                (
                    Some(SourceKind::Http {
                        path,
                        auth_token,
                        verify,
                        max_body,
                        max_connections,
                        ..
                    }),
                    Some(Intake {
                        listener: Listener::Http(listener),
                        journal,
                        ..
                    }),
                ) => sources.spawn(
                    HttpSource {
                        name: name.into(),
                        listener: listener.clone(),
                        journal: journal.clone(),
                        path: path.to_string(),
                        token: auth_token.map(|t| Token::new(t.expose())),
                        verifier: verify.map(|(scheme, secret)| Verifier {
                            scheme,
                            key: ring::hmac::Key::new(
                                ring::hmac::HMAC_SHA256,
                                secret.expose().as_bytes(),
                            ),
                        }),
                        max_body,
                        max_line,
                        format: s.format,
                        grace: c.shutdown_grace,
                        max_connections,
                        rejected,
                        stop: stop.clone(),
                    }
                    .run(),
                ),
                // The intakes were made from this config: a mismatch cannot happen.
                _ => continue,
            };
            names.insert(writer.id(), name.to_string());
            if let Some(intake) = intake {
                let reader = JournalSource {
                    journal: intake.journal.clone(),
                    max_line,
                    book: book.clone(),
                    dispatch,
                };
                let task = sources.spawn(reader.run());
                names.insert(task.id(), name.to_string());
            }
        }
        Pipeline {
            stop,
            sources,
            sinks: sink_tasks,
            names,
        }
    }

    /// Stops reading and waits; sink workers give deliveries in flight `shutdown_grace`. A task
    /// that panicked meanwhile is an error, even if the stop came first.
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let sources = join_all(&mut self.sources, &self.names, "source").await;
        let sinks = join_all(&mut self.sinks, &self.names, "sink").await;
        sources.and(sinks)
    }
}

/// The tasks of one kind (sources or sink workers): each runs until the pipeline stops.
type Tasks = JoinSet<std::io::Result<()>>;

/// Waits for every task of `set`; the first that panicked is an error.
async fn join_all(
    set: &mut Tasks,
    names: &HashMap<tokio::task::Id, String>,
    kind: &str,
) -> anyhow::Result<()> {
    let mut first = Ok(());
    while let Some(ended) = set.join_next_with_id().await {
        if matches!(&ended, Err(e) if e.is_panic()) && first.is_ok() {
            first = Err(ended_error(names, kind, Some(ended)));
        }
    }
    first
}

/// The error for a `kind` task that ended while the pipeline was meant to run.
fn ended_error(
    names: &HashMap<tokio::task::Id, String>,
    kind: &str,
    ended: Option<Result<(tokio::task::Id, std::io::Result<()>), tokio::task::JoinError>>,
) -> anyhow::Error {
    let name = |id| names.get(&id).map_or("?", String::as_str);
    match ended {
        Some(Ok((id, Err(e)))) => anyhow!("{kind} {}: {e}", name(id)),
        Some(Ok((id, Ok(())))) => anyhow!("{kind} {} stopped working", name(id)),
        Some(Err(e)) if e.is_panic() => {
            let who = name(e.id()).to_string();
            let why = e.into_panic();
            let why = why
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| why.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            anyhow!("{kind} {who} panicked: {why}")
        }
        Some(Err(e)) => anyhow!("{kind} {} was cancelled", name(e.id())),
        None => anyhow!("no {kind} is running"),
    }
}
