//! `flagtail dead-letters --sink NAME [--json]`: what a sink's dead-letter file holds (time,
//! type:action, key, reason, attempts), and the selection `replay` takes (`--since`, `--until`,
//! `--events`, `--id`).

use super::Failure;
use crate::config::Config;
use crate::delivery::dead_letter::{self, DeadLetter};
use crate::event::pattern::EventPattern;
use crate::record_log::RecordLog;
use std::time::SystemTime;

/// Which dead letters a command takes; every given criterion must hold.
#[derive(Debug, Default)]
pub struct Selection {
    /// Dead-lettered at or after.
    pub since: Option<SystemTime>,
    /// Dead-lettered before.
    pub until: Option<SystemTime>,
    /// `type:action` patterns, any of which.
    pub events: Vec<EventPattern>,
    /// Idempotency keys, any of which.
    pub ids: Vec<String>,
}

impl Selection {
    /// Reads the command line's criteria: times as RFC 3339 UTC (`2026-11-23T06:00:00Z`) or a
    /// duration ago (`2h`); events as `type:action` patterns (comma-separated or repeated).
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        events: &[String],
        ids: &[String],
    ) -> Result<Selection, Failure> {
        let time = |flag: &str, text: &str| -> Result<SystemTime, Failure> {
            if let Ok(t) = humantime::parse_rfc3339_weak(text) {
                return Ok(t);
            }
            humantime::parse_duration(text)
                .map(|ago| SystemTime::now() - ago)
                .map_err(|_| {
                    Failure::usage(format!(
                        "{flag}: {text:?} is neither an RFC 3339 time (2026-11-23T06:00:00Z) nor a duration ago (2h)"
                    ))
                })
        };
        let events = events
            .iter()
            .flat_map(|e| e.split(','))
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                EventPattern::parse(e.trim()).map_err(|m| Failure::usage(format!("--events: {m}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Selection {
            since: since.map(|t| time("--since", t)).transpose()?,
            until: until.map(|t| time("--until", t)).transpose()?,
            events,
            ids: ids.to_vec(),
        })
    }

    /// Whether `letter` is selected.
    pub fn takes(&self, letter: &DeadLetter) -> bool {
        let when = humantime::parse_rfc3339_weak(&letter.time).ok();
        let after = |t: &SystemTime| when.is_some_and(|w| w >= *t);
        let event = || crate::event::parse_line(crate::event::Format::Flipt, letter.event.get());
        self.since.as_ref().is_none_or(after)
            && self.until.as_ref().is_none_or(|t| !after(t))
            && (self.ids.is_empty() || self.ids.contains(&letter.idempotency_key))
            && (self.events.is_empty()
                || event().is_ok_and(|e| self.events.iter().any(|p| p.matches(&e))))
    }
}

/// One line of the listing.
#[derive(serde::Serialize)]
struct Row {
    time: String,
    event: String,
    key: String,
    idempotency_key: String,
    attempts: u32,
    reason: String,
}

pub fn list(config: &Config, sink: &str, json: bool, selection: &Selection) -> Result<(), Failure> {
    super::find_sink(config, sink)?;
    let log = dead_letter::log(&config.file.state_dir, sink);
    // Letters a replay has taken (and not finished, or was cut off in) come first: they are older.
    let mut contents = crate::record_log::Contents::default();
    for path in [log.replaying(), log.path().to_path_buf()] {
        let more = RecordLog::read(&path)
            .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", path.display())))?;
        contents.records.extend(more.records);
        contents.unreadable.extend(more.unreadable);
    }
    let mut rows = Vec::new();
    // JSON that is not a dead letter is as unreadable as a torn line: counted with them.
    let mut unreadable = contents.unreadable.len();
    for text in &contents.records {
        let Ok(letter) = serde_json::from_str::<DeadLetter>(text) else {
            unreadable += 1;
            continue;
        };
        if !selection.takes(&letter) {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(letter.event.get()).unwrap_or_default();
        let text_of = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        rows.push(Row {
            event: format!("{}:{}", text_of(&event["type"]), text_of(&event["action"])),
            key: text_of(&event["payload"]["key"]),
            time: letter.time,
            idempotency_key: letter.idempotency_key,
            attempts: letter.attempts,
            reason: letter.reason,
        });
    }
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row).unwrap_or_default());
        }
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.time.clone(),
                    r.event.clone(),
                    r.key.clone(),
                    r.attempts.to_string(),
                    r.idempotency_key.clone(),
                    r.reason.clone(),
                ]
            })
            .collect();
        super::table::print(
            &["TIME", "EVENT", "KEY", "ATTEMPTS", "ID", "REASON"],
            &cells,
            &[3],
        );
        eprintln!(
            "{} dead letters{}",
            rows.len(),
            match unreadable {
                0 => String::new(),
                n => format!(", {n} unreadable lines (kept as they are)"),
            }
        );
    }
    Ok(())
}
