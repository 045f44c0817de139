//! When a failed hole punch is tried again (sans-IO: the swarm task asks, acts and reports).
//!
//! DCUtR runs once per relayed connection: when a punch fails, libp2p leaves the two homes
//! relayed until something else happens to open another relayed connection between them (an
//! AutoNAT dial-back, a Kademlia dial). A punch fails for reasons that pass: a path that was
//! down for a moment, both SYNs dropped by NATs that had no mapping yet, a candidate address
//! learned before the port mapping settled, an earlier dial still holding the four-tuple. The
//! NAT lab's cone variant once failed on CI with a radiator of home 2 left relayed after three
//! rounds (the lab now prints each punch dial's error when it fails). So a home tries again
//! itself: a while after a failure, while the peer is still reached only through a relay, it
//! opens a fresh relayed connection to it, and the peer runs the punch over that one with its
//! address candidates taken afresh.
//!
//! One failure outlasts short waits: a punch race lost on a Linux home router (one side's dial
//! from its listening port gives up silently, then the other's SYN arrives and the listener
//! answers it with a new sequence number) leaves the router's conntrack entry for the
//! punch's four-tuple half open and expecting the old numbers. Every later punch on that
//! four-tuple is then out of window, goes out untranslated or not at all, and fails, until
//! the entry expires 120 s after its last valid packet (`nf_conntrack_tcp_timeout_syn_sent`;
//! the failed punches do not refresh it: `conntrack -E` on the lab's router showed none). Found
//! in the NAT lab under load, captured on the routers, and reproduced on purpose by
//! `testnet/nat --stale-entry`. So the last retry comes [`STALE_NAT_STATE`] or more after the
//! first failure. (A punch on the four-tuple of a connection that closed a moment ago meets the
//! same race, and made such entries afresh: so punched connections are kept open, `keep.rs`.)
//!
//! Bounds: at most [`RETRIES`] retries per peer per connected spell, each wait three times the
//! last from [`FIRST_WAIT`] (5, 15, 45, 135 s); a success resets them. The state lives with the
//! peer's connection state and, when the peer disconnects, in [`PunchMemory`] for [`REJOIN`]:
//! a retry's fresh relayed connection replaces the one before (`relayed.rs`: the newer stays),
//! and the far end sees the old one close a moment before the new one is established, so it
//! saw the peer disconnect, its retry state went with it, and its next failure scheduled a
//! retry at 5 s again. DCUtR reports a round's failure only to the end that accepted the
//! relayed connection, so the two homes took turns, each restarting at 5 s: the NAT lab counted
//! 8 and 9 retries by one home with one peer in two minutes, for as long as punches failed
//! (two homes behind one router without hairpinning never stop failing). Kept across a
//! disconnection of a few seconds, each home's backoff grows, and a pair costs the relay at
//! most 2 × [`RETRIES`] fresh circuits per connected spell. A spell that ends for longer
//! (nothing of hearth's wants the peer; a relay circuit lasts 120 s) forgets it: the next one
//! comes from the node's own use of the peer, not from a timer. (Keeping the state 10 minutes
//! was tried and reverted on 2026-12-05 before `keep.rs` existed, when idle punched
//! connections kept re-punching into fresh stale router entries; docs/testnet.md.)
//!
//! Size: about 730 lines, above the ~700 the house style asks, of which about 320 are unit
//! tests: three small pure state machines of one subject (when a peer is punched again:
//! [`PunchRetry`] with [`PunchMemory`], [`Lost`], and [`Direct`], which tells `Lost` when a
//! punched path was lost), each with its tests beside it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::candidates::starts_at_host;
use super::relayed::is_relayed;

/// Retries of a failed hole punch per peer per connected spell: four, so that their waits
/// together (200 s) pass [`STALE_NAT_STATE`].
pub(crate) const RETRIES: u32 = 4;
/// How long a home router may keep a half-open entry that breaks punches on its four-tuple:
/// Linux conntrack's default timeout for a connection still in its SYN exchange.
pub(crate) const STALE_NAT_STATE: Duration = Duration::from_secs(120);
// The retries' waits together pass it: checked when hearth is built.
const _: () = assert!(total_wait_secs() > STALE_NAT_STATE.as_secs());
/// Wait before the first retry; each later one waits three times as long (5, 15, 45, 135 s). Long
/// enough that the failed round's dials are over: a dial whose SYN was dropped holds its
/// four-tuple (the listen port, reused, to the peer's address) until libp2p's 10 s connection
/// timeout, and a punch dialled meanwhile gets a fresh port that no NAT mapping expects.
pub(crate) const FIRST_WAIT: Duration = Duration::from_secs(5);

