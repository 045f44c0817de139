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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::commit::Commitment;
use super::receipt::Receipt;
use super::revoke::{Revocation, Revocations};
use super::rotate::{ChainKey, KeyChains, KeyEvent, Logged};
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

/// What one submitter countersigned for a household.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BySubmitter {
    pub tally: Tally,
    /// The submitter is a key of the household's own chain.
    pub self_dealt: bool,
    /// A list of trusted submitters was given and names the submitter's household.
    pub trusted: bool,
}

/// What one worker household's receipts in an export credit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HouseholdCredit {
    /// The household's first key (`model::rotate`): every key of its chain credits it.
    pub household: PublicKey,
    /// Each key of the household's chain, first to current, with what its receipts credit.
    pub keys: Vec<(ChainKey, Tally)>,
    pub all: Tally,
    /// The sum of the workers' own claims (`energy_mj`) over the same receipts.
    pub claimed_mj: u128,
    pub by_submitter: BTreeMap<PublicKey, BySubmitter>,
    /// Receipts with a verified inclusion proof in the export.
    pub committed: Tally,
    /// Of those, the ones whose commitment an auditor's log holds (the same body under its
    /// coordinator and number, no other); `None` when no log was given.
    pub audited: Option<Tally>,
    /// Countersigned by a trusted submitter that is not the household itself; `None` when no
    /// list of trusted submitters was given.
    pub trusted: Option<Tally>,
}

/// Tallies `receipts` (those that passed verification: valid, and the first for their job,
/// shard and worker) per worker household, in key order, each key counted under its
/// household by `chains`. `committed` holds the ids of receipts whose inclusion proof
/// verified; `audited`, those of them in a commitment an auditor logged (when logs were
/// given); `trusted`, the submitters the reader trusts: a household listed by any key of its
/// chain is trusted under every one. A receipt is self-dealt when its submitter's household is
/// its worker's.
pub fn tally(
    receipts: &[Receipt],
    chains: &KeyChains,
    committed: &HashSet<blake3::Hash>,
    audited: Option<&HashSet<blake3::Hash>>,
    trusted: Option<&BTreeSet<PublicKey>>,
) -> Vec<HouseholdCredit> {
    let mut out: BTreeMap<PublicKey, HouseholdCredit> = BTreeMap::new();
    let trusts = |key: &PublicKey| {
        trusted.is_some_and(|list| {
            let household = chains.household_of(key);
            chains
                .keys_of(&household)
                .iter()
                .any(|k| list.contains(&k.key))
        })
    };
    for r in receipts {
        let (worker, submitter) = (r.record.worker, r.record.submitter);
        let household = chains.household_of(&worker);
        let h = out.entry(household).or_insert_with(|| HouseholdCredit {
            household,
            keys: chains
                .keys_of(&household)
                .into_iter()
                .map(|k| (k, Tally::default()))
                .collect(),
            all: Tally::default(),
            claimed_mj: 0,
            by_submitter: BTreeMap::new(),
            committed: Tally::default(),
            audited: audited.map(|_| Tally::default()),
            trusted: trusted.map(|_| Tally::default()),
        });
        h.all.add(r);
        if let Some((_, t)) = h.keys.iter_mut().find(|(k, _)| k.key == worker) {
            t.add(r);
        }
        h.claimed_mj += u128::from(r.record.energy_mj);
        let by = h
            .by_submitter
            .entry(submitter)
            .or_insert_with(|| BySubmitter {
                tally: Tally::default(),
                self_dealt: chains.household_of(&submitter) == household,
                trusted: trusts(&submitter),
            });
        by.tally.add(r);
        if committed.contains(&r.id()) {
            h.committed.add(r);
        }
        if let (Some(t), Some(set)) = (h.audited.as_mut(), audited) {
            if set.contains(&r.id()) {
                t.add(r);
            }
        }
        if let Some(t) = h.trusted.as_mut() {
            if chains.household_of(&submitter) != household && trusts(&submitter) {
                t.add(r);
            }
        }
    }
    out.into_values().collect()
}

