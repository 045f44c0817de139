//! The key book's and the key log's own tests (real sled on disk, real signatures).

use super::*;
use crate::identity::Identity;

/// A rotation heard retires the key before it, saying how long before the rotation this
/// node heard the event that fixed the new key; a household whose events were contested
/// here retires nothing (the thief may have been heard first), and its keys are named
/// once, when the contest is heard.
#[test]
fn a_heard_rotation_retires_the_key_before_it_unless_contested() {
    let k: Vec<Identity> = (1..=4u8).map(|i| Identity::from_seed([i; 32])).collect();
    let h = k[0].public();
    let dir = tempfile::tempdir().unwrap();
    let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
    let hear = |e: &KeyEvent, at: u64| book.hear(e, at).unwrap();
    let e0 = KeyEvent::sign(h, 0, &k[0], &k[1].public(), 10);
    let e1 = KeyEvent::sign(h, 1, &k[1], &k[2].public(), 20);
    assert!(hear(&e0, 1_000).is_empty());
    let rotated = Rotation {
        old: h,
        new: k[1].public(),
        gap_ms: 4_000,
    };
    assert_eq!(hear(&e1, 5_000).rotated, vec![rotated]);
    assert!(hear(&e1, 6_000).is_empty(), "heard again: nothing new");
    assert_eq!(book.retired(&h), Some(k[1].public()));
    assert_eq!(book.retired(&k[1].public()), None);
    assert_eq!(book.rotations(), vec![rotated], "told again at start");
    assert!(book.contested_keys().is_empty());
    // A thief signs another #1 with the stolen key 2: the household is contested here,
    // and nothing of it stays retired.
    let thief = Identity::from_seed([9; 32]);
    let forged = KeyEvent::sign(h, 1, &k[1], &thief.public(), 30);
    assert_eq!(hear(&forged, 7_000).contested, vec![h, k[1].public()]);
    assert!(hear(&forged, 7_000).is_empty(), "contested already");
    assert_eq!(book.retired(&h), None);
    let e2 = KeyEvent::sign(h, 2, &k[2], &k[3].public(), 40);
    assert!(hear(&e2, 8_000).is_empty());
    assert_eq!(book.retired(&k[1].public()), None);
    assert!(book.rotations().is_empty());
    assert_eq!(
        book.contested_keys().len(),
        3,
        "{:?}",
        book.contested_keys()
    );
}

/// A household's node says so when it hears an event of its household that its own log
/// does not hold: without a log, any event; with one, a thief's second event under one of
/// its numbers. Its own events, heard back, are not a reason.
#[test]
fn a_node_names_an_event_of_its_household_it_did_not_sign() {
    let id = |i: u8| Identity::from_seed([i; 32]);
    let (h, next, thief) = (id(1), id(2), id(9));
    let dir = tempfile::tempdir().unwrap();
    let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
    assert_eq!(book.not_signed_here(), None, "the log not read yet");
    book.set_own(h.public(), Vec::new());
    assert_eq!(book.not_signed_here(), None);
    let stolen = KeyEvent::sign(h.public(), 0, &h, &thief.public(), 20);
    book.hear(&stolen, 1).unwrap();
    let why = book.not_signed_here().expect("a foreign event #0");
    assert!(
        why.contains("#0") && why.contains("`hearth key prerotate` contests it"),
        "{why}"
    );

    let dir = tempfile::tempdir().unwrap();
    let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
    let own = KeyEvent::sign(h.public(), 0, &h, &next.public(), 10);
    book.set_own(h.public(), vec![own.clone()]);
    book.hear(&own, 1).unwrap();
    assert_eq!(book.not_signed_here(), None, "its own event");
    book.hear(&stolen, 2).unwrap();
    let why = book.not_signed_here().expect("a second event under #0");
    assert!(why.contains("a second key event"), "{why}");
    // Another household's events are not this one's business.
    let other = id(3);
    book.hear(
        &KeyEvent::sign(other.public(), 0, &other, &thief.public(), 20),
        3,
    )
    .unwrap();
    book.set_own(other.public(), Vec::new());
    assert!(book.not_signed_here().is_some());
    book.set_own(id(4).public(), Vec::new());
    assert_eq!(book.not_signed_here(), None);
}

