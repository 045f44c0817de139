//! The deterministic subset of WASI preview1 that shards may import, implemented directly on
//! a wasmtime [`Linker`] (no wasmtime-wasi: its clocks, randomness and filesystem are exactly
//! what a replicated computation must not see).
//!
//! Every function answers the same way on every machine for the same module and input:
//! stdin is the shard input, stdout is the output (WASI command) and stderr is kept for
//! diagnostics; args are `["shard"]`, there is no environment and no filesystem; clocks are
//! frozen; `random_get` is a blake3 stream keyed by the input hash. This module also owns the
//! per-store state ([`ShardState`]) and the resource limiter.

use std::fmt;

use wasmtime::{Caller, Extern, Linker, Memory, ResourceLimiter};

#[cfg(test)]
use super::imports::IMPORTS;
use super::imports::WASI_MODULE;
use super::Abi;

/// The one argument (`argv[0]`) a WASI command sees.
const ARGV0: &[u8] = b"shard\0";

/// Fixed answer of `clock_time_get` for every clock: 2024-01-01T00:00:00Z in nanoseconds.
/// A real clock would make output depend on when and where the shard ran.
pub const FIXED_TIME_NS: u64 = 1_704_067_200_000_000_000;

/// Most bytes of stderr kept (the tail): enough for a panic message and backtrace.
pub const STDERR_CAP: usize = 64 * 1024;

/// Most iovecs accepted in one `fd_read`/`fd_write` (POSIX IOV_MAX is 1024).
const MAX_IOVS: u32 = 1024;

// errno values from wasi_snapshot_preview1 (wasi/api.h).
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;
const ENOTCAPABLE: i32 = 76;

const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const RIGHTS_FD_READ: u64 = 1 << 1;
const RIGHTS_FD_WRITE: u64 = 1 << 6;

/// Raised (as a wasmtime error, which unwinds the guest) by `proc_exit`.
#[derive(Debug)]
pub(crate) struct ProcExit(pub u32);

impl fmt::Display for ProcExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proc_exit({})", self.0)
    }
}
impl std::error::Error for ProcExit {}

/// Raised when stdout would grow past the output cap.
#[derive(Debug)]
pub(crate) struct OutputOverflow;

impl fmt::Display for OutputOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output cap exceeded")
    }
}
impl std::error::Error for OutputOverflow {}

/// Raised by the limiter when linear memory would exceed the shard's memory limit, so the
/// guest traps with a clear "out of memory" instead of seeing `memory.grow` return -1 and
/// failing in some confusing way later.
#[derive(Debug)]
pub(crate) struct MemoryLimitHit;

impl fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory limit exceeded")
    }
}
impl std::error::Error for MemoryLimitHit {}

/// Raised when a host function finds the module has no exported `memory`.
#[derive(Debug)]
pub(crate) struct NoMemory;

impl fmt::Display for NoMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WASI call made by a module without an exported `memory`")
    }
}
impl std::error::Error for NoMemory {}

/// Most table elements a shard may have (tables hold function references; a C or Rust
/// program needs a few thousand at most).
const TABLE_ELEMENTS_CAP: usize = 1 << 20;

/// Per-store limiter: one memory of at most `memory_limit` bytes, small tables, one instance.
pub(crate) struct Limiter {
    pub memory_limit: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryLimitHit));
        }
        // Growing past the module's own declared maximum is ordinary wasm behaviour
        // (memory.grow returns -1), and deterministic.
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The host could not allocate memory the limit allows: that depends on this
        // machine, so it must not reach the guest as a -1 it could branch on.
        Err(wasmtime::Error::new(MemoryLimitHit))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_CAP && maximum.is_none_or(|m| desired <= m))
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
    fn memories(&self) -> usize {
        1
    }
}

/// Everything a running shard's host functions may touch.
pub(crate) struct ShardState {
    pub limiter: Limiter,
    pub abi: Abi,
    pub stdin: Vec<u8>,
    pub stdin_pos: usize,
    pub stdout: Vec<u8>,
    pub stdout_cap: usize,
    pub stderr: Vec<u8>,
    pub rng: blake3::OutputReader,
}

impl ShardState {
    /// The state of a run of `input`. It holds the input as `stdin`, where a WASI command
    /// reads it; a core-ABI run takes it out before instantiating (`engine::run_core`).
    pub fn new(
        abi: Abi,
        input: Vec<u8>,
        input_hash: blake3::Hash,
        memory_limit: u64,
        stdout_cap: usize,
    ) -> ShardState {
        // The random stream depends on the input only, so replicas agree and different
        // shards of one job still see different numbers.
        let rng = blake3::Hasher::new_derive_key("hearth 2024 wasi random_get v1")
            .update(input_hash.as_bytes())
            .finalize_xof();
        ShardState {
            limiter: Limiter { memory_limit },
            abi,
            stdin: input,
            stdin_pos: 0,
            stdout: Vec::new(),
            stdout_cap,
            stderr: Vec::new(),
            rng,
        }
    }

