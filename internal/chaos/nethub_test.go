//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

// envLabHub passes the hub binary from the outer test to the inner.
const envLabHub = "EDGEHUB_NETLAB_HUB"

// labBinary passes the hub binary TestMain built (with the chaos tag, for
// the clock seam) to the inner test and the children it starts, whose
// TestMain then builds nothing.
func labBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv(envLabHub); b != "" {
		return b
	}
	os.Setenv(envLabHub, hubBinary)
	t.Cleanup(func() { os.Unsetenv(envLabHub) })
	return hubBinary
}

// labHub is a `hub serve` child process in its namespace.
type labHub struct {
	name  string // "a", "b", "c": also the hub's name
	lab   *netLab
	bin   string
	dir   string
	extra string // more hub.toml, appended
	env   []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (h *labHub) admin() string { return "http://" + hubIP(h.name) + ":7441" }
func (h *labHub) quic() string  { return hubIP(h.name) + ":7440" }
func (h *labHub) data() string  { return filepath.Join(h.dir, "data") }

func newLabHub(t *testing.T, lab *netLab, name, extra string) *labHub {
	t.Helper()
	h := &labHub{name: name, lab: lab, bin: os.Getenv(envLabHub), dir: t.TempDir(), extra: extra}
	if h.bin == "" {
		t.Fatal("no hub binary from the outer test")
	}
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	if err := os.WriteFile(filepath.Join(h.dir, "gossip.keys"), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "admin.token"), []byte(labAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var join []string
	for _, o := range labHubs {
		if o != name {
			join = append(join, fmt.Sprintf("%q", hubIP(o)+":7946"))
		}
	}
	cfg := fmt.Sprintf(`[hub]
name = %q
site = "site-%s"
data_dir = %q
[listen]
quic = %q
admin = "%s:7441"
[admin]
# The lab's namespaces are reachable only from this test; its admin calls
# carry no token.
insecure_allow_unauthenticated = true
[tls]
hosts = [%q]
[[admin.token]]
name = "netlab"
role = "write"
token_file = %q
[gossip]
bind = "%s:7946"
join = [%s]
secret_key_file = %q
label = "netlab"
profile = "local"
peer_insecure_skip_verify = true
%s`, name, name, h.data(), h.quic(), hubIP(name), hubIP(name), filepath.Join(h.dir, "admin.token"), hubIP(name), strings.Join(join, ", "),
		filepath.Join(h.dir, "gossip.keys"), extra)
	if err := os.WriteFile(filepath.Join(h.dir, "hub.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.signal(syscall.SIGCONT) // a paused hub cannot die gracefully
		h.kill()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(h.dir, "hub.log"))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("hub %s log (last lines):\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
		if b, err := os.ReadFile(filepath.Join(h.dir, "hub.log")); err == nil && os.Getenv("EDGEHUB_NETLAB_KEEP") != "" {
			os.WriteFile(filepath.Join(os.Getenv("EDGEHUB_NETLAB_KEEP"), name+".log"), b, 0o644)
		}
	})
	return h
}

// start runs the hub and waits until its admin API answers.
func (h *labHub) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(h.dir, "hub.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs the hub: the pid is the hub's own, so signals
	// (SIGSTOP, SIGKILL) reach it.
	cmd := exec.Command("ip", "netns", "exec", h.lab.ns(h.name), h.bin, "serve", "--config", filepath.Join(h.dir, "hub.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), h.env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	h.mu.Lock()
	h.cmd, h.done = cmd, done
	h.mu.Unlock()
	testutil.EventuallyWithin(t, 60*time.Second, "hub "+h.name+" ready", func() bool {
		select {
		case <-done:
			t.Fatalf("hub %s exited at start", h.name)
		default:
		}
		resp, err := http.Get(h.admin() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (h *labHub) signal(sig syscall.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil && h.cmd.Process != nil {
		h.cmd.Process.Signal(sig)
	}
}

// stop ends the hub with SIGTERM and waits for it.
func (h *labHub) stop(t *testing.T) {
	t.Helper()
	h.signal(syscall.SIGTERM)
	h.mu.Lock()
	done := h.done
	h.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("hub %s did not stop within 30s of SIGTERM", h.name)
		h.kill()
	}
}

func (h *labHub) kill() {
	h.signal(syscall.SIGKILL)
	h.mu.Lock()
	done := h.done
	h.mu.Unlock()
	if done != nil {
		<-done
	}
}

var labHTTP = &http.Client{Timeout: 5 * time.Second}

// labAdminToken is every lab hub's admin token: an admin API on a
// non-loopback address needs one.
const labAdminToken = "netlab-admin-token-not-a-secret"

func adminJSON(method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+labAdminToken)
	resp, err := labHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// labPeers is the part of GET /v1/peers the tests judge.
type labPeers struct {
	Members []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"members"`
	Lag []struct {
		Stream  string `json:"stream"`
		Origin  string `json:"origin"`
		Records uint64 `json:"records"`
	} `json:"lag"`
	Pulls []struct {
		Stream    string `json:"stream"`
		Origin    string `json:"origin"`
		Shard     int    `json:"shard"`
		Peer      string `json:"peer"`
		State     string `json:"state"`
		Watermark uint64 `json:"watermark"`
		High      uint64 `json:"high"`
		LastError string `json:"last_error"`
	} `json:"pulls"`
	Gaps []json.RawMessage `json:"gaps"`
}

func (h *labHub) peers() (labPeers, error) {
	var p labPeers
	err := adminJSON("GET", h.admin()+"/v1/peers", nil, &p)
	return p, err
}

// alive lists the members h sees alive.
func (h *labHub) alive() []string {
	p, err := h.peers()
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range p.Members {
		if m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	return out
}

func (h *labHub) records(stream string) int64 {
	var s struct {
		Records int64 `json:"records"`
	}
	if adminJSON("GET", h.admin()+"/v1/streams/"+stream, nil, &s) != nil {
		return -1
	}
	return s.Records
}

// members waits until every hub sees every hub alive.
func members(t *testing.T, timeout time.Duration, hubs ...*labHub) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("membership settled after %s", time.Since(start).Round(100*time.Millisecond)) }()
	testutil.EventuallyWithin(t, timeout, "membership to settle", func() bool {
		for _, h := range hubs {
			if len(h.alive()) != len(hubs) {
				return false
			}
		}
		return true
	})
}

// settled waits until every hub sees all of them alive, holds the same
// number of records of stream, reports no replication lag, and stays so
// for a second. It returns that count.
func settled(t *testing.T, timeout time.Duration, stream string, hubs ...*labHub) int64 {
	t.Helper()
	var n int64
	stableSince := time.Time{}
	start := time.Now()
	defer func() {
		t.Logf("settled after %s: %d records of %s everywhere", time.Since(start).Round(100*time.Millisecond), n, stream)
	}()
	defer func() {
		if !t.Failed() {
			return
		}
		for _, h := range hubs {
			p, err := h.peers()
			t.Logf("hub %s: %d records, alive %v, peers err %v", h.name, h.records(stream), h.alive(), err)
			for _, l := range p.Lag {
				if l.Records != 0 {
					t.Logf("  lag %+v", l)
				}
			}
			for _, pl := range p.Pulls {
				if pl.State != "following" {
					t.Logf("  pull %+v", pl)
				}
			}
		}
	}()
	testutil.EventuallyWithin(t, timeout, "membership and "+stream+" to settle", func() bool {
		n = hubs[0].records(stream)
		ok := n > 0
		for _, h := range hubs {
			p, err := h.peers()
			alive := 0
			for _, m := range p.Members {
				if m.State == "alive" {
					alive++
				}
			}
			ok = ok && err == nil && alive == len(hubs) && h.records(stream) == n
			for _, l := range p.Lag {
				ok = ok && (l.Stream != stream || l.Records == 0)
			}
		}
		if !ok {
			stableSince = time.Time{}
			return false
		}
		if stableSince.IsZero() {
			stableSince = time.Now()
		}
		return time.Since(stableSince) >= time.Second
	})
	return n
}

// labProducers produce at each site with retrying idempotent producers,
// recording every write in the history.
type labProducers struct {
	rec     *Recorder
	stream  string
	stop    chan struct{}
	wg      sync.WaitGroup
	acked   atomic.Int64
	unknown atomic.Int64
	errs    sync.Map // client → last error
}

// produce starts one producer per hub, each sending batch records every
// pause until stopProducing.
func produce(t *testing.T, rec *Recorder, stream string, batch int, pause time.Duration, hubs ...*labHub) *labProducers {
	t.Helper()
	return produceVia(t, rec, stream, batch, pause, (*labHub).quic, hubs...)
}

// produceVia is produce with each hub's producer dialling addr(hub).
func produceVia(t *testing.T, rec *Recorder, stream string, batch int, pause time.Duration, addr func(*labHub) string, hubs ...*labHub) *labProducers {
	t.Helper()
	lp := &labProducers{rec: rec, stream: stream, stop: make(chan struct{})}
	for _, h := range hubs {
		c, err := sdk.Dial(context.Background(), addr(h), sdk.Options{CAFile: filepath.Join(h.data(), "tls", "cert.pem"),
			ReconnectMax: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		client := "p-" + h.name
		p, err := c.Producer(context.Background(), stream, sdk.ProducerOptions{DeliveryTimeout: 10 * time.Minute, AckTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		lp.wg.Add(1)
		go func() {
			defer lp.wg.Done()
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := p.Close(ctx); err != nil {
					lp.errs.Store(client, "close: "+err.Error())
				}
			}()
			for i := 0; ; i++ {
				for j := range batch {
					n := i*batch + j
					// Keys are per site: the hub orders a key's records per
					// origin, not across hubs writing the same key at once.
					key, value := fmt.Sprintf("%s-k%d", h.name, n%37), fmt.Sprintf("%s-%d", h.name, n)
					inv := rec.Invoke(Op{Kind: Produce, Client: client, Hub: h.name, Stream: stream, Key: key, Value: value})
					err := p.SendAsync(context.Background(), sdk.Record{Key: []byte(key), Value: []byte(value)}, func(pos sdk.Position, err error) {
						if err != nil {
							// Retried for DeliveryTimeout and still not acknowledged:
							// it may or may not be stored.
							lp.unknown.Add(1)
							lp.errs.Store(client, err.Error())
							inv.Unknown(err)
							return
						}
						lp.acked.Add(1)
						inv.OK(pos.Shard, pos.Seq)
					})
					if err != nil {
						inv.Unknown(err)
						lp.errs.Store(client, err.Error())
						return
					}
				}
				select {
				case <-lp.stop:
					return
				case <-time.After(pause):
				}
			}
		}()
	}
	return lp
}

// stopProducing stops sending and waits until every record sent was
// acknowledged (or failed).
func (lp *labProducers) stopProducing(t *testing.T) {
	t.Helper()
	close(lp.stop)
	lp.wg.Wait()
	lp.errs.Range(func(k, v any) bool { t.Logf("producer %s: last error: %s", k, v); return true })
	if n := lp.unknown.Load(); n > 0 {
		t.Errorf("%d writes were never acknowledged although every link healed", n)
	}
}

// labReadBack records the whole stream as each (stopped) hub stored it: the
// Final operations the checker judges everything by.
func labReadBack(t *testing.T, rec *Recorder, stream string, hubs ...*labHub) int {
	t.Helper()
	total := 0
	for _, h := range hubs {
		cfg := store.DefaultConfig(h.data())
		cfg.Logger = quietLog()
		s, err := store.Open(cfg)
		if err != nil {
			t.Fatalf("open %s's store: %v", h.name, err)
		}
		st, err := s.Stream(stream)
		if err != nil {
			s.Close()
			t.Fatalf("hub %s: %v", h.name, err)
		}
		for sh := range st.Shards() {
			for from := uint64(1); ; {
				recs, err := st.Read(sh, from, store.ReadOptions{MaxRecords: 5000, MaxBytes: 8 << 20})
				if err != nil {
					s.Close()
					t.Fatalf("hub %s: read shard %d: %v", h.name, sh, err)
				}
				if len(recs) == 0 {
					break
				}
				for _, r := range recs {
					op := Op{Kind: Final, Client: "final", Hub: h.name, Stream: stream, Shard: sh, Seq: r.Seq, Key: string(r.Key), Value: string(r.Value)}
					if !r.Origin.IsLocal() {
						op.Origin = &Origin{Hub: r.Origin.Hub, Shard: r.Origin.Shard, Seq: r.Origin.Seq}
					}
					rec.Read(op)
					total++
				}
				from = recs[len(recs)-1].Seq + 1
			}
		}
		s.Close()
	}
	return total
}

// judge closes the history and runs the checker on it.
func judge(t *testing.T, rec *Recorder, path string) *Report {
	t.Helper()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	ops, err := ReadHistoryFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(ops)
	if err := r.Err(); err != nil {
		t.Errorf("history %s: %v", path, err)
	}
	return r
}

func newHistory(t *testing.T) (*Recorder, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "history.jsonl")
	rec, err := CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	return rec, path
}

// figure logs one of the suite's closing figures in a form .ci/run and
// docs/chaos.md collect: "chaos-figure NAME VALUE".
func figure(t *testing.T, name string, v int64) {
	t.Helper()
	t.Logf("chaos-figure %s %d", name, v)
}

// quietLog keeps read-backs quiet: errors only.
func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}
