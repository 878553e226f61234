package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/record"
)

func valueRecords(vals ...string) []record.Record {
	recs := make([]record.Record, len(vals))
	for i, v := range vals {
		recs[i] = record.Record{Value: []byte(v)}
	}
	return recs
}

// TestProducerSequenceConflict: a batch resent under a remembered producer
// sequence with other records is refused as a conflict and stores nothing
// (it used to be answered duplicate_too_old, "treat as stored", while the
// extra record was lost); the exact resend is still a duplicate.
func TestProducerSequenceConflict(t *testing.T) {
	s := openStore(t, testConfig(t, t.TempDir()))
	st := newStream(t, s, StreamConfig{Name: "idem", Shards: 1})
	ctx := context.Background()
	send := func(seq uint64, recs []record.Record) (Result, error) {
		return st.Append(ctx, Batch{Shard: 0, Records: recs, ProducerID: 9, ProducerSeq: seq})
	}
	// Batches of 100 records at producer sequences 400, 500, ..., 1900, then
	// one record at 2000: the window holds the 16 batches from 500.
	for seq := uint64(400); seq < 2000; seq += 100 {
		recs := make([]record.Record, 100)
		for i := range recs {
			recs[i] = record.Record{Value: []byte("f")}
		}
		if _, err := send(seq, recs); err != nil {
			t.Fatal(err)
		}
	}
	last, err := send(2000, valueRecords("last"))
	if err != nil {
		t.Fatal(err)
	}
	before := len(readAll(t, st, 0))

	tests := []struct {
		name string
		seq  uint64
		recs []record.Record
		want error // nil: a duplicate with the original positions
	}{
		{"last batch plus one record", 2000, valueRecords("last", "extra"), ErrSequenceConflict},
		{"same count, other content", 2000, valueRecords("LAST"), ErrSequenceConflict},
		{"same value, other time", 2000, []record.Record{{Value: []byte("last"), Time: 5}}, ErrSequenceConflict},
		{"empty key added", 2000, []record.Record{{Key: []byte{}, Value: []byte("last")}}, ErrSequenceConflict},
		{"header added", 2000, []record.Record{{Value: []byte("last"), Headers: []record.Header{{Key: "h"}}}}, ErrSequenceConflict},
		{"inside a stored batch", 1950, valueRecords("mid"), ErrSequenceConflict},
		{"exact resend", 2000, valueRecords("last"), nil},
		{"older than the window", 400, valueRecords("a"), ErrDuplicateTooOld},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := send(tc.seq, tc.recs)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v %+v, want %v", err, res, tc.want)
				}
				return
			}
			if err != nil || !res.Duplicate || res.Positions[0] != last.Positions[0] {
				t.Fatalf("got %+v %v, want a duplicate at %v", res, err, last.Positions)
			}
		})
	}
	if after := len(readAll(t, st, 0)); after != before {
		t.Fatalf("refused resends stored %d records", after-before)
	}
	// The too-old message describes the window, not the sequence sent.
	_, err = send(400, valueRecords("a"))
	if msg := err.Error(); !strings.Contains(msg, "sequence 400 is older than the last 16 batches (they start at sequence 500)") {
		t.Errorf("too-old message: %s", msg)
	}
	// The producer continues after the refusals.
	if r, err := send(2001, valueRecords("next")); err != nil || r.Duplicate || r.Positions[0].Seq != last.Positions[0].Seq+1 {
		t.Fatalf("next batch: %+v %v", r, err)
	}
}

// setProducerEntry writes a raw producer-table value into a closed stream
// file.
func setProducerEntry(tb testing.TB, path string, id uint64, shard int, v []byte) {
	tb.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProducers).Put(producerKey(id, shard), v)
	}); err != nil {
		tb.Fatal(err)
	}
}

// TestProducerStateVersion1: entries written before digests (no content
// digest) are still read; a resend is then judged by its count alone.
func TestProducerStateVersion1(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "old", Shards: 1})
	orig, err := st.Append(context.Background(), Batch{Records: valueRecords("a", "b"), ProducerID: 5, ProducerSeq: 10})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Rewrite the entry as version 1: last used ‖ (seq, count, first).
	v1 := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
	v1 = binary.BigEndian.AppendUint64(v1, 10)
	v1 = binary.BigEndian.AppendUint32(v1, 2)
	v1 = binary.BigEndian.AppendUint64(v1, orig.Positions[0].Seq)
	setProducerEntry(t, filepath.Join(dir, "streams", "old.db"), 5, 0, v1)

	s = openStore(t, cfg)
	st, _ = s.Stream("old")
	send := func(recs []record.Record) (Result, error) {
		return st.Append(context.Background(), Batch{Records: recs, ProducerID: 5, ProducerSeq: 10})
	}
	if r, err := send(valueRecords("x", "y")); err != nil || !r.Duplicate || r.Positions[1] != orig.Positions[1] {
		t.Fatalf("same count, unknown digest: %+v %v", r, err)
	}
	if _, err := send(valueRecords("a", "b", "c")); !errors.Is(err, ErrSequenceConflict) {
		t.Fatalf("other count: %v", err)
	}
	// The next batch rewrites the entry as version 2 and keeps the window.
	if _, err := st.Append(context.Background(), Batch{Records: valueRecords("c"), ProducerID: 5, ProducerSeq: 12}); err != nil {
		t.Fatal(err)
	}
	if r, err := send(valueRecords("a", "b")); err != nil || !r.Duplicate {
		t.Fatalf("resend after upgrade: %+v %v", r, err)
	}
}

