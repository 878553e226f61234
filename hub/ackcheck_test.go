package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// ackLog is what a hub acknowledged, as its producers saw it: the value
// stored at each position. Crash and shutdown tests compare it with what
// the hub holds after a restart.
type ackLog struct {
	mu   sync.Mutex
	acks map[store.Position]string
}

func newAckLog() *ackLog { return &ackLog{acks: map[store.Position]string{}} }

func (a *ackLog) add(p store.Position, value string) {
	a.mu.Lock()
	a.acks[p] = value
	a.mu.Unlock()
}

func (a *ackLog) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acks)
}

// lost lists the acknowledged records that stored does not hold at their
// position with their value, sorted.
func (a *ackLog) lost(stored map[store.Position]string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for p, v := range a.acks {
		if got, ok := stored[p]; !ok {
			out = append(out, fmt.Sprintf("shard %d seq %d (%s): missing", p.Shard, p.Seq, v))
		} else if got != v {
			out = append(out, fmt.Sprintf("shard %d seq %d: holds %q, acknowledged as %q", p.Shard, p.Seq, got, v))
		}
	}
	slices.Sort(out)
	return out
}

// checkAcks fails the test if the hub at admin/quic lost an acknowledged
// record; a negative control first shows that the check sees a loss (an
// acknowledgement the hub never gave is reported).
func checkAcks(tb testing.TB, acks *ackLog, admin string, cl *sdk.Client, stream string) {
	tb.Helper()
	stored := hubRecords(tb, admin, cl, stream)
	control := newAckLog()
	for p, v := range acks.acks {
		control.add(p, v)
	}
	control.add(store.Position{Shard: 0, Seq: uint64(len(stored)) + 1000}, "never-stored")
	if l := control.lost(stored); len(l) != 1 {
		tb.Fatalf("negative control: the check reports %d lost records, want the 1 never stored: %v", len(l), l)
	}
	if l := acks.lost(stored); len(l) > 0 {
		tb.Fatalf("%d of %d acknowledged records lost:\n%v", len(l), acks.len(), l[:min(len(l), 20)])
	}
}

// hubRecords reads every record of stream from a running hub: as many as
// its admin API says it holds, from the earliest.
func hubRecords(tb testing.TB, admin string, cl *sdk.Client, stream string) map[store.Position]string {
	tb.Helper()
	status, body := call(tb, http.MethodGet, admin+"/v1/streams/"+stream, "")
	var info StreamInfo
	if status != http.StatusOK || json.Unmarshal(body, &info) != nil {
		tb.Fatalf("describe %s: %d %s", stream, status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub, err := cl.Subscribe(ctx, stream, sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		tb.Fatal(err)
	}
	defer sub.Close()
	out := map[store.Position]string{}
	for int64(len(out)) < info.Records {
		m, err := sub.Next(ctx)
		if err != nil {
			tb.Fatalf("consume %s: %v after %d of %d records", stream, err, len(out), info.Records)
		}
		out[store.Position{Shard: uint32(m.Shard), Seq: m.Record.Seq}] = string(m.Record.Value)
	}
	return out
}
