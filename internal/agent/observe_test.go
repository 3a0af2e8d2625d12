package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/watchdog"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// startConfigured starts an agent from TOML text added to a fresh
// database and the regional schema.
func startConfigured(t *testing.T, extra string, opts agent.Options) *agent.Agent {
	t.Helper()
	dir := t.TempDir()
	cfg, err := agent.ParseConfig(fmt.Sprintf("[db]\npath = %q\nschema_paths = [%q]\n", filepath.Join(dir, "patina.db"), schemaDir())+extra, "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.NewWithOptions(context.Background(), cfg, io.Discard, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a
}

// scrape reads /metrics over HTTP, without any token, and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the family's metric whose labels include
// the pairs in labels (a histogram's sample count); ok is false when
// there is no such metric.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
next:
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metricValue(fams, name, labels...)
	if !ok {
		t.Fatalf("no metric %s%v", name, labels)
	}
	return v
}

// TestMetricsSkipTheBearerToken: /metrics answers without the token the
// API requires elsewhere, and counts the local writes.
func TestMetricsSkipTheBearerToken(t *testing.T) {
	a := startConfigured(t, "[api]\naddr = \"127.0.0.1:0\"\nbearer_token = \"s3cret\"\n", agent.Options{})
	c, err := client.New("http://"+a.APIAddr(), "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Transact(context.Background(), client.Statement{Query: "INSERT INTO machines (id) VALUES (?)", Params: []any{fmt.Sprint("m", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + a.APIAddr() + "/v1/members")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/v1/members without the token: %d, want 401", resp.StatusCode)
	}
	if a.MetricsAddr() != a.APIAddr() {
		t.Fatalf("metrics on %s, want the API's %s", a.MetricsAddr(), a.APIAddr())
	}
	fams := scrape(t, a.MetricsAddr())
	if n := mustValue(t, fams, "patina_store_write_seconds", "kind", "local"); n < 3 {
		t.Fatalf("local writes observed %v, want at least 3", n)
	}
	for name, want := range map[string]float64{"patina_gaps": 0, "patina_watchdog_stalls_total": 0} {
		if got := mustValue(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "patina_replication_lag_seconds"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if fams["patina_members"] != nil {
		t.Error("an agent running alone reports members")
	}
}

// TestMetricsOnTheirOwnAddress: with [telemetry] prometheus_addr the
// metrics move to that listener and leave the API.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	a := startConfigured(t, "[api]\naddr = \"127.0.0.1:0\"\n[telemetry]\nprometheus_addr = \"127.0.0.1:0\"\n", agent.Options{})
	if a.MetricsAddr() == a.APIAddr() {
		t.Fatal("metrics still on the API address")
	}
	if fams := scrape(t, a.MetricsAddr()); fams["patina_store_write_seconds"] == nil {
		t.Fatal("no patina metrics on the telemetry address")
	}
	resp, err := http.Get("http://" + a.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("API /metrics: %d, want 404", resp.StatusCode)
	}
}

// TestRegionMetrics: in a three-agent region, a write on one agent moves
// the others' replication metrics, and each sees three alive members.
func TestRegionMetrics(t *testing.T) {
	ctx := context.Background()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 3, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	for i := range 5 {
		if _, err := r.Nodes[0].Client().Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES (?)", Params: []any{fmt.Sprint("m", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range r.Nodes[1:] {
		var fams map[string]*dto.MetricFamily
		// One scrape reads its collectors concurrently: the counter and
		// the histogram of one apply may show in different scrapes.
		waitUntil(t, n.Name+" to apply the five versions", func() bool {
			fams = scrape(t, n.Agent.MetricsAddr())
			return mustValue(t, fams, "patina_changesets_applied_total") >= 5 &&
				mustValue(t, fams, "patina_store_write_seconds", "kind", "apply") >= 1
		})
		if got := mustValue(t, fams, "patina_members", "state", "alive"); got != 3 {
			t.Errorf("%s: %v alive members, want 3", n.Name, got)
		}
		for _, name := range []string{"patina_sync_rounds_total", "patina_sync_versions_pulled_total", "patina_changesets_received_total",
			"patina_changesets_duplicate_total", "patina_changesets_dropped_total", "patina_broadcast_queue_size", "patina_gaps"} {
			mustValue(t, fams, name)
		}
	}
	// Versions that came by broadcast carry their commit time.
	waitUntil(t, "a replication lag to be measured", func() bool {
		lags := 0.0
		for _, n := range r.Nodes[1:] {
			lags += mustValue(t, scrape(t, n.Agent.MetricsAddr()), "patina_replication_lag_seconds")
		}
		return lags > 0
	})
	if got := mustValue(t, scrape(t, r.Nodes[0].Agent.MetricsAddr()), "patina_broadcasts_sent_total"); got < 1 {
		t.Errorf("the writer sent %v broadcasts", got)
	}
}

