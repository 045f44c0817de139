//! The credit a verified shard's receipts carry: a bound no worker can talk past. Pure: no
//! I/O, no clock.
//!
//! A worker's energy figure is a claim. The coordinator credits at most a bound derived from
//! evidence it holds:
//! - **the agreeing replicas of the same shard**: they ran the same module on the same input
//!   and burned exactly the same fuel, so their energies per unit of fuel differ only by
//!   hardware and measurement. The shard's reference rate is the *lower median* of their rates
//!   (for two replicas, the lower one), so an inflating replica cannot raise it;
//! - **the job's history**: the median of the reference rates of its shards verified so far
//!   (the same module throughout), kept bounded ([`JobRates`]). The reference never falls
//!   below that median ÷ [`HARDWARE_SPREAD`], so a replica that reports almost nothing cannot
//!   drag an honest household's credit down with it.
//!
//! A claim is credited at most [`HARDWARE_SPREAD`] × reference × fuel. An old CPU that really
//! draws up to 4× the energy per unit of work of the most frugal replica keeps its figure; a
//! worker that reports 10× is cut to 4× and its receipt says so
//! ([`CreditBasis::ReplicaReference`]). The power ceiling (`MAX_WATTS` over the record's
//! window) is a check on the claim itself: a claim above it is refused before it is counted.

use serde::{Deserialize, Serialize};

use crate::model::receipt::CreditBasis;
#[cfg(doc)]
use crate::model::receipt::{WorkRecord, MAX_WATTS};

/// How much more energy per unit of fuel an honest household may draw than the reference:
/// the spread between an old desktop CPU and an efficient recent one running the same wasm
/// (package energy per instruction), with room for measurement noise.
pub const HARDWARE_SPREAD: f64 = 4.0;

/// Shard reference rates a job remembers (the newest ones): enough for a stable median, a
/// few kilobytes of job state.
pub const JOB_SAMPLES: usize = 255;

/// Energy per unit of fuel, mJ. Fuel 0 (a shard that did nothing measurable) counts as 1.
pub fn rate(energy_mj: u64, fuel: u64) -> f64 {
    energy_mj as f64 / fuel.max(1) as f64
}

/// The reference rates of a job's verified shards, newest last, at most [`JOB_SAMPLES`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRates {
    samples: Vec<f64>,
}

impl JobRates {
    /// Rebuilt from verified shards' (reference energy, fuel), in shard order.
    pub fn from_shards(shards: impl Iterator<Item = (u64, u64)>) -> JobRates {
        let mut rates = JobRates::default();
        for (reference_mj, fuel) in shards {
            rates.record(rate(reference_mj, fuel));
        }
        rates
    }

    pub fn median(&self) -> Option<f64> {
        lower_median(&self.samples)
    }

    pub fn record(&mut self, rate: f64) {
        if !rate.is_finite() || rate < 0.0 {
            return;
        }
        if self.samples.len() >= JOB_SAMPLES {
            self.samples.remove(0);
        }
        self.samples.push(rate);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

fn lower_median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(v.len() - 1) / 2])
}

/// What one agreeing claim is credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    pub credited_mj: u64,
    pub basis: CreditBasis,
}

/// The reference energy of a verified shard, mJ: the lower median of its agreeing claims'
/// energies (they all burned the same fuel), never below the job's median rate ÷
/// [`HARDWARE_SPREAD`] for that fuel. Fixed when the shard is verified and stored with it, so
/// a claim countersigned again after a restart gets the identical terms.
pub fn shard_reference(agreeing_energies_mj: &[u64], fuel: u64, job: &JobRates) -> u64 {
    let energies: Vec<f64> = agreeing_energies_mj.iter().map(|&e| e as f64).collect();
    let mut shard = lower_median(&energies).unwrap_or(0.0);
    // A trusted household's result may stand alone (adaptive replication, `jobs::trust`):
    // then no other replica bounds it, and its own figure is its reference only up to the
    // job's median rate for this fuel, so it is credited at most HARDWARE_SPREAD × that.
    if energies.len() == 1 {
        if let Some(m) = job.median() {
            shard = shard.min(m * fuel.max(1) as f64);
        }
    }
    let floor = job
        .median()
        .map_or(0.0, |m| m / HARDWARE_SPREAD * fuel.max(1) as f64);
    // Both are at most the largest u64 energy claimed, or finite products of it: the cast
    // saturates at u64::MAX and never wraps.
    shard.max(floor).ceil() as u64
}

