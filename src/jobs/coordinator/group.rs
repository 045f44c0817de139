//! Group commit, as a pure state machine: which answers may go out after which flush.
//!
//! The actor writes each update to sled at once (unflushed) and holds what depends on it (an
//! answer, follow-up work) here. One flush is in flight at a time; it covers every write
//! made before it began. When it returns, everything held behind writes it covered is
//! released, oldest first. Whatever was written while it ran waits for the next one, so
//! under load one flush acknowledges many requests, and nothing is released before the
//! writes it depends on are durable. Must not touch: sled, clocks, the network.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct GroupCommit<T> {
    /// Writes made so far.
    written: u64,
    /// Writes a completed flush made durable.
    durable: u64,
    /// The flush in flight: the writes it covers.
    flushing: Option<u64>,
    /// Held items with the writes each waits for, oldest first (so `after` never decreases).
    waiting: VecDeque<(u64, T)>,
}

impl<T> Default for GroupCommit<T> {
    fn default() -> Self {
        GroupCommit {
            written: 0,
            durable: 0,
            flushing: None,
            waiting: VecDeque::new(),
        }
    }
}

impl<T> GroupCommit<T> {
    /// One more write was made.
    pub fn wrote(&mut self) {
        self.written += 1;
    }

    /// Holds `item` until every write made so far is durable; hands it back at once when
    /// they all are already.
    pub fn hold(&mut self, item: T) -> Option<T> {
        if self.written == self.durable {
            return Some(item);
        }
        self.waiting.push_back((self.written, item));
        None
    }

    /// Whether a flush should begin now (none is in flight and some write is not durable).
    /// If so, the flush covers every write made so far.
    pub fn begin_flush(&mut self) -> bool {
        if self.flushing.is_some() || self.written == self.durable {
            return false;
        }
        self.flushing = Some(self.written);
        true
    }

    /// The flush in flight returned successfully: what may go out now, oldest first.
    pub fn flushed(&mut self) -> Vec<T> {
        if let Some(upto) = self.flushing.take() {
            self.durable = self.durable.max(upto);
        }
        let mut out = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|(after, _)| *after <= self.durable)
        {
            if let Some((_, item)) = self.waiting.pop_front() {
                out.push(item);
            }
        }
        out
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Everything still held (when the actor stops).
    pub fn drain(&mut self) -> Vec<T> {
        self.waiting.drain(..).map(|(_, item)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Write,
        Hold,
        Begin,
        Done,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Write),
            3 => Just(Op::Hold),
            1 => Just(Op::Begin),
            1 => Just(Op::Done),
        ]
    }

    proptest! {
        /// Whatever the interleaving of writes, held answers and flushes: an answer goes out
        /// only after a flush that began once every write before it was made has returned,
        /// answers go out in the order they were held, and one flush begun after the last
        /// write releases everything.
        #[test]
        fn nothing_is_released_before_its_writes_are_flushed(
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut g: GroupCommit<(usize, u64)> = GroupCommit::default();
            // (held item number, writes made when it was held)
            let mut writes = 0u64;
            let mut held = 0usize;
            // The writes the flush in flight covers (the model's own view).
            let mut in_flight: Option<u64> = None;
            let mut durable = 0u64;
            let mut released = Vec::new();
            for op in ops {
                match op {
                    Op::Write => {
                        g.wrote();
                        writes += 1;
                    }
                    Op::Hold => {
                        let item = (held, writes);
                        held += 1;
                        if g.hold(item).is_some() {
                            // Released at once: only when every write is durable.
                            prop_assert_eq!(durable, writes);
                            released.push(item);
                        }
                    }
                    Op::Begin => {
                        if g.begin_flush() {
                            prop_assert!(in_flight.is_none());
                            in_flight = Some(writes);
                        }
                    }
                    Op::Done => {
                        if let Some(covered) = in_flight.take() {
                            durable = covered;
                            for item in g.flushed() {
                                prop_assert!(item.1 <= covered, "released before its writes were flushed");
                                released.push(item);
                            }
                        }
                    }
                }
            }
            // One more flush begun now releases everything.
            if let Some(covered) = in_flight.take() {
                released.extend(g.flushed().into_iter().inspect(|i| assert!(i.1 <= covered)));
            }
            if g.begin_flush() {
                released.extend(g.flushed());
            }
            prop_assert!(g.drain().is_empty());
            let order: Vec<usize> = released.iter().map(|i| i.0).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&order, &sorted, "released out of order");
            prop_assert_eq!(order.len(), held);
        }
    }

    #[test]
    fn an_answer_waits_for_the_next_flush_when_one_is_already_running() {
        let mut g = GroupCommit::default();
        g.wrote();
        assert!(g.begin_flush());
        // Written while the first flush runs: that flush does not cover it.
        g.wrote();
        assert_eq!(g.hold("late"), None);
        assert!(!g.begin_flush(), "two flushes at once");
        assert!(g.flushed().is_empty());
        assert!(g.begin_flush());
        assert_eq!(g.flushed(), vec!["late"]);
        // Nothing unwritten: answered at once.
        assert_eq!(g.hold("now"), Some("now"));
    }
}
