//! A household's key log on the network (docs/receipts.md, "Rotating a key"; docs/protocol.md
//! §6.6): the node publishes its own log's events on `hearth/evidence/1`, and takes others'
//! from gossip, checking each; an auditor (bootstrap node) logs the first heard under each
//! household and number, and a second, different one as the proof of a contest
//! (`audit::AuditLog::hear_key_event`). What the first-heard record settles: a thief who
//! stole the current key after the household published its log cannot undo the rotation with
//! an event signed later.
//!
//! Every node also keeps the events it heard in a [`KeyBook`] (the first heard per household
//! and number, as an auditor keeps them, in memory and in its database) and refuses the keys
//! they retire: its
//! coordinator leases nothing to a retired key and counts no claim of it, its worker takes no
//! work from one, so a thief working under a stolen key that its household rotated away from
//! gets nothing here. A household for which this node heard two different events under one
//! number is left alone (the thief may be the one heard first).
//!
//! The node reads its log from `DATA_DIR/keys.json` each round, so a log started with
//! `hearth key prerotate` while the node runs goes out at the next round: 5 s after the start,
//! again every 5 s until a round went out, then every 10 minutes, so an auditor that was away
//! hears it at the next round.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::{AuditLog, HeardKeyEvent};
use crate::identity::PublicKey;
use crate::model::rotate::{KeyChains, KeyEvent, Logged};
use crate::net::{NetError, Network, Topic, Verdict};

/// Most key events a node keeps in its [`KeyBook`] (about 200 bytes each in memory, and on
/// disk with at most one contest proof per household beside them: 3.2 to 6.4 MB): a household
/// writes one when it starts its log and one per rotation; past the bound, new households'
/// events are not kept (and their keys not refused here).
pub const MAX_HEARD: usize = 1 << 14;

/// The `key-events` tree: household ‖ 0x00 ‖ number (8 bytes, big-endian) → the event first
/// heard under them; household ‖ 0x01 → the second, different event heard under one of its
/// numbers (the proof that the household is contested here; one is enough).
const TREE: &str = "key-events";

/// The key events this node heard and the keys they retire, kept in memory and in the
/// `key-events` tree, so a restart forgets no rotation and no contest. Cheap to clone.
#[derive(Clone)]
pub struct KeyBook {
    inner: Arc<Mutex<Book>>,
    tree: sled::Tree,
}

#[derive(Default)]
struct Book {
    /// The first event heard under each (household, number).
    first: HashMap<(PublicKey, u64), KeyEvent>,
    /// Households for which a second, different event was heard.
    contested: HashSet<PublicKey>,
    /// Retired key → the household's current key, as this node's chains say.
    retired: HashMap<PublicKey, PublicKey>,
}

impl Book {
    /// Leaves `household` alone: its keys are retired by nobody's word here any more.
    fn contest(&mut self, household: PublicKey) {
        self.contested.insert(household);
        let keys: Vec<PublicKey> = self
            .first
            .values()
            .filter(|f| f.household == household)
            .map(|f| f.key)
            .collect();
        for k in keys {
            self.retired.remove(&k);
        }
    }

    /// Builds `household`'s chain from the events heard first; returns the keys it newly
    /// retires.
    fn retire(&mut self, household: PublicKey) -> Vec<PublicKey> {
        if self.contested.contains(&household) {
            return Vec::new();
        }
        let events: Vec<KeyEvent> = self
            .first
            .values()
            .filter(|f| f.household == household)
            .cloned()
            .collect();
        let logged: Logged = events
            .iter()
            .map(|f| ((f.household, f.seq), Some(f.clone())))
            .collect();
        let chains = KeyChains::build_logged(&events, &logged);
        let current = chains.current(&household);
        let mut newly = Vec::new();
        for k in chains.keys_of(&household) {
            if k.retired_ms.is_some() && self.retired.insert(k.key, current).is_none() {
                newly.push(k.key);
            }
        }
        newly
    }
}

/// The tree key of the event first heard under `household` and `seq`.
fn event_entry(household: &PublicKey, seq: u64) -> [u8; 41] {
    let mut entry = [0u8; 41];
    entry[..32].copy_from_slice(&household.0);
    entry[33..].copy_from_slice(&seq.to_be_bytes());
    entry
}

/// The tree key of `household`'s contest proof.
fn contest_entry(household: &PublicKey) -> [u8; 33] {
    let mut entry = [1u8; 33];
    entry[..32].copy_from_slice(&household.0);
    entry
}

