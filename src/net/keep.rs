//! Hole-punched connections are kept open while idle.
//!
//! libp2p closes a connection once none of its handlers has a reason to keep it
//! (`NetConfig::idle_timeout`, 60 s), and hearth's own traffic with a peer comes in bursts (a
//! job's announcements, leases, claims, a fetch). For most peers that is right: dialling again
//! is cheap. Not for a home reached by hole punching: a closed punched connection comes back
//! only through a relay and a new punch (DCUtR), and a punch on the four-tuple of a connection
//! that closed a moment ago races what both home routers still hold for it. The NAT lab saw
//! exactly that (2026-12-05, `tcpdump` and `conntrack` on the routers): a punched connection
//! between two homes closed idle 2 minutes after the punch; the punch that followed 21 s later
//! dialled the same four-tuple twice from the same port, home 1's router found home 1's answer
//! out of window and sent everything after it untranslated, and home 1's router kept a
//! half-open entry for the four-tuple that failed every punch until it expired 120 s later.
//!
//! So a direct connection that replaces a relayed one (a hole punch, whichever end's dial it
//! came from: both ends see it so; now and then a public peer first met through a relay and
//! then dialled, `direct.rs`, which costs a ping every 15 s) is kept open by both ends
//! ([`KeepOpen::keep`], called from `actor/peers.rs`, and from `actor/reach.rs` when DCUtR
//! names a punched connection whose relayed one had already closed): its handler keeps it
//! alive, and ping (every 15 s both ways) keeps both routers' mappings for it fresh. One end alone cannot:
//! the other closes it when idle. It ends when it fails, when the peer closes it, or when
//! the node prunes the peer (`prune.rs`, which takes punched peers last): closing a
//! connection on purpose does not ask its handlers, so the prune's watermarks still bound how
//! many connections a node holds.
//!
//! Must not touch: anything but the connections it is told to keep.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::Endpoint;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Keeps the connections it is told to keep open while idle (module docs).
#[derive(Default)]
pub(crate) struct KeepOpen {
    pending: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl KeepOpen {
    /// Keep this connection open while idle, for as long as it lasts.
    pub(crate) fn keep(&mut self, peer: PeerId, connection: ConnectionId) {
        self.pending.push_back((peer, connection));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl NetworkBehaviour for KeepOpen {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::default())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        // A connection that closed before its handler was told is skipped by the swarm.
        match self.pending.pop_front() {
            Some((peer_id, connection)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: Keep,
            }),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The one thing a [`Handler`] is told: keep this connection open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keep;

/// Speaks no protocol; only says whether its connection is to be kept open.
#[derive(Default)]
pub(crate) struct Handler {
    keep: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Keep;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, _: Keep) {
        self.keep = true;
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {
        // No stream is ever negotiated (both upgrades are denied): nothing to do for any event.
        let _ = event;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{noise, tcp, yamux, Swarm, SwarmBuilder};

    use super::*;

    /// Idle connections close after this in the test (60 s in a node).
    const IDLE: Duration = Duration::from_millis(500);

    fn swarm() -> Swarm<KeepOpen> {
        SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| KeepOpen::default())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE))
            .build()
    }

    /// Two swarms connected over loopback TCP; returns them with each one's connection id.
    async fn connected() -> (Swarm<KeepOpen>, Swarm<KeepOpen>, ConnectionId, ConnectionId) {
        let (mut a, mut b) = (swarm(), swarm());
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                break address;
            }
        };
        a.dial(addr).unwrap();
        let (mut id_a, mut id_b) = (None, None);
        while id_a.is_none() || id_b.is_none() {
            tokio::select! {
                e = a.select_next_some() => if let SwarmEvent::ConnectionEstablished { connection_id, .. } = e {
                    id_a = Some(connection_id);
                },
                e = b.select_next_some() => if let SwarmEvent::ConnectionEstablished { connection_id, .. } = e {
                    id_b = Some(connection_id);
                },
            }
        }
        (a, b, id_a.unwrap(), id_b.unwrap())
    }

    /// Runs both swarms for `d`; true if the connection closed meanwhile.
    async fn closes_within(a: &mut Swarm<KeepOpen>, b: &mut Swarm<KeepOpen>, d: Duration) -> bool {
        let deadline = tokio::time::sleep(d);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return false,
                e = a.select_next_some() => if let SwarmEvent::ConnectionClosed { .. } = e { return true },
                e = b.select_next_some() => if let SwarmEvent::ConnectionClosed { .. } = e { return true },
            }
        }
    }

    #[tokio::test]
    async fn a_connection_kept_by_both_ends_stays_open_while_idle_and_others_close() {
        // Not kept: closed by the idle timeout (what a node does to every idle connection).
        let (mut a, mut b, _, _) = connected().await;
        assert!(
            closes_within(&mut a, &mut b, IDLE * 6).await,
            "an idle connection nobody keeps must close after the idle timeout"
        );

        // Kept by one end only: the other end closes it (each end of a hole-punched
        // connection keeps it, `actor/peers.rs`).
        let (mut a, mut b, id_a, _) = connected().await;
        let peer_b = *b.local_peer_id();
        a.behaviour_mut().keep(peer_b, id_a);
        assert!(closes_within(&mut a, &mut b, IDLE * 6).await);

        // Kept by both: open through ten idle timeouts.
        let (mut a, mut b, id_a, id_b) = connected().await;
        let (peer_a, peer_b) = (*a.local_peer_id(), *b.local_peer_id());
        a.behaviour_mut().keep(peer_b, id_a);
        b.behaviour_mut().keep(peer_a, id_b);
        assert!(
            !closes_within(&mut a, &mut b, IDLE * 10).await,
            "a kept connection closed while idle"
        );
        assert!(a.is_connected(&peer_b) && b.is_connected(&peer_a));

        // Closing it on purpose (the prune) still works.
        a.disconnect_peer_id(peer_b).unwrap();
        assert!(closes_within(&mut a, &mut b, IDLE * 4).await);
    }
}
