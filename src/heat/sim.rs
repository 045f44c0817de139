//! The offline simulation behind `hearth heat simulate` and the heat tests: the simulated
//! room and the real controller (and, with a grid, the real planner), stepped one control
//! period at a time. Work is always available unless a [`WorkSupply`] says otherwise; then a
//! lease-ahead buffer (`heat.plan.lease_ahead_minutes` of every running slot, refilled while
//! work is on offer) carries the radiator through gaps.
//!
//! The recorded span is preceded by a warm-up (default 24 h of the same weather) that is run
//! but not recorded: a radiator is judged in steady operation, not in the hour after it was
//! first switched on, when the PI controller has not yet learnt the room's heat loss.

use chrono::{NaiveDate, NaiveDateTime, Timelike};
use serde::Serialize;

use super::config::HeatConfig;
use super::controller::{Input, Schedule};
use super::grid::Grid;
use super::plan::{plan, Phase};
use super::room::{OutdoorProfile, Room};
use super::HeatError;

/// Longest simulation, hours: bounds the samples kept (one per control period).
pub const MAX_HOURS: f64 = 24.0 * 14.0;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub config: HeatConfig,
    /// Worker slots of the simulated radiator.
    pub max_slots: usize,
    /// Hours to record.
    pub hours: f64,
    /// Hours run before recording starts.
    pub warmup_hours: f64,
    /// `Some(°C)`: hold this setpoint all day; `None`: follow `config.schedule`.
    pub setpoint: Option<f64>,
    /// Prices and carbon intensity; with `planning`, what the planner plans against.
    pub grid: Option<Grid>,
    /// Run the planning controller (`false`: the plain thermostat, priced all the same).
    pub planning: bool,
    /// When work is on offer.
    pub work: WorkSupply,
    /// Lease work ahead (`config.plan.lease_ahead_minutes`) when work comes and goes.
    pub lease_ahead: bool,
}

/// When the network has work to hand out.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkSupply {
    Always,
    /// Available this fraction of the time, in on/off stretches of random length (mean gap
    /// `mean_gap_minutes`), drawn from `seed` so runs repeat.
    Fraction {
        available: f64,
        mean_gap_minutes: f64,
        seed: u64,
    },
    /// (hours since the recorded span began, available) steps; before the first and after
    /// the last line the nearest line holds.
    Trace(Vec<(f64, bool)>),
}

impl WorkSupply {
    /// `0.7` or a trace file (`hours,available` lines, available 0 or 1).
    pub fn parse(arg: &str) -> Result<WorkSupply, HeatError> {
        let field = "--work-supply";
        if let Ok(f) = arg.trim().parse::<f64>() {
            if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
                return Err(HeatError::Config {
                    field,
                    reason: format!("{f} is not a fraction between 0 and 1"),
                });
            }
            return Ok(if f >= 1.0 {
                WorkSupply::Always
            } else {
                WorkSupply::Fraction {
                    available: f,
                    mean_gap_minutes: 30.0,
                    seed: 1,
                }
            });
        }
        let path = std::path::Path::new(arg);
        let len = std::fs::metadata(path)
            .map_err(|source| HeatError::File {
                path: path.into(),
                source,
            })?
            .len();
        if len > super::grid::MAX_SIGNAL_FILE {
            return Err(HeatError::FileTooLarge {
                path: path.into(),
                limit: super::grid::MAX_SIGNAL_FILE as usize,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| HeatError::File {
            path: path.into(),
            source,
        })?;
        let mut steps = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("hours") {
                continue;
            }
            let bad = || HeatError::Config {
                field,
                reason: format!("line {}: {line:?} is not `hours,available` (0 or 1)", n + 1),
            };
            let (h, a) = line.split_once(',').ok_or_else(bad)?;
            let h: f64 = h.trim().parse().map_err(|_| bad())?;
            let a = match a.trim() {
                "1" => true,
                "0" => false,
                _ => return Err(bad()),
            };
            if !h.is_finite() {
                return Err(bad());
            }
            steps.push((h, a));
        }
        if steps.is_empty() {
            return Err(HeatError::Config {
                field,
                reason: format!("{} holds no `hours,available` line", path.display()),
            });
        }
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(WorkSupply::Trace(steps))
    }

