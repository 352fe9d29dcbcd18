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

/// What a record's idempotency key is made of.
#[derive(Debug)]
enum Key {
    /// Read from a stream (a file's fingerprint in hex, a journal's id): `SOURCE-STREAM-OFFSET`,
    /// written out when a delivery needs it.
    Stream(Arc<str>),
    /// Given whole: a dead letter's, kept from its first delivery.
    Given(Box<str>),
}

#[derive(Debug)]
pub struct Record {
    pub source: Arc<SourceInfo>,
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
    /// What `Idempotency-Key` of a delivery of this record alone is made of.
    key: Key,
    /// The event, and the line it was read from (for templates' `source.line` and dead letters).
    pub event: Event,
    /// Where to report completion; `None` for records that are not read from a source (replay).
    ack: Option<(Arc<Tracker>, u64)>,
}

impl Record {
    /// A record with an idempotency key given whole (a dead letter's, a test's).
    pub fn new(source: Arc<SourceInfo>, offset: u64, key: Box<str>, event: Event) -> Self {
        Record {
            source,
            offset,
            key: Key::Given(key),
            event,
            ack: None,
        }
    }

    /// A record read at `offset` of `stream` (what identifies the file or journal in keys).
    pub fn read(source: Arc<SourceInfo>, offset: u64, stream: Arc<str>, event: Event) -> Self {
        Record {
            source,
            offset,
            key: Key::Stream(stream),
            event,
            ack: None,
        }
    }

    /// The line as read.
    pub fn line(&self) -> &str {
        self.event.line()
    }

    /// Appends the `Idempotency-Key` of a delivery of this record alone: source, stream, offset.
    pub fn write_key(&self, out: &mut String) {
        match &self.key {
            Key::Stream(stream) => {
                out.push_str(&self.source.name);
                out.push('-');
                out.push_str(stream);
                out.push('-');
                push_decimal(out, self.offset);
            }
            Key::Given(key) => out.push_str(key),
        }
    }

    /// The `Idempotency-Key` of a delivery of this record alone.
    pub fn key(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write_key(&mut out);
        out
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

    /// [`Record::ack`] for each of `records` (a delivered group), one lock per run of records
    /// from the same source.
    pub fn ack_all(records: &[Arc<Record>]) {
        let mut rest = records;
        while let Some(first) = rest.first() {
            let Some((tracker, _)) = &first.ack else {
                rest = &rest[1..];
                continue;
            };
            let run = rest
                .iter()
                .position(|r| !r.ack.as_ref().is_some_and(|(t, _)| Arc::ptr_eq(t, tracker)))
                .unwrap_or(rest.len());
            tracker.ack_all(
                rest[..run]
                    .iter()
                    .filter_map(|r| r.ack.as_ref().map(|a| a.1)),
            );
            rest = &rest[run..];
        }
    }
}

/// Appends `n` in decimal (what `write!` would, without the formatting machinery: a batch's
/// delivery key writes one per event).
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 1_000_001, u64::MAX] {
            let mut out = String::from("x-");
            super::push_decimal(&mut out, n);
            assert_eq!(out, format!("x-{n}"));
        }
    }
}