/// The lines `hearth receipts verify` prints for a tally (`docs/receipts.md` gives their exact
/// form, which `docs/verify_receipt.py` prints too).
pub fn lines(households: &[HouseholdCredit]) -> Vec<String> {
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
        if h.keys.len() > 1 {
            for (k, t) in &h.keys {
                let retired = match k.retired_ms {
                    Some(at) => format!(" (retired at {at} ms)"),
                    None => " (current)".to_string(),
                };
                out.push(format!(
                    "  under key {}{retired}: {} receipts, {} mJ",
                    k.key.to_hex(),
                    t.receipts,
                    t.credited_mj
                ));
            }
        }
        for (submitter, by) in &h.by_submitter {
            let t = &by.tally;
            let mut marks = Vec::new();
            if by.self_dealt {
                marks.push("self-dealt");
            }
            if by.trusted {
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
        if let Some(t) = &h.audited {
            out.push(format!(
                "  in a commitment an auditor logged: {} receipts, {} mJ",
                t.receipts, t.credited_mj
            ));
        }
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
pub fn json(households: &[HouseholdCredit], receipts: usize, valid: usize) -> serde_json::Value {
    use serde_json::json;
    let tally = |t: &Tally| json!({ "receipts": t.receipts, "credited_mj": t.credited_mj });
    let households: Vec<serde_json::Value> = households
        .iter()
        .map(|h| {
            let by_submitter: Vec<serde_json::Value> = h
                .by_submitter
                .iter()
                .map(|(submitter, by)| {
                    json!({
                        "submitter": submitter.to_hex(),
                        "self_dealt": by.self_dealt,
                        "trusted": by.trusted,
                        "receipts": by.tally.receipts,
                        "credited_mj": by.tally.credited_mj,
                    })
                })
                .collect();
            let keys: Vec<serde_json::Value> = h
                .keys
                .iter()
                .map(|(k, t)| {
                    json!({
                        "key": k.key.to_hex(),
                        "retired_ms": k.retired_ms,
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
                "keys": keys,
                "by_submitter": by_submitter,
                "committed": tally(&h.committed),
                "audited": h.audited.as_ref().map(tally),
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

/// What auditors' logs say was published: for each (coordinator, number), the one commitment
/// logged, or `None` when the logs hold two different ones (an equivocation, in one log or
/// across two); and the revocation statements they heard. Read from `hearth audit KEY --json` answers (`GET /v1/audit/{coordinator}`).
#[derive(Debug, Default)]
pub struct AuditLogs {
    seen: HashMap<(PublicKey, u64), Option<blake3::Hash>>,
    /// The revocations the logs carry (`revocation`, one per log at most).
    revocations: Revocations,
    /// The key events the logs carry (`key_events`, both of each of `key_contests`).
    key_events: Vec<KeyEvent>,
    /// Per (household, number), the key event heard first, or `None` when logs disagree.
    first_key_events: Logged,
}

impl AuditLogs {
    /// Adds one log. Every commitment in it is checked as a ledger checks one: its signed
    /// bytes decode, the signature verifies (strictly) under the log's coordinator, and its
    /// `seq` and `id` fields are those bytes'. Anything else is an error naming the entry, so
    /// a log that was edited never counts anything.
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let log: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let coordinator = log["coordinator"]
            .as_str()
            .ok_or("no \"coordinator\"")
            .and_then(|h| PublicKey::from_hex(h).map_err(|_| "a bad \"coordinator\""))?;
        let mut read = |what: &str, i: usize, entry: &serde_json::Value| {
            let bad = |why: &str| format!("{what} {i}: {why}");
            let bytes = entry["signed"]
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| bad("no hex \"signed\""))?;
            let c = Commitment::from_bytes(&bytes).map_err(|e| bad(&e.to_string()))?;
            c.verify().map_err(|e| bad(&e.to_string()))?;
            if c.coordinator != coordinator {
                return Err(bad("signed by another coordinator than the log's"));
            }
            if entry["seq"].as_u64() != Some(c.seq)
                || entry["id"].as_str() != Some(c.id().to_hex().as_str())
            {
                return Err(bad("its seq or id is not its signed bytes'"));
            }
            let slot = self
                .seen
                .entry((c.coordinator, c.seq))
                .or_insert(Some(c.id()));
            if *slot != Some(c.id()) {
                *slot = None;
            }
            Ok(())
        };
        let list = |key: &str| match &log[key] {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::Array(a) => Ok(a.clone()),
            _ => Err(format!("\"{key}\" is not a list")),
        };
        for (i, entry) in list("commitments")?.iter().enumerate() {
            read("commitment", i, entry)?;
        }
        if !log["revocation"].is_null() {
            let r = Revocation::from_json(&log["revocation"])
                .map_err(|e| format!("revocation: {e}"))?;
            if r.key != coordinator {
                return Err("revocation: of another key than the log's coordinator".into());
            }
            self.revocations.add(&r);
        }
        for (i, e) in list("equivocations")?.iter().enumerate() {
            read("equivocation (first)", i, &e["first"])?;
            read("equivocation (second)", i, &e["second"])?;
        }
        // Key events (docs/receipts.md, "Rotating a key"): the log names the household by
        // its first key, the log's `coordinator`; each event is the first this auditor heard
        // under its number, and a contest adds the later one.
        let event = |what: &str, i: usize, v: &serde_json::Value| {
            let e = KeyEvent::from_json(v).map_err(|e| format!("{what} {i}: {e}"))?;
            if e.household != coordinator {
                return Err(format!("{what} {i}: of another household than the log's"));
            }
            Ok(e)
        };
        let mut firsts = Vec::new();
        for (i, v) in list("key_events")?.iter().enumerate() {
            firsts.push(event("key event", i, v)?);
        }
        for (i, c) in list("key_contests")?.iter().enumerate() {
            let first = event("key contest (first)", i, &c["first"])?;
            let second = event("key contest (second)", i, &c["second"])?;
            if first.seq != second.seq || first == second {
                return Err(format!("key contest {i}: not two events under one number"));
            }
            self.key_events.push(second);
            firsts.push(first);
        }
        for e in firsts {
            let slot = self
                .first_key_events
                .entry((e.household, e.seq))
                .or_insert_with(|| Some(e.clone()));
            if slot.as_ref() != Some(&e) {
                *slot = None;
            }
            self.key_events.push(e);
        }
        Ok(())
    }

    /// Every household's key chain from `given` events (`--keys`) and the logs' events, where
    /// the logs agree on which came first taking only that one.
    pub fn chains(&self, given: &[KeyEvent]) -> KeyChains {
        let mut all = given.to_vec();
        all.extend(self.key_events.iter().cloned());
        KeyChains::build_logged(&all, &self.first_key_events)
    }

    /// The revocation statements the logs carry, the smallest `keep` per key.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Whether the logs hold `c` under its coordinator and number, and no other.
    pub fn logged(&self, c: &Commitment) -> bool {
        self.seen.get(&(c.coordinator, c.seq)) == Some(&Some(c.id()))
    }
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
        let none = KeyChains::default();
        let t = tally(&rs, &none, &committed, None, Some(&trusted));
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
        assert_eq!(h.by_submitter[&lab.public()].tally.credited_mj, 10_800_000);
        assert_eq!(h.by_submitter[&home.public()].tally.receipts, 1);
        assert_eq!(h.committed.credited_mj, 1_007_200_000);
        assert_eq!(
            h.trusted,
            Some(Tally {
                receipts: 2,
                credited_mj: 10_800_000
            })
        );
        let text = lines(&t).join("\n");
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
        let plain = lines(&tally(&rs, &none, &committed, None, None)).join("\n");
        assert!(!plain.contains("trusted"), "{plain}");
        assert!(!plain.contains("under key"), "{plain}");
    }

    /// A household that rotated its key (`model::rotate`) is one household: receipts under
    /// both keys credit it, each key's share is printed, its own jobs under either key are
    /// self-dealt, and a submitter trusted by its first key is trusted under the next.
    #[test]
    fn a_rotated_households_keys_are_tallied_as_one() {
        use crate::model::rotate::KeyEvent;
        let (old, new, next, lab, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (labs_old, labs_new) = (Identity::generate(), Identity::generate());
        let h = old.public();
        let chains = KeyChains::build(&[
            KeyEvent::sign(h, 0, &old, &new.public(), 1),
            KeyEvent::sign(h, 1, &new, &next.public(), 1_800_000_000_000),
            KeyEvent::sign(labs_old.public(), 0, &labs_old, &labs_new.public(), 1),
            KeyEvent::sign(labs_old.public(), 1, &labs_new, &lab.public(), 2),
        ]);
        let rs = vec![
            receipt(&old, &other, 0, 1_000),
            receipt(&new, &other, 1, 2_000),
            receipt(&new, &old, 2, 4_000),
            receipt(&old, &labs_new, 3, 8_000),
        ];
        let trusted: BTreeSet<_> = [labs_old.public()].into();
        let t = tally(&rs, &chains, &HashSet::new(), None, Some(&trusted));
        assert_eq!(t.len(), 1, "{t:?}");
        let hh = &t[0];
        assert_eq!(hh.household, h);
        assert_eq!(hh.all.credited_mj, 15_000);
        assert_eq!(hh.keys[0].1.credited_mj, 9_000);
        assert_eq!(hh.keys[1].1.credited_mj, 6_000);
        assert!(hh.by_submitter[&old.public()].self_dealt);
        assert!(hh.by_submitter[&labs_new.public()].trusted);
        assert_eq!(hh.trusted.map(|t| t.credited_mj), Some(8_000));
        let text = lines(&t).join("\n");
        assert!(
            text.contains(&format!(
                "  under key {} (retired at 1800000000000 ms): 2 receipts, 9000 mJ",
                h.to_hex()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  under key {} (current): 2 receipts, 6000 mJ",
                new.public().to_hex()
            )),
            "{text}"
        );
        let j = json(&t, 4, 4);
        assert_eq!(
            j["households"][0]["keys"][0]["retired_ms"],
            1_800_000_000_000u64
        );
        assert!(j["households"][0]["keys"][1]["retired_ms"].is_null());
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

    /// An auditor's log counts a commitment only when its signed bytes check and no log given
    /// holds another body under its number; an edited log is refused, naming the entry.
    #[test]
    fn auditors_logs_count_a_commitment_only_as_signed_and_unequivocated() {
        let lab = Identity::from_seed([7; 32]);
        let seal = |seq: u64, what: &[u8]| {
            Commitment::seal(&lab, seq, &[blake3::hash(what)], 1, 2)
                .unwrap()
                .0
        };
        let entry = |c: &Commitment| {
            serde_json::json!({
                "seq": c.seq, "id": c.id().to_hex().to_string(),
                "signed": hex::encode(c.to_bytes()), "first_seen_ms": 3,
            })
        };
        let log = |commitments: Vec<serde_json::Value>, equivocations: Vec<serde_json::Value>| {
            serde_json::json!({
                "coordinator": lab.public().to_hex(),
                "commitments": commitments, "equivocations": equivocations, "next": null,
            })
            .to_string()
        };
        let (c0, c1, c1b, c2, c2b) = (
            seal(0, b"a"),
            seal(1, b"b"),
            seal(1, b"minted"),
            seal(2, b"c"),
            seal(2, b"swapped"),
        );
        let mut logs = AuditLogs::default();
        logs.add(&log(vec![entry(&c0), entry(&c1)], vec![]))
            .unwrap();
        assert!(logs.logged(&c0) && logs.logged(&c1) && !logs.logged(&c1b));
        // A second log that disagrees on #1: neither body counts any more.
        logs.add(&log(vec![entry(&c1b)], vec![])).unwrap();
        assert!(logs.logged(&c0) && !logs.logged(&c1) && !logs.logged(&c1b));
        // An equivocation the auditor kept: neither body of #2 counts.
        let proof = serde_json::json!({"seq": 2, "first": entry(&c2), "second": entry(&c2b)});
        logs.add(&log(vec![entry(&c2)], vec![proof])).unwrap();
        assert!(!logs.logged(&c2) && !logs.logged(&c2b));
        // A log may carry its coordinator's revocation: it applies, the smallest keep standing
        // across logs; one of another key, or edited, refuses the log.
        let revoked = |keep: u64| {
            let mut l: serde_json::Value =
                serde_json::from_str(&log(vec![entry(&c0)], vec![])).unwrap();
            l["revocation"] = Revocation::sign(&lab, keep, 9).to_json();
            l
        };
        logs.add(&revoked(4).to_string()).unwrap();
        logs.add(&revoked(1).to_string()).unwrap();
        assert!(logs.revocations().check(&lab.public(), Some(0)).is_ok());
        assert!(logs.revocations().check(&lab.public(), Some(1)).is_err());
        let mut theirs = revoked(0);
        theirs["revocation"] = Revocation::sign(&Identity::from_seed([8; 32]), 0, 9).to_json();
        let err = AuditLogs::default().add(&theirs.to_string()).unwrap_err();
        assert!(err.contains("another key"), "{err}");
        let mut edited = revoked(0);
        edited["revocation"]["keep"] = 3.into();
        let err = AuditLogs::default().add(&edited.to_string()).unwrap_err();
        assert!(err.starts_with("revocation:"), "{err}");
        // Edited logs are refused whole, saying where.
        let mut moved = entry(&c0);
        moved["seq"] = 5.into();
        let mut flipped = entry(&c0);
        let mut bytes = c0.to_bytes();
        bytes[60] ^= 1;
        flipped["signed"] = hex::encode(bytes).into();
        let other = Identity::from_seed([8; 32]);
        let foreign = Commitment::seal(&other, 0, &[blake3::hash(b"x")], 1, 2)
            .unwrap()
            .0;
        for (bad, says) in [
            (log(vec![moved], vec![]), "seq or id"),
            (log(vec![flipped], vec![]), "commitment 0"),
            (log(vec![entry(&foreign)], vec![]), "another coordinator"),
            ("[]".to_string(), "coordinator"),
            (
                serde_json::json!({"coordinator": lab.public().to_hex(), "commitments": "x"})
                    .to_string(),
                "not a list",
            ),
        ] {
            let err = AuditLogs::default().add(&bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
