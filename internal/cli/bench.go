package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/sdk"
)

func init() {
	register("bench", "measure produce and consume throughput and latency", func(ctx context.Context, args []string) error {
		return subcommand("bench", ctx, args, map[string]func(context.Context, []string) error{
			"produce": benchProduce,
			"consume": benchConsume,
			"plugin":  pluginBench, // same as hub plugin bench
		}, [][2]string{
			{"produce", "send records as fast as allowed (or at --rate) and measure acknowledgement latency"},
			{"consume", "read a stream from the earliest record and measure catch-up throughput"},
			{"plugin", "run plugins through the host and measure records/s, memory and ingest impact (as hub plugin bench)"},
		})
	})
}

// benchFlags are common to both benchmarks.
type benchFlags struct {
	df       *dataFlags
	admin    *adminFlags
	self     *bool
	data     *string
	stream   *string
	shards   *int
	size     *int
	count    *int64
	duration *time.Duration
	profile  *string
	adminAPI *adminClient // for the hub-side histogram; nil if unknown
}

func addBenchFlags(fs *flag.FlagSet) *benchFlags {
	return &benchFlags{
		df:       addDataFlags(fs),
		admin:    addAdminFlags(fs, "admin-"),
		self:     fs.Bool("self", false, "start a hub in this process (data in --data or a temporary directory) instead of using a running one"),
		data:     fs.String("data", "", "data `DIR` of the --self hub (default: a temporary directory, removed after)"),
		stream:   fs.String("stream", "bench", "`STREAM` to use; created if missing"),
		shards:   fs.Int("shards", 4, "shards of the stream if it is created"),
		size:     fs.Int("size", 128, "record value size in `BYTES`"),
		count:    fs.Int64("count", 0, "records in total (default 1,000,000 unless --duration)"),
		duration: fs.Duration("duration", 0, "run for this long instead of --count"),
		profile:  fs.String("cpuprofile", "", "write a CPU profile of the measured phase (client and, with --self, hub) to `FILE`"),
	}
}

// startProfile starts the CPU profile if asked; the returned func stops it.
func (b *benchFlags) startProfile() (func(), error) {
	if *b.profile == "" {
		return func() {}, nil
	}
	f, err := os.Create(*b.profile)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// target returns a client factory for the hub under test, starting one in
// process with --self; cleanup stops it.
func (b *benchFlags) target(ctx context.Context) (dial func(context.Context) (*sdk.Client, error), cleanup func(), err error) {
	if !*b.self {
		if err := b.ensureStream(ctx, nil); err != nil {
			return nil, nil, err
		}
		if ac, err := newAdminClient(b.admin.options()); err == nil {
			b.adminAPI = ac
		}
		return b.df.dial, func() {}, nil
	}
	cfg := hub.DefaultConfig()
	cfg.Hub.Name = "bench"
	dir := *b.data
	if dir == "" {
		if dir, err = os.MkdirTemp("", "hub-bench-"); err != nil {
			return nil, nil, err
		}
	}
	cfg.Hub.DataDir = dir
	cfg.Listen.QUIC, cfg.Listen.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := hub.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- h.Run(rctx) }()
	cleanup = func() {
		cancel()
		<-done
		h.Close()
		if *b.data == "" {
			os.RemoveAll(dir)
		}
	}
	if err := b.ensureStream(ctx, h); err != nil {
		cleanup()
		return nil, nil, err
	}
	addr := h.QUICAddr().String()
	if ac, err := newAdminClient(adminOptions{URL: h.AdminURL()}); err == nil {
		b.adminAPI = ac
	}
	ca := dir + "/" + hub.SelfSignedCertFile
	dial = func(ctx context.Context) (*sdk.Client, error) {
		return sdk.Dial(ctx, addr, sdk.Options{CAFile: ca})
	}
	fmt.Fprintf(stderr, "bench: hub in process, data in %s, QUIC %s\n", dir, addr)
	return dial, cleanup, nil
}

