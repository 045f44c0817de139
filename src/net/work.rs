//! Work beyond a coordinator's neighbours: where coordinators with open jobs say so on the DHT,
//! and how the Kademlia store of every node keeps those records short-lived and bounded.
//!
//! A coordinator offers its jobs to the peers it is connected to (`docs/protocol.md`, "How
//! work and heat demand travel"). In a large network those are its Kademlia neighbourhood, so
//! a radiator whose neighbours have no work would stay cold while a coordinator further away
//! has more work than its own neighbours want. So a coordinator with an open job also keeps a
//! provider record under a *work key* ([`work_key`]), drawn at random among the buckets in use
//! ([`buckets_in_use`]: one in a network of a few hundred nodes, up to [`MAX_BUCKETS`] in a
//! large one) each time it publishes ([`WORK_PROVIDE_PERIOD`]); a cold radiator that no
//! coordinator offers work looks one of those keys up, and tells the providers it finds its
//! heat demand, which makes them offer it their jobs.
//!
//! Blob provider records live 48 hours and are published every 6 hours. A work record must
//! not: a coordinator's work ends within minutes, and a record that outlived it would send
//! radiators to a coordinator with nothing to give (and, in libp2p's `MemoryStore`, whose
//! full key ignores newcomers, would keep live coordinators out). So every node's store
//! ([`Store`]) keeps work records apart: each expires [`WORK_RECORD_TTL`] after it was last
//! published, whatever TTL the publisher's or this node's Kademlia configuration names, and
//! there are at most `256 × MAX_WORK_PROVIDERS` of them: the keys are recognised by their
//! exact form, so no peer can make this node hold more. Everything else goes to libp2p's
//! `MemoryStore` as before. Must not touch: the swarm, the coordinator.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::kad::store::{self, MemoryStore, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

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
/// Providers kept per work key (Kademlia's k): a radiator needs one coordinator with work,
/// not every one.
pub const MAX_WORK_PROVIDERS: usize = 20;
/// Providers one lookup hands back; the rest are not needed to find work.
pub const MAX_WORK_FOUND: usize = 8;

const PREFIX: &[u8] = b"hearth/work/1/";

