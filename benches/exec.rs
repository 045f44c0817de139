//! Executor overhead on the demo kernels: time under hearth's executor divided by the time of
//! the native Rust reference, measured side by side in one process, plus the same kernel with
//! wasmtime's blanket `cranelift_nan_canonicalization` for comparison.
//!
//! Run with `cargo bench --bench exec`. Prints a table; asserts only that outputs equal the
//! native reference (timings are never asserted).

use std::hint::black_box;
use std::time::{Duration, Instant};

use hearth::exec::{Executor, Limits};
use hearth::kernels::{self, PiCount};

/// Times one call of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

fn run_all(exec: &Executor, module: &[u8], inputs: &[Vec<u8>]) -> (Vec<Vec<u8>>, u64) {
    let hash = blake3::hash(module);
    let limits = Limits::default();
    let mut fuel = 0;
    let outs = inputs
        .iter()
        .map(|i| {
            let out = exec
                .run(&hash, module, i.as_slice(), &limits)
                .expect("kernel runs");
            fuel += out.fuel;
            out.output
        })
        .collect();
    (outs, fuel)
}

struct Row {
    name: String,
    native: Duration,
    hearth: Duration,
    blanket: Duration,
    fuel: u64,
}

fn measure(
    name: &str,
    module: &[u8],
    inputs: &[Vec<u8>],
    native: impl Fn(&[u8]) -> Vec<u8>,
    reps: usize,
) -> Row {
    let exec = Executor::new().expect("executor");
    let blanket = Executor::with_blanket_nan_canonicalization().expect("executor");
    let hash = blake3::hash(module);
    // Compile outside the timed region: the cache makes this the steady state.
    exec.prepare(&hash, module).expect("compiles");
    blanket.prepare(&hash, module).expect("compiles");

    // Interleave the three variants and keep each one's best time, so a burst of load from
    // the rest of the machine hits them alike instead of skewing one of them.
    let (mut t_native, mut t_hearth, mut t_blanket) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let (mut native_out, mut hearth_out, mut blanket_out, mut fuel) = (vec![], vec![], vec![], 0);
    for _ in 0..reps {
        let (t, out) = timed(|| {
            inputs
                .iter()
                .map(|i| black_box(native(black_box(i))))
                .collect::<Vec<_>>()
        });
        (t_native, native_out) = (t_native.min(t), out);
        let (t, (out, f)) = timed(|| run_all(&exec, module, inputs));
        (t_hearth, hearth_out, fuel) = (t_hearth.min(t), out, f);
        let (t, (out, _)) = timed(|| run_all(&blanket, module, inputs));
        (t_blanket, blanket_out) = (t_blanket.min(t), out);
    }
    assert_eq!(
        hearth_out, native_out,
        "{name}: executor output differs from native"
    );
    assert_eq!(
        blanket_out, native_out,
        "{name}: blanket-NaN output differs from native"
    );
    Row {
        name: name.to_string(),
        native: t_native,
        hearth: t_hearth,
        blanket: t_blanket,
        fuel,
    }
}

fn main() {
    let reps = 7;
    let mut rows = Vec::new();

    let (w, h, tile, max_iter) = (512, 512, 128, 1000);
    let tiles = kernels::mandelbrot_tiles(w, h, tile, max_iter);
    let inputs: Vec<_> = tiles.iter().map(|t| t.encode()).collect();
    rows.push(measure(
        &format!("mandelbrot {w}x{h} it{max_iter} ({} tiles)", tiles.len()),
        &kernels::mandelbrot_wasm(),
        &inputs,
        |i| kernels::mandelbrot_native(&kernels::MandelbrotTile::decode(i).expect("valid")),
        reps,
    ));

    let (shards, samples) = (4, 4_000_000);
    rows.push(measure(
        &format!("pi {samples} samples ({shards} shards)"),
        &kernels::pi_wasm(),
        &kernels::pi_job_inputs(shards, samples, 2024),
        |i| {
            let shard = kernels::PiShard::decode(i).expect("valid");
            let PiCount { hits, samples } = kernels::pi_native(&shard);
            PiCount { hits, samples }.encode()
        },
        reps,
    ));

    println!(
        "{:<40} {:>10} {:>10} {:>7} {:>12} {:>7} {:>14}",
        "kernel", "native ms", "hearth ms", "ratio", "blanket ms", "ratio", "fuel"
    );
    for r in rows {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>6.2}x {:>12.1} {:>6.2}x {:>14}",
            r.name,
            ms(r.native),
            ms(r.hearth),
            ms(r.hearth) / ms(r.native),
            ms(r.blanket),
            ms(r.blanket) / ms(r.native),
            r.fuel
        );
    }
}
