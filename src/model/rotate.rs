//! Key rotation with pre-rotation: a household's credit follows it from one key to the next,
//! and only the household can name the next one.
//!
//! A household's first key is its name for good (the *household*). When it starts keeping a
//! key log, its first key signs event #0, which commits to the hash of the *next* key
//! ([`next_digest`]) while that key itself stays offline. To rotate, the household brings the
//! next key out: event #n is signed by the n-th key, whose hash event #n−1 committed to, and
//! commits to the hash of the one after it. A thief who holds the current key cannot rotate
//! the household to a key of its own, since the next key is already fixed by its hash; it
//! can sign a second, different event #0 (or #n, if it stole the n-th key), and then, without
//! an auditor's word on which came first, the chain stops at that key: a thief can freeze a
//! household's rotation, never take it over.
//!
//! What a chain does to credit (`docs/receipts.md`, "Rotating a key"): receipts crediting any
//! of its keys are the household's, tallied and checked for conservation together; a key is
//! *retired* at the `issued_ms` of the event that names its successor, and a receipt crediting
//! it whose window ends after that counts for nothing. Countersignatures by a retired key are
//! governed by revocation statements (`model::revoke`), which the household signs with the
//! retired key it keeps.
//!
//! `docs/receipts.md` gives the byte layout and the rules; `docs/verify_receipt.py` implements
//! both independently. Pure data: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use super::canon::{DecodeError, Reader, Writer};
use crate::identity::{Identity, PublicKey};

const MAGIC: &[u8; 4] = b"HKEY";
const VERSION: u8 = 1;
/// Domain of a key's signature over a key event's body.
pub const KEY_EVENT_DOMAIN: &[u8] = b"hearth/key-event/v1";
/// Domain of the hash an event commits to: `blake3(NEXT_KEY_DOMAIN ‖ next key)`.
pub const NEXT_KEY_DOMAIN: &[u8] = b"hearth/next-key/v1";
/// Bytes of an event body: magic, version, household, seq, key, next, issued_ms.
pub const BODY_LEN: usize = 4 + 1 + 32 + 8 + 32 + 32 + 8;
/// Bytes of a signed event.
pub const EVENT_LEN: usize = BODY_LEN + 64;
/// Name of the JSON form of one event (a key log is a JSON list of them).
pub const FORMAT: &str = "hearth-key-event/1";

/// The hash an event commits to for the key after it.
pub fn next_digest(key: &PublicKey) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(NEXT_KEY_DOMAIN).update(&key.0);
    *h.finalize().as_bytes()
}

/// One signed step of a household's key log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyEvent {
    /// The household's first key: the name its credit goes under.
    pub household: PublicKey,
    /// 0 for the first event (signed by `household` itself), n for the n-th rotation.
    pub seq: u64,
    /// The key that signs this event and is the household's key from it on.
    pub key: PublicKey,
    /// [`next_digest`] of the key that may sign event `seq + 1`.
    pub next: [u8; 32],
    /// When it was signed, ms since the epoch: the moment the previous key is retired.
    pub issued_ms: u64,
    pub sig: [u8; 64],
}

impl KeyEvent {
    /// Signs event `seq` of `household`'s log with `key`, committing to `next`'s hash.
    pub fn sign(
        household: PublicKey,
        seq: u64,
        key: &Identity,
        next: &PublicKey,
        issued_ms: u64,
    ) -> KeyEvent {
        let mut e = KeyEvent {
            household,
            seq,
            key: key.public(),
            next: next_digest(next),
            issued_ms,
            sig: [0; 64],
        };
        e.sig = key.sign(&e.signed_message());
        e
    }

