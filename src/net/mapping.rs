//! What this node's NAT does to its connections, learned from the addresses peers see it at
//! (sans-IO: the swarm task reports connections and identify's observed addresses, and asks).
//!
//! A hole punch (DCUtR) has each side dial the address the other was *observed* at. That works
//! when the NAT gives a node's listening port one public port whatever the destination
//! (endpoint-independent mapping, RFC 4787 §4.1: most home routers, Linux `MASQUERADE`). A NAT
//! that gives each destination a port of its own (address-dependent mapping: "symmetric" NATs,
//! many carrier-grade NATs, Linux `MASQUERADE --random-fully`) sends the punch's dial out from
//! a port the other side never saw, and the other side's dial arrives at a port mapped to some
//! other destination: the punch cannot succeed, whatever the other home's NAT (short of one
//! that forwards everything). A blob fetch then waited 30 s for a punch that could not come
//! (`download.rs`, `NetConfig::direct_wait`), once per fresh relayed connection, before the
//! radiator declined the lease: the NAT lab's symmetric variant (docs/testnet.md).
//!
//! The test is STUN's (RFC 5780 §4.3), run on what identify already tells: connections made
//! from the node's listening port (dialled with port reuse, or accepted) to peers at different
//! public addresses. Two such peers that saw it at the same public port show an
//! endpoint-independent mapping; two or more that each saw a port of their own, none shared, an
//! address-dependent one. Only IPv4 is looked at (IPv6 homes are rarely translated).
//!
//! Every observed address is a peer's claim. Bounds: peers are counted by the address their
//! connection comes from (the kernel's, not a claim), so identities on one host count once; a
//! port two observers agree on wins (a liar cannot make a home that two honest peers see
//! through one port look symmetric); at most [`MAX_OBSERVERS`] observers, each for
//! [`FORGET`] after it last spoke, and [`MAX_PORTS`] ports each. The worst a lie can do is
//! make a fetch give up on a relayed-only provider at once instead of 30 s later, or wait as
//! before.
//!
//! Must not touch: the swarm, the clock (time comes in as `now`).

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::direct::is_public_direct;

/// Observers remembered at most; past it the one heard from longest ago is forgotten.
pub(crate) const MAX_OBSERVERS: usize = 32;
/// Ports remembered per observer (a second connection to the same peer may leave from a fresh
/// port: libp2p's TCP transport redials so when the listening port's four-tuple is taken).
pub(crate) const MAX_PORTS: usize = 4;
/// An observer not heard from for this long is forgotten: identify speaks again on every new
/// connection, so a closed one's word stands for a while (a home holds few public peers at
/// once), and a router that changed its ways is seen afresh.
pub(crate) const FORGET: Duration = Duration::from_secs(30 * 60);

/// How this node's NAT maps its listening port, as far as its peers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NatMapping {
    /// Fewer than two peers at different public addresses saw it yet.
    #[default]
    Unknown,
    /// Two peers saw it at the same public port: no NAT, or one whose mapping a hole punch
    /// can use.
    EndpointIndependent,
    /// Each peer saw it at a port of its own ("symmetric" NAT): no hole punch can succeed, so
    /// other homes behind NAT are reached only through a relay, which carries no blobs.
    AddressDependent,
}

impl NatMapping {
    /// Words for `hearth status`.
    pub fn describe(self) -> &'static str {
        match self {
            NatMapping::Unknown => "not known yet (fewer than two public peers saw this node)",
            NatMapping::EndpointIndependent => {
                "one public port for every peer (hole punching can work)"
            }
            NatMapping::AddressDependent => {
                "a new public port per peer (symmetric NAT): hole punching cannot work; \
                 forward a port to this radiator to reach other homes directly"
            }
        }
    }
}

#[derive(Debug)]
struct Seen {
    /// The public address it saw us at.
    ip: Ipv4Addr,
    /// The ports it saw us at, latest last.
    ports: VecDeque<u16>,
    at: Instant,
}

/// The observations, and the connections whose observations count.
#[derive(Debug, Default)]
pub(crate) struct Mappings {
    /// Open connections from our listening port to a public IPv4 address: the address they
    /// come from. Bounded by the swarm's connection limits (removed when closed).
    counted: HashMap<ConnectionId, Ipv4Addr>,
    /// Per observer address, what it saw last.
    seen: HashMap<Ipv4Addr, Seen>,
}

impl Mappings {
    /// A connection opened. `from_listen_port`: it was accepted, or dialled with port reuse
    /// (it leaves from the listening port); `remote`: where the peer is; relayed and private
    /// addresses are not counted.
    pub(crate) fn connected(
        &mut self,
        conn: ConnectionId,
        remote: &Multiaddr,
        from_listen_port: bool,
    ) {
        if !from_listen_port || !is_public_direct(remote) {
            return;
        }
        if let Some(Protocol::Ip4(ip)) = remote.iter().next() {
            self.counted.insert(conn, ip);
        }
    }

