//! What a relay server serves, counted from libp2p's relay events for its operator
//! ([`RelayServed`]; sans-IO: the swarm task reports each event, `actor/reach.rs`).
//!
//! libp2p keeps a reservation per connection: a home that came back on a new connection (its
//! router got a new address) holds two until the relay sees the old one close, and each ends
//! with its own event naming only the peer. So reservations are counted per peer, and the old
//! one's end leaves the new one standing (the NAT lab showed 1 reservation for 3 homes when
//! they were a set of peers).
//!
//! A refusal is told by why (`RelayRefusals`), so an operator knows which limit to raise.
//! libp2p answers every limit with one status (`ResourceLimitExceeded`: circuits at once,
//! circuits of the source peer, or its rate limiters per source peer and IP), so the limit is
//! told from the relay's own counts when the refusal comes: circuits at `max_circuits`, else
//! the source's circuits past `max_circuits_per_peer` (libp2p refuses above it, counting
//! circuits the peer is either end of), else a rate limit. Counts follow accepted and closed
//! circuits; one still being accepted by its destination is not yet counted, so near a limit
//! a refusal may be put down to the rate limiters that was the circuit limit's.

use std::collections::HashMap;

use libp2p::relay::StatusCode;
use libp2p::PeerId;

use super::{RelayLimits, RelayServed};

/// The relay's counts, the reservations each peer holds (one per connection) and the circuits
/// each peer is an end of. At most `max_reservations` reservation entries (libp2p refuses
/// reservations past it) and two circuit entries per open circuit (at most `max_circuits`).
#[derive(Debug)]
pub(crate) struct RelayLoad {
    max_reservations: usize,
    max_circuits: usize,
    max_circuits_per_peer: usize,
    reserved: HashMap<PeerId, u32>,
    circuits_of: HashMap<PeerId, u32>,
    counts: RelayServed,
}

impl RelayLoad {
    pub(crate) fn new(limits: &RelayLimits) -> Self {
        Self {
            max_reservations: limits.max_reservations,
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            reserved: HashMap::new(),
            circuits_of: HashMap::new(),
            counts: RelayServed::default(),
        }
    }

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

    /// A reservation was refused with `status`.
    pub(crate) fn reservation_refused(&mut self, status: &StatusCode) {
        let r = &mut self.counts.refused;
        match status {
            StatusCode::ResourceLimitExceeded if self.reserved.len() >= self.max_reservations => {
                r.reservations_full += 1
            }
            // Four reservations of one peer at once, or a rate limiter.
            StatusCode::ResourceLimitExceeded => r.rate_limited += 1,
            _ => r.other += 1,
        }
        self.counts.refused_total = r.total();
    }

    pub(crate) fn circuit_opened(&mut self, src: PeerId, dst: PeerId) {
        for p in [src, dst] {
            *self.circuits_of.entry(p).or_insert(0) += 1;
        }
        self.counts.circuits = self.counts.circuits.saturating_add(1);
        self.counts.circuits_total = self.counts.circuits_total.saturating_add(1);
    }

