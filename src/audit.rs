//! The auditor's log (bootstrap nodes): every signed commitment heard on
//! `hearth/commitments/1`, kept with the moment this node first saw it, and every
//! equivocation heard (two different commitments one coordinator signed with one number).
//!
//! A commitment proves that its coordinator counted a receipt among those of commitment `seq`;
//! it does not prove that the commitment was ever shown to anyone, or when. This log does:
//! a commitment in it was public no later than its first-seen time, and a second body for a
//! number already logged is kept beside the first, the pair being the proof
//! (docs/receipts.md, "Commitments and inclusion proofs"). It is what a revocation of a
//! stolen key needs to name the commitments made before the theft (docs/threat-model.md).
//!
//! It also keeps, per coordinator, the strictest revocation statement heard for its key
//! (`model::revoke`: the one with the smallest `keep`), with when it was first heard, so a
//! verifier given this log applies it (docs/receipts.md, "Revoking a key").
//!
//! And it keeps every household's key events (`model::rotate`: the log by which a household
//! rotates its key) the same way as commitments: the first event heard under each (household,
//! number), with when, and a second, different one beside it as the proof of a contest. A
//! verifier given this log takes the first one heard (docs/receipts.md, "Rotating a key"):
//! a thief who stole a household's key after it fixed its next one cannot undo the rotation
//! with an event of its own signed later.
//!
//! Owns the `audit/commitments`, `audit/equivocations`, `audit/revocations`,
//! `audit/key-events` and `audit/key-contests` trees (docs/storage.md) and nothing else. Only commitments that passed the gossip check (they decode, `count` is 1 to 65 536,
//! the signature verifies, the signer is the gossip author) reach [`AuditLog::hear`].
//!
//! Bounds: everything in a commitment is its signer's claim, `seq` included; the log stores
//! at most [`MAX_LOGGED`] commitments (about 45 MB) and counts, without storing, what comes
//! after (the first commitments heard are the ones a first-seen log must keep), and at most
//! one equivocation for each commitment stored, and one revocation for each coordinator that
//! has a commitment stored (a statement for a key the log holds nothing of is not kept: keys
//! cost nothing to make, commitments count against the bound). Key events are logged for any
//! household, radiators that never coordinate included, up to [`MAX_KEY_EVENTS`] (then
//! counted, not kept), and at most one contest per event stored. Listing one
//! coordinator's log returns at most [`MAX_PAGE`] entries per call.
//!
//! Size: about 690 lines of code and 210 of unit tests: commitments, revocations and key
//! events each have their own first-seen rule and stored form, and share the one log a
//! verifier reads (`GET /v1/audit/{key}`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::Tree;

use crate::identity::PublicKey;
use crate::model::commit::{Commitment, COMMITMENT_LEN};
use crate::model::revoke::{Revocation, REVOCATION_LEN};
use crate::model::rotate::{KeyEvent, EVENT_LEN};

const LOG_TREE: &str = "audit/commitments";
const EQUIVOCATIONS_TREE: &str = "audit/equivocations";
const REVOCATIONS_TREE: &str = "audit/revocations";
const KEY_EVENTS_TREE: &str = "audit/key-events";
const KEY_CONTESTS_TREE: &str = "audit/key-contests";

/// Most key events the log stores: 65 536 entries of 190 bytes (12 MB). A household writes one
/// when it starts its key log and one per rotation; after the bound, events are counted, not
/// kept (the first heard are the ones a first-seen log must keep).
pub const MAX_KEY_EVENTS: u64 = 1 << 16;

/// A stored key event: version ‖ first seen (u64 big-endian ms) ‖ the signed event, under
/// household ‖ seq (u64 big-endian).
const KEY_EVENT_ENTRY_LEN: usize = 1 + 8 + EVENT_LEN;

/// A stored revocation: version ‖ first seen (u64 big-endian ms) ‖ the signed statement, under
/// the 32 bytes of its key.
const REVOCATION_ENTRY_LEN: usize = 1 + 8 + REVOCATION_LEN;

/// Most commitments the log stores: 262 144 entries of 170 bytes. A coordinator seals at most one commitment per round of 5 s (17 280 a day), so
/// this holds weeks of a busy network's commitments; after it, commitments are counted, not
/// kept, and `hearth audit` says how many.
pub const MAX_LOGGED: u64 = 1 << 18;

