//! The coordinator: the submitter's side of a job.
//!
//! The node that submits a job coordinates it. Work is pulled, never pushed: radiators ask
//! for leases, renew them while a shard runs, and send signed claims or failure reports.
//! The decisions (who gets which lease, when a vote is won, who is excluded, when a shard or
//! job fails) are made by the pure [`book::Book`]; this actor owns the I/O around it:
//!
//! - `book.rs`: the state machine (no sled, no network, no clock), with its shard index;
//! - `persist.rs`: the state on disk, one entry per shard;
//! - this file: the actor's loop and the group commit (every update is staged and applied
//!   at once, and its answer and follow-up wait for a flush begun after it: one flush writes
//!   and acknowledges every request that arrived while the previous one ran);
//! - `after.rs`: what follows a decided shard: output fetched, claims countersigned (on a
//!   blocking thread), result assembled (on a blocking thread);
//! - `outgoing.rs`: commitments, receipt deliveries and job announcements;
//! - `delivery.rs`: countersigning and the receipt outbox;
//! - `handle.rs`: the commands and the handle (which checks claim signatures, off the actor);
//! - `view.rs`: what the API shows.
//!
//! Fetching outputs, countersigning, delivering receipts and assembling the result run off
//! the actor and report back, so the actor never waits on the network or the CPU. Everyone
//! else talks to it through [`CoordinatorHandle`].
//! Size: about 930 lines, past the house style's limit: the actor's state, its loop with the
//! group commit, and the dispatch of every request, which read best together; what follows a
//! decision already lives in the files above.
//! Must not touch: the worker, the Swarm.

mod after;
pub mod book;
mod cadence;
mod delivery;
mod group;
mod handle;
mod outgoing;
pub mod persist;
mod view;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::identity::{Identity, PublicKey};
use crate::ledger::Ledger;
use crate::model::wire::{JobGossip, Request, Response};
use crate::model::{now_ms, JobManifest};
use crate::net::Network;
use crate::store::Store;
use cadence::Cadence;

use super::assemble::assemble;
use super::JobError;
use after::{Blocking, Work};
use book::{Action, Book, LeaseTerms, Step, Update};
use delivery::Outbox;
use group::GroupCommit;
use persist::Persist;

pub use book::JobStatus;
pub use handle::CoordinatorHandle;
use handle::{busy, turned_away, Command, Control};
pub use handle::{CurrentKeys, RefusedKeys};
pub use view::{JobSummary, JobView, ShardView};

