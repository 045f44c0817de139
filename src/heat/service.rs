//! The live heat service: one task owns the controller, the room reading and (when simulated)
//! the room; everyone else holds a cloneable [`HeatHandle`].
//!
//! Every control period the task takes the latest reading (reads the file, takes the last HTTP
//! or MQTT push, or advances the simulated room with the power of the shards actually
//! running), runs the controller, publishes the slot count on the worker's `watch` channel and
//! a [`HeatStatus`] on its own. Household commands (`set`, `auto`, `boost`, `off`) and HTTP
//! pushes arrive over a bounded channel, each with a `oneshot` reply; grid-signal messages from
//! the MQTT subscriber over another. The tick uses tokio's clock, so tests can pause and
//! advance it.
//!
//! Size: about 750 lines, above the 700 the house style asks: one actor whose status, commands,
//! plan and signal handling share its state. Owed a split (the status and its composition in a
//! file of their own).

use std::time::Duration;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::config::{HeatConfig, SignalSource, SourceKind};
use super::controller::{Controller, Decision, Input, Mode, Schedule};
use super::energy::{EnergyMeter, MeterConfig};
use super::grid::{Grid, Series, Tariff};
use super::plan::{plan, Phase, Plan};
use super::room::{OutdoorProfile, Room};
use super::signal::SignalMessage;
use super::source::{self, Reading, SignalUpdate, Trust};
use super::{HeatError, MAX_BOOST_MINUTES, SETPOINT_RANGE};
use crate::model::receipt::EnergyMethod;

/// Commands queued for the service; a household types them, so a few are plenty.
const COMMAND_QUEUE: usize = 32;
/// Readings queued from the MQTT task between two periods.
const READING_QUEUE: usize = 64;
/// Grid-signal messages queued from the MQTT task (each at most `MAX_SIGNAL_MESSAGE`).
const SIGNAL_QUEUE: usize = 16;
/// The simulated tick never runs faster than this in real time, however large the
/// acceleration, so a demo cannot spin a core.
const MIN_WALL_TICK: Duration = Duration::from_millis(10);

/// What `GET /v1/heat` and `hearth heat` show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeatStatus {
    /// `simulated`, `file`, `http` or `mqtt`.
    pub source: String,
    /// `auto`, `manual`, `boost` or `off`.
    pub mode: String,
    pub setpoint_celsius: f64,
    /// Last trusted room temperature; `None` while failing safe.
    pub room_celsius: Option<f64>,
    /// Outdoor temperature (simulated room only).
    pub outdoor_celsius: Option<f64>,
    /// Electrical power of the radiator, W.
    pub power_watts: f64,
    pub slots: usize,
    pub max_slots: usize,
    /// Energy the radiator drew today (local day), idle included, kWh. The meter's figure.
    pub energy_today_kwh: f64,
    /// Energy the meter charged to shards that executed today, kWh (idle is never charged).
    pub energy_charged_today_kwh: f64,
    /// Energy credited today by this household's receipts in the ledger (receipts whose window
    /// ended today), kWh; `None` when the node gave the service no ledger to read.
    pub energy_credited_today_kwh: Option<f64>,
    /// How much heat the room wants, thousandths of full power.
    pub demand_permille: u16,
    /// One sentence: why this many slots.
    pub reason: String,
    /// True while heating is held back because the reading cannot be trusted.
    pub fail_safe: bool,
    /// Minutes of boost left.
    pub boost_minutes_left: Option<u64>,
    /// How shard energy is measured.
    pub energy_method: EnergyMethod,
    /// The controller's local time (the simulated room's clock when simulated).
    pub local_time: String,
    /// The planning controller's plan (absent on a radiator without a tariff or signal).
    #[serde(default)]
    pub plan: Option<Plan>,
    /// Shards the worker holds leased ahead beyond the running ones while heat is wanted
    /// (`heat.plan.lease_ahead_minutes` > 0): one per running slot, 0 when no heat is
    /// wanted. The worker reads it from [`HeatHandle::lease_ahead`].
    #[serde(default)]
    pub lease_ahead_slots: usize,
}

/// How the heat service learns what the household's receipts credit: given the start of the
/// local day (ms since the Unix epoch), the millijoules credited since then. The node passes a
/// reader of its ledger; this module stays a leaf that knows nothing of receipts.
pub type CreditSource = std::sync::Arc<dyn Fn(u64) -> Result<u64, String> + Send + Sync>;

