//! A one-node thermal model of a room and a winter day's outdoor temperature.
//!
//! C·dT/dt = P − (T − T_out)/R: the radiator's electrical power P all ends up as heat in the
//! room (a computer is a perfect resistive heater), and the room loses heat to outdoors through
//! one lumped resistance R. One node is enough for a thermostat: the controller sees the slow
//! mode of the room (hours), which is what it has to hold. Pure arithmetic; no clock, no I/O.

use super::config::SimulatedConfig;

/// Outdoor temperature over a day: coldest at 05:00, warmest at 15:00, joined by half cosines
/// (10 h rising, 14 h falling), which is the shape of a clear winter day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutdoorProfile {
    pub min_celsius: f64,
    pub max_celsius: f64,
}

const COLDEST_HOUR: f64 = 5.0;
const WARMEST_HOUR: f64 = 15.0;

impl OutdoorProfile {
    /// Outdoor temperature at `secs_of_day` seconds after local midnight (wraps).
    pub fn at(&self, secs_of_day: f64) -> f64 {
        let h = (secs_of_day / 3600.0).rem_euclid(24.0);
        let mid = (self.min_celsius + self.max_celsius) / 2.0;
        let amp = (self.max_celsius - self.min_celsius) / 2.0;
        // Phase 0 at the coldest hour, π at the warmest, 2π at the next coldest.
        let phase = if (COLDEST_HOUR..WARMEST_HOUR).contains(&h) {
            std::f64::consts::PI * (h - COLDEST_HOUR) / (WARMEST_HOUR - COLDEST_HOUR)
        } else {
            let since_warmest = (h - WARMEST_HOUR).rem_euclid(24.0);
            std::f64::consts::PI * (1.0 + since_warmest / (24.0 - (WARMEST_HOUR - COLDEST_HOUR)))
        };
        mid - amp * phase.cos()
    }
}

/// The room's state and constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Room {
    /// Room temperature, °C.
    pub celsius: f64,
    /// Heat capacity, J/K.
    pub capacity_j_per_k: f64,
    /// Resistance to outdoors, K/W.
    pub resistance_k_per_w: f64,
}

/// Longest single integration step. The room's time constant R·C is many hours, so explicit
/// Euler with one-minute steps is accurate to far better than a sensor's 0.1 K.
const MAX_STEP_SECS: f64 = 60.0;

impl Room {
    pub fn new(config: &SimulatedConfig, initial_celsius: f64) -> Room {
        Room {
            celsius: initial_celsius,
            capacity_j_per_k: config.capacity_j_per_k,
            resistance_k_per_w: config.resistance_k_per_w,
        }
    }

    /// Advances the room by `secs` seconds with `watts` of heating and `outdoor` °C outside.
    pub fn step(&mut self, secs: f64, watts: f64, outdoor: f64) {
        let mut left = secs.max(0.0);
        while left > 0.0 {
            let dt = left.min(MAX_STEP_SECS);
            let loss = (self.celsius - outdoor) / self.resistance_k_per_w;
            self.celsius += dt * (watts - loss) / self.capacity_j_per_k;
            left -= dt;
        }
    }

    /// Power that holds the room at `celsius` with `outdoor` outside, in watts.
    pub fn steady_watts(&self, celsius: f64, outdoor: f64) -> f64 {
        ((celsius - outdoor) / self.resistance_k_per_w).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outdoor_profile_extremes_and_continuity() {
        let p = OutdoorProfile {
            min_celsius: -2.0,
            max_celsius: 6.0,
        };
        assert!((p.at(5.0 * 3600.0) + 2.0).abs() < 1e-9);
        assert!((p.at(15.0 * 3600.0) - 6.0).abs() < 1e-9);
        let mut prev = p.at(0.0);
        for m in 1..=(24 * 60) {
            let t = p.at(m as f64 * 60.0);
            assert!((t - prev).abs() < 0.05, "jump at minute {m}");
            assert!((-2.0..=6.0).contains(&t));
            prev = t;
        }
    }

    #[test]
    fn room_relaxes_to_steady_state() {
        let mut room = Room::new(&SimulatedConfig::default(), 10.0);
        let watts = room.steady_watts(19.0, 0.0);
        assert!((watts - 950.0).abs() < 1e-9);
        room.step(30.0 * 24.0 * 3600.0, watts, 0.0);
        assert!((room.celsius - 19.0).abs() < 0.01, "{}", room.celsius);
    }
}
