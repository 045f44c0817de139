//! Static inspection of a shard module before anything is compiled: validation against the
//! exact WebAssembly feature set hearth accepts, the import allow-list, and ABI detection.
//!
//! Everything here works on untrusted bytes and must reject rather than panic. It knows
//! nothing about wasmtime; `mod.rs` turns the verdict into a compiled module.

use wasmparser::{
    types::{CoreTypeId, EntityType},
    CompositeInnerType, FuncType, ValType, Validator, WasmFeatures,
};

use super::{imports, Abi, ExecError, RadiatorLimits};

/// The features a shard may use. Every one of them is deterministic in wasmtime once NaN
/// bits are canonicalised; everything else (SIMD, threads, memory64, multi-memory, GC,
/// exceptions, tail calls...) is refused so the engine never has to reason about it.
/// `floats` is part of the MVP and stays on: the NaN rewrite makes it deterministic.
pub fn features() -> WasmFeatures {
    WasmFeatures::WASM2.difference(WasmFeatures::SIMD)
}

/// Checks the module's shape against the radiator's limits in one streaming pass, before
/// validation and long before compilation: how many functions it defines, how big each body
/// is and how many locals each declares. Compile time and memory grow with these (a 5 MB
/// module of a million empty functions took minutes and gigabytes to compile), so bounding
/// them bounds compilation. Malformed bytes are left to validation, which follows.
pub fn check_shape(module: &[u8], limits: &RadiatorLimits) -> Result<(), ExecError> {
    use wasmparser::{Parser, Payload};
    let invalid = |e: wasmparser::BinaryReaderError| ExecError::InvalidModule(e.to_string());
    let mut index = 0u32;
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(invalid)? {
            // Declared counts are claims; they are checked here and the code entries below
            // are counted too, so a lying count does not help.
            Payload::FunctionSection(reader) if reader.count() > limits.functions => {
                return Err(ExecError::TooManyFunctions {
                    count: u64::from(reader.count()),
                    limit: limits.functions,
                });
            }
            Payload::CodeSectionStart { count, .. } if count > limits.functions => {
                return Err(ExecError::TooManyFunctions {
                    count: u64::from(count),
                    limit: limits.functions,
                });
            }
            Payload::CodeSectionEntry(body) => {
                if index >= limits.functions {
                    return Err(ExecError::TooManyFunctions {
                        count: u64::from(index) + 1,
                        limit: limits.functions,
                    });
                }
                let size = body.range().len() as u64;
                if size > u64::from(limits.function_body_bytes) {
                    return Err(ExecError::FunctionTooLarge {
                        index,
                        size,
                        limit: limits.function_body_bytes,
                    });
                }
                // Each entry is (count: u32, type); the sum can exceed u32, hence u64. The
                // number of entries is bounded by the body size checked above.
                let mut locals = 0u64;
                for entry in body.get_locals_reader().map_err(invalid)? {
                    let (count, _) = entry.map_err(invalid)?;
                    locals += u64::from(count);
                    if locals > u64::from(limits.locals) {
                        return Err(ExecError::TooManyLocals {
                            index,
                            count: locals,
                            limit: limits.locals,
                        });
                    }
                }
                index += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

/// What inspection learned about a valid module.
pub struct Inspected {
    pub abi: Abi,
    /// Number of parameters of every function *defined* (not imported) by the module, in
    /// code-section order. The NaN rewrite needs it to number its extra locals.
    pub defined_param_counts: Vec<u32>,
}

/// Validates `module`, checks its imports and detects its ABI.
pub fn inspect(module: &[u8]) -> Result<Inspected, ExecError> {
    let mut validator = Validator::new_with_features(features());
    let types = validator
        .validate_all(module)
        .map_err(|e| ExecError::InvalidModule(e.to_string()))?;
    let types = types.as_ref();

    let func_type = |id: CoreTypeId| -> Option<&FuncType> {
        match &types[id].composite_type.inner {
            CompositeInnerType::Func(f) => Some(f),
            _ => None,
        }
    };

    // Imports: only the deterministic WASI subset, with exactly the expected signature.
    let mut imported_funcs = 0u32;
    for (module_name, name, ty) in types.core_imports().into_iter().flatten() {
        let EntityType::Func(id) = ty else {
            return Err(ExecError::ForbiddenImport {
                module: module_name.to_string(),
                name: name.to_string(),
                reason: "only functions may be imported (no memories, tables or globals)",
            });
        };
        imported_funcs += 1;
        let Some(expected) = imports::import_signature(module_name, name) else {
            return Err(ExecError::ForbiddenImport {
                module: module_name.to_string(),
                name: name.to_string(),
                reason: "it is not in hearth's deterministic import set",
            });
        };
        let actual = func_type(id);
        if actual.is_none_or(|f| !expected.matches(f.params(), f.results())) {
            return Err(ExecError::ForbiddenImport {
                module: module_name.to_string(),
                name: name.to_string(),
                reason: "its signature differs from wasi_snapshot_preview1",
            });
        }
    }

    let defined_param_counts = (imported_funcs..types.function_count())
        .map(|idx| {
            func_type(types.core_function_at(idx))
                .map(|f| f.params().len() as u32)
                .ok_or_else(|| ExecError::InvalidModule("function without a function type".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Exports decide the ABI.
    let mut memory = false;
    let mut start = None;
    let mut alloc = None;
    let mut run = None;
    for (name, ty) in types.core_exports().into_iter().flatten() {
        match (name, ty) {
            ("memory", EntityType::Memory(_)) => memory = true,
            ("_start", EntityType::Func(id)) => start = func_type(id),
            ("alloc", EntityType::Func(id)) => alloc = func_type(id),
            ("run", EntityType::Func(id)) => run = func_type(id),
            _ => {}
        }
    }
    let sig = |f: Option<&FuncType>, params: &[ValType], results: &[ValType]| {
        f.is_some_and(|f| f.params() == params && f.results() == results)
    };
    use ValType::{I32, I64};
    let abi = if start.is_some() {
        if !sig(start, &[], &[]) {
            return Err(ExecError::BadAbi(
                "`_start` must take no parameters and return nothing".into(),
            ));
        }
        if !memory {
            return Err(ExecError::BadAbi(
                "a WASI command must export its linear memory as `memory`".into(),
            ));
        }
        Abi::WasiCommand
    } else if run.is_some() || alloc.is_some() {
        let mut missing = Vec::new();
        if !memory {
            missing.push("`memory` (the linear memory)");
        }
        if !sig(alloc, &[I32], &[I32]) {
            missing.push("`alloc(len: i32) -> i32`");
        }
        if !sig(run, &[I32, I32], &[I64]) {
            missing.push("`run(ptr: i32, len: i32) -> i64`");
        }
        if !missing.is_empty() {
            return Err(ExecError::BadAbi(format!(
                "a core-ABI shard must export {}",
                missing.join(", ")
            )));
        }
        Abi::Core
    } else {
        return Err(ExecError::BadAbi(
            "the module exports neither `_start` (WASI command) nor `alloc` and `run` (core ABI)"
                .into(),
        ));
    };

    Ok(Inspected {
        abi,
        defined_param_counts,
    })
}

/// Checks an import's parameter and result lists against a fixed signature.
pub(crate) struct Signature {
    pub params: &'static [ValType],
    pub results: &'static [ValType],
}

impl Signature {
    fn matches(&self, params: &[ValType], results: &[ValType]) -> bool {
        self.params == params && self.results == results
    }
}
