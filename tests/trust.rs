//! Issue 10, "done when": the cheater simulation (`hearth::jobs::trust::sim`, ≥ 20 simulated
//! radiators against the coordinator's real book, jobs of 500 shards) with fixed 2-way
//! replication and the adaptive policy side by side. Prints the table of `docs/trust.md`
//! (`cargo test --test trust -- --nocapture`) and checks the outcomes the issue asks for.
//! These are outcomes of a deterministic simulation, not timings.

use hearth::jobs::trust::sim;

#[test]
fn cheaters_are_caught_and_trusted_work_needs_fewer_replicas() {
    let rows: Vec<_> = sim::standard()
        .into_iter()
        .map(|(name, fixed, adaptive)| (name, sim::run(&fixed), sim::run(&adaptive)))
        .collect();
    println!("{}", sim::table(&rows));
    for (name, _, a) in &rows {
        assert_eq!(a.unfinished, 0, "{name}: {a:?}");
        assert!(a.shards >= 500, "{name}");
        assert_eq!(
            a.honest_excluded + a.honest_suspended,
            0,
            "{name}: honest households shut out: {a:?}"
        );
        if name.contains("patient") {
            // The residual risk (docs/threat-model.md): liars that earned trust first get
            // some lies through before a spot check catches them; they are still caught.
            assert_eq!(a.liars_excluded, a.liars, "{name}: {a:?}");
            continue;
        }
        assert_eq!(a.wrong_accepted, 0, "{name}: wrong results accepted: {a:?}");
        assert_eq!(
            a.liars_excluded, a.liars,
            "{name}: liars not excluded: {a:?}"
        );
        assert!(
            a.max_lies_before_caught <= 2,
            "{name}: a liar told {} lies before it was caught",
            a.max_lies_before_caught
        );
    }
    let get = |n: &str| &rows.iter().find(|r| r.0 == n).unwrap().2;
    let abundant = get("honest, work > heat");
    let scarce = get("honest, heat > work");
    assert!(abundant.mean_replicas <= 1.3, "{abundant:?}");
    assert!(
        scarce.mean_replicas > abundant.mean_replicas + 0.5,
        "replication did not rise with heat demand: {scarce:?}"
    );
    let ten = get("10 % random liars");
    assert!(ten.mean_replicas <= 1.3, "{ten:?}");
}
