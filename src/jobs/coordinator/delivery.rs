//! Receipt delivery: the outbox of countersigned receipts not yet stored by their workers,
//! and the one place a claim is countersigned into a receipt.
//!
//! A receipt for another household enters the outbox (`coord/outbox`: receipt id → empty;
//! the receipt itself is read from the ledger, which holds it already; entries written
//! before that hold the receipt's bytes and are read as they are) before its claim is
//! marked settled, is sent once the ledger has sealed it into a
//! commitment (with its inclusion proof; receipts are not gossiped), and leaves it only when
//! the worker answers
//! [`Response::ReceiptStored`]; any other answer (an `Error` from a worker whose disk is
//! full, say) or no answer keeps it for the next round. Must not touch: the book's state.

use std::collections::HashSet;

use crate::identity::Identity;
use crate::ledger::{Ledger, LedgerError};
use crate::model::commit::Inclusion;
use crate::model::receipt::{Claim, CreditTerms, Receipt, ReceiptError};
use crate::model::wire::{Request, Response};
use crate::net::Network;

use crate::jobs::JobError;

/// Receipts sent again per re-announcement round, at most.
pub const MAX_DELIVERIES_PER_ROUND: usize = 256;

/// Countersigns a claim with the submitter's key: the only place a receipt is made.
pub fn countersign(
    identity: &Identity,
    claim: Claim,
    terms: CreditTerms,
) -> Result<Receipt, ReceiptError> {
    claim.countersign(identity, terms)
}

/// Countersigns the winners of a verified shard and keeps each receipt: in this node's
/// ledger (pending its commitment) and, for other households, in the outbox until the
/// worker confirms, so a worker that was offline or cut off when its shard was verified
/// still gets its receipt. Returns the claim indices whose receipts are kept; a claim whose
/// countersignature or recording failed is left out, so it stays unsettled and is tried
/// again next round. Unflushed: the caller's write of the settled claims, flushed with the
/// group, makes them durable (and sealing flushes them before any receipt is delivered).
///
/// The CPU part of settling (one signature per winner, and the ledger's write of all the
/// shard's receipts in one kv batch): the actor runs it on a blocking thread.
pub fn countersign_all(
    identity: &Identity,
    ledger: &Ledger,
    outbox: &OutboxWriter,
    job: &blake3::Hash,
    shard: u32,
    winners: &[(u32, Claim, CreditTerms)],
) -> Vec<u32> {
    let mut made = Vec::with_capacity(winners.len());
    for (i, claim, terms) in winners {
        if terms.credited_mj < claim.record.energy_mj {
            // Routine, not a fault: replicas of a shard of a few milliseconds differ by more
            // than the meters' resolution (the demo caps one or two of its 96 every run), and
            // an inflated claim is handled the same way. So not a warning a household would
            // read as something to act on (it was, in the first command of the README).
            tracing::info!(job = %job, shard, household = %claim.record.worker,
                claimed_mj = claim.record.energy_mj, credited_mj = terms.credited_mj,
                "claimed energy above the replicas' reference; credit capped");
        }
        match countersign(identity, claim.clone(), *terms) {
            Ok(r) => made.push((*i, r)),
            Err(e) => {
                tracing::error!(job = %job, shard, "cannot countersign a claim: {e}; it stays pending");
            }
        }
    }
    // The shard's receipts in one ledger batch: their claims' signatures were checked when
    // they arrived and this node just made the countersignatures (`insert_countersigned`).
    let receipts: Vec<&Receipt> = made.iter().map(|(_, r)| r).collect();
    let recorded = match ledger.insert_countersigned_all(&receipts) {
        Ok(results) => results,
        Err(e) => {
            tracing::error!(job = %job, shard, "cannot record the shard's receipts: {e}; they stay pending");
            return Vec::new();
        }
    };
    let mut signed = Vec::new();
    for ((i, receipt), result) in made.iter().zip(recorded) {
        let kept = match result {
            Ok(_) | Err(LedgerError::Replay { .. }) => {
                if receipt.record.worker != identity.public() {
                    outbox.queue(receipt)
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(JobError::Ledger(e)),
        };
        match kept {
            Ok(()) => signed.push(*i),
            Err(e) => {
                tracing::error!(job = %job, shard, "cannot record a receipt: {e}; it stays pending")
            }
        }
    }
    signed
}

/// The outbox's writing half, for the countersigning thread.
#[derive(Clone)]
pub struct OutboxWriter {
    tree: sled::Tree,
}

impl OutboxWriter {
    /// Keeps a receipt until its worker confirms it: its id only, the ledger holds the
    /// receipt (the caller recorded it there first). The caller flushes.
    pub fn queue(&self, receipt: &Receipt) -> Result<(), JobError> {
        self.tree.insert(receipt.id().as_bytes(), &[])?;
        Ok(())
    }
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

    /// Receipts waiting for their workers' confirmation.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// The half that queues receipts ([`OutboxWriter::queue`]).
    pub fn writer(&self) -> OutboxWriter {
        OutboxWriter {
            tree: self.tree.clone(),
        }
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

    /// Receipts waiting and not in flight, at most `max`, read from `ledger` (or, for an
    /// entry written before outbox entries held ids only, from the entry). An unreadable
    /// entry, or one whose receipt the ledger lacks, is an error naming its key, never
    /// skipped in silence.
    pub fn due(&self, max: usize, ledger: &Ledger) -> Result<Vec<Receipt>, JobError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let corrupt = |e: String| {
                JobError::Corrupt(format!("receipt {} in the outbox: {e}", hex::encode(&k)))
            };
            let id: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("the key is not a receipt id".into()))?;
            let id = blake3::Hash::from_bytes(id);
            if self.in_flight.contains(&id) {
                continue;
            }
            let receipt = if v.is_empty() {
                ledger
                    .get(&id)
                    .map_err(|e| corrupt(e.to_string()))?
                    .ok_or_else(|| corrupt("the ledger does not hold it".into()))?
            } else {
                Receipt::from_bytes(&v).map_err(|e| corrupt(e.to_string()))?
            };
            out.push(receipt);
        }
        Ok(out)
    }
}

