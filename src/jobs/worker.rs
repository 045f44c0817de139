//! The worker: the radiator's side of a job.
//!
//! It learns of jobs from announcements, and while its room wants heat (the number of slots it
//! is given) it asks their coordinators for leases, fetches the module and input (verified by
//! the store), runs the shard in the deterministic executor on a blocking thread, stores the
//! output, and sends a signed claim. A trap is reported as a failure, never as an output.
//! Leases being worked are kept in sled (`worker/leases`) so a radiator killed mid-shard
//! picks the work up again after a restart if the lease is still valid. A job whose
//! coordinator stays unreachable is dropped after `give_up`.
//!
//! While a shard is worked its lease is renewed every third of its length (`Request::Renew`),
//! so a shard slower than the lease does not livelock. Execution starts only if at least
//! [`min_lease_left`] of the lease remains (renewing first if needed), and a shard whose
//! renewal is refused is not claimed: its replica is someone else's by then.
//!
//! Lease-ahead (issue 15): while the room wants heat, the heat service may ask for shards held
//! ahead of the running ones ([`Worker::lease_ahead`]). They are leased, renewed and their
//! blobs fetched like any other, then wait at a gate ([`Gate`]) that lets at most the wanted
//! slots execute at once: when a running shard ends, a held one starts at once, and a gap in
//! the work on offer does not stop the heating. Only jobs a shard of which already ran here are
//! leased ahead, so a job this radiator must decline is never asked for twice at once. A held
//! shard whose room stops wanting heat is let go (its lease lapses at the coordinator within
//! `lease_secs`).
//!
//! Size: about 1000 lines, above the 700 the house style asks: lease/renew, the lease-ahead
//! gate, limits and decline, fetch, metering and claim grew here. Owed a split (lease and
//! renewal loop in one file, the gate and the shard run in another).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::sleep;

use crate::exec::{ExecError, Executor, Limits};
use crate::heat::energy::{EnergyMeter, MeterConfig};
use crate::identity::Identity;
use crate::model::job::MAX_MANIFEST_BYTES;
use crate::model::receipt::{Claim, WorkRecord};
use crate::model::wire::{DenyReason, Lease, Request, Response, PROTOCOL_VERSION};
use crate::model::{now_ms, JobManifest};
use crate::net::{NetError, Network};
use crate::store::Store;

use super::gc::JobBlobs;
use super::route::ControlRoute;
use super::JobError;

/// Most jobs a worker keeps track of at once; announcements beyond it are ignored until
/// some finish.
const MAX_KNOWN_JOBS: usize = 1024;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Estimated watts drawn by one busy core, for the CPU-time energy estimate.
    pub watts_per_core: f64,
    /// Drop a job whose coordinator stays unreachable this long.
    pub give_up: Duration,
    /// Test-only fault injection: report a wrong output for every shard (every cheater
    /// forges the same one, so cheaters collude). Absent from builds without the `testing`
    /// feature, which only the crate's own tests and benches enable.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub cheat: bool,
    /// Test-only fault injection: report the right output with one fuel unit too many.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub cheat_fuel: bool,
    /// Test-only fault injection: report every shard as failed without running it.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fake_failure: bool,
    /// Test-only fault injection: claim this many times the energy the meter charged.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub inflate_energy: u64,
}

/// The test-only faults, as no-ops when the `testing` feature is off: release builds carry no
/// way to make a radiator lie.
impl WorkerConfig {
    fn fakes_failure(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.fake_failure;
        #[cfg(not(feature = "testing"))]
        false
    }

    fn forge(&self, output: &mut Vec<u8>) {
        #[cfg(feature = "testing")]
        if self.cheat {
            output.extend_from_slice(b"forged");
        }
        #[cfg(not(feature = "testing"))]
        let _ = output;
    }

    fn claimed_fuel(&self, fuel: u64) -> u64 {
        #[cfg(feature = "testing")]
        return fuel + u64::from(self.cheat_fuel);
        #[cfg(not(feature = "testing"))]
        fuel
    }

    fn claimed_energy(&self, energy_mj: u64) -> u64 {
        #[cfg(feature = "testing")]
        return energy_mj.saturating_mul(self.inflate_energy.max(1));
        #[cfg(not(feature = "testing"))]
        energy_mj
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            watts_per_core: 15.0,
            give_up: Duration::from_secs(120),
            #[cfg(feature = "testing")]
            cheat: false,
            #[cfg(feature = "testing")]
            cheat_fuel: false,
            #[cfg(feature = "testing")]
            fake_failure: false,
            #[cfg(feature = "testing")]
            inflate_energy: 1,
        }
    }
}

