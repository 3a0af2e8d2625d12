package metrics_test

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/metrics"
	"github.com/patina-db/patina/internal/store"
)

type fakeStore struct{ gaps uint64 }

func (s fakeStore) Gaps() uint64 { return s.gaps }

type fakeCluster struct{}

func (fakeCluster) MemberStates() (alive, suspect, dead int) { return 3, 1, 2 }
func (fakeCluster) QueueSize() int                           { return 7 }

type fakeWatchdog struct{}

func (fakeWatchdog) Stalls() uint64 { return 4 }

func gather(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// value is the value of a family's metric whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s%v", name, want)
	return 0
}

// TestSourcesAreReadAtScrape: every counter and gauge reads its source
// when gathered, and the histograms count what they observed.
func TestSourcesAreReadAtScrape(t *testing.T) {
	m := metrics.New()
	var stats cluster.Stats
	subs, subsLag := 0, 0.0
	if err := m.AddSources(metrics.Sources{Store: fakeStore{gaps: 5}, Cluster: fakeCluster{}, ClusterStats: &stats, Watchdog: fakeWatchdog{}}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddSources(metrics.Sources{Subscriptions: func() (int, float64) { return subs, subsLag }}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddSources(metrics.Sources{Store: fakeStore{}}); err == nil {
		t.Fatal("a second store was accepted")
	}
	fams := gather(t, m)
	for name, want := range map[string]float64{"patina_gaps": 5, "patina_broadcast_queue_size": 7, "patina_watchdog_stalls_total": 4,
		"patina_changesets_applied_total": 0, "patina_subscriptions": 0, "patina_replication_lag_seconds": 0} {
		if got := value(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for state, want := range map[string]float64{"alive": 3, "suspect": 1, "dead": 2} {
		if got := value(t, fams, "patina_members", "state", state); got != want {
			t.Errorf("members %s = %v, want %v", state, got, want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "patina_sync_rounds_total", "patina_changesets_dropped_total", "patina_broadcasts_sent_total"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	stats.Applied.Add(3)
	stats.Received.Add(9)
	stats.SyncPulled.Add(2)
	subs, subsLag = 2, 40
	m.ObserveReplicationLag(20 * time.Millisecond)
	m.ObserveWrite(store.WriteLocal, time.Millisecond, 3)
	m.ObserveWrite(store.WriteApply, time.Millisecond, 1)
	m.ObserveWrite(store.WriteApply, time.Millisecond, 20)
	fams = gather(t, m)
	for name, want := range map[string]float64{"patina_changesets_applied_total": 3, "patina_changesets_received_total": 9,
		"patina_sync_versions_pulled_total": 2, "patina_subscriptions": 2, "patina_subscription_lag_seconds": 40, "patina_replication_lag_seconds": 1} {
		if got := value(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := value(t, fams, "patina_store_write_seconds", "kind", "apply"); got != 2 {
		t.Errorf("apply writes observed %v, want 2", got)
	}
	if got := value(t, fams, "patina_store_write_seconds", "kind", "local"); got != 1 {
		t.Errorf("local writes observed %v, want 1", got)
	}
	for kind, want := range map[string]float64{"local": 3, "apply": 21} {
		if got := histogramSum(t, fams, "patina_store_write_batch", "kind", kind); got != want {
			t.Errorf("%s writes carried %v in all, want %v", kind, got, want)
		}
	}
}

// histogramSum is the sum of the histogram name whose labels match.
func histogramSum(t *testing.T, fams map[string]*dto.MetricFamily, name, label, want string) float64 {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == want && m.Histogram != nil {
				return m.Histogram.GetSampleSum()
			}
		}
	}
	t.Fatalf("no histogram %s{%s=%q}", name, label, want)
	return 0
}
