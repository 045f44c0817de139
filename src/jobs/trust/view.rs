//! What a household can see of where it stands here (`hearth trust`, `GET /v1/trust`): its
//! record with this node's coordinator, its standing and why, its exclusion by this node's
//! own vote (with both signed claims), and every piece of fraud evidence heard against it,
//! with how this node's re-run judged it. Read straight from sled; the sentences are made by
//! the pure [`why`]. Must not touch: decisions.
//!
//! Layering: this file and `service.rs` sit above the coordinator (they read its trees and
//! use its handle); the rest of `trust` sits below it (the coordinator imports the policy,
//! reputation and evidence trees). No two files import each other.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::jobs::coordinator::persist::Persist;
use crate::jobs::JobError;

use super::evidence::{Check, EvidenceStore};
use super::store::TrustStore;
use super::{Record, Standing, TrustConfig};

/// Records and this coordinator's own exclusions, read once per request.
struct Loaded {
    reputation: super::Reputation,
    excluded: std::collections::HashMap<PublicKey, String>,
}

/// One household as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HouseholdTrust {
    pub household: String,
    /// `excluded`, `established` or `probation`.
    pub standing: String,
    /// Why, in words.
    pub why: String,
    /// This node's own household, or listed in `[trust] trusted`.
    pub trusted: bool,
    /// Its record with this node's coordinator; `None`: never had a claim accepted here.
    pub record: Option<RecordView>,
    /// The key its household rotated from, whose record counts for this one here (its
    /// standing is decided by both records together; docs/trust.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried_from: Option<String>,
    /// Excluded by this node's own vote: the evidence kept (JSON: job, shard, both claims).
    pub excluded_by_vote: Option<serde_json::Value>,
    /// Fraud evidence heard against it from other coordinators, and how each re-run went.
    pub evidence: Vec<EvidenceView>,
    /// Evidence it signed as a coordinator was refuted by a re-run here: its evidence is
    /// ignored.
    pub false_accuser: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordView {
    pub verified: u32,
    pub wrong: u32,
    pub disputed: u32,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// One piece of evidence against a household, and its check here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvidenceView {
    /// The coordinator that accused it (and signed the evidence).
    pub coordinator: String,
    pub job: String,
    pub shard: u32,
    /// What the accused claimed, and what the winner claimed (the decided outcome).
    pub accused_output: String,
    pub accused_fuel: u64,
    pub winner: String,
    pub winning_output: String,
    pub winning_fuel: u64,
    pub heard_ms: u64,
    /// `pending`, `confirmed`, `refuted`, `inconclusive` or `unchecked`.
    pub status: String,
    pub detail: Option<String>,
    /// The household whose node re-ran the shard: this node's.
    pub checked_by: Option<String>,
    pub checked_ms: Option<u64>,
}

/// Reads trust state for the API. Cheap to clone.
#[derive(Clone)]
pub struct TrustView {
    own: PublicKey,
    config: TrustConfig,
    reputation: TrustStore,
    evidence: EvidenceStore,
    persist: Persist,
}

impl TrustView {
    pub fn new(db: &sled::Db, own: PublicKey, config: TrustConfig) -> Result<TrustView, JobError> {
        Ok(TrustView {
            own,
            config,
            reputation: TrustStore::open(db)?,
            evidence: EvidenceStore::open(db)?,
            persist: Persist::open(db)?,
        })
    }

    /// How the worker of receipt `id` is tied to this node, if this node marked it when it
    /// countersigned it (`related.rs`).
    pub fn related(&self, id: &blake3::Hash) -> Result<Option<super::related::Relation>, JobError> {
        self.reputation.related(id)
    }

    /// The answer to a peer's `Request::Evidence`: a page of the evidence this node re-ran
    /// and confirmed (`EvidenceStore::confirmed_after`).
    pub fn evidence_answer(&self, after: Option<&[u8; 68]>) -> crate::model::wire::Response {
        use crate::model::wire::{Response, MAX_EVIDENCE_PER_ANSWER};
        match self
            .evidence
            .confirmed_after(after, MAX_EVIDENCE_PER_ANSWER)
        {
            Ok((evidence, more)) => Response::Evidence { evidence, more },
            Err(e) => {
                tracing::error!("cannot read fraud evidence for a peer: {e}");
                Response::Error {
                    detail: "this node cannot read its evidence now".into(),
                }
            }
        }
    }