/// What the node tells the worker.
pub enum WorkerEvent {
    Announced {
        job: blake3::Hash,
        coordinator: libp2p::PeerId,
    },
    /// `from` is the gossip author: only the job's own coordinator can close it.
    Closed {
        job: blake3::Hash,
        from: libp2p::PeerId,
    },
}

struct KnownJob {
    coordinator: libp2p::PeerId,
    next_try: Instant,
    unreachable_since: Option<Instant>,
    /// A shard of it ran here: its blobs reach this radiator and its module suits it, so
    /// shards of it may be leased ahead.
    worked: bool,
}

enum Outcome {
    Worked,
    Denied {
        reason: DenyReason,
        retry_after: Duration,
    },
    Unreachable(String),
    /// The job is beyond this radiator's limits; the coordinator was told why.
    Declined(String),
    /// The job's blobs cannot reach this radiator now (only a relay leads to their providers
    /// and hole punching failed); its lease was given back with the reason. Asked again after
    /// [`RELAYED_ONLY_RETRY`]: a later circuit may hole punch, or a directly reachable
    /// radiator may hold the blobs by then.
    RelayedOnly(String),
}

/// How long a job whose blobs only a relay could carry is left before asking again.
const RELAYED_ONLY_RETRY: Duration = Duration::from_secs(30);

/// The lease of a shard being worked, as its renewals leave it.
#[derive(Clone, Debug)]
struct Held {
    deadline_ms: u64,
    /// Why a renewal was refused, once one was.
    refused: Option<String>,
}

/// Times a claim is sent again when its coordinator could not save it.
const CLAIM_RETRIES: u32 = 3;

/// Renewals are never sent more often than this, whatever the lease length.
const MIN_RENEW_EVERY_MS: u64 = 100;

/// The least lease time that must be left to start executing a shard: a third of the lease
/// (what one renewal period leaves at worst), and never under 250 ms.
pub fn min_lease_left(length_ms: u64) -> u64 {
    (length_ms / 3).max(250)
}

#[derive(Serialize, Deserialize)]
struct SavedLease {
    coordinator: String,
    job: [u8; 32],
    shard: u32,
    nonce: [u8; 16],
    deadline_ms: u64,
}

/// Everything a shard task needs, cheap to clone into it.
#[derive(Clone)]
struct Ctx {
    identity: Identity,
    store: Store,
    net: Network,
    executor: Executor,
    /// The one path for requests to coordinators, this node's own included.
    route: ControlRoute,
    local_peer: libp2p::PeerId,
    leases: sled::Tree,
    /// Blobs brought in for jobs, deleted when their jobs are closed or dropped.
    blobs: JobBlobs,
    config: WorkerConfig,
    /// Fraction of full heat, in thousandths, sent along with lease requests.
    demand_permille: u16,
    /// The heat service's meter, or (a node without a heat service) one that estimates from
    /// CPU time.
    meter: EnergyMeter,
    /// At most the wanted slots execute at once; shards leased ahead wait here.
    gate: Arc<Gate>,
}

/// Lets at most `limit` shards execute at once (the slots the room wants). Shards leased ahead
/// of them wait for a turn with their blobs already fetched.
#[derive(Default)]
struct Gate {
    /// (limit, executing). A std mutex: held for a few instructions, never across an await.
    state: std::sync::Mutex<(usize, usize)>,
    turn: tokio::sync::Notify,
}

/// One executing shard's place at the gate, given back on drop.
struct Turn(Arc<Gate>);

impl Drop for Turn {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.1 = s.1.saturating_sub(1);
        }
        self.0.turn.notify_waiters();
    }
}

impl Gate {
    fn set_limit(&self, limit: usize) {
        let raised = match self.state.lock() {
            Ok(mut s) => {
                let raised = limit > s.0;
                s.0 = limit;
                raised
            }
            Err(_) => false,
        };
        if raised {
            self.turn.notify_waiters();
        }
    }

    fn limit(&self) -> usize {
        self.state.lock().map_or(0, |s| s.0)
    }

    fn try_take(self: &Arc<Self>) -> Option<Turn> {
        let mut s = self.state.lock().ok()?;
        (s.1 < s.0).then(|| {
            s.1 += 1;
            Turn(self.clone())
        })
    }
}