/// What this node, as a coordinator, still has under way in its database: jobs running and
/// receipts its workers have not yet confirmed. Both are signed under the node's current key,
/// so `hearth key rotate` refuses while either is (`crate::keys`).
pub fn under_way(db: &sled::Db) -> Result<(u64, usize), JobError> {
    let (jobs, finished, _) = Persist::open(db)?.counts()?;
    Ok((jobs.saturating_sub(finished), Outbox::open(db)?.len()))
}

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
    /// This node's declared public addresses (`[node] external_addresses`), counted among
    /// its own when receipts are marked as going to a household that shares an address with
    /// it (`jobs::trust::related`), besides those the network confirmed. Default empty.
    pub own_addresses: Vec<libp2p::Multiaddr>,
    /// Seal no receipt commitment until the node has asked its auditors how far its key's
    /// numbering went (`node::auditors`, [`CoordinatorHandle::numbered`]): set when the node
    /// has bootstrap nodes to ask. Until then receipts wait, durable, in the ledger's
    /// `pending`. Default false.
    pub await_numbering: bool,
    /// The bootstrap nodes (the auditors this node knows): each commitment sealed here is
    /// also handed to them directly (`Request::Witness`), so they log it whatever the gossip
    /// mesh reaches (a peer that shared a connection with another instance of this key never
    /// sent this one its subscriptions: `node::instances`). Default none.
    pub auditors: Vec<libp2p::PeerId>,
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
            own_addresses: Vec::new(),
            await_numbering: false,
            auditors: Vec::new(),
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
    /// Where the evidence this coordinator publishes is kept, to answer late joiners.
    evidence: crate::jobs::trust::evidence::EvidenceStore,
    outbox: Outbox,
    book: Book,
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
    /// Why this coordinator stopped, if on a failure: shared with its handles
    /// (`CoordinatorHandle::stopped`).
    failure: std::sync::Arc<std::sync::OnceLock<String>>,
    /// Output fetches, assemblies and receipt deliveries in flight; aborted and awaited on
    /// shutdown.
    tasks: tokio::task::JoinSet<()>,
    /// Shards whose output is being fetched (at most one fetch per shard).
    fetching: HashSet<(blake3::Hash, u32)>,
    /// Failed output fetches in a row, per shard, for the wait before the next
    /// (`after.rs`, `refetch_wait`); at most `MAX_REFETCHING` shards.
    refetching: HashMap<(blake3::Hash, u32), u32>,
    /// Jobs being assembled (at most one assembly per job).
    assembling: HashSet<blake3::Hash>,
    /// Shards whose claims are queued or being countersigned (at most one settlement per
    /// shard).
    settling: HashSet<(blake3::Hash, u32)>,
    /// Settlements queued since the loop last turned: handed to blocking threads together
    /// (`after.rs`, `start_settling`).
    to_settle: Vec<after::Settling>,
    /// A seal runs on a blocking thread (at most one at a time) ...
    sealing: bool,
    /// ... and another was asked for meanwhile.
    seal_again: bool,
    /// Whether seals may run: not before the node's numbering is known (`await_numbering`),
    /// nor after another node was found signing with its key (`Command::HoldSeals`), nor while
    /// the node does not hold its key's lease (`Command::Release`).
    may_seal: bool,
    /// Whether there is anything to seal (a job of this node running, receipts pending), for
    /// the node's auditors: a node holds its key's lease only while there is.
    demand: tokio::sync::watch::Sender<bool>,
    /// Commitments no auditor was listening for when they were made, oldest first; gossiped
    /// again each round (`outgoing.rs`, `republish_commitments`).
    unpublished: std::collections::VecDeque<crate::model::commit::Commitment>,
    /// Commitments no bootstrap node took yet (`outgoing.rs`, `hand_to_auditors`), oldest
    /// first, at most `MAX_UNPUBLISHED`; and when the oldest was last handed again.
    unhanded: std::collections::VecDeque<crate::model::commit::Commitment>,
    handed_again: Option<std::time::Instant>,
    /// Countersigning, sealing and assembly, on blocking threads. Awaited, never abandoned, when the
    /// actor stops: a blocking thread cannot be cancelled, and one still holding the
    /// database after the node shut down would keep it locked.
    blocking: tokio::task::JoinSet<Blocking>,
    blocking_work: HashMap<tokio::task::Id, Work>,
    own: OwnAnnouncements,
    /// When each open job is announced next.
    cadence: Cadence,
    /// Rotates which connected peers hear the next announcement.
    announce_turn: usize,
    /// A publication on the work board and the want board's lookup after it are under way
    /// (`outgoing.rs`, `provide_work`): at most one at a time.
    seeking: bool,
    /// What waits for the flush that makes the writes it depends on durable (`group.rs`).
    group: GroupCommit<Waiting>,
    /// Updates written behind since the last flush began (`Persist::write`): committed by
    /// the next flush, just before it.
    staged: crate::kv::Batch,
    /// The addresses this node and its peers were last seen at, for marking receipts of
    /// households that share one with this node (`after.rs`, `jobs::trust::related`).
    addresses: after::Addresses,
    /// Keys this node refuses: given no lease, no renewal and no say in a vote.
    refused: Option<RefusedKeys>,
    /// Where a retired key's household signs now: its receipts are delivered there.
    current: Option<CurrentKeys>,
}

