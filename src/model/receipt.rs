//! Heat-work claims and receipts: the record of energy spent on verified work.
//!
//! A worker that finished a shard signs a [`WorkRecord`] (a *claim*: what it says it did,
//! including the energy it says it drew). When enough claims from distinct households agree,
//! the coordinator decides how much of each claim to credit, writes that down as
//! [`CreditTerms`], and countersigns record and terms together with the submitter's key,
//! making a [`Receipt`]. `docs/receipts.md` specifies the byte layout and the verification
//! steps precisely enough to write a verifier in another language; the JSON export lives in
//! [`super::export`].
//!
//! Verification checks signatures *and* physics: no record may imply more power than a
//! household circuit delivers ([`MAX_WATTS`]) or cover more than [`MAX_WINDOW_MS`], and no
//! receipt credits more than its worker claimed.
//!
//! Size: about 550 lines before its tests (record, claim, terms, receipt and their physics
//! checks, one canonical format); the rest are the documented test vectors and property tests
//! that keep docs/receipts.md true byte for byte.

use super::canon::{DecodeError, Reader, Writer};
use crate::identity::{Identity, PublicKey};

pub use super::export::{
    chain_link, ChainEntryJson, ChainJson, InclusionJson, ReceiptExport, ReceiptJson,
    EXPORT_FORMAT, EXPORT_FORMAT_2,
};

const MAGIC: &[u8; 4] = b"HRCP";
const VERSION: u8 = 1;
const TERMS_MAGIC: &[u8; 4] = b"HRCT";
const TERMS_VERSION: u8 = 1;
/// Domain tags: a signature made in one role can never be replayed in the other. The
/// submitter's tag is v2 because it signs the record *and* the credit terms.
pub const WORKER_DOMAIN: &[u8] = b"hearth/receipt/worker/v1";
pub const SUBMITTER_DOMAIN: &[u8] = b"hearth/receipt/submitter/v2";
/// Canonical size of a record's bytes.
pub const RECORD_LEN: usize = 4 + 1 + 32 + 4 + 32 * 3 + 32 * 2 + 8 + 8 + 1 + 8 + 8 + 16;
/// Where the worker's and the submitter's household keys lie in a record's bytes, and so in
/// a claim's and a receipt's (both begin with the record): a store can pass over others'
/// receipts by these 32 bytes without decoding them.
pub const WORKER_AT: usize = 137;
pub const SUBMITTER_AT: usize = 169;
/// Canonical size of a claim: the record, then the worker's signature.
pub const CLAIM_LEN: usize = RECORD_LEN + 64;
/// Canonical size of the credit terms.
pub const TERMS_LEN: usize = 4 + 1 + 8 + 1 + 1 + 1 + 1;
/// Canonical size of a receipt: record, worker signature, terms, submitter signature.
pub const RECEIPT_LEN: usize = RECORD_LEN + 64 + TERMS_LEN + 64;

/// The most power any household circuit can deliver, in watts: 16 A × 230 V, the largest
/// ordinary single-phase domestic circuit. A record whose energy implies more power over its
/// window than this is physically impossible for one radiator and is refused. Units:
/// W × ms = mJ, so the check is `energy_mj <= MAX_WATTS * (end_ms - start_ms)`.
pub const MAX_WATTS: u64 = 3_680;
/// The longest window one record may cover: 24 hours. Far above any shard's wall-clock limit
/// (the sandbox watchdog, 120 s by default); it caps one receipt at 3 680 W × 24 h ≈ 88 kWh,
/// so a forged far-future `end_ms` cannot make any energy figure look physical.
pub const MAX_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// How the energy figure in a record was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyMethod {
    /// Intel/AMD RAPL package energy counters.
    Rapl,
    /// CPU time of the shard times configured watts per core.
    CpuEstimate,
    /// The simulated room's heater model (demos and tests).
    Simulated,
}

impl EnergyMethod {
    pub fn tag(self) -> u8 {
        match self {
            EnergyMethod::Rapl => 1,
            EnergyMethod::CpuEstimate => 2,
            EnergyMethod::Simulated => 3,
        }
    }
    pub fn from_tag(tag: u8) -> Result<EnergyMethod, DecodeError> {
        Ok(match tag {
            1 => EnergyMethod::Rapl,
            2 => EnergyMethod::CpuEstimate,
            3 => EnergyMethod::Simulated,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "energy method",
                    tag,
                })
            }
        })
    }
}

