//! The `[heat]` section of `hearth.toml`: where the room temperature comes from, the weekly
//! schedule, the controller's tuning and the radiator's power figures.
//!
//! Every field documents its default; a section left out of `hearth.toml` gives a radiator that
//! heats a *simulated* room, so a fresh install shows something sensible before a thermostat is
//! connected. [`HeatConfig::validate`] turns nonsense (a negative power, a night that starts at
//! 25:00) into a message naming the field. This module only describes; it reads nothing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::controller::{Controller, ControllerConfig, Schedule};
use super::HeatError;

/// Where the room temperature comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A model of a 20 m² room heated by this radiator (see `[heat.simulated]`). Default.
    #[default]
    Simulated,
    /// A file holding the temperature in °C, rewritten by a sensor script (`[heat.file]`).
    File,
    /// Home automation pushes the temperature to `PUT /v1/heat/temperature`.
    Http,
    /// An MQTT topic as Home Assistant or Zigbee2MQTT publish it (`[heat.mqtt]`).
    Mqtt,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Simulated => "simulated",
            SourceKind::File => "file",
            SourceKind::Http => "http",
            SourceKind::Mqtt => "mqtt",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeatConfig {
    /// `simulated` (default), `file`, `http` or `mqtt`.
    pub source: SourceKind,
    /// How often the controller reads the room and adjusts the slots, in seconds of room time.
    /// Default 60. At most one slot is added or removed per period.
    pub period_secs: u64,
    /// A reading older than this many seconds is stale and the radiator stops heating beyond
    /// `min_slots`. Default 600 (10 minutes; Zigbee sensors report at least every 5 minutes).
    pub max_age_secs: u64,
    /// Lowest plausible room temperature in °C; anything colder is a broken sensor. Default -30.
    pub min_plausible_celsius: f64,
    /// Highest plausible room temperature in °C. Default 60.
    pub max_plausible_celsius: f64,
    /// Slots kept running whatever the room says, even when the sensor fails. Default 0.
    pub min_slots: usize,
    /// Half-width of the thermostat's dead band in kelvin: heating stops above setpoint + this
    /// and calls again below setpoint − this. Default 0.3.
    pub hysteresis_k: f64,
    /// Proportional gain: fraction of full power per kelvin of error. Default 1.0.
    pub kp_per_k: f64,
    /// Integral time in seconds: how long a constant error takes to add another `kp` of
    /// power. Default 3600.
    pub integral_secs: f64,
    /// Electrical power cap in watts; slots that would exceed it are not started. Default: none.
    pub power_cap_watts: Option<f64>,
    /// Power the computer draws doing nothing, in watts. Default 40.
    pub idle_watts: f64,
    /// Power one busy worker slot adds, in watts, for the estimate when RAPL is unreadable.
    /// Default 15 (one desktop core at full load, as `WorkerConfig::watts_per_core`).
    pub watts_per_slot: f64,
    /// Root of the powercap tree holding RAPL counters. Default `/sys/class/powercap`.
    pub rapl_root: PathBuf,
    /// The weekly schedule.
    pub schedule: ScheduleConfig,
    /// The simulated room (used when `source = "simulated"`).
    pub simulated: SimulatedConfig,
    /// The file source (used when `source = "file"`).
    pub file: FileConfig,
    /// The MQTT source (used when `source = "mqtt"`).
    pub mqtt: MqttConfig,
    /// A tariff schedule (`[heat.tariff]`): peak hours and day colours with their prices.
    /// Default none: the plain thermostat, unless `[heat.signal]` gives a signal.
    pub tariff: Option<super::grid::TariffConfig>,
    /// Where a price or carbon-intensity signal comes from (`[heat.signal]`); it replaces the
    /// tariff when both are set. Default none.
    pub signal: SignalConfig,
    /// The planning controller's comfort band and lease-ahead (`[heat.plan]`).
    pub plan: super::plan::PlanConfig,
}

