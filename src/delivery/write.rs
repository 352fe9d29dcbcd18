//! `stdout` and `file` sinks: each body on its own line, written in groups.
//!
//! A group of records is rendered (one body per `max_events` records), written with one write and,
//! for files, fsynced before any record is acknowledged. Files are appended to with
//! [`append_lines`]: a write cut short (a full disk) is taken back off before it is tried again, and
//! a line left incomplete by a crash is ended first, so the file only ever holds whole bodies. Records whose body cannot be rendered fail
//! alone (they are dead-lettered); the rest of the group is written. I/O errors are retried with
//! the sink's backoff like a failed request.

use super::retry::{Attempt, Patience, Tries};
use super::{Outcomes, Result};
use crate::record::Record;
use crate::record_log::append_lines;
use crate::sink::{Output, Sink};
use std::io::{self, Write};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn deliver(
    sink: &Sink,
    records: &[Arc<Record>],
    stop: &CancellationToken,
    patience: Patience<'_>,
) -> Outcomes {
    let mut outcomes = Vec::new();
    let mut out = Vec::new();
    let mut written = Vec::new();
    let step = sink.max_events.max(1);
    for start in (0..records.len()).step_by(step) {
        let range = start..(start + step).min(records.len());
        match sink.renderer.render_bounded(&records[range.clone()]).await {
            Ok(body) => {
                out.extend_from_slice(&body);
                out.push(b'\n');
                written.push(range);
            }
            Err(e) => outcomes.push((range, super::render_failed(e))),
        }
    }
    if !written.is_empty() {
        let result = write_with_retries(sink, records, out, stop, patience).await;
        let mut results = written.into_iter().map(|range| (range, result.clone()));
        outcomes.extend(&mut results);
    }
    outcomes
}

async fn write_with_retries(
    sink: &Sink,
    records: &[Arc<Record>],
    out: Vec<u8>,
    stop: &CancellationToken,
    patience: Patience<'_>,
) -> Result {
    let out = Arc::new(out);
    let what = match &sink.output {
        Output::File(file) => file.path.display().to_string(),
        _ => "stdout".to_string(),
    };
    let mut tries = Tries::new(sink, &what, patience, records);
    loop {
        let result = match &sink.output {
            Output::File(file) => {
                let (path, mode, bytes) = (file.path.clone(), file.mode, out.clone());
                tokio::task::spawn_blocking(move || append_lines(&path, mode, &bytes))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
            }
            _ => write_stdout(&out),
        };
        let attempt = match result {
            Ok(()) => Attempt::Delivered { status: None },
            Err(e) => Attempt::Retry {
                reason: format!("write: {e}"),
            },
        };
        if let Some(done) = tries.settle(attempt, stop).await {
            return done;
        }
    }
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}
