//! Which peers Kademlia's routing table takes: at most [`MAX_TABLE_PEERS_PER_SUBNET_PER_BUCKET`]
//! of one subnet in a bucket and [`MAX_TABLE_PEERS_PER_SUBNET`] in the whole table (discv5's
//! rule, with the subnets of `work.rs`: IPv4 /24, IPv6 /48).
//!
//! Why: identities cost nothing, and libp2p-kad took any peer into any bucket with room. A
//! machine holding many identities could fill the buckets near a node's key (or a key it looks
//! up) and then answer its lookups alone: which coordinators have work, who holds a blob, whom
//! to ask next (an eclipse). With the rule, holding a node's view takes addresses in many
//! networks, not many keys on one machine.
//!
//! Kademlia inserts no peer by itself (`BucketInserts::Manual`, `behaviour.rs`): every insertion
//! goes through the swarm task (`actor/dht.rs`, `add_to_table`), which asks [`Diversity::admit`]
//! first. It does add by itself, to a peer already in the table, the address it dialled the
//! peer at; the swarm task takes a hole punch's back out ([`punched_only`]). A candidate's subnet is that of the remote address of its oldest open connection (what
//! the TCP or QUIC handshake showed, not what the peer claims), else of the address it would be
//! dialled at (found by mDNS). A peer is counted by the subnet it was admitted by, whatever
//! addresses it lists later. Addresses the operator configured (bootstrap nodes) are trusted and
//! count against nothing. As for work keys, loopback is not limited and a private network's
//! hosts count one by one, unless `NetConfig::limit_local_networks` says so.
//!
//! The counts are taken from the table as it is at each admission: Kademlia drops entries on
//! its own (a pending peer replaces an unreachable one), so counts kept beside the table would
//! drift. What is kept here is only each admitted peer's subnet, pruned to the table's members.
//!
//! Pure: no swarm, no clock. Must not touch: the swarm, the record stores.

use std::collections::{HashMap, HashSet};

use libp2p::{Multiaddr, PeerId};

use super::bootstrap::without_peer_id;
use super::relayed::is_relayed;
use super::work::{subnet_of, Subnet};

/// Peers of one subnet in one bucket of the routing table (discv5's limit). A bucket holds 20.
pub const MAX_TABLE_PEERS_PER_SUBNET_PER_BUCKET: usize = 2;
/// Peers of one subnet in the whole routing table (discv5's limit).
pub const MAX_TABLE_PEERS_PER_SUBNET: usize = 10;

/// Why a peer was kept out of the routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its subnet already holds [`MAX_TABLE_PEERS_PER_SUBNET_PER_BUCKET`] of its bucket.
    Bucket(Subnet),
    /// Its subnet already holds [`MAX_TABLE_PEERS_PER_SUBNET`] of the table.
    Table(Subnet),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Bucket(s) => write!(
                f,
                "{s:?} already holds {MAX_TABLE_PEERS_PER_SUBNET_PER_BUCKET} peers of its bucket"
            ),
            Refusal::Table(s) => write!(
                f,
                "{s:?} already holds {MAX_TABLE_PEERS_PER_SUBNET} peers of the routing table"
            ),
        }
    }
}

/// Whether the routing table should drop `addr` of a peer: it is the address a hole punch
/// dialled the peer at (`punched`: its NAT's mapping, which takes nobody's dial but a
/// punch's), and the peer does not advertise it itself (`advertised`, from identify: a
/// mapping that does take dials, confirmed by AutoNAT, is advertised). libp2p-kad puts the
/// address of every connection it confirms Kademlia on and we dialled into the table, so
/// without this each home behind NAT kept its punched peers' mappings, offered them to its
/// own dials of those peers (which timed out, and could hold a later punch's four-tuple:
/// `docs/testnet.md`) and handed them to other nodes' lookups.
pub(crate) fn punched_only(
    addr: &Multiaddr,
    punched: &[Multiaddr],
    advertised: &[Multiaddr],
) -> bool {
    let bare = without_peer_id(addr);
    let is = |list: &[Multiaddr]| list.iter().any(|a| without_peer_id(a) == bare);
    is(punched) && !is(advertised)
}

