//! What `hearth job status` and the API show of a job: read-only views built from the book.
//! The JSON shape of [`JobView`] and [`ShardView`] is part of the API; keep it stable.

use serde::{Deserialize, Serialize};

use crate::model::Assembly;

use super::book::{decide, replicas_needed, Decision, FailureRec, JobBook, JobStatus, Warmth};

/// What `hearth job status` shows for one shard.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ShardView {
    Waiting {
        reason: String,
    },
    Leased {
        to: Vec<String>,
        claims: usize,
    },
    Verifying {
        claims: usize,
    },
    Verified {
        output: String,
        fuel: u64,
        households: Vec<String>,
        /// The shard's reference energy, mJ: each receipt credits at most four times this
        /// (`jobs::credit`, `docs/receipts.md`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit_reference_mj: Option<u64>,
    },
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub status: JobStatus,
    pub shards_total: usize,
    pub shards_verified: usize,
    pub replication: u8,
    pub assembly: Assembly,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub shards: Vec<ShardView>,
}

/// A job's status and how many of its shards are verified ([`super::CoordinatorHandle::progress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub status: JobStatus,
    pub shards_total: usize,
    pub shards_verified: usize,
}

pub fn view(id: &blake3::Hash, job: &JobBook, warmth: Warmth, now_ms: u64) -> JobView {
    let replication = job.manifest.replication;
    let shards: Vec<ShardView> = job
        .shards
        .iter()
        .map(|s| {
            if let Some(reason) = &s.failed {
                return ShardView::Failed {
                    reason: reason.clone(),
                };
            }
            if let Some(outcome) = s.verified {
                // The households of the decided (output, fuel) group, no one else.
                let winners: Vec<String> = s
                    .claims
                    .iter()
                    .filter(|c| c.record.output == outcome.output && c.record.fuel == outcome.fuel)
                    .map(|c| c.record.worker.to_hex())
                    .collect();
                return ShardView::Verified {
                    output: outcome.output.to_hex().to_string(),
                    fuel: outcome.fuel,
                    households: winners,
                    credit_reference_mj: s.credit.map(|c| c.reference_mj),
                };
            }
            let live: Vec<String> = s
                .leases
                .iter()
                .filter(|l| l.deadline_ms > now_ms)
                .map(|l| l.worker.to_hex())
                .collect();
            if !live.is_empty() {
                return ShardView::Leased {
                    to: live,
                    claims: s.claims.len(),
                };
            }
            if matches!(decide(s, replication), Decision::Verified(_)) {
                return ShardView::Verifying {
                    claims: s.claims.len(),
                };
            }
            ShardView::Waiting {
                reason: if s.claims.is_empty() && !job.declined.is_empty() {
                    declined_text(&job.declined)
                } else if s.claims.is_empty() && warmth.known > 0 && warmth.warm == warmth.known {
                    format!(
                        "no radiator wants heat right now ({} known, all rooms warm enough)",
                        warmth.known
                    )
                } else if s.claims.is_empty() {
                    "no radiator has asked for it yet (none wants heat, or none has seen the job)"
                        .into()
                } else {
                    format!(
                        "{} of {} agreeing replicas so far; waiting for another household",
                        s.claims.len(),
                        replicas_needed(s, replication)
                    )
                },
            }
        })
        .collect();
    JobView {
        id: id.to_hex().to_string(),
        status: job.status.clone(),
        shards_total: job.shards.len(),
        shards_verified: job.shards.iter().filter(|s| s.verified.is_some()).count(),
        replication,
        assembly: job.manifest.assembly,
        submitted_ms: job.submitted_ms,
        finished_ms: job.finished_ms,
        shards,
    }
}

/// Why radiators declined a job, for the waiting reason the submitter sees.
fn declined_text(declined: &[FailureRec]) -> String {
    let reasons: Vec<String> = declined
        .iter()
        .map(|d| format!("{}: {}", &d.worker.to_hex()[..8], d.reason))
        .collect();
    format!(
        "declined by {} household(s) as beyond their limits ({}); waiting for a radiator that accepts it",
        declined.len(),
        reasons.join("; ")
    )
}