/// Most commitments one listing of a coordinator's log returns.
pub const MAX_PAGE: usize = 1000;

/// Format byte of a stored entry.
const ENTRY_VERSION: u8 = 1;

/// A stored entry: version ‖ first seen (u64 big-endian ms) ‖ the signed commitment.
const ENTRY_LEN: usize = 1 + 8 + COMMITMENT_LEN;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log's database failed: {0}")]
    Db(#[from] sled::Error),
    #[error("the audit log's entry {key} is damaged: {reason}")]
    Damaged { key: String, reason: String },
}

/// What hearing a commitment did to the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// First time this coordinator's number was heard: logged.
    New,
    /// The same signed commitment again (gossip repeats): nothing changed.
    Again,
    /// Another body for a number already logged: kept beside the first (the first
    /// equivocation per number, even in a full log; later ones are [`Heard::Again`]).
    Equivocation { first: Box<Commitment> },
    /// The log is full: counted, not stored.
    Full,
}

/// What hearing a revocation statement did to the log.
#[derive(Debug, PartialEq, Eq)]
pub enum HeardRevocation {
    /// The first statement heard for this key, or one with a smaller `keep`: kept.
    Kept,
    /// The key's line is drawn already at or below this statement's `keep`: nothing changed.
    Again,
    /// The log holds no commitment of this key: not kept (nothing logged for it to void).
    Unknown,
}

/// What hearing a key event did to the log.
#[derive(Debug, PartialEq, Eq)]
pub enum HeardKeyEvent {
    /// First event heard under its household and number: logged.
    New,
    /// The same event again, or a third one for a number already contested: nothing changed.
    Again,
    /// Another event under a number already logged: kept beside the first as the proof.
    Contest,
    /// The log of key events is full: counted, not stored.
    Full,
}

/// Cheap, cloneable handle on the log.
#[derive(Clone)]
pub struct AuditLog {
    log: Tree,
    equivocations: Tree,
    revocations: Tree,
    key_events: Tree,
    key_contests: Tree,
    /// Key events stored.
    key_events_stored: Arc<AtomicU64>,
    /// Key events not stored because their log was full, since this node started.
    key_events_dropped: Arc<AtomicU64>,
    /// Commitments stored.
    stored: Arc<AtomicU64>,
    /// Commitments not stored because the log was full, since this node started.
    dropped: Arc<AtomicU64>,
}

fn key_of(coordinator: &PublicKey, seq: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&coordinator.0);
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn entry(c: &Commitment, seen_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_LEN);
    v.push(ENTRY_VERSION);
    v.extend_from_slice(&seen_ms.to_be_bytes());
    v.extend_from_slice(&c.to_bytes());
    v
}

fn decode(key: &[u8], value: &[u8]) -> Result<(u64, Commitment), AuditError> {
    let damaged = |reason: String| AuditError::Damaged {
        key: hex::encode(key),
        reason,
    };
    if value.len() != ENTRY_LEN || value[0] != ENTRY_VERSION {
        return Err(damaged(format!(
            "{} bytes, version {:?}",
            value.len(),
            value.first()
        )));
    }
    let seen = u64::from_be_bytes(value[1..9].try_into().expect("8 bytes"));
    let c = Commitment::from_bytes(&value[9..]).map_err(|e| damaged(e.to_string()))?;
    if key_of(&c.coordinator, c.seq)[..] != *key {
        return Err(damaged("its key does not name its commitment".into()));
    }
    Ok((seen, c))
}

fn decode_revocation(key: &[u8], value: &[u8]) -> Result<(u64, Revocation), AuditError> {
    let damaged = |reason: String| AuditError::Damaged {
        key: hex::encode(key),
        reason,
    };
    if value.len() != REVOCATION_ENTRY_LEN || value[0] != ENTRY_VERSION {
        return Err(damaged(format!("a revocation of {} bytes", value.len())));
    }
    let seen = u64::from_be_bytes(value[1..9].try_into().expect("8 bytes"));
    let r = Revocation::from_bytes(&value[9..]).map_err(|e| damaged(e.to_string()))?;
    if r.key.0[..] != *key {
        return Err(damaged("its key does not name its revocation".into()));
    }
    Ok((seen, r))
}

