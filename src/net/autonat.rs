//! AutoNAT's client: probes over direct connections only, re-armed when a probe is lost with
//! its connection, and a budget of probes without a verdict.
//!
//! libp2p's AutoNAT v2 client tests each address candidate once for the life of the process:
//! it sends one probe to one server over one connection and marks the candidate pending until
//! that connection's handler reports an outcome. If the connection closes first, no outcome
//! ever comes and nothing resets the candidate (libp2p-autonat 0.16, `v2/client/behaviour.rs`):
//! the address is never tested again. `testnet/dht-scale` showed how it happens to a public
//! radiator (`docs/scale.md`, "What breaks first", item 7): its outbound connections to homes
//! go through the relay, and the client picks its server among all outbound connections. A
//! home asked over a relayed connection dials the radiator back directly; that direct
//! connection replaces the relayed one, which this node then closes (`actor/peers.rs`), and the
//! probe's answer, on the relayed connection, is lost with it. So the better the radiator is
//! reachable, the surer its probe was lost: it never learnt it was public, and after 30 s its
//! relay gate (`relay_gate.rs`) let it listen through the relay as if it were behind NAT.
//!
//! Four remedies here:
//! - **Direct connections only**: a relayed connection is never shown to the clients, so no
//!   probe goes over one (it would also cost the relay the 30–100 KB of dial data a server asks
//!   for when the tested address is not the one it sees the connection come from).
//! - **Re-armed when a probe is lost** for any other reason (the server left or was pruned):
//!   [`Rearmed`] keeps two clients on every connection, the active one, shown the candidates,
//!   and a standby, shown the connections only, so that it learns which peers serve AutoNAT (a
//!   client learns that once per connection, from the connection's handler, and cannot be told
//!   it later). When a connection closes with a probe of the active client unanswered
//!   ([`ProbeWatch`]), the standby takes over and is shown the candidates again: every address
//!   is tested afresh. The old client is replaced by a new standby, which learns the
//!   connections established from then on
//!   (`tests/net.rs::a_node_whose_autonat_probe_was_lost_with_its_connection_tests_its_address_again`).
//!   A re-arm costs one probe per candidate, and each probe a server's dial-back. The first
//!   comes at once (a public radiator learns it is public within seconds); each later one
//!   waits at least [`REARM_WAIT_FIRST`] after the one before, doubling to [`REARM_WAIT_MAX`].
//! - **A budget of probes without a verdict**: a home behind NAT got none from libp2p's server
//!   (its router drops the server's dial-back silently, and the dial outlasts the client's
//!   10 s wait; a hearth server now gives it up in 5 s and answers, `autonat_server.rs`, but
//!   not every server is hearth's, or on time under load), and libp2p's client tries again
//!   every 5 s tick for as long as the node runs. After
//!   [`MAX_FRUITLESS`] probes without a verdict the next is dropped, and the client waits for
//!   the next re-arm. In `testnet/dht-scale` 40 homes timed out 272 probes in about 3 minutes
//!   without it, 146 with it, mostly the start's re-arms (`docs/scale.md`, item 7).
//!
//! - **Tested again every half hour, or when the household asks**: libp2p's client keeps a
//!   failed address failed and a confirmed one confirmed for the life of the process, so a
//!   port forwarded on the household's router after the start (the natural answer to
//!   "behind NAT" in `hearth status`) showed only after a restart, and a forward removed, or a
//!   new router, left the node claiming an address nobody could reach, listening through no
//!   relay. Now a re-arm is due [`RECHECK_EVERY`] after the last one, and at once (at most one
//!   per [`REQUESTED_WAIT`]) when the household asks (`hearth status --recheck`,
//!   `POST /v1/reachability/check`). A confirmed address that fails is withdrawn
//!   (`ToSwarm::ExternalAddrExpired`; the node then listens through a relay again,
//!   `actor/reach.rs`) only after [`STRIKES_TO_EXPIRE`] failures in a row, each from another
//!   client: a failure is one server's unverifiable word. Addresses declared in the
//!   configuration are never withdrawn.
//!
//! However often servers vanish or stall, no peer can make this node probe more than that.
//!
//! A dial-back (the server's answer to a probe, on a new inbound connection) reaches whichever
//! of the two handlers its stream picked; it is handed to the active client, whose probe it
//! answers.
//!
//! Size: about 960 lines, 310 of them unit tests of the pure bookkeeping ([`ProbeWatch`]:
//! re-arms, rechecks, requests, strikes) with an injected clock; the rest is that bookkeeping
//! and the two clients around it, which belong together.
//!
//! Must not touch: anything but AutoNAT's client.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::autonat::v2::client;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::ConnectionHandlerSelect;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionId, FromSwarm, NetworkBehaviour,
    NewExternalAddrCandidate, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;
