;; passthrough: an edgehub plugin written directly in WebAssembly text, to show
;; that ABI v1 needs no SDK. It copies every input record (key, value,
;; headers, timestamp) to the stream named by its "output" config key.
;;
;; Build: wat2wasm passthrough.wat -o passthrough.wasm
;;
;; Memory layout:
;;   [64, 1024)   output stream name (set by eh_init)
;;   [1024, ...)  the one buffer eh_alloc hands out, grown on demand
(module
  (import "edgehub_v1" "emit" (func $emit (param i32 i32 i32 i32 i32)))
  (import "edgehub_v1" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 0) "passthrough: config needs output=STREAM")

  (global $out_len (mut i32) (i32.const 0))

  ;; eh_alloc(size) -> ptr: one reusable buffer at 1024; 0 if memory cannot grow.
  (func (export "eh_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.const 1024) (local.get $n)))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.sub
                  (i32.shr_u (i32.add (local.get $need) (i32.const 65535)) (i32.const 16))
                  (memory.size)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 1024))

  ;; eh_init(cfg, len) -> status: u32 count, then (u32 klen, key, u32 vlen, value)*.
  ;; Keeps the value of key "output" at address 64.
  (func (export "eh_init") (param $p i32) (param $n i32) (result i32)
    (local $count i32) (local $q i32) (local $klen i32) (local $k i32) (local $vlen i32) (local $v i32)
    (if (i32.ge_u (local.get $n) (i32.const 4))
      (then
        (local.set $count (i32.load (local.get $p)))
        (local.set $q (i32.add (local.get $p) (i32.const 4)))
        (block $done
          (loop $next
            (br_if $done (i32.eqz (local.get $count)))
            (local.set $klen (i32.load (local.get $q)))
            (local.set $k (i32.add (local.get $q) (i32.const 4)))
            (local.set $vlen (i32.load (i32.add (local.get $k) (local.get $klen))))
            (local.set $v (i32.add (i32.add (local.get $k) (local.get $klen)) (i32.const 4)))
            ;; key == "output": "outp" and "ut" as little-endian loads
            (if (i32.and
                  (i32.eq (local.get $klen) (i32.const 6))
                  (i32.and
                    (i32.eq (i32.load (local.get $k)) (i32.const 0x7074756f))
                    (i32.eq (i32.load16_u offset=4 (local.get $k)) (i32.const 0x7475))))
              (then
                (if (i32.le_u (local.get $vlen) (i32.const 960))
                  (then
                    (memory.copy (i32.const 64) (local.get $v) (local.get $vlen))
                    (global.set $out_len (local.get $vlen))))))
            (local.set $q (i32.add (local.get $v) (local.get $vlen)))
            (local.set $count (i32.sub (local.get $count) (i32.const 1)))
            (br $next)))))
    (if (i32.eqz (global.get $out_len))
      (then
        (call $log (i32.const 3) (i32.const 0) (i32.const 39))
        (return (i32.const 1))))
    (i32.const 0))

  ;; eh_on_batch(batch, len) -> status. A record's bytes after record_len,
  ;; seq and ingest_time are exactly an output record, so each emit passes a
  ;; slice of the input without copying.
  (func (export "eh_on_batch") (param $p i32) (param $n i32) (result i32)
    (local $count i32) (local $i i32) (local $rec i32) (local $len i32)
    (local.set $count (i32.load offset=4 (local.get $p)))
    (local.set $rec (i32.add (local.get $p) (i32.load (local.get $p))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $len (i32.load (local.get $rec)))
        (call $emit
          (i32.const 64) (global.get $out_len)
          (i32.add (local.get $rec) (i32.const 20))
          (i32.sub (local.get $len) (i32.const 16))
          (local.get $i))
        (local.set $rec (i32.add (i32.add (local.get $rec) (i32.const 4)) (local.get $len)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
)
