//! The ledger's commitments: receipts this node countersigned wait in `pending` until
//! [`Ledger::seal`] puts them into one signed Merkle commitment
//! ([`crate::model::commit`]); each stored receipt's inclusion proof is kept in `proofs`, and
//! the commitments it names in `commitments`. A seal stores its commitment's whole tree once
//! (`trees`) and per receipt only its leaf's place; the path is read from the tree when asked
//! for ([`Ledger::inclusion`]). A worker's ledger stores the proof, path included, and the
//! commitment that came with its receipt ([`Ledger::insert_proven`]). Gossiped commitments of
//! other coordinators are checked by the node and not stored here: a radiator's storage grows
//! with its own work and its own jobs only.

use super::{Ledger, LedgerError};
use crate::identity::{Identity, PublicKey};
use crate::model::commit::{path_in, Commitment, Inclusion, MAX_LEAVES, MAX_PATH};
use crate::model::receipt::Receipt;

/// What [`Ledger::adopt_own`] made of an auditor's commitment of this node's key.
#[derive(Debug, PartialEq, Eq)]
pub enum Adopted {
    /// It is above every own commitment here: the next seal numbers on after it.
    Raised,
    /// This ledger holds the same commitment.
    Known,
    /// This ledger has sealed past it (the auditor has not heard the later ones yet).
    Behind { last: u64 },
    /// This ledger holds another commitment under its number: the key already signed that
    /// number twice (a data directory restored after it sealed it, or someone else holding the
    /// key). Nothing is changed; the auditors already hold the proof.
    Conflict,
    /// Not a commitment signed by this node's key: ignored.
    NotOwn,
}

