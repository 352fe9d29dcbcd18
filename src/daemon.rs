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
use crate::config::{ConfigFile, SourceKind, SourceSection};
use crate::delivery::backlog::Backlogs;
use crate::delivery::{self, Ready, dead_letter};
use crate::health::Health;
use crate::intake::{Intake, Intakes, Listener};
use crate::record::SourceInfo;
use crate::record_log::RecordLog;
use crate::source::file::FileSource;
use crate::source::http::{HttpSource, Token};
use crate::source::journaled::JournalSource;
use crate::source::socket::SocketSource;
use crate::source::verify::Verifier;
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
    let _lock = lock_state_dir(&config)?;
    warn_if_budgets_exceed_disk(&config, &sinks);
    let book =
        CheckpointBook::open(&config.file.state_dir).context("cannot open the state directory")?;
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(book.clone().run_writer(writer_stop.clone()));
    crate::status::started();
    crate::listen::raise_open_files(http_listeners(&config));
    let mut house = House::open(&config, &sinks, book)?;
    let admin_stop = CancellationToken::new();
    let admin = start_admin(&config, &house, admin_stop.clone()).await?;
    let summary_stop = CancellationToken::new();
    let summary = tokio::spawn(crate::summary::run(
        config.file.log.summary_interval,
        summary_stop.clone(),
    ));
    let mut config = config;
    let mut pipeline = house.start(&config, sinks);
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
                break Err(house.died(&pipeline, "sink", ended));
            }
            ended = pipeline.sources.join_next_with_id(), if !pipeline.sources.is_empty() => {
                break Err(house.died(&pipeline, "source", ended));
            }
            Some(()) = reloads.recv() => {
                if let Err(e) = house.reload(&mut config, &mut pipeline).await {
                    break Err(e);
                }
            }
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
    result.and(saved_at_the_end(writer).await)
}

/// The state directory's lock, or why not (another daemon holds it: its PID).
fn lock_state_dir(config: &Config) -> anyhow::Result<state_lock::StateLock> {
    match state_lock::acquire(&config.file.state_dir) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held(held)) => Err(held.into()),
        Err(LockError::Io(e)) => Err(anyhow!(e).context("cannot lock the state directory")),
    }
}

/// How many HTTP listeners `config` has (its HTTP sources and the admin endpoint).
fn http_listeners(config: &Config) -> usize {
    let sources = config
        .file
        .sources
        .iter()
        .filter(|s| matches!(s.kind, SourceKind::Http(_)));
    sources.count() + usize::from(!config.file.admin.listen.is_empty())
}

/// Serves the admin endpoint on `admin.listen`, unless it is off.
async fn start_admin(
    config: &Config,
    house: &House,
    stop: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let listen = &config.file.admin.listen;
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen {listen}"))?;
    let view = house.admin_view.clone();
    Ok(Some(tokio::spawn(admin::serve(
        listener,
        view,
        house.health.clone(),
        stop,
    ))))
}

/// The checkpoints' last save, once the writer has stopped.
async fn saved_at_the_end(
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    let saved = match writer.await {
        Ok(saved) => saved.context("cannot save checkpoints at shutdown; undelivered events after the last saved position are sent again on restart"),
        Err(e) => Err(anyhow!("the checkpoint writer failed: {e}")),
    };
    match &saved {
        Ok(()) => tracing::info!("stopped; checkpoints saved"),
        Err(e) => tracing::error!("{e:#}"),
    }
    saved
}

/// What outlives a reload: positions, listeners and journals, sinks' backlogs, health, what the
/// admin endpoint shows.
struct House {
    book: Arc<CheckpointBook>,
    intakes: Intakes,
    backlogs: Backlogs,
    health: Arc<Health>,
    admin_view: admin::Shared,
    /// Where the admin endpoint listens (kept until a restart).
    admin_listen: String,
}

impl House {
    /// Binds the listeners and opens the journals and backlogs of `config`.
    fn open(config: &Config, sinks: &[Ready], book: Arc<CheckpointBook>) -> anyhow::Result<House> {
        let mut intakes = Intakes::default();
        intakes.update(config, &book)?;
        let mut backlogs = Backlogs::default();
        backlogs.open_all(
            &config.file.state_dir,
            sinks.iter().map(|r| &*r.sink),
            &book,
        )?;
        let view = admin_view_of(config, &book, &intakes, sinks);
        Ok(House {
            admin_view: Arc::new(std::sync::RwLock::new(view)),
            book,
            intakes,
            backlogs,
            health: Arc::new(Health::default()),
            admin_listen: config.file.admin.listen.clone(),
        })
    }

    fn start(&self, config: &Config, sinks: Vec<Ready>) -> Pipeline {
        let parts = (&self.intakes, &self.backlogs);
        Pipeline::start(config, sinks, &self.book, parts, &self.health)
    }

