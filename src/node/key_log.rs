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
//! A household that rotates keeps its standing with a coordinator that heard the event fixing
//! its new key long enough before (`Rotation::gap_ms`, from when this book first heard each
//! event; `jobs::coordinator::book::rotated`), and a contest takes it back. A node that hears
//! an event of its own household that its log does not hold says so
//! ([`KeyBook::not_signed_here`]): someone else holds the key.
//!
//! The node reads its log from `DATA_DIR/keys.json` each round, so a log started with
//! `hearth key prerotate` while the node runs goes out at the next round: 5 s after the start,
//! again every 5 s until a round went out, then every 10 minutes, so an auditor that was away
//! hears it at the next round.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::revoked::Admission;
use crate::audit::{AuditLog, HeardKeyEvent};
use crate::identity::PublicKey;
use crate::jobs::CoordinatorHandle;
use crate::model::rotate::KeyEvent;

use crate::model::wire::{Request, Response, MAX_KEY_EVENTS_PER_ANSWER};
use crate::net::{NetError, Network, Topic, Verdict};
use chains::{decode, encode, Book};

/// Most key events a node keeps in its [`KeyBook`] (about 200 bytes each in memory, and on
/// disk with at most one contest proof per household beside them: 3.2 to 6.4 MB): a household
/// writes one when it starts its log and one per rotation; past the bound, new households'
/// events are not kept (and their keys not refused here).
pub const MAX_HEARD: usize = 1 << 14;

/// Past this many events kept, only those of households this node knows are kept
/// ([`KeyBook::set_known`]: its own, coordinators that offered it work, households with a
/// record at its coordinator): events for fresh keys cost nothing to sign, and a flood of them
/// must not crowd out the rotation of a household this node works with. A stranger's event
/// not kept comes again with its household's next round (every 10 minutes), and is kept once
/// the household is known.
pub const MAX_UNKNOWN: usize = 1 << 12;

/// Whether this node knows a key (see [`MAX_UNKNOWN`]).
pub type Knows = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// The `key-events` tree: household ‖ 0x00 ‖ number (8 bytes, big-endian) → the event first
/// heard under them; household ‖ 0x01 ‖ number → a second, different event heard under that
/// number (the proof that the household is contested here; the first such proof is enough).
/// Each value is the signed event (181 bytes) ‖ when this node first heard it (ms, u64
/// big-endian); a value of the event alone (written before heard times were kept) counts as
/// heard when the book is opened. A peer pages through it in key order (`Request::KeyEvents`,
/// the key being the cursor).
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
    /// This node's household and its log as last read ([`publish`]): what an event of the
    /// household heard here is compared with ([`KeyBook::not_signed_here`]).
    own: Arc<Mutex<Option<OwnLog>>>,
    /// Which keys this node knows, set once its services exist ([`KeyBook::set_known`]);
    /// unset, only its own household counts as known.
    known: Arc<std::sync::OnceLock<Knows>>,
}

/// A household and its own key log (empty: it has none).
type OwnLog = (PublicKey, Vec<KeyEvent>);

/// A rotation this node's chains show: the household's key `old` was retired for `new`, the
/// key after it, whose hash the event before (#n−1) fixed `gap_ms` before this node heard the
/// rotation (#n). What a coordinator needs to carry a household's standing
/// (`Book::inherit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub old: PublicKey,
    pub new: PublicKey,
    pub gap_ms: u64,
}

/// What events heard changed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// Rotations newly shown, in the order of their chains.
    pub rotated: Vec<Rotation>,
    /// The keys of households newly contested here: nothing retires them any more, and no
    /// record carried between them counts.
    pub contested: Vec<PublicKey>,
}

impl Heard {
    pub fn is_empty(&self) -> bool {
        self.rotated.is_empty() && self.contested.is_empty()
    }

    fn extend(&mut self, other: Heard) {
        self.rotated.extend(other.rotated);
        self.contested.extend(other.contested);
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
        let now = crate::model::now_ms();
        for item in tree.iter() {
            let (key, value) = item?;
            let Some((e, heard_ms)) = decode(&value) else {
                continue;
            };
            if e.verify().is_err() {
                continue;
            }
            if key[..] == entry(&e, 0)[..] && book.events < MAX_HEARD {
                book.insert(e, heard_ms.unwrap_or(now));
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
            own: Arc::default(),
            known: Arc::default(),
        })
    }

    /// Whether `e` is the event this node first heard under its household and number: heard
    /// before, nothing to check again.
    fn known(&self, e: &KeyEvent) -> bool {
        self.inner
            .lock()
            .is_ok_and(|book| book.get(&e.household, e.seq) == Some(e))
    }

