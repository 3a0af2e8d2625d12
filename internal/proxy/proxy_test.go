package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/locate"
	"github.com/patina-db/patina/regional"
)

// env is a running topology (ams, iad, syd; one agent each, one global
// agent) with a proxy in ams.
type env struct {
	t     *testing.T
	ctx   context.Context
	topo  *topology.Topology
	eps   topology.Endpoints
	loc   *locate.Locator // the test's own view, to wait for the tiers
	proxy *Proxy
	http  *http.Client
}

func startEnv(t *testing.T, ctx context.Context, apps []topology.App) *env {
	t.Helper()
	topo, err := topology.Start(ctx, topology.Options{
		Dir: t.TempDir(), Regions: []string{"ams", "iad", "syd"}, AgentsPerRegion: 1, GlobalAgents: 1,
		Apps: apps, CheckInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Stop(); err != nil {
			t.Error(err)
		}
	})
	e := &env{t: t, ctx: ctx, topo: topo, eps: topo.Endpoints()}
	e.loc, err = locate.New(locate.Config{
		Region: "ams", Local: []string{e.eps.Regions["ams"].Agents[0].GRPC}, Global: []string{e.eps.Global.Agents[0].GRPC},
		// Generous: the tests check routing, and a lookup slower than this
		// (a loaded machine) would count the region unreachable.
		TTL: time.Millisecond, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.loc.Close() })
	e.proxy, _ = e.startProxy(func(c *Config) {})
	e.http = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(e.http.CloseIdleConnections)
	return e
}

