package gossip

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/edgehub/edgehub/internal/gossiptest"
	"github.com/edgehub/edgehub/internal/testutil"
)

type memberOpts struct {
	label   string
	keyFile string
	meta    NodeMeta
	net     *gossiptest.FaultNet
	profile string
	join    []string
}

// newMember starts a member on loopback with fast timings and closes it at
// the end of the test.
func newMember(t testing.TB, name string, o memberOpts) *Gossip {
	t.Helper()
	cfg := DefaultConfig(name)
	cfg.Bind = "127.0.0.1:0"
	cfg.Profile = ProfileLocal
	if o.profile != "" {
		cfg.Profile = o.profile
	}
	cfg.Label = o.label
	cfg.SecretKeyFile = o.keyFile
	cfg.Meta = o.meta
	cfg.Join = o.join
	cfg.KeyCheckInterval = 0
	cfg.RejoinInterval = 200 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if o.net != nil {
		tr, err := o.net.Transport(cfg.Bind)
		if err != nil {
			t.Fatal(err)
		}
		cfg.opts.Transport = tr
	}
	if cfg.Profile == ProfileLocal {
		cfg.opts.Tune = func(mc *memberlist.Config) {
			mc.GossipInterval = 20 * time.Millisecond
			mc.ProbeInterval = 200 * time.Millisecond
			mc.PushPullInterval = time.Second
		}
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func aliveNames(g *Gossip) []string {
	var out []string
	for _, m := range g.Members() {
		if m.State == StateAlive {
			out = append(out, m.Name)
		}
	}
	return out
}

func writeKeys(t testing.TB, path string, keys ...[]byte) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# federation keys, primary first\n")
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	}
	// A new mtime even within the file system's timestamp granularity: the
	// size check catches same-length rewrites only with a changed mtime.
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMembershipMetaAndEntries(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	writeKeys(t, keyFile, newKey(t))
	ctx := context.Background()
	a := newMember(t, "a", memberOpts{label: "fed1", keyFile: keyFile, meta: NodeMeta{Site: "s1", Region: "eu", Tags: []string{"edge"}, QUIC: "127.0.0.1:7001"}})
	b := newMember(t, "b", memberOpts{label: "fed1", keyFile: keyFile, meta: NodeMeta{Site: "s2", Region: "eu", Tags: []string{"region", "edge"}, QUIC: "127.0.0.1:7002"}})
	c := newMember(t, "c", memberOpts{label: "fed1", keyFile: keyFile, meta: NodeMeta{Site: "s3", Region: "us", QUIC: "127.0.0.1:7003"}})
	for _, g := range []*Gossip{b, c} {
		if _, err := g.Join(ctx, a.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []*Gossip{a, b, c} {
		testutil.Eventually(t, g.Name()+" sees 3 members", func() bool { return len(aliveNames(g)) == 3 })
	}
	m, ok := c.Member("b")
	if !ok || m.Meta.Site != "s2" || !m.Meta.HasTag("region") || m.Meta.QUIC != "127.0.0.1:7002" || m.Self {
		t.Fatalf("c's view of b: %+v", m)
	}
	if self, _ := c.Member("c"); !self.Self {
		t.Fatalf("c is not self in its own view: %+v", self)
	}

	a.PublishDef("temps", Def{Version: 5, Spec: []byte(`{"shards":2}`)})
	a.PublishVector("temps", "a", Vector{Seqs: []uint64{10, 20}})
	b.PublishVector("temps", "a", Vector{Seqs: []uint64{7, 20}})
	for _, g := range []*Gossip{a, b, c} {
		testutil.Eventually(t, g.Name()+" learns temps", func() bool {
			v, ok := g.Streams()["temps"]
			if !ok {
				return false
			}
			d, ok := v.Def()
			return ok && d.Version == 5 && slices.Equal(v.Vectors["a"]["a"].Seqs, []uint64{10, 20}) &&
				slices.Equal(v.Vectors["b"]["a"].Seqs, []uint64{7, 20})
		})
	}
	// A newer definition from another hub wins everywhere; a deletion
	// newer still hides the stream.
	c.PublishDef("temps", Def{Version: 6, Spec: []byte(`{"shards":2,"retention":1}`)})
	for _, g := range []*Gossip{a, b, c} {
		testutil.Eventually(t, g.Name()+" takes the newer def", func() bool {
			d, ok := g.Streams()["temps"].Def()
			return ok && d.Version == 6
		})
	}
	b.PublishDef("temps", Def{Version: 7, Deleted: true})
	for _, g := range []*Gossip{a, b, c} {
		testutil.Eventually(t, g.Name()+" sees the deletion", func() bool {
			_, ok := g.Streams()["temps"].Def()
			return !ok
		})
	}

	// Metadata changes propagate.
	if err := b.SetMeta(ctx, NodeMeta{Site: "s2", Tags: []string{"core"}, QUIC: "127.0.0.1:7102"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a sees b's new meta", func() bool {
		m, _ := a.Member("b")
		return m.Meta.QUIC == "127.0.0.1:7102" && m.Meta.HasTag("core")
	})

	// A graceful leave is seen as left, not dead.
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a sees c left", func() bool {
		m, ok := a.Member("c")
		return ok && m.State == StateLeft
	})
}

func TestLabelAndKeyIsolateFederations(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := filepath.Join(dir, "k1"), filepath.Join(dir, "k2")
	writeKeys(t, k1, newKey(t))
	writeKeys(t, k2, newKey(t))
	ctx := context.Background()
	tests := []struct {
		name           string
		label, keyFile string
	}{
		{name: "other label", label: "fed2", keyFile: k1},
		{name: "other key", label: "fed1", keyFile: k2},
		{name: "no key", label: "fed1"},
	}
	a := newMember(t, "a", memberOpts{label: "fed1", keyFile: k1})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newMember(t, "x-"+strings.ReplaceAll(tt.name, " ", "-"), memberOpts{label: tt.label, keyFile: tt.keyFile})
			if n, err := x.Join(ctx, a.Addr()); err == nil {
				t.Fatalf("join across federations answered by %d members", n)
			}
			if got := aliveNames(a); len(got) != 1 {
				t.Fatalf("a's members after a foreign join: %v", got)
			}
		})
	}
}