/// Sends a receipt and its inclusion proof to its worker. True only when the worker says it
/// stored it.
pub async fn send(
    net: &Network,
    peer: libp2p::PeerId,
    receipt: &Receipt,
    inclusion: &Inclusion,
) -> bool {
    let request = Request::Receipt {
        receipt: Box::new(receipt.clone()),
        inclusion: inclusion.clone(),
    };
    match net.request(peer, request.to_bytes()).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::receipt::{EnergyMethod, WorkRecord};
    use crate::net::{NetConfig, NetEvent};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn receipt(submitter: &Identity, worker: &Identity) -> Receipt {
        let record = WorkRecord {
            job: blake3::hash(b"job"),
            shard: 0,
            module: blake3::hash(b"m"),
            input: blake3::hash(b"i"),
            output: blake3::hash(b"o"),
            worker: worker.public(),
            submitter: submitter.public(),
            fuel: 1,
            energy_mj: 1,
            method: EnergyMethod::CpuEstimate,
            start_ms: 1,
            end_ms: 2,
            nonce: [0; 16],
        };
        let terms = CreditTerms::claimed(&record, 2, 2);
        countersign(submitter, Claim::sign(record, worker).unwrap(), terms).unwrap()
    }

    /// A receipt leaves the outbox only when its worker answers `ReceiptStored`; an `Error`
    /// answer (a worker whose disk is full, say) keeps it for the next round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receipt_is_delivered_only_when_the_worker_stored_it() {
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            let submitter = Identity::from_seed([1; 32]);
            let worker = Identity::from_seed([2; 32]);
            let dir = tempfile::tempdir().unwrap();
            let db = crate::node::test_db(dir.path().join("db")).unwrap();
            let store = crate::store::Store::with_db(&db).unwrap();
            let (a, _a_events, _a_task) = crate::net::spawn(
                NetConfig::loopback(submitter.libp2p_keypair()),
                store.clone(),
            )
            .await
            .unwrap();
            let (b, mut b_events, _b_task) =
                crate::net::spawn(NetConfig::loopback(worker.libp2p_keypair()), store)
                    .await
                    .unwrap();
            // The worker answers Error (disk full) until told to store.
            let stores = Arc::new(AtomicBool::new(false));
            let s = stores.clone();
            tokio::spawn(async move {
                while let Some(ev) = b_events.recv().await {
                    if let NetEvent::ControlRequest { reply, .. } = ev {
                        let answer = if s.load(Ordering::SeqCst) {
                            Response::ReceiptStored
                        } else {
                            Response::Error {
                                detail: "no space left on device".into(),
                            }
                        };
                        let _ = reply.send(answer.to_bytes());
                    }
                }
            });
            let addr = loop {
                if let Some(addr) = b.status().await.unwrap().listen_addrs.first() {
                    break addr.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            a.dial(addr).await.unwrap();
            while !a
                .peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.peer_id == b.local_peer_id())
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }

            let r = receipt(&submitter, &worker);
            let id = r.id();
            let (c, proofs) =
                crate::model::commit::Commitment::seal(&submitter, 0, &[id], 2, 2).unwrap();
            let (_, index, path) = proofs.proofs().next().unwrap();
            let inc = Inclusion {
                commitment: c,
                index,
                path,
            };
            let ledger = Ledger::open(&db, submitter.public()).unwrap();
            ledger.insert_countersigned(&r).unwrap();
            let mut outbox = Outbox::open(&db).unwrap();
            outbox.writer().queue(&r).unwrap();
            assert!(outbox.begin(id));
            assert!(!outbox.begin(id), "one delivery in flight at a time");
            let peer = worker.peer_id();
            let stored = send(&a, peer, &r, &inc).await;
            assert!(!stored, "an Error answer counted as delivered");
            outbox.done(&id, stored).unwrap();
            assert_eq!(
                outbox.due(10, &ledger).unwrap(),
                vec![r.clone()],
                "kept for the next round"
            );
            stores.store(true, Ordering::SeqCst);
            assert!(outbox.begin(id));
            let stored = send(&a, peer, &r, &inc).await;
            assert!(stored);
            outbox.done(&id, stored).unwrap();
            assert!(outbox.due(10, &ledger).unwrap().is_empty());
            a.shutdown().await;
            b.shutdown().await;
        })
        .await
        .expect("test timed out");
    }
}
