//! A shard's lease, from the worker's side: asked for, saved in sled (`worker/leases`) so a
//! restart resumes it, renewed every third of its length while the shard runs, given back by
//! declining a job beyond this radiator. Running the shard is `shard.rs`; sending its claim is
//! `claims.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::sleep;

use crate::model::now_ms;
use crate::model::wire::{DenyReason, Lease, Request, Response, PROTOCOL_VERSION};

use super::{Ctx, Held, Outcome};
use crate::jobs::JobError;

/// Renewals are never sent more often than this, whatever the lease length.
const MIN_RENEW_EVERY_MS: u64 = 100;

/// The least lease time that must be left to start executing a shard: a third of the lease
/// (what one renewal period leaves at worst), and never under 250 ms.
pub fn min_lease_left(length_ms: u64) -> u64 {
    (length_ms / 3).max(250)
}

/// A lease being worked, as `worker/leases` keeps it (JSON) under job ‖ shard (u32 BE).
#[derive(Serialize, Deserialize)]
pub(super) struct SavedLease {
    pub(super) coordinator: String,
    pub(super) job: [u8; 32],
    pub(super) shard: u32,
    pub(super) nonce: [u8; 16],
    pub(super) deadline_ms: u64,
}

impl SavedLease {
    /// The nonce of a saved lease's bytes, if they can be read.
    pub(super) fn nonce_of(bytes: &[u8]) -> Option<[u8; 16]> {
        serde_json::from_slice::<SavedLease>(bytes)
            .ok()
            .map(|s| s.nonce)
    }
}

impl Ctx {
    pub(super) async fn ask(
        &self,
        coordinator: libp2p::PeerId,
        request: Request,
    ) -> Result<Response, JobError> {
        self.route.request(coordinator, &request).await
    }

    pub(super) async fn lease_and_work(
        &self,
        job: blake3::Hash,
        coordinator: libp2p::PeerId,
    ) -> Outcome {
        let request = Request::Lease {
            job,
            protocol: PROTOCOL_VERSION,
            demand_permille: self.demand_permille,
        };
        match self.ask(coordinator, request).await {
            Ok(Response::Leased(lease)) if lease.job == job => {
                let result = self.work(coordinator, lease).await;
                self.outcome(job, coordinator, result).await
            }
            Ok(Response::Denied {
                reason,
                retry_after_ms,
                detail,
            }) => {
                tracing::debug!(job = %job, ?reason, "no lease: {detail}");
                Outcome::Denied {
                    reason,
                    retry_after: Duration::from_millis(retry_after_ms.min(60_000)),
                    detail,
                }
            }
            Ok(other) => {
                Outcome::Unreachable(format!("unexpected answer to a lease request: {other:?}"))
            }
            Err(e) => Outcome::Unreachable(e.to_string()),
        }
    }

    /// What a worked lease comes to. A job beyond this radiator's limits is declined: the
    /// coordinator is told why (and passes it on to the submitter), and the job is dropped.
    pub(super) async fn outcome(
        &self,
        job: blake3::Hash,
        coordinator: libp2p::PeerId,
        result: Result<(), JobError>,
    ) -> Outcome {
        match result {
            Ok(()) => Outcome::Worked,
            // The job's data cannot reach this radiator, or has no room here, for now.
            Err(e @ (JobError::RelayedOnly(_) | JobError::NoRoom(_))) => {
                // The lease goes back at once (a decline releases it) and the submitter sees
                // why, rather than the shard waiting for the lease to expire. The coordinator
                // does not bar a household that declined, so it may ask again later.
                let reason = e.to_string();
                tracing::warn!(job = %job, %coordinator, "{reason}; declining the job for now");
                self.decline(coordinator, job, &reason).await;
                Outcome::GivenBack(reason)
            }
            Err(JobError::BeyondLimits(reason)) => {
                self.decline(coordinator, job, &reason).await;
                Outcome::Declined(reason)
            }
            Err(e) => Outcome::Unreachable(e.to_string()),
        }
    }

    /// Tells the coordinator this household declines the job, which releases its leases of
    /// it. The job is declined here all the same if the coordinator cannot be told; the
    /// leases then simply expire.
    pub(super) async fn decline(
        &self,
        coordinator: libp2p::PeerId,
        job: blake3::Hash,
        reason: &str,
    ) {
        let request = Request::Decline {
            job,
            reason: reason.to_string(),
        };
        if let Err(e) = self.ask(coordinator, request).await {
            tracing::debug!(job = %job, "could not tell the coordinator: {e}");
        }
    }

