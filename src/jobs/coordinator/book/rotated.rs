//! A household that rotated its key (`node::key_log`, docs/receipts.md "Rotating a key") is
//! the same household under its new key.
//!
//! - What restricts always carries over: a household this coordinator excluded (it lost a
//!   vote an established household won, or checked fraud evidence proved it lied) stays
//!   excluded under its next key, instead of coming back clean on probation. An exclusion can
//!   only reach a key whose holder signed the rotation to it (event #n is signed by the new
//!   key), so carrying one harms nobody else.
//! - A good record carries over only when this node heard the event that fixed the new key
//!   (#n−1, which commits to its hash) at least `Rules::carry_after_ms` (default 7 days)
//!   before it heard the rotation (#n). A thief holding a stolen key whose household never
//!   published its key log can sign an event #0 of its own, committing to a key of its
//!   choosing, and a rotation to that key; it must then leave its #0 heard and uncontested
//!   that long, while the household's node, hearing an event of its household that it did
//!   not sign, warns its owner, whose own `hearth key prerotate` contests it. A contest heard
//!   at any time takes the carried record back ([`Book::uncarry`]), as it takes back every
//!   retirement of the household's keys. Carried records are kept as links (new key → old
//!   key), not merged: the new key's own record stays its own, and the standing adds them
//!   (`Reputation::combined`).
//!
//! Must not touch: I/O, clocks (the gap between the two events comes in as a number).

use super::{Book, Update};
use crate::identity::PublicKey;

impl Book {
    /// What to write when `old`'s household is heard to sign with `new` now, this node having
    /// heard the event that fixed `new` `gap_ms` before the one that brought it in: if `old`
    /// is excluded here and `new` is not, `new`'s exclusion, its evidence naming the key it
    /// came from; else, if the gap carries (`Rules::carries`) and `old` has a record here
    /// (its own or carried), that record counts for `new`. `None`: nothing to write.
    pub fn inherit(&self, old: &PublicKey, new: &PublicKey, gap_ms: u64) -> Option<Update> {
        if old == new || self.is_excluded(new) {
            return None;
        }
        if self.is_excluded(old) {
            let evidence = serde_json::json!({
                "rotated_from": old.to_hex(),
                "reason": "its household was excluded here under the key it rotated away from",
            });
            return Some(Update {
                exclude: vec![(*new, evidence.to_string())],
                ..Update::default()
            });
        }
        let reputation = self.reputation();
        let carries = reputation.rules.carries(gap_ms)
            && reputation.combined(old).is_some()
            && reputation.carried_from(new) != Some(*old);
        carries.then(|| Update {
            carry: vec![(*new, *old)],
            ..Update::default()
        })
    }

    /// What to write when the households of `keys` were contested here (two different events
    /// under one number): none of them counts another key's record any more. `None`: none
    /// did.
    pub fn uncarry(&self, keys: &[PublicKey]) -> Option<Update> {
        let uncarry: Vec<PublicKey> = keys
            .iter()
            .filter(|k| self.reputation().carried_from(k).is_some())
            .copied()
            .collect();
        (!uncarry.is_empty()).then(|| Update {
            uncarry,
            ..Update::default()
        })
    }
}