pub struct Worker {
    ctx: Ctx,
    slots: watch::Receiver<usize>,
    /// Shards to hold leased ahead of the running ones (the heat service's hint); none
    /// without a heat service.
    lease_ahead: Option<watch::Receiver<usize>>,
    max_slots: usize,
    events: mpsc::Receiver<WorkerEvent>,
    known: HashMap<blake3::Hash, KnownJob>,
    /// Jobs declined as beyond this radiator's limits: never asked for again, however often
    /// they are announced. At most [`MAX_KNOWN_JOBS`]; the oldest is forgotten first.
    declined: std::collections::VecDeque<blake3::Hash>,
    running: usize,
    /// Shard tasks in flight; aborted and awaited on shutdown so nothing outlives the node.
    tasks: JoinSet<(blake3::Hash, Outcome)>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: &sled::Db,
        identity: Identity,
        store: Store,
        net: Network,
        executor: Executor,
        route: ControlRoute,
        slots: watch::Receiver<usize>,
        max_slots: usize,
        config: WorkerConfig,
        events: mpsc::Receiver<WorkerEvent>,
        meter: Option<EnergyMeter>,
    ) -> Result<Worker, JobError> {
        let local_peer = identity.peer_id();
        let meter = meter.unwrap_or_else(|| {
            EnergyMeter::new(MeterConfig::cpu_estimate(config.watts_per_core, max_slots))
        });
        Ok(Worker {
            ctx: Ctx {
                identity,
                store,
                net,
                executor,
                route,
                local_peer,
                leases: db.open_tree("worker/leases")?,
                blobs: JobBlobs::open(db)?,
                config,
                demand_permille: 0,
                meter,
                gate: Arc::new(Gate::default()),
            },
            slots,
            lease_ahead: None,
            max_slots: max_slots.max(1),
            events,
            known: HashMap::new(),
            declined: std::collections::VecDeque::new(),
            running: 0,
            tasks: JoinSet::new(),
        })
    }

    /// Holds up to this many shards leased ahead of the running ones while the room wants
    /// heat (at most `max_slots` more): the heat service's `lease_ahead_slots`.
    pub fn lease_ahead(mut self, hint: watch::Receiver<usize>) -> Worker {
        self.lease_ahead = Some(hint);
        self
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.resume();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => {
                        self.on_event(ev);
                        // Ask for work at once rather than at the next tick: latency matters
                        // for small jobs.
                        self.start_work();
                    }
                    None => break,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok((job, outcome)) = done {
                        self.on_done(job, outcome);
                    } else {
                        self.running = self.running.saturating_sub(1);
                    }
                }
                _ = tick.tick() => self.start_work(),
                _ = shutdown.changed() => break,
            }
        }
        // Abandoned leases expire at their coordinators and are leased again.
        self.tasks.shutdown().await;
    }

    fn on_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Announced { job, coordinator } => {
                if self.known.len() >= MAX_KNOWN_JOBS && !self.known.contains_key(&job)
                    || self.declined.contains(&job)
                {
                    return;
                }
                self.known.entry(job).or_insert_with(|| {
                    tracing::debug!(job = %job, %coordinator, "learned of a job");
                    KnownJob {
                        coordinator,
                        next_try: Instant::now(),
                        unreachable_since: None,
                        worked: false,
                    }
                });
            }
            WorkerEvent::Closed { job, from } => {
                if self.known.get(&job).is_some_and(|k| k.coordinator == from) {
                    self.forget(job);
                }
            }
        }
    }

    /// Stops tracking `job` and deletes, off this task, the blobs fetched for it that no
    /// other job uses (see `jobs::gc`).
    fn forget(&mut self, job: blake3::Hash) {
        self.known.remove(&job);
        let (blobs, store) = (self.ctx.blobs.clone(), self.ctx.store.clone());
        tokio::task::spawn_blocking(move || match blobs.release(&store, &job) {
            Ok(0) => {}
            Ok(n) => tracing::info!(job = %job, "deleted {n} blobs the job no longer needs"),
            Err(e) => tracing::warn!(job = %job, "could not delete the job's blobs: {e}"),
        });
    }

    fn on_done(&mut self, job: blake3::Hash, outcome: Outcome) {
        self.running = self.running.saturating_sub(1);
        let give_up = self.ctx.config.give_up;
        let Some(k) = self.known.get_mut(&job) else {
            return;
        };
        match outcome {
            Outcome::Worked => {
                k.unreachable_since = None;
                k.next_try = Instant::now();
                k.worked = true;
            }
            Outcome::Denied {
                reason,
                retry_after,
            } => {
                k.unreachable_since = None;
                if retry_after.is_zero() {
                    tracing::info!(job = %job, ?reason, "coordinator has no more work for us");
                    self.forget(job);
                } else {
                    k.next_try = Instant::now() + retry_after;
                }
            }
            Outcome::Declined(reason) => {
                tracing::info!(job = %job, "declined: {reason}");
                self.forget(job);
                if self.declined.len() >= MAX_KNOWN_JOBS {
                    self.declined.pop_front();
                }
                self.declined.push_back(job);
            }
            Outcome::RelayedOnly(reason) => {
                tracing::info!(job = %job, "lease given back: {reason}; asking again in {RELAYED_ONLY_RETRY:?}");
                k.unreachable_since = None;
                k.next_try = Instant::now() + RELAYED_ONLY_RETRY;
            }
            Outcome::Unreachable(e) => {
                let since = *k.unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= give_up {
                    tracing::warn!(job = %job, "coordinator unreachable for {give_up:?} ({e}); dropping the job");
                    self.forget(job);
                } else {
                    k.next_try = Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    fn start_work(&mut self) {
        let wanted = (*self.slots.borrow()).min(self.max_slots);
        self.ctx.demand_permille = (wanted * 1000 / self.max_slots).min(1000) as u16;
        self.ctx.gate.set_limit(wanted);
        // Held ahead only while heat is wanted, and never more than one per slot.
        let ahead = match (&self.lease_ahead, wanted) {
            (Some(hint), 1..) => (*hint.borrow()).min(self.max_slots),
            _ => 0,
        };
        let now = Instant::now();
        while self.running < wanted + ahead {
            // Beyond the wanted slots only jobs already worked here are leased ahead: a job
            // this radiator may have to decline (limits, blobs it cannot reach) is tried one
            // shard at a time.
            let ahead_slot = self.running >= wanted;
            // The job tried longest ago goes first, so no job starves the others.
            let Some((job, k)) = self
                .known
                .iter_mut()
                .filter(|(_, k)| k.next_try <= now && (k.worked || !ahead_slot))
                .min_by_key(|(_, k)| k.next_try)
            else {
                return;
            };
            let job = *job;
            self.running += 1;
            let ctx = self.ctx.clone();
            let coordinator = k.coordinator;
            self.tasks.spawn(async move {
                let outcome = ctx.lease_and_work(job, coordinator).await;
                (job, outcome)
            });
        }
    }

    /// Picks up leases that were being worked when the node stopped, and asks again about
    /// every other job whose blobs are still held: a job that closed while this node was
    /// offline then answers "complete" (or stays unreachable) and its blobs are deleted.
    fn resume(&mut self) {
        self.resume_leases();
        let earlier = match self.ctx.blobs.jobs() {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!("could not list the blobs of earlier jobs: {e}");
                return;
            }
        };
        for (job, coordinator) in earlier {
            if self.known.len() >= MAX_KNOWN_JOBS {
                break;
            }
            self.known.entry(job).or_insert(KnownJob {
                coordinator,
                next_try: Instant::now(),
                unreachable_since: None,
                worked: false,
            });
        }
    }

    fn resume_leases(&mut self) {
        for item in self.ctx.leases.iter() {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!("cannot read the saved leases: {e}; none resumed");
                    return;
                }
            };
            let saved: Option<SavedLease> = serde_json::from_slice(&value).ok();
            let Some(saved) = saved.filter(|s| s.deadline_ms > now_ms()) else {
                if let Err(e) = self.ctx.leases.remove(key) {
                    tracing::error!("could not drop an expired saved lease: {e}");
                }
                continue;
            };
            let Ok(coordinator) = saved.coordinator.parse::<libp2p::PeerId>() else {
                if let Err(e) = self.ctx.leases.remove(key) {
                    tracing::error!("could not drop an unreadable saved lease: {e}");
                }
                continue;
            };
            let job = blake3::Hash::from_bytes(saved.job);
            let lease = Lease {
                job,
                shard: saved.shard,
                nonce: saved.nonce,
                deadline_ms: saved.deadline_ms,
            };
            tracing::info!(job = %job, shard = saved.shard, "resuming a shard leased before restart");
            self.known.entry(job).or_insert(KnownJob {
                coordinator,
                next_try: Instant::now(),
                unreachable_since: None,
                worked: false,
            });
            self.running += 1;
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move {
                let result = ctx.work(coordinator, lease).await;
                (job, ctx.outcome(job, coordinator, result).await)
            });
        }
    }
}

