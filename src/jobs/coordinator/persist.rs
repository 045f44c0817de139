//! The coordinator's state on disk, one entry per shard, so a lease or a claim writes only
//! the shard it changed.
//!
//! Trees:
//! - `coord/manifests`: job id → the manifest's canonical bytes (written once, at submit);
//! - `coord/jobs`: job id → JSON [`StoredJob`] (status and times: small, rewritten when the
//!   job finishes);
//! - `coord/shards`: job id ‖ shard index (u32 big-endian) → the shard's state without its
//!   claims, binary ([`encode_state`]; entries from before are JSON [`StoredShard`] with the
//!   claims inside, rewritten at start by [`Persist::migrate`]); a shard never leased has no
//!   entry;
//! - `coord/claims`: job id ‖ shard index ‖ claim number (u32 big-endian each) → the claim's
//!   canonical bytes, written once, before the shard entry that counts it;
//! - `coord/excluded`: household key → JSON evidence (both signed claims);
//! - `coord/policies`: job id → JSON replication policy of a job submitted with its own
//!   (`hearth submit --min-replicas …`; written with the job);
//! - `coord/suspended`: job id ‖ household key → empty: households shut out of one job
//!   after losing a vote among households on probation (`Book::settled`).
//!
//! Updates are written behind (`Persist::write`): each update's new claims are inserted at
//! once, and the rest of it is staged in one kv batch (`crate::kv`) that collects every update
//! made while the previous flush ran; the batch is committed, all or none after a crash, on
//! the blocking thread of the flush that acknowledges those updates, just before it. So a
//! shard changed several times between two flushes is written once, with its last state, and
//! the actor acknowledges nothing before the flush that made it durable returned (group
//! commit). An entry that cannot be read stops the node with an error naming the job (and
//! shard), never silently.
//! Must not touch: the network, the book's decisions.
//!
//! Size: about 1 320 lines, of which the tests are 470 (the binary shard entry, the claims
//! written once, and the migration from JSON entries added about 430): one tree per kind of
//! coordinator state (jobs, shards, exclusions, suspensions, per-job policies, and the
//! reputation records through `TrustStore::stage`) read and written together in one kv
//! batch; splitting the trees across files would split that batch.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::model::receipt::Claim;
use crate::model::JobManifest;

use super::book::{
    FailureRec, JobBook, JobStatus, LeaseRec, Outcome, ShardBook, ShardCredit, Update,
};
use crate::jobs::JobError;

#[derive(Serialize, Deserialize)]
struct StoredJob {
    status: JobStatus,
    submitted_ms: u64,
    finished_ms: Option<u64>,
    /// Households that declined the job (hex key, reason).
    #[serde(default)]
    declined: Vec<(String, String)>,
}