fn decode_key_event(key: &[u8], value: &[u8]) -> Result<(u64, KeyEvent), AuditError> {
    let damaged = |reason: String| AuditError::Damaged {
        key: hex::encode(key),
        reason,
    };
    if value.len() != KEY_EVENT_ENTRY_LEN || value[0] != ENTRY_VERSION {
        return Err(damaged(format!("a key event of {} bytes", value.len())));
    }
    let seen = u64::from_be_bytes(value[1..9].try_into().expect("8 bytes"));
    let e = KeyEvent::from_bytes(&value[9..]).map_err(|e| damaged(e.to_string()))?;
    if key_of(&e.household, e.seq)[..] != *key {
        return Err(damaged("its key does not name its key event".into()));
    }
    Ok((seen, e))
}

impl AuditLog {
    /// Opens the log's trees in `db`, counting what they hold (once, linear in the log).
    pub fn open(db: &sled::Db) -> Result<AuditLog, AuditError> {
        let log = db.open_tree(LOG_TREE)?;
        let equivocations = db.open_tree(EQUIVOCATIONS_TREE)?;
        let revocations = db.open_tree(REVOCATIONS_TREE)?;
        let key_events = db.open_tree(KEY_EVENTS_TREE)?;
        let key_contests = db.open_tree(KEY_CONTESTS_TREE)?;
        let stored = log.len() as u64;
        Ok(AuditLog {
            log,
            equivocations,
            revocations,
            key_events_stored: Arc::new(AtomicU64::new(key_events.len() as u64)),
            key_events_dropped: Arc::new(AtomicU64::new(0)),
            key_events,
            key_contests,
            stored: Arc::new(AtomicU64::new(stored)),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Logs `c`, heard at `now_ms`, unless this coordinator's number is logged already (then
    /// [`Heard::Again`], or [`Heard::Equivocation`] for another body) or the log is full. The
    /// caller has checked the commitment's signature. Not flushed here: sled writes it within
    /// half a second, and a crash before loses a first-seen time, never a stored one's.
    pub fn hear(&self, c: &Commitment, now_ms: u64) -> Result<Heard, AuditError> {
        let key = key_of(&c.coordinator, c.seq);
        if let Some(value) = self.log.get(key)? {
            let (_, first) = decode(&key, &value)?;
            if first.body() == c.body() {
                return Ok(Heard::Again);
            }
            // One proof per number is enough; so the equivocations stored never outnumber
            // the commitments, and need no bound of their own.
            let stored = self.equivocations.compare_and_swap(
                key,
                None as Option<&[u8]>,
                Some(entry(c, now_ms)),
            )?;
            return Ok(match stored {
                Ok(()) => Heard::Equivocation {
                    first: Box::new(first),
                },
                Err(_) => Heard::Again,
            });
        }
        if !self.room() {
            return Ok(Heard::Full);
        }
        match self
            .log
            .compare_and_swap(key, None as Option<&[u8]>, Some(entry(c, now_ms)))?
        {
            Ok(()) => {
                self.stored.fetch_add(1, Ordering::Relaxed);
                Ok(Heard::New)
            }
            // Logged meanwhile by another caller: heard again, judged then.
            Err(_) => self.hear(c, now_ms),
        }
    }

    /// Keeps `r`, heard at `now_ms`, if it draws its key's line lower than any statement kept
    /// so far and the log holds a commitment of that key. The caller has checked its
    /// signature. Not flushed here, as [`AuditLog::hear`].
    pub fn hear_revocation(
        &self,
        r: &Revocation,
        now_ms: u64,
    ) -> Result<HeardRevocation, AuditError> {
        if self.log.scan_prefix(r.key.0).next().transpose()?.is_none() {
            return Ok(HeardRevocation::Unknown);
        }
        let mut entry = Vec::with_capacity(REVOCATION_ENTRY_LEN);
        entry.push(ENTRY_VERSION);
        entry.extend_from_slice(&now_ms.to_be_bytes());
        entry.extend_from_slice(&r.to_bytes());
        loop {
            let old = self.revocations.get(r.key.0)?;
            if let Some(v) = &old {
                let (_, kept) = decode_revocation(&r.key.0, v)?;
                if kept.keep <= r.keep {
                    return Ok(HeardRevocation::Again);
                }
            }
            if self
                .revocations
                .compare_and_swap(r.key.0, old, Some(entry.as_slice()))?
                .is_ok()
            {
                return Ok(HeardRevocation::Kept);
            }
        }
    }

    /// Logs a household's key event `e`, heard at `now_ms`: the first one under its household
    /// and number is kept with that time; a different one later is kept beside it as the
    /// proof of a contest (one per number). The caller has checked its signature
    /// (`KeyEvent::verify`). Not flushed here, as [`AuditLog::hear`].
    pub fn hear_key_event(&self, e: &KeyEvent, now_ms: u64) -> Result<HeardKeyEvent, AuditError> {
        let key = key_of(&e.household, e.seq);
        let mut value = Vec::with_capacity(KEY_EVENT_ENTRY_LEN);
        value.push(ENTRY_VERSION);
        value.extend_from_slice(&now_ms.to_be_bytes());
        value.extend_from_slice(&e.to_bytes());
        if let Some(first) = self.key_events.get(key)? {
            let (_, first) = decode_key_event(&key, &first)?;
            if first == *e {
                return Ok(HeardKeyEvent::Again);
            }
            let stored =
                self.key_contests
                    .compare_and_swap(key, None as Option<&[u8]>, Some(value))?;
            return Ok(match stored {
                Ok(()) => HeardKeyEvent::Contest,
                Err(_) => HeardKeyEvent::Again,
            });
        }
        if self.key_events_stored.load(Ordering::Relaxed) >= MAX_KEY_EVENTS {
            self.key_events_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(HeardKeyEvent::Full);
        }
        match self
            .key_events
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))?
        {
            Ok(()) => {
                self.key_events_stored.fetch_add(1, Ordering::Relaxed);
                Ok(HeardKeyEvent::New)
            }
            Err(_) => self.hear_key_event(e, now_ms),
        }
    }

    /// `household`'s key events as logged (the first heard per number, in order) and every
    /// contest of them.
    fn key_log(
        &self,
        household: &PublicKey,
    ) -> Result<(Vec<LoggedKeyEvent>, Vec<KeyContest>), AuditError> {
        let mut events = Vec::new();
        for item in self.key_events.scan_prefix(household.0) {
            let (key, value) = item?;
            let (seen, e) = decode_key_event(&key, &value)?;
            events.push(LoggedKeyEvent::of(&e, seen));
        }
        let mut contests = Vec::new();
        for item in self.key_contests.scan_prefix(household.0) {
            let (key, value) = item?;
            let (seen, second) = decode_key_event(&key, &value)?;
            let first = match self.key_events.get(&key)? {
                Some(v) => decode_key_event(&key, &v)?,
                None => {
                    return Err(AuditError::Damaged {
                        key: hex::encode(&key),
                        reason: "a contest without the key event it contests".into(),
                    })
                }
            };
            contests.push(KeyContest {
                seq: second.seq,
                first: LoggedKeyEvent::of(&first.1, first.0),
                second: LoggedKeyEvent::of(&second, seen),
            });
        }
        Ok((events, contests))
    }

    /// Key events stored, and those heard but not kept (the log full) since the node started.
    pub fn key_event_counts(&self) -> (u64, u64) {
        (
            self.key_events_stored.load(Ordering::Relaxed),
            self.key_events_dropped.load(Ordering::Relaxed),
        )
    }

    /// The revocation kept for `key`, with when it was first heard.
    fn revocation(&self, key: &PublicKey) -> Result<Option<LoggedRevocation>, AuditError> {
        let Some(v) = self.revocations.get(key.0)? else {
            return Ok(None);
        };
        let (seen, r) = decode_revocation(&key.0, &v)?;
        Ok(Some(LoggedRevocation::of(&r, seen)))
    }

    /// Whether another entry may be stored; counts a refusal.
    fn room(&self) -> bool {
        if self.stored.load(Ordering::Relaxed) < MAX_LOGGED {
            return true;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// What the metrics show without reading the log: commitments stored, commitments heard
    /// but not kept (the log full) since this node started, and equivocations logged (at most
    /// one per commitment stored; read from their tree, which holds few).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.stored.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.equivocations.len() as u64,
        )
    }

    /// Every coordinator in the log, with what was heard of it. Reads the whole log.
    pub fn summary(&self) -> Result<AuditSummary, AuditError> {
        let mut coordinators: Vec<CoordinatorSummary> = Vec::new();
        for item in self.log.iter() {
            let (key, value) = item?;
            let (seen, c) = decode(&key, &value)?;
            let hex = c.coordinator.to_hex();
            match coordinators.last_mut() {
                // Keys sort by coordinator, then by number.
                Some(s) if s.coordinator == hex => {
                    s.commitments += 1;
                    s.last_seq = c.seq;
                    s.receipts += u64::from(c.count);
                    s.first_seen_ms = s.first_seen_ms.min(seen);
                    s.last_seen_ms = s.last_seen_ms.max(seen);
                }
                _ => coordinators.push(CoordinatorSummary {
                    coordinator: hex,
                    commitments: 1,
                    first_seq: c.seq,
                    last_seq: c.seq,
                    receipts: u64::from(c.count),
                    first_seen_ms: seen,
                    last_seen_ms: seen,
                    equivocations: 0,
                }),
            }
        }
        for key in self.equivocations.iter().keys() {
            let key = key?;
            let hex = hex::encode(&key[..32]);
            if let Some(s) = coordinators.iter_mut().find(|s| s.coordinator == hex) {
                s.equivocations += 1;
            }
        }
        Ok(AuditSummary {
            stored: self.stored.load(Ordering::Relaxed),
            capacity: MAX_LOGGED,
            dropped: self.dropped.load(Ordering::Relaxed),
            coordinators,
        })
    }

    /// The commitment with the highest number logged of `coordinator` (the first body heard
    /// for it), or none: what a coordinator numbering on after a restart asks for
    /// (`Request::LastCommitment`). One read.
    pub fn last(&self, coordinator: &PublicKey) -> Result<Option<Commitment>, AuditError> {
        match self.log.scan_prefix(coordinator.0).next_back() {
            Some(item) => {
                let (key, value) = item?;
                Ok(Some(decode(&key, &value)?.1))
            }
            None => Ok(None),
        }
    }

    /// `coordinator`'s commitments from number `from` on (at most `limit`, itself at most
    /// [`MAX_PAGE`]), and every equivocation of it.
    pub fn coordinator(
        &self,
        coordinator: &PublicKey,
        from: u64,
        limit: usize,
    ) -> Result<CoordinatorLog, AuditError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let start = key_of(coordinator, from);
        let end = key_of(coordinator, u64::MAX);
        let mut commitments = Vec::new();
        let mut next = None;
        for item in self.log.range(start..=end) {
            let (key, value) = item?;
            let (seen, c) = decode(&key, &value)?;
            if commitments.len() == limit {
                next = Some(c.seq);
                break;
            }
            commitments.push(LoggedCommitment::of(&c, seen));
        }
        let mut equivocations = Vec::new();
        for item in self.equivocations.scan_prefix(coordinator.0) {
            let (key, value) = item?;
            let (seen, second) = decode(&key, &value)?;
            let first = match self.log.get(&key)? {
                Some(v) => decode(&key, &v)?,
                None => {
                    return Err(AuditError::Damaged {
                        key: hex::encode(&key),
                        reason: "an equivocation without the commitment it contradicts".into(),
                    })
                }
            };
            equivocations.push(EquivocationView {
                seq: second.seq,
                first: LoggedCommitment::of(&first.1, first.0),
                second: LoggedCommitment::of(&second, seen),
            });
        }
        let (key_events, key_contests) = self.key_log(coordinator)?;
        Ok(CoordinatorLog {
            coordinator: coordinator.to_hex(),
            commitments,
            next,
            equivocations,
            revocation: self.revocation(coordinator)?,
            key_events,
            key_contests,
        })
    }
}

