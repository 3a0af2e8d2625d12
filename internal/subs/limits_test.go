package subs

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/store"
)

// wideQuery selects state 65 times: more values than a key may have.
func wideQuery() string {
	return "SELECT " + strings.TrimSuffix(strings.Repeat("state, ", 65), ", ") + " FROM machines"
}

// TestWideResult: a result of more than 64 columns snapshots and
// changes whole.
func TestWideResult(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	s := subscribe(t, e, wideQuery())
	if rows, _, err := s.Snapshot(); err != nil || len(rows) != 1 || len(rows[0].Cells) != 65 {
		t.Fatalf("snapshot of a 65-column subscription: %v %v", rows, err)
	}
	write(t, st, `UPDATE machines SET state = 'stopped' WHERE id = 'm1'`)
	e.evaluatePending(context.Background())
	changes, _, err := s.ChangesAfter(0, 100)
	if err != nil || len(changes) != 2 {
		t.Fatalf("changes: %v %v", changes, err)
	}
	for _, c := range changes {
		if len(c.Cells) != 65 {
			t.Errorf("change %d (%s) has %d cells, want 65", c.ID, c.Kind, len(c.Cells))
		}
	}
}

// restartable opens a store and an engine in a fresh directory; the store
// is closed when the test ends.
func restartable(t *testing.T) (dir string, st *store.Store, e *Engine) {
	t.Helper()
	dir = t.TempDir()
	st = openStore(t, dir)
	t.Cleanup(func() { st.Close() })
	return dir, st, openEngine(t, dir, st, 100)
}

// reopen closes e and opens the engine again over the same file.
func reopen(t *testing.T, dir string, st *store.Store, e *Engine) *Engine {
	t.Helper()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(context.Background(), Config{Path: filepath.Join(dir, "subs.db"), Window: 100}, st)
	if err != nil {
		t.Fatalf("reopening the engine: %v", err)
	}
	t.Cleanup(func() { e2.Close() })
	return e2
}

// TestWideAndManySurviveRestart: subscriptions of more than 64 result
// columns, and of more than 64 parameters (an IN list), read back after
// a restart, rows and changes included.
func TestWideAndManySurviveRestart(t *testing.T) {
	dir, st, e := restartable(t)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	wide := subscribe(t, e, wideQuery())
	marks := strings.TrimSuffix(strings.Repeat("?, ", 65), ", ")
	args := make([]any, 65)
	for i := range args {
		args[i] = fmt.Sprintf("m%d", i+1)
	}
	many := subscribe(t, e, "SELECT id, state FROM machines WHERE id IN ("+marks+")", args...)
	e = reopen(t, dir, st, e)
	for _, s := range []*Sub{wide, many} {
		got := e.Get(s.ID)
		if got == nil {
			t.Fatalf("subscription %q lost in the restart", s.Query.SQL[:30])
		}
		rows, last, err := got.Snapshot()
		if err != nil || len(rows) != 1 || last != 1 {
			t.Fatalf("%q after the restart: %v, change %d, %v", s.Query.SQL[:30], rows, last, err)
		}
	}
	if got := e.Get(many.ID); len(got.Query.Args) != 65 {
		t.Fatalf("%d arguments after the restart, want 65", len(got.Query.Args))
	}
}

// TestFirstRowsFollowOrderBy: a subscription's first rows come in its
// query's ORDER BY.
func TestFirstRowsFollowOrderBy(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	for i, id := range []string{"m1", "m2", "m3"} {
		write(t, st, `INSERT INTO machines (id, app, port) VALUES (?, 'a', ?)`, id, int64(100-i))
	}
	q := `SELECT id, port FROM machines ORDER BY port`
	rows, _, err := subscribe(t, e, q).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, render(r.Cells))
	}
	if want := "'m3'|98 'm2'|99 'm1'|100"; strings.Join(got, " ") != want {
		t.Fatalf("first rows of %q: %v, want %s", q, got, want)
	}
}

// TestDamagedRecordIsDropped: a stored subscription that no longer
// decodes is dropped with a warning at open; the others, and the engine,
// carry on.
func TestDamagedRecordIsDropped(t *testing.T) {
	dir, st, e := restartable(t)
	bad := subscribe(t, e, "SELECT id FROM machines WHERE app = ?", "web")
	good := subscribe(t, e, "SELECT id, state FROM machines")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", filepath.Join(dir, "subs.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE subs SET args = x'05ff' WHERE id = ?", bad.ID); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e = openEngine(t, dir, st, 100)
	defer e.Close()
	if e.Get(bad.ID) != nil || e.Get(good.ID) == nil {
		t.Fatalf("after reopening: damaged kept %v, good kept %v", e.Get(bad.ID) != nil, e.Get(good.ID) != nil)
	}
}
