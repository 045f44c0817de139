//! Thermostat payloads (MQTT, HTTP, files) are whatever a device or a neighbour's broker
//! sends. Parsing must not panic; a temperature, when accepted, is finite.
#![no_main]

use hearth::heat::payload::{parse_reading_time, parse_temperature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = parse_temperature(data) {
        assert!(t.is_finite(), "accepted a non-finite temperature {t}");
    }
    let _ = parse_reading_time(data);
});
