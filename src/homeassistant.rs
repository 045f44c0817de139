//! Home Assistant over MQTT discovery: the radiator appears in Home Assistant as one device
//! with a thermostat, power and energy sensors, a "computing" sensor and the reason for what
//! it does, and the household can set it from Home Assistant like any thermostat.
//!
//! Owns one MQTT connection (`[homeassistant]` in `hearth.toml`). On every connection it
//! publishes, retained, a *device-based* discovery message at
//! `<discovery_prefix>/device/<node_id>/config` (`dev`, `o`, `cmps`), `online` on the
//! availability topic (whose last will is `offline`), and the state. It republishes discovery
//! when Home Assistant announces itself on `<discovery_prefix>/status`, publishes the state
//! when it changes (checked every second) and every `state_interval_secs`, and applies the
//! setpoint, mode and preset commands Home Assistant sends through the [`HeatHandle`] (the
//! same path as `hearth heat set|auto|boost|off`). On shutdown it publishes `offline` itself.
//!
//! Reads only the heat service and a total of the household's credited energy handed in by
//! the node; knows nothing of the network, jobs or the ledger. `docs/operations.md` explains
//! the set-up for households.
//!
//! Size: about 650 lines of code, the rest its unit tests (payload checks against HA's keys).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::heat::service::CreditSource;
use crate::heat::{HeatHandle, HeatStatus, MAX_BOOST_MINUTES};

/// Largest MQTT packet accepted from the broker. Commands are a number or a word and Home
/// Assistant's birth message is `online`; anything longer is not for us.
const MAX_INCOMING_BYTES: usize = 1024;
/// Largest packet we send: the discovery message is about 4 KiB.
const MAX_OUTGOING_BYTES: usize = 64 * 1024;
/// Requests queued for the MQTT connection. One announcement is 3 publishes plus 4
/// subscriptions; the queue is drained every poll, so a few announcements fit.
const REQUEST_QUEUE: usize = 64;
/// Home Assistant keeps a sensor's state to 255 characters.
const MAX_STATE_CHARS: usize = 255;
/// How often the state is compared with what was last published.
const CHANGE_CHECK: Duration = Duration::from_secs(1);
/// A heat command that takes longer than this is abandoned (the service is stopping).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("[homeassistant] {field} {reason}")]
    Config { field: &'static str, reason: String },
}

/// `[homeassistant]` in `hearth.toml`. A separate broker section rather than `[heat.mqtt]`:
/// the thermostat may be read over HTTP or a file while Home Assistant still wants the
/// radiator on its broker, and the two connections need different client ids anyway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish the radiator to Home Assistant. Default false.
    pub enabled: bool,
    /// Broker host (the one Home Assistant's MQTT integration uses). Default `127.0.0.1`.
    pub host: String,
    /// Broker port. Default 1883.
    pub port: u16,
    /// User name, if the broker wants one. Default none.
    pub username: Option<String>,
    /// Password for `username`. Default none.
    pub password: Option<String>,
    /// Home Assistant's discovery prefix. Default `homeassistant`.
    pub discovery_prefix: String,
    /// The device's id in topics (letters, digits, `_` and `-`). Default `hearth_` and the
    /// first 12 hex digits of the household key.
    pub node_id: Option<String>,
    /// The device's name in Home Assistant. Default `hearth radiator`.
    pub name: String,
    /// How long the `boost` preset lasts, minutes (1 to 1440). Default 60.
    pub boost_minutes: u64,
    /// The state is published when it changes and at least this often, seconds. Default 60.
    pub state_interval_secs: u64,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            discovery_prefix: "homeassistant".into(),
            node_id: None,
            name: "hearth radiator".into(),
            boost_minutes: 60,
            state_interval_secs: 60,
        }
    }
}

/// Commented `[homeassistant]` lines for the template `hearth init` writes.
pub const TEMPLATE: &str = r#"
[homeassistant]
# Publish this radiator to Home Assistant over MQTT discovery (thermostat, power, energy).
# enabled = false
# host = "127.0.0.1"
# port = 1883
# username = "hearth"
# password = "..."
# discovery_prefix = "homeassistant"
# node_id = "hearth_<first 12 hex digits of the household key>"
# name = "hearth radiator"
# boost_minutes = 60
# state_interval_secs = 60
"#;

