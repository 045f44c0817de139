//! The node's router: gives each network event to the service it is for (gossip verdicts,
//! control requests, job announcements), and applies what only it sees: revoked keys, the
//! auditor's log. Split from `node.rs`, which wires the services together.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::auditors::Auditors;
use super::offers::Offers;
use super::refusals::Refusals;
use super::witness::Witnesses;
use crate::identity::PublicKey;
use crate::integrity::ReceiptsGate;
use crate::jobs::{CoordinatorHandle, WorkerEvent};
use crate::ledger::{Ledger, LedgerError};
use crate::model::commit::Commitment;
use crate::model::wire::{JobGossip, Request, Response};
use crate::model::JobManifest;
use crate::net::{NetEvent, Network, Topic, Verdict};

/// Gives each network event to the service it is for.
pub(super) struct Router {
    pub(super) ledger: Ledger,
    pub(super) net: Network,
    pub(super) coordinator: CoordinatorHandle,
    pub(super) worker: mpsc::Sender<WorkerEvent>,
    pub(super) own: PublicKey,
    pub(super) local_peer: libp2p::PeerId,
    /// Coordinators that announced work to this node, for its heat demand.
    pub(super) offers: Offers,
    /// Judges fraud evidence.
    pub(super) trust: crate::jobs::trust::service::TrustHandle,
    /// Bounds the `Receipts` answers read at once.
    pub(super) receipts_gate: ReceiptsGate,
    /// The auditor's log of commitments (bootstrap nodes).
    pub(super) audit: Option<crate::audit::AuditLog>,
    /// Households' key events heard, and the keys they retire (`node::key_log`).
    pub(super) key_book: super::key_log::KeyBook,
    /// Keys revoked by their households or caught equivocating: their announcements are
    /// refused.
    pub(super) refusals: Refusals,
    /// What this node asks of and tells its bootstrap nodes (the auditors it knows): how
    /// far its key's numbering went, the commitments its receipts came in.
    pub(super) auditors: Auditors,
    /// The commitments this node's receipts came in, handed to its bootstrap nodes; on an
    /// auditor, those radiators hand it (`node::witness`).
    pub(super) witnesses: Witnesses,
}