fn encode_declined(declined: &[FailureRec]) -> Vec<(String, String)> {
    declined
        .iter()
        .map(|d| (d.worker.to_hex(), d.reason.clone()))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct StoredLease {
    worker: String,
    nonce: String,
    granted_ms: u64,
    deadline_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredFailure {
    worker: String,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct StoredOutcome {
    output: String,
    fuel: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredShard {
    leases: Vec<StoredLease>,
    /// Claims' canonical bytes, hex.
    claims: Vec<String>,
    failures: Vec<StoredFailure>,
    verified: Option<StoredOutcome>,
    settled: Vec<u32>,
    failed: Option<String>,
    /// Set when verified: (reference energy in mJ, agreeing, replicas).
    #[serde(default)]
    credit: Option<(u64, u8, u8)>,
}

fn shard_key(job: &blake3::Hash, index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(job.as_bytes());
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The first byte of a shard entry in the binary format ([`encode_state`]). Entries written
/// before it are JSON ([`StoredShard`], claims inside) and begin with `{`; both are read.
const SHARD_V1: u8 = 1;

/// Bounds for reading a shard entry back (the coordinator wrote it, but a damaged disk must
/// give an error, never a huge allocation): list lengths, and text lengths in bytes. A shard
/// holds at most `MAX_REPLICAS` claims and failures and as many live leases; expired leases
/// are dropped whenever it is written.
const MAX_SHARD_LIST: usize = 4 * super::book::MAX_REPLICAS;
const MAX_SHARD_TEXT: usize = 16 * 1024;

fn claim_key(job: &blake3::Hash, index: u32, claim: u32) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..36].copy_from_slice(&shard_key(job, index));
    k[36..].copy_from_slice(&claim.to_be_bytes());
    k
}

/// One shard's state without its claims, in the binary format (docs/storage.md, "The
/// coordinator's trees"): `1` ‖ leases ‖ claim count ‖ failures ‖ verified ‖ settled ‖
/// failed ‖ credit, in `model::canon` encoding (integers little-endian, lists and strings
/// with a u32 count or length). A lease is worker key ‖ nonce ‖ granted ms ‖ deadline ms (64
/// bytes); an option is a 0/1 byte then the value. The claims are in `coord/claims`, each
/// written once: a lease, a claim, a verdict or a settlement rewrites about 100 bytes here
/// instead of the whole shard with its claims (the JSON entry, claims in hex, was about
/// 1.7 KB once a shard held two).
fn encode_state(s: &ShardBook) -> Vec<u8> {
    let mut w = crate::model::canon::Writer::new();
    w.u8(SHARD_V1);
    w.u32(s.leases.len() as u32);
    for l in &s.leases {
        w.raw(&l.worker.0)
            .raw(&l.nonce)
            .u64(l.granted_ms)
            .u64(l.deadline_ms);
    }
    w.u32(s.claims.len() as u32);
    w.u32(s.failures.len() as u32);
    for f in &s.failures {
        w.raw(&f.worker.0).str(&f.reason);
    }
    match &s.verified {
        Some(o) => w.u8(1).hash(&o.output).u64(o.fuel),
        None => w.u8(0),
    };
    w.u32(s.settled.len() as u32);
    for i in &s.settled {
        w.u32(*i);
    }
    match &s.failed {
        Some(reason) => w.u8(1).str(reason),
        None => w.u8(0),
    };
    match &s.credit {
        Some(c) => w.u8(1).u64(c.reference_mj).u8(c.agreeing).u8(c.replicas),
        None => w.u8(0),
    };
    w.into_bytes()
}

/// A shard entry as read: the state, and where its claims are.
#[derive(Debug, PartialEq)]
enum ReadShard {
    /// Binary: the claims (`shard.claims` empty here) are the first `claims` entries of
    /// the shard in `coord/claims`.
    Binary { shard: ShardBook, claims: u32 },
    /// JSON, written before the binary format: the claims are inside.
    Json(ShardBook),
}

fn decode_shard(bytes: &[u8]) -> Result<ReadShard, String> {
    match bytes.first() {
        Some(&SHARD_V1) => decode_state(&bytes[1..]).map_err(|e| e.to_string()),
        _ => decode_shard_json(bytes).map(ReadShard::Json),
    }
}

fn decode_state(bytes: &[u8]) -> Result<ReadShard, crate::model::DecodeError> {
    use crate::model::DecodeError;
    let mut r = crate::model::canon::Reader::new(bytes);
    let mut shard = ShardBook::default();
    for _ in 0..r.count(MAX_SHARD_LIST, 64, "leases")? {
        shard.leases.push(LeaseRec {
            worker: PublicKey(r.array("lease worker")?),
            nonce: r.array("lease nonce")?,
            granted_ms: r.u64("lease granted")?,
            deadline_ms: r.u64("lease deadline")?,
        });
    }
    let claims = r.u32("claim count")?;
    if claims as usize > MAX_SHARD_LIST {
        return Err(DecodeError::TooLong {
            what: "claim count",
            len: claims as usize,
            max: MAX_SHARD_LIST,
        });
    }
    for _ in 0..r.count(MAX_SHARD_LIST, 36, "failures")? {
        shard.failures.push(FailureRec {
            worker: PublicKey(r.array("failure worker")?),
            reason: r.str(MAX_SHARD_TEXT, "failure reason")?.to_string(),
        });
    }
    if r.flag("verified")? {
        shard.verified = Some(Outcome {
            output: r.hash("verified output")?,
            fuel: r.u64("verified fuel")?,
        });
    }
    for _ in 0..r.count(MAX_SHARD_LIST, 4, "settled")? {
        shard.settled.push(r.u32("settled claim")?);
    }
    if r.flag("failed")? {
        shard.failed = Some(r.str(MAX_SHARD_TEXT, "failure")?.to_string());
    }
    if r.flag("credit")? {
        shard.credit = Some(ShardCredit {
            reference_mj: r.u64("credit reference")?,
            agreeing: r.u8("credit agreeing")?,
            replicas: r.u8("credit replicas")?,
        });
    }
    r.finish()?;
    if shard.settled.iter().any(|&i| i >= claims) {
        return Err(DecodeError::Invalid {
            what: "shard",
            reason: "a settled claim index is out of range".into(),
        });
    }
    Ok(ReadShard::Binary { shard, claims })
}

/// The JSON a shard entry was written as before the binary format (tests: old entries are
/// still read).
#[cfg(test)]
fn encode_shard_json(s: &ShardBook) -> Vec<u8> {
    let stored = StoredShard {
        leases: s
            .leases
            .iter()
            .map(|l| StoredLease {
                worker: l.worker.to_hex(),
                nonce: hex::encode(l.nonce),
                granted_ms: l.granted_ms,
                deadline_ms: l.deadline_ms,
            })
            .collect(),
        claims: s.claims.iter().map(|c| hex::encode(c.to_bytes())).collect(),
        failures: s
            .failures
            .iter()
            .map(|f| StoredFailure {
                worker: f.worker.to_hex(),
                reason: f.reason.clone(),
            })
            .collect(),
        verified: s.verified.map(|o| StoredOutcome {
            output: o.output.to_hex().to_string(),
            fuel: o.fuel,
        }),
        settled: s.settled.clone(),
        failed: s.failed.clone(),
        credit: s.credit.map(|c| (c.reference_mj, c.agreeing, c.replicas)),
    };
    serde_json::to_vec(&stored).unwrap()
}

/// A shard entry written as JSON, before the binary format.
fn decode_shard_json(bytes: &[u8]) -> Result<ShardBook, String> {
    let s: StoredShard = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let hex_array = |h: &str, what: &str| -> Result<Vec<u8>, String> {
        hex::decode(h).map_err(|e| format!("{what}: {e}"))
    };
    let key = |h: &str| PublicKey::from_hex(h).map_err(|e| format!("household key: {e}"));
    let mut shard = ShardBook::default();
    for l in s.leases {
        let nonce: [u8; 16] = hex_array(&l.nonce, "lease nonce")?
            .try_into()
            .map_err(|_| "lease nonce is not 16 bytes".to_string())?;
        shard.leases.push(LeaseRec {
            worker: key(&l.worker)?,
            nonce,
            granted_ms: l.granted_ms,
            deadline_ms: l.deadline_ms,
        });
    }
    for c in s.claims {
        let bytes = hex_array(&c, "claim")?;
        shard
            .claims
            .push(Claim::from_bytes(&bytes).map_err(|e| format!("claim: {e}"))?);
    }
    for f in s.failures {
        shard.failures.push(FailureRec {
            worker: key(&f.worker)?,
            reason: f.reason,
        });
    }
    shard.verified = match s.verified {
        Some(o) => Some(Outcome {
            output: crate::model::parse_hash(&o.output)
                .map_err(|e| format!("verified output: {e}"))?,
            fuel: o.fuel,
        }),
        None => None,
    };
    if s.settled.iter().any(|&i| i as usize >= shard.claims.len()) {
        return Err("a settled claim index is out of range".into());
    }
    shard.settled = s.settled;
    shard.failed = s.failed;
    shard.credit = s
        .credit
        .map(|(reference_mj, agreeing, replicas)| ShardCredit {
            reference_mj,
            agreeing,
            replicas,
        });
    Ok(shard)
}

const JOBS: &str = "coord/jobs";
const MANIFESTS: &str = "coord/manifests";
const SHARDS: &str = "coord/shards";
const CLAIMS: &str = "coord/claims";
const EXCLUDED: &str = "coord/excluded";
const SUSPENDED: &str = "coord/suspended";
const POLICIES: &str = "coord/policies";

fn excluded_key(k: &[u8]) -> Result<PublicKey, JobError> {
    let key: [u8; 32] = k.try_into().map_err(|_| {
        JobError::Corrupt(format!(
            "excluded household {}: not a 32-byte key",
            hex::encode(k)
        ))
    })?;
    Ok(PublicKey(key))
}

/// A coordinator entry that cannot be loaded: (tree, key, what is wrong).
pub type Damaged = (&'static str, Vec<u8>, String);

/// Everything loaded at start: the jobs with their shards, and the excluded households.
pub type Loaded = (Vec<(blake3::Hash, JobBook)>, Vec<PublicKey>);

/// The coordinator's trees.
#[derive(Clone)]
pub struct Persist {
    manifests: sled::Tree,
    jobs: sled::Tree,
    shards: sled::Tree,
    claims: sled::Tree,
    excluded: sled::Tree,
    suspended: sled::Tree,
    policies: sled::Tree,
    /// Reputation records, written in the batch of the update that changed them.
    reputation: crate::jobs::trust::store::TrustStore,
    kv: crate::kv::Kv,
}

impl Persist {
    pub fn open(db: &sled::Db) -> Result<Persist, JobError> {
        Ok(Persist {
            manifests: db.open_tree(MANIFESTS)?,
            jobs: db.open_tree(JOBS)?,
            shards: db.open_tree(SHARDS)?,
            claims: db.open_tree(CLAIMS)?,
            excluded: db.open_tree(EXCLUDED)?,
            suspended: db.open_tree(SUSPENDED)?,
            policies: db.open_tree(POLICIES)?,
            reputation: crate::jobs::trust::store::TrustStore::open(db)?,
            kv: crate::kv::Kv::open(db)?,
        })
    }

    /// Reads every job and every excluded household.
    pub fn load(&self) -> Result<Loaded, JobError> {
        let mut jobs = Vec::new();
        for item in self.jobs.iter() {
            let (k, v) = item?;
            jobs.push(self.load_job(&k, &v)?);
        }
        let mut excluded = Vec::new();
        for item in self.excluded.iter() {
            let (k, _) = item?;
            excluded.push(excluded_key(&k)?);
        }
        Ok((jobs, excluded))
    }

    /// Reads one job entry with its manifest and shards; an error names the job.
    fn load_job(&self, k: &[u8], v: &[u8]) -> Result<(blake3::Hash, JobBook), JobError> {
        {
            let name = hex::encode(k);
            let corrupt = |what: String| JobError::Corrupt(format!("job {name}: {what}"));
            let id: [u8; 32] = k
                .try_into()
                .map_err(|_| corrupt("the key is not a 32-byte job id".into()))?;
            let id = blake3::Hash::from_bytes(id);
            let meta: StoredJob = serde_json::from_slice(v)
                .map_err(|e| corrupt(format!("unreadable job entry: {e}")))?;
            let manifest_bytes = self
                .manifests
                .get(id.as_bytes())?
                .ok_or_else(|| corrupt("its manifest is missing".into()))?;
            let manifest = JobManifest::from_bytes(&manifest_bytes)
                .map_err(|e| corrupt(format!("manifest: {e}")))?;
            if manifest.id() != id {
                return Err(corrupt(
                    "the stored manifest does not hash to the job id".into(),
                ));
            }
            let mut shards = vec![ShardBook::default(); manifest.inputs.len()];
            // Per shard in the binary format, how many of its claims are in `coord/claims`.
            let mut expect: std::collections::BTreeMap<u32, u32> = Default::default();
            for item in self.shards.scan_prefix(id.as_bytes()) {
                let (k, v) = item?;
                let index = k
                    .get(32..36)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
                    .filter(|_| k.len() == 36)
                    .ok_or_else(|| corrupt("a shard key is malformed".into()))?;
                let slot = shards
                    .get_mut(index as usize)
                    .ok_or_else(|| corrupt(format!("shard {index} is beyond the job's shards")))?;
                match decode_shard(&v).map_err(|e| corrupt(format!("shard {index}: {e}")))? {
                    ReadShard::Binary { shard, claims } => {
                        *slot = shard;
                        if claims > 0 {
                            expect.insert(index, claims);
                        }
                    }
                    ReadShard::Json(shard) => *slot = shard,
                }
            }
            // A shard's claims are its first `claims` entries here, in order. Entries past
            // that count are claims whose shard entry a crash kept from being written (never
            // acknowledged): ignored, and overwritten by the shard's next claim.
            for item in self.claims.scan_prefix(id.as_bytes()) {
                let (k, v) = item?;
                let (index, n) = match (k.len(), k.get(32..36), k.get(36..40)) {
                    (40, Some(i), Some(n)) => (
                        u32::from_be_bytes(i.try_into().unwrap_or_default()),
                        u32::from_be_bytes(n.try_into().unwrap_or_default()),
                    ),
                    _ => return Err(corrupt("a claim key is malformed".into())),
                };
                if expect.get(&index).is_none_or(|&count| n >= count) {
                    continue;
                }
                let shard = &mut shards[index as usize];
                if shard.claims.len() != n as usize {
                    return Err(corrupt(format!(
                        "shard {index}: claim {} is missing",
                        shard.claims.len()
                    )));
                }
                shard.claims.push(
                    Claim::from_bytes(&v)
                        .map_err(|e| corrupt(format!("shard {index}: claim {n}: {e}")))?,
                );
            }
            for (index, count) in expect {
                let have = shards[index as usize].claims.len();
                if have != count as usize {
                    return Err(corrupt(format!(
                        "shard {index}: {} of its {count} claims are missing",
                        count as usize - have
                    )));
                }
            }
            Ok((
                id,
                JobBook {
                    rates: crate::jobs::credit::JobRates::from_shards(
                        shards
                            .iter()
                            .filter_map(|s| Some((s.credit?.reference_mj, s.verified?.fuel))),
                    ),
                    manifest,
                    status: meta.status,
                    submitted_ms: meta.submitted_ms,
                    finished_ms: meta.finished_ms,
                    shards,
                    declined: meta
                        .declined
                        .iter()
                        .map(|(worker, reason)| {
                            Ok(FailureRec {
                                worker: PublicKey::from_hex(worker)
                                    .map_err(|e| corrupt(format!("a declining household: {e}")))?,
                                reason: reason.clone(),
                            })
                        })
                        .collect::<Result<_, JobError>>()?,
                },
            ))
        }
    }

    /// Rewrites every shard entry still in JSON (written before the binary format) as a
    /// binary entry with its claims in `coord/claims`; returns how many. Runs before the
    /// coordinator loads its jobs, so every shard entry it writes afterwards has its claims
    /// in `coord/claims` (a write stores only the claims the book did not hold yet). Each
    /// shard's claims are written before its entry, so a crash leaves either the JSON entry
    /// (read as before; the claims written meanwhile are ignored and written again) or the
    /// binary one with all its claims. Unflushed: the coordinator's first flush covers it.
    pub fn migrate(&self) -> Result<usize, JobError> {
        let mut n = 0;
        for item in self.shards.iter() {
            let (k, v) = item?;
            if v.first() == Some(&SHARD_V1) {
                continue;
            }
            let name = hex::encode(&k);
            let (Some(job), Some(index)) = (
                k.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                k.get(32..36)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
                    .filter(|_| k.len() == 36),
            ) else {
                return Err(JobError::Corrupt(format!(
                    "shard entry {name}: malformed key"
                )));
            };
            let job = blake3::Hash::from_bytes(job);
            let shard = decode_shard_json(&v)
                .map_err(|e| JobError::Corrupt(format!("shard entry {name}: {e}")))?;
            for (c, claim) in shard.claims.iter().enumerate() {
                self.claims
                    .insert(claim_key(&job, index, c as u32), claim.to_bytes())?;
            }
            self.shards.insert(&k, encode_state(&shard))?;
            n += 1;
        }
        if n > 0 {
            tracing::info!("{n} coordinator shard entries rewritten in the binary format");
        }
        Ok(n)
    }

    /// Every job's own replication policy. One that cannot be read stops the node with an
    /// error naming the job (it would otherwise run under another policy than asked).
    pub fn policies(&self) -> Result<Vec<(blake3::Hash, crate::jobs::trust::Policy)>, JobError> {
        let mut out = Vec::new();
        for item in self.policies.iter() {
            let (k, v) = item?;
            let corrupt = |what: String| {
                JobError::Corrupt(format!(
                    "job {}: its replication policy {what}",
                    hex::encode(&k)
                ))
            };
            let id: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("has a malformed key".into()))?;
            let policy = serde_json::from_slice(&v).map_err(|e| corrupt(e.to_string()))?;
            out.push((blake3::Hash::from_bytes(id), policy));
        }
        Ok(out)
    }

    /// Every suspension: (job, household). Entries that are not a job id and a key (64
    /// bytes) are skipped: a suspension only ever narrows who may lease.
    pub fn suspended(&self) -> Result<Vec<(blake3::Hash, PublicKey)>, JobError> {
        let mut out = Vec::new();
        for item in self.suspended.iter() {
            let (k, _) = item?;
            if let (Some(job), Some(h)) = (
                k.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                k.get(32..).and_then(|b| <[u8; 32]>::try_from(b).ok()),
            ) {
                out.push((blake3::Hash::from_bytes(job), PublicKey(h)));
            }
        }
        Ok(out)
    }

    /// Every household excluded by this coordinator's own votes, with its evidence (JSON:
    /// job, shard, both signed claims), for `hearth trust`.
    pub fn excluded_evidence(&self) -> Result<Vec<(PublicKey, String)>, JobError> {
        let mut out = Vec::new();
        for item in self.excluded.iter() {
            let (k, v) = item?;
            out.push((excluded_key(&k)?, String::from_utf8_lossy(&v).into_owned()));
        }
        Ok(out)
    }

    /// Every entry [`Persist::load`] would refuse: (tree, key, what is wrong), for the
    /// start-up integrity check and `hearth doctor`, which list them all rather than the first.
    pub fn damaged(&self) -> Result<Vec<Damaged>, JobError> {
        let mut out = Vec::new();
        for item in self.jobs.iter() {
            let (k, v) = item?;
            if let Err(e) = self.load_job(&k, &v) {
                out.push((JOBS, k.to_vec(), e.to_string()));
            }
        }
        for item in self.excluded.iter() {
            let (k, _) = item?;
            if let Err(e) = excluded_key(&k) {
                out.push((EXCLUDED, k.to_vec(), e.to_string()));
            }
        }
        // Shards and manifests with no job entry: left by a job entry that was lost.
        for (tree, name) in [
            (&self.shards, SHARDS),
            (&self.claims, CLAIMS),
            (&self.manifests, MANIFESTS),
        ] {
            let mut last: Option<Vec<u8>> = None;
            for item in tree.iter() {
                let (k, _) = item?;
                let job = k.get(..32).unwrap_or(&k[..]).to_vec();
                if last.as_deref() == Some(job.as_slice()) {
                    continue;
                }
                if self.jobs.get(&job)?.is_none() {
                    out.push((
                        name,
                        job.clone(),
                        format!(
                            "{name} entries of job {} whose job entry is missing",
                            hex::encode(&job)
                        ),
                    ));
                }
                last = Some(job);
            }
        }
        Ok(out)
    }

    /// Counts for the integrity checkpoint: (jobs, jobs no longer running, shard entries).
    /// A job entry that cannot be read counts as running (the check reports it anyway).
    pub fn counts(&self) -> Result<(u64, u64, u64), JobError> {
        let (mut jobs, mut finished) = (0u64, 0u64);
        for item in self.jobs.iter() {
            let (_, v) = item?;
            jobs += 1;
            if serde_json::from_slice::<StoredJob>(&v)
                .is_ok_and(|j| !matches!(j.status, JobStatus::Running))
            {
                finished += 1;
            }
        }
        let mut shards = 0u64;
        for item in self.shards.iter() {
            item?;
            shards += 1;
        }
        Ok((jobs, finished, shards))
    }

    fn trees_of(&self, tree: &str) -> Vec<(&sled::Tree, &'static str)> {
        if tree == EXCLUDED {
            vec![(&self.excluded, EXCLUDED)]
        } else {
            vec![
                (&self.jobs, JOBS),
                (&self.manifests, MANIFESTS),
                (&self.shards, SHARDS),
                (&self.claims, CLAIMS),
                (&self.suspended, SUSPENDED),
                (&self.policies, POLICIES),
            ]
        }
    }

    /// Every entry of a job (or an excluded household) named by [`Persist::damaged`], as
    /// (tree, key hex, value hex), so it can be exported before [`Persist::remove`].
    pub fn entries(
        &self,
        tree: &str,
        key: &[u8],
    ) -> Result<Vec<(String, String, String)>, JobError> {
        let mut out = Vec::new();
        for (t, name) in self.trees_of(tree) {
            for item in t.scan_prefix(key) {
                let (k, v) = item?;
                out.push((name.to_string(), hex::encode(&k), hex::encode(&v)));
            }
        }
        Ok(out)
    }

    /// Removes every entry of a job (or an excluded household) named by [`Persist::damaged`].
    pub fn remove(&self, tree: &str, key: &[u8]) -> Result<(), JobError> {
        for (t, _) in self.trees_of(tree) {
            let keys: Vec<sled::IVec> = t.scan_prefix(key).keys().collect::<Result<_, _>>()?;
            for k in keys {
                t.remove(&k)?;
            }
        }
        Ok(())
    }

    /// Writes a new job (with its own policy, if it has one) and flushes: durable when it
    /// returns.
    pub async fn submit(
        &self,
        id: &blake3::Hash,
        job: &JobBook,
        policy: Option<&crate::jobs::trust::Policy>,
    ) -> Result<(), JobError> {
        let meta = encode_job(job);
        let bytes = job.manifest.to_bytes();
        let policy = policy
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| JobError::Corrupt(format!("encoding a policy: {e}")))?;
        // Blind writes from the coordinator's one actor: a batch needs no lock.
        let mut batch = self.kv.batch();
        batch.insert(&self.manifests, id.as_bytes(), bytes.as_slice());
        batch.insert(&self.jobs, id.as_bytes(), meta.as_slice());
        if let Some(p) = &policy {
            batch.insert(&self.policies, id.as_bytes(), p.as_slice());
        }
        self.flush(batch).await
    }

    /// An empty batch to stage updates in ([`Persist::write`]).
    pub fn batch(&self) -> crate::kv::Batch {
        self.kv.batch()
    }

    /// Stages updates in `staged` (write-behind): their new claims are written at once, the
    /// rest (shard entries, job entries, reputation records, exclusions, suspensions) waits
    /// in `staged` until [`Persist::flush_future`] commits it, all or none after a crash,
    /// just before the flush that makes it durable. The actor applies the updates to the
    /// book at once and acknowledges them only after that flush returned (group commit,
    /// `Coordinator::run`), so a shard changed several times between two flushes (leased,
    /// claimed twice, settled) is written once, with its last state. Each update comes with
    /// its job's book as it is before the update (which claims are new, and the job's
    /// entry). A key staged twice keeps the later value. On an error nothing is staged (a
    /// claim already written is past its shard's stored count, which loading ignores).
    ///
    /// Until then readers of these trees (the API's trust view) see the state as of the
    /// previous flush; the coordinator itself reads only its book.
    pub fn write(
        &self,
        staged: &mut crate::kv::Batch,
        updates: &[(&Update, Option<&JobBook>)],
    ) -> Result<(), JobError> {
        let mut batch = self.kv.batch();
        for (update, job) in updates {
            self.stage(&mut batch, update, *job)?;
        }
        staged.append(batch);
        Ok(())
    }

    /// Adds one update's writes to `batch`; its new claims are written at once, before it.
    fn stage(
        &self,
        batch: &mut crate::kv::Batch,
        update: &Update,
        job: Option<&JobBook>,
    ) -> Result<(), JobError> {
        // Exclusions and carried records are the coordinator's, whether or not a job's state
        // changed with them (a rotated key's, `book::rotated`, come with none).
        for (household, evidence) in &update.exclude {
            batch.insert(&self.excluded, household.0, evidence.as_bytes());
        }
        self.reputation
            .stage_carried(batch, &update.carry, &update.uncarry);
        let Some(id) = update.job else {
            // No job's state changed; the reputation records (if any) alone.
            self.reputation.stage(batch, &update.reputation);
            return Ok(());
        };
        // A shard's new claims go to `coord/claims` first, each on its own (one claim, one
        // insert: atomic), and the shard entry, which counts them, after them: sled recovers
        // a prefix of its log, so a crash in between leaves claims past the stored count,
        // which loading ignores. Claims already written (those of the book's current state)
        // are not written again.
        if let Some((i, s)) = &update.shard {
            let before = job.and_then(|j| j.shards.get(*i as usize));
            let from = match before {
                Some(b) if s.claims.starts_with(&b.claims) => b.claims.len(),
                _ => 0,
            };
            for (n, c) in s.claims.iter().enumerate().skip(from) {
                self.claims
                    .insert(claim_key(&id, *i, n as u32), c.to_bytes())?;
            }
            batch.insert(&self.shards, shard_key(&id, *i), encode_state(s));
        }
        // With the shard entry that counts the result they change: a crash between the two
        // would count the result again when the restarted coordinator decides the shard.
        self.reputation.stage(batch, &update.reputation);
        if let (true, Some(job)) = (update.status.is_some() || update.declined.is_some(), job) {
            let (status, finished_ms) = update
                .status
                .clone()
                .unwrap_or_else(|| (job.status.clone(), job.finished_ms));
            let declined = update.declined.as_deref().unwrap_or(&job.declined);
            let meta = serde_json::to_vec(&StoredJob {
                status,
                submitted_ms: job.submitted_ms,
                finished_ms,
                declined: encode_declined(declined),
            })
            .map_err(|e| JobError::Corrupt(format!("encoding a job entry: {e}")))?;
            batch.insert(&self.jobs, id.as_bytes(), meta);
        }
        for household in &update.suspend {
            batch.insert(
                &self.suspended,
                [id.as_bytes().as_slice(), household.0.as_slice()].concat(),
                [],
            );
        }
        Ok(())
    }

    /// Commits `staged` and flushes the whole database, borrowing nothing: the actor polls
    /// it while it serves further requests. Both run on a blocking thread
    /// (`kv::commit_and_flush`); when it returns, `staged` and every write made before it was
    /// created are durable. One runs at a time (the group commit's one flush in flight), so
    /// two staged batches never write the same key at once.
    pub fn flush_future(&self, staged: crate::kv::Batch) -> Flush {
        // One flush covers every tree of the database.
        let tree = self.jobs.clone();
        Box::pin(async move {
            crate::kv::commit_and_flush(staged, &tree).await?;
            Ok(())
        })
    }

    /// [`Persist::flush_future`], awaited.
    pub async fn flush(&self, staged: crate::kv::Batch) -> Result<(), JobError> {
        self.flush_future(staged).await
    }
}

/// A flush in flight ([`Persist::flush_future`]).
pub type Flush = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobError>> + Send>>;

fn encode_job(job: &JobBook) -> Vec<u8> {
    serde_json::to_vec(&StoredJob {
        status: job.status.clone(),
        submitted_ms: job.submitted_ms,
        finished_ms: job.finished_ms,
        declined: encode_declined(&job.declined),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::{EnergyMethod, WorkRecord};
    use crate::model::{Assembly, JobLimits};

    fn manifest(submitter: &Identity) -> JobManifest {
        JobManifest {
            module: blake3::hash(b"m"),
            inputs: vec![blake3::hash(b"a"), blake3::hash(b"b")],
            limits: JobLimits::default(),
            replication: 2,
            assembly: Assembly::Concat,
            submitter: submitter.public(),
            created_ms: 1,
        }
    }

    /// The reputation records an update changes are written by the update's own batch,
    /// with the shard entry that counts the result (they were written apart, by a batch of
    /// their own: a crash between the two counted the result twice after a restart).
    #[tokio::test]
    async fn reputation_records_are_written_with_the_shard_that_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let p = Persist::open(&db).unwrap();
        let submitter = Identity::from_seed([1; 32]);
        let m = manifest(&submitter);
        let id = m.id();
        let job = super::super::book::Book::new_job(m, 10);
        p.submit(&id, &job, None).await.unwrap();
        let record = crate::jobs::trust::Record {
            verified: 3,
            wrong: 0,
            disputed: 1,
            first_seen_ms: 10,
            last_seen_ms: 20,
        };
        let worker = Identity::from_seed([2; 32]).public();
        let shard = ShardBook {
            verified: Some(Outcome {
                output: blake3::hash(b"out"),
                fuel: 5,
            }),
            ..ShardBook::default()
        };
        let update = Update {
            job: Some(id),
            shard: Some((0, shard)),
            reputation: vec![(worker, record)],
            ..Update::default()
        };
        let mut staged = p.batch();
        p.write(&mut staged, &[(&update, Some(&job))]).unwrap();
        // An update that changes no job's state still records what it changes.
        let other = Identity::from_seed([3; 32]).public();
        let alone = Update {
            reputation: vec![(other, record)],
            ..Update::default()
        };
        p.write(&mut staged, &[(&alone, None)]).unwrap();
        p.flush(staged).await.unwrap();
        drop(p);
        let mut stored = crate::jobs::trust::store::TrustStore::open(&db)
            .unwrap()
            .load()
            .unwrap();
        stored.sort_by_key(|(h, _)| h.0);
        let mut expected = vec![(worker, record), (other, record)];
        expected.sort_by_key(|(h, _)| h.0);
        assert_eq!(stored, expected);
    }

    fn signed_claim(m: &JobManifest, shard: u32, worker: &Identity, nonce: u8) -> Claim {
        claim_of(m, shard, worker, nonce, 5, 1)
    }

    /// A claim on `shard` of `m` by `worker`, output "out", with the given fuel and energy.
    fn claim_of(
        m: &JobManifest,
        shard: u32,
        worker: &Identity,
        nonce: u8,
        fuel: u64,
        energy_mj: u64,
    ) -> Claim {
        Claim::sign(
            WorkRecord {
                job: m.id(),
                shard,
                module: m.module,
                input: m.inputs[shard as usize],
                output: blake3::hash(b"out"),
                worker: worker.public(),
                submitter: m.submitter,
                fuel,
                energy_mj,
                method: EnergyMethod::CpuEstimate,
                start_ms: 1,
                end_ms: 2,
                nonce: [nonce; 16],
            },
            worker,
        )
        .unwrap()
    }

    /// A shard with every field set: one lease and the claim (by its worker), a failure by
    /// `failed_by`, verified on the claim's outcome, the claim settled.
    fn full_shard(
        claim: Claim,
        failed_by: PublicKey,
        failed: Option<String>,
        replicas: u8,
    ) -> ShardBook {
        let fuel = claim.record.fuel;
        ShardBook {
            leases: vec![LeaseRec {
                worker: claim.record.worker,
                nonce: [4; 16],
                granted_ms: 5,
                deadline_ms: 6,
            }],
            claims: vec![claim],
            failures: vec![FailureRec {
                worker: failed_by,
                reason: "trap".into(),
            }],
            verified: Some(Outcome {
                output: blake3::hash(b"out"),
                fuel,
            }),
            settled: vec![0],
            failed,
            credit: Some(ShardCredit {
                reference_mj: 7,
                agreeing: 1,
                replicas,
            }),
        }
    }

    #[tokio::test]
    async fn shards_round_trip_one_entry_each_and_damage_names_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let p = Persist::open(&db).unwrap();
        let submitter = Identity::from_seed([1; 32]);
        let worker = Identity::from_seed([2; 32]);
        let m = manifest(&submitter);
        let id = m.id();
        let job = super::super::book::Book::new_job(m.clone(), 10);
        p.submit(&id, &job, None).await.unwrap();
        let claim = signed_claim(&m, 1, &worker, 3);
        let shard = full_shard(claim, submitter.public(), None, 1);
        let update = Update {
            job: Some(id),
            shard: Some((1, shard.clone())),
            status: None,
            exclude: vec![(worker.public(), "{}".into())],
            ..Update::default()
        };
        let mut staged = p.batch();
        p.write(&mut staged, &[(&update, Some(&job))]).unwrap();
        p.flush(staged).await.unwrap();
        // Only the changed shard has an entry.
        assert_eq!(p.shards.len(), 1);
        let (jobs, excluded) = p.load().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].1.shards[0], ShardBook::default());
        assert_eq!(jobs[0].1.shards[1], shard);
        assert_eq!(excluded, vec![worker.public()]);
        // A damaged shard entry stops loading with an error naming the job and the shard.
        p.shards
            .insert(shard_key(&id, 0), b"{not json".to_vec())
            .unwrap();
        let err = p.load().unwrap_err().to_string();
        assert!(
            err.contains(&id.to_hex().to_string()) && err.contains("shard 0"),
            "{err}"
        );
        // So does a damaged job entry.
        p.shards.remove(shard_key(&id, 0)).unwrap();
        p.jobs.insert(id.as_bytes(), b"garbage".to_vec()).unwrap();
        let err = p.load().unwrap_err().to_string();
        assert!(err.contains(&id.to_hex().to_string()), "{err}");
    }

    /// Claims live in `coord/claims`, each written once: a shard's later writes store only
    /// the claims it gained; a claim left past the stored count by a crash is ignored and a
    /// missing one is named; a JSON entry from before the binary format is read, and
    /// rewritten by `migrate` with its claims moved out.
    #[tokio::test]
    async fn claims_are_written_once_and_loaded_with_their_shard() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let p = Persist::open(&db).unwrap();
        let m = manifest(&Identity::from_seed([1; 32]));
        let id = m.id();
        let (a, b) = (Identity::from_seed([2; 32]), Identity::from_seed([3; 32]));
        let mut job = super::super::book::Book::new_job(m.clone(), 10);
        p.submit(&id, &job, None).await.unwrap();
        let write = |job: &mut JobBook, shard: ShardBook| {
            let update = Update {
                job: Some(id),
                shard: Some((0, shard.clone())),
                ..Update::default()
            };
            let mut staged = p.batch();
            p.write(&mut staged, &[(&update, Some(&*job))]).unwrap();
            staged.commit().unwrap();
            job.shards[0] = shard;
        };
        let one = ShardBook {
            claims: vec![signed_claim(&m, 0, &a, 1)],
            ..ShardBook::default()
        };
        write(&mut job, one.clone());
        assert_eq!(p.claims.len(), 1);
        let two = ShardBook {
            claims: vec![signed_claim(&m, 0, &a, 1), signed_claim(&m, 0, &b, 2)],
            ..ShardBook::default()
        };
        write(&mut job, two.clone());
        let settled = ShardBook {
            settled: vec![0, 1],
            ..two.clone()
        };
        write(&mut job, settled.clone());
        assert_eq!(p.claims.len(), 2, "a claim is written once");
        assert_eq!(p.load().unwrap().0[0].1.shards[0], settled);
        // A claim a crash left past the count: ignored.
        p.claims
            .insert(claim_key(&id, 0, 2), signed_claim(&m, 0, &a, 9).to_bytes())
            .unwrap();
        assert_eq!(p.load().unwrap().0[0].1.shards[0], settled);
        assert!(p.damaged().unwrap().is_empty());
        // A claim the entry counts is missing: the error names the job and the shard.
        p.claims.remove(claim_key(&id, 0, 1)).unwrap();
        let err = p.load().unwrap_err().to_string();
        assert!(
            err.contains(&id.to_hex().to_string()) && err.contains("shard 0"),
            "{err}"
        );
        assert_eq!(p.damaged().unwrap().len(), 1);
        // An entry from before the binary format (claims inside) is read, then migrated.
        p.claims.clear().unwrap();
        p.shards
            .insert(shard_key(&id, 0), encode_shard_json(&settled))
            .unwrap();
        assert_eq!(p.load().unwrap().0[0].1.shards[0], settled);
        assert_eq!(p.migrate().unwrap(), 1);
        assert_eq!(p.migrate().unwrap(), 0);
        assert_eq!(p.claims.len(), 2);
        assert_eq!(p.load().unwrap().0[0].1.shards[0], settled);
        // Removing a damaged job removes its claims with it.
        p.remove(JOBS, id.as_bytes()).unwrap();
        assert!(p.claims.is_empty() && p.shards.is_empty());
    }

    /// Written behind: a shard changed three times before the flush (leased, claimed,
    /// settled) is not in its tree until the flush commits it, and then is written once,
    /// with its last state; its claims are written at once, each once.
    #[tokio::test]
    async fn a_shard_changed_between_two_flushes_is_written_once_by_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::test_db(dir.path()).unwrap();
        let p = Persist::open(&db).unwrap();
        let m = manifest(&Identity::from_seed([1; 32]));
        let id = m.id();
        let a = Identity::from_seed([2; 32]);
        let mut job = super::super::book::Book::new_job(m.clone(), 10);
        p.submit(&id, &job, None).await.unwrap();
        let mut writes = p.shards.watch_prefix(id.as_bytes());
        let mut staged = p.batch();
        let leased = ShardBook {
            leases: vec![LeaseRec {
                worker: a.public(),
                nonce: [1; 16],
                granted_ms: 10,
                deadline_ms: 70_000,
            }],
            ..ShardBook::default()
        };
        let claimed = ShardBook {
            claims: vec![signed_claim(&m, 0, &a, 1)],
            ..leased.clone()
        };
        let settled = ShardBook {
            leases: Vec::new(),
            settled: vec![0],
            ..claimed.clone()
        };
        for shard in [leased, claimed, settled.clone()] {
            let update = Update {
                job: Some(id),
                shard: Some((0, shard.clone())),
                ..Update::default()
            };
            p.write(&mut staged, &[(&update, Some(&job))]).unwrap();
            job.shards[0] = shard;
        }
        assert_eq!(p.claims.len(), 1, "claims are written at once, each once");
        assert!(p.shards.is_empty(), "the shard entry waits for the flush");
        assert!(p.load().unwrap().0[0].1.shards[0].leases.is_empty());
        p.flush(staged).await.unwrap();
        let mut events = 0;
        while writes
            .next_timeout(std::time::Duration::from_millis(200))
            .is_ok()
        {
            events += 1;
        }
        assert_eq!(
            events, 1,
            "one write of the shard entry, not one per change"
        );
        drop(p);
        let p = Persist::open(&db).unwrap();
        assert_eq!(p.load().unwrap().0[0].1.shards[0], settled);
    }

    /// A suspension from one job (a vote lost among households on probation) is written with
    /// its update and read back after a restart: before, it lived in memory only and a
    /// restart lifted it (issue 10).
    #[tokio::test]
    async fn suspensions_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let submitter = Identity::from_seed([1; 32]);
        let worker = Identity::from_seed([2; 32]);
        let m = manifest(&submitter);
        let id = m.id();
        {
            let db = crate::node::test_db(dir.path()).unwrap();
            let p = Persist::open(&db).unwrap();
            let job = super::super::book::Book::new_job(m.clone(), 10);
            p.submit(&id, &job, None).await.unwrap();
            let update = Update {
                job: Some(id),
                suspend: vec![worker.public()],
                ..Update::default()
            };
            let mut staged = p.batch();
            p.write(&mut staged, &[(&update, Some(&job))]).unwrap();
            p.flush(staged).await.unwrap();
        }
        let db = crate::node::reopen_db(dir.path());
        let p = Persist::open(&db).unwrap();
        assert_eq!(p.suspended().unwrap(), vec![(id, worker.public())]);
        assert!(p.policies().unwrap().is_empty());
        // Removing a damaged job removes its suspensions with it.
        p.remove(JOBS, id.as_bytes()).unwrap();
        assert!(p.suspended().unwrap().is_empty());
    }

    /// A job submitted with its own policy (its allow-list included) runs under it after a
    /// restart too.
    #[tokio::test]
    async fn a_jobs_own_policy_is_kept_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(&Identity::from_seed([1; 32]));
        let id = m.id();
        let policy = crate::jobs::trust::Policy {
            min_replicas: 2,
            max_replicas: 5,
            spot_check_permille: 250,
            probation: true,
            own_replica: true,
            allow: vec![Identity::from_seed([9; 32]).public()],
        };
        {
            let db = crate::node::test_db(dir.path()).unwrap();
            let p = Persist::open(&db).unwrap();
            let job = super::super::book::Book::new_job(m.clone(), 10);
            p.submit(&id, &job, Some(&policy)).await.unwrap();
        }
        let db = crate::node::reopen_db(dir.path());
        let p = Persist::open(&db).unwrap();
        assert_eq!(p.policies().unwrap(), vec![(id, policy.clone())]);
        let mut book = super::super::book::Book::new(super::super::book::LeaseTerms {
            lease_ms: 1,
            max_total_ms: 1,
        });
        let (jobs, _) = p.load().unwrap();
        for (id, job) in jobs {
            book.insert_job(id, job);
        }
        for (job, policy) in p.policies().unwrap() {
            book.set_policy(job, policy);
        }
        assert_eq!(*book.policy(&id, book.job(&id).unwrap()), policy);
    }

    /// What a lease and a claim write does not grow with the job: one shard's entry.
    #[test]
    fn a_lease_or_claim_writes_one_small_entry() {
        let submitter = Identity::from_seed([1; 32]);
        let worker = Identity::from_seed([2; 32]);
        let lease = LeaseRec {
            worker: worker.public(),
            nonce: [4; 16],
            granted_ms: u64::MAX,
            deadline_ms: u64::MAX,
        };
        let leased = ShardBook {
            leases: vec![lease.clone()],
            ..ShardBook::default()
        };
        let m = manifest(&submitter);
        let claim = claim_of(&m, 0, &worker, 3, u64::MAX, u64::MAX);
        let claimed = ShardBook {
            leases: vec![lease],
            claims: vec![claim.clone(), claim],
            ..ShardBook::default()
        };
        let (l, c) = (encode_state(&leased).len(), encode_state(&claimed).len());
        let claim_len = claimed.claims[0].to_bytes().len();
        eprintln!(
            "one shard entry: {l} bytes with a lease, {c} bytes with a lease and two claims \
             (each claim {claim_len} bytes in coord/claims, written once)"
        );
        assert!(l < 128 && c < 128 && claim_len < 512, "{l} {c} {claim_len}");
        let mut bare = claimed.clone();
        bare.claims.clear();
        assert_eq!(
            decode_shard(&encode_state(&claimed)).unwrap(),
            ReadShard::Binary {
                shard: bare,
                claims: 2
            }
        );
    }

    /// Entries written as JSON before the binary format are read as they were; every prefix
    /// of a binary entry is refused, not misread.
    #[test]
    fn json_shard_entries_are_still_read_and_damage_is_refused() {
        let worker = Identity::from_seed([2; 32]);
        let m = manifest(&Identity::from_seed([1; 32]));
        let claim = claim_of(&m, 0, &worker, 3, 9, 3);
        let shard = full_shard(claim, worker.public(), Some("no".into()), 2);
        assert_eq!(
            decode_shard(&encode_shard_json(&shard)).unwrap(),
            ReadShard::Json(shard.clone())
        );
        let bytes = encode_state(&shard);
        let mut bare = shard.clone();
        bare.claims.clear();
        assert_eq!(
            decode_shard(&bytes).unwrap(),
            ReadShard::Binary {
                shard: bare,
                claims: 1
            }
        );
        for n in 1..bytes.len() {
            assert!(
                decode_shard(&bytes[..n]).is_err(),
                "prefix of {n} bytes read"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_shard(&trailing).is_err());
    }
}
