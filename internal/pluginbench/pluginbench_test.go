package pluginbench

import (
	"os"
	"testing"
)

// TestRun: each module marked Host is measured once through the host, and
// with Ingest every round is reported; nothing to measure is an error.
func TestRun(t *testing.T) {
	wasm, err := os.ReadFile("../../examples/wat-passthrough/passthrough.wasm")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Plugins: []Plugin{{File: "a.wasm", Wasm: wasm, Host: true}, {File: "a.wasm", Wasm: wasm}},
		Records: 1500, Batch: 1000, ValueSize: 64, JSON: true, Ingest: true, Producers: 2, Rounds: 2,
	}
	var hosts []HostResult
	var rounds []Round
	sum, err := Run(t.Context(), cfg, Report{Host: func(r HostResult) { hosts = append(hosts, r) }, Round: func(r Round) { rounds = append(rounds, r) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].File != "a.wasm" || hosts[0].Records != 2000 || hosts[0].Outputs != 2000 || hosts[0].Calls != 2 {
		t.Fatalf("host results %+v, want one of 2000 records in 2 calls", hosts)
	}
	if len(rounds) != 2 || rounds[1].Round != 2 || rounds[0].Base <= 0 || rounds[0].With <= 0 || sum.MedianRatio <= 0 {
		t.Fatalf("rounds %+v, summary %+v", rounds, sum)
	}
	if _, err := Run(t.Context(), Config{Records: 1, Batch: 1}, Report{}); err == nil {
		t.Fatal("no plugins: no error")
	}
}
