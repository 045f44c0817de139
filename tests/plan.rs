//! Heat you can plan (issue 15): grid signals, the planning controller, work that comes and
//! goes, and the impact report from receipts. The simulations are the real room model and the
//! real controller and planner; the receipts are really signed and checked.

use std::path::PathBuf;
use std::time::Duration;

use hearth::cli::heat::{comparison_table, SimulateArgs};
use hearth::heat::config::SignalSource;
use hearth::heat::grid::{Grid, Series, SeriesPoint};
use hearth::heat::plan::Phase;
use hearth::heat::sim::{compare, Comparison, SimOptions, WorkSupply};
use hearth::heat::{spawn, HeatConfig, HeatStatus};
use hearth::identity::Identity;
use hearth::impact::{compute, Assumptions, Filter, Replaced};
use hearth::model::receipt::{
    Claim, CreditBasis, CreditTerms, EnergyMethod, ReceiptExport, ReceiptJson, VerifiedBy,
    WorkRecord,
};
use tokio::sync::watch;

fn tariff(name: &str) -> Grid {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/tariffs")
        .join(name);
    Grid::read(&path).unwrap()
}

fn week(grid: Grid, work: WorkSupply) -> Comparison {
    let opts = SimOptions {
        hours: 7.0 * 24.0,
        setpoint: Some(19.0),
        grid: Some(grid),
        work,
        ..SimOptions::new(HeatConfig::default())
    };
    compare(&opts).unwrap()
}

#[test]
fn red_peak_week_halves_expensive_energy_and_keeps_the_band() {
    let c = week(tariff("red-peaks-week.toml"), WorkSupply::Always);
    println!("{}", comparison_table(&c));
    assert!(
        c.plain.expensive_kwh > 5.0,
        "red peaks cost the thermostat energy"
    );
    assert!(
        c.expensive_energy_cut >= 0.5,
        "planning cut {:.1} % of expensive-period energy",
        c.expensive_energy_cut * 100.0
    );
    assert!(c.plan.fraction_within_band >= 0.95);
    assert!(c.plan.fraction_in_preheat_band > 0.0, "it pre-heats");
    assert!(c.plan.max_room_celsius <= 19.0 + 1.0 + 0.05);
    assert!(c.plan.min_room_celsius >= 19.0 - 1.0 - 0.05);
    assert!(c.plan.peak_cost < c.plain.peak_cost);
    assert!(c.plan.cost < c.plain.cost);
    assert!(c.plan.co2_kg < c.plain.co2_kg);
    // The plain thermostat holds the setpoint, never leaving the ±0.5 K band for long.
    assert!(c.plain.fraction_within_half_kelvin >= 0.95);
    assert_eq!(c.plain.preheat_hours + c.plain.coast_hours, 0.0);
}

#[test]
fn tempo_sixteen_hour_peaks_are_measured_honestly() {
    // A 1 K band cannot carry a room through 16 peak hours: planning saves little there, and
    // must still keep the band. docs/heat.md quotes these figures.
    let c = week(tariff("tempo-week.toml"), WorkSupply::Always);
    println!("{}", comparison_table(&c));
    assert!(c.expensive_energy_cut > 0.0 && c.expensive_energy_cut < 0.5);
    assert!(c.plan.fraction_within_band >= 0.95);
    assert!(c.plan.min_room_celsius >= 19.0 - 1.0 - 0.05);
}

#[test]
fn lease_ahead_recovers_comfort_when_work_is_there_70_percent_of_the_time() {
    let c = week(
        tariff("red-peaks-week.toml"),
        WorkSupply::parse("0.7").unwrap(),
    );
    println!("{}", comparison_table(&c));
    let none = c.plan_without_lease_ahead.as_ref().unwrap();
    assert!((0.6..0.8).contains(&c.plan.work_available_fraction));
    assert_eq!(none.lease_ahead_minutes, 0.0);
    assert!(c.plan.lease_ahead_minutes > 0.0);
    assert!(
        c.plan.unmet_heat_kwh < none.unmet_heat_kwh,
        "lease-ahead leaves less heat unmet"
    );
    assert!(c.plan.fraction_within_band > none.fraction_within_band);
    assert!(c.plan.fraction_below_band < none.fraction_below_band);
}

