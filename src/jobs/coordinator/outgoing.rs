//! What the coordinator sends out: receipt commitments and receipts (each with its inclusion
//! proof, retried until the worker stores it) and job announcements to a bounded, rotating
//! set of peers. Must not touch: the book's decisions.

use crate::identity::PublicKey;
use crate::model::commit::Commitment;
use crate::model::now_ms;
use crate::model::receipt::Receipt;
use crate::model::wire::{JobGossip, Request, Response};
use crate::model::JobManifest;
use crate::net::work::{Board, WORK_PROVIDE_PERIOD};
use crate::net::Topic;

use super::after::{Blocking, Work};
use super::cadence::WorkStep;
use super::delivery::{self, MAX_DELIVERIES_PER_ROUND};
use super::handle::Command;
use super::{Coordinator, JobStatus, Waiting, MAX_ANNOUNCED_PER_ROUND};

/// Most commitments kept for auditors not yet reachable: at one per round of 5 s, 21 minutes
/// of a busy coordinator's commitments (161 bytes each).
const MAX_UNPUBLISHED: usize = 256;

/// How often a commitment no bootstrap node took yet is handed to them again.
const HANDOVER_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

impl Coordinator {
    /// Starts sealing the receipts countersigned since the last commitment into a signed
    /// commitment, on a blocking thread: a commitment covers up to 65 536 receipts, and
    /// hashing its tree and writing every proof is more than the actor may stop for. One
    /// seal runs at a time; one asked for meanwhile follows it (the receipts of a job's last
    /// shard must not wait for the next round).
    pub(super) fn seal(&mut self) {
        // Not before the auditors were asked how far this key's numbering went: the receipts
        // wait in `pending`, durable, and the first seal follows `Command::Numbered`.
        if !self.may_seal {
            return;
        }
        if self.sealing {
            self.seal_again = true;
            return;
        }
        self.sealing = true;
        self.seal_again = false;
        let (ledger, identity) = (self.ledger.clone(), self.identity.clone());
        let task = self.blocking.spawn_blocking(move || {
            Blocking::Sealed(ledger.seal(&identity).map_err(|e| e.to_string()))
        });
        self.blocking_work.insert(task.id(), Work::Seal);
    }

    /// Tells the node's auditors whether there is anything to seal: a job of this node running,
    /// or receipts waiting for a seal (read from the ledger's `pending` tree, one key at most).
    pub(super) fn tell_seal_demand(&self) {
        let wanted = self.book.has_running() || self.ledger.has_pending();
        self.demand
            .send_if_modified(|w| std::mem::replace(w, wanted) != wanted);
    }

    /// Whether the coordinator may give up sealing until `Numbered` again (`Command::Release`):
    /// nothing to seal, no seal running, no commitment waiting for its flush, and every
    /// commitment it sealed taken by a bootstrap node (`unhanded` empty). So an instance of
    /// this key that takes the lease next hears of them (`LastCommitment`) and numbers on past
    /// them. (Not whether gossip carried them: a node never hears the bootstrap node's
    /// subscription when another instance of its key connected to it first, protocol.md §6.2.)
    pub(super) fn may_release(&self) -> bool {
        self.tell_seal_demand();
        !*self.demand.borrow() && !self.sealing && self.group.is_empty() && self.unhanded.is_empty()
    }

    /// A seal returned. Its commitment is published, and the receipts it covers go out with
    /// their proofs, once a flush begun after the seal's writes returns (`flushed`).
    pub(super) fn sealed(&mut self, result: Result<Option<Commitment>, String>) {
        match result {
            Ok(Some(c)) => {
                tracing::debug!(seq = c.seq, receipts = c.count, "receipts committed");
                // The blocking thread wrote it before returning: the next flush covers it.
                self.group.wrote();
                self.after_durable(Waiting {
                    reply: None,
                    then: Vec::new(),
                    closed: None,
                    commitment: Some(c),
                });
            }
            Ok(None) => {}
            Err(e) => tracing::error!("could not seal a receipt commitment: {e}"),
        }
        if self.seal_again {
            self.seal();
        }
    }

    /// A commitment is durable: gossips it on `hearth/commitments/1` (heard by auditors, not
    /// by every radiator), hands it to the bootstrap nodes directly, and sends the waiting
    /// receipts with their proofs.
    pub(super) async fn committed(&mut self, c: Commitment) {
        self.hand_to_auditors(&c);
        self.unpublished.push_back(c);
        if self.unpublished.len() > MAX_UNPUBLISHED {
            if let Some(old) = self.unpublished.pop_front() {
                tracing::warn!(
                    seq = old.seq,
                    "no auditor heard commitment {} for {MAX_UNPUBLISHED} commitments; no longer offered",
                    old.id().to_hex()
                );
            }
        }
        self.republish_commitments().await;
        self.retry_deliveries();
    }

