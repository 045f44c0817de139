//! Keys this node takes no work from, each with the proof that says why, as heard on gossip
//! or from a peer: keys whose households revoked them (docs/receipts.md, "Revoking a key")
//! and keys that signed two different commitments under one number (`model::equivocate`).
//! Whatever such a key countersigns from now on is void to every verifier that holds the
//! proof, so the heat spent on its work would earn the household nothing.
//!
//! A proof is checked before it comes here ([`Refusal::checked`]; gossip also checks that a
//! revocation's author is its key). Only the fact matters to a radiator, not a revocation's
//! `keep`: a household draws its line at the first commitment it did not seal, so any
//! commitment the key seals later is past it. The proofs are kept for the peers that ask
//! (`Request::Refusals`, [`RevokedKeys::page`]): a node that joins after the gossip learns
//! them from its peers; of a key's revocations the strictest (smallest `keep`) is kept, since
//! verifiers apply that one.
//!
//! Bounds: keys cost nothing to make, so anyone can sign revocations (or two commitments) of
//! fresh keys by the thousand. The node keeps at most [`MAX_REVOKED`] keys (in memory 32
//! bytes and two flags each, about 2.5 MB; on disk the proofs, at most 117 + 327 bytes a key
//! in the `revoked` tree), and past [`MAX_UNKNOWN`] it keeps only keys of coordinators it has
//! heard from (`known`), so a flood of strangers' proofs cannot crowd out the refusal of a
//! coordinator this radiator works for; and it admits at most [`BURST`] proofs at once, then
//! one a minute, from each peer that forwards them ([`Admission`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::identity::PublicKey;
#[cfg(test)]
use crate::model::equivocate::Equivocation;
use crate::model::refusal::{Kind, Refusal};
#[cfg(test)]
use crate::model::revoke::Revocation;

const TREE: &str = "revoked";
/// Most revoked keys kept.
pub const MAX_REVOKED: usize = 65_536;
/// Past this many, only keys of coordinators this node has heard from are kept.
pub const MAX_UNKNOWN: usize = 4_096;

/// Proofs (revocations and equivocation proofs) admitted from one forwarder at once (a
/// bucket's size).
pub const BURST: u32 = 16;
/// After a burst, one more proof admitted per forwarder this often.
pub const REFILL: Duration = Duration::from_secs(60);
/// Forwarders tracked at once; past it, the one whose bucket filled longest ago makes room.
const MAX_FORWARDERS: usize = 1_024;

/// How many proofs each forwarder (gossipsub's propagation source) may bring: a proof checks
/// itself, but anyone can sign one for a fresh key, and each costs every node a signature
/// check or two and a place among the strangers' keys. A household revokes its key once and
/// an auditor finds an equivocation once; [`BURST`] at once and one per [`REFILL`] after is
/// far above what honest peers forward, and a flooding peer's proofs beyond it are ignored (not forwarded, no
/// penalty, since an honest forwarder may pass on a flood it did not make). Pure: time comes
/// in as a parameter.
/// The same buckets, sized otherwise, bound the commitments a peer hands an auditor as their
/// witness (`node::witness`).
#[derive(Debug)]
pub struct Admission {
    /// Admitted at once from one peer (a bucket's size) ...
    burst: u32,
    /// ... and one more this often after (at least a millisecond).
    refill: Duration,
    /// Per forwarder: tokens left and when they were last counted.
    buckets: HashMap<PeerId, (u32, Instant)>,
}

impl Default for Admission {
    /// The bound of refusal proofs: [`BURST`], then one per [`REFILL`].
    fn default() -> Self {
        Admission::new(BURST, REFILL)
    }
}

