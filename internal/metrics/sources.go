package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/patina-db/patina/internal/cluster"
)

// Sources are what a scrape reads. Any may be nil.
type Sources struct {
	// Store reports the versions missing here.
	Store Store
	// Cluster is the agent's membership, nil when it runs alone.
	Cluster Cluster
	// ClusterStats are the member's data-plane counters.
	ClusterStats *cluster.Stats
	// Watchdog counts the stalls found.
	Watchdog Watchdog
	// Subscriptions reports how many subscriptions are live and how long
	// the oldest changed row not yet evaluated for them has waited, in
	// seconds.
	Subscriptions func() (count int, maxLag float64)
	// Hosts reports the region's hosts that have missed three
	// re-publishes, and how many hosts this agent has forgotten.
	Hosts func() (silent int, forgotten uint64)
}

// Store is what the metrics read of the database.
type Store interface {
	Gaps() uint64
}

// Cluster is what the metrics read of the cluster member.
type Cluster interface {
	MemberStates() (alive, suspect, dead int)
	QueueSize() int
}

// Watchdog is what the metrics read of the watchdog.
type Watchdog interface {
	Stalls() uint64
}

// clusterCounters are the cluster.Stats counters, as Prometheus counters.
var clusterCounters = []struct {
	name, help string
	read       func(*cluster.Stats) uint64
}{
	{"patina_changesets_received_total", "Changesets (versions) received by broadcast.", func(s *cluster.Stats) uint64 { return s.Received.Load() }},
	{"patina_changesets_duplicate_total", "Changesets received by broadcast that were already seen or known here.", func(s *cluster.Stats) uint64 { return s.Duplicates.Load() }},
	{"patina_changesets_invalid_total", "Changesets received that failed validation.", func(s *cluster.Stats) uint64 { return s.Invalid.Load() }},
	{"patina_changesets_applied_total", "Remote versions newly applied here, by broadcast, sync or retry.", func(s *cluster.Stats) uint64 { return s.Applied.Load() }},
	{"patina_changesets_apply_failures_total", "Remote versions that failed to apply (retried locally, then by sync).", func(s *cluster.Stats) uint64 { return s.ApplyFailures.Load() }},
	{"patina_changesets_refused_total", "Of those, versions refused for good (this node's own actor, above the maximum): not retried here.", func(s *cluster.Stats) uint64 { return s.Refused.Load() }},
	{"patina_changesets_dropped_total", "Changesets dropped because the broadcast queue or the apply inbox was full (sync repairs them).", func(s *cluster.Stats) uint64 { return s.QueueDropped.Load() }},
	{"patina_broadcasts_sent_total", "Broadcast messages sent.", func(s *cluster.Stats) uint64 { return s.BroadcastsSent.Load() }},
	{"patina_broadcast_failures_total", "Broadcast messages that could not be sent.", func(s *cluster.Stats) uint64 { return s.BroadcastFailures.Load() }},
	{"patina_broadcast_changesets_sent_total", "Changesets carried by the broadcast messages sent.", func(s *cluster.Stats) uint64 { return s.ChangesetsSent.Load() }},
	{"patina_sync_rounds_total", "Anti-entropy exchanges started with a peer.", func(s *cluster.Stats) uint64 { return s.SyncRounds.Load() }},
	{"patina_sync_versions_pulled_total", "Versions received by sync.", func(s *cluster.Stats) uint64 { return s.SyncPulled.Load() }},
	{"patina_sync_versions_served_total", "Versions sent to peers by sync.", func(s *cluster.Stats) uint64 { return s.SyncServed.Load() }},
	{"patina_sync_refused_total", "Sync exchanges refused at the serve limit.", func(s *cluster.Stats) uint64 { return s.SyncRefused.Load() }},
	{"patina_data_plane_sent_bytes_total", "Data-plane payload bytes written to peers (QUIC framing excluded).", func(s *cluster.Stats) uint64 { return s.BytesSent.Load() }},
}

var (
	gapsDesc         = prometheus.NewDesc("patina_gaps", "Versions missing below the highest version known of each actor.", nil, nil)
	membersDesc      = prometheus.NewDesc("patina_members", "Cluster members as this agent sees them, itself included, by SWIM state.", []string{"state"}, nil)
	queueDesc        = prometheus.NewDesc("patina_broadcast_queue_size", "Changesets waiting to be broadcast.", nil, nil)
	stallsDesc       = prometheus.NewDesc("patina_watchdog_stalls_total", "Stalls of a long-running loop found by the watchdog.", nil, nil)
	subsDesc         = prometheus.NewDesc("patina_subscriptions", "Live subscriptions.", nil, nil)
	subsLagDesc      = prometheus.NewDesc("patina_subscription_lag_seconds", "How long the oldest changed row not yet evaluated for the subscriptions has waited.", nil, nil)
	hostsSilentDesc  = prometheus.NewDesc("patina_hosts_silent", "Hosts of the region whose row in the hosts table has not moved for three of their re-publish intervals.", nil, nil)
	hostsForgotDesc  = prometheus.NewDesc("patina_hosts_forgotten_total", "Hosts whose machines this agent removed after they stopped re-publishing.", nil, nil)
	clusterCounterDs = func() []*prometheus.Desc {
		out := make([]*prometheus.Desc, len(clusterCounters))
		for i, c := range clusterCounters {
			out[i] = prometheus.NewDesc(c.name, c.help, nil, nil)
		}
		return out
	}()
)

// sourceCollector reads its sources at every scrape.
type sourceCollector struct{ src Sources }

func newSourceCollector(src Sources) *sourceCollector { return &sourceCollector{src: src} }

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	if c.src.Store != nil {
		ch <- gapsDesc
	}
	if c.src.Cluster != nil {
		ch <- membersDesc
		ch <- queueDesc
	}
	if c.src.ClusterStats != nil {
		for _, d := range clusterCounterDs {
			ch <- d
		}
	}
	if c.src.Watchdog != nil {
		ch <- stallsDesc
	}
	if c.src.Subscriptions != nil {
		ch <- subsDesc
		ch <- subsLagDesc
	}
	if c.src.Hosts != nil {
		ch <- hostsSilentDesc
		ch <- hostsForgotDesc
	}
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Store != nil {
		ch <- prometheus.MustNewConstMetric(gapsDesc, prometheus.GaugeValue, float64(c.src.Store.Gaps()))
	}
	if c.src.Cluster != nil {
		alive, suspect, dead := c.src.Cluster.MemberStates()
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(alive), "alive")
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(suspect), "suspect")
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(dead), "dead")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(c.src.Cluster.QueueSize()))
	}
	if s := c.src.ClusterStats; s != nil {
		for i, cc := range clusterCounters {
			ch <- prometheus.MustNewConstMetric(clusterCounterDs[i], prometheus.CounterValue, float64(cc.read(s)))
		}
	}
	if c.src.Watchdog != nil {
		ch <- prometheus.MustNewConstMetric(stallsDesc, prometheus.CounterValue, float64(c.src.Watchdog.Stalls()))
	}
	if c.src.Subscriptions != nil {
		n, lag := c.src.Subscriptions()
		ch <- prometheus.MustNewConstMetric(subsDesc, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(subsLagDesc, prometheus.GaugeValue, lag)
	}
	if c.src.Hosts != nil {
		silent, forgotten := c.src.Hosts()
		ch <- prometheus.MustNewConstMetric(hostsSilentDesc, prometheus.GaugeValue, float64(silent))
		ch <- prometheus.MustNewConstMetric(hostsForgotDesc, prometheus.CounterValue, float64(forgotten))
	}
}
