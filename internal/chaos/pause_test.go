//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/sdk"
)

// TestPauseHub stops hub c with SIGSTOP for longer than gossip's failure
// detection and its producer's ack timeout, while every site produces,
// then resumes it with SIGCONT: a and b declare it failed meanwhile, it
// refutes that and rejoins, replication resumes both ways, and the
// producer's resends of the batches c took before the pause are stored
// once. The checker finds nothing lost, doubled or reordered.
func TestPauseHub(t *testing.T) {
	labBinary(t)
	inNetLab(t, func(t *testing.T, lab *netLab) {
		hubs := startLab(t, lab, "pz", nil)
		a, c := hubs[0], hubs[2]
		rec, path := newHistory(t)
		lp := produce(t, rec, "pz", 5, 50*time.Millisecond, hubs...)
		pauses := 2
		if testing.Short() {
			pauses = 1
		}
		for i := range pauses {
			time.Sleep(2 * time.Second)
			t.Logf("pause %d: SIGSTOP hub c", i+1)
			c.signal(syscall.SIGSTOP)
			// Paused past failure detection: a stops seeing c alive.
			testutil.EventuallyWithin(t, 60*time.Second, "a to see c fail", func() bool { return len(a.alive()) == 2 })
			time.Sleep(6 * time.Second) // and past the producer's 5s ack timeout
			c.signal(syscall.SIGCONT)
			members(t, 60*time.Second, hubs...)
		}
		lp.stopProducing(t)
		n := settled(t, 60*time.Second, "pz", hubs...)
		for _, h := range hubs {
			h.stop(t)
		}
		checked := labReadBack(t, rec, "pz", hubs...)
		rep := judge(t, rec, path)
		if int64(checked) != 3*n || lp.acked.Load() != n {
			t.Errorf("read back %d records from 3 hubs holding %d each; %d acknowledged", checked, n, lp.acked.Load())
		}
		t.Logf("%d hub pauses survived; %d records checked: %s", pauses, checked, rep.Summary())
		figure(t, "pauses-survived", int64(pauses))
		figure(t, "records-checked", int64(checked))
	})
}

// Environment of TestNetLabMemberChild.
const (
	envMemberAddr    = "EDGEHUB_NETLAB_MEMBER_ADDR"
	envMemberCA      = "EDGEHUB_NETLAB_MEMBER_CA"
	envMemberID      = "EDGEHUB_NETLAB_MEMBER_ID"
	envMemberTimeout = "EDGEHUB_NETLAB_MEMBER_TIMEOUT"
	envMemberHold    = "EDGEHUB_NETLAB_MEMBER_HOLD" // "1": wait for "go" on stdin before the first commit after "hold" arrives
)