use tracing::info;

/// The protocol an AutoNAT v2 server answers dial requests on (libp2p's own constant is
/// private): identify's list of a peer's protocols tells whether it is a tester.
pub(crate) const DIAL_REQUEST_PROTOCOL: &str = "/libp2p/autonat/2/dial-request";

/// Candidates remembered to show a new client (the most recent). libp2p's client tests at most
/// 10 at a time (its `max_candidates`); a few more cover addresses seen once.
const MAX_CANDIDATES: usize = 16;

/// Probes a client may send without a verdict; the next waits for a re-arm. A home's router
/// drops the server's dial-back silently, and the dial outlasts the client's own 10 s wait:
/// each probe ends "timed out", and libp2p's client tries again on its next 5 s tick, for as
/// long as the node runs.
pub(crate) const MAX_FRUITLESS: u32 = 3;

/// The least time between a re-arm and the next (the first comes at once).
pub(crate) const REARM_WAIT_FIRST: Duration = Duration::from_secs(60);
/// The wait between re-arms doubles up to this.
pub(crate) const REARM_WAIT_MAX: Duration = Duration::from_secs(30 * 60);
/// Every address is tested again this long after the last re-arm (or the start), whatever
/// happened: a port forwarded on the household's router since, or one removed, or a new
/// router, is noticed without a restart. Each recheck costs one probe per candidate.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(30 * 60);
/// The least time between a re-arm the household asked for (`hearth status --recheck`) and
/// the re-arm before it: the local API may ask as often as it likes, no more probes go out.
pub(crate) const REQUESTED_WAIT: Duration = Duration::from_secs(10);
/// Failed verdicts in a row, each from a different client (a re-test at least
/// [`REQUESTED_WAIT`] after the one before), that withdraw an address this node's AutoNAT
/// confirmed. A failure is a server's word that cannot be checked (a confirmation carries the
/// dial-back's nonce; a failure carries nothing), so one server alone cannot take a confirmed
/// address away: after the first, a second test follows at the next re-arm.
pub(crate) const STRIKES_TO_EXPIRE: u8 = 2;

/// Why a new client takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// A probe was lost with its connection.
    Lost,
    /// [`MAX_FRUITLESS`] probes brought no verdict.
    Fruitless,
    /// [`RECHECK_EVERY`] passed since the last re-arm, or a confirmed address failed a test
    /// and wants a second opinion.
    Recheck,
    /// The household asked (`hearth status --recheck`, `POST /v1/reachability/check`).
    Requested,
}

impl Due {
    fn because(self) -> &'static str {
        match self {
            Due::Lost => "a probe was lost with its connection",
            Due::Fruitless => "the last probes brought no verdict",
            Due::Recheck => {
                "addresses are tested again every half hour, or a second time after a failure"
            }
            Due::Requested => "asked through the local API",
        }
    }
}

/// Which probes of the active client are unanswered, and the candidates it was shown: what
/// decides a re-arm, and what the new client is shown. Pure.
#[derive(Debug)]
pub(crate) struct ProbeWatch {
    /// Probes sent and not yet answered, by the connection they went out on.
    unanswered: HashMap<ConnectionId, u32>,
    /// Distinct candidates, most recent last, at most [`MAX_CANDIDATES`].
    candidates: VecDeque<Multiaddr>,
    /// Probes of the active client since its last verdict.
    fruitless: u32,
    /// Why a re-arm is due, if one is: done once the wait allows.
    due: Option<Due>,
    /// No re-arm for a lost probe, fruitless probes or a recheck before this (`None`: none
    /// yet, the first comes at once).
    not_before: Option<Instant>,
    /// The last re-arm: a requested one waits [`REQUESTED_WAIT`] after it.
    last_rearm: Option<Instant>,
    /// When the next periodic recheck is due (`None` until the first [`ProbeWatch::tick`]).
    recheck_at: Option<Instant>,
    /// Direct addresses the active clients confirmed (not those declared in the configuration,
    /// which are never withdrawn), at most [`MAX_CANDIDATES`], with their failed verdicts in
    /// a row and the re-arm count at the last one.
    confirmed: Vec<Confirmed>,
    /// Verdicts since start (either way): `hearth status --recheck` waits on it.
    verdicts: u64,
    /// The wait after the next re-arm.
    wait: Duration,
    /// Re-arms since start.
    rearms: u64,
    /// Addresses whose latest verdict was "not reachable from outside", most recent last, at
    /// most [`MAX_CANDIDATES`]: what tells a household its radiator is behind NAT for certain,
    /// not merely untested.
    unreachable: VecDeque<Multiaddr>,
}

