// Package regionhealth judges a region's health for operators: whether
// its agents are members in good standing, what their bookkeeping and
// replication lag say, whether their tables agree, whether its bridge
// still reports, and whether the global map agrees with the region about
// which apps run there. Gathering talks to the agents; judging is a pure
// function of what was gathered.
package regionhealth

import (
	"fmt"
	"sort"
	"time"
)

// Verdicts, from best to worst.
const (
	Healthy  = "healthy"
	Degraded = "degraded"
	Down     = "down"
)

// Report is one region's health.
type Report struct {
	Region  string   `json:"region"`
	Verdict string   `json:"verdict"`
	Reasons []string `json:"reasons,omitempty"`
	// Alive, Suspect and Dead count the region's members as its first
	// answering agent sees them.
	Alive   int     `json:"alive"`
	Suspect int     `json:"suspect"`
	Dead    int     `json:"dead"`
	Agents  []Agent `json:"agents"`
	// Tables holds, per table, the row counts' spread across the agents
	// that answered.
	Tables []TableRows `json:"tables"`
	// BridgeHeartbeatAge is how long ago the region's bridge last
	// reported, in seconds; -1 when it never has.
	BridgeHeartbeatAge float64 `json:"bridge_heartbeat_age"`
	// AppsGlobal is how many apps the global map lists in the region,
	// AppsRegion how many the region's own tables hold; -1 when unknown.
	AppsGlobal int `json:"apps_global"`
	AppsRegion int `json:"apps_region"`
	// Hosts are the region's host agents as its hosts table records
	// them, by name; nil when the region's schema has none.
	Hosts []Host `json:"hosts,omitempty"`
}

// Host is one host agent and how long ago it last re-published all its
// machines.
type Host struct {
	Name string `json:"name"`
	// Age of its last full re-publish in seconds, by this command's
	// clock against the host's (clocks that disagree shift it).
	Age float64 `json:"age"`
	// Interval is its re-publish interval in seconds.
	Interval float64 `json:"interval"`
}

// Silent reports whether the host has missed three re-publishes: its
// machines' rows may no longer be what runs, and the region's agents
// forget them after [hosts] forget_after.
func (h Host) Silent() bool { return h.Age > 3*max(h.Interval, 1) }

// Agent is one member of the region.
type Agent struct {
	Name  string `json:"name"`
	API   string `json:"api"`
	State string `json:"state"` // as membership says: alive, suspect, dead, left
	// Error is why the agent's own figures are missing.
	Error     string           `json:"error,omitempty"`
	Head      uint64           `json:"head"`
	Gaps      uint64           `json:"gaps"`
	P99Lag    float64          `json:"p99_lag"`
	QueueSize int              `json:"queue_size"`
	Rows      map[string]int64 `json:"rows,omitempty"`
}

// TableRows is a table's row counts across the agents that answered.
type TableRows struct {
	Table     string `json:"table"`
	Min       int64  `json:"min"`
	Max       int64  `json:"max"`
	Deviation int64  `json:"deviation"` // Max - Min
}

// Limits say what counts as degraded.
type Limits struct {
	// HeartbeatMaxAge is the oldest acceptable bridge heartbeat.
	HeartbeatMaxAge time.Duration
	// MaxRowDeviation is the largest acceptable spread of a table's row
	// count across agents (writes in flight make it briefly non-zero).
	MaxRowDeviation int64
	// MaxLag is the largest acceptable p99 replication lag, in seconds.
	MaxLag float64
	// MaxGaps is the most missing versions an agent may have.
	MaxGaps uint64
}

// DefaultLimits are the limits `patina region health` uses by default.
func DefaultLimits() Limits {
	return Limits{HeartbeatMaxAge: 30 * time.Second, MaxRowDeviation: 0, MaxLag: 5, MaxGaps: 0}
}

