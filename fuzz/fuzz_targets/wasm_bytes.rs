//! Shard modules are blobs any submitter can publish. The inspector (shape limits,
//! validation, imports, ABI) must reject rather than panic, and every module it accepts is
//! rewritten by the NaN canonicaliser into a module that still validates with the same
//! feature set and still passes inspection with the same ABI.
#![no_main]

#[path = "wasm_common.rs"]
mod wasm_common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wasm_common::check(data);
});
