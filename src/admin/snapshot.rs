//! One look at the daemon, taken when asked: every source (where it is, how far behind, what it
//! rejected last) and every sink (counts, dead letters waiting, last error, running backoff).
//! `/status.json` serves it as it is, `/` renders it as a page, and `/metrics` sets its computed
//! gauges from it, so the three never disagree. Taking it reads files (dead-letter counts, file
//! sizes): call it on a blocking thread.

use super::View;
use crate::attempt_log::AttemptRecord;
use crate::health::Health;
use crate::history::{LagMinute, Minute, SinkMinute};
use crate::metrics::{self, SinkLabel, SourceLabel};
use crate::position::Position;
use crate::status;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// At a glance (SPEC §6): `ok`; `degraded` when a sink is retrying or down, or a source is
    /// not open; `down` when nothing delivers (a task died, or every sink is down).
    #[serde(default)]
    pub state: String,
    pub version: String,
    /// When the daemon started, RFC 3339.
    pub started: String,
    pub uptime_seconds: u64,
    /// No source or sink task has died.
    pub healthy: bool,
    /// What died, once something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
    /// Every source is open.
    pub ready: bool,
    /// Sources not open yet.
    #[serde(default)]
    pub waiting_for: Vec<String>,
    pub sources: Vec<SourceStatus>,
    pub sinks: Vec<SinkStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    /// `file`, `socket` or `http`.
    pub kind: String,
    /// The followed file, the socket's path, or the listening address.
    pub address: String,
    /// The first byte every sink is done with: in the followed file (absent while that is in a
    /// file rotated away, or nothing is done yet), or in the journal's stream.
    pub position: Option<u64>,
    /// Bytes read by no sink yet: the file's size past `position`, or the journal's durable
    /// stream past it.
    pub lag_bytes: Option<u64>,
    /// Bytes the journal holds (socket and HTTP sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_bytes: Option<u64>,
    pub lines_read: u64,
    pub rejected: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejected: Option<Noted>,
    /// The last hour: per minute the most `lag_bytes` seen (null if nobody looked), oldest first.
    #[serde(default)]
    pub history: Vec<Minute<LagMinute>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    /// `webhook`, `file` or `stdout`.
    pub kind: String,
    /// Where it delivers; a URL as `scheme://host/***`.
    pub target: String,
    pub delivered: u64,
    pub filtered: u64,
    pub dead_lettered: u64,
    pub retries: u64,
    /// Letters in the dead-letter file now.
    pub dead_letters_waiting: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Noted>,
    /// A wait before a retry that is running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Waiting>,
    /// `up`, `retrying` or `down` (SPEC §4).
    #[serde(default)]
    pub state: String,
    /// Since when it fails (RFC 3339), unless it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// What waits in its backlog on disk.
    #[serde(default)]
    pub backlog_events: u64,
    #[serde(default)]
    pub backlog_bytes: u64,
    /// The last hour: per minute `delivered`, `failed` (attempts) and `dead_lettered`, oldest first.
    #[serde(default)]
    pub history: Vec<Minute<SinkMinute>>,
    /// Its last [`FAILED_SHOWN`] failed attempts from the attempt log, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<AttemptRecord>,
}

/// Failed attempts shown per sink.
pub const FAILED_SHOWN: usize = 20;

/// How much of each attempt-log file the page reads from its end for them (about 40,000 attempts):
/// a page that refreshes every 5 s must not read a million-line log each time.
const FAILED_SCANNED: u64 = 8 * 1024 * 1024;

/// Something that happened, with its time (RFC 3339).
#[derive(Debug, Serialize, Deserialize)]
pub struct Noted {
    pub time: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Waiting {
    pub wait_ms: u64,
    pub left_ms: u64,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retrying in {:.1} s (of {:.1} s)",
            self.left_ms as f64 / 1000.0,
            self.wait_ms as f64 / 1000.0
        )
    }
}

