//! The JSON export of receipts (`hearth receipts export --json`, `GET /v1/receipts`): each
//! receipt's canonical bytes beside its fields in readable form, and the exporting household's
//! hash chain, so a verifier can check signatures, physics and history from the file alone.
//!
//! Rules (`docs/receipts.md`, "Export format"): every key listed here is required except
//! `chain` and `inclusions`; unknown and duplicate keys are errors; key order is irrelevant; every hex string
//! is lowercase and of exact length; every u64 is a JSON *string* of decimal digits without
//! leading zeros, so that parsers that read numbers as doubles (JavaScript, many others) keep
//! values above 2^53 exact. Small integers (`shard`, `agreeing`, `replicas`) are numbers.

use super::commit::{Commitment, Inclusion};
use super::receipt::{CreditBasis, EnergyMethod, Receipt, VerifiedBy};
use crate::identity::PublicKey;

/// The format name of this version of the export: format 2 plus `inclusions`.
pub const EXPORT_FORMAT: &str = "hearth-receipts/3";
/// The previous format, still read (it has no `inclusions`).
pub const EXPORT_FORMAT_2: &str = "hearth-receipts/2";

/// u64 values as decimal strings: `"0"` or `[1-9][0-9]*`, at most 2^64 − 1.
mod dec_u64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            D::Error::custom("a u64 is written as a string of decimal digits, e.g. \"42\"")
        })?;
        parse(&text).map_err(D::Error::custom)
    }

    pub fn parse(text: &str) -> Result<u64, String> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !digits || (text.len() > 1 && text.starts_with('0')) {
            return Err(format!(
                "{text:?} is not a u64 in decimal without leading zeros"
            ));
        }
        text.parse::<u64>()
            .map_err(|_| format!("{text:?} is above 2^64 - 1"))
    }
}

/// One receipt in readable form. `canonical` alone is authoritative; the other fields must
/// equal what it says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    pub id: String,
    pub job: String,
    pub shard: u32,
    pub module: String,
    pub input: String,
    pub output: String,
    pub worker: String,
    pub submitter: String,
    #[serde(with = "dec_u64")]
    pub fuel: u64,
    /// The worker's claim.
    #[serde(with = "dec_u64")]
    pub energy_mj: u64,
    pub energy_method: EnergyMethod,
    #[serde(with = "dec_u64")]
    pub start_ms: u64,
    #[serde(with = "dec_u64")]
    pub end_ms: u64,
    pub nonce: String,
    pub worker_sig: String,
    /// What the submitter credited.
    #[serde(with = "dec_u64")]
    pub credited_mj: u64,
    pub basis: CreditBasis,
    pub verified_by: VerifiedBy,
    pub agreeing: u8,
    pub replicas: u8,
    pub submitter_sig: String,
    pub canonical: String,
}

/// One link of a household's hash chain: `entry = blake3(previous entry ‖ id)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntryJson {
    pub id: String,
    pub entry: String,
}

/// The exporting household's hash chain: every receipt crediting `household` that its ledger
/// holds, in the order it recorded them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainJson {
    pub household: String,
    #[serde(with = "dec_u64")]
    pub length: u64,
    pub head: String,
    pub entries: Vec<ChainEntryJson>,
}

/// Top level of an export file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptExport {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    pub receipts: Vec<ReceiptJson>,
    /// Absent (or null) when the export is not one household's own history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainJson>,
    /// Proofs that receipts of this export are in their coordinators' signed commitments.
    /// Absent when there are none (format 2, or receipts not yet committed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusions: Vec<InclusionJson>,
}

impl ReceiptExport {
    pub fn new(receipts: &[Receipt], chain: Option<ChainJson>) -> ReceiptExport {
        ReceiptExport {
            format: EXPORT_FORMAT.into(),
            receipts: receipts.iter().map(ReceiptJson::from).collect(),
            chain,
            inclusions: Vec::new(),
        }
    }
}

/// One receipt's inclusion proof in readable form. `canonical` (the [`Inclusion`] bytes) alone
/// is authoritative; the other fields must equal what it says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionJson {
    /// The id of the receipt it proves.
    pub receipt: String,
    /// blake3 of the commitment body.
    pub commitment: String,
    pub coordinator: String,
    #[serde(with = "dec_u64")]
    pub seq: u64,
    pub count: u32,
    pub root: String,
    #[serde(with = "dec_u64")]
    pub first_ms: u64,
    #[serde(with = "dec_u64")]
    pub last_ms: u64,
    pub commitment_sig: String,
    pub index: u32,
    /// Audit path, bottom first.
    pub path: Vec<String>,
    pub canonical: String,
}

impl InclusionJson {
    pub fn new(receipt: &blake3::Hash, inc: &Inclusion) -> InclusionJson {
        let c: &Commitment = &inc.commitment;
        InclusionJson {
            receipt: receipt.to_hex().to_string(),
            commitment: c.id().to_hex().to_string(),
            coordinator: c.coordinator.to_hex(),
            seq: c.seq,
            count: c.count,
            root: hex::encode(c.root),
            first_ms: c.first_ms,
            last_ms: c.last_ms,
            commitment_sig: hex::encode(c.sig),
            index: inc.index,
            path: inc.path.iter().map(hex::encode).collect(),
            canonical: hex::encode(inc.to_bytes()),
        }
    }

