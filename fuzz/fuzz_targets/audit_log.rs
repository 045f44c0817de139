//! An auditor's log (`hearth receipts verify --audit LOG`) is JSON from a bootstrap node the
//! repayer chose, or from anyone who hands one over. Reading it must not panic; a log that
//! is accepted names only commitments whose signatures verify, which a second reading of
//! the same text accepts again, with the same revocations (a log may carry its coordinator's)
//! and the same key chains (and its household's key events). A key log (`--keys`) is read
//! the same way: never a panic, and the chains it builds are the same from the same text.
#![no_main]

use hearth::model::tally::AuditLogs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut logs = AuditLogs::default();
    if logs.add(text).is_ok() {
        let mut again = AuditLogs::default();
        assert!(again.add(text).is_ok(), "a log read once is read again");
        assert_eq!(again.revocations(), logs.revocations());
        assert_eq!(again.chains(&[]), logs.chains(&[]));
    }
    if let Ok(events) = hearth::model::rotate::parse_log(text) {
        let chains = hearth::model::rotate::KeyChains::build(&events);
        assert_eq!(chains, hearth::model::rotate::KeyChains::build(&events));
    }
});
