package hub

import (
	"fmt"
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgehub/edgehub/store"
)

// storeCollector exports the store's per-shard state. It reads Stats() at
// scrape time (atomics, no transaction), so it costs nothing between scrapes
// and never goes stale when streams come and go.
type storeCollector struct {
	st                                                    *store.Store
	streams, records, bytes, first, last, ingest, damaged *prometheus.Desc
	layoutVersion, openShards                             *prometheus.Desc
}

func newStoreCollector(st *store.Store) *storeCollector {
	labels := []string{"stream", "shard"}
	return &storeCollector{
		st:      st,
		streams: prometheus.NewDesc("edgehub_streams", "Streams in the store.", nil, nil),
		records: prometheus.NewDesc("edgehub_shard_records", "Live records in a shard (after retention and compaction).", labels, nil),
		bytes:   prometheus.NewDesc("edgehub_shard_bytes", "Live encoded bytes in a shard.", labels, nil),
		first:   prometheus.NewDesc("edgehub_shard_first_sequence", "First live sequence of a shard (greater than the last when empty).", labels, nil),
		last:    prometheus.NewDesc("edgehub_shard_last_sequence", "Last sequence assigned in a shard (0 before the first record).", labels, nil),
		ingest:  prometheus.NewDesc("edgehub_shard_last_ingest_timestamp_seconds", "Ingest time of the last record committed to a shard.", labels, nil),
		damaged: prometheus.NewDesc("edgehub_shard_damaged_chunks",
			"Damaged chunks of a shard not repaired yet: their records are not served (docs/store.md, \"Damaged chunks\").", labels, nil),
		layoutVersion: prometheus.NewDesc("edgehub_stream_layout_version", "Reshards of a stream so far (0: never resharded).", []string{"stream"}, nil),
		openShards:    prometheus.NewDesc("edgehub_stream_open_shards", "Shards of a stream taking appends.", []string{"stream"}, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.streams, c.records, c.bytes, c.first, c.last, c.ingest, c.damaged, c.layoutVersion, c.openShards} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	streams := c.st.Streams()
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(len(streams)))
	for _, st := range streams {
		damaged := st.DamagedChunks()
		l := st.Layout()
		ch <- prometheus.MustNewConstMetric(c.layoutVersion, prometheus.GaugeValue, float64(l.Version), st.Name())
		ch <- prometheus.MustNewConstMetric(c.openShards, prometheus.GaugeValue, float64(len(l.Open())), st.Name())
		for _, s := range st.Stats() {
			if s.State == store.ShardRetired {
				continue // gone from listings, and its series with it
			}
			name, shard := st.Name(), strconv.Itoa(s.Shard)
			ch <- prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue, float64(s.Records), name, shard)
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes), name, shard)
			ch <- prometheus.MustNewConstMetric(c.first, prometheus.GaugeValue, float64(s.FirstSeq), name, shard)
			ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, float64(s.LastSeq), name, shard)
			if s.Shard < len(damaged) {
				ch <- prometheus.MustNewConstMetric(c.damaged, prometheus.GaugeValue, float64(damaged[s.Shard]), name, shard)
			}
			if s.LastIngest > 0 {
				ch <- prometheus.MustNewConstMetric(c.ingest, prometheus.GaugeValue, float64(s.LastIngest)/1e9, name, shard)
			}
		}
	}
}

// Version is the hub's version, set at build time with
// -ldflags "-X github.com/edgehub/edgehub/hub.Version=v1.2.3"; otherwise the
// module version from the build info, or "dev".
var Version = ""

// BuildVersion returns Version or what the build info knows.
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// addMetrics registers the hub's own collectors; other parts register theirs
// on h.metrics in their builders.
func (h *Hub) addMetrics() error {
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgehub_hub_info",
		Help: "Constant 1, labelled with the hub's identity.",
		ConstLabels: prometheus.Labels{
			"name": h.cfg.Hub.Name, "site": h.cfg.Hub.Site, "region": h.cfg.Hub.Region, "version": BuildVersion(),
		},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{
		info,
		newStoreCollector(h.store),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := h.metrics.Register(c); err != nil {
			return fmt.Errorf("hub: register metrics: %w", err)
		}
	}
	return nil
}
