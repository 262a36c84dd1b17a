package mq

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metricSet is the MQ series of one registerer, labelled by channel.
type metricSet struct {
	put, get, batches, redelivered, full, commits, lost *prometheus.CounterVec
	putWait, getWait, latency                           *prometheus.HistogramVec
	backlog, prefetch                                   *prometheus.GaugeVec
}

// chanMetrics are one channel's series.
type chanMetrics struct {
	put, get, batches, redelivered, full, commits, lost prometheus.Counter
	putWait, getWait, latency                           prometheus.Observer
	backlog, prefetch                                   prometheus.Gauge
}

var (
	setsMu sync.Mutex
	sets   = map[prometheus.Registerer]*metricSet{}
)

// latencyBuckets span a local hand-over (tens of µs) to a long backlog (minutes).
var latencyBuckets = prometheus.ExponentialBuckets(10e-6, 4, 13)

func metricsFor(reg prometheus.Registerer) *metricSet {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	setsMu.Lock()
	defer setsMu.Unlock()
	if s := sets[reg]; s != nil {
		return s
	}
	counter := func(name, help string) *prometheus.CounterVec {
		return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"channel"}))
	}
	hist := func(name, help string) *prometheus.HistogramVec {
		return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets}, []string{"channel"}))
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"channel"}))
	}
	s := &metricSet{
		put:         counter("fluxon_mq_put_messages_total", "Messages this process's producers accepted."),
		get:         counter("fluxon_mq_get_messages_total", "Messages this process's consumers delivered."),
		batches:     counter("fluxon_mq_batches_written_total", "Batch objects this process's producers wrote to the KV."),
		redelivered: counter("fluxon_mq_redeliveries_total", "Messages delivered again because an earlier consumer did not acknowledge them."),
		full:        counter("fluxon_mq_full_total", "Puts refused with ErrChannelFull."),
		commits:     counter("fluxon_mq_commits_total", "Consume-offset commits written to etcd (each covers many messages)."),
		lost:        counter("fluxon_mq_lost_batches_total", "Batches a consumer found gone (their producer's lease ended before they were consumed)."),
		putWait:     hist("fluxon_mq_put_accept_seconds", "Time a Put waited to be accepted (room in the channel included)."),
		getWait:     hist("fluxon_mq_get_seconds", "Duration of Get calls that returned messages."),
		latency:     hist("fluxon_mq_delivery_latency_seconds", "Time from a message's Put to its delivery by Get."),
		backlog:     gauge("fluxon_mq_backlog_messages", "Messages produced and not yet consumed on the streams this process's consumers hold."),
		prefetch:    gauge("fluxon_mq_prefetch_depth", "Messages read ahead and waiting for Get."),
	}
	sets[reg] = s
	return s
}

func (s *metricSet) channel(name string) *chanMetrics {
	return &chanMetrics{
		put: s.put.WithLabelValues(name), get: s.get.WithLabelValues(name), batches: s.batches.WithLabelValues(name),
		redelivered: s.redelivered.WithLabelValues(name), full: s.full.WithLabelValues(name),
		commits: s.commits.WithLabelValues(name), lost: s.lost.WithLabelValues(name),
		putWait: s.putWait.WithLabelValues(name), getWait: s.getWait.WithLabelValues(name),
		latency: s.latency.WithLabelValues(name), backlog: s.backlog.WithLabelValues(name),
		prefetch: s.prefetch.WithLabelValues(name),
	}
}

// register registers c, or returns the collector of the same description
// already registered (by an earlier build of the same set).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if e, ok := are.ExistingCollector.(T); ok {
				return e
			}
		}
	}
	return c
}
