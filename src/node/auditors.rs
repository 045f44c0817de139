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
//! **One instance of a key at a time.** That check sees a twin only once the twin's commitment
//! was logged. So the node also picks a random instance id at each start and asks each bootstrap
//! node for its key's lease (`Request::Instance`, `node::instances`) before the first seal, and
//! again every [`NUMBERING_CHECK`]. While another instance holds the lease (a copy of this data
//! directory that was running first), seals wait (`hearth status` says why) until that instance
//! stops: it gives the lease back as it stops, or its lease runs out
//! (`instances::INSTANCE_LEASE`) after it was last heard. The holder is told of the instance
//! that waits, and says so too (`KEY USED ELSEWHERE`). A node that loses its lease to another
//! instance while it runs seals no more until it is restarted, as above.
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

use super::instances::{Change, InstanceId, Leases, Verdict, INSTANCE_LEASE, MAX_LEASES};
use super::revoked::Admission;
use super::tasks::Tasks;
use crate::identity::PublicKey;
use crate::jobs::CoordinatorHandle;
use crate::ledger::commitments::Adopted;
use crate::ledger::Ledger;
use crate::model::commit::Commitment;
use crate::model::wire::{InstanceLease, Request, Response};
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

/// The sled tree in which a bootstrap node keeps which instance holds each key (PeerId bytes
/// → 16-byte instance id), read back at its start (`node::instances`).
pub const LEASES_TREE: &str = "instance_leases";

/// Commitment ids a radiator remembers having witnessed (32 bytes each): a commitment of up
/// to 65 536 receipts arrives with each of its receipts, and is handed on once.
const WITNESSED_KEPT: usize = 1024;

/// How long this node waits and how often it asks (`NodeOptions`), and how long it lends a key
/// to an instance it does not hear from (on a bootstrap node).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Longest the first seal waits for bootstrap nodes that do not answer ([`NUMBERING_WAIT`]).
    pub wait: Duration,
    /// How often the running node asks again ([`NUMBERING_CHECK`]).
    pub check: Duration,
    /// On a bootstrap node: how long a key stays lent to an instance not heard from
    /// ([`INSTANCE_LEASE`]).
    pub lease: Duration,
}

/// A bootstrap node's answer to this instance's ask for its key's lease.
#[derive(Debug)]
enum Claim {
    /// This instance holds the lease; `contender`: another instance of the key that asked.
    Holds {
        contender: Option<(InstanceId, u32)>,
    },
    /// Another instance holds it, last heard `ago_s` seconds ago.
    HeldBy { id: InstanceId, ago_s: u32 },
    /// A node that keeps no leases (an older one, or not a bootstrap node): nothing to wait for.
    Unknown,
    /// Not asked: not connected, or no answer.
    Unreachable,
}

/// Whether an instance a bootstrap node last heard `ago_s` seconds ago (whole seconds, cut
/// down) was heard after this run started, `uptime` ago: then it is another running node, not
/// this node's own run before a power cut.
fn heard_since(ago_s: u32, uptime: Duration) -> bool {
    Duration::from_secs(u64::from(ago_s) + 1) < uptime
}

/// What a node does when a bootstrap node says another instance holds its key's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Sealing: stop for the rest of the run (another running node holds the key).
    Stop,
    /// Sealing began at the deadline without this bootstrap node's answer, and the holder was
    /// not heard since this run started: most likely this node's own previous run. A copy that
    /// runs asks within a `NUMBERING_CHECK`, and is then heard since.
    SealOn,
    /// Not sealing yet: wait, and say another node runs with this key.
    WaitForCopy,
    /// Not sealing yet: wait for the lease to run out (this node's run before a power cut, or a
    /// copy not heard yet); no alarm.
    WaitForPrevious,
}

/// Pure: whether the node seals already (`open`), and whether the holder was heard since this
/// run started.
fn on_held(open: bool, since: bool) -> Held {
    match (open, since) {
        (true, true) => Held::Stop,
        (true, false) => Held::SealOn,
        (false, true) => Held::WaitForCopy,
        (false, false) => Held::WaitForPrevious,
    }
}

