//! Proof that a coordinator equivocated: two different commitments it signed under one number.
//!
//! A commitment says "these receipts, and no others, are the ones I countersigned in
//! commitment number `seq`" (`model::commit`). Two different signed bodies with one number
//! mean the key told two stories: a coordinator showing each verifier the receipts it likes,
//! or a thief holding the key. Either way verifiers count neither body
//! (`model::tally::AuditLogs`), so heat spent on that key's work may earn a household nothing,
//! and a radiator that holds the proof takes no more work from the key.
//!
//! The proof needs nobody's word: both commitments verify under the coordinator's key, carry
//! one number, and differ. Auditors, who keep every commitment they hear, find equivocations
//! and gossip the proof to every node (`docs/protocol.md` §6.6).
//!
//! Layout (327 bytes): `"HEQV"`, version 1, then the two signed commitments (161 bytes each),
//! the one with the smaller id first, so one equivocation has one encoding whoever found it
//! (and gossip, whose message id is the payload's hash, carries it once). Pure data: no I/O.

use super::canon::{DecodeError, Reader, Writer};
use super::commit::{Commitment, COMMITMENT_LEN};
use crate::identity::PublicKey;

const MAGIC: &[u8; 4] = b"HEQV";
const VERSION: u8 = 1;
/// Bytes of a proof.
pub const EQUIVOCATION_LEN: usize = 4 + 1 + 2 * COMMITMENT_LEN;

/// Two commitments one coordinator signed under one number, the smaller id first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    first: Commitment,
    second: Commitment,
}

impl Equivocation {
    /// The proof made of `a` and `b`, if they are one coordinator's, under one number, and
    /// different. Signatures are not checked here ([`Equivocation::verify`]).
    pub fn new(a: Commitment, b: Commitment) -> Option<Equivocation> {
        if a.coordinator != b.coordinator || a.seq != b.seq || a.id() == b.id() {
            return None;
        }
        let (first, second) = if a.id().as_bytes() < b.id().as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        Some(Equivocation { first, second })
    }

    /// The coordinator that equivocated.
    pub fn coordinator(&self) -> PublicKey {
        self.first.coordinator
    }

    /// The number both commitments carry.
    pub fn seq(&self) -> u64 {
        self.first.seq
    }

    /// Both commitments, the smaller id first.
    pub fn commitments(&self) -> [&Commitment; 2] {
        [&self.first, &self.second]
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION)
            .raw(&self.first.to_bytes())
            .raw(&self.second.to_bytes());
        w.into_bytes()
    }

    /// Decodes exactly [`EQUIVOCATION_LEN`] bytes in their one encoding: one coordinator, one
    /// number, two different bodies, the smaller id first. Does not check the signatures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Equivocation, DecodeError> {
        let invalid = |reason: &str| DecodeError::Invalid {
            what: "equivocation proof",
            reason: reason.into(),
        };
        let mut r = Reader::new(bytes);
        r.magic(MAGIC, "equivocation proof")?;
        let version = r.u8("equivocation version")?;
        if version != VERSION {
            return Err(DecodeError::Version {
                what: "equivocation proof",
                version,
            });
        }
        let a = Commitment::from_bytes(r.take(COMMITMENT_LEN, "first commitment")?)?;
        let b = Commitment::from_bytes(r.take(COMMITMENT_LEN, "second commitment")?)?;
        r.finish()?;
        let proof = Equivocation::new(a.clone(), b).ok_or_else(|| {
            invalid("not two different commitments of one coordinator and number")
        })?;
        if proof.first != a {
            return Err(invalid("the commitment with the smaller id comes first"));
        }
        Ok(proof)
    }

    /// Checks both signatures (and count bounds): the coordinator's key signed both bodies.
    pub fn verify(&self) -> Result<(), String> {
        for c in self.commitments() {
            c.verify()
                .map_err(|e| format!("commitment #{} ({}): {e}", c.seq, c.id().to_hex()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn sealed(who: &Identity, seq: u64, what: &[u8]) -> Commitment {
        Commitment::seal(who, seq, &[blake3::hash(what)], 1, 2)
            .unwrap()
            .0
    }

    #[test]
    fn two_bodies_under_one_number_prove_it_in_one_encoding() {
        let lab = Identity::generate();
        let (a, b) = (sealed(&lab, 3, b"a"), sealed(&lab, 3, b"b"));
        let p = Equivocation::new(a.clone(), b.clone()).unwrap();
        let q = Equivocation::new(b.clone(), a.clone()).unwrap();
        assert_eq!(p, q, "whoever found it, one proof");
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), EQUIVOCATION_LEN);
        assert_eq!(Equivocation::from_bytes(&bytes).unwrap(), p);
        p.verify().unwrap();
        assert_eq!((p.coordinator(), p.seq()), (lab.public(), 3));

        // The same body twice, two numbers, two keys: no equivocation.
        assert!(Equivocation::new(a.clone(), a.clone()).is_none());
        assert!(Equivocation::new(a.clone(), sealed(&lab, 4, b"b")).is_none());
        let other = Identity::generate();
        assert!(Equivocation::new(a.clone(), sealed(&other, 3, b"b")).is_none());

        // The other order is a second encoding: refused.
        let [first, second] = p.commitments();
        let mut swapped = bytes[..5].to_vec();
        swapped.extend_from_slice(&second.to_bytes());
        swapped.extend_from_slice(&first.to_bytes());
        assert!(Equivocation::from_bytes(&swapped).is_err());
        // Cut or padded: refused.
        assert!(Equivocation::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Equivocation::from_bytes(&long).is_err());
    }

    #[test]
    fn a_body_the_key_did_not_sign_proves_nothing() {
        let lab = Identity::generate();
        let a = sealed(&lab, 0, b"a");
        let mut b = sealed(&lab, 0, b"b");
        b.sig = sealed(&Identity::generate(), 0, b"b").sig;
        let p = Equivocation::new(a, b).unwrap();
        let said = p.verify().unwrap_err();
        assert!(said.contains("signature"), "{said}");
    }
}
