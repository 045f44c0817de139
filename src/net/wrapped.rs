//! A behaviour wrapped to see what passes between it and the swarm: [`Wrapped`] forwards
//! everything to its inner behaviour and shows a [`Hook`] each event from the swarm and each
//! event the inner one polls out, which the hook may drop; before each poll the hook may act on
//! the inner behaviour. Three hooks: `dials.rs` counts dials by who asked (`Counted`),
//! `candidates.rs` drops address candidates that are no direct address (`DirectCandidates`),
//! `autonat_server.rs` gives AutoNAT's dial-backs up after a while and closes those that
//! connected once their test is done (`Bounded`).
//!
//! Must not touch: anything but what its hook is shown.

use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// What a [`Wrapped`] behaviour does beside its inner one `B`.
pub(crate) trait Hook<B: NetworkBehaviour> {
    /// Sees each event from the swarm, before the inner behaviour does.
    fn on_swarm_event(&mut self, _event: &FromSwarm) {}

    /// Runs before each poll of the inner behaviour, and may tell it what the swarm did not;
    /// `cx` wakes the swarm for a deadline.
    fn before_poll(&mut self, _inner: &mut B, _cx: &mut Context<'_>) {}

    /// Sees `ev`, an event the inner behaviour gives the swarm; false drops it.
    fn pass(&mut self, ev: &ToSwarm<B::ToSwarm, THandlerInEvent<B>>) -> bool;

    /// An event of the hook's own for the swarm, given before the inner behaviour's.
    fn own(&mut self) -> Option<ToSwarm<B::ToSwarm, THandlerInEvent<B>>> {
        None
    }
}

/// `inner`, its events shown to `hook` on their way to the swarm; otherwise it is `B` (and
/// derefs to it).
pub(crate) struct Wrapped<B, H> {
    pub(crate) inner: B,
    pub(crate) hook: H,
}

impl<B, H> Deref for Wrapped<B, H> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B, H> DerefMut for Wrapped<B, H> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B, H> NetworkBehaviour for Wrapped<B, H>
where
    B: NetworkBehaviour,
    H: Hook<B> + 'static,
{
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
        self.hook.on_swarm_event(&event);
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
        self.hook.before_poll(&mut self.inner, cx);
        if let Some(ev) = self.hook.own() {
            return Poll::Ready(ev);
        }
        loop {
            match self.inner.poll(cx) {
                Poll::Ready(ev) if !self.hook.pass(&ev) => continue,
                other => return other,
            }
        }
    }
}
