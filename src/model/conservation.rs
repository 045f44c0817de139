//! Conservation across one household's receipts (`docs/receipts.md`, "Verifying an export",
//! step 4): inside every interval from one receipt's start to another's end, its receipts
//! claim at most what one circuit delivers ([`MAX_WATTS`]). Checked by `hearth receipts
//! verify` on exports and by the coordinator on each claim against the household's others
//! (`jobs/coordinator/book/draw.rs`). Pure.

use super::receipt::{Receipt, MAX_WATTS};
use crate::identity::PublicKey;

/// A household's receipts that together imply more power than [`MAX_WATTS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("household {household}: receipts within {from_ms}..{to_ms} ms claim {energy_mj} mJ, more than {MAX_WATTS} W can deliver in those {} ms", to_ms - from_ms)]
pub struct ConservationError {
    pub household: PublicKey,
    pub from_ms: u64,
    pub to_ms: u64,
    pub energy_mj: u128,
}

/// Conservation across receipts: for every household and every interval [a, b], the energy
/// claimed by its receipts whose windows lie inside [a, b] is at most `MAX_WATTS × (b − a)`.
/// One radiator cannot draw more than one circuit delivers, however its work is split into
/// shards. Only intervals from some receipt's start to some receipt's end can be tight, so
/// those are the ones checked ([`overdrawn`]: O(n log n) per household).
pub fn check_conservation(receipts: &[Receipt]) -> Result<(), ConservationError> {
    check_conservation_by(receipts, &|key| *key)
}

/// [`check_conservation`] with each worker key counted under its household
/// (`model::rotate::KeyChains::household_of`): a household that rotated its key draws from one
/// circuit under all of its keys.
pub fn check_conservation_by(
    receipts: &[Receipt],
    household_of: &dyn Fn(&PublicKey) -> PublicKey,
) -> Result<(), ConservationError> {
    let mut by_household: std::collections::BTreeMap<PublicKey, Vec<(u64, u64, u64)>> =
        Default::default();
    for r in receipts {
        let rec = &r.record;
        by_household
            .entry(household_of(&rec.worker))
            .or_default()
            .push((rec.start_ms, rec.end_ms, rec.energy_mj));
    }
    for (household, mut windows) in by_household {
        if let Some((from_ms, to_ms, energy_mj)) = overdrawn(&mut windows, None) {
            return Err(ConservationError {
                household,
                from_ms,
                to_ms,
                energy_mj,
            });
        }
    }
    Ok(())
}

/// The law of [`check_conservation`] over one household's `(start_ms, end_ms, energy_mj)`
/// windows (reordered): the interval `(from, to, energy)` that breaks it with the earliest
/// `from`, and for that `from` the earliest `to` (`energy`: what the windows inside it
/// claim), among the intervals from a window's start to a window's end, or only those
/// containing `within` (a window of the set: the coordinator weighing a new claim against the
/// ones it holds, which were weighed before it).
///
/// O(n log n), so that a year of one household's receipts (hundreds of thousands) is checked
/// in seconds: until 2026-12-04 every start was paired with every end, O(n²), which took
/// hours for such an export in `hearth receipts verify` (`benches/conservation.rs` prints
/// both). The sweep: `from` runs over the starts from the latest down; a window joins when
/// `from` reaches its start, adding its energy to `S(b)` for every end `b` at or after its
/// own; a segment tree over the distinct ends holds `S(b) − MAX_WATTS × b`, and the
/// interval `[from, b]` breaks the law exactly when that exceeds `−MAX_WATTS × from`.
pub(crate) fn overdrawn(
    windows: &mut [(u64, u64, u64)],
    within: Option<(u64, u64)>,
) -> Option<(u64, u64, u128)> {
    let (latest_from, earliest_to) = within.unwrap_or((u64::MAX, 0));
    let watts = i128::from(MAX_WATTS);
    let mut ends: Vec<u64> = windows.iter().map(|&(_, end, _)| end).collect();
    ends.sort_unstable();
    ends.dedup();
    // Windows by start, latest first: each joins the sweep once.
    windows.sort_unstable_by_key(|&(start, _, _)| std::cmp::Reverse(start));
    let mut tree = MaxTree::new(ends.iter().map(|&b| -watts * i128::from(b)).collect());
    let mut found = None;
    let mut i = 0;
    while i < windows.len() {
        let from = windows[i].0;
        while i < windows.len() && windows[i].0 == from {
            let (_, end, energy) = windows[i];
            tree.add_from(ends.partition_point(|&b| b < end), i128::from(energy));
            i += 1;
        }
        if from > latest_from {
            continue;
        }
        let lo = ends.partition_point(|&b| b < from.max(earliest_to));
        if let Some(at) = tree.first_above(lo, -watts * i128::from(from)) {
            let to = ends[at];
            // S(to) = the node's value + MAX_WATTS × to; never negative.
            let energy = tree.value(at) + watts * i128::from(to);
            found = Some((from, to, energy as u128));
        }
    }
    found
}