enum Command {
    Push(f64, oneshot::Sender<Result<HeatStatus, HeatError>>),
    Mode(ModeChange, oneshot::Sender<Result<HeatStatus, HeatError>>),
    Signal(Series, oneshot::Sender<Result<HeatStatus, HeatError>>),
}

enum ModeChange {
    Setpoint(f64),
    Auto,
    Boost(Duration),
    Off,
}

/// Cloneable access to the heat service. Every method is cancel-safe: a dropped call either
/// reached the service or did not, and leaves nothing half done.
#[derive(Clone, Debug)]
pub struct HeatHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<HeatStatus>,
    meter: EnergyMeter,
    lease_ahead: watch::Receiver<usize>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("heat command")
    }
}

impl HeatHandle {
    /// The latest status (updated every period and after every command).
    pub fn status(&self) -> HeatStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status update.
    pub fn subscribe(&self) -> watch::Receiver<HeatStatus> {
        self.status.clone()
    }

    /// The meter the worker charges shards with.
    pub fn meter(&self) -> EnergyMeter {
        self.meter.clone()
    }

    /// Shards worth holding leased ahead of the running ones (`lease_ahead_slots` of the
    /// status), for the worker: so a gap in the work on offer does not leave the room cold.
    pub fn lease_ahead(&self) -> watch::Receiver<usize> {
        self.lease_ahead.clone()
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<HeatStatus, HeatError>>) -> Command,
    ) -> Result<HeatStatus, HeatError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| HeatError::Stopped)?;
        rx.await.map_err(|_| HeatError::Stopped)?
    }

    /// A room temperature pushed by home automation (`source = "http"`). Any finite number is
    /// accepted and recorded: an absurd one makes the controller fail safe rather than keep
    /// heating on the previous reading.
    pub async fn push_temperature(&self, celsius: f64) -> Result<HeatStatus, HeatError> {
        if !celsius.is_finite() {
            return Err(HeatError::Unreadable(celsius.to_string()));
        }
        self.ask(|tx| Command::Push(celsius, tx)).await
    }

    /// Holds `celsius` until [`auto`](Self::auto); also ends `off` and `boost`.
    /// A price or carbon-intensity forecast pushed by home automation (`PUT /v1/heat/signal`);
    /// it replaces the previous one.
    pub async fn push_signal(&self, series: Series) -> Result<HeatStatus, HeatError> {
        self.ask(|reply| Command::Signal(series, reply)).await
    }

    pub async fn set_setpoint(&self, celsius: f64) -> Result<HeatStatus, HeatError> {
        if !SETPOINT_RANGE.contains(&celsius) {
            return Err(HeatError::Setpoint(celsius));
        }
        self.ask(|tx| Command::Mode(ModeChange::Setpoint(celsius), tx))
            .await
    }

    /// Back to the weekly schedule.
    pub async fn auto(&self) -> Result<HeatStatus, HeatError> {
        self.ask(|tx| Command::Mode(ModeChange::Auto, tx)).await
    }

    /// Full power for `duration` (1 minute to 24 hours), then back to what ran before.
    pub async fn boost(&self, duration: Duration) -> Result<HeatStatus, HeatError> {
        let minutes = duration.as_secs() / 60;
        if !(1..=MAX_BOOST_MINUTES).contains(&minutes) {
            return Err(HeatError::BoostDuration(minutes));
        }
        self.ask(|tx| Command::Mode(ModeChange::Boost(duration), tx))
            .await
    }

    /// No heating (0 slots, at once) until `set` or `auto`.
    pub async fn off(&self) -> Result<HeatStatus, HeatError> {
        self.ask(|tx| Command::Mode(ModeChange::Off, tx)).await
    }
}

/// Maps real time to the controller's local time.
struct Clock {
    start: Instant,
    start_local: NaiveDateTime,
    acceleration: f64,
    simulated: bool,
}

impl Clock {
    fn room_secs(&self, now: Instant) -> f64 {
        now.duration_since(self.start).as_secs_f64() * self.acceleration
    }

    fn local(&self, now: Instant) -> NaiveDateTime {
        if self.simulated {
            let ms = (self.room_secs(now) * 1000.0) as i64;
            self.start_local + chrono::Duration::milliseconds(ms)
        } else {
            // Read afresh so a change to or from summer time is followed.
            chrono::Local::now().naive_local()
        }
    }
}

struct Simulated {
    room: Room,
    outdoor: OutdoorProfile,
}