    /// Appends to stderr, keeping only the last [`STDERR_CAP`] bytes. Its buffer is
    /// allocated once at [`STDERR_CAP`] and never grows (the memory budget counts that much).
    fn push_stderr(&mut self, bytes: &[u8]) {
        if self.stderr.capacity() < STDERR_CAP {
            self.stderr.reserve_exact(STDERR_CAP - self.stderr.len());
        }
        if bytes.len() >= STDERR_CAP {
            self.stderr.clear();
            self.stderr
                .extend_from_slice(&bytes[bytes.len() - STDERR_CAP..]);
            return;
        }
        let overflow = (self.stderr.len() + bytes.len()).saturating_sub(STDERR_CAP);
        self.stderr.drain(..overflow);
        self.stderr.extend_from_slice(bytes);
    }

    /// Where guest writes to `fd` go; `Err(errno)` for a descriptor that does not exist.
    fn write_fd(&mut self, fd: i32, bytes: &[u8]) -> Result<Result<(), i32>, wasmtime::Error> {
        match (fd, self.abi) {
            (1, Abi::WasiCommand) => {
                let len = self.stdout.len() + bytes.len();
                if len > self.stdout_cap {
                    return Err(wasmtime::Error::new(OutputOverflow));
                }
                // Doubling, but never past the cap: the memory budget counts `stdout_cap`.
                if len > self.stdout.capacity() {
                    let grown = len.max(self.stdout.capacity() * 2).min(self.stdout_cap);
                    self.stdout.reserve_exact(grown - self.stdout.len());
                }
                self.stdout.extend_from_slice(bytes);
            }
            // A core-ABI shard's output is what `run` returns; its prints are diagnostics.
            (1, Abi::Core) | (2, _) => self.push_stderr(bytes),
            _ => return Ok(Err(EBADF)),
        }
        Ok(Ok(()))
    }
}

type Ctx<'a> = Caller<'a, ShardState>;

fn memory(caller: &mut Ctx<'_>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::new(NoMemory)),
    }
}

/// Bounds-checked view of `len` guest bytes at `ptr`.
fn slice(mem: &[u8], ptr: i32, len: u32) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    mem.get(start..start.checked_add(len as usize)?)
}

fn slice_mut(mem: &mut [u8], ptr: i32, len: u32) -> Option<&mut [u8]> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.checked_add(len as usize)?)
}

fn put(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    slice_mut(mem, ptr, bytes.len() as u32)
        .map(|s| s.copy_from_slice(bytes))
        .ok_or(EFAULT)
}

fn get_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    let b = slice(mem, ptr, 4).ok_or(EFAULT)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads the iovec array `(buf: u32, len: u32)[iovs_len]` at `iovs`.
fn iovecs(mem: &[u8], iovs: i32, iovs_len: i32) -> Result<Vec<(i32, u32)>, i32> {
    let n = iovs_len as u32;
    if n > MAX_IOVS {
        return Err(EINVAL);
    }
    (0..n)
        .map(|i| {
            let at = (iovs as u32).checked_add(i * 8).ok_or(EFAULT)? as i32;
            let buf = get_u32(mem, at)? as i32;
            let len = get_u32(mem, at.wrapping_add(4))?;
            Ok((buf, len))
        })
        .collect()
}

fn errno(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => SUCCESS,
        Err(e) => e,
    }
}

/// `(count, total_bytes)` writer shared by args_sizes_get/environ_sizes_get.
fn sizes(caller: &mut Ctx<'_>, count_ptr: i32, size_ptr: i32, count: u32, size: u32) -> i32 {
    let Ok(mem) = memory(caller) else {
        return EFAULT;
    };
    let data = mem.data_mut(caller);
    errno(
        put(data, count_ptr, &count.to_le_bytes())
            .and_then(|()| put(data, size_ptr, &size.to_le_bytes())),
    )
}

