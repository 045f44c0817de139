//! Heat subsystem tests: simulation, controller, sources, energy meter, API.

use hearth::heat::sim::{simulate, SimOptions};
use hearth::heat::HeatConfig;

#[test]
fn simulated_winter_day_holds_setpoint() {
    for slots in [1, 2, 4, 8, 16] {
        let mut opts = SimOptions::new(HeatConfig::default());
        opts.max_slots = slots;
        opts.setpoint = Some(19.0);
        let r = simulate(&opts).unwrap();
        println!("slots {slots}: within {:.3} energy {:.2} kWh min {:.2} max {:.2} step {}", r.fraction_within_half_kelvin, r.energy_kwh, r.min_room_celsius, r.max_room_celsius, r.max_slot_step);
        opts.setpoint = None;
        let r = simulate(&opts).unwrap();
        println!("  schedule: within {:.3} energy {:.2} kWh min {:.2} max {:.2}", r.fraction_within_half_kelvin, r.energy_kwh, r.min_room_celsius, r.max_room_celsius);
        opts.setpoint = Some(19.0);
        opts.warmup_hours = 0.0;
        let r = simulate(&opts).unwrap();
        println!("  no warmup: within {:.3} energy {:.2} kWh min {:.2} max {:.2}", r.fraction_within_half_kelvin, r.energy_kwh, r.min_room_celsius, r.max_room_celsius);
    }
}
