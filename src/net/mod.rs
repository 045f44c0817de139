//! # net: the libp2p layer of a radiator
//!
//! Owns the libp2p [`Swarm`](libp2p::Swarm) and everything that moves bytes between homes:
//! discovery (mDNS on the LAN, Kademlia seeded by bootstrap peers), announcements over
//! gossipsub, an opaque request-response *control* protocol for the layers above, and the
//! verified exchange of content-addressed blobs out of [`crate::store`].
//!
//! It must not know what the bytes mean: gossip payloads and control requests are opaque here
//! and decoded by the node layer, which tells this layer whether a gossip message was valid
//! ([`Network::report_validation`]). The only messages this module decodes itself are its own
//! blob-protocol messages ([`wire`]).
//!
//! Size: about 1 000 lines, most of them the public surface (config with its documented
//! defaults, events, errors, status, one method per command, the work and want board ones since
//! 2026-12-03, the DHT store's counts since 2026-12-04, the relay's load since 2026-12-05,
//! its refusals by reason since 2026-12-06, its rate limits, AutoNAT's given-up dial-backs
//! and unreachable addresses, the reachability's summary and the recheck on request since
//! 2026-12-07); the work is in `actor` and its parts.
//!
//! ## Shape (rust-libp2p `examples/file-sharing`)
//!
//! One task (spawned by [`spawn`]) owns the swarm. Everyone else holds a cloneable
//! [`Network`] handle that sends a `Command` over a bounded channel and awaits a `oneshot`
//! reply. Events the layer above must act on arrive on the bounded [`NetEvent`] receiver.
//! Pending work is kept in maps keyed by query id / request id, each with a cap.
//!
//! ## Rules for callers
//!
//! * Every [`NetEvent::Gossip`] **must** be answered with exactly one
//!   [`Network::report_validation`]: gossipsub runs with manual validation, so a message is
//!   forwarded to other peers only after `Accept`, and `Reject` counts against the peer that
//!   sent it (peer scoring). An unanswered message is dropped from the cache after a few
//!   heartbeats and never forwarded.
//! * A gossip payload is at most [`MAX_GOSSIP_DATA`] bytes. Anything larger is the caller's
//!   business: store it as a blob ([`crate::store::Store::put_bytes`]), [`Network::provide`]
//!   it and gossip its blake3 hash; receivers call [`Network::fetch_blob`].
//! * Message ids are blake3(author PeerId ‖ payload), so one author publishing identical
//!   bytes twice is refused as [`NetError::Duplicate`] (payloads carry a timestamp), while two
//!   authors' identical payloads are distinct messages.
//! * [`NetError::NoPeersSubscribed`] from [`Network::publish`] is not fatal: nobody is
//!   listening yet. [`NetError::is_no_peers`] tells it apart.
//!
//! `docs/protocol.md` specifies every protocol id, byte layout and limit used here.

mod actor;
mod autonat;
mod autonat_server;
mod behaviour;
mod bootstrap;
mod candidates;
mod codec;
pub mod dht_role;
mod dials;
pub mod direct;
mod download;
mod keep;
mod line;
#[cfg(test)]
mod lookup_tests;
mod mapping;
mod prune;
mod punch;
mod reach_book;
mod relay_gate;
mod relay_load;
mod relayed;
mod remote;
mod serve;
pub mod subnets;
pub mod table;
pub mod wire;
pub mod work;
mod wrapped;

pub use dials::{DialCounts, DialOrigin};
pub use mapping::NatMapping;
pub use prune::{Watermarks, SETTLE};

use std::fmt;
use std::time::{Duration, SystemTime};

use libp2p::gossipsub::{IdentTopic, MessageAcceptance, TopicHash};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use bootstrap::{default_bootstrap, parse_peer_list, DEFAULT_PEER_LIST};
pub use libp2p::gossipsub::MessageId;

use crate::store::Store;

/// Kademlia protocol id. Nodes with a listen address serve it unless [`dht_role`] says otherwise.
pub const KAD_PROTOCOL: &str = "/hearth/kad/1.0.0";
/// Request-response protocol carrying opaque control messages for the layers above.
pub const CONTROL_PROTOCOL: &str = "/hearth/control/1";
/// Request-response protocol for verified blob exchange ([`wire`]).
pub const BLOB_PROTOCOL: &str = "/hearth/blob/1";
/// Identify protocol version string; peers with another major version are still accepted,
/// the field is informational.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/hearth/1.0.0";

