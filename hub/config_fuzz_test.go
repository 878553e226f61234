package hub

import (
	"errors"
	"os"
	"testing"
	"time"
)

// FuzzParseConfig checks that any input either decodes to a valid config or
// fails with located *ConfigErrors, never panics.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"[hub]\nname = \"a\"\ntags = [\"x\"]\n",
		"[[stream]]\nname = \"s\"\nshards = 4\nretention = \"168h\"\nmax_bytes = \"10GiB\"\nreplicate = [\"tag:a\"]\n",
		"stream = [{ name = \"a\" }]\nhub.name = \"b\"\n",
		"[store]\nsync = \"interval\"\nsync_interval = \"1s\"\nmax_record_bytes = 1024\n",
		"[hub]\nsite = \"\"\"\n[x]\n\"\"\"\nbogus = 1\n",
		"[stream]\nname = 1\n[[hub]]\n",
		"[[stream]]\nname = \"s\"\nshards = 2\n[stream.autosplit]\nbytes = \"4GiB\"\nrate = \"8MiB/s\"\nrecords_rate = 5\nfor = \"1m\"\nmax_shards = 4\ncooldown = \"1h\"\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("f.toml", data)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("ParseConfig accepted a config that Validate rejects: %v", verr)
			}
			return
		}
		for _, e := range flatten(err) {
			var ce *ConfigError
			if !errors.As(e, &ce) || ce.File != "f.toml" {
				t.Fatalf("problem %q (%T) is not a *ConfigError naming the file", e, e)
			}
		}
	})
}

// FuzzParseSize checks that accepted sizes are non-negative and survive a
// String round trip.
func FuzzParseSize(f *testing.F) {
	for _, seed := range []string{"0", "1048576", "10GiB", "512MB", "1.5GiB", " 4 kib ", "9000000TiB", "-1", "1e3"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
		back, err := ParseSize(n.String())
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d; String %q parses to %d, %v", s, n, n.String(), back, err)
		}
	})
}

// BenchmarkParseConfig loads the documented hub.toml.
func BenchmarkParseConfig(b *testing.B) {
	data, err := os.ReadFile("../hub.toml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseConfig("hub.toml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseByteRate checks that accepted rates are non-negative and survive
// a String round trip.
func FuzzParseByteRate(f *testing.F) {
	for _, seed := range []string{"0", "1048576", "8MiB/s", "500KB/s", "1.5GiB/s", "8MiB", "/s", "-1/s"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseByteRate(s)
		if err != nil {
			return
		}
		if r < 0 {
			t.Fatalf("ParseByteRate(%q) = %d, negative", s, r)
		}
		back, err := ParseByteRate(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseByteRate(%q) = %d; String %q parses to %d, %v", s, r, r.String(), back, err)
		}
	})
}

// FuzzDecodeAutosplit: the policy stored in a stream's metadata (read back
// from disk at every sample) never panics the decoder, and what decodes
// survives an encode round trip.
func FuzzDecodeAutosplit(f *testing.F) {
	for _, seed := range []string{
		"",
		encodeAutosplit(AutosplitConfig{Bytes: 4 << 30, Rate: 8 << 20, RecordsRate: 5, For: Duration(10 * time.Minute), MaxShards: 32, Cooldown: Duration(30 * time.Minute)}, autosplitFromAPI),
		`{"bytes":"4GiB","rate":"8MiB/s","for":"1m","max_shards":4,"cooldown":"1h","from":"config"}`,
		`{"bytes":-1}`, `{"for":7}`, `[]`, `{`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, from, ok, err := decodeAutosplit(s)
		if err != nil || !ok {
			return
		}
		b, from2, ok2, err := decodeAutosplit(encodeAutosplit(a, from))
		if err != nil || !ok2 || b != a || from2 != from {
			t.Fatalf("%q decodes to %+v from %q; re-encoded: %+v from %q, %v", s, a, from, b, from2, err)
		}
	})
}