impl Ctx {
    async fn ask(
        &self,
        coordinator: libp2p::PeerId,
        request: Request,
    ) -> Result<Response, JobError> {
        self.route.request(coordinator, &request).await
    }

    async fn lease_and_work(&self, job: blake3::Hash, coordinator: libp2p::PeerId) -> Outcome {
        let request = Request::Lease {
            job,
            protocol: PROTOCOL_VERSION,
            demand_permille: self.demand_permille,
        };
        match self.ask(coordinator, request).await {
            Ok(Response::Leased(lease)) if lease.job == job => {
                let result = self.work(coordinator, lease).await;
                self.outcome(job, coordinator, result).await
            }
            Ok(Response::Denied {
                reason,
                retry_after_ms,
                detail,
            }) => {
                tracing::debug!(job = %job, ?reason, "no lease: {detail}");
                Outcome::Denied {
                    reason,
                    retry_after: Duration::from_millis(retry_after_ms.min(60_000)),
                }
            }
            Ok(other) => {
                Outcome::Unreachable(format!("unexpected answer to a lease request: {other:?}"))
            }
            Err(e) => Outcome::Unreachable(e.to_string()),
        }
    }

    /// What a worked lease comes to. A job beyond this radiator's limits is declined: the
    /// coordinator is told why (and passes it on to the submitter), and the job is dropped.
    async fn outcome(
        &self,
        job: blake3::Hash,
        coordinator: libp2p::PeerId,
        result: Result<(), JobError>,
    ) -> Outcome {
        match result {
            Ok(()) => Outcome::Worked,
            Err(e @ JobError::RelayedOnly(_)) => {
                // The lease goes back at once (a decline releases it) and the submitter sees
                // why, rather than the shard waiting for the lease to expire. The coordinator
                // does not bar a household that declined, so it may ask again later.
                let reason = e.to_string();
                tracing::warn!(job = %job, %coordinator, "{reason}; declining the job for now");
                self.decline(coordinator, job, &reason).await;
                Outcome::RelayedOnly(reason)
            }
            Err(JobError::BeyondLimits(reason)) => {
                self.decline(coordinator, job, &reason).await;
                Outcome::Declined(reason)
            }
            Err(e) => Outcome::Unreachable(e.to_string()),
        }
    }

