package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/regional"
)

const (
	machineRow = "SELECT id, app, region, host, state, port FROM machines ORDER BY id"
	checkRow   = "SELECT machine_id, name, status FROM machine_checks ORDER BY machine_id, name"
)

// getMachine GETs path from a machine's server.
func getMachine(m regional.Machine, path string) (int, machineReply, string, error) {
	resp, err := http.Get(fmt.Sprintf("http://%s:%d%s", m.Address, m.Port, path))
	if err != nil {
		return 0, machineReply{}, "", err
	}
	defer resp.Body.Close()
	var r machineReply
	err = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r, resp.Header.Get(ServedByHeader), err
}

func postMachine(t *testing.T, m regional.Machine, path string) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s:%d%s", m.Address, m.Port, path), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestMachineLifecycle: create, start, stop and destroy through the API
// show in the agent's tables; a started machine answers with its id; a
// machine answering 500 turns its check critical.
func TestMachineLifecycle(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	h := startHost(t, hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API}))
	c := h.client(t)

	m, err := c.Create(ctx, MachineSpec{ID: "web-1", App: "web", Image: "img:1", Checks: []CheckSpec{{Kind: "http", IntervalMS: 50}, {Kind: "tcp", IntervalMS: 50}}})
	if err != nil {
		t.Fatal(err)
	}
	if m.State != regional.StateCreated || m.Port == 0 || len(m.Checks) != 2 || m.Checks[0].Name != "http" || m.Checks[0].Path != "/" {
		t.Fatalf("created %+v", m)
	}
	port := fmt.Sprint(m.Port)
	agentHas(t, agent, []string{"web-1|web|ams|h1|created|" + port}, machineRow)
	agentHas(t, agent, []string{"web-1|http|critical", "web-1|tcp|critical"}, checkRow)
	if _, _, _, err := getMachine(m, "/"); err == nil {
		t.Fatal("a created machine answers")
	}

	if m, err = c.Start(ctx, "web-1"); err != nil || m.State != regional.StateStarted {
		t.Fatalf("start: %+v %v", m, err)
	}
	agentHas(t, agent, []string{"web-1|web|ams|h1|started|" + port}, machineRow)
	agentHas(t, agent, []string{"web-1|http|passing", "web-1|tcp|passing"}, checkRow)
	status, reply, servedBy, err := getMachine(m, "/anything")
	if err != nil || status != 200 || reply.Machine != "web-1" || reply.App != "web" || reply.Region != "ams" || servedBy != "web-1" {
		t.Fatalf("machine answered %d %+v %q %v", status, reply, servedBy, err)
	}

	// A machine answering 500 fails its HTTP check, not its TCP one.
	postMachine(t, m, "/_patina/sick")
	agentHas(t, agent, []string{"web-1|http|critical", "web-1|tcp|passing"}, checkRow)
	if got, _ := c.Get(ctx, "web-1"); got.Checks[0].Output != "HTTP 500" {
		t.Fatalf("check output %q", got.Checks[0].Output)
	}
	postMachine(t, m, "/_patina/well")
	agentHas(t, agent, []string{"web-1|http|passing", "web-1|tcp|passing"}, checkRow)

	if m, err = c.Stop(ctx, "web-1"); err != nil || m.State != regional.StateStopped {
		t.Fatalf("stop: %+v %v", m, err)
	}
	agentHas(t, agent, []string{"web-1|web|ams|h1|stopped|" + port}, machineRow)
	agentHas(t, agent, []string{"web-1|http|critical", "web-1|tcp|critical"}, checkRow)
	if _, _, _, err := getMachine(m, "/"); err == nil {
		t.Fatal("a stopped machine answers")
	}

	// Started again: same port, checks pass again.
	if m, err = c.Start(ctx, "web-1"); err != nil || fmt.Sprint(m.Port) != port {
		t.Fatalf("restart: %+v %v", m, err)
	}
	agentHas(t, agent, []string{"web-1|http|passing", "web-1|tcp|passing"}, checkRow)

	if m, err = c.Destroy(ctx, "web-1"); err != nil || m.State != regional.StateDestroyed {
		t.Fatalf("destroy: %+v %v", m, err)
	}
	agentHas(t, agent, nil, machineRow)
	agentHas(t, agent, nil, checkRow)
	if _, _, _, err := getMachine(m, "/"); err == nil {
		t.Fatal("a destroyed machine answers")
	}
	waitFor(t, "the tombstone deleted once published", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.tombstones) == 0
	})
	if list, err := c.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("list after destroy: %+v %v", list, err)
	}
	if _, err := c.Get(ctx, "web-1"); !isStatus(err, 404) {
		t.Fatalf("get after destroy: %v", err)
	}
}

func isStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// TestAPIErrors: bad input is 400 naming what is wrong, an unknown id
// 404, a taken id or port 409, a missing token 401; nothing is stored.
func TestAPIErrors(t *testing.T) {
	ctx := context.Background()
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{"http://127.0.0.1:1"})
	cfg.API.Token = "s3cret"
	h := startHost(t, cfg)
	c := h.client(t)
	if _, err := c.Create(ctx, MachineSpec{ID: "a", App: "web", Port: 0}); err != nil {
		t.Fatal(err)
	}
	taken, _ := c.Get(ctx, "a")
	for name, tc := range map[string]struct {
		spec   MachineSpec
		status int
		want   string
	}{
		"bad app":        {MachineSpec{App: "Web!"}, 400, `app "Web!"`},
		"no app":         {MachineSpec{}, 400, `app ""`},
		"bad id":         {MachineSpec{ID: "A_1", App: "web"}, 400, `id "A_1"`},
		"bad port":       {MachineSpec{App: "web", Port: 70000}, 400, "port 70000"},
		"bad check kind": {MachineSpec{App: "web", Checks: []CheckSpec{{Kind: "udp"}}}, 400, `kind "udp"`},
		"fast check":     {MachineSpec{App: "web", Checks: []CheckSpec{{Kind: "tcp", IntervalMS: 1}}}, 400, "interval_ms 1"},
		"slow check":     {MachineSpec{App: "web", Checks: []CheckSpec{{Kind: "tcp", IntervalMS: 1e13}}}, 400, `check "tcp": interval_ms 10000000000000`},
		"many checks":    {MachineSpec{App: "web", Checks: make([]CheckSpec, maxChecks+1)}, 400, "17 checks"},
		"long image":     {MachineSpec{App: "web", Image: strings.Repeat("i", maxImage+1)}, 400, "image longer"},
		"long path":      {MachineSpec{App: "web", Checks: []CheckSpec{{Kind: "http", Path: "/" + strings.Repeat("p", maxCheckPath)}}}, 400, "path longer"},
		"long name":      {MachineSpec{App: "web", Checks: []CheckSpec{{Name: strings.Repeat("n", maxCheckName+1), Kind: "tcp"}}}, 400, "longer than 63"},
		"tcp with path":  {MachineSpec{App: "web", Checks: []CheckSpec{{Kind: "tcp", Path: "/"}}}, 400, "takes no path"},
		"same check":     {MachineSpec{App: "web", Checks: []CheckSpec{{Name: "x", Kind: "tcp"}, {Name: "x", Kind: "http"}}}, 400, `check name "x"`},
		"taken id":       {MachineSpec{ID: "a", App: "web"}, 409, "id is taken"},
		"taken port":     {MachineSpec{App: "web", Port: taken.Port}, 409, fmt.Sprintf("port %d", taken.Port)},
	} {
		_, err := c.Create(ctx, tc.spec)
		if !isStatus(err, tc.status) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %d containing %q", name, err, tc.status, tc.want)
		}
	}
	for _, call := range []func(context.Context, string) (regional.Machine, error){c.Start, c.Stop, c.Destroy} {
		if _, err := call(ctx, "nope"); !isStatus(err, 404) || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("unknown id: %v", err)
		}
	}
	// Raw requests: unknown fields, garbage, no token.
	for name, tc := range map[string]struct {
		body, token string
		status      int
		want        string
	}{
		"unknown field": {`{"app":"web","colour":"red"}`, "s3cret", 400, `unknown field "colour"`},
		"garbage":       {`{"app":`, "s3cret", 400, "body"},
		"empty":         {``, "s3cret", 400, "empty body"},
		"no token":      {`{"app":"web"}`, "", 401, "bearer token"},
		"wrong token":   {`{"app":"web"}`, "s3cre", 401, "bearer token"},
	} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+h.APIAddr()+"/v1/machines", strings.NewReader(tc.body))
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s: %d %q, want %d containing %q", name, resp.StatusCode, e.Error, tc.status, tc.want)
		}
	}
	if list := h.List(); len(list) != 1 {
		t.Fatalf("refused requests stored machines: %+v", list)
	}
}

