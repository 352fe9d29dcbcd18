//! The `socket` source: a Unix stream socket where local tools write newline-delimited JSON.
//!
//! Many clients at once, at most `max_connections` (a permit is taken before `accept`, so a full
//! source stops accepting instead of failing). Each client's complete lines are appended to the
//! source's [`Journal`] as they arrive, one append per read; the lines count as received only once
//! that append is durable. Reading goes on while up to [`IN_FLIGHT`] appends are being written
//! and fsynced, so a fast client is not held to one fsync per read. One client's appends are
//! written in order, and once one fails the journal refuses the rest (no later lines after a gap);
//! the client is then closed unanswered and sends again. When the client ends its side of the
//! connection, flagtail answers `ok N` (N lines journaled from this connection) and closes: a
//! client that reads that answer knows its lines survive a crash. A client still connected when
//! flagtail stops or reloads gets the same answer for what was journaled so far (a partial line it
//! was sending is not counted; lines still with the writer are waited for a short while). A line
//! over `max_line_bytes` is rejected (recorded, never buffered whole); a client that disconnects
//! mid-line loses only that partial line, which is recorded as rejected. When the journal is full,
//! the client's lines are not read until it has room again.
//!
//! The listener ([`SocketListener`]) is bound once by the daemon and kept across reloads: binding
//! refuses a path that exists and is not a socket, or a socket another process listens on; a stale
//! socket left by a crash is replaced; the socket is created with `socket_mode` (through a private
//! name, then renamed into place) and removed when flagtail is done with it.

use super::lines::{LineSplitter, Piece};
use super::{Rejected, Stopped};
use crate::event::Rejection;
use crate::journal::{AppendError, Chain, Journal, Pending};
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How many bytes one read from a client asks for.
const READ: usize = 64 * 1024;
/// Appends of one client the journal's writer may hold; reading waits for the oldest to be
/// durable before handing over another: a client is read on while its earlier lines are written
/// and fsynced.
const IN_FLIGHT: usize = 4;
/// How long a client's answer waits, once stopping, for its lines already with the writer.
const SETTLE_ON_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// A bound socket; the socket file is removed when this is dropped.
#[derive(Debug)]
pub struct SocketListener {
    pub path: PathBuf,
    pub mode: u32,
    listener: UnixListener,
    /// Device and inode of the socket file, so only ours is removed.
    file: (u64, u64),
}

impl SocketListener {
    /// Binds `path` with permissions `mode` (see the module docs for what is refused).
    pub fn bind(path: &Path, mode: u32) -> io::Result<SocketListener> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                // Only a refused connection means nobody listens: anything else (a live listener,
                // no permission to connect) leaves the socket alone.
                match std::os::unix::net::UnixStream::connect(path) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(path = %path.display(), "removing a stale socket left by a crash");
                        std::fs::remove_file(path)?;
                    }
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{}: another process is listening on it", path.display()),
                        ));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "{}: a socket that may be in use ({e}); flagtail will not replace it",
                                path.display()
                            ),
                        ));
                    }
                }
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; flagtail will not replace it",
                        path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Made under a private name and renamed into place, so no client can connect before the
        // permissions are set.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
        }
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        Ok(SocketListener {
            path: path.to_path_buf(),
            mode,
            listener,
            file: (m.dev(), m.ino()),
        })
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Accepts clients and writes their lines to the journal until stopped.
pub struct SocketSource {
    pub name: Arc<str>,
    pub listener: Arc<SocketListener>,
    pub journal: Journal,
    pub max_connections: usize,
    pub max_line: usize,
    pub rejected: Rejected,
    pub stop: CancellationToken,
}

impl SocketSource {
    pub async fn run(self) -> io::Result<()> {
        let me = Arc::new(self);
        let permits = Arc::new(Semaphore::new(me.max_connections));
        let mut clients = JoinSet::new();
        let mut number = 0u64;
        tracing::info!(source = %me.name, path = %me.listener.path.display(), "listening");
        let accept = || async { me.listener.listener.accept().await.map(|(s, _)| s) };
        while let Some((permit, stream)) =
            super::next_connection(&me.name, &permits, &me.stop, accept).await
        {
            number += 1;
            let me = me.clone();
            clients.spawn(async move {
                me.serve(stream, number).await;
                drop(permit);
            });
            while clients.try_join_next().is_some() {}
        }
        // Each client answers what it journaled and ends (promptly: every wait observes stop).
        while clients.join_next().await.is_some() {}
        Ok(())
    }

