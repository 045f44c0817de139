//! Reachability on the swarm task: the bootstrap redial, listening through relays while not
//! publicly reachable, confirmed external addresses, hole punches (DCUtR) and their outcome for
//! blob fetches, AutoNAT and UPnP reports. Part of the swarm task (`actor.rs`).

use super::*;
use crate::net::line::outside_home;
use crate::net::punch::circuit_addr;
use crate::net::relayed::is_relayed;

impl Actor {
    pub(super) fn reachability(&self) -> Reachability {
        let mut relays: Vec<PeerId> = self.relays.iter().copied().collect();
        relays.sort();
        let mut relayed_peers = Vec::new();
        let mut hole_punched_peers = Vec::new();
        for (id, p) in &self.peers {
            if p.direct.is_empty() && !p.relayed.is_empty() {
                relayed_peers.push(*id);
            }
            if p.direct.hole_punched() {
                hole_punched_peers.push(*id);
            }
        }
        relayed_peers.sort();
        hole_punched_peers.sort();
        Reachability {
            confirmed_addrs: self.confirmed.clone(),
            unreachable_addrs: self.swarm.behaviour().autonat.unreachable(),
            relays,
            relayed_peers,
            hole_punched_peers,
            hole_punch_attempts: self
                .hole_punch_successes
                .saturating_add(self.hole_punch_failures),
            hole_punch_successes: self.hole_punch_successes,
            hole_punch_failures: self.hole_punch_failures,
            dead_connections: self.dead_connections,
            line_down_since_ms: self.line_down_since,
            dht_client: self.dht_mode == Some(kad::Mode::Client),
            autonat_rearms: self.swarm.behaviour().autonat.rearms(),
            autonat_dial_backs_given_up: self.swarm.behaviour().autonat_server.hook.given_up(),
            autonat_verdicts: self.swarm.behaviour().autonat.verdicts(),
            nat_mapping: self.mappings.verdict(Instant::now()),
        }
    }

    // ---------------------------------------------------------------- reachability

    /// A relay-capable peer identified itself: listen through it while we have no confirmed
    /// direct address, so that other homes can reach us (and hole punch) through it.
    /// A node with a public address of its own waits for AutoNAT first (`relay_gate.rs`).
    pub(super) fn maybe_listen_via(&mut self, relay: PeerId) {
        if !self.confirmed.is_empty()
            || self.relay_listeners.len() >= MAX_RELAYS
            || self.relay_listeners.contains_key(&relay)
            || !self.relay_gate.offered(relay, Instant::now())
        {
            return;
        }
        // The address we reach the relay at: a direct connection's remote address.
        let Some(base) = self.peers.get(&relay).and_then(|p| {
            p.direct
                .ids()
                .filter_map(|id| p.endpoints.get(id))
                .find(|a| !is_relayed(a))
                .cloned()
        }) else {
            return;
        };
        let addr = without_peer_id(&base)
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(addr.clone()) {
            Ok(id) => {
                info!(%relay, %addr, "no confirmed public address: listening through relay");
                self.relay_listeners.insert(relay, id);
            }
            Err(e) => warn!(%addr, "cannot listen through relay: {e}"),
        }
    }

    /// An external address was confirmed (AutoNAT, configuration or UPnP).
    pub(super) fn on_confirmed(&mut self, address: Multiaddr) {
        if is_relayed(&address) {
            return;
        }
        if !self.confirmed.contains(&address) && self.confirmed.len() < MAX_CONFIRMED {
            info!(%address, "reachable from the internet at this address");
            self.confirmed.push(address);
        }
        // Directly reachable: relays are not needed any more.
        for (relay, id) in self.relay_listeners.drain() {
            info!(%relay, "directly reachable: stopped listening through relay");
            self.relays.remove(&relay);
            self.swarm.remove_listener(id);
        }
    }