/// Where a grid signal (price or carbon-intensity forecast) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignalSource {
    /// No signal: the tariff, if any, alone plans. Default.
    #[default]
    None,
    /// A CSV file rewritten by a script (see `docs/heat.md`), re-read every control period.
    File,
    /// Home automation pushes a forecast to `PUT /v1/heat/signal`.
    Http,
    /// An MQTT topic, e.g. a Home Assistant sensor's state (`topic`), on the broker of
    /// `[heat.mqtt]`: a bare number (the current price or intensity, see `value`) or a JSON
    /// forecast in the body format of `PUT /v1/heat/signal`.
    Mqtt,
}

/// What a bare number on the MQTT signal topic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignalValue {
    /// Carbon intensity, g CO2/kWh (RTE éCO2mix, the UK Carbon Intensity API, Electricity
    /// Maps). Default.
    #[default]
    Carbon,
    /// Price, currency per kWh (a dynamic tariff's sensor).
    Price,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalConfig {
    /// `none` (default), `file`, `http` or `mqtt`.
    pub source: SignalSource,
    /// The CSV file for `source = "file"`. Default `/run/hearth/grid-signal.csv`.
    pub path: PathBuf,
    /// The topic for `source = "mqtt"`, on the broker of `[heat.mqtt]` (host, port, user).
    /// Default `homeassistant/sensor/grid_carbon_intensity/state` (Home Assistant's MQTT
    /// statestream of a sensor named `grid_carbon_intensity`).
    pub topic: String,
    /// What a bare number on `topic` is: `carbon` (g CO2/kWh, default) or `price`.
    pub value: SignalValue,
    /// A current value at or above this price is expensive (`value = "price"`; a JSON
    /// forecast without its own thresholds uses these too). Default none.
    pub expensive_price: Option<f64>,
    /// A current value at or above this intensity, g CO2/kWh, is expensive
    /// (`value = "carbon"`). Default none.
    pub expensive_g_co2_per_kwh: Option<f64>,
    /// How long one current value holds, minutes: with no newer message by then the signal is
    /// stale and the plain thermostat runs. Set it above the sensor's update interval (Home
    /// Assistant publishes on change only). Default 60, at most 1440.
    pub hold_minutes: u32,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            source: SignalSource::None,
            path: PathBuf::from("/run/hearth/grid-signal.csv"),
            topic: "homeassistant/sensor/grid_carbon_intensity/state".into(),
            value: SignalValue::Carbon,
            expensive_price: None,
            expensive_g_co2_per_kwh: None,
            hold_minutes: 60,
        }
    }
}

impl SignalConfig {
    fn validate(&self) -> Result<(), HeatError> {
        let bad = |field, reason: &str| {
            Err(HeatError::Config {
                field,
                reason: reason.into(),
            })
        };
        for (field, v) in [
            ("heat.signal.expensive_price", self.expensive_price),
            (
                "heat.signal.expensive_g_co2_per_kwh",
                self.expensive_g_co2_per_kwh,
            ),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && (0.0..=10_000.0).contains(&v))) {
                return bad(field, "must be between 0 and 10000");
            }
        }
        if self.source != SignalSource::Mqtt {
            return Ok(());
        }
        if self.topic.trim().is_empty() {
            return bad("heat.signal.topic", "must name the topic the signal is on");
        }
        if !(1..=24 * 60).contains(&self.hold_minutes) {
            return bad("heat.signal.hold_minutes", "must be 1 to 1440 minutes");
        }
        match self.value {
            SignalValue::Carbon if self.expensive_g_co2_per_kwh.is_none() => bad(
                "heat.signal.expensive_g_co2_per_kwh",
                "say from which carbon intensity a period is expensive (value = \"carbon\")",
            ),
            SignalValue::Price if self.expensive_price.is_none() => bad(
                "heat.signal.expensive_price",
                "say from which price a period is expensive (value = \"price\")",
            ),
            _ => Ok(()),
        }
    }
}