    /// Takes a checked event (`KeyEvent::verify`), heard at `now_ms`. Returns the rotations it
    /// newly shows, or the keys of a household it newly contests. Written before it counts,
    /// then flushed by sled within half a second; an event lost to a crash in that time comes
    /// again with its household's next round.
    pub fn hear(&self, e: &KeyEvent, now_ms: u64) -> Result<Heard, sled::Error> {
        let Ok(mut book) = self.inner.lock() else {
            return Ok(Heard::default());
        };
        match book.get(&e.household, e.seq).map(|first| first == e) {
            Some(true) => return Ok(Heard::default()),
            Some(false) => {
                if book.contested.contains(&e.household) {
                    return Ok(Heard::default());
                }
                self.tree.insert(entry(e, 1), encode(e, now_ms))?;
                return Ok(Heard {
                    contested: book.contest(e.household),
                    ..Heard::default()
                });
            }
            None if book.events >= MAX_HEARD => return Ok(Heard::default()),
            None if book.events >= MAX_UNKNOWN && !self.knows(&book, e) => {
                return Ok(Heard::default())
            }
            None => {}
        }
        self.tree.insert(entry(e, 0), encode(e, now_ms))?;
        book.insert(e.clone(), now_ms);
        Ok(Heard {
            rotated: book.retire(e.household),
            ..Heard::default()
        })
    }

    /// The keys of every household contested here: what a coordinator must not carry a
    /// record between (told again at each start, in case the last telling was not written).
    pub fn contested_keys(&self) -> Vec<PublicKey> {
        let Ok(book) = self.inner.lock() else {
            return Vec::new();
        };
        book.contested.iter().flat_map(|h| book.keys(h)).collect()
    }

    /// Every rotation this node's chains show: what a coordinator needs to carry standing
    /// (told again at each start, in case the last telling was not written).
    pub fn rotations(&self) -> Vec<Rotation> {
        let Ok(mut book) = self.inner.lock() else {
            return Vec::new();
        };
        book.retired.clear();
        let households: Vec<PublicKey> = book.first.keys().copied().collect();
        households
            .into_iter()
            .flat_map(|h| book.retire(h))
            .collect()
    }

    /// Sets which keys this node knows (see [`MAX_UNKNOWN`]); only the first call counts.
    pub fn set_known(&self, known: Knows) {
        let _ = self.known.set(known);
    }

    /// Whether `e` is of a household this node knows: its own, or one whose first key, the
    /// key `e` brings in or the key before it is known.
    fn knows(&self, book: &Book, e: &KeyEvent) -> bool {
        let own = self
            .own
            .lock()
            .ok()
            .and_then(|o| o.as_ref().map(|(h, _)| *h));
        if own == Some(e.household) {
            return true;
        }
        let Some(known) = self.known.get() else {
            return false;
        };
        let before = e
            .seq
            .checked_sub(1)
            .and_then(|seq| book.get(&e.household, seq))
            .map(|b| b.key);
        known(&e.household) || known(&e.key) || before.is_some_and(|k| known(&k))
    }

    /// How many events this household's own key log holds (0: it keeps none), once the node
    /// read it (5 s after its start).
    pub fn own_log_len(&self) -> Option<usize> {
        self.own.lock().ok()?.as_ref().map(|(_, log)| log.len())
    }

    /// Sets this node's household and its log (read from `DATA_DIR/keys.json`; empty: none).
    pub fn set_own(&self, household: PublicKey, log: Vec<KeyEvent>) {
        if let Ok(mut own) = self.own.lock() {
            *own = Some((household, log));
        }
    }

