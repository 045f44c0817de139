//! Heat-work claims and receipts: the record of energy spent on verified work.
//!
//! A worker that finished a shard signs a [`WorkRecord`] (a *claim*). When enough claims from
//! distinct households agree, the coordinator countersigns each agreeing record with the
//! submitter's key, making a [`Receipt`]. `docs/receipts.md` specifies the byte layout and the
//! verification steps precisely enough to write a verifier in another language.

use super::canon::{DecodeError, Reader, Writer};
use crate::identity::{Identity, PublicKey};

const MAGIC: &[u8; 4] = b"HRCP";
const VERSION: u8 = 1;
/// Domain tags: a signature made in one role can never be replayed in the other.
pub const WORKER_DOMAIN: &[u8] = b"hearth/receipt/worker/v1";
pub const SUBMITTER_DOMAIN: &[u8] = b"hearth/receipt/submitter/v1";
/// Canonical size of a record's bytes.
pub const RECORD_LEN: usize = 4 + 1 + 32 + 4 + 32 * 3 + 32 * 2 + 8 + 8 + 1 + 8 + 8 + 16;
/// Canonical size of a receipt: the record, then the worker's and the submitter's signatures.
pub const RECEIPT_LEN: usize = RECORD_LEN + 64 + 64;

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
    /// Energy spent on the shard, in millijoules.
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

    /// The receipt id: blake3 of the record's canonical bytes.
    pub fn id(&self) -> blake3::Hash {
        blake3::hash(&self.to_bytes())
    }

    /// Agreement between replicas means equal output and equal fuel.
    pub fn agrees_with(&self, other: &WorkRecord) -> bool {
        self.output == other.output && self.fuel == other.fuel
    }
}

fn signed_message(domain: &[u8], record: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + record.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(record);
    m
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("cannot decode: {0}")]
    Decode(#[from] DecodeError),
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
        let worker_sig = worker.sign(&signed_message(WORKER_DOMAIN, &record.to_bytes()));
        Ok(Claim { record, worker_sig })
    }

    pub fn verify(&self) -> Result<(), ReceiptError> {
        let msg = signed_message(WORKER_DOMAIN, &self.record.to_bytes());
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

    /// The coordinator's countersignature, made with the submitter's key.
    pub fn countersign(self, submitter: &Identity) -> Result<Receipt, ReceiptError> {
        if submitter.public() != self.record.submitter {
            return Err(ReceiptError::WrongSigner("submitter"));
        }
        let submitter_sig =
            submitter.sign(&signed_message(SUBMITTER_DOMAIN, &self.record.to_bytes()));
        Ok(Receipt {
            record: self.record,
            worker_sig: self.worker_sig,
            submitter_sig,
        })
    }
}

/// A heat-work receipt: a work record signed by its worker and countersigned by its submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub record: WorkRecord,
    pub worker_sig: [u8; 64],
    pub submitter_sig: [u8; 64],
}

impl Receipt {
    pub fn id(&self) -> blake3::Hash {
        self.record.id()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.record.to_bytes();
        b.extend_from_slice(&self.worker_sig);
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
        let submitter_sig = r.array("submitter signature")?;
        r.finish()?;
        Ok(Receipt {
            record,
            worker_sig,
            submitter_sig,
        })
    }

