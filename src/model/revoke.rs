//! Revocation statements: a household whose key was stolen says, under that key, "of my
//! commitments, vouch only for those numbered below `keep`".
//!
//! A stolen coordinator key lets the thief countersign receipts for work that never happened
//! and seal them into commitments. The household still holds its key (stolen, not lost), so
//! it signs a statement that draws a line through its numbered commitments: receipts it
//! countersigned count only if an inclusion proof places them in a commitment numbered below
//! `keep`. The thief holds the same key and can sign statements too, but a verifier applies
//! the *smallest* `keep` of every statement it holds for a key, so a thief's statement can
//! only void more, never revive what the household voided. `keep = 0` vouches for no
//! commitment at all.
//!
//! What a statement does not settle: a thief may also sign a second commitment under a number
//! below `keep` (an equivocation). Only auditors' logs tell the one published first from it
//! (`model::tally::AuditLogs`, where two bodies under one number count neither).
//!
//! `docs/receipts.md` ("Revoking a key") gives the byte layout and the rule;
//! `docs/verify_receipt.py` implements both independently. Pure data: no I/O, no clock.

use std::collections::BTreeMap;

use super::canon::{DecodeError, Reader, Writer};
use crate::identity::{Identity, PublicKey};

const MAGIC: &[u8; 4] = b"HREV";
const VERSION: u8 = 1;
/// Domain of the household's signature over a revocation body.
pub const REVOKE_DOMAIN: &[u8] = b"hearth/revocation/v1";
/// Bytes of a revocation body: magic, version, key, `keep`, `issued_ms`.
pub const BODY_LEN: usize = 4 + 1 + 32 + 8 + 8;
/// Bytes of a signed revocation.
pub const REVOCATION_LEN: usize = BODY_LEN + 64;
/// Name of the JSON form (`hearth receipts revoke`, `--revoked FILE`).
pub const FORMAT: &str = "hearth-revocation/1";

/// A household's signed statement that only its commitments numbered below `keep` are its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The household key revoked (the key that signs the statement).
    pub key: PublicKey,
    /// Commitments numbered `0..keep` stay vouched for; every later one, and every receipt
    /// not proven to sit in one of them, is void.
    pub keep: u64,
    /// When the household signed it, ms since the epoch: informative, bounds nothing.
    pub issued_ms: u64,
    pub sig: [u8; 64],
}

impl Revocation {
    pub fn sign(identity: &Identity, keep: u64, issued_ms: u64) -> Revocation {
        let mut r = Revocation {
            key: identity.public(),
            keep,
            issued_ms,
            sig: [0; 64],
        };
        r.sig = identity.sign(&r.signed_message());
        r
    }

    /// The signed body.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION)
            .raw(&self.key.0)
            .u64(self.keep)
            .u64(self.issued_ms);
        w.into_bytes()
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = REVOKE_DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.sig);
        b
    }

    /// Decodes exactly [`REVOCATION_LEN`] bytes. Does not check the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Revocation, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(MAGIC, VERSION, "revocation")?;
        let out = Revocation {
            key: PublicKey(r.array("revoked key")?),
            keep: r.u64("keep")?,
            issued_ms: r.u64("issued_ms")?,
            sig: r.array("revocation signature")?,
        };
        r.finish()?;
        Ok(out)
    }

    /// Whether the signature is the revoked key's own (strict, as receipts are checked).
    pub fn verify(&self) -> Result<(), String> {
        if self.key.verify(&self.signed_message(), &self.sig) {
            Ok(())
        } else {
            Err("the revocation's signature is not its key's".into())
        }
    }

    /// The JSON form a household hands out and verifiers read (`docs/receipts.md`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "format": FORMAT,
            "key": self.key.to_hex(),
            "keep": self.keep,
            "issued_ms": self.issued_ms,
            "signed": hex::encode(self.to_bytes()),
        })
    }

    /// Reads one statement in its JSON form: its signed bytes decode, the signature verifies,
    /// and its readable fields are those bytes'. Anything else is an error saying what.
    pub fn from_json(value: &serde_json::Value) -> Result<Revocation, String> {
        if value["format"].as_str() != Some(FORMAT) {
            return Err(format!("\"format\" is not {FORMAT:?}"));
        }
        let bytes = super::signed_hex(value)?;
        let r = Revocation::from_bytes(&bytes).map_err(|e| e.to_string())?;
        r.verify()?;
        if value["key"].as_str() != Some(r.key.to_hex().as_str())
            || value["keep"].as_u64() != Some(r.keep)
            || value["issued_ms"].as_u64() != Some(r.issued_ms)
        {
            return Err("its key, keep or issued_ms is not its signed bytes'".into());
        }
        Ok(r)
    }
}

/// Every revocation a verifier holds, as the one line each key's statements draw: the
/// smallest `keep` among them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    keep: BTreeMap<PublicKey, u64>,
}

impl Revocations {
    /// Adds a statement whose signature was verified ([`Revocation::from_json`]).
    pub fn add(&mut self, r: &Revocation) {
        self.draw(r.key, r.keep);
    }

    fn draw(&mut self, key: PublicKey, keep: u64) {
        let line = self.keep.entry(key).or_insert(keep);
        *line = (*line).min(keep);
    }

