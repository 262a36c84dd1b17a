package resp

import "github.com/prometheus/client_golang/prometheus"

// metrics are the server's Prometheus collectors. A nil *metrics records
// nothing, so call sites need no checks.
type metrics struct {
	commands []prometheus.Counter // by command index; the last is "unknown"
	errors   *prometheus.CounterVec
	clients  prometheus.Gauge
	rejects  prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	cmds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fluxon_resp_commands_total", Help: "RESP commands received, by command name (unknown: not a supported command).",
	}, []string{"command"})
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fluxon_resp_errors_total", Help: "RESP error replies, by kind: protocol (the connection is closed), command.",
		}, []string{"kind"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fluxon_resp_connected_clients", Help: "RESP client connections being served.",
		}),
		rejects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fluxon_resp_rejected_connections_total", Help: "RESP connections turned away because MaxClients were connected.",
		}),
	}
	for _, c := range commandList {
		m.commands = append(m.commands, cmds.WithLabelValues(c.name))
	}
	m.commands = append(m.commands, cmds.WithLabelValues("unknown"))
	r.MustRegister(cmds, m.errors, m.clients, m.rejects)
	return m
}

func (m *metrics) command(idx int) {
	if m != nil {
		m.commands[idx].Inc()
	}
}

func (m *metrics) error(kind string) {
	if m != nil {
		m.errors.WithLabelValues(kind).Inc()
	}
}

func (m *metrics) clientsAdd(d float64) {
	if m != nil {
		m.clients.Add(d)
	}
}

func (m *metrics) reject() {
	if m != nil {
		m.rejects.Inc()
	}
}
