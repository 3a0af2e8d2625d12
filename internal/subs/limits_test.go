package subs

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
)

// TestWideResult: a result of more than 64 columns (more values than a
// key may have) snapshots and changes whole.
func TestWideResult(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	cols := make([]string, 65)
	for i := range cols {
		cols[i] = "state"
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM machines"
	s := subscribe(t, e, q)
	if _, _, err := s.Snapshot(); err != nil {
		t.Errorf("snapshot of a 65-column subscription: %v", err)
	}
	write(t, st, `UPDATE machines SET state = 'stopped' WHERE id = 'm1'`)
	e.evaluatePending(context.Background())
	changes, _, err := s.ChangesAfter(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if len(c.Cells) != 65 {
			t.Errorf("change %d (%s) has %d cells, want 65", c.ID, c.Kind, len(c.Cells))
		}
	}
}

// TestWideResultSurvivesRestart: such a subscription's stored rows and
// changes read back after a restart.
func TestWideResultSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	e := openEngine(t, dir, st, 100)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	cols := make([]string, 65)
	for i := range cols {
		cols[i] = "state"
	}
	subscribe(t, e, "SELECT "+strings.Join(cols, ", ")+" FROM machines")
	subscribe(t, e, "SELECT id FROM machines")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(context.Background(), Config{Path: dir + "/subs.db", Window: 100}, st)
	if err != nil {
		t.Fatalf("reopening the engine: %v", err)
	}
	e2.Close()
}

// A subscription's first rows come in its query's ORDER BY.
func TestFirstRowsFollowOrderBy(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	for i, id := range []string{"m1", "m2", "m3"} {
		write(t, st, `INSERT INTO machines (id, app, port) VALUES (?, 'a', ?)`, id, int64(100-i))
	}
	q := `SELECT id, port FROM machines ORDER BY port`
	s := subscribe(t, e, q)
	rows, _, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, render(r.Cells))
	}
	want := []string{"'m3'|98", "'m2'|99", "'m1'|100"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("first rows of %q: %v, want %v", q, got, want)
	}
}

// TestManyParamsSurviveRestart: a subscription of more than 64
// parameters (an IN list) reads back after a restart.
func TestManyParamsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	e := openEngine(t, dir, st, 100)
	marks := make([]string, 65)
	args := make([]any, 65)
	for i := range marks {
		marks[i], args[i] = "?", fmt.Sprintf("m%d", i)
	}
	subscribe(t, e, "SELECT id, state FROM machines WHERE id IN ("+strings.Join(marks, ", ")+")", args...)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2, err := Open(context.Background(), Config{Path: dir + "/subs.db", Window: 100}, st)
	if err != nil {
		t.Fatalf("reopening the engine: %v", err)
	}
	e2.Close()
}

// TestDamagedRecordIsDropped: a stored subscription that no longer
// decodes is dropped with a warning at open; the others, and the engine,
// carry on.
func TestDamagedRecordIsDropped(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	e := openEngine(t, dir, st, 100)
	bad := subscribe(t, e, "SELECT id FROM machines WHERE app = ?", "web")
	good := subscribe(t, e, "SELECT id, state FROM machines")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", dir+"/subs.db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE subs SET args = x'05ff' WHERE id = ?", bad.ID); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e2, err := Open(context.Background(), Config{Path: dir + "/subs.db", Window: 100}, st)
	if err != nil {
		t.Fatalf("reopening with a damaged record: %v", err)
	}
	defer e2.Close()
	if e2.Get(bad.ID) != nil || e2.Get(good.ID) == nil {
		t.Fatalf("after reopening: damaged kept %v, good kept %v", e2.Get(bad.ID) != nil, e2.Get(good.ID) != nil)
	}
}
