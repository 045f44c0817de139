//! The receipts ledger: this node's heat-work receipts (see "Which receipts"), kept in sled.
//!
//! Rules: one receipt per (job, shard, worker); a receipt is stored only if it verifies
//! (physics, credit terms, both signatures); the same receipt offered twice is a replay and is
//! refused without double credit; a different receipt for a (job, shard, worker) that already
//! has one is a conflict and is refused: the first one recorded stands. Totals per household
//! are updated in the same kv batch as the insert, so they never drift from the receipts;
//! they count the energy *credited* (the terms' `credited_mj`) and, beside it, the energy the
//! workers *claimed*. The receipts that credit this node's own household also form an
//! append-only hash chain: entry n = blake3(entry n-1 || receipt id), entry 0 chained from 32
//! zero bytes, so a household can show its history was not reordered or pruned; an export
//! carries it ([`Ledger::export`]).
//!
//! Which receipts: those crediting this node's own household (delivered by their
//! coordinators with an inclusion proof) and those this node countersigned as a coordinator.
//! Nobody else's: receipts are not gossiped (issue 14); the network carries only the
//! coordinators' signed commitments, and this ledger keeps the commitments its own receipts
//! are proven against and the ones it sealed itself ([`commitments`]).
//!
//! Trees (all prefixed `ledger/v2/`; receipts of format 1 in the older `ledger/*` trees are
//! not read): `receipts` id → receipt bytes; `slots` job‖shard‖worker → id; `totals` worker
//! key → count‖fuel‖credited_mj‖claimed_mj (u64 LE each); `chain` seq (u64 BE) → receipt
//! id‖entry hash, and under seq u64::MAX the head: length-1 (u64 BE)‖entry hash;
//! `own_by_end` window end (u64 BE)‖id → credited_mj (u64 LE) for this household's receipts
//! only, so its receipts and its credit over a time are read without decoding anyone else's
//! (the heat status asks for today's credit every control period, the dashboard for the last
//! days' every 5 s, and a coordinator's ledger holds every receipt it countersigned), with,
//! under the empty key, the mark that it was built from the receipts; and, in
//! [`commitments`], `pending`, `commitments` and `proofs`.
//!
//! Size: about 1 080 lines before its unit tests, 880 of them code: insert, chain, the index of
//! own receipts, paging, check and repair share one set of trees and their invariants, which
//! `check` verifies in one place; the rest are unit tests.

pub mod commitments;

use crate::identity::PublicKey;
use crate::model::receipt::{
    chain_link, ChainEntryJson, ChainJson, InclusionJson, Receipt, ReceiptError, ReceiptExport,
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
    #[error(
        "receipt {id} comes without a valid proof that its coordinator committed to it: {reason}"
    )]
    Unproven { id: String, reason: String },
    /// The receipt's proof is in a commitment its coordinator signed under a number that
    /// this ledger holds another commitment of: both verified, they prove an equivocation
    /// (`model::equivocate`), which the node publishes (`node::router`).
    #[error(
        "receipt {id} comes without a valid proof that its coordinator committed to it: its \
         coordinator signed two different commitments numbered {}",
        second.seq
    )]
    Equivocated {
        id: String,
        first: Box<crate::model::commit::Commitment>,
        second: Box<crate::model::commit::Commitment>,
    },
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

/// What [`Ledger::check`] found.
#[derive(Debug, Default)]
pub struct LedgerCheck {
    /// Receipts that decode and verify.
    pub receipts: u64,
    /// Links of the own chain that are intact, from the first.
    pub chain_length: u64,
    pub damage: Vec<LedgerDamage>,
    /// Receipts that do not verify: (key hex, stored bytes hex), to export before a repair.
    pub bad: Vec<(String, String)>,
    /// Inclusion proofs that do not prove their receipt, and pending entries naming no
    /// receipt (key hex); a repair drops them.
    pub bad_proofs: Vec<String>,
}

/// One damage in the ledger, worded for a household.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerDamage {
    #[error("the receipt stored under {key} {reason}")]
    Receipt { key: String, reason: String },
    #[error("the ledger's hash chain breaks at entry {entry}: that entry {fault}")]
    Chain { entry: u64, fault: String },
    #[error("{count} of this household's receipts are not on its hash chain")]
    Unchained { count: u64 },
    #[error("the receipt index (one receipt per job, shard and worker) has {count} wrong entries")]
    Slots { count: u64 },
    #[error("the index of this household's receipts by time has {count} wrong entries")]
    Own { count: u64 },
    #[error("the stored totals of household {household} are not what its receipts add up to")]
    Totals { household: String },
    #[error(
        "{count} inclusion proofs or pending commitment entries do not match a stored receipt"
    )]
    Proofs { count: u64 },
}

/// Totals per household key, recomputed from receipts.
fn totals_of_receipts(receipts: &[Receipt]) -> std::collections::BTreeMap<Vec<u8>, Totals> {
    let mut out: std::collections::BTreeMap<Vec<u8>, Totals> = Default::default();
    for r in receipts {
        let t = out.entry(r.record.worker.0.to_vec()).or_default();
        t.receipts += 1;
        t.fuel = t.fuel.saturating_add(r.record.fuel);
        t.credited_mj = t.credited_mj.saturating_add(r.terms.credited_mj);
        t.claimed_mj = t.claimed_mj.saturating_add(r.record.energy_mj);
    }
    out
}