// TestIdenticalRepublishConsumesNoVersion: a full re-publish of records
// the agent already holds changes no cell; records go out in batches.
func TestIdenticalRepublishConsumesNoVersion(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API})
	cfg.Agent.BatchSize = 2
	h := startHost(t, cfg)
	var want []string
	for i := range 5 {
		m, err := h.Create(ctx, MachineSpec{ID: fmt.Sprintf("m%d", i), App: "web", Checks: []CheckSpec{{Kind: "tcp"}}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("m%d|web|ams|h1|created|%d", i, m.Port))
	}
	agentHas(t, agent, want, machineRow)
	waitFor(t, "nothing queued", func() bool { return h.Queued() == 0 })
	stats, err := h.Republish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats != (RepublishStats{Machines: 5, Transactions: 4, Versions: 0, Heartbeat: true}) {
		t.Fatalf("identical republish: %+v", stats)
	}
	// The heartbeat is in the hosts table, stamped by the host.
	got, err := rows(ctx, agent, "SELECT name, region, republish_ms, ? - seen_at BETWEEN 0 AND 60000 FROM hosts", time.Now().UnixMilli())
	if want := fmt.Sprintf("h1|ams|%d|1", cfg.republishInterval().Milliseconds()); err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("hosts: %v, %v; want %s (seen within the last minute)", got, err, want)
	}
	// Through the API too, after a change only one batch changes.
	if _, err := h.Start(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stop(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	stats, err = h.client(t).Republish(ctx)
	if err != nil || stats.Machines != 5 || stats.Versions > 1 {
		t.Fatalf("republish after a change: %+v %v", stats, err)
	}
	stats, err = h.Republish(ctx)
	if err != nil || stats.Versions != 0 {
		t.Fatalf("second republish: %+v %v", stats, err)
	}
}

// TestAgentsForgetAHostThatStops: three hosts publish to a region whose
// agents forget a host after a second of silence. When one host stops,
// its machine leaves every agent, and its hosts row with it; the others
// keep theirs. When it starts again, its re-publish puts it back.
func TestAgentsForgetAHostThatStops(t *testing.T) {
	ctx := context.Background()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 3, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()},
		ExtraTOML: "[hosts]\nforget_after = \"1s\"\n"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	var apis []string
	for _, n := range r.Nodes {
		apis = append(apis, n.API)
	}
	hosts := map[string]*testHost{}
	cfgs := map[string]Config{}
	for i, name := range []string{"h1", "h2", "h3"} {
		cfg := hostConfig(t, filepath.Join(t.TempDir(), name+".db"), apis[i:i+1])
		cfg.Host.Name = name
		cfg.Agent.RepublishInterval = "200ms"
		cfgs[name] = cfg
		hosts[name] = startHost(t, cfg)
		if _, err := hosts[name].Create(ctx, MachineSpec{ID: name + "-m", App: "web", Start: true}); err != nil {
			t.Fatal(err)
		}
	}
	const q = "SELECT id FROM machines ORDER BY id"
	for _, n := range r.Nodes {
		agentHas(t, n.Client(), []string{"h1-m", "h2-m", "h3-m"}, q)
	}
	hosts["h3"].stop()
	for _, n := range r.Nodes {
		agentHas(t, n.Client(), []string{"h1-m", "h2-m"}, q)
		agentHas(t, n.Client(), []string{"h1", "h2"}, "SELECT name FROM hosts ORDER BY name")
	}
	// One agent did it, and says so in its metrics.
	forgot := 0.0
	for _, n := range r.Nodes {
		forgot += metricValue(t, n.Agent.MetricsAddr(), "patina_hosts_forgotten_total")
	}
	if forgot < 1 {
		t.Fatalf("patina_hosts_forgotten_total sums to %v over the agents", forgot)
	}
	hosts["h3"] = startHost(t, cfgs["h3"])
	for _, n := range r.Nodes {
		agentHas(t, n.Client(), []string{"h1-m", "h2-m", "h3-m"}, q)
	}
}

// TestRepublishWithoutHostsTable: a region whose schema predates the
// hosts table refuses the heartbeat; the host says so once and goes on
// publishing.
func TestRepublishWithoutHostsTable(t *testing.T) {
	ctx := context.Background()
	old := t.TempDir()
	data, err := os.ReadFile(filepath.Join(schemaDir(), "machines.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "machines.sql"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 1, Dir: t.TempDir(), SchemaPaths: []string{old}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	h := startHost(t, hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API}))
	if _, err := h.Create(ctx, MachineSpec{ID: "m1", App: "web"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		stats, err := h.Republish(ctx)
		if err != nil || stats.Heartbeat || stats.Machines != 1 {
			t.Fatalf("republish: %+v, %v", stats, err)
		}
	}
	agentHas(t, r.Nodes[0].Client(), []string{"m1"}, "SELECT id FROM machines")
	if n := strings.Count(h.log.String(), "no hosts table"); n != 1 {
		t.Fatalf("said %d times that the schema has no hosts table:\n%s", n, h.log.String())
	}
}

// metricValue reads one unlabelled metric from an agent's /metrics.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s: no %s", addr, name)
	return 0
}
