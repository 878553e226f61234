package hub

import (
	"errors"
	"os"
	"testing"
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