/// An instance id as the household reads it (the first 8 bytes, hex).
fn short(id: &InstanceId) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The lease book as a bootstrap node's last run left it on disk (`tree`), every holder heard
/// now; entries that do not decode are dropped.
fn restored(tree: Option<&sled::Tree>, lease: Duration) -> Leases {
    let mut leases = Leases::new(lease, MAX_LEASES);
    let Some(tree) = tree else {
        return leases;
    };
    let mut held = Vec::new();
    for entry in tree.iter() {
        match entry {
            Ok((key, id)) => match (PeerId::from_bytes(&key), InstanceId::try_from(&id[..])) {
                (Ok(key), Ok(id)) => held.push((key, id)),
                _ => {
                    tracing::warn!("dropped a stored lease that does not decode");
                    if let Err(e) = tree.remove(key) {
                        tracing::error!("could not drop a stored lease: {e}");
                    }
                }
            },
            Err(e) => {
                tracing::error!("could not read the stored key leases: {e}; starting without");
                break;
            }
        }
    }
    leases.restore(held, Instant::now());
    leases
}

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

/// When seals may begin: once every bootstrap node answered, or at the deadline; never while
/// a bootstrap node says another instance of this key holds its lease. Pure: the caller says
/// who answered and what time it is.
#[derive(Debug)]
struct Gate {
    waiting_for: HashSet<PeerId>,
    /// Bootstrap nodes that lend this key to another instance (still waited for).
    held: HashSet<PeerId>,
    deadline: Instant,
    open: bool,
}

impl Gate {
    fn new(expected: HashSet<PeerId>, now: Instant, wait: Duration) -> Gate {
        Gate {
            open: expected.is_empty(),
            waiting_for: expected,
            held: HashSet::new(),
            deadline: now + wait,
        }
    }

    /// `peer` answered (after what it said was acted on) at `now`. True when this opens the
    /// gate.
    fn answered(&mut self, peer: &PeerId, now: Instant) -> bool {
        self.waiting_for.remove(peer);
        self.held.remove(peer);
        self.tick(now)
    }

    /// `peer` lends this key to another instance: the gate stays shut until it answers again.
    fn held_by(&mut self, peer: PeerId) {
        if !self.open {
            self.held.insert(peer);
        }
    }

    /// The time is `now`. True when this opens the gate.
    fn tick(&mut self, now: Instant) -> bool {
        let may = self.held.is_empty() && (self.waiting_for.is_empty() || now >= self.deadline);
        let opened = may && !self.open;
        self.open |= may;
        opened
    }

    fn is_waiting_for(&self, peer: &PeerId) -> bool {
        !self.open && self.waiting_for.contains(peer)
    }

    fn is_open(&self) -> bool {
        self.open
    }

