//! One job's and one shard's state, and the vote: pure data and pure functions.
//! Must not touch: I/O, clocks.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::jobs::trust::{Policy, Reputation};
use crate::model::receipt::Claim;
use crate::model::JobManifest;

/// How many households may work one shard at most (claims, failures and live leases
/// together) while replicas disagree or fail. When the budget is spent without a decision
/// the shard fails.
pub const MAX_REPLICAS: usize = 16;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Done { result: String },
    Failed { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRec {
    pub worker: PublicKey,
    pub nonce: [u8; 16],
    /// When the lease was first granted; bounds renewals.
    pub granted_ms: u64,
    pub deadline_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRec {
    pub worker: PublicKey,
    pub reason: String,
}

/// The (output, fuel) pair a strict majority agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub output: blake3::Hash,
    pub fuel: u64,
}

/// One shard's state. Stored as one entry per shard (`persist.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardBook {
    /// Leases granted and not yet claimed or failed. Expired ones are ignored everywhere
    /// and dropped the next time the shard is written.
    pub leases: Vec<LeaseRec>,
    /// Every accepted claim (signature checked), in arrival order.
    pub claims: Vec<Claim>,
    pub failures: Vec<FailureRec>,
    /// Set once the agreed output has been fetched and checked.
    pub verified: Option<Outcome>,
    /// Claims settled: countersigned into a receipt (winners) or their household excluded
    /// (losers). Indices into `claims`.
    pub settled: Vec<u32>,
    pub failed: Option<String>,
    /// Fixed when the shard is verified: what its receipts' credit terms are computed from.
    pub credit: Option<ShardCredit>,
}

/// The evidence a verified shard's credit is bounded by (`jobs::credit`), and the vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardCredit {
    /// The shard's reference energy, mJ: each claim is credited at most
    /// `HARDWARE_SPREAD` × this.
    pub reference_mj: u64,
    /// The vote that verified the shard: households agreeing, of claims held.
    pub agreeing: u8,
    pub replicas: u8,
}

impl ShardBook {
    /// The worker of the latest claim agreeing with `outcome`: one that holds the output, to
    /// fetch it from first (the fetch also asks the DHT for others).
    pub(super) fn agreeing_worker(&self, outcome: &Outcome) -> Option<PublicKey> {
        self.claims
            .iter()
            .rev()
            .find(|c| c.record.output == outcome.output && c.record.fuel == outcome.fuel)
            .map(|c| c.record.worker)
    }

    pub(super) fn live_leases(&self, now_ms: u64) -> impl Iterator<Item = &LeaseRec> {
        self.leases.iter().filter(move |l| l.deadline_ms > now_ms)
    }

    pub(super) fn is_open(&self) -> bool {
        self.verified.is_none() && self.failed.is_none()
    }

    /// Whether `household` already holds, or held, a replica of this shard.
    pub(super) fn worked_by(&self, household: &PublicKey, now_ms: u64) -> bool {
        self.live_leases(now_ms).any(|l| l.worker == *household)
            || self.failures.iter().any(|f| f.worker == *household)
            || self.claims.iter().any(|c| c.record.worker == *household)
    }
}

/// A job in the book.
#[derive(Clone, Debug)]
pub struct JobBook {
    /// The reference rates of the job's verified shards, for the credit bound's floor.
    /// Kept in memory only: rebuilt from the shards' stored credit when loaded.
    pub rates: crate::jobs::credit::JobRates,
    pub manifest: JobManifest,
    pub status: JobStatus,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub shards: Vec<ShardBook>,
    /// Households that declined the job as beyond their own limits, with their reasons: at
    /// most [`MAX_DECLINES`], the latest reason per household.
    pub declined: Vec<FailureRec>,
}

/// Most declining households remembered per job.
pub const MAX_DECLINES: usize = 16;

/// The result of the vote on one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Verified(Outcome),
    Undecided,
    /// The replica budget is spent without a majority.
    Hopeless,
}

