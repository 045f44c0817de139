//! Room temperature readings: parsing what thermostats send, judging whether a reading can be
//! trusted, the file source and the MQTT subscribers (the thermostat's topic, and a grid
//! signal's topic).
//!
//! A reading is trusted only if it is recent (`max_age_secs`) and plausible for a room
//! (`min_plausible_celsius..=max_plausible_celsius`); the controller fails safe otherwise. This
//! module never decides how much to heat; it only says what the room temperature is, or why
//! nobody knows.

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::{MqttConfig, SignalConfig};
use super::signal::{parse_signal_message, SignalMessage, MAX_SIGNAL_MESSAGE};
use super::HeatError;

// The payload parsers live in `payload.rs` (they need no runtime, so the fuzz build has them).
pub use super::payload::{parse_reading_time, parse_temperature, MAX_READING_BYTES};

/// One temperature reading and when it was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub celsius: f64,
    pub at: Instant,
}

/// When a reading was taken on tokio's clock: `now` less its age by its own timestamp (a time
/// in the future, from a skewed clock, counts as now).
fn stamped_at(taken_ms: u64, now: Instant) -> Instant {
    let age = Duration::from_millis(crate::model::now_ms().saturating_sub(taken_ms));
    now.checked_sub(age).unwrap_or(now)
}

/// Limits a reading must meet to be trusted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trust {
    pub max_age: Duration,
    pub min_celsius: f64,
    pub max_celsius: f64,
}

impl Trust {
    /// The temperature, or a sentence saying why there is none that can be trusted.
    pub fn judge(&self, reading: Option<&Reading>, now: Instant) -> Result<f64, String> {
        let Some(r) = reading else {
            return Err("no temperature reading from the thermostat yet".into());
        };
        let age = now.saturating_duration_since(r.at);
        if age > self.max_age {
            return Err(format!(
                "the last temperature reading is {} old (the limit is {}); is the sensor working?",
                human(age),
                human(self.max_age)
            ));
        }
        if !(self.min_celsius..=self.max_celsius).contains(&r.celsius) {
            return Err(format!(
                "the thermostat reports {:.1} °C, which no room can be (expected {:.0} to {:.0} °C); check the sensor",
                r.celsius, self.min_celsius, self.max_celsius
            ));
        }
        Ok(r.celsius)
    }
}

