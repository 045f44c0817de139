//! Work beyond a coordinator's neighbours: where coordinators with open jobs and radiators
//! that want heat say so on the DHT, and how the Kademlia store of every node keeps those
//! records short-lived and bounded.
//!
//! A coordinator offers its jobs to the peers it is connected to (`docs/protocol.md`, "How
//! work and heat demand travel"). In a large network those are its Kademlia neighbourhood, so
//! a radiator whose neighbours have no work would stay cold while a coordinator further away
//! has more work than its own neighbours want. So two *boards* ([`Board`]) are kept on the
//! DHT as provider records under short-lived keys, drawn at random among the buckets in use
//! ([`buckets_in_use`]: one in a network of a few hundred nodes, up to [`MAX_BUCKETS`] in a
//! large one) each time a record is published: a coordinator with an open job is on the
//! *work* board, and looks the *want* board up and offers its jobs to the radiators it finds;
//! a cold radiator that no coordinator offers work is on the want board, and looks the work
//! board up and tells the coordinators it finds its heat demand, which makes them offer it
//! their jobs. Each publishes before it looks, so whichever of the two comes second finds
//! the first: a job submitted after a radiator's lookup found nothing reaches it at once,
//! not at the radiator's next lookup (up to 21 minutes later).
//!
//! Blob provider records live 48 hours and are published every 6 hours. A board record must
//! not: a coordinator's work ends within minutes, and a record that outlived it would send
//! radiators to a coordinator with nothing to give (and, in libp2p's `MemoryStore`, whose
//! full key ignores newcomers, would keep live coordinators out). So every node's store
//! ([`Store`]) keeps board records apart: each expires its board's TTL ([`Board::ttl`]) after
//! it was last published, whatever TTL the publisher's or this node's Kademlia configuration
//! names, and there are at most `2 × 256 × MAX_WORK_PROVIDERS` of them: the keys are
//! recognised by their exact form, so no peer can make this node hold more. Everything else
//! goes to libp2p's `MemoryStore` as before. Must not touch: the swarm, the coordinator.
//!
//! A full key ignores newcomers, so whoever fills a key's slots first keeps them while they
//! keep publishing. Identities cost nothing to make; addresses do. So one *subnet* (the
//! IPv4 /24 or IPv6 /48 a provider's connection comes from, [`subnet_of`]) holds at most
//! [`MAX_WORK_PROVIDERS_PER_SUBNET`] of a key's slots at this node: filling a key takes
//! addresses in ten networks, not twenty fresh keys on one machine. On a private network (a
//! household's LAN, a docker testnet) each host counts as a network of its own; loopback is
//! not limited unless the node is told to (`NetConfig::limit_local_networks`).
//!
//! Size: about 820 lines, past the house style's limit: the code is about 440 (the boards'
//! keys, the network-size estimate, the subnet rules and the store); the rest is their unit
//! and property tests, which need the store's private parts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::kad::store::{self, MemoryStore, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::remote::{trim_addresses, RemoteProviders};

/// Nodes per work bucket: the buckets in use are about the network's size divided by this
/// ([`buckets_in_use`]), so that in a small network every coordinator with work is under one
/// key and a radiator's first lookup finds them all, and in a large one the publications of
/// many coordinators spread over many keys (and so over many DHT nodes).
pub const NODES_PER_BUCKET: u64 = 256;
/// The most buckets in use, whatever the network's size (the key's last byte).
pub const MAX_BUCKETS: u16 = 256;
/// How often a coordinator with an open job publishes its work record again, under a bucket
/// drawn anew. Each publication is a Kademlia lookup that dials about 25 peers in a large
/// network (`docs/scale.md`): every 5 minutes is about 66 MB a day for a coordinator whose
/// job stays open all day, every minute would be five times that.
pub const WORK_PROVIDE_PERIOD: Duration = Duration::from_secs(300);
/// How long a work record lives in a hearth node's store after its last publication: a
/// little over two publication periods, so one lost publication does not hide a coordinator.
/// A coordinator is therefore under two or three buckets at once, and its records outlive
/// its last job by at most this (a radiator that finds it then is told nothing).
pub const WORK_RECORD_TTL: Duration = Duration::from_secs(720);
/// How often a radiator that wants heat, and that no coordinator offers work, publishes its
/// want record again. Four times the coordinators' period: a cold radiator may want heat all
/// day in a network without work; 72 publications of about 270 kB in a large network
/// (`docs/scale.md`) are about 19 MB a day, as much as its lookups of the work board.
pub const WANT_PROVIDE_PERIOD: Duration = Duration::from_secs(1_200);
/// How long a want record lives after its last publication: a little over two periods. A
/// radiator that warmed up or was offered work stays on the board at most this long; a
/// coordinator that finds it then sends one announcement for nothing.
pub const WANT_RECORD_TTL: Duration = Duration::from_secs(2_700);
/// Providers kept per board key (Kademlia's k): a radiator needs one coordinator with work,
/// not every one, and a coordinator a few radiators that want heat.
pub const MAX_WORK_PROVIDERS: usize = 20;
/// Slots of one work key that providers from one network ([`subnet_of`]) may hold at this
/// node: ten networks are needed to fill a key, and honest coordinators behind one address
/// (a campus, a carrier-grade NAT) still have two.
pub const MAX_WORK_PROVIDERS_PER_SUBNET: usize = 2;
/// Providers one lookup hands back; the rest are not needed to find work or workers.
pub const MAX_WORK_FOUND: usize = 8;

