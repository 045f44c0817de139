//! Who asks for each outbound connection (issue 14): a wrapper behaviour that counts the
//! `ToSwarm::Dial`s of the behaviour it wraps, and the swarm task's own dials, by origin.
//!
//! libp2p's `SwarmEvent::Dialing` and `ConnectionEstablished` say which connection was
//! dialled, not which behaviour asked for it. The scale experiment found radiators holding
//! connections to ~45 of 49 peers after pruning them to 12; these counters are how the
//! re-dialler was found (`docs/scale.md`, "Who re-dials pruned peers"), and the bench and
//! tests read them from [`super::NetStatus::dials`] to keep it found.
//!
//! Bounded: the connection ids awaiting an outcome are at most [`MAX_TRACKED`] (beyond it the
//! dial is still counted, its outcome is not attributed). Must not touch: what is dialled —
//! it only observes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::swarm::{ConnectionId, NetworkBehaviour, THandlerInEvent, ToSwarm};
use serde::{Deserialize, Serialize};

use super::wrapped::{Hook, Wrapped};

/// Dials awaiting their outcome whose origin is remembered.
pub(crate) const MAX_TRACKED: usize = 1024;

/// Who asked for a dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialOrigin {
    /// Kademlia: lookups (bootstrap, refresh, providers, announcements).
    Kad,
    /// Gossipsub (explicit peers, peer exchange).
    Gossipsub,
    /// A control request to a peer we were not connected to.
    Control,
    /// A blob request to a peer we were not connected to.
    Blob,
    /// The relay client (reservations, circuits).
    RelayClient,
    /// DCUtR hole punching.
    Dcutr,
    /// The swarm task opening a fresh relayed connection to try a failed hole punch again
    /// (`punch.rs`).
    PunchRetry,
    /// The AutoNAT v2 server dialling a peer's address candidate back.
    AutonatServer,
    /// The AutoNAT client's fresh connection to a tester its new client does not know
    /// (`autonat.rs`).
    AutonatClient,
    /// The swarm task redialling its bootstrap peers.
    Bootstrap,
    /// The swarm task dialling a peer mDNS found.
    Mdns,
    /// [`super::Network::dial`] (the node layer, `direct.rs`).
    Command,
    /// The swarm task dialling coordinators a work lookup found (`work.rs`).
    Work,
}

impl DialOrigin {
    /// Every origin, in the order [`DialCounts`] lists them.
    pub const ALL: [DialOrigin; 13] = [
        DialOrigin::Kad,
        DialOrigin::Gossipsub,
        DialOrigin::Control,
        DialOrigin::Blob,
        DialOrigin::RelayClient,
        DialOrigin::Dcutr,
        DialOrigin::PunchRetry,
        DialOrigin::AutonatServer,
        DialOrigin::AutonatClient,
        DialOrigin::Bootstrap,
        DialOrigin::Mdns,
        DialOrigin::Command,
        DialOrigin::Work,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DialOrigin::Kad => "kad",
            DialOrigin::Gossipsub => "gossipsub",
            DialOrigin::Control => "control",
            DialOrigin::Blob => "blob",
            DialOrigin::RelayClient => "relay_client",
            DialOrigin::Dcutr => "dcutr",
            DialOrigin::PunchRetry => "punch_retry",
            DialOrigin::AutonatServer => "autonat_server",
            DialOrigin::AutonatClient => "autonat_client",
            DialOrigin::Bootstrap => "bootstrap",
            DialOrigin::Mdns => "mdns",
            DialOrigin::Command => "command",
            DialOrigin::Work => "work",
        }
    }

    fn index(self) -> usize {
        DialOrigin::ALL
            .iter()
            .position(|o| *o == self)
            .unwrap_or_default()
    }
}

/// Dials since start by origin, and what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialCounts {
    /// `(origin, dials asked for, outbound connections they established)`, one entry per
    /// [`DialOrigin::ALL`].
    pub by_origin: Vec<(DialOrigin, u64, u64)>,
    /// Outbound connections whose dial's origin was not recorded (over [`MAX_TRACKED`]).
    pub outbound_unattributed: u64,
    /// Inbound connections established since start.
    pub inbound: u64,
}

