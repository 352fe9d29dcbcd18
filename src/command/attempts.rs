//! `flagtail attempts --sink NAME [--failed] [--since T] [--limit N] [--json]`: a sink's recorded
//! attempts (the attempt log, `attempts.keep`), newest first: time, type:action, attempt number,
//! HTTP status, duration, idempotency key, error. It reads the state directory, so it works
//! whether the daemon runs or not.

use super::Failure;
use crate::attempt_log::{self, AttemptRecord};
use crate::config::Config;
use std::time::SystemTime;

/// What to list.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only failed attempts.
    pub failed: bool,
    /// Only attempts at or after.
    pub since: Option<SystemTime>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

impl Filter {
    /// The command line's filter; `since` as RFC 3339 UTC or a duration ago (`2h`).
    pub fn parse(
        failed: bool,
        since: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Filter, Failure> {
        let since = super::dead_letters::Selection::parse(since, None, &[], &[])?.since;
        Ok(Filter {
            failed,
            since,
            limit,
        })
    }

    fn takes(&self, a: &AttemptRecord) -> bool {
        let when = humantime::parse_rfc3339_weak(&a.time).ok();
        (!self.failed || a.failed())
            && self
                .since
                .is_none_or(|since| when.is_some_and(|w| w >= since))
    }
}

pub fn list(config: &Config, sink: &str, json: bool, filter: &Filter) -> Result<(), Failure> {
    super::find_sink(config, sink)?;
    let dir = &config.file.state_dir;
    let wanted = attempt_log::Wanted {
        failed: filter.failed,
        limit: filter.limit.unwrap_or(usize::MAX),
        max_bytes: u64::MAX,
        takes: &|a| filter.takes(a),
    };
    let rows = attempt_log::newest(dir, sink, &wanted).map_err(|e| {
        Failure::runtime(format!(
            "cannot read the attempt log of sink {sink:?} in {}: {e}",
            dir.display()
        ))
    })?;
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row).unwrap_or_default());
        }
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                a.time.clone(),
                a.event.clone(),
                a.attempt.to_string(),
                a.status.map_or("-".into(), |s| s.to_string()),
                format!("{}ms", a.duration_ms),
                a.key.clone(),
                a.error.clone().unwrap_or_else(|| "delivered".into()),
            ]
        })
        .collect();
    super::table::print(
        &["TIME", "EVENT", "ATTEMPT", "STATUS", "TOOK", "ID", "ERROR"],
        &cells,
        &[2, 3, 4],
    );
    let keep = config.file.attempts.keep;
    eprintln!(
        "{} attempts{}",
        rows.len(),
        if keep == 0 {
            " (attempts.keep is 0: none are recorded)"
        } else {
            ""
        }
    );
    Ok(())
}
