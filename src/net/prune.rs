//! Which peers a node disconnects when it holds more connections than it uses (issue 14).
//!
//! Every connection costs a radiator something while it is open: ping both ways every 15 s,
//! identify every 5 minutes, TCP and yamux acknowledgements. libp2p closes a connection after
//! 60 s without open streams, but gossipsub keeps one stream open on every connection to a
//! peer that speaks it, so a connection Kademlia opened once (a lookup touches most of a small
//! network) stays open for good: measured by `benches/scale.rs`, every radiator of a 50-node
//! network was still connected to all 49 others after a 300 s idle window, and its idle
//! traffic grew with N. A node's cost must follow the peers it chooses to talk to, not the
//! size of the network; so, like go-libp2p's connection manager (low and high watermarks, a
//! grace period, protected peers), a radiator that holds more than [`Watermarks::high`] peers
//! disconnects the ones it has least use for, down to [`Watermarks::low`].
//!
//! "Use" is hearth's own traffic (control requests and blob transfers, either way): Kademlia,
//! identify and ping do not count. A peer is never disconnected while it is protected (a
//! relay we listen through, a bootstrap peer), within the grace period of its connection
//! (60 s), or used by hearth within the last minute. A peer reached by hole punching goes
//! after every other prunable one (it comes back only through a relay and a new punch,
//! `keep.rs`), but it does go: the watermarks bound a node's connections.
//!
//! **Lookup connections.** Kademlia dials the peers its lookups ask, and a routing-table
//! refresh (every 15 minutes) asks most of a small network. Held for the whole grace period,
//! those connections came back with every refresh: measured with `benches/scale.rs`
//! (`docs/scale.md`, "Who re-dials pruned peers"), every dial of an idle radiator came from
//! Kademlia, and a radiator of a 50-node network still held ~45 peers. So a peer our own
//! Kademlia dialled (one of its open connections) and hearth never used is a *lookup peer*:
//! above [`Watermarks::low`] it is disconnected once its connection is
//! [`Watermarks::lookup_grace`] old (10 s: a lookup asks a live peer in milliseconds; a
//! request cut short only makes the query ask another). Kademlia keeps disconnected peers in
//! its routing table, and request-response dials again when hearth next needs the peer.
//! Work the node starts on its own for each peer (the fraud-evidence pull) waits until the
//! peer has *settled* ([`Watermarks::settle`]), or it would make every lookup peer one in use.
//!
//! Pure: no swarm, no clock (time is passed in). Must not touch: the network.

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// When to prune and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Pruning leaves this many connected peers (or more, if more are protected or recent).
    pub low: usize,
    /// Pruning starts when more peers than this are connected.
    pub high: usize,
    /// A connection younger than this is kept (a peer just dialled for a lookup or a request
    /// gets to finish it).
    pub grace: Duration,
    /// A peer hearth used (a control or blob request or answer, either way) more recently
    /// than this is kept.
    pub idle: Duration,
    /// A lookup peer (a connection dialled by our Kademlia, never used by hearth) is
    /// kept this long, and disconnected above `low` rather than `high`.
    pub lookup_grace: Duration,
    /// A peer connected this long without a break has *settled*
    /// ([`crate::net::NetEvent::PeerSettled`]): longer than a lookup peer is kept, so the
    /// node's own per-peer work (the fraud-evidence pull) goes to the peers it holds, not to
    /// every peer a Kademlia lookup touches.
    pub settle: Duration,
}

/// When a peer has settled on a node that does not prune (bootstrap nodes).
pub const SETTLE: Duration = Watermarks::RADIATOR.settle;

impl Watermarks {
    /// A radiator's defaults: a coordinator announces a job to at most 16 connected peers
    /// (`docs/protocol.md` §7) and a worker talks to the few coordinators that offered it
    /// work; 16 leaves room for both plus the bootstrap peers and relays.
    pub const RADIATOR: Watermarks = Watermarks {
        low: 12,
        high: 16,
        grace: Duration::from_secs(60),
        idle: Duration::from_secs(60),
        lookup_grace: Duration::from_secs(10),
        settle: Duration::from_secs(30),
    };
}

