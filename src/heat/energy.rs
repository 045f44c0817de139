//! Energy metering: what the radiator drew, and what each shard is charged.
//!
//! **What a shard is charged.** A shard is charged only for the time it *executes* in the
//! sandbox: the receipt's `start_ms..end_ms` is exactly the window the meter charged, taken by
//! [`EnergyMeter::start_shard`] and [`EnergyMeter::finish_shard`] right around
//! [`crate::exec::Admitted::run`]. Fetching blobs, queueing, waiting for the radiator's memory
//! and reading the input (both in [`crate::exec::Executor::admit`]), verifying and waiting for
//! the coordinator are not shard energy.
//!
//! **Idle power is never credited.** The power a radiator draws doing nothing (`idle_watts`)
//! heats the room but is not work; only the power that executing shards add is charged to
//! them. What the radiator drew above idle while shards executed (the *dynamic* energy),
//! times this process's share of the machine's busy CPU time, is split equally among the
//! shards executing at the time; per method, what it drew is:
//! - **Simulated**: idle plus `(radiator_watts − idle_watts) / max_slots` for each executing
//!   shard (at most `max_slots` counted), so the charges never imply more than the radiator's
//!   power.
//! - **CPU estimate**: idle plus `watts_per_core` × the machine's busy CPU time (`/proc/stat`).
//! - **RAPL**: the CPU package counters. They wrap at `max_energy_range_uj`; they are sampled
//!   at every shard start and finish and every control period, far more often than they
//!   wrap.
//!
//! **Work, not waiting.** For the simulated and CPU-estimate methods a shard is charged at most
//! the model's power per busy core (the slot power, or `watts_per_core`) × the CPU time its
//! own thread used ([`EnergyMeter::finish_shard`]): a shard descheduled on a busy machine is
//! charged for its work, so replicas of one shard claim alike. RAPL splits what it measured
//! equally among the shards executing; `docs/heat.md` says what that still costs.
//!
//! **Conservation.** The meter integrates what the radiator drew (measured for RAPL, estimated
//! from the machine's busy CPU time for the CPU estimate, modelled when simulated) and what it
//! drew above idle (the *dynamic* energy). Whatever a method computes, a charge is cut so that
//! the sum of all charges never exceeds the dynamic energy measured so far: energy credited in
//! receipts is at most energy drawn, in every interval, and at most what one household circuit
//! delivers ([`MAX_WATTS`]) in that interval, whatever a counter read (`Accounting`,
//! property-tested). The arithmetic lives in [`Accounting`], which takes the time and the
//! readings as parameters (no clock, no files), so the law is tested without a machine to
//! measure.
//!
//! The meter's clock is tokio's (so tests can pause it), anchored to the Unix epoch when the
//! meter is made: receipts carry milliseconds since the epoch.
//!
//! The meter is shared (`Clone`); it never blocks for long: each call reads a few small files.
//!
//! Size: about 620 lines of code; the rest are the conservation property tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::receipt::{EnergyMethod, MAX_WATTS};

/// Wraparound-safe difference of two readings of a counter that runs from 0 to `max_range`.
pub fn counter_delta(prev: u64, now: u64, max_range: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        // The counter passed max_range and restarted at 0 once since `prev`.
        max_range.saturating_sub(prev).saturating_add(now)
    }
}

#[derive(Debug)]
struct Zone {
    energy: PathBuf,
    max_range: u64,
    last: u64,
}

/// The package-level RAPL zones under a powercap root.
#[derive(Debug)]
pub struct Rapl {
    zones: Vec<Zone>,
}

/// Most RAPL packages read; a machine has one per CPU socket.
const MAX_ZONES: usize = 16;

fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

impl Rapl {
    /// Finds the readable package zones (`intel-rapl:N`, not their `intel-rapl:N:M` subzones,
    /// which the package already counts). `None` if there is none or none is readable.
    pub fn open(root: &Path) -> Option<Rapl> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.strip_prefix("intel-rapl:").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                })
            })
            .collect();
        names.sort();
        let zones: Vec<Zone> = names
            .into_iter()
            .take(MAX_ZONES)
            .filter_map(|n| {
                let dir = root.join(n);
                let energy = dir.join("energy_uj");
                let last = read_u64(&energy)?;
                let max_range = read_u64(&dir.join("max_energy_range_uj"))?;
                Some(Zone {
                    energy,
                    max_range,
                    last,
                })
            })
            .collect();
        (!zones.is_empty()).then_some(Rapl { zones })
    }

    /// Microjoules used by all packages since the previous call (or since `open`). A zone that
    /// cannot be read this time contributes nothing and keeps its last value.
    pub fn read_delta_uj(&mut self) -> u64 {
        let mut total = 0u64;
        for z in &mut self.zones {
            if let Some(now) = read_u64(&z.energy) {
                total = total.saturating_add(counter_delta(z.last, now, z.max_range));
                z.last = now;
            }
        }
        total
    }
}

