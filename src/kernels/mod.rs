//! Demo kernels shipped with their source: a Mandelbrot tile renderer and a Monte Carlo pi
//! estimator, both core-ABI WebAssembly written by hand in WAT (`mandelbrot.wat`, `pi.wat`).
//!
//! Owns: the kernels' input/output byte formats, job splitters, output decoders, native
//! Rust reference implementations that are bit-identical to the wasm (the tests hold them
//! to that), and the assembly of results (PNG, pi estimate). Must not touch the executor's
//! internals or anything networked; it only produces and consumes bytes.
//! `docs/shard-abi.md` documents the formats.

/// Source of the Mandelbrot kernel.
pub const MANDELBROT_WAT: &str = include_str!("mandelbrot.wat");
/// Source of the pi kernel.
pub const PI_WAT: &str = include_str!("pi.wat");

/// Size of an encoded [`MandelbrotTile`].
pub const MANDELBROT_INPUT_LEN: usize = 56;
/// Size of an encoded [`PiShard`] and of a pi output.
pub const PI_INPUT_LEN: usize = 16;
/// Largest tile the kernel accepts, in pixels (its output is one byte per pixel).
pub const MAX_TILE_PIXELS: u64 = 1 << 24;

/// Why kernel bytes could not be encoded, decoded or assembled.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("a {what} must be {expected} bytes, got {actual}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("the tile does not lie inside the image or is empty or too large")]
    BadTile,
    #[error("expected {expected} tile outputs for this image, got {actual}")]
    TileCount { expected: usize, actual: usize },
    #[error("the sum of shard outputs overflowed")]
    Overflow,
    #[error("no samples to estimate pi from")]
    NoSamples,
    #[error("could not encode the PNG: {0}")]
    Png(String),
}

/// The Mandelbrot kernel as WebAssembly bytes (deterministic: same bytes every call).
pub fn mandelbrot_wasm() -> Vec<u8> {
    // The source ships with the binary and is tested, so a parse failure is a build bug.
    wat::parse_str(MANDELBROT_WAT).expect("src/kernels/mandelbrot.wat is valid WAT")
}

/// The pi kernel as WebAssembly bytes (deterministic: same bytes every call).
pub fn pi_wasm() -> Vec<u8> {
    wat::parse_str(PI_WAT).expect("src/kernels/pi.wat is valid WAT")
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn check_len(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), KernelError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            actual: bytes.len(),
        })
    }
}

/// One Mandelbrot shard: which tile of which view to render.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MandelbrotTile {
    pub width: u32,
    pub height: u32,
    pub tile_x: u32,
    pub tile_y: u32,
    pub tile_w: u32,
    pub tile_h: u32,
    pub max_iter: u32,
    pub centre_re: f64,
    pub centre_im: f64,
    /// Complex-plane units per pixel.
    pub scale: f64,
}

impl MandelbrotTile {
    /// The whole set, centred and fitted into a `width` x `height` image.
    pub fn default_view(width: u32, height: u32) -> (f64, f64, f64) {
        let scale = f64::max(
            3.0 / f64::from(width.max(1)),
            2.6 / f64::from(height.max(1)),
        );
        (-0.75, 0.0, scale)
    }

    /// Canonical little-endian encoding (the kernel's input).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MANDELBROT_INPUT_LEN);
        for v in [
            self.width,
            self.height,
            self.tile_x,
            self.tile_y,
            self.tile_w,
            self.tile_h,
            self.max_iter,
            0,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.centre_re, self.centre_im, self.scale] {
            b.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        b
    }

    /// Decodes and checks an input (same rules as the kernel).
    pub fn decode(bytes: &[u8]) -> Result<MandelbrotTile, KernelError> {
        check_len("Mandelbrot input", bytes, MANDELBROT_INPUT_LEN)?;
        if u32_at(bytes, 28) != 0 {
            return Err(KernelError::BadTile);
        }
        let tile = MandelbrotTile {
            width: u32_at(bytes, 0),
            height: u32_at(bytes, 4),
            tile_x: u32_at(bytes, 8),
            tile_y: u32_at(bytes, 12),
            tile_w: u32_at(bytes, 16),
            tile_h: u32_at(bytes, 20),
            max_iter: u32_at(bytes, 24),
            centre_re: f64::from_bits(u64_at(bytes, 32)),
            centre_im: f64::from_bits(u64_at(bytes, 40)),
            scale: f64::from_bits(u64_at(bytes, 48)),
        };
        if tile.is_valid() {
            Ok(tile)
        } else {
            Err(KernelError::BadTile)
        }
    }

    fn is_valid(&self) -> bool {
        self.tile_w > 0
            && self.tile_h > 0
            && u64::from(self.tile_x) + u64::from(self.tile_w) <= u64::from(self.width)
            && u64::from(self.tile_y) + u64::from(self.tile_h) <= u64::from(self.height)
            && self.pixels() <= MAX_TILE_PIXELS
    }

