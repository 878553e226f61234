package hub

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgehub/edgehub"
	"github.com/edgehub/edgehub/store"
)

// The dashboard: the page at / (hub/dashboard/, embedded, no build step)
// and the three endpoints it needed that the admin API lacked: GET /v1/hub
// (the hub itself), GET /v1/rates (write rates per stream over the last
// minutes) and GET /v1/streams/{name}/tail (the last records of a stream).
// Everything else the page shows comes from the existing endpoints, so the
// page is just another client of the API and passes the same guard
// (admin_auth.go); docs/dashboard.md says what it shows and why.

// Rate history: one sample of every stream's commit counters every
// rateEvery, rateKeep samples kept (10 minutes). The hub keeps it, not the
// page, so a page opened during an incident shows the minutes before it, and
// several open pages cost one sampler. A sample is three words per stream.
const (
	defaultRateEvery = 2 * time.Second
	rateKeep         = 300
)

//go:embed dashboard
var dashboardFS embed.FS

// dashboardPage is the page with its CSS and JS inlined (built once from
// the embedded files): the page and its assets then need no token, since
// the guard lets / through alone (admin_auth.go, publicAdminPath), and the
// Content-Security-Policy can allow exactly these two blocks by hash.
var dashboardPage, dashboardCSP = buildDashboardPage()

