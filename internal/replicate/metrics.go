package replicate

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the replicator's Prometheus series. Lag is collected at
// scrape time from the pull tasks (see collector), so series of finished
// pulls disappear instead of freezing at their last value.
type metrics struct {
	applied       *prometheus.CounterVec // stream, origin, peer
	appliedBytes  *prometheus.CounterVec // peer
	duplicates    *prometheus.CounterVec // stream, origin
	gaps          *prometheus.CounterVec // stream, origin
	gapSeqs       *prometheus.CounterVec // stream, origin
	pullErrors    *prometheus.CounterVec // peer
	delay         prometheus.Histogram
	servedRecords prometheus.Counter
	servedBytes   prometheus.Counter
	servedGaps    prometheus.Counter
	sessions      prometheus.Gauge
	follows       prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_replication_records_total",
			Help: "Records pulled from peers and stored here, by stream, origin hub and the peer they came from.",
		}, []string{"stream", "origin", "peer"}),
		appliedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_replication_bytes_total",
			Help: "Encoded record batch bytes pulled from each peer.",
		}, []string{"peer"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_replication_duplicates_total",
			Help: "Pulled records not stored because their origin sequence was already applied.",
		}, []string{"stream", "origin"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_replication_gaps_total",
			Help: "Gaps: ranges of an origin's records this hub will never hold (deleted by retention before it pulled them, or held by no live peer while the origin was unreachable).",
		}, []string{"stream", "origin"}),
		gapSeqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_replication_gap_sequences_total",
			Help: "Origin sequence numbers covered by gaps (an upper bound on records lost here: the origin's shard also numbers records it replicated).",
		}, []string{"stream", "origin"}),
		pullErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_replication_pull_errors_total",
			Help: "Pulls that failed (connection, protocol or peer error), by peer.",
		}, []string{"peer"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgehub_replication_delay_seconds",
			Help:    "Time from a record's commit at the peer it was pulled from to its commit here.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .2, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		servedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgehub_replication_served_records_total",
			Help: "Records sent to peers pulling from this hub.",
		}),
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgehub_replication_served_bytes_total",
			Help: "Record batch bytes sent to peers pulling from this hub.",
		}),
		servedGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgehub_replication_served_gaps_total",
			Help: "Gaps announced to pulling peers (their records were deleted here first).",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgehub_replication_served_sessions",
			Help: "Replication sessions peers have open to this hub (one QUIC stream each).",
		}),
		follows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgehub_replication_served_follows",
			Help: "Pulls (stream, origin shard) peers follow here through sessions.",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer, r *Replicator) error {
	for _, c := range []prometheus.Collector{m.applied, m.appliedBytes, m.duplicates, m.gaps, m.gapSeqs,
		m.pullErrors, m.delay, m.servedRecords, m.servedBytes, m.servedGaps, m.sessions, m.follows, r.repair.repaired, (*collector)(r)} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

var (
	lagRecordsDesc = prometheus.NewDesc("edgehub_replication_lag_records",
		"Records of an origin that the peer we pull it from holds and we do not yet, summed over origin shards.",
		[]string{"stream", "origin", "peer"}, nil)
	lagSecondsDesc = prometheus.NewDesc("edgehub_replication_lag_seconds",
		"How far behind the peer we pull an origin from we are: age of the newest record received while behind, 0 when caught up.",
		[]string{"stream", "origin", "peer"}, nil)
	// Other readers (groups, plugins, webhooks) export the same series
	// with their own reader label: reader is a constant label, so each can
	// register its own collector as long as the help text is this one.
	lineageWaitingDesc = prometheus.NewDesc("edgehub_lineage_waiting_shards",
		"Shards a reader may not start yet because a parent shard closed by a reshard is not finished for it.",
		[]string{"stream"}, prometheus.Labels{"reader": "replica"})
	membersDesc = prometheus.NewDesc("edgehub_federation_members",
		"Federation members known by gossip, by state.", []string{"state"}, nil)
)

// collector exports lag from the live pull tasks.
type collector Replicator

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagRecordsDesc
	ch <- lagSecondsDesc
	ch <- lineageWaitingDesc
	ch <- membersDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := (*Replicator)(c)
	for _, l := range r.Lag() {
		ch <- prometheus.MustNewConstMetric(lagRecordsDesc, prometheus.GaugeValue, float64(l.Records), l.Stream, l.Origin, l.Peer)
		ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, l.Seconds, l.Stream, l.Origin, l.Peer)
	}
	for stream, n := range r.lineageWaiting() {
		ch <- prometheus.MustNewConstMetric(lineageWaitingDesc, prometheus.GaugeValue, float64(n), stream)
	}
	states := map[string]int{"alive": 0, "dead": 0}
	for _, p := range r.cfg.Membership.Peers() {
		if p.Alive {
			states["alive"]++
		} else {
			states["dead"]++
		}
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(n), s)
	}
}
