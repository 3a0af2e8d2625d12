package host

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/regional"
)

// TestRestartResumesFromBolt: a restarted host serves its started
// machines again on their ports, and re-publishes without changing a
// cell. A second host on the same file is refused.
func TestRestartResumesFromBolt(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API})
	h := startHost(t, cfg)
	up, err := h.Create(ctx, MachineSpec{ID: "up", App: "web", Start: true, Checks: []CheckSpec{{Kind: "http", IntervalMS: 50}}})
	if err != nil {
		t.Fatal(err)
	}
	down, err := h.Create(ctx, MachineSpec{ID: "down", App: "web"})
	if err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"up|http|passing"}, checkRow)

	second := cfg
	second.API.Addr = "127.0.0.1:0"
	if _, err := New(ctx, second, nil); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("a second host on the same file: %v", err)
	}

	h.stop()
	if _, _, _, err := getMachine(up, "/"); err == nil {
		t.Fatal("a stopped host's machine still answers")
	}
	head := agentHead(r.Nodes[0])
	h = startHost(t, cfg)
	waitFor(t, "the machine answering again on its port", func() bool {
		status, reply, _, err := getMachine(up, "/")
		return err == nil && status == 200 && reply.Machine == "up"
	})
	got := h.List()
	if len(got) != 2 || got[0].ID != "down" || got[0].State != regional.StateCreated || got[0].Port != down.Port ||
		got[1].ID != "up" || got[1].State != regional.StateStarted || got[1].Port != up.Port {
		t.Fatalf("resumed %+v", got)
	}
	// Its check passed before and passes again: nothing changed, and the
	// startup re-publish consumed no version.
	stats, err := h.Republish(ctx)
	if err != nil || stats.Versions != 0 || stats.Machines != 2 {
		t.Fatalf("republish after restart: %+v %v", stats, err)
	}
	// Only the heartbeats of its re-publishes changed anything.
	st := r.Nodes[0].Agent.Store()
	for v := head + 1; v <= st.Head(); v++ {
		cs, _, err := st.Changes(ctx, st.Actor(), v)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs.Changes {
			if c.Table != "hosts" {
				t.Fatalf("version %d, after an identical restart, changed %s", v, c.Table)
			}
		}
	}
}

// agentHead is the agent's own latest version: a transaction that
// changes nothing does not move it.
func agentHead(n *devcluster.RegionNode) uint64 { return n.Agent.Store().Head() }

// TestUnreadableRecordsSkipped: garbage, another record version, an
// invalid field and a record under another key are logged by key and
// skipped; the good records publish; the unreadable ones' rows are not
// pruned, and destroying one deletes its bytes and its rows.
func TestUnreadableRecordsSkipped(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	path := filepath.Join(t.TempDir(), "h.db")
	good := regional.Machine{V: regional.RecordVersion, ID: "good", App: "web", Region: "ams", Host: "h1", Address: "127.0.0.1",
		Port: 1, State: regional.StateStopped, UpdatedAt: 1000}
	value, err := good.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s := string(value)
	writeRecords(t, path, map[string]string{
		"good":      s,
		"garbage":   "\x00\xffnot json at all",
		"future":    strings.NewReplacer(`"v":1`, `"v":2`, `"good"`, `"future"`).Replace(s),
		"badstate":  strings.NewReplacer(`"stopped"`, `"melting"`, `"good"`, `"badstate"`).Replace(s),
		"elsewhere": s, // holds machine "good"
	})
	// The agent still holds a row for one of them from before.
	if _, err := agent.Transact(ctx, regional.Publish(&regional.Machine{ID: "future", App: "web", Region: "ams", Host: "h1", State: regional.StateStarted})...); err != nil {
		t.Fatal(err)
	}
	h := startHost(t, hostConfig(t, path, []string{r.Nodes[0].API}))
	agentHas(t, agent, []string{"future|web|ams|h1|started|0", "good|web|ams|h1|stopped|1"}, machineRow)
	for _, key := range []string{"garbage", "future", "badstate", "elsewhere"} {
		if !strings.Contains(h.log.String(), fmt.Sprintf("key=%s ", key)) {
			t.Errorf("no log line names record %q:\n%s", key, h.log.String())
		}
	}
	if list := h.List(); len(list) != 1 || list[0].ID != "good" {
		t.Fatalf("list: %+v", list)
	}
	if _, err := h.Create(ctx, MachineSpec{ID: "garbage", App: "web"}); !isStatus(errorAsAPI(err), 409) {
		t.Fatalf("create over an unreadable record: %v", err)
	}
	if _, err := h.Destroy(ctx, "future"); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"good|web|ams|h1|stopped|1"}, machineRow)
	h.stop()
	keys := readKeys(t, path)
	if strings.Join(keys, ",") != "badstate,elsewhere,garbage,good" {
		t.Fatalf("keys left in bbolt: %v", keys)
	}
}