/// What one worker did for one shard of one job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkRecord {
    pub job: blake3::Hash,
    pub shard: u32,
    pub module: blake3::Hash,
    pub input: blake3::Hash,
    pub output: blake3::Hash,
    pub worker: PublicKey,
    pub submitter: PublicKey,
    pub fuel: u64,
    /// Energy the worker says it spent on the shard, in millijoules (its claim; the receipt's
    /// [`CreditTerms`] say how much of it was credited).
    pub energy_mj: u64,
    pub method: EnergyMethod,
    /// When the shard started and ended, milliseconds since the Unix epoch (worker's clock).
    pub start_ms: u64,
    pub end_ms: u64,
    /// The lease nonce the coordinator issued: binds the record to one lease.
    pub nonce: [u8; 16],
}

impl WorkRecord {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION)
            .hash(&self.job)
            .u32(self.shard)
            .hash(&self.module)
            .hash(&self.input)
            .hash(&self.output)
            .raw(&self.worker.0)
            .raw(&self.submitter.0)
            .u64(self.fuel)
            .u64(self.energy_mj)
            .u8(self.method.tag())
            .u64(self.start_ms)
            .u64(self.end_ms)
            .raw(&self.nonce);
        let bytes = w.into_bytes();
        debug_assert_eq!(bytes.len(), RECORD_LEN);
        bytes
    }

    fn read(r: &mut Reader<'_>) -> Result<WorkRecord, DecodeError> {
        r.magic(MAGIC, "work record")?;
        let version = r.u8("record version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "work record",
                version,
            });
        }
        let rec = WorkRecord {
            job: r.hash("job id")?,
            shard: r.u32("shard index")?,
            module: r.hash("module hash")?,
            input: r.hash("input hash")?,
            output: r.hash("output hash")?,
            worker: PublicKey(r.array("worker key")?),
            submitter: PublicKey(r.array("submitter key")?),
            fuel: r.u64("fuel")?,
            energy_mj: r.u64("energy")?,
            method: EnergyMethod::from_tag(r.u8("energy method")?)?,
            start_ms: r.u64("start time")?,
            end_ms: r.u64("end time")?,
            nonce: r.array("lease nonce")?,
        };
        if rec.end_ms < rec.start_ms {
            return Err(DecodeError::Invalid {
                what: "work record",
                reason: "it ends before it starts".into(),
            });
        }
        Ok(rec)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<WorkRecord, DecodeError> {
        let mut r = Reader::new(bytes);
        let rec = WorkRecord::read(&mut r)?;
        r.finish()?;
        Ok(rec)
    }

    /// The physics every record must obey whoever signed it: a window of at most
    /// [`MAX_WINDOW_MS`], and no more energy than [`MAX_WATTS`] over that window.
    pub fn check_physics(&self) -> Result<(), ReceiptError> {
        let window = self
            .end_ms
            .checked_sub(self.start_ms)
            .ok_or_else(|| ReceiptError::Physics("it ends before it starts".into()))?;
        if window > MAX_WINDOW_MS {
            return Err(ReceiptError::Physics(format!(
                "it covers {window} ms, more than the {MAX_WINDOW_MS} ms (24 h) any record may cover"
            )));
        }
        // u128: MAX_WATTS × MAX_WINDOW_MS fits in u64 too, but the product is never trusted.
        let ceiling = u128::from(MAX_WATTS) * u128::from(window);
        if u128::from(self.energy_mj) > ceiling {
            return Err(ReceiptError::Physics(format!(
                "{} mJ in {window} ms is more than a {MAX_WATTS} W household circuit can deliver",
                self.energy_mj
            )));
        }
        Ok(())
    }

    /// Agreement between replicas means equal output and equal fuel.
    pub fn agrees_with(&self, other: &WorkRecord) -> bool {
        self.output == other.output && self.fuel == other.fuel
    }
}

/// Why the coordinator credited the figure it credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditBasis {
    /// The worker's own figure, which was within every bound.
    Claimed,
    /// Capped at the replicas' reference: a multiple of the agreeing replicas' median energy
    /// per unit of fuel.
    ReplicaReference,
    /// Capped by the household's own history of energy per unit of fuel.
    HouseholdHistory,
    /// Capped at the power ceiling over the record's window.
    PowerCeiling,
}

impl CreditBasis {
    pub fn tag(self) -> u8 {
        match self {
            CreditBasis::Claimed => 1,
            CreditBasis::ReplicaReference => 2,
            CreditBasis::HouseholdHistory => 3,
            CreditBasis::PowerCeiling => 4,
        }
    }
    pub fn from_tag(tag: u8) -> Result<CreditBasis, DecodeError> {
        Ok(match tag {
            1 => CreditBasis::Claimed,
            2 => CreditBasis::ReplicaReference,
            3 => CreditBasis::HouseholdHistory,
            4 => CreditBasis::PowerCeiling,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "credit basis",
                    tag,
                })
            }
        })
    }
}

