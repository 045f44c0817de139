//! Grid signals as heat inputs: a tariff schedule (peak and off-peak hours, day colours such as
//! French Tempo blue/white/red, each with its prices and carbon intensity) and a price or
//! carbon-intensity series read from a file, pushed over HTTP or received over MQTT.
//!
//! Pure: [`Grid::at`] answers what a kilowatt-hour costs and emits at a local time, or why it
//! cannot say (a series that has run out is stale). The planner ([`super::plan`]) looks ahead
//! with it; the simulation prices every period with it. Nothing here reads a clock or a file
//! except [`Series::read`], which the caller runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, Timelike, Weekday};
use serde::{Deserialize, Serialize};

use super::HeatError;

/// Largest signal file read, bytes: a year of 15-minute periods is ~1.4 MB.
pub const MAX_SIGNAL_FILE: u64 = 4 << 20;
/// Most periods a series holds (a pushed one or a file): a year of 15-minute periods.
pub const MAX_PERIODS: usize = 366 * 96;

/// The `[heat.tariff]` section (also the format of `hearth heat simulate --tariff FILE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TariffConfig {
    /// Peak periods of every day, `"HH:MM-HH:MM"` local time; the rest is off-peak. A period
    /// whose end is before its start runs over midnight. Default `["06:00-22:00"]` (Tempo's
    /// heures pleines).
    pub peak: Vec<String>,
    /// Prices and carbon intensity per day colour. Default: Tempo's three colours with the
    /// prices quoted in issue 15 (blue, white, red); see `docs/heat.md`.
    pub colours: BTreeMap<String, ColourConfig>,
    /// Colour of a day not listed in `days`. Default `"blue"`.
    pub default_colour: String,
    /// Colour of particular days: keys are dates (`"2024-01-03"`) or weekday names (`"wed"`);
    /// a date wins over a weekday. Default: none (every day `default_colour`).
    pub days: BTreeMap<String, String>,
    /// A period whose price is at least this (per kWh) is expensive: the planner pre-heats
    /// before it and coasts through it. Default 0.40.
    pub expensive_price: f64,
    /// A period whose carbon intensity is at least this many g CO2/kWh is also expensive.
    /// Default none (price alone decides).
    pub expensive_g_co2_per_kwh: Option<f64>,
}

/// One day colour's prices (currency per kWh) and carbon intensity (g CO2 per kWh).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColourConfig {
    pub peak_price: f64,
    pub off_peak_price: f64,
    /// Default 60 g/kWh (about the French mix's yearly mean, RTE éCO2mix).
    #[serde(default = "default_g")]
    pub peak_g_co2_per_kwh: f64,
    #[serde(default = "default_g")]
    pub off_peak_g_co2_per_kwh: f64,
}

fn default_g() -> f64 {
    60.0
}

impl Default for TariffConfig {
    fn default() -> Self {
        let colour = |peak, off, g_peak, g_off| ColourConfig {
            peak_price: peak,
            off_peak_price: off,
            peak_g_co2_per_kwh: g_peak,
            off_peak_g_co2_per_kwh: g_off,
        };
        TariffConfig {
            peak: vec!["06:00-22:00".into()],
            colours: BTreeMap::from([
                ("blue".into(), colour(0.15, 0.12, 40.0, 30.0)),
                ("white".into(), colour(0.18, 0.14, 60.0, 40.0)),
                ("red".into(), colour(0.65, 0.15, 120.0, 60.0)),
            ]),
            default_colour: "blue".into(),
            days: BTreeMap::new(),
            expensive_price: 0.40,
            expensive_g_co2_per_kwh: None,
        }
    }
}

/// What one kilowatt-hour costs and emits at a moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// Currency per kWh.
    pub price_per_kwh: f64,
    pub g_co2_per_kwh: f64,
    /// Within the tariff's peak hours (for a series: whether the period is expensive).
    pub peak: bool,
    /// The planner avoids heating in it.
    pub expensive: bool,
    /// For people: "red day, peak hours".
    pub label: String,
}

fn config_err(field: &'static str, reason: String) -> HeatError {
    HeatError::Config { field, reason }
}

