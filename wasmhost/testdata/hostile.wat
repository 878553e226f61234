;; hostile: a test plugin whose behaviour each record chooses with the first
;; byte of its value. Anything else is passed through to stream "out".
;;   'L' loop forever            'M' grow memory without bound, then trap
;;   'T' trap (unreachable)      'U' emit to the undeclared stream "secret"
;;   'B' emit a malformed record 'E' return a failure status after logging
;;   'O' emit for an input index past the batch
;;   'S' set 32 KiB state values under new keys forever (per-call state cap)
;;   'G' set one 10 KiB state value under the record's seq, then pass through
;;       (state that grows by 10 KiB a record: the state quota)
;;   'H' call the host (now) forever       'W' grow memory to the cap, succeed
;;   'X' emit the record again and again (until an output limit stops it)
;;
;; Build: wat2wasm hostile.wat -o hostile.wasm
(module
  (import "edgehub_v1" "emit" (func $emit (param i32 i32 i32 i32 i32)))
  (import "edgehub_v1" "log" (func $log (param i32 i32 i32)))
  (import "edgehub_v1" "state_set" (func $state_set (param i32 i32 i32 i32)))
  (import "edgehub_v1" "now" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "out")
  (data (i32.const 8) "secret")
  (data (i32.const 16) "hostile: asked to fail")

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
    (local $klen i32) (local $vlen i32) (local $op i32) (local $j i32)
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
        (local.set $op (i32.const 0))
        (if (i32.gt_s (local.get $vlen) (i32.const 0))
          (then (local.set $op (i32.load8_u offset=40 (i32.add (local.get $rec) (local.get $klen))))))
        ;; 'L'
        (if (i32.eq (local.get $op) (i32.const 76))
          (then (loop $forever (br $forever))))
        ;; 'M'
        (if (i32.eq (local.get $op) (i32.const 77))
          (then
            (loop $bomb
              (br_if $bomb (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            unreachable))
        ;; 'T'
        (if (i32.eq (local.get $op) (i32.const 84))
          (then unreachable))
        ;; 'S': key = i32 counter at 48, value = memory [0, 32768)
        (if (i32.eq (local.get $op) (i32.const 83))
          (then
            (loop $spam
              (i32.store (i32.const 48) (local.get $j))
              (call $state_set (i32.const 48) (i32.const 4) (i32.const 0) (i32.const 32768))
              (local.set $j (i32.add (local.get $j) (i32.const 1)))
              (br $spam))))
        ;; 'G': key = the record's seq (8 bytes), value = memory [0, 10240)
        (if (i32.eq (local.get $op) (i32.const 71))
          (then
            (call $state_set (i32.add (local.get $rec) (i32.const 4)) (i32.const 8) (i32.const 0) (i32.const 10240))))
        ;; 'H'
        (if (i32.eq (local.get $op) (i32.const 72))
          (then (loop $calls (drop (call $now)) (br $calls))))
        ;; 'W': grow one page at a time until memory.grow fails, then go on
        (if (i32.eq (local.get $op) (i32.const 87))
          (then
            (loop $grow
              (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))))
        ;; 'X'
        (if (i32.eq (local.get $op) (i32.const 88))
          (then
            (loop $again
              (call $emit (i32.const 0) (i32.const 3)
                (i32.add (local.get $rec) (i32.const 20)) (i32.sub (local.get $len) (i32.const 16))
                (local.get $i))
              (br $again))))
        ;; 'E'
        (if (i32.eq (local.get $op) (i32.const 69))
          (then
            (call $log (i32.const 3) (i32.const 16) (i32.const 22))
            (return (i32.const 7))))
        ;; 'U'
        (if (i32.eq (local.get $op) (i32.const 85))
          (then
            (call $emit (i32.const 8) (i32.const 6)
              (i32.add (local.get $rec) (i32.const 20)) (i32.sub (local.get $len) (i32.const 16))
              (local.get $i))))
        ;; 'B': claims a key longer than the record
        (if (i32.eq (local.get $op) (i32.const 66))
          (then
            (call $emit (i32.const 0) (i32.const 3)
              (i32.add (local.get $rec) (i32.const 20)) (i32.const 20)
              (local.get $i))))
        ;; 'O'
        (if (i32.eq (local.get $op) (i32.const 79))
          (then
            (call $emit (i32.const 0) (i32.const 3)
              (i32.add (local.get $rec) (i32.const 20)) (i32.sub (local.get $len) (i32.const 16))
              (local.get $count))))
        (call $emit (i32.const 0) (i32.const 3)
          (i32.add (local.get $rec) (i32.const 20))
          (i32.sub (local.get $len) (i32.const 16))
          (local.get $i))
        (local.set $rec (i32.add (i32.add (local.get $rec) (i32.const 4)) (local.get $len)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
)