/// How the output the worker was credited for was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifiedBy {
    /// A quorum: `agreeing` of `replicas` households' claims agreed on output and fuel.
    Quorum,
    /// A trusted household's single run, spot-checked by re-running it elsewhere (reserved for
    /// adaptive replication).
    TrustedSpotChecked,
    /// A trusted household's single run, not (yet) spot-checked (reserved for adaptive
    /// replication).
    TrustedUnchecked,
}

impl VerifiedBy {
    pub fn tag(self) -> u8 {
        match self {
            VerifiedBy::Quorum => 1,
            VerifiedBy::TrustedSpotChecked => 2,
            VerifiedBy::TrustedUnchecked => 3,
        }
    }
    pub fn from_tag(tag: u8) -> Result<VerifiedBy, DecodeError> {
        Ok(match tag {
            1 => VerifiedBy::Quorum,
            2 => VerifiedBy::TrustedSpotChecked,
            3 => VerifiedBy::TrustedUnchecked,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "verification kind",
                    tag,
                })
            }
        })
    }
}

/// What the coordinator credited for one record, and on what evidence. Signed by the
/// submitter together with the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CreditTerms {
    /// Energy credited, millijoules; never above the record's `energy_mj`.
    pub credited_mj: u64,
    pub basis: CreditBasis,
    pub verified_by: VerifiedBy,
    /// Households whose claims agreed with this one on output and fuel (itself included).
    pub agreeing: u8,
    /// Claims the coordinator held for the shard when it decided.
    pub replicas: u8,
}