/// An address AutoNAT confirmed, and how many of its later tests failed in a row.
#[derive(Debug)]
struct Confirmed {
    addr: Multiaddr,
    strikes: u8,
    /// [`ProbeWatch::rearms`] at the last strike: a strike counts once per client.
    at_rearm: u64,
}

impl Default for ProbeWatch {
    fn default() -> Self {
        ProbeWatch {
            unanswered: HashMap::new(),
            candidates: VecDeque::new(),
            fruitless: 0,
            due: None,
            not_before: None,
            last_rearm: None,
            recheck_at: None,
            confirmed: Vec::new(),
            verdicts: 0,
            wait: REARM_WAIT_FIRST,
            rearms: 0,
            unreachable: VecDeque::new(),
        }
    }
}

impl ProbeWatch {
    /// Identify (or another behaviour) reported `addr` as a candidate external address.
    pub(crate) fn candidate(&mut self, addr: &Multiaddr) {
        self.candidates.retain(|a| a != addr);
        if self.candidates.len() == MAX_CANDIDATES {
            self.candidates.pop_front();
        }
        self.candidates.push_back(addr.clone());
    }

    /// The active client would send a probe over `conn`: true to send it, false to drop it
    /// (the client's last [`MAX_FRUITLESS`] probes brought no verdict: a re-arm is due, and
    /// until then the client waits for the dropped probe's outcome, which never comes).
    pub(crate) fn may_probe(&mut self, conn: ConnectionId) -> bool {
        if self.fruitless >= MAX_FRUITLESS {
            self.due.get_or_insert(Due::Fruitless);
            return false;
        }
        self.fruitless += 1;
        *self.unanswered.entry(conn).or_default() += 1;
        true
    }

    /// The active client reached a verdict on `addr`: reachable from outside or not. Returns
    /// the address if it is withdrawn: it was confirmed, and this is its
    /// [`STRIKES_TO_EXPIRE`]th failure in a row, each from another client. After a confirmed
    /// address's first failure a re-arm is due, for a second opinion.
    pub(crate) fn verdict(&mut self, addr: &Multiaddr, reachable: bool) -> Option<Multiaddr> {
        self.fruitless = 0;
        self.verdicts += 1;
        self.unreachable.retain(|a| a != addr);
        if !reachable {
            if self.unreachable.len() == MAX_CANDIDATES {
                self.unreachable.pop_front();
            }
            self.unreachable.push_back(addr.clone());
        }
        let i = self.confirmed.iter().position(|c| c.addr == *addr)?;
        let c = &mut self.confirmed[i];
        if reachable {
            c.strikes = 0;
            return None;
        }
        if c.strikes > 0 && c.at_rearm == self.rearms {
            // The same client again (libp2p's tests each candidate once; a second server's
            // verdict within one client would be another candidate): no new opinion.
            return None;
        }
        c.strikes += 1;
        c.at_rearm = self.rearms;
        if c.strikes < STRIKES_TO_EXPIRE {
            self.due.get_or_insert(Due::Recheck);
            return None;
        }
        Some(self.confirmed.remove(i).addr)
    }

    /// The active client confirmed `addr` (it answered a probe's dial-back).
    pub(crate) fn confirmed(&mut self, addr: &Multiaddr) {
        if let Some(c) = self.confirmed.iter_mut().find(|c| c.addr == *addr) {
            c.strikes = 0;
            return;
        }
        if self.confirmed.len() == MAX_CANDIDATES {
            self.confirmed.remove(0);
        }
        self.confirmed.push(Confirmed {
            addr: addr.clone(),
            strikes: 0,
            at_rearm: self.rearms,
        });
    }

    /// Verdicts since start, either way.
    pub(crate) fn verdicts(&self) -> u64 {
        self.verdicts
    }

    /// Candidates a re-arm would show the new client now.
    pub(crate) fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// The household asked for every address to be tested again. Returns how long until the
    /// re-arm may run (zero: at the next poll).
    pub(crate) fn request(&mut self, now: Instant) -> Duration {
        self.due = Some(Due::Requested);
        self.last_rearm.map_or(Duration::ZERO, |t| {
            (t + REQUESTED_WAIT).saturating_duration_since(now)
        })
    }

    /// Time passed: the periodic recheck is due once [`RECHECK_EVERY`] has passed since the
    /// last re-arm, or since the first tick.
    pub(crate) fn tick(&mut self, now: Instant) {
        let at = *self.recheck_at.get_or_insert(now + RECHECK_EVERY);
        if now >= at {
            self.due.get_or_insert(Due::Recheck);
        }
    }

    /// Addresses AutoNAT last found not reachable from outside, most recent last.
    pub(crate) fn unreachable(&self) -> impl Iterator<Item = &Multiaddr> {
        self.unreachable.iter()
    }

