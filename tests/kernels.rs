//! The demo kernels under the real executor must equal their native Rust references bit for
//! bit, and the assembled picture must decode.

use hearth::exec::{Abi, Executor, Limits};
use hearth::kernels::{
    self, assemble_mandelbrot_png, mandelbrot_native, mandelbrot_tiles, pi_estimate, pi_native,
    pi_shards, MandelbrotTile, PiCount, PiShard,
};

fn run(exec: &Executor, module: &[u8], input: &[u8]) -> Vec<u8> {
    exec.run(&blake3::hash(module), module, input, &Limits::default())
        .expect("kernel runs")
        .output
}

#[test]
fn kernel_bytes_are_deterministic_and_core_abi() {
    let exec = Executor::new().unwrap();
    for (a, b) in [
        (kernels::mandelbrot_wasm(), kernels::mandelbrot_wasm()),
        (kernels::pi_wasm(), kernels::pi_wasm()),
    ] {
        assert_eq!(a, b);
        assert_eq!(exec.prepare(&blake3::hash(&a), &a).unwrap(), Abi::Core);
    }
}

#[test]
fn mandelbrot_matches_native_on_every_tile_including_ragged_edges() {
    let exec = Executor::new().unwrap();
    let module = kernels::mandelbrot_wasm();
    // 70 x 45 with 32-pixel tiles: edge tiles are 6 wide and 13 high.
    let tiles = mandelbrot_tiles(70, 45, 32, 300);
    assert_eq!(tiles.len(), 6);
    assert!(tiles.iter().any(|t| t.tile_w == 6 && t.tile_h == 13));
    let mut outputs = Vec::new();
    let mut inside = 0;
    for tile in &tiles {
        let out = run(&exec, &module, &tile.encode());
        assert_eq!(out, mandelbrot_native(tile), "tile {tile:?}");
        inside += out.iter().filter(|&&p| p == 0).count();
        outputs.push(out);
    }
    // The picture must actually contain the set and its outside.
    assert!(inside > 100 && inside < 70 * 45 - 100, "inside = {inside}");

    let png_bytes = assemble_mandelbrot_png(70, 45, 32, &outputs).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (70, 45));
    assert_eq!(info.color_type, png::ColorType::Indexed);

    // Wrong number of tiles or a short tile are refused.
    assert!(assemble_mandelbrot_png(70, 45, 32, &outputs[1..]).is_err());
    let mut short = outputs.clone();
    short[5].pop();
    assert!(assemble_mandelbrot_png(70, 45, 32, &short).is_err());
}

#[test]
fn mandelbrot_zoomed_view_matches_native() {
    // A deep-ish zoom where rounding differences would show immediately.
    let tile = MandelbrotTile {
        width: 40,
        height: 30,
        tile_x: 3,
        tile_y: 5,
        tile_w: 37,
        tile_h: 25,
        max_iter: 2000,
        centre_re: -0.743_643_887_037_151,
        centre_im: 0.131_825_904_205_330,
        scale: 1e-9,
    };
    let exec = Executor::new().unwrap();
    let out = run(&exec, &kernels::mandelbrot_wasm(), &tile.encode());
    assert_eq!(out, mandelbrot_native(&tile));
    assert!(out.iter().any(|&p| p != out[0]), "the view is not uniform");
}

#[test]
fn mandelbrot_rejects_a_tile_outside_the_image() {
    let mut tile = mandelbrot_tiles(64, 64, 32, 10)[0];
    tile.tile_x = 40;
    let module = kernels::mandelbrot_wasm();
    let err = Executor::new()
        .unwrap()
        .run(
            &blake3::hash(&module),
            &module,
            tile.encode(),
            &Limits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, hearth::exec::ExecError::Unreachable { .. }),
        "{err:?}"
    );
}

#[test]
fn pi_matches_native_and_estimates_pi() {
    let exec = Executor::new().unwrap();
    let module = kernels::pi_wasm();
    let shards = pi_shards(4, 400_001, 42);
    let mut outputs = Vec::new();
    for shard in &shards {
        let out = run(&exec, &module, &shard.encode());
        assert_eq!(PiCount::decode(&out).unwrap(), pi_native(shard));
        outputs.push(out);
    }
    assert_eq!(
        outputs,
        kernels::pi_job_inputs(4, 400_001, 42)
            .iter()
            .map(|i| run(&exec, &module, i))
            .collect::<Vec<_>>()
    );
    let pi = pi_estimate(&outputs).unwrap();
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "pi ~ {pi}");
    // Zero samples is a valid shard.
    let zero = run(
        &exec,
        &module,
        &PiShard {
            seed: 1,
            samples: 0,
        }
        .encode(),
    );
    assert_eq!(
        PiCount::decode(&zero).unwrap(),
        PiCount {
            hits: 0,
            samples: 0
        }
    );
}
