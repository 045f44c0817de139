;; Mandelbrot tile renderer, hearth core ABI. See docs/shard-abi.md for the formats.
;;
;; Input (56 bytes, little-endian):
;;   0 u32 image width      4 u32 image height
;;   8 u32 tile x          12 u32 tile y        (top-left pixel of the tile)
;;  16 u32 tile width      20 u32 tile height
;;  24 u32 max_iter        28 u32 reserved, must be 0
;;  32 f64 centre re       40 f64 centre im     48 f64 scale (units per pixel)
;; Output: tile width * tile height bytes, row-major; 0 = inside the set, otherwise
;; 1 + (escape iteration mod 255).
;;
;; Pixel (px, py) is c = (centre_re + (px - width*0.5) * scale,
;;                        centre_im + (py - height*0.5) * scale),
;; iterated z <- z^2 + c from z = 0 as: stop if i >= max_iter; zr2 = zr*zr; zi2 = zi*zi;
;; escape if zr2 + zi2 > 4; zi = (zr + zr) * zi + ci; zr = (zr2 - zi2) + cr; i += 1.
;; src/kernels/mod.rs has the bit-identical native reference; change both together.
(module
  (memory (export "memory") 1)
  ;; Bump allocator; nothing is ever freed (a shard is one short-lived call).
  (global $heap (mut i32) (i32.const 16))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i64) (local $have i64)
    ;; 8-byte aligned start
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $ptr)) (i64.extend_i32_u (local.get $len))))
    (if (i64.gt_u (local.get $end) (i64.const 0xffffffff)) (then unreachable))
    (local.set $have (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.wrap_i64
                (i64.shr_u (i64.add (i64.sub (local.get $end) (local.get $have)) (i64.const 0xffff))
                           (i64.const 16))))
              (i32.const -1))
          (then unreachable))))
    (global.set $heap (i32.wrap_i64 (local.get $end)))
    (local.get $ptr))

  (func (export "run") (param $in i32) (param $len i32) (result i64)
    (local $width i32) (local $height i32) (local $tx i32) (local $ty i32)
    (local $tw i32) (local $th i32) (local $max i32)
    (local $cre f64) (local $cim f64) (local $scale f64)
    (local $out i32) (local $p i32) (local $px i32) (local $py i32) (local $xend i32) (local $yend i32)
    (local $cr f64) (local $ci f64) (local $zr f64) (local $zi f64) (local $zr2 f64) (local $zi2 f64)
    (local $i i32) (local $halfw f64) (local $halfh f64)
    (if (i32.ne (local.get $len) (i32.const 56)) (then unreachable))
    (local.set $width (i32.load offset=0 (local.get $in)))
    (local.set $height (i32.load offset=4 (local.get $in)))
    (local.set $tx (i32.load offset=8 (local.get $in)))
    (local.set $ty (i32.load offset=12 (local.get $in)))
    (local.set $tw (i32.load offset=16 (local.get $in)))
    (local.set $th (i32.load offset=20 (local.get $in)))
    (local.set $max (i32.load offset=24 (local.get $in)))
    (if (i32.load offset=28 (local.get $in)) (then unreachable))
    (local.set $cre (f64.load offset=32 (local.get $in)))
    (local.set $cim (f64.load offset=40 (local.get $in)))
    (local.set $scale (f64.load offset=48 (local.get $in)))
    ;; The tile must be non-empty, inside the image, and at most 2^24 pixels.
    (if (i32.or (i32.eqz (local.get $tw)) (i32.eqz (local.get $th))) (then unreachable))
    (if (i64.gt_u (i64.add (i64.extend_i32_u (local.get $tx)) (i64.extend_i32_u (local.get $tw)))
                  (i64.extend_i32_u (local.get $width))) (then unreachable))
    (if (i64.gt_u (i64.add (i64.extend_i32_u (local.get $ty)) (i64.extend_i32_u (local.get $th)))
                  (i64.extend_i32_u (local.get $height))) (then unreachable))
    (if (i64.gt_u (i64.mul (i64.extend_i32_u (local.get $tw)) (i64.extend_i32_u (local.get $th)))
                  (i64.const 0x1000000)) (then unreachable))

    (local.set $out (call $alloc (i32.mul (local.get $tw) (local.get $th))))
    (local.set $p (local.get $out))
    (local.set $halfw (f64.mul (f64.convert_i32_u (local.get $width)) (f64.const 0.5)))
    (local.set $halfh (f64.mul (f64.convert_i32_u (local.get $height)) (f64.const 0.5)))
    (local.set $xend (i32.add (local.get $tx) (local.get $tw)))
    (local.set $yend (i32.add (local.get $ty) (local.get $th)))
    (local.set $py (local.get $ty))
    (loop $rows
      (local.set $ci (f64.add (local.get $cim)
        (f64.mul (f64.sub (f64.convert_i32_u (local.get $py)) (local.get $halfh)) (local.get $scale))))
      (local.set $px (local.get $tx))
      (loop $cols
        (local.set $cr (f64.add (local.get $cre)
          (f64.mul (f64.sub (f64.convert_i32_u (local.get $px)) (local.get $halfw)) (local.get $scale))))
        (local.set $zr (f64.const 0))
        (local.set $zi (f64.const 0))
        (local.set $i (i32.const 0))
        ;; The iteration step is written out eight times per loop trip: every step still
        ;; checks both exits, so the result is exactly the one-step loop's, but the
        ;; executor's fuel and interruption checks (made at each loop header) run an eighth
        ;; as often, which is most of the sandbox's overhead on this loop.
        (block $done
          (loop $iter
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $done (i32.ge_u (local.get $i) (local.get $max)))
            (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
            (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
            (br_if $done (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
            (local.set $zi (f64.add (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                                    (local.get $ci)))
            (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $iter)))
        (i32.store8 (local.get $p)
          (select
            (i32.const 0)
            (i32.add (i32.rem_u (local.get $i) (i32.const 255)) (i32.const 1))
            (i32.ge_u (local.get $i) (local.get $max))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (local.set $px (i32.add (local.get $px) (i32.const 1)))
        (br_if $cols (i32.lt_u (local.get $px) (local.get $xend))))
      (local.set $py (i32.add (local.get $py) (i32.const 1)))
      (br_if $rows (i32.lt_u (local.get $py) (local.get $yend))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.mul (local.get $tw) (local.get $th))))))
