//! The composed libp2p behaviour and the swarm that runs it: which protocols a radiator
//! speaks and with which parameters. Event handling lives in `actor`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, noise, ping, relay,
    request_response, tcp, upnp, yamux, StreamProtocol, Swarm, SwarmBuilder,
};

use super::autonat_server::Bounded;
use super::candidates::DirectCandidates;
use super::codec::FrameCodec;
use super::dials::{Counted, DialLog, DialOrigin};
use super::keep::KeepOpen;
use super::relayed::OneRelayed;
use super::subnets::InboundPerSubnet;
use super::wire::{MAX_BLOB_REQUEST, MAX_BLOB_RESPONSE};
use super::{
    NetConfig, NetError, RelayLimits, Topic, BLOB_PROTOCOL, CONTROL_PROTOCOL, GOSSIP_MAX_TRANSMIT,
    IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL, MAX_CONTROL_MESSAGE,
};

/// Gossipsub heartbeat; mesh repair and IHAVE gossip happen at this pace (delivery itself
/// is immediate).
pub(crate) const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(300);
/// Provider records this node keeps for blobs it holds (its own only: those of other nodes
/// are held apart and bounded, `remote.rs`).
pub(crate) const MAX_PROVIDED_KEYS: usize = 65_536;
/// Concurrent inbound streams per connection for each request-response protocol.
const MAX_CONCURRENT_STREAMS: usize = 64;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    /// At most 8 inbound connections from one subnet (`subnets.rs`).
    pub(crate) per_subnet: InboundPerSubnet,
    /// One relayed connection per peer, none beside a direct one (`relayed.rs`); before the
    /// behaviours with handlers, so that a connection it denies never starts one.
    pub(crate) one_relayed: OneRelayed,
    /// Identify, reporting only direct addresses as candidates for ours (`candidates.rs`).
    pub(crate) identify: DirectCandidates<identify::Behaviour>,
    pub(crate) ping: ping::Behaviour,
    /// Hole-punched connections kept open while idle (`keep.rs`).
    pub(crate) keep_open: KeepOpen,
    pub(crate) kad: Counted<kad::Behaviour<super::work::Store>>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) gossipsub: Counted<gossipsub::Behaviour>,
    pub(crate) control: Counted<request_response::Behaviour<FrameCodec>>,
    pub(crate) blob: Counted<request_response::Behaviour<FrameCodec>>,
    /// Circuit relay v2 client: listen through a relay while not publicly reachable, dial
    /// peers through their relay.
    pub(crate) relay_client: Counted<relay::client::Behaviour>,
    /// Circuit relay v2 server: on bootstrap nodes only (`NetConfig::relay_server`).
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    /// Direct connection upgrade through relay: hole punching over a relayed connection.
    pub(crate) dcutr: Counted<dcutr::Behaviour>,
    /// AutoNAT v2: asks peers to dial our address candidates back; a candidate that works
    /// becomes a confirmed external address (tested again: `autonat.rs`).
    pub(crate) autonat: Counted<super::autonat::Rearmed>,
    /// AutoNAT v2 server: dials other nodes' candidates back (from a new port), giving up a
    /// dial-back before the client stops waiting (`autonat_server.rs`).
    pub(crate) autonat_server: Bounded<Counted<autonat::v2::server::Behaviour>>,
    /// UPnP port mapping on the home router, off by default (`NetConfig::upnp`).
    pub(crate) upnp: Toggle<upnp::tokio::Behaviour>,
}

/// The relay server configuration from our limits. The circuits' rate limits are ours
/// (`[relay]`, by default libp2p's); the reservations' stay libp2p's (token buckets: per source
/// peer 30, one back every 2 min; per source IP 60, one back a minute).
fn relay_config(l: &RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: l.max_reservations,
        max_reservations_per_peer: 4,
        max_circuits: l.max_circuits,
        max_circuits_per_peer: l.max_circuits_per_peer,
        max_circuit_duration: l.max_circuit_duration,
        max_circuit_bytes: l.max_circuit_bytes,
        circuit_src_rate_limiters: Vec::new(),
        ..Default::default()
    }
    .circuit_src_per_peer(l.circuit_rate_per_peer.burst, l.circuit_rate_per_peer.every)
    .circuit_src_per_ip(l.circuit_rate_per_ip.burst, l.circuit_rate_per_ip.every)
}

