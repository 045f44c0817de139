//! Fraud evidence heard from other coordinators: what is kept of it, and what bounds it.
//!
//! A piece of evidence ([`crate::model::evidence::Evidence`]) names a household whose claim
//! lost a vote at another coordinator. It proves nothing until this node re-ran the shard
//! (`recheck.rs`): only then, and only if the re-run agrees with the winner and not with the
//! accused, is the household excluded here. This module holds the pure admission rules
//! ([`Intake`]: rate limits) and the sled trees ([`EvidenceStore`]):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `trust/evidence` | accused (32) ‖ job (32) ‖ shard (u32 BE) | JSON [`Entry`]: the evidence's bytes, when heard, how its check went |
//! | `trust/excluded` | accused (32) | the key of the confirmed entry |
//! | `trust/false_accusers` | coordinator (32) | the key of the entry its re-run refuted |
//! | `trust/published` | accused (32) | the canonical bytes (813) of the evidence this node's coordinator signed and gossiped against it |
//!
//! Must not touch: the network, the coordinator's book (the service tells it).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::jobs::JobError;
use crate::model::evidence::Evidence;

/// Pieces of evidence one coordinator (the gossip author) may have admitted at once: the
/// bucket holds this many and refills one every [`SOURCE_REFILL_MS`]. An honest coordinator
/// accuses each household once (an excluded household gets no further leases from it), so
/// 16 at once covers catching a 16-identity Sybil in one job.
pub const SOURCE_BURST: u32 = 16;
pub const SOURCE_REFILL_MS: u64 = 60_000;
/// All authors together: 64 at once, then one every 10 s. What bounds the re-runs (and the
/// disk) a crowd of fresh authors can cause: each author key is free to make, so the
/// per-author bucket alone bounds nothing.
pub const GLOBAL_BURST: u32 = 64;
pub const GLOBAL_REFILL_MS: u64 = 10_000;
/// Authors whose buckets are tracked. Full buckets carry no information and are dropped
/// first; if every tracked author is still limited, a new author waits (the global bucket
/// bounds them anyway).
pub const MAX_SOURCES: usize = 1024;
/// Entries kept in `trust/evidence`. Past it new evidence is ignored (`docs/trust.md`):
/// bounded by the global bucket to at most 8 640 new entries a day.
pub const MAX_ENTRIES: usize = 65_536;
/// Evidence waiting for its re-run; more is ignored until the queue drains.
pub const MAX_QUEUED: usize = 32;

/// How often one peer is asked for the evidence it holds, at most: when it connects, and
/// again only if it reconnects ten minutes later. Evidence is rare (one piece per caught
/// liar) and a node keeps what it heard, so a late joiner needs each peer once.
pub const PULL_EVERY_MS: u64 = 10 * 60_000;
/// Peers waiting to be asked; one is asked at a time. More connecting meanwhile are not
/// queued (each is asked when it next connects, ten minutes on): a node joining a crowd asks
/// a handful of its first peers, which is what it takes to hear what the network knows.
pub const MAX_PULL_WAITING: usize = 8;
/// Pages asked of one peer per pull: 8 × `MAX_EVIDENCE_PER_ANSWER` (4) = 32 pieces, as many
/// as the re-run queue holds (`MAX_QUEUED`); what is past them is heard from another peer or
/// on the next pull. Every piece still goes through [`Intake`] and the replay rules.
pub const MAX_PULL_PAGES: usize = 8;
/// Peers whose last pull time is remembered; the oldest are forgotten first.
pub const MAX_PULL_TRACKED: usize = 1024;

/// When to ask which peer for the evidence it holds (`Request::Evidence`). Pure: time comes
/// in as `now_ms`.
#[derive(Debug, Default)]
pub struct Pulls {
    asked: HashMap<libp2p::PeerId, u64>,
    waiting: std::collections::VecDeque<libp2p::PeerId>,
    running: bool,
}

impl Pulls {
    /// A peer settled (stayed connected): queued to be asked unless it was asked within [`PULL_EVERY_MS`] or
    /// the queue is full.
    pub fn settled(&mut self, peer: libp2p::PeerId, now_ms: u64) {
        if self
            .asked
            .get(&peer)
            .is_some_and(|t| now_ms.saturating_sub(*t) < PULL_EVERY_MS)
            || self.waiting.contains(&peer)
            || self.waiting.len() >= MAX_PULL_WAITING
        {
            return;
        }
        self.waiting.push_back(peer);
    }

