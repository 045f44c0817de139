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
//! A node in client mode still looks up, provides and fetches: its provider records carry its
//! relay circuit addresses, by which others reach it. Peers stop listing it once identify tells
//! them it no longer speaks Kademlia (`actor/peers.rs`).

use libp2p::kad::Mode;
use libp2p::Multiaddr;

use super::direct::is_public_direct;

/// Default of `client_at`: public servers in the routing table past which a node behind NAT
/// runs as a DHT client (Kademlia's k, one bucket's worth).
pub const DEFAULT_CLIENT_AT: usize = 20;

/// The Kademlia mode a node with listeners runs in. `public`: it has a confirmed direct
/// address; `public_servers`: peers of its routing table at a public direct address
/// ([`public_servers`]); `current`: the mode it runs in now. Between half of `client_at` and
/// `client_at` the current mode stays, so a table near the threshold does not flap.
pub fn decide(current: Mode, public: bool, public_servers: usize, client_at: usize) -> Mode {
    if public {
        Mode::Server
    } else if public_servers >= client_at {
        Mode::Client
    } else if public_servers < client_at.div_ceil(2) {
        Mode::Server
    } else {
        current
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
                assert_eq!(decide(current, true, n, 20), Mode::Server);
            }
        }
    }

    #[test]
    fn a_node_behind_nat_serves_a_small_network_and_uses_a_large_one() {
        // A few public nodes (the NAT lab, a new network): the homes serve the DHT.
        assert_eq!(decide(Mode::Server, false, 2, 20), Mode::Server);
        assert_eq!(decide(Mode::Client, false, 2, 20), Mode::Server);
        // A bucket's worth of public servers: the home only uses the DHT.
        assert_eq!(decide(Mode::Server, false, 20, 20), Mode::Client);
        assert_eq!(decide(Mode::Server, false, 300, 20), Mode::Client);
    }

    #[test]
    fn between_half_and_the_threshold_the_mode_stays() {
        for n in 10..20 {
            assert_eq!(decide(Mode::Server, false, n, 20), Mode::Server, "{n}");
            assert_eq!(decide(Mode::Client, false, n, 20), Mode::Client, "{n}");
        }
        assert_eq!(decide(Mode::Client, false, 9, 20), Mode::Server);
        // Odd thresholds: server again below half (2.5 of 5).
        assert_eq!(decide(Mode::Client, false, 3, 5), Mode::Client);
        assert_eq!(decide(Mode::Client, false, 2, 5), Mode::Server);
    }

    #[test]
    fn a_threshold_of_zero_is_always_client_behind_nat() {
        for current in [Mode::Client, Mode::Server] {
            assert_eq!(decide(current, false, 0, 0), Mode::Client);
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
