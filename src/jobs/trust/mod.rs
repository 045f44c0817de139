//! Trust between households, as one coordinator sees them: reputation, probation and each
//! job's replication policy. Pure: time and the spot-check key come in as arguments; nothing
//! here reads a clock, draws randomness or touches a disk. `store.rs` keeps the reputation
//! in sled; the book ([`crate::jobs::coordinator::book`]) takes it as input and decides.
//!
//! - **Reputation** ([`Record`]): per household, results verified, results proven wrong
//!   (lost to a vote that an established household won), votes lost with nobody established
//!   in them (`disputed`), and when it was first and last seen.
//! - **Standing**: a household is *established* once it has `established_after` verified
//!   results, none wrong, over at least `established_age_ms`; until then it is on
//!   *probation*. Households the submitter trusts (its own) are established from the start.
//!   A household that rotated its key is judged by its records under every key it rotated
//!   through, when the coordinator carried them ([`Reputation::carry`],
//!   `coordinator/book/rotated.rs`).
//! - **Policy** ([`Policy`]): how many agreeing replicas a shard needs when an established
//!   household ran it, how many when only households on probation did, the spot-check rate,
//!   and how far replication may rise when rooms want more heat than there is work.
//!
//! Must not touch (this file): I/O, clocks, randomness.
//!
//! Around it: `store.rs` (reputation in sled), `evidence.rs` (fraud evidence heard from
//! other coordinators, its rate limits and trees), `recheck.rs` (re-running the shard a piece
//! of evidence is about), `service.rs` (the actor that judges gossiped evidence and excludes
//! only on a confirming re-run), `view.rs` (what `hearth trust` shows).

pub mod evidence;
pub mod recheck;
pub mod related;
pub mod service;
pub mod store;
pub mod view;

#[cfg(feature = "testing")]
pub mod sim;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;

/// What it takes to leave probation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Verified results (each agreed by at least two households, or by an established one)
    /// a household needs before it is established. Default 20.
    pub established_after: u32,
    /// How long a household must have been known, ms, before it is established. Default one
    /// day: a fresh identity cannot buy trust with a burst of work.
    pub established_age_ms: u64,
    /// How long before a household's rotation (its key event #n) this node must have heard
    /// the event that fixed the new key (#n−1), ms, for the record under the old key to count
    /// for the new one. Default 7 days: a thief who stole a key whose household never
    /// published its log can sign an event #0 of its own, and must then leave it heard and
    /// uncontested that long (the household's node warns when it hears an event of its
    /// household that it did not sign; `hearth key prerotate` then contests it) before a
    /// rotation to its own key takes the household's standing. A contest heard later takes
    /// the standing back.
    pub carry_after_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            established_after: 20,
            established_age_ms: 24 * 3600 * 1000,
            carry_after_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl Rules {
    /// Whether a rotation whose new key was fixed `gap_ms` before the rotation was heard here
    /// carries the old key's record (see [`Rules::carry_after_ms`]).
    pub fn carries(&self, gap_ms: u64) -> bool {
        gap_ms >= self.carry_after_ms
    }
}

/// Longest chain of carried records [`Reputation::standing`] follows: a household writes one
/// link per rotation, and every link comes from an event this node checked (`node::key_log`);
/// past it older records are not added.
pub const MAX_CARRIED: usize = 16;

/// One household's record at one coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Claims that agreed with a verified shard's decided output and fuel.
    pub verified: u32,
    /// Claims that lost a vote won by a group holding an established household.
    pub wrong: u32,
    /// Claims that lost a vote no established household took part in: not proof (a
    /// colluding majority could have won it), so never a reason for exclusion by itself.
    pub disputed: u32,
    /// When its first claim was accepted, ms.
    pub first_seen_ms: u64,
    /// When its latest claim was accepted, ms.
    pub last_seen_ms: u64,
}

/// Where a household stands with a coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// New, or not yet enough verified results: never verifies a shard alone.
    Probation,
    /// Enough verified results, none wrong, over long enough; or trusted by the submitter.
    Established,
}