    /// Every receipt this node marked, by id (hex).
    pub fn all_related(
        &self,
    ) -> Result<std::collections::BTreeMap<String, super::related::Relation>, JobError> {
        Ok(self
            .reputation
            .all_related()?
            .into_iter()
            .map(|(id, r)| (id.to_hex().to_string(), r))
            .collect())
    }

    /// Every household this node has a record, an exclusion or evidence about, and the
    /// trusted ones, sorted by key.
    pub fn all(&self) -> Result<Vec<HouseholdTrust>, JobError> {
        let mut keys: Vec<PublicKey> = self
            .reputation
            .load()?
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        keys.extend(
            self.persist
                .excluded_evidence()?
                .into_iter()
                .map(|(h, _)| h),
        );
        keys.extend(
            self.evidence
                .entries(None)?
                .iter()
                .filter_map(|(_, e)| Some(e.evidence().ok()?.accused())),
        );
        keys.extend(self.evidence.false_accusers()?);
        keys.push(self.own);
        keys.extend(
            self.config
                .trusted
                .iter()
                .take(256)
                .filter_map(|k| PublicKey::from_hex(k).ok()),
        );
        keys.sort();
        keys.dedup();
        let loaded = self.load()?;
        keys.iter().map(|h| self.describe(&loaded, h)).collect()
    }

    /// One household (known or not).
    pub fn household(&self, household: &PublicKey) -> Result<HouseholdTrust, JobError> {
        self.describe(&self.load()?, household)
    }

    /// What every description needs, read once.
    fn load(&self) -> Result<Loaded, JobError> {
        Ok(Loaded {
            reputation: self.config.reputation(
                self.own,
                self.reputation.load()?,
                self.reputation.load_carried()?,
            ),
            excluded: self.persist.excluded_evidence()?.into_iter().collect(),
        })
    }

    fn describe(&self, loaded: &Loaded, household: &PublicKey) -> Result<HouseholdTrust, JobError> {
        let reputation = &loaded.reputation;
        let record = reputation.record(household).copied();
        let carried_from = reputation.carried_from(household);
        let trusted = reputation.is_trusted(household);
        let standing = reputation.standing(household);
        let excluded_by_vote = loaded.excluded.get(household).map(|json| {
            serde_json::from_str(json).unwrap_or_else(|_| serde_json::Value::String(json.clone()))
        });
        let mut evidence = Vec::new();
        for (_, entry) in self.evidence.entries(Some(household))? {
            let e = entry.evidence()?;
            let (status, detail) = match &entry.check {
                Check::Pending => ("pending", None),
                Check::Confirmed => ("confirmed", None),
                Check::Refuted => ("refuted", None),
                Check::Inconclusive(d) => ("inconclusive", Some(d.clone())),
                Check::Unchecked(d) => ("unchecked", Some(d.clone())),
            };
            evidence.push(EvidenceView {
                coordinator: e.coordinator.to_hex(),
                job: e.job.to_hex().to_string(),
                shard: e.shard,
                accused_output: e.losing.record.output.to_hex().to_string(),
                accused_fuel: e.losing.record.fuel,
                winner: e.winning.record.worker.to_hex(),
                winning_output: e.output.to_hex().to_string(),
                winning_fuel: e.fuel,
                heard_ms: entry.heard_ms,
                status: status.into(),
                detail,
                checked_by: entry.checked_ms.map(|_| self.own.to_hex()),
                checked_ms: entry.checked_ms,
            });
        }
        let false_accuser = self.evidence.is_false_accuser(household)?;
        let facts = Facts {
            own: *household == self.own,
            trusted,
            standing,
            record: reputation.combined(household),
            carried_from: carried_from.map(|k| k.to_hex()),
            excluded_by_vote: excluded_by_vote.is_some(),
            confirmed: evidence
                .iter()
                .find(|e| e.status == "confirmed")
                .map(|e| e.coordinator.clone()),
            rules: self.config.rules,
        };
        let excluded = facts.excluded_by_vote || facts.confirmed.is_some();
        Ok(HouseholdTrust {
            household: household.to_hex(),
            standing: if excluded {
                "excluded"
            } else {
                match standing {
                    Standing::Established => "established",
                    Standing::Probation => "probation",
                }
            }
            .into(),
            why: why(&facts),
            trusted,
            record: record.map(|r| RecordView {
                verified: r.verified,
                wrong: r.wrong,
                disputed: r.disputed,
                first_seen_ms: r.first_seen_ms,
                last_seen_ms: r.last_seen_ms,
            }),
            carried_from: carried_from.map(|k| k.to_hex()),
            excluded_by_vote,
            evidence,
            false_accuser,
        })
    }
}

