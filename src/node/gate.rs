//! When a node's first receipt commitment of a sealing spell may be sealed, what it does when
//! a bootstrap node lends its key to another instance, and when it holds its key's lease at all
//! (`node::auditors`, which asks; this decides). Pure: the caller says who answered, what they
//! said, whether there is anything to seal, and what time it is.

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
    /// The node gave its key's lease back (nothing to seal): shut, waiting for nobody, until
    /// a new gate replaces it.
    resting: bool,
}

impl Gate {
    pub(super) fn new(expected: HashSet<PeerId>, now: Instant, wait: Duration) -> Gate {
        Gate {
            open: expected.is_empty(),
            waiting_for: expected,
            held: HashSet::new(),
            deadline: now + wait,
            resting: false,
        }
    }

    /// The node gives its key's lease back: shut, and nothing opens it (no answer, no
    /// deadline) until the next spell's gate replaces it.
    pub(super) fn rest(&mut self) {
        self.open = false;
        self.resting = true;
        self.waiting_for.clear();
        self.held.clear();
    }

    pub(super) fn is_resting(&self) -> bool {
        self.resting
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
        if !self.open && !self.resting {
            self.held.insert(peer);
        }
    }

    /// The time is `now`. True when this opens the gate.
    pub(super) fn tick(&mut self, now: Instant) -> bool {
        if self.resting {
            return false;
        }
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
        (!self.open && !self.resting).then(|| {
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

/// Whether this node holds its key's lease: from its start, and from whenever it has something
/// to seal again (a job of its own running, receipts waiting for a seal), until it has had
/// nothing to seal for `idle` (`NodeOptions::lease_idle`). Only a node that holds the lease
/// seals, renews it and asks where its numbering stands; one that does not asks its bootstrap
/// nodes nothing, so their load is the nodes that seal, not every node on the network. Pure:
/// the caller says whether there is anything to seal, and when.
#[derive(Debug)]
pub(super) struct Spell {
    holding: bool,
    /// Since when there was nothing to seal, while holding.
    idle_since: Option<Instant>,
    idle: Duration,
}

/// What the node does next about its key's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Holding: renew the lease, ask where the numbering stands (on a tick).
    Renew,
    /// Nothing to seal for `idle`: stop sealing, give the lease back.
    Release,
    /// Something to seal while not holding: ask for the lease and the numbering again; seals
    /// wait until every bootstrap node answered (or the numbering wait passed), as at a start.
    Acquire,
    /// Nothing to do now.
    Rest,
}

impl Spell {
    /// A spell begins at the start (the start's questions find a copy already running, and
    /// number on past a restored backup), whether or not there is anything to seal.
    pub(super) fn new(idle: Duration) -> Spell {
        Spell {
            holding: true,
            idle_since: None,
            idle,
        }
    }

    /// Whether there is anything to seal (`wanted`) at `now`; `tick`: the periodic check is
    /// due (otherwise only `wanted` changed).
    pub(super) fn step(&mut self, wanted: bool, now: Instant, tick: bool) -> Step {
        if !self.holding {
            if wanted {
                self.holding = true;
                self.idle_since = None;
                return Step::Acquire;
            }
            return Step::Rest;
        }
        if wanted {
            self.idle_since = None;
        } else {
            let since = *self.idle_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.idle {
                self.holding = false;
                self.idle_since = None;
                return Step::Release;
            }
        }
        match tick {
            true => Step::Renew,
            false => Step::Rest,
        }
    }

    /// The release was called off: something came to seal as the coordinator stopped.
    pub(super) fn keep(&mut self) {
        self.holding = true;
        self.idle_since = None;
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

    /// A resting gate (the lease given back) is opened by nothing, waits for nobody, and says
    /// nothing waits; the next spell's gate waits for every bootstrap node again.
    #[test]
    fn a_resting_gate_stays_shut_until_the_next_spell() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(60);
        let p = peers(2);
        let mut g = Gate::new(p.iter().copied().collect(), t0, wait);
        assert!(!g.answered(&p[0], t0) && g.answered(&p[1], t0));
        g.rest();
        assert!(g.is_resting() && !g.is_open());
        assert!(!g.is_waiting_for(&p[0]));
        g.held_by(p[0]);
        assert!(!g.is_held());
        assert!(!g.answered(&p[0], t0) && !g.tick(t0 + wait * 10));
        assert_eq!(g.waiting(t0), None);
        let mut g = Gate::new(p.iter().copied().collect(), t0 + wait * 10, wait);
        assert!(g.is_waiting_for(&p[0]) && !g.is_resting());
        assert!(!g.answered(&p[0], t0 + wait * 10));
        assert!(g.tick(t0 + wait * 11), "the new deadline opens it");
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

    /// A node holds the lease from its start; after `idle` with nothing to seal (counted from
    /// the first time it saw nothing, reset by anything to seal) it gives it back, and asks
    /// for it again only when something comes to seal, at once, not at the next tick.
    #[test]
    fn the_lease_is_held_while_there_is_something_to_seal_and_for_idle_after() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut spell = Spell::new(s(600));
        assert_eq!(spell.step(false, t0, true), Step::Renew, "idle from t0");
        assert_eq!(spell.step(false, t0 + s(599), true), Step::Renew);
        assert_eq!(spell.step(true, t0 + s(599), false), Step::Rest, "a job");
        assert_eq!(
            spell.step(false, t0 + s(700), true),
            Step::Renew,
            "idle anew"
        );
        assert_eq!(spell.step(false, t0 + s(1299), true), Step::Renew);
        assert_eq!(spell.step(false, t0 + s(1300), true), Step::Release);
        assert_eq!(spell.step(false, t0 + s(1400), true), Step::Rest);
        assert_eq!(spell.step(false, t0 + s(1400), false), Step::Rest);
        assert_eq!(spell.step(true, t0 + s(1401), false), Step::Acquire);
        assert_eq!(spell.step(true, t0 + s(1402), false), Step::Rest);
        assert_eq!(spell.step(true, t0 + s(5000), true), Step::Renew, "busy");

        // Released, and the coordinator had something after all: held again, idle anew.
        assert_eq!(spell.step(false, t0 + s(5001), true), Step::Renew);
        assert_eq!(spell.step(false, t0 + s(5601), true), Step::Release);
        spell.keep();
        assert_eq!(spell.step(false, t0 + s(5602), true), Step::Renew);
        assert_eq!(spell.step(false, t0 + s(6202), true), Step::Release);
    }
}