/// What the vote on one shard is judged by: who is established, the job's policy and
/// replication, and whether the shard was drawn for a spot check.
#[derive(Clone)]
pub struct Judge<'a> {
    pub reputation: &'a Reputation,
    pub policy: std::borrow::Cow<'a, Policy>,
    pub replication: u8,
    pub spot_checked: bool,
}

/// An open shard's replicas at one moment: what its vote needs, how many live leases and
/// claims hold replicas, and how much of the replica budget (`MAX_REPLICAS`, failures
/// included) is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    needed: usize,
    held: usize,
    spent: usize,
}

impl Room {
    /// Replicas still to lease when each shard should have at least `floor` (the
    /// heat-driven target): never past the replica budget.
    pub fn free(&self, floor: usize) -> usize {
        let needed = self.needed.max(floor.min(MAX_REPLICAS));
        let by_vote = needed.saturating_sub(self.held);
        let by_budget = MAX_REPLICAS.saturating_sub(self.spent);
        by_vote.min(by_budget)
    }
}

/// One agreeing group of claims.
#[derive(Clone, Copy, Debug)]
struct Group {
    outcome: Outcome,
    households: usize,
    established: usize,
}

impl Judge<'_> {
    /// Plain replication with nobody established: a strict majority of `replication`.
    pub fn plain(reputation: &Reputation, replication: u8) -> Judge<'_> {
        Judge {
            reputation,
            policy: std::borrow::Cow::Owned(Policy::fixed(replication)),
            replication,
            spot_checked: false,
        }
    }

    fn groups(&self, shard: &ShardBook) -> Vec<Group> {
        // A shard holds a handful of claims (at most one per lease, and leases are bounded
        // by `MAX_REPLICAS`): linear scans, no hashing or maps. Asked for every candidate
        // shard a lease looks at, so this is on the coordinator's hot path.
        let mut groups: Vec<Group> = Vec::new();
        let mut counted: Vec<(Outcome, PublicKey)> = Vec::with_capacity(shard.claims.len());
        for c in &shard.claims {
            let outcome = Outcome {
                output: c.record.output,
                fuel: c.record.fuel,
            };
            // A household counts once per outcome.
            if counted.contains(&(outcome, c.record.worker)) {
                continue;
            }
            counted.push((outcome, c.record.worker));
            let established = usize::from(self.reputation.established(&c.record.worker));
            match groups.iter_mut().find(|g| g.outcome == outcome) {
                Some(g) => {
                    g.households += 1;
                    g.established += established;
                }
                None => groups.push(Group {
                    outcome,
                    households: 1,
                    established,
                }),
            }
        }
        // Largest first; ties in a stable order so the leading group does not flicker.
        groups.sort_by(|a, b| {
            (b.established, b.households, b.outcome.output.as_bytes()).cmp(&(
                a.established,
                a.households,
                a.outcome.output.as_bytes(),
            ))
        });
        groups
    }

    /// The group that would win if it had enough replicas, and the replicas it needs.
    ///
    /// When established households have claims, the group holding a strict majority of them
    /// leads and needs the trusted quorum (`Policy::trusted_quorum`): households on
    /// probation, however many, cannot outvote them. Otherwise the largest group leads if it
    /// is a strict majority of all claims, and needs the untrusted quorum. This is what keeps
    /// a colluding majority of new identities from winning a vote against an established
    /// household (issue 10).
    fn leader(&self, shard: &ShardBook) -> (Option<Group>, usize, usize) {
        let (lead, need, total) = self.vote_leader(shard);
        // The submitter asked for one replica of its own: a group without one needs one more.
        match lead {
            Some(g) if self.policy.own_replica && !self.has_own(shard, g.outcome) => {
                (lead, need.max(g.households + 1), total)
            }
            _ => (lead, need, total),
        }
    }

    /// Whether a claim in the `outcome` group comes from the submitter's trusted set.
    fn has_own(&self, shard: &ShardBook, outcome: Outcome) -> bool {
        shard.claims.iter().any(|c| {
            c.record.output == outcome.output
                && c.record.fuel == outcome.fuel
                && self.reputation.is_trusted(&c.record.worker)
        })
    }

    fn vote_leader(&self, shard: &ShardBook) -> (Option<Group>, usize, usize) {
        let groups = self.groups(shard);
        let total: usize = groups.iter().map(|g| g.households).sum();
        let established: usize = groups.iter().map(|g| g.established).sum();
        if established > 0 {
            let lead = groups
                .first()
                .copied()
                .filter(|g| g.established * 2 > established);
            (
                lead,
                self.policy
                    .trusted_quorum(self.replication, self.spot_checked),
                total,
            )
        } else {
            let lead = groups.first().copied().filter(|g| g.households * 2 > total);
            (lead, self.policy.untrusted_quorum(self.replication), total)
        }
    }

    /// The vote. Failure reports are not votes (see [`Book::failure`]), but they spend
    /// replica budget.
    pub fn decide(&self, shard: &ShardBook) -> Decision {
        match self.leader(shard) {
            (Some(g), need, _) if g.households >= need => Decision::Verified(g.outcome),
            _ if shard.claims.len() + shard.failures.len() >= MAX_REPLICAS => Decision::Hopeless,
            _ => Decision::Undecided,
        }
    }

    /// Replicas a shard needs: what its leading group needs, plus one for every claim
    /// outside it, so a disagreement is settled by more replicas. A shard that nobody
    /// established has touched needs the untrusted quorum; once an established household
    /// holds a lease or a claim, the trusted one.
    pub fn replicas_needed(&self, shard: &ShardBook, now_ms: u64) -> usize {
        let (lead, need, total) = self.leader(shard);
        let need = if shard.claims.is_empty() {
            if shard
                .live_leases(now_ms)
                .any(|l| self.reputation.established(&l.worker))
            {
                self.policy
                    .trusted_quorum(self.replication, self.spot_checked)
            } else {
                self.policy.untrusted_quorum(self.replication)
            }
        } else {
            need
        };
        let agreeing = lead.map_or(0, |g| g.households);
        // Without a leader, every claim but the largest group's is outside it.
        let largest = lead.map_or_else(
            || {
                self.groups(shard)
                    .iter()
                    .map(|g| g.households)
                    .max()
                    .unwrap_or(0)
            },
            |_| agreeing,
        );
        (need + (total - largest)).min(MAX_REPLICAS)
    }

    /// Replicas of an open shard still to lease: what the vote needs (at least `floor`, the
    /// heat-driven target), less live leases and claims, and never past the replica budget.
    pub fn free_replicas(&self, shard: &ShardBook, floor: usize, now_ms: u64) -> usize {
        self.room(shard, now_ms).free(floor)
    }

    /// What [`Judge::free_replicas`] is computed from, for every floor: the vote's part is
    /// worked out once, and a lease asks about floor 0 and the heat-driven target.
    pub fn room(&self, shard: &ShardBook, now_ms: u64) -> Room {
        let live = shard.live_leases(now_ms).count();
        Room {
            needed: self.replicas_needed(shard, now_ms),
            held: live + shard.claims.len(),
            spent: live + shard.claims.len() + shard.failures.len(),
        }
    }

    /// Whether the agreeing group of a decided shard holds an established household: only
    /// then is a losing claim proof of a lie (see `Book::settled`).
    pub fn backed_by_established(&self, shard: &ShardBook, outcome: Outcome) -> bool {
        shard.claims.iter().any(|c| {
            c.record.output == outcome.output
                && c.record.fuel == outcome.fuel
                && self.reputation.established(&c.record.worker)
        })
    }
}

/// Plain replication (nobody established): verified when the largest group has at least
/// `replication` claims from distinct households and is a strict majority of all claims.
pub fn decide(shard: &ShardBook, replication: u8) -> Decision {
    Judge::plain(&Reputation::default(), replication).decide(shard)
}

/// Replicas a shard needs under plain replication: `replication`, plus one more for every
/// claim outside the largest agreeing group, so a disagreement is settled by a majority.
pub fn replicas_needed(shard: &ShardBook, replication: u8) -> usize {
    Judge::plain(&Reputation::default(), replication).replicas_needed(shard, 0)
}
