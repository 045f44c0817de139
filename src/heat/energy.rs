//! Energy metering: how many joules a shard cost, and how much the radiator drew today.
//!
//! Three methods, best first (the receipt records which one was used):
//! - **RAPL**: the CPU package energy counters Intel and AMD expose under
//!   `/sys/class/powercap/intel-rapl:N/energy_uj`. They count the whole package, so a shard is
//!   charged the package energy over its run times its share of the CPU time used meanwhile
//!   (from `/proc/stat`), which also gives it its share of the idle baseline. The counters wrap
//!   at `max_energy_range_uj`; they are sampled every control period, far more often than they
//!   wrap (minutes to hours). Recent kernels make `energy_uj` readable by root only; without
//!   it we fall back to the estimate.
//! - **CPU estimate**: CPU time × watts per core, plus the idle power shared among the slots.
//! - **Simulated**: the simulated radiator's own per-slot power over the shard's wall time.
//!
//! The meter is shared (`Clone`); it never blocks for long: each call reads a few small files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::receipt::EnergyMethod;

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
    /// Power of the machine doing nothing, W.
    pub idle_watts: f64,
    /// Power one busy core or slot adds, W (CPU estimate).
    pub watts_per_core: f64,
    /// `Some(watts per slot)` when the radiator is simulated.
    pub simulated_watts_per_slot: Option<f64>,
    pub rapl_root: PathBuf,
    pub proc_stat: PathBuf,
}

#[derive(Debug)]
struct Inner {
    config: MeterConfig,
    rapl: Option<Rapl>,
    /// Package energy counted since the meter was made, µJ.
    total_uj: u128,
    last_tick: Instant,
    last_busy: Option<f64>,
    /// Slots the controller currently allows: the idle power is shared among them.
    slots: usize,
    /// Shards between `start_shard` and `finish_shard`.
    active: usize,
}

/// Where a shard started, for [`EnergyMeter::finish_shard`].
#[derive(Clone, Copy, Debug)]
pub struct ShardMark {
    at: Instant,
    total_uj: u128,
    busy: Option<f64>,
}

/// What a shard cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardEnergy {
    pub energy_mj: u64,
    pub method: EnergyMethod,
}

/// Power over the last period and the energy it adds up to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerSample {
    pub watts: f64,
    pub joules: f64,
}

#[derive(Clone, Debug)]
pub struct EnergyMeter {
    inner: Arc<Mutex<Inner>>,
}

impl EnergyMeter {
    pub fn new(config: MeterConfig) -> EnergyMeter {
        let rapl = if config.simulated_watts_per_slot.is_some() {
            None
        } else {
            Rapl::open(&config.rapl_root)
        };
        let last_busy = busy_cpu_secs(&config.proc_stat);
        match &rapl {
            Some(r) => tracing::info!(zones = r.zones.len(), "energy: measuring with RAPL"),
            None if config.simulated_watts_per_slot.is_none() => tracing::info!(
                "energy: RAPL counters not readable under {}; estimating from CPU time",
                config.rapl_root.display()
            ),
            None => {}
        }
        EnergyMeter {
            inner: Arc::new(Mutex::new(Inner {
                config,
                rapl,
                total_uj: 0,
                last_tick: Instant::now(),
                last_busy,
                slots: 0,
                active: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain numbers behind, still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn method(&self) -> EnergyMethod {
        let inner = self.lock();
        if inner.config.simulated_watts_per_slot.is_some() {
            EnergyMethod::Simulated
        } else if inner.rapl.is_some() && inner.last_busy.is_some() {
            EnergyMethod::Rapl
        } else {
            EnergyMethod::CpuEstimate
        }
    }

    /// Shards running right now (between `start_shard` and `finish_shard`).
    pub fn active_shards(&self) -> usize {
        self.lock().active
    }

    /// Tells the meter how many slots the controller allows (the heat service does this).
    pub fn set_slots(&self, slots: usize) {
        self.lock().slots = slots;
    }

    fn sample(inner: &mut Inner) {
        if let Some(r) = &mut inner.rapl {
            inner.total_uj += u128::from(r.read_delta_uj());
        }
    }

    /// Call when a shard starts running.
    pub fn start_shard(&self) -> ShardMark {
        let mut inner = self.lock();
        Self::sample(&mut inner);
        inner.active += 1;
        ShardMark {
            at: Instant::now(),
            total_uj: inner.total_uj,
            busy: busy_cpu_secs(&inner.config.proc_stat),
        }
    }

    /// Call when the shard has finished, with the CPU time its thread used.
    pub fn finish_shard(&self, mark: ShardMark, cpu_time: Duration) -> ShardEnergy {
        let mut inner = self.lock();
        Self::sample(&mut inner);
        inner.active = inner.active.saturating_sub(1);
        let wall = mark.at.elapsed().as_secs_f64();
        let cpu = cpu_time.as_secs_f64();
        // The idle baseline is shared by the slots that could run meanwhile.
        let sharers = inner.slots.max(inner.active + 1).max(1) as f64;
        let idle_share = inner.config.idle_watts * wall / sharers;
        if let Some(per_slot) = inner.config.simulated_watts_per_slot {
            return ShardEnergy {
                energy_mj: to_mj(per_slot * wall + idle_share),
                method: EnergyMethod::Simulated,
            };
        }
        let busy_now = busy_cpu_secs(&inner.config.proc_stat);
        if inner.rapl.is_some() {
            if let (Some(before), Some(after)) = (mark.busy, busy_now) {
                let busy = after - before;
                let package_j = (inner.total_uj - mark.total_uj) as f64 / 1e6;
                // Our share of the CPU work done meanwhile; a shard that did all of it (or a
                // clock tick too coarse to see it) is charged the whole package.
                let share = if busy > cpu { cpu / busy } else { 1.0 };
                return ShardEnergy {
                    energy_mj: to_mj(package_j * share),
                    method: EnergyMethod::Rapl,
                };
            }
        }
        ShardEnergy {
            energy_mj: to_mj(cpu * inner.config.watts_per_core + idle_share),
            method: EnergyMethod::CpuEstimate,
        }
    }

    /// Power drawn since the previous tick, measured (RAPL) or estimated (busy CPU time ×
    /// watts per core + idle). The heat service calls this every period, which also keeps the
    /// RAPL counters from wrapping unseen. `None` when simulated: the room model knows better.
    pub fn tick(&self) -> Option<PowerSample> {
        let mut inner = self.lock();
        if inner.config.simulated_watts_per_slot.is_some() {
            return None;
        }
        let now = Instant::now();
        let secs = now.duration_since(inner.last_tick).as_secs_f64();
        inner.last_tick = now;
        let busy = busy_cpu_secs(&inner.config.proc_stat);
        let busy_secs = match (inner.last_busy, busy) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        inner.last_busy = busy;
        if secs <= 0.0 {
            return None;
        }
        let joules = if let Some(r) = &mut inner.rapl {
            let uj = r.read_delta_uj();
            inner.total_uj += u128::from(uj);
            uj as f64 / 1e6
        } else {
            let busy = busy_secs.unwrap_or(inner.slots as f64 * secs);
            inner.config.idle_watts * secs + busy * inner.config.watts_per_core
        };
        Some(PowerSample {
            watts: joules / secs,
            joules,
        })
    }
}

fn to_mj(joules: f64) -> u64 {
    if joules.is_finite() && joules > 0.0 {
        (joules * 1000.0).round() as u64
    } else {
        0
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
}