/// One connected peer as pruning sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub peer: PeerId,
    /// When its first open connection was established.
    pub connected_at: Instant,
    /// The last hearth request or answer to or from it, if any.
    pub last_used: Option<Instant>,
    /// A relay we listen through, a bootstrap peer: never pruned.
    pub protected: bool,
    /// One of its open connections was dialled by our Kademlia (a lookup). The others, if
    /// any, are inbound ones that the peer's own lookup opened at the same moment (all
    /// radiators refresh on the same schedule), and hearth traffic on any of them shows in
    /// `last_used`.
    pub looked_up: bool,
    /// Reached by a direct connection that replaced a relayed one (a hole punch, `keep.rs`):
    /// pruned after every other prunable peer, since it comes back only through a relay and
    /// a new punch, which right after the close can meet the routers' stale state for it.
    pub punched: bool,
}

/// The peers to disconnect now, never taking the count below `w.low`:
///
/// - lookup peers (unprotected, [`Candidate::looked_up`], never used by hearth, connected
///   for at least `w.lookup_grace`) whenever more than `w.low` are connected, oldest first;
/// - above `w.high`, also the other prunable ones (unprotected, connected for at least
///   `w.grace`, unused for at least `w.idle`): never-used first, then least recently used,
///   oldest connection first among equals, and hole-punched ones ([`Candidate::punched`])
///   after all the others.
pub(crate) fn to_prune(now: Instant, peers: &[Candidate], w: Watermarks) -> Vec<PeerId> {
    let low = w.low.min(w.high);
    if peers.len() <= low {
        return Vec::new();
    }
    let excess = peers.len() - low;
    let older = |t: Instant, d: Duration| now.saturating_duration_since(t) >= d;
    let lookup = |c: &Candidate| {
        !c.protected
            && c.looked_up
            && c.last_used.is_none()
            && older(c.connected_at, w.lookup_grace)
    };
    let above_high = peers.len() > w.high;
    let mut prunable: Vec<&Candidate> = peers
        .iter()
        .filter(|c| {
            lookup(c)
                || (above_high
                    && !c.protected
                    && older(c.connected_at, w.grace)
                    && c.last_used.is_none_or(|t| older(t, w.idle)))
        })
        .collect();
    prunable.sort_by_key(|c| (!lookup(c), c.punched, c.last_used, c.connected_at, c.peer));
    prunable.into_iter().take(excess).map(|c| c.peer).collect()
}

