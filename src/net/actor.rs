//! The task that owns the swarm: one `select!` loop over swarm events, commands from
//! [`Network`](super::Network) handles, answers to inbound requests being prepared, store work
//! of blob fetches coming back from the blocking pool, and a one-second maintenance tick
//! (bootstrap redial, Kademlia refresh, fetch deadlines, provider announcements).
//!
//! This task only moves bytes (STYLE rule 14). Decisions about blob fetches are made by the
//! state machine in `download.rs`; every store step of a fetch (checking the outboard,
//! verifying and writing pieces, the final `fsync`) and every store read for serving
//! (`serve.rs`) runs on the blocking pool and reports back by message. The handlers are split
//! by subject into `actor/`: `peers.rs` (swarm events, connections, identify, pruning),
//! `blobs.rs`, `control.rs`, `dht.rs` (Kademlia, mDNS) and `reach.rs` (bootstrap redial,
//! relays, hole punching, AutoNAT, UPnP); this file keeps the loop, the commands, the
//! maintenance tick and gossip.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, ProviderRecord, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    autonat, dcutr, gossipsub, identify, mdns, ping, relay, upnp, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Span};

mod blobs;
mod control;
mod dht;
mod peers;
mod reach;

use self::control::ControlReply;
use self::reach::on_upnp;
use super::behaviour::{build_swarm, Behaviour, BehaviourEvent};
use super::bootstrap::{is_loopback, peer_id_of, without_peer_id, worth_dialling, Backoff};
use super::dials::{DialLog, DialOrigin};
use super::download::{Downloads, Io, Link, StoreDone, StoreJob};
use super::line::{RedialRound, Silence};
use super::mapping::Mappings;
use super::punch::{Direct, Lost, PunchMemory, PunchRetry};
use super::serve::{Served, Server};
use super::work::Board;
use super::{
    dht_role, reach_book::ReachBook, relay_gate::RelayGate, relay_load::RelayLoad,
    table::Diversity, wire::BlobRequest, Command, NatMapping, NetConfig, NetError, NetEvent,
    NetStatus, PeerInfo, Reachability, RelayServed, Topic, KAD_PROTOCOL, MAX_CONTROL_MESSAGE,
    MAX_GOSSIP_DATA,
};
use crate::store::{Store, StoreError};

/// Dials `peer` unless it is connected or being dialled, at `addrs` besides those the
/// behaviours know (Kademlia's routing table and running lookups, identify's cache), and
/// counts the dial under `origin`. The one way the swarm task dials a peer by its id.
fn dial_peer(
    swarm: &mut Swarm<Behaviour>,
    dials: &DialLog,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    origin: DialOrigin,
) {
    if swarm.is_connected(&peer) {
        return;
    }
    let opts = DialOpts::peer_id(peer)
        .addresses(addrs)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build();
    let id = opts.connection_id();
    match swarm.dial(opts) {
        Ok(()) => dials.dialled(origin, id),
        Err(e) => debug!(%peer, origin = origin.name(), "dial not started: {e}"),
    }
}

