//! The coordinator's commands and the cloneable handle everyone else holds. Each call is a
//! command carrying a `oneshot` reply; the channel is bounded (callers wait when the actor
//! is busy). Must not touch: the coordinator's state.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::identity::PublicKey;
use crate::model::wire::{DenyReason, Request, Response};
use crate::model::JobManifest;

use super::book::{CheckedClaim, Outcome};
use super::view::{JobSummary, JobView};
use super::JobError;

pub(super) enum Command {
    Submit {
        manifest: JobManifest,
        /// The job's own replication policy (`hearth submit --min-replicas …`); `None`: the
        /// node's `[trust]` default.
        policy: Option<crate::jobs::trust::Policy>,
        /// The job's allow-list (`hearth submit --allow`): put into its policy (the node's
        /// default one when it was given none). Empty: the policy's own list, if any.
        allow: Vec<PublicKey>,
        reply: oneshot::Sender<Result<blake3::Hash, JobError>>,
    },
    Control {
        from: libp2p::PeerId,
        /// Boxed: a claim is far larger than every other command.
        request: Box<Control>,
        reply: oneshot::Sender<Response>,
    },
    OutputFetched {
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        /// The worker it was asked of first, asked first again if it failed.
        hint: Option<PublicKey>,
        result: Result<(), String>,
    },
    /// Fetch a shard's output again, its wait after a failed fetch over (`after.rs`). The
    /// shard stays in `fetching` through the wait, so `Book::pending` starts no second fetch
    /// of it meanwhile (each failing fetch would start its own chain of retries).
    Refetch {
        job: blake3::Hash,
        shard: u32,
        outcome: Outcome,
        hint: Option<PublicKey>,
    },
    /// Radiators on the want board, found after this coordinator published its work record
    /// (`outgoing.rs`, `provide_work`): offered our open jobs directly.
    Wanting {
        found: Vec<libp2p::PeerId>,
    },
    View {
        job: blake3::Hash,
        reply: oneshot::Sender<Option<JobView>>,
    },
    Summary {
        job: blake3::Hash,
        reply: oneshot::Sender<Option<JobSummary>>,
    },
    List {
        reply: oneshot::Sender<Vec<JobSummary>>,
    },
    Delivered {
        id: blake3::Hash,
        stored: bool,
    },
    /// Fraud evidence against `household` was confirmed by re-running its shard here
    /// (`jobs::trust::service`); it is already durable in `trust/excluded`.
    ExcludeChecked {
        household: PublicKey,
    },
    /// The node's auditors said how far its key's numbering went (`node::auditors`), or
    /// none answered in time: seals may begin.
    Numbered,
    /// Another node signs commitments with this key (`node::auditors`): seal nothing more.
    HoldSeals,
    /// A bootstrap node took commitment `id` (answered Noted to its hand-over).
    Handed {
        id: blake3::Hash,
    },
    /// The node gives its key's lease back (`node::auditors`, nothing to seal for a while):
    /// seal nothing until `Numbered` again, if nothing is being sealed or waits for a seal, no
    /// job of this node runs and a bootstrap node took every commitment it sealed (`true`);
    /// otherwise carry on (`false`).
    Release {
        reply: oneshot::Sender<bool>,
    },
    /// Radiators refuse this coordinator's key (`node::refusals`): every running job fails
    /// with `reason`.
    FailRunning {
        reason: String,
    },
    /// A key was refused (`node::refusals`): what refused keys hold in running jobs is taken
    /// back ([`super::Coordinator::refusing`]).
    WithdrawRefused,
    /// `old`'s household signs with `new` now (`node::key_log`), this node having heard the
    /// event that fixed `new` `gap_ms` before the rotation: an exclusion here carries over,
    /// and after a long enough gap a good record ([`super::book::Book::inherit`]).
    KeyRotated {
        old: PublicKey,
        new: PublicKey,
        gap_ms: u64,
    },
    /// The households of `keys` were contested (`node::key_log`): records carried to any of
    /// them are taken back ([`super::book::Book::uncarry`]).
    KeysContested {
        keys: Vec<PublicKey>,
    },
}

