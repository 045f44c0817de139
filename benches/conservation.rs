//! `hearth receipts verify` checks conservation across a household's receipts: inside every
//! interval from one receipt's start to another's end, its receipts claim at most what one
//! circuit delivers (`docs/receipts.md`, "Verifying an export", step 4). A year of one
//! radiator's work is hundreds of thousands of receipts. This bench prints, side by side, the
//! time of the check hearth runs (`model::conservation::check_conservation`, an O(n log n) sweep
//! since 2026-12-04) and of the quadratic check it replaced (every start against every end,
//! kept here only as the baseline), for one household's back-to-back receipts on two slots.
//!
//! Run with `cargo bench --bench conservation`. It asserts nothing beyond the two agreeing.

use std::time::Instant;

use hearth::identity::Identity;
use hearth::model::conservation::check_conservation;
use hearth::model::receipt::{CreditTerms, EnergyMethod, Receipt, WorkRecord, MAX_WATTS};

/// `n` receipts of one household: two slots, each running 1–4 s shards back to back at about
/// 30 W.
fn receipts(n: usize) -> Vec<Receipt> {
    let (worker, submitter) = (Identity::generate(), Identity::generate());
    let mut at = [1_700_000_000_000u64; 2];
    (0..n)
        .map(|i| {
            let slot = i % 2;
            let len = 1_000 + (i as u64 * 7919) % 3_000;
            let (start, end) = (at[slot], at[slot] + len);
            at[slot] = end;
            let record = WorkRecord {
                job: blake3::hash(b"job"),
                shard: i as u32,
                module: blake3::hash(b"module"),
                input: blake3::hash(b"input"),
                output: blake3::hash(b"output"),
                worker: worker.public(),
                submitter: submitter.public(),
                fuel: 1_000,
                energy_mj: 30 * len,
                method: EnergyMethod::CpuEstimate,
                start_ms: start,
                end_ms: end,
                nonce: [0; 16],
            };
            Receipt {
                terms: CreditTerms::claimed(&record, 2, 2),
                record,
                worker_sig: [0; 64],
                submitter_sig: [0; 64],
            }
        })
        .collect()
}

/// The check before 2026-12-04: for each start, the windows by end, accumulated.
fn quadratic(receipts: &[Receipt]) -> bool {
    let mut windows: Vec<(u64, u64, u64)> = receipts
        .iter()
        .map(|r| (r.record.start_ms, r.record.end_ms, r.record.energy_mj))
        .collect();
    windows.sort_unstable_by_key(|w| w.1);
    let mut starts: Vec<u64> = windows.iter().map(|w| w.0).collect();
    starts.sort_unstable();
    starts.dedup();
    for from in starts {
        let mut sum = 0u128;
        for &(start, end, energy) in &windows {
            if start >= from {
                sum += u128::from(energy);
                if sum > u128::from(MAX_WATTS) * u128::from(end - from) {
                    return false;
                }
            }
        }
    }
    true
}

fn main() {
    println!(
        "{:>9}  {:>12}  {:>12}  {:>8}",
        "receipts", "sweep", "quadratic", "ratio"
    );
    for n in [1_000, 10_000, 30_000, 100_000, 1_000_000] {
        let rs = receipts(n);
        let t = Instant::now();
        let ok = check_conservation(&rs).is_ok();
        let sweep = t.elapsed().as_secs_f64();
        assert!(ok, "honest receipts obey conservation");
        // The quadratic check takes minutes beyond 100 000 receipts.
        let quad = (n <= 100_000).then(|| {
            let t = Instant::now();
            assert!(quadratic(&rs), "the two checks agree");
            t.elapsed().as_secs_f64()
        });
        match quad {
            Some(q) => println!(
                "{n:>9}  {:>10.3} s  {:>10.3} s  {:>7.0}×",
                sweep,
                q,
                q / sweep
            ),
            None => println!("{n:>9}  {sweep:>10.3} s  {:>12}  {:>8}", "-", "-"),
        }
    }
}