#[test]
fn work_supply_trace_file_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("work.csv");
    // Work for the first 12 hours of every day of two days, none after.
    std::fs::write(&trace, "hours,available\n0,1\n12,0\n24,1\n36,0\n").unwrap();
    let w = WorkSupply::parse(trace.to_str().unwrap()).unwrap();
    let opts = SimOptions {
        hours: 48.0,
        setpoint: Some(19.0),
        work: w,
        lease_ahead: true,
        ..SimOptions::new(HeatConfig::default())
    };
    let r = hearth::heat::sim::simulate(&opts).unwrap();
    assert!((r.work_available_fraction - 0.5).abs() < 0.01);
    assert!(r.unmet_heat_kwh > 1.0, "12 h without work leave heat unmet");
    for bad in ["1.5", "-0.1", "/nonexistent/trace.csv"] {
        assert!(WorkSupply::parse(bad).is_err(), "{bad}");
    }
    std::fs::write(&trace, "0,yes\n").unwrap();
    assert!(WorkSupply::parse(trace.to_str().unwrap()).is_err());
}

#[test]
fn stale_signal_in_the_simulation_falls_back_to_the_thermostat() {
    // A carbon signal for the first day only: afterwards the energy is unpriced and the
    // planner runs the plain thermostat.
    let mut csv = String::from("# expensive_g_co2_per_kwh=300 period_minutes=60\n");
    for h in 0..24 {
        let g = if (17..20).contains(&h) { 400 } else { 80 };
        csv += &format!("2024-01-01T{h:02}:00,0.20,{g}\n");
    }
    let s = Series::parse(&csv).unwrap();
    let c = week(Grid::Series(s), WorkSupply::Always);
    println!("{}", comparison_table(&c));
    assert!(c.plan.unpriced_kwh > 0.0);
    assert!(c.plan.coast_hours > 2.0 && c.plan.coast_hours <= 3.0);
    assert!(c.plan.expensive_kwh < c.plain.expensive_kwh);
}

