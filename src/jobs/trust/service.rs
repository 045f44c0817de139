//! The trust service: judges fraud evidence heard on `hearth/evidence/1`, re-runs its shard,
//! and excludes a household here only when the re-run shows it lied.
//!
//! For each gossip message the router asks [`TrustHandle::offer`] for a verdict, answered at
//! once from what can be checked at once (gossipsub forwards nothing until it has one):
//!
//! | the message | verdict | why |
//! |---|---|---|
//! | does not decode, is not signed by its gossip author, or fails [`Evidence::check`] | Reject | forged or broken: gossipsub scoring costs the peer that sent it |
//! | from a coordinator whose evidence a re-run here refuted | Ignore (Reject when the author sent it to us itself) | it has lied before; not forwarded |
//! | about a claim already heard (same accused, job and shard), not left unchecked | Ignore (Reject from the author itself) | a replay: an honest coordinator publishes each piece once |
//! | over its author's or the global rate ([`super::evidence::Intake`]) | Ignore (Reject from the author itself) | a flood; forwarders are not punished for it |
//! | against a household already excluded here on checked evidence, or the queue or the store is full | Ignore | it changes nothing, or this node's own limit |
//! | otherwise | Accept | kept (durably) as pending, queued for a re-run, forwarded |
//!
//! Re-runs happen one at a time, off the service's loop (`recheck.rs`), at most
//! [`MAX_QUEUED`] waiting. A confirmed re-run excludes the household (durably, then in the
//! coordinator's book, so it gets no more leases here); a refuted one marks the author a
//! false accuser. Accepting forwards evidence this node has not yet re-run: forwarding lets
//! every node check for itself, and nobody acts on evidence it did not check.
//! Must not touch: the Swarm (the router moves the bytes), the book (the coordinator's
//! handle does).

use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::PublicKey;
use crate::jobs::coordinator::CoordinatorHandle;
use crate::jobs::JobError;
use crate::model::evidence::Evidence;
use crate::model::now_ms;
use crate::net::Verdict;

use super::evidence::{
    entry_key, Check, Entry, EvidenceStore, Intake, Pulls, MAX_ENTRIES, MAX_PULL_PAGES, MAX_QUEUED,
};
use super::recheck::Rechecker;
use super::view::TrustView;

type Key = [u8; 68];

enum Command {
    Offer {
        author: libp2p::PeerId,
        direct: bool,
        data: Vec<u8>,
        reply: oneshot::Sender<Verdict>,
    },
    Checked {
        key: Key,
        check: Check,
    },
    /// A peer connected: a false accuser's penalty is set again.
    PeerConnected(libp2p::PeerId),
    /// A peer stayed connected (`NetEvent::PeerSettled`): it may hold evidence gossiped
    /// before this node could hear it. Not asked on connection: most connections are a
    /// Kademlia lookup's few seconds, and a request would make the peer one in use, held for
    /// the grace period (issue 14, `docs/scale.md`).
    PeerSettled(libp2p::PeerId),
    /// A piece of evidence a peer answered a pull with; judged like gossip from a forwarder.
    Pulled(Box<Evidence>),
    /// The pull in flight ended.
    PullDone,
}

/// What this node already knows about a well-formed piece of evidence.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// Its coordinator's evidence was refuted by a re-run here before.
    pub false_accuser: bool,
    /// Its accused household is already excluded here on checked evidence.
    pub accused_excluded: bool,
    /// The same (accused, job, shard) was heard before: `true` if that one was checked or is
    /// waiting for its re-run, `false` if it could not be checked (then it may be again).
    pub heard: Option<bool>,
    /// The re-run queue or the store is full.
    pub full: bool,
}

/// What a misbehaving author sending to us itself gets (Reject: costs it gossip score), and
/// what the same message forwarded by someone else gets (Ignore: a forwarder is not to blame
/// for an author's flood or replay, and may not know the author's record here).
fn from_author(direct: bool) -> Verdict {
    if direct {
        Verdict::Reject
    } else {
        Verdict::Ignore
    }
}

impl Seen {
    /// The verdict before rate limits, or `None` to go on. A false accuser's evidence and a
    /// replay (an honest coordinator publishes each piece once) cost their author when it
    /// sends them itself; evidence against a household already excluded changes nothing (two
    /// honest coordinators may catch the same liar), and a full queue is this node's limit.
    pub fn verdict(&self, direct: bool) -> Option<Verdict> {
        if self.false_accuser || self.heard == Some(true) {
            return Some(from_author(direct));
        }
        if self.accused_excluded || self.full {
            return Some(Verdict::Ignore);
        }
        None
    }
}

