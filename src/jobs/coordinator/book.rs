//! The coordinator's book: every decision about a job and its shards, with no I/O.
//!
//! Leases, renewals, claims, failures, the replica vote, exclusions and heat priority are
//! decided here. The book reads no clock (time comes in as `now_ms`), draws no randomness
//! (lease nonces come in as arguments), and touches no disk or network: it is a state
//! machine in the manner of quinn-proto. Every operation that changes state is split in two:
//!
//! 1. a method taking `&self` works out the change and returns it as an [`Update`] (the new
//!    state of one shard, perhaps a new job status and exclusions) together with the answer
//!    for the requester and any follow-up [`Action`]s;
//! 2. the actor writes the update to disk and, only once that succeeded, calls
//!    [`Book::apply`] and sends the answer.
//!
//! So nothing is acknowledged before it is durable, and a failed write leaves the book
//! exactly as the disk has it. Must not touch: sled, the network, tokio, the wall clock.
//!
//! Parts: `shard.rs` (one shard's and one job's state, and the vote), `demand.rs` (heat
//! priority), `verify.rs` (after the vote: output checked, claims settled, job assembled),
//! `draw.rs` (one household's claims together stay within one circuit), `refused.rs` (what
//! households whose keys the node refuses still hold is taken back), `tests.rs` (unit and
//! property tests with injected time and real signatures).
//!
//! `index.rs` keeps, per job, the shards a decision has to look at, so a lease costs
//! O(shards in flight), not O(shards).
//!
//! Size: about 1 050 lines since trust (reputation, probation, adaptive replication, spot
//! checks) joined the lease and vote decisions; `trust` policy helpers are the next to move
//! into a part of their own.

mod demand;
mod draw;
mod index;
mod refused;
mod rotated;
mod shard;
mod verify;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::identity::PublicKey;
use crate::model::receipt::{Claim, ReceiptError};
use crate::model::wire::{DenyReason, Lease, Response, PROTOCOL_VERSION};
use crate::model::JobManifest;

use crate::jobs::trust::{self, Policy, Record, Reputation};
use demand::Demands;
pub use demand::Warmth;
use draw::Draws;
use index::Rooms;
pub use index::ShardIndex;
pub use shard::{
    decide, replicas_needed, Decision, FailureRec, JobBook, JobStatus, Judge, LeaseRec, Outcome,
    ShardBook, ShardCredit, MAX_REPLICAS,
};
pub use verify::{Finish, Settlement};

/// How far a worker's clock may be from the coordinator's when a claim's window is checked
/// against its lease. Radiators keep NTP time; a minute is far more than NTP leaves.
pub const CLOCK_SKEW_MS: u64 = 60_000;

/// Most live leases one household may hold on one job. A radiator runs one shard per core
/// and leases one shard at a time as a core frees up, so 16 covers a 16-core radiator with
/// room to spare; without a bound one key could hold a lease on every shard and stall the
/// job until the leases expire (issue 10).
pub const MAX_LEASES_PER_HOUSEHOLD: usize = 16;

/// Lease timing, fixed per coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTerms {
    /// How long a lease lasts, and how far each renewal extends it.
    pub lease_ms: u64,
    /// The longest a lease may live in total, renewals included, counted from when it was
    /// granted. A radiator's watchdog stops any shard after 120 s; the default (600 s)
    /// leaves room for fetching inputs on a slow link, and a worker that keeps renewing a
    /// dead shard loses it after this.
    pub max_total_ms: u64,
}

/// A claim whose signature and physical bounds were checked ([`Claim::verify`]). The
/// coordinator's handle checks it on the requester's task, so the actor, which serves every
/// radiator of every job in turn, spends no time on signature verification.
#[derive(Clone, Debug)]
pub struct CheckedClaim(Claim);

impl CheckedClaim {
    pub fn check(claim: Claim) -> Result<CheckedClaim, ReceiptError> {
        claim.verify()?;
        Ok(CheckedClaim(claim))
    }

    pub fn claim(&self) -> &Claim {
        &self.0
    }
}

