//! Per-source bookkeeping of lines in flight: which are done, how far the checkpoint may move, and
//! how much memory the source may still fill.
//!
//! Every line read gets a slot, in file order, holding how many sinks still owe an acknowledgement.
//! Slots complete in any order (sinks with `concurrency > 1`, several sinks); the checkpoint moves
//! to the end of the longest fully done prefix. A source must [`Tracker::admit`] a line's cost
//! (what its record really holds: the line, shared with the buffer it was read into, and what of
//! the parsed event is not a piece of it; a line no sink takes, its bytes) before reading on; the
//! cost comes back only when the line leaves the front of the queue, so a stuck delivery stops
//! reading once the source's share is spent.
//!
//! The process has one budget of bytes in flight, [`IN_FLIGHT_BYTES`], split evenly between the
//! sources of the running config ([`share`]): memory stays bounded whatever the backlog and however
//! many sources there are, and a source whose sink is stuck never holds back the others.

use crate::checkpoint::CheckpointBook;
use crate::position::Position;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;

/// Bytes of records all sources together may have in flight (read and not yet checkpointed).
pub const IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Cost charged per line on top of the bytes its record holds: the record and event structs
/// (about 260 bytes), the slot, the allocator's rounding and the queues' share.
pub const LINE_OVERHEAD: usize = 384;

/// Each of `sources` sources' share of [`IN_FLIGHT_BYTES`]; at least what one record of a
/// `max_line`-byte line can hold (the line and its parsed event), so every line fits.
pub fn share(sources: usize, max_line: usize) -> usize {
    (IN_FLIGHT_BYTES / sources.max(1))
        .max(max_line.saturating_mul(2).saturating_add(LINE_OVERHEAD))
        .min(Semaphore::MAX_PERMITS)
}

struct Slot {
    remaining: u32,
    cost: u32,
    /// Where the line ends: the checkpoint once it and every line before it are done.
    end: Position,
}

struct State {
    /// Sequence number of `slots[0]`.
    front: u64,
    slots: VecDeque<Slot>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracker({})", self.source)
    }
}

pub struct Tracker {
    source: Box<str>,
    book: Arc<CheckpointBook>,
    budget: Semaphore,
    capacity: usize,
    state: Mutex<State>,
}

impl Tracker {
    /// A tracker of `source`'s lines, which may hold `capacity` bytes in flight ([`share`]).
    pub fn new(source: &str, book: Arc<CheckpointBook>, capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Tracker {
            source: source.into(),
            book,
            budget: Semaphore::new(capacity),
            capacity,
            state: Mutex::new(State {
                front: 0,
                slots: VecDeque::new(),
            }),
        }
    }

    /// The cost of a record holding `bytes` bytes (its event, line included).
    pub fn cost(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.saturating_add(LINE_OVERHEAD).min(self.capacity)).unwrap_or(u32::MAX)
    }

    /// Waits until `cost` fits in the budget, then takes it. Returns it to [`Tracker::push`].
    pub async fn admit(&self, cost: u32) {
        if let Ok(permit) = self.budget.acquire_many(cost).await {
            permit.forget();
        }
    }

    /// Takes `cost` from the budget if it fits now, as [`Tracker::admit`] would without waiting.
    pub fn try_admit(&self, cost: u32) -> bool {
        self.budget
            .try_acquire_many(cost)
            .map(tokio::sync::SemaphorePermit::forget)
            .is_ok()
    }

    /// Records a line ending at `end` that `sinks` sinks will acknowledge; returns its sequence
    /// number. `cost` must have been admitted.
    pub fn push(&self, end: Position, sinks: u32, cost: u32) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = st.front + st.slots.len() as u64;
        st.slots.push_back(Slot {
            remaining: sinks,
            cost,
            end,
        });
        if sinks == 0 {
            self.advance(st);
        }
        seq
    }

    /// One sink is done with line `seq`.
    pub fn ack(&self, seq: u64) {
        self.ack_all([seq]);
    }

    /// One sink is done with each of lines `seqs` (a delivered group): one lock for all.
    pub fn ack_all(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for seq in seqs {
            let Some(index) = seq.checked_sub(st.front) else {
                continue;
            };
            if let Some(slot) = st.slots.get_mut(index as usize) {
                slot.remaining = slot.remaining.saturating_sub(1);
            }
        }
        if st.slots.front().is_some_and(|s| s.remaining == 0) {
            self.advance(st);
        }
    }

    /// Pops done slots off the front, returns their budget and moves the checkpoint.
    fn advance(&self, mut st: std::sync::MutexGuard<'_, State>) {
        let mut released = 0usize;
        let mut last = None;
        while st.slots.front().is_some_and(|s| s.remaining == 0) {
            if let Some(slot) = st.slots.pop_front() {
                released += slot.cost as usize;
                last = Some(slot.end);
            }
            st.front += 1;
        }
        drop(st);
        if released > 0 {
            self.budget.add_permits(released);
        }
        if let Some(end) = last {
            self.book.set(&self.source, end);
        }
    }
}

impl Tracker {
    /// Lines read and not yet checkpointed.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position::Journal {
            id: "j".into(),
            offset,
        }
    }

    #[tokio::test]
    async fn checkpoint_moves_only_past_a_done_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let book = CheckpointBook::open(dir.path()).unwrap();
        let t = Tracker::new("s", book.clone(), share(1, 100));
        let a = t.push(at(10), 2, 1);
        let b = t.push(at(20), 1, 1);
        let _c = t.push(at(30), 0, 1);
        t.ack(b);
        assert_eq!(book.get("s"), None);
        t.ack(a);
        assert_eq!(book.get("s"), None, "one sink still owes line a");
        t.ack(a);
        assert_eq!(book.get("s"), Some(at(30)));
        assert_eq!(t.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_group_is_acknowledged_at_once_and_still_only_past_a_done_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let book = CheckpointBook::open(dir.path()).unwrap();
        let t = Tracker::new("s", book.clone(), share(1, 100));
        let mut seqs = vec![];
        for i in 1..=5 {
            assert!(t.try_admit(1));
            seqs.push(t.push(at(i * 10), 2, 1));
        }
        // One sink's group, newest first, then the other's without the first line.
        t.ack_all(seqs.iter().rev().copied());
        t.ack_all(seqs[1..].iter().copied());
        assert_eq!(book.get("s"), None, "line 1 is still owed");
        assert_eq!(t.in_flight(), 5);
        t.ack_all([seqs[0], seqs[0] + 100]);
        assert_eq!(book.get("s"), Some(at(50)));
        assert_eq!(t.in_flight(), 0);
        assert!(t.try_admit(t.capacity as u32), "the whole budget is back");
        assert!(!t.try_admit(1));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_blocks_until_the_front_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let book = CheckpointBook::open(dir.path()).unwrap();
        let t = Arc::new(Tracker::new("s", book, share(1, 10)));
        let big = t.capacity as u32;
        t.admit(big).await;
        let first = t.push(at(1), 1, big);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.admit(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.ack(first);
        waiter.await.unwrap();
    }

    #[test]
    fn the_budget_is_split_between_sources_but_always_fits_a_line() {
        assert_eq!(share(1, 1000), IN_FLIGHT_BYTES);
        assert_eq!(share(4, 1000), IN_FLIGHT_BYTES / 4);
        assert_eq!(share(0, 1000), IN_FLIGHT_BYTES);
        assert_eq!(share(64, 1 << 20), (2 << 20) + LINE_OVERHEAD);
    }
}