/// A control request as the actor gets it: a claim arrives with its signature checked.
pub(super) enum Control {
    Claim(CheckedClaim),
    Other(Request),
}

/// A cloneable handle to the coordinator actor.
#[derive(Clone)]
pub struct CoordinatorHandle {
    pub(super) tx: mpsc::Sender<Command>,
    /// Why the coordinator stopped, when it stopped on a failure (set before it drops any
    /// request), so a submitter is told the cause rather than only that it stopped.
    pub(super) failure: Arc<OnceLock<String>>,
    /// Whether the coordinator has anything to seal: a job of its own running, or receipts
    /// waiting for a seal (`Coordinator::tell_seal_demand`).
    pub(super) demand: tokio::sync::watch::Receiver<bool>,
}

impl CoordinatorHandle {
    /// The error for a request the coordinator can no longer answer.
    fn stopped(&self) -> JobError {
        match self.failure.get() {
            Some(why) => JobError::CoordinatorFailed(why.clone()),
            None => JobError::Stopped,
        }
    }

    pub async fn submit(&self, manifest: JobManifest) -> Result<blake3::Hash, JobError> {
        self.submit_with_policy(manifest, None).await
    }

    /// Submits a job that runs under its own replication policy (kept with the job).
    pub async fn submit_with_policy(
        &self,
        manifest: JobManifest,
        policy: Option<crate::jobs::trust::Policy>,
    ) -> Result<blake3::Hash, JobError> {
        self.submit_with(manifest, policy, Vec::new()).await
    }