/// What the router and the API hold.
#[derive(Clone)]
pub struct TrustHandle {
    tx: mpsc::Sender<Command>,
    pub view: TrustView,
}

impl TrustHandle {
    /// The verdict on one gossip message of `hearth/evidence/1` from `author` (its signed
    /// author); `direct`: the author itself sent it to us. Never waits on a busy service:
    /// then the message is ignored (not forwarded), which is what a flood deserves.
    pub async fn offer(&self, author: libp2p::PeerId, direct: bool, data: Vec<u8>) -> Verdict {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .try_send(Command::Offer {
                author,
                direct,
                data,
                reply,
            })
            .is_err()
        {
            return Verdict::Ignore;
        }
        rx.await.unwrap_or(Verdict::Ignore)
    }

    /// A peer connected (from the router). Never waits.
    pub fn peer_connected(&self, peer: libp2p::PeerId) {
        let _ = self.tx.try_send(Command::PeerConnected(peer));
    }

    /// A peer settled (from the router). Never waits: a busy service skips the pull, and the
    /// peer is asked when it next settles.
    pub fn peer_settled(&self, peer: libp2p::PeerId) {
        let _ = self.tx.try_send(Command::PeerSettled(peer));
    }
}

/// The application score of a refuted accuser: times the weight 10 (`net/behaviour.rs`) it is
/// -100, below the graylist threshold of -80, whatever its topic scores (at most +11).
pub const FALSE_ACCUSER_SCORE: f64 = -10.0;

pub struct TrustService {
    store: EvidenceStore,
    intake: Intake,
    queue: VecDeque<Key>,
    running: bool,
    /// `None` on a bootstrap node, which runs no shards: it judges and forwards evidence
    /// but re-runs nothing, so it excludes nobody.
    rechecker: Option<Rechecker>,
    coordinator: CoordinatorHandle,
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
    tasks: tokio::task::JoinSet<()>,
    /// Which peer to ask next for the evidence it holds (late joiners, `Pulls`).
    pulls: Pulls,
}