    /// The probing side of `conn`'s handler reported to the active client: an outcome (or,
    /// before any probe, that the peer serves AutoNAT, which answers nothing).
    pub(crate) fn reported(&mut self, conn: ConnectionId) {
        if let Some(n) = self.unanswered.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                self.unanswered.remove(&conn);
            }
        }
    }

    /// `conn` closed; if it took an unanswered probe with it, a re-arm is due.
    pub(crate) fn closed(&mut self, conn: ConnectionId) {
        if self.unanswered.remove(&conn).is_some() {
            self.due.get_or_insert(Due::Lost);
        }
    }

    /// Whether to re-arm at `now`, and why: one is due and the wait since the last has passed
    /// (for one the household asked for, [`REQUESTED_WAIT`]).
    pub(crate) fn rearm_now(&self, now: Instant) -> Option<Due> {
        self.due.filter(|due| match due {
            Due::Requested => self.last_rearm.is_none_or(|t| now >= t + REQUESTED_WAIT),
            _ => self.not_before.is_none_or(|t| now >= t),
        })
    }

    /// A new client takes over at `now`, for `why`: nothing of the old one's is unanswered
    /// any more, and the next re-arm waits (a lost probe or fruitless ones double the wait;
    /// a recheck or a request does not, it waits at least [`REARM_WAIT_FIRST`]). Returns the
    /// candidates to show it.
    pub(crate) fn rearmed(&mut self, now: Instant, why: Due) -> impl Iterator<Item = &Multiaddr> {
        self.unanswered.clear();
        self.fruitless = 0;
        self.due = None;
        match why {
            Due::Lost | Due::Fruitless => {
                self.not_before = Some(now + self.wait);
                self.wait = (self.wait * 2).min(REARM_WAIT_MAX);
            }
            Due::Recheck | Due::Requested => {
                let least = now + REARM_WAIT_FIRST;
                self.not_before = Some(self.not_before.map_or(least, |t| t.max(least)));
            }
        }
        self.last_rearm = Some(now);
        self.recheck_at = Some(now + RECHECK_EVERY);
        self.rearms += 1;
        self.candidates.iter()
    }

    pub(crate) fn rearms(&self) -> u64 {
        self.rearms
    }
}

/// An open direct connection, as [`Rearmed`] knows it.
#[derive(Debug, Clone, Copy)]
struct Open {
    generations: [u64; 2],
    peer: PeerId,
    outbound: bool,
    /// Identify says the peer serves AutoNAT on it (`actor/peers.rs`).
    serving: bool,
}

/// Two AutoNAT clients, one active and one standing by; see the module's documentation.
#[derive(Default)]
pub(crate) struct Rearmed {
    clients: [client::Behaviour; 2],
    /// Each client's generation: bumped when it is replaced by a new one.
    generations: [u64; 2],
    /// Which of the two is shown the candidates.
    active: usize,
    /// Each open direct connection, with the generation of each client when it was
    /// established (a client hears of a connection only if it is the generation that saw it
    /// open), its peer, and whether this node dialled it (a client probes only over those:
    /// libp2p gives an inbound connection the dial-back handler alone).
    connections: HashMap<ConnectionId, Open>,
    /// A fresh connection to a tester, asked for at a re-arm ([`Rearmed::rearm`]).
    dial: Option<PeerId>,
    watch: ProbeWatch,
    /// Declared in the configuration (`[node] external_addresses`): never withdrawn here.
    pinned: Vec<Multiaddr>,
    /// Confirmed addresses withdrawn ([`ProbeWatch::verdict`]), to tell the swarm.
    withdrawn: VecDeque<Multiaddr>,
}

type ClientHandler = THandler<client::Behaviour>;

impl Rearmed {
    /// The clients of a node whose configuration declares `pinned` as its public addresses.
    pub(crate) fn new(pinned: Vec<Multiaddr>) -> Self {
        Rearmed {
            pinned,
            ..Rearmed::default()
        }
    }

    /// The household asked for every address to be tested again: returns how many candidates
    /// will be tested and how long until the test starts.
    pub(crate) fn recheck(&mut self) -> (usize, Duration) {
        let wait = self.watch.request(Instant::now());
        (self.watch.candidates(), wait)
    }

    /// AutoNAT's verdicts since start, either way.
    pub(crate) fn verdicts(&self) -> u64 {
        self.watch.verdicts()
    }

    /// Times a new client took over and tested every address again, since start.
    pub(crate) fn rearms(&self) -> u64 {
        self.watch.rearms()
    }

