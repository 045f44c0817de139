//! Heat subsystem: the simulated day, the controller, every temperature source (real files, a
//! real HTTP server, a real mosquitto broker), fail-safe behaviour and the energy meter.
//! Scheduler tests run on tokio's paused clock; network tests on loopback with timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use hearth::heat::config::SourceKind;
use hearth::heat::controller::{
    Controller, ControllerConfig, Input, Mode, Schedule, OVERHEAT_CELSIUS,
};
use hearth::heat::energy::{counter_delta, EnergyMeter, MeterConfig, Rapl};
use hearth::heat::sim::{simulate, SimOptions};
use hearth::heat::{spawn, HeatConfig, HeatHandle, HeatStatus};
use hearth::model::receipt::EnergyMethod;
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(20);

fn monday(h: u32, m: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(h, m, 0))
        .unwrap()
}

fn controller(max_slots: usize) -> Controller {
    Controller::new(
        ControllerConfig {
            hysteresis_k: 0.3,
            kp_per_k: 1.0,
            integral_secs: 3600.0,
            min_slots: 0,
            max_slots,
        },
        Schedule::constant(19.0),
    )
}

fn input(room: Result<f64, String>) -> Input {
    Input {
        now_secs: 0.0,
        dt_secs: 60.0,
        local: monday(12, 0),
        room,
    }
}

// ---------------------------------------------------------------------------------------------
// Simulation

#[test]
fn simulated_winter_day_holds_setpoint() {
    for slots in [2, 8, 16] {
        let mut opts = SimOptions::new(HeatConfig::default());
        opts.max_slots = slots;
        opts.setpoint = Some(19.0);
        let r = simulate(&opts).unwrap();
        assert!(
            r.fraction_within_half_kelvin >= 0.95,
            "{slots} slots: only {:.3} of the day within 0.5 K ({:.2}..{:.2} °C)",
            r.fraction_within_half_kelvin,
            r.min_room_celsius,
            r.max_room_celsius
        );
        // Mean loss ≈ (19 − 2) K × 50 W/K ≈ 850 W ≈ 20 kWh a day.
        assert!((17.0..24.0).contains(&r.energy_kwh), "{} kWh", r.energy_kwh);
        assert!(r.max_slot_step <= 1, "slots jumped by {}", r.max_slot_step);
        assert_eq!(r.samples.len(), 24 * 60);

        // Even from a cold start (no warm-up, integral at zero) the room, starting at the
        // setpoint, stays within the band.
        opts.warmup_hours = 0.0;
        let r = simulate(&opts).unwrap();
        assert!(
            r.fraction_within_half_kelvin >= 0.95,
            "cold start: {}",
            r.fraction_within_half_kelvin
        );
    }
}

#[test]
fn simulated_day_follows_day_and_night_schedule() {
    let mut opts = SimOptions::new(HeatConfig::default());
    opts.setpoint = None;
    let r = simulate(&opts).unwrap();
    let at = |h: f64| r.samples.iter().find(|s| s.hours >= h).unwrap();
    assert_eq!(at(3.0).setpoint_celsius, 16.0);
    assert_eq!(at(12.0).setpoint_celsius, 19.0);
    assert_eq!(at(23.0).setpoint_celsius, 16.0);
    // Held in the middle of the night and of the day.
    assert!((at(4.0).room_celsius - 16.0).abs() <= 0.5, "{:?}", at(4.0));
    assert!(
        (at(13.0).room_celsius - 19.0).abs() <= 0.5,
        "{:?}",
        at(13.0)
    );
    // Night setback saves energy against holding 19 °C all day.
    let constant = simulate(&SimOptions {
        setpoint: Some(19.0),
        ..SimOptions::new(HeatConfig::default())
    })
    .unwrap();
    assert!(
        r.energy_kwh < constant.energy_kwh - 1.0,
        "{} vs {}",
        r.energy_kwh,
        constant.energy_kwh
    );
}

#[test]
fn summer_room_yields_zero_slots() {
    let mut config = HeatConfig::default();
    config.simulated.outdoor_min_celsius = 17.0;
    config.simulated.outdoor_max_celsius = 28.0;
    let mut opts = SimOptions::new(config.clone());
    opts.setpoint = Some(19.0);
    let r = simulate(&opts).unwrap();
    assert!(
        r.samples.iter().all(|s| s.slots == 0),
        "a summer day ran compute"
    );
    let idle_kwh = config.idle_watts * 24.0 / 1000.0;
    assert!((r.energy_kwh - idle_kwh).abs() < 1e-6);

    let mut c = controller(8);
    for _ in 0..100 {
        assert_eq!(c.step(&input(Ok(24.0))).slots, 0);
    }
}

