//! The claim outbox (`worker/claims`): a signed claim is written to sled and flushed *before*
//! it is sent, and stays there until its coordinator answers it. Owns that tree and the sending
//! of claims; must not run shards or touch leases (a stored claim only says which lease it
//! answers).
//!
//! Size: about 600 lines of code (encoding, outbox, sending and resending in one place), the
//! rest its unit tests.
//!
//! Why: a radiator killed between sending a claim and reading the answer used to resume the
//! lease and run the shard again. The new run's claim differs from the first (its metered
//! window and energy are new), and the coordinator, which had counted the first and spent the
//! lease, refused it "no live lease" (the crash soak, `testnet/soak`, issue 16). Now a restart
//! finds the claim in the outbox and sends the stored bytes again instead of running the shard;
//! the coordinator answers a claim it already counted as it did the first time and counts it
//! once (`coordinator::book`, `Book::claim`).
//!
//! What leaves the outbox:
//! - a claim its coordinator answered, accepted or refused. A refused claim is dropped with the
//!   coordinator's reason in the log; so is a stored claim whose lease is long gone (a radiator
//!   that was off for an hour): the coordinator's answer decides, never this radiator's clock.
//!   A refusal that came after the lease's deadline (as this radiator last knew it) is logged
//!   as "refused after its lease ran out", any other as "claim rejected";
//! - a claim whose coordinator did not answer (unreachable, or it could not save the claim)
//!   is sent again [`RESEND_AFTER`] later, then twice as long each time up to 30 s
//!   (`worker::unanswered_wait`), and dropped with a warning once its coordinator has
//!   not answered for the worker's `give_up`, counted from the first failure in this run (a
//!   claim stored before a long outage is sent at least once after the restart);
//! - a claim that cannot be read back (damaged) is dropped with an error.
//!
//! Bound: one claim per leased shard (keyed by job and shard; a later lease of the same shard
//! replaces the earlier claim, whose lease is over). The worker asks for no new lease while the
//! outbox holds [`MAX_STORED_CLAIMS`], so it holds at most that many plus the shards in flight
//! (at most twice the worker's slots: running and leased ahead). Each entry is at most a
//! claim's size (a few hundred bytes) and a peer id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::sleep;

use crate::model::now_ms;
use crate::model::receipt::Claim;
use crate::model::wire::{DenyReason, Request, Response};

use super::lease::SavedLease;
use super::{Ctx, Held};
use crate::jobs::JobError;

/// The sled tree of the outbox.
pub(super) const CLAIMS_TREE: &str = "worker/claims";

/// While the outbox holds this many claims the worker asks for no new lease: claims whose
/// coordinators do not answer cannot pile up without bound.
pub(super) const MAX_STORED_CLAIMS: usize = 256;

/// Times a claim is sent again at once when its coordinator answered that it could not save
/// it; after that it waits like an unanswered one ([`RESEND_AFTER`], then longer).
const CLAIM_RETRIES: u32 = 3;

/// How long an unanswered claim first waits before it is sent again (then longer each time,
/// `worker::unanswered_wait`).
pub(super) const RESEND_AFTER: Duration = Duration::from_secs(2);

/// Version byte of a stored entry.
const ENTRY_V1: u8 = 1;

/// A stored claim's key: job (32 bytes) ‖ shard (u32 big-endian), as `worker/leases`.
pub(super) type Key = [u8; 36];

pub(super) fn key(job: &blake3::Hash, shard: u32) -> Key {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(job.as_bytes());
    k[32..].copy_from_slice(&shard.to_be_bytes());
    k
}

/// A stored claim on its way to its coordinator.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    key: Key,
    /// The entry as stored, so that only this claim is removed once answered (a later lease
    /// of the same shard may have replaced it).
    entry: Vec<u8>,
    coordinator: libp2p::PeerId,
    /// The lease's deadline as this radiator last knew it; only for the log's wording.
    deadline_ms: u64,
    claim: Claim,
}