/// Whether the routing table should drop `addr` of a peer: a relay circuit address the peer
/// no longer lists (`advertised`, its identify listen addresses). A circuit address reaches
/// the peer only while it holds a reservation at that relay, and its relay client lists it
/// exactly as long. Kademlia only ever adds addresses, so without this a public radiator that
/// listened through the relay until AutoNAT confirmed it (its first seconds) stayed listed at
/// that circuit, and every dial of it also asked the relay for a circuit the radiator
/// refused (`NO_RESERVATION`): `testnet/dht-scale` counted 153 such refusals at the relay in
/// 4 minutes with 4 public radiators and 24 homes, 80 with this. The rest: a table is only
/// corrected when its node next connects to the peer, and until then its lookup answers hand
/// the circuit on. A home that moved to another relay is the same case.
pub(crate) fn withdrawn_circuit(addr: &Multiaddr, advertised: &[Multiaddr]) -> bool {
    let bare = without_peer_id(addr);
    is_relayed(addr) && !advertised.iter().any(|a| without_peer_id(a) == bare)
}

/// The subnets of the peers in the routing table, and the admissions refused.
#[derive(Debug, Default)]
pub struct Diversity {
    /// Each admitted peer's subnet (`None`: not limited). Entries of peers that left the table
    /// are pruned once they outnumber the table's ([`Diversity::admit`]), so at most about
    /// twice the table's size (256 buckets × 20) plus 64.
    counted: HashMap<PeerId, Option<Subnet>>,
    limit_local: bool,
    refused: u64,
}

impl Diversity {
    pub fn new(limit_local: bool) -> Diversity {
        Diversity {
            limit_local,
            ..Diversity::default()
        }
    }

    /// Whether `peer`, not in the routing table, seen at `seen_at`, may go into it. `bucket`:
    /// the peers of the bucket it falls into; `table`: every peer in the table (the bucket's
    /// included). On `Ok` the peer is counted by its subnet from now on.
    pub fn admit(
        &mut self,
        peer: PeerId,
        seen_at: &Multiaddr,
        bucket: &[PeerId],
        table: &[PeerId],
    ) -> Result<(), Refusal> {
        let subnet = subnet_of(seen_at, self.limit_local);
        if let Some(s) = subnet {
            let of_subnet = |peers: &[PeerId]| {
                peers
                    .iter()
                    .filter(|p| **p != peer && self.counted.get(*p) == Some(&Some(s)))
                    .count()
            };
            if of_subnet(bucket) >= MAX_TABLE_PEERS_PER_SUBNET_PER_BUCKET {
                self.refused += 1;
                return Err(Refusal::Bucket(s));
            }
            if of_subnet(table) >= MAX_TABLE_PEERS_PER_SUBNET {
                self.refused += 1;
                return Err(Refusal::Table(s));
            }
        }
        self.count(peer, subnet, table);
        Ok(())
    }

    /// Admits `peer` at an address the operator configured (a bootstrap node): counted
    /// against no subnet.
    pub fn admit_trusted(&mut self, peer: PeerId, table: &[PeerId]) {
        self.count(peer, None, table);
    }

