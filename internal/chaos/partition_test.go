//go:build chaos

package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/chaos/udpproxy"
	"github.com/edgehub/edgehub/internal/testutil"
)

// startLab starts hubs a, b and c in the lab and creates stream (replicated
// to all) at a; every hub has it before startLab returns.
func startLab(t *testing.T, lab *netLab, stream string, extra func(hub string) string) []*labHub {
	t.Helper()
	var hubs []*labHub
	for _, name := range labHubs {
		x := ""
		if extra != nil {
			x = extra(name)
		}
		h := newLabHub(t, lab, name, x)
		h.start(t)
		hubs = append(hubs, h)
	}
	if err := adminJSON("POST", hubs[0].admin()+"/v1/streams", map[string]any{"name": stream, "shards": 3, "replicate": "all"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range hubs {
		testutil.EventuallyWithin(t, 60*time.Second, "stream "+stream+" at "+h.name, func() bool { return h.records(stream) >= 0 })
	}
	return hubs
}

// TestPartitionHeal runs three hubs in network namespaces and, while every
// site keeps producing with retrying idempotent producers, partitions them
// in turn: one hub cut off, a non-transitive split (a and b cannot talk, c
// reaches both), every hub alone, and a cut-off hub whose remaining links
// are rate-limited to 1 Mbit/s by tc tbf. After each heal and at the end,
// membership settles (every hub sees the others alive) and the checker
// finds nothing lost, doubled or reordered on any hub.
func TestPartitionHeal(t *testing.T) {
	labBinary(t)
	inNetLab(t, func(t *testing.T, lab *netLab) {
		hubs := startLab(t, lab, "p", nil)
		rec, path := newHistory(t)
		lp := produce(t, rec, "p", 5, 50*time.Millisecond, hubs...)
		hold := 4 * time.Second
		rounds := []struct {
			name string
			cut  func(bool) error
		}{
			{"c cut off", func(cut bool) error { return lab.isolate("c", cut) }},
			{"a-b split, c bridges", func(cut bool) error { return lab.setLink("a", "b", !cut) }},
			{"every hub alone", func(cut bool) error {
				for _, h := range labHubs {
					if err := lab.isolate(h, cut); err != nil {
						return err
					}
				}
				return nil
			}},
			{"a cut off, b-c at 1mbit", func(cut bool) error {
				if cut {
					if err := lab.rate("b", "c", "1mbit"); err != nil {
						return err
					}
					if err := lab.rate("c", "b", "1mbit"); err != nil {
						return err
					}
				}
				return lab.isolate("a", cut)
			}},
		}
		if testing.Short() {
			rounds = rounds[:2]
			hold = 3 * time.Second
		}
		healed := 0
		for _, r := range rounds {
			time.Sleep(time.Second)
			t.Logf("partition: %s for %s", r.name, hold)
			if err := r.cut(true); err != nil {
				t.Fatal(err)
			}
			time.Sleep(hold)
			if err := r.cut(false); err != nil {
				t.Fatal(err)
			}
			healed++
			members(t, 90*time.Second, hubs...)
		}
		lp.stopProducing(t)
		// 30s: three times the replication connections' idle timeout. Before
		// it was 10s, pulls whose peer had dropped the connection during the
		// partition waited 60s for the data plane's idle timeout (78s here).
		n := settled(t, 30*time.Second, "p", hubs...)
		for _, h := range hubs {
			h.stop(t)
		}
		checked := labReadBack(t, rec, "p", hubs...)
		rep := judge(t, rec, path)
		if int64(checked) != 3*n || lp.acked.Load() != n {
			t.Errorf("read back %d records from 3 hubs holding %d each; %d acknowledged", checked, n, lp.acked.Load())
		}
		t.Logf("%d partitions healed; %d acknowledged writes; %d records checked on 3 hubs: %s", healed, lp.acked.Load(), checked, rep.Summary())
		figure(t, "partitions-healed", int64(healed))
		figure(t, "records-checked", int64(checked))
	})
}

// TestBadLinks puts a user-space UDP proxy in front of every hub's data
// plane (inside its namespace) and has peers pull, and clients produce,
// through it: 20-40 ms of delay, 5% loss, 5% duplication and 10% of
// datagrams held back 30 ms so later ones overtake them, with the a-b link
// rate-limited to 2 Mbit/s by tc tbf. QUIC recovers from all of it; the
// checker finds every acknowledged write once on every hub, in order.
func TestBadLinks(t *testing.T) {
	labBinary(t)
	inNetLab(t, func(t *testing.T, lab *netLab) {
		bad := udpproxy.Impairment{Delay: 20 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.05,
			Duplicate: 0.05, Reorder: 0.1, ReorderBy: 30 * time.Millisecond}
		proxies := map[string]*labProxy{}
		for _, h := range labHubs {
			proxies[h] = lab.startProxy(t, h, hubIP(h)+":7450", hubIP(h)+":7440", bad)
		}
		hubs := startLab(t, lab, "bad", func(h string) string {
			return fmt.Sprintf("quic_advertise = %q\n", proxies[h].Addr)
		})
		for _, x := range [][2]string{{"a", "b"}, {"b", "a"}} {
			if err := lab.rate(x[0], x[1], "2mbit"); err != nil {
				t.Fatal(err)
			}
		}
		rec, path := newHistory(t)
		lp := produceVia(t, rec, "bad", 5, 50*time.Millisecond, func(h *labHub) string { return proxies[h.name].Addr }, hubs...)
		run := 30 * time.Second
		if testing.Short() {
			run = 10 * time.Second
		}
		time.Sleep(run)
		var total udpproxy.Stats
		for _, h := range labHubs {
			st, err := proxies[h].Set(udpproxy.Impairment{}) // clean links for the final convergence
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("proxy at %s: %+v", h, st)
			total.Received += st.Received
			total.Dropped += st.Dropped
			total.Duplicated += st.Duplicated
			total.Reordered += st.Reordered
		}
		if total.Dropped == 0 || total.Duplicated == 0 || total.Reordered == 0 {
			t.Fatalf("the links were not impaired: %+v", total)
		}
		lp.stopProducing(t)
		n := settled(t, 60*time.Second, "bad", hubs...)
		for _, h := range hubs {
			h.stop(t)
		}
		checked := labReadBack(t, rec, "bad", hubs...)
		rep := judge(t, rec, path)
		if int64(checked) != 3*n || lp.acked.Load() != n {
			t.Errorf("read back %d records from 3 hubs holding %d each; %d acknowledged", checked, n, lp.acked.Load())
		}
		t.Logf("bad links: %d datagrams through the proxies, %d dropped, %d duplicated, %d reordered; %d records checked: %s",
			total.Received, total.Dropped, total.Duplicated, total.Reordered, checked, rep.Summary())
		figure(t, "records-checked", int64(checked))
	})
}