/// `GET /v1/audit`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditSummary {
    /// Commitments stored.
    pub stored: u64,
    /// Most entries the log stores, [`MAX_LOGGED`].
    pub capacity: u64,
    /// Commitments heard but not stored because the log was full, since the node started.
    pub dropped: u64,
    pub coordinators: Vec<CoordinatorSummary>,
}

/// One coordinator as the log saw it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CoordinatorSummary {
    /// Household key, hex.
    pub coordinator: String,
    /// Commitments logged.
    pub commitments: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Receipts they cover (sum of `count`).
    pub receipts: u64,
    /// When the earliest and the latest were first seen here, ms since the epoch.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Numbers for which a second, different commitment was heard.
    pub equivocations: u64,
}

/// `GET /v1/audit/{coordinator}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CoordinatorLog {
    pub coordinator: String,
    pub commitments: Vec<LoggedCommitment>,
    /// The number to ask `from` for the next page, if there is one.
    pub next: Option<u64>,
    pub equivocations: Vec<EquivocationView>,
    /// The strictest revocation heard for the coordinator's key, if any.
    pub revocation: Option<LoggedRevocation>,
    /// The key events of the household named by this key (its first key), the first heard
    /// under each number, in order (docs/receipts.md, "Rotating a key").
    #[serde(default)]
    pub key_events: Vec<LoggedKeyEvent>,
    /// Numbers under which a second, different key event was heard: both, the proof.
    #[serde(default)]
    pub key_contests: Vec<KeyContest>,
}