    /// Submits a job under its own policy and restricted to `allow` (when not empty): only
    /// those households, and the submitter's trusted set, get leases on it.
    pub async fn submit_with(
        &self,
        manifest: JobManifest,
        policy: Option<crate::jobs::trust::Policy>,
        allow: Vec<PublicKey>,
    ) -> Result<blake3::Hash, JobError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Submit {
                manifest,
                policy,
                allow,
                reply,
            })
            .await
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Serves one control request from `from`. A claim's signature is checked here, on the
    /// caller's task, before the actor sees it.
    pub async fn control(&self, from: libp2p::PeerId, request: Request) -> Response {
        let request = match request {
            Request::Claim(claim) => match CheckedClaim::check(claim) {
                Ok(claim) => Control::Claim(claim),
                Err(e) => {
                    return Response::ClaimRejected {
                        detail: e.to_string(),
                    }
                }
            },
            other => Control::Other(other),
        };
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Control {
                from,
                request: Box::new(request),
                reply,
            })
            .await
            .is_err()
        {
            return self.gone();
        }
        rx.await.unwrap_or_else(|_| self.gone())
    }

    /// The answer to a peer's request the coordinator can no longer answer: why it stopped,
    /// when it stopped on a failure (a full disk), so the radiator is told the cause.
    fn gone(&self) -> Response {
        match self.failure.get() {
            Some(why) => busy(format!("the coordinator stopped: {why}")),
            None => busy("the coordinator is shutting down"),
        }
    }

    pub async fn view(&self, job: blake3::Hash) -> Option<JobView> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::View { job, reply }).await.ok()?;
        rx.await.ok()?
    }

    /// A job without its shards: what to poll while following a job. [`CoordinatorHandle::view`]
    /// walks every shard on the actor (tens of milliseconds for 65 536 shards, measured by the
    /// coordinator bench); this walks none of the verified ones.
    pub async fn summary(&self, job: blake3::Hash) -> Option<JobSummary> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Summary { job, reply }).await.ok()?;
        rx.await.ok()?
    }

    /// Excludes a household that checked fraud evidence proved wrong: it gets no further
    /// leases here. Waits while the coordinator is busy; the exclusion is already on disk
    /// (the coordinator loads it at start), so one lost when the node stops is not lost.
    pub async fn exclude_checked(&self, household: PublicKey) {
        let _ = self.tx.send(Command::ExcludeChecked { household }).await;
    }

    /// Closes every running job as failed for `reason`, once radiators refuse this node's key
    /// (revoked by its household, or caught equivocating): no radiator will work for it, and
    /// the submitter reads why. Waits while the coordinator is busy.
    pub async fn fail_running(&self, reason: String) {
        let _ = self.tx.send(Command::FailRunning { reason }).await;
    }

    /// Another key is refused here: the leases and undecided claims it holds in running jobs
    /// are taken back. Waits while the coordinator is busy.
    pub async fn withdraw_refused(&self) {
        let _ = self.tx.send(Command::WithdrawRefused).await;
    }

    /// `old`'s household rotated to `new`, the event that fixed `new` heard `gap_ms` before
    /// the rotation: if `old` is excluded here, `new` is too; after a long enough gap, `old`'s
    /// record counts for `new`. Waits while the coordinator is busy.
    pub async fn key_rotated(&self, old: PublicKey, new: PublicKey, gap_ms: u64) {
        let _ = self.tx.send(Command::KeyRotated { old, new, gap_ms }).await;
    }

    /// The households of `keys` were contested: no record carried to one of them counts any
    /// more. Waits while the coordinator is busy.
    pub async fn keys_contested(&self, keys: Vec<PublicKey>) {
        let _ = self.tx.send(Command::KeysContested { keys }).await;
    }

    /// Lets the coordinator seal receipt commitments (held while `await_numbering`): the
    /// ledger numbers on past what the node's auditors logged of its key.
    pub async fn numbered(&self) {
        let _ = self.tx.send(Command::Numbered).await;
    }

    /// Stops the coordinator sealing receipt commitments for the rest of its run: another
    /// node signs with this key, and the two would sign one number twice. Receipts wait in
    /// `pending`, durable, for the next start.
    pub async fn hold_seals(&self) {
        let _ = self.tx.send(Command::HoldSeals).await;
    }

    /// Whether the coordinator has anything to seal now, and changes to it: a job of its own
    /// running, or receipts countersigned and waiting for a seal.
    pub fn seal_demand(&self) -> tokio::sync::watch::Receiver<bool> {
        self.demand.clone()
    }

    /// Asks the coordinator to seal nothing more until [`CoordinatorHandle::numbered`] again,
    /// because the node gives its key's lease back. Done (`true`) only when nothing is being
    /// sealed or waits for a seal, no job of this node runs and a bootstrap node took every
    /// commitment it sealed; once it answers `true`, no
    /// seal begins before `numbered`. `false`: it had something after all, or it stopped.
    pub async fn release_seals(&self) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Release { reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    pub async fn list(&self) -> Vec<JobSummary> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::List { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Whether this node refuses a household's key (revoked by its own household, or caught
/// signing two receipt commitments under one number: `node::revoked`), and the sentence that
/// household is told. Set by the node ([`super::Coordinator::refusing`]); without it none is
/// refused.
pub type RefusedKeys = Arc<dyn Fn(&PublicKey) -> Option<&'static str> + Send + Sync>;

/// The key a household signs with now, for a key it rotated away from (`node::key_log`):
/// receipts crediting the retired key go to that key's node. Set by the node
/// ([`super::Coordinator::delivering_to_current`]); without it every receipt goes to the key
/// it credits.
pub type CurrentKeys = Arc<dyn Fn(&PublicKey) -> Option<PublicKey> + Send + Sync>;

/// What a household whose key this node refuses is told instead of being served (`why`: the
/// reason [`RefusedKeys`] gave); `None` for what is served as anyone's: giving a lease back or
/// declining a job frees a shard.
pub(super) fn turned_away(request: &Control, why: &str) -> Option<Response> {
    match request {
        Control::Claim(_) | Control::Other(Request::Claim(_)) => Some(Response::ClaimRejected {
            detail: format!("{why}; the claim is not counted"),
        }),
        Control::Other(Request::Lease { .. } | Request::Renew { .. }) => Some(Response::Denied {
            reason: DenyReason::Excluded,
            retry_after_ms: 0,
            detail: why.to_string(),
        }),
        // Its heat demand neither holds shards for it nor brings it offers.
        Control::Other(Request::Heat(_)) => Some(Response::Noted),
        Control::Other(_) => None,
    }
}

pub(super) fn busy(detail: impl Into<String>) -> Response {
    Response::Denied {
        reason: DenyReason::Busy,
        retry_after_ms: 1000,
        detail: detail.into(),
    }
}
