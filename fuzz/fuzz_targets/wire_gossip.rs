//! Gossip payloads (`hearth/jobs/1`, `hearth/heat/1`): any peer on the mesh can publish any
//! bytes. Decoding must not panic, a decoded message re-encodes to exactly its bytes, and
//! every well-formed message survives encode → decode.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::{Result, Unstructured};
use hearth::model::wire::{HeatDemand, JobGossip};
use libfuzzer_sys::fuzz_target;

fn built(u: &mut Unstructured<'_>) -> Result<()> {
    let g = if u.arbitrary()? {
        JobGossip::Announce {
            job: common::hash(u)?,
            manifest: if u.arbitrary()? {
                Some(common::manifest(u)?.to_bytes())
            } else {
                u.arbitrary()?
            },
            at_ms: u.arbitrary()?,
        }
    } else {
        JobGossip::Closed {
            job: common::hash(u)?,
            at_ms: u.arbitrary()?,
        }
    };
    // A decode error is allowed (an over-long manifest is refused), a different value is not.
    if let Ok(back) = JobGossip::from_bytes(&g.to_bytes()) {
        assert_eq!(back, g);
    }
    let h = HeatDemand {
        wanted_slots: u.arbitrary()?,
        demand_permille: u.arbitrary()?,
        room_centi_c: u.arbitrary()?,
        at_ms: u.arbitrary()?,
    };
    if let Ok(back) = HeatDemand::from_bytes(&h.to_bytes()) {
        assert_eq!(back, h);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    canonical!(JobGossip, data);
    canonical!(HeatDemand, data);
    let _ = built(&mut Unstructured::new(data));
});