// TestKeyRotationWithoutDowntime rotates the federation key in the three
// documented steps while entries keep flowing and no member is ever lost.
func TestKeyRotationWithoutDowntime(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	oldKey, newKeyBytes := newKey(t), newKey(t)
	names := []string{"a", "b", "c"}
	files := map[string]string{}
	var ms []*Gossip
	for _, n := range names {
		files[n] = filepath.Join(dir, n+".keys")
		writeKeys(t, files[n], oldKey)
		ms = append(ms, newMember(t, n, memberOpts{label: "fed", keyFile: files[n]}))
	}
	for _, g := range ms[1:] {
		if _, err := g.Join(ctx, ms[0].Addr()); err != nil {
			t.Fatal(err)
		}
	}
	round := 0
	checkFlow := func(step string) {
		t.Helper()
		round++
		for i, g := range ms {
			g.PublishVector("s", g.Name(), Vector{Seqs: []uint64{uint64(round)}})
			for _, other := range ms {
				testutil.Eventually(t, fmt.Sprintf("%s: %s hears %s", step, other.Name(), names[i]), func() bool {
					v := other.Streams()["s"].Vectors[g.Name()][g.Name()]
					return len(v.Seqs) == 1 && v.Seqs[0] == uint64(round)
				})
			}
		}
		for _, g := range ms {
			if got := aliveNames(g); len(got) != 3 {
				t.Fatalf("%s: %s sees alive %v", step, g.Name(), got)
			}
		}
	}
	checkFlow("before")
	steps := []struct {
		name string
		keys [][]byte
	}{
		{name: "add new key", keys: [][]byte{oldKey, newKeyBytes}},
		{name: "new key primary", keys: [][]byte{newKeyBytes, oldKey}},
		{name: "remove old key", keys: [][]byte{newKeyBytes}},
	}
	for _, st := range steps {
		// Hubs switch one at a time, with traffic in between: the
		// federation runs with mixed keyrings during each step.
		for i, g := range ms {
			writeKeys(t, files[names[i]], st.keys...)
			if err := g.ReloadKeys(); err != nil {
				t.Fatal(err)
			}
			if got := g.Keys(); len(got) != len(st.keys) || string(got[0]) != string(st.keys[0]) {
				t.Fatalf("%s: %s has %d keys after reload", st.name, g.Name(), len(got))
			}
		}
		checkFlow(st.name)
	}
	// The old key no longer opens the federation.
	stale := filepath.Join(dir, "stale")
	writeKeys(t, stale, oldKey)
	x := newMember(t, "x", memberOpts{label: "fed", keyFile: stale})
	if _, err := x.Join(ctx, ms[0].Addr()); err == nil {
		t.Fatal("a member with the retired key joined")
	}
}

func TestKeyFileChangeIsPickedUpByRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	k1, k2 := newKey(t), newKey(t)
	writeKeys(t, file, k1)
	cfg := DefaultConfig("solo")
	cfg.Bind = "127.0.0.1:0"
	cfg.Profile = ProfileLocal
	cfg.SecretKeyFile = file
	cfg.KeyCheckInterval = 10 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	// Make sure the modification time moves even on coarse file systems.
	writeKeys(t, file, k2, k1)
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(file, future, future); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the new primary key", func() bool { return string(g.Keys()[0]) == string(k2) })
	// A broken file is refused and the keys stay.
	if err := os.WriteFile(file, []byte("not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.ReloadKeys(); !errors.Is(err, ErrBadKeyFile) {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if len(g.Keys()) != 2 {
		t.Fatalf("keys after a failed reload: %d", len(g.Keys()))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPartitionHeals cuts a member off, lets both sides publish, heals,
// and checks that both sides learn everything (push/pull and relaying
// cover what broadcasts during the partition could not).
func TestPartitionHeals(t *testing.T) {
	fn := gossiptest.NewFaultNet()
	ctx := context.Background()
	a := newMember(t, "a", memberOpts{net: fn, label: "p"})
	b := newMember(t, "b", memberOpts{net: fn, label: "p"})
	c := newMember(t, "c", memberOpts{net: fn, label: "p", join: []string{a.Addr()}})
	for _, g := range []*Gossip{b, c} {
		if _, err := g.Join(ctx, a.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []*Gossip{a, b, c} {
		testutil.Eventually(t, "full membership", func() bool { return len(aliveNames(g)) == 3 })
	}
	fn.Cut(c.Addr(), a.Addr())
	fn.Cut(c.Addr(), b.Addr())
	testutil.Eventually(t, "a finds c unreachable", func() bool {
		m, _ := a.Member("c")
		return m.State != StateAlive
	})
	a.PublishDef("left-side", Def{Version: 1, Spec: []byte("L")})
	c.PublishDef("right-side", Def{Version: 1, Spec: []byte("R")})
	fn.HealAll()
	// c's rejoin loop (or a's push/pull) reconnects the sides.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go c.Run(cctx)
	for _, g := range []*Gossip{a, b, c} {
		testutil.Eventually(t, g.Name()+" learns both sides", func() bool {
			s := g.Streams()
			_, l := s["left-side"].Def()
			_, r := s["right-side"].Def()
			return l && r && len(aliveNames(g)) == 3
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr error
	}{
		{name: "default", mutate: func(*Config) {}, wantErr: ErrUnencrypted},
		{name: "default, unencrypted allowed", mutate: func(c *Config) { c.AllowUnencrypted = true }},
		{name: "loopback without key", mutate: func(c *Config) { c.Bind = "127.0.0.1:7946" }},
		{name: "localhost without key", mutate: func(c *Config) { c.Bind = "localhost:0" }},
		{name: "ipv6 loopback without key", mutate: func(c *Config) { c.Bind = "[::1]:7946" }},
		{name: "wildcard host without key", mutate: func(c *Config) { c.Bind = ":7946" }, wantErr: ErrUnencrypted},
		{name: "lan address without key", mutate: func(c *Config) { c.Bind = "10.0.0.5:7946" }, wantErr: ErrUnencrypted},
		{name: "name without key", mutate: func(c *Config) { c.Bind = "hub-a.example:7946" }, wantErr: ErrUnencrypted},
		{name: "lan address with key file", mutate: func(c *Config) { c.Bind = "10.0.0.5:7946"; c.SecretKeyFile = "keys" }},
		{name: "no name", mutate: func(c *Config) { c.Name = "" }, wantErr: ErrInvalidConfig},
		{name: "bad bind", mutate: func(c *Config) { c.Bind = "nowhere" }, wantErr: ErrInvalidConfig},
		{name: "bad advertise", mutate: func(c *Config) { c.Advertise = "1.2.3.4:99999" }, wantErr: ErrInvalidConfig},
		{name: "bad join", mutate: func(c *Config) { c.Join = []string{"hostonly"} }, wantErr: ErrInvalidConfig},
		{name: "bad profile", mutate: func(c *Config) { c.Profile = "fast" }, wantErr: ErrInvalidConfig},
		{name: "huge meta", mutate: func(c *Config) {
			c.Meta.Tags = []string{strings.Repeat("t", 200), strings.Repeat("u", 200), strings.Repeat("v", 200)}
		}, wantErr: ErrMetaTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig("hub-1")
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	k16 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	k32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name    string
		file    string
		want    int
		wantErr bool
	}{
		{name: "one key", file: k32 + "\n", want: 1},
		{name: "comments and blanks", file: "# primary\n\n" + k16 + "\n  " + k32 + "  \n", want: 2},
		{name: "empty", file: "# nothing\n", wantErr: true},
		{name: "not base64", file: "zz!\n", wantErr: true},
		{name: "bad length", file: base64.StdEncoding.EncodeToString(make([]byte, 20)) + "\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseKeys("f", []byte(tt.file))
			if tt.wantErr {
				if !errors.Is(err, ErrBadKeyFile) {
					t.Fatalf("err = %v, want ErrBadKeyFile", err)
				}
				return
			}
			if err != nil || len(keys) != tt.want {
				t.Fatalf("got %d keys, %v; want %d", len(keys), err, tt.want)
			}
		})
	}
}

func TestLogBridgeLevels(t *testing.T) {
	var buf strings.Builder
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ll := newLogLogger(l)
	ll.Printf("[DEBUG] memberlist: hidden")
	ll.Printf("[WARN] memberlist: shown warning")
	ll.Printf("[ERR] memberlist: shown error")
	out := buf.String()
	tests := []struct {
		name, want string
		present    bool
	}{
		{name: "debug filtered", want: "hidden", present: false},
		{name: "warn level", want: `level=WARN msg="memberlist: shown warning"`, present: true},
		{name: "error level", want: `level=ERROR msg="memberlist: shown error"`, present: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(out, tt.want) != tt.present {
				t.Fatalf("log output %q: contains %q = %v", out, tt.want, !tt.present)
			}
		})
	}
}

// TestPruneGoneMembers: a member dead for longer than PruneAfter is
// forgotten with the entries it published, and a copy of them relayed by a
// member that has not pruned it yet is refused; it is listed again once it
// is back. Deletion tombstones expire after TombstoneTTL.
func TestPruneGoneMembers(t *testing.T) {
	a := newMember(t, "a", memberOpts{label: "prune"})
	b := newMember(t, "b", memberOpts{label: "prune"})
	c := newMember(t, "c", memberOpts{label: "prune"})
	ctx := context.Background()
	for _, g := range []*Gossip{b, c} {
		if _, err := g.Join(ctx, a.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	c.PublishDef("temps", Def{Version: 3, Spec: []byte("x")})
	testutil.Eventually(t, "a to hear c's definition", func() bool {
		_, ok := a.Streams()["temps"].Defs["c"]
		return ok
	})
	c.Close() // dead, not left
	var gone Member
	testutil.Eventually(t, "a to find c dead", func() bool {
		gone, _ = a.Member("c")
		return gone.State == StateDead
	})
	if gone.Since.IsZero() {
		t.Fatal("a dead member has no Since")
	}
	a.sweep(gone.Since.Add(a.cfg.PruneAfter / 2))
	if _, ok := a.Member("c"); !ok {
		t.Fatal("c pruned before prune_after")
	}
	a.sweep(gone.Since.Add(a.cfg.PruneAfter + time.Second))
	if _, ok := a.Member("c"); ok {
		t.Fatal("c not pruned after prune_after")
	}
	if _, ok := a.Streams()["temps"]; ok {
		t.Fatal("c's entries outlive its pruning")
	}
	// b still holds c's entry; its relay must not bring it back.
	b.mu.Lock()
	relayed := b.tab.sorted()
	b.mu.Unlock()
	a.mergeEntries(relayed, false)
	if _, ok := a.Streams()["temps"].Defs["c"]; ok {
		t.Fatal("a took back a pruned member's entry")
	}

	// Tombstones: an expired one is swept, and not taken back.
	now := time.Now()
	b.PublishDef("fresh", Def{Version: 9, Deleted: true})
	a.mergeEntries([]*entry{{kind: kindDef, hub: "b", stream: "old", def: Def{Version: 8, Deleted: true},
		version: uint64(now.Add(-a.cfg.TombstoneTTL - time.Minute).UnixNano())}}, false)
	if _, ok := a.Streams()["old"]; ok {
		t.Fatal("a merged an expired tombstone")
	}
	testutil.Eventually(t, "a to hear b's tombstone", func() bool {
		_, ok := a.Streams()["fresh"].Defs["b"]
		return ok
	})
	a.sweep(now)
	if _, ok := a.Streams()["fresh"].Defs["b"]; !ok {
		t.Fatal("a swept a fresh tombstone")
	}
	a.sweep(now.Add(a.cfg.TombstoneTTL + time.Minute))
	if _, ok := a.Streams()["fresh"]; ok {
		t.Fatal("a kept a tombstone past its TTL")
	}
}
