package host

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patina-db/patina/regional"
)

// TestDestroyWhileAgentDown: a destroy made while the agent is down
// returns at once, survives a host restart as a tombstone, and reaches
// the agent once it is back; the tombstone is then deleted.
func TestDestroyWhileAgentDown(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	node := r.Nodes[0]
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{node.API})
	h := startHost(t, cfg)
	for _, id := range []string{"keep", "gone"} {
		if _, err := h.Create(ctx, MachineSpec{ID: id, App: "web", Start: true}); err != nil {
			t.Fatal(err)
		}
	}
	agentHas(t, node.Client(), []string{"gone|started", "keep|started"}, "SELECT id, state FROM machines ORDER BY id")

	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client(t).Destroy(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Stop(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publisher retrying", func() bool { return h.Queued() == 2 })
	// The host restarts before the agent is back: the tombstone is in bbolt.
	h.stop()
	h = startHost(t, cfg)
	h.mu.Lock()
	_, ok := h.tombstones["gone"]
	h.mu.Unlock()
	if !ok {
		t.Fatal("no tombstone after restart")
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	agentHas(t, node.Client(), []string{"keep|stopped"}, "SELECT id, state FROM machines ORDER BY id")
	waitFor(t, "the tombstone deleted", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.tombstones) == 0
	})
}

// TestFailoverToTheNextAgent: with the first agent unreachable, records
// go to the next one in order.
func TestFailoverToTheNextAgent(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	h := startHost(t, hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{"http://127.0.0.1:1", r.Nodes[0].API}))
	if _, err := h.Create(ctx, MachineSpec{ID: "m1", App: "web"}); err != nil {
		t.Fatal(err)
	}
	agentHas(t, r.Nodes[0].Client(), []string{"m1|created"}, "SELECT id, state FROM machines")
}

// TestPeriodicRepublishPrunes: the periodic full re-publish removes rows
// of this host's machines it does not have (written behind its back),
// keeps other hosts' rows, and restores rows of its own that went missing.
func TestPeriodicRepublishPrunes(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API})
	cfg.Agent.RepublishInterval = "100ms"
	h := startHost(t, cfg)
	if _, err := h.Create(ctx, MachineSpec{ID: "mine", App: "web", Checks: []CheckSpec{{Kind: "tcp"}}}); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"mine|h1"}, "SELECT id, host FROM machines ORDER BY id")
	for _, m := range []regional.Machine{
		{ID: "ghost", App: "web", Region: "ams", Host: "h1", State: regional.StateStarted, Checks: []regional.Check{{Name: "c", Status: "passing"}}},
		{ID: "other", App: "web", Region: "ams", Host: "h2", State: regional.StateStarted},
	} {
		if _, err := agent.Transact(ctx, regional.Publish(&m)...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := agent.Transact(ctx, regional.Unpublish("mine", "h1")...); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"mine|h1", "other|h2"}, "SELECT id, host FROM machines ORDER BY id")
	agentHas(t, agent, []string{"mine|tcp"}, "SELECT machine_id, name FROM machine_checks ORDER BY machine_id")
}

// TestDestroyKeepsAnotherHostsRow: a machine that moved from h1 to h2
// under its id keeps h2's row when h1 destroys its own copy.
func TestDestroyKeepsAnotherHostsRow(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	cfg1 := hostConfig(t, filepath.Join(t.TempDir(), "h1.db"), []string{r.Nodes[0].API})
	cfg2 := hostConfig(t, filepath.Join(t.TempDir(), "h2.db"), []string{r.Nodes[0].API})
	cfg2.Host.Name = "h2"
	h1, h2 := startHost(t, cfg1), startHost(t, cfg2)
	spec := MachineSpec{ID: "mover", App: "web", Checks: []CheckSpec{{Kind: "tcp"}}}
	if _, err := h1.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"mover|h1"}, "SELECT id, host FROM machines")
	if _, err := h2.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"mover|h2"}, "SELECT id, host FROM machines")
	if _, err := h1.Destroy(ctx, "mover"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "h1's tombstone published", func() bool { return h1.Queued() == 0 && h1.tombstoneCount() == 0 })
	agentHas(t, agent, []string{"mover|h2|1"}, "SELECT id, host, (SELECT count(*) FROM machine_checks WHERE machine_id = id) FROM machines")
}

func (h *Host) tombstoneCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.tombstones)
}

// TestRefusedRepublishHoldsNoChangesBack: a record an agent refuses (one
// stored by an older version with an image larger than a request may
// be) fails every full re-publish; changes to other machines still go
// out meanwhile.
func TestRefusedRepublishHoldsNoChangesBack(t *testing.T) {
	ctx := context.Background()
	r := startRegion(t, 1)
	agent := r.Nodes[0].Client()
	cfg := hostConfig(t, filepath.Join(t.TempDir(), "h.db"), []string{r.Nodes[0].API})
	d, err := openDB(cfg.Host.DB)
	if err != nil {
		t.Fatal(err)
	}
	huge := regional.Machine{V: regional.RecordVersion, ID: "huge", App: "web", Region: "ams", Host: "h1",
		State: regional.StateCreated, Image: strings.Repeat("i", 9<<20), UpdatedAt: 1}
	if err := d.put(&huge); err != nil {
		t.Fatal(err)
	}
	d.close()
	h := startHost(t, cfg)
	waitFor(t, "a full re-publish refused", func() bool { return strings.Contains(h.log.String(), "publish failed") })
	if _, err := h.Create(ctx, MachineSpec{ID: "small", App: "web"}); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, []string{"small"}, "SELECT id FROM machines ORDER BY id")
	if _, err := h.Destroy(ctx, "small"); err != nil {
		t.Fatal(err)
	}
	agentHas(t, agent, nil, "SELECT id FROM machines ORDER BY id")
}

// TestBatchesBoundTheirBytes: publish transactions are cut by size as
// well as count, in order, with at least one record each.
func TestBatchesBoundTheirBytes(t *testing.T) {
	var recs []regional.Machine
	for i := range 50 {
		recs = append(recs, regional.Machine{ID: fmt.Sprintf("m%02d", i), Image: strings.Repeat("i", (i%7)*100<<10)})
	}
	recs = append(recs, regional.Machine{ID: "z", Image: strings.Repeat("i", 2*maxBatchBytes)})
	total := 0
	for _, b := range batches(recs, 10) {
		size := 0
		for i := range b {
			size += recordBytes(&b[i])
		}
		if len(b) == 0 || len(b) > 10 || (len(b) > 1 && size > maxBatchBytes) {
			t.Fatalf("batch of %d records, %d bytes", len(b), size)
		}
		if b[0].ID != recs[total].ID {
			t.Fatalf("batch starts at %s, want %s", b[0].ID, recs[total].ID)
		}
		total += len(b)
	}
	if total != len(recs) {
		t.Fatalf("%d records in batches, want %d", total, len(recs))
	}
}
