//! Reputation on disk: one sled entry per household, `household key (32 bytes) →
//! verified u32 | wrong u32 | disputed u32 | first_seen_ms u64 | last_seen_ms u64` (all
//! little-endian, 28 bytes). Written in the kv batch of the coordinator's update that changed
//! it, so a record is durable exactly when the shard update that changed it is.
//!
//! `trust_carried`: a household's new key (32 bytes) → the key it rotated from (32 bytes),
//! whose record counts for the new one (`Reputation::carry`). Written, and removed, in the
//! kv batch of the coordinator's update that carried it or took it back.
//!
//! `trust_related`: receipt id (32 bytes) → one byte, [`Relation::tag`]: receipts this node
//! countersigned whose worker it saw sharing an address with itself (`related.rs`). Local
//! observation, not part of the signed receipt; written after the receipt is durable.
//! Must not touch: decisions (they are in `trust` and the book).

use super::related::Relation;
use super::Record;
use crate::identity::PublicKey;
use crate::jobs::JobError;

const TREE: &str = "trust_reputation";
const RELATED: &str = "trust_related";
const CARRIED: &str = "trust_carried";
const LEN: usize = 4 * 3 + 8 * 2;

#[derive(Clone)]
pub struct TrustStore {
    tree: sled::Tree,
    related: sled::Tree,
    carried: sled::Tree,
}