    /// Hands `c` to every bootstrap node (`CoordinatorConfig::auditors`) as its witness, each
    /// on a task of its own: an auditor logs it like a gossiped one. The gossip may not reach
    /// one (no mesh to it yet, or a connection whose subscriptions went to another instance
    /// of this key); this does, dialling if need be. Until one bootstrap node answers Noted
    /// (`Command::Handed`) the commitment stays in `unhanded` and is handed again
    /// ([`HANDOVER_RETRY`]), and the node keeps its key's lease (`may_release`).
    fn hand_to_auditors(&mut self, c: &Commitment) {
        if self.config.auditors.is_empty() {
            return;
        }
        let id = c.id();
        if !self.unhanded.iter().any(|u| u.id() == id) {
            self.unhanded.push_back(c.clone());
            if self.unhanded.len() > MAX_UNPUBLISHED {
                self.unhanded.pop_front();
            }
        }
        let request = Request::Witness(Box::new(c.clone())).to_bytes();
        for peer in self.config.auditors.clone() {
            let (net, request, seq, tx) =
                (self.net.clone(), request.clone(), c.seq, self.tx.clone());
            self.tasks.spawn(async move {
                match net.request(peer, request).await.map(|b| Response::from_bytes(&b)) {
                    Ok(Ok(Response::Noted)) => {
                        let _ = tx.send(Command::Handed { id }).await;
                    }
                    Ok(answer) => {
                        tracing::debug!(%peer, seq, "an auditor did not take a commitment: {answer:?}")
                    }
                    Err(e) => tracing::debug!(%peer, seq, "could not hand a commitment on: {e}"),
                }
            });
        }
    }

    /// Hands the oldest commitment no bootstrap node took yet to them again, at most once per
    /// [`HANDOVER_RETRY`] (each hand-over may dial every bootstrap node).
    pub(super) fn hand_over_again(&mut self) {
        let due = self
            .handed_again
            .is_none_or(|at| at.elapsed() >= HANDOVER_RETRY);
        if !due {
            return;
        }
        if let Some(c) = self.unhanded.front().cloned() {
            self.handed_again = Some(std::time::Instant::now());
            self.hand_to_auditors(&c);
        }
    }

    /// Gossips the commitments no auditor was listening for, oldest first, until one finds
    /// nobody again (no bootstrap node connected, or its subscription not heard yet). So an
    /// auditor's first-seen log (`crate::audit`) misses no commitment of a coordinator that
    /// sealed before it reached one. A commitment refused for another reason is dropped, the
    /// reason logged.
    pub(super) async fn republish_commitments(&mut self) {
        while let Some(c) = self.unpublished.front() {
            match self.net.publish(Topic::Commitments, c.to_bytes()).await {
                Err(e) if e.is_no_peers() => return,
                Err(e) => tracing::debug!(seq = c.seq, "commitment not gossiped: {e}"),
                Ok(()) => {}
            }
            self.unpublished.pop_front();
        }
    }