    /// Why this household's owner must look, if an event of this household that its log does
    /// not hold was heard here: someone holding its key signed a log of their own (a thief,
    /// unless the owner signed it on another machine). A coordinator carries the household's
    /// standing to a rotation after `rules.carry_after_ms` (`book::rotated`); a contest (the
    /// owner's own `hearth key prerotate`, whose event #0 differs) stops that.
    pub fn not_signed_here(&self) -> Option<String> {
        let (household, log) = self.own.lock().ok()?.clone()?;
        let book = self.inner.lock().ok()?;
        let foreign = book
            .first
            .get(&household)
            .and_then(|events| events.values().find(|k| !log.contains(&k.event)));
        let contested = book.contested.contains(&household);
        let advice = if log.is_empty() {
            "if nobody of this household signed it, its key was stolen: `hearth key prerotate` \
             contests it (coordinators then carry no standing to the thief's key), and see \
             \"A household whose key was stolen\" in docs/operations.md"
        } else {
            "if nobody of this household signed it, its key was stolen: this node's own log, \
             published every 10 minutes, contests it; see \"A household whose key was stolen\" \
             in docs/operations.md"
        };
        match (foreign, contested) {
            (Some(k), _) => Some(format!(
                "key event #{} of this household, signed by key {}, was heard and is not in \
                 this node's key log; {advice}",
                k.event.seq,
                k.event.key.to_hex()
            )),
            (None, true) => Some(format!(
                "a second key event of this household under a number of its log was heard, \
                 one this node did not sign; {advice}"
            )),
            (None, false) => None,
        }
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
            let (Ok(cursor), Some((e, _))) = (Cursor::try_from(key.as_ref()), decode(&value))
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
    /// checking and keeping each; returns what they changed here. Stops at
    /// [`MAX_PULL_PAGES`], at the first answer that is not a page (an older node answers
    /// Error), at the first event that does not check or cannot be kept, and when the peer's
    /// cursor stops increasing.
    pub(super) async fn pull(&self, net: &Network, peer: PeerId) -> Heard {
        let mut after = self.resume.lock().ok().and_then(|r| *r);
        let mut retired = Heard::default();
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
                match self.hear(e, crate::model::now_ms()) {
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
/// Each round also tells `book` the log (the household is `key`'s when there is none), and
/// logs an error while an event of the household that the log does not hold was heard.
pub(super) async fn publish(
    data_dir: PathBuf,
    key: PublicKey,
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
        let household = events.first().map_or(key, |e| e.household);
        book.set_own(household, events.clone());
        let mut out = 0;
        for e in &events {
            heard(audit.as_ref(), e);
            if let Err(err) = book.hear(e, crate::model::now_ms()) {
                tracing::warn!(seq = e.seq, "own key event not kept: {err}");
            }
            match net.publish(Topic::Evidence, e.to_bytes()).await {
                // Still in the network's memory from the last round: out already.
                Ok(()) | Err(NetError::Duplicate) => out += 1,
                Err(err) => tracing::debug!(seq = e.seq, "key event not published yet: {err}"),
            }
        }
        if let Some(why) = book.not_signed_here() {
            tracing::error!("{why}");
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
/// check. Returns what it changed here beside the verdict.
pub(super) fn gossip(
    audit: Option<&AuditLog>,
    book: &KeyBook,
    data: &[u8],
    via: PeerId,
) -> (Verdict, Heard) {
    let Ok(e) = KeyEvent::from_bytes(data) else {
        return (Verdict::Reject, Heard::default());
    };
    let mut retired = Heard::default();
    if !book.known(&e) {
        let admitted = book
            .admission
            .lock()
            .is_ok_and(|mut a| a.admit(via, Instant::now()));
        if !admitted {
            return (Verdict::Ignore, Heard::default());
        }
        if e.verify().is_err() {
            return (Verdict::Reject, Heard::default());
        }
        // Not kept, not passed on: it comes again with its household's next round.
        retired = match book.hear(&e, crate::model::now_ms()) {
            Ok(retired) => retired,
            Err(err) => {
                tracing::warn!("a key event heard could not be kept: {err}");
                return (Verdict::Ignore, Heard::default());
            }
        };
    }
    for r in &retired.rotated {
        tracing::info!(
            key = %r.old.to_hex(),
            household = %e.household.to_hex(),
            "a household rotated away from this key: no work is leased to it or taken from it here"
        );
    }
    if !retired.contested.is_empty() {
        tracing::warn!(
            household = %e.household.to_hex(),
            seq = e.seq,
            "two different key events under one number: this household's keys are left alone here"
        );
    }
    let verdict = match heard(audit, &e) {
        Some(HeardKeyEvent::Full) => Verdict::Ignore,
        _ => Verdict::Accept,
    };
    (verdict, retired)
}

/// Tells this node's coordinator what events changed here: for each rotation, an exclusion
/// of the old key carries over to the new one, and after a long enough wait its record
/// (`Book::inherit`); what retired keys hold in running jobs is taken back; and a contested
/// household's keys count no carried record any more.
pub(super) async fn tell_coordinator(coordinator: &CoordinatorHandle, heard: Heard) {
    if !heard.contested.is_empty() {
        coordinator.keys_contested(heard.contested).await;
    }
    if heard.rotated.is_empty() {
        return;
    }
    for r in &heard.rotated {
        coordinator.key_rotated(r.old, r.new, r.gap_ms).await;
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

mod chains;
#[cfg(test)]
mod tests;