    /// Runs one leased shard and reports it.
    pub(super) async fn work(
        &self,
        coordinator: libp2p::PeerId,
        lease: Lease,
    ) -> Result<(), JobError> {
        let key = [lease.job.as_bytes().as_slice(), &lease.shard.to_be_bytes()].concat();
        let saved = SavedLease {
            coordinator: coordinator.to_string(),
            job: *lease.job.as_bytes(),
            shard: lease.shard,
            nonce: lease.nonce,
            deadline_ms: lease.deadline_ms,
        };
        self.leases.insert(
            key.as_slice(),
            serde_json::to_vec(&saved).map_err(|e| JobError::Corrupt(e.to_string()))?,
        )?;
        let (held_tx, held) = watch::channel(Held {
            deadline_ms: lease.deadline_ms,
            refused: None,
        });
        let length_ms = lease.deadline_ms.saturating_sub(now_ms());
        let renewals = self.keep_renewing(coordinator, &lease, &key, length_ms, held_tx);
        tokio::pin!(renewals);
        let run = self.run_shard(coordinator, &lease, &held, length_ms);
        tokio::pin!(run);
        let mut renewing = true;
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                // Renewal ends only when refused; the shard runs on but will not be claimed.
                _ = &mut renewals, if renewing => renewing = false,
            }
        };
        if let Err(e) = self.leases.remove(key.as_slice()) {
            tracing::error!(job = %lease.job, shard = lease.shard, "could not forget a finished lease: {e}; it is dropped at the next restart");
        }
        result
    }

    /// Renews the lease every third of its length until refused. Busy answers and
    /// unreachable coordinators are tried again; any other answer is a refusal.
    pub(super) async fn keep_renewing(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        key: &[u8],
        length_ms: u64,
        held: watch::Sender<Held>,
    ) {
        let every = Duration::from_millis((length_ms / 3).max(MIN_RENEW_EVERY_MS));
        loop {
            sleep(every).await;
            let request = Request::Renew {
                job: lease.job,
                shard: lease.shard,
                nonce: lease.nonce,
            };
            match self.ask(coordinator, request).await {
                Ok(Response::Renewed { deadline_ms }) => {
                    held.send_modify(|h| h.deadline_ms = deadline_ms);
                    let saved = SavedLease {
                        coordinator: coordinator.to_string(),
                        job: *lease.job.as_bytes(),
                        shard: lease.shard,
                        nonce: lease.nonce,
                        deadline_ms,
                    };
                    // The saved lease only helps a restart resume; failing to update it
                    // costs at most that resumption.
                    match serde_json::to_vec(&saved) {
                        Ok(bytes) => {
                            // Only while the lease is still saved: once its claim was
                            // answered the saved lease is gone for good (`claims.rs`), and a
                            // renewal that crossed the claim must not bring it back (a restart
                            // would run the shard again).
                            let renewed = self
                                .leases
                                .update_and_fetch(key, |old| old.map(|_| bytes.clone()));
                            if let Err(e) = renewed {
                                tracing::warn!(job = %lease.job, shard = lease.shard, "could not save a renewed lease: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("could not encode a renewed lease: {e}"),
                    }
                }
                Ok(Response::Denied {
                    reason: DenyReason::Busy,
                    ..
                }) => {}
                Ok(other) => {
                    let why = match other {
                        Response::Denied { detail, .. } | Response::Error { detail } => detail,
                        other => format!("unexpected answer: {other:?}"),
                    };
                    tracing::warn!(job = %lease.job, shard = lease.shard, "lease renewal refused: {why}; the shard will not be claimed");
                    held.send_modify(|h| h.refused = Some(why));
                    return;
                }
                Err(e) => {
                    tracing::debug!(job = %lease.job, shard = lease.shard, "lease not renewed yet: {e}");
                }
            }
        }
    }
    /// Makes sure enough of the lease is left to start executing: renews now if not.
    pub(super) async fn ready_to_run(
        &self,
        coordinator: libp2p::PeerId,
        lease: &Lease,
        held: &watch::Receiver<Held>,
        length_ms: u64,
    ) -> Result<(), String> {
        let h = held.borrow().clone();
        if let Some(why) = h.refused {
            return Err(why);
        }
        let min = min_lease_left(length_ms);
        if h.deadline_ms.saturating_sub(now_ms()) >= min {
            return Ok(());
        }
        let request = Request::Renew {
            job: lease.job,
            shard: lease.shard,
            nonce: lease.nonce,
        };
        match self.ask(coordinator, request).await {
            Ok(Response::Renewed { deadline_ms })
                if deadline_ms.saturating_sub(now_ms()) >= min =>
            {
                Ok(())
            }
            Ok(other) => Err(format!(
                "too little of the lease is left and it was not renewed: {other:?}"
            )),
            Err(e) => Err(format!(
                "too little of the lease is left and the coordinator is unreachable: {e}"
            )),
        }
    }
}