// TestStalledApplyLoopFiresTheWatchdog: a stall injected into the apply
// loop of an agent makes its watchdog fire, naming the loop, and counts
// in its metrics; released, the agent catches up.
func TestStalledApplyLoopFiresTheWatchdog(t *testing.T) {
	ctx := context.Background()
	type stallOf struct {
		node  string
		loops []string
	}
	stalls := make(chan stallOf, 64)
	faults := &cluster.Faults{}
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 2, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}, Faults: faults,
		WatchdogTimeout: 500 * time.Millisecond, OnStall: func(node string, s watchdog.Stall) { stalls <- stallOf{node, s.Loops} }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	writer, peer := r.Nodes[0], r.Nodes[1]
	release := make(chan struct{})
	faults.StallApply(release)
	// A version the peer pulls by sync before its broadcast arrives never
	// wakes the apply loop: keep writing until one comes by broadcast.
	var got stallOf
	for i := 0; !slices.Contains(got.loops, "cluster.apply"); i++ {
		if i == 600 {
			t.Fatal("the watchdog never fired on the stalled apply loop")
		}
		if _, err := writer.Client().Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES (?)", Params: []any{fmt.Sprint("m", i)}}); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-stalls:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got.node != peer.Name {
		t.Fatalf("stall reported by %s, want %s", got.node, peer.Name)
	}
	if n := mustValue(t, scrape(t, peer.Agent.MetricsAddr()), "patina_watchdog_stalls_total"); n < 1 {
		t.Fatalf("patina_watchdog_stalls_total = %v after a stall", n)
	}
	close(release)
	faults.StallApply(nil)
	want, err := writer.Agent.Store().Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the peer to catch up", func() bool {
		d, err := peer.Agent.Store().Digest(ctx)
		return err == nil && d == want
	})
}

// TestStallExitsWithStatus70: by default a stall ends the agent's
// process with status 70 after writing every goroutine's stack. A write
// transaction that holds the store's lock past the timeout is a stall.
func TestStallExitsWithStatus70(t *testing.T) {
	if os.Getenv("PATINA_TEST_HOLD_WRITE_LOCK") == "1" {
		holdWriteLock(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStallExitsWithStatus70$")
	// The child exits without cleaning up: its files go in our directory.
	cmd.Env = append(os.Environ(), "PATINA_TEST_HOLD_WRITE_LOCK=1", "PATINA_TEST_DIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != agent.ExitStalled {
		t.Fatalf("agent process ended with %v, want status %d:\n%s", err, agent.ExitStalled, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{"watchdog: loop stalled", "store.writer", "goroutine ", "holdWriteLock"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

// holdWriteLock runs in the child process: an agent whose write never
// ends.
func holdWriteLock(t *testing.T) {
	dir := os.Getenv("PATINA_TEST_DIR")
	cfg, err := agent.ParseConfig(fmt.Sprintf("[db]\npath = %q\n[api]\naddr = \"127.0.0.1:0\"\n[watchdog]\ntimeout = \"300ms\"\n", filepath.Join(dir, "patina.db")), "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(context.Background(), cfg, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(context.Background())
	_, _ = a.Store().Write(context.Background(), func(store.Tx) error {
		select {} // the process ends from the watchdog
	})
}

// TestSystemdReadyAndStopping: under a Type=notify unit the agent says
// READY=1 once it serves and STOPPING=1 when it shuts down.
func TestSystemdReadyAndStopping(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "")
	read := func() string {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v", err)
		}
		return string(buf[:n])
	}
	dir := t.TempDir()
	cfg, err := agent.ParseConfig(fmt.Sprintf("[db]\npath = %q\n[api]\naddr = \"127.0.0.1:0\"\n", filepath.Join(dir, "patina.db")), "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	resp, err := http.Get("http://" + a.APIAddr() + "/v1/health")
	if err != nil {
		t.Fatalf("ready but not serving: %v", err)
	}
	resp.Body.Close()
	cancel()
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogAndTelemetryConfig(t *testing.T) {
	cfg, err := agent.ParseConfig("[db]\npath = \"x.db\"\n", "agent.toml")
	if err != nil || cfg.Watchdog.Timeout != "30s" || cfg.Telemetry.PrometheusAddr != "" {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	if _, err := agent.ParseConfig("[db]\npath = \"x.db\"\n[watchdog]\ntimeout = \"0\"\n", "agent.toml"); err != nil {
		t.Fatalf("a disabled watchdog: %v", err)
	}
	_, err = agent.ParseConfig("[db]\npath = \"x.db\"\n[watchdog]\ntimeout = \"soon\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "watchdog.timeout") {
		t.Fatalf("bad timeout: %v", err)
	}
	_, err = agent.ParseConfig("[db]\npath = \"x.db\"\n[telemetry]\nprometheus = \"127.0.0.1:9090\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "unknown key telemetry.prometheus") {
		t.Fatalf("unknown key: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
