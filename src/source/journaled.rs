//! Reading a source's journal into the pipeline, as a file is read: in order, across segments,
//! from the source's checkpoint (or the journal's start), only what is durable. Socket and HTTP
//! sources write the journal; this reads it, so both are one more way in to the same dispatch.

use super::lines::LineSplitter;
use super::{Dispatch, Origin};
use crate::checkpoint::CheckpointBook;
use crate::journal::Journal;
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
                let n = splitter.fill_from(&mut reader)?;
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
}
