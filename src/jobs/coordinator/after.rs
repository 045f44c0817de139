//! What follows a decided shard, off the actor's hot path: its output fetched and checked,
//! its claims countersigned and recorded (on a blocking thread), and the finished job
//! assembled (on a blocking thread). Each reports back to the actor, which writes the result
//! through the group commit. Must not touch: the network beyond fetching an output.

use std::time::Duration;

use crate::identity::PublicKey;
use crate::model::now_ms;
use crate::net::Topic;

use super::assemble;
use super::book::{self, Finish, Outcome};
use super::delivery;
use super::handle::Command;
use super::Coordinator;

/// How long the addresses read from the network serve before they are read again. Marking
/// runs once per settled shard; re-reading every peer's addresses that often would cost the
/// swarm task a walk over all peers per shard. Ten seconds is far shorter than a lease.
const ADDRESSES_FRESH: Duration = Duration::from_secs(10);

/// The IP addresses this node and its connected peers were last seen at (see
/// `jobs::trust::related` for which count). Bounded: one entry per connected peer, each at
/// most `related::MAX_ADDRESSES` long; replaced whole at each read.
#[derive(Default)]
pub(super) struct Addresses {
    read_at: Option<std::time::Instant>,
    own: Vec<std::net::IpAddr>,
    peers: std::collections::HashMap<libp2p::PeerId, Vec<std::net::IpAddr>>,
}

/// What a blocking thread hands back to the actor.
pub(super) enum Blocking {
    /// A batch of settlements, each with the claim indices whose receipts were recorded.
    Settled(Vec<(Settling, Vec<u32>)>),
    Assembled {
        job: blake3::Hash,
        result: Result<blake3::Hash, String>,
    },
    /// A commitment sealed and written (not yet flushed), or nothing was pending.
    Sealed(Result<Option<crate::model::commit::Commitment>, String>),
}

/// A verified shard's claims on their way to being countersigned.
pub(super) struct Settling {
    pub job: blake3::Hash,
    pub shard: u32,
    pub settlement: book::Settlement,
}

/// Shards settled by one blocking task at most, so one task's result (and the one kv batch
/// that marks them settled) stays small. Each shard's receipts are still recorded in a
/// ledger batch of their own: one ledger batch for all the shards of a task (an intent of
/// about 40 KB for 32 shards) made sled write twice the bytes per verified shard on the
/// 65 536-shard bench (docs/architecture.md, "Coordinator throughput").
pub(super) const MAX_SETTLE_BATCH: usize = 32;

/// Shards whose failed output fetches are counted for [`refetch_wait`], at most (beyond it a
/// shard's retry waits the first wait; an entry leaves when its output arrives).
pub(super) const MAX_REFETCHING: usize = 65_536;

/// The wait before fetching a shard's output again after `failures` failed fetches in a
/// row: 1 s, doubling to 32 s. A fetch of a worker behind NAT that cannot be reached is a
/// dial, and through a relay a circuit its rate limiter charges to this node (every second,
/// before, for as long as it failed).
pub(super) fn refetch_wait(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5))
}

/// What a blocking thread is doing, so a failed one frees its guard.
pub(super) enum Work {
    Settle(Vec<(blake3::Hash, u32)>),
    Assemble(blake3::Hash),
    Seal,
}

impl Coordinator {
    /// Starts fetching a decided shard's output, from an agreeing worker if one is named.
    /// The result comes back as a command, so the actor never waits on the network.
    pub(super) fn fetch_output(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        hint: Option<PublicKey>,
    ) {
        if !self.fetching.insert((job, shard)) {
            return;
        }
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        let peer = hint.map(|h| h.peer_id());
        self.tasks.spawn(async move {
            let output = outcome.output;
            let result = match store.has(&output) {
                Ok(true) => Ok(()),
                // The store checks every piece against the output hash as it arrives.
                _ => net
                    // No shard output can be larger than the executor produces.
                    .fetch_blob_within(output, peer, crate::exec::MAX_OUTPUT_BYTES as u64)
                    .await
                    .map_err(|e| e.to_string()),
            };
            let _ = tx
                .send(Command::OutputFetched {
                    job,
                    shard,
                    outcome,
                    hint,
                    result,
                })
                .await;
        });
    }

