//! Work records, claims and receipts (with their credit terms) arrive from workers and
//! coordinators. Decoding must not panic, decoded values are canonical, every check on a
//! decoded value returns rather than panics, and built values survive encode → decode and
//! the readable export form.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Unstructured;
use hearth::model::conservation::check_conservation;
use hearth::model::export::ReceiptJson;
use hearth::model::receipt::verify_batch;
use hearth::model::{Claim, Receipt, WorkRecord};
use libfuzzer_sys::fuzz_target;

fn exercise(r: &Receipt) {
    let _ = r.record.check_physics();
    let _ = r.terms.check(&r.record);
    let _ = r.check_content();
    let _ = r.verify();
    let _ = r.claim().verify();
    let _ = verify_batch(std::slice::from_ref(r));
    let _ = check_conservation(std::slice::from_ref(r));
    // The export form of any decodable receipt reads back as the same receipt.
    let json = ReceiptJson::from(r);
    assert_eq!(json.to_receipt().as_ref(), Ok(r));
}

fuzz_target!(|data: &[u8]| {
    canonical!(WorkRecord, data);
    canonical!(Claim, data);
    canonical!(Receipt, data);
    if let Ok(c) = Claim::from_bytes(data) {
        let _ = c.verify();
    }
    if let Ok(r) = Receipt::from_bytes(data) {
        exercise(&r);
    }
    let mut u = Unstructured::new(data);
    if let Ok(r) = common::receipt(&mut u) {
        assert_eq!(Receipt::from_bytes(&r.to_bytes()).ok().as_ref(), Some(&r));
        assert_eq!(
            Claim::from_bytes(&r.claim().to_bytes()).ok(),
            Some(r.claim())
        );
        assert_eq!(
            WorkRecord::from_bytes(&r.record.to_bytes()).ok().as_ref(),
            Some(&r.record)
        );
        exercise(&r);
    }
});