impl Default for HeatConfig {
    fn default() -> Self {
        HeatConfig {
            source: SourceKind::Simulated,
            period_secs: 60,
            max_age_secs: 600,
            min_plausible_celsius: -30.0,
            max_plausible_celsius: 60.0,
            min_slots: 0,
            hysteresis_k: 0.3,
            kp_per_k: 1.0,
            integral_secs: 3600.0,
            power_cap_watts: None,
            idle_watts: 40.0,
            watts_per_slot: 15.0,
            rapl_root: PathBuf::from("/sys/class/powercap"),
            schedule: ScheduleConfig::default(),
            simulated: SimulatedConfig::default(),
            file: FileConfig::default(),
            mqtt: MqttConfig::default(),
            tariff: None,
            signal: SignalConfig::default(),
            plan: super::plan::PlanConfig::default(),
        }
    }
}

/// Day and night setpoints and the hours between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Setpoint during the day, °C. Default 19 (the usual advice for living rooms).
    pub day_celsius: f64,
    /// Setpoint at night, °C. Default 16.
    pub night_celsius: f64,
    /// When the day setpoint starts, `HH:MM` local time. Default `"07:00"`.
    pub day_start: String,
    /// When the night setpoint starts, `HH:MM` local time. Default `"22:00"`.
    pub night_start: String,
    /// Different hours on some weekdays, e.g. `[heat.schedule.sat] day_start = "08:30"`.
    /// Default: every day the same.
    pub mon: Option<DayHours>,
    pub tue: Option<DayHours>,
    pub wed: Option<DayHours>,
    pub thu: Option<DayHours>,
    pub fri: Option<DayHours>,
    pub sat: Option<DayHours>,
    pub sun: Option<DayHours>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            day_celsius: 19.0,
            night_celsius: 16.0,
            day_start: "07:00".into(),
            night_start: "22:00".into(),
            mon: None,
            tue: None,
            wed: None,
            thu: None,
            fri: None,
            sat: None,
            sun: None,
        }
    }
}

/// One weekday's own hours; a field left out takes the schedule's general value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DayHours {
    pub day_start: Option<String>,
    pub night_start: Option<String>,
}

/// The simulated room: C·dT/dt = P − (T − T_out)/R. `docs/heat.md` justifies the numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Heat capacity in J/K: the air plus the share of furniture, floor and inner wall layers
    /// that warms within hours. Default 3.0e6 for a 20 m² room.
    pub capacity_j_per_k: f64,
    /// Thermal resistance to outdoors in K/W (walls, window and ventilation together).
    /// Default 0.02, i.e. 50 W lost per kelvin: an older, moderately insulated 20 m² room.
    pub resistance_k_per_w: f64,
    /// Full electrical power of the simulated radiator with every slot busy, in W. Each slot
    /// stands for (this − idle_watts) / max_slots. Default 1200: a radiator sized for the room
    /// on the coldest night (21 K × 50 W/K = 1050 W), whatever the host machine's core count.
    pub radiator_watts: f64,
    /// Coldest outdoor temperature of the day (at 05:00), °C. Default -2.
    pub outdoor_min_celsius: f64,
    /// Warmest outdoor temperature of the day (at 15:00), °C. Default 6.
    pub outdoor_max_celsius: f64,
    /// Room temperature at start, °C. Default: 3 K below the setpoint at start for a running
    /// radiator (a room whose radiator was off); the setpoint itself for `hearth heat simulate`.
    pub initial_celsius: Option<f64>,
    /// Seconds of room time per second of real time, for demos. Default 1.
    pub acceleration: f64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig {
            capacity_j_per_k: 3.0e6,
            resistance_k_per_w: 0.02,
            radiator_watts: 1200.0,
            outdoor_min_celsius: -2.0,
            outdoor_max_celsius: 6.0,
            initial_celsius: None,
            acceleration: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// File holding the room temperature in °C (a bare number, or JSON with a `temperature`
    /// field). Its modification time is the reading's age. Default
    /// `/run/hearth/room-temperature`.
    pub path: PathBuf,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: PathBuf::from("/run/hearth/room-temperature"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host. Default `127.0.0.1`.
    pub host: String,
    /// Broker port. Default 1883.
    pub port: u16,
    /// Topic carrying the temperature. Default `zigbee2mqtt/living_room_sensor` (Zigbee2MQTT
    /// publishes JSON with a `temperature` field; Home Assistant statestream a bare number).
    pub topic: String,
    /// Client id. Default `hearth-heat`.
    pub client_id: String,
    /// User name, if the broker wants one. Default none.
    pub username: Option<String>,
    /// Password for `username`. Default none.
    pub password: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            topic: "zigbee2mqtt/living_room_sensor".into(),
            client_id: "hearth-heat".into(),
            username: None,
            password: None,
        }
    }
}