fn topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl HomeAssistantConfig {
    /// The node id used in topics: the configured one, else derived from the household key.
    pub fn node_id(&self, household_hex: &str) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => {
                let short: String = household_hex.chars().take(12).collect();
                format!("hearth_{short}")
            }
        }
    }

    pub fn validate(&self) -> Result<(), HaError> {
        if let Some(id) = &self.node_id {
            if !topic_safe(id) {
                return Err(HaError::Config {
                    field: "node_id",
                    reason: format!(
                        "{id:?} must be 1 to 64 letters, digits, `_` or `-` (Home Assistant's rule for ids in discovery topics)"
                    ),
                });
            }
        }
        let p = &self.discovery_prefix;
        if p.is_empty() || p.len() > 128 || p.contains(['+', '#', '\0']) || p.ends_with('/') {
            return Err(HaError::Config {
                field: "discovery_prefix",
                reason: format!(
                    "{p:?} must be a plain MQTT topic such as \"homeassistant\" (no `+`, `#` or trailing `/`)"
                ),
            });
        }
        if !(1..=MAX_BOOST_MINUTES).contains(&self.boost_minutes) {
            return Err(HaError::Config {
                field: "boost_minutes",
                reason: format!(
                    "must be 1 to {MAX_BOOST_MINUTES}, not {}",
                    self.boost_minutes
                ),
            });
        }
        if self.state_interval_secs == 0 {
            return Err(HaError::Config {
                field: "state_interval_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.host.is_empty() {
            return Err(HaError::Config {
                field: "host",
                reason: "must name the MQTT broker".into(),
            });
        }
        Ok(())
    }
}

/// Every topic the bridge uses, derived from the prefix and node id.
#[derive(Clone, Debug, PartialEq)]
pub struct Topics {
    pub discovery: String,
    /// Home Assistant's birth and last-will topic.
    pub ha_status: String,
    pub availability: String,
    pub state: String,
    pub set_temperature: String,
    pub set_mode: String,
    pub set_preset: String,
}

impl Topics {
    pub fn new(discovery_prefix: &str, node_id: &str) -> Topics {
        let base = format!("hearth/{node_id}");
        Topics {
            discovery: format!("{discovery_prefix}/device/{node_id}/config"),
            ha_status: format!("{discovery_prefix}/status"),
            availability: format!("{base}/availability"),
            state: format!("{base}/state"),
            set_temperature: format!("{base}/set/temperature"),
            set_mode: format!("{base}/set/mode"),
            set_preset: format!("{base}/set/preset"),
        }
    }
}

/// The device-based discovery message (Home Assistant 2024.11 and later): one retained
/// payload declaring every entity of the radiator. Each component carries its platform `p`
/// and a `unique_id`; `dev` and `o` are shared, and so are the availability and state topic.
pub fn discovery(topics: &Topics, node_id: &str, name: &str) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let uid = |what: &str| format!("{node_id}_{what}");
    let sensor = |what: &str, label: &str, field: &str| {
        json!({
            "p": "sensor",
            "unique_id": uid(what),
            "name": label,
            "state_topic": topics.state,
            "value_template": format!("{{{{ value_json.{field} }}}}"),
        })
    };
    let mut power = sensor("power", "Power", "power_watts");
    extend(
        &mut power,
        json!({"device_class": "power", "state_class": "measurement", "unit_of_measurement": "W"}),
    );
    let mut drawn = sensor("energy_drawn", "Energy drawn", "energy_drawn_kwh");
    extend(
        &mut drawn,
        json!({"device_class": "energy", "state_class": "total_increasing", "unit_of_measurement": "kWh"}),
    );
    let mut credited = sensor("energy_credited", "Energy credited", "energy_credited_kwh");
    extend(
        &mut credited,
        json!({"device_class": "energy", "state_class": "total_increasing", "unit_of_measurement": "kWh"}),
    );
    let mut reason = sensor("reason", "Reason", "reason");
    extend(&mut reason, json!({"icon": "mdi:information-outline"}));
    json!({
        "dev": {
            "identifiers": [node_id],
            "name": name,
            "manufacturer": "hearth",
            "model": "digital radiator",
            "sw_version": version,
        },
        "o": {
            "name": "hearth",
            "sw_version": version,
        },
        "availability": [{"topic": topics.availability}],
        "state_topic": topics.state,
        "qos": 1,
        "cmps": {
            "climate": {
                "p": "climate",
                "unique_id": uid("climate"),
                // `null`: the thermostat is the device itself and takes the device's name.
                "name": null,
                "modes": ["auto", "heat", "off"],
                "mode_command_topic": topics.set_mode,
                "mode_state_topic": topics.state,
                "mode_state_template": "{{ value_json.mode }}",
                "temperature_command_topic": topics.set_temperature,
                "temperature_state_topic": topics.state,
                "temperature_state_template": "{{ value_json.setpoint_celsius }}",
                "current_temperature_topic": topics.state,
                "current_temperature_template": "{{ value_json.room_celsius }}",
                "preset_modes": ["boost"],
                "preset_mode_command_topic": topics.set_preset,
                "preset_mode_state_topic": topics.state,
                "preset_mode_value_template": "{{ value_json.preset }}",
                "action_topic": topics.state,
                "action_template": "{{ value_json.action }}",
                "min_temp": *crate::heat::SETPOINT_RANGE.start(),
                "max_temp": *crate::heat::SETPOINT_RANGE.end(),
                "temp_step": 0.5,
                "precision": 0.1,
                "temperature_unit": "C",
                "optimistic": false,
            },
            "power": power,
            "energy_drawn": drawn,
            "energy_credited": credited,
            "computing": {
                "p": "binary_sensor",
                "unique_id": uid("computing"),
                "name": "Computing",
                "device_class": "running",
                "state_topic": topics.state,
                "value_template": "{{ value_json.computing }}",
            },
            "reason": reason,
        },
    })
}

