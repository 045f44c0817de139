//! The deterministic shard executor: runs untrusted WebAssembly shards so that the same
//! module and input give the same output bytes *and* the same fuel count on every machine
//! running this hearth version (replicas compare blake3 hashes of results).
//!
//! Owns: the wasmtime engine and its configuration, the bounded cache of compiled modules,
//! the NaN-canonicalising module rewrite ([`nan`]), the import allow-list and host functions
//! ([`wasi`]), limits and the mapping of every failure to an [`ExecError`] a job author can
//! act on. Must not touch: the network, leases, receipts or storage — it runs bytes and
//! returns bytes. `docs/shard-abi.md` is the contract this module implements.
//!
//! This file holds what needs no engine (limits, errors); [`engine`] the executor itself (module
//! cache, compile bounds, fuel, the watchdog and both ABIs' entry).

// Without the `node` feature only the wasmtime-free half is built: the limits, the errors,
// the inspector, the import allow-list and the NaN rewrite (what the fuzz targets link).
#[cfg(feature = "node")]
mod budget;
#[cfg(feature = "node")]
mod engine;
mod imports;
pub mod inspect;
pub mod nan;
#[cfg(feature = "node")]
mod wasi;

use std::time::Duration;

#[cfg(feature = "node")]
pub use engine::{Admitted, Executor, ShardOutput};
pub use imports::provided_imports;
#[cfg(feature = "node")]
pub use wasi::{FIXED_TIME_NS, STDERR_CAP};

/// Largest module any radiator accepts, in bytes, whatever its configuration says.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// Largest shard input any radiator accepts, in bytes, whatever its configuration says.
pub const MAX_INPUT_BYTES: usize = 256 << 20;
/// Compilations that overran [`RadiatorLimits::compile_timeout`] and are still finishing on
/// their own threads (a compilation cannot be interrupted). Beyond this, new compilations
/// wait for them: see [`ExecError::CompileBusy`].
pub const MAX_OVERRUN_COMPILES: usize = 2;
/// Largest shard output accepted, in bytes (stdout for WASI, the `run` result for core).
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;
/// Compiled modules kept in memory; the least recently used one is dropped beyond this.
pub const MODULE_CACHE_ENTRIES: usize = 64;
/// Native stack available to wasm code. Bounds recursion depth; see the caveat in
/// `docs/shard-abi.md` (the depth at which it overflows is not portable across CPUs).
pub const MAX_WASM_STACK: usize = 1 << 20;

/// A shard's input and its BLAKE3 hash, which seeds the shard's `random_get` stream (so
/// replicas agree and different shards see different numbers). Built from bytes alone the
/// hash is computed; an input in the caller's store is [`ShardInput::stored`], read only once
/// its run has its share of the radiator's memory ([`Executor::admit`]): a core shard's by
/// the run, straight into its linear memory, a WASI command's on admission, into the buffer
/// its stdin reads from.
pub struct ShardInput {
    source: Source,
    hash: blake3::Hash,
    len: u64,
}

enum Source {
    Bytes(Vec<u8>),
    Stored(Box<ReadInput>),
}

/// Reads a stored input into a buffer of exactly its length, verified, or says why it
/// could not.
type ReadInput = dyn FnOnce(&mut [u8]) -> Result<(), String> + Send;