impl Outgoing {
    /// `version (1) ‖ lease deadline ms (u64 BE) ‖ peer id length (u8) ‖ peer id ‖ claim`, the
    /// claim in its canonical encoding: exactly the bytes the `Claim` request carries.
    fn encode(coordinator: &libp2p::PeerId, deadline_ms: u64, claim: &Claim) -> Vec<u8> {
        let peer = coordinator.to_bytes();
        let claim = claim.to_bytes();
        let mut out = Vec::with_capacity(10 + peer.len() + claim.len());
        out.push(ENTRY_V1);
        out.extend_from_slice(&deadline_ms.to_be_bytes());
        // A peer id is a multihash of at most 64 bytes here (ed25519: 38).
        out.push(peer.len() as u8);
        out.extend_from_slice(&peer);
        out.extend_from_slice(&claim);
        out
    }

    fn decode(key: &[u8], entry: &[u8]) -> Result<Outgoing, String> {
        let key: Key = key
            .try_into()
            .map_err(|_| format!("a key of {} bytes, not 36", key.len()))?;
        let (&version, rest) = entry.split_first().ok_or("an empty entry")?;
        if version != ENTRY_V1 {
            return Err(format!("unknown entry version {version}"));
        }
        let (deadline, rest) = rest.split_at_checked(8).ok_or("a truncated entry")?;
        let deadline_ms = u64::from_be_bytes(deadline.try_into().map_err(|_| "a truncated entry")?);
        let (&peer_len, rest) = rest.split_first().ok_or("a truncated entry")?;
        let (peer, claim) = rest
            .split_at_checked(peer_len as usize)
            .ok_or("a truncated entry")?;
        let coordinator = libp2p::PeerId::from_bytes(peer).map_err(|e| format!("peer id: {e}"))?;
        let claim = Claim::from_bytes(claim).map_err(|e| format!("claim: {e}"))?;
        if key != self::key(&claim.record.job, claim.record.shard) {
            return Err("the claim is stored under another shard's key".into());
        }
        Ok(Outgoing {
            key,
            entry: entry.to_vec(),
            coordinator,
            deadline_ms,
            claim,
        })
    }

    pub(super) fn job(&self) -> blake3::Hash {
        self.claim.record.job
    }

    pub(super) fn shard(&self) -> u32 {
        self.claim.record.shard
    }
}

/// When a stored claim is next sent. In memory only: a restart sends every stored claim.
#[derive(Debug)]
struct Waiting {
    /// The entry this is about (see [`Outgoing::entry`]).
    entry: Vec<u8>,
    next_try: Instant,
    /// Since when its coordinator has not answered, in this run, and how many times.
    unanswered_since: Option<Instant>,
    unanswered: u32,
    /// A task is sending it now.
    sending: bool,
    /// The latest deadline known for its lease (a saved lease renewed after the claim was
    /// stored may know a later one).
    deadline_ms: u64,
}

/// The durable outbox of claims; cheap to clone (one sled tree and one shared map).
#[derive(Clone)]
pub(super) struct ClaimOutbox {
    tree: sled::Tree,
    /// `worker/leases`: an answered claim's saved lease goes with it ([`ClaimOutbox::answered`]).
    leases: sled::Tree,
    /// One entry per stored claim (so bounded as the tree is). A std mutex: held for a few
    /// instructions, never across an await.
    waiting: Arc<Mutex<HashMap<Key, Waiting>>>,
}

/// What became of one attempt to send a claim.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The coordinator answered (accepted or refused); the claim left the outbox.
    Answered,
    /// No answer; the claim stays in the outbox and is sent again later (or was dropped after
    /// `give_up`).
    Unanswered(String),
}

impl ClaimOutbox {
    pub(super) fn open(db: &sled::Db) -> Result<ClaimOutbox, sled::Error> {
        Ok(ClaimOutbox {
            tree: db.open_tree(CLAIMS_TREE)?,
            leases: db.open_tree("worker/leases")?,
            waiting: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Waiting>> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims stored (being sent or waiting to be).
    pub(super) fn len(&self) -> usize {
        self.waiting().len()
    }

    /// Reads the stored claims at start-up; each is sent at the next [`ClaimOutbox::due`].
    /// Damaged entries are dropped. Returns how many claims wait.
    pub(super) fn load(&self) -> usize {
        let now = Instant::now();
        let mut loaded = 0;
        for item in self.tree.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!(
                        "cannot read the stored claims: {e}; those not read yet are not sent again"
                    );
                    break;
                }
            };
            match Outgoing::decode(&k, &v) {
                Ok(out) => {
                    tracing::info!(job = %out.job(), shard = out.shard(), "a claim stored before the restart will be sent again");
                    self.waiting().insert(
                        out.key,
                        Waiting {
                            entry: out.entry,
                            next_try: now,
                            unanswered_since: None,
                            unanswered: 0,
                            sending: false,
                            deadline_ms: out.deadline_ms,
                        },
                    );
                    loaded += 1;
                }
                Err(why) => {
                    tracing::error!("a stored claim cannot be read ({why}); it is dropped");
                    if let Err(e) = self.tree.remove(&k) {
                        tracing::error!("could not drop a damaged stored claim: {e}");
                    }
                }
            }
        }
        loaded
    }

