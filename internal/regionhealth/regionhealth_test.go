package regionhealth_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/internal/regionhealth"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// TestRegionHealth: a region turns degraded when an agent is cut off
// while writes continue (its row counts fall behind) and when an agent
// dies, and healthy again once it is back.
func TestRegionHealth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	faults := &cluster.Faults{}
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Cluster: "ams", Nodes: 3, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}, Faults: faults, SyncInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	apis := []string{r.Nodes[0].API, r.Nodes[1].API}
	write := func(from, n int) {
		for i := from; i < from+n; i++ {
			_, err := r.Nodes[0].Client().Transact(ctx, client.Statement{
				Query:  "INSERT INTO machines (id, app, region, host, state) VALUES (?, ?, 'ams', 'h1', 'started')",
				Params: []any{fmt.Sprintf("m%d", i), fmt.Sprintf("app%d", i%2)},
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	report := func() regionhealth.Report {
		return regionhealth.Region(ctx, "ams", apis, time.Now().UnixMilli(), 2, regionhealth.Options{Timeout: 2 * time.Second})
	}
	waitVerdict := func(what, verdict string, cond func(regionhealth.Report) bool) regionhealth.Report {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			rep := report()
			if rep.Verdict == verdict && (cond == nil || cond(rep)) {
				return rep
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %s %v after a minute", what, rep.Verdict, rep.Reasons)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	write(0, 10)
	rep := waitVerdict("at start", regionhealth.Healthy, nil)
	if rep.Alive != 3 || len(rep.Agents) != 3 || rep.AppsRegion != 2 || len(rep.Tables) != 2 || rep.Tables[0].Max != 0 || rep.Tables[1].Max != 10 {
		t.Fatalf("healthy report: %+v", rep)
	}

	// Cut ams-3 off the data plane; it stays a member and answers, but
	// misses the writes. Gossip still reaches it: cut off from that too,
	// it would be declared dead after a few seconds, and a dead member's
	// rows are not counted.
	faults.PartitionData([]string{"ams-1", "ams-2"}, []string{"ams-3"})
	write(10, 20)
	rep = waitVerdict("ams-3 cut off", regionhealth.Degraded, func(rep regionhealth.Report) bool {
		for _, tr := range rep.Tables {
			if tr.Table == "machines" && tr.Deviation > 0 {
				return true
			}
		}
		return false
	})
	if !strings.Contains(strings.Join(rep.Reasons, ";"), "machines row counts differ") {
		t.Fatalf("reasons: %v", rep.Reasons)
	}
	faults.Partition()
	waitVerdict("healed", regionhealth.Healthy, nil)

	// An agent dies: degraded; back: healthy.
	if err := r.Nodes[2].Stop(); err != nil {
		t.Fatal(err)
	}
	waitVerdict("ams-3 stopped", regionhealth.Degraded, nil)
	if err := r.Nodes[2].Start(); err != nil {
		t.Fatal(err)
	}
	waitVerdict("ams-3 restarted", regionhealth.Healthy, func(rep regionhealth.Report) bool { return rep.Alive == 3 })

	// A host that stops re-publishing: degraded, naming it.
	heartbeat := func(at time.Time) {
		if _, err := r.Nodes[0].Client().Transact(ctx, client.Statement{
			Query:  "INSERT INTO hosts (name, region, seen_at, republish_ms) VALUES ('h1', 'ams', ?, 30000) ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
			Params: []any{at.UnixMilli()},
		}); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat(time.Now())
	rep = waitVerdict("a host publishing", regionhealth.Healthy, func(rep regionhealth.Report) bool { return len(rep.Hosts) == 1 })
	if h := rep.Hosts[0]; h.Name != "h1" || h.Interval != 30 || h.Silent() {
		t.Fatalf("host: %+v", h)
	}
	heartbeat(time.Now().Add(-10 * time.Minute))
	rep = waitVerdict("a host silent", regionhealth.Degraded, nil)
	if !strings.Contains(strings.Join(rep.Reasons, ";"), "host h1 has not re-published for 10m") {
		t.Fatalf("reasons: %v", rep.Reasons)
	}
}

// TestNoAgentAnswersNamesEachOnesError: a region none of whose agents
// answers is down, and each agent's row carries its own error alone.
func TestNoAgentAnswersNamesEachOnesError(t *testing.T) {
	var apis []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		apis = append(apis, "http://"+ln.Addr().String())
		ln.Close()
	}
	rep := regionhealth.Region(context.Background(), "ams", apis, 0, 0, regionhealth.Options{Timeout: time.Second})
	if rep.Verdict != regionhealth.Down || len(rep.Agents) != 2 {
		t.Fatalf("report %+v", rep)
	}
	for i, a := range rep.Agents {
		other := strings.TrimPrefix(apis[1-i], "http://")
		if !strings.Contains(a.Error, strings.TrimPrefix(apis[i], "http://")) || strings.Contains(a.Error, other) || strings.Contains(a.Error, "\n") {
			t.Fatalf("agent %s: error %q, want its own alone", a.API, a.Error)
		}
	}
}

// TestJudge covers the verdict rules.
func TestJudge(t *testing.T) {
	ok := regionhealth.Agent{Name: "a", State: "alive", Rows: map[string]int64{"machines": 5}}
	base := func() regionhealth.Report {
		return regionhealth.Report{Region: "ams", Alive: 2, Agents: []regionhealth.Agent{ok, ok}, BridgeHeartbeatAge: 1, AppsGlobal: 3, AppsRegion: 3}
	}
	l := regionhealth.DefaultLimits()
	for name, tc := range map[string]struct {
		change  func(r *regionhealth.Report)
		verdict string
		reason  string
	}{
		"healthy":         {func(r *regionhealth.Report) {}, regionhealth.Healthy, ""},
		"nobody answers":  {func(r *regionhealth.Report) { r.Agents[0].Error, r.Agents[1].Error = "x", "y" }, regionhealth.Down, "no agent"},
		"suspect":         {func(r *regionhealth.Report) { r.Suspect = 1 }, regionhealth.Degraded, "1 suspect"},
		"gaps":            {func(r *regionhealth.Report) { r.Agents[1].Gaps = 4 }, regionhealth.Degraded, "misses 4 versions"},
		"lag":             {func(r *regionhealth.Report) { r.Agents[1].P99Lag = 9 }, regionhealth.Degraded, "lag"},
		"old heartbeat":   {func(r *regionhealth.Report) { r.BridgeHeartbeatAge = 100 }, regionhealth.Degraded, "heartbeat 100s old"},
		"no heartbeat":    {func(r *regionhealth.Report) { r.BridgeHeartbeatAge = -1 }, regionhealth.Degraded, "no bridge heartbeat"},
		"apps differ":     {func(r *regionhealth.Report) { r.AppsGlobal = 2 }, regionhealth.Degraded, "lists 2 apps"},
		"alive, silent":   {func(r *regionhealth.Report) { r.Agents[1].Error = "refused" }, regionhealth.Degraded, "does not answer"},
		"host publishing": {func(r *regionhealth.Report) { r.Hosts = []regionhealth.Host{{Name: "h1", Age: 80, Interval: 30}} }, regionhealth.Healthy, ""},
		"host silent":     {func(r *regionhealth.Report) { r.Hosts = []regionhealth.Host{{Name: "h1", Age: 100, Interval: 30}} }, regionhealth.Degraded, "host h1 has not re-published for 1m40s (every 30s)"},
		"host reseeded":   {func(r *regionhealth.Report) { r.Hosts = []regionhealth.Host{{Name: "h1", Age: 100}} }, regionhealth.Degraded, "host h1 has not published since a reseed wrote its machines 1m40s ago"},
	} {
		r := base()
		tc.change(&r)
		regionhealth.Judge(&r, l)
		if r.Verdict != tc.verdict || !strings.Contains(strings.Join(r.Reasons, ";"), tc.reason) {
			t.Errorf("%s: %s %v", name, r.Verdict, r.Reasons)
		}
	}
	if regionhealth.ExitCode(regionhealth.Worst([]regionhealth.Report{{Verdict: "healthy"}, {Verdict: "degraded"}})) != 1 {
		t.Error("worst of healthy and degraded")
	}
}
