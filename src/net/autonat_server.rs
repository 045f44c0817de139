//! AutoNAT's server: a dial-back gives up before the client stops waiting, so a client whose
//! address cannot be reached hears "not reachable" instead of nothing.
//!
//! libp2p's AutoNAT v2 server answers a probe only when its dial-back has connected or failed
//! (libp2p-autonat 0.16, `v2/server`). A home's router drops the dial-back silently, so the
//! dial ends only with the transport's own timeout, and the client's 10 s wait for the answer
//! (which starts before the server even dials) runs out first: the client logs a timed-out
//! probe, learns nothing, and libp2p's client tries again on its next tick. Every home behind
//! NAT probed for as long as it ran, each probe a dial-back left hanging at the server (the
//! client side now stops after 3 fruitless probes, `autonat.rs`, but still never hears a
//! verdict; `docs/scale.md`, item 7).
//!
//! [`Bounded`] wraps the server (`wrapped.rs`) and tells it a dial-back failed once
//! [`DIAL_BACK_WAIT`] has passed without a connection: the server answers the client "dial
//! error" and the client marks the address not reachable, for good (libp2p's client tests a
//! failed address no more).
//! The dial itself is left to the swarm; if it connects after all, the server has forgotten
//! it and gives the connection no dial-back handler (libp2p's own path for a dial it did not
//! ask for).
//!
//! A dial-back that connected is closed once its test is done (the server has answered its
//! client): it carried one nonce, and left open it stayed 60 s (the idle timeout) at both ends,
//! a full connection each, and counted against the 4 connections a node allows one peer
//! (`behaviour.rs`). A client tested again and again (`autonat.rs`: every half hour, or when
//! its household asks) filled those with dial-backs from its tester until its next fresh
//! connection to it was refused.
//!
//! Why 5 s: a reachable address answers a TCP dial within a round trip, and noise and yamux
//! take two or three more: about 2 s over a 500 ms satellite path. The client's 10 s cover
//! its request, the dial-back and the answer, so the dial-back must give up well inside them.
//!
//! Must not touch: anything but the dials of the behaviour it wraps.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use futures::FutureExt;
use libp2p::autonat::v2::server;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::{
    behaviour::ConnectionEstablished, CloseConnection, ConnectionClosed, ConnectionId, DialError,
    DialFailure, FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::bootstrap::without_peer_id;
use super::wrapped::{Hook, Wrapped};

/// How long a dial-back may take before the server tells its client the address is not
/// reachable (module header: why 5 s).
pub(crate) const DIAL_BACK_WAIT: Duration = Duration::from_secs(5);

/// Dial-backs under way and when each gives up. Bounded by the server itself: libp2p's server
/// holds at most 10 requests per connection, and a node's connections are capped.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    due: HashMap<ConnectionId, (Option<PeerId>, Instant)>,
}

impl Deadlines {
    /// The server dialled `id` (to `peer`) at `now`.
    pub(crate) fn dialled(&mut self, id: ConnectionId, peer: Option<PeerId>, now: Instant) {
        self.due.insert(id, (peer, now + DIAL_BACK_WAIT));
    }

    /// Whether dial `id` is under way.
    pub(crate) fn is_due(&self, id: ConnectionId) -> bool {
        self.due.contains_key(&id)
    }

    /// The dial `id` connected or failed: no deadline.
    pub(crate) fn ended(&mut self, id: ConnectionId) {
        self.due.remove(&id);
    }

    /// The dials whose time ran out by `now`, forgotten here.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(ConnectionId, Option<PeerId>)> {
        let gone: Vec<(ConnectionId, Option<PeerId>)> = self
            .due
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, (peer, _))| (*id, *peer))
            .collect();
        for (id, _) in &gone {
            self.due.remove(id);
        }
        gone
    }

    /// The earliest deadline, if any dial is under way.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.values().map(|(_, at)| *at).min()
    }
}

/// Dial-backs that connected, until their test is done: then they are closed. Bounded like
/// [`Deadlines`], and each leaves when its connection closes.
#[derive(Debug, Default)]
pub(crate) struct Connected {
    open: HashMap<ConnectionId, (PeerId, Multiaddr)>,
}

impl Connected {
    /// Dial-back `id` connected to `client` at `addr`.
    pub(crate) fn connected(&mut self, id: ConnectionId, client: PeerId, addr: Multiaddr) {
        self.open.insert(id, (client, addr));
    }

    /// Connection `id` closed.
    pub(crate) fn closed(&mut self, id: ConnectionId) {
        self.open.remove(&id);
    }

    /// The test of `client`'s `addr` is done: the dial-backs that carried it, to close
    /// (forgotten here).
    pub(crate) fn done(&mut self, client: PeerId, addr: &Multiaddr) -> Vec<ConnectionId> {
        let ids: Vec<ConnectionId> = self
            .open
            .iter()
            .filter(|(_, (c, a))| *c == client && a == addr)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.open.remove(id);
        }
        ids
    }
}

/// `inner` (AutoNAT's server) with its dial-backs given [`DIAL_BACK_WAIT`] at most
/// (`wrapped.rs`); otherwise it is `B`.
pub(crate) type Bounded<B> = Wrapped<B, DialBackWait>;