    /// Whether a claim for this shard is stored (a restart then sends it rather than running
    /// the shard again). A lease whose saved deadline is later than the claim's raises it.
    pub(super) fn holds(&self, key: &Key, lease_deadline_ms: u64) -> bool {
        match self.waiting().get_mut(key) {
            Some(w) => {
                w.deadline_ms = w.deadline_ms.max(lease_deadline_ms);
                true
            }
            None => false,
        }
    }

    /// Stores a signed claim durably (written and flushed) before it is sent; the caller sends
    /// the returned claim. Nothing is sent if this fails.
    pub(super) async fn keep(
        &self,
        coordinator: libp2p::PeerId,
        deadline_ms: u64,
        claim: Claim,
    ) -> Result<Outgoing, JobError> {
        let key = key(&claim.record.job, claim.record.shard);
        let entry = Outgoing::encode(&coordinator, deadline_ms, &claim);
        self.tree.insert(key, entry.as_slice())?;
        crate::kv::flush(&self.tree).await?;
        self.waiting().insert(
            key,
            Waiting {
                entry: entry.clone(),
                next_try: Instant::now(),
                unanswered_since: None,
                unanswered: 0,
                sending: true,
                deadline_ms,
            },
        );
        Ok(Outgoing {
            key,
            entry,
            coordinator,
            deadline_ms,
            claim,
        })
    }

    /// The stored claims due to be sent again, each marked as being sent (so one task at a
    /// time sends it).
    pub(super) fn due(&self) -> Vec<Outgoing> {
        let now = Instant::now();
        let keys: Vec<(Key, u64)> = {
            let mut waiting = self.waiting();
            waiting
                .iter_mut()
                .filter(|(_, w)| !w.sending && w.next_try <= now)
                .map(|(k, w)| {
                    w.sending = true;
                    (*k, w.deadline_ms)
                })
                .collect()
        };
        let mut due = Vec::with_capacity(keys.len());
        for (k, deadline_ms) in keys {
            let read = self.tree.get(k);
            match read {
                Ok(Some(v)) => match Outgoing::decode(&k, &v) {
                    Ok(mut out) => {
                        out.deadline_ms = out.deadline_ms.max(deadline_ms);
                        due.push(out);
                    }
                    Err(why) => {
                        tracing::error!("a stored claim cannot be read ({why}); it is dropped");
                        self.drop_entry(&k, &v);
                    }
                },
                Ok(None) => {
                    self.waiting().remove(&k);
                }
                Err(e) => {
                    tracing::warn!("cannot read a stored claim: {e}; trying again later");
                    self.wait(&k, &[], now + RESEND_AFTER);
                }
            }
        }
        due
    }

    /// Unmarks `k` and sets when it is tried next (whatever entry it holds if `entry` is
    /// empty).
    fn wait(&self, k: &Key, entry: &[u8], next_try: Instant) {
        if let Some(w) = self.waiting().get_mut(k) {
            if entry.is_empty() || w.entry == entry {
                w.sending = false;
                w.next_try = next_try;
            }
        }
    }

    /// Removes exactly this entry (not a later claim stored under the same key).
    fn drop_entry(&self, k: &Key, entry: &[u8]) {
        match self.tree.compare_and_swap(k, Some(entry), None::<&[u8]>) {
            Ok(Ok(())) => {}
            // Replaced by a later claim of the same shard: that one stays.
            Ok(Err(_)) => return,
            Err(e) => {
                // Left stored: sent again after a restart and answered as before.
                tracing::error!("could not remove an answered claim from the outbox: {e}");
            }
        }
        let mut waiting = self.waiting();
        if waiting.get(k).is_some_and(|w| w.entry == entry) {
            waiting.remove(k);
        }
    }