fn secs_of_day(t: NaiveDateTime) -> f64 {
    use chrono::Timelike;
    f64::from(t.num_seconds_from_midnight()) + f64::from(t.nanosecond()) / 1e9
}

struct Service {
    config: HeatConfig,
    controller: Controller,
    trust: Trust,
    clock: Clock,
    sim: Option<Simulated>,
    meter: EnergyMeter,
    reading: Option<Reading>,
    /// Why the source could not be read last time, for the status.
    source_error: Option<String>,
    slots: watch::Sender<usize>,
    status: watch::Sender<HeatStatus>,
    last_step: Instant,
    last_decision: Option<Decision>,
    power_watts: f64,
    max_slots: usize,
    credit: Option<CreditSource>,
    /// The `[heat.tariff]`, when the signal source is none.
    tariff: Option<Grid>,
    /// The last signal read from the file, pushed or received over MQTT, or why there is
    /// none.
    signal: Result<Grid, String>,
    /// Why the last MQTT signal message could not be used (unreadable, broker down); shown
    /// with the plain thermostat's reason. Cleared by the next good message.
    signal_error: Option<String>,
    plan: Option<Plan>,
    lease_ahead: watch::Sender<usize>,
}

/// A simulated room starts this much below its setpoint unless configured otherwise: a room
/// whose radiator was off, so a freshly started radiator has heat to give (and work to pull).
const COLD_START_K: f64 = 3.0;