impl CreditTerms {
    /// Credits the worker's claim as it stands, verified by a quorum.
    pub fn claimed(record: &WorkRecord, agreeing: u8, replicas: u8) -> CreditTerms {
        CreditTerms {
            credited_mj: record.energy_mj,
            basis: CreditBasis::Claimed,
            verified_by: VerifiedBy::Quorum,
            agreeing,
            replicas,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(TERMS_MAGIC)
            .u8(TERMS_VERSION)
            .u64(self.credited_mj)
            .u8(self.basis.tag())
            .u8(self.verified_by.tag())
            .u8(self.agreeing)
            .u8(self.replicas);
        let bytes = w.into_bytes();
        debug_assert_eq!(bytes.len(), TERMS_LEN);
        bytes
    }

    fn read(r: &mut Reader<'_>) -> Result<CreditTerms, DecodeError> {
        r.magic(TERMS_MAGIC, "credit terms")?;
        let version = r.u8("terms version")?;
        if version != TERMS_VERSION {
            return Err(DecodeError::Version {
                what: "credit terms",
                version,
            });
        }
        Ok(CreditTerms {
            credited_mj: r.u64("credited energy")?,
            basis: CreditBasis::from_tag(r.u8("credit basis")?)?,
            verified_by: VerifiedBy::from_tag(r.u8("verification kind")?)?,
            agreeing: r.u8("agreeing replicas")?,
            replicas: r.u8("replicas")?,
        })
    }

    /// The rules terms obey whoever signed them: credit never above the claim, and
    /// `1 <= agreeing <= replicas`.
    pub fn check(&self, record: &WorkRecord) -> Result<(), ReceiptError> {
        if self.credited_mj > record.energy_mj {
            return Err(ReceiptError::Terms(format!(
                "credits {} mJ, more than the {} mJ the worker claimed",
                self.credited_mj, record.energy_mj
            )));
        }
        if self.agreeing == 0 || self.agreeing > self.replicas {
            return Err(ReceiptError::Terms(format!(
                "{} agreeing of {} replicas is not a vote",
                self.agreeing, self.replicas
            )));
        }
        Ok(())
    }
}

fn signed_message(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = domain.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(domain);
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("cannot decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("the record is physically impossible: {0}")]
    Physics(String),
    #[error("the credit terms are invalid: {0}")]
    Terms(String),
    #[error("the worker's signature does not verify")]
    WorkerSignature,
    #[error("the submitter's countersignature does not verify")]
    SubmitterSignature,
    #[error("signed by the wrong key: this identity is not the record's {0}")]
    WrongSigner(&'static str),
}

/// A worker's signed claim about one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub record: WorkRecord,
    pub worker_sig: [u8; 64],
}

impl Claim {
    pub fn sign(record: WorkRecord, worker: &Identity) -> Result<Claim, ReceiptError> {
        if worker.public() != record.worker {
            return Err(ReceiptError::WrongSigner("worker"));
        }
        let worker_sig = worker.sign(&signed_message(WORKER_DOMAIN, &[&record.to_bytes()]));
        Ok(Claim { record, worker_sig })
    }

    /// Physics first (cheap, and a lie no signature excuses), then the worker's signature.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        self.record.check_physics()?;
        let msg = signed_message(WORKER_DOMAIN, &[&self.record.to_bytes()]);
        if !self.record.worker.verify(&msg, &self.worker_sig) {
            return Err(ReceiptError::WorkerSignature);
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.record.to_bytes();
        b.extend_from_slice(&self.worker_sig);
        b
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Claim, DecodeError> {
        let mut r = Reader::new(bytes);
        let record = WorkRecord::read(&mut r)?;
        let worker_sig = r.array("worker signature")?;
        r.finish()?;
        Ok(Claim { record, worker_sig })
    }

    /// The coordinator's countersignature, made with the submitter's key over the record and
    /// the terms it decided. Refuses terms that break the rules of [`CreditTerms::check`].
    pub fn countersign(
        self,
        submitter: &Identity,
        terms: CreditTerms,
    ) -> Result<Receipt, ReceiptError> {
        if submitter.public() != self.record.submitter {
            return Err(ReceiptError::WrongSigner("submitter"));
        }
        terms.check(&self.record)?;
        let submitter_sig = submitter.sign(&signed_message(
            SUBMITTER_DOMAIN,
            &[&self.record.to_bytes(), &terms.to_bytes()],
        ));
        Ok(Receipt {
            record: self.record,
            worker_sig: self.worker_sig,
            terms,
            submitter_sig,
        })
    }
}

/// A heat-work receipt: a work record signed by its worker, and the credit terms
/// countersigned with the record by its submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub record: WorkRecord,
    pub worker_sig: [u8; 64],
    pub terms: CreditTerms,
    pub submitter_sig: [u8; 64],
}

impl Receipt {
    /// blake3(record ‖ terms): two receipts for one record with different terms differ.
    pub fn id(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(&self.record.to_bytes())
            .update(&self.terms.to_bytes());
        h.finalize()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.record.to_bytes();
        b.extend_from_slice(&self.worker_sig);
        b.extend_from_slice(&self.terms.to_bytes());
        b.extend_from_slice(&self.submitter_sig);
        b
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Receipt, DecodeError> {
        if bytes.len() != RECEIPT_LEN {
            return Err(DecodeError::Invalid {
                what: "receipt",
                reason: format!("a receipt is {RECEIPT_LEN} bytes, not {}", bytes.len()),
            });
        }
        let mut r = Reader::new(bytes);
        let record = WorkRecord::read(&mut r)?;
        let worker_sig = r.array("worker signature")?;
        let terms = CreditTerms::read(&mut r)?;
        let submitter_sig = r.array("submitter signature")?;
        r.finish()?;
        Ok(Receipt {
            record,
            worker_sig,
            terms,
            submitter_sig,
        })
    }

    fn messages(&self) -> [Vec<u8>; 2] {
        let record = self.record.to_bytes();
        [
            signed_message(WORKER_DOMAIN, &[&record]),
            signed_message(SUBMITTER_DOMAIN, &[&record, &self.terms.to_bytes()]),
        ]
    }

    /// Everything but the signatures: physics and the terms' rules.
    pub fn check_content(&self) -> Result<(), ReceiptError> {
        self.record.check_physics()?;
        self.terms.check(&self.record)
    }

    /// Checks physics, the terms and both signatures, one at a time.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        self.check_content()?;
        let [worker_msg, submitter_msg] = self.messages();
        if !self.record.worker.verify(&worker_msg, &self.worker_sig) {
            return Err(ReceiptError::WorkerSignature);
        }
        if !self
            .record
            .submitter
            .verify(&submitter_msg, &self.submitter_sig)
        {
            return Err(ReceiptError::SubmitterSignature);
        }
        Ok(())
    }

    pub fn claim(&self) -> Claim {
        Claim {
            record: self.record.clone(),
            worker_sig: self.worker_sig,
        }
    }
}

/// Verifies many receipts, one result per receipt. Deliberately *not* ed25519 batch
/// verification: the batch equation is a random linear combination that a signature whose `R`
/// carries a small-order component (R' = R + T, T of order 2) satisfies about half the time
/// while the single equation always refuses it, so two honest nodes could disagree about one
/// receipt. One at a time, every verifier reaches the same verdict (about 50 µs a signature).
pub fn verify_batch(receipts: &[Receipt]) -> Vec<Result<(), ReceiptError>> {
    receipts.iter().map(Receipt::verify).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(worker: &Identity, submitter: &Identity) -> WorkRecord {
        WorkRecord {
            job: blake3::hash(b"job"),
            shard: 3,
            module: blake3::hash(b"module"),
            input: blake3::hash(b"input"),
            output: blake3::hash(b"output"),
            worker: worker.public(),
            submitter: submitter.public(),
            fuel: 12345,
            energy_mj: 6_000,
            method: EnergyMethod::CpuEstimate,
            start_ms: 10,
            end_ms: 20,
            nonce: [9; 16],
        }
    }

    pub(crate) fn receipt_of(record: WorkRecord, w: &Identity, s: &Identity) -> Receipt {
        let terms = CreditTerms::claimed(&record, 2, 2);
        Claim::sign(record, w)
            .unwrap()
            .countersign(s, terms)
            .unwrap()
    }

    /// The documented offsets of the two keys (docs/receipts.md) are where the bytes put them.
    #[test]
    fn the_household_keys_lie_at_their_offsets() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let bytes = receipt_of(record(&w, &s), &w, &s).to_bytes();
        assert_eq!(&bytes[WORKER_AT..WORKER_AT + 32], w.public().0.as_slice());
        assert_eq!(
            &bytes[SUBMITTER_AT..SUBMITTER_AT + 32],
            s.public().0.as_slice()
        );
    }

    #[test]
    fn sign_countersign_verify_round_trip() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let claim = Claim::sign(record(&w, &s), &w).unwrap();
        claim.verify().unwrap();
        assert_eq!(claim.to_bytes().len(), CLAIM_LEN);
        assert_eq!(Claim::from_bytes(&claim.to_bytes()).unwrap(), claim);
        let terms = CreditTerms {
            credited_mj: 5_000,
            basis: CreditBasis::ReplicaReference,
            verified_by: VerifiedBy::Quorum,
            agreeing: 2,
            replicas: 3,
        };
        let receipt = claim.countersign(&s, terms).unwrap();
        receipt.verify().unwrap();
        let bytes = receipt.to_bytes();
        assert_eq!(bytes.len(), RECEIPT_LEN);
        assert_eq!(Receipt::from_bytes(&bytes).unwrap(), receipt);
        let mut id_input = receipt.record.to_bytes();
        id_input.extend_from_slice(&terms.to_bytes());
        assert_eq!(receipt.id(), blake3::hash(&id_input));
    }

