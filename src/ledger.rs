//! The receipts ledger: every heat-work receipt this node has seen, kept in sled.
//!
//! Rules: one receipt per (job, shard, worker); a receipt is stored only if it verifies
//! (physics, credit terms, both signatures); the same receipt offered twice is a replay and is
//! refused without double credit; a different receipt for a (job, shard, worker) that already
//! has one is a conflict and is refused: the first one recorded stands. Totals per household
//! are updated in the same transaction as the insert, so they never drift from the receipts;
//! they count the energy *credited* (the terms' `credited_mj`) and, beside it, the energy the
//! workers *claimed*. The receipts that credit this node's own household also form an
//! append-only hash chain: entry n = blake3(entry n-1 || receipt id), entry 0 chained from 32
//! zero bytes, so a household can show its history was not reordered or pruned; an export
//! carries it ([`Ledger::export`]).
//!
//! Trees (all prefixed `ledger/v2/`; receipts of format 1 in the older `ledger/*` trees are
//! not read): `receipts` id → receipt bytes; `slots` job‖shard‖worker → id; `totals` worker
//! key → count‖fuel‖credited_mj‖claimed_mj (u64 LE each); `chain` seq (u64 BE) → receipt
//! id‖entry hash, and under seq u64::MAX the head: length-1 (u64 BE)‖entry hash.

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::identity::PublicKey;
use crate::model::receipt::{
    chain_link, ChainEntryJson, ChainJson, Receipt, ReceiptError, ReceiptExport,
};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("receipt {id} is invalid: {source}")]
    Invalid {
        id: String,
        #[source]
        source: ReceiptError,
    },
    #[error("receipt {id} was already recorded (replay refused, no credit counted twice)")]
    Replay { id: String },
    #[error("a different receipt ({existing}) already covers job {job} shard {shard} for this worker; receipt {id} refused")]
    Conflict {
        id: String,
        existing: String,
        job: String,
        shard: u32,
    },
    #[error("ledger database: {0}")]
    Db(#[from] sled::Error),
    #[error("ledger entry {0} is corrupt")]
    Corrupt(String),
}

/// Credit of one household.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub receipts: u64,
    pub fuel: u64,
    /// Energy credited by the submitters (the sum of the receipts' `credited_mj`): the figure
    /// a household is repaid by.
    pub credited_mj: u64,
    /// Energy the household's workers claimed (the records' `energy_mj`); at least
    /// `credited_mj`.
    pub claimed_mj: u64,
}

impl Totals {
    fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.receipts.to_le_bytes());
        b[8..16].copy_from_slice(&self.fuel.to_le_bytes());
        b[16..24].copy_from_slice(&self.credited_mj.to_le_bytes());
        b[24..].copy_from_slice(&self.claimed_mj.to_le_bytes());
        b
    }
    fn from_bytes(b: &[u8]) -> Option<Totals> {
        if b.len() != 32 {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(Totals {
            receipts: u(0),
            fuel: u(8),
            credited_mj: u(16),
            claimed_mj: u(24),
        })
    }
}

#[derive(Clone)]
pub struct Ledger {
    receipts: sled::Tree,
    slots: sled::Tree,
    totals: sled::Tree,
    chain: sled::Tree,
    own: PublicKey,
}

fn slot_key(r: &Receipt) -> Vec<u8> {
    let mut k = Vec::with_capacity(68);
    k.extend_from_slice(r.record.job.as_bytes());
    k.extend_from_slice(&r.record.shard.to_be_bytes());
    k.extend_from_slice(&r.record.worker.0);
    k
}

enum Outcome {
    Stored,
    Replay,
    Conflict(Vec<u8>),
}

