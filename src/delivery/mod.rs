//! Delivery: one task per sink takes records from its queue, groups them into requests, sends them,
//! and acknowledges each record once it is delivered, dead-lettered, or durable in the sink's
//! backlog ([`backlog`]: a sink that fails or stalls keeps its events there and drains them in
//! order, so it never holds the source or another sink).
//!
//! `concurrency` requests run at once (1 keeps file order). A record is acknowledged only after its
//! outcome is durable: the receiver said 2xx, the file sink fsynced, its dead letter was written,
//! or its backlog append was fsynced.
//! A dead letter that cannot be written is tried again until it is; the record stays
//! unacknowledged meanwhile, so if flagtail stops first it is read again after a restart. On
//! shutdown no new request starts, retries
//! waiting for their backoff give up at once (unacknowledged, so re-sent later with the same key),
//! and requests on the wire get `shutdown_grace` to finish.

pub mod backlog;
pub mod dead_letter;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod replay;
pub mod retry;
mod write;

use crate::record::Record;
use crate::record_log::RecordLog;
use crate::sink::{Output, Sink, unix_now};
use backlog::Backlog;
use bytes::Bytes;
use retry::Patience;
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
    /// Kafka: one client, shared by the workers.
    Kafka(Arc<kafka::Producer>),
    /// `stdout` and `file` sinks: nothing to keep.
    Write,
}

