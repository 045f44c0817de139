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

use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Whether `addr` can be a direct external address of ours: not relayed, and starting with
/// an IP address or a DNS name (what a dial-back or a hole punch can dial).
pub(crate) fn is_direct_candidate(addr: &Multiaddr) -> bool {
    let starts_at_host = matches!(
        addr.iter().next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    starts_at_host && !addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// `inner` (identify), with its non-direct address candidates dropped.
pub(crate) struct DirectCandidates<B> {
    pub(crate) inner: B,
}

impl<B: NetworkBehaviour> NetworkBehaviour for DirectCandidates<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr))
                    if !is_direct_candidate(&addr) =>
                {
                    tracing::debug!(%addr, "observed over a relayed connection: no candidate");
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