fn extend(target: &mut Value, more: Value) {
    if let (Some(t), Value::Object(m)) = (target.as_object_mut(), more) {
        t.extend(m);
    }
}

/// What the bridge publishes on the state topic: one JSON object the discovery templates read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HaState {
    /// Home Assistant's HVAC mode: `auto` (the weekly schedule), `heat` (a held setpoint or a
    /// boost) or `off`.
    pub mode: String,
    /// `boost` while boosting, else `none`.
    pub preset: String,
    /// `off`, `heating` (shards running) or `idle`.
    pub action: String,
    /// hearth's own mode: `auto`, `manual`, `boost` or `off`.
    pub hearth_mode: String,
    pub setpoint_celsius: f64,
    pub room_celsius: Option<f64>,
    pub power_watts: f64,
    /// Energy the radiator drew since the node started, kWh: a total that only grows until
    /// the next start, which `total_increasing` reads as a new meter cycle.
    pub energy_drawn_kwh: f64,
    /// Energy credited by all of this household's receipts in the ledger, kWh; `None` when
    /// the ledger could not be read.
    pub energy_credited_kwh: Option<f64>,
    /// `ON` while at least one shard executes.
    pub computing: String,
    /// Why the radiator runs as many shards as it does (at most 255 characters).
    pub reason: String,
}

