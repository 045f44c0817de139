//! A household's key log on the network (docs/receipts.md, "Rotating a key"; docs/protocol.md
//! §6.7): the node publishes its own log's events on `hearth/evidence/1`, and takes others'
//! from gossip and from its peers (`Request::KeyEvents`), checking each; an auditor (bootstrap
//! node) logs the first heard under each household and number, and a second, different one as
//! the proof of a contest (`audit::AuditLog::hear_key_event`). What the first-heard record
//! settles: a thief who stole the current key after the household published its log cannot
//! undo the rotation with an event signed later.
//!
//! Every node also keeps the events it heard in a [`KeyBook`] (the first heard per household
//! and number, as an auditor keeps them, in memory and in its database) and refuses the keys
//! they retire: its coordinator leases nothing to a retired key and counts no claim of it,
//! delivers the receipts still waiting for it to the household's current key and excludes
//! that key if it excluded the retired one; its worker takes no work from one. So a thief
//! working under a stolen key that its household rotated away from gets nothing here. A
//! household for which this node heard two different events under one number is left alone
//! (the thief may be the one heard first).
//!
//! The node reads its log from `DATA_DIR/keys.json` each round, so a log started with
//! `hearth key prerotate` while the node runs goes out at the next round: 5 s after the start,
//! again every 5 s until a round went out, then every 10 minutes, so an auditor that was away
//! hears it at the next round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::revoked::Admission;
use crate::audit::{AuditLog, HeardKeyEvent};
use crate::identity::PublicKey;
use crate::jobs::CoordinatorHandle;
use crate::model::rotate::{KeyChains, KeyEvent, Logged};
use crate::model::wire::{Request, Response, MAX_KEY_EVENTS_PER_ANSWER};
use crate::net::{NetError, Network, Topic, Verdict};

/// Most key events a node keeps in its [`KeyBook`] (about 200 bytes each in memory, and on
/// disk with at most one contest proof per household beside them: 3.2 to 6.4 MB): a household
/// writes one when it starts its log and one per rotation; past the bound, new households'
/// events are not kept (and their keys not refused here).
pub const MAX_HEARD: usize = 1 << 14;

/// The `key-events` tree: household ‖ 0x00 ‖ number (8 bytes, big-endian) → the event first
/// heard under them; household ‖ 0x01 ‖ number → a second, different event heard under that
/// number (the proof that the household is contested here; the first such proof is enough).
/// A peer pages through it in key order (`Request::KeyEvents`, the key being the cursor).
const TREE: &str = "key-events";

/// A place in the `key-events` tree: household ‖ kind ‖ number.
pub type Cursor = [u8; 41];

/// Pages asked of one peer per pull: 64 × [`MAX_KEY_EVENTS_PER_ANSWER`] (16) = 1 024 events,
/// each checked (one signature); a pull that stops there goes on from where it stopped at the
/// next peer asked.
pub const MAX_PULL_PAGES: usize = 64;

/// The key events this node heard and the keys they retire, kept in memory and in the
/// `key-events` tree, so a restart forgets no rotation and no contest. Cheap to clone.
#[derive(Clone)]
pub struct KeyBook {
    inner: Arc<Mutex<Book>>,
    tree: sled::Tree,
    /// How many events new to this node each gossip forwarder may bring: anyone can sign
    /// events for fresh keys by the thousand, each costing a signature check and one of the
    /// [`MAX_HEARD`] places for good. An event heard before passes free (households republish
    /// their logs every [`REPUBLISH`]); a household writes a new event once per rotation, far
    /// below the bound, and what a node missed it pulls from its peers ([`KeyBook::pull`]).
    admission: Arc<Mutex<Admission>>,
    /// Where the last pull stopped, so the next peer asked goes on from there.
    resume: Arc<Mutex<Option<Cursor>>>,
}