/// A key event as logged: its JSON form (docs/receipts.md, "Rotating a key") and when this
/// node first heard it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoggedKeyEvent {
    pub format: String,
    pub household: String,
    pub seq: u64,
    pub key: String,
    pub next: String,
    pub issued_ms: u64,
    /// The signed event (181 bytes), hex.
    pub signed: String,
    /// When this node first heard it, ms since the epoch (this node's clock).
    pub first_seen_ms: u64,
}

impl LoggedKeyEvent {
    fn of(e: &KeyEvent, seen_ms: u64) -> LoggedKeyEvent {
        LoggedKeyEvent {
            format: crate::model::rotate::FORMAT.to_string(),
            household: e.household.to_hex(),
            seq: e.seq,
            key: e.key.to_hex(),
            next: hex::encode(e.next),
            issued_ms: e.issued_ms,
            signed: hex::encode(e.to_bytes()),
            first_seen_ms: seen_ms,
        }
    }
}

/// Two different key events of one household under one number.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KeyContest {
    pub seq: u64,
    /// The one logged first.
    pub first: LoggedKeyEvent,
    /// The other.
    pub second: LoggedKeyEvent,
}

/// A revocation as logged: its JSON form (docs/receipts.md, "Revoking a key") and when this
/// node first heard it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoggedRevocation {
    pub format: String,
    pub key: String,
    pub keep: u64,
    pub issued_ms: u64,
    /// The signed statement (117 bytes), hex.
    pub signed: String,
    /// When this node first heard it, ms since the epoch (this node's clock).
    pub first_seen_ms: u64,
}

