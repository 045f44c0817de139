//! What an export credits, as whoever repays credit reads it (`docs/receipts.md`, "What an
//! export credits"): per worker household, the energy its valid receipts credit, split by the
//! submitter that countersigned them, with the self-dealt ones (worker = submitter) and those
//! in a verified commitment named, and, given the submitters the reader trusts, what those
//! vouched for. A receipt proves that its submitter says the work was verified, no more
//! (`docs/threat-model.md`: two colluding keys can mint receipts), so this is the figure a
//! repayer weighs, not a verdict. `hearth receipts verify` and `docs/verify_receipt.py` print
//! the same lines, byte for byte.
//!
//! Pure: receipts in, lines out. Sums are u128: one receipt credits at most `MAX_WATTS` × 24 h
//! (about 3.2 × 10^11 mJ), so a u64 sum could overflow past about 58 million receipts.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::receipt::Receipt;
use crate::identity::PublicKey;

/// Millijoules in a watt-hour.
pub const MJ_PER_WH: u128 = 3_600_000;

/// A count of receipts and the energy they credit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub receipts: u64,
    pub credited_mj: u128,
}

impl Tally {
    fn add(&mut self, r: &Receipt) {
        self.receipts += 1;
        self.credited_mj += u128::from(r.terms.credited_mj);
    }
}

/// What one worker household's receipts in an export credit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HouseholdCredit {
    pub household: PublicKey,
    pub all: Tally,
    /// The sum of the workers' own claims (`energy_mj`) over the same receipts.
    pub claimed_mj: u128,
    pub by_submitter: BTreeMap<PublicKey, Tally>,
    /// Receipts with a verified inclusion proof in the export.
    pub committed: Tally,
    /// Countersigned by a trusted submitter that is not the household itself; `None` when no
    /// list of trusted submitters was given.
    pub trusted: Option<Tally>,
}

/// Tallies `receipts` (those that passed verification: valid, and the first for their job,
/// shard and worker) per worker household, in key order. `committed` holds the ids of
/// receipts whose inclusion proof verified; `trusted`, the submitters the reader trusts.
pub fn tally(
    receipts: &[Receipt],
    committed: &HashSet<blake3::Hash>,
    trusted: Option<&BTreeSet<PublicKey>>,
) -> Vec<HouseholdCredit> {
    let mut out: BTreeMap<PublicKey, HouseholdCredit> = BTreeMap::new();
    for r in receipts {
        let (worker, submitter) = (r.record.worker, r.record.submitter);
        let h = out.entry(worker).or_insert_with(|| HouseholdCredit {
            household: worker,
            all: Tally::default(),
            claimed_mj: 0,
            by_submitter: BTreeMap::new(),
            committed: Tally::default(),
            trusted: trusted.map(|_| Tally::default()),
        });
        h.all.add(r);
        h.claimed_mj += u128::from(r.record.energy_mj);
        h.by_submitter.entry(submitter).or_default().add(r);
        if committed.contains(&r.id()) {
            h.committed.add(r);
        }
        if let (Some(t), Some(list)) = (h.trusted.as_mut(), trusted) {
            if submitter != worker && list.contains(&submitter) {
                t.add(r);
            }
        }
    }
    out.into_values().collect()
}

/// The lines `hearth receipts verify` prints for a tally (`docs/receipts.md` gives their exact
/// form, which `docs/verify_receipt.py` prints too).
pub fn lines(households: &[HouseholdCredit], trusted: Option<&BTreeSet<PublicKey>>) -> Vec<String> {
    let mut out = Vec::new();
    for h in households {
        out.push(format!(
            "credit of household {}: {} receipts, {} mJ credited ({} Wh) of {} mJ claimed",
            h.household.to_hex(),
            h.all.receipts,
            h.all.credited_mj,
            h.all.credited_mj / MJ_PER_WH,
            h.claimed_mj
        ));
        for (submitter, t) in &h.by_submitter {
            let mut marks = Vec::new();
            if *submitter == h.household {
                marks.push("self-dealt");
            }
            if trusted.is_some_and(|list| list.contains(submitter)) {
                marks.push("trusted");
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" ({})", marks.join(", "))
            };
            out.push(format!(
                "  countersigned by {}{marks}: {} receipts, {} mJ",
                submitter.to_hex(),
                t.receipts,
                t.credited_mj
            ));
        }
        out.push(format!(
            "  in a verified commitment: {} receipts, {} mJ",
            h.committed.receipts, h.committed.credited_mj
        ));
        if let Some(t) = &h.trusted {
            out.push(format!(
                "  countersigned by trusted submitters, not self-dealt: {} receipts, {} mJ ({} Wh)",
                t.receipts,
                t.credited_mj,
                t.credited_mj / MJ_PER_WH
            ));
        }
    }
    out
}