#[derive(Default)]
struct Book {
    /// The first event heard under each number, by household.
    first: HashMap<PublicKey, BTreeMap<u64, KeyEvent>>,
    /// How many events `first` holds: at most [`MAX_HEARD`].
    events: usize,
    /// Households for which a second, different event was heard.
    contested: HashSet<PublicKey>,
    /// Retired key → the household's current key, as this node's chains say.
    retired: HashMap<PublicKey, PublicKey>,
}

impl Book {
    /// The event first heard under `household` and `seq`.
    fn get(&self, household: &PublicKey, seq: u64) -> Option<&KeyEvent> {
        self.first.get(household)?.get(&seq)
    }

    /// Keeps `e` as the first heard under its household and number (the caller checked there
    /// was none, and room).
    fn insert(&mut self, e: KeyEvent) {
        let household = e.household;
        if self
            .first
            .entry(household)
            .or_default()
            .insert(e.seq, e)
            .is_none()
        {
            self.events += 1;
        }
    }

    /// Leaves `household` alone: its keys are retired by nobody's word here any more.
    fn contest(&mut self, household: PublicKey) {
        self.contested.insert(household);
        let keys: Vec<PublicKey> = self
            .first
            .get(&household)
            .map(|events| events.values().map(|f| f.key).collect())
            .unwrap_or_default();
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
            .get(&household)
            .map(|events| events.values().cloned().collect())
            .unwrap_or_default();
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

/// The tree key of an event under its household and number: `kind` 0 for the event first
/// heard, 1 for a contest proof.
fn entry(e: &KeyEvent, kind: u8) -> Cursor {
    let mut entry = [kind; 41];
    entry[..32].copy_from_slice(&e.household.0);
    entry[33..].copy_from_slice(&e.seq.to_be_bytes());
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
            let Ok(e) = KeyEvent::from_bytes(&value) else {
                continue;
            };
            if e.verify().is_err() {
                continue;
            }
            if key[..] == entry(&e, 0)[..] && book.events < MAX_HEARD {
                book.insert(e);
            } else if key[..] == entry(&e, 1)[..] {
                book.contested.insert(e.household);
            }
        }
        let households: Vec<PublicKey> = book.first.keys().copied().collect();
        for h in households {
            book.retire(h);
        }
        Ok(KeyBook {
            inner: Arc::new(Mutex::new(book)),
            tree,
            admission: Arc::new(Mutex::new(Admission::default())),
            resume: Arc::default(),
        })
    }

    /// Whether `e` is the event this node first heard under its household and number: heard
    /// before, nothing to check again.
    fn known(&self, e: &KeyEvent) -> bool {
        self.inner
            .lock()
            .is_ok_and(|book| book.get(&e.household, e.seq) == Some(e))
    }

    /// Takes a checked event (`KeyEvent::verify`). Returns the keys it newly retires. Written
    /// before it counts, then flushed by sled within half a second; an event lost to a crash
    /// in that time comes again with its household's next round.
    pub fn hear(&self, e: &KeyEvent) -> Result<Vec<PublicKey>, sled::Error> {
        let Ok(mut book) = self.inner.lock() else {
            return Ok(Vec::new());
        };
        match book.get(&e.household, e.seq).map(|first| first == e) {
            Some(true) => return Ok(Vec::new()),
            Some(false) => {
                if !book.contested.contains(&e.household) {
                    self.tree.insert(entry(e, 1), e.to_bytes())?;
                }
                book.contest(e.household);
                return Ok(Vec::new());
            }
            None if book.events >= MAX_HEARD => return Ok(Vec::new()),
            None => {}
        }
        self.tree.insert(entry(e, 0), e.to_bytes())?;
        book.insert(e.clone());
        Ok(book.retire(e.household))
    }

    /// The current key of the household that retired `key`, if this node knows it did.
    pub fn retired(&self, key: &PublicKey) -> Option<PublicKey> {
        self.inner.lock().ok()?.retired.get(key).copied()
    }

