//! Whether this node serves the DHT (Kademlia server mode) or only uses it (client mode).
//!
//! A node in server mode answers other nodes' lookups and stores their records, and they keep
//! it in their routing tables. A home behind NAT is reached only through a relay circuit (or
//! a hole punch a relayed connection sets up), so every lookup that asks it costs a relay a
//! circuit and the home a punch: past a few thousand homes, lookups would saturate the relays.
//! libp2p-kad's automatic mode (server only with a confirmed external address) avoids that,
//! but in a small network of homes behind NAT with one or two public nodes it would leave the
//! DHT with almost no servers: provider records would all sit on the bootstrap nodes.
//!
//! So a node with listeners decides by what its routing table shows ([`decide`]): publicly
//! reachable (a confirmed direct address) → server; otherwise client once its table holds
//! at least `client_at` peers at public direct addresses (default k = 20, a bucket's worth:
//! the DHT then has servers enough without this home), and server again below half that.
//! Only peers at public addresses count, never peers behind NAT like itself: were those
//! counted, a network of homes would tip into client mode together, empty each other's
//! tables and tip back. go-libp2p-kad-dht runs homes behind NAT as clients the same way
//! (AutoNAT-driven), without the small-network floor.
//!
//! Until its table shows the network ([`Heard`]), a node with no public address of its own
//! that joins a network over the internet (it has bootstrap peers at public addresses: a
//! home behind NAT) **starts as a client** ([`start_mode`]): a home that started as a server
//! was taken into the bootstrap node's table at once and handed on in every lookup answer,
//! and in its first seconds every other node's lookups dialled it through the relay; as a
//! client it is in no one's table unless it decides to serve (measured: the start-up storm,
//! `docs/scale.md` item 8). A node with nothing to learn from (the first of a network, a LAN
//! found by mDNS, a LAN or loopback network whose bootstrap peers are private) and one at a
//! public address start as servers: the public radiators must be in the tables the homes'
//! first lookups read, or the homes would find too few servers and serve themselves. Public
//! servers are counted in the table or, when more, among the public nodes the node reached
//! ([`Heard::public_servers`]): a public server at its connection limit closes a newcomer's
//! connection before identify can put it into the newcomer's table.
//!
//! A node in client mode still looks up, provides and fetches: its provider records carry its
//! relay circuit addresses, by which others reach it. Peers stop listing it once identify tells
//! them it no longer speaks Kademlia (`actor/peers.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::kad::Mode;
use libp2p::{Multiaddr, PeerId};

use super::direct::is_public_direct;
use super::table::MAX_TABLE_PEERS_PER_SUBNET;
use super::work::Subnet;

/// Default of `client_at`: public servers in the routing table past which a node behind NAT
/// runs as a DHT client (Kademlia's k, one bucket's worth).
pub const DEFAULT_CLIENT_AT: usize = 20;

/// The Kademlia mode a node with listeners starts in. `public_address`: it has a public
/// address of its own (its operator declared one, as on a bootstrap node, or it listens at
/// one, as a public radiator does; AutoNAT has not confirmed it yet); `joining`: it has
/// bootstrap peers other than itself at public addresses or DNS names, whose answers will
/// show the network (a LAN's or a test's bootstrap peers at private or loopback addresses
/// are all reachable directly, and their network needs its members as servers). A node with
/// no public address joining a network over the internet (a home behind NAT) starts as a
/// client until [`decide`] has heard from the network; the others serve from the start, as
/// every node did before.
pub fn start_mode(public_address: bool, joining: bool) -> Mode {
    if public_address || !joining {
        Mode::Server
    } else {
        Mode::Client
    }
}