#[test]
fn simulate_command_writes_png_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let png_path = dir.path().join("day.png");
    let args = hearth::cli::heat::SimulateArgs {
        hours: 24.0,
        plot: Some(png_path.clone()),
        json: true,
        slots: 8,
        setpoint: None,
        schedule: false,
        warmup_hours: 24.0,
        days: None,
        tariff: None,
        work_supply: None,
    };
    hearth::cli::heat::simulate_day(&args, &HeatConfig::default()).unwrap();
    let bytes = std::fs::read(&png_path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 5_000);
    if let Ok(keep) = std::env::var("HEARTH_KEEP_PLOT") {
        std::fs::copy(&png_path, keep).unwrap();
    }
    let report = simulate(&SimOptions {
        setpoint: Some(19.0),
        ..SimOptions::new(HeatConfig::default())
    })
    .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["fraction_within_half_kelvin"].as_f64().unwrap() >= 0.95);
    assert!(json["energy_kwh"].as_f64().unwrap() > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Controller

#[test]
fn controller_hysteresis() {
    let mut c = controller(4);
    // A fresh controller is not calling; inside the band it stays so.
    assert_eq!(c.step(&input(Ok(18.8))).slots, 0);
    assert_eq!(c.step(&input(Ok(18.75))).slots, 0);
    // Below setpoint − 0.3 K it calls.
    assert_eq!(c.step(&input(Ok(18.6))).slots, 1);
    // Back inside the band (even above the setpoint) it keeps calling...
    let d = c.step(&input(Ok(19.2)));
    assert!(d.reason.starts_with("heating"), "{d:?}");
    // ...until above setpoint + 0.3 K, where it stops and ramps down.
    let d = c.step(&input(Ok(19.35)));
    assert!(d.reason.contains("no heat needed"), "{}", d.reason);
    assert_eq!(d.demand_permille, 0);
    let mut slots = d.slots;
    while slots > 0 {
        let next = c.step(&input(Ok(19.1))).slots;
        assert_eq!(next + 1, slots);
        slots = next;
    }
    assert_eq!(c.step(&input(Ok(18.8))).slots, 0);
}

#[test]
fn controller_changes_slots_smoothly() {
    let mut c = controller(6);
    let mut prev = 0;
    let mut seen_max = false;
    for _ in 0..20 {
        let s = c.step(&input(Ok(15.0))).slots;
        assert!(s <= prev + 1, "jumped from {prev} to {s}");
        seen_max |= s == 6;
        prev = s;
    }
    assert!(seen_max);
    for _ in 0..20 {
        let s = c.step(&input(Ok(23.0))).slots;
        assert!(s + 1 >= prev, "dropped from {prev} to {s}");
        prev = s;
    }
    assert_eq!(prev, 0);
}

#[test]
fn controller_modes_and_fail_safe() {
    let mut c = Controller::new(
        ControllerConfig {
            hysteresis_k: 0.3,
            kp_per_k: 1.0,
            integral_secs: 3600.0,
            min_slots: 1,
            max_slots: 4,
        },
        Schedule::constant(19.0),
    );
    for _ in 0..5 {
        c.step(&input(Ok(15.0)));
    }
    assert_eq!(c.slots(), 4);
    // An untrusted reading drops to min_slots at once.
    let d = c.step(&input(Err("the sensor is silent".into())));
    assert_eq!(d.slots, 1);
    assert!(
        d.fail_safe && d.reason.contains("the sensor is silent"),
        "{d:?}"
    );
    // Off is 0, whatever min_slots says.
    c.set_mode(Mode::Off);
    assert_eq!(c.step(&input(Ok(15.0))).slots, 0);
    // Manual setpoint.
    c.set_mode(Mode::Manual { celsius: 21.0 });
    assert_eq!(c.step(&input(Ok(15.0))).setpoint_celsius, 21.0);
    // Boost: full power even in a warm room, until it expires.
    c.set_mode(Mode::Auto);
    c.boost(0.0, 600.0);
    let mut slots = 0;
    for i in 0..5 {
        let d = c.step(&Input {
            now_secs: i as f64 * 60.0,
            ..input(Ok(20.0))
        });
        assert_eq!(d.demand_permille, 1000);
        slots = d.slots;
    }
    assert_eq!(slots, 4);
    let d = c.step(&Input {
        now_secs: 601.0,
        ..input(Ok(20.0))
    });
    assert_eq!(c.mode(), &Mode::Auto);
    assert!(d.reason.contains("no heat needed"), "{}", d.reason);
}

#[test]
fn overheat_stops_heating_in_every_mode() {
    // min_slots 1: the fail-safe floor does not apply to a room that is too hot.
    let mut c = Controller::new(
        ControllerConfig {
            hysteresis_k: 0.3,
            kp_per_k: 1.0,
            integral_secs: 3600.0,
            min_slots: 1,
            max_slots: 4,
        },
        Schedule::constant(19.0),
    );
    let hot = OVERHEAT_CELSIUS + 0.5;
    for mode in [
        Mode::Auto,
        Mode::Manual { celsius: 27.0 },
        Mode::Boost {
            until: 3600.0,
            then: Box::new(Mode::Auto),
        },
    ] {
        c.set_mode(mode.clone());
        for _ in 0..5 {
            c.step(&input(Ok(15.0)));
        }
        assert!(c.slots() >= 1, "{mode:?} heats a cold room");
        let d = c.step(&input(Ok(hot)));
        assert_eq!(d.slots, 0, "{mode:?}: {d:?}");
        assert!(d.reason.contains("overheat"), "{}", d.reason);
    }
    // The highest setpoint a household can choose stays below the limit.
    assert!(*hearth::heat::SETPOINT_RANGE.end() < OVERHEAT_CELSIUS);
}

#[test]
fn schedule_day_and_night() {
    let config = hearth::heat::config::ScheduleConfig {
        sun: Some(hearth::heat::config::DayHours {
            day_start: Some("09:00".into()),
            night_start: Some("23:30".into()),
        }),
        ..Default::default()
    };
    let s = Schedule::from_config(&config).unwrap();
    assert_eq!(s.setpoint_at(monday(6, 30)), 16.0);
    assert_eq!(s.setpoint_at(monday(7, 0)), 19.0);
    assert_eq!(s.setpoint_at(monday(21, 59)), 19.0);
    assert_eq!(s.setpoint_at(monday(22, 0)), 16.0);
    // Sunday 7 January 2024.
    let sunday = |h, m| {
        NaiveDate::from_ymd_opt(2024, 1, 7)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .unwrap()
    };
    assert_eq!(s.setpoint_at(sunday(8, 0)), 16.0);
    assert_eq!(s.setpoint_at(sunday(9, 0)), 19.0);
    assert_eq!(s.setpoint_at(sunday(23, 0)), 19.0);
    assert_eq!(s.setpoint_at(sunday(23, 30)), 16.0);
}

#[test]
fn config_parses_and_validates() {
    let text = r#"
source = "mqtt"
min_slots = 1
power_cap_watts = 300.0
[schedule]
day_celsius = 20.0
[schedule.sat]
day_start = "08:30"
[mqtt]
topic = "home/room/temperature"
"#;
    let c: HeatConfig = toml::from_str(text).unwrap();
    assert_eq!(c.source, SourceKind::Mqtt);
    assert_eq!(c.schedule.night_celsius, 16.0);
    c.validate().unwrap();
    assert!(toml::from_str::<HeatConfig>("sourse = \"file\"").is_err());
    let bad = HeatConfig {
        idle_watts: -5.0,
        ..HeatConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("heat.idle_watts"));
}

// ---------------------------------------------------------------------------------------------
// The live service

struct Running {
    heat: HeatHandle,
    slots: watch::Receiver<usize>,
    _stop: watch::Sender<bool>,
}

fn start(config: HeatConfig, max_slots: usize) -> Running {
    let (slots_tx, slots) = watch::channel(0);
    let (stop, stop_rx) = watch::channel(false);
    let (heat, _task) = spawn(config, max_slots, slots_tx, stop_rx, None).unwrap();
    Running {
        heat,
        slots,
        _stop: stop,
    }
}

async fn wait_for(
    heat: &HeatHandle,
    what: &str,
    mut ok: impl FnMut(&HeatStatus) -> bool,
) -> HeatStatus {
    let mut rx = heat.subscribe();
    let found = tokio::time::timeout(TIMEOUT, async {
        loop {
            {
                let s = rx.borrow_and_update();
                if ok(&s) {
                    return s.clone();
                }
            }
            if rx.changed().await.is_err() {
                panic!("heat service stopped");
            }
        }
    })
    .await;
    match found {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out waiting for {what}; last status {:?}",
            heat.status()
        ),
    }
}