fn commitment_key(coordinator: &PublicKey, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&coordinator.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn proof_value(key: &[u8; 40], index: u32, path: &[[u8; 32]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(44 + 32 * path.len());
    v.extend_from_slice(key);
    v.extend_from_slice(&index.to_be_bytes());
    for p in path {
        v.extend_from_slice(p);
    }
    v
}

impl Ledger {
    /// Records a receipt this node has just countersigned as a coordinator; it waits for
    /// the next [`Ledger::seal`]. Only for that: the caller made the submitter's signature
    /// itself, over a claim whose worker signature it had checked when the claim arrived
    /// (`CheckedClaim`, before the claim was stored), so both signatures are known good and
    /// are not verified again here (two ed25519 verifications per receipt, about 100 µs, on
    /// every verified shard's path). Physics and the terms' rules are still checked (no
    /// signature involved, microseconds). Debug builds (every test) verify the signatures
    /// all the same, so a caller handing in a receipt it did not make fails there. Every
    /// receipt that comes from outside goes through [`Ledger::insert`] or
    /// [`Ledger::insert_proven`], which verify both signatures.
    pub fn insert_countersigned(&self, receipt: &Receipt) -> Result<blake3::Hash, LedgerError> {
        let id = receipt.id();
        receipt
            .check_content()
            .map_err(|source| LedgerError::Invalid {
                id: id.to_hex().to_string(),
                source,
            })?;
        debug_assert!(
            receipt.verify().is_ok(),
            "insert_countersigned takes only receipts this node just countersigned from checked claims"
        );
        self.insert_verified(receipt, true, None)
    }

    /// [`Ledger::insert_countersigned`] for the receipts of one verified shard at once: one
    /// kv batch (one intent) for all of them. One result per receipt, in order.
    pub fn insert_countersigned_all(
        &self,
        receipts: &[&Receipt],
    ) -> Result<Vec<Result<blake3::Hash, LedgerError>>, LedgerError> {
        let mut checked = Vec::with_capacity(receipts.len());
        let mut results: Vec<Option<Result<blake3::Hash, LedgerError>>> = Vec::new();
        for r in receipts {
            match r.check_content() {
                Ok(()) => {
                    debug_assert!(
                        r.verify().is_ok(),
                        "insert_countersigned takes only receipts this node just countersigned from checked claims"
                    );
                    checked.push(*r);
                    results.push(None);
                }
                Err(source) => results.push(Some(Err(LedgerError::Invalid {
                    id: r.id().to_hex().to_string(),
                    source,
                }))),
            }
        }
        let mut stored = self.insert_verified_all(&checked, true)?.into_iter();
        Ok(results
            .into_iter()
            .map(|r| match r {
                Some(r) => r,
                None => stored
                    .next()
                    .unwrap_or_else(|| Err(LedgerError::Corrupt("a result went missing".into()))),
            })
            .collect())
    }

    /// Records a receipt delivered with its inclusion proof: the receipt must verify, the
    /// proof must lead to the root its coordinator signed. The proof is stored first, then the
    /// receipt, so the receipt is never visible without it; the same receipt again with a
    /// proof is a replay (and a crash between the two writes leaves a proof that
    /// [`Ledger::check`] reports and the coordinator's next delivery completes).
    pub fn insert_proven(
        &self,
        receipt: &Receipt,
        inclusion: &Inclusion,
    ) -> Result<blake3::Hash, LedgerError> {
        let id = receipt.id();
        inclusion
            .verify(receipt)
            .map_err(|e| LedgerError::Unproven {
                id: id.to_hex().to_string(),
                reason: e.to_string(),
            })?;
        receipt.verify().map_err(|source| LedgerError::Invalid {
            id: id.to_hex().to_string(),
            source,
        })?;
        let c = &inclusion.commitment;
        let key = commitment_key(&c.coordinator, c.seq);
        let value = proof_value(&key, inclusion.index, &inclusion.path);
        let bytes = c.to_bytes();
        // Receipt, proof and commitment in one kv batch: a kill never leaves a proof without
        // its receipt or the receipt without its proof. A receipt
        // refused for its slot (another receipt holds it) keeps no proof either.
        self.insert_verified(
            receipt,
            false,
            Some(super::ProofWrite {
                key: key.as_slice(),
                commitment: bytes.as_slice(),
                value: value.as_slice(),
                seq: c.seq,
            }),
        )
    }

    /// Receipts countersigned here and waiting for a commitment.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether any countersigned receipt waits for a seal (reads one key at most, where
    /// `pending_count` walks them all). A read that fails counts as "yes": the node then keeps
    /// its key's lease rather than give it back with receipts it could not see.
    pub fn has_pending(&self) -> bool {
        self.pending.first().map(|f| f.is_some()).unwrap_or(true)
    }

    /// Seals up to [`MAX_LEAVES`] pending receipts into the next commitment of `identity`
    /// (this node as coordinator), stores it, its tree and every receipt's place in it, and
    /// clears them from `pending`, in one kv batch (all or none after a crash). `None` when
    /// nothing is pending. The caller flushes before it publishes the commitment or delivers
    /// a receipt with its proof.
    pub fn seal(&self, identity: &Identity) -> Result<Option<Commitment>, LedgerError> {
        // Under the ledger's lock: the pending set read here is the one cleared below.
        let _write = self.write_lock();
        let mut ids = Vec::new();
        let (mut first, mut last) = (u64::MAX, 0u64);
        for item in self.pending.iter() {
            if ids.len() >= MAX_LEAVES as usize {
                break;
            }
            let (k, v) = item?;
            let id: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| LedgerError::Corrupt("pending receipt key".into()))?;
            let end = u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("pending receipt time".into()))?,
            );
            first = first.min(end);
            last = last.max(end);
            ids.push(blake3::Hash::from_bytes(id));
        }
        if ids.is_empty() {
            return Ok(None);
        }
        let own = identity.public();
        let seq = match self.last_own_seq(&own)? {
            Some(last) => last.saturating_add(1),
            None => 0,
        };
        let (commitment, sealed) = Commitment::seal(identity, seq, &ids, first, last)
            .map_err(|e| LedgerError::Corrupt(format!("sealing a commitment: {e}")))?;
        let key = commitment_key(&own, seq);
        let bytes = commitment.to_bytes();
        let mut batch = self.kv.batch();
        batch.insert(&self.commitments, key.as_slice(), bytes.as_slice());
        // The tree once (64 bytes per receipt at most), and per receipt where its leaf is
        // (44 bytes), not its path: `inclusion` reads the path from the tree.
        batch.insert(&self.trees, key.as_slice(), sealed.tree_bytes());
        for (index, id) in sealed.ids.iter().enumerate() {
            batch.insert(
                &self.proofs,
                id.as_bytes(),
                proof_value(&key, index as u32, &[]),
            );
            batch.remove(&self.pending, id.as_bytes());
        }
        batch.commit()?;
        Ok(Some(commitment))
    }

    /// Numbers on past `c`, a commitment of this node's own key that an auditor logged
    /// (`node::auditors`): if it is above every own commitment stored here, it is stored (its
    /// 161 signed bytes, without a tree: no receipt here is proven by it), and the next
    /// [`Ledger::seal`] takes the number after it. A data directory restored from an old
    /// backup so never signs again a number it already published. The number is the auditor's
    /// claim until the signature says the commitment is `own`'s: one that is not
    /// ([`Adopted::NotOwn`]) changes nothing, else a peer could push the numbering anywhere.
    pub fn adopt_own(&self, own: &PublicKey, c: &Commitment) -> Result<Adopted, LedgerError> {
        if c.coordinator != *own || c.verify().is_err() {
            return Ok(Adopted::NotOwn);
        }
        // Under the ledger's lock, as a seal: a seal running meanwhile numbers after it.
        let _write = self.write_lock();
        let key = commitment_key(own, c.seq);
        if let Some(stored) = self.commitments.get(key)? {
            return Ok(if stored.as_ref() == c.to_bytes().as_slice() {
                Adopted::Known
            } else {
                Adopted::Conflict
            });
        }
        if let Some(last) = self.last_own_seq(own)? {
            if last > c.seq {
                return Ok(Adopted::Behind { last });
            }
        }
        let mut batch = self.kv.batch();
        batch.insert(&self.commitments, key.as_slice(), c.to_bytes().as_slice());
        batch.commit()?;
        Ok(Adopted::Raised)
    }

    /// The highest number among this node's own commitments stored here.
    fn last_own_seq(&self, own: &PublicKey) -> Result<Option<u64>, LedgerError> {
        match self.commitments.scan_prefix(own.0).keys().next_back() {
            Some(k) => {
                let k = k?;
                let seq: [u8; 8] = k[32..]
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("commitment key".into()))?;
                Ok(Some(u64::from_be_bytes(seq)))
            }
            None => Ok(None),
        }
    }

    /// The inclusion proof of a stored receipt, once it is in a commitment.
    pub fn inclusion(&self, id: &blake3::Hash) -> Result<Option<Inclusion>, LedgerError> {
        let Some(v) = self.proofs.get(id.as_bytes())? else {
            return Ok(None);
        };
        let corrupt = || LedgerError::Corrupt(format!("inclusion proof of {}", id.to_hex()));
        if v.len() < 44 || (v.len() - 44) % 32 != 0 || (v.len() - 44) / 32 > MAX_PATH {
            return Err(corrupt());
        }
        let c = self.commitments.get(&v[..40])?.ok_or_else(corrupt)?;
        let commitment = Commitment::from_bytes(&c).map_err(|_| corrupt())?;
        let index = u32::from_be_bytes(v[40..44].try_into().map_err(|_| corrupt())?);
        // A receipt this node sealed: its path is in the commitment's tree. Any other proof
        // holds its path (none for a commitment of one receipt, whose tree gives none too).
        let tree = match v.len() {
            44 => self.trees.get(&v[..40])?,
            _ => None,
        };
        let path = match tree {
            Some(tree) => path_in(&tree, commitment.count, index).ok_or_else(corrupt)?,
            None => v[44..]
                .chunks_exact(32)
                .map(|c| c.try_into().map_err(|_| corrupt()))
                .collect::<Result<Vec<[u8; 32]>, _>>()?,
        };
        Ok(Some(Inclusion {
            commitment,
            index,
            path,
        }))
    }

    /// Every commitment stored (own and those proving own receipts), in key order.
    pub fn commitments(&self) -> Result<Vec<Commitment>, LedgerError> {
        let mut out = Vec::new();
        for item in self.commitments.iter() {
            let (k, v) = item?;
            out.push(Commitment::from_bytes(&v).map_err(|e| {
                LedgerError::Corrupt(format!("commitment {}: {e}", hex::encode(k)))
            })?);
        }
        Ok(out)
    }

    /// Bytes of keys and values in the ledger's trees: what the scale experiment reports as
    /// ledger size (sled's own overhead comes on top).
    pub fn stored_bytes(&self) -> Result<u64, LedgerError> {
        let mut total = 0u64;
        for tree in [
            &self.receipts,
            &self.slots,
            &self.totals,
            &self.chain,
            &self.pending,
            &self.commitments,
            &self.proofs,
            &self.trees,
        ] {
            for item in tree.iter() {
                let (k, v) = item?;
                total += (k.len() + v.len()) as u64;
            }
        }
        Ok(total)
    }

    /// Proofs that do not lead from their receipt to a stored commitment's root, and pending
    /// entries naming no stored receipt: (proof or pending key hex). Part of
    /// [`Ledger::check`].
    pub(super) fn check_proofs(&self) -> Result<Vec<String>, LedgerError> {
        let mut bad = Vec::new();
        for item in self.proofs.iter() {
            let (k, _) = item?;
            let ok = match <[u8; 32]>::try_from(k.as_ref()) {
                Ok(id) => {
                    let id = blake3::Hash::from_bytes(id);
                    match (self.get(&id), self.inclusion(&id)) {
                        (Ok(Some(r)), Ok(Some(inc))) => inc.verify(&r).is_ok(),
                        _ => false,
                    }
                }
                Err(_) => false,
            };
            if !ok {
                bad.push(hex::encode(&k));
            }
        }
        for item in self.pending.iter() {
            let (k, _) = item?;
            if self.receipts.get(&k)?.is_none() {
                bad.push(hex::encode(&k));
            }
        }
        Ok(bad)
    }

    /// Removes what [`Ledger::check_proofs`] found. A receipt whose proof is removed is
    /// proven again when its coordinator delivers it again; one this node countersigned goes
    /// back to `pending`, so the next seal commits it again and its worker gets it with a
    /// proof that holds (else it would wait in the outbox for a proof that never comes).
    pub(super) fn repair_proofs(&self, bad: &[String]) -> Result<(), LedgerError> {
        for key in bad {
            let key = hex::decode(key).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            self.proofs.remove(&key)?;
            self.pending.remove(&key)?;
            let Ok(id) = <[u8; 32]>::try_from(key.as_slice()) else {
                continue;
            };
            // A receipt that does not decode is the receipt check's to report and remove.
            if let Ok(Some(r)) = self.get(&blake3::Hash::from_bytes(id)) {
                if r.record.submitter == self.own.current() {
                    self.pending.insert(&key, &r.record.end_ms.to_be_bytes())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::receipt::{Claim, CreditTerms, EnergyMethod, WorkRecord};

    fn receipt(worker: &Identity, submitter: &Identity, shard: u32) -> Receipt {
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
            end_ms: 2 + u64::from(shard),
            nonce: [1; 16],
        };
        let terms = CreditTerms::claimed(&record, 2, 2);
        Claim::sign(record, worker)
            .unwrap()
            .countersign(submitter, terms)
            .unwrap()
    }

    /// A data directory restored from an old backup numbers on past what an auditor logged
    /// of its key, instead of signing those numbers again: the next seal takes the number
    /// after the auditor's. A commitment below what is sealed here, the same one again,
    /// another body under a number sealed here, a commitment of another key or one whose
    /// signature fails change nothing.
    #[test]
    fn an_auditors_last_commitment_moves_the_numbering_on_and_never_back() {
        let dir = tempfile::tempdir().unwrap();
        let (coord, w) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let own = coord.public();
        let db = crate::node::test_db(dir.path()).unwrap();
        let l = Ledger::open(&db, own).unwrap();
        l.insert_countersigned(&receipt(&w, &coord, 0)).unwrap();
        let c0 = l.seal(&coord).unwrap().unwrap();
        assert_eq!(c0.seq, 0);

        // What the node sealed after the backup was taken, as the auditor logged it.
        let (logged, _) = Commitment::seal(&coord, 41, &[blake3::hash(b"later")], 5, 6).unwrap();
        assert_eq!(l.adopt_own(&own, &logged).unwrap(), Adopted::Raised);
        assert_eq!(l.adopt_own(&own, &logged).unwrap(), Adopted::Known);
        l.insert_countersigned(&receipt(&w, &coord, 1)).unwrap();
        let next = l.seal(&coord).unwrap().unwrap();
        assert_eq!(next.seq, 42, "numbered on after the auditor's");
        // The receipt sealed after adopting is proven as before.
        let inc = l.inclusion(&receipt(&w, &coord, 1).id()).unwrap().unwrap();
        assert_eq!(inc.commitment, next);

        // Below what is sealed here: nothing changes.
        let (old, _) = Commitment::seal(&coord, 3, &[blake3::hash(b"old")], 1, 1).unwrap();
        assert_eq!(
            l.adopt_own(&own, &old).unwrap(),
            Adopted::Behind { last: 42 }
        );
        // Another body under a number sealed here: said, nothing stored.
        let (other, _) = Commitment::seal(&coord, 0, &[blake3::hash(b"x")], 1, 1).unwrap();
        assert_eq!(l.adopt_own(&own, &other).unwrap(), Adopted::Conflict);
        assert_eq!(
            l.inclusion(&receipt(&w, &coord, 0).id())
                .unwrap()
                .unwrap()
                .commitment,
            c0
        );

        // Not this key's, or not signed by it: ignored.
        let (theirs, _) = Commitment::seal(&w, 90, &[blake3::hash(b"y")], 1, 1).unwrap();
        assert_eq!(l.adopt_own(&own, &theirs).unwrap(), Adopted::NotOwn);
        let mut forged = Commitment::seal(&coord, 90, &[blake3::hash(b"z")], 1, 1)
            .unwrap()
            .0;
        forged.count += 1;
        assert_eq!(l.adopt_own(&own, &forged).unwrap(), Adopted::NotOwn);
        l.insert_countersigned(&receipt(&w, &coord, 2)).unwrap();
        assert_eq!(l.seal(&coord).unwrap().unwrap().seq, 43);
    }

    /// `insert_countersigned` does not verify signatures in release builds (the coordinator
    /// made one and checked the other); it still refuses a receipt whose content breaks the
    /// rules, and in debug builds a receipt it did not make stops the caller at once.
    #[test]
    fn a_countersigned_receipt_is_checked_for_content_and_in_debug_for_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let (coord, w) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let db = crate::node::test_db(dir.path()).unwrap();
        let l = Ledger::open(&db, coord.public()).unwrap();
        let mut impossible = receipt(&w, &coord, 0);
        impossible.terms.credited_mj = impossible.record.energy_mj + 1;
        assert!(matches!(
            l.insert_countersigned(&impossible),
            Err(LedgerError::Invalid { .. })
        ));
        assert_eq!(l.pending_count(), 0);
        let mut forged = receipt(&w, &coord, 1);
        forged.submitter_sig = w.sign(b"nonsense");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            l.insert_countersigned(&forged)
        }));
        assert_eq!(caught.is_err(), cfg!(debug_assertions));
    }

    /// A coordinator seals what it countersigned; each worker stores its receipt with the
    /// proof and nothing else; a proof for another receipt, a forged commitment and an
    /// equivocating second commitment are refused.
    #[test]
    fn seal_deliver_prove() {
        let dir = tempfile::tempdir().unwrap();
        let (coord, w1, w2) = (
            Identity::from_seed([1; 32]),
            Identity::from_seed([2; 32]),
            Identity::from_seed([3; 32]),
        );
        let db_c = crate::node::test_db(dir.path().join("c")).unwrap();
        let db_w = crate::node::test_db(dir.path().join("w")).unwrap();
        let lc = Ledger::open(&db_c, coord.public()).unwrap();
        let lw = Ledger::open(&db_w, w1.public()).unwrap();
        let rs: Vec<Receipt> = (0..5)
            .map(|s| receipt(if s % 2 == 0 { &w1 } else { &w2 }, &coord, s))
            .collect();
        for r in &rs {
            lc.insert_countersigned(r).unwrap();
        }
        assert_eq!(lc.pending_count(), 5);
        assert!(lc.inclusion(&rs[0].id()).unwrap().is_none());
        let c = lc.seal(&coord).unwrap().unwrap();
        assert_eq!((c.seq, c.count, c.first_ms, c.last_ms), (0, 5, 2, 6));
        assert_eq!(lc.pending_count(), 0);
        assert!(lc.seal(&coord).unwrap().is_none(), "nothing left to seal");
        lc.insert_countersigned(&receipt(&w1, &coord, 9)).unwrap();
        assert_eq!(lc.seal(&coord).unwrap().unwrap().seq, 1);
        assert!(lc.check_proofs().unwrap().is_empty());

        for r in rs.iter().filter(|r| r.record.worker == w1.public()) {
            let inc = lc.inclusion(&r.id()).unwrap().unwrap();
            inc.verify(r).unwrap();
            lw.insert_proven(r, &inc).unwrap();
            // Delivered again (the ack was lost): a replay, the proof stays.
            assert!(matches!(
                lw.insert_proven(r, &inc),
                Err(LedgerError::Replay { .. })
            ));
            assert_eq!(lw.inclusion(&r.id()).unwrap(), Some(inc));
        }
        assert_eq!(lw.list(None).unwrap().len(), 3);
        assert_eq!(lw.commitments().unwrap(), vec![c.clone()]);
        assert!(lw.check_proofs().unwrap().is_empty());

        // Another receipt's proof does not prove this one.
        let other = lc.inclusion(&rs[1].id()).unwrap().unwrap();
        let fresh = receipt(&w1, &coord, 20);
        assert!(matches!(
            lw.insert_proven(&fresh, &other),
            Err(LedgerError::Unproven { .. })
        ));
        // A commitment signed by someone else.
        let mut forged = other.clone();
        forged.commitment.coordinator = w1.public();
        assert!(lw.insert_proven(&rs[1], &forged).is_err());
        // Equivocation: the same number, another root, properly signed.
        let (twin, proofs) = Commitment::seal(&coord, 0, &[fresh.id()], 2, 22).unwrap();
        let (_, index, path) = proofs.proofs().next().unwrap();
        let inc = Inclusion {
            commitment: twin,
            index,
            path,
        };
        let err = lw.insert_proven(&fresh, &inc).unwrap_err();
        assert!(
            err.to_string().contains("two different commitments"),
            "{err}"
        );
        // The error carries both signed commitments, first the one the ledger holds: the
        // proof the node publishes.
        let LedgerError::Equivocated { first, second, .. } = err else {
            panic!("{err}")
        };
        assert_eq!((*first, *second), (c.clone(), inc.commitment.clone()));
        assert!(crate::model::equivocate::Equivocation::new(c.clone(), inc.commitment).is_some());
    }

    /// A seal keeps its commitment's tree once and 44 bytes per receipt (where its leaf is),
    /// not a path per receipt; each receipt's path read back from the tree proves it, and a
    /// damaged or cut tree is reported by the check, never trusted.
    #[test]
    fn a_seal_keeps_one_tree_and_no_path_per_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let (coord, w) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let db = crate::node::test_db(dir.path()).unwrap();
        let l = Ledger::open(&db, coord.public()).unwrap();
        let rs: Vec<Receipt> = (0..37).map(|s| receipt(&w, &coord, s)).collect();
        for r in &rs {
            l.insert_countersigned(r).unwrap();
        }
        let c = l.seal(&coord).unwrap().unwrap();
        assert_eq!(c.count, 37);
        for r in &rs {
            assert_eq!(l.proofs.get(r.id().as_bytes()).unwrap().unwrap().len(), 44);
            let inc = l.inclusion(&r.id()).unwrap().unwrap();
            assert!(!inc.path.is_empty());
            inc.verify(r).unwrap();
        }
        assert!(l.check_proofs().unwrap().is_empty());
        let key = commitment_key(&coord.public(), 0);
        let tree = l.trees.get(key).unwrap().unwrap();
        assert_eq!(tree.len(), 32 * (37 + 19 + 10 + 5 + 3 + 2 + 1));
        // One hash of the level above the leaves changed: the receipts whose path holds it
        // no longer prove, and the check names them.
        let mut damaged = tree.to_vec();
        damaged[32 * 37] ^= 1;
        l.trees.insert(key, damaged).unwrap();
        let bad = l.check_proofs().unwrap();
        assert!(!bad.is_empty() && bad.len() < 37, "{}", bad.len());
        // A tree cut short gives no path at all: an error naming the receipt.
        l.trees.insert(key, &tree[..32 * 37]).unwrap();
        let err = l.inclusion(&rs[0].id()).unwrap_err().to_string();
        assert!(err.contains(&rs[0].id().to_hex().to_string()), "{err}");
        let bad = l.check_proofs().unwrap();
        assert_eq!(bad.len(), 37);
        // Repaired: the receipts go back to `pending`, the next seal commits them again and
        // every one is proven.
        l.repair_proofs(&bad).unwrap();
        assert_eq!(l.pending_count(), 37);
        assert_eq!(l.seal(&coord).unwrap().unwrap().seq, 1);
        for r in &rs {
            l.inclusion(&r.id()).unwrap().unwrap().verify(r).unwrap();
        }
        assert!(l.check_proofs().unwrap().is_empty());
    }

    /// A receipt and its proof are stored together or not at all (issue 16's crash soak: a
    /// worker killed between the two writes could not start again, "inclusion proofs ... do not
    /// match a stored receipt"). Here the receipt's write fails (its household's totals entry is
    /// damaged): no proof may be left behind.
    #[test]
    fn a_receipt_that_cannot_be_stored_leaves_no_proof() {
        let dir = tempfile::tempdir().unwrap();
        let (coord, w) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let lc = Ledger::open(
            &crate::node::test_db(dir.path().join("c")).unwrap(),
            coord.public(),
        )
        .unwrap();
        let lw = Ledger::open(
            &crate::node::test_db(dir.path().join("w")).unwrap(),
            w.public(),
        )
        .unwrap();
        let r = receipt(&w, &coord, 0);
        lc.insert_countersigned(&r).unwrap();
        lc.seal(&coord).unwrap().unwrap();
        let inc = lc.inclusion(&r.id()).unwrap().unwrap();
        lw.totals
            .insert(w.public().0, b"garbage".as_slice())
            .unwrap();
        assert!(matches!(
            lw.insert_proven(&r, &inc),
            Err(LedgerError::Corrupt(_))
        ));
        assert!(
            lw.inclusion(&r.id()).unwrap().is_none(),
            "a proof without its receipt"
        );
        assert!(lw.commitments().unwrap().is_empty());
        assert!(lw.check_proofs().unwrap().is_empty());
    }

    /// A proof pointing at a receipt the ledger no longer has is damage, and repair drops it.
    #[test]
    fn check_finds_orphan_proofs() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let (coord, w) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let l = Ledger::open(&db, coord.public()).unwrap();
        let r = receipt(&w, &coord, 0);
        l.insert_countersigned(&r).unwrap();
        l.seal(&coord).unwrap().unwrap();
        l.receipts.remove(r.id().as_bytes()).unwrap();
        let bad = l.check_proofs().unwrap();
        assert_eq!(bad, vec![r.id().to_hex().to_string()]);
        l.repair_proofs(&bad).unwrap();
        assert!(l.check_proofs().unwrap().is_empty());
    }
}
