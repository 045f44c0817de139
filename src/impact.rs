//! The impact report behind `hearth impact`: from verified heat-work receipts, the energy
//! credited and the heat it put into homes, the data-centre energy the same compute would have
//! needed, the heating energy the homes did not need from another source, and CO2 both ways.
//!
//! Pure arithmetic on receipts and [`Assumptions`]; every assumption is a field with a
//! documented default and its source in `docs/impact.md`. The receipts are checked (canonical
//! bytes and both signatures) before they count. Reads no file and no clock; the CLI
//! (`cli::impact`) loads the receipts.

use serde::{Deserialize, Serialize};

use crate::model::receipt::{verify_batch, ReceiptJson};

/// Joules per kilowatt-hour; receipts count millijoules.
const MJ_PER_KWH: f64 = 3.6e9;

/// What the heat from hearth replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Replaced {
    /// Direct electric (resistive) heating: 1 kWh of electricity per kWh of heat.
    Electric,
    /// An electric heat pump at `heat_pump_cop`.
    HeatPump,
    /// A gas boiler at `boiler_efficiency`, burning gas at `gas_g_co2_per_kwh`.
    Gas,
}

/// Every assumption of the report; `docs/impact.md` gives each default's source. Also the
/// `[impact]` section of `hearth.toml`, so a household states its own grid and heating once;
/// `hearth impact`'s flags override it field by field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Assumptions {
    /// Power usage effectiveness of the data centre the compute would otherwise run in.
    /// Default 1.58: the Uptime Institute Global Data Center Survey 2023 mean.
    pub pue: f64,
    /// IT energy a data-centre server needs for the same work, as a fraction of what the
    /// radiator was credited. Default 1.0 (the same CPUs); lower for more efficient servers.
    pub it_ratio: f64,
    /// Carbon intensity of the homes' electricity, g CO2/kWh: what the radiators draw, and
    /// electric heating or a heat pump if that was replaced. Default 56 (France's
    /// consumption mix, 2023, RTE Bilan électrique).
    pub grid_g_co2_per_kwh: f64,
    /// Carbon intensity of the data centre's electricity, g CO2/kWh, when it runs on another
    /// grid than the homes. Default none: the homes' grid (one country compared with itself).
    pub data_centre_g_co2_per_kwh: Option<f64>,
    /// What the heat replaced. Default electric.
    pub replaced: Replaced,
    /// Seasonal COP of the heat pump, if that was replaced. Default 3.0.
    pub heat_pump_cop: f64,
    /// Seasonal efficiency of the gas boiler, if that was replaced. Default 0.90.
    pub boiler_efficiency: f64,
    /// Carbon intensity of natural gas, g CO2e per kWh (lower heating value), combustion and
    /// upstream. Default 227 (ADEME Base Empreinte).
    pub gas_g_co2_per_kwh: f64,
    /// Fraction of the credited heat the home wanted (heating season, room calling). Default
    /// 1.0: hearth's controller only runs shards while the room calls for heat.
    pub useful_heat_fraction: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            pue: 1.58,
            it_ratio: 1.0,
            grid_g_co2_per_kwh: 56.0,
            data_centre_g_co2_per_kwh: None,
            replaced: Replaced::Electric,
            heat_pump_cop: 3.0,
            boiler_efficiency: 0.90,
            gas_g_co2_per_kwh: 227.0,
            useful_heat_fraction: 1.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImpactError {
    #[error("{field} must be {range}, not {value}")]
    Assumption {
        field: &'static str,
        range: &'static str,
        value: f64,
    },
}

impl Assumptions {
    pub fn validate(&self) -> Result<(), ImpactError> {
        let check = |field, value: f64, lo: f64, hi: f64, range| {
            if value.is_finite() && value >= lo && value <= hi {
                Ok(())
            } else {
                Err(ImpactError::Assumption {
                    field,
                    range,
                    value,
                })
            }
        };
        check("pue (--pue)", self.pue, 1.0, 5.0, "between 1 and 5")?;
        check(
            "it_ratio (--it-ratio)",
            self.it_ratio,
            0.0,
            10.0,
            "between 0 and 10",
        )?;
        check(
            "grid_g_co2_per_kwh (--grid-g-co2)",
            self.grid_g_co2_per_kwh,
            0.0,
            2000.0,
            "between 0 and 2000",
        )?;
        if let Some(g) = self.data_centre_g_co2_per_kwh {
            check(
                "data_centre_g_co2_per_kwh (--data-centre-g-co2)",
                g,
                0.0,
                2000.0,
                "between 0 and 2000",
            )?;
        }
        check(
            "heat_pump_cop (--heat-pump-cop)",
            self.heat_pump_cop,
            1.0,
            10.0,
            "between 1 and 10",
        )?;
        check(
            "boiler_efficiency (--boiler-efficiency)",
            self.boiler_efficiency,
            0.1,
            1.1,
            "between 0.1 and 1.1",
        )?;
        check(
            "gas_g_co2_per_kwh (--gas-g-co2)",
            self.gas_g_co2_per_kwh,
            0.0,
            1000.0,
            "between 0 and 1000",
        )?;
        check(
            "useful_heat_fraction (--useful-heat)",
            self.useful_heat_fraction,
            0.0,
            1.0,
            "between 0 and 1",
        )
    }