fn noted(n: status::Note) -> Noted {
    Noted {
        time: humantime::format_rfc3339_seconds(n.at).to_string(),
        reason: n.text,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Takes the snapshot and sets the gauges computed from it (`flagtail_dead_letters`,
/// `flagtail_source_lag_bytes`, `flagtail_journal_bytes`).
pub fn take(view: &View, health: &Health) -> Snapshot {
    let started = status::started();
    let sources = view
        .sources
        .iter()
        .map(|s| source_status(view, s))
        .collect();
    let sinks: Vec<SinkStatus> = view.sinks.iter().map(|s| sink_status(view, s)).collect();
    let (dead, waiting_for) = (health.liveness().err(), health.readiness().err());
    Snapshot {
        state: overall(dead.is_some(), waiting_for.is_some(), &sinks).into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started: humantime::format_rfc3339_seconds(started).to_string(),
        uptime_seconds: SystemTime::now()
            .duration_since(started)
            .map_or(0, |d| d.as_secs()),
        healthy: dead.is_none(),
        dead,
        ready: waiting_for.is_none(),
        waiting_for: waiting_for.unwrap_or_default(),
        sources,
        sinks,
    }
}

/// The daemon's state at a glance, from what died, what is not open, and its sinks' states.
fn overall(died: bool, not_open: bool, sinks: &[SinkStatus]) -> &'static str {
    let down = |k: &SinkStatus| k.state == "down";
    if died || (!sinks.is_empty() && sinks.iter().all(down)) {
        "down"
    } else if not_open || sinks.iter().any(|k| k.state != "up") {
        "degraded"
    } else {
        "ok"
    }
}

/// One source's row, setting its lag and journal gauges.
fn source_status(view: &View, s: &super::SourceView) -> SourceStatus {
    let m = metrics::get();
    let (position, lag_bytes, journal_bytes) = where_is(view, s);
    let label = SourceLabel {
        source: s.name.clone(),
    };
    let state = status::source(&s.name);
    if let Some(lag) = lag_bytes {
        m.source_lag_bytes.get_or_create(&label).set(gauge(lag));
        state.lag_seen(lag);
    }
    if let Some(bytes) = journal_bytes {
        m.journal_bytes.get_or_create(&label).set(gauge(bytes));
    }
    SourceStatus {
        name: s.name.clone(),
        kind: s.kind.into(),
        address: s.address.clone(),
        position,
        lag_bytes,
        journal_bytes,
        lines_read: m.lines_read_of(&s.name).get(),
        rejected: state.rejected.load(Ordering::Relaxed),
        last_rejected: state.last_rejected().map(noted),
        history: state.lag.minutes(),
    }
}

/// One sink's row, setting its dead-letter, state and backlog gauges.
fn sink_status(view: &View, s: &super::SinkView) -> SinkStatus {
    let m = metrics::get();
    let counters = m.sink(&s.name);
    let waiting = count_dead_letters(&view.state_dir, &s.name);
    let condition = counters.state.condition();
    let backlog = (
        counters.state.backlog_events.load(Ordering::Relaxed),
        counters.state.backlog_bytes.load(Ordering::Relaxed),
    );
    let label = SinkLabel {
        sink: s.name.clone(),
    };
    m.dead_letters.get_or_create(&label).set(gauge(waiting));
    let up = i64::from(condition == status::Condition::Up);
    m.sink_up.get_or_create(&label).set(up);
    m.sink_backlog_events
        .get_or_create(&label)
        .set(gauge(backlog.0));
    m.sink_backlog_bytes
        .get_or_create(&label)
        .set(gauge(backlog.1));
    SinkStatus {
        name: s.name.clone(),
        kind: s.kind.into(),
        target: s.target.clone(),
        delivered: counters.delivered.get(),
        filtered: counters.filtered.get(),
        dead_lettered: counters.dead_letter.get(),
        retries: counters.retries.get(),
        dead_letters_waiting: waiting,
        last_error: counters.state.last_error().map(noted),
        backoff: counters.state.backoff().map(|b| Waiting {
            wait_ms: millis(b.wait),
            left_ms: millis(b.left),
        }),
        state: condition.name().into(),
        since: condition
            .since()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        backlog_events: backlog.0,
        backlog_bytes: backlog.1,
        history: counters.state.history.minutes(),
        failed_attempts: crate::attempt_log::newest(
            &view.state_dir,
            &s.name,
            &crate::attempt_log::Wanted {
                failed: true,
                limit: FAILED_SHOWN,
                max_bytes: FAILED_SCANNED,
                takes: &|_| true,
            },
        )
        .unwrap_or_default(),
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A source's position, lag and journal size.
fn where_is(view: &View, s: &super::SourceView) -> (Option<u64>, Option<u64>, Option<u64>) {
    let done = view.book.as_ref().and_then(|b| b.get(&s.name));
    match &s.follows {
        super::Follows::File(path) => {
            let Ok(meta) = std::fs::metadata(path) else {
                return (None, None, None);
            };
            // A position in another file (rotated away, or replaced) is not one in this file: all
            // of this file is still to read.
            let offset = done.and_then(|p| match p {
                Position::File { file, offset }
                    if file.dev == meta.dev() && file.inode == meta.ino() =>
                {
                    Some(offset)
                }
                _ => None,
            });
            let lag = meta.len().saturating_sub(offset.unwrap_or(0));
            (offset, Some(lag), None)
        }
        super::Follows::Journal(journal) => {
            let (start, end) = journal.extent();
            let offset = match done {
                Some(Position::Journal { id, offset }) if id == *journal.id() => offset.max(start),
                _ => start,
            };
            (
                Some(offset),
                Some(end.saturating_sub(offset)),
                Some(journal.size()),
            )
        }
    }
}

/// Letters waiting in `sink`'s dead-letter file, including those a replay has taken and not
/// finished.
fn count_dead_letters(state_dir: &Path, sink: &str) -> u64 {
    let log = crate::delivery::dead_letter::log(state_dir, sink);
    count_lines(log.path()) + count_lines(&log.replaying())
}

/// How far a file was counted: dead-letter files only grow in place (a replay writes a new file
/// and renames it), so the next count reads only what was appended since.
#[derive(Clone, Copy)]
struct Counted {
    dev: u64,
    inode: u64,
    /// Bytes counted.
    len: u64,
    /// Lines ended so far that are not blank.
    lines: u64,
    /// Whether the unended last line is blank so far.
    blank: bool,
    /// The file's first bytes (a letter's time and key): a file made anew on a reused inode
    /// does not start with them.
    head: [u8; HEAD],
}

/// Bytes of a file's start compared before counting on from where the last count stopped.
const HEAD: usize = 64;

/// The lines of `path` that are not blank, read in pieces and only past what an earlier count
/// read (a dead-letter file can be large, and the page reloads itself); 0 if it cannot be read.
fn count_lines(path: &Path) -> u64 {
    use std::collections::HashMap;
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::{Mutex, OnceLock};
    static COUNTED: OnceLock<Mutex<HashMap<std::path::PathBuf, Counted>>> = OnceLock::new();
    let cache = COUNTED.get_or_init(Default::default);
    let forget = || {
        cache.lock().unwrap_or_else(|e| e.into_inner()).remove(path);
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        forget();
        return 0;
    };
    let Ok(meta) = file.metadata() else {
        return 0;
    };
    let mut head = [0u8; HEAD];
    let _ = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0);
    let known = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .copied();
    let mut c = match known {
        Some(c)
            if c.dev == meta.dev()
                && c.inode == meta.ino()
                && c.len <= meta.len()
                && (c.len < HEAD as u64 || c.head == head) =>
        {
            c
        }
        _ => Counted {
            dev: meta.dev(),
            inode: meta.ino(),
            len: 0,
            lines: 0,
            blank: true,
            head,
        },
    };
    // Fewer bytes than HEAD were there when the head was taken: count again from the start.
    if c.len < HEAD as u64 {
        c = Counted {
            len: 0,
            lines: 0,
            blank: true,
            head,
            ..c
        };
    }
    if file.seek(SeekFrom::Start(c.len)).is_err() {
        return 0;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        c.len += n as u64;
        for &b in &buf[..n] {
            if b == b'\n' {
                c.lines += u64::from(!c.blank);
                c.blank = true;
            } else if !b.is_ascii_whitespace() {
                c.blank = false;
            }
        }
    }
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), c);
    c.lines + u64::from(!c.blank)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_counted_across_pieces_and_blank_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let long = "x".repeat(100_000);
        std::fs::write(&path, format!("{long}\n\n  \n{{}}\n{long}")).unwrap();
        assert_eq!(super::count_lines(&path), 3);
        assert_eq!(super::count_lines(&dir.path().join("none")), 0);
        // Appended to: only the new part is read, and the torn line it ends is counted once.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"xx\n{}\n").unwrap();
        assert_eq!(super::count_lines(&path), 4);
        // Replaced (a replay renames a new file into place): counted afresh.
        let new = dir.path().join("new");
        std::fs::write(&new, "{}\n").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(super::count_lines(&path), 1);
    }
}
