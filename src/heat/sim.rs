//! The offline day simulation behind `hearth heat simulate` and the heat tests: the simulated
//! room and the real controller, stepped one control period at a time, with work always
//! available (every slot the controller allows is busy).
//!
//! The recorded span is preceded by a warm-up (default 24 h of the same weather) that is run
//! but not recorded: a radiator is judged in steady operation, not in the hour after it was
//! first switched on, when the PI controller has not yet learnt the room's heat loss.

use chrono::{NaiveDate, NaiveDateTime, Timelike};
use serde::Serialize;

use super::config::HeatConfig;
use super::controller::{Input, Schedule};
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
}

impl SimOptions {
    pub fn new(config: HeatConfig) -> SimOptions {
        SimOptions {
            config,
            max_slots: 8,
            hours: 24.0,
            warmup_hours: 24.0,
            setpoint: None,
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
    pub slots: usize,
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
    #[serde(skip)]
    pub samples: Vec<Sample>,
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
    let mut samples = Vec::with_capacity(steps as usize);
    let mut energy_j = 0.0;
    let mut prev_slots: Option<usize> = None;
    let mut max_slot_step = 0;
    for i in 0..(warmup_steps + steps) {
        let secs = i as f64 * dt;
        let local = start + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        let secs_of_day = f64::from(local.num_seconds_from_midnight());
        let decision = controller.step(&Input {
            now_secs: secs,
            dt_secs: dt,
            local,
            room: Ok(room.celsius),
        });
        let watts = config.idle_watts + decision.slots as f64 * per_slot;
        let outside = outdoor.at(secs_of_day);
        if i >= warmup_steps {
            samples.push(Sample {
                hours: (i - warmup_steps) as f64 * dt / 3600.0,
                room_celsius: room.celsius,
                setpoint_celsius: decision.setpoint_celsius,
                outdoor_celsius: outside,
                power_watts: watts,
                slots: decision.slots,
            });
            energy_j += watts * dt;
            if let Some(p) = prev_slots {
                max_slot_step = max_slot_step.max(p.abs_diff(decision.slots));
            }
            prev_slots = Some(decision.slots);
        }
        room.step(dt, watts, outside);
    }
    let n = samples.len().max(1) as f64;
    let within = samples
        .iter()
        .filter(|s| (s.room_celsius - s.setpoint_celsius).abs() <= 0.5)
        .count() as f64;
    let hours = samples.len() as f64 * dt / 3600.0;
    Ok(SimReport {
        fraction_within_half_kelvin: within / n,
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
        samples,
    })
}