impl Router {
    pub(super) async fn route(&self, ev: NetEvent, requests: &mut JoinSet<()>) {
        match ev {
            NetEvent::Gossip {
                topic,
                id,
                source,
                propagation_source,
                data,
            } => {
                let verdict = self.gossip(topic, source, propagation_source, data).await;
                self.net
                    .report_validation(id, propagation_source, verdict)
                    .await;
            }
            NetEvent::ControlRequest { peer, data, reply } => {
                match Request::from_bytes(&data) {
                    // Announcements are for the worker: answered here, in order, at once.
                    Ok(Request::Announce(msg)) => {
                        let _ = reply.send(self.announcement(msg, peer).to_bytes());
                        return;
                    }
                    // Pages of proofs and of key events, read off the async threads.
                    Ok(Request::Refusals { after }) => {
                        let refusals = self.refusals.clone();
                        read_off_thread(requests, reply, "refusal proofs", move || {
                            refusals.answer(after.as_ref())
                        });
                        return;
                    }
                    Ok(Request::KeyEvents { after }) => {
                        let book = self.key_book.clone();
                        read_off_thread(requests, reply, "key events", move || {
                            super::key_log::answer(&book, after.as_ref())
                        });
                        return;
                    }
                    // A commitment a radiator's receipts came in: logged like a gossiped one.
                    Ok(Request::Witness(c)) => {
                        let _ = reply.send(self.witness(peer, &c).to_bytes());
                        return;
                    }
                    // The asker's instance asks for its key's lease (`node::instances`).
                    Ok(Request::Instance { id, leaving }) => {
                        let answer = match self.audit {
                            Some(_) => self.auditors.lease(peer, id, leaving),
                            None => Response::Error {
                                detail: "this node keeps no leases (not a bootstrap node)".into(),
                            },
                        };
                        let _ = reply.send(answer.to_bytes());
                        return;
                    }
                    // The last commitment this auditor logged of the asker's key.
                    Ok(Request::LastCommitment) => {
                        let audit = self.audit.clone();
                        requests.spawn(async move {
                            let answer = tokio::task::spawn_blocking(move || {
                                Auditors::last_commitment(audit.as_ref(), &peer)
                            })
                            .await
                            .unwrap_or_else(|e| Response::Error {
                                detail: format!("the audit log could not be read: {e}"),
                            });
                            let _ = reply.send(answer.to_bytes());
                        });
                        return;
                    }
                    _ => {}
                }
                let coordinator = self.coordinator.clone();
                let ledger = self.ledger.clone();
                let gate = self.receipts_gate.clone();
                let own = self.own;
                // Each request is served on its own task so a slow one (a claim whose state is
                // being flushed) does not hold up the others; the network layer bounds how many
                // inbound requests are open at once.
                let trust = self.trust.view.clone();
                let refusals = self.refusals.clone();
                let witnesses = self.witnesses.clone();
                requests.spawn(async move {
                    let services = Services {
                        coordinator: &coordinator,
                        ledger: &ledger,
                        receipts_gate: &gate,
                        trust: &trust,
                        refusals: &refusals,
                        witnesses: &witnesses,
                    };
                    let response = control(services, own, peer, &data).await;
                    let _ = reply.send(response.to_bytes());
                });
            }
            // A newly connected peer may hold fraud evidence gossiped before this node could
            // hear it: the trust service asks it (bounded, `jobs::trust::service`).
            NetEvent::PeerConnected(peer) => {
                self.trust.peer_connected(peer);
                // A bootstrap node is asked how far this key's numbering went (once).
                self.auditors.peer_connected(peer);
            }
            // It may also hold proofs against keys (revocations, equivocations) gossiped before
            // this node could hear them (`node::refusals`).
            NetEvent::PeerSettled(peer) => {
                self.trust.peer_settled(peer);
                self.refusals.peer_settled(peer);
            }
            NetEvent::PeerDisconnected(_) => {}
        }
    }

    /// Tells the worker of a job announcement, a peer's or this node's own. A refused
    /// coordinator's job is dropped by the worker before any lease (`Worker::refusing`).
    pub(super) fn job_gossip(&self, msg: JobGossip, source: libp2p::PeerId) {
        let event = match msg {
            JobGossip::Announce { job, .. } => WorkerEvent::Announced {
                job,
                coordinator: source,
            },
            JobGossip::Closed { job, .. } => WorkerEvent::Closed { job, from: source },
        };
        // A full queue means the worker is busy; announcements repeat every few seconds.
        if self.worker.try_send(event).is_err() {
            tracing::debug!(%source, "worker busy; job announcement dropped");
        }
    }

    /// A job announcement from the coordinator `source`: checked (an inline manifest must be
    /// the job's and the sender's own), remembered for heat demand, given to the worker.
    fn announcement(&self, msg: JobGossip, source: libp2p::PeerId) -> Response {
        if matches!(msg, JobGossip::Announce { .. }) {
            if let Some(why) = self.refused(&source) {
                return Response::Error {
                    detail: format!("{why}: this radiator takes no work from this key"),
                };
            }
        }
        match &msg {
            JobGossip::Announce {
                job,
                manifest: Some(bytes),
                ..
            } => {
                let Ok(m) = JobManifest::from_bytes(bytes) else {
                    return Response::Error {
                        detail: "the announced manifest does not decode".into(),
                    };
                };
                if m.id() != *job || m.submitter.peer_id() != source {
                    return Response::Error {
                        detail: "the announced manifest is not that job's or not yours".into(),
                    };
                }
                self.offers.heard(source, Instant::now());
            }
            JobGossip::Announce { .. } => self.offers.heard(source, Instant::now()),
            JobGossip::Closed { .. } => self.offers.closed(&source),
        }
        self.job_gossip(msg, source);
        Response::Noted
    }

