//! `hearth heat ...`: show and steer the running node's heating, and simulate a winter day.
//!
//! Thin: status and commands go to the node's `/v1/heat` API; `simulate` runs
//! `heat::sim` locally and writes the plot. Nothing here decides how to heat.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::client::Client;
use crate::heat::api::{Boost, Celsius};
use crate::heat::grid::{Grid, Tariff};
use crate::heat::sim::{compare, simulate, Comparison, SimOptions, SimReport, WorkSupply};
use crate::heat::{plot, HeatConfig, HeatStatus};
use crate::model::receipt::EnergyMethod;

#[derive(Args, Debug, Clone)]
pub struct HeatArgs {
    #[command(subcommand)]
    pub command: Option<HeatCommand>,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum HeatCommand {
    /// Hold this setpoint (°C, 5 to 27) until `hearth heat auto`; also ends `off` and `boost`.
    Set {
        /// The setpoint in °C.
        #[arg(value_parser = parse_setpoint, allow_negative_numbers = true)]
        celsius: f64,
    },
    /// Follow the weekly schedule again.
    Auto,
    /// Full power for a while (e.g. `1h`, `90m`, `1h30m`; a bare number is minutes).
    Boost {
        /// How long: `1h`, `90m`, `1h30m`, or a bare number of minutes.
        duration: String,
    },
    /// Stop heating until `hearth heat set` or `hearth heat auto`.
    Off,
    /// Simulate winter days of the room and the controller; with `--tariff` or
    /// `--work-supply`, the planning controller beside the plain thermostat.
    Simulate(SimulateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Hours to simulate.
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// Write a PNG chart of temperatures and power here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Worker slots of the simulated radiator.
    #[arg(long, default_value_t = 8)]
    pub slots: usize,
    /// Hold this setpoint all day (default: the day setpoint of the schedule).
    #[arg(long, conflicts_with = "schedule", value_parser = parse_setpoint, allow_negative_numbers = true)]
    pub setpoint: Option<f64>,
    /// Follow the day/night schedule of hearth.toml instead of one setpoint. The ±0.5 K figure
    /// then includes the hours the room takes to cool down and warm up between them.
    #[arg(long)]
    pub schedule: bool,
    /// Hours run before recording, so the controller starts in steady operation.
    #[arg(long, default_value_t = 24.0)]
    pub warmup_hours: f64,
    /// Days to simulate (replaces --hours), from Monday 1 January 2024.
    #[arg(long)]
    pub days: Option<f64>,
    /// A tariff (`.toml`, the fields of `[heat.tariff]`) or a price/carbon signal (CSV) file;
    /// default: `[heat.tariff]` of hearth.toml, if any.
    #[arg(long)]
    pub tariff: Option<PathBuf>,
    /// Fraction of the time work is on offer (e.g. 0.7), or a trace file of
    /// `hours,available` lines.
    #[arg(long)]
    pub work_supply: Option<String>,
}

/// Runs a `hearth heat` command; `api` is the node's API client, `config` the `[heat]` section
/// (used by `simulate` only).
pub async fn run(args: HeatArgs, api: &Client, config: &HeatConfig) -> anyhow::Result<()> {
    match args.command {
        None => status(api, args.json).await,
        Some(HeatCommand::Set { celsius }) => set(api, celsius).await,
        Some(HeatCommand::Auto) => auto(api).await,
        Some(HeatCommand::Boost { duration }) => boost(api, &duration).await,
        Some(HeatCommand::Off) => off(api).await,
        Some(HeatCommand::Simulate(sim)) => simulate_day(&sim, config),
    }
}

pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let s: HeatStatus = client.get("/v1/heat").await?;
    // Energy credited to this household in verified receipts, from its ledger.
    let node: crate::api::Status = client.get("/v1/status").await?;
    let totals: Vec<crate::api::TotalsView> = client.get("/v1/receipts/totals").await?;
    // Under every key of the household (one, unless it rotated).
    let (credited_receipts, credited_mj) = totals
        .iter()
        .filter(|t| node.household_keys.contains(&t.household))
        .fold((0, 0), |(n, mj), t| (n + t.receipts, mj + t.energy_mj));
    let credited_kwh = credited_mj as f64 / 3.6e9;
    if json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("credited_receipts".into(), credited_receipts.into());
            o.insert("credited_kwh".into(), credited_kwh.into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_status(&s);
        println!(
            "all time    {} credited in {credited_receipts} verified receipts",
            energy(credited_kwh)
        );
    }
    Ok(())
}

/// "credited 0.82 kWh of 1.10 kWh drawn": what the ledger's receipts credit today against what
/// the meter says the radiator drew today (idle included), and what the meter charged to
/// shards whose receipts have not come back yet.
pub fn today_line(s: &HeatStatus) -> String {
    let method = match s.energy_method {
        EnergyMethod::Rapl => "measured by RAPL",
        EnergyMethod::CpuEstimate => "estimated from CPU time",
        EnergyMethod::Simulated => "simulated",
    };
    let credited = s.energy_credited_today_kwh.unwrap_or(0.0);
    let pending = (s.energy_charged_today_kwh - credited).max(0.0);
    format!(
        "credited {} of {} drawn ({method}); {} more charged to shards not yet receipted; idle \
         power is never credited",
        energy(credited),
        energy(s.energy_today_kwh),
        energy(pending)
    )
}

/// An amount of energy as a household reads it: kWh from 0.01 kWh, Wh from 0.1 Wh, whole
/// joules below, as the dashboard does. Until 2026-12-03 it was always four decimals of kWh,
/// and the demo's radiators, credited a few hundred joules each, read "0.0001 kWh".
pub fn energy(kwh: f64) -> String {
    let kwh = kwh.max(0.0);
    if kwh >= 0.01 {
        format!("{kwh:.2} kWh")
    } else if kwh >= 0.0001 {
        format!("{:.1} Wh", kwh * 1e3)
    } else {
        format!("{:.0} J", kwh * 3.6e6)
    }
}

fn print_status(s: &HeatStatus) {
    let room = s
        .room_celsius
        .map_or_else(|| "unknown".to_string(), |c| format!("{c:.1} °C"));
    println!(
        "room        {room} (setpoint {:.1} °C, {} mode, {} sensor)",
        s.setpoint_celsius, s.mode, s.source
    );
    if let Some(out) = s.outdoor_celsius {
        println!("outdoor     {out:.1} °C (simulated, {})", s.local_time);
    }
    println!(
        "radiator    {} of {} slots, {:.0} W, demand {:.0} %",
        s.slots,
        s.max_slots,
        s.power_watts,
        f64::from(s.demand_permille) / 10.0
    );
    if s.lease_ahead_slots > 0 {
        println!(
            "lease-ahead {} shard(s) held ahead of the running ones, so a gap in the work on \
             offer does not leave the room cold",
            s.lease_ahead_slots
        );
    }
    println!("today       {}", today_line(s));
    if let Some(m) = s.boost_minutes_left {
        println!("boost       {m} min left");
    }
    if let Some(p) = &s.plan {
        println!("{}", plan_line(p));
    }
    let mark = if s.fail_safe {
        "SAFE MODE   "
    } else {
        "why         "
    };
    println!("{mark}{}", s.reason);
}

/// "plan        pre-heat (+0.7 K) until 2024-01-03 07:00: ...".
pub fn plan_line(p: &crate::heat::plan::Plan) -> String {
    use crate::heat::plan::Phase;
    let phase = match p.phase {
        Phase::Plain => "plain thermostat",
        Phase::Normal => "normal",
        Phase::Preheat => "pre-heat",
        Phase::Coast => "coast",
    };
    format!("plan        {phase} ({:+.1} K): {}", p.offset_k, p.reason)
}

pub async fn set(api: &Client, celsius: f64) -> anyhow::Result<()> {
    let s: HeatStatus = api
        .post_json("/v1/heat/setpoint", &Celsius { celsius })
        .await?;
    println!(
        "holding {:.1} °C until `hearth heat auto`",
        s.setpoint_celsius
    );
    Ok(())
}

pub async fn auto(api: &Client) -> anyhow::Result<()> {
    let s: HeatStatus = api.post_json("/v1/heat/auto", &()).await?;
    println!("following the schedule: {:.1} °C now", s.setpoint_celsius);
    Ok(())
}

pub async fn boost(api: &Client, duration: &str) -> anyhow::Result<()> {
    let d = parse_duration(duration)?;
    let minutes = d.as_secs() / 60;
    let s: HeatStatus = api.post_json("/v1/heat/boost", &Boost { minutes }).await?;
    println!(
        "boosting at full power for {} min, then back to {}",
        s.boost_minutes_left.unwrap_or(minutes),
        if s.mode == "boost" {
            "the previous mode"
        } else {
            s.mode.as_str()
        }
    );
    Ok(())
}

pub async fn off(api: &Client) -> anyhow::Result<()> {
    let _: HeatStatus = api.post_json("/v1/heat/off", &()).await?;
    println!("heating off until `hearth heat set` or `hearth heat auto`");
    Ok(())
}

/// A setpoint as the household types it: a number of °C within
/// [`crate::heat::SETPOINT_RANGE`], refused here with the node's own words, so `nan` (which
/// JSON cannot carry) or `-5` never reach the node as something else.
pub fn parse_setpoint(s: &str) -> Result<f64, String> {
    let celsius: f64 = s
        .trim()
        .trim_end_matches("°C")
        .trim_end_matches(['C', 'c'])
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a temperature; give °C as a number, e.g. 20.5"))?;
    if !crate::heat::SETPOINT_RANGE.contains(&celsius) {
        return Err(crate::heat::HeatError::Setpoint(celsius).to_string());
    }
    Ok(celsius)
}

/// `1h`, `90m`, `90min`, `1h30m`, `45s`, or a bare number of minutes.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim().to_ascii_lowercase();
    if let Ok(minutes) = s.parse::<u64>() {
        return Ok(Duration::from_secs(minutes.saturating_mul(60)));
    }
    let mut secs: u64 = 0;
    let mut rest = s.as_str();
    if rest.is_empty() {
        bail!("give a duration such as 1h, 90m or 1h30m");
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            bail!("{s:?} is not a duration; write e.g. 1h, 90m or 1h30m");
        }
        let n: u64 = rest[..digits]
            .parse()
            .with_context(|| format!("{s:?} is not a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "h" | "hr" | "hour" | "hours" => 3600,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "s" | "sec" | "secs" => 1,
            _ => bail!("{s:?}: unknown unit {unit:?}; use h, m or s"),
        };
        secs = secs.saturating_add(n.saturating_mul(mult));
    }
    Ok(Duration::from_secs(secs))
}

