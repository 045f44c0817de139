//! The coordinator: the submitter's side of a job.
//!
//! The node that submits a job coordinates it. Work is pulled, never pushed: radiators ask
//! for leases, renew them while a shard runs, and send signed claims or failure reports.
//! The decisions (who gets which lease, when a vote is won, who is excluded, when a shard or
//! job fails) are made by the pure [`book::Book`]; this actor owns the I/O around it:
//!
//! - `book.rs`: the state machine (no sled, no network, no clock);
//! - `persist.rs`: the state on disk, one entry per shard, written and flushed before any
//!   acknowledgement is sent;
//! - `delivery.rs`: countersigning and the receipt outbox;
//! - `view.rs`: what the API shows.
//!
//! Size: about 810 lines: the actor's loop, sealing commitments, the announcement cadence and
//! (issue 10) publishing fraud evidence share its state. Owed a split with the group-commit work (branch `coord`, issue 13).
//!
//! Fetching outputs, delivering receipts and assembling the result (PNG encoding, on a
//! blocking thread) run off the actor and report back as commands, so the actor never waits
//! on the network or the CPU. Everyone else talks to it through [`CoordinatorHandle`].
//! Must not touch: the worker, the Swarm.

pub mod book;
mod cadence;
mod delivery;
mod handle;
pub mod persist;
mod view;

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::identity::{Identity, PublicKey};
use crate::ledger::{Ledger, LedgerError};
use crate::model::receipt::Receipt;
use crate::model::wire::{JobGossip, Request, Response};
use crate::model::{now_ms, JobManifest};
use crate::net::{Network, Topic};
use crate::store::Store;
use cadence::Cadence;

use super::assemble::assemble;
use super::JobError;
use book::{Action, Book, Finish, LeaseTerms, Outcome, Step, Update};
use delivery::{Outbox, MAX_DELIVERIES_PER_ROUND};
use persist::Persist;

pub use book::JobStatus;
pub use handle::CoordinatorHandle;
use handle::{busy, Command};
pub use view::{JobView, ShardView};

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// How long a lease lasts, and how far one renewal extends it. A radiator that neither
    /// claims nor renews by then loses it.
    pub lease: Duration,
    /// The longest a lease may be renewed to, counted from when it was granted (default
    /// 600 s: five times the radiator's 120 s shard watchdog).
    pub lease_max: Duration,
    /// How often open jobs are announced again, for radiators that joined later, and how
    /// often the coordinator's round runs (retries, receipt commitments, deliveries).
    pub reannounce: Duration,
    /// The longest interval between two announcements of an open job that nobody asks
    /// for (the interval doubles from `reannounce` up to this; default 40 s, below the 60 s
    /// connection idle timeout so neighbours stay connected while a job is open).
    pub reannounce_max: Duration,
    /// Peers one announcement is sent to, at most (default 16): connected peers, a different
    /// selection each time. Announcements are never broadcast to the whole network.
    pub announce_fanout: usize,
    /// `[trust]`: reputation rules and the replication policy of jobs (`jobs::trust`).
    pub trust: crate::jobs::trust::TrustConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            lease: Duration::from_secs(60),
            lease_max: Duration::from_secs(600),
            reannounce: Duration::from_secs(5),
            reannounce_max: Duration::from_secs(40),
            announce_fanout: 16,
            trust: Default::default(),
        }
    }
}

/// Jobs announced per round at most; the rest wait for the next round.
const MAX_ANNOUNCED_PER_ROUND: usize = 8;

/// What the local worker is told about this node's own jobs (gossipsub does not deliver a
/// node's own messages to itself).
pub type OwnAnnouncements = mpsc::Sender<JobGossip>;

pub struct Coordinator {
    identity: Identity,
    store: Store,
    ledger: Ledger,
    net: Network,
    config: CoordinatorConfig,
    persist: Persist,
    trust: crate::jobs::trust::store::TrustStore,
    outbox: Outbox,
    book: Book,
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
    /// Output fetches, assemblies and receipt deliveries in flight; aborted and awaited on
    /// shutdown.
    tasks: tokio::task::JoinSet<()>,
    /// Shards whose output is being fetched (at most one fetch per shard).
    fetching: HashSet<(blake3::Hash, u32)>,
    /// Jobs being assembled (at most one assembly per job).
    assembling: HashSet<blake3::Hash>,
    own: OwnAnnouncements,
    /// When each open job is announced next.
    cadence: Cadence,
    /// Rotates which connected peers hear the next announcement.
    announce_turn: usize,
}