/// How long the retry state of a peer that disconnected is kept ([`PunchMemory`]): the gap
/// between a replaced relayed connection closing and its replacement being established is a
/// relay round trip; a few seconds of slack for a loaded radiator.
pub(crate) const REJOIN: Duration = Duration::from_secs(10);
/// Peers whose retry state is kept after they disconnected, at most (each a few dozen bytes,
/// each for [`REJOIN`]); past it the one that left longest ago is forgotten first.
pub(crate) const MAX_REMEMBERED: usize = 1024;
/// The longest wait between two tries to bring back a lost peer ([`Lost`]): reached only by
/// a node that listens through no relay meanwhile, whose tries go on until it does.
pub(crate) const MAX_LOST_WAIT: Duration = Duration::from_secs(600);

/// The waits of all [`RETRIES`] retries together, in seconds.
const fn total_wait_secs() -> u64 {
    let (mut total, mut wait, mut i) = (0, FIRST_WAIT.as_secs(), 0);
    while i < RETRIES {
        total += wait;
        wait *= 3;
        i += 1;
    }
    total
}

/// Hole punches with one connected peer: failures since the last success (what a blob fetch
/// waiting on the peer reports, and what bounds the retries) and the retry due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PunchRetry {
    failed: u32,
    last_failed: Option<Instant>,
    due: Option<Instant>,
}

impl PunchRetry {
    /// A hole punch with this peer failed at `now`. `worth_retrying`: we still reach it only
    /// through a relay, and a punch can succeed (this node's NAT is not known to give each
    /// peer a port of its own, `mapping.rs`). Returns when the retry is due, if one is
    /// scheduled.
    pub(crate) fn failed(&mut self, now: Instant, worth_retrying: bool) -> Option<Instant> {
        self.failed = self.failed.saturating_add(1);
        self.last_failed = Some(now);
        if !worth_retrying || self.failed > RETRIES {
            self.due = None;
            return None;
        }
        let wait = FIRST_WAIT.saturating_mul(3u32.saturating_pow(self.failed - 1));
        self.due = Some(now + wait);
        self.due
    }

    /// Punches with this peer that failed since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failed
    }

    /// When the last of them failed.
    pub(crate) fn last_failed(&self) -> Option<Instant> {
        self.last_failed
    }

    /// A hole punch with this peer succeeded: nothing to retry, and a later failure starts the
    /// count again.
    pub(crate) fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Whether a retry is due at `now` and the peer is still reached only through a relay;
    /// takes it (each scheduled retry happens once).
    pub(crate) fn take_due(&mut self, now: Instant, relayed_only: bool) -> bool {
        match self.due {
            Some(due) if now >= due => {
                self.due = None;
                relayed_only
            }
            _ => false,
        }
    }
}

/// The retry state of peers that disconnected after failed punches, for [`REJOIN`]: a peer
/// back within it carries its failures on (module docs).
#[derive(Debug, Default)]
pub(crate) struct PunchMemory {
    peers: HashMap<PeerId, (PunchRetry, Instant)>,
}

impl PunchMemory {
    /// `peer` disconnected at `now` with `retry`: kept if a punch with it failed since the last
    /// success.
    pub(crate) fn keep(&mut self, peer: PeerId, retry: PunchRetry, now: Instant) {
        if retry.failed == 0 {
            return;
        }
        self.peers
            .retain(|_, (_, left)| now.saturating_duration_since(*left) < REJOIN);
        if self.peers.len() >= MAX_REMEMBERED && !self.peers.contains_key(&peer) {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, (_, left))| *left)
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.peers.remove(&p);
            }
        }
        self.peers.insert(peer, (retry, now));
    }

    /// The state `peer` starts a connected spell with at `now`: what it left within
    /// [`REJOIN`], else a fresh one.
    pub(crate) fn take(&mut self, peer: &PeerId, now: Instant) -> PunchRetry {
        match self.peers.remove(peer) {
            Some((r, left)) if now.saturating_duration_since(left) < REJOIN => r,
            _ => PunchRetry::default(),
        }
    }

    /// How many peers' states are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

