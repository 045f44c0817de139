//! Keys whose households revoked them (docs/receipts.md, "Revoking a key"), as this node heard
//! them on gossip: a radiator takes no work from a coordinator whose key is revoked, since
//! whatever that key countersigns from now on is void to every verifier that holds the
//! statement, and the heat spent on it would earn the household nothing.
//!
//! A statement is checked before it comes here (it decodes, its signature is its key's, its
//! author is that key). Only the fact matters to a radiator, not `keep`: a household draws
//! its line at the first commitment it did not seal, so any commitment the key seals later is
//! past it.
//!
//! Bounds: keys cost nothing to make, so anyone can sign revocations of fresh keys by the
//! thousand. The node keeps at most [`MAX_REVOKED`] keys (32 bytes each, in the `revoked`
//! tree and in memory: about 2 MB), and past [`MAX_UNKNOWN`] it keeps only keys of
//! coordinators it has heard from (`known`), so a flood of strangers' statements cannot
//! crowd out the revocation of a coordinator this radiator works for; and it admits at most
//! [`BURST`] statements at once, then one a minute, from each peer that forwards them
//! ([`Admission`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::identity::PublicKey;

const TREE: &str = "revoked";
/// Most revoked keys kept.
pub const MAX_REVOKED: usize = 65_536;
/// Past this many, only keys of coordinators this node has heard from are kept.
pub const MAX_UNKNOWN: usize = 4_096;

/// Revocations admitted from one forwarder at once (a bucket's size).
pub const BURST: u32 = 16;
/// After a burst, one more revocation admitted per forwarder this often.
pub const REFILL: Duration = Duration::from_secs(60);
/// Forwarders tracked at once; past it, the one whose bucket filled longest ago makes room.
const MAX_FORWARDERS: usize = 1_024;

/// How many revocations each forwarder (gossipsub's propagation source) may bring: a
/// revocation checks itself, but anyone can sign one for a fresh key, and each costs every
/// node a signature check and a place among the strangers' keys. A household revokes its key
/// once; [`BURST`] at once and one per [`REFILL`] after is far above what honest peers
/// forward, and a flooding peer's statements beyond it are ignored (not forwarded, no
/// penalty, since an honest forwarder may pass on a flood it did not make). Pure: time comes
/// in as a parameter.
#[derive(Debug, Default)]
pub struct Admission {
    /// Per forwarder: tokens left and when they were last counted.
    buckets: HashMap<PeerId, (u32, Instant)>,
}

impl Admission {
    /// Whether a revocation `forwarder` brought is admitted at `now`; counts it if so.
    pub fn admit(&mut self, forwarder: PeerId, now: Instant) -> bool {
        if !self.buckets.contains_key(&forwarder) && self.buckets.len() >= MAX_FORWARDERS {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.buckets.remove(&p);
            }
        }
        let (tokens, at) = self.buckets.entry(forwarder).or_insert((BURST, now));
        let refilled = now.saturating_duration_since(*at).as_secs() / REFILL.as_secs();
        if refilled > 0 {
            *tokens = (*tokens)
                .saturating_add(refilled.min(u64::from(BURST)) as u32)
                .min(BURST);
            *at += REFILL * refilled.min(u64::from(u32::MAX)) as u32;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

/// What hearing a revocation did.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Kept: this node takes no more work from the key.
    Kept,
    /// Kept already.
    Again,
    /// Not kept: the set is full for keys this node knows nothing of.
    Full,
}

/// Cheap, cloneable handle on the set.
#[derive(Clone)]
pub struct RevokedKeys {
    tree: sled::Tree,
    keys: Arc<RwLock<HashSet<PublicKey>>>,
}

impl RevokedKeys {
    /// Opens the set in `db`, reading every key into memory (at most [`MAX_REVOKED`]).
    pub fn open(db: &sled::Db) -> Result<RevokedKeys, sled::Error> {
        let tree = db.open_tree(TREE)?;
        let mut keys = HashSet::new();
        for key in tree.iter().keys() {
            let key = key?;
            // A damaged entry (not 32 bytes) revokes nothing; it is dropped on the next write.
            if let Ok(k) = <[u8; 32]>::try_from(key.as_ref()) {
                keys.insert(PublicKey(k));
            }
        }
        Ok(RevokedKeys {
            tree,
            keys: Arc::new(RwLock::new(keys)),
        })
    }

    /// Whether `key` is revoked.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.read().expect("revoked keys lock").contains(key)
    }

    /// How many keys are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.read().expect("revoked keys lock").len()
    }

    /// Keeps `key` as revoked; `known` says whether this node has heard from it as a
    /// coordinator. Written before it counts (a revocation forgotten by a crash would let the
    /// radiator work for the key again), then flushed by sled within half a second.
    pub fn hear(&self, key: &PublicKey, known: bool) -> Result<Heard, sled::Error> {
        let mut keys = self.keys.write().expect("revoked keys lock");
        if keys.contains(key) {
            return Ok(Heard::Again);
        }
        let room = if known { MAX_REVOKED } else { MAX_UNKNOWN };
        if keys.len() >= room {
            return Ok(Heard::Full);
        }
        self.tree.insert(key.0, &[] as &[u8])?;
        keys.insert(*key);
        Ok(Heard::Kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_forwarder_brings_a_burst_then_one_a_minute_and_others_are_not_held_back() {
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let mut a = Admission::default();
        for _ in 0..BURST {
            assert!(a.admit(flooder, t0));
        }
        assert!(!a.admit(flooder, t0 + Duration::from_secs(59)));
        assert!(a.admit(honest, t0 + Duration::from_secs(59)));
        assert!(a.admit(flooder, t0 + REFILL));
        assert!(!a.admit(flooder, t0 + REFILL));
        // A long quiet refills the bucket, never past its size.
        let later = t0 + REFILL * 1_000;
        for _ in 0..BURST {
            assert!(a.admit(flooder, later));
        }
        assert!(!a.admit(flooder, later));
        // Many forwarders: the map stays bounded.
        for i in 0..(MAX_FORWARDERS as u64 * 2) {
            a.admit(PeerId::random(), later + Duration::from_millis(i));
        }
        assert!(a.buckets.len() <= MAX_FORWARDERS);
    }

    #[test]
    fn revoked_keys_survive_a_reopen_and_strangers_cannot_crowd_out_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let set = RevokedKeys::open(&db).unwrap();
        let (lab, other) = (Identity::generate().public(), Identity::generate().public());
        assert!(!set.contains(&lab));
        assert_eq!(set.hear(&lab, false).unwrap(), Heard::Kept);
        assert_eq!(set.hear(&lab, true).unwrap(), Heard::Again);
        assert!(set.contains(&lab) && !set.contains(&other));
        drop(set);
        let set = RevokedKeys::open(&db).unwrap();
        assert!(set.contains(&lab));
        // Fill the room for strangers: a stranger is refused, a known coordinator still kept.
        for i in 1..MAX_UNKNOWN {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            set.hear(&PublicKey(k), false).unwrap();
        }
        assert_eq!(set.len(), MAX_UNKNOWN);
        assert_eq!(set.hear(&other, false).unwrap(), Heard::Full);
        assert!(!set.contains(&other));
        assert_eq!(set.hear(&other, true).unwrap(), Heard::Kept);
        assert!(set.contains(&other));
    }
}