/// A change to write before it takes effect.
#[derive(Clone, Debug, Default)]
pub struct Update {
    pub job: Option<blake3::Hash>,
    /// The new state of one shard.
    pub shard: Option<(u32, ShardBook)>,
    /// A new job status and finish time.
    pub status: Option<(JobStatus, Option<u64>)>,
    /// Households excluded by this change, each with its evidence (JSON).
    pub exclude: Vec<(PublicKey, String)>,
    /// The job's new list of declining households.
    pub declined: Option<Vec<FailureRec>>,
    /// Reputation records changed by this update (`jobs::trust::store`).
    pub reputation: Vec<(PublicKey, Record)>,
    /// Households shut out of this job only: they lost a vote that no established household
    /// took part in, which is not proof that they lied (see `Book::settled`).
    pub suspend: Vec<PublicKey>,
    /// Records carried to a rotated household's new key: (new key, the key it rotated
    /// from) (`book::rotated`).
    pub carry: Vec<(PublicKey, PublicKey)>,
    /// Keys whose carried record is taken back (their household was contested).
    pub uncarry: Vec<PublicKey>,
}

/// Work the actor does after an update is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fetch and check the agreed output, then report it with [`Book::output_checked`].
    FetchOutput {
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        /// A household whose claim agrees, to ask first.
        hint: Option<PublicKey>,
    },
    /// Countersign the winners and exclude the losers of a verified shard
    /// ([`Book::settlement`]).
    Settle { job: blake3::Hash, shard: u32 },
    /// See whether the job is finished ([`Book::finish`]).
    CheckFinished { job: blake3::Hash },
}

/// What an accepted request turns into.
#[derive(Clone, Debug)]
pub struct Step {
    pub update: Update,
    pub answer: Response,
    pub then: Vec<Action>,
}

/// All jobs a coordinator runs, the households it excluded, and the heat demand it heard.
pub struct Book {
    terms: LeaseTerms,
    jobs: HashMap<blake3::Hash, JobBook>,
    /// Per job, the shards each decision has to look at (`index.rs`); always what
    /// [`ShardIndex::of`] would compute from the job.
    index: HashMap<blake3::Hash, ShardIndex>,
    /// Households whose claims lost a vote. Grows by one per caught household, at most; a
    /// household must lose a vote (do real, signed work) to be added.
    excluded: HashSet<PublicKey>,
    /// Per job, households that lost a vote nobody established took part in.
    suspended: HashMap<blake3::Hash, HashSet<PublicKey>>,
    demands: Demands,
    reputation: Reputation,
    /// The policy of jobs that were given none: plain replication when `None`.
    default_policy: Option<Policy>,
    policies: HashMap<blake3::Hash, Policy>,
    /// The households allowed to work jobs submitted here; `None`: anyone.
    allowed: Option<HashSet<PublicKey>>,
    /// Keys the spot-check draw (`trust::spot_check`); secret to this coordinator.
    spot_key: [u8; 32],
    /// Each household's recent claims here: together they stay within one circuit
    /// (`draw.rs`).
    draws: Draws,
}

fn deny(reason: DenyReason, retry_after_ms: u64, detail: impl Into<String>) -> Response {
    Response::Denied {
        reason,
        retry_after_ms,
        detail: detail.into(),
    }
}

fn error(detail: impl Into<String>) -> Response {
    Response::Error {
        detail: detail.into(),
    }
}

impl Book {
    pub fn new(terms: LeaseTerms) -> Book {
        Book {
            terms,
            jobs: HashMap::new(),
            index: HashMap::new(),
            excluded: HashSet::new(),
            suspended: HashMap::new(),
            demands: Demands::default(),
            reputation: Reputation::default(),
            default_policy: None,
            policies: HashMap::new(),
            allowed: None,
            spot_key: [0; 32],
            draws: Draws::default(),
        }
    }

    /// Sets the reputation the book judges by (loaded from disk, with the submitter's own
    /// trusted households).
    pub fn set_reputation(&mut self, reputation: Reputation) {
        self.reputation = reputation;
    }

    pub fn reputation(&self) -> &Reputation {
        &self.reputation
    }

    /// The policy for jobs given none (the `[trust]` configuration); `None`: plain
    /// replication.
    pub fn set_default_policy(&mut self, policy: Option<Policy>) {
        self.default_policy = policy;
    }

    /// One job's policy.
    pub fn set_policy(&mut self, job: blake3::Hash, policy: Policy) {
        self.policies.insert(job, policy);
    }

    /// Restricts the jobs submitted here to these households (`[trust] allow`).
    pub fn set_allowed(&mut self, allowed: Option<HashSet<PublicKey>>) {
        self.allowed = allowed;
    }

    /// The secret that keys the spot-check draw; random per coordinator.
    pub fn set_spot_key(&mut self, key: [u8; 32]) {
        self.spot_key = key;
    }

    /// The policy for jobs given none, if the configuration sets one.
    pub fn default_policy(&self) -> Option<&Policy> {
        self.default_policy.as_ref()
    }

