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
//! **Only while there is something to seal.** A node holds the lease from its start and while
//! its coordinator has something to seal (`CoordinatorHandle::seal_demand`), then for
//! [`LEASE_IDLE`] more; then it stops sealing, gives the lease back and asks its bootstrap
//! nodes nothing (`Spell`, pure, in `gate.rs`). When something comes to seal, it asks them as
//! at a start, with a new gate. So a bootstrap node's load is the nodes that seal, not every
//! node of the network.
//!
//! Size: about 750 lines, past the house style's ~700: the household-facing sentences of
//! every case (each names what happened and what to do) are a third of it. The decisions are
//! in `gate.rs` (pure), the bootstrap node's side of leases in `instances.rs`, and the
//! witnessing of other coordinators' commitments in `witness.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::gate::{heard_since, on_held, Gate, Held, Spell, Step};
use super::instances::{Desk, InstanceId, INSTANCE_LEASE};
use super::tasks::Tasks;
use crate::identity::PublicKey;
use crate::jobs::CoordinatorHandle;
use crate::ledger::commitments::Adopted;
use crate::ledger::Ledger;
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

/// How long a node keeps its key's lease with nothing to seal (no job of its own running, no
/// receipt waiting for a seal), unless told otherwise (`NodeOptions::lease_idle`), before it
/// gives it back and stops asking its bootstrap nodes: a radiator that only works for others
/// asks them for a few minutes after its start, not for as long as it runs. Ten minutes, so a
/// household submitting jobs one after another keeps it, and the next spell's questions (at
/// most [`NUMBERING_WAIT`] of receipts held back) come seldom.
pub const LEASE_IDLE: Duration = Duration::from_secs(600);

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
    /// How long a node with nothing to seal keeps its key's lease ([`LEASE_IDLE`]).
    pub idle: Duration,
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