    pub(super) fn send_receipt(&mut self, receipt: Receipt) {
        let id = receipt.id();
        let inclusion = match self.ledger.inclusion(&id) {
            Ok(Some(inc)) => inc,
            // Not committed yet: the round after the next seal sends it.
            Ok(None) => return,
            Err(e) => {
                tracing::error!(receipt = %id, "cannot read a receipt's inclusion proof: {e}");
                return;
            }
        };
        // A household that rotated away from the key the receipt credits runs its node under
        // its current key; the retired key's node is gone, or is a thief's.
        let worker = receipt.record.worker;
        let to = self
            .current
            .as_ref()
            .and_then(|c| c(&worker))
            .unwrap_or(worker);
        let peer = to.peer_id();
        if !self.outbox.begin(id) {
            return;
        }
        let net = self.net.clone();
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let stored = delivery::send(&net, peer, &receipt, &inclusion).await;
            let _ = tx.send(Command::Delivered { id, stored }).await;
        });
    }

    /// Sends again every receipt a worker has not confirmed (a bounded number per call).
    pub(super) fn retry_deliveries(&mut self) {
        match self.outbox.due(MAX_DELIVERIES_PER_ROUND, &self.ledger) {
            Ok(due) => {
                for receipt in due {
                    self.send_receipt(receipt);
                }
            }
            Err(e) => tracing::error!("cannot read the receipt outbox: {e}"),
        }
    }

    /// Offers a job (or says it closed) to this node's own worker and to at most
    /// `announce_fanout` connected peers, a different selection each call; never to the
    /// whole network.
    pub(super) async fn announce(&mut self, id: &blake3::Hash) {
        let Some(job) = self.book.job(id) else {
            return;
        };
        let msg = match job.status {
            JobStatus::Running => announcement(id, &job.manifest),
            _ => {
                self.cadence.forget(id);
                JobGossip::Closed {
                    job: *id,
                    at_ms: now_ms(),
                }
            }
        };
        // A full queue means the worker is busy; the next re-announcement tries again.
        if self.own.try_send(msg.clone()).is_err() {
            tracing::debug!(job = %id, "own worker busy; announcement to it dropped");
        }
        let peers = match self.net.peers().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(job = %id, "announcement not sent: {e}");
                return;
            }
        };
        let n = peers.len();
        if n == 0 {
            return;
        }
        let take = self.config.announce_fanout.min(n);
        let start = self.announce_turn % n;
        self.announce_turn = self.announce_turn.wrapping_add(take);
        let bytes = Request::Announce(msg).to_bytes();
        for i in 0..take {
            let peer = peers[(start + i) % n].peer_id;
            let net = self.net.clone();
            let bytes = bytes.clone();
            // One task per peer so a slow peer holds up nobody; each ends within the
            // network's request timeout, and at most `announce_fanout` run per announcement.
            self.tasks.spawn(async move {
                if let Err(e) = net.request(peer, bytes).await {
                    tracing::debug!(%peer, "announcement not delivered: {e}");
                }
            });
        }
    }

    /// Offers a radiator that told us it wants heat our open jobs (at most
    /// [`MAX_ANNOUNCED_PER_ROUND`]) directly, when `cadence.rs` says so: it may have found us
    /// through our work records on the DHT (`net::work`), beyond the peers announcements
    /// reach.
    pub(super) fn offer_directly(&mut self, household: &PublicKey) {
        let peer = household.peer_id();
        if peer == self.net.local_peer_id() {
            // This node's own worker hears every announcement already.
            return;
        }
        let offers: Vec<Vec<u8>> = self
            .book
            .jobs()
            .filter(|(_, j)| j.status == JobStatus::Running)
            .take(MAX_ANNOUNCED_PER_ROUND)
            .map(|(id, j)| Request::Announce(announcement(id, &j.manifest)).to_bytes())
            .collect();
        if offers.is_empty() {
            return;
        }
        let net = self.net.clone();
        // One task, the offers one after another: at most MAX_ANNOUNCED_PER_ROUND small
        // requests, each bounded by the network's request timeout.
        self.tasks.spawn(async move {
            for bytes in offers {
                if let Err(e) = net.request(peer, bytes).await {
                    tracing::debug!(%peer, "direct offer not delivered: {e}");
                    break;
                }
            }
        });
    }

    /// Publishes or withdraws this coordinator's work record (`net::work`) as `cadence.rs`
    /// says. When a job opened, looks the want board up too, after the publication has ended
    /// (or at once if the record is already out): radiators that want heat, that no
    /// coordinator offered work and whose last lookup of the work board came before our
    /// record was there are offered the job now ([`Coordinator::offer_wanting`]) instead of
    /// at their next lookup (up to 21 minutes later). One publication and lookup at a time,
    /// each ending within Kademlia's query timeout: the next step waits until it is over.
    pub(super) async fn provide_work(&mut self) {
        if self.seeking {
            return;
        }
        let period = WORK_PROVIDE_PERIOD.as_millis() as u64;
        let (post, look) = match self.cadence.work_step(now_ms(), period) {
            WorkStep::Nothing => return,
            WorkStep::Stop => {
                if let Err(e) = self.net.withdraw(Board::Work).await {
                    tracing::debug!("work record not withdrawn: {e}");
                }
                return;
            }
            WorkStep::Provide { look } => (true, look),
            WorkStep::Look => (false, true),
        };
        self.seeking = true;
        let (net, tx) = (self.net.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            if post {
                if let Err(e) = net.post(Board::Work).await {
                    tracing::debug!("work record not published: {e}");
                }
            }
            let found = if look {
                net.find(Board::Want).await.unwrap_or_else(|e| {
                    tracing::debug!("want board not looked up: {e}");
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            let _ = tx.send(Command::Wanting { found }).await;
        });
    }

    /// Radiators found on the want board: each offered our open jobs directly, as one that
    /// told us its heat demand is, at most once per window (`cadence.rs`). At most
    /// [`crate::net::work::MAX_WORK_FOUND`] of them.
    pub(super) fn offer_wanting(&mut self, found: Vec<libp2p::PeerId>) {
        self.seeking = false;
        let now = now_ms();
        let mut offered = 0;
        for peer in found {
            // A record names a peer; a hearth radiator's peer id holds its household key.
            let Some(household) = PublicKey::from_peer_id(&peer) else {
                continue;
            };
            if self
                .cadence
                .offer_to(household, now, super::cadence::DIRECT_OFFER_WINDOW_MS)
            {
                self.offer_directly(&household);
                offered += 1;
            }
        }
        if offered > 0 {
            tracing::info!(
                radiators = offered,
                "offered our jobs to radiators found on the want board"
            );
        }
    }

    /// Announces the open jobs that are due (`cadence.rs`), at most
    /// [`MAX_ANNOUNCED_PER_ROUND`] per call.
    pub(super) async fn announce_open(&mut self) {
        for id in self.cadence.due(now_ms(), MAX_ANNOUNCED_PER_ROUND) {
            self.announce(&id).await;
        }
    }
}

/// The announcement of an open job, its manifest inline when small enough.
fn announcement(id: &blake3::Hash, manifest: &JobManifest) -> JobGossip {
    let bytes = manifest.to_bytes();
    JobGossip::Announce {
        job: *id,
        at_ms: now_ms(),
        manifest: (bytes.len() <= crate::model::wire::INLINE_MANIFEST_MAX).then_some(bytes),
    }
}