/// Every household's record, and the households the submitter trusts outright.
#[derive(Clone, Debug, Default)]
pub struct Reputation {
    pub rules: Rules,
    records: HashMap<PublicKey, Record>,
    /// The submitter's own trusted set (its own household at least): established from the
    /// start. Bounded by configuration, not by peers.
    trusted: HashSet<PublicKey>,
    /// A household's new key → the key it rotated from, whose record counts for the new one
    /// ([`Rules::carries`]). One entry per rotation heard and checked here: bounded by the
    /// node's key book (`node::key_log::MAX_HEARD`).
    carried: HashMap<PublicKey, PublicKey>,
}

impl Reputation {
    pub fn new(rules: Rules) -> Reputation {
        Reputation {
            rules,
            ..Reputation::default()
        }
    }

    /// Adds a household the submitter trusts outright (its own, or one it names).
    pub fn trust(&mut self, household: PublicKey) {
        self.trusted.insert(household);
    }

    pub fn is_trusted(&self, household: &PublicKey) -> bool {
        self.trusted.contains(household)
    }

    pub fn record(&self, household: &PublicKey) -> Option<&Record> {
        self.records.get(household)
    }

    pub fn records(&self) -> impl Iterator<Item = (&PublicKey, &Record)> {
        self.records.iter()
    }

    /// Sets a record (loaded from disk, or an applied update). One record per household
    /// that ever had a claim accepted: bounded by the leases this coordinator granted.
    pub fn insert(&mut self, household: PublicKey, record: Record) {
        self.records.insert(household, record);
    }

    /// Counts `old`'s record for `new` from now on: `new`'s household rotated to it from
    /// `old`.
    pub fn carry(&mut self, new: PublicKey, old: PublicKey) {
        if new != old {
            self.carried.insert(new, old);
        }
    }

    /// Stops counting any other key's record for `key`. Whether it counted one.
    pub fn uncarry(&mut self, key: &PublicKey) -> bool {
        self.carried.remove(key).is_some()
    }

    /// The key whose record counts for `key`, if any.
    pub fn carried_from(&self, key: &PublicKey) -> Option<PublicKey> {
        self.carried.get(key).copied()
    }

    /// The record that decides `household`'s standing: its own, with the records of the keys
    /// it rotated from (at most [`MAX_CARRIED`] of them) added: results summed, first seen
    /// the earliest, last seen the latest. `None`: no record under any of them.
    pub fn combined(&self, household: &PublicKey) -> Option<Record> {
        let mut out: Option<Record> = None;
        let mut key = *household;
        let mut seen = HashSet::new();
        for _ in 0..=MAX_CARRIED {
            if !seen.insert(key) {
                break;
            }
            if let Some(r) = self.records.get(&key) {
                out = Some(match out {
                    None => *r,
                    Some(o) => Record {
                        verified: o.verified.saturating_add(r.verified),
                        wrong: o.wrong.saturating_add(r.wrong),
                        disputed: o.disputed.saturating_add(r.disputed),
                        first_seen_ms: o.first_seen_ms.min(r.first_seen_ms),
                        last_seen_ms: o.last_seen_ms.max(r.last_seen_ms),
                    },
                });
            }
            match self.carried.get(&key) {
                Some(old) => key = *old,
                None => break,
            }
        }
        out
    }

    pub fn standing(&self, household: &PublicKey) -> Standing {
        if self.trusted.contains(household) {
            return Standing::Established;
        }
        match self.combined(household) {
            Some(r)
                if r.wrong == 0
                    && r.verified >= self.rules.established_after
                    && r.last_seen_ms.saturating_sub(r.first_seen_ms)
                        >= self.rules.established_age_ms =>
            {
                Standing::Established
            }
            _ => Standing::Probation,
        }
    }

    pub fn established(&self, household: &PublicKey) -> bool {
        self.standing(household) == Standing::Established
    }
}