/// Peers whose hole-punched connection died (its pings failed: a home router rebooted or got
/// a new public address and forgot its mappings), to be reached again through a relay, where
/// DCUtR punches anew from the addresses both homes have now. A punched connection is kept
/// open because it is what makes a home behind NAT a full peer (`keep.rs`); one that died is
/// brought back the same way, instead of waiting for a job to need the peer, when a fetch
/// would wait on the punch (`NetConfig::direct_wait`) and might give up on it.
///
/// Both ends see the connection die, about together (their pings fail alike), so the end
/// whose peer id sorts lower tries first, [`FIRST_WAIT`] after, and the other a wait later
/// (three times as long): a relayed connection from the first end forgets the peer at the
/// second before its own try, and the two never run two punches at once. Each try that does
/// not reach the peer (its home has not reserved a slot at the relay again yet) schedules the
/// next three times later, at most [`RETRIES`] in all; a connection to the peer, however made,
/// forgets it. A home that lost its relay too (its line was down) keeps its lost peers however
/// long it has none, and tries every one at once when it listens through a relay again, its
/// tries counted afresh ([`Lost::relay_back`]): that is the moment both ends can reach each
/// other again, which no timer knows. A
/// connection the peer closed, or pruning did, is not brought back: only one whose path broke
/// (its pings failed, or the kernel aborted or failed it). At most [`MAX_REMEMBERED`] peers; past that the latest is not kept.
#[derive(Debug, Default)]
pub(crate) struct Lost {
    peers: HashMap<PeerId, LostPeer>,
}

#[derive(Debug)]
struct LostPeer {
    circuit: Multiaddr,
    tries: u32,
    wait: Duration,
    due: Instant,
}

impl Lost {
    /// `peer`'s hole-punched connection died at `now`; `circuit` reaches it through a relay
    /// ([`circuit_addr`]). `first`: this end tries first (its peer id sorts lower). Returns
    /// when the first try is due, if the peer is kept.
    pub(crate) fn lost(
        &mut self,
        peer: PeerId,
        circuit: Multiaddr,
        now: Instant,
        first: bool,
    ) -> Option<Instant> {
        if self.peers.len() >= MAX_REMEMBERED && !self.peers.contains_key(&peer) {
            return None;
        }
        let wait = if first { FIRST_WAIT } else { FIRST_WAIT * 3 };
        let due = now + wait;
        self.peers.insert(
            peer,
            LostPeer {
                circuit,
                tries: 0,
                wait,
                due,
            },
        );
        Some(due)
    }

    /// `peer` is reached directly again: nothing to bring back.
    pub(crate) fn found(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// This node listens through a relay again after it listened through none (its home's
    /// line came back, with a new address perhaps): every lost peer is due at `now`, with its
    /// tries counted afresh. While this node had no relay, neither end's tries could reach the
    /// other (ours had no relay connection to go through, the peer's found no reservation of
    /// ours), and the tries left were spread over minutes by then: in the NAT lab a pair was
    /// punched again 82 s after home 2 could be reached, and one CI run missed its 300 s.
    /// Bounded by the reservations this node makes afresh, each after it lost every relay.
    pub(crate) fn relay_back(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.tries = 0;
            p.wait = FIRST_WAIT;
            p.due = now;
        }
    }

    /// The tries due at `now`, each with the address to dial; the next one of each is
    /// scheduled (three times the wait, at most [`MAX_LOST_WAIT`]), and a peer whose tries are
    /// spent is forgotten, unless `relayless`: this node should listen through a relay and
    /// listens through none, so nobody can reach it yet, and its peers are kept, tried on,
    /// until [`Lost::relay_back`]. In the NAT lab, a home whose line was down for 300 s had
    /// spent every try by the time the line came back (5 to 200 s after the death), kept
    /// nothing to try at its reservation, and was punched again only when a job needed it,
    /// 283 s later.
    pub(crate) fn take_due(&mut self, now: Instant, relayless: bool) -> Vec<(PeerId, Multiaddr)> {
        let mut due = Vec::new();
        self.peers.retain(|peer, p| {
            if now < p.due {
                return true;
            }
            due.push((*peer, p.circuit.clone()));
            p.tries += 1;
            p.wait = p.wait.saturating_mul(3).min(MAX_LOST_WAIT);
            p.due = now + p.wait;
            relayless || p.tries < RETRIES
        });
        due
    }