/// Registers every import of [`super::imports`]' table on `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<ShardState>) -> wasmtime::Result<()> {
    let m = WASI_MODULE;

    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut c: Ctx<'_>, argc: i32, size: i32| sizes(&mut c, argc, size, 1, ARGV0.len() as u32),
    )?;
    linker.func_wrap(m, "args_get", |mut c: Ctx<'_>, argv: i32, buf: i32| {
        let Ok(mem) = memory(&mut c) else {
            return EFAULT;
        };
        let data = mem.data_mut(&mut c);
        errno(put(data, buf, ARGV0).and_then(|()| put(data, argv, &buf.to_le_bytes())))
    })?;
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut c: Ctx<'_>, n: i32, size: i32| sizes(&mut c, n, size, 0, 0),
    )?;
    linker.func_wrap(m, "environ_get", |_: Ctx<'_>, _: i32, _: i32| SUCCESS)?;

    linker.func_wrap(m, "clock_res_get", |mut c: Ctx<'_>, _id: i32, out: i32| {
        let Ok(mem) = memory(&mut c) else {
            return EFAULT;
        };
        errno(put(mem.data_mut(&mut c), out, &1u64.to_le_bytes()))
    })?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _precision: i64, out: i32| {
            // realtime, monotonic, process and thread CPU time: all frozen.
            if !(0..=3).contains(&id) {
                return EINVAL;
            }
            let Ok(mem) = memory(&mut c) else {
                return EFAULT;
            };
            errno(put(mem.data_mut(&mut c), out, &FIXED_TIME_NS.to_le_bytes()))
        },
    )?;

    linker.func_wrap(m, "fd_close", |_: Ctx<'_>, fd: i32| {
        if (0..=2).contains(&fd) {
            SUCCESS
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(m, "fd_fdstat_get", |mut c: Ctx<'_>, fd: i32, out: i32| {
        let rights = match fd {
            0 => RIGHTS_FD_READ,
            1 | 2 => RIGHTS_FD_WRITE,
            _ => return EBADF,
        };
        let mut stat = [0u8; 24];
        stat[0] = FILETYPE_CHARACTER_DEVICE;
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        let Ok(mem) = memory(&mut c) else {
            return EFAULT;
        };
        errno(put(mem.data_mut(&mut c), out, &stat))
    })?;
    linker.func_wrap(m, "fd_fdstat_set_flags", |_: Ctx<'_>, fd: i32, _: i32| {
        if (0..=2).contains(&fd) {
            ENOTSUP
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(m, "fd_filestat_get", |mut c: Ctx<'_>, fd: i32, out: i32| {
        if !(0..=2).contains(&fd) {
            return EBADF;
        }
        // filestat is 64 bytes; only the filetype (offset 16) is meaningful for stdio.
        let mut stat = [0u8; 64];
        stat[16] = FILETYPE_CHARACTER_DEVICE;
        let Ok(mem) = memory(&mut c) else {
            return EFAULT;
        };
        errno(put(mem.data_mut(&mut c), out, &stat))
    })?;
    // No preopened directories: libc then believes there is no filesystem at all.
    linker.func_wrap(m, "fd_prestat_get", |_: Ctx<'_>, _: i32, _: i32| EBADF)?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| EBADF,
    )?;

    linker.func_wrap(
        m,
        "fd_read",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nread: i32| {
            if fd != 0 {
                return EBADF;
            }
            let Ok(mem) = memory(&mut c) else {
                return EFAULT;
            };
            let (data, state) = mem.data_and_store_mut(&mut c);
            let vecs = match iovecs(data, iovs, iovs_len) {
                Ok(v) => v,
                Err(e) => return e,
            };
            let mut total = 0u32;
            for (buf, len) in vecs {
                let rest = &state.stdin[state.stdin_pos..];
                let n = rest.len().min(len as usize);
                let Some(dst) = slice_mut(data, buf, n as u32) else {
                    return EFAULT;
                };
                dst.copy_from_slice(&rest[..n]);
                state.stdin_pos += n;
                total += n as u32;
                if n < len as usize {
                    break;
                }
            }
            errno(put(data, nread, &total.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Ctx<'_>,
         fd: i32,
         iovs: i32,
         iovs_len: i32,
         nwritten: i32|
         -> wasmtime::Result<i32> {
            if !(1..=2).contains(&fd) {
                return Ok(EBADF);
            }
            let mem = memory(&mut c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let vecs = match iovecs(data, iovs, iovs_len) {
                Ok(v) => v,
                Err(e) => return Ok(e),
            };
            let mut total = 0u32;
            for (buf, len) in vecs {
                let Some(src) = slice(data, buf, len) else {
                    return Ok(EFAULT);
                };
                if let Err(e) = state.write_fd(fd, src)? {
                    return Ok(e);
                }
                total = total.saturating_add(len);
            }
            Ok(errno(put(data, nwritten, &total.to_le_bytes())))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_: Ctx<'_>, fd: i32, _: i64, _: i32, _: i32| {
            if (0..=2).contains(&fd) {
                ESPIPE
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(m, "fd_tell", |_: Ctx<'_>, fd: i32, _: i32| {
        if (0..=2).contains(&fd) {
            ESPIPE
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(m, "fd_sync", |_: Ctx<'_>, fd: i32| {
        if (0..=2).contains(&fd) {
            EINVAL
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(m, "fd_datasync", |_: Ctx<'_>, fd: i32| {
        if (0..=2).contains(&fd) {
            EINVAL
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(
        m,
        "fd_readdir",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i64, _: i32| EBADF,
    )?;

    // Paths: there is no directory to resolve them against.
    linker.func_wrap(
        m,
        "path_open",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| {
            ENOTCAPABLE
        },
    )?;
    linker.func_wrap(
        m,
        "path_filestat_get",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| ENOTCAPABLE,
    )?;
    for name in [
        "path_create_directory",
        "path_remove_directory",
        "path_unlink_file",
    ] {
        linker.func_wrap(m, name, |_: Ctx<'_>, _: i32, _: i32, _: i32| ENOTCAPABLE)?;
    }
    for name in ["path_rename", "path_readlink"] {
        linker.func_wrap(
            m,
            name,
            |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ENOTCAPABLE,
        )?;
    }

    // Sleeping or waiting on events would make timing observable.
    linker.func_wrap(
        m,
        "poll_oneoff",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "proc_exit",
        |_: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ProcExit(code as u32)))
        },
    )?;
    linker.func_wrap(m, "proc_raise", |_: Ctx<'_>, _: i32| ENOTSUP)?;
    linker.func_wrap(m, "sched_yield", |_: Ctx<'_>| SUCCESS)?;
    linker.func_wrap(m, "random_get", |mut c: Ctx<'_>, buf: i32, len: i32| {
        let Ok(mem) = memory(&mut c) else {
            return EFAULT;
        };
        let (data, state) = mem.data_and_store_mut(&mut c);
        match slice_mut(data, buf, len as u32) {
            Some(dst) => {
                state.rng.fill(dst);
                SUCCESS
            }
            None => EFAULT,
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmparser::ValType::{self, I32, I64};
    use wasmtime::{Engine, Store, ValType as W};

    fn to_wasmparser(t: &W) -> ValType {
        match t {
            W::I32 => I32,
            W::I64 => I64,
            W::F32 => ValType::F32,
            W::F64 => ValType::F64,
            other => panic!("unexpected type {other:?}"),
        }
    }

    /// The signature table used to vet imports must describe exactly what the linker
    /// provides, otherwise a module passing inspection could still fail to link.
    #[test]
    fn linker_matches_signature_table() {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).unwrap();
        let mut store = Store::new(
            &engine,
            ShardState::new(
                Abi::WasiCommand,
                Vec::new(),
                blake3::hash(b""),
                1 << 20,
                1 << 20,
            ),
        );
        let mut defined = 0;
        for (name, params, results) in IMPORTS {
            let f = linker
                .get(&mut store, WASI_MODULE, name)
                .ok()
                .and_then(Extern::into_func)
                .unwrap_or_else(|| panic!("{name} is not defined"));
            let ty = f.ty(&store);
            let p: Vec<_> = ty.params().map(|t| to_wasmparser(&t)).collect();
            let r: Vec<_> = ty.results().map(|t| to_wasmparser(&t)).collect();
            assert_eq!((&p[..], &r[..]), (*params, *results), "{name}");
            defined += 1;
        }
        assert_eq!(
            linker.iter(&mut store).count(),
            defined,
            "linker defines more than the table"
        );
    }

    #[test]
    fn stderr_keeps_the_tail() {
        let mut s = ShardState::new(Abi::WasiCommand, Vec::new(), blake3::hash(b""), 1, 1);
        s.push_stderr(&vec![b'a'; STDERR_CAP - 1]);
        s.push_stderr(b"xyz");
        assert_eq!(s.stderr.len(), STDERR_CAP);
        assert!(s.stderr.ends_with(b"axyz"));
        s.push_stderr(&vec![b'b'; STDERR_CAP + 5]);
        assert_eq!(s.stderr, vec![b'b'; STDERR_CAP]);
    }

    /// The memory budget counts `stdout_cap` for stdout and `STDERR_CAP` for stderr, so
    /// neither buffer may grow past them (plain doubling took stdout to 1 406 here).
    #[test]
    fn output_buffers_never_grow_past_their_caps() {
        let cap = 1000;
        let mut s = ShardState::new(Abi::WasiCommand, Vec::new(), blake3::hash(b""), 1, cap);
        for n in [3, 300, 400, 297] {
            s.write_fd(1, &vec![1; n]).unwrap().unwrap();
            assert!(s.stdout.capacity() <= cap, "{}", s.stdout.capacity());
        }
        assert_eq!(s.stdout.len(), cap);
        assert!(s.write_fd(1, b"x").is_err(), "past the cap");
        for n in [10, STDERR_CAP - 3, 7, 2 * STDERR_CAP] {
            s.push_stderr(&vec![2; n]);
            assert_eq!(s.stderr.capacity(), STDERR_CAP);
        }
    }
}