    /// The coordinator answered: the saved lease it answers (same key and nonce) leaves, then
    /// the claim. Were the claim removed first, a crash before the lease went would leave a
    /// lease with no claim, and the restart would run the shard again and send a claim that is
    /// not the one answered; the other way round, a crash leaves a stored claim without its
    /// lease, which the restart sends again and its coordinator answers as before. Both removals
    /// compare and swap, so a renewal rewriting the lease or a later claim of the same shard
    /// replacing this one is never lost (no sled transaction: `kv`'s header says why).
    fn answered(&self, out: &Outgoing) {
        let nonce = out.claim.record.nonce;
        let removed = (|| -> Result<bool, sled::Error> {
            if self.tree.get(out.key)?.as_deref() != Some(out.entry.as_slice()) {
                // Replaced by a later claim of the same shard: that one and its lease stay.
                return Ok(false);
            }
            // A renewal may rewrite the lease between the read and the swap: read again.
            while let Some(saved) = self.leases.get(out.key)? {
                if SavedLease::nonce_of(&saved) != Some(nonce) {
                    break;
                }
                if self
                    .leases
                    .compare_and_swap(out.key, Some(saved), None as Option<&[u8]>)?
                    .is_ok()
                {
                    break;
                }
            }
            Ok(self
                .tree
                .compare_and_swap(out.key, Some(out.entry.as_slice()), None as Option<&[u8]>)?
                .is_ok())
        })();
        match removed {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                // Left stored: sent again after a restart and answered as before.
                tracing::error!("could not remove an answered claim from the outbox: {e}");
            }
        }
        let mut waiting = self.waiting();
        if waiting.get(&out.key).is_some_and(|w| w.entry == out.entry) {
            waiting.remove(&out.key);
        }
    }

    /// No answer: sent again after [`RESEND_AFTER`] and longer each time, or dropped once its
    /// coordinator has not answered for `give_up`. Returns whether it was dropped.
    fn unanswered(&self, out: &Outgoing, give_up: Duration) -> bool {
        let now = Instant::now();
        let expired = {
            let mut waiting = self.waiting();
            let Some(w) = waiting.get_mut(&out.key).filter(|w| w.entry == out.entry) else {
                return false;
            };
            w.sending = false;
            w.unanswered = w.unanswered.saturating_add(1);
            w.next_try = now + super::unanswered_wait(RESEND_AFTER, w.unanswered);
            now.duration_since(*w.unanswered_since.get_or_insert(now)) >= give_up
        };
        if expired {
            self.drop_entry(&out.key, &out.entry);
        }
        expired
    }
}

/// Where a test may stop the worker on its way to sending a claim, as if it were killed
/// there: the task waits forever. Absent from builds without the `testing` feature.
#[cfg(feature = "testing")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStop {
    /// Right after the claim is stored, before it is sent.
    Stored,
    /// Right after the coordinator's answer arrived, before the worker acts on it.
    Answered,
}

/// What the worker did with a claim, as a test sees it (`WorkerConfig::claim_log`).
#[cfg(feature = "testing")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimEvent {
    /// Stored in the outbox: the claim's canonical bytes.
    Stored {
        job: blake3::Hash,
        shard: u32,
        claim: Vec<u8>,
    },
    /// Sent, and answered. `resent`: sent from the outbox after a restart or a failed try,
    /// not by the shard's own run.
    Answered {
        job: blake3::Hash,
        shard: u32,
        claim: Vec<u8>,
        accepted: bool,
        detail: String,
        resent: bool,
    },
}

/// A test's record of [`ClaimEvent`]s. It grows by one or two entries per claim; only tests
/// set it.
#[cfg(feature = "testing")]
pub type ClaimLog = Arc<Mutex<Vec<ClaimEvent>>>;

impl super::WorkerConfig {
    #[cfg(feature = "testing")]
    async fn stop_at(&self, at: ClaimStop) {
        if self.claim_stop == Some(at) {
            tracing::info!("test stop: the worker halts here, as if killed ({at:?})");
            std::future::pending::<()>().await;
        }
    }

    #[cfg(feature = "testing")]
    fn note(&self, event: impl FnOnce() -> ClaimEvent) {
        if let Some(log) = &self.claim_log {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(event());
        }
    }
}