    /// An accepted circuit closed (libp2p reports closing only for accepted ones).
    pub(crate) fn circuit_closed(&mut self, src: &PeerId, dst: &PeerId) {
        for p in [src, dst] {
            if let Some(n) = self.circuits_of.get_mut(p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.circuits_of.remove(p);
                }
            }
        }
        self.counts.circuits = self.counts.circuits.saturating_sub(1);
    }

    /// A circuit `src` asked for was refused with `status`.
    pub(crate) fn circuit_refused(&mut self, src: &PeerId, status: &StatusCode) {
        let of_src = self.circuits_of.get(src).copied().unwrap_or(0) as usize;
        let r = &mut self.counts.refused;
        match status {
            StatusCode::NoReservation => r.no_reservation += 1,
            // The relay's STOP request to the destination failed (`ConnectionFailed`), or the
            // destination answered it with a status other than OK, which libp2p reports as
            // `UnexpectedMessage` (`outbound_stop.rs`, the only place that status is made).
            StatusCode::ConnectionFailed | StatusCode::UnexpectedMessage => {
                r.destination_failed += 1
            }
            StatusCode::ResourceLimitExceeded
                if self.counts.circuits as usize >= self.max_circuits =>
            {
                r.circuits_full += 1
            }
            StatusCode::ResourceLimitExceeded if of_src > self.max_circuits_per_peer => {
                r.peer_circuits_full += 1
            }
            StatusCode::ResourceLimitExceeded => r.rate_limited += 1,
            _ => r.other += 1,
        }
        self.counts.refused_total = r.total();
    }

    pub(crate) fn counts(&self) -> RelayServed {
        self.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::RelayRefusals;

    fn limits(max_reservations: usize, max_circuits: usize, per_peer: usize) -> RelayLimits {
        RelayLimits {
            max_reservations,
            max_circuits,
            max_circuits_per_peer: per_peer,
            ..RelayLimits::default()
        }
    }

    #[test]
    fn a_home_back_on_a_new_connection_keeps_its_reservation_when_the_old_one_ends() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut s = RelayLoad::new(&RelayLimits::default());
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
        s.circuit_opened(a, b);
        s.circuit_opened(b, a);
        s.circuit_closed(&a, &b);
        s.circuit_refused(&a, &StatusCode::NoReservation);
        assert_eq!(
            s.counts(),
            RelayServed {
                reservations: 1,
                circuits: 1,
                circuits_total: 2,
                refused_total: 1,
                refused: RelayRefusals {
                    no_reservation: 1,
                    ..RelayRefusals::default()
                },
            }
        );
        s.circuit_closed(&b, &a);
        s.circuit_closed(&b, &a);
        assert_eq!(s.counts().circuits, 0, "never below zero");
        assert!(
            s.circuits_of.is_empty(),
            "no entry left for closed circuits"
        );
    }

    #[test]
    fn a_refusal_is_put_down_to_the_limit_the_relay_had_reached() {
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let limit = StatusCode::ResourceLimitExceeded;
        // At most 4 circuits at once, 2 per peer (libp2p refuses a peer above 2).
        let mut s = RelayLoad::new(&limits(2, 4, 2));
        s.circuit_refused(&a, &limit);
        assert_eq!(s.counts().refused.rate_limited, 1, "no limit reached yet");
        s.circuit_opened(a, b);
        s.circuit_opened(c, a);
        s.circuit_refused(&a, &limit);
        assert_eq!(
            s.counts().refused.rate_limited,
            2,
            "a at 2 circuits, not above"
        );
        s.circuit_opened(a, d);
        s.circuit_refused(&a, &limit);
        assert_eq!(s.counts().refused.peer_circuits_full, 1, "a an end of 3");
        s.circuit_refused(&b, &limit);
        assert_eq!(s.counts().refused.rate_limited, 3, "b is an end of 1");
        s.circuit_opened(c, d);
        s.circuit_refused(&b, &limit);
        assert_eq!(s.counts().refused.circuits_full, 1, "4 circuits open");
        s.circuit_closed(&a, &d);
        s.circuit_refused(&a, &limit);
        assert_eq!(
            s.counts().refused.rate_limited,
            4,
            "a back at 2 of 3 circuits"
        );
        s.circuit_refused(&a, &StatusCode::MalformedMessage);
        assert_eq!(s.counts().refused.other, 1);
        s.circuit_refused(&a, &StatusCode::ConnectionFailed);
        s.circuit_refused(&a, &StatusCode::UnexpectedMessage);
        assert_eq!(s.counts().refused.destination_failed, 2);

        s.reservation_refused(&limit);
        assert_eq!(s.counts().refused.rate_limited, 5, "no reservation held");
        s.reservation_accepted(a, false);
        s.reservation_accepted(b, false);
        s.reservation_refused(&limit);
        assert_eq!(s.counts().refused.reservations_full, 1);
        s.reservation_refused(&StatusCode::PermissionDenied);
        let r = s.counts();
        assert_eq!(r.refused.other, 2);
        assert_eq!(r.refused_total, 12);
        assert_eq!(r.refused_total, r.refused.total());
    }
}