    /// The data centre's grid intensity: its own, or the homes'.
    pub fn data_centre_g_co2(&self) -> f64 {
        self.data_centre_g_co2_per_kwh
            .unwrap_or(self.grid_g_co2_per_kwh)
    }
}

/// Which receipts count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Job id, hex (a prefix of at least 8 characters is enough).
    pub job: Option<String>,
    /// Household (worker) public key, hex.
    pub household: Option<String>,
}

/// The report. Energies in kWh, CO2 in kg.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Impact {
    pub assumptions: Assumptions,
    /// Receipts that passed every check and the filter.
    pub receipts: usize,
    /// Receipts left out because a check failed.
    pub invalid_receipts: usize,
    pub jobs: usize,
    pub households: usize,
    /// Electricity credited in the receipts: what the shards drew (idle never counted), as
    /// the submitters countersigned it.
    pub credited_kwh: f64,
    /// What the workers claimed (at least the credit; shown for reference, counts nowhere).
    pub claimed_kwh: f64,
    /// Heat the credited electricity put into homes (all of it: a computer is a resistive
    /// heater), times `useful_heat_fraction`.
    pub heat_delivered_kwh: f64,
    /// What a data centre would have drawn for the same compute: credited × it_ratio × PUE.
    pub data_centre_kwh: f64,
    /// Energy the homes did not need from their own heating: heat ÷ (1, COP or efficiency).
    pub heating_energy_avoided_kwh: f64,
    /// CO2 of the hearth way: the credited electricity at the grid's intensity.
    pub hearth_co2_kg: f64,
    /// CO2 of the separate way: the data centre's electricity plus the homes' own heating.
    pub separate_co2_kg: f64,
    /// 1 − hearth / separate (the figure the −78 % claim is about); 0 with no receipts.
    pub co2_reduction: f64,
    /// Likewise for final energy.
    pub energy_reduction: f64,
}

/// Energy a receipt credits, mJ: the countersigned credit terms, never the worker's claim.
fn credited_mj(r: &ReceiptJson) -> u64 {
    r.credited_mj
}

fn matches(r: &ReceiptJson, f: &Filter) -> bool {
    let prefix = |want: &Option<String>, have: &str| {
        want.as_ref()
            .is_none_or(|w| have.starts_with(&w.trim().to_ascii_lowercase()))
    };
    prefix(&f.job, &r.job) && prefix(&f.household, &r.worker)
}