/// The two boards kept under short-lived keys on the DHT: whoever arrives second finds the
/// first. A coordinator with an open job publishes on the work board and then looks the want
/// board up; a cold radiator publishes on the want board and then looks the work board up.
/// Each publishes before it looks, so of a coordinator and a radiator that arrive together at
/// least one finds the other (the later lookup starts after the earlier publication ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Board {
    /// Coordinators with an open job: keys `hearth/work/1/` and a bucket byte.
    Work,
    /// Radiators that want heat and that no coordinator offers work: keys `hearth/want/1/`
    /// and a bucket byte.
    Want,
}

impl Board {
    fn prefix(self) -> &'static [u8] {
        match self {
            Board::Work => b"hearth/work/1/",
            Board::Want => b"hearth/want/1/",
        }
    }

    /// The DHT key of bucket `bucket` of this board: the 14 ASCII bytes of the prefix
    /// followed by the bucket as one byte (`docs/protocol.md`, section 2).
    pub fn key(self, bucket: u8) -> RecordKey {
        let mut k = self.prefix().to_vec();
        k.push(bucket);
        RecordKey::new(&k)
    }

    /// The board `key` belongs to, recognised by its exact form; `None` for any other key.
    pub fn of(key: &RecordKey) -> Option<Board> {
        let k = key.as_ref();
        [Board::Work, Board::Want]
            .into_iter()
            .find(|b| k.len() == b.prefix().len() + 1 && k.starts_with(b.prefix()))
    }

    /// How long a hearth node keeps a record of this board after it arrived, whatever the
    /// publisher's Kademlia configuration says.
    pub fn ttl(self) -> Duration {
        match self {
            Board::Work => WORK_RECORD_TTL,
            Board::Want => WANT_RECORD_TTL,
        }
    }
}

/// How big the network is, estimated from how many peers this node's Kademlia routing table
/// holds (`routing_peers`). With k = 20, a table holds every peer while the network has
/// fewer than k, and otherwise about k per halving of the key space between the network's
/// size and k: `T ≈ k·log₂(N/k) + k`, so `N ≈ k·2^((T − k)/k)`. Rough (a factor of two either
/// way), which is all [`buckets_in_use`] needs.
pub fn network_size_estimate(routing_peers: usize) -> u64 {
    const K: u64 = 20;
    let t = routing_peers as u64;
    if t < K {
        return t + 1;
    }
    // 2^((t - k)/k) with the exponent capped: the table of a node holds at most 256 × k.
    let halvings = ((t - K) / K).min(40) as u32;
    K.saturating_mul(1u64 << halvings)
}

/// How many work buckets are in use in a network of about `nodes` nodes: a power of two
/// from 1 to [`MAX_BUCKETS`]. Coordinators and radiators each estimate `nodes` on their own;
/// an estimate twice too large or small halves the chance of one lookup, not more.
pub fn buckets_in_use(nodes: u64) -> u16 {
    let wanted = (nodes / NODES_PER_BUCKET).max(1);
    let pow = 1u64 << (63 - wanted.leading_zeros());
    pow.min(u64::from(MAX_BUCKETS)) as u16
}