/// Milliseconds of a claim's own power its credit bound allows beyond [`HARDWARE_SPREAD`] ×
/// reference: windows are whole milliseconds, so each reads up to one off, the reference's
/// short and the claim's long. Found in `hearth demo`: two honest replicas of a shard of
/// about a millisecond read 0 ms (0 mJ) on one radiator and 1 or 2 ms on the other, and the
/// second was capped to 4 × 0.
pub const RESOLUTION_MS: u64 = 2;

/// How far past [`HARDWARE_SPREAD`] × reference a claim may go: [`RESOLUTION_MS`] at the
/// claim's own power, `RESOLUTION_MS × ceil(claimed_mj / window_ms)`, 0 for an empty window.
/// Rounded up: charged by CPU time, a claim's energy over its window is a fraction of the
/// power it was charged at, so a window of up to two milliseconds must keep its claim whole
/// (rounded down, 401 mJ over 2 ms was cut to 400). Bounded by `RESOLUTION_MS ×`
/// [`MAX_WATTS`] mJ (7.36 J): a claim above `MAX_WATTS × window_ms` is refused before it is
/// counted ([`WorkRecord::check_physics`]), so that is the most a liar gains from it per shard.
pub fn resolution_tolerance(claimed_mj: u64, window_ms: u64) -> u64 {
    match window_ms {
        0 => 0,
        w => claimed_mj.div_ceil(w).saturating_mul(RESOLUTION_MS),
    }
}

