//! `hearth receipts verify FILE` reads a receipt export written by anyone. Parsing must not
//! panic; every check the verifier runs on a parsed export returns; a parsed export
//! serialises and parses back to itself; the readable fields of an accepted receipt are
//! exactly what its canonical bytes say. Structured mode: real signed receipts exported to
//! JSON come back whole and verified.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::{Result, Unstructured};
use hearth::identity::Identity;
use hearth::model::conservation::check_conservation;
use hearth::model::export::{ReceiptExport, ReceiptJson};
use hearth::model::receipt::{verify_batch, CreditTerms};
use hearth::model::Receipt;
use libfuzzer_sys::fuzz_target;

/// What `hearth receipts verify` runs on a parsed export (cli/local.rs `check_export`).
fn check(export: &ReceiptExport) -> Vec<Receipt> {
    let mut decoded = Vec::new();
    for r in &export.receipts {
        if let Ok(rec) = r.to_receipt() {
            assert_eq!(&ReceiptJson::from(&rec), r);
            decoded.push(rec);
        }
    }
    let _ = verify_batch(&decoded);
    let _ = check_conservation(&decoded);
    if let Some(chain) = &export.chain {
        let _ = chain.verify(&decoded, &Default::default());
    }
    decoded
}

fn built(u: &mut Unstructured<'_>) -> Result<()> {
    let worker = Identity::from_seed(u.arbitrary()?);
    let submitter = Identity::from_seed(u.arbitrary()?);
    let mut receipts = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let mut record = common::record(u)?;
        record.worker = worker.public();
        record.submitter = submitter.public();
        let agreeing = u.int_in_range(1..=5u8)?;
        let terms = CreditTerms::claimed(&record, agreeing, agreeing);
        let Ok(claim) = hearth::model::Claim::sign(record, &worker) else {
            continue;
        };
        if let Ok(r) = claim.countersign(&submitter, terms) {
            receipts.push(r);
        }
    }
    let export = ReceiptExport::new(&receipts, None);
    let text = serde_json::to_string(&export).expect("an export serialises");
    let back: ReceiptExport = serde_json::from_str(&text).expect("an export parses back");
    assert_eq!(back, export);
    assert_eq!(check(&back), receipts);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(export) = serde_json::from_slice::<ReceiptExport>(data) {
        check(&export);
        let text = serde_json::to_vec(&export).expect("a parsed export serialises");
        let back: ReceiptExport =
            serde_json::from_slice(&text).expect("a re-serialised export parses");
        assert_eq!(back, export);
    }
    let _ = built(&mut Unstructured::new(data));
});
