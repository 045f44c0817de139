//! `hearth impact`: the impact report from receipts (the node's ledger or an export file).
//!
//! Thin: loads and prints; `crate::impact` computes and `docs/impact.md` states every
//! assumption and its source.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::client::Client;
use crate::heat::plot::{render_bars, Bar, Panel};
use crate::impact::{compute, Assumptions, Filter, Impact, Replaced};
use crate::model::receipt::ReceiptExport;

#[derive(Args, Debug, Clone, Default)]
pub struct ImpactArgs {
    /// Only this job's receipts (hex id, or a prefix of it).
    #[arg(long)]
    pub job: Option<String>,
    /// Only receipts crediting this household (hex public key, or a prefix).
    #[arg(long)]
    pub household: Option<String>,
    /// A receipts export (`hearth receipts export`, or `receipts.json` of `hearth demo`);
    /// default: the node's ledger.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print the report as JSON (fields in docs/impact.md).
    #[arg(long)]
    pub json: bool,
    /// Write a PNG bar chart here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Data-centre PUE. Default 1.58 (Uptime Institute survey 2023).
    #[arg(long)]
    pub pue: Option<f64>,
    /// Data-centre IT energy for the same work, as a fraction of the credited energy.
    /// Default 1.0.
    #[arg(long)]
    pub it_ratio: Option<f64>,
    /// Grid carbon intensity of the homes, g CO2/kWh. Default 56 (France 2023, RTE).
    #[arg(long)]
    pub grid_g_co2: Option<f64>,
    /// Grid carbon intensity of the data centre, g CO2/kWh. Default: the homes' grid.
    #[arg(long)]
    pub data_centre_g_co2: Option<f64>,
    /// What the heat replaced. Default electric.
    #[arg(long, value_enum)]
    pub replaced: Option<Replaced>,
    /// Heat pump seasonal COP (with --replaced heat-pump). Default 3.0.
    #[arg(long)]
    pub heat_pump_cop: Option<f64>,
    /// Gas boiler seasonal efficiency (with --replaced gas). Default 0.90.
    #[arg(long)]
    pub boiler_efficiency: Option<f64>,
    /// Natural gas, g CO2e/kWh. Default 227 (ADEME).
    #[arg(long)]
    pub gas_g_co2: Option<f64>,
    /// Fraction of the credited heat the home wanted. Default 1.0.
    #[arg(long)]
    pub useful_heat: Option<f64>,
    /// The `[impact]` section of `hearth.toml` (`run` reads it); the flags override it field
    /// by field. `None`: the documented defaults.
    #[arg(skip)]
    pub config: Option<Assumptions>,
}

impl ImpactArgs {
    /// Defaults, then `[impact]` of `hearth.toml`, then the flags.
    pub fn assumptions(&self) -> Assumptions {
        let d = self.config.clone().unwrap_or_default();
        Assumptions {
            pue: self.pue.unwrap_or(d.pue),
            it_ratio: self.it_ratio.unwrap_or(d.it_ratio),
            grid_g_co2_per_kwh: self.grid_g_co2.unwrap_or(d.grid_g_co2_per_kwh),
            data_centre_g_co2_per_kwh: self.data_centre_g_co2.or(d.data_centre_g_co2_per_kwh),
            replaced: self.replaced.unwrap_or(d.replaced),
            heat_pump_cop: self.heat_pump_cop.unwrap_or(d.heat_pump_cop),
            boiler_efficiency: self.boiler_efficiency.unwrap_or(d.boiler_efficiency),
            gas_g_co2_per_kwh: self.gas_g_co2.unwrap_or(d.gas_g_co2_per_kwh),
            useful_heat_fraction: self.useful_heat.unwrap_or(d.useful_heat_fraction),
        }
    }
}

