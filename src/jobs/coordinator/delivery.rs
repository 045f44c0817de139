//! Receipt delivery: the outbox of countersigned receipts not yet stored by their workers,
//! and the one place a claim is countersigned into a receipt.
//!
//! A receipt for another household enters the outbox (`coord/outbox`: receipt id → bytes)
//! before its claim is marked settled, and leaves it only when the worker answers
//! [`Response::ReceiptStored`]; any other answer (an `Error` from a worker whose disk is
//! full, say) or no answer keeps it for the next round. Must not touch: the book's state.

use std::collections::HashSet;

use crate::identity::Identity;
use crate::model::receipt::{Claim, Receipt, ReceiptError};
use crate::model::wire::{Request, Response};
use crate::net::Network;

use crate::jobs::JobError;

/// Receipts sent again per re-announcement round, at most.
pub const MAX_DELIVERIES_PER_ROUND: usize = 256;

/// Countersigns a claim with the submitter's key: the only place a receipt is made.
pub fn countersign(identity: &Identity, claim: Claim) -> Result<Receipt, ReceiptError> {
    claim.countersign(identity)
}

pub struct Outbox {
    tree: sled::Tree,
    /// Deliveries in flight, so a receipt is not sent twice at once. Bounded by the outbox.
    in_flight: HashSet<blake3::Hash>,
}

impl Outbox {
    pub fn open(db: &sled::Db) -> Result<Outbox, JobError> {
        Ok(Outbox {
            tree: db.open_tree("coord/outbox")?,
            in_flight: HashSet::new(),
        })
    }

    /// Keeps a receipt until its worker confirms it. The caller flushes.
    pub fn queue(&self, receipt: &Receipt) -> Result<(), JobError> {
        self.tree
            .insert(receipt.id().as_bytes(), receipt.to_bytes())?;
        Ok(())
    }

    /// Marks a delivery as started; false if one is already in flight.
    pub fn begin(&mut self, id: blake3::Hash) -> bool {
        self.in_flight.insert(id)
    }

    /// A delivery ended: confirmed receipts leave the outbox.
    pub fn done(&mut self, id: &blake3::Hash, stored: bool) -> Result<(), JobError> {
        self.in_flight.remove(id);
        if stored {
            self.tree.remove(id.as_bytes())?;
        }
        Ok(())
    }

    /// Drops a receipt that can never be delivered (its worker key names no peer).
    pub fn drop_undeliverable(&mut self, id: &blake3::Hash) -> Result<(), JobError> {
        self.done(id, true)
    }

    /// Receipts waiting and not in flight, at most `max`. An unreadable entry is an error
    /// naming its key, never skipped in silence.
    pub fn due(&self, max: usize) -> Result<Vec<Receipt>, JobError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let receipt = Receipt::from_bytes(&v).map_err(|e| {
                JobError::Corrupt(format!("receipt {} in the outbox: {e}", hex::encode(&k)))
            })?;
            if !self.in_flight.contains(&receipt.id()) {
                out.push(receipt);
            }
        }
        Ok(out)
    }
}

/// Sends a receipt to its worker. True only when the worker says it stored it.
pub async fn send(net: &Network, peer: libp2p::PeerId, receipt: &Receipt) -> bool {
    match net
        .request(peer, Request::Receipt(receipt.clone()).to_bytes())
        .await
    {
        Ok(answer) => match Response::from_bytes(&answer) {
            Ok(Response::ReceiptStored) => true,
            Ok(Response::Error { detail }) => {
                tracing::warn!(%peer, "worker did not store its receipt: {detail}; will retry");
                false
            }
            Ok(other) => {
                tracing::warn!(%peer, "unexpected answer to a receipt: {other:?}; will retry");
                false
            }
            Err(e) => {
                tracing::warn!(%peer, "unreadable answer to a receipt: {e}; will retry");
                false
            }
        },
        Err(e) => {
            tracing::debug!(%peer, "receipt not delivered yet: {e}");
            false
        }
    }
}