/// The Kademlia mode a node with listeners runs in. `public`: it has a confirmed direct
/// address; `heard`: its routing table shows the network ([`Heard`]); `public_servers`: the
/// public DHT servers it counts ([`Heard::public_servers`], from [`public_servers`] of its
/// routing table); `current`: the mode it runs in now. Until it has heard, the mode it
/// started in ([`start_mode`]) stays unless it is confirmed public. Between half of
/// `client_at` and `client_at` the current mode stays, so a table near the threshold does not
/// flap.
pub fn decide(
    current: Mode,
    public: bool,
    heard: bool,
    public_servers: usize,
    client_at: usize,
) -> Mode {
    if public {
        Mode::Server
    } else if !heard {
        current
    } else if public_servers >= client_at {
        Mode::Client
    } else if public_servers < client_at.div_ceil(2) {
        Mode::Server
    } else {
        current
    }
}

/// How long after a Kademlia bootstrap step a peer answered the node reads its routing table
/// for its role: the peers the lookup reached enter the table when identify has told that they
/// serve the DHT (`BucketInserts::Manual`, `actor/dht.rs`), which may come just after their
/// last answer.
pub const HEARD_SETTLE: Duration = Duration::from_secs(2);

/// How long a node joining a network waits at most for a bootstrap step a peer answered: one
/// whose bootstrap peers never answer (its line is down, a LAN of its own) then chooses from
/// its table as it is.
pub const HEARD_BY: Duration = Duration::from_secs(60);

/// Public nodes remembered as reached ([`Heard::reached_public`]), the oldest forgotten first.
const MAX_REACHED: usize = 64;

/// How long a public node reached counts as a server ([`Heard::public_servers`]).
pub const REACHED_FOR: Duration = Duration::from_secs(10 * 60);

/// What a node has heard of the network for its DHT role: whether its routing table shows
/// the network yet ([`decide`]'s `heard`), and the public nodes it has reached.
///
/// Heard: from [`HEARD_SETTLE`] after the first Kademlia bootstrap step that any peer
/// answered, at the latest [`HEARD_BY`] after start. A step no peer answered says nothing:
/// libp2p's own bootstrap, started when the bootstrap peers enter the table before any
/// connection, ends at once with no answer (measured: the homes of `testnet/dht-scale` chose
/// from a table holding only the bootstrap node, served the DHT for 5 s, and were asked
/// through the relay meanwhile).
///
/// Reached: a public server at its connection limit closes a newcomer's connection at once,
/// before identify can put it into the newcomer's table (150 homes and 4 public radiators:
/// 23 homes found only the bootstrap node in their tables, served the DHT, and drew 4 767
/// refused circuits; waiting for the table did not help, as the table still lagged after a
/// minute: `docs/scale.md` item 8). Such a connection still shows a public node is there:
/// the node dialled it at a public address for the DHT (a Kademlia or bootstrap dial) and it
/// proved its key. So the public nodes reached in the last [`REACHED_FOR`] count as servers
/// when they are more than the table's ([`Heard::public_servers`]), at most
/// [`MAX_TABLE_PEERS_PER_SUBNET`] per subnet as in the table: one address can show any
/// number of keys. Names in lookup answers would not count: anyone can name anything.
#[derive(Debug, Clone)]
pub struct Heard {
    from: Instant,
    reached: HashMap<PeerId, (Subnet, Instant)>,
}

impl Heard {
    /// A node started at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            from: start + HEARD_BY,
            reached: HashMap::new(),
        }
    }

    /// A bootstrap step ended at `now`, `answered` peers having answered its lookups.
    pub fn bootstrap_step(&mut self, answered: u32, now: Instant) {
        if answered > 0 {
            self.from = self.from.min(now + HEARD_SETTLE);
        }
    }

    /// Whether the table shows the network at `now`.
    pub fn heard(&self, now: Instant) -> bool {
        now >= self.from
    }

    /// This node dialled `peer` at a public direct address in `subnet` for the DHT, and the
    /// connection was made at `now` (it may have closed at once). Bounded: [`MAX_REACHED`].
    pub fn reached_public(&mut self, peer: PeerId, subnet: Subnet, now: Instant) {
        if self.reached.len() >= MAX_REACHED && !self.reached.contains_key(&peer) {
            let oldest = self.reached.iter().min_by_key(|(_, (_, at))| *at);
            if let Some(oldest) = oldest.map(|(p, _)| *p) {
                self.reached.remove(&oldest);
            }
        }
        self.reached.insert(peer, (subnet, now));
    }

    /// The public DHT servers this node counts at `now`, its routing table holding `table`:
    /// those, or the public nodes reached in the last [`REACHED_FOR`] (at most
    /// [`MAX_TABLE_PEERS_PER_SUBNET`] per subnet) when they are more.
    pub fn public_servers(&self, table: usize, now: Instant) -> usize {
        let mut per_subnet: HashMap<Subnet, usize> = HashMap::new();
        let reached = self
            .reached
            .values()
            .filter(|(_, at)| now.saturating_duration_since(*at) < REACHED_FOR)
            .filter(|(subnet, _)| {
                let n = per_subnet.entry(*subnet).or_default();
                *n += 1;
                *n <= MAX_TABLE_PEERS_PER_SUBNET
            })
            .count();
        table.max(reached)
    }
}

