package hub

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHubIdentity(t *testing.T) {
	tests := []struct {
		name string
		// prepare runs on the data directory of a hub first started as
		// "edge-a" (and closed), before the second start.
		prepare  func(tb testing.TB, dir string)
		second   string // name of the second start
		rename   bool
		wantErr  error    // nil: the second start succeeds
		wantMsg  []string // substrings of the error
		wantFile string   // IdentityFile content after the second start
	}{
		{name: "same name", second: "edge-a", wantFile: "edge-a\n"},
		{
			name: "renamed refused", second: "edge-b", wantErr: ErrNameChanged,
			wantMsg:  []string{`"edge-a"`, `"edge-b"`, IdentityFile, "--rename"},
			wantFile: "edge-a\n",
		},
		{name: "renamed with --rename", second: "edge-b", rename: true, wantFile: "edge-b\n"},
		{name: "rename flag without a change", second: "edge-a", rename: true, wantFile: "edge-a\n"},
		{
			name:    "data dir from before identity files adopts the name",
			prepare: func(tb testing.TB, dir string) { mustRemove(tb, filepath.Join(dir, IdentityFile)) },
			second:  "edge-c", wantFile: "edge-c\n",
		},
		{
			name: "damaged file",
			prepare: func(tb testing.TB, dir string) {
				if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("two words\n"), 0o644); err != nil {
					tb.Fatal(err)
				}
			},
			second: "edge-a", wantMsg: []string{"damaged", IdentityFile}, wantFile: "two words\n",
		},
		{
			name: "empty file",
			prepare: func(tb testing.TB, dir string) {
				if err := os.WriteFile(filepath.Join(dir, IdentityFile), nil, 0o644); err != nil {
					tb.Fatal(err)
				}
			},
			second: "edge-a", wantMsg: []string{"damaged"}, wantFile: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Hub.Name = "edge-a"
			h, err := New(cfg)
			if err != nil {
				t.Fatalf("first start: %v", err)
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, filepath.Join(cfg.Hub.DataDir, IdentityFile)); got != "edge-a\n" {
				t.Fatalf("after first start %s holds %q", IdentityFile, got)
			}
			if tt.prepare != nil {
				tt.prepare(t, cfg.Hub.DataDir)
			}
			cfg.Hub.Name, cfg.Rename = tt.second, tt.rename
			h, err = New(cfg)
			failed := tt.wantErr != nil || len(tt.wantMsg) > 0
			switch {
			case !failed && err != nil:
				t.Fatalf("second start: %v", err)
			case failed && err == nil:
				h.Close()
				t.Fatal("second start succeeded")
			case err == nil:
				h.Close()
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if got := readFile(t, filepath.Join(cfg.Hub.DataDir, IdentityFile)); got != tt.wantFile {
				t.Errorf("%s holds %q, want %q", IdentityFile, got, tt.wantFile)
			}
			if failed {
				// A refused start released the data directory: the right
				// name starts at once.
				cfg.Hub.Name, cfg.Rename = "edge-a", false
				if tt.wantFile == "edge-a\n" {
					h, err := New(cfg)
					if err != nil {
						t.Fatalf("start under the recorded name after a refusal: %v", err)
					}
					h.Close()
				}
			}
			matches, _ := filepath.Glob(filepath.Join(cfg.Hub.DataDir, IdentityFile+".*"))
			if len(matches) > 0 {
				t.Errorf("temporary files left behind: %v", matches)
			}
		})
	}
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func mustRemove(tb testing.TB, path string) {
	tb.Helper()
	if err := os.Remove(path); err != nil {
		tb.Fatal(err)
	}
}