impl ShardInput {
    /// An input of `len` bytes kept under the content address `hash` in the caller's store,
    /// read by `read` into a buffer of exactly `len` bytes (it must write the blob as the
    /// store verified it) only once the run is admitted. Its failure is
    /// [`ExecError::InputUnreadable`], never the shard's fault.
    pub fn stored(
        hash: blake3::Hash,
        len: u64,
        read: impl FnOnce(&mut [u8]) -> Result<(), String> + Send + 'static,
    ) -> ShardInput {
        ShardInput {
            source: Source::Stored(Box::new(read)),
            hash,
            len,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its content address.
    #[cfg_attr(not(feature = "node"), allow(dead_code))]
    fn hash(&self) -> blake3::Hash {
        self.hash
    }

    /// Whether it is still to be read from the caller's store (not yet in memory).
    #[cfg_attr(not(feature = "node"), allow(dead_code))]
    fn is_stored(&self) -> bool {
        matches!(self.source, Source::Stored(_))
    }

    /// Writes its bytes into `dst`, which is exactly [`ShardInput::len`] long (the store's
    /// read checks the blob has that length).
    #[cfg_attr(not(feature = "node"), allow(dead_code))]
    fn read_into(self, dst: &mut [u8]) -> Result<(), ExecError> {
        debug_assert_eq!(dst.len() as u64, self.len, "a buffer of another length");
        match self.source {
            Source::Bytes(bytes) => dst.copy_from_slice(&bytes),
            Source::Stored(read) => read(dst).map_err(ExecError::InputUnreadable)?,
        }
        debug_assert_eq!(
            blake3::hash(dst),
            self.hash,
            "not the input's content address"
        );
        Ok(())
    }

    /// Its bytes, a stored input's read now into a buffer of its length.
    #[cfg_attr(not(feature = "node"), allow(dead_code))]
    fn into_bytes(self) -> Result<Vec<u8>, ExecError> {
        match self.source {
            Source::Bytes(bytes) => Ok(bytes),
            Source::Stored(_) => {
                // The length was held to the radiator's input limit on admission.
                let mut bytes = vec![0; usize::try_from(self.len).unwrap_or(usize::MAX)];
                self.read_into(&mut bytes)?;
                Ok(bytes)
            }
        }
    }
}

impl From<Vec<u8>> for ShardInput {
    fn from(bytes: Vec<u8>) -> ShardInput {
        ShardInput {
            hash: blake3::hash(&bytes),
            len: bytes.len() as u64,
            source: Source::Bytes(bytes),
        }
    }
}

impl From<&[u8]> for ShardInput {
    fn from(bytes: &[u8]) -> ShardInput {
        bytes.to_vec().into()
    }
}

/// Resource limits for one shard run. Part of the job, so every replica uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel units (roughly one per wasm instruction) the shard may consume.
    pub fuel: u64,
    /// Most bytes of linear memory the shard may have.
    pub memory_bytes: u64,
    /// Wall-clock watchdog. Not deterministic: it only catches stuck or absurdly slow runs,
    /// fuel is the real bound.
    pub wall_clock: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            memory_bytes: 256 << 20,
            wall_clock: Duration::from_secs(120),
        }
    }
}

/// The radiator's own limits, set by its household (`[limits]` in `hearth.toml`), never by a
/// job: a manifest may ask for less, never for more (STYLE rule 18). The executor enforces
/// them whatever [`Limits`] a caller passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RadiatorLimits {
    /// Most linear memory one shard may have, in bytes. A run asking for more gets this.
    pub memory_per_shard: u64,
    /// Most memory shards may hold together, in bytes: the running ones their linear memory
    /// limits, their inputs and room for their outputs (64 MiB for a WASI command, at most its
    /// memory for a core shard) and diagnostics; finished ones their outputs until the caller
    /// drops them. A run waits (on its own thread) until its share is free, so this bounds how
    /// many shards run at once given their memory. Never below `memory_per_shard`.
    pub memory_total: u64,
    /// Largest module, in bytes (at most [`MAX_MODULE_BYTES`]).
    pub module_bytes: u64,
    /// Largest shard input, in bytes (at most [`MAX_INPUT_BYTES`]).
    pub input_bytes: u64,
    /// Most functions a module may define.
    pub functions: u32,
    /// Largest body of a single function, in bytes.
    pub function_body_bytes: u32,
    /// Most locals one function may declare (parameters not counted).
    pub locals: u32,
    /// Wall-clock bound on compiling one module; see [`ExecError::CompileTimeout`].
    pub compile_timeout: Duration,
}

impl Default for RadiatorLimits {
    fn default() -> Self {
        RadiatorLimits {
            memory_per_shard: 1 << 30,
            memory_total: 2 << 30,
            module_bytes: 16 << 20,
            input_bytes: MAX_INPUT_BYTES as u64,
            functions: 20_000,
            function_body_bytes: 1 << 20,
            locals: 20_000,
            compile_timeout: Duration::from_secs(60),
        }
    }
}