    #[test]
    fn tampering_and_wrong_signers_are_caught() {
        let (w, s) = (Identity::generate(), Identity::generate());
        assert!(Claim::sign(record(&w, &s), &s).is_err());
        let claim = Claim::sign(record(&w, &s), &w).unwrap();
        let terms = CreditTerms::claimed(&claim.record, 2, 2);
        assert!(claim.clone().countersign(&w, terms).is_err());
        let receipt = claim.countersign(&s, terms).unwrap();
        let mut bytes = receipt.to_bytes();
        // Lower the fuel field: both signatures break.
        bytes[4 + 1 + 32 + 4 + 96 + 64] ^= 1;
        let tampered = Receipt::from_bytes(&bytes).unwrap();
        assert_eq!(tampered.verify(), Err(ReceiptError::WorkerSignature));
        // Change the credit in the terms (6000 → 5984 mJ, still within the claim): only the
        // countersignature covers them.
        let mut bytes = receipt.to_bytes();
        bytes[RECORD_LEN + 64 + 5] ^= 0x10;
        let recredited = Receipt::from_bytes(&bytes).unwrap();
        assert_eq!(recredited.verify(), Err(ReceiptError::SubmitterSignature));
        assert_ne!(recredited.id(), receipt.id(), "the id covers the terms");
        let mut swapped = receipt.clone();
        std::mem::swap(&mut swapped.worker_sig, &mut swapped.submitter_sig);
        assert!(swapped.verify().is_err(), "roles are domain-separated");
        let results = verify_batch(&[receipt.clone(), tampered, receipt]);
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    }