/// Busy CPU seconds of the whole machine from `/proc/stat` (user, nice, system, irq, softirq,
/// steal), or `None` if it cannot be read.
pub fn busy_cpu_secs(proc_stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(proc_stat).ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 4 {
        return None;
    }
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(busy as f64 / hz)
}

/// Figures the meter is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct MeterConfig {
    /// Power of the machine doing nothing, W. Drawn, never credited.
    pub idle_watts: f64,
    /// Power one busy core adds, W (CPU estimate).
    pub watts_per_core: f64,
    /// `Some(watts per slot)` when the radiator is simulated.
    pub simulated_watts_per_slot: Option<f64>,
    /// Most shards that run at once (the worker's slots). The simulated radiator never models
    /// more than this many executing shards, so it never draws more than its rated power.
    pub max_slots: usize,
    pub rapl_root: PathBuf,
    pub proc_stat: PathBuf,
}

impl MeterConfig {
    /// A meter that estimates from CPU time, for a node without a heat service.
    pub fn cpu_estimate(watts_per_core: f64, max_slots: usize) -> MeterConfig {
        MeterConfig {
            idle_watts: 0.0,
            watts_per_core,
            simulated_watts_per_slot: None,
            max_slots,
            rapl_root: PathBuf::from("/nonexistent"),
            proc_stat: PathBuf::from("/proc/stat"),
        }
    }
}

/// The meter's arithmetic, sans-IO: time (ms since the Unix epoch) and readings come in as
/// parameters, so the conservation law is property-tested without a machine to measure.
///
/// Between two readings the radiator drew some energy (measured, or modelled as idle plus the
/// model power of each executing shard). What it drew above idle while at least one shard
/// executed is the *dynamic* energy; this process's share of it (its share of the machine's
/// busy CPU time) is *attributable*, and is split equally among the shards executing in that
/// interval. A shard is charged the sum of its splits over its window. So in every interval,
/// the energy charged to the shards that executed in it is at most the attributable energy,
/// which is at most the dynamic energy, which is at most what the radiator drew.
#[derive(Clone, Debug)]
pub struct Accounting {
    idle_watts: f64,
    /// Modelled power per executing shard: the simulated radiator's slot power, or the CPU
    /// estimate's watts per core when no reading is available.
    model_watts: f64,
    max_slots: usize,
    last_ms: u64,
    executing: usize,
    drawn_mj: f64,
    dynamic_mj: f64,
    attributed_mj: f64,
    /// Attributable energy per executing shard, integrated since the start: a shard's charge is
    /// the difference between its finish and its start.
    per_shard_mj: f64,
    charged_mj: f64,
}

/// Where a shard started, for [`Accounting::finish`].
#[derive(Clone, Copy, Debug)]
pub struct AccountMark {
    pub start_ms: u64,
    per_shard_mj: f64,
}

/// Totals since the meter was made, in mJ.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub drawn_mj: f64,
    pub dynamic_mj: f64,
    pub attributed_mj: f64,
    pub charged_mj: f64,
}

impl Accounting {
    pub fn new(idle_watts: f64, model_watts: f64, max_slots: usize, now_ms: u64) -> Accounting {
        Accounting {
            idle_watts: finite_non_negative(idle_watts),
            model_watts: finite_non_negative(model_watts),
            max_slots: max_slots.max(1),
            last_ms: now_ms,
            executing: 0,
            drawn_mj: 0.0,
            dynamic_mj: 0.0,
            attributed_mj: 0.0,
            per_shard_mj: 0.0,
            charged_mj: 0.0,
        }
    }