// TestDamagedProducerState: a damaged producer-table value refuses that
// producer's appends as corrupt, naming the file, instead of being read as
// "no state" (which silently dropped idempotence); other producers go on,
// and expiry keeps the entry.
func TestDamagedProducerState(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	clock := &testClock{}
	clock.ns.Store(time.Now().UnixNano())
	cfg.Now = clock.Now
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStream(t, s, StreamConfig{Name: "dmg", Shards: 1})
	batch := Batch{Records: valueRecords("once"), ProducerID: 3, ProducerSeq: 1}
	if _, err := st.Append(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, "streams", "dmg.db")
	setProducerEntry(t, path, 3, 0, []byte{0xF2, 1, 2, 3})

	s = openStore(t, cfg)
	st, _ = s.Stream("dmg")
	_, err = st.Append(context.Background(), batch)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != path || !strings.Contains(err.Error(), "producer 0000000000000003") {
		t.Fatalf("retry with damaged state: %v", err)
	}
	if n := len(readAll(t, st, 0)); n != 1 {
		t.Fatalf("%d records stored, want 1", n)
	}
	if _, err := st.Append(context.Background(), Batch{Records: valueRecords("other"), ProducerID: 4, ProducerSeq: 1}); err != nil {
		t.Fatalf("another producer: %v", err)
	}
	clock.Advance(cfg.ProducerExpiry + time.Hour)
	if err := st.Enforce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(context.Background(), batch); !errors.As(err, &ce) {
		t.Fatalf("after expiry: %v (the damaged entry must stay)", err)
	}
}

// TestDamagedEntriesAreReported: every kind of damaged table entry is a
// *CorruptError naming the file, at open or at the read that meets it.
func TestDamagedEntriesAreReported(t *testing.T) {
	put := func(bucket, k, v []byte) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, v) }
	}
	okKey := OriginKey{Hub: "peer", Shard: 0}.bytes()
	tests := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		atRead bool // found by ReadOrigin, not at open
	}{
		{"shard meta short", put(bucketMeta, shardKey(0), []byte{1, 2, 3}), false},
		{"shard meta next 0", put(bucketMeta, shardKey(0), make([]byte, 32)), false},
		{"format", put(bucketMeta, keyFormat, []byte{9}), false},
		{"config", put(bucketMeta, keyConfig, []byte("{")), false},
		{"chunk key", put(chunkBucket(0), []byte("abc"), []byte("x")), false},
		{"watermark value", put(bucketWatermarks, okKey, []byte{1}), false},
		{"watermark key trailing bytes", put(bucketWatermarks, append(okKey, 7), make([]byte, 8)), false},
		{"watermark key short", put(bucketWatermarks, []byte{9, 'a'}, make([]byte, 8)), false},
		{"no producer bucket", func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketProducers) }, false},
		{"incarnation", put(bucketMeta, keyIncarnation, []byte{1, 2, 3}), false},
		{"origin incarnation without hub", put(bucketMeta, originIncPrefix, make([]byte, IncarnationLen)), false},
		{"origin incarnation value", put(bucketMeta, append(bytes.Clone(originIncPrefix), "peer"...), []byte{1}), false},
		{"origin index value", put(bucketOrigins, binary.BigEndian.AppendUint64(okKey, 3), []byte{1, 2}), true},
		{"origin index key", put(bucketOrigins, append(binary.BigEndian.AppendUint64(okKey, 3), 0), make([]byte, 12)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			st := newStream(t, s, StreamConfig{Name: "victim", Shards: 1})
			appendValues(t, st, 0, "precious")
			s.Close()
			path := filepath.Join(dir, "streams", "victim.db")
			db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.damage); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = Open(cfg)
			if !tc.atRead {
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.File != path {
					t.Fatalf("open: %v, want a CorruptError naming %s", err, path)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			st, _ = s.Stream("victim")
			_, err = st.ReadOrigin(OriginKey{Hub: "peer"}, 0, 10)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != path {
				t.Fatalf("read origin: %v, want a CorruptError naming %s", err, path)
			}
		})
	}
}