    /// The household asked for every address to be tested again (`autonat.rs`).
    pub(super) fn recheck(&mut self) -> crate::net::Recheck {
        let (candidates, wait) = self.swarm.behaviour_mut().autonat.recheck();
        info!(candidates, "AutoNAT: testing our addresses again, as asked");
        crate::net::Recheck {
            candidates,
            starts_in_ms: wait.as_millis() as u64,
        }
    }

    /// An external address is no longer confirmed (AutoNAT tested it again and it failed
    /// twice, `autonat.rs`: a port forward removed, a new router). With no direct address
    /// left, other homes reach this node only through a relay again: listen through the
    /// relays it is connected to now; the tick's redial finds one otherwise.
    pub(super) fn on_expired(&mut self, address: Multiaddr) {
        info!(%address, "external address no longer confirmed");
        self.confirmed.retain(|a| *a != address);
        if is_relayed(&address) || !self.confirmed.is_empty() {
            return;
        }
        self.listen_via_connected_relays();
    }

    /// Listen through each bootstrap relay this node is connected to (`maybe_listen_via`
    /// decides whether it should).
    pub(super) fn listen_via_connected_relays(&mut self) {
        let connected: Vec<PeerId> = self
            .relay_bootstrap
            .iter()
            .filter(|r| self.peers.contains_key(r))
            .copied()
            .collect();
        for relay in connected {
            self.maybe_listen_via(relay);
        }
    }