/// Largest gossip payload (bytes) this node publishes or accepts. A received message over
/// this size is rejected (and counts against its sender); see the module rules.
pub const MAX_GOSSIP_DATA: usize = 64 * 1024;
/// Largest gossipsub frame on the wire (payload plus signature, topic and control data).
/// Frames over this size are dropped by the framing layer before they are decoded.
pub const GOSSIP_MAX_TRANSMIT: usize = 2 * MAX_GOSSIP_DATA;
/// Largest control request or response (bytes, excluding the 4-byte length prefix).
pub const MAX_CONTROL_MESSAGE: usize = 256 * 1024;

/// Capacity of the command channel from [`Network`] handles to the swarm task.
const COMMAND_CHANNEL: usize = 256;
/// Capacity of the [`NetEvent`] channel to the node layer. When it is full, gossip is
/// answered `Ignore` and control requests are dropped rather than blocking the swarm.
const EVENT_CHANNEL: usize = 1024;

/// Gossipsub topics of hearth. The wire names carry a version suffix.
///
/// Job announcements, heat demand and receipts are not gossiped: each travels as a control
/// message between the two nodes it concerns, so what a radiator receives does not grow with
/// the size of the network (issue 14; `docs/protocol.md`, "How work and heat demand travel").
/// Gossip is left for what must be public: coordinators' receipt commitments, and fraud
/// evidence, which every coordinator needs to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// `hearth/commitments/1`: coordinators' signed Merkle roots over the receipts they
    /// countersigned (`docs/receipts.md`). Every node may publish; only nodes that audit
    /// (bootstrap nodes) subscribe, so radiators do not receive everyone's commitments.
    Commitments,
    /// `hearth/evidence/1`: fraud evidence (`docs/protocol.md` §6.5): two signed claims of one
    /// shard that a coordinator's vote set against each other. Every node subscribes; the
    /// node layer decides what it means (`jobs::trust::evidence`).
    Evidence,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 2] = [Topic::Commitments, Topic::Evidence];

    /// The gossipsub topic string.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Commitments => "hearth/commitments/1",
            Topic::Evidence => "hearth/evidence/1",
        }
    }

    fn ident(self) -> IdentTopic {
        IdentTopic::new(self.name())
    }

    fn from_hash(hash: &TopicHash) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == hash.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The node layer's judgement of a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it to the mesh.
    Accept,
    /// Invalid (undecodable, bad signature, ...): drop it and penalise the sender.
    Reject,
    /// Valid but unwanted (stale, duplicate by content): drop it without penalty.
    Ignore,
}

impl From<Verdict> for MessageAcceptance {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        }
    }
}

/// Deliberate misbehaviour, for tests that need a dishonest peer. Plain config rather than
/// `cfg(test)` because integration tests are a separate crate. Never set it in production.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    /// Serve blob chunks with their first byte flipped (the outboard stays correct).
    pub corrupt_chunks: bool,
    /// With `corrupt_chunks`: chunks below this index are served intact.
    pub corrupt_from_chunk: u32,
}

