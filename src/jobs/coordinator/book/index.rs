//! Which shards of a job a decision has to look at, kept beside the job so that a lease, a
//! claim's follow-up and a round cost O(shards in flight), not O(shards): a 65 536-shard job
//! scanned every shard for every lease, and checked every shard for "all verified" after each
//! verified one (issue 13). Derived from the shards alone; rebuilt when a job is loaded and
//! changed with every shard [`super::Book::apply`] writes. Must not touch: I/O, clocks.

use std::collections::BTreeSet;

use super::shard::{JobBook, Room, ShardBook};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardIndex {
    /// Shards neither verified nor failed, in order: the only ones a lease can go to.
    pub open: BTreeSet<u32>,
    /// Shards with lease records, live or expired (expired ones leave when the shard is next
    /// written). Every live lease is on one of these.
    pub leased: BTreeSet<u32>,
    /// Open shards holding claims: the only ones a vote may have decided.
    pub claimed: BTreeSet<u32>,
    /// Verified shards with claims not yet settled.
    pub unsettled: BTreeSet<u32>,
    /// Shards verified.
    pub verified: usize,
}

impl ShardIndex {
    /// The index of a job's shards, computed from scratch.
    pub fn of(job: &JobBook) -> ShardIndex {
        let mut index = ShardIndex::default();
        for (i, s) in job.shards.iter().enumerate() {
            index.set(i as u32, None, s);
        }
        index
    }

    /// Shard `i` changed from `before` (`None`: not indexed yet) to `after`.
    pub fn set(&mut self, i: u32, before: Option<&ShardBook>, after: &ShardBook) {
        let put = |set: &mut BTreeSet<u32>, member: bool| {
            if member {
                set.insert(i);
            } else {
                set.remove(&i);
            }
        };
        put(&mut self.open, after.is_open());
        put(&mut self.leased, !after.leases.is_empty());
        put(
            &mut self.claimed,
            after.is_open() && !after.claims.is_empty(),
        );
        put(
            &mut self.unsettled,
            after.verified.is_some() && after.settled.len() < after.claims.len(),
        );
        let was = before.is_some_and(|b| b.verified.is_some());
        match (was, after.verified.is_some()) {
            (false, true) => self.verified += 1,
            (true, false) => self.verified = self.verified.saturating_sub(1),
            _ => {}
        }
    }
}

/// One lease request's walk over a job's open shards, in order, each judged once however
/// many of the request's questions look at it (free replicas for the colder radiators, for
/// the heat target, then the shard to lease): a lease judged every shard in flight three
/// times, 5 % of the coordinator bench's CPU on the actor. Extended only as far as asked.
pub struct Rooms<'a, F> {
    order: std::collections::btree_set::Iter<'a, u32>,
    shards: &'a [ShardBook],
    judge: F,
    seen: Vec<(u32, &'a ShardBook, Room)>,
}

impl<'a, F: Fn(u32, &ShardBook) -> Room> Rooms<'a, F> {
    /// The open shards of `index` over `shards`, each judged by `judge` when first reached.
    pub fn new(index: &'a ShardIndex, shards: &'a [ShardBook], judge: F) -> Self {
        Rooms {
            order: index.open.iter(),
            shards,
            judge,
            seen: Vec::new(),
        }
    }

    /// The `k`-th open shard (its index, state and room), if there are that many.
    pub fn at(&mut self, k: usize) -> Option<(u32, &'a ShardBook, Room)> {
        while self.seen.len() <= k {
            let i = *self.order.next()?;
            let shards: &'a [ShardBook] = self.shards;
            if let Some(s) = shards.get(i as usize) {
                let room = (self.judge)(i, s);
                self.seen.push((i, s, room));
            }
        }
        self.seen.get(k).copied()
    }

    /// Free replicas of the open shards (floor 0), counted only until past `limit`: past the
    /// number of askers a comparison needs, the answer no longer changes.
    pub fn free_up_to(&mut self, limit: usize) -> usize {
        let mut free = 0;
        let mut k = 0;
        while free <= limit {
            let Some((_, _, room)) = self.at(k) else {
                break;
            };
            free += room.free(0);
            k += 1;
        }
        free
    }
}