    /// The signed body.
    pub fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION)
            .raw(&self.household.0)
            .u64(self.seq)
            .raw(&self.key.0)
            .raw(&self.next)
            .u64(self.issued_ms);
        w.into_bytes()
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = KEY_EVENT_DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.sig);
        b
    }

    /// Decodes exactly [`EVENT_LEN`] bytes. Does not check the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyEvent, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(MAGIC, VERSION, "key event")?;
        let out = KeyEvent {
            household: PublicKey(r.array("household")?),
            seq: r.u64("seq")?,
            key: PublicKey(r.array("key")?),
            next: r.array("next")?,
            issued_ms: r.u64("issued_ms")?,
            sig: r.array("key event signature")?,
        };
        r.finish()?;
        Ok(out)
    }

    /// The signature is its key's (strict, as receipts are checked), and event #0 is signed by
    /// the household's own key.
    pub fn verify(&self) -> Result<(), String> {
        if self.seq == 0 && self.key != self.household {
            return Err("event #0 is not signed by the household's own key".into());
        }
        if self.key.verify(&self.signed_message(), &self.sig) {
            Ok(())
        } else {
            Err("the key event's signature is not its key's".into())
        }
    }

    /// The JSON form a household hands out with its receipts.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "format": FORMAT,
            "household": self.household.to_hex(),
            "seq": self.seq,
            "key": self.key.to_hex(),
            "next": hex::encode(self.next),
            "issued_ms": self.issued_ms,
            "signed": hex::encode(self.to_bytes()),
        })
    }

    /// Reads one event in its JSON form: its signed bytes decode, the signature verifies, and
    /// its readable fields are those bytes'. Anything else is an error saying what.
    pub fn from_json(value: &serde_json::Value) -> Result<KeyEvent, String> {
        if value["format"].as_str() != Some(FORMAT) {
            return Err(format!("\"format\" is not {FORMAT:?}"));
        }
        let bytes = super::signed_hex(value)?;
        let e = KeyEvent::from_bytes(&bytes).map_err(|e| e.to_string())?;
        e.verify()?;
        if value["household"].as_str() != Some(e.household.to_hex().as_str())
            || value["seq"].as_u64() != Some(e.seq)
            || value["key"].as_str() != Some(e.key.to_hex().as_str())
            || value["next"].as_str() != Some(hex::encode(e.next).as_str())
            || value["issued_ms"].as_u64() != Some(e.issued_ms)
        {
            return Err(
                "its household, seq, key, next or issued_ms is not its signed bytes'".into(),
            );
        }
        Ok(e)
    }
}

/// Reads a key log: one event in its JSON form, or a list of them.
pub fn parse_log(text: &str) -> Result<Vec<KeyEvent>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match &value {
        serde_json::Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| KeyEvent::from_json(v).map_err(|e| format!("event {i}: {e}")))
            .collect(),
        v => Ok(vec![KeyEvent::from_json(v)?]),
    }
}

/// What auditors' logs hold per (household, number): the one event heard first, or `None`
/// when logs disagree (`model::tally::AuditLogs`).
pub type Logged = std::collections::HashMap<(PublicKey, u64), Option<KeyEvent>>;

/// One key of a household's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainKey {
    pub key: PublicKey,
    /// When the event naming its successor was signed; `None` for the household's current key.
    pub retired_ms: Option<u64>,
}

/// Every household's chain of keys, built from the events a verifier holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyChains {
    /// Household → its keys, first to current.
    chains: BTreeMap<PublicKey, Vec<ChainKey>>,
    /// Key → (household, index in its chain).
    owner: BTreeMap<PublicKey, (PublicKey, usize)>,
    /// What stopped a chain, one line each (`docs/receipts.md` gives their wording).
    pub notes: Vec<String>,
}

impl KeyChains {
    /// Builds every household's chain from verified events (duplicates are one event).
    /// Households are taken in key order; for each, event #0 and then, for n = 1, 2, …, the
    /// events #n whose key hashes to what #n−1 committed to and that are not signed earlier
    /// than it. Two different events under one number stop the chain at their key; a key
    /// that is another household's, or already in a chain, stops it before that key.
    pub fn build(events: &[KeyEvent]) -> KeyChains {
        KeyChains::build_logged(events, &Logged::new())
    }