/// Commented `[heat]` lines for the template `hearth init` writes; the lead appends it to
/// `config::TEMPLATE`. Every line is a comment, so the defaults stay the single source of truth.
pub const TEMPLATE: &str = r#"
[heat]
# Where the room temperature comes from: "simulated", "file", "http" or "mqtt".
# source = "simulated"
# Control period in seconds; at most one worker slot is added or removed per period.
# period_secs = 60
# Readings older than this (seconds), or outside the plausible range, stop the heating.
# max_age_secs = 600
# min_plausible_celsius = -30.0
# max_plausible_celsius = 60.0
# Slots kept running even when the sensor fails.
# min_slots = 0
# hysteresis_k = 0.3
# power_cap_watts = 400.0
# idle_watts = 40.0
# watts_per_slot = 15.0

[heat.schedule]
# day_celsius = 19.0
# night_celsius = 16.0
# day_start = "07:00"
# night_start = "22:00"
# [heat.schedule.sat]
# day_start = "08:30"

[heat.file]
# path = "/run/hearth/room-temperature"

# Grid-aware heating (docs/heat.md): pre-heat before expensive hours, coast through them.
# [heat.tariff]
# peak = ["06:00-22:00"]
# default_colour = "blue"
# expensive_price = 0.40
# [heat.tariff.days]
# "2024-01-10" = "red"
# [heat.signal]
# source = "file"            # or "http": PUT /v1/heat/signal; or "mqtt" (broker of [heat.mqtt])
# path = "/run/hearth/grid-signal.csv"
# topic = "homeassistant/sensor/grid_carbon_intensity/state"
# value = "carbon"           # a bare number is g CO2/kWh; or "price"
# expensive_g_co2_per_kwh = 200.0
# hold_minutes = 60
# [heat.plan]
# band_k = 1.0
# preheat_hours = 4.0
# lease_ahead_minutes = 30.0

[heat.mqtt]
# host = "127.0.0.1"
# port = 1883
# topic = "zigbee2mqtt/living_room_sensor"
"#;

fn positive(field: &'static str, v: f64) -> Result<(), HeatError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(HeatError::Config {
            field,
            reason: format!("must be a positive number, not {v}"),
        })
    }
}

fn non_negative(field: &'static str, v: f64) -> Result<(), HeatError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(HeatError::Config {
            field,
            reason: format!("must be zero or more, not {v}"),
        })
    }
}

fn temperature(field: &'static str, v: f64) -> Result<(), HeatError> {
    if v.is_finite() && (-50.0..=60.0).contains(&v) {
        Ok(())
    } else {
        Err(HeatError::Config {
            field,
            reason: format!("{v} °C is not a temperature a room or a winter day can have"),
        })
    }
}

impl HeatConfig {
    /// The controller for a radiator of `max_slots` slots drawing `watts_per_slot` each:
    /// the power cap, if any, lowers the slots it may use.
    pub fn controller(
        &self,
        max_slots: usize,
        watts_per_slot: f64,
        schedule: Schedule,
    ) -> Controller {
        let cap_slots = self
            .power_cap_watts
            .map(|cap| ((cap - self.idle_watts) / watts_per_slot).floor().max(0.0) as usize)
            .unwrap_or(max_slots)
            .min(max_slots);
        Controller::new(
            ControllerConfig {
                hysteresis_k: self.hysteresis_k,
                kp_per_k: self.kp_per_k,
                integral_secs: self.integral_secs,
                min_slots: self.min_slots,
                max_slots: cap_slots,
            },
            schedule,
        )
    }