    /// Whether `peer` is to be brought back.
    #[cfg(test)]
    fn has(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }
}

/// A peer's open direct connections, and which of them are kept open while idle because they
/// replaced a relayed one (a hole punch, or a public peer first met through a relay: `keep.rs`,
/// pruned last by `prune.rs`). Says when the last one closes whether the peer is to be brought
/// back through a relay ([`Lost`]): when a kept one among them died of a broken path, whether
/// it closed last or not (a late dial of a punch round can leave a second direct connection,
/// not kept, that outlives the kept one by moments or is pruned later).
#[derive(Debug, Default)]
pub(crate) struct Direct {
    open: HashSet<ConnectionId>,
    kept: HashSet<ConnectionId>,
    /// DCUtR reported one of the open connections as its punch's.
    hole_punched: bool,
    /// A kept connection died of a broken path since one was last kept.
    kept_died: bool,
}

impl Direct {
    /// A direct connection was established.
    pub(crate) fn opened(&mut self, id: ConnectionId) {
        self.open.insert(id);
    }

    /// Keep open connection `id` (it replaced a relayed one): whether it was not kept before.
    /// A punched path that is alive again clears an earlier death.
    pub(crate) fn keep(&mut self, id: ConnectionId) -> bool {
        if !self.open.contains(&id) {
            return false;
        }
        self.kept_died = false;
        self.kept.insert(id)
    }

    /// DCUtR reported `id` as its punch's: kept (whether it was not before, as [`keep`]).
    ///
    /// [`keep`]: Direct::keep
    pub(crate) fn punched(&mut self, id: ConnectionId) -> bool {
        if !self.open.contains(&id) {
            return false;
        }
        self.hole_punched = true;
        self.keep(id)
    }