// Judge fills in the verdict and its reasons from what was gathered.
func Judge(r *Report, l Limits) {
	r.Reasons = nil
	answered := 0
	for _, a := range r.Agents {
		if a.Error == "" {
			answered++
		}
	}
	if answered == 0 {
		r.Verdict = Down
		r.Reasons = append(r.Reasons, "no agent of the region answers")
		return
	}
	var reasons []string
	if r.Suspect > 0 || r.Dead > 0 {
		reasons = append(reasons, fmt.Sprintf("%d suspect and %d dead of %d members", r.Suspect, r.Dead, r.Alive+r.Suspect+r.Dead))
	}
	for _, a := range r.Agents {
		switch {
		case a.Error != "" && a.State == "alive":
			reasons = append(reasons, fmt.Sprintf("%s does not answer: %s", a.Name, a.Error))
		case a.Error != "":
		case a.Gaps > l.MaxGaps:
			reasons = append(reasons, fmt.Sprintf("%s misses %d versions", a.Name, a.Gaps))
		}
		if a.Error == "" && a.P99Lag > l.MaxLag {
			reasons = append(reasons, fmt.Sprintf("%s: p99 replication lag %.1fs", a.Name, a.P99Lag))
		}
	}
	for _, t := range r.Tables {
		if t.Deviation > l.MaxRowDeviation {
			reasons = append(reasons, fmt.Sprintf("%s row counts differ by %d across agents (%d..%d)", t.Table, t.Deviation, t.Min, t.Max))
		}
	}
	switch {
	case r.BridgeHeartbeatAge < 0:
		reasons = append(reasons, "no bridge heartbeat in the global directory")
	case r.BridgeHeartbeatAge > l.HeartbeatMaxAge.Seconds():
		reasons = append(reasons, fmt.Sprintf("bridge heartbeat %.0fs old", r.BridgeHeartbeatAge))
	}
	for _, h := range r.Hosts {
		switch {
		case !h.Silent():
		case h.Interval == 0: // a row a reseed wrote, never replaced by the host's own
			reasons = append(reasons, fmt.Sprintf("host %s has not published since a reseed wrote its machines %s ago", h.Name, roundSeconds(h.Age)))
		default:
			reasons = append(reasons, fmt.Sprintf("host %s has not re-published for %s (every %s)", h.Name, roundSeconds(h.Age), roundSeconds(h.Interval)))
		}
	}
	if r.AppsGlobal >= 0 && r.AppsRegion >= 0 && r.AppsGlobal != r.AppsRegion {
		reasons = append(reasons, fmt.Sprintf("the global map lists %d apps here, the region has %d", r.AppsGlobal, r.AppsRegion))
	}
	r.Reasons = reasons
	r.Verdict = Healthy
	if len(reasons) > 0 {
		r.Verdict = Degraded
	}
}

// roundSeconds renders seconds as a duration to the second.
func roundSeconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}

// tableRows computes the spread of each table's row counts.
func tableRows(agents []Agent) []TableRows {
	spread := map[string]*TableRows{}
	for _, a := range agents {
		for t, n := range a.Rows {
			s := spread[t]
			if s == nil {
				spread[t] = &TableRows{Table: t, Min: n, Max: n}
				continue
			}
			s.Min, s.Max = min(s.Min, n), max(s.Max, n)
		}
	}
	out := make([]TableRows, 0, len(spread))
	for _, s := range spread {
		s.Deviation = s.Max - s.Min
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out
}

// Worst is the worst verdict of the reports; Down for none.
func Worst(rs []Report) string {
	if len(rs) == 0 {
		return Down
	}
	worst := Healthy
	for _, r := range rs {
		switch {
		case r.Verdict == Down:
			return Down
		case r.Verdict == Degraded:
			worst = Degraded
		}
	}
	return worst
}

// ExitCode is the process exit code for a verdict: 0 healthy, 1
// degraded, 2 down.
func ExitCode(verdict string) int {
	switch verdict {
	case Healthy:
		return 0
	case Degraded:
		return 1
	}
	return 2
}
