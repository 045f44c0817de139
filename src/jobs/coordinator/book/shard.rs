//! One job's and one shard's state, and the vote: pure data and pure functions.
//! Must not touch: I/O, clocks.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
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

/// Groups claims by (output, fuel). Verified when the largest group has at least
/// `replication` claims from distinct households and is a strict majority of all claims.
/// Failure reports are not votes (see [`Book::failure`]), but they spend replica budget.
pub fn decide(shard: &ShardBook, replication: u8) -> Decision {
    let mut groups: HashMap<Outcome, HashSet<PublicKey>> = HashMap::new();
    for c in &shard.claims {
        let key = Outcome {
            output: c.record.output,
            fuel: c.record.fuel,
        };
        groups.entry(key).or_default().insert(c.record.worker);
    }
    let total: usize = groups.values().map(HashSet::len).sum();
    // A strict majority is unique, so which of several equal groups wins does not matter.
    let best = groups.iter().max_by_key(|(_, v)| v.len());
    match best {
        Some((outcome, v)) if v.len() >= usize::from(replication) && v.len() * 2 > total => {
            Decision::Verified(*outcome)
        }
        _ if shard.claims.len() + shard.failures.len() >= MAX_REPLICAS => Decision::Hopeless,
        _ => Decision::Undecided,
    }
}

/// Replicas a shard needs: `replication`, plus one more for every claim outside the largest
/// agreeing group, so a disagreement is settled by a majority.
pub fn replicas_needed(shard: &ShardBook, replication: u8) -> usize {
    let mut counts: HashMap<Outcome, usize> = HashMap::new();
    for c in &shard.claims {
        let key = Outcome {
            output: c.record.output,
            fuel: c.record.fuel,
        };
        *counts.entry(key).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let largest = counts.values().copied().max().unwrap_or(0);
    (usize::from(replication) + (total - largest)).min(MAX_REPLICAS)
}

/// Replicas of an open shard still to lease: what the vote needs, less live leases and
/// claims, and never past the replica budget.
pub(super) fn free_replicas(shard: &ShardBook, replication: u8, now_ms: u64) -> usize {
    let live = shard.live_leases(now_ms).count();
    let needed = replicas_needed(shard, replication);
    let by_vote = needed.saturating_sub(live + shard.claims.len());
    let by_budget = MAX_REPLICAS.saturating_sub(live + shard.claims.len() + shard.failures.len());
    by_vote.min(by_budget)
}