impl Transport {
    /// The transport of `sink` (for webhooks: trusting the webpki roots and `ca_file`), or the
    /// config key at fault and why.
    pub fn for_sink(sink: &Sink) -> std::result::Result<Transport, (&'static str, String)> {
        match &sink.output {
            Output::Webhook(hook) => {
                http::connector(hook.ca_file.as_deref(), hook.client_cert.as_ref())
                    .map(Transport::Http)
            }
            Output::Nats(bus) => {
                nats::Publisher::new(&sink.name, sink.concurrency, bus, sink.scrubber.clone())
                    .map(|p| Transport::Nats(Arc::new(p)))
            }
            Output::Kafka(bus) => {
                kafka::Producer::new(&sink.name, bus).map(|p| Transport::Kafka(Arc::new(p)))
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
            Transport::Kafka(producer) => Link::Kafka(producer.clone()),
            Transport::Write => Link::Write,
        }
    }
}

/// One delivery worker's end of a transport.
pub enum Link {
    Http(Box<http::Connection>),
    Nats(Arc<nats::Publisher>),
    Kafka(Arc<kafka::Producer>),
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
    /// Worth another try later: handed to the sink's backlog (the live path only) after
    /// `attempts` (0: not tried, behind one that was), to be tried again after `wait` (the
    /// backoff, or the receiver's `Retry-After`).
    Deferred {
        reason: String,
        attempts: u32,
        wait: Duration,
    },
    /// Stopped by shutdown before an outcome; not acknowledged.
    Abandoned,
}

/// What a sink's workers and its drainer share.
struct Crew {
    sink: Arc<Sink>,
    dead: RecordLog,
    healer: Option<Arc<Healer>>,
    backlog: Arc<Backlog>,
}

/// Runs the sink's `concurrency` delivery workers and its backlog's drainer until the queue
/// closes or `stop` fires, then gives requests on the wire `grace`. Each worker takes the next
/// group of records from the queue (one request's worth, or a group write), delivers it on its
/// own connection (or, while the sink spills, appends it to the backlog), and only then takes
/// more; with `concurrency: 1` records go out in order.
pub async fn run_sink(
    Ready { sink, transport }: Ready,
    queue: mpsc::Receiver<Arc<Record>>,
    dead: RecordLog,
    backlog: Arc<Backlog>,
    stop: CancellationToken,
    grace: Duration,
) {
    sink.metrics.state.set_down_after(sink.retry.max_elapsed);
    let queue = Arc::new(Mutex::new(queue));
    let healer = match sink.auto_replay {
        true => Some(Arc::new(Healer::new(&dead).await)),
        false => None,
    };
    let crew = Arc::new(Crew {
        sink: sink.clone(),
        dead,
        healer,
        backlog,
    });
    let mut workers = JoinSet::new();
    for _ in 0..sink.concurrency.max(1) {
        let (crew, link) = (crew.clone(), transport.link());
        workers.spawn(worker(crew, link, queue.clone(), stop.clone()));
    }
    // The backlog's drainer and the automatic replay run beside the workers and stop with them:
    // told to stop when the workers end, so a replay under way settles its letters (those sent
    // leave the dead-letter file) instead of being cut off and sending them again at the next
    // start.
    let quit = stop.child_token();
    let mut beside = JoinSet::new();
    beside.spawn(drain(crew.clone(), transport.link(), quit.clone()));
    if let Some(healer) = crew.healer.clone() {
        let (sink, link, dead) = (sink.clone(), transport.link(), crew.dead.clone());
        beside.spawn(heal_dead_letters(sink, link, dead, healer, quit.clone()));
    }
    let ended = async {
        while let Some(done) = workers.join_next().await {
            surface_panic(done);
        }
    };
    tokio::select! {
        () = ended => {}
        () = stop.cancelled() => {}
    }
    quit.cancel();
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = workers.join_next().await {
            surface_panic(done);
        }
        while let Some(done) = beside.join_next().await {
            surface_panic(done);
        }
    })
    .await;
    if drained.is_err() {
        // Cut off mid-replay, the taken letters stay in SINK.replaying.jsonl for the next one.
        tracing::warn!(sink = %sink.name, left = workers.len() + beside.len(), "shutdown_grace ran out; unfinished deliveries will be sent again after restart");
        workers.abort_all();
        beside.abort_all();
        // Wait for the aborts, so no late acknowledgement reaches a tracker after a reload.
        while workers.join_next().await.is_some() {}
        while beside.join_next().await.is_some() {}
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
    // A wake during the cool-down is kept for its end, not lost (the sink may deliver no more).
    let mut woken_early = false;
    // After a round that failed, the next one comes by itself at the latest then, delivery or
    // not: a quiet source brings no delivery to wake it.
    let mut again_at: Option<Instant> = None;
    loop {
        let cooling = woken_early && Instant::now() < not_before;
        let again = again_at.unwrap_or_else(Instant::now);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = healer.wake.notified() => {}
            () = tokio::time::sleep_until(not_before), if cooling => {}
            () = tokio::time::sleep_until(again), if again_at.is_some() => {}
        }
        woken_early = Instant::now() < not_before;
        if woken_early || !healer.needed.swap(false, Ordering::SeqCst) {
            continue;
        }
        again_at = None;
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
                    again_at = Some(not_before.max(Instant::now() + sink.retry.max_probe_interval));
                }
            }
            // Another replay runs (a `flagtail replay`): try again after the next delivery, or
            // `max_probe_interval`.
            Ok(None) => {
                healer.needed.store(true, Ordering::SeqCst);
                again_at = Some(Instant::now() + sink.retry.max_probe_interval);
            }
            Err(e) => {
                tracing::error!(sink = %sink.name, path = %dead.path().display(), error = %e, "cannot replay dead letters; trying again after the next delivery or max_probe_interval");
                healer.needed.store(true, Ordering::SeqCst);
                again_at = Some(Instant::now() + sink.retry.max_probe_interval);
            }
        }
    }
}

