//! Executor tests with real wasm execution: determinism, every failure kind, NaN
//! canonicalisation and a WASI command built from C (`tests/fixtures/wasi/upper.c`).

use std::time::Duration;

use hearth::exec::{Abi, ExecError, Executor, Limits, ShardInput, ShardOutput, MAX_OUTPUT_BYTES};

fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("test WAT is valid")
}

fn run(
    exec: &Executor,
    module: &[u8],
    input: &[u8],
    limits: &Limits,
) -> Result<ShardOutput, ExecError> {
    exec.run(&blake3::hash(module), module, input, limits)
}

/// One executor shared by the tests, so each module is compiled once (debug-build Cranelift
/// is slow); tests that need a fresh engine make their own.
fn shared() -> &'static Executor {
    static EXEC: std::sync::OnceLock<Executor> = std::sync::OnceLock::new();
    EXEC.get_or_init(|| Executor::new().unwrap())
}

fn run_default(module: &[u8], input: &[u8]) -> Result<ShardOutput, ExecError> {
    run(shared(), module, input, &Limits::default())
}

/// Wraps a `run` body in a minimal core-ABI module (alloc returns a fixed buffer at 1024).
fn core_module(extra: &str, run_body: &str) -> Vec<u8> {
    wat(&format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            {extra}
            (func (export "run") (param $ptr i32) (param $len i32) (result i64) {run_body}))"#
    ))
}

/// Reverses its input in place and returns it.
fn reverse_module() -> Vec<u8> {
    core_module(
        "",
        r#"(local $i i32) (local $j i32) (local $t i32)
           (local.set $i (local.get $ptr))
           (local.set $j (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 1)))
           (block $done (loop $l
             (br_if $done (i32.ge_s (local.get $i) (local.get $j)))
             (local.set $t (i32.load8_u (local.get $i)))
             (i32.store8 (local.get $i) (i32.load8_u (local.get $j)))
             (i32.store8 (local.get $j) (local.get $t))
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (local.set $j (i32.sub (local.get $j) (i32.const 1)))
             (br $l)))
           (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                   (i64.extend_i32_u (local.get $len)))"#,
    )
}

fn upper_wasm() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/wasi/upper.wasm"
    ))
    .expect("tests/fixtures/wasi/upper.wasm is committed")
}

#[test]
fn core_abi_round_trip() {
    let out = run_default(&reverse_module(), b"hearth").unwrap();
    assert_eq!(out.output, b"htraeh");
    assert!(out.fuel > 0);
    assert!(out.stderr.is_empty());
}

#[test]
fn prepare_reports_abi() {
    let exec = Executor::new().unwrap();
    let core = reverse_module();
    assert_eq!(
        exec.prepare(&blake3::hash(&core), &core).unwrap(),
        Abi::Core
    );
    let upper = upper_wasm();
    assert_eq!(
        exec.prepare(&blake3::hash(&upper), &upper).unwrap(),
        Abi::WasiCommand
    );
}

#[test]
fn same_output_and_fuel_repeatedly_and_across_threads() {
    let module = hearth::kernels::mandelbrot_wasm();
    let input = hearth::kernels::mandelbrot_job_inputs(64, 48, 32, 200).remove(0);
    let exec = Executor::new().unwrap();
    let first = run(&exec, &module, &input, &Limits::default()).unwrap();
    for _ in 0..3 {
        let again = run(&exec, &module, &input, &Limits::default()).unwrap();
        assert_eq!(blake3::hash(&again.output), blake3::hash(&first.output));
        assert_eq!(again.fuel, first.fuel);
    }
    // A fresh executor (empty cache, new engine) must agree too.
    let fresh = run(
        &Executor::new().unwrap(),
        &module,
        &input,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        (fresh.output.clone(), fresh.fuel),
        (first.output.clone(), first.fuel)
    );

    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (exec, module, input) = (exec.clone(), module.clone(), input.clone());
            std::thread::spawn(move || run(&exec, &module, &input, &Limits::default()).unwrap())
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert_eq!(out.output, first.output);
        assert_eq!(out.fuel, first.fuel);
    }
}