// errorAsAPI gives an in-process error the status the API would answer.
func errorAsAPI(err error) error {
	if err == nil {
		return nil
	}
	return &APIError{Status: errorStatus(err), Message: err.Error()}
}

func writeRecords(t *testing.T, path string, records map[string]string) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(regional.BucketMachines)
		if err != nil {
			return err
		}
		for k, v := range records {
			if err := bk.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readKeys(t *testing.T, path string) []string {
	t.Helper()
	b, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var keys []string
	b.View(func(tx *bolt.Tx) error {
		return tx.Bucket(regional.BucketMachines).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	return keys
}

// TestResumedMachineThatCannotListenFailsItsChecks: a started machine
// whose port another process took while the host was down stays started,
// and its checks fail saying why, however that process answers them.
func TestResumedMachineThatCannotListenFailsItsChecks(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API})
	h := startHost(t, cfg)
	m, err := h.Create(ctx, MachineSpec{ID: "web-1", App: "web", Start: true, Checks: []CheckSpec{{Kind: "http", IntervalMS: 50}}})
	if err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"web-1|http|passing"}, checkRow)
	h.stop()

	// Another process takes the port, and answers every check 200.
	ln, err := net.Listen("tcp", net.JoinHostPort(m.Address, strconv.Itoa(m.Port)))
	if err != nil {
		t.Fatal(err)
	}
	var probed atomic.Int64
	foreign := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { probed.Add(1) })}
	go foreign.Serve(ln)
	defer foreign.Close()

	h = startHost(t, cfg)
	agentHas(t, agent, []string{"web-1|http|critical|1"}, "SELECT machine_id, name, status, output LIKE 'machine cannot listen: %' FROM machine_checks")
	// Checks kept running against the other process meanwhile, and never
	// took its answers for this machine's.
	at := probed.Load()
	waitFor(t, "two more checks", func() bool { return probed.Load() >= at+2 })
	if rec, err := h.Get("web-1"); err != nil || rec.Healthy() || rec.State != regional.StateStarted || rec.Checks[0].Status != regional.CheckCritical {
		t.Fatalf("web-1 after checks against another process: %+v, %v", rec, err)
	}
}

// TestStaleCheckOfAnEarlierMachineIsIgnored: a check loop of a destroyed
// machine that reports late does not write into a new machine given the
// same id.
func TestStaleCheckOfAnEarlierMachineIsIgnored(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{"http://127.0.0.1:1"}))
	spec := MachineSpec{ID: "x", App: "web", Start: true, Checks: []CheckSpec{{Name: "c", Kind: "tcp", IntervalMS: 3_600_000}}}
	if _, err := h.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	old := h.machines["x"].gen
	h.mu.Unlock()
	if _, err := h.Destroy(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new machine's first check", func() bool {
		rec, err := h.Get("x")
		return err == nil && rec.Checks[0].Status == regional.CheckPassing
	})
	h.checkResult("x", old, "c", checkResult{regional.CheckCritical, "from the machine destroyed before"})
	if rec, _ := h.Get("x"); rec.Checks[0].Status != regional.CheckPassing {
		t.Fatalf("a check of the destroyed machine changed the new one: %+v", rec.Checks[0])
	}
}

// TestFirstCheckResultReplacesThePlaceholder: a machine created started
// does not say its checks fail because it is not running; and its first
// check result is recorded even when it is critical as before, so that
// the output says why the check fails.
func TestFirstCheckResultReplacesThePlaceholder(t *testing.T) {
	ctx := context.Background()
	h := startHost(t, hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{"http://127.0.0.1:1"}))
	// The machine's server (a ServeMux) redirects a path to clean it, and
	// a check does not follow redirects: critical.
	spec := MachineSpec{ID: "x", App: "web", Start: true, Checks: []CheckSpec{{Name: "c", Kind: "http", Path: "/a/../", IntervalMS: 3_600_000}}}
	rec, err := h.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if c := rec.Checks[0]; c.Status != regional.CheckCritical || c.Output != outputNotChecked {
		t.Fatalf("a machine created started: check %+v, want critical and not checked yet", c)
	}
	waitFor(t, "the first check result", func() bool {
		rec, err := h.Get("x")
		c := rec.Checks[0]
		return err == nil && c.Status == regional.CheckCritical && c.Output != outputNotChecked && c.Output != outputNotRunning
	})
	if _, err := h.Stop(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	rec, err = h.Start(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if c := rec.Checks[0]; c.Status != regional.CheckCritical || c.Output != outputNotChecked {
		t.Fatalf("a machine started again: check %+v, want critical and not checked yet", c)
	}
	waitFor(t, "the first check result after the start", func() bool {
		rec, err := h.Get("x")
		c := rec.Checks[0]
		return err == nil && c.Status == regional.CheckCritical && c.Output != outputNotChecked && c.Output != outputNotRunning
	})
}