/// Configuration of the network layer.
#[derive(Clone)]
pub struct NetConfig {
    /// The node's identity. The PeerId derives from it; keep it stable across restarts.
    pub keypair: Keypair,
    /// Addresses to listen on. Default: `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`.
    /// A node with at least one listen address runs Kademlia in server mode unless it is
    /// not publicly reachable in a network with enough public servers ([`dht_role`]).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, each ending in `/p2p/<peer id>`. Default: empty (see
    /// [`default_bootstrap`] for the shipped list).
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS. Default: `true`.
    pub mdns: bool,
    /// Maximum established connections in total. Default: 128.
    pub max_connections: u32,
    /// Close a connection that no protocol uses for this long. Default: 60 s.
    pub idle_timeout: Duration,
    /// Identify agent version. Default: `hearth/<crate version>`.
    pub agent_version: String,
    /// How often Kademlia's routing table is refreshed once the start-up refreshes are over
    /// (a lookup of the node's own key; every fourth time a full bootstrap). Default: 15 min,
    /// as BitTorrent's mainline DHT refreshes an unused bucket (BEP 5); libp2p-kad's 5 min
    /// made the refresh an idle radiator's largest cost that grows with the network
    /// (`docs/scale.md`).
    pub rebootstrap_interval: Duration,
    /// Cap of the exponential backoff (from 1 s) for redialling bootstrap peers while the
    /// node has no peers. Default: 5 min.
    pub redial_backoff_max: Duration,
    /// Give up a blob fetch after this long. Default: 10 min.
    pub fetch_timeout: Duration,
    /// Timeout of one control or blob request. Default: 30 s.
    pub request_timeout: Duration,
    /// How often each connection is pinged, and how long a ping may take. A connection whose
    /// pings fail twice running is closed as dead (`actor/peers.rs`): a path that went silent
    /// (a home router that rebooted or got a new public address forgets its mappings and says
    /// nothing) would otherwise hold it open, and every request to the peer would wait on it,
    /// until TCP gives up after about 15 minutes. Default: libp2p's 15 s and 20 s, so a dead
    /// connection is closed within about a minute.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Addresses at which this node is known to be reachable from the internet (a bootstrap
    /// node's public address). They are used as confirmed external addresses at once, without
    /// waiting for AutoNAT; a relay server only serves once it has one. Default: none.
    pub external_addrs: Vec<Multiaddr>,
    /// Serve as a circuit relay v2 for nodes behind NAT, with these limits. Default: off
    /// (the node layer turns it on for bootstrap nodes).
    pub relay_server: Option<RelayLimits>,
    /// Listen through relays (bootstrap peers that offer it) while no direct address of this
    /// node is confirmed reachable. Default: `true`.
    pub relay_client: bool,
    /// Ask the home router for a port mapping with UPnP IGD. Default: `false`.
    pub upnp: bool,
    /// Peers at public addresses in the routing table from which a node with listeners but
    /// no confirmed direct address runs Kademlia as a client (answers no lookups, stays out of
    /// others' tables), until fewer than half as many remain ([`dht_role`]). Default:
    /// [`dht_role::DEFAULT_CLIENT_AT`] (20); 0: a client whenever not publicly reachable.
    pub dht_client_at: usize,
    /// How long a blob fetch waits for a direct connection to a provider it only reaches
    /// through a relay (hole punching in progress) before trying another provider.
    /// Default: 30 s.
    pub direct_wait: Duration,
    /// Connected peers kept when unused: above `high` the least used unprotected peers are
    /// disconnected down to `low` ([`Watermarks`], `src/net/prune.rs`). `None` keeps every
    /// connection (bootstrap nodes: they serve newcomers). Default [`Watermarks::RADIATOR`].
    pub peer_watermarks: Option<Watermarks>,
    /// Topics this node subscribes to (it may publish on any). Default: every topic
    /// ([`Topic::ALL`]); the node layer subscribes radiators to none of the audit topics.
    pub topics: Vec<Topic>,
    /// Share out work keys' slots, blob records, the routing table and inbound connections
    /// among loopback and private networks by /24 and /48, as among public ones
    /// ([`work::subnet_of`]). Default: `false`: loopback is not limited (many nodes on one
    /// machine are a lab, a test or the demo) and on a private network each host counts as a
    /// network of its own (a household's LAN, a docker testnet: every machine a neighbour, one
    /// machine still one). Tests whose nodes all share loopback turn it on to see the limits.
    pub limit_local_networks: bool,
    /// Test-only misbehaviour. Default: none.
    #[doc(hidden)]
    pub fault: FaultInjection,
}

/// What a relay server lets one relayed connection carry, and how many it serves. A relayed
/// connection is for coordinating a hole punch and for small control messages; blobs never
/// cross it (see `docs/operations.md`, "Running a relay").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations (nodes listening through this relay) at once. Default: 256.
    pub max_reservations: usize,
    /// Relayed connections at once. Default: 64.
    pub max_circuits: usize,
    /// Relayed connections at once per source or destination peer. Default: 8.
    pub max_circuits_per_peer: usize,
    /// A relayed connection is closed after this long. Default: 2 min (libp2p's default).
    pub max_circuit_duration: Duration,
    /// A relayed connection is closed after carrying this many bytes (both directions).
    /// Default: 1 MiB (libp2p's default is 128 KiB, less than one 256 KiB control message).
    pub max_circuit_bytes: u64,
    /// Circuits one source peer may ask for. Default: libp2p's, 30 at once and one more
    /// every 2 min.
    pub circuit_rate_per_peer: RelayRate,
    /// Circuits one source IP address may ask for. Default: libp2p's, 60 at once and one more
    /// a minute.
    pub circuit_rate_per_ip: RelayRate,
}

/// A token bucket (libp2p's relay rate limiter): `burst` at once, one more every `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayRate {
    pub burst: std::num::NonZeroU32,
    pub every: Duration,
}

impl RelayRate {
    /// `burst` at once, one more every `every_secs` seconds.
    pub fn new(burst: std::num::NonZeroU32, every_secs: std::num::NonZeroU64) -> Self {
        RelayRate {
            burst,
            every: Duration::from_secs(every_secs.get()),
        }
    }
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 256,
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(120),
            max_circuit_bytes: 1 << 20,
            circuit_rate_per_peer: RelayRate::new(
                std::num::NonZeroU32::new(30).expect("30 > 0"),
                std::num::NonZeroU64::new(120).expect("120 > 0"),
            ),
            circuit_rate_per_ip: RelayRate::new(
                std::num::NonZeroU32::new(60).expect("60 > 0"),
                std::num::NonZeroU64::new(60).expect("60 > 0"),
            ),
        }
    }
}

