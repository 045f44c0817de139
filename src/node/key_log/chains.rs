//! The key book in memory: the first event heard under each household and number, with when
//! it was heard, the contested households, and the keys their chains retire; and how an entry
//! of the `key-events` tree is encoded. Must not touch: I/O (the tree is `KeyBook`'s).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Rotation;
use crate::identity::PublicKey;
use crate::model::rotate::{KeyChains, KeyEvent, Logged};

/// An event kept, with when this node first heard it (ms).
#[derive(Clone)]
pub(super) struct Kept {
    pub(super) event: KeyEvent,
    pub(super) heard_ms: u64,
}

/// A stored value: the event and when it was first heard (`None`: an entry written before
/// heard times were kept).
pub(super) fn decode(value: &[u8]) -> Option<(KeyEvent, Option<u64>)> {
    const SIGNED: usize = crate::model::rotate::EVENT_LEN;
    match value.len() {
        n if n == SIGNED + 8 => {
            let e = KeyEvent::from_bytes(&value[..SIGNED]).ok()?;
            let heard = u64::from_be_bytes(value[SIGNED..].try_into().ok()?);
            Some((e, Some(heard)))
        }
        _ => Some((KeyEvent::from_bytes(value).ok()?, None)),
    }
}

pub(super) fn encode(e: &KeyEvent, heard_ms: u64) -> Vec<u8> {
    let mut v = e.to_bytes();
    v.extend_from_slice(&heard_ms.to_be_bytes());
    v
}

#[derive(Default)]
pub(super) struct Book {
    /// The first event heard under each number, by household.
    pub(super) first: HashMap<PublicKey, BTreeMap<u64, Kept>>,
    /// How many events `first` holds: at most [`MAX_HEARD`].
    pub(super) events: usize,
    /// Households for which a second, different event was heard.
    pub(super) contested: HashSet<PublicKey>,
    /// Retired key → the household's current key, as this node's chains say.
    pub(super) retired: HashMap<PublicKey, PublicKey>,
}

impl Book {
    /// The event first heard under `household` and `seq`.
    pub(super) fn get(&self, household: &PublicKey, seq: u64) -> Option<&KeyEvent> {
        self.first.get(household)?.get(&seq).map(|k| &k.event)
    }

    /// Keeps `e`, heard at `heard_ms`, as the first heard under its household and number (the
    /// caller checked there was none, and room).
    pub(super) fn insert(&mut self, e: KeyEvent, heard_ms: u64) {
        let (household, seq) = (e.household, e.seq);
        let kept = Kept { event: e, heard_ms };
        if self
            .first
            .entry(household)
            .or_default()
            .insert(seq, kept)
            .is_none()
        {
            self.events += 1;
        }
    }

    /// The keys of `household`'s events kept here, its own first key among them.
    pub(super) fn keys(&self, household: &PublicKey) -> Vec<PublicKey> {
        let mut keys = vec![*household];
        if let Some(events) = self.first.get(household) {
            keys.extend(
                events
                    .values()
                    .map(|k| k.event.key)
                    .filter(|k| k != household),
            );
        }
        keys
    }

    /// Leaves `household` alone: its keys are retired by nobody's word here any more. Returns
    /// its keys.
    pub(super) fn contest(&mut self, household: PublicKey) -> Vec<PublicKey> {
        self.contested.insert(household);
        let keys = self.keys(&household);
        for k in &keys {
            self.retired.remove(k);
        }
        keys
    }

    /// Builds `household`'s chain from the events heard first; returns the rotations it newly
    /// shows (each retiring a key).
    pub(super) fn retire(&mut self, household: PublicKey) -> Vec<Rotation> {
        if self.contested.contains(&household) {
            return Vec::new();
        }
        let kept: Vec<&Kept> = self
            .first
            .get(&household)
            .map(|events| events.values().collect())
            .unwrap_or_default();
        // Event #n brought in the chain's n-th key (`KeyChains::build_logged`).
        let heard: HashMap<u64, u64> = kept.iter().map(|k| (k.event.seq, k.heard_ms)).collect();
        let events: Vec<KeyEvent> = kept.iter().map(|k| k.event.clone()).collect();
        let logged: Logged = events
            .iter()
            .map(|f| ((f.household, f.seq), Some(f.clone())))
            .collect();
        let chains = KeyChains::build_logged(&events, &logged);
        let current = chains.current(&household);
        let keys = chains.keys_of(&household);
        let mut newly = Vec::new();
        for (n, pair) in keys.windows(2).enumerate() {
            let (old, new) = (&pair[0], &pair[1]);
            if old.retired_ms.is_some() && self.retired.insert(old.key, current).is_none() {
                let seq = n as u64 + 1;
                // Both were kept with their times; were one missing, no gap (nothing carries).
                let gap_ms = match (heard.get(&seq), heard.get(&(seq - 1))) {
                    (Some(rotation), Some(fixed)) => rotation.saturating_sub(*fixed),
                    _ => 0,
                };
                newly.push(Rotation {
                    old: old.key,
                    new: new.key,
                    gap_ms,
                });
            }
        }
        newly
    }
}