/// An instance id as the household reads it (the first 8 bytes, hex).
fn short(id: &InstanceId) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
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
    /// Whether this node holds its key's lease now (it has had something to seal lately).
    spell: Mutex<Spell>,
    timing: Timing,
    /// On a bootstrap node: which instance of each key holds its lease.
    desk: Desk,
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
                spell: Mutex::new(Spell::new(timing.idle)),
                timing,
                desk: Desk::open(lease_tree, timing.lease),
                elsewhere: Mutex::new(None),
                twin: Mutex::new(None),
                holder: Mutex::new(None),
                started: Instant::now(),
                asking: Mutex::new(HashSet::new()),
                tasks: Tasks::default(),
            }),
        };
        tracing::info!(instance = %short(&instance), "this run's instance id");
        if waiting {
            auditors.open_at_deadline(timing.wait);
            // While it runs: every bootstrap node hears that this instance still holds its
            // key's lease (dialled if need be: a lease not renewed runs out), and one in turn
            // is asked for the last commitment of this key (every auditor hears every gossiped
            // commitment, so one answers for all; each bootstrap node so hears that question
            // every `check` × their number): the first that answers. Only while the node holds
            // the lease: after `idle` with nothing to seal it gives it back and asks nothing,
            // until something comes to seal (`Spell`).
            let me = auditors.clone();
            let mut demand = auditors.inner.coordinator.seal_demand();
            auditors.spawn(async move {
                let order: Vec<PeerId> = me.inner.bootstrap.iter().copied().collect();
                let mut turn = 0usize;
                let mut every = tokio::time::interval(timing.check);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                // False once the coordinator stopped (its end of `demand` dropped).
                let mut told = true;
                loop {
                    let tick = tokio::select! {
                        _ = every.tick() => true,
                        changed = demand.changed(), if told => {
                            told = changed.is_ok();
                            false
                        }
                    };
                    let wanted = *demand.borrow_and_update();
                    let step = me
                        .inner
                        .spell
                        .lock()
                        .map(|mut s| s.step(wanted, Instant::now(), tick))
                        .unwrap_or(Step::Rest);
                    match step {
                        Step::Rest => continue,
                        Step::Release => {
                            me.release().await;
                            continue;
                        }
                        Step::Acquire => {
                            me.acquire();
                            continue;
                        }
                        Step::Renew => {}
                    }
                    for peer in &order {
                        me.visit(*peer, true).await;
                    }
                    let open = me.inner.gate.lock().is_ok_and(|g| g.is_open());
                    if !open || me.is_stopped() {
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

    /// Opens the gate at its deadline, `wait` from now, if every bootstrap node has not
    /// answered by then (and none lends the key to another instance).
    fn open_at_deadline(&self, wait: Duration) {
        let me = self.clone();
        self.spawn(async move {
            tokio::time::sleep(wait).await;
            let opened = me
                .inner
                .gate
                .lock()
                .is_ok_and(|mut g| g.tick(Instant::now()));
            if opened && !me.is_stopped() {
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
    }

    /// Whether this node stopped sealing for the rest of its run (another node signs with its
    /// key).
    fn is_stopped(&self) -> bool {
        self.inner.elsewhere.lock().map_or(true, |e| e.is_some())
    }

    /// Nothing to seal for a while: the coordinator stops sealing (if it has nothing after all,
    /// it carries on and so does the lease), the gate rests, and every connected bootstrap node
    /// gets the lease back. From now on this node asks them nothing until something comes to
    /// seal; another instance of its key may take the lease meanwhile, and the next spell then
    /// waits for it and numbers on past whatever it sealed.
    async fn release(&self) {
        if !self.inner.coordinator.release_seals().await {
            if let Ok(mut s) = self.inner.spell.lock() {
                s.keep();
            }
            return;
        }
        if let Ok(mut g) = self.inner.gate.lock() {
            g.rest();
        }
        // Whatever was said of another instance waiting held while this one sealed.
        self.set_twin(None);
        tracing::info!(
            "nothing to seal for {} s: this key's lease goes back to the bootstrap nodes until \
             there is",
            self.inner.timing.idle.as_secs()
        );
        self.leave().await;
    }

    /// Something to seal while this node did not hold its key's lease: as at a start, every
    /// bootstrap node is asked for the lease and where the numbering stands (dialled if need
    /// be), and seals wait until all answered or the numbering wait passed, and while any of
    /// them lends the key to another instance.
    fn acquire(&self) {
        if self.is_stopped() {
            return;
        }
        let wait = self.inner.timing.wait;
        if let Ok(mut g) = self.inner.gate.lock() {
            *g = Gate::new(self.inner.bootstrap.clone(), Instant::now(), wait);
        }
        tracing::info!("something to seal: asking the bootstrap nodes for this key's lease again");
        self.open_at_deadline(wait);
        for peer in self.inner.bootstrap.iter().copied() {
            let me = self.clone();
            self.spawn(async move { me.visit(peer, true).await });
        }
    }

    /// While the first seal waits for the bootstrap nodes, why (`hearth status`): receipts
    /// countersigned meanwhile wait, durable, and go out after.
    pub fn sealing_waits(&self) -> Option<String> {
        let gate = self.inner.gate.lock().ok()?;
        if gate.is_resting() {
            return Some(
                "nothing to seal; this key's lease is given back to the bootstrap nodes until \
                 there is"
                    .into(),
            );
        }
        let (left, held, time) = gate.waiting(Instant::now())?;
        drop(gate);
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
                             directory, which took the key first; this node seals nothing until that \
                             one gives it back (it stops, or has had nothing to seal for a while; \
                             docs/operations.md, \"One key, one node\")",
                            short(&id)
                        );
                        self.set_holder(format!(
                        "bootstrap node {peer} lends this key to another running node (instance \
                         {}, heard {ago_s} s ago); nothing is sealed until that node gives it \
                         back; receipts wait on disk meanwhile",
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
                let held = self.inner.gate.lock().is_ok_and(|g| g.is_held());
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
        self.inner.desk.answer(peer, id, leaving, Instant::now())
    }

    /// On a bootstrap node: keys it lends to an instance now (`/metrics`).
    pub fn leases(&self) -> usize {
        self.inner.desk.len()
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
                 directory does not hold: another node with this key sealed it while this one \
                 had nothing to seal, or this data directory was restored from a backup; \
                 numbering on after it"
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