    /// Pixels in this tile = bytes of its output.
    pub fn pixels(&self) -> u64 {
        u64::from(self.tile_w) * u64::from(self.tile_h)
    }
}

/// Splits a `width` x `height` image into `tile` x `tile` shards (edge tiles are smaller),
/// row by row, viewing the whole set.
pub fn mandelbrot_tiles(width: u32, height: u32, tile: u32, max_iter: u32) -> Vec<MandelbrotTile> {
    let tile = tile.max(1);
    let (centre_re, centre_im, scale) = MandelbrotTile::default_view(width, height);
    let mut tiles = Vec::new();
    for tile_y in (0..height).step_by(tile as usize) {
        for tile_x in (0..width).step_by(tile as usize) {
            tiles.push(MandelbrotTile {
                width,
                height,
                tile_x,
                tile_y,
                tile_w: tile.min(width - tile_x),
                tile_h: tile.min(height - tile_y),
                max_iter,
                centre_re,
                centre_im,
                scale,
            });
        }
    }
    tiles
}

/// Encoded inputs of [`mandelbrot_tiles`], one per shard.
pub fn mandelbrot_job_inputs(width: u32, height: u32, tile: u32, max_iter: u32) -> Vec<Vec<u8>> {
    mandelbrot_tiles(width, height, tile, max_iter)
        .iter()
        .map(MandelbrotTile::encode)
        .collect()
}

/// Native reference of the Mandelbrot kernel: identical operations in identical order, so
/// the output is bit-for-bit the wasm output (Rust never fuses `a * b + c` on its own).
pub fn mandelbrot_native(t: &MandelbrotTile) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.pixels() as usize);
    let half_w = f64::from(t.width) * 0.5;
    let half_h = f64::from(t.height) * 0.5;
    for py in t.tile_y..t.tile_y + t.tile_h {
        let ci = t.centre_im + (f64::from(py) - half_h) * t.scale;
        for px in t.tile_x..t.tile_x + t.tile_w {
            let cr = t.centre_re + (f64::from(px) - half_w) * t.scale;
            let (mut zr, mut zi) = (0.0f64, 0.0f64);
            let mut i = 0u32;
            while i < t.max_iter {
                let zr2 = zr * zr;
                let zi2 = zi * zi;
                if zr2 + zi2 > 4.0 {
                    break;
                }
                zi = (zr + zr) * zi + ci;
                zr = (zr2 - zi2) + cr;
                i += 1;
            }
            out.push(palette_index(i, t.max_iter));
        }
    }
    out
}

fn palette_index(i: u32, max_iter: u32) -> u8 {
    if i >= max_iter {
        0
    } else {
        (i % 255 + 1) as u8
    }
}

/// RGB palette for the Mandelbrot indices: black inside, and a cyclic blue-white-gold ramp
/// outside (the cycle matches the kernel's `mod 255`).
pub fn mandelbrot_palette() -> Vec<u8> {
    const STOPS: [[i32; 3]; 5] = [
        [0, 7, 100],
        [32, 107, 203],
        [237, 255, 255],
        [255, 170, 0],
        [0, 2, 0],
    ];
    let mut pal = vec![0u8; 3];
    for idx in 1..=255i32 {
        // Position along the cycle in 1/1000ths of a segment.
        let pos = (idx - 1) * STOPS.len() as i32 * 1000 / 255;
        let (seg, frac) = ((pos / 1000) as usize, pos % 1000);
        let (a, b) = (STOPS[seg], STOPS[(seg + 1) % STOPS.len()]);
        for c in 0..3 {
            pal.push((a[c] + (b[c] - a[c]) * frac / 1000) as u8);
        }
    }
    pal
}