/// Past [`MAX_UNKNOWN`] events, a stranger's event is not kept, while one of a household
/// this node knows still is: by its first key, by the key the event brings in, by the key
/// before it, or as this node's own. Before, a flood of fresh households' events filled
/// the book for everyone.
#[test]
fn strangers_cannot_crowd_out_the_rotations_of_households_this_node_knows() {
    let id = |i: u32| {
        let mut seed = [5u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        Identity::from_seed(seed)
    };
    let dir = tempfile::tempdir().unwrap();
    let book = KeyBook::open(&sled::open(dir.path()).unwrap()).unwrap();
    let next = id(u32::MAX).public();
    // A coordinator this node works for rotated once before the flood: it offers work
    // under its second key.
    let (h, k1, k2, k3) = (id(1_000_001), id(1_000_002), id(1_000_003), id(1_000_004));
    book.hear(&KeyEvent::sign(h.public(), 0, &h, &k1.public(), 1), 1)
        .unwrap();
    book.hear(&KeyEvent::sign(h.public(), 1, &k1, &k2.public(), 2), 2)
        .unwrap();
    let (worked_with, by_key) = (id(1_000_005), id(1_000_006));
    let known: std::collections::HashSet<PublicKey> =
        [k1.public(), worked_with.public(), by_key.public()].into();
    book.set_known(Arc::new(move |k: &PublicKey| known.contains(k)));
    for i in 2..MAX_UNKNOWN as u32 {
        let s = id(i);
        book.hear(&KeyEvent::sign(s.public(), 0, &s, &next, 10), 10)
            .unwrap();
    }
    let stranger = id(900_000);
    let first = |who: &Identity| KeyEvent::sign(who.public(), 0, who, &next, 10);
    book.hear(&first(&stranger), 11).unwrap();
    assert!(
        !book.known(&first(&stranger)),
        "a stranger past the room for strangers"
    );
    book.hear(&first(&worked_with), 11).unwrap();
    assert!(book.known(&first(&worked_with)), "known by its first key");
    let e2 = KeyEvent::sign(h.public(), 2, &k2, &k3.public(), 3);
    assert_eq!(
        book.hear(&e2, 12).unwrap().rotated.len(),
        1,
        "known by the key before"
    );
    // A household whose event #1 brings in a key this node knows (its own event #0 was
    // kept before the flood or not at all: the book checks the event's own keys).
    let new_household = id(1_000_007);
    let to_known = KeyEvent::sign(new_household.public(), 1, &by_key, &next, 10);
    book.hear(&to_known, 13).unwrap();
    assert!(book.known(&to_known), "known by the key it brings in");
    let own = id(1_000_008);
    book.set_own(own.public(), Vec::new());
    book.hear(&first(&own), 14).unwrap();
    assert!(book.known(&first(&own)), "this node's own household");
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
        book.hear(&e, 10).unwrap();
        kept.push(e);
    }
    let h = Identity::from_seed([2; 32]);
    let contest = KeyEvent::sign(h.public(), 0, &h, &h.public(), 11);
    book.hear(&contest, 11).unwrap();
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
/// key its household had rotated away from. When each event was heard survives too: a
/// rotation heard long after the event before it still says so after a restart, and an
/// entry written before heard times were kept counts as heard at the restart.
#[test]
fn what_the_book_heard_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = |i: u8| Identity::from_seed([i; 32]);
    let (a, b, c, d, thief) = (id(1), id(2), id(3), id(8), id(9));
    let next = id(4);
    let b0 = KeyEvent::sign(b.public(), 0, &b, &next.public(), 10);
    let c0 = KeyEvent::sign(c.public(), 0, &c, &next.public(), 10);
    let stolen = |h: &Identity| KeyEvent::sign(h.public(), 0, h, &thief.public(), 11);
    {
        let db = sled::open(dir.path()).unwrap();
        let book = KeyBook::open(&db).unwrap();
        let a0 = KeyEvent::sign(a.public(), 0, &a, &next.public(), 10);
        let a1 = KeyEvent::sign(a.public(), 1, &next, &id(5).public(), 20);
        assert!(book.hear(&a0, 1_000).unwrap().is_empty());
        assert_eq!(
            book.hear(&a1, 9_000).unwrap().rotated,
            vec![Rotation {
                old: a.public(),
                new: next.public(),
                gap_ms: 8_000
            }]
        );
        assert!(book.hear(&b0, 1_000).unwrap().is_empty());
        assert!(!book.hear(&stolen(&b), 1_000).unwrap().contested.is_empty());
        assert!(book.hear(&c0, 1_000).unwrap().is_empty());
        // d's #0 as a node kept it before heard times were kept: the event alone.
        let d0 = KeyEvent::sign(d.public(), 0, &d, &next.public(), 10);
        book.tree.insert(entry(&d0, 0), d0.to_bytes()).unwrap();
        db.flush().unwrap();
    }
    let before = crate::model::now_ms();
    let db = sled::open(dir.path()).unwrap();
    let book = KeyBook::open(&db).unwrap();
    assert_eq!(book.retired(&a.public()), Some(next.public()), "a rotated");
    assert_eq!(book.rotations()[0].gap_ms, 8_000, "heard times kept");
    assert_eq!(book.contested_keys(), vec![b.public()]);
    // b was contested before the restart: its own #1 retires nothing here.
    let b1 = KeyEvent::sign(b.public(), 1, &next, &id(6).public(), 20);
    assert!(book.hear(&b1, 2_000).unwrap().is_empty());
    assert_eq!(book.retired(&b.public()), None, "b is still contested");
    // The thief's #0 for c, heard first after the restart, is second here: with its #1,
    // it does not retire c's key to the thief's.
    let c1 = KeyEvent::sign(c.public(), 1, &thief, &id(7).public(), 20);
    assert!(!book.hear(&stolen(&c), 2_000).unwrap().contested.is_empty());
    assert!(book.hear(&c1, 2_000).unwrap().is_empty());
    assert_eq!(book.retired(&c.public()), None, "c's first #0 still counts");
    // d's old entry counts as heard at the restart, not before.
    let d1 = KeyEvent::sign(d.public(), 1, &next, &id(6).public(), 20);
    let heard = book.hear(&d1, before + 5_000).unwrap();
    assert!(
        heard.rotated[0].gap_ms <= 5_000,
        "{heard:?}: the old entry counted as heard before the restart"
    );
}
