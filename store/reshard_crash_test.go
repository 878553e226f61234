package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/record"
)

// The reshard crash test runs this test binary as a child that appends
// keyed records from 16 writers (half routed by the store, half idempotent
// with shards chosen by the layout) while another goroutine splits, merges
// and reshards, printing "layout v" after each reshard returns and "ack
// key shard seq" after each acknowledged record. The parent SIGKILLs it at
// random points and checks the reopened file.
const reshardChildEnv = "EDGEHUB_STORE_RESHARD_CRASH_CHILD"

func reshardChild(dir string) {
	fail := func(what string, err error) {
		fmt.Fprintln(os.Stderr, "reshard child", what+":", err)
		os.Exit(2)
	}
	cfg := DefaultConfig(dir)
	cfg.Logger = quietLogger()
	s, err := Open(cfg)
	if err != nil {
		fail("open", err)
	}
	ctx := context.Background()
	st, err := s.CreateStream(ctx, StreamConfig{Name: "rc", Shards: 2})
	if err != nil {
		fail("create", err)
	}
	// Resume each writer's counter after what a previous life stored.
	next := map[string]int{}
	for sh := 0; sh < st.Shards(); sh++ {
		for from := uint64(0); ; {
			recs, err := st.Read(sh, from, ReadOptions{})
			if err != nil {
				fail("read", err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				w, n, _ := strings.Cut(string(r.Key), "-")
				var v int
				fmt.Sscan(n, &v)
				next[w] = max(next[w], v+1)
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	life := uint64(time.Now().UnixNano())
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	print := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(out, format, a...)
		out.Flush()
		mu.Unlock()
	}
	if _, ok := os.LookupEnv("EDGEHUB_CHAOS_RESHARD"); ok {
		// The chaos build kills the process inside this split.
		print("layout %d\n", st.Layout().Version)
		l, err := st.Split(ctx, st.Layout().Open()[0].ID, 0)
		if err != nil {
			fail("split", err)
		}
		print("layout %d\n", l.Version)
		select {}
	}
	for w := 0; w < 16; w++ {
		go func() {
			name := fmt.Sprintf("w%02d", w)
			n := next[name]
			pseq := map[uint32]uint64{}
			for {
				recs := make([]record.Record, 1+w%3)
				for i := range recs {
					recs[i] = record.Record{Key: fmt.Appendf(nil, "%s-%d", name, n+i)}
				}
				b := Batch{Shard: -1, Records: recs}
				if w%2 == 1 {
					// Idempotent: every record of the batch must route to
					// the one shard, so one record per batch.
					b.Records = recs[:1]
					shard := st.Layout().ShardFor(record.KeyHash(recs[0].Key))
					b.Shard, b.ProducerID, b.ProducerSeq = int(shard), life+uint64(w), pseq[shard]
				}
				res, err := st.Append(ctx, b)
				if errors.Is(err, ErrShardClosed) {
					continue // re-route by the new layout: nothing was stored
				}
				if err != nil {
					fail("append", err)
				}
				if b.ProducerID != 0 {
					pseq[uint32(b.Shard)]++
				}
				for i, p := range res.Positions {
					print("ack %s %d %d\n", b.Records[i].Key, p.Shard, p.Seq)
				}
				n += len(b.Records)
			}
		}()
	}
	rng := rand.New(rand.NewPCG(life, 1))
	for {
		l := st.Layout()
		open := l.Open()
		var err error
		switch op := rng.IntN(3); {
		case op == 0:
			_, err = st.Split(ctx, open[rng.IntN(len(open))].ID, 0)
		case op == 1 && len(open) > 1:
			i := rng.IntN(len(open) - 1)
			_, err = st.Merge(ctx, open[i].ID, open[i+1].ID)
		default:
			_, err = st.Reshard(ctx, 1+rng.IntN(6))
		}
		if errors.Is(err, ErrTooManyShards) || errors.Is(err, ErrInvalidShard) {
			err = nil // the id cap, or a shard too small to split: carry on
		}
		if err != nil {
			fail("reshard", err)
		}
		print("layout %d\n", st.Layout().Version)
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
	}
}

type reshardAck struct {
	key   string
	shard int
	seq   uint64
}

// runReshardChild runs one life of the child until it has printed kill
// lines, or until it dies by itself (the chaos hook), and returns what it
// printed.
func runReshardChild(t *testing.T, dir string, kill int, env ...string) (acks []reshardAck, layouts []uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), reshardChildEnv+"="+dir), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for seen := 0; sc.Scan(); {
		var a reshardAck
		var v uint64
		if _, err := fmt.Sscanf(sc.Text(), "ack %s %d %d", &a.key, &a.shard, &a.seq); err == nil {
			acks = append(acks, a)
		} else if _, err := fmt.Sscanf(sc.Text(), "layout %d", &v); err == nil {
			layouts = append(layouts, v)
		} else {
			continue // the kill may cut the last line short
		}
		if seen++; seen == kill {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v", err)
	}
	return acks, layouts
}

// checkReshardFile checks the reopened stream against what the children
// printed: the layout is the last version printed or one more, every
// acknowledged record is at its position, no record is stored twice, each
// shard's sequences are dense, every record sits in a shard owning its hash
// (ids keep their ranges forever, so the final layout is the history), and
// no closed shard holds a record above its end.
func checkReshardFile(st *Stream, acks []reshardAck, lastPrinted uint64) []error {
	var errs []error
	l := st.Layout()
	if l.Version < lastPrinted || l.Version > lastPrinted+1 {
		errs = append(errs, fmt.Errorf("layout version %d after the last printed %d", l.Version, lastPrinted))
	}
	if err := l.check(); err != nil {
		errs = append(errs, err)
	}
	type pos struct {
		shard int
		seq   uint64
	}
	at := map[pos]string{}
	seen := map[string]bool{}
	for sh := 0; sh < st.Shards(); sh++ {
		ls := l.Shards[sh]
		want := uint64(1)
		for from := uint64(0); ; {
			recs, err := st.Read(sh, from, ReadOptions{})
			if err != nil {
				return append(errs, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.Seq != want {
					errs = append(errs, fmt.Errorf("shard %d: sequence %d where %d was due", sh, r.Seq, want))
				}
				want = r.Seq + 1
				if seen[string(r.Key)] {
					errs = append(errs, fmt.Errorf("record %s stored twice", r.Key))
				}
				seen[string(r.Key)] = true
				if h := record.KeyHash(r.Key); h < ls.HashStart || h > ls.HashEnd {
					errs = append(errs, fmt.Errorf("record %s (hash %016x) in shard %d [%016x, %016x]", r.Key, h, sh, ls.HashStart, ls.HashEnd))
				}
				if ls.State != ShardOpen && r.Seq > ls.End {
					errs = append(errs, fmt.Errorf("closed shard %d holds %d above its end %d", sh, r.Seq, ls.End))
				}
				at[pos{sh, r.Seq}] = string(r.Key)
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	for _, a := range acks {
		if got := at[pos{a.shard, a.seq}]; got != a.key {
			errs = append(errs, fmt.Errorf("acknowledged %s at %d:%d, found %q", a.key, a.shard, a.seq, got))
		}
	}
	return errs
}

// TestReshardCrash: SIGKILL while appends and reshards run leaves the old
// layout or the new one, never half of one, and every acknowledged record
// where it was acknowledged (section "Kill -9 plan" of docs/resharding.md).
// The negative control shows the checker reporting damage it is shown.
func TestReshardCrash(t *testing.T) {
	kills := 50
	if testing.Short() {
		kills = 5
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	var acks []reshardAck
	var last uint64
	layouts := 0
	for i := 0; i < kills; i++ {
		a, ls := runReshardChild(t, dir, 300+rng.IntN(3000))
		acks = append(acks, a...)
		if len(ls) > 0 {
			last = ls[len(ls)-1]
		}
		layouts += len(ls)
		// Reopen and check after every kill: a later life must not hide
		// damage done by this one.
		s := openStore(t, testConfig(t, dir))
		st, err := s.Stream("rc")
		if err != nil {
			t.Fatalf("kill %d: %v", i, err)
		}
		if errs := checkReshardFile(st, acks, last); len(errs) > 0 {
			t.Fatalf("kill %d: %d problems, first: %v", i, len(errs), errors.Join(errs[:min(5, len(errs))]...))
		}
		last = st.Layout().Version // the next life starts from what is on disk
		s.Close()
	}
	if len(acks) < kills*100 || layouts < kills {
		t.Fatalf("only %d acknowledgements and %d reshards seen over %d kills", len(acks), layouts, kills)
	}
	t.Logf("%d kills: %d acknowledged records and %d reshards verified; final layout version %d", kills, len(acks), layouts, last)

	// Negative control: the same checker on the same file, shown a moved
	// acknowledgement, a layout version two behind, and a record placed
	// outside its shard's range, must report each.
	s := openStore(t, testConfig(t, dir))
	st, err := s.Stream("rc")
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]reshardAck(nil), acks[len(acks)-1])
	bad[0].seq++
	if errs := checkReshardFile(st, bad, st.Layout().Version+2); len(errs) < 2 {
		t.Fatalf("checker missed a moved ack and a lost layout: %v", errs)
	}
	// The misplaced record goes to a stream of its own: the crash stream
	// may end with one open shard, where no key can be misplaced, and with
	// its ids used up, so that it cannot be split to make one.
	st, err = s.CreateStream(context.Background(), StreamConfig{Name: "misplaced", Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Split(context.Background(), 0, 0); err != nil {
		t.Fatal(err)
	}
	open := st.Layout().Open()
	var key []byte
	for i := 0; ; i++ {
		if key = fmt.Appendf(nil, "x-%d", i); st.Layout().ShardFor(record.KeyHash(key)) != open[0].ID {
			break
		}
	}
	if _, err := st.Append(context.Background(), Batch{Shard: int(open[0].ID), Records: []record.Record{{Key: key}}}); err != nil {
		t.Fatal(err)
	}
	if errs := checkReshardFile(st, nil, st.Layout().Version); len(errs) != 1 {
		t.Fatalf("checker on a misplaced record: %v", errs)
	}
}
