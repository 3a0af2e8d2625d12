package bridge_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/bridge"
	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/regional"
)

// The region and global clusters are started once, on first use, and
// shared by the tests and benchmarks of this package; each test uses its
// own apps.
var shared struct {
	once           sync.Once
	err            error
	dir            string
	region, global *devcluster.Region
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.region != nil {
		shared.region.Stop()
	}
	if shared.global != nil {
		shared.global.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func schemaDir(tier string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "schemas", tier)
}

// clusters returns the shared regional cluster "syd" and global cluster.
func clusters(tb testing.TB) (region, global *devcluster.Region) {
	tb.Helper()
	shared.once.Do(func() {
		ctx := context.Background()
		shared.dir, shared.err = os.MkdirTemp("", "patina-bridge-test-")
		if shared.err != nil {
			return
		}
		shared.region, shared.err = devcluster.StartRegion(ctx, devcluster.RegionOptions{Cluster: "syd", Nodes: 3,
			Dir: filepath.Join(shared.dir, "syd"), SchemaPaths: []string{schemaDir("regional")}, SyncInterval: 200 * time.Millisecond})
		if shared.err != nil {
			return
		}
		shared.global, shared.err = devcluster.StartRegion(ctx, devcluster.RegionOptions{Cluster: "global", Nodes: 3,
			Dir: filepath.Join(shared.dir, "global"), SchemaPaths: []string{schemaDir("global")}, SyncInterval: 200 * time.Millisecond})
	})
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.region, shared.global
}

// testConfig is a bridge for syd following every regional agent and
// writing to every global agent, first to first. Heartbeats and periodic
// reconciles are rare so that they do not count in version tallies.
func testConfig(region, global *devcluster.Region, name string) bridge.Config {
	cfg := bridge.DefaultConfig()
	cfg.Bridge.Name = name
	cfg.Bridge.Region = "syd"
	cfg.Bridge.FlushInterval = 100 * time.Millisecond
	cfg.Bridge.HeartbeatInterval = time.Hour
	cfg.Bridge.ReconcileInterval = time.Hour
	cfg.Region.FailoverAfter = time.Second
	for _, n := range region.Nodes {
		cfg.Region.Agents = append(cfg.Region.Agents, n.API)
	}
	for _, n := range global.Nodes {
		cfg.Global.Agents = append(cfg.Global.Agents, n.API)
	}
	cfg.Directory.Lookup = []string{"127.0.0.1:7950"}
	cfg.Directory.Latitude, cfg.Directory.Longitude = -33.87, 151.21
	return cfg
}

// startBridge runs a bridge until the test ends and waits until it
// follows the region, has reconciled, flushed and beaten once.
func startBridge(tb testing.TB, cfg bridge.Config) *bridge.Bridge {
	tb.Helper()
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b, err := bridge.New(cfg, log)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("bridge %s: %v", cfg.Bridge.Name, err)
		}
	})
	waitFor(tb, "bridge "+cfg.Bridge.Name+" to start", func() (bool, string) {
		s := b.Stats()
		return s.Following && s.Reconciles > 0 && s.Heartbeats > 0 && !s.Unflushed, fmt.Sprintf("%+v", s)
	})
	return b
}

// waitFor polls cond until it holds, failing with its last report after
// a deadline.
func waitFor(tb testing.TB, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, report := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not reached after 60s: %s", what, report)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func machine(id, app, state string, checks ...string) *regional.Machine {
	m := &regional.Machine{V: regional.RecordVersion, ID: id, App: app, Region: "syd", Host: "host-1",
		Address: "10.1.0.1", Port: 8080, State: state, UpdatedAt: time.Now().UnixMilli()}
	for i := 0; i+1 < len(checks); i += 2 {
		m.Checks = append(m.Checks, regional.Check{Name: checks[i], Kind: "http", Path: "/", Status: checks[i+1]})
	}
	return m
}

// publish writes machine records the way a host does, all in one
// transaction on node.
func publish(tb testing.TB, node *devcluster.RegionNode, ms ...*regional.Machine) {
	tb.Helper()
	var stmts []client.Statement
	for _, m := range ms {
		if err := m.Validate(); err != nil {
			tb.Fatal(err)
		}
		stmts = append(stmts, regional.Publish(m)...)
	}
	if _, err := node.Client().Transact(context.Background(), stmts...); err != nil {
		tb.Fatalf("publish: %v", err)
	}
}