/// An answer, follow-up work or announcement that may go out only once the writes it
/// depends on are durable.
struct Waiting {
    reply: Option<(oneshot::Sender<Response>, Response)>,
    then: Vec<Action>,
    /// A job that closed: announced as closed.
    closed: Option<blake3::Hash>,
    /// A receipt commitment just sealed: published, and its receipts delivered.
    commitment: Option<crate::model::commit::Commitment>,
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
        persist.migrate()?;
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
        let evidence = crate::jobs::trust::evidence::EvidenceStore::open(db)?;
        for household in evidence.excluded()? {
            book.insert_excluded(household);
        }
        let trust = crate::jobs::trust::store::TrustStore::open(db)?;
        book.set_reputation(config.trust.reputation(
            identity.public(),
            trust.load()?,
            trust.load_carried()?,
        ));
        book.set_default_policy(config.trust.policy());
        book.set_allowed(config.trust.allowed());
        let mut spot_key = [0u8; 32];
        getrandom::fill(&mut spot_key)
            .map_err(|e| JobError::Invalid(format!("no randomness for the spot-check key: {e}")))?;
        book.set_spot_key(spot_key);
        // Bounded: submitters and the API wait when the coordinator is busy.
        let (tx, rx) = mpsc::channel(256);
        let failure = std::sync::Arc::new(std::sync::OnceLock::new());
        let staged = persist.batch();
        let may_seal = !config.await_numbering;
        let wanted = book.has_running() || ledger.has_pending();
        let (demand, demand_rx) = tokio::sync::watch::channel(wanted);
        let handle = CoordinatorHandle {
            tx: tx.clone(),
            failure: failure.clone(),
            demand: demand_rx,
        };
        Ok((
            Coordinator {
                identity,
                store,
                ledger,
                net,
                config,
                persist,
                trust,
                evidence,
                outbox: Outbox::open(db)?,
                book,
                tx,
                rx,
                failure,
                tasks: tokio::task::JoinSet::new(),
                fetching: HashSet::new(),
                refetching: HashMap::new(),
                assembling: HashSet::new(),
                settling: HashSet::new(),
                to_settle: Vec::new(),
                sealing: false,
                seal_again: false,
                may_seal,
                demand,
                unpublished: std::collections::VecDeque::new(),
                unhanded: std::collections::VecDeque::new(),
                handed_again: None,
                blocking: tokio::task::JoinSet::new(),
                blocking_work: HashMap::new(),
                own,
                cadence,
                announce_turn: 0,
                seeking: false,
                group: GroupCommit::default(),
                staged,
                addresses: after::Addresses::default(),
                refused: None,
                current: None,
            },
            handle,
        ))
    }

    /// Turns households whose keys `refused` names away: no lease, renewal or claim of theirs
    /// is taken, their heat demand is not heard, and what they hold in running jobs is taken
    /// back when the coordinator starts and whenever [`CoordinatorHandle::withdraw_refused`]
    /// says another key was refused.
    pub fn refusing(mut self, refused: RefusedKeys) -> Coordinator {
        self.refused = Some(refused);
        self
    }

    /// Delivers the receipts of a key its household rotated away from to the household's
    /// current key, as `current` names it: the household's node runs under that key now, and
    /// its ledger takes receipts under every key of its chain as its own.
    pub fn delivering_to_current(mut self, current: CurrentKeys) -> Coordinator {
        self.current = Some(current);
        self
    }

    /// Takes back the leases and undecided claims of refused keys in running jobs
    /// (`book::refused`), written like any update: a lease request that follows sees them gone.
    fn withdraw_refused(&mut self) {
        let Some(refused) = self.refused.clone() else {
            return;
        };
        let updates = self.book.withdraw(&|h| refused(h).is_some());
        if updates.is_empty() {
            return;
        }
        let shards = updates.len();
        match self.write(updates) {
            Ok(()) => tracing::info!(
                shards,
                "took back the leases and undecided claims of refused keys"
            ),
            Err(e) => tracing::error!(
                "could not take back what refused keys hold: {e}; tried again at the next start"
            ),
        }
    }

    /// Runs until every handle is dropped or `shutdown` fires. An error means a commit or a
    /// flush failed: what waited for it was answered with an error, and the node stops (the
    /// book then holds updates that may not be on disk; the restart reloads the state on
    /// disk, see docs/storage.md).
    ///
    /// Group commit: each update is staged (`staged`) and applied to the book at once, so the
    /// next request sees it, but its answer, its follow-up actions and any announcement wait
    /// in `waiting` until a flush that began after it returns. One flush is in flight at a
    /// time: it commits every update staged before it began, then flushes; whatever arrives
    /// meanwhile goes with the next one. So under load one flush acknowledges many requests
    /// and writes each shard they changed once, and nothing is acknowledged before it is
    /// durable. Commit and flush run on a blocking thread (`kv::commit_and_flush`), polled
    /// here: no other task holds the database, and it is awaited before `run` returns.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), JobError> {
        let mut reannounce = tokio::time::interval(self.config.reannounce);
        reannounce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flushing: Option<persist::Flush> = None;
        let mut failed = None;
        // A key refused while the node was down (or just before a crash) holds nothing here.
        self.withdraw_refused();
        loop {
            // Everything settled since the last turn (a flush's release, a round) goes to
            // the blocking pool together.
            self.start_settling();
            if self.group.begin_flush() {
                let staged = self.take_staged();
                flushing = Some(self.persist.flush_future(staged));
            }
            tokio::select! {
                done = async {
                    match flushing.as_mut() {
                        Some(f) => f.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    flushing = None;
                    match done {
                        Ok(()) => self.flushed().await,
                        Err(e) => {
                            tracing::error!("could not save the coordinator's state: {e}; stopping");
                            // Before any waiting request is dropped: they learn why.
                            let _ = self.failure.set(format!("could not save its state: {e}"));
                            failed = Some(e);
                            break;
                        }
                    }
                }
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
                    self.provide_work().await;
                    self.seal();
                    self.tell_seal_demand();
                    self.retry_deliveries();
                    self.republish_commitments().await;
                    self.hand_over_again();
                }
                Some(done) = self.blocking.join_next_with_id(), if !self.blocking.is_empty() => {
                    self.blocking_done(done).await;
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
        // The flush in flight ends before the database may be closed.
        if let Some(f) = flushing.take() {
            if let Err(e) = f.await {
                failed.get_or_insert(e);
            }
        }
        self.tasks.shutdown().await;
        // Blocking threads cannot be cancelled: wait for them, drop their results (the
        // claims stay unsettled and a restart settles them again, as a replay).
        while self.blocking.join_next().await.is_some() {}
        if failed.is_none() {
            let staged = self.take_staged();
            if let Err(e) = self.persist.flush(staged).await {
                failed = Some(e);
            }
        }
        // Nothing more is acted on; a restart finds what is left (`Book::pending`).
        for w in self.group.drain() {
            if let Some((reply, answer)) = w.reply {
                let answer = match &failed {
                    None => answer,
                    Some(e) => unsaved(answer, e),
                };
                let _ = reply.send(answer);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The updates staged since the last flush began, for the next one to commit.
    fn take_staged(&mut self) -> crate::kv::Batch {
        std::mem::replace(&mut self.staged, self.persist.batch())
    }

    /// A flush returned: sends what waited for it and acts on it.
    async fn flushed(&mut self) {
        for w in self.group.flushed() {
            if let Some((reply, answer)) = w.reply {
                // The requester may have gone away; its lease then simply expires.
                let _ = reply.send(answer);
            }
            for action in w.then {
                self.act(action).await;
            }
            if let Some(id) = w.closed {
                self.announce(&id).await;
            }
            if let Some(c) = w.commitment {
                self.committed(c).await;
            }
        }
    }

    /// Sends `answer` once every write made so far is durable.
    fn answer(&mut self, reply: oneshot::Sender<Response>, answer: Response) {
        self.after_durable(Waiting {
            reply: Some((reply, answer)),
            then: Vec::new(),
            closed: None,
            commitment: None,
        });
    }

    /// Holds `w` until every write made so far is durable; sends an answer at once when
    /// nothing is pending (follow-up work and announcements are always queued with a write).
    fn after_durable(&mut self, w: Waiting) {
        if let Some(w) = self.group.hold(w) {
            debug_assert!(w.then.is_empty() && w.closed.is_none() && w.commitment.is_none());
            if let Some((reply, answer)) = w.reply {
                let _ = reply.send(answer);
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                manifest,
                policy,
                allow,
                reply,
            } => {
                let result = self.submit(manifest, policy, allow).await;
                let _ = reply.send(result);
                self.tell_seal_demand();
            }
            Command::Control {
                from,
                request,
                reply,
            } => {
                let response = self.control(from, *request).await;
                self.answer(reply, response);
            }
            Command::OutputFetched {
                job,
                shard,
                outcome,
                hint,
                result,
            } => self.output_fetched(job, shard, outcome, hint, result),
            Command::Refetch {
                job,
                shard,
                outcome,
                hint,
            } => self.refetch_output(job, shard, outcome, hint),
            Command::View { job, reply } => {
                let now = now_ms();
                let warmth = self.book.warmth(now);
                let v = self
                    .book
                    .job(&job)
                    .map(|j| view::view(&job, j, warmth, now));
                let _ = reply.send(v);
            }
            Command::Summary { job, reply } => {
                let now = now_ms();
                let warmth = self.book.warmth(now);
                let s = self
                    .book
                    .job(&job)
                    .zip(self.book.index(&job))
                    .map(|(j, ix)| view::summary(&job, j, ix, warmth, now));
                let _ = reply.send(s);
            }
            Command::Wanting { found } => self.offer_wanting(found),
            Command::Delivered { id, stored } => {
                if let Err(e) = self.outbox.done(&id, stored) {
                    tracing::error!(receipt = %id, "could not remove a delivered receipt from the outbox: {e}; it will be sent again");
                }
            }
            Command::ExcludeChecked { household } => self.book.insert_excluded(household),
            Command::Numbered => {
                self.may_seal = true;
                self.seal();
            }
            Command::HoldSeals => self.may_seal = false,
            Command::Handed { id } => self.unhanded.retain(|c| c.id() != id),
            Command::Release { reply } => {
                let idle = self.may_release();
                if idle {
                    self.may_seal = false;
                }
                let _ = reply.send(idle);
            }
            Command::WithdrawRefused => self.withdraw_refused(),
            Command::KeyRotated { old, new, gap_ms } => {
                let Some(update) = self.book.inherit(&old, &new, gap_ms) else {
                    return;
                };
                let what = if update.exclude.is_empty() {
                    "a household rotated its key: its record under the old one counts for the new one"
                } else {
                    "a household excluded here rotated its key: the new one is excluded too"
                };
                match self.write(vec![update.clone()]) {
                    Ok(()) => tracing::info!(old = %old.to_hex(), new = %new.to_hex(), "{what}"),
                    // On disk at the node's next start, which tells the coordinator of every
                    // rotation again; meanwhile an exclusion holds in memory (safety first), a
                    // carried record does not.
                    Err(e) => {
                        tracing::error!("could not carry a rotated key's standing: {e}");
                        if !update.exclude.is_empty() {
                            self.book.apply(update);
                        }
                    }
                }
            }
            Command::KeysContested { keys } => {
                let Some(update) = self.book.uncarry(&keys) else {
                    return;
                };
                if let Err(e) = self.write(vec![update.clone()]) {
                    // Taken back in memory all the same (safety first); on disk at the node's
                    // next start, which tells the coordinator of every contest again.
                    tracing::error!(
                        "could not take back a contested household's carried record: {e}"
                    );
                    self.book.apply(update);
                }
            }
            Command::FailRunning { reason } => {
                let updates = self.book.fail_running(&reason, now_ms());
                if let Err(e) = self.write(updates) {
                    // The jobs stay running; the node asks again when it next starts.
                    tracing::error!("could not close the running jobs of a refused key: {e}");
                }
            }
            Command::List { reply } => {
                let now = now_ms();
                let warmth = self.book.warmth(now);
                let mut all: Vec<JobSummary> = self
                    .book
                    .jobs()
                    .filter_map(|(id, j)| {
                        Some(view::summary(id, j, self.book.index(id)?, warmth, now))
                    })
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
        allow: Vec<PublicKey>,
    ) -> Result<blake3::Hash, JobError> {
        manifest.validate().map_err(JobError::Invalid)?;
        // An allow-list goes into the job's policy, kept with it in `coord/policies`. A job
        // given a list and no policy takes the node's default policy as it is now (or plain
        // replication), so naming who may work it never changes how it is verified.
        let policy = if allow.is_empty() {
            policy
        } else {
            let mut p = policy
                .or_else(|| self.book.default_policy().cloned())
                .unwrap_or_else(|| crate::jobs::trust::Policy::fixed(manifest.replication));
            p.allow = allow;
            Some(p)
        };
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
        // A module no radiator can run (not WebAssembly, an import outside the deterministic
        // set, no shard ABI, over every radiator's size cap) is refused now, with the reason,
        // rather than announced for radiators to fetch, fail on and report. Each radiator's
        // own limits (size, shape, memory) are its to apply; they are not checked here.
        let module = manifest.module;
        self.store
            .blocking(move |store| {
                let len = store.len(&module)?.unwrap_or(0);
                if len > crate::exec::MAX_MODULE_BYTES as u64 {
                    return Ok(Err(format!(
                        "its module is {len} bytes, over the {} any radiator accepts",
                        crate::exec::MAX_MODULE_BYTES
                    )));
                }
                let bytes = store.get_bytes(&module)?;
                Ok(crate::exec::inspect::inspect(&bytes)
                    .map(|_| ())
                    .map_err(|e| e.to_string()))
            })
            .await?
            .map_err(|e| JobError::Invalid(format!("no radiator can run this job: {e}")))?;
        // The manifest is a blob under its own id, so radiators fetch it like any other blob.
        let bytes = manifest.to_bytes();
        let stored = self
            .store
            .blocking(move |store| store.put_bytes(&bytes))
            .await?;
        debug_assert_eq!(stored, id);
        let job = Book::new_job(manifest.clone(), now_ms());
        self.persist.submit(&id, &job, policy.as_ref()).await?;
        if let Some(p) = policy {
            self.book.set_policy(id, p);
        }
        // Each distinct blob once: a job may name one input for many shards, and every
        // `provide` is a round trip to the swarm task (65 536 of them for the largest job).
        let mut provided = HashSet::new();
        for h in std::iter::once(&id)
            .chain(std::iter::once(&manifest.module))
            .chain(manifest.inputs.iter())
        {
            if !provided.insert(*h) {
                continue;
            }
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

    async fn control(&mut self, from: libp2p::PeerId, request: Control) -> Response {
        let Some(household) = PublicKey::from_peer_id(&from) else {
            return Response::Error {
                detail: "your peer id carries no ed25519 household key".into(),
            };
        };
        if let Some(why) = self.refused.as_ref().and_then(|r| r(&household)) {
            if let Some(answer) = turned_away(&request, why) {
                return answer;
            }
        }
        let now = now_ms();
        let request = match request {
            Control::Claim(claim) => {
                return self.step(household, self.book.checked_claim(&household, claim, now))
            }
            Control::Other(request) => request,
        };
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
            // The handle checks claims and sends them as `Control::Claim`.
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
            // Answered by the node (`node::router`), never passed here.
            Request::Receipt { .. }
            | Request::Announce(_)
            | Request::Receipts { .. }
            | Request::Evidence { .. }
            | Request::Refusals { .. }
            | Request::LastCommitment
            | Request::Witness(_)
            | Request::Instance { .. }
            | Request::KeyEvents { .. } => {
                return Response::Error {
                    detail: "receipts, evidence, refusals, key events, commitments and \
                             announcements are the node's, not the coordinator's"
                        .into(),
                }
            }
            Request::Heat(demand) => {
                self.book
                    .note_demand(household, demand.demand_permille, false, now);
                // A radiator that found us through our work records (`net::work`) is
                // not among the peers our announcements reach: offered directly.
                if demand.demand_permille > 0
                    && self
                        .cadence
                        .offer_to(household, now, cadence::DIRECT_OFFER_WINDOW_MS)
                {
                    self.offer_directly(&household);
                }
                return Response::Noted;
            }
        };
        self.step(household, step)
    }

    /// Writes an accepted request's step; the answer to send once it is durable.
    fn step(&mut self, household: PublicKey, step: Result<Step, Response>) -> Response {
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
        if let Err(e) = self.commit(step) {
            tracing::error!("could not save the coordinator's state: {e}");
            // Nothing was acknowledged and the book is unchanged: the requester may ask again.
            return unsaved(answer, &e);
        }
        self.book.answer_after(answer, touched)
    }

    /// Writes a step and applies it; what follows waits until the write is durable.
    fn commit(&mut self, step: Step) -> Result<(), JobError> {
        self.write(vec![step.update])?;
        if !step.then.is_empty() {
            self.after_durable(Waiting {
                reply: None,
                then: step.then,
                closed: None,
                commitment: None,
            });
        }
        Ok(())
    }

    /// Stages updates (written behind: the next group flush in [`Coordinator::run`] commits
    /// and flushes them) and applies them to the book, in order. A failed write leaves the
    /// book and the staged batch unchanged. A closed job is announced once durable.
    fn write(&mut self, updates: Vec<Update>) -> Result<(), JobError> {
        {
            let with_books: Vec<(&Update, Option<&book::JobBook>)> = updates
                .iter()
                .map(|u| (u, u.job.and_then(|id| self.book.job(&id))))
                .collect();
            // The shard entries, the jobs' entries and the reputation records.
            self.persist.write(&mut self.staged, &with_books)?;
        }
        self.group.wrote();
        for update in updates {
            let closed = update.job.filter(|_| update.status.is_some());
            self.book.apply(update);
            if let Some(id) = closed {
                if let Some(j) = self.book.job(&id) {
                    tracing::info!(job = %id, status = ?j.status, "job finished");
                }
                self.after_durable(Waiting {
                    reply: None,
                    then: Vec::new(),
                    closed: Some(id),
                    commitment: None,
                });
            }
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
            Action::Settle { job, shard } => self.settle(job, shard),
            Action::CheckFinished { job } => self.check_finished(job),
        }
    }
}

/// What a requester is told instead of `answer` when the write it depended on failed:
/// nothing was acknowledged, so it may ask again.
fn unsaved(answer: Response, e: &JobError) -> Response {
    match answer {
        Response::Leased(_) | Response::Renewed { .. } => {
            busy(format!("the coordinator could not save the lease: {e}"))
        }
        _ => Response::Error {
            detail: format!("the coordinator could not save your report: {e}; send it again"),
        },
    }
}
