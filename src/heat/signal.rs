//! The grid signal's MQTT message format: what a Home Assistant sensor (statestream's bare
//! number, a JSON state with its time) or a script publishing a whole forecast sends on the
//! `[heat.signal] topic`. Pure: bytes in, a [`SignalMessage`] or a sentence saying why not out;
//! the subscriber is `source::run_mqtt_signal`, and the heat service turns a current value
//! into a one-period [`Series`] on its own clock.

use super::grid::{Series, SignalPush};

/// Largest MQTT signal message accepted: a JSON forecast of two days of quarter hours is
/// ~16 KiB; this leaves room for a week.
pub const MAX_SIGNAL_MESSAGE: usize = 256 << 10;

/// One message on the MQTT signal topic.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalMessage {
    /// The value now (a Home Assistant sensor's state): it holds `hold_minutes` from when it
    /// was taken. A quantity the message does not give is `None`.
    Current {
        price_per_kwh: Option<f64>,
        g_co2_per_kwh: Option<f64>,
        /// When the value was taken, ms since the Unix epoch, if the message says.
        taken_ms: Option<u64>,
    },
    /// A whole forecast, as pushed to `PUT /v1/heat/signal`.
    Forecast(Series),
}

/// Reads one MQTT signal message: a bare number (what `value` says it is), Home Assistant's
/// words for a sensor that has none (`unavailable`, `unknown`), a JSON object with `state`
/// or `price_per_kwh` / `g_co2_per_kwh` (and optionally `time`, `timestamp`, `last_updated`
/// or `last_changed`), or a JSON forecast with `points`. Every number is bounded as a pushed
/// forecast's is.
pub fn parse_signal_message(
    bytes: &[u8],
    value: super::config::SignalValue,
    expensive_price: Option<f64>,
    expensive_g_co2_per_kwh: Option<f64>,
) -> Result<SignalMessage, String> {
    use super::config::SignalValue;
    if bytes.len() > MAX_SIGNAL_MESSAGE {
        return Err(format!(
            "a signal message of {} bytes is over the {MAX_SIGNAL_MESSAGE}-byte limit",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "the signal message is not text".to_string())?
        .trim();
    let shown = || text.chars().take(80).collect::<String>();
    let bounded = |v: f64| -> Result<f64, String> {
        if v.is_finite() && (-10.0..=10_000.0).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is not a price or a carbon intensity"))
        }
    };
    let current = |v: f64, taken_ms| -> Result<SignalMessage, String> {
        let v = bounded(v)?;
        Ok(match value {
            SignalValue::Carbon => SignalMessage::Current {
                price_per_kwh: None,
                g_co2_per_kwh: Some(v),
                taken_ms,
            },
            SignalValue::Price => SignalMessage::Current {
                price_per_kwh: Some(v),
                g_co2_per_kwh: None,
                taken_ms,
            },
        })
    };
    if let Ok(v) = text.parse::<f64>() {
        return current(v, None);
    }
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(j) => j,
        Err(_) if matches!(text, "unavailable" | "unknown" | "none" | "") => {
            return Err(format!("the sensor reports {text:?} (it has no value)"))
        }
        Err(_) => return Err(format!("{:?} is neither a number nor JSON", shown())),
    };
    if json.get("points").is_some() {
        let mut push: SignalPush = serde_json::from_value(json)
            .map_err(|e| format!("a forecast that does not read: {e}"))?;
        push.expensive_price = push.expensive_price.or(expensive_price);
        push.expensive_g_co2_per_kwh = push.expensive_g_co2_per_kwh.or(expensive_g_co2_per_kwh);
        return Series::try_from(push)
            .map(SignalMessage::Forecast)
            .map_err(|e| e.to_string());
    }
    let number = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        // Home Assistant's states are strings ("231").
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let taken_ms = ["time", "timestamp", "last_updated", "last_changed"]
        .iter()
        .find_map(|k| json.get(*k))
        .and_then(|t| match t {
            serde_json::Value::Number(n) => n
                .as_f64()
                .filter(|v| v.is_finite() && *v > 0.0)
                // Epoch seconds are below 1e11 until the year 5138; milliseconds above.
                .map(|v| if v < 1e11 { v * 1000.0 } else { v } as u64),
            serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .and_then(|t| u64::try_from(t.timestamp_millis()).ok()),
            _ => None,
        });
    let price = json.get("price_per_kwh").and_then(number);
    let g = json.get("g_co2_per_kwh").and_then(number);
    if price.is_some() || g.is_some() {
        return Ok(SignalMessage::Current {
            price_per_kwh: price.map(bounded).transpose()?,
            g_co2_per_kwh: g.map(bounded).transpose()?,
            taken_ms,
        });
    }
    match json.get("state") {
        Some(state) => match number(state) {
            Some(v) => current(v, taken_ms),
            None => Err(format!("the sensor reports {state} (it has no value)")),
        },
        None => Err(format!(
            "{:?} holds no number: expected a bare number, \"state\", \"price_per_kwh\", \
             \"g_co2_per_kwh\" or a forecast's \"points\"",
            shown()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, NaiveDateTime};

    fn at(day: u32, h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 1, day)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .unwrap()
    }

    #[test]
    fn mqtt_signal_messages() {
        use crate::heat::config::SignalValue::{Carbon, Price};
        let read = |b: &str, v| parse_signal_message(b.as_bytes(), v, Some(0.4), Some(200.0));
        assert_eq!(
            read(" 231\n", Carbon).unwrap(),
            SignalMessage::Current {
                price_per_kwh: None,
                g_co2_per_kwh: Some(231.0),
                taken_ms: None
            }
        );
        assert_eq!(
            read(
                r#"{"state":"0.65","last_updated":"2024-01-03T07:00:00+00:00"}"#,
                Price
            )
            .unwrap(),
            SignalMessage::Current {
                price_per_kwh: Some(0.65),
                g_co2_per_kwh: None,
                taken_ms: Some(1_704_265_200_000)
            }
        );
        let both = read(
            r#"{"price_per_kwh":0.2,"g_co2_per_kwh":90,"time":1704265200}"#,
            Carbon,
        );
        assert!(matches!(
            both,
            Ok(SignalMessage::Current {
                price_per_kwh: Some(_),
                g_co2_per_kwh: Some(_),
                taken_ms: Some(1_704_265_200_000)
            })
        ));
        let f = read(
            r#"{"points":[{"start":"2024-01-03T07:00","price_per_kwh":0.2,"g_co2_per_kwh":250}]}"#,
            Carbon,
        )
        .unwrap();
        let SignalMessage::Forecast(s) = f else {
            panic!("a forecast")
        };
        // The thresholds the message leaves out come from the configuration.
        assert_eq!(s.expensive_g_co2_per_kwh, Some(200.0));
        assert!(s.at(at(3, 7, 10)).unwrap().expensive);
        for (bad, says) in [
            ("unavailable", "has no value"),
            (r#"{"state":"unknown"}"#, "has no value"),
            ("warm", "neither a number nor JSON"),
            ("1e9", "not a price"),
            ("NaN", "not a price"),
            (r#"{"humidity":3}"#, "holds no number"),
        ] {
            let e = read(bad, Carbon).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let huge = vec![b' '; MAX_SIGNAL_MESSAGE + 1];
        assert!(parse_signal_message(&huge, Carbon, None, Some(1.0)).is_err());
        // A current carbon value: its price never makes it expensive.
        let s =
            Series::current(at(3, 7, 0), None, Some(250.0), 60, Some(0.0), Some(200.0)).unwrap();
        assert!(s.at(at(3, 7, 59)).unwrap().expensive);
        assert!(s.at(at(3, 8, 0)).unwrap_err().contains("ran out"));
        let s =
            Series::current(at(3, 7, 0), None, Some(150.0), 60, Some(0.0), Some(200.0)).unwrap();
        assert!(!s.at(at(3, 7, 30)).unwrap().expensive);
    }
}
