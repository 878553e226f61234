//go:build chaos

package chaos

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// TestClockJumps steps the wall clock of hub a's process (the chaos-tag
// clock seam, EDGEHUB_CHAOS_CLOCK_FILE) while every site produces to a
// stream with retention 168h: 30 days forward, then back to an hour behind
// the real clock. What must hold (docs/store.md, "Clock steps"):
//   - retention deletes nothing because of the forward step (a maintenance
//     pass runs while the clock is 30 days ahead; before the age clock, it
//     deleted every record);
//   - ingest times never go back within a shard, on any hub;
//   - ordering and deduplication do not care: the checker finds nothing
//     lost, doubled or reordered.
func TestClockJumps(t *testing.T) {
	labBinary(t)
	inNetLab(t, func(t *testing.T, lab *netLab) {
		var hubs []*labHub
		clock := filepath.Join(t.TempDir(), "clock")
		step := func(offset string) {
			t.Helper()
			if err := os.WriteFile(clock, []byte(offset), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		step("0s")
		for _, name := range labHubs {
			h := newLabHub(t, lab, name, "")
			if name == "a" {
				h.env = []string{hub.EnvChaosClockFile + "=" + clock}
			}
			h.start(t)
			hubs = append(hubs, h)
		}
		a := hubs[0]
		if err := adminJSON("POST", a.admin()+"/v1/streams", map[string]any{"name": "ck", "shards": 3, "replicate": "all", "retention": "168h"}, nil); err != nil {
			t.Fatal(err)
		}
		for _, h := range hubs {
			testutil.EventuallyWithin(t, 60*time.Second, "stream ck at "+h.name, func() bool { return h.records("ck") >= 0 })
		}
		rec, path := newHistory(t)
		lp := produce(t, rec, "ck", 5, 50*time.Millisecond, hubs...)
		time.Sleep(2 * time.Second)
		before := a.records("ck")
		step("720h")
		jumped := time.Now()
		// The store's maintenance runs every 10s: let one pass (at least)
		// see the clock 30 days ahead.
		time.Sleep(12 * time.Second)
		var desc struct {
			Shards []struct {
				Shard    int    `json:"shard"`
				FirstSeq uint64 `json:"first_seq"`
			} `json:"shards"`
		}
		if err := adminJSON("GET", a.admin()+"/v1/streams/ck", nil, &desc); err != nil {
			t.Fatal(err)
		}
		for _, sh := range desc.Shards {
			if sh.FirstSeq != 1 {
				t.Fatalf("after a 30-day forward step, shard %d of ck at a starts at sequence %d (%d records before the step): retention deleted records because the clock jumped",
					sh.Shard, sh.FirstSeq, before)
			}
		}
		step("-1h") // 721h back
		time.Sleep(3 * time.Second)
		lp.stopProducing(t)
		n := settled(t, 60*time.Second, "ck", hubs...)
		for _, h := range hubs {
			h.stop(t)
		}
		ahead := 0
		for _, h := range hubs {
			c := ingestOrder(t, h, "ck", jumped.Add(700*time.Hour))
			if h.name == "a" {
				ahead = c
			}
		}
		if ahead == 0 {
			t.Fatal("no record at a carries an ingest time from the forward step: the clock seam did not work")
		}
		checked := labReadBack(t, rec, "ck", hubs...)
		rep := judge(t, rec, path)
		if int64(checked) != 3*n || lp.acked.Load() != n {
			t.Errorf("read back %d records from 3 hubs holding %d each; %d acknowledged", checked, n, lp.acked.Load())
		}
		t.Logf("clock steps +720h and -721h at a: %d records kept (none deleted), %d at a stamped 30 days ahead; %d records checked: %s",
			n, ahead, checked, rep.Summary())
		figure(t, "records-checked", int64(checked))
	})
}

// ingestOrder checks that ingest times never decrease within a shard of
// stream at (stopped) hub h, and returns how many are at or after mark.
func ingestOrder(t *testing.T, h *labHub, stream string, mark time.Time) int {
	t.Helper()
	cfg := store.DefaultConfig(h.data())
	cfg.Logger = quietLog()
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stream(stream)
	if err != nil {
		t.Fatal(err)
	}
	after := 0
	for sh := range st.Shards() {
		var last int64
		for from := uint64(1); ; {
			recs, err := st.Read(sh, from, store.ReadOptions{MaxRecords: 5000})
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.IngestTime < last {
					t.Errorf("hub %s shard %d seq %d: ingest time %d before the previous record's %d", h.name, sh, r.Seq, r.IngestTime, last)
				}
				last = r.IngestTime
				if r.IngestTime >= mark.UnixNano() {
					after++
				}
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	return after
}