impl TrustService {
    pub fn new(
        db: &sled::Db,
        view: TrustView,
        rechecker: Option<Rechecker>,
        coordinator: CoordinatorHandle,
    ) -> Result<(TrustService, TrustHandle), JobError> {
        let store = EvidenceStore::open(db)?;
        // Bounded: a full channel answers Ignore (`offer`).
        let (tx, rx) = mpsc::channel(64);
        // Evidence heard before a restart and not yet re-run.
        let queue = store
            .entries(None)?
            .into_iter()
            .filter(|(_, e)| e.check == Check::Pending)
            .map(|(k, _)| k)
            .take(MAX_QUEUED)
            .collect();
        Ok((
            TrustService {
                store,
                intake: Intake::new(now_ms()),
                queue,
                running: false,
                rechecker,
                coordinator,
                tx: tx.clone(),
                rx,
                tasks: tokio::task::JoinSet::new(),
                pulls: Pulls::default(),
            },
            TrustHandle { tx, view },
        ))
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), JobError> {
        self.next();
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Offer { author, direct, data, reply }) => {
                        let verdict = self.offer(author, direct, &data).await;
                        let _ = reply.send(verdict);
                    }
                    Some(Command::Checked { key, check }) => {
                        self.running = false;
                        self.checked(key, check).await?;
                        self.next();
                    }
                    Some(Command::PeerConnected(peer)) => {
                        // A false accuser's score is kept only while gossipsub remembers the
                        // peer: set it again whenever it connects.
                        if let Some(key) = PublicKey::from_peer_id(&peer) {
                            if self.store.is_false_accuser(&key).unwrap_or(false) {
                                self.penalise(key).await;
                            }
                        }
                    }
                    Some(Command::PeerSettled(peer)) => {
                        self.pulls.settled(peer, now_ms());
                        self.pull();
                    }
                    Some(Command::Pulled(e)) => self.pulled(&e).await,
                    Some(Command::PullDone) => {
                        self.pulls.done();
                        self.pull();
                    }
                    None => break,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!("a fraud evidence re-run panicked: {e}");
                            self.running = false;
                            self.next();
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.tasks.shutdown().await;
        Ok(())
    }

    async fn offer(&mut self, author: libp2p::PeerId, direct: bool, data: &[u8]) -> Verdict {
        let Ok(e) = Evidence::from_bytes(data) else {
            return Verdict::Reject;
        };
        if PublicKey::from_peer_id(&author) != Some(e.coordinator) {
            // Only the coordinator that decided the vote may accuse; forwarding keeps the
            // author, so this is a forgery, not a relay.
            return Verdict::Reject;
        }
        if let Err(err) = e.check() {
            tracing::debug!(%author, "evidence rejected: {err}");
            return Verdict::Reject;
        }
        match self.admit(&e, direct).await {
            Ok(v) => v,
            Err(err) => {
                tracing::error!("could not keep fraud evidence: {err}");
                Verdict::Ignore
            }
        }
    }

    async fn admit(&mut self, e: &Evidence, direct: bool) -> Result<Verdict, JobError> {
        let key = entry_key(e);
        let seen = Seen {
            false_accuser: self.store.is_false_accuser(&e.coordinator)?,
            accused_excluded: self.store.is_excluded(&e.accused())?,
            heard: self
                .store
                .get(&key)?
                .map(|entry| !matches!(entry.check, Check::Unchecked(_))),
            full: self.store.len() >= MAX_ENTRIES || self.queue.len() >= MAX_QUEUED,
        };
        if let Some(v) = seen.verdict(direct) {
            return Ok(v);
        }
        if !self.intake.admit(e.coordinator, now_ms()) {
            tracing::debug!(coordinator = %e.coordinator, "fraud evidence over its rate; dropped");
            return Ok(from_author(direct));
        }
        let entry = Entry {
            evidence: hex::encode(e.to_bytes()),
            heard_ms: now_ms(),
            check: Check::Pending,
            checked_ms: None,
        };
        self.store.put(&key, &entry).await?;
        tracing::info!(accused = %e.accused(), coordinator = %e.coordinator, job = %e.job, shard = e.shard, "fraud evidence heard; re-running the shard");
        self.queue.push_back(key);
        self.next();
        Ok(Verdict::Accept)
    }

    /// Asks the next waiting peer for the evidence it re-ran and confirmed, page by page
    /// (at most `MAX_PULL_PAGES`), off the service's loop. Only a radiator pulls: a
    /// bootstrap node re-runs nothing, so evidence it pulled would change nothing.
    /// Lowers the gossip score of a coordinator whose evidence a re-run here refuted to
    /// [`FALSE_ACCUSER_SCORE`], below the graylist threshold: its messages are then ignored.
    async fn penalise(&self, coordinator: PublicKey) {
        let Some(net) = self.rechecker.as_ref().map(|r| &r.net) else {
            return;
        };
        net.set_application_score(coordinator.peer_id(), FALSE_ACCUSER_SCORE)
            .await;
    }

    fn pull(&mut self) {
        let Some(net) = self.rechecker.as_ref().map(|r| r.net.clone()) else {
            return;
        };
        let Some(peer) = self.pulls.next(now_ms()) else {
            return;
        };
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            pull_from(&net, peer, &tx).await;
            let _ = tx.send(Command::PullDone).await;
        });
    }

    /// A piece a peer sent when asked: checked as gossip is, and admitted as from a
    /// forwarder (the peer is not its author), so a replay or a flood is dropped without
    /// blame and nothing is believed before this node re-ran it.
    async fn pulled(&mut self, e: &Evidence) {
        if let Err(err) = e.check() {
            tracing::debug!("pulled evidence does not check: {err}");
            return;
        }
        match self.admit(e, false).await {
            Ok(Verdict::Accept) => {
                tracing::info!(accused = %e.accused(), coordinator = %e.coordinator, "fraud evidence heard from a peer that checked it")
            }
            Ok(_) => {}
            Err(err) => tracing::error!("could not keep pulled fraud evidence: {err}"),
        }
    }

    /// Starts the next re-run if none is running.
    fn next(&mut self) {
        if self.running {
            return;
        }
        while let Some(key) = self.queue.pop_front() {
            let evidence = match self.store.get(&key).and_then(|e| match e {
                Some(entry) if entry.check == Check::Pending => entry.evidence().map(Some),
                _ => Ok(None),
            }) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(err) => {
                    tracing::error!("stored fraud evidence unreadable: {err}");
                    continue;
                }
            };
            self.running = true;
            let (rechecker, tx) = (self.rechecker.clone(), self.tx.clone());
            self.tasks.spawn(async move {
                let check = match rechecker {
                    Some(r) => r.check(&evidence).await,
                    None => Check::Unchecked("this is a bootstrap node; it runs no shards".into()),
                };
                let _ = tx.send(Command::Checked { key, check }).await;
            });
            return;
        }
    }

    async fn checked(&mut self, key: Key, check: Check) -> Result<(), JobError> {
        let Some(mut entry) = self.store.get(&key)? else {
            return Ok(());
        };
        let evidence = entry.evidence()?;
        entry.check = check.clone();
        entry.checked_ms = Some(now_ms());
        // Durable before acted on; a failed write stops the service (and the node says why).
        self.store.put(&key, &entry).await?;
        let (accused, coordinator) = (evidence.accused(), evidence.coordinator);
        match check {
            Check::Confirmed => {
                tracing::warn!(household = %accused, %coordinator, job = %evidence.job, shard = evidence.shard, "fraud evidence confirmed by re-running the shard; household excluded");
                self.coordinator.exclude_checked(accused).await;
            }
            Check::Refuted => {
                // The verdict on its message (Accept) was given long before the re-run ended
                // and gossipsub takes no later one, so the accuser's score is lowered directly.
                self.penalise(coordinator).await;
                tracing::warn!(%coordinator, household = %accused, job = %evidence.job, shard = evidence.shard, "fraud evidence refuted by re-running the shard: the accused was right; the coordinator's evidence is ignored from now on");
            }
            Check::Inconclusive(why) | Check::Unchecked(why) => {
                tracing::info!(household = %accused, %coordinator, "fraud evidence not confirmed: {why}");
            }
            Check::Pending => {}
        }
        Ok(())
    }
}

