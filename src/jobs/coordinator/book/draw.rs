//! What each household's claims at this coordinator say its radiator drew: one household's
//! claims whose windows overlap must not, together, imply more power than a household circuit
//! delivers ([`MAX_WATTS`]).
//!
//! Each claim is bounded alone (`WorkRecord::check_physics`: at most `MAX_WATTS` over its own
//! window), but a household holds up to 16 leases per job, of several jobs at once. Two
//! colluding households that agree on an output set the shard's reference energy between
//! them (`credit.rs`), so without this check they could each claim `MAX_WATTS` on every shard
//! they run at once: 16 circuits' worth per job. An honest radiator never claims more, in any
//! interval, than it drew ([`crate::heat::energy::Accounting`] caps what it attributes at
//! `MAX_WATTS`): so a claim refused here is one its own signature shows to be false. (One
//! exception: a meter anchors its clock to the wall clock when the node starts, so a clock
//! stepped back across a restart can make the new run's windows overlap the old run's; a
//! radiator drawing more than half a circuit can then have a claim refused, and that shard's
//! replica goes to another household.)
//!
//! The law is the one `receipts verify` checks across a household's export
//! ([`crate::model::conservation::check_conservation`]): for every interval [a, b], the energy of
//! the claims whose windows lie inside it is at most `MAX_WATTS × (b − a)`. Here it is checked
//! for every interval that contains the new claim, over the household's claims that start
//! within [`REACH_MS`] of it (the [`MAX_WEIGHED`] nearest, if more). Within that reach the
//! check is exact: a set of claims accepted one by one obeys the law on every interval it
//! spans (property-tested). Beyond it (intervals reaching further than that from the new
//! claim, a household claiming more than [`MAX_WEIGHED`] shards in that time, or leases
//! configured to live longer than the default 10 minutes) it weighs fewer intervals, so it
//! never refuses what the law allows and still catches claims piled on top of each other,
//! which is where the room to cheat is. Claims are remembered for [`HORIZON_MS`] (at most
//! [`MAX_PER_HOUSEHOLD`] per household, the newest kept; households that stopped claiming are
//! dropped). Cost: O(1) when all the household's remembered claims sum to less than
//! `MAX_WATTS` over the new window alone (trivial shards claimed often), O(n) when the claims
//! weighed do (an honest radiator's usual case), else O(n²), about 65 000 steps at 256.
//! Pure: no clock, no I/O.

use std::collections::{BTreeMap, HashMap};

use crate::identity::PublicKey;
use crate::model::conservation::overdrawn;
use crate::model::receipt::{WorkRecord, MAX_WATTS};

/// Claims that started this long before the household's newest are forgotten, and households
/// without a claim this recent: the reach, plus a lease's life (10 minutes) and the clock skew
/// allowed (a minute), rounded up. Every claim's window lies within its lease, so all
/// households' windows are on the coordinator's clock give or take that skew.
pub const HORIZON_MS: u64 = 1_800_000;

/// The claims weighed with a new one start at most this long before its start or after its
/// end (a lease lives at most 10 minutes, so every claim that overlaps it is in reach).
pub const REACH_MS: u64 = 900_000;

/// Claims remembered per household (its newest): at most about 80 KB each. A radiator running
/// trivial shards claims often; the oldest then drop out first, which only narrows the check.
pub const MAX_PER_HOUSEHOLD: usize = 1_024;

/// Every this many claims recorded, households with no claim within [`HORIZON_MS`] are
/// dropped, so memory follows the households working here now.
const SWEEP_EVERY: u64 = 4_096;

/// Claims weighed with a new one, the nearest by start: one household holds at most 16 leases
/// of a job at once, so this is many jobs' worth of overlap.
pub const MAX_WEIGHED: usize = 256;

/// One accepted claim as the check needs it. Keyed by (start, job, shard): one claim per
/// household per shard.
type Key = (u64, [u8; 32], u32);

/// The claims each household made here recently (derived state: rebuilt from the shards'
/// claims when the book loads).
#[derive(Debug, Default)]
pub struct Draws {
    by_household: HashMap<PublicKey, Household>,
    recorded: u64,
}

/// One household's remembered claims, and the sum of their energy.
#[derive(Debug, Default)]
struct Household {
    claims: BTreeMap<Key, Window>,
    total_mj: u128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    end_ms: u64,
    energy_mj: u64,
}

