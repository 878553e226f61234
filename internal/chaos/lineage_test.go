//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// linShard is the part of GET /v1/streams/{name}'s shards the reshard loop
// needs.
type linShard struct {
	Shard     int    `json:"shard"`
	HashStart string `json:"hash_start"`
	State     string `json:"state"`
}

type linLayout struct {
	LayoutVersion uint64     `json:"layout_version"`
	Shards        []linShard `json:"shards"`
}

// linAdmin sends one admin request to base; a non-2xx answer is an error.
func linAdmin(ctx context.Context, base, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// linReshards splits, merges and reshards the stream every pause until ctx
// ends, cycling through the three kinds; it returns how many took effect.
func linReshards(ctx context.Context, t *testing.T, base, stream string, pause time.Duration) (done int) {
	counts := []int{3, 1, 4, 2}
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
			return done
		case <-time.After(pause):
		}
		var l linLayout
		if err := linAdmin(ctx, base, http.MethodGet, "/v1/streams/"+stream, nil, &l); err != nil {
			t.Logf("layout: %v", err)
			continue
		}
		var open []linShard
		for _, s := range l.Shards {
			if s.State == "open" {
				open = append(open, s)
			}
		}
		slices.SortFunc(open, func(a, b linShard) int { return cmp0(a.HashStart, b.HashStart) })
		var err error
		switch i % 3 {
		case 0:
			err = linAdmin(ctx, base, http.MethodPost, "/v1/streams/"+stream+"/split", map[string]any{"shard": open[0].Shard}, nil)
		case 1:
			if len(open) < 2 {
				continue
			}
			err = linAdmin(ctx, base, http.MethodPost, "/v1/streams/"+stream+"/merge", map[string]any{"shards": []int{open[0].Shard, open[1].Shard}}, nil)
		default:
			err = linAdmin(ctx, base, http.MethodPost, "/v1/streams/"+stream+"/reshard", map[string]any{"shards": counts[(i/3)%len(counts)]}, nil)
		}
		if err != nil {
			if ctx.Err() == nil {
				t.Logf("reshard %d: %v", i, err)
			}
			continue
		}
		done++
	}
	return done
}

func cmp0(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) }

// linReadBack records the stream's whole layout as Lineage lines and every
// record of every shard, closed ones included, as Final lines, read from
// the data dir with the store (the hub must be stopped).
func linReadBack(t *testing.T, rec *Recorder, dataDir, stream, hub string) (records, shards int) {
	t.Helper()
	cfg := store.DefaultConfig(dataDir)
	cfg.Logger = quietLogger()
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatalf("read-back: %v", err)
	}
	defer s.Close()
	st, err := s.Stream(stream)
	if err != nil {
		t.Fatalf("read-back: %v", err)
	}
	for _, sh := range st.Layout().Shards {
		parents := make([]int, 0, len(sh.Parents))
		for _, p := range sh.Parents {
			parents = append(parents, int(p))
		}
		rec.Read(Op{Kind: Lineage, Client: "layout", Hub: hub, Stream: stream, Shard: int(sh.ID), Parents: parents})
		shards++
		for from := uint64(0); ; {
			recs, err := st.Read(int(sh.ID), from, store.ReadOptions{MaxRecords: 10000})
			if err != nil {
				t.Fatalf("read-back shard %d: %v", sh.ID, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				rec.Read(Op{Kind: Final, Client: "final", Hub: hub, Stream: stream, Shard: int(sh.ID), Seq: r.Seq, Key: string(r.Key), Value: valueID(r.Value)})
				records++
			}
			from = recs[len(recs)-1].Seq + 1
		}
	}
	return records, shards
}

// linGroupLag is the group's total lag as the hub reports it.
func linGroupLag(ctx context.Context, base, group string) (int64, error) {
	var gi struct {
		Lag int64 `json:"lag"`
	}
	err := linAdmin(ctx, base, http.MethodGet, "/v1/groups/"+group, nil, &gi)
	return gi.Lag, err
}