    /// Logs a checked commitment in the auditor's log. An equivocation is forwarded all the
    /// same (every auditor should see the proof), said loudly, and its proof gossiped to
    /// every node, which takes no more work from the key; a failed write is logged and costs
    /// the commitment its first-seen time here, nothing else.
    fn audit_heard(&self, c: &Commitment) {
        let Some(audit) = &self.audit else { return };
        match audit.hear(c, crate::model::now_ms()) {
            Ok(crate::audit::Heard::Equivocation { first }) => {
                tracing::warn!(
                    coordinator = %c.coordinator.to_hex(),
                    seq = c.seq,
                    first = %first.id().to_hex(),
                    second = %c.id().to_hex(),
                    "equivocation: the coordinator signed two different commitments with one \
                     number (kept as proof; `hearth audit KEY`; proof gossiped)"
                );
                self.refusals.equivocation_found(*first, c.clone());
            }
            Ok(crate::audit::Heard::Full) => tracing::debug!(
                coordinator = %c.coordinator.to_hex(),
                "audit log full; commitment counted, not kept"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("audit log: {e}"),
        }
    }

    /// A radiator hands this auditor a commitment its receipts came in (`node::witness`):
    /// checked and logged as if its coordinator had gossiped it, within the peer's share.
    fn witness(&self, peer: libp2p::PeerId, c: &Commitment) -> Response {
        let refuse = |detail: &str| Response::Error {
            detail: detail.into(),
        };
        if self.audit.is_none() {
            return refuse("this node keeps no audit log");
        }
        let why = if !self.witnesses.admit(peer) {
            "too many commitments from this peer; hand them on later"
        } else if c.verify().is_err() {
            "the commitment does not verify under its coordinator's key"
        } else {
            self.witnesses.count(true);
            self.audit_heard(c);
            return Response::Noted;
        };
        self.witnesses.count(false);
        refuse(why)
    }

    /// Why this node takes no work from the key behind `peer`, if it takes none.
    fn refused(&self, peer: &libp2p::PeerId) -> Option<&'static str> {
        let reasons = self
            .refusals
            .keys()
            .reasons(&PublicKey::from_peer_id(peer)?)?;
        Some(if reasons.revoked {
            "your household revoked this key, so no receipt it countersigns counts"
        } else {
            "this key signed two different commitments under one number, so verifiers count \
             neither"
        })
    }

    async fn gossip(
        &self,
        topic: Topic,
        source: Option<libp2p::PeerId>,
        via: libp2p::PeerId,
        data: Vec<u8>,
    ) -> Verdict {
        let Some(source) = source else {
            // Hearth gossip is always signed; an anonymous message is someone else's traffic.
            return Verdict::Reject;
        };
        match topic {
            // Evidence also carries revocation statements (docs/receipts.md, "Revoking a
            // key") and equivocation proofs, told apart by their magic, so every node hears
            // them, auditors and radiators alike (`node::refusals`).
            Topic::Evidence if data.starts_with(b"HREV") || data.starts_with(b"HEQV") => {
                self.refusals.gossip(&data, source, via)
            }
            // And households' key events (docs/receipts.md, "Rotating a key"), which auditors
            // log (`node::key_log`).
            Topic::Evidence if data.starts_with(b"HKEY") => {
                let (verdict, heard) =
                    super::key_log::gossip(self.audit.as_ref(), &self.key_book, &data, via);
                if !heard.is_empty() {
                    // Off the router's loop: the coordinator may be busy.
                    let coordinator = self.coordinator.clone();
                    tokio::spawn(async move {
                        super::key_log::tell_coordinator(&coordinator, heard).await
                    });
                }
                verdict
            }
            // Audited: a commitment must be signed by its author's household key. Logged with
            // when it was first heard, not put in the ledger: whoever holds one of its receipts
            // has it already, with the receipt's proof.
            Topic::Commitments => match Commitment::from_bytes(&data) {
                Ok(c) if c.coordinator.peer_id() == source && c.verify().is_ok() => {
                    self.audit_heard(&c);
                    Verdict::Accept
                }
                _ => Verdict::Reject,
            },
            // Judged (and, if new, queued for a re-run) by the trust service.
            Topic::Evidence => self.trust.offer(source, source == via, data).await,
        }
    }
}

