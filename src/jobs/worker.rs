//! The worker: the radiator's side of a job.
//!
//! It learns of jobs from announcements, and while its room wants heat (the number of slots it
//! is given) it asks their coordinators for leases, fetches the module and input (verified by
//! the store), runs the shard in the deterministic executor on a blocking thread, stores the
//! output, and sends a signed claim. A trap is reported as a failure, never as an output.
//! Leases being worked are kept in sled (`worker/leases`) so a radiator killed mid-shard
//! picks the work up again after a restart if the lease is still valid. A job whose
//! coordinator stays unreachable is asked again less and less often ([`unanswered_wait`])
//! and dropped after `give_up`.
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
//! Claims go through a durable outbox (`worker/claims`, [`claims`]): a signed claim is written
//! and flushed before it is sent, sent again with the same bytes until the coordinator answers,
//! and a restart sends a stored claim again instead of running its shard a second time.
//!
//! Layout: this file holds the worker's loop (which jobs to ask, how many shards at once,
//! what a restart resumes); `lease.rs` asks for, saves and renews a lease; `gate.rs` lets the
//! wanted slots execute; `shard.rs` fetches and runs one shard; `claims.rs` keeps and sends
//! claims.

mod claims;
mod gate;
mod lease;
mod shard;

#[cfg(feature = "testing")]
pub use claims::{ClaimEvent, ClaimLog, ClaimStop};
pub use lease::min_lease_left;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::exec::Executor;
use crate::heat::energy::{EnergyMeter, MeterConfig};
use crate::identity::Identity;
use crate::model::now_ms;
use crate::model::wire::{DenyReason, Lease};
use crate::net::Network;
use crate::store::Store;

use claims::{ClaimOutbox, MAX_STORED_CLAIMS};
use gate::Gate;
use lease::SavedLease;

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
    /// Test-only: each shard's thread waits this long inside the meter's window before it
    /// runs, as a thread descheduled on a busy machine would (its CPU time is unchanged).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub stall: Duration,
    /// Test-only: stop the worker on its way to sending a claim, as if killed there.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub claim_stop: Option<ClaimStop>,
    /// Test-only: record what becomes of each claim.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub claim_log: Option<ClaimLog>,
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

    fn stall(&self) -> Duration {
        #[cfg(feature = "testing")]
        return self.stall;
        #[cfg(not(feature = "testing"))]
        Duration::ZERO
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
            #[cfg(feature = "testing")]
            stall: Duration::ZERO,
            #[cfg(feature = "testing")]
            claim_stop: None,
            #[cfg(feature = "testing")]
            claim_log: None,
        }
    }
}

/// Whether a coordinator (its PeerId) is refused: the node's set of revoked and equivocating
/// keys, which the worker only reads.
pub type Refused = Arc<dyn Fn(&libp2p::PeerId) -> bool + Send + Sync>;

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
    /// Asks its coordinator did not answer in a row ([`unanswered_wait`]).
    unanswered: u32,
    /// A shard of it ran here: its blobs reach this radiator and its module suits it, so
    /// shards of it may be leased ahead.
    worked: bool,
}

enum Outcome {
    Worked,
    Denied {
        reason: DenyReason,
        retry_after: Duration,
        /// The coordinator's words (bounded by the wire format), logged when the job is
        /// dropped so the household sees why (an allow-list, an exclusion).
        detail: String,
    },
    Unreachable(String),
    /// The job is beyond this radiator's limits; the coordinator was told why.
    Declined(String),
    /// The job's blobs cannot reach this radiator now (only a relay leads to their providers
    /// and hole punching failed), or its store has no room for them now (its quota, the free
    /// space it keeps on its disk); its lease was given back with the reason. Asked again
    /// after [`GIVE_BACK_RETRY`]: a later circuit may hole punch, a directly reachable
    /// radiator may hold the blobs, or closed jobs may have freed room by then.
    GivenBack(String),
}