/// "42 s", "12 min", "3 h 5 min".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 3 * 3600 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// Reads the temperature file. Its age is its modification time's, so a sensor script that
/// died leaves a file that goes stale. The file is tiny and local (usually on tmpfs), so it is
/// read synchronously rather than on the blocking pool.
pub fn read_file(path: &Path, now: Instant) -> Result<Reading, HeatError> {
    let io = |source| HeatError::File {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_READING_BYTES as u64 {
        return Err(HeatError::FileTooLarge {
            path: path.to_path_buf(),
            limit: MAX_READING_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let celsius = parse_temperature(&bytes)?;
    // A modification time in the future (clock skew) counts as fresh.
    let age = meta
        .modified()
        .ok()
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    let at = now.checked_sub(age).unwrap_or(now);
    Ok(Reading { celsius, at })
}

/// What a subscription hands its owner.
enum MqttEvent<'a> {
    /// Connected (again) and subscribed.
    Up,
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        retain: bool,
    },
    /// The broker cannot be reached; retried every 2 s.
    Down(String),
}

/// Subscribes to `topic` on `broker` and hands every event to `on` until `shutdown`.
/// Reconnects by itself (rumqttc does, as long as it is polled), re-subscribing on every
/// connection because the session is clean. Cancel-safe: dropping it drops the connection.
async fn subscribe(
    broker: &MqttConfig,
    client_id: String,
    topic: &str,
    max_payload: usize,
    mut shutdown: watch::Receiver<bool>,
    mut on: impl FnMut(MqttEvent<'_>),
) {
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(max_payload + 1024, max_payload + 1024);
    if let Some(user) = &broker.username {
        options.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
    }
    // Capacity of the request queue: we only ever queue one subscribe.
    let (client, mut events) = AsyncClient::new(options, 8);
    let mut failing = false;
    loop {
        let event = tokio::select! {
            ev = events.poll() => ev,
            _ = shutdown.changed() => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if failing {
                    tracing::info!(host = %broker.host, "MQTT broker reachable again");
                }
                failing = false;
                if let Err(e) = client.subscribe(topic, QoS::AtLeastOnce).await {
                    tracing::warn!("MQTT: could not subscribe to {topic}: {e}");
                }
                on(MqttEvent::Up);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => on(MqttEvent::Publish {
                topic: &p.topic,
                payload: &p.payload,
                retain: p.retain,
            }),
            Ok(_) => {}
            Err(e) => {
                let why = format!("MQTT broker {}:{}: {e}", broker.host, broker.port);
                if !failing {
                    tracing::warn!("{why}; retrying every 2 s");
                }
                failing = true;
                on(MqttEvent::Down(why));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

/// Subscribes to the thermostat's topic and sends each temperature to `readings` until
/// `shutdown` (heating stops once the last reading is stale, e.g. while the broker is down).
pub async fn run_mqtt(
    config: MqttConfig,
    readings: mpsc::Sender<Reading>,
    shutdown: watch::Receiver<bool>,
) {
    let topic = config.topic.clone();
    subscribe(
        &config,
        config.client_id.clone(),
        &topic,
        MAX_READING_BYTES,
        shutdown,
        |event| {
            let MqttEvent::Publish {
                topic,
                payload,
                retain,
            } = event
            else {
                return;
            };
            match parse_temperature(payload) {
                Ok(celsius) => {
                    let now = Instant::now();
                    let at = match (parse_reading_time(payload), retain) {
                        (Some(taken_ms), _) => stamped_at(taken_ms, now),
                        // A retained message is the broker's copy of the last one published,
                        // which may be hours old: without its own time it proves nothing
                        // about the room now. Wait for a live one.
                        (None, true) => {
                            tracing::info!(
                                %topic,
                                "MQTT: ignoring a retained reading that carries no time of its own; waiting for a fresh one"
                            );
                            return;
                        }
                        (None, false) => now,
                    };
                    // The service takes readings as they arrive; a full channel means it is
                    // stuck or stopping, and a dropped reading is replaced by the next one.
                    let _ = readings.try_send(Reading { celsius, at });
                }
                Err(e) => tracing::warn!(%topic, "MQTT: {e}"),
            }
        },
    )
    .await;
}

/// What the MQTT grid-signal subscriber tells the heat service: a message read, or why there
/// is none (an unreadable message, a broker that cannot be reached).
pub type SignalUpdate = Result<SignalMessage, String>;

/// Subscribes to the grid-signal topic (`[heat.signal] topic`) on the broker of
/// `[heat.mqtt]`, with its own client id (`<client_id>-signal`: a broker drops the older of
/// two connections sharing one), and sends every message, read, to `updates`.
pub async fn run_mqtt_signal(
    broker: MqttConfig,
    signal: SignalConfig,
    updates: mpsc::Sender<SignalUpdate>,
    shutdown: watch::Receiver<bool>,
) {
    let client_id = format!("{}-signal", broker.client_id);
    subscribe(
        &broker,
        client_id,
        &signal.topic,
        MAX_SIGNAL_MESSAGE,
        shutdown,
        |event| {
            let update = match event {
                MqttEvent::Up => return,
                MqttEvent::Down(why) => Err(why),
                MqttEvent::Publish { payload, .. } => parse_signal_message(
                    payload,
                    signal.value,
                    signal.expensive_price,
                    signal.expensive_g_co2_per_kwh,
                )
                .map_err(|e| format!("MQTT topic {}: {e}", signal.topic)),
            };
            if let Err(why) = &update {
                tracing::debug!("grid signal: {why}");
            }
            // As for readings: a full channel means the service is stuck or stopping.
            let _ = updates.try_send(update);
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_json() {
        assert_eq!(parse_temperature(b" 20.5\n").unwrap(), 20.5);
        assert_eq!(
            parse_temperature(br#"{"temperature":21.3,"humidity":40}"#).unwrap(),
            21.3
        );
        assert_eq!(parse_temperature(br#"{"celsius": 19}"#).unwrap(), 19.0);
        assert_eq!(
            parse_temperature(br#"{"temperature":"18.5"}"#).unwrap(),
            18.5
        );
        for bad in [
            &b"warm"[..],
            b"{}",
            br#"{"temperature":null}"#,
            b"NaN",
            b"inf",
            b"\xff",
        ] {
            assert!(parse_temperature(bad).is_err(), "{bad:?}");
        }
        assert!(parse_temperature(&vec![b' '; MAX_READING_BYTES + 1]).is_err());
    }
}
