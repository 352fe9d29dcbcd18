//! Every attempt of every sink, on record: `state_dir/attempts/SINK.0.jsonl` and `SINK.1.jsonl`,
//! written in turn. A failed attempt is one JSON line appended with one `write` at once; delivered
//! ones wait in memory (at most [`PENDING_BYTES`] per sink) until a failure, a full buffer, the
//! sink's queue running empty, a read of the log, or shutdown writes them, so a busy sink makes
//! one `write` per 32 KiB of attempts instead of one each (no fsync: a crash of the process loses
//! at most the delivered attempts waiting, a power cut the last seconds); when the file being
//! written holds `attempts.keep` lines the other one is emptied and written next, so the newest
//! `keep` attempts (and at most as many older ones) are on disk. A torn last line (a crash
//! mid-write) is cut off when the file is next opened. `flagtail attempts` and the status page
//! read both files from their ends, newest first, in bounded memory, while the daemon writes them
//! or after it stopped.

use crate::record_log::{count_lines, last_line_end};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// One attempt, as a line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When it ended, RFC 3339 with milliseconds.
    pub time: String,
    pub sink: String,
    /// The delivery's idempotency key.
    pub key: String,
    /// `type:action` of its (first) event; `+N` more events when it carried a batch.
    pub event: String,
    /// 1 for the first attempt of a delivery.
    pub attempt: u32,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it failed (already scrubbed of secrets); null when it was delivered.
    pub error: Option<String>,
    /// From the attempt's start (its rate-limit slot included) to its outcome, in milliseconds.
    pub duration_ms: u64,
}

impl AttemptRecord {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The line of this record, to [`record`] it.
    pub fn line(&self) -> AttemptLine<'_> {
        AttemptLine {
            time: Time::Given(&self.time),
            sink: &self.sink,
            key: &self.key,
            event: &self.event,
            attempt: self.attempt,
            status: self.status,
            error: self.error.as_deref(),
            duration_ms: self.duration_ms,
        }
    }
}

/// One attempt as a delivery records it: an [`AttemptRecord`]'s fields, borrowed, written into
/// the log's buffer without a copy of each (the log is on every request's path).
#[derive(Serialize)]
pub struct AttemptLine<'a> {
    pub time: Time<'a>,
    pub sink: &'a str,
    pub key: &'a str,
    pub event: &'a str,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub duration_ms: u64,
}

/// When an attempt ended: now, formatted as it is written, or a time given as text.
pub enum Time<'a> {
    Now,
    Given(&'a str),
}

impl Serialize for Time<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Time::Now => s.collect_str(&humantime::format_rfc3339_millis(
                std::time::SystemTime::now(),
            )),
            Time::Given(text) => s.serialize_str(text),
        }
    }
}

/// A sink's two files, and which one is being written.
struct Writer {
    files: [PathBuf; 2],
    current: usize,
    file: File,
    /// Lines in the current file, those waiting in `pending` included.
    lines: u64,
    /// Delivered attempts not written yet.
    pending: Vec<u8>,
}

/// Where logs go and how many attempts each keeps; set by the daemon at each (re)start.
struct Logs {
    dir: PathBuf,
    keep: u64,
    writers: HashMap<String, Writer>,
    /// Sinks whose log cannot be written now: said once, and again when it can be.
    failing: std::collections::HashSet<String>,
}

fn logs() -> &'static Mutex<Option<Logs>> {
    static LOGS: OnceLock<Mutex<Option<Logs>>> = OnceLock::new();
    LOGS.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The two files of `sink`'s log under `state_dir`.
pub fn files(state_dir: &Path, sink: &str) -> [PathBuf; 2] {
    let dir = state_dir.join("attempts");
    [0, 1].map(|i| dir.join(format!("{sink}.{i}.jsonl")))
}

/// Whether attempts are recorded (`attempts.keep` above 0), so a delivery with nothing to record
/// builds no record.
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Records attempts under `state_dir`, `keep` per sink (0: none). Called at start and on reload.
pub fn configure(state_dir: &Path, keep: u64) {
    ENABLED.store(keep > 0, std::sync::atomic::Ordering::Relaxed);
    let mut logs = lock(logs());
    let same = logs
        .as_ref()
        .is_some_and(|l| l.dir == state_dir && l.keep == keep);
    if !same {
        if let Some(old) = logs.as_mut() {
            old.flush_all();
        }
        *logs = Some(Logs {
            dir: state_dir.to_path_buf(),
            keep,
            writers: HashMap::new(),
            failing: Default::default(),
        });
    }
}

