//! The thermostat's brain: a weekly schedule, the household's overrides, and a PI controller
//! whose output is a number of worker slots.
//!
//! The controller is pure: it is handed the room temperature (or why there is none), the local
//! time and the seconds elapsed, and answers how many slots should run. It knows nothing of
//! sensors, clocks or the worker, so the live service and `hearth heat simulate` drive the very
//! same code.
//!
//! How it decides, each control period:
//! 1. `off` ⇒ 0 slots, at once, whatever else holds.
//! 2. No trustworthy reading ⇒ fail safe: `min_slots`, at once.
//! 3. A room at or above [`OVERHEAT_CELSIUS`] ⇒ 0 slots, at once, in every mode (`min_slots`
//!    included): whatever the schedule, an override or a bug says, a radiator never heats a
//!    room that hot.
//! 4. `boost` ⇒ every slot the power cap allows.
//! 5. Otherwise a thermostat with hysteresis decides whether the room *calls for heat* (below
//!    setpoint − h it calls, above setpoint + h it stops), and while it calls a PI controller
//!    sets the demand (0..1 of full power). The demand is quantised to slots with a dead band
//!    so that a demand hovering on a boundary does not flip a slot every period.
//! 6. The slot count moves towards its target by at most one per period: a radiator that
//!    ramps is kinder to the power supply, the fans and the coordinators handing out leases.

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::config::{DayHours, ScheduleConfig};
use super::HeatError;

/// No mode heats a room warmer than this, °C: a radiator is for a living room, not a sauna.
/// Above the highest setpoint a household can choose ([`super::SETPOINT_RANGE`]).
pub const OVERHEAT_CELSIUS: f64 = 28.0;
/// Extra fraction of a slot the demand must move past a rounding boundary before the slot
/// target changes.
const SLOT_DEAD_BAND: f64 = 0.15;

/// Minutes after midnight.
fn parse_hhmm(field: &'static str, s: &str) -> Result<u32, HeatError> {
    let bad = || HeatError::Config {
        field,
        reason: format!("{s:?} is not a time of day; write it as HH:MM, e.g. \"07:00\""),
    };
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Day and night setpoints and, for each weekday, when the day starts and when night starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub day_celsius: f64,
    pub night_celsius: f64,
    /// Per weekday from Monday: (day start, night start) in minutes after midnight.
    hours: [(u32, u32); 7],
}

impl Schedule {
    pub fn from_config(c: &ScheduleConfig) -> Result<Schedule, HeatError> {
        let day = parse_hhmm("heat.schedule.day_start", &c.day_start)?;
        let night = parse_hhmm("heat.schedule.night_start", &c.night_start)?;
        let mut hours = [(day, night); 7];
        let days: [(&'static str, &'static str, &Option<DayHours>); 7] = [
            (
                "heat.schedule.mon.day_start",
                "heat.schedule.mon.night_start",
                &c.mon,
            ),
            (
                "heat.schedule.tue.day_start",
                "heat.schedule.tue.night_start",
                &c.tue,
            ),
            (
                "heat.schedule.wed.day_start",
                "heat.schedule.wed.night_start",
                &c.wed,
            ),
            (
                "heat.schedule.thu.day_start",
                "heat.schedule.thu.night_start",
                &c.thu,
            ),
            (
                "heat.schedule.fri.day_start",
                "heat.schedule.fri.night_start",
                &c.fri,
            ),
            (
                "heat.schedule.sat.day_start",
                "heat.schedule.sat.night_start",
                &c.sat,
            ),
            (
                "heat.schedule.sun.day_start",
                "heat.schedule.sun.night_start",
                &c.sun,
            ),
        ];
        for (slot, (day_field, night_field, own)) in hours.iter_mut().zip(days) {
            if let Some(own) = own {
                if let Some(d) = &own.day_start {
                    slot.0 = parse_hhmm(day_field, d)?;
                }
                if let Some(n) = &own.night_start {
                    slot.1 = parse_hhmm(night_field, n)?;
                }
            }
        }
        Ok(Schedule {
            day_celsius: c.day_celsius,
            night_celsius: c.night_celsius,
            hours,
        })
    }

    /// The same setpoint all week.
    pub fn constant(celsius: f64) -> Schedule {
        Schedule {
            day_celsius: celsius,
            night_celsius: celsius,
            hours: [(0, 24 * 60); 7],
        }
    }

    /// Whether `at` falls in the day period. A night start before the day start means the day
    /// runs over midnight (a night-shift household); equal times mean day all day.
    pub fn is_day(&self, at: NaiveDateTime) -> bool {
        let (day, night) = self.hours[at.weekday().num_days_from_monday() as usize];
        let m = at.hour() * 60 + at.minute();
        match day.cmp(&night) {
            std::cmp::Ordering::Less => (day..night).contains(&m),
            std::cmp::Ordering::Greater => m >= day || m < night,
            std::cmp::Ordering::Equal => true,
        }
    }

