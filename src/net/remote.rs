//! Blob provider records that other nodes asked this node to keep (Kademlia `ADD_PROVIDER` for
//! a blob's hash), held apart from this node's own and bounded: in number
//! ([`MAX_REMOTE_BLOB_RECORDS`]), per key (Kademlia's k, 20), per subnet per key
//! ([`MAX_BLOB_PROVIDERS_PER_SUBNET`]) and per subnet in all ([`MAX_REMOTE_BLOB_RECORDS_PER_SUBNET`]),
//! and in the addresses each record keeps ([`trim_addresses`]).
//!
//! Until 2026-12-04 they went into libp2p's `MemoryStore` beside this node's own records. Its
//! key limit (65 536) counted both, so a peer that sent records for that many made-up keys left
//! this node unable to record its own blobs; each record kept every address it came with (up
//! to a 16 KiB message of them); and a record for a key nobody looked up again stayed after
//! it expired (Kademlia drops expired records only when it reads their key). So one peer could
//! make a radiator hold about 1 GiB. Here the worst case is about
//! `MAX_REMOTE_BLOB_RECORDS` × (`MAX_RECORD_ADDRESSES` × `MAX_ADDRESS_BYTES` + ~200 B) ≈ 10 MiB,
//! and expired records are swept when the store is full.
//!
//! Pure: time comes in as a parameter. Must not touch: the swarm, the node's own records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::kad::{ProviderRecord, RecordKey};
use libp2p::{Multiaddr, PeerId};

use super::work::Subnet;

/// Blob provider records of other nodes held at once. An honest DHT node stores about
/// k / N of the network's provider records (`docs/scale.md`, "Blob providers"): flat in the
/// network's size, and far below this.
pub const MAX_REMOTE_BLOB_RECORDS: usize = 8_192;
/// Of those, from one subnet (IPv4 /24, IPv6 /48): filling the store takes 16 subnets.
pub const MAX_REMOTE_BLOB_RECORDS_PER_SUBNET: usize = MAX_REMOTE_BLOB_RECORDS / 16;
/// Providers kept per blob (Kademlia's k): a fetch needs a few, not every holder.
pub const MAX_BLOB_PROVIDERS: usize = 20;
/// Of those, from one subnet, as for work keys (`work.rs`).
pub const MAX_BLOB_PROVIDERS_PER_SUBNET: usize = 2;
/// Addresses a provider record keeps (every record, work keys' too): a node listens on a few.
pub const MAX_RECORD_ADDRESSES: usize = 8;
/// Longest address a record keeps, in bytes of its binary form: `/ip6/…/udp/…/quic-v1` is 22,
/// a relayed address with two peer ids about 90.
pub const MAX_ADDRESS_BYTES: usize = 128;
/// A full store sweeps out expired records at most this often (a sweep reads every record).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Keeps at most [`MAX_RECORD_ADDRESSES`] addresses of at most [`MAX_ADDRESS_BYTES`] each.
pub fn trim_addresses(addresses: &mut Vec<Multiaddr>) {
    addresses.retain(|a| a.len() <= MAX_ADDRESS_BYTES);
    addresses.truncate(MAX_RECORD_ADDRESSES);
}

struct Held {
    record: ProviderRecord,
    subnet: Option<Subnet>,
}

/// The blob provider records other nodes asked this node to keep.
#[derive(Default)]
pub struct RemoteProviders {
    by_key: HashMap<RecordKey, Vec<Held>>,
    records: usize,
    per_subnet: HashMap<Subnet, usize>,
    last_sweep: Option<Instant>,
    refused: u64,
}