func buildDashboardPage() (string, string) {
	read := func(name string) string {
		b, err := fs.ReadFile(dashboardFS, "dashboard/"+name)
		if err != nil {
			panic("hub: dashboard asset missing: " + err.Error()) // embedded at build time: cannot happen
		}
		return string(b)
	}
	page, css, js := read("index.html"), read("dashboard.css"), read("dashboard.js")
	const cssTag, jsTag = `<link rel="stylesheet" href="dashboard.css">`, `<script src="dashboard.js"></script>`
	if !strings.Contains(page, cssTag) || !strings.Contains(page, jsTag) {
		panic("hub: dashboard/index.html must reference dashboard.css and dashboard.js")
	}
	page = strings.Replace(page, cssTag, "<style>"+css+"</style>", 1)
	page = strings.Replace(page, jsTag, "<script>"+js+"</script>", 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	// No other origin, no inline code but ours, no framing (clickjacking).
	csp := "default-src 'none'; connect-src 'self'; img-src 'self' data:; script-src " + hash(js) +
		"; style-src " + hash(css) + "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return page, csp
}

// dashboard holds the rate history and serves the dashboard's routes.
type dashboard struct {
	h       *Hub
	started time.Time
	every   time.Duration

	mu     sync.Mutex
	series map[string]*rateSeries // by stream name
}

type rateSeries struct {
	incarnation string
	samples     []rateSample // oldest first, at most rateKeep
}

type rateSample struct {
	at      int64  // Unix nanoseconds
	records uint64 // records the stream's commits appended since it was opened
	bytes   uint64 // encoded bytes of those
}

// addDashboard registers the page and its endpoints and starts the rate
// sampler; addAdmin calls it.
func (h *Hub) addDashboard() {
	d := &dashboard{h: h, started: time.Now(), every: defaultRateEvery, series: map[string]*rateSeries{}}
	h.mux.HandleFunc("GET /{$}", serveDashboard)
	h.route("GET /v1/hub", d.hubInfo)
	h.route("GET /v1/rates", d.rates)
	h.route("GET /v1/streams/{name}/tail", d.tail)
	h.add(d)
}

func serveDashboard(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", dashboardCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	io.WriteString(w, dashboardPage)
}

// Run samples the streams every d.every until ctx ends.
func (d *dashboard) Run(ctx context.Context) error {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		d.sample(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (d *dashboard) Close() error { return nil }

func (d *dashboard) sample(now time.Time) {
	streams := d.h.store.Streams()
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := make(map[string]bool, len(streams))
	for _, st := range streams {
		seen[st.Name()] = true
		_, recs := st.CommitStats()
		s := d.series[st.Name()]
		if s == nil || s.incarnation != st.Incarnation() {
			// New, or deleted and created again: the counters restarted.
			s = &rateSeries{incarnation: st.Incarnation(), samples: make([]rateSample, 0, rateKeep)}
			d.series[st.Name()] = s
		}
		if len(s.samples) == rateKeep {
			copy(s.samples, s.samples[1:])
			s.samples = s.samples[:rateKeep-1]
		}
		s.samples = append(s.samples, rateSample{at: now.UnixNano(), records: recs, bytes: st.CommittedBytes()})
	}
	for name := range d.series {
		if !seen[name] {
			delete(d.series, name)
		}
	}
}

// RateList is the body of GET /v1/rates.
type RateList struct {
	// Interval is the time between samples; Window how far back they go.
	Interval Duration     `json:"interval"`
	Window   Duration     `json:"window"`
	Streams  []StreamRate `json:"streams"`
}

// StreamRate is one stream's write rate, one point per sampling interval,
// oldest first: T[i] ends the interval (Unix milliseconds) whose rates are
// Records[i] and Bytes[i]; From starts the first (the interval ending at
// T[i] starts at T[i-1]), so the rates integrate back to the counts. Appends of every kind count (producers,
// plugins, replication); bytes are encoded bytes as in StreamInfo.Bytes.
type StreamRate struct {
	Name    string    `json:"name"`
	From    int64     `json:"from,omitempty"`
	T       []int64   `json:"t"`
	Records []float64 `json:"records_per_sec"`
	Bytes   []float64 `json:"bytes_per_sec"`
}

func (d *dashboard) rates(w http.ResponseWriter, r *http.Request) error {
	only := r.URL.Query().Get("stream")
	if only != "" {
		if _, err := d.h.store.Stream(only); err != nil {
			return err
		}
	}
	list := RateList{Interval: Duration(d.every), Window: Duration(d.every * rateKeep), Streams: []StreamRate{}}
	d.mu.Lock()
	for name, s := range d.series {
		if only != "" && name != only {
			continue
		}
		sr := StreamRate{Name: name, T: []int64{}, Records: []float64{}, Bytes: []float64{}}
		for i := 1; i < len(s.samples); i++ {
			a, b := s.samples[i-1], s.samples[i]
			secs := float64(b.at-a.at) / 1e9
			if secs <= 0 {
				continue
			}
			if len(sr.T) == 0 {
				sr.From = a.at / 1e6
			}
			sr.T = append(sr.T, b.at/1e6)
			sr.Records = append(sr.Records, float64(b.records-a.records)/secs)
			sr.Bytes = append(sr.Bytes, float64(b.bytes-a.bytes)/secs)
		}
		list.Streams = append(list.Streams, sr)
	}
	d.mu.Unlock()
	slices.SortFunc(list.Streams, func(a, b StreamRate) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, list)
	return nil
}

// HubInfo is the body of GET /v1/hub: the hub itself.
type HubInfo struct {
	Name    string   `json:"name"`
	Site    string   `json:"site,omitempty"`
	Region  string   `json:"region,omitempty"`
	Tags    []string `json:"tags,omitempty"`
	Version string   `json:"version"`
	Go      string   `json:"go_version"`
	// Started is when this process built the hub; UptimeSeconds counts
	// from then.
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Ready         bool      `json:"ready"`
	DataDir       string    `json:"data_dir"`
	Disk          DiskUsage `json:"disk"`
	// Sync is [store] sync: "always" or "interval" (with SyncInterval).
	Sync         string     `json:"sync"`
	SyncInterval Duration   `json:"sync_interval,omitempty"`
	Listen       HubListen  `json:"listen"`
	Federated    bool       `json:"federated"`
	AdminAuth    bool       `json:"admin_auth"` // [[admin.token]]s are configured
	Streams      int        `json:"streams"`
	Records      int64      `json:"records"`
	Bytes        int64      `json:"bytes"`
	Rates        HubRateNow `json:"rates"`
}

// HubListen lists the hub's bound addresses.
type HubListen struct {
	QUIC   string `json:"quic"`
	Admin  string `json:"admin"`
	Gossip string `json:"gossip,omitempty"`
}

// DiskUsage is what the data directory holds and the room left on its file
// system (FS fields omitted where the platform cannot tell).
type DiskUsage struct {
	DataBytes    int64  `json:"data_bytes"`
	Files        int    `json:"files"`
	FSTotalBytes uint64 `json:"fs_total_bytes,omitempty"`
	FSFreeBytes  uint64 `json:"fs_free_bytes,omitempty"` // available to the hub's user
}

// HubRateNow is the hub's write rate over the last sampling interval,
// summed over its streams.
type HubRateNow struct {
	Records float64 `json:"records_per_sec"`
	Bytes   float64 `json:"bytes_per_sec"`
}

func (d *dashboard) hubInfo(w http.ResponseWriter, r *http.Request) error {
	c := d.h.cfg
	info := HubInfo{
		Name: c.Hub.Name, Site: c.Hub.Site, Region: c.Hub.Region, Tags: c.Hub.Tags,
		Version: BuildVersion(), Go: runtime.Version(),
		Started: d.started.UTC(), UptimeSeconds: time.Since(d.started).Seconds(), Ready: d.h.ready.Load(),
		DataDir: c.Hub.DataDir, Sync: c.Store.Sync,
		Listen:    HubListen{Admin: d.h.admin.ln.Addr().String(), Gossip: c.Gossip.Bind},
		Federated: d.h.federation != nil, AdminAuth: c.Admin.Enabled(),
	}
	if abs, err := filepath.Abs(c.Hub.DataDir); err == nil {
		info.DataDir = abs
	}
	if c.Store.Sync == "interval" {
		info.SyncInterval = c.Store.SyncInterval
	}
	if d.h.dataPlane != nil {
		info.Listen.QUIC = d.h.QUICAddr().String()
	}
	for _, st := range d.h.store.Streams() {
		info.Streams++
		for _, s := range st.Stats() {
			info.Records += s.Records
			info.Bytes += s.Bytes
		}
	}
	var err error
	if info.Disk, err = diskUsage(info.DataDir); err != nil {
		return err
	}
	d.mu.Lock()
	for _, s := range d.series {
		if n := len(s.samples); n >= 2 {
			a, b := s.samples[n-2], s.samples[n-1]
			if secs := float64(b.at-a.at) / 1e9; secs > 0 {
				info.Rates.Records += float64(b.records-a.records) / secs
				info.Rates.Bytes += float64(b.bytes-a.bytes) / secs
			}
		}
	}
	d.mu.Unlock()
	writeJSON(w, http.StatusOK, info)
	return nil
}

// diskUsage sums the files under dir (a few per stream and plugin, so a
// walk per request is cheap) and asks the file system for its room.
func diskUsage(dir string) (DiskUsage, error) {
	var u DiskUsage
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed during the walk (a stream deleted) is not an error
		}
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				u.DataBytes += fi.Size()
				u.Files++
			}
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("hub: disk usage of %s: %w", dir, err)
	}
	u.FSTotalBytes, u.FSFreeBytes = fsSpace(dir)
	return u, nil
}