/// Minutes after midnight of `HH:MM`.
fn minutes(field: &'static str, s: &str) -> Result<u32, HeatError> {
    let bad = || config_err(field, format!("{s:?} is not a time of day like \"06:00\""));
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn weekday(name: &str) -> Option<Weekday> {
    name.trim().parse::<Weekday>().ok()
}

/// A validated tariff.
#[derive(Clone, Debug, PartialEq)]
pub struct Tariff {
    config: TariffConfig,
    /// (start, end) minutes after midnight.
    peaks: Vec<(u32, u32)>,
    dates: BTreeMap<chrono::NaiveDate, String>,
    weekdays: BTreeMap<u32, String>,
}

impl Tariff {
    pub fn new(config: &TariffConfig) -> Result<Tariff, HeatError> {
        let mut peaks = Vec::new();
        for p in &config.peak {
            let (a, b) = p.split_once('-').ok_or_else(|| {
                config_err(
                    "heat.tariff.peak",
                    format!("{p:?} is not a period like \"06:00-22:00\""),
                )
            })?;
            peaks.push((
                minutes("heat.tariff.peak", a)?,
                minutes("heat.tariff.peak", b)?,
            ));
        }
        if config.colours.is_empty() {
            return Err(config_err(
                "heat.tariff.colours",
                "needs at least one colour".into(),
            ));
        }
        for c in config.colours.values() {
            for v in [
                c.peak_price,
                c.off_peak_price,
                c.peak_g_co2_per_kwh,
                c.off_peak_g_co2_per_kwh,
            ] {
                if !(v.is_finite() && (0.0..=10_000.0).contains(&v)) {
                    return Err(config_err(
                        "heat.tariff.colours",
                        format!("{v} is not a price or a carbon intensity (0 to 10000)"),
                    ));
                }
            }
        }
        let known = |c: &str| {
            if config.colours.contains_key(c) {
                Ok(())
            } else {
                Err(config_err(
                    "heat.tariff.days",
                    format!("colour {c:?} has no prices in [heat.tariff.colours]"),
                ))
            }
        };
        known(&config.default_colour)?;
        let mut dates = BTreeMap::new();
        let mut weekdays = BTreeMap::new();
        for (day, colour) in &config.days {
            known(colour)?;
            if let Some(w) = weekday(day) {
                weekdays.insert(w.num_days_from_monday(), colour.clone());
            } else if let Ok(d) = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d") {
                dates.insert(d, colour.clone());
            } else {
                return Err(config_err(
                    "heat.tariff.days",
                    format!("{day:?} is neither a date like \"2024-01-03\" nor a weekday"),
                ));
            }
        }
        if !(config.expensive_price.is_finite() && config.expensive_price >= 0.0) {
            return Err(config_err(
                "heat.tariff.expensive_price",
                "must be zero or more".into(),
            ));
        }
        Ok(Tariff {
            config: config.clone(),
            peaks,
            dates,
            weekdays,
        })
    }

    fn in_peak(&self, at: NaiveDateTime) -> bool {
        let m = at.hour() * 60 + at.minute();
        self.peaks.iter().any(|&(a, b)| match a.cmp(&b) {
            std::cmp::Ordering::Less => (a..b).contains(&m),
            std::cmp::Ordering::Greater => m >= a || m < b,
            std::cmp::Ordering::Equal => true,
        })
    }

    /// The colour of the tariff day holding `at`. Tempo days run from 06:00 to 06:00; here a
    /// day is the calendar day, which only changes the colour of the off-peak night hours.
    pub fn colour(&self, at: NaiveDateTime) -> &str {
        use chrono::Datelike;
        self.dates
            .get(&at.date())
            .or_else(|| self.weekdays.get(&at.weekday().num_days_from_monday()))
            .unwrap_or(&self.config.default_colour)
    }

    pub fn at(&self, at: NaiveDateTime) -> Period {
        let colour = self.colour(at);
        let peak = self.in_peak(at);
        // `new` checked every colour named has prices; an empty default is unreachable.
        let c = self
            .config
            .colours
            .get(colour)
            .or_else(|| self.config.colours.values().next());
        let (price, g) = match (c, peak) {
            (Some(c), true) => (c.peak_price, c.peak_g_co2_per_kwh),
            (Some(c), false) => (c.off_peak_price, c.off_peak_g_co2_per_kwh),
            (None, _) => (0.0, 0.0),
        };
        let expensive = price >= self.config.expensive_price
            || self.config.expensive_g_co2_per_kwh.is_some_and(|t| g >= t);
        Period {
            price_per_kwh: price,
            g_co2_per_kwh: g,
            peak,
            expensive,
            label: format!("{colour} day, {}", if peak { "peak" } else { "off-peak" }),
        }
    }
}

