//! Room temperature readings: parsing what thermostats send, judging whether a reading can be
//! trusted, the file source and the MQTT subscriber.
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

use super::config::MqttConfig;
use super::HeatError;

/// Largest payload or file accepted as one reading: a Zigbee2MQTT message with every field a
/// multi-sensor reports is well under 1 KiB.
pub const MAX_READING_BYTES: usize = 4096;

/// One temperature reading and when it was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub celsius: f64,
    pub at: Instant,
}

/// Parses a bare number (`21.5`, Home Assistant's MQTT statestream) or a JSON object with a
/// numeric `temperature` field (Zigbee2MQTT) or `celsius` field (our own HTTP body).
pub fn parse_temperature(bytes: &[u8]) -> Result<f64, HeatError> {
    let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    if bytes.len() > MAX_READING_BYTES {
        return Err(HeatError::Unreadable(shown()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| HeatError::Unreadable(shown()))?
        .trim();
    let value = if let Ok(v) = text.parse::<f64>() {
        v
    } else {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|_| HeatError::Unreadable(shown()))?;
        let field = json
            .get("temperature")
            .or_else(|| json.get("celsius"))
            .ok_or_else(|| HeatError::Unreadable(shown()))?;
        match field {
            serde_json::Value::Number(n) => n.as_f64(),
            // Some integrations send numbers as strings ("21.3").
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| HeatError::Unreadable(shown()))?
    };
    if !value.is_finite() {
        return Err(HeatError::Unreadable(shown()));
    }
    Ok(value)
}

/// The time a payload says its reading was taken, ms since the Unix epoch, if it says: a JSON
/// `time`, `timestamp` or `last_seen` field (Zigbee2MQTT's `last_seen`) holding epoch seconds
/// or milliseconds, or an RFC 3339 date.
pub fn parse_reading_time(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > MAX_READING_BYTES {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let field = ["time", "timestamp", "last_seen"]
        .iter()
        .find_map(|k| json.get(*k))?;
    match field {
        serde_json::Value::Number(n) => {
            let v = n.as_f64().filter(|v| v.is_finite() && *v > 0.0)?;
            // Epoch seconds are below 1e11 until the year 5138; milliseconds are above.
            Some(if v < 1e11 { v * 1000.0 } else { v } as u64)
        }
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok()),
        _ => None,
    }
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

/// Subscribes to the thermostat's topic and sends each temperature to `readings` until
/// `shutdown`. Reconnects by itself (rumqttc does, as long as it is polled), re-subscribing on
/// every connection because the session is clean. Cancel-safe: dropping it drops the
/// connection.
pub async fn run_mqtt(
    config: MqttConfig,
    readings: mpsc::Sender<Reading>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(MAX_READING_BYTES + 1024, MAX_READING_BYTES + 1024);
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
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
                    tracing::info!(host = %config.host, "MQTT broker reachable again");
                }
                failing = false;
                if let Err(e) = client
                    .subscribe(config.topic.clone(), QoS::AtLeastOnce)
                    .await
                {
                    tracing::warn!("MQTT: could not subscribe to {}: {e}", config.topic);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match parse_temperature(&p.payload) {
                Ok(celsius) => {
                    let now = Instant::now();
                    let at = match (parse_reading_time(&p.payload), p.retain) {
                        (Some(taken_ms), _) => stamped_at(taken_ms, now),
                        // A retained message is the broker's copy of the last one published,
                        // which may be hours old: without its own time it proves nothing
                        // about the room now. Wait for a live one.
                        (None, true) => {
                            tracing::info!(
                                topic = %p.topic,
                                "MQTT: ignoring a retained reading that carries no time of its own; waiting for a fresh one"
                            );
                            continue;
                        }
                        (None, false) => now,
                    };
                    // The service takes readings as they arrive; a full channel means it is
                    // stuck or stopping, and a dropped reading is replaced by the next one.
                    let _ = readings.try_send(Reading { celsius, at });
                }
                Err(e) => tracing::warn!(topic = %p.topic, "MQTT: {e}"),
            },
            Ok(_) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "MQTT broker {}:{}: {e}; retrying every 2 s (heating stops once the last reading is stale)",
                        config.host,
                        config.port
                    );
                }
                failing = true;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    let _ = client.try_disconnect();
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