impl Admission {
    pub fn new(burst: u32, refill: Duration) -> Admission {
        Admission {
            burst,
            refill: refill.max(Duration::from_millis(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether a proof `forwarder` brought is admitted at `now`; counts it if so.
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
        let (burst, refill) = (self.burst, self.refill);
        let (tokens, at) = self.buckets.entry(forwarder).or_insert((burst, now));
        let refilled = now.saturating_duration_since(*at).as_millis() / refill.as_millis();
        if refilled > 0 {
            let refilled = refilled.min(u128::from(u32::MAX)) as u32;
            *tokens = tokens.saturating_add(refilled.min(burst)).min(burst);
            *at += refill * refilled;
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

/// What hearing a refusal did.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Kept: this node takes no more work from the key, if it took any until now.
    Kept,
    /// A stricter revocation of a key kept already: kept in place of the first.
    Stricter,
    /// Kept already (this reason for this key).
    Again,
    /// Not kept: the set is full for keys this node knows nothing of.
    Full,
}

/// Which reasons this node holds against one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons {
    pub revoked: bool,
    pub equivocated: bool,
}

impl Reasons {
    /// Why radiators refuse a node's own key, for its household: the reason its running jobs
    /// close with and the dashboard shows.
    pub fn own_key_sentence(&self) -> &'static str {
        if self.revoked {
            "this household revoked its key (`hearth receipts revoke`): radiators take no work \
             from it and no receipt it countersigns now counts"
        } else {
            "this node's key signed two different receipt commitments under one number: \
             radiators take no work from it and verifiers count neither (`hearth audit KEY` on \
             a bootstrap node)"
        }
    }

    /// What a coordinator tells a household whose key it refuses when it asks for work
    /// (`jobs::coordinator::RefusedKeys`).
    pub fn worker_sentence(&self) -> &'static str {
        if self.revoked {
            "your household's key is revoked by its own statement (`hearth receipts revoke`): \
             this coordinator leases nothing to it and counts no claim of it"
        } else {
            "your household's key signed two different receipt commitments under one number: \
             this coordinator leases nothing to it and counts no claim of it"
        }
    }

    fn set(&mut self, kind: Kind) {
        match kind {
            Kind::Revoked => self.revoked = true,
            Kind::Equivocated => self.equivocated = true,
        }
    }

    fn has(&self, kind: Kind) -> bool {
        match kind {
            Kind::Revoked => self.revoked,
            Kind::Equivocated => self.equivocated,
        }
    }
}

/// Where a page of refusals ends: key ‖ kind, the `revoked` tree's key.
pub type Cursor = [u8; 33];

/// Proofs read for a peer, each with its cursor.
pub type Proofs = Vec<(Cursor, Vec<u8>)>;

/// Cheap, cloneable handle on the set.
#[derive(Clone)]
pub struct RevokedKeys {
    tree: sled::Tree,
    keys: Arc<RwLock<HashMap<PublicKey, Reasons>>>,
}

impl RevokedKeys {
    /// Opens the set in `db`, reading every key's reasons into memory (at most
    /// [`MAX_REVOKED`] keys; the proofs stay on disk). Entries are key ‖ kind → proof; an
    /// entry kept before proofs were (the key alone, no proof) still refuses the key
    /// as revoked but cannot be handed on.
    pub fn open(db: &sled::Db) -> Result<RevokedKeys, sled::Error> {
        let tree = db.open_tree(TREE)?;
        let mut keys: HashMap<PublicKey, Reasons> = HashMap::new();
        for key in tree.iter().keys() {
            let key = key?;
            // A damaged entry refuses nothing; it is dropped on the next write of that key.
            let kind = match key.len() {
                32 => Some(Kind::Revoked),
                33 if key[32] == Kind::Revoked as u8 => Some(Kind::Revoked),
                33 if key[32] == Kind::Equivocated as u8 => Some(Kind::Equivocated),
                _ => None,
            };
            if let (Some(kind), Ok(k)) = (kind, <[u8; 32]>::try_from(&key[..32])) {
                keys.entry(PublicKey(k)).or_default().set(kind);
            }
        }
        Ok(RevokedKeys {
            tree,
            keys: Arc::new(RwLock::new(keys)),
        })
    }

    /// Whether this node takes no work from `key` (revoked, or caught equivocating).
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys
            .read()
            .expect("revoked keys lock")
            .contains_key(key)
    }

    /// Why this node takes no work from `key`, if it takes none.
    pub fn reasons(&self, key: &PublicKey) -> Option<Reasons> {
        self.keys
            .read()
            .expect("revoked keys lock")
            .get(key)
            .copied()
    }

    /// How many keys are refused.
    pub fn count(&self) -> usize {
        self.keys.read().expect("revoked keys lock").len()
    }

    /// Keeps a checked refusal; `known` says whether this node has heard from its key as a
    /// coordinator. Written before it counts (a refusal forgotten by a crash would let the
    /// radiator work for the key again), then flushed by sled within half a second.
    pub fn hear(&self, refusal: &Refusal, known: bool) -> Result<Heard, sled::Error> {
        let key = refusal.key();
        let kind = refusal.kind();
        let mut entry = [0u8; 33];
        entry[..32].copy_from_slice(&key.0);
        entry[32] = kind as u8;
        let mut keys = self.keys.write().expect("revoked keys lock");
        let reasons = keys.get(&key).copied();
        if reasons.is_some_and(|r| r.has(kind)) {
            return match self.tree.get(entry)? {
                Some(kept) if refusal.replaces(&kept) => {
                    self.tree.insert(entry, refusal.to_bytes())?;
                    Ok(Heard::Stricter)
                }
                Some(_) => Ok(Heard::Again),
                // Refused by an entry without its proof (from before proofs were kept): the
                // proof is kept now, so it can be handed on.
                None => {
                    self.tree.insert(entry, refusal.to_bytes())?;
                    self.tree.remove(key.0)?;
                    Ok(Heard::Again)
                }
            };
        }
        let room = if known { MAX_REVOKED } else { MAX_UNKNOWN };
        if reasons.is_none() && keys.len() >= room {
            return Ok(Heard::Full);
        }
        self.tree.insert(entry, refusal.to_bytes())?;
        // An entry from before proofs were kept (the key alone) gives way to this one.
        if kind == Kind::Revoked {
            self.tree.remove(key.0)?;
        }
        keys.entry(key).or_default().set(kind);
        Ok(Heard::Kept)
    }

    /// Up to `max` kept proofs after `after`, in key order, each with its cursor; and whether
    /// more follow. What a node hands a peer that joined after the gossip (`Request::Refusals`).
    pub fn page(&self, after: Option<&Cursor>, max: usize) -> Result<(Proofs, bool), sled::Error> {
        let mut out = Vec::new();
        for item in crate::kv::after(&self.tree, after.map(|c| &c[..])) {
            let (key, proof) = item?;
            // Entries without a proof (from before proofs were kept) cannot be handed on.
            let Ok(cursor) = Cursor::try_from(key.as_ref()) else {
                continue;
            };
            if proof.is_empty() {
                continue;
            }
            if out.len() == max {
                return Ok((out, true));
            }
            out.push((cursor, proof.to_vec()));
        }
        Ok((out, false))
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
        // Sized otherwise (the witnesses of `node::witness`): the same rule.
        let mut w = Admission::new(4, Duration::from_secs(1));
        for _ in 0..4 {
            assert!(w.admit(flooder, t0));
        }
        assert!(!w.admit(flooder, t0 + Duration::from_millis(999)));
        assert!(w.admit(flooder, t0 + Duration::from_secs(1)));
        assert!(!w.admit(flooder, t0 + Duration::from_secs(1)));
    }

    fn revocation(key: PublicKey, keep: u64) -> Refusal {
        Refusal::Revoked(Revocation {
            key,
            keep,
            issued_ms: 0,
            sig: [0; 64],
        })
    }

    #[test]
    fn revoked_keys_survive_a_reopen_and_strangers_cannot_crowd_out_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let set = RevokedKeys::open(&db).unwrap();
        let (lab, other) = (Identity::generate().public(), Identity::generate().public());
        assert!(!set.contains(&lab));
        assert_eq!(set.hear(&revocation(lab, 5), false).unwrap(), Heard::Kept);
        assert_eq!(set.hear(&revocation(lab, 5), true).unwrap(), Heard::Again);
        assert!(set.contains(&lab) && !set.contains(&other));
        drop(set);
        let set = RevokedKeys::open(&db).unwrap();
        assert!(set.contains(&lab));
        // Fill the room for strangers: a stranger is refused, a known coordinator still kept.
        for i in 1..MAX_UNKNOWN {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            set.hear(&revocation(PublicKey(k), 0), false).unwrap();
        }
        assert_eq!(set.count(), MAX_UNKNOWN);
        assert_eq!(set.hear(&revocation(other, 0), false).unwrap(), Heard::Full);
        assert!(!set.contains(&other));
        assert_eq!(set.hear(&revocation(other, 0), true).unwrap(), Heard::Kept);
        assert!(set.contains(&other));
        // A second reason for a key already kept takes no room.
        let lab_id = Identity::generate();
        let seal = |what: &[u8]| {
            crate::model::commit::Commitment::seal(&lab_id, 0, &[blake3::hash(what)], 1, 2)
                .unwrap()
                .0
        };
        let twice =
            Refusal::Equivocated(Box::new(Equivocation::new(seal(b"a"), seal(b"b")).unwrap()));
        assert_eq!(set.hear(&twice, false).unwrap(), Heard::Full);
        set.hear(&revocation(lab_id.public(), 3), true).unwrap();
        assert_eq!(set.hear(&twice, false).unwrap(), Heard::Kept);
        assert_eq!(
            set.reasons(&lab_id.public()),
            Some(Reasons {
                revoked: true,
                equivocated: true
            })
        );
    }

