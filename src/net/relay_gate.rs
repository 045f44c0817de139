//! When a node starts listening through a relay (sans-IO: the swarm task reports what it
//! learns and asks, `actor/reach.rs`).
//!
//! A node with no confirmed direct address listens through a relay so that homes behind NAT
//! can reach it. Until now that began at the first relay met, seconds before AutoNAT could
//! tell: a radiator with a public address on its own interface then listened through the
//! relay for its first seconds, and the circuit address it advertised meanwhile went on being
//! handed out by other nodes' routing tables and lookup answers long after (`testnet/dht-scale`,
//! `docs/scale.md` item 7: 327 of 1 341 refused circuits were to public radiators at such
//! addresses). So:
//!
//! - a node none of whose own interface addresses is public (a home behind NAT, a container
//!   on a private network) listens through a relay at once, as before: nothing else will
//!   reach it;
//! - a node listening at a public address waits for AutoNAT's first verdict on a public
//!   address: reachable, and it never lists a circuit; not reachable (a firewall, an IPv6
//!   home whose router filters inbound), and it listens through the relay at once;
//! - if no verdict comes within [`VERDICT_WAIT`] (no AutoNAT server answered), it listens
//!   through the relay all the same.
//!
//! Relays offered while the gate is shut are held (at most [`MAX_HELD`]) and handed back when
//! it opens. Reads no clock: `now` is passed in.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::direct::is_public_direct;

/// How long a node listening at a public address waits for AutoNAT's first verdict before it
/// listens through a relay anyway. AutoNAT probes every 5 s (libp2p's default) from the first
/// address candidate, which identify gives on the first connection: public radiators in
/// `testnet/dht-scale` were confirmed 5–14 s after start.
pub(crate) const VERDICT_WAIT: Duration = Duration::from_secs(30);
/// Relays offered while the gate is shut, held to be listened through when it opens (the
/// node listens through at most two).
pub(crate) const MAX_HELD: usize = 4;

/// AutoNAT's first verdict on a public address of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pending,
    Reachable,
    Unreachable,
}

/// Whether this node may listen through a relay now ([`RelayGate::open`]).
#[derive(Debug)]
pub(crate) struct RelayGate {
    /// The node is configured as a relay client at all.
    enabled: bool,
    started: Instant,
    /// One of the node's own listen addresses is public.
    public_listen: bool,
    verdict: Verdict,
    /// Relays offered while shut, oldest first.
    held: Vec<PeerId>,
    /// The held relays were handed back (they are handed back once).
    released: bool,
}

impl RelayGate {
    pub(crate) fn new(enabled: bool, now: Instant) -> Self {
        RelayGate {
            enabled,
            started: now,
            public_listen: false,
            verdict: Verdict::Pending,
            held: Vec::new(),
            released: false,
        }
    }

    /// The node listens at `addr` (one of its own interface addresses, or a relay circuit).
    pub(crate) fn listening_at(&mut self, addr: &Multiaddr) {
        if is_public_direct(addr) {
            self.public_listen = true;
        }
    }

    /// Whether the node listens at a public direct address of its own.
    pub(crate) fn listens_publicly(&self) -> bool {
        self.public_listen
    }

    /// AutoNAT tested `addr`: reachable from outside or not. Only the first verdict on a public
    /// address counts; later ones change what is confirmed (libp2p), not the gate.
    pub(crate) fn autonat(&mut self, addr: &Multiaddr, reachable: bool) {
        if self.verdict == Verdict::Pending && is_public_direct(addr) {
            self.verdict = if reachable {
                Verdict::Reachable
            } else {
                Verdict::Unreachable
            };
        }
    }

    /// Whether a node with no confirmed direct address may listen through a relay now.
    pub(crate) fn open(&self, now: Instant) -> bool {
        self.enabled
            && (!self.public_listen
                || self.verdict == Verdict::Unreachable
                || now.saturating_duration_since(self.started) >= VERDICT_WAIT)
    }