impl<B> Bounded<B> {
    pub(crate) fn new(inner: B) -> Self {
        Wrapped {
            inner,
            hook: DialBackWait::default(),
        }
    }
}

/// The hook of [`Bounded`].
#[derive(Default)]
pub(crate) struct DialBackWait {
    deadlines: Deadlines,
    connected: Connected,
    /// Dial-backs whose test is done, to close.
    closing: Vec<(PeerId, ConnectionId)>,
    timer: Option<Pin<Box<Sleep>>>,
    given_up: u64,
}

impl DialBackWait {
    /// Dial-backs given up since start (their client heard "not reachable").
    pub(crate) fn given_up(&self) -> u64 {
        self.given_up
    }
}

impl<B: NetworkBehaviour<ToSwarm = server::Event>> Hook<B> for DialBackWait {
    fn on_swarm_event(&mut self, event: &FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                peer_id,
                endpoint: ConnectedPoint::Dialer { address, .. },
                ..
            }) if self.deadlines.is_due(*connection_id) => {
                self.deadlines.ended(*connection_id);
                // Dialled as `<tested address>/p2p/<client>`.
                self.connected
                    .connected(*connection_id, *peer_id, without_peer_id(address));
            }
            FromSwarm::ConnectionEstablished(ConnectionEstablished { connection_id, .. })
            | FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.deadlines.ended(*connection_id)
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.deadlines.ended(*connection_id);
                self.connected.closed(*connection_id);
            }
            _ => {}
        }
    }

    fn own(&mut self) -> Option<ToSwarm<server::Event, THandlerInEvent<B>>> {
        let (peer_id, id) = self.closing.pop()?;
        debug!(%peer_id, "AutoNAT: test done, closing its dial-back connection");
        Some(ToSwarm::CloseConnection {
            peer_id,
            connection: CloseConnection::One(id),
        })
    }

    fn before_poll(&mut self, inner: &mut B, cx: &mut Context<'_>) {
        for (connection_id, peer_id) in self.deadlines.expired(Instant::now()) {
            debug!(
                ?peer_id,
                "AutoNAT dial-back not connected in time: the client hears \"not reachable\""
            );
            self.given_up = self.given_up.saturating_add(1);
            inner.on_swarm_event(FromSwarm::DialFailure(DialFailure {
                peer_id,
                error: &DialError::Aborted,
                connection_id,
            }));
        }
        // Woken at the earliest deadline. A dial `pass` records in this poll gets its wake-up
        // at the next poll, which comes at once: the swarm polls again after every event.
        self.timer = self.deadlines.next().map(|at| match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(at);
                t
            }
            None => Box::pin(tokio::time::sleep_until(at)),
        });
        if let Some(t) = self.timer.as_mut() {
            if t.poll_unpin(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn pass(&mut self, ev: &ToSwarm<B::ToSwarm, THandlerInEvent<B>>) -> bool {
        match ev {
            ToSwarm::Dial { opts } => {
                self.deadlines
                    .dialled(opts.connection_id(), opts.get_peer_id(), Instant::now());
            }
            // The server answered its client: the dial-back that carried the test has done
            // its work (closed at the next poll, which comes at once).
            ToSwarm::GenerateEvent(done) => {
                for id in self.connected.done(done.client, &done.tested_addr) {
                    self.closing.push((done.client, id));
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_back_that_neither_connects_nor_fails_expires_after_the_wait() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let peer = PeerId::random();
        d.dialled(a, Some(peer), t0);
        d.dialled(b, None, t0 + Duration::from_secs(1));
        assert_eq!(d.next(), Some(t0 + DIAL_BACK_WAIT));
        assert!(d
            .expired(t0 + DIAL_BACK_WAIT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(d.expired(t0 + DIAL_BACK_WAIT), vec![(a, Some(peer))]);
        // Told once only.
        assert!(d.expired(t0 + DIAL_BACK_WAIT).is_empty());
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1) + DIAL_BACK_WAIT));
    }

    #[test]
    fn a_dial_back_that_connected_or_failed_never_expires() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let (a, b) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        d.dialled(a, None, t0);
        d.dialled(b, None, t0);
        d.ended(a);
        d.ended(b);
        assert!(d.expired(t0 + DIAL_BACK_WAIT * 10).is_empty());
        assert_eq!(d.next(), None);
    }

    #[test]
    fn a_dial_back_is_closed_once_its_test_is_done_and_not_another() {
        let mut c = Connected::default();
        let (client, other) = (PeerId::random(), PeerId::random());
        let addr: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
        let second: Multiaddr = "/ip4/198.51.100.7/tcp/4002".parse().unwrap();
        let id = |n| ConnectionId::new_unchecked(n);
        c.connected(id(1), client, addr.clone());
        c.connected(id(2), client, second.clone());
        c.connected(id(3), other, addr.clone());
        assert_eq!(c.done(client, &addr), [id(1)], "the test's own dial-back");
        assert!(c.done(client, &addr).is_empty(), "closed once");
        c.closed(id(2));
        assert!(c.done(client, &second).is_empty(), "already closed");
        assert_eq!(c.done(other, &addr), [id(3)]);
    }
}
