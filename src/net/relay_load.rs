//! What a relay server serves, counted from libp2p's relay events for its operator
//! ([`RelayServed`]; sans-IO: the swarm task reports each event, `actor/reach.rs`).
//!
//! libp2p keeps a reservation per connection: a home that came back on a new connection (its
//! router got a new address) holds two until the relay sees the old one close, and each ends
//! with its own event naming only the peer. So reservations are counted per peer, and the old
//! one's end leaves the new one standing (the NAT lab showed 1 reservation for 3 homes when
//! they were a set of peers).

use std::collections::HashMap;

use libp2p::PeerId;

use super::RelayServed;

/// The relay's counts and the reservations each peer holds (one per connection). At most
/// `RelayLimits::max_reservations` entries: libp2p refuses reservations past it.
#[derive(Debug, Default)]
pub(crate) struct RelayLoad {
    reserved: HashMap<PeerId, u32>,
    counts: RelayServed,
}

impl RelayLoad {
    /// A reservation was accepted; `renewed`: on a connection that already held one.
    pub(crate) fn reservation_accepted(&mut self, peer: PeerId, renewed: bool) {
        if !renewed {
            *self.reserved.entry(peer).or_insert(0) += 1;
        }
        self.counts.reservations = self.reserved.len();
    }

    /// One of `peer`'s reservations ended (its connection closed, or it timed out).
    pub(crate) fn reservation_ended(&mut self, peer: &PeerId) {
        if let Some(n) = self.reserved.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.reserved.remove(peer);
            }
        }
        self.counts.reservations = self.reserved.len();
    }

    pub(crate) fn circuit_opened(&mut self) {
        self.counts.circuits = self.counts.circuits.saturating_add(1);
        self.counts.circuits_total = self.counts.circuits_total.saturating_add(1);
    }

    pub(crate) fn circuit_closed(&mut self) {
        self.counts.circuits = self.counts.circuits.saturating_sub(1);
    }

    /// A reservation or circuit was refused.
    pub(crate) fn refused(&mut self) {
        self.counts.refused_total = self.counts.refused_total.saturating_add(1);
    }

    pub(crate) fn counts(&self) -> RelayServed {
        self.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_back_on_a_new_connection_keeps_its_reservation_when_the_old_one_ends() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = RelayLoad::default();
        s.reservation_accepted(a, false);
        s.reservation_accepted(b, false);
        s.reservation_accepted(a, true); // renewed on the same connection
        assert_eq!(s.counts().reservations, 2);
        // a's router got a new address: a reserves on a new connection before the relay sees
        // the old one die.
        s.reservation_accepted(a, false);
        s.reservation_ended(&a);
        assert_eq!(
            s.counts().reservations,
            2,
            "a still holds its new reservation"
        );
        s.reservation_ended(&a);
        s.reservation_ended(&a); // an end never seen accepted changes nothing
        assert_eq!(s.counts().reservations, 1);
        s.circuit_opened();
        s.circuit_opened();
        s.circuit_closed();
        s.refused();
        assert_eq!(
            s.counts(),
            RelayServed {
                reservations: 1,
                circuits: 1,
                circuits_total: 2,
                refused_total: 1
            }
        );
        s.circuit_closed();
        s.circuit_closed();
        assert_eq!(s.counts().circuits, 0, "never below zero");
    }
}
