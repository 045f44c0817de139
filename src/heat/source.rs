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