/// The same tally as one JSON object (`hearth receipts verify --json`; `docs/receipts.md`
/// gives its exact form, which `docs/verify_receipt.py --json` prints too): `receipts` and
/// `valid` count the export's receipts and those that passed; energies are integers in mJ
/// (they may exceed 2^53); `trusted` is `null` without a list.
pub fn json(
    households: &[HouseholdCredit],
    trusted: Option<&BTreeSet<PublicKey>>,
    receipts: usize,
    valid: usize,
) -> serde_json::Value {
    use serde_json::json;
    let tally = |t: &Tally| json!({ "receipts": t.receipts, "credited_mj": t.credited_mj });
    let households: Vec<serde_json::Value> = households
        .iter()
        .map(|h| {
            let by_submitter: Vec<serde_json::Value> = h
                .by_submitter
                .iter()
                .map(|(submitter, t)| {
                    json!({
                        "submitter": submitter.to_hex(),
                        "self_dealt": *submitter == h.household,
                        "trusted": trusted.is_some_and(|list| list.contains(submitter)),
                        "receipts": t.receipts,
                        "credited_mj": t.credited_mj,
                    })
                })
                .collect();
            json!({
                "household": h.household.to_hex(),
                "receipts": h.all.receipts,
                "credited_mj": h.all.credited_mj,
                "credited_wh": h.all.credited_mj / MJ_PER_WH,
                "claimed_mj": h.claimed_mj,
                "by_submitter": by_submitter,
                "committed": tally(&h.committed),
                "trusted": h.trusted.as_ref().map(tally),
            })
        })
        .collect();
    json!({
        "format": "hearth-credit/1",
        "receipts": receipts,
        "valid": valid,
        "households": households,
    })
}

/// Reads a list of trusted submitters: one household key (64 hex digits, either case) per
/// line; blank lines and lines starting with `#` are skipped, surrounding spaces ignored.
/// Anything else is an error naming its line, so a typo never silently trusts nobody.
pub fn parse_trusted(text: &str) -> Result<BTreeSet<PublicKey>, String> {
    let mut out = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ok = line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(format!(
                "line {}: {line:?} is not a household key (64 hex digits)",
                n + 1
            ));
        }
        out.insert(PublicKey::from_hex(&line.to_ascii_lowercase())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::tests::record;
    use crate::model::receipt::{Claim, CreditBasis, CreditTerms, WorkRecord};

    fn receipt(worker: &Identity, submitter: &Identity, shard: u32, credited: u64) -> Receipt {
        let record = WorkRecord {
            shard,
            energy_mj: credited + 5,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_001_000_000,
            nonce: [shard as u8; 16],
            ..record(worker, submitter)
        };
        let claim = Claim::sign(record, worker).unwrap();
        let mut terms = CreditTerms::claimed(&claim.record, 2, 2);
        terms.credited_mj = credited;
        terms.basis = CreditBasis::ReplicaReference;
        claim.countersign(submitter, terms).unwrap()
    }

    #[test]
    fn a_tally_splits_credit_by_submitter_and_names_self_dealing_and_trust() {
        let (home, other, lab, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let rs = vec![
            receipt(&home, &lab, 0, 7_200_000),
            receipt(&home, &lab, 1, 3_600_000),
            receipt(&home, &home, 2, 1_000_000_000),
            receipt(&home, &stranger, 3, 500),
            receipt(&other, &home, 4, 42),
        ];
        let committed: HashSet<_> = [rs[0].id(), rs[2].id()].into();
        // The household trusts itself too: its self-dealt receipt is still not trusted credit.
        let trusted: BTreeSet<_> = [lab.public(), home.public()].into();
        let t = tally(&rs, &committed, Some(&trusted));
        assert_eq!(t.len(), 2);
        let h = t.iter().find(|h| h.household == home.public()).unwrap();
        let sum = 7_200_000 + 3_600_000 + 1_000_000_000 + 500;
        assert_eq!(
            h.all,
            Tally {
                receipts: 4,
                credited_mj: sum
            }
        );
        assert_eq!(h.claimed_mj, sum + 4 * 5);
        assert_eq!(h.by_submitter[&lab.public()].credited_mj, 10_800_000);
        assert_eq!(h.by_submitter[&home.public()].receipts, 1);
        assert_eq!(h.committed.credited_mj, 1_007_200_000);
        assert_eq!(
            h.trusted,
            Some(Tally {
                receipts: 2,
                credited_mj: 10_800_000
            })
        );
        let text = lines(&t, Some(&trusted)).join("\n");
        assert!(
            text.contains(&format!(
                "countersigned by {} (self-dealt, trusted): 1 receipts, 1000000000 mJ",
                home.public().to_hex()
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "countersigned by trusted submitters, not self-dealt: 2 receipts, 10800000 mJ (3 Wh)"
            ),
            "{text}"
        );
        // Without a list there is no trusted line and no trusted mark.
        let plain = lines(&tally(&rs, &committed, None), None).join("\n");
        assert!(!plain.contains("trusted"), "{plain}");
    }

    #[test]
    fn a_list_of_trusted_submitters_is_read_strictly() {
        let k = Identity::generate().public().to_hex();
        let text = format!("# the lab\n\n  {}  \n{k}\n", k.to_ascii_uppercase());
        assert_eq!(parse_trusted(&text).unwrap().len(), 1);
        let err = parse_trusted(&format!("{k}\n{}\n", &k[1..])).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse_trusted(&format!("{k} lab\n")).is_err());
        assert!(parse_trusted("").unwrap().is_empty());
    }
}