/// `hearth heat simulate`.
pub fn simulate_day(args: &SimulateArgs, config: &HeatConfig) -> anyhow::Result<()> {
    let mut opts = SimOptions::new(config.clone());
    opts.hours = args.days.map_or(args.hours, |d| d * 24.0);
    opts.grid = match (&args.tariff, &config.tariff) {
        (Some(path), _) => Some(Grid::read(path)?),
        (None, Some(t)) => Some(Grid::Tariff(Tariff::new(t)?)),
        (None, None) => None,
    };
    if let Some(w) = &args.work_supply {
        opts.work = WorkSupply::parse(w)?;
    }
    opts.max_slots = args.slots;
    opts.warmup_hours = args.warmup_hours;
    opts.setpoint = if args.schedule {
        None
    } else {
        Some(args.setpoint.unwrap_or(config.schedule.day_celsius))
    };
    if opts.grid.is_some() || opts.work != WorkSupply::Always {
        return simulate_compared(args, &opts);
    }
    let report = simulate(&opts)?;
    if let Some(path) = &args.plot {
        let title = format!(
            "hearth: simulated winter day, {:.0}% of the time within ±0.5 K",
            report.fraction_within_half_kelvin * 100.0
        );
        plot::write_png(&report.samples, &title, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:.0} h simulated, {} slots, outdoor {:.0} to {:.0} °C",
            report.hours,
            report.max_slots,
            config.simulated.outdoor_min_celsius,
            config.simulated.outdoor_max_celsius
        );
        println!(
            "within ±0.5 K of the setpoint {:.1} % of the time (room {:.2} to {:.2} °C)",
            report.fraction_within_half_kelvin * 100.0,
            report.min_room_celsius,
            report.max_room_celsius
        );
        println!(
            "energy {:.2} kWh (mean {:.0} W); at most {} slot change(s) per period",
            report.energy_kwh, report.mean_power_watts, report.max_slot_step
        );
        if let Some(path) = &args.plot {
            println!("plot written to {}", path.display());
        }
    }
    Ok(())
}