impl KeyBook {
    /// Opens the book in `db`, reading what it heard before into memory. A damaged entry (one
    /// that does not decode, verify or match its place) is skipped: it retires nothing.
    pub fn open(db: &sled::Db) -> Result<KeyBook, sled::Error> {
        let tree = db.open_tree(TREE)?;
        let mut book = Book::default();
        for item in tree.iter() {
            let (key, value) = item?;
            let Ok(household) = <[u8; 32]>::try_from(&key[..key.len().min(32)]) else {
                continue;
            };
            let household = PublicKey(household);
            match (key.len(), key.get(32)) {
                (41, Some(0)) if book.first.len() < MAX_HEARD => {
                    let Ok(e) = KeyEvent::from_bytes(&value) else {
                        continue;
                    };
                    if e.verify().is_ok() && key[..] == event_entry(&e.household, e.seq)[..] {
                        book.first.insert((e.household, e.seq), e);
                    }
                }
                (33, Some(1)) => {
                    book.contested.insert(household);
                }
                _ => {}
            }
        }
        let households: HashSet<PublicKey> = book.first.keys().map(|(h, _)| *h).collect();
        for h in households {
            book.retire(h);
        }
        Ok(KeyBook {
            inner: Arc::new(Mutex::new(book)),
            tree,
        })
    }

    /// Takes a checked event (`KeyEvent::verify`). Returns the keys it newly retires. Written
    /// before it counts, then flushed by sled within half a second; an event lost to a crash
    /// in that time comes again with its household's next round.
    pub fn hear(&self, e: &KeyEvent) -> Result<Vec<PublicKey>, sled::Error> {
        let Ok(mut book) = self.inner.lock() else {
            return Ok(Vec::new());
        };
        let slot = (e.household, e.seq);
        match book.first.get(&slot).map(|first| first == e) {
            Some(true) => return Ok(Vec::new()),
            Some(false) => {
                if !book.contested.contains(&e.household) {
                    self.tree
                        .insert(contest_entry(&e.household), e.to_bytes())?;
                }
                book.contest(e.household);
                return Ok(Vec::new());
            }
            None if book.first.len() >= MAX_HEARD => return Ok(Vec::new()),
            None => {}
        }
        self.tree
            .insert(event_entry(&e.household, e.seq), e.to_bytes())?;
        book.first.insert(slot, e.clone());
        Ok(book.retire(e.household))
    }

    /// The current key of the household that retired `key`, if this node knows it did.
    pub fn retired(&self, key: &PublicKey) -> Option<PublicKey> {
        self.inner.lock().ok()?.retired.get(key).copied()
    }
}

/// Between rounds once one went out.
pub const REPUBLISH: Duration = Duration::from_secs(600);
/// Between rounds until one went out (no peer in the topic's mesh yet).
const RETRY: Duration = Duration::from_secs(5);

/// Publishes the household's key log, round after round, until `stop` changes. On an
/// auditor, also logs its own events (gossip does not bring a message back to its author).
pub(super) async fn publish(
    data_dir: PathBuf,
    net: Network,
    audit: Option<AuditLog>,
    book: KeyBook,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = RETRY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let events = match crate::keys::load_log(&data_dir) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("the household's key log cannot be published: {e:#}");
                wait = REPUBLISH;
                continue;
            }
        };
        let mut out = 0;
        for e in &events {
            heard(audit.as_ref(), e);
            if let Err(err) = book.hear(e) {
                tracing::warn!(seq = e.seq, "own key event not kept: {err}");
            }
            match net.publish(Topic::Evidence, e.to_bytes()).await {
                // Still in the network's memory from the last round: out already.
                Ok(()) | Err(NetError::Duplicate) => out += 1,
                Err(err) => tracing::debug!(seq = e.seq, "key event not published yet: {err}"),
            }
        }
        wait = if out > 0 || events.is_empty() {
            REPUBLISH
        } else {
            RETRY
        };
    }
}

/// A key event gossiped on `hearth/evidence/1`: rejected unless it decodes and its signature
/// is its key's (event #0 its household's own); anyone may pass one on, since it proves
/// itself. Kept in `book`, and on an auditor logged; ignored (not forwarded) when the
/// auditor's log is full. Returns the keys it newly retires beside the verdict.
pub(super) fn gossip(
    audit: Option<&AuditLog>,
    book: &KeyBook,
    data: &[u8],
) -> (Verdict, Vec<PublicKey>) {
    let e = match KeyEvent::from_bytes(data) {
        Ok(e) if e.verify().is_ok() => e,
        _ => return (Verdict::Reject, Vec::new()),
    };
    // Not kept, not passed on: it comes again with its household's next round.
    let retired = match book.hear(&e) {
        Ok(retired) => retired,
        Err(err) => {
            tracing::warn!("a key event heard could not be kept: {err}");
            return (Verdict::Ignore, Vec::new());
        }
    };
    for key in &retired {
        tracing::info!(
            key = %key.to_hex(),
            household = %e.household.to_hex(),
            "a household rotated away from this key: no work is leased to it or taken from it here"
        );
    }
    let verdict = match heard(audit, &e) {
        Some(HeardKeyEvent::Full) => Verdict::Ignore,
        _ => Verdict::Accept,
    };
    (verdict, retired)
}