#[derive(Clone)]
pub struct Ledger {
    receipts: sled::Tree,
    slots: sled::Tree,
    totals: sled::Tree,
    chain: sled::Tree,
    /// This household's receipts by time: end_ms (u64 BE) ‖ id → credited_mj (u64 LE).
    own_by_end: sled::Tree,
    /// Receipts countersigned here and not yet in a commitment: id → window end (u64 BE).
    pending: sled::Tree,
    /// Commitments: coordinator key ‖ seq (u64 BE) → signed commitment bytes.
    commitments: sled::Tree,
    /// Inclusion of a stored receipt: id → coordinator key ‖ seq (u64 BE) ‖ index (u32 BE) ‖
    /// audit path (32 bytes per hash). A receipt this node sealed has no path here: its path
    /// is read from the commitment's tree in `trees` (`commitments.rs`, `Ledger::inclusion`).
    proofs: sled::Tree,
    /// The trees of this node's own commitments: coordinator key ‖ seq → every node of the
    /// tree, 32 bytes each (`model::commit::path_in`), written once by the seal.
    trees: sled::Tree,
    own: Own,
    kv: crate::kv::Kv,
    /// Held by every read-decide-write of the ledger's trees (insert, sealing a commitment),
    /// which sled's transactions used to isolate (`kv`'s header says why they are gone).
    write: std::sync::Arc<std::sync::Mutex<()>>,
}

/// This node's household: the key its credit goes under (the first key of its chain,
/// `model::rotate`) and every key of that chain, first to current. Receipts crediting any of
/// them are its own: on its hash chain, in its index, in its totals. A household that never
/// rotated is just its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Own {
    pub household: PublicKey,
    pub keys: Vec<PublicKey>,
}

impl Own {
    /// A household's keys, first to current (`keys::own_keys`).
    pub fn chain(keys: Vec<PublicKey>) -> Own {
        Own {
            household: keys[0],
            keys,
        }
    }

    /// Whether `key` is one of the household's.
    pub fn holds(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// The key the household signs with now.
    pub fn current(&self) -> PublicKey {
        self.keys[self.keys.len() - 1]
    }
}

impl From<PublicKey> for Own {
    fn from(key: PublicKey) -> Own {
        Own {
            household: key,
            keys: vec![key],
        }
    }
}

/// The key of an own receipt in `own_by_end`: window end (u64 BE) ‖ id.
fn own_key(r: &Receipt) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&r.record.end_ms.to_be_bytes());
    k.extend_from_slice(r.id().as_bytes());
    k
}

/// Under the empty key of `own_by_end` (no entry's key is empty): the index holds every own
/// receipt. Ledgers written before the index had none; [`Ledger::open`] builds it once.
const OWN_BUILT: &[u8] = b"";

/// One receipt of this household as `own_by_end` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worked {
    pub end_ms: u64,
    pub id: blake3::Hash,
    pub credited_mj: u64,
}

impl Worked {
    fn parse(k: &[u8], v: &[u8]) -> Result<Worked, LedgerError> {
        let corrupt = || LedgerError::Corrupt("an entry of the own receipts' index".into());
        let (Ok(end), Ok(id), Ok(credited)) = (
            <[u8; 8]>::try_from(k.get(..8).ok_or_else(corrupt)?),
            <[u8; 32]>::try_from(k.get(8..).ok_or_else(corrupt)?),
            <[u8; 8]>::try_from(v),
        ) else {
            return Err(corrupt());
        };
        Ok(Worked {
            end_ms: u64::from_be_bytes(end),
            id: blake3::Hash::from_bytes(id),
            credited_mj: u64::from_le_bytes(credited),
        })
    }
}

fn slot_key(r: &Receipt) -> Vec<u8> {
    let mut k = Vec::with_capacity(68);
    k.extend_from_slice(r.record.job.as_bytes());
    k.extend_from_slice(&r.record.shard.to_be_bytes());
    k.extend_from_slice(&r.record.worker.0);
    k
}

/// An inclusion proof written with its receipt (`ledger/commitments.rs`).
struct ProofWrite<'a> {
    key: &'a [u8],
    commitment: &'a [u8],
    value: &'a [u8],
    seq: u64,
}

enum Outcome {
    Stored,
    Replay,
    Conflict(Vec<u8>),
}