/// Appends `line` to its sink's log; a failure to write is logged, never the delivery's.
pub fn record(line: &AttemptLine) {
    let mut guard = lock(logs());
    let Some(logs) = guard.as_mut() else { return };
    if logs.keep == 0 {
        return;
    }
    let written = logs.append(line);
    logs.said(line.sink, written);
}

/// Writes what waits in memory of `sink`'s log (the sink's queue ran empty, or it is read).
pub fn flush(sink: &str) {
    let mut guard = lock(logs());
    let Some(logs) = guard.as_mut() else { return };
    if let Some(w) = logs.writers.get_mut(sink) {
        let written = w.write_pending();
        logs.said(sink, written);
    }
}

/// Writes what waits in memory of every sink's log (at shutdown and before a reconfiguration).
pub fn flush_all() {
    let mut guard = lock(logs());
    if let Some(logs) = guard.as_mut() {
        logs.flush_all();
    }
}

/// Delivered attempts a sink's log keeps in memory before it writes them.
pub const PENDING_BYTES: usize = 32 * 1024;

impl Logs {
    /// Logs a failure to write `sink`'s log once per outage, and when it is written again.
    fn said(&mut self, sink: &str, written: io::Result<()>) {
        match written {
            Ok(()) => {
                if self.failing.remove(sink) {
                    tracing::info!(sink = %sink, "the attempt log is written again");
                }
            }
            Err(e) => {
                self.writers.remove(sink);
                crate::metrics::get().attempt_log_error(sink);
                // Said once per outage (a full disk would otherwise say it for every attempt).
                if self.failing.insert(sink.to_string()) {
                    tracing::warn!(sink = %sink, dir = %self.dir.display(), "cannot record attempts in the attempt log (deliveries go on; their attempts are not on record until it can be written): {e}");
                }
            }
        }
    }

    fn flush_all(&mut self) {
        let sinks: Vec<String> = self.writers.keys().cloned().collect();
        for sink in sinks {
            if let Some(w) = self.writers.get_mut(&sink) {
                let written = w.write_pending();
                self.said(&sink, written);
            }
        }
    }

    /// Adds `line` to its sink's log: written at once if it is a failure, or once enough waits.
    fn append(&mut self, line: &AttemptLine) -> io::Result<()> {
        let (keep, sink) = (self.keep, line.sink);
        let w = match self.writers.get_mut(sink) {
            Some(w) => w,
            None => {
                let w = Writer::open(files(&self.dir, sink))?;
                self.writers.entry(sink.to_string()).or_insert(w)
            }
        };
        if w.lines >= keep {
            w.write_pending()?;
            w.switch()?;
        }
        serde_json::to_writer(&mut w.pending, line)?;
        w.pending.push(b'\n');
        w.lines += 1;
        if line.error.is_some() || w.pending.len() >= PENDING_BYTES {
            w.write_pending()?;
        }
        Ok(())
    }
}

impl Writer {
    /// Opens the newer of the two files to write on, its torn tail cut off.
    fn open(files: [PathBuf; 2]) -> io::Result<Writer> {
        if let Some(dir) = files[0].parent() {
            crate::checkpoint::create_private_dir(dir)?;
        }
        let current = usize::from(newer_first(files.clone())[0] == files[1]);
        let mut file = open(&files[current], false)?;
        let len = file.metadata()?.len();
        let end = last_line_end(&mut file, len)?;
        if end < len {
            file.set_len(end)?;
        }
        file.seek(SeekFrom::Start(0))?;
        let lines = count_lines(&mut file, end)?;
        Ok(Writer {
            files,
            current,
            file,
            lines,
            pending: Vec::new(),
        })
    }

    /// Writes the attempts waiting in memory, in one `write`.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.pending);
        self.pending.clear();
        written
    }

    /// Starts writing on the other file, emptied.
    fn switch(&mut self) -> io::Result<()> {
        let next = 1 - self.current;
        self.file = open(&self.files[next], true)?;
        self.current = next;
        self.lines = 0;
        Ok(())
    }
}

fn open(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).read(true).mode(0o600);
    match truncate {
        true => o.write(true).truncate(true),
        false => o.append(true),
    };
    o.open(path)
}

/// What [`newest`] looks for.
pub struct Wanted<'a> {
    /// Failed attempts only (delivered lines are passed over unparsed).
    pub failed: bool,
    /// At most this many.
    pub limit: usize,
    /// Reading at most this many bytes of each file, from its end.
    pub max_bytes: u64,
    /// Which attempts to take, besides.
    pub takes: &'a dyn Fn(&AttemptRecord) -> bool,
}