    /// Availability of each of `n` periods of `dt` seconds, the first at `first_hours`.
    fn timeline(&self, n: usize, dt: f64, first_hours: f64) -> Vec<bool> {
        match self {
            WorkSupply::Always => vec![true; n],
            WorkSupply::Trace(steps) => (0..n)
                .map(|i| {
                    let h = first_hours + i as f64 * dt / 3600.0;
                    let k = steps.partition_point(|s| s.0 <= h);
                    steps[k.saturating_sub(1)].1
                })
                .collect(),
            WorkSupply::Fraction {
                available,
                mean_gap_minutes,
                seed,
            } => {
                // xorshift64*: repeatable without a dependency.
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut uniform = move || {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
                };
                let off_mean = mean_gap_minutes.max(1.0) * 60.0;
                let on_mean = off_mean * available / (1.0 - available).max(1e-9);
                let mut out = Vec::with_capacity(n);
                let mut on = uniform() < *available;
                while out.len() < n {
                    let mean = if on { on_mean } else { off_mean };
                    // Exponential stretch lengths: gaps come at random, as jobs do.
                    let secs = -mean * (1.0 - uniform()).max(1e-12).ln();
                    let periods = (secs / dt).round().max(1.0) as usize;
                    out.extend(std::iter::repeat_n(on, periods.min(n - out.len())));
                    on = !on;
                }
                out
            }
        }
    }
}

impl SimOptions {
    pub fn new(config: HeatConfig) -> SimOptions {
        SimOptions {
            config,
            max_slots: 8,
            hours: 24.0,
            warmup_hours: 24.0,
            setpoint: None,
            grid: None,
            planning: false,
            work: WorkSupply::Always,
            lease_ahead: false,
        }
    }
}

/// One control period.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Hours since the recorded span began (local midnight).
    pub hours: f64,
    pub room_celsius: f64,
    pub setpoint_celsius: f64,
    pub outdoor_celsius: f64,
    /// Electrical power over the period, W.
    pub power_watts: f64,
    /// Slots the controller wanted.
    pub slots: usize,
    /// Within an expensive period of the grid (the plot shades these).
    pub expensive: bool,
    /// Slots that ran: fewer than `slots` when work ran out.
    pub running_slots: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    /// Fraction of periods with the room within ±0.5 K of the setpoint.
    pub fraction_within_half_kelvin: f64,
    /// Electrical energy over the recorded span, kWh.
    pub energy_kwh: f64,
    pub mean_power_watts: f64,
    pub min_room_celsius: f64,
    pub max_room_celsius: f64,
    /// Most slots changed between two consecutive periods.
    pub max_slot_step: usize,
    pub hours: f64,
    pub max_slots: usize,
    /// `plan` (planning controller) or `plain` (thermostat).
    pub controller: &'static str,
    /// Comfort band used for the figures below, K (`heat.plan.band_k`, at least 0.5).
    pub band_k: f64,
    /// Fraction of periods with the room within setpoint ± band.
    pub fraction_within_band: f64,
    /// Fraction of periods pre-heated: more than 0.5 K and at most `band_k` above setpoint.
    pub fraction_in_preheat_band: f64,
    /// Fraction of periods colder than setpoint − band.
    pub fraction_below_band: f64,
    /// Heat the controller asked for that no work was there to make, kWh.
    pub unmet_heat_kwh: f64,
    /// Fraction of periods with work on offer.
    pub work_available_fraction: f64,
    /// Minutes of work leased ahead per running slot (0: none).
    pub lease_ahead_minutes: f64,
    /// Energy in the tariff's peak hours and outside them, kWh.
    pub peak_kwh: f64,
    pub off_peak_kwh: f64,
    /// Energy in expensive periods (those the planner avoids), kWh.
    pub expensive_kwh: f64,
    /// Energy when the signal said nothing (stale or missing), kWh; neither priced nor
    /// counted for CO2.
    pub unpriced_kwh: f64,
    /// Cost in peak and off-peak hours and in all, in the tariff's currency.
    pub peak_cost: f64,
    pub off_peak_cost: f64,
    pub cost: f64,
    /// CO2 at the signal's intensity, kg.
    pub co2_kg: f64,
    /// Periods spent pre-heating and coasting.
    pub preheat_hours: f64,
    pub coast_hours: f64,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// The same week run with the planning controller and the plain thermostat (and, when work
/// comes and goes, with planning but no lease-ahead).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub plan: SimReport,
    pub plain: SimReport,
    pub plan_without_lease_ahead: Option<SimReport>,
    /// 1 − plan.expensive_kwh / plain.expensive_kwh (0 when plain used none).
    pub expensive_energy_cut: f64,
}