    /// What a peer that asks is handed: every proof, page by page, a revocation in its
    /// strictest form, and nothing for an entry kept without its proof.
    #[test]
    fn the_kept_proofs_are_handed_on_page_by_page_the_strictest_revocation_each() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let set = RevokedKeys::open(&db).unwrap();
        let keys: Vec<PublicKey> = (0..5).map(|_| Identity::generate().public()).collect();
        for k in &keys {
            set.hear(&revocation(*k, 9), true).unwrap();
        }
        assert_eq!(
            set.hear(&revocation(keys[0], 10), true).unwrap(),
            Heard::Again
        );
        assert_eq!(
            set.hear(&revocation(keys[0], 2), true).unwrap(),
            Heard::Stricter
        );
        assert_eq!(
            set.hear(&revocation(keys[0], 4), true).unwrap(),
            Heard::Again
        );
        // An entry from before proofs were kept: the key alone.
        let legacy = Identity::generate().public();
        db.open_tree(TREE)
            .unwrap()
            .insert(legacy.0, &[] as &[u8])
            .unwrap();
        let set = RevokedKeys::open(&db).unwrap();
        assert!(set.contains(&legacy));
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = set.page(after.as_ref(), 2).unwrap();
            assert!(page.len() <= 2);
            after = page.last().map(|(c, _)| *c);
            all.extend(page);
            if !more {
                break;
            }
        }
        assert_eq!(all.len(), 5, "the legacy entry has no proof to hand on");
        let handed: Vec<Revocation> = all
            .iter()
            .map(|(_, b)| Revocation::from_bytes(b).unwrap())
            .collect();
        let first = handed.iter().find(|r| r.key == keys[0]).unwrap();
        assert_eq!(first.keep, 2);
        // Its proof heard now, the legacy key is handed on too, and still refused.
        assert_eq!(
            set.hear(&revocation(legacy, 0), true).unwrap(),
            Heard::Again
        );
        assert_eq!(set.page(None, 100).unwrap().0.len(), 6);
        assert!(RevokedKeys::open(&db).unwrap().contains(&legacy));
    }
}