/// The DHT key of work bucket `bucket`: the bytes `hearth/work/1/` followed by the bucket as
/// one byte (`docs/protocol.md`, section 4).
pub fn work_key(bucket: u8) -> RecordKey {
    let mut k = PREFIX.to_vec();
    k.push(bucket);
    RecordKey::new(&k)
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

/// Whether `key` is a work key (of any of the 256 buckets).
pub fn is_work_key(key: &RecordKey) -> bool {
    let k = key.as_ref();
    k.len() == PREFIX.len() + 1 && k.starts_with(PREFIX)
}

/// Kademlia's record store on every hearth node: work records apart and short-lived, the rest
/// in libp2p's `MemoryStore`.
pub struct Store {
    inner: MemoryStore,
    /// Work key → its providers, each with an expiry no later than [`WORK_RECORD_TTL`] after
    /// it was stored. At most 256 keys (the work keys' form), [`MAX_WORK_PROVIDERS`] each.
    work: HashMap<RecordKey, Vec<ProviderRecord>>,
}

impl Store {
    pub fn new(inner: MemoryStore) -> Store {
        Store {
            inner,
            work: HashMap::new(),
        }
    }

    /// Adds a work record, `now` being the time it arrived.
    fn add_work(&mut self, mut record: ProviderRecord, now: Instant) {
        let ttl_end = now + WORK_RECORD_TTL;
        record.expires = Some(record.expires.map_or(ttl_end, |e| e.min(ttl_end)));
        let providers = self.work.entry(record.key.clone()).or_default();
        providers.retain(|p| !p.is_expired(now));
        if let Some(p) = providers.iter_mut().find(|p| p.provider == record.provider) {
            *p = record;
        } else if providers.len() < MAX_WORK_PROVIDERS {
            // A full key ignores newcomers until one of its records expires (as libp2p's
            // MemoryStore does): a flood of fresh identities cannot push out coordinators
            // that keep publishing.
            providers.push(record);
        }
    }

    fn work_providers(&self, key: &RecordKey, now: Instant) -> Vec<ProviderRecord> {
        self.work
            .get(key)
            .map(|ps| ps.iter().filter(|p| !p.is_expired(now)).cloned().collect())
            .unwrap_or_default()
    }

    /// Work records this store holds now, expired ones included until their key is next
    /// written (what bounds memory is the number of keys and providers, not their age).
    #[cfg(test)]
    fn work_records(&self) -> usize {
        self.work.values().map(Vec::len).sum()
    }
}

impl RecordStore for Store {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, r: Record) -> store::Result<()> {
        self.inner.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> store::Result<()> {
        if is_work_key(&record.key) {
            self.add_work(record, Instant::now());
            return Ok(());
        }
        self.inner.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        if is_work_key(key) {
            return self.work_providers(key, Instant::now());
        }
        self.inner.providers(key)
    }

    /// Only blob records: Kademlia republishes these every 6 hours. This node's own work
    /// records are published again by its coordinator while it has work.
    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if is_work_key(key) {
            if let Some(ps) = self.work.get_mut(key) {
                ps.retain(|p| &p.provider != provider);
                if ps.is_empty() {
                    self.work.remove(key);
                }
            }
            return;
        }
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
        Store::new(MemoryStore::new(PeerId::random()))
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
    fn work_keys_are_recognised_by_their_exact_form() {
        assert!(is_work_key(&work_key(0)));
        assert!(is_work_key(&work_key(255)));
        assert!(!is_work_key(&RecordKey::new(b"hearth/work/1/")));
        assert!(!is_work_key(&RecordKey::new(b"hearth/work/1/ab")));
        assert!(!is_work_key(&RecordKey::new(blake3::hash(b"x").as_bytes())));
        assert_ne!(work_key(1), work_key(2));
    }

    #[test]
    fn a_work_record_expires_soon_whatever_ttl_it_came_with() {
        let mut s = store();
        let now = Instant::now();
        let far = now + Duration::from_secs(48 * 3600);
        let p = PeerId::random();
        s.add_work(record(work_key(3), p, Some(far)), now);
        let q = PeerId::random();
        s.add_work(record(work_key(3), q, None), now);
        assert_eq!(s.work_providers(&work_key(3), now).len(), 2);
        let later = now + WORK_RECORD_TTL + Duration::from_millis(1);
        assert!(s.work_providers(&work_key(3), later).is_empty());
        // Published again: alive again, and the expired one makes room when the key is written.
        s.add_work(record(work_key(3), p, Some(far)), later);
        let got = s.work_providers(&work_key(3), later);
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
            s.add_work(record(work_key(0), *p, None), now);
        }
        s.add_work(record(work_key(0), PeerId::random(), None), now);
        let got = s.work_providers(&work_key(0), now);
        assert_eq!(got.len(), MAX_WORK_PROVIDERS);
        assert!(got.iter().all(|r| first.contains(&r.provider)));
        // A provider already there is refreshed in place.
        let t = now + Duration::from_secs(100);
        s.add_work(record(work_key(0), first[0], None), t);
        let after_first_ttl = now + WORK_RECORD_TTL + Duration::from_secs(1);
        let alive = s.work_providers(&work_key(0), after_first_ttl);
        assert_eq!(alive.len(), 1);
        assert_eq!(alive[0].provider, first[0]);
    }

    #[test]
    fn however_many_keys_and_providers_a_peer_sends_the_store_stays_bounded() {
        let mut s = store();
        for bucket in 0..=255u8 {
            for _ in 0..(MAX_WORK_PROVIDERS + 5) {
                s.add_provider(record(work_key(bucket), PeerId::random(), None))
                    .unwrap();
            }
        }
        assert_eq!(s.work.len(), 256);
        assert_eq!(s.work_records(), 256 * MAX_WORK_PROVIDERS);
    }

    #[test]
    fn blob_records_still_go_to_the_memory_store_and_work_records_are_not_republished() {
        let local = PeerId::random();
        let mut s = Store::new(MemoryStore::new(local));
        let blob = RecordKey::new(blake3::hash(b"blob").as_bytes());
        s.add_provider(record(blob.clone(), local, None)).unwrap();
        s.add_provider(record(work_key(5), local, None)).unwrap();
        let provided: Vec<RecordKey> = s.provided().map(|r| r.key.clone()).collect();
        assert_eq!(provided, vec![blob.clone()]);
        assert_eq!(s.providers(&blob).len(), 1);
        assert_eq!(s.providers(&work_key(5)).len(), 1);
        s.remove_provider(&work_key(5), &local);
        assert!(s.providers(&work_key(5)).is_empty());
        assert!(s.work.is_empty());
    }
}