    #[test]
    fn terms_rules_and_unknown_tags() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let claim = Claim::sign(record(&w, &s), &w).unwrap();
        let base = CreditTerms::claimed(&claim.record, 1, 1);
        for bad in [
            CreditTerms {
                credited_mj: 6_001,
                ..base
            },
            CreditTerms {
                agreeing: 0,
                ..base
            },
            CreditTerms {
                agreeing: 3,
                replicas: 2,
                ..base
            },
        ] {
            assert!(matches!(
                claim.clone().countersign(&s, bad),
                Err(ReceiptError::Terms(_))
            ));
        }
        let bytes = claim.countersign(&s, base).unwrap().to_bytes();
        for (offset, what) in [(4 + 1 + 8, "basis"), (4 + 1 + 8 + 1, "verified_by")] {
            for tag in [0u8, 5, 255] {
                let mut b = bytes.clone();
                b[RECORD_LEN + 64 + offset] = tag;
                if what == "verified_by" && tag == 5 {
                    continue;
                }
                assert!(
                    matches!(Receipt::from_bytes(&b), Err(DecodeError::UnknownTag { .. })),
                    "{what} {tag}"
                );
            }
        }
    }

    #[test]
    fn physics_refuses_impossible_records() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let ok = record(&w, &s);
        // 10 ms at exactly MAX_WATTS is possible; one millijoule more is not.
        let edge = WorkRecord {
            energy_mj: MAX_WATTS * 10,
            ..ok.clone()
        };
        receipt_of(edge.clone(), &w, &s).verify().unwrap();
        let over = WorkRecord {
            energy_mj: MAX_WATTS * 10 + 1,
            ..ok.clone()
        };
        let claim = Claim::sign(over.clone(), &w).unwrap();
        assert!(matches!(claim.verify(), Err(ReceiptError::Physics(_))));
        let zero_window = WorkRecord {
            end_ms: 10,
            energy_mj: 1,
            ..ok.clone()
        };
        assert!(matches!(
            zero_window.check_physics(),
            Err(ReceiptError::Physics(_))
        ));
        let too_long = WorkRecord {
            start_ms: 0,
            end_ms: MAX_WINDOW_MS + 1,
            energy_mj: 0,
            ..ok
        };
        assert!(matches!(
            too_long.check_physics(),
            Err(ReceiptError::Physics(_))
        ));
    }

    /// Issue 9: 1 000 receipts minted offline by two fresh keys with energy = fuel = end_ms =
    /// 2^64 − 1 all passed verification. Now every one is refused, whatever its start.
    #[test]
    fn minted_maximal_receipts_are_refused() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let mut minted = Vec::new();
        for i in 0..1000u64 {
            let start_ms = match i % 4 {
                0 => 0,
                1 => u64::MAX - i,
                2 => u64::MAX - MAX_WINDOW_MS + i,
                _ => i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            };
            let rec = WorkRecord {
                fuel: u64::MAX,
                energy_mj: u64::MAX,
                start_ms,
                end_ms: u64::MAX,
                shard: i as u32,
                ..record(&w, &s)
            };
            // Credit as much as the rules allow: the claimed figure itself.
            let terms = CreditTerms::claimed(&rec, 1, 1);
            minted.push(
                Claim::sign(rec, &w)
                    .unwrap()
                    .countersign(&s, terms)
                    .unwrap(),
            );
        }
        let results = verify_batch(&minted);
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(ReceiptError::Physics(_)))));
        // The same, decoded from the export format a verifier would be handed.
        for r in &minted {
            let back = ReceiptJson::from(r).to_receipt().unwrap();
            assert!(back.verify().is_err());
        }
    }

    #[test]
    fn small_order_forgery_is_refused_in_a_receipt() {
        use crate::identity::tests::{FORGED_KEY, FORGED_SIG};
        let (w, s) = (Identity::generate(), Identity::generate());
        let mut forged = receipt_of(record(&w, &s), &w, &s);
        forged.record.worker = PublicKey(FORGED_KEY);
        forged.record.submitter = PublicKey(FORGED_KEY);
        forged.worker_sig = FORGED_SIG;
        forged.submitter_sig = FORGED_SIG;
        // A naive verifier accepts both signatures of this receipt...
        use ed25519_dalek::Verifier;
        let naive = ed25519_dalek::VerifyingKey::from_bytes(&FORGED_KEY).unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&FORGED_SIG);
        for m in forged.messages() {
            assert!(naive.verify(&m, &sig).is_ok());
        }
        // ...hearth does not.
        assert_eq!(forged.verify(), Err(ReceiptError::WorkerSignature));
        assert!(verify_batch(&[forged])[0].is_err());
    }

    #[test]
    fn export_json_rules() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let mut rec = record(&w, &s);
        rec.fuel = (1 << 53) + 1;
        let r = receipt_of(rec, &w, &s);
        let json = serde_json::to_value(ReceiptJson::from(&r)).unwrap();
        assert_eq!(json["fuel"], serde_json::json!("9007199254740993"));
        assert_eq!(json["energy_method"], serde_json::json!("cpu_estimate"));
        assert_eq!(json["basis"], serde_json::json!("claimed"));
        assert_eq!(json["verified_by"], serde_json::json!("quorum"));
        let back: ReceiptJson = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.to_receipt().unwrap(), r);
        // A number where a u64 string belongs, an unknown key, a missing key, uppercase hex.
        let mut number = json.clone();
        number["fuel"] = serde_json::json!(9007199254740993u64);
        assert!(serde_json::from_value::<ReceiptJson>(number).is_err());
        let mut unknown = json.clone();
        unknown["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<ReceiptJson>(unknown).is_err());
        let mut missing = json.clone();
        missing.as_object_mut().unwrap().remove("credited_mj");
        assert!(serde_json::from_value::<ReceiptJson>(missing).is_err());
        let mut upper = back.clone();
        upper.worker = upper.worker.to_uppercase();
        assert!(upper.to_receipt().unwrap_err().contains("`worker`"));
        let mut upper = back.clone();
        upper.canonical = upper.canonical.to_uppercase();
        assert!(upper.to_receipt().unwrap_err().contains("lowercase"));
        let mut edited = back;
        edited.credited_mj -= 1;
        assert!(edited.to_receipt().unwrap_err().contains("`credited_mj`"));
        // Duplicate keys are refused.
        let text = serde_json::to_string(&json).unwrap();
        let dup = text.replacen("{", "{\"shard\":1,", 1);
        assert!(serde_json::from_str::<ReceiptJson>(&dup).is_err());
    }

    proptest::proptest! {
        /// Decoding untrusted bytes never panics; whatever decodes re-encodes to the same
        /// bytes (one encoding per value); verifying a mutated receipt never panics.
        #[test]
        fn decoders_never_panic_and_are_canonical(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500),
            flips in proptest::collection::vec((0..RECEIPT_LEN, proptest::prelude::any::<u8>()), 0..4),
        ) {
            let _ = Claim::from_bytes(&noise);
            let _ = Receipt::from_bytes(&noise);
            let (w, s) = (Identity::from_seed([3; 32]), Identity::from_seed([4; 32]));
            let mut bytes = receipt_of(record(&w, &s), &w, &s).to_bytes();
            for (at, x) in flips {
                bytes[at] ^= x;
            }
            if let Ok(r) = Receipt::from_bytes(&bytes) {
                proptest::prop_assert_eq!(r.to_bytes(), bytes);
                let _ = r.verify();
                let _ = ReceiptJson::from(&r).to_receipt();
            }
        }

        #[test]
        fn credit_never_exceeds_claim_or_power(
            energy in proptest::prelude::any::<u64>(),
            credited in proptest::prelude::any::<u64>(),
            start in proptest::prelude::any::<u64>(),
            len in proptest::prelude::any::<u64>(),
        ) {
            let (w, s) = (Identity::from_seed([3; 32]), Identity::from_seed([4; 32]));
            let rec = WorkRecord {
                energy_mj: energy,
                start_ms: start,
                end_ms: start.saturating_add(len % (2 * MAX_WINDOW_MS)),
                ..record(&w, &s)
            };
            let terms = CreditTerms { credited_mj: credited, ..CreditTerms::claimed(&rec, 1, 1) };
            let claim = Claim { record: rec.clone(), worker_sig: [0; 64] };
            if let Ok(r) = claim.countersign(&s, terms) {
                // Whatever the terms, a receipt that passes the content checks obeys physics.
                if r.check_content().is_ok() {
                    let window = u128::from(r.record.end_ms - r.record.start_ms);
                    proptest::prop_assert!(u128::from(r.terms.credited_mj) <= u128::from(r.record.energy_mj));
                    proptest::prop_assert!(u128::from(r.terms.credited_mj) <= u128::from(MAX_WATTS) * window);
                    proptest::prop_assert!(window <= u128::from(MAX_WINDOW_MS));
                }
                proptest::prop_assert!(r.terms.credited_mj <= r.record.energy_mj);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod vector {
    //! The worked examples in `docs/receipts.md` and `docs/receipts-example.json`: fixed keys
    //! and fields, so another implementation can check its encoding and verification against
    //! ours byte for byte.
    use super::*;

    pub(crate) fn worker() -> Identity {
        Identity::from_seed([1; 32])
    }
    pub(crate) fn submitter() -> Identity {
        Identity::from_seed([2; 32])
    }

    pub(crate) fn example_record(shard: u32, worker: &Identity) -> WorkRecord {
        WorkRecord {
            job: blake3::hash(b"job"),
            shard,
            module: blake3::hash(b"module"),
            input: blake3::hash(b"input"),
            output: blake3::hash(b"output"),
            worker: worker.public(),
            submitter: submitter().public(),
            fuel: 1_000_000,
            energy_mj: 42_000,
            method: EnergyMethod::Rapl,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_000_250,
            nonce: [0xab; 16],
        }
    }

    pub(crate) fn example() -> Receipt {
        let record = example_record(7, &worker());
        let terms = CreditTerms {
            credited_mj: 40_000,
            basis: CreditBasis::ReplicaReference,
            verified_by: VerifiedBy::Quorum,
            agreeing: 2,
            replicas: 3,
        };
        Claim::sign(record, &worker())
            .unwrap()
            .countersign(&submitter(), terms)
            .unwrap()
    }

    /// The receipts of `docs/receipts-example.json`, in the order the exporting ledger
    /// recorded them: three crediting the worker of the example (the exporting household),
    /// one crediting another household.
    pub(crate) fn export_receipts() -> Vec<Receipt> {
        let other = Identity::from_seed([3; 32]);
        let mut out = vec![example()];
        for (shard, who) in [(8, worker()), (9, worker()), (7, other)] {
            let mut rec = example_record(shard, &who);
            rec.start_ms += 1000 * u64::from(shard);
            rec.end_ms += 1000 * u64::from(shard);
            rec.fuel = (1 << 53) + u64::from(shard);
            let terms = CreditTerms::claimed(&rec, 2, 2);
            out.push(
                Claim::sign(rec, &who)
                    .unwrap()
                    .countersign(&submitter(), terms)
                    .unwrap(),
            );
        }
        out
    }

    pub(crate) fn export() -> ReceiptExport {
        let receipts = export_receipts();
        let household = worker().public();
        let mut prev = [0u8; 32];
        let entries: Vec<ChainEntryJson> = receipts
            .iter()
            .filter(|r| r.record.worker == household)
            .map(|r| {
                prev = chain_link(&prev, &r.id());
                ChainEntryJson {
                    id: r.id().to_hex().to_string(),
                    entry: hex::encode(prev),
                }
            })
            .collect();
        let chain = ChainJson {
            household: household.to_hex(),
            length: entries.len() as u64,
            head: hex::encode(prev),
            entries,
        };
        let mut export = ReceiptExport::new(&receipts, Some(chain));
        export.inclusions = inclusions()
            .iter()
            .map(|(id, inc)| InclusionJson::new(id, inc))
            .collect();
        export
    }

    /// The submitter's commitment number 0 over the four receipts of the export, and each
    /// receipt's proof, in ascending receipt id order.
    pub(crate) fn inclusions() -> Vec<(blake3::Hash, crate::model::commit::Inclusion)> {
        let receipts = export_receipts();
        let ids: Vec<blake3::Hash> = receipts.iter().map(Receipt::id).collect();
        let first = receipts.iter().map(|r| r.record.end_ms).min().unwrap();
        let last = receipts.iter().map(|r| r.record.end_ms).max().unwrap();
        let (c, proofs) =
            crate::model::commit::Commitment::seal(&submitter(), 0, &ids, first, last).unwrap();
        proofs
            .proofs()
            .map(|(id, index, path)| {
                (
                    id,
                    crate::model::commit::Inclusion {
                        commitment: c.clone(),
                        index,
                        path,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn documented_vector_matches() {
        let r = example();
        r.verify().unwrap();
        let doc = include_str!("../../docs/receipts.md");
        let hex = hex::encode(r.to_bytes());
        assert!(
            doc.contains(&hex[..64]),
            "docs/receipts.md lacks the vector's first line: {hex}"
        );
        let flat: String = doc.split_whitespace().collect();
        assert!(
            flat.contains(&hex),
            "docs/receipts.md vector is stale; it should be:\n{hex}"
        );
        for (what, value) in [
            ("receipt id", r.id().to_hex().to_string()),
            ("worker key", r.record.worker.to_hex()),
            ("submitter key", r.record.submitter.to_hex()),
            ("terms", hex::encode(r.terms.to_bytes())),
        ] {
            assert!(
                doc.contains(&value),
                "docs/receipts.md lacks the {what} {value}"
            );
        }
    }

    #[test]
    fn documented_export_matches() {
        let export = export();
        let text = serde_json::to_string_pretty(&export).unwrap() + "\n";
        let doc = include_str!("../../docs/receipts-example.json");
        assert!(
            doc == text,
            "docs/receipts-example.json is stale; it should be:\n{text}"
        );
        let back: ReceiptExport = serde_json::from_str(doc).unwrap();
        let receipts: Vec<Receipt> = back
            .receipts
            .iter()
            .map(|r| r.to_receipt().unwrap())
            .collect();
        assert!(verify_batch(&receipts).iter().all(Result::is_ok));
        let chain = back.chain.as_ref().unwrap();
        assert_eq!(
            chain.verify(&receipts, &Default::default()).unwrap(),
            worker().public()
        );
        assert_eq!(back.inclusions.len(), receipts.len());
        // docs/receipts.md shows the worked example's proof byte for byte.
        let proof = inclusions()
            .into_iter()
            .find(|(id, _)| *id == example().id())
            .map(|(_, inc)| hex::encode(inc.to_bytes()))
            .unwrap();
        let flat: String = include_str!("../../docs/receipts.md")
            .split_whitespace()
            .collect();
        assert!(
            flat.contains(&proof),
            "docs/receipts.md inclusion example is stale; it should be:\n{proof}"
        );
        for j in &back.inclusions {
            let (id, inc) = j.to_inclusion().unwrap();
            let r = receipts.iter().find(|r| r.id() == id).unwrap();
            inc.verify(r).unwrap();
        }
        // Dropping a receipt of the household from the export breaks the chain check.
        let pruned: Vec<Receipt> = receipts
            .iter()
            .filter(|r| r.record.shard != 8)
            .cloned()
            .collect();
        assert!(chain.verify(&pruned, &Default::default()).is_err());
        // So does reordering the chain.
        let mut reordered = chain.clone();
        reordered.entries.swap(0, 1);
        assert!(reordered.verify(&receipts, &Default::default()).is_err());
    }
}