/// Asks `peer` for its checked evidence, page after page, and hands each piece to the
/// service. Stops at `MAX_PULL_PAGES`, at the first answer that is not a page, and when the
/// peer's keys stop increasing (a peer that pages in circles gets nowhere).
async fn pull_from(net: &crate::net::Network, peer: libp2p::PeerId, tx: &mpsc::Sender<Command>) {
    use crate::model::wire::{Request, Response};
    let mut after: Option<Key> = None;
    for _ in 0..MAX_PULL_PAGES {
        let answer = match net
            .request_if_connected(peer, Request::Evidence { after }.to_bytes())
            .await
        {
            Ok(bytes) => Response::from_bytes(&bytes),
            Err(e) => {
                tracing::debug!(%peer, "could not ask for evidence: {e}");
                return;
            }
        };
        let Ok(Response::Evidence { evidence, more }) = answer else {
            // An older node answers Error (unknown request tag); nothing to learn from it.
            return;
        };
        for e in evidence {
            let key = entry_key(&e);
            if after.is_some_and(|a| key[..32] <= a[..32]) {
                tracing::debug!(%peer, "evidence pages out of order; stopped asking");
                return;
            }
            after = Some(key);
            if tx.send(Command::Pulled(Box::new(e))).await.is_err() {
                return;
            }
        }
        if !more || after.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_floods_and_false_accusers_cost_only_their_author() {
        let fresh = Seen::default();
        assert_eq!(
            fresh.verdict(true),
            None,
            "new evidence goes on to the rate limits"
        );
        let unchecked = Seen {
            heard: Some(false),
            ..fresh
        };
        assert_eq!(
            unchecked.verdict(true),
            None,
            "unchecked evidence may be checked again"
        );
        for bad in [
            Seen {
                heard: Some(true),
                ..fresh
            },
            Seen {
                false_accuser: true,
                ..fresh
            },
        ] {
            assert_eq!(bad.verdict(true), Some(Verdict::Reject));
            assert_eq!(bad.verdict(false), Some(Verdict::Ignore));
        }
        for nothing_new in [
            Seen {
                accused_excluded: true,
                ..fresh
            },
            Seen {
                full: true,
                ..fresh
            },
        ] {
            assert_eq!(nothing_new.verdict(true), Some(Verdict::Ignore));
            assert_eq!(nothing_new.verdict(false), Some(Verdict::Ignore));
        }
        assert_eq!(from_author(true), Verdict::Reject);
        assert_eq!(from_author(false), Verdict::Ignore);
    }
}