    /// Connection `id` closed, `dead` if its path broke (`actor/peers.rs`, `path_broke`).
    /// True when it was the last direct connection and a kept one died: the peer is to be
    /// brought back ([`Lost`]).
    pub(crate) fn closed(&mut self, id: ConnectionId, dead: bool) -> bool {
        let kept = self.kept.remove(&id);
        if !self.open.remove(&id) {
            return false;
        }
        if kept && dead {
            self.kept_died = true;
        }
        if !self.open.is_empty() {
            return false;
        }
        self.hole_punched = false;
        std::mem::take(&mut self.kept_died)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = &ConnectionId> {
        self.open.iter()
    }

    /// Whether any open connection is kept (pruning keeps such a peer last).
    pub(crate) fn any_kept(&self) -> bool {
        !self.kept.is_empty()
    }

    /// Whether the peer is connected directly by a hole punch now.
    pub(crate) fn hole_punched(&self) -> bool {
        self.hole_punched && !self.open.is_empty()
    }
}

/// An address that reaches `peer` through a relay, to open a fresh relayed connection: the
/// address of a relayed connection we dialled (an inbound one's send-back address is only
/// `/p2p/<peer>`), else one of the peer's own relayed listen addresses (identify). Only
/// addresses that start at a transport address and go through `/p2p-circuit` qualify; the
/// result ends in `/p2p/<peer>`.
pub(crate) fn circuit_addr<'a>(
    peer: &PeerId,
    dialled: impl IntoIterator<Item = &'a Multiaddr>,
    listen: impl IntoIterator<Item = &'a Multiaddr>,
) -> Option<Multiaddr> {
    let usable = |a: &&Multiaddr| starts_at_host(a) && is_relayed(a);
    let addr = dialled
        .into_iter()
        .find(usable)
        .or_else(|| listen.into_iter().find(usable))?
        .clone();
    // Everything up to and including `/p2p-circuit`, then the peer.
    let mut out = Multiaddr::empty();
    for p in addr.iter() {
        let end = p == Protocol::P2pCircuit;
        out.push(p);
        if end {
            break;
        }
    }
    Some(out.with(Protocol::P2p(*peer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(peer: &PeerId) -> Multiaddr {
        format!(
            "/ip4/198.51.100.2/tcp/4001/p2p/{}/p2p-circuit/p2p/{peer}",
            PeerId::random()
        )
        .parse()
        .expect("multiaddr")
    }

    #[test]
    fn a_lost_punched_peer_is_tried_a_bounded_number_of_times_the_lower_id_first() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        for (first, waits) in [(true, [5, 15, 45, 135]), (false, [15, 45, 135, 405])] {
            let mut lost = Lost::default();
            let addr = circuit(&peer);
            let mut due = lost.lost(peer, addr.clone(), t0, first).expect("kept");
            let mut seen = Vec::new();
            for i in 0..RETRIES {
                assert!(
                    lost.take_due(due - Duration::from_millis(1), false)
                        .is_empty(),
                    "not before it is due"
                );
                assert_eq!(
                    lost.take_due(due, false),
                    vec![(peer, addr.clone())],
                    "try {i}"
                );
                seen.push((due - t0).as_secs());
                let wait = Duration::from_secs(waits.get(i as usize + 1).copied().unwrap_or(0));
                due += wait;
            }
            let sums: Vec<u64> = waits
                .iter()
                .scan(0, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect();
            assert_eq!(seen, sums, "first: {first}");
            assert!(!lost.has(&peer), "the tries are spent");
            assert!(lost
                .take_due(t0 + Duration::from_secs(3600), false)
                .is_empty());
        }
        // Connected again (either end's try worked): nothing more is tried.
        let mut lost = Lost::default();
        let due = lost.lost(peer, circuit(&peer), t0, false).expect("kept");
        lost.found(&peer);
        assert!(lost.take_due(due, false).is_empty());
    }

    #[test]
    fn a_node_back_behind_a_relay_tries_its_lost_peers_at_once_with_fresh_tries() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut lost = Lost::default();
        lost.lost(a, circuit(&a), t0, false).expect("kept");
        lost.lost(b, circuit(&b), t0, true).expect("kept");
        // Three tries each while the line was down: all failed, one left, due minutes later.
        let mut now = t0;
        for _ in 0..3 {
            now += Duration::from_secs(200);
            assert_eq!(lost.take_due(now, false).len(), 2);
        }
        let back = now + Duration::from_secs(1);
        assert!(
            lost.take_due(back, false).is_empty(),
            "the last tries are not due yet"
        );
        // This node reserved a relay slot again: both peers at once.
        lost.relay_back(back);
        let mut due: Vec<PeerId> = lost
            .take_due(back, false)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        due.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(due, want);
        // And the full count of tries again, each wait three times the last (15, 45, 135 s).
        let mut at = back;
        for i in 1..RETRIES {
            assert!(lost.has(&a) && lost.has(&b), "try {i} is still to come");
            at += FIRST_WAIT.saturating_mul(3u32.pow(i));
            assert!(lost
                .take_due(at - Duration::from_millis(1), false)
                .is_empty());
            assert_eq!(lost.take_due(at, false).len(), 2, "try {i}");
        }
        assert!(!lost.has(&a) && !lost.has(&b), "the fresh tries are spent");
    }

    #[test]
    fn a_node_without_its_relay_keeps_its_lost_peers_however_long_its_line_is_down() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut lost = Lost::default();
        lost.lost(peer, circuit(&peer), t0, true).expect("kept");
        // An hour without a relay (the home's line down): tries go on, none reaches the peer,
        // and none is the last; the waits stop growing at `MAX_LOST_WAIT`.
        let mut tries = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(3600) {
            now += Duration::from_secs(1);
            tries += lost.take_due(now, true).len();
        }
        assert!(lost.has(&peer), "kept while this node has no relay");
        assert!(tries > RETRIES as usize, "{tries} tries");
        assert!(
            tries <= RETRIES as usize + (3600 / MAX_LOST_WAIT.as_secs()) as usize,
            "{tries} tries"
        );
        // The relay again: the peer at once, then the usual count of tries.
        lost.relay_back(now);
        assert_eq!(lost.take_due(now, false).len(), 1);
        for _ in 1..RETRIES {
            now += MAX_LOST_WAIT;
            assert_eq!(lost.take_due(now, false).len(), 1);
        }
        assert!(!lost.has(&peer), "the fresh tries are spent");
    }

    #[test]
    fn a_peer_is_brought_back_when_a_kept_connection_died_whichever_closed_last() {
        let c = ConnectionId::new_unchecked;
        // One punched connection: brought back if it died, not if it was closed.
        for dead in [true, false] {
            let mut d = Direct::default();
            d.opened(c(1));
            assert!(d.punched(c(1)));
            assert!(d.hole_punched() && d.any_kept());
            assert_eq!(d.closed(c(1), dead), dead);
            assert!(d.is_empty() && !d.hole_punched() && !d.any_kept());
        }
        // A second direct connection beside the punched one (a late dial of the punch round):
        // the punched one dies first, the other closes after it, dead or pruned.
        for second_dead in [true, false] {
            let mut d = Direct::default();
            d.opened(c(1));
            d.punched(c(1));
            d.opened(c(2));
            assert!(!d.closed(c(1), true), "another direct connection is open");
            assert!(d.hole_punched(), "still connected directly");
            assert!(d.closed(c(2), second_dead), "the punched path died");
        }
        // The kept one closed by the peer, the other dies: not a punched path lost.
        let mut d = Direct::default();
        d.opened(c(1));
        d.keep(c(1));
        d.opened(c(2));
        assert!(!d.closed(c(1), false));
        assert!(!d.closed(c(2), true));
        // A kept one died, then a fresh punch kept another, which the peer closed: alive
        // again in between, so nothing to bring back.
        let mut d = Direct::default();
        d.opened(c(1));
        d.punched(c(1));
        d.opened(c(2));
        assert!(!d.closed(c(1), true));
        d.opened(c(3));
        assert!(d.punched(c(3)));
        assert!(!d.closed(c(2), false));
        assert!(!d.closed(c(3), false));
        // Only open connections are kept, each once; unknown ones close quietly.
        let mut d = Direct::default();
        assert!(!d.keep(c(9)) && !d.punched(c(9)));
        d.opened(c(1));
        assert!(d.keep(c(1)) && !d.keep(c(1)));
        assert!(!d.closed(c(9), true));
        assert_eq!(d.ids().collect::<Vec<_>>(), vec![&c(1)]);
    }

    #[test]
    fn lost_peers_are_bounded() {
        let t0 = Instant::now();
        let mut lost = Lost::default();
        for _ in 0..MAX_REMEMBERED {
            let p = PeerId::random();
            assert!(lost.lost(p, circuit(&p), t0, true).is_some());
        }
        let p = PeerId::random();
        assert_eq!(lost.lost(p, circuit(&p), t0, true), None, "past the bound");
        assert_eq!(lost.take_due(t0 + FIRST_WAIT, false).len(), MAX_REMEMBERED);
    }

    #[test]
    fn retries_are_bounded_and_back_off() {
        let t0 = Instant::now();
        let mut r = PunchRetry::default();
        let mut waits = Vec::new();
        for _ in 0..RETRIES {
            let due = r.failed(t0, true).expect("a retry within the budget");
            waits.push(due - t0);
            assert!(
                !r.take_due(due - Duration::from_millis(1), true),
                "not before it is due"
            );
            assert!(r.take_due(due, true), "due");
            assert!(!r.take_due(due, true), "each retry happens once");
        }
        assert_eq!(waits, [5, 15, 45, 135].map(Duration::from_secs));
        // The last retry starts after a stale conntrack entry from the first failure expired.
        assert!(waits.iter().sum::<Duration>() > STALE_NAT_STATE);
        assert_eq!(r.failed(t0, true), None, "the budget is spent");
        assert_eq!((r.failures(), r.last_failed()), (RETRIES + 1, Some(t0)));
        assert!(!r.take_due(t0 + Duration::from_secs(60), true));
        // A success starts the count again.
        r.succeeded();
        assert_eq!((r.failures(), r.last_failed()), (0, None));
        assert_eq!(r.failed(t0, true), Some(t0 + FIRST_WAIT));
    }

    #[test]
    fn a_peer_back_within_moments_carries_its_failures_on_and_one_gone_longer_starts_afresh() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut memory = PunchMemory::default();
        // Each failure closes the last connection and the peer is back a moment later (the
        // other home's retry): the waits grow and the budget holds.
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..=RETRIES {
            let mut r = memory.take(&peer, now);
            if let Some(due) = r.failed(now, true) {
                waits.push(due - now);
            }
            memory.keep(peer, r, now);
            now += Duration::from_secs(1);
        }
        assert_eq!(waits, [5, 15, 45, 135].map(Duration::from_secs));
        assert_eq!(memory.take(&peer, now).failures(), RETRIES + 1);
        // Nothing kept for a peer without failures.
        memory.keep(peer, PunchRetry::default(), t0);
        assert_eq!(memory.len(), 0);
        // Back after REJOIN: a new spell, a fresh state.
        let mut r = PunchRetry::default();
        r.failed(t0, true);
        memory.keep(peer, r.clone(), t0);
        assert_eq!(
            memory.take(&peer, t0 + REJOIN - Duration::from_millis(1)),
            r
        );
        memory.keep(peer, r, t0);
        assert_eq!(memory.take(&peer, t0 + REJOIN), PunchRetry::default());
    }

    #[test]
    fn punch_memory_is_bounded_and_forgets_who_left_first() {
        let t0 = Instant::now();
        let mut memory = PunchMemory::default();
        let mut failed = PunchRetry::default();
        failed.failed(t0, true);
        let first = PeerId::random();
        memory.keep(first, failed.clone(), t0);
        let later = t0 + Duration::from_millis(1);
        for _ in 1..MAX_REMEMBERED {
            memory.keep(PeerId::random(), failed.clone(), later);
        }
        assert_eq!(memory.len(), MAX_REMEMBERED);
        let last = PeerId::random();
        memory.keep(last, failed.clone(), later);
        assert_eq!(memory.len(), MAX_REMEMBERED);
        assert_eq!(memory.take(&first, later), PunchRetry::default());
        assert_eq!(memory.take(&last, later), failed);
        // Who left REJOIN ago goes when the next one is kept.
        memory.keep(PeerId::random(), failed, later + REJOIN);
        assert_eq!(memory.len(), 1);
    }

    #[test]
    fn no_retry_once_direct() {
        let t0 = Instant::now();
        let mut r = PunchRetry::default();
        assert_eq!(
            r.failed(t0, false),
            None,
            "already direct: nothing to retry"
        );
        let due = r.failed(t0, true).unwrap();
        // The peer went direct (or away) before the retry was due.
        assert!(!r.take_due(due, false));
        assert!(!r.take_due(due + FIRST_WAIT, true), "the retry was spent");
    }

    #[test]
    fn circuit_address_from_a_dialled_relayed_connection_or_a_listen_address() {
        let peer: PeerId = "12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz"
            .parse()
            .unwrap();
        let relay = "12D3KooWDugkEFJ32QQAeResV5QXCLHhPe2hCyVkjkmQEfFYexPu";
        let via = |tail: &str| -> Multiaddr {
            format!("/ip4/198.51.100.2/tcp/4001/p2p/{relay}/p2p-circuit{tail}")
                .parse()
                .unwrap()
        };
        let want = via(&format!("/p2p/{peer}"));
        let direct: Multiaddr = "/ip4/198.51.100.12/tcp/4002".parse().unwrap();
        let bare: Multiaddr = format!("/p2p/{peer}").parse().unwrap();
        // An inbound relayed connection's send-back address and a direct one do not qualify.
        assert_eq!(circuit_addr(&peer, [&bare, &direct], []), None);
        assert_eq!(
            circuit_addr(&peer, [&bare], [&direct, &via("")]),
            Some(want.clone())
        );
        assert_eq!(circuit_addr(&peer, [&want], []), Some(want.clone()));
        // A listen address naming the peer already, or something after the circuit.
        assert_eq!(circuit_addr(&peer, [], [&want]), Some(want.clone()));
        let odd = via(&format!("/p2p/{relay}"));
        assert_eq!(circuit_addr(&peer, [], [&odd]), Some(want));
    }
}
