;; state: a test plugin for keyed state, whose behaviour each record chooses
;; with the first byte of its value. It emits nothing.
;;   'R' read the record key's state, then set it to the record's value
;;       (a read-modify-write per record: the state benchmarks)
;;   'L' read the record key's state, log "state read", then loop forever
;;       (a call that runs until its deadline after reading state)
;;   'G' set a 10 KiB value under the record's seq (state that grows)
;; Anything else is ignored.
;;
;; Build: wat2wasm state.wat -o state.wasm
;;
;; Memory: [0, 16) the log line, [256, 768) the state_get buffer,
;; [1024, ...) the one buffer eh_alloc hands out.
(module
  (import "edgehub_v1" "log" (func $log (param i32 i32 i32)))
  (import "edgehub_v1" "state_get" (func $state_get (param i32 i32 i32 i32) (result i32)))
  (import "edgehub_v1" "state_set" (func $state_set (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "state read")

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

  (func (export "eh_on_batch") (param $p i32) (param $n i32) (result i32)
    (local $count i32) (local $i i32) (local $rec i32) (local $len i32)
    (local $klen i32) (local $vlen i32) (local $op i32)
    (local.set $count (i32.load offset=4 (local.get $p)))
    (local.set $rec (i32.add (local.get $p) (i32.load (local.get $p))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $len (i32.load (local.get $rec)))
        ;; record: len(4) seq(8) ingest(8) time(8) klen(4) vlen(4) nh(4) key value
        (local.set $klen (i32.load offset=28 (local.get $rec)))
        (local.set $vlen (i32.load offset=32 (local.get $rec)))
        (if (i32.lt_s (local.get $klen) (i32.const 0)) (then (local.set $klen (i32.const 0))))
        (if (i32.lt_s (local.get $vlen) (i32.const 0)) (then (local.set $vlen (i32.const 0))))
        (local.set $op (i32.const 0))
        (if (i32.gt_s (local.get $vlen) (i32.const 0))
          (then (local.set $op (i32.load8_u offset=40 (i32.add (local.get $rec) (local.get $klen))))))
        ;; 'R'
        (if (i32.and (i32.eq (local.get $op) (i32.const 82)) (i32.gt_s (local.get $klen) (i32.const 0)))
          (then
            (drop (call $state_get (i32.add (local.get $rec) (i32.const 40)) (local.get $klen) (i32.const 256) (i32.const 512)))
            (call $state_set (i32.add (local.get $rec) (i32.const 40)) (local.get $klen)
              (i32.add (i32.add (local.get $rec) (i32.const 40)) (local.get $klen)) (local.get $vlen))))
        ;; 'L'
        (if (i32.and (i32.eq (local.get $op) (i32.const 76)) (i32.gt_s (local.get $klen) (i32.const 0)))
          (then
            (drop (call $state_get (i32.add (local.get $rec) (i32.const 40)) (local.get $klen) (i32.const 256) (i32.const 512)))
            (call $log (i32.const 1) (i32.const 0) (i32.const 10))
            (loop $forever (br $forever))))
        ;; 'G'
        (if (i32.eq (local.get $op) (i32.const 71))
          (then
            (call $state_set (i32.add (local.get $rec) (i32.const 4)) (i32.const 8) (i32.const 0) (i32.const 10240))))
        (local.set $rec (i32.add (i32.add (local.get $rec) (i32.const 4)) (local.get $len)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
)