/// The planning controller beside the plain thermostat (and beside planning without
/// lease-ahead when work comes and goes).
fn simulate_compared(args: &SimulateArgs, opts: &SimOptions) -> anyhow::Result<()> {
    let c = compare(opts)?;
    if let Some(path) = &args.plot {
        let title = format!(
            "hearth: planning, {:.0}% less energy at expensive times",
            c.expensive_energy_cut * 100.0
        );
        plot::write_png(&c.plan.samples, &title, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    print!("{}", comparison_table(&c));
    if let Some(path) = &args.plot {
        println!("plot of the planned run written to {}", path.display());
    }
    Ok(())
}

/// The side-by-side table `hearth heat simulate` prints.
pub fn comparison_table(c: &Comparison) -> String {
    let mut runs: Vec<(&str, &SimReport)> = vec![("plan", &c.plan), ("plain", &c.plain)];
    if let Some(r) = &c.plan_without_lease_ahead {
        runs.push(("plan, no lease-ahead", r));
    }
    let mut out = format!(
        "{:.0} h simulated, {} slots, work on offer {:.0} % of the time, band ±{:.1} K\n",
        c.plan.hours,
        c.plan.max_slots,
        c.plan.work_available_fraction * 100.0,
        c.plan.band_k
    );
    out += &format!("{:<34}", "");
    for (name, _) in &runs {
        out += &format!("{name:>22}");
    }
    out += "\n";
    type Row = (&'static str, fn(&SimReport) -> String);
    let rows: [Row; 14] = [
        ("within ±0.5 K of setpoint", |r| {
            format!("{:.1} %", r.fraction_within_half_kelvin * 100.0)
        }),
        ("within setpoint ± band", |r| {
            format!("{:.1} %", r.fraction_within_band * 100.0)
        }),
        ("pre-heated (+0.5 K to +band)", |r| {
            format!("{:.1} %", r.fraction_in_preheat_band * 100.0)
        }),
        ("below setpoint − band", |r| {
            format!("{:.1} %", r.fraction_below_band * 100.0)
        }),
        ("room min / max (°C)", |r| {
            format!("{:.1} / {:.1}", r.min_room_celsius, r.max_room_celsius)
        }),
        ("unmet heat (kWh)", |r| format!("{:.2}", r.unmet_heat_kwh)),
        ("energy (kWh)", |r| format!("{:.2}", r.energy_kwh)),
        ("  in expensive periods (kWh)", |r| {
            format!("{:.2}", r.expensive_kwh)
        }),
        ("  in peak hours (kWh / cost)", |r| {
            format!("{:.2} / {:.2}", r.peak_kwh, r.peak_cost)
        }),
        ("  off-peak (kWh / cost)", |r| {
            format!("{:.2} / {:.2}", r.off_peak_kwh, r.off_peak_cost)
        }),
        ("  with no signal (kWh)", |r| {
            format!("{:.2}", r.unpriced_kwh)
        }),
        ("cost", |r| format!("{:.2}", r.cost)),
        ("CO2 at the signal's intensity (kg)", |r| {
            format!("{:.2}", r.co2_kg)
        }),
        ("hours pre-heating / coasting", |r| {
            format!("{:.1} / {:.1}", r.preheat_hours, r.coast_hours)
        }),
    ];
    for (label, value) in rows {
        out += &format!("{label:<34}");
        for (_, r) in &runs {
            out += &format!("{:>22}", value(r));
        }
        out += "\n";
    }
    out += &format!(
        "planning cuts energy in expensive periods by {:.1} %\n",
        c.expensive_energy_cut * 100.0
    );
    if let Some(r) = &c.plan_without_lease_ahead {
        out += &format!(
            "lease-ahead ({:.0} min) recovers {:.1} points of time within ±band and {:.2} kWh \
             of unmet heat\n",
            c.plan.lease_ahead_minutes,
            (c.plan.fraction_within_band - r.fraction_within_band) * 100.0,
            r.unmet_heat_kwh - c.plan.unmet_heat_kwh
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_reads_in_the_unit_that_shows_it() {
        assert_eq!(energy(1.234), "1.23 kWh");
        assert_eq!(energy(0.01), "0.01 kWh");
        assert_eq!(energy(0.0042), "4.2 Wh");
        // One demo shard's credit, 400 mJ, and a few of them.
        assert_eq!(energy(0.4 / 3.6e6), "0 J");
        assert_eq!(energy(298.2 / 3.6e6), "298 J");
        assert_eq!(energy(-1.0), "0 J");
    }
}