    pub fn setpoint_at(&self, at: NaiveDateTime) -> f64 {
        if self.is_day(at) {
            self.day_celsius
        } else {
            self.night_celsius
        }
    }
}

/// What the household asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Follow the weekly schedule.
    Auto,
    /// Hold this setpoint until `auto`.
    Manual { celsius: f64 },
    /// Full power until `until` (controller seconds), then back to `then`.
    Boost { until: f64, then: Box<Mode> },
    /// No heating until `set` or `auto`.
    Off,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Manual { .. } => "manual",
            Mode::Boost { .. } => "boost",
            Mode::Off => "off",
        }
    }
}

/// Tuning and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    pub hysteresis_k: f64,
    pub kp_per_k: f64,
    pub integral_secs: f64,
    pub min_slots: usize,
    /// Slots the power cap allows (≤ the worker's slots).
    pub max_slots: usize,
}

/// What the controller is handed each period.
#[derive(Clone, Debug)]
pub struct Input {
    /// Seconds since the controller started (room time), for boost expiry.
    pub now_secs: f64,
    /// Seconds since the previous step.
    pub dt_secs: f64,
    /// Local time, for the schedule.
    pub local: NaiveDateTime,
    /// The room temperature, or why there is no trustworthy one.
    pub room: Result<f64, String>,
}

/// What it decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub slots: usize,
    pub setpoint_celsius: f64,
    /// Heat demand, thousandths of full power.
    pub demand_permille: u16,
    /// One sentence for the household: why this many slots.
    pub reason: String,
    /// True when heating is held back because the reading cannot be trusted.
    pub fail_safe: bool,
}

#[derive(Clone, Debug)]
pub struct Controller {
    config: ControllerConfig,
    schedule: Schedule,
    mode: Mode,
    calling: bool,
    integral: f64,
    slots: usize,
}

impl Controller {
    pub fn new(config: ControllerConfig, schedule: Schedule) -> Controller {
        let min = config.min_slots.min(config.max_slots);
        Controller {
            config,
            schedule,
            mode: Mode::Auto,
            calling: false,
            integral: 0.0,
            slots: min,
        }
    }