// Tail bounds: records per request, and bytes of a key or value shown.
const (
	tailDefault      = 20
	tailMax          = 1000
	tailValueDefault = 1024
	tailValueMax     = 64 << 10
)

// Tail is the body of GET /v1/streams/{name}/tail.
type Tail struct {
	Stream  string       `json:"stream"`
	Records []TailRecord `json:"records"`
}

// TailRecord is a record as the tail shows it. Key and value are text when
// they are valid UTF-8, else base64 (KeyBase64, ValueBase64); either is cut
// to the request's max_value bytes (Truncated), ValueSize is the whole
// value's size. A nil value is a tombstone.
type TailRecord struct {
	Shard       int          `json:"shard"`
	Seq         uint64       `json:"seq"`
	Key         string       `json:"key,omitempty"`
	KeyBase64   string       `json:"key_base64,omitempty"`
	Value       string       `json:"value,omitempty"`
	ValueBase64 string       `json:"value_base64,omitempty"`
	ValueSize   int          `json:"value_size"`
	Tombstone   bool         `json:"tombstone,omitempty"`
	Truncated   bool         `json:"truncated,omitempty"`
	Headers     []TailHeader `json:"headers,omitempty"`
	Time        *time.Time   `json:"time,omitempty"` // the producer's timestamp, if set
	IngestTime  time.Time    `json:"ingest_time"`
	// Origin is "hub/shard/seq" for a record first produced elsewhere
	// (replicated, or emitted by a plugin), omitted for a local one.
	Origin string `json:"origin,omitempty"`
}