#[test]
fn fuel_exhaustion_is_reported_with_the_limit() {
    let module = core_module("", "(loop $l (br $l)) i64.const 0");
    let limits = Limits {
        fuel: 100_000,
        ..Limits::default()
    };
    match run(&Executor::new().unwrap(), &module, b"", &limits) {
        Err(ExecError::OutOfFuel { limit }) => assert_eq!(limit, 100_000),
        other => panic!("expected OutOfFuel, got {other:?}"),
    }
}

#[test]
fn memory_growth_past_the_limit_is_out_of_memory() {
    // Grows by 64 pages (4 MiB) with a 1 MiB limit.
    let module = core_module("", "(drop (memory.grow (i32.const 64))) i64.const 0");
    let limits = Limits {
        memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let exec = Executor::new().unwrap();
    match run(&exec, &module, b"", &limits) {
        Err(ExecError::OutOfMemory { limit }) => assert_eq!(limit, 1 << 20),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // Within the limit the same module is fine.
    let roomy = Limits {
        memory_bytes: 8 << 20,
        ..Limits::default()
    };
    assert!(run(&exec, &module, b"", &roomy).is_ok());
}

#[test]
fn initial_memory_past_the_limit_is_out_of_memory() {
    let module = wat(r#"(module (memory (export "memory") 32)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i64) i64.const 0))"#);
    let limits = Limits {
        memory_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = run(&Executor::new().unwrap(), &module, b"", &limits).unwrap_err();
    assert!(matches!(err, ExecError::OutOfMemory { .. }), "{err:?}");
}

#[test]
fn infinite_recursion_is_stack_overflow() {
    let module = core_module(
        "(func $f (param i32) (result i32) (i32.add (call $f (local.get 0)) (i32.const 1)))",
        "(drop (call $f (i32.const 0))) i64.const 0",
    );
    let err = run_default(&module, b"").unwrap_err();
    assert!(matches!(err, ExecError::StackOverflow { .. }), "{err:?}");
}

#[test]
fn unreachable_is_reported() {
    let err = run_default(&core_module("", "unreachable"), b"").unwrap_err();
    assert!(matches!(err, ExecError::Unreachable { .. }), "{err:?}");
}

#[test]
fn other_traps_carry_their_message() {
    let err = run_default(
        &core_module(
            "",
            "(drop (i32.div_u (i32.const 1) (i32.const 0))) i64.const 0",
        ),
        b"",
    )
    .unwrap_err();
    match err {
        ExecError::Trap { message, .. } => assert!(message.contains("divide by zero"), "{message}"),
        other => panic!("expected Trap, got {other:?}"),
    }
}

#[test]
fn wall_clock_timeout() {
    let module = core_module("", "(loop $l (br $l)) i64.const 0");
    let limits = Limits {
        fuel: u64::MAX / 2,
        wall_clock: Duration::from_millis(50),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let err = run(&Executor::new().unwrap(), &module, b"", &limits).unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A core shard's setup is its code too: an `alloc` that never returns meets the wall-clock
/// limit, as a `run` that never returns does.
#[test]
fn a_core_shards_setup_code_is_under_the_wall_clock_limit() {
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "alloc") (param i32) (result i32) (loop $l (br $l)) i32.const 0)
        (func (export "run") (param i32 i32) (result i64) i64.const 0))"#);
    let limits = Limits {
        fuel: u64::MAX / 2,
        wall_clock: Duration::from_millis(50),
        ..Limits::default()
    };
    let exec = Executor::new().unwrap();
    let started = std::time::Instant::now();
    let err = exec
        .run(
            &blake3::hash(&module),
            &module,
            b"input".as_slice(),
            &limits,
        )
        .expect_err("an alloc that never returns");
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(exec.memory_in_use(), 0);
}

#[test]
fn bad_abi_is_explained() {
    let missing_run = wat(
        r#"(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0))"#,
    );
    match run_default(&missing_run, b"") {
        Err(ExecError::BadAbi(msg)) => {
            assert!(msg.contains("`run(ptr: i32, len: i32) -> i64`"), "{msg}")
        }
        other => panic!("expected BadAbi, got {other:?}"),
    }
    let no_exports = wat("(module)");
    assert!(matches!(
        run_default(&no_exports, b""),
        Err(ExecError::BadAbi(_))
    ));
    let wrong_type = wat(r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i32) i32.const 0))"#);
    assert!(matches!(
        run_default(&wrong_type, b""),
        Err(ExecError::BadAbi(_))
    ));
    let no_memory = wat(r#"(module (func (export "_start")))"#);
    assert!(matches!(
        run_default(&no_memory, b""),
        Err(ExecError::BadAbi(_))
    ));
    // Output range outside memory.
    let wild = core_module("", "i64.const 0x0000fff000001000");
    match run_default(&wild, b"") {
        Err(ExecError::BadAbi(msg)) => assert!(msg.contains("outside"), "{msg}"),
        other => panic!("expected BadAbi, got {other:?}"),
    }
    // alloc pointing outside memory.
    let bad_alloc = wat(r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 65530)
            (func (export "run") (param i32 i32) (result i64) i64.const 0))"#);
    assert!(matches!(
        run_default(&bad_alloc, b"0123456789"),
        Err(ExecError::BadAbi(_))
    ));
}

#[test]
fn output_larger_than_the_cap_is_refused() {
    let len = MAX_OUTPUT_BYTES as u64 + 1;
    let module = core_module("", &format!("i64.const {len}"));
    let err = run_default(&module, b"").unwrap_err();
    assert!(matches!(err, ExecError::OutputTooLarge { .. }), "{err:?}");
}

#[test]
fn forbidden_imports_are_named_before_compiling() {
    let env_import = wat(
        r#"(module (import "env" "now" (func (result i64))) (func (export "_start")) (memory (export "memory") 1))"#,
    );
    match run_default(&env_import, b"") {
        Err(ExecError::ForbiddenImport { module, name, .. }) => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "now"))
        }
        other => panic!("expected ForbiddenImport, got {other:?}"),
    }
    let err = run_default(&env_import, b"").unwrap_err();
    assert!(err.to_string().contains("env::now"), "{err}");

    let wrong_sig = wat(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32))) (func (export "_start")) (memory (export "memory") 1))"#,
    );
    assert!(matches!(
        run_default(&wrong_sig, b""),
        Err(ExecError::ForbiddenImport { .. })
    ));

    let sock = wat(
        r#"(module (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32))) (func (export "_start")) (memory (export "memory") 1))"#,
    );
    assert!(matches!(
        run_default(&sock, b""),
        Err(ExecError::ForbiddenImport { .. })
    ));

    let memory_import =
        wat(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#);
    assert!(matches!(
        run_default(&memory_import, b""),
        Err(ExecError::ForbiddenImport { .. })
    ));
}