    /// A task of `pipeline` ended: the error that stops the daemon, also said by `/healthz`.
    fn died(
        &self,
        pipeline: &Pipeline,
        kind: &str,
        ended: Option<Result<(tokio::task::Id, std::io::Result<()>), tokio::task::JoinError>>,
    ) -> anyhow::Error {
        let e = ended_error(&pipeline.names, kind, ended);
        self.health.died(format!("{e:#}"));
        e
    }

    /// Reloads the config from its file: a config that is bad, or whose listeners or backlogs
    /// cannot be had, is refused (logged) and the running one goes on; otherwise the pipeline is
    /// replaced. An error only if the running pipeline could not be stopped cleanly.
    async fn reload(&mut self, config: &mut Config, pipeline: &mut Pipeline) -> anyhow::Result<()> {
        let (next, sinks) = match reload(config) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("reload refused, the running config stays: {e:#}");
                return Ok(());
            }
        };
        // Listeners first: a reload that cannot bind changes nothing.
        let opened = self.intakes.update(&next, &self.book).and_then(|()| {
            let sinks = sinks.iter().map(|r| &*r.sink);
            self.backlogs
                .open_all(&next.file.state_dir, sinks, &self.book)
        });
        if let Err(e) = opened {
            tracing::error!("reload refused, the running config stays: {e:#}");
            return Ok(());
        }
        pipeline.stop().await?;
        if next.file.admin.listen != self.admin_listen {
            tracing::warn!(running = %self.admin_listen, "admin.listen changed; the admin endpoint stays where it is until a restart");
        }
        if next.file.log.summary_interval != config.file.log.summary_interval {
            tracing::warn!(
                "log.summary_interval changed; the running interval stays until a restart"
            );
        }
        *config = next;
        if let Ok(mut view) = self.admin_view.write() {
            *view = admin_view_of(config, &self.book, &self.intakes, &sinks);
        }
        *pipeline = self.start(config, sinks);
        tracing::info!(config = %config.paths, "config reloaded");
        Ok(())
    }
}

/// Says (once, at start) when the state directory's budgets together are more than its file
/// system has free: the disk would fill before they do, and a full disk stops what needs it.
fn warn_if_budgets_exceed_disk(config: &Config, sinks: &[Ready]) {
    let c = &config.file;
    let journals = c
        .sources
        .iter()
        .filter(|s| !matches!(s.kind, SourceKind::File(_)))
        .count() as u64;
    let budgets = journals * c.journal.max_bytes.0
        + c.sources.len() as u64 * c.rejected.max_bytes.0
        + sinks.iter().map(|r| r.sink.backlog_bytes).sum::<u64>();
    let Some(free) = free_bytes(&c.state_dir) else {
        return;
    };
    if budgets > free {
        tracing::warn!(state_dir = %c.state_dir.display(), budgets, free, "the journals', backlogs' and rejected lines' budgets add up to more than the state directory's file system has free; lower backlog.max_bytes or journal.max_bytes, or give it more room");
    }
}

