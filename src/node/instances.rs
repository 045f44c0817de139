//! One key, one sealing node: the lease a bootstrap node keeps per key (`docs/protocol.md`
//! §6.2, `Request::Instance`).
//!
//! A copied data directory (a cloned disk, an image flashed after `hearth init`) makes two
//! nodes with one key. Both seal receipt commitments, numbered from the same ledger, so within
//! seconds they sign one number twice and every auditor refuses the key for good
//! (`node::refusals`). The running check of `node::auditors` only sees that after a commitment
//! of the other was logged. So each node picks a random *instance id* when it starts and tells
//! its bootstrap nodes, and each bootstrap node lends the key to one instance at a time: the
//! first to ask while no other instance of that key was heard within the lease
//! ([`INSTANCE_LEASE`]). The holder keeps it by asking again (every `NUMBERING_CHECK`, well
//! inside the lease); another instance asking meanwhile is told who holds it and for how long
//! it has not been heard, and is remembered as the *contender*, whom the holder is told of at
//! its next ask. A node that stops cleanly gives its lease back, so a restart does not wait;
//! after a power cut the new instance waits until the old one's lease ran out.
//!
//! A bootstrap node keeps who holds each key on disk ([`Desk`], tree `instance_leases`) and,
//! when it starts, counts every holder as heard at that moment ([`Leases::restore`]): a
//! restart (an upgrade) neither forgets a holder, which would let the instance that waits for
//! it take the key while it still seals, nor lets a lease run out while the bootstrap node
//! was down and the holder could not ask.
//!
//! Pure: the caller says what time it is, and stores the [`Change`]s it is handed. Bounded by
//! [`MAX_LEASES`] keys.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::model::wire::{InstanceLease, Response};

/// A node's run: 16 random bytes chosen at each start, never stored (a copy of the data
/// directory must not carry it).
pub type InstanceId = [u8; 16];

/// How long a bootstrap node holds a key for an instance it has not heard from. Five minutes:
/// a holder asks every `NUMBERING_CHECK` (two minutes), so one lost ask does not cost it the
/// lease; a node restarted after a power cut (no lease given back) waits at most this long
/// before it seals.
pub const INSTANCE_LEASE: Duration = Duration::from_secs(300);

/// Keys a bootstrap node keeps leases for (about 100 bytes each). Any peer can make keys, so
/// the book is bounded: when it is full, leases that ran out go first, then the one heard
/// from longest ago. A flood of fresh keys faster than this many per lease can so push out a
/// real holder, and then only the running check of `node::auditors` guards its key.
pub const MAX_LEASES: usize = 65_536;

/// What a bootstrap node tells an instance that asks for its key's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The asker holds the lease (again). `contender`: another instance of the key asked
    /// within the lease, and how long ago.
    Granted {
        contender: Option<(InstanceId, Duration)>,
    },
    /// Another instance holds it, last heard `ago`.
    HeldBy { id: InstanceId, ago: Duration },
}

/// A change to who holds a key, for the caller to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Held(PeerId, InstanceId),
    Freed(PeerId),
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    holder: InstanceId,
    heard: Instant,
    contender: Option<(InstanceId, Instant)>,
}

/// Every key's lease, on a bootstrap node.
#[derive(Debug)]
pub struct Leases {
    lease: Duration,
    max: usize,
    by_key: HashMap<PeerId, Lease>,
    /// The same leases by when their holder was last heard: what goes first when full.
    by_heard: BTreeSet<(Instant, PeerId)>,
    /// Changes of holder not yet taken by the caller ([`Leases::take_changes`]).
    changes: Vec<Change>,
}

impl Leases {
    pub fn new(lease: Duration, max: usize) -> Leases {
        Leases {
            lease,
            max: max.max(1),
            by_key: HashMap::new(),
            by_heard: BTreeSet::new(),
            changes: Vec::new(),
        }
    }

