//! How each peer met lately could be reached: at a public address of its own, or only through
//! a relay (sans-IO: the swarm task reports identify's listen addresses and failed dials,
//! `actor/peers.rs`; the download state machine reads it through `Link::Absent`).
//!
//! Why: a blob fetch asks one provider at a time, and blobs never cross a relay. Every radiator
//! that fetched an input provides it, so most providers of a job's inputs are homes behind NAT;
//! dialling one asks a relay for a circuit (which the relay's rate limiter charges to the
//! radiator, the budget its lease asks and claims to a home coordinator need) and then waits for
//! a hole punch. In `testnet/dht-scale` (`docs/scale.md`, item 7) 992 of 1 341 circuits the
//! relay refused in a job's window were such dials. With this book a fetch asks providers known
//! to list a public address before those not known, and those known to be reachable only
//! through a relay last.
//!
//! What counts: the listen addresses a peer reported by identify (any public direct one: a
//! public address; none, but a relay circuit: relayed only; only private ones: nothing
//! learnt), and a dial that failed having tried only circuit addresses (relayed only).
//! Listen addresses are the peer's claim: a false public one only puts it early in the order
//! until a dial of it fails, which takes the claim back (the fetch then moves on; every blob
//! is verified whoever sends it).
//! Entries older than [`FRESH`] are forgotten (a home may gain a port mapping), and at most
//! [`MAX_PEERS`] are kept, the oldest dropped first. Reads no clock: `now` is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::direct::is_public_direct;
use super::relayed::is_relayed;

/// Peers remembered, at most.
pub(crate) const MAX_PEERS: usize = 4096;
/// How long what was seen of a peer holds.
pub(crate) const FRESH: Duration = Duration::from_secs(30 * 60);

/// How a peer could last be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// It listed a public direct address.
    Public,
    /// Nothing learnt lately.
    Unknown,
    /// Only through a relay: it listed circuits and no public address, or every dial of it
    /// went through a relay and failed.
    RelayedOnly,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub(crate) struct ReachBook {
    seen: HashMap<PeerId, (Seen, Instant)>,
    /// Peers in the order their entries were written; an entry written again leaves its old
    /// place stale (skipped when met). At most `2 * MAX_PEERS` (compacted beyond).
    order: VecDeque<(PeerId, Instant)>,
}

impl ReachBook {
    /// What `peer` reported by identify as its listen addresses.
    pub(crate) fn listens_at(&mut self, peer: PeerId, addrs: &[Multiaddr], now: Instant) {
        if addrs.iter().any(is_public_direct) {
            self.write(peer, Seen::Public, now);
        } else if addrs.iter().any(is_relayed) {
            self.write(peer, Seen::RelayedOnly, now);
        }
    }

