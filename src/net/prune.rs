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
//! (60 s), or used by hearth within the last minute. Measured with `benches/scale.rs` (50
//! radiators, 300 idle seconds): no pruning 5 319 B/s received per radiator; 60 s grace
//! 2 571 B/s; 15 s grace 6 104 B/s (that run also had radiators subscribed to the evidence
//! topic for the first time, so the two are confounded) — pruned peers come back (something
//! re-dials them; not yet found), and each comeback costs a handshake (`docs/scale.md`). Kademlia keeps disconnected peers in its routing table and
//! request-response dials again when hearth next needs the peer.
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
}

impl Watermarks {
    /// A radiator's defaults: a coordinator announces a job to at most 16 connected peers
    /// (`docs/protocol.md` §7) and a worker talks to the few coordinators that offered it
    /// work; 16 leaves room for both plus the bootstrap peers and relays.
    pub const RADIATOR: Watermarks = Watermarks {
        low: 12,
        high: 16,
        grace: Duration::from_secs(60),
        idle: Duration::from_secs(60),
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
}

/// The peers to disconnect now: none while at most `w.high` are connected; otherwise the
/// prunable ones (unprotected, connected for at least `w.grace`, unused for at least
/// `w.idle`), never-used first,
/// then least recently used, oldest connection first among equals, until `w.low` would
/// remain.
pub(crate) fn to_prune(now: Instant, peers: &[Candidate], w: Watermarks) -> Vec<PeerId> {
    if peers.len() <= w.high {
        return Vec::new();
    }
    let excess = peers.len() - w.low.min(w.high);
    let older = |t: Instant, d: Duration| now.saturating_duration_since(t) >= d;
    let mut prunable: Vec<&Candidate> = peers
        .iter()
        .filter(|c| {
            !c.protected
                && older(c.connected_at, w.grace)
                && c.last_used.is_none_or(|t| older(t, w.idle))
        })
        .collect();
    prunable.sort_by_key(|c| (c.last_used, c.connected_at, c.peer));
    prunable.into_iter().take(excess).map(|c| c.peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Watermarks = Watermarks {
        low: 2,
        high: 4,
        grace: Duration::from_secs(15),
        idle: Duration::from_secs(60),
    };

    fn cand(t0: Instant, connected_s: u64, used_s: Option<u64>, protected: bool) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            connected_at: t0 + Duration::from_secs(connected_s),
            last_used: used_s.map(|s| t0 + Duration::from_secs(s)),
            protected,
        }
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
                    cand(t0, (i as u64 * 37) % 1000, used, i % 5 == 0)
                })
                .collect();
            let out = to_prune(now, &peers, W);
            if n <= W.high {
                assert!(out.is_empty());
            }
            assert!(n - out.len() >= W.low.min(n));
            let mut seen = std::collections::HashSet::new();
            for p in &out {
                assert!(seen.insert(*p), "a peer named twice");
                let c = peers.iter().find(|c| c.peer == *p).unwrap();
                assert!(!c.protected);
                assert!(now.duration_since(c.connected_at) >= W.grace);
                assert!(c.last_used.is_none_or(|t| now.duration_since(t) >= W.idle));
            }
        }
    }
}