impl NetConfig {
    /// Production defaults (see each field) for the given identity.
    pub fn new(keypair: Keypair) -> Self {
        let listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Self {
            keypair,
            listen,
            bootstrap: Vec::new(),
            mdns: true,
            max_connections: 128,
            idle_timeout: Duration::from_secs(60),
            agent_version: format!("hearth/{}", env!("CARGO_PKG_VERSION")),
            rebootstrap_interval: Duration::from_secs(900),
            redial_backoff_max: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(20),
            external_addrs: Vec::new(),
            relay_server: None,
            relay_client: true,
            upnp: false,
            dht_client_at: dht_role::DEFAULT_CLIENT_AT,
            direct_wait: Duration::from_secs(30),
            peer_watermarks: Some(Watermarks::RADIATOR),
            topics: Topic::ALL.to_vec(),
            limit_local_networks: false,
            fault: FaultInjection::default(),
        }
    }

    /// For tests and benchmarks: listen on loopback TCP with an OS-chosen port, mDNS off.
    pub fn loopback(keypair: Keypair) -> Self {
        let mut cfg = Self::new(keypair);
        cfg.listen = "/ip4/127.0.0.1/tcp/0".parse().into_iter().collect();
        cfg.mdns = false;
        cfg
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Errors of the network layer, worded for the person reading the log or the API answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// Nobody subscribed to the topic is connected; the message was not sent. Not fatal.
    #[error("no connected peer listens on {0} yet; the message was not sent")]
    NoPeersSubscribed(Topic),
    /// The payload is over [`MAX_GOSSIP_DATA`].
    #[error("the message is {len} bytes, over the {max}-byte gossip limit; store it as a blob and announce its hash")]
    MessageTooLarge { len: usize, max: usize },
    /// Identical bytes were already published or received recently.
    #[error("this exact message was already sent recently")]
    Duplicate,
    /// Gossipsub refused the message for another reason.
    #[error("the message could not be published: {0}")]
    Publish(String),
    /// A control request is over [`MAX_CONTROL_MESSAGE`].
    #[error("the request is {len} bytes, over the {max}-byte limit")]
    RequestTooLarge { len: usize, max: usize },
    /// [`Network::request_if_connected`] to a peer not connected: nothing was sent.
    #[error("peer {0} is not connected; the request was not sent")]
    NotConnected(PeerId),
    /// A request to a peer failed (unreachable, timed out, closed, refused).
    #[error("peer {peer} did not answer: {reason}")]
    Request { peer: PeerId, reason: String },
    /// No peer could supply a verified copy of the blob.
    #[error("no reachable peer could supply blob {0}")]
    BlobUnavailable(String),
    /// The only provider(s) left are reachable through a relay only, and hole punching did
    /// not give a direct connection. Blobs never cross a relay.
    #[error("blob {hash}: only a relayed connection to {peer}; hole punch failed {failures} times (blobs are only fetched over direct connections)")]
    RelayedOnly {
        hash: String,
        peer: PeerId,
        failures: u32,
    },
    /// The only provider(s) left are reachable through a relay only, and this node's NAT
    /// gives each peer a port of its own (`mapping.rs`), so no hole punch can succeed.
    #[error("blob {hash}: only a relayed connection to {peer}, and this node's NAT gives each peer a port of its own (symmetric NAT), so no hole punch can give a direct one (blobs are only fetched over direct connections; a port forwarded to this radiator lifts it)")]
    NoPunch { hash: String, peer: PeerId },
    /// The blob is longer than the caller accepts; none of its bytes was fetched.
    #[error(
        "blob {hash} is {len} bytes, over this radiator's limit of {max} bytes; it was not fetched"
    )]
    BlobTooLarge { hash: String, len: u64, max: u64 },
    /// The blob is not in the local store, so it cannot be provided.
    #[error("blob {0} is not in the local store, so it cannot be offered to peers")]
    NotHeld(String),
    /// The local content store failed.
    #[error("the local content store failed: {0}")]
    Store(String),
    /// The store has no room for the blob: its quota or the free space it keeps on its disk
    /// (`StoreError::QuotaExceeded`, `StoreError::DiskLow`). Nothing of it was fetched.
    #[error("{0}")]
    NoRoom(String),
    /// Dialling an address failed.
    #[error("could not connect to {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    /// A line of a bootstrap peer list is not a usable address.
    #[error("peer list line {line}: {reason}")]
    PeerList { line: usize, reason: String },
    /// Too many operations of this kind are already in progress.
    #[error("too many {0} in progress; try again shortly")]
    Busy(&'static str),
    /// The operation did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The network could not be started.
    #[error("the network could not be started: {0}")]
    Setup(String),
    /// The swarm task has stopped (shutdown or crash).
    #[error("the network has stopped")]
    Stopped,
}