// globalRow reads (app, region) from one global agent; nil when absent.
func globalRow(node *devcluster.RegionNode, app, region string) (*bridge.Counts, error) {
	rows, err := node.Client().Query(context.Background(), client.Statement{
		Query: `SELECT machine_count, healthy_count FROM app_regions WHERE app = ? AND region = ?`, Params: []any{app, region}})
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	c := rows.Row()
	return &bridge.Counts{Machines: c[0].(int64), Healthy: c[1].(int64)}, nil
}

// waitGlobal waits until every running global agent holds want for
// (app, region); nil means no row.
func waitGlobal(tb testing.TB, global *devcluster.Region, app, region string, want *bridge.Counts) {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("app_regions (%s, %s) = %v on every global agent", app, region, fmtCounts(want)), func() (bool, string) {
		for _, n := range global.Nodes {
			if n.Agent == nil {
				continue
			}
			got, err := globalRow(n, app, region)
			if err != nil {
				return false, n.Name + ": " + err.Error()
			}
			if (got == nil) != (want == nil) || (got != nil && *got != *want) {
				return false, n.Name + " has " + fmtCounts(got)
			}
		}
		return true, ""
	})
}

func fmtCounts(c *bridge.Counts) string {
	if c == nil {
		return "no row"
	}
	return fmt.Sprintf("%+v", *c)
}

// settle waits until each bridge holds want for app and has flushed.
func settle(tb testing.TB, app string, want *bridge.Counts, bs ...*bridge.Bridge) {
	tb.Helper()
	for _, b := range bs {
		waitFor(tb, "bridge to hold and flush "+app, func() (bool, string) {
			got, ok := b.Apps()[app]
			s := b.Stats()
			if (want == nil) == ok || (ok && got != *want) || s.Unflushed {
				return false, fmt.Sprintf("holds %+v (present %v), stats %+v", got, ok, s)
			}
			return true, ""
		})
	}
}

// globalVersions is every version the global cluster's agents ever
// made: only bridges write there.
func globalVersions(global *devcluster.Region) uint64 {
	var n uint64
	for _, g := range global.Nodes {
		if g.Agent != nil {
			n += g.Agent.Store().Head()
		}
	}
	return n
}

func counts(m, h int64) *bridge.Counts { return &bridge.Counts{Machines: m, Healthy: h} }

// TestAppAppearsAndLeaves: a machine of a new app makes every global
// agent list (app, syd); destroying the app's last machine removes it.
func TestAppAppearsAndLeaves(t *testing.T) {
	region, global := clusters(t)
	startBridge(t, testConfig(region, global, "b1"))
	host := region.Nodes[1] // not the agent the bridge follows
	publish(t, host, machine("appear-1", "appear", regional.StateStarted))
	waitGlobal(t, global, "appear", "syd", counts(1, 1))
	publish(t, host, machine("appear-2", "appear", regional.StateCreated, "http", regional.CheckCritical))
	waitGlobal(t, global, "appear", "syd", counts(2, 1))
	publish(t, host, machine("appear-1", "appear", regional.StateDestroyed))
	waitGlobal(t, global, "appear", "syd", counts(1, 0))
	publish(t, host, machine("appear-2", "appear", regional.StateDestroyed))
	waitGlobal(t, global, "appear", "syd", nil)
}