    /// [`KeyChains::build`] with what auditors' logs say was heard first: where the logs hold
    /// one event under a (household, number), only that event is taken there (the others
    /// were signed later: a thief's); where they hold two different ones (`None`: auditors
    /// that disagree), every event stands and the chain stops as without logs. The logged
    /// events must be among `events`.
    pub fn build_logged(events: &[KeyEvent], logged: &Logged) -> KeyChains {
        let mut by_household: BTreeMap<PublicKey, BTreeMap<u64, BTreeSet<&KeyEvent>>> =
            BTreeMap::new();
        for e in events {
            by_household
                .entry(e.household)
                .or_default()
                .entry(e.seq)
                .or_default()
                .insert(e);
        }
        let mut out = KeyChains::default();
        // Every household that has a log is named by its own key: no other chain may take it.
        let mut taken: BTreeSet<PublicKey> = by_household.keys().copied().collect();
        for (household, log) in &by_household {
            let hx = household.to_hex();
            let mut chain = vec![ChainKey {
                key: *household,
                retired_ms: None,
            }];
            let heard_first = |seq: u64, e: &KeyEvent| match logged.get(&(*household, seq)) {
                Some(Some(first)) => first == e,
                _ => true,
            };
            let first: Vec<&KeyEvent> = log
                .get(&0)
                .into_iter()
                .flatten()
                .copied()
                .filter(|e| heard_first(0, e))
                .collect();
            let mut prev = match first.as_slice() {
                [] => {
                    out.notes.push(format!(
                        "keys of household {hx}: no event #0: its key is not rotated"
                    ));
                    None
                }
                [only] => Some(*only),
                _ => {
                    out.notes.push(format!(
                        "keys of household {hx}: two different events #0: the chain stops at key {hx}"
                    ));
                    None
                }
            };
            while let Some(p) = prev {
                let seq = p.seq + 1;
                let candidates: Vec<&KeyEvent> = log
                    .get(&seq)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|e| next_digest(&e.key) == p.next && e.issued_ms >= p.issued_ms)
                    .filter(|e| heard_first(seq, e))
                    .collect();
                let Some(e) = candidates.first() else {
                    break;
                };
                let kx = e.key.to_hex();
                if !taken.insert(e.key) {
                    out.notes.push(format!(
                        "keys of household {hx}: key {kx} of event #{seq} is another household's or already in a chain: the chain stops before it"
                    ));
                    break;
                }
                // Two versions of one event have the same key (its hash was fixed before);
                // the earlier `issued_ms` retires the previous key.
                let retired = candidates.iter().map(|e| e.issued_ms).min();
                if let Some(last) = chain.last_mut() {
                    last.retired_ms = retired;
                }
                chain.push(ChainKey {
                    key: e.key,
                    retired_ms: None,
                });
                prev = match candidates.as_slice() {
                    [only] => Some(*only),
                    _ => {
                        out.notes.push(format!(
                            "keys of household {hx}: two different events #{seq}: the chain stops at key {kx}"
                        ));
                        None
                    }
                };
            }
            for (i, k) in chain.iter().enumerate() {
                out.owner.insert(k.key, (*household, i));
            }
            out.chains.insert(*household, chain);
        }
        out
    }

    /// The household a key's credit goes under: its chain's first key, or the key itself.
    pub fn household_of(&self, key: &PublicKey) -> PublicKey {
        self.owner.get(key).map_or(*key, |(h, _)| *h)
    }

    /// The keys of `household`'s chain, first to current (just the household without a log).
    pub fn keys_of(&self, household: &PublicKey) -> Vec<ChainKey> {
        self.chains.get(household).cloned().unwrap_or_else(|| {
            vec![ChainKey {
                key: *household,
                retired_ms: None,
            }]
        })
    }

    /// The household's current key: the last of its chain.
    pub fn current(&self, household: &PublicKey) -> PublicKey {
        self.keys_of(household).last().map_or(*household, |k| k.key)
    }

    /// Whether a receipt crediting `worker` over a window ending at `end_ms` still counts; the
    /// reason when its key was retired before the window ended.
    pub fn check(&self, worker: &PublicKey, end_ms: u64) -> Result<(), String> {
        let Some((household, i)) = self.owner.get(worker) else {
            return Ok(());
        };
        match self.chains[household][*i].retired_ms {
            Some(at) if end_ms > at => Err(format!(
                "its worker key {} of household {} was retired at {at} ms, before its window ended at {end_ms} ms",
                worker.to_hex(),
                household.to_hex()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<Identity> {
        (1..=4u8).map(|i| Identity::from_seed([i; 32])).collect()
    }

    /// A household's log of two rotations: keys 1 → 2 → 3, key 4 committed to next.
    fn log(k: &[Identity]) -> Vec<KeyEvent> {
        let h = k[0].public();
        vec![
            KeyEvent::sign(h, 0, &k[0], &k[1].public(), 1_000),
            KeyEvent::sign(h, 1, &k[1], &k[2].public(), 2_000),
            KeyEvent::sign(h, 2, &k[2], &k[3].public(), 3_000),
        ]
    }

    #[test]
    fn an_event_round_trips_and_every_byte_is_signed() {
        let k = ids();
        let e = KeyEvent::sign(k[0].public(), 1, &k[1], &k[2].public(), 7);
        let bytes = e.to_bytes();
        assert_eq!(bytes.len(), EVENT_LEN);
        assert_eq!(KeyEvent::from_bytes(&bytes).unwrap(), e);
        e.verify().unwrap();
        assert_eq!(KeyEvent::from_json(&e.to_json()).unwrap(), e);
        for i in 5..BODY_LEN {
            let mut b = bytes.clone();
            b[i] ^= 1;
            let bent = KeyEvent::from_bytes(&b).unwrap();
            assert!(bent.verify().is_err(), "byte {i} is not signed");
        }
        assert!(KeyEvent::from_bytes(&bytes[..EVENT_LEN - 1]).is_err());
        assert!(KeyEvent::from_bytes(&[bytes.clone(), vec![0]].concat()).is_err());
        let mut edited = e.to_json();
        edited["seq"] = 2.into();
        assert!(KeyEvent::from_json(&edited)
            .unwrap_err()
            .contains("not its signed bytes'"));
        // Event #0 must be the household's own.
        let stranger = KeyEvent::sign(k[0].public(), 0, &k[1], &k[2].public(), 7);
        assert!(stranger
            .verify()
            .unwrap_err()
            .contains("household's own key"));
    }

    #[test]
    fn a_chain_follows_the_committed_keys_and_retires_each_at_its_successors_event() {
        let k = ids();
        let chains = KeyChains::build(&log(&k));
        let h = k[0].public();
        assert!(chains.notes.is_empty(), "{:?}", chains.notes);
        let keys = chains.keys_of(&h);
        assert_eq!(
            keys,
            vec![
                ChainKey {
                    key: k[0].public(),
                    retired_ms: Some(2_000)
                },
                ChainKey {
                    key: k[1].public(),
                    retired_ms: Some(3_000)
                },
                ChainKey {
                    key: k[2].public(),
                    retired_ms: None
                },
            ]
        );
        for key in &k[..3] {
            assert_eq!(chains.household_of(&key.public()), h);
        }
        // Key 4 is only committed to, not yet the household's.
        assert_eq!(chains.household_of(&k[3].public()), k[3].public());
        assert_eq!(chains.current(&h), k[2].public());
        assert!(chains.check(&k[0].public(), 2_000).is_ok());
        let err = chains.check(&k[0].public(), 2_001).unwrap_err();
        assert!(err.contains("retired at 2000 ms"), "{err}");
        assert!(chains.check(&k[2].public(), u64::MAX).is_ok());
        // The log in any order and with repeats builds the same chains.
        let mut shuffled = log(&k);
        shuffled.reverse();
        shuffled.extend(log(&k));
        assert_eq!(KeyChains::build(&shuffled), chains);
    }

    /// A thief holding the current key cannot rotate the household to its own key: the next
    /// key's hash is fixed. A second event #0 (the thief's, signed with the stolen first key)
    /// stops the chain at the first key: frozen, not taken over.
    #[test]
    fn a_thief_with_the_current_key_can_freeze_a_rotation_but_not_take_it() {
        let k = ids();
        let h = k[0].public();
        let thief = Identity::from_seed([9; 32]);
        // Rotation to the thief's key, signed by the stolen key 2 as event #1: its key does
        // not hash to what #0 committed to.
        let mut events = vec![
            KeyEvent::sign(h, 0, &k[0], &k[1].public(), 1_000),
            KeyEvent::sign(h, 1, &thief, &thief.public(), 2_000),
        ];
        let chains = KeyChains::build(&events);
        assert_eq!(chains.current(&h), h);
        assert_eq!(chains.household_of(&thief.public()), thief.public());
        // A second event #0 signed with the stolen first key.
        events.push(KeyEvent::sign(h, 0, &k[0], &thief.public(), 900));
        events.push(KeyEvent::sign(h, 1, &k[1], &k[2].public(), 2_000));
        let chains = KeyChains::build(&events);
        assert_eq!(chains.keys_of(&h).len(), 1);
        assert_eq!(
            chains.notes,
            vec![format!(
                "keys of household {}: two different events #0: the chain stops at key {}",
                h.to_hex(),
                h.to_hex()
            )]
        );
        // Two versions of event #1 (the thief stole key 2 after the rotation): key 2 stays the
        // household's, retired key 1 at the earlier time, and the chain stops there.
        let events = vec![
            KeyEvent::sign(h, 0, &k[0], &k[1].public(), 1_000),
            KeyEvent::sign(h, 1, &k[1], &k[2].public(), 2_000),
            KeyEvent::sign(h, 1, &k[1], &thief.public(), 2_500),
            KeyEvent::sign(h, 2, &thief, &thief.public(), 3_000),
        ];
        let chains = KeyChains::build(&events);
        assert_eq!(chains.current(&h), k[1].public());
        assert_eq!(chains.keys_of(&h)[0].retired_ms, Some(2_000));
        assert_eq!(chains.household_of(&thief.public()), thief.public());
        assert!(chains.notes[0].contains("two different events #1"));
    }

    /// With auditors' logs the event heard first stands: the household's event #0, logged
    /// before a thief signed another with the stolen key, keeps the rotation; logs that
    /// disagree leave the contest, and the chain stops as without them.
    #[test]
    fn an_auditors_first_heard_event_settles_a_contest() {
        let k = ids();
        let h = k[0].public();
        let thief = Identity::from_seed([9; 32]);
        let mut events = log(&k);
        let forged = KeyEvent::sign(h, 0, &k[0], &thief.public(), 500);
        events.push(forged.clone());
        assert_eq!(KeyChains::build(&events).current(&h), h);
        let mut logged = Logged::new();
        logged.insert((h, 0), Some(events[0].clone()));
        let settled = KeyChains::build_logged(&events, &logged);
        assert_eq!(settled.current(&h), k[2].public());
        assert!(settled.notes.is_empty(), "{:?}", settled.notes);
        // The thief's logged first (it stole the key before the household's log was heard):
        // the chain is the thief's #0, whose next key nobody ever brought in.
        logged.insert((h, 0), Some(forged));
        assert_eq!(KeyChains::build_logged(&events, &logged).current(&h), h);
        logged.insert((h, 0), None);
        let disputed = KeyChains::build_logged(&events, &logged);
        assert_eq!(disputed.current(&h), h);
        assert!(disputed.notes[0].contains("two different events #0"));
    }

    #[test]
    fn an_event_signed_before_its_predecessor_or_a_key_of_another_household_stops_the_chain() {
        let k = ids();
        let h = k[0].public();
        let backdated = vec![
            KeyEvent::sign(h, 0, &k[0], &k[1].public(), 1_000),
            KeyEvent::sign(h, 1, &k[1], &k[2].public(), 999),
        ];
        assert_eq!(KeyChains::build(&backdated).current(&h), h);
        // Key 2 keeps a log of its own as a household: household 1 cannot rotate into it.
        let events = vec![
            KeyEvent::sign(h, 0, &k[0], &k[1].public(), 1_000),
            KeyEvent::sign(h, 1, &k[1], &k[2].public(), 2_000),
            KeyEvent::sign(k[1].public(), 0, &k[1], &k[3].public(), 500),
        ];
        let chains = KeyChains::build(&events);
        assert_eq!(chains.current(&h), h);
        assert_eq!(chains.household_of(&k[1].public()), k[1].public());
        assert!(chains.notes[0].contains("is another household's or already in a chain"));
        assert!(KeyChains::build(&[]).notes.is_empty());
        let only_later = vec![KeyEvent::sign(h, 1, &k[1], &k[2].public(), 2_000)];
        let chains = KeyChains::build(&only_later);
        assert!(
            chains.notes[0].contains("no event #0"),
            "{:?}",
            chains.notes
        );
    }

    /// `docs/key-log-example.json` and the bytes `docs/receipts.md` prints are what hearth
    /// signs for the example's worker (seed `01`×32 rotating to `04`×32, committing to `05`×32):
    /// one specification, the same bytes from both implementations (the Python verifier made
    /// the file).
    #[test]
    fn the_documented_example_is_what_hearth_signs() {
        let seed = |i: u8| Identity::from_seed([i; 32]);
        let h = seed(1).public();
        let ours = vec![
            KeyEvent::sign(h, 0, &seed(1), &seed(4).public(), 1_699_999_999_000),
            KeyEvent::sign(h, 1, &seed(4), &seed(5).public(), 1_700_000_008_500),
        ];
        let text = include_str!("../../docs/key-log-example.json");
        assert_eq!(parse_log(text).unwrap(), ours);
        let file: serde_json::Value = serde_json::from_str(text).unwrap();
        let json: Vec<serde_json::Value> = ours.iter().map(KeyEvent::to_json).collect();
        assert_eq!(file, serde_json::Value::Array(json));
        let doc = include_str!("../../docs/receipts.md");
        let printed: String = doc
            .split("Event #1's 181 bytes:")
            .nth(1)
            .and_then(|rest| rest.split("```text").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("docs/receipts.md prints the example key event")
            .split_whitespace()
            .collect();
        assert_eq!(printed, hex::encode(ours[1].to_bytes()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a thief signs (with any key of the household it stole, or keys of its
        /// own; any number, any next key, any time) and in whatever order a verifier is handed
        /// the events, the household's chain is its own once auditors' logs hold its events
        /// as heard first: no thief key ever joins it, and every key of it is retired when
        /// the household said. Without logs the chain may stop early (frozen), but a thief
        /// key joins only by an event signed with a household key the thief stole whose
        /// honest version the verifier lacks.
        #[test]
        fn a_thief_never_joins_a_chain_the_auditors_heard_first(
            forged in proptest::collection::vec(
                (0usize..6, 0u64..4, 0usize..6, 0u64..5_000), 0..8),
            order in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..16),
        ) {
            let k = ids();
            let thieves: Vec<Identity> = (9..=10u8).map(|i| Identity::from_seed([i; 32])).collect();
            let h = k[0].public();
            let honest = log(&k);
            // Signers: the household's first three keys (stolen) or the thief's own.
            let signer = |i: usize| if i < 3 { &k[i] } else { &thieves[i % 2] };
            let mut events = honest.clone();
            for (who, seq, next, at) in &forged {
                let next = signer(*next).public();
                let e = KeyEvent::sign(h, *seq, signer(*who), &next, *at);
                if e.verify().is_ok() && !honest.contains(&e) {
                    events.push(e);
                }
            }
            for (i, o) in order.iter().enumerate() {
                let (a, b) = (i % events.len(), *o as usize % events.len());
                events.swap(a, b);
            }
            let mut logged = Logged::new();
            for e in &honest {
                logged.insert((h, e.seq), Some(e.clone()));
            }
            let chains = KeyChains::build_logged(&events, &logged);
            let honest_chains = KeyChains::build(&honest);
            proptest::prop_assert_eq!(chains.keys_of(&h), honest_chains.keys_of(&h));
            // Without logs: never a key outside the household's and the thief's stolen
            // ones' successors, and never a thief key unless an honest event is missing,
            // which it is not here: so never a thief key at all.
            let alone = KeyChains::build(&events);
            for key in alone.keys_of(&h) {
                proptest::prop_assert!(thieves.iter().all(|t| t.public() != key.key));
            }
        }
    }

    #[test]
    fn a_log_is_one_event_or_a_list() {
        let k = ids();
        let events = log(&k);
        let list = serde_json::Value::Array(events.iter().map(KeyEvent::to_json).collect());
        assert_eq!(parse_log(&list.to_string()).unwrap(), events);
        assert_eq!(
            parse_log(&events[1].to_json().to_string()).unwrap(),
            vec![events[1].clone()]
        );
        assert!(parse_log("[{}]").unwrap_err().starts_with("event 0:"));
        assert!(parse_log("nope").unwrap_err().starts_with("not JSON"));
    }
}
