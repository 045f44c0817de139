//! What this node asks of and tells its bootstrap nodes, the auditors it knows, about receipt
//! commitments (`docs/protocol.md` §6.2).
//!
//! **Where its numbering stands.** A coordinator numbers its receipt commitments 0, 1, 2, …
//! from its own ledger; two different commitments under one number are an equivocation, and
//! the auditors that hear them refuse the key for good (`node::refusals`). A household that
//! restores its data directory from an old backup holds a ledger that stops before the
//! commitments it sealed since, and would sign those numbers again: an honest mistake that
//! looks, and is treated, exactly like a thief minting receipts. So before the first seal the
//! node asks each of its bootstrap nodes for the last commitment they logged of its key
//! (`Request::LastCommitment`), checks that it is its own signature, and numbers on past the
//! highest (`Ledger::adopt_own`). The coordinator seals nothing until every bootstrap node has
//! answered (an auditor or not) or [`NUMBERING_WAIT`] has passed (`CoordinatorConfig::
//! await_numbering`); the receipts wait, durable, meanwhile. It cannot guard against
//! commitments that none of the auditors it asks has heard (a restore while every bootstrap
//! node is unreachable for a minute, or commitments published only to an auditor not in this
//! node's list); `docs/operations.md` says so.
//!
//! **Another node with this key.** While it runs, the node asks again every
//! [`NUMBERING_CHECK`] (one bootstrap node, in turn): a commitment of its key above everything
//! it sealed can only be another node's (a copy of the data directory running elsewhere, or a
//! thief). It then seals nothing more until restarted (so the two never sign one number
//! twice), and says why (`hearth status`: `KEY USED ELSEWHERE`).
//!
//! **Witnessing.** A coordinator could show each radiator its own commitment under a number
//! and publish another, or none, to the auditors. So each commitment a radiator's receipts
//! come in is handed to every connected bootstrap node once (`Request::Witness`); an auditor
//! logs it like a gossiped one and, if it holds another body under that number, publishes
//! the proof. An auditor admits [`WITNESS_BURST`] witnessed commitments from one peer at once,
//! then one per [`WITNESS_REFILL`].

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::revoked::Admission;
use super::tasks::Tasks;
use crate::identity::PublicKey;
use crate::jobs::CoordinatorHandle;
use crate::ledger::commitments::Adopted;
use crate::ledger::Ledger;
use crate::model::commit::Commitment;
use crate::model::wire::{Request, Response};
use crate::net::Network;

/// Longest the first seal after a start waits for the bootstrap nodes' answers, unless the
/// node is told otherwise (`NodeOptions::numbering_wait`): a minute of receipts held back
/// (they stay in `pending`, durable) against sealing blind.
pub const NUMBERING_WAIT: Duration = Duration::from_secs(60);

/// How often a running node asks its bootstrap nodes again for the last commitment of its key,
/// unless told otherwise (`NodeOptions::numbering_check`): one above everything it sealed
/// means another node signs commitments with this key (a copy of this data directory running
/// elsewhere, or a thief), and this node seals nothing more until it is restarted, so the two
/// do not sign one number twice.
pub const NUMBERING_CHECK: Duration = Duration::from_secs(120);

/// Witnessed commitments an auditor takes from one peer at once, then one per
/// [`WITNESS_REFILL`]: a radiator sees at most one new commitment per coordinator per round
/// (5 s) and works for a few coordinators at a time; a peer handing over commitments of fresh
/// keys by the thousand (each costs a signature check and a place in the log) is held to it.
pub const WITNESS_BURST: u32 = 64;
pub const WITNESS_REFILL: Duration = Duration::from_secs(1);

/// Commitment ids a radiator remembers having witnessed (32 bytes each): a commitment of up
/// to 65 536 receipts arrives with each of its receipts, and is handed on once.
const WITNESSED_KEPT: usize = 1024;