/// One period of a series: from `start` until the next period's start.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesPoint {
    /// Local time, `YYYY-MM-DDTHH:MM` (seconds allowed).
    pub start: NaiveDateTime,
    /// Currency per kWh.
    pub price_per_kwh: f64,
    /// g CO2 per kWh.
    pub g_co2_per_kwh: f64,
}

/// A price and carbon-intensity series (a forecast such as the UK's or RTE's), from a file or
/// an HTTP push. The last period lasts `period_minutes`; past its end the series is stale.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub points: Vec<SeriesPoint>,
    /// Length of the last period, minutes.
    pub period_minutes: u32,
    /// A period is expensive at or above this price (`None`: never by price).
    pub expensive_price: Option<f64>,
    /// A period is expensive at or above this intensity, g/kWh (`None`: never by carbon).
    pub expensive_g_co2_per_kwh: Option<f64>,
}

/// Body of `PUT /v1/heat/signal`: a forecast pushed by home automation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalPush {
    pub points: Vec<PushPoint>,
    /// Length of the last period, minutes. Default 30 (UK carbon intensity's half hour).
    #[serde(default = "default_period")]
    pub period_minutes: u32,
    #[serde(default)]
    pub expensive_price: Option<f64>,
    #[serde(default)]
    pub expensive_g_co2_per_kwh: Option<f64>,
}

/// One pushed period; `start` is local time `YYYY-MM-DDTHH:MM[:SS]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPoint {
    pub start: String,
    pub price_per_kwh: f64,
    pub g_co2_per_kwh: f64,
}

fn default_period() -> u32 {
    30
}

