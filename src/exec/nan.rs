//! NaN canonicalisation by module rewriting.
//!
//! WebAssembly lets an operation that produces a NaN pick any NaN bit pattern (sign and
//! payload), and real CPUs differ: x86 produces a negative "default NaN", ARM a positive one.
//! Arithmetic and comparisons cannot tell NaNs apart, so the bits only matter where they
//! *escape* into integers, which with SIMD off is exactly:
//!
//! * `f32.store` / `f64.store` (the bits land in linear memory);
//! * `i32.reinterpret_f32` / `i64.reinterpret_f64`;
//! * the sign operand of `f32.copysign` / `f64.copysign` (copies a NaN's sign onto a number).
//!
//! Before each of those we replace a NaN operand by the canonical positive quiet NaN, with
//! `local.tee t; fNN.const nan; local.get t; local.get t; fNN.eq; select`, using one extra
//! local per float type appended after the function's own locals (so existing indices stay
//! valid). Floats that cross the host boundary would be a fourth escape, but hearth's imports
//! and the exports it calls take and return integers only, so nothing is needed there.
//!
//! This is much cheaper than wasmtime's `cranelift_nan_canonicalization`, which canonicalises
//! the result of *every* float operation. Only the module rewrite touches this file; it
//! assumes the module was already validated by `inspect`.

use std::borrow::Cow;

use wasm_encoder::reencode::{Error as ReencodeError, Reencode};
use wasm_encoder::{CodeSection, Function, Ieee32, Ieee64, Instruction, Module, ValType};
use wasmparser::{FunctionBody, Operator, Parser};

use super::ExecError;

/// Canonical positive quiet NaN bits.
pub const CANONICAL_NAN32: u32 = 0x7fc0_0000;
/// Canonical positive quiet NaN bits.
pub const CANONICAL_NAN64: u64 = 0x7ff8_0000_0000_0000;

/// Which float operand type an operator exposes to integer land, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    F32,
    F64,
}

fn escape(op: &Operator<'_>) -> Option<Escape> {
    match op {
        Operator::F32Store { .. } | Operator::I32ReinterpretF32 | Operator::F32Copysign => {
            Some(Escape::F32)
        }
        Operator::F64Store { .. } | Operator::I64ReinterpretF64 | Operator::F64Copysign => {
            Some(Escape::F64)
        }
        _ => None,
    }
}

struct NanRewriter<'a> {
    /// Parameter count of each defined function, in code-section order.
    param_counts: &'a [u32],
    next_function: usize,
}

impl Reencode for NanRewriter<'_> {
    type Error = String;

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), ReencodeError<String>> {
        let params = *self
            .param_counts
            .get(self.next_function)
            .ok_or_else(|| ReencodeError::UserError("more bodies than functions".into()))?;
        self.next_function += 1;

        // First pass: which temporaries does this body need?
        let (mut need32, mut need64) = (false, false);
        let mut ops = func.get_operators_reader()?;
        while !ops.eof() {
            match escape(&ops.read()?) {
                Some(Escape::F32) => need32 = true,
                Some(Escape::F64) => need64 = true,
                None => {}
            }
        }

        let mut locals = Vec::new();
        let mut count = u64::from(params);
        for pair in func.get_locals_reader()? {
            let (n, ty) = pair?;
            count += u64::from(n);
            locals.push((n, self.val_type(ty)?));
        }
        let mut next_local = || -> Result<u32, ReencodeError<String>> {
            let idx = u32::try_from(count)
                .map_err(|_| ReencodeError::UserError("too many locals".into()))?;
            count += 1;
            Ok(idx)
        };
        let tmp32 = if need32 {
            let i = next_local()?;
            locals.push((1, ValType::F32));
            Some(i)
        } else {
            None
        };
        let tmp64 = if need64 {
            let i = next_local()?;
            locals.push((1, ValType::F64));
            Some(i)
        } else {
            None
        };

        let mut f = Function::new(locals);
        let mut ops = func.get_operators_reader()?;
        while !ops.eof() {
            let op = ops.read()?;
            match (escape(&op), tmp32, tmp64) {
                (Some(Escape::F32), Some(t), _) => {
                    f.instruction(&Instruction::LocalTee(t))
                        .instruction(&Instruction::F32Const(Ieee32::new(CANONICAL_NAN32)))
                        .instruction(&Instruction::LocalGet(t))
                        .instruction(&Instruction::LocalGet(t))
                        .instruction(&Instruction::F32Eq)
                        .instruction(&Instruction::Select);
                }
                (Some(Escape::F64), _, Some(t)) => {
                    f.instruction(&Instruction::LocalTee(t))
                        .instruction(&Instruction::F64Const(Ieee64::new(CANONICAL_NAN64)))
                        .instruction(&Instruction::LocalGet(t))
                        .instruction(&Instruction::LocalGet(t))
                        .instruction(&Instruction::F64Eq)
                        .instruction(&Instruction::Select);
                }
                _ => {}
            }
            f.instruction(&self.instruction(op)?);
        }
        code.function(&f);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), ReencodeError<String>> {
        // Keep function names (they make trap backtraces readable; indices are unchanged),
        // drop everything else (DWARF, producers...): nothing at run time needs it.
        if section.name() == "name" {
            module.section(&wasm_encoder::CustomSection {
                name: Cow::Borrowed("name"),
                data: Cow::Borrowed(section.data()),
            });
        }
        Ok(())
    }
}

/// Returns `module` with NaN canonicalisation inserted before every escape point.
pub fn canonicalise(module: &[u8], param_counts: &[u32]) -> Result<Vec<u8>, ExecError> {
    let mut out = Module::new();
    let mut rewriter = NanRewriter {
        param_counts,
        next_function: 0,
    };
    rewriter
        .parse_core_module(&mut out, Parser::new(0), module)
        .map_err(|e| ExecError::InvalidModule(format!("could not rewrite the module: {e}")))?;
    Ok(out.finish())
}