    /// The policy job `id` runs under (borrowed: a policy may carry an allow-list, and this
    /// is asked once per shard a lease looks at).
    pub fn policy(&self, id: &blake3::Hash, state: &JobBook) -> Cow<'_, Policy> {
        match self.policies.get(id).or(self.default_policy.as_ref()) {
            Some(p) => Cow::Borrowed(p),
            None => Cow::Owned(Policy::fixed(state.manifest.replication)),
        }
    }

    /// How shard `index` of job `id` is judged.
    pub fn judge(&self, id: &blake3::Hash, state: &JobBook, index: u32) -> Judge<'_> {
        self.judge_under(self.policy(id, state), id, state, index)
    }

    /// [`Book::judge`] under the job's `policy`, already looked up.
    fn judge_under<'a>(
        &'a self,
        policy: Cow<'a, Policy>,
        id: &blake3::Hash,
        state: &JobBook,
        index: u32,
    ) -> Judge<'a> {
        let spot_checked = trust::spot_check(&self.spot_key, id, index, policy.spot_check_permille);
        Judge {
            reputation: &self.reputation,
            policy,
            replication: state.manifest.replication,
            spot_checked,
        }
    }

    /// Whether `household` may work a job under `policy` at all: on the job's own allow-list if it has
    /// one, else on `[trust] allow` if that is set; the submitter's trusted set always may.
    pub fn may_work(&self, policy: &Policy, household: &PublicKey) -> bool {
        if self.reputation.is_trusted(household) {
            return true;
        }
        if !policy.allow.is_empty() {
            return policy.allows(household);
        }
        self.allowed.as_ref().is_none_or(|a| a.contains(household))
    }

    /// Whether `household` lost a vote on `job` that nobody established took part in.
    pub fn is_suspended(&self, job: &blake3::Hash, household: &PublicKey) -> bool {
        self.suspended
            .get(job)
            .is_some_and(|s| s.contains(household))
    }

    /// Records a radiator's heat demand (from gossip, or carried in a lease request).
    pub fn note_demand(&mut self, household: PublicKey, permille: u16, asked: bool, now_ms: u64) {
        self.demands.note(household, permille, asked, now_ms);
    }

    /// How many radiators recently told us their heat demand, and how many of them want none.
    pub fn warmth(&self, now_ms: u64) -> Warmth {
        self.demands.warmth(now_ms)
    }

    /// Adds a job (new, or loaded from disk).
    pub fn insert_job(&mut self, id: blake3::Hash, job: JobBook) {
        for claim in job.shards.iter().flat_map(|s| &s.claims) {
            self.draws.record(&claim.record);
        }
        self.index.insert(id, ShardIndex::of(&job));
        self.jobs.insert(id, job);
    }

    /// The shard index of a job.
    pub fn index(&self, id: &blake3::Hash) -> Option<&ShardIndex> {
        self.index.get(id)
    }

    /// Whether every shard of a job is verified (O(1)).
    pub fn all_verified(&self, id: &blake3::Hash) -> bool {
        match (self.jobs.get(id), self.index.get(id)) {
            (Some(job), Some(ix)) => ix.verified == job.shards.len(),
            _ => false,
        }
    }

    /// A fresh job's book: every shard waiting.
    pub fn new_job(manifest: JobManifest, now_ms: u64) -> JobBook {
        let shards = vec![ShardBook::default(); manifest.inputs.len()];
        JobBook {
            rates: Default::default(),
            declined: Vec::new(),
            manifest,
            status: JobStatus::Running,
            submitted_ms: now_ms,
            finished_ms: None,
            shards,
        }
    }

    /// Shuts `household` out of `job` (a suspension loaded from disk).
    pub fn insert_suspended(&mut self, job: blake3::Hash, household: PublicKey) {
        self.suspended.entry(job).or_default().insert(household);
    }

    pub fn insert_excluded(&mut self, household: PublicKey) {
        self.excluded.insert(household);
    }

    pub fn is_excluded(&self, household: &PublicKey) -> bool {
        self.excluded.contains(household)
    }

    pub fn job(&self, id: &blake3::Hash) -> Option<&JobBook> {
        self.jobs.get(id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = (&blake3::Hash, &JobBook)> {
        self.jobs.iter()
    }

    /// Whether any job is still running.
    pub fn has_running(&self) -> bool {
        self.jobs.values().any(|j| j.status == JobStatus::Running)
    }

    /// Ids of the jobs still running.
    pub fn running(&self) -> Vec<blake3::Hash> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.status == JobStatus::Running)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every running job closed as failed for `reason`: what the actor writes when no radiator
    /// will work for this coordinator's key any more (its household revoked it, or it was
    /// caught equivocating: `node::refusals`), so a submitter reads why instead of watching
    /// shards wait for ever. Leases still out expire; claims on a closed job are refused.
    pub fn fail_running(&self, reason: &str, now_ms: u64) -> Vec<Update> {
        self.running()
            .into_iter()
            .map(|id| Update {
                job: Some(id),
                status: Some((
                    JobStatus::Failed {
                        reason: reason.to_string(),
                    },
                    Some(now_ms),
                )),
                ..Update::default()
            })
            .collect()
    }

    /// The answer to send for an accepted request once its step's update is applied (the
    /// actor calls it after [`Book::apply`]). A claim is answered with whether its shard is
    /// verified now: a late replica of a verified shard learns so at once.
    pub fn answer_after(&self, answer: Response, touched: Option<(blake3::Hash, u32)>) -> Response {
        match (answer, touched) {
            // A claim that was counted: whether its shard is verified once it is applied.
            (Response::ClaimAccepted { .. }, Some((job, i))) => Response::ClaimAccepted {
                verified: self
                    .job(&job)
                    .and_then(|j| j.shards.get(i as usize))
                    .is_some_and(|s| s.verified.is_some()),
            },
            // A claim counted before touches nothing: the book answered it from its shard.
            (answer, _) => answer,
        }
    }

    /// Makes a written update take effect.
    pub fn apply(&mut self, update: Update) {
        for (household, _) in update.exclude {
            self.excluded.insert(household);
        }
        for (household, record) in update.reputation {
            self.reputation.insert(household, record);
        }
        for (new, old) in update.carry {
            self.reputation.carry(new, old);
        }
        for key in update.uncarry {
            self.reputation.uncarry(&key);
        }
        if let Some(id) = update.job {
            for household in update.suspend {
                self.suspended.entry(id).or_default().insert(household);
            }
        }
        let Some(id) = update.job else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some((index, state)) = update.shard {
            if let Some(s) = job.shards.get_mut(index as usize) {
                for claim in state.claims.iter().filter(|c| !s.claims.contains(c)) {
                    self.draws.record(&claim.record);
                }
                self.index
                    .entry(id)
                    .or_default()
                    .set(index, Some(s), &state);
                if let (None, Some(credit), Some(outcome)) =
                    (s.credit, state.credit, state.verified)
                {
                    job.rates
                        .record(crate::jobs::credit::rate(credit.reference_mj, outcome.fuel));
                }
                *s = state;
            }
        }
        if let Some((status, finished_ms)) = update.status {
            job.status = status;
            job.finished_ms = finished_ms;
        }
        if let Some(declined) = update.declined {
            job.declined = declined;
        }
    }

    /// A lease request. Never two replicas of a shard to one household; colder rooms first.
    #[allow(clippy::result_large_err)]
    pub fn lease(
        &self,
        job: &blake3::Hash,
        household: &PublicKey,
        protocol: u32,
        permille: u16,
        nonce: [u8; 16],
        now_ms: u64,
    ) -> Result<Step, Response> {
        if protocol != PROTOCOL_VERSION {
            return Err(deny(
                DenyReason::VersionMismatch,
                0,
                format!("this coordinator speaks jobs protocol {PROTOCOL_VERSION}, you speak {protocol}; upgrade hearth"),
            ));
        }
        if self.is_excluded(household) {
            return Err(deny(
                DenyReason::Excluded,
                0,
                "a claim of your household was proven wrong (it lost a replica vote here, or fraud evidence against it was re-run here); no further leases",
            ));
        }
        if self.is_suspended(job, household) {
            return Err(deny(
                DenyReason::Excluded,
                0,
                "a claim of your household lost a replica vote on this job; no further leases for it",
            ));
        }
        let Some(state) = self.jobs.get(job) else {
            return Err(deny(
                DenyReason::UnknownJob,
                0,
                "this node coordinates no such job",
            ));
        };
        let policy = self.policy(job, state);
        if !self.may_work(&policy, household) {
            return Err(deny(
                DenyReason::Excluded,
                0,
                if policy.allow.is_empty() {
                    "this job's submitter lets only the households it chose work its jobs (`[trust] allow`); yours is not among them".to_string()
                } else {
                    format!(
                        "this job is restricted to an allow-list of {} household(s) its submitter chose; yours is not on it",
                        policy.allow.len()
                    )
                },
            ));
        }
        match &state.status {
            JobStatus::Running => {}
            JobStatus::Done { .. } => {
                return Err(deny(DenyReason::JobComplete, 0, "every shard is verified"))
            }
            JobStatus::Failed { reason } => {
                return Err(deny(
                    DenyReason::JobComplete,
                    0,
                    format!("the job failed: {reason}"),
                ))
            }
        }
        // Every live lease is on a shard of `ix.leased`, and every shard a lease can go to is
        // in `ix.open`: what follows looks at the shards in flight, never at all of them,
        // and at each once: the live leases per household counted in one walk, each open
        // shard judged once however many questions below look at it.
        let empty = ShardIndex::default();
        let ix = self.index.get(job).unwrap_or(&empty);
        let shard_at = |i: &u32| state.shards.get(*i as usize);
        let mut leases_of: HashMap<PublicKey, usize> = HashMap::new();
        for l in ix
            .leased
            .iter()
            .filter_map(shard_at)
            .flat_map(|s| s.live_leases(now_ms))
        {
            *leases_of.entry(l.worker).or_default() += 1;
        }
        let lease_count = |h: &PublicKey| leases_of.get(h).copied().unwrap_or(0);
        let held = lease_count(household);
        if held >= MAX_LEASES_PER_HOUSEHOLD {
            return Err(deny(
                DenyReason::NothingFree,
                1_000,
                format!("your household already holds {held} leases on this job, the most one household may"),
            ));
        }
        // Free replicas of the job are counted only as far as the comparisons below need
        // (past the number of askers the answer no longer changes): a lease costs
        // O(askers), not O(shards), while work is plentiful.
        let mut rooms = Rooms::new(ix, &state.shards, |i, s| {
            self.judge_under(Cow::Borrowed(&*policy), job, state, i)
                .room(s, now_ms)
        });
        // Radiators whose rooms are colder go first: when no more replicas are free than
        // colder radiators are asking for, this one waits a moment. A room's demand is its
        // own claim, so a household counts as "colder" only while it can take another lease
        // here: one that always reports the coldest room holds at most
        // MAX_LEASES_PER_HOUSEHOLD shards of the job, then the others are served.
        let colder = self
            .demands
            .colder_askers(household, permille, now_ms, &|h| {
                lease_count(h) < MAX_LEASES_PER_HOUSEHOLD
                    && !self.is_excluded(h)
                    && !self.is_suspended(job, h)
                    && self.may_work(&policy, h)
            });
        if colder > 0 && rooms.free_up_to(colder) <= colder {
            return Err(deny(
                DenyReason::NothingFree,
                250,
                "the free shards are held for radiators whose rooms are colder",
            ));
        }
        // Replication follows heat: when more radiators ask for heat than there are replicas
        // to hand out, each shard may go up to the policy's maximum (never below what the
        // vote needs), since redundant work still heats a home.
        let wanting = self.demands.heat_askers(now_ms, &|h| {
            !self.is_excluded(h) && !self.is_suspended(job, h) && self.may_work(&policy, h)
        });
        let floor = if wanting > 0 && wanting > rooms.free_up_to(wanting) {
            usize::from(policy.max_replicas)
        } else {
            0
        };
        // Probation: while an established household is around (its heat demand heard within
        // the last 90 s), the last replica a shard needs goes to one, so no shard is verified
        // by new identities alone; and a household on probation works one shard of the job at
        // a time, so it cannot lie on many shards before its first vote is decided.
        let established_here = self.reputation.established(household);
        if policy.probation && !established_here {
            // A household's open shards are those it holds a lease on or claimed.
            let open = ix
                .leased
                .union(&ix.claimed)
                .filter_map(shard_at)
                .filter(|s| s.is_open())
                .filter(|s| {
                    s.live_leases(now_ms).any(|l| l.worker == *household)
                        || s.claims.iter().any(|c| c.record.worker == *household)
                })
                .count();
            if open > 0 {
                return Err(deny(
                    DenyReason::NothingFree,
                    1_000,
                    "on probation: one shard at a time until your household's results are verified",
                ));
            }
        }
        let reserve = policy.probation
            && !established_here
            && self.demands.any_known(now_ms, &|h| {
                h != household
                    && self.reputation.established(h)
                    && !self.is_excluded(h)
                    && !self.is_suspended(job, h)
                    && self.may_work(&policy, h)
            });
        let own_around = policy.own_replica
            && !self.reputation.is_trusted(household)
            && self
                .demands
                .any_known(now_ms, &|h| h != household && self.reputation.is_trusted(h));
        let mut own_replicas = 0;
        let mut k = 0;
        while let Some((index, shard, room)) = rooms.at(k) {
            k += 1;
            let free_here = room.free(floor);
            if free_here == 0 {
                continue;
            }
            if shard.worked_by(household, now_ms) {
                own_replicas += 1;
                continue;
            }
            // The submitter asked for one replica of its own: while one of its households is
            // around, the last replica is kept for it.
            if own_around
                && !self.reputation.is_trusted(household)
                && free_here == 1
                && !shard
                    .live_leases(now_ms)
                    .map(|l| &l.worker)
                    .chain(shard.claims.iter().map(|c| &c.record.worker))
                    .any(|h| self.reputation.is_trusted(h))
            {
                continue;
            }
            if reserve
                && free_here == 1
                && !shard
                    .live_leases(now_ms)
                    .map(|l| &l.worker)
                    .chain(shard.claims.iter().map(|c| &c.record.worker))
                    .any(|h| self.reputation.established(h))
            {
                continue;
            }
            let deadline_ms = now_ms.saturating_add(self.terms.lease_ms);
            let mut next = shard.clone();
            next.leases.retain(|l| l.deadline_ms > now_ms);
            next.leases.push(LeaseRec {
                worker: *household,
                nonce,
                granted_ms: now_ms,
                deadline_ms,
            });
            return Ok(Step {
                update: Update {
                    job: Some(*job),
                    shard: Some((index, next)),
                    ..Update::default()
                },
                answer: Response::Leased(Lease {
                    job: *job,
                    shard: index,
                    nonce,
                    deadline_ms,
                }),
                then: Vec::new(),
            });
        }
        Err(deny(
            DenyReason::NothingFree,
            500,
            if own_replicas > 0 {
                "every shard that still needs a replica already has one from your household"
            } else {
                "every open shard is leased; ask again later"
            },
        ))
    }

    /// Extends a live lease by the lease length, up to `max_total_ms` after it was granted.
    #[allow(clippy::result_large_err)]
    pub fn renew(
        &self,
        job: &blake3::Hash,
        household: &PublicKey,
        index: u32,
        nonce: [u8; 16],
        now_ms: u64,
    ) -> Result<Step, Response> {
        let Some(state) = self.jobs.get(job) else {
            return Err(deny(
                DenyReason::UnknownJob,
                0,
                "this node coordinates no such job",
            ));
        };
        if state.status != JobStatus::Running {
            return Err(deny(DenyReason::JobComplete, 0, "the job is finished"));
        }
        let Some(shard) = state.shards.get(index as usize) else {
            return Err(error(format!("the job has no shard {index}")));
        };
        let Some(pos) = shard
            .leases
            .iter()
            .position(|l| l.nonce == nonce && l.worker == *household && l.deadline_ms > now_ms)
        else {
            return Err(deny(
                DenyReason::NothingFree,
                0,
                "no live lease of yours carries this nonce (expired, claimed or never issued)",
            ));
        };
        let lease = &shard.leases[pos];
        let ceiling = lease.granted_ms.saturating_add(self.terms.max_total_ms);
        let deadline_ms = now_ms.saturating_add(self.terms.lease_ms).min(ceiling);
        if deadline_ms <= lease.deadline_ms {
            return Err(deny(
                DenyReason::NothingFree,
                0,
                format!(
                    "the lease has reached its longest total time ({} s)",
                    self.terms.max_total_ms / 1000
                ),
            ));
        }
        let mut next = shard.clone();
        next.leases[pos].deadline_ms = deadline_ms;
        next.leases.retain(|l| l.deadline_ms > now_ms);
        Ok(Step {
            update: Update {
                job: Some(*job),
                shard: Some((index, next)),
                ..Update::default()
            },
            answer: Response::Renewed { deadline_ms },
            then: Vec::new(),
        })
    }

    /// A claim: checked against the job and a live lease of its household, then counted.
    #[allow(clippy::result_large_err)]
    pub fn claim(
        &self,
        household: &PublicKey,
        claim: Claim,
        now_ms: u64,
    ) -> Result<Step, Response> {
        match CheckedClaim::check(claim) {
            Ok(claim) => self.checked_claim(household, claim, now_ms),
            Err(e) => Err(Response::ClaimRejected {
                detail: format!("{e}"),
            }),
        }
    }

    /// [`Book::claim`] of a claim whose signature was checked already.
    #[allow(clippy::result_large_err)]
    pub fn checked_claim(
        &self,
        household: &PublicKey,
        claim: CheckedClaim,
        now_ms: u64,
    ) -> Result<Step, Response> {
        let reject = |detail: String| Response::ClaimRejected { detail };
        let CheckedClaim(claim) = claim;
        if claim.record.worker != *household {
            return Err(reject("the claim names another household as worker".into()));
        }
        let job = claim.record.job;
        let Some(state) = self.jobs.get(&job) else {
            return Err(reject("this node coordinates no such job".into()));
        };
        let index = claim.record.shard;
        let Some(shard) = state.shards.get(index as usize) else {
            return Err(reject(format!("the job has no shard {index}")));
        };
        let manifest = &state.manifest;
        let rec = &claim.record;
        if rec.module != manifest.module
            || manifest.inputs.get(index as usize) != Some(&rec.input)
            || rec.submitter != manifest.submitter
        {
            return Err(reject(
                "the claim's module, input or submitter does not match the job".into(),
            ));
        }
        // A claim already counted is answered as it was, and changes nothing: a worker killed
        // after sending it and before reading the answer sends it again when it restarts, and
        // the lease it answered is spent by then (the crash soak, `testnet/soak`).
        if shard.claims.contains(&claim) {
            return Ok(Step {
                update: Update::default(),
                answer: Response::ClaimAccepted {
                    verified: shard.verified.is_some(),
                },
                then: Vec::new(),
            });
        }
        let Some(pos) = shard
            .leases
            .iter()
            .position(|l| l.nonce == rec.nonce && l.worker == *household && l.deadline_ms > now_ms)
        else {
            return Err(reject(
                "no live lease of yours carries this nonce (expired, replayed or never issued)"
                    .into(),
            ));
        };
        // The record's window must lie within the lease it answers: the shard cannot have
        // started before the lease was granted nor ended after the claim arrived (give or
        // take the clocks' skew). Its energy is already bounded by MAX_WATTS over that window
        // (`Claim::verify`), so no claim can carry more than a radiator could draw while
        // it held the lease.
        let lease = &shard.leases[pos];
        if rec.start_ms.saturating_add(CLOCK_SKEW_MS) < lease.granted_ms
            || rec.end_ms > now_ms.saturating_add(CLOCK_SKEW_MS)
        {
            return Err(reject(format!(
                "the claim's window ({}..{} ms) falls outside its lease ({}..{} ms, ± {} s of clock skew)",
                rec.start_ms,
                rec.end_ms,
                lease.granted_ms,
                now_ms,
                CLOCK_SKEW_MS / 1000
            )));
        }
        // Nor may it, with this household's other claims here, imply more than one household
        // circuit delivers (`draw.rs`): its own signature would show it false.
        if let Err(e) = self.draws.check(rec) {
            return Err(reject(format!("{e}")));
        }
        let mut next = shard.clone();
        next.leases.remove(pos);
        next.leases.retain(|l| l.deadline_ms > now_ms);
        let mut record = self
            .reputation
            .record(household)
            .copied()
            .unwrap_or(Record {
                first_seen_ms: now_ms,
                ..Record::default()
            });
        record.last_seen_ms = record.last_seen_ms.max(now_ms);
        next.claims.push(claim);
        let mut then = Vec::new();
        let mut status = None;
        if next.verified.is_some() {
            // A late replica: receipted if it agrees, its household excluded if not.
            then.push(Action::Settle { job, shard: index });
        } else if next.failed.is_none() {
            match self.judge(&job, state, index).decide(&next) {
                Decision::Verified(outcome) => then.push(Action::FetchOutput {
                    job,
                    shard: index,
                    outcome,
                    hint: next.agreeing_worker(&outcome),
                }),
                Decision::Hopeless => {
                    let reason = format!(
                        "{} replicas could not agree on one output",
                        next.claims.len()
                    );
                    status = fail_job(state, index, &reason, now_ms);
                    next.failed = Some(reason);
                }
                Decision::Undecided => {}
            }
        }
        Ok(Step {
            update: Update {
                job: Some(job),
                shard: Some((index, next)),
                status,
                reputation: vec![(*household, record)],
                ..Update::default()
            },
            answer: Response::ClaimAccepted { verified: false },
            then,
        })
    }

    /// A failure report (a trap, a limit). A failure is not a vote: a radiator may fail for
    /// its own reasons (memory, a killed process), or lie. A shard fails on failures only
    /// when no replica can succeed, defined as: **no claim has been made and failure
    /// reports from `replication` distinct households are in**. While any claim exists a
    /// failure only frees the replica for another household; a shard whose claims never
    /// reach a majority fails once `MAX_REPLICAS` households (claims, failures and live
    /// leases) have tried it.
    #[allow(clippy::result_large_err)]
    /// A household will not work `job` at all: it is beyond that radiator's own limits.
    /// Remember why (for the submitter's view) and free its live lease on the job, so the
    /// shard goes to someone else at once; the job stays open for other radiators. A
    /// declining worker holds at most one lease on the job (it declines from the shard it
    /// was leased); any other expires by itself.
    #[allow(clippy::result_large_err)]
    pub fn decline(
        &self,
        job: &blake3::Hash,
        household: &PublicKey,
        reason: String,
        now_ms: u64,
    ) -> Result<Step, Response> {
        let Some(state) = self.jobs.get(job) else {
            return Err(error("this node coordinates no such job"));
        };
        // `reason` is bounded by the wire format (MAX_REASON); the list by MAX_DECLINES.
        let mut declined: Vec<FailureRec> = state
            .declined
            .iter()
            .filter(|d| d.worker != *household)
            .cloned()
            .collect();
        if declined.len() >= shard::MAX_DECLINES {
            declined.remove(0);
        }
        declined.push(FailureRec {
            worker: *household,
            reason,
        });
        let leased = self.index.get(job).map(|ix| &ix.leased);
        let shard = leased.into_iter().flatten().find_map(|&i| {
            let s = state.shards.get(i as usize)?;
            s.leases
                .iter()
                .any(|l| l.worker == *household && l.deadline_ms > now_ms)
                .then(|| {
                    let mut next = s.clone();
                    next.leases.retain(|l| l.worker != *household);
                    (i, next)
                })
        });
        Ok(Step {
            update: Update {
                job: Some(*job),
                shard,
                declined: Some(declined),
                ..Update::default()
            },
            answer: Response::FailureNoted,
            then: Vec::new(),
        })
    }

    pub fn failure(
        &self,
        job: &blake3::Hash,
        household: &PublicKey,
        index: u32,
        nonce: [u8; 16],
        reason: String,
        now_ms: u64,
    ) -> Result<Step, Response> {
        let Some(state) = self.jobs.get(job) else {
            return Err(error("this node coordinates no such job"));
        };
        let Some(shard) = state.shards.get(index as usize) else {
            return Err(error(format!("the job has no shard {index}")));
        };
        let Some(pos) = shard
            .leases
            .iter()
            .position(|l| l.nonce == nonce && l.worker == *household)
        else {
            return Err(error("no open lease of yours carries this nonce"));
        };
        let mut next = shard.clone();
        next.leases.remove(pos);
        next.leases.retain(|l| l.deadline_ms > now_ms);
        next.failures.push(FailureRec {
            worker: *household,
            reason: reason.clone(),
        });
        let mut status = None;
        if next.is_open() {
            let failed_by: HashSet<PublicKey> = next.failures.iter().map(|f| f.worker).collect();
            let verdict = if next.claims.is_empty()
                && failed_by.len() >= usize::from(state.manifest.replication)
            {
                Some(format!(
                    "{} households could not run it: {reason}",
                    failed_by.len()
                ))
            } else if self.judge(job, state, index).decide(&next) == Decision::Hopeless {
                Some(format!(
                    "{} households tried it without a majority ({} claims, {} failures; last: {reason})",
                    next.claims.len() + next.failures.len(),
                    next.claims.len(),
                    next.failures.len()
                ))
            } else {
                None
            };
            if let Some(verdict) = verdict {
                status = fail_job(state, index, &verdict, now_ms);
                next.failed = Some(verdict);
            }
        }
        Ok(Step {
            update: Update {
                job: Some(*job),
                shard: Some((index, next)),
                status,
                ..Update::default()
            },
            answer: Response::FailureNoted,
            then: Vec::new(),
        })
    }
}

/// The job status once shard `index` failed with `reason`.
fn fail_job(
    state: &JobBook,
    index: u32,
    reason: &str,
    now_ms: u64,
) -> Option<(JobStatus, Option<u64>)> {
    (state.status == JobStatus::Running).then(|| {
        (
            JobStatus::Failed {
                reason: format!("shard {index}: {reason}"),
            },
            Some(now_ms),
        )
    })
}

#[cfg(test)]
mod tests;
