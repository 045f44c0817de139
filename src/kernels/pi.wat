;; Monte Carlo estimate of pi, hearth core ABI. See docs/shard-abi.md for the formats.
;;
;; Input (16 bytes, little-endian): u64 seed, u64 samples.
;; Output (16 bytes, little-endian): u64 hits, u64 samples.
;;
;; Integer-only, so bit-exact everywhere: a splitmix64 generator starting at `seed`;
;; each sample takes two outputs, x = next() >> 33 and y = next() >> 33 (31-bit
;; coordinates), and is a hit if x*x + y*y < 2^62 (inside the quarter circle of radius 2^31).
;; pi ~= 4 * hits / samples. src/kernels/mod.rs has the native reference.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 16))

  ;; The input and output are tiny (16 bytes each), so one page always suffices.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (if (i32.gt_u (local.get $len) (i32.const 1024)) (then unreachable))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7))
                               (i32.const -8)))
    (local.get $ptr))

  (func (export "run") (param $in i32) (param $len i32) (result i64)
    (local $state i64) (local $n i64) (local $hits i64) (local $z i64) (local $x i64)
    (local $out i32)
    (if (i32.ne (local.get $len) (i32.const 16)) (then unreachable))
    (local.set $state (i64.load offset=0 (local.get $in)))
    (local.set $n (i64.load offset=8 (local.get $in)))
    ;; Four samples per loop trip while at least four remain, then one at a time: the
    ;; executor's fuel and interruption checks sit at loop headers, so fewer trips cost less.
    ;; The samples and their order are exactly those of a one-sample loop.
    (block $quads_done
      (loop $quad
        (br_if $quads_done (i64.lt_u (local.get $n) (i64.const 4)))
        ;; x = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $x (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; y = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; hits += (x*x + y*y < 2^62)
        (local.set $hits (i64.add (local.get $hits)
          (i64.extend_i32_u
            (i64.lt_u (i64.add (i64.mul (local.get $x) (local.get $x))
                               (i64.mul (local.get $z) (local.get $z)))
                      (i64.const 0x4000000000000000)))))
        ;; x = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $x (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; y = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; hits += (x*x + y*y < 2^62)
        (local.set $hits (i64.add (local.get $hits)
          (i64.extend_i32_u
            (i64.lt_u (i64.add (i64.mul (local.get $x) (local.get $x))
                               (i64.mul (local.get $z) (local.get $z)))
                      (i64.const 0x4000000000000000)))))
        ;; x = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $x (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; y = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; hits += (x*x + y*y < 2^62)
        (local.set $hits (i64.add (local.get $hits)
          (i64.extend_i32_u
            (i64.lt_u (i64.add (i64.mul (local.get $x) (local.get $x))
                               (i64.mul (local.get $z) (local.get $z)))
                      (i64.const 0x4000000000000000)))))
        ;; x = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $x (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; y = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; hits += (x*x + y*y < 2^62)
        (local.set $hits (i64.add (local.get $hits)
          (i64.extend_i32_u
            (i64.lt_u (i64.add (i64.mul (local.get $x) (local.get $x))
                               (i64.mul (local.get $z) (local.get $z)))
                      (i64.const 0x4000000000000000)))))
        (local.set $n (i64.sub (local.get $n) (i64.const 4)))
        (br $quad)))
    (block $rest_done
      (loop $rest
        (br_if $rest_done (i64.eqz (local.get $n)))
        ;; x = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $x (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; y = splitmix64() >> 33
        (local.set $state (i64.add (local.get $state) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (local.get $state))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.shr_u (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31)))
                                 (i64.const 33)))
        ;; hits += (x*x + y*y < 2^62)
        (local.set $hits (i64.add (local.get $hits)
          (i64.extend_i32_u
            (i64.lt_u (i64.add (i64.mul (local.get $x) (local.get $x))
                               (i64.mul (local.get $z) (local.get $z)))
                      (i64.const 0x4000000000000000)))))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $rest)))
    (local.set $out (call $alloc (i32.const 16)))
    (i64.store offset=0 (local.get $out) (local.get $hits))
    (i64.store offset=8 (local.get $out) (i64.load offset=8 (local.get $in)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32)) (i64.const 16))))