/// One delivery worker: takes a group of records, delivers it (or, while the sink spills, appends
/// it to the backlog), makes the outcome durable, and goes back for more, until the queue closes
/// or `stop` fires.
async fn worker(
    crew: Arc<Crew>,
    mut link: Link,
    queue: Arc<Mutex<mpsc::Receiver<Arc<Record>>>>,
    stop: CancellationToken,
) {
    let sink = &crew.sink;
    while let Some(batch) = next_group(sink, &queue, &stop).await {
        #[cfg(debug_assertions)]
        fault_injection(sink);
        if crew.backlog.spilling() {
            // Whatever else waits goes with it: one append, one fsync.
            let batch = take_waiting(&queue, batch);
            crew.keep(&batch, 0, &stop).await;
            continue;
        }
        // A group was gathered on the thread that read its records (each record's send woke this
        // worker there). Yielding once per group lets the other runtime thread take the render,
        // the signature and the send, so reading and delivering use both cores; per record it
        // would be a cross-thread hand-off each, which costs more than it gains.
        if batch.len() > 1 && !matches!(sink.output, Output::Stdout | Output::File(_)) {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let patience = Patience::Live(&crew.backlog);
        for (range, result) in deliver(sink, &mut link, &batch, &stop, patience).await {
            crew.conclude(&batch[range], result, started, &stop).await;
        }
    }
}

/// The backlog's drainer: sends what waits in the backlog, oldest first, one group at a time, each
/// until the receiver answers; saves how far it got; turns the sink live once it has sent
/// everything; makes room when the backlog overflows.
async fn drain(crew: Arc<Crew>, mut link: Link, stop: CancellationToken) {
    let backlog = &crew.backlog;
    let mut entries = backlog::Entries::of(backlog);
    backlog.recount(entries.position()).await;
    while !stop.is_cancelled() {
        if let Some(until) = backlog::overflow_until(backlog) {
            crew.make_room(&mut entries, until, &stop).await;
            continue;
        }
        let group = match entries.next_group(crew.sink.max_events) {
            Ok(Some(group)) => group,
            Ok(None) => {
                backlog::caught_up(backlog, &entries).await;
                tokio::select! {
                    _ = entries.wait(&stop) => {}
                    () = backlog::wake(backlog) => {}
                }
                continue;
            }
            Err(e) => {
                tracing::error!(sink = %crew.sink.name, error = %e, "cannot read the sink's backlog; trying again in 1s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
        };
        // What the live attempt that spilled it was told to wait (a backoff, a Retry-After).
        if !backlog.held(&stop).await {
            return;
        }
        let started = Instant::now();
        let patience = Patience::Drain {
            backlog,
            tried: group.tried,
        };
        let outcomes = deliver(&crew.sink, &mut link, &group.records, &stop, patience).await;
        let mut done = true;
        for (range, result) in outcomes {
            done &= crew
                .conclude(&group.records[range], result, started, &stop)
                .await;
        }
        // Stopped before every outcome was durable: sent again after a restart, same keys.
        if !done {
            return;
        }
        backlog::sent(backlog, &group);
    }
}

impl Crew {
    /// Makes a message's outcome durable and acknowledges its records; tells the healer. False
    /// if it could not be made durable before `stop` (the records stay unacknowledged).
    async fn conclude(
        &self,
        records: &[Arc<Record>],
        result: Result,
        started: Instant,
        stop: &CancellationToken,
    ) -> bool {
        let (delivered, retryable) = match &result {
            Result::Delivered { .. } => (true, false),
            Result::Failed { retryable, .. } => (false, *retryable),
            Result::Deferred { attempts, wait, .. } => {
                self.backlog.hold_for(*wait);
                return self.keep(records, *attempts, stop).await;
            }
            Result::Abandoned => return false,
        };
        let durable = finish(&self.sink, &self.dead, records, result, started, stop).await;
        if let Some(h) = &self.healer {
            if retryable {
                h.needed.store(true, Ordering::SeqCst);
            }
            if delivered {
                h.delivered();
            }
        }
        durable
    }

    /// Puts `records` in the backlog (`tried`: attempts made to send them as one) and
    /// acknowledges them once that is durable; records larger than the backlog can hold are
    /// dead-lettered. False if `stop` fired first.
    async fn keep(&self, records: &[Arc<Record>], tried: u32, stop: &CancellationToken) -> bool {
        let Ok(too_large) = self.backlog.spill(records, tried, stop).await else {
            return false;
        };
        if too_large.is_empty() {
            Record::ack_all(records);
            return true;
        }
        let (kept, refused): (Vec<_>, Vec<_>) = records
            .iter()
            .enumerate()
            .partition(|(i, _)| !too_large.contains(i));
        let kept: Vec<Arc<Record>> = kept.into_iter().map(|(_, r)| r.clone()).collect();
        Record::ack_all(&kept);
        let refused: Vec<Arc<Record>> = refused.into_iter().map(|(_, r)| r.clone()).collect();
        let result = Result::Failed {
            reason: "larger than the sink's backlog.max_bytes".into(),
            attempts: tried,
            status: None,
            excerpt: None,
            retryable: false,
        };
        finish(
            &self.sink,
            &self.dead,
            &refused,
            result,
            Instant::now(),
            stop,
        )
        .await
    }

    /// The backlog is full (`when_full: dead_letter`): its oldest entries go to the dead-letter
    /// file, retryable, up to `until` (the end of its oldest segment, which trimming then frees);
    /// one log line for all of them.
    async fn make_room(
        &self,
        entries: &mut backlog::Entries,
        until: u64,
        stop: &CancellationToken,
    ) {
        let mut moved = 0;
        while entries.position() < until && !stop.is_cancelled() {
            let Ok(Some(group)) = entries.next_group(self.sink.max_events) else {
                break;
            };
            let letters = group.records.iter().map(|r| {
                let mut letter = dead_letter::DeadLetter::new(
                    &self.sink.name,
                    r,
                    group.tried,
                    Backlog::OVERFLOW,
                );
                letter.retryable = true;
                serde_json::to_vec(&letter).unwrap_or_default()
            });
            if !write_dead_letters(&self.sink, &self.dead, letters.collect(), stop).await {
                return;
            }
            let n = group.records.len();
            self.sink.metrics.dead_letter.inc_by(n as u64);
            self.sink.metrics.state.dead_lettered(n as u64);
            moved += n;
            backlog::sent(&self.backlog, &group);
        }
        backlog::overflow_done(&self.backlog);
        // Room made already, not yet given back by trimming (it follows the next saved position).
        if moved == 0 {
            return;
        }
        if let Some(h) = &self.healer {
            h.needed.store(true, Ordering::SeqCst);
        }
        self.sink.metrics.state.failed(Backlog::OVERFLOW);
        crate::status::touch();
        tracing::warn!(sink = %self.sink.name, events = moved, max_bytes = self.sink.backlog_bytes, "dead-lettered: {}, to make room (replayed by themselves once the sink delivers, with dead_letter.auto_replay)", Backlog::OVERFLOW);
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
        Output::Webhook(_) | Output::Nats(_) | Output::Kafka(_) => sink.max_events,
        Output::Stdout | Output::File(_) => sink.max_events.max(WRITE_GROUP),
    };
    let mut queue = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        q = queue.lock() => q,
    };
    let first = match queue.try_recv() {
        Ok(r) => r,
        Err(_) => {
            // The queue ran empty: the attempts waiting in memory go to the attempt log now.
            if crate::attempt_log::enabled() {
                crate::attempt_log::flush(&sink.name);
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                r = queue.recv() => r?,
            }
        }
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

/// Records a spill takes from the queue at once: one append and one fsync for them.
const SPILL_GROUP: usize = 128;

/// `batch` and the records waiting in the queue now, up to [`SPILL_GROUP`] in all.
fn take_waiting(
    queue: &Mutex<mpsc::Receiver<Arc<Record>>>,
    mut batch: Vec<Arc<Record>>,
) -> Vec<Arc<Record>> {
    // Another worker may hold the queue while it waits for the next record: then this batch goes
    // as it is, rather than wait for a record that may not come.
    let Ok(mut queue) = queue.try_lock() else {
        return batch;
    };
    while batch.len() < SPILL_GROUP {
        match queue.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch
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

/// Delivers `records` over `link`, retrying as `patience` says: one request (a webhook), one
/// message per record, published in a pipeline (NATS), or one group write (file, stdout).
pub async fn deliver(
    sink: &Sink,
    link: &mut Link,
    records: &[Arc<Record>],
    stop: &CancellationToken,
    patience: Patience<'_>,
) -> Outcomes {
    let all = 0..records.len();
    match (&sink.output, link) {
        (Output::Stdout | Output::File(_), _) => {
            write::deliver(sink, records, stop, patience).await
        }
        // Boxed: a pipeline's state is large, and inline it would be moved with every webhook
        // request's too.
        (Output::Nats(bus), Link::Nats(publisher)) => {
            Box::pin(nats::deliver(sink, bus, publisher, records, stop, patience)).await
        }
        (Output::Kafka(bus), Link::Kafka(producer)) => {
            Box::pin(kafka::deliver(sink, bus, producer, records, stop, patience)).await
        }
        (Output::Webhook(hook), Link::Http(conn)) => {
            vec![(all, send(sink, hook, conn, records, stop, patience).await)]
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

/// What a live attempt cut short by a stall says.
const STALLED: &str = "no answer while the sink's queue was full; handed to the backlog";

/// Renders one request of `records` and sends it until `patience` says it is done; none is
/// started once `stop` fired. On the live path a stall cuts the attempt (or its wait for the
/// rate limit) short.
async fn send(
    sink: &Sink,
    hook: &crate::sink::Webhook,
    conn: &mut http::Connection,
    records: &[Arc<Record>],
    stop: &CancellationToken,
    patience: Patience<'_>,
) -> Result {
    if stop.is_cancelled() {
        return Result::Abandoned;
    }
    let body = match sink.renderer.render_bounded(records).await {
        Ok(body) => Bytes::from(body),
        Err(e) => return render_failed(e),
    };
    let key = Sink::delivery_key(records);
    let mut tries = retry::Tries::new(sink, &key, patience, records);
    loop {
        let once = attempt(sink, hook, conn, &key, &body, stop);
        let attempt = match patience {
            Patience::Live(backlog) => tokio::select! {
                biased;
                a = once => a,
                () = backlog.stalled() => Some(retry::Attempt::Retry { reason: STALLED.into() }),
            },
            _ => once.await,
        };
        let Some(attempt) = attempt else {
            return Result::Abandoned;
        };
        if let Some(done) = tries.settle(attempt, stop).await {
            return done;
        }
    }
}

/// One attempt to post `body`, after a slot of the rate limit (every attempt, retries too, takes
/// one); `None` if `stop` fired while waiting for it.
async fn attempt(
    sink: &Sink,
    hook: &crate::sink::Webhook,
    conn: &mut http::Connection,
    key: &str,
    body: &Bytes,
    stop: &CancellationToken,
) -> Option<retry::Attempt> {
    if let Some(pace) = &sink.pace
        && !pace.wait(stop).await
    {
        return None;
    }
    Some(conn.post(hook, key, unix_now(), body).await)
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

/// Makes the outcome durable, then acknowledges the records. False if a dead letter could not be
/// written before `stop` (the records stay unacknowledged), or nothing was concluded.
async fn finish(
    sink: &Sink,
    dead: &RecordLog,
    records: &[Arc<Record>],
    result: Result,
    started: Instant,
    stop: &CancellationToken,
) -> bool {
    sink.metrics
        .seconds
        .observe(started.elapsed().as_secs_f64());
    let done = match result {
        Result::Delivered { .. } => {
            sink.metrics.delivered.inc_by(records.len() as u64);
            sink.metrics.state.delivered(records.len() as u64);
            Record::ack_all(records);
            true
        }
        Result::Failed {
            reason,
            attempts,
            status,
            excerpt,
            retryable,
        } => {
            let letters = records.iter().map(|r| {
                let mut letter = dead_letter::DeadLetter::new(&sink.name, r, attempts, &reason);
                letter.body_excerpt = excerpt.clone();
                letter.retryable = retryable;
                serde_json::to_vec(&letter).unwrap_or_default()
            });
            let written = write_dead_letters(sink, dead, letters.collect(), stop).await;
            if written {
                // One line per failed delivery, however many events it carried.
                if let Some(first) = records.first() {
                    tracing::warn!(sink = %sink.name, url = %sink.shown(), status, attempts, events = records.len(), source = %first.source.name, offset = first.offset, key = %first.key(), "dead-lettered: {reason}");
                }
                sink.metrics.state.failed(&reason);
                sink.metrics.dead_letter.inc_by(records.len() as u64);
                sink.metrics.state.dead_lettered(records.len() as u64);
                Record::ack_all(records);
            }
            written
        }
        Result::Deferred { .. } | Result::Abandoned => false,
    };
    // After the counters: a summary that clears the mark sees what marked it.
    crate::status::touch();
    done
}

/// Appends `lines` to the dead-letter file, tried until written (a full disk frees up) or until
/// shutdown (false: the events stay unacknowledged and are read again after a restart).
async fn write_dead_letters(
    sink: &Sink,
    dead: &RecordLog,
    lines: Vec<Vec<u8>>,
    stop: &CancellationToken,
) -> bool {
    let lines = Arc::new(lines);
    let mut wait = Duration::from_millis(200);
    loop {
        let (log, batch) = (dead.clone(), lines.clone());
        match tokio::task::spawn_blocking(move || log.append(&batch)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                tracing::error!(sink = %sink.name, path = %dead.path().display(), error = %e, retry_in = ?wait, "cannot write dead letters; holding these events until they can be")
            }
            Err(e) => tracing::error!(sink = %sink.name, error = %e, "dead-letter writer failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => wait = (wait * 2).min(Duration::from_secs(30)),
            () = stop.cancelled() => {
                tracing::error!(sink = %sink.name, events = lines.len(), "stopping with dead letters unwritten; the events are read again after a restart");
                return false;
            }
        }
    }
}