impl NetError {
    /// True for [`NetError::NoPeersSubscribed`], which callers may treat as "sent to nobody".
    pub fn is_no_peers(&self) -> bool {
        matches!(self, NetError::NoPeersSubscribed(_))
    }
}

/// What the node layer receives from the network.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message awaiting validation: answer with [`Network::report_validation`]
    /// using `id` and `propagation_source`.
    Gossip {
        topic: Topic,
        id: MessageId,
        /// The signing author (always set: messages are signed and checked strictly).
        source: Option<PeerId>,
        /// The peer that forwarded it to us.
        propagation_source: PeerId,
        data: Vec<u8>,
    },
    /// A control request. Send at most [`MAX_CONTROL_MESSAGE`] bytes on `reply`; dropping
    /// `reply` closes the peer's stream without an answer.
    ControlRequest {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// The first connection to a peer was established.
    PeerConnected(PeerId),
    /// A peer has stayed connected without a break for `Watermarks::settle` (30 s on a
    /// radiator; [`SETTLE`] without pruning): a peer this node holds, not one a Kademlia lookup
    /// touched for a few seconds. Reported once per connected spell. Per-peer work the node
    /// starts on its own (the fraud-evidence pull) waits for this: started on every connection,
    /// it made each lookup peer a peer in use, held for the whole grace period (issue 14).
    PeerSettled(PeerId),
    /// The last connection to a peer was closed.
    PeerDisconnected(PeerId),
}

/// A snapshot of the node's network state.
#[derive(Debug, Clone, Serialize)]
pub struct NetStatus {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub connected_peers: usize,
    /// Blob chunks served to peers since start.
    pub chunks_served: u64,
    /// Verified blob chunks received from peers since start.
    pub chunks_fetched: u64,
    /// Whether and how other homes can reach this node.
    pub reachability: Reachability,
    /// Dials since start by who asked for them, and connections established (`dials.rs`).
    pub dials: DialCounts,
    /// Live work records (`work.rs`) this node holds as a DHT node, its own included.
    pub work_records: usize,
    /// Live want records (radiators that want heat and were offered no work) likewise.
    pub want_records: usize,
    /// Work and want records peers sent that this node refused since start: the key was
    /// full, or the sender's network already held its share of it.
    pub work_records_refused: u64,
    /// Lookups of the work board (a cold radiator looking for coordinators) and of the want
    /// board (a coordinator looking for cold radiators) this node started since start.
    pub work_lookups: u64,
    pub want_lookups: u64,
    /// Blob provider records this node holds for other nodes (`remote.rs`), and those it
    /// refused since start (bounds reached).
    pub blob_records: usize,
    pub blob_records_refused: u64,
    /// Peers in Kademlia's routing table, and those kept out of it since start because their
    /// subnet held its share of their bucket or of the table (`table.rs`).
    pub routing_peers: usize,
    pub routing_refused: u64,
    /// Connections peers opened to this node refused since start because their subnet held
    /// its share of them (`subnets.rs`).
    pub inbound_refused: u64,
    /// What this node serves as a circuit relay; `None` unless it is one (bootstrap nodes).
    pub relay: Option<RelayServed>,
}

/// A relay server's load (`NetConfig::relay_server`): what its operator watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayServed {
    /// Peers holding a reservation now (listening through this relay; at most
    /// `RelayLimits::max_reservations` reservations).
    pub reservations: usize,
    /// Relayed connections open now (at most `RelayLimits::max_circuits`), and opened since
    /// start.
    pub circuits: u64,
    pub circuits_total: u64,
    /// Reservations and relayed connections refused since start (a limit was reached, or the
    /// destination had no reservation): the sum of `refused`.
    pub refused_total: u64,
    /// Absent from older nodes.
    #[serde(default)]
    pub refused: RelayRefusals,
}