/// Logs `e` on an auditor, saying what was new.
fn heard(audit: Option<&AuditLog>, e: &KeyEvent) -> Option<HeardKeyEvent> {
    let audit = audit?;
    let household = e.household.to_hex();
    match audit.hear_key_event(e, crate::model::now_ms()) {
        Ok(HeardKeyEvent::New) => {
            tracing::info!(%household, seq = e.seq, key = %e.key.to_hex(), "key event logged");
            Some(HeardKeyEvent::New)
        }
        Ok(HeardKeyEvent::Contest) => {
            tracing::warn!(
                %household,
                seq = e.seq,
                "a second, different key event under one number: the first heard stands, \
                 the other is kept as the proof (`hearth audit KEY`)"
            );
            Some(HeardKeyEvent::Contest)
        }
        Ok(other) => Some(other),
        Err(err) => {
            tracing::warn!("audit log: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    /// A rotation heard retires the key before it; a household whose events were contested
    /// here retires nothing (the thief may have been heard first).
    #[test]
    fn a_heard_rotation_retires_the_key_before_it_unless_contested() {
        let k: Vec<Identity> = (1..=4u8).map(|i| Identity::from_seed([i; 32])).collect();
        let h = k[0].public();
        let dir = tempfile::tempdir().unwrap();
        let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
        let hear = |e: &KeyEvent| book.hear(e).unwrap();
        let e0 = KeyEvent::sign(h, 0, &k[0], &k[1].public(), 10);
        let e1 = KeyEvent::sign(h, 1, &k[1], &k[2].public(), 20);
        assert!(hear(&e0).is_empty());
        assert_eq!(hear(&e1), vec![h]);
        assert!(hear(&e1).is_empty(), "heard again: nothing new");
        assert_eq!(book.retired(&h), Some(k[1].public()));
        assert_eq!(book.retired(&k[1].public()), None);
        // A thief signs another #1 with the stolen key 2: the household is contested here,
        // and nothing of it stays retired.
        let thief = Identity::from_seed([9; 32]);
        let forged = KeyEvent::sign(h, 1, &k[1], &thief.public(), 30);
        assert!(hear(&forged).is_empty());
        assert_eq!(book.retired(&h), None);
        let e2 = KeyEvent::sign(h, 2, &k[2], &k[3].public(), 40);
        assert!(hear(&e2).is_empty());
        assert_eq!(book.retired(&k[1].public()), None);
    }

    /// What the book heard survives a restart (real sled on disk): a retired key stays
    /// refused, a contested household stays left alone, and the event heard first stays the
    /// one that counts, even when the other is heard first after the restart. Before, the book
    /// lived in memory only: for up to [`REPUBLISH`] after each restart the node leased to a
    /// key its household had rotated away from.
    #[test]
    fn what_the_book_heard_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = |i: u8| Identity::from_seed([i; 32]);
        let (a, b, c, thief) = (id(1), id(2), id(3), id(9));
        let next = id(4);
        let b0 = KeyEvent::sign(b.public(), 0, &b, &next.public(), 10);
        let c0 = KeyEvent::sign(c.public(), 0, &c, &next.public(), 10);
        let stolen = |h: &Identity| KeyEvent::sign(h.public(), 0, h, &thief.public(), 11);
        {
            let db = sled::open(dir.path()).unwrap();
            let book = KeyBook::open(&db).unwrap();
            let a0 = KeyEvent::sign(a.public(), 0, &a, &next.public(), 10);
            let a1 = KeyEvent::sign(a.public(), 1, &next, &id(5).public(), 20);
            assert!(book.hear(&a0).unwrap().is_empty());
            assert_eq!(book.hear(&a1).unwrap(), vec![a.public()]);
            for e in [b0, stolen(&b), c0] {
                assert!(book.hear(&e).unwrap().is_empty());
            }
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let book = KeyBook::open(&db).unwrap();
        assert_eq!(book.retired(&a.public()), Some(next.public()), "a rotated");
        // b was contested before the restart: its own #1 retires nothing here.
        let b1 = KeyEvent::sign(b.public(), 1, &next, &id(6).public(), 20);
        assert!(book.hear(&b1).unwrap().is_empty());
        assert_eq!(book.retired(&b.public()), None, "b is still contested");
        // The thief's #0 for c, heard first after the restart, is second here: with its #1,
        // it does not retire c's key to the thief's.
        let c1 = KeyEvent::sign(c.public(), 1, &thief, &id(7).public(), 20);
        for e in [stolen(&c), c1] {
            assert!(book.hear(&e).unwrap().is_empty());
        }
        assert_eq!(book.retired(&c.public()), None, "c's first #0 still counts");
    }
}