    /// A failed fetch's wait is over: fetch the output again, unless its job is no longer
    /// running.
    pub(super) fn refetch_output(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        hint: Option<PublicKey>,
    ) {
        self.fetching.remove(&(job, shard));
        let running = self
            .book
            .job(&job)
            .is_some_and(|j| j.status == book::JobStatus::Running);
        if running {
            self.fetch_output(job, shard, outcome, hint);
        } else {
            self.refetching.remove(&(job, shard));
        }
    }

    /// A fetch of a shard's output ended. A failed one is tried again, from the same worker
    /// first (before 2026-12-07 the retry named none, and in `testnet/dht-scale` two outputs
    /// then failed every second for minutes, thousands of times, while every fetch named a
    /// worker succeeded), after [`refetch_wait`].
    pub(super) fn output_fetched(
        &mut self,
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        hint: Option<PublicKey>,
        result: Result<(), String>,
    ) {
        if let Err(e) = result {
            // Still in `fetching` until the wait is over (`Command::Refetch`).
            let room = self.refetching.len() < MAX_REFETCHING;
            let failures = match self.refetching.get_mut(&(job, shard)) {
                Some(n) => {
                    *n = n.saturating_add(1);
                    *n
                }
                None => {
                    if room {
                        self.refetching.insert((job, shard), 1);
                    }
                    1
                }
            };
            let wait = refetch_wait(failures);
            tracing::warn!(job = %job, shard, failures, retry_in_s = wait.as_secs(), "could not fetch the verified output: {e}; retrying");
            let tx = self.tx.clone();
            self.tasks.spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx
                    .send(Command::Refetch {
                        job,
                        shard,
                        outcome,
                        hint,
                    })
                    .await;
            });
            return;
        }
        self.fetching.remove(&(job, shard));
        self.refetching.remove(&(job, shard));
        let Some(step) = self.book.output_checked(&job, shard, outcome) else {
            return;
        };
        if let Err(e) = self.commit(step) {
            // The book is unchanged; the next round's `pending` fetches and tries again.
            tracing::error!(job = %job, shard, "could not save the verified shard: {e}");
        }
    }

    /// Queues a verified shard whose claims are not all settled: its agreeing claims are to
    /// be countersigned and the households whose claims lost excluded, then the receipts
    /// delivered and published. [`Coordinator::start_settling`] hands the queue to blocking
    /// threads, so the shards one flush released are settled by one task and marked settled
    /// in one write; [`Coordinator::settled`] takes the result.
    ///
    /// The receipts go into the ledger and the outbox *before* the shards are saved as
    /// settled, and nothing is delivered before a flush: a crash in between leaves the
    /// claims unsettled, and countersigning again yields the identical receipt (ed25519 is
    /// deterministic), which the ledger takes as a replay. A claim whose countersignature or
    /// recording failed stays unsettled and is tried again next round. At most one
    /// settlement per shard is queued or runs at a time.
    pub(super) fn settle(&mut self, job: blake3::Hash, shard: u32) {
        if self.settling.contains(&(job, shard)) {
            return;
        }
        let Some(settlement) = self.book.settlement(&job, shard) else {
            return;
        };
        self.settling.insert((job, shard));
        self.to_settle.push(Settling {
            job,
            shard,
            settlement,
        });
    }

    /// Countersigns and records the queued settlements on blocking threads, up to
    /// [`MAX_SETTLE_BATCH`] shards per thread ([`delivery::countersign_all`] for each).
    pub(super) fn start_settling(&mut self) {
        while !self.to_settle.is_empty() {
            let rest = self
                .to_settle
                .split_off(self.to_settle.len().min(MAX_SETTLE_BATCH));
            let batch = std::mem::replace(&mut self.to_settle, rest);
            let shards: Vec<(blake3::Hash, u32)> = batch.iter().map(|s| (s.job, s.shard)).collect();
            let (identity, ledger, outbox) = (
                self.identity.clone(),
                self.ledger.clone(),
                self.outbox.writer(),
            );
            let task = self.blocking.spawn_blocking(move || {
                let settled = batch
                    .into_iter()
                    .map(|s| {
                        let signed = delivery::countersign_all(
                            &identity,
                            &ledger,
                            &outbox,
                            &s.job,
                            s.shard,
                            &s.settlement.winners,
                        );
                        (s, signed)
                    })
                    .collect();
                Blocking::Settled(settled)
            });
            self.blocking_work.insert(task.id(), Work::Settle(shards));
        }
    }

    /// A batch of settlements' receipts is recorded: marks the claims settled and excludes
    /// the losers, in one write.
    pub(super) async fn settled(&mut self, batch: Vec<(Settling, Vec<u32>)>) {
        for (s, _) in &batch {
            for (_, loser) in &s.settlement.losers {
                tracing::warn!(household = %loser.record.worker, job = %s.job, shard = s.shard, "claim lost the replica vote; household excluded");
            }
        }
        let items: Vec<_> = batch
            .iter()
            .map(|(s, signed)| (s.job, s.shard, &s.settlement, signed.as_slice()))
            .collect();
        let updates = self.book.settled_all(&items);
        // Who each shard's update excludes, in the batch's order (the book leaves out shards
        // it no longer holds, so match by job and shard).
        let excluded: Vec<((blake3::Hash, u32), Vec<PublicKey>)> = updates
            .iter()
            .filter_map(|u| {
                let key = (u.job?, u.shard.as_ref()?.0);
                Some((key, u.exclude.iter().map(|(h, _)| *h).collect()))
            })
            .collect();
        if let Err(e) = self.write(updates) {
            tracing::error!(
                shards = batch.len(),
                "could not save the settled claims: {e}; will retry"
            );
            return;
        }
        // The batch's jobs, each with whether any of its receipts was recorded.
        let mut jobs: Vec<(blake3::Hash, bool)> = Vec::new();
        for (s, signed) in &batch {
            let Some((_, excluded)) = excluded.iter().find(|(k, _)| *k == (s.job, s.shard)) else {
                continue;
            };
            self.publish_evidence(&s.settlement, excluded).await;
            self.mark_related(&s.settlement, signed).await;
            match jobs.iter_mut().find(|(j, _)| *j == s.job) {
                Some(j) => j.1 |= !signed.is_empty(),
                None => jobs.push((s.job, !signed.is_empty())),
            }
        }
        // Receipts are delivered with their inclusion proof, so they wait for a commitment:
        // the next round's, or at once when a shard of the batch was its job's last.
        for (job, signed) in jobs {
            if self.book.all_verified(&job) {
                if signed {
                    self.seal();
                }
                self.check_finished(job);
            }
        }
    }

    /// Marks the receipts just recorded whose worker is this household or shares an address
    /// with it (issue 10, item 5; `jobs::trust::related`, `docs/threat-model.md`). The
    /// decision is pure; this only reads the addresses the network saw and writes the marks.
    async fn mark_related(&mut self, settlement: &book::Settlement, signed: &[u32]) {
        use crate::jobs::trust::related;
        let stale = self
            .addresses
            .read_at
            .is_none_or(|t| t.elapsed() >= ADDRESSES_FRESH);
        if stale {
            let (status, peers) = (self.net.status().await, self.net.peers().await);
            if let (Ok(status), Ok(peers)) = (status, peers) {
                let ips = |addrs: &mut dyn Iterator<Item = &libp2p::Multiaddr>| {
                    addrs
                        .filter_map(related::ip_of)
                        .take(related::MAX_ADDRESSES)
                        .collect::<Vec<_>>()
                };
                self.addresses = Addresses {
                    read_at: Some(std::time::Instant::now()),
                    own: ips(&mut status
                        .listen_addrs
                        .iter()
                        .chain(status.reachability.confirmed_addrs.iter())
                        .chain(self.config.own_addresses.iter())),
                    peers: peers
                        .iter()
                        .map(|p| (p.peer_id, ips(&mut p.addresses.iter())))
                        .collect(),
                };
            }
        }
        let own = self.identity.public();
        let marks: Vec<(blake3::Hash, related::Relation)> = settlement
            .winners
            .iter()
            .filter(|(i, _, _)| signed.contains(i))
            .filter_map(|(_, claim, terms)| {
                let worker = claim.record.worker;
                let worker_ips = self
                    .addresses
                    .peers
                    .get(&worker.peer_id())
                    .map_or(&[][..], Vec::as_slice);
                let relation = related::relation(&own, &worker, &self.addresses.own, worker_ips)?;
                let mut id = blake3::Hasher::new();
                id.update(&claim.record.to_bytes())
                    .update(&terms.to_bytes());
                Some((id.finalize(), relation))
            })
            .collect();
        if marks.is_empty() {
            return;
        }
        for (id, relation) in &marks {
            tracing::info!(receipt = %id, ?relation, "receipt marked: its worker is this household or shares an address with it");
        }
        if let Err(e) = self.trust.mark_related(&marks) {
            tracing::error!("could not mark {} self-dealt receipt(s): {e}", marks.len());
        }
    }

    /// Work done on a blocking thread came back.
    pub(super) async fn blocking_done(
        &mut self,
        done: Result<(tokio::task::Id, Blocking), tokio::task::JoinError>,
    ) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        match self.blocking_work.remove(&id) {
            Some(Work::Settle(shards)) => {
                for shard in shards {
                    self.settling.remove(&shard);
                }
            }
            Some(Work::Assemble(job)) => {
                self.assembling.remove(&job);
            }
            Some(Work::Seal) => self.sealing = false,
            None => {}
        }
        match done {
            Ok((_, Blocking::Settled(batch))) => self.settled(batch).await,
            Ok((_, Blocking::Assembled { job, result })) => self.assembled(job, result).await,
            Ok((_, Blocking::Sealed(result))) => self.sealed(result),
            // The claims stay unsettled (or the job unassembled): the next round tries again.
            Err(e) => tracing::error!("a coordinator thread failed: {e}"),
        }
    }

    /// Starts assembling a job whose every shard is verified, on a blocking thread, once no
    /// settlement of it is in flight (so a finished job's receipts are recorded when it is
    /// shown done; the last settlement calls this again).
    pub(super) fn check_finished(&mut self, job: blake3::Hash) {
        // O(1) until the job's last shard is verified; asked after every verified shard.
        if !self.book.all_verified(&job) || self.settling.iter().any(|(j, _)| *j == job) {
            return;
        }
        let Finish::Assemble(outputs) = self.book.finish(&job) else {
            return;
        };
        let Some(manifest) = self.book.job(&job).map(|j| j.manifest.clone()) else {
            return;
        };
        if !self.assembling.insert(job) {
            return;
        }
        let store = self.store.clone();
        let task = self.blocking.spawn_blocking(move || Blocking::Assembled {
            job,
            result: assemble(&store, &manifest, &outputs).map_err(|e| e.to_string()),
        });
        self.blocking_work.insert(task.id(), Work::Assemble(job));
    }

    pub(super) async fn assembled(
        &mut self,
        job: blake3::Hash,
        result: Result<blake3::Hash, String>,
    ) {
        let Some(update) = self.book.assembled(&job, result, now_ms()) else {
            return;
        };
        if let Err(e) = self.write(vec![update]) {
            // The book is unchanged; the next round assembles again.
            tracing::error!(job = %job, "could not save the finished job: {e}");
        }
    }
}