// TestNetLabMemberChild is not a test on its own: it is a consumer group
// member process for TestPauseGroupMember. It reads group "g" of stream
// "gm", commits after every batch, and reports on stdout:
//
//	read SHARD SEQ KEY VALUE     a record returned to it
//	commit SHARD OFFSET          before each commit
//	commit-ok | commit-fail CODE ERROR
//	holding                      it has read a batch and waits for "go"
//
// On "hold" on stdin it stops before its next commit, says "holding" and
// waits for "go"; "quit" closes the member.
func TestNetLabMemberChild(t *testing.T) {
	addr := os.Getenv(envMemberAddr)
	if addr == "" {
		t.Skip("a group member process of TestPauseGroupMember")
	}
	ctx := context.Background()
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: os.Getenv(envMemberCA), ReconnectMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	timeout, _ := time.ParseDuration(os.Getenv(envMemberTimeout))
	g, err := c.JoinGroup(ctx, "g", "gm", sdk.GroupOptions{MemberID: os.Getenv(envMemberID), SessionTimeout: timeout,
		CommitInterval: -1, Credit: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	hold, quit := false, false
	gate := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			mu.Lock()
			switch sc.Text() {
			case "hold":
				hold = true
			case "go":
				close(gate)
			case "quit":
				quit = true
			}
			mu.Unlock()
		}
	}()
	out := bufio.NewWriter(os.Stdout)
	for {
		mu.Lock()
		q := quit
		mu.Unlock()
		if q {
			break
		}
		bctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		shard, recs, err := g.NextBatch(bctx)
		cancel()
		if err != nil {
			if bctx.Err() != nil {
				continue
			}
			t.Fatal(err)
		}
		for _, r := range recs {
			fmt.Fprintf(out, "read %d %d %s %s\n", shard, r.Seq, r.Key, r.Value)
		}
		mu.Lock()
		h := hold
		hold = false
		mu.Unlock()
		if h {
			fmt.Fprintln(out, "holding")
			out.Flush()
			<-gate
		}
		fmt.Fprintf(out, "commit %d %d\n", shard, recs[len(recs)-1].Seq+1)
		out.Flush()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = g.Commit(cctx)
		cancel()
		if err != nil {
			fmt.Fprintf(out, "commit-fail %s %s\n", sdk.CodeOf(err), strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintln(out, "commit-ok")
		}
		out.Flush()
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	g.Close(cctx)
}

// labMember is a running TestNetLabMemberChild whose report goes into the
// history.
type labMember struct {
	id      string
	cmd     *exec.Cmd
	in      *os.File
	holding chan struct{}
	done    chan struct{}

	mu        sync.Mutex
	reads     int
	stale     int      // commits refused by the hub: stale_epoch or session_expired
	unsent    int      // commits the SDK refused to send: its session had ended
	failCodes []string // codes of other failed commits
}

func startMember(t *testing.T, rec *Recorder, h *labHub, id string, timeout time.Duration) *labMember {
	t.Helper()
	m := &labMember{id: id, holding: make(chan struct{}, 1), done: make(chan struct{})}
	m.cmd = exec.Command(os.Args[0], "-test.run=^TestNetLabMemberChild$")
	m.cmd.Env = append(os.Environ(), envMemberAddr+"="+h.quic(), envMemberCA+"="+filepath.Join(h.data(), "tls", "cert.pem"),
		envMemberID+"="+id, envMemberTimeout+"="+timeout.String())
	m.cmd.Stderr = os.Stderr
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdin, m.in = pr, pw
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	t.Cleanup(func() {
		m.cmd.Process.Signal(syscall.SIGCONT)
		m.cmd.Process.Kill()
		<-m.done
	})
	go func() {
		defer close(m.done)
		defer m.cmd.Wait()
		sc := bufio.NewScanner(out)
		var inv *Invocation
		var shard int
		var offset uint64
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 5 && f[0] == "read":
				sh, _ := strconv.Atoi(f[1])
				seq, _ := strconv.ParseUint(f[2], 10, 64)
				rec.Read(Op{Kind: Consume, Client: id, Hub: h.name, Stream: "gm", Group: "g", Shard: sh, Seq: seq, Key: f[3], Value: f[4]})
				m.mu.Lock()
				m.reads++
				m.mu.Unlock()
			case len(f) == 3 && f[0] == "commit":
				shard, _ = strconv.Atoi(f[1])
				offset, _ = strconv.ParseUint(f[2], 10, 64)
				inv = rec.Invoke(Op{Kind: Commit, Client: id, Hub: h.name, Stream: "gm", Group: "g", Shard: shard, Seq: offset})
			case len(f) >= 1 && f[0] == "commit-ok" && inv != nil:
				inv.OK(shard, offset)
				inv = nil
			case len(f) >= 2 && f[0] == "commit-fail" && inv != nil:
				err := fmt.Errorf("%s", strings.Join(f[1:], " "))
				m.mu.Lock()
				if f[1] == sdk.CodeStaleEpoch.String() || f[1] == quic.CodeSessionExpired.String() {
					// Refused: the lease moved (stale_epoch) or the whole session
					// ended with every lease it held (session_expired); the hub
					// applied nothing.
					m.stale++
					inv.Fail(err)
				} else if strings.Contains(sc.Text(), "group session is reconnecting") {
					// The SDK saw the session end first and never sent it.
					m.unsent++
					inv.Fail(err)
				} else {
					m.failCodes = append(m.failCodes, strings.Join(f[1:], " "))
					inv.Unknown(err)
				}
				m.mu.Unlock()
				inv = nil
			case len(f) == 1 && f[0] == "holding":
				m.holding <- struct{}{}
			}
		}
	}()
	return m
}

