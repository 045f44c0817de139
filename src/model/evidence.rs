//! Fraud evidence: what a coordinator gossips on `hearth/evidence/1` when a household's claim
//! lost a vote that an established household won (issue 10, `docs/trust.md`).
//!
//! One piece of evidence is the two signed claims of one shard — the loser's and one
//! winner's — with the job, the shard and the winning (output, fuel), all signed by the
//! coordinator that decided the vote (the job's submitter). Fixed size ([`EVIDENCE_LEN`]
//! bytes), canonical, little-endian like every model message; `docs/protocol.md` §6.5 gives
//! the layout.
//!
//! What a valid piece of evidence proves, and what it does not: its signatures prove that the
//! accused household signed a claim for that shard with another (output, fuel), and that the
//! coordinator says another household's claim won. It does **not** prove which claim is right
//! — the winner may be the coordinator's own Sybil. Only re-running the shard does that
//! (execution is deterministic), which is why receivers exclude nobody before they re-ran it
//! (`jobs::trust::evidence`). Pure data: no I/O, no clock.

use super::canon::{DecodeError, Reader, Writer};
use super::receipt::{Claim, ReceiptError, CLAIM_LEN};
use crate::identity::{Identity, PublicKey};

const MAGIC: &[u8; 4] = b"HEVD";
const VERSION: u8 = 1;
/// Domain of the coordinator's signature over the evidence body: a signature made for a
/// receipt or a commitment can never pass for one over evidence, nor the other way round.
pub const EVIDENCE_DOMAIN: &[u8] = b"hearth/evidence/v1";
/// Bytes of the signed body.
pub const BODY_LEN: usize = 4 + 1 + 32 + 8 + 32 + 4 + 32 + 8 + CLAIM_LEN * 2;
/// Bytes of one piece of evidence: the body and the coordinator's signature (813).
pub const EVIDENCE_LEN: usize = BODY_LEN + 64;

/// Why a piece of evidence does not hold together. Each is a forgery or a broken sender: a
/// receiver rejects it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("cannot decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("the {0} claim does not verify: {1}")]
    Claim(&'static str, ReceiptError),
    #[error("the {0} claim is not for the job and shard the evidence names")]
    OtherShard(&'static str),
    #[error("the two claims disagree on the module, the input or the submitter")]
    Mismatch,
    #[error("the claims' submitter is not the coordinator that signed the evidence")]
    NotTheCoordinator,
    #[error("both claims are by the same household")]
    SameHousehold,
    #[error("the winning claim does not carry the winning output and fuel")]
    WinnerDisagrees,
    #[error("the losing claim carries the winning output and fuel: it did not lose")]
    LoserAgrees,
    #[error("the coordinator's signature does not verify")]
    Signature,
}

/// Evidence that `losing`'s household lost the vote on one shard to `winning`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The coordinator that decided the vote: the job's submitter, and the signer.
    pub coordinator: PublicKey,
    /// When the coordinator excluded the household, ms (its clock; informational).
    pub at_ms: u64,
    pub job: blake3::Hash,
    pub shard: u32,
    /// The decided output and fuel.
    pub output: blake3::Hash,
    pub fuel: u64,
    pub losing: Claim,
    pub winning: Claim,
    pub signature: [u8; 64],
}

impl Evidence {
    /// Signs evidence against `losing`. Refuses a pair that [`Evidence::check`] would refuse,
    /// so an honest coordinator never sends what receivers reject.
    pub fn sign(
        coordinator: &Identity,
        at_ms: u64,
        output: blake3::Hash,
        fuel: u64,
        losing: Claim,
        winning: Claim,
    ) -> Result<Evidence, EvidenceError> {
        let mut e = Evidence {
            coordinator: coordinator.public(),
            at_ms,
            job: winning.record.job,
            shard: winning.record.shard,
            output,
            fuel,
            losing,
            winning,
            signature: [0; 64],
        };
        e.signature = coordinator.sign(&e.signed_message());
        e.check()?;
        Ok(e)
    }

