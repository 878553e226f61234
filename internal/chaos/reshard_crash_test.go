//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
)

// layoutShard is the part of the admin API's shard description
// (GET /v1/streams/{name}) the layout check needs.
type layoutShard struct {
	Shard     int      `json:"shard"`
	HashStart string   `json:"hash_start"`
	HashEnd   string   `json:"hash_end"`
	State     string   `json:"state"`
	Parents   []uint32 `json:"parents"`
	Children  []uint32 `json:"children"`
}

type streamLayout struct {
	LayoutVersion uint64        `json:"layout_version"`
	OpenShards    int           `json:"open_shards"`
	Shards        []layoutShard `json:"shards"`
}

// open lists the open shards by hash start.
func (l streamLayout) open() []layoutShard {
	var out []layoutShard
	for _, s := range l.Shards {
		if s.State == "open" {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b layoutShard) int { return bytes.Compare([]byte(a.HashStart), []byte(b.HashStart)) })
	return out
}

// sameShards reports whether a and b describe the same shards (ids, states,
// ranges, lineage): a restart that lost a reshard's response must show the
// old layout unchanged or the new one.
func (l streamLayout) sameShards(o streamLayout) bool {
	if len(l.Shards) != len(o.Shards) {
		return false
	}
	for i, s := range l.Shards {
		t := o.Shards[i]
		if s.Shard != t.Shard || s.State != t.State || s.HashStart != t.HashStart || s.HashEnd != t.HashEnd ||
			!slices.Equal(s.Parents, t.Parents) || !slices.Equal(s.Children, t.Children) {
			return false
		}
	}
	return true
}

// checkLayout returns what is wrong with a layout: the open shards' ranges
// must cover [0, 2^64-1] exactly once, every closed shard must have
// children that exist and name it as a parent, every parent named must
// exist and name the child back.
func checkLayout(l streamLayout) error {
	var errs []error
	byID := map[int]layoutShard{}
	for _, s := range l.Shards {
		if _, dup := byID[s.Shard]; dup {
			errs = append(errs, fmt.Errorf("shard %d listed twice", s.Shard))
		}
		byID[s.Shard] = s
	}
	open := l.open()
	if len(open) == 0 {
		errs = append(errs, errors.New("no open shard"))
	}
	if len(open) != l.OpenShards {
		errs = append(errs, fmt.Errorf("open_shards %d, %d shards open", l.OpenShards, len(open)))
	}
	next := uint64(0) // the first hash not covered yet
	covered := false  // the whole space is covered (next wrapped)
	for _, s := range open {
		lo, err1 := strconv.ParseUint(s.HashStart, 16, 64)
		hi, err2 := strconv.ParseUint(s.HashEnd, 16, 64)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, fmt.Errorf("shard %d: range: %w", s.Shard, err))
			continue
		}
		switch {
		case covered:
			errs = append(errs, fmt.Errorf("shard %d [%016x, %016x] past the end of the hash space's cover", s.Shard, lo, hi))
		case lo > next:
			errs = append(errs, fmt.Errorf("gap [%016x, %016x] before shard %d", next, lo-1, s.Shard))
		case lo < next:
			errs = append(errs, fmt.Errorf("shard %d [%016x, %016x] overlaps the shards before it", s.Shard, lo, hi))
		case hi < lo:
			errs = append(errs, fmt.Errorf("shard %d: empty range [%016x, %016x]", s.Shard, lo, hi))
		}
		if hi == ^uint64(0) {
			covered = true
		}
		next = max(next, hi+1)
	}
	if len(open) > 0 && !covered {
		errs = append(errs, fmt.Errorf("gap [%016x, ffffffffffffffff] after the last open shard", next))
	}
	for _, s := range l.Shards {
		if s.State == "closed" && len(s.Children) == 0 {
			errs = append(errs, fmt.Errorf("closed shard %d has no children", s.Shard))
		}
		for _, c := range s.Children {
			ch, ok := byID[int(c)]
			if !ok {
				errs = append(errs, fmt.Errorf("shard %d: child %d does not exist", s.Shard, c))
			} else if !slices.Contains(ch.Parents, uint32(s.Shard)) {
				errs = append(errs, fmt.Errorf("shard %d: child %d does not name it as a parent", s.Shard, c))
			}
		}
		for _, p := range s.Parents {
			pa, ok := byID[int(p)]
			if !ok {
				errs = append(errs, fmt.Errorf("shard %d: parent %d does not exist", s.Shard, p))
			} else if pa.State == "open" || !slices.Contains(pa.Children, uint32(s.Shard)) {
				errs = append(errs, fmt.Errorf("shard %d: parent %d is open or does not name it as a child", s.Shard, p))
			}
		}
	}
	return errors.Join(errs...)
}

// adminClient talks to the admin API of the hub that is running now.
type adminClient struct {
	http   *http.Client
	stream string
}

