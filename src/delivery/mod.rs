//! Delivery: one task per sink takes records from its queue, groups them into requests, sends them
//! with retries, and acknowledges each record once it is delivered or dead-lettered.
//!
//! `concurrency` requests run at once (1 keeps file order). A record is acknowledged only after its
//! outcome is durable: the receiver said 2xx, the file sink fsynced, or its dead letter was written.
//! A dead letter that cannot be written is tried again until it is; the record stays
//! unacknowledged meanwhile, so if flagtail stops first it is read again after a restart. On
//! shutdown no new request starts, retries
//! waiting for their backoff give up at once (unacknowledged, so re-sent later with the same key),
//! and requests on the wire get `shutdown_grace` to finish.

pub mod dead_letter;
pub mod http;
pub mod nats;
pub mod replay;
pub mod retry;
mod write;

use crate::record::Record;
use crate::record_log::RecordLog;
use crate::sink::{Output, Sink, unix_now};
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a sink's messages travel: what its delivery workers share.
pub enum Transport {
    /// Webhooks: how to open connections (TLS roots and `ca_file`).
    Http(http::Connector),
    /// NATS: one client, shared by the workers.
    Nats(Arc<nats::Publisher>),
    /// `stdout` and `file` sinks: nothing to keep.
    Write,
}

impl Transport {
    /// The transport of `sink` (for webhooks: trusting the webpki roots and `ca_file`), or the
    /// config key at fault and why.
    pub fn for_sink(sink: &Sink) -> std::result::Result<Transport, (&'static str, String)> {
        match &sink.output {
            Output::Webhook(hook) => http::connector(hook.ca_file.as_deref())
                .map(Transport::Http)
                .map_err(|e| ("ca_file", e)),
            Output::Nats(bus) => {
                nats::Publisher::new(&sink.name, sink.concurrency, bus, sink.scrubber.clone())
                    .map(|p| Transport::Nats(Arc::new(p)))
            }
            Output::Stdout | Output::File(_) => Ok(Transport::Write),
        }
    }

    /// What one delivery worker holds: its own connection, for webhooks.
    pub fn link(&self) -> Link {
        match self {
            Transport::Http(connector) => {
                Link::Http(Box::new(http::Connection::new(connector.clone())))
            }
            Transport::Nats(publisher) => Link::Nats(publisher.clone()),
            Transport::Write => Link::Write,
        }
    }
}

/// One delivery worker's end of a transport.
pub enum Link {
    Http(Box<http::Connection>),
    Nats(Arc<nats::Publisher>),
    Write,
}

/// A sink ready to run: what it is and how its messages travel.
#[derive(Clone)]
pub struct Ready {
    pub sink: Arc<Sink>,
    pub transport: Arc<Transport>,
}

/// Records queued per sink; memory is bounded by the sources' budgets, this only smooths bursts.
pub const QUEUE: usize = 1024;
/// File and stdout sinks write and fsync up to this many records at once.
const WRITE_GROUP: usize = 512;

/// How a delivery ended.
#[derive(Debug, Clone)]
pub enum Result {
    Delivered {
        attempts: u32,
    },
    Failed {
        /// Why, safe to log (never quotes a rendered body).
        reason: String,
        attempts: u32,
        /// The receiver's last answer, when it answered.
        status: Option<u16>,
        /// The start of a body that could not be sent, for the dead-letter file only.
        excerpt: Option<String>,
        /// Retries ran out (no answer, or refusals in `retry_on`): the receiver may take it
        /// later, so `dead_letter.auto_replay` sends it again once the sink delivers. A final
        /// refusal or a body that cannot be made is not.
        retryable: bool,
    },
    /// Stopped by shutdown before an outcome; not acknowledged.
    Abandoned,
}