impl RadiatorLimits {
    /// The same limits with every value inside what hearth can enforce at all.
    #[cfg_attr(not(feature = "node"), allow(dead_code))]
    fn sanitised(mut self) -> RadiatorLimits {
        self.memory_per_shard = self.memory_per_shard.clamp(64 * 1024, 4 << 30);
        self.memory_total = self.memory_total.max(self.memory_per_shard);
        self.module_bytes = self.module_bytes.min(MAX_MODULE_BYTES as u64);
        self.input_bytes = self.input_bytes.min(MAX_INPUT_BYTES as u64);
        self.compile_timeout = self.compile_timeout.max(Duration::from_millis(10));
        self
    }
}

/// How a module talks to the host, detected from its exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Abi {
    /// Exports `memory`, `alloc(len) -> ptr` and `run(ptr, len) -> (out_ptr << 32) | out_len`.
    Core,
    /// A WASI preview1 command exporting `_start`: stdin is the input, stdout the output.
    WasiCommand,
}

/// Why a shard could not be prepared or run. Messages are addressed to the job author.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("the module bytes hash to {actual}, not to the expected {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("the module is {size} bytes; this radiator accepts at most {limit}")]
    ModuleTooLarge { size: u64, limit: u64 },
    #[error("the input is {size} bytes; this radiator accepts at most {limit}")]
    InputTooLarge { size: u64, limit: u64 },
    #[error(
        "the module defines {count} or more functions; this radiator compiles at most {limit}"
    )]
    TooManyFunctions { count: u64, limit: u32 },
    #[error("function {index} of the module has a {size}-byte body; this radiator compiles bodies of at most {limit} bytes")]
    FunctionTooLarge { index: u32, size: u64, limit: u32 },
    #[error("function {index} of the module declares {count} or more locals; this radiator accepts at most {limit}")]
    TooManyLocals { index: u32, count: u64, limit: u32 },
    #[error(
        "compiling the module took longer than this radiator's limit of {limit:?}; it was refused"
    )]
    CompileTimeout { limit: Duration },
    #[error("this radiator is still finishing {running} over-long compilations; try again later")]
    CompileBusy { running: usize },
    #[error("the module is not valid WebAssembly for hearth (which accepts WebAssembly 2.0 without SIMD): {0}")]
    InvalidModule(String),
    #[error("the module imports `{module}::{name}`, which is forbidden: {reason}")]
    ForbiddenImport {
        module: String,
        name: String,
        reason: &'static str,
    },
    #[error("the module does not follow a hearth shard ABI: {0}")]
    BadAbi(String),
    #[error(
        "the shard ran out of fuel after {limit} units; give it a bigger fuel limit or less work"
    )]
    OutOfFuel { limit: u64 },
    #[error("the shard needed more than its memory limit of {limit} bytes")]
    OutOfMemory { limit: u64 },
    #[error("the shard overflowed its call stack (recursion too deep or infinite)")]
    StackOverflow { stderr_tail: String },
    #[error(
        "the shard executed `unreachable` (a panic or abort in the program){}",
        tail(stderr_tail)
    )]
    Unreachable { stderr_tail: String },
    #[error("the shard trapped: {message}{}", tail(stderr_tail))]
    Trap {
        message: String,
        stderr_tail: String,
    },
    #[error("the shard did not finish within the wall-clock limit of {limit:?}")]
    Timeout { limit: Duration },
    #[error("the shard exited with code {code}{}", tail(stderr_tail))]
    Exit { code: u32, stderr_tail: String },
    #[error("the shard produced more than the {limit}-byte output limit")]
    OutputTooLarge { limit: usize },
    #[error("could not read the shard's input on this radiator: {0}")]
    InputUnreadable(String),
}

impl ExecError {
    /// True when the module or input is beyond this radiator's own limits (its size, its
    /// shape, its compile time), as opposed to a fault of the shard: another radiator with
    /// larger limits may run it, so a worker declines the job rather than report a failure.
    pub fn exceeds_radiator_limits(&self) -> bool {
        matches!(
            self,
            ExecError::ModuleTooLarge { .. }
                | ExecError::InputTooLarge { .. }
                | ExecError::TooManyFunctions { .. }
                | ExecError::FunctionTooLarge { .. }
                | ExecError::TooManyLocals { .. }
                | ExecError::CompileTimeout { .. }
        )
    }
}

fn tail(stderr_tail: &str) -> String {
    if stderr_tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with: {stderr_tail}")
    }
}