// startProxy runs a proxy in ams; stop (or the test's end) stops it and
// checks that Run returned cleanly.
func (e *env) startProxy(edit func(c *Config)) (p *Proxy, stop func()) {
	t := e.t
	cfg := DefaultConfig()
	cfg.Proxy.Addr = "127.0.0.1:0"
	cfg.Proxy.AppHeader = "Patina-App"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{e.eps.Regions["ams"].Agents[0].GRPC}
	cfg.Global.Agents = []string{e.eps.Global.Agents[0].GRPC}
	cfg.Cache.TTL, cfg.Cache.Timeout = 100*time.Millisecond, 5*time.Second
	edit(&cfg)
	var err error
	p, err = New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("proxy Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return p, stop
}

// reply is a response through the proxy.
type reply struct {
	status  int
	header  http.Header
	body    string
	machine map[string]string // the JSON body, when it is an object of strings
}

func (e *env) do(p *Proxy, method, host, path, body string, header ...string) reply {
	e.t.Helper()
	var rd io.Reader
	if streamed, ok := strings.CutPrefix(body, "stream:"); ok {
		rd = io.MultiReader(strings.NewReader(streamed)) // of unknown length: sent chunked
	} else if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, "http://"+p.Addr()+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s%s: body: %v", method, host, path, err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: string(data)}
	json.Unmarshal(data, &r.machine)
	return r
}

func (e *env) get(host string) reply { e.t.Helper(); return e.do(e.proxy, "GET", host, "/", "") }

// waitFor polls cond until it holds, failing the test after a minute.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitMachines waits until app's healthy machines, as the tiers answer
// from ams, are exactly want (region → count).
func (e *env) waitMachines(app string, want map[string]int) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("%s's healthy machines are %v", app, want), func() bool {
		ans, err := e.loc.Everywhere(e.ctx, app, true)
		if err != nil {
			return false
		}
		got := map[string]int{}
		for _, r := range ans.Regions {
			if len(r.Machines) > 0 {
				got[r.Region] = len(r.Machines)
			}
		}
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
}

// publish writes a machine row into region's cluster, as a host would.
func (e *env) publish(region, id, app string, port int, state string) {
	e.t.Helper()
	m := regional.Machine{
		V: regional.RecordVersion, ID: id, App: app, Region: region, Host: "test-backends",
		Address: "127.0.0.1", Port: port, State: state, UpdatedAt: time.Now().UnixMilli(),
	}
	if err := m.Validate(); err != nil {
		e.t.Fatal(err)
	}
	for _, r := range e.topo.Regions {
		if r.Name == region {
			if _, err := r.Cluster.Nodes[0].Client().Transact(e.ctx, regional.Publish(&m)...); err != nil {
				e.t.Fatal(err)
			}
			return
		}
	}
	e.t.Fatalf("no region %s", region)
}

// backend is a machine of the test's own: it answers with its id, what
// it was sent and the forwarding headers; /hold waits for release.
type backend struct {
	id      string
	port    int
	hits    atomic.Int64
	holding atomic.Int64
	release chan struct{}
	gone    bool // answer every request 503 with the gone header
}

func newBackend(t *testing.T, id string) *backend {
	b := &backend{id: id, release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(srv.Close)
	t.Cleanup(b.releaseAll)
	b.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return b
}

var releaseMu sync.Mutex

func (b *backend) releaseAll() {
	releaseMu.Lock()
	defer releaseMu.Unlock()
	select {
	case <-b.release:
	default:
		close(b.release)
	}
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	if b.gone {
		w.Header().Set(GoneHeader, "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/hold" {
		b.holding.Add(1)
		select {
		case <-b.release:
		case <-r.Context().Done():
		}
		b.holding.Add(-1)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"machine": b.id, "method": r.Method, "body": string(body), "host": r.Host,
		"xff": r.Header.Get("X-Forwarded-For"), "xfh": r.Header.Get("X-Forwarded-Host"),
	})
}

// rawBackend serves each connection with serve, given the request it
// read first; it returns the port.
func rawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader, req *http.Request)) int {
	t.Helper()
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
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if req, err := http.ReadRequest(br); err == nil {
					serve(c, br, req)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// resetBackend reads a whole request, then closes the connection without
// answering: the request was sent, and nobody knows what became of it.
func resetBackend(t *testing.T) (port int, hits *atomic.Int64) {
	hits = &atomic.Int64{}
	port = rawBackend(t, func(_ net.Conn, _ *bufio.Reader, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		hits.Add(1)
	})
	return port, hits
}

// closedPort is a port nothing listens on.
func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := startEnv(t, ctx, []topology.App{
		{Name: "web", Machines: map[string]int{"ams": 2, "iad": 1, "syd": 1}},
		{Name: "api", Machines: map[string]int{"iad": 1}},
		{Name: "worker", Machines: map[string]int{"syd": 1}},
	})
	e.waitMachines("web", map[string]int{"ams": 2, "iad": 1, "syd": 1})
	e.waitMachines("api", map[string]int{"iad": 1})
	e.waitMachines("worker", map[string]int{"syd": 1})

	t.Run("local region", func(t *testing.T) {
		seen := map[string]bool{}
		for _, host := range []string{"web.internal", "web.internal:8000", "WEB.internal.", "web.internal", "web.internal"} {
			r := e.get(host)
			if r.status != 200 || r.header.Get(RegionHeader) != "ams" || r.machine["region"] != "ams" ||
				r.header.Get(MachineHeader) != r.machine["machine"] || r.header.Get("Patina-Served-By") != r.machine["machine"] {
				t.Fatalf("%s: %d %v %s", host, r.status, r.header, r.body)
			}
			seen[r.machine["machine"]] = true
		}
		if len(seen) != 2 {
			t.Fatalf("sequential requests went to %v, not spread over ams's two machines", seen)
		}
		r := e.do(e.proxy, "GET", "localhost", "/", "", "Patina-App", "web")
		if r.status != 200 || r.header.Get(RegionHeader) != "ams" {
			t.Fatalf("by header: %d %s", r.status, r.body)
		}
		// An app that ams does not run: the nearest region that does.
		r = e.get("api.internal")
		if r.status != 200 || r.header.Get(RegionHeader) != "iad" || r.machine["region"] != "iad" || r.header.Get(MachineHeader) != r.machine["machine"] {
			t.Fatalf("api: %d %v %s", r.status, r.header, r.body)
		}
	})

	t.Run("forwarding headers", func(t *testing.T) {
		b := newBackend(t, "echo-1")
		e.publish("ams", b.id, "echo", b.port, regional.StateStarted)
		e.waitMachines("echo", map[string]int{"ams": 1})
		r := e.do(e.proxy, "GET", "echo.internal:8000", "/x?y=1", "")
		if r.status != 200 || r.machine["host"] != "echo.internal:8000" || r.machine["xfh"] != "echo.internal:8000" ||
			r.machine["xff"] != "127.0.0.1" || r.header.Get(MachineHeader) != "echo-1" {
			t.Fatalf("%d %v %s", r.status, r.header, r.body)
		}
	})

	t.Run("least in flight", func(t *testing.T) {
		b1, b2 := newBackend(t, "slow-1"), newBackend(t, "slow-2")
		e.publish("ams", b1.id, "slow", b1.port, regional.StateStarted)
		e.publish("ams", b2.id, "slow", b2.port, regional.StateStarted)
		e.waitMachines("slow", map[string]int{"ams": 2})
		holding := func() int64 { return b1.holding.Load() + b2.holding.Load() }

		var wg sync.WaitGroup
		replies := make(chan reply, 8)
		hold := func(n int64) {
			wg.Go(func() { replies <- e.do(e.proxy, "GET", "slow.internal", "/hold", "") })
			e.waitFor(fmt.Sprintf("%d requests held", n), func() bool { return holding() == n })
		}
		hold(1)
		busy, idle := b1, b2
		if b2.holding.Load() == 1 {
			busy, idle = b2, b1
		}
		// While one machine works on a request, every other goes to the idle one.
		for range 6 {
			if r := e.get("slow.internal"); r.status != 200 || r.header.Get(MachineHeader) != idle.id {
				t.Fatalf("with %s busy: %d %v", busy.id, r.status, r.header)
			}
		}
		// Slow requests in flight together spread evenly.
		for n := int64(2); n <= 6; n++ {
			hold(n)
		}
		if b1.holding.Load() != 3 || b2.holding.Load() != 3 {
			t.Fatalf("six requests in flight: %d on %s, %d on %s", b1.holding.Load(), b1.id, b2.holding.Load(), b2.id)
		}
		b1.releaseAll()
		b2.releaseAll()
		wg.Wait()
		close(replies)
		for r := range replies {
			if r.status != 200 {
				t.Fatalf("held request: %d %s", r.status, r.body)
			}
		}
		st, _ := e.proxy.apps.apps.Load("slow")
		e.waitFor("no request in flight", func() bool {
			for _, ms := range st.(*appState).view.Load().regions[0] {
				if ms.st.inflight.Load() != 0 {
					return false
				}
			}
			return true
		})
	})

	t.Run("refused connection retried", func(t *testing.T) {
		// Rows that say started and healthy, at ports nothing listens on,
		// in ams; a live machine of each app in iad.
		for _, app := range []string{"flaky-get", "flaky-post"} {
			b := newBackend(t, app+"-iad")
			e.publish("ams", app+"-dead", app, closedPort(t), regional.StateStarted)
			e.publish("iad", b.id, app, b.port, regional.StateStarted)
			e.waitMachines(app, map[string]int{"ams": 1, "iad": 1})
		}
		// A machine that refused is held down for five TTLs: with a TTL
		// of a second, the mark outlasts the three requests even on a
		// loaded machine.
		p, _ := e.startProxy(func(c *Config) { c.Cache.TTL = time.Second })
		r := e.do(p, "GET", "flaky-get.internal", "/", "")
		if r.status != 200 || r.header.Get(RegionHeader) != "iad" || r.header.Get(MachineHeader) != "flaky-get-iad" {
			t.Fatalf("GET: %d %v %s", r.status, r.header, r.body)
		}
		// Nothing was sent to the refusing machine: even a POST is retried.
		r = e.do(p, "POST", "flaky-post.internal", "/", "a body")
		if r.status != 200 || r.header.Get(MachineHeader) != "flaky-post-iad" || r.machine["body"] != "a body" {
			t.Fatalf("POST: %d %v %s", r.status, r.header, r.body)
		}
		if got := p.Stats().Retries; got != 2 {
			t.Fatalf("%d retries, want 2", got)
		}
		// The refusing machine is now tried last.
		r = e.do(p, "GET", "flaky-get.internal", "/", "")
		if r.status != 200 || p.Stats().Retries != 2 {
			t.Fatalf("after the refusal: %d, %d retries", r.status, p.Stats().Retries)
		}
	})

	t.Run("failure after sending", func(t *testing.T) {
		port, hits := resetBackend(t)
		b := newBackend(t, "reset-iad")
		e.publish("ams", "reset-ams", "reset", port, regional.StateStarted)
		e.publish("iad", b.id, "reset", b.port, regional.StateStarted)
		e.waitMachines("reset", map[string]int{"ams": 1, "iad": 1})

		// Not idempotent, and sent: not retried.
		r := e.do(e.proxy, "POST", "reset.internal", "/", "charge the card")
		if r.status != http.StatusBadGateway || !strings.Contains(r.body, "not retried") || !strings.Contains(r.body, "POST is not idempotent") ||
			hits.Load() != 1 || b.hits.Load() != 0 {
			t.Fatalf("POST: %d %q; %d hits on the resetting machine, %d on the next", r.status, r.body, hits.Load(), b.hits.Load())
		}
		// Idempotent, but its body was streamed, not kept: not retried.
		r = e.do(e.proxy, "PUT", "reset.internal", "/", "stream:put me")
		if r.status != http.StatusBadGateway || !strings.Contains(r.body, "body was streamed") || hits.Load() != 2 || b.hits.Load() != 0 {
			t.Fatalf("streamed PUT: %d %q; %d hits on the resetting machine, %d on the next", r.status, r.body, hits.Load(), b.hits.Load())
		}
		// Idempotent with a body small enough to keep: retried, body whole.
		r = e.do(e.proxy, "PUT", "reset.internal", "/", "put me")
		if r.status != 200 || r.header.Get(MachineHeader) != "reset-iad" || r.machine["body"] != "put me" || hits.Load() != 3 {
			t.Fatalf("PUT: %d %v %s", r.status, r.header, r.body)
		}
		r = e.get("reset.internal")
		if r.status != 200 || r.header.Get(MachineHeader) != "reset-iad" || hits.Load() != 4 {
			t.Fatalf("GET: %d %v %s", r.status, r.header, r.body)
		}
	})

	t.Run("gone machine retried", func(t *testing.T) {
		g, b := newBackend(t, "gone-ams"), newBackend(t, "gone-iad")
		g.gone = true
		e.publish("ams", g.id, "gone", g.port, regional.StateStarted)
		e.publish("iad", b.id, "gone", b.port, regional.StateStarted)
		e.waitMachines("gone", map[string]int{"ams": 1, "iad": 1})
		r := e.do(e.proxy, "POST", "gone.internal", "/", "small body")
		if r.status != 200 || r.header.Get(MachineHeader) != "gone-iad" || r.machine["body"] != "small body" ||
			g.hits.Load() != 1 || r.header.Get(GoneHeader) != "" {
			t.Fatalf("POST: %d %v %s; %d hits on the gone machine", r.status, r.header, r.body, g.hits.Load())
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			host   string
			header []string
			status int
			want   string
		}{
			{host: "nope.internal", status: 404, want: `unknown app "nope"`},
			{host: "localhost", status: 400, want: `host "localhost": want <app>.internal`},
			{host: "a.b.internal", status: 400, want: "not an app name"},
			{host: "web.internal", header: []string{"Patina-App", "bad name"}, status: 400, want: "header Patina-App"},
		} {
			r := e.do(e.proxy, "GET", tc.host, "/", "", tc.header...)
			if r.status != tc.status || !strings.Contains(r.body, tc.want) || !strings.HasPrefix(r.body, "patina proxy: ") {
				t.Errorf("%s %v: %d %q, want %d with %q", tc.host, tc.header, r.status, r.body, tc.status, tc.want)
			}
		}
		// An app whose only machine is stopped: known, but nowhere to go.
		e.publish("ams", "dead-1", "dead", closedPort(t), regional.StateStopped)
		e.waitFor("the global map lists dead in ams", func() bool {
			a, err := e.loc.App(e.ctx, "dead")
			return err == nil && len(a.GetRegions()) == 1
		})
		var r reply
		e.waitFor("dead answers 502", func() bool { r = e.get("dead.internal"); return r.status != 404 })
		if r.status != http.StatusBadGateway || !strings.Contains(r.body, `app "dead": no healthy started machine`) {
			t.Fatalf("dead: %d %q", r.status, r.body)
		}
	})

	t.Run("idle apps dropped", func(t *testing.T) {
		p, _ := e.startProxy(func(c *Config) { c.Proxy.IdleTimeout = time.Second })
		if r := e.do(p, "GET", "web.internal", "/", ""); r.status != 200 || p.Stats().Apps != 1 {
			t.Fatalf("%d, %d apps held", r.status, p.Stats().Apps)
		}
		e.waitFor("web dropped", func() bool { return p.Stats().Apps == 0 })
		if r := e.do(p, "GET", "web.internal", "/", ""); r.status != 200 || p.Stats().Apps != 1 {
			t.Fatalf("loaded again: %d, %d apps held", r.status, p.Stats().Apps)
		}
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		p, stop := e.startProxy(func(c *Config) {})
		b := newBackend(t, "held-1")
		e.publish("ams", b.id, "held", b.port, regional.StateStarted)
		e.waitMachines("held", map[string]int{"ams": 1})
		held := make(chan reply, 1)
		go func() { held <- e.do(p, "GET", "held.internal", "/hold", "") }()
		e.waitFor("the request held", func() bool { return b.holding.Load() == 1 })
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		e.waitFor("the proxy refuses new connections", func() bool {
			c, err := net.Dial("tcp", p.Addr())
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		select {
		case <-stopped:
			t.Fatal("Run returned with a request in flight")
		default:
		}
		b.releaseAll()
		if r := <-held; r.status != 200 || r.machine["machine"] != "held-1" {
			t.Fatalf("the request in flight at shutdown: %d %s", r.status, r.body)
		}
		<-stopped
	})

	t.Run("local machines stopped", func(t *testing.T) {
		ams := e.topo.Regions[0]
		for _, h := range ams.Hosts {
			for _, m := range h.Host.List() {
				if m.App == "web" {
					if _, err := h.Host.Stop(e.ctx, m.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		// Refused connections send requests on to iad at once; the view
		// the proxy routes by loses ams's machines within its TTL.
		e.waitFor("the proxy's view of web without ams's machines", func() bool {
			r := e.get("web.internal")
			if r.status != 200 || r.header.Get(RegionHeader) != "iad" {
				t.Fatalf("web while ams's machines stop: %d %v %s", r.status, r.header, r.body)
			}
			st, _ := e.proxy.apps.apps.Load("web")
			return st.(*appState).view.Load().regions[0][0].region == "iad"
		})
		before := e.proxy.Stats().Retries
		for range 5 {
			if r := e.get("web.internal"); r.status != 200 || r.header.Get(RegionHeader) != "iad" || r.machine["region"] != "iad" {
				t.Fatalf("web: %d %v %s", r.status, r.header, r.body)
			}
		}
		if n := e.proxy.Stats().Retries - before; n != 0 {
			t.Fatalf("%d retries once the view is fresh", n)
		}
	})

	t.Run("region down", func(t *testing.T) {
		syd := e.topo.Regions[2]
		for _, h := range syd.Hosts {
			if err := h.Stop(); err != nil {
				t.Fatal(err)
			}
		}
		if err := syd.Cluster.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, app := range []string{"web", "api", "web", "api"} {
			if r := e.get(app + ".internal"); r.status != 200 || r.header.Get(RegionHeader) != "iad" {
				t.Fatalf("%s with syd down: %d %v %s", app, r.status, r.header, r.body)
			}
		}
		var r reply
		e.waitFor("worker answers 502", func() bool { r = e.get("worker.internal"); return r.status != 200 })
		if r.status != http.StatusBadGateway || !strings.Contains(r.body, "unreachable: syd") {
			t.Fatalf("worker with syd down: %d %q", r.status, r.body)
		}
	})

	s := e.proxy.Stats()
	if s.Requests == 0 || s.BadRequests < 3 || s.Unknown < 1 || s.NoCandidate < 2 || s.Failed < 1 || s.Apps < 1 {
		t.Fatalf("stats: %+v", s)
	}
}
