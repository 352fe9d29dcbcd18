//! The periodic summary at info (`log.summary_interval`): what was read, delivered,
//! dead-lettered, rejected and retried since the last one, logged only when something happened.
//! With nothing to report it waits on the activity mark, so an idle daemon has no timer.

use crate::metrics;
use crate::status;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counts since start, by sink and source.
#[derive(Debug, Default, Clone)]
struct Totals {
    lines_read: u64,
    rejected: u64,
    /// delivered, dead-lettered and retries, by sink.
    sinks: BTreeMap<String, [u64; 3]>,
}

impl Totals {
    fn now() -> Totals {
        let m = metrics::get();
        let (sources, sinks) = status::names();
        let mut t = Totals::default();
        for name in &sources {
            t.lines_read += m.lines_read_of(name).get();
            t.rejected += status::source(name)
                .rejected
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        for name in sinks {
            let s = m.sink(&name);
            t.sinks.insert(
                name,
                [s.delivered.get(), s.dead_letter.get(), s.retries.get()],
            );
        }
        t
    }
}

/// Logs a summary every `every` while something happens; never when `every` is zero. The counts
/// are taken as this is called, not when the task first runs (by then lines may have been read).
pub fn run(every: Duration, stop: CancellationToken) -> impl std::future::Future<Output = ()> {
    let last = Totals::now();
    summarise(every, last, stop)
}

async fn summarise(every: Duration, mut last: Totals, stop: CancellationToken) {
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            () = status::activity() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        status::settle();
        let now = Totals::now();
        log(&last, &now, every);
        last = now;
    }
}

fn log(before: &Totals, now: &Totals, every: Duration) {
    let mut sum = [0u64; 3];
    let mut by_sink = Vec::new();
    for (name, counts) in &now.sinks {
        let was = before.sinks.get(name).copied().unwrap_or_default();
        let d: Vec<u64> = (0..3).map(|i| counts[i].saturating_sub(was[i])).collect();
        (0..3).for_each(|i| sum[i] += d[i]);
        if d.iter().any(|n| *n > 0) {
            by_sink.push(format!(
                "{name}: {} delivered, {} dead-lettered, {} retries",
                d[0], d[1], d[2]
            ));
        }
    }
    let read = now.lines_read.saturating_sub(before.lines_read);
    let rejected = now.rejected.saturating_sub(before.rejected);
    if read == 0 && rejected == 0 && sum == [0; 3] {
        return;
    }
    tracing::info!(
        lines_read = read,
        rejected,
        delivered = sum[0],
        dead_lettered = sum[1],
        retries = sum[2],
        "summary of the last {}: {read} lines read, {rejected} rejected; {}",
        humantime::format_duration(every),
        if by_sink.is_empty() {
            "nothing delivered".to_string()
        } else {
            by_sink.join("; ")
        }
    );
}