// TestUnchangedFactsWriteNothing: 10k machine changes that change no
// app's counts make no global version; the one change that does after
// them makes exactly one.
func TestUnchangedFactsWriteNothing(t *testing.T) {
	region, global := clusters(t)
	b := startBridge(t, testConfig(region, global, "b1"))
	node := region.Nodes[0] // the agent the bridge follows: its events come in commit order
	const machines, rounds = 100, 100
	ms := make([]*regional.Machine, machines)
	for i := range ms {
		ms[i] = machine(fmt.Sprintf("steady-%d", i), "steady", regional.StateCreated, "http", regional.CheckPassing)
	}
	publish(t, node, ms...)
	waitGlobal(t, global, "steady", "syd", counts(machines, 0))
	settle(t, "steady", counts(machines, 0), b)
	v0, s0 := globalVersions(global), b.Stats()

	for r := 0; r < rounds; r++ {
		for i, m := range ms {
			m.Image = fmt.Sprintf("img:%d", r)
			m.UpdatedAt++
			if (r+i)%2 == 0 {
				m.State = regional.StateStopped
			} else {
				m.State = regional.StateCreated
			}
		}
		publish(t, node, ms...)
	}
	publish(t, node, machine("steady-marker", "steady-marker", regional.StateStarted))
	waitGlobal(t, global, "steady-marker", "syd", counts(1, 1))
	settle(t, "steady-marker", counts(1, 1), b)
	v1, s1 := globalVersions(global), b.Stats()
	t.Logf("%d machine changes: %d change events, %d flush intervals, %d flushes, %d global versions (the marker's included)",
		machines*rounds, s1.Changes-s0.Changes, s1.FlushTicks-s0.FlushTicks, s1.Flushes-s0.Flushes, v1-v0)
	if v1-v0 != 1 || s1.Flushes-s0.Flushes != 1 {
		t.Fatalf("%d global versions and %d flushes for changes that changed one fact, want 1 and 1", v1-v0, s1.Flushes-s0.Flushes)
	}
	if s1.Changes-s0.Changes < machines*rounds/2 {
		t.Fatalf("only %d change events for %d state changes", s1.Changes-s0.Changes, machines*rounds)
	}
	if got, err := globalRow(global.Nodes[2], "steady", "syd"); err != nil || *got != *counts(machines, 0) {
		t.Fatalf("steady: %v %v", fmtCounts(got), err)
	}
}

// TestHealthyFlipsCoalesce: 1000 healthy flips make at most one global
// version per flush interval that passed while they happened.
func TestHealthyFlipsCoalesce(t *testing.T) {
	region, global := clusters(t)
	cfg := testConfig(region, global, "b1")
	cfg.Bridge.FlushInterval = time.Second
	b := startBridge(t, cfg)
	node := region.Nodes[0]
	m := machine("flappy-1", "flappy", regional.StateStarted, "http", regional.CheckPassing)
	publish(t, node, m)
	waitGlobal(t, global, "flappy", "syd", counts(1, 1))
	settle(t, "flappy", counts(1, 1), b)
	v0, s0 := globalVersions(global), b.Stats()

	const flips = 1000
	for i := 1; i <= flips; i++ {
		m.Checks[0].Status = regional.CheckCritical
		if i%2 == 0 {
			m.Checks[0].Status = regional.CheckPassing
		}
		publish(t, node, m)
	}
	publish(t, node, machine("flappy-marker", "flappy-marker", regional.StateStarted))
	waitGlobal(t, global, "flappy-marker", "syd", counts(1, 1))
	settle(t, "flappy-marker", counts(1, 1), b)
	waitGlobal(t, global, "flappy", "syd", counts(1, 1))
	v1, s1 := globalVersions(global), b.Stats()
	ticks := s1.FlushTicks - s0.FlushTicks
	t.Logf("%d healthy flips: %d change events, %d flush intervals, %d flushes, %d global versions (the marker's included)",
		flips, s1.Changes-s0.Changes, ticks, s1.Flushes-s0.Flushes, v1-v0)
	// A flush is at most one transaction, one version; the first rows
	// may have been flushed on their own before the first interval.
	if int(v1-v0) > ticks+1 {
		t.Fatalf("%d global versions over %d flush intervals: flushes were not coalesced", v1-v0, ticks)
	}
}