/// Runs `opts` three ways; see [`Comparison`].
pub fn compare(opts: &SimOptions) -> Result<Comparison, HeatError> {
    let plan = simulate(&SimOptions {
        planning: true,
        lease_ahead: true,
        ..opts.clone()
    })?;
    let plain = simulate(&SimOptions {
        planning: false,
        lease_ahead: false,
        ..opts.clone()
    })?;
    let plan_without_lease_ahead = if opts.work == WorkSupply::Always {
        None
    } else {
        Some(simulate(&SimOptions {
            planning: true,
            lease_ahead: false,
            ..opts.clone()
        })?)
    };
    let expensive_energy_cut = if plain.expensive_kwh > 0.0 {
        1.0 - plan.expensive_kwh / plain.expensive_kwh
    } else {
        0.0
    };
    Ok(Comparison {
        plan,
        plain,
        plan_without_lease_ahead,
        expensive_energy_cut,
    })
}

/// Monday 1 January 2024, 00:00: a winter weekday, so the schedule's weekday hours apply.
fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

pub fn simulate(opts: &SimOptions) -> Result<SimReport, HeatError> {
    let config = &opts.config;
    config.validate()?;
    if !(opts.hours.is_finite() && opts.hours > 0.0 && opts.hours <= MAX_HOURS) {
        return Err(HeatError::Config {
            field: "--hours",
            reason: format!("must be more than 0 and at most {MAX_HOURS}"),
        });
    }
    if !(opts.warmup_hours.is_finite() && (0.0..=MAX_HOURS).contains(&opts.warmup_hours)) {
        return Err(HeatError::Config {
            field: "--warmup-hours",
            reason: format!("must be between 0 and {MAX_HOURS}"),
        });
    }
    if let Some(sp) = opts.setpoint {
        if !super::SETPOINT_RANGE.contains(&sp) {
            return Err(HeatError::Setpoint(sp));
        }
    }
    let max_slots = opts.max_slots.clamp(1, 1024);
    let schedule = match opts.setpoint {
        Some(c) => Schedule::constant(c),
        None => Schedule::from_config(&config.schedule)?,
    };
    let per_slot = (config.simulated.radiator_watts - config.idle_watts) / max_slots as f64;
    let mut controller = config.controller(max_slots, per_slot, schedule.clone());
    let outdoor = OutdoorProfile {
        min_celsius: config.simulated.outdoor_min_celsius,
        max_celsius: config.simulated.outdoor_max_celsius,
    };
    let dt = config.period_secs as f64;
    let warmup_steps = (opts.warmup_hours * 3600.0 / dt).round() as u64;
    let steps = (opts.hours * 3600.0 / dt).round().max(1.0) as u64;
    // The warm-up ends at the recorded span's start, midnight of the epoch.
    let start = epoch() - chrono::Duration::seconds((warmup_steps as f64 * dt) as i64);
    let initial = config
        .simulated
        .initial_celsius
        .unwrap_or_else(|| schedule.setpoint_at(start));
    let mut room = Room::new(&config.simulated, initial);
    let total = (warmup_steps + steps) as usize;
    let available = opts
        .work
        .timeline(total, dt, -(warmup_steps as f64) * dt / 3600.0);
    let lease_ahead_secs = if opts.lease_ahead {
        config.plan.lease_ahead_minutes * 60.0
    } else {
        0.0
    };
    let band = config.plan.band_k.max(0.5);
    let mut samples = Vec::with_capacity(steps as usize);
    let mut energy_j = 0.0;
    let mut prev_slots: Option<usize> = None;
    let mut max_slot_step = 0;
    // Slot-seconds of work leased ahead and not yet run.
    let mut buffer = 0.0;
    let mut t = Totals::default();
    for i in 0..(warmup_steps + steps) {
        let secs = i as f64 * dt;
        let local = start + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        let secs_of_day = f64::from(local.num_seconds_from_midnight());
        let the_plan = opts
            .planning
            .then(|| plan(&config.plan, opts.grid.as_ref(), config.hysteresis_k, local));
        let offset = the_plan.as_ref().map_or(0.0, |p| p.offset_k);
        let hysteresis = the_plan.as_ref().and_then(|p| p.hysteresis_k);
        let decision = controller.step_planned(
            &Input {
                now_secs: secs,
                dt_secs: dt,
                local,
                room: Ok(room.celsius),
            },
            offset,
            hysteresis,
        );
        let wanted = decision.slots as f64;
        let running = if available[i as usize] {
            // Work on offer: every wanted slot runs and the leases ahead are topped up.
            buffer = wanted * lease_ahead_secs;
            wanted
        } else {
            let r = wanted.min(buffer / dt);
            buffer -= r * dt;
            r
        };
        let watts = config.idle_watts + running * per_slot;
        let outside = outdoor.at(secs_of_day);
        let period = opts.grid.as_ref().map(|g| g.at(local));
        let expensive = matches!(&period, Some(Ok(p)) if p.expensive);
        if i >= warmup_steps {
            samples.push(Sample {
                hours: (i - warmup_steps) as f64 * dt / 3600.0,
                room_celsius: room.celsius,
                setpoint_celsius: decision.setpoint_celsius,
                outdoor_celsius: outside,
                power_watts: watts,
                slots: decision.slots,
                expensive,
                running_slots: running,
            });
            energy_j += watts * dt;
            let kwh = watts * dt / 3.6e6;
            match &period {
                Some(Ok(p)) => {
                    if p.peak {
                        t.peak_kwh += kwh;
                        t.peak_cost += kwh * p.price_per_kwh;
                    } else {
                        t.off_peak_kwh += kwh;
                        t.off_peak_cost += kwh * p.price_per_kwh;
                    }
                    if p.expensive {
                        t.expensive_kwh += kwh;
                    }
                    t.co2_g += kwh * p.g_co2_per_kwh;
                }
                Some(Err(_)) => t.unpriced_kwh += kwh,
                None => t.off_peak_kwh += kwh,
            }
            t.unmet_kwh += (wanted - running) * per_slot * dt / 3.6e6;
            if available[i as usize] {
                t.available += 1;
            }
            match the_plan.map(|p| p.phase) {
                Some(Phase::Preheat) => t.preheat_steps += 1,
                Some(Phase::Coast) => t.coast_steps += 1,
                _ => {}
            }
            if let Some(p) = prev_slots {
                max_slot_step = max_slot_step.max(p.abs_diff(decision.slots));
            }
            prev_slots = Some(decision.slots);
        }
        room.step(dt, watts, outside);
    }
    let n = samples.len().max(1) as f64;
    let frac = |f: &dyn Fn(&Sample) -> bool| samples.iter().filter(|s| f(s)).count() as f64 / n;
    let within = frac(&|s| (s.room_celsius - s.setpoint_celsius).abs() <= 0.5);
    let within_band = frac(&|s| (s.room_celsius - s.setpoint_celsius).abs() <= band);
    let preheated = frac(&|s| {
        let d = s.room_celsius - s.setpoint_celsius;
        d > 0.5 && d <= band
    });
    let below = frac(&|s| s.room_celsius < s.setpoint_celsius - band);
    let hours = samples.len() as f64 * dt / 3600.0;
    Ok(SimReport {
        fraction_within_half_kelvin: within,
        energy_kwh: energy_j / 3.6e6,
        mean_power_watts: energy_j / (hours * 3600.0).max(1.0),
        min_room_celsius: samples
            .iter()
            .map(|s| s.room_celsius)
            .fold(f64::INFINITY, f64::min),
        max_room_celsius: samples
            .iter()
            .map(|s| s.room_celsius)
            .fold(f64::NEG_INFINITY, f64::max),
        max_slot_step,
        hours,
        max_slots,
        controller: if opts.planning { "plan" } else { "plain" },
        band_k: band,
        fraction_within_band: within_band,
        fraction_in_preheat_band: preheated,
        fraction_below_band: below,
        unmet_heat_kwh: t.unmet_kwh,
        work_available_fraction: t.available as f64 / n,
        lease_ahead_minutes: lease_ahead_secs / 60.0,
        peak_kwh: t.peak_kwh,
        off_peak_kwh: t.off_peak_kwh,
        expensive_kwh: t.expensive_kwh,
        unpriced_kwh: t.unpriced_kwh,
        peak_cost: t.peak_cost,
        off_peak_cost: t.off_peak_cost,
        cost: t.peak_cost + t.off_peak_cost,
        co2_kg: t.co2_g / 1000.0,
        preheat_hours: t.preheat_steps as f64 * dt / 3600.0,
        coast_hours: t.coast_steps as f64 * dt / 3600.0,
        samples,
    })
}

#[derive(Default)]
struct Totals {
    peak_kwh: f64,
    off_peak_kwh: f64,
    expensive_kwh: f64,
    unpriced_kwh: f64,
    peak_cost: f64,
    off_peak_cost: f64,
    co2_g: f64,
    unmet_kwh: f64,
    available: u64,
    preheat_steps: u64,
    coast_steps: u64,
}