impl Ledger {
    /// Opens the ledger in a shared sled database. `own` is this node's household, whose
    /// receipts go on the hash chain.
    pub fn open(db: &sled::Db, own: PublicKey) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            receipts: db.open_tree("ledger/v2/receipts")?,
            slots: db.open_tree("ledger/v2/slots")?,
            totals: db.open_tree("ledger/v2/totals")?,
            chain: db.open_tree("ledger/v2/chain")?,
            own,
        })
    }

    /// Verifies (physics, terms, signatures) and records a receipt. Returns its id.
    pub fn insert(&self, receipt: &Receipt) -> Result<blake3::Hash, LedgerError> {
        let id = receipt.id();
        receipt.verify().map_err(|source| LedgerError::Invalid {
            id: id.to_hex().to_string(),
            source,
        })?;
        self.insert_verified(receipt)
    }

    /// Records a receipt whose signatures the caller has already checked (batch import).
    fn insert_verified(&self, receipt: &Receipt) -> Result<blake3::Hash, LedgerError> {
        let id = receipt.id();
        let slot = slot_key(receipt);
        let bytes = receipt.to_bytes();
        let worker = receipt.record.worker;
        let on_chain = worker == self.own;
        let result = (&self.receipts, &self.slots, &self.totals, &self.chain).transaction(
            |(receipts, slots, totals, chain)| {
                if let Some(existing) = slots.get(&slot)? {
                    return Ok(if existing.as_ref() == id.as_bytes() {
                        Outcome::Replay
                    } else {
                        Outcome::Conflict(existing.to_vec())
                    });
                }
                receipts.insert(id.as_bytes(), bytes.as_slice())?;
                slots.insert(slot.as_slice(), id.as_bytes())?;
                let mut t = match totals.get(worker.0)? {
                    Some(v) => Totals::from_bytes(&v).ok_or_else(|| {
                        ConflictableTransactionError::Abort("totals entry corrupt")
                    })?,
                    None => Totals::default(),
                };
                t.receipts += 1;
                t.fuel = t.fuel.saturating_add(receipt.record.fuel);
                // Saturating: each figure is bounded by physics (at most MAX_WATTS over 24 h
                // per receipt), but the count of receipts is not.
                t.credited_mj = t.credited_mj.saturating_add(receipt.terms.credited_mj);
                t.claimed_mj = t.claimed_mj.saturating_add(receipt.record.energy_mj);
                totals.insert(&worker.0, &t.to_bytes())?;
                if on_chain {
                    // The head is kept under the key u64::MAX so the append is one read and
                    // two writes inside the transaction.
                    let head = chain.get(u64::MAX.to_be_bytes())?;
                    let (seq, prev) = match head {
                        Some(h) if h.len() == 40 => {
                            let seq = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
                            let mut prev = [0u8; 32];
                            prev.copy_from_slice(&h[8..]);
                            (seq + 1, prev)
                        }
                        Some(_) => {
                            return Err(ConflictableTransactionError::Abort("chain head corrupt"))
                        }
                        None => (0, [0u8; 32]),
                    };
                    let entry = chain_link(&prev, &id);
                    let mut value = id.as_bytes().to_vec();
                    value.extend_from_slice(&entry);
                    chain.insert(&seq.to_be_bytes(), value)?;
                    let mut head = seq.to_be_bytes().to_vec();
                    head.extend_from_slice(&entry);
                    chain.insert(&u64::MAX.to_be_bytes(), head)?;
                }
                Ok(Outcome::Stored)
            },
        );
        let outcome = result.map_err(|e| match e {
            TransactionError::Abort(what) => LedgerError::Corrupt(what.to_string()),
            TransactionError::Storage(e) => LedgerError::Db(e),
        })?;
        match outcome {
            Outcome::Stored => Ok(id),
            Outcome::Replay => Err(LedgerError::Replay {
                id: id.to_hex().to_string(),
            }),
            Outcome::Conflict(existing) => Err(LedgerError::Conflict {
                id: id.to_hex().to_string(),
                existing: hex::encode(existing),
                job: receipt.record.job.to_hex().to_string(),
                shard: receipt.record.shard,
            }),
        }
    }

    /// Verifies a batch of receipts (see [`crate::model::receipt::verify_batch`]) and records
    /// the valid ones. Returns one result per receipt.
    pub fn insert_batch(&self, receipts: &[Receipt]) -> Vec<Result<blake3::Hash, LedgerError>> {
        crate::model::receipt::verify_batch(receipts)
            .into_iter()
            .zip(receipts)
            .map(|(check, r)| match check {
                Ok(()) => self.insert_verified(r),
                Err(source) => Err(LedgerError::Invalid {
                    id: r.id().to_hex().to_string(),
                    source,
                }),
            })
            .collect()
    }

    /// Makes everything recorded so far durable (the whole sled database is flushed). Call it
    /// before acknowledging a receipt to anyone.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.receipts.flush_async().await?;
        Ok(())
    }

    pub fn get(&self, id: &blake3::Hash) -> Result<Option<Receipt>, LedgerError> {
        match self.receipts.get(id.as_bytes())? {
            Some(b) => Receipt::from_bytes(&b)
                .map(Some)
                .map_err(|e| LedgerError::Corrupt(format!("receipt {}: {e}", id.to_hex()))),
            None => Ok(None),
        }
    }

    /// All receipts, or those crediting one household, in id order.
    pub fn list(&self, household: Option<&PublicKey>) -> Result<Vec<Receipt>, LedgerError> {
        let mut out = Vec::new();
        for item in self.receipts.iter() {
            let (k, v) = item?;
            let r = Receipt::from_bytes(&v)
                .map_err(|e| LedgerError::Corrupt(format!("receipt {}: {e}", hex::encode(&k))))?;
            if household.is_none_or(|h| *h == r.record.worker) {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn totals(&self) -> Result<Vec<(PublicKey, Totals)>, LedgerError> {
        let mut out = Vec::new();
        for item in self.totals.iter() {
            let (k, v) = item?;
            let key: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| LedgerError::Corrupt("totals key".into()))?;
            let t = Totals::from_bytes(&v).ok_or_else(|| LedgerError::Corrupt("totals".into()))?;
            out.push((PublicKey(key), t));
        }
        Ok(out)
    }

    pub fn totals_of(&self, household: &PublicKey) -> Result<Totals, LedgerError> {
        Ok(match self.totals.get(household.0)? {
            Some(v) => {
                Totals::from_bytes(&v).ok_or_else(|| LedgerError::Corrupt("totals".into()))?
            }
            None => Totals::default(),
        })
    }

    /// Energy credited to `household` (the terms' `credited_mj`) by receipts whose window
    /// ended at or after `since_ms` (ms since the Unix epoch), in mJ.
    pub fn credited_since(&self, household: &PublicKey, since_ms: u64) -> Result<u64, LedgerError> {
        Ok(self
            .list(Some(household))?
            .iter()
            .filter(|r| r.record.end_ms >= since_ms)
            .fold(0u64, |sum, r| sum.saturating_add(r.terms.credited_mj)))
    }

    /// The own-household hash chain in order: (receipt id, entry) per link.
    pub fn chain_entries(&self) -> Result<Vec<(blake3::Hash, [u8; 32])>, LedgerError> {
        let mut out = Vec::new();
        for item in self.chain.range(..u64::MAX.to_be_bytes()) {
            let (k, v) = item?;
            let n = out.len() as u64;
            if k.as_ref() != n.to_be_bytes() || v.len() != 64 {
                return Err(LedgerError::Corrupt(format!(
                    "chain entry {n} is missing or malformed"
                )));
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&v[..32]);
            let mut entry = [0u8; 32];
            entry.copy_from_slice(&v[32..]);
            out.push((blake3::Hash::from_bytes(id), entry));
        }
        Ok(out)
    }

    /// Walks the own-household hash chain and checks every link. Returns its length and head.
    pub fn verify_chain(&self) -> Result<(u64, [u8; 32]), LedgerError> {
        let mut prev = [0u8; 32];
        let entries = self.chain_entries()?;
        for (n, (id, entry)) in entries.iter().enumerate() {
            if chain_link(&prev, id) != *entry {
                return Err(LedgerError::Corrupt(format!(
                    "chain entry {n} does not link"
                )));
            }
            if self.receipts.get(id.as_bytes())?.is_none() {
                return Err(LedgerError::Corrupt(format!(
                    "chain entry {n} names a missing receipt"
                )));
            }
            prev = *entry;
        }
        Ok((entries.len() as u64, prev))
    }

    /// The export of `hearth receipts export --json` and `GET /v1/receipts`: the receipts (all,
    /// or those crediting `household`) and, when the export holds this node's own household's
    /// receipts, its hash chain, so a verifier can check that history offline.
    pub fn export(&self, household: Option<&PublicKey>) -> Result<ReceiptExport, LedgerError> {
        let receipts = self.list(household)?;
        let chain = if household.is_none_or(|h| *h == self.own) {
            let entries = self.chain_entries()?;
            let head = entries.last().map_or([0u8; 32], |(_, e)| *e);
            Some(ChainJson {
                household: self.own.to_hex(),
                length: entries.len() as u64,
                head: hex::encode(head),
                entries: entries
                    .iter()
                    .map(|(id, e)| ChainEntryJson {
                        id: id.to_hex().to_string(),
                        entry: hex::encode(e),
                    })
                    .collect(),
            })
        } else {
            None
        };
        Ok(ReceiptExport::new(&receipts, chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::{Claim, CreditBasis, CreditTerms, EnergyMethod, WorkRecord};

    fn receipt(worker: &Identity, submitter: &Identity, shard: u32, nonce: u8) -> Receipt {
        let record = WorkRecord {
            job: blake3::hash(b"job"),
            shard,
            module: blake3::hash(b"m"),
            input: blake3::hash(b"i"),
            output: blake3::hash(b"o"),
            worker: worker.public(),
            submitter: submitter.public(),
            fuel: 100,
            energy_mj: 2_000,
            method: EnergyMethod::CpuEstimate,
            start_ms: 1,
            end_ms: 2,
            nonce: [nonce; 16],
        };
        // Credit three quarters of the claim, as a coordinator capping it would.
        let terms = CreditTerms {
            credited_mj: 1_500,
            basis: CreditBasis::ReplicaReference,
            ..CreditTerms::claimed(&record, 2, 2)
        };
        Claim::sign(record, worker)
            .unwrap()
            .countersign(submitter, terms)
            .unwrap()
    }

    #[test]
    fn insert_replay_conflict_totals_chain_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (me, other, sub) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        {
            let db = sled::open(dir.path()).unwrap();
            let ledger = Ledger::open(&db, me.public()).unwrap();
            let r0 = receipt(&me, &sub, 0, 1);
            ledger.insert(&r0).unwrap();
            assert!(matches!(
                ledger.insert(&r0),
                Err(LedgerError::Replay { .. })
            ));
            // Same slot, another lease nonce: a second receipt for the same work.
            assert!(matches!(
                ledger.insert(&receipt(&me, &sub, 0, 2)),
                Err(LedgerError::Conflict { .. })
            ));
            ledger.insert(&receipt(&me, &sub, 1, 1)).unwrap();
            ledger.insert(&receipt(&other, &sub, 0, 1)).unwrap();
            // Forged: signed by the worker but countersigned by someone else.
            let mut forged = receipt(&other, &sub, 5, 1);
            forged.submitter_sig = other.sign(b"nonsense");
            assert!(matches!(
                ledger.insert(&forged),
                Err(LedgerError::Invalid { .. })
            ));
            assert_eq!(
                ledger.totals_of(&me.public()).unwrap(),
                Totals {
                    receipts: 2,
                    fuel: 200,
                    credited_mj: 3_000,
                    claimed_mj: 4_000,
                }
            );
            assert_eq!(ledger.totals_of(&other.public()).unwrap().receipts, 1);
            assert_eq!(ledger.verify_chain().unwrap().0, 2);
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let ledger = Ledger::open(&db, me.public()).unwrap();
        assert_eq!(ledger.list(None).unwrap().len(), 3);
        assert_eq!(ledger.list(Some(&me.public())).unwrap().len(), 2);
        let (n, head) = ledger.verify_chain().unwrap();
        assert_eq!(n, 2);
        assert_ne!(head, [0; 32]);
        ledger.insert(&receipt(&me, &sub, 2, 1)).unwrap();
        assert_eq!(ledger.verify_chain().unwrap().0, 3);
    }

    #[test]
    fn batch_insert_reports_each_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (w, s) = (Identity::generate(), Identity::generate());
        let ledger = Ledger::open(&db, w.public()).unwrap();
        let mut bad = receipt(&w, &s, 1, 1);
        bad.record.fuel += 1;
        let results = ledger.insert_batch(&[receipt(&w, &s, 0, 1), bad, receipt(&w, &s, 0, 1)]);
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(LedgerError::Invalid { .. })));
        assert!(matches!(results[2], Err(LedgerError::Replay { .. })));
    }

    #[test]
    fn impossible_receipts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (w, s) = (Identity::generate(), Identity::generate());
        let ledger = Ledger::open(&db, w.public()).unwrap();
        let mut record = receipt(&w, &s, 0, 1).record;
        record.energy_mj = u64::MAX;
        record.fuel = u64::MAX;
        record.end_ms = u64::MAX;
        let terms = CreditTerms::claimed(&record, 1, 1);
        let minted = Claim::sign(record, &w)
            .unwrap()
            .countersign(&s, terms)
            .unwrap();
        assert!(matches!(
            ledger.insert(&minted),
            Err(LedgerError::Invalid {
                source: ReceiptError::Physics(_),
                ..
            })
        ));
        assert_eq!(ledger.totals_of(&w.public()).unwrap(), Totals::default());
    }

    /// The ledger's export of the documented example is the documented export: same receipts,
    /// same chain (`docs/receipts-example.json`).
    #[test]
    fn export_carries_the_documented_chain() {
        use crate::model::receipt::vector;
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let ledger = Ledger::open(&db, vector::worker().public()).unwrap();
        for r in vector::export_receipts() {
            ledger.insert(&r).unwrap();
        }
        let mut got = ledger.export(None).unwrap();
        let mut want = vector::export();
        assert_eq!(got.chain, want.chain);
        got.receipts.sort_by(|a, b| a.id.cmp(&b.id));
        want.receipts.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(got, want);
        let own = ledger.export(Some(&vector::worker().public())).unwrap();
        assert_eq!(own.receipts.len(), 3);
        assert!(own.chain.is_some());
        let other = Identity::from_seed([3; 32]).public();
        let theirs = ledger.export(Some(&other)).unwrap();
        assert_eq!(theirs.receipts.len(), 1);
        assert!(
            theirs.chain.is_none(),
            "a node holds only its own household's chain"
        );
    }
}
