//! Commitments handed to auditors by the radiators that were shown them (`docs/protocol.md`
//! §6.2, "Witnesses"), both sides: a radiator hands each commitment its receipts come in to its
//! bootstrap nodes, and an auditor admits them, within each peer's share.
//!
//! A coordinator could show each radiator its own commitment under a number and publish
//! another, or none, to the auditors. So each commitment a radiator's receipts come in is
//! handed to every connected bootstrap node once (`Request::Witness`); an auditor logs it like
//! a gossiped one (the router does, `node::router`) and, if it holds another body under that
//! number, publishes the proof. An auditor admits [`WITNESS_BURST`] witnessed commitments from
//! one peer at once, then one per [`WITNESS_REFILL`].

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::revoked::Admission;
use super::tasks::Tasks;
use crate::model::commit::Commitment;
use crate::model::wire::{Request, Response};
use crate::net::Network;

/// Witnessed commitments an auditor takes from one peer at once, then one per
/// [`WITNESS_REFILL`]: a radiator sees at most one new commitment per coordinator per round
/// (5 s) and works for a few coordinators at a time; a peer handing over commitments of fresh
/// keys by the thousand (each costs a signature check and a place in the log) is held to it.
pub const WITNESS_BURST: u32 = 64;
pub const WITNESS_REFILL: Duration = Duration::from_secs(1);

/// Commitment ids a radiator remembers having witnessed (32 bytes each): a commitment of up
/// to 65 536 receipts arrives with each of its receipts, and is handed on once.
const WITNESSED_KEPT: usize = 1024;

/// Cheap, cloneable handle: the router hands it commitments and asks it to admit them.
#[derive(Clone)]
pub struct Witnesses {
    inner: Arc<Inner>,
}

struct Inner {
    net: Network,
    /// The bootstrap nodes (this node left out).
    bootstrap: HashSet<PeerId>,
    /// Commitments handed on already (ids, oldest first), at most [`WITNESSED_KEPT`].
    witnessed: Mutex<(HashSet<blake3::Hash>, VecDeque<blake3::Hash>)>,
    /// On an auditor: how many witnessed commitments each peer may hand over.
    admission: Mutex<Admission>,
    /// On an auditor: witnessed commitments taken and refused since the node started.
    taken: AtomicU64,
    refused: AtomicU64,
    /// Hand-overs in flight: aborted when the node stops.
    tasks: Tasks,
}

impl Witnesses {
    pub(super) fn new(bootstrap: HashSet<PeerId>, net: Network) -> Witnesses {
        Witnesses {
            inner: Arc::new(Inner {
                net,
                bootstrap,
                witnessed: Mutex::new((HashSet::new(), VecDeque::new())),
                admission: Mutex::new(Admission::new(WITNESS_BURST, WITNESS_REFILL)),
                taken: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                tasks: Tasks::default(),
            }),
        }
    }

    /// A receipt of this radiator came in `c` (checked and stored): hands `c` to every
    /// connected bootstrap node, once per commitment. Best effort: a commitment no bootstrap
    /// node could be reached for is handed on when the next receipt in it arrives; its
    /// coordinator's gossip is the first way to the auditors.
    pub(super) fn witness(&self, c: &Commitment) {
        if self.inner.bootstrap.is_empty() {
            return;
        }
        let id = c.id();
        let fresh = self.inner.witnessed.lock().is_ok_and(|mut w| {
            let (ids, order) = &mut *w;
            if !ids.insert(id) {
                return false;
            }
            order.push_back(id);
            if order.len() > WITNESSED_KEPT {
                if let Some(old) = order.pop_front() {
                    ids.remove(&old);
                }
            }
            true
        });
        if !fresh {
            return;
        }
        let me = self.clone();
        let request = Request::Witness(Box::new(c.clone())).to_bytes();
        self.inner.tasks.spawn(async move {
            // Handed on once some bootstrap node answered, whatever it said (one that keeps no
            // log, or an older one, answers Error and would answer it again).
            let mut answered = false;
            for peer in &me.inner.bootstrap {
                let net = &me.inner.net;
                match net.request_if_connected(*peer, request.clone()).await {
                    Ok(bytes) => {
                        answered = true;
                        if !matches!(Response::from_bytes(&bytes), Ok(Response::Noted)) {
                            tracing::debug!(%peer, "a witnessed commitment was not taken");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, "could not hand on a commitment: {e}"),
                }
            }
            if !answered {
                if let Ok(mut w) = me.inner.witnessed.lock() {
                    w.0.remove(&id);
                }
            }
        });
    }

    /// On an auditor: whether `peer` may hand over one more witnessed commitment now.
    pub(super) fn admit(&self, peer: PeerId) -> bool {
        self.inner
            .admission
            .lock()
            .is_ok_and(|mut a| a.admit(peer, Instant::now()))
    }

    /// On an auditor: counts a witnessed commitment taken (`true`) or refused.
    pub(super) fn count(&self, taken: bool) {
        let counter = match taken {
            true => &self.inner.taken,
            false => &self.inner.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// On an auditor: witnessed commitments taken and refused since the node started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.taken.load(Ordering::Relaxed),
            self.inner.refused.load(Ordering::Relaxed),
        )
    }

    /// Aborts the hand-overs in flight: the node is stopping.
    pub(super) fn stop(&self) {
        self.inner.tasks.stop();
    }
}