/// Answers a control request with what `read` reads off the disk, on tokio's blocking pool:
/// `what` names it in the error answered if the read never finished.
fn read_off_thread(
    requests: &mut JoinSet<()>,
    reply: tokio::sync::oneshot::Sender<Vec<u8>>,
    what: &'static str,
    read: impl FnOnce() -> Response + Send + 'static,
) {
    requests.spawn(async move {
        let answer = tokio::task::spawn_blocking(read)
            .await
            .unwrap_or_else(|e| Response::Error {
                detail: format!("the {what} could not be read: {e}"),
            });
        let _ = reply.send(answer.to_bytes());
    });
}

/// What a control request may reach.
struct Services<'a> {
    coordinator: &'a CoordinatorHandle,
    ledger: &'a Ledger,
    receipts_gate: &'a ReceiptsGate,
    trust: &'a crate::jobs::trust::view::TrustView,
    refusals: &'a Refusals,
    witnesses: &'a Witnesses,
}

async fn control(s: Services<'_>, own: PublicKey, peer: libp2p::PeerId, data: &[u8]) -> Response {
    let Services {
        coordinator,
        ledger,
        receipts_gate,
        trust,
        refusals,
        witnesses,
    } = s;
    let request = match Request::from_bytes(data) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, "malformed control request: {e}");
            return Response::Error {
                detail: format!("malformed request: {e}"),
            };
        }
    };
    match request {
        Request::Receipt { receipt, inclusion } => {
            // Under any key of this household's chain: a coordinator delivers the receipts of
            // a key the household rotated away from to its current one.
            if !ledger.own().holds(&receipt.record.worker) {
                return Response::Error {
                    detail: "that receipt credits another household".into(),
                };
            }
            if PublicKey::from_peer_id(&peer) != Some(receipt.record.submitter) {
                return Response::Error {
                    detail: "only the coordinator that countersigned a receipt delivers it".into(),
                };
            }
            let stored = ledger.insert_proven(&receipt, &inclusion);
            // The commitment goes to the auditors too, so its coordinator cannot show the
            // auditors another (or none) under that number unseen.
            if stored.is_ok() {
                witnesses.witness(&inclusion.commitment);
            }
            match stored {
                // Acknowledged only once on disk: the coordinator then drops it from its outbox.
                Ok(_) | Err(LedgerError::Replay { .. }) => match ledger.flush().await {
                    Ok(()) => Response::ReceiptStored,
                    Err(e) => Response::Error {
                        detail: e.to_string(),
                    },
                },
                // The coordinator showed this ledger two commitments under one number: the
                // proof goes to every node, which refuse the key from then on (an auditor may
                // never have seen either, when the coordinator publishes neither).
                Err(e @ LedgerError::Equivocated { .. }) => {
                    let detail = e.to_string();
                    if let LedgerError::Equivocated { first, second, .. } = e {
                        refusals.equivocation_found(*first, *second);
                    }
                    Response::Error { detail }
                }
                Err(e) => Response::Error {
                    detail: e.to_string(),
                },
            }
        }
        // Read off the async threads: a page may pass over many others' receipts.
        Request::Receipts { after } => {
            if let Some(none) = crate::integrity::no_receipts_here(ledger, &peer) {
                return none;
            }
            // One answer at once, in turns (`integrity::ReceiptsGate`); the pass is held by the
            // read itself, so it is let go when the read ends, even if this request was dropped.
            let pass = match receipts_gate.enter(peer, std::time::Instant::now()) {
                Ok(pass) => pass,
                Err(busy) => return busy,
            };
            let ledger = ledger.clone();
            tokio::task::spawn_blocking(move || {
                let _pass = pass;
                crate::integrity::receipts_answer(&ledger, &own, &peer, after)
            })
            .await
            .unwrap_or_else(|e| Response::Error {
                detail: format!("the receipts could not be read: {e}"),
            })
        }
        // Evidence this node checked itself, for a node that joined after it was gossiped.
        Request::Evidence { after } => trust.evidence_answer(after.as_ref()),
        other => coordinator.control(peer, other).await,
    }
}