// runLineage runs the lineage workload for d against one hub (skip set in
// its EDGEHUB_CHAOS_SKIP_LINEAGE) and returns the checker's report. With
// late, the group joins only after the reshards, so it finds a backlog
// spread over a lineage of closed shards.
func runLineage(t *testing.T, skip string, d, pause time.Duration, late bool) *Report {
	t.Setenv("EDGEHUB_CHAOS_SKIP_LINEAGE", skip) // the hub child inherits it
	const stream = "lineage"
	dir := t.TempDir()
	cfg := hubConfig{Name: "lin", DataDir: filepath.Join(dir, "data"), QUIC: testutil.FreeAddr(t, "udp"), Stream: stream, Shards: 2}
	cfgFile := filepath.Join(dir, "hub.toml")
	writeConfig(t, cfgFile, cfg)
	h := mustStartHub(t, cfgFile)

	path := historyPath(t)
	rec, err := CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorkload(t, rec, cfg.QUIC, stream)
	w.producers, w.keys, w.rate = 3, 8, 300
	w.start(false)
	group := func() {
		for i := range 3 {
			w.wg.Add(1)
			go func() { defer w.wg.Done(); w.groupMember("g1", fmt.Sprintf("m%d", i+1)) }()
		}
	}
	if !late {
		group()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	reshards := linReshards(ctx, t, h.admin, stream, pause)
	cancel()
	w.stopProducers()
	if late {
		group()
	}
	// Let the group drain: lag 0 for the hub, or give up after 30 s (the
	// checker then judges what was read).
	deadline := time.Now().Add(30 * time.Second)
	var lag int64
	for time.Now().Before(deadline) {
		lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		lag, err = linGroupLag(lctx, h.admin, "g1")
		lcancel()
		if err == nil && lag == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("group lag %d at the end of the drain", lag)
	w.stop()
	h.stop(t)
	records, shards := linReadBack(t, rec, cfg.DataDir, stream, "")
	rep := checkHistory(t, rec, path)
	t.Logf("chaos-figure reshards %d", reshards)
	t.Logf("chaos-figure records-checked %d", records)
	t.Logf("%s: %d reshards, %d shards in the layout, %d records, %d acked, %d unknown, %d group reads; %s%s",
		t.Name(), reshards, shards, records, w.acked.Load(), w.unk.Load(), w.reads.Load(), rep.Summary(), w.errSummary())
	return rep
}

// TestLineageWorkload: idempotent producers and a group of three members
// on a stream split, merged and resharded over and over through the admin
// API; the checker, given the lineage, finds no loss, duplicate, per-key
// reorder across parent and child, or group read of a child before its
// parents were finished.
func TestLineageWorkload(t *testing.T) {
	d := 30 * time.Second
	if testing.Short() {
		d = 12 * time.Second
	}
	rep := runLineage(t, "", d, 700*time.Millisecond, false)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if rep.Reads == 0 || rep.RecordsChecked == 0 {
		t.Fatalf("nothing checked: %s", rep.Summary())
	}
}

// TestLineageNegativeControl: the same with the hub's groups skipping the
// parent-finished check (EDGEHUB_CHAOS_SKIP_LINEAGE=group, chaos builds
// only): the group joins after the reshards, gets children while their
// parents still hold unread records of the same keys, and the checker must
// report the reorder.
func TestLineageNegativeControl(t *testing.T) {
	for attempt := 1; attempt <= 3; attempt++ {
		rep := runLineage(t, "group", 6*time.Second, 500*time.Millisecond, true)
		if rep.Count(ReorderKey) > 0 {
			t.Logf("attempt %d: anomaly seen: %s", attempt, rep.Summary())
			return
		}
		t.Logf("attempt %d: no anomaly: %s", attempt, rep.Summary())
	}
	t.Fatal("the checker saw no reorder in 3 runs with the parent-finished check skipped")
}
