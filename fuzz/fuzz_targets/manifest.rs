//! Job manifests arrive in gossip and as blobs from any peer. Decoding must not panic; a
//! decoded manifest is canonical and valid; a valid manifest survives encode → decode.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Unstructured;
use hearth::model::JobManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canonical!(JobManifest, data);
    if let Ok(m) = JobManifest::from_bytes(data) {
        assert!(m.validate().is_ok(), "decoded an invalid manifest: {m:?}");
        assert_eq!(m.id(), blake3::hash(data));
    }
    if let Ok(m) = common::manifest(&mut Unstructured::new(data)) {
        let back = JobManifest::from_bytes(&m.to_bytes());
        match m.validate() {
            Ok(()) => assert_eq!(back.ok().as_ref(), Some(&m)),
            Err(_) => assert!(back.is_err(), "decoded a manifest that fails validation"),
        }
    }
});