func (a adminClient) layout(ctx context.Context, base string) (streamLayout, error) {
	var l streamLayout
	err := a.do(ctx, base, http.MethodGet, "/v1/streams/"+a.stream, nil, &l)
	return l, err
}

// do sends one request; a non-2xx answer is an error with its body.
func (a adminClient) do(ctx context.Context, base, method, path string, body any, out any) error {
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
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &answerError{status: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// resharder issues splits, merges and reshards through the admin API while
// the hub lives, and keeps the last layout the hub confirmed.
type resharder struct {
	tb    testing.TB
	admin adminClient
	now   chan struct{} // reshard at once (the kill follows)

	mu      sync.Mutex // held across each request, so a restart's check sees no request half-recorded
	base    string     // the running hub's admin URL; "" while it is down
	last    streamLayout
	done    int // reshards the hub answered
	refused int // answered with an error (409 busy, a plan the layout no longer allows)
	broken  int // requests cut by a kill
	kinds   map[string]int
}

// run issues a reshard every 100-400 ms, or at once when asked, until ctx
// ends.
func (r *resharder) run(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-r.now:
		case <-time.After(100*time.Millisecond + rand.N(300*time.Millisecond)):
		}
		r.once(ctx)
	}
}

// once plans one operation from the last confirmed layout and sends it.
func (r *resharder) once(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base == "" {
		return
	}
	open := r.last.open()
	var kind string
	var body any
	switch n := rand.N(10); {
	case n < 4 && len(open) < 8:
		kind, body = "split", map[string]any{"shard": open[rand.N(len(open))].Shard}
	case n < 7 && len(open) > 1:
		i := rand.N(len(open) - 1)
		kind, body = "merge", map[string]any{"shards": []int{open[i].Shard, open[i+1].Shard}}
	default:
		kind, body = "reshard", map[string]any{"shards": 1 + rand.N(6)}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var l streamLayout
	err := r.admin.do(rctx, r.base, http.MethodPost, "/v1/streams/"+r.admin.stream+"/"+kind, body, &l)
	var answer *answerError
	switch {
	case err == nil:
		if cerr := checkLayout(l); cerr != nil {
			r.tb.Errorf("%s answered with an invalid layout: %v", kind, cerr)
		}
		r.last = l
		r.done++
		r.kinds[kind]++
	case !errors.As(err, &answer):
		// No answer: the kill cut the request.
		r.broken++
		r.base = "" // down until the restart's check
	default:
		r.refused++
	}
}

// answerError is a non-2xx answer of the admin API (as opposed to no
// answer: the hub died).
type answerError struct {
	status int
	msg    string
}

func (e *answerError) Error() string { return e.msg }

// restarted checks the layout of the hub now at base against the last one
// confirmed: valid, and that one or the one a single reshard makes of it
// (the request the kill cut may have committed). It reports whether the
// kill's reshard had committed.
func (r *resharder) restarted(ctx context.Context, base string) (advanced bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := r.admin.layout(ctx, base)
	if err != nil {
		return false, fmt.Errorf("layout after restart: %w", err)
	}
	if err := checkLayout(l); err != nil {
		return false, fmt.Errorf("layout version %d after restart: %w", l.LayoutVersion, err)
	}
	switch {
	case r.last.Shards == nil:
		// The first start: nothing confirmed yet.
	case l.LayoutVersion == r.last.LayoutVersion:
		if !l.sameShards(r.last) {
			return false, fmt.Errorf("layout version %d after restart differs from the one confirmed before the kill", l.LayoutVersion)
		}
	case l.LayoutVersion == r.last.LayoutVersion+1:
		advanced = true
	default:
		return false, fmt.Errorf("layout version %d after restart; %d was confirmed before the kill and one reshard at most was in flight",
			l.LayoutVersion, r.last.LayoutVersion)
	}
	r.last, r.base = l, base
	return advanced, nil
}

// TestReshardCrashLoop: a hub under idempotent keyed producers is split,
// merged and resharded through the admin API every 100-400 ms and SIGKILLed
// every 1-3 s (half of the kills right after a reshard request is sent),
// then restarted on the same data dir. After each restart the layout is
// valid and is the one confirmed before the kill or the one the cut request
// made; at the end the read-back of every shard, closed ones included, holds
// every acknowledged write once, in per-key order within each shard.
// EDGEHUB_CHAOS_DURATION sets the length (default 75 s; 25 s with -short,
// as .ci/run runs it).
func TestReshardCrashLoop(t *testing.T) {
	d := envDuration(t, "EDGEHUB_CHAOS_DURATION", 75*time.Second)
	if testing.Short() {
		d = 25 * time.Second
	}
	cfgFile := filepath.Join(t.TempDir(), "hub.toml")
	cfg := hubConfig{Name: "chaos", DataDir: filepath.Join(t.TempDir(), "data"), QUIC: testutil.FreeAddr(t, "udp"),
		Sync: "always", Stream: "rs", Shards: 2}
	writeConfig(t, cfgFile, cfg)
	path := historyPath(t)
	rec, err := CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	h := mustStartHub(t, cfgFile)
	r := &resharder{tb: t, admin: adminClient{http: &http.Client{Timeout: 10 * time.Second}, stream: "rs"},
		now: make(chan struct{}, 1), kinds: map[string]int{}}
	if _, err := r.restarted(context.Background(), h.admin); err != nil {
		t.Fatal(err)
	}
	w := newWorkload(t, rec, cfg.QUIC, "rs")
	w.producers, w.rate = 3, 300
	w.start(false)
	rctx, rcancel := context.WithCancel(context.Background())
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() { defer rwg.Done(); r.run(rctx) }()

	kills, advanced := 0, 0
	end := time.Now().Add(d)
	for time.Now().Before(end) && !t.Failed() {
		time.Sleep(time.Second + rand.N(2*time.Second))
		if h.exited() {
			t.Fatalf("hub died by itself:\n%s", h.logs())
		}
		if rand.N(2) == 0 {
			// Aim at a reshard in flight: ask for one, give it up to
			// 3 ms to reach the hub, kill.
			select {
			case r.now <- struct{}{}:
			default:
			}
			time.Sleep(rand.N(3 * time.Millisecond))
		}
		h.kill()
		kills++
		h, err = startHub(t, cfgFile)
		if err != nil {
			rcancel()
			w.stop()
			t.Fatalf("restart %d: %v", kills, err)
		}
		adv, err := r.restarted(context.Background(), h.admin)
		if err != nil {
			t.Errorf("kill %d: %v", kills, err)
		}
		if adv {
			advanced++
		}
	}
	rcancel()
	rwg.Wait()
	w.stopProducers()
	w.stop()
	h.stop(t)
	readBack(t, rec, cfg.DataDir, "rs", "")
	rep := checkHistory(t, rec, path)
	r.mu.Lock()
	t.Logf("CHAOS FIGURES %s: %d kills; %d reshards answered (%v), %d refused, %d cut by a kill (%d of them had committed); final layout version %d, %d shard ids, %d open; %s",
		t.Name(), kills, r.done, r.kinds, r.refused, r.broken, advanced, r.last.LayoutVersion, len(r.last.Shards), r.last.OpenShards, rep.Summary())
	t.Logf("chaos-figure crashes-survived %d", kills)
	t.Logf("chaos-figure reshards %d", r.done+advanced)
	t.Logf("chaos-figure records-checked %d", rep.RecordsChecked)
	t.Logf("producer errors:%s", w.errSummary())
	done := r.done
	r.mu.Unlock()
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if kills < 3 || done < 10 || rep.Acked < 1000 {
		t.Fatalf("the run did not exercise the hub: %d kills, %d reshards; %s", kills, done, rep.Summary())
	}
}

// TestReshardLayoutCheck shows that checkLayout, which TestReshardCrashLoop
// trusts, finds each kind of broken layout.
func TestReshardLayoutCheck(t *testing.T) {
	sh := func(id int, state, lo, hi string, parents, children []uint32) layoutShard {
		return layoutShard{Shard: id, State: state, HashStart: lo, HashEnd: hi, Parents: parents, Children: children}
	}
	const (
		zero = "0000000000000000"
		mid  = "8000000000000000"
		mid1 = "7fffffffffffffff"
		top  = "ffffffffffffffff"
	)
	valid := streamLayout{LayoutVersion: 1, OpenShards: 2, Shards: []layoutShard{
		sh(0, "closed", zero, top, nil, []uint32{1, 2}),
		sh(1, "open", zero, mid1, []uint32{0}, nil),
		sh(2, "open", mid, top, []uint32{0}, nil),
	}}
	if err := checkLayout(valid); err != nil {
		t.Fatalf("a valid split reported: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(l *streamLayout)
	}{
		{"gap", func(l *streamLayout) { l.Shards[2].HashStart = "8000000000000001" }},
		{"overlap", func(l *streamLayout) { l.Shards[2].HashStart = mid1 }},
		{"top not covered", func(l *streamLayout) { l.Shards[2].HashEnd = "fffffffffffffffe" }},
		{"bottom not covered", func(l *streamLayout) { l.Shards[1].HashStart = "0000000000000001" }},
		{"missing child", func(l *streamLayout) { l.Shards[0].Children = []uint32{1, 7} }},
		{"closed without children", func(l *streamLayout) { l.Shards[0].Children = nil }},
		{"open count", func(l *streamLayout) { l.OpenShards = 3 }},
		{"parent still open", func(l *streamLayout) { l.Shards[0].State = "open" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := valid
			l.Shards = slices.Clone(valid.Shards)
			tc.mutate(&l)
			err := checkLayout(l)
			if err == nil {
				t.Fatal("not reported")
			}
			t.Logf("reported: %v", err)
		})
	}
}