/// Why a relay server refused reservations and relayed connections, counted since start. The
/// limit behind a refusal is told from the relay's counts at the time (`relay_load.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRefusals {
    /// A circuit to a peer holding no reservation here (an address of a circuit it gave up,
    /// or of another relay's).
    pub no_reservation: u64,
    /// `RelayLimits::max_circuits` were open.
    pub circuits_full: u64,
    /// The asking peer was an end of more than `RelayLimits::max_circuits_per_peer` circuits.
    pub peer_circuits_full: u64,
    /// `RelayLimits::max_reservations` were held.
    pub reservations_full: u64,
    /// The destination did not take the circuit (it refused it, as a home already holding a
    /// relayed or direct connection to the asking peer does, or the relay could not reach it).
    /// Absent from older nodes.
    #[serde(default)]
    pub destination_failed: u64,
    /// libp2p's rate limiters (per source peer and per source IP address; reservations also
    /// four per peer at once).
    pub rate_limited: u64,
    /// Any other answer (a malformed request, a denied permission).
    pub other: u64,
}

impl RelayRefusals {
    pub fn total(&self) -> u64 {
        self.no_reservation
            + self.circuits_full
            + self.peer_circuits_full
            + self.reservations_full
            + self.destination_failed
            + self.rate_limited
            + self.other
    }
}

/// How this node can be reached, and how its connections through relays fared.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reachability {
    /// Direct addresses confirmed reachable from outside (AutoNAT, configuration or UPnP).
    /// Empty: behind NAT (or not yet tested; [`Reachability::unreachable_addrs`] tells).
    pub confirmed_addrs: Vec<Multiaddr>,
    /// Addresses AutoNAT last found not reachable from outside, most recent last (at most
    /// 16): the address a home router maps this node to, when it is behind NAT. Empty with
    /// no confirmed address: not tested yet.
    #[serde(default)]
    pub unreachable_addrs: Vec<Multiaddr>,
    /// Relays this node holds a reservation with: other homes reach it through them.
    pub relays: Vec<PeerId>,
    /// Peers connected only through a relay right now.
    pub relayed_peers: Vec<PeerId>,
    /// Connected peers whose direct connection came from hole punching (DCUtR).
    pub hole_punched_peers: Vec<PeerId>,
    /// Hole punches started, succeeded and given up since start (a failure is reported
    /// after libp2p's 3 dial attempts).
    pub hole_punch_attempts: u64,
    pub hole_punch_successes: u64,
    pub hole_punch_failures: u64,
    /// Connections closed since start because their path went silent or broke: their pings
    /// failed twice running, or the kernel aborted them (data unacknowledged for 45 s, or the
    /// home router answered "unreachable"). A home router that rebooted, lost its line or got
    /// a new address shows here.
    #[serde(default)]
    pub dead_connections: u64,
    /// Since when (Unix ms) every redial of the bootstrap nodes has failed at this node's own
    /// door ("network unreachable": the home's line or router is down), or gone unanswered
    /// after the node lost its connections out of the home to broken paths (a router that
    /// drops packets while its line is down; `line.rs`), while the node tries again every 5 s;
    /// `None` once a dial is answered or connects, or a relay takes it.
    #[serde(default)]
    pub line_down_since_ms: Option<u64>,
    /// This node only uses the DHT (Kademlia client mode): it is not publicly reachable and
    /// its routing table holds enough public servers (`dht_role.rs`). `false`: it answers
    /// other nodes' lookups and stores their records (server mode).
    #[serde(default)]
    pub dht_client: bool,
    /// Times since start that this node tested its addresses afresh with a new AutoNAT client:
    /// a probe was lost with its connection (the tester left before answering), or 3 probes
    /// brought no verdict (as behind NAT); spaced out (`autonat.rs`).
    #[serde(default)]
    pub autonat_rearms: u64,
    /// AutoNAT dial-backs this node, as a server, gave up since start: the tested address did
    /// not connect within 5 s, and the asking node heard "not reachable" (`autonat_server.rs`).
    #[serde(default)]
    pub autonat_dial_backs_given_up: u64,
    /// AutoNAT verdicts on this node's addresses since start, either way: `hearth status
    /// --recheck` waits for those its request asked for.
    #[serde(default)]
    pub autonat_verdicts: u64,
    /// How this node's NAT maps its listening port, from what its public peers saw
    /// (`mapping.rs`): `address-dependent` ("symmetric") means no hole punch can succeed.
    #[serde(default)]
    pub nat_mapping: NatMapping,
}

/// The answer to a request to test this node's addresses again ([`Network::recheck`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Recheck {
    /// Candidate addresses to be tested (the addresses peers saw this node at, at most 16):
    /// each brings one verdict, unless its server does not answer.
    pub candidates: usize,
    /// How long until the test starts: zero, or what is left of 10 s since the last one.
    pub starts_in_ms: u64,
}