/// Runs `hearth impact` on an export already loaded; returns what it printed.
pub fn report(args: &ImpactArgs, export: &ReceiptExport) -> anyhow::Result<String> {
    let filter = Filter {
        job: args.job.clone(),
        household: args.household.clone(),
    };
    let impact = compute(&export.receipts, &filter, &args.assumptions())?;
    if let Some(path) = &args.plot {
        let png = render_bars("hearth: impact from receipts", &panels(&impact))
            .map_err(anyhow::Error::msg)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = if args.json {
        serde_json::to_string_pretty(&impact)? + "\n"
    } else {
        text(&impact)
    };
    if let (Some(path), false) = (&args.plot, args.json) {
        out += &format!("plot written to {}\n", path.display());
    }
    Ok(out)
}

pub async fn run(args: &ImpactArgs, api: Option<&Client>, data_dir: &Path) -> anyhow::Result<()> {
    let config = crate::config::Config::load(
        data_dir,
        &crate::config::process_env,
        &crate::config::Overrides::default(),
    )?;
    let args = &ImpactArgs {
        config: Some(config.impact),
        ..args.clone()
    };
    let export = match (&args.file, api) {
        (Some(file), _) => super::export::read_export(file)?,
        (None, Some(api)) => super::receipts::load_receipts(api, data_dir, None).await?,
        (None, None) => bail!("give --file EXPORT, or run it where a node or its data is"),
    };
    print!("{}", report(args, &export)?);
    Ok(())
}

fn text(i: &Impact) -> String {
    let a = &i.assumptions;
    let replaced = match a.replaced {
        Replaced::Electric => "direct electric heating".to_string(),
        Replaced::HeatPump => format!("a heat pump of COP {:.1}", a.heat_pump_cop),
        Replaced::Gas => format!(
            "a gas boiler of {:.0} % efficiency ({:.0} g CO2/kWh of gas)",
            a.boiler_efficiency * 100.0,
            a.gas_g_co2_per_kwh
        ),
    };
    let mut s = format!(
        "{} verified receipts ({} invalid left out), {} job(s), {} household(s)\n",
        i.receipts, i.invalid_receipts, i.jobs, i.households
    );
    s += &format!(
        "energy credited          {:.6} kWh (shards' execution only; idle never credited; \
         {:.6} kWh claimed)\n",
        i.credited_kwh, i.claimed_kwh
    );
    s += &format!(
        "heat delivered to homes  {:.6} kWh ({:.0} % of it wanted)\n",
        i.heat_delivered_kwh,
        a.useful_heat_fraction * 100.0
    );
    s += &format!(
        "data centre instead      {:.6} kWh (credited × IT ratio {:.2} × PUE {:.2})\n",
        i.data_centre_kwh, a.it_ratio, a.pue
    );
    s += &format!(
        "home heating avoided     {:.6} kWh of {replaced}\n",
        i.heating_energy_avoided_kwh
    );
    s += &format!(
        "CO2, hearth              {:.6} kg (credited at {:.0} g/kWh)\n",
        i.hearth_co2_kg, a.grid_g_co2_per_kwh
    );
    s += &format!(
        "CO2, separately          {:.6} kg (data centre at {:.0} g/kWh + home heating)\n",
        i.separate_co2_kg,
        a.data_centre_g_co2()
    );
    s += &format!(
        "reduction                {:.1} % CO2, {:.1} % energy (the seed claims 78 % CO2; see \
         docs/impact.md)\n",
        i.co2_reduction * 100.0,
        i.energy_reduction * 100.0
    );
    s
}

fn panels(i: &Impact) -> Vec<Panel> {
    const HEARTH: [u8; 3] = [230, 130, 20];
    const DC: [u8; 3] = [90, 90, 200];
    const HOME: [u8; 3] = [200, 60, 60];
    let a = &i.assumptions;
    let home_g = match a.replaced {
        Replaced::Gas => a.gas_g_co2_per_kwh,
        _ => a.grid_g_co2_per_kwh,
    };
    vec![
        Panel {
            title: "energy (kWh)".into(),
            bars: vec![
                Bar {
                    label: "hearth".into(),
                    segments: vec![(i.credited_kwh, HEARTH, "hearth radiators")],
                },
                Bar {
                    label: "separately".into(),
                    segments: vec![
                        (i.data_centre_kwh, DC, "data centre"),
                        (i.heating_energy_avoided_kwh, HOME, "home heating"),
                    ],
                },
            ],
        },
        Panel {
            title: "CO2 (kg)".into(),
            bars: vec![
                Bar {
                    label: "hearth".into(),
                    segments: vec![(i.hearth_co2_kg, HEARTH, "hearth radiators")],
                },
                Bar {
                    label: "separately".into(),
                    segments: vec![
                        (
                            i.data_centre_kwh * a.data_centre_g_co2() / 1000.0,
                            DC,
                            "data centre",
                        ),
                        (
                            i.heating_energy_avoided_kwh * home_g / 1000.0,
                            HOME,
                            "home heating",
                        ),
                    ],
                },
            ],
        },
    ]
}