    /// Up to `max` kept events after `after`, in key order, and the cursor to go on from if
    /// more follow: what a node hands a peer that asks (`Request::KeyEvents`). Reads the disk.
    pub fn page(
        &self,
        after: Option<&Cursor>,
        max: usize,
    ) -> Result<(Vec<KeyEvent>, Option<Cursor>), sled::Error> {
        let mut out = Vec::new();
        let mut last = None;
        for item in crate::kv::after(&self.tree, after.map(|c| &c[..])) {
            let (key, value) = item?;
            // Damaged entries are skipped, as at start.
            let (Ok(cursor), Ok(e)) =
                (Cursor::try_from(key.as_ref()), KeyEvent::from_bytes(&value))
            else {
                continue;
            };
            if out.len() == max {
                return Ok((out, last));
            }
            out.push(e);
            last = Some(cursor);
        }
        Ok((out, None))
    }

    /// Asks `peer` for the events it heard, page after page from where the last pull stopped,
    /// checking and keeping each; returns the keys they newly retire. Stops at
    /// [`MAX_PULL_PAGES`], at the first answer that is not a page (an older node answers
    /// Error), at the first event that does not check or cannot be kept, and when the peer's
    /// cursor stops increasing.
    pub(super) async fn pull(&self, net: &Network, peer: PeerId) -> Vec<PublicKey> {
        let mut after = self.resume.lock().ok().and_then(|r| *r);
        let mut retired = Vec::new();
        for _ in 0..MAX_PULL_PAGES {
            let answer = match net
                .request_if_connected(peer, Request::KeyEvents { after }.to_bytes())
                .await
            {
                Ok(bytes) => Response::from_bytes(&bytes),
                Err(e) => {
                    tracing::debug!(%peer, "could not ask for key events: {e}");
                    break;
                }
            };
            let Ok(Response::KeyEvents { events, next }) = answer else {
                break;
            };
            for e in &events {
                if let Err(err) = e.verify() {
                    tracing::debug!(%peer, "stopped asking for key events: one does not check: {err}");
                    return retired;
                }
                match self.hear(e) {
                    Ok(newly) => retired.extend(newly),
                    Err(err) => {
                        tracing::warn!("could not keep a pulled key event: {err}");
                        return retired;
                    }
                }
            }
            match next {
                Some(n) if after.is_none_or(|a| n > a) => after = Some(n),
                Some(_) => {
                    tracing::debug!(%peer, "stopped asking for key events: the cursor went back");
                    return retired;
                }
                // The peer's tree is done: the next pull starts from its beginning.
                None => {
                    after = None;
                    break;
                }
            }
        }
        if let Ok(mut resume) = self.resume.lock() {
            *resume = after;
        }
        retired
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

/// A key event gossiped on `hearth/evidence/1` by way of `via`: rejected unless it decodes and
/// its signature is its key's (event #0 its household's own); anyone may pass one on, since it
/// proves itself. Kept in `book` and, on an auditor, logged; ignored (not forwarded) past the
/// forwarder's share of events new to this node, or when it cannot be kept, or when the
/// auditor's log is full. An event this node heard first before passes without a second
/// check. Returns the keys it newly retires beside the verdict.
pub(super) fn gossip(
    audit: Option<&AuditLog>,
    book: &KeyBook,
    data: &[u8],
    via: PeerId,
) -> (Verdict, Vec<PublicKey>) {
    let Ok(e) = KeyEvent::from_bytes(data) else {
        return (Verdict::Reject, Vec::new());
    };
    let mut retired = Vec::new();
    if !book.known(&e) {
        let admitted = book
            .admission
            .lock()
            .is_ok_and(|mut a| a.admit(via, Instant::now()));
        if !admitted {
            return (Verdict::Ignore, Vec::new());
        }
        if e.verify().is_err() {
            return (Verdict::Reject, Vec::new());
        }
        // Not kept, not passed on: it comes again with its household's next round.
        retired = match book.hear(&e) {
            Ok(retired) => retired,
            Err(err) => {
                tracing::warn!("a key event heard could not be kept: {err}");
                return (Verdict::Ignore, Vec::new());
            }
        };
    }
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

/// Tells this node's coordinator of `keys`, newly retired: an exclusion of one carries over to
/// its household's current key, and what they hold in running jobs is taken back.
pub(super) async fn retired_here(
    coordinator: &CoordinatorHandle,
    book: &KeyBook,
    keys: &[PublicKey],
) {
    if keys.is_empty() {
        return;
    }
    for key in keys {
        if let Some(current) = book.retired(key) {
            coordinator.key_rotated(*key, current).await;
        }
    }
    coordinator.withdraw_refused().await;
}

/// The answer to a peer's `Request::KeyEvents`: a page of the events kept here. Reads the
/// disk: called off the async threads.
pub(super) fn answer(book: &KeyBook, after: Option<&Cursor>) -> Response {
    match book.page(after, MAX_KEY_EVENTS_PER_ANSWER) {
        Ok((events, next)) => Response::KeyEvents { events, next },
        Err(e) => Response::Error {
            detail: format!("the key events could not be read: {e}"),
        },
    }
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

    /// A peer's gossip of events new to this node is taken up to its share
    /// (`revoked::BURST`), then ignored (not forwarded, no penalty); an event heard before
    /// passes free, and another forwarder has a share of its own. Bytes that are not a key
    /// event, or one whose signature fails, are rejected.
    #[test]
    fn gossip_takes_a_forwarders_share_of_new_events_and_known_ones_free() {
        let dir = tempfile::tempdir().unwrap();
        let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
        let (via, other) = (PeerId::random(), PeerId::random());
        let next = Identity::from_seed([1; 32]).public();
        let fresh = |i: u32| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            let h = Identity::from_seed(seed);
            KeyEvent::sign(h.public(), 0, &h, &next, 10).to_bytes()
        };
        let burst = super::super::revoked::BURST;
        for i in 0..burst {
            assert_eq!(gossip(None, &book, &fresh(i), via).0, Verdict::Accept);
        }
        assert_eq!(gossip(None, &book, &fresh(burst), via).0, Verdict::Ignore);
        assert_eq!(
            gossip(None, &book, &fresh(0), via).0,
            Verdict::Accept,
            "known"
        );
        assert_eq!(gossip(None, &book, &fresh(burst), other).0, Verdict::Accept);
        let mut forged = fresh(burst + 1);
        forged[100] ^= 1;
        assert_eq!(gossip(None, &book, &forged, other).0, Verdict::Reject);
        assert_eq!(gossip(None, &book, b"HKEY", other).0, Verdict::Reject);
    }

    /// Paging through the book hands every kept entry once, in key order, contest proofs
    /// included, whatever the page size; a cursor past the end gives nothing.
    #[test]
    fn pages_hand_every_kept_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
        let next = Identity::from_seed([1; 32]).public();
        let mut kept = Vec::new();
        for i in 2..12u8 {
            let h = Identity::from_seed([i; 32]);
            let e = KeyEvent::sign(h.public(), 0, &h, &next, 10);
            book.hear(&e).unwrap();
            kept.push(e);
        }
        let h = Identity::from_seed([2; 32]);
        let contest = KeyEvent::sign(h.public(), 0, &h, &h.public(), 11);
        book.hear(&contest).unwrap();
        kept.push(contest);
        for max in [1, 3, 16] {
            let (mut got, mut after) = (Vec::new(), None);
            loop {
                let (page, next) = book.page(after.as_ref(), max).unwrap();
                assert!(page.len() <= max);
                got.extend(page);
                match next {
                    Some(n) => {
                        assert!(after.is_none_or(|a| n > a));
                        after = Some(n);
                    }
                    None => break,
                }
            }
            assert_eq!(got.len(), kept.len(), "page size {max}");
            for e in &kept {
                assert!(got.contains(e));
            }
        }
        assert!(book.page(Some(&[0xff; 41]), 16).unwrap().0.is_empty());
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