impl Reachability {
    /// True when at least one direct address is confirmed reachable.
    pub fn is_public(&self) -> bool {
        !self.confirmed_addrs.is_empty()
    }

    /// How other homes reach this node, in a few words a household understands: what
    /// `hearth status` and the dashboard say.
    pub fn summary(&self) -> String {
        if let Some(a) = self.confirmed_addrs.first() {
            return format!("public, at {a}");
        }
        // Behind NAT for certain once AutoNAT found an address of this node not reachable;
        // until a verdict, only not known to be public.
        let behind = if self.unreachable_addrs.is_empty() {
            "not confirmed public yet (no AutoNAT verdict)"
        } else {
            "behind NAT"
        };
        let via = match self.relays.len() {
            0 => format!("{behind}, and no relay yet: other homes cannot reach this node"),
            1 => format!("{behind}, reached through a relay"),
            n => format!("{behind}, reached through {n} relays"),
        };
        match self.nat_mapping {
            NatMapping::AddressDependent => {
                format!("{via}; symmetric NAT: homes behind NAT cannot be reached directly")
            }
            _ => via,
        }
    }
}

/// What is known of one connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    /// Addresses of its open connections, then the listen addresses it reported (bounded).
    pub addresses: Vec<Multiaddr>,
    /// From identify, once received.
    pub agent_version: Option<String>,
    /// From identify, once received.
    pub protocol_version: Option<String>,
    /// When the first of its current connections was established.
    pub connected_since: SystemTime,
    /// Its gossipsub score as seen by this node (negative after invalid messages).
    pub gossip_score: Option<f64>,
}

impl PeerInfo {
    /// How long the peer has been connected (zero if the clock went backwards).
    pub fn connected_for(&self) -> Duration {
        self.connected_since.elapsed().unwrap_or_default()
    }
}