#[test]
fn simd_and_garbage_are_invalid_modules() {
    let simd = core_module("", "(drop (v128.const i64x2 0 0)) i64.const 0");
    assert!(matches!(
        run_default(&simd, b""),
        Err(ExecError::InvalidModule(_))
    ));
    assert!(matches!(
        run_default(b"\0asm garbage", b""),
        Err(ExecError::InvalidModule(_))
    ));
}

#[test]
fn wrong_hash_is_refused() {
    let module = reverse_module();
    let err = Executor::new()
        .unwrap()
        .run(
            &blake3::hash(b"something else"),
            &module,
            b"".as_slice(),
            &Limits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, ExecError::HashMismatch { .. }), "{err:?}");
}

/// Stores NaNs made by 0/0 (x86 makes a *negative* NaN, ARM a positive one) through every
/// escape route, plus ordinary values that must pass through untouched.
#[test]
fn nan_bits_are_canonical_where_observable() {
    let module = core_module(
        r#"(func $nan32 (result f32) (f32.div (f32.const 0) (f32.const 0)))
           (func $nan64 (result f64) (f64.div (f64.const 0) (f64.const 0)))"#,
        r#"(f32.store offset=0 (i32.const 0) (call $nan32))
           (f64.store offset=8 (i32.const 0) (call $nan64))
           (i32.store offset=16 (i32.const 0) (i32.reinterpret_f32 (call $nan32)))
           (i64.store offset=24 (i32.const 0) (i64.reinterpret_f64 (call $nan64)))
           ;; copysign takes only the sign of a NaN: must be + after canonicalisation.
           (f64.store offset=32 (i32.const 0) (f64.copysign (f64.const 1) (call $nan64)))
           (f32.store offset=40 (i32.const 0) (f32.copysign (f32.const 1) (call $nan32)))
           ;; A NaN flipped by f64.neg is still canonicalised when stored.
           (f64.store offset=48 (i32.const 0) (f64.neg (call $nan64)))
           ;; Non-NaN values are untouched, including negative zero and signs.
           (f64.store offset=56 (i32.const 0) (f64.mul (f64.const 1.5) (f64.const -3)))
           (f32.store offset=64 (i32.const 0) (f32.const -0))
           (i64.store offset=72 (i32.const 0) (i64.reinterpret_f64 (f64.sqrt (f64.const 2))))
           (f64.store offset=80 (i32.const 0) (f64.copysign (f64.const 2) (f64.const -0)))
           (f32.store offset=88 (i32.const 0) (f32.copysign (f32.const 2) (f32.const -1)))
           i64.const 96"#,
    );
    let out = run_default(&module, b"").unwrap().output;
    let u32_at = |at: usize| u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
    assert_eq!(u32_at(0), 0x7fc0_0000, "f32.store");
    assert_eq!(u64_at(8), 0x7ff8_0000_0000_0000, "f64.store");
    assert_eq!(u32_at(16), 0x7fc0_0000, "i32.reinterpret_f32");
    assert_eq!(u64_at(24), 0x7ff8_0000_0000_0000, "i64.reinterpret_f64");
    assert_eq!(f64::from_bits(u64_at(32)), 1.0, "f64.copysign sign operand");
    assert_eq!(f32::from_bits(u32_at(40)), 1.0, "f32.copysign sign operand");
    assert_eq!(u64_at(48), 0x7ff8_0000_0000_0000, "negated NaN");
    assert_eq!(f64::from_bits(u64_at(56)), -4.5);
    assert_eq!(u32_at(64), 0x8000_0000, "-0.0 keeps its sign");
    assert_eq!(u64_at(72), 2f64.sqrt().to_bits());
    assert_eq!(f64::from_bits(u64_at(80)).to_bits(), (-2f64).to_bits());
    assert_eq!(f32::from_bits(u32_at(88)), -2.0);
}

