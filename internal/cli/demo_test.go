package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/plugintest"
	"github.com/edgehub/edgehub/internal/testutil"
)

var (
	demoDashboardRE = regexp.MustCompile(`(?m)^  dashboard +(http://\S+)/$`)
	demoDataDirRE   = regexp.MustCompile(`(?m)^  data dir +(\S+)$`)
)

// TestDemo runs `hub demo` as a user does, in an empty directory with a
// temporary directory of its own, until the region holds replicated
// aggregates and alerts and the consumer group has committed, then stops
// it with Ctrl-C's SIGINT: it must exit 0, stop its hubs and leave nothing
// but its data dir. The hubs trust each other by pinned certificates: a
// TLS failure between them fails the test. It runs under -short too: the builds are cached by the
// go command, and the run itself takes some seconds.
func TestDemo(t *testing.T) {
	bin := testutil.Build(t, "github.com/edgehub/edgehub/cmd/hub", nil)
	root := plugintest.ModuleRoot(t)
	cwd, tmp := t.TempDir(), t.TempDir()

	cmd := exec.Command(bin, "demo", "--window", "1s", "--interval", "1s", "--source", root)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, errOut testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("hub demo output:\n%s\nstderr:\n%s", out.String(), errOut.String())
		}
	})
	alive := func() bool {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("hub demo exited early: %v", err)
		default:
		}
		return true
	}

	var admin, dataDir string
	testutil.Eventually(t, "hub demo prints the dashboard URL", func() bool {
		alive()
		if m := demoDashboardRE.FindStringSubmatch(out.String()); m != nil {
			admin = m[1]
		}
		return admin != ""
	})
	m := demoDataDirRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("hub demo printed no data dir")
	}
	dataDir = m[1]
	if filepath.Dir(dataDir) != tmp {
		t.Fatalf("data dir %s, want a new directory in TMPDIR %s", dataDir, tmp)
	}

	get := func(path string, v any) bool {
		resp, err := http.Get(admin + path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
	}
	// The region runs no plugin: its aggregates and alerts are replicated
	// from both edges.
	testutil.Eventually(t, "aggregates and alerts of both edges replicated to the region", func() bool {
		alive()
		var s struct {
			Streams []struct {
				Name    string `json:"name"`
				Records int64  `json:"records"`
			} `json:"streams"`
		}
		var p struct {
			Members []struct {
				Name     string `json:"name"`
				TLSError string `json:"tls_error"`
			} `json:"members"`
			Pulls []struct {
				Stream, Origin, State string
			} `json:"pulls"`
		}
		if !get("/v1/streams", &s) || !get("/v1/peers", &p) {
			return false
		}
		have := map[string]int64{}
		for _, st := range s.Streams {
			have[st.Name] = st.Records
		}
		following := map[string]bool{}
		for _, pl := range p.Pulls {
			following[pl.Stream+" from "+pl.Origin] = pl.State == "following"
		}
		for _, m := range p.Members {
			if m.TLSError != "" {
				t.Fatalf("the region cannot verify %s: %s", m.Name, m.TLSError)
			}
		}
		if _, ok := have["readings"]; ok {
			t.Fatal("the region holds the edges' local readings stream")
		}
		return have["aggregates"] > 0 && have["alerts"] > 0 &&
			following["aggregates from edge-berlin"] && following["aggregates from edge-paris"] &&
			following["alerts from edge-berlin"] && following["alerts from edge-paris"]
	})
	testutil.Eventually(t, "the consumer group at the region commits with two members", func() bool {
		alive()
		var g struct {
			Members []struct{} `json:"members"`
			Shards  []struct {
				Committed uint64 `json:"committed"`
			} `json:"shards"`
		}
		if !get("/v1/groups/analytics", &g) || len(g.Members) != 2 {
			return false
		}
		committed := 0
		for _, s := range g.Shards {
			if s.Committed > 0 {
				committed++
			}
		}
		return committed == len(g.Shards) && committed > 0
	})
	testutil.Eventually(t, "the summary shows windows, alerts and the group consuming", func() bool {
		alive()
		o := out.String()
		// temp-3 sends over HTTP ingest, the others over QUIC.
		return regexp.MustCompile(`(?m)^ +window +\S+ +berlin/temp-1 .* berlin/temp-3 \d`).MatchString(o) &&
			regexp.MustCompile(`(?m)^ +window +\S+ +paris/temp-1 `).MatchString(o) &&
			regexp.MustCompile(`(?m)^ +alert +\S+/temp-\d (threshold|rate): `).MatchString(o) &&
			regexp.MustCompile(`(?m)^ +group +analytics at region-eu: 2 members, [1-9]\d* aggregates consumed`).MatchString(o) &&
			regexp.MustCompile(`(?m)^ +federation +3/3 members alive, pulls to region-eu: \d+ following; lag \d+ aggregates, \d+ alerts$`).MatchString(o)
	})

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("hub demo after SIGINT: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("hub demo still running 90s after SIGINT")
	}
	if !strings.Contains(out.String(), "hub demo: stopped; hub configs, logs and data are kept in "+dataDir) {
		t.Fatal("hub demo did not say where its data dir is")
	}
	for _, h := range []string{"region-eu", "edge-berlin", "edge-paris"} {
		b, err := os.ReadFile(filepath.Join(dataDir, h, "hub.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `msg="hub stopped"`) {
			t.Errorf("%s did not stop cleanly; its log ends:\n%s", h, lastLines(string(b), 10))
		}
	}
	if runtime.GOOS == "linux" {
		if procs := processesMentioning(t, dataDir); len(procs) > 0 {
			t.Errorf("processes left running: %v", procs)
		}
	}
	for dir, want := range map[string][]string{cwd: nil, tmp: {filepath.Base(dataDir)}} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != strings.Join(want, " ") {
			t.Errorf("%s holds %q, want %q", dir, names, want)
		}
	}
}

