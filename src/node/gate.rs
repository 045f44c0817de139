//! When a node's first receipt commitment after its start may be sealed, and what it does when
//! a bootstrap node lends its key to another instance (`node::auditors`, which asks; this
//! decides). Pure: the caller says who answered, what they said, and what time it is.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// When seals may begin: once every bootstrap node answered, or at the deadline; never while
/// a bootstrap node says another instance of this key holds its lease. Pure: the caller says
/// who answered and what time it is.
#[derive(Debug)]
pub(super) struct Gate {
    waiting_for: HashSet<PeerId>,
    /// Bootstrap nodes that lend this key to another instance (still waited for).
    held: HashSet<PeerId>,
    deadline: Instant,
    open: bool,
}

impl Gate {
    pub(super) fn new(expected: HashSet<PeerId>, now: Instant, wait: Duration) -> Gate {
        Gate {
            open: expected.is_empty(),
            waiting_for: expected,
            held: HashSet::new(),
            deadline: now + wait,
        }
    }

    /// `peer` answered (after what it said was acted on) at `now`. True when this opens the
    /// gate.
    pub(super) fn answered(&mut self, peer: &PeerId, now: Instant) -> bool {
        self.waiting_for.remove(peer);
        self.held.remove(peer);
        self.tick(now)
    }

    /// `peer` lends this key to another instance: the gate stays shut until it answers again.
    pub(super) fn held_by(&mut self, peer: PeerId) {
        if !self.open {
            self.held.insert(peer);
        }
    }

    /// The time is `now`. True when this opens the gate.
    pub(super) fn tick(&mut self, now: Instant) -> bool {
        let may = self.held.is_empty() && (self.waiting_for.is_empty() || now >= self.deadline);
        let opened = may && !self.open;
        self.open |= may;
        opened
    }

    pub(super) fn is_waiting_for(&self, peer: &PeerId) -> bool {
        !self.open && self.waiting_for.contains(peer)
    }

    /// Whether a bootstrap node lends this key to another instance (the gate is shut).
    pub(super) fn is_held(&self) -> bool {
        !self.held.is_empty()
    }

    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// While closed: how many bootstrap nodes have yet to answer, how many of them lend the
    /// key to another instance, and how long it may still wait at `now` for the others.
    pub(super) fn waiting(&self, now: Instant) -> Option<(usize, usize, Duration)> {
        (!self.open).then(|| {
            (
                self.waiting_for.len(),
                self.held.len(),
                self.deadline.saturating_duration_since(now),
            )
        })
    }
}

/// Whether an instance a bootstrap node last heard `ago_s` seconds ago (whole seconds, cut
/// down) was heard after this run started, `uptime` ago: then it is another running node, not
/// this node's own run before a power cut.
pub(super) fn heard_since(ago_s: u32, uptime: Duration) -> bool {
    Duration::from_secs(u64::from(ago_s) + 1) < uptime
}

/// What a node does when a bootstrap node says another instance holds its key's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// Sealing: stop for the rest of the run (another running node holds the key).
    Stop,
    /// Sealing began at the deadline without this bootstrap node's answer, and the holder was
    /// not heard since this run started: most likely this node's own previous run. A copy that
    /// runs asks within a `NUMBERING_CHECK`, and is then heard since.
    SealOn,
    /// Not sealing yet: wait, and say another node runs with this key.
    WaitForCopy,
    /// Not sealing yet: wait for the lease to run out (this node's run before a power cut, or a
    /// copy not heard yet); no alarm.
    WaitForPrevious,
}

/// Pure: whether the node seals already (`open`), and whether the holder was heard since this
/// run started.
pub(super) fn on_held(open: bool, since: bool) -> Held {
    match (open, since) {
        (true, true) => Held::Stop,
        (true, false) => Held::SealOn,
        (false, true) => Held::WaitForCopy,
        (false, false) => Held::WaitForPrevious,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    /// Seals wait for every bootstrap node, each counted once, or for the deadline; with no
    /// bootstrap node there is nothing to wait for.
    #[test]
    fn seals_wait_for_every_bootstrap_node_or_the_deadline() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(60);
        let p = peers(3);
        let mut g = Gate::new(p[..2].iter().copied().collect(), t0, wait);
        assert!(!g.open);
        assert!(!g.answered(&p[2], t0), "not a bootstrap node");
        assert!(!g.answered(&p[0], t0));
        assert!(!g.answered(&p[0], t0), "the same one again");
        assert!(!g.tick(t0 + wait - Duration::from_millis(1)));
        assert_eq!(
            g.waiting(t0 + Duration::from_secs(10)),
            Some((1, 0, Duration::from_secs(50)))
        );
        assert!(g.answered(&p[1], t0), "the last one opens it");
        assert_eq!(g.waiting(t0), None);
        assert!(!g.answered(&p[1], t0) && !g.tick(t0 + wait), "opened once");

        let mut g = Gate::new(p[..2].iter().copied().collect(), t0, wait);
        assert!(!g.answered(&p[0], t0));
        assert!(g.tick(t0 + wait), "the deadline opens it");
        assert!(!g.answered(&p[1], t0 + wait));
        assert!(g.open);

        assert!(Gate::new(HashSet::new(), t0, wait).open);
    }

    /// While a bootstrap node lends the key to another instance, neither the other bootstrap
    /// nodes' answers nor the deadline open the gate; that node answering (the lease is this
    /// instance's now) does. An open gate is not closed by a lease held elsewhere (the running
    /// node stops sealing instead).
    #[test]
    fn seals_wait_while_another_instance_holds_the_key() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(60);
        let p = peers(2);
        let mut g = Gate::new(p.iter().copied().collect(), t0, wait);
        g.held_by(p[0]);
        assert!(!g.answered(&p[1], t0));
        assert!(g.is_waiting_for(&p[0]));
        assert_eq!(g.waiting(t0), Some((1, 1, wait)));
        assert!(!g.tick(t0 + wait * 10), "the deadline does not open it");
        assert!(g.answered(&p[0], t0 + wait * 10));
        g.held_by(p[0]);
        assert!(g.is_open() && !g.is_held());
        assert!(!g.is_waiting_for(&p[0]));

        // Held by one, then past the deadline with the other never answering: the held one's
        // answer opens it.
        let mut g = Gate::new(p.iter().copied().collect(), t0, wait);
        g.held_by(p[0]);
        assert!(!g.tick(t0 + wait));
        assert!(g.answered(&p[0], t0 + wait));
    }

    /// A holder last heard before this run started may be its own previous run; one heard
    /// since, even rounded down to whole seconds, is another node.
    #[test]
    fn a_holder_heard_since_this_run_started_is_another_node() {
        let s = Duration::from_secs;
        assert!(!heard_since(12, Duration::from_millis(50)), "the first ask");
        assert!(
            !heard_since(130, s(120)),
            "heard before the start, asked again"
        );
        assert!(
            !heard_since(119, s(120)),
            "heard within the second of the start"
        );
        assert!(heard_since(3, s(120)));
        assert!(heard_since(0, Duration::from_millis(1_001)));
    }

    /// Only a holder heard since this run started stops a sealing node or raises the alarm;
    /// one not heard since is taken for this node's own run before a power cut.
    #[test]
    fn only_a_holder_heard_since_the_start_stops_sealing_or_raises_the_alarm() {
        assert_eq!(on_held(true, true), Held::Stop);
        assert_eq!(on_held(true, false), Held::SealOn);
        assert_eq!(on_held(false, true), Held::WaitForCopy);
        assert_eq!(on_held(false, false), Held::WaitForPrevious);
    }
}