/// Bytes free for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a statvfs that outlives the call.
    match unsafe { libc::statvfs(path.as_ptr(), &mut st) } {
        0 => Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64)),
        _ => None,
    }
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
            let (kind, address, follows) = match &s.kind {
                SourceKind::File(file) => (
                    "file",
                    file.file.display().to_string(),
                    admin::Follows::File(file.file.clone()),
                ),
                SourceKind::Socket(socket) => (
                    "socket",
                    socket.socket.display().to_string(),
                    admin::Follows::Journal(intakes.get(&name)?.journal.clone()),
                ),
                SourceKind::Http(http) => (
                    "http",
                    format!("http://{}{}", http.http.0, http.path.0),
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
        crate::attempt_log::configure(&c.state_dir, c.attempts.keep);
        health.expect(c.sources.iter().map(|s| s.name.to_string()));
        for s in &c.sources {
            crate::status::source(s.name.as_str());
        }
        let mut p = Pipeline {
            stop: CancellationToken::new(),
            sources: JoinSet::new(),
            sinks: JoinSet::new(),
            names: HashMap::new(),
        };
        let ports: Vec<SinkPort> = sinks
            .into_iter()
            .filter_map(|ready| p.start_sink(c, ready, backlogs))
            .collect();
        let ports: Arc<[SinkPort]> = ports.into();
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
                stop: p.stop.clone(),
                lines_read: crate::metrics::get().lines_read_of(name),
                unmapped: crate::metrics::get().unmapped_of(name),
                opened: health.opening(name),
                run: Default::default(),
            };
            let intake = intakes.get(name).map(|i| &**i);
            p.start_source(c, s, intake, (dispatch, rejected), book);
        }
        p
    }

    /// Starts `ready`'s delivery (its workers and its backlog's drainer); its port for sources.
    fn start_sink(
        &mut self,
        c: &ConfigFile,
        ready: Ready,
        backlogs: &Backlogs,
    ) -> Option<SinkPort> {
        let (tx, rx) = mpsc::channel(delivery::QUEUE);
        let dead = dead_letter::log(&c.state_dir, &ready.sink.name);
        let sink_name = ready.sink.name.to_string();
        // Opened for every sink before the pipeline starts (`Backlogs::open_all`).
        let backlog = backlogs.get(&sink_name)?;
        let port = SinkPort {
            sink: ready.sink.clone(),
            queue: tx,
            backlog: backlog.clone(),
            full_since: Default::default(),
        };
        let (stop, grace) = (self.stop.clone(), c.shutdown_grace);
        let worker = delivery::run_sink(ready, rx, dead, backlog, stop, grace);
        // Like a source, a sink worker only ends when stopped: any other end is an error.
        let task = self.sinks.spawn(async move {
            worker.await;
            Ok(())
        });
        self.names.insert(task.id(), sink_name);
        Some(port)
    }

    /// Starts source `s`: a file source, or a socket or HTTP source's writer (into its journal)
    /// and its journal's reader.
    fn start_source(
        &mut self,
        c: &ConfigFile,
        s: &SourceSection,
        intake: Option<&Intake>,
        (dispatch, rejected): (Dispatch, Rejected),
        book: &Arc<CheckpointBook>,
    ) {
        let name = s.name.as_str();
        let max_line = usize::try_from(c.max_line_bytes).unwrap_or(usize::MAX);
        if let SourceKind::File(file) = &s.kind {
            let source = FileSource {
                path: file.file.clone(),
                read_from: file.read_from,
                max_line,
                book: book.clone(),
                dispatch,
            };
            let task = self.sources.spawn(source.run());
            self.names.insert(task.id(), name.to_string());
            return;
        }
        // The intakes were made from this config: a source with none cannot happen.
        let Some(intake) = intake else {
            return;
        };
        self.start_intake(c, s, intake, rejected);
        let reader = JournalSource {
            journal: intake.journal.clone(),
            max_line,
            book: book.clone(),
            dispatch,
        };
        let task = self.sources.spawn(reader.run());
        self.names.insert(task.id(), name.to_string());
    }

    /// Starts what writes a socket or HTTP source's journal: its listener's server.
    fn start_intake(
        &mut self,
        c: &ConfigFile,
        s: &SourceSection,
        intake: &Intake,
        rejected: Rejected,
    ) {
        let (name, stop) = (s.name.as_str(), self.stop.clone());
        let max_line = usize::try_from(c.max_line_bytes).unwrap_or(usize::MAX);
        let journal = intake.journal.clone();
        let task = match (&s.kind, &intake.listener) {
            (SourceKind::Socket(socket), Listener::Socket(listener)) => {
                let source = SocketSource {
                    name: name.into(),
                    listener: listener.clone(),
                    journal,
                    max_connections: socket.max_connections.0,
                    max_line,
                    rejected,
                    stop,
                };
                self.sources.spawn(source.run())
            }
            (SourceKind::Http(http), Listener::Http(listener)) => 'http: {
                // Checked with the config; files changed since make the source fail, never
                // serve plain HTTP instead.
                let tls = match http
                    .tls
                    .as_ref()
                    .map(crate::source::tls::server_config)
                    .transpose()
                {
                    Ok(tls) => tls,
                    Err((key, e)) => {
                        let e = std::io::Error::other(format!("tls.{key}: {e}"));
                        break 'http self.sources.spawn(async move { Err(e) });
                    }
                };
                let source = HttpSource {
                    name: name.into(),
                    listener: listener.clone(),
                    journal,
                    path: http.path.0.clone(),
                    token: http.auth_token.as_ref().map(|t| Token::new(t.expose())),
                    verifier: http
                        .verify()
                        .map(|(scheme, secrets)| Verifier::new(scheme, secrets)),
                    tls,
                    max_body: http.max_body_bytes.as_usize(),
                    max_line,
                    format: s.format,
                    grace: c.shutdown_grace,
                    max_connections: http.max_connections.0,
                    rejected,
                    stop,
                };
                self.sources.spawn(source.run())
            }
            // The intakes were made from this config: a mismatch cannot happen.
            _ => return,
        };
        self.names.insert(task.id(), name.to_string());
    }

    /// Stops reading and waits; sink workers give deliveries in flight `shutdown_grace`. A task
    /// that panicked meanwhile is an error, even if the stop came first.
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let sources = join_all(&mut self.sources, &self.names, "source").await;
        let sinks = join_all(&mut self.sinks, &self.names, "sink").await;
        crate::attempt_log::flush_all();
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