/// The peers of bootstrap addresses (their `/p2p/` part), this node's own left out.
pub fn bootstrap_peers(bootstrap: &[Multiaddr], own: PeerId) -> HashSet<PeerId> {
    bootstrap
        .iter()
        .filter_map(|a| {
            a.iter().find_map(|p| match p {
                Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
        })
        .filter(|p| *p != own)
        .collect()
}

/// When seals may begin: once every bootstrap node answered, or at the deadline. Pure: the
/// caller says who answered and what time it is.
#[derive(Debug)]
struct Gate {
    waiting_for: HashSet<PeerId>,
    deadline: Instant,
    open: bool,
}

impl Gate {
    fn new(expected: HashSet<PeerId>, now: Instant, wait: Duration) -> Gate {
        Gate {
            open: expected.is_empty(),
            waiting_for: expected,
            deadline: now + wait,
        }
    }

    /// `peer` answered (after what it said was acted on). True when this opens the gate.
    fn answered(&mut self, peer: &PeerId) -> bool {
        self.waiting_for.remove(peer);
        self.opens(self.waiting_for.is_empty())
    }

    /// The time is `now`. True when this opens the gate (the deadline passed).
    fn tick(&mut self, now: Instant) -> bool {
        self.opens(now >= self.deadline)
    }

    fn opens(&mut self, now_open: bool) -> bool {
        let opened = now_open && !self.open;
        self.open |= now_open;
        opened
    }

    fn is_waiting_for(&self, peer: &PeerId) -> bool {
        self.waiting_for.contains(peer)
    }

    fn is_open(&self) -> bool {
        self.open
    }

    /// While closed: how many bootstrap nodes have yet to answer, and how long it may still
    /// wait at `now`.
    fn waiting(&self, now: Instant) -> Option<(usize, Duration)> {
        (!self.open).then(|| {
            (
                self.waiting_for.len(),
                self.deadline.saturating_duration_since(now),
            )
        })
    }
}

/// Cheap, cloneable handle: the router tells it of connections.
#[derive(Clone)]
pub struct Auditors {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Ledger,
    own: PublicKey,
    net: Network,
    coordinator: CoordinatorHandle,
    /// The bootstrap nodes (this node left out).
    bootstrap: HashSet<PeerId>,
    gate: Mutex<Gate>,
    /// Commitments handed on already (ids, oldest first), at most [`WITNESSED_KEPT`].
    witnessed: Mutex<(HashSet<blake3::Hash>, VecDeque<blake3::Hash>)>,
    /// On an auditor: how many witnessed commitments each peer may hand over.
    witnesses: Mutex<Admission>,
    /// Why this node stopped sealing, if a bootstrap node logged a commitment of its key
    /// that it did not seal while it ran.
    elsewhere: Mutex<Option<String>>,
    /// On an auditor: witnessed commitments taken and refused since the node started.
    witnessed_taken: AtomicU64,
    witnessed_refused: AtomicU64,
    /// Bootstrap nodes being asked right now (one question each at a time).
    asking: Mutex<HashSet<PeerId>>,
    /// Questions in flight and the deadline: aborted when the node stops.
    tasks: Tasks,
}

impl Auditors {
    /// Starts waiting for `bootstrap`'s answers (none to wait for: the coordinator was never
    /// held, `await_numbering` false).
    pub(super) fn start(
        bootstrap: HashSet<PeerId>,
        wait: Duration,
        check: Duration,
        ledger: Ledger,
        own: PublicKey,
        net: Network,
        coordinator: CoordinatorHandle,
    ) -> Auditors {
        let waiting = !bootstrap.is_empty();
        let auditors = Auditors {
            inner: Arc::new(Inner {
                ledger,
                own,
                net,
                coordinator,
                bootstrap: bootstrap.clone(),
                gate: Mutex::new(Gate::new(bootstrap, Instant::now(), wait)),
                witnessed: Mutex::new((HashSet::new(), VecDeque::new())),
                witnesses: Mutex::new(Admission::new(WITNESS_BURST, WITNESS_REFILL)),
                elsewhere: Mutex::new(None),
                witnessed_taken: AtomicU64::new(0),
                witnessed_refused: AtomicU64::new(0),
                asking: Mutex::new(HashSet::new()),
                tasks: Tasks::default(),
            }),
        };
        if waiting {
            let me = auditors.clone();
            auditors.spawn(async move {
                tokio::time::sleep(wait).await;
                let opened = me
                    .inner
                    .gate
                    .lock()
                    .is_ok_and(|mut g| g.tick(Instant::now()));
                if opened {
                    tracing::warn!(
                        "not every bootstrap node said within {} s which receipt commitments it \
                         logged of this key; sealing on from this node's own ledger (if this \
                         data directory was restored from a backup, it may now sign a number \
                         twice)",
                        wait.as_secs()
                    );
                    me.inner.coordinator.numbered().await;
                }
            });
            // While it runs: is anyone else signing commitments with this key? One bootstrap
            // node per check, in turn (every auditor hears every gossiped commitment, so one
            // answers for all; each bootstrap node so hears from a node every `check` × their
            // number, not every `check`): the first that answers.
            let me = auditors.clone();
            auditors.spawn(async move {
                let order: Vec<PeerId> = me.inner.bootstrap.iter().copied().collect();
                let mut turn = 0usize;
                let mut every = tokio::time::interval(check);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    let open = me.inner.gate.lock().is_ok_and(|g| g.is_open());
                    if !open || me.elsewhere().is_some() {
                        continue;
                    }
                    for _ in 0..order.len() {
                        let peer = order[turn % order.len()];
                        turn = turn.wrapping_add(1);
                        if me.ask(peer, true).await {
                            break;
                        }
                    }
                }
            });
        }
        auditors
    }

    /// While the first seal waits for the bootstrap nodes, why (`hearth status`): receipts
    /// countersigned meanwhile wait, durable, and go out after.
    pub fn sealing_waits(&self) -> Option<String> {
        let (left, time) = self.inner.gate.lock().ok()?.waiting(Instant::now())?;
        Some(format!(
            "waiting for {left} of {} bootstrap node(s) to say how far this key's commitment \
             numbering went (at most {} s more); receipts wait on disk meanwhile",
            self.inner.bootstrap.len(),
            time.as_secs()
        ))
    }

    /// Why this node seals no more commitments, if a bootstrap node logged one of its key
    /// that it did not seal while it ran (`hearth status`).
    pub fn elsewhere(&self) -> Option<String> {
        self.inner.elsewhere.lock().ok().and_then(|e| e.clone())
    }

    /// A peer connected: asked, if it is a bootstrap node that has not answered yet.
    pub(super) fn peer_connected(&self, peer: PeerId) {
        let waiting = self
            .inner
            .gate
            .lock()
            .is_ok_and(|g| g.is_waiting_for(&peer));
        let fresh = waiting && self.inner.asking.lock().is_ok_and(|mut a| a.insert(peer));
        if !fresh {
            return;
        }
        let me = self.clone();
        self.spawn(async move {
            let answered = me.ask(peer, false).await;
            if let Ok(mut a) = me.inner.asking.lock() {
                a.remove(&peer);
            }
            if !answered {
                return;
            }
            let opened = me.inner.gate.lock().is_ok_and(|mut g| g.answered(&peer));
            if opened {
                tracing::debug!("every bootstrap node said where this key's numbering stands");
                me.inner.coordinator.numbered().await;
            }
        });
    }

    /// Asks `peer`, and numbers on past what it logged. False when it could not be asked
    /// (asked again when it next connects). `running`: asked after the start's questions,
    /// when a commitment of this key above this ledger can only be another node's.
    async fn ask(&self, peer: PeerId, running: bool) -> bool {
        let answer = match self
            .inner
            .net
            .request_if_connected(peer, Request::LastCommitment.to_bytes())
            .await
        {
            Ok(bytes) => Response::from_bytes(&bytes),
            Err(e) => {
                tracing::debug!(%peer, "could not ask where this key's numbering stands: {e}");
                return false;
            }
        };
        let c = match answer {
            Ok(Response::LastCommitment(Some(c))) => *c,
            // Nothing logged, no log kept (`Error`), or an older node: nothing to number past.
            _ => return true,
        };
        let (ledger, own, seq) = (self.inner.ledger.clone(), self.inner.own, c.seq);
        let adopted = tokio::task::spawn_blocking(move || ledger.adopt_own(&own, &c)).await;
        match adopted {
            Ok(Ok(Adopted::Raised | Adopted::Conflict)) if running => {
                self.signed_elsewhere(peer, seq).await
            }
            Ok(Ok(Adopted::Raised)) => tracing::warn!(
                %peer,
                seq,
                "a bootstrap node logged a receipt commitment of this key that this data \
                 directory does not hold (restored from a backup?); numbering on after it"
            ),
            Ok(Ok(Adopted::Conflict)) => tracing::error!(
                %peer,
                seq,
                "this key already signed another commitment under a number this ledger used: \
                 radiators will refuse it (`hearth status`; docs/operations.md, \"A key that \
                 equivocated\")"
            ),
            Ok(Ok(Adopted::NotOwn)) => tracing::warn!(
                %peer,
                "a bootstrap node answered with a commitment this key did not sign; ignored"
            ),
            Ok(Ok(Adopted::Known | Adopted::Behind { .. })) => {}
            // The disk failed: not counted as answered, so the deadline still bounds the wait.
            Ok(Err(e)) => {
                tracing::error!("could not keep an auditor's commitment of this key: {e}");
                return false;
            }
            Err(e) => {
                tracing::error!("could not keep an auditor's commitment of this key: {e}");
                return false;
            }
        }
        true
    }

    /// A bootstrap node logged commitment `seq` of this key, which this node did not seal while
    /// it ran: another node signs with this key. Sealing stops here until a restart (whose
    /// start-up question then numbers on past the other's), so the two sign no number twice.
    async fn signed_elsewhere(&self, peer: PeerId, seq: u64) {
        let why = format!(
            "a bootstrap node logged commitment #{seq} of this key, which this node did not \
             seal: another node signs receipt commitments with this key (a copy of this data \
             directory running elsewhere, or a thief holding the key; or this data directory \
             was restored from a backup while no bootstrap node answered; docs/operations.md, \
             \"One key, one node\"); this node seals no more commitments until it is restarted"
        );
        tracing::error!(%peer, "{why}");
        if let Ok(mut e) = self.inner.elsewhere.lock() {
            if e.is_some() {
                return;
            }
            *e = Some(why.clone());
        }
        self.inner.coordinator.hold_seals().await;
    }

    /// The answer to a peer's `Request::LastCommitment`: the last commitment this node's
    /// auditor's log holds of the asker's key. Reads the disk: called off the async threads.
    pub(super) fn last_commitment(
        audit: Option<&crate::audit::AuditLog>,
        peer: &PeerId,
    ) -> Response {
        let Some(audit) = audit else {
            return Response::Error {
                detail: "this node keeps no audit log".into(),
            };
        };
        let Some(key) = PublicKey::from_peer_id(peer) else {
            return Response::Error {
                detail: "the asking peer's id is not an ed25519 key".into(),
            };
        };
        match audit.last(&key) {
            Ok(c) => Response::LastCommitment(c.map(Box::new)),
            Err(e) => Response::Error {
                detail: format!("the audit log could not be read: {e}"),
            },
        }
    }

    /// A receipt of this radiator came in `c` (checked and stored): hands `c` to every
    /// connected bootstrap node, once per commitment. Best effort: a commitment no bootstrap
    /// node could be reached for is handed on when the next receipt in it arrives; its
    /// coordinator's gossip is the first way to the auditors.
    pub(super) fn witness(&self, c: &Commitment) {
        if self.inner.bootstrap.is_empty() {
            return;
        }
        let id = c.id();
        let fresh = self.inner.witnessed.lock().is_ok_and(|mut w| {
            let (ids, order) = &mut *w;
            if !ids.insert(id) {
                return false;
            }
            order.push_back(id);
            if order.len() > WITNESSED_KEPT {
                if let Some(old) = order.pop_front() {
                    ids.remove(&old);
                }
            }
            true
        });
        if !fresh {
            return;
        }
        let me = self.clone();
        let request = Request::Witness(Box::new(c.clone())).to_bytes();
        self.spawn(async move {
            // Handed on once some bootstrap node answered, whatever it said (one that keeps no
            // log, or an older one, answers Error and would answer it again).
            let mut answered = false;
            for peer in &me.inner.bootstrap {
                let net = &me.inner.net;
                match net.request_if_connected(*peer, request.clone()).await {
                    Ok(bytes) => {
                        answered = true;
                        if !matches!(Response::from_bytes(&bytes), Ok(Response::Noted)) {
                            tracing::debug!(%peer, "a witnessed commitment was not taken");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, "could not hand on a commitment: {e}"),
                }
            }
            if !answered {
                if let Ok(mut w) = me.inner.witnessed.lock() {
                    w.0.remove(&id);
                }
            }
        });
    }

    /// On an auditor: whether `peer` may hand over one more witnessed commitment now.
    pub(super) fn admit_witness(&self, peer: PeerId) -> bool {
        self.inner
            .witnesses
            .lock()
            .is_ok_and(|mut a| a.admit(peer, Instant::now()))
    }

    /// On an auditor: counts a witnessed commitment taken (`true`) or refused.
    pub(super) fn count_witness(&self, taken: bool) {
        let counter = match taken {
            true => &self.inner.witnessed_taken,
            false => &self.inner.witnessed_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// On an auditor: witnessed commitments taken and refused since the node started.
    pub fn witness_counts(&self) -> (u64, u64) {
        (
            self.inner.witnessed_taken.load(Ordering::Relaxed),
            self.inner.witnessed_refused.load(Ordering::Relaxed),
        )
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(task);
    }

    /// Aborts the tasks in flight: the node is stopping.
    pub(super) fn stop(&self) {
        self.inner.tasks.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    /// Seals wait for every bootstrap node, each counted once, or for the deadline; with no
    /// bootstrap node there is nothing to wait for.
    #[test]
    fn seals_wait_for_every_bootstrap_node_or_the_deadline() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(60);
        let p = peers(3);
        let mut g = Gate::new(p[..2].iter().copied().collect(), t0, wait);
        assert!(!g.open);
        assert!(!g.answered(&p[2]), "not a bootstrap node");
        assert!(!g.answered(&p[0]));
        assert!(!g.answered(&p[0]), "the same one again");
        assert!(!g.tick(t0 + wait - Duration::from_millis(1)));
        assert_eq!(
            g.waiting(t0 + Duration::from_secs(10)),
            Some((1, Duration::from_secs(50)))
        );
        assert!(g.answered(&p[1]), "the last one opens it");
        assert_eq!(g.waiting(t0), None);
        assert!(!g.answered(&p[1]) && !g.tick(t0 + wait), "opened once");

        let mut g = Gate::new(p[..2].iter().copied().collect(), t0, wait);
        assert!(!g.answered(&p[0]));
        assert!(g.tick(t0 + wait), "the deadline opens it");
        assert!(!g.answered(&p[1]));
        assert!(g.open);

        assert!(Gate::new(HashSet::new(), t0, wait).open);
    }

    #[test]
    fn bootstrap_peers_are_read_from_their_addresses_without_this_node() {
        let p = peers(2);
        let addrs: Vec<Multiaddr> = vec![
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{}", p[0])
                .parse()
                .unwrap(),
            format!("/dns4/b.example/tcp/4001/p2p/{}", p[1])
                .parse()
                .unwrap(),
            "/ip4/10.0.0.2/tcp/4001".parse().unwrap(),
        ];
        assert_eq!(bootstrap_peers(&addrs, p[1]), HashSet::from([p[0]]));
    }
}