    /// Checks both signatures, one at a time.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let body = self.record.to_bytes();
        if !self
            .record
            .worker
            .verify(&signed_message(WORKER_DOMAIN, &body), &self.worker_sig)
        {
            return Err(ReceiptError::WorkerSignature);
        }
        if !self.record.submitter.verify(
            &signed_message(SUBMITTER_DOMAIN, &body),
            &self.submitter_sig,
        ) {
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

/// Verifies many receipts at once with ed25519 batch verification (about twice as fast per
/// signature as one by one). When the batch fails, each receipt is checked alone so the
/// result says exactly which ones are bad.
pub fn verify_batch(receipts: &[Receipt]) -> Vec<Result<(), ReceiptError>> {
    use ed25519_dalek::{Signature, VerifyingKey};
    let mut messages = Vec::with_capacity(receipts.len() * 2);
    let mut signatures = Vec::with_capacity(receipts.len() * 2);
    let mut keys = Vec::with_capacity(receipts.len() * 2);
    let mut all_keys_valid = true;
    for r in receipts {
        let body = r.record.to_bytes();
        for (domain, key, sig) in [
            (WORKER_DOMAIN, &r.record.worker, &r.worker_sig),
            (SUBMITTER_DOMAIN, &r.record.submitter, &r.submitter_sig),
        ] {
            match VerifyingKey::from_bytes(&key.0) {
                Ok(k) if !k.is_weak() => keys.push(k),
                _ => all_keys_valid = false,
            }
            messages.push(signed_message(domain, &body));
            signatures.push(Signature::from_bytes(sig));
        }
    }
    if all_keys_valid {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok() {
            return receipts.iter().map(|_| Ok(())).collect();
        }
    }
    receipts.iter().map(Receipt::verify).collect()
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn sign_countersign_verify_round_trip() {
        let (w, s) = (Identity::generate(), Identity::generate());
        let claim = Claim::sign(record(&w, &s), &w).unwrap();
        claim.verify().unwrap();
        assert_eq!(Claim::from_bytes(&claim.to_bytes()).unwrap(), claim);
        let receipt = claim.countersign(&s).unwrap();
        receipt.verify().unwrap();
        let bytes = receipt.to_bytes();
        assert_eq!(bytes.len(), RECEIPT_LEN);
        assert_eq!(Receipt::from_bytes(&bytes).unwrap(), receipt);
    }

    #[test]
    fn tampering_and_wrong_signers_are_caught() {
        let (w, s) = (Identity::generate(), Identity::generate());
        assert!(Claim::sign(record(&w, &s), &s).is_err());
        let receipt = Claim::sign(record(&w, &s), &w)
            .unwrap()
            .countersign(&s)
            .unwrap();
        let mut bytes = receipt.to_bytes();
        // Flip a byte of the fuel field: both signatures break.
        bytes[4 + 1 + 32 + 4 + 96 + 64] ^= 1;
        let tampered = Receipt::from_bytes(&bytes).unwrap();
        assert_eq!(tampered.verify(), Err(ReceiptError::WorkerSignature));
        let mut swapped = receipt.clone();
        std::mem::swap(&mut swapped.worker_sig, &mut swapped.submitter_sig);
        assert!(swapped.verify().is_err(), "roles are domain-separated");
        let results = verify_batch(&[receipt.clone(), tampered, receipt]);
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    }
}

/// The export format of `hearth receipts export --json`: each receipt's canonical bytes (the
/// only thing a verifier needs) beside its fields in readable form. A verifier decodes
/// `canonical`, checks both signatures and checks that every readable field matches.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReceiptJson {
    pub id: String,
    pub job: String,
    pub shard: u32,
    pub module: String,
    pub input: String,
    pub output: String,
    pub worker: String,
    pub submitter: String,
    pub fuel: u64,
    pub energy_mj: u64,
    pub energy_method: EnergyMethod,
    pub start_ms: u64,
    pub end_ms: u64,
    pub nonce: String,
    pub worker_sig: String,
    pub submitter_sig: String,
    pub canonical: String,
}

/// Top level of an export file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReceiptExport {
    /// Always `hearth-receipts/1`.
    pub format: String,
    pub receipts: Vec<ReceiptJson>,
}

pub const EXPORT_FORMAT: &str = "hearth-receipts/1";

impl From<&Receipt> for ReceiptJson {
    fn from(r: &Receipt) -> ReceiptJson {
        let rec = &r.record;
        ReceiptJson {
            id: r.id().to_hex().to_string(),
            job: rec.job.to_hex().to_string(),
            shard: rec.shard,
            module: rec.module.to_hex().to_string(),
            input: rec.input.to_hex().to_string(),
            output: rec.output.to_hex().to_string(),
            worker: rec.worker.to_hex(),
            submitter: rec.submitter.to_hex(),
            fuel: rec.fuel,
            energy_mj: rec.energy_mj,
            energy_method: rec.method,
            start_ms: rec.start_ms,
            end_ms: rec.end_ms,
            nonce: hex::encode(rec.nonce),
            worker_sig: hex::encode(r.worker_sig),
            submitter_sig: hex::encode(r.submitter_sig),
            canonical: hex::encode(r.to_bytes()),
        }
    }
}

impl ReceiptJson {
    /// Decodes the canonical bytes and checks the readable fields agree with them. Signatures
    /// are checked separately (in a batch) by the caller.
    pub fn to_receipt(&self) -> Result<Receipt, String> {
        let bytes =
            hex::decode(&self.canonical).map_err(|e| format!("canonical: not hex ({e})"))?;
        let receipt = Receipt::from_bytes(&bytes).map_err(|e| format!("canonical: {e}"))?;
        let expected = ReceiptJson::from(&receipt);
        if &expected != self {
            return Err(
                "a readable field does not match the canonical bytes (edited after export?)".into(),
            );
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod vector {
    //! The worked example in `docs/receipts.md`: fixed keys and fields, so another
    //! implementation can check its encoding and verification against ours.
    use super::*;

    pub(super) fn example() -> Receipt {
        let worker = Identity::from_seed([1; 32]);
        let submitter = Identity::from_seed([2; 32]);
        let record = WorkRecord {
            job: blake3::hash(b"job"),
            shard: 7,
            module: blake3::hash(b"module"),
            input: blake3::hash(b"input"),
            output: blake3::hash(b"output"),
            worker: worker.public(),
            submitter: submitter.public(),
            fuel: 1_000_000,
            energy_mj: 42_000,
            method: EnergyMethod::Rapl,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_000_250,
            nonce: [0xab; 16],
        };
        Claim::sign(record, &worker)
            .unwrap()
            .countersign(&submitter)
            .unwrap()
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
        assert!(
            doc.contains(&r.id().to_hex().to_string()),
            "receipt id {}",
            r.id().to_hex()
        );
    }
}