/// What a claim of `claimed_mj` over `window_ms` is credited against its shard's reference
/// energy: the claim whole up to [`HARDWARE_SPREAD`] × reference + the resolution tolerance,
/// that bound (rounded down) above it.
pub fn credit(claimed_mj: u64, window_ms: u64, reference_mj: u64) -> Credit {
    let bound =
        HARDWARE_SPREAD * reference_mj as f64 + resolution_tolerance(claimed_mj, window_ms) as f64;
    if (claimed_mj as f64) <= bound {
        Credit {
            credited_mj: claimed_mj,
            basis: CreditBasis::Claimed,
        }
    } else {
        Credit {
            // `bound` < claimed_mj ≤ u64::MAX here, so the cast cannot saturate wrongly.
            credited_mj: bound.floor().max(0.0) as u64,
            basis: CreditBasis::ReplicaReference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::receipt::MAX_WATTS;
    use proptest::prelude::*;

    #[test]
    fn a_tenfold_liar_is_cut_to_the_bound() {
        let fuel = 1_000_000;
        let honest = 50_000; // 50 J
        let liar = 10 * honest;
        let reference = shard_reference(&[honest, liar], fuel, &JobRates::default());
        assert_eq!(credit(honest, 100, reference).basis, CreditBasis::Claimed);
        let c = credit(liar, 100, reference);
        assert_eq!(c.basis, CreditBasis::ReplicaReference);
        assert_eq!(c.credited_mj, 4 * honest + 2 * (liar / 100));
    }

    #[test]
    fn an_old_cpu_keeps_its_figure() {
        let fuel = 1_000_000;
        let reference = shard_reference(&[50_000, 150_000], fuel, &JobRates::default());
        let c = credit(150_000, 100, reference);
        assert_eq!(c.credited_mj, 150_000);
        assert_eq!(c.basis, CreditBasis::Claimed);
    }

    #[test]
    fn a_deflating_replica_cannot_drag_honest_credit_down() {
        let fuel = 1_000_000;
        let mut job = JobRates::default();
        for _ in 0..10 {
            job.record(rate(50_000, fuel));
        }
        // The griefer claims 0 J; the honest household's 50 J stays credited.
        let reference = shard_reference(&[0, 50_000], fuel, &job);
        assert_eq!(credit(50_000, 100, reference).credited_mj, 50_000);
    }

    /// A trusted result standing alone has no replica to bound it: the job's median does.
    #[test]
    fn a_lone_trusted_claim_is_bounded_by_the_job_median() {
        let fuel = 1_000_000;
        let mut job = JobRates::default();
        for _ in 0..10 {
            job.record(rate(50_000, fuel));
        }
        let reference = shard_reference(&[5_000_000], fuel, &job);
        assert_eq!(reference, 50_000);
        let c = credit(5_000_000, 10_000, reference);
        assert_eq!(c.credited_mj, 200_000 + 2 * 500);
        assert_eq!(c.basis, CreditBasis::ReplicaReference);
        // An honest lone claim keeps its figure.
        assert_eq!(shard_reference(&[60_000], fuel, &job), 50_000);
        assert_eq!(credit(60_000, 100, 50_000).credited_mj, 60_000);
    }

    /// Found in `hearth demo`: two honest replicas of a shard of about a millisecond, one
    /// window read 0 ms (0 mJ), the other 1 or 2 ms at 1 160 W; the second was capped to 0.
    #[test]
    fn a_replica_two_milliseconds_longer_keeps_its_claim() {
        let reference = shard_reference(&[0, 2_320], 52_000, &JobRates::default());
        assert_eq!(reference, 0);
        for w in [1, 2] {
            let c = credit(1_160 * w, w, reference);
            assert_eq!((c.credited_mj, c.basis), (1_160 * w, CreditBasis::Claimed));
        }
        // The tolerance is two milliseconds, not a blank cheque: 3 ms at 1 160 W against a
        // reference of 0 is cut to two of them.
        let c = credit(3_480, 3, reference);
        assert_eq!(
            (c.credited_mj, c.basis),
            (2_320, CreditBasis::ReplicaReference)
        );
        // An empty window claims nothing (the physics refuse more) and has no tolerance.
        assert_eq!(resolution_tolerance(0, 0), 0);
    }

    /// Found by CI on 2026-12-02 (`tests/credit.rs`): charged by CPU time, an honest replica
    /// claimed 401 mJ over a 2 ms window (0.35 ms of CPU at 1 160 W) against a reference
    /// that read 0 ms and 0 mJ. Its power over the window (200.5 mJ/ms) is a fraction of
    /// its real power, and rounded down, two milliseconds of it (400 mJ) fell 1 mJ short.
    #[test]
    fn a_claim_charged_by_cpu_time_keeps_its_odd_millijoule() {
        let c = credit(401, 2, 0);
        assert_eq!((c.credited_mj, c.basis), (401, CreditBasis::Claimed));
    }

    #[test]
    fn job_rates_stay_bounded() {
        let mut job = JobRates::default();
        for i in 0..1000 {
            job.record(i as f64);
        }
        job.record(f64::NAN);
        job.record(-1.0);
        assert_eq!(job.len(), JOB_SAMPLES);
        assert_eq!(job.median(), Some(872.0));
    }

    proptest! {
        /// Credit never exceeds the claim nor the bound (4 × reference + two milliseconds at
        /// the claim's power); a claim within the bound is credited whole.
        #[test]
        fn credit_is_bounded(
            claims in proptest::collection::vec((0u64..10_000_000_000, 0u64..100_000), 1..8),
            fuel in 0u64..1_000_000_000_000,
            history in proptest::collection::vec(0.0f64..1e6, 0..20),
        ) {
            let mut job = JobRates::default();
            for h in history { job.record(h); }
            let energies: Vec<u64> = claims.iter().map(|&(e, _)| e).collect();
            let reference = shard_reference(&energies, fuel, &job);
            for &(e, w) in &claims {
                let bound = HARDWARE_SPREAD * reference as f64 + resolution_tolerance(e, w) as f64;
                let c = credit(e, w, reference);
                prop_assert!(c.credited_mj <= e);
                if e as f64 <= bound {
                    prop_assert_eq!((c.credited_mj, c.basis), (e, CreditBasis::Claimed));
                } else {
                    prop_assert!(c.credited_mj as f64 <= bound);
                    prop_assert_eq!(c.basis, CreditBasis::ReplicaReference);
                }
            }
        }

        /// What the tolerance gives a liar is physically bounded: two milliseconds at most of
        /// the most a household circuit delivers, for any claim the physics accept.
        #[test]
        fn the_tolerance_is_at_most_two_milliseconds_of_a_household_circuit(
            w in 0u64..crate::model::receipt::MAX_WINDOW_MS,
            fraction in 0.0f64..=1.0,
        ) {
            let e = (MAX_WATTS as f64 * w as f64 * fraction) as u64;
            prop_assert!(resolution_tolerance(e, w) <= RESOLUTION_MS * MAX_WATTS);
        }

        /// Honest replicas on like radiators (the same power, about the same duration) are all
        /// credited whole without any job history, however their windows fall on millisecond
        /// boundaries: each reads up to one off, so they differ by up to two (0 against 2 is
        /// what `hearth demo` found).
        #[test]
        fn like_radiators_are_credited_whole_whatever_the_rounding(
            watts in 1u64..=MAX_WATTS,
            short in 0u64..10_000,
            longer in proptest::collection::vec(0u64..=RESOLUTION_MS, 1..6),
            fuel in 0u64..1_000_000_000,
        ) {
            let mut windows = vec![short];
            windows.extend(longer.iter().map(|&l| short + l));
            let energies: Vec<u64> = windows.iter().map(|w| watts * w).collect();
            let reference = shard_reference(&energies, fuel, &JobRates::default());
            for (&w, &e) in windows.iter().zip(&energies) {
                let c = credit(e, w, reference);
                prop_assert_eq!((c.credited_mj, c.basis), (e, CreditBasis::Claimed), "{} ms of {:?}", w, windows);
            }
        }

        /// The same, charged as the simulated and CPU-estimate meters charge
        /// (`heat::energy`): each replica gets `floor(watts × min(window, cpu))`, the same
        /// CPU time for the same work, and a window that reads more than `cpu − 1` ms (its
        /// ends are read in whole milliseconds and wall time is at least CPU time). A
        /// replica descheduled for up to two more milliseconds keeps its claim.
        #[test]
        fn replicas_charged_by_cpu_time_are_credited_whole(
            watts in 1u64..=MAX_WATTS,
            cpu_us in 0u64..5_000,
            late in 0u64..=1,
            longer in proptest::collection::vec(0u64..=RESOLUTION_MS, 1..6),
            fuel in 0u64..1_000_000_000,
        ) {
            let cpu_ms = cpu_us as f64 / 1000.0;
            // The shortest window: `ceil(cpu) − 1` or, if the shard started early in its
            // first millisecond, `ceil(cpu)`.
            let short = (cpu_ms.ceil() as u64).saturating_sub(1) + late;
            let mut windows = vec![short];
            windows.extend(longer.iter().map(|&l| short + l));
            let energies: Vec<u64> = windows
                .iter()
                .map(|&w| (watts as f64 * (w as f64).min(cpu_ms)).floor() as u64)
                .collect();
            let reference = shard_reference(&energies, fuel, &JobRates::default());
            for (&w, &e) in windows.iter().zip(&energies) {
                let c = credit(e, w, reference);
                prop_assert_eq!((c.credited_mj, c.basis), (e, CreditBasis::Claimed), "{} ms of {:?}", w, windows);
            }
        }
    }
}