    /// The peer to ask now, if none is being asked.
    pub fn next(&mut self, now_ms: u64) -> Option<libp2p::PeerId> {
        if self.running {
            return None;
        }
        let peer = self.waiting.pop_front()?;
        if self.asked.len() >= MAX_PULL_TRACKED && !self.asked.contains_key(&peer) {
            if let Some(oldest) = self.asked.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                self.asked.remove(&oldest);
            }
        }
        self.asked.insert(peer, now_ms);
        self.running = true;
        Some(peer)
    }

    /// The pull in flight ended.
    pub fn done(&mut self) {
        self.running = false;
    }
}

/// How a piece of evidence fared here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Check {
    /// Heard and well-formed; waiting for its re-run.
    Pending,
    /// The re-run agrees with the winning claim, not with the accused's: the accused
    /// household is excluded here.
    Confirmed,
    /// The re-run agrees with the accused: the coordinator's evidence is false. Nobody is
    /// excluded, and the coordinator's later evidence is ignored.
    Refuted,
    /// The re-run agrees with neither claim (or traps): it proves nothing about either.
    Inconclusive(String),
    /// This node could not re-run the shard (its blobs were unreachable, or beyond this
    /// radiator's limits). Nobody is excluded; the same evidence heard again is checked again.
    Unchecked(String),
}

/// One piece of evidence as kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The evidence's canonical bytes, hex.
    pub evidence: String,
    /// When this node heard it, ms.
    pub heard_ms: u64,
    #[serde(flatten)]
    pub check: Check,
    /// When the re-run ended, ms.
    pub checked_ms: Option<u64>,
}

impl Entry {
    pub fn evidence(&self) -> Result<Evidence, JobError> {
        let bytes = hex::decode(&self.evidence)
            .map_err(|e| JobError::Corrupt(format!("stored evidence: {e}")))?;
        Evidence::from_bytes(&bytes).map_err(|e| JobError::Corrupt(format!("stored evidence: {e}")))
    }
}

/// The key of a piece of evidence: one per (accused, job, shard), so a coordinator cannot
/// make a household's one lost claim count twice by signing it again.
pub fn entry_key(e: &Evidence) -> [u8; 68] {
    let mut k = [0u8; 68];
    k[..32].copy_from_slice(&e.accused().0);
    k[32..64].copy_from_slice(e.job.as_bytes());
    k[64..].copy_from_slice(&e.shard.to_be_bytes());
    k
}

/// A token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, burst: u32, every_ms: u64, now_ms: u64) {
        let n = now_ms.saturating_sub(self.at_ms) / every_ms.max(1);
        if n > 0 {
            self.tokens = (u64::from(self.tokens) + n).min(u64::from(burst)) as u32;
            self.at_ms = if self.tokens == burst {
                now_ms
            } else {
                self.at_ms + n * every_ms.max(1)
            };
        }
    }
}

/// Rate limits on evidence heard from gossip, per author and over all authors. Pure: time
/// comes in as `now_ms`.
#[derive(Debug)]
pub struct Intake {
    sources: HashMap<PublicKey, Bucket>,
    global: Bucket,
}

impl Intake {
    pub fn new(now_ms: u64) -> Intake {
        Intake {
            sources: HashMap::new(),
            global: Bucket::full(GLOBAL_BURST, now_ms),
        }
    }

    /// Takes one token from `author`'s bucket and one from the global bucket; false (and
    /// nothing taken) if either is empty.
    pub fn admit(&mut self, author: PublicKey, now_ms: u64) -> bool {
        self.global.refill(GLOBAL_BURST, GLOBAL_REFILL_MS, now_ms);
        if self.global.tokens == 0 {
            return false;
        }
        if !self.sources.contains_key(&author) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, b| {
                b.refill(SOURCE_BURST, SOURCE_REFILL_MS, now_ms);
                b.tokens < SOURCE_BURST
            });
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let bucket = self
            .sources
            .entry(author)
            .or_insert_with(|| Bucket::full(SOURCE_BURST, now_ms));
        bucket.refill(SOURCE_BURST, SOURCE_REFILL_MS, now_ms);
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        self.global.tokens -= 1;
        true
    }
}

/// The evidence trees.
#[derive(Clone)]
pub struct EvidenceStore {
    db: sled::Db,
    entries: sled::Tree,
    excluded: sled::Tree,
    false_accusers: sled::Tree,
    published: sled::Tree,
}