fn parse_local(t: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(t.trim(), "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(t.trim(), "%Y-%m-%dT%H:%M:%S"))
        .ok()
}

impl TryFrom<SignalPush> for Series {
    type Error = HeatError;
    fn try_from(p: SignalPush) -> Result<Series, HeatError> {
        if p.points.len() > MAX_PERIODS {
            return Err(config_err(
                "grid signal",
                format!("more than {MAX_PERIODS} periods"),
            ));
        }
        let mut points = Vec::with_capacity(p.points.len());
        for q in p.points {
            let start = parse_local(&q.start).ok_or_else(|| {
                config_err(
                    "grid signal",
                    format!("{:?} is not a local time like 2024-01-03T07:00", q.start),
                )
            })?;
            points.push(SeriesPoint {
                start,
                price_per_kwh: q.price_per_kwh,
                g_co2_per_kwh: q.g_co2_per_kwh,
            });
        }
        Series {
            points,
            period_minutes: p.period_minutes,
            expensive_price: p.expensive_price,
            expensive_g_co2_per_kwh: p.expensive_g_co2_per_kwh,
        }
        .validated()
    }
}

impl Series {
    /// Checks bounds and sorts: every number is a claim of a file or a pushing client.
    pub fn validated(mut self) -> Result<Series, HeatError> {
        let field = "grid signal";
        if self.points.is_empty() || self.points.len() > MAX_PERIODS {
            return Err(config_err(
                field,
                format!("must hold 1 to {MAX_PERIODS} periods"),
            ));
        }
        if !(1..=24 * 60).contains(&self.period_minutes) {
            return Err(config_err(field, "period_minutes must be 1 to 1440".into()));
        }
        for p in &self.points {
            for v in [p.price_per_kwh, p.g_co2_per_kwh] {
                if !(v.is_finite() && (-10.0..=10_000.0).contains(&v)) {
                    return Err(config_err(
                        field,
                        format!("{v} at {} is not a price or a carbon intensity", p.start),
                    ));
                }
            }
        }
        if self.expensive_price.is_none() && self.expensive_g_co2_per_kwh.is_none() {
            return Err(config_err(
                field,
                "say what is expensive: expensive_price or expensive_g_co2_per_kwh".into(),
            ));
        }
        self.points.sort_by_key(|p| p.start);
        Ok(self)
    }

    /// Reads a CSV file: a header line naming the thresholds
    /// `# expensive_price=0.4 expensive_g_co2_per_kwh=200 period_minutes=30` (either
    /// threshold may be left out), then `start,price_per_kwh,g_co2_per_kwh` lines.
    pub fn read(path: &Path) -> Result<Series, HeatError> {
        let io = |source| HeatError::File {
            path: PathBuf::from(path),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_SIGNAL_FILE {
            return Err(HeatError::FileTooLarge {
                path: path.to_path_buf(),
                limit: MAX_SIGNAL_FILE as usize,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Series::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Series, HeatError> {
        let field = "grid signal file";
        let mut s = Series {
            points: Vec::new(),
            period_minutes: 30,
            expensive_price: None,
            expensive_g_co2_per_kwh: None,
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(header) = line.strip_prefix('#') {
                for kv in header.split_whitespace() {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let num = || {
                        v.parse::<f64>().map_err(|_| {
                            config_err(field, format!("line {}: {v:?} is not a number", n + 1))
                        })
                    };
                    match k {
                        "expensive_price" => s.expensive_price = Some(num()?),
                        "expensive_g_co2_per_kwh" => s.expensive_g_co2_per_kwh = Some(num()?),
                        "period_minutes" => s.period_minutes = num()? as u32,
                        _ => {}
                    }
                }
                continue;
            }
            if line.is_empty() || line.starts_with("start") {
                continue;
            }
            let bad = || {
                config_err(
                    field,
                    format!(
                        "line {}: {line:?} is not `YYYY-MM-DDTHH:MM,price,g_co2`",
                        n + 1
                    ),
                )
            };
            let mut parts = line.split(',').map(str::trim);
            let (Some(t), Some(p), Some(g)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad());
            };
            let start = parse_local(t).ok_or_else(bad)?;
            s.points.push(SeriesPoint {
                start,
                price_per_kwh: p.parse().map_err(|_| bad())?,
                g_co2_per_kwh: g.parse().map_err(|_| bad())?,
            });
        }
        s.validated()
    }

    /// When the series stops saying anything.
    pub fn end(&self) -> Option<NaiveDateTime> {
        self.points
            .last()
            .map(|p| p.start + chrono::Duration::minutes(i64::from(self.period_minutes)))
    }

    pub fn at(&self, at: NaiveDateTime) -> Result<Period, String> {
        let i = self.points.partition_point(|p| p.start <= at);
        if i == 0 {
            return Err(format!(
                "the grid signal starts later ({})",
                self.points
                    .first()
                    .map_or_else(String::new, |p| p.start.to_string())
            ));
        }
        if self.end().is_some_and(|end| at >= end) {
            return Err(format!(
                "the grid signal ran out at {}",
                self.end().map_or_else(String::new, |e| e.to_string())
            ));
        }
        let p = &self.points[i - 1];
        let expensive = self.expensive_price.is_some_and(|t| p.price_per_kwh >= t)
            || self
                .expensive_g_co2_per_kwh
                .is_some_and(|t| p.g_co2_per_kwh >= t);
        Ok(Period {
            price_per_kwh: p.price_per_kwh,
            g_co2_per_kwh: p.g_co2_per_kwh,
            peak: expensive,
            expensive,
            label: format!(
                "signal {:.3}/kWh, {:.0} g CO2/kWh",
                p.price_per_kwh, p.g_co2_per_kwh
            ),
        })
    }
}

impl Series {
    /// A series of one period holding a current value from `start` for `minutes`.
    pub fn current(
        start: NaiveDateTime,
        price_per_kwh: Option<f64>,
        g_co2_per_kwh: Option<f64>,
        minutes: u32,
        expensive_price: Option<f64>,
        expensive_g_co2_per_kwh: Option<f64>,
    ) -> Result<Series, HeatError> {
        Series {
            points: vec![SeriesPoint {
                start,
                // A quantity the sensor does not give is shown as 0 and never makes the
                // period expensive: its threshold is left out below.
                price_per_kwh: price_per_kwh.unwrap_or(0.0),
                g_co2_per_kwh: g_co2_per_kwh.unwrap_or(0.0),
            }],
            period_minutes: minutes,
            expensive_price: expensive_price.filter(|_| price_per_kwh.is_some()),
            expensive_g_co2_per_kwh: expensive_g_co2_per_kwh.filter(|_| g_co2_per_kwh.is_some()),
        }
        .validated()
    }
}

/// Where the planner learns what heat costs.
#[derive(Clone, Debug, PartialEq)]
pub enum Grid {
    Tariff(Tariff),
    Series(Series),
}

impl Grid {
    /// What a kWh costs at `at`, or why nobody can say (the plain thermostat then runs).
    pub fn at(&self, at: NaiveDateTime) -> Result<Period, String> {
        match self {
            Grid::Tariff(t) => Ok(t.at(at)),
            Grid::Series(s) => s.at(at),
        }
    }

    /// Reads `--tariff FILE` for the simulation: a TOML tariff (`[heat.tariff]`'s fields at
    /// top level) when the name ends in `.toml`, otherwise a CSV signal file.
    pub fn read(path: &Path) -> Result<Grid, HeatError> {
        if path.extension().is_some_and(|e| e == "toml") {
            let io = |source| HeatError::File {
                path: path.to_path_buf(),
                source,
            };
            if std::fs::metadata(path).map_err(io)?.len() > MAX_SIGNAL_FILE {
                return Err(HeatError::FileTooLarge {
                    path: path.to_path_buf(),
                    limit: MAX_SIGNAL_FILE as usize,
                });
            }
            let text = std::fs::read_to_string(path).map_err(io)?;
            let config: TariffConfig = toml::from_str(&text)
                .map_err(|e| config_err("--tariff", format!("{}: {e}", path.display())))?;
            Ok(Grid::Tariff(Tariff::new(&config)?))
        } else {
            Ok(Grid::Series(Series::read(path)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 1, day)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .unwrap()
    }

    #[test]
    fn tempo_colours_and_peak_hours() {
        let mut c = TariffConfig::default();
        c.days.insert("wed".into(), "red".into());
        c.days.insert("2024-01-04".into(), "white".into());
        let t = Tariff::new(&c).unwrap();
        // Monday: blue.
        let p = t.at(at(1, 12, 0));
        assert_eq!((p.price_per_kwh, p.peak, p.expensive), (0.15, true, false));
        // Wednesday: red, 06:00-22:00 peak is expensive, night is not.
        assert!(t.at(at(3, 6, 0)).expensive);
        assert!(t.at(at(3, 21, 59)).expensive);
        assert!(!t.at(at(3, 22, 0)).expensive);
        assert!(!t.at(at(3, 5, 59)).expensive);
        assert_eq!(t.at(at(3, 12, 0)).price_per_kwh, 0.65);
        // A date wins over nothing; Thursday is white.
        assert_eq!(t.at(at(4, 12, 0)).price_per_kwh, 0.18);
        c.days.insert("someday".into(), "red".into());
        assert!(Tariff::new(&c).is_err());
        c.days.clear();
        c.days.insert("mon".into(), "purple".into());
        assert!(Tariff::new(&c).is_err());
    }

    #[test]
    fn series_parses_goes_stale_and_rejects_nonsense() {
        let s = Series::parse(
            "# expensive_g_co2_per_kwh=200 period_minutes=30\n\
             start,price,g\n\
             2024-01-01T00:00,0.10,150\n\
             2024-01-01T00:30,0.10,250\n",
        )
        .unwrap();
        assert!(!s.at(at(1, 0, 10)).unwrap().expensive);
        assert!(s.at(at(1, 0, 40)).unwrap().expensive);
        assert!(s.at(at(1, 1, 0)).unwrap_err().contains("ran out"));
        assert!(
            Series::parse("2024-01-01T00:00,0.1,100\n").is_err(),
            "no threshold"
        );
        assert!(Series::parse("# expensive_price=1\n2024-01-01T00:00,NaN,1\n").is_err());
        assert!(Series::parse("# expensive_price=1\nyesterday,1,1\n").is_err());
    }
}
