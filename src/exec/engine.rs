//! The executor: the wasmtime engine and its deterministic configuration, the bounded cache of
//! compiled modules, compile bounds, fuel, the wall-clock watchdog and both ABIs' entry. The
//! limits and errors it works with are in `mod.rs`; the module is checked by [`super::inspect`]
//! and rewritten by [`super::nan`] before it is compiled.
//!
//! Size: about 740 lines with its tests, one concern each: the executor's entry (admission
//! against the radiator's memory budget, which lives in `budget.rs`, then the run), the
//! module cache and compile bounds, and both ABIs' entry (a core shard's input read straight
//! into its linear memory).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store, Trap, TypedFunc};

use super::budget::{MemoryBudget, MemoryShare};
use super::wasi::{
    self, MemoryLimitHit, NoMemory, OutputOverflow, ProcExit, ShardState, STDERR_CAP,
};
use super::{
    inspect, nan, Abi, ExecError, Limits, RadiatorLimits, ShardInput, MAX_OUTPUT_BYTES,
    MAX_OVERRUN_COMPILES, MAX_WASM_STACK, MODULE_CACHE_ENTRIES,
};

/// Period of the wall-clock watchdog's epoch ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Last few hundred bytes of stderr as text, for error messages.
fn stderr_tail(stderr: &[u8]) -> String {
    const TAIL: usize = 512;
    let start = stderr.len().saturating_sub(TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_string()
}

/// Total CPU nanoseconds spent inside shards in this process (see
/// [`Executor::process_shard_cpu_time`]).
static SHARD_CPU_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs shards. Cheap to clone; share one per process between worker threads.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

// Worker threads share one executor; keep that a compile-time promise.
const _: () = {
    const fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Executor>();
};

struct Inner {
    engine: Engine,
    linker: Linker<ShardState>,
    cache: Mutex<Cache>,
    limits: RadiatorLimits,
    memory: Arc<MemoryBudget>,
    /// Modules whose compilation overran the time limit and is still running on its own
    /// thread. At most [`MAX_OVERRUN_COMPILES`]; each is removed by its thread when it ends.
    overrun: Mutex<HashSet<[u8; 32]>>,
}

/// What a successful shard run produced. It holds its size of the radiator's memory budget
/// until dropped: store it and drop it, and never wait for another run on the same executor
/// while holding it (that run could wait for this memory for ever).
#[derive(Debug)]
pub struct ShardOutput {
    /// The output bytes (deterministic).
    pub output: Vec<u8>,
    /// Fuel consumed (deterministic).
    pub fuel: u64,
    /// The last [`STDERR_CAP`] bytes the shard wrote to stderr (diagnostics only).
    pub stderr: Vec<u8>,
    /// CPU time of this thread spent instantiating and running the shard, reading a core
    /// shard's input not included (not deterministic).
    pub cpu_time: Duration,
    /// The budget's share the output and stderr hold: given back when this is dropped.
    memory: MemoryShare,
}

impl ShardOutput {
    /// Bytes of the radiator's memory budget this output holds (its buffers' capacity,
    /// stdout's and stderr's) until it is dropped.
    pub fn memory_held(&self) -> u64 {
        self.memory.bytes
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], CacheEntry>,
    clock: u64,
}

struct CacheEntry {
    pre: InstancePre<ShardState>,
    abi: Abi,
    last_used: u64,
}

impl Executor {
    /// An executor with hearth's deterministic engine configuration and the default
    /// [`RadiatorLimits`].
    pub fn new() -> Result<Executor, ExecError> {
        Self::build(false, RadiatorLimits::default())
    }

    /// An executor enforcing this radiator's own `limits` (values outside what hearth can
    /// enforce are brought inside it: see [`Executor::limits`]).
    pub fn with_limits(limits: RadiatorLimits) -> Result<Executor, ExecError> {
        Self::build(false, limits)
    }

    /// The limits this executor enforces.
    pub fn limits(&self) -> RadiatorLimits {
        self.inner.limits
    }

    /// Benchmark-only: additionally turns on wasmtime's blanket NaN canonicalisation, to
    /// compare its cost with hearth's targeted rewrite. Not for production use.
    #[doc(hidden)]
    pub fn with_blanket_nan_canonicalization() -> Result<Executor, ExecError> {
        Self::build(true, RadiatorLimits::default())
    }

    fn build(blanket_nan: bool, limits: RadiatorLimits) -> Result<Executor, ExecError> {
        let mut config = Config::new();
        config
            // Deterministic budget: same module + input => same fuel, on any machine.
            .consume_fuel(true)
            // Wall-clock watchdog only (see the ticker below).
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            // SIMD: relaxed SIMD is explicitly implementation-defined, and plain SIMD float
            // lanes would need the NaN rewrite for every v128 escape too. Off, both.
            .wasm_simd(false)
            .wasm_relaxed_simd(false)
            // (Threads need wasmtime's `threads` feature, which hearth does not build.)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            .wasm_tail_call(false)
            .cranelift_nan_canonicalization(blanket_nan)
            .parallel_compilation(true);
        let engine = Engine::new(&config).map_err(|e| ExecError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| ExecError::Engine(e.to_string()))?;

        // One watchdog thread per executor advances the epoch; it holds only a weak
        // reference, so it ends on its own once the last clone of the executor is dropped.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("hearth-exec-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| ExecError::Engine(format!("could not start the watchdog: {e}")))?;

        Ok(Executor {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache: Mutex::new(Cache::default()),
                limits: limits.sanitised(),
                memory: Arc::default(),
                overrun: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Validates and compiles `module` (cached by hash) without running it, and reports its
    /// ABI. Errors are the same as [`Executor::run`] would give before running.
    pub fn prepare(&self, module_hash: &blake3::Hash, module: &[u8]) -> Result<Abi, ExecError> {
        self.compiled(module_hash, module).map(|(_, abi)| abi)
    }

    /// Runs one shard to completion: [`Executor::admit`], then [`Admitted::run`].
    pub fn run(
        &self,
        module_hash: &blake3::Hash,
        module: &[u8],
        input: impl Into<ShardInput>,
        limits: &Limits,
    ) -> Result<ShardOutput, ExecError> {
        self.admit(module_hash, module, input, limits)?.run()
    }

    /// Admits one shard to run under `limits`, lowered to this radiator's own limits: a shard
    /// never gets more memory than [`RadiatorLimits::memory_per_shard`], whatever
    /// `limits.memory_bytes` asks. Blocks while shards already running, and outputs not yet
    /// dropped, hold so much memory that this one would take them past
    /// [`RadiatorLimits::memory_total`]. A [`ShardInput::stored`] input is read only after
    /// that wait, so a shard waiting for its share holds none: a WASI command's now, into
    /// the buffer its stdin reads from; a core shard's by [`Admitted::run`], straight into
    /// the buffer its `alloc` returns (no buffer besides linear memory; an input handed in
    /// as bytes is copied there and dropped). Nothing of the shard executes before
    /// [`Admitted::run`]: a caller metering the run's energy starts after this returns, and
    /// waiting for memory is not charged. See [`ShardInput`] for its hash.
    pub fn admit(
        &self,
        module_hash: &blake3::Hash,
        module: &[u8],
        input: impl Into<ShardInput>,
        limits: &Limits,
    ) -> Result<Admitted, ExecError> {
        let input = input.into();
        let own = self.inner.limits;
        if input.len() > own.input_bytes {
            return Err(ExecError::InputTooLarge {
                size: input.len(),
                limit: own.input_bytes,
            });
        }
        let limits = Limits {
            memory_bytes: limits.memory_bytes.min(own.memory_per_shard),
            ..*limits
        };
        let (pre, abi) = self.compiled(module_hash, module)?;
        // What the run may hold besides its linear memory: its input where it is a buffer of
        // its own (a WASI command's stdin, or bytes the caller handed in; a core shard's
        // stored input is read into linear memory), its output (a WASI command's stdout
        // grows up to MAX_OUTPUT_BYTES during the run; a core shard's is copied out of
        // linear memory as `run` returns, so it is at most that memory) and its diagnostics.
        // At most `memory_total` is reserved, so one shard alone always fits and every wait
        // ends.
        let (input_bytes, output_bytes) = match abi {
            Abi::WasiCommand => (input.len(), MAX_OUTPUT_BYTES as u64),
            Abi::Core if input.is_stored() => (0, limits.memory_bytes.min(MAX_OUTPUT_BYTES as u64)),
            Abi::Core => (
                input.len(),
                limits.memory_bytes.min(MAX_OUTPUT_BYTES as u64),
            ),
        };
        let share = self.inner.memory.reserve(
            limits
                .memory_bytes
                .saturating_add(input_bytes)
                .saturating_add(output_bytes)
                .saturating_add(STDERR_CAP as u64)
                .min(own.memory_total),
            own.memory_total,
        );
        // A WASI command's stdin is read now; a core shard's input is read by the run,
        // straight into the buffer its `alloc` returns.
        let input_hash = input.hash();
        let (stdin, core_input) = match abi {
            Abi::WasiCommand => (input.into_bytes()?, None),
            Abi::Core => (Vec::new(), Some(input)),
        };
        Ok(Admitted {
            engine: self.inner.engine.clone(),
            module: *module_hash,
            pre,
            abi,
            stdin,
            core_input,
            input_hash,
            limits,
            share,
        })
    }

    /// CPU time spent inside shards by every executor of this process so far, traps included.
    /// The efficiency benchmark divides it by the process's whole CPU time.
    pub fn process_shard_cpu_time() -> Duration {
        Duration::from_nanos(SHARD_CPU_NANOS.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The cached pre-linked module for `module`, compiling it on a miss.
    fn compiled(
        &self,
        module_hash: &blake3::Hash,
        module: &[u8],
    ) -> Result<(InstancePre<ShardState>, Abi), ExecError> {
        let limits = self.inner.limits;
        if module.len() as u64 > limits.module_bytes {
            return Err(ExecError::ModuleTooLarge {
                size: module.len() as u64,
                limit: limits.module_bytes,
            });
        }
        // Always hash: the cache is keyed by hash, so a caller passing the wrong hash must
        // not get some other module's code. blake3 costs microseconds next to a run.
        let actual = blake3::hash(module);
        if actual != *module_hash {
            return Err(ExecError::HashMismatch {
                expected: module_hash.to_hex().to_string(),
                actual: actual.to_hex().to_string(),
            });
        }
        let key = *module_hash.as_bytes();
        {
            let mut cache = self.lock_cache();
            cache.clock += 1;
            let now = cache.clock;
            if let Some(e) = cache.entries.get_mut(&key) {
                e.last_used = now;
                return Ok((e.pre.clone(), e.abi));
            }
        }

        // Compile outside the lock: it can take a while, and other shards should not wait.
        // Two threads may compile the same module at once; both get the same result.
        // The shape checks come first and cost one pass over the bytes; they bound what
        // compilation can cost before any of it is spent.
        inspect::check_shape(module, &limits)?;
        let inspected = inspect::inspect(module)?;
        let rewritten = nan::canonicalise(module, &inspected.defined_param_counts)?;
        let pre = self.compile_bounded(key, rewritten)?;
        tracing::debug!(module = %module_hash.to_hex(), abi = ?inspected.abi, "compiled module");

        let mut cache = self.lock_cache();
        if cache.entries.len() >= MODULE_CACHE_ENTRIES && !cache.entries.contains_key(&key) {
            if let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            {
                cache.entries.remove(&oldest);
            }
        }
        cache.clock += 1;
        let last_used = cache.clock;
        cache.entries.insert(
            key,
            CacheEntry {
                pre: pre.clone(),
                abi: inspected.abi,
                last_used,
            },
        );
        Ok((pre, inspected.abi))
    }

    /// Compiles on a thread of its own and waits at most [`RadiatorLimits::compile_timeout`].
    ///
    /// Cranelift cannot be interrupted, so on a timeout the compiling thread is *abandoned*,
    /// not killed: it runs to its end, drops what it compiled and exits. The shape checks
    /// bound how long that can take and how much memory it uses. While it runs, the same
    /// module is refused at once (no second compile of a known bomb), and once
    /// [`MAX_OVERRUN_COMPILES`] such threads are running every new compilation is refused
    /// with [`ExecError::CompileBusy`], so a stream of slow modules cannot pile up threads.
    fn compile_bounded(
        &self,
        key: [u8; 32],
        rewritten: Vec<u8>,
    ) -> Result<InstancePre<ShardState>, ExecError> {
        let timeout = self.inner.limits.compile_timeout;
        {
            let overrun = self.lock_overrun();
            if overrun.contains(&key) {
                return Err(ExecError::CompileTimeout { limit: timeout });
            }
            if overrun.len() >= MAX_OVERRUN_COMPILES {
                return Err(ExecError::CompileBusy {
                    running: overrun.len(),
                });
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::clone(&self.inner);
        std::thread::Builder::new()
            .name("hearth-exec-compile".into())
            .spawn(move || {
                let result = Module::new(&inner.engine, &rewritten)
                    .and_then(|compiled| inner.linker.instantiate_pre(&compiled))
                    .map_err(|e| ExecError::InvalidModule(format!("{e:#}")));
                // Send first, then leave the overrun set: `compile_bounded` checks the
                // channel while holding the set's lock, so a key is never left behind.
                let _ = tx.send(result);
                inner
                    .overrun
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            })
            .map_err(|e| ExecError::Engine(format!("could not start a compile thread: {e}")))?;
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ExecError::Engine(
                "the compile thread ended without an answer".into(),
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let mut overrun = self.lock_overrun();
                // It may have finished just now; then it is not an overrun.
                if let Ok(result) = rx.try_recv() {
                    return result;
                }
                overrun.insert(key);
                tracing::warn!(
                    module = %blake3::Hash::from_bytes(key).to_hex(),
                    ?timeout,
                    "compilation overran its time limit; refused, its thread finishes in the background"
                );
                Err(ExecError::CompileTimeout { limit: timeout })
            }
        }
    }

    fn lock_overrun(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // Every update is a single insert/remove: a poisoned lock is still consistent.
        self.inner
            .overrun
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is
        // a single insert/remove), so a poisoned lock is safe to keep using.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes of the memory budget ([`RadiatorLimits::memory_total`]) held now: by the shards
    /// running (their linear memory limits, inputs, and room for their outputs and
    /// diagnostics) and by the outputs of finished shards not yet dropped.
    pub fn memory_in_use(&self) -> u64 {
        *self.inner.memory.lock()
    }

    /// Compilations that overran the time limit and are still finishing in the background.
    pub fn overrun_compiles(&self) -> usize {
        self.lock_overrun().len()
    }

    /// Number of compiled modules currently cached.
    pub fn cached_modules(&self) -> usize {
        self.lock_cache().entries.len()
    }
}

/// A shard admitted by [`Executor::admit`]: its module compiled, its share of the memory
/// budget held, and a WASI command's input read. Dropping it without running gives the share
/// back.
pub struct Admitted {
    engine: Engine,
    module: blake3::Hash,
    pre: InstancePre<ShardState>,
    abi: Abi,
    /// A WASI command's input, read on admission.
    stdin: Vec<u8>,
    /// A core shard's input, read by the run into the buffer its `alloc` returns.
    core_input: Option<ShardInput>,
    input_hash: blake3::Hash,
    limits: Limits,
    share: MemoryShare,
}

impl Admitted {
    /// Executes the shard to completion: instantiation, a core shard's `alloc` and its
    /// input read into that buffer, the shard's code, and copying its output out. This, and
    /// only this, is the shard's execution. Reading a core shard's input is not the shard's
    /// work: its CPU time is taken off [`ShardOutput::cpu_time`], and the wall-clock limit
    /// counts the shard's own code only, so a slow disk is never the shard's fault.
    pub fn run(self) -> Result<ShardOutput, ExecError> {
        let Admitted {
            engine,
            module,
            pre,
            abi,
            stdin,
            core_input,
            input_hash,
            limits,
            mut share,
        } = self;
        let limits = &limits;
        let _span = tracing::debug_span!("shard", module = %module.to_hex(), ?abi).entered();

        let cpu_start = thread_cpu_time();
        let mut store = Store::new(
            &engine,
            ShardState::new(
                abi,
                stdin,
                input_hash,
                limits.memory_bytes,
                MAX_OUTPUT_BYTES,
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| ExecError::Engine(e.to_string()))?;
        let ticks = u64::try_from(limits.wall_clock.as_nanos() / EPOCH_TICK.as_nanos() + 1)
            .unwrap_or(u64::MAX);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let mut reading = Duration::ZERO;
        let result = match core_input {
            Some(input) => run_core(&mut store, &pre, input, ticks, &mut reading),
            None => run_wasi(&mut store, &pre),
        };
        let fuel = limits.fuel - store.get_fuel().unwrap_or(0);
        let cpu_time = thread_cpu_time()
            .saturating_sub(cpu_start)
            .saturating_sub(reading);
        SHARD_CPU_NANOS.fetch_add(
            u64::try_from(cpu_time.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        // Linear memory and the input go with the store; only stdout and stderr live on.
        let ShardState { stdout, stderr, .. } = store.into_data();
        let tail = stderr_tail(&stderr);
        let output = match result {
            Ok(Some(output)) => output,
            Ok(None) => stdout,
            Err(Failure::Exec(e)) => return Err(e),
            Err(Failure::Wasm(e)) => return Err(map_wasm_error(e, abi, limits, tail)),
        };
        tracing::debug!(fuel, out = output.len(), ?cpu_time, "shard finished");
        // The output keeps its part of the budget until the caller drops it.
        share.shrink_to((output.capacity() + stderr.capacity()) as u64);
        Ok(ShardOutput {
            output,
            fuel,
            stderr,
            cpu_time,
            memory: share,
        })
    }
}

/// A failure inside a run: either already classified, or a wasmtime error still to map.
enum Failure {
    Exec(ExecError),
    Wasm(wasmtime::Error),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Failure::Wasm(e)
    }
}

fn bad_abi(msg: String) -> Failure {
    Failure::Exec(ExecError::BadAbi(msg))
}

/// Core ABI: instantiate, `alloc` a buffer for the input, read the input straight into it,
/// `run`, copy the output out. Returns the output. The read's thread CPU time is added to
/// `reading`; after it the wall-clock deadline is set again to what the shard's own code
/// (`start`, `alloc`) left of the `ticks` it had, so the read is not counted against it.
fn run_core(
    store: &mut Store<ShardState>,
    pre: &InstancePre<ShardState>,
    input: ShardInput,
    ticks: u64,
    reading: &mut Duration,
) -> Result<Option<Vec<u8>>, Failure> {
    let began = std::time::Instant::now();
    let instance = pre.instantiate(&mut *store)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| bad_abi("`memory` is not exported".into()))?;
    let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&mut *store, "alloc")?;
    let run: TypedFunc<(i32, i32), i64> = instance.get_typed_func(&mut *store, "run")?;

    // MAX_INPUT_BYTES < 2^31, so the length always fits an i32.
    let len = i32::try_from(input.len())
        .map_err(|_| bad_abi("input does not fit a 32-bit length".into()))?;
    let ptr = alloc.call(&mut *store, len)?;
    // An empty input needs no buffer: allocators may hand out a dangling pointer for it.
    if !input.is_empty() {
        let used = began.elapsed().as_nanos() / EPOCH_TICK.as_nanos();
        let start = ptr as u32 as usize;
        let buffer = memory
            .data_mut(&mut *store)
            .get_mut(start..start + len as usize)
            .ok_or_else(|| {
                bad_abi(format!(
                    "`alloc({len})` returned {ptr:#x}, which is not a buffer inside memory"
                ))
            })?;
        let cpu = thread_cpu_time();
        input.read_into(buffer).map_err(Failure::Exec)?;
        *reading += thread_cpu_time().saturating_sub(cpu);
        let left = ticks.saturating_sub(u64::try_from(used).unwrap_or(u64::MAX));
        store.set_epoch_deadline(left.max(1));
    }
    let packed = run.call(&mut *store, (ptr, len))? as u64;
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if out_len > MAX_OUTPUT_BYTES {
        return Err(Failure::Exec(ExecError::OutputTooLarge {
            limit: MAX_OUTPUT_BYTES,
        }));
    }
    let data = memory.data(&*store);
    let out = out_ptr
        .checked_add(out_len)
        .and_then(|end| data.get(out_ptr..end))
        .ok_or_else(|| {
            bad_abi(format!(
                "`run` returned output at {out_ptr:#x}+{out_len}, outside the {}-byte memory",
                data.len()
            ))
        })?;
    Ok(Some(out.to_vec()))
}

/// WASI command: call `_start`; output is whatever went to stdout.
fn run_wasi(
    store: &mut Store<ShardState>,
    pre: &InstancePre<ShardState>,
) -> Result<Option<Vec<u8>>, Failure> {
    let instance = pre.instantiate(&mut *store)?;
    let start: TypedFunc<(), ()> = instance.get_typed_func(&mut *store, "_start")?;
    match start.call(&mut *store, ()) {
        Ok(()) => Ok(None),
        Err(e) if e.downcast_ref::<ProcExit>().is_some_and(|p| p.0 == 0) => Ok(None),
        Err(e) => Err(Failure::Wasm(e)),
    }
}

/// Classifies a wasmtime error. Host-raised conditions are checked before traps because
/// they travel as wasmtime errors too.
fn map_wasm_error(e: wasmtime::Error, abi: Abi, limits: &Limits, stderr_tail: String) -> ExecError {
    if let Some(ProcExit(code)) = e.downcast_ref::<ProcExit>() {
        return match abi {
            Abi::WasiCommand => ExecError::Exit {
                code: *code,
                stderr_tail,
            },
            Abi::Core => ExecError::BadAbi(format!(
                "a core-ABI shard must return from `run`, but it called proc_exit({code})"
            )),
        };
    }
    if e.downcast_ref::<MemoryLimitHit>().is_some() {
        return ExecError::OutOfMemory {
            limit: limits.memory_bytes,
        };
    }
    if e.downcast_ref::<OutputOverflow>().is_some() {
        return ExecError::OutputTooLarge {
            limit: MAX_OUTPUT_BYTES,
        };
    }
    if let Some(no_memory) = e.downcast_ref::<NoMemory>() {
        return ExecError::BadAbi(no_memory.to_string());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => ExecError::OutOfFuel { limit: limits.fuel },
        Some(Trap::Interrupt) => ExecError::Timeout {
            limit: limits.wall_clock,
        },
        Some(Trap::StackOverflow) => ExecError::StackOverflow { stderr_tail },
        Some(Trap::UnreachableCodeReached) => ExecError::Unreachable { stderr_tail },
        Some(trap) => ExecError::Trap {
            message: trap.to_string(),
            stderr_tail,
        },
        None => ExecError::Trap {
            message: format!("{e:#}"),
            stderr_tail,
        },
    }
}

/// CPU time consumed so far by the calling thread.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always
    // available on Linux and macOS. On failure we report zero rather than garbage.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    Duration::ZERO
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::*;

    fn wat(src: &str) -> Vec<u8> {
        wat::parse_str(src).unwrap()
    }

    #[test]
    fn cache_is_bounded_and_hits() {
        let exec = Executor::new().unwrap();
        for i in 0..(MODULE_CACHE_ENTRIES + 3) {
            let m = wat(&format!(
                r#"(module (memory (export "memory") 1)
                    (func (export "alloc") (param i32) (result i32) i32.const {i})
                    (func (export "run") (param i32 i32) (result i64) i64.const 0))"#
            ));
            assert_eq!(exec.prepare(&blake3::hash(&m), &m).unwrap(), Abi::Core);
        }
        assert_eq!(exec.cached_modules(), MODULE_CACHE_ENTRIES);
    }

    #[test]
    fn radiator_limits_are_brought_within_what_hearth_enforces() {
        let exec = Executor::with_limits(RadiatorLimits {
            memory_per_shard: 8 << 30,
            memory_total: 1,
            module_bytes: u64::MAX,
            input_bytes: u64::MAX,
            ..RadiatorLimits::default()
        })
        .unwrap();
        let l = exec.limits();
        assert_eq!(l.memory_per_shard, 4 << 30);
        assert_eq!(l.memory_total, l.memory_per_shard);
        assert_eq!(l.module_bytes, MAX_MODULE_BYTES as u64);
        assert_eq!(l.input_bytes, MAX_INPUT_BYTES as u64);
    }

    #[test]
    fn wrong_hash_is_refused() {
        let exec = Executor::new().unwrap();
        let m = wat(r#"(module (func (export "_start")) (memory (export "memory") 1))"#);
        let err = exec.prepare(&blake3::hash(b"other"), &m).unwrap_err();
        assert!(matches!(err, ExecError::HashMismatch { .. }), "{err}");
    }
}
