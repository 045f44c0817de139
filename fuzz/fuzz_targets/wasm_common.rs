//! The checks shared by the two wasm targets.

use hearth::exec::inspect::{check_shape, features, inspect};
use hearth::exec::nan::canonicalise;
use hearth::exec::RadiatorLimits;
use wasmparser::{Parser, Payload, Validator};

/// Parameter counts of the module's defined functions, in code order, as `inspect` reports
/// them; `None` if the module does not validate.
fn param_counts(module: &[u8]) -> Option<Vec<u32>> {
    Validator::new_with_features(features())
        .validate_all(module)
        .ok()?;
    let mut types = Vec::new();
    let mut counts = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.ok()? {
            Payload::TypeSection(r) => {
                for ty in r.into_iter_err_on_gc_types() {
                    types.push(ty.ok()?.params().len() as u32);
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    counts.push(*types.get(t.ok()? as usize)?);
                }
            }
            _ => {}
        }
    }
    Some(counts)
}

pub fn check(module: &[u8]) {
    let limits = RadiatorLimits::default();
    // The shape check runs first in the executor and must return on any bytes.
    let _ = check_shape(module, &limits);
    match inspect(module) {
        Ok(inspected) => {
            let rewritten = canonicalise(module, &inspected.defined_param_counts)
                .expect("the NaN rewrite accepts every module inspection accepts");
            Validator::new_with_features(features())
                .validate_all(&rewritten)
                .expect("the NaN rewrite produces a valid module");
            let again = inspect(&rewritten).expect("a rewritten module passes inspection");
            assert_eq!(again.abi, inspected.abi);
        }
        Err(_) => {
            // Modules inspection refuses for their imports or ABI are still valid wasm: the
            // rewrite must handle them too.
            // (It may refuse one with an error; whatever it returns must validate.)
            if let Some(counts) = param_counts(module) {
                if let Ok(rewritten) = canonicalise(module, &counts) {
                    Validator::new_with_features(features())
                        .validate_all(&rewritten)
                        .expect("the NaN rewrite produces a valid module");
                }
            }
        }
    }
}
