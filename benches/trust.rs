//! The cheater simulation of issue 10: simulated radiators (honest, random liars, colluders,
//! a Sybil's fresh identities) against the coordinator's real, pure book, with fixed 2-way
//! replication and the adaptive policy side by side (`hearth::jobs::trust::sim`).
//!
//! Run with `cargo bench --bench trust`. It prints the table of `docs/trust.md`; it asserts
//! nothing (`tests/trust.rs` runs the same scenarios and checks the outcomes).

use std::time::Instant;

use hearth::jobs::trust::sim;

fn main() {
    let started = Instant::now();
    let rows: Vec<_> = sim::standard()
        .into_iter()
        .map(|(name, fixed, adaptive)| (name, sim::run(&fixed), sim::run(&adaptive)))
        .collect();
    println!("{}", sim::table(&rows));
    println!(
        "(simulated; {:.1} s of real time)",
        started.elapsed().as_secs_f64()
    );
}