/// Outbound control requests awaiting an answer.
const MAX_PENDING_REQUESTS: usize = 1024;
/// Dials awaiting their outcome.
const MAX_PENDING_DIALS: usize = 256;
/// Board lookups, and board publications, at once (each made every 20 s at most).
const MAX_WORK_FINDS: usize = 4;
/// Inbound control requests handed to the node layer and not yet answered, per peer / total.
const MAX_INBOUND_CONTROL_PER_PEER: usize = 16;
const MAX_INBOUND_CONTROL: usize = 256;
/// How long the node layer has to answer a control request.
const CONTROL_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent Kademlia queries publishing provider records.
const MAX_ANNOUNCING: usize = 8;
/// Queued provider announcements.
const MAX_ANNOUNCE_QUEUE: usize = super::behaviour::MAX_PROVIDED_KEYS;
/// Addresses remembered per peer (identify listen addrs are untrusted input).
const MAX_ADDRS_PER_PEER: usize = 16;
/// mDNS discoveries acted on per event.
const MAX_MDNS_PER_EVENT: usize = 32;
/// First Kademlia refresh after start; each later start-up refresh waits 4x longer (2, 8,
/// 32, 128 s), while the wait is shorter than both `KAD_STARTUP_MAX` and the configured
/// `rebootstrap_interval`; after that one refresh every `rebootstrap_interval`.
const KAD_FIRST_REFRESH: Duration = Duration::from_secs(2);
/// The start-up refreshes (full bootstraps) end once the next would wait this long or more.
const KAD_STARTUP_MAX: Duration = Duration::from_secs(180);
/// Once the start-up refreshes are over, every this-many-th refresh is a full bootstrap (a
/// lookup per bucket: an hour apart at the default 15 min); the others look up only our own
/// key, which keeps our neighbourhood (the peers that store our provider records and find us
/// for others) fresh at the cost of one lookup. Measured (`docs/scale.md`, "Who re-dials
/// pruned peers"): the per-bucket lookups of a full bootstrap were the whole of an idle
/// radiator's dials, each asking up to k = 20 peers, and grew with the network; after that,
/// the own-key lookups every 5 min were what still grew ("What was left").
const FULL_REFRESH_EVERY: u32 = 4;
/// Relays this node listens through at once while not publicly reachable.
const MAX_RELAYS: usize = 2;
/// Confirmed external addresses remembered.
const MAX_CONFIRMED: usize = 16;
/// How often the node chooses whether it serves the DHT (`dht_role.rs`; counts the table).
const DHT_ROLE_EVERY: Duration = Duration::from_secs(5);
/// How long `wait_listening` waits for listeners to report an address.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// What a Kademlia query was started for.
enum QueryKind {
    Bootstrap,
    /// A lookup of our own key (a light refresh).
    OwnKey,
    Providers(blake3::Hash),
    Announce,
    /// Publishing a record on a board (`work.rs`); its caller waits in `Actor::boards`.
    Post,
    /// A lookup of a board key; its caller waits in `Actor::boards`.
    Find,
}

/// State of one connected peer.
struct PeerState {
    since: SystemTime,
    connections: u32,
    endpoints: HashMap<ConnectionId, Multiaddr>,
    /// Open connections through a relay / direct ones (at most 4 per peer: connection limits).
    relayed: HashSet<ConnectionId>,
    /// Open direct connections, those kept open while idle (`keep.rs`) because they replaced
    /// a relayed one, and whether a hole punch made them (`punch.rs`, `Direct`).
    direct: Direct,
    /// Open connections whose pings failed, being closed as dead (`peers.rs`, `on_ping`).
    failed: HashSet<ConnectionId>,
    /// Failed hole punches and their retry (`punch.rs`).
    punch: PunchRetry,
    /// When the latest relayed connection was established (DCUtR runs once per connection).
    relayed_since: Option<Instant>,
    /// When the first of its open connections was established, and the last hearth request
    /// or answer either way (control or blob): what connection pruning weighs.
    connected_at: Instant,
    last_used: Option<Instant>,
    /// Open connections our Kademlia dialled (for a lookup): with one of them open and no
    /// hearth traffic, the peer is a lookup peer to pruning (`prune.rs`).
    kad_dialled: HashSet<ConnectionId>,
    /// `NetEvent::PeerSettled` was sent for this connected spell.
    settled: bool,
    listen_addrs: Vec<Multiaddr>,
    /// The addresses DCUtR dialled its punched connections at this spell (the peer's NAT
    /// mappings; at most `MAX_ADDRS_PER_PEER`): kept out of Kademlia's routing table unless
    /// advertised (`table.rs`, `punched_only`).
    punched_addrs: Vec<Multiaddr>,
    agent_version: Option<String>,
    protocol_version: Option<String>,
    span: Span,
}

pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    store: Store,
    /// When to listen through a relay (`relay_gate.rs`).
    relay_gate: RelayGate,
    /// Confirmed external direct addresses (no `/p2p-circuit`).
    confirmed: Vec<Multiaddr>,
    /// Relay listeners we opened, by relay.
    relay_listeners: HashMap<PeerId, ListenerId>,
    /// Relays that accepted our reservation.
    relays: HashSet<PeerId>,
    hole_punch_successes: u64,
    hole_punch_failures: u64,
    /// Connections closed since start because their path went silent (`peers.rs`).
    dead_connections: u64,
    /// As a relay server (`None` otherwise): what it serves (`relay_load.rs`).
    relay_server: Option<RelayLoad>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    peers: HashMap<PeerId, PeerState>,
    /// Failed punches of peers that disconnected a moment ago (`punch.rs`).
    punch_memory: PunchMemory,
    /// Peers whose punched connection died, to be reached through a relay again ([`Lost`]).
    lost: Lost,
    /// Bootstrap peers that offer a relay (identify): while this node should listen through
    /// a relay and listens through none, it dials them again (`on_tick`).
    relay_bootstrap: HashSet<PeerId>,
    pending_dials: HashMap<ConnectionId, (Multiaddr, oneshot::Sender<Result<(), NetError>>)>,
    /// Every dial by origin (`dials.rs`), for [`NetStatus::dials`].
    dials: DialLog,
    pending_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, NetError>>>,
    control_replies: FuturesUnordered<BoxFuture<'static, ControlReply>>,
    control_per_peer: HashMap<PeerId, usize>,
    /// Serving blobs to peers (`serve.rs`).
    server: Server,
    /// How peers met lately could be reached, for the order fetches ask providers in.
    reach_book: ReachBook,
    /// What this node's NAT does to its connections, as its peers see it (`mapping.rs`).
    mappings: Mappings,
    /// Fetching blobs from peers (`download.rs`) and the store work of those fetches, run on
    /// the blocking pool (bounded by the fetches and their pipelines).
    downloads: Downloads<OutboundRequestId, QueryId>,
    store_jobs: FuturesUnordered<BoxFuture<'static, Option<StoreDone>>>,
    /// Blobs a fetch just completed, to announce.
    fetched: Vec<blake3::Hash>,
    queries: HashMap<QueryId, QueryKind>,
    /// Who Kademlia's routing table takes (`table.rs`): every insertion asks it first.
    diversity: Diversity,
    announce_queue: VecDeque<blake3::Hash>,
    announcing: usize,
    /// Board publications and lookups in progress (`work.rs`) and who waits for them.
    boards: dht::Boards,
    /// Provider records have been (re)published since the node last had peers.
    announced_with_peers: bool,
    bootstrap: Vec<Multiaddr>,
    backoff: Backoff,
    next_redial: Instant,
    /// The last bootstrap redial's dials: whether they all failed at this node's door.
    redial_round: RedialRound,
    /// Connections out of the home lost to broken paths: whether the line went silent.
    silence: Silence,
    /// Since when (Unix ms) the line has been down: every redial round failed at this node's
    /// door, or went unanswered after it lost its connections out (`Reachability`, `line.rs`).
    line_down_since: Option<u64>,
    /// Kademlia refresh: soon after start (peers learn of each other while the network
    /// forms), then every `rebootstrap_interval`.
    next_kad_bootstrap: Instant,
    /// Connection pruning (`prune.rs`): the watermarks, and when it next runs.
    watermarks: Option<super::Watermarks>,
    next_prune: Instant,
    kad_bootstraps: u32,
    /// Refreshes since the start-up ones (every `FULL_REFRESH_EVERY`-th is a full bootstrap).
    steady_refreshes: u32,
    rebootstrap_interval: Duration,
    listeners_waiting: usize,
    /// The Kademlia mode chosen (`dht_role.rs`, from `dht_client_at`, next at `next_dht_role`;
    /// the start mode once the listeners have reported, `wait_listening`); `None`: no
    /// listeners, libp2p's automatic mode (a client until an address is confirmed).
    dht_mode: Option<kad::Mode>,
    /// What the node has heard of the network for its DHT role (`dht_role::Heard`).
    dht_heard: dht_role::Heard,
    dht_client_at: usize,
    next_dht_role: Instant,
}