/// Most households a job's allow-list may name. A submitter names the households it knows
/// (its neighbours, its own radiators), not a network; the list is kept with the job in
/// `coord/policies`, in memory for the job's life, and scanned on every lease request, so it
/// stays small: 256 keys are 16 KiB of hex per job and a scan far cheaper than the lease's
/// sled write. The same bound as `[trust] allow`.
pub const MAX_ALLOW: usize = 256;

/// A job's replication policy. Bounds: every count is clamped to `1..=MAX_REPLICAS` where
/// it is used, the rate to 0..=1000 ‰, and the allow-list to [`MAX_ALLOW`] households.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Agreeing replicas a shard needs when an established household's claim is among them
    /// (before a spot check). 1 lets a trusted result stand alone.
    pub min_replicas: u8,
    /// The most replicas handed out for a shard when radiators want more heat than there is
    /// work: redundant work still heats a home.
    pub max_replicas: u8,
    /// Share of trusted shards, ‰, re-run elsewhere as a spot check.
    pub spot_check_permille: u16,
    /// New identities never verify a shard alone, and a shard's last replica is kept for an
    /// established household while one is asking for work.
    pub probation: bool,
    /// At least one agreeing replica must come from the submitter's own trusted set (its
    /// household and `[trust] trusted`); the last replica a shard needs is kept for one.
    pub own_replica: bool,
    /// If not empty, only these households (and the submitter's own trusted set) get leases
    /// on the job; it replaces `[trust] allow` for this job. Hex keys in JSON; at most
    /// [`MAX_ALLOW`]. Empty (the default, and every policy stored before it existed): anyone
    /// `[trust] allow` lets in.
    #[serde(with = "hex_keys", skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<PublicKey>,
}

/// Household keys as a JSON list of lowercase hex strings; a bad entry is refused with its
/// position and why.
mod hex_keys {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use crate::identity::PublicKey;

    pub fn serialize<S: Serializer>(keys: &[PublicKey], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(|k| k.to_hex()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PublicKey>, D::Error> {
        let hex: Vec<String> = Vec::deserialize(d)?;
        super::parse_keys(hex.iter().map(String::as_str)).map_err(D::Error::custom)
    }
}

/// Parses household keys (hex), refusing the list if any entry is not a key or if there are
/// more than [`MAX_ALLOW`]: a submitter who mistyped one key would otherwise shut out the
/// household it meant, silently.
pub fn parse_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Vec<PublicKey>, String> {
    let mut out = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        if i >= MAX_ALLOW {
            return Err(format!(
                "an allow-list names at most {MAX_ALLOW} households"
            ));
        }
        let key = PublicKey::from_hex(k)
            .map_err(|e| format!("allow-list entry {} (`{}`): {e}", i + 1, k.trim()))?;
        if !out.contains(&key) {
            out.push(key);
        }
    }
    Ok(out)
}

impl Default for Policy {
    /// The adaptive default: a trusted result may stand alone, one in ten is spot-checked,
    /// unknown households get full replication, and up to 3 replicas when heat is wanted.
    fn default() -> Self {
        Policy {
            min_replicas: 1,
            max_replicas: 3,
            spot_check_permille: 100,
            probation: true,
            own_replica: false,
            allow: Vec::new(),
        }
    }
}

impl Policy {
    /// Refuses a policy a submitter asked for that makes no sense: replicas outside
    /// 1..=16 (`MAX_REPLICAS`), `max_replicas` below `min_replicas`, a rate above 1000 ‰.
    pub fn validate(&self) -> Result<(), String> {
        let most = crate::jobs::coordinator::book::MAX_REPLICAS;
        for (name, v) in [
            ("min_replicas", self.min_replicas),
            ("max_replicas", self.max_replicas),
        ] {
            if v == 0 || usize::from(v) > most {
                return Err(format!("{name} is {v}; it must be 1 to {most}"));
            }
        }
        if self.max_replicas < self.min_replicas {
            return Err(format!(
                "max_replicas ({}) is below min_replicas ({})",
                self.max_replicas, self.min_replicas
            ));
        }
        if self.spot_check_permille > 1000 {
            return Err(format!(
                "spot_check_permille is {}; it is a share in thousandths, at most 1000",
                self.spot_check_permille
            ));
        }
        if self.allow.len() > MAX_ALLOW {
            return Err(format!(
                "the allow-list names {} households; at most {MAX_ALLOW}",
                self.allow.len()
            ));
        }
        Ok(())
    }

