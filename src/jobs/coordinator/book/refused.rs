//! Households whose keys the node refuses: revoked by their own household (a stolen key), or
//! caught signing two receipt commitments under one number (`node::revoked`). The actor
//! turns their lease requests, renewals and claims away (`Coordinator::control`); what they
//! already hold in running jobs is taken back here: their live leases and the claims of
//! shards not yet decided are dropped, so such a key neither keeps shards from honest
//! radiators until its leases run out nor weighs in a vote. What was verified with it
//! stays as it was (its receipts are the verifiers' business: `docs/receipts.md`).
//!
//! A shard whose vote was decided with such a claim and whose output is being fetched is
//! judged again when the output arrives ([`Book::output_checked`] decides anew), so it goes
//! back to being leased instead of being verified on the withdrawn claim.
//! Must not touch: I/O, clocks.

use super::{Book, Update};
use crate::identity::PublicKey;

impl Book {
    /// What to write to take back everything `refused` households hold in running jobs: the
    /// new state of each open shard holding one of their leases or claims. Costs one look
    /// at every shard in flight (leased or claimed), not at every shard; empty when none
    /// holds anything.
    pub fn withdraw(&self, refused: &dyn Fn(&PublicKey) -> bool) -> Vec<Update> {
        let mut updates = Vec::new();
        for id in self.running() {
            let (Some(job), Some(ix)) = (self.jobs.get(&id), self.index.get(&id)) else {
                continue;
            };
            for &i in ix.leased.union(&ix.claimed) {
                let Some(shard) = job.shards.get(i as usize) else {
                    continue;
                };
                // A decided shard keeps its claims: they were settled, or are being settled,
                // as they stood when it was verified.
                if !shard.is_open() {
                    continue;
                }
                let held = shard.leases.iter().any(|l| refused(&l.worker))
                    || shard.claims.iter().any(|c| refused(&c.record.worker));
                if !held {
                    continue;
                }
                let mut next = shard.clone();
                next.leases.retain(|l| !refused(&l.worker));
                next.claims.retain(|c| !refused(&c.record.worker));
                updates.push(Update {
                    job: Some(id),
                    shard: Some((i, next)),
                    ..Update::default()
                });
            }
        }
        updates
    }
}
