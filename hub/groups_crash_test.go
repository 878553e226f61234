package hub

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
)

// Environment of TestGroupChildMember, the member run in a child process.
const (
	envGroupChildAddr = "EDGEHUB_GROUP_CHILD_ADDR"
	envGroupChildCA   = "EDGEHUB_GROUP_CHILD_CA"
)

// TestGroupChildMember is not a test on its own: TestGroupKill9 runs the
// test binary with it as a group member, which reports on stdout each batch
// it processes ("got SHARD SEQ...") and each commit that returned
// ("committed").
func TestGroupChildMember(t *testing.T) {
	addr := os.Getenv(envGroupChildAddr)
	if addr == "" {
		t.Skip("run by TestGroupKill9")
	}
	ctx := context.Background()
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: os.Getenv(envGroupChildCA)})
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.JoinGroup(ctx, "billing", "orders", sdk.GroupOptions{
		MemberID: "victim", SessionTimeout: victimTimeout, CommitInterval: -1, Credit: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for {
		shard, recs, err := g.NextBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "got %d", shard)
		for _, r := range recs {
			fmt.Fprintf(&b, " %d", r.Seq)
		}
		fmt.Println(b.String())
		if err := g.Commit(ctx); err != nil && sdk.CodeOf(err) != sdk.CodeStaleEpoch {
			t.Fatal(err)
		}
		fmt.Println("committed")
	}
}

// TestGroupKill9: a member in a child process is killed with SIGKILL while
// it consumes, so it neither leaves nor closes its connection. After its
// session timeout the surviving member takes its shards over from its last
// commit: every record is processed, and the only ones processed twice are
// from the batches the child had taken and not committed.
func TestGroupKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a member in a child process and kills it")
	}
	d := groupHub(t)
	p := orderProducer(t, d)
	produced := produceOrders(t, p, 0, 200)
	s := startMember(t, d, "survivor", survivorTimeout)

	child := exec.Command(os.Args[0], "-test.run=^TestGroupChildMember$")
	child.Env = append(os.Environ(), envGroupChildAddr+"="+d.addr, envGroupChildCA+"="+d.ca)
	child.Stderr = tbWriter{t}
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			child.Process.Signal(syscall.SIGKILL)
			child.Wait()
		}
	}
	t.Cleanup(kill)

	// The child's report: what it processed, and what it had not committed.
	var mu sync.Mutex
	childSeen := map[gpos]int{}
	var pending []gpos // taken, commit not reported
	unconfirmed := map[gpos]bool{}
	commits := 0
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			mu.Lock()
			switch {
			case len(f) > 2 && f[0] == "got":
				shard, _ := strconv.Atoi(f[1])
				for _, v := range f[2:] {
					seq, _ := strconv.ParseUint(v, 10, 64)
					p := gpos{shard, seq}
					childSeen[p]++
					pending = append(pending, p)
				}
			case len(f) == 1 && f[0] == "committed":
				pending = pending[:0]
				commits++
			}
			mu.Unlock()
		}
		mu.Lock()
		for _, p := range pending {
			unconfirmed[p] = true
		}
		mu.Unlock()
	}()

	testutil.Eventually(t, "the survivor and the child holding two shards each", func() bool {
		return split(t, d, map[string]int{"survivor": 2, "victim": 2})
	})
	// Small rounds, so that the child gets many batches.
	next := 200
	testutil.Eventually(t, "the child committing", func() bool {
		produced = append(produced, produceOrders(t, p, next, 20)...)
		next += 20
		mu.Lock()
		defer mu.Unlock()
		return commits >= 5
	})
	// Kill it while records keep coming.
	var wg sync.WaitGroup
	var more []gpos
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			more = append(more, produceOrders(t, p, next+20*i, 20)...)
		}
	}()
	time.Sleep(5 * time.Millisecond)
	kill()
	<-readDone
	wg.Wait()
	produced = append(produced, more...)

	testutil.Eventually(t, "the survivor holding every shard", func() bool { return split(t, d, map[string]int{"survivor": 4}) })
	// The child's report is complete: it is dead and its output read.
	mu.Lock()
	defer mu.Unlock()
	var total map[gpos]int
	testutil.Eventually(t, "every record processed by the child or the survivor", func() bool {
		total = tally(s)
		for p, n := range childSeen {
			total[p] += n
		}
		for _, p := range produced {
			if total[p] == 0 {
				return false
			}
		}
		return true
	})
	twice := 0
	for _, p := range produced {
		switch n := total[p]; {
		case n == 0:
			t.Fatalf("record %+v never processed", p)
		case n > 2 || (n == 2 && !unconfirmed[p]):
			t.Fatalf("record %+v processed %d times; the child's uncommitted records were %d", p, n, len(unconfirmed))
		case n == 2:
			twice++
		}
	}
	if len(childSeen) == 0 {
		t.Fatal("the child processed nothing")
	}
	t.Logf("child processed %d records, %d uncommitted at the kill, %d redelivered to the survivor", len(childSeen), len(unconfirmed), twice)
	if v := counterValue(t, d.h, "edgehub_group_expirations_total"); v != 1 {
		t.Fatalf("expirations %v, want 1", v)
	}
}
