//! Thermostat payloads: what a device, a broker or an HTTP client sends as a room reading,
//! parsed into a temperature and, when the payload says, the time it was taken. Untrusted
//! bytes: everything here rejects rather than panics (fuzzed: `fuzz/fuzz_targets/heat_reading.rs`).
//! [`super::source`] decides whether to trust what these return.

use super::HeatError;

/// Largest payload or file accepted as one reading: a Zigbee2MQTT message with every field a
/// multi-sensor reports is well under 1 KiB.
pub const MAX_READING_BYTES: usize = 4096;

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
