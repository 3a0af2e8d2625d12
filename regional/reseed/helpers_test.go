package reseed_test

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/bench"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/regional"
	"github.com/patina-db/patina/regional/reseed"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// startRegion starts three real agents with the regional schema and the
// extra schema files given.
func startRegion(t *testing.T, extraSchemas ...string) *devcluster.Region {
	t.Helper()
	r, err := devcluster.StartRegion(context.Background(), devcluster.RegionOptions{
		Nodes: 3, Dir: t.TempDir(), SchemaPaths: append([]string{schemaDir()}, extraSchemas...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func apis(r *devcluster.Region) []string {
	var out []string
	for _, n := range r.Nodes {
		out = append(out, n.API)
	}
	return out
}

// inDir runs the test in a fresh current directory, where default state
// files go.
func inDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

// digest hashes rows, cell by cell with their types, in order.
func digest(rows [][]any) string {
	h := fnv.New64a()
	for _, row := range rows {
		for _, c := range row {
			fmt.Fprintf(h, "%T:%v\x00", c, c)
		}
		h.Write([]byte{'\n'})
	}
	return fmt.Sprintf("%d rows, %016x", len(rows), h.Sum64())
}

const (
	machinesQuery = "SELECT id, app, region, host, address, port, state, image, updated_at FROM machines ORDER BY id"
	checksQuery   = "SELECT machine_id, name, status, output, updated_at FROM machine_checks ORDER BY machine_id, name"
)

// expectedTables are the digests of the machines and machine_checks rows
// that records make.
func expectedTables(ms []regional.Machine) (machines, checks string) {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b regional.Machine) int { return strings.Compare(a.ID, b.ID) })
	var mrows, crows [][]any
	for _, m := range ms {
		if m.State == regional.StateDestroyed {
			continue
		}
		mrows = append(mrows, []any{m.ID, m.App, m.Region, m.Host, m.Address, int64(m.Port), m.State, m.Image, m.UpdatedAt})
		cs := slices.Clone(m.Checks)
		slices.SortFunc(cs, func(a, b regional.Check) int { return strings.Compare(a.Name, b.Name) })
		for _, c := range cs {
			crows = append(crows, []any{m.ID, c.Name, c.Status, c.Output, c.UpdatedAt})
		}
	}
	return digest(mrows), digest(crows)
}

func generated(o bench.HostFilesOptions) []regional.Machine {
	out := make([]regional.Machine, o.Machines)
	for i := range out {
		out[i] = bench.HostMachine(o, i)
	}
	return out
}

// queryDigest reads a query's rows from one agent and hashes them.
func queryDigest(ctx context.Context, c *client.Client, q string) (string, error) {
	rows, err := c.Query(ctx, client.Statement{Query: q})
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var all [][]any
	for rows.Next() {
		all = append(all, slices.Clone(rows.Row()))
	}
	return digest(all), rows.Err()
}

// table is what every agent must come to hold: count rows, hashing
// to digest (see expectedTables).
type table struct {
	count, rows string // queries: count(*), every row in order
	want        int64
	digest      string
}

func machinesTable(want int64, digest string) table {
	return table{"SELECT count(*) FROM machines", machinesQuery, want, digest}
}

func checksTable(want int64, digest string) table {
	return table{"SELECT count(*) FROM machine_checks", checksQuery, want, digest}
}

// waitTables waits until every agent holds the tables: the counts first
// (cheap), then every row. It fails naming the agent and what it held.
func waitTables(t *testing.T, r *devcluster.Region, tables ...table) {
	t.Helper()
	timeout := 3 * time.Minute
	if os.Getenv("PATINA_LONG") != "" {
		// A million machines under the race detector: the agents apply
		// what their peers wrote about thirteen times slower than a
		// release build does, and the write phase leaves them minutes
		// behind (a release build converges within about 35 s of the
		// last write). The bound is for an agent that is stuck.
		timeout = 30 * time.Minute
	}
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	logged := time.Now()
	for {
		behind := ""
	check:
		for _, n := range r.Nodes {
			for _, tb := range tables {
				if got := count(t, n.Client(), tb.count); got != tb.want {
					behind = fmt.Sprintf("%s: %s = %d, want %d", n.Name, tb.count, got, tb.want)
					break check
				}
			}
		}
		if behind == "" {
		digests:
			for _, n := range r.Nodes {
				for _, tb := range tables {
					got, err := queryDigest(ctx, n.Client(), tb.rows)
					if err != nil {
						t.Fatalf("%s: %s: %v", n.Name, tb.rows, err)
					}
					if got != tb.digest {
						behind = fmt.Sprintf("%s: %q holds %s, want %s", n.Name, tb.rows, got, tb.digest)
						break digests
					}
				}
			}
		}
		if behind == "" {
			return
		}
		if time.Since(logged) >= time.Minute {
			t.Logf("waiting for convergence: %s", behind)
			logged = time.Now()
		}
		if time.Now().After(deadline) {
			logClusterState(t, r)
			t.Fatalf("agents did not converge within %s: %s", timeout, behind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func count(t *testing.T, c *client.Client, q string) int64 {
	t.Helper()
	rows, err := c.Query(context.Background(), client.Statement{Query: q})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("%s: no row: %v", q, rows.Err())
	}
	n, _ := rows.Row()[0].(int64)
	return n
}

// recorder keeps a run's events in the order they happened.
type recorder struct {
	mu  sync.Mutex
	evs []reseed.Event
	on  func(reseed.Event)
}

func (r *recorder) record(ev reseed.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	if r.on != nil {
		r.on(ev)
	}
}

func (r *recorder) events() []reseed.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// logClusterState logs what each agent says of its members and its
// replication counters, to tell a stuck agent from a slow one.
func logClusterState(t *testing.T, r *devcluster.Region) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range r.Nodes {
		ms, err := n.Client().Members(ctx)
		if err != nil {
			t.Logf("%s: members: %v", n.Name, err)
		}
		var states []string
		for _, m := range ms {
			states = append(states, m.Name+"="+m.State)
		}
		stats, err := n.Client().ClusterStats(ctx)
		if err != nil {
			t.Logf("%s: cluster stats: %v", n.Name, err)
		}
		t.Logf("%s: members %v; stats %v", n.Name, states, stats)
		if h, err := n.Client().Health(ctx, ""); err == nil {
			t.Logf("%s: gaps %d, queue %d", n.Name, h.Gaps, h.QueueSize)
		}
		logVersions(t, n.Name, n.DBPath)
	}
}

// logVersions logs, from an agent's database file opened read-only
// beside it, the versions its bookkeeping holds per actor and those of
// which it has machine rows: a version held without rows (or rows the
// bookkeeping lacks) tells why sync does not repair an agent.
func logVersions(t *testing.T, name, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Logf("%s: open %s: %v", name, path, err)
		return
	}
	defer db.Close()
	for _, q := range []string{
		`SELECT s.rowid, hex(s.actor), b.cleared, b.start, b."end" FROM __patina_bookkeeping b JOIN __patina_sites s ON s.rowid = b.actor ORDER BY 1, 4`,
		`SELECT __patina_site, count(DISTINCT __patina_version), min(__patina_version), max(__patina_version) FROM __patina_vx_machines GROUP BY 1`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Logf("%s: %s: %v", name, q, err)
			continue
		}
		var out []string
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err == nil {
				out = append(out, strings.TrimSpace(fmt.Sprintln(vals...)))
			}
		}
		rows.Close()
		t.Logf("%s: %s:\n  %s", name, q, strings.Join(out, "\n  "))
	}
}
