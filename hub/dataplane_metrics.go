package hub

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgehub/edgehub/quic"
)

// The data plane's metrics: produce, consume, datagrams and refusals, and
// the QUIC server's counters read at scrape time.

type dataPlaneMetrics struct {
	records      *prometheus.CounterVec   // stream, mode
	batches      *prometheus.CounterVec   // stream, result
	dgDropped    *prometheus.CounterVec   // reason
	consumed     *prometheus.CounterVec   // stream
	consumedB    *prometheus.CounterVec   // stream
	cuts         *prometheus.CounterVec   // stream: batches re-encoded to fit
	subs         prometheus.Gauge         // open subscriptions
	appendTime   prometheus.Histogram     // store append latency
	refusals     *prometheus.CounterVec   // op, code
	inflightSess *prometheus.GaugeVec     // stream: produce sessions
	legacySess   *prometheus.GaugeVec     // stream: produce sessions without the lineage flag
	inflightB    prometheus.Gauge         // produce bytes read, not yet acknowledged
	copyWait     *prometheus.HistogramVec // stream: waits for copies (copies.go)
	copyShort    *prometheus.CounterVec   // stream, shortfall: batches short of their copies
}

func (d *dataPlane) registerMetrics(reg *prometheus.Registry) {
	d.m = dataPlaneMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_produce_records_total",
			Help: "Records stored from producers; mode is durable (acknowledged after fsync) or datagram (fire-and-forget).",
		}, []string{"stream", "mode"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_produce_batches_total",
			Help: "Produce batches by result: ok, duplicate (idempotent retry answered with original positions) or refused.",
		}, []string{"stream", "result"}),
		dgDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_produce_datagrams_dropped_total",
			Help: "Datagram batches dropped, by reason (queue_full, unknown_session, bad_batch, shard_closed, append_failed).",
		}, []string{"reason"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_consume_records_total", Help: "Records pushed to subscribers (whole chunks, counted as sent).",
		}, []string{"stream"}),
		consumedB: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_consume_bytes_total", Help: "Record batch bytes pushed to subscribers.",
		}, []string{"stream"}),
		cuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_consume_cut_batches_total",
			Help: "RECORDS batches re-encoded from a stored chunk because the chunk did not fit the subscription's credit or its part of the memory budget (the rest go as stored).",
		}, []string{"stream"}),
		subs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgehub_consume_subscriptions", Help: "Open subscriptions.",
		}),
		appendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edgehub_produce_append_seconds",
			Help:    "Time from a batch's arrival to its durable commit.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_dataplane_refusals_total", Help: "Operations and batches refused, by operation and error code.",
		}, []string{"op", "code"}),
		inflightSess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgehub_produce_sessions", Help: "Open produce sessions.",
		}, []string{"stream"}),
		legacySess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgehub_produce_legacy_sessions",
			Help: "Open produce sessions of clients that do not route by the stream's layout (no lineage flag): their explicit-shard batches are checked against the shards' ranges and refused with shard_closed after a reshard.",
		}, []string{"stream"}),
		inflightB: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgehub_produce_inflight_bytes",
			Help: "Batch bytes read from producers and not yet acknowledged, over all sessions (each session is capped).",
		}),
		copyWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgehub_copies_wait_seconds",
			Help:    "Time a batch of a stream with copies > 1 waited, after its local fsync, for its peers' copies.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"stream"}),
		copyShort: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgehub_copies_shortfall_total",
			Help: "Batches that did not reach their copies within copies_timeout, by the stream's shortfall policy: fail (refused with copies_short) or ack (acknowledged with fewer copies, as the ACK says).",
		}, []string{"stream", "shortfall"}),
	}
	reg.MustRegister(d.m.records, d.m.batches, d.m.dgDropped, d.m.consumed, d.m.consumedB, d.m.cuts, d.m.subs,
		d.m.appendTime, d.m.refusals, d.m.inflightSess, d.m.legacySess, d.m.inflightB, d.m.copyWait, d.m.copyShort)
	st := func(name, help string, typ prometheus.ValueType, f func(quic.Stats) float64) {
		read := func() float64 { return f(d.srv.Stats()) }
		if typ == prometheus.CounterValue {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, read))
		} else {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, read))
		}
	}
	st("edgehub_quic_connections", "Open QUIC connections.", prometheus.GaugeValue, func(s quic.Stats) float64 { return float64(s.ConnsActive) })
	st("edgehub_quic_connections_accepted_total", "QUIC connections accepted.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.ConnsAccepted) })
	st("edgehub_quic_connections_refused_total", "QUIC connection attempts refused over limits.max_connections.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.ConnsRefused) })
	st("edgehub_quic_streams", "Open QUIC streams (operations).", prometheus.GaugeValue, func(s quic.Stats) float64 { return float64(s.StreamsActive) })
	st("edgehub_quic_streams_failed_total", "Operations ended with an error code.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.StreamsFailed) })
	st("edgehub_quic_auth_refused_total", "Streams refused as unauthenticated.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.AuthRefused) })
	st("edgehub_quic_protocol_errors_total", "Streams closed for malformed or oversized frames.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.ProtocolErrors) })
	st("edgehub_quic_datagrams_received_total", "QUIC datagrams received.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.DatagramsReceived) })
	st("edgehub_quic_handler_panics_total", "Panics in stream and datagram handlers, recovered (the stream failed with internal).", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.Panics) })
	st("edgehub_quic_open_bytes_total", "Payload buffer allocated for OPEN frames, read before authentication.", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.OpenBytes) })
	st("edgehub_quic_address_validations_total", "Handshakes answered with a Retry because of handshake load (limits.validate_address_above).", prometheus.CounterValue, func(s quic.Stats) float64 { return float64(s.AddressValidations) })
}