/// Starts the heat service. `max_slots` is the worker's slot count; `slots` is the channel the
/// worker reads its allowance from. The task ends when `shutdown` changes (or its sender is
/// dropped), leaving the last slot count in place.
pub fn spawn(
    config: HeatConfig,
    max_slots: usize,
    slots: watch::Sender<usize>,
    shutdown: watch::Receiver<bool>,
    credit: Option<CreditSource>,
) -> Result<(HeatHandle, JoinHandle<()>), HeatError> {
    config.validate()?;
    let max_slots = max_slots.max(1);
    let simulated = config.source == SourceKind::Simulated;
    let sim_watts_per_slot =
        (config.simulated.radiator_watts - config.idle_watts) / max_slots as f64;
    let meter = EnergyMeter::new(MeterConfig {
        idle_watts: config.idle_watts,
        watts_per_core: config.watts_per_slot,
        simulated_watts_per_slot: simulated.then_some(sim_watts_per_slot),
        max_slots,
        rapl_root: config.rapl_root.clone(),
        proc_stat: "/proc/stat".into(),
    });
    let per_slot = if simulated {
        sim_watts_per_slot
    } else {
        config.watts_per_slot
    };
    let schedule = Schedule::from_config(&config.schedule)?;
    let controller = config.controller(max_slots, per_slot, schedule.clone());
    let now = Instant::now();
    let clock = Clock {
        start: now,
        start_local: chrono::Local::now().naive_local(),
        acceleration: if simulated {
            config.simulated.acceleration
        } else {
            1.0
        },
        simulated,
    };
    let start_local = clock.local(now);
    let sim = simulated.then(|| {
        let initial = config
            .simulated
            .initial_celsius
            .unwrap_or_else(|| schedule.setpoint_at(start_local) - COLD_START_K);
        Simulated {
            room: Room::new(&config.simulated, initial),
            outdoor: OutdoorProfile {
                min_celsius: config.simulated.outdoor_min_celsius,
                max_celsius: config.simulated.outdoor_max_celsius,
            },
        }
    });
    let initial = HeatStatus {
        source: config.source.name().into(),
        mode: "auto".into(),
        setpoint_celsius: schedule.setpoint_at(start_local),
        room_celsius: None,
        outdoor_celsius: None,
        power_watts: 0.0,
        slots: *slots.borrow(),
        max_slots,
        energy_today_kwh: 0.0,
        energy_charged_today_kwh: 0.0,
        energy_credited_today_kwh: None,
        demand_permille: 0,
        reason: "starting".into(),
        fail_safe: false,
        boost_minutes_left: None,
        energy_method: meter.method(),
        local_time: start_local.format("%a %H:%M").to_string(),
        plan: None,
        lease_ahead_slots: 0,
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (reading_tx, reading_rx) = mpsc::channel(READING_QUEUE);
    let (signal_tx, signal_rx) = mpsc::channel(SIGNAL_QUEUE);
    let (lease_ahead_tx, lease_ahead_rx) = watch::channel(0);
    let mqtt_signal = (config.signal.source == SignalSource::Mqtt).then(|| {
        tokio::spawn(source::run_mqtt_signal(
            config.mqtt.clone(),
            config.signal.clone(),
            signal_tx,
            shutdown.clone(),
        ))
    });
    let mqtt = (config.source == SourceKind::Mqtt).then(|| {
        tokio::spawn(source::run_mqtt(
            config.mqtt.clone(),
            reading_tx,
            shutdown.clone(),
        ))
    });
    let tariff = match &config.tariff {
        Some(t) => Some(Grid::Tariff(Tariff::new(t)?)),
        None => None,
    };
    let service = Service {
        tariff,
        signal: Err("no grid signal received yet".into()),
        signal_error: None,
        plan: None,
        lease_ahead: lease_ahead_tx,
        trust: Trust {
            max_age: Duration::from_secs(config.max_age_secs),
            min_celsius: config.min_plausible_celsius,
            max_celsius: config.max_plausible_celsius,
        },
        controller,
        clock,
        sim,
        meter: meter.clone(),
        reading: None,
        source_error: None,
        slots,
        status: status_tx,
        last_step: now,
        last_decision: None,
        power_watts: 0.0,
        max_slots,
        credit,
        config,
    };
    let task = tokio::spawn(async move {
        service.run(cmd_rx, reading_rx, signal_rx, shutdown).await;
        for task in [mqtt, mqtt_signal].into_iter().flatten() {
            let _ = task.await;
        }
    });
    Ok((
        HeatHandle {
            commands: cmd_tx,
            status: status_rx,
            meter,
            lease_ahead: lease_ahead_rx,
        },
        task,
    ))
}

impl Service {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut readings: mpsc::Receiver<Reading>,
        mut signals: mpsc::Receiver<SignalUpdate>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = Duration::from_secs(self.config.period_secs);
        let wall_period = period.div_f64(self.clock.acceleration).max(MIN_WALL_TICK);
        let mut tick = tokio::time::interval(wall_period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.control(),
                Some(cmd) = commands.recv() => self.command(cmd),
                Some(reading) = readings.recv() => self.reading = Some(reading),
                Some(update) = signals.recv() => self.signal_update(update),
                res = shutdown.changed() => {
                    // A dropped sender also means stop.
                    let _ = res;
                    break;
                }
            }
        }
        tracing::debug!("heat service stopped");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Push(celsius, reply) => {
                let result = if self.config.source == SourceKind::Http {
                    self.reading = Some(Reading {
                        celsius,
                        at: Instant::now(),
                    });
                    let now = Instant::now();
                    let trusted = self.judge(now);
                    if trusted.is_err() {
                        // An absurd push fails safe at once rather than at the next period.
                        let decision = self.controller.step(&Input {
                            now_secs: self.clock.room_secs(now),
                            dt_secs: 0.0,
                            local: self.clock.local(now),
                            room: trusted.clone(),
                        });
                        self.apply(decision);
                    }
                    self.publish(trusted.ok());
                    Ok(self.status.borrow().clone())
                } else {
                    Err(HeatError::NotHttpSource(self.config.source.name()))
                };
                let _ = reply.send(result);
            }
            Command::Mode(change, reply) => {
                let now = Instant::now();
                let room_secs = self.clock.room_secs(now);
                match change {
                    ModeChange::Setpoint(c) => {
                        self.controller.set_mode(Mode::Manual { celsius: c })
                    }
                    ModeChange::Auto => self.controller.set_mode(Mode::Auto),
                    ModeChange::Boost(d) => self.controller.boost(room_secs, d.as_secs_f64()),
                    ModeChange::Off => self.controller.set_mode(Mode::Off),
                }
                tracing::info!(
                    mode = self.controller.mode().name(),
                    "heating mode changed by the household"
                );
                let trusted = self.judge(now);
                if matches!(self.controller.mode(), Mode::Off) {
                    // Off takes effect at once rather than at the next period.
                    let decision = self.controller.step(&Input {
                        now_secs: room_secs,
                        dt_secs: 0.0,
                        local: self.clock.local(now),
                        room: trusted.clone(),
                    });
                    self.apply(decision);
                }
                self.publish(trusted.ok());
                let _ = reply.send(Ok(self.status.borrow().clone()));
            }
            Command::Signal(series, reply) => {
                let result = if self.config.signal.source == SignalSource::Http {
                    self.signal = Ok(Grid::Series(series));
                    let now = Instant::now();
                    self.plan = Some(self.plan_at(self.clock.local(now)));
                    self.publish(self.judge(now).ok());
                    Ok(self.status.borrow().clone())
                } else {
                    Err(HeatError::NotHttpSignal)
                };
                let _ = reply.send(result);
            }
        }
    }

    /// A message from the MQTT signal topic: a forecast replaces the signal; a current value
    /// becomes a one-period signal from when it was taken, holding `hold_minutes`; an error
    /// leaves the last signal to go stale by itself and is shown with the fallback's reason.
    fn signal_update(&mut self, update: SignalUpdate) {
        let now = Instant::now();
        let local = self.clock.local(now);
        let c = &self.config.signal;
        let signal = match update {
            Ok(SignalMessage::Forecast(series)) => Ok(series),
            Ok(SignalMessage::Current {
                price_per_kwh,
                g_co2_per_kwh,
                taken_ms,
            }) => {
                // Its age by its own time (a time in the future, from a skewed clock, is now).
                let age_ms = taken_ms.map_or(0, |t| crate::model::now_ms().saturating_sub(t));
                let start =
                    local - chrono::Duration::milliseconds(age_ms.min(i64::MAX as u64) as i64);
                Series::current(
                    start,
                    price_per_kwh,
                    g_co2_per_kwh,
                    c.hold_minutes,
                    c.expensive_price,
                    c.expensive_g_co2_per_kwh,
                )
                .map_err(|e| e.to_string())
            }
            Err(why) => Err(why),
        };
        match signal {
            Ok(series) => {
                self.signal = Ok(Grid::Series(series));
                self.signal_error = None;
            }
            Err(why) => self.signal_error = Some(why),
        }
        self.plan = Some(self.plan_at(local));
        self.publish(self.judge(now).ok());
    }

    /// The plan at `local`, or `None` when neither a tariff nor a signal is configured.
    fn plan_at(&self, local: NaiveDateTime) -> Plan {
        let grid = match self.config.signal.source {
            SignalSource::None => self.tariff.as_ref(),
            SignalSource::File | SignalSource::Http | SignalSource::Mqtt => match &self.signal {
                Ok(g) => Some(g),
                Err(why) => {
                    let last = self
                        .signal_error
                        .as_ref()
                        .map_or_else(String::new, |e| format!(" ({e})"));
                    return Plan {
                        phase: Phase::Plain,
                        offset_k: 0.0,
                        hysteresis_k: None,
                        period: None,
                        until: None,
                        reason: format!("{why}{last}: plain thermostat until a signal comes"),
                    };
                }
            },
        };
        let mut p = plan(&self.config.plan, grid, self.config.hysteresis_k, local);
        if let (Phase::Plain, Some(e)) = (p.phase, &self.signal_error) {
            p.reason = format!("{} (last signal message: {e})", p.reason);
        }
        p
    }

    fn planning(&self) -> bool {
        self.tariff.is_some() || self.config.signal.source != SignalSource::None
    }

    fn control(&mut self) {
        let now = Instant::now();
        let room_dt = now.duration_since(self.last_step).as_secs_f64() * self.clock.acceleration;
        self.last_step = now;
        let local = self.clock.local(now);
        // Power over the period that just ended (the meter integrates every shard start and
        // finish, so short shards between two ticks count too). The simulated room is heated
        // with exactly what the meter says the radiator drew.
        let power = self.meter.tick();
        self.power_watts = power.watts;
        if let Some(sim) = &mut self.sim {
            let outdoor = sim.outdoor.at(secs_of_day(local));
            sim.room.step(room_dt, power.watts, outdoor);
            self.reading = Some(Reading {
                celsius: sim.room.celsius,
                at: now,
            });
        }
        if self.config.source == SourceKind::File {
            match source::read_file(&self.config.file.path, now) {
                Ok(r) => {
                    self.reading = Some(r);
                    self.source_error = None;
                }
                Err(e) => {
                    // Keep the previous reading: it goes stale by itself, and one failed read
                    // (the script rewriting the file) should not stop the heating.
                    tracing::debug!("{e}");
                    self.source_error = Some(e.to_string());
                }
            }
        }
        if self.config.signal.source == SignalSource::File {
            // Re-read every period: the script that writes it may have a new forecast. A file
            // that cannot be read drops the signal, so the plan falls back and says why.
            self.signal = Series::read(&self.config.signal.path)
                .map(Grid::Series)
                .map_err(|e| e.to_string());
        }
        self.plan = self.planning().then(|| self.plan_at(local));
        let offset = self.plan.as_ref().map_or(0.0, |p| p.offset_k);
        let hysteresis = self.plan.as_ref().and_then(|p| p.hysteresis_k);
        let trusted = self.judge(now);
        let decision = self.controller.step_planned(
            &Input {
                now_secs: self.clock.room_secs(now),
                dt_secs: room_dt,
                local,
                room: trusted.clone(),
            },
            offset,
            hysteresis,
        );
        let trusted_room = trusted.ok();
        self.apply(decision);
        self.publish(trusted_room);
    }

    /// The trusted room temperature, or why there is none (with the source's last error).
    fn judge(&self, now: Instant) -> Result<f64, String> {
        self.trust
            .judge(self.reading.as_ref(), now)
            .map_err(|why| match &self.source_error {
                Some(e) => format!("{why} ({e})"),
                None => why,
            })
    }

    fn apply(&mut self, decision: Decision) {
        let changed_reason = self
            .last_decision
            .as_ref()
            .is_none_or(|d| d.fail_safe != decision.fail_safe || d.slots != decision.slots);
        if changed_reason {
            let reason = self.reason(&decision.reason);
            if decision.fail_safe {
                tracing::warn!(slots = decision.slots, "{reason}");
            } else {
                tracing::info!(slots = decision.slots, "{reason}");
            }
        }
        self.slots.send_if_modified(|s| {
            let changed = *s != decision.slots;
            *s = decision.slots;
            changed
        });
        self.last_decision = Some(decision);
    }

    fn publish(&mut self, room: Option<f64>) {
        let now = Instant::now();
        let local = self.clock.local(now);
        let outdoor = self.sim.as_ref().map(|s| s.outdoor.at(secs_of_day(local)));
        let boost_minutes_left = match self.controller.mode() {
            Mode::Boost { until, .. } => {
                Some(((until - self.clock.room_secs(now)) / 60.0).ceil().max(0.0) as u64)
            }
            _ => None,
        };
        let d = self.last_decision.as_ref();
        let today = self.meter.today();
        let credited =
            self.credit
                .as_ref()
                .and_then(|credit| match credit(self.meter.day_start_ms()) {
                    Ok(mj) => Some(mj as f64 / 3.6e9),
                    Err(e) => {
                        tracing::warn!("cannot read today's credit from the ledger: {e}");
                        None
                    }
                });
        let status = HeatStatus {
            source: self.config.source.name().into(),
            mode: self.controller.mode().name().into(),
            setpoint_celsius: self.controller.setpoint(local),
            room_celsius: room,
            outdoor_celsius: outdoor,
            power_watts: round1(self.power_watts),
            slots: self.controller.slots(),
            max_slots: self.max_slots,
            energy_today_kwh: round6(today.drawn_kwh),
            energy_charged_today_kwh: round6(today.charged_kwh),
            energy_credited_today_kwh: credited.map(round6),
            demand_permille: d.map_or(0, |d| d.demand_permille),
            reason: d.map_or_else(|| "starting".into(), |d| self.reason(&d.reason)),
            fail_safe: d.is_some_and(|d| d.fail_safe),
            boost_minutes_left,
            energy_method: self.meter.method(),
            local_time: local.format("%a %H:%M").to_string(),
            plan: self.plan.clone(),
            lease_ahead_slots: self.lease_ahead_slots(),
        };
        let ahead = status.lease_ahead_slots;
        self.lease_ahead
            .send_if_modified(|a| std::mem::replace(a, ahead) != ahead);
        self.status.send_replace(status);
    }
}

impl Service {
    /// The controller's sentence, and the plan's when there is one: composed when shown, so a
    /// signal that arrives between two periods shows at once with the plan it changed.
    fn reason(&self, controller: &str) -> String {
        match &self.plan {
            Some(p) => format!("{controller}; plan: {}", p.reason),
            None => controller.to_string(),
        }
    }

    /// One shard held ahead per running slot while heat is wanted and lease-ahead is on; none
    /// when the room wants no heat, so a warm room never holds work others could do.
    fn lease_ahead_slots(&self) -> usize {
        if self.config.plan.lease_ahead_minutes > 0.0 {
            self.controller.slots()
        } else {
            0
        }
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
