//! Heat priority: what a coordinator heard of radiators' wish for heat, so the coldest rooms
//! are served first when replicas are scarce and a waiting shard can say why. Memory only
//! (demand is gossiped again every 10 s), with time passed in. Must not touch: I/O, clocks.

use std::collections::HashMap;

use crate::identity::PublicKey;

/// Most households whose heat demand a coordinator remembers.
const MAX_DEMANDS: usize = 4096;
/// A lease request this recent counts as "still asking" when shards are scarce.
const ASKING_WINDOW_MS: u64 = 1_000;
/// Heat gossip older than this is forgotten.
const DEMAND_FRESH_MS: u64 = 90_000;

/// What a coordinator knows about a radiator's wish for heat.
#[derive(Clone, Copy, Debug)]
struct Demand {
    permille: u16,
    seen_ms: u64,
    asked_ms: Option<u64>,
}

/// Heat demand seen by a coordinator, for explaining why shards wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct Warmth {
    pub known: usize,
    pub warm: usize,
}

/// Radiators' heat demand, bounded to `MAX_DEMANDS` households.
#[derive(Default)]
pub struct Demands {
    seen: HashMap<PublicKey, Demand>,
}

impl Demands {
    /// Records a radiator's heat demand (from gossip, or carried in a lease request).
    /// Memory only: heat demand is renewed every few seconds and needs no disk.
    pub fn note(&mut self, household: PublicKey, permille: u16, asked: bool, now_ms: u64) {
        if self.seen.len() >= MAX_DEMANDS && !self.seen.contains_key(&household) {
            self.seen
                .retain(|_, d| now_ms.saturating_sub(d.seen_ms) < DEMAND_FRESH_MS);
            if self.seen.len() >= MAX_DEMANDS {
                return;
            }
        }
        let d = self.seen.entry(household).or_insert(Demand {
            permille,
            seen_ms: now_ms,
            asked_ms: None,
        });
        d.permille = permille.min(1000);
        d.seen_ms = now_ms;
        if asked {
            d.asked_ms = Some(now_ms);
        }
    }

    /// Households asking for work right now whose rooms want more heat than `permille`,
    /// among those `eligible` says could take a lease.
    pub fn colder_askers(
        &self,
        household: &PublicKey,
        permille: u16,
        now_ms: u64,
        eligible: &dyn Fn(&PublicKey) -> bool,
    ) -> usize {
        self.seen
            .iter()
            .filter(|(h, d)| {
                *h != household && d.permille > permille && self.asking(d, now_ms) && eligible(h)
            })
            .count()
    }

    /// Households asking for work right now whose rooms want heat, among the `eligible`.
    pub fn heat_askers(&self, now_ms: u64, eligible: &dyn Fn(&PublicKey) -> bool) -> usize {
        self.seen
            .iter()
            .filter(|(h, d)| d.permille > 0 && self.asking(d, now_ms) && eligible(h))
            .count()
    }

    /// Whether any household `eligible` says counts told us its demand recently.
    pub fn any_known(&self, now_ms: u64, eligible: &dyn Fn(&PublicKey) -> bool) -> bool {
        self.seen
            .iter()
            .any(|(h, d)| now_ms.saturating_sub(d.seen_ms) < DEMAND_FRESH_MS && eligible(h))
    }

    fn asking(&self, d: &Demand, now_ms: u64) -> bool {
        d.asked_ms
            .is_some_and(|a| now_ms.saturating_sub(a) < ASKING_WINDOW_MS)
    }

    /// How many radiators recently told us their heat demand, and how many of them want none.
    pub fn warmth(&self, now_ms: u64) -> Warmth {
        let fresh: Vec<&Demand> = self
            .seen
            .values()
            .filter(|d| now_ms.saturating_sub(d.seen_ms) < DEMAND_FRESH_MS)
            .collect();
        Warmth {
            known: fresh.len(),
            warm: fresh.iter().filter(|d| d.permille == 0).count(),
        }
    }
}