#[test]
fn core_abi_prints_go_to_stderr_and_proc_exit_is_refused() {
    let module = wat(r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "hi there")
            (func (export "alloc") (param i32) (result i32) i32.const 1024)
            (func (export "run") (param i32 i32) (result i64)
              (i32.store (i32.const 0) (i32.const 100))
              (i32.store (i32.const 4) (i32.const 8))
              (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (if (local.get 1) (then (call $exit (i32.const 0))))
              (i64.const 0)))"#);
    let out = run_default(&module, b"").unwrap();
    assert_eq!(out.stderr, b"hi there");
    assert!(out.output.is_empty());
    assert!(matches!(
        run_default(&module, b"x"),
        Err(ExecError::BadAbi(_))
    ));
}

#[test]
fn wasi_command_from_c_reads_stdin_and_writes_stdout() {
    let module = upper_wasm();
    let out = run_default(&module, b"hello, radiator\n").unwrap();
    assert_eq!(out.output, b"HELLO, RADIATOR\n");
    assert_eq!(out.stderr, b"upper: done\n");

    // More than one stdio buffer's worth, to exercise repeated fd_read / fd_write.
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = run_default(&module, &big).unwrap();
    assert_eq!(out.output, big.to_ascii_uppercase());

    let empty = run_default(&module, b"").unwrap();
    assert!(empty.output.is_empty());
}

#[test]
fn wasi_non_zero_exit_reports_code_and_stderr() {
    match run_default(&upper_wasm(), b"exit:3") {
        Err(ExecError::Exit { code, stderr_tail }) => {
            assert_eq!(code, 3);
            assert!(
                stderr_tail.contains("asked to exit with 3 (argv[0]=shard, argc=1)"),
                "{stderr_tail}"
            );
        }
        other => panic!("expected Exit, got {other:?}"),
    }
    // exit code 0 through proc_exit is success.
    let out = run_default(&upper_wasm(), b"exit:0").unwrap();
    assert!(out.output.is_empty());
}