/// How many peers of a routing table (each given as its addresses) can be dialled directly
/// at a public address: a DHT server that needs no relay. A peer behind NAT is listed at its
/// circuit and private addresses (its NAT mapping is kept out: `table.rs`, `punched_only`).
pub fn public_servers<'a, P, A>(table: P) -> usize
where
    P: IntoIterator<Item = A>,
    A: IntoIterator<Item = &'a Multiaddr>,
{
    table
        .into_iter()
        .map(|addrs| usize::from(addrs.into_iter().any(is_public_direct)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publicly_reachable_node_serves_whatever_its_table() {
        for current in [Mode::Client, Mode::Server] {
            for n in [0, 5, 20, 1000] {
                assert_eq!(decide(current, true, true, n, 20), Mode::Server);
            }
        }
    }

    #[test]
    fn a_node_behind_nat_serves_a_small_network_and_uses_a_large_one() {
        // A few public nodes (the NAT lab, a new network): the homes serve the DHT.
        assert_eq!(decide(Mode::Server, false, true, 2, 20), Mode::Server);
        assert_eq!(decide(Mode::Client, false, true, 2, 20), Mode::Server);
        // A bucket's worth of public servers: the home only uses the DHT.
        assert_eq!(decide(Mode::Server, false, true, 20, 20), Mode::Client);
        assert_eq!(decide(Mode::Server, false, true, 300, 20), Mode::Client);
    }

    #[test]
    fn between_half_and_the_threshold_the_mode_stays() {
        for n in 10..20 {
            assert_eq!(
                decide(Mode::Server, false, true, n, 20),
                Mode::Server,
                "{n}"
            );
            assert_eq!(
                decide(Mode::Client, false, true, n, 20),
                Mode::Client,
                "{n}"
            );
        }
        assert_eq!(decide(Mode::Client, false, true, 9, 20), Mode::Server);
        // Odd thresholds: server again below half (2.5 of 5).
        assert_eq!(decide(Mode::Client, false, true, 3, 5), Mode::Client);
        assert_eq!(decide(Mode::Client, false, true, 2, 5), Mode::Server);
    }

    #[test]
    fn a_node_joining_a_network_uses_the_dht_until_its_table_shows_the_network() {
        // A home with bootstrap peers starts as a client, in no one's routing table.
        assert_eq!(start_mode(false, true), Mode::Client);
        // Until its first bootstrap step is heard, that holds whatever the (empty) table says.
        for n in [0, 5, 20] {
            assert_eq!(
                decide(Mode::Client, false, false, n, 20),
                Mode::Client,
                "{n}"
            );
        }
        // Heard: a small network needs it as a server, a large one does not.
        assert_eq!(decide(Mode::Client, false, true, 2, 20), Mode::Server);
        assert_eq!(decide(Mode::Client, false, true, 20, 20), Mode::Client);
        // Confirmed public: a server at once, heard or not.
        assert_eq!(decide(Mode::Client, true, false, 0, 20), Mode::Server);
    }

    #[test]
    fn the_first_of_a_network_and_a_node_at_a_public_address_serve_from_the_start() {
        assert_eq!(
            start_mode(false, false),
            Mode::Server,
            "nothing to learn from"
        );
        assert_eq!(start_mode(true, true), Mode::Server, "a public radiator");
        assert_eq!(start_mode(true, false), Mode::Server);
    }

    #[test]
    fn a_bootstrap_step_no_peer_answered_says_nothing_of_the_network() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut h = Heard::new(t0);
        // libp2p's own bootstrap, before any connection: over at once, nobody asked.
        h.bootstrap_step(0, t0);
        assert!(!h.heard(at(5)));
        // The first step the bootstrap node answered: read the table once identify is done.
        h.bootstrap_step(1, at(3));
        assert!(!h.heard(at(4)));
        assert!(h.heard(at(3) + HEARD_SETTLE));
        // Later steps do not push it back.
        h.bootstrap_step(4, at(20));
        assert!(h.heard(at(6)));
    }

    #[test]
    fn a_node_nobody_answers_chooses_from_its_table_in_the_end() {
        let t0 = Instant::now();
        let mut h = Heard::new(t0);
        h.bootstrap_step(0, t0 + Duration::from_secs(2));
        assert!(!h.heard(t0 + HEARD_BY - Duration::from_millis(1)));
        assert!(h.heard(t0 + HEARD_BY));
    }

    fn subnet(n: u8) -> Subnet {
        Subnet::V4([198, 19, n])
    }

    #[test]
    fn public_nodes_reached_count_as_servers_when_the_table_lags() {
        let t0 = Instant::now();
        let mut h = Heard::new(t0);
        // The bootstrap node and four public radiators reached; the radiators, at their
        // connection limit, closed at once: the table holds the bootstrap node alone.
        for n in 0..5 {
            h.reached_public(PeerId::random(), subnet(n), t0);
        }
        assert_eq!(h.public_servers(1, t0), 5);
        // So a home with client_at 4 uses the DHT instead of serving it.
        let servers = h.public_servers(1, t0);
        assert_eq!(decide(Mode::Client, false, true, servers, 4), Mode::Client);
        // The table, when it holds more, is what counts.
        assert_eq!(h.public_servers(30, t0), 30);
        // Reached nodes count for REACHED_FOR; then the table alone.
        assert_eq!(h.public_servers(1, t0 + REACHED_FOR), 1);
    }

    #[test]
    fn one_subnet_counts_as_far_as_its_share_of_a_table() {
        let t0 = Instant::now();
        let mut h = Heard::new(t0);
        // One address can show any number of keys.
        for _ in 0..40 {
            h.reached_public(PeerId::random(), subnet(7), t0);
        }
        assert_eq!(h.public_servers(0, t0), MAX_TABLE_PEERS_PER_SUBNET);
    }

    #[test]
    fn public_nodes_reached_are_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut h = Heard::new(t0);
        let first = PeerId::random();
        h.reached_public(first, subnet(0), t0);
        for n in 0..MAX_REACHED * 2 {
            let at = t0 + Duration::from_millis(1 + n as u64);
            h.reached_public(PeerId::random(), subnet((n % 200) as u8 + 1), at);
        }
        assert_eq!(h.reached.len(), MAX_REACHED);
        assert!(!h.reached.contains_key(&first));
    }

    #[test]
    fn a_threshold_of_zero_is_always_client_behind_nat() {
        for current in [Mode::Client, Mode::Server] {
            assert_eq!(decide(current, false, true, 0, 0), Mode::Client);
        }
    }

    #[test]
    fn only_peers_at_public_direct_addresses_count_as_servers() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let public = vec![a("/ip4/198.51.100.2/tcp/4001")];
        let home = vec![
            a("/ip4/10.2.0.3/tcp/4001"),
            a("/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"),
        ];
        let loopback = vec![a("/ip4/127.0.0.1/tcp/4001")];
        let dual = vec![
            a("/ip4/192.168.1.5/tcp/4001"),
            a("/ip6/2001:db8::1/tcp/4001"),
        ];
        let table = [&public, &home, &loopback, &dual, &Vec::new()];
        assert_eq!(public_servers(table.iter().map(|v| v.iter())), 2);
    }
}