    /// Checks every number and time of day; the error names the field.
    pub fn validate(&self) -> Result<(), HeatError> {
        if !(1..=3600).contains(&self.period_secs) {
            return Err(HeatError::Config {
                field: "heat.period_secs",
                reason: "must be between 1 and 3600 seconds".into(),
            });
        }
        if self.max_age_secs == 0 {
            return Err(HeatError::Config {
                field: "heat.max_age_secs",
                reason: "must be at least 1 second".into(),
            });
        }
        temperature("heat.min_plausible_celsius", self.min_plausible_celsius)?;
        temperature("heat.max_plausible_celsius", self.max_plausible_celsius)?;
        if self.min_plausible_celsius >= self.max_plausible_celsius {
            return Err(HeatError::Config {
                field: "heat.min_plausible_celsius",
                reason: "must be below heat.max_plausible_celsius".into(),
            });
        }
        non_negative("heat.hysteresis_k", self.hysteresis_k)?;
        if self.hysteresis_k > 5.0 {
            return Err(HeatError::Config {
                field: "heat.hysteresis_k",
                reason: "more than 5 K would let the room swing by 10 K".into(),
            });
        }
        positive("heat.kp_per_k", self.kp_per_k)?;
        positive("heat.integral_secs", self.integral_secs)?;
        if let Some(cap) = self.power_cap_watts {
            positive("heat.power_cap_watts", cap)?;
        }
        non_negative("heat.idle_watts", self.idle_watts)?;
        positive("heat.watts_per_slot", self.watts_per_slot)?;
        let s = &self.schedule;
        temperature("heat.schedule.day_celsius", s.day_celsius)?;
        temperature("heat.schedule.night_celsius", s.night_celsius)?;
        super::controller::Schedule::from_config(s)?;
        let sim = &self.simulated;
        positive("heat.simulated.capacity_j_per_k", sim.capacity_j_per_k)?;
        positive("heat.simulated.resistance_k_per_w", sim.resistance_k_per_w)?;
        positive("heat.simulated.radiator_watts", sim.radiator_watts)?;
        if sim.radiator_watts <= self.idle_watts {
            return Err(HeatError::Config {
                field: "heat.simulated.radiator_watts",
                reason: "must be more than heat.idle_watts".into(),
            });
        }
        temperature(
            "heat.simulated.outdoor_min_celsius",
            sim.outdoor_min_celsius,
        )?;
        temperature(
            "heat.simulated.outdoor_max_celsius",
            sim.outdoor_max_celsius,
        )?;
        if sim.outdoor_min_celsius > sim.outdoor_max_celsius {
            return Err(HeatError::Config {
                field: "heat.simulated.outdoor_min_celsius",
                reason: "must not be above heat.simulated.outdoor_max_celsius".into(),
            });
        }
        if let Some(t) = sim.initial_celsius {
            temperature("heat.simulated.initial_celsius", t)?;
        }
        if !(sim.acceleration.is_finite() && (1.0..=100_000.0).contains(&sim.acceleration)) {
            return Err(HeatError::Config {
                field: "heat.simulated.acceleration",
                reason: "must be between 1 and 100000".into(),
            });
        }
        if let Some(t) = &self.tariff {
            super::grid::Tariff::new(t)?;
        }
        self.plan.validate()?;
        self.signal.validate()?;
        if self.source == SourceKind::Mqtt && self.mqtt.topic.is_empty() {
            return Err(HeatError::Config {
                field: "heat.mqtt.topic",
                reason: "must name the topic the thermostat publishes on".into(),
            });
        }
        Ok(())
    }
}