    pub(super) fn on_relay_client(&mut self, ev: relay::client::Event) {
        match ev {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    info!(relay = %relay_peer_id, "relay reservation accepted: reachable through it");
                }
                self.line_up();
                if self.relay_listeners.contains_key(&relay_peer_id) {
                    let was_unreachable = self.relays.is_empty();
                    self.relays.insert(relay_peer_id);
                    // Back behind a relay: the next loss of it starts the redial afresh.
                    self.backoff.reset();
                    if was_unreachable && !renewal {
                        // Reachable again: the peers whose punched connections died while we
                        // were not are tried now, not on the timer set back then (`Lost`).
                        let now = Instant::now();
                        self.lost.relay_back(now);
                        self.bring_back_lost(now);
                    }
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "connected to a peer through a relay")
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "a peer connected to us through a relay")
            }
        }
    }

    /// Whether this node should listen through a relay (behind NAT, no confirmed direct
    /// address) and listens through none: the connection to every relay it knew died (its
    /// home router rebooted, got a new address, or its line is down).
    pub(super) fn relay_lost(&self) -> bool {
        self.relay_gate.open(Instant::now())
            && self.confirmed.is_empty()
            && self.relay_listeners.is_empty()
            && !self.relay_bootstrap.is_empty()
    }

    /// Dial the bootstrap nodes again (alone, or behind NAT without a relay), one round, and
    /// set when the next is due: the backoff's delay, cut to `LINE_DOWN_REDIAL` when the
    /// round says the line is down (`line.rs`, `peers.rs`).
    pub(super) fn redial_bootstrap(&mut self) {
        if self.bootstrap.is_empty() {
            return;
        }
        let delay = self.backoff.next_delay();
        self.next_redial = Instant::now() + delay;
        debug!(next_in = ?delay, "dialling bootstrap peers");
        let mut started = Vec::new();
        for addr in self.bootstrap.clone() {
            if peer_id_of(&addr) == Some(self.local) {
                continue;
            }
            let opts = match peer_id_of(&addr) {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::from(addr.clone()),
            };
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.dials.dialled(DialOrigin::Bootstrap, id);
                    started.push(id);
                }
                Err(e) => debug!(%addr, "bootstrap dial not started: {e}"),
            }
        }
        self.redial_round.start(started);
    }

    /// Whether the connections out of the home died and none is open: unanswered redials
    /// then count as the line down (`line.rs`, `Silence`).
    pub(super) fn silent(&self) -> bool {
        let outside_open = self
            .peers
            .values()
            .any(|p| p.endpoints.values().any(outside_home));
        self.silence.silent(Instant::now(), outside_open)
    }

    /// Failed hole punches whose retry is due (`punch.rs`): a fresh relayed connection to each
    /// such peer still reached only through a relay; the peer runs DCUtR over it.
    pub(super) fn retry_hole_punches(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            let relayed_only = p.direct.is_empty() && !p.relayed.is_empty();
            if p.punch.take_due(now, relayed_only) {
                let dialled = p
                    .relayed
                    .iter()
                    .filter_map(|c| p.endpoints.get(c))
                    .collect::<Vec<_>>();
                due.push((*id, circuit_addr(id, dialled, &p.listen_addrs)));
            }
        }
        for (peer, addr) in due {
            let span = self.span(&peer);
            let _g = span.enter();
            let Some(addr) = addr else {
                info!("hole punch not retried: no address reaches this peer through a relay");
                continue;
            };
            match self.dial_circuit(peer, &addr, PeerCondition::Always) {
                Ok(()) => info!(%addr, "retrying the hole punch: a fresh relayed connection"),
                Err(e) => info!(%addr, "hole punch not retried: {e}"),
            }
        }
    }

    /// Peers whose hole-punched connection died (`punch.rs`, `Lost`) and whose try is due: a
    /// relayed connection to each one not connected meanwhile; DCUtR punches over it.
    pub(super) fn bring_back_lost(&mut self, now: Instant) {
        for (peer, addr) in self.lost.take_due(now, self.relay_lost()) {
            if let Some(p) = self.peers.get(&peer) {
                // Reached directly: found. Reached only through a relay: the punch over that
                // connection is at work (DCUtR, then `PunchRetry`); this try is passed over and
                // the next one stays due, should that connection close unpunched.
                if !p.direct.is_empty() {
                    self.lost.found(&peer);
                }
                continue;
            }
            let span = self.span(&peer);
            let _g = span.enter();
            // Beside any dial to the peer under way: one to its direct address (which a home
            // behind NAT never answers) holds the peer for libp2p's 10 s dial timeout, and a
            // home back behind its relay found one so and waited for its timer (the NAT lab,
            // 2026-12-06: punched 16 s after its reservation instead of at once).
            match self.dial_circuit(peer, &addr, PeerCondition::Disconnected) {
                Ok(()) => {
                    info!(%addr, "reaching the peer whose hole-punched connection died through a relay")
                }
                Err(e) => info!(%addr, "not dialled through the relay: {e}"),
            }
        }
    }

    /// Dial `peer` at its relayed address `addr` (a fresh relayed connection, over which
    /// DCUtR punches), counted as a punch retry.
    fn dial_circuit(
        &mut self,
        peer: PeerId,
        addr: &Multiaddr,
        condition: PeerCondition,
    ) -> Result<(), libp2p::swarm::DialError> {
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![addr.clone()])
            .condition(condition)
            .build();
        let id = opts.connection_id();
        self.swarm.dial(opts)?;
        self.dials.dialled(DialOrigin::PunchRetry, id);
        Ok(())
    }

    pub(super) fn on_dcutr(&mut self, ev: dcutr::Event) {
        let peer = ev.remote_peer_id;
        let span = self.span(&peer);
        let _g = span.enter();
        match ev.result {
            Ok(connection) => {
                self.hole_punch_successes = self.hole_punch_successes.saturating_add(1);
                info!("hole punch succeeded: direct connection");
                let mut keep = false;
                if let Some(p) = self.peers.get_mut(&peer) {
                    // Kept open (and brought back if it dies, `Lost`) even when the
                    // relayed connection it replaces closed before it was established,
                    // which `on_connected` cannot see as a punch: the far end closes the
                    // relayed one as soon as its own side of the punch connects (NAT lab,
                    // 2026-12-06: h2a kept nothing, and when the line went down only
                    // home 1's timer brought the pair back, 29 s after h2a could be
                    // reached again).
                    keep = p.direct.punched(connection);
                    p.punch.succeeded();
                }
                if keep {
                    debug!("keeping the hole-punched connection open while idle");
                    self.swarm.behaviour_mut().keep_open.keep(peer, connection);
                }
                self.direct_settled(peer);
            }
            Err(e) => {
                self.hole_punch_failures = self.hole_punch_failures.saturating_add(1);
                let now = Instant::now();
                // Behind a NAT that gives each peer a port of its own no retry can succeed:
                // each would only cost the relay a fresh circuit (`mapping.rs`).
                let hopeless = self.mappings.punch_hopeless(now);
                let retry = self.peers.get_mut(&peer).and_then(|p| {
                    let relayed_only = p.direct.is_empty() && !p.relayed.is_empty();
                    p.punch.failed(now, relayed_only && !hopeless)
                });
                match retry {
                    Some(at) => info!(
                        retry_in_s = at.saturating_duration_since(now).as_secs(),
                        "hole punch failed; the connection stays relayed until a retry succeeds: {e}"
                    ),
                    None if hopeless => info!(
                        "hole punch failed; the connection stays relayed, and the punch is not tried again: this node's NAT gives each peer a port of its own: {e}"
                    ),
                    None => info!("hole punch failed; the connection stays relayed: {e}"),
                }
                // Fetches waiting for a direct connection to this peer move on now.
                self.with_downloads(|d, io| d.unreachable(io, Instant::now(), peer));
            }
        }
    }
}