fn encode(r: &Record) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(&r.verified.to_le_bytes());
    b[4..8].copy_from_slice(&r.wrong.to_le_bytes());
    b[8..12].copy_from_slice(&r.disputed.to_le_bytes());
    b[12..20].copy_from_slice(&r.first_seen_ms.to_le_bytes());
    b[20..28].copy_from_slice(&r.last_seen_ms.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Record> {
    if b.len() != LEN {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    Some(Record {
        verified: u32_at(0),
        wrong: u32_at(4),
        disputed: u32_at(8),
        first_seen_ms: u64_at(12),
        last_seen_ms: u64_at(20),
    })
}

impl TrustStore {
    pub fn open(db: &sled::Db) -> Result<TrustStore, JobError> {
        Ok(TrustStore {
            tree: db.open_tree(TREE)?,
            related: db.open_tree(RELATED)?,
            carried: db.open_tree(CARRIED)?,
        })
    }

    /// Every stored record.
    pub fn load(&self) -> Result<Vec<(PublicKey, Record)>, JobError> {
        let mut out = Vec::new();
        for entry in self.tree.iter() {
            let (k, v) = entry?;
            let key: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| JobError::Corrupt("reputation key".into()))?;
            let household = PublicKey(key);
            let record = decode(&v).ok_or_else(|| JobError::Corrupt("reputation record".into()))?;
            out.push((household, record));
        }
        Ok(out)
    }

    /// Whether `household` has a record here (it had a claim accepted by this coordinator). A
    /// read error counts as no record: the answer only decides whether a key event of it is
    /// kept when the key book is crowded (`node::key_log::MAX_UNKNOWN`).
    pub fn has_record(&self, household: &PublicKey) -> bool {
        self.tree.contains_key(household.0).unwrap_or(false)
    }

    /// Every carried record: (new key, the key it rotated from). An entry that is not two
    /// keys is skipped (the new key is then judged by its own record: the cautious side).
    pub fn load_carried(&self) -> Result<Vec<(PublicKey, PublicKey)>, JobError> {
        let mut out = Vec::new();
        for entry in self.carried.iter() {
            let (k, v) = entry?;
            let (Ok(new), Ok(old)) = (
                <[u8; 32]>::try_from(k.as_ref()),
                <[u8; 32]>::try_from(v.as_ref()),
            ) else {
                tracing::warn!("a damaged carried-record entry is skipped");
                continue;
            };
            out.push((PublicKey(new), PublicKey(old)));
        }
        Ok(out)
    }

    /// Adds to `batch` the records carried (new key, old key) and the keys whose carried
    /// record is taken back.
    pub fn stage_carried(
        &self,
        batch: &mut crate::kv::Batch,
        carry: &[(PublicKey, PublicKey)],
        uncarry: &[PublicKey],
    ) {
        for (new, old) in carry {
            batch.insert(&self.carried, new.0, old.0);
        }
        for key in uncarry {
            batch.remove(&self.carried, key.0);
        }
    }

    /// Marks receipts whose worker is tied to this node (`related.rs`). Each mark is one key
    /// on its own, so plain inserts are atomic enough; the database's next flush (the next
    /// commitment's seal) makes them durable, and a mark lost to a crash before it is only
    /// a mark not shown. One entry per receipt this node countersigned, at most.
    pub fn mark_related(&self, marks: &[(blake3::Hash, Relation)]) -> Result<(), JobError> {
        for (id, relation) in marks {
            self.related
                .insert(id.as_bytes().as_slice(), &[relation.tag()])?;
        }
        Ok(())
    }

    /// How the worker of receipt `id` is tied to this node, if it was marked.
    pub fn related(&self, id: &blake3::Hash) -> Result<Option<Relation>, JobError> {
        Ok(self
            .related
            .get(id.as_bytes())?
            .and_then(|v| v.first().copied())
            .and_then(Relation::from_tag))
    }

    /// Every marked receipt (entries that cannot be read are skipped: a mark is advice).
    pub fn all_related(&self) -> Result<Vec<(blake3::Hash, Relation)>, JobError> {
        let mut out = Vec::new();
        for entry in self.related.iter() {
            let (k, v) = entry?;
            let (Ok(id), Some(r)) = (
                <[u8; 32]>::try_from(k.as_ref()),
                v.first().copied().and_then(Relation::from_tag),
            ) else {
                continue;
            };
            out.push((blake3::Hash::from_bytes(id), r));
        }
        Ok(out)
    }

    /// Adds records to `batch`, the batch of the coordinator's update that changed them
    /// (`coordinator/persist.rs`, `Persist::write`): the records and the shard entry that
    /// counts the result are then on disk together or not at all. Written apart, a crash
    /// between the two left a result counted in the record but not in the shard, and the
    /// restarted coordinator, deciding the shard again, counted it a second time.
    pub fn stage(&self, batch: &mut crate::kv::Batch, records: &[(PublicKey, Record)]) {
        for (h, r) in records {
            batch.insert(&self.tree, h.0, encode(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let h = crate::identity::Identity::from_seed([3; 32]).public();
        let r = Record {
            verified: 5,
            wrong: 1,
            disputed: 2,
            first_seen_ms: 10,
            last_seen_ms: u64::MAX,
        };
        {
            let db = crate::node::test_db(dir.path()).unwrap();
            let kv = crate::kv::Kv::open(&db).unwrap();
            let mut batch = kv.batch();
            TrustStore::open(&db).unwrap().stage(&mut batch, &[(h, r)]);
            batch.commit().unwrap();
            db.flush().unwrap();
        }
        let db = crate::node::test_db(dir.path()).unwrap();
        assert_eq!(TrustStore::open(&db).unwrap().load().unwrap(), vec![(h, r)]);
    }

    #[test]
    fn carried_records_survive_a_reopen_and_a_take_back() {
        let dir = tempfile::tempdir().unwrap();
        let k: Vec<PublicKey> = (1..=3u8)
            .map(|i| crate::identity::Identity::from_seed([i; 32]).public())
            .collect();
        let write = |carry: &[(PublicKey, PublicKey)], uncarry: &[PublicKey]| {
            let db = crate::node::test_db(dir.path()).unwrap();
            let kv = crate::kv::Kv::open(&db).unwrap();
            let mut batch = kv.batch();
            TrustStore::open(&db)
                .unwrap()
                .stage_carried(&mut batch, carry, uncarry);
            batch.commit().unwrap();
            db.flush().unwrap();
        };
        write(&[(k[1], k[0]), (k[2], k[1])], &[]);
        let read = || {
            let db = crate::node::test_db(dir.path()).unwrap();
            let mut all = TrustStore::open(&db).unwrap().load_carried().unwrap();
            all.sort_by_key(|(new, _)| new.0);
            all
        };
        let mut both = vec![(k[1], k[0]), (k[2], k[1])];
        both.sort_by_key(|(new, _)| new.0);
        assert_eq!(read(), both);
        write(&[], &[k[1]]);
        assert_eq!(read(), vec![(k[2], k[1])]);
        // A damaged entry is skipped, not a reason to stop.
        {
            let db = crate::node::test_db(dir.path()).unwrap();
            db.open_tree(CARRIED)
                .unwrap()
                .insert([9u8; 5], &[1u8; 3])
                .unwrap();
            db.flush().unwrap();
        }
        assert_eq!(read(), vec![(k[2], k[1])]);
    }
}