/// Stitches tile outputs (in [`mandelbrot_tiles`] order) into an indexed PNG.
pub fn assemble_mandelbrot_png(
    width: u32,
    height: u32,
    tile: u32,
    outputs: &[Vec<u8>],
) -> Result<Vec<u8>, KernelError> {
    let tiles = mandelbrot_tiles(width, height, tile, 0);
    if tiles.len() != outputs.len() {
        return Err(KernelError::TileCount {
            expected: tiles.len(),
            actual: outputs.len(),
        });
    }
    let mut pixels = vec![0u8; width as usize * height as usize];
    for (t, out) in tiles.iter().zip(outputs) {
        check_len("tile output", out, t.pixels() as usize)?;
        for (row, line) in out.chunks_exact(t.tile_w as usize).enumerate() {
            let start = (t.tile_y as usize + row) * width as usize + t.tile_x as usize;
            pixels[start..start + line.len()].copy_from_slice(line);
        }
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(mandelbrot_palette());
    let mut writer = encoder
        .write_header()
        .map_err(|e| KernelError::Png(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| KernelError::Png(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| KernelError::Png(e.to_string()))?;
    Ok(png_bytes)
}

/// One pi shard: a generator seed and a number of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiShard {
    pub seed: u64,
    pub samples: u64,
}

impl PiShard {
    /// Canonical little-endian encoding (the kernel's input).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(PI_INPUT_LEN);
        b.extend_from_slice(&self.seed.to_le_bytes());
        b.extend_from_slice(&self.samples.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<PiShard, KernelError> {
        check_len("pi input", bytes, PI_INPUT_LEN)?;
        Ok(PiShard {
            seed: u64_at(bytes, 0),
            samples: u64_at(bytes, 8),
        })
    }
}

/// What one pi shard counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PiCount {
    pub hits: u64,
    pub samples: u64,
}

impl PiCount {
    /// The kernel's output format.
    pub fn encode(&self) -> Vec<u8> {
        PiShard {
            seed: self.hits,
            samples: self.samples,
        }
        .encode()
    }

    pub fn decode(bytes: &[u8]) -> Result<PiCount, KernelError> {
        check_len("pi output", bytes, PI_INPUT_LEN)?;
        Ok(PiCount {
            hits: u64_at(bytes, 0),
            samples: u64_at(bytes, 8),
        })
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Splits `samples` over `shards` shards (the first `samples % shards` get one more), each
/// with its own seed derived from `seed` and the shard index.
pub fn pi_shards(shards: u32, samples: u64, seed: u64) -> Vec<PiShard> {
    let shards = u64::from(shards.max(1));
    (0..shards)
        .map(|i| PiShard {
            seed: splitmix64_mix(seed.wrapping_add((i + 1).wrapping_mul(GOLDEN))),
            samples: samples / shards + u64::from(i < samples % shards),
        })
        .collect()
}

/// Encoded inputs of [`pi_shards`].
pub fn pi_job_inputs(shards: u32, samples: u64, seed: u64) -> Vec<Vec<u8>> {
    pi_shards(shards, samples, seed)
        .iter()
        .map(PiShard::encode)
        .collect()
}

/// Native reference of the pi kernel.
pub fn pi_native(shard: &PiShard) -> PiCount {
    let mut state = shard.seed;
    let mut next = || {
        state = state.wrapping_add(GOLDEN);
        splitmix64_mix(state) >> 33
    };
    let mut hits = 0u64;
    for _ in 0..shard.samples {
        let x = next();
        let y = next();
        hits += u64::from(x * x + y * y < 1 << 62);
    }
    PiCount {
        hits,
        samples: shard.samples,
    }
}

/// Combines shard outputs into an estimate of pi.
pub fn pi_estimate(outputs: &[Vec<u8>]) -> Result<f64, KernelError> {
    let (mut hits, mut samples) = (0u64, 0u64);
    for out in outputs {
        let c = PiCount::decode(out)?;
        if c.hits > c.samples {
            return Err(KernelError::Length {
                what: "pi output with hits <= samples",
                expected: PI_INPUT_LEN,
                actual: out.len(),
            });
        }
        hits = hits.checked_add(c.hits).ok_or(KernelError::Overflow)?;
        samples = samples
            .checked_add(c.samples)
            .ok_or(KernelError::Overflow)?;
    }
    if samples == 0 {
        return Err(KernelError::NoSamples);
    }
    Ok(4.0 * hits as f64 / samples as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_roundtrip_and_validation() {
        let t = mandelbrot_tiles(100, 70, 32, 50)[11];
        assert_eq!((t.tile_x, t.tile_y, t.tile_w, t.tile_h), (96, 64, 4, 6));
        assert_eq!(MandelbrotTile::decode(&t.encode()).unwrap(), t);
        let mut bad = t;
        bad.tile_x = 97;
        assert!(matches!(
            MandelbrotTile::decode(&bad.encode()),
            Err(KernelError::BadTile)
        ));
        assert!(MandelbrotTile::decode(&[0; 10]).is_err());
    }

    #[test]
    fn pi_shards_split_all_samples_with_distinct_seeds() {
        let s = pi_shards(3, 10, 7);
        assert_eq!(s.iter().map(|s| s.samples).collect::<Vec<_>>(), [4, 3, 3]);
        assert_ne!(s[0].seed, s[1].seed);
        let c = PiCount {
            hits: 3,
            samples: 4,
        };
        assert_eq!(PiCount::decode(&c.encode()).unwrap(), c);
        assert_eq!(pi_estimate(&[c.encode()]).unwrap(), 3.0);
        assert!(pi_estimate(&[]).is_err());
    }

    #[test]
    fn palette_has_256_entries_black_first() {
        let p = mandelbrot_palette();
        assert_eq!(p.len(), 256 * 3);
        assert_eq!(&p[..3], &[0, 0, 0]);
    }
}