impl EvidenceStore {
    pub fn open(db: &sled::Db) -> Result<EvidenceStore, JobError> {
        Ok(EvidenceStore {
            db: db.clone(),
            entries: db.open_tree("trust/evidence")?,
            excluded: db.open_tree("trust/excluded")?,
            false_accusers: db.open_tree("trust/false_accusers")?,
            published: db.open_tree("trust/published")?,
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>, JobError> {
        match self.entries.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                JobError::Corrupt(format!("evidence entry {}: {e}", hex::encode(key)))
            })?)),
            None => Ok(None),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes an entry (and, for a confirmed or refuted one, the exclusion or the false
    /// accuser) and flushes, so nothing is acted on before it is durable. A pending entry is
    /// not flushed (it waits for the next flush): losing it in a crash loses only a re-run
    /// nobody acted on, and the router that waits for the verdict does not wait on the disk.
    pub async fn put(&self, key: &[u8], entry: &Entry) -> Result<(), JobError> {
        let value = serde_json::to_vec(entry)
            .map_err(|e| JobError::Corrupt(format!("encoding evidence: {e}")))?;
        self.entries.insert(key, value)?;
        match entry.check {
            Check::Confirmed => {
                self.excluded.insert(&key[..32], key)?;
            }
            Check::Refuted => {
                let e = entry.evidence()?;
                self.false_accusers
                    .insert(e.coordinator.0.as_slice(), key)?;
            }
            Check::Pending => return Ok(()),
            _ => {}
        }
        crate::kv::flush(&self.db).await?;
        Ok(())
    }

    /// Households excluded here on checked evidence.
    pub fn excluded(&self) -> Result<Vec<PublicKey>, JobError> {
        keys(&self.excluded)
    }

    pub fn is_excluded(&self, household: &PublicKey) -> Result<bool, JobError> {
        Ok(self.excluded.contains_key(household.0)?)
    }

    /// Coordinators whose evidence a re-run here refuted.
    pub fn false_accusers(&self) -> Result<Vec<PublicKey>, JobError> {
        keys(&self.false_accusers)
    }

    pub fn is_false_accuser(&self, coordinator: &PublicKey) -> Result<bool, JobError> {
        Ok(self.false_accusers.contains_key(coordinator.0)?)
    }

    /// Keeps evidence this node's coordinator signed and gossiped, so it can answer peers
    /// that join later (`confirmed_after`). One entry per household it excluded by its own
    /// vote, so bounded like its exclusions. A plain insert, not flushed here: the
    /// coordinator's next flush covers it, and one lost to a crash is only evidence not
    /// served again (the exclusion itself is in the coordinator's own trees).
    pub fn keep_published(&self, e: &Evidence) -> Result<(), JobError> {
        self.published
            .insert(e.accused().0.as_slice(), e.to_bytes())?;
        Ok(())
    }

    /// Up to `n` pieces of evidence this node stands behind, one per accused household in
    /// key order after `after`'s accused (its first 32 bytes), and whether more follow: what
    /// a peer that asks is answered (`Request::Evidence`). Two sources, merged by accused:
    /// evidence this node re-ran and confirmed (`trust/excluded`, pointing into
    /// `trust/evidence`; an exclusion whose entry was since overwritten by evidence not
    /// confirmed is skipped), and evidence its own coordinator signed after its own vote
    /// (`trust/published`). A page reads `n + 1` entries of each source (plus exclusions
    /// whose entry is no longer confirmed, rare), whatever the store holds.
    pub fn confirmed_after(
        &self,
        after: Option<&[u8; 68]>,
        n: usize,
    ) -> Result<(Vec<Evidence>, bool), JobError> {
        use std::ops::Bound;
        let start = || match after {
            Some(k) => Bound::Excluded(k[..32].to_vec()),
            None => Bound::Unbounded,
        };
        // The first n + 1 of each source, in key order: the first n of their union are then
        // the first n overall (anything unread in a source sorts after its (n + 1)-th).
        let mut found: std::collections::BTreeMap<[u8; 32], Evidence> = Default::default();
        let mut confirmed = 0;
        for item in self
            .excluded
            .range::<Vec<u8>, _>((start(), Bound::Unbounded))
        {
            if confirmed > n {
                break;
            }
            let (_, key) = item?;
            if let Some(entry) = self.get(&key)? {
                if entry.check == Check::Confirmed {
                    let e = entry.evidence()?;
                    found.insert(e.accused().0, e);
                    confirmed += 1;
                }
            }
        }
        for item in self
            .published
            .range::<Vec<u8>, _>((start(), Bound::Unbounded))
            .take(n + 1)
        {
            let (_, bytes) = item?;
            let e = Evidence::from_bytes(&bytes)
                .map_err(|err| JobError::Corrupt(format!("published evidence: {err}")))?;
            found.entry(e.accused().0).or_insert(e);
        }
        let more = found.len() > n;
        Ok((found.into_values().take(n).collect(), more))
    }

    /// Every entry about `accused`, or every entry.
    pub fn entries(&self, accused: Option<&PublicKey>) -> Result<Vec<([u8; 68], Entry)>, JobError> {
        let iter = match accused {
            Some(h) => self.entries.scan_prefix(h.0),
            None => self.entries.iter(),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            let key: [u8; 68] = k.as_ref().try_into().map_err(|_| {
                JobError::Corrupt(format!("evidence key {}: not 68 bytes", hex::encode(&k)))
            })?;
            let entry: Entry = serde_json::from_slice(&v).map_err(|e| {
                JobError::Corrupt(format!("evidence entry {}: {e}", hex::encode(key)))
            })?;
            out.push((key, entry));
        }
        Ok(out)
    }
}

fn keys(tree: &sled::Tree) -> Result<Vec<PublicKey>, JobError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, _) = item?;
        let key: [u8; 32] = k
            .as_ref()
            .try_into()
            .map_err(|_| JobError::Corrupt(format!("household key {}", hex::encode(&k))))?;
        out.push(PublicKey(key));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn evidence(seed: u8) -> Evidence {
        evidence_against(seed, 200)
    }

    fn evidence_against(seed: u8, liar: u8) -> Evidence {
        use crate::model::receipt::{Claim, EnergyMethod, WorkRecord};
        let coordinator = Identity::from_seed([seed; 32]);
        let claim = |who: &Identity, out: &[u8]| {
            Claim::sign(
                WorkRecord {
                    job: blake3::hash(b"job"),
                    shard: 1,
                    module: blake3::hash(b"m"),
                    input: blake3::hash(b"i"),
                    output: blake3::hash(out),
                    worker: who.public(),
                    submitter: coordinator.public(),
                    fuel: 5,
                    energy_mj: 1,
                    method: EnergyMethod::CpuEstimate,
                    start_ms: 1,
                    end_ms: 2,
                    nonce: [0; 16],
                },
                who,
            )
            .unwrap()
        };
        let (liar, honest) = (
            Identity::from_seed([liar; 32]),
            Identity::from_seed([201; 32]),
        );
        Evidence::sign(
            &coordinator,
            1,
            blake3::hash(b"right"),
            5,
            claim(&liar, b"wrong"),
            claim(&honest, b"right"),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn checked_evidence_survives_a_reopen_and_unchecked_excludes_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let (confirmed, refuted, unchecked) = (evidence(1), evidence(2), evidence(3));
        {
            let db = crate::node::test_db(dir.path()).unwrap();
            let store = EvidenceStore::open(&db).unwrap();
            for (e, check) in [
                (&confirmed, Check::Confirmed),
                (&refuted, Check::Refuted),
                (&unchecked, Check::Unchecked("offline".into())),
            ] {
                let entry = Entry {
                    evidence: hex::encode(e.to_bytes()),
                    heard_ms: 7,
                    check,
                    checked_ms: Some(8),
                };
                store.put(&entry_key(e), &entry).await.unwrap();
            }
        }
        let db = crate::node::reopen_db(dir.path());
        let store = EvidenceStore::open(&db).unwrap();
        // The three accuse the same household of the same shard, by three coordinators:
        // one key per (accused, job, shard), so the last write holds the entry.
        assert_eq!(store.len(), 1);
        assert_eq!(store.excluded().unwrap(), vec![confirmed.accused()]);
        assert_eq!(store.false_accusers().unwrap(), vec![refuted.coordinator]);
        let (_, entry) = &store.entries(Some(&confirmed.accused())).unwrap()[0];
        assert_eq!(entry.check, Check::Unchecked("offline".into()));
        assert_eq!(entry.evidence().unwrap(), unchecked);
        let json = serde_json::to_value(entry).unwrap();
        assert_eq!(json["status"], "unchecked");
        assert_eq!(json["detail"], "offline");
    }

    /// What a late joiner is answered: evidence re-run and confirmed here and evidence this
    /// node's coordinator published, each household once, in key order, page by page; never
    /// evidence merely heard (pending), refuted or unchecked.
    #[tokio::test]
    async fn peers_are_answered_with_confirmed_and_published_evidence_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let store = EvidenceStore::open(&db).unwrap();
        let mut expected = Vec::new();
        for liar in 100u8..110 {
            let e = evidence_against(1, liar);
            let check = match liar % 5 {
                0 => Check::Pending,
                1 => Check::Refuted,
                2 => Check::Unchecked("offline".into()),
                _ => Check::Confirmed,
            };
            if check == Check::Confirmed {
                expected.push(e.accused());
            }
            let entry = Entry {
                evidence: hex::encode(e.to_bytes()),
                heard_ms: 1,
                check,
                checked_ms: Some(2),
            };
            store.put(&entry_key(&e), &entry).await.unwrap();
        }
        for liar in 105u8..115 {
            // Published by this node's coordinator; 105..110 overlap the heard ones.
            let e = evidence_against(2, liar);
            store.keep_published(&e).unwrap();
            if !expected.contains(&e.accused()) {
                expected.push(e.accused());
            }
        }
        expected.sort();
        let mut got = Vec::new();
        let mut after = None;
        for _ in 0..20 {
            let (page, more) = store.confirmed_after(after.as_ref(), 3).unwrap();
            assert!(page.len() <= 3);
            for e in &page {
                e.check().unwrap();
                got.push(e.accused());
                after = Some(entry_key(e));
            }
            if !more {
                break;
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn peers_are_asked_for_evidence_once_per_interval_one_at_a_time() {
        let peers: Vec<libp2p::PeerId> = (0..20).map(|_| libp2p::PeerId::random()).collect();
        let mut p = Pulls::default();
        p.settled(peers[0], 0);
        p.settled(peers[0], 0);
        p.settled(peers[1], 0);
        assert_eq!(p.next(0), Some(peers[0]));
        assert_eq!(p.next(0), None, "one pull at a time");
        p.done();
        assert_eq!(p.next(1), Some(peers[1]));
        p.done();
        assert_eq!(p.next(1), None, "queued once");
        // Reconnecting soon after is not asked again; ten minutes on it is.
        p.settled(peers[0], PULL_EVERY_MS - 1);
        assert_eq!(p.next(PULL_EVERY_MS - 1), None);
        p.settled(peers[0], PULL_EVERY_MS);
        assert_eq!(p.next(PULL_EVERY_MS), Some(peers[0]));
        p.done();
        // A crowd connecting at once: only the first few wait.
        for peer in &peers[2..] {
            p.settled(*peer, 0);
        }
        let mut asked = 0;
        while p.next(0).is_some() {
            asked += 1;
            p.done();
        }
        assert_eq!(asked, MAX_PULL_WAITING);
    }

    #[test]
    fn one_author_gets_its_burst_then_one_a_minute() {
        let a = Identity::from_seed([1; 32]).public();
        let b = Identity::from_seed([2; 32]).public();
        let mut intake = Intake::new(0);
        for _ in 0..SOURCE_BURST {
            assert!(intake.admit(a, 0));
        }
        assert!(!intake.admit(a, 0), "over its burst");
        assert!(
            intake.admit(b, 0),
            "another author is not limited by a's flood"
        );
        assert!(!intake.admit(a, SOURCE_REFILL_MS - 1));
        assert!(intake.admit(a, SOURCE_REFILL_MS));
        assert!(!intake.admit(a, SOURCE_REFILL_MS));
    }

    #[test]
    fn fresh_authors_are_bounded_by_the_global_bucket() {
        let mut intake = Intake::new(0);
        let admitted = (0u32..1000)
            .filter(|i| {
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                intake.admit(Identity::from_seed(seed).public(), 0)
            })
            .count();
        assert_eq!(admitted, GLOBAL_BURST as usize);
        // An hour later: the burst again at most, not an hour's worth of refills stacked.
        let later = 3600 * 1000;
        let admitted = (1000u32..2000)
            .filter(|i| {
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                intake.admit(Identity::from_seed(seed).public(), later)
            })
            .count();
        assert_eq!(admitted, GLOBAL_BURST as usize);
    }

    #[test]
    fn the_tracked_authors_stay_bounded() {
        let mut intake = Intake::new(0);
        let mut t = 0;
        for i in 0u32..(MAX_SOURCES as u32 * 3) {
            // Enough time between admissions that the global bucket never runs dry.
            t += GLOBAL_REFILL_MS;
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            intake.admit(Identity::from_seed(seed).public(), t);
            assert!(intake.sources.len() <= MAX_SOURCES);
        }
    }
}