    /// Starts the integral term at `demand` (0..1): a controller that takes over a room that
    /// was already being heated steadily, as after a restart, does not first let it cool.
    pub fn prime(&mut self, demand: f64) {
        self.integral = demand.clamp(0.0, 1.0);
        self.calling = true;
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn max_slots(&self) -> usize {
        self.config.max_slots
    }

    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Boost for `secs` from `now_secs`; a second boost extends from now and still returns to
    /// what was running before the first.
    pub fn boost(&mut self, now_secs: f64, secs: f64) {
        let then = match std::mem::replace(&mut self.mode, Mode::Auto) {
            Mode::Boost { then, .. } => then,
            other => Box::new(other),
        };
        self.mode = Mode::Boost {
            until: now_secs + secs,
            then,
        };
    }

    /// The setpoint the current mode aims at (during boost or off: the one it returns to).
    pub fn setpoint(&self, local: NaiveDateTime) -> f64 {
        fn of(mode: &Mode, schedule: &Schedule, local: NaiveDateTime) -> f64 {
            match mode {
                Mode::Manual { celsius } => *celsius,
                Mode::Boost { then, .. } => of(then, schedule, local),
                Mode::Auto | Mode::Off => schedule.setpoint_at(local),
            }
        }
        of(&self.mode, &self.schedule, local)
    }

    pub fn step(&mut self, input: &Input) -> Decision {
        if let Mode::Boost { until, then } = &self.mode {
            if input.now_secs >= *until {
                self.mode = (**then).clone();
            }
        }
        let setpoint = self.setpoint(input.local);
        let max = self.config.max_slots;
        let min = self.config.min_slots.min(max);
        if self.mode == Mode::Off {
            self.slots = 0;
            return Decision {
                slots: 0,
                setpoint_celsius: setpoint,
                demand_permille: 0,
                reason: "heating is off (`hearth heat auto` or `hearth heat set` turns it back on)"
                    .into(),
                fail_safe: false,
            };
        }
        let room = match &input.room {
            Ok(t) => *t,
            Err(why) => {
                // A sensor we cannot trust might be lying about a hot room: drop at once.
                self.slots = min;
                return Decision {
                    slots: min,
                    setpoint_celsius: setpoint,
                    demand_permille: 0,
                    reason: format!("{why}; heating held at the minimum of {min} slot(s)"),
                    fail_safe: true,
                };
            }
        };
        if room >= OVERHEAT_CELSIUS {
            self.slots = 0;
            return Decision {
                slots: 0,
                setpoint_celsius: setpoint,
                demand_permille: 0,
                reason: format!(
                    "the room is {room:.1} °C, at or above the overheat limit of \
                     {OVERHEAT_CELSIUS:.0} °C: no heating in any mode until it cools"
                ),
                fail_safe: false,
            };
        }
        let (target, demand, reason, immediate) = match &self.mode {
            Mode::Off => (0, 0.0, String::new(), true),
            Mode::Boost { until, .. } => {
                let left = ((until - input.now_secs) / 60.0).ceil().max(0.0);
                (
                    max,
                    1.0,
                    format!("boost: full power for {left:.0} more minute(s)"),
                    false,
                )
            }
            Mode::Auto | Mode::Manual { .. } => {
                let (target, demand, reason) = self.regulate(room, setpoint, input.dt_secs);
                (target.max(min), demand, reason, false)
            }
        };
        self.slots = if immediate || target == self.slots {
            target
        } else if target > self.slots {
            self.slots + 1
        } else {
            self.slots - 1
        };
        Decision {
            slots: self.slots,
            setpoint_celsius: setpoint,
            demand_permille: (demand * 1000.0).round().clamp(0.0, 1000.0) as u16,
            reason,
            fail_safe: false,
        }
    }

    /// Thermostat with hysteresis, then PI, then quantisation to slots.
    fn regulate(&mut self, room: f64, setpoint: f64, dt: f64) -> (usize, f64, String) {
        let c = &self.config;
        let error = setpoint - room;
        if room >= setpoint + c.hysteresis_k {
            self.calling = false;
        } else if room <= setpoint - c.hysteresis_k {
            self.calling = true;
        }
        if !self.calling {
            // The integral is kept: when the room calls again, the last steady demand is the
            // best first guess.
            return (
                0,
                0.0,
                format!(
                    "no heat needed: the room is {room:.1} °C for a setpoint of {setpoint:.1} °C"
                ),
            );
        }
        let proportional = c.kp_per_k * error;
        let unclamped = proportional + self.integral;
        // Anti-windup: the integral only moves when the output is not already pinned in the
        // direction the error pushes it.
        let pinned = (unclamped >= 1.0 && error > 0.0) || (unclamped <= 0.0 && error < 0.0);
        if !pinned {
            self.integral += c.kp_per_k * error * dt / c.integral_secs;
            self.integral = self.integral.clamp(0.0, 1.0);
        }
        let demand = (proportional + self.integral).clamp(0.0, 1.0);
        let wanted = demand * c.max_slots as f64;
        let current = self.slots as f64;
        let target = if (wanted - current).abs() > 0.5 + SLOT_DEAD_BAND {
            wanted.round() as usize
        } else {
            self.slots
        };
        (
            target.min(c.max_slots),
            demand,
            format!("heating: the room is {room:.1} °C for a setpoint of {setpoint:.1} °C"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
        // 2024-01-01 was a Monday.
        NaiveDate::from_ymd_opt(2024, 1, day)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .expect("valid test date")
    }

    #[test]
    fn schedule_day_night_and_weekday_override() {
        let c = ScheduleConfig {
            sat: Some(DayHours {
                day_start: Some("08:30".into()),
                night_start: None,
            }),
            ..ScheduleConfig::default()
        };
        let s = Schedule::from_config(&c).unwrap();
        assert_eq!(s.setpoint_at(at(1, 6, 59)), 16.0);
        assert_eq!(s.setpoint_at(at(1, 7, 0)), 19.0);
        assert_eq!(s.setpoint_at(at(1, 21, 59)), 19.0);
        assert_eq!(s.setpoint_at(at(1, 22, 0)), 16.0);
        // Saturday 6 January: the day starts later.
        assert_eq!(s.setpoint_at(at(6, 8, 0)), 16.0);
        assert_eq!(s.setpoint_at(at(6, 8, 30)), 19.0);
        assert_eq!(s.setpoint_at(at(6, 22, 0)), 16.0);
    }

    #[test]
    fn schedule_over_midnight_and_bad_times() {
        let c = ScheduleConfig {
            day_start: "22:00".into(),
            night_start: "06:00".into(),
            ..ScheduleConfig::default()
        };
        let s = Schedule::from_config(&c).unwrap();
        assert!(s.is_day(at(2, 23, 0)));
        assert!(s.is_day(at(2, 5, 59)));
        assert!(!s.is_day(at(2, 12, 0)));
        for bad in ["7", "25:00", "07:60", "seven", "24:01"] {
            let c = ScheduleConfig {
                day_start: bad.into(),
                ..ScheduleConfig::default()
            };
            let err = Schedule::from_config(&c).unwrap_err().to_string();
            assert!(err.contains("heat.schedule.day_start"), "{err}");
        }
    }
}
