//! Structured wasm from wasm-smith, restricted to the features hearth accepts, through the
//! inspector and the NaN rewrite: valid modules reach the rewrite's every operator, which
//! random bytes rarely do.
#![no_main]

#[path = "wasm_common.rs"]
mod wasm_common;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut config) = u.arbitrary::<wasm_smith::Config>() else {
        return;
    };
    // hearth's feature set: WebAssembly 2.0 without SIMD (exec/inspect.rs `features`).
    config.simd_enabled = false;
    config.relaxed_simd_enabled = false;
    config.threads_enabled = false;
    config.memory64_enabled = false;
    config.gc_enabled = false;
    config.exceptions_enabled = false;
    config.tail_call_enabled = false;
    config.extended_const_enabled = false;
    config.custom_page_sizes_enabled = false;
    config.wide_arithmetic_enabled = false;
    config.shared_everything_threads_enabled = false;
    config.max_memories = config.max_memories.min(1);
    let Ok(module) = wasm_smith::Module::new(config, &mut u) else {
        return;
    };
    wasm_common::check(&module.to_bytes());
});
