//! After the vote: a decided shard's output checked, its claims settled (winners
//! countersigned, losers excluded), the finished job assembled, and what is left to do after
//! a restart. Pure, like the rest of the book. Must not touch: I/O, clocks.

use super::{decide, Action, Book, Decision, JobStatus, Outcome, Step, Update};
use crate::model::receipt::Claim;
use crate::model::wire::Response;

/// A verified shard's claims that still need settling.
#[derive(Clone, Debug)]
pub struct Settlement {
    pub outcome: Outcome,
    /// Agreeing claims to countersign, with their indices.
    pub winners: Vec<(u32, Claim)>,
    /// Disagreeing claims; their households are excluded.
    pub losers: Vec<(u32, Claim)>,
    /// One agreeing claim, kept as evidence against the losers.
    pub evidence: Claim,
}

/// What the actor must do to finish a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    NotYet,
    /// Every shard is verified: assemble these outputs (off the actor) and report back
    /// with [`Book::assembled`].
    Assemble(Vec<blake3::Hash>),
}

impl Book {
    /// The agreed output of a shard was fetched and its hash checked: the shard is verified.
    pub fn output_checked(&self, job: &blake3::Hash, index: u32, outcome: Outcome) -> Option<Step> {
        let state = self.jobs.get(job)?;
        let shard = state.shards.get(index as usize)?;
        if !shard.is_open()
            || decide(shard, state.manifest.replication) != Decision::Verified(outcome)
        {
            return None;
        }
        let mut next = shard.clone();
        next.verified = Some(outcome);
        Some(Step {
            update: Update {
                job: Some(*job),
                shard: Some((index, next)),
                ..Update::default()
            },
            answer: Response::ClaimAccepted { verified: true },
            then: vec![
                Action::Settle {
                    job: *job,
                    shard: index,
                },
                Action::CheckFinished { job: *job },
            ],
        })
    }

    /// The claims of a verified shard not yet settled. The winners are exactly the claims in
    /// the decided (output, fuel) group: a claim with the right output and the wrong fuel
    /// loses like any other wrong claim.
    pub fn settlement(&self, job: &blake3::Hash, index: u32) -> Option<Settlement> {
        let shard = self.jobs.get(job)?.shards.get(index as usize)?;
        let outcome = shard.verified?;
        let agrees = |c: &Claim| c.record.output == outcome.output && c.record.fuel == outcome.fuel;
        let evidence = shard.claims.iter().find(|c| agrees(c))?.clone();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for (i, claim) in shard.claims.iter().enumerate() {
            let i = i as u32;
            if shard.settled.contains(&i) {
                continue;
            }
            if agrees(claim) {
                winners.push((i, claim.clone()));
            } else {
                losers.push((i, claim.clone()));
            }
        }
        if winners.is_empty() && losers.is_empty() {
            return None;
        }
        Some(Settlement {
            outcome,
            winners,
            losers,
            evidence,
        })
    }

    /// Marks claims settled: `signed` winners whose receipts are recorded, and every loser of
    /// `settlement` (their households excluded, with both signed claims as evidence).
    pub fn settled(
        &self,
        job: &blake3::Hash,
        index: u32,
        settlement: &Settlement,
        signed: &[u32],
    ) -> Option<Update> {
        let shard = self.jobs.get(job)?.shards.get(index as usize)?;
        let mut next = shard.clone();
        let mut exclude = Vec::new();
        for (i, loser) in &settlement.losers {
            let evidence = serde_json::json!({
                "job": job.to_hex().to_string(),
                "shard": index,
                "losing_claim": hex::encode(loser.to_bytes()),
                "winning_claim": hex::encode(settlement.evidence.to_bytes()),
            });
            exclude.push((loser.record.worker, evidence.to_string()));
            next.settled.push(*i);
        }
        next.settled.extend(signed.iter().copied());
        next.settled.sort_unstable();
        next.settled.dedup();
        Some(Update {
            job: Some(*job),
            shard: Some((index, next)),
            status: None,
            exclude,
            declined: None,
        })
    }

    /// Whether a running job's every shard is verified.
    pub fn finish(&self, job: &blake3::Hash) -> Finish {
        let Some(state) = self.jobs.get(job) else {
            return Finish::NotYet;
        };
        if state.status != JobStatus::Running {
            return Finish::NotYet;
        }
        let outputs: Option<Vec<blake3::Hash>> = state
            .shards
            .iter()
            .map(|s| s.verified.map(|o| o.output))
            .collect();
        match outputs {
            Some(outputs) => Finish::Assemble(outputs),
            None => Finish::NotYet,
        }
    }

    /// The assembled result (or why assembly failed) closes the job.
    pub fn assembled(
        &self,
        job: &blake3::Hash,
        result: Result<blake3::Hash, String>,
        now_ms: u64,
    ) -> Option<Update> {
        let state = self.jobs.get(job)?;
        if state.status != JobStatus::Running {
            return None;
        }
        let status = match result {
            Ok(hash) => JobStatus::Done {
                result: hash.to_hex().to_string(),
            },
            Err(e) => JobStatus::Failed {
                reason: format!("assembling the result: {e}"),
            },
        };
        Some(Update {
            job: Some(*job),
            status: Some((status, Some(now_ms))),
            ..Update::default()
        })
    }

    /// What is left to do after a restart or a failed step: outputs to fetch for decided
    /// shards, verified shards with unsettled claims, and finished jobs to assemble.
    pub fn pending(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, state) in &self.jobs {
            if state.status != JobStatus::Running {
                // Claims of a finished job may still need receipts (a failed countersign).
                for (i, s) in state.shards.iter().enumerate() {
                    if s.verified.is_some() && s.settled.len() < s.claims.len() {
                        actions.push(Action::Settle {
                            job: *id,
                            shard: i as u32,
                        });
                    }
                }
                continue;
            }
            let mut all_verified = true;
            for (i, s) in state.shards.iter().enumerate() {
                let i = i as u32;
                if s.verified.is_some() {
                    if s.settled.len() < s.claims.len() {
                        actions.push(Action::Settle { job: *id, shard: i });
                    }
                    continue;
                }
                all_verified = false;
                if s.failed.is_none() {
                    if let Decision::Verified(outcome) = decide(s, state.manifest.replication) {
                        actions.push(Action::FetchOutput {
                            job: *id,
                            shard: i,
                            outcome,
                            hint: None,
                        });
                    }
                }
            }
            if all_verified {
                actions.push(Action::CheckFinished { job: *id });
            }
        }
        actions
    }
}