// TailHeader is a record header in a TailRecord (value as text or base64).
type TailHeader struct {
	Key         string `json:"key"`
	Value       string `json:"value,omitempty"`
	ValueBase64 string `json:"value_base64,omitempty"`
}

func (d *dashboard) tail(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	q := r.URL.Query()
	intParam := func(key string, def, lo, hi int) (int, error) {
		s := q.Get(key)
		if s == "" {
			return def, nil
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < lo || v > hi {
			return 0, badRequest("tail %q: %s=%q: want a number in %d..%d", name, key, s, lo, hi)
		}
		return v, nil
	}
	n, err := intParam("n", tailDefault, 1, tailMax)
	if err != nil {
		return err
	}
	maxValue, err := intParam("max_value", tailValueDefault, 0, tailValueMax)
	if err != nil {
		return err
	}
	st, err := d.h.store.Stream(name)
	if err != nil {
		return err
	}
	shards := st.Config().Shards
	only, err := intParam("shard", -1, 0, shards-1)
	if err != nil {
		return err
	}
	// Each read stops at 1 MiB of chunks, so a shard's last n sequences may
	// take several; records are cut to max_value as they come, so memory
	// stays bounded by one read whatever the records' size.
	var recs []TailRecord
	for shard := range shards {
		if only >= 0 && shard != only {
			continue
		}
		first, last, err := st.Bounds(shard)
		if err != nil {
			return err
		}
		if last < first {
			continue
		}
		from := first
		if last-first+1 > uint64(n) {
			from = last - uint64(n) + 1
		}
		for from <= last {
			got, err := st.Read(shard, from, store.ReadOptions{MaxRecords: int(last - from + 1)})
			if err != nil {
				return fmt.Errorf("tail %q shard %d: %w", name, shard, err)
			}
			if len(got) == 0 {
				break // retention removed them meanwhile
			}
			for _, rec := range got {
				if rec.Seq <= last {
					recs = append(recs, tailRecord(shard, rec, maxValue))
				}
			}
			from = got[len(got)-1].Seq + 1
		}
	}
	// The last n over all shards, in ingest order.
	slices.SortFunc(recs, func(a, b TailRecord) int {
		return cmp.Or(a.IngestTime.Compare(b.IngestTime), cmp.Compare(a.Shard, b.Shard), cmp.Compare(a.Seq, b.Seq))
	})
	if len(recs) > n {
		recs = recs[len(recs)-n:]
	}
	out := Tail{Stream: name, Records: recs}
	if out.Records == nil {
		out.Records = []TailRecord{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func tailRecord(shard int, rec edgehub.Record, maxValue int) TailRecord {
	tr := TailRecord{Shard: shard, Seq: rec.Seq, ValueSize: len(rec.Value), Tombstone: rec.Value == nil,
		IngestTime: time.Unix(0, rec.IngestTime).UTC()}
	var cut bool
	tr.Key, tr.KeyBase64, cut = showBytes(rec.Key, maxValue)
	tr.Truncated = cut
	tr.Value, tr.ValueBase64, cut = showBytes(rec.Value, maxValue)
	tr.Truncated = tr.Truncated || cut
	for _, hd := range rec.Headers {
		th := TailHeader{Key: hd.Key}
		th.Value, th.ValueBase64, cut = showBytes(hd.Value, maxValue)
		tr.Truncated = tr.Truncated || cut
		tr.Headers = append(tr.Headers, th)
	}
	if rec.Time != 0 {
		t := time.Unix(0, rec.Time).UTC()
		tr.Time = &t
	}
	if !rec.Origin.IsLocal() {
		tr.Origin = fmt.Sprintf("%s/%d/%d", rec.Origin.Hub, rec.Origin.Shard, rec.Origin.Seq)
	}
	return tr
}

// showBytes returns b as text if it is UTF-8, else as base64, cut to max
// bytes (text at a rune boundary).
func showBytes(b []byte, max int) (text, b64 string, cut bool) {
	valid := utf8.Valid(b)
	if len(b) > max {
		end := max
		for valid && end > 0 && !utf8.RuneStart(b[end]) {
			end-- // do not cut a rune in two
		}
		b, cut = b[:end], true
	}
	if valid {
		return string(b), "", cut
	}
	return "", base64.StdEncoding.EncodeToString(b), cut
}