impl Ctx {
    /// Stores the signed claim, then sends it. `Ok` once the coordinator answered; an error if
    /// the claim could not be stored (then it was not sent) or was not answered (then it waits
    /// in the outbox and is sent again).
    pub(super) async fn claim(
        &self,
        coordinator: libp2p::PeerId,
        claim: Claim,
        held: &watch::Receiver<Held>,
    ) -> Result<(), JobError> {
        let deadline_ms = held.borrow().deadline_ms;
        let out = self.claims.keep(coordinator, deadline_ms, claim).await?;
        #[cfg(feature = "testing")]
        {
            let (job, shard, bytes) = (out.job(), out.shard(), out.claim.to_bytes());
            self.config.note(|| ClaimEvent::Stored {
                job,
                shard,
                claim: bytes,
            });
            self.config.stop_at(ClaimStop::Stored).await;
        }
        match self.deliver(out, Some(held)).await {
            Delivery::Answered => Ok(()),
            Delivery::Unanswered(why) => Err(JobError::Network(why)),
        }
    }

    /// Sends a stored claim again (after a restart, or after its coordinator did not answer).
    pub(super) async fn resend(&self, out: Outgoing) {
        if let Delivery::Unanswered(why) = self.deliver(out, None).await {
            tracing::debug!("stored claim not answered: {why}; it stays in the outbox");
        }
    }

    /// Sends a stored claim until its coordinator answers it, trying again at once a few times
    /// if it answers that it could not save it. `held`: the shard's lease as its renewals
    /// leave it (none for a claim sent from the outbox).
    async fn deliver(&self, out: Outgoing, held: Option<&watch::Receiver<Held>>) -> Delivery {
        let resent = held.is_none();
        let mut tries = 0;
        let why = loop {
            let request = Request::Claim(out.claim.clone());
            let answer = self.ask(out.coordinator, request).await;
            #[cfg(feature = "testing")]
            if answer.is_ok() {
                self.config.stop_at(ClaimStop::Answered).await;
            }
            match answer {
                Ok(Response::ClaimAccepted { verified }) => {
                    tracing::debug!(
                        fuel = out.claim.record.fuel,
                        verified,
                        resent,
                        "claim accepted"
                    );
                    self.note_answer(&out, true, String::new(), resent);
                    self.claims.answered(&out);
                    return Delivery::Answered;
                }
                Ok(Response::ClaimRejected { detail }) => {
                    let deadline_ms = held
                        .map_or(0, |h| h.borrow().deadline_ms)
                        .max(out.deadline_ms);
                    let now = now_ms();
                    if now >= deadline_ms {
                        tracing::info!(
                            resent,
                            "claim refused after its lease ran out ({} ms before the answer, by this radiator's clock): {detail}; dropped",
                            now - deadline_ms
                        );
                    } else {
                        tracing::warn!(resent, "claim rejected: {detail}");
                    }
                    self.note_answer(&out, false, detail, resent);
                    self.claims.answered(&out);
                    return Delivery::Answered;
                }
                // Not saved at the coordinator: the same claim again, at once a few times.
                Ok(Response::Error { detail }) if tries < CLAIM_RETRIES => {
                    tracing::warn!(
                        "coordinator could not take the claim: {detail}; sending it again"
                    );
                    tries += 1;
                    sleep(Duration::from_secs(1)).await;
                }
                Ok(Response::Error { detail }) => {
                    break format!("the coordinator could not take the claim: {detail}")
                }
                Ok(Response::Denied {
                    reason: DenyReason::Busy,
                    detail,
                    ..
                }) => break format!("the coordinator is busy: {detail}"),
                // An answer, but not to a claim: the coordinator does not take it.
                Ok(other) => {
                    let detail = format!("unexpected answer to a claim: {other:?}");
                    tracing::warn!(resent, "claim rejected: {detail}");
                    self.note_answer(&out, false, detail, resent);
                    self.claims.answered(&out);
                    return Delivery::Answered;
                }
                Err(e) => break e.to_string(),
            }
        };
        if self.claims.unanswered(&out, self.config.give_up) {
            tracing::warn!(
                "claim dropped: its coordinator has not answered it for {:?} ({why})",
                self.config.give_up
            );
        }
        Delivery::Unanswered(why)
    }