/// A max segment tree with range additions over `[i, n)` (lazy), for [`overdrawn`].
struct MaxTree {
    n: usize,
    max: Vec<i128>,
    add: Vec<i128>,
}

impl MaxTree {
    fn new(values: Vec<i128>) -> MaxTree {
        let n = values.len().max(1);
        let mut t = MaxTree {
            n,
            max: vec![i128::MIN / 4; 4 * n],
            add: vec![0; 4 * n],
        };
        if !values.is_empty() {
            t.build(1, 0, n - 1, &values);
        }
        t
    }

    fn build(&mut self, node: usize, l: usize, r: usize, values: &[i128]) {
        if l == r {
            self.max[node] = values[l];
            return;
        }
        let m = (l + r) / 2;
        self.build(2 * node, l, m, values);
        self.build(2 * node + 1, m + 1, r, values);
        self.max[node] = self.max[2 * node].max(self.max[2 * node + 1]);
    }

    /// Adds `v` to every position from `from` on.
    fn add_from(&mut self, from: usize, v: i128) {
        if from < self.n {
            self.range_add(1, 0, self.n - 1, from, v);
        }
    }

    fn range_add(&mut self, node: usize, l: usize, r: usize, from: usize, v: i128) {
        if r < from {
            return;
        }
        if from <= l {
            self.max[node] += v;
            self.add[node] += v;
            return;
        }
        let m = (l + r) / 2;
        self.range_add(2 * node, l, m, from, v);
        self.range_add(2 * node + 1, m + 1, r, from, v);
        self.max[node] = self.max[2 * node].max(self.max[2 * node + 1]) + self.add[node];
    }

    /// The first position at or after `from` whose value exceeds `t`.
    fn first_above(&self, from: usize, t: i128) -> Option<usize> {
        if from >= self.n {
            return None;
        }
        self.first(1, 0, self.n - 1, from, t, 0)
    }

    /// `above`: the additions of the nodes above this one, not yet in its values.
    fn first(
        &self,
        node: usize,
        l: usize,
        r: usize,
        from: usize,
        t: i128,
        above: i128,
    ) -> Option<usize> {
        if r < from || self.max[node] + above <= t {
            return None;
        }
        if l == r {
            return Some(l);
        }
        let m = (l + r) / 2;
        let above = above + self.add[node];
        self.first(2 * node, l, m, from, t, above)
            .or_else(|| self.first(2 * node + 1, m + 1, r, from, t, above))
    }