    /// The accused household.
    pub fn accused(&self) -> PublicKey {
        self.losing.record.worker
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION)
            .raw(&self.coordinator.0)
            .u64(self.at_ms)
            .hash(&self.job)
            .u32(self.shard)
            .hash(&self.output)
            .u64(self.fuel)
            .raw(&self.losing.to_bytes())
            .raw(&self.winning.to_bytes());
        let b = w.into_bytes();
        debug_assert_eq!(b.len(), BODY_LEN);
        b
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = EVIDENCE_DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes exactly [`EVIDENCE_LEN`] bytes; the length is checked before anything else.
    /// Decoding checks the layout only: call [`Evidence::check`] before believing any of it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Evidence, EvidenceError> {
        if bytes.len() != EVIDENCE_LEN {
            return Err(DecodeError::Invalid {
                what: "evidence",
                reason: format!("{} bytes, not {EVIDENCE_LEN}", bytes.len()),
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        r.magic(MAGIC, "evidence")?;
        let version = r.u8("evidence version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "evidence",
                version,
            }
            .into());
        }
        let coordinator = PublicKey(r.array("coordinator key")?);
        let at_ms = r.u64("evidence time")?;
        let job = r.hash("job")?;
        let shard = r.u32("shard")?;
        let output = r.hash("winning output")?;
        let fuel = r.u64("winning fuel")?;
        let losing = Claim::from_bytes(r.take(CLAIM_LEN, "losing claim")?)?;
        let winning = Claim::from_bytes(r.take(CLAIM_LEN, "winning claim")?)?;
        let signature = r.array("coordinator signature")?;
        r.finish()?;
        Ok(Evidence {
            coordinator,
            at_ms,
            job,
            shard,
            output,
            fuel,
            losing,
            winning,
            signature,
        })
    }