    /// The holders a bootstrap node kept from its last run, each counted as heard `now` (at
    /// most `max` of them; no change to store).
    pub fn restore(&mut self, held: impl IntoIterator<Item = (PeerId, InstanceId)>, now: Instant) {
        for (key, holder) in held.into_iter().take(self.max) {
            if let Some(old) = self.by_key.insert(
                key,
                Lease {
                    holder,
                    heard: now,
                    contender: None,
                },
            ) {
                self.by_heard.remove(&(old.heard, key));
            }
            self.by_heard.insert((now, key));
        }
    }

    /// The changes of holder since the last call, oldest first, for the caller to store.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Instance `id` of `key` asks at `now` (the key is the asking connection's peer id, so no
    /// one asks for another's key).
    pub fn ask(&mut self, key: PeerId, id: InstanceId, now: Instant) -> Verdict {
        let live = |at: Instant| now.saturating_duration_since(at) < self.lease;
        if let Some(l) = self.by_key.get_mut(&key) {
            if l.holder != id && live(l.heard) {
                l.contender = Some((id, now));
                return Verdict::HeldBy {
                    id: l.holder,
                    ago: now.saturating_duration_since(l.heard),
                };
            }
        }
        let previous = self.by_key.get(&key).copied();
        let contender = previous
            .filter(|l| l.holder == id)
            .and_then(|l| l.contender)
            .filter(|(other, at)| *other != id && live(*at));
        if let Some(l) = previous {
            self.by_heard.remove(&(l.heard, key));
        } else {
            self.make_room(now);
        }
        if previous.is_none_or(|l| l.holder != id) {
            self.changes.push(Change::Held(key, id));
        }
        self.by_key.insert(
            key,
            Lease {
                holder: id,
                heard: now,
                contender,
            },
        );
        self.by_heard.insert((now, key));
        Verdict::Granted {
            contender: contender.map(|(other, at)| (other, now.saturating_duration_since(at))),
        }
    }