/// Runs the sink's `concurrency` delivery workers until the queue closes or `stop` fires, then
/// gives requests on the wire `grace`. Each worker takes the next group of records from the queue
/// (one request's worth, or a group write), delivers it on its own connection, and only then takes
/// more; with `concurrency: 1` records go out in order.
pub async fn run_sink(
    Ready { sink, transport }: Ready,
    queue: mpsc::Receiver<Arc<Record>>,
    dead: RecordLog,
    stop: CancellationToken,
    grace: Duration,
) {
    let queue = Arc::new(Mutex::new(queue));
    let healer = match sink.auto_replay {
        true => Some(Arc::new(Healer::new(&dead).await)),
        false => None,
    };
    let mut workers = JoinSet::new();
    for _ in 0..sink.concurrency.max(1) {
        let link = transport.link();
        let (sink, queue, dead, stop) = (sink.clone(), queue.clone(), dead.clone(), stop.clone());
        workers.spawn(worker(sink, link, queue, dead, healer.clone(), stop));
    }
    // The automatic replay runs beside the workers and stops with them.
    let mut heal = JoinSet::new();
    if let Some(healer) = healer {
        let (sink, link, dead, stop) = (sink.clone(), transport.link(), dead.clone(), stop.clone());
        heal.spawn(heal_dead_letters(sink, link, dead, healer, stop));
    }
    let ended = async {
        while let Some(done) = workers.join_next().await {
            surface_panic(done);
        }
    };
    tokio::select! {
        () = ended => {
            // Cut off mid-replay, the taken letters stay in SINK.replaying.jsonl for the next one.
            heal.abort_all();
            while heal.join_next().await.is_some() {}
            return;
        }
        () = stop.cancelled() => {}
    }
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = workers.join_next().await {
            surface_panic(done);
        }
        while let Some(done) = heal.join_next().await {
            surface_panic(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(sink = %sink.name, left = workers.len(), "shutdown_grace ran out; unfinished deliveries will be sent again after restart");
        workers.abort_all();
        heal.abort_all();
        // Wait for the aborts, so no late acknowledgement reaches a tracker after a reload.
        while workers.join_next().await.is_some() {}
        while heal.join_next().await.is_some() {}
    }
}

/// A sink's automatic replay (`dead_letter.auto_replay`): retry-exhausted dead letters wait until
/// the sink delivers again, then go out in the background.
struct Healer {
    /// Retry-exhausted letters may be waiting.
    needed: AtomicBool,
    /// Wakes the replay task.
    wake: Notify,
}

/// After a round in which a letter failed again, the next waits at least the sink's
/// `max_backoff_duration`, however many deliveries wake it: one receiver that refuses one letter
/// must not have the same letter retried after every event.
fn cooldown(sink: &Sink) -> Duration {
    sink.retry.max_elapsed.max(Duration::from_secs(1))
}

impl Healer {
    /// Looks at the dead-letter file once, at start: a replay cut off is resumed at once; waiting
    /// letters go once the sink delivers.
    async fn new(dead: &RecordLog) -> Healer {
        let log = dead.clone();
        let (pending, cut_off) =
            tokio::task::spawn_blocking(move || (replay::pending(&log), log.replaying().exists()))
                .await
                .unwrap_or((true, false));
        let healer = Healer {
            needed: AtomicBool::new(pending),
            wake: Notify::new(),
        };
        if cut_off {
            healer.wake.notify_one();
        }
        healer
    }

    /// The sink delivered: the receiver is back, so waiting letters can go.
    fn delivered(&self) {
        if self.needed.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }
}

async fn heal_dead_letters(
    sink: Arc<Sink>,
    mut link: Link,
    dead: RecordLog,
    healer: Arc<Healer>,
    stop: CancellationToken,
) {
    let mut not_before = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = healer.wake.notified() => {}
        }
        if Instant::now() < not_before || !healer.needed.swap(false, Ordering::SeqCst) {
            continue;
        }
        let select = |letter: &dead_letter::DeadLetter| letter.retryable;
        let options = replay::Options {
            select: &select,
            stop_at_failure: true,
            report: None,
        };
        match replay::replay(&sink, &mut link, &dead, &options, &stop).await {
            Ok(Some(done)) => {
                if done.delivered > 0 || done.failed > 0 {
                    tracing::info!(sink = %sink.name, delivered = done.delivered, failed_again = done.failed, "replayed dead letters now that the sink delivers again");
                }
                if done.failed > 0 || stop.is_cancelled() {
                    healer.needed.store(true, Ordering::SeqCst);
                    not_before = Instant::now() + cooldown(&sink);
                }
            }
            // Another replay runs (a `flagtail replay`): try again after the next delivery.
            Ok(None) => healer.needed.store(true, Ordering::SeqCst),
            Err(e) => {
                tracing::error!(sink = %sink.name, path = %dead.path().display(), error = %e, "cannot replay dead letters; trying again after the next delivery");
                healer.needed.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// One delivery worker: takes a group of records, delivers it, makes the outcome durable, and
/// goes back for more, until the queue closes or `stop` fires.
async fn worker(
    sink: Arc<Sink>,
    mut link: Link,
    queue: Arc<Mutex<mpsc::Receiver<Arc<Record>>>>,
    dead: RecordLog,
    healer: Option<Arc<Healer>>,
    stop: CancellationToken,
) {
    while let Some(batch) = next_group(&sink, &queue, &stop).await {
        #[cfg(debug_assertions)]
        fault_injection(&sink);
        let healer = healer.as_deref();
        // A group was gathered on the thread that read its records (each record's send woke this
        // worker there). Yielding once per group lets the other runtime thread take the render,
        // the signature and the send, so reading and delivering use both cores; per record it
        // would be a cross-thread hand-off each, which costs more than it gains.
        if batch.len() > 1 && !matches!(sink.output, Output::Stdout | Output::File(_)) {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        for (range, result) in deliver(&sink, &mut link, &batch, &stop).await {
            conclude(&sink, &dead, healer, &batch[range], result, started, &stop).await;
        }
    }
}

/// Makes a message's outcome durable and acknowledges its records; tells the healer.
async fn conclude(
    sink: &Sink,
    dead: &RecordLog,
    healer: Option<&Healer>,
    records: &[Arc<Record>],
    result: Result,
    started: Instant,
    stop: &CancellationToken,
) {
    let (delivered, retryable) = match &result {
        Result::Delivered { .. } => (true, false),
        Result::Failed { retryable, .. } => (false, *retryable),
        Result::Abandoned => (false, false),
    };
    finish(sink, dead, records, result, started, stop).await;
    if let Some(h) = healer {
        if retryable {
            h.needed.store(true, Ordering::SeqCst);
        }
        if delivered {
            h.delivered();
        }
    }
}

/// The next group of records for one request (`batch.max_events`, waiting up to `linger` for
/// more) or one group write; `None` once the queue is closed or `stop` fired.
async fn next_group(
    sink: &Sink,
    queue: &Mutex<mpsc::Receiver<Arc<Record>>>,
    stop: &CancellationToken,
) -> Option<Vec<Arc<Record>>> {
    let group = match sink.output {
        Output::Webhook(_) | Output::Nats(_) => sink.max_events,
        Output::Stdout | Output::File(_) => sink.max_events.max(WRITE_GROUP),
    };
    let mut queue = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        q = queue.lock() => q,
    };
    let first = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        r = queue.recv() => r?,
    };
    let mut batch = vec![first];
    while batch.len() < group {
        match queue.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    if batch.len() < sink.max_events && !sink.linger.is_zero() {
        let until = Instant::now() + sink.linger;
        while batch.len() < sink.max_events {
            tokio::select! {
                r = queue.recv() => match r { Some(r) => batch.push(r), None => break },
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.cancelled() => break,
            }
        }
        // No new request after stop: the records stay unacknowledged and are read again.
        if stop.is_cancelled() {
            return None;
        }
    }
    Some(batch)
}

/// A delivery that panicked left its records unacknowledged for good: the sink worker goes down
/// with it, so the daemon stops (exit 1) instead of holding the source back in silence.
fn surface_panic(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Test builds only: `FLAGTAIL_TEST_FAULT=sink-panic:NAME` makes sink NAME's worker panic when its
/// first record arrives, so the tests can check that a dead sink worker stops the daemon.
#[cfg(debug_assertions)]
fn fault_injection(sink: &Sink) {
    if std::env::var("FLAGTAIL_TEST_FAULT").ok().as_deref()
        == Some(&format!("sink-panic:{}", sink.name))
    {
        panic!("injected fault in sink {}", sink.name);
    }
}

/// The outcome of a delivery for `records[range]`; a delivery reports one per group of records
/// that shared a fate.
pub type Outcomes = Vec<(Range<usize>, Result)>;

/// Delivers `records` over `link`, retrying as the sink's policy says: one request (a webhook), one
/// message per record, published in a pipeline (NATS), or one group write (file, stdout).
pub async fn deliver(
    sink: &Sink,
    link: &mut Link,
    records: &[Arc<Record>],
    stop: &CancellationToken,
) -> Outcomes {
    let all = 0..records.len();
    match (&sink.output, link) {
        (Output::Stdout | Output::File(_), _) => write::deliver(sink, records, stop).await,
        // Boxed: a pipeline's state is large, and inline it would be moved with every webhook
        // request's too.
        (Output::Nats(bus), Link::Nats(publisher)) => {
            Box::pin(nats::deliver(sink, bus, publisher, records, stop)).await
        }
        (Output::Webhook(hook), Link::Http(conn)) => {
            vec![(all, send(sink, hook, conn, records, stop).await)]
        }
        _ => vec![(
            all,
            Result::Failed {
                reason: "the sink was given another sink's transport".into(),
                attempts: 0,
                status: None,
                excerpt: None,
                retryable: false,
            },
        )],
    }
}

/// Renders one request of `records` and sends it until the sink's retry policy says it is done;
/// none is started once `stop` fired.
async fn send(
    sink: &Sink,
    hook: &crate::sink::Webhook,
    conn: &mut http::Connection,
    records: &[Arc<Record>],
    stop: &CancellationToken,
) -> Result {
    if stop.is_cancelled() {
        return Result::Abandoned;
    }
    let body = match sink.renderer.render_bounded(records).await {
        Ok(body) => Bytes::from(body),
        Err(e) => return render_failed(e),
    };
    let key = Sink::delivery_key(records);
    let mut tries = retry::Tries::new(sink, &key);
    loop {
        // Every attempt, retries too, takes a slot of the rate limit.
        if let Some(pace) = &sink.pace
            && !pace.wait(stop).await
        {
            return Result::Abandoned;
        }
        let attempt = conn.post(hook, &key, unix_now(), &body).await;
        if let Some(done) = tries.settle(attempt, stop).await {
            return done;
        }
    }
}

/// A message that could not be made: dead-lettered, never retried.
pub(crate) fn render_failed(e: crate::sink::render::RenderError) -> Result {
    Result::Failed {
        reason: e.reason,
        attempts: 0,
        status: None,
        excerpt: e.excerpt,
        retryable: false,
    }
}

/// Makes the outcome durable, then acknowledges the records.
async fn finish(
    sink: &Sink,
    dead: &RecordLog,
    records: &[Arc<Record>],
    result: Result,
    started: Instant,
    stop: &CancellationToken,
) {
    sink.metrics
        .seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Result::Delivered { .. } => {
            sink.metrics.delivered.inc_by(records.len() as u64);
            Record::ack_all(records);
        }
        Result::Failed {
            reason,
            attempts,
            status,
            excerpt,
            retryable,
        } => {
            let lines: Vec<Vec<u8>> = records
                .iter()
                .map(|r| {
                    let mut letter = dead_letter::DeadLetter::new(&sink.name, r, attempts, &reason);
                    letter.body_excerpt = excerpt.clone();
                    letter.retryable = retryable;
                    serde_json::to_vec(&letter).unwrap_or_default()
                })
                .collect();
            // Tried until written (a full disk frees up), or until shutdown: then the events
            // stay unacknowledged and are read again after a restart.
            let lines = Arc::new(lines);
            let mut wait = Duration::from_millis(200);
            loop {
                let (log, batch) = (dead.clone(), lines.clone());
                let written = tokio::task::spawn_blocking(move || log.append(&batch)).await;
                match written {
                    Ok(Ok(())) => {
                        // One line per failed delivery, however many events it carried.
                        if let Some(first) = records.first() {
                            tracing::warn!(sink = %sink.name, url = %sink.shown(), status, attempts, events = records.len(), source = %first.source.name, offset = first.offset, key = %first.key(), "dead-lettered: {reason}");
                        }
                        sink.metrics.state.failed(&reason);
                        sink.metrics.dead_letter.inc_by(records.len() as u64);
                        Record::ack_all(records);
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(sink = %sink.name, path = %dead.path().display(), error = %e, retry_in = ?wait, "cannot write dead letters; holding these events until they can be")
                    }
                    Err(e) => {
                        tracing::error!(sink = %sink.name, error = %e, "dead-letter writer failed")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => wait = (wait * 2).min(Duration::from_secs(30)),
                    () = stop.cancelled() => {
                        tracing::error!(sink = %sink.name, events = records.len(), "stopping with dead letters unwritten; the events are read again after a restart");
                        break;
                    }
                }
            }
        }
        Result::Abandoned => {}
    }
    // After the counters: a summary that clears the mark sees what marked it.
    crate::status::touch();
}