/// The newest attempts of `sink` that `wanted` takes, newest first: the file being written read
/// from its end, then the other, so a large log costs what the answer needs, not the whole log.
pub fn newest(state_dir: &Path, sink: &str, wanted: &Wanted) -> io::Result<Vec<AttemptRecord>> {
    // In the daemon (the status page), what waits in memory is written first.
    flush(sink);
    let delivered = memchr::memmem::Finder::new(b"\"error\":null");
    let mut found = Vec::new();
    for path in newer_first(files(state_dir, sink)) {
        let read = crate::reverse_lines::each_line_backwards(&path, wanted.max_bytes, |line| {
            if wanted.failed && delivered.find(line).is_some() {
                return true;
            }
            if let Ok(a) = serde_json::from_slice::<AttemptRecord>(line)
                && (!wanted.failed || a.failed())
                && (wanted.takes)(&a)
            {
                found.push(a);
            }
            found.len() < wanted.limit
        });
        match read {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ if found.len() >= wanted.limit => break,
            _ => {}
        }
    }
    Ok(found)
}

/// The two files, the one written last first: the one whose last attempt is the newer (file
/// times tick too coarsely to tell two quick writes apart), else the one modified last.
fn newer_first(files: [PathBuf; 2]) -> [PathBuf; 2] {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest = |p: &Path| (last_time(p), modified(p));
    let [a, b] = files;
    match newest(&b) > newest(&a) {
        true => [b, a],
        false => [a, b],
    }
}

/// The time of the last attempt `path` holds, if any.
fn last_time(path: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Timed {
        time: String,
    }
    let mut time = None;
    let _ = crate::reverse_lines::each_line_backwards(path, u64::MAX, |line| {
        time = serde_json::from_slice::<Timed>(line).ok().map(|t| t.time);
        time.is_none()
    });
    time
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dir: &Path) -> Vec<AttemptRecord> {
        let wanted = Wanted {
            failed: false,
            limit: usize::MAX,
            max_bytes: u64::MAX,
            takes: &|_| true,
        };
        newest(dir, "hook", &wanted).unwrap()
    }

    fn at(i: u32, error: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            time: format!("2026-01-01T00:00:{:02}.000Z", i),
            sink: "hook".into(),
            key: format!("k{i}"),
            event: "flag:created".into(),
            attempt: 1,
            status: error.map(|_| 500),
            error: error.map(str::to_string),
            duration_ms: 3,
        }
    }

    #[test]
    fn the_newest_keep_attempts_are_kept_across_a_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        configure(dir.path(), 3);
        for i in 0..8 {
            record(&at(i, (i % 2 == 0).then_some("HTTP 500")).line());
        }
        let read = all(dir.path());
        // 8 written, 3 a file: the files hold 6,7 and 3,4,5.
        let keys: Vec<_> = read.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["k7", "k6", "k5", "k4", "k3"]);
        assert_eq!(read[1].status, Some(500));
        assert!(read[1].failed() && !read[0].failed());
        // A crash mid-line; a restart cuts the torn tail and goes on in the same file.
        let [_, newer] = files(dir.path(), "hook");
        let mut f = OpenOptions::new().append(true).open(&newer).unwrap();
        f.write_all(b"{\"time\":\"2026").unwrap();
        configure(dir.path(), 4);
        record(&at(9, None).line());
        let keys: Vec<_> = all(dir.path()).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["k9", "k7", "k6", "k5", "k4", "k3"]);
        configure(dir.path(), 0);
        record(&at(10, None).line());
        assert_eq!(all(dir.path()).len(), 6, "0: none");
        // Delivered attempts wait in memory; a failure writes them and itself, in order.
        let dir = tempfile::tempdir().unwrap();
        configure(dir.path(), 100);
        let on_disk = || {
            files(dir.path(), "hook")
                .iter()
                .filter_map(|f| crate::record_log::RecordLog::read(f).ok())
                .map(|c| c.records.len())
                .sum::<usize>()
        };
        record(&at(1, None).line());
        record(&at(2, None).line());
        assert_eq!(on_disk(), 0, "delivered attempts wait");
        record(&at(3, Some("HTTP 503")).line());
        assert_eq!(
            on_disk(),
            3,
            "a failure is written at once, after those before it"
        );
        record(&at(4, None).line());
        flush("hook");
        assert_eq!(on_disk(), 4, "the queue ran empty");
        configure(dir.path(), 0);
    }
}