// processesMentioning lists the command lines of running processes naming
// s (each demo hub runs `hub serve --config DATA/NAME/hub.toml`).
func processesMentioning(tb testing.TB, s string) []string {
	tb.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		tb.Fatal(err)
	}
	var found []string
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		if cl := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cl, s) {
			found = append(found, cl)
		}
	}
	return found
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestDemoAgain runs `hub demo` twice on one --data: the second run's first
// rate counts only its own readings (it counted the first run's too, so it
// read several times the sensors' rate) and says how many are earlier.
func TestDemoAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("two demo runs; TestDemo covers a single run")
	}
	bin := testutil.Build(t, "github.com/edgehub/edgehub/cmd/hub", nil)
	root := plugintest.ModuleRoot(t)
	data := filepath.Join(t.TempDir(), "demo")
	run := func(d string) string {
		cmd := exec.Command(bin, "demo", "--data", data, "--duration", d, "--interval", "1s", "--window", "1s",
			"--sensors", "1", "--rate", "10", "--source", root)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hub demo: %v\n%s", err, out)
		}
		return string(out)
	}
	first := run("8s")
	second := run("3s")
	m := regexp.MustCompile(`(?m)^\[ 0:0\d\] readings +edge-berlin (\d+)/s \((\d+), (\d+) from earlier runs\)`).FindStringSubmatch(second)
	if m == nil {
		t.Fatalf("the second run's readings say nothing of the earlier run:\n%s\nfirst run:\n%s", second, first)
	}
	// One sensor at 10/s: the earlier run left ~80 records, which counted
	// as new would show as 40/s or more in the first block.
	if rate, _ := strconv.Atoi(m[1]); rate > 20 {
		t.Fatalf("the second run's first rate is %d/s for one sensor at 10/s: earlier records counted\n%s", rate, second)
	}
}