impl Actor {
    pub(crate) fn new(
        cfg: NetConfig,
        store: Store,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
    ) -> Result<Self, NetError> {
        let dials = DialLog::default();
        let mut swarm = build_swarm(&cfg, &dials)?;
        let local = *swarm.local_peer_id();
        let mut listeners = 0;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Setup(format!("cannot listen on {addr}: {e}")))?;
            listeners += 1;
        }
        for addr in &cfg.external_addrs {
            // Declared by the operator (a bootstrap node's public address): confirmed now, so
            // a relay server serves at once.
            swarm.add_external_address(addr.clone());
        }
        let mut actor = Self {
            swarm,
            local,
            store: store.clone(),
            relay_gate: RelayGate::new(cfg.relay_client, Instant::now()),
            confirmed: Vec::new(),
            relay_listeners: HashMap::new(),
            relays: HashSet::new(),
            hole_punch_successes: 0,
            hole_punch_failures: 0,
            dead_connections: 0,
            relay_server: cfg.relay_server.as_ref().map(RelayLoad::new),
            commands,
            events,
            peers: HashMap::new(),
            punch_memory: PunchMemory::default(),
            lost: Lost::default(),
            relay_bootstrap: HashSet::new(),
            pending_dials: HashMap::new(),
            dials,
            pending_requests: HashMap::new(),
            control_replies: FuturesUnordered::new(),
            control_per_peer: HashMap::new(),
            server: Server::new(store.clone(), cfg.fault.clone()),
            reach_book: ReachBook::default(),
            mappings: Mappings::default(),
            downloads: Downloads::new(local, cfg.fetch_timeout, cfg.direct_wait),
            store_jobs: FuturesUnordered::new(),
            fetched: Vec::new(),
            queries: HashMap::new(),
            diversity: Diversity::new(cfg.limit_local_networks),
            announce_queue: VecDeque::new(),
            announcing: 0,
            boards: dht::Boards::default(),
            announced_with_peers: false,
            bootstrap: cfg.bootstrap.clone(),
            backoff: Backoff::new(cfg.redial_backoff_max),
            next_redial: Instant::now(),
            redial_round: RedialRound::default(),
            silence: Silence::default(),
            line_down_since: None,
            next_kad_bootstrap: Instant::now() + KAD_FIRST_REFRESH,
            watermarks: cfg.peer_watermarks,
            next_prune: Instant::now() + crate::net::prune::every(cfg.peer_watermarks),
            kad_bootstraps: 0,
            steady_refreshes: 0,
            rebootstrap_interval: cfg.rebootstrap_interval,
            listeners_waiting: listeners,
            dht_mode: (!cfg.listen.is_empty()).then_some(kad::Mode::Client),
            dht_heard: dht_role::Heard::new(Instant::now()),
            dht_client_at: cfg.dht_client_at,
            next_dht_role: Instant::now() + DHT_ROLE_EVERY,
        };
        for addr in &cfg.bootstrap {
            match peer_id_of(addr) {
                Some(peer) if peer != local => {
                    actor.add_trusted_to_table(peer, without_peer_id(addr))
                }
                Some(_) => {}
                None => {
                    warn!(%addr, "bootstrap address has no /p2p/<peer id>; dialled but not added to Kademlia")
                }
            }
        }
        actor.provide_local_blobs()?;
        Ok(actor)
    }

    /// Drive the swarm until every listener reported an address or failed (bounded).
    pub(crate) async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
        while self.listeners_waiting > 0 {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(ev) => self.on_swarm_event(ev),
                Err(_) => {
                    warn!("listeners did not report an address in time");
                    break;
                }
            }
        }
        self.start_dht_mode();
    }

    pub(crate) async fn run(mut self) {
        info!(peer = %self.local, "network started");
        self.redial_bootstrap();
        if !self.bootstrap.is_empty() {
            self.kad_bootstrap();
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                    // Every handle dropped: nobody can use the network any more.
                    None => break None,
                },
                Some(r) = self.control_replies.next(), if !self.control_replies.is_empty() => {
                    self.on_control_reply(r)
                }
                Some(s) = self.server.serving.next(), if !self.server.serving.is_empty() => {
                    self.on_blob_served(s)
                }
                Some(done) = self.store_jobs.next(), if !self.store_jobs.is_empty() => {
                    if let Some(done) = done {
                        self.with_downloads(|d, io| d.on_stored(io, Instant::now(), done));
                    }
                }
                _ = tick.tick() => self.on_tick(),
            }
        };
        info!(peer = %self.local, "network stopping");
        // Pending callers see `NetError::Stopped` when their reply senders drop with `self`.
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn span(&self, peer: &PeerId) -> Span {
        self.peers
            .get(peer)
            .map(|p| p.span.clone())
            .unwrap_or_else(Span::none)
    }

    fn emit(&self, ev: NetEvent) -> bool {
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!("node layer is not keeping up; network event dropped");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    // ---------------------------------------------------------------- commands

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::ReportValidation { id, from, verdict } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, verdict.into());
            }
            Command::ApplicationScore { peer, score } => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer, score);
            }
            Command::Request {
                dial,
                peer,
                data,
                reply,
            } => {
                if self.pending_requests.len() >= MAX_PENDING_REQUESTS {
                    let _ = reply.send(Err(NetError::Busy("control requests")));
                    return;
                }
                if !dial && !self.peers.contains_key(&peer) {
                    let _ = reply.send(Err(NetError::NotConnected(peer)));
                    return;
                }
                let id = self.swarm.behaviour_mut().control.send_request(&peer, data);
                self.pending_requests.insert(id, reply);
                self.touch(&peer);
            }
            Command::FetchBlob {
                hash,
                hint,
                max_len,
                reply,
            } => {
                self.with_downloads(|d, io| d.start(io, Instant::now(), hash, hint, max_len, reply))
            }
            Command::Provide { hash, reply } => {
                let res = match self.store.has(&hash) {
                    Ok(true) => {
                        self.add_local_provider(hash);
                        self.drain_announcements();
                        Ok(())
                    }
                    Ok(false) => Err(NetError::NotHeld(hash.to_hex().to_string())),
                    Err(e) => Err(NetError::Store(e.to_string())),
                };
                let _ = reply.send(res);
            }
            Command::Post { board, done } => self.post(board, done),
            Command::Withdraw(board) => self.withdraw(board),
            Command::Find { board, reply } => self.find(board, reply),
            Command::Recheck { reply } => {
                let _ = reply.send(self.recheck());
            }
            Command::Dial { addr, reply } => {
                if self.pending_dials.len() >= MAX_PENDING_DIALS {
                    let _ = reply.send(Err(NetError::Busy("dials")));
                    return;
                }
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.dialled(DialOrigin::Command, id);
                        self.pending_dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dial {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Status { reply } => {
                let (routing_peers, routing_refused) = self.table_counts();
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let boards = [Board::Work, Board::Want].map(|b| store.board_count(b));
                let work_records_refused = store.board_refused();
                let (blob_records, blob_records_refused) = store.blob_counts();
                let _ = reply.send(NetStatus {
                    peer_id: self.local,
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    connected_peers: self.peers.len(),
                    chunks_served: self.server.chunks_served,
                    chunks_fetched: self.downloads.chunks_fetched,
                    reachability: self.reachability(),
                    dials: self.dials.counts(),
                    work_records: boards[0],
                    want_records: boards[1],
                    work_records_refused,
                    work_lookups: self.boards.lookups.0,
                    want_lookups: self.boards.lookups.1,
                    blob_records,
                    blob_records_refused,
                    routing_peers,
                    routing_refused,
                    inbound_refused: self.swarm.behaviour().per_subnet.refused,
                    relay: self.relay_served(),
                });
            }
            Command::Peers { reply } => {
                let gs = &self.swarm.behaviour().gossipsub;
                let list = self
                    .peers
                    .iter()
                    .map(|(id, p)| {
                        let mut addresses: Vec<Multiaddr> = p.endpoints.values().cloned().collect();
                        for a in &p.listen_addrs {
                            if !addresses.contains(a) {
                                addresses.push(a.clone());
                            }
                        }
                        PeerInfo {
                            peer_id: *id,
                            addresses,
                            agent_version: p.agent_version.clone(),
                            protocol_version: p.protocol_version.clone(),
                            connected_since: p.since,
                            gossip_score: gs.peer_score(id),
                        }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            // Handled by the run loop.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        let len = data.len();
        if len > MAX_GOSSIP_DATA {
            return Err(NetError::MessageTooLarge {
                len,
                max: MAX_GOSSIP_DATA,
            });
        }
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.ident(), data)
        {
            Ok(_) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetError::NoPeersSubscribed(topic))
            }
            Err(gossipsub::PublishError::Duplicate) => Err(NetError::Duplicate),
            Err(gossipsub::PublishError::MessageTooLarge) => Err(NetError::MessageTooLarge {
                len,
                max: MAX_GOSSIP_DATA,
            }),
            Err(e) => Err(NetError::Publish(e.to_string())),
        }
    }

    // ---------------------------------------------------------------- tick

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.listen_via_held_relays();
        // Redial bootstrap peers while alone, or while this node should listen through a relay
        // and its connection to every relay it knew died (its home router rebooted or got a
        // new address: other homes reach it only through a relay, and punch from there), with
        // capped exponential backoff.
        let relay_lost = self.relay_lost();
        if (self.peers.is_empty() || relay_lost)
            && !self.bootstrap.is_empty()
            && now >= self.next_redial
        {
            if relay_lost && !self.peers.is_empty() {
                info!("listening through no relay: dialling the bootstrap nodes again");
                // A relay still connected by another connection (the one listened through
                // died) is listened through again at once; the others are dialled.
                self.listen_via_connected_relays();
            }
            self.redial_bootstrap();
        }
        if now >= self.next_kad_bootstrap {
            let delay = KAD_FIRST_REFRESH
                .saturating_mul(4u32.saturating_pow(self.kad_bootstraps.min(8)))
                .min(self.rebootstrap_interval);
            self.kad_bootstraps = self.kad_bootstraps.saturating_add(1);
            self.next_kad_bootstrap = now + delay;
            if delay < self.rebootstrap_interval.min(KAD_STARTUP_MAX) {
                // Start-up: the network is forming.
                self.kad_bootstrap();
            } else {
                self.steady_refreshes = self.steady_refreshes.wrapping_add(1);
                if self.steady_refreshes.is_multiple_of(FULL_REFRESH_EVERY) {
                    self.kad_bootstrap();
                } else {
                    self.kad_refresh_own_key();
                }
            }
        }
        if now >= self.next_dht_role {
            self.next_dht_role = now + DHT_ROLE_EVERY;
            self.choose_dht_mode();
        }
        if now >= self.next_prune {
            self.next_prune = now + crate::net::prune::every(self.watermarks);
            self.prune_peers(now);
        }
        self.report_settled(now);
        self.retry_hole_punches(now);
        self.bring_back_lost(now);
        // Fetch deadlines; providers reachable only through a relay for too long.
        self.with_downloads(|d, io| d.tick(io, now));
        self.drain_announcements();
    }

    fn on_gossip(&mut self, ev: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = ev
        else {
            if let gossipsub::Event::GossipsubNotSupported { peer_id } = ev {
                debug!(peer = %peer_id, "peer does not speak gossipsub");
            }
            return;
        };
        let span = self.span(&propagation_source);
        let _g = span.enter();
        let topic = Topic::from_hash(&message.topic);
        let verdict = match topic {
            None => Some(gossipsub::MessageAcceptance::Reject),
            Some(_) if message.data.len() > MAX_GOSSIP_DATA => {
                warn!(
                    len = message.data.len(),
                    "oversized gossip rejected (counts against the sender)"
                );
                Some(gossipsub::MessageAcceptance::Reject)
            }
            Some(topic) => {
                let delivered = self.emit(NetEvent::Gossip {
                    topic,
                    id: message_id.clone(),
                    source: message.source,
                    propagation_source,
                    data: message.data,
                });
                // Not delivered: drop without penalty, the sender did nothing wrong.
                (!delivered).then_some(gossipsub::MessageAcceptance::Ignore)
            }
        };
        if let Some(v) = verdict {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, v);
        }
    }
}
