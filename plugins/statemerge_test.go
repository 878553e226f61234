package plugins

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/wasmhost"
)

// TestStateMergeExport calls eh_state_merge of a real module (summerge:
// the larger of two running sums) the way a handoff does, and each ABI
// rule of docs/plugin-abi.md "eh_state_merge".
func TestStateMergeExport(t *testing.T) {
	wasm := plugintest.Wasm(t, "plugins/testdata/summerge")
	plain := plugintest.Wasm(t, "plugins/testdata/sum")
	eng, err := wasmhost.New(wasmhost.Config{CacheDir: filepath.Join(t.TempDir(), "cache"), Logger: testLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	compile := func(b []byte) *wasmhost.Module {
		mod, err := eng.Compile(context.Background(), b, wasmhost.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mod.Close() })
		return mod
	}
	mod, plainMod := compile(wasm), compile(plain)
	if !mod.HasStateMerge() || plainMod.HasStateMerge() {
		t.Fatalf("HasStateMerge: summerge %v, sum %v", mod.HasStateMerge(), plainMod.HasStateMerge())
	}
	if (&lineage{mod: plainMod}).merger() != nil {
		t.Fatal("a module without eh_state_merge has a merger")
	}
	merger := func(mode string) stateMerger {
		def := Definition{Name: "p", Config: map[string]string{"merge_mode": mode}}
		return (&lineage{mod: mod, def: def, in: nil, inName: "in"}).merger()
	}
	ctx := context.Background()
	v, keep, err := merger("")(ctx, 2, []byte("k"), []byte("5"), []byte("12"))
	if err != nil || !keep || string(v) != "12" {
		t.Fatalf("merge of 5 and 12: %q keep %v err %v, want 12", v, keep, err)
	}
	if _, keep, err := merger("")(ctx, 2, []byte("drop"), []byte("1"), []byte("2")); err != nil || keep {
		t.Fatalf("state_delete answer: keep %v err %v, want the key dropped", keep, err)
	}
	for _, tt := range []struct{ mode, want string }{
		{"none", "returned without state_set or state_delete of the key"},
		{"get", "state_get during eh_state_merge"},
		{"other", "may only set or delete the key it merges"},
		{"fail", "status 3"},
	} {
		_, _, err := merger(tt.mode)(ctx, 2, []byte("k"), []byte("1"), []byte("2"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("merge_mode %s: err %v, want %q", tt.mode, err, tt.want)
		}
		if tt.mode != "fail" && !errors.Is(err, wasmhost.ErrABI) {
			t.Errorf("merge_mode %s: %v is not an ABI violation", tt.mode, err)
		}
	}
}
