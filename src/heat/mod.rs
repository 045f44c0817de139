//! Heat: decides how many worker slots run so that the room reaches its setpoint, and meters
//! the energy the work costs.
//!
//! ```text
//! source (simulated room | file | HTTP push | MQTT) ──reading──▶ controller ──slots──▶ worker
//! tariff | grid signal (file | HTTP push | MQTT) ──▶ planner ──aim──▶ ┘   │
//!                                      energy meter (RAPL | CPU estimate | simulated) ◀─┘
//! ```
//!
//! - [`config`]: the `[heat]` section of `hearth.toml`.
//! - [`room`]: the simulated room and a winter day's outdoor temperature.
//! - [`controller`]: schedule, household overrides, hysteresis, PI, slot ramp. Pure.
//! - [`grid`]: tariffs (peak hours, Tempo day colours) and price/carbon signals. Pure.
//! - [`signal`]: the grid signal's MQTT message format. Pure.
//! - [`plan`]: the planning controller: pre-heat before expensive periods, coast through. Pure.
//! - [`payload`]: parsing what thermostats send.
//! - [`source`]: trusting readings; the file source; the MQTT subscribers (room
//!   temperature, grid signal).
//! - [`energy`]: the energy meter the worker charges shards with.
//! - [`service`]: the live actor ([`spawn`]) and its cloneable [`HeatHandle`].
//! - [`api`]: the `/v1/heat` HTTP routes, served by the node's API.
//! - [`sim`], [`plot`]: the offline day simulation behind `hearth heat simulate`.
//!
//! A leaf: this module knows nothing of the network, jobs or the ledger. It hands out a slot
//! count through a `watch` channel and energy figures through [`EnergyMeter`]; the node wires
//! them to the worker. `docs/heat.md` describes the model, the defaults and the failure
//! behaviour for households.

// Without the `node` feature only the payload parsers are built (for the fuzz targets).
#[cfg(feature = "node")]
pub mod api;
#[cfg(feature = "node")]
pub mod config;
#[cfg(feature = "node")]
pub mod controller;
#[cfg(feature = "node")]
pub mod energy;
#[cfg(feature = "node")]
pub mod grid;
pub mod payload;
#[cfg(feature = "node")]
pub mod plan;
#[cfg(feature = "node")]
pub mod plot;
#[cfg(feature = "node")]
pub mod room;
#[cfg(feature = "node")]
pub mod service;
#[cfg(feature = "node")]
pub mod signal;
#[cfg(feature = "node")]
pub mod sim;
#[cfg(feature = "node")]
pub mod source;

use std::path::PathBuf;

#[cfg(feature = "node")]
pub use api::routes;
#[cfg(feature = "node")]
pub use config::{HeatConfig, SourceKind};
#[cfg(feature = "node")]
pub use energy::{EnergyMeter, ShardEnergy, ShardMark};
#[cfg(feature = "node")]
pub use service::{spawn, HeatHandle, HeatStatus};

/// Lowest and highest setpoint a household can ask for, °C.
/// Below [`controller::OVERHEAT_CELSIUS`], which stops heating in every mode.
pub const SETPOINT_RANGE: std::ops::RangeInclusive<f64> = 5.0..=27.0;
/// Longest boost, in minutes.
pub const MAX_BOOST_MINUTES: u64 = 24 * 60;

#[derive(Debug, thiserror::Error)]
pub enum HeatError {
    #[error("heat settings: {field} {reason}")]
    Config { field: &'static str, reason: String },
    #[error("the thermostat sent {0:?}, which is not a temperature (expected a number like 20.5, or JSON with a \"temperature\" field)")]
    Unreadable(String),
    #[error("reading the room temperature from {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the room temperature file {path} is larger than {limit} bytes; it should hold one number"
    )]
    FileTooLarge { path: PathBuf, limit: usize },
    #[error("a setpoint of {0} °C is not allowed; choose between 5 and 27 °C")]
    Setpoint(f64),
    #[error("a boost lasts from 1 minute to 24 hours, not {0} minutes")]
    BoostDuration(u64),
    #[error("this radiator reads the room temperature from its {0} source; set `source = \"http\"` in the [heat] section of hearth.toml to push readings")]
    NotHttpSource(&'static str),
    #[error("this radiator takes no pushed grid signal; set `source = \"http\"` in the [heat.signal] section of hearth.toml")]
    NotHttpSignal,
    #[error("the heating controller has stopped (is the node shutting down?)")]
    Stopped,
    #[error("writing the plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}