// ensureStream creates the stream if it does not exist: directly in a
// --self hub, else through the admin API.
func (b *benchFlags) ensureStream(ctx context.Context, h *hub.Hub) error {
	if h != nil {
		_, err := h.Store().CreateStream(ctx, hub.StreamConfig{Name: *b.stream, Shards: *b.shards}.StoreStreamConfig())
		return err
	}
	c, err := b.df.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Info(ctx, *b.stream); sdk.CodeOf(err) != sdk.CodeNotFound {
		return err
	}
	ac, err := newAdminClient(b.admin.options())
	if err != nil {
		return err
	}
	var info hub.StreamInfo
	if err := ac.post(ctx, "/v1/streams", hub.StreamRequest{Name: *b.stream, Shards: *b.shards}, &info); err != nil {
		return fmt.Errorf("create stream %q: %w", *b.stream, err)
	}
	return nil
}

func (b *benchFlags) total() int64 {
	if *b.count == 0 && *b.duration == 0 {
		return 1_000_000
	}
	return *b.count
}

func benchProduce(ctx context.Context, args []string) error {
	fs := newFlags("bench produce", "bench produce [--stream S] [--size BYTES] [--count N | --duration D] [--producers N] [--rate N] [--batch N] [--linger D] [--inflight N] [--datagram] [--copies N] [--shards N] [--self [--data DIR]] [--cpuprofile FILE]")
	b := addBenchFlags(fs)
	producers := fs.Int("producers", 4, "concurrent producers, each on its own connection")
	rate := fs.Float64("rate", 0, "offered load in records/s over all producers (0: as fast as acknowledged)")
	batch := fs.Int("batch", 1000, "records per batch at most")
	linger := fs.Duration("linger", 0, "hold batches open this long for more records")
	inflight := fs.Int("inflight", 4, "unacknowledged batches per shard and producer")
	copies := fs.Int("copies", 0, "ask each batch to be held by `N` hubs before its ack (default: the stream's copies)")
	datagram := fs.Bool("datagram", false, "fire-and-forget over QUIC datagrams (no acks: no latency figures)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, ""); err != nil {
		return err
	}
	if *producers < 1 || *b.size < 0 {
		return usagef("--producers must be at least 1 and --size not negative")
	}
	dial, cleanup, err := b.target(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	value := make([]byte, *b.size)
	rand.Read(value)
	total := b.total()

	type result struct {
		lat    []time.Duration
		errors int64
		sent   int64
		lag    time.Duration
	}
	results := make([]*result, *producers)
	prods := make([]*sdk.Producer, *producers)
	for i := range prods {
		c, err := dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		prods[i], err = c.Producer(ctx, *b.stream, sdk.ProducerOptions{
			BatchRecords: *batch, Linger: *linger, MaxInFlight: *inflight, Datagrams: *datagram, Copies: *copies,
		})
		if err != nil {
			return err
		}
		results[i] = &result{}
		if total > 0 {
			results[i].lat = make([]time.Duration, 0, total/int64(*producers)+1)
		}
	}
	mode := "durable"
	if *datagram {
		mode = "datagram"
	}
	fmt.Fprintf(stderr, "bench: producing %s records of %d bytes to %q with %d producers (%s)\n",
		countOrDuration(total, *b.duration), *b.size, *b.stream, *producers, mode)

	var next atomic.Int64 // records claimed
	var wg sync.WaitGroup
	runCtx := ctx
	if *b.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *b.duration)
		defer cancel()
	}
	stopProfile, err := b.startProfile()
	if err != nil {
		return err
	}
	hist0 := appendHistogram(ctx, b.adminAPI)
	stored0, err := storedRecords(ctx, dial, *b.stream)
	if err != nil {
		return err
	}
	start := time.Now()
	for i, p := range prods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := results[i]
			var interval time.Duration
			if *rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(*producers) / *rate)
			}
			sched := time.Now()
			for runCtx.Err() == nil {
				if total > 0 && next.Add(1) > total {
					break
				}
				// With --rate, records are released on schedule. Go's
				// timers wake about once a millisecond here, so they go
				// out in small bursts; latency counts from each record's
				// SendAsync call, and lag records how far sends fell
				// behind the schedule (a stalled sender would show here
				// rather than hide: coordinated omission).
				if interval > 0 {
					sched = sched.Add(interval)
					if d := time.Until(sched); d > 0 {
						time.Sleep(d)
					} else if lag := -d; lag > r.lag {
						r.lag = lag
					}
				}
				t0 := time.Now()
				err := p.SendAsync(runCtx, sdk.Record{Value: value}, func(_ sdk.Position, err error) {
					if err != nil {
						r.errors++
						return
					}
					r.lat = append(r.lat, time.Since(t0))
				})
				if err != nil {
					break
				}
				r.sent++
			}
		}()
	}
	wg.Wait()
	for _, p := range prods {
		if err := p.Close(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "bench: %v\n", err)
		}
	}
	elapsed := time.Since(start)
	stopProfile()

	var lat []time.Duration
	var errs, sent int64
	var lag time.Duration
	for _, r := range results {
		lag = max(lag, r.lag)
		lat = append(lat, r.lat...)
		errs += r.errors
		sent += r.sent
	}
	hist := appendHistogram(ctx, b.adminAPI).minus(hist0)
	acked := int64(len(lat))
	latency := func(q float64) string { return strconv.FormatInt(pct(lat, q), 10) }
	extra := ""
	if *datagram {
		// Nothing is acknowledged: count what the hub stored, once its
		// queue has drained (datagrams may be lost, by contract).
		var stored int64
		for range 50 {
			n, err := storedRecords(ctx, dial, *b.stream)
			if err != nil {
				return err
			}
			if n-stored0 == stored && stored > 0 {
				break
			}
			stored = n - stored0
			time.Sleep(100 * time.Millisecond)
		}
		extra = fmt.Sprintf(" sent=%d lost=%d", sent-errs, sent-errs-stored)
		acked = stored
		latency = func(float64) string { return "na" }
	}
	slices.Sort(lat)
	fmt.Fprintf(stdout, "bench=produce mode=%s producers=%d size=%d batch=%d rate=%.0f records=%d errors=%d duration_s=%.3f records_per_s=%.0f mb_per_s=%.1f p50_us=%s p99_us=%s p999_us=%s max_us=%s max_lag_us=%d hub_append_p50_us=%s hub_append_p99_us=%s batches=%s%s\n",
		mode, *producers, *b.size, *batch, *rate, acked, errs, elapsed.Seconds(),
		float64(acked)/elapsed.Seconds(), float64(acked)*float64(*b.size)/elapsed.Seconds()/1e6,
		latency(0.50), latency(0.99), latency(0.999), latency(1), lag.Microseconds(),
		hist.quantile(0.50), hist.quantile(0.99), hist.count(), extra)
	return nil
}