// TestTwoBridgesAddNoVersions: the same fact changes make as many global
// versions with two bridges of the region as with one.
func TestTwoBridgesAddNoVersions(t *testing.T) {
	region, global := clusters(t)
	node := region.Nodes[0]
	steps := func(t *testing.T, app string, bs ...*bridge.Bridge) uint64 {
		t.Helper()
		v0 := globalVersions(global)
		for _, step := range []struct {
			ms   []*regional.Machine
			want *bridge.Counts
		}{
			{[]*regional.Machine{machine(app+"-1", app, regional.StateCreated)}, counts(1, 0)},
			{[]*regional.Machine{machine(app+"-1", app, regional.StateStarted)}, counts(1, 1)},
			{[]*regional.Machine{machine(app+"-2", app, regional.StateStarted, "tcp", regional.CheckPassing)}, counts(2, 2)},
			{[]*regional.Machine{machine(app+"-2", app, regional.StateStarted, "tcp", regional.CheckWarning)}, counts(2, 1)},
			{[]*regional.Machine{machine(app+"-1", app, regional.StateDestroyed)}, counts(1, 0)},
			{[]*regional.Machine{machine(app+"-2", app, regional.StateDestroyed)}, nil},
		} {
			publish(t, node, step.ms...)
			waitGlobal(t, global, app, "syd", step.want)
			settle(t, app, step.want, bs...)
		}
		return globalVersions(global) - v0
	}
	// Each run's bridges stop when its subtest ends.
	var one, two uint64
	t.Run("one", func(t *testing.T) {
		b := startBridge(t, testConfig(region, global, "solo"))
		one = steps(t, "pair-one", b)
		t.Logf("one bridge: %d global versions (bridge: %d flushes, %d versions)", one, b.Stats().Flushes, b.Stats().Versions)
	})
	t.Run("two", func(t *testing.T) {
		cfgA := testConfig(region, global, "pair-a")
		cfgB := testConfig(region, global, "pair-b")
		// The second bridge follows another agent of the region: its
		// events arrive at other moments than the first's.
		cfgB.Region.Agents = append(cfgB.Region.Agents[1:], cfgB.Region.Agents[0])
		a, b := startBridge(t, cfgA), startBridge(t, cfgB)
		two = steps(t, "pair-two", a, b)
		sa, sb := a.Stats(), b.Stats()
		t.Logf("two bridges: %d global versions (bridges: %d+%d flushes, %d+%d versions)",
			two, sa.Flushes, sb.Flushes, sa.Versions, sb.Versions)
		if sa.Versions+sb.Versions != int(two) {
			t.Errorf("the bridges count %d+%d versions, the global cluster %d", sa.Versions, sb.Versions, two)
		}
	})
	if two != one {
		t.Fatalf("two bridges made %d global versions for what one makes in %d", two, one)
	}
}

