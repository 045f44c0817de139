//! After the vote: a decided shard's output checked, its claims settled (winners
//! countersigned, losers excluded), the finished job assembled, and what is left to do after
//! a restart. Pure, like the rest of the book. Must not touch: I/O, clocks.

use super::{Action, Book, Decision, JobStatus, Outcome, ShardCredit, Step, Update};
use crate::jobs::credit;
use crate::jobs::trust::Record;
use crate::model::receipt::{Claim, CreditTerms, VerifiedBy};
use crate::model::wire::Response;

/// A verified shard's claims that still need settling.
#[derive(Clone, Debug)]
pub struct Settlement {
    pub outcome: Outcome,
    /// Agreeing claims to countersign, with their indices and the credit terms each is
    /// countersigned with.
    pub winners: Vec<(u32, Claim, CreditTerms)>,
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
            || self.judge(job, state, index).decide(shard) != Decision::Verified(outcome)
        {
            return None;
        }
        let mut next = shard.clone();
        next.verified = Some(outcome);
        // The credit bound's evidence, fixed now (`jobs::credit`): the agreeing replicas'
        // energies for the same fuel, and the job's verified shards so far.
        let agreeing: Vec<u64> = shard
            .claims
            .iter()
            .filter(|c| c.record.output == outcome.output && c.record.fuel == outcome.fuel)
            .map(|c| c.record.energy_mj)
            .collect();
        next.credit = Some(ShardCredit {
            reference_mj: credit::shard_reference(&agreeing, outcome.fuel, &state.rates),
            // At most MAX_REPLICAS (16) claims are ever held for a shard.
            agreeing: agreeing.len().min(u8::MAX as usize) as u8,
            replicas: shard.claims.len().min(u8::MAX as usize) as u8,
        });
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
        let state = self.jobs.get(job)?;
        let shard = state.shards.get(index as usize)?;
        let outcome = shard.verified?;
        let judge = self.judge(job, state, index);
        let agrees = |c: &Claim| c.record.output == outcome.output && c.record.fuel == outcome.fuel;
        let evidence = shard.claims.iter().find(|c| agrees(c))?.clone();
        // Set with `verified` by `output_checked`; a shard verified without it (none exist
        // but the type allows it) is credited against its own agreeing claims.
        let shard_credit = shard.credit.unwrap_or_else(|| {
            let agreeing: Vec<u64> = shard
                .claims
                .iter()
                .filter(|c| agrees(c))
                .map(|c| c.record.energy_mj)
                .collect();
            ShardCredit {
                reference_mj: credit::shard_reference(&agreeing, outcome.fuel, &Default::default()),
                agreeing: agreeing.len().min(u8::MAX as usize) as u8,
                replicas: shard.claims.len().min(u8::MAX as usize) as u8,
            }
        });
        // How the shard was verified, for whoever repays the credit: a quorum of the job's
        // full replication, or an established household's result standing on fewer replicas
        // (spot-checked by a second household when the draw picked the shard).
        let trusted = judge.backed_by_established(shard, outcome);
        let verified_by = if trusted && judge.spot_checked && shard_credit.agreeing >= 2 {
            VerifiedBy::TrustedSpotChecked
        } else if trusted
            && usize::from(shard_credit.agreeing) < judge.policy.untrusted_quorum(judge.replication)
        {
            VerifiedBy::TrustedUnchecked
        } else {
            VerifiedBy::Quorum
        };
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for (i, claim) in shard.claims.iter().enumerate() {
            let i = i as u32;
            if shard.settled.contains(&i) {
                continue;
            }
            if agrees(claim) {
                let window_ms = claim.record.end_ms.saturating_sub(claim.record.start_ms);
                let c =
                    credit::credit(claim.record.energy_mj, window_ms, shard_credit.reference_mj);
                let terms = CreditTerms {
                    credited_mj: c.credited_mj,
                    basis: c.basis,
                    verified_by,
                    // A late replica that agrees is counted with the vote that verified the
                    // shard (itself not included), so its terms are fixed too.
                    agreeing: shard_credit.agreeing.max(1),
                    replicas: shard_credit.replicas.max(shard_credit.agreeing).max(1),
                };
                winners.push((i, claim.clone(), terms));
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

    /// Marks claims settled, for each verified shard of a batch: `signed` winners whose
    /// receipts are recorded, and every loser of its settlement. One update per shard, in
    /// the batch's order; shards the book no longer holds are left out.
    ///
    /// A loser is excluded for good (with both signed claims as evidence) only when the
    /// winning group holds an established household: then the vote is backed by a
    /// household with a clean record of verified work, which new identities, however many,
    /// cannot outvote (`Judge::decide`). A loser of a vote among households on probation
    /// only is shut out of this job, and its record counts a dispute, not a lie: a colluding
    /// majority could have won that vote (issue 10). Winners' records count a verified
    /// result, unless the household verified the shard alone on probation.
    ///
    /// Reputation records accumulate across the batch: each update carries a household's
    /// record with every earlier shard of the batch counted, so applying the updates in
    /// order (or writing them in one batch, the last write of a key winning) loses no count.
    /// Whether a vote was backed by an established household is judged on the records as
    /// they were before the batch: a household that becomes established within it counts as
    /// such from the next batch on, which can only turn an exclusion into a suspension.
    pub fn settled_all(&self, batch: &[(blake3::Hash, u32, &Settlement, &[u32])]) -> Vec<Update> {
        let mut records: Vec<(crate::identity::PublicKey, Record)> = Vec::new();
        let mut updates = Vec::with_capacity(batch.len());
        for &(job, index, settlement, signed) in batch {
            let Some(state) = self.jobs.get(&job) else {
                continue;
            };
            let Some(shard) = state.shards.get(index as usize) else {
                continue;
            };
            let judge = self.judge(&job, state, index);
            let proven = judge.backed_by_established(shard, settlement.outcome);
            let mut next = shard.clone();
            let mut exclude = Vec::new();
            let mut suspend = Vec::new();
            // The households this shard changes, with their records as of this shard.
            let mut touched: Vec<crate::identity::PublicKey> = Vec::new();
            let mut bump = |who: crate::identity::PublicKey, f: &dyn Fn(&mut Record)| {
                if !touched.contains(&who) {
                    touched.push(who);
                }
                if let Some((_, r)) = records.iter_mut().find(|(h, _)| *h == who) {
                    f(r);
                } else {
                    let mut r = self.reputation.record(&who).copied().unwrap_or_default();
                    f(&mut r);
                    records.push((who, r));
                }
            };
            for (i, loser) in &settlement.losers {
                let who = loser.record.worker;
                if proven {
                    let evidence = serde_json::json!({
                        "job": job.to_hex().to_string(),
                        "shard": index,
                        "losing_claim": hex::encode(loser.to_bytes()),
                        "winning_claim": hex::encode(settlement.evidence.to_bytes()),
                    });
                    exclude.push((who, evidence.to_string()));
                    bump(who, &|r| r.wrong = r.wrong.saturating_add(1));
                } else {
                    suspend.push(who);
                    bump(who, &|r| r.disputed = r.disputed.saturating_add(1));
                }
                next.settled.push(*i);
            }
            let agreeing = shard
                .claims
                .iter()
                .filter(|c| {
                    c.record.output == settlement.outcome.output
                        && c.record.fuel == settlement.outcome.fuel
                })
                .count();
            for (i, claim, _) in &settlement.winners {
                if signed.contains(i) && (proven || agreeing >= 2) {
                    bump(claim.record.worker, &|r| {
                        r.verified = r.verified.saturating_add(1)
                    });
                }
            }
            next.settled.extend(signed.iter().copied());
            next.settled.sort_unstable();
            next.settled.dedup();
            let reputation = records
                .iter()
                .filter(|(h, _)| touched.contains(h))
                .copied()
                .collect();
            updates.push(Update {
                job: Some(job),
                shard: Some((index, next)),
                status: None,
                exclude,
                declined: None,
                reputation,
                suspend,
                ..Update::default()
            });
        }
        updates
    }

    /// Whether a running job's every shard is verified and settled (its receipts recorded, or
    /// its losers excluded). A claim whose countersignature keeps failing holds the job back;
    /// every round tries it again.
    pub fn finish(&self, job: &blake3::Hash) -> Finish {
        let Some(state) = self.jobs.get(job) else {
            return Finish::NotYet;
        };
        // O(1) until the last shard is verified: this is asked after every verified shard.
        if state.status != JobStatus::Running || !self.all_verified(job) {
            return Finish::NotYet;
        }
        // Shown done only with every receipt recorded: a shard verified here may still wait
        // for the write that verified it before it is settled, or for a countersignature
        // tried again next round. The last settlement asks again.
        if self
            .index
            .get(job)
            .is_some_and(|ix| !ix.unsettled.is_empty())
        {
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
    /// shards, verified shards with unsettled claims, and finished jobs to assemble. Looks
    /// at the indexed shards only (`index.rs`): a round costs O(shards in flight).
    pub fn pending(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, state) in &self.jobs {
            let Some(ix) = self.index.get(id) else {
                continue;
            };
            // Claims of a finished job too may still need receipts (a late replica that
            // agrees).
            for &i in &ix.unsettled {
                actions.push(Action::Settle { job: *id, shard: i });
            }
            if state.status != JobStatus::Running {
                continue;
            }
            for &i in &ix.claimed {
                let Some(s) = state.shards.get(i as usize) else {
                    continue;
                };
                if let Decision::Verified(outcome) = self.judge(id, state, i).decide(s) {
                    actions.push(Action::FetchOutput {
                        job: *id,
                        shard: i,
                        outcome,
                        hint: s.agreeing_worker(&outcome),
                    });
                }
            }
            if self.all_verified(id) {
                actions.push(Action::CheckFinished { job: *id });
            }
        }
        actions
    }
}