/// How often connection pruning looks at the peers held (`prune.rs`), at most.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// How often pruning runs under `watermarks`, from the first time on: never less often than
/// their shortest period (short ones in tests), so that a lookup peer goes before it has
/// settled and been asked, which would make it a peer in use (the first run came
/// [`PRUNE_EVERY`] after start-up whatever the watermarks, and the start-up lookup peers of a
/// test whose peers settle after 4 s were all asked and kept).
pub(crate) fn every(watermarks: Option<Watermarks>) -> Duration {
    let every = watermarks.map_or(PRUNE_EVERY, |w| {
        PRUNE_EVERY.min(w.grace).min(w.idle).min(w.lookup_grace)
    });
    every.max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Watermarks = Watermarks {
        low: 2,
        high: 4,
        grace: Duration::from_secs(15),
        idle: Duration::from_secs(60),
        lookup_grace: Duration::from_secs(5),
        settle: Duration::from_secs(5),
    };

    fn cand(t0: Instant, connected_s: u64, used_s: Option<u64>, protected: bool) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            connected_at: t0 + Duration::from_secs(connected_s),
            last_used: used_s.map(|s| t0 + Duration::from_secs(s)),
            protected,
            looked_up: false,
            punched: false,
        }
    }

    fn lookup(t0: Instant, connected_s: u64) -> Candidate {
        Candidate {
            looked_up: true,
            ..cand(t0, connected_s, None, false)
        }
    }

    #[test]
    fn lookup_peers_go_above_low_after_their_short_grace() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        // 4 connected (not above high): two plain peers are kept, of the lookup peers the
        // one older than the lookup grace goes, the one just dialled stays.
        let plain = [cand(t0, 0, None, false), cand(t0, 0, Some(10), false)];
        let (old, fresh) = (lookup(t0, 90), lookup(t0, 98));
        let peers = [plain[0], old, plain[1], fresh];
        assert_eq!(to_prune(now, &peers, W), vec![old.peer]);
        // At low, nothing goes, lookup peers included.
        assert!(to_prune(now, &[old, plain[0]], W).is_empty());
        // A lookup peer hearth used is an ordinary peer.
        let used = Candidate {
            last_used: Some(t0 + Duration::from_secs(95)),
            ..lookup(t0, 0)
        };
        assert!(to_prune(now, &[used, plain[0], plain[1]], W).is_empty());
        // Protected ones stay.
        let guarded = Candidate {
            protected: true,
            ..lookup(t0, 0)
        };
        assert!(to_prune(now, &[guarded, plain[0], plain[1]], W).is_empty());
    }

    #[test]
    fn above_high_lookup_peers_go_first() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1000);
        let never = cand(t0, 0, None, false);
        let looked_up = lookup(t0, 900);
        let peers: Vec<_> = [never, looked_up]
            .into_iter()
            .chain((0..4).map(|_| cand(t0, 990, None, false)))
            .collect();
        // 6 connected, low 2, but only two are prunable: the lookup peer first.
        assert_eq!(to_prune(now, &peers, W), vec![looked_up.peer, never.peer]);
    }

    #[test]
    fn nothing_is_pruned_at_or_below_the_high_watermark() {
        let t0 = Instant::now();
        let peers: Vec<_> = (0..4).map(|_| cand(t0, 0, None, false)).collect();
        assert!(to_prune(t0 + Duration::from_secs(3600), &peers, W).is_empty());
    }

    #[test]
    fn above_high_the_least_used_go_down_to_low() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1000);
        let never = cand(t0, 0, None, false);
        let old_use = cand(t0, 0, Some(100), false);
        let newer_use = cand(t0, 0, Some(500), false);
        let recent = cand(t0, 0, Some(990), false);
        let fresh = cand(t0, 990, None, false);
        let guarded = cand(t0, 0, None, true);
        let peers = [recent, guarded, newer_use, fresh, old_use, never];
        // 6 connected, low 2: 4 should go, but only 3 are prunable (recent, fresh, guarded
        // stay), in order never used, then least recently used.
        let out = to_prune(now, &peers, W);
        assert_eq!(out, vec![never.peer, old_use.peer, newer_use.peer]);
    }

    #[test]
    fn above_high_a_punched_peer_goes_after_every_other_prunable_one() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1000);
        // The punched peer was never used and connected first: it would go first otherwise.
        let punched = Candidate {
            punched: true,
            ..cand(t0, 0, None, false)
        };
        let old_use = cand(t0, 0, Some(100), false);
        let newer_use = cand(t0, 0, Some(500), false);
        let looked_up = lookup(t0, 900);
        let keep = cand(t0, 990, None, false);
        let peers = [punched, old_use, looked_up, newer_use, keep, keep];
        // 6 connected, low 2: 4 go, the punched one last.
        assert_eq!(
            to_prune(now, &peers, W),
            vec![looked_up.peer, old_use.peer, newer_use.peer, punched.peer]
        );
        // Down to low it still goes: the watermarks bound a node's connections.
        assert_eq!(
            to_prune(now, &[punched, keep, keep, keep, keep], W),
            vec![punched.peer]
        );
    }

    #[test]
    fn pruning_stops_at_low() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1000);
        let peers: Vec<_> = (0..10).map(|i| cand(t0, i, None, false)).collect();
        let out = to_prune(now, &peers, W);
        assert_eq!(out.len(), 8);
        // Oldest connections first among never-used peers.
        assert_eq!(out[0], peers[0].peer);
        assert!(!out.contains(&peers[9].peer) && !out.contains(&peers[8].peer));
    }

    #[test]
    fn a_peer_used_within_the_grace_period_or_protected_is_never_pruned() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1000);
        // Property over many shapes: whatever is returned is unprotected, aged and unused
        // for the grace period, distinct, and never takes the count below low.
        for n in 0..40usize {
            let peers: Vec<_> = (0..n)
                .map(|i| {
                    let used = match i % 4 {
                        0 => None,
                        1 => Some(970 + (i as u64 % 30)),
                        2 => Some(i as u64 * 10 % 900),
                        _ => Some(999),
                    };
                    Candidate {
                        looked_up: i % 3 == 0,
                        ..cand(t0, (i as u64 * 37) % 1000, used, i % 5 == 0)
                    }
                })
                .collect();
            let out = to_prune(now, &peers, W);
            if n <= W.low {
                assert!(out.is_empty());
            }
            assert!(n - out.len() >= W.low.min(n));
            let mut seen = std::collections::HashSet::new();
            for p in &out {
                assert!(seen.insert(*p), "a peer named twice");
                let c = peers.iter().find(|c| c.peer == *p).unwrap();
                assert!(!c.protected);
                if c.looked_up && c.last_used.is_none() {
                    assert!(now.duration_since(c.connected_at) >= W.lookup_grace);
                } else {
                    assert!(n > W.high, "only lookup peers go at or below high");
                    assert!(now.duration_since(c.connected_at) >= W.grace);
                    assert!(c.last_used.is_none_or(|t| now.duration_since(t) >= W.idle));
                }
            }
        }
    }
}