/// What the sentence is made from.
#[derive(Clone)]
pub struct Facts {
    pub own: bool,
    pub trusted: bool,
    pub standing: Standing,
    /// Its record with the records of the keys it rotated from added
    /// (`Reputation::combined`).
    pub record: Option<Record>,
    /// The key it rotated from, whose record counts here.
    pub carried_from: Option<String>,
    pub excluded_by_vote: bool,
    /// The coordinator whose evidence a re-run here confirmed.
    pub confirmed: Option<String>,
    pub rules: super::Rules,
}

/// Why a household stands where it does, in words.
pub fn why(f: &Facts) -> String {
    if f.excluded_by_vote {
        return "excluded: a claim of this household lost a replica vote on a job of this node that an established household won (both signed claims are kept)".into();
    }
    if let Some(c) = &f.confirmed {
        return format!("excluded: coordinator {c} gossiped evidence that a claim of this household lost a vote; this node re-ran the shard and the result agrees with the winner, not with this household");
    }
    if f.own {
        return "established: this node's own household".into();
    }
    if f.trusted {
        return "established: listed in [trust] trusted".into();
    }
    let Some(r) = f.record else {
        return "probation: no claim of this household was ever accepted here".into();
    };
    let known_ms = r.last_seen_ms.saturating_sub(r.first_seen_ms);
    let carried = match &f.carried_from {
        Some(old) => {
            format!(" (with its record under key {old}, which its household rotated from)")
        }
        None => String::new(),
    };
    let standing = match f.standing {
        Standing::Established => format!(
            "established: {} verified results, none wrong, over {} h",
            r.verified,
            known_ms / 3_600_000
        ),
        Standing::Probation if r.wrong > 0 => format!(
            "probation: {} wrong result(s) here; a household with a wrong result is never established",
            r.wrong
        ),
        Standing::Probation => format!(
            "probation: {} of {} verified results, known for {} of {} h{}",
            r.verified.min(f.rules.established_after),
            f.rules.established_after,
            known_ms / 3_600_000,
            f.rules.established_age_ms / 3_600_000,
            if r.disputed > 0 {
                format!("; {} vote(s) lost among households on probation (not counted as lies)", r.disputed)
            } else {
                String::new()
            }
        ),
    };
    standing + &carried
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_standing_says_why() {
        let rules = super::super::Rules::default();
        let base = Facts {
            own: false,
            trusted: false,
            standing: Standing::Probation,
            record: None,
            carried_from: None,
            excluded_by_vote: false,
            confirmed: None,
            rules,
        };
        assert!(why(&base).starts_with("probation: no claim"));
        let r = Record {
            verified: 3,
            disputed: 1,
            first_seen_ms: 0,
            last_seen_ms: 7_200_000,
            ..Record::default()
        };
        let s = why(&Facts {
            record: Some(r),
            ..base.clone()
        });
        assert!(
            s.contains("3 of 20 verified")
                && s.contains("2 of 24 h")
                && s.contains("1 vote(s) lost"),
            "{s}"
        );
        let s = why(&Facts {
            record: Some(Record { wrong: 1, ..r }),
            ..base.clone()
        });
        assert!(s.contains("1 wrong result"), "{s}");
        let s = why(&Facts {
            record: Some(r),
            carried_from: Some("ab12".into()),
            ..base.clone()
        });
        assert!(
            s.ends_with("(with its record under key ab12, which its household rotated from)"),
            "{s}"
        );
        let s = why(&Facts {
            confirmed: Some("abc".into()),
            ..base.clone()
        });
        assert!(s.starts_with("excluded: coordinator abc"), "{s}");
        assert!(why(&Facts {
            excluded_by_vote: true,
            ..base.clone()
        })
        .starts_with("excluded: a claim"));
        assert!(why(&Facts {
            trusted: true,
            standing: Standing::Established,
            ..base.clone()
        })
        .contains("[trust] trusted"));
    }
}