    /// Whether the job's own allow-list lets `household` in (an empty list lets anyone in;
    /// the submitter's trusted set is checked by the caller).
    pub fn allows(&self, household: &PublicKey) -> bool {
        self.allow.is_empty() || self.allow.contains(household)
    }

    /// Plain replication: `replication` agreeing replicas for every shard, whoever ran it.
    pub fn fixed(replication: u8) -> Policy {
        Policy {
            min_replicas: replication,
            max_replicas: replication,
            spot_check_permille: 0,
            probation: false,
            own_replica: false,
            allow: Vec::new(),
        }
    }

    /// Agreeing replicas needed when nobody established ran the shard: the job's replication
    /// (full replication), and never fewer than 2 on probation.
    pub fn untrusted_quorum(&self, replication: u8) -> usize {
        let q = usize::from(replication.max(1));
        if self.probation {
            q.max(2)
        } else {
            q
        }
    }

    /// Agreeing replicas needed when an established household's claim is in the winning
    /// group: `min_replicas` (never above the job's replication), or 2 when the shard was
    /// drawn for a spot check.
    pub fn trusted_quorum(&self, replication: u8, spot_checked: bool) -> usize {
        let q = usize::from(self.min_replicas.clamp(1, replication.max(1)));
        if spot_checked {
            q.max(2)
        } else {
            q
        }
    }
}

/// `[trust]` in the configuration: how this node, as a coordinator, judges households.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Adaptive replication for the jobs this node submits (`policy`); off: every shard gets
    /// the job's full replication, whoever runs it. Default off.
    pub adaptive: bool,
    /// The policy when `adaptive` is on.
    pub policy: Policy,
    /// What it takes to leave probation.
    pub rules: Rules,
    /// Households (hex keys) trusted outright, besides this node's own: established from
    /// the start. At most 256 are read.
    pub trusted: Vec<String>,
    /// If not empty, only these households (hex keys; at most 256 read) get leases on the
    /// jobs this node submits.
    pub allow: Vec<String>,
}

impl TrustConfig {
    /// The policy of jobs submitted without one; `None`: plain replication.
    pub fn policy(&self) -> Option<Policy> {
        self.adaptive.then(|| self.policy.clone())
    }

    /// The allow-list of the jobs this node submits; `None`: anyone.
    pub fn allowed(&self) -> Option<HashSet<PublicKey>> {
        (!self.allow.is_empty()).then(|| {
            self.allow
                .iter()
                .take(256)
                .filter_map(|k| PublicKey::from_hex(k).ok())
                .collect()
        })
    }

    /// The reputation a coordinator starts from: its stored records and carried records
    /// (new key, old key), its own household and the configured ones trusted outright.
    /// Unparsable keys are skipped.
    pub fn reputation(
        &self,
        own: PublicKey,
        records: Vec<(PublicKey, Record)>,
        carried: Vec<(PublicKey, PublicKey)>,
    ) -> Reputation {
        let mut rep = Reputation::new(self.rules);
        rep.trust(own);
        for key in self.trusted.iter().take(256) {
            if let Ok(k) = PublicKey::from_hex(key) {
                rep.trust(k);
            }
        }
        for (h, r) in records {
            rep.insert(h, r);
        }
        for (new, old) in carried {
            rep.carry(new, old);
        }
        rep
    }
}