func (m *labMember) send(line string) { fmt.Fprintln(m.in, line) }

func (m *labMember) readCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads
}

// quit closes the member gracefully and waits for the process.
func (m *labMember) quit(t *testing.T) {
	t.Helper()
	m.send("quit")
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Errorf("member %s did not quit", m.id)
	}
}

// TestPauseGroupMember: a group member (a child process with a 2s session
// timeout) has read a batch and not committed it when it is stopped with
// SIGSTOP. Past its session timeout the other member takes its shards over
// from the last commit and reads on. Resumed with SIGCONT, the stale member
// commits the batch it held: the hub refuses it (session_expired: its
// session and every lease of it are gone; stale_epoch for a lease that
// moved), so no split brain moves the group's offsets behind the new
// owner's back; the member rejoins and reads on. The checker then judges every read and commit: nothing
// skipped, nothing read out of order per member, re-reads only from
// committed offsets (at least once), every record read by some member.
func TestPauseGroupMember(t *testing.T) {
	labBinary(t)
	inNetLab(t, func(t *testing.T, lab *netLab) {
		hubs := startLab(t, lab, "gm", nil)
		a := hubs[0]
		rec, path := newHistory(t)
		lp := produce(t, rec, "gm", 5, 20*time.Millisecond, a)
		victim := startMember(t, rec, a, "victim", 2*time.Second)
		testutil.EventuallyWithin(t, 30*time.Second, "the victim reading", func() bool { return victim.readCount() > 100 })
		survivor := startMember(t, rec, a, "survivor", 10*time.Second)
		testutil.EventuallyWithin(t, 30*time.Second, "the survivor reading", func() bool { return survivor.readCount() > 100 })

		victim.send("hold")
		select {
		case <-victim.holding:
		case <-time.After(30 * time.Second):
			t.Fatal("the victim never held a batch")
		}
		victim.cmd.Process.Signal(syscall.SIGSTOP)
		before := survivor.readCount()
		time.Sleep(6 * time.Second) // three session timeouts
		testutil.EventuallyWithin(t, 30*time.Second, "the survivor taking over", func() bool { return survivor.readCount() > before+100 })
		victim.cmd.Process.Signal(syscall.SIGCONT)
		victim.send("go")
		testutil.EventuallyWithin(t, 30*time.Second, "the stale commit's answer", func() bool {
			victim.mu.Lock()
			defer victim.mu.Unlock()
			return victim.stale+victim.unsent+len(victim.failCodes) > 0
		})
		victim.mu.Lock()
		stale, unsent, other := victim.stale, victim.unsent, victim.failCodes
		victim.mu.Unlock()
		// Which refuses it is a race between the SDK noticing the expired
		// session and the commit reaching the hub; either way nothing moves.
		if stale+unsent == 0 || len(other) > 0 {
			t.Errorf("the paused member's commit was not refused: other failures %v", other)
		}
		// Both go on reading (the victim rejoins) until the end.
		time.Sleep(3 * time.Second)
		lp.stopProducing(t)
		total := lp.acked.Load()
		testutil.EventuallyWithin(t, 60*time.Second, "the group to read everything", func() bool {
			var g struct {
				Lag int64 `json:"lag"`
			}
			return adminJSON("GET", a.admin()+"/v1/groups/g", nil, &g) == nil && g.Lag == 0 && a.records("gm") == total
		})
		victim.quit(t)
		survivor.quit(t)
		for _, h := range hubs {
			h.stop(t)
		}
		checked := labReadBack(t, rec, "gm", a)
		rep := judge(t, rec, path)
		t.Logf("group member paused %s past its session timeout; its stale commit refused (%d by the hub, %d by the SDK); %d acknowledged writes, %d reads (victim %d, survivor %d), %d records checked: %s",
			"6s", stale, unsent, total, victim.readCount()+survivor.readCount(), victim.readCount(), survivor.readCount(), checked, rep.Summary())
		figure(t, "pauses-survived", 1)
		figure(t, "records-checked", int64(checked))
	})
}