    /// A relay offered itself: `true` to listen through it now; `false` if the gate is shut
    /// (the relay is held, and handed back by [`RelayGate::release`] when it opens) or the
    /// node is no relay client.
    pub(crate) fn offered(&mut self, relay: PeerId, now: Instant) -> bool {
        if self.open(now) {
            return true;
        }
        if self.enabled && !self.held.contains(&relay) && self.held.len() < MAX_HELD {
            self.held.push(relay);
        }
        false
    }

    /// The relays held while the gate was shut, once it has opened (once; empty otherwise).
    pub(crate) fn release(&mut self, now: Instant) -> Vec<PeerId> {
        if self.released || !self.open(now) {
            return Vec::new();
        }
        self.released = true;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_node_without_a_public_address_listens_through_a_relay_at_once() {
        let t0 = Instant::now();
        let mut g = RelayGate::new(true, t0);
        g.listening_at(&a("/ip4/10.1.0.2/tcp/4001"));
        g.listening_at(&a("/ip4/127.0.0.1/tcp/4001"));
        let relay = PeerId::random();
        assert!(g.open(t0));
        assert!(g.offered(relay, t0));
        assert!(g.release(t0).is_empty(), "nothing was held");
    }

    #[test]
    fn a_public_node_confirmed_reachable_never_opens_before_the_wait() {
        let t0 = Instant::now();
        let mut g = RelayGate::new(true, t0);
        g.listening_at(&a("/ip4/198.19.3.2/tcp/4001"));
        let relay = PeerId::random();
        assert!(!g.offered(relay, t0), "shut until AutoNAT speaks");
        // A verdict on a relayed or private address says nothing of the public one.
        g.autonat(&a("/ip4/10.0.0.1/tcp/4001"), false);
        assert!(!g.open(t0 + Duration::from_secs(1)));
        g.autonat(&a("/ip4/198.19.3.2/tcp/4001"), true);
        // A later failure (another server, another port) does not reopen it.
        g.autonat(&a("/ip4/198.19.3.2/tcp/51000"), false);
        assert!(!g.open(t0 + Duration::from_secs(10)));
        assert!(g.release(t0 + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_public_node_found_unreachable_listens_through_the_relays_it_was_offered() {
        let t0 = Instant::now();
        let mut g = RelayGate::new(true, t0);
        g.listening_at(&a("/ip6/2001:db8::7/tcp/4001"));
        let (r1, r2) = (PeerId::random(), PeerId::random());
        assert!(!g.offered(r1, t0));
        assert!(!g.offered(r2, t0));
        assert!(!g.offered(r1, t0), "held once");
        assert!(g.release(t0).is_empty(), "still shut");
        g.autonat(&a("/ip6/2001:db8::7/tcp/4001"), false);
        let t = t0 + Duration::from_secs(3);
        assert!(g.open(t));
        assert_eq!(g.release(t), vec![r1, r2]);
        assert!(g.release(t).is_empty(), "handed back once");
        assert!(g.offered(PeerId::random(), t));
    }

    #[test]
    fn without_a_verdict_the_gate_opens_after_the_wait() {
        let t0 = Instant::now();
        let mut g = RelayGate::new(true, t0);
        g.listening_at(&a("/ip4/198.51.100.9/tcp/4001"));
        let relays: Vec<PeerId> = (0..MAX_HELD + 3).map(|_| PeerId::random()).collect();
        for r in &relays {
            assert!(!g.offered(*r, t0));
        }
        assert!(!g.open(t0 + VERDICT_WAIT - Duration::from_millis(1)));
        let t = t0 + VERDICT_WAIT;
        assert!(g.open(t));
        assert_eq!(
            g.release(t),
            relays[..MAX_HELD].to_vec(),
            "at most MAX_HELD held"
        );
    }

    #[test]
    fn a_node_that_is_no_relay_client_never_opens() {
        let t0 = Instant::now();
        let mut g = RelayGate::new(false, t0);
        assert!(!g.offered(PeerId::random(), t0));
        assert!(!g.open(t0 + VERDICT_WAIT));
        assert!(g.release(t0 + VERDICT_WAIT).is_empty());
    }
}