/// The bucket a coordinator publishes under, or a radiator looks up, drawn from `random`.
pub fn draw_bucket(in_use: u16, random: u8) -> u8 {
    (u16::from(random) % in_use.clamp(1, MAX_BUCKETS)) as u8
}

/// The subnet a connection comes from, for sharing out a work key's slots: an IPv4 /24 or an
/// IPv6 /48 (what one site or one customer of a provider usually holds); on a private network,
/// one host (on a household's LAN or a docker network every machine is a neighbour, but a
/// machine with many identities is still one machine); or, for an address with no IP to place
/// it by, one subnet shared by all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subnet {
    V4([u8; 3]),
    V6([u8; 6]),
    /// One address of a private, carrier-grade NAT, link-local or unique-local network.
    Host(std::net::IpAddr),
    /// No IP in the address: a connection that came in through a relay (libp2p gives its
    /// remote address as `/p2p/<source>` alone) or one dialled by name.
    Unplaced,
}

/// The subnet of a connection's remote address `addr`: that of the first IP in it (for a
/// connection this node made through a relay, the relay's, so every peer behind one relay
/// shares it), [`Subnet::Unplaced`] without one. A private, link-local, carrier-grade NAT or
/// unique-local address is a [`Subnet::Host`] of its own unless `limit_local` is on (then its
/// /24 or /48, as on the internet). `None`: no limit applies, because the address is loopback
/// (or unspecified) and `limit_local` is off: many nodes on one machine are a lab, a test or
/// the demo.
pub fn subnet_of(addr: &Multiaddr, limit_local: bool) -> Option<Subnet> {
    let Some(ip) = addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    }) else {
        return Some(Subnet::Unplaced);
    };
    match ip {
        std::net::IpAddr::V4(ip) => {
            if !limit_local && is_local_v4(ip) {
                return (!ip.is_loopback() && !ip.is_unspecified())
                    .then_some(Subnet::Host(std::net::IpAddr::V4(ip)));
            }
            let o = ip.octets();
            Some(Subnet::V4([o[0], o[1], o[2]]))
        }
        std::net::IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return subnet_of(&Multiaddr::empty().with(Protocol::Ip4(v4)), limit_local);
            }
            if !limit_local && is_local_v6(ip) {
                return (!ip.is_loopback() && !ip.is_unspecified())
                    .then_some(Subnet::Host(std::net::IpAddr::V6(ip)));
            }
            let o = ip.octets();
            Some(Subnet::V6([o[0], o[1], o[2], o[3], o[4], o[5]]))
        }
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64; // 100.64.0.0/10
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified() || shared
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
}

/// One work record and the network it came from (`None`: this node's own, or not limited).
struct WorkProvider {
    record: ProviderRecord,
    subnet: Option<Subnet>,
}

/// Kademlia's record store on every hearth node: work records apart and short-lived, blob
/// records other nodes sent apart and bounded (`remote.rs`), this node's own blob records in
/// libp2p's `MemoryStore`, and no value records.
pub struct Store {
    inner: MemoryStore,
    remote: RemoteProviders,
    /// Board key (work or want) → its providers, each with an expiry no later than its
    /// board's TTL ([`Board::ttl`]) after it was stored. At most 2 × 256 keys (the boards'
    /// form), [`MAX_WORK_PROVIDERS`] each.
    work: HashMap<RecordKey, Vec<WorkProvider>>,
    /// Count loopback and private networks by their /24 or /48, as public ones ([`subnet_of`]).
    limit_local: bool,
    /// Work records refused since start because their network held its share of the key.
    refused: u64,
}

impl Store {
    pub fn new(inner: MemoryStore, limit_local: bool) -> Store {
        Store {
            inner,
            remote: RemoteProviders::default(),
            work: HashMap::new(),
            limit_local,
            refused: 0,
        }
    }

    /// Stores a provider record a peer sent (Kademlia's `ADD_PROVIDER`, passed on by the swarm
    /// task because this store filters them), `from` being the remote address of the
    /// connection it came over (`None`: unknown, and then the record is refused, since its
    /// subnet cannot be counted). Work records go to the work keys, blob records to
    /// [`RemoteProviders`]; neither ever counts against this node's own.
    pub fn add_provider_from(&mut self, record: ProviderRecord, from: Option<&Multiaddr>) {
        let board = Board::of(&record.key);
        let Some(addr) = from else {
            if board.is_some() {
                self.refused += 1;
            } else {
                self.remote.refuse();
            }
            return;
        };
        let subnet = subnet_of(addr, self.limit_local);
        if let Some(board) = board {
            self.add_work(board, record, subnet, Instant::now());
        } else {
            self.remote.add(record, subnet, Instant::now());
        }
    }