/// A claim that, with the household's other claims here, implies more than [`MAX_WATTS`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("with this household's other claims here, the claims within {from_ms}..{to_ms} ms come to {energy_mj} mJ, more than {MAX_WATTS} W can deliver in those {} ms", to_ms - from_ms)]
pub struct Overdrawn {
    pub from_ms: u64,
    pub to_ms: u64,
    pub energy_mj: u128,
}

impl Draws {
    /// Whether `rec` (not yet counted) keeps its household within [`MAX_WATTS`] with the
    /// claims remembered. See the module comment for which intervals are weighed.
    pub fn check(&self, rec: &WorkRecord) -> Result<(), Overdrawn> {
        let Some(household) = self.by_household.get(&rec.worker) else {
            return Ok(());
        };
        // Every interval weighed contains the new window and sums at most every claim
        // remembered: when all of them fit in the new window alone, none can break the law
        // (O(1); a radiator claiming trivial shards often, as in the coordinator bench).
        let ceiling = u128::from(MAX_WATTS) * u128::from(rec.end_ms.saturating_sub(rec.start_ms));
        if household.total_mj + u128::from(rec.energy_mj) <= ceiling {
            return Ok(());
        }
        let mine = &household.claims;
        // The nearest claims by start, walking out both ways from the new one's start:
        // O(MAX_WEIGHED · log n), however many the household made in reach.
        let (lowest, highest) = (
            rec.start_ms.saturating_sub(REACH_MS),
            rec.end_ms.saturating_add(REACH_MS),
        );
        let mid: Key = (rec.start_ms, [0; 32], 0);
        let other = |((_, job, shard), _): &(&Key, &Window)| {
            (job, *shard) != (rec.job.as_bytes(), rec.shard)
        };
        let mut before = mine
            .range(..mid)
            .rev()
            .take_while(|((start, _, _), _)| *start >= lowest)
            .filter(other)
            .peekable();
        let mut after = mine
            .range(mid..)
            .take_while(|((start, _, _), _)| *start <= highest)
            .filter(other)
            .peekable();
        let mut windows: Vec<(u64, u64, u64)> = Vec::new();
        while windows.len() < MAX_WEIGHED {
            let distance =
                |e: Option<&(&Key, &Window)>| e.map(|((s, _, _), _)| s.abs_diff(rec.start_ms));
            let next = match (distance(before.peek()), distance(after.peek())) {
                (None, None) => break,
                (Some(b), Some(a)) if a < b => after.next(),
                (Some(_), _) => before.next(),
                (None, Some(_)) => after.next(),
            };
            if let Some(((start, _, _), w)) = next {
                windows.push((*start, w.end_ms, w.energy_mj));
            }
        }
        windows.push((rec.start_ms, rec.end_ms, rec.energy_mj));
        // Every interval weighed contains the new window and sums at most all of them: when
        // that fits in the new window alone, none can break the law (the usual case: an
        // honest radiator's claims sum far below a circuit's power).
        let total: u128 = windows.iter().map(|&(_, _, e)| u128::from(e)).sum();
        if total <= ceiling {
            return Ok(());
        }
        match overdrawn(&mut windows, Some((rec.start_ms, rec.end_ms))) {
            Some((from_ms, to_ms, energy_mj)) => Err(Overdrawn {
                from_ms,
                to_ms,
                energy_mj,
            }),
            None => Ok(()),
        }
    }

    /// Remembers a counted claim, forgetting the household's claims that started more than
    /// [`HORIZON_MS`] before it and the oldest beyond [`MAX_PER_HOUSEHOLD`] (amortised
    /// O(log n): a book loading a 65 536-shard job records every claim it holds), and now and
    /// then the households that stopped claiming.
    pub fn record(&mut self, rec: &WorkRecord) {
        self.recorded = self.recorded.wrapping_add(1);
        if self.recorded.is_multiple_of(SWEEP_EVERY) {
            let cutoff = rec.start_ms.saturating_sub(HORIZON_MS);
            self.by_household.retain(|_, h| {
                h.claims
                    .last_key_value()
                    .is_some_and(|((start, _, _), _)| *start >= cutoff)
            });
        }
        let h = self.by_household.entry(rec.worker).or_default();
        let window = Window {
            end_ms: rec.end_ms,
            energy_mj: rec.energy_mj,
        };
        let key = (rec.start_ms, *rec.job.as_bytes(), rec.shard);
        if let Some(old) = h.claims.insert(key, window) {
            h.total_mj -= u128::from(old.energy_mj);
        }
        h.total_mj += u128::from(rec.energy_mj);
        while let Some(((start, _, _), _)) = h.claims.first_key_value() {
            if start.saturating_add(HORIZON_MS) >= rec.start_ms
                && h.claims.len() <= MAX_PER_HOUSEHOLD
            {
                break;
            }
            if let Some((_, gone)) = h.claims.pop_first() {
                h.total_mj -= u128::from(gone.energy_mj);
            }
        }
    }