    /// The value at position `i`.
    fn value(&self, i: usize) -> i128 {
        let (mut node, mut l, mut r, mut sum) = (1, 0, self.n - 1, 0);
        while l < r {
            sum += self.add[node];
            let m = (l + r) / 2;
            if i <= m {
                node *= 2;
                r = m;
            } else {
                node = 2 * node + 1;
                l = m + 1;
            }
        }
        sum + self.max[node]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::model::receipt::tests::{receipt_of, record};
    use crate::model::receipt::WorkRecord;

    #[test]
    fn overlapping_receipts_of_one_household_obey_conservation() {
        let (w, other, s) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let at = |who: &Identity, shard: u32, start: u64, end: u64, energy: u64| {
            let rec = WorkRecord {
                shard,
                start_ms: start,
                end_ms: end,
                energy_mj: energy,
                ..record(who, &s)
            };
            receipt_of(rec, who, &s)
        };
        // Two shards at 2 000 W each over the same second: each alone is possible, together
        // they draw 4 000 W from one circuit.
        let a = at(&w, 0, 1_000, 2_000, 2_000_000);
        let b = at(&w, 1, 1_000, 2_000, 2_000_000);
        assert!(a.verify().is_ok() && b.verify().is_ok());
        let err = check_conservation(&[a.clone(), b.clone()]).unwrap_err();
        assert_eq!(err.household, w.public());
        assert_eq!((err.from_ms, err.to_ms), (1_000, 2_000));
        // Back to back, or on two households, they are fine.
        let c = at(&w, 1, 2_000, 3_000, 2_000_000);
        let d = at(&other, 1, 1_000, 2_000, 2_000_000);
        check_conservation(&[a.clone(), c, d]).unwrap();
        // A short burst inside a longer shard counts too.
        let long = at(&w, 2, 0, 10_000, 30_000_000);
        let burst = at(&w, 3, 4_000, 4_010, 36_800);
        check_conservation(std::slice::from_ref(&long)).unwrap();
        assert!(
            check_conservation(&[long, burst]).is_ok(),
            "inside [0, 10 s]: 30.0368 kJ ≤ 36.8 kJ"
        );
        // A burst at the ceiling inside a 2 000 W second is possible (the longer shard may
        // have drawn its energy at other moments of its window)...
        let at_ceiling = at(&w, 4, 1_500, 1_600, 368_000);
        check_conservation(&[a.clone(), at_ceiling]).unwrap();
        // ...but 2 000 J + 1 700 J within the same second is not.
        let e = at(&w, 5, 1_200, 1_900, 1_700_000);
        assert!(e.verify().is_ok());
        assert!(
            check_conservation(&[a, e]).is_err(),
            "3 700 J in one second"
        );
    }

    /// The law of conservation by its definition, every start against every end: the
    /// interval that breaks it with the earliest start, and for it the earliest end.
    fn overdrawn_by_definition(
        windows: &[(u64, u64, u64)],
        within: Option<(u64, u64)>,
    ) -> Option<(u64, u64, u128)> {
        let (latest_from, earliest_to) = within.unwrap_or((u64::MAX, 0));
        let mut starts: Vec<u64> = windows.iter().map(|w| w.0).collect();
        let mut ends: Vec<u64> = windows.iter().map(|w| w.1).collect();
        starts.sort_unstable();
        ends.sort_unstable();
        for &a in starts.iter().filter(|&&a| a <= latest_from) {
            for &b in ends.iter().filter(|&&b| b >= a && b >= earliest_to) {
                let inside: u128 = windows
                    .iter()
                    .filter(|w| w.0 >= a && w.1 <= b)
                    .map(|w| u128::from(w.2))
                    .sum();
                if inside > u128::from(MAX_WATTS) * u128::from(b - a) {
                    return Some((a, b, inside));
                }
            }
        }
        None
    }

    proptest::proptest! {
        /// The O(n log n) sweep finds exactly the interval the definition names (or none),
        /// with and without a window the intervals must contain.
        #[test]
        fn the_conservation_sweep_agrees_with_the_definition(
            raw in proptest::collection::vec((0u64..40, 0u64..12, 0u64..60_000), 0..14),
            pick in proptest::option::of(0usize..14),
        ) {
            let windows: Vec<(u64, u64, u64)> =
                raw.iter().map(|&(start, len, e)| (start, start + len, e)).collect();
            let within = pick.and_then(|i| windows.get(i)).map(|w| (w.0, w.1));
            let want = overdrawn_by_definition(&windows, within);
            let got = overdrawn(&mut windows.clone(), within);
            proptest::prop_assert_eq!(got, want);
        }
    }
}
