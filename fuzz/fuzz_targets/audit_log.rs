//! An auditor's log (`hearth receipts verify --audit LOG`) is JSON from a bootstrap node the
//! repayer chose, or from anyone who hands one over. Reading it must not panic; a log that
//! is accepted names only commitments whose signatures verify, which a second reading of
//! the same text accepts again, with the same revocations (a log may carry its coordinator's).
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
    }
});
