//! A household's key log on the network (docs/receipts.md, "Rotating a key"; docs/protocol.md
//! §6.6): the node publishes its own log's events on `hearth/evidence/1`, and takes others'
//! from gossip, checking each; an auditor (bootstrap node) logs the first heard under each
//! household and number, and a second, different one as the proof of a contest
//! (`audit::AuditLog::hear_key_event`). What the first-heard record settles: a thief who
//! stole the current key after the household published its log cannot undo the rotation with
//! an event signed later.
//!
//! Every node also keeps the events it heard in a [`KeyBook`] (in memory, the first heard per
//! household and number, as an auditor keeps them) and refuses the keys they retire: its
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

/// Most key events a node keeps in its [`KeyBook`] (about 200 bytes each: 3.2 MB): a household
/// writes one when it starts its log and one per rotation; past the bound, new households'
/// events are not kept (and their keys not refused here).
pub const MAX_HEARD: usize = 1 << 14;

/// The key events this node heard and the keys they retire. Cheap to clone.
#[derive(Clone, Default)]
pub struct KeyBook {
    inner: Arc<Mutex<Book>>,
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

impl KeyBook {
    /// Takes a checked event (`KeyEvent::verify`). Returns the keys it newly retires.
    pub fn hear(&self, e: &KeyEvent) -> Vec<PublicKey> {
        let Ok(mut book) = self.inner.lock() else {
            return Vec::new();
        };
        let slot = (e.household, e.seq);
        match book.first.get(&slot).map(|first| first == e) {
            Some(true) => return Vec::new(),
            Some(false) => {
                // A contest: its keys are retired by nobody's word here any more.
                book.contested.insert(e.household);
                let household = e.household;
                let keys: Vec<PublicKey> = book
                    .first
                    .values()
                    .filter(|f| f.household == household)
                    .map(|f| f.key)
                    .collect();
                for k in keys {
                    book.retired.remove(&k);
                }
                return Vec::new();
            }
            None if book.first.len() >= MAX_HEARD => return Vec::new(),
            None => {}
        }
        book.first.insert(slot, e.clone());
        if book.contested.contains(&e.household) {
            return Vec::new();
        }
        let events: Vec<KeyEvent> = book
            .first
            .values()
            .filter(|f| f.household == e.household)
            .cloned()
            .collect();
        let logged: Logged = events
            .iter()
            .map(|f| ((f.household, f.seq), Some(f.clone())))
            .collect();
        let chains = KeyChains::build_logged(&events, &logged);
        let current = chains.current(&e.household);
        let mut newly = Vec::new();
        for k in chains.keys_of(&e.household) {
            if k.retired_ms.is_some() && book.retired.insert(k.key, current).is_none() {
                newly.push(k.key);
            }
        }
        newly
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
            book.hear(e);
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
    let retired = book.hear(&e);
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
        let book = KeyBook::default();
        let e0 = KeyEvent::sign(h, 0, &k[0], &k[1].public(), 10);
        let e1 = KeyEvent::sign(h, 1, &k[1], &k[2].public(), 20);
        assert!(book.hear(&e0).is_empty());
        assert_eq!(book.hear(&e1), vec![h]);
        assert!(book.hear(&e1).is_empty(), "heard again: nothing new");
        assert_eq!(book.retired(&h), Some(k[1].public()));
        assert_eq!(book.retired(&k[1].public()), None);
        // A thief signs another #1 with the stolen key 2: the household is contested here,
        // and nothing of it stays retired.
        let thief = Identity::from_seed([9; 32]);
        let forged = KeyEvent::sign(h, 1, &k[1], &thief.public(), 30);
        assert!(book.hear(&forged).is_empty());
        assert_eq!(book.retired(&h), None);
        let e2 = KeyEvent::sign(h, 2, &k[2], &k[3].public(), 40);
        assert!(book.hear(&e2).is_empty());
        assert_eq!(book.retired(&k[1].public()), None);
    }
}