impl Coordinator {
    pub fn new(
        db: &sled::Db,
        identity: Identity,
        store: Store,
        ledger: Ledger,
        net: Network,
        config: CoordinatorConfig,
        own: OwnAnnouncements,
    ) -> Result<(Coordinator, CoordinatorHandle), JobError> {
        let persist = Persist::open(db)?;
        let mut book = Book::new(LeaseTerms {
            lease_ms: config.lease.as_millis().min(u64::MAX as u128) as u64,
            max_total_ms: config
                .lease_max
                .max(config.lease)
                .as_millis()
                .min(u64::MAX as u128) as u64,
        });
        let (jobs, excluded) = persist.load()?;
        let mut cadence = Cadence::new(
            config.reannounce.as_millis().min(u64::MAX as u128) as u64,
            config.reannounce_max.as_millis().min(u64::MAX as u128) as u64,
        );
        for (id, job) in jobs {
            if job.status == JobStatus::Running {
                cadence.start(id, now_ms());
            }
            book.insert_job(id, job);
        }
        for household in excluded {
            book.insert_excluded(household);
        }
        for (job, policy) in persist.policies()? {
            book.set_policy(job, policy);
        }
        for (job, household) in persist.suspended()? {
            book.insert_suspended(job, household);
        }
        // Households excluded on fraud evidence this node re-ran (`jobs::trust::service`).
        for household in crate::jobs::trust::evidence::EvidenceStore::open(db)?.excluded()? {
            book.insert_excluded(household);
        }
        let trust = crate::jobs::trust::store::TrustStore::open(db)?;
        book.set_reputation(config.trust.reputation(identity.public(), trust.load()?));
        book.set_default_policy(config.trust.policy());
        book.set_allowed(config.trust.allowed());
        let mut spot_key = [0u8; 32];
        getrandom::fill(&mut spot_key)
            .map_err(|e| JobError::Invalid(format!("no randomness for the spot-check key: {e}")))?;
        book.set_spot_key(spot_key);
        // Bounded: submitters and the API wait when the coordinator is busy.
        let (tx, rx) = mpsc::channel(256);
        let handle = CoordinatorHandle { tx: tx.clone() };
        Ok((
            Coordinator {
                identity,
                store,
                ledger,
                net,
                config,
                persist,
                trust,
                outbox: Outbox::open(db)?,
                book,
                tx,
                rx,
                tasks: tokio::task::JoinSet::new(),
                fetching: HashSet::new(),
                assembling: HashSet::new(),
                own,
                cadence,
                announce_turn: 0,
            },
            handle,
        ))
    }