    /// While closed: how many bootstrap nodes have yet to answer, how many of them lend the
    /// key to another instance, and how long it may still wait at `now` for the others.
    fn waiting(&self, now: Instant) -> Option<(usize, usize, Duration)> {
        (!self.open).then(|| {
            (
                self.waiting_for.len(),
                self.held.len(),
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
    /// This run of the node (random, never stored).
    instance: InstanceId,
    /// The bootstrap nodes (this node left out).
    bootstrap: HashSet<PeerId>,
    gate: Mutex<Gate>,
    /// Commitments handed on already (ids, oldest first), at most [`WITNESSED_KEPT`].
    witnessed: Mutex<(HashSet<blake3::Hash>, VecDeque<blake3::Hash>)>,
    /// On an auditor: how many witnessed commitments each peer may hand over.
    witnesses: Mutex<Admission>,
    /// On a bootstrap node: which instance of each key holds its lease, and where the holders
    /// are kept across restarts.
    leases: Mutex<Leases>,
    lease_tree: Option<sled::Tree>,
    /// Why this node stopped sealing, if a bootstrap node logged a commitment of its key
    /// that it did not seal while it ran, or lent its key to another instance.
    elsewhere: Mutex<Option<String>>,
    /// Another instance of this key, as a bootstrap node told of it: the one this node's
    /// first seal waits for, or one that waits for this node.
    twin: Mutex<Option<String>>,
    /// While a bootstrap node lends this key to another instance: what it said, for the
    /// `sealing:` line.
    holder: Mutex<Option<String>>,
    /// When this run started: a holder heard since is another running node.
    started: Instant,
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
        timing: Timing,
        lease_tree: Option<sled::Tree>,
        ledger: Ledger,
        own: PublicKey,
        net: Network,
        coordinator: CoordinatorHandle,
    ) -> Auditors {
        let waiting = !bootstrap.is_empty();
        let mut instance = InstanceId::default();
        if let Err(e) = getrandom::fill(&mut instance) {
            // Only ever seen on a system without a random source; two nodes would then have
            // to clash by pid and clock to be taken for one.
            tracing::warn!("no random instance id ({e}); using the process id and clock");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            instance[..4].copy_from_slice(&std::process::id().to_le_bytes());
            instance[4..].copy_from_slice(&t.to_le_bytes()[..12]);
        }
        let auditors = Auditors {
            inner: Arc::new(Inner {
                ledger,
                own,
                net,
                coordinator,
                instance,
                bootstrap: bootstrap.clone(),
                gate: Mutex::new(Gate::new(bootstrap, Instant::now(), timing.wait)),
                witnessed: Mutex::new((HashSet::new(), VecDeque::new())),
                witnesses: Mutex::new(Admission::new(WITNESS_BURST, WITNESS_REFILL)),
                leases: Mutex::new(restored(lease_tree.as_ref(), timing.lease)),
                lease_tree,
                elsewhere: Mutex::new(None),
                twin: Mutex::new(None),
                holder: Mutex::new(None),
                started: Instant::now(),
                witnessed_taken: AtomicU64::new(0),
                witnessed_refused: AtomicU64::new(0),
                asking: Mutex::new(HashSet::new()),
                tasks: Tasks::default(),
            }),
        };
        tracing::info!(instance = %short(&instance), "this run's instance id");
        if waiting {
            let me = auditors.clone();
            let wait = timing.wait;
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
            // While it runs: every bootstrap node hears that this instance still holds its
            // key's lease (dialled if need be: a lease not renewed runs out), and one in turn
            // is asked for the last commitment of this key (every auditor hears every gossiped
            // commitment, so one answers for all; each bootstrap node so hears that question
            // every `check` × their number): the first that answers.
            let me = auditors.clone();
            auditors.spawn(async move {
                let order: Vec<PeerId> = me.inner.bootstrap.iter().copied().collect();
                let mut turn = 0usize;
                let mut every = tokio::time::interval(timing.check);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    for peer in &order {
                        me.visit(*peer, true).await;
                    }
                    let open = me.inner.gate.lock().is_ok_and(|g| g.is_open());
                    let stopped = me.inner.elsewhere.lock().is_ok_and(|e| e.is_some());
                    if !open || stopped {
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
        let (left, held, time) = self.inner.gate.lock().ok()?.waiting(Instant::now())?;
        if held > 0 {
            let holder = self.inner.holder.lock().ok().and_then(|h| h.clone());
            return Some(holder.unwrap_or_else(|| {
                format!("{held} bootstrap node(s) lend this key to another instance of it")
            }));
        }
        Some(format!(
            "waiting for {left} of {} bootstrap node(s) to say how far this key's commitment \
             numbering went (at most {} s more); receipts wait on disk meanwhile",
            self.inner.bootstrap.len(),
            time.as_secs()
        ))
    }

    /// Why this node's key is in use elsewhere, if it is: it seals no more commitments (a
    /// bootstrap node logged one of its key that it did not seal while it ran, or lent the key
    /// to another instance), its first seal waits for another node with its key, or another
    /// node with its key waits for it (`hearth status`).
    pub fn elsewhere(&self) -> Option<String> {
        let stopped = self.inner.elsewhere.lock().ok().and_then(|e| e.clone());
        stopped.or_else(|| self.inner.twin.lock().ok().and_then(|t| t.clone()))
    }

    /// This run's instance id.
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// A peer connected: asked, if it is a bootstrap node that has not answered yet.
    pub(super) fn peer_connected(&self, peer: PeerId) {
        let waiting = self
            .inner
            .gate
            .lock()
            .is_ok_and(|g| g.is_waiting_for(&peer));
        if waiting {
            let me = self.clone();
            self.spawn(async move { me.visit(peer, false).await });
        }
    }

    /// Asks bootstrap node `peer` for this key's lease and acts on the answer; if the first
    /// seal still waits for `peer`, then also where this key's numbering stands there. One
    /// visit per peer at a time. `dial`: reach it if it is not connected.
    async fn visit(&self, peer: PeerId, dial: bool) {
        let fresh = self.inner.asking.lock().is_ok_and(|mut a| a.insert(peer));
        if !fresh {
            return;
        }
        self.visit_once(peer, dial).await;
        if let Ok(mut a) = self.inner.asking.lock() {
            a.remove(&peer);
        }
    }

    async fn visit_once(&self, peer: PeerId, dial: bool) {
        match self.claim(peer, dial).await {
            Claim::Unreachable => return,
            Claim::HeldBy { id, ago_s } => {
                let open = self.inner.gate.lock().is_ok_and(|mut g| {
                    g.held_by(peer);
                    g.is_open()
                });
                let since = heard_since(ago_s, self.inner.started.elapsed());
                match on_held(open, since) {
                    Held::SealOn => tracing::warn!(
                        %peer,
                        "a bootstrap node still lends this key to instance {}, last heard {ago_s} s \
                         ago, before this run started (this node's previous run?); sealing goes on",
                        short(&id)
                    ),
                    Held::Stop => {
                        let why = format!(
                            "a bootstrap node lends this key to another instance of it ({}, heard \
                             {ago_s} s ago) after this node's lease ran out: another node runs with \
                             this key (a copy of this data directory, or a thief holding the key; \
                             docs/operations.md, \"One key, one node\"); this node seals no more \
                             commitments until it is restarted",
                            short(&id)
                        );
                        self.stop_sealing(peer, why).await;
                    }
                    Held::WaitForCopy => {
                        let why = format!(
                            "another node runs with this key (instance {}, heard {ago_s} s ago by \
                             bootstrap node {peer}, which lends the key to it): a copy of this data \
                             directory started first; this node seals nothing until that one stops \
                             (docs/operations.md, \"One key, one node\")",
                            short(&id)
                        );
                        self.set_holder(format!(
                        "bootstrap node {peer} lends this key to another running node (instance \
                         {}, heard {ago_s} s ago); nothing is sealed until that node stops; \
                         receipts wait on disk meanwhile",
                        short(&id)
                    ));
                        if self.set_twin(Some(why.clone())) {
                            tracing::error!(%peer, "{why}");
                        }
                    }
                    Held::WaitForPrevious => {
                        let left = INSTANCE_LEASE.as_secs().saturating_sub(u64::from(ago_s));
                        let why = format!(
                        "bootstrap node {peer} still lends this key to instance {}, last heard \
                         {ago_s} s ago, before this run started: this node's previous run, which \
                         stopped without giving the key back (a power cut, a crash), or another \
                         node with this key; nothing is sealed until that lease runs out (about \
                         {left} s more) or, if another node holds it, until that node stops; \
                         receipts wait on disk meanwhile",
                        short(&id)
                    );
                        if self.set_holder(why.clone()) {
                            tracing::warn!(%peer, "{why}");
                        }
                    }
                }
                return;
            }
            Claim::Holds {
                contender: Some((id, ago_s)),
            } => {
                let why = format!(
                    "another node with this key (instance {}) asked a bootstrap node for it \
                     {ago_s} s ago and waits while this one seals: a copy of this data \
                     directory runs elsewhere; give it its own key (docs/operations.md, \"One \
                     key, one node\")",
                    short(&id)
                );
                if self.set_twin(Some(why.clone())) {
                    tracing::error!(%peer, "{why}");
                }
            }
            Claim::Holds { contender: None } | Claim::Unknown => {
                let held = self.inner.gate.lock().is_ok_and(|g| !g.held.is_empty());
                if !held {
                    self.set_twin(None);
                }
            }
        }
        let waiting = self
            .inner
            .gate
            .lock()
            .is_ok_and(|g| g.is_waiting_for(&peer));
        if !waiting || !self.ask(peer, false).await {
            return;
        }
        let opened = self
            .inner
            .gate
            .lock()
            .is_ok_and(|mut g| g.answered(&peer, Instant::now()));
        if opened {
            self.set_twin(None);
            tracing::debug!("every bootstrap node said where this key's numbering stands");
            self.inner.coordinator.numbered().await;
        }
    }

    /// Sets what `hearth status` says on its `sealing:` line while a bootstrap node lends this
    /// key to another instance; true when it changed (to be logged once).
    fn set_holder(&self, why: String) -> bool {
        self.inner.holder.lock().is_ok_and(|mut h| {
            let changed = h.as_ref() != Some(&why);
            *h = Some(why);
            changed
        })
    }

    /// Sets what `hearth status` says of another instance of this key; true when it changed
    /// to a new sentence (to be logged once).
    fn set_twin(&self, why: Option<String>) -> bool {
        self.inner.twin.lock().is_ok_and(|mut t| {
            let changed = *t != why;
            *t = why;
            changed && t.is_some()
        })
    }

    /// Asks bootstrap node `peer` for this key's lease, as this instance. What it answers is
    /// its claim: an instance id is only compared and shown, its seconds only shown; a
    /// bootstrap node that lies can hold this node's first seal back (as one that never
    /// answers `LastCommitment` could not, past [`NUMBERING_WAIT`]), which `hearth status`
    /// then names, and cannot make it seal.
    async fn claim(&self, peer: PeerId, dial: bool) -> Claim {
        let request = Request::Instance {
            id: self.inner.instance,
            leaving: false,
        }
        .to_bytes();
        let net = &self.inner.net;
        let answer = match dial {
            true => net.request(peer, request).await,
            false => net.request_if_connected(peer, request).await,
        };
        match answer.map(|bytes| Response::from_bytes(&bytes)) {
            Err(e) => {
                tracing::debug!(%peer, "could not ask for this key's lease: {e}");
                Claim::Unreachable
            }
            Ok(Ok(Response::Instance(InstanceLease::Granted { contender }))) => {
                Claim::Holds { contender }
            }
            Ok(Ok(Response::Instance(InstanceLease::HeldBy { id, ago_s }))) => {
                Claim::HeldBy { id, ago_s }
            }
            Ok(_) => Claim::Unknown,
        }
    }

    /// As the node stops: gives this instance's lease back to every connected bootstrap node,
    /// so a restart need not wait for it to run out. Best effort, two seconds at most.
    pub(super) async fn leave(&self) {
        let request = Request::Instance {
            id: self.inner.instance,
            leaving: true,
        }
        .to_bytes();
        let asks = self.inner.bootstrap.iter().map(|peer| {
            let (net, request) = (self.inner.net.clone(), request.clone());
            async move { net.request_if_connected(*peer, request).await }
        });
        let all = futures::future::join_all(asks);
        let _ = tokio::time::timeout(Duration::from_secs(2), all).await;
    }

    /// On a bootstrap node: instance `id` of `peer`'s key asks for the key's lease, or gives
    /// it back (`leaving`).
    pub(super) fn lease(&self, peer: PeerId, id: InstanceId, leaving: bool) -> Response {
        let Ok(mut leases) = self.inner.leases.lock() else {
            return Response::Error {
                detail: "the lease book is unavailable".into(),
            };
        };
        if leaving {
            leases.leave(peer, id);
            self.keep(leases.take_changes());
            return Response::Noted;
        }
        // Seconds since a holder or contender was heard: at most a lease, far below u32.
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let verdict = leases.ask(peer, id, Instant::now());
        self.keep(leases.take_changes());
        Response::Instance(match verdict {
            Verdict::Granted { contender } => InstanceLease::Granted {
                contender: contender.map(|(other, ago)| (other, secs(ago))),
            },
            Verdict::HeldBy { id, ago } => InstanceLease::HeldBy {
                id,
                ago_s: secs(ago),
            },
        })
    }

    /// On a bootstrap node: stores who holds which key now. Not flushed here (sled writes it
    /// out within its flush interval): a holder lost to a crash asks again within a
    /// `NUMBERING_CHECK`, and only another instance asking first in that window could take
    /// the key.
    fn keep(&self, changes: Vec<Change>) {
        let Some(tree) = &self.inner.lease_tree else {
            return;
        };
        for change in changes {
            let written = match change {
                Change::Held(key, id) => tree.insert(key.to_bytes(), &id[..]).map(drop),
                Change::Freed(key) => tree.remove(key.to_bytes()).map(drop),
            };
            if let Err(e) = written {
                tracing::error!("could not keep a key's lease holder: {e}");
            }
        }
    }

    /// On a bootstrap node: keys it lends to an instance now (`/metrics`).
    pub fn leases(&self) -> usize {
        self.inner.leases.lock().map_or(0, |l| l.len())
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
    /// it ran: another node signs with this key.
    async fn signed_elsewhere(&self, peer: PeerId, seq: u64) {
        let why = format!(
            "a bootstrap node logged commitment #{seq} of this key, which this node did not \
             seal: another node signs receipt commitments with this key (a copy of this data \
             directory running elsewhere, or a thief holding the key; or this data directory \
             was restored from a backup while no bootstrap node answered; docs/operations.md, \
             \"One key, one node\"); this node seals no more commitments until it is restarted"
        );
        self.stop_sealing(peer, why).await;
    }

    /// Another node signs, or may sign, with this key (`why`, as `peer` showed): sealing stops
    /// here until a restart (whose start-up questions then number on past the other's, and
    /// wait while it holds the key's lease), so the two sign no number twice.
    async fn stop_sealing(&self, peer: PeerId, why: String) {
        if let Ok(mut e) = self.inner.elsewhere.lock() {
            if e.is_some() {
                return;
            }
            *e = Some(why.clone());
        }
        tracing::error!(%peer, "{why}");
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
        assert!(!g.answered(&p[2], t0), "not a bootstrap node");
        assert!(!g.answered(&p[0], t0));
        assert!(!g.answered(&p[0], t0), "the same one again");
        assert!(!g.tick(t0 + wait - Duration::from_millis(1)));
        assert_eq!(
            g.waiting(t0 + Duration::from_secs(10)),
            Some((1, 0, Duration::from_secs(50)))
        );
        assert!(g.answered(&p[1], t0), "the last one opens it");
        assert_eq!(g.waiting(t0), None);
        assert!(!g.answered(&p[1], t0) && !g.tick(t0 + wait), "opened once");

        let mut g = Gate::new(p[..2].iter().copied().collect(), t0, wait);
        assert!(!g.answered(&p[0], t0));
        assert!(g.tick(t0 + wait), "the deadline opens it");
        assert!(!g.answered(&p[1], t0 + wait));
        assert!(g.open);

        assert!(Gate::new(HashSet::new(), t0, wait).open);
    }

    /// While a bootstrap node lends the key to another instance, neither the other bootstrap
    /// nodes' answers nor the deadline open the gate; that node answering (the lease is this
    /// instance's now) does. An open gate is not closed by a lease held elsewhere (the running
    /// node stops sealing instead).
    #[test]
    fn seals_wait_while_another_instance_holds_the_key() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(60);
        let p = peers(2);
        let mut g = Gate::new(p.iter().copied().collect(), t0, wait);
        g.held_by(p[0]);
        assert!(!g.answered(&p[1], t0));
        assert!(g.is_waiting_for(&p[0]));
        assert_eq!(g.waiting(t0), Some((1, 1, wait)));
        assert!(!g.tick(t0 + wait * 10), "the deadline does not open it");
        assert!(g.answered(&p[0], t0 + wait * 10));
        g.held_by(p[0]);
        assert!(g.is_open() && g.held.is_empty());
        assert!(!g.is_waiting_for(&p[0]));

        // Held by one, then past the deadline with the other never answering: the held one's
        // answer opens it.
        let mut g = Gate::new(p.iter().copied().collect(), t0, wait);
        g.held_by(p[0]);
        assert!(!g.tick(t0 + wait));
        assert!(g.answered(&p[0], t0 + wait));
    }

    /// A holder last heard before this run started may be its own previous run; one heard
    /// since, even rounded down to whole seconds, is another node.
    #[test]
    fn a_holder_heard_since_this_run_started_is_another_node() {
        let s = Duration::from_secs;
        assert!(!heard_since(12, Duration::from_millis(50)), "the first ask");
        assert!(
            !heard_since(130, s(120)),
            "heard before the start, asked again"
        );
        assert!(
            !heard_since(119, s(120)),
            "heard within the second of the start"
        );
        assert!(heard_since(3, s(120)));
        assert!(heard_since(0, Duration::from_millis(1_001)));
    }

    /// Only a holder heard since this run started stops a sealing node or raises the alarm;
    /// one not heard since is taken for this node's own run before a power cut.
    #[test]
    fn only_a_holder_heard_since_the_start_stops_sealing_or_raises_the_alarm() {
        assert_eq!(on_held(true, true), Held::Stop);
        assert_eq!(on_held(true, false), Held::SealOn);
        assert_eq!(on_held(false, true), Held::WaitForCopy);
        assert_eq!(on_held(false, false), Held::WaitForPrevious);
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
