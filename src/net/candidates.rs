//! Only direct addresses become address candidates: a wrapper around identify that drops the
//! candidates a peer observed over a relayed connection.
//!
//! Identify reports, as a candidate for our external address, the address each peer says it
//! sees us at. Over a relayed connection that is no direct address of ours: a relay circuit,
//! or `/p2p/<our id>` alone. libp2p passes them on all the same, and two behaviours act on
//! every candidate: the AutoNAT client asks a server to dial it back (a circuit at the relay
//! for nothing, and a test slot a direct address needed), and DCUtR hands it to the peer
//! it hole punches with as an address to dial. `testnet/dht-scale` (`docs/scale.md`, "What
//! breaks first", item 7) showed public radiators whose AutoNAT tested only such candidates
//! and so never confirmed them public; they kept listening through the relay, and every dial
//! of them asked it for a circuit.
//!
//! Must not touch: anything identify does but the candidates it reports.

use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, THandlerInEvent, ToSwarm};
use libp2p::Multiaddr;

use super::relayed::is_relayed;
use super::wrapped::{Hook, Wrapped};

/// Whether `addr` starts with an IP address or a DNS name: something a dial can reach by
/// itself, unlike `/p2p/<id>` alone.
pub(crate) fn starts_at_host(addr: &Multiaddr) -> bool {
    matches!(
        addr.iter().next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    )
}

/// Whether `addr` can be a direct external address of ours: not relayed, and starting at a
/// host (what a dial-back or a hole punch can dial).
pub(crate) fn is_direct_candidate(addr: &Multiaddr) -> bool {
    starts_at_host(addr) && !is_relayed(addr)
}

/// `B` (identify), with its non-direct address candidates dropped (`wrapped.rs`).
pub(crate) type DirectCandidates<B> = Wrapped<B, DirectOnly>;

/// The hook of [`DirectCandidates`].
pub(crate) struct DirectOnly;

impl<B> DirectCandidates<B> {
    pub(crate) fn new(inner: B) -> Self {
        Wrapped {
            inner,
            hook: DirectOnly,
        }
    }
}

impl<B: NetworkBehaviour> Hook<B> for DirectOnly {
    fn pass(&mut self, ev: &ToSwarm<B::ToSwarm, THandlerInEvent<B>>) -> bool {
        match ev {
            ToSwarm::NewExternalAddrCandidate(addr) if !is_direct_candidate(addr) => {
                tracing::debug!(%addr, "observed over a relayed connection: no candidate");
                false
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;

    fn a(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn only_direct_addresses_are_candidates() {
        let id = PeerId::random();
        let relay = PeerId::random();
        assert!(is_direct_candidate(&a("/ip4/198.19.1.2/tcp/4001")));
        assert!(is_direct_candidate(&a("/ip6/2001:db8::1/udp/4001/quic-v1")));
        assert!(is_direct_candidate(&a("/dns4/home.example/tcp/4001")));
        assert!(is_direct_candidate(&a(&format!(
            "/ip4/198.19.1.2/tcp/4001/p2p/{id}"
        ))));
        // What identify reported over relayed connections in testnet/dht-scale.
        assert!(!is_direct_candidate(&a(&format!("/p2p/{id}"))));
        assert!(!is_direct_candidate(&a(&format!(
            "/ip4/198.51.100.2/tcp/4001/p2p/{relay}/p2p-circuit"
        ))));
        assert!(!is_direct_candidate(&a(&format!(
            "/ip4/198.51.100.2/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{id}"
        ))));
    }

    #[test]
    fn the_hook_drops_only_candidates_that_are_no_direct_address() {
        type B = libp2p::swarm::dummy::Behaviour;
        type Ev = ToSwarm<<B as NetworkBehaviour>::ToSwarm, THandlerInEvent<B>>;
        let mut hook = DirectOnly;
        let mut pass = |ev: Ev| Hook::<B>::pass(&mut hook, &ev);
        let candidate = |s: String| -> Ev { ToSwarm::NewExternalAddrCandidate(a(&s)) };
        let id = PeerId::random();
        assert!(!pass(candidate(format!("/p2p/{id}"))));
        assert!(!pass(candidate(format!(
            "/ip4/198.51.100.2/tcp/4001/p2p/{id}/p2p-circuit"
        ))));
        assert!(pass(candidate("/ip4/198.19.1.2/tcp/4001".to_string())));
        let other: Ev = ToSwarm::ExternalAddrConfirmed(a(&format!("/p2p/{id}")));
        assert!(pass(other), "only candidates are filtered");
    }
}
