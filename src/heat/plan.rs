//! The planning controller: moves the thermostat's aim within a comfort band the household
//! sets, so that heat is drawn before an expensive or high-carbon period and not during it.
//!
//! Pure like [`super::controller`]: handed the grid ([`Grid`]), the local time and the
//! thermostat's hysteresis, it answers an offset to add to the setpoint and one sentence why.
//! The PI controller then does the heating; the planner never commands slots itself, so every
//! safety rule of the controller (off, fail-safe, overheat) still holds.
//!
//! - Before an expensive period (within `preheat_hours`): aim at setpoint + band − h − margin
//!   with a narrow dead band h, so the room stores heat but does not pass setpoint + band.
//! - During it: aim at setpoint − band + h + margin, so the radiator coasts until the room
//!   nears setpoint − band (the thermostat calls below aim − h) and then holds it there.
//! - No grid configured, or a signal that is missing or stale: offset 0, the plain
//!   thermostat, and the reason says why.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::grid::{Grid, Period};
use super::HeatError;

/// Step of the look-ahead scan, minutes: tariffs and signals change on quarter hours.
const SCAN_MINUTES: i64 = 5;
/// Longest expensive stretch looked for, hours (its end is shown to the household).
const MAX_STRETCH_HOURS: i64 = 24;
/// The thermostat's dead band half-width while pre-heating or coasting, K (at most the
/// configured one): narrow, so the room uses the whole comfort band.
pub const PLAN_HYSTERESIS_K: f64 = 0.1;
/// Kept between the dead band and the band's edges, K: when the room calls again after
/// coasting the slots ramp up one per period while the room still cools (~0.1 K in the default
/// room), and they ramp down as slowly when pre-heating stops.
const MARGIN_K: f64 = 0.1;

/// The `[heat.plan]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// Comfort band, K: the room may be pre-heated up to setpoint + band and may coast down to
    /// setpoint − band. 0 turns planning off. Default 1.0.
    pub band_k: f64,
    /// How long before an expensive period pre-heating starts, hours. Default 6: on the
    /// coldest night the default simulated radiator has only ~150 W to spare over the room's
    /// loss, which warms it ~0.2 K an hour.
    pub preheat_hours: f64,
    /// Work leased ahead while heat is wanted, minutes of every running slot: a gap in the
    /// work on offer shorter than this does not stop the heating. 0 leases nothing ahead.
    /// Default 30.
    pub lease_ahead_minutes: f64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            band_k: 1.0,
            preheat_hours: 6.0,
            lease_ahead_minutes: 30.0,
        }
    }
}

impl PlanConfig {
    pub fn validate(&self) -> Result<(), HeatError> {
        let bad = |field, reason: &str| {
            Err(HeatError::Config {
                field,
                reason: reason.into(),
            })
        };
        if !(self.band_k.is_finite() && (0.0..=3.0).contains(&self.band_k)) {
            return bad("heat.plan.band_k", "must be between 0 and 3 K");
        }
        if !(self.preheat_hours.is_finite() && (0.0..=24.0).contains(&self.preheat_hours)) {
            return bad("heat.plan.preheat_hours", "must be between 0 and 24 hours");
        }
        if !(self.lease_ahead_minutes.is_finite()
            && (0.0..=240.0).contains(&self.lease_ahead_minutes))
        {
            return bad(
                "heat.plan.lease_ahead_minutes",
                "must be between 0 and 240 minutes",
            );
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No usable grid signal: the plain thermostat.
    Plain,
    /// Cheap now, nothing expensive soon: hold the setpoint.
    Normal,
    /// Storing heat before an expensive period.
    Preheat,
    /// Drawing on the stored heat during an expensive period.
    Coast,
}

/// What the planner decided, for the controller and for `hearth heat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub phase: Phase,
    /// Added to the setpoint the controller aims at, K.
    pub offset_k: f64,
    /// The thermostat's dead band while this plan holds (`None`: the configured one).
    #[serde(default)]
    pub hysteresis_k: Option<f64>,
    /// The grid now, if known.
    pub period: Option<Period>,
    /// Start of the coming expensive period (pre-heat) or end of this one (coast), local
    /// `YYYY-MM-DD HH:MM`.
    pub until: Option<String>,
    /// One sentence for the household.
    pub reason: String,
}

fn hhmm(t: NaiveDateTime) -> String {
    t.format("%a %H:%M").to_string()
}

/// The plan at `now`.
pub fn plan(
    config: &PlanConfig,
    grid: Option<&Grid>,
    hysteresis_k: f64,
    now: NaiveDateTime,
) -> Plan {
    let plain = |reason: String, period: Option<Period>| Plan {
        phase: Phase::Plain,
        offset_k: 0.0,
        hysteresis_k: None,
        period,
        until: None,
        reason,
    };
    let Some(grid) = grid else {
        return plain(
            "no tariff or grid signal configured: plain thermostat".into(),
            None,
        );
    };
    let period = match grid.at(now) {
        Ok(p) => p,
        Err(why) => return plain(format!("{why}: plain thermostat until it is back"), None),
    };
    if config.band_k <= 0.0 {
        return plain(
            format!("{}; planning off (heat.plan.band_k = 0)", period.label),
            Some(period),
        );
    }
    // The aims stay inside the band by the dead band and the margin.
    let h = hysteresis_k.min(PLAN_HYSTERESIS_K);
    let reach = (config.band_k - h - MARGIN_K).max(0.0);
    let step = chrono::Duration::minutes(SCAN_MINUTES);
    if period.expensive {
        let mut end = now;
        let last = now + chrono::Duration::hours(MAX_STRETCH_HOURS);
        while end < last && grid.at(end).is_ok_and(|p| p.expensive) {
            end += step;
        }
        return Plan {
            phase: Phase::Coast,
            offset_k: -reach,
            hysteresis_k: Some(h),
            reason: format!(
                "{} ({:.2}/kWh, {:.0} g CO2/kWh): coasting on stored heat until {}; the room \
                 may fall to {:.1} K below the setpoint",
                period.label,
                period.price_per_kwh,
                period.g_co2_per_kwh,
                hhmm(end),
                config.band_k
            ),
            until: Some(end.format("%Y-%m-%d %H:%M").to_string()),
            period: Some(period),
        };
    }
    let horizon = now + chrono::Duration::seconds((config.preheat_hours * 3600.0) as i64);
    let mut t = now + step;
    while t <= horizon {
        match grid.at(t) {
            Ok(p) if p.expensive => {
                return Plan {
                    phase: Phase::Preheat,
                    offset_k: reach,
                    hysteresis_k: Some(h),
                    reason: format!(
                        "{} now; pre-heating up to {:.1} K above the setpoint before the {} \
                         at {}",
                        period.label,
                        config.band_k,
                        p.label,
                        hhmm(t)
                    ),
                    until: Some(t.format("%Y-%m-%d %H:%M").to_string()),
                    period: Some(period),
                };
            }
            Ok(_) => t += step,
            // The forecast ends: plan only as far as it reaches.
            Err(_) => break,
        }
    }
    Plan {
        phase: Phase::Normal,
        offset_k: 0.0,
        hysteresis_k: None,
        reason: format!(
            "{} ({:.2}/kWh): nothing expensive in the next {:.0} h",
            period.label, period.price_per_kwh, config.preheat_hours
        ),
        until: None,
        period: Some(period),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heat::grid::{Series, Tariff, TariffConfig};
    use chrono::NaiveDate;

    fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 1, day)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .unwrap()
    }