    /// Instance `id` of `key` stopped and gives its lease back (if it holds it).
    pub fn leave(&mut self, key: PeerId, id: InstanceId) {
        if self.by_key.get(&key).is_some_and(|l| l.holder == id) {
            if let Some(l) = self.by_key.remove(&key) {
                self.by_heard.remove(&(l.heard, key));
                self.changes.push(Change::Freed(key));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Before a new key is taken in: at most `max - 1` leases stay, the ones heard from
    /// longest ago go first (every lease that ran out is among them).
    fn make_room(&mut self, now: Instant) {
        while let Some(&(heard, key)) = self.by_heard.first() {
            let expired = now.saturating_duration_since(heard) >= self.lease;
            if !expired && self.by_key.len() < self.max {
                break;
            }
            self.by_heard.pop_first();
            self.by_key.remove(&key);
            self.changes.push(Change::Freed(key));
        }
    }
}

/// The sled tree in which a bootstrap node keeps which instance holds each key (PeerId bytes
/// → 16-byte instance id), read back at its start (`node::instances`).
pub const LEASES_TREE: &str = "instance_leases";

/// A bootstrap node's lease book and where it keeps the holders: what answers
/// `Request::Instance`.
#[derive(Debug)]
pub struct Desk {
    leases: Mutex<Leases>,
    tree: Option<sled::Tree>,
}

impl Desk {
    /// The lease book as the last run left it in `tree` (none: a node that keeps no leases on
    /// disk), every holder heard now; entries that do not decode are dropped.
    pub fn open(tree: Option<sled::Tree>, lease: Duration) -> Desk {
        let mut leases = Leases::new(lease, MAX_LEASES);
        let mut held = Vec::new();
        for entry in tree.iter().flat_map(|t| t.iter()) {
            match entry {
                Ok((key, id)) => match (PeerId::from_bytes(&key), InstanceId::try_from(&id[..])) {
                    (Ok(key), Ok(id)) => held.push((key, id)),
                    _ => {
                        tracing::warn!("dropped a stored lease that does not decode");
                        if let Some(Err(e)) = tree.as_ref().map(|t| t.remove(key)) {
                            tracing::error!("could not drop a stored lease: {e}");
                        }
                    }
                },
                Err(e) => {
                    tracing::error!("could not read the stored key leases: {e}; starting without");
                    break;
                }
            }
        }
        leases.restore(held, Instant::now());
        Desk {
            leases: Mutex::new(leases),
            tree,
        }
    }

    /// Instance `id` of `peer`'s key asks for the key's lease at `now`, or gives it back
    /// (`leaving`).
    pub fn answer(&self, peer: PeerId, id: InstanceId, leaving: bool, now: Instant) -> Response {
        let Ok(mut leases) = self.leases.lock() else {
            return Response::Error {
                detail: "the lease book is unavailable".into(),
            };
        };
        if leaving {
            leases.leave(peer, id);
            self.keep(leases.take_changes());
            return Response::Noted;
        }
        // Seconds since a holder or contender was heard: at most a lease, far below u32.
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let verdict = leases.ask(peer, id, now);
        self.keep(leases.take_changes());
        Response::Instance(match verdict {
            Verdict::Granted { contender } => InstanceLease::Granted {
                contender: contender.map(|(other, ago)| (other, secs(ago))),
            },
            Verdict::HeldBy { id, ago } => InstanceLease::HeldBy {
                id,
                ago_s: secs(ago),
            },
        })
    }

    /// Stores who holds which key now. Not flushed here (sled writes it out within its flush
    /// interval): a holder lost to a crash asks again within a `NUMBERING_CHECK`, and only
    /// another instance asking first in that window could take the key.
    fn keep(&self, changes: Vec<Change>) {
        let Some(tree) = &self.tree else {
            return;
        };
        for change in changes {
            let written = match change {
                Change::Held(key, id) => tree.insert(key.to_bytes(), &id[..]).map(drop),
                Change::Freed(key) => tree.remove(key.to_bytes()).map(drop),
            };
            if let Err(e) = written {
                tracing::error!("could not keep a key's lease holder: {e}");
            }
        }
    }

    /// Keys lent to an instance now (`/metrics`).
    pub fn len(&self) -> usize {
        self.leases.lock().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: InstanceId = [1; 16];
    const B: InstanceId = [2; 16];
    const C: InstanceId = [3; 16];

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// The first instance to ask holds the key; another is told who holds it while the
    /// holder keeps asking, and the holder hears of it; once the holder was not heard for a
    /// lease, the other gets it, and the old holder is then told so.
    #[test]
    fn one_instance_holds_a_key_until_it_goes_quiet_for_a_lease() {
        let t0 = Instant::now();
        let key = PeerId::random();
        let mut l = Leases::new(s(300), 16);
        assert_eq!(l.ask(key, A, t0), Verdict::Granted { contender: None });
        assert_eq!(
            l.ask(key, B, t0 + s(10)),
            Verdict::HeldBy { id: A, ago: s(10) }
        );
        assert_eq!(
            l.ask(key, A, t0 + s(120)),
            Verdict::Granted {
                contender: Some((B, s(110)))
            }
        );
        assert_eq!(
            l.ask(key, B, t0 + s(400)),
            Verdict::HeldBy { id: A, ago: s(280) },
            "heard 280 s ago: still within the lease"
        );
        assert_eq!(
            l.ask(key, B, t0 + s(420)),
            Verdict::Granted { contender: None },
            "A was last heard 300 s ago"
        );
        assert_eq!(
            l.ask(key, A, t0 + s(421)),
            Verdict::HeldBy { id: B, ago: s(1) }
        );
        // Another key is another lease.
        assert_eq!(
            l.ask(PeerId::random(), A, t0 + s(421)),
            Verdict::Granted { contender: None }
        );
    }

    /// A contender is forgotten once it has not asked for a lease, and a holder is never its
    /// own contender.
    #[test]
    fn a_contender_is_told_of_only_while_it_keeps_asking() {
        let t0 = Instant::now();
        let key = PeerId::random();
        let mut l = Leases::new(s(300), 16);
        l.ask(key, A, t0);
        l.ask(key, B, t0 + s(1));
        l.ask(key, C, t0 + s(2));
        assert_eq!(
            l.ask(key, A, t0 + s(100)),
            Verdict::Granted {
                contender: Some((C, s(98)))
            },
            "the latest contender"
        );
        assert_eq!(
            l.ask(key, A, t0 + s(302)),
            Verdict::Granted { contender: None }
        );
    }

    /// A holder that gives its lease back lets the next instance in at once; another instance
    /// cannot give it back for the holder.
    #[test]
    fn a_lease_given_back_is_free_at_once() {
        let t0 = Instant::now();
        let key = PeerId::random();
        let mut l = Leases::new(s(300), 16);
        l.ask(key, A, t0);
        l.leave(key, B);
        assert!(matches!(l.ask(key, B, t0 + s(1)), Verdict::HeldBy { .. }));
        l.leave(key, A);
        assert!(l.is_empty());
        assert_eq!(
            l.ask(key, B, t0 + s(2)),
            Verdict::Granted { contender: None }
        );
    }

    /// What the caller stores: a new holder, not a renewal; a lease given back or pushed out.
    /// What it restores counts as heard at the restart, so the holder keeps the key for a
    /// whole lease after it, and an instance that waited is still told to wait.
    #[test]
    fn changes_of_holder_are_handed_out_and_a_restored_holder_is_heard_at_the_restart() {
        let t0 = Instant::now();
        let (k1, k2) = (PeerId::random(), PeerId::random());
        let mut l = Leases::new(s(300), 1);
        l.ask(k1, A, t0);
        l.ask(k1, A, t0 + s(1));
        l.ask(k1, B, t0 + s(2));
        assert_eq!(l.take_changes(), vec![Change::Held(k1, A)]);
        l.ask(k2, A, t0 + s(3));
        assert_eq!(
            l.take_changes(),
            vec![Change::Freed(k1), Change::Held(k2, A)],
            "full: k1 pushed out"
        );
        l.leave(k2, A);
        assert_eq!(l.take_changes(), vec![Change::Freed(k2)]);
        assert!(l.take_changes().is_empty());

        // The bootstrap node restarts 290 s after A was last heard, then B asks.
        let restart = t0 + s(290);
        let mut l = Leases::new(s(300), 1);
        l.restore([(k1, A), (k2, A)], restart);
        assert_eq!(l.len(), 1, "at most max restored");
        assert!(l.take_changes().is_empty());
        assert_eq!(
            l.ask(k1, B, restart + s(100)),
            Verdict::HeldBy { id: A, ago: s(100) }
        );
        assert_eq!(
            l.ask(k1, A, restart + s(120)),
            Verdict::Granted {
                contender: Some((B, s(20)))
            }
        );
    }

    /// The book holds at most `max` keys: leases that ran out go first, then the one heard
    /// from longest ago; a key already held is refreshed without pushing anyone out.
    #[test]
    fn the_book_is_bounded_and_pushes_out_the_quietest_lease() {
        let t0 = Instant::now();
        let keys: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let mut l = Leases::new(s(300), 3);
        for (i, k) in keys[..3].iter().enumerate() {
            l.ask(*k, A, t0 + s(i as u64));
        }
        l.ask(keys[0], A, t0 + s(10));
        assert_eq!(l.len(), 3);
        l.ask(keys[3], A, t0 + s(11));
        assert_eq!(l.len(), 3);
        assert!(
            matches!(l.ask(keys[1], B, t0 + s(12)), Verdict::Granted { .. }),
            "keys[1], heard longest ago, was pushed out"
        );
        // keys[1] is back (pushing out keys[2]); past the lease everything else ran out.
        l.ask(keys[4], A, t0 + s(400));
        assert_eq!(l.len(), 1);
        assert_eq!(l.by_heard.len(), l.by_key.len());
    }
}
