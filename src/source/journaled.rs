//! Reading a source's journal into the pipeline, as a file is read: in order, across segments,
//! from the source's checkpoint (or the journal's start), only what is durable. Socket and HTTP
//! sources write the journal; this reads it, so both are one more way in to the same dispatch.
//! Bytes the journal lost (a segment deleted, cut short or unreadable) are recorded as one
//! rejected record with their byte range (and the partial line before them, if any), counted
//! (`reason="journal_gap"`) and logged once; reading goes on after them.

use super::lines::LineSplitter;
use super::{Dispatch, Origin, Span, Stopped};
use crate::checkpoint::CheckpointBook;
use crate::event::Rejection;
use crate::journal::{Gap, Journal};
use crate::position::Position;
use std::io;
use std::sync::Arc;

pub struct JournalSource {
    pub journal: Journal,
    pub max_line: usize,
    pub book: Arc<CheckpointBook>,
    pub dispatch: Dispatch,
}

impl JournalSource {
    /// Dispatches the journal's lines until the dispatch's stop token fires.
    pub async fn run(self) -> io::Result<()> {
        let start = match self.book.get(&self.dispatch.info.name) {
            Some(Position::Journal { id, offset }) if id == *self.journal.id() => Some(offset),
            _ => None,
        };
        let mut reader = self.journal.reader(start);
        let mut splitter = LineSplitter::new(reader.position(), self.max_line);
        let origin = Origin::Journal {
            dir: self.journal.dir(),
            id: self.journal.id(),
        };
        // Its listener was bound before the pipeline started; the journal is open.
        self.dispatch.opened.done();
        loop {
            if !reader.wait(&self.dispatch.stop).await {
                return Ok(());
            }
            loop {
                if self.dispatch.stop.is_cancelled() {
                    return Ok(());
                }
                let n = match splitter.fill_from(&mut reader) {
                    Ok(n) => n,
                    Err(e) => {
                        // Short of file descriptors or memory: tried again, nothing skipped.
                        tracing::warn!(source = %self.dispatch.info.name, journal = %self.journal.dir().display(), error = %e, "cannot read the journal now; trying again in 1s");
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                            () = self.dispatch.stop.cancelled() => return Ok(()),
                        }
                    }
                };
                while let Some(piece) = splitter.next_piece() {
                    if self
                        .dispatch
                        .piece(origin, piece, self.max_line)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                if let Some(gap) = reader.take_gap() {
                    if self.lost(&mut splitter, origin, gap).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                if n == 0 {
                    // Caught up: the rejected lines just read are recorded before waiting.
                    if self.dispatch.idle().await.is_err() {
                        return Ok(());
                    }
                    break;
                }
                tokio::task::consume_budget().await;
            }
        }
    }

    /// Records bytes the journal lost, with the partial line read before them, and goes on after.
    async fn lost(
        &self,
        splitter: &mut LineSplitter,
        origin: Origin<'_>,
        gap: Gap,
    ) -> Result<(), Stopped> {
        let (start, partial) = splitter.pending();
        let (start, partial) = (start.min(gap.start), partial.to_vec());
        splitter.reset(gap.end);
        let at = Span {
            origin,
            start,
            end: gap.end,
        };
        let why = format!("bytes {}..{}: {}", gap.start, gap.end, gap.why);
        // A gap is a record of its own, never part of a run of bad lines (nor of another gap).
        self.dispatch.idle().await?;
        self.dispatch
            .reject(at, Rejection::JournalGap(why), &partial)
            .await?;
        self.dispatch.idle().await
    }
}