/// Gossip message id: blake3(author ‖ data), the author being the message's signed `from`
/// field (the PeerId's binary multihash, self-delimiting). The same author publishing the same
/// bytes twice is one message; two radiators publishing identical bytes (the same heat
/// reading in the same millisecond) are two, so neither is dropped as the other's duplicate.
pub(crate) fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = blake3::Hasher::new();
    // Strict validation refuses messages without an author before ids matter; an absent one
    // hashes as nothing.
    if let Some(author) = &m.source {
        h.update(&author.to_bytes());
    }
    h.update(&m.data);
    gossipsub::MessageId::new(h.finalize().as_bytes())
}

/// The gossipsub configuration, shared with `docs/protocol.md`.
pub(crate) fn gossipsub_config() -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        // Signed messages, checked strictly; the node layer validates the payload.
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(GOSSIP_MAX_TRANSMIT)
        // Works for 2 nodes and for 1,000: a small network keeps a partial mesh (mesh_n_low
        // 2), flood publishing reaches every subscribed peer we are connected to.
        .mesh_n(6)
        .mesh_n_low(2)
        .mesh_n_high(12)
        .mesh_outbound_min(1)
        .gossip_lazy(6)
        .flood_publish(true)
        .heartbeat_interval(GOSSIP_HEARTBEAT)
        .history_length(5)
        .history_gossip(3)
        .duplicate_cache_time(Duration::from_secs(120))
        .build()
        .map_err(|e| NetError::Setup(format!("gossipsub config: {e}")))
}

