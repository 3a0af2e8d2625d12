package regional

import (
	"context"
	"database/sql"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/schemas"

	_ "github.com/mattn/go-sqlite3"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(t.TempDir(), "r.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.ApplySchemaSQL(ctx, schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	return st
}

func run(t *testing.T, st *store.Store, stmts []api.Statement) uint64 {
	t.Helper()
	var ss []store.Statement
	for _, s := range stmts {
		ss = append(ss, store.Statement{SQL: s.Query, Args: s.Params})
	}
	res, err := st.Transact(context.Background(), ss)
	if err != nil {
		t.Fatal(err)
	}
	return res.Version
}

func count(t *testing.T, st *store.Store, q string) int64 {
	t.Helper()
	rows, err := st.Query(context.Background(), store.Statement{SQL: q})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("%s: no row", q)
	}
	vals, err := rows.Values()
	if err != nil {
		t.Fatal(err)
	}
	return vals[0].(int64)
}

func sample() Machine {
	return Machine{V: RecordVersion, ID: "m1", App: "web", Region: "ams", Host: "h1", Address: "127.0.0.1", Port: 8080,
		State: StateStarted, UpdatedAt: 1000, Checks: []Check{
			{Name: "http", Kind: "http", Path: "/", Status: CheckPassing, UpdatedAt: 1000},
			{Name: "tcp", Kind: "tcp", Status: CheckPassing, UpdatedAt: 1000},
		}}
}

func TestPublishWholeRecord(t *testing.T) {
	st := openStore(t)
	m := sample()
	if v := run(t, st, Publish(&m)); v == 0 {
		t.Fatal("first publish consumed no version")
	}
	if v := run(t, st, Publish(&m)); v != 0 {
		t.Fatalf("identical re-publish consumed version %d", v)
	}
	// Dropping a check removes its row; the rest stays.
	m.Checks = m.Checks[:1]
	m.UpdatedAt = 2000
	if v := run(t, st, Publish(&m)); v == 0 {
		t.Fatal("changed record consumed no version")
	}
	if n := count(t, st, "SELECT count(*) FROM machine_checks WHERE machine_id = 'm1'"); n != 1 {
		t.Fatalf("%d check rows, want 1", n)
	}
	m.State = StateDestroyed
	run(t, st, Publish(&m))
	if n := count(t, st, "SELECT (SELECT count(*) FROM machines) + (SELECT count(*) FROM machine_checks)"); n != 0 {
		t.Fatalf("%d rows after destroy", n)
	}
}

func TestPruneRemovesOnlyOtherMachinesOfTheHost(t *testing.T) {
	st := openStore(t)
	for _, id := range []string{"a", "b", "c"} {
		m := sample()
		m.ID = id
		run(t, st, Publish(&m))
	}
	other := sample()
	other.ID, other.Host = "z", "h2"
	run(t, st, Publish(&other))
	run(t, st, Prune("h1", []string{"a"}))
	if n := count(t, st, "SELECT count(*) FROM machines"); n != 2 {
		t.Fatalf("%d machines, want a and z", n)
	}
	if n := count(t, st, "SELECT count(*) FROM machine_checks"); n != 4 {
		t.Fatalf("%d checks, want 4", n)
	}
	if v := run(t, st, Prune("h1", []string{"a"})); v != 0 {
		t.Fatal("a second prune consumed a version")
	}
	run(t, st, Prune("h2", nil))
	if n := count(t, st, "SELECT count(*) FROM machines"); n != 1 {
		t.Fatalf("%d machines, want a", n)
	}
}

func TestDecodeRefusesBadRecords(t *testing.T) {
	m := sample()
	good, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode([]byte("m1"), good); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key, value, want string
	}{
		"garbage":       {"m1", "\x00\x01not json", "record \"m1\""},
		"version":       {"m1", strings.Replace(string(good), `"v":1`, `"v":9`, 1), "record version 9"},
		"state":         {"m1", strings.Replace(string(good), `"started"`, `"flying"`, 1), `state "flying"`},
		"wrong key":     {"m2", string(good), `holds machine "m1"`},
		"bad address":   {"m1", strings.Replace(string(good), `"127.0.0.1"`, `"nowhere"`, 1), "not an IP"},
		"check kind":    {"m1", strings.Replace(string(good), `"kind":"tcp"`, `"kind":"udp"`, 1), `kind "udp"`},
		"upper-case id": {"M1", strings.Replace(string(good), `"id":"m1"`, `"id":"M1"`, 1), `id "M1"`},
	} {
		_, err := Decode([]byte(tc.key), []byte(tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestHealthy(t *testing.T) {
	m := sample()
	if !m.Healthy() {
		t.Fatal("started with passing checks is healthy")
	}
	m.Checks[1].Status = CheckCritical
	if m.Healthy() {
		t.Fatal("a critical check makes it unhealthy")
	}
	m.Checks = nil
	m.State = StateStopped
	if m.Healthy() {
		t.Fatal("stopped is not healthy")
	}
}

// TestPruneUsesTheHostIndex: every host prunes its rows at every full
// re-publish, so the prune must find them by index, never by scanning
// every machine of the region.
func TestPruneUsesTheHostIndex(t *testing.T) {
	db, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "plan.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	for _, st := range append(Prune("h1", []string{"m1"}), Unpublish("m1", "h1")...) {
		rows, err := db.Query("EXPLAIN QUERY PLAN "+st.Query, st.Params...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN machines") || strings.HasPrefix(step, "SCAN machine_checks") {
				t.Errorf("%s\nscans: %v", st.Query, plan)
			}
		}
	}
}

func TestCheckIntervalIsBounded(t *testing.T) {
	for ms, want := range map[int64]time.Duration{0: 10 * time.Second, -5: 10 * time.Second, 1500: 1500 * time.Millisecond, 1e13: 24 * time.Hour, math.MaxInt64: 24 * time.Hour} {
		if got := (Check{IntervalMS: ms}).Interval(); got != want {
			t.Errorf("interval_ms %d: %v, want %v", ms, got, want)
		}
	}
}