// pct returns the q-quantile of sorted durations in microseconds.
func pct(sorted []time.Duration, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i].Microseconds()
}

func countOrDuration(n int64, d time.Duration) string {
	if d > 0 {
		return "for " + d.String() + " of"
	}
	return fmt.Sprint(n)
}

func benchConsume(ctx context.Context, args []string) error {
	fs := newFlags("bench consume", "bench consume [--stream S] [--size BYTES] [--count N | --duration D] [--consumers N] [--credit BYTES] [--shards N] [--self [--data DIR]] [--cpuprofile FILE]")
	b := addBenchFlags(fs)
	consumers := fs.Int("consumers", 1, "concurrent subscriptions, each on its own connection, each reading the whole stream")
	credit := fs.Int("credit", 4<<20, "bytes each subscription lets the hub send ahead")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, ""); err != nil {
		return err
	}
	dial, cleanup, err := b.target(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	total := b.total()
	if *b.duration > 0 && *b.count == 0 {
		total = 0
	}
	// Fill the stream up to --count records first (not measured).
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := c.Info(ctx, *b.stream)
	if err != nil {
		return err
	}
	var have int64
	for _, s := range info.Shards {
		if s.Last >= s.First {
			have += int64(s.Last - s.First + 1)
		}
	}
	if missing := total - have; missing > 0 {
		fmt.Fprintf(stderr, "bench: filling %q with %d records of %d bytes\n", *b.stream, missing, *b.size)
		p, err := c.Producer(ctx, *b.stream, sdk.ProducerOptions{})
		if err != nil {
			return err
		}
		value := make([]byte, *b.size)
		rand.Read(value)
		var failed atomic.Int64
		for range missing {
			if err := p.SendAsync(ctx, sdk.Record{Value: value}, func(_ sdk.Position, err error) {
				if err != nil {
					failed.Add(1)
				}
			}); err != nil {
				return err
			}
		}
		if err := p.Close(ctx); err != nil {
			return err
		}
		if n := failed.Load(); n > 0 {
			return fmt.Errorf("fill: %d records failed", n)
		}
		have += missing
	}
	fmt.Fprintf(stderr, "bench: %d consumers reading %q from the earliest record\n", *consumers, *b.stream)

	runCtx := ctx
	if *b.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *b.duration)
		defer cancel()
	}
	var records, bytes atomic.Int64
	var wg sync.WaitGroup
	errCh := make(chan error, *consumers)
	subs := make([]*sdk.Subscription, *consumers)
	for i := range subs {
		cc, err := dial(ctx)
		if err != nil {
			return err
		}
		defer cc.Close()
		if subs[i], err = cc.Subscribe(ctx, *b.stream, sdk.ConsumeOptions{From: sdk.FromEarliest(), Credit: *credit}); err != nil {
			return err
		}
		defer subs[i].Close()
	}
	stopProfile, err := b.startProfile()
	if err != nil {
		return err
	}
	start := time.Now()
	for _, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n, nb int64
			defer func() { records.Add(n); bytes.Add(nb) }()
			for total == 0 || n < total {
				_, recs, err := sub.NextBatch(runCtx)
				if err != nil {
					if runCtx.Err() == nil {
						errCh <- err
					}
					return
				}
				n += int64(len(recs))
				for i := range recs {
					nb += int64(len(recs[i].Value))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProfile()
	close(errCh)
	var errs []string
	for err := range errCh {
		errs = append(errs, err.Error())
	}
	n := records.Load()
	fmt.Fprintf(stdout, "bench=consume consumers=%d size=%d credit=%d records=%d errors=%d duration_s=%.3f records_per_s=%.0f mb_per_s=%.1f\n",
		*consumers, *b.size, *credit, n, len(errs), elapsed.Seconds(), float64(n)/elapsed.Seconds(), float64(bytes.Load())/elapsed.Seconds()/1e6)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// histogram is the hub's edgehub_produce_append_seconds histogram:
// cumulative counts by upper bound in seconds.
type histogram struct {
	bounds []float64
	counts []float64
}

var bucketRE = regexp.MustCompile(`^edgehub_produce_append_seconds_bucket\{le="([^"]+)"\} (\S+)$`)

// appendHistogram reads the histogram from the hub's /metrics; an empty one
// if the admin API cannot be reached (the summary then says "na").
func appendHistogram(ctx context.Context, ac *adminClient) histogram {
	var h histogram
	if ac == nil {
		return h
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := ac.newRequest(ctx, "GET", "/metrics", nil)
	if err != nil {
		return h
	}
	resp, err := ac.http.Do(req)
	if err != nil {
		return h
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := bucketRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		le, err1 := strconv.ParseFloat(m[1], 64)
		n, err2 := strconv.ParseFloat(m[2], 64)
		if err1 == nil && err2 == nil {
			h.bounds = append(h.bounds, le)
			h.counts = append(h.counts, n)
		}
	}
	return h
}

func (h histogram) minus(o histogram) histogram {
	if len(o.counts) != len(h.counts) {
		return h
	}
	out := histogram{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		out.counts[i] = h.counts[i] - o.counts[i]
	}
	return out
}

// count is the number of observations ("na" without data).
func (h histogram) count() string {
	if len(h.counts) == 0 {
		return "na"
	}
	return strconv.FormatInt(int64(h.counts[len(h.counts)-1]), 10)
}

// quantile returns the upper bound, in microseconds, of the bucket holding
// the q-quantile: a bound, not an estimate ("na" without data).
func (h histogram) quantile(q float64) string {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return "na"
	}
	total := h.counts[len(h.counts)-1]
	for i, c := range h.counts {
		if c >= q*total {
			if math.IsInf(h.bounds[i], 1) {
				return "inf"
			}
			return strconv.FormatInt(int64(h.bounds[i]*1e6), 10)
		}
	}
	return "inf"
}

// storedRecords is the number of records the stream has assigned (the sum
// of its shards' last sequences).
func storedRecords(ctx context.Context, dial func(context.Context) (*sdk.Client, error), stream string) (int64, error) {
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	info, err := c.Info(ctx, stream)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range info.Shards {
		n += int64(s.Last)
	}
	return n, nil
}