#[test]
fn simulate_command_compares_and_plots_shaded_periods() {
    let dir = tempfile::tempdir().unwrap();
    let png_path = dir.path().join("week.png");
    let args = SimulateArgs {
        hours: 24.0,
        plot: Some(png_path.clone()),
        json: true,
        slots: 8,
        setpoint: None,
        schedule: false,
        warmup_hours: 24.0,
        days: Some(3.0),
        tariff: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/tariffs/red-peaks-week.toml"),
        ),
        work_supply: Some("0.7".into()),
    };
    hearth::cli::heat::simulate_day(&args, &HeatConfig::default()).unwrap();
    let bytes = std::fs::read(&png_path).unwrap();
    // The shading colour of expensive periods is in the picture.
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    assert!(buf.chunks(3).any(|p| p == [236, 236, 250]));
    if let Ok(keep) = std::env::var("HEARTH_KEEP_PLOT") {
        std::fs::copy(&png_path, keep).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The live service

async fn wait_for(
    rx: &mut watch::Receiver<HeatStatus>,
    what: &str,
    ok: impl Fn(&HeatStatus) -> bool,
) -> HeatStatus {
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            {
                let s = rx.borrow_and_update();
                if ok(&s) {
                    return s.clone();
                }
            }
            rx.changed().await.expect("heat service runs");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(start_paused = true)]
async fn pushed_signal_plans_and_a_stale_one_falls_back_with_a_reason() {
    let mut config = HeatConfig::default();
    config.signal.source = SignalSource::Http;
    config.simulated.initial_celsius = Some(19.0);
    let (slots_tx, _slots) = watch::channel(0);
    let (_stop, stop_rx) = watch::channel(false);
    let (heat, _task) = spawn(config, 8, slots_tx, stop_rx, None).unwrap();
    let mut rx = heat.subscribe();
    let s = wait_for(&mut rx, "a first plan", |s| s.plan.is_some()).await;
    let plan = s.plan.unwrap();
    assert_eq!(plan.phase, Phase::Plain);
    assert!(
        s.reason.contains("no grid signal received yet"),
        "{}",
        s.reason
    );

    // The service's local clock starts at the real local time; the forecast is around it.
    let now = chrono::Local::now().naive_local();
    let series = |points: Vec<(i64, f64)>, minutes: u32| Series {
        points: points
            .into_iter()
            .map(|(h, g)| SeriesPoint {
                start: now + chrono::Duration::hours(h),
                price_per_kwh: 0.2,
                g_co2_per_kwh: g,
            })
            .collect(),
        period_minutes: minutes,
        expensive_price: None,
        expensive_g_co2_per_kwh: Some(300.0),
    };
    // Expensive now and for two hours: coast.
    let s = heat
        .push_signal(series(vec![(-1, 400.0), (2, 50.0)], 600))
        .await
        .unwrap();
    let plan = s.plan.unwrap();
    assert_eq!(plan.phase, Phase::Coast, "{}", plan.reason);
    assert!(plan.offset_k < 0.0);
    // Cheap now, expensive in two hours: pre-heat.
    let s = heat
        .push_signal(series(vec![(-1, 50.0), (2, 400.0)], 600))
        .await
        .unwrap();
    assert_eq!(s.plan.unwrap().phase, Phase::Preheat);
    // A forecast that ends in an hour: after it, plain thermostat and the reason says why.
    heat.push_signal(series(vec![(-1, 50.0)], 120))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let s = wait_for(&mut rx, "the signal to run out", |s| {
        s.plan.as_ref().is_some_and(|p| p.phase == Phase::Plain)
    })
    .await;
    assert!(s.reason.contains("ran out"), "{}", s.reason);
    assert!(!s.fail_safe, "a stale grid signal is not a sensor failure");
}

#[tokio::test(start_paused = true)]
async fn signal_push_is_refused_without_an_http_signal_source() {
    let (slots_tx, _slots) = watch::channel(0);
    let (_stop, stop_rx) = watch::channel(false);
    let (heat, _task) = spawn(HeatConfig::default(), 4, slots_tx, stop_rx, None).unwrap();
    let s = Series::parse("# expensive_price=0.4\n2024-01-01T00:00,0.1,10\n").unwrap();
    let err = heat.push_signal(s).await.unwrap_err().to_string();
    assert!(err.contains("[heat.signal]"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Impact

/// A receipt whose worker claimed `claimed_mj` and was credited `credited_mj`.
fn receipt(
    worker: &Identity,
    submitter: &Identity,
    job: &[u8],
    claimed_mj: u64,
    credited_mj: u64,
) -> ReceiptJson {
    let energy_mj = claimed_mj;
    let record = WorkRecord {
        job: blake3::hash(job),
        shard: 0,
        module: blake3::hash(b"module"),
        input: blake3::hash(b"input"),
        output: blake3::hash(b"output"),
        worker: worker.public(),
        submitter: submitter.public(),
        fuel: 1000,
        energy_mj,
        method: EnergyMethod::Rapl,
        // 20 hours: 1 kWh in 20 h is 50 W, well within a household circuit.
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_000_000 + 72_000_000,
        nonce: [(energy_mj % 251) as u8; 16],
    };
    let terms = CreditTerms {
        credited_mj,
        basis: if credited_mj == claimed_mj {
            CreditBasis::Claimed
        } else {
            CreditBasis::ReplicaReference
        },
        verified_by: VerifiedBy::Quorum,
        agreeing: 2,
        replicas: 2,
    };
    let r = Claim::sign(record, worker)
        .unwrap()
        .countersign(submitter, terms)
        .unwrap();
    ReceiptJson::from(&r)
}

#[test]
fn impact_numbers_check_by_hand() {
    let (home_a, home_b, sub) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    // 3.6e9 mJ = 1 kWh; 1.8e9 mJ = 0.5 kWh. The third claimed 1 kWh and was credited 0.5:
    // the credit counts, not the claim.
    let mut receipts = vec![
        receipt(&home_a, &sub, b"job-1", 3_600_000_000, 3_600_000_000),
        receipt(&home_b, &sub, b"job-1", 1_800_000_000, 1_800_000_000),
        receipt(&home_a, &sub, b"job-2", 3_600_000_000, 1_800_000_000),
    ];
    // A receipt whose readable credit was inflated after signing does not count.
    let mut forged = receipt(&home_b, &sub, b"job-2", 3_600_000_000, 360_000);
    forged.credited_mj = 3_600_000_000;
    receipts.push(forged);

    let a = Assumptions::default();
    let r = compute(&receipts, &Filter::default(), &a).unwrap();
    assert_eq!(
        (r.receipts, r.invalid_receipts, r.jobs, r.households),
        (3, 1, 2, 2)
    );
    let close = |x: f64, y: f64| assert!((x - y).abs() < 1e-9, "{x} vs {y}");
    close(r.credited_kwh, 2.0);
    close(r.claimed_kwh, 2.5);
    close(r.heat_delivered_kwh, 2.0);
    close(r.data_centre_kwh, 2.0 * 1.58);
    close(r.heating_energy_avoided_kwh, 2.0);
    close(r.hearth_co2_kg, 2.0 * 0.056);
    close(r.separate_co2_kg, (3.16 + 2.0) * 0.056);
    close(r.co2_reduction, 1.0 - 2.0 / 5.16);

    // Gas replaced: 2 kWh heat / 0.9 × 227 g + 3.16 kWh × 56 g.
    let gas = Assumptions {
        replaced: Replaced::Gas,
        ..Assumptions::default()
    };
    let r = compute(&receipts, &Filter::default(), &gas).unwrap();
    close(
        r.separate_co2_kg,
        (2.0 / 0.9 * 227.0 + 3.16 * 56.0) / 1000.0,
    );
    assert!(
        r.co2_reduction > 0.78,
        "gas on a low-carbon grid beats the claim"
    );

    // Filters: one job, one household.
    let job1 = blake3::hash(b"job-1").to_hex().to_string();
    let only = Filter {
        job: Some(job1[..12].to_string()),
        household: None,
    };
    close(compute(&receipts, &only, &a).unwrap().credited_kwh, 1.5);
    let only = Filter {
        job: None,
        household: Some(home_a.public().to_hex()),
    };
    close(compute(&receipts, &only, &a).unwrap().credited_kwh, 1.5);

    // The CLI prints the same numbers, and the plot is a PNG.
    let dir = tempfile::tempdir().unwrap();
    let args = hearth::cli::impact::ImpactArgs {
        plot: Some(dir.path().join("impact.png")),
        ..Default::default()
    };
    let export = ReceiptExport {
        format: hearth::model::receipt::EXPORT_FORMAT.into(),
        receipts,
        chain: None,
        inclusions: Vec::new(),
    };
    let text = hearth::cli::impact::report(&args, &export).unwrap();
    println!("{text}");
    assert!(
        text.contains("energy credited          2.000000 kWh"),
        "{text}"
    );
    assert!(
        text.contains("data centre instead      3.160000 kWh"),
        "{text}"
    );
    assert!(text.contains("1 invalid left out"), "{text}");
    let png = std::fs::read(dir.path().join("impact.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // `[impact]` of hearth.toml over the defaults, flags over it: a gas-heated home whose
    // data centre would run on a 300 g/kWh grid, PUE from the flag.
    let args = hearth::cli::impact::ImpactArgs {
        pue: Some(1.2),
        config: Some(Assumptions {
            pue: 2.0,
            replaced: Replaced::Gas,
            data_centre_g_co2_per_kwh: Some(300.0),
            ..Assumptions::default()
        }),
        ..Default::default()
    };
    let a = args.assumptions();
    assert_eq!(
        (a.pue, a.replaced, a.grid_g_co2_per_kwh),
        (1.2, Replaced::Gas, 56.0)
    );
    let r = compute(&export.receipts, &Filter::default(), &a).unwrap();
    // Separately: 2 kWh × 1.2 at 300 g + 2 / 0.9 kWh of gas at 227 g; hearth: 2 kWh at 56 g.
    close(
        r.separate_co2_kg,
        (2.0 * 1.2 * 300.0 + 2.0 / 0.9 * 227.0) / 1000.0,
    );
    close(r.hearth_co2_kg, 2.0 * 0.056);
    let text = hearth::cli::impact::report(&args, &export).unwrap();
    assert!(text.contains("data centre at 300 g/kWh"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Lease-ahead on real nodes

/// A shard that spins `n` times (about 1 ns each on a desktop core).
const SPIN_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i64) (local $acc i64)
    (local.set $n (i64.load (local.get $ptr)))
    (block $done
      (loop $l
        (br_if $done (i64.eqz (local.get $n)))
        (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 6364136223846793005))
                                 (i64.const 1442695040888963407)))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $l)))
    (i64.store (i32.const 0) (local.get $acc))
    (i64.const 8)))"#;

/// Runs a job of six ~0.6 s shards on one cold one-slot radiator (the submitter's room is
/// warm, so it runs none) and returns the most shards leased to the radiator at once, and its
/// receipts' execution windows.
async fn one_slot_radiator(lease_ahead_minutes: f64) -> (usize, Vec<(u64, u64)>, usize) {
    use hearth::demo::{start_radiators, wait_connected};
    use hearth::jobs::build::{build, JobSpec};
    use hearth::jobs::{JobStatus, ShardView};
    use hearth::model::JobLimits;

    let module = wat::parse_str(SPIN_WAT).unwrap();
    let executor = hearth::exec::Executor::new().unwrap();
    let hash = blake3::hash(&module);
    let limits = hearth::exec::Limits {
        fuel: u64::MAX / 2,
        ..Default::default()
    };
    executor
        .run(&hash, &module, 1u64.to_le_bytes().as_slice(), &limits)
        .unwrap();
    let probe = 20_000_000u64;
    let t = std::time::Instant::now();
    executor
        .run(&hash, &module, probe.to_le_bytes().as_slice(), &limits)
        .unwrap();
    let spins = (0.6 / (t.elapsed().as_secs_f64() / probe as f64)) as u64;

    let dir = tempfile::tempdir().unwrap();
    let nodes = start_radiators(dir.path(), 2, 1, &|i, o| {
        if i == 0 {
            o.config.heat.simulated.initial_celsius = Some(24.0);
        }
        o.config.heat.plan.lease_ahead_minutes = lease_ahead_minutes;
    })
    .await
    .unwrap();
    wait_connected(&nodes, 1, Duration::from_secs(20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (sub, radiator) = (&nodes[0], &nodes[1]);
    let ahead_hint = radiator
        .context
        .heat
        .as_ref()
        .unwrap()
        .status()
        .lease_ahead_slots;
    let spec = JobSpec::Wasm {
        module,
        inputs: (0..6u64)
            .map(|i| (spins + i).to_le_bytes().to_vec())
            .collect(),
    };
    let manifest = build(
        &sub.context.store,
        &spec,
        sub.household(),
        JobLimits {
            fuel_per_shard: u64::MAX / 2,
            ..JobLimits::default()
        },
        1,
    )
    .unwrap();
    let id = sub.context.coordinator.submit(manifest).await.unwrap();
    let mut most = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let view = sub.context.coordinator.view(id).await.unwrap();
        let leased = view
            .shards
            .iter()
            .filter(|s| matches!(s, ShardView::Leased { .. }))
            .count();
        most = most.max(leased);
        if !matches!(view.status, JobStatus::Running) {
            assert!(matches!(view.status, JobStatus::Done { .. }), "{view:#?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{view:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut windows: Vec<(u64, u64)> = sub
        .context
        .ledger
        .list(None)
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                r.record.worker,
                radiator.household(),
                "the warm room ran none"
            );
            (r.record.start_ms, r.record.end_ms)
        })
        .collect();
    windows.sort();
    for n in nodes {
        n.shutdown().await;
    }
    (most, windows, ahead_hint)
}

/// Issue 15: when heat is wanted the worker takes leases ahead, so a gap in the work on offer
/// does not leave the room cold, yet never executes more shards than the room wants.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_radiator_holds_a_shard_ahead_but_runs_one_per_slot() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let (most, windows, hint) = one_slot_radiator(30.0).await;
        assert_eq!(hint, 1, "one shard ahead per running slot");
        assert_eq!(windows.len(), 6);
        assert!(
            most >= 2,
            "the cold radiator never held a shard ahead of the running one ({most} at most)"
        );
        // One slot: the execution windows never overlap, although two leases were held.
        for w in windows.windows(2) {
            assert!(w[1].0 >= w[0].1, "shards ran at once: {windows:?}");
        }
        // Without lease-ahead, one lease at a time.
        let (most, windows, hint) = one_slot_radiator(0.0).await;
        assert_eq!((hint, windows.len()), (0, 6));
        assert_eq!(
            most, 1,
            "without lease-ahead a one-slot radiator holds one lease"
        );
    })
    .await
    .expect("test timed out");
}