impl LoggedRevocation {
    fn of(r: &Revocation, seen_ms: u64) -> LoggedRevocation {
        LoggedRevocation {
            format: crate::model::revoke::FORMAT.to_string(),
            key: r.key.to_hex(),
            keep: r.keep,
            issued_ms: r.issued_ms,
            signed: hex::encode(r.to_bytes()),
            first_seen_ms: seen_ms,
        }
    }
}

/// A commitment as logged.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoggedCommitment {
    pub seq: u64,
    /// Commitment id: blake3 of its body, hex.
    pub id: String,
    pub count: u32,
    /// Merkle root, hex.
    pub root: String,
    pub first_ms: u64,
    pub last_ms: u64,
    /// When this node first heard it, ms since the epoch (this node's clock).
    pub first_seen_ms: u64,
    /// The signed commitment (161 bytes), hex: checkable by anyone (docs/receipts.md).
    pub signed: String,
}

impl LoggedCommitment {
    fn of(c: &Commitment, seen_ms: u64) -> LoggedCommitment {
        LoggedCommitment {
            seq: c.seq,
            id: c.id().to_hex().to_string(),
            count: c.count,
            root: hex::encode(c.root),
            first_ms: c.first_ms,
            last_ms: c.last_ms,
            first_seen_ms: seen_ms,
            signed: hex::encode(c.to_bytes()),
        }
    }
}