    /// Runs until every handle is dropped or `shutdown` fires. An error means the final
    /// flush failed.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), JobError> {
        let mut reannounce = tokio::time::interval(self.config.reannounce);
        reannounce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = reannounce.tick() => {
                    // A restarted coordinator (or one whose write failed) may have decided
                    // shards without receipts, or a finished job not yet assembled.
                    for action in self.book.pending() {
                        self.act(action).await;
                    }
                    self.announce_open().await;
                    self.seal_and_deliver().await;
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!("a coordinator task panicked: {e}");
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.tasks.shutdown().await;
        self.persist.flush().await
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                manifest,
                policy,
                reply,
            } => {
                let result = self.submit(manifest, policy).await;
                let _ = reply.send(result);
            }
            Command::Control {
                from,
                request,
                reply,
            } => {
                let response = self.control(from, *request).await;
                // The requester may have gone away; its lease then simply expires.
                let _ = reply.send(response);
            }
            Command::OutputFetched {
                job,
                shard,
                outcome,
                result,
            } => self.output_fetched(job, shard, outcome, result).await,
            Command::Assembled { job, result } => self.assembled(job, result).await,
            Command::Retry(action) => self.act(action).await,
            Command::View { job, reply } => {
                let now = now_ms();
                let warmth = self.book.warmth(now);
                let v = self
                    .book
                    .job(&job)
                    .map(|j| view::view(&job, j, warmth, now));
                let _ = reply.send(v);
            }
            Command::Delivered { id, stored } => {
                if let Err(e) = self.outbox.done(&id, stored) {
                    tracing::error!(receipt = %id, "could not remove a delivered receipt from the outbox: {e}; it will be sent again");
                }
            }
            Command::ExcludeChecked { household } => self.book.insert_excluded(household),
            Command::Heat { household, demand } => {
                self.book
                    .note_demand(household, demand.demand_permille, false, now_ms());
            }
            Command::List { reply } => {
                let now = now_ms();
                let warmth = self.book.warmth(now);
                let mut all: Vec<JobView> = self
                    .book
                    .jobs()
                    .map(|(id, j)| view::view(id, j, warmth, now))
                    .collect();
                all.sort_by_key(|v| v.submitted_ms);
                let _ = reply.send(all);
            }
        }
    }

    async fn submit(
        &mut self,
        manifest: JobManifest,
        policy: Option<crate::jobs::trust::Policy>,
    ) -> Result<blake3::Hash, JobError> {
        manifest.validate().map_err(JobError::Invalid)?;
        if let Some(p) = &policy {
            p.validate()
                .map_err(|e| JobError::Invalid(format!("replication policy: {e}")))?;
        }
        if manifest.submitter != self.identity.public() {
            return Err(JobError::Invalid(
                "the manifest names another household as submitter; a node coordinates only its own jobs".into(),
            ));
        }
        for h in std::iter::once(&manifest.module).chain(manifest.inputs.iter()) {
            if !self.store.has(h)? {
                return Err(JobError::Invalid(format!(
                    "blob {} named by the manifest is not in this node's store",
                    h.to_hex()
                )));
            }
        }
        let id = manifest.id();
        if self.book.job(&id).is_some() {
            // The same manifest again: the job already runs (or ran); nothing to reset.
            return Ok(id);
        }
        // The manifest is a blob under its own id, so radiators fetch it like any other blob.
        let stored = self.store.put_bytes(&manifest.to_bytes())?;
        debug_assert_eq!(stored, id);
        let job = Book::new_job(manifest.clone(), now_ms());
        self.persist.submit(&id, &job, policy.as_ref()).await?;
        if let Some(p) = policy {
            self.book.set_policy(id, p);
        }
        for h in std::iter::once(&id)
            .chain(std::iter::once(&manifest.module))
            .chain(manifest.inputs.iter())
        {
            if let Err(e) = self.net.provide(*h).await {
                tracing::debug!(blob = %h, "could not advertise: {e}");
            }
        }
        self.book.insert_job(id, job);
        tracing::info!(job = %id, "job submitted");
        self.cadence.start(id, now_ms());
        self.announce_open().await;
        Ok(id)
    }

    async fn control(&mut self, from: libp2p::PeerId, request: Request) -> Response {
        let Some(household) = PublicKey::from_peer_id(&from) else {
            return Response::Error {
                detail: "your peer id carries no ed25519 household key".into(),
            };
        };
        let now = now_ms();
        let step = match request {
            Request::Lease {
                job,
                protocol,
                demand_permille,
            } => {
                self.book.note_demand(household, demand_permille, true, now);
                self.cadence.asked(&job);
                let mut nonce = [0u8; 16];
                if getrandom::fill(&mut nonce).is_err() {
                    return busy("no randomness for a lease nonce");
                }
                self.book
                    .lease(&job, &household, protocol, demand_permille, nonce, now)
            }
            Request::Renew { job, shard, nonce } => {
                self.book.renew(&job, &household, shard, nonce, now)
            }
            Request::Claim(claim) => self.book.claim(&household, claim, now),
            Request::Failure {
                job,
                shard,
                nonce,
                reason,
            } => self
                .book
                .failure(&job, &household, shard, nonce, reason, now),
            Request::Decline { job, reason } => {
                tracing::info!(job = %job, %household, "declined: {reason}");
                self.book.decline(&job, &household, reason, now)
            }
            // Answered by the node (node.rs `control`), never passed here.
            Request::Receipt { .. } | Request::Announce(_) | Request::Receipts { .. } => {
                return Response::Error {
                    detail: "receipts and announcements go to workers, not coordinators".into(),
                }
            }
            Request::Heat(demand) => {
                self.book
                    .note_demand(household, demand.demand_permille, false, now);
                return Response::Noted;
            }
        };
        let step = match step {
            Ok(step) => step,
            Err(answer) => return answer,
        };
        if let Response::Leased(lease) = &step.answer {
            tracing::debug!(job = %lease.job, shard = lease.shard, worker = %household, "leased");
        }
        let answer = step.answer.clone();
        let touched = step
            .update
            .job
            .zip(step.update.shard.as_ref().map(|(i, _)| *i));
        if let Err(e) = self.commit(step).await {
            tracing::error!("could not save the coordinator's state: {e}");
            // Nothing was acknowledged and the book is unchanged: the requester may ask again.
            return match answer {
                Response::Leased(_) | Response::Renewed { .. } => {
                    busy(format!("the coordinator could not save the lease: {e}"))
                }
                _ => Response::Error {
                    detail: format!(
                        "the coordinator could not save your report: {e}; send it again"
                    ),
                },
            };
        }
        match answer {
            Response::ClaimAccepted { .. } => Response::ClaimAccepted {
                verified: touched
                    .and_then(|(job, i)| self.book.job(&job)?.shards.get(i as usize))
                    .is_some_and(|s| s.verified.is_some()),
            },
            other => other,
        }
    }

    /// Writes a step, applies it to the book once durable, and carries out what follows.
    async fn commit(&mut self, step: Step) -> Result<(), JobError> {
        self.write(step.update).await?;
        for action in step.then {
            self.act(action).await;
        }
        Ok(())
    }

    /// Writes an update and flushes; only then applies it. A closed job is announced.
    async fn write(&mut self, update: Update) -> Result<(), JobError> {
        let job = update.job.and_then(|id| self.book.job(&id));
        // Unflushed: the flush in `persist.write` covers every tree of the database.
        self.trust.write(&update.reputation)?;
        self.persist.write(&update, job).await?;
        let closed = update.job.filter(|_| update.status.is_some());
        self.book.apply(update);
        if let Some(id) = closed {
            if let Some(j) = self.book.job(&id) {
                tracing::info!(job = %id, status = ?j.status, "job finished");
            }
            self.announce(&id).await;
        }
        Ok(())
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::FetchOutput {
                job,
                shard,
                outcome,
                hint,
            } => self.fetch_output(job, shard, outcome, hint),
            Action::Settle { job, shard } => self.settle(job, shard).await,
            Action::CheckFinished { job } => self.check_finished(job),
        }
    }

    /// Starts fetching a decided shard's output, from an agreeing worker if one is named.
    /// The result comes back as a command, so the actor never waits on the network.
    fn fetch_output(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        hint: Option<PublicKey>,
    ) {
        if !self.fetching.insert((job, shard)) {
            return;
        }
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        let hint = hint.and_then(|h| h.peer_id());
        self.tasks.spawn(async move {
            let output = outcome.output;
            let result = match store.has(&output) {
                Ok(true) => Ok(()),
                // The store checks every piece against the output hash as it arrives.
                _ => net
                    // No shard output can be larger than the executor produces.
                    .fetch_blob_within(output, hint, crate::exec::MAX_OUTPUT_BYTES as u64)
                    .await
                    .map_err(|e| e.to_string()),
            };
            let _ = tx
                .send(Command::OutputFetched {
                    job,
                    shard,
                    outcome,
                    result,
                })
                .await;
        });
    }

    async fn output_fetched(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        result: Result<(), String>,
    ) {
        self.fetching.remove(&(job, shard));
        if let Err(e) = result {
            tracing::warn!(job = %job, shard, "could not fetch the verified output: {e}; retrying");
            let tx = self.tx.clone();
            self.tasks.spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx
                    .send(Command::Retry(Action::FetchOutput {
                        job,
                        shard,
                        outcome,
                        hint: None,
                    }))
                    .await;
            });
            return;
        }
        let Some(step) = self.book.output_checked(&job, shard, outcome) else {
            return;
        };
        if let Err(e) = self.commit(step).await {
            // The book is unchanged; the next round's `pending` fetches and tries again.
            tracing::error!(job = %job, shard, "could not save the verified shard: {e}");
        }
    }

    /// Countersigns every agreeing claim of a verified shard not yet settled and excludes
    /// the households whose claims lost, then delivers and publishes the receipts.
    ///
    /// The receipts go into the ledger and the outbox *before* the shard is saved as
    /// settled, and that save flushes the whole database: a crash in between leaves the
    /// claims unsettled, and countersigning again yields the identical receipt (ed25519 is
    /// deterministic), which the ledger takes as a replay. A claim whose countersignature or
    /// recording failed stays unsettled and is tried again next round.
    async fn settle(&mut self, job: blake3::Hash, shard: u32) {
        let Some(settlement) = self.book.settlement(&job, shard) else {
            return;
        };
        let mut signed = Vec::new();
        let mut receipts = Vec::new();
        for (i, claim, terms) in &settlement.winners {
            if terms.credited_mj < claim.record.energy_mj {
                tracing::warn!(job = %job, shard, household = %claim.record.worker,
                    claimed_mj = claim.record.energy_mj, credited_mj = terms.credited_mj,
                    "claimed energy above the replicas' reference; credit capped");
            }
            let receipt = match delivery::countersign(&self.identity, claim.clone(), *terms) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(job = %job, shard, "cannot countersign a claim: {e}; it stays pending");
                    continue;
                }
            };
            if let Err(e) = self.record(&receipt) {
                tracing::error!(job = %job, shard, "cannot record a receipt: {e}; it stays pending");
                continue;
            }
            signed.push(*i);
            receipts.push(receipt);
        }
        for (_, loser) in &settlement.losers {
            tracing::warn!(household = %loser.record.worker, job = %job, shard, "claim lost the replica vote; household excluded");
        }
        let Some(update) = self.book.settled(&job, shard, &settlement, &signed) else {
            return;
        };
        let excluded: Vec<PublicKey> = update.exclude.iter().map(|(h, _)| *h).collect();
        if let Err(e) = self.write(update).await {
            tracing::error!(job = %job, shard, "could not save the settled claims: {e}; will retry");
            return;
        }
        self.publish_evidence(&settlement, &excluded).await;
        // Receipts are delivered with their inclusion proof, so they wait for a commitment:
        // the next round's, or at once when this shard was the job's last.
        let last = self
            .book
            .job(&job)
            .is_some_and(|j| j.shards.iter().all(|s| s.verified.is_some()));
        if !receipts.is_empty() && last {
            self.seal_and_deliver().await;
        }
    }

    /// Gossips fraud evidence (`docs/protocol.md` §6.5) against each household this vote
    /// excluded: its claim and a winning one, signed by this coordinator, so other nodes can
    /// re-run the shard and exclude it too. Best effort: published once, when the exclusion
    /// is durable; a node that does not hear it learns of the liar only by catching it.
    async fn publish_evidence(&self, settlement: &book::Settlement, excluded: &[PublicKey]) {
        for (_, loser) in &settlement.losers {
            if !excluded.contains(&loser.record.worker) {
                continue;
            }
            let evidence = crate::model::evidence::Evidence::sign(
                &self.identity,
                now_ms(),
                settlement.outcome.output,
                settlement.outcome.fuel,
                loser.clone(),
                settlement.evidence.clone(),
            );
            match evidence {
                Ok(e) => {
                    if let Err(err) = self.net.publish(Topic::Evidence, e.to_bytes()).await {
                        tracing::debug!(household = %loser.record.worker, "fraud evidence not gossiped: {err}");
                    }
                }
                Err(err) => {
                    tracing::error!(household = %loser.record.worker, "cannot sign fraud evidence: {err}")
                }
            }
        }
    }

    /// Keeps a countersigned receipt: in this node's ledger (pending its commitment) and, for
    /// other households, in the outbox until the worker confirms, so a worker that was
    /// offline or cut off when its shard was verified still gets its receipt. The caller
    /// flushes.
    fn record(&mut self, receipt: &Receipt) -> Result<(), JobError> {
        match self.ledger.insert_countersigned(receipt) {
            Ok(_) | Err(LedgerError::Replay { .. }) => {}
            Err(e) => return Err(JobError::Ledger(e)),
        }
        if receipt.record.worker != self.identity.public() {
            self.outbox.queue(receipt)?;
        }
        Ok(())
    }

    /// Seals the receipts countersigned since the last commitment into a signed commitment,
    /// makes it durable, publishes it on `hearth/commitments/1` (heard by auditors, not by
    /// every radiator) and sends every waiting receipt with its proof.
    async fn seal_and_deliver(&mut self) {
        match self.ledger.seal(&self.identity) {
            Ok(Some(c)) => {
                if let Err(e) = self.ledger.flush().await {
                    tracing::error!("could not save a receipt commitment: {e}; receipts wait");
                    return;
                }
                tracing::debug!(seq = c.seq, receipts = c.count, "receipts committed");
                if let Err(e) = self.net.publish(Topic::Commitments, c.to_bytes()).await {
                    tracing::debug!("commitment not gossiped: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("could not seal a receipt commitment: {e}"),
        }
        self.retry_deliveries();
    }

    fn send_receipt(&mut self, receipt: Receipt) {
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
        let Some(peer) = receipt.record.worker.peer_id() else {
            if let Err(e) = self.outbox.drop_undeliverable(&id) {
                tracing::error!(receipt = %id, "could not drop an undeliverable receipt: {e}");
            }
            return;
        };
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
    fn retry_deliveries(&mut self) {
        match self.outbox.due(MAX_DELIVERIES_PER_ROUND) {
            Ok(due) => {
                for receipt in due {
                    self.send_receipt(receipt);
                }
            }
            Err(e) => tracing::error!("cannot read the receipt outbox: {e}"),
        }
    }

    /// Starts assembling a job whose every shard is verified, on a blocking thread.
    fn check_finished(&mut self, job: blake3::Hash) {
        let Finish::Assemble(outputs) = self.book.finish(&job) else {
            return;
        };
        let Some(manifest) = self.book.job(&job).map(|j| j.manifest.clone()) else {
            return;
        };
        if !self.assembling.insert(job) {
            return;
        }
        let store = self.store.clone();
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let result = tokio::task::spawn_blocking(move || assemble(&store, &manifest, &outputs))
                .await
                .map_err(|e| format!("the assembly thread died: {e}"))
                .and_then(|r| r.map_err(|e| e.to_string()));
            let _ = tx.send(Command::Assembled { job, result }).await;
        });
    }

    async fn assembled(&mut self, job: blake3::Hash, result: Result<blake3::Hash, String>) {
        self.assembling.remove(&job);
        let Some(update) = self.book.assembled(&job, result, now_ms()) else {
            return;
        };
        if let Err(e) = self.write(update).await {
            // The book is unchanged; the next round assembles again.
            tracing::error!(job = %job, "could not save the finished job: {e}");
        }
    }

    /// Offers a job (or says it closed) to this node's own worker and to at most
    /// `announce_fanout` connected peers, a different selection each call; never to the
    /// whole network.
    async fn announce(&mut self, id: &blake3::Hash) {
        let Some(job) = self.book.job(id) else {
            return;
        };
        let msg = match job.status {
            JobStatus::Running => {
                let bytes = job.manifest.to_bytes();
                JobGossip::Announce {
                    job: *id,
                    at_ms: now_ms(),
                    manifest: (bytes.len() <= crate::model::wire::INLINE_MANIFEST_MAX)
                        .then_some(bytes),
                }
            }
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
        let bytes = crate::model::wire::Request::Announce(msg).to_bytes();
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

    /// Announces the open jobs that are due (`cadence.rs`), at most
    /// [`MAX_ANNOUNCED_PER_ROUND`] per call.
    async fn announce_open(&mut self) {
        for id in self.cadence.due(now_ms(), MAX_ANNOUNCED_PER_ROUND) {
            self.announce(&id).await;
        }
    }
}