    /// Structure first (cheap), then the three signatures, each strictly: both claims are for
    /// this job and shard, with the same module, input and submitter; the submitter is the
    /// signing coordinator; two households; the winner carries the decided (output, fuel)
    /// and the loser does not.
    pub fn check(&self) -> Result<(), EvidenceError> {
        for (which, c) in [("losing", &self.losing), ("winning", &self.winning)] {
            if c.record.job != self.job || c.record.shard != self.shard {
                return Err(EvidenceError::OtherShard(which));
            }
        }
        let (l, w) = (&self.losing.record, &self.winning.record);
        if l.module != w.module || l.input != w.input || l.submitter != w.submitter {
            return Err(EvidenceError::Mismatch);
        }
        if w.submitter != self.coordinator {
            return Err(EvidenceError::NotTheCoordinator);
        }
        if l.worker == w.worker {
            return Err(EvidenceError::SameHousehold);
        }
        if w.output != self.output || w.fuel != self.fuel {
            return Err(EvidenceError::WinnerDisagrees);
        }
        if l.output == self.output && l.fuel == self.fuel {
            return Err(EvidenceError::LoserAgrees);
        }
        self.losing
            .verify()
            .map_err(|e| EvidenceError::Claim("losing", e))?;
        self.winning
            .verify()
            .map_err(|e| EvidenceError::Claim("winning", e))?;
        if !self
            .coordinator
            .verify(&self.signed_message(), &self.signature)
        {
            return Err(EvidenceError::Signature);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::receipt::{EnergyMethod, WorkRecord};

    fn claim(worker: &Identity, submitter: &Identity, output: &[u8], fuel: u64) -> Claim {
        Claim::sign(
            WorkRecord {
                job: blake3::hash(b"job"),
                shard: 3,
                module: blake3::hash(b"module"),
                input: blake3::hash(b"input"),
                output: blake3::hash(output),
                worker: worker.public(),
                submitter: submitter.public(),
                fuel,
                energy_mj: 1_000,
                method: EnergyMethod::CpuEstimate,
                start_ms: 1_000,
                end_ms: 2_000,
                nonce: [9; 16],
            },
            worker,
        )
        .unwrap()
    }

    pub(crate) fn sample() -> (Identity, Evidence) {
        let coordinator = Identity::from_seed([1; 32]);
        let liar = Identity::from_seed([2; 32]);
        let honest = Identity::from_seed([3; 32]);
        let e = Evidence::sign(
            &coordinator,
            5,
            blake3::hash(b"right"),
            77,
            claim(&liar, &coordinator, b"wrong", 77),
            claim(&honest, &coordinator, b"right", 77),
        )
        .unwrap();
        (coordinator, e)
    }

    #[test]
    fn evidence_round_trips_at_its_fixed_size_and_checks() {
        let (_, e) = sample();
        let bytes = e.to_bytes();
        assert_eq!(bytes.len(), EVIDENCE_LEN);
        assert_eq!(EVIDENCE_LEN, 813);
        let back = Evidence::from_bytes(&bytes).unwrap();
        assert_eq!(back, e);
        back.check().unwrap();
        assert_eq!(back.accused(), Identity::from_seed([2; 32]).public());
    }

    #[test]
    fn every_flipped_byte_is_refused_by_decode_or_check() {
        let (_, e) = sample();
        let bytes = e.to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let ok = Evidence::from_bytes(&b).and_then(|e| e.check());
            assert!(ok.is_err(), "byte {i} flipped still checks");
        }
        // Short, long and empty inputs are refused before any decoding.
        assert!(Evidence::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Evidence::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert!(Evidence::from_bytes(&[]).is_err());
    }

    #[test]
    fn pairs_that_prove_nothing_are_refused_at_signing() {
        let coordinator = Identity::from_seed([1; 32]);
        let other = Identity::from_seed([4; 32]);
        let a = Identity::from_seed([2; 32]);
        let b = Identity::from_seed([3; 32]);
        let right = blake3::hash(b"right");
        // The "loser" agrees with the winner: nothing was lost.
        assert_eq!(
            Evidence::sign(
                &coordinator,
                0,
                right,
                7,
                claim(&a, &coordinator, b"right", 7),
                claim(&b, &coordinator, b"right", 7)
            )
            .unwrap_err(),
            EvidenceError::LoserAgrees
        );
        // The right output with another fuel count loses too.
        Evidence::sign(
            &coordinator,
            0,
            right,
            7,
            claim(&a, &coordinator, b"right", 8),
            claim(&b, &coordinator, b"right", 7),
        )
        .unwrap();
        // One household against itself.
        assert_eq!(
            Evidence::sign(
                &coordinator,
                0,
                right,
                7,
                claim(&a, &coordinator, b"wrong", 7),
                claim(&a, &coordinator, b"right", 7)
            )
            .unwrap_err(),
            EvidenceError::SameHousehold
        );
        // Another submitter's job: only the job's own coordinator may accuse.
        assert_eq!(
            Evidence::sign(
                &coordinator,
                0,
                right,
                7,
                claim(&a, &other, b"wrong", 7),
                claim(&b, &other, b"right", 7)
            )
            .unwrap_err(),
            EvidenceError::NotTheCoordinator
        );
        // The winning claim must carry the decided outcome.
        assert_eq!(
            Evidence::sign(
                &coordinator,
                0,
                blake3::hash(b"else"),
                7,
                claim(&a, &coordinator, b"wrong", 7),
                claim(&b, &coordinator, b"right", 7)
            )
            .unwrap_err(),
            EvidenceError::WinnerDisagrees
        );
    }

    #[test]
    fn a_signature_by_anyone_but_the_coordinator_is_refused() {
        let (_, mut e) = sample();
        let stranger = Identity::from_seed([8; 32]);
        e.signature = stranger.sign(&e.signed_message());
        assert_eq!(e.check().unwrap_err(), EvidenceError::Signature);
    }
}