impl Actor {
    /// A relay server event: its load, counted for the operator (`relay_load.rs`).
    pub(super) fn on_relay_server(&mut self, ev: relay::Event) {
        let Some(served) = self.relay_server.as_mut() else {
            return;
        };
        debug!(?ev, "relay server event");
        match ev {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => served.reservation_accepted(src_peer_id, renewed),
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                served.reservation_ended(&src_peer_id)
            }
            relay::Event::ReservationReqDenied { status, .. } => {
                served.reservation_refused(&status)
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                status,
                ..
            } => served.circuit_refused(&src_peer_id, &status),
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => served.circuit_opened(src_peer_id, dst_peer_id),
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => served.circuit_closed(&src_peer_id, &dst_peer_id),
            _ => {}
        }
    }

    /// What this node serves as a relay, if it is one.
    pub(super) fn relay_served(&self) -> Option<RelayServed> {
        self.relay_server.as_ref().map(RelayLoad::counts)
    }
}

impl Actor {
    /// An AutoNAT verdict on one of our addresses; the first on a public one may open the
    /// relay gate (`relay_gate.rs`).
    pub(super) fn on_autonat(&mut self, ev: autonat::v2::client::Event) {
        match &ev.result {
            Ok(()) => {
                info!(addr = %ev.tested_addr, server = %ev.server, "AutoNAT: address reachable from outside")
            }
            Err(e) => {
                debug!(addr = %ev.tested_addr, server = %ev.server, "AutoNAT: address not reachable from outside: {e}")
            }
        }
        self.relay_gate.autonat(&ev.tested_addr, ev.result.is_ok());
        self.listen_via_held_relays();
    }

    /// Once the relay gate opens: listen through the relays offered while it was shut.
    pub(super) fn listen_via_held_relays(&mut self) {
        let held = self.relay_gate.release(Instant::now());
        if !held.is_empty() && self.confirmed.is_empty() {
            info!("no confirmed public address: listening through the relays met meanwhile");
        }
        for relay in held {
            if self.peers.contains_key(&relay) {
                self.maybe_listen_via(relay);
            }
        }
    }
}

pub(super) fn on_upnp(ev: upnp::Event) {
    match ev {
        upnp::Event::NewExternalAddr { external_addr, .. } => {
            info!(addr = %external_addr, "UPnP: the router maps a port to us")
        }
        upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
            info!(addr = %external_addr, "UPnP: port mapping expired")
        }
        upnp::Event::GatewayNotFound => info!("UPnP: no router answered; port mapping off"),
        upnp::Event::NonRoutableGateway => {
            info!("UPnP: the router is itself behind NAT; port mapping off")
        }
    }
}