impl DialCounts {
    /// Dials asked for by `origin`.
    pub fn dials(&self, origin: DialOrigin) -> u64 {
        self.by_origin
            .iter()
            .find(|(o, ..)| *o == origin)
            .map_or(0, |e| e.1)
    }

    /// Outbound connections established by dials of `origin`.
    pub fn established(&self, origin: DialOrigin) -> u64 {
        self.by_origin
            .iter()
            .find(|(o, ..)| *o == origin)
            .map_or(0, |e| e.2)
    }
}

#[derive(Default)]
struct Inner {
    dials: [u64; DialOrigin::ALL.len()],
    established: [u64; DialOrigin::ALL.len()],
    unattributed: u64,
    inbound: u64,
    pending: HashMap<ConnectionId, DialOrigin>,
}

/// The shared dial log: written by every [`Counted`] behaviour and the swarm task, read for
/// [`super::NetStatus`]. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct DialLog(Arc<Mutex<Inner>>);

impl DialLog {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding this lock can only come from this module's arithmetic-free
        // bookkeeping; recover the data rather than poison the swarm task.
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// A dial was asked for.
    pub(crate) fn dialled(&self, origin: DialOrigin, id: ConnectionId) {
        tracing::trace!(origin = origin.name(), ?id, "dial");
        self.with(|i| {
            i.dials[origin.index()] = i.dials[origin.index()].saturating_add(1);
            if i.pending.len() < MAX_TRACKED {
                i.pending.insert(id, origin);
            }
        });
    }

    /// A connection was established (`dialer`: we dialled it).
    pub(crate) fn established(&self, id: ConnectionId, dialer: bool) -> Option<DialOrigin> {
        self.with(|i| {
            let origin = i.pending.remove(&id);
            if !dialer {
                i.inbound = i.inbound.saturating_add(1);
            } else if let Some(o) = origin {
                i.established[o.index()] = i.established[o.index()].saturating_add(1);
            } else {
                i.unattributed = i.unattributed.saturating_add(1);
            }
            origin
        })
    }

    /// A dial failed.
    pub(crate) fn failed(&self, id: ConnectionId) {
        self.with(|i| i.pending.remove(&id));
    }

    pub(crate) fn counts(&self) -> DialCounts {
        self.with(|i| DialCounts {
            by_origin: DialOrigin::ALL
                .iter()
                .map(|o| (*o, i.dials[o.index()], i.established[o.index()]))
                .collect(),
            outbound_unattributed: i.unattributed,
            inbound: i.inbound,
        })
    }
}

/// A behaviour whose dials are logged as `origin` (`wrapped.rs`); otherwise it is `B` (and
/// derefs to it).
pub(crate) type Counted<B> = Wrapped<B, DialHook>;

/// The hook of [`Counted`]: logs every dial its behaviour asks for.
pub(crate) struct DialHook {
    origin: DialOrigin,
    log: DialLog,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, origin: DialOrigin, log: &DialLog) -> Self {
        Wrapped {
            inner,
            hook: DialHook {
                origin,
                log: log.clone(),
            },
        }
    }
}

impl<B: NetworkBehaviour> Hook<B> for DialHook {
    fn pass(&mut self, ev: &ToSwarm<B::ToSwarm, THandlerInEvent<B>>) -> bool {
        if let ToSwarm::Dial { opts } = ev {
            self.log.dialled(self.origin, opts.connection_id());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dials_and_their_outcomes_are_counted_by_origin() {
        let log = DialLog::default();
        let (a, b, c) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        log.dialled(DialOrigin::Kad, a);
        log.dialled(DialOrigin::Kad, b);
        log.dialled(DialOrigin::Control, c);
        assert_eq!(log.established(a, true), Some(DialOrigin::Kad));
        log.failed(b);
        assert_eq!(log.established(c, true), Some(DialOrigin::Control));
        assert_eq!(log.established(ConnectionId::new_unchecked(9), false), None);
        assert_eq!(log.established(ConnectionId::new_unchecked(8), true), None);
        let n = log.counts();
        assert_eq!(
            (n.dials(DialOrigin::Kad), n.established(DialOrigin::Kad)),
            (2, 1)
        );
        assert_eq!(n.established(DialOrigin::Control), 1);
        assert_eq!((n.inbound, n.outbound_unattributed), (1, 1));
        assert_eq!(n.by_origin.len(), DialOrigin::ALL.len());
    }
}