    /// Adds a record of `board` from `network`, `now` being the time it arrived. A provider
    /// already there is refreshed in place; a newcomer takes a free slot if its network holds
    /// fewer than [`MAX_WORK_PROVIDERS_PER_SUBNET`] of the key's live records.
    fn add_work(
        &mut self,
        board: Board,
        mut record: ProviderRecord,
        subnet: Option<Subnet>,
        now: Instant,
    ) {
        let ttl_end = now + board.ttl();
        record.expires = Some(record.expires.map_or(ttl_end, |e| e.min(ttl_end)));
        trim_addresses(&mut record.addresses);
        let providers = self.work.entry(record.key.clone()).or_default();
        providers.retain(|p| !p.record.is_expired(now));
        if let Some(p) = providers
            .iter_mut()
            .find(|p| p.record.provider == record.provider)
        {
            // Its slot stays its own, from whatever network it now publishes.
            *p = WorkProvider { record, subnet };
            return;
        }
        let same_subnet = subnet.map_or(0, |n| {
            providers.iter().filter(|p| p.subnet == Some(n)).count()
        });
        // A full key ignores newcomers until one of its records expires (as libp2p's
        // MemoryStore does): a flood of fresh identities cannot push out coordinators that
        // keep publishing, and one network cannot take more than its share of the slots.
        if providers.len() < MAX_WORK_PROVIDERS && same_subnet < MAX_WORK_PROVIDERS_PER_SUBNET {
            providers.push(WorkProvider { record, subnet });
        } else {
            self.refused += 1;
        }
    }