/// How long a job given back ([`Outcome::GivenBack`]) is left before asking again.
const GIVE_BACK_RETRY: Duration = Duration::from_secs(30);

/// The longest wait between two asks of a coordinator that does not answer.
const MAX_UNANSWERED_WAIT: Duration = Duration::from_secs(30);

/// How long to wait before asking again a coordinator that has not answered `failures` times
/// in a row (lease requests: `first` 1 s; claims: 2 s): `first`, doubling each time, at most
/// [`MAX_UNANSWERED_WAIT`]. A gone coordinator is asked about 8 times before `give_up` (120
/// s), not every second: every ask of a peer not connected is a dial, and to a home behind
/// NAT a circuit at its relay, whose rate limiter charges this radiator for it (30, then one
/// per 2 min; `docs/operations.md`, "Running a relay"). One that comes back is found within
/// 30 s.
pub(super) fn unanswered_wait(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    first
        .saturating_mul(1u32 << doublings)
        .min(MAX_UNANSWERED_WAIT)
}

/// The lease of a shard being worked, as its renewals leave it.
#[derive(Clone, Debug)]
struct Held {
    deadline_ms: u64,
    /// Why a renewal was refused, once one was.
    refused: Option<String>,
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
    /// Signed claims, stored before they are sent and kept until answered.
    claims: ClaimOutbox,
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

pub struct Worker {
    ctx: Ctx,
    slots: watch::Receiver<usize>,
    /// Shards to hold leased ahead of the running ones (the heat service's hint); none
    /// without a heat service.
    lease_ahead: Option<watch::Receiver<usize>>,
    /// Whether a coordinator is refused here (its household revoked its key, or it was
    /// caught equivocating: `node::refusals`); none refused unless the node says.
    refused: Option<Refused>,
    max_slots: usize,
    events: mpsc::Receiver<WorkerEvent>,
    known: HashMap<blake3::Hash, KnownJob>,
    /// Jobs declined as beyond this radiator's limits: never asked for again, however often
    /// they are announced. At most [`MAX_KNOWN_JOBS`]; the oldest is forgotten first.
    declined: std::collections::VecDeque<blake3::Hash>,
    running: usize,
    /// Shard tasks in flight; aborted and awaited on shutdown so nothing outlives the node.
    tasks: JoinSet<(blake3::Hash, Outcome)>,
    /// Stored claims being sent again: at most one per claim in the outbox.
    resends: JoinSet<()>,
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
                claims: ClaimOutbox::open(db)?,
                blobs: JobBlobs::open(db)?,
                config,
                demand_permille: 0,
                meter,
                gate: Arc::new(Gate::default()),
            },
            slots,
            lease_ahead: None,
            refused: None,
            max_slots: max_slots.max(1),
            events,
            known: HashMap::new(),
            declined: std::collections::VecDeque::new(),
            running: 0,
            tasks: JoinSet::new(),
            resends: JoinSet::new(),
        })
    }

    /// Holds up to this many shards leased ahead of the running ones while the room wants
    /// heat (at most `max_slots` more): the heat service's `lease_ahead_slots`.
    pub fn lease_ahead(mut self, hint: watch::Receiver<usize>) -> Worker {
        self.lease_ahead = Some(hint);
        self
    }

    /// Asks `refused` before each lease: a job whose coordinator is refused is forgotten,
    /// however this worker learned of it (an announcement heard before the refusal, the blobs
    /// of an earlier run), so no heat goes into receipts a verifier would void.
    pub fn refusing(mut self, refused: Refused) -> Worker {
        self.refused = Some(refused);
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
                Some(_) = self.resends.join_next(), if !self.resends.is_empty() => {}
                _ = tick.tick() => {
                    self.resend_claims();
                    self.start_work();
                }
                _ = shutdown.changed() => break,
            }
        }
        // Abandoned leases expire at their coordinators and are leased again; stored claims
        // are sent again after the restart.
        self.tasks.shutdown().await;
        self.resends.shutdown().await;
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
                        unanswered: 0,
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
                k.unanswered = 0;
                k.next_try = Instant::now();
                k.worked = true;
            }
            Outcome::Denied {
                reason,
                retry_after,
                detail,
            } => {
                k.unreachable_since = None;
                k.unanswered = 0;
                if retry_after.is_zero() {
                    tracing::info!(job = %job, ?reason, "coordinator has no more work for us: {detail}");
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
            Outcome::GivenBack(reason) => {
                tracing::info!(job = %job, "lease given back: {reason}; asking again in {GIVE_BACK_RETRY:?}");
                k.unreachable_since = None;
                k.unanswered = 0;
                k.next_try = Instant::now() + GIVE_BACK_RETRY;
            }
            Outcome::Unreachable(e) => {
                let since = *k.unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= give_up {
                    tracing::warn!(job = %job, "coordinator unreachable for {give_up:?} ({e}); dropping the job");
                    self.forget(job);
                } else {
                    k.unanswered = k.unanswered.saturating_add(1);
                    k.next_try =
                        Instant::now() + unanswered_wait(Duration::from_secs(1), k.unanswered);
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
        // Claims whose coordinators do not answer cannot pile up: no new lease until the
        // outbox drains (`claims.rs`, its bound).
        if self.ctx.claims.len() >= MAX_STORED_CLAIMS {
            tracing::debug!("{MAX_STORED_CLAIMS} claims wait for an answer; asking for no lease");
            return;
        }
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
            let coordinator = k.coordinator;
            if self.refused.as_ref().is_some_and(|r| r(&coordinator)) {
                tracing::info!(job = %job, %coordinator, "the job's coordinator is refused here (revoked or equivocated); job dropped");
                self.forget(job);
                continue;
            }
            self.running += 1;
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move {
                let outcome = ctx.lease_and_work(job, coordinator).await;
                (job, outcome)
            });
        }
    }

    /// Sends again the stored claims that are due (after a restart, or whose coordinator did
    /// not answer), each in the span of its shard.
    fn resend_claims(&mut self) {
        for out in self.ctx.claims.due() {
            let ctx = self.ctx.clone();
            let span = tracing::info_span!("shard", job = %out.job(), shard = out.shard());
            self.resends
                .spawn(async move { ctx.resend(out).await }.instrument(span));
        }
    }

    /// Picks up leases that were being worked when the node stopped, and asks again about
    /// every other job whose blobs are still held: a job that closed while this node was
    /// offline then answers "complete" (or stays unreachable) and its blobs are deleted.
    fn resume(&mut self) {
        let stored = self.ctx.claims.load();
        if stored > 0 {
            tracing::info!("{stored} stored claims to send again");
        }
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
                unanswered: 0,
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
            // Its claim was stored before the stop: that claim is sent again (`claims.rs`),
            // the shard is not run a second time. A second run's claim would differ from the
            // first, which the coordinator may already have counted.
            if self
                .ctx
                .claims
                .holds(&claims::key(&job, saved.shard), saved.deadline_ms)
            {
                tracing::info!(job = %job, shard = saved.shard, "the shard leased before the restart was claimed; its stored claim is sent again");
                if let Err(e) = self.ctx.leases.remove(key) {
                    tracing::error!("could not drop a claimed saved lease: {e}");
                }
                continue;
            }
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
                unanswered: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinator_that_does_not_answer_is_asked_about_eight_times_before_give_up() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=7)
            .map(|n| unanswered_wait(first, n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(unanswered_wait(first, 0), first, "the first failure");
        assert_eq!(unanswered_wait(first, u32::MAX), MAX_UNANSWERED_WAIT);
        // Asks at 0, 1, 3, 7, 15, 31, 61, 91 s: eight before the default give_up of 120 s.
        let (mut at, mut asks) = (Duration::ZERO, 0);
        while at < WorkerConfig::default().give_up {
            asks += 1;
            at += unanswered_wait(first, asks);
        }
        assert_eq!(asks, 8);
    }
}
