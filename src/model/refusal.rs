//! A proof that a key's work is worth nothing: its household's revocation statement
//! (`model::revoke`) or two commitments it signed under one number (`model::equivocate`).
//! Both arrive on `hearth/evidence/1` and from peers that hand on what they hold
//! (`docs/protocol.md` §6.6); a node keeps them in `node::revoked`. Pure data: decoding and
//! signature checks, no I/O.

use super::equivocate::Equivocation;
use super::revoke::Revocation;
use crate::identity::PublicKey;

/// Why a node takes no work from a key. Each comes with a proof any node checks alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The household revoked the key (a `Revocation`, signed by the key).
    Revoked = 0,
    /// The key signed two different commitments under one number (an `Equivocation`).
    Equivocated = 1,
}

/// A checked reason to refuse a key, as kept and as handed to a peer that asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Revoked(Revocation),
    Equivocated(Box<Equivocation>),
}

impl Refusal {
    /// Decodes a revocation or an equivocation proof (told apart by their magic) and checks
    /// its signatures. A revocation's author is not known here: gossip checks that apart.
    pub fn checked(bytes: &[u8]) -> Result<Refusal, String> {
        let refusal = if bytes.starts_with(b"HREV") {
            Refusal::Revoked(Revocation::from_bytes(bytes).map_err(|e| e.to_string())?)
        } else {
            Refusal::Equivocated(Box::new(
                Equivocation::from_bytes(bytes).map_err(|e| e.to_string())?,
            ))
        };
        match &refusal {
            Refusal::Revoked(r) => r.verify()?,
            Refusal::Equivocated(e) => e.verify()?,
        }
        Ok(refusal)
    }

    /// A proof as gossiped by the author whose household key is `author` (none when its
    /// PeerId embeds no ed25519 key): it checks, and a revocation comes from its own key (a
    /// household publishes its own statement; anyone may pass on an equivocation proof, which
    /// needs nobody's word).
    pub fn gossiped(bytes: &[u8], author: Option<&PublicKey>) -> Result<Refusal, String> {
        match Refusal::checked(bytes)? {
            Refusal::Revoked(r) if author != Some(&r.key) => {
                Err("a revocation published by another key than the one it revokes".into())
            }
            refusal => Ok(refusal),
        }
    }

    /// The key refused.
    pub fn key(&self) -> PublicKey {
        match self {
            Refusal::Revoked(r) => r.key,
            Refusal::Equivocated(e) => e.coordinator(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Refusal::Revoked(_) => Kind::Revoked,
            Refusal::Equivocated(_) => Kind::Equivocated,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Refusal::Revoked(r) => r.to_bytes(),
            Refusal::Equivocated(e) => e.to_bytes(),
        }
    }

    /// Whether `self` should replace `kept`, a proof of the same kind for the same key: a
    /// stricter revocation (smaller `keep`) does, since verifiers apply the smallest; one
    /// equivocation proves as much as another.
    pub fn replaces(&self, kept: &[u8]) -> bool {
        match (self, Revocation::from_bytes(kept)) {
            (Refusal::Revoked(new), Ok(old)) => new.keep < old.keep,
            (Refusal::Revoked(_), Err(_)) => true,
            (Refusal::Equivocated(_), _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    /// What gossip takes: a revocation only from its own key, an equivocation proof from
    /// anyone, nothing whose signatures do not check or that is neither.
    #[test]
    fn gossip_takes_a_revocation_from_its_key_and_a_proof_from_anyone() {
        let (lab, stranger) = (Identity::generate(), Identity::generate());
        let statement = Revocation::sign(&lab, 0, 1).to_bytes();
        assert!(Refusal::gossiped(&statement, Some(&lab.public())).is_ok());
        assert!(
            Refusal::gossiped(&statement, None).is_err(),
            "an author with no key"
        );
        let said = Refusal::gossiped(&statement, Some(&stranger.public())).unwrap_err();
        assert!(said.contains("another key"), "{said}");
        let seal = |what: &[u8]| {
            crate::model::commit::Commitment::seal(&lab, 7, &[blake3::hash(what)], 1, 2)
                .unwrap()
                .0
        };
        let proof = Equivocation::new(seal(b"a"), seal(b"b"))
            .unwrap()
            .to_bytes();
        let heard = Refusal::gossiped(&proof, Some(&stranger.public())).unwrap();
        assert_eq!(
            (heard.key(), heard.kind()),
            (lab.public(), Kind::Equivocated)
        );
        let mut forged = statement.clone();
        forged[40] ^= 1;
        assert!(Refusal::gossiped(&forged, Some(&lab.public())).is_err());
        let mut forged = proof.clone();
        forged[300] ^= 1;
        assert!(Refusal::gossiped(&forged, Some(&stranger.public())).is_err());
        assert!(Refusal::gossiped(b"HEQV", Some(&stranger.public())).is_err());
        assert!(Refusal::gossiped(&[], Some(&stranger.public())).is_err());
    }
}