    /// Tells the coordinator this household declines the job, which releases its leases of
    /// it. The job is declined here all the same if the coordinator cannot be told; the
    /// leases then simply expire.
    async fn decline(&self, coordinator: libp2p::PeerId, job: blake3::Hash, reason: &str) {
        let request = Request::Decline {
            job,
            reason: reason.to_string(),
        };
        if let Err(e) = self.ask(coordinator, request).await {
            tracing::debug!(job = %job, "could not tell the coordinator: {e}");
        }
    }

    /// Fetches a blob of at most `max_len` bytes. A longer one is refused before any of its
    /// bytes is fetched, and the job is declined as beyond this radiator's limits.
    ///
    /// The blob is recorded as used by `job` (brought in if it was not held), so it is
    /// deleted once the job is closed or dropped; not for this household's own jobs.
    async fn fetch_within(
        &self,
        job: &blake3::Hash,
        hash: blake3::Hash,
        from: libp2p::PeerId,
        max_len: u64,
        what: &str,
    ) -> Result<(), JobError> {
        let own_job = from == self.local_peer;
        // A blob already held (the submitter's own) is checked against the limit too.
        if let Some(len) = self.store.len(&hash)? {
            if len > max_len {
                return Err(too_big(what, len, max_len));
            }
            if !own_job {
                self.blobs.record(job, &from, &hash, false)?;
            }
            return Ok(());
        }
        // Recorded before fetching, so a blob that arrives is never left unrecorded.
        if !own_job {
            self.blobs.record(job, &from, &hash, true)?;
        }
        let hint = (!own_job).then_some(from);
        match self.net.fetch_blob_within(hash, hint, max_len).await {
            Ok(()) => Ok(()),
            Err(NetError::BlobTooLarge { len, .. }) => Err(too_big(what, len, max_len)),
            // Behind NATs that defeat hole punching (symmetric ones) a relay is the only path
            // to the submitter, and blobs never cross it: waiting would only hold the lease
            // until it expires. Declined instead (issue 11).
            Err(e @ NetError::RelayedOnly { .. }) => {
                Err(JobError::RelayedOnly(format!("the {what}: {e}")))
            }
            Err(e) => Err(JobError::Network(format!(
                "fetching {}: {e}",
                hash.to_hex()
            ))),
        }
    }

