//! One relayed connection per peer, and none beside a direct one: so that two homes run one
//! hole punch at a time.
//!
//! DCUtR runs a punch over every relayed connection. Two homes behind NAT often want each other
//! at the same moment (an announcement one way, a lease request the other) and each dials the
//! other through the relay; an AutoNAT dial-back or a retried punch (`punch.rs`) adds another.
//! Two punches at once between the same homes defeat each other: both dial the same four-tuple
//! (the listen port, reused, to the peer's mapped address), the second `connect` fails with
//! `EADDRNOTAVAIL`, libp2p's TCP transport then dials from a fresh port that no NAT mapping
//! expects, and while the first's dials are pending (up to the 10 s connection timeout) every
//! new punch does the same. The NAT lab showed it: after a path came back, punches kept
//! failing for a minute while new relayed connections kept starting rounds, every dial from an
//! ephemeral port (`conntrack -L` on both routers).
//!
//! So when a second relayed connection to a peer is established, one of the two is dropped
//! before any handler runs on it (denied) or closed (the older one), and both homes must drop
//! the same one without talking. [`keep`] decides: two connections established within
//! [`RACE`] of each other, one dialled by each side, are the "both dialled at once" case, and
//! the one dialled by the smaller peer id stays (each side knows who dialled which); two that
//! one side dialled within `RACE` of each other are closed by that side alone, which keeps the
//! newer by its own clock (the other end may have seen them established in the opposite
//! order: it waits); otherwise the newer stays (a retried punch or a dial-back is there to
//! run a fresh round). Both sides see establishment times within a relay round trip of each
//! other, so they disagree only when the gap is within a round trip of `RACE`; then both drop
//! one, the peer disconnects, and it is dialled again when next wanted.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure,
    FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Two relayed connections to one peer established closer together than this were dialled at
/// once, one from each side (relay round trips are milliseconds to a few hundred).
pub(crate) const RACE: Duration = Duration::from_secs(3);

/// Relayed connections remembered per peer: normally one; a few while a replaced one closes.
const MAX_PER_PEER: usize = 4;

/// A relayed connection to a peer: when it was established and which side dialled it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relayed {
    pub(crate) at: Instant,
    pub(crate) dialled_by_us: bool,
}

/// Which of two relayed connections to one peer this end keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The new one; the old one is closed.
    New,
    /// The old one; the new one is denied.
    Old,
    /// Both, for now: the peer dialled both at once and closes one of them itself.
    Both,
}