    pub(crate) fn closed(&mut self, conn: ConnectionId) {
        self.counted.remove(&conn);
    }

    /// The peer at the other end of `conn` says it sees us at `observed` (identify). Returns
    /// the verdict when it changed.
    pub(crate) fn observed(
        &mut self,
        conn: ConnectionId,
        observed: &Multiaddr,
        now: Instant,
    ) -> Option<NatMapping> {
        let observer = *self.counted.get(&conn)?;
        if !is_public_direct(observed) {
            return None;
        }
        let mut parts = observed.iter();
        let (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) = (parts.next(), parts.next())
        else {
            return None;
        };
        let before = self.verdict(now);
        self.forget_old(now);
        if !self.seen.contains_key(&observer) && self.seen.len() >= MAX_OBSERVERS {
            if let Some(oldest) = self.seen.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k) {
                self.seen.remove(&oldest);
            }
        }
        let s = self.seen.entry(observer).or_insert_with(|| Seen {
            ip,
            ports: VecDeque::new(),
            at: now,
        });
        if s.ip != ip {
            // We moved (the router got a new address): what it saw before is of the past.
            s.ip = ip;
            s.ports.clear();
        }
        s.at = now;
        s.ports.retain(|p| *p != port);
        s.ports.push_back(port);
        while s.ports.len() > MAX_PORTS {
            s.ports.pop_front();
        }
        let after = self.verdict(now);
        (after != before).then_some(after)
    }

    fn forget_old(&mut self, now: Instant) {
        self.seen
            .retain(|_, s| now.saturating_duration_since(s.at) < FORGET);
    }

    /// No hole punch can succeed from here: the verdict is address-dependent.
    pub(crate) fn punch_hopeless(&self, now: Instant) -> bool {
        self.verdict(now) == NatMapping::AddressDependent
    }

    /// The verdict on the public address heard of last: address-dependent when at least two
    /// observers saw it and no port was seen by two of them.
    pub(crate) fn verdict(&self, now: Instant) -> NatMapping {
        let fresh = || {
            self.seen
                .values()
                .filter(move |s| now.saturating_duration_since(s.at) < FORGET)
        };
        let Some(latest) = fresh().max_by_key(|s| s.at).map(|s| s.ip) else {
            return NatMapping::Unknown;
        };
        let at_latest: Vec<&Seen> = fresh().filter(|s| s.ip == latest).collect();
        if at_latest.len() < 2 {
            return NatMapping::Unknown;
        }
        let mut by_port: HashMap<u16, usize> = HashMap::new();
        for s in &at_latest {
            for p in &s.ports {
                *by_port.entry(*p).or_default() += 1;
            }
        }
        if by_port.values().any(|n| *n >= 2) {
            NatMapping::EndpointIndependent
        } else {
            NatMapping::AddressDependent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("address")
    }

    /// One connection per observer `198.51.100.<i>`, which saw us at `seen`.
    fn observe(m: &mut Mappings, i: usize, seen: &str, now: Instant) -> Option<NatMapping> {
        let conn = ConnectionId::new_unchecked(i);
        m.connected(conn, &addr(&format!("/ip4/198.51.100.{i}/tcp/4001")), true);
        m.observed(conn, &addr(seen), now)
    }

    #[test]
    fn two_peers_at_one_port_are_endpoint_independent_and_at_two_ports_address_dependent() {
        let now = Instant::now();
        let mut cone = Mappings::default();
        assert_eq!(
            observe(&mut cone, 1, "/ip4/203.0.113.11/tcp/4001", now),
            None
        );
        assert_eq!(cone.verdict(now), NatMapping::Unknown);
        assert_eq!(
            observe(&mut cone, 2, "/ip4/203.0.113.11/tcp/4001", now),
            Some(NatMapping::EndpointIndependent)
        );
        // A router that maps to another port, the same for every peer, is as good.
        let mut renumbering = Mappings::default();
        observe(&mut renumbering, 1, "/ip4/203.0.113.11/tcp/61000", now);
        observe(&mut renumbering, 2, "/ip4/203.0.113.11/tcp/61000", now);
        assert_eq!(renumbering.verdict(now), NatMapping::EndpointIndependent);

        let mut symmetric = Mappings::default();
        observe(&mut symmetric, 1, "/ip4/203.0.113.11/tcp/40112", now);
        assert_eq!(
            observe(&mut symmetric, 2, "/ip4/203.0.113.11/tcp/51873", now),
            Some(NatMapping::AddressDependent)
        );
        assert_eq!(
            observe(&mut symmetric, 3, "/ip4/203.0.113.11/tcp/33001", now),
            None
        );
    }

    #[test]
    fn only_connections_from_the_listening_port_to_public_peers_count() {
        let now = Instant::now();
        let mut m = Mappings::default();
        // Dialled from a fresh port: its observed port says nothing of the mapping.
        let fresh = ConnectionId::new_unchecked(1);
        m.connected(fresh, &addr("/ip4/198.51.100.1/tcp/4001"), false);
        assert_eq!(
            m.observed(fresh, &addr("/ip4/203.0.113.11/tcp/1111"), now),
            None
        );
        // A peer in the home sees the home's own address.
        let lan = ConnectionId::new_unchecked(2);
        m.connected(lan, &addr("/ip4/10.1.0.3/tcp/4001"), true);
        assert_eq!(m.observed(lan, &addr("/ip4/10.1.0.2/tcp/4001"), now), None);
        // Through a relay.
        let relayed = ConnectionId::new_unchecked(3);
        m.connected(
            relayed,
            &addr("/ip4/198.51.100.9/tcp/4001/p2p/12D3KooWGRUVh7Ykb2VeJ4VW9JdVH5XvdW1p4yQYQ1rJ1xNnPNgD/p2p-circuit"),
            true,
        );
        assert_eq!(
            m.observed(relayed, &addr("/ip4/203.0.113.11/tcp/2222"), now),
            None
        );
        // A private or relayed observed address.
        assert_eq!(observe(&mut m, 4, "/ip4/10.1.0.2/tcp/4001", now), None);
        assert_eq!(observe(&mut m, 5, "/ip4/203.0.113.11/tcp/3333", now), None);
        assert_eq!(m.verdict(now), NatMapping::Unknown, "one observer counted");
        // A closed connection's later words are not taken.
        let c = ConnectionId::new_unchecked(6);
        m.connected(c, &addr("/ip4/198.51.100.6/tcp/4001"), true);
        m.closed(c);
        assert_eq!(
            m.observed(c, &addr("/ip4/203.0.113.11/tcp/4444"), now),
            None
        );
        assert_eq!(m.verdict(now), NatMapping::Unknown);
    }

    #[test]
    fn identities_on_one_host_count_once_and_a_lie_does_not_outvote_two_agreeing_peers() {
        let now = Instant::now();
        let mut m = Mappings::default();
        // Two connections from one address (two identities, or a redial from a fresh port).
        for (i, port) in [(1, 5000), (2, 6000)] {
            let conn = ConnectionId::new_unchecked(i);
            m.connected(conn, &addr("/ip4/198.51.100.1/tcp/4001"), true);
            m.observed(conn, &addr(&format!("/ip4/203.0.113.11/tcp/{port}")), now);
        }
        assert_eq!(
            m.verdict(now),
            NatMapping::Unknown,
            "one host is one observer"
        );
        observe(&mut m, 2, "/ip4/203.0.113.11/tcp/4001", now);
        observe(&mut m, 3, "/ip4/203.0.113.11/tcp/4001", now);
        for i in 10..20 {
            observe(
                &mut m,
                i,
                &format!("/ip4/203.0.113.11/tcp/{}", 7000 + i),
                now,
            );
        }
        assert_eq!(m.verdict(now), NatMapping::EndpointIndependent);
    }

    #[test]
    fn the_latest_public_address_is_judged_and_old_words_are_forgotten() {
        let t0 = Instant::now();
        let mut m = Mappings::default();
        observe(&mut m, 1, "/ip4/203.0.113.11/tcp/4001", t0);
        observe(&mut m, 2, "/ip4/203.0.113.11/tcp/4001", t0);
        assert_eq!(m.verdict(t0), NatMapping::EndpointIndependent);
        // The router came back at a new address, now behind a carrier's NAT.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(
            observe(&mut m, 3, "/ip4/192.0.2.22/tcp/50001", t1),
            Some(NatMapping::Unknown)
        );
        assert_eq!(
            observe(&mut m, 1, "/ip4/192.0.2.22/tcp/50002", t1),
            Some(NatMapping::AddressDependent)
        );
        let later = t1 + FORGET;
        assert_eq!(m.verdict(later), NatMapping::Unknown);
    }

    #[test]
    fn observers_and_ports_are_bounded() {
        let now = Instant::now();
        let mut m = Mappings::default();
        for i in 0..(MAX_OBSERVERS * 3) {
            let conn = ConnectionId::new_unchecked(i);
            let from = format!("/ip4/198.51.{}.{}/tcp/4001", 100 + i / 200, 1 + i % 200);
            m.connected(conn, &addr(&from), true);
            for p in 0..10u16 {
                let at = now + Duration::from_millis(i as u64);
                m.observed(
                    conn,
                    &addr(&format!("/ip4/203.0.113.11/tcp/{}", 1000 + p)),
                    at,
                );
            }
        }
        assert_eq!(m.seen.len(), MAX_OBSERVERS);
        assert!(m.seen.values().all(|s| s.ports.len() == MAX_PORTS));
    }
}