    fn work_providers(&self, key: &RecordKey, now: Instant) -> Vec<ProviderRecord> {
        self.work
            .get(key)
            .map(|ps| {
                ps.iter()
                    .filter(|p| !p.record.is_expired(now))
                    .map(|p| p.record.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live records of `board` this node holds for other nodes and itself: `NetStatus`.
    pub fn board_count(&self, board: Board) -> usize {
        let now = Instant::now();
        self.work
            .iter()
            .filter(|(k, _)| Board::of(k) == Some(board))
            .map(|(_, ps)| ps.iter().filter(|p| !p.record.is_expired(now)).count())
            .sum()
    }

    /// Records of either board refused since start (a key full, or its network's share
    /// taken): `NetStatus`.
    pub fn board_refused(&self) -> u64 {
        self.refused
    }

    /// Work records this store holds now, expired ones included until their key is next
    /// written (what bounds memory is the number of keys and providers, not their age).
    #[cfg(test)]
    fn work_records(&self) -> usize {
        self.work.values().map(Vec::len).sum()
    }

    /// Blob provider records held for other nodes, and those refused since start.
    pub fn blob_counts(&self) -> (usize, u64) {
        self.remote.counts()
    }

    #[cfg(test)]
    fn remote_blob_records(&self) -> usize {
        self.remote.counts().0
    }
}

impl RecordStore for Store {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    /// Hearth uses no value records (no `PUT_VALUE` or `GET_VALUE` of its own), so it keeps
    /// none: a peer's are answered by Kademlia and dropped here, instead of holding up to
    /// 1 024 of up to 16 KiB each in the `MemoryStore`.
    fn put(&mut self, _: Record) -> store::Result<()> {
        Err(store::Error::MaxRecords)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    /// Records of this node's own (Kademlia's `start_providing`): a peer's come through
    /// [`Store::add_provider_from`].
    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        if let Some(board) = Board::of(&record.key) {
            self.add_work(board, record, None, Instant::now());
            return Ok(());
        }
        self.inner.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        if Board::of(key).is_some() {
            return self.work_providers(key, Instant::now());
        }
        let mut all = self.inner.providers(key);
        all.extend(self.remote.providers(key, Instant::now()));
        all
    }

    /// Only blob records: Kademlia republishes these every 6 hours. This node's own work
    /// records are published again by its coordinator while it has work.
    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if Board::of(key).is_some() {
            if let Some(ps) = self.work.get_mut(key) {
                ps.retain(|p| &p.record.provider != provider);
                if ps.is_empty() {
                    self.work.remove(key);
                }
            }
            return;
        }
        self.remote.remove(key, provider);
        self.inner.remove_provider(key, provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: RecordKey, provider: PeerId, expires: Option<Instant>) -> ProviderRecord {
        ProviderRecord {
            key,
            provider,
            expires,
            addresses: Vec::new(),
        }
    }

    fn store() -> Store {
        Store::new(MemoryStore::new(PeerId::random()), false)
    }

    #[test]
    fn a_small_network_uses_one_bucket_and_a_large_one_many() {
        assert_eq!(network_size_estimate(0), 1);
        assert_eq!(network_size_estimate(2), 3);
        assert_eq!(buckets_in_use(network_size_estimate(2)), 1);
        // k = 20 per halving: a table of 200 peers says about 20 · 2⁹ = 10 240 nodes.
        assert_eq!(network_size_estimate(200), 10_240);
        assert_eq!(buckets_in_use(10_240), 32);
        assert_eq!(buckets_in_use(1_000_000), 256);
        assert_eq!(buckets_in_use(network_size_estimate(usize::MAX)), 256);
        assert_eq!(draw_bucket(1, 255), 0);
        assert_eq!(draw_bucket(16, 19), 3);
        assert_eq!(draw_bucket(256, 255), 255);
    }

    proptest::proptest! {
        /// Bucket counts are powers of two within bounds and grow with the network; a drawn
        /// bucket is one in use.
        #[test]
        fn buckets_stay_in_range(t in 0usize..10_000, r in proptest::prelude::any::<u8>()) {
            let n = network_size_estimate(t);
            let b = buckets_in_use(n);
            proptest::prop_assert!(b.is_power_of_two() && (1..=MAX_BUCKETS).contains(&b));
            proptest::prop_assert!(buckets_in_use(network_size_estimate(t + 1)) >= b);
            proptest::prop_assert!(u16::from(draw_bucket(b, r)) < b);
        }
    }

    #[test]
    fn board_keys_are_recognised_by_their_exact_form() {
        for board in [Board::Work, Board::Want] {
            assert_eq!(Board::of(&board.key(0)), Some(board));
            assert_eq!(Board::of(&board.key(255)), Some(board));
            assert_ne!(board.key(1), board.key(2));
        }
        assert_eq!(Board::Want.key(7).as_ref(), b"hearth/want/1/\x07");
        assert_ne!(Board::Work.key(0), Board::Want.key(0));
        assert_eq!(Board::of(&RecordKey::new(b"hearth/work/1/")), None);
        assert_eq!(Board::of(&RecordKey::new(b"hearth/work/1/ab")), None);
        assert_eq!(Board::of(&RecordKey::new(b"hearth/want/2/a")), None);
        assert_eq!(
            Board::of(&RecordKey::new(blake3::hash(b"x").as_bytes())),
            None
        );
    }

    /// A want record lives its own board's TTL, longer than a work record's, and shares the
    /// store's bounds: a key's twenty slots, a network's two.
    #[test]
    fn a_want_record_lives_its_boards_ttl_and_shares_the_bounds() {
        let mut s = store();
        let now = Instant::now();
        let here = subnet_of(&addr("/ip4/198.51.100.1/tcp/1"), false);
        for _ in 0..5 {
            let r = record(Board::Want.key(0), PeerId::random(), None);
            s.add_work(Board::Want, r, here, now);
        }
        let r = record(Board::Work.key(0), PeerId::random(), None);
        s.add_work(Board::Work, r, here, now);
        assert_eq!(s.board_count(Board::Want), MAX_WORK_PROVIDERS_PER_SUBNET);
        assert_eq!(s.board_count(Board::Work), 1);
        assert_eq!(s.board_refused(), 3);
        let after_work = now + WORK_RECORD_TTL + Duration::from_secs(1);
        assert!(s.work_providers(&Board::Work.key(0), after_work).is_empty());
        assert_eq!(s.work_providers(&Board::Want.key(0), after_work).len(), 2);
        let after_want = now + WANT_RECORD_TTL + Duration::from_secs(1);
        assert!(s.work_providers(&Board::Want.key(0), after_want).is_empty());
        for bucket in 0..=255u8 {
            for _ in 0..(MAX_WORK_PROVIDERS + 1) {
                s.add_provider(record(Board::Want.key(bucket), PeerId::random(), None))
                    .unwrap();
            }
        }
        assert_eq!(s.work.len(), 1 + 256, "one work key, every want key");
        assert!(s.work_records() <= 2 * 256 * MAX_WORK_PROVIDERS);
    }

    #[test]
    fn a_work_record_expires_soon_whatever_ttl_it_came_with() {
        let mut s = store();
        let now = Instant::now();
        let far = now + Duration::from_secs(48 * 3600);
        let p = PeerId::random();
        s.add_work(
            Board::Work,
            record(Board::Work.key(3), p, Some(far)),
            None,
            now,
        );
        let q = PeerId::random();
        s.add_work(Board::Work, record(Board::Work.key(3), q, None), None, now);
        assert_eq!(s.work_providers(&Board::Work.key(3), now).len(), 2);
        let later = now + WORK_RECORD_TTL + Duration::from_millis(1);
        assert!(s.work_providers(&Board::Work.key(3), later).is_empty());
        // Published again: alive again, and the expired one makes room when the key is written.
        s.add_work(
            Board::Work,
            record(Board::Work.key(3), p, Some(far)),
            None,
            later,
        );
        let got = s.work_providers(&Board::Work.key(3), later);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].provider, p);
        assert_eq!(s.work_records(), 1);
    }

    #[test]
    fn a_full_work_key_keeps_the_providers_that_keep_publishing() {
        let mut s = store();
        let now = Instant::now();
        let first: Vec<PeerId> = (0..MAX_WORK_PROVIDERS).map(|_| PeerId::random()).collect();
        for p in &first {
            s.add_work(Board::Work, record(Board::Work.key(0), *p, None), None, now);
        }
        s.add_work(
            Board::Work,
            record(Board::Work.key(0), PeerId::random(), None),
            None,
            now,
        );
        let got = s.work_providers(&Board::Work.key(0), now);
        assert_eq!(got.len(), MAX_WORK_PROVIDERS);
        assert!(got.iter().all(|r| first.contains(&r.provider)));
        // A provider already there is refreshed in place.
        let t = now + Duration::from_secs(100);
        s.add_work(
            Board::Work,
            record(Board::Work.key(0), first[0], None),
            None,
            t,
        );
        let after_first_ttl = now + WORK_RECORD_TTL + Duration::from_secs(1);
        let alive = s.work_providers(&Board::Work.key(0), after_first_ttl);
        assert_eq!(alive.len(), 1);
        assert_eq!(alive[0].provider, first[0]);
    }

    #[test]
    fn however_many_keys_and_providers_a_peer_sends_the_store_stays_bounded() {
        let mut s = store();
        for bucket in 0..=255u8 {
            for _ in 0..(MAX_WORK_PROVIDERS + 5) {
                s.add_provider(record(Board::Work.key(bucket), PeerId::random(), None))
                    .unwrap();
            }
        }
        assert_eq!(s.work.len(), 256);
        assert_eq!(s.work_records(), 256 * MAX_WORK_PROVIDERS);
    }

    #[test]
    fn blob_records_still_go_to_the_memory_store_and_work_records_are_not_republished() {
        let local = PeerId::random();
        let mut s = Store::new(MemoryStore::new(local), false);
        let blob = RecordKey::new(blake3::hash(b"blob").as_bytes());
        s.add_provider(record(blob.clone(), local, None)).unwrap();
        s.add_provider(record(Board::Work.key(5), local, None))
            .unwrap();
        let provided: Vec<RecordKey> = s.provided().map(|r| r.key.clone()).collect();
        assert_eq!(provided, vec![blob.clone()]);
        assert_eq!(s.providers(&blob).len(), 1);
        assert_eq!(s.providers(&Board::Work.key(5)).len(), 1);
        s.remove_provider(&Board::Work.key(5), &local);
        assert!(s.providers(&Board::Work.key(5)).is_empty());
        assert!(s.work.is_empty());
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_is_a_slash_24_or_a_slash_48_a_private_one_a_host_and_loopback_free() {
        let net = |s: &str| subnet_of(&addr(s), false);
        let a = net("/ip4/198.51.100.7/tcp/4001");
        assert!(a.is_some());
        assert_eq!(a, net("/ip4/198.51.100.200/udp/9/quic-v1"));
        assert_ne!(a, net("/ip4/198.51.101.7/tcp/4001"));
        // A relayed connection counts as its relay's network.
        let relay = PeerId::random();
        let relayed = format!("/ip4/198.51.100.2/tcp/4001/p2p/{relay}/p2p-circuit");
        assert_eq!(net(&relayed), a);
        // IPv6: the first 48 bits.
        let b = net("/ip6/2001:db8:1:2::1/tcp/1");
        assert!(b.is_some());
        assert_eq!(b, net("/ip6/2001:db8:1:ffff::9/tcp/1"));
        assert_ne!(b, net("/ip6/2001:db8:2:2::1/tcp/1"));
        assert_eq!(net("/ip6/::ffff:198.51.100.9/tcp/1"), a);
        // Loopback is free unless limited on purpose; on a private network each host is a
        // network of its own (limited on purpose: its /24 or /48).
        for local in ["/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/1"] {
            assert_eq!(net(local), None, "{local}");
            assert!(subnet_of(&addr(local), true).is_some(), "{local}");
        }
        for private in [
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.20.0.5/tcp/1",
            "/ip4/192.168.1.9/tcp/1",
            "/ip4/100.64.3.4/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
        ] {
            assert!(matches!(net(private), Some(Subnet::Host(_))), "{private}");
            assert!(
                !matches!(subnet_of(&addr(private), true), Some(Subnet::Host(_))),
                "{private}"
            );
        }
        assert_ne!(net("/ip4/10.1.2.3/tcp/1"), net("/ip4/10.1.2.4/tcp/1"));
        assert_eq!(
            net("/ip4/10.1.2.3/tcp/1"),
            net("/ip4/10.1.2.3/udp/9/quic-v1")
        );
        assert_eq!(net("/ip4/100.128.0.1/tcp/1").map(|_| ()), Some(()));
        // No IP to place it by: a connection that came in through a relay (libp2p gives its
        // remote address as `/p2p/<source>` alone) or a name. All such share one subnet,
        // limited like any other. (Were not limited before: an attacker reaching a home
        // through a relay could fill its work keys from one machine.)
        let unplaced = net(&format!("/p2p/{relay}"));
        assert!(unplaced.is_some());
        assert_eq!(net("/dns4/example.org/tcp/1"), unplaced);
        assert_ne!(unplaced, a);
    }

    #[test]
    fn one_network_holds_at_most_its_share_of_a_work_key() {
        let mut s = store();
        let now = Instant::now();
        let here = subnet_of(&addr("/ip4/198.51.100.1/tcp/1"), false);
        let there = subnet_of(&addr("/ip4/203.0.113.1/tcp/1"), false);
        let sybils: Vec<PeerId> = (0..MAX_WORK_PROVIDERS).map(|_| PeerId::random()).collect();
        for p in &sybils {
            s.add_work(Board::Work, record(Board::Work.key(0), *p, None), here, now);
        }
        let held = s.work_providers(&Board::Work.key(0), now);
        assert_eq!(held.len(), MAX_WORK_PROVIDERS_PER_SUBNET);
        assert_eq!(s.board_count(Board::Work), MAX_WORK_PROVIDERS_PER_SUBNET);
        assert_eq!(
            s.board_refused(),
            (MAX_WORK_PROVIDERS - MAX_WORK_PROVIDERS_PER_SUBNET) as u64
        );
        // Another network still gets in, and those held are refreshed in place.
        let honest = PeerId::random();
        s.add_work(
            Board::Work,
            record(Board::Work.key(0), honest, None),
            there,
            now,
        );
        s.add_work(
            Board::Work,
            record(Board::Work.key(0), held[0].provider, None),
            here,
            now,
        );
        let got: Vec<PeerId> = s
            .work_providers(&Board::Work.key(0), now)
            .iter()
            .map(|r| r.provider)
            .collect();
        assert_eq!(got.len(), MAX_WORK_PROVIDERS_PER_SUBNET + 1);
        assert!(got.contains(&honest));
        // The share is per key: the same network may hold its share of another key.
        s.add_work(
            Board::Work,
            record(Board::Work.key(1), sybils[5], None),
            here,
            now,
        );
        assert_eq!(s.work_providers(&Board::Work.key(1), now).len(), 1);
        // Once a record expires, its network's slot is free again.
        let later = now + WORK_RECORD_TTL + Duration::from_secs(1);
        s.add_work(
            Board::Work,
            record(Board::Work.key(0), sybils[9], None),
            here,
            later,
        );
        assert_eq!(s.work_providers(&Board::Work.key(0), later).len(), 1);
        // Unlimited (local or own) records fill the key up to its 20 as before.
        for _ in 0..MAX_WORK_PROVIDERS {
            s.add_work(
                Board::Work,
                record(Board::Work.key(2), PeerId::random(), None),
                None,
                now,
            );
        }
        assert_eq!(
            s.work_providers(&Board::Work.key(2), now).len(),
            MAX_WORK_PROVIDERS
        );
    }

    #[test]
    fn a_record_from_an_unknown_address_is_refused() {
        let mut s = store();
        s.add_provider_from(record(Board::Work.key(0), PeerId::random(), None), None);
        assert_eq!((s.board_count(Board::Work), s.board_refused()), (0, 1));
        let blob = RecordKey::new(blake3::hash(b"b").as_bytes());
        s.add_provider_from(record(blob.clone(), PeerId::random(), None), None);
        assert!(s.providers(&blob).is_empty());
        assert_eq!(s.blob_counts(), (0, 1));
        let from = addr("/ip4/198.51.100.1/tcp/1");
        s.add_provider_from(
            record(Board::Work.key(0), PeerId::random(), None),
            Some(&from),
        );
        s.add_provider_from(record(blob.clone(), PeerId::random(), None), Some(&from));
        assert_eq!(s.board_count(Board::Work), 1);
        assert_eq!(s.providers(&blob).len(), 1);
    }

    /// Blob provider records peers send are held apart from this node's own, bounded in
    /// number, share per subnet and addresses, so no flood of them can stop this node
    /// recording its own blobs or grow its memory without bound. (Failed before: libp2p's
    /// `MemoryStore` counted peers' keys against the 65 536 this node keeps for its own
    /// blobs, so a peer sending records for 65 536 made-up keys left it unable to provide
    /// anything, and each record kept every address it came with, up to 16 KiB of them.)
    #[test]
    fn a_flood_of_blob_records_leaves_room_for_our_own_and_stays_bounded() {
        use crate::net::behaviour::MAX_PROVIDED_KEYS;
        use crate::net::remote::{MAX_RECORD_ADDRESSES, MAX_REMOTE_BLOB_RECORDS};
        let local = PeerId::random();
        let mut s = Store::new(
            MemoryStore::with_config(
                local,
                libp2p::kad::store::MemoryStoreConfig {
                    max_provided_keys: MAX_PROVIDED_KEYS,
                    ..Default::default()
                },
            ),
            false,
        );
        let many_addrs: Vec<Multiaddr> = (0..200u16)
            .map(|p| addr(&format!("/ip4/198.51.100.9/tcp/{p}")))
            .collect();
        for i in 0..(MAX_PROVIDED_KEYS as u32 + 100) {
            let key = RecordKey::new(blake3::hash(&i.to_be_bytes()).as_bytes());
            // From many subnets, so only the overall bound can stop it.
            let from = addr(&format!("/ip4/11.{}.{}.1/tcp/1", (i >> 8) & 255, i & 255));
            let mut r = record(key, PeerId::random(), None);
            r.addresses = many_addrs.clone();
            s.add_provider_from(r, Some(&from));
        }
        let own = RecordKey::new(blake3::hash(b"our own blob").as_bytes());
        s.add_provider(record(own.clone(), local, None))
            .expect("our own record is kept whatever peers sent");
        assert_eq!(s.providers(&own).len(), 1);
        assert!(s.remote_blob_records() <= MAX_REMOTE_BLOB_RECORDS);
        let some = RecordKey::new(blake3::hash(&0u32.to_be_bytes()).as_bytes());
        let kept = s.providers(&some);
        assert!(kept
            .iter()
            .all(|r| r.addresses.len() <= MAX_RECORD_ADDRESSES));
    }

    /// Hearth uses no value records, so it keeps none: a peer's `PUT_VALUE` is answered by
    /// Kademlia and dropped. (Failed before: libp2p's `MemoryStore` kept up to 1 024 of them,
    /// each up to a 16 KiB message, 16 MiB of a radiator's memory for any peer to fill.)
    #[test]
    fn value_records_are_not_kept() {
        let mut s = store();
        let key = RecordKey::new(b"k");
        assert!(s.put(Record::new(key.clone(), vec![7u8; 1000])).is_err());
        assert!(s.get(&key).is_none());
        assert_eq!(s.records().count(), 0);
    }
}