    /// Runs one leased shard and reports it.
    async fn work(&self, coordinator: libp2p::PeerId, lease: Lease) -> Result<(), JobError> {
        let key = [lease.job.as_bytes().as_slice(), &lease.shard.to_be_bytes()].concat();
        let saved = SavedLease {
            coordinator: coordinator.to_string(),
            job: *lease.job.as_bytes(),
            shard: lease.shard,
            nonce: lease.nonce,
            deadline_ms: lease.deadline_ms,
        };
        self.leases.insert(
            key.as_slice(),
            serde_json::to_vec(&saved).map_err(|e| JobError::Corrupt(e.to_string()))?,
        )?;
        let (held_tx, held) = watch::channel(Held {
            deadline_ms: lease.deadline_ms,
            refused: None,
        });
        let length_ms = lease.deadline_ms.saturating_sub(now_ms());
        let renewals = self.keep_renewing(coordinator, &lease, &key, length_ms, held_tx);
        tokio::pin!(renewals);
        let run = self.run_shard(coordinator, &lease, &held, length_ms);
        tokio::pin!(run);
        let mut renewing = true;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                // Renewal ends only when refused; the shard runs on but will not be claimed.
                _ = &mut renewals, if renewing => renewing = false,
            }
        };
        if let Err(e) = self.leases.remove(key.as_slice()) {
            tracing::error!(job = %lease.job, shard = lease.shard, "could not forget a finished lease: {e}; it is dropped at the next restart");
        }
        result
    }

    /// Renews the lease every third of its length until refused. Busy answers and
    /// unreachable coordinators are tried again; any other answer is a refusal.
    async fn keep_renewing(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        key: &[u8],
        length_ms: u64,
        held: watch::Sender<Held>,
    ) {
        let every = Duration::from_millis((length_ms / 3).max(MIN_RENEW_EVERY_MS));
        loop {
            sleep(every).await;
            let request = Request::Renew {
                job: lease.job,
                shard: lease.shard,
                nonce: lease.nonce,
            };
            match self.ask(coordinator, request).await {
                Ok(Response::Renewed { deadline_ms }) => {
                    held.send_modify(|h| h.deadline_ms = deadline_ms);
                    let saved = SavedLease {
                        coordinator: coordinator.to_string(),
                        job: *lease.job.as_bytes(),
                        shard: lease.shard,
                        nonce: lease.nonce,
                        deadline_ms,
                    };
                    // The saved lease only helps a restart resume; failing to update it
                    // costs at most that resumption.
                    match serde_json::to_vec(&saved) {
                        Ok(bytes) => {
                            if let Err(e) = self.leases.insert(key, bytes) {
                                tracing::warn!(job = %lease.job, shard = lease.shard, "could not save a renewed lease: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("could not encode a renewed lease: {e}"),
                    }
                }
                Ok(Response::Denied {
                    reason: DenyReason::Busy,
                    ..
                }) => {}
                Ok(other) => {
                    let why = match other {
                        Response::Denied { detail, .. } | Response::Error { detail } => detail,
                        other => format!("unexpected answer: {other:?}"),
                    };
                    tracing::warn!(job = %lease.job, shard = lease.shard, "lease renewal refused: {why}; the shard will not be claimed");
                    held.send_modify(|h| h.refused = Some(why));
                    return;
                }
                Err(e) => {
                    tracing::debug!(job = %lease.job, shard = lease.shard, "lease not renewed yet: {e}");
                }
            }
        }
    }

    /// Waits until fewer shards execute than the room wants. Gives up when the room wants no
    /// heat at all (a warm room does not hold work others could do), or when the lease is
    /// refused or has run out while waiting.
    async fn wait_turn(&self, held: &watch::Receiver<Held>) -> Result<Turn, String> {
        loop {
            let notified = self.gate.turn.notified();
            tokio::pin!(notified);
            // Registered before checking, so a turn given back in between is not missed.
            notified.as_mut().enable();
            if let Some(turn) = self.gate.try_take() {
                return Ok(turn);
            }
            if self.gate.limit() == 0 {
                return Err("the room wants no heat now; the lease held ahead is let go".into());
            }
            {
                let h = held.borrow();
                if let Some(why) = &h.refused {
                    return Err(why.clone());
                }
                if h.deadline_ms <= now_ms() {
                    return Err("the lease held ahead ran out while waiting for a slot".into());
                }
            }
            // Renewals and slot changes are seen within a tick of the worker's loop.
            tokio::select! {
                _ = notified => {}
                _ = sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Makes sure enough of the lease is left to start executing: renews now if not.
    async fn ready_to_run(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        held: &watch::Receiver<Held>,
        length_ms: u64,
    ) -> Result<(), String> {
        let h = held.borrow().clone();
        if let Some(why) = h.refused {
            return Err(why);
        }
        let min = min_lease_left(length_ms);
        if h.deadline_ms.saturating_sub(now_ms()) >= min {
            return Ok(());
        }
        let request = Request::Renew {
            job: lease.job,
            shard: lease.shard,
            nonce: lease.nonce,
        };
        match self.ask(coordinator, request).await {
            Ok(Response::Renewed { deadline_ms })
                if deadline_ms.saturating_sub(now_ms()) >= min =>
            {
                Ok(())
            }
            Ok(other) => Err(format!(
                "too little of the lease is left and it was not renewed: {other:?}"
            )),
            Err(e) => Err(format!(
                "too little of the lease is left and the coordinator is unreachable: {e}"
            )),
        }
    }

    /// Runs one leased shard inside its own `shard{job, shard}` span. The span instruments the
    /// future rather than being entered: a guard held across an `.await` stays entered on the
    /// thread while other tasks run, and their lines were logged under this shard's name (the
    /// crash soak attributed claims to the wrong shards that way).
    async fn run_shard(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        held: &watch::Receiver<Held>,
        length_ms: u64,
    ) -> Result<(), JobError> {
        let span = tracing::info_span!("shard", job = %lease.job, shard = lease.shard);
        self.run_shard_in_span(coordinator, lease, held, length_ms)
            .instrument(span)
            .await
    }

    async fn run_shard_in_span(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        held: &watch::Receiver<Held>,
        length_ms: u64,
    ) -> Result<(), JobError> {
        self.fetch_within(
            &lease.job,
            lease.job,
            coordinator,
            MAX_MANIFEST_BYTES as u64,
            "manifest",
        )
        .await?;
        let manifest = JobManifest::from_bytes(&self.store.get_bytes(&lease.job)?)
            .map_err(|e| JobError::Invalid(format!("manifest: {e}")))?;
        if manifest.id() != lease.job {
            return Err(JobError::Invalid(
                "the manifest does not hash to the job id".into(),
            ));
        }
        if manifest.submitter.peer_id() != Some(coordinator) {
            return Err(JobError::Invalid(
                "the lease came from a node that did not submit the job".into(),
            ));
        }
        let input_hash = *manifest
            .inputs
            .get(lease.shard as usize)
            .ok_or_else(|| JobError::Invalid(format!("the job has no shard {}", lease.shard)))?;
        // The radiator's own limits, checked as soon as the manifest is known and before
        // anything else is fetched: a manifest may ask for less, never for more.
        let own = self.executor.limits();
        if manifest.limits.memory_bytes > own.memory_per_shard {
            return Err(JobError::BeyondLimits(format!(
                "the job asks for {} MiB of memory per shard; this radiator allows at most {} MiB",
                manifest.limits.memory_bytes >> 20,
                own.memory_per_shard >> 20
            )));
        }
        self.fetch_within(
            &lease.job,
            manifest.module,
            coordinator,
            own.module_bytes,
            "module",
        )
        .await?;
        // Compile (or find compiled) now, before the input is fetched and before the meter
        // starts: a module beyond this radiator's shape or compile-time limits is declined
        // here, and compiling is not shard execution. Other errors surface again from `run`
        // below and are reported as the shard's failure.
        let module = self.store.get_bytes(&manifest.module)?;
        let (executor, module_hash) = (self.executor.clone(), manifest.module);
        let (module, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = executor.prepare(&module_hash, &module);
            (module, prepared)
        })
        .await
        .map_err(|e| JobError::Invalid(format!("the compile thread died: {e}")))?;
        match prepared {
            Err(e) if e.exceeds_radiator_limits() => {
                return Err(JobError::BeyondLimits(e.to_string()))
            }
            Err(e @ ExecError::CompileBusy { .. }) => return Err(e.into()),
            _ => {}
        }
        self.fetch_within(
            &lease.job,
            input_hash,
            coordinator,
            own.input_bytes,
            "shard input",
        )
        .await?;
        let input = self.store.get_bytes(&input_hash)?;
        // A shard leased ahead waits here, ready, for a running one to end.
        let turn = match self.wait_turn(held).await {
            Ok(turn) => turn,
            Err(why) => {
                tracing::info!("not starting the shard: {why}");
                return Ok(());
            }
        };
        if let Err(why) = self.ready_to_run(coordinator, lease, held, length_ms).await {
            tracing::info!("not starting the shard: {why}");
            return Ok(());
        }
        if self.config.fakes_failure() {
            let request = Request::Failure {
                job: lease.job,
                shard: lease.shard,
                nonce: lease.nonce,
                reason: "test fault: this radiator pretends the shard failed".into(),
            };
            self.ask(coordinator, request).await?;
            return Ok(());
        }
        let limits = Limits {
            fuel: manifest.limits.fuel_per_shard,
            memory_bytes: manifest.limits.memory_bytes,
            ..Limits::default()
        };
        let executor = self.executor.clone();
        let module_hash = manifest.module;
        // The meter's window is exactly the execution: fetching, queueing and claiming are not
        // shard energy, and the receipt records this window.
        let mark = self.meter.start_shard();
        let outcome = tokio::task::spawn_blocking(move || {
            executor.run(&module_hash, &module, &input, &limits)
        })
        .await;
        // Finish the meter's mark whatever the outcome, so a trap does not leave a shard
        // counted as executing.
        let energy = self.meter.finish_shard(mark);
        // The slot is free for a shard held ahead while this one is verified and claimed.
        drop(turn);
        let outcome =
            outcome.map_err(|e| JobError::Invalid(format!("the shard thread died: {e}")))?;
        let out = match outcome {
            Ok(out) => out,
            // Beyond this radiator (module shape, compile time): not the shard's fault.
            Err(e) if e.exceeds_radiator_limits() => {
                return Err(JobError::BeyondLimits(e.to_string()))
            }
            // Earlier over-long compilations still running here: try again later.
            Err(e @ ExecError::CompileBusy { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::info!("shard failed: {e}");
                let request = Request::Failure {
                    job: lease.job,
                    shard: lease.shard,
                    nonce: lease.nonce,
                    reason: e.to_string(),
                };
                self.ask(coordinator, request).await?;
                return Ok(());
            }
        };
        let mut output = out.output;
        self.config.forge(&mut output);
        // An output for another household's job is not this household's to keep: it goes
        // with the job (`jobs::gc`). For its own jobs the household keeps it.
        let output_hash = if coordinator == self.local_peer {
            self.store.put_bytes(&output)?
        } else {
            let hash = self.store.put_bytes_unkept(&output)?;
            self.blobs.record(&lease.job, &coordinator, &hash, true)?;
            hash
        };
        if let Err(e) = self.net.provide(output_hash).await {
            tracing::debug!("could not advertise output: {e}");
        }
        let record = WorkRecord {
            job: lease.job,
            shard: lease.shard,
            module: manifest.module,
            input: input_hash,
            output: output_hash,
            worker: self.identity.public(),
            submitter: manifest.submitter,
            fuel: self.config.claimed_fuel(out.fuel),
            energy_mj: self.config.claimed_energy(energy.energy_mj),
            method: energy.method,
            start_ms: energy.start_ms,
            end_ms: energy.end_ms,
            nonce: lease.nonce,
        };
        if let Some(why) = held.borrow().refused.clone() {
            tracing::info!("shard done but its lease was not renewed ({why}); no claim");
            return Ok(());
        }
        let claim =
            Claim::sign(record, &self.identity).map_err(|e| JobError::Invalid(e.to_string()))?;
        // A coordinator that could not save the claim answers Error and saved nothing: send
        // it again a few times while the lease (renewed meanwhile) lasts.
        let mut tries = 0;
        loop {
            match self.ask(coordinator, Request::Claim(claim.clone())).await? {
                Response::ClaimAccepted { verified } => {
                    tracing::debug!(fuel = out.fuel, verified, "claim accepted");
                    return Ok(());
                }
                Response::ClaimRejected { detail } => {
                    tracing::warn!("claim rejected: {detail}");
                    return Ok(());
                }
                Response::Error { detail } if tries < CLAIM_RETRIES => {
                    tracing::warn!(
                        "coordinator could not take the claim: {detail}; sending it again"
                    );
                    tries += 1;
                    sleep(Duration::from_secs(1)).await;
                }
                other => {
                    return Err(JobError::Network(format!(
                        "unexpected answer to a claim: {other:?}"
                    )))
                }
            }
        }
    }
}

fn too_big(what: &str, len: u64, max: u64) -> JobError {
    JobError::BeyondLimits(format!(
        "the {what} is {len} bytes; this radiator accepts at most {max} (it was not fetched)"
    ))
}