impl HaState {
    pub fn new(
        status: &HeatStatus,
        computing: bool,
        drawn_kwh: f64,
        credited_kwh: Option<f64>,
    ) -> HaState {
        let (mode, preset) = match status.mode.as_str() {
            "auto" => ("auto", "none"),
            "boost" => ("heat", "boost"),
            "off" => ("off", "none"),
            _ => ("heat", "none"),
        };
        let action = if mode == "off" {
            "off"
        } else if computing {
            "heating"
        } else {
            "idle"
        };
        HaState {
            mode: mode.into(),
            preset: preset.into(),
            action: action.into(),
            hearth_mode: status.mode.clone(),
            setpoint_celsius: status.setpoint_celsius,
            room_celsius: status.room_celsius,
            power_watts: status.power_watts,
            energy_drawn_kwh: round6(drawn_kwh),
            energy_credited_kwh: credited_kwh.map(round6),
            computing: if computing { "ON" } else { "OFF" }.into(),
            reason: status.reason.chars().take(MAX_STATE_CHARS).collect(),
        }
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// A command Home Assistant sent, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Setpoint(f64),
    /// HVAC mode `auto`: back to the weekly schedule.
    Auto,
    /// HVAC mode `heat`: hold the current setpoint.
    Hold,
    Off,
    Boost,
    /// Preset `none`: end a boost (back to the schedule).
    NoPreset,
}

impl Command {
    /// `None` for a topic that carries no command; `Err` with a message for a payload that
    /// is not one.
    pub fn parse(topics: &Topics, topic: &str, payload: &[u8]) -> Option<Result<Command, String>> {
        let text = std::str::from_utf8(payload).map(str::trim);
        let word = |t: &str| t.to_ascii_lowercase();
        if topic == topics.set_temperature {
            Some(match text.map(str::parse::<f64>) {
                Ok(Ok(c)) if c.is_finite() => Ok(Command::Setpoint(c)),
                _ => Err(format!(
                    "a setpoint must be a number of °C, not {:?}",
                    String::from_utf8_lossy(payload)
                )),
            })
        } else if topic == topics.set_mode {
            Some(match text.map(word).as_deref() {
                Ok("auto") => Ok(Command::Auto),
                Ok("heat") => Ok(Command::Hold),
                Ok("off") => Ok(Command::Off),
                _ => Err(format!(
                    "the mode must be auto, heat or off, not {:?}",
                    String::from_utf8_lossy(payload)
                )),
            })
        } else if topic == topics.set_preset {
            Some(match text.map(word).as_deref() {
                Ok("boost") => Ok(Command::Boost),
                Ok("none") => Ok(Command::NoPreset),
                _ => Err(format!(
                    "the preset must be boost or none, not {:?}",
                    String::from_utf8_lossy(payload)
                )),
            })
        } else {
            None
        }
    }
}

/// The bridge, configured and ready to [`run`](Bridge::run).
pub struct Bridge {
    config: HomeAssistantConfig,
    node_id: String,
    topics: Topics,
    heat: HeatHandle,
    credit: Option<CreditSource>,
}

impl Bridge {
    /// `household_hex` names the device when `node_id` is not configured; `credit` reads the
    /// millijoules the household's receipts credit since a time (the node passes its ledger).
    pub fn new(
        config: HomeAssistantConfig,
        household_hex: &str,
        heat: HeatHandle,
        credit: Option<CreditSource>,
    ) -> Result<Bridge, HaError> {
        config.validate()?;
        let node_id = config.node_id(household_hex);
        let topics = Topics::new(&config.discovery_prefix, &node_id);
        Ok(Bridge {
            config,
            node_id,
            topics,
            heat,
            credit,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    fn state(&self) -> HaState {
        let status = self.heat.status();
        let meter = self.heat.meter();
        let drawn_kwh = meter.totals().drawn_mj / 3.6e9;
        let credited = self.credit.as_ref().and_then(|credit| match credit(0) {
            Ok(mj) => Some(mj as f64 / 3.6e9),
            Err(e) => {
                tracing::warn!("Home Assistant: cannot read the credited energy: {e}");
                None
            }
        });
        HaState::new(&status, meter.active_shards() > 0, drawn_kwh, credited)
    }

    /// Publishes until `shutdown` changes, reconnecting by itself (rumqttc does, as long as
    /// it is polled). Cancel-safe: dropping it drops the connection, and the broker then
    /// publishes the last will.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let c = &self.config;
        let mut options = MqttOptions::new(format!("hearth-ha-{}", self.node_id), &c.host, c.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_max_packet_size(MAX_INCOMING_BYTES, MAX_OUTGOING_BYTES);
        options.set_last_will(LastWill::new(
            &self.topics.availability,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &c.username {
            options.set_credentials(user.clone(), c.password.clone().unwrap_or_default());
        }
        let (client, mut events) = AsyncClient::new(options, REQUEST_QUEUE);
        let interval = Duration::from_secs(c.state_interval_secs);
        let mut check = tokio::time::interval(CHANGE_CHECK);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut connected = false;
        let mut failing = false;
        let mut last: Option<(HaState, Instant)> = None;
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if failing {
                            tracing::info!(host = %c.host, "Home Assistant's MQTT broker reachable again");
                        }
                        failing = false;
                        connected = true;
                        for topic in [
                            &self.topics.ha_status,
                            &self.topics.set_temperature,
                            &self.topics.set_mode,
                            &self.topics.set_preset,
                        ] {
                            if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                                tracing::warn!("Home Assistant: could not subscribe to {topic}: {e}");
                            }
                        }
                        self.announce(&client);
                        last = self.publish_state(&client);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == self.topics.ha_status {
                            // Home Assistant (re)started: it wants every discovery message again.
                            if p.payload.as_ref() == b"online" {
                                tracing::info!("Home Assistant is online; announcing the radiator again");
                                self.announce(&client);
                                last = self.publish_state(&client);
                            }
                        } else if let Some(cmd) = Command::parse(&self.topics, &p.topic, &p.payload) {
                            match cmd {
                                Ok(cmd) => self.apply(cmd).await,
                                Err(e) => tracing::warn!(topic = %p.topic, "Home Assistant sent a command hearth does not understand: {e}"),
                            }
                            // At once, so Home Assistant shows what the radiator now does (and
                            // a refused command snaps back).
                            last = self.publish_state(&client);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        connected = false;
                        if !failing {
                            tracing::warn!(
                                "Home Assistant's MQTT broker {}:{}: {e}; retrying every 2 s",
                                c.host,
                                c.port
                            );
                        }
                        failing = true;
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = shutdown.changed() => break,
                        }
                    }
                },
                _ = check.tick(), if connected => {
                    let state = self.state();
                    let due = match &last {
                        Some((s, at)) => *s != state || at.elapsed() >= interval,
                        None => true,
                    };
                    if due {
                        last = self.send_state(&client, state);
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if connected {
            self.say_goodbye(&client, &mut events).await;
        }
    }

    /// Discovery and `online`, both retained.
    fn announce(&self, client: &AsyncClient) {
        let payload = discovery(&self.topics, &self.node_id, &self.config.name).to_string();
        for (topic, payload) in [
            (&self.topics.discovery, payload),
            (&self.topics.availability, "online".to_string()),
        ] {
            if let Err(e) = client.try_publish(topic.as_str(), QoS::AtLeastOnce, true, payload) {
                tracing::warn!("Home Assistant: could not publish {topic}: {e}");
            }
        }
    }

    fn publish_state(&self, client: &AsyncClient) -> Option<(HaState, Instant)> {
        self.send_state(client, self.state())
    }

    /// Retained, so a Home Assistant that restarts sees the radiator at once.
    fn send_state(&self, client: &AsyncClient, state: HaState) -> Option<(HaState, Instant)> {
        let payload = match serde_json::to_string(&state) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("Home Assistant: cannot encode the state: {e}");
                return None;
            }
        };
        match client.try_publish(self.topics.state.as_str(), QoS::AtLeastOnce, true, payload) {
            Ok(()) => Some((state, Instant::now())),
            Err(e) => {
                tracing::warn!("Home Assistant: could not publish the state: {e}");
                None
            }
        }
    }

    async fn apply(&self, cmd: Command) {
        tracing::info!(?cmd, "command from Home Assistant");
        let heat = &self.heat;
        let result = tokio::time::timeout(COMMAND_TIMEOUT, async {
            match cmd {
                Command::Setpoint(c) => heat.set_setpoint(c).await,
                Command::Auto | Command::NoPreset => heat.auto().await,
                Command::Hold => heat.set_setpoint(heat.status().setpoint_celsius).await,
                Command::Off => heat.off().await,
                Command::Boost => {
                    heat.boost(Duration::from_secs(self.config.boost_minutes * 60))
                        .await
                }
            }
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("Home Assistant's command refused: {e}"),
            Err(_) => tracing::warn!("Home Assistant's command timed out"),
        }
    }

    /// A clean disconnect discards the last will, so say `offline` first, and keep polling
    /// until both have left (at most 2 s).
    async fn say_goodbye(&self, client: &AsyncClient, events: &mut rumqttc::EventLoop) {
        if let Err(e) = client.try_publish(
            self.topics.availability.as_str(),
            QoS::AtLeastOnce,
            true,
            "offline",
        ) {
            tracing::warn!("Home Assistant: could not publish offline: {e}");
        }
        let _ = client.try_disconnect();
        let drain = async {
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::new("homeassistant", "hearth_abc")
    }

    #[test]
    fn commands_parse_and_refuse() {
        let t = topics();
        let parse = |topic: &str, p: &[u8]| Command::parse(&t, topic, p);
        assert_eq!(
            parse(&t.set_temperature, b" 21.5\n"),
            Some(Ok(Command::Setpoint(21.5)))
        );
        assert_eq!(parse(&t.set_mode, b"off"), Some(Ok(Command::Off)));
        assert_eq!(parse(&t.set_mode, b"heat"), Some(Ok(Command::Hold)));
        assert_eq!(parse(&t.set_mode, b"auto"), Some(Ok(Command::Auto)));
        assert_eq!(parse(&t.set_preset, b"boost"), Some(Ok(Command::Boost)));
        assert_eq!(parse(&t.set_preset, b"none"), Some(Ok(Command::NoPreset)));
        for (topic, bad) in [
            (&t.set_temperature, &b"NaN"[..]),
            (&t.set_temperature, b"inf"),
            (&t.set_temperature, b"warm"),
            (&t.set_temperature, b"\xff"),
            (&t.set_mode, b"cool"),
            (&t.set_preset, b"eco"),
        ] {
            assert!(matches!(parse(topic, bad), Some(Err(_))), "{bad:?}");
        }
        assert_eq!(parse(&t.state, b"21"), None);
    }

    #[test]
    fn config_is_checked() {
        assert!(HomeAssistantConfig::default().validate().is_ok());
        for bad in [
            HomeAssistantConfig {
                node_id: Some("a/b".into()),
                ..Default::default()
            },
            HomeAssistantConfig {
                discovery_prefix: "ha/#".into(),
                ..Default::default()
            },
            HomeAssistantConfig {
                boost_minutes: 0,
                ..Default::default()
            },
            HomeAssistantConfig {
                state_interval_secs: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(
            HomeAssistantConfig::default().node_id("0123456789abcdef"),
            "hearth_0123456789ab"
        );
    }

    #[test]
    fn discovery_names_every_component_with_platform_and_unique_id() {
        let d = discovery(&topics(), "hearth_abc", "Living room");
        assert!(d["dev"]["identifiers"].is_array());
        assert_eq!(d["o"]["name"], "hearth");
        let cmps = d["cmps"].as_object().unwrap();
        assert_eq!(cmps.len(), 6);
        let mut ids = std::collections::BTreeSet::new();
        for (key, c) in cmps {
            assert!(c["p"].is_string(), "{key} has no platform");
            assert!(ids.insert(c["unique_id"].as_str().unwrap().to_string()));
        }
        // Home Assistant's Energy dashboard takes only energy sensors that total.
        assert_eq!(cmps["energy_drawn"]["state_class"], "total_increasing");
        assert_eq!(cmps["energy_drawn"]["unit_of_measurement"], "kWh");
    }

    #[test]
    fn state_maps_hearth_modes_to_home_assistant() {
        let status = |mode: &str| HeatStatus {
            source: "http".into(),
            mode: mode.into(),
            setpoint_celsius: 20.0,
            room_celsius: Some(19.0),
            outdoor_celsius: None,
            power_watts: 55.0,
            slots: 1,
            max_slots: 2,
            energy_today_kwh: 0.1,
            energy_charged_today_kwh: 0.0,
            energy_credited_today_kwh: None,
            demand_permille: 300,
            reason: "x".repeat(400),
            fail_safe: false,
            boost_minutes_left: None,
            energy_method: crate::model::receipt::EnergyMethod::CpuEstimate,
            local_time: "Mon 10:00".into(),
            plan: None,
            lease_ahead_slots: 0,
        };
        let s = HaState::new(&status("boost"), true, 1.0, Some(0.5));
        assert_eq!((s.mode.as_str(), s.preset.as_str()), ("heat", "boost"));
        assert_eq!((s.action.as_str(), s.computing.as_str()), ("heating", "ON"));
        assert_eq!(s.reason.chars().count(), MAX_STATE_CHARS);
        let s = HaState::new(&status("manual"), false, 1.0, None);
        assert_eq!((s.mode.as_str(), s.action.as_str()), ("heat", "idle"));
        let s = HaState::new(&status("off"), false, 1.0, None);
        assert_eq!((s.mode.as_str(), s.action.as_str()), ("off", "off"));
        assert_eq!(HaState::new(&status("auto"), false, 0.0, None).mode, "auto");
    }
}