impl Outcome {
    fn result(self, receipt: &Receipt) -> Result<blake3::Hash, LedgerError> {
        let id = receipt.id();
        match self {
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
}

/// What the receipts staged so far in one kv batch changed, read in place of the database
/// by the next receipt of the batch ([`Ledger::stage`]).
#[derive(Default)]
struct Staged {
    slots: std::collections::HashMap<Vec<u8>, [u8; 32]>,
    totals: std::collections::HashMap<[u8; 32], Totals>,
    /// The own chain's head: (seq of the last entry, its entry hash).
    head: Option<(u64, [u8; 32])>,
}

impl Ledger {
    /// Opens the ledger in a shared sled database. `own` is this node's household (its key, or
    /// every key of its chain), whose receipts go on the hash chain.
    pub fn open(db: &sled::Db, own: impl Into<Own>) -> Result<Ledger, LedgerError> {
        let own = own.into();
        assert!(!own.keys.is_empty(), "a household has at least one key");
        let ledger = Ledger {
            receipts: db.open_tree("ledger/v2/receipts")?,
            slots: db.open_tree("ledger/v2/slots")?,
            totals: db.open_tree("ledger/v2/totals")?,
            chain: db.open_tree("ledger/v2/chain")?,
            own_by_end: db.open_tree("ledger/v2/own_by_end")?,
            pending: db.open_tree("ledger/v2/pending")?,
            commitments: db.open_tree("ledger/v2/commitments")?,
            proofs: db.open_tree("ledger/v2/proofs")?,
            trees: db.open_tree("ledger/v2/trees")?,
            own,
            kv: crate::kv::Kv::open(db)?,
            write: Default::default(),
        };
        if ledger.own_by_end.get(OWN_BUILT)?.is_none() {
            ledger.build_own_index()?;
        }
        Ok(ledger)
    }

    /// This node's household: its keys, first to current.
    pub fn own(&self) -> &Own {
        &self.own
    }

    /// (Re)builds `own_by_end` from the receipts, then marks it built: a ledger from before
    /// the index, or one a repair rebuilds. Interrupted, it starts again at the next open (the
    /// mark is written last).
    fn build_own_index(&self) -> Result<(), LedgerError> {
        self.own_by_end.clear()?;
        for item in self.receipts.iter() {
            let (_, v) = item?;
            // A receipt that does not decode is `hearth doctor`'s to report; not indexed.
            match Receipt::from_bytes(&v) {
                Ok(r) if self.own.holds(&r.record.worker) => {
                    self.own_by_end
                        .insert(own_key(&r), &r.terms.credited_mj.to_le_bytes())?;
                }
                _ => {}
            }
        }
        self.own_by_end.insert(OWN_BUILT, b"1")?;
        Ok(())
    }

    /// Verifies (physics, terms, signatures) and records a receipt. Returns its id.
    pub fn insert(&self, receipt: &Receipt) -> Result<blake3::Hash, LedgerError> {
        let id = receipt.id();
        receipt.verify().map_err(|source| LedgerError::Invalid {
            id: id.to_hex().to_string(),
            source,
        })?;
        self.insert_verified(receipt, false, None)
    }

    /// Records a receipt whose signatures the caller has already checked (batch import).
    /// `pending`: this node countersigned it, and it waits for the next commitment.
    fn insert_verified(
        &self,
        receipt: &Receipt,
        pending: bool,
        proof: Option<ProofWrite<'_>>,
    ) -> Result<blake3::Hash, LedgerError> {
        // Read, decide and write under the ledger's lock (two inserts of one slot must not both
        // see it free); the writes go in one kv batch, all or none after a crash.
        let _write = self.write_lock();
        let mut batch = self.kv.batch();
        let mut staged = Staged::default();
        let outcome = self.stage(&mut batch, &mut staged, receipt, pending, proof)?;
        batch.commit()?;
        outcome.result(receipt)
    }

    /// Records several receipts whose signatures the caller has checked, in one kv batch
    /// (one intent for all of them, all or none after a crash). `pending` as for
    /// [`Ledger::insert_verified`]. One result per receipt; a database error fails them all.
    fn insert_verified_all(
        &self,
        receipts: &[&Receipt],
        pending: bool,
    ) -> Result<Vec<Result<blake3::Hash, LedgerError>>, LedgerError> {
        let _write = self.write_lock();
        let mut batch = self.kv.batch();
        let mut staged = Staged::default();
        let mut outcomes = Vec::with_capacity(receipts.len());
        for r in receipts {
            outcomes.push(self.stage(&mut batch, &mut staged, r, pending, None)?);
        }
        batch.commit()?;
        Ok(outcomes
            .into_iter()
            .zip(receipts)
            .map(|(o, r)| o.result(r))
            .collect())
    }

    /// Works out the writes that record `receipt` and adds them to `batch`; `staged` holds
    /// what earlier receipts of the same batch changed (read before the database). The
    /// caller holds the ledger's lock and commits.
    fn stage(
        &self,
        batch: &mut crate::kv::Batch,
        staged: &mut Staged,
        receipt: &Receipt,
        pending: bool,
        proof: Option<ProofWrite<'_>>,
    ) -> Result<Outcome, LedgerError> {
        let id = receipt.id();
        let slot = slot_key(receipt);
        let worker = receipt.record.worker;
        let on_chain = self.own.holds(&worker);
        let corrupt = |what: &str| LedgerError::Corrupt(what.to_string());
        // The receipt's inclusion proof (and the commitment it points into) is written in the
        // same batch: a kill can never leave one without the other.
        let write_proof = |batch: &mut crate::kv::Batch| -> Result<(), LedgerError> {
            let Some(p) = &proof else { return Ok(()) };
            match self.commitments.get(p.key)? {
                // Two signed commitments with one number: keep the first, refuse, and hand
                // both back as the proof (both verified before they were stored or offered).
                Some(existing) if existing.as_ref() != p.commitment => {
                    let decode = |bytes: &[u8]| {
                        crate::model::commit::Commitment::from_bytes(bytes)
                            .map(Box::new)
                            .map_err(|e| {
                                LedgerError::Corrupt(format!("commitment #{}: {e}", p.seq))
                            })
                    };
                    return Err(LedgerError::Equivocated {
                        id: id.to_hex().to_string(),
                        first: decode(&existing)?,
                        second: decode(p.commitment)?,
                    });
                }
                Some(_) => {}
                None => batch.insert(&self.commitments, p.key, p.commitment),
            }
            batch.insert(&self.proofs, id.as_bytes(), p.value);
            Ok(())
        };
        let existing = match staged.slots.get(&slot) {
            Some(id) => Some(id.to_vec()),
            None => self.slots.get(&slot)?.map(|v| v.to_vec()),
        };
        if let Some(existing) = existing {
            return if existing.as_slice() == id.as_bytes() {
                // Delivered again: the receipt is here; keep (or add) its proof.
                write_proof(batch)?;
                Ok(Outcome::Replay)
            } else {
                Ok(Outcome::Conflict(existing))
            };
        }
        write_proof(batch)?;
        batch.insert(&self.receipts, id.as_bytes(), receipt.to_bytes());
        batch.insert(&self.slots, slot.as_slice(), id.as_bytes());
        staged.slots.insert(slot, *id.as_bytes());
        if on_chain {
            batch.insert(
                &self.own_by_end,
                own_key(receipt),
                receipt.terms.credited_mj.to_le_bytes(),
            );
        }
        if pending {
            batch.insert(
                &self.pending,
                id.as_bytes(),
                receipt.record.end_ms.to_be_bytes(),
            );
        }
        let mut t = match staged.totals.get(&worker.0) {
            Some(t) => *t,
            None => match self.totals.get(worker.0)? {
                Some(v) => Totals::from_bytes(&v).ok_or_else(|| corrupt("totals entry corrupt"))?,
                None => Totals::default(),
            },
        };
        t.receipts += 1;
        t.fuel = t.fuel.saturating_add(receipt.record.fuel);
        // Saturating: each figure is bounded by physics (at most MAX_WATTS over 24 h per
        // receipt), but the count of receipts is not.
        t.credited_mj = t.credited_mj.saturating_add(receipt.terms.credited_mj);
        t.claimed_mj = t.claimed_mj.saturating_add(receipt.record.energy_mj);
        batch.insert(&self.totals, worker.0, t.to_bytes());
        staged.totals.insert(worker.0, t);
        if on_chain {
            // The head is kept under the key u64::MAX so the append is one read and two
            // writes.
            let head = match staged.head {
                Some(h) => Some(h),
                None => match self.chain.get(u64::MAX.to_be_bytes())? {
                    Some(h) if h.len() == 40 => {
                        let seq = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
                        let mut prev = [0u8; 32];
                        prev.copy_from_slice(&h[8..]);
                        Some((seq, prev))
                    }
                    Some(_) => return Err(corrupt("chain head corrupt")),
                    None => None,
                },
            };
            let (seq, prev) = match head {
                Some((seq, prev)) => (seq + 1, prev),
                None => (0, [0u8; 32]),
            };
            let entry = chain_link(&prev, &id);
            let mut value = id.as_bytes().to_vec();
            value.extend_from_slice(&entry);
            batch.insert(&self.chain, seq.to_be_bytes(), value);
            let mut head = seq.to_be_bytes().to_vec();
            head.extend_from_slice(&entry);
            batch.insert(&self.chain, u64::MAX.to_be_bytes(), head);
            staged.head = Some((seq, entry));
        }
        Ok(Outcome::Stored)
    }

    /// Verifies a batch of receipts (see [`crate::model::receipt::verify_batch`]) and records
    /// the valid ones. Returns one result per receipt.
    pub fn insert_batch(&self, receipts: &[Receipt]) -> Vec<Result<blake3::Hash, LedgerError>> {
        crate::model::receipt::verify_batch(receipts)
            .into_iter()
            .zip(receipts)
            .map(|(check, r)| match check {
                Ok(()) => self.insert_verified(r, false, None),
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
        crate::kv::flush(&self.receipts).await?;
        Ok(())
    }

    /// The ledger's write lock ([`Ledger`]'s `write`). Nothing panics while holding it with
    /// the trees half written (a batch commits whole or not), so a poisoned lock is still good.
    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &blake3::Hash) -> Result<Option<Receipt>, LedgerError> {
        match self.receipts.get(id.as_bytes())? {
            Some(b) => Receipt::from_bytes(&b)
                .map(Some)
                .map_err(|e| LedgerError::Corrupt(format!("receipt {}: {e}", id.to_hex()))),
            None => Ok(None),
        }
    }

    /// All receipts, or those crediting one household (this node's through its index: none of
    /// anyone else's is decoded), in id order.
    pub fn list(&self, household: Option<&PublicKey>) -> Result<Vec<Receipt>, LedgerError> {
        let decode = |k: &[u8], v: &[u8]| {
            Receipt::from_bytes(v)
                .map_err(|e| LedgerError::Corrupt(format!("receipt {}: {e}", hex::encode(k))))
        };
        if household.is_none_or(|h| !self.own.holds(h)) {
            let mut out = Vec::new();
            for item in self.receipts.iter() {
                let (k, v) = item?;
                let r = decode(&k, &v)?;
                if household.is_none_or(|h| *h == r.record.worker) {
                    out.push(r);
                }
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        for w in self.own_since(0) {
            let id = w?.id;
            let v = self.receipts.get(id.as_bytes())?.ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "the own receipts' index names receipt {}, which is not stored (`hearth doctor`)",
                    id.to_hex()
                ))
            })?;
            out.push(decode(id.as_bytes(), &v)?);
        }
        out.sort_by_key(|r| *r.id().as_bytes());
        Ok(out)
    }

    /// A page of the receipts crediting `worker` that `submitter` countersigned, in id order
    /// after `after`, at most `limit`, and whether more follow. Others' receipts are passed
    /// over by the two keys at their fixed offsets (docs/receipts.md), never decoded, and the
    /// scan starts after `after`, so the pages of a whole `hearth doctor --repair --from`
    /// read the ledger once between them (until 2026-12-03 each page decoded every receipt).
    pub fn page(
        &self,
        worker: &PublicKey,
        submitter: &PublicKey,
        after: Option<&blake3::Hash>,
        limit: usize,
    ) -> Result<(Vec<Receipt>, bool), LedgerError> {
        use crate::model::receipt::{SUBMITTER_AT, WORKER_AT};
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(*a.as_bytes()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in self
            .receipts
            .range::<[u8; 32], _>((start, Bound::Unbounded))
        {
            let (k, v) = item?;
            if v.get(WORKER_AT..WORKER_AT + 32) != Some(worker.0.as_slice())
                || v.get(SUBMITTER_AT..SUBMITTER_AT + 32) != Some(submitter.0.as_slice())
            {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(
                Receipt::from_bytes(&v).map_err(|e| {
                    LedgerError::Corrupt(format!("receipt {}: {e}", hex::encode(&k)))
                })?,
            );
        }
        Ok((out, false))
    }

    /// This household's receipts whose window ended at or after `since_ms`, oldest first
    /// (`.rev()`: newest first), as its index names them: nothing is decoded.
    pub fn own_since(
        &self,
        since_ms: u64,
    ) -> impl DoubleEndedIterator<Item = Result<Worked, LedgerError>> {
        self.own_by_end.range(since_ms.to_be_bytes()..).map(|item| {
            let (k, v) = item?;
            Worked::parse(&k, &v)
        })
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

    /// Totals of the receipts crediting `household`: for this node's own, those of every key
    /// of its chain, added up.
    pub fn totals_of(&self, household: &PublicKey) -> Result<Totals, LedgerError> {
        let one = |key: &PublicKey| -> Result<Totals, LedgerError> {
            Ok(match self.totals.get(key.0)? {
                Some(v) => {
                    Totals::from_bytes(&v).ok_or_else(|| LedgerError::Corrupt("totals".into()))?
                }
                None => Totals::default(),
            })
        };
        if !self.own.holds(household) {
            return one(household);
        }
        self.own
            .keys
            .iter()
            .try_fold(Totals::default(), |sum, key| {
                let t = one(key)?;
                Ok(Totals {
                    receipts: sum.receipts.saturating_add(t.receipts),
                    fuel: sum.fuel.saturating_add(t.fuel),
                    credited_mj: sum.credited_mj.saturating_add(t.credited_mj),
                    claimed_mj: sum.claimed_mj.saturating_add(t.claimed_mj),
                })
            })
    }

    /// Energy credited to `household` (the terms' `credited_mj`) by receipts whose window
    /// ended at or after `since_ms` (ms since the Unix epoch), in mJ.
    /// This household's through its index; another's by decoding every receipt.
    pub fn credited_since(&self, household: &PublicKey, since_ms: u64) -> Result<u64, LedgerError> {
        if self.own.holds(household) {
            return self
                .own_since(since_ms)
                .try_fold(0u64, |sum, w| Ok(sum.saturating_add(w?.credited_mj)));
        }
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

    /// Counts for the integrity checkpoint: receipts stored, and the own chain's length and
    /// head entry as its head record says (the record is not walked here; see
    /// [`Ledger::check`]).
    pub fn counts(&self) -> Result<(u64, u64, [u8; 32]), LedgerError> {
        let mut receipts = 0u64;
        for item in self.receipts.iter() {
            item?;
            receipts += 1;
        }
        let (length, head) = match self.chain.get(u64::MAX.to_be_bytes())? {
            Some(h) if h.len() == 40 => {
                let last = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
                let mut head = [0u8; 32];
                head.copy_from_slice(&h[8..]);
                (last.saturating_add(1), head)
            }
            Some(_) => return Err(LedgerError::Corrupt("the chain's head record".into())),
            None => (0, [0u8; 32]),
        };
        Ok((receipts, length, head))
    }

    /// The chain entry stored at `seq`, if any: (receipt id, entry hash).
    pub fn chain_entry(&self, seq: u64) -> Result<Option<[u8; 32]>, LedgerError> {
        Ok(self
            .chain
            .get(seq.to_be_bytes())?
            .filter(|v| v.len() == 64)
            .map(|v| {
                let mut e = [0u8; 32];
                e.copy_from_slice(&v[32..]);
                e
            }))
    }

    /// Checks everything the ledger stores against everything else: every receipt decodes,
    /// is stored under its own id and verifies (physics, terms, both signatures); every link
    /// of the own-household chain links, names a stored receipt of this household, and the
    /// head record names the last link; every own receipt is on the chain; the slot index and
    /// the totals are what the receipts say. Returns every damage found, not only the first.
    pub fn check(&self) -> Result<LedgerCheck, LedgerError> {
        let mut damage = Vec::new();
        let mut bad = Vec::new();
        let mut good: Vec<Receipt> = Vec::new();
        for item in self.receipts.iter() {
            let (k, v) = item?;
            let reason = match Receipt::from_bytes(&v) {
                Err(e) => Some(format!("does not decode: {e}")),
                Ok(r) if r.id().as_bytes() != k.as_ref() => {
                    Some("is stored under another id than its own".to_string())
                }
                Ok(r) => match r.verify() {
                    Err(e) => Some(format!("does not verify: {e}")),
                    Ok(()) => {
                        good.push(r);
                        None
                    }
                },
            };
            if let Some(reason) = reason {
                damage.push(LedgerDamage::Receipt {
                    key: hex::encode(&k),
                    reason,
                });
                bad.push((hex::encode(&k), hex::encode(&v)));
            }
        }
        let by_id: std::collections::HashMap<[u8; 32], &Receipt> =
            good.iter().map(|r| (*r.id().as_bytes(), r)).collect();

        // The chain: the first entry that fails ends the walk; later entries are suspect.
        let mut chained = std::collections::HashSet::new();
        let mut prev = [0u8; 32];
        let mut length = 0u64;
        let mut broken = false;
        for item in self.chain.range(..u64::MAX.to_be_bytes()) {
            let (k, v) = item?;
            let fault = if k.as_ref() != length.to_be_bytes() {
                Some("is missing (the next entry has another number)".to_string())
            } else if v.len() != 64 {
                Some("is malformed".to_string())
            } else {
                let mut id = [0u8; 32];
                id.copy_from_slice(&v[..32]);
                if chain_link(&prev, &blake3::Hash::from_bytes(id)) != v[32..] {
                    Some("does not link to the entry before it".to_string())
                } else if by_id
                    .get(&id)
                    .is_none_or(|r| !self.own.holds(&r.record.worker))
                {
                    Some(format!(
                        "names receipt {} that is missing, unreadable or not this household's",
                        hex::encode(id)
                    ))
                } else {
                    chained.insert(id);
                    prev.copy_from_slice(&v[32..]);
                    None
                }
            };
            if let Some(fault) = fault {
                damage.push(LedgerDamage::Chain {
                    entry: length,
                    fault,
                });
                broken = true;
                break;
            }
            length += 1;
        }
        if !broken {
            let head = self.chain.get(u64::MAX.to_be_bytes())?;
            let expected = (length > 0).then(|| {
                let mut h = (length - 1).to_be_bytes().to_vec();
                h.extend_from_slice(&prev);
                h
            });
            if head.as_deref() != expected.as_deref() {
                damage.push(LedgerDamage::Chain {
                    entry: length,
                    fault: "the head record does not name the last entry".into(),
                });
            }
        }
        let unchained = good
            .iter()
            .filter(|r| self.own.holds(&r.record.worker) && !chained.contains(r.id().as_bytes()))
            .count() as u64;
        if unchained > 0 && !broken {
            damage.push(LedgerDamage::Unchained { count: unchained });
        }

        // The slot index.
        let mut wrong_slots = 0u64;
        for r in &good {
            if self.slots.get(slot_key(r))?.as_deref() != Some(r.id().as_bytes().as_slice()) {
                wrong_slots += 1;
            }
        }
        for item in self.slots.iter() {
            let (_, v) = item?;
            if !<[u8; 32]>::try_from(v.as_ref()).is_ok_and(|id| by_id.contains_key(&id)) {
                wrong_slots += 1;
            }
        }
        if wrong_slots > 0 {
            damage.push(LedgerDamage::Slots { count: wrong_slots });
        }

        // The index of own receipts by time.
        let mut wrong_own = 0u64;
        for r in good.iter().filter(|r| self.own.holds(&r.record.worker)) {
            if self.own_by_end.get(own_key(r))?.as_deref()
                != Some(r.terms.credited_mj.to_le_bytes().as_slice())
            {
                wrong_own += 1;
            }
        }
        for item in self.own_by_end.iter() {
            let (k, _) = item?;
            if k.as_ref() == OWN_BUILT {
                continue;
            }
            let named = <[u8; 32]>::try_from(k.get(8..).unwrap_or_default())
                .ok()
                .and_then(|id| by_id.get(&id));
            if named.is_none_or(|r| !self.own.holds(&r.record.worker) || own_key(r) != k.as_ref()) {
                wrong_own += 1;
            }
        }
        if wrong_own > 0 || self.own_by_end.get(OWN_BUILT)?.is_none() {
            damage.push(LedgerDamage::Own { count: wrong_own });
        }

        // The totals.
        let want = totals_of_receipts(&good);
        let mut have = std::collections::BTreeMap::new();
        for item in self.totals.iter() {
            let (k, v) = item?;
            have.insert(k.to_vec(), Totals::from_bytes(&v));
        }
        for (key, t) in &want {
            if have.get(key.as_slice()) != Some(&Some(*t)) {
                damage.push(LedgerDamage::Totals {
                    household: hex::encode(key),
                });
            }
        }
        for key in have.keys() {
            if key.len() != 32 || !want.contains_key(key.as_slice()) {
                damage.push(LedgerDamage::Totals {
                    household: hex::encode(key),
                });
            }
        }
        let bad_proofs = self.check_proofs()?;
        if !bad_proofs.is_empty() {
            damage.push(LedgerDamage::Proofs {
                count: bad_proofs.len() as u64,
            });
        }
        Ok(LedgerCheck {
            receipts: good.len() as u64,
            chain_length: length,
            damage,
            bad,
            bad_proofs,
        })
    }

    /// Repairs what [`Ledger::check`] found, from the receipts alone: removes the receipts
    /// that do not verify (the caller exports `check.bad` first), rebuilds the slot index and
    /// the totals from the rest, keeps the chain up to its first damaged entry and appends
    /// the own receipts not on it in the order (window end, receipt id). Returns how many
    /// receipts were appended to the chain. Not one transaction: if it is interrupted, run
    /// it again (it starts from the receipts each time). Holds the ledger's lock throughout.
    pub fn repair(&self, check: &LedgerCheck) -> Result<u64, LedgerError> {
        let _write = self.write_lock();
        for (key, _) in &check.bad {
            let key = hex::decode(key).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            self.receipts.remove(key)?;
        }
        // Proofs are checked again here: removing a bad receipt orphans its proof.
        self.repair_proofs(&self.check_proofs()?)?;
        let mut good = Vec::new();
        for item in self.receipts.iter() {
            let (_, v) = item?;
            if let Ok(r) = Receipt::from_bytes(&v) {
                good.push(r);
            }
        }
        self.slots.clear()?;
        for r in &good {
            self.slots.insert(slot_key(r), r.id().as_bytes())?;
        }
        self.totals.clear()?;
        for (key, t) in totals_of_receipts(&good) {
            self.totals.insert(key, &t.to_bytes())?;
        }
        self.build_own_index()?;
        // Keep the intact prefix of the chain, drop the rest.
        let keep = check.chain_length;
        let stale: Vec<sled::IVec> = self
            .chain
            .range(keep.to_be_bytes()..)
            .keys()
            .collect::<Result<_, _>>()?;
        for k in stale {
            self.chain.remove(k)?;
        }
        let mut chained = std::collections::HashSet::new();
        let mut prev = [0u8; 32];
        for (id, entry) in self.chain_entries()? {
            chained.insert(id);
            prev = entry;
        }
        let mut missing: Vec<&Receipt> = good
            .iter()
            .filter(|r| self.own.holds(&r.record.worker) && !chained.contains(&r.id()))
            .collect();
        missing.sort_by_key(|r| (r.record.end_ms, *r.id().as_bytes()));
        let mut seq = keep;
        for r in &missing {
            let id = r.id();
            let entry = chain_link(&prev, &id);
            let mut value = id.as_bytes().to_vec();
            value.extend_from_slice(&entry);
            self.chain.insert(seq.to_be_bytes(), value)?;
            prev = entry;
            seq += 1;
        }
        if seq > 0 {
            let mut head = (seq - 1).to_be_bytes().to_vec();
            head.extend_from_slice(&prev);
            self.chain.insert(u64::MAX.to_be_bytes(), head)?;
        }
        Ok(missing.len() as u64)
    }

    /// The export of `hearth receipts export --json` and `GET /v1/receipts`: the receipts (all,
    /// or those crediting `household`) and, when the export holds this node's own household's
    /// receipts, its hash chain, so a verifier can check that history offline; and every
    /// exported receipt's inclusion proof that the ledger holds.
    pub fn export(&self, household: Option<&PublicKey>) -> Result<ReceiptExport, LedgerError> {
        let receipts = self.list(household)?;
        let mut inclusions = Vec::new();
        for r in &receipts {
            if let Some(inc) = self.inclusion(&r.id())? {
                inclusions.push(InclusionJson::new(&r.id(), &inc));
            }
        }
        inclusions.sort_by(|a, b| a.receipt.cmp(&b.receipt));
        let chain = if household.is_none_or(|h| self.own.holds(h)) {
            let entries = self.chain_entries()?;
            let head = entries.last().map_or([0u8; 32], |(_, e)| *e);
            Some(ChainJson {
                household: self.own.household.to_hex(),
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
        let mut export = ReceiptExport::new(&receipts, chain);
        export.inclusions = inclusions;
        Ok(export)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::{Claim, CreditBasis, CreditTerms, EnergyMethod, WorkRecord};

    fn receipt(worker: &Identity, submitter: &Identity, shard: u32, nonce: u8) -> Receipt {
        receipt_at(worker, submitter, shard, nonce, 2)
    }

    /// A receipt whose window ends at `end_ms`.
    fn receipt_at(
        worker: &Identity,
        submitter: &Identity,
        shard: u32,
        nonce: u8,
        end_ms: u64,
    ) -> Receipt {
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
            start_ms: end_ms - 1,
            end_ms,
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
            let db = crate::node::test_db(dir.path()).unwrap();
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
        let db = crate::node::test_db(dir.path()).unwrap();
        let ledger = Ledger::open(&db, me.public()).unwrap();
        assert_eq!(ledger.list(None).unwrap().len(), 3);
        assert_eq!(ledger.list(Some(&me.public())).unwrap().len(), 2);
        let (n, head) = ledger.verify_chain().unwrap();
        assert_eq!(n, 2);
        assert_ne!(head, [0; 32]);
        ledger.insert(&receipt(&me, &sub, 2, 1)).unwrap();
        assert_eq!(ledger.verify_chain().unwrap().0, 3);
    }

    /// A broken chain link, wrong totals and a receipt that no longer verifies are each found;
    /// the repair exports nothing itself, rebuilds from the receipts, and leaves no damage.
    #[test]
    fn check_finds_and_repair_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let (me, sub) = (Identity::generate(), Identity::generate());
        let ledger = Ledger::open(&db, me.public()).unwrap();
        for shard in 0..4 {
            ledger.insert(&receipt(&me, &sub, shard, 1)).unwrap();
        }
        assert!(ledger.check().unwrap().damage.is_empty());
        // Entry 2 of the chain overwritten with garbage of the right length.
        ledger
            .chain
            .insert(2u64.to_be_bytes(), vec![7u8; 64])
            .unwrap();
        // The totals of this household doubled.
        let t = ledger.totals_of(&me.public()).unwrap();
        let doubled = Totals {
            receipts: t.receipts * 2,
            ..t
        };
        ledger
            .totals
            .insert(me.public().0, &doubled.to_bytes())
            .unwrap();
        // A receipt whose bytes no longer decode.
        ledger
            .receipts
            .insert([9u8; 32], b"garbage".as_slice())
            .unwrap();
        // The index of own receipts by time: one entry lost, one naming nothing.
        let first = ledger.own_since(0).next().unwrap().unwrap();
        let key = ledger
            .own_by_end
            .iter()
            .keys()
            .map(|k| k.unwrap())
            .find(|k| k.ends_with(first.id.as_bytes()))
            .unwrap();
        ledger.own_by_end.remove(&key).unwrap();
        ledger.own_by_end.insert([5u8; 40], &[0u8; 8]).unwrap();
        let check = ledger.check().unwrap();
        let text: Vec<String> = check.damage.iter().map(|d| d.to_string()).collect();
        assert!(
            check.damage.contains(&LedgerDamage::Chain {
                entry: 2,
                fault: "does not link to the entry before it".into()
            }),
            "{text:?}"
        );
        assert!(
            check
                .damage
                .iter()
                .any(|d| matches!(d, LedgerDamage::Totals { .. })),
            "{text:?}"
        );
        assert!(
            check.damage.contains(&LedgerDamage::Own { count: 2 }),
            "{text:?}"
        );
        assert_eq!(check.bad.len(), 1, "{text:?}");
        assert_eq!(check.chain_length, 2);
        // Two receipts are appended again after the intact prefix of two.
        assert_eq!(ledger.repair(&check).unwrap(), 2);
        let after = ledger.check().unwrap();
        assert!(after.damage.is_empty(), "{:?}", after.damage);
        assert_eq!(ledger.verify_chain().unwrap().0, 4);
        assert_eq!(ledger.totals_of(&me.public()).unwrap(), t);
        assert_eq!(ledger.list(None).unwrap().len(), 4);
    }

    /// This household's receipts and its credit since a moment are read through its index by
    /// time, and say what a walk over every receipt says (as another household's still are);
    /// a ledger written before the index gets it when opened.
    #[test]
    fn a_households_credit_is_read_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let (me, other, sub) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let ledger = Ledger::open(&db, me.public()).unwrap();
        for shard in 0..30u32 {
            let worker = if shard % 3 == 0 { &other } else { &me };
            let end = 1_000 + u64::from(shard * 7 % 30) * 1_000;
            ledger
                .insert(&receipt_at(worker, &sub, shard, 1, end))
                .unwrap();
        }
        let walk = |h: &PublicKey, since: u64| -> (Vec<Receipt>, u64) {
            let mut all: Vec<Receipt> = ledger
                .list(None)
                .unwrap()
                .into_iter()
                .filter(|r| r.record.worker == *h)
                .collect();
            all.sort_by_key(|r| *r.id().as_bytes());
            let credit = all
                .iter()
                .filter(|r| r.record.end_ms >= since)
                .map(|r| r.terms.credited_mj)
                .sum();
            (all, credit)
        };
        for h in [me.public(), other.public()] {
            for since in [0, 1_000, 15_500, 30_000, 31_000] {
                let (all, credit) = walk(&h, since);
                assert_eq!(ledger.credited_since(&h, since).unwrap(), credit);
                assert_eq!(ledger.list(Some(&h)).unwrap(), all);
            }
        }
        let newest: Vec<u64> = ledger
            .own_since(0)
            .rev()
            .map(|w| w.unwrap().end_ms)
            .collect();
        assert_eq!(newest.len(), 20);
        assert!(newest.windows(2).all(|w| w[0] >= w[1]), "{newest:?}");
        // As a ledger from before the index: no entries, no mark. Opened, it is built.
        ledger.own_by_end.clear().unwrap();
        assert!(!ledger.check().unwrap().damage.is_empty());
        let reopened = Ledger::open(&db, me.public()).unwrap();
        assert!(reopened.check().unwrap().damage.is_empty());
        assert_eq!(
            reopened.credited_since(&me.public(), 0).unwrap(),
            walk(&me.public(), 0).1
        );
    }

    /// A peer's pages of its receipts say what a walk over every receipt says, page after
    /// page from the cursor, and nothing of another worker's or another submitter's.
    #[test]
    fn a_workers_receipts_are_paged_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let (me, w, other, sub2) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let ledger = Ledger::open(&db, me.public()).unwrap();
        for shard in 0..40u32 {
            let (worker, submitter) = match shard % 4 {
                0 | 1 => (&w, &me),
                2 => (&other, &me),
                _ => (&w, &sub2),
            };
            ledger
                .insert(&receipt(worker, submitter, shard, 1))
                .unwrap();
        }
        let want: Vec<Receipt> = ledger
            .list(None)
            .unwrap()
            .into_iter()
            .filter(|r| r.record.worker == w.public() && r.record.submitter == me.public())
            .collect();
        assert_eq!(want.len(), 20);
        let (mut got, mut after) = (Vec::new(), None);
        loop {
            let (page, more) = ledger
                .page(&w.public(), &me.public(), after.as_ref(), 6)
                .unwrap();
            assert!(page.len() <= 6);
            after = page.last().map(|r| r.id());
            got.extend(page);
            if !more {
                break;
            }
        }
        assert_eq!(got, want);
        // A page that ends exactly at the last receipt says no more follow.
        let (page, more) = ledger.page(&w.public(), &me.public(), None, 20).unwrap();
        assert_eq!((page.len(), more), (20, false));
        assert!(ledger
            .page(&sub2.public(), &me.public(), None, 10)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn batch_insert_reports_each_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
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
        let db = crate::node::test_db(dir.path()).unwrap();
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
        let db = crate::node::test_db(dir.path()).unwrap();
        let ledger = Ledger::open(&db, vector::worker().public()).unwrap();
        let proofs = vector::inclusions();
        for r in vector::export_receipts() {
            let (_, inc) = proofs.iter().find(|(id, _)| *id == r.id()).unwrap();
            ledger.insert_proven(&r, inc).unwrap();
        }
        let mut got = ledger.export(None).unwrap();
        let mut want = vector::export();
        assert_eq!(got.chain, want.chain);
        got.receipts.sort_by(|a, b| a.id.cmp(&b.id));
        want.receipts.sort_by(|a, b| a.id.cmp(&b.id));
        want.inclusions.sort_by(|a, b| a.receipt.cmp(&b.receipt));
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