    #[cfg_attr(not(feature = "testing"), allow(unused_variables))]
    fn note_answer(&self, out: &Outgoing, accepted: bool, detail: String, resent: bool) {
        #[cfg(feature = "testing")]
        self.config.note(|| ClaimEvent::Answered {
            job: out.job(),
            shard: out.shard(),
            claim: out.claim.to_bytes(),
            accepted,
            detail,
            resent,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::{EnergyMethod, WorkRecord};

    fn claim(shard: u32) -> Claim {
        let worker = Identity::generate();
        let submitter = Identity::generate();
        let record = WorkRecord {
            job: blake3::hash(b"job"),
            shard,
            module: blake3::hash(b"module"),
            input: blake3::hash(b"input"),
            output: blake3::hash(b"output"),
            worker: worker.public(),
            submitter: submitter.public(),
            fuel: 10,
            energy_mj: 1,
            method: EnergyMethod::CpuEstimate,
            start_ms: 1_000,
            end_ms: 2_000,
            nonce: [7; 16],
        };
        Claim::sign(record, &worker).unwrap()
    }

    #[test]
    fn a_stored_entry_reads_back_as_the_same_claim_bytes() {
        let c = claim(3);
        let peer = libp2p::PeerId::random();
        let entry = Outgoing::encode(&peer, 42, &c);
        let out = Outgoing::decode(&key(&c.record.job, 3), &entry).unwrap();
        assert_eq!(out.claim.to_bytes(), c.to_bytes());
        assert_eq!(out.coordinator, peer);
        assert_eq!(out.deadline_ms, 42);
        // Under another shard's key, or cut short anywhere, it is refused, never misread.
        assert!(Outgoing::decode(&key(&c.record.job, 4), &entry).is_err());
        for len in 0..entry.len() {
            assert!(Outgoing::decode(&key(&c.record.job, 3), &entry[..len]).is_err());
        }
    }

    #[tokio::test]
    async fn an_answered_claim_leaves_the_outbox_but_a_later_one_of_the_shard_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let outbox = ClaimOutbox::open(&db).unwrap();
        let peer = libp2p::PeerId::random();
        let saved = |nonce: [u8; 16]| {
            serde_json::to_vec(&SavedLease {
                coordinator: peer.to_string(),
                job: *blake3::hash(b"job").as_bytes(),
                shard: 0,
                nonce,
                deadline_ms: 9,
            })
            .unwrap()
        };
        let k = key(&blake3::hash(b"job"), 0);
        // The saved lease of another lease of the shard is not this claim's to remove.
        outbox.leases.insert(k, saved([8; 16])).unwrap();
        let first = outbox.keep(peer, 1, claim(0)).await.unwrap();
        outbox.answered(&first);
        assert_eq!(outbox.leases.len(), 1, "another lease's record stays");
        // The lease the claim answers goes with it.
        outbox.leases.insert(k, saved([7; 16])).unwrap();
        let first = outbox.keep(peer, 1, claim(0)).await.unwrap();
        let second = outbox.keep(peer, 2, claim(0)).await.unwrap();
        assert_eq!(outbox.len(), 1, "one claim per shard");
        outbox.answered(&first);
        assert_eq!(outbox.tree.len(), 1, "the later claim stays");
        assert_eq!(outbox.leases.len(), 1, "and so does its lease");
        outbox.answered(&second);
        assert_eq!(outbox.tree.len(), 0);
        assert_eq!(
            outbox.leases.len(),
            0,
            "the answered lease's record went with it"
        );
        assert_eq!(outbox.len(), 0);
    }

    #[tokio::test]
    async fn an_unanswered_claim_waits_then_is_dropped_after_give_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let outbox = ClaimOutbox::open(&db).unwrap();
        let out = outbox
            .keep(libp2p::PeerId::random(), 1, claim(0))
            .await
            .unwrap();
        assert!(outbox.due().is_empty(), "being sent");
        assert!(!outbox.unanswered(&out, Duration::from_secs(3600)));
        assert!(outbox.due().is_empty(), "waits RESEND_AFTER");
        assert_eq!(outbox.tree.len(), 1);
        assert!(outbox.unanswered(&out, Duration::ZERO));
        assert_eq!(outbox.tree.len(), 0);
        assert_eq!(outbox.len(), 0);
        // A restart reads what is stored and sends it at once.
        let kept = outbox
            .keep(libp2p::PeerId::random(), 1, claim(1))
            .await
            .unwrap();
        let reopened = ClaimOutbox::open(&db).unwrap();
        assert_eq!(reopened.load(), 1);
        let due = reopened.due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].claim.to_bytes(), kept.claim.to_bytes());
    }
}
