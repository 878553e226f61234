package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/internal/testutil"
)

// The crash test runs this test binary again as a child that appends
// concurrently and reports each acknowledged append on stdout; the parent
// kills it with SIGKILL mid-stream, reopens the store, and checks that every
// acknowledged record is there, in order, with no gaps or duplicates.
const crashChildEnv = "EDGEHUB_STORE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if dir := os.Getenv(reshardChildEnv); dir != "" {
		reshardChild(dir)
		return
	}
	os.Exit(testutil.LeakCheck(m.Run()))
}

// crashChild appends forever from 16 writers (single records and batches)
// until it is killed. Each acknowledged record is printed as
// "writer n shard seq".
func crashChild(dir string) {
	cfg := DefaultConfig(dir)
	cfg.Logger = quietLogger()
	s, err := Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	st, err := s.CreateStream(context.Background(), StreamConfig{Name: "crash", Shards: 4})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child create:", err)
		os.Exit(2)
	}
	// Resume each writer's counter after what a previous life stored.
	next := map[string]int{}
	for sh := 0; sh < 4; sh++ {
		for from := uint64(0); ; {
			recs, err := st.Read(sh, from, ReadOptions{})
			if err != nil {
				fmt.Fprintln(os.Stderr, "child read:", err)
				os.Exit(2)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				var n int
				fmt.Sscanf(string(r.Value), "%d", &n)
				next[string(r.Key)] = max(next[string(r.Key)], n+1)
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("w%02d", w)
			n := next[key]
			for {
				size := 1
				if w%4 == 0 {
					size = 50 // some writers append batches
				}
				recs := make([]record.Record, size)
				for i := range recs {
					recs[i] = record.Record{Key: []byte(key), Value: []byte(fmt.Sprintf("%d", n+i))}
				}
				res, err := st.Append(context.Background(), Batch{Shard: -1, Records: recs})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(2)
				}
				mu.Lock()
				for i, p := range res.Positions {
					fmt.Fprintf(out, "%s %d %d %d\n", key, n+i, p.Shard, p.Seq)
				}
				out.Flush()
				mu.Unlock()
				n += size
			}
		}()
	}
	wg.Wait()
}

func TestCrashKeepsAcknowledgedAppends(t *testing.T) {
	dir := t.TempDir()
	type ack struct {
		key   string
		n     int
		shard int
		seq   uint64
	}
	var acked []ack
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		seen := 0
		for sc.Scan() {
			var a ack
			if _, err := fmt.Sscanf(sc.Text(), "%s %d %d %d", &a.key, &a.n, &a.shard, &a.seq); err != nil {
				continue // the kill may cut the last line short
			}
			acked = append(acked, a)
			if seen++; seen == 3000 {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child did not die by SIGKILL: %v", round, err)
		}
	}

	s := openStore(t, testConfig(t, dir))
	st, err := s.Stream("crash")
	if err != nil {
		t.Fatal(err)
	}
	type pos struct {
		shard int
		seq   uint64
	}
	stored := map[pos]record.Record{}
	values := map[string]bool{}
	lastN := map[string]int{}
	for sh := 0; sh < 4; sh++ {
		recs := readAll(t, st, sh)
		for i, r := range recs {
			if r.Seq != uint64(i+1) {
				t.Fatalf("shard %d: gap or reorder at index %d (seq %d)", sh, i, r.Seq)
			}
			v := string(r.Key) + "/" + string(r.Value)
			if values[v] {
				t.Fatalf("record %s stored twice", v)
			}
			values[v] = true
			var n int
			fmt.Sscanf(string(r.Value), "%d", &n)
			if prev, ok := lastN[string(r.Key)]; ok && n != prev+1 {
				t.Fatalf("key %s: %d follows %d", r.Key, n, prev)
			}
			lastN[string(r.Key)] = n
			stored[pos{sh, r.Seq}] = r
		}
	}
	for _, a := range acked {
		r, ok := stored[pos{a.shard, a.seq}]
		if !ok {
			t.Fatalf("acknowledged %s/%d at %d:%d is missing", a.key, a.n, a.shard, a.seq)
		}
		if string(r.Key) != a.key || string(r.Value) != fmt.Sprint(a.n) {
			t.Fatalf("at %d:%d found %s/%s, acknowledged %s/%d", a.shard, a.seq, r.Key, r.Value, a.key, a.n)
		}
	}
	if len(acked) < 3000*rounds || !strings.HasPrefix(acked[0].key, "w") {
		t.Fatalf("only %d acknowledgements seen", len(acked))
	}
	t.Logf("%d acknowledged records verified over %d kills; %d stored", len(acked), rounds, len(stored))
}
