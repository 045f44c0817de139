//! A household that rotated its key (`node::key_log`, docs/receipts.md "Rotating a key") is
//! the same household under its new key: a household this coordinator excluded (it lost a
//! vote an established household won, or checked fraud evidence proved it lied) stays
//! excluded under its next key, instead of coming back clean on probation.
//!
//! Only what restricts carries over. A good record does not: a thief holding a stolen key
//! whose household never published its key log can sign a rotation of its own (event #0 to a
//! key of its choosing), and a coordinator that heard that first would hand the household's
//! standing to the thief's key, which the household's later revocation of the stolen key
//! would not take back. An exclusion can only reach a key whose holder signed the rotation to
//! it (event #n is signed by the new key), so carrying one harms nobody else. Carrying a good
//! record safely needs the auditors' first-heard record of the household's log at the
//! coordinator (docs/trust.md). Must not touch: I/O, clocks.

use super::{Book, Update};
use crate::identity::PublicKey;

impl Book {
    /// What to write when `old`'s household is heard to sign with `new` now: if `old` is
    /// excluded here and `new` is not, `new`'s exclusion, its evidence naming the key it came
    /// from; `None` otherwise.
    pub fn inherit(&self, old: &PublicKey, new: &PublicKey) -> Option<Update> {
        if old == new || !self.is_excluded(old) || self.is_excluded(new) {
            return None;
        }
        let evidence = serde_json::json!({
            "rotated_from": old.to_hex(),
            "reason": "its household was excluded here under the key it rotated away from",
        });
        Some(Update {
            exclude: vec![(*new, evidence.to_string())],
            ..Update::default()
        })
    }
}