#[test]
fn wasi_world_is_deterministic() {
    let module = upper_wasm();
    assert_eq!(
        run_default(&module, b"file").unwrap().output,
        b"fopen failed\n"
    );
    assert_eq!(
        run_default(&module, b"time").unwrap().output,
        b"time 1704067200\n"
    );
    let r1 = run_default(&module, b"rand").unwrap().output;
    let r2 = run_default(&module, b"rand").unwrap().output;
    assert_eq!(r1, r2, "random_get depends only on the input");
    assert_eq!(r1.len(), 17);
    let other = run_default(&module, b"rand!").unwrap().output;
    assert_ne!(r1, other, "a different input gives different randomness");
}

#[test]
fn wasi_run_out_of_fuel() {
    let limits = Limits {
        fuel: 1_000,
        ..Limits::default()
    };
    let err = run(&Executor::new().unwrap(), &upper_wasm(), b"abc", &limits).unwrap_err();
    assert!(
        matches!(err, ExecError::OutOfFuel { limit: 1_000 }),
        "{err:?}"
    );
}

/// A stored input as a store hands it over: `bytes` (or `error`) written into the buffer
/// the run gives, and a flag set when it is read.
fn stored_input(
    bytes: &'static [u8],
    error: Option<&'static str>,
    delay: Duration,
) -> (ShardInput, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let was_read = std::sync::Arc::new(AtomicBool::new(false));
    let flag = was_read.clone();
    let input = ShardInput::stored(
        blake3::hash(bytes),
        bytes.len() as u64,
        move |buffer: &mut [u8]| {
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(delay);
            match error {
                Some(why) => Err(why.to_string()),
                None => {
                    buffer.copy_from_slice(bytes);
                    Ok(())
                }
            }
        },
    );
    (input, was_read)
}

/// A stored input is read only after the memory budget's wait: a core shard's by its run,
/// straight into its linear memory, a WASI command's on admission, into its stdin. Failing to
/// read it is the radiator's problem, not the shard's: `InputUnreadable`, which a worker does
/// not report as the shard's failure; nothing stays reserved.
#[test]
fn a_stored_input_is_read_after_admission_and_its_failure_is_not_the_shards() {
    use std::sync::atomic::Ordering;
    let exec = Executor::new().unwrap();
    let module = reverse_module();
    let hash = blake3::hash(&module);
    let limits = Limits::default();

    let (input, was_read) = stored_input(b"hearth", None, Duration::ZERO);
    let admitted = exec.admit(&hash, &module, input, &limits).unwrap();
    assert!(
        !was_read.load(Ordering::SeqCst),
        "a core shard's read before its run"
    );
    assert_eq!(admitted.run().unwrap().output, b"htraeh");
    assert!(was_read.load(Ordering::SeqCst));

    let wasi = upper_wasm();
    let (input, _) = stored_input(b"hearth", None, Duration::ZERO);
    let out = exec
        .run(&blake3::hash(&wasi), &wasi, input, &limits)
        .unwrap();
    assert_eq!(
        out.output, b"HEARTH",
        "a WASI command reads it as its stdin"
    );
    drop(out); // its output held its part of the memory budget

    for module in [&module, &wasi] {
        let (input, _) = stored_input(b"hearth", Some("the disk is on fire"), Duration::ZERO);
        let err = exec
            .run(&blake3::hash(module), module, input, &limits)
            .unwrap_err();
        assert!(
            matches!(&err, ExecError::InputUnreadable(why) if why.contains("on fire")),
            "{err}"
        );
        assert!(!err.exceeds_radiator_limits());
    }
    assert_eq!(exec.memory_in_use(), 0);
}

/// A slow disk is not the shard's fault: a core shard's input is read once the shard has
/// asked for its buffer, and the wall-clock limit counts the shard's own code only.
#[test]
fn reading_a_stored_input_does_not_count_against_the_wall_clock_limit() {
    let exec = Executor::new().unwrap();
    let module = reverse_module();
    let hash = blake3::hash(&module);
    let limits = Limits {
        wall_clock: Duration::from_millis(100),
        ..Limits::default()
    };
    let (input, _) = stored_input(b"hearth", None, Duration::from_millis(400));
    let out = exec.run(&hash, &module, input, &limits).unwrap();
    assert_eq!(out.output, b"htraeh");
}
