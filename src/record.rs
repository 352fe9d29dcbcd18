//! A [`Record`]: one event on its way to the sinks, with where it was read and its acknowledgement.
//!
//! Records are shared (`Arc`) by every sink that takes the event. Each sink calls [`Record::ack`]
//! exactly once when it is done with the record (delivered, or written to its dead-letter file); the
//! source's checkpoint moves past the line when all have.

use crate::ack::Tracker;
use crate::event::{Event, Format};
use std::sync::Arc;

/// A source as records refer to it.
#[derive(Debug)]
pub struct SourceInfo {
    pub name: Box<str>,
    pub format: Format,
}

#[derive(Debug)]
pub struct Record {
    pub source: Arc<SourceInfo>,
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
    /// `Idempotency-Key` of a delivery of this record alone: source, file fingerprint, offset.
    pub key: Box<str>,
    /// The line as read (for templates' `source.line` and dead letters).
    pub line: Box<str>,
    pub event: Event,
    /// Where to report completion; `None` for records that are not read from a source (replay).
    ack: Option<(Arc<Tracker>, u64)>,
}

impl Record {
    pub fn new(
        source: Arc<SourceInfo>,
        offset: u64,
        key: Box<str>,
        line: Box<str>,
        event: Event,
    ) -> Self {
        Record {
            source,
            offset,
            key,
            line,
            event,
            ack: None,
        }
    }

    pub fn with_ack(mut self, tracker: Arc<Tracker>, seq: u64) -> Self {
        self.ack = Some((tracker, seq));
        self
    }

    /// Tells the source one sink is done with this record.
    pub fn ack(&self) {
        if let Some((tracker, seq)) = &self.ack {
            tracker.ack(*seq);
        }
    }
}
