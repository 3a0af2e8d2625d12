// Package metrics owns an agent's Prometheus registry and collectors:
// counters and gauges read at scrape time from what the store, the
// cluster member, the watchdog and the subscription engine already count,
// and the few histograms that need an observation point (replication lag,
// time holding the store's write lock and what each hold carried). It
// serves them at GET /metrics.
//
// It only measures: nothing here decides anything, and nothing here runs
// unless scraped. Each agent has its own registry, so several agents in
// one process (tests, patina dev) keep their numbers apart.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/patina-db/patina/internal/store"
)

// Metrics is one agent's registry.
type Metrics struct {
	reg   *prometheus.Registry
	lag   prometheus.Histogram
	write *prometheus.HistogramVec
	batch *prometheus.HistogramVec
}

// lagBuckets cover replication lag from 1 ms (one host) to 10 s (a
// congested region), in seconds.
var lagBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// writeBuckets cover write-lock time from 100 µs (one small row) to 10 s
// (a huge batch), in seconds.
var writeBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// batchBuckets cover what one write carried: from a lone transaction or
// version to a reseed's batches and a catch-up's sync chunks.
var batchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}

// New returns a registry with the Go runtime and process collectors and
// the histograms; AddSources adds what is read at scrape time.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "patina_replication_lag_seconds",
			Help:    "Time from a version's commit on its origin to its apply here, for versions that came by broadcast (compares two hosts' clocks).",
			Buckets: lagBuckets,
		}),
		write: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "patina_store_write_seconds",
			Help:    "Time the store's write lock was held, by local write transactions (kind=local) and batches of remote versions (kind=apply).",
			Buckets: writeBuckets,
		}, []string{"kind"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "patina_store_write_batch",
			Help:    "What one hold of the store's write lock carried: client transactions committed together (kind=local; more than one when group commit grouped them), changesets in a batch of remote versions (kind=apply).",
			Buckets: batchBuckets,
		}, []string{"kind"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.lag, m.write, m.batch,
	)
	// Both kinds show from the start, at zero.
	for _, k := range []store.WriteKind{store.WriteLocal, store.WriteApply} {
		m.write.WithLabelValues(string(k))
		m.batch.WithLabelValues(string(k))
	}
	return m
}

// Registry is the agent's registry, for more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// ObserveReplicationLag records one replication lag measured.
func (m *Metrics) ObserveReplicationLag(d time.Duration) { m.lag.Observe(d.Seconds()) }

// ObserveWrite records how long a write held the store's write lock and
// how many transactions or changesets it carried.
func (m *Metrics) ObserveWrite(kind store.WriteKind, held time.Duration, items int) {
	m.write.WithLabelValues(string(kind)).Observe(held.Seconds())
	m.batch.WithLabelValues(string(kind)).Observe(float64(items))
}

// AddSources makes every scrape read src. Metrics of the sources left nil
// are absent. Two calls must not give the same kind of source.
func (m *Metrics) AddSources(src Sources) error {
	return m.reg.Register(newSourceCollector(src))
}