    fn red_wednesday() -> Grid {
        let mut c = TariffConfig {
            peak: vec!["07:00-10:00".into(), "17:00-20:00".into()],
            ..TariffConfig::default()
        };
        c.days.insert("wed".into(), "red".into());
        Grid::Tariff(Tariff::new(&c).unwrap())
    }

    #[test]
    fn preheats_before_coasts_during_and_holds_otherwise() {
        let g = red_wednesday();
        let cfg = PlanConfig::default();
        // Tuesday noon: nothing expensive within 6 h.
        let p = plan(&cfg, Some(&g), 0.3, at(2, 12, 0));
        assert_eq!((p.phase, p.offset_k), (Phase::Normal, 0.0));
        // Wednesday 04:00: the red peak at 07:00 is 3 h away.
        let p = plan(&cfg, Some(&g), 0.3, at(3, 4, 0));
        assert_eq!(p.phase, Phase::Preheat);
        assert!((p.offset_k - 0.8).abs() < 1e-9);
        assert_eq!(p.hysteresis_k, Some(0.1));
        assert!(p.reason.contains("Wed 07:00"), "{}", p.reason);
        // 08:00: coasting until 10:00, the aim inside the band.
        let p = plan(&cfg, Some(&g), 0.3, at(3, 8, 0));
        assert_eq!(p.phase, Phase::Coast);
        assert!((p.offset_k + 0.8).abs() < 1e-9);
        assert!(p.reason.contains("until Wed 10:00"), "{}", p.reason);
        // Band 0: planning off, says so.
        let off = PlanConfig {
            band_k: 0.0,
            ..cfg.clone()
        };
        let p = plan(&off, Some(&g), 0.3, at(3, 8, 0));
        assert_eq!((p.phase, p.offset_k), (Phase::Plain, 0.0));
        assert!(p.reason.contains("band_k = 0"));
        // A band narrower than the dead band and margin cannot move the aim.
        let narrow = PlanConfig { band_k: 0.2, ..cfg };
        assert_eq!(plan(&narrow, Some(&g), 0.3, at(3, 8, 0)).offset_k, 0.0);
    }

    #[test]
    fn missing_or_stale_signal_falls_back_and_says_why() {
        let cfg = PlanConfig::default();
        let p = plan(&cfg, None, 0.3, at(3, 8, 0));
        assert_eq!(p.phase, Phase::Plain);
        assert!(p.reason.contains("no tariff"));
        let s =
            Series::parse("# expensive_price=0.4 period_minutes=60\n2024-01-03T07:00,0.65,100\n")
                .unwrap();
        let g = Grid::Series(s);
        let p = plan(&cfg, Some(&g), 0.3, at(3, 7, 30));
        assert_eq!(p.phase, Phase::Coast);
        let p = plan(&cfg, Some(&g), 0.3, at(3, 9, 0));
        assert_eq!(p.phase, Phase::Plain);
        assert!(p.reason.contains("ran out"), "{}", p.reason);
        let p = plan(&cfg, Some(&g), 0.3, at(3, 6, 0));
        assert!(p.reason.contains("starts later"), "{}", p.reason);
    }
}
