//! Peer bookkeeping on the swarm task: swarm events (connections opened and closed, dial
//! failures, external addresses), what each connected peer is (identify), hearth traffic per
//! peer, and connection pruning. Part of the swarm task (`actor.rs`).

use super::*;
use crate::net::direct::is_public_direct;
use crate::net::line::{dial_end, outside_home, path_out_of_home, DialEnd, Line, LINE_DOWN_REDIAL};
use crate::net::punch::circuit_addr;
use crate::net::work::subnet_of;
use libp2p::core::transport::PortUse;

impl Actor {
    /// A dial reached out of the home, or a relay took this node: its line works.
    pub(super) fn line_up(&mut self) {
        if let Some(since) = self.line_down_since.take() {
            let secs = crate::model::now_ms().saturating_sub(since) / 1000;
            info!(down_s = secs, "the network is reachable from here again");
        }
    }

    /// Hearth traffic with `peer` (a control or blob request or answer, either way): pruning
    /// keeps it connected for the grace period.
    pub(super) fn touch(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.last_used = Some(Instant::now());
        }
    }

    /// Disconnect the peers we hold but do not use: lookup peers above the low watermark,
    /// others above the high one (`prune.rs`). Relays we listen through and bootstrap peers
    /// are kept.
    pub(super) fn prune_peers(&mut self, now: Instant) {
        let Some(w) = self.watermarks else { return };
        if self.peers.len() <= w.low {
            return;
        }
        let candidates: Vec<crate::net::prune::Candidate> = self
            .peers
            .iter()
            .map(|(id, p)| crate::net::prune::Candidate {
                peer: *id,
                connected_at: p.connected_at,
                last_used: p.last_used,
                protected: self.relays.contains(id)
                    || self.relay_listeners.contains_key(id)
                    || self.bootstrap.iter().any(|a| peer_id_of(a) == Some(*id)),
                looked_up: !p.kad_dialled.is_empty(),
                punched: p.direct.any_kept(),
            })
            .collect();
        let out = crate::net::prune::to_prune(now, &candidates, w);
        if !out.is_empty() {
            debug!(
                connected = self.peers.len(),
                closing = out.len(),
                "pruning peers we hold but do not use"
            );
        }
        for peer in out {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Reports each peer connected for `settle` without a break, once per connected spell.
    pub(super) fn report_settled(&mut self, now: Instant) {
        let settle = self.watermarks.map_or(crate::net::SETTLE, |w| w.settle);
        let mut settled = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            if !p.settled && now.saturating_duration_since(p.connected_at) >= settle {
                p.settled = true;
                settled.push(*id);
            }
        }
        for peer in settled {
            self.emit(NetEvent::PeerSettled(peer));
        }
    }

    // ---------------------------------------------------------------- swarm events

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.relay_gate.listening_at(&address);
                self.start_dht_mode();
                self.listeners_waiting = self.listeners_waiting.saturating_sub(1);
            }
            SwarmEvent::ListenerError { error, .. } => warn!("listener error: {error}"),
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
                ..
            } => {
                self.relay_listeners.retain(|relay, id| {
                    let keep = *id != listener_id;
                    if !keep {
                        self.relays.remove(relay);
                    }
                    keep
                });
                if addresses.is_empty() {
                    self.listeners_waiting = self.listeners_waiting.saturating_sub(1);
                }
                warn!(?addresses, ?reason, "listener closed");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let span = self.span(&peer_id);
                let _g = span.enter();
                debug!(?cause, "connection closed");
                let mut relayed_closed = false;
                let mut punched_died = None;
                let mut died = false;
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    let remote = p.endpoints.remove(&connection_id);
                    p.kad_dialled.remove(&connection_id);
                    // Dead: its pings failed and we closed it, or the kernel aborted it
                    // (data unacknowledged past `TCP_USER_TIMEOUT`, `behaviour.rs`, or the
                    // home router answered "unreachable" for it).
                    let dead = p.failed.remove(&connection_id)
                        || cause.as_ref().is_some_and(|c| path_broke(c));
                    died = dead;
                    if dead && remote.as_ref().is_some_and(path_out_of_home) {
                        // Its relay and its peers out of the home dying together is how a
                        // home router that drops packets while its line is down shows
                        // (`line.rs`, `Silence`); relayed connections die with their relay's.
                        self.silence.lost(Instant::now());
                    }
                    relayed_closed = p.relayed.remove(&connection_id);
                    // The last direct connection closed and a punched one among them died:
                    // the peer is brought back through a relay (`punch.rs`, `Direct`, `Lost`).
                    if p.direct.closed(connection_id, dead) {
                        let dialled = p.relayed.iter().filter_map(|c| p.endpoints.get(c));
                        punched_died = Some(circuit_addr(&peer_id, dialled, &p.listen_addrs));
                    }
                    p.connections = num_established;
                }
                if died {
                    self.dead_connections = self.dead_connections.saturating_add(1);
                }
                match punched_died {
                    Some(Some(circuit)) => {
                        let now = Instant::now();
                        let first = self.local < peer_id;
                        if let Some(at) = self.lost.lost(peer_id, circuit, now, first) {
                            info!(
                                try_in_s = at.saturating_duration_since(now).as_secs(),
                                "the hole-punched connection died: reaching the peer through a relay again, to punch anew"
                            );
                        }
                    }
                    Some(None) => info!(
                        "the hole-punched connection died; no address reaches the peer through a relay, so it is not punched again until it is used"
                    ),
                    None => {}
                }
                if relayed_closed {
                    self.direct_settled(peer_id);
                }
                self.mappings.closed(connection_id);
                if num_established == 0 {
                    if let Some(p) = self.peers.remove(&peer_id) {
                        // A peer back within moments (the other home's retry replaced the
                        // relayed connection) carries its failed punches on (`punch.rs`).
                        self.punch_memory.keep(peer_id, p.punch, Instant::now());
                    }
                    info!("peer disconnected");
                    self.emit(NetEvent::PeerDisconnected(peer_id));
                    if self.peers.is_empty() {
                        self.announced_with_peers = false;
                        self.backoff.reset();
                        self.next_redial = Instant::now() + Backoff::INITIAL;
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(?peer_id, "outgoing connection failed: {error}");
                self.dials.failed(connection_id);
                if let (Some(peer), libp2p::swarm::DialError::Transport(tried)) = (peer_id, &error)
                {
                    let tried = tried.iter().map(|(a, _)| a);
                    self.reach_book.dial_failed(peer, tried, Instant::now());
                }
                // Only a dial of the redial round tells of the line: the others (Kademlia's,
                // punches) are not read, nor the peers walked for the silence.
                let line = if self.redial_round.holds(connection_id) {
                    let end = dial_end(&error);
                    let silent = end == DialEnd::Unanswered && self.silent();
                    self.redial_round.failed(connection_id, end, silent)
                } else {
                    Line::Unknown
                };
                match line {
                    Line::Down => {
                        // The line is down (the home router answered "unreachable" or, just
                        // after the node's connections out died, nothing answered): no
                        // bootstrap node saw the round's dials, so it costs them nothing to
                        // try again soon, and the node is back within moments of it.
                        self.backoff.at_most(LINE_DOWN_REDIAL);
                        self.next_redial = self.next_redial.min(Instant::now() + LINE_DOWN_REDIAL);
                        if self.line_down_since.is_none() {
                            warn!(
                                every_s = LINE_DOWN_REDIAL.as_secs(),
                                "the network is unreachable from here (the line or the home \
                                 router is down): trying the bootstrap nodes again and again"
                            );
                            self.line_down_since = Some(crate::model::now_ms());
                        }
                    }
                    Line::Up => self.line_up(),
                    Line::Unknown => {}
                }
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    // libp2p words a denial "Dial error" alone; the cause's source says
                    // which of this node's rules refused it.
                    let reason = match &error {
                        libp2p::swarm::DialError::Denied { cause } => {
                            let mut reason = format!("refused by this node: {cause}");
                            let mut source = std::error::Error::source(cause);
                            while let Some(s) = source {
                                reason.push_str(&format!(": {s}"));
                                source = s.source();
                            }
                            reason
                        }
                        other => other.to_string(),
                    };
                    let _ = reply.send(Err(NetError::Dial { addr, reason }));
                }
                // A provider we dialled for a blob fetch cannot be reached: move on now.
                if let Some(peer) = peer_id.filter(|p| !self.swarm.is_connected(p)) {
                    self.with_downloads(|d, io| d.unreachable(io, Instant::now(), peer));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => debug!(%send_back_addr, "incoming connection failed: {error}"),
            SwarmEvent::ExternalAddrConfirmed { address } => self.on_confirmed(address),
            SwarmEvent::ExternalAddrExpired { address } => self.on_expired(address),
            _ => {}
        }
    }

    pub(super) fn on_connected(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        endpoint: ConnectedPoint,
        num_established: u32,
    ) {
        let remote = endpoint.get_remote_address().clone();
        if outside_home(&remote) {
            self.silence.established();
        }
        // Whether the connection leaves from our listening port: accepted, or dialled with port
        // reuse while a TCP listener is open (else libp2p dials from a fresh port).
        let from_listen_port = match &endpoint {
            ConnectedPoint::Listener { .. } => true,
            ConnectedPoint::Dialer { port_use, .. } => {
                *port_use == PortUse::Reuse
                    && self.swarm.listeners().any(|a| {
                        !crate::net::relayed::is_relayed(a)
                            && a.iter()
                                .any(|p| matches!(p, Protocol::Tcp(port) if port != 0))
                    })
            }
        };
        self.mappings
            .connected(connection_id, &remote, from_listen_port);
        let origin = self.dials.established(connection_id, endpoint.is_dialer());
        if origin == Some(DialOrigin::Bootstrap) {
            self.line_up();
        }
        if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
            let _ = reply.send(Ok(()));
        }
        // A lost peer is found when it is reached directly again (punched). A relayed
        // connection to it may close before its punch (the peer still held a direct
        // connection to our old address and refused it: the NAT lab, `--renumber`), so the
        // peer stays lost meanwhile (`punch.rs`, `Lost`; `reach.rs`, `bring_back_lost`).
        if !endpoint.is_relayed() {
            self.lost.found(&peer);
        }
        if let (Some(DialOrigin::Kad | DialOrigin::Bootstrap), Some(subnet), true) =
            (origin, subnet_of(&remote, true), is_public_direct(&remote))
        {
            // A public DHT node is there, whether it keeps the connection or not (a hole
            // punch reaches a home at its router's address: not counted; `dht_role::Heard`).
            self.dht_heard.reached_public(peer, subnet, Instant::now());
        }
        let first = !self.peers.contains_key(&peer);
        let was_alone = self.peers.is_empty();
        let state = self.peers.entry(peer).or_insert_with(|| PeerState {
            since: SystemTime::now(),
            connections: 0,
            endpoints: HashMap::new(),
            relayed: HashSet::new(),
            direct: Direct::default(),
            failed: HashSet::new(),
            punch: self.punch_memory.take(&peer, Instant::now()),
            relayed_since: None,
            connected_at: Instant::now(),
            last_used: None,
            kad_dialled: HashSet::new(),
            settled: false,
            listen_addrs: Vec::new(),
            punched_addrs: Vec::new(),
            agent_version: None,
            protocol_version: None,
            span: tracing::info_span!("conn", peer = %peer),
        });
        state.connections = num_established;
        if state.endpoints.len() < MAX_ADDRS_PER_PEER {
            state.endpoints.insert(connection_id, remote.clone());
        }
        // Not from `remote`: an inbound relayed connection's send-back address is only
        // `/p2p/<peer>`, its local address holds the `/p2p-circuit`.
        if origin == Some(DialOrigin::Kad) {
            state.kad_dialled.insert(connection_id);
        }
        if origin == Some(DialOrigin::Dcutr)
            && state.punched_addrs.len() < MAX_ADDRS_PER_PEER
            && !state.punched_addrs.contains(&remote)
        {
            state.punched_addrs.push(remote.clone());
        }
        let relayed = endpoint.is_relayed();
        if relayed {
            state.relayed.insert(connection_id);
            state.relayed_since = Some(Instant::now());
        } else {
            state.direct.opened(connection_id);
        }
        // Once a direct connection exists the relayed ones are closed, so that every request
        // (request-response picks among a peer's connections) goes direct and the relay is
        // freed (a relayed connection beside a direct one is refused: `relayed.rs`).
        let obsolete: Vec<ConnectionId> = if relayed {
            Vec::new()
        } else {
            state.relayed.iter().copied().collect()
        };
        // A direct connection that replaces a relayed one came from a hole punch (both ends
        // see it so, whichever dial it came from), or from dialling a public peer first met
        // through a relay (`direct.rs`): kept open while idle (`keep.rs`), since a punched one
        // could only come back by punching again (the public one costs a ping every 15 s).
        let punched = !obsolete.is_empty();
        if punched {
            state.direct.keep(connection_id);
        }
        let span = state.span.clone();
        let _g = span.enter();
        debug!(%remote, dialer = endpoint.is_dialer(), origin = origin.map(|o| o.name()), relayed, "connection established");
        if punched {
            debug!("keeping the direct connection open while idle: it replaces a relayed one");
            self.swarm
                .behaviour_mut()
                .keep_open
                .keep(peer, connection_id);
        }
        for id in obsolete {
            debug!("closing the relayed connection: a direct one is open");
            self.swarm.close_connection(id);
        }
        if !relayed {
            self.direct_settled(peer);
        }
        if first {
            info!("peer connected");
            self.emit(NetEvent::PeerConnected(peer));
        }
        if was_alone {
            self.backoff.reset();
            // Publish provider records now that someone can store them.
            self.drain_announcements();
        }
    }

    /// Fetches waiting for a direct connection to `peer` go on once it has one and its relayed
    /// connections are closed: a request sent while one is still closing can go over it
    /// (request-response picks among a peer's connections) and fail with it, which lost a
    /// fetch the moment its hole punch succeeded (NAT lab, 2026-12-01).
    pub(super) fn direct_settled(&mut self, peer: PeerId) {
        if self
            .peers
            .get(&peer)
            .is_some_and(|p| !p.direct.is_empty() && p.relayed.is_empty())
        {
            self.with_downloads(|d, io| d.direct_to(io, Instant::now(), peer));
        }
    }

    /// A ping's outcome. libp2p reports a failure only when a connection's pings failed twice
    /// running, and closes nothing itself: such a connection is dead (its path went silent:
    /// a home router rebooted or got a new address and forgot its mappings) and is closed
    /// here, or every request to the peer would wait on it until TCP gives up (about 15
    /// minutes). A peer that does not speak ping is left alone.
    fn on_ping(&mut self, ev: ping::Event) {
        let Err(failure) = ev.result else { return };
        let span = self.span(&ev.peer);
        let _g = span.enter();
        if matches!(failure, ping::Failure::Unsupported) {
            debug!("the peer does not answer pings: {failure}");
            return;
        }
        let Some(p) = self.peers.get_mut(&ev.peer) else {
            return;
        };
        let Some(addr) = p.endpoints.get(&ev.connection).cloned() else {
            return;
        };
        if !p.failed.insert(ev.connection) {
            return;
        }
        info!(
            %addr,
            "a connection to this peer stopped answering pings: closing it as dead ({failure})"
        );
        self.swarm.close_connection(ev.connection);
    }

    pub(super) fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(ev) => self.on_gossip(ev),
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
            BehaviourEvent::Identify(ev) => self.on_identify(ev),
            BehaviourEvent::Mdns(ev) => self.on_mdns(ev),
            BehaviourEvent::Control(ev) => self.on_control(ev),
            BehaviourEvent::Blob(ev) => self.on_blob(ev),
            BehaviourEvent::Ping(ev) => self.on_ping(ev),
            BehaviourEvent::OneRelayed(never)
            | BehaviourEvent::PerSubnet(never)
            | BehaviourEvent::KeepOpen(never) => match never {},
            BehaviourEvent::Dcutr(ev) => self.on_dcutr(ev),
            BehaviourEvent::RelayClient(ev) => self.on_relay_client(ev),
            BehaviourEvent::RelayServer(ev) => self.on_relay_server(ev),
            BehaviourEvent::Autonat(ev) => self.on_autonat(ev),
            BehaviourEvent::AutonatServer(ev) => {
                debug!(client = %ev.client, addr = %ev.tested_addr, ok = ev.result.is_ok(), "AutoNAT: tested a peer's address")
            }
            BehaviourEvent::Upnp(ev) => on_upnp(ev),
            BehaviourEvent::Limits(never) => match never {},
        }
    }

    pub(super) fn on_identify(&mut self, ev: identify::Event) {
        let identify::Event::Received {
            peer_id,
            info,
            connection_id,
        } = ev
        else {
            return;
        };
        let span = self.span(&peer_id);
        let _g = span.enter();
        debug!(agent = %info.agent_version, observed = %info.observed_addr, "identified");
        if let Some(now) =
            self.mappings
                .observed(connection_id, &info.observed_addr, Instant::now())
        {
            match now {
                NatMapping::AddressDependent => warn!(
                    "this node's NAT gives each peer a port of its own (address-dependent mapping, a \"symmetric\" NAT): hole punches cannot succeed, so homes behind NAT are reached only through relays, which carry no blobs; forward a port to this radiator to lift it"
                ),
                other => info!(mapping = ?other, "this node's NAT mapping, as its public peers see it"),
            }
        }
        let kad_proto = StreamProtocol::new(KAD_PROTOCOL);
        let speaks_kad = info.protocols.contains(&kad_proto);
        let tests = StreamProtocol::new(crate::net::autonat::DIAL_REQUEST_PROTOCOL);
        self.swarm
            .behaviour_mut()
            .autonat
            .serves(connection_id, info.protocols.contains(&tests));
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            if self
                .bootstrap
                .iter()
                .any(|a| peer_id_of(a) == Some(peer_id))
            {
                self.relay_bootstrap.insert(peer_id);
            }
            self.maybe_listen_via(peer_id);
        }
        let on_loopback = self
            .peers
            .get(&peer_id)
            .is_some_and(|p| p.endpoints.values().any(is_loopback));
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|a| worth_dialling(a, on_loopback))
            .take(MAX_ADDRS_PER_PEER)
            .collect();
        self.reach_book.listens_at(peer_id, &addrs, Instant::now());
        if speaks_kad {
            self.add_to_table(peer_id, &addrs);
            self.forget_withdrawn_circuits(peer_id, &addrs);
        } else {
            self.not_a_dht_server(peer_id);
        }
        if let Some(p) = self.peers.get_mut(&peer_id) {
            p.agent_version = Some(truncate(info.agent_version, 256));
            p.protocol_version = Some(truncate(info.protocol_version, 256));
            p.listen_addrs = addrs;
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Whether a connection ended because its path broke, not because the peer closed it: an
/// `io::Error` anywhere in its chain of kind `TimedOut` (the kernel's `ETIMEDOUT` among
/// them), or `NetworkUnreachable`/`HostUnreachable` (the home router answered "unreachable"
/// for its packets: its line is down).
fn path_broke(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{HostUnreachable, NetworkUnreachable, TimedOut};
    let mut e = error;
    loop {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), TimedOut | NetworkUnreachable | HostUnreachable) {
                return true;
            }
            // An `io::Error` wrapping another error hides it from `source()`.
            if let Some(inner) = io.get_ref() {
                e = inner;
                continue;
            }
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_broke;
    use libp2p::swarm::ConnectionError;
    use std::io::{Error, ErrorKind};

    /// An error that wraps another, as the connection's layers (noise, yamux) do.
    #[derive(Debug)]
    struct Layer(Error);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "layer: {}", self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_kernel_timeout_under_any_layer_is_a_death_and_a_close_is_not() {
        let dead = |e: Error| path_broke(&ConnectionError::IO(e));
        assert!(dead(Error::from(ErrorKind::TimedOut)));
        assert!(dead(Error::other(Layer(Error::from(ErrorKind::TimedOut)))));
        assert!(dead(Error::other(Layer(Error::other(Layer(Error::from(
            ErrorKind::TimedOut
        )))))));
        // The home router answered "unreachable" for the connection's packets (its line is
        // down): the kernel fails the socket so (NAT lab, 2026-12-06).
        assert!(dead(Error::other(Layer(Error::from(
            ErrorKind::NetworkUnreachable
        )))));
        assert!(dead(Error::from(ErrorKind::HostUnreachable)));
        assert!(!dead(Error::from(ErrorKind::UnexpectedEof)));
        assert!(!dead(Error::other(Layer(Error::from(
            ErrorKind::ConnectionReset
        )))));
        assert!(!path_broke(&ConnectionError::KeepAliveTimeout));
    }
}
