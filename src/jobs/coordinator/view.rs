//! What `hearth job status` and the API show of a job: read-only views built from the book.
//! The JSON shape of [`JobView`], [`ShardView`] and [`JobSummary`] is part of the API; keep it
//! stable.

use serde::{Deserialize, Serialize};

use crate::model::Assembly;

use super::book::{
    decide, replicas_needed, Decision, FailureRec, JobBook, JobStatus, ShardBook, ShardIndex,
    Warmth,
};

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

/// A job without its shards: what `hearth jobs` lists and `hearth job wait` follows. Built
/// without walking the shards ([`summary`]), where a [`JobView`] of a 65 536-shard job costs
/// the coordinator's actor tens of milliseconds and its JSON megabytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobSummary {
    pub id: String,
    pub status: JobStatus,
    pub shards_total: usize,
    pub shards_verified: usize,
    pub replication: u8,
    pub assembly: Assembly,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    /// Why the first shard that waits (neither leased nor verified) waits, if one does.
    pub waiting: Option<String>,
}

pub fn view(id: &blake3::Hash, job: &JobBook, warmth: Warmth, now_ms: u64) -> JobView {
    let shards: Vec<ShardView> = job
        .shards
        .iter()
        .map(|s| shard_view(job, s, warmth, now_ms))
        .collect();
    JobView {
        id: id.to_hex().to_string(),
        status: job.status.clone(),
        shards_total: job.shards.len(),
        shards_verified: job.shards.iter().filter(|s| s.verified.is_some()).count(),
        replication: job.manifest.replication,
        assembly: job.manifest.assembly,
        submitted_ms: job.submitted_ms,
        finished_ms: job.finished_ms,
        shards,
    }
}

/// The job's summary. Its cost is that of the open shards before the first waiting one
/// (each checked for a live lease), never of the verified ones: the index names the open
/// shards in order.
pub fn summary(
    id: &blake3::Hash,
    job: &JobBook,
    index: &ShardIndex,
    warmth: Warmth,
    now_ms: u64,
) -> JobSummary {
    let replication = job.manifest.replication;
    let waiting = index
        .open
        .iter()
        .filter_map(|&i| job.shards.get(i as usize))
        .find(|s| waits(s, replication, now_ms))
        .map(|s| waiting_reason(job, s, warmth));
    JobSummary {
        id: id.to_hex().to_string(),
        status: job.status.clone(),
        shards_total: job.shards.len(),
        shards_verified: index.verified,
        replication,
        assembly: job.manifest.assembly,
        submitted_ms: job.submitted_ms,
        finished_ms: job.finished_ms,
        waiting,
    }
}

/// Whether a shard is [`ShardView::Waiting`]: not failed, not verified, no live lease and no
/// decided vote.
fn waits(s: &ShardBook, replication: u8, now_ms: u64) -> bool {
    s.failed.is_none()
        && s.verified.is_none()
        && !s.leases.iter().any(|l| l.deadline_ms > now_ms)
        && !matches!(decide(s, replication), Decision::Verified(_))
}

fn shard_view(job: &JobBook, s: &ShardBook, warmth: Warmth, now_ms: u64) -> ShardView {
    let replication = job.manifest.replication;
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
        reason: waiting_reason(job, s, warmth),
    }
}

fn waiting_reason(job: &JobBook, s: &ShardBook, warmth: Warmth) -> String {
    if s.claims.is_empty() && !job.declined.is_empty() {
        declined_text(&job.declined)
    } else if s.claims.is_empty() && warmth.known > 0 && warmth.warm == warmth.known {
        format!(
            "no radiator wants heat right now ({} known, all rooms warm enough)",
            warmth.known
        )
    } else if s.claims.is_empty() {
        "no radiator has asked for it yet (none wants heat, or none has seen the job)".into()
    } else {
        format!(
            "{} of {} agreeing replicas so far; waiting for another household",
            s.claims.len(),
            replicas_needed(s, job.manifest.replication)
        )
    }
}

/// Why radiators declined a job, for the waiting reason the submitter sees.
fn declined_text(declined: &[FailureRec]) -> String {
    let reasons: Vec<String> = declined
        .iter()
        .map(|d| format!("{}: {}", &d.worker.to_hex()[..8], d.reason))
        .collect();
    format!(
        "declined by {} household(s) ({}); waiting for a radiator that accepts it",
        declined.len(),
        reasons.join("; ")
    )
}