    /// Claims remembered, all households.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_household.values().map(|h| h.claims.len()).sum()
    }

    /// Households remembered.
    #[cfg(test)]
    pub fn households(&self) -> usize {
        self.by_household.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::tests::record;

    fn claim(rec: &WorkRecord, shard: u32, start_ms: u64, end_ms: u64, watts: u64) -> WorkRecord {
        WorkRecord {
            shard,
            start_ms,
            end_ms,
            energy_mj: watts * (end_ms - start_ms),
            ..rec.clone()
        }
    }

    #[test]
    fn overlapping_claims_of_one_household_stay_within_one_circuit() {
        let (worker, submitter) = (Identity::generate(), Identity::generate());
        let base = record(&worker, &submitter);
        let mut draws = Draws::default();
        // Two shards at once, half the circuit each: fine.
        let a = claim(&base, 0, 10_000, 20_000, MAX_WATTS / 2);
        draws.check(&a).unwrap();
        draws.record(&a);
        let b = claim(&base, 1, 10_000, 20_000, MAX_WATTS / 2);
        draws.check(&b).unwrap();
        draws.record(&b);
        // A third on top, even a small one inside the same window: more than one circuit.
        let c = claim(&base, 2, 12_000, 13_000, 10);
        let err = draws.check(&c).unwrap_err();
        assert!(err.energy_mj > u128::from(MAX_WATTS) * u128::from(err.to_ms - err.from_ms));
        // Another household is weighed alone.
        let other = WorkRecord {
            worker: Identity::generate().public(),
            ..c.clone()
        };
        draws.check(&other).unwrap();
        // Back to back is not overlap: the circuit can be full in both windows.
        let d = claim(&base, 3, 20_000, 30_000, MAX_WATTS);
        draws.check(&d).unwrap();
        // The same shard claimed again is not counted against itself.
        draws.check(&a).unwrap();
    }

    #[test]
    fn a_claim_spanning_others_counts_what_lies_inside_it() {
        let (worker, submitter) = (Identity::generate(), Identity::generate());
        let base = record(&worker, &submitter);
        let mut draws = Draws::default();
        // Honest shape: a long shard at low power and a short burst inside it; the long one
        // drew its energy outside the burst. Within 0..10 s: 3 680 W × 5 s + 3 680 W × 5 s.
        let long = WorkRecord {
            energy_mj: MAX_WATTS * 5_000,
            ..claim(&base, 0, 0, 10_000, 0)
        };
        draws.check(&long).unwrap();
        draws.record(&long);
        let burst = claim(&base, 1, 5_000, 10_000, MAX_WATTS);
        draws.check(&burst).unwrap();
        draws.record(&burst);
        // One millijoule more anywhere inside 0..10 s is too much.
        let more = WorkRecord {
            energy_mj: 1,
            ..claim(&base, 2, 0, 10_000, 0)
        };
        assert!(draws.check(&more).is_err());
    }

    #[test]
    fn with_many_claims_in_reach_the_nearest_are_weighed() {
        let (worker, submitter) = (Identity::generate(), Identity::generate());
        let base = record(&worker, &submitter);
        let mut draws = Draws::default();
        let t = 2 * REACH_MS;
        // Many small claims before and after, then one at the full circuit over [t, t + 1 s].
        for i in 0..(2 * MAX_WEIGHED as u64) {
            let before = t - 1_000 - i * 100;
            let after = t + 2_000 + i * 100;
            draws.record(&claim(&base, 10 + 2 * i as u32, before - 10, before, 1));
            draws.record(&claim(&base, 11 + 2 * i as u32, after, after + 10, 1));
        }
        let full = claim(&base, 0, t, t + 1_000, MAX_WATTS);
        draws.check(&full).unwrap();
        draws.record(&full);
        // Anything more inside it is refused, however many claims lie farther away.
        assert!(draws.check(&claim(&base, 1, t + 100, t + 200, 1)).is_err());
    }

    #[test]
    fn old_claims_are_forgotten_and_the_count_is_bounded() {
        let (worker, submitter) = (Identity::generate(), Identity::generate());
        let base = record(&worker, &submitter);
        let mut draws = Draws::default();
        let old = claim(&base, 0, 0, 1_000, MAX_WATTS);
        draws.record(&old);
        let later = claim(&base, 1, HORIZON_MS + 1, HORIZON_MS + 3_000, 1);
        draws.record(&later);
        assert_eq!(draws.len(), 1);
        for shard in 0..(MAX_PER_HOUSEHOLD as u32 + 10) {
            let at = HORIZON_MS + 10_000 + u64::from(shard) * 10;
            draws.record(&claim(&base, shard + 2, at, at + 5, 1));
        }
        assert_eq!(draws.len(), MAX_PER_HOUSEHOLD);
        // A household that stopped claiming is dropped once others have claimed on.
        let later_on = HORIZON_MS * 3;
        let busy = record(&Identity::generate(), &submitter);
        for shard in 0..SWEEP_EVERY as u32 {
            let at = later_on + u64::from(shard);
            draws.record(&claim(&busy, shard, at, at + 1, 1));
        }
        assert_eq!(draws.households(), 1);
    }

    proptest::proptest! {
        /// Claims cut from one metered timeline (each window gets at most what was drawn in
        /// it, the timeline never above MAX_WATTS) are never refused, whatever their overlaps;
        /// and whatever is accepted one by one, greedy claims included, obeys the law on every
        /// interval (`check_conservation`: the whole set is within reach here).
        #[test]
        fn honest_claims_pass_and_accepted_ones_conserve(
            power in proptest::collection::vec(0u64..=MAX_WATTS, 1..40),
            shards in proptest::collection::vec((0usize..40, 1usize..10, 1u64..=100), 1..30),
            greedy in proptest::collection::vec((0usize..40, 1usize..10), 0..10),
        ) {
            let (worker, submitter) = (Identity::generate(), Identity::generate());
            let base = record(&worker, &submitter);
            // A timeline of 100 ms steps at the given power (W); shards split each step's
            // energy equally among those running in it.
            let steps = power.len();
            let windows: Vec<(usize, usize)> = shards
                .iter()
                .map(|&(s, len, _)| (s.min(steps - 1), (s + len).min(steps)))
                .filter(|(s, e)| s < e)
                .collect();
            let mut energy = vec![0u64; windows.len()];
            for (t, p) in power.iter().enumerate() {
                let running: Vec<usize> =
                    (0..windows.len()).filter(|&i| windows[i].0 <= t && t < windows[i].1).collect();
                for &i in &running {
                    energy[i] += p * 100 / running.len() as u64;
                }
            }
            let mut draws = Draws::default();
            let mut accepted = Vec::new();
            for (i, &(s, e)) in windows.iter().enumerate() {
                let rec = WorkRecord {
                    shard: i as u32,
                    start_ms: s as u64 * 100,
                    end_ms: e as u64 * 100,
                    energy_mj: energy[i],
                    ..base.clone()
                };
                proptest::prop_assert!(draws.check(&rec).is_ok(), "an honest claim was refused");
                draws.record(&rec);
                accepted.push(rec);
            }
            // Greedy claims at the full circuit: whatever gets in leaves the set conserving.
            for (j, &(s, len)) in greedy.iter().enumerate() {
                let (s, e) = (s.min(steps - 1), (s + len).min(steps).max(s.min(steps - 1) + 1));
                let rec = claim(&base, 1_000 + j as u32, s as u64 * 100, e as u64 * 100, MAX_WATTS);
                if draws.check(&rec).is_ok() {
                    draws.record(&rec);
                    accepted.push(rec);
                }
            }
            let receipts: Vec<_> = accepted
                .iter()
                .map(|r| crate::model::receipt::tests::receipt_of(r.clone(), &worker, &submitter))
                .collect();
            proptest::prop_assert!(crate::model::conservation::check_conservation(&receipts).is_ok());
        }
    }
}