    /// Admissions refused since start.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn count(&mut self, peer: PeerId, subnet: Option<Subnet>, table: &[PeerId]) {
        self.counted.insert(peer, subnet);
        if self.counted.len() > 2 * table.len() + 64 {
            let members: HashSet<&PeerId> = table.iter().collect();
            self.counted
                .retain(|p, _| *p == peer || members.contains(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hole_punchs_address_stays_out_of_the_table_unless_the_peer_advertises_it() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let id = "/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE";
        let mapping = a(&format!("/ip4/203.0.113.11/tcp/4001{id}"));
        let punched = [mapping.clone()];
        let circuit = [a(&format!(
            "/ip4/198.51.100.2/tcp/4001/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz/p2p-circuit{id}"
        ))];
        // Kademlia offers the punched mapping (with or without the peer id): dropped.
        assert!(punched_only(&mapping, &punched, &circuit));
        assert!(punched_only(
            &a("/ip4/203.0.113.11/tcp/4001"),
            &punched,
            &[]
        ));
        // Anything else stays: the relay circuit, an address never punched.
        assert!(!punched_only(&circuit[0], &punched, &circuit));
        assert!(!punched_only(
            &a("/ip4/198.51.100.3/tcp/4001"),
            &punched,
            &[]
        ));
        // A mapping the peer advertises itself (confirmed by AutoNAT: it takes dials) stays.
        assert!(!punched_only(
            &mapping,
            &punched,
            &[a("/ip4/203.0.113.11/tcp/4001")]
        ));
    }

    #[test]
    fn a_circuit_the_peer_no_longer_lists_is_dropped_and_nothing_else() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let id = "/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE";
        let relay = "/p2p/12D3KooWCQ7VyJfZhSX95n2qamrVEGkr2aCWtQPqWD6W7BryLDLz";
        let old = a(&format!("/ip4/198.51.100.2/tcp/4001{relay}/p2p-circuit"));
        let new = a(&format!("/ip4/198.51.100.4/tcp/4001{relay}/p2p-circuit"));
        let direct = a("/ip4/198.19.1.2/tcp/4001");
        // Reachable directly now, no circuit listed: the old circuit goes, with or without the
        // peer's id on it; the direct address stays whatever is listed.
        assert!(withdrawn_circuit(&old, std::slice::from_ref(&direct)));
        assert!(withdrawn_circuit(
            &a(&format!("{old}{id}")),
            std::slice::from_ref(&direct)
        ));
        assert!(!withdrawn_circuit(&direct, &[]));
        // Still listed (with the peer's id or without): it stays.
        assert!(!withdrawn_circuit(&old, &[a(&format!("{old}{id}"))]));
        assert!(!withdrawn_circuit(
            &a(&format!("{old}{id}")),
            std::slice::from_ref(&old)
        ));
        // Moved to another relay: the old one goes, the new one stays.
        assert!(withdrawn_circuit(&old, std::slice::from_ref(&new)));
        assert!(!withdrawn_circuit(&new, std::slice::from_ref(&new)));
    }

    fn at(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/4001").parse().unwrap()
    }

    /// Admits `peer` into `bucket` of a table kept as a list of buckets, as the swarm task does.
    fn offer(
        d: &mut Diversity,
        table: &mut [Vec<PeerId>],
        bucket: usize,
        peer: PeerId,
        seen_at: &Multiaddr,
    ) -> Result<(), Refusal> {
        let all: Vec<PeerId> = table.iter().flatten().copied().collect();
        d.admit(peer, seen_at, &table[bucket], &all)?;
        table[bucket].push(peer);
        Ok(())
    }

    #[test]
    fn a_subnet_holds_two_peers_of_a_bucket() {
        let mut d = Diversity::new(false);
        let mut table = vec![Vec::new(); 4];
        for i in 0..2 {
            offer(
                &mut d,
                &mut table,
                0,
                PeerId::random(),
                &at(&format!("198.51.100.{i}")),
            )
            .expect("room");
        }
        let third = offer(&mut d, &mut table, 0, PeerId::random(), &at("198.51.100.9"));
        assert!(matches!(third, Err(Refusal::Bucket(_))), "{third:?}");
        // Another subnet, and the same subnet in another bucket, still get in.
        offer(&mut d, &mut table, 0, PeerId::random(), &at("203.0.113.1")).expect("other net");
        offer(&mut d, &mut table, 1, PeerId::random(), &at("198.51.100.9")).expect("other bucket");
        assert_eq!(d.refused(), 1);
    }

    #[test]
    fn a_subnet_holds_ten_peers_of_the_table() {
        let mut d = Diversity::new(false);
        let mut table = vec![Vec::new(); 8];
        for i in 0..MAX_TABLE_PEERS_PER_SUBNET {
            offer(
                &mut d,
                &mut table,
                i % 8,
                PeerId::random(),
                &at("198.51.100.7"),
            )
            .expect("room in the table");
        }
        let next = offer(&mut d, &mut table, 7, PeerId::random(), &at("198.51.100.8"));
        assert!(matches!(next, Err(Refusal::Table(_))), "{next:?}");
    }

    #[test]
    fn a_slot_frees_when_its_peer_leaves_the_table() {
        let mut d = Diversity::new(false);
        let mut table = vec![Vec::new(); 1];
        for _ in 0..2 {
            offer(&mut d, &mut table, 0, PeerId::random(), &at("198.51.100.1")).unwrap();
        }
        let late = PeerId::random();
        assert!(offer(&mut d, &mut table, 0, late, &at("198.51.100.1")).is_err());
        // Kademlia dropped one on its own (no event reaches this module).
        table[0].remove(0);
        offer(&mut d, &mut table, 0, late, &at("198.51.100.1")).expect("a slot is free");
    }

    #[test]
    fn local_networks_are_limited_only_when_asked() {
        let mut open = Diversity::new(false);
        let mut limited = Diversity::new(true);
        let (mut t1, mut t2) = (vec![Vec::new(); 1], vec![Vec::new(); 1]);
        for i in 0..5 {
            let a = at(&format!("127.0.0.{i}"));
            offer(&mut open, &mut t1, 0, PeerId::random(), &a).expect("loopback is open");
            let _ = offer(&mut limited, &mut t2, 0, PeerId::random(), &a);
        }
        assert_eq!((t1[0].len(), t2[0].len()), (5, 2));
        // A private network's hosts one by one: two places for one host, others still in.
        let mut lan = Diversity::new(false);
        let mut t = vec![Vec::new(); 1];
        for _ in 0..3 {
            let _ = offer(&mut lan, &mut t, 0, PeerId::random(), &at("192.168.1.9"));
        }
        offer(&mut lan, &mut t, 0, PeerId::random(), &at("192.168.1.10")).expect("another host");
        assert_eq!(t[0].len(), 3);
        // Trusted (bootstrap) peers count against nothing.
        let mut d = Diversity::new(true);
        let mut t = vec![Vec::new(); 1];
        for _ in 0..3 {
            let p = PeerId::random();
            d.admit_trusted(p, &t[0]);
            t[0].push(p);
        }
        offer(&mut d, &mut t, 0, PeerId::random(), &at("127.0.0.1")).unwrap();
        offer(&mut d, &mut t, 0, PeerId::random(), &at("127.0.0.1")).unwrap();
    }

    #[test]
    fn peers_without_an_ip_share_one_subnet() {
        let mut d = Diversity::new(false);
        let mut table = vec![Vec::new(); 1];
        let relayed = |p: PeerId| format!("/p2p/{p}").parse::<Multiaddr>().unwrap();
        for _ in 0..2 {
            let p = PeerId::random();
            offer(&mut d, &mut table, 0, p, &relayed(p)).unwrap();
        }
        let p = PeerId::random();
        assert_eq!(
            offer(&mut d, &mut table, 0, p, &relayed(p)),
            Err(Refusal::Bucket(Subnet::Unplaced))
        );
    }

    #[test]
    fn what_is_kept_stays_bounded_by_the_table() {
        let mut d = Diversity::new(false);
        let mut table = vec![Vec::new(); 1];
        for i in 0..10_000u32 {
            let a = at(&format!("10.{}.{}.1", (i >> 8) & 0xff, i & 0xff));
            offer(&mut d, &mut table, 0, PeerId::random(), &a).unwrap();
            if table[0].len() > 20 {
                table[0].remove(0);
            }
        }
        assert!(d.counted.len() <= 2 * 20 + 64 + 1, "{}", d.counted.len());
    }

    proptest! {
        /// Whatever peers arrive, from whatever subnets, into whatever buckets, and whatever
        /// Kademlia drops meanwhile, no subnet ever holds more than its share of a bucket or
        /// of the table.
        #[test]
        fn no_subnet_ever_holds_more_than_its_share(
            steps in proptest::collection::vec((0u8..6, 0usize..4, any::<bool>()), 1..300)
        ) {
            let mut d = Diversity::new(false);
            let mut table: Vec<Vec<(PeerId, u8)>> = vec![Vec::new(); 4];
            for (net, bucket, drop_one) in steps {
                if drop_one && !table[bucket].is_empty() {
                    table[bucket].remove(0);
                }
                let peer = PeerId::random();
                let ids: Vec<Vec<PeerId>> =
                    table.iter().map(|b| b.iter().map(|(p, _)| *p).collect()).collect();
                let all: Vec<PeerId> = ids.iter().flatten().copied().collect();
                if d.admit(peer, &at(&format!("198.51.{net}.1")), &ids[bucket], &all).is_ok() {
                    table[bucket].push((peer, net));
                }
                for net in 0..6u8 {
                    let per_bucket = table
                        .iter()
                        .map(|b| b.iter().filter(|(_, n)| *n == net).count())
                        .max()
                        .unwrap_or(0);
                    let in_table: usize =
                        table.iter().map(|b| b.iter().filter(|(_, n)| *n == net).count()).sum();
                    prop_assert!(per_bucket <= MAX_TABLE_PEERS_PER_SUBNET_PER_BUCKET);
                    prop_assert!(in_table <= MAX_TABLE_PEERS_PER_SUBNET);
                }
            }
        }
    }
}