// TestReconcileAtStart: a starting bridge deletes the global rows of
// apps the region no longer has and corrects wrong counts, and touches
// no other region's rows.
func TestReconcileAtStart(t *testing.T) {
	region, global := clusters(t)
	publish(t, region.Nodes[0], machine("recon-1", "recon-real", regional.StateStarted))
	stale := []client.Statement{
		{Query: `INSERT INTO app_regions (app, region, machine_count, healthy_count, updated_at) VALUES (?, ?, ?, ?, 1)`,
			Params: []any{"recon-ghost", "syd", 3, 3}},
		{Query: `INSERT INTO app_regions (app, region, machine_count, healthy_count, updated_at) VALUES (?, ?, ?, ?, 1)`,
			Params: []any{"recon-real", "syd", 7, 0}},
		{Query: `INSERT INTO app_regions (app, region, machine_count, healthy_count, updated_at) VALUES (?, ?, ?, ?, 1)`,
			Params: []any{"recon-ghost", "ams", 2, 2}},
	}
	if _, err := global.Nodes[1].Client().Transact(context.Background(), stale...); err != nil {
		t.Fatal(err)
	}
	waitGlobal(t, global, "recon-ghost", "syd", counts(3, 3))
	waitGlobal(t, global, "recon-real", "syd", counts(7, 0))
	b := startBridge(t, testConfig(region, global, "b1"))
	waitGlobal(t, global, "recon-ghost", "syd", nil)
	waitGlobal(t, global, "recon-real", "syd", counts(1, 1))
	waitGlobal(t, global, "recon-ghost", "ams", counts(2, 2))
	if s := b.Stats(); s.Reconciles < 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDirectoryRow: the region's row carries its Lookup endpoints and
// location, and a second bridge's heartbeat right after the first's
// changes nothing.
func TestDirectoryRow(t *testing.T) {
	region, global := clusters(t)
	cfg := testConfig(region, global, "dir-a")
	cfg.Directory.Lookup = []string{"127.0.0.1:7950", "127.0.0.1:7951"}
	startBridge(t, cfg)
	waitFor(t, "the directory row on every global agent", func() (bool, string) {
		for _, n := range global.Nodes {
			rows, err := n.Client().Query(context.Background(), client.Statement{
				Query: `SELECT lookup, latitude, longitude, bridge_heartbeat FROM regions WHERE name = 'syd'`})
			if err != nil {
				return false, err.Error()
			}
			ok := rows.Next()
			var cells []any
			if ok {
				cells = rows.Row()
			}
			rows.Close()
			if !ok || cells[0] != `["127.0.0.1:7950","127.0.0.1:7951"]` || cells[1] != -33.87 || cells[3].(int64) == 0 {
				return false, fmt.Sprintf("%s: %v", n.Name, cells)
			}
		}
		return true, ""
	})
	v0 := globalVersions(global)
	// Another bridge of the region, listing the same agents with its
	// nearest first: the row it writes is the same.
	cfg.Bridge.Name = "dir-b"
	cfg.Directory.Lookup = []string{"127.0.0.1:7951", "127.0.0.1:7950"}
	cfg.Region.Agents = append(slices.Clone(cfg.Region.Agents[1:]), cfg.Region.Agents[0])
	b := startBridge(t, cfg)
	if v := globalVersions(global); v != v0 {
		t.Fatalf("a second bridge's start made %d global versions", v-v0)
	}
	if s := b.Stats(); s.Heartbeats != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestFailover: with the followed regional agent and the nearest global
// agent stopped, the bridge follows another regional agent, writes to
// another global agent, and later changes still reach the global cluster.
func TestFailover(t *testing.T) {
	region, global := clusters(t)
	cfg := testConfig(region, global, "b1")
	cfg.Region.FailoverAfter = 300 * time.Millisecond
	cfg.Global.Timeout = time.Second
	b := startBridge(t, cfg)
	publish(t, region.Nodes[1], machine("failover-1", "failover", regional.StateStarted))
	waitGlobal(t, global, "failover", "syd", counts(1, 1))
	if s := b.Stats(); s.RegionAgent != region.Nodes[0].API || s.GlobalAgent != global.Nodes[0].API {
		t.Fatalf("stats %+v", s)
	}

	for _, n := range []*devcluster.RegionNode{region.Nodes[0], global.Nodes[0]} {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		n.Agent = nil
	}
	defer func() {
		for _, r := range []*devcluster.Region{region, global} {
			if err := r.Nodes[0].Start(); err != nil {
				t.Fatal(err)
			}
			if err := r.WaitMembers(context.Background(), len(r.Nodes), 60*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		// The restarted global agent catches up by sync.
		waitGlobal(t, global, "failover", "syd", counts(2, 1))
	}()
	waitFor(t, "the bridge to follow another regional agent", func() (bool, string) {
		s := b.Stats()
		return s.Following && s.Failovers > 0 && s.RegionAgent != region.Nodes[0].API, fmt.Sprintf("%+v", s)
	})
	publish(t, region.Nodes[2], machine("failover-2", "failover", regional.StateStopped))
	waitGlobal(t, global, "failover", "syd", counts(2, 1))
	// The rows show on the global agents before the bridge has read the
	// answer and noted which agent took them.
	settle(t, "failover", counts(2, 1), b)
	if s := b.Stats(); s.GlobalAgent == global.Nodes[0].API {
		t.Fatalf("still writing to the stopped global agent: %+v", s)
	}
}

// TestBridgeCutOffFromItsRegionWritesNothing: a bridge that lost every
// regional agent keeps its counts, but no longer writes them: its
// reconciles would otherwise put back, over a working bridge's rows, what
// the region said when it was cut off.
func TestBridgeCutOffFromItsRegionWritesNothing(t *testing.T) {
	region, global := clusters(t)
	publish(t, region.Nodes[0], machine("cutoff-1", "cutoff", regional.StateStarted))
	cut := testConfig(region, global, "cut")
	cut.Region.Agents = []string{region.Nodes[2].API} // the one it will lose
	cut.Region.FailoverAfter = 300 * time.Millisecond
	cut.Bridge.ReconcileInterval = 200 * time.Millisecond
	stale := startBridge(t, cut)
	live := startBridge(t, testConfig(region, global, "live"))
	waitGlobal(t, global, "cutoff", "syd", counts(1, 1))

	if err := region.Nodes[2].Stop(); err != nil {
		t.Fatal(err)
	}
	region.Nodes[2].Agent = nil
	defer func() {
		if err := region.Nodes[2].Start(); err != nil {
			t.Fatal(err)
		}
		if err := region.WaitMembers(context.Background(), len(region.Nodes), 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}()
	waitFor(t, "the cut-off bridge to stop following", func() (bool, string) {
		s := stale.Stats()
		return !s.Following && s.Failovers > 0, fmt.Sprintf("%+v", s)
	})
	// The app leaves the region; the live bridge says so.
	publish(t, region.Nodes[0], machine("cutoff-1", "cutoff", regional.StateDestroyed))
	settle(t, "cutoff", nil, live)
	waitGlobal(t, global, "cutoff", "syd", nil)
	// Several reconciles of the cut-off bridge later, the row is still gone.
	r0 := stale.Stats().Reconciles
	waitFor(t, "three reconciles of the cut-off bridge", func() (bool, string) {
		s := stale.Stats()
		return s.Reconciles >= r0+3, fmt.Sprintf("%+v", s)
	})
	waitGlobal(t, global, "cutoff", "syd", nil)
	if _, ok := stale.Apps()["cutoff"]; !ok {
		t.Fatal("the cut-off bridge's counts changed: the test did not cut it off")
	}
}

// TestOneBadRowDoesNotStopTheRegion: a machine row whose app is not text
// (a blob, which a TEXT column keeps as it is) is left out of the counts;
// the bridge goes on following and counting every other app.
func TestOneBadRowDoesNotStopTheRegion(t *testing.T) {
	region, global := clusters(t)
	n := region.Nodes[1]
	exec := func(q string) {
		t.Helper()
		if _, err := n.Client().Transact(context.Background(), client.Statement{Query: q}); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO machines (id, app, state) VALUES ('blob-1', X'626c6f62', 'started')`)
	t.Cleanup(func() { exec(`DELETE FROM machines WHERE id = 'blob-1'`) })
	b := startBridge(t, testConfig(region, global, "blob"))
	publish(t, n, machine("blob-ok-1", "blobok", regional.StateStarted))
	waitFor(t, "the bridge to count blobok", func() (bool, string) {
		s := b.Stats()
		_, ok := b.Apps()["blobok"]
		return ok && s.Following && s.BadRows > 0, fmt.Sprintf("%+v", s)
	})
	waitGlobal(t, global, "blobok", "syd", counts(1, 1))
	if s := b.Stats(); s.Failovers != 0 {
		t.Fatalf("the bridge gave up an agent over one row: %+v", s)
	}
}

// TestProgressWhileGlobalAgentsHang: global agents that accept
// connections and never answer hold the write loop, a timeout per agent
// and operation, and no flush tick comes; the bridge's progress (what its
// systemd watchdog pings on) advances with each attempt all the same.
func TestProgressWhileGlobalAgentsHang(t *testing.T) {
	region, global := clusters(t)
	cfg := testConfig(region, global, "hung-global")
	cfg.Bridge.FlushInterval = time.Hour // no flush tick in this test
	cfg.Global.Agents = nil
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() }) // held open, never answered
			}
		}()
		cfg.Global.Agents = append(cfg.Global.Agents, "http://"+ln.Addr().String())
	}
	cfg.Global.Timeout = 200 * time.Millisecond
	b, err := bridge.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Reconcile, flush and heartbeat at start, each trying three agents.
	waitFor(t, "progress through the attempts alone", func() (bool, string) {
		s := b.Stats()
		return b.Progress() >= 6 && s.FlushTicks == 0, fmt.Sprintf("progress %d, %+v", b.Progress(), s)
	})
}