/// Whether shard `index` of `job` is spot-checked: a keyed hash, so a worker cannot tell
/// in advance which of its shards will be re-run, and the same shard always draws the same.
pub fn spot_check(key: &[u8; 32], job: &blake3::Hash, index: u32, permille: u16) -> bool {
    if permille == 0 {
        return false;
    }
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(job.as_bytes()).update(&index.to_le_bytes());
    let out = h.finalize();
    let draw = u16::from_le_bytes([out.as_bytes()[0], out.as_bytes()[1]]);
    u32::from(draw) % 1000 < u32::from(permille.min(1000))
}

/// The chance that a household lying on a share `lie` of its shards as an established
/// household gets `n` wrong results accepted before a spot check catches it, for spot-check
/// rate `s` (‰): each lie is caught with probability s, so it gets k lies through with
/// probability (1 − s)^k · s, and on average (1 − s) / s lies through before it is caught.
pub fn expected_lies_accepted(spot_check_permille: u16) -> f64 {
    let s = f64::from(spot_check_permille.min(1000)) / 1000.0;
    if s == 0.0 {
        f64::INFINITY
    } else {
        (1.0 - s) / s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_household_is_established_after_enough_verified_results_over_enough_time() {
        let h = Identity::from_seed([1; 32]).public();
        let mut rep = Reputation::new(Rules {
            established_after: 3,
            established_age_ms: 100,
            ..Rules::default()
        });
        assert_eq!(rep.standing(&h), Standing::Probation);
        let mut r = Record {
            verified: 3,
            first_seen_ms: 0,
            last_seen_ms: 50,
            ..Record::default()
        };
        rep.insert(h, r);
        assert_eq!(rep.standing(&h), Standing::Probation, "too young");
        r.last_seen_ms = 100;
        rep.insert(h, r);
        assert_eq!(rep.standing(&h), Standing::Established);
        r.wrong = 1;
        rep.insert(h, r);
        assert_eq!(rep.standing(&h), Standing::Probation, "one wrong result");
        let own = Identity::from_seed([2; 32]).public();
        rep.trust(own);
        assert_eq!(rep.standing(&own), Standing::Established);
    }

    /// A rotated household's standing counts the records of the keys it rotated from, and
    /// stops counting them when the carry is taken back; a wrong result under an old key
    /// counts too; a loop of carries ends.
    #[test]
    fn a_carried_record_counts_for_the_new_key_until_it_is_taken_back() {
        let k: Vec<PublicKey> = (1..=4u8)
            .map(|i| Identity::from_seed([i; 32]).public())
            .collect();
        let mut rep = Reputation::new(Rules {
            established_after: 4,
            established_age_ms: 100,
            ..Rules::default()
        });
        let rec = |verified, first_seen_ms, last_seen_ms| Record {
            verified,
            first_seen_ms,
            last_seen_ms,
            ..Record::default()
        };
        rep.insert(k[0], rec(3, 0, 60));
        rep.insert(k[1], rec(1, 70, 120));
        assert_eq!(rep.standing(&k[0]), Standing::Probation);
        assert_eq!(rep.standing(&k[1]), Standing::Probation);
        rep.carry(k[1], k[0]);
        assert_eq!(rep.combined(&k[1]), Some(rec(4, 0, 120)));
        assert_eq!(rep.standing(&k[1]), Standing::Established);
        // Two rotations: the third key has no record of its own yet.
        rep.carry(k[2], k[1]);
        assert_eq!(rep.combined(&k[2]), Some(rec(4, 0, 120)));
        assert_eq!(rep.standing(&k[2]), Standing::Established);
        let mut lied = rec(3, 0, 60);
        lied.wrong = 1;
        rep.insert(k[0], lied);
        assert_eq!(
            rep.standing(&k[2]),
            Standing::Probation,
            "a lie under the first key"
        );
        rep.insert(k[0], rec(3, 0, 60));
        assert!(rep.uncarry(&k[1]));
        assert!(!rep.uncarry(&k[1]));
        assert_eq!(rep.standing(&k[2]), Standing::Probation);
        assert_eq!(rep.combined(&k[2]), Some(rec(1, 70, 120)));
        // A loop (not a chain a key book builds, but a peer's events are claims) ends.
        rep.carry(k[0], k[2]);
        rep.carry(k[1], k[0]);
        assert_eq!(rep.combined(&k[1]), Some(rec(4, 0, 120)));
        assert_eq!(rep.combined(&k[3]), None);
        assert!(Rules::default().carries(7 * 24 * 3600 * 1000));
        assert!(!Rules::default().carries(7 * 24 * 3600 * 1000 - 1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever the records and carries (chains, loops, self-links, a key carried twice):
        /// a key's combined record is the sum of the records along its chain of carries (each
        /// key once, the latest carry of a key counting), so a wrong result anywhere on it keeps
        /// the key on probation; a key established alone stays established unless a wrong
        /// result is added; and taking a key's carry back leaves exactly its own standing.
        #[test]
        fn a_combined_record_is_the_sum_along_its_chain_and_a_wrong_one_anywhere_keeps_probation(
            records in proptest::collection::vec(
                (0u8..6, 0u32..30, 0u32..2, 0u64..200, 0u64..200), 0..8),
            links in proptest::collection::vec((0u8..6, 0u8..6), 0..8),
        ) {
            let key = |i: u8| Identity::from_seed([i + 1; 32]).public();
            let rules = Rules { established_after: 20, established_age_ms: 100, ..Rules::default() };
            let (mut alone, mut rep) = (Reputation::new(rules), Reputation::new(rules));
            let mut model: HashMap<u8, Record> = HashMap::new();
            for (i, verified, wrong, a, b) in &records {
                let r = Record {
                    verified: *verified,
                    wrong: *wrong,
                    first_seen_ms: *a.min(b),
                    last_seen_ms: *a.max(b),
                    ..Record::default()
                };
                alone.insert(key(*i), r);
                rep.insert(key(*i), r);
                model.insert(*i, r);
            }
            let mut carried: HashMap<u8, u8> = HashMap::new();
            for (new, old) in &links {
                rep.carry(key(*new), key(*old));
                if new != old {
                    carried.insert(*new, *old);
                }
            }
            for i in 0..6u8 {
                let k = key(i);
                // The chain, walked apart from the code under test.
                let (mut sum, mut at, mut seen) = (None::<Record>, i, HashSet::new());
                while seen.insert(at) {
                    if let Some(r) = model.get(&at) {
                        sum = Some(match sum {
                            None => *r,
                            Some(s) => Record {
                                verified: s.verified + r.verified,
                                wrong: s.wrong + r.wrong,
                                disputed: 0,
                                first_seen_ms: s.first_seen_ms.min(r.first_seen_ms),
                                last_seen_ms: s.last_seen_ms.max(r.last_seen_ms),
                            },
                        });
                    }
                    match carried.get(&at) {
                        Some(old) => at = *old,
                        None => break,
                    }
                }
                proptest::prop_assert_eq!(rep.combined(&k), sum);
                if sum.is_some_and(|s| s.wrong > 0) {
                    proptest::prop_assert_eq!(rep.standing(&k), Standing::Probation);
                }
                if alone.established(&k) && sum.is_some_and(|s| s.wrong == 0) {
                    proptest::prop_assert_eq!(rep.standing(&k), Standing::Established);
                }
                let mut back = rep.clone();
                back.uncarry(&k);
                proptest::prop_assert_eq!(back.combined(&k), alone.record(&k).copied());
                proptest::prop_assert_eq!(back.standing(&k), alone.standing(&k));
            }
        }
    }

    #[test]
    fn spot_checks_follow_their_rate() {
        let key = [7; 32];
        let job = blake3::hash(b"job");
        for permille in [0u16, 100, 500, 1000] {
            let n = (0..10_000)
                .filter(|i| spot_check(&key, &job, *i, permille))
                .count();
            let expected = usize::from(permille) * 10;
            assert!(n.abs_diff(expected) <= 300, "{permille} ‰: {n} of 10000");
        }
    }
}
