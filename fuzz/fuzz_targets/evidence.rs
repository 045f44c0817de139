//! Fraud evidence arrives on `hearth/evidence/1` from any peer (`src/model/evidence.rs`), and
//! so do revocations and equivocation proofs (`src/model/refusal.rs`) and households' key
//! events (`src/model/rotate.rs`).
//! Decoding must not panic and is canonical; `check` returns on anything decoded; built
//! evidence round-trips; evidence signed by real keys checks, and with any one byte changed
//! it no longer does.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Unstructured;
use hearth::identity::Identity;
use hearth::model::evidence::Evidence;
use hearth::model::receipt::Claim;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canonical!(Evidence, data);
    canonical!(hearth::model::equivocate::Equivocation, data);
    canonical!(hearth::model::revoke::Revocation, data);
    canonical!(hearth::model::rotate::KeyEvent, data);
    let _ = hearth::model::refusal::Refusal::checked(data);
    if let Ok(e) = hearth::model::rotate::KeyEvent::from_bytes(data) {
        let _ = e.verify();
    }
    if let Ok(e) = Evidence::from_bytes(data) {
        let _ = e.check();
        let _ = e.accused();
    }
    let mut u = Unstructured::new(data);
    // Any well-formed value round-trips, whatever it claims.
    if let (Ok(losing), Ok(winning), Ok(coordinator), Ok(at_ms), Ok(signature)) = (
        common::claim(&mut u),
        common::claim(&mut u),
        common::key(&mut u),
        u.arbitrary::<u64>(),
        u.arbitrary::<[u8; 64]>(),
    ) {
        let e = Evidence {
            coordinator,
            at_ms,
            job: winning.record.job,
            shard: winning.record.shard,
            output: winning.record.output,
            fuel: winning.record.fuel,
            losing,
            winning,
            signature,
        };
        assert_eq!(Evidence::from_bytes(&e.to_bytes()).ok().as_ref(), Some(&e));
        let _ = e.check();
    }
    // Real signatures: what signs checks, and one changed byte breaks it.
    let (Ok(seeds), Ok(mut loser), Ok(mut winner), Ok(flip)) = (
        u.arbitrary::<[[u8; 32]; 3]>(),
        common::record(&mut u),
        common::record(&mut u),
        u.arbitrary::<(usize, u8)>(),
    ) else {
        return;
    };
    let [c, l, w] = seeds.map(Identity::from_seed);
    for r in [&mut loser, &mut winner] {
        r.submitter = c.public();
    }
    loser.worker = l.public();
    winner.worker = w.public();
    (loser.job, loser.shard, loser.module, loser.input) =
        (winner.job, winner.shard, winner.module, winner.input);
    let (Ok(losing), Ok(winning)) = (Claim::sign(loser, &l), Claim::sign(winner, &w)) else {
        return;
    };
    let (output, fuel) = (winning.record.output, winning.record.fuel);
    if let Ok(e) = Evidence::sign(&c, 0, output, fuel, losing, winning) {
        e.check().expect("signed evidence checks");
        let mut bytes = e.to_bytes();
        let i = flip.0 % bytes.len();
        bytes[i] ^= flip.1.max(1);
        assert!(
            Evidence::from_bytes(&bytes).and_then(|e| e.check()).is_err(),
            "byte {i} changed and the evidence still checks"
        );
    }
});
