//! `flagtail replay --sink NAME [--since T] [--until T] [--events type:action] [--id KEY]
//! [--dry-run]`: send a sink's dead letters again, all of them or those selected (the others stay).
//!
//! The dead-letter file is moved aside under its lock (the daemon may keep appending to a fresh
//! one), every entry is delivered with the sink's current template, secret and retry policy, and
//! the entries that fail again — plus any line that could not be read — are appended back. An
//! interrupted replay leaves its entries in `SINK.replaying.jsonl`, which the next replay takes up
//! first. Exit status 1 if anything is left.

use super::dead_letters::Selection;
use super::{Failure, find_sink};
use crate::config::Config;
use crate::delivery::dead_letter::{self, DeadLetter};
use crate::delivery::{self, Result as Delivery, Transport};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn replay(
    config: &Config,
    name: &str,
    selection: &Selection,
    dry_run: bool,
) -> Result<(), Failure> {
    let sink = find_sink(config, name)?;
    if dry_run {
        println!("would replay (nothing is sent or changed):");
        return super::dead_letters::list(config, name, false, selection);
    }
    let mut link = Transport::for_sink(&sink)
        .map_err(|e| Failure::usage(format!("sink {name}: ca_file: {e}")))?
        .link();
    let log = dead_letter::log(&config.file.state_dir, name);
    let io = |what: &str, e: std::io::Error| {
        Failure::runtime(format!("{what} {}: {e}", log.path().display()))
    };
    let taken = {
        let held = log.hold().map_err(|e| io("cannot lock", e))?;
        log.take(&held).map_err(|e| io("cannot take", e))?
    };
    let contents = crate::record_log::RecordLog::read(&taken).map_err(|e| io("cannot read", e))?;
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for (line_no, text) in &contents.unreadable {
        eprintln!(
            "{}:{line_no}: unreadable dead letter (torn by a crash?); kept as it is",
            taken.display()
        );
        keep.push(text.clone().into_bytes());
    }
    let never = CancellationToken::new();
    // Failed again (or unreadable), and not selected: both are kept, only the first is an error.
    let (mut delivered, mut failed, mut left_out) = (0usize, 0usize, 0usize);
    for text in contents.records {
        // Parsed from its text: the event stays the bytes that were written.
        let mut letter: DeadLetter = match serde_json::from_str(&text) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("a dead letter does not have the expected fields ({e}); kept as it is");
                keep.push(text.into_bytes());
                continue;
            }
        };
        if !selection.takes(&letter) {
            left_out += 1;
            keep.push(text.into_bytes());
            continue;
        }
        let record = match letter.to_record() {
            Ok(r) => Arc::new(r),
            Err(e) => {
                eprintln!(
                    "{}: its event cannot be read ({e}); kept",
                    letter.idempotency_key
                );
                keep.push(text.into_bytes());
                continue;
            }
        };
        let outcomes =
            delivery::deliver(&sink, &mut link, std::slice::from_ref(&record), &never).await;
        match outcomes.into_iter().next().map(|(_, r)| r) {
            Some(Delivery::Delivered { .. }) => delivered += 1,
            Some(Delivery::Failed {
                reason,
                attempts,
                excerpt,
            }) => {
                failed += 1;
                eprintln!("{}: still failing: {reason}", letter.idempotency_key);
                letter.attempts += attempts;
                letter.reason = reason;
                letter.body_excerpt = excerpt;
                letter.time = crate::record_log::now_rfc3339();
                keep.push(serde_json::to_vec(&letter).unwrap_or_default());
            }
            Some(Delivery::Abandoned) | None => keep.push(text.into_bytes()),
        }
    }
    let held = log.hold().map_err(|e| io("cannot lock", e))?;
    if !keep.is_empty() {
        log.append_held(&keep)
            .map_err(|e| io("cannot write back to", e))?;
    }
    match std::fs::remove_file(&taken) {
        Ok(()) => {}
        // Nothing was taken: there were no dead letters.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot remove", e)),
    }
    drop(held);
    println!(
        "replayed {} dead letters of sink {name}: {delivered} delivered, {} kept ({left_out} not selected)",
        delivered + failed,
        keep.len()
    );
    if keep.len() == left_out {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{} dead letters failed again or could not be read; they are kept in {}",
            keep.len() - left_out,
            log.path().display()
        )))
    }
}