impl RemoteProviders {
    /// Keeps `record` (its addresses trimmed), sent from `subnet` (`None`: not limited), if
    /// every bound allows; a provider already held for the key is refreshed in place.
    pub fn add(&mut self, mut record: ProviderRecord, subnet: Option<Subnet>, now: Instant) {
        trim_addresses(&mut record.addresses);
        if let Some(held) = self.by_key.get_mut(&record.key) {
            if let Some(h) = held
                .iter_mut()
                .find(|h| h.record.provider == record.provider)
            {
                let old = std::mem::replace(h, Held { record, subnet });
                Self::uncount(&mut self.per_subnet, old.subnet);
                Self::count(&mut self.per_subnet, subnet);
                return;
            }
        }
        if self.records >= MAX_REMOTE_BLOB_RECORDS
            && self
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            self.sweep(now);
        }
        let live: Vec<&Held> = self
            .by_key
            .get(&record.key)
            .map(|h| h.iter().filter(|h| !h.record.is_expired(now)).collect())
            .unwrap_or_default();
        let same_subnet = subnet.map_or(0, |n| live.iter().filter(|h| h.subnet == Some(n)).count());
        let subnet_total = subnet.map_or(0, |n| self.per_subnet.get(&n).copied().unwrap_or(0));
        if self.records >= MAX_REMOTE_BLOB_RECORDS
            || live.len() >= MAX_BLOB_PROVIDERS
            || same_subnet >= MAX_BLOB_PROVIDERS_PER_SUBNET
            || subnet_total >= MAX_REMOTE_BLOB_RECORDS_PER_SUBNET
        {
            self.refused += 1;
            return;
        }
        let held = self.by_key.entry(record.key.clone()).or_default();
        // Expired records of this key make room first.
        let before = held.len();
        let per_subnet = &mut self.per_subnet;
        held.retain(|h| {
            let keep = !h.record.is_expired(now);
            if !keep {
                Self::uncount(per_subnet, h.subnet);
            }
            keep
        });
        self.records -= before - held.len();
        held.push(Held { record, subnet });
        self.records += 1;
        Self::count(&mut self.per_subnet, subnet);
    }

    /// The live providers of `key`.
    pub fn providers(&self, key: &RecordKey, now: Instant) -> Vec<ProviderRecord> {
        self.by_key
            .get(key)
            .map(|h| {
                h.iter()
                    .filter(|h| !h.record.is_expired(now))
                    .map(|h| h.record.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn remove(&mut self, key: &RecordKey, provider: &PeerId) {
        let Some(held) = self.by_key.get_mut(key) else {
            return;
        };
        if let Some(i) = held.iter().position(|h| &h.record.provider == provider) {
            let h = held.swap_remove(i);
            Self::uncount(&mut self.per_subnet, h.subnet);
            self.records -= 1;
        }
        if held.is_empty() {
            self.by_key.remove(key);
        }
    }

    /// A record whose sender cannot be placed in a subnet (it left before its record was
    /// read): refused.
    pub fn refuse(&mut self) {
        self.refused += 1;
    }

    /// Records held (expired ones included until swept or their key is written) and records
    /// refused since start.
    pub fn counts(&self) -> (usize, u64) {
        (self.records, self.refused)
    }

    /// Drops every expired record.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = Some(now);
        let per_subnet = &mut self.per_subnet;
        let mut dropped = 0;
        self.by_key.retain(|_, held| {
            held.retain(|h| {
                let keep = !h.record.is_expired(now);
                if !keep {
                    Self::uncount(per_subnet, h.subnet);
                    dropped += 1;
                }
                keep
            });
            !held.is_empty()
        });
        self.records -= dropped;
    }

    fn count(per_subnet: &mut HashMap<Subnet, usize>, subnet: Option<Subnet>) {
        if let Some(n) = subnet {
            *per_subnet.entry(n).or_default() += 1;
        }
    }

    fn uncount(per_subnet: &mut HashMap<Subnet, usize>, subnet: Option<Subnet>) {
        if let Some(n) = subnet {
            if let Some(c) = per_subnet.get_mut(&n) {
                *c -= 1;
                if *c == 0 {
                    per_subnet.remove(&n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::work::subnet_of;

    fn record(key: &RecordKey, expires: Option<Instant>) -> ProviderRecord {
        ProviderRecord {
            key: key.clone(),
            provider: PeerId::random(),
            expires,
            addresses: Vec::new(),
        }
    }

    fn key(i: u32) -> RecordKey {
        RecordKey::new(blake3::hash(&i.to_be_bytes()).as_bytes())
    }

    fn subnet(s: &str) -> Option<Subnet> {
        subnet_of(&s.parse().unwrap(), false)
    }

    #[test]
    fn each_subnet_gets_its_share_of_a_key_and_of_the_store() {
        let mut r = RemoteProviders::default();
        let now = Instant::now();
        let a = subnet("/ip4/198.51.100.1/tcp/1");
        for _ in 0..5 {
            r.add(record(&key(0), None), a, now);
        }
        assert_eq!(
            r.providers(&key(0), now).len(),
            MAX_BLOB_PROVIDERS_PER_SUBNET
        );
        r.add(record(&key(0), None), subnet("/ip4/203.0.113.1/tcp/1"), now);
        assert_eq!(
            r.providers(&key(0), now).len(),
            MAX_BLOB_PROVIDERS_PER_SUBNET + 1
        );
        // Across keys one subnet holds at most its share of the store.
        for i in 1..(MAX_REMOTE_BLOB_RECORDS as u32) {
            r.add(record(&key(i), None), a, now);
        }
        assert_eq!(r.counts().0, MAX_REMOTE_BLOB_RECORDS_PER_SUBNET + 1);
        // Unlimited senders fill a key to k, and no further.
        for _ in 0..(MAX_BLOB_PROVIDERS + 3) {
            r.add(record(&key(u32::MAX), None), None, now);
        }
        assert_eq!(r.providers(&key(u32::MAX), now).len(), MAX_BLOB_PROVIDERS);
    }

    #[test]
    fn a_full_store_sweeps_out_expired_records_and_refreshes_in_place() {
        let mut r = RemoteProviders::default();
        let now = Instant::now();
        let soon = now + Duration::from_secs(10);
        for i in 0..(MAX_REMOTE_BLOB_RECORDS as u32) {
            r.add(record(&key(i), Some(soon)), None, now);
        }
        assert_eq!(r.counts(), (MAX_REMOTE_BLOB_RECORDS, 0));
        r.add(record(&key(u32::MAX), None), None, now);
        assert_eq!(r.counts(), (MAX_REMOTE_BLOB_RECORDS, 1), "full: refused");
        // Swept at most once a minute: the refusal above just swept (nothing had expired).
        let before_next_sweep = soon + Duration::from_secs(1);
        r.add(record(&key(u32::MAX), None), None, before_next_sweep);
        assert_eq!(r.counts(), (MAX_REMOTE_BLOB_RECORDS, 2));
        let later = now + SWEEP_EVERY;
        r.add(record(&key(u32::MAX), None), None, later);
        assert_eq!(r.counts(), (1, 2), "the expired ones were swept");
        // The same provider again replaces its record.
        let mut again = r.providers(&key(u32::MAX), later)[0].clone();
        again.addresses = vec!["/ip4/198.51.100.7/tcp/4001".parse().unwrap()];
        r.add(again.clone(), None, later);
        assert_eq!(r.providers(&key(u32::MAX), later), vec![again.clone()]);
        r.remove(&key(u32::MAX), &again.provider);
        assert_eq!(r.counts().0, 0);
    }

    #[test]
    fn addresses_are_trimmed_in_number_and_length() {
        let mut addresses: Vec<Multiaddr> = (0..20u16)
            .map(|p| format!("/ip4/198.51.100.1/tcp/{p}").parse().unwrap())
            .collect();
        let long: Multiaddr = format!("/dns4/{}.example/tcp/1", "a".repeat(200))
            .parse()
            .unwrap();
        addresses.insert(0, long);
        trim_addresses(&mut addresses);
        assert_eq!(addresses.len(), MAX_RECORD_ADDRESSES);
        assert!(addresses.iter().all(|a| a.len() <= MAX_ADDRESS_BYTES));
    }
}