/// Peer scoring: only misbehaviour is weighed heavily, so an honest but quiet home (sparse,
/// bursty traffic) is never penalised for delivering little.
fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        // P1: a little credit for staying in the mesh (at most +1).
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        // P2: credit for being first to deliver (at most +10).
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 10.0,
        // P3/P3b off: household traffic is too sparse to expect deliveries.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4: each rejected message costs -10 * count^2, decaying by 10% a second. Three
        // rejections in a row take a peer below the graylist threshold.
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let mut topics = HashMap::new();
    for t in Topic::ALL {
        topics.insert(t.ident().hash(), topic.clone());
    }
    let params = gossipsub::PeerScoreParams {
        topics,
        // Loopback (tests, several nodes on one machine) is exempt from the IP colocation
        // penalty; a household with more than 10 radiators behind one address is not.
        ip_colocation_factor_whitelist: [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}

/// Kademlia as hearth runs it (also the configuration `lookup_tests.rs` puts under attack).
pub(super) fn kademlia_config() -> kad::Config {
    let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    kad_cfg
        .set_query_timeout(Duration::from_secs(30))
        // The swarm task runs the refreshes on its own schedule (`actor.rs`: full bootstraps at
        // start and every half hour, own-key lookups in between); Kademlia's own timer would
        // add a full bootstrap every interval. Its automatic bootstrap while the routing table
        // holds fewer than k peers stays on.
        .set_periodic_bootstrap_interval(None)
        .set_provider_publication_interval(Some(Duration::from_secs(6 * 3600)))
        // Records peers send come to the swarm task, which stores them with the address of
        // the connection they came over (`work.rs`: one network's share of a work key).
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        // Peers go into the routing table through the swarm task only, which keeps any one
        // subnet to its share of each bucket and of the table (`table.rs`: eclipse).
        .set_kbucket_inserts(kad::BucketInserts::Manual)
        // Every iterative lookup (who provides a work key or a blob, who is near our own key)
        // follows 3 disjoint paths (S/Kademlia; 3 is the default parallelism): a peer's answer
        // feeds only the path that asked it, so peers that answer every lookup with one
        // another's names capture the paths that start with them and no other, and a path
        // that starts at an honest peer still reaches the honest peers near the key
        // (`lookup_tests.rs`, which fails without it).
        .disjoint_query_paths(true);
    kad_cfg
}

fn build_behaviour(
    cfg: &NetConfig,
    relay_client: relay::client::Behaviour,
    dials: &DialLog,
) -> Result<Behaviour, NetError> {
    let key = &cfg.keypair;
    let peer_id = key.public().to_peer_id();

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        // Four per peer: one relayed connection is kept per peer (`relayed.rs`), but a
        // replaced one is counted until it has closed, and the direct connection a hole punch
        // makes must fit beside them (with two, this limit closed it as soon as it opened: the
        // NAT lab's hole punches failed with "broken pipe" about half the time). Once a direct
        // connection is open the relayed ones are closed.
        .with_max_established_per_peer(Some(4))
        .with_max_pending_incoming(Some(cfg.max_connections.clamp(8, 64)))
        .with_max_pending_outgoing(Some(cfg.max_connections.clamp(8, 64)));

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_string(), key.public())
            .with_agent_version(cfg.agent_version.clone())
            .with_push_listen_addr_updates(true),
    );

    let kad_cfg = kademlia_config();
    // Work records (`work.rs`) are kept apart from blob records, short-lived and bounded.
    let store = super::work::Store::new(
        MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_provided_keys: MAX_PROVIDED_KEYS,
                ..Default::default()
            },
        ),
        cfg.limit_local_networks,
    );
    // A node with listeners gets its mode from the swarm task (`dht_role.rs`, `start_mode`);
    // one without stays in libp2p's automatic mode.
    let kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);

    let mdns = if cfg.mdns {
        let mdns_cfg = mdns::Config {
            query_interval: Duration::from_secs(60),
            ..Default::default()
        };
        Some(
            mdns::tokio::Behaviour::new(mdns_cfg, peer_id)
                .map_err(|e| NetError::Setup(format!("mDNS: {e}")))?,
        )
    } else {
        None
    };

    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config()?,
    )
    .map_err(|e| NetError::Setup(format!("gossipsub: {e}")))?;
    let (params, thresholds) = score_params();
    gossipsub
        .with_peer_score(params, thresholds)
        .map_err(|e| NetError::Setup(format!("gossipsub scoring: {e}")))?;
    for t in cfg.topics.iter().copied() {
        gossipsub
            .subscribe(&t.ident())
            .map_err(|e| NetError::Setup(format!("subscribe {t}: {e}")))?;
    }

    let rr_cfg = request_response::Config::default()
        .with_request_timeout(cfg.request_timeout)
        .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let control = request_response::Behaviour::with_codec(
        FrameCodec::new(MAX_CONTROL_MESSAGE, MAX_CONTROL_MESSAGE),
        [(
            StreamProtocol::new(CONTROL_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        rr_cfg.clone(),
    );
    let blob = request_response::Behaviour::with_codec(
        FrameCodec::new(MAX_BLOB_REQUEST, MAX_BLOB_RESPONSE),
        [(
            StreamProtocol::new(BLOB_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        rr_cfg,
    );

    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        per_subnet: InboundPerSubnet::new(cfg.limit_local_networks),
        one_relayed: OneRelayed::new(peer_id),
        identify: DirectCandidates::new(identify),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(cfg.ping_interval)
                .with_timeout(cfg.ping_timeout),
        ),
        keep_open: KeepOpen::default(),
        kad: Counted::new(kad, DialOrigin::Kad, dials),
        mdns: Toggle::from(mdns),
        gossipsub: Counted::new(gossipsub, DialOrigin::Gossipsub, dials),
        control: Counted::new(control, DialOrigin::Control, dials),
        blob: Counted::new(blob, DialOrigin::Blob, dials),
        relay_client: Counted::new(relay_client, DialOrigin::RelayClient, dials),
        relay_server: Toggle::from(
            cfg.relay_server
                .as_ref()
                .map(|l| relay::Behaviour::new(peer_id, relay_config(l))),
        ),
        dcutr: Counted::new(dcutr::Behaviour::new(peer_id), DialOrigin::Dcutr, dials),
        // Defaults: up to 10 candidates, one probe every 5 s.
        autonat: Counted::new(
            super::autonat::Rearmed::new(cfg.external_addrs.clone()),
            DialOrigin::AutonatClient,
            dials,
        ),
        autonat_server: Bounded::new(Counted::new(
            autonat::v2::server::Behaviour::default(),
            DialOrigin::AutonatServer,
            dials,
        )),
        upnp: Toggle::from(cfg.upnp.then(upnp::tokio::Behaviour::default)),
    })
}

/// How long data sent on a TCP connection may stay unacknowledged before the kernel aborts
/// the connection (`TCP_USER_TIMEOUT`, Linux). Without it a connection whose path went silent
/// (a home router rebooted or got a new public address) outlives the ping check that closes
/// it (`NetConfig::ping_timeout`, `actor/peers.rs`): closed gracefully, its socket lingers in
/// the kernel retransmitting a FIN into the silence for minutes and holds its four-tuple, so
/// a hole punch between the same two listening ports (port reuse) cannot be dialled, and the
/// punch that should bring the two homes back together fails until it goes (the NAT lab,
/// 2026-12-05: sub <-> h2a punched again only after more than 5 minutes). Aborted, it frees
/// the four-tuple at once, and hearth sees the connection fail with "timed out". 45 s: past
/// any round trip a radiator's line has while it works (a ping waits at most 20 s), shorter
/// than the two failed pings (about a minute) that close such a connection otherwise.
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(45);

/// An authenticated, multiplexed transport, as the swarm builder takes it.
type Tcp = libp2p::core::transport::Boxed<(libp2p::PeerId, StreamMuxerBox)>;

/// TCP with noise and yamux, as libp2p's `SwarmBuilder::with_tcp` builds it, each connection's
/// socket given [`TCP_USER_TIMEOUT`].
fn tcp_transport(
    keypair: &libp2p::identity::Keypair,
) -> Result<Tcp, Box<dyn std::error::Error + Send + Sync>> {
    use libp2p::core::upgrade::Version;
    use libp2p::Transport as _;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .map(|stream: tcp::tokio::TcpStream, _| {
                set_user_timeout(&stream.0);
                stream
            })
            .upgrade(Version::V1Lazy)
            .authenticate(noise::Config::new(keypair)?)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    )
}

/// Set [`TCP_USER_TIMEOUT`] on a connection's socket; where the system has no such option,
/// or refuses it, the connection keeps the system's default (logged).
fn set_user_timeout(stream: &tokio::net::TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
        tracing::debug!("TCP user timeout not set: {e}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// How many addresses of one dial are tried at once: all of a hole punch's. DCUtR sends its
/// address candidates oldest first, from an LRU of up to 20 that keeps every public address
/// the home ever had, so a home whose address changed (a DSL line's daily reconnection) sends
/// its current one last. Dialled 8 at a time (libp2p's default), a ninth address came after
/// 8 old ones had timed out, and by then its own 10 s connection timeout, which runs from the
/// dial's start, had passed too: a home whose address had changed seven times could not be
/// hole punched again (`tests::a_dial_tries_every_address_of_a_punch_at_once`, which fails
/// with 8: every address timed out, the live ninth one too). Bounded: one dial opens at most
/// 20 sockets at once; a DCUtR message is at most 4 KiB (about 100 addresses: a peer that
/// sends more than 20 gets its first 20 tried, the rest only as those fail), and hearth keeps
/// at most 16 addresses per peer (`actor.rs`, `MAX_ADDRS_PER_PEER`).
const DIAL_CONCURRENCY: std::num::NonZeroU8 = std::num::NonZeroU8::new(20).unwrap();

/// Build the swarm: TCP (noise, yamux), QUIC, DNS and relayed circuits over tokio.
/// Dials of every behaviour that can dial are logged by origin in `dials`.
pub(crate) fn build_swarm(cfg: &NetConfig, dials: &DialLog) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = SwarmBuilder::with_existing_identity(cfg.keypair.clone())
        .with_tokio()
        .with_quic()
        .with_other_transport(tcp_transport)
        .map_err(|e| NetError::Setup(format!("TCP transport: {e}")))?
        .with_dns()
        .map_err(|e| NetError::Setup(format!("DNS resolver: {e}")))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Setup(format!("relay transport: {e}")))?
        .with_behaviour(|_, relay_client| {
            build_behaviour(cfg, relay_client, dials).map_err(|e| Box::new(e) as _)
        })
        .map_err(|e| NetError::Setup(format!("behaviour: {e}")))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(cfg.idle_timeout)
                .with_dial_concurrency_factor(DIAL_CONCURRENCY)
        })
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hole punch dials the addresses the peer sent all at once. DCUtR sends its address
    /// candidates oldest first (an LRU of up to 20 that never forgets a public address it
    /// once had), so a home whose public address changed seven times sent its current one
    /// ninth, after the old ones and one `/p2p/<id>` entry learnt over a relayed connection;
    /// the swarm dialled 8 at a time and reached the ninth only when the first 8 had timed
    /// out (10 s), long after the other end's simultaneous dial: the punch failed, each
    /// time. Here the first 8 addresses accept TCP and never answer.
    #[tokio::test]
    async fn a_dial_tries_every_address_of_a_punch_at_once() {
        use futures::StreamExt;
        use libp2p::swarm::{dial_opts::DialOpts, SwarmEvent};
        let swarm = || {
            let cfg = NetConfig::loopback(libp2p::identity::Keypair::generate_ed25519());
            build_swarm(&cfg, &DialLog::default()).unwrap()
        };
        let (mut a, mut b) = (swarm(), swarm());
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let b_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                break address;
            }
        };
        // Listeners that never accept: the kernel completes the TCP handshake, nobody speaks.
        let silent: Vec<std::net::TcpListener> = (0..8)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut addrs: Vec<libp2p::Multiaddr> = silent
            .iter()
            .map(|l| format!("/ip4/127.0.0.1/tcp/{}", l.local_addr().unwrap().port()))
            .map(|a| a.parse().unwrap())
            .collect();
        addrs.push(b_addr);
        let b_id = *b.local_peer_id();
        a.dial(DialOpts::peer_id(b_id).addresses(addrs).build())
            .unwrap();
        let errors = loop {
            tokio::select! {
                ev = a.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { peer_id, concurrent_dial_errors, .. }
                        if peer_id == b_id => break concurrent_dial_errors.unwrap_or_default(),
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
                    _ => {}
                },
                _ = b.select_next_some() => {}
            }
        };
        assert!(
            errors.is_empty(),
            "the live address was dialled only after {} others failed: {errors:?}",
            errors.len()
        );
    }

    fn message(author: libp2p::PeerId, data: &[u8]) -> gossipsub::Message {
        gossipsub::Message {
            source: Some(author),
            data: data.to_vec(),
            sequence_number: Some(1),
            topic: Topic::Commitments.ident().hash(),
        }
    }

    /// Two radiators whose heat messages are byte-identical (same demand, same millisecond)
    /// must not share a message id, or gossipsub drops the second as a duplicate.
    #[test]
    fn identical_payloads_from_two_authors_are_two_messages() {
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let reading = crate::model::wire::HeatDemand {
            wanted_slots: 1,
            demand_permille: 500,
            room_centi_c: None,
            at_ms: 1_700_000_000_000,
        }
        .to_bytes();
        assert_ne!(
            message_id(&message(a, &reading)),
            message_id(&message(b, &reading))
        );
        assert_eq!(
            message_id(&message(a, &reading)),
            message_id(&message(a, &reading)),
            "one author publishing the same bytes twice is one message"
        );
        let mut expected = blake3::Hasher::new();
        expected.update(&a.to_bytes()).update(&reading);
        assert_eq!(
            message_id(&message(a, &reading)),
            gossipsub::MessageId::new(expected.finalize().as_bytes())
        );
    }
}