/// Which of `old` and `new` (two relayed connections to one peer, `new` established later
/// here) this end keeps; `we_are_smaller`: our peer id sorts before the peer's. Both homes
/// keep the same one (module docs).
pub(crate) fn keep(old: Relayed, new: Relayed, we_are_smaller: bool) -> Keep {
    let at_once = new.at.saturating_duration_since(old.at) < RACE;
    if old.dialled_by_us == new.dialled_by_us {
        // One end dialled both. Dialled at once, the two ends may see them established in
        // opposite orders (two circuits through a relay finish their handshakes in either
        // order), so only the end that dialled them decides, by its own order; the other waits
        // for its close.
        return if at_once && !new.dialled_by_us {
            Keep::Both
        } else {
            Keep::New
        };
    }
    if !at_once {
        return Keep::New;
    }
    // Dialled at once, one from each side: the one the smaller peer dialled stays.
    if new.dialled_by_us == we_are_smaller {
        Keep::New
    } else {
        Keep::Old
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a relayed connection to this peer is kept instead (one hole punch at a time)")]
struct Redundant;

/// The behaviour: no protocol, only the decision at establishment.
pub(crate) struct OneRelayed {
    local: PeerId,
    relayed: HashMap<PeerId, Vec<(ConnectionId, Relayed)>>,
    direct: HashMap<PeerId, usize>,
    to_close: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl OneRelayed {
    pub(crate) fn new(local: PeerId) -> Self {
        Self {
            local,
            relayed: HashMap::new(),
            direct: HashMap::new(),
            to_close: VecDeque::new(),
            waker: None,
        }
    }

    fn decide(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        dialled_by_us: bool,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.direct.get(&peer).is_some_and(|n| *n > 0) {
            return Err(ConnectionDenied::new(Redundant));
        }
        let new = Relayed {
            at: Instant::now(),
            dialled_by_us,
        };
        let smaller = self.local < peer;
        let held = self.relayed.entry(peer).or_default();
        if held
            .iter()
            .any(|(_, old)| keep(*old, new, smaller) == Keep::Old)
            || held.len() >= MAX_PER_PEER
        {
            return Err(ConnectionDenied::new(Redundant));
        }
        let to_close = &mut self.to_close;
        held.retain(|(old_id, old)| {
            let close = keep(*old, new, smaller) == Keep::New;
            if close {
                to_close.push_back((peer, *old_id));
            }
            !close
        });
        held.push((id, new));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(dummy::ConnectionHandler)
    }

    fn forget(&mut self, peer: Option<PeerId>, id: ConnectionId) {
        let Some(peer) = peer else {
            return;
        };
        if let Some(held) = self.relayed.get_mut(&peer) {
            held.retain(|(c, _)| *c != id);
            if held.is_empty() {
                self.relayed.remove(&peer);
            }
        }
    }
}

/// True for an address through a relay (`/p2p-circuit`).
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| p == libp2p::multiaddr::Protocol::P2pCircuit)
}

impl NetworkBehaviour for OneRelayed {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_relayed(local_addr) {
            return self.decide(id, peer, false);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_relayed(addr) {
            return self.decide(id, peer, true);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) if !e.endpoint.is_relayed() => {
                *self.direct.entry(e.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                if endpoint.is_relayed() {
                    self.forget(Some(peer_id), connection_id);
                } else if let Some(n) = self.direct.get_mut(&peer_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.direct.remove(&peer_id);
                    }
                }
            }
            // Another behaviour denied a connection this one had accepted.
            FromSwarm::DialFailure(DialFailure {
                peer_id,
                connection_id,
                ..
            }) => self.forget(peer_id, connection_id),
            FromSwarm::ListenFailure(ListenFailure {
                peer_id,
                connection_id,
                ..
            }) => self.forget(peer_id, connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, id)) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64, dialled_by_us: bool) -> Relayed {
        Relayed {
            at: base + Duration::from_millis(ms),
            dialled_by_us,
        }
    }

    /// Both homes' views of the same two connections reach the same answer: exactly one stays
    /// (neither end drops it; the other is dropped by at least one end). A connection:
    /// (dialled by home A, established at A (ms), established at B (ms)); A's peer id is the
    /// smaller.
    #[test]
    fn both_homes_keep_the_same_connection() {
        let t = Instant::now();
        // The connections home A (or B) drops, by index.
        let dropped = |home_a: bool, c: [(bool, u64, u64); 2]| -> Vec<usize> {
            let view = |i: usize| {
                let (by_a, at_a, at_b) = c[i];
                at(t, if home_a { at_a } else { at_b }, by_a == home_a)
            };
            let (old, new) = if view(0).at <= view(1).at {
                (0, 1)
            } else {
                (1, 0)
            };
            match keep(view(old), view(new), home_a) {
                Keep::New => vec![old],
                Keep::Old => vec![new],
                Keep::Both => vec![],
            }
        };
        for c in [
            // Dialled at once, one each way, seen in opposite orders.
            [(true, 0, 20), (false, 10, 5)],
            [(false, 0, 30), (true, 25, 1)],
            // The same order on both sides.
            [(true, 0, 1), (false, 2_000, 2_010)],
            // A dialled both at once (a timer's try and the reservation's, `punch.rs`,
            // `Lost`), established in opposite orders at the two ends: two circuits through
            // the relay finish their handshakes in either order (NAT lab, 2026-12-06: each end
            // kept the newer by its own clock, both were closed, and nothing punched again).
            [(true, 0, 5), (true, 1, 2)],
            [(false, 3, 0), (false, 2, 1)],
            [(true, 0, 0), (true, 1, 1)],
            // A retried a punch; B retried; a dial-back long after.
            [(true, 0, 0), (true, 10_000, 10_001)],
            [(false, 0, 0), (false, 10_000, 9_998)],
            [(false, 0, 3), (true, 8_000, 8_001)],
        ] {
            let mut gone = dropped(true, c);
            gone.extend(dropped(false, c));
            gone.sort_unstable();
            gone.dedup();
            assert_eq!(gone.len(), 1, "{c:?}: dropped {gone:?}");
        }
    }

    #[test]
    fn at_once_the_smaller_peers_dial_stays_and_later_the_newer() {
        let t = Instant::now();
        // We are smaller: our own dial stays whichever arrived first.
        assert_eq!(keep(at(t, 0, true), at(t, 10, false), true), Keep::Old);
        assert_eq!(keep(at(t, 0, false), at(t, 10, true), true), Keep::New);
        // We are larger: the peer's dial stays.
        assert_eq!(keep(at(t, 0, true), at(t, 10, false), false), Keep::New);
        assert_eq!(keep(at(t, 0, false), at(t, 10, true), false), Keep::Old);
        // Long apart: the newer, whoever dialled it (a retried punch, a dial-back).
        assert_eq!(keep(at(t, 0, true), at(t, 3_000, false), true), Keep::New);
        assert_eq!(keep(at(t, 0, false), at(t, 3_000, true), false), Keep::New);
        assert_eq!(keep(at(t, 0, false), at(t, 3_000, false), false), Keep::New);
        // One side dialled both at once: it decides; the other keeps both until it does.
        assert_eq!(keep(at(t, 0, true), at(t, 10, true), false), Keep::New);
        assert_eq!(keep(at(t, 0, false), at(t, 10, false), true), Keep::Both);
    }
}