    /// A dial of `peer` failed after trying `tried`: if every one was a circuit, the peer is
    /// reachable only through a relay (and that relay would not or could not reach it); if a
    /// direct one failed too, what it claimed of a public address no longer counts.
    pub(crate) fn dial_failed<'a>(
        &mut self,
        peer: PeerId,
        tried: impl IntoIterator<Item = &'a Multiaddr>,
        now: Instant,
    ) {
        let mut any = false;
        for a in tried {
            if !is_relayed(a) {
                if self
                    .seen
                    .get(&peer)
                    .is_some_and(|(s, _)| *s == Seen::Public)
                {
                    self.seen.remove(&peer);
                }
                return;
            }
            any = true;
        }
        if any {
            self.write(peer, Seen::RelayedOnly, now);
        }
    }

    pub(crate) fn seen(&self, peer: &PeerId, now: Instant) -> Seen {
        match self.seen.get(peer) {
            Some((seen, at)) if now.saturating_duration_since(*at) < FRESH => *seen,
            _ => Seen::Unknown,
        }
    }

    fn write(&mut self, peer: PeerId, seen: Seen, now: Instant) {
        self.seen.insert(peer, (seen, now));
        self.order.push_back((peer, now));
        // Oldest first: drop entries past the bound or gone stale.
        while let Some(&(p, at)) = self.order.front() {
            let current = self.seen.get(&p).is_some_and(|(_, t)| *t == at);
            let over = self.seen.len() > MAX_PEERS;
            let stale = now.saturating_duration_since(at) >= FRESH;
            if current && !over && !stale {
                break;
            }
            self.order.pop_front();
            if current {
                self.seen.remove(&p);
            }
        }
        if self.order.len() > 2 * MAX_PEERS {
            let seen = &self.seen;
            self.order
                .retain(|(p, at)| seen.get(p).is_some_and(|(_, t)| t == at));
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.seen.len(), self.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn circuit() -> Multiaddr {
        a(&format!(
            "/ip4/198.51.100.2/tcp/4001/p2p/{}/p2p-circuit",
            PeerId::random()
        ))
    }

    #[test]
    fn identify_tells_a_public_radiator_from_a_home_behind_nat() {
        let now = Instant::now();
        let mut b = ReachBook::default();
        let (public, home, lan) = (PeerId::random(), PeerId::random(), PeerId::random());
        b.listens_at(public, &[a("/ip4/198.19.3.2/tcp/4001"), circuit()], now);
        b.listens_at(home, &[a("/ip4/10.4.0.2/tcp/4001"), circuit()], now);
        b.listens_at(lan, &[a("/ip4/192.168.1.20/tcp/4001")], now);
        assert_eq!(b.seen(&public, now), Seen::Public);
        assert_eq!(b.seen(&home, now), Seen::RelayedOnly);
        assert_eq!(
            b.seen(&lan, now),
            Seen::Unknown,
            "private only: nothing learnt"
        );
        assert_eq!(b.seen(&PeerId::random(), now), Seen::Unknown);
        // A home that gained a port mapping says so on its next identify.
        b.listens_at(home, &[a("/ip4/198.18.4.1/tcp/4001"), circuit()], now);
        assert_eq!(b.seen(&home, now), Seen::Public);
        assert_eq!(
            b.seen(&home, now + FRESH),
            Seen::Unknown,
            "forgotten when old"
        );
    }

    #[test]
    fn a_failed_dial_through_relays_only_marks_the_peer_relayed_only() {
        let now = Instant::now();
        let mut b = ReachBook::default();
        let (p, q, r) = (PeerId::random(), PeerId::random(), PeerId::random());
        b.dial_failed(p, &[circuit(), circuit()], now);
        b.dial_failed(q, &[circuit(), a("/ip4/198.19.3.2/tcp/4001")], now);
        b.dial_failed(r, &[], now);
        assert_eq!(b.seen(&p, now), Seen::RelayedOnly);
        assert_eq!(
            b.seen(&q, now),
            Seen::Unknown,
            "a direct address failed too"
        );
        assert_eq!(b.seen(&r, now), Seen::Unknown);
        // A claimed public address that a dial found unreachable counts no more.
        b.listens_at(r, &[a("/ip4/198.19.9.2/tcp/4001")], now);
        assert_eq!(b.seen(&r, now), Seen::Public);
        b.dial_failed(r, &[a("/ip4/198.19.9.2/tcp/4001")], now);
        assert_eq!(b.seen(&r, now), Seen::Unknown);
    }

    #[test]
    fn the_book_stays_bounded_and_keeps_the_newest() {
        let t0 = Instant::now();
        let mut b = ReachBook::default();
        let public = [a("/ip4/198.19.3.2/tcp/4001")];
        let first = PeerId::random();
        b.listens_at(first, &public, t0);
        let mut last = first;
        for i in 0..(3 * MAX_PEERS) {
            last = PeerId::random();
            b.listens_at(last, &public, t0 + Duration::from_millis(i as u64));
        }
        // One peer written again and again does not grow the order without bound.
        for i in 0..(3 * MAX_PEERS) {
            b.listens_at(
                last,
                &public,
                t0 + Duration::from_secs(10 + i as u64 / 1000),
            );
        }
        let (entries, order) = b.len();
        assert!(entries <= MAX_PEERS, "{entries}");
        assert!(order <= 2 * MAX_PEERS + 1, "{order}");
        let now = t0 + Duration::from_secs(20);
        assert_eq!(b.seen(&first, now), Seen::Unknown, "the oldest went first");
        assert_eq!(b.seen(&last, now), Seen::Public);
        // Stale entries leave with the next write.
        let later = t0 + Duration::from_secs(60) + FRESH;
        b.listens_at(PeerId::random(), &public, later);
        assert_eq!(b.len().0, 1);
    }
}