/// Two different commitments the coordinator signed with one number: the proof.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EquivocationView {
    pub seq: u64,
    /// The one logged first.
    pub first: LoggedCommitment,
    /// The other.
    pub second: LoggedCommitment,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn sealed(who: &Identity, seq: u64, ids: &[&[u8]]) -> Commitment {
        let ids: Vec<blake3::Hash> = ids.iter().map(|b| blake3::hash(b)).collect();
        Commitment::seal(who, seq, &ids, 1_700_000_000_000, 1_700_000_009_000)
            .unwrap()
            .0
    }

    /// Key events (`model::rotate`): the first heard under each household and number is kept
    /// with its time, a different one later beside it as the proof, and the log lists both.
    #[test]
    fn the_log_keeps_a_households_first_key_events_and_proves_a_contest() {
        use crate::model::rotate::KeyEvent;
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        let (home, next, thief) = (
            Identity::from_seed([1; 32]),
            Identity::from_seed([4; 32]),
            Identity::from_seed([9; 32]),
        );
        let h = home.public();
        let e0 = KeyEvent::sign(h, 0, &home, &next.public(), 100);
        let e1 = KeyEvent::sign(h, 1, &next, &thief.public(), 200);
        let forged = KeyEvent::sign(h, 0, &home, &thief.public(), 50);
        assert_eq!(log.hear_key_event(&e0, 10).unwrap(), HeardKeyEvent::New);
        assert_eq!(log.hear_key_event(&e0, 11).unwrap(), HeardKeyEvent::Again);
        assert_eq!(log.hear_key_event(&e1, 20).unwrap(), HeardKeyEvent::New);
        assert_eq!(
            log.hear_key_event(&forged, 30).unwrap(),
            HeardKeyEvent::Contest
        );
        assert_eq!(
            log.hear_key_event(&forged, 31).unwrap(),
            HeardKeyEvent::Again
        );
        assert_eq!(log.key_event_counts(), (2, 0));
        let l = log.coordinator(&h, 0, 10).unwrap();
        assert_eq!(
            l.key_events
                .iter()
                .map(|e| (e.seq, e.signed.clone(), e.first_seen_ms))
                .collect::<Vec<_>>(),
            vec![
                (0, hex::encode(e0.to_bytes()), 10),
                (1, hex::encode(e1.to_bytes()), 20)
            ]
        );
        assert_eq!(l.key_contests.len(), 1);
        assert_eq!(
            l.key_contests[0].second.signed,
            hex::encode(forged.to_bytes())
        );
        // A verifier given this log, as `hearth audit KEY --json` prints it, takes the event
        // heard first: the household's rotation stands against the forged #0 given beside it.
        let json = serde_json::to_string(&l).unwrap();
        let mut logs = crate::model::tally::AuditLogs::default();
        logs.add(&json).unwrap();
        let chains = logs.chains(std::slice::from_ref(&forged));
        assert_eq!(chains.current(&h), next.public());
        assert!(chains.notes.is_empty(), "{:?}", chains.notes);
        // Without the log, the forged event given beside the household's stops the chain.
        let alone = crate::model::rotate::KeyChains::build(&[e0.clone(), e1.clone(), forged]);
        assert_eq!(alone.current(&h), h);
        // Reopened, the count is the stored one.
        drop(log);
        assert_eq!(AuditLog::open(&db).unwrap().key_event_counts(), (2, 0));
    }

    #[test]
    fn the_log_keeps_the_first_seen_and_proves_an_equivocation() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let c0 = sealed(&a, 0, &[b"r1", b"r2"]);
        let c1 = sealed(&a, 1, &[b"r3"]);
        assert_eq!(log.hear(&c0, 10).unwrap(), Heard::New);
        assert_eq!(log.hear(&c0, 20).unwrap(), Heard::Again);
        assert_eq!(log.hear(&c1, 30).unwrap(), Heard::New);
        assert_eq!(log.hear(&sealed(&b, 0, &[b"x"]), 40).unwrap(), Heard::New);
        // Another body under number 0: the first stays, the second is the proof.
        let other = sealed(&a, 0, &[b"r1", b"minted"]);
        assert_eq!(
            log.hear(&other, 50).unwrap(),
            Heard::Equivocation {
                first: Box::new(c0.clone())
            }
        );
        assert_eq!(log.hear(&other, 60).unwrap(), Heard::Again);
        // The last logged of a key is its highest number, first body; none for a stranger.
        assert_eq!(log.last(&a.public()).unwrap(), Some(c1.clone()));
        assert_eq!(log.last(&b.public()).unwrap(), Some(sealed(&b, 0, &[b"x"])));
        assert_eq!(
            log.last(&Identity::from_seed([3; 32]).public()).unwrap(),
            None
        );
        assert_eq!(log.counts(), (3, 0, 1));
        let s = log.summary().unwrap();
        assert_eq!(s.stored, 3);
        let sa = s
            .coordinators
            .iter()
            .find(|x| x.coordinator == a.public().to_hex())
            .unwrap();
        assert_eq!(
            (sa.commitments, sa.first_seq, sa.last_seq, sa.receipts),
            (2, 0, 1, 3)
        );
        assert_eq!(
            (sa.first_seen_ms, sa.last_seen_ms, sa.equivocations),
            (10, 30, 1)
        );
        let la = log.coordinator(&a.public(), 0, 10).unwrap();
        assert_eq!(la.commitments.len(), 2);
        assert_eq!(la.commitments[0].first_seen_ms, 10);
        assert_eq!(la.commitments[0].signed, hex::encode(c0.to_bytes()));
        assert_eq!(la.next, None);
        let e = &la.equivocations[0];
        assert_eq!(
            (e.seq, e.first.id.clone()),
            (0, c0.id().to_hex().to_string())
        );
        assert_eq!(e.second.signed, hex::encode(other.to_bytes()));
        // Paged: one at a time.
        let page = log.coordinator(&a.public(), 0, 1).unwrap();
        assert_eq!((page.commitments.len(), page.next), (1, Some(1)));
        // What was logged survives a reopen, counted.
        drop(log);
        let log = AuditLog::open(&db).unwrap();
        assert_eq!(log.summary().unwrap().stored, 3);
        assert_eq!(log.hear(&c1, 99).unwrap(), Heard::Again);
    }

    /// The strictest statement heard stands: a later one with a larger `keep` (a thief's)
    /// changes nothing, a smaller one replaces it; a key with no commitment logged is not kept.
    #[test]
    fn the_log_keeps_the_strictest_revocation_of_a_key_it_holds_commitments_of() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        let (home, stranger) = (Identity::from_seed([4; 32]), Identity::from_seed([5; 32]));
        let stranger_says = Revocation::sign(&stranger, 0, 1);
        assert_eq!(
            log.hear_revocation(&stranger_says, 10).unwrap(),
            HeardRevocation::Unknown
        );
        log.hear(&sealed(&home, 0, &[b"r"]), 5).unwrap();
        let keep2 = Revocation::sign(&home, 2, 1);
        assert_eq!(
            log.hear_revocation(&keep2, 20).unwrap(),
            HeardRevocation::Kept
        );
        assert_eq!(
            log.hear_revocation(&Revocation::sign(&home, 7, 2), 30)
                .unwrap(),
            HeardRevocation::Again
        );
        assert_eq!(
            log.hear_revocation(&keep2, 40).unwrap(),
            HeardRevocation::Again
        );
        let listed = log.coordinator(&home.public(), 0, 10).unwrap();
        let kept = listed.revocation.unwrap();
        assert_eq!((kept.keep, kept.first_seen_ms), (2, 20));
        // The log's entry is the statement's JSON form: what `--revoked` reads.
        let json = serde_json::to_value(&kept).unwrap();
        assert_eq!(Revocation::from_json(&json).unwrap(), keep2);
        let keep0 = Revocation::sign(&home, 0, 3);
        assert_eq!(
            log.hear_revocation(&keep0, 50).unwrap(),
            HeardRevocation::Kept
        );
        drop(log);
        let log = AuditLog::open(&db).unwrap();
        let kept = log.coordinator(&home.public(), 0, 10).unwrap().revocation;
        assert_eq!(kept.map(|r| (r.keep, r.first_seen_ms)), Some((0, 50)));
        assert!(log
            .coordinator(&stranger.public(), 0, 10)
            .unwrap()
            .revocation
            .is_none());
    }

    #[test]
    fn a_full_log_counts_what_it_cannot_keep() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::open(dir.path()).unwrap();
        let log = AuditLog::open(&db).unwrap();
        let a = Identity::from_seed([3; 32]);
        log.stored.store(MAX_LOGGED - 1, Ordering::Relaxed);
        assert_eq!(log.hear(&sealed(&a, 0, &[b"r"]), 1).unwrap(), Heard::New);
        assert_eq!(log.hear(&sealed(&a, 1, &[b"s"]), 2).unwrap(), Heard::Full);
        // A known commitment is still recognised, and an equivocation of it still kept.
        assert_eq!(log.hear(&sealed(&a, 0, &[b"r"]), 3).unwrap(), Heard::Again);
        assert!(matches!(
            log.hear(&sealed(&a, 0, &[b"t"]), 4).unwrap(),
            Heard::Equivocation { .. }
        ));
        let s = log.summary().unwrap();
        assert_eq!((s.stored, s.dropped), (MAX_LOGGED, 1));
        assert_eq!(s.coordinators[0].equivocations, 1);
    }
}