    /// Integrates up to `now_ms`. `measured_mj` is what the radiator drew since the previous
    /// call, when the method measures it; `None` models it as idle plus `model_watts` for each
    /// executing shard (at most `max_slots` of them, so a simulated radiator never draws more
    /// than its rating). `ours` is this process's share (0..=1) of the machine's busy CPU time
    /// over the interval. A clock that went backwards adds nothing.
    pub fn advance(&mut self, now_ms: u64, measured_mj: Option<f64>, ours: f64) {
        let dt_ms = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        let idle = self.idle_watts * dt_ms;
        let drawn = match measured_mj {
            Some(m) => finite_non_negative(m),
            None => idle + self.model_watts * self.executing.min(self.max_slots) as f64 * dt_ms,
        };
        self.drawn_mj += drawn;
        // Energy drawn while nothing executes is idle by definition, whatever was measured.
        // Energy read within the same millisecond as the previous reading is drawn but never
        // attributed: a receipt's window is whole milliseconds, and a verifier checking it
        // against the meter must find the energy inside the window.
        if self.executing > 0 && dt_ms > 0.0 {
            let dynamic = (drawn - idle).max(0.0);
            // Never more than a household circuit delivers ([`MAX_WATTS`]), whatever a counter
            // read: receipts are bounded so, alone and together, and a coordinator refuses
            // claims that together imply more (`jobs/coordinator/book/draw.rs`).
            let attributable =
                (dynamic * finite_non_negative(ours).min(1.0)).min(MAX_WATTS as f64 * dt_ms);
            self.dynamic_mj += dynamic;
            self.attributed_mj += attributable;
            self.per_shard_mj += attributable / self.executing as f64;
        }
    }

    /// A shard starts executing at `now_ms` (after integrating up to it).
    pub fn start(&mut self, now_ms: u64, measured_mj: Option<f64>, ours: f64) -> AccountMark {
        self.advance(now_ms, measured_mj, ours);
        self.executing += 1;
        AccountMark {
            start_ms: self.last_ms,
            per_shard_mj: self.per_shard_mj,
        }
    }

    /// The shard stops executing at `now_ms`. Returns `(end_ms, charged mJ)`.
    ///
    /// `busy_ms` is the CPU time the shard's own thread used in its window, for the methods
    /// that model power per busy core (simulated, CPU estimate): the charge is then at most
    /// `model_watts × busy_ms`, so a shard descheduled on a busy machine is charged for the
    /// work it did, not for the time it waited for a core. `None` (RAPL, or a run whose CPU
    /// time is unknown) leaves its split alone.
    pub fn finish(
        &mut self,
        mark: AccountMark,
        now_ms: u64,
        measured_mj: Option<f64>,
        ours: f64,
        busy_ms: Option<f64>,
    ) -> (u64, u64) {
        self.advance(now_ms, measured_mj, ours);
        self.executing = self.executing.saturating_sub(1);
        let end_ms = self.last_ms.max(mark.start_ms);
        let mut wanted = (self.per_shard_mj - mark.per_shard_mj).max(0.0);
        if let Some(busy_ms) = busy_ms {
            wanted = wanted.min(self.model_watts * finite_non_negative(busy_ms));
        }
        // Never more than what is attributable and not yet charged; rounding down to whole
        // millijoules keeps the sum of receipts under the integral.
        let available = (self.attributed_mj - self.charged_mj).max(0.0);
        let charged = wanted.min(available).floor();
        self.charged_mj += charged;
        (end_ms, charged as u64)
    }

    pub fn executing(&self) -> usize {
        self.executing
    }

    pub fn totals(&self) -> Totals {
        Totals {
            drawn_mj: self.drawn_mj,
            dynamic_mj: self.dynamic_mj,
            attributed_mj: self.attributed_mj,
            charged_mj: self.charged_mj,
        }
    }
}

fn finite_non_negative(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Where a shard started, for [`EnergyMeter::finish_shard`].
#[derive(Clone, Copy, Debug)]
pub struct ShardMark {
    account: AccountMark,
}

/// What a shard cost, and the window it was charged for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardEnergy {
    pub energy_mj: u64,
    pub method: EnergyMethod,
    /// The charged window, ms since the Unix epoch: what the receipt records.
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Power over the last period and the energy it adds up to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerSample {
    pub watts: f64,
    pub joules: f64,
}

/// Energy of the current local day, in kWh.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnergyToday {
    /// Everything the radiator drew today, idle included.
    pub drawn_kwh: f64,
    /// What the meter charged to shards that executed today (before any verification).
    pub charged_kwh: f64,
}