    /// Decodes the canonical bytes and checks that every readable field agrees with them.
    /// Returns the receipt id and the proof; the proof itself is checked by the caller
    /// ([`Inclusion::verify`]).
    pub fn to_inclusion(&self) -> Result<(blake3::Hash, Inclusion), String> {
        if self.canonical.len() > 2 * super::wire::MAX_INCLUSION
            || !self
                .canonical
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err("inclusion canonical: expected lowercase hex of a proof".into());
        }
        let bytes = hex::decode(&self.canonical).map_err(|e| format!("inclusion: {e}"))?;
        let inc = Inclusion::from_bytes(&bytes).map_err(|e| format!("inclusion: {e}"))?;
        let id = blake3::Hash::from_bytes(hash32("inclusion receipt", &self.receipt)?);
        if InclusionJson::new(&id, &inc) != *self {
            return Err(format!(
                "the inclusion proof of receipt {} has fields that do not match its canonical bytes",
                self.receipt
            ));
        }
        Ok((id, inc))
    }
}

/// One step of the chain: blake3(previous entry ‖ receipt id); the first entry's previous
/// entry is 32 zero bytes.
pub fn chain_link(prev: &[u8; 32], id: &blake3::Hash) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev).update(id.as_bytes());
    *h.finalize().as_bytes()
}

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
            credited_mj: r.terms.credited_mj,
            basis: r.terms.basis,
            verified_by: r.terms.verified_by,
            agreeing: r.terms.agreeing,
            replicas: r.terms.replicas,
            submitter_sig: hex::encode(r.submitter_sig),
            canonical: hex::encode(r.to_bytes()),
        }
    }
}

/// Decodes exactly `len` bytes written as lowercase hex.
fn lower_hex(what: &str, text: &str, len: usize) -> Result<Vec<u8>, String> {
    if text.len() != 2 * len || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("{what}: expected {} lowercase hex digits", 2 * len));
    }
    hex::decode(text).map_err(|e| format!("{what}: {e}"))
}

fn hash32(what: &str, text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    out.copy_from_slice(&lower_hex(what, text, 32)?);
    Ok(out)
}

impl ReceiptJson {
    /// Decodes the canonical bytes and checks that every readable field agrees with them.
    /// Signatures and physics are checked separately by the caller.
    pub fn to_receipt(&self) -> Result<Receipt, String> {
        let bytes = lower_hex("canonical", &self.canonical, super::receipt::RECEIPT_LEN)?;
        let receipt = Receipt::from_bytes(&bytes).map_err(|e| format!("canonical: {e}"))?;
        let expected = ReceiptJson::from(&receipt);
        if &expected != self {
            let (want, got) = (serde_json::to_value(&expected), serde_json::to_value(self));
            let field = match (want, got) {
                (Ok(serde_json::Value::Object(w)), Ok(serde_json::Value::Object(g))) => w
                    .iter()
                    .find(|(k, v)| g.get(*k) != Some(v))
                    .map(|(k, _)| k.clone()),
                _ => None,
            };
            return Err(format!(
                "field `{}` does not match the canonical bytes (edited after export?)",
                field.unwrap_or_else(|| "?".into())
            ));
        }
        Ok(receipt)
    }
}

impl ChainJson {
    /// Checks the chain against the receipts of the same export: every link, the length and
    /// the head; every entry names a receipt of the export crediting `household` (under any
    /// key of its chain, `chains`: `model::rotate`), once; and every receipt of the export
    /// crediting `household` is on the chain. Returns the household.
    pub fn verify(
        &self,
        receipts: &[Receipt],
        chains: &super::rotate::KeyChains,
    ) -> Result<PublicKey, String> {
        let household = PublicKey(hash32("chain household", &self.household)?);
        if self.length != self.entries.len() as u64 {
            return Err(format!(
                "chain: length {} but {} entries",
                self.length,
                self.entries.len()
            ));
        }
        let own: std::collections::HashSet<blake3::Hash> = receipts
            .iter()
            .filter(|r| chains.household_of(&r.record.worker) == household)
            .map(Receipt::id)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut prev = [0u8; 32];
        for (n, e) in self.entries.iter().enumerate() {
            let id = blake3::Hash::from_bytes(hash32("chain entry id", &e.id)?);
            let entry = hash32("chain entry", &e.entry)?;
            if chain_link(&prev, &id) != entry {
                return Err(format!("chain entry {n} does not link to the one before"));
            }
            if !own.contains(&id) {
                return Err(format!(
                    "chain entry {n} names receipt {} that this export does not hold for household {} \
                     (one of its keys after a rotation? give its key log with --keys)",
                    e.id, self.household
                ));
            }
            if !seen.insert(id) {
                return Err(format!("chain entry {n} names receipt {} twice", e.id));
            }
            prev = entry;
        }
        if hash32("chain head", &self.head)? != prev {
            return Err("chain head is not the last entry".into());
        }
        if let Some(missing) = own.iter().find(|id| !seen.contains(*id)) {
            return Err(format!(
                "receipt {} credits household {} but is not on its chain (pruned or added?)",
                missing.to_hex(),
                self.household
            ));
        }
        Ok(household)
    }
}

#[cfg(test)]
mod tests {
    use super::dec_u64::parse;

    #[test]
    fn u64_strings_are_canonical_decimal() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "01",
            "-1",
            "1e3",
            " 1",
            "18446744073709551616",
            "0x10",
            "1.0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