/// Half a period, so that later observations fall between the service's ticks.
async fn offset() {
    tokio::time::sleep(Duration::from_secs(30)).await;
}

/// One control period of real (paused) time.
async fn period() {
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn live_simulated_room_holds_setpoint_with_working_shards() {
    let mut config = HeatConfig::default();
    config.simulated.initial_celsius = Some(19.0);
    // Whatever the local time, one setpoint and one outdoor temperature (the default day's
    // mean): six simulated hours from midnight fall through the day's coldest, and the room
    // then held the band 340 of 360 periods (the test failed when run after midnight).
    config.schedule.night_celsius = 19.0;
    config.simulated.outdoor_min_celsius = 2.0;
    config.simulated.outdoor_max_celsius = 2.0;
    let mut r = start(config, 8);
    let start_day = r.heat.status().local_time;
    let meter = r.heat.meter();
    offset().await;
    assert_eq!(meter.method(), EnergyMethod::Simulated);
    // A stand-in worker: one running shard per allowed slot.
    let mut shards = Vec::new();
    let mut prev_slots = 0usize;
    let mut within = 0;
    let periods = 6 * 60;
    for _ in 0..periods {
        period().await;
        let slots = *r.slots.borrow_and_update();
        assert!(slots.abs_diff(prev_slots) <= 1, "{prev_slots} -> {slots}");
        prev_slots = slots;
        while shards.len() < slots {
            shards.push(meter.start_shard());
        }
        while shards.len() > slots {
            let mark = shards.pop().unwrap();
            let e = meter.finish_shard(mark, None);
            assert_eq!(e.method, EnergyMethod::Simulated);
        }
        let s = r.heat.status();
        let room = s.room_celsius.expect("simulated room always has a reading");
        if (room - 19.0).abs() <= 0.5 {
            within += 1;
        }
        assert!(s.outdoor_celsius.is_some());
    }
    assert!(
        within * 100 >= periods * 95,
        "{within} of {periods} periods within 0.5 K"
    );
    let s = r.heat.status();
    assert!(s.power_watts > 40.0, "{s:?}");
    // Six hours at several hundred watts, unless the simulated clock passed midnight and the
    // daily counter restarted.
    if s.local_time[..3] == start_day[..3] {
        assert!(s.energy_today_kwh > 1.0, "{s:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn http_source_fails_safe_when_missing_stale_or_absurd() {
    let config = HeatConfig {
        source: SourceKind::Http,
        min_slots: 1,
        max_age_secs: 600,
        ..HeatConfig::default()
    };
    let r = start(config, 4);
    offset().await;
    // Missing: no push yet.
    period().await;
    let s = wait_for(&r.heat, "fail safe without a reading", |s| s.fail_safe).await;
    assert_eq!(s.slots, 1);
    assert!(s.reason.contains("no temperature reading"), "{}", s.reason);
    // A cold room: heating ramps up.
    r.heat.push_temperature(12.0).await.unwrap();
    for _ in 0..4 {
        period().await;
    }
    let s = r.heat.status();
    assert!(!s.fail_safe && s.slots >= 3, "{s:?}");
    // Stale: no push for more than ten minutes.
    for _ in 0..11 {
        period().await;
    }
    let s = r.heat.status();
    assert!(s.fail_safe, "{s:?}");
    assert_eq!(s.slots, 1);
    assert!(s.reason.contains("old"), "{}", s.reason);
    assert_eq!(*r.slots.borrow(), 1);
    // Absurd: 85 °C is a broken sensor, not a room. Recorded, then refused at once.
    r.heat.push_temperature(12.0).await.unwrap();
    period().await;
    period().await;
    assert!(r.heat.status().slots >= 2);
    let s = r.heat.push_temperature(85.0).await.unwrap();
    assert!(s.fail_safe, "{s:?}");
    period().await;
    let s = r.heat.status();
    assert!(s.fail_safe && s.slots == 1, "{s:?}");
    assert!(s.reason.contains("85.0"), "{}", s.reason);
    let s = r.heat.push_temperature(-45.0).await.unwrap();
    assert!(s.fail_safe);
}

#[tokio::test(start_paused = true)]
async fn household_commands_steer_the_service() {
    let config = HeatConfig {
        source: SourceKind::Http,
        ..HeatConfig::default()
    };
    let r = start(config, 4);
    offset().await;
    r.heat.push_temperature(18.0).await.unwrap();
    let s = r.heat.set_setpoint(20.5).await.unwrap();
    assert_eq!((s.mode.as_str(), s.setpoint_celsius), ("manual", 20.5));
    for _ in 0..5 {
        period().await;
        r.heat.push_temperature(18.0).await.unwrap();
    }
    assert_eq!(r.heat.status().slots, 4);
    let s = r.heat.off().await.unwrap();
    assert_eq!((s.mode.as_str(), s.slots), ("off", 0));
    assert_eq!(*r.slots.borrow(), 0, "off stops at once");
    period().await;
    assert_eq!(r.heat.status().slots, 0);
    // Boost from a warm room: full power, then back to off.
    r.heat.push_temperature(21.0).await.unwrap();
    let s = r.heat.boost(Duration::from_secs(600)).await.unwrap();
    assert_eq!(s.mode, "boost");
    assert_eq!(s.boost_minutes_left, Some(10));
    for _ in 0..5 {
        period().await;
        r.heat.push_temperature(21.0).await.unwrap();
    }
    assert_eq!(r.heat.status().slots, 4);
    for _ in 0..6 {
        period().await;
        r.heat.push_temperature(21.0).await.unwrap();
    }
    let s = r.heat.status();
    assert_eq!((s.mode.as_str(), s.slots), ("off", 0));
    let s = r.heat.auto().await.unwrap();
    assert_eq!(s.mode, "auto");
    assert!(r
        .heat
        .set_setpoint(45.0)
        .await
        .unwrap_err()
        .to_string()
        .contains("between 5 and 27"));
    assert!(r.heat.boost(Duration::from_secs(10)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn file_source_reads_sensor_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("room-temperature");
    let mut config = HeatConfig {
        source: SourceKind::File,
        ..HeatConfig::default()
    };
    config.file.path = path.clone();
    config.schedule.night_celsius = 19.0;
    let r = start(config, 4);
    offset().await;
    period().await;
    let s = wait_for(&r.heat, "fail safe on a missing file", |s| s.fail_safe).await;
    assert!(s.reason.contains("room-temperature"), "{}", s.reason);

    std::fs::write(&path, "17.25\n").unwrap();
    period().await;
    let s = wait_for(&r.heat, "the file's reading", |s| {
        s.room_celsius == Some(17.25)
    })
    .await;
    assert!(!s.fail_safe);
    std::fs::write(&path, r#"{"temperature": 18.5, "humidity": 41}"#).unwrap();
    period().await;
    wait_for(&r.heat, "JSON in the file", |s| {
        s.room_celsius == Some(18.5)
    })
    .await;

    // A sensor script that died leaves a file whose modification time ages.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    period().await;
    let s = wait_for(&r.heat, "a stale file", |s| s.fail_safe).await;
    assert!(s.reason.contains("old"), "{}", s.reason);
    assert_eq!(s.slots, 0);
}

// ---------------------------------------------------------------------------------------------
// HTTP API

#[tokio::test]
async fn http_api_push_and_commands() {
    let config = HeatConfig {
        source: SourceKind::Http,
        period_secs: 1,
        ..HeatConfig::default()
    };
    let r = start(config, 4);
    let app = hearth::heat::routes().with_state(r.heat.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let base = format!("http://{addr}/v1/heat");
    let http = reqwest::Client::new();
    let run = async {
        let resp = http
            .put(format!("{base}/temperature"))
            .json(&serde_json::json!({"celsius": 17.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let s: HeatStatus = resp.json().await.unwrap();
        assert_eq!(s.room_celsius, Some(17.5));
        assert_eq!(s.source, "http");

        let s: HeatStatus = http.get(&base).send().await.unwrap().json().await.unwrap();
        assert_eq!(s.room_celsius, Some(17.5));

        let s: HeatStatus = http
            .post(format!("{base}/setpoint"))
            .json(&serde_json::json!({"celsius": 20.5}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((s.mode.as_str(), s.setpoint_celsius), ("manual", 20.5));

        let resp = http
            .post(format!("{base}/setpoint"))
            .json(&serde_json::json!({"celsius": 50}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains("between 5 and 27"),
            "{err}"
        );

        let resp = http
            .put(format!("{base}/temperature"))
            .body("warm")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .contains(r#"{"celsius": 20.5}"#),
            "{err}"
        );

        let s: HeatStatus = http
            .post(format!("{base}/boost"))
            .json(&serde_json::json!({"minutes": 60}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((s.mode.as_str(), s.boost_minutes_left), ("boost", Some(60)));

        let s: HeatStatus = http
            .post(format!("{base}/off"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((s.mode.as_str(), s.slots), ("off", 0));
        let s: HeatStatus = http
            .post(format!("{base}/auto"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s.mode, "auto");
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("HTTP test timed out");

    // A radiator reading another source refuses pushes, saying how to change it.
    let other = start(HeatConfig::default(), 2);
    let err = other
        .heat
        .push_temperature(20.0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("source = \"http\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// MQTT against a real broker

struct Mosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_binary() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("the MQTT test needs the mosquitto broker: run `apt-get install mosquitto` (CI installs it)");
}

async fn start_mosquitto() -> Mosquitto {
    let binary = mosquitto_binary();
    let dir = tempfile::tempdir().unwrap();
    // Find a free loopback port; the broker binds it a moment later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting mosquitto");
    let broker = Mosquitto {
        child,
        port,
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker
}

#[tokio::test]
async fn mqtt_source_against_mosquitto() {
    let broker = start_mosquitto().await;
    let mut config = HeatConfig {
        source: SourceKind::Mqtt,
        period_secs: 1,
        ..HeatConfig::default()
    };
    config.mqtt.port = broker.port;
    config.mqtt.topic = "zigbee2mqtt/living_room".into();
    // Whatever the local time, one setpoint (19 °C): at night the default schedule's 16 °C made
    // the 18.25 °C room below warm enough, and this test failed after 22:00.
    config.schedule.night_celsius = 19.0;

    let mut opts = rumqttc::MqttOptions::new("hearth-test-publisher", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let publish = |payload: String, retain: bool| {
        let client = client.clone();
        async move {
            client
                .publish(
                    "zigbee2mqtt/living_room",
                    rumqttc::QoS::AtLeastOnce,
                    retain,
                    payload,
                )
                .await
                .unwrap();
            // Let the broker take it before anyone subscribes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };

    // A retained reading without its own time, published before the radiator subscribes: the
    // broker hands it over on subscription, but it may be hours old, so it is not trusted.
    publish(r#"{"temperature":17.5,"humidity":44}"#.into(), true).await;
    let r = start(config.clone(), 4);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = r.heat.status();
    assert_eq!(s.source, "mqtt");
    assert_eq!(s.room_celsius, None, "{s:?}");
    assert!(s.fail_safe, "{s:?}");
    // Zigbee2MQTT style JSON, live.
    publish(
        r#"{"temperature":17.5,"humidity":44,"battery":97}"#.into(),
        false,
    )
    .await;
    wait_for(&r.heat, "the JSON reading", |s| {
        s.room_celsius == Some(17.5)
    })
    .await;
    // Home Assistant statestream style: a bare number.
    publish("18.25".into(), false).await;
    wait_for(&r.heat, "the bare reading", |s| {
        s.room_celsius == Some(18.25)
    })
    .await;
    // Garbage is ignored, not taken as a temperature.
    publish("hot".into(), false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.heat.status().room_celsius, Some(18.25));
    wait_for(&r.heat, "heating in a cold room", |s| s.slots >= 1).await;

    // A retained reading that carries its own time is as fresh as that time says: a new
    // radiator trusts one taken a minute ago ...
    let minute_ago = hearth::model::now_ms() - 60_000;
    publish(
        format!(r#"{{"temperature":16.0,"last_seen":{minute_ago}}}"#),
        true,
    )
    .await;
    let fresh = start(config.clone(), 4);
    wait_for(&fresh.heat, "the timestamped retained reading", |s| {
        s.room_celsius == Some(16.0)
    })
    .await;
    // ... and not one taken two hours ago (older than `max_age_secs`).
    let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    publish(
        format!(
            r#"{{"temperature":16.5,"time":"{}"}}"#,
            two_hours_ago.to_rfc3339()
        ),
        true,
    )
    .await;
    let stale = start(config, 4);
    let s = wait_for(&stale.heat, "the stale reading judged", |s| {
        s.reason.contains("old")
    })
    .await;
    assert!(s.fail_safe && s.room_celsius.is_none(), "{s:?}");
    poller.abort();
}

/// Issue 15: a carbon-intensity signal read from MQTT, as Home Assistant publishes a sensor's
/// state (statestream: a bare number) or a forecast; missing, unreadable, stale signals and a
/// broker that cannot be reached fall back to the plain thermostat and say why.
#[tokio::test]
async fn mqtt_grid_signal_against_mosquitto() {
    use hearth::heat::config::{SignalSource, SignalValue};
    use hearth::heat::plan::Phase;
    let broker = start_mosquitto().await;
    let topic = "homeassistant/sensor/grid_carbon_intensity/state";
    let mut config = HeatConfig {
        period_secs: 1,
        ..HeatConfig::default()
    };
    config.simulated.initial_celsius = Some(19.0);
    config.mqtt.port = broker.port;
    config.mqtt.client_id = "hearth-signal-test".into();
    config.signal.source = SignalSource::Mqtt;
    config.signal.topic = topic.into();
    config.signal.value = SignalValue::Carbon;
    config.signal.expensive_g_co2_per_kwh = Some(200.0);

    // No threshold for the kind of value the topic carries: refused, naming the field.
    let mut missing = config.clone();
    missing.signal.expensive_g_co2_per_kwh = None;
    let (tx, _rx) = watch::channel(0);
    let (_stop, stop_rx) = watch::channel(false);
    let err = spawn(missing, 4, tx, stop_rx, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("heat.signal.expensive_g_co2_per_kwh"), "{err}");

    let mut opts = rumqttc::MqttOptions::new("hearth-test-ha", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let publish = |payload: String| {
        let client = client.clone();
        async move {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
    };
    let phase = |s: &HeatStatus| s.plan.as_ref().map(|p| p.phase);
    let r = start(config.clone(), 4);
    let s = wait_for(&r.heat, "a first plan", |s| s.plan.is_some()).await;
    assert_eq!(phase(&s), Some(Phase::Plain));
    assert!(
        s.reason.contains("no grid signal received yet"),
        "{}",
        s.reason
    );
    // Subscribed by now (the service took a period); a low intensity: hold the setpoint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish("120".into()).await;
    let s = wait_for(&r.heat, "the cheap reading", |s| {
        phase(s) == Some(Phase::Normal)
    })
    .await;
    let period = s.plan.unwrap().period.unwrap();
    assert_eq!(period.g_co2_per_kwh, 120.0);
    // A high one: coast.
    publish("350".into()).await;
    wait_for(&r.heat, "coasting on a high intensity", |s| {
        phase(s) == Some(Phase::Coast)
    })
    .await;
    // A forecast (the body format of PUT /v1/heat/signal): clean now, dirty in two hours.
    let now = chrono::Local::now().naive_local();
    let at = |h: i64| {
        (now + chrono::Duration::hours(h))
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    publish(format!(
        r#"{{"points":[{{"start":"{}","price_per_kwh":0.2,"g_co2_per_kwh":80}},
                       {{"start":"{}","price_per_kwh":0.2,"g_co2_per_kwh":400}}],
            "period_minutes":600}}"#,
        at(-1),
        at(2)
    ))
    .await;
    let s = wait_for(
        &r.heat,
        "pre-heating before the forecast's dirty hours",
        |s| phase(s) == Some(Phase::Preheat),
    )
    .await;
    assert!(s.plan.unwrap().offset_k > 0.0);
    // A value taken two hours ago (Home Assistant's JSON state with `last_updated`) has
    // outlived `hold_minutes` (60): stale, the plain thermostat, and the reason says so.
    let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
    publish(format!(
        r#"{{"state":"350","last_updated":"{}"}}"#,
        two_hours_ago.to_rfc3339()
    ))
    .await;
    let s = wait_for(&r.heat, "the stale value to fall back", |s| {
        phase(s) == Some(Phase::Plain)
    })
    .await;
    assert!(s.reason.contains("ran out"), "{}", s.reason);
    assert!(!s.fail_safe, "a stale grid signal is not a sensor failure");
    // The sensor goes unavailable: still plain, and the reason quotes it.
    publish("unavailable".into()).await;
    let s = wait_for(&r.heat, "the unavailable sensor in the reason", |s| {
        s.reason.contains("unavailable")
    })
    .await;
    assert_eq!(phase(&s), Some(Phase::Plain));
    // A fresh value brings planning back.
    publish("380".into()).await;
    wait_for(&r.heat, "coasting again", |s| {
        phase(s) == Some(Phase::Coast)
    })
    .await;
    poller.abort();

    // No broker at all: plain thermostat, and the reason names the broker.
    drop(broker);
    let mut gone = config;
    gone.mqtt.client_id = "hearth-signal-test-2".into();
    let r = start(gone, 4);
    let s = wait_for(&r.heat, "the unreachable broker in the reason", |s| {
        s.reason.contains("MQTT broker")
    })
    .await;
    assert_eq!(phase(&s), Some(Phase::Plain));
}

// ---------------------------------------------------------------------------------------------
// Energy

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

fn proc_stat(busy_ticks: u64) -> String {
    format!("cpu  {busy_ticks} 0 0 100000 0 0 0 0 0 0\ncpu0 {busy_ticks} 0 0 100000 0 0 0 0 0 0\n")
}

#[test]
fn rapl_reader_with_wraparound() {
    assert_eq!(
        counter_delta(262_143_000_000, 1_000, 262_143_328_850),
        328_850 + 1_000
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("intel-rapl:0/energy_uj"), "1000000\n");
    write(&root.join("intel-rapl:0/max_energy_range_uj"), "2000000\n");
    write(&root.join("intel-rapl:1/energy_uj"), "500\n");
    write(&root.join("intel-rapl:1/max_energy_range_uj"), "1000000\n");
    // A subzone (already counted in its package) and the MMIO duplicate are ignored.
    write(&root.join("intel-rapl:0:0/energy_uj"), "0\n");
    write(
        &root.join("intel-rapl:0:0/max_energy_range_uj"),
        "2000000\n",
    );
    write(&root.join("intel-rapl-mmio:0/energy_uj"), "0\n");
    write(
        &root.join("intel-rapl-mmio:0/max_energy_range_uj"),
        "2000000\n",
    );
    let mut rapl = Rapl::open(root).unwrap();
    assert_eq!(rapl.read_delta_uj(), 0);
    write(&root.join("intel-rapl:0/energy_uj"), "1500000\n");
    write(&root.join("intel-rapl:1/energy_uj"), "1500\n");
    write(&root.join("intel-rapl:0:0/energy_uj"), "999999\n");
    assert_eq!(rapl.read_delta_uj(), 500_000 + 1_000);
    // Package 0 wraps: 1.5 J → 2.0 J (range) → 0.25 J.
    write(&root.join("intel-rapl:0/energy_uj"), "250000\n");
    assert_eq!(rapl.read_delta_uj(), 500_000 + 250_000);
    // An unreadable counter contributes nothing this time.
    write(&root.join("intel-rapl:1/energy_uj"), "garbage\n");
    write(&root.join("intel-rapl:0/energy_uj"), "350000\n");
    assert_eq!(rapl.read_delta_uj(), 100_000);

    assert!(Rapl::open(&root.join("nowhere")).is_none());
    let empty = tempfile::tempdir().unwrap();
    assert!(Rapl::open(empty.path()).is_none());
}

#[tokio::test(start_paused = true)]
async fn meter_charges_shards_by_rapl_share() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("powercap");
    let stat = dir.path().join("stat");
    write(&root.join("intel-rapl:0/energy_uj"), "1900000000\n");
    write(
        &root.join("intel-rapl:0/max_energy_range_uj"),
        "2000000000\n",
    );
    write(&stat, &proc_stat(1000));
    let meter = EnergyMeter::new(MeterConfig {
        idle_watts: 40.0,
        watts_per_core: 15.0,
        simulated_watts_per_slot: None,
        max_slots: 1,
        rapl_root: root.clone(),
        proc_stat: stat.clone(),
    });
    assert_eq!(meter.method(), EnergyMethod::Rapl);
    let mark = meter.start_shard();
    assert_eq!(meter.active_shards(), 1);
    // Over 1 s the package used 200 J (across the wrap), 40 J of it idle. The machine was
    // busy for far more CPU time than this process used, so only this process's share of the
    // 160 J above idle is charged: a small fraction, and never more than 160 J.
    tokio::time::advance(Duration::from_secs(1)).await;
    write(&root.join("intel-rapl:0/energy_uj"), "100000000\n");
    let hz = clk_tck();
    write(&stat, &proc_stat(1000 + (400.0 * hz) as u64));
    let e = meter.finish_shard(mark, None);
    assert_eq!(e.method, EnergyMethod::Rapl);
    assert_eq!(e.end_ms - e.start_ms, 1000);
    assert!(e.energy_mj < 160_000, "{e:?}");
    assert_eq!(meter.active_shards(), 0);
    let t = meter.totals();
    assert!((t.drawn_mj - 200_000.0).abs() < 1e-6, "{t:?}");
    assert!((t.dynamic_mj - 160_000.0).abs() < 1e-6, "{t:?}");
    // Power for the status comes from the same counters: 10 J more over the next second.
    assert!((meter.tick().joules - 200.0).abs() < 1e-9);
    tokio::time::advance(Duration::from_secs(1)).await;
    write(&root.join("intel-rapl:0/energy_uj"), "110000000\n");
    let p = meter.tick();
    assert!((p.joules - 10.0).abs() < 1e-9, "{p:?}");
}

#[tokio::test(start_paused = true)]
async fn meter_estimates_without_rapl_and_simulates() {
    let dir = tempfile::tempdir().unwrap();
    let meter = EnergyMeter::new(MeterConfig {
        idle_watts: 40.0,
        watts_per_core: 15.0,
        simulated_watts_per_slot: None,
        max_slots: 4,
        rapl_root: dir.path().join("no-powercap"),
        proc_stat: dir.path().join("no-stat"),
    });
    assert_eq!(meter.method(), EnergyMethod::CpuEstimate);
    let mark = meter.start_shard();
    tokio::time::advance(Duration::from_secs(2)).await;
    let e = meter.finish_shard(mark, None);
    assert_eq!(e.method, EnergyMethod::CpuEstimate);
    // Without /proc/stat the estimate models one busy core: 2 s × 15 W = 30 J. The idle
    // power (40 W) is drawn but not credited.
    assert_eq!(e.energy_mj, 30_000);
    assert_eq!(e.end_ms - e.start_ms, 2_000);
    let t = meter.totals();
    assert!((t.drawn_mj - 110_000.0).abs() < 1e-6, "{t:?}");

    let sim = EnergyMeter::new(MeterConfig {
        idle_watts: 40.0,
        watts_per_core: 15.0,
        simulated_watts_per_slot: Some(145.0),
        max_slots: 8,
        rapl_root: dir.path().join("no-powercap"),
        proc_stat: dir.path().join("no-stat"),
    });
    assert_eq!(sim.method(), EnergyMethod::Simulated);
    let mark = sim.start_shard();
    tokio::time::advance(Duration::from_millis(100)).await;
    let e = sim.finish_shard(mark, None);
    assert_eq!(e.method, EnergyMethod::Simulated);
    // Exactly the slot's 145 W over the 100 ms window; idle is not credited.
    assert_eq!(e.energy_mj, 14_500);
    // The simulated radiator drew idle plus the slot over that time.
    let p = sim.tick();
    assert!((p.joules - 18.5).abs() < 1e-9, "{p:?}");
}