#[derive(Debug)]
struct Inner {
    config: MeterConfig,
    method: EnergyMethod,
    rapl: Option<Rapl>,
    account: Accounting,
    /// Busy CPU seconds of the machine, and CPU seconds of this process, at the last sample.
    last_busy: Option<f64>,
    last_ours: Option<f64>,
    /// For [`EnergyMeter::tick`]: drawn total and time at the previous tick.
    tick_drawn_mj: f64,
    tick_ms: u64,
    /// Local day and the totals at its start.
    day: chrono::NaiveDate,
    day_start: Totals,
}

#[derive(Clone, Debug)]
pub struct EnergyMeter {
    inner: Arc<Mutex<Inner>>,
    /// The epoch time at `base`: the meter's clock is `epoch_ms + (now − base)` on tokio's clock.
    epoch_ms: u64,
    base: tokio::time::Instant,
}

impl EnergyMeter {
    pub fn new(config: MeterConfig) -> EnergyMeter {
        let rapl = if config.simulated_watts_per_slot.is_some() {
            None
        } else {
            Rapl::open(&config.rapl_root)
        };
        let last_busy = busy_cpu_secs(&config.proc_stat);
        let method = match (&config.simulated_watts_per_slot, &rapl, last_busy) {
            (Some(_), _, _) => EnergyMethod::Simulated,
            (None, Some(_), Some(_)) => EnergyMethod::Rapl,
            _ => EnergyMethod::CpuEstimate,
        };
        match (&rapl, method) {
            (Some(r), EnergyMethod::Rapl) => {
                tracing::info!(zones = r.zones.len(), "energy: measuring with RAPL")
            }
            (_, EnergyMethod::CpuEstimate) => tracing::info!(
                "energy: RAPL counters not readable under {}; estimating from CPU time",
                config.rapl_root.display()
            ),
            _ => {}
        }
        let epoch_ms = crate::model::now_ms();
        let model_watts = config
            .simulated_watts_per_slot
            .unwrap_or(config.watts_per_core);
        let account = Accounting::new(config.idle_watts, model_watts, config.max_slots, epoch_ms);
        EnergyMeter {
            inner: Arc::new(Mutex::new(Inner {
                method,
                rapl: if method == EnergyMethod::Rapl {
                    rapl
                } else {
                    None
                },
                account,
                last_busy,
                last_ours: process_cpu_secs(),
                tick_drawn_mj: 0.0,
                tick_ms: epoch_ms,
                day: local_day(epoch_ms),
                day_start: Totals::default(),
                config,
            })),
            epoch_ms,
            base: tokio::time::Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain numbers behind, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The meter's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.epoch_ms
            .saturating_add(self.base.elapsed().as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn method(&self) -> EnergyMethod {
        self.lock().method
    }

    /// Shards executing right now (between `start_shard` and `finish_shard`).
    pub fn active_shards(&self) -> usize {
        self.lock().account.executing()
    }

    /// Integrates up to `now_ms` with fresh readings: what the radiator drew since the last
    /// sample (RAPL: measured; CPU estimate: idle plus busy CPU time × watts per core;
    /// simulated: modelled) and this process's share of the machine's busy CPU time.
    fn sample(inner: &mut Inner, now_ms: u64) {
        let busy = busy_cpu_secs(&inner.config.proc_stat);
        let ours = process_cpu_secs();
        let busy_delta = match (inner.last_busy, busy) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        let ours_delta = match (inner.last_ours, ours) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        if busy.is_some() {
            inner.last_busy = busy;
        }
        if ours.is_some() {
            inner.last_ours = ours;
        }
        let dt_ms = now_ms.saturating_sub(inner.account.last_ms) as f64;
        let measured = match inner.method {
            EnergyMethod::Simulated => None,
            EnergyMethod::Rapl => inner
                .rapl
                .as_mut()
                .map(|r| r.read_delta_uj() as f64 / 1000.0),
            EnergyMethod::CpuEstimate => busy_delta.map(|b| {
                inner.config.idle_watts * dt_ms + b * 1000.0 * inner.config.watts_per_core
            }),
        };
        // The simulated radiator runs nothing but shards. Elsewhere, our share of the busy CPU
        // time; when the machine's clock ticks are too coarse to see any, all of it (the charge
        // is still bounded by what was measured).
        let share = match (inner.method, ours_delta, busy_delta) {
            (EnergyMethod::Simulated, _, _) => 1.0,
            (_, Some(o), Some(b)) if b > 0.0 => (o / b).min(1.0),
            _ => 1.0,
        };
        inner.account.advance(now_ms, measured, share);
        let day = local_day(now_ms);
        if day != inner.day {
            inner.day = day;
            inner.day_start = inner.account.totals();
        }
    }

    /// Call right before a shard starts executing.
    pub fn start_shard(&self) -> ShardMark {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::sample(&mut inner, now);
        ShardMark {
            account: inner.account.start(now, Some(0.0), 1.0),
        }
    }

    /// Call right after the shard stopped executing, with the CPU time its thread used
    /// meanwhile when known ([`crate::exec::ShardOutput::cpu_time`]). Returns the energy
    /// charged and the window it was charged for. The simulated and CPU-estimate methods
    /// charge at most their power per busy core × that CPU time ([`Accounting::finish`]);
    /// RAPL measures, and splits what it measured.
    pub fn finish_shard(&self, mark: ShardMark, busy: Option<std::time::Duration>) -> ShardEnergy {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::sample(&mut inner, now);
        let busy_ms = match inner.method {
            EnergyMethod::Rapl => None,
            EnergyMethod::Simulated | EnergyMethod::CpuEstimate => {
                busy.map(|b| b.as_secs_f64() * 1000.0)
            }
        };
        let (end_ms, energy_mj) = inner
            .account
            .finish(mark.account, now, Some(0.0), 1.0, busy_ms);
        ShardEnergy {
            energy_mj,
            method: inner.method,
            start_ms: mark.account.start_ms,
            end_ms,
        }
    }

    /// Power drawn since the previous tick (average over the period) and its energy. The heat
    /// service calls this every control period, which also keeps RAPL counters from wrapping
    /// unseen. The simulated room is heated with this power.
    pub fn tick(&self) -> PowerSample {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::sample(&mut inner, now);
        let drawn = inner.account.totals().drawn_mj;
        let joules = (drawn - inner.tick_drawn_mj).max(0.0) / 1000.0;
        let secs = now.saturating_sub(inner.tick_ms) as f64 / 1000.0;
        inner.tick_drawn_mj = drawn;
        inner.tick_ms = now;
        PowerSample {
            watts: if secs > 0.0 { joules / secs } else { 0.0 },
            joules,
        }
    }

    /// Totals since the meter was made.
    pub fn totals(&self) -> Totals {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::sample(&mut inner, now);
        inner.account.totals()
    }

    /// Drawn and charged energy of the current local day.
    pub fn today(&self) -> EnergyToday {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::sample(&mut inner, now);
        let t = inner.account.totals();
        let s = inner.day_start;
        EnergyToday {
            drawn_kwh: kwh(t.drawn_mj - s.drawn_mj),
            charged_kwh: kwh(t.charged_mj - s.charged_mj),
        }
    }

    /// Start of the current local day, ms since the Unix epoch (for "credited today").
    pub fn day_start_ms(&self) -> u64 {
        day_start_ms(self.now_ms())
    }
}

/// CPU seconds (user + system) this process has used, or `None` if it cannot be read.
pub fn process_cpu_secs() -> Option<f64> {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn kwh(mj: f64) -> f64 {
    (mj.max(0.0) / 3.6e9 * 1e6).round() / 1e6
}

fn local_day(epoch_ms: u64) -> chrono::NaiveDate {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(epoch_ms.min(i64::MAX as u64) as i64) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.date_naive(),
        chrono::LocalResult::None => chrono::NaiveDate::MIN,
    }
}

/// Start of the local day holding `epoch_ms`, ms since the Unix epoch.
pub fn day_start_ms(epoch_ms: u64) -> u64 {
    use chrono::TimeZone;
    let day = local_day(epoch_ms);
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    match chrono::Local.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.timestamp_millis().max(0) as u64
        }
        chrono::LocalResult::None => epoch_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_handles_wraparound() {
        assert_eq!(counter_delta(100, 250, 1000), 150);
        assert_eq!(counter_delta(900, 50, 1000), 150);
        assert_eq!(counter_delta(0, 0, 1000), 0);
    }

    use proptest::prelude::*;

    /// One receipt as a verifier sees it: the window and the energy.
    #[derive(Clone, Copy, Debug)]
    struct Charged {
        start_ms: u64,
        end_ms: u64,
        energy_mj: u64,
        /// The CPU time the shard's thread was said to use, if any.
        busy_ms: Option<f64>,
    }

    /// A worker with `slots` slots: each step either starts a shard (if a slot is free), or
    /// finishes one of the executing shards, after letting time pass. `measured` gives the
    /// energy drawn for each step (`None`: simulated). Returns the receipts and, at every
    /// step, (time, drawn total).
    fn run(
        acc: &mut Accounting,
        slots: usize,
        steps: &[(u64, u8, Option<f64>, f64)],
    ) -> (Vec<Charged>, Vec<(u64, f64)>) {
        let mut now = 1_000_000u64;
        let mut executing: Vec<AccountMark> = Vec::new();
        let mut receipts = Vec::new();
        let mut checkpoints = vec![(now, acc.totals().drawn_mj)];
        for &(dt, pick, measured, ours) in steps {
            now += dt;
            let start = executing.is_empty() || (pick % 2 == 0 && executing.len() < slots);
            if start {
                executing.push(acc.start(now, measured, ours));
            } else {
                let mark = executing.swap_remove(pick as usize % executing.len());
                // A third of the shards report no CPU time; the rest some part of their
                // window (a descheduled shard uses less than all of it).
                let window = now.saturating_sub(mark.start_ms) as f64;
                let busy_ms = (pick % 3 != 0).then(|| window * f64::from(pick) / 255.0);
                let (end_ms, energy_mj) = acc.finish(mark, now, measured, ours, busy_ms);
                receipts.push(Charged {
                    start_ms: mark.start_ms,
                    end_ms,
                    energy_mj,
                    busy_ms,
                });
            }
            checkpoints.push((now, acc.totals().drawn_mj));
            let t = acc.totals();
            assert!(t.charged_mj <= t.attributed_mj + 1e-6, "{t:?}");
            assert!(t.attributed_mj <= t.dynamic_mj + 1e-6, "{t:?}");
            assert!(t.dynamic_mj <= t.drawn_mj + 1e-6, "{t:?}");
        }
        (receipts, checkpoints)
    }

    /// For every pair of moments a < b: the receipts whose windows lie within [a, b] credit at
    /// most what the meter says was drawn in [a, b].
    fn assert_every_interval_conserved(receipts: &[Charged], checkpoints: &[(u64, f64)]) {
        for (i, &(a, drawn_a)) in checkpoints.iter().enumerate() {
            for &(b, drawn_b) in &checkpoints[i..] {
                let credited: u64 = receipts
                    .iter()
                    .filter(|r| r.start_ms >= a && r.end_ms <= b)
                    .map(|r| r.energy_mj)
                    .sum();
                assert!(
                    credited as f64 <= drawn_b - drawn_a + 1e-3,
                    "[{a}, {b}]: credited {credited} mJ, drawn {} mJ",
                    drawn_b - drawn_a
                );
                // And never more than a household circuit delivers, whatever was measured: a
                // coordinator refuses claims that together imply more (`book/draw.rs`).
                assert!(
                    credited <= MAX_WATTS * (b - a),
                    "[{a}, {b}]: credited {credited} mJ, more than {MAX_WATTS} W"
                );
            }
        }
    }

    proptest! {
        /// A simulated radiator never credits more than its rated power: no receipt implies
        /// more than the slot power, receipts overlapping at any instant sum to at most the
        /// radiator's power above idle, and every interval is conserved.
        #[test]
        fn simulated_radiator_conserves_energy(
            slots in 1usize..8,
            radiator_watts in 100.0f64..3000.0,
            idle_watts in 0.0f64..90.0,
            steps in proptest::collection::vec((0u64..400, any::<u8>()), 1..120),
        ) {
            let per_slot = (radiator_watts - idle_watts) / slots as f64;
            let mut acc = Accounting::new(idle_watts, per_slot, slots, 1_000_000);
            let steps: Vec<_> = steps.into_iter().map(|(dt, p)| (dt, p, None, 1.0)).collect();
            let (receipts, checkpoints) = run(&mut acc, slots, &steps);
            for r in &receipts {
                let window = (r.end_ms - r.start_ms) as f64;
                // W × ms = mJ: a receipt's energy over its window is its mean power.
                prop_assert!(r.energy_mj as f64 <= per_slot * window + 1e-6, "{r:?}");
                // A slot is charged for the CPU time its shard used, never for waiting.
                if let Some(busy) = r.busy_ms {
                    prop_assert!(r.energy_mj as f64 <= per_slot * busy + 1e-6, "{r:?}");
                }
            }
            // Sweep every window edge: the mean powers of the receipts covering it.
            for edge in receipts.iter().flat_map(|r| [r.start_ms, r.end_ms]) {
                let watts: f64 = receipts
                    .iter()
                    .filter(|r| r.start_ms <= edge && edge < r.end_ms)
                    .map(|r| r.energy_mj as f64 / (r.end_ms - r.start_ms) as f64)
                    .sum();
                prop_assert!(watts <= radiator_watts - idle_watts + 1e-6, "{watts} W at {edge}");
            }
            assert_every_interval_conserved(&receipts, &checkpoints);
        }

        /// Measured methods (RAPL, CPU estimate): whatever the readings say, even nonsense, the
        /// receipts never credit more than was measured, in every interval.
        #[test]
        fn measured_radiator_conserves_energy(
            slots in 1usize..8,
            idle_watts in 0.0f64..90.0,
            steps in proptest::collection::vec(
                (0u64..400, any::<u8>(), prop_oneof![
                    Just(None), (0.0f64..500_000.0).prop_map(Some), Just(Some(f64::NAN)),
                    Just(Some(-5.0)), Just(Some(f64::INFINITY))
                ], -0.5f64..1.5),
                1..120),
        ) {
            let mut acc = Accounting::new(idle_watts, 15.0, slots, 1_000_000);
            let (receipts, checkpoints) = run(&mut acc, slots, &steps);
            assert_every_interval_conserved(&receipts, &checkpoints);
        }
    }

    #[test]
    fn idle_power_is_not_credited() {
        // 100 W idle, 500 W per slot. Two seconds with nothing running, then one shard for a
        // second, then two shards together for a second.
        let mut acc = Accounting::new(100.0, 500.0, 2, 0);
        acc.advance(2_000, None, 1.0);
        let a = acc.start(2_000, None, 1.0);
        let b = acc.start(3_000, None, 1.0);
        let (end_a, ea) = acc.finish(a, 4_000, None, 1.0, None);
        let (end_b, eb) = acc.finish(b, 4_000, None, 1.0, None);
        assert_eq!((end_a, end_b), (4_000, 4_000));
        assert_eq!(ea, 1_000_000, "500 W × 2 s");
        assert_eq!(eb, 500_000, "500 W × 1 s");
        let t = acc.totals();
        // Drawn: 100 W × 4 s idle + 500 W × 3 shard-seconds.
        assert!((t.drawn_mj - 1_900_000.0).abs() < 1e-6, "{t:?}");
        assert!((t.charged_mj - 1_500_000.0).abs() < 1e-6, "{t:?}");
    }

    /// Found in `hearth demo` (four radiators on two cores): a replica descheduled for part of
    /// its run had a longer window than its partner on another radiator, so it claimed more
    /// energy for the same work and the coordinator's credit bound capped it. Charged by the
    /// CPU time its thread used, both claim the same.
    #[test]
    fn a_descheduled_shard_is_charged_for_its_work_not_its_wait() {
        // A 500 W slot. One shard ran 1 s of CPU in a 1 s window, its replica the same work
        // in a 4 s window (descheduled three quarters of it).
        let mut acc = Accounting::new(0.0, 500.0, 2, 0);
        let quick = acc.start(0, None, 1.0);
        let (_, e_quick) = acc.finish(quick, 1_000, None, 1.0, Some(1_000.0));
        let slow = acc.start(1_000, None, 1.0);
        let (_, e_slow) = acc.finish(slow, 5_000, None, 1.0, Some(1_000.0));
        assert_eq!((e_quick, e_slow), (500_000, 500_000));
        // Without its CPU time the window alone counts: four times as much.
        let unknown = acc.start(5_000, None, 1.0);
        assert_eq!(acc.finish(unknown, 9_000, None, 1.0, None).1, 2_000_000);
    }

    #[test]
    fn more_shards_than_slots_share_the_rated_power() {
        // A simulated radiator of 2 slots × 500 W with 4 shards executing (a bug elsewhere)
        // still draws and credits 1000 W, not 2000 W.
        let mut acc = Accounting::new(0.0, 500.0, 2, 0);
        let marks: Vec<_> = (0..4).map(|_| acc.start(0, None, 1.0)).collect();
        let total: u64 = marks
            .into_iter()
            .map(|m| acc.finish(m, 1_000, None, 1.0, None).1)
            .sum();
        assert_eq!(total, 1_000_000);
    }
}