    /// Reads one client's lines into the journal; answers `ok N` when the client is done.
    async fn serve(&self, mut stream: UnixStream, client: u64) {
        let mut c = Client {
            id: client,
            shown: format!("{} (client {client})", self.listener.path.display()),
            splitter: LineSplitter::new(0, self.max_line),
            accepted: 0,
            pending: VecDeque::new(),
            chain: Chain::default(),
        };
        let mut buf = vec![0u8; READ];
        loop {
            let read = tokio::select! {
                r = stream.read(&mut buf) => r,
                // Stopping (shutdown or reload): say what was journaled, then close.
                _ = self.stop.cancelled() => break,
            };
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(source = %self.name, client, error = %e, "client read failed");
                    break;
                }
            };
            match self.take(&mut c, &buf[..n]).await {
                Handed::Taken => {}
                Handed::Stopping => break,
                Handed::Failed => return,
            }
        }
        self.answer(stream, c).await;
    }

    /// Hands the lines of one read to the journal, in batches of at most its batch limit;
    /// records lines over `max_line_bytes` as rejected.
    async fn take(&self, c: &mut Client, bytes: &[u8]) -> Handed {
        c.splitter.push(bytes);
        // About what this read's lines hold (not regrown line by line).
        let mut batch = Vec::with_capacity(bytes.len().min(self.journal.batch_limit()));
        let mut lines = 0u64;
        while let Some(piece) = c.splitter.next_piece() {
            match piece {
                Piece::Line { text, .. } if text.iter().all(u8::is_ascii_whitespace) => {}
                Piece::Line { text, .. } => {
                    if !batch.is_empty() && batch.len() + text.len() >= self.journal.batch_limit() {
                        let full = (std::mem::take(&mut batch), std::mem::take(&mut lines));
                        match self.hand(full, c).await {
                            Handed::Taken => {}
                            other => return other,
                        }
                    }
                    batch.extend_from_slice(&text);
                    batch.push(b'\n');
                    lines += 1;
                }
                Piece::TooLong {
                    start,
                    end,
                    len,
                    prefix,
                } => {
                    let max = self.max_line as u64;
                    let why = Rejection::TooLong { len, max };
                    if self
                        .reject(&c.shown, (start, end), why, &prefix)
                        .await
                        .is_err()
                    {
                        return Handed::Failed;
                    }
                }
            }
        }
        match batch.is_empty() {
            true => Handed::Taken,
            false => self.hand((batch, lines), c).await,
        }
    }

    /// Once the client is done (or the source stops): counts what is durable, records a partial
    /// last line, answers `ok N` and closes.
    async fn answer(&self, mut stream: UnixStream, mut c: Client) {
        // What the writer has is counted once durable; once stopping, for a short while only
        // (lines not counted are sent again by the client: nothing is lost).
        let settled = tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            r = settle_all(&mut c.pending, &mut c.accepted) => Some(r),
        };
        let settled = match settled {
            Some(r) => r,
            None => {
                tokio::time::timeout(SETTLE_ON_STOP, settle_all(&mut c.pending, &mut c.accepted))
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        if let Err(e) = settled {
            return self.failed(&e, c.id);
        }
        let (start, partial) = c.splitter.pending();
        if !partial.is_empty() && !self.stop.is_cancelled() {
            let (partial, end) = (partial.to_vec(), start + partial.len() as u64);
            let why = Rejection::NotAnEvent(
                "incomplete line: the client disconnected in the middle of it".into(),
            );
            if self
                .reject(&c.shown, (start, end), why, &partial)
                .await
                .is_err()
            {
                return;
            }
        }
        let answer = async {
            let _ = stream
                .write_all(format!("ok {}\n", c.accepted).as_bytes())
                .await;
            let _ = stream.shutdown().await;
        };
        // A client that does not read its answer does not hold the source up.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), answer).await;
    }

    /// Hands a client's lines (and how many there are) to the journal. Until it has room, and
    /// while [`IN_FLIGHT`] earlier ones are not yet durable, the client is not read from
    /// (backpressure).
    async fn hand(&self, (batch, lines): (Vec<u8>, u64), c: &mut Client) -> Handed {
        while c.pending.len() >= IN_FLIGHT {
            let settled = tokio::select! {
                r = settle_oldest(&mut c.pending, &mut c.accepted) => r,
                _ = self.stop.cancelled() => return Handed::Stopping,
            };
            if let Err(e) = settled {
                self.failed(&e, c.id);
                return Handed::Failed;
            }
        }
        let submitted = tokio::select! {
            r = self.journal.submit(batch, Some(&c.chain)) => r,
            _ = self.stop.cancelled() => return Handed::Stopping,
        };
        match submitted {
            Ok(append) => {
                c.pending.push_back((append, lines));
                Handed::Taken
            }
            Err(e) => {
                self.failed(&e, c.id);
                Handed::Failed
            }
        }
    }

    fn failed(&self, e: &AppendError, client: u64) {
        tracing::error!(source = %self.name, client, error = %e, "cannot journal a client's lines; closing the connection unanswered");
    }

    async fn reject(
        &self,
        shown: &str,
        range: (u64, u64),
        why: Rejection,
        raw: &[u8],
    ) -> Result<(), Stopped> {
        let run = super::rejected::Run::new(range, &why, raw);
        self.rejected.record(shown, run, &self.stop).await
    }
}

/// One client's connection as it is read.
struct Client {
    id: u64,
    /// The socket and the client, for rejected records and logs.
    shown: String,
    splitter: LineSplitter,
    /// Lines durable in the journal: what `ok N` says.
    accepted: u64,
    /// Appends with the writer, oldest first, and how many lines each holds.
    pending: VecDeque<(Pending, u64)>,
    /// This client's appends: once one fails, the rest are refused (no line after a gap).
    chain: Chain,
}

/// What became of a client's lines handed to the journal.
enum Handed {
    /// The writer has them.
    Taken,
    /// Stopping: answer what is durable, then close.
    Stopping,
    /// The journal refused them (logged): close unanswered.
    Failed,
}

/// Waits for the oldest append with the writer to be durable, then counts its lines. If the wait
/// is cancelled, it stays first in line, so what is counted is always a prefix of the client's.
async fn settle_oldest(
    pending: &mut VecDeque<(Pending, u64)>,
    accepted: &mut u64,
) -> Result<(), AppendError> {
    let Some((append, lines)) = pending.front_mut() else {
        return Ok(());
    };
    append.durable().await?;
    *accepted += *lines;
    pending.pop_front();
    Ok(())
}

/// [`settle_oldest`] until nothing is with the writer.
async fn settle_all(
    pending: &mut VecDeque<(Pending, u64)>,
    accepted: &mut u64,
) -> Result<(), AppendError> {
    while !pending.is_empty() {
        settle_oldest(pending, accepted).await?;
    }
    Ok(())
}