impl Coordinator {
    /// Gossips fraud evidence (`docs/protocol.md` §6.5) against each household this vote
    /// excluded: its claim and a winning one, signed by this coordinator, so other nodes can
    /// re-run the shard and exclude it too. Best effort: published once, when the exclusion
    /// is written (the group flush that makes it durable may still be running: evidence is
    /// self-contained and every receiver re-runs the shard, so a crash before that flush
    /// costs nothing but this node's own record); a node that does not hear it learns of the
    /// liar only by catching it.
    async fn publish_evidence(&self, settlement: &book::Settlement, excluded: &[PublicKey]) {
        for (_, loser) in &settlement.losers {
            if !excluded.contains(&loser.record.worker) {
                continue;
            }
            let evidence = crate::model::evidence::Evidence::sign(
                &self.identity,
                now_ms(),
                settlement.outcome.output,
                settlement.outcome.fuel,
                loser.clone(),
                settlement.evidence.clone(),
            );
            match evidence {
                Ok(e) => {
                    // Kept to answer nodes that join after the gossip (`Request::Evidence`).
                    if let Err(err) = self.evidence.keep_published(&e) {
                        tracing::error!(household = %loser.record.worker, "could not keep fraud evidence for late joiners: {err}");
                    }
                    if let Err(err) = self.net.publish(Topic::Evidence, e.to_bytes()).await {
                        tracing::debug!(household = %loser.record.worker, "fraud evidence not gossiped: {err}");
                    }
                }
                Err(err) => {
                    tracing::error!(household = %loser.record.worker, "cannot sign fraud evidence: {err}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_output_fetch_is_tried_less_and_less_often() {
        let secs: Vec<u64> = (1..=8).map(|n| refetch_wait(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(refetch_wait(0), Duration::from_secs(1));
        assert_eq!(refetch_wait(u32::MAX), Duration::from_secs(32));
    }
}