    /// Addresses AutoNAT last found not reachable from outside, most recent last.
    pub(crate) fn unreachable(&self) -> Vec<Multiaddr> {
        self.watch.unreachable().cloned().collect()
    }

    /// Whether client `slot` knows connection `conn` (it saw it open).
    fn knows(&self, slot: usize, conn: ConnectionId) -> bool {
        self.connections
            .get(&conn)
            .is_some_and(|o| o.generations[slot] == self.generations[slot])
    }

    /// Identify reported on `conn`: whether the peer serves AutoNAT on it (speaks
    /// [`DIAL_REQUEST_PROTOCOL`]; a server lists it only on connections it did not dial, so
    /// never on its dial-backs).
    pub(crate) fn serves(&mut self, conn: ConnectionId, yes: bool) {
        if let Some(open) = self.connections.get_mut(&conn) {
            open.serving = yes;
        }
    }

    /// A connected tester to dial afresh for client `slot`, if it knows none it can probe
    /// through. A client learns that a peer serves AutoNAT once per connection this node
    /// dialled, when identify first reports on it: one made at a re-arm knows only the testers
    /// of connections opened since (`tests/net.rs::a_port_forwarded_later_is_confirmed_when_
    /// asked_and_withdrawn_once_it_is_gone` re-arms three times on two connections that stay
    /// open).
    fn tester_to_dial(&self, slot: usize) -> Option<PeerId> {
        let testers = || {
            self.connections
                .iter()
                .filter(|(_, open)| open.outbound && open.serving)
        };
        if testers().any(|(conn, _)| self.knows(slot, *conn)) {
            return None;
        }
        testers().map(|(_, open)| open.peer).next()
    }

    fn rearm(&mut self, why: Due, now: Instant) {
        let old = self.active;
        self.active = 1 - old;
        self.clients[old] = client::Behaviour::default();
        self.generations[old] += 1;
        let active = &mut self.clients[self.active];
        let mut shown = 0;
        for addr in self.watch.rearmed(now, why) {
            active.on_swarm_event(FromSwarm::NewExternalAddrCandidate(
                NewExternalAddrCandidate { addr },
            ));
            shown += 1;
        }
        info!(
            candidates = shown,
            because = why.because(),
            "AutoNAT: testing our addresses again"
        );
        // The new client knows no tester: a fresh connection to one, which both clients hear
        // of (the swarm allows several connections to a peer; this one closes when idle).
        if let Some(peer) = self.tester_to_dial(self.active) {
            info!(%peer, "AutoNAT: a fresh connection to a tester, for the new client");
            self.dial = Some(peer);
        }
    }
}

