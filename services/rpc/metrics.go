package rpc

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Node's Prometheus series. Each series a call touches is
// looked up once (per outcome, per registered path), never per call.
type metrics struct {
	calls    [numOutcomes]prometheus.Counter
	latency  prometheus.Observer
	handled  *prometheus.CounterVec
	inflight prometheus.Gauge
	conns    prometheus.Gauge
	regs     []prometheus.Collector
}

// Handler outcomes, the "outcome" label of fluxon_rpc_handler_calls_total.
const (
	handledOK      = "ok"
	handledError   = "error"
	handledPanic   = "panic"
	handledUnknown = "unknown_path"
)

// callLatencyBuckets span a loopback round trip (tens of µs) to a slow
// handler (tens of seconds).
var callLatencyBuckets = prometheus.ExponentialBuckets(10e-6, 4, 12)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	callVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxon_rpc_calls_total",
		Help: "RPC calls this member made, by outcome (ok, unknown_node, unknown_path, handler_error, handler_panic, timeout, canceled, peer_gone, stale_node, unreachable, refused, too_large, invalid, closed, other).",
	}, []string{"outcome"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fluxon_rpc_call_duration_seconds",
		Help:    "Duration of the RPC calls this member made, resolve and dial included, whatever their outcome.",
		Buckets: callLatencyBuckets,
	})
	handled := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxon_rpc_handler_calls_total",
		Help: "RPC requests this member's handlers served, by path and outcome (ok, error, panic; unknown_path with path \"\").",
	}, []string{"path", "outcome"})
	inflight := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fluxon_rpc_handlers_running",
		Help: "RPC handlers running now on this member.",
	})
	conns := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fluxon_rpc_peer_connections",
		Help: "Connections this member holds open to other members for its RPC calls.",
	})
	m := &metrics{latency: latency, handled: handled, inflight: inflight, conns: conns}
	for o := outcome(0); o < numOutcomes; o++ {
		m.calls[o] = callVec.WithLabelValues(o.String())
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{callVec, latency, handled, inflight, conns} {
			if err := reg.Register(c); err != nil {
				for _, done := range m.regs {
					reg.Unregister(done)
				}
				return nil, err
			}
			m.regs = append(m.regs, c)
		}
	}
	return m, nil
}

// pathCounters are one registered path's handler outcome counters.
type pathCounters struct {
	ok, err, panicked prometheus.Counter
}

func (m *metrics) forPath(path string) pathCounters {
	return pathCounters{
		ok:       m.handled.WithLabelValues(path, handledOK),
		err:      m.handled.WithLabelValues(path, handledError),
		panicked: m.handled.WithLabelValues(path, handledPanic),
	}
}