/// Computes the report from an export's receipts; invalid ones are counted and left out.
pub fn compute(
    receipts: &[ReceiptJson],
    filter: &Filter,
    a: &Assumptions,
) -> Result<Impact, ImpactError> {
    a.validate()?;
    let wanted: Vec<&ReceiptJson> = receipts.iter().filter(|r| matches(r, filter)).collect();
    let decoded: Vec<_> = wanted.iter().map(|r| r.to_receipt()).collect();
    let ok: Vec<_> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok().cloned())
        .collect();
    let sig = verify_batch(&ok);
    let mut valid = Vec::new();
    let mut sig_iter = sig.into_iter();
    for (r, d) in wanted.iter().zip(&decoded) {
        if d.is_ok() && sig_iter.next().is_some_and(|s| s.is_ok()) {
            valid.push(*r);
        }
    }
    let invalid = wanted.len() - valid.len();
    // Summed exactly, in whole millijoules (u128: no number of u64 receipts overflows it);
    // a float sum would also make an empty export -0.0 kWh.
    let kwh = |mj: u128| mj as f64 / MJ_PER_KWH;
    let credited_kwh = kwh(valid.iter().map(|r| u128::from(credited_mj(r))).sum());
    let claimed_kwh = kwh(valid.iter().map(|r| u128::from(r.energy_mj)).sum());
    let jobs: std::collections::BTreeSet<&str> = valid.iter().map(|r| r.job.as_str()).collect();
    let homes: std::collections::BTreeSet<&str> = valid.iter().map(|r| r.worker.as_str()).collect();
    let heat = credited_kwh * a.useful_heat_fraction;
    let dc = credited_kwh * a.it_ratio * a.pue;
    let (avoided, avoided_g_per_kwh) = match a.replaced {
        Replaced::Electric => (heat, a.grid_g_co2_per_kwh),
        Replaced::HeatPump => (heat / a.heat_pump_cop, a.grid_g_co2_per_kwh),
        Replaced::Gas => (heat / a.boiler_efficiency, a.gas_g_co2_per_kwh),
    };
    let hearth_co2 = credited_kwh * a.grid_g_co2_per_kwh / 1000.0;
    let separate_co2 = (dc * a.data_centre_g_co2() + avoided * avoided_g_per_kwh) / 1000.0;
    let ratio = |ours: f64, theirs: f64| {
        if theirs > 0.0 {
            1.0 - ours / theirs
        } else {
            0.0
        }
    };
    Ok(Impact {
        assumptions: a.clone(),
        receipts: valid.len(),
        invalid_receipts: invalid,
        jobs: jobs.len(),
        households: homes.len(),
        credited_kwh,
        claimed_kwh,
        heat_delivered_kwh: heat,
        data_centre_kwh: dc,
        heating_energy_avoided_kwh: avoided,
        hearth_co2_kg: hearth_co2,
        separate_co2_kg: separate_co2,
        co2_reduction: ratio(hearth_co2, separate_co2),
        energy_reduction: ratio(credited_kwh, dc + avoided),
    })
}

/// Commented `[impact]` lines for the template `hearth init` writes (`config::template`).
pub const TEMPLATE: &str = r#"
[impact]
# Assumptions of `hearth impact` (docs/impact.md gives the source of each default); its flags
# override these field by field.
# Data-centre power usage effectiveness: Uptime Institute Global Data Center Survey 2023.
# pue = 1.58
# Data-centre IT energy for the same work, as a fraction of what the radiators were credited.
# it_ratio = 1.0
# Carbon intensity of this home's electricity, g CO2/kWh: France 2023, RTE Bilan électrique.
# grid_g_co2_per_kwh = 56.0
# The data centre's own grid, if not this one (default: the same grid).
# data_centre_g_co2_per_kwh = 300.0
# What the radiator's heat replaced: "electric", "heat-pump" or "gas".
# replaced = "electric"
# heat_pump_cop = 3.0
# Condensing gas boiler; EU Regulation 813/2013 asks at least 0.86 of new ones.
# boiler_efficiency = 0.90
# Natural gas, combustion and upstream, g CO2e/kWh: ADEME Base Empreinte.
# gas_g_co2_per_kwh = 227.0
# Share of the heat the home wanted.
# useful_heat_fraction = 1.0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_follows_the_assumptions() {
        // No receipts: zeros, no division by zero.
        let r = compute(&[], &Filter::default(), &Assumptions::default()).unwrap();
        assert_eq!((r.receipts, r.co2_reduction), (0, 0.0));
        // Plain zeros, not -0 (an empty float sum is -0.0, printed "-0.000000 kWh").
        for kwh in [
            r.credited_kwh,
            r.claimed_kwh,
            r.heat_delivered_kwh,
            r.hearth_co2_kg,
        ] {
            assert!(kwh == 0.0 && kwh.is_sign_positive(), "{kwh}");
        }
        let bad = Assumptions {
            pue: 0.5,
            ..Assumptions::default()
        };
        assert!(compute(&[], &Filter::default(), &bad)
            .unwrap_err()
            .to_string()
            .contains("--pue"));
        // The section of hearth.toml: fields left out keep their defaults; typos are refused.
        let a: Assumptions = toml::from_str(
            "pue = 1.2\nreplaced = \"heat-pump\"\ndata_centre_g_co2_per_kwh = 300.0\n",
        )
        .unwrap();
        assert_eq!(
            (a.pue, a.replaced, a.data_centre_g_co2()),
            (1.2, Replaced::HeatPump, 300.0)
        );
        assert_eq!(a.grid_g_co2_per_kwh, 56.0);
        assert!(toml::from_str::<Assumptions>("peu = 1.2\n").is_err());
    }
}