impl NetworkBehaviour for Rearmed {
    type ConnectionHandler = ConnectionHandlerSelect<ClientHandler, ClientHandler>;
    type ToSwarm = client::Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let [a, b] = &mut self.clients;
        Ok(
            a.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)?
                .select(b.handle_established_inbound_connection(
                    connection_id,
                    peer,
                    local_addr,
                    remote_addr,
                )?),
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let [a, b] = &mut self.clients;
        Ok(a.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?
        .select(b.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::NewExternalAddrCandidate(c) => {
                self.watch.candidate(c.addr);
                self.clients[self.active].on_swarm_event(event);
            }
            // A relayed connection is not shown: no probe goes over one.
            FromSwarm::ConnectionEstablished(e) if e.endpoint.is_relayed() => {}
            FromSwarm::ConnectionEstablished(e) => {
                self.connections.insert(
                    e.connection_id,
                    Open {
                        generations: self.generations,
                        peer: e.peer_id,
                        outbound: e.endpoint.is_dialer(),
                        serving: false,
                    },
                );
                for c in &mut self.clients {
                    c.on_swarm_event(event);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                for slot in 0..2 {
                    if self.knows(slot, e.connection_id) {
                        self.clients[slot].on_swarm_event(event);
                    }
                }
                self.connections.remove(&e.connection_id);
                self.watch.closed(e.connection_id);
            }
            // The client acts on none of the others.
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        use either::Either::{Left, Right};
        let (slot, event) = match event {
            // A dial-back: it answers the active client's probe, whichever handler took it.
            Left(Right(nonce)) | Right(Right(nonce)) => (self.active, Right(nonce)),
            Left(Left(probing)) => (0, Left(probing)),
            Right(Left(probing)) => (1, Left(probing)),
        };
        let probing = event.is_left();
        if probing && !self.knows(slot, connection_id) {
            // From a replaced client's handler: nobody is waiting for it.
            return;
        }
        if probing && slot == self.active {
            self.watch.reported(connection_id);
        }
        self.clients[slot].on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        // Polled after every swarm event and at least on the clients' 5 s tick.
        if let Some(addr) = self.withdrawn.pop_front() {
            info!(%addr, "AutoNAT: address no longer reachable from outside (tested twice)");
            return Poll::Ready(ToSwarm::ExternalAddrExpired(addr));
        }
        let now = Instant::now();
        self.watch.tick(now);
        if let Some(why) = self.watch.rearm_now(now) {
            self.rearm(why, now);
        }
        if let Some(peer) = self.dial.take() {
            return Poll::Ready(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::Always)
                    .build(),
            });
        }
        for slot in [self.active, 1 - self.active] {
            while let Poll::Ready(ev) = self.clients[slot].poll(cx) {
                if slot == self.active {
                    match &ev {
                        ToSwarm::NotifyHandler {
                            handler: NotifyHandler::One(conn),
                            ..
                        } if !self.watch.may_probe(*conn) => continue,
                        ToSwarm::GenerateEvent(ev) => {
                            let addr = &ev.tested_addr;
                            if let Some(gone) = self.watch.verdict(addr, ev.result.is_ok()) {
                                self.withdrawn.push_back(gone);
                                cx.waker().wake_by_ref();
                            }
                        }
                        ToSwarm::ExternalAddrConfirmed(addr) if !self.pinned.contains(addr) => {
                            self.watch.confirmed(addr)
                        }
                        _ => {}
                    }
                }
                return Poll::Ready(ev.map_in(|e| {
                    if slot == 0 {
                        either::Either::Left(e)
                    } else {
                        either::Either::Right(e)
                    }
                }));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::ConnectedPoint;
    use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};

    use super::*;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_connection_closed_with_a_probe_unanswered_rearms_and_one_answered_does_not() {
        let t0 = Instant::now();
        let mut w = ProbeWatch::default();
        // The server's support is reported before any probe: it answers nothing.
        w.reported(conn(1));
        assert!(w.may_probe(conn(1)));
        w.reported(conn(1));
        w.closed(conn(1));
        assert_eq!(None, w.rearm_now(t0), "its probe was answered");

        assert!(w.may_probe(conn(2)));
        assert!(w.may_probe(conn(2)));
        w.reported(conn(2));
        w.closed(conn(3));
        assert_eq!(
            None,
            w.rearm_now(t0),
            "another connection took nothing with it"
        );
        w.closed(conn(2));
        assert_eq!(
            w.rearm_now(t0),
            Some(Due::Lost),
            "one of its two probes was unanswered: at once, the first"
        );
    }

    #[test]
    fn a_rearm_forgets_the_old_clients_probes_and_shows_the_candidates_again() {
        let t0 = Instant::now();
        let mut w = ProbeWatch::default();
        w.candidate(&a("/ip4/198.51.100.7/tcp/4001"));
        w.candidate(&a("/ip4/198.51.100.7/tcp/51000"));
        w.candidate(&a("/ip4/198.51.100.7/tcp/4001"));
        assert!(w.may_probe(conn(1)));
        assert!(w.may_probe(conn(2)));
        w.closed(conn(2));
        let shown: Vec<_> = w.rearmed(t0, Due::Lost).cloned().collect();
        assert_eq!(
            shown,
            vec![
                a("/ip4/198.51.100.7/tcp/51000"),
                a("/ip4/198.51.100.7/tcp/4001")
            ],
            "each once, most recent last"
        );
        assert_eq!(w.rearms(), 1);
        w.closed(conn(1));
        assert_eq!(
            w.rearm_now(t0 + REARM_WAIT_MAX),
            None,
            "the old client's probe is nobody's now"
        );
    }

    #[test]
    fn a_client_whose_probes_bring_no_verdict_stops_until_a_rearm() {
        let t0 = Instant::now();
        let mut w = ProbeWatch::default();
        // Answered, but no verdict (timed out): the client would try again at once.
        for _ in 0..MAX_FRUITLESS {
            assert!(w.may_probe(conn(1)));
            w.reported(conn(1));
        }
        assert_eq!(None, w.rearm_now(t0));
        assert!(!w.may_probe(conn(1)), "dropped");
        assert_eq!(
            w.rearm_now(t0),
            Some(Due::Fruitless),
            "the first re-arm at once"
        );
        let _ = w.rearmed(t0, Due::Fruitless);
        assert!(w.may_probe(conn(1)), "a new client probes");
        w.reported(conn(1));
        w.verdict(&a("/ip4/198.51.100.7/tcp/4001"), false);
        for _ in 0..MAX_FRUITLESS {
            assert!(w.may_probe(conn(1)), "a verdict starts the count again");
            w.reported(conn(1));
        }
        assert!(!w.may_probe(conn(1)));
        assert_eq!(
            w.rearm_now(t0 + REARM_WAIT_FIRST / 2),
            None,
            "the next re-arm waits"
        );
        assert_eq!(w.rearm_now(t0 + REARM_WAIT_FIRST), Some(Due::Fruitless));
    }

    #[test]
    fn rearms_after_the_first_wait_a_minute_doubling_to_half_an_hour() {
        let mut w = ProbeWatch::default();
        let mut now = Instant::now();
        let lose = |w: &mut ProbeWatch, n| {
            assert!(w.may_probe(conn(n)));
            w.closed(conn(n));
        };
        lose(&mut w, 1);
        assert_eq!(w.rearm_now(now), Some(Due::Lost), "the first at once");
        let _ = w.rearmed(now, Due::Lost);
        let mut waits = Vec::new();
        for n in 2..10 {
            lose(&mut w, n);
            let mut waited = Duration::ZERO;
            while w.rearm_now(now + waited).is_none() {
                waited += Duration::from_secs(1);
            }
            now += waited;
            let _ = w.rearmed(now, Due::Lost);
            waits.push(waited.as_secs());
        }
        assert_eq!(waits, [60, 120, 240, 480, 960, 1800, 1800, 1800]);
    }

    fn dialled(addr: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: a(addr),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    /// The swarm tells `r` that connection `id` to `endpoint` opened (`open`) or closed.
    fn event(r: &mut Rearmed, open: bool, id: ConnectionId, endpoint: &ConnectedPoint) {
        let peer_id = PeerId::random();
        r.on_swarm_event(if open {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id: id,
                endpoint,
                failed_addresses: &[],
                other_established: 0,
            })
        } else {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id: id,
                endpoint,
                cause: None,
                remaining_established: 0,
            })
        });
    }

    #[test]
    fn a_relayed_connection_is_never_shown_to_the_clients_and_a_direct_one_to_both() {
        let mut r = Rearmed::default();
        let relay =
            "/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWKisTCaRnkk6anEdUZdUgxoPnP66uLXxooLFiebEUBn7P";
        let relayed = dialled(&format!("{relay}/p2p-circuit"));
        event(&mut r, true, conn(1), &relayed);
        assert!(!r.knows(0, conn(1)) && !r.knows(1, conn(1)), "not shown");
        // Closing what a client never saw open would panic inside libp2p's client.
        event(&mut r, false, conn(1), &relayed);

        let direct = dialled("/ip4/198.51.100.2/tcp/4001");
        event(&mut r, true, conn(2), &direct);
        assert!(r.knows(0, conn(2)) && r.knows(1, conn(2)), "shown to both");
        event(&mut r, false, conn(2), &direct);
        assert!(
            !r.knows(0, conn(2)) && !r.knows(1, conn(2)),
            "forgotten once closed"
        );
    }

    #[test]
    fn candidates_are_bounded_and_the_oldest_goes_first() {
        let mut w = ProbeWatch::default();
        for port in 0..(MAX_CANDIDATES as u16 + 5) {
            w.candidate(&a(&format!("/ip4/198.51.100.7/tcp/{}", 40000 + port)));
        }
        let shown: Vec<_> = w.rearmed(Instant::now(), Due::Lost).cloned().collect();
        assert_eq!(shown.len(), MAX_CANDIDATES);
        assert_eq!(shown[0], a("/ip4/198.51.100.7/tcp/40005"));
    }

    #[test]
    fn the_latest_verdict_on_each_address_is_kept_and_those_not_reachable_are_bounded() {
        let mut w = ProbeWatch::default();
        let (mapped, other) = (
            a("/ip4/198.51.100.7/tcp/4001"),
            a("/ip4/198.51.100.7/tcp/4002"),
        );
        w.verdict(&mapped, false);
        w.verdict(&other, false);
        w.verdict(&mapped, false);
        let unreachable: Vec<_> = w.unreachable().cloned().collect();
        assert_eq!(
            unreachable,
            [other.clone(), mapped.clone()],
            "once each, latest last"
        );
        // Tested again and reachable (a port forwarded since): no longer listed.
        w.verdict(&mapped, true);
        assert_eq!(w.unreachable().cloned().collect::<Vec<_>>(), [other]);
        for port in 0..(MAX_CANDIDATES as u16 + 5) {
            w.verdict(
                &a(&format!("/ip4/198.51.100.7/tcp/{}", 40000 + port)),
                false,
            );
        }
        let unreachable: Vec<_> = w.unreachable().cloned().collect();
        assert_eq!(unreachable.len(), MAX_CANDIDATES);
        assert_eq!(unreachable[0], a("/ip4/198.51.100.7/tcp/40005"));
    }

    #[test]
    fn every_address_is_tested_again_half_an_hour_after_the_last_rearm() {
        let t0 = Instant::now();
        let mut w = ProbeWatch::default();
        w.candidate(&a("/ip4/198.51.100.7/tcp/4001"));
        w.tick(t0);
        assert_eq!(w.rearm_now(t0), None, "nothing due at start");
        w.tick(t0 + RECHECK_EVERY - Duration::from_secs(1));
        assert_eq!(w.rearm_now(t0 + RECHECK_EVERY), None, "not yet");
        let t1 = t0 + RECHECK_EVERY;
        w.tick(t1);
        assert_eq!(w.rearm_now(t1), Some(Due::Recheck));
        let shown: Vec<_> = w.rearmed(t1, Due::Recheck).cloned().collect();
        assert_eq!(shown, [a("/ip4/198.51.100.7/tcp/4001")], "shown again");
        w.tick(t1 + RECHECK_EVERY - Duration::from_secs(1));
        assert_eq!(
            w.rearm_now(t1 + RECHECK_EVERY),
            None,
            "counted from the re-arm"
        );
        w.tick(t1 + RECHECK_EVERY);
        assert_eq!(w.rearm_now(t1 + RECHECK_EVERY), Some(Due::Recheck));
        // A recheck does not double the wait a lost probe meets afterwards.
        let t2 = t1 + RECHECK_EVERY;
        let _ = w.rearmed(t2, Due::Recheck);
        assert!(w.may_probe(conn(1)));
        w.closed(conn(1));
        assert_eq!(w.rearm_now(t2 + REARM_WAIT_FIRST), Some(Due::Lost));
    }

    #[test]
    fn a_rearm_the_household_asks_for_waits_at_most_ten_seconds_after_the_last() {
        let t0 = Instant::now();
        let mut w = ProbeWatch::default();
        w.candidate(&a("/ip4/198.51.100.7/tcp/4001"));
        assert_eq!(w.request(t0), Duration::ZERO, "the first at once");
        assert_eq!(w.rearm_now(t0), Some(Due::Requested));
        let _ = w.rearmed(t0, Due::Requested);
        let t = t0 + Duration::from_secs(3);
        assert_eq!(w.request(t), REQUESTED_WAIT - Duration::from_secs(3));
        assert_eq!(w.rearm_now(t), None, "asked again at once: no more probes");
        assert_eq!(
            w.rearm_now(t0 + REQUESTED_WAIT),
            Some(Due::Requested),
            "not the minute a lost probe waits"
        );
    }

    #[test]
    fn a_confirmed_address_is_withdrawn_after_failing_twice_each_time_in_another_client() {
        let t0 = Instant::now();
        let mut w = ProbeWatch::default();
        let (forwarded, other) = (
            a("/ip4/198.51.100.7/tcp/4001"),
            a("/ip4/198.51.100.7/tcp/4002"),
        );
        w.candidate(&forwarded);
        assert_eq!(w.verdict(&forwarded, true), None);
        w.confirmed(&forwarded);
        // Tested again (the port forward was removed): the first failure asks for a second
        // opinion, at the next re-arm.
        let t1 = t0 + RECHECK_EVERY;
        let _ = w.rearmed(t1, Due::Recheck);
        assert_eq!(w.verdict(&forwarded, false), None, "one server's word");
        assert_eq!(w.verdict(&forwarded, false), None, "the same client again");
        assert_eq!(w.verdict(&other, false), None, "never confirmed");
        assert_eq!(w.rearm_now(t1), None, "a second opinion waits a minute");
        assert_eq!(w.rearm_now(t1 + REARM_WAIT_FIRST), Some(Due::Recheck));
        let t2 = t1 + REARM_WAIT_FIRST;
        let _ = w.rearmed(t2, Due::Recheck);
        assert_eq!(w.verdict(&forwarded, false), Some(forwarded.clone()));
        assert_eq!(
            w.verdict(&forwarded, false),
            None,
            "withdrawn once; no longer confirmed"
        );
        assert_eq!(w.unreachable().last(), Some(&forwarded));

        // A success between two failures starts the count again.
        w.confirmed(&forwarded);
        let _ = w.rearmed(t2 + REARM_WAIT_FIRST, Due::Requested);
        assert_eq!(w.verdict(&forwarded, false), None);
        let _ = w.rearmed(t2 + 2 * REARM_WAIT_FIRST, Due::Requested);
        assert_eq!(w.verdict(&forwarded, true), None);
        assert!(w.unreachable().all(|x| *x != forwarded), "reachable again");
        let _ = w.rearmed(t2 + 3 * REARM_WAIT_FIRST, Due::Requested);
        assert_eq!(w.verdict(&forwarded, false), None, "a first failure again");
        assert_eq!(w.verdicts(), 9);
    }
}