    /// Adds every statement of a file: one statement in its JSON form, or a list of them.
    pub fn add_json(&mut self, text: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match &value {
            serde_json::Value::Array(list) => {
                for (i, v) in list.iter().enumerate() {
                    self.add(&Revocation::from_json(v).map_err(|e| format!("statement {i}: {e}"))?);
                }
            }
            v => self.add(&Revocation::from_json(v)?),
        }
        Ok(())
    }

    /// Adds every line `other` draws (the smaller `keep` standing for a key in both).
    pub fn merge(&mut self, other: &Revocations) {
        for (key, &keep) in &other.keep {
            self.draw(*key, keep);
        }
    }

    /// Whether a receipt countersigned by `submitter` still counts, given the number of the
    /// commitment its verified inclusion proof names (`None` without one); the reason when not.
    pub fn check(&self, submitter: &PublicKey, seq: Option<u64>) -> Result<(), String> {
        let Some(&keep) = self.keep.get(submitter) else {
            return Ok(());
        };
        let place = match seq {
            Some(s) if s < keep => return Ok(()),
            Some(s) => format!("this receipt is in commitment #{s}"),
            None => "this receipt has no inclusion proof".to_string(),
        };
        Err(format!(
            "its submitter {} revoked its key, vouching only for commitments below #{keep}; {place}",
            submitter.to_hex()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_round_trips_and_is_checked_strictly() {
        let home = Identity::from_seed([2; 32]);
        let r = Revocation::sign(&home, 3, 1_700_000_100_000);
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), REVOCATION_LEN);
        assert_eq!(Revocation::from_bytes(&bytes).unwrap(), r);
        r.verify().unwrap();
        assert_eq!(Revocation::from_json(&r.to_json()).unwrap(), r);
        // Every byte of the body is signed.
        for i in 5..BODY_LEN {
            let mut b = bytes.clone();
            b[i] ^= 1;
            let Ok(bent) = Revocation::from_bytes(&b) else {
                continue;
            };
            assert!(bent.verify().is_err(), "byte {i} is not signed");
        }
        assert!(Revocation::from_bytes(&bytes[..REVOCATION_LEN - 1]).is_err());
        assert!(Revocation::from_bytes(&[bytes.clone(), vec![0]].concat()).is_err());
        let mut commitment_magic = bytes.clone();
        commitment_magic[..4].copy_from_slice(b"HCMT");
        assert!(Revocation::from_bytes(&commitment_magic).is_err());
        // Readable fields that are not the signed bytes' are refused.
        let mut edited = r.to_json();
        edited["keep"] = 9.into();
        assert!(Revocation::from_json(&edited)
            .unwrap_err()
            .contains("not its signed bytes'"));
        // Signed by another key than the one it names: refused.
        let thief = Identity::from_seed([9; 32]);
        let mut forged = r.clone();
        forged.sig = thief.sign(&r.signed_message());
        assert!(forged.verify().is_err());
    }

    /// `docs/revocation-example.json` and the bytes `docs/receipts.md` prints are what hearth
    /// signs for the example's submitter (seed `02`×32, keep 1): one specification, the same
    /// bytes from both implementations.
    #[test]
    fn the_documented_example_is_what_hearth_signs() {
        let ours = Revocation::sign(&Identity::from_seed([2; 32]), 1, 1_700_000_100_000);
        let file: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/revocation-example.json")).unwrap();
        assert_eq!(file, ours.to_json());
        assert_eq!(Revocation::from_json(&file).unwrap(), ours);
        let doc = include_str!("../../docs/receipts.md");
        let printed: String = doc
            .split("`issued_ms` 1700000100000. Its 117 bytes:")
            .nth(1)
            .and_then(|rest| rest.split("```text").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("docs/receipts.md prints the example revocation")
            .split_whitespace()
            .collect();
        assert_eq!(printed, hex::encode(ours.to_bytes()));
    }

    /// Of several statements for one key, the smallest `keep` stands: a thief holding the key
    /// can void more of its commitments, never revive one the household voided.
    #[test]
    fn the_smallest_keep_stands_and_only_the_revoked_keys_receipts_are_touched() {
        let (home, other) = (Identity::from_seed([2; 32]), Identity::from_seed([3; 32]));
        let mut revoked = Revocations::default();
        revoked.add(&Revocation::sign(&home, 5, 1));
        revoked.add(&Revocation::sign(&home, 2, 2));
        revoked.add(&Revocation::sign(&home, 7, 3));
        let h = home.public();
        assert!(revoked.check(&h, Some(0)).is_ok());
        assert!(revoked.check(&h, Some(1)).is_ok());
        let err = revoked.check(&h, Some(2)).unwrap_err();
        assert!(
            err.contains("below #2; this receipt is in commitment #2"),
            "{err}"
        );
        assert!(revoked
            .check(&h, None)
            .unwrap_err()
            .contains("no inclusion proof"));
        assert!(revoked.check(&other.public(), None).is_ok());
        // A file holding a list of statements, and one holding a single statement.
        let mut from_files = Revocations::default();
        let list = serde_json::json!([
            Revocation::sign(&home, 5, 1).to_json(),
            Revocation::sign(&home, 2, 2).to_json()
        ]);
        from_files.add_json(&list.to_string()).unwrap();
        from_files
            .add_json(&Revocation::sign(&home, 7, 3).to_json().to_string())
            .unwrap();
        assert_eq!(from_files, revoked);
        let err = from_files.add_json("[{}]").unwrap_err();
        assert!(err.starts_with("statement 0:"), "{err}");
    }
}