/// Requests from a [`Network`] handle to the swarm task.
enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    ReportValidation {
        id: MessageId,
        from: PeerId,
        verdict: Verdict,
    },
    ApplicationScore {
        peer: PeerId,
        score: f64,
    },
    Request {
        /// Dial the peer if it is not connected (request-response's own behaviour); without,
        /// a request to a peer not connected fails with [`NetError::NotConnected`].
        dial: bool,
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    FetchBlob {
        hash: blake3::Hash,
        hint: Option<PeerId>,
        /// Longest blob this caller accepts, in bytes.
        max_len: u64,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Provide {
        hash: blake3::Hash,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    /// Publish this node's record on a board now (`work.rs`); `done` is answered when the
    /// publication ended (stored at the closest nodes found, or failed).
    Post {
        board: work::Board,
        done: oneshot::Sender<()>,
    },
    /// Drop this node's own records of a board (they expire elsewhere).
    Withdraw(work::Board),
    /// Look one key of a board up.
    Find {
        board: work::Board,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// Test every address again with AutoNAT (`autonat.rs`).
    Recheck {
        reply: oneshot::Sender<Recheck>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Cloneable handle to the swarm task.
///
/// Cancel safety: every method sends one command and awaits its reply. Dropping the future
/// after the command was sent does not undo it (a publish may still go out, a fetch carries
/// on and its result is discarded).
#[derive(Clone)]
pub struct Network {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Network {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Publish `data` (at most [`MAX_GOSSIP_DATA`] bytes) on `topic`.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > MAX_GOSSIP_DATA {
            return Err(NetError::MessageTooLarge {
                len: data.len(),
                max: MAX_GOSSIP_DATA,
            });
        }
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Report the verdict on a [`NetEvent::Gossip`]; `from` is its `propagation_source`.
    /// Best effort: silently does nothing once the network has stopped.
    pub async fn report_validation(&self, id: MessageId, from: PeerId, verdict: Verdict) {
        let _ = self
            .commands
            .send(Command::ReportValidation { id, from, verdict })
            .await;
    }

    /// Sets the application-specific part of a peer's gossipsub score (weight 10 in
    /// `behaviour.rs`; scores below -80 are graylisted). Kept for a connected peer, and for a
    /// gone one until its score expires; the caller sets it again when the peer reconnects.
    pub async fn set_application_score(&self, peer: PeerId, score: f64) {
        let _ = self
            .commands
            .send(Command::ApplicationScore { peer, score })
            .await;
    }

    /// Send a control request (at most [`MAX_CONTROL_MESSAGE`] bytes) and await the answer.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, NetError> {
        self.request_with(peer, data, true).await
    }

    /// Like [`Network::request`], but only to a peer connected now: never dials. For work the
    /// node starts on its own about a peer it saw (the fraud-evidence pull), which must not
    /// bring back a peer that has gone (a dial costs a full handshake and holds the peer for
    /// the grace period: `docs/scale.md`).
    pub async fn request_if_connected(
        &self,
        peer: PeerId,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        self.request_with(peer, data, false).await
    }

    async fn request_with(
        &self,
        peer: PeerId,
        data: Vec<u8>,
        dial: bool,
    ) -> Result<Vec<u8>, NetError> {
        if data.len() > MAX_CONTROL_MESSAGE {
            return Err(NetError::RequestTooLarge {
                len: data.len(),
                max: MAX_CONTROL_MESSAGE,
            });
        }
        self.call(|reply| Command::Request {
            dial,
            peer,
            data,
            reply,
        })
        .await?
    }

    /// Fetch the blob `hash` into the local store, verifying every chunk. Asks `hint` first,
    /// then Kademlia providers; a peer that sends bad data is disconnected and the fetch
    /// resumes from another provider. Returns at once if the blob is already held. Once
    /// fetched the blob is provided to the network.
    pub async fn fetch_blob(
        &self,
        hash: blake3::Hash,
        hint: Option<PeerId>,
    ) -> Result<(), NetError> {
        self.fetch_blob_within(hash, hint, crate::store::MAX_BLOB_LEN)
            .await
    }

    /// Like [`Network::fetch_blob`], for a blob of at most `max_len` bytes. The blob's length
    /// is learned from the provider's first answer (its outboard), and a longer blob is
    /// refused with [`NetError::BlobTooLarge`] there, before any of its bytes is fetched.
    pub async fn fetch_blob_within(
        &self,
        hash: blake3::Hash,
        hint: Option<PeerId>,
        max_len: u64,
    ) -> Result<(), NetError> {
        self.call(|reply| Command::FetchBlob {
            hash,
            hint,
            max_len,
            reply,
        })
        .await?
    }

    /// Announce that this node holds `hash` (it must be in the store). Returns once the
    /// provider record is stored locally; publication to the DHT continues in the background.
    pub async fn provide(&self, hash: blake3::Hash) -> Result<(), NetError> {
        self.call(|reply| Command::Provide { hash, reply }).await?
    }

    /// Publishes this node on `board` (`work.rs`: under one key drawn among those in use for
    /// the network's size as this node sees it). Returns once the publication ended: the
    /// record is stored at the closest nodes the lookup found, or it could not be (a lookup
    /// bounded by Kademlia's query timeout). Looking the other board up only after this is
    /// what lets a coordinator and a radiator that arrive together find each other.
    pub async fn post(&self, board: work::Board) -> Result<(), NetError> {
        self.call(|done| Command::Post { board, done }).await
    }

    /// This node leaves `board`: its own records go at once, those other nodes hold expire
    /// within the board's TTL ([`work::Board::ttl`]).
    pub async fn withdraw(&self, board: work::Board) -> Result<(), NetError> {
        self.commands
            .send(Command::Withdraw(board))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Looks up who is on `board` under one key drawn among those in use, and starts dialling
    /// them while the lookup still holds their addresses. At most [`work::MAX_WORK_FOUND`],
    /// never this node; empty when nobody is or the lookup failed.
    pub async fn find(&self, board: work::Board) -> Result<Vec<PeerId>, NetError> {
        self.call(|reply| Command::Find { board, reply }).await
    }

    /// Test every address of this node again with AutoNAT (a port forwarded or removed on the
    /// household's router since): at once, or 10 s after the last test at the earliest.
    pub async fn recheck(&self) -> Result<Recheck, NetError> {
        self.call(|reply| Command::Recheck { reply }).await
    }

    /// Connect to `addr` (optionally ending in `/p2p/<peer id>`); returns once connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Peer id, listen addresses and number of connected peers.
    pub async fn status(&self) -> Result<NetStatus, NetError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Stop the swarm task and wait until it has closed. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }
}

/// Start the network: build the swarm, listen, subscribe, provide every blob in `store`,
/// dial bootstrap peers. Returns once every listener has an address (or failed), so
/// [`Network::status`] is immediately meaningful.
pub async fn spawn(
    config: NetConfig,
    store: Store,
) -> Result<
    (
        Network,
        mpsc::Receiver<NetEvent>,
        tokio::task::JoinHandle<()>,
    ),
    NetError,
> {
    let peer_id = config.keypair.public().to_peer_id();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CHANNEL);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
    let mut actor = actor::Actor::new(config, store, cmd_rx, ev_tx)?;
    actor.wait_listening().await;
    let handle = tokio::spawn(actor.run());
    Ok((
        Network {
            peer_id,
            commands: cmd_tx,
        },
        ev_rx,
        handle,
    ))
}
